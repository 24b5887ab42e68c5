/* internal.h - what the front-door files share: the per-worker context and
 * the helpers every handler uses to authenticate and to finish a request. */
#ifndef TG_API_INTERNAL_H
#define TG_API_INTERNAL_H

#include "api/api.h"
#include "providers/awsauth.h"
#include "providers/catalog.h"
#include "upstream/upstream.h"

struct tg_gateway {
    const tg_config_t *cfg;
    tg_tenancy_t *tenancy;
    tg_writer_t *writer;
    tg_metrics_t *metrics;
    tg_http_app_t app;
    char **auth_headers;     /* per provider: "Authorization: Bearer K" or NULL */
    char **chat_urls;        /* per provider: base_url + "/chat/completions" */
    tg_awsauth_t **aws_auth; /* per provider: AWS signing, NULL for openai */
    tg_catalog_t **catalogs; /* per provider: the Bedrock catalogue, or NULL */
    char **aws_hosts;        /* per provider: Host header of its runtime endpoint */
};

typedef struct {
    tg_gateway_t *gw;
    tg_worker_t *worker;
    uv_loop_t *loop;
    tg_upstream_t *up;
    tg_writer_port_t *port;
    tg_tenancy_view_t view;
    tg_metrics_shard_t *shard;
    tg_awsauth_keys_t *aws_keys; /* per provider: this worker's SigV4 key cache */
    uint64_t id_seed;            /* random per worker: ids stay unique across restarts */
    uint64_t id_next;
} tg_wctx_t;

/* What a handler keeps of the caller's key (the snapshot may change under a
 * long call, so it is copied). */
typedef struct {
    char id[40];
    char unit[64];
    char team[64];
} tg_caller_t;

/* Authenticates req; on failure sends the 401 and returns non-zero. */
int tg_api_auth(tg_wctx_t *w, tg_req_t *req, int route, tg_caller_t *out);
/* Authenticates without answering: on failure returns non-zero with the
 * error's code and message (static strings), for doors with their own shape. */
int tg_api_auth_check(tg_wctx_t *w, tg_req_t *req, tg_caller_t *out, const char **code,
                      const char **msg);
/* Sends a JSON error, counts it, logs it. */
void tg_api_error(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *code,
                  const char *msg, const char *request_id);
/* Sends a whole response, counts it, logs it. */
void tg_api_send(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *content_type,
                 const char *request_id, const void *body, size_t len);
/* Counts and logs a response finished some other way (a stream). */
void tg_api_log(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *request_id,
                const char *key_id);
/* Finishes ev (outcome, status, end time, latency from req's start, cost as
 * tg_api_price_event) and hands it to the ledger writer; done runs once it is
 * durable, or at once when the writer refused it (logged: the client is
 * answered anyway). */
void tg_api_submit_event(tg_wctx_t *w, tg_req_t *req, tg_usage_event_t *ev, const char *outcome,
                         int status, const tg_model_route_t *route, int bedrock,
                         tg_writer_done_fn done, void *ud);
/* Writes a fresh id: prefix + 32 hex characters. */
void tg_api_new_id(tg_wctx_t *w, char *out, size_t cap, const char *prefix);

void tg_api_chat(tg_wctx_t *w, tg_req_t *req);
void tg_api_models(tg_wctx_t *w, tg_req_t *req);
/* POST /model/{modelId}/{op}: the Bedrock runtime, passed through. */
void tg_api_bedrock(tg_wctx_t *w, tg_req_t *req);
/* POST /endpoints/{name}/{op}: SageMaker runtime endpoints, passed through. */
void tg_api_sagemaker(tg_wctx_t *w, tg_req_t *req);
/* Whether a bedrock provider with catalog.expose lists this id (or it is an
 * ARN); returns the provider's index or -1. */
int tg_api_exposed_provider(tg_gateway_t *g, const char *id, size_t n);

#endif

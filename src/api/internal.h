/* internal.h - what the front-door files share: the per-worker context and
 * the helpers every handler uses to authenticate and to finish a request. */
#ifndef TG_API_INTERNAL_H
#define TG_API_INTERNAL_H

#include <cjson/cJSON.h>

#include "api/api.h"
#include "gov/limits.h"
#include "providers/awsauth.h"
#include "providers/catalog.h"
#include "upstream/upstream.h"

struct tg_gateway {
    const tg_config_t *cfg;
    tg_tenancy_t *tenancy;
    tg_writer_t *writer;
    tg_metrics_t *metrics;
    tg_http_app_t app;
    char **auth_headers;            /* per provider: "Authorization: Bearer K" or NULL */
    char **chat_urls;               /* per provider: base_url + "/chat/completions" */
    char **completion_urls;         /* per provider: base_url + "/completions" */
    tg_awsauth_t **aws_auth;        /* per provider: AWS signing, NULL for openai */
    tg_catalog_t **catalogs;        /* per provider: the Bedrock catalogue, or NULL */
    char **aws_hosts;               /* per provider: Host header of its runtime endpoint */
    struct tg_ref_results *results; /* the reference API's background calls (reference.c) */
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
    struct refcall *bg; /* the reference API's background calls on this worker */
} tg_wctx_t;

/* What a handler keeps of the caller's key (the snapshot may change under a
 * long call, so it is copied). */
typedef struct {
    char id[40];
    char unit[64]; /* the key's team's unit */
    char team[64];
    /* Governance: valid only while the handler runs synchronously (the
     * worker's view may move to a newer snapshot at its next request). */
    const tg_principal_t *p;
} tg_caller_t;

/* Authenticates req; on failure sends the 401 (403 for a disabled team or
 * unit) and returns non-zero. */
int tg_api_auth(tg_wctx_t *w, tg_req_t *req, int route, tg_caller_t *out);
/* Authenticates without answering: on failure returns the status (401, or
 * 403 for a disabled team or unit) with the error's code and message (static
 * strings), for doors with their own shape. */
int tg_api_auth_check(tg_wctx_t *w, tg_req_t *req, tg_caller_t *out, const char **code,
                      const char **msg);

/* ---- governance (govern.c) ----------------------------------------------- */

/* The most output tokens a call may produce when its request does not say. */
#define TG_DEFAULT_MAX_OUTPUT 4096

/* What governance needs to know of a call about to be forwarded. */
typedef struct {
    const char *model; /* the id the client asked for */
    size_t model_len;
    const tg_model_route_t *route; /* NULL for a catalogue id */
    const char *upstream_model;    /* for pricing the worst case */
    const char *region;
    int bedrock;
    int64_t max_output; /* from the request (tg_api_max_output); 0 = not said */
    int parse_body;     /* max_output not known: read it from the JSON body if needed */
} tg_api_call_t;

#define TG_API_REFUSAL_HEADERS 4
/* A refusal, to be sent in the door's own shape. */
typedef struct {
    int status;       /* 403, 429, 402 */
    const char *code; /* static */
    char message[400];
    char detail[512]; /* more JSON members for the error object (",\"budget\":{...}") or "" */
    tg_header_t headers[TG_API_REFUSAL_HEADERS]; /* Retry-After, x-ratelimit-* */
    size_t nheaders;
    char hval[TG_API_REFUSAL_HEADERS][32];
} tg_api_refusal_t;

/* The checks before forwarding: the team_id header is the key's team, the
 * model is allowed by the key's, team's and unit's policies, and the call is
 * admitted against every limit and budget in scope (reserving its worst-case
 * cost). 0: forward, and settle *t exactly once (tg_api_submit_event does, or
 * tg_api_gov_release when the call ends before that). -1: *r says why; nothing
 * is held. r's header values point into r itself. */
int tg_api_govern(tg_wctx_t *w, tg_req_t *req, const tg_caller_t *who, const tg_api_call_t *ci,
                  tg_gov_ticket_t *t, tg_api_refusal_t *r);
void tg_api_gov_release(tg_gov_ticket_t *t);
/* Whether every policy in the caller's scope allows model id (listings). */
int tg_api_allowed(const tg_caller_t *who, const char *id);
/* Sends a refusal in the OpenAI error shape (with its headers). */
void tg_api_refuse(tg_wctx_t *w, tg_req_t *req, int route, const tg_api_refusal_t *r);
/* The most output the request's JSON allows (max_tokens and its kin), or 0. */
int64_t tg_api_max_output(const cJSON *root);
/* The same from the bytes of a JSON object, for a caller that scans it
 * (tg_json_members) for names of its own as well: the top-level names it
 * reads (i from 0 until NULL), and the cap from the values found for them
 * (v[i] for name i): 0 with *out set, or -1 when they cannot be read
 * without a parse (then parse). */
const char *tg_api_max_output_name(size_t i);
int tg_api_max_output_spans(const tg_span_t *v, int64_t *out);
/* Appends "scope":{id, models, limits, budgets} for scope s of p, live. */
void tg_api_scope_json(tg_buf_t *b, const tg_principal_t *p, int s, int64_t now);
/* GET /v1/limits and GET /v1/usage: the caller's own. */
void tg_api_limits(tg_wctx_t *w, tg_req_t *req);
void tg_api_usage(tg_wctx_t *w, tg_req_t *req);
/* Sends a JSON error, counts it, logs it. */
void tg_api_error(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *code,
                  const char *msg, const char *request_id);
/* Sends a whole response, counts it, logs it. */
void tg_api_send(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *content_type,
                 const char *request_id, const void *body, size_t len);
/* Counts and logs a response finished some other way (a stream). */
/* Ends an OpenAI-style stream once its usage is committed: the cost as an SSE
 * comment (clients skip comments), then "data: [DONE]" when done; nothing is
 * written to a client that left. Logs the request and ends the response. */
void tg_api_oai_stream_end(tg_wctx_t *w, tg_req_t *req, int route, int status,
                           const tg_usage_event_t *ev, int done, int aborted);
void tg_api_log(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *request_id,
                const char *key_id);
/* Finishes ev (outcome, status, end time, latency from req's start, cost as
 * tg_api_price_event), settles gov (may be NULL) with the real tokens and cost,
 * and hands ev to the ledger writer; done runs once it is
 * durable, or at once when the writer refused it (logged: the client is
 * answered anyway). */
void tg_api_submit_event(tg_wctx_t *w, tg_req_t *req, tg_usage_event_t *ev, const char *outcome,
                         int status, const tg_model_route_t *route, int bedrock,
                         tg_gov_ticket_t *gov, tg_writer_done_fn done, void *ud);
/* The same for a call whose request may be finished already (a background
 * call of the reference API): latency counts from start_ns; done may be
 * NULL. */
void tg_api_submit_event_at(tg_wctx_t *w, uint64_t start_ns, tg_usage_event_t *ev,
                            const char *outcome, int status, const tg_model_route_t *route,
                            int bedrock, tg_gov_ticket_t *gov, tg_writer_done_fn done, void *ud);
/* Writes a fresh id: prefix + 32 hex characters. */
void tg_api_new_id(tg_wctx_t *w, char *out, size_t cap, const char *prefix);

void tg_api_chat(tg_wctx_t *w, tg_req_t *req);
/* POST /v1/completions (legacy, for completion-style upstreams). */
void tg_api_completions(tg_wctx_t *w, tg_req_t *req);
void tg_api_models(tg_wctx_t *w, tg_req_t *req);
/* ---- AWS calls (aws.c), shared with the reference door ------------------ */

/* Where an AWS call goes. */
typedef struct {
    const tg_provider_t *p;
    size_t provider;
    const char *upstream; /* model id / endpoint name sent */
    const char *base_url;
    const char *host;
    const char *region;
    const tg_model_route_t *route; /* NULL for a catalogue id */
    uint32_t connect_ms, first_byte_ms, total_ms;
} tg_api_aws_target_t;

void tg_api_aws_target_route(tg_api_aws_target_t *t, const tg_config_t *cfg,
                             const tg_model_route_t *r);
/* A catalogue id (or ARN) of an exposing Bedrock provider; TG_ENOTFOUND. */
int tg_api_aws_target_exposed(tg_wctx_t *w, const char *id, size_t n, tg_api_aws_target_t *t);

/* One call to sign. */
typedef struct {
    int door_sagemaker;
    int op; /* tg_br_op_t / tg_sm_op_t */
    const char *upstream;
    const char *body;
    size_t body_len;
    const char *content_type, *accept;
    const char *const *names, *const *values; /* more headers to send and sign */
    size_t n;                                 /* at most TG_AWSAUTH_MAX_HEADERS - 2 */
} tg_api_aws_req_t;
#define TG_API_AWS_MAX_LINES (TG_AWSAUTH_MAX_HEADERS + 3)

/* Writes the call's URL into url and its header lines (signed; strings in
 * arena) into lines (TG_API_AWS_MAX_LINES). Returns 0, TG_EAUTH when the
 * provider has no credentials now, TG_ETOOBIG, TG_ENOMEM. */
int tg_api_aws_prepare(tg_wctx_t *w, tg_arena_t *arena, const tg_api_aws_target_t *t,
                       const tg_api_aws_req_t *r, tg_buf_t *url, const char **lines, size_t *nl);

/* The reference API (reference.c): answers GET [/<unit>_prod]/list_foundation_models
 * and POST [/<unit>_prod]/invoke_model; returns 0 when the path is not its. */
int tg_api_reference(tg_wctx_t *w, tg_req_t *req);
/* The OpenAI API for Bedrock routes (reference.c's engine): a chat request
 * (root parsed; who authenticated) as Converse / ConverseStream, and
 * POST /v1/embeddings. */
void tg_api_chat_bedrock(tg_wctx_t *w, tg_req_t *req, const tg_caller_t *who,
                         const tg_model_route_t *route, const cJSON *root);
void tg_api_embeddings(tg_wctx_t *w, tg_req_t *req);
/* The same for a SageMaker route whose container speaks OpenAI's chat API
 * (format tgi-messages or openai): the body passed on, the answer's model
 * named as the client asked. */
void tg_api_chat_sagemaker(tg_wctx_t *w, tg_req_t *req, const tg_caller_t *who,
                           const tg_model_route_t *route, cJSON *root);
/* A streamed OpenAI chat request asks the provider for its usage chunk
 * (stream_options.include_usage); *client_usage says whether the client had
 * asked itself. Returns 1 when root changed, 0, or -1 out of memory. */
int tg_api_ask_usage(cJSON *root, int *client_usage);
/* Its results table, made with the gateway. */
int tg_api_reference_init(tg_gateway_t *g);
void tg_api_reference_fini(tg_gateway_t *g);
/* A worker stops: its background calls are cancelled and recorded. */
void tg_api_reference_shutdown(tg_wctx_t *w);

/* POST /model/{modelId}/{op}: the Bedrock runtime, passed through. */
void tg_api_bedrock(tg_wctx_t *w, tg_req_t *req);
/* POST /endpoints/{name}/{op}: SageMaker runtime endpoints, passed through. */
void tg_api_sagemaker(tg_wctx_t *w, tg_req_t *req);
/* Whether a bedrock provider with catalog.expose lists this id (or it is an
 * ARN); returns the provider's index or -1. */
int tg_api_exposed_provider(tg_gateway_t *g, const char *id, size_t n);

#endif

/* config.h - the gateway's one JSON configuration file, parsed and validated.
 *
 * Everything is checked at start-up; an error names the field and the problem
 * ("providers[0].base_url: must start with http:// or https://"). Secrets are
 * never in the file: a provider names the environment variable holding its
 * key. The parsed tg_config_t is immutable after load and shared by all
 * threads. */
#ifndef TG_CONFIG_H
#define TG_CONFIG_H

#include <stddef.h>
#include <stdint.h>

#include "http/http.h"
#include "store/store.h"
#include "usage/prices.h"

enum { TG_PROVIDER_OPENAI = 0, TG_PROVIDER_BEDROCK = 1, TG_PROVIDER_SAGEMAKER = 2 };
enum { TG_AWS_AUTH_SIGV4 = 0, TG_AWS_AUTH_BEARER = 1 };
/* What a SageMaker endpoint's container speaks (how its usage is read). */
enum {
    TG_SM_FORMAT_RAW = 0, /* unknown: counts estimated unless the body has them */
    TG_SM_FORMAT_TGI,
    TG_SM_FORMAT_TGI_MESSAGES,
    TG_SM_FORMAT_JUMPSTART,
    TG_SM_FORMAT_OPENAI,
};

/* providers[].credentials: how an AWS provider finds its credentials (mapped
 * onto tg_aws_creds_opts_t at start). Static keys come from named
 * environment variables, resolved at load and wiped on free. */
typedef struct {
    char *profile;
    char *role_arn;
    char *role_session_name;
    char *external_id;
    char *sts_endpoint;
    char *imds_endpoint;
    char *container_endpoint;
    uint32_t refresh_before_ms; /* 0 = the provider's default */
    uint32_t timeout_ms;        /* 0 = the provider's default */
    char *access_key_id_env, *secret_access_key_env, *session_token_env;
    char *access_key_id, *secret_access_key, *session_token; /* resolved; NULL when unset */
} tg_aws_creds_config_t;

typedef struct {
    char *name;
    char *type;     /* "openai", "bedrock", "sagemaker" */
    int kind;       /* TG_PROVIDER_* */
    char *base_url; /* openai: without trailing slash, e.g. http://127.0.0.1:8000/v1 */
    char *api_key;  /* resolved from api_key_env at load; NULL when unset */
    char *api_key_env;
    char *region; /* AWS: the signing region (required) */
    uint32_t connect_timeout_ms;
    uint32_t first_byte_timeout_ms;
    uint32_t total_timeout_ms;
    /* AWS providers only. */
    char *endpoint;         /* runtime endpoint, no trailing slash */
    int endpoint_explicit;  /* set in the file (a route's region then keeps it) */
    char *control_endpoint; /* bedrock control plane, no trailing slash */
    int auth;               /* TG_AWS_AUTH_* */
    char *bearer_token_env;
    char *bearer_token; /* resolved; NULL unless auth is bearer */
    tg_aws_creds_config_t creds;
    uint32_t catalog_refresh_s; /* bedrock; 0 = never fetch the catalogue */
    int catalog_expose;         /* bedrock: any catalogue id or ARN may be called */
} tg_provider_t;

typedef struct {
    char *id; /* public model id */
    const tg_provider_t *provider;
    char *upstream_model;
    char *region;                /* defaults to the provider's */
    uint32_t connect_timeout_ms; /* defaults to the provider's */
    uint32_t first_byte_timeout_ms;
    uint32_t total_timeout_ms;
    int64_t created; /* unix seconds shown by /v1/models */
    /* AWS routes. upstream_model is the Bedrock model id / profile / ARN, or
     * the SageMaker endpoint name. */
    char *base_url; /* runtime endpoint for this route (its region may change the host) */
    char *host;     /* Host header value as curl sends it: host[:port when not default] */
    char *inference_component; /* sagemaker, NULL when unset */
    char *target_variant;
    char *custom_attributes;
    int format;         /* sagemaker: TG_SM_FORMAT_* */
    char *served_model; /* sagemaker: "model" of OpenAI-format bodies; NULL: none sent */
    int has_price;      /* the route carries its own price (book key TG_PRICE_ROUTE + id) */
    /* Budgets reserve this much output for a call whose request sets no
     * max_tokens (or its kin); default 4096. */
    int64_t max_output_tokens;
} tg_model_route_t;

/* reports: rollups on a schedule, daily report files, optional S3 copy. */
typedef struct {
    int enabled;           /* default 1: the gateway runs the schedule */
    char *dir;             /* default "var/reports" */
    uint32_t refresh_s;    /* rollups brought up to date this often; default 300 */
    uint32_t daily_at_min; /* a day's report is due this many minutes after it ends (UTC) */
    /* S3: bucket set means each report file is also PUT there. */
    char *s3_bucket;
    char *s3_prefix; /* "" or ending in '/' */
    char *s3_region;
    char *s3_endpoint; /* NULL: AWS's */
    tg_aws_creds_config_t s3_creds;
} tg_reports_config_t;

typedef struct {
    char *path; /* the file it came from */
    tg_http_config_t http;
    char *listen_host;
    size_t max_response_bytes; /* a non-streamed upstream body larger than this: 502 */
    tg_store_config_t store;
    char *store_path;
    size_t ledger_queue_max;
    int log_level;
    int access_log;
    tg_provider_t *providers;
    size_t nproviders;
    tg_model_route_t *models;
    size_t nmodels;
    char *prices_path;      /* the price book; NULL when none was found (all calls unpriced) */
    char **price_overrides; /* merged on top of it, in order */
    size_t nprice_overrides;
    tg_prices_t *prices; /* the loaded book, with the routes' own prices */
    tg_reports_config_t reports;
    uint32_t result_ttl_s; /* reference API: how long a streaming call's result is kept */
    /* keys.derive_secret_env: the secret tenant key secrets are derived from
     * (so SigV4 can be verified); NULL when not configured. Wiped on free. */
    char *key_derive_env;
    char *key_derive_secret;
    /* The admin listener (its own port, loopback by default); admin_port < 0
     * when disabled. */
    char *admin_host;
    int admin_port;
    /* tls: a TLS listener for HTTP/1.1 and HTTP/2 (ALPN); http.cert_file and
     * friends point at these. NULL when the file has no "tls". */
    char *tls_host;
    char *tls_cert_file;
    char *tls_key_file;
} tg_config_t;

/* Loads and validates. On error returns TG_ECONFIG and writes a message naming
 * the field into err. */
int tg_config_load(tg_config_t **out, const char *path, char *err, size_t errcap);
/* Applies --admin-listen HOST:PORT, or "off". */
int tg_config_set_admin_listen(tg_config_t *c, const char *listen, char *err, size_t errcap);
/* Applies --listen HOST:PORT ([::1]:PORT for IPv6). */
int tg_config_set_listen(tg_config_t *c, const char *listen, char *err, size_t errcap);
void tg_config_free(tg_config_t *c);
const tg_model_route_t *tg_config_model(const tg_config_t *c, const char *id, size_t len);
/* The SageMaker route whose endpoint name is this, or NULL. */
const tg_model_route_t *tg_config_sm_endpoint(const tg_config_t *c, const char *name, size_t len);
/* The Host header value curl sends for url (host, plus :port unless it is the
 * scheme's default), written into out. Returns 0 or TG_EINVAL. */
int tg_config_url_host(const char *url, char *out, size_t cap);

#endif

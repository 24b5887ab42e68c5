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

typedef struct {
    char *name;
    char *type;     /* "openai" */
    char *base_url; /* without trailing slash, e.g. http://127.0.0.1:8000/v1 */
    char *api_key;  /* resolved from api_key_env at load; NULL when unset */
    char *api_key_env;
    char *region;
    uint32_t connect_timeout_ms;
    uint32_t first_byte_timeout_ms;
    uint32_t total_timeout_ms;
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
} tg_model_route_t;

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
} tg_config_t;

/* Loads and validates. On error returns TG_ECONFIG and writes a message naming
 * the field into err. */
int tg_config_load(tg_config_t **out, const char *path, char *err, size_t errcap);
/* Applies --listen HOST:PORT ([::1]:PORT for IPv6). */
int tg_config_set_listen(tg_config_t *c, const char *listen, char *err, size_t errcap);
void tg_config_free(tg_config_t *c);
const tg_model_route_t *tg_config_model(const tg_config_t *c, const char *id, size_t len);

#endif

/* api.h - the gateway's front doors, wired onto the HTTP server.
 *
 * tg_gateway_t is the application: it routes each request (OpenAI-compatible
 * /v1/chat/completions and /v1/models, the Bedrock runtime's /model/{id}/...
 * and SageMaker's /endpoints/{name}/..., /healthz, /readyz, /metrics),
 * authenticates it against the tenancy snapshot, forwards it upstream on the
 * worker's own loop, records its usage event through the ledger writer, and
 * finishes the response only once that event is durable. */
#ifndef TG_API_H
#define TG_API_H

#include "api/metrics.h"
#include "config/config.h"
#include "http/http.h"
#include "store/store.h"
#include "tenancy/tenancy.h"

typedef struct tg_gateway tg_gateway_t;

int tg_gateway_create(tg_gateway_t **out, const tg_config_t *cfg, tg_tenancy_t *tenancy,
                      tg_writer_t *writer, tg_metrics_t *metrics);
void tg_gateway_destroy(tg_gateway_t *g);
/* Starts the AWS providers' credentials threads, waits up to wait_ms in all
 * for their first credentials (a warning, never a secret, for each that has
 * none: its calls get 503 until they arrive), then the catalogue threads. */
int tg_gateway_start_aws(tg_gateway_t *g, uint32_t wait_ms);
/* The callbacks to give tg_server_create. */
const tg_http_app_t *tg_gateway_app(tg_gateway_t *g);

/* Prices ev as every door does before it is recorded (also used to price
 * imported events): the route's own price, else the book's for the model (a
 * Bedrock profile or ARN as its base model; then the upstream id, then the
 * public id) in ev->region at ev->started_ms. Unpriced calls cost 0 and are
 * flagged. */
int tg_api_price_event(const tg_prices_t *book, const tg_model_route_t *route, int bedrock,
                       tg_usage_event_t *ev);

/* Reloads the snapshot of keys, teams, units and policies when the store
 * changed (govern.c). data_version numbers are
 * per connection, so a reloader serves one connection: set seen to -1 to
 * force the next load (always done for a new connection). */
typedef struct {
    tg_tenancy_t *tenancy;
    struct tg_gov *gov; /* the live counters the snapshot's principals point at */
    int64_t seen;
} tg_key_reloader_t;
/* A tg_writer_on_tick callback; ud is a tg_key_reloader_t. */
void tg_gateway_reload_tick(tg_store_t *st, void *ud);

#endif

/* metrics.h - Prometheus counters for the gateway.
 *
 * Request counters and the upstream latency histogram live in per-worker
 * shards written only by their worker (relaxed atomics, no sharing of cache
 * lines on the hot path) and summed at scrape time. Token counters are fed by
 * the ledger writer after each commit, so they count exactly what was
 * recorded, keyed by model and team in a bounded table. */
#ifndef TG_METRICS_H
#define TG_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "usage/usage.h"

enum {
    TG_ROUTE_CHAT = 0,
    TG_ROUTE_MODELS,
    TG_ROUTE_HEALTHZ,
    TG_ROUTE_READYZ,
    TG_ROUTE_METRICS,
    TG_ROUTE_OTHER,
    TG_ROUTE_BEDROCK,   /* /model/{id}/... */
    TG_ROUTE_SAGEMAKER, /* /endpoints/{name}/... */
    TG_ROUTE_COUNT
};

#define TG_METRICS_BUCKETS 14

typedef struct tg_metrics tg_metrics_t;
typedef struct tg_metrics_shard tg_metrics_shard_t;

int tg_metrics_create(tg_metrics_t **out, int nshards, size_t nproviders,
                      const char *const *provider_names);
void tg_metrics_destroy(tg_metrics_t *m);
tg_metrics_shard_t *tg_metrics_shard(tg_metrics_t *m, int i);

void tg_metrics_request(tg_metrics_shard_t *s, int route, int status);
void tg_metrics_upstream(tg_metrics_shard_t *s, size_t provider, uint64_t latency_us);
/* From the writer thread, after a committed batch. */
void tg_metrics_usage(tg_metrics_t *m, const tg_usage_event_t *ev, size_t n);
void tg_metrics_set_queue(tg_metrics_t *m, int64_t depth);
/* Renders the Prometheus text exposition into out. */
int tg_metrics_render(tg_metrics_t *m, tg_buf_t *out);

#endif

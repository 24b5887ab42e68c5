/* metrics.c - per-worker counter shards, a bounded token table, and the
 * Prometheus text renderer. */
#include "api/metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const route_names[TG_ROUTE_COUNT] = {
    "/v1/chat/completions", "/v1/models",       "/healthz", "/readyz", "/metrics", "other",
    "/model/{id}",          "/endpoints/{name}"};

/* Upper bounds in microseconds; the last bucket is +Inf. */
static const uint64_t bucket_us[TG_METRICS_BUCKETS] = {
    5000,    10000,   25000,   50000,    100000,   250000,   500000,
    1000000, 2500000, 5000000, 10000000, 30000000, 60000000, UINT64_MAX};
static const char *const bucket_le[TG_METRICS_BUCKETS] = {"0.005", "0.01", "0.025", "0.05", "0.1",
                                                          "0.25",  "0.5",  "1",     "2.5",  "5",
                                                          "10",    "30",   "60",    "+Inf"};

typedef struct {
    _Atomic uint64_t count[TG_METRICS_BUCKETS];
    _Atomic uint64_t sum_us;
} histo_t;

struct tg_metrics_shard {
    _Alignas(64) _Atomic uint64_t requests[TG_ROUTE_COUNT][600];
    histo_t *upstream; /* one per provider */
};

#define TOKEN_SLOTS 4096 /* label pairs kept; more go to model="other" */

typedef struct {
    char model[128];
    char team[64];
    uint64_t input, output, cache_read, cache_write, events;
    int used;
} token_row_t;

struct tg_metrics {
    int nshards;
    size_t nproviders;
    char **provider_names;
    tg_metrics_shard_t *shards;
    pthread_mutex_t mu; /* guards tokens */
    token_row_t *tokens;
    size_t ntokens;
    _Atomic int64_t queue_depth;
};

int tg_metrics_create(tg_metrics_t **out, int nshards, size_t nproviders,
                      const char *const *provider_names)
{
    tg_metrics_t *m = calloc(1, sizeof(*m));
    if (!m) return TG_ENOMEM;
    m->nshards = nshards;
    m->nproviders = nproviders;
    m->shards = aligned_alloc(64, sizeof(tg_metrics_shard_t) * (size_t)nshards);
    m->tokens = calloc(TOKEN_SLOTS, sizeof(token_row_t));
    m->provider_names = calloc(nproviders + 1, sizeof(char *));
    if (!m->shards || !m->tokens || !m->provider_names) {
        tg_metrics_destroy(m);
        return TG_ENOMEM;
    }
    memset(m->shards, 0, sizeof(tg_metrics_shard_t) * (size_t)nshards);
    for (int i = 0; i < nshards; i++) {
        m->shards[i].upstream = calloc(nproviders + 1, sizeof(histo_t));
        if (!m->shards[i].upstream) {
            tg_metrics_destroy(m);
            return TG_ENOMEM;
        }
    }
    for (size_t i = 0; i < nproviders; i++)
        m->provider_names[i] = strdup(provider_names[i]);
    pthread_mutex_init(&m->mu, NULL);
    *out = m;
    return TG_OK;
}

void tg_metrics_destroy(tg_metrics_t *m)
{
    if (!m) return;
    if (m->shards)
        for (int i = 0; i < m->nshards; i++)
            free(m->shards[i].upstream);
    free(m->shards);
    free(m->tokens);
    if (m->provider_names)
        for (size_t i = 0; i < m->nproviders; i++)
            free(m->provider_names[i]);
    free(m->provider_names);
    pthread_mutex_destroy(&m->mu);
    free(m);
}

tg_metrics_shard_t *tg_metrics_shard(tg_metrics_t *m, int i)
{
    return &m->shards[i];
}

void tg_metrics_request(tg_metrics_shard_t *s, int route, int status)
{
    if (route < 0 || route >= TG_ROUTE_COUNT) route = TG_ROUTE_OTHER;
    if (status < 100 || status >= 600) status = 0;
    atomic_fetch_add_explicit(&s->requests[route][status], 1, memory_order_relaxed);
}

void tg_metrics_upstream(tg_metrics_shard_t *s, size_t provider, uint64_t latency_us)
{
    histo_t *h = &s->upstream[provider];
    int b = 0;
    while (latency_us > bucket_us[b])
        b++;
    atomic_fetch_add_explicit(&h->count[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_us, latency_us, memory_order_relaxed);
}

static token_row_t *token_row(tg_metrics_t *m, const char *model, const char *team)
{
    size_t h = 1469598103934665603ull;
    for (const char *p = model; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    h = (h ^ 0xff) * 1099511628211ull;
    for (const char *p = team; *p; p++)
        h = (h ^ (unsigned char)*p) * 1099511628211ull;
    for (size_t i = 0; i < TOKEN_SLOTS; i++) {
        token_row_t *r = &m->tokens[(h + i) & (TOKEN_SLOTS - 1)];
        if (!r->used) {
            if (m->ntokens >= TOKEN_SLOTS - 1 && strcmp(model, "other") != 0) break;
            r->used = 1;
            m->ntokens++;
            snprintf(r->model, sizeof(r->model), "%s", model);
            snprintf(r->team, sizeof(r->team), "%s", team);
            return r;
        }
        if (strcmp(r->model, model) == 0 && strcmp(r->team, team) == 0) return r;
    }
    /* Table full: one overflow row, found or made by a second probe. */
    return strcmp(model, "other") == 0 ? NULL : token_row(m, "other", "other");
}

void tg_metrics_usage(tg_metrics_t *m, const tg_usage_event_t *ev, size_t n)
{
    pthread_mutex_lock(&m->mu);
    for (size_t i = 0; i < n; i++) {
        token_row_t *r = token_row(m, ev[i].model, ev[i].team);
        if (!r) continue;
        r->input += (uint64_t)ev[i].input_tokens;
        r->output += (uint64_t)ev[i].output_tokens;
        r->cache_read += (uint64_t)ev[i].cache_read_tokens;
        r->cache_write += (uint64_t)ev[i].cache_write_tokens;
        r->events++;
    }
    pthread_mutex_unlock(&m->mu);
}

void tg_metrics_set_queue(tg_metrics_t *m, int64_t depth)
{
    atomic_store_explicit(&m->queue_depth, depth, memory_order_relaxed);
}

/* Label values here come from config and key records, but escape anyway. */
static int label(tg_buf_t *b, const char *s)
{
    int rc = 0;
    for (; *s && !rc; s++) {
        if (*s == '"' || *s == '\\') rc = tg_buf_append(b, "\\", 1);
        if (!rc) rc = *s == '\n' ? tg_buf_append(b, "\\n", 2) : tg_buf_append(b, s, 1);
    }
    return rc;
}

int tg_metrics_render(tg_metrics_t *m, tg_buf_t *b)
{
    int rc = tg_buf_appends(b, "# HELP tollgate_http_requests_total Requests answered, by route "
                               "and status.\n# TYPE tollgate_http_requests_total counter\n");
    for (int r = 0; r < TG_ROUTE_COUNT && !rc; r++)
        for (int st = 0; st < 600 && !rc; st++) {
            uint64_t v = 0;
            for (int i = 0; i < m->nshards; i++)
                v += atomic_load_explicit(&m->shards[i].requests[r][st], memory_order_relaxed);
            if (v)
                rc = tg_buf_printf(
                    b, "tollgate_http_requests_total{route=\"%s\",status=\"%d\"} %llu\n",
                    route_names[r], st, (unsigned long long)v);
        }
    if (!rc)
        rc = tg_buf_appends(b, "# HELP tollgate_upstream_latency_seconds Upstream call duration.\n"
                               "# TYPE tollgate_upstream_latency_seconds histogram\n");
    for (size_t p = 0; p < m->nproviders && !rc; p++) {
        uint64_t cum = 0, sum = 0;
        for (int i = 0; i < m->nshards; i++)
            sum += atomic_load_explicit(&m->shards[i].upstream[p].sum_us, memory_order_relaxed);
        for (int k = 0; k < TG_METRICS_BUCKETS && !rc; k++) {
            for (int i = 0; i < m->nshards; i++)
                cum +=
                    atomic_load_explicit(&m->shards[i].upstream[p].count[k], memory_order_relaxed);
            rc = tg_buf_appends(b, "tollgate_upstream_latency_seconds_bucket{provider=\"");
            if (!rc) rc = label(b, m->provider_names[p]);
            if (!rc)
                rc =
                    tg_buf_printf(b, "\",le=\"%s\"} %llu\n", bucket_le[k], (unsigned long long)cum);
        }
        if (!rc) rc = tg_buf_appends(b, "tollgate_upstream_latency_seconds_sum{provider=\"");
        if (!rc) rc = label(b, m->provider_names[p]);
        if (!rc)
            rc = tg_buf_printf(b, "\"} %llu.%06llu\n", (unsigned long long)(sum / 1000000),
                               (unsigned long long)(sum % 1000000));
        if (!rc) rc = tg_buf_appends(b, "tollgate_upstream_latency_seconds_count{provider=\"");
        if (!rc) rc = label(b, m->provider_names[p]);
        if (!rc) rc = tg_buf_printf(b, "\"} %llu\n", (unsigned long long)cum);
    }
    if (!rc)
        rc = tg_buf_appends(b, "# HELP tollgate_tokens_total Tokens recorded in the ledger.\n"
                               "# TYPE tollgate_tokens_total counter\n");
    pthread_mutex_lock(&m->mu);
    static const char *const types[] = {"input", "output", "cache_read", "cache_write"};
    for (size_t i = 0; i < TOKEN_SLOTS && !rc; i++) {
        const token_row_t *r = &m->tokens[i];
        if (!r->used) continue;
        const uint64_t vals[] = {r->input, r->output, r->cache_read, r->cache_write};
        for (int t = 0; t < 4 && !rc; t++) {
            rc = tg_buf_appends(b, "tollgate_tokens_total{model=\"");
            if (!rc) rc = label(b, r->model);
            if (!rc) rc = tg_buf_appends(b, "\",team=\"");
            if (!rc) rc = label(b, r->team);
            if (!rc)
                rc = tg_buf_printf(b, "\",type=\"%s\"} %llu\n", types[t],
                                   (unsigned long long)vals[t]);
        }
    }
    if (!rc)
        rc = tg_buf_appends(b, "# HELP tollgate_usage_events_total Usage events recorded.\n"
                               "# TYPE tollgate_usage_events_total counter\n");
    uint64_t events = 0;
    for (size_t i = 0; i < TOKEN_SLOTS; i++)
        events += m->tokens[i].used ? m->tokens[i].events : 0;
    pthread_mutex_unlock(&m->mu);
    if (!rc)
        rc = tg_buf_printf(b, "tollgate_usage_events_total %llu\n", (unsigned long long)events);
    if (!rc)
        rc = tg_buf_printf(b,
                           "# HELP tollgate_ledger_queue_depth Usage events waiting for the "
                           "writer.\n# TYPE tollgate_ledger_queue_depth gauge\n"
                           "tollgate_ledger_queue_depth %lld\n",
                           (long long)atomic_load(&m->queue_depth));
    return rc;
}

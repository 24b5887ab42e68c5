/* catalog.c - the Bedrock model catalogue, refreshed on its own thread.
 *
 * The thread blocks on libcurl easy calls (bounded in size and time), never
 * the workers. A snapshot is built whole, sealed (sorted, unique) and
 * published by swapping one pointer under a mutex; readers take a reference
 * under the same mutex and search without it, so a refresh never makes a
 * request wait on the network. */
#include "providers/catalog.h"

#include "providers/bedrock.h"
#include "upstream/fetch.h"

#include <cjson/cJSON.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_BODY    (8u << 20) /* one control-plane response */
#define MAX_PAGES   100        /* of ListInferenceProfiles: a loop guard */
#define PAGE_SIZE   1000
#define BACKOFF_MIN 2
#define BACKOFF_MAX 300

/* ---- snapshots -------------------------------------------------------------- */

tg_catalog_snap_t *tg_catalog_snap_new(void)
{
    tg_catalog_snap_t *s = calloc(1, sizeof(*s));
    if (s) atomic_init(&s->refs, 1);
    return s;
}

int tg_catalog_snap_add(tg_catalog_snap_t *s, const char *id, size_t n, int kind)
{
    if (n == 0 || n > 2048) return TG_EINVAL;
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        if (cap > 1000000) return TG_ETOOBIG;
        tg_catalog_entry_t *e = realloc(s->entries, cap * sizeof(*e));
        if (!e) return TG_ENOMEM;
        s->entries = e;
        s->cap = cap;
    }
    char *d = strndup(id, n);
    if (!d) return TG_ENOMEM;
    s->entries[s->n++] = (tg_catalog_entry_t){d, kind};
    return TG_OK;
}

static int entry_cmp(const void *a, const void *b)
{
    return strcmp(((const tg_catalog_entry_t *)a)->id, ((const tg_catalog_entry_t *)b)->id);
}

void tg_catalog_snap_seal(tg_catalog_snap_t *s)
{
    if (s->n > 1) qsort(s->entries, s->n, sizeof(*s->entries), entry_cmp);
    size_t k = 0;
    for (size_t i = 0; i < s->n; i++) {
        if (k && strcmp(s->entries[k - 1].id, s->entries[i].id) == 0) {
            free(s->entries[i].id);
            continue;
        }
        s->entries[k++] = s->entries[i];
    }
    s->n = k;
    s->loaded_ms = tg_wall_ms();
}

int tg_catalog_snap_has(const tg_catalog_snap_t *s, const char *id, size_t n)
{
    size_t lo = 0, hi = s ? s->n : 0;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        /* id is counted and may hold a NUL: compare bytes, never read e past
         * its end. Same order as strcmp for ids without NUL. */
        const char *e = s->entries[mid].id;
        size_t el = strlen(e);
        int c = memcmp(e, id, el < n ? el : n);
        if (c == 0) c = (el > n) - (el < n); /* a prefix sorts first */
        if (c == 0) return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

void tg_catalog_snap_release(tg_catalog_snap_t *s)
{
    if (!s || atomic_fetch_sub_explicit(&s->refs, 1, memory_order_acq_rel) != 1) return;
    for (size_t i = 0; i < s->n; i++)
        free(s->entries[i].id);
    free(s->entries);
    free(s);
}

/* ---- parsing ------------------------------------------------------------------ */

static int add_ids(tg_catalog_snap_t *s, const cJSON *arr, const char *field, int kind)
{
    int added = 0;
    for (const cJSON *it = arr->child; it; it = it->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(it, field);
        if (!cJSON_IsString(id) || !id->valuestring[0]) continue;
        int rc = tg_catalog_snap_add(s, id->valuestring, strlen(id->valuestring), kind);
        if (rc == TG_EINVAL) continue;
        if (rc) return rc;
        added++;
    }
    return added;
}

int tg_catalog_parse_models(tg_catalog_snap_t *s, const char *body, size_t len)
{
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "modelSummaries");
    int rc = cJSON_IsArray(arr) ? add_ids(s, arr, "modelId", TG_CATALOG_MODEL) : TG_EPROTO;
    cJSON_Delete(root);
    return rc;
}

int tg_catalog_parse_profiles(tg_catalog_snap_t *s, const char *body, size_t len, char *next,
                              size_t nextcap)
{
    next[0] = '\0';
    cJSON *root = cJSON_ParseWithLength(body, len);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(root, "inferenceProfileSummaries");
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(root, "nextToken");
    int rc = TG_EPROTO;
    if (cJSON_IsArray(arr) || (root && !arr)) { /* an empty account may omit the list */
        rc = arr ? add_ids(s, arr, "inferenceProfileId", TG_CATALOG_PROFILE) : 0;
        if (rc >= 0 && cJSON_IsString(tok) && tok->valuestring[0] &&
            (size_t)snprintf(next, nextcap, "%s", tok->valuestring) >= nextcap) {
            next[0] = '\0';
            rc = TG_ETOOBIG;
        }
    }
    cJSON_Delete(root);
    return rc;
}

/* ---- the refresher ---------------------------------------------------------- */

struct tg_catalog {
    const tg_provider_t *p;
    tg_awsauth_t *auth;
    tg_awsauth_keys_t keys; /* the thread's own signing-key cache */
    char host[256];
    char base_path[256]; /* the control endpoint's own path, "" usually */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic int stop;
    CURLM *multi; /* the thread's fetches; destroy wakes it */
    int running;
    pthread_t thread;
    tg_catalog_snap_t *cur;
};

int tg_catalog_create(tg_catalog_t **out, const tg_provider_t *p, tg_awsauth_t *auth)
{
    tg_catalog_t *c = calloc(1, sizeof(*c));
    if (!c) return TG_ENOMEM;
    c->p = p;
    c->auth = auth;
    if (tg_config_url_host(p->control_endpoint, c->host, sizeof(c->host))) {
        free(c);
        return TG_EINVAL;
    }
    const char *h = strstr(p->control_endpoint, "://") + 3;
    const char *slash = strchr(h, '/');
    snprintf(c->base_path, sizeof(c->base_path), "%s", slash ? slash : "");
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (!(c->multi = curl_multi_init())) {
        tg_catalog_destroy(c);
        return TG_ENOMEM;
    }
    *out = c;
    return TG_OK;
}

tg_catalog_snap_t *tg_catalog_acquire(tg_catalog_t *c)
{
    if (!c) return NULL;
    pthread_mutex_lock(&c->mu);
    tg_catalog_snap_t *s = c->cur;
    if (s) atomic_fetch_add_explicit(&s->refs, 1, memory_order_relaxed);
    pthread_mutex_unlock(&c->mu);
    return s;
}

void tg_catalog_publish(tg_catalog_t *c, tg_catalog_snap_t *s)
{
    pthread_mutex_lock(&c->mu);
    tg_catalog_snap_t *old = c->cur;
    c->cur = s;
    pthread_mutex_unlock(&c->mu);
    tg_catalog_snap_release(old);
}

/* One signed GET on the control plane. Returns 0 with the body in b on 200. */
static int get(tg_catalog_t *c, const char *path, const char *query, tg_buf_t *b, char *err,
               size_t errcap)
{
    char fullpath[512], url[2048];
    snprintf(fullpath, sizeof(fullpath), "%s%s", c->base_path, path);
    const char *ep = c->p->control_endpoint;
    const char *h = strstr(ep, "://") + 3;
    size_t origin = (size_t)(h - ep) + strcspn(h, "/");
    if ((size_t)snprintf(url, sizeof(url), "%.*s%s%s%s", (int)origin, ep, fullpath,
                         query && *query ? "?" : "", query ? query : "") >= sizeof(url))
        return TG_ETOOBIG;
    tg_arena_t arena;
    tg_arena_init(&arena, 64 << 10);
    tg_awsauth_out_t so;
    tg_awsauth_req_t r = {
        .method = "GET",
        .host = c->host,
        .region = c->p->region,
        .service = "bedrock",
        .path = fullpath,
        .path_len = strlen(fullpath),
        .query = query,
        .query_len = query ? strlen(query) : 0,
    };
    int rc = tg_awsauth_sign(c->auth, &c->keys, &r, &arena, &so);
    if (rc) {
        snprintf(err, errcap, "%s", rc == TG_EAUTH ? "no AWS credentials yet" : tg_strerror(rc));
        tg_arena_free(&arena);
        return rc;
    }
    struct curl_slist *hl = NULL;
    for (size_t i = 0; i < so.n; i++)
        hl = curl_slist_append(hl, so.lines[i]);
    hl = curl_slist_append(hl, "Accept: application/json");
    long status = 0;
    tg_buf_reset(b);
    if (!hl) {
        rc = TG_ENOMEM;
    } else {
        char why[CURL_ERROR_SIZE + 64];
        tg_fetch_t q = {.method = "GET",
                        .url = url,
                        .headers = hl,
                        .timeout_ms = 30000,
                        .connect_timeout_ms = c->p->connect_timeout_ms};
        rc = tg_fetch(c->multi, &c->stop, &q, &status, b, why, sizeof(why));
        if (rc) {
            snprintf(err, errcap, "GET %s: %.200s", path, why);
        } else if (status != 200) {
            char msg[160];
            tg_aws_error_message(b->data ? b->data : "", b->len, msg, sizeof(msg));
            snprintf(err, errcap, "GET %s: HTTP %ld %s", path, status, msg);
            rc = TG_EUPSTREAM;
        }
    }
    curl_slist_free_all(hl);
    tg_arena_free(&arena);
    return rc;
}

/* Fetches a whole new catalogue; NULL (and err) on any failure. */
static tg_catalog_snap_t *fetch(tg_catalog_t *c, char *err, size_t errcap)
{
    tg_catalog_snap_t *s = tg_catalog_snap_new();
    tg_buf_t b;
    tg_buf_init(&b, MAX_BODY);
    int rc = s ? get(c, "/foundation-models", NULL, &b, err, errcap) : TG_ENOMEM;
    if (!rc && (rc = tg_catalog_parse_models(s, b.data, b.len)) < 0)
        snprintf(err, errcap, "ListFoundationModels: unexpected response");
    char next[2048] = "", query[6400]; /* nextToken, percent-encoded: up to 3x */
    for (int page = 0; rc >= 0 && page < MAX_PAGES; page++) {
        int n = snprintf(query, sizeof(query), "maxResults=%d", PAGE_SIZE);
        if (next[0]) {
            tg_buf_t enc;
            tg_buf_init(&enc, 3 * sizeof(next));
            if (tg_sigv4_uri_encode(&enc, next, strlen(next), 0) == 0)
                snprintf(query + n, sizeof(query) - (size_t)n, "&nextToken=%s", enc.data);
            tg_buf_free(&enc);
        }
        if ((rc = get(c, "/inference-profiles", query, &b, err, errcap))) break;
        if ((rc = tg_catalog_parse_profiles(s, b.data, b.len, next, sizeof(next))) < 0) {
            snprintf(err, errcap, "ListInferenceProfiles: unexpected response");
            break;
        }
        if (!next[0]) break;
    }
    tg_buf_free(&b);
    if (rc < 0) {
        tg_catalog_snap_release(s);
        return NULL;
    }
    tg_catalog_snap_seal(s);
    return s;
}

static void *run(void *arg)
{
    tg_catalog_t *c = arg;
    pthread_setname_np(pthread_self(), "tg-catalog");
    unsigned backoff = BACKOFF_MIN;
    for (;;) {
        char err[300] = "";
        tg_catalog_snap_t *s = fetch(c, err, sizeof(err));
        unsigned wait_s;
        if (s) {
            tg_info("provider %s: Bedrock catalogue loaded, %zu models and profiles", c->p->name,
                    s->n);
            tg_catalog_publish(c, s);
            backoff = BACKOFF_MIN;
            wait_s = c->p->catalog_refresh_s;
        } else {
            tg_warn("provider %s: Bedrock catalogue refresh failed (%s); retrying in %u s",
                    c->p->name, err, backoff);
            wait_s = backoff;
            backoff = backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : backoff * 2;
        }
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        ts.tv_sec += wait_s;
        pthread_mutex_lock(&c->mu);
        while (!c->stop && pthread_cond_timedwait(&c->cv, &c->mu, &ts) == 0)
            ;
        int stop = c->stop;
        pthread_mutex_unlock(&c->mu);
        if (stop) return NULL;
    }
}

int tg_catalog_start(tg_catalog_t *c)
{
    if (c->running) return TG_OK;
    if (pthread_create(&c->thread, NULL, run, c)) return TG_EIO;
    c->running = 1;
    return TG_OK;
}

void tg_catalog_destroy(tg_catalog_t *c)
{
    if (!c) return;
    if (c->running) {
        pthread_mutex_lock(&c->mu);
        c->stop = 1;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
        curl_multi_wakeup(c->multi); /* cuts a fetch in flight short */
        pthread_join(c->thread, NULL);
    }
    if (c->multi) curl_multi_cleanup(c->multi);
    tg_catalog_snap_release(c->cur);
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
    free(c);
}

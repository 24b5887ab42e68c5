/* admin.c - the admin API's router, authentication, report endpoint and the
 * governance endpoints (units, teams, keys: gov/manage.h does the work).
 *
 * A request is checked on the listener's loop (route, shape, parameters, the
 * JSON body), then its store work (the admin key lookup, then the report or
 * the governance operation) runs on the thread pool with a store connection
 * of its own, and the answer is sent back on the loop. Admin traffic is
 * rare, so a connection per request keeps it simple and shares nothing with
 * the workers; what it writes reaches the gateway through the store. */
#include "api/admin.h"

#include "api/internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "core/core.h"
#include "api/metrics.h"
#include "gov/manage.h"
#include "store/store.h"
#include "usage/report.h"

/* A report longer than this many days is refused: ask for a smaller range. */
#define ADMIN_MAX_DAYS 3660

struct tg_admin {
    const tg_config_t *cfg;
    tg_tenancy_t *tenancy;
    tg_metrics_t *metrics; /* the gateway's, for GET /admin/metrics; may be NULL */
    tg_http_app_t app;
};

typedef struct {
    tg_tenancy_view_t view;
} admin_worker_t;

enum { JOB_REPORT, JOB_MANAGE, JOB_LIMITS, JOB_METRICS };

typedef struct {
    uv_work_t work;
    tg_admin_t *a;
    tg_req_t *req;
    uint8_t hash[32];
    int kind; /* JOB_* */
    /* JOB_MANAGE: the operation (path and query borrowed from req, which
     * lives until it is answered), its parsed body (owned) and answer. */
    tg_manage_req_t mreq;
    cJSON *mbody;
    tg_manage_result_t mres;
    /* JOB_REPORT: the report asked for. */
    char unit[64], team[64], key[40], model[128];
    tg_rollup_query_t q;
    int format, decimals;
    /* The answer, filled on the pool. */
    int status;
    const char *code, *msg;
    tg_buf_t body;
} admin_job_t;

static void send_body(tg_req_t *req, int status, const char *type, const void *body, size_t len)
{
    tg_header_t h = {"Content-Type", 12, type, strlen(type)};
    tg_resp_send(req, status, &h, 1, body, len);
}

static const char *format_type(int format)
{
    switch (format) {
    case TG_REPORT_CSV:
        return "text/csv; charset=utf-8";
    case TG_REPORT_JSON:
        return "application/json";
    case TG_REPORT_JSONL:
        return "application/x-ndjson";
    case TG_REPORT_MARKDOWN:
        return "text/markdown; charset=utf-8";
    default:
        return "text/plain; charset=utf-8";
    }
}

/* The snapshot the listener checked may be a moment old: the store decides.
 * A secret rotated out (the previous hash) is a tenant's too. */
static int is_tenant_key(tg_store_t *st, const uint8_t hash[32])
{
    tg_key_t *keys = NULL;
    size_t n = 0;
    int found = 0;
    if (tg_store_keys_list(st, &keys, &n) == 0)
        for (size_t i = 0; i < n && !found; i++)
            found = memcmp(keys[i].hash, hash, 32) == 0 ||
                    (keys[i].prev_expires_ms && memcmp(keys[i].prev_hash, hash, 32) == 0);
    free(keys);
    return found;
}

/* The report into j->body, or the error. */
static void report_work(admin_job_t *j, tg_store_t *st)
{
    tg_report_t r;
    int rc = tg_report_build(st, &j->q, &r);
    if (!rc) {
        rc = tg_report_write(&j->body, &r, j->format, j->decimals);
        tg_report_free(&r);
    }
    if (rc == TG_ETOOBIG)
        j->status = 422, j->code = "total_too_large",
        j->msg = "A total of this report does not fit in 64 bits; ask for a smaller range.";
    else if (rc)
        j->status = 503, j->code = "store_unavailable", j->msg = "The report could not be built.";
    else
        j->status = 200;
}

static void job_work(uv_work_t *w)
{
    admin_job_t *j = w->data;
    tg_store_t *st = NULL;
    int rc = tg_store_open(&st, &j->a->cfg->store);
    if (rc) {
        j->status = 503, j->code = "store_unavailable", j->msg = "The store cannot be opened.";
        return;
    }
    rc = tg_store_admin_key_check(st, j->hash);
    if (rc == TG_EAUTH) {
        j->status = 401, j->code = "invalid_admin_key", j->msg = "Invalid admin key.";
        if (is_tenant_key(st, j->hash))
            j->status = 403, j->code = "admin_key_required",
            j->msg = "This is a tenant API key; the admin API needs an admin key.";
    } else if (rc) {
        j->status = 503, j->code = "store_unavailable", j->msg = "The store did not answer.";
    } else if (j->kind == JOB_LIMITS || j->kind == JOB_METRICS) {
        j->status = 200; /* the live counters are read on the loop, in job_done */
    } else if (j->kind == JOB_MANAGE) {
        j->mreq.now_ms = tg_wall_ms();
        j->status = tg_manage(st, &j->mreq, &j->mres);
        if (j->status >= 300) j->code = j->mres.code, j->msg = j->mres.message;
    } else {
        report_work(j, st);
    }
    tg_store_close(st);
}

static void job_free(admin_job_t *j)
{
    tg_buf_free(&j->body);
    cJSON_Delete(j->mbody);
    cJSON_Delete(j->mres.body);
    free(j);
}

/* GET /admin/limits?key=ID | team=ID | unit=ID: the live limits and budgets
 * of any scope, found through a key that belongs to it. */
static void limits_answer(admin_job_t *j)
{
    tg_req_t *req = j->req;
    admin_worker_t *aw = tg_worker_data(req->worker);
    const tg_snapshot_t *snap = tg_tenancy_view_get(&aw->view);
    const tg_principal_t *p = NULL;
    int first_scope = TG_SCOPE_KEY;
    if (j->key[0]) {
        tg_snapshot_key_by_id(snap, j->key, &p);
    } else {
        first_scope = j->team[0] ? TG_SCOPE_TEAM : TG_SCOPE_UNIT;
        const char *want = j->team[0] ? j->team : j->unit;
        for (size_t i = 0; !p && i < tg_snapshot_count(snap); i++) {
            const tg_principal_t *q = NULL;
            tg_snapshot_key_at(snap, i, &q);
            if (q && q->scope_id[first_scope] && strcmp(q->scope_id[first_scope], want) == 0) p = q;
        }
    }
    if (!p) {
        tg_resp_error(req, 404, "not_found", "No key, team or unit by that id has a key.");
        return;
    }
    tg_buf_t b;
    tg_buf_init(&b, 1 << 20);
    tg_buf_appends(&b, "{\"object\":\"limits\"");
    int64_t now = tg_wall_ms();
    for (int s = first_scope; s < TG_SCOPES; s++) {
        if (!p->scope_id[s] || !p->scope_id[s][0]) continue;
        tg_buf_appends(&b, ",");
        tg_api_scope_json(&b, p, s, now);
    }
    tg_buf_appends(&b, "}");
    if (b.data)
        send_body(req, 200, "application/json", b.data, b.len);
    else
        tg_resp_error(req, 500, "internal_error", "Out of memory.");
    tg_buf_free(&b);
}

static void job_done(uv_work_t *w, int status)
{
    admin_job_t *j = w->data;
    if (j->kind == JOB_MANAGE && j->status < 300 && j->mres.body) {
        char *text = cJSON_PrintUnformatted(j->mres.body);
        if (text)
            send_body(j->req, j->status, "application/json", text, strlen(text));
        else
            tg_resp_error(j->req, 500, "internal_error", "Out of memory.");
        free(text);
    } else if (j->kind == JOB_LIMITS && j->status == 200) {
        limits_answer(j);
    } else if (j->kind == JOB_METRICS && j->status == 200) {
        if (tg_metrics_render(j->a->metrics, &j->body) == 0)
            send_body(j->req, 200, "text/plain; version=0.0.4; charset=utf-8",
                      j->body.data ? j->body.data : "", j->body.len);
        else
            tg_resp_error(j->req, 500, "internal_error", "Metrics too large.");
    } else if (j->kind == JOB_REPORT && j->status == 200) {
        send_body(j->req, 200, format_type(j->format), j->body.data ? j->body.data : "",
                  j->body.len);
    } else {
        tg_resp_error(j->req, j->status >= 300 ? j->status : 500,
                      j->code ? j->code : "internal_error",
                      j->msg ? j->msg : "The request failed.");
    }
    job_free(j);
}

/* Runs j on the thread pool; answers 503 itself when it cannot. */
static void job_queue(admin_job_t *j)
{
    j->work.data = j;
    if (uv_queue_work(j->req->loop, &j->work, job_work, job_done) != 0) {
        tg_resp_error(j->req, 503, "overloaded", "The admin API is busy.");
        job_free(j);
    }
}

/* Reads optional parameter name into out; -1 (answered 400) when malformed. */
static int param(tg_req_t *req, const char *name, char *out, size_t cap)
{
    int rc = tg_query_get(req->query, name, out, cap);
    if (rc >= 0 || rc == TG_ENOTFOUND) {
        if (rc == TG_ENOTFOUND) out[0] = '\0';
        return 0;
    }
    char msg[160];
    snprintf(msg, sizeof(msg), "Query parameter '%s' is %s.", name,
             rc == TG_ETOOBIG ? "too long" : "not validly encoded");
    tg_resp_error(req, 400, "invalid_parameter", msg);
    return -1;
}

/* A job of kind for req, checked with the key whose hash is given; NULL
 * (answered 503) without memory. */
static admin_job_t *job_new(tg_admin_t *a, tg_req_t *req, const uint8_t hash[32], int kind)
{
    admin_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        tg_resp_error(req, 503, "overloaded", "Out of memory.");
        return NULL;
    }
    j->a = a;
    j->req = req;
    j->kind = kind;
    memcpy(j->hash, hash, 32);
    return j;
}

static void limits(tg_admin_t *a, tg_req_t *req, const uint8_t hash[32])
{
    admin_job_t *j = job_new(a, req, hash, JOB_LIMITS);
    if (!j) return;
    if (param(req, "key", j->key, sizeof(j->key)) || param(req, "team", j->team, sizeof(j->team)) ||
        param(req, "unit", j->unit, sizeof(j->unit))) {
        free(j);
        return;
    }
    if (!!j->key[0] + !!j->team[0] + !!j->unit[0] != 1) {
        free(j);
        tg_resp_error(req, 400, "invalid_parameter", "Give exactly one of key, team or unit.");
        return;
    }
    tg_buf_init(&j->body, 0);
    job_queue(j);
}

/* GET /admin/metrics: the gateway's /metrics for an admin key, from any
 * address the admin listener accepts (a Prometheus server elsewhere, with
 * the key as its bearer credential). */
static void metrics(tg_admin_t *a, tg_req_t *req, const uint8_t hash[32])
{
    admin_job_t *j = job_new(a, req, hash, JOB_METRICS);
    if (!j) return;
    tg_buf_init(&j->body, 16 << 20);
    job_queue(j);
}

static void reports(tg_admin_t *a, tg_req_t *req, const uint8_t hash[32])
{
    admin_job_t *j = job_new(a, req, hash, JOB_REPORT);
    if (!j) return;
    char from[16], to[16], group[128], format[16], decimals[8];
    if (param(req, "from", from, sizeof(from)) || param(req, "to", to, sizeof(to)) ||
        param(req, "group_by", group, sizeof(group)) ||
        param(req, "format", format, sizeof(format)) ||
        param(req, "decimals", decimals, sizeof(decimals)) ||
        param(req, "unit", j->unit, sizeof(j->unit)) ||
        param(req, "team", j->team, sizeof(j->team)) || param(req, "key", j->key, sizeof(j->key)) ||
        param(req, "model", j->model, sizeof(j->model))) {
        free(j);
        return;
    }
    int64_t a_ms, b_ms;
    const char *bad = NULL;
    char err[160];
    unsigned g = TG_GROUP_TEAM | TG_GROUP_MODEL;
    j->decimals = -1;
    j->format = format[0] ? tg_report_parse_format(format) : TG_REPORT_JSON;
    if (!from[0])
        bad = "Query parameter 'from' (YYYY-MM-DD) is required.";
    else if (tg_report_parse_day(from, &a_ms) || tg_report_parse_day(to[0] ? to : from, &b_ms))
        bad = "Dates must be YYYY-MM-DD.";
    else if (b_ms < a_ms)
        bad = "'to' is before 'from'.";
    else if ((b_ms - a_ms) / TG_DAY_MS >= ADMIN_MAX_DAYS)
        bad = "The range is longer than 3660 days.";
    else if (group[0] && tg_report_parse_group(group, &g, err, sizeof(err)))
        bad = err;
    else if (j->format < 0)
        bad = "'format' must be table, csv, json, jsonl or markdown.";
    else if (decimals[0]) {
        char *end;
        long d = strtol(decimals, &end, 10);
        if (*end || d < 0 || d > 12)
            bad = "'decimals' must be 0 to 12.";
        else
            j->decimals = (int)d;
    }
    if (bad) {
        tg_resp_error(req, 400, "invalid_parameter", bad);
        free(j);
        return;
    }
    j->q = (tg_rollup_query_t){.from_ms = a_ms,
                               .to_ms = b_ms + TG_DAY_MS,
                               .group = g,
                               .unit = j->unit,
                               .team = j->team,
                               .key_id = j->key,
                               .model = j->model};
    tg_buf_init(&j->body, 0);
    job_queue(j);
}

/* A governance endpoint (gov/manage.h): the body is parsed here, the
 * operation runs on the pool. */
static void manage(tg_admin_t *a, tg_req_t *req, const uint8_t hash[32])
{
    if (req->body_len > TG_MANAGE_MAX_BODY) {
        tg_resp_error(req, 413, "body_too_large", "The request body is larger than 64 KiB.");
        return;
    }
    admin_job_t *j = job_new(a, req, hash, JOB_MANAGE);
    if (!j) return;
    if (req->body_len) {
        j->mbody = cJSON_ParseWithLength(req->body, req->body_len);
        if (!j->mbody) {
            tg_resp_error(req, 400, "invalid_json", "The body is not valid JSON.");
            job_free(j);
            return;
        }
    }
    j->mreq = (tg_manage_req_t){.method = req->method,
                                .path = req->path,
                                .path_len = req->path_len,
                                .query = req->query,
                                .body = j->mbody};
    job_queue(j);
}

/* The presented admin key's hash; -1 (answered) when there is none or it is
 * a tenant's key. */
static int admin_credential(tg_req_t *req, admin_worker_t *aw, uint8_t hash[32])
{
    const char *tok = tg_req_header(req, "x-api-key");
    const char *auth = tg_req_header(req, "authorization");
    if ((!tok || !*tok) && auth && strncasecmp(auth, "Bearer ", 7) == 0) {
        tok = auth + 7;
        while (*tok == ' ')
            tok++;
    }
    if (!tok || !*tok) {
        tg_resp_error(req, 401, "missing_admin_key",
                      "No admin key: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.");
        return -1;
    }
    const tg_snapshot_t *snap = tg_tenancy_view_get(&aw->view);
    const tg_key_t *k = NULL;
    int rc = snap ? tg_snapshot_auth(snap, tok, strlen(tok), tg_wall_ms(), &k) : TG_EAUTH;
    if (rc != TG_EAUTH) {
        /* A tenant's key, valid or not: never an admin credential. */
        tg_resp_error(req, 403, "admin_key_required",
                      "This is a tenant API key; the admin API needs an admin key.");
        return -1;
    }
    tg_key_hash(tok, strlen(tok), hash);
    return 0;
}

static void handle(tg_req_t *req, void *ctx)
{
    tg_admin_t *a = ctx;
    admin_worker_t *aw = tg_worker_data(req->worker);
    if (!aw) {
        tg_resp_error(req, 503, "overloaded", "Out of memory.");
        return;
    }
    if (req->path_len == 8 && memcmp(req->path, "/healthz", 8) == 0) {
        send_body(req, 200, "application/json", "{\"status\":\"ok\"}", 15);
        return;
    }
    /* The read-only endpoints: GET only, then the key. */
    static const struct {
        const char *path;
        void (*fn)(tg_admin_t *, tg_req_t *, const uint8_t *);
    } gets[] = {
        {"/admin/reports", reports}, {"/admin/limits", limits}, {"/admin/metrics", metrics}};
    uint8_t hash[32];
    for (size_t i = 0; i < sizeof(gets) / sizeof(gets[0]); i++) {
        size_t n = strlen(gets[i].path);
        if (req->path_len != n || memcmp(req->path, gets[i].path, n) != 0) continue;
        if (gets[i].fn == metrics && !a->metrics) break; /* no metrics: not found */
        if (req->method != TG_HTTP_GET) {
            tg_resp_error(req, 405, "method_not_allowed", "Use GET.");
            return;
        }
        if (admin_credential(req, aw, hash)) return;
        gets[i].fn(a, req, hash);
        return;
    }
    /* Unknown paths and methods are answered before the key is looked at. */
    tg_manage_req_t probe = {.method = req->method, .path = req->path, .path_len = req->path_len};
    tg_manage_result_t res;
    if (tg_manage_route(&probe, &res)) {
        tg_resp_error(req, res.status, res.code, res.message);
        return;
    }
    if (admin_credential(req, aw, hash)) return;
    manage(a, req, hash);
}

static void *worker_init(tg_worker_t *w, uv_loop_t *loop, void *ctx)
{
    tg_admin_t *a = ctx;
    admin_worker_t *aw = calloc(1, sizeof(*aw));
    if (aw) tg_tenancy_view_init(&aw->view, a->tenancy);
    return aw;
}

static void worker_fini(tg_worker_t *w, void *wdata, void *ctx)
{
    admin_worker_t *aw = wdata;
    if (!aw) return;
    tg_tenancy_view_release(&aw->view);
    free(aw);
}

int tg_admin_create(tg_admin_t **out, const tg_config_t *cfg, tg_tenancy_t *tenancy,
                    tg_metrics_t *metrics)
{
    tg_admin_t *a = calloc(1, sizeof(*a));
    if (!a) return TG_ENOMEM;
    a->cfg = cfg;
    a->tenancy = tenancy;
    a->metrics = metrics;
    a->app = (tg_http_app_t){
        .handle = handle, .worker_init = worker_init, .worker_fini = worker_fini, .ctx = a};
    *out = a;
    return 0;
}

void tg_admin_destroy(tg_admin_t *a)
{
    free(a);
}

const tg_http_app_t *tg_admin_app(tg_admin_t *a)
{
    return &a->app;
}

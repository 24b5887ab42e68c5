/* admin.c - the admin API's router, authentication and report endpoint.
 *
 * A request is checked on the listener's loop (shape and parameters), then
 * its store work (the admin key lookup, the report) runs on the thread pool
 * with a store connection of its own, and the answer is sent back on the
 * loop. Admin traffic is rare, so a connection per request keeps it simple
 * and shares nothing with the workers. */
#include "api/admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <uv.h>

#include "core/core.h"
#include "store/store.h"
#include "usage/report.h"

/* A report longer than this many days is refused: ask for a smaller range. */
#define ADMIN_MAX_DAYS 3660

struct tg_admin {
    const tg_config_t *cfg;
    tg_tenancy_t *tenancy;
    tg_http_app_t app;
};

typedef struct {
    tg_tenancy_view_t view;
} admin_worker_t;

typedef struct {
    uv_work_t work;
    tg_admin_t *a;
    tg_req_t *req;
    uint8_t hash[32];
    /* The report asked for. */
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

/* The snapshot the listener checked may be a moment old: the store decides. */
static int is_tenant_key(tg_store_t *st, const uint8_t hash[32])
{
    tg_key_t *keys = NULL;
    size_t n = 0;
    int found = 0;
    if (tg_store_keys_list(st, &keys, &n) == 0)
        for (size_t i = 0; i < n && !found; i++)
            found = memcmp(keys[i].hash, hash, 32) == 0;
    free(keys);
    return found;
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
    } else {
        tg_report_t r;
        rc = tg_report_build(st, &j->q, &r);
        if (!rc) {
            rc = tg_report_write(&j->body, &r, j->format, j->decimals);
            tg_report_free(&r);
        }
        if (rc == TG_ETOOBIG)
            j->status = 422, j->code = "total_too_large",
            j->msg = "A total of this report does not fit in 64 bits; ask for a smaller range.";
        else if (rc)
            j->status = 503, j->code = "store_unavailable",
            j->msg = "The report could not be built.";
        else
            j->status = 200;
    }
    tg_store_close(st);
}

static void job_done(uv_work_t *w, int status)
{
    admin_job_t *j = w->data;
    if (j->status == 200)
        send_body(j->req, 200, format_type(j->format), j->body.data ? j->body.data : "",
                  j->body.len);
    else
        tg_resp_error(j->req, j->status ? j->status : 500, j->code ? j->code : "internal_error",
                      j->msg ? j->msg : "The request failed.");
    tg_buf_free(&j->body);
    free(j);
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

static void reports(tg_admin_t *a, tg_req_t *req, const uint8_t hash[32])
{
    admin_job_t *j = calloc(1, sizeof(*j));
    if (!j) {
        tg_resp_error(req, 503, "overloaded", "Out of memory.");
        return;
    }
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
    j->a = a;
    j->req = req;
    memcpy(j->hash, hash, 32);
    j->q = (tg_rollup_query_t){.from_ms = a_ms,
                               .to_ms = b_ms + TG_DAY_MS,
                               .group = g,
                               .unit = j->unit,
                               .team = j->team,
                               .key_id = j->key,
                               .model = j->model};
    tg_buf_init(&j->body, 0);
    j->work.data = j;
    if (uv_queue_work(req->loop, &j->work, job_work, job_done) != 0) {
        tg_resp_error(req, 503, "overloaded", "The admin API is busy.");
        free(j);
    }
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
    int is_reports = req->path_len == 14 && memcmp(req->path, "/admin/reports", 14) == 0;
    if (!is_reports) {
        tg_resp_error(req, 404, "not_found", "No such admin endpoint.");
        return;
    }
    if (req->method != TG_HTTP_GET) {
        tg_resp_error(req, 405, "method_not_allowed", "Use GET.");
        return;
    }
    uint8_t hash[32];
    if (admin_credential(req, aw, hash)) return;
    reports(a, req, hash);
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

int tg_admin_create(tg_admin_t **out, const tg_config_t *cfg, tg_tenancy_t *tenancy)
{
    tg_admin_t *a = calloc(1, sizeof(*a));
    if (!a) return TG_ENOMEM;
    a->cfg = cfg;
    a->tenancy = tenancy;
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

/* govern.c - governance on the front doors: the snapshot of units, teams,
 * keys and policies (built on the writer thread), the checks every call
 * passes before it is forwarded (its model allowed at every scope, the
 * team_id header, admission against limits and budgets), the settlement of
 * what it really cost, and the tenant's own views (/v1/limits, /v1/usage).
 *
 * The request path reads the published snapshot (no lock) and the counters
 * (atomics, gov/limits.h); nothing here touches the store on a worker loop:
 * /v1/usage runs its report on libuv's thread pool. */
#include <stdio.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "gov/limits.h"
#include "gov/policy.h"
#include "providers/bedrock.h"
#include "usage/cost.h"
#include "usage/report.h"

/* ---- the snapshot: built on the writer thread ------------------------------------ */

/* What a snapshot owns besides its keys: the rows the principals point into
 * and the compiled policies. */
typedef struct {
    tg_key_t *keys;
    size_t nkeys;
    tg_team_t *teams;
    size_t nteams;
    tg_unit_t *units;
    size_t nunits;
    tg_policy_row_t *rows; /* sorted by entity */
    tg_policy_t *pols;     /* parallel to rows */
    size_t nrows;
} gov_owned_t;

static void owned_free(void *p)
{
    gov_owned_t *o = p;
    if (!o) return;
    for (size_t i = 0; o->pols && i < o->nrows; i++)
        tg_policy_free(&o->pols[i]);
    free(o->pols);
    tg_store_policies_free(o->rows, o->nrows);
    free(o->keys);
    free(o->teams);
    free(o->units);
    free(o);
}

static int cmp_team(const void *a, const void *b)
{
    return strcmp(((const tg_team_t *)a)->id, ((const tg_team_t *)b)->id);
}

static int cmp_unit(const void *a, const void *b)
{
    return strcmp(((const tg_unit_t *)a)->id, ((const tg_unit_t *)b)->id);
}

static const tg_policy_t *policy_of(const gov_owned_t *o, const char *kind, const char *id)
{
    char entity[sizeof(o->rows[0].entity)];
    snprintf(entity, sizeof(entity), "%s:%s", kind, id);
    size_t lo = 0, hi = o->nrows;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        int c = strcmp(o->rows[mid].entity, entity);
        if (c == 0) return &o->pols[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* Counters created by this build, to seed from the ledger. */
typedef struct {
    tg_gov_counters_t *c;
    int scope;
    const char *id;
} fresh_t;

static tg_gov_counters_t *counters(tg_gov_t *g, const char *kind, const char *id, fresh_t *fresh,
                                   size_t *nfresh, int scope)
{
    char entity[96];
    snprintf(entity, sizeof(entity), "%s:%s", kind, id);
    int created = 0;
    tg_gov_counters_t *c = tg_gov_counters(g, entity, &created);
    if (c && created) fresh[(*nfresh)++] = (fresh_t){c, scope, id};
    return c;
}

/* Seeds new counters with what the ledger already holds for the current day,
 * week and month (budgets and quotas carry over a restart). */
static void seed_fresh(tg_store_t *st, const fresh_t *fresh, size_t n, int64_t now)
{
    if (!n) return;
    static const unsigned groups[TG_SCOPES] = {TG_GROUP_KEY, TG_GROUP_TEAM, TG_GROUP_UNIT};
    tg_gov_seed_t *seeds = calloc(n, sizeof(*seeds));
    if (!seeds) return;
    for (int scope = 0; scope < TG_SCOPES; scope++) {
        for (int period = TG_PERIOD_DAY; period <= TG_PERIOD_MONTH; period++) {
            int64_t start, end;
            tg_period_bounds(period, now, &start, &end);
            tg_usage_total_t *t = NULL;
            size_t nt = 0;
            if (tg_store_usage_totals(st, groups[scope], start, &t, &nt)) continue;
            for (size_t i = 0; i < n; i++) {
                if (fresh[i].scope != scope) continue;
                for (size_t k = 0; k < nt; k++) {
                    if (strcmp(t[k].id, fresh[i].id) != 0) continue;
                    if (period == TG_PERIOD_DAY)
                        seeds[i].day_requests = t[k].requests, seeds[i].day_pico = t[k].cost;
                    else if (period == TG_PERIOD_WEEK)
                        seeds[i].week_pico = t[k].cost;
                    else
                        seeds[i].month_requests = t[k].requests, seeds[i].month_pico = t[k].cost;
                }
            }
            free(t);
        }
    }
    for (size_t i = 0; i < n; i++)
        tg_gov_seed(fresh[i].c, now, &seeds[i]);
    free(seeds);
}

/* Loads keys, teams, units and policies and publishes a snapshot whose
 * principals point at compiled policies and live counters. */
static int build_snapshot(tg_store_t *st, tg_gov_t *gov, tg_snapshot_t **out, size_t *nkeys)
{
    gov_owned_t *o = calloc(1, sizeof(*o));
    if (!o) return TG_ENOMEM;
    int rc = tg_store_keys_list(st, &o->keys, &o->nkeys);
    if (!rc) rc = tg_store_teams_list(st, &o->teams, &o->nteams);
    if (!rc) rc = tg_store_units_list(st, &o->units, &o->nunits);
    if (!rc) rc = tg_store_policies_list(st, &o->rows, &o->nrows);
    if (!rc && o->nrows && !(o->pols = calloc(o->nrows, sizeof(*o->pols)))) rc = TG_ENOMEM;
    for (size_t i = 0; !rc && i < o->nrows; i++) {
        char err[256];
        if (tg_policy_parse_text(o->rows[i].json, strlen(o->rows[i].json), &o->pols[i], err,
                                 sizeof(err))) {
            /* Stored policies were checked when written; one that no longer
             * parses fails closed: no model is allowed. */
            tg_error("policy of %s is invalid (%s): its calls are refused", o->rows[i].entity, err);
            tg_policy_free(&o->pols[i]);
            o->pols[i].all_models = 0;
        }
    }
    tg_principal_t *pr = NULL;
    fresh_t *fresh = NULL;
    size_t nfresh = 0;
    if (!rc && o->nkeys) {
        pr = calloc(o->nkeys, sizeof(*pr));
        fresh = calloc(3 * o->nkeys, sizeof(*fresh));
        if (!pr || !fresh) rc = TG_ENOMEM;
    }
    if (o->nteams) qsort(o->teams, o->nteams, sizeof(*o->teams), cmp_team);
    if (o->nunits) qsort(o->units, o->nunits, sizeof(*o->units), cmp_unit);
    for (size_t i = 0; !rc && i < o->nkeys; i++) {
        const tg_key_t *k = &o->keys[i];
        tg_team_t tkey;
        snprintf(tkey.id, sizeof(tkey.id), "%s", k->team);
        const tg_team_t *team =
            o->nteams ? bsearch(&tkey, o->teams, o->nteams, sizeof(*o->teams), cmp_team) : NULL;
        const char *unit = team ? team->unit : "";
        const tg_unit_t *u = NULL;
        if (unit[0]) {
            tg_unit_t ukey;
            snprintf(ukey.id, sizeof(ukey.id), "%s", unit);
            u = o->nunits ? bsearch(&ukey, o->units, o->nunits, sizeof(*o->units), cmp_unit) : NULL;
        }
        tg_principal_t *p = &pr[i];
        p->unit = unit;
        p->disabled = team && team->disabled_ms ? TG_PRINCIPAL_TEAM_DISABLED
                      : u && u->disabled_ms     ? TG_PRINCIPAL_UNIT_DISABLED
                                                : TG_PRINCIPAL_ENABLED;
        p->scope_id[TG_SCOPE_KEY] = k->id;
        p->scope_id[TG_SCOPE_TEAM] = k->team;
        p->scope_id[TG_SCOPE_UNIT] = unit;
        p->policy[TG_SCOPE_KEY] = policy_of(o, "key", k->id);
        p->policy[TG_SCOPE_TEAM] = policy_of(o, "team", k->team);
        p->policy[TG_SCOPE_UNIT] = unit[0] ? policy_of(o, "unit", unit) : NULL;
        p->counters[TG_SCOPE_KEY] = counters(gov, "key", k->id, fresh, &nfresh, TG_SCOPE_KEY);
        p->counters[TG_SCOPE_TEAM] = counters(gov, "team", k->team, fresh, &nfresh, TG_SCOPE_TEAM);
        p->counters[TG_SCOPE_UNIT] =
            unit[0] ? counters(gov, "unit", unit, fresh, &nfresh, TG_SCOPE_UNIT) : NULL;
        if (!p->counters[TG_SCOPE_KEY] || !p->counters[TG_SCOPE_TEAM] ||
            (unit[0] && !p->counters[TG_SCOPE_UNIT]))
            rc = TG_ENOMEM;
    }
    if (!rc) seed_fresh(st, fresh, nfresh, tg_wall_ms());
    free(fresh);
    if (rc) {
        free(pr);
        owned_free(o);
        return rc;
    }
    *nkeys = o->nkeys;
    rc = tg_snapshot_build_gov(out, o->keys, pr, o->nkeys, o, owned_free);
    free(pr);
    return rc;
}

void tg_gateway_reload_tick(tg_store_t *st, void *ud)
{
    tg_key_reloader_t *r = ud;
    int64_t ver;
    if (tg_store_data_version(st, &ver)) return;
    /* data_version moves only on other connections' commits: the CLI, the
     * admin API, the report job. The first tick always loads. */
    if (ver == r->seen) return;
    tg_snapshot_t *snap = NULL;
    size_t n = 0;
    int rc = build_snapshot(st, r->gov, &snap, &n);
    if (rc) {
        tg_error("cannot reload keys and policies: %s", tg_strerror(rc));
        return;
    }
    tg_tenancy_publish(r->tenancy, snap);
    if (r->seen != -1) tg_info("reloaded %zu API keys", n);
    r->seen = ver;
}

/* ---- admission -------------------------------------------------------------------- */

/* The most output the request allows: the first of the fields the model
 * families use for it, else 0 (unknown). */
static const char *const max_output_paths[][2] = {
    {"max_completion_tokens", NULL},           /* OpenAI */
    {"max_tokens", NULL},                      /* OpenAI (older), Anthropic, Mistral, Cohere */
    {"inferenceConfig", "maxTokens"},          /* Converse */
    {"inferenceConfig", "max_new_tokens"},     /* Nova InvokeModel */
    {"textGenerationConfig", "maxTokenCount"}, /* Titan */
    {"max_gen_len", NULL},                     /* Llama */
    {"maxTokens", NULL},                       /* AI21 */
    {"parameters", "max_new_tokens"},          /* TGI, JumpStart */
    {"max_new_tokens", NULL},
};
enum { MAX_OUTPUT_PATHS = sizeof(max_output_paths) / sizeof(max_output_paths[0]) };

int64_t tg_api_max_output(const cJSON *root)
{
    if (!cJSON_IsObject(root)) return 0;
    for (size_t i = 0; i < MAX_OUTPUT_PATHS; i++) {
        const char *const *path = max_output_paths[i];
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, path[0]);
        if (v && path[1]) v = cJSON_GetObjectItemCaseSensitive(v, path[1]);
        if (cJSON_IsNumber(v) && v->valuedouble >= 1 && v->valuedouble <= 1e9)
            return (int64_t)v->valuedouble;
    }
    return 0;
}

const char *tg_api_max_output_name(size_t i)
{
    return i < MAX_OUTPUT_PATHS ? max_output_paths[i][0] : NULL;
}

/* first_of[i]: the first path whose top-level name is path i's (a scan
 * finds a name listed twice for its first listing). */
static unsigned char first_of[MAX_OUTPUT_PATHS];

static void first_of_fill(void)
{
    for (size_t i = 0; i < MAX_OUTPUT_PATHS; i++) {
        size_t j = 0;
        while (strcmp(max_output_paths[j][0], max_output_paths[i][0]) != 0)
            j++;
        first_of[i] = (unsigned char)j;
    }
}

int tg_api_max_output_spans(const tg_span_t *v, int64_t *out)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, first_of_fill);
    *out = 0;
    for (size_t i = 0; i < MAX_OUTPUT_PATHS; i++) {
        const char *const *path = max_output_paths[i];
        tg_span_t n = v[first_of[i]];
        if (n.p && path[1]) {
            tg_span_t in = {NULL, 0};
            if (*n.p == '{' && tg_json_members(n.p, n.len, &path[1], 1, &in) < 0) return -1;
            n = *n.p == '{' ? in : (tg_span_t){NULL, 0};
        }
        /* cJSON_IsNumber: the scanner checked the syntax; strtod is what
         * cJSON reads it with. */
        if (!n.p || !(*n.p == '-' || (*n.p >= '0' && *n.p <= '9'))) continue;
        char tmp[64];
        if (n.len >= sizeof(tmp)) return -1;
        memcpy(tmp, n.p, n.len);
        tmp[n.len] = '\0';
        double d = strtod(tmp, NULL);
        if (d >= 1 && d <= 1e9) {
            *out = (int64_t)d;
            return 0;
        }
    }
    return 0;
}

static int any_budget(const tg_principal_t *p)
{
    for (int s = 0; s < TG_SCOPES; s++)
        if (p->policy[s] && p->policy[s]->nbudgets) return 1;
    return 0;
}

static const char *scope_name(int scope)
{
    return scope == TG_SCOPE_KEY ? "key" : scope == TG_SCOPE_TEAM ? "team" : "unit";
}

/* Fills r for a refusal by governance. */
static void refusal_from(const tg_gov_verdict_t *v, int64_t now, tg_api_refusal_t *r)
{
    memset(r, 0, sizeof(*r));
    r->status = v->status;
    r->code = v->code;
    int64_t wait_ms = v->reset_ms > now ? v->reset_ms - now : 1000;
    char reset[32] = "";
    if (v->reset_ms) {
        tg_iso8601_ms(reset, sizeof(reset), v->reset_ms);
        memcpy(reset + 19, "Z", 2); /* whole seconds: 2026-11-28T00:00:00Z */
    }
    const char *scope = scope_name(v->scope);
    if (v->reason == TG_GOV_BUDGET) {
        char lim[32], used[32], req[32];
        tg_usd_format(v->limit, lim, sizeof(lim));
        tg_usd_format(v->used, used, sizeof(used));
        tg_usd_format(v->requested, req, sizeof(req));
        snprintf(r->message, sizeof(r->message),
                 "The %s budget of %s %s (USD %s) cannot cover this call: USD %s is already "
                 "committed and the call may cost up to USD %s. It resets at %s.",
                 tg_period_name(v->period), scope, v->scope_id, lim, used, req, reset);
        snprintf(r->detail, sizeof(r->detail),
                 ",\"budget\":{\"scope\":\"%s\",\"id\":\"%s\",\"period\":\"%s\",\"limit_usd\":"
                 "\"%s\",\"committed_usd\":\"%s\",\"requested_usd\":\"%s\",\"resets_at\":\"%s\"}",
                 scope, v->scope_id, tg_period_name(v->period), lim, used, req, reset);
    } else {
        static const char *const what[] = {
            "",
            "requests per second (burst %lld)",
            "requests per minute (%lld)",
            "tokens per minute (%lld)",
            "requests in flight at once (%lld)",
            "requests per day (%lld)",
            "requests per month (%lld)",
        };
        char lim[96];
        snprintf(lim, sizeof(lim), what[v->reason], (long long)v->limit);
        snprintf(r->message, sizeof(r->message),
                 "Limit reached for %s %s: %s, %lld used. Retry after %lld s.", scope, v->scope_id,
                 lim, (long long)v->used, (long long)((wait_ms + 999) / 1000));
        snprintf(r->detail, sizeof(r->detail),
                 ",\"limit\":{\"scope\":\"%s\",\"id\":\"%s\",\"kind\":\"%s\",\"limit\":%lld,"
                 "\"used\":%lld,\"resets_at\":\"%s\"}",
                 scope, v->scope_id, v->code, (long long)v->limit, (long long)v->used, reset);
    }
    /* Headers: Retry-After and OpenAI's x-ratelimit-* names. */
    int tokens = v->reason == TG_GOV_TPM;
    long long remaining = v->limit > v->used ? (long long)(v->limit - v->used) : 0;
    snprintf(r->hval[0], sizeof(r->hval[0]), "%lld", (long long)((wait_ms + 999) / 1000));
    r->headers[r->nheaders++] = (tg_header_t){"Retry-After", 11, r->hval[0], strlen(r->hval[0])};
    if (v->reason != TG_GOV_BUDGET) {
        static const char *const names[2][3] = {
            {"x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
             "x-ratelimit-reset-requests"},
            {"x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens",
             "x-ratelimit-reset-tokens"}};
        snprintf(r->hval[1], sizeof(r->hval[1]), "%lld", (long long)v->limit);
        snprintf(r->hval[2], sizeof(r->hval[2]), "%lld", remaining);
        snprintf(r->hval[3], sizeof(r->hval[3]), "%lld.%03llds", (long long)(wait_ms / 1000),
                 (long long)(wait_ms % 1000));
        for (int i = 0; i < 3; i++)
            r->headers[r->nheaders++] = (tg_header_t){names[tokens][i], strlen(names[tokens][i]),
                                                      r->hval[1 + i], strlen(r->hval[1 + i])};
    }
}

int tg_api_govern(tg_wctx_t *w, tg_req_t *req, const tg_caller_t *who, const tg_api_call_t *ci,
                  tg_gov_ticket_t *t, tg_api_refusal_t *r)
{
    memset(t, 0, sizeof(*t));
    const tg_principal_t *p = who->p;
    if (!p) return 0; /* a snapshot built without governance: nothing to enforce */
    /* The reference's team_id header names the team to bill: only the key's. */
    const char *team_hdr = tg_req_header(req, "team_id");
    if (team_hdr && *team_hdr && strcmp(team_hdr, who->team) != 0) {
        memset(r, 0, sizeof(*r));
        r->status = 403, r->code = "team_mismatch";
        snprintf(r->message, sizeof(r->message),
                 "This key belongs to team %s; it cannot be used for team %.64s.", who->team,
                 team_hdr);
        return -1;
    }
    for (int s = 0; s < TG_SCOPES; s++) {
        if (tg_policy_allows(p->policy[s], ci->model, ci->model_len)) continue;
        memset(r, 0, sizeof(*r));
        r->status = 403, r->code = "model_not_allowed";
        snprintf(r->message, sizeof(r->message),
                 "Model '%.*s' is not allowed for this key (the %s's policy).",
                 (int)(ci->model_len > 160 ? 160 : ci->model_len), ci->model, scope_name(s));
        return -1;
    }
    int64_t now = tg_wall_ms();
    int64_t reserve = 0;
    if (any_budget(p)) {
        /* The worst case: every byte of the request a token of input, and
         * the most output it allows (or the route's default). */
        tg_usage_event_t ev;
        memset(&ev, 0, sizeof(ev));
        ev.started_ms = now;
        snprintf(ev.model, sizeof(ev.model), "%.*s", (int)ci->model_len, ci->model);
        snprintf(ev.upstream_model, sizeof(ev.upstream_model), "%s", ci->upstream_model);
        snprintf(ev.region, sizeof(ev.region), "%s", ci->region ? ci->region : "");
        ev.input_tokens = (int64_t)req->body_len;
        int64_t max_out = ci->max_output;
        if (!max_out && ci->parse_body) {
            cJSON *j = cJSON_ParseWithLength(req->body, req->body_len);
            max_out = tg_api_max_output(j);
            cJSON_Delete(j);
        }
        ev.output_tokens = max_out > 0 ? max_out
                           : ci->route ? ci->route->max_output_tokens
                                       : TG_DEFAULT_MAX_OUTPUT;
        tg_api_price_event(w->gw->cfg->prices, ci->route, ci->bedrock, &ev);
        reserve = ev.cost_total;
    }
    tg_gov_scope_t sc[TG_SCOPES];
    for (int s = 0; s < TG_SCOPES; s++)
        sc[s] = (tg_gov_scope_t){p->counters[s], p->policy[s], p->scope_id[s]};
    tg_gov_verdict_t v;
    if (tg_gov_admit(sc, now, reserve, t, &v) == 0) return 0;
    refusal_from(&v, now, r);
    return -1;
}

int tg_api_allowed(const tg_caller_t *who, const char *id)
{
    for (int s = 0; who->p && s < TG_SCOPES; s++)
        if (!tg_policy_allows(who->p->policy[s], id, strlen(id))) return 0;
    return 1;
}

void tg_api_gov_release(tg_gov_ticket_t *t)
{
    if (t && t->active) tg_gov_settle(t, tg_wall_ms(), 0, 0);
}

void tg_api_refuse(tg_wctx_t *w, tg_req_t *req, int route, const tg_api_refusal_t *r)
{
    const char *type = r->status == 402   ? "budget_exceeded"
                       : r->status == 429 ? "rate_limit_error"
                                          : "permission_error";
    tg_buf_t b;
    tg_buf_init(&b, 8192);
    int rc = tg_buf_appends(&b, "{\"error\":{\"message\":");
    if (!rc) rc = tg_buf_json_str(&b, r->message, strlen(r->message));
    if (!rc)
        rc = tg_buf_printf(&b, ",\"type\":\"%s\",\"code\":\"%s\"%s}}", type, r->code, r->detail);
    char id[40];
    tg_api_new_id(w, id, sizeof(id), "req_");
    tg_header_t h[2 + TG_API_REFUSAL_HEADERS];
    size_t n = 0;
    h[n++] = (tg_header_t){"Content-Type", 12, "application/json", 16};
    h[n++] = (tg_header_t){"x-request-id", 12, id, strlen(id)};
    for (size_t i = 0; i < r->nheaders; i++)
        h[n++] = r->headers[i];
    tg_api_log(w, req, route, r->status, id, NULL);
    if (rc)
        tg_resp_error(req, r->status, r->code, r->message);
    else
        tg_resp_send(req, r->status, h, n, b.data, b.len);
    tg_buf_free(&b);
}

/* ---- GET /v1/limits: the caller's own policies and what is left ------------------- */

static void gauge_json(tg_buf_t *b, const char *name, const tg_gov_gauge_t *g, int *first)
{
    if (!g->limit) return;
    char reset[32] = "";
    if (g->reset_ms) {
        tg_iso8601_ms(reset, sizeof(reset), g->reset_ms);
        memcpy(reset + 19, "Z", 2);
    }
    long long left = g->limit > g->used ? (long long)(g->limit - g->used) : 0;
    tg_buf_printf(b, "%s\"%s\":{\"limit\":%lld,\"used\":%lld,\"remaining\":%lld", *first ? "" : ",",
                  name, (long long)g->limit, (long long)g->used, left);
    if (reset[0]) tg_buf_printf(b, ",\"resets_at\":\"%s\"", reset);
    tg_buf_appends(b, "}");
    *first = 0;
}

void tg_api_scope_json(tg_buf_t *b, const tg_principal_t *p, int s, int64_t now)
{
    const tg_policy_t *pol = p->policy[s];
    tg_buf_printf(b, "\"%s\":{\"id\":", scope_name(s));
    tg_buf_json_str(b, p->scope_id[s], strlen(p->scope_id[s]));
    tg_buf_appends(b, ",\"models\":");
    if (!pol || pol->all_models) {
        tg_buf_appends(b, "null");
    } else {
        tg_buf_appends(b, "[");
        for (size_t i = 0; i < pol->nmodels; i++) {
            if (i) tg_buf_appends(b, ",");
            tg_buf_json_str(b, pol->models[i], strlen(pol->models[i]));
        }
        tg_buf_appends(b, "]");
    }
    tg_gov_status_t st;
    memset(&st, 0, sizeof(st));
    tg_gov_scope_t sc = {p->counters[s], pol, p->scope_id[s]};
    if (sc.c) tg_gov_status(&sc, now, &st);
    tg_buf_appends(b, ",\"limits\":{");
    int first = 1;
    gauge_json(b, "rate", &st.rate, &first);
    gauge_json(b, "rpm", &st.rpm, &first);
    gauge_json(b, "tpm", &st.tpm, &first);
    gauge_json(b, "concurrency", &st.concurrency, &first);
    gauge_json(b, "requests_per_day", &st.day, &first);
    gauge_json(b, "requests_per_month", &st.month, &first);
    tg_buf_appends(b, "},\"budgets\":[");
    for (size_t i = 0; pol && i < pol->nbudgets && i < st.nbudgets; i++) {
        const tg_budget_def_t *d = &pol->budgets[i];
        const tg_gov_gauge_t *g = &st.budgets[i];
        char lim[32], spent[32], committed[32], left[32], reset[32] = "";
        tg_usd_format(d->pico, lim, sizeof(lim));
        tg_usd_format(st.budget_spent[i], spent, sizeof(spent));
        tg_usd_format(g->used, committed, sizeof(committed));
        tg_usd_format(g->used < d->pico ? d->pico - g->used : 0, left, sizeof(left));
        if (g->reset_ms) {
            tg_iso8601_ms(reset, sizeof(reset), g->reset_ms);
            memcpy(reset + 19, "Z", 2);
        }
        tg_buf_printf(b,
                      "%s{\"period\":\"%s\",\"mode\":\"%s\",\"limit_usd\":\"%s\",\"spent_usd\":"
                      "\"%s\",\"committed_usd\":\"%s\",\"remaining_usd\":\"%s\",\"resets_at\":"
                      "\"%s\"}",
                      i ? "," : "", tg_period_name(d->period),
                      d->mode == TG_BUDGET_SOFT ? "soft" : "hard", lim, spent, committed, left,
                      reset);
    }
    tg_buf_appends(b, "]}");
}

void tg_api_limits(tg_wctx_t *w, tg_req_t *req)
{
    tg_caller_t who;
    if (tg_api_auth(w, req, TG_ROUTE_OTHER, &who)) return;
    tg_buf_t b;
    tg_buf_init(&b, 1 << 20);
    int64_t now = tg_wall_ms();
    tg_buf_appends(&b, "{\"object\":\"limits\",");
    const tg_principal_t *p = who.p;
    int first = 1;
    for (int s = 0; p && s < TG_SCOPES; s++) {
        if (!p->scope_id[s] || !p->scope_id[s][0]) continue;
        if (!first) tg_buf_appends(&b, ",");
        tg_api_scope_json(&b, p, s, now);
        first = 0;
    }
    tg_buf_appends(&b, "}");
    if (!b.data)
        tg_api_error(w, req, TG_ROUTE_OTHER, 500, "internal_error", "Out of memory.", NULL);
    else
        tg_api_send(w, req, TG_ROUTE_OTHER, 200, "application/json", NULL, b.data, b.len);
    tg_buf_free(&b);
}

/* ---- GET /v1/usage: the caller's team's usage, off the loop ---------------------- */

typedef struct {
    uv_work_t work;
    tg_wctx_t *w;
    tg_req_t *req;
    char team[64];
    tg_rollup_query_t q;
    int format, decimals;
    int status;
    tg_buf_t body;
} usage_job_t;

static void usage_work(uv_work_t *wk)
{
    usage_job_t *j = wk->data;
    tg_store_t *st = NULL;
    tg_report_t r;
    j->status = 503;
    if (tg_store_open(&st, &j->w->gw->cfg->store) == 0 && tg_report_build(st, &j->q, &r) == 0) {
        if (tg_report_write(&j->body, &r, j->format, j->decimals) == 0) j->status = 200;
        tg_report_free(&r);
    }
    tg_store_close(st);
}

static void usage_done(uv_work_t *wk, int status)
{
    usage_job_t *j = wk->data;
    if (j->status == 200)
        tg_api_send(j->w, j->req, TG_ROUTE_OTHER, 200,
                    j->format == TG_REPORT_CSV ? "text/csv; charset=utf-8" : "application/json",
                    NULL, j->body.data ? j->body.data : "", j->body.len);
    else
        tg_api_error(j->w, j->req, TG_ROUTE_OTHER, 503, "store_unavailable",
                     "Usage cannot be read right now.", NULL);
    tg_buf_free(&j->body);
    free(j);
}

void tg_api_usage(tg_wctx_t *w, tg_req_t *req)
{
    tg_caller_t who;
    if (tg_api_auth(w, req, TG_ROUTE_OTHER, &who)) return;
    char from[16] = "", to[16] = "", group[96] = "", format[16] = "";
    int bad = 0;
    const char *names[] = {"from", "to", "group_by", "format"};
    char *outs[] = {from, to, group, format};
    size_t caps[] = {sizeof(from), sizeof(to), sizeof(group), sizeof(format)};
    for (int i = 0; i < 4; i++) {
        int rc = tg_query_get(req->query, names[i], outs[i], caps[i]);
        if (rc < 0 && rc != TG_ENOTFOUND) bad = 1;
        if (rc == TG_ENOTFOUND) outs[i][0] = '\0';
    }
    int64_t now = tg_wall_ms(), a, b;
    if (!from[0]) {
        int64_t end;
        tg_period_bounds(TG_PERIOD_MONTH, now, &a, &end); /* default: this month to today */
    } else if (tg_report_parse_day(from, &a)) {
        bad = 1;
    }
    if (!to[0])
        b = now - now % TG_DAY_MS;
    else if (tg_report_parse_day(to, &b))
        bad = 1;
    unsigned g = TG_GROUP_MODEL | TG_GROUP_DAY;
    char err[160];
    if (group[0] && tg_report_parse_group(group, &g, err, sizeof(err))) bad = 1;
    int fmt = format[0] ? tg_report_parse_format(format) : TG_REPORT_JSON;
    if (fmt != TG_REPORT_JSON && fmt != TG_REPORT_CSV && fmt != TG_REPORT_JSONL) bad = 1;
    if (!bad && (b < a || (b - a) / TG_DAY_MS >= 366)) bad = 1;
    if (bad)
        return tg_api_error(w, req, TG_ROUTE_OTHER, 400, "invalid_parameter",
                            "Use from=YYYY-MM-DD&to=YYYY-MM-DD (at most 366 days), group_by of "
                            "unit,team,key,model,region,day,hour, format json, jsonl or csv.",
                            NULL);
    usage_job_t *j = calloc(1, sizeof(*j));
    if (!j) return tg_api_error(w, req, TG_ROUTE_OTHER, 503, "overloaded", "Out of memory.", NULL);
    j->w = w;
    j->req = req;
    snprintf(j->team, sizeof(j->team), "%s", who.team);
    /* The team is the caller's, whatever was asked: no other team's rows. */
    j->q = (tg_rollup_query_t){
        .from_ms = a, .to_ms = b + TG_DAY_MS, .group = g | TG_GROUP_TEAM, .team = j->team};
    j->format = fmt;
    j->decimals = -1;
    tg_buf_init(&j->body, 0);
    j->work.data = j;
    if (uv_queue_work(req->loop, &j->work, usage_work, usage_done) != 0) {
        free(j);
        tg_api_error(w, req, TG_ROUTE_OTHER, 503, "overloaded", "Busy; retry shortly.", NULL);
    }
}

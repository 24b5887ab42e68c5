/* manage.c - the governance operations of manage.h: a router over the
 * /admin paths, field checks that name the field at fault, and the JSON of
 * units, teams and keys.
 *
 * Reads are whole-table lists filtered here: admin traffic is rare and the
 * tables are small (thousands of rows), so the store needs no lookup of its
 * own per entity. Policies are joined by a binary search over the list the
 * store returns sorted by entity. */
#include "gov/manage.h"

#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "gov/policy.h"
#include "http/http.h"
#include "tenancy/tenancy.h"

#define MAX_GRACE_S   (30 * 86400)
#define MAX_EXPIRES_S ((int64_t)100 * 366 * 86400)

enum { E_UNIT, E_TEAM, E_KEY };
enum { A_NONE, A_REVOKE, A_ROTATE };

static const char *const kind_names[] = {"units", "teams", "keys"};
static const char *const kind_one[] = {"unit", "team", "key"};

/* A parsed path: /admin/<kind>[/<id>[/<action>]]. */
typedef struct {
    int kind;
    int has_id;
    char id[64];
    int action;
} route_t;

static int fail(tg_manage_result_t *res, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(tg_manage_result_t *res, int status, const char *code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->message, sizeof(res->message), fmt, ap);
    va_end(ap);
    res->status = status;
    res->code = code;
    res->body = NULL;
    return status;
}

static int invalid(tg_manage_result_t *res, const char *field, const char *msg)
{
    return fail(res, 400, "invalid_field", "%s: %s", field, msg);
}

/* A store error as an answer (TG_EEXIST and TG_ENOTFOUND are the callers'). */
static int store_fail(tg_manage_result_t *res, int err)
{
    if (err == TG_ENOMEM) return fail(res, 500, "internal_error", "Out of memory.");
    return fail(res, 503, "store_unavailable", "The store did not answer (%s).", tg_strerror(err));
}

int tg_manage_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > 63) return 0;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return 0;
    }
    return 1;
}

/* ---- routing ------------------------------------------------------------------- */

static int seg_is(const char *p, size_t n, const char *s)
{
    return n == strlen(s) && memcmp(p, s, n) == 0;
}

static int parse_route(const tg_manage_req_t *req, route_t *r, tg_manage_result_t *res)
{
    memset(r, 0, sizeof(*r));
    const char *p = req->path;
    size_t n = req->path_len;
    if (!p || n < 7 || memcmp(p, "/admin/", 7) != 0)
        return fail(res, 404, "not_found", "No such admin endpoint.");
    p += 7, n -= 7;
    /* Up to three segments, none empty. */
    const char *seg[3];
    size_t len[3];
    int nseg = 0;
    while (nseg < 3) {
        const char *slash = memchr(p, '/', n);
        size_t l = slash ? (size_t)(slash - p) : n;
        if (l == 0) return fail(res, 404, "not_found", "No such admin endpoint.");
        seg[nseg] = p, len[nseg++] = l;
        if (!slash) break;
        p = slash + 1, n -= l + 1;
        if (nseg == 3) return fail(res, 404, "not_found", "No such admin endpoint.");
    }
    r->kind = -1;
    for (int k = 0; k < 3; k++)
        if (seg_is(seg[0], len[0], kind_names[k])) r->kind = k;
    if (r->kind < 0) return fail(res, 404, "not_found", "No such admin endpoint.");
    if (nseg >= 2) {
        if (!tg_manage_id_valid(seg[1], len[1]))
            return fail(res, 404, "not_found",
                        "No %s has this id (ids are 1-63 of A-Z a-z 0-9 . _ -).",
                        kind_one[r->kind]);
        r->has_id = 1;
        memcpy(r->id, seg[1], len[1]);
        r->id[len[1]] = '\0';
    }
    if (nseg == 3) {
        if (r->kind == E_KEY && seg_is(seg[2], len[2], "revoke"))
            r->action = A_REVOKE;
        else if (r->kind == E_KEY && seg_is(seg[2], len[2], "rotate"))
            r->action = A_ROTATE;
        else
            return fail(res, 404, "not_found", "No such admin endpoint.");
    }
    int m = req->method;
    if (r->action != A_NONE) {
        if (m != TG_HTTP_POST) return fail(res, 405, "method_not_allowed", "Use POST.");
    } else if (r->has_id) {
        if (m != TG_HTTP_GET && m != TG_HTTP_PATCH)
            return fail(res, 405, "method_not_allowed", "Use GET or PATCH.");
    } else if (m != TG_HTTP_GET && m != TG_HTTP_POST) {
        return fail(res, 405, "method_not_allowed", "Use GET or POST.");
    }
    return 0;
}

int tg_manage_route(const tg_manage_req_t *req, tg_manage_result_t *res)
{
    route_t r;
    memset(res, 0, sizeof(*res));
    return parse_route(req, &r, res);
}

/* ---- body fields ------------------------------------------------------------------ */

/* The body as an object (an absent body is an empty one). */
static int body_object(const tg_manage_req_t *req, tg_manage_result_t *res)
{
    if (req->body && !cJSON_IsObject(req->body))
        return fail(res, 400, "invalid_json", "The body must be a JSON object.");
    return 0;
}

static const cJSON *field(const tg_manage_req_t *req, const char *name)
{
    return req->body ? cJSON_GetObjectItemCaseSensitive(req->body, name) : NULL;
}

static int only_fields(const tg_manage_req_t *req, const char *const *allowed,
                       tg_manage_result_t *res)
{
    for (const cJSON *it = req->body ? req->body->child : NULL; it; it = it->next) {
        int ok = 0;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(it->string, allowed[i]) == 0;
        if (!ok) return fail(res, 400, "invalid_field", "%.100s: is not a known field", it->string);
    }
    return 0;
}

/* A text field into out (cap 64): an id when is_id, else a name. *present
 * says whether the body had it; null counts as "" for optional fields. */
static int text_field(const tg_manage_req_t *req, const char *name, int is_id, int required,
                      char out[64], int *present, tg_manage_result_t *res)
{
    const cJSON *v = field(req, name);
    *present = v != NULL;
    if (!v || cJSON_IsNull(v)) {
        if (required) return invalid(res, name, "is required");
        if (v) out[0] = '\0';
        return 0;
    }
    if (!cJSON_IsString(v)) return invalid(res, name, "must be a string");
    const char *s = v->valuestring;
    size_t n = strlen(s);
    if (is_id) {
        /* An optional reference may be "" (none). */
        if (!(n == 0 && !required) && !tg_manage_id_valid(s, n))
            return invalid(res, name, "must be 1 to 63 of A-Z a-z 0-9 . _ -");
    } else {
        if (n > 63) return invalid(res, name, "must be under 64 bytes");
        for (size_t i = 0; i < n; i++)
            if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
                return invalid(res, name, "has a control character");
    }
    memcpy(out, s, n + 1);
    return 0;
}

static int bool_field(const tg_manage_req_t *req, const char *name, int *out, int *present,
                      tg_manage_result_t *res)
{
    const cJSON *v = field(req, name);
    *present = v != NULL;
    if (!v) return 0;
    if (!cJSON_IsBool(v)) return invalid(res, name, "must be true or false");
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Whole seconds from 0 to max. */
static int seconds_field(const tg_manage_req_t *req, const char *name, int64_t max, int64_t *out,
                         int *present, tg_manage_result_t *res)
{
    const cJSON *v = field(req, name);
    *present = v != NULL;
    if (!v) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > (double)max ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return fail(res, 400, "invalid_field", "%s: must be whole seconds from 0 to %lld", name,
                    (long long)max);
    *out = (int64_t)v->valuedouble;
    return 0;
}

/* "policy": checked and canonicalised into *json (malloc'ed; NULL for null,
 * which removes it). */
static int policy_field(const tg_manage_req_t *req, char **json, int *present,
                        tg_manage_result_t *res)
{
    const cJSON *v = field(req, "policy");
    *json = NULL;
    *present = v != NULL;
    if (!v || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsObject(v)) return invalid(res, "policy", "must be an object or null");
    tg_policy_t p;
    char err[256];
    int rc = tg_policy_parse(v, &p, err, sizeof(err));
    if (rc == TG_ENOMEM) return store_fail(res, rc);
    if (rc) /* The parser names fields inside the policy ("limits.rpm: ..."). */
        return fail(res, 400, "invalid_field", "%s%s", strncmp(err, "policy", 6) ? "policy." : "",
                    err);
    cJSON *c = NULL;
    rc = tg_policy_to_json(&p, &c);
    tg_policy_free(&p);
    if (!rc && !(*json = cJSON_PrintUnformatted(c))) rc = TG_ENOMEM;
    cJSON_Delete(c);
    if (rc) return store_fail(res, rc);
    if (strlen(*json) > TG_POLICY_MAX_BYTES) {
        free(*json);
        *json = NULL;
        return invalid(res, "policy", "is larger than 64 KiB");
    }
    return 0;
}

/* ---- entities as JSON ------------------------------------------------------------ */

typedef struct {
    tg_policy_row_t *rows;
    size_t n;
} policies_t;

static int cmp_entity(const void *key, const void *row)
{
    return strcmp(key, ((const tg_policy_row_t *)row)->entity);
}

static void entity_name(char out[80], int kind, const char *id)
{
    snprintf(out, 80, "%s:%s", kind_one[kind], id);
}

/* The entity's policy as JSON (a new object), or JSON null. */
static cJSON *policy_json(const policies_t *ps, int kind, const char *id)
{
    char ent[80];
    entity_name(ent, kind, id);
    const tg_policy_row_t *row =
        ps && ps->n ? bsearch(ent, ps->rows, ps->n, sizeof(*ps->rows), cmp_entity) : NULL;
    cJSON *p = row ? cJSON_Parse(row->json) : NULL;
    return p ? p : cJSON_CreateNull();
}

/* A policy just written: the canonical text, or NULL for none. */
static cJSON *policy_text_json(const char *text)
{
    cJSON *p = text ? cJSON_Parse(text) : NULL;
    return p ? p : cJSON_CreateNull();
}

static void add_ms(cJSON *o, const char *name, int64_t ms)
{
    cJSON_AddNumberToObject(o, name, (double)ms);
}

static cJSON *unit_json(const tg_unit_t *u, cJSON *policy)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", u->id);
    cJSON_AddStringToObject(o, "name", u->name);
    add_ms(o, "created_ms", u->created_ms);
    add_ms(o, "updated_ms", u->updated_ms);
    cJSON_AddBoolToObject(o, "disabled", u->disabled_ms != 0);
    add_ms(o, "disabled_ms", u->disabled_ms);
    cJSON_AddItemToObject(o, "policy", policy);
    return o;
}

static cJSON *team_json(const tg_team_t *t, cJSON *policy)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", t->id);
    cJSON_AddStringToObject(o, "unit", t->unit);
    cJSON_AddStringToObject(o, "name", t->name);
    cJSON_AddStringToObject(o, "cost_center", t->cost_center);
    add_ms(o, "created_ms", t->created_ms);
    add_ms(o, "updated_ms", t->updated_ms);
    cJSON_AddBoolToObject(o, "disabled", t->disabled_ms != 0);
    add_ms(o, "disabled_ms", t->disabled_ms);
    cJSON_AddItemToObject(o, "policy", policy);
    return o;
}

static const char *key_state(const tg_key_t *k, int64_t now_ms)
{
    return k->revoked_ms                              ? "revoked"
           : k->expires_ms && k->expires_ms <= now_ms ? "expired"
                                                      : "active";
}

/* Never the hash, current or previous. */
static cJSON *key_json(const tg_key_t *k, cJSON *policy, int64_t now_ms)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", k->id);
    cJSON_AddStringToObject(o, "prefix", k->prefix);
    cJSON_AddStringToObject(o, "team", k->team);
    cJSON_AddStringToObject(o, "name", k->name);
    add_ms(o, "created_ms", k->created_ms);
    add_ms(o, "expires_ms", k->expires_ms);
    add_ms(o, "revoked_ms", k->revoked_ms);
    cJSON_AddStringToObject(o, "state", key_state(k, now_ms));
    add_ms(o, "rotated_until_ms", k->prev_expires_ms);
    cJSON_AddItemToObject(o, "policy", policy);
    return o;
}

static cJSON *data_json(cJSON *arr)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "data", arr);
    return o;
}

/* Sets res to a success answer; a NULL body (cJSON out of memory) is 500. */
static int ok(tg_manage_result_t *res, int status, cJSON *body)
{
    if (!body || cJSON_IsInvalid(body)) {
        cJSON_Delete(body);
        return fail(res, 500, "internal_error", "Out of memory.");
    }
    res->status = status;
    res->body = body;
    return status;
}

/* ---- loading ------------------------------------------------------------------------ */

static int load_policies(tg_store_t *st, policies_t *ps, tg_manage_result_t *res)
{
    int err = tg_store_policies_list(st, &ps->rows, &ps->n);
    return err ? store_fail(res, err) : 0;
}

static void free_policies(policies_t *ps)
{
    tg_store_policies_free(ps->rows, ps->n);
    ps->rows = NULL, ps->n = 0;
}

/* Writes (json) or removes (NULL) an entity's policy. */
static int write_policy(tg_store_t *st, int kind, const char *id, const char *json, int64_t now,
                        tg_manage_result_t *res)
{
    char ent[80];
    entity_name(ent, kind, id);
    int err = tg_store_policy_set(st, ent, json, now);
    return err ? store_fail(res, err) : 0;
}

/* The store's listings, untyped, for find_row. */
static int units_any(tg_store_t *st, void **out, size_t *n)
{
    tg_unit_t *rows = NULL;
    int err = tg_store_units_list(st, &rows, n);
    *out = rows;
    return err;
}

static int teams_any(tg_store_t *st, void **out, size_t *n)
{
    tg_team_t *rows = NULL;
    int err = tg_store_teams_list(st, &rows, n);
    *out = rows;
    return err;
}

static int keys_any(tg_store_t *st, void **out, size_t *n)
{
    tg_key_t *rows = NULL;
    int err = tg_store_keys_list(st, &rows, n);
    *out = rows;
    return err;
}

/* Finds the row whose id (a char array at id_off) is id into *out (elem
 * bytes): 0, 404, or a store failure. */
static int find_row(tg_store_t *st, int (*list)(tg_store_t *, void **, size_t *), size_t elem,
                    size_t id_off, const char *what, const char *id, void *out,
                    tg_manage_result_t *res)
{
    void *all = NULL;
    size_t n = 0;
    int err = list(st, &all, &n);
    if (err) return store_fail(res, err);
    int found = 0;
    for (size_t i = 0; i < n && !found; i++) {
        const char *row = (const char *)all + i * elem;
        if (strcmp(row + id_off, id) == 0) memcpy(out, row, elem), found = 1;
    }
    free(all);
    return found ? 0 : fail(res, 404, "not_found", "No %s '%s'.", what, id);
}

static int find_unit(tg_store_t *st, const char *id, tg_unit_t *out, tg_manage_result_t *res)
{
    return find_row(st, units_any, sizeof(*out), offsetof(tg_unit_t, id), "unit", id, out, res);
}

static int find_team(tg_store_t *st, const char *id, tg_team_t *out, tg_manage_result_t *res)
{
    return find_row(st, teams_any, sizeof(*out), offsetof(tg_team_t, id), "team", id, out, res);
}

static int find_key(tg_store_t *st, const char *id, tg_key_t *out, tg_manage_result_t *res)
{
    return find_row(st, keys_any, sizeof(*out), offsetof(tg_key_t, id), "key", id, out, res);
}

/* A query filter: *on = 0 when absent. */
static int query_filter(const tg_manage_req_t *req, const char *name, char out[64], int *on,
                        tg_manage_result_t *res)
{
    int rc = tg_query_get(req->query ? req->query : "", name, out, 64);
    *on = rc >= 0;
    if (rc >= 0 || rc == TG_ENOTFOUND) return 0;
    return fail(res, 400, "invalid_parameter", "Query parameter '%s' is %s.", name,
                rc == TG_ETOOBIG ? "too long" : "not validly encoded");
}

/* ---- units ---------------------------------------------------------------------------- */

static int unit_create(tg_store_t *st, const tg_manage_req_t *req, tg_manage_result_t *res)
{
    static const char *const fields[] = {"id", "name", "policy", NULL};
    tg_unit_t u;
    memset(&u, 0, sizeof(u));
    int has;
    char *policy = NULL;
    if (only_fields(req, fields, res) || text_field(req, "id", 1, 1, u.id, &has, res) ||
        text_field(req, "name", 0, 0, u.name, &has, res) || policy_field(req, &policy, &has, res))
        return res->status;
    u.created_ms = u.updated_ms = req->now_ms;
    int err = tg_store_unit_insert(st, &u);
    if (err == TG_EEXIST)
        fail(res, 409, "already_exists", "Unit '%s' already exists.", u.id);
    else if (err)
        store_fail(res, err);
    else if (!policy || !write_policy(st, E_UNIT, u.id, policy, req->now_ms, res))
        ok(res, 201, unit_json(&u, policy_text_json(policy)));
    free(policy);
    return res->status;
}

/* A disabled_ms after a PATCH: disabling keeps the first time it was
 * disabled; enabling clears it. */
static int64_t disabled_at(int64_t old, int dis, int64_t now)
{
    return dis ? (old ? old : now) : 0;
}

/* The end of a unit's or team's PATCH, once its row update returned err: the
 * policy written when the body had one, then the entity answered (unit u or
 * team t, whichever is set). */
static int patched(tg_store_t *st, int err, int kind, const char *id, int has_pol,
                   const char *policy, int64_t now, const tg_unit_t *u, const tg_team_t *t,
                   tg_manage_result_t *res)
{
    if (err == TG_ENOTFOUND)
        return fail(res, 404, "not_found", "No %s '%s'.", u ? "unit" : "team", id);
    if (err) return store_fail(res, err);
    if (has_pol && write_policy(st, kind, id, policy, now, res)) return res->status;
    policies_t ps = {0};
    if (!load_policies(st, &ps, res)) {
        cJSON *pj = policy_json(&ps, kind, id);
        ok(res, 200, u ? unit_json(u, pj) : team_json(t, pj));
    }
    free_policies(&ps);
    return res->status;
}

static int unit_patch(tg_store_t *st, const tg_manage_req_t *req, const char *id,
                      tg_manage_result_t *res)
{
    static const char *const fields[] = {"name", "disabled", "policy", NULL};
    tg_unit_t u;
    int has_name, has_dis, has_pol, dis = 0;
    char name[64] = "", *policy = NULL;
    if (only_fields(req, fields, res) || text_field(req, "name", 0, 0, name, &has_name, res) ||
        bool_field(req, "disabled", &dis, &has_dis, res) ||
        policy_field(req, &policy, &has_pol, res))
        return res->status;
    if (find_unit(st, id, &u, res)) goto out;
    if (has_name) memcpy(u.name, name, sizeof(u.name));
    if (has_dis) u.disabled_ms = disabled_at(u.disabled_ms, dis, req->now_ms);
    u.updated_ms = req->now_ms;
    patched(st, tg_store_unit_update(st, &u), E_UNIT, id, has_pol, policy, req->now_ms, &u, NULL,
            res);
out:
    free(policy);
    return res->status;
}

/* A GET of a collection: every row in an array, or (an id in the path) the
 * one row, or 404 naming what was asked for. */
typedef struct {
    cJSON *arr, *one;
} listing_t;

static void listing_add(listing_t *l, cJSON *row)
{
    if (l->arr)
        cJSON_AddItemToArray(l->arr, row);
    else
        l->one = row;
}

static void listing_answer(const listing_t *l, const route_t *r, const char *what,
                           tg_manage_result_t *res)
{
    if (r->has_id && !l->one)
        fail(res, 404, "not_found", "No %s '%s'.", what, r->id);
    else
        ok(res, 200, l->arr ? data_json(l->arr) : l->one);
}

static int units_get(tg_store_t *st, const route_t *r, tg_manage_result_t *res)
{
    tg_unit_t *all = NULL;
    size_t n = 0;
    policies_t ps = {0};
    int err = tg_store_units_list(st, &all, &n);
    if (err) return store_fail(res, err);
    if (!load_policies(st, &ps, res)) {
        listing_t l = {r->has_id ? NULL : cJSON_CreateArray(), NULL};
        for (size_t i = 0; i < n; i++) {
            if (r->has_id && strcmp(all[i].id, r->id)) continue;
            listing_add(&l, unit_json(&all[i], policy_json(&ps, E_UNIT, all[i].id)));
        }
        listing_answer(&l, r, "unit", res);
    }
    free_policies(&ps);
    free(all);
    return res->status;
}

/* ---- teams ------------------------------------------------------------------------------ */

/* A team's unit must exist when set. */
static int check_unit(tg_store_t *st, const char *unit, tg_manage_result_t *res)
{
    if (!unit[0]) return 0;
    tg_unit_t u;
    int rc = find_unit(st, unit, &u, res);
    if (rc == 404) return fail(res, 400, "invalid_field", "unit: no unit '%s' exists", unit);
    return rc;
}

static int team_create(tg_store_t *st, const tg_manage_req_t *req, tg_manage_result_t *res)
{
    static const char *const fields[] = {"id", "unit", "name", "cost_center", "policy", NULL};
    tg_team_t t;
    memset(&t, 0, sizeof(t));
    int has;
    char *policy = NULL;
    if (only_fields(req, fields, res) || text_field(req, "id", 1, 1, t.id, &has, res) ||
        text_field(req, "unit", 1, 0, t.unit, &has, res) ||
        text_field(req, "name", 0, 0, t.name, &has, res) ||
        text_field(req, "cost_center", 0, 0, t.cost_center, &has, res) ||
        policy_field(req, &policy, &has, res))
        return res->status;
    t.created_ms = t.updated_ms = req->now_ms;
    int err;
    if (check_unit(st, t.unit, res)) goto out;
    if ((err = tg_store_team_insert(st, &t)) == TG_EEXIST)
        fail(res, 409, "already_exists", "Team '%s' already exists.", t.id);
    else if (err)
        store_fail(res, err);
    else if (!policy || !write_policy(st, E_TEAM, t.id, policy, req->now_ms, res))
        ok(res, 201, team_json(&t, policy_text_json(policy)));
out:
    free(policy);
    return res->status;
}

static int team_patch(tg_store_t *st, const tg_manage_req_t *req, const char *id,
                      tg_manage_result_t *res)
{
    static const char *const fields[] = {"unit", "name", "cost_center", "disabled", "policy", NULL};
    tg_team_t t;
    int has_unit, has_name, has_cc, has_dis, has_pol, dis = 0;
    char unit[64] = "", name[64] = "", cc[64] = "", *policy = NULL;
    if (only_fields(req, fields, res) || text_field(req, "unit", 1, 0, unit, &has_unit, res) ||
        text_field(req, "name", 0, 0, name, &has_name, res) ||
        text_field(req, "cost_center", 0, 0, cc, &has_cc, res) ||
        bool_field(req, "disabled", &dis, &has_dis, res) ||
        policy_field(req, &policy, &has_pol, res))
        return res->status;
    if (find_team(st, id, &t, res) || (has_unit && check_unit(st, unit, res))) goto out;
    if (has_unit) memcpy(t.unit, unit, sizeof(t.unit));
    if (has_name) memcpy(t.name, name, sizeof(t.name));
    if (has_cc) memcpy(t.cost_center, cc, sizeof(t.cost_center));
    if (has_dis) t.disabled_ms = disabled_at(t.disabled_ms, dis, req->now_ms);
    t.updated_ms = req->now_ms;
    patched(st, tg_store_team_update(st, &t), E_TEAM, id, has_pol, policy, req->now_ms, NULL, &t,
            res);
out:
    free(policy);
    return res->status;
}

static int teams_get(tg_store_t *st, const tg_manage_req_t *req, const route_t *r,
                     tg_manage_result_t *res)
{
    char unit[64];
    int by_unit = 0;
    if (!r->has_id && query_filter(req, "unit", unit, &by_unit, res)) return res->status;
    tg_team_t *all = NULL;
    size_t n = 0;
    policies_t ps = {0};
    int err = tg_store_teams_list(st, &all, &n);
    if (err) return store_fail(res, err);
    if (!load_policies(st, &ps, res)) {
        listing_t l = {r->has_id ? NULL : cJSON_CreateArray(), NULL};
        for (size_t i = 0; i < n; i++) {
            if (r->has_id && strcmp(all[i].id, r->id)) continue;
            if (by_unit && strcmp(all[i].unit, unit)) continue;
            listing_add(&l, team_json(&all[i], policy_json(&ps, E_TEAM, all[i].id)));
        }
        listing_answer(&l, r, "team", res);
    }
    free_policies(&ps);
    free(all);
    return res->status;
}

/* ---- keys ------------------------------------------------------------------------------- */

/* The key's answer (status) after a change, re-read from the store; with
 * secret, {"key": ..., "secret": ...}: the only answers that carry one. */
static int key_answer(tg_store_t *st, const char *id, int64_t now_ms, const char *secret,
                      int status, tg_manage_result_t *res)
{
    tg_key_t k;
    policies_t ps = {0};
    if (find_key(st, id, &k, res) || load_policies(st, &ps, res)) return res->status;
    cJSON *kj = key_json(&k, policy_json(&ps, E_KEY, id), now_ms);
    free_policies(&ps);
    if (!secret) return ok(res, status, kj);
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddItemToObject(o, "key", kj);
        cJSON_AddStringToObject(o, "secret", secret);
    } else {
        cJSON_Delete(kj);
    }
    return ok(res, status, o);
}

static int key_create(tg_store_t *st, const tg_manage_req_t *req, tg_manage_result_t *res)
{
    static const char *const fields[] = {"team", "name", "expires_in_s", "policy", NULL};
    tg_key_t k;
    memset(&k, 0, sizeof(k));
    int has;
    int64_t expires_in = 0;
    char *policy = NULL, secret[TG_KEY_SECRET_MAX];
    if (only_fields(req, fields, res) || text_field(req, "team", 1, 1, k.team, &has, res) ||
        text_field(req, "name", 0, 0, k.name, &has, res) ||
        seconds_field(req, "expires_in_s", MAX_EXPIRES_S, &expires_in, &has, res) ||
        policy_field(req, &policy, &has, res))
        return res->status;
    char team[64], name[64];
    memcpy(team, k.team, sizeof(team));
    memcpy(name, k.name, sizeof(name));
    int err = tg_key_generate(&k, secret, sizeof(secret));
    if (!err) {
        /* generate() fills id, prefix, hash and its own clock's created_ms. */
        memcpy(k.team, team, sizeof(k.team));
        memcpy(k.name, name, sizeof(k.name));
        k.created_ms = req->now_ms;
        k.expires_ms = expires_in ? req->now_ms + expires_in * 1000 : 0;
        err = tg_store_key_insert(st, &k);
    }
    if (err)
        store_fail(res, err);
    else if (!policy || !write_policy(st, E_KEY, k.id, policy, req->now_ms, res))
        key_answer(st, k.id, req->now_ms, secret, 201, res);
    memset(secret, 0, sizeof(secret));
    free(policy);
    return res->status;
}

static int key_patch(tg_store_t *st, const tg_manage_req_t *req, const char *id,
                     tg_manage_result_t *res)
{
    static const char *const fields[] = {"name", "expires_in_s", "policy", NULL};
    tg_key_t k;
    int has_name, has_exp, has_pol;
    int64_t expires_in = 0;
    char name[64] = "", *policy = NULL;
    if (only_fields(req, fields, res) || text_field(req, "name", 0, 0, name, &has_name, res) ||
        seconds_field(req, "expires_in_s", MAX_EXPIRES_S, &expires_in, &has_exp, res) ||
        policy_field(req, &policy, &has_pol, res))
        return res->status;
    if (find_key(st, id, &k, res)) goto out;
    if (has_name) memcpy(k.name, name, sizeof(k.name));
    if (has_exp) k.expires_ms = expires_in ? req->now_ms + expires_in * 1000 : 0;
    int err = tg_store_key_update(st, id, k.name, k.expires_ms);
    if (err == TG_ENOTFOUND)
        fail(res, 404, "not_found", "No key '%s'.", id);
    else if (err)
        store_fail(res, err);
    else if (has_pol && write_policy(st, E_KEY, id, policy, req->now_ms, res))
        goto out;
    else {
        policies_t ps = {0};
        if (!load_policies(st, &ps, res))
            ok(res, 200, key_json(&k, policy_json(&ps, E_KEY, id), req->now_ms));
        free_policies(&ps);
    }
out:
    free(policy);
    return res->status;
}

static int key_revoke(tg_store_t *st, const tg_manage_req_t *req, const char *id,
                      tg_manage_result_t *res)
{
    tg_key_t k;
    if (find_key(st, id, &k, res)) return res->status;
    if (k.revoked_ms) return fail(res, 409, "key_revoked", "Key '%s' is already revoked.", id);
    int err = tg_store_key_revoke(st, id, req->now_ms);
    if (err == TG_ENOTFOUND) /* revoked meanwhile */
        return fail(res, 409, "key_revoked", "Key '%s' is already revoked.", id);
    if (err) return store_fail(res, err);
    return key_answer(st, id, req->now_ms, NULL, 200, res);
}

/* The current secret stays valid for grace_s as the previous one; a secret
 * rotated out before is dropped at once. */
static int key_rotate(tg_store_t *st, const tg_manage_req_t *req, const char *id,
                      tg_manage_result_t *res)
{
    static const char *const fields[] = {"grace_s", NULL};
    int has;
    int64_t grace = 3600;
    tg_key_t k, fresh;
    if (only_fields(req, fields, res) ||
        seconds_field(req, "grace_s", MAX_GRACE_S, &grace, &has, res))
        return res->status;
    if (find_key(st, id, &k, res)) return res->status;
    if (k.revoked_ms) return fail(res, 409, "key_revoked", "Key '%s' is revoked.", id);
    char secret[TG_KEY_SECRET_MAX];
    fresh = k; /* the same id: a derived secret is derived from it */
    int err = tg_key_regenerate(&fresh, secret, sizeof(secret));
    if (!err) err = tg_store_key_rotate(st, id, &fresh, req->now_ms + grace * 1000);
    if (err == TG_ENOTFOUND)
        fail(res, 409, "key_revoked", "Key '%s' is revoked.", id);
    else if (err)
        store_fail(res, err);
    else
        key_answer(st, id, req->now_ms, secret, 200, res);
    memset(secret, 0, sizeof(secret));
    return res->status;
}

static int keys_get(tg_store_t *st, const tg_manage_req_t *req, const route_t *r,
                    tg_manage_result_t *res)
{
    char team[64];
    int by_team = 0;
    if (!r->has_id && query_filter(req, "team", team, &by_team, res)) return res->status;
    if (r->has_id) return key_answer(st, r->id, req->now_ms, NULL, 200, res);
    tg_key_t *all = NULL;
    size_t n = 0;
    policies_t ps = {0};
    int err = tg_store_keys_list(st, &all, &n);
    if (err) return store_fail(res, err);
    if (!load_policies(st, &ps, res)) {
        cJSON *arr = cJSON_CreateArray();
        for (size_t i = 0; i < n; i++)
            if (!by_team || strcmp(all[i].team, team) == 0)
                cJSON_AddItemToArray(
                    arr, key_json(&all[i], policy_json(&ps, E_KEY, all[i].id), req->now_ms));
        ok(res, 200, data_json(arr));
    }
    free_policies(&ps);
    free(all);
    return res->status;
}

/* ---- dispatch ----------------------------------------------------------------------------- */

int tg_manage(tg_store_t *st, const tg_manage_req_t *req, tg_manage_result_t *res)
{
    route_t r;
    memset(res, 0, sizeof(*res));
    if (parse_route(req, &r, res) || body_object(req, res)) return res->status;
    int get = req->method == TG_HTTP_GET, post = req->method == TG_HTTP_POST;
    switch (r.kind) {
    case E_UNIT:
        return get    ? units_get(st, &r, res)
               : post ? unit_create(st, req, res)
                      : unit_patch(st, req, r.id, res);
    case E_TEAM:
        return get    ? teams_get(st, req, &r, res)
               : post ? team_create(st, req, res)
                      : team_patch(st, req, r.id, res);
    default:
        if (r.action == A_REVOKE) return key_revoke(st, req, r.id, res);
        if (r.action == A_ROTATE) return key_rotate(st, req, r.id, res);
        return get    ? keys_get(st, req, &r, res)
               : post ? key_create(st, req, res)
                      : key_patch(st, req, r.id, res);
    }
}

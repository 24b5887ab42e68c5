/* test_gov_store.c - governance in the store (units, teams, policies, key
 * update and rotation, usage totals, migration 4) and the operations of
 * gov/manage.c on top of it, against real SQLite files in a fresh temporary
 * directory per test. */
#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/core.h"
#include "gov/manage.h"
#include "http/http.h"
#include "store/store.h"
#include "tenancy/tenancy.h"

typedef struct {
    char dir[64];
    char path[128];
    tg_store_t *st;
} fixture_t;

static tg_store_t *open_at(const char *path)
{
    tg_store_config_t cfg = {.driver = "sqlite", .path = path, .busy_timeout_ms = 5000};
    tg_store_t *st = NULL;
    assert_int_equal(tg_store_open(&st, &cfg), 0);
    return st;
}

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/tg_gov_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof(f->path), "%s/tollgate.db", f->dir);
    f->st = open_at(f->path);
    *state = f;
    return 0;
}

static int rm_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    tg_store_close(f->st);
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

static void exec_raw(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK) fail_msg("%s: %s", sql, err ? err : "?");
    sqlite3_close(db);
}

static int64_t raw_int(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return v;
}

static tg_key_t make_key(const char *team, char *secret)
{
    tg_key_t k;
    char buf[TG_KEY_SECRET_MAX];
    memset(&k, 0, sizeof(k));
    assert_int_equal(tg_key_generate(&k, secret ? secret : buf, TG_KEY_SECRET_MAX), 0);
    snprintf(k.team, sizeof(k.team), "%s", team);
    snprintf(k.name, sizeof(k.name), "key of %s", team);
    return k;
}

static const tg_key_t *find_key(const tg_key_t *ks, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ks[i].id, id) == 0) return &ks[i];
    return NULL;
}

/* The key id as the store now has it (copied out). */
static tg_key_t stored_key(tg_store_t *st, const char *id)
{
    tg_key_t *ks = NULL, out;
    size_t n = 0;
    assert_int_equal(tg_store_keys_list(st, &ks, &n), 0);
    const tg_key_t *k = find_key(ks, n, id);
    assert_non_null(k);
    out = *k;
    free(ks);
    return out;
}

static const uint8_t zero32[32];

/* ---- migration ------------------------------------------------------------------- */

/* A version-3 file: the current schema with migrations 4 to 8 taken back
 * out, and a key written the way version 3 wrote it. Opening it again
 * migrates. */
static void test_migrates_from_v3(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(tg_store_schema_version(f->st), 8);
    tg_store_close(f->st);
    exec_raw(f->path, "DROP TABLE units; DROP TABLE teams; DROP TABLE policies;"
                      " ALTER TABLE keys DROP COLUMN prev_hash;"
                      " ALTER TABLE keys DROP COLUMN prev_expires_ms;"
                      " ALTER TABLE admin_keys DROP COLUMN prev_hash;"
                      " ALTER TABLE admin_keys DROP COLUMN prev_expires_ms;"
                      " ALTER TABLE usage_events DROP COLUMN over_budget;"
                      " ALTER TABLE usage_events DROP COLUMN image_width;"
                      " ALTER TABLE usage_events DROP COLUMN image_height;"
                      " ALTER TABLE usage_events DROP COLUMN image_steps;"
                      " ALTER TABLE usage_events DROP COLUMN image_quality;"
                      " ALTER TABLE keys DROP COLUMN salt; ALTER TABLE keys DROP COLUMN prev_salt;"
                      " ALTER TABLE admin_keys DROP COLUMN salt;"
                      " ALTER TABLE admin_keys DROP COLUMN prev_salt;"
                      " CREATE INDEX usage_events_team_started ON usage_events(team, started_ms);"
                      " DELETE FROM schema_version WHERE version >= 4;"
                      " INSERT INTO keys (id, unit, team, name, prefix, hash, created_ms,"
                      " expires_ms, revoked_ms) VALUES ('key_old', '', 'red', 'old', 'tg_old1234',"
                      " x'0102030405060708091011121314151617181920212223242526272829303132',"
                      " 1000, 0, 0)");
    assert_int_equal(raw_int(f->path, "SELECT MAX(version) FROM schema_version"), 3);
    f->st = open_at(f->path);
    assert_int_equal(tg_store_schema_version(f->st), 8);
    /* Migration 8 dropped the (team, time) index version 1 made. */
    assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND"
                                      " name = 'usage_events_team_started'"),
                     0);
    /* The old key reads with no previous secret. */
    tg_key_t k = stored_key(f->st, "key_old");
    assert_string_equal(k.team, "red");
    assert_memory_equal(k.prev_hash, zero32, 32);
    assert_int_equal(k.prev_expires_ms, 0);
    assert_int_equal(k.hash[0], 1);
    assert_int_equal(k.hash[31], 0x32);
    /* The new tables and columns exist and work. */
    tg_unit_t u = {.id = "u1", .created_ms = 1, .updated_ms = 1};
    assert_int_equal(tg_store_unit_insert(f->st, &u), 0);
    assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM pragma_table_info('admin_keys')"
                                      " WHERE name IN ('prev_hash', 'prev_expires_ms')"),
                     2);
    char secret[TG_KEY_SECRET_MAX];
    tg_key_t fresh = make_key("x", secret);
    assert_int_equal(tg_store_key_rotate(f->st, "key_old", &fresh, 5000), 0);
    k = stored_key(f->st, "key_old");
    assert_int_equal(k.prev_hash[0], 1);
    assert_int_equal(k.prev_expires_ms, 5000);
    /* Reopening applies nothing again. */
    tg_store_close(f->st);
    f->st = open_at(f->path);
    assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM schema_version"), 8);
}

/* ---- units and teams ------------------------------------------------------------- */

static void test_units(void **state)
{
    fixture_t *f = *state;
    const char *ids[] = {"b", "a.2", "C-3_x"};
    for (int i = 0; i < 3; i++) {
        tg_unit_t u;
        memset(&u, 0, sizeof(u));
        snprintf(u.id, sizeof(u.id), "%s", ids[i]);
        snprintf(u.name, sizeof(u.name), "unit %d", i);
        u.created_ms = 100 + i, u.updated_ms = 200 + i;
        assert_int_equal(tg_store_unit_insert(f->st, &u), 0);
    }
    tg_unit_t dup = {.id = "b", .name = "again", .created_ms = 9, .updated_ms = 9};
    assert_int_equal(tg_store_unit_insert(f->st, &dup), TG_EEXIST);

    tg_unit_t upd = {
        .id = "b", .name = "renamed", .created_ms = 7777, .updated_ms = 300, .disabled_ms = 400};
    assert_int_equal(tg_store_unit_update(f->st, &upd), 0);
    tg_unit_t ghost = {.id = "nope", .updated_ms = 1};
    assert_int_equal(tg_store_unit_update(f->st, &ghost), TG_ENOTFOUND);

    tg_unit_t *us = NULL;
    size_t n = 0;
    assert_int_equal(tg_store_units_list(f->st, &us, &n), 0);
    assert_int_equal(n, 3);
    /* Sorted by id (bytewise: upper case first). */
    assert_string_equal(us[0].id, "C-3_x");
    assert_string_equal(us[1].id, "a.2");
    assert_string_equal(us[2].id, "b");
    assert_string_equal(us[2].name, "renamed");
    assert_int_equal(us[2].created_ms, 100); /* an update never moves created_ms */
    assert_int_equal(us[2].updated_ms, 300);
    assert_int_equal(us[2].disabled_ms, 400);
    assert_string_equal(us[1].name, "unit 1");
    assert_int_equal(us[1].disabled_ms, 0);
    free(us);
}

static void test_teams(void **state)
{
    fixture_t *f = *state;
    tg_team_t t = {.id = "t2",
                   .unit = "u1",
                   .name = "Team Two",
                   .cost_center = "CC-42",
                   .created_ms = 10,
                   .updated_ms = 11};
    assert_int_equal(tg_store_team_insert(f->st, &t), 0);
    tg_team_t t1 = {.id = "t1", .created_ms = 12, .updated_ms = 12};
    assert_int_equal(tg_store_team_insert(f->st, &t1), 0);
    assert_int_equal(tg_store_team_insert(f->st, &t), TG_EEXIST);

    /* Full-width text survives the round trip. */
    tg_team_t upd = t;
    memset(upd.name, 'n', 63);
    upd.name[63] = '\0';
    snprintf(upd.unit, sizeof(upd.unit), "%s", "");
    snprintf(upd.cost_center, sizeof(upd.cost_center), "CC-43");
    upd.updated_ms = 50, upd.disabled_ms = 60, upd.created_ms = 0;
    assert_int_equal(tg_store_team_update(f->st, &upd), 0);
    tg_team_t ghost = {.id = "t9"};
    assert_int_equal(tg_store_team_update(f->st, &ghost), TG_ENOTFOUND);

    tg_team_t *ts = NULL;
    size_t n = 0;
    assert_int_equal(tg_store_teams_list(f->st, &ts, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(ts[0].id, "t1");
    assert_string_equal(ts[0].unit, "");
    assert_string_equal(ts[1].id, "t2");
    assert_string_equal(ts[1].name, upd.name);
    assert_string_equal(ts[1].unit, "");
    assert_string_equal(ts[1].cost_center, "CC-43");
    assert_int_equal(ts[1].created_ms, 10);
    assert_int_equal(ts[1].updated_ms, 50);
    assert_int_equal(ts[1].disabled_ms, 60);
    free(ts);
}

static void test_policies(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(tg_store_policy_set(f->st, "team:t1", "{\"limits\":{\"rpm\":5}}", 10), 0);
    assert_int_equal(tg_store_policy_set(f->st, "key:k1", "{}", 11), 0);
    assert_int_equal(tg_store_policy_set(f->st, "unit:u1", "{\"models\":[]}", 12), 0);
    /* Replacing. */
    assert_int_equal(tg_store_policy_set(f->st, "team:t1", "{\"limits\":{\"rpm\":6}}", 20), 0);
    /* Removing, and removing what is not there. */
    assert_int_equal(tg_store_policy_set(f->st, "key:k1", NULL, 21), 0);
    assert_int_equal(tg_store_policy_set(f->st, "key:nothing", NULL, 22), 0);
    /* An entity name that does not fit a row's field. */
    char longname[100];
    memset(longname, 'x', sizeof(longname) - 1);
    longname[sizeof(longname) - 1] = '\0';
    assert_int_equal(tg_store_policy_set(f->st, longname, "{}", 1), TG_EINVAL);
    assert_int_equal(tg_store_policy_set(f->st, "", "{}", 1), TG_EINVAL);

    tg_policy_row_t *rows = NULL;
    size_t n = 0;
    assert_int_equal(tg_store_policies_list(f->st, &rows, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(rows[0].entity, "team:t1");
    assert_string_equal(rows[0].json, "{\"limits\":{\"rpm\":6}}");
    assert_int_equal(rows[0].updated_ms, 20);
    assert_string_equal(rows[1].entity, "unit:u1");
    assert_string_equal(rows[1].json, "{\"models\":[]}");
    tg_store_policies_free(rows, n);
    tg_store_policies_free(NULL, 0);
}

/* ---- key update and rotation --------------------------------------------------- */

static void test_key_update(void **state)
{
    fixture_t *f = *state;
    tg_key_t k = make_key("red", NULL);
    k.expires_ms = 5000;
    assert_int_equal(tg_store_key_insert(f->st, &k), 0);
    assert_int_equal(tg_store_key_update(f->st, k.id, "new name", 0), 0);
    tg_key_t got = stored_key(f->st, k.id);
    assert_string_equal(got.name, "new name");
    assert_int_equal(got.expires_ms, 0);
    assert_memory_equal(got.hash, k.hash, 32);
    assert_string_equal(got.team, "red");
    /* A revoked key can still be renamed. */
    assert_int_equal(tg_store_key_revoke(f->st, k.id, 7000), 0);
    assert_int_equal(tg_store_key_update(f->st, k.id, "", 9000), 0);
    got = stored_key(f->st, k.id);
    assert_string_equal(got.name, "");
    assert_int_equal(got.expires_ms, 9000);
    assert_int_equal(got.revoked_ms, 7000);
    assert_int_equal(tg_store_key_update(f->st, "key_nope", "x", 0), TG_ENOTFOUND);
}

static void test_key_rotate(void **state)
{
    fixture_t *f = *state;
    tg_key_t k = make_key("red", NULL), other = make_key("blue", NULL);
    assert_int_equal(tg_store_key_insert(f->st, &k), 0);
    assert_int_equal(tg_store_key_insert(f->st, &other), 0);
    /* A new key has no previous secret. */
    tg_key_t got = stored_key(f->st, k.id);
    assert_memory_equal(got.prev_hash, zero32, 32);
    assert_int_equal(got.prev_expires_ms, 0);

    tg_key_t n1 = make_key("x", NULL);
    assert_int_equal(tg_store_key_rotate(f->st, k.id, &n1, 123456), 0);
    got = stored_key(f->st, k.id);
    assert_memory_equal(got.hash, n1.hash, 32);
    assert_string_equal(got.prefix, n1.prefix);
    assert_memory_equal(got.prev_hash, k.hash, 32);
    assert_int_equal(got.prev_expires_ms, 123456);
    assert_string_equal(got.team, "red");
    assert_int_equal(got.created_ms, k.created_ms);

    /* Again: the previous secret is now the first rotation's; the original
     * one is gone. */
    tg_key_t n2 = make_key("x", NULL);
    assert_int_equal(tg_store_key_rotate(f->st, k.id, &n2, 999), 0);
    got = stored_key(f->st, k.id);
    assert_memory_equal(got.hash, n2.hash, 32);
    assert_memory_equal(got.prev_hash, n1.hash, 32);
    assert_int_equal(got.prev_expires_ms, 999);

    /* A hash some key has, now or as its previous one, is refused and
     * changes nothing. */
    assert_int_equal(tg_store_key_rotate(f->st, k.id, &other, 1), TG_EEXIST);
    assert_int_equal(tg_store_key_rotate(f->st, other.id, &n1, 1), TG_EEXIST);
    got = stored_key(f->st, k.id);
    assert_memory_equal(got.hash, n2.hash, 32);
    tg_key_t o = stored_key(f->st, other.id);
    assert_memory_equal(o.hash, other.hash, 32);

    /* Unknown or revoked: not found, nothing changed. */
    tg_key_t n3 = make_key("x", NULL);
    assert_int_equal(tg_store_key_rotate(f->st, "key_nope", &n3, 1), TG_ENOTFOUND);
    assert_int_equal(tg_store_key_revoke(f->st, other.id, 50), 0);
    assert_int_equal(tg_store_key_rotate(f->st, other.id, &n3, 1), TG_ENOTFOUND);
    o = stored_key(f->st, other.id);
    assert_memory_equal(o.hash, other.hash, 32);
    assert_memory_equal(o.prev_hash, zero32, 32);
    assert_int_equal(tg_store_key_rotate(f->st, "", &n3, 1), TG_EINVAL);
    /* The failed attempts left no transaction open: writes still work. */
    assert_int_equal(tg_store_key_rotate(f->st, k.id, &n3, 77), 0);
}

/* ---- usage totals ------------------------------------------------------------------ */

static tg_usage_event_t ev(int i, int64_t started, const char *unit, const char *team,
                           const char *key, int64_t tokens, int64_t cost)
{
    tg_usage_event_t e;
    memset(&e, 0, sizeof(e));
    snprintf(e.id, sizeof(e.id), "evt_%d", i);
    snprintf(e.request_id, sizeof(e.request_id), "req_%d", i);
    e.started_ms = e.ended_ms = started;
    snprintf(e.unit, sizeof(e.unit), "%s", unit);
    snprintf(e.team, sizeof(e.team), "%s", team);
    snprintf(e.key_id, sizeof(e.key_id), "%s", key);
    snprintf(e.model, sizeof(e.model), "m");
    snprintf(e.outcome, sizeof(e.outcome), "ok");
    /* Spread over the four counted kinds; images are not tokens. */
    e.input_tokens = tokens / 4 + tokens % 4;
    e.output_tokens = tokens / 4;
    e.cache_read_tokens = tokens / 4;
    e.cache_write_tokens = tokens / 4;
    e.images = 1000;
    e.cost_input = 999; /* only cost_total is summed */
    e.cost_total = cost;
    return e;
}

static const tg_usage_total_t *find_total(const tg_usage_total_t *t, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].id, id) == 0) return &t[i];
    return NULL;
}

static void test_usage_totals(void **state)
{
    fixture_t *f = *state;
    tg_usage_event_t e[] = {
        ev(1, 999, "u1", "t1", "k1", 1000000, 7), /* before since */
        ev(2, 1000, "u1", "t1", "k1", 10, 100),
        ev(3, 1500, "u1", "t1", "k2", 21, 1000000000000LL),
        ev(4, 2000, "u1", "t2", "k3", 3, 5),
        ev(5, 2500, "u2", "t3", "k4", 4, 6),
        ev(6, 3000, "", "t4", "", 5, 7), /* no unit, no key */
    };
    assert_int_equal(tg_store_usage_append(f->st, e, 6), 0);
    tg_usage_total_t *t = NULL;
    size_t n = 0;

    assert_int_equal(tg_store_usage_totals(f->st, TG_GROUP_KEY, 1000, &t, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(t[0].id, "k1"); /* sorted by id */
    assert_int_equal(t[0].requests, 1);
    assert_int_equal(t[0].tokens, 10);
    assert_int_equal(t[0].cost, 100);
    assert_int_equal(find_total(t, n, "k2")->tokens, 21);
    assert_int_equal(find_total(t, n, "k2")->cost, 1000000000000LL);
    assert_null(find_total(t, n, ""));
    free(t);

    assert_int_equal(tg_store_usage_totals(f->st, TG_GROUP_TEAM, 1000, &t, &n), 0);
    assert_int_equal(n, 4);
    const tg_usage_total_t *t1 = find_total(t, n, "t1");
    assert_int_equal(t1->requests, 2);
    assert_int_equal(t1->tokens, 31);
    assert_int_equal(t1->cost, 1000000000100LL);
    assert_int_equal(find_total(t, n, "t4")->tokens, 5);
    free(t);

    assert_int_equal(tg_store_usage_totals(f->st, TG_GROUP_UNIT, 1000, &t, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(t[0].id, "u1");
    assert_int_equal(t[0].requests, 3);
    assert_int_equal(t[0].tokens, 34);
    assert_int_equal(t[0].cost, 1000000000105LL);
    assert_string_equal(t[1].id, "u2");
    assert_int_equal(t[1].requests, 1);
    free(t);

    /* Since includes the boundary; everything since 0 includes event 1. */
    assert_int_equal(tg_store_usage_totals(f->st, TG_GROUP_UNIT, 0, &t, &n), 0);
    assert_int_equal(t[0].requests, 4);
    assert_int_equal(t[0].tokens, 1000034);
    free(t);
    assert_int_equal(tg_store_usage_totals(f->st, TG_GROUP_KEY, 10000, &t, &n), 0);
    assert_int_equal(n, 0);
    free(t);

    assert_int_equal(tg_store_usage_totals(f->st, TG_GROUP_MODEL, 0, &t, &n), TG_EINVAL);
    assert_int_equal(tg_store_usage_totals(f->st, TG_GROUP_KEY | TG_GROUP_TEAM, 0, &t, &n),
                     TG_EINVAL);

    /* A sum past 64 bits is an error, never a wrapped number. */
    tg_usage_event_t big[2] = {ev(7, 5000, "u9", "t9", "k9", 1, INT64_MAX),
                               ev(8, 5001, "u9", "t9", "k9", 1, 1)};
    assert_int_equal(tg_store_usage_append(f->st, big, 2), 0);
    int level = tg_log_level;
    tg_log_level = TG_LOG_ERROR + 1; /* the store logs the failure */
    assert_true(tg_store_usage_totals(f->st, TG_GROUP_UNIT, 5000, &t, &n) < 0);
    tg_log_level = level;
    assert_null(t);
}

/* ---- gov/manage.c ---------------------------------------------------------------------- */

#define NOW ((int64_t)1800000000000LL)

/* Calls tg_manage with body text (NULL: none); returns the result. */
static tg_manage_result_t call(tg_store_t *st, int method, const char *path, const char *body)
{
    char p[256];
    snprintf(p, sizeof(p), "%s", path);
    char *q = strchr(p, '?');
    if (q) *q++ = '\0';
    cJSON *b = body ? cJSON_Parse(body) : NULL;
    if (body) assert_non_null(b);
    tg_manage_req_t req = {.method = method,
                           .path = p,
                           .path_len = strlen(p),
                           .query = q ? q : "",
                           .body = b,
                           .now_ms = NOW};
    tg_manage_result_t res;
    int status = tg_manage(st, &req, &res);
    assert_int_equal(status, res.status);
    assert_true((status < 300) == (res.body != NULL));
    cJSON_Delete(b);
    return res;
}

/* Expects an error answer whose message starts with prefix. */
static void expect_error(tg_store_t *st, int method, const char *path, const char *body, int status,
                         const char *code, const char *prefix)
{
    tg_manage_result_t r = call(st, method, path, body);
    if (r.status != status || strcmp(r.code ? r.code : "", code) ||
        strncmp(r.message, prefix, strlen(prefix)))
        fail_msg("%s %s: got %d %s \"%s\", want %d %s \"%s...\"", path, body ? body : "", r.status,
                 r.code ? r.code : "-", r.message, status, code, prefix);
    cJSON_Delete(r.body);
}

static const char *str_of(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    assert_true(cJSON_IsString(v));
    return v->valuestring;
}

static double num_of(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    assert_true(cJSON_IsNumber(v));
    return v->valuedouble;
}

/* The policy column of an entity as stored, or NULL (caller frees). */
static char *stored_policy(tg_store_t *st, const char *entity)
{
    tg_policy_row_t *rows = NULL;
    size_t n = 0;
    char *out = NULL;
    assert_int_equal(tg_store_policies_list(st, &rows, &n), 0);
    for (size_t i = 0; i < n; i++)
        if (strcmp(rows[i].entity, entity) == 0) out = strdup(rows[i].json);
    tg_store_policies_free(rows, n);
    return out;
}

static void test_manage_routes(void **state)
{
    tg_manage_req_t req = {.method = TG_HTTP_GET};
    tg_manage_result_t res;
    static const struct {
        int method;
        const char *path;
        int status;
    } cases[] = {
        {TG_HTTP_GET, "/admin/units", 0},
        {TG_HTTP_POST, "/admin/units", 0},
        {TG_HTTP_PATCH, "/admin/units", 405},
        {TG_HTTP_DELETE, "/admin/units/u1", 405},
        {TG_HTTP_PATCH, "/admin/teams/t1", 0},
        {TG_HTTP_POST, "/admin/teams/t1", 405},
        {TG_HTTP_POST, "/admin/keys/key_1/rotate", 0},
        {TG_HTTP_POST, "/admin/keys/key_1/revoke", 0},
        {TG_HTTP_GET, "/admin/keys/key_1/rotate", 405},
        {TG_HTTP_POST, "/admin/units/u1/rotate", 404},
        {TG_HTTP_POST, "/admin/keys/key_1/rotate/x", 404},
        {TG_HTTP_GET, "/admin/units/", 404},
        {TG_HTTP_GET, "/admin/units//x", 404},
        {TG_HTTP_GET, "/admin/unit", 404},
        {TG_HTTP_GET, "/admin/", 404},
        {TG_HTTP_GET, "/admin", 404},
        {TG_HTTP_GET, "/other/units", 404},
        {TG_HTTP_GET, "/admin/units/bad%20id", 404},
        {TG_HTTP_GET,
         "/admin/units/0123456789012345678901234567890123456789012345678901234567890123", 404},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        req.method = cases[i].method;
        req.path = cases[i].path;
        req.path_len = strlen(cases[i].path);
        int got = tg_manage_route(&req, &res);
        if (got != cases[i].status)
            fail_msg("%s: %d, want %d (%s)", cases[i].path, got, cases[i].status, res.message);
        if (got) assert_string_equal(res.code, got == 404 ? "not_found" : "method_not_allowed");
    }
    assert_true(tg_manage_id_valid("a", 1));
    assert_true(tg_manage_id_valid("A.b_c-9", 7));
    assert_false(tg_manage_id_valid("", 0));
    assert_false(tg_manage_id_valid("a b", 3));
    assert_false(tg_manage_id_valid("a/b", 3));
    assert_false(tg_manage_id_valid("é", strlen("é")));
}

static void test_manage_units(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = f->st;
    tg_manage_result_t r =
        call(st, TG_HTTP_POST, "/admin/units",
             "{\"id\":\"u1\",\"name\":\"Unit 1\",\"policy\":{\"budgets\":[{\"usd\":\"10.50\","
             "\"period\":\"day\"}],\"limits\":{\"rpm\":5,\"rate\":1}}}");
    assert_int_equal(r.status, 201);
    assert_string_equal(str_of(r.body, "id"), "u1");
    assert_string_equal(str_of(r.body, "name"), "Unit 1");
    assert_true(num_of(r.body, "created_ms") == (double)NOW);
    assert_true(cJSON_IsFalse(cJSON_GetObjectItem(r.body, "disabled")));
    cJSON_Delete(r.body);
    /* Stored canonical: fields in the documented order, defaults filled in. */
    char *p = stored_policy(st, "unit:u1");
    assert_non_null(p);
    assert_string_equal(p,
                        "{\"limits\":{\"rate\":1,\"burst\":1,\"rpm\":5},\"budgets\":[{\"period\":"
                        "\"day\",\"usd\":\"10.5\",\"mode\":\"hard\"}]}");
    free(p);

    expect_error(st, TG_HTTP_POST, "/admin/units", "{\"id\":\"u1\"}", 409, "already_exists",
                 "Unit 'u1' already exists");
    expect_error(st, TG_HTTP_POST, "/admin/units", "{}", 400, "invalid_field", "id: is required");
    expect_error(st, TG_HTTP_POST, "/admin/units", "{\"id\":\"a b\"}", 400, "invalid_field",
                 "id: must be 1 to 63");
    expect_error(st, TG_HTTP_POST, "/admin/units", "{\"id\":7}", 400, "invalid_field",
                 "id: must be a string");
    expect_error(st, TG_HTTP_POST, "/admin/units",
                 "{\"id\":\"u2\",\"name\":\"0123456789012345678901234567890123456789012345678901"
                 "234567890123\"}",
                 400, "invalid_field", "name: must be under 64 bytes");
    expect_error(st, TG_HTTP_POST, "/admin/units", "{\"id\":\"u2\",\"name\":\"a\\nb\"}", 400,
                 "invalid_field", "name: has a control character");
    expect_error(st, TG_HTTP_POST, "/admin/units", "{\"id\":\"u2\",\"colour\":\"red\"}", 400,
                 "invalid_field", "colour: is not a known field");
    expect_error(st, TG_HTTP_POST, "/admin/units",
                 "{\"id\":\"u2\",\"policy\":{\"limits\":{\"rpm\":0}}}", 400, "invalid_field",
                 "policy.limits.rpm: must be a whole number");
    expect_error(st, TG_HTTP_POST, "/admin/units", "{\"id\":\"u2\",\"policy\":{\"x\":1}}", 400,
                 "invalid_field", "policy.x: is not a known field");
    expect_error(st, TG_HTTP_POST, "/admin/units", "{\"id\":\"u2\",\"policy\":[]}", 400,
                 "invalid_field", "policy: must be an object or null");
    expect_error(st, TG_HTTP_POST, "/admin/units", "[1]", 400, "invalid_json",
                 "The body must be a JSON object");
    /* A refused request wrote nothing. */
    r = call(st, TG_HTTP_GET, "/admin/units", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.body, "data")), 1);
    cJSON_Delete(r.body);

    /* PATCH: only what is given changes; disabling keeps its first time. */
    r = call(st, TG_HTTP_PATCH, "/admin/units/u1", "{\"disabled\":true}");
    assert_int_equal(r.status, 200);
    assert_string_equal(str_of(r.body, "name"), "Unit 1");
    assert_true(num_of(r.body, "disabled_ms") == (double)NOW);
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(r.body, "policy")));
    cJSON_Delete(r.body);
    r = call(st, TG_HTTP_PATCH, "/admin/units/u1",
             "{\"name\":\"One\",\"disabled\":true,\"policy\":null}");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.body, "policy")));
    assert_string_equal(str_of(r.body, "name"), "One");
    cJSON_Delete(r.body);
    assert_null(stored_policy(st, "unit:u1"));
    r = call(st, TG_HTTP_PATCH, "/admin/units/u1", "{\"disabled\":false}");
    assert_true(num_of(r.body, "disabled_ms") == 0);
    cJSON_Delete(r.body);
    expect_error(st, TG_HTTP_PATCH, "/admin/units/u1", "{\"disabled\":1}", 400, "invalid_field",
                 "disabled: must be true or false");
    expect_error(st, TG_HTTP_PATCH, "/admin/units/u1", "{\"id\":\"u3\"}", 400, "invalid_field",
                 "id: is not a known field");
    expect_error(st, TG_HTTP_PATCH, "/admin/units/u9", "{}", 404, "not_found", "No unit 'u9'");
    expect_error(st, TG_HTTP_GET, "/admin/units/u9", NULL, 404, "not_found", "No unit 'u9'");

    r = call(st, TG_HTTP_GET, "/admin/units/u1", NULL);
    assert_string_equal(str_of(r.body, "name"), "One");
    assert_non_null(cJSON_GetObjectItem(r.body, "updated_ms"));
    cJSON_Delete(r.body);
}

static void test_manage_teams(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = f->st;
    cJSON_Delete(call(st, TG_HTTP_POST, "/admin/units", "{\"id\":\"u1\"}").body);
    cJSON_Delete(call(st, TG_HTTP_POST, "/admin/units", "{\"id\":\"u2\"}").body);
    expect_error(st, TG_HTTP_POST, "/admin/teams", "{\"id\":\"t1\",\"unit\":\"u7\"}", 400,
                 "invalid_field", "unit: no unit 'u7'");
    tg_manage_result_t r =
        call(st, TG_HTTP_POST, "/admin/teams",
             "{\"id\":\"t1\",\"unit\":\"u1\",\"cost_center\":\"CC-1\",\"policy\":{}}");
    assert_int_equal(r.status, 201);
    assert_string_equal(str_of(r.body, "unit"), "u1");
    assert_string_equal(str_of(r.body, "cost_center"), "CC-1");
    assert_true(cJSON_IsObject(cJSON_GetObjectItem(r.body, "policy")));
    cJSON_Delete(r.body);
    cJSON_Delete(call(st, TG_HTTP_POST, "/admin/teams", "{\"id\":\"t2\",\"unit\":\"u2\"}").body);
    cJSON_Delete(call(st, TG_HTTP_POST, "/admin/teams", "{\"id\":\"t3\"}").body);
    expect_error(st, TG_HTTP_POST, "/admin/teams", "{\"id\":\"t3\"}", 409, "already_exists",
                 "Team 't3' already exists");

    r = call(st, TG_HTTP_GET, "/admin/teams?unit=u1", NULL);
    cJSON *data = cJSON_GetObjectItem(r.body, "data");
    assert_int_equal(cJSON_GetArraySize(data), 1);
    assert_string_equal(str_of(cJSON_GetArrayItem(data, 0), "id"), "t1");
    cJSON_Delete(r.body);
    r = call(st, TG_HTTP_GET, "/admin/teams?unit=", NULL); /* teams without a unit */
    data = cJSON_GetObjectItem(r.body, "data");
    assert_int_equal(cJSON_GetArraySize(data), 1);
    assert_string_equal(str_of(cJSON_GetArrayItem(data, 0), "id"), "t3");
    cJSON_Delete(r.body);
    r = call(st, TG_HTTP_GET, "/admin/teams", NULL);
    assert_int_equal(cJSON_GetArraySize(cJSON_GetObjectItem(r.body, "data")), 3);
    cJSON_Delete(r.body);
    expect_error(st, TG_HTTP_GET, "/admin/teams?unit=%zz", NULL, 400, "invalid_parameter",
                 "Query parameter 'unit'");

    /* Moving a team: the unit must exist; "" leaves it without one. */
    expect_error(st, TG_HTTP_PATCH, "/admin/teams/t1", "{\"unit\":\"u8\"}", 400, "invalid_field",
                 "unit: no unit 'u8'");
    r = call(st, TG_HTTP_PATCH, "/admin/teams/t1", "{\"unit\":\"u2\",\"name\":\"T\"}");
    assert_string_equal(str_of(r.body, "unit"), "u2");
    assert_string_equal(str_of(r.body, "cost_center"), "CC-1");
    cJSON_Delete(r.body);
    r = call(st, TG_HTTP_PATCH, "/admin/teams/t1", "{\"unit\":\"\",\"cost_center\":null}");
    assert_string_equal(str_of(r.body, "unit"), "");
    assert_string_equal(str_of(r.body, "cost_center"), "");
    assert_string_equal(str_of(r.body, "name"), "T");
    cJSON_Delete(r.body);
    expect_error(st, TG_HTTP_PATCH, "/admin/teams/zz", "{}", 404, "not_found", "No team 'zz'");
    r = call(st, TG_HTTP_GET, "/admin/teams/t2", NULL);
    assert_string_equal(str_of(r.body, "unit"), "u2");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.body, "policy")));
    cJSON_Delete(r.body);
}

static void test_manage_keys(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = f->st;
    expect_error(st, TG_HTTP_POST, "/admin/keys", "{}", 400, "invalid_field", "team: is required");
    expect_error(st, TG_HTTP_POST, "/admin/keys", "{\"team\":\"t 1\"}", 400, "invalid_field",
                 "team: must be 1 to 63");
    expect_error(st, TG_HTTP_POST, "/admin/keys", "{\"team\":\"t1\",\"expires_in_s\":-1}", 400,
                 "invalid_field", "expires_in_s: must be whole seconds");
    expect_error(st, TG_HTTP_POST, "/admin/keys", "{\"team\":\"t1\",\"expires_in_s\":1.5}", 400,
                 "invalid_field", "expires_in_s: must be whole seconds");
    expect_error(st, TG_HTTP_POST, "/admin/keys",
                 "{\"team\":\"t1\",\"policy\":{\"budgets\":[{\"period\":\"year\",\"usd\":\"1\"}]}}",
                 400, "invalid_field", "policy.budgets[0].period: must be");

    /* The team need not have a row. */
    tg_manage_result_t r = call(
        st, TG_HTTP_POST, "/admin/keys",
        "{\"team\":\"t1\",\"name\":\"ci\",\"expires_in_s\":60,\"policy\":{\"models\":[\"a*\"]}}");
    assert_int_equal(r.status, 201);
    const char *secret = str_of(r.body, "secret");
    assert_int_equal(strlen(secret), 46);
    assert_memory_equal(secret, "tg_", 3);
    cJSON *k = cJSON_GetObjectItem(r.body, "key");
    char id[40];
    snprintf(id, sizeof(id), "%s", str_of(k, "id"));
    assert_memory_equal(str_of(k, "prefix"), secret, 10);
    assert_string_equal(str_of(k, "state"), "active");
    assert_true(num_of(k, "expires_ms") == (double)(NOW + 60000));
    assert_true(num_of(k, "rotated_until_ms") == 0);
    assert_null(cJSON_GetObjectItem(k, "hash"));
    assert_null(cJSON_GetObjectItem(k, "prev_hash"));
    /* The stored hash is the secret's. */
    uint8_t h[32];
    tg_key_hash(secret, strlen(secret), h);
    tg_key_t stored = stored_key(st, id);
    assert_memory_equal(stored.hash, h, 32);
    char ent[64];
    snprintf(ent, sizeof(ent), "key:%s", id);
    char *p = stored_policy(st, ent);
    assert_string_equal(p, "{\"models\":[\"a*\"]}");
    free(p);
    cJSON_Delete(r.body);

    /* Reading never shows a secret. */
    char path[128];
    snprintf(path, sizeof(path), "/admin/keys/%s", id);
    r = call(st, TG_HTTP_GET, path, NULL);
    assert_null(cJSON_GetObjectItem(r.body, "secret"));
    assert_string_equal(str_of(r.body, "team"), "t1");
    assert_true(
        cJSON_IsArray(cJSON_GetObjectItem(cJSON_GetObjectItem(r.body, "policy"), "models")));
    cJSON_Delete(r.body);
    cJSON_Delete(call(st, TG_HTTP_POST, "/admin/keys", "{\"team\":\"t2\"}").body);
    r = call(st, TG_HTTP_GET, "/admin/keys?team=t2", NULL);
    cJSON *data = cJSON_GetObjectItem(r.body, "data");
    assert_int_equal(cJSON_GetArraySize(data), 1);
    assert_string_equal(str_of(cJSON_GetArrayItem(data, 0), "team"), "t2");
    assert_null(cJSON_GetObjectItem(cJSON_GetArrayItem(data, 0), "secret"));
    cJSON_Delete(r.body);

    /* PATCH: expiry 0 = never; an expiry in the past reads as expired. */
    r = call(st, TG_HTTP_PATCH, path, "{\"expires_in_s\":0,\"name\":\"ci2\",\"policy\":null}");
    assert_true(num_of(r.body, "expires_ms") == 0);
    assert_string_equal(str_of(r.body, "name"), "ci2");
    assert_true(cJSON_IsNull(cJSON_GetObjectItem(r.body, "policy")));
    cJSON_Delete(r.body);
    assert_int_equal(tg_store_key_update(st, id, "ci2", NOW - 1), 0);
    r = call(st, TG_HTTP_GET, path, NULL);
    assert_string_equal(str_of(r.body, "state"), "expired");
    cJSON_Delete(r.body);
    assert_int_equal(tg_store_key_update(st, id, "ci2", 0), 0);

    /* Rotation: a new secret; the old hash is kept until now + grace. */
    char rot[160];
    snprintf(rot, sizeof(rot), "/admin/keys/%s/rotate", id);
    expect_error(st, TG_HTTP_POST, rot, "{\"grace_s\":2592001}", 400, "invalid_field",
                 "grace_s: must be whole seconds from 0 to 2592000");
    r = call(st, TG_HTTP_POST, rot, "{\"grace_s\":120}");
    assert_int_equal(r.status, 200);
    const char *secret2 = str_of(r.body, "secret");
    assert_int_equal(strlen(secret2), 46);
    assert_true(num_of(cJSON_GetObjectItem(r.body, "key"), "rotated_until_ms") ==
                (double)(NOW + 120000));
    uint8_t h2[32];
    tg_key_hash(secret2, strlen(secret2), h2);
    stored = stored_key(st, id);
    assert_memory_equal(stored.hash, h2, 32);
    assert_memory_equal(stored.prev_hash, h, 32);
    assert_int_equal(stored.prev_expires_ms, NOW + 120000);
    assert_string_equal(str_of(cJSON_GetObjectItem(r.body, "key"), "prefix"), stored.prefix);
    cJSON_Delete(r.body);
    r = call(st, TG_HTTP_POST, rot, NULL); /* default grace: an hour */
    assert_true(num_of(cJSON_GetObjectItem(r.body, "key"), "rotated_until_ms") ==
                (double)(NOW + 3600000));
    cJSON_Delete(r.body);

    /* Revocation, once; a revoked key cannot rotate. */
    char rev[160];
    snprintf(rev, sizeof(rev), "/admin/keys/%s/revoke", id);
    r = call(st, TG_HTTP_POST, rev, NULL);
    assert_string_equal(str_of(r.body, "state"), "revoked");
    assert_true(num_of(r.body, "revoked_ms") == (double)NOW);
    cJSON_Delete(r.body);
    expect_error(st, TG_HTTP_POST, rev, NULL, 409, "key_revoked", "Key");
    expect_error(st, TG_HTTP_POST, rot, NULL, 409, "key_revoked", "Key");
    expect_error(st, TG_HTTP_POST, "/admin/keys/key_nope/rotate", NULL, 404, "not_found",
                 "No key 'key_nope'");
    expect_error(st, TG_HTTP_POST, "/admin/keys/key_nope/revoke", NULL, 404, "not_found",
                 "No key 'key_nope'");
    expect_error(st, TG_HTTP_PATCH, "/admin/keys/key_nope", "{}", 404, "not_found", "No key");
    expect_error(st, TG_HTTP_GET, "/admin/keys/key_nope", NULL, 404, "not_found", "No key");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_migrates_from_v3, setup, teardown),
        cmocka_unit_test_setup_teardown(test_units, setup, teardown),
        cmocka_unit_test_setup_teardown(test_teams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policies, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_update, setup, teardown),
        cmocka_unit_test_setup_teardown(test_key_rotate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_totals, setup, teardown),
        cmocka_unit_test(test_manage_routes),
        cmocka_unit_test_setup_teardown(test_manage_units, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manage_teams, setup, teardown),
        cmocka_unit_test_setup_teardown(test_manage_keys, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* sqlite.c - the embedded store backend: keys, governance (units, teams,
 * policies) and the usage ledger in one SQLite file.
 *
 * Why it is built this way:
 * - WAL with synchronous=NORMAL: a commit is in the WAL (the OS page cache)
 *   when COMMIT returns, so it survives the process being killed; only an
 *   OS crash or power cut can lose the last commits. synchronous=FULL (fsync per commit)
 *   is an option for those who need that too.
 * - Migrations are an append-only array of SQL scripts; the database records
 *   in schema_version which ones it has, and each runs in its own
 *   transaction, so a crash mid-migration leaves a consistent version.
 * - Rows map to structs through the field tables of store.c, used both to
 *   bind an INSERT and to read a SELECT, so the two cannot drift apart; the
 *   CREATE TABLE in the migration names the same columns.
 * - Statements are prepared once per connection and kept (cached by id).
 *
 * A connection is used by one thread at a time (SQLITE_OPEN_NOMUTEX): the CLI
 * and start-up use theirs, the writer thread owns its own. */
#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/stat.h>

#include "core/core.h"
#include "store/backend.h"

/* ---- schema ---------------------------------------------------------------- */

/* Bootstrap: exists before any migration so the version can be read. */
static const char schema_version_sql[] = "CREATE TABLE IF NOT EXISTS schema_version ("
                                         " version INTEGER PRIMARY KEY,"
                                         " applied_ms INTEGER NOT NULL)";

/* Append only: never edit a migration that has shipped, add the next one.
 * Migration i (0-based) brings the schema to version i + 1. */
static const char *const migrations[] = {
    /* 1: keys and the usage ledger. */
    "CREATE TABLE keys ("
    " id TEXT PRIMARY KEY,"
    " unit TEXT NOT NULL DEFAULT '',"
    " team TEXT NOT NULL,"
    " name TEXT NOT NULL DEFAULT '',"
    " prefix TEXT NOT NULL,"
    " hash BLOB NOT NULL UNIQUE,"
    " created_ms INTEGER NOT NULL,"
    " expires_ms INTEGER NOT NULL DEFAULT 0,"
    " revoked_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX keys_prefix ON keys(prefix);"
    "CREATE TABLE usage_events ("
    " id TEXT PRIMARY KEY,"
    " request_id TEXT NOT NULL,"
    " started_ms INTEGER NOT NULL,"
    " ended_ms INTEGER NOT NULL,"
    " unit TEXT NOT NULL,"
    " team TEXT NOT NULL,"
    " key_id TEXT NOT NULL,"
    " model TEXT NOT NULL,"
    " upstream_model TEXT NOT NULL,"
    " provider TEXT NOT NULL,"
    " region TEXT NOT NULL,"
    " api TEXT NOT NULL,"
    " streamed INTEGER NOT NULL,"
    " status INTEGER NOT NULL,"
    " outcome TEXT NOT NULL,"
    " input_tokens INTEGER NOT NULL,"
    " output_tokens INTEGER NOT NULL,"
    " cache_read_tokens INTEGER NOT NULL,"
    " cache_write_tokens INTEGER NOT NULL,"
    " images INTEGER NOT NULL,"
    " token_source INTEGER NOT NULL,"
    " cost_input INTEGER NOT NULL,"
    " cost_output INTEGER NOT NULL,"
    " cost_cache_read INTEGER NOT NULL,"
    " cost_cache_write INTEGER NOT NULL,"
    " cost_images INTEGER NOT NULL,"
    " cost_total INTEGER NOT NULL,"
    " price_version TEXT NOT NULL,"
    " latency_us INTEGER NOT NULL,"
    " ttfb_us INTEGER NOT NULL);"
    "CREATE INDEX usage_events_started ON usage_events(started_ms);"
    "CREATE INDEX usage_events_team_started ON usage_events(team, started_ms);",
    /* 2: calls whose model (or a part of whose usage) had no price. */
    "ALTER TABLE usage_events ADD COLUMN unpriced INTEGER NOT NULL DEFAULT 0;",
    /* 3: hourly rollups, the refresh's place in the ledger, and which days'
     * reports are current. */
    "CREATE TABLE usage_hourly ("
    " hour_ms INTEGER NOT NULL,"
    " unit TEXT NOT NULL,"
    " team TEXT NOT NULL,"
    " key_id TEXT NOT NULL,"
    " model TEXT NOT NULL,"
    " region TEXT NOT NULL,"
    " invocations INTEGER NOT NULL,"
    " input_tokens INTEGER NOT NULL,"
    " output_tokens INTEGER NOT NULL,"
    " cache_read_tokens INTEGER NOT NULL,"
    " cache_write_tokens INTEGER NOT NULL,"
    " images INTEGER NOT NULL,"
    " cost_input INTEGER NOT NULL,"
    " cost_output INTEGER NOT NULL,"
    " cost_cache_read INTEGER NOT NULL,"
    " cost_cache_write INTEGER NOT NULL,"
    " cost_images INTEGER NOT NULL,"
    " cost_total INTEGER NOT NULL,"
    " unpriced INTEGER NOT NULL,"
    " estimated INTEGER NOT NULL,"
    " failed INTEGER NOT NULL,"
    " PRIMARY KEY (hour_ms, unit, team, key_id, model, region)) WITHOUT ROWID;"
    "CREATE TABLE rollup_days ("
    " day_ms INTEGER PRIMARY KEY,"
    " version INTEGER NOT NULL,"
    " reported INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE store_state (name TEXT PRIMARY KEY, value INTEGER NOT NULL);"
    /* The admin API's credentials: the keys table's columns, kept apart so a
     * tenant key can never be one. */
    "CREATE TABLE admin_keys ("
    " id TEXT PRIMARY KEY,"
    " unit TEXT NOT NULL DEFAULT '',"
    " team TEXT NOT NULL DEFAULT '',"
    " name TEXT NOT NULL DEFAULT '',"
    " prefix TEXT NOT NULL,"
    " hash BLOB NOT NULL UNIQUE,"
    " created_ms INTEGER NOT NULL,"
    " expires_ms INTEGER NOT NULL DEFAULT 0,"
    " revoked_ms INTEGER NOT NULL DEFAULT 0);",
    /* 4: governance: units, teams, their policies (and keys'), and key
     * rotation: the secret replaced last, accepted until prev_expires_ms.
     * prev_hash has no UNIQUE constraint: the live hashes stay unique, and
     * rotation checks a new hash against both columns itself. */
    "CREATE TABLE units ("
    " id TEXT PRIMARY KEY,"
    " name TEXT NOT NULL DEFAULT '',"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " disabled_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE teams ("
    " id TEXT PRIMARY KEY,"
    " unit TEXT NOT NULL DEFAULT '',"
    " name TEXT NOT NULL DEFAULT '',"
    " cost_center TEXT NOT NULL DEFAULT '',"
    " created_ms INTEGER NOT NULL,"
    " updated_ms INTEGER NOT NULL,"
    " disabled_ms INTEGER NOT NULL DEFAULT 0);"
    "CREATE INDEX teams_unit ON teams(unit);"
    "CREATE TABLE policies ("
    " entity TEXT PRIMARY KEY,"
    " json TEXT NOT NULL,"
    " updated_ms INTEGER NOT NULL);"
    "ALTER TABLE keys ADD COLUMN prev_hash BLOB NOT NULL DEFAULT x'';"
    "ALTER TABLE keys ADD COLUMN prev_expires_ms INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE admin_keys ADD COLUMN prev_hash BLOB NOT NULL DEFAULT x'';"
    "ALTER TABLE admin_keys ADD COLUMN prev_expires_ms INTEGER NOT NULL DEFAULT 0;",
    /* 5: calls admitted past a soft budget (allowed and flagged). */
    "ALTER TABLE usage_events ADD COLUMN over_budget INTEGER NOT NULL DEFAULT 0;",
    /* 6: generated images' size, steps and quality (they pick the price). */
    "ALTER TABLE usage_events ADD COLUMN image_width INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE usage_events ADD COLUMN image_height INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE usage_events ADD COLUMN image_steps INTEGER NOT NULL DEFAULT 0;"
    "ALTER TABLE usage_events ADD COLUMN image_quality TEXT NOT NULL DEFAULT '';",
    /* 7: the salts of derived secrets (for SigV4 verification). */
    "ALTER TABLE keys ADD COLUMN salt BLOB NOT NULL DEFAULT x'';"
    "ALTER TABLE keys ADD COLUMN prev_salt BLOB NOT NULL DEFAULT x'';"
    "ALTER TABLE admin_keys ADD COLUMN salt BLOB NOT NULL DEFAULT x'';"
    "ALTER TABLE admin_keys ADD COLUMN prev_salt BLOB NOT NULL DEFAULT x'';",
    /* 8: no query needs the (team, time) index: per-team figures come from
     * usage_hourly, and the totals per team since a time (budgets at start)
     * read the time index. It cost every append a B-tree insert and a WAL
     * page per commit. */
    "DROP INDEX IF EXISTS usage_events_team_started;",
};
#define SCHEMA_VERSION ((int)(sizeof(migrations) / sizeof(migrations[0])))

/* ---- row <-> struct mapping ------------------------------------------------ */

typedef tg_store_field_t field_t;

/* Binds fields to parameters first..first+n-1 of st. Text is bounded by
 * its array (strnlen) so an unterminated field cannot be over-read. */
static int bind_row(sqlite3_stmt *st, int first, const field_t *f, size_t n, const void *row)
{
    const char *base = row;
    int rc = SQLITE_OK;
    for (size_t i = 0; i < n && rc == SQLITE_OK; i++) {
        const char *p = base + f[i].off;
        int idx = first + (int)i;
        switch (f[i].kind) {
        case TG_FIELD_TEXT:
            rc = sqlite3_bind_text(st, idx, p, (int)strnlen(p, f[i].size), SQLITE_STATIC);
            break;
        case TG_FIELD_BLOB:
            rc = sqlite3_bind_blob(st, idx, p, (int)f[i].size, SQLITE_STATIC);
            break;
        case TG_FIELD_I64:
            rc = sqlite3_bind_int64(st, idx, *(const int64_t *)(const void *)p);
            break;
        case TG_FIELD_INT:
            rc = sqlite3_bind_int(st, idx, *(const int *)(const void *)p);
            break;
        }
    }
    return rc;
}

/* Reads the current result row into row (already zeroed). Oversized text or
 * blobs written by another tool are truncated to the field, never overflow. */
static void read_row(sqlite3_stmt *st, const field_t *f, size_t n, void *row)
{
    char *base = row;
    for (size_t i = 0; i < n; i++) {
        char *p = base + f[i].off;
        int col = (int)i;
        switch (f[i].kind) {
        case TG_FIELD_TEXT: {
            const unsigned char *t = sqlite3_column_text(st, col);
            size_t len = (size_t)sqlite3_column_bytes(st, col);
            if (len > f[i].size - 1) len = f[i].size - 1;
            if (t) memcpy(p, t, len);
            p[len] = '\0';
            break;
        }
        case TG_FIELD_BLOB: {
            const void *b = sqlite3_column_blob(st, col);
            size_t len = (size_t)sqlite3_column_bytes(st, col);
            if (len > f[i].size) len = f[i].size;
            if (b) memcpy(p, b, len);
            break;
        }
        case TG_FIELD_I64:
            *(int64_t *)(void *)p = sqlite3_column_int64(st, col);
            break;
        case TG_FIELD_INT:
            *(int *)(void *)p = sqlite3_column_int(st, col);
            break;
        }
    }
}

/* ---- connection and statement cache ---------------------------------------- */

/* The ledger is appended with multi-row INSERTs of 1, 2, 4, ... up to
 * 1 << USAGE_ROWS_LOG2 rows: one statement's cursors, checks and halt for
 * many rows, which is most of a row's cost when the rows are alike. 16 x 42
 * parameters is far under SQLite's limit of 32766. */
enum { USAGE_ROWS_LOG2 = 4 };

enum {
    S_BEGIN,
    S_COMMIT,
    S_ROLLBACK,
    S_VERSION,
    S_VERSION_ADD,
    S_PING,
    S_DATA_VERSION,
    S_KEY_INSERT,
    S_KEY_LIST,
    S_KEY_MATCH,
    S_KEY_REVOKE,
    S_ADMIN_INSERT,
    S_ADMIN_CHECK,
    S_ADMIN_COUNT,
    S_USAGE_INSERT, /* then S_USAGE_INSERT + k inserts 1 << k rows, */
    S_USAGE_INSERT_LAST = S_USAGE_INSERT + USAGE_ROWS_LOG2, /* up to k = USAGE_ROWS_LOG2 */
    S_USAGE_LIST,
    S_USAGE_COUNT,
    S_ROLLUP_MARK,
    S_ROLLUP_SET_MARK,
    S_LEDGER_END,
    S_DELTA_CLEAR,
    S_DELTA_SUM,
    S_DELTA_HOURS,
    S_DELTA_APPLY,
    S_DELTA_DAYS,
    S_RANGE_HOURS,
    S_HOUR_DELETE,
    S_HOUR_SUM,
    S_DAY_BUMP,
    S_DAYS_PENDING,
    S_DAY_VERSION,
    S_DAY_DONE,
    S_KEY_UPDATE,
    S_HASH_TAKEN,
    S_KEY_ROTATE,
    S_UNIT_INSERT,
    S_UNIT_UPDATE,
    S_UNIT_LIST,
    S_TEAM_INSERT,
    S_TEAM_UPDATE,
    S_TEAM_LIST,
    S_POLICY_SET,
    S_POLICY_DELETE,
    S_POLICY_LIST,
    S_TOTALS_KEY,
    S_TOTALS_TEAM,
    S_TOTALS_UNIT,
    S__COUNT
};
_Static_assert(S_USAGE_INSERT_LAST == S_USAGE_INSERT + 4, "generated_sql has a case per size");

typedef struct {
    tg_store_t base; /* first: the public handle is this struct */
    sqlite3 *db;
    sqlite3_stmt *stmts[S__COUNT]; /* prepared on first use, finalized at close */
} tg_sqlite_t;

/* The ledger summed per key, team or unit since ?1. Events without the
 * dimension ("" key, team or unit) have no row. */
#define TOTALS(col)                                                                                \
    "SELECT " col ", COUNT(*), SUM(input_tokens + output_tokens + cache_read_tokens"               \
    " + cache_write_tokens), SUM(cost_total) FROM usage_events"                                    \
    " WHERE started_ms >= ?1 AND " col " != '' GROUP BY 1 ORDER BY 1"

/* usage_hourly's measures, summed over the events of a group. */
#define ROLLUP_SUMS                                                                                \
    "COUNT(*), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),"                     \
    " SUM(cache_write_tokens), SUM(images), SUM(cost_input), SUM(cost_output),"                    \
    " SUM(cost_cache_read), SUM(cost_cache_write), SUM(cost_images), SUM(cost_total),"             \
    " SUM(unpriced != 0), SUM(token_source != 0), SUM(outcome != 'ok')"

/* Fixed statements; NULL entries are generated from the field tables. */
static const char *const stmt_sql[S__COUNT] = {
    [S_BEGIN] = "BEGIN IMMEDIATE", /* take the write lock up front: no deadlock on upgrade */
    [S_COMMIT] = "COMMIT",
    [S_ROLLBACK] = "ROLLBACK",
    [S_VERSION] = "SELECT COALESCE(MAX(version), 0) FROM schema_version",
    [S_VERSION_ADD] = "INSERT INTO schema_version (version, applied_ms) VALUES (?1, ?2)",
    [S_PING] = "SELECT 1",
    [S_DATA_VERSION] = "PRAGMA data_version",
    [S_KEY_MATCH] = "SELECT id FROM keys WHERE (id = ?1 OR prefix = ?1) AND revoked_ms = 0 LIMIT 2",
    [S_KEY_REVOKE] = "UPDATE keys SET revoked_ms = ?2 WHERE id = ?1 AND revoked_ms = 0",
    [S_USAGE_COUNT] = "SELECT COUNT(*) FROM usage_events",
    [S_ADMIN_CHECK] = "SELECT COUNT(*) FROM admin_keys WHERE hash = ?1 AND revoked_ms = 0"
                      " AND (expires_ms = 0 OR expires_ms > ?2)",
    [S_ADMIN_COUNT] = "SELECT COUNT(*) FROM admin_keys WHERE revoked_ms = 0"
                      " AND (expires_ms = 0 OR expires_ms > ?1)",
    [S_ROLLUP_MARK] =
        "SELECT COALESCE((SELECT value FROM store_state WHERE name = 'rollup_mark'), 0)",
    [S_ROLLUP_SET_MARK] = "INSERT INTO store_state (name, value) VALUES ('rollup_mark', ?1)"
                          " ON CONFLICT (name) DO UPDATE SET value = MAX(value, excluded.value)",
    [S_LEDGER_END] = "SELECT COALESCE(MAX(rowid), 0) FROM usage_events",
    /* The ledger's insertion order is its rowid: SQLite has one writer at a
     * time, so a reader that sees row r sees every row before it. */
    /* The rollups' increments (see sq_rollup_refresh): the events of a
     * rowid range summed per hour and dimensions into a temporary table, then
     * added to usage_hourly. rollup_delta is created by rollup_begin. */
    [S_DELTA_CLEAR] = "DELETE FROM temp.rollup_delta",
    [S_DELTA_SUM] = "INSERT INTO temp.rollup_delta SELECT started_ms - started_ms % 3600000,"
                    " unit, team, key_id, model, region, " ROLLUP_SUMS " FROM usage_events"
                    " WHERE rowid > ?1 AND rowid <= ?2 GROUP BY 1, 2, 3, 4, 5, 6",
    [S_DELTA_HOURS] = "SELECT DISTINCT hour_ms FROM temp.rollup_delta ORDER BY 1",
    /* The stored sums of the groups the increment touches, plus the
     * increment, summed again: SUM fails on a 64-bit overflow, where + would
     * quietly make the total a float. */
    [S_DELTA_APPLY] =
        "INSERT OR REPLACE INTO usage_hourly SELECT hour_ms, unit, team, key_id, model, region,"
        " SUM(invocations), SUM(input_tokens), SUM(output_tokens), SUM(cache_read_tokens),"
        " SUM(cache_write_tokens), SUM(images), SUM(cost_input), SUM(cost_output),"
        " SUM(cost_cache_read), SUM(cost_cache_write), SUM(cost_images), SUM(cost_total),"
        " SUM(unpriced), SUM(estimated), SUM(failed)"
        " FROM (SELECT h.* FROM main.usage_hourly h JOIN temp.rollup_delta"
        " USING (hour_ms, unit, team, key_id, model, region)"
        " UNION ALL SELECT * FROM temp.rollup_delta)"
        " GROUP BY hour_ms, unit, team, key_id, model, region",
    [S_DELTA_DAYS] =
        "INSERT INTO rollup_days (day_ms, version)"
        " SELECT DISTINCT hour_ms - hour_ms % 86400000, 1 FROM temp.rollup_delta WHERE true"
        " ON CONFLICT (day_ms) DO UPDATE SET version = version + 1",
    [S_RANGE_HOURS] =
        "SELECT started_ms - started_ms % 3600000 FROM usage_events"
        " WHERE started_ms >= ?1 AND started_ms < ?2"
        " UNION SELECT hour_ms FROM usage_hourly WHERE hour_ms >= ?1 AND hour_ms < ?2",
    [S_HOUR_DELETE] = "DELETE FROM usage_hourly WHERE hour_ms = ?1",
    [S_HOUR_SUM] = "INSERT INTO usage_hourly SELECT ?1, unit, team, key_id, model, region,"
                   " " ROLLUP_SUMS " FROM usage_events"
                   " WHERE started_ms >= ?1 AND started_ms < ?1 + 3600000"
                   " GROUP BY unit, team, key_id, model, region",
    [S_DAY_BUMP] = "INSERT INTO rollup_days (day_ms, version) VALUES (?1 - ?1 % 86400000, 1)"
                   " ON CONFLICT (day_ms) DO UPDATE SET version = version + 1",
    [S_DAYS_PENDING] = "SELECT day_ms, version FROM rollup_days"
                       " WHERE version > reported AND day_ms < ?1 ORDER BY day_ms",
    [S_DAY_VERSION] = "SELECT COALESCE((SELECT version FROM rollup_days WHERE day_ms = ?1), 0)",
    [S_DAY_DONE] = "UPDATE rollup_days SET reported = MAX(reported, ?2) WHERE day_ms = ?1",
    [S_KEY_UPDATE] = "UPDATE keys SET name = ?2, expires_ms = ?3 WHERE id = ?1",
    [S_HASH_TAKEN] = "SELECT COUNT(*) FROM keys WHERE hash = ?1 OR prev_hash = ?1",
    [S_KEY_ROTATE] = "UPDATE keys SET prev_hash = hash, prev_salt = salt, prev_expires_ms = ?4,"
                     " hash = ?2, prefix = ?3, salt = ?5 WHERE id = ?1 AND revoked_ms = 0",
    [S_POLICY_SET] = "INSERT INTO policies (entity, json, updated_ms) VALUES (?1, ?2, ?3)"
                     " ON CONFLICT (entity) DO UPDATE SET json = excluded.json,"
                     " updated_ms = excluded.updated_ms",
    [S_POLICY_DELETE] = "DELETE FROM policies WHERE entity = ?1",
    [S_POLICY_LIST] = "SELECT entity, json, updated_ms FROM policies ORDER BY entity",
    [S_TOTALS_KEY] = TOTALS("key_id"),
    [S_TOTALS_TEAM] = TOTALS("team"),
    [S_TOTALS_UNIT] = TOTALS("unit"),
};

static void append_cols(tg_buf_t *b, const field_t *f, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tg_buf_printf(b, "%s%s", i ? ", " : "", f[i].name);
}

/* One more row of n parameters for a multi-row INSERT: ", (?, ?, ...)". */
static void append_row(tg_buf_t *b, size_t n)
{
    tg_buf_appends(b, ", (");
    for (size_t i = 0; i < n; i++)
        tg_buf_appends(b, i ? ", ?" : "?");
    tg_buf_appends(b, ")");
}

static void append_insert(tg_buf_t *b, const char *verb, const char *table, const field_t *f,
                          size_t n)
{
    tg_buf_printf(b, "%s INTO %s (", verb, table);
    append_cols(b, f, n);
    tg_buf_appends(b, ") VALUES (");
    for (size_t i = 0; i < n; i++)
        tg_buf_appends(b, i ? ", ?" : "?");
    tg_buf_appends(b, ")");
}

/* UPDATE table SET <f[1..n-2]> WHERE <f[0]>: the first field is the key, the
 * last (created_ms) is never updated; parameters in field order. */
static void append_update(tg_buf_t *b, const char *table, const field_t *f, size_t n)
{
    tg_buf_printf(b, "UPDATE %s SET ", table);
    for (size_t i = 1; i + 1 < n; i++)
        tg_buf_printf(b, "%s%s = ?%zu", i > 1 ? ", " : "", f[i].name, i + 1);
    tg_buf_printf(b, " WHERE %s = ?1", f[0].name);
}

static void append_select(tg_buf_t *b, const char *table, const field_t *f, size_t n,
                          const char *order)
{
    tg_buf_appends(b, "SELECT ");
    append_cols(b, f, n);
    tg_buf_printf(b, " FROM %s ORDER BY %s", table, order);
}

/* Writes the SQL of a generated statement into b. */
static void generated_sql(int id, tg_buf_t *b)
{
    switch (id) {
    case S_KEY_INSERT:
        append_insert(b, "INSERT", "keys", tg_store_key_fields, tg_store_key_nfields);
        break;
    case S_ADMIN_INSERT:
        append_insert(b, "INSERT", "admin_keys", tg_store_key_fields, tg_store_key_nfields);
        break;
    case S_KEY_LIST:
        append_select(b, "keys", tg_store_key_fields, tg_store_key_nfields, "created_ms, id");
        break;
    case S_UNIT_INSERT:
        append_insert(b, "INSERT", "units", tg_store_unit_fields, tg_store_unit_nfields);
        break;
    case S_UNIT_UPDATE:
        append_update(b, "units", tg_store_unit_fields, tg_store_unit_nfields);
        break;
    case S_UNIT_LIST:
        append_select(b, "units", tg_store_unit_fields, tg_store_unit_nfields, "id");
        break;
    case S_TEAM_INSERT:
        append_insert(b, "INSERT", "teams", tg_store_team_fields, tg_store_team_nfields);
        break;
    case S_TEAM_UPDATE:
        append_update(b, "teams", tg_store_team_fields, tg_store_team_nfields);
        break;
    case S_TEAM_LIST:
        append_select(b, "teams", tg_store_team_fields, tg_store_team_nfields, "id");
        break;
    case S_USAGE_INSERT + 0:
    case S_USAGE_INSERT + 1:
    case S_USAGE_INSERT + 2:
    case S_USAGE_INSERT + 3:
    case S_USAGE_INSERT + 4: /* one case per size: see the assertion below the enum */
        /* OR IGNORE: re-appending an event (a retried batch) is a no-op. */
        append_insert(b, "INSERT OR IGNORE", "usage_events", tg_store_usage_fields,
                      tg_store_usage_nfields);
        for (int r = 1; r < 1 << (id - S_USAGE_INSERT); r++)
            append_row(b, tg_store_usage_nfields);
        break;
    case S_USAGE_LIST:
        tg_buf_appends(b, "SELECT ");
        append_cols(b, tg_store_usage_fields, tg_store_usage_nfields);
        tg_buf_appends(b, " FROM usage_events WHERE started_ms >= ?1 AND started_ms < ?2"
                          " ORDER BY started_ms, id");
        break;
    }
}

/* Maps a SQLite result code to a TG_E* code, logging what failed (a
 * constraint is an expected answer, not a fault, so it is not logged). */
static int sq_fail(tg_sqlite_t *s, int rc, const char *what)
{
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT:
        return TG_EEXIST;
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        tg_warn("store: %s: %s", what, sqlite3_errmsg(s->db));
        return TG_EBUSY;
    case SQLITE_NOMEM:
        return TG_ENOMEM;
    case SQLITE_FULL:
    case SQLITE_IOERR:
    case SQLITE_CANTOPEN:
    case SQLITE_READONLY:
        tg_error("store: %s: %s", what, sqlite3_errmsg(s->db));
        return TG_EIO;
    default:
        tg_error("store: %s: %s", what, sqlite3_errmsg(s->db));
        return TG_ESTORE;
    }
}

/* The cached statement id, prepared on first use; NULL on failure (*err set). */
static sqlite3_stmt *stmt_get(tg_sqlite_t *s, int id, int *err)
{
    if (s->stmts[id]) return s->stmts[id];
    tg_buf_t b;
    tg_buf_init(&b, 0);
    const char *sql = stmt_sql[id];
    if (!sql) {
        generated_sql(id, &b);
        if (!b.data) {
            *err = TG_ENOMEM;
            return NULL;
        }
        sql = b.data;
    }
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->stmts[id], NULL);
    tg_buf_free(&b);
    if (rc != SQLITE_OK) {
        *err = sq_fail(s, rc, "prepare");
        s->stmts[id] = NULL;
        return NULL;
    }
    return s->stmts[id];
}

/* Every use of a cached statement ends here: an un-reset SELECT would keep
 * a read transaction open and pin the WAL. */
static void stmt_done(sqlite3_stmt *st)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
}

/* Runs a statement that returns no rows (or whose rows are ignored). */
static int run(tg_sqlite_t *s, int id, const char *what)
{
    int err = 0;
    sqlite3_stmt *st = stmt_get(s, id, &err);
    if (!st) return err;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        continue;
    stmt_done(st);
    return rc == SQLITE_DONE ? 0 : sq_fail(s, rc, what);
}

/* Runs a one-row, one-integer query. */
static int query_i64(tg_sqlite_t *s, int id, int64_t *out, const char *what)
{
    int err = 0;
    sqlite3_stmt *st = stmt_get(s, id, &err);
    if (!st) return err;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) *out = sqlite3_column_int64(st, 0);
    stmt_done(st);
    return rc == SQLITE_ROW ? 0 : sq_fail(s, rc, what);
}

static int tx_begin(tg_sqlite_t *s)
{
    return run(s, S_BEGIN, "begin");
}

static int tx_commit(tg_sqlite_t *s)
{
    int err = run(s, S_COMMIT, "commit");
    /* A failed COMMIT may leave the transaction open; never leave it so. */
    if (err && !sqlite3_get_autocommit(s->db)) run(s, S_ROLLBACK, "rollback");
    return err;
}

static void tx_rollback(tg_sqlite_t *s)
{
    if (!sqlite3_get_autocommit(s->db)) run(s, S_ROLLBACK, "rollback");
}

/* ---- open, migrate, close ----------------------------------------------------- */

/* mkdir -p of the directory holding path. */
static int make_parent_dirs(const char *path)
{
    if (strcmp(path, ":memory:") == 0 || strncmp(path, "file:", 5) == 0) return 0;
    const char *slash = strrchr(path, '/');
    if (!slash || slash == path) return 0;
    char *dir = strndup(path, (size_t)(slash - path));
    if (!dir) return TG_ENOMEM;
    int err = tg_mkdirs(dir, 0750);
    if (err) tg_error("store: cannot create directory %s: %s", dir, strerror(errno));
    free(dir);
    return err;
}

static int exec_sql(tg_sqlite_t *s, const char *sql, const char *what)
{
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : sq_fail(s, rc, what);
}

static int sq_schema_version(tg_store_t *st)
{
    int64_t v = 0;
    int err = query_i64((tg_sqlite_t *)st, S_VERSION, &v, "schema version");
    return err ? err : (int)v;
}

/* Applies the missing migrations, one transaction each. The version is
 * re-read inside the write lock because another process may be migrating
 * the same file at the same moment. */
static int migrate(tg_sqlite_t *s)
{
    int err = exec_sql(s, schema_version_sql, "create schema_version");
    if (err) return err;
    int cur = sq_schema_version(&s->base);
    if (cur < 0) return cur;
    if (cur > SCHEMA_VERSION) {
        tg_error("store: database schema version %d is newer than this build's %d", cur,
                 SCHEMA_VERSION);
        return TG_ESTORE;
    }
    for (int v = cur + 1; v <= SCHEMA_VERSION; v++) {
        if ((err = tx_begin(s))) return err;
        int now = sq_schema_version(&s->base);
        if (now < 0)
            err = now;
        else if (now < v) {
            err = exec_sql(s, migrations[v - 1], "migrate");
            sqlite3_stmt *st = err ? NULL : stmt_get(s, S_VERSION_ADD, &err);
            if (st) {
                sqlite3_bind_int(st, 1, v);
                sqlite3_bind_int64(st, 2, tg_wall_ms());
                int rc = sqlite3_step(st);
                stmt_done(st);
                if (rc != SQLITE_DONE) err = sq_fail(s, rc, "record schema version");
            }
        }
        if (err) {
            tx_rollback(s);
            return err;
        }
        if ((err = tx_commit(s))) return err;
        tg_debug("store: schema at version %d", v);
    }
    return 0;
}

/* journal_mode answers with the mode now in force, which may not be WAL
 * (for example on a file system without shared memory). */
static int set_wal(tg_sqlite_t *s, const char *path)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode=WAL", -1, &st, NULL);
    if (rc != SQLITE_OK) return sq_fail(s, rc, "journal_mode");
    rc = sqlite3_step(st);
    const char *mode = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
    int err = 0;
    if (rc != SQLITE_ROW)
        err = sq_fail(s, rc, "journal_mode");
    else if (!mode || (strcmp(mode, "wal") != 0 && strcmp(mode, "memory") != 0)) {
        tg_error("store: %s: cannot use WAL (journal_mode is %s)", path, mode ? mode : "?");
        err = TG_ESTORE;
    }
    sqlite3_finalize(st);
    return err;
}

static void sq_close(tg_store_t *st)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    if (!s) return;
    for (int i = 0; i < S__COUNT; i++)
        sqlite3_finalize(s->stmts[i]);
    if (s->db) {
        /* Cheap on close; keeps the query planner's statistics current. */
        sqlite3_exec(s->db, "PRAGMA optimize", NULL, NULL, NULL);
        sqlite3_close_v2(s->db);
    }
    free(s);
}

/* Before SQLite's first use: no memory statistics (nothing reads them), so
 * its every allocation skips a process-wide mutex. */
static void sqlite_once(void)
{
    sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0); /* refused if already initialized: harmless */
}

static int sq_open(tg_store_t **out, const tg_store_config_t *cfg)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, sqlite_once);
    int err = make_parent_dirs(cfg->path);
    if (err) return err;
    tg_sqlite_t *s = calloc(1, sizeof(*s));
    if (!s) return TG_ENOMEM;
    s->base.be = &tg_store_sqlite_backend;
    int rc = sqlite3_open_v2(
        cfg->path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        tg_error("store: cannot open %s: %s", cfg->path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        sq_close(&s->base);
        return rc == SQLITE_NOMEM ? TG_ENOMEM : TG_EIO;
    }
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_timeout(s->db, cfg->busy_timeout_ms ? (int)cfg->busy_timeout_ms : 5000);
    err = set_wal(s, cfg->path);
    /* wal_autocheckpoint: a commit that finds the log this long (pages)
     * copies it back itself, with two fsyncs, before its COMMIT returns and
     * so before any response waiting on it goes out. At SQLite's default
     * (1000 pages, 4 MB) the ledger writer did that several times a second
     * at a thousand calls a second, ahead of the checkpointer thread; at 8192
     * (32 MB, under journal_size_limit) the checkpointer does the copying and
     * the writer's own pass only bounds the log and restarts it (it then
     * finds the frames already copied). */
    if (!err)
        err = exec_sql(s,
                       cfg->synchronous_full ? "PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON; "
                                               "PRAGMA journal_size_limit=67108864; "
                                               "PRAGMA wal_autocheckpoint=8192"
                                             : "PRAGMA synchronous=NORMAL; PRAGMA foreign_keys=ON; "
                                               "PRAGMA journal_size_limit=67108864; "
                                               "PRAGMA wal_autocheckpoint=8192",
                       "pragmas");
    if (!err) err = migrate(s);
    if (err) {
        sq_close(&s->base);
        return err;
    }
    *out = &s->base;
    return 0;
}

static int sq_ping(tg_store_t *st)
{
    int64_t one = 0;
    return query_i64((tg_sqlite_t *)st, S_PING, &one, "ping");
}

static int sq_data_version(tg_store_t *st, int64_t *out)
{
    return query_i64((tg_sqlite_t *)st, S_DATA_VERSION, out, "data_version");
}

/* ---- keys ------------------------------------------------------------------ */

static int insert_key(tg_store_t *st, int id, const tg_key_t *k)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    sqlite3_stmt *ins = stmt_get(s, id, &err);
    if (!ins) return err;
    int rc = bind_row(ins, 1, tg_store_key_fields, tg_store_key_nfields, k);
    if (rc == SQLITE_OK) rc = sqlite3_step(ins);
    stmt_done(ins);
    return rc == SQLITE_DONE ? 0 : sq_fail(s, rc, "insert key");
}

static int sq_key_insert(tg_store_t *st, const tg_key_t *k)
{
    return insert_key(st, S_KEY_INSERT, k);
}

static int sq_admin_key_insert(tg_store_t *st, const tg_key_t *k)
{
    return insert_key(st, S_ADMIN_INSERT, k);
}

static int sq_admin_key_check(tg_store_t *st, const uint8_t hash[32])
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    sqlite3_stmt *q = stmt_get(s, S_ADMIN_CHECK, &err);
    if (!q) return err;
    sqlite3_bind_blob(q, 1, hash, 32, SQLITE_STATIC);
    sqlite3_bind_int64(q, 2, tg_wall_ms());
    int rc = sqlite3_step(q);
    int64_t n = rc == SQLITE_ROW ? sqlite3_column_int64(q, 0) : 0;
    stmt_done(q);
    if (rc != SQLITE_ROW) return sq_fail(s, rc, "admin key");
    return n > 0 ? 0 : TG_EAUTH;
}

static int sq_admin_key_count(tg_store_t *st, int64_t *active)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    sqlite3_stmt *q = stmt_get(s, S_ADMIN_COUNT, &err);
    if (!q) return err;
    sqlite3_bind_int64(q, 1, tg_wall_ms()); /* query_i64 keeps the binding */
    return query_i64(s, S_ADMIN_COUNT, active, "count admin keys");
}

/* Looks up the active keys matching, then revokes only if exactly one did,
 * all inside one write transaction so the answer cannot go stale. */
static int sq_key_revoke(tg_store_t *st, const char *id_or_prefix, int64_t now_ms)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    /* revoked_ms == 0 means active, so a revocation must carry a real time. */
    if (!id_or_prefix || !id_or_prefix[0] || now_ms <= 0) return TG_EINVAL;
    int err = tx_begin(s);
    if (err) return err;
    sqlite3_stmt *q = stmt_get(s, S_KEY_MATCH, &err);
    char id[sizeof(((tg_key_t *)0)->id)] = "";
    int matched = 0, rc = SQLITE_OK;
    if (q) {
        sqlite3_bind_text(q, 1, id_or_prefix, -1, SQLITE_STATIC);
        while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
            if (matched++ == 0) {
                const char *t = (const char *)sqlite3_column_text(q, 0);
                snprintf(id, sizeof(id), "%s", t ? t : "");
            }
        }
        stmt_done(q);
        if (rc != SQLITE_DONE) err = sq_fail(s, rc, "find key");
    }
    if (!err && matched == 0) err = TG_ENOTFOUND;
    if (!err && matched > 1) err = TG_EEXIST; /* an ambiguous prefix revokes nothing */
    sqlite3_stmt *u = err ? NULL : stmt_get(s, S_KEY_REVOKE, &err);
    if (u) {
        sqlite3_bind_text(u, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(u, 2, now_ms);
        rc = sqlite3_step(u);
        stmt_done(u);
        if (rc != SQLITE_DONE) err = sq_fail(s, rc, "revoke key");
    }
    if (err) {
        tx_rollback(s);
        return err;
    }
    return tx_commit(s);
}

/* Fills one zeroed row from the statement's current result row. */
typedef void (*row_fn)(sqlite3_stmt *st, void *row, const void *ctx);

/* Collects every row of a prepared, bound SELECT into a malloc'ed array of
 * elem-byte rows, each zeroed then filled by fn; the caller frees *out. */
static int collect_rows(tg_sqlite_t *s, sqlite3_stmt *st, row_fn fn, const void *ctx, size_t elem,
                        void **out, size_t *n, const char *what)
{
    char *arr = NULL;
    size_t len = 0, cap = 0;
    int rc, err = 0;
    *out = NULL;
    *n = 0;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (len == cap) {
            size_t ncap = cap ? cap * 2 : 64;
            char *p = realloc(arr, ncap * elem);
            if (!p) {
                err = TG_ENOMEM;
                break;
            }
            arr = p;
            cap = ncap;
        }
        char *row = arr + len * elem;
        memset(row, 0, elem);
        fn(st, row, ctx);
        len++;
    }
    if (!err && rc != SQLITE_DONE) err = sq_fail(s, rc, what);
    stmt_done(st);
    if (err) {
        free(arr);
        return err;
    }
    *out = arr;
    *n = len;
    return 0;
}

typedef struct {
    const field_t *f;
    size_t nf;
} fields_t;

static void read_fields(sqlite3_stmt *st, void *row, const void *ctx)
{
    const fields_t *fs = ctx;
    read_row(st, fs->f, fs->nf, row);
}

/* Every row of a SELECT of the columns f describes. */
static int list_rows(tg_sqlite_t *s, sqlite3_stmt *st, const field_t *f, size_t nf, size_t elem,
                     void **out, size_t *n)
{
    fields_t fs = {f, nf};
    return collect_rows(s, st, read_fields, &fs, elem, out, n, "list");
}

static void read_i64(sqlite3_stmt *st, void *row, const void *ctx)
{
    *(int64_t *)row = sqlite3_column_int64(st, 0);
}

static int sq_keys_list(tg_store_t *st, tg_key_t **out, size_t *n)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *q = stmt_get(s, S_KEY_LIST, &err);
    if (!q) return err;
    void *arr = NULL;
    err = list_rows(s, q, tg_store_key_fields, tg_store_key_nfields, sizeof(tg_key_t), &arr, n);
    *out = arr;
    return err;
}

/* ---- usage ledger ------------------------------------------------------------ */

static int sq_usage_append(tg_store_t *st, const tg_usage_event_t *ev, size_t n)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    if (n == 0) return 0;
    int err = tx_begin(s);
    if (err) return err;
    const int nf = (int)tg_store_usage_nfields;
    for (size_t i = 0; i < n && !err;) {
        /* The largest statement that the rows left fill. */
        int k = USAGE_ROWS_LOG2;
        while ((size_t)1 << k > n - i)
            k--;
        sqlite3_stmt *ins = stmt_get(s, S_USAGE_INSERT + k, &err);
        if (!ins) break;
        int rows = 1 << k, rc = SQLITE_OK;
        for (int r = 0; r < rows && rc == SQLITE_OK; r++)
            rc = bind_row(ins, 1 + r * nf, tg_store_usage_fields, tg_store_usage_nfields,
                          &ev[i + (size_t)r]);
        if (rc == SQLITE_OK) rc = sqlite3_step(ins);
        if (rc != SQLITE_DONE) err = sq_fail(s, rc, "append usage");
        /* Not cleared: every parameter is bound again before the next step
         * (the pointers left behind are never read). */
        sqlite3_reset(ins);
        i += (size_t)rows;
    }
    if (err) {
        tx_rollback(s);
        return err;
    }
    return tx_commit(s);
}

static int sq_usage_list(tg_store_t *st, int64_t from_ms, int64_t to_ms, tg_usage_event_t **out,
                         size_t *n)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *q = stmt_get(s, S_USAGE_LIST, &err);
    if (!q) return err;
    sqlite3_bind_int64(q, 1, from_ms);
    sqlite3_bind_int64(q, 2, to_ms);
    void *arr = NULL;
    err = list_rows(s, q, tg_store_usage_fields, tg_store_usage_nfields, sizeof(tg_usage_event_t),
                    &arr, n);
    *out = arr;
    return err;
}

static int sq_usage_count(tg_store_t *st, int64_t *out)
{
    return query_i64((tg_sqlite_t *)st, S_USAGE_COUNT, out, "count usage");
}

/* ---- rollups ------------------------------------------------------------------ */

/* Steps a statement whose bindings are set; rows ignored. */
static int step_done(tg_sqlite_t *s, sqlite3_stmt *st, const char *what)
{
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW)
        continue;
    stmt_done(st);
    return rc == SQLITE_DONE ? 0 : sq_fail(s, rc, what);
}

/* Replaces an hour's rollup rows with the sums of its events, and marks its
 * day changed. Inside the caller's transaction. A sum that overflows 64 bits
 * fails the statement (SQLite raises "integer overflow"), so the transaction
 * rolls back rather than store a wrong total. */
static int resum_hour(tg_sqlite_t *s, int64_t hour_ms)
{
    static const int ids[] = {S_HOUR_DELETE, S_HOUR_SUM, S_DAY_BUMP};
    static const char *const what[] = {"rollup delete", "rollup sum", "rollup day"};
    int err = 0;
    for (size_t i = 0; i < 3 && !err; i++) {
        sqlite3_stmt *st = stmt_get(s, ids[i], &err);
        if (!st) break;
        sqlite3_bind_int64(st, 1, hour_ms);
        err = step_done(s, st, what[i]);
    }
    return err;
}

static int resum_hours(tg_sqlite_t *s, const int64_t *hours, size_t n)
{
    int err = 0;
    for (size_t i = 0; i < n && !err; i++)
        err = resum_hour(s, hours[i]);
    return err;
}

enum { ROLLUP_PASS_ROWS = 50000 }; /* events summed per pass of a refresh */

/* The connection's temporary table for increments (a table of the temp
 * schema: writing it takes no lock on the database). */
static int rollup_begin(tg_sqlite_t *s)
{
    return exec_sql(s,
                    "CREATE TEMP TABLE IF NOT EXISTS rollup_delta AS"
                    " SELECT * FROM main.usage_hourly WHERE 0",
                    "rollup delta table");
}

/* Sums the events in rowids (from, to] into temp.rollup_delta, replacing
 * what it held. No lock on the database beyond reading it. */
static int delta_sum(tg_sqlite_t *s, int64_t from, int64_t to)
{
    int err = run(s, S_DELTA_CLEAR, "rollup delta clear");
    sqlite3_stmt *q = err ? NULL : stmt_get(s, S_DELTA_SUM, &err);
    if (!q) return err;
    sqlite3_bind_int64(q, 1, from);
    sqlite3_bind_int64(q, 2, to);
    return step_done(s, q, "rollup delta sum");
}

/* Inside a write transaction: adds temp.rollup_delta to the rollups, marks
 * its days changed, and moves the mark to `to`. */
static int delta_apply(tg_sqlite_t *s, int64_t to)
{
    int err = run(s, S_DELTA_APPLY, "rollup delta apply");
    if (!err) err = run(s, S_DELTA_DAYS, "rollup days");
    sqlite3_stmt *m = err ? NULL : stmt_get(s, S_ROLLUP_SET_MARK, &err);
    if (!m) return err;
    sqlite3_bind_int64(m, 1, to);
    return step_done(s, m, "rollup set mark");
}

/* Adds the hours of temp.rollup_delta not yet in *hrs (kept sorted). */
static int note_hours(tg_sqlite_t *s, int64_t **hrs, size_t *n)
{
    int err = 0;
    void *v = NULL;
    size_t k = 0;
    sqlite3_stmt *q = stmt_get(s, S_DELTA_HOURS, &err);
    if (q) err = collect_rows(s, q, read_i64, NULL, sizeof(int64_t), &v, &k, "rollup hours");
    const int64_t *got = v;
    for (size_t i = 0; !err && i < k; i++) {
        size_t j = 0;
        while (j < *n && (*hrs)[j] < got[i])
            j++;
        if (j < *n && (*hrs)[j] == got[i]) continue;
        int64_t *grown = realloc(*hrs, (*n + 1) * sizeof(int64_t));
        if (!grown) {
            err = TG_ENOMEM;
            break;
        }
        *hrs = grown;
        memmove(*hrs + j + 1, *hrs + j, (*n - j) * sizeof(int64_t));
        (*hrs)[j] = got[i];
        (*n)++;
    }
    free(v);
    return err;
}

/* Brings the rollups up to the ledger's end by adding what the events past
 * the mark add, never summing an hour again: an hour with millions of
 * events cost seconds to re-sum, and the write lock that the ledger's
 * commits wait for was held all that time.
 * Each pass sums up to ROLLUP_PASS_ROWS events past the mark into a
 * temporary table without taking the write lock (every row up to the
 * ledger's end is committed, and events never change), then takes the lock
 * only to add those few sums and move the mark. If the mark moved in
 * between (a refresh beside this one, in another process), the pass is
 * dropped and done again from the new mark: each event is added once. */
static int sq_rollup_refresh(tg_store_t *st, int *hours)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int64_t *hrs = NULL;
    size_t nh = 0;
    int err = rollup_begin(s);
    for (int passes = 0; !err; passes++) {
        int64_t mark = 0, end = 0, again = 0;
        err = query_i64(s, S_ROLLUP_MARK, &mark, "rollup mark");
        if (!err) err = query_i64(s, S_LEDGER_END, &end, "ledger end");
        if (err || end <= mark) break;
        int64_t to = end - mark > ROLLUP_PASS_ROWS ? mark + ROLLUP_PASS_ROWS : end;
        if ((err = delta_sum(s, mark, to))) break;
        if ((err = tx_begin(s))) break;
        err = query_i64(s, S_ROLLUP_MARK, &again, "rollup mark");
        if (!err && again != mark) { /* another refresh added these: start over */
            tx_rollback(s);
            continue;
        }
        if (!err) err = delta_apply(s, to);
        if (err) {
            tx_rollback(s);
            break;
        }
        if ((err = tx_commit(s))) break;
        err = note_hours(s, &hrs, &nh);
    }
    free(hrs);
    if (hours) *hours = err ? 0 : (int)nh;
    return err;
}

/* Sums the range's hours again from their events. The increments past the
 * mark are added first, in the same transaction, so that the mark covers
 * every event the new sums hold and no later refresh adds one twice. */
static int sq_rollup_rebuild(tg_store_t *st, int64_t from_ms, int64_t to_ms)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    void *arr = NULL;
    size_t n = 0;
    int err = rollup_begin(s);
    if (!err) err = tx_begin(s);
    if (err) return err;
    int64_t mark = 0, end = 0;
    err = query_i64(s, S_ROLLUP_MARK, &mark, "rollup mark");
    if (!err) err = query_i64(s, S_LEDGER_END, &end, "ledger end");
    if (!err && end > mark && !(err = delta_sum(s, mark, end))) err = delta_apply(s, end);
    sqlite3_stmt *q = err ? NULL : stmt_get(s, S_RANGE_HOURS, &err);
    if (q) {
        sqlite3_bind_int64(q, 1, from_ms - from_ms % TG_HOUR_MS);
        sqlite3_bind_int64(q, 2, to_ms);
        err = collect_rows(s, q, read_i64, NULL, sizeof(int64_t), &arr, &n, "rollup hours");
    }
    if (!err) err = resum_hours(s, arr, n);
    free(arr);
    if (err) {
        tx_rollback(s);
        return err;
    }
    return tx_commit(s);
}

static void copy_col(sqlite3_stmt *st, int col, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t len = (size_t)sqlite3_column_bytes(st, col);
    if (len > cap - 1) len = cap - 1;
    if (t) memcpy(out, t, len);
    out[len] = '\0';
}

/* A row of the grouped query below. */
static void read_rollup(sqlite3_stmt *st, void *row, const void *ctx)
{
    tg_rollup_row_t *r = row;
    r->period_ms = sqlite3_column_int64(st, 0);
    copy_col(st, 1, r->unit, sizeof(r->unit));
    copy_col(st, 2, r->team, sizeof(r->team));
    copy_col(st, 3, r->key_id, sizeof(r->key_id));
    copy_col(st, 4, r->key_prefix, sizeof(r->key_prefix));
    copy_col(st, 5, r->model, sizeof(r->model));
    copy_col(st, 6, r->region, sizeof(r->region));
    int64_t *sums[] = {&r->invocations,       &r->input_tokens,       &r->output_tokens,
                       &r->cache_read_tokens, &r->cache_write_tokens, &r->images,
                       &r->cost_input,        &r->cost_output,        &r->cost_cache_read,
                       &r->cost_cache_write,  &r->cost_images,        &r->cost_total,
                       &r->unpriced,          &r->estimated,          &r->failed};
    for (int i = 0; i < 15; i++)
        *sums[i] = sqlite3_column_int64(st, 7 + i);
}

/* The SELECT for a grouped query: columns 0..6 are the dimensions (constants
 * for those not grouped), then the sums in tg_rollup_row_t's order. */
static void query_sql(tg_buf_t *b, const tg_rollup_query_t *q)
{
    unsigned g = q->group;
    tg_buf_appends(b, "SELECT ");
    tg_buf_appends(b, g & TG_GROUP_HOUR  ? "h.hour_ms"
                      : g & TG_GROUP_DAY ? "h.hour_ms - h.hour_ms % 86400000"
                                         : "0");
    tg_buf_appends(b, g & TG_GROUP_UNIT ? ", h.unit" : ", ''");
    tg_buf_appends(b, g & TG_GROUP_TEAM ? ", h.team" : ", ''");
    tg_buf_appends(b, g & TG_GROUP_KEY ? ", h.key_id, COALESCE(k.prefix, '')" : ", '', ''");
    tg_buf_appends(b, g & TG_GROUP_MODEL ? ", h.model" : ", ''");
    tg_buf_appends(b, g & TG_GROUP_REGION ? ", h.region" : ", ''");
    tg_buf_appends(b, ", SUM(h.invocations), SUM(h.input_tokens), SUM(h.output_tokens),"
                      " SUM(h.cache_read_tokens), SUM(h.cache_write_tokens), SUM(h.images),"
                      " SUM(h.cost_input), SUM(h.cost_output), SUM(h.cost_cache_read),"
                      " SUM(h.cost_cache_write), SUM(h.cost_images), SUM(h.cost_total),"
                      " SUM(h.unpriced), SUM(h.estimated), SUM(h.failed) FROM usage_hourly h");
    if (g & TG_GROUP_KEY) tg_buf_appends(b, " LEFT JOIN keys k ON k.id = h.key_id");
    tg_buf_appends(b, " WHERE h.hour_ms >= ?1 AND h.hour_ms < ?2");
    if (q->unit && q->unit[0]) tg_buf_appends(b, " AND h.unit = ?3");
    if (q->team && q->team[0]) tg_buf_appends(b, " AND h.team = ?4");
    if (q->key_id && q->key_id[0]) tg_buf_appends(b, " AND h.key_id = ?5");
    if (q->model && q->model[0]) tg_buf_appends(b, " AND h.model = ?6");
    tg_buf_appends(b, " GROUP BY 1, 2, 3, 4, 5, 6, 7 ORDER BY 1, 2, 3, 4, 6, 7");
}

static int sq_rollup_query(tg_store_t *st, const tg_rollup_query_t *q, tg_rollup_row_t **out,
                           size_t *n)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    *out = NULL;
    *n = 0;
    tg_buf_t sql;
    tg_buf_init(&sql, 0);
    query_sql(&sql, q);
    if (!sql.data) return TG_ENOMEM;
    sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql.data, -1, &stmt, NULL);
    tg_buf_free(&sql);
    if (rc != SQLITE_OK) return sq_fail(s, rc, "rollup query");
    /* Whole hours: a range starting mid-hour takes the hour it starts in. */
    int64_t from = q->from_ms - q->from_ms % TG_HOUR_MS;
    sqlite3_bind_int64(stmt, 1, from);
    sqlite3_bind_int64(stmt, 2, q->to_ms);
    const char *filters[] = {q->unit, q->team, q->key_id, q->model};
    for (int i = 0; i < 4; i++)
        if (filters[i] && filters[i][0])
            sqlite3_bind_text(stmt, 3 + i, filters[i], -1, SQLITE_STATIC);
    void *arr = NULL;
    int err =
        collect_rows(s, stmt, read_rollup, NULL, sizeof(tg_rollup_row_t), &arr, n, "rollup query");
    sqlite3_finalize(stmt);
    *out = arr;
    return err;
}

static void read_day(sqlite3_stmt *st, void *row, const void *ctx)
{
    tg_report_day_t *d = row;
    d->day_ms = sqlite3_column_int64(st, 0);
    d->version = sqlite3_column_int64(st, 1);
}

static int sq_report_pending(tg_store_t *st, int64_t before_ms, tg_report_day_t **out, size_t *n)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    *out = NULL;
    *n = 0;
    int err = 0;
    sqlite3_stmt *q = stmt_get(s, S_DAYS_PENDING, &err);
    if (!q) return err;
    sqlite3_bind_int64(q, 1, before_ms);
    void *arr = NULL;
    err = collect_rows(s, q, read_day, NULL, sizeof(tg_report_day_t), &arr, n, "pending reports");
    *out = arr;
    return err;
}

static int sq_report_version(tg_store_t *st, int64_t day_ms, int64_t *version)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    sqlite3_stmt *q = stmt_get(s, S_DAY_VERSION, &err);
    if (!q) return err;
    sqlite3_bind_int64(q, 1, day_ms);
    int rc = sqlite3_step(q);
    if (rc == SQLITE_ROW) *version = sqlite3_column_int64(q, 0);
    stmt_done(q);
    return rc == SQLITE_ROW ? 0 : sq_fail(s, rc, "report version");
}

static int sq_report_done(tg_store_t *st, int64_t day_ms, int64_t version)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    sqlite3_stmt *u = stmt_get(s, S_DAY_DONE, &err);
    if (!u) return err;
    sqlite3_bind_int64(u, 1, day_ms);
    sqlite3_bind_int64(u, 2, version);
    return step_done(s, u, "report done");
}

/* ---- governance: units, teams, policies, key changes ---------------------------- */

/* Steps a bound UPDATE; TG_ENOTFOUND when it changed no row. */
static int update_one(tg_sqlite_t *s, sqlite3_stmt *u, const char *what)
{
    int err = step_done(s, u, what);
    if (!err && sqlite3_changes(s->db) == 0) err = TG_ENOTFOUND;
    return err;
}

static int sq_key_update(tg_store_t *st, const char *id, const char *name, int64_t expires_ms)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    sqlite3_stmt *u = stmt_get(s, S_KEY_UPDATE, &err);
    if (!u) return err;
    sqlite3_bind_text(u, 1, id, -1, SQLITE_STATIC);
    sqlite3_bind_text(u, 2, name ? name : "", -1, SQLITE_STATIC);
    sqlite3_bind_int64(u, 3, expires_ms);
    return update_one(s, u, "update key");
}

/* The new hash must not be any key's, current or previous: a presented
 * secret then names at most one key. The UPDATE's UNIQUE constraint covers
 * the current hashes again, the check the previous ones. */
static int sq_key_rotate(tg_store_t *st, const char *id, const tg_key_t *fresh,
                         int64_t prev_expires_ms)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    if (!id || !id[0] || !fresh || !fresh->prefix[0]) return TG_EINVAL;
    const uint8_t *hash = fresh->hash;
    const char *prefix = fresh->prefix;
    int err = tx_begin(s);
    if (err) return err;
    sqlite3_stmt *q = stmt_get(s, S_HASH_TAKEN, &err);
    if (q) {
        sqlite3_bind_blob(q, 1, hash, 32, SQLITE_STATIC);
        int64_t taken = 0;
        err = query_i64(s, S_HASH_TAKEN, &taken, "rotate key");
        if (!err && taken) err = TG_EEXIST;
    }
    sqlite3_stmt *u = err ? NULL : stmt_get(s, S_KEY_ROTATE, &err);
    if (u) {
        sqlite3_bind_text(u, 1, id, -1, SQLITE_STATIC);
        sqlite3_bind_blob(u, 2, hash, 32, SQLITE_STATIC);
        sqlite3_bind_text(u, 3, prefix, -1, SQLITE_STATIC);
        sqlite3_bind_int64(u, 4, prev_expires_ms);
        sqlite3_bind_blob(u, 5, fresh->salt, 16, SQLITE_STATIC);
        err = update_one(s, u, "rotate key");
    }
    if (err) {
        tx_rollback(s);
        return err;
    }
    return tx_commit(s);
}

/* Binds n fields of row to a statement generated by append_insert (all
 * fields) or append_update (all but the last) and runs it; an update that
 * changes no row is TG_ENOTFOUND. */
static int write_row(tg_sqlite_t *s, int id, const field_t *f, size_t n, const void *row,
                     int update, const char *what)
{
    int err = 0;
    sqlite3_stmt *w = stmt_get(s, id, &err);
    if (!w) return err;
    int rc = bind_row(w, 1, f, n, row);
    if (rc != SQLITE_OK) {
        stmt_done(w);
        return sq_fail(s, rc, what);
    }
    return update ? update_one(s, w, what) : step_done(s, w, what);
}

static int sq_unit_insert(tg_store_t *st, const tg_unit_t *u)
{
    return write_row((tg_sqlite_t *)st, S_UNIT_INSERT, tg_store_unit_fields, tg_store_unit_nfields,
                     u, 0, "insert unit");
}

static int sq_unit_update(tg_store_t *st, const tg_unit_t *u)
{
    return write_row((tg_sqlite_t *)st, S_UNIT_UPDATE, tg_store_unit_fields,
                     tg_store_unit_nfields - 1, u, 1, "update unit");
}

static int sq_team_insert(tg_store_t *st, const tg_team_t *t)
{
    return write_row((tg_sqlite_t *)st, S_TEAM_INSERT, tg_store_team_fields, tg_store_team_nfields,
                     t, 0, "insert team");
}

static int sq_team_update(tg_store_t *st, const tg_team_t *t)
{
    return write_row((tg_sqlite_t *)st, S_TEAM_UPDATE, tg_store_team_fields,
                     tg_store_team_nfields - 1, t, 1, "update team");
}

/* Every row of the generated SELECT id, of the columns f describes. */
static int list_table(tg_store_t *st, int id, const field_t *f, size_t nf, size_t elem, void **out,
                      size_t *n)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *q = stmt_get(s, id, &err);
    return q ? list_rows(s, q, f, nf, elem, out, n) : err;
}

static int sq_units_list(tg_store_t *st, tg_unit_t **out, size_t *n)
{
    void *arr = NULL;
    int err = list_table(st, S_UNIT_LIST, tg_store_unit_fields, tg_store_unit_nfields,
                         sizeof(tg_unit_t), &arr, n);
    *out = arr;
    return err;
}

static int sq_teams_list(tg_store_t *st, tg_team_t **out, size_t *n)
{
    void *arr = NULL;
    int err = list_table(st, S_TEAM_LIST, tg_store_team_fields, tg_store_team_nfields,
                         sizeof(tg_team_t), &arr, n);
    *out = arr;
    return err;
}

static int sq_policy_set(tg_store_t *st, const char *entity, const char *json, int64_t now_ms)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    if (!entity || !entity[0] || strlen(entity) >= sizeof(((tg_policy_row_t *)0)->entity))
        return TG_EINVAL;
    int err = 0;
    sqlite3_stmt *w = stmt_get(s, json ? S_POLICY_SET : S_POLICY_DELETE, &err);
    if (!w) return err;
    sqlite3_bind_text(w, 1, entity, -1, SQLITE_STATIC);
    if (json) {
        sqlite3_bind_text(w, 2, json, -1, SQLITE_STATIC);
        sqlite3_bind_int64(w, 3, now_ms);
    }
    return step_done(s, w, "set policy");
}

/* A policy row; json stays NULL when it cannot be allocated (checked after). */
static void read_policy(sqlite3_stmt *st, void *row, const void *ctx)
{
    tg_policy_row_t *p = row;
    copy_col(st, 0, p->entity, sizeof(p->entity));
    const unsigned char *t = sqlite3_column_text(st, 1);
    size_t len = (size_t)sqlite3_column_bytes(st, 1);
    if ((p->json = malloc(len + 1))) {
        if (t) memcpy(p->json, t, len);
        p->json[len] = '\0';
    }
    p->updated_ms = sqlite3_column_int64(st, 2);
}

static int sq_policies_list(tg_store_t *st, tg_policy_row_t **out, size_t *n)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int err = 0;
    *out = NULL;
    *n = 0;
    sqlite3_stmt *q = stmt_get(s, S_POLICY_LIST, &err);
    if (!q) return err;
    void *arr = NULL;
    size_t len = 0;
    if ((err = collect_rows(s, q, read_policy, NULL, sizeof(tg_policy_row_t), &arr, &len,
                            "list policies")))
        return err;
    tg_policy_row_t *rows = arr;
    for (size_t i = 0; i < len; i++)
        if (!rows[i].json) {
            tg_store_policies_free(rows, len);
            return TG_ENOMEM;
        }
    *out = rows;
    *n = len;
    return 0;
}

static void read_total(sqlite3_stmt *st, void *row, const void *ctx)
{
    tg_usage_total_t *t = row;
    copy_col(st, 0, t->id, sizeof(t->id));
    t->requests = sqlite3_column_int64(st, 1);
    t->tokens = sqlite3_column_int64(st, 2);
    t->cost = sqlite3_column_int64(st, 3);
}

/* A sum that overflows 64 bits fails the query (SQLite's "integer
 * overflow"), never wraps. */
static int sq_usage_totals(tg_store_t *st, unsigned scope, int64_t since_ms, tg_usage_total_t **out,
                           size_t *n)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    *out = NULL;
    *n = 0;
    int id = scope == TG_GROUP_KEY    ? S_TOTALS_KEY
             : scope == TG_GROUP_TEAM ? S_TOTALS_TEAM
             : scope == TG_GROUP_UNIT ? S_TOTALS_UNIT
                                      : -1;
    if (id < 0) return TG_EINVAL;
    int err = 0;
    sqlite3_stmt *q = stmt_get(s, id, &err);
    if (!q) return err;
    sqlite3_bind_int64(q, 1, since_ms);
    void *arr = NULL;
    err = collect_rows(s, q, read_total, NULL, sizeof(tg_usage_total_t), &arr, n, "usage totals");
    *out = arr;
    return err;
}

static int sq_checkpoint(tg_store_t *st)
{
    tg_sqlite_t *s = (tg_sqlite_t *)st;
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
    return rc == SQLITE_OK || rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? 0 : TG_ESTORE;
}

const tg_store_backend_t tg_store_sqlite_backend = {
    .name = "sqlite",
    .open = sq_open,
    .close = sq_close,
    .schema_version = sq_schema_version,
    .ping = sq_ping,
    .data_version = sq_data_version,
    .key_insert = sq_key_insert,
    .key_revoke = sq_key_revoke,
    .keys_list = sq_keys_list,
    .key_update = sq_key_update,
    .key_rotate = sq_key_rotate,
    .unit_insert = sq_unit_insert,
    .unit_update = sq_unit_update,
    .units_list = sq_units_list,
    .team_insert = sq_team_insert,
    .team_update = sq_team_update,
    .teams_list = sq_teams_list,
    .policy_set = sq_policy_set,
    .policies_list = sq_policies_list,
    .admin_key_insert = sq_admin_key_insert,
    .admin_key_check = sq_admin_key_check,
    .admin_key_count = sq_admin_key_count,
    .usage_append = sq_usage_append,
    .usage_list = sq_usage_list,
    .usage_count = sq_usage_count,
    .usage_totals = sq_usage_totals,
    .checkpoint = sq_checkpoint,
    .rollup_refresh = sq_rollup_refresh,
    .rollup_rebuild = sq_rollup_rebuild,
    .rollup_query = sq_rollup_query,
    .report_pending = sq_report_pending,
    .report_version = sq_report_version,
    .report_done = sq_report_done,
};

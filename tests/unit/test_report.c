/* test_report.c - hourly rollups, the daily report files and the report
 * formats, against real SQLite files in a fresh temporary directory per test.
 *
 * Expected sums are computed here, from the events the test wrote, by a
 * reference aggregation of its own (a loop over the events), never copied
 * from what the code under test printed. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/core.h"
#include "http/http.h"
#include "store/store.h"
#include "tenancy/tenancy.h"
#include "usage/report.h"
#include "usage/reportjob.h"

/* ---- fixture ------------------------------------------------------------------ */

typedef struct {
    char dir[64];
    char path[128];    /* the database */
    char reports[128]; /* the reports directory (not created up front) */
    int seq;           /* next event number: ids stay unique */
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/tg_report_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    snprintf(f->path, sizeof(f->path), "%s/db/tollgate.db", f->dir);
    snprintf(f->reports, sizeof(f->reports), "%s/reports", f->dir);
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
    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    tg_log_level = TG_LOG_WARN;
    return 0;
}

static tg_store_t *open_path(const char *path)
{
    tg_store_config_t cfg = {.driver = "sqlite", .path = path, .busy_timeout_ms = 5000};
    tg_store_t *st = NULL;
    assert_int_equal(tg_store_open(&st, &cfg), 0);
    assert_non_null(st);
    return st;
}

static tg_store_t *open_store(const fixture_t *f)
{
    return open_path(f->path);
}

/* Runs one SQL statement on its own connection (to change the ledger behind
 * the store's back, as an operator would). */
static void raw_exec(const char *path, const char *sql)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

/* 2025-03-10T00:00:00Z, and the next day. */
#define D1     ((int64_t)1741564800000)
#define D2     (D1 + TG_DAY_MS)
#define MIN_MS ((int64_t)60000)

/* ---- events ------------------------------------------------------------------- */

static void set_text(char *dst, size_t size, const char *s)
{
    memset(dst, 0, size);
    snprintf(dst, size, "%s", s);
}

/* One event; its counts and costs follow from its number, so every event
 * differs and the flags cover every combination. cost_total is the sum of
 * the parts. */
static void make_event(fixture_t *f, tg_usage_event_t *e, int64_t started_ms, const char *unit,
                       const char *team, const char *key_id, const char *model, const char *region)
{
    int s = f->seq++;
    memset(e, 0, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "evt_%032x", (unsigned)s);
    snprintf(e->request_id, sizeof(e->request_id), "req_%d", s);
    e->started_ms = started_ms;
    e->ended_ms = started_ms + 1500;
    set_text(e->unit, sizeof(e->unit), unit);
    set_text(e->team, sizeof(e->team), team);
    set_text(e->key_id, sizeof(e->key_id), key_id);
    set_text(e->model, sizeof(e->model), model);
    set_text(e->upstream_model, sizeof(e->upstream_model), model);
    set_text(e->provider, sizeof(e->provider), "bedrock");
    set_text(e->region, sizeof(e->region), region);
    set_text(e->api, sizeof(e->api), "openai.chat");
    e->status = 200;
    set_text(e->outcome, sizeof(e->outcome),
             s % 5 == 3 ? TG_OUTCOME_UPSTREAM_ERROR : TG_OUTCOME_OK);
    e->input_tokens = 100 + (int64_t)s * 7;
    e->output_tokens = 50 + (int64_t)s * 3;
    e->cache_read_tokens = s % 4 ? (int64_t)s * 11 : 0;
    e->cache_write_tokens = s % 5 == 0 ? s : 0;
    e->images = s % 6 == 0 ? 1 : 0;
    e->token_source = s % 3 == 2 ? TG_TOKENS_ESTIMATED : TG_TOKENS_PROVIDER;
    e->unpriced = s % 4 == 1;
    e->cost_input = e->input_tokens * 3000000; /* $3 per million tokens */
    e->cost_output = e->output_tokens * 15000000;
    e->cost_cache_read = e->cache_read_tokens * 300000;
    e->cost_cache_write = e->cache_write_tokens * 3750000;
    e->cost_images = e->images * 40000000000;
    e->cost_total =
        e->cost_input + e->cost_output + e->cost_cache_read + e->cost_cache_write + e->cost_images;
    set_text(e->price_version, sizeof(e->price_version), e->unpriced ? "none" : "v1");
    e->latency_us = 1500000;
    e->ttfb_us = 200000;
}

static const int64_t hours3[3] = {D1 + 10 * TG_HOUR_MS, D1 + 23 * TG_HOUR_MS, D2};

/* n events over three hours across two days, over 2 units, 2 teams, 3 keys,
 * 3 models and 2 regions; plus the edges of hours (first and last ms). */
static size_t make_events(fixture_t *f, tg_usage_event_t *ev, size_t n)
{
    static const char *units[] = {"u1", "u2"}, *teams[] = {"red", "blue"},
                      *keys[] = {"key_a", "key_b", "key_c"}, *models[] = {"m-a", "m-b", "m-c"},
                      *regions[] = {"us-east-1", "eu-west-1"};
    for (size_t i = 0; i < n; i++) {
        int64_t t = hours3[i % 3] + (int64_t)((i * 97) % 3600) * 1000 + (int64_t)i;
        if (i == 0) t = hours3[2];                  /* first ms of an hour and a day */
        if (i == 1) t = hours3[1] + TG_HOUR_MS - 1; /* last ms of a day */
        make_event(f, &ev[i], t, units[(i / 3) % 2], teams[i % 2], keys[(i / 2) % 3],
                   models[(i / 5) % 3], regions[i % 4 == 0]);
    }
    return n;
}

/* ---- the reference aggregation ------------------------------------------------- */

static int64_t hour_of(int64_t t)
{
    return t - t % TG_HOUR_MS;
}

static int matches(const char *filter, const char *v)
{
    return !filter || !filter[0] || strcmp(filter, v) == 0;
}

static void add(int64_t *acc, int64_t v)
{
    assert_false(__builtin_add_overflow(*acc, v, acc));
}

static int row_cmp(const void *pa, const void *pb)
{
    const tg_rollup_row_t *a = pa, *b = pb;
    if (a->period_ms != b->period_ms) return a->period_ms < b->period_ms ? -1 : 1;
    int c = strcmp(a->unit, b->unit);
    if (!c) c = strcmp(a->team, b->team);
    if (!c) c = strcmp(a->key_id, b->key_id);
    if (!c) c = strcmp(a->model, b->model);
    if (!c) c = strcmp(a->region, b->region);
    return c;
}

/* The rows q should give for these events: the events in q's whole hours,
 * filtered, grouped and summed; key_prefix from keys (NULL: none). */
static tg_rollup_row_t *ref_query(const tg_usage_event_t *ev, size_t n, const tg_rollup_query_t *q,
                                  const tg_key_t *keys, size_t nkeys, size_t *nout)
{
    tg_rollup_row_t *rows = calloc(n + 1, sizeof(*rows));
    size_t len = 0;
    unsigned g = q->group;
    for (size_t i = 0; i < n; i++) {
        const tg_usage_event_t *e = &ev[i];
        int64_t h = hour_of(e->started_ms);
        if (h < hour_of(q->from_ms) || h >= q->to_ms) continue;
        if (!matches(q->unit, e->unit) || !matches(q->team, e->team) ||
            !matches(q->key_id, e->key_id) || !matches(q->model, e->model))
            continue;
        tg_rollup_row_t k;
        memset(&k, 0, sizeof(k));
        int64_t day = e->started_ms - e->started_ms % TG_DAY_MS;
        k.period_ms = g & TG_GROUP_HOUR ? h : g & TG_GROUP_DAY ? day : 0;
        if (g & TG_GROUP_UNIT) snprintf(k.unit, sizeof(k.unit), "%s", e->unit);
        if (g & TG_GROUP_TEAM) snprintf(k.team, sizeof(k.team), "%s", e->team);
        if (g & TG_GROUP_KEY) {
            snprintf(k.key_id, sizeof(k.key_id), "%s", e->key_id);
            for (size_t j = 0; j < nkeys; j++)
                if (strcmp(keys[j].id, e->key_id) == 0)
                    snprintf(k.key_prefix, sizeof(k.key_prefix), "%s", keys[j].prefix);
        }
        if (g & TG_GROUP_MODEL) snprintf(k.model, sizeof(k.model), "%s", e->model);
        if (g & TG_GROUP_REGION) snprintf(k.region, sizeof(k.region), "%s", e->region);
        tg_rollup_row_t *r = NULL;
        for (size_t j = 0; j < len && !r; j++)
            if (row_cmp(&rows[j], &k) == 0) r = &rows[j];
        if (!r) {
            r = &rows[len++];
            *r = k;
        }
        add(&r->invocations, 1);
        add(&r->input_tokens, e->input_tokens);
        add(&r->output_tokens, e->output_tokens);
        add(&r->cache_read_tokens, e->cache_read_tokens);
        add(&r->cache_write_tokens, e->cache_write_tokens);
        add(&r->images, e->images);
        add(&r->cost_input, e->cost_input);
        add(&r->cost_output, e->cost_output);
        add(&r->cost_cache_read, e->cost_cache_read);
        add(&r->cost_cache_write, e->cost_cache_write);
        add(&r->cost_images, e->cost_images);
        add(&r->cost_total, e->cost_total);
        add(&r->unpriced, e->unpriced != 0);
        add(&r->estimated, e->token_source != 0);
        add(&r->failed, strcmp(e->outcome, "ok") != 0);
    }
    qsort(rows, len, sizeof(*rows), row_cmp);
    *nout = len;
    return rows;
}

static void assert_row_equal(const tg_rollup_row_t *a, const tg_rollup_row_t *b)
{
    assert_int_equal(a->period_ms, b->period_ms);
    assert_string_equal(a->unit, b->unit);
    assert_string_equal(a->team, b->team);
    assert_string_equal(a->key_id, b->key_id);
    assert_string_equal(a->key_prefix, b->key_prefix);
    assert_string_equal(a->model, b->model);
    assert_string_equal(a->region, b->region);
    assert_int_equal(a->invocations, b->invocations);
    assert_int_equal(a->input_tokens, b->input_tokens);
    assert_int_equal(a->output_tokens, b->output_tokens);
    assert_int_equal(a->cache_read_tokens, b->cache_read_tokens);
    assert_int_equal(a->cache_write_tokens, b->cache_write_tokens);
    assert_int_equal(a->images, b->images);
    assert_int_equal(a->cost_input, b->cost_input);
    assert_int_equal(a->cost_output, b->cost_output);
    assert_int_equal(a->cost_cache_read, b->cost_cache_read);
    assert_int_equal(a->cost_cache_write, b->cost_cache_write);
    assert_int_equal(a->cost_images, b->cost_images);
    assert_int_equal(a->cost_total, b->cost_total);
    assert_int_equal(a->unpriced, b->unpriced);
    assert_int_equal(a->estimated, b->estimated);
    assert_int_equal(a->failed, b->failed);
}

/* Queries and compares with the reference, row by row (the order too).
 * Returns the number of rows. */
static size_t check_query(tg_store_t *st, const tg_rollup_query_t *q, const tg_usage_event_t *ev,
                          size_t n, const tg_key_t *keys, size_t nkeys)
{
    size_t nexp = 0, ngot = 0;
    tg_rollup_row_t *exp = ref_query(ev, n, q, keys, nkeys, &nexp);
    tg_rollup_row_t *got = NULL;
    assert_int_equal(tg_store_rollup_query(st, q, &got, &ngot), 0);
    assert_int_equal(ngot, nexp);
    for (size_t i = 0; i < ngot; i++)
        assert_row_equal(&got[i], &exp[i]);
    free(got);
    free(exp);
    return ngot;
}

/* ---- 1. refresh and grouping ---------------------------------------------------- */

static void test_rollup_refresh_groups(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[40];
    size_t n = make_events(f, ev, 40);
    assert_int_equal(tg_store_usage_append(st, ev, n), 0);

    /* Nothing is summed before a refresh. */
    tg_rollup_query_t q = {.from_ms = D1, .to_ms = D2 + TG_DAY_MS, .group = TG_GROUP_ALL};
    tg_rollup_row_t *rows = NULL;
    size_t nrows = 99;
    assert_int_equal(tg_store_rollup_query(st, &q, &rows, &nrows), 0);
    assert_int_equal(nrows, 0);
    free(rows);

    int hours = -1;
    assert_int_equal(tg_store_rollup_refresh(st, &hours), 0);
    assert_int_equal(hours, 3);

    const unsigned groups[] = {TG_GROUP_ALL,
                               TG_GROUP_DAY,
                               TG_GROUP_HOUR,
                               TG_GROUP_TEAM,
                               0,
                               TG_GROUP_ALL | TG_GROUP_HOUR,
                               TG_GROUP_UNIT | TG_GROUP_REGION,
                               TG_GROUP_KEY | TG_GROUP_MODEL};
    for (size_t i = 0; i < sizeof(groups) / sizeof(groups[0]); i++) {
        q.group = groups[i];
        size_t got = check_query(st, &q, ev, n, NULL, 0);
        assert_true(got > 0);
    }
    /* The shapes, counted independently: 2 days, 3 hours, 2 teams, 1 total. */
    q.group = TG_GROUP_DAY;
    assert_int_equal(check_query(st, &q, ev, n, NULL, 0), 2);
    q.group = TG_GROUP_HOUR;
    assert_int_equal(check_query(st, &q, ev, n, NULL, 0), 3);
    q.group = TG_GROUP_TEAM;
    assert_int_equal(check_query(st, &q, ev, n, NULL, 0), 2);
    q.group = 0;
    assert_int_equal(tg_store_rollup_query(st, &q, &rows, &nrows), 0);
    assert_int_equal(nrows, 1);
    /* The flag counts, counted here straight from the events. */
    int64_t unpriced = 0, estimated = 0, failed = 0, total = 0;
    for (size_t i = 0; i < n; i++) {
        unpriced += ev[i].unpriced != 0;
        estimated += ev[i].token_source != 0;
        failed += strcmp(ev[i].outcome, "ok") != 0;
        total += ev[i].cost_total;
    }
    assert_true(unpriced > 0 && estimated > 0 && failed > 0);
    assert_int_equal(rows[0].invocations, n);
    assert_int_equal(rows[0].unpriced, unpriced);
    assert_int_equal(rows[0].estimated, estimated);
    assert_int_equal(rows[0].failed, failed);
    assert_int_equal(rows[0].cost_total, total);
    assert_int_equal(rows[0].period_ms, 0);
    assert_string_equal(rows[0].team, "");
    free(rows);

    /* One day only, and a range starting mid-hour takes that whole hour. */
    q = (tg_rollup_query_t){.from_ms = D2, .to_ms = D2 + TG_DAY_MS, .group = TG_GROUP_HOUR};
    assert_int_equal(check_query(st, &q, ev, n, NULL, 0), 1);
    q = (tg_rollup_query_t){
        .from_ms = hours3[0] + 30 * MIN_MS, .to_ms = hours3[1], .group = TG_GROUP_HOUR};
    assert_int_equal(check_query(st, &q, ev, n, NULL, 0), 1);
    /* And one ending mid-hour takes the hour it ends in. */
    q.to_ms = hours3[1] + 1;
    assert_int_equal(check_query(st, &q, ev, n, NULL, 0), 2);
    tg_store_close(st);
}

/* ---- 2. incremental refresh and late events ------------------------------------ */

static void test_rollup_incremental(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[31];
    size_t n = make_events(f, ev, 30);
    assert_int_equal(tg_store_usage_append(st, ev, n), 0);
    int hours = -1;
    assert_int_equal(tg_store_rollup_refresh(st, &hours), 0);
    assert_int_equal(hours, 3);

    /* A long call that started in an hour already summed. */
    make_event(f, &ev[n], hours3[0] + 59 * MIN_MS, "u1", "red", "key_a", "m-a", "us-east-1");
    assert_int_equal(tg_store_usage_append(st, &ev[n], 1), 0);
    n++;
    assert_int_equal(tg_store_rollup_refresh(st, &hours), 0);
    assert_int_equal(hours, 1);
    tg_rollup_query_t q = {.from_ms = D1, .to_ms = D2 + TG_DAY_MS, .group = TG_GROUP_ALL};
    check_query(st, &q, ev, n, NULL, 0);
    q.group = TG_GROUP_ALL | TG_GROUP_HOUR;
    check_query(st, &q, ev, n, NULL, 0);

    /* Nothing new: no hour re-summed, the same rows. */
    tg_rollup_row_t *a = NULL, *b = NULL;
    size_t na = 0, nb = 0;
    assert_int_equal(tg_store_rollup_query(st, &q, &a, &na), 0);
    assert_int_equal(tg_store_rollup_refresh(st, &hours), 0);
    assert_int_equal(hours, 0);
    assert_int_equal(tg_store_rollup_query(st, &q, &b, &nb), 0);
    assert_int_equal(na, nb);
    assert_memory_equal(a, b, na * sizeof(*a));
    free(a);
    free(b);

    /* A re-appended event (a retried batch) is ignored by the ledger, so it
     * re-sums nothing and counts once. */
    assert_int_equal(tg_store_usage_append(st, &ev[3], 1), 0);
    assert_int_equal(tg_store_rollup_refresh(st, &hours), 0);
    assert_int_equal(hours, 0);
    check_query(st, &q, ev, n, NULL, 0);

    /* Another connection's events are picked up by this one's refresh. */
    tg_store_t *other = open_store(f);
    tg_usage_event_t late;
    make_event(f, &late, hours3[2] + 5 * MIN_MS, "u2", "blue", "key_b", "m-b", "eu-west-1");
    assert_int_equal(tg_store_usage_append(other, &late, 1), 0);
    tg_store_close(other);
    assert_int_equal(tg_store_rollup_refresh(st, &hours), 0);
    assert_int_equal(hours, 1);
    tg_store_close(st);
}

/* A backlog of 65,000 events over 9 hours: every sum right, and each hour
 * summed once, however many events it gained (summing an hour again per
 * slice of the backlog held the ledger's write lock for seconds). */
static void test_rollup_refresh_batches(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    enum { CHUNK = 5000, CHUNKS = 13 };
    tg_usage_event_t *ev = calloc(CHUNK, sizeof(*ev));
    int64_t total = 0, in = 0;
    for (int c = 0; c < CHUNKS; c++) {
        for (int i = 0; i < CHUNK; i++) {
            int k = c * CHUNK + i;
            /* The last chunk in hours of its own. */
            int64_t hour = c == CHUNKS - 1 ? 7 + k % 2 : k % 7;
            make_event(f, &ev[i], D1 + hour * TG_HOUR_MS + k % 1000, "u1", k % 2 ? "red" : "blue",
                       "key_a", "m-a", "us-east-1");
            total += ev[i].cost_total;
            in += ev[i].input_tokens;
        }
        assert_int_equal(tg_store_usage_append(st, ev, CHUNK), 0);
    }
    free(ev);
    int hours = 0;
    assert_int_equal(tg_store_rollup_refresh(st, &hours), 0);
    assert_int_equal(hours, 9);
    tg_rollup_query_t q = {.from_ms = D1, .to_ms = D2, .group = 0};
    tg_rollup_row_t *rows = NULL;
    size_t n = 0;
    assert_int_equal(tg_store_rollup_query(st, &q, &rows, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].invocations, CHUNK * CHUNKS);
    assert_int_equal(rows[0].cost_total, total);
    assert_int_equal(rows[0].input_tokens, in);
    free(rows);
    q.group = TG_GROUP_HOUR;
    assert_int_equal(tg_store_rollup_query(st, &q, &rows, &n), 0);
    assert_int_equal(n, 9);
    free(rows);
    assert_int_equal(tg_store_rollup_refresh(st, &hours), 0);
    assert_int_equal(hours, 0);
    tg_store_close(st);
}

/* Refreshes add each event once: two connections taking turns, and a
 * rebuild of one hour while events of it and of another wait past the mark
 * (the rebuild takes them in, and the next refresh adds nothing again). */
static void test_rollup_refresh_turns_and_rebuild(void **state)
{
    fixture_t *f = *state;
    tg_store_t *a = open_store(f), *b = open_store(f);
    tg_usage_event_t ev[40];
    size_t n = 0;
    tg_rollup_query_t q = {
        .from_ms = D1, .to_ms = D2 + TG_DAY_MS, .group = TG_GROUP_ALL | TG_GROUP_HOUR};
    for (int turn = 0; turn < 4; turn++) {
        for (int i = 0; i < 5; i++, n++)
            make_event(f, &ev[n], hours3[(turn + i) % 2] + (int64_t)n * MIN_MS % TG_HOUR_MS, "u1",
                       i % 2 ? "red" : "blue", "key_a", "m-a", "us-east-1");
        assert_int_equal(tg_store_usage_append(turn % 2 ? b : a, ev + n - 5, 5), 0);
        int hours = -1;
        assert_int_equal(tg_store_rollup_refresh(turn % 2 ? a : b, &hours), 0);
        assert_int_equal(hours, 2);
        check_query(a, &q, ev, n, NULL, 0);
    }
    /* Pending: 4 events in hours3[0], 4 in hours3[2]. Rebuild hours3[0]'s day. */
    for (int i = 0; i < 8; i++, n++)
        make_event(f, &ev[n], hours3[i % 2 ? 2 : 0] + 30 * MIN_MS + i, "u2", "green", "key_b",
                   "m-b", "eu-west-1");
    assert_int_equal(tg_store_usage_append(b, ev + n - 8, 8), 0);
    assert_int_equal(tg_store_rollup_rebuild(a, D1, D1 + TG_DAY_MS), 0);
    check_query(a, &q, ev, n, NULL, 0);
    int hours = -1;
    assert_int_equal(tg_store_rollup_refresh(b, &hours), 0);
    assert_int_equal(hours, 0);
    check_query(b, &q, ev, n, NULL, 0);
    tg_store_close(a);
    tg_store_close(b);
}

/* ---- 3. rebuild, filters, key prefixes -------------------------------------------- */

static void test_rollup_rebuild_filters(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    /* key_a is a key the store has; key_b and key_c are not (deleted). */
    tg_key_t key;
    memset(&key, 0, sizeof(key));
    char secret[TG_KEY_SECRET_MAX];
    assert_int_equal(tg_key_generate(&key, secret, sizeof(secret)), 0);
    snprintf(key.team, sizeof(key.team), "red");
    assert_int_equal(tg_store_key_insert(st, &key), 0);
    assert_true(strlen(key.prefix) > 0);

    tg_usage_event_t ev[36];
    size_t n = make_events(f, ev, 36);
    for (size_t i = 0; i < n; i++)
        if (strcmp(ev[i].key_id, "key_a") == 0)
            set_text(ev[i].key_id, sizeof(ev[i].key_id), key.id);
    assert_int_equal(tg_store_usage_append(st, ev, n), 0);
    assert_int_equal(tg_store_rollup_refresh(st, NULL), 0);

    tg_rollup_query_t q = {
        .from_ms = D1, .to_ms = D2 + TG_DAY_MS, .group = TG_GROUP_ALL | TG_GROUP_HOUR};
    check_query(st, &q, ev, n, &key, 1);
    tg_rollup_row_t *a = NULL;
    size_t na = 0;
    assert_int_equal(tg_store_rollup_query(st, &q, &a, &na), 0);
    int with_prefix = 0, without = 0;
    for (size_t i = 0; i < na; i++) {
        if (strcmp(a[i].key_id, key.id) == 0) {
            assert_string_equal(a[i].key_prefix, key.prefix);
            with_prefix++;
        } else {
            assert_string_equal(a[i].key_prefix, "");
            without++;
        }
    }
    assert_true(with_prefix > 0 && without > 0);

    /* Rebuilding, once or twice, gives the rows the refresh gave. */
    for (int round = 0; round < 2; round++) {
        assert_int_equal(tg_store_rollup_rebuild(st, D1, D2 + TG_DAY_MS), 0);
        tg_rollup_row_t *b = NULL;
        size_t nb = 0;
        assert_int_equal(tg_store_rollup_query(st, &q, &b, &nb), 0);
        assert_int_equal(nb, na);
        assert_memory_equal(a, b, na * sizeof(*a));
        free(b);
    }
    /* The same events in a fresh store, summed only by a rebuild. */
    char path2[160];
    snprintf(path2, sizeof(path2), "%s/other/tollgate.db", f->dir);
    tg_store_t *st2 = open_path(path2);
    assert_int_equal(tg_store_key_insert(st2, &key), 0);
    assert_int_equal(tg_store_usage_append(st2, ev, n), 0);
    assert_int_equal(tg_store_rollup_rebuild(st2, D1 + 1, D2 + TG_DAY_MS), 0);
    tg_rollup_row_t *c = NULL;
    size_t nc = 0;
    assert_int_equal(tg_store_rollup_query(st2, &q, &c, &nc), 0);
    assert_int_equal(nc, na);
    assert_memory_equal(a, c, na * sizeof(*a));
    free(c);
    tg_store_close(st2);
    free(a);

    /* An event removed from the ledger leaves its hour when the hour is
     * rebuilt (the hour is found from the rollups, not only the events). */
    char sql[256];
    snprintf(sql, sizeof(sql),
             "DELETE FROM usage_events WHERE started_ms >= %lld AND started_ms < %lld",
             (long long)hours3[2], (long long)(hours3[2] + TG_HOUR_MS));
    raw_exec(f->path, sql);
    assert_int_equal(tg_store_rollup_rebuild(st, D2, D2 + TG_DAY_MS), 0);
    size_t kept = 0;
    for (size_t i = 0; i < n; i++)
        if (hour_of(ev[i].started_ms) != hours3[2]) ev[kept++] = ev[i];
    n = kept;
    check_query(st, &q, ev, n, &key, 1);

    /* Filters, alone and together. */
    const char *units[] = {NULL, "", "u1", "u2", "nope"};
    for (size_t i = 0; i < 5; i++) {
        q.unit = units[i];
        check_query(st, &q, ev, n, &key, 1);
    }
    q.unit = NULL;
    q.team = "red";
    assert_true(check_query(st, &q, ev, n, &key, 1) > 0);
    q.team = NULL;
    q.key_id = key.id;
    assert_true(check_query(st, &q, ev, n, &key, 1) > 0);
    q.key_id = "key_b";
    assert_true(check_query(st, &q, ev, n, &key, 1) > 0);
    q.model = "m-b";
    q.team = "blue";
    q.unit = "u2";
    check_query(st, &q, ev, n, &key, 1);
    q.group = TG_GROUP_TEAM;
    check_query(st, &q, ev, n, &key, 1);
    q = (tg_rollup_query_t){.from_ms = D1, .to_ms = D2, .group = 0, .model = "m-c"};
    assert_int_equal(check_query(st, &q, ev, n, &key, 1), 1);
    tg_store_close(st);
}

/* ---- 4. overflow -------------------------------------------------------------------- */

static void overflow_event(fixture_t *f, tg_usage_event_t *e, int64_t t, const char *team,
                           int64_t cost)
{
    make_event(f, e, t, "u1", team, "key_a", "m-a", "us-east-1");
    e->cost_input = cost;
    e->cost_output = e->cost_cache_read = e->cost_cache_write = e->cost_images = 0;
    e->cost_total = cost;
}

static void test_rollup_overflow(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_log_level = TG_LOG_ERROR + 1;       /* the failures below are logged; expected */
    const int64_t big = INT64_MAX / 4 * 3; /* two of them do not fit */

    /* Two hours that each fit, summed over the day by the query: the query
     * fails rather than answer a wrapped number. */
    tg_usage_event_t ev[2];
    overflow_event(f, &ev[0], D1 + 1 * TG_HOUR_MS, "red", big);
    overflow_event(f, &ev[1], D1 + 2 * TG_HOUR_MS, "red", big);
    assert_int_equal(tg_store_usage_append(st, ev, 2), 0);
    assert_int_equal(tg_store_rollup_refresh(st, NULL), 0);
    tg_rollup_query_t q = {.from_ms = D1, .to_ms = D2, .group = TG_GROUP_HOUR};
    assert_int_equal(check_query(st, &q, ev, 2, NULL, 0), 2);
    q.group = TG_GROUP_DAY;
    tg_rollup_row_t *rows = NULL;
    size_t n = 0;
    int err = tg_store_rollup_query(st, &q, &rows, &n);
    assert_true(err < 0);
    assert_null(rows);
    assert_int_equal(n, 0);

    /* Two events in one hour and group: the refresh fails, nothing wraps. */
    tg_usage_event_t same[2];
    overflow_event(f, &same[0], D2 + 5 * MIN_MS, "red", big);
    overflow_event(f, &same[1], D2 + 6 * MIN_MS, "red", big);
    assert_int_equal(tg_store_usage_append(st, same, 2), 0);
    int hours = -1;
    err = tg_store_rollup_refresh(st, &hours);
    assert_true(err < 0);
    q = (tg_rollup_query_t){.from_ms = D2, .to_ms = D2 + TG_DAY_MS, .group = TG_GROUP_ALL};
    assert_int_equal(tg_store_rollup_query(st, &q, &rows, &n), 0);
    for (size_t i = 0; i < n; i++) {
        assert_true(rows[i].cost_total >= 0);
        assert_true(rows[i].cost_input >= 0);
    }
    assert_int_equal(n, 0); /* the failed transaction left nothing behind */
    free(rows);
    tg_report_t r;
    assert_true(tg_report_build(st, &q, &r) < 0);
    assert_null(r.rows);

    /* The same two, refreshed one at a time: the second refresh adds to a
     * sum already stored, and fails there too (SQLite's + would have turned
     * the total into a float). */
    tg_store_close(st);
    char second[160]; /* a fresh ledger: the failed pair above stays unsummed in the old one */
    snprintf(second, sizeof(second), "%s/second.db", f->dir);
    st = open_path(second);
    overflow_event(f, &same[0], D2 + 2 * TG_HOUR_MS + 5 * MIN_MS, "blue", big);
    overflow_event(f, &same[1], D2 + 2 * TG_HOUR_MS + 6 * MIN_MS, "blue", big);
    assert_int_equal(tg_store_usage_append(st, &same[0], 1), 0);
    assert_int_equal(tg_store_rollup_refresh(st, NULL), 0);
    assert_int_equal(tg_store_usage_append(st, &same[1], 1), 0);
    assert_true(tg_store_rollup_refresh(st, NULL) < 0);
    q = (tg_rollup_query_t){.from_ms = D2, .to_ms = D2 + TG_DAY_MS, .group = TG_GROUP_ALL};
    assert_int_equal(tg_store_rollup_query(st, &q, &rows, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(rows[0].invocations, 1); /* the first sum, untouched */
    assert_int_equal(rows[0].cost_total, same[0].cost_total);
    free(rows);
    tg_store_close(st);
}

static void test_report_totals_overflow(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    const int64_t big = (int64_t)(INT64_MAX / 3 * 2); /* about INT64_MAX / 1.5 */
    tg_usage_event_t ev[2];
    overflow_event(f, &ev[0], D1 + TG_HOUR_MS, "red", big);
    overflow_event(f, &ev[1], D1 + TG_HOUR_MS + 1, "blue", big);
    assert_int_equal(tg_store_usage_append(st, ev, 2), 0);
    tg_rollup_query_t q = {.from_ms = D1, .to_ms = D2, .group = TG_GROUP_TEAM};
    tg_report_t r;
    memset(&r, 0x5a, sizeof(r));
    assert_int_equal(tg_report_build(st, &q, &r), TG_ETOOBIG);
    assert_null(r.rows);
    assert_int_equal(r.nrows, 0);
    /* Each row fits on its own. */
    assert_int_equal(check_query(st, &q, ev, 2, NULL, 0), 2);
    /* One team: fits, and the totals equal the row. */
    q.team = "red";
    assert_int_equal(tg_report_build(st, &q, &r), 0);
    assert_int_equal(r.nrows, 1);
    assert_int_equal(r.totals.cost_total, big);
    assert_int_equal(r.totals.invocations, 1);
    tg_report_free(&r);
    tg_store_close(st);
}

/* ---- 5. which days need a report ---------------------------------------------------- */

static const tg_report_day_t *find_day(const tg_report_day_t *d, size_t n, int64_t day_ms)
{
    for (size_t i = 0; i < n; i++)
        if (d[i].day_ms == day_ms) return &d[i];
    return NULL;
}

static void test_report_pending(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_report_day_t *d = NULL;
    size_t n = 9;
    assert_int_equal(tg_store_report_pending(st, INT64_MAX, &d, &n), 0);
    assert_int_equal(n, 0);
    free(d);
    int64_t v1 = -1, v2 = -1;
    assert_int_equal(tg_store_report_version(st, D1, &v1), 0);
    assert_int_equal(v1, 0);

    tg_usage_event_t ev[30];
    size_t ne = make_events(f, ev, 30);
    assert_int_equal(tg_store_usage_append(st, ev, ne), 0);
    /* Not summed yet: not pending yet. */
    assert_int_equal(tg_store_report_pending(st, INT64_MAX, &d, &n), 0);
    assert_int_equal(n, 0);
    free(d);
    assert_int_equal(tg_store_rollup_refresh(st, NULL), 0);

    assert_int_equal(tg_store_report_pending(st, INT64_MAX, &d, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(d[0].day_ms, D1); /* oldest first */
    assert_int_equal(d[1].day_ms, D2);
    assert_int_equal(tg_store_report_version(st, D1, &v1), 0);
    assert_int_equal(tg_store_report_version(st, D2, &v2), 0);
    assert_true(v1 > 0 && v2 > 0);
    assert_int_equal(d[0].version, v1);
    assert_int_equal(d[1].version, v2);
    free(d);

    /* Days at or after before_ms are not listed. */
    assert_int_equal(tg_store_report_pending(st, D2, &d, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].day_ms, D1);
    free(d);
    assert_int_equal(tg_store_report_pending(st, D1, &d, &n), 0);
    assert_int_equal(n, 0);
    free(d);
    assert_int_equal(tg_store_report_pending(st, D2 + 1, &d, &n), 0);
    assert_int_equal(n, 2);
    free(d);

    /* Done: no longer pending; the other day still is. */
    assert_int_equal(tg_store_report_done(st, D1, v1), 0);
    assert_int_equal(tg_store_report_pending(st, INT64_MAX, &d, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(d[0].day_ms, D2);
    free(d);
    /* Recording an older version does not undo a newer one. */
    assert_int_equal(tg_store_report_done(st, D1, v1 - 1), 0);
    assert_int_equal(tg_store_report_pending(st, D2, &d, &n), 0);
    assert_int_equal(n, 0);
    free(d);

    /* A late event for the day makes it pending again, at a higher version. */
    tg_usage_event_t late;
    make_event(f, &late, D1 + 3 * TG_HOUR_MS, "u1", "red", "key_a", "m-a", "us-east-1");
    assert_int_equal(tg_store_usage_append(st, &late, 1), 0);
    assert_int_equal(tg_store_report_pending(st, D2, &d, &n), 0);
    assert_int_equal(n, 0); /* until the rollups are refreshed */
    free(d);
    assert_int_equal(tg_store_rollup_refresh(st, NULL), 0);
    assert_int_equal(tg_store_report_pending(st, INT64_MAX, &d, &n), 0);
    assert_int_equal(n, 2);
    const tg_report_day_t *p = find_day(d, n, D1);
    assert_non_null(p);
    assert_true(p->version > v1);
    int64_t v1b = 0;
    assert_int_equal(tg_store_report_version(st, D1, &v1b), 0);
    assert_int_equal(v1b, p->version);
    free(d);
    /* Done with the old version: still pending. */
    assert_int_equal(tg_store_report_done(st, D1, v1), 0);
    assert_int_equal(tg_store_report_pending(st, D2, &d, &n), 0);
    assert_int_equal(n, 1);
    free(d);
    assert_int_equal(tg_store_report_done(st, D1, v1b), 0);
    assert_int_equal(tg_store_report_pending(st, D2, &d, &n), 0);
    assert_int_equal(n, 0);
    free(d);
    /* A day with no events: done is a no-op, nothing appears. */
    assert_int_equal(tg_store_report_done(st, D1 - TG_DAY_MS, 5), 0);
    assert_int_equal(tg_store_report_pending(st, INT64_MAX, &d, &n), 0);
    assert_null(find_day(d, n, D1 - TG_DAY_MS));
    free(d);
    tg_store_close(st);
}

/* ---- 6. the daily files ---------------------------------------------------------------- */

#define CSV_HEADER                                                                                 \
    "team_id,model_id,input_tokens,output_tokens,invocations,input_cost,output_cost,unit,"         \
    "key_prefix,cache_read_tokens,cache_write_tokens,cache_read_cost,cache_write_cost,images,"     \
    "image_cost,total_cost,unpriced_invocations,estimated_invocations,failed_invocations,"         \
    "region,date"

typedef struct {
    int calls;
    int fail_at;         /* 1-based call that fails; 0 = never */
    const char *fail_on; /* or: fail every key containing this */
    char keys[8][64];
    char types[8][64];
    char *bodies[8];
    size_t lens[8];
} upload_rec_t;

static int upload_cb(void *ud, const char *key, const void *body, size_t len,
                     const char *content_type, char *err, size_t errcap)
{
    upload_rec_t *u = ud;
    int i = u->calls++ % 8;
    free(u->bodies[i]);
    snprintf(u->keys[i], sizeof(u->keys[i]), "%s", key);
    snprintf(u->types[i], sizeof(u->types[i]), "%s", content_type);
    u->bodies[i] = malloc(len + 1);
    memcpy(u->bodies[i], body, len);
    u->lens[i] = len;
    if (u->fail_at == i + 1 || (u->fail_on && strstr(key, u->fail_on))) {
        snprintf(err, errcap, "refused by the test");
        return TG_EUPSTREAM;
    }
    return 0;
}

static void upload_reset(upload_rec_t *u)
{
    const char *fail_on = u->fail_on;
    for (int i = 0; i < 8; i++)
        free(u->bodies[i]);
    memset(u, 0, sizeof(*u));
    u->fail_on = fail_on;
}

/* The file's bytes (malloc'ed), or NULL when it does not exist. */
static char *slurp(const char *dir, const char *sub, const char *name, size_t *len)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s/%s", dir, sub, name);
    size_t l = 0;
    char *b = tg_read_file(p, 1 << 24, &l);
    if (len) *len = l;
    return b;
}

static int exists(const char *dir, const char *sub, const char *name)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s/%s", dir, sub, name);
    struct stat sb;
    return stat(p, &sb) == 0;
}

/* Entries of dir ending in ".tmp". */
static int count_tmp(const char *dir, const char *sub)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, sub);
    DIR *d = opendir(p);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (l > 4 && strcmp(e->d_name + l - 4, ".tmp") == 0) n++;
    }
    closedir(d);
    return n;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s; s++)
        n += *s == '\n';
    return n;
}

/* A pid no process has now. */
static long dead_pid(void)
{
    for (long pid = 999999; pid > 1000; pid--)
        if (kill((pid_t)pid, 0) != 0 && errno == ESRCH) return pid;
    fail_msg("no free pid");
    return 0;
}

static void test_report_day_files(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[30];
    size_t n = make_events(f, ev, 30);
    /* Day 2 priced only, so it has no errors file. */
    int64_t unpriced_d1 = 0;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].started_ms >= D2)
            ev[i].unpriced = 0;
        else
            unpriced_d1 += ev[i].unpriced != 0;
    }
    assert_true(unpriced_d1 > 0);
    assert_int_equal(tg_store_usage_append(st, ev, n), 0);

    /* A temporary left by a dead run, and one of a live process. */
    char sub[256], stale[64], live[64], p[512];
    snprintf(sub, sizeof(sub), "%s/succeed", f->reports);
    assert_int_equal(tg_mkdirs(sub, 0750), 0);
    snprintf(stale, sizeof(stale), ".2025-03-10.csv.%ld.tmp", dead_pid());
    snprintf(live, sizeof(live), ".2025-03-10.csv.%ld.tmp", (long)getppid());
    snprintf(p, sizeof(p), "%s/%s", sub, stale);
    assert_int_equal(tg_write_file_atomic(p, "half", 4), 0);
    snprintf(p, sizeof(p), "%s/%s", sub, live);
    assert_int_equal(tg_write_file_atomic(p, "busy", 4), 0);
    int live_alive = kill(getppid(), 0) == 0;

    upload_rec_t up;
    memset(&up, 0, sizeof(up));
    tg_reportjob_opts_t o = {.dir = f->reports,
                             .refresh_s = 1,
                             .daily_at_min = 0,
                             .upload = upload_cb,
                             .upload_ud = &up};
    size_t rows = 0;
    assert_int_equal(tg_report_day(st, &o, D1 + 5 * TG_HOUR_MS, 0, &rows), 0);
    tg_rollup_query_t q = {.from_ms = D1, .to_ms = D2, .group = TG_GROUP_ALL};
    size_t nexp = 0;
    free(ref_query(ev, n, &q, NULL, 0, &nexp));
    assert_int_equal(rows, nexp);
    assert_false(exists(f->reports, "succeed", stale));
    if (live_alive) assert_true(exists(f->reports, "succeed", live));
    snprintf(p, sizeof(p), "%s/%s", sub, live);
    unlink(p);

    size_t lc = 0, lj = 0, le = 0;
    char *csv = slurp(f->reports, "succeed", "2025-03-10.csv", &lc);
    char *jsonl = slurp(f->reports, "succeed", "2025-03-10.jsonl", &lj);
    char *errs = slurp(f->reports, "errors", "2025-03-10.txt", &le);
    assert_non_null(csv);
    assert_non_null(jsonl);
    assert_non_null(errs);
    assert_int_equal(count_tmp(f->reports, "succeed"), 0);
    assert_int_equal(count_tmp(f->reports, "errors"), 0);

    /* CSV: the header, then one line per row, every row dated the day. */
    assert_int_equal(strncmp(csv, CSV_HEADER "\n", strlen(CSV_HEADER) + 1), 0);
    assert_int_equal(count_lines(csv), rows + 1);
    for (const char *l = strchr(csv, '\n') + 1; *l; l = strchr(l, '\n') + 1)
        assert_int_equal(strncmp(strchr(l, '\n') - 11, ",2025-03-10", 11), 0);
    /* JSON lines: one per row (their contents: test_report_day_jsonl). */
    assert_int_equal(count_lines(jsonl), rows);
    /* errors: a comment, then one line per flagged row. */
    assert_int_equal(errs[0], '#');
    size_t flagged = 0;
    for (const char *l = errs; (l = strstr(l, "\nunpriced date=2025-03-10 ")) != NULL; l++)
        flagged++;
    tg_rollup_row_t *exp = ref_query(ev, n, &q, NULL, 0, &nexp);
    size_t exp_flagged = 0;
    for (size_t i = 0; i < nexp; i++)
        exp_flagged += exp[i].unpriced > 0;
    free(exp);
    assert_int_equal(flagged, exp_flagged);

    /* The uploads: the three files, in order, with the bytes on disk. */
    assert_int_equal(up.calls, 3);
    assert_string_equal(up.keys[0], "succeed/2025-03-10.csv");
    assert_string_equal(up.keys[1], "succeed/2025-03-10.jsonl");
    assert_string_equal(up.keys[2], "errors/2025-03-10.txt");
    assert_int_equal(strncmp(up.types[0], "text/csv", 8), 0);
    assert_int_equal(up.lens[0], lc);
    assert_memory_equal(up.bodies[0], csv, lc);
    assert_int_equal(up.lens[1], lj);
    assert_memory_equal(up.bodies[1], jsonl, lj);
    assert_int_equal(up.lens[2], le);
    assert_memory_equal(up.bodies[2], errs, le);
    upload_reset(&up);

    /* Reported: no longer pending. */
    tg_report_day_t *d = NULL;
    size_t nd = 0;
    assert_int_equal(tg_store_report_pending(st, D2, &d, &nd), 0);
    assert_int_equal(nd, 0);
    free(d);

    /* Again, and again rebuilt from the events: the same bytes. */
    for (int rebuild = 0; rebuild < 2; rebuild++) {
        assert_int_equal(tg_report_day(st, &o, D1, rebuild, NULL), 0);
        size_t l2 = 0;
        char *b = slurp(f->reports, "succeed", "2025-03-10.csv", &l2);
        assert_int_equal(l2, lc);
        assert_memory_equal(b, csv, lc);
        free(b);
        b = slurp(f->reports, "succeed", "2025-03-10.jsonl", &l2);
        assert_int_equal(l2, lj);
        assert_memory_equal(b, jsonl, lj);
        free(b);
        b = slurp(f->reports, "errors", "2025-03-10.txt", &l2);
        assert_int_equal(l2, le);
        assert_memory_equal(b, errs, le);
        free(b);
        upload_reset(&up);
    }

    /* A day with every call priced: no errors file. */
    assert_int_equal(tg_report_day(st, &o, D2, 0, &rows), 0);
    assert_true(rows > 0);
    assert_true(exists(f->reports, "succeed", "2025-03-11.csv"));
    assert_true(exists(f->reports, "succeed", "2025-03-11.jsonl"));
    assert_false(exists(f->reports, "errors", "2025-03-11.txt"));
    assert_int_equal(up.calls, 2);
    upload_reset(&up);

    /* Prices added and the day re-run: its old errors file goes. */
    char sql[256];
    snprintf(sql, sizeof(sql), "UPDATE usage_events SET unpriced = 0 WHERE started_ms < %lld",
             (long long)D2);
    raw_exec(f->path, sql);
    assert_int_equal(tg_report_day(st, &o, D1, 1, NULL), 0);
    assert_false(exists(f->reports, "errors", "2025-03-10.txt"));
    assert_true(exists(f->reports, "succeed", "2025-03-10.csv"));
    upload_reset(&up);

    /* An upload that fails: an error, and the day stays pending. */
    tg_usage_event_t late;
    make_event(f, &late, D1 + 1, "u1", "red", "key_a", "m-a", "us-east-1");
    assert_int_equal(tg_store_usage_append(st, &late, 1), 0);
    up.fail_at = 2;
    tg_log_level = TG_LOG_ERROR + 1;
    assert_true(tg_report_day(st, &o, D1, 0, NULL) < 0);
    tg_log_level = TG_LOG_WARN;
    assert_int_equal(up.calls, 2);
    assert_int_equal(tg_store_report_pending(st, D2, &d, &nd), 0);
    assert_int_equal(nd, 1);
    assert_int_equal(d[0].day_ms, D1);
    free(d);
    upload_reset(&up);
    /* Once it works, the day is done. */
    assert_int_equal(tg_report_day(st, &o, D1, 0, NULL), 0);
    assert_int_equal(tg_store_report_pending(st, D2, &d, &nd), 0);
    assert_int_equal(nd, 0);
    free(d);
    upload_reset(&up);

    /* A day with no events writes nothing. */
    assert_int_equal(tg_report_day(st, &o, D1 - TG_DAY_MS, 0, &rows), 0);
    assert_int_equal(rows, 0);
    assert_false(exists(f->reports, "succeed", "2025-03-09.csv"));
    assert_int_equal(up.calls, 0);
    assert_int_equal(count_tmp(f->reports, "succeed"), 0);
    free(csv);
    free(jsonl);
    free(errs);
    tg_store_close(st);
}

/* The JSON lines of the daily file parse, and their money adds up. */
static int64_t parse_usd(const char *s);

static void test_report_day_jsonl(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[30];
    size_t n = make_events(f, ev, 30);
    assert_int_equal(tg_store_usage_append(st, ev, n), 0);
    tg_reportjob_opts_t o = {.dir = f->reports};
    size_t rows = 0;
    assert_int_equal(tg_report_day(st, &o, D1, 0, &rows), 0);
    char *jsonl = slurp(f->reports, "succeed", "2025-03-10.jsonl", NULL);
    assert_non_null(jsonl);
    int64_t total = 0, want = 0, inv = 0;
    size_t lines = 0;
    for (char *l = jsonl; *l;) {
        char *nl = strchr(l, '\n');
        assert_non_null(nl);
        *nl = '\0';
        cJSON *j = cJSON_Parse(l);
        assert_non_null(j);
        cJSON *tc = cJSON_GetObjectItemCaseSensitive(j, "total_cost");
        assert_true(cJSON_IsString(tc));
        total += parse_usd(tc->valuestring);
        cJSON *iv = cJSON_GetObjectItemCaseSensitive(j, "invocations");
        assert_true(cJSON_IsNumber(iv));
        inv += (int64_t)iv->valuedouble;
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "date")->valuestring, "2025-03-10");
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "key_id")));
        cJSON_Delete(j);
        lines++;
        l = nl + 1;
    }
    assert_int_equal(lines, rows);
    size_t nday = 0;
    for (size_t i = 0; i < n; i++)
        if (ev[i].started_ms < D2) want += ev[i].cost_total, nday++;
    assert_int_equal(total, want);
    assert_int_equal(inv, nday);
    free(jsonl);
    tg_store_close(st);
}

/* ---- 7. the schedule ------------------------------------------------------------------ */

static void test_report_catch_up(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[30];
    size_t n = make_events(f, ev, 30);
    assert_int_equal(tg_store_usage_append(st, ev, n), 0);
    tg_reportjob_opts_t o = {.dir = f->reports, .refresh_s = 1, .daily_at_min = 60};
    int days = -1;

    /* Day 1 ends at D2; it is due an hour later. */
    assert_int_equal(tg_report_catch_up(st, &o, D2 + 60 * MIN_MS - 1, &days), 0);
    assert_int_equal(days, 0);
    assert_false(exists(f->reports, "succeed", "2025-03-10.csv"));
    assert_int_equal(tg_report_catch_up(st, &o, D2 + 60 * MIN_MS, &days), 0);
    assert_int_equal(days, 1);
    assert_true(exists(f->reports, "succeed", "2025-03-10.csv"));
    assert_false(exists(f->reports, "succeed", "2025-03-11.csv"));
    /* Nothing new and nothing newly due. */
    assert_int_equal(tg_report_catch_up(st, &o, D2 + 23 * TG_HOUR_MS, &days), 0);
    assert_int_equal(days, 0);
    /* Day 2 falls due. */
    assert_int_equal(tg_report_catch_up(st, &o, D2 + TG_DAY_MS + 60 * MIN_MS, &days), 0);
    assert_int_equal(days, 1);
    assert_true(exists(f->reports, "succeed", "2025-03-11.csv"));
    assert_int_equal(tg_report_catch_up(st, &o, D2 + TG_DAY_MS + 60 * MIN_MS, &days), 0);
    assert_int_equal(days, 0);

    /* A late event for day 1: written again, with the event in it. */
    char *before = slurp(f->reports, "succeed", "2025-03-10.csv", NULL);
    tg_usage_event_t late;
    make_event(f, &late, D1 + 2 * TG_HOUR_MS, "u9", "green", "key_z", "m-z", "ap-south-1");
    assert_int_equal(tg_store_usage_append(st, &late, 1), 0);
    assert_int_equal(tg_report_catch_up(st, &o, D2 + TG_DAY_MS + 61 * MIN_MS, &days), 0);
    assert_int_equal(days, 1);
    char *after = slurp(f->reports, "succeed", "2025-03-10.csv", NULL);
    assert_int_equal(count_lines(after), count_lines(before) + 1);
    assert_non_null(strstr(after, "\ngreen,m-z,"));
    free(before);
    free(after);
    /* days may be NULL. */
    assert_int_equal(tg_report_catch_up(st, &o, D2 + TG_DAY_MS + 61 * MIN_MS, NULL), 0);

    /* One day failing does not hold back the others. */
    make_event(f, &late, D1 + 4 * TG_HOUR_MS, "u1", "red", "key_a", "m-a", "us-east-1");
    assert_int_equal(tg_store_usage_append(st, &late, 1), 0);
    make_event(f, &late, D2 + 4 * TG_HOUR_MS, "u1", "red", "key_a", "m-a", "us-east-1");
    assert_int_equal(tg_store_usage_append(st, &late, 1), 0);
    upload_rec_t up;
    memset(&up, 0, sizeof(up));
    up.fail_on = "2025-03-10";
    o.upload = upload_cb;
    o.upload_ud = &up;
    tg_log_level = TG_LOG_ERROR + 1;
    assert_true(tg_report_catch_up(st, &o, D2 + TG_DAY_MS + 61 * MIN_MS, &days) < 0);
    tg_log_level = TG_LOG_WARN;
    assert_int_equal(days, 1);
    tg_report_day_t *d = NULL;
    size_t nd = 0;
    assert_int_equal(tg_store_report_pending(st, INT64_MAX, &d, &nd), 0);
    assert_int_equal(nd, 1);
    assert_int_equal(d[0].day_ms, D1);
    free(d);
    upload_reset(&up);
    tg_store_close(st);
}

/* The schedule's thread writes the days that are due, on its own. */
static void test_reportjob_thread(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[12];
    size_t n = make_events(f, ev, 12);
    assert_int_equal(tg_store_usage_append(st, ev, n), 0);
    tg_store_close(st);
    tg_store_config_t cfg = {.driver = "sqlite", .path = f->path, .busy_timeout_ms = 5000};
    tg_reportjob_opts_t o = {.dir = f->reports, .refresh_s = 1, .daily_at_min = 30};
    tg_reportjob_t *j = NULL;
    assert_int_equal(tg_reportjob_start(&j, &cfg, &o), 0);
    assert_non_null(j);
    /* Both days are long past: written within a few refreshes. */
    for (int i = 0; i < 200 && !(exists(f->reports, "succeed", "2025-03-10.csv") &&
                                 exists(f->reports, "succeed", "2025-03-11.jsonl"));
         i++)
        usleep(50000);
    tg_reportjob_stop(j);
    assert_true(exists(f->reports, "succeed", "2025-03-10.csv"));
    assert_true(exists(f->reports, "succeed", "2025-03-11.jsonl"));
    st = open_store(f);
    tg_report_day_t *d = NULL;
    size_t nd = 0;
    assert_int_equal(tg_store_report_pending(st, INT64_MAX, &d, &nd), 0);
    assert_int_equal(nd, 0);
    free(d);
    tg_store_close(st);
    /* Stopped promptly even with a long refresh interval. */
    o.refresh_s = 3600;
    assert_int_equal(tg_reportjob_start(&j, &cfg, &o), 0);
    tg_reportjob_stop(j);
}

/* ---- 8. formats ----------------------------------------------------------------------- */

/* Parses one RFC 4180 record from *p into fields; returns the field count. */
static int csv_record(const char **p, char fields[][128], int max)
{
    const char *s = *p;
    int nf = 0;
    for (;;) {
        char *out = fields[nf];
        size_t o = 0;
        if (*s == '"') {
            s++;
            for (;;) {
                if (*s == '"' && s[1] == '"') {
                    out[o++] = '"';
                    s += 2;
                } else if (*s == '"') {
                    s++;
                    break;
                } else {
                    assert_true(*s != '\0');
                    out[o++] = *s++;
                }
            }
        } else {
            while (*s && *s != ',' && *s != '\n') {
                assert_true(*s != '"'); /* a quote only in a quoted field */
                out[o++] = *s++;
            }
        }
        out[o] = '\0';
        nf++;
        assert_true(nf < max);
        if (*s == ',') {
            s++;
            continue;
        }
        assert_int_equal(*s, '\n');
        s++;
        break;
    }
    *p = s;
    return nf;
}

/* "-12.000345" -> picodollars (exact; at most 12 decimals). */
static int64_t parse_usd(const char *s)
{
    int neg = *s == '-';
    if (neg) s++;
    int64_t whole = 0, frac = 0;
    int fd = 0;
    assert_true(*s >= '0' && *s <= '9');
    for (; *s >= '0' && *s <= '9'; s++)
        whole = whole * 10 + (*s - '0');
    if (*s == '.') {
        for (s++; *s >= '0' && *s <= '9'; s++, fd++)
            frac = frac * 10 + (*s - '0');
        assert_true(fd > 0 && fd <= 12);
    }
    assert_int_equal(*s, '\0');
    for (; fd < 12; fd++)
        frac *= 10;
    int64_t v = whole * 1000000000000LL + frac;
    return neg ? -v : v;
}

static const char *odd_team = "acme, \"west\"";

/* A small report built through the store: teams with awkward names. */
static void build_format_report(fixture_t *f, tg_store_t *st, tg_usage_event_t *ev, size_t *n,
                                tg_report_t *r, unsigned group)
{
    const char *teams[] = {odd_team, "pipe|team", "plain"};
    size_t k = 0;
    for (int i = 0; i < 9; i++) {
        make_event(f, &ev[k], D1 + (i % 2) * TG_HOUR_MS + i, "u1", teams[i % 3], "key_a",
                   i % 2 ? "m-b" : "m-a", "us-east-1");
        k++;
    }
    /* Amounts whose decimals matter. */
    ev[0].cost_input = 989200000;
    ev[0].cost_total = ev[0].cost_input + ev[0].cost_output + ev[0].cost_cache_read +
                       ev[0].cost_cache_write + ev[0].cost_images;
    *n = k;
    assert_int_equal(tg_store_usage_append(st, ev, k), 0);
    tg_rollup_query_t q = {.from_ms = D1, .to_ms = D2, .group = group};
    assert_int_equal(tg_report_build(st, &q, r), 0);
    assert_true(r->nrows > 0);
}

static void test_format_csv(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[16];
    size_t n = 0;
    tg_report_t r;
    build_format_report(f, st, ev, &n, &r, TG_GROUP_TEAM | TG_GROUP_MODEL);
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_report_write(&b, &r, TG_REPORT_CSV, -1), 0);
    const char *p = b.data;
    char(*fl)[128] = calloc(32, 128);
    int nh = csv_record(&p, fl, 32);
    /* Dimensions not grouped on are left out; no period column. */
    assert_string_equal(fl[0], "team_id");
    assert_string_equal(fl[1], "model_id");
    int col_total = -1, col_inv = -1;
    for (int i = 0; i < nh; i++) {
        assert_string_not_equal(fl[i], "unit");
        assert_string_not_equal(fl[i], "region");
        assert_string_not_equal(fl[i], "date");
        if (strcmp(fl[i], "total_cost") == 0) col_total = i;
        if (strcmp(fl[i], "invocations") == 0) col_inv = i;
    }
    assert_true(col_total > 0 && col_inv > 0);
    int64_t total = 0, inv = 0;
    int odd_rows = 0;
    size_t rows = 0;
    while (*p) {
        char(*v)[128] = calloc(32, 128);
        assert_int_equal(csv_record(&p, v, 32), nh);
        if (strcmp(v[0], odd_team) == 0) odd_rows++;
        total += parse_usd(v[col_total]);
        inv += strtoll(v[col_inv], NULL, 10);
        free(v);
        rows++;
    }
    assert_int_equal(rows, r.nrows);
    assert_int_equal(odd_rows, 2); /* two models */
    /* RFC 4180: the field quoted, the quote doubled. */
    assert_non_null(strstr(b.data, "\n\"acme, \"\"west\"\"\",m-"));
    int64_t want = 0;
    for (size_t i = 0; i < n; i++)
        want += ev[i].cost_total;
    assert_int_equal(total, want);
    assert_int_equal(inv, n);
    assert_int_equal(r.totals.cost_total, want);
    free(fl);
    tg_buf_free(&b);
    tg_report_free(&r);
    tg_store_close(st);
}

static void test_format_json(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[16];
    size_t n = 0;
    tg_report_t r;
    build_format_report(f, st, ev, &n, &r, TG_GROUP_TEAM | TG_GROUP_DAY | TG_GROUP_KEY);
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_report_write(&b, &r, TG_REPORT_JSON, -1), 0);
    cJSON *j = cJSON_Parse(b.data);
    assert_non_null(j);
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "currency")->valuestring, "USD");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "from")->valuestring,
                        "2025-03-10T00:00:00Z");
    assert_string_equal(cJSON_GetObjectItemCaseSensitive(j, "to")->valuestring,
                        "2025-03-11T00:00:00Z");
    cJSON *gb = cJSON_GetObjectItemCaseSensitive(j, "group_by");
    assert_int_equal(cJSON_GetArraySize(gb), 3);
    cJSON *rows = cJSON_GetObjectItemCaseSensitive(j, "rows");
    assert_int_equal(cJSON_GetArraySize(rows), r.nrows);
    static const char *money[] = {"input_cost",       "output_cost", "cache_read_cost",
                                  "cache_write_cost", "image_cost",  "total_cost"};
    static const char *counts[] = {"input_tokens", "output_tokens", "invocations",
                                   "cache_read_tokens", "failed_invocations"};
    int64_t sums[6] = {0};
    int seen_odd = 0;
    cJSON *row;
    cJSON_ArrayForEach(row, rows)
    {
        for (int i = 0; i < 6; i++) {
            cJSON *m = cJSON_GetObjectItemCaseSensitive(row, money[i]);
            assert_true(cJSON_IsString(m));
            sums[i] += parse_usd(m->valuestring);
        }
        for (int i = 0; i < 5; i++)
            assert_true(cJSON_IsNumber(cJSON_GetObjectItemCaseSensitive(row, counts[i])));
        const char *team = cJSON_GetObjectItemCaseSensitive(row, "team_id")->valuestring;
        seen_odd += strcmp(team, odd_team) == 0;
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(row, "date")->valuestring,
                            "2025-03-10");
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(row, "key_id")->valuestring, "key_a");
        assert_string_equal(cJSON_GetObjectItemCaseSensitive(row, "key_prefix")->valuestring, "");
        assert_null(cJSON_GetObjectItemCaseSensitive(row, "model_id"));
        assert_null(cJSON_GetObjectItemCaseSensitive(row, "unit"));
    }
    assert_int_equal(seen_odd, 1);
    /* Totals: the sum of the rows, and of the events, to the picodollar. */
    cJSON *tot = cJSON_GetObjectItemCaseSensitive(j, "totals");
    assert_non_null(tot);
    assert_null(cJSON_GetObjectItemCaseSensitive(tot, "team_id"));
    int64_t want[6] = {0};
    for (size_t i = 0; i < n; i++) {
        want[0] += ev[i].cost_input;
        want[1] += ev[i].cost_output;
        want[2] += ev[i].cost_cache_read;
        want[3] += ev[i].cost_cache_write;
        want[4] += ev[i].cost_images;
        want[5] += ev[i].cost_total;
    }
    for (int i = 0; i < 6; i++) {
        cJSON *m = cJSON_GetObjectItemCaseSensitive(tot, money[i]);
        assert_true(cJSON_IsString(m));
        assert_int_equal(parse_usd(m->valuestring), sums[i]);
        assert_int_equal(sums[i], want[i]);
    }
    assert_int_equal(cJSON_GetObjectItemCaseSensitive(tot, "invocations")->valuedouble, n);
    cJSON_Delete(j);

    /* Rounded: still strings, at most 2 decimals. */
    tg_buf_reset(&b);
    assert_int_equal(tg_report_write(&b, &r, TG_REPORT_JSON, 2), 0);
    j = cJSON_Parse(b.data);
    assert_non_null(j);
    cJSON_ArrayForEach(row, cJSON_GetObjectItemCaseSensitive(j, "rows"))
    {
        const char *v = cJSON_GetObjectItemCaseSensitive(row, "total_cost")->valuestring;
        const char *dot = strchr(v, '.');
        assert_true(!dot || strlen(dot + 1) <= 2);
    }
    cJSON_Delete(j);

    /* JSON lines: one object per row, nothing else. */
    tg_buf_reset(&b);
    assert_int_equal(tg_report_write(&b, &r, TG_REPORT_JSONL, -1), 0);
    assert_int_equal(count_lines(b.data), r.nrows);
    char *copy = strdup(b.data);
    size_t nl = 0;
    for (char *save = NULL, *l = strtok_r(copy, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        cJSON *o = cJSON_Parse(l);
        assert_true(cJSON_IsObject(o));
        assert_true(cJSON_IsString(cJSON_GetObjectItemCaseSensitive(o, "total_cost")));
        cJSON_Delete(o);
        nl++;
    }
    assert_int_equal(nl, r.nrows);
    free(copy);
    assert_int_equal(tg_report_write(&b, &r, 99, -1), TG_EINVAL);
    tg_buf_free(&b);
    tg_report_free(&r);
    tg_store_close(st);
}

/* Splits a Markdown table line into cells at the pipes that are not
 * escaped (a backslash escapes the next character, as in GFM). */
static int md_cells(const char *l)
{
    int pipes = 0;
    for (const char *p = l; *p && *p != '\n'; p++) {
        if (*p == '\\' && p[1]) {
            p++;
            continue;
        }
        pipes += *p == '|';
    }
    return pipes - 1;
}

static void test_format_markdown(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[16];
    size_t n = 0;
    tg_report_t r;
    build_format_report(f, st, ev, &n, &r, TG_GROUP_TEAM | TG_GROUP_HOUR);
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_report_write(&b, &r, TG_REPORT_MARKDOWN, 5), 0);
    assert_non_null(strstr(b.data, "| pipe\\|team |"));
    assert_null(strstr(b.data, " pipe|team"));
    int cells = md_cells(b.data);
    assert_true(cells > 3);
    size_t lines = 0;
    for (const char *l = b.data; *l; l = strchr(l, '\n') + 1) {
        assert_int_equal(l[0], '|');
        assert_int_equal(md_cells(l), cells);
        lines++;
    }
    assert_int_equal(lines, r.nrows + 2); /* header, alignment, rows */
    /* Numbers right-aligned, text left. */
    const char *align = strchr(b.data, '\n') + 1;
    assert_int_equal(strncmp(align, "|---|---:|", 10), 0);
    assert_non_null(strstr(b.data, "| hour |\n"));
    assert_non_null(strstr(b.data, " 2025-03-10T01:00Z |\n"));
    tg_buf_free(&b);
    tg_report_free(&r);
    tg_store_close(st);
}

/* Checks a table's layout: every numeric column ends at the same place on
 * every line, and the TOTAL line is there. Returns the TOTAL line. */
static const char *check_table(const char *t, int ntext)
{
    /* The header's cells and where each ends. */
    const char *nl = strchr(t, '\n');
    assert_non_null(nl);
    size_t hlen = (size_t)(nl - t);
    size_t ends[32];
    int ncols = 0;
    for (size_t i = 0; i < hlen; i++)
        if (t[i] != ' ' && (i + 1 == hlen || t[i + 1] == ' ')) ends[ncols++] = i + 1;
    assert_true(ncols > ntext);
    const char *total = NULL;
    int rules = 0;
    for (const char *l = nl + 1; *l; l = strchr(l, '\n') + 1) {
        size_t len = (size_t)(strchr(l, '\n') - l);
        if (l[0] == '-') {
            for (size_t i = 0; i < len; i++)
                assert_int_equal(l[i], '-');
            assert_int_equal(len, hlen);
            rules++;
            continue;
        }
        if (strncmp(l, "TOTAL", 5) == 0) total = l;
        /* The last column is a number: every line is as long as the header. */
        assert_int_equal(len, hlen);
        for (int c = ntext; c < ncols; c++) {
            assert_true(l[ends[c] - 1] != ' ');
            assert_true(ends[c] == len || l[ends[c]] == ' ');
        }
    }
    assert_int_equal(rules, 2);
    assert_non_null(total);
    return total;
}

static void test_format_table(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[16];
    size_t n = 0;
    tg_report_t r;
    build_format_report(f, st, ev, &n, &r, TG_GROUP_TEAM | TG_GROUP_MODEL);
    tg_buf_t b;
    tg_buf_init(&b, 0);
    for (int decimals = -1; decimals <= 5; decimals += 3) {
        tg_buf_reset(&b);
        assert_int_equal(tg_report_write(&b, &r, TG_REPORT_TABLE, decimals), 0);
        assert_int_equal(strncmp(b.data, "team_id", 7), 0);
        const char *total = check_table(b.data, 2);
        assert_int_equal(count_lines(b.data), r.nrows + 4);
        /* The TOTAL line shows the exact (or rounded exact) total. */
        char want[40], line[512];
        assert_true(tg_usd_format_round(r.totals.cost_total, decimals, want, sizeof(want)) > 0);
        snprintf(line, sizeof(line), "%.*s", (int)(strchr(total, '\n') - total), total);
        assert_non_null(strstr(line, want));
    }
    tg_report_free(&r);

    /* Grouped by day: the period column comes first and carries TOTAL. */
    tg_rollup_query_t q = {.from_ms = D1, .to_ms = D2, .group = TG_GROUP_DAY};
    assert_int_equal(tg_report_build(st, &q, &r), 0);
    tg_buf_reset(&b);
    assert_int_equal(tg_report_write(&b, &r, TG_REPORT_TABLE, 2), 0);
    assert_int_equal(strncmp(b.data, "date", 4), 0);
    check_table(b.data, 1);
    tg_buf_free(&b);
    tg_report_free(&r);
    tg_store_close(st);
}

/* With no dimension grouped on (group 0, "one line for everything") every
 * table column is numeric: the totals line still needs its "TOTAL" label
 * (it once came out as the row repeated under the rule). */
static void test_format_table_ungrouped(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[16];
    size_t n = 0;
    tg_report_t r;
    build_format_report(f, st, ev, &n, &r, 0);
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_report_write(&b, &r, TG_REPORT_TABLE, -1), 0);
    assert_non_null(strstr(b.data, "TOTAL"));
    tg_buf_free(&b);
    tg_report_free(&r);
    tg_store_close(st);
}

/* A backslash in a cell is escaped too, else "a\|b" ("a\\|b" once '|' is
 * escaped) would split the cell in GFM. */
static void test_format_markdown_backslash(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_usage_event_t ev[2];
    make_event(f, &ev[0], D1, "u1", "a\\|b", "key_a", "m-a", "us-east-1");
    make_event(f, &ev[1], D1, "u1", "plain", "key_a", "m-a", "us-east-1");
    assert_int_equal(tg_store_usage_append(st, ev, 2), 0);
    tg_rollup_query_t q = {.from_ms = D1, .to_ms = D2, .group = TG_GROUP_TEAM};
    tg_report_t r;
    assert_int_equal(tg_report_build(st, &q, &r), 0);
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_report_write(&b, &r, TG_REPORT_MARKDOWN, -1), 0);
    int cells = md_cells(b.data);
    for (const char *l = b.data; *l; l = strchr(l, '\n') + 1)
        assert_int_equal(md_cells(l), cells);
    tg_buf_free(&b);
    tg_report_free(&r);
    tg_store_close(st);
}

static void test_format_flagged(void **state)
{
    tg_rollup_row_t rows[2];
    memset(rows, 0, sizeof(rows));
    rows[0].period_ms = D1;
    snprintf(rows[0].team, sizeof(rows[0].team), "red");
    rows[0].invocations = 4;
    rows[1].period_ms = D1;
    snprintf(rows[1].team, sizeof(rows[1].team), "blue");
    snprintf(rows[1].model, sizeof(rows[1].model), "m-x");
    rows[1].invocations = 5;
    rows[1].unpriced = 3;
    rows[1].input_tokens = 42;
    tg_report_t r = {.from_ms = D1, .to_ms = D2, .group = TG_GROUP_ALL, .rows = rows, .nrows = 1};
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_report_write_flagged(&b, &r), 0);
    assert_int_equal(b.len, 0); /* nothing flagged: nothing at all */
    r.nrows = 2;
    assert_int_equal(tg_report_write_flagged(&b, &r), 0);
    assert_non_null(strstr(b.data, "\nunpriced date=2025-03-10 unit= team=blue key_prefix= "
                                   "model=m-x region= invocations=5 unpriced_invocations=3 "
                                   "input_tokens=42 "));
    assert_null(strstr(b.data, "team=red"));
    tg_buf_free(&b);
}

/* ---- 9. money ------------------------------------------------------------------------ */

static void expect_usd(int64_t pico, int decimals, const char *want)
{
    char out[64];
    int n = tg_usd_format_round(pico, decimals, out, sizeof(out));
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
}

/* Near the limits: either a refusal or the right answer, never a wrap. */
static void expect_usd_or_toobig(int64_t pico, int decimals, const char *want)
{
    char out[64] = "";
    int n = tg_usd_format_round(pico, decimals, out, sizeof(out));
    if (n == TG_ETOOBIG) return;
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
}

static void test_usd_format_round(void **state)
{
    /* Exact: trailing zeros trimmed. */
    expect_usd(989200000, -1, "0.0009892");
    expect_usd(1230000000000, -1, "1.23");
    expect_usd(1000000000000, -1, "1");
    expect_usd(1, -1, "0.000000000001");
    expect_usd(0, -1, "0");
    expect_usd(-57375000000, -1, "-0.057375");
    expect_usd(123, 12, "0.000000000123");
    /* Half away from zero at 5 places. */
    expect_usd(989200000, 5, "0.00099");
    expect_usd(57375000000, 5, "0.05738");
    expect_usd(11901600000, 5, "0.0119");
    expect_usd(-989200000, 5, "-0.00099");
    expect_usd(-57375000000, 5, "-0.05738");
    expect_usd(5000000, 5, "0.00001");
    expect_usd(4999999, 5, "0");
    expect_usd(-5000000, 5, "-0.00001");
    expect_usd(-4999999, 5, "0");
    expect_usd(0, 5, "0");
    expect_usd(15, 11, "0.00000000002");
    /* 0 places: halves go away from zero, not to even. */
    expect_usd(1500000000000, 0, "2");
    expect_usd(2500000000000, 0, "3");
    expect_usd(-2500000000000, 0, "-3");
    expect_usd(1499999999999, 0, "1");
    expect_usd(-1499999999999, 0, "-1");
    expect_usd(499999999999, 0, "0");
    expect_usd(12000000000000, 0, "12");
    /* The limits. */
    expect_usd(INT64_MAX, -1, "9223372.036854775807");
    expect_usd(INT64_MIN, -1, "-9223372.036854775808");
    expect_usd(INT64_MAX, 5, "9223372.03685");
    expect_usd(INT64_MIN, 5, "-9223372.03685");
    expect_usd(INT64_MAX, 0, "9223372");
    expect_usd(INT64_MIN, 0, "-9223372");
    expect_usd_or_toobig(INT64_MAX, 2, "9223372.04");
    expect_usd_or_toobig(INT64_MIN, 2, "-9223372.04");
    expect_usd_or_toobig(INT64_MAX, 3, "9223372.037");
    expect_usd_or_toobig(INT64_MIN, 3, "-9223372.037");
    expect_usd_or_toobig(INT64_MAX - 1, 11, "9223372.03685477581");
    /* Too small a buffer. */
    char small[4];
    assert_int_equal(tg_usd_format_round(989200000, 5, small, sizeof(small)), TG_ETOOBIG);
    char exact[8];
    assert_int_equal(tg_usd_format_round(989200000, 5, exact, sizeof(exact)), 7);
    assert_string_equal(exact, "0.00099");
}

/* ---- 10. parsing ---------------------------------------------------------------------- */

static void test_parse_group_format(void **state)
{
    unsigned g = 0;
    char err[128] = "";
    assert_int_equal(tg_report_parse_group("team,model", &g, err, sizeof(err)), 0);
    assert_int_equal(g, TG_GROUP_TEAM | TG_GROUP_MODEL);
    assert_int_equal(tg_report_parse_group(" team , day ", &g, err, sizeof(err)), 0);
    assert_int_equal(g, TG_GROUP_TEAM | TG_GROUP_DAY);
    assert_int_equal(tg_report_parse_group("date,hour,unit,key,region", &g, err, sizeof(err)), 0);
    assert_int_equal(g,
                     TG_GROUP_DAY | TG_GROUP_HOUR | TG_GROUP_UNIT | TG_GROUP_KEY | TG_GROUP_REGION);
    assert_int_equal(tg_report_parse_group("team_id,model_id", &g, err, sizeof(err)), 0);
    assert_int_equal(g, TG_GROUP_TEAM | TG_GROUP_MODEL);
    assert_int_equal(tg_report_parse_group("team,team", &g, err, sizeof(err)), 0);
    assert_int_equal(g, TG_GROUP_TEAM);
    assert_int_equal(tg_report_parse_group("", &g, err, sizeof(err)), 0);
    assert_int_equal(g, 0);
    g = 77;
    assert_int_equal(tg_report_parse_group("team,bogus", &g, err, sizeof(err)), TG_EINVAL);
    assert_int_equal(g, 77);
    assert_non_null(strstr(err, "\"bogus\""));
    assert_int_equal(tg_report_parse_group("Team", &g, err, sizeof(err)), TG_EINVAL);
    assert_int_equal(tg_report_parse_group("team,,model", &g, err, sizeof(err)), TG_EINVAL);
    assert_int_equal(tg_report_parse_group("teams", &g, err, sizeof(err)), TG_EINVAL);
    assert_int_equal(tg_report_parse_group("tea", &g, err, sizeof(err)), TG_EINVAL);
    char tiny[8];
    assert_int_equal(tg_report_parse_group("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                                           &g, tiny, sizeof(tiny)),
                     TG_EINVAL);
    assert_true(strlen(tiny) < sizeof(tiny));

    assert_int_equal(tg_report_parse_format("table"), TG_REPORT_TABLE);
    assert_int_equal(tg_report_parse_format("csv"), TG_REPORT_CSV);
    assert_int_equal(tg_report_parse_format("json"), TG_REPORT_JSON);
    assert_int_equal(tg_report_parse_format("jsonl"), TG_REPORT_JSONL);
    assert_int_equal(tg_report_parse_format("markdown"), TG_REPORT_MARKDOWN);
    assert_int_equal(tg_report_parse_format("md"), TG_REPORT_MARKDOWN);
    assert_int_equal(tg_report_parse_format("CSV"), -1);
    assert_int_equal(tg_report_parse_format("xml"), -1);
    assert_int_equal(tg_report_parse_format(""), -1);
    assert_int_equal(tg_report_parse_format(NULL), -1);
}

static void test_parse_day(void **state)
{
    int64_t d = 0;
    assert_int_equal(tg_report_parse_day("2025-03-10", &d), 0);
    assert_int_equal(d, D1);
    assert_int_equal(tg_report_parse_day("2024-02-29", &d), 0);
    assert_int_equal(d, 1709164800000LL);
    assert_int_equal(tg_report_parse_day("2000-02-29", &d), 0);
    assert_int_equal(d, 951782400000LL);
    assert_int_equal(tg_report_parse_day("1970-01-01", &d), 0);
    assert_int_equal(d, 0);
    assert_int_equal(tg_report_parse_day("2025-12-31", &d), 0);
    assert_int_equal(d, 1767139200000LL);
    d = 7;
    static const char *bad[] = {
        "2025-02-29", "2100-02-29", "2025-13-01", "2025-00-10", "2025-04-31",  "2025-04-00",
        "2025-1-01",  "2025-01-1",  "25-01-01",   "2025/01/01", "2025-01-01x", "2025-01-0a",
        "+025-01-01", "2025-+1-01", "1969-12-31", "",           " 2025-01-01", "2025-01-32"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (tg_report_parse_day(bad[i], &d) != TG_EINVAL) fail_msg("accepted \"%s\"", bad[i]);
    }
    assert_int_equal(tg_report_parse_day(NULL, &d), TG_EINVAL);
    assert_int_equal(d, 7);

    char out[16];
    tg_report_format_day(1709164800000LL + 23 * TG_HOUR_MS, out, sizeof(out));
    assert_string_equal(out, "2024-02-29");
    tg_report_format_day(D2, out, sizeof(out));
    assert_string_equal(out, "2025-03-11");
}

static void expect_query(const char *query, const char *name, const char *want)
{
    char out[64];
    memset(out, 'x', sizeof(out));
    int n = tg_query_get(query, name, out, sizeof(out));
    assert_int_equal(n, (int)strlen(want));
    assert_string_equal(out, want);
}

static void test_query_get(void **state)
{
    const char *q = "from=2025-03-10&team=a%20b&model=m+x&sep=%2C%26%3D%2B&flag&empty=&hex=%6a%4A";
    expect_query(q, "from", "2025-03-10");
    expect_query(q, "team", "a b");
    expect_query(q, "model", "m x");
    expect_query(q, "sep", ",&=+");
    expect_query(q, "flag", "");
    expect_query(q, "empty", "");
    expect_query(q, "hex", "jJ");
    expect_query("a=b=c", "a", "b=c");
    expect_query("a=%41", "a", "A");
    /* The first of repeated names; a longer or shorter name is another. */
    expect_query("a=1&a=2", "a", "1");
    expect_query("ab=1&a=2&b=3", "a", "2");
    expect_query("a=1&&b=2", "b", "2");
    char out[8];
    assert_int_equal(tg_query_get(q, "to", out, sizeof(out)), TG_ENOTFOUND);
    assert_int_equal(tg_query_get(q, "tea", out, sizeof(out)), TG_ENOTFOUND);
    assert_int_equal(tg_query_get("", "a", out, sizeof(out)), TG_ENOTFOUND);
    assert_int_equal(tg_query_get(NULL, "a", out, sizeof(out)), TG_ENOTFOUND);
    /* Bad escapes and encoded NULs. */
    static const char *bad[] = {"a=%G1", "a=%1G", "a=%4",    "a=%",
                                "a=x%2", "a=%00", "a=x%00y", "a=%%41"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (tg_query_get(bad[i], "a", out, sizeof(out)) != TG_EINVAL)
            fail_msg("accepted \"%s\"", bad[i]);
    /* A bad escape in another parameter does not matter. */
    expect_query("b=%G1&a=ok", "a", "ok");
    /* out's size: the value and its NUL. */
    char four[4];
    assert_int_equal(tg_query_get("a=abc", "a", four, sizeof(four)), 3);
    assert_string_equal(four, "abc");
    assert_int_equal(tg_query_get("a=abcd", "a", four, sizeof(four)), TG_ETOOBIG);
    assert_int_equal(tg_query_get("a=%41%42%43%44", "a", four, sizeof(four)), TG_ETOOBIG);
    assert_int_equal(tg_query_get("a=%41%42%43", "a", four, sizeof(four)), 3);
    assert_string_equal(four, "ABC");
}

/* ---- 11. files --------------------------------------------------------------------------- */

static void test_files(void **state)
{
    fixture_t *f = *state;
    char dir[256], path[320], other[320];
    snprintf(dir, sizeof(dir), "%s/x/y/z", f->dir);
    assert_int_equal(tg_mkdirs(dir, 0750), 0);
    struct stat sb;
    assert_int_equal(stat(dir, &sb), 0);
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(tg_mkdirs(dir, 0750), 0); /* already there */
    snprintf(path, sizeof(path), "%s/x/y/", f->dir);
    assert_int_equal(tg_mkdirs(path, 0750), 0); /* a trailing slash */

    /* Replaces the file whole; no temporary left beside it. */
    snprintf(path, sizeof(path), "%s/report.csv", dir);
    assert_int_equal(tg_write_file_atomic(path, "old contents, longer\n", 21), 0);
    assert_int_equal(tg_write_file_atomic(path, "new\n", 4), 0);
    size_t len = 0;
    char *b = tg_read_file(path, 1024, &len);
    assert_non_null(b);
    assert_int_equal(len, 4);
    assert_memory_equal(b, "new\n", 4);
    free(b);
    assert_int_equal(tg_write_file_atomic(path, "", 0), 0);
    assert_int_equal(stat(path, &sb), 0);
    assert_int_equal(sb.st_size, 0);
    /* The directory holds the file and nothing else. */
    DIR *d = opendir(dir);
    int entries = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    assert_int_equal(entries, 1);

    /* Into a directory that does not exist: an error, nothing created. */
    snprintf(other, sizeof(other), "%s/missing/file", f->dir);
    assert_int_equal(tg_write_file_atomic(other, "x", 1), TG_EIO);
    snprintf(other, sizeof(other), "%s/missing", f->dir);
    assert_int_equal(stat(other, &sb), -1);

    /* A regular file where a directory must be. */
    snprintf(other, sizeof(other), "%s/under/file/sub", dir);
    snprintf(path, sizeof(path), "%s/under", dir);
    assert_int_equal(tg_mkdirs(path, 0750), 0);
    snprintf(path, sizeof(path), "%s/under/file", dir);
    assert_int_equal(tg_write_file_atomic(path, "x", 1), 0);
    errno = 0;
    assert_int_equal(tg_mkdirs(other, 0750), TG_EIO);
    assert_int_equal(errno, ENOTDIR);
    errno = 0;
    assert_int_equal(tg_mkdirs(path, 0750), TG_EIO); /* the file itself */
    assert_int_equal(errno, ENOTDIR);
}

/* ---- 12. admin keys ------------------------------------------------------------------------ */

static void test_admin_keys(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    int64_t count = -1;
    assert_int_equal(tg_store_admin_key_count(st, &count), 0);
    assert_int_equal(count, 0);

    tg_key_t a;
    memset(&a, 0, sizeof(a));
    char secret[TG_KEY_SECRET_MAX];
    assert_int_equal(tg_admin_key_generate(&a, secret, sizeof(secret)), 0);
    assert_int_equal(strncmp(secret, "tga_", 4), 0);
    assert_int_equal(strlen(secret), 4 + 43);
    assert_int_equal(strncmp(a.id, "adm_", 4), 0);
    uint8_t h[32];
    tg_key_hash(secret, strlen(secret), h);
    assert_memory_equal(h, a.hash, 32);
    assert_int_equal(tg_store_admin_key_check(st, a.hash), TG_EAUTH);
    assert_int_equal(tg_store_admin_key_insert(st, &a), 0);
    assert_int_equal(tg_store_admin_key_check(st, a.hash), 0);
    assert_int_equal(tg_store_admin_key_insert(st, &a), TG_EEXIST);

    /* Another hash, and a tenant key's hash, are not admin keys. */
    uint8_t other[32];
    memcpy(other, a.hash, 32);
    other[31] ^= 1;
    assert_int_equal(tg_store_admin_key_check(st, other), TG_EAUTH);
    tg_key_t t;
    memset(&t, 0, sizeof(t));
    char tsecret[TG_KEY_SECRET_MAX];
    assert_int_equal(tg_key_generate(&t, tsecret, sizeof(tsecret)), 0);
    assert_int_equal(strncmp(tsecret, "tg_", 3), 0);
    snprintf(t.team, sizeof(t.team), "red");
    assert_int_equal(tg_store_key_insert(st, &t), 0);
    assert_int_equal(tg_store_admin_key_check(st, t.hash), TG_EAUTH);
    /* Nor is an admin key a tenant key. */
    tg_key_t *ks = NULL;
    size_t nk = 0;
    assert_int_equal(tg_store_keys_list(st, &ks, &nk), 0);
    assert_int_equal(nk, 1);
    assert_string_equal(ks[0].id, t.id);
    free(ks);

    /* A revoked one does not count and does not authenticate; an expired
     * one does not authenticate (its count: test_admin_key_count_expired). */
    tg_key_t rv, ex, ok2;
    memset(&rv, 0, sizeof(rv));
    memset(&ex, 0, sizeof(ex));
    memset(&ok2, 0, sizeof(ok2));
    assert_int_equal(tg_admin_key_generate(&rv, secret, sizeof(secret)), 0);
    assert_int_equal(tg_admin_key_generate(&ex, secret, sizeof(secret)), 0);
    assert_int_equal(tg_admin_key_generate(&ok2, secret, sizeof(secret)), 0);
    rv.revoked_ms = 1000;
    ex.expires_ms = 1000;
    assert_int_equal(tg_store_admin_key_insert(st, &rv), 0);
    assert_int_equal(tg_store_admin_key_insert(st, &ok2), 0);
    assert_int_equal(tg_store_admin_key_check(st, rv.hash), TG_EAUTH);
    assert_int_equal(tg_store_admin_key_check(st, ok2.hash), 0);
    assert_int_equal(tg_store_admin_key_count(st, &count), 0);
    assert_int_equal(count, 2);
    assert_int_equal(tg_store_admin_key_insert(st, &ex), 0);
    assert_int_equal(tg_store_admin_key_check(st, ex.hash), TG_EAUTH);
    tg_store_close(st);

    /* Persisted. */
    st = open_store(f);
    assert_int_equal(tg_store_admin_key_check(st, a.hash), 0);
    tg_store_close(st);
}

/* The count of active admin keys leaves out expired ones, which
 * tg_store_admin_key_check refuses: with only an expired key the first start
 * must still make a new one. */
static void test_admin_key_count_expired(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_key_t ex;
    memset(&ex, 0, sizeof(ex));
    char secret[TG_KEY_SECRET_MAX];
    assert_int_equal(tg_admin_key_generate(&ex, secret, sizeof(secret)), 0);
    ex.expires_ms = 1000;
    assert_int_equal(tg_store_admin_key_insert(st, &ex), 0);
    assert_int_equal(tg_store_admin_key_check(st, ex.hash), TG_EAUTH);
    int64_t count = -1;
    assert_int_equal(tg_store_admin_key_count(st, &count), 0);
    assert_int_equal(count, 0);
    tg_store_close(st);
}

/* "" is refused (it once read past its copy: a heap overflow under ASan). */
static void test_mkdirs_empty(void **state)
{
    assert_int_equal(tg_mkdirs("", 0750), TG_EINVAL);
}

int main(void)
{
    tg_log_level = TG_LOG_WARN; /* the reports' info lines are expected */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_rollup_refresh_groups, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollup_incremental, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollup_refresh_batches, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollup_refresh_turns_and_rebuild, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollup_rebuild_filters, setup, teardown),
        cmocka_unit_test_setup_teardown(test_rollup_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_totals_overflow, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_pending, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_day_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_day_jsonl, setup, teardown),
        cmocka_unit_test_setup_teardown(test_report_catch_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reportjob_thread, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_csv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_json, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_markdown, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_table, setup, teardown),
        cmocka_unit_test(test_format_flagged),
        cmocka_unit_test(test_usd_format_round),
        cmocka_unit_test(test_parse_group_format),
        cmocka_unit_test(test_parse_day),
        cmocka_unit_test(test_query_get),
        cmocka_unit_test_setup_teardown(test_files, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_keys, setup, teardown),
        /* Found by this file, fixed since. */
        cmocka_unit_test_setup_teardown(test_format_table_ungrouped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_format_markdown_backslash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_key_count_expired, setup, teardown),
        cmocka_unit_test(test_mkdirs_empty),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

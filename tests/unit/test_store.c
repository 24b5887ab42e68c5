/* test_store.c - the SQLite store and the ledger writer, against real files
 * in a fresh temporary directory per test (no mocks: the point is what
 * reaches the disk). */
#include <fcntl.h>
#include <ftw.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "core/core.h"
#include "store/store.h"
#include "tenancy/tenancy.h"

#define SCHEMA_VERSION 8 /* bump with each migration added to sqlite.c */

typedef struct {
    char dir[64];
    char path[128];
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof(*f));
    snprintf(f->dir, sizeof(f->dir), "/tmp/tg_store_XXXXXX");
    if (!mkdtemp(f->dir)) return -1;
    /* Nested: the store must create the parent directories itself. */
    snprintf(f->path, sizeof(f->path), "%s/a/b/tollgate.db", f->dir);
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
    return 0;
}

static tg_store_config_t cfg_of(const fixture_t *f)
{
    return (tg_store_config_t){.driver = "sqlite", .path = f->path, .busy_timeout_ms = 5000};
}

static tg_store_t *open_store(const fixture_t *f)
{
    tg_store_config_t cfg = cfg_of(f);
    tg_store_t *st = NULL;
    assert_int_equal(tg_store_open(&st, &cfg), 0);
    assert_non_null(st);
    return st;
}

/* Fills a text field to its last byte, so truncation would show. */
static void fill(char *dst, size_t size, const char *tag, int i)
{
    memset(dst, 0, size);
    int n = snprintf(dst, size, "%s-%d-", tag, i);
    for (size_t j = (size_t)n; j < size - 1; j++)
        dst[j] = (char)('a' + (j + (size_t)i) % 26);
}

/* Every field distinct per i, including values that need all 64 bits. */
static void make_event(tg_usage_event_t *e, int i, int64_t started_ms)
{
    memset(e, 0, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "evt_%032x", (unsigned)i);
    fill(e->request_id, sizeof(e->request_id), "req", i);
    e->started_ms = started_ms;
    e->ended_ms = started_ms + 1234;
    fill(e->unit, sizeof(e->unit), "unit", i);
    fill(e->team, sizeof(e->team), "team", i % 3);
    fill(e->key_id, sizeof(e->key_id), "key", i);
    fill(e->model, sizeof(e->model), "model", i);
    fill(e->upstream_model, sizeof(e->upstream_model), "up", i);
    fill(e->provider, sizeof(e->provider), "prov", i);
    fill(e->region, sizeof(e->region), "reg", i);
    fill(e->api, sizeof(e->api), "api", i);
    e->streamed = i & 1;
    e->status = 200 + i % 300;
    snprintf(e->outcome, sizeof(e->outcome), "%s", i % 2 ? TG_OUTCOME_OK : TG_OUTCOME_ABANDONED);
    e->input_tokens = INT64_MAX - i;
    e->output_tokens = INT64_MIN + i;
    e->cache_read_tokens = ((int64_t)1 << 40) + i;
    e->cache_write_tokens = -((int64_t)1 << 50) - i;
    e->images = i;
    e->token_source = i % 2 ? TG_TOKENS_ESTIMATED : TG_TOKENS_PROVIDER;
    e->cost_input = 123456789012345678 + i;
    e->cost_output = 987654321098765432 - i;
    e->cost_cache_read = (int64_t)i * 1000000007;
    e->cost_cache_write = -(int64_t)i * 3;
    e->cost_images = 5000000000 + i;
    e->cost_total = INT64_MAX / 2 + i;
    fill(e->price_version, sizeof(e->price_version), "pv", i);
    e->latency_us = 4000000000LL + i;
    e->ttfb_us = 7 * i;
}

static int64_t count_rows(const fixture_t *f)
{
    tg_store_t *st = open_store(f);
    int64_t n = -1;
    assert_int_equal(tg_store_usage_count(st, &n), 0);
    tg_store_close(st);
    return n;
}

/* Runs fn with stderr sent to a file, and returns what was written there
 * (malloc'ed), so tests can assert on the lost-event log and stay quiet. */
static char *capture_stderr_begin(const fixture_t *f, int *saved)
{
    char *p = malloc(160);
    snprintf(p, 160, "%s/stderr.log", f->dir);
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    fflush(stderr);
    *saved = dup(2);
    dup2(fd, 2);
    close(fd);
    return p;
}

static char *capture_stderr_end(char *path, int saved)
{
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    FILE *fp = fopen(path, "r");
    free(path);
    assert_non_null(fp);
    char *buf = calloc(1, 1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, fp);
    buf[n] = '\0';
    fclose(fp);
    return buf;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* ---- schema ------------------------------------------------------------------ */

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

static void test_open_migrates_once(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    assert_int_equal(tg_store_schema_version(st), SCHEMA_VERSION);
    assert_int_equal(tg_store_ping(st), 0);
    tg_store_close(st);

    /* Reopening applies nothing again. */
    st = open_store(f);
    assert_int_equal(tg_store_schema_version(st), SCHEMA_VERSION);
    tg_store_close(st);
    assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM schema_version"), SCHEMA_VERSION);
    /* WAL is a property of the file: another connection sees it. */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &q, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(q), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(q, 0), "wal");
    sqlite3_finalize(q);
    sqlite3_close(db);
    /* The ledger keeps its time index; the (team, time) one, which no query
     * used, was dropped by migration 8. */
    assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND"
                                      " name = 'usage_events_started'"),
                     1);
    assert_int_equal(raw_int(f->path, "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' AND"
                                      " name = 'usage_events_team_started'"),
                     0);
}

static void test_open_errors(void **state)
{
    fixture_t *f = *state;
    /* A regular file where a directory must go: cannot be created. */
    char file[128], path[192];
    snprintf(file, sizeof(file), "%s/plainfile", f->dir);
    FILE *fp = fopen(file, "w");
    assert_non_null(fp);
    fclose(fp);
    snprintf(path, sizeof(path), "%s/sub/tollgate.db", file);
    tg_store_config_t cfg = {.driver = "sqlite", .path = path};
    tg_store_t *st = (tg_store_t *)&cfg; /* must be reset to NULL */
    int saved;
    char *cap = capture_stderr_begin(f, &saved);
    assert_int_equal(tg_store_open(&st, &cfg), TG_EIO);
    assert_null(st);
    tg_writer_t *w = (tg_writer_t *)&cfg;
    assert_int_equal(tg_writer_start(&w, &cfg, 16), TG_EIO);
    assert_null(w);
    cfg.driver = "oracle";
    cfg.path = f->path;
    assert_int_equal(tg_store_open(&st, &cfg), TG_ECONFIG);
    char *log = capture_stderr_end(cap, saved);
    assert_non_null(strstr(log, "cannot create directory"));
    free(log);
}

/* ---- keys -------------------------------------------------------------------- */

static tg_key_t make_key(const char *team, int64_t created_ms)
{
    tg_key_t k;
    memset(&k, 0, sizeof(k));
    char secret[TG_KEY_SECRET_MAX];
    assert_int_equal(tg_key_generate(&k, secret, sizeof(secret)), 0);
    snprintf(k.team, sizeof(k.team), "%s", team);
    snprintf(k.name, sizeof(k.name), "name of %s", team);
    snprintf(k.unit, sizeof(k.unit), "unit1");
    k.created_ms = created_ms;
    k.expires_ms = created_ms + 86400000;
    return k;
}

static const tg_key_t *find_key(const tg_key_t *ks, size_t n, const char *id)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(ks[i].id, id) == 0) return &ks[i];
    return NULL;
}

static void test_keys(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    tg_key_t k[3] = {make_key("red", 1000), make_key("green", 2000), make_key("blue", 3000)};
    for (int i = 0; i < 3; i++)
        assert_int_equal(tg_store_key_insert(st, &k[i]), 0);

    /* Same id, or same hash: refused. */
    tg_key_t dup = make_key("x", 4000);
    memcpy(dup.id, k[0].id, sizeof(dup.id));
    assert_int_equal(tg_store_key_insert(st, &dup), TG_EEXIST);
    dup = make_key("x", 4000);
    memcpy(dup.hash, k[1].hash, sizeof(dup.hash));
    assert_int_equal(tg_store_key_insert(st, &dup), TG_EEXIST);

    tg_key_t *ks = NULL;
    size_t n = 0;
    assert_int_equal(tg_store_keys_list(st, &ks, &n), 0);
    assert_int_equal(n, 3);
    for (int i = 0; i < 3; i++)
        assert_memory_equal(&ks[i], &k[i], sizeof(tg_key_t));
    free(ks);

    /* By id, then the same again: only active keys match. */
    assert_int_equal(tg_store_key_revoke(st, k[0].id, 5000), 0);
    assert_int_equal(tg_store_key_revoke(st, k[0].id, 6000), TG_ENOTFOUND);
    /* By exact prefix; a shorter prefix is not a match. */
    char partial[8];
    snprintf(partial, sizeof(partial), "%.5s", k[2].prefix);
    assert_int_equal(tg_store_key_revoke(st, partial, 5000), TG_ENOTFOUND);
    assert_int_equal(tg_store_key_revoke(st, k[1].prefix, 7000), 0);
    assert_int_equal(tg_store_key_revoke(st, "key_doesnotexist", 5000), TG_ENOTFOUND);
    assert_int_equal(tg_store_key_revoke(st, k[2].id, 0), TG_EINVAL);

    /* Two active keys with one prefix: ambiguous, nothing revoked. */
    tg_key_t a = make_key("amb", 8000), b = make_key("amb", 9000);
    memcpy(a.prefix, "tg_SAMEPRE", TG_KEY_PREFIX_LEN);
    memcpy(b.prefix, "tg_SAMEPRE", TG_KEY_PREFIX_LEN);
    assert_int_equal(tg_store_key_insert(st, &a), 0);
    assert_int_equal(tg_store_key_insert(st, &b), 0);
    assert_int_equal(tg_store_key_revoke(st, "tg_SAMEPRE", 10000), TG_EEXIST);
    /* Once one is revoked by id, the prefix names exactly one active key. */
    assert_int_equal(tg_store_key_revoke(st, a.id, 10000), 0);
    assert_int_equal(tg_store_key_revoke(st, "tg_SAMEPRE", 11000), 0);

    assert_int_equal(tg_store_keys_list(st, &ks, &n), 0);
    assert_int_equal(n, 5);
    assert_int_equal(find_key(ks, n, k[0].id)->revoked_ms, 5000);
    assert_int_equal(find_key(ks, n, k[1].id)->revoked_ms, 7000);
    assert_int_equal(find_key(ks, n, k[2].id)->revoked_ms, 0);
    assert_int_equal(find_key(ks, n, a.id)->revoked_ms, 10000);
    assert_int_equal(find_key(ks, n, b.id)->revoked_ms, 11000);
    free(ks);
    tg_store_close(st);
}

/* ---- usage ------------------------------------------------------------------- */

static void test_usage_roundtrip(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    enum { N = 300 };
    const int64_t base = 1790000000000LL;
    tg_usage_event_t *ev = calloc(N, sizeof(*ev));
    for (int i = 0; i < N; i++)
        make_event(&ev[i], i, base + (int64_t)i * 10);
    assert_int_equal(tg_store_usage_append(st, ev, N), 0);
    int64_t count = 0;
    assert_int_equal(tg_store_usage_count(st, &count), 0);
    assert_int_equal(count, N);

    tg_usage_event_t *got = NULL;
    size_t n = 0;
    assert_int_equal(tg_store_usage_list(st, INT64_MIN, INT64_MAX, &got, &n), 0);
    assert_int_equal(n, N);
    for (int i = 0; i < N; i++) {
        assert_string_equal(got[i].id, ev[i].id);
        assert_int_equal(got[i].input_tokens, INT64_MAX - i);
        assert_int_equal(got[i].output_tokens, INT64_MIN + i);
        assert_memory_equal(&got[i], &ev[i], sizeof(tg_usage_event_t));
    }
    free(got);

    /* [from, to): from is included, to is not. */
    assert_int_equal(tg_store_usage_list(st, base + 100, base + 200, &got, &n), 0);
    assert_int_equal(n, 10);
    assert_string_equal(got[0].id, ev[10].id);
    assert_string_equal(got[9].id, ev[19].id);
    free(got);

    /* Re-appending the same ids changes nothing; new ones among them land. */
    assert_int_equal(tg_store_usage_append(st, ev, N), 0);
    assert_int_equal(tg_store_usage_count(st, &count), 0);
    assert_int_equal(count, N);
    tg_usage_event_t more[2];
    make_event(&more[0], 5, base); /* already there */
    make_event(&more[1], N + 1, base);
    assert_int_equal(tg_store_usage_append(st, more, 2), 0);
    assert_int_equal(tg_store_usage_count(st, &count), 0);
    assert_int_equal(count, N + 1);
    assert_int_equal(tg_store_usage_append(st, more, 0), 0);
    free(ev);
    tg_store_close(st);
}

/* Batches of every size from 1 to 40 go through the multi-row statements
 * (16, 8, 4, 2 and 1 rows): every row lands once, whole, in the order given
 * (rollups read the ledger in rowid order), and an id already there (one in
 * each batch, in a different place each time) is skipped inside a statement
 * without losing the rows around it. */
static void test_usage_append_sizes(void **state)
{
    fixture_t *f = *state;
    tg_store_t *st = open_store(f);
    const int64_t base = 1790000000000LL;
    enum { MAXN = 40 };
    tg_usage_event_t *ev = calloc(MAXN, sizeof(*ev));
    assert_non_null(ev);
    int next = 1; /* event 0 is the one already there */
    make_event(&ev[0], 0, base);
    assert_int_equal(tg_store_usage_append(st, ev, 1), 0);
    int64_t want = 1;
    for (int n = 1; n <= MAXN; n++) {
        int dup = (n * 5 + 3) % n; /* where the old id goes in this batch */
        for (int i = 0; i < n; i++) {
            if (i == dup && n > 1)
                make_event(&ev[i], 0, base);
            else
                make_event(&ev[i], next++, base + n);
        }
        assert_int_equal(tg_store_usage_append(st, ev, (size_t)n), 0);
        want += n > 1 ? n - 1 : n;
        int64_t count = 0;
        assert_int_equal(tg_store_usage_count(st, &count), 0);
        assert_int_equal(count, want);
    }
    free(ev);
    tg_store_close(st);

    /* In rowid order the ids are 0, 1, 2, ... with none missing or repeated,
     * and each row's fields are its own (not a neighbour's). */
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    sqlite3_stmt *q;
    assert_int_equal(sqlite3_prepare_v2(db,
                                        "SELECT id, key_id, input_tokens FROM usage_events"
                                        " ORDER BY rowid",
                                        -1, &q, NULL),
                     SQLITE_OK);
    int i = 0;
    for (; sqlite3_step(q) == SQLITE_ROW; i++) {
        tg_usage_event_t e;
        make_event(&e, i, base);
        assert_string_equal((const char *)sqlite3_column_text(q, 0), e.id);
        assert_string_equal((const char *)sqlite3_column_text(q, 1), e.key_id);
        assert_int_equal(sqlite3_column_int64(q, 2), e.input_tokens);
    }
    assert_int_equal(i, next);
    assert_int_equal(i, want);
    sqlite3_finalize(q);
    sqlite3_close(db);
}

static void test_data_version(void **state)
{
    fixture_t *f = *state;
    tg_store_t *a = open_store(f), *b = open_store(f);
    int64_t v1 = 0, v2 = 0, v3 = 0, v4 = 0;
    assert_int_equal(tg_store_data_version(a, &v1), 0);
    tg_key_t k = make_key("t", 1);
    assert_int_equal(tg_store_key_insert(b, &k), 0);
    assert_int_equal(tg_store_data_version(a, &v2), 0);
    assert_true(v2 != v1);
    /* Nothing new from elsewhere: unchanged, even after a's own commit. */
    assert_int_equal(tg_store_data_version(a, &v3), 0);
    assert_int_equal(v3, v2);
    tg_key_t k2 = make_key("t", 2);
    assert_int_equal(tg_store_key_insert(a, &k2), 0);
    assert_int_equal(tg_store_data_version(a, &v4), 0);
    assert_int_equal(v4, v2);
    tg_store_close(a);
    tg_store_close(b);
}

/* ---- writer ------------------------------------------------------------------ */

typedef struct {
    tg_writer_t *w;
    tg_writer_port_t *port;
    uv_timer_t timer;
    int n;        /* events to submit */
    int done;     /* callbacks run */
    int bad;      /* callbacks with an unexpected status or order */
    int expect;   /* expected status */
    int first_id; /* ids: first_id .. first_id + n - 1 */
    int submit_err;
} run_t;

typedef struct {
    run_t *r;
    int idx;
} cb_arg_t;

static void done_cb(void *ud, int status)
{
    cb_arg_t *a = ud;
    run_t *r = a->r;
    if (status != r->expect || a->idx != r->done) r->bad++; /* in submission order */
    if (++r->done == r->n) {
        tg_writer_port_close(r->port);
        uv_close((uv_handle_t *)&r->timer, NULL);
    }
}

static cb_arg_t *submit_args;

/* On the loop, as a worker would: reserve, then submit with a callback. */
static void submit_all(uv_timer_t *t)
{
    run_t *r = t->data;
    for (int i = 0; i < r->n; i++) {
        tg_usage_event_t e;
        make_event(&e, r->first_id + i, 1790000000000LL + i);
        int err = tg_writer_reserve(r->w);
        if (!err) err = tg_writer_submit(r->w, &e, r->port, done_cb, &submit_args[i]);
        if (err) r->submit_err = err;
    }
}

static void timeout_cb(uv_timer_t *t)
{
    fail_msg("timed out waiting for completions");
}

/* Submits n events through a port and runs the loop until all completed. */
static void run_through_port(tg_writer_t *w, run_t *r)
{
    uv_loop_t loop;
    uv_loop_init(&loop);
    r->w = w;
    submit_args = calloc((size_t)r->n, sizeof(*submit_args));
    for (int i = 0; i < r->n; i++)
        submit_args[i] = (cb_arg_t){r, i};
    assert_int_equal(tg_writer_port_create(&r->port, w, &loop), 0);
    uv_timer_init(&loop, &r->timer);
    r->timer.data = r;
    uv_timer_start(&r->timer, submit_all, 0, 0);
    uv_timer_t guard;
    uv_timer_init(&loop, &guard);
    uv_timer_start(&guard, timeout_cb, 8000, 0);
    uv_unref((uv_handle_t *)&guard); /* the loop ends when the port closes */
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&guard, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    free(submit_args);
    submit_args = NULL;
}

static atomic_size_t committed;
static void on_commit(const tg_usage_event_t *ev, size_t n, void *ud)
{
    atomic_fetch_add(&committed, n);
}

static void test_writer_1000(void **state)
{
    fixture_t *f = *state;
    tg_store_config_t cfg = cfg_of(f);
    tg_writer_t *w = NULL;
    assert_int_equal(tg_writer_start(&w, &cfg, 4096), 0);
    atomic_store(&committed, 0);
    tg_writer_on_commit(w, on_commit, NULL);
    run_t r = {.n = 1000, .expect = 0};
    run_through_port(w, &r);
    assert_int_equal(r.submit_err, 0);
    assert_int_equal(r.done, 1000);
    assert_int_equal(r.bad, 0);
    assert_true(tg_writer_last_ok_ms(w) > 0);
    tg_writer_stop(w);
    assert_int_equal(atomic_load(&committed), 1000);
    assert_int_equal(count_rows(f), 1000);
}

/* Holds the write lock from another connection, so the writer's commits
 * wait (or fail, with a short busy timeout). */
static sqlite3 *block_writes(const fixture_t *f)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open(f->path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    return db;
}

static void unblock_writes(sqlite3 *db)
{
    assert_int_equal(sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL), SQLITE_OK);
    sqlite3_close(db);
}

static void test_writer_admission(void **state)
{
    fixture_t *f = *state;
    tg_store_config_t cfg = cfg_of(f);
    tg_writer_t *w = NULL;
    assert_int_equal(tg_writer_start(&w, &cfg, 4), 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(tg_writer_reserve(w), 0);
    assert_int_equal(tg_writer_reserve(w), TG_EBUSY);
    tg_writer_unreserve(w);
    assert_int_equal(tg_writer_reserve(w), 0);
    assert_int_equal(tg_writer_reserve(w), TG_EBUSY);
    for (int i = 0; i < 4; i++)
        tg_writer_unreserve(w);

    /* The writer is stuck on the lock, so queued events stay queued. */
    sqlite3 *blocker = block_writes(f);
    tg_usage_event_t e;
    for (int i = 0; i < 4; i++) {
        make_event(&e, i, 1000 + i);
        assert_int_equal(tg_writer_submit(w, &e, NULL, NULL, NULL), 0);
    }
    int saved;
    char *cap = capture_stderr_begin(f, &saved);
    make_event(&e, 99, 1099);
    assert_int_equal(tg_writer_submit(w, &e, NULL, NULL, NULL), TG_EBUSY);
    assert_int_equal(tg_writer_reserve(w), TG_EBUSY);
    char *log = capture_stderr_end(cap, saved);
    assert_non_null(strstr(log, e.id)); /* a refused event is logged, not lost silently */
    free(log);
    unblock_writes(blocker);
    /* Slots come back as batches commit: 40 more through a queue of 4. */
    for (int i = 0; i < 40; i++) {
        make_event(&e, 100 + i, 2000 + i);
        int err, tries = 0;
        while ((err = tg_writer_reserve(w)) == TG_EBUSY && tries++ < 2000)
            sleep_ms(1);
        assert_int_equal(err, 0);
        assert_int_equal(tg_writer_submit(w, &e, NULL, NULL, NULL), 0);
    }
    tg_writer_stop(w);
    assert_int_equal(count_rows(f), 44);
}

static void test_writer_stop_flushes(void **state)
{
    fixture_t *f = *state;
    tg_store_config_t cfg = cfg_of(f);
    tg_writer_t *w = NULL;
    assert_int_equal(tg_writer_start(&w, &cfg, 10000), 0);
    /* More than one transaction's worth, queued faster than it commits. */
    for (int i = 0; i < 5000; i++) {
        tg_usage_event_t e;
        make_event(&e, i, 1000 + i);
        assert_int_equal(tg_writer_submit(w, &e, NULL, NULL, NULL), 0);
    }
    tg_writer_stop(w);
    assert_int_equal(count_rows(f), 5000);
}

static void test_writer_commit_failure(void **state)
{
    fixture_t *f = *state;
    tg_store_config_t cfg = cfg_of(f);
    cfg.busy_timeout_ms = 1;
    tg_writer_t *w = NULL;
    assert_int_equal(tg_writer_start(&w, &cfg, 64), 0);
    sqlite3 *blocker = block_writes(f);
    int saved;
    char *cap = capture_stderr_begin(f, &saved);
    run_t r = {.n = 3, .expect = TG_EBUSY, .first_id = 500};
    run_through_port(w, &r);
    char *log = capture_stderr_end(cap, saved);
    assert_int_equal(r.done, 3);
    assert_int_equal(r.bad, 0);
    /* Each lost event is one JSON line carrying the whole event. */
    int lines = 0;
    for (char *p = log; (p = strstr(p, "{\"time\"")); p++)
        lines++;
    assert_int_equal(lines, 3);
    for (int i = 0; i < 3; i++) {
        char id[64];
        snprintf(id, sizeof(id), "\"id\":\"evt_%032x\"", (unsigned)(500 + i));
        assert_non_null(strstr(log, id));
    }
    assert_non_null(strstr(log, "\"cost_total\":"));
    free(log);

    /* Once the lock is gone the same writer commits again. */
    unblock_writes(blocker);
    run_t ok = {.n = 2, .expect = 0, .first_id = 600};
    run_through_port(w, &ok);
    assert_int_equal(ok.done, 2);
    assert_int_equal(ok.bad, 0);
    tg_writer_stop(w);
    assert_int_equal(count_rows(f), 2);
}

static atomic_int ticks;
static atomic_int tick_bad;
static void on_tick(tg_store_t *st, void *ud)
{
    int64_t v;
    if (ud != &ticks || tg_store_data_version(st, &v) != 0) atomic_fetch_add(&tick_bad, 1);
    atomic_fetch_add(&ticks, 1);
}

static void test_writer_tick(void **state)
{
    fixture_t *f = *state;
    tg_store_config_t cfg = cfg_of(f);
    tg_writer_t *w = NULL;
    atomic_store(&ticks, 0);
    atomic_store(&tick_bad, 0);
    assert_int_equal(tg_writer_start(&w, &cfg, 16), 0);
    /* A long interval: only the immediate first tick can happen soon. */
    tg_writer_on_tick(w, 60000, on_tick, &ticks);
    for (int i = 0; i < 200 && atomic_load(&ticks) < 1; i++)
        sleep_ms(5);
    assert_int_equal(atomic_load(&ticks), 1);
    /* A short one: ticks keep coming. */
    tg_writer_on_tick(w, 10, on_tick, &ticks);
    for (int i = 0; i < 400 && atomic_load(&ticks) < 5; i++)
        sleep_ms(5);
    assert_true(atomic_load(&ticks) >= 5);
    assert_int_equal(atomic_load(&tick_bad), 0);
    tg_writer_stop(w);
}

static void must_not_run(void *ud, int status)
{
    (*(int *)ud)++;
}

static void test_writer_port_closed_early(void **state)
{
    fixture_t *f = *state;
    tg_store_config_t cfg = cfg_of(f);
    tg_writer_t *w = NULL;
    assert_int_equal(tg_writer_start(&w, &cfg, 1024), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    tg_writer_port_t *port = NULL;
    assert_int_equal(tg_writer_port_create(&port, w, &loop), 0);
    int called = 0;
    for (int i = 0; i < 200; i++) {
        tg_usage_event_t e;
        make_event(&e, i, 1000 + i);
        assert_int_equal(tg_writer_submit(w, &e, port, must_not_run, &called), 0);
    }
    /* Closed before its loop ever ran: completions in flight are dropped,
     * and the port is freed by whichever side lets go last (ASan checks). */
    tg_writer_port_close(port);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    tg_writer_stop(w);
    assert_int_equal(called, 0);
    assert_int_equal(count_rows(f), 200);
}

typedef struct {
    tg_writer_port_t *port;
    int called;
} closer_t;

static void close_on_first(void *ud, int status)
{
    closer_t *c = ud;
    if (c->called++ == 0) tg_writer_port_close(c->port);
}

static void test_writer_port_closed_by_callback(void **state)
{
    fixture_t *f = *state;
    tg_store_config_t cfg = cfg_of(f);
    tg_writer_t *w = NULL;
    assert_int_equal(tg_writer_start(&w, &cfg, 1024), 0);
    uv_loop_t loop;
    uv_loop_init(&loop);
    closer_t c = {0};
    assert_int_equal(tg_writer_port_create(&c.port, w, &loop), 0);
    for (int i = 0; i < 50; i++) {
        tg_usage_event_t e;
        make_event(&e, i, 1000 + i);
        assert_int_equal(tg_writer_submit(w, &e, c.port, close_on_first, &c), 0);
    }
    /* Stopping joins the thread, so all 50 completions are waiting on the
     * port before its loop runs; a port outlives its writer safely. */
    tg_writer_stop(w);
    uv_run(&loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&loop), 0);
    assert_int_equal(c.called, 1); /* the rest were dropped with the port */
    assert_int_equal(count_rows(f), 50);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_migrates_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_open_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_usage_append_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_data_version, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_1000, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_admission, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_stop_flushes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_commit_failure, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_tick, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_port_closed_early, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writer_port_closed_by_callback, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

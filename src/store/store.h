/* store.h - durable state behind one interface: keys and the usage ledger.
 *
 * Backends: SQLite (the embedded default; WAL mode, schema migrations kept in
 * a version table) now, PostgreSQL later behind the same functions. No SQL
 * leaves this folder.
 *
 * The request path never touches a tg_store_t directly: usage events go
 * through the writer (tg_writer_*), one thread that owns a store connection,
 * drains a bounded queue and commits events in batched transactions, then
 * tells each submitter, on the submitter's own loop, that its event is durable.
 * The other functions are synchronous and used by the CLI, start-up and the
 * writer thread itself. */
#ifndef TG_STORE_H
#define TG_STORE_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "tenancy/tenancy.h"
#include "usage/usage.h"

typedef struct tg_store tg_store_t;

typedef struct {
    const char *driver;   /* "sqlite" */
    const char *path;     /* database file; parent directories are created */
    int synchronous_full; /* 0: WAL + synchronous=NORMAL (survives process kill), 1: FULL */
    uint32_t busy_timeout_ms;
} tg_store_config_t;

/* Opens (creating if needed) and migrates to the current schema. */
int tg_store_open(tg_store_t **out, const tg_store_config_t *cfg);
void tg_store_close(tg_store_t *st);
int tg_store_schema_version(tg_store_t *st);
int tg_store_ping(tg_store_t *st);
/* Changes whenever another connection commits (cheap; for reload polling). */
int tg_store_data_version(tg_store_t *st, int64_t *out);

/* Keys. */
int tg_store_key_insert(tg_store_t *st, const tg_key_t *k);
/* Revokes by id or prefix; TG_ENOTFOUND when none matched. */
int tg_store_key_revoke(tg_store_t *st, const char *id_or_prefix, int64_t now_ms);
/* *out is malloc'ed (caller frees); all keys, revoked included. */
int tg_store_keys_list(tg_store_t *st, tg_key_t **out, size_t *n);

/* ---- governance: units, teams, policies ------------------------------------
 *
 * A unit (the reference's STACK_PREFIX: an organisational unit) holds teams;
 * a team (a tenant, with a cost-center label) holds keys. A key's team need
 * not have a row: such a team has no unit and no policy. Policies (gov/
 * policy.h) are kept as JSON text per entity, "unit:ID", "team:ID" or
 * "key:ID"; the store does not read them. Disabling is a time stamp, like a
 * key's revocation: 0 = enabled. */

typedef struct {
    char id[64];
    char name[64];
    int64_t created_ms, updated_ms, disabled_ms;
} tg_unit_t;

typedef struct {
    char id[64];
    char unit[64]; /* "" = none */
    char name[64];
    char cost_center[64];
    int64_t created_ms, updated_ms, disabled_ms;
} tg_team_t;

typedef struct {
    char entity[80]; /* "unit:ID", "team:ID", "key:ID" */
    char *json;      /* malloc'ed, NUL-terminated */
    int64_t updated_ms;
} tg_policy_row_t;

/* Ids: 1-63 of [A-Za-z0-9._-] (checked by the callers that take input). */
int tg_store_unit_insert(tg_store_t *st, const tg_unit_t *u); /* TG_EEXIST when taken */
/* Replaces name, updated_ms and disabled_ms of the unit u->id; TG_ENOTFOUND. */
int tg_store_unit_update(tg_store_t *st, const tg_unit_t *u);
int tg_store_units_list(tg_store_t *st, tg_unit_t **out, size_t *n); /* sorted by id */
int tg_store_team_insert(tg_store_t *st, const tg_team_t *t);
/* Replaces unit, name, cost_center, updated_ms and disabled_ms; TG_ENOTFOUND. */
int tg_store_team_update(tg_store_t *st, const tg_team_t *t);
int tg_store_teams_list(tg_store_t *st, tg_team_t **out, size_t *n); /* sorted by id */
/* Sets (json non-NULL) or removes (NULL) an entity's policy. */
int tg_store_policy_set(tg_store_t *st, const char *entity, const char *json, int64_t now_ms);
/* Every policy, sorted by entity; free with tg_store_policies_free. */
int tg_store_policies_list(tg_store_t *st, tg_policy_row_t **out, size_t *n);
void tg_store_policies_free(tg_policy_row_t *rows, size_t n);

/* Key changes. */
/* Sets name and expires_ms of key id (revoked or not); TG_ENOTFOUND. */
int tg_store_key_update(tg_store_t *st, const char *id, const char *name, int64_t expires_ms);
/* Rotation: the key's current hash (and salt) become its previous ones,
 * accepted until prev_expires_ms; hash, prefix and salt become fresh's. One
 * transaction; TG_ENOTFOUND for an unknown or revoked key. */
int tg_store_key_rotate(tg_store_t *st, const char *id, const tg_key_t *fresh,
                        int64_t prev_expires_ms);

/* What the ledger holds since since_ms, summed per key, team or unit
 * (scope: TG_GROUP_KEY, TG_GROUP_TEAM or TG_GROUP_UNIT): for loading budget
 * and quota counters at start. */
typedef struct {
    char id[64];
    int64_t requests;
    int64_t tokens; /* input + output + cache read + cache write */
    int64_t cost;   /* picodollars */
} tg_usage_total_t;
int tg_store_usage_totals(tg_store_t *st, unsigned scope, int64_t since_ms, tg_usage_total_t **out,
                          size_t *n);

/* Admin credentials (the admin API's own keys; same record, team empty). */
int tg_store_admin_key_insert(tg_store_t *st, const tg_key_t *k);
/* 0 when an active admin key has this hash, else TG_EAUTH. */
int tg_store_admin_key_check(tg_store_t *st, const uint8_t hash[32]);
int tg_store_admin_key_count(tg_store_t *st, int64_t *active);

/* Usage ledger. One transaction for the whole batch. */
int tg_store_usage_append(tg_store_t *st, const tg_usage_event_t *ev, size_t n);
/* Events with started_ms in [from_ms, to_ms), oldest first; *out malloc'ed. */
int tg_store_usage_list(tg_store_t *st, int64_t from_ms, int64_t to_ms, tg_usage_event_t **out,
                        size_t *n);
int tg_store_usage_count(tg_store_t *st, int64_t *out);

/* ---- rollups: the ledger summed per hour ----------------------------------
 *
 * One row per hour x unit x team x key x model x region, with every count and
 * cost part summed exactly (integers; an overflowing sum is an error, never a
 * wrapped number). Days, months and any other period are sums of hours.
 *
 * Rollups follow the ledger incrementally: the store remembers how far into
 * the ledger (its insertion order) it has summed, and a refresh re-sums, from
 * the events themselves, every hour that gained events since. A re-sum
 * replaces the hour's rows, so running it again gives the same rows, and an
 * event that arrives late (a long call started before the hour turned)
 * simply makes its hour be summed again. */

enum {
    TG_GROUP_UNIT = 1 << 0,
    TG_GROUP_TEAM = 1 << 1,
    TG_GROUP_KEY = 1 << 2,
    TG_GROUP_MODEL = 1 << 3,
    TG_GROUP_REGION = 1 << 4,
    TG_GROUP_DAY = 1 << 5,
    TG_GROUP_HOUR = 1 << 6,
    TG_GROUP_ALL = (1 << 7) - 1 - TG_GROUP_HOUR, /* the daily report's grain */
};

#define TG_HOUR_MS ((int64_t)3600000)
#define TG_DAY_MS  ((int64_t)86400000)

/* A summed row. Dimensions not grouped on are "" (period_ms 0). */
typedef struct {
    int64_t period_ms; /* start of the day or hour grouped on (UTC unix ms) */
    char unit[64];
    char team[64];
    char key_id[40];
    char key_prefix[16]; /* from the keys table; "" for a key it no longer has */
    char model[128];
    char region[32];
    int64_t invocations, input_tokens, output_tokens, cache_read_tokens, cache_write_tokens, images;
    int64_t cost_input, cost_output, cost_cache_read, cost_cache_write, cost_images,
        cost_total;    /* picodollars */
    int64_t unpriced;  /* events with no price for some or all of their usage */
    int64_t estimated; /* events whose tokens were estimated, not the provider's */
    int64_t failed;    /* events whose outcome was not "ok" */
} tg_rollup_row_t;

typedef struct {
    int64_t from_ms, to_ms; /* [from, to); rounded out to whole hours */
    unsigned group;         /* TG_GROUP_* */
    /* Filters, NULL or "" for any. */
    const char *unit, *team, *key_id, *model;
} tg_rollup_query_t;

/* Brings the rollups up to date with every committed event. *hours (may be
 * NULL) is how many hours were re-summed (an hour with events in two batches
 * counts twice). Bounded work per transaction, so a
 * long backlog does not hold the write lock for long. */
int tg_store_rollup_refresh(tg_store_t *st, int *hours);
/* Re-sums every hour in [from_ms, to_ms) from the events, whatever the
 * refresh has done (to re-run a past period). */
int tg_store_rollup_rebuild(tg_store_t *st, int64_t from_ms, int64_t to_ms);
/* Sums the rollups by q->group, sorted by period, unit, team, key, model,
 * region. *out malloc'ed. Call tg_store_rollup_refresh first to include the
 * latest events. */
int tg_store_rollup_query(tg_store_t *st, const tg_rollup_query_t *q, tg_rollup_row_t **out,
                          size_t *n);

/* Days (UTC) whose rollups changed since their daily report was last
 * written, oldest first, day_ms < before_ms. version says which change a
 * report covers: pass it back to tg_store_report_done. */
typedef struct {
    int64_t day_ms;
    int64_t version;
} tg_report_day_t;
int tg_store_report_pending(tg_store_t *st, int64_t before_ms, tg_report_day_t **out, size_t *n);
/* The day's current version (0 when it has no events). */
int tg_store_report_version(tg_store_t *st, int64_t day_ms, int64_t *version);
/* Records that the day's report now covers version (a later change makes it
 * pending again). */
int tg_store_report_done(tg_store_t *st, int64_t day_ms, int64_t version);

/* Log maintenance: a checkpoint that never blocks writers (SQLite: PASSIVE).
 * The writer runs it on a connection of its own, beside the commits, so the
 * automatic checkpoint at commit time finds the log already copied and only
 * restarts it. A no-op for backends without a write-ahead log of their own. */
int tg_store_checkpoint(tg_store_t *st);

/* ---- the writer thread ---------------------------------------------------- */

typedef struct tg_writer tg_writer_t;
typedef struct tg_writer_port tg_writer_port_t;

/* Called on the port's loop once the event is committed (status 0) or could
 * not be (negative TG_E*; the event was also logged to stderr as JSON). */
typedef void (*tg_writer_done_fn)(void *ud, int status);

/* Starts the writer thread on its own connection opened from cfg.
 * queue_max bounds the events queued or reserved at once. */
int tg_writer_start(tg_writer_t **out, const tg_store_config_t *cfg, size_t queue_max);
/* Commits everything queued, stops the thread, frees. */
void tg_writer_stop(tg_writer_t *w);

/* A completion port: one per worker loop, on that loop's thread. */
int tg_writer_port_create(tg_writer_port_t **out, tg_writer_t *w, uv_loop_t *loop);
/* Closes the port's uv handle; pending completions are dropped. */
void tg_writer_port_close(tg_writer_port_t *p);

/* Reserves a queue slot before a call is forwarded, so that its event can
 * always be queued later: TG_EBUSY when the queue is full (refuse the call
 * before it costs money). */
int tg_writer_reserve(tg_writer_t *w);
void tg_writer_unreserve(tg_writer_t *w);
/* Queues a copy of ev, using a reservation. cb (may be NULL) runs on the
 * port's loop after commit. A submit with a cb is made on that port's loop
 * thread, and the writer is woken when that loop would next block (one
 * wake-up and transaction for the iteration's events); without a cb, at
 * once. */
int tg_writer_submit(tg_writer_t *w, const tg_usage_event_t *ev, tg_writer_port_t *port,
                     tg_writer_done_fn cb, void *ud);
/* Last time (wall ms) the writer's connection answered; 0 if never. */
int64_t tg_writer_last_ok_ms(const tg_writer_t *w);
/* Called on the writer thread after each committed batch (for metrics). */
void tg_writer_on_commit(tg_writer_t *w, void (*fn)(const tg_usage_event_t *ev, size_t n, void *ud),
                         void *ud);
/* Called on the writer thread every interval_ms with its own store
 * connection (for reloading the tenancy snapshot when data_version moves). */
void tg_writer_on_tick(tg_writer_t *w, uint32_t interval_ms, void (*fn)(tg_store_t *st, void *ud),
                       void *ud);

#endif

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

/* Usage ledger. One transaction for the whole batch. */
int tg_store_usage_append(tg_store_t *st, const tg_usage_event_t *ev, size_t n);
/* Events with started_ms in [from_ms, to_ms), oldest first; *out malloc'ed. */
int tg_store_usage_list(tg_store_t *st, int64_t from_ms, int64_t to_ms, tg_usage_event_t **out,
                        size_t *n);
int tg_store_usage_count(tg_store_t *st, int64_t *out);

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
 * port's loop after commit. */
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

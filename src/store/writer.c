/* writer.c - the ledger writer: one thread with its own store connection that
 * commits usage events in batched transactions and tells each submitter, on
 * the submitter's own loop, when its event is durable.
 *
 * Why it is built this way:
 * - Workers never block on disk. They copy an event into the pending batch
 *   under a mutex (a memcpy); the thread wakes, swaps the whole pending batch
 *   out, and commits it. Whatever arrives while a commit runs forms the next
 *   batch, so batching grows with load and adds no delay when idle.
 * - A submit through a port does not wake the thread itself: the port's
 *   uv_prepare handle does, once per loop iteration, just before the loop
 *   would block. So the events of one iteration (every response that came
 *   in from one epoll_wait) go in one transaction, and the thread is woken
 *   once for them instead of once each. On a core shared with the worker
 *   that was most of the writer's cost: each wake was two context switches
 *   and a commit of one row (a WAL page written for the table and for each
 *   index, whatever the rows). A submit without a completion (no loop to
 *   wait for) wakes the thread at once.
 * - Memory is bounded: reserved + queued (submitted, not yet completed) never
 *   exceeds queue_max, and a worker reserves a slot before forwarding a call,
 *   so a call that has cost money can always record its event.
 * - Two pending arrays ping-pong between submitters and the thread, keeping
 *   their capacity, so steady state allocates nothing but completion nodes.
 * - Completions travel through a port (one per worker loop): a locked list
 *   plus an eventfd the loop polls, written when the list stops being empty.
 *   (Not a uv_async_t: libuv 1.44's uv_async_send sets "pending", writes its
 *   fd, then sets "done"; a worker woken by that write on the writer's core
 *   preempts the writer in between, finds the handle half-sent, spins, then
 *   sched_yield()s, and the writer runs on into its next commit: the worker
 *   waited out a whole commit, a millisecond, about once a hundred calls at
 *   a thousand calls a second.) A port is freed only when its uv handle is
 *   closed AND no completion naming it is in flight (refs), so the thread
 *   never touches freed memory, and never writes an fd that was closed.
 *
 * Locks are never nested: submit takes a port's mu, releases it, then takes
 * the writer's; the thread takes a port's mu without holding the writer's. */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "store/backend.h"
#include "store/store.h"

enum {
    BATCH_MAX = 1024, /* events per transaction: bounds a commit's latency */
    COMMIT_TRIES = 4, /* a commit is attempted this many times before giving up */
    CKPT_NICE = 10,   /* the checkpointer thread's nice value */
};
/* Backoff before retry i (ms): rides out a lock held by another process or a
 * brief I/O hiccup without stalling the queue for long. */
static const unsigned retry_delay_ms[COMMIT_TRIES - 1] = {10, 100, 500};

/* A pending completion: allocated at submit so delivery never allocates. */
typedef struct tg_writer_done {
    struct tg_writer_done *next;
    tg_writer_port_t *port; /* holds one of port->refs until delivered */
    tg_writer_done_fn cb;
    void *ud;
    int status;
} done_t;

/* How a port wakes the thread: shared by the writer and its ports, so that a
 * port that outlives its writer (tg_writer_stop before port_close) finds it
 * gone instead of signalling freed memory. */
typedef struct {
    pthread_mutex_t mu;
    tg_writer_t *w; /* guarded by mu; NULL once the writer stopped */
    size_t refs;    /* guarded by mu: the writer's one, and one per port */
} waker_t;

struct tg_writer_port {
    uv_poll_t poll;    /* data = the port; runs on the port's loop */
    int efd;           /* eventfd: readable while completions wait (closed in port_destroy) */
    uv_prepare_t kick; /* data = the port; wakes the thread before the loop blocks */
    waker_t *waker;    /* holds one of waker->refs */
    int kick_armed;    /* the loop's thread only: kick is started */
    pthread_mutex_t mu;
    /* Guarded by mu: */
    done_t *head, *tail; /* delivered, waiting for the loop to run them */
    size_t refs;         /* completions in flight that name this port */
    int closing;         /* port_close began: no more sends, drop deliveries */
    int handles_open;    /* uv handles whose close callback has not run (2, 1, 0) */
};

/* Events and their completions, index-aligned; ev is contiguous so a slice
 * can go to tg_store_usage_append as it is. */
typedef struct {
    tg_usage_event_t *ev;
    done_t **done; /* NULL entries for events submitted without a callback */
    size_t n, cap;
} batch_t;

struct tg_writer {
    pthread_t thread;
    tg_store_t *st; /* used by the thread only (and by stop after join) */
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC, for tick deadlines */
    /* Guarded by mu: */
    batch_t pending;
    size_t queue_max;
    size_t reserved; /* slots promised to callers that have not submitted yet */
    size_t queued;   /* submitted and not yet completed (pending + in commit) */
    int stopping;
    void (*commit_fn)(const tg_usage_event_t *ev, size_t n, void *ud);
    void *commit_ud;
    void (*tick_fn)(tg_store_t *st, void *ud);
    void *tick_ud;
    uint64_t tick_ns;      /* interval */
    uint64_t next_tick_ns; /* monotonic deadline; 0 = due now */
    /* Read by any thread without the lock (health checks). */
    _Atomic int64_t last_ok_ms;
    waker_t *waker;
    /* The checkpointer: its own connection, so WAL copying runs beside commits. */
    pthread_t ckpt_thread;
    tg_store_t *ckpt_st;
    int ckpt_started;
    _Atomic int ckpt_stop;
};

/* ---- helpers ----------------------------------------------------------------- */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        continue;
}

/* Grows b to hold at least one more event, never beyond max entries. */
static int batch_grow(batch_t *b, size_t max)
{
    if (b->n < b->cap) return 0;
    size_t cap = b->cap ? b->cap * 2 : 64;
    if (cap > max) cap = max;
    if (cap <= b->n) return TG_EBUSY; /* cannot happen while queued <= max */
    tg_usage_event_t *ev = realloc(b->ev, cap * sizeof(*ev));
    if (!ev) return TG_ENOMEM;
    b->ev = ev;
    done_t **done = realloc(b->done, cap * sizeof(*done));
    if (!done) return TG_ENOMEM; /* b->ev stays larger than cap: harmless */
    b->done = done;
    b->cap = cap;
    return 0;
}

static void batch_free(batch_t *b)
{
    free(b->ev);
    free(b->done);
    memset(b, 0, sizeof(*b));
}

/* Logs an event that will not reach the ledger as one JSON line on stderr,
 * so no usage is ever dropped silently; an operator can replay it. */
static void log_lost_event(const tg_usage_event_t *ev, int err)
{
    tg_buf_t b;
    tg_buf_init(&b, 0);
    char ts[32];
    tg_iso8601_ms(ts, sizeof(ts), tg_wall_ms());
    tg_buf_printf(&b,
                  "{\"time\":\"%s\",\"level\":\"error\",\"msg\":\"usage event not committed\","
                  "\"error\":",
                  ts);
    const char *es = tg_strerror(err);
    tg_buf_json_str(&b, es, strlen(es));
    tg_buf_appends(&b, ",\"event\":{");
    const char *base = (const char *)ev;
    for (size_t i = 0; i < tg_store_usage_nfields; i++) {
        const tg_store_field_t *f = &tg_store_usage_fields[i];
        const char *p = base + f->off;
        tg_buf_printf(&b, "%s\"%s\":", i ? "," : "", f->name);
        switch (f->kind) {
        case TG_FIELD_TEXT:
            tg_buf_json_str(&b, p, strnlen(p, f->size));
            break;
        case TG_FIELD_I64:
            tg_buf_printf(&b, "%" PRId64, *(const int64_t *)(const void *)p);
            break;
        case TG_FIELD_INT:
            tg_buf_printf(&b, "%d", *(const int *)(const void *)p);
            break;
        default:
            tg_buf_appends(&b, "null");
            break;
        }
    }
    tg_buf_appends(&b, "}}\n");
    if (b.data)
        fwrite(b.data, 1, b.len, stderr); /* one write: stderr is unbuffered */
    else
        tg_error("writer: usage event %.40s not committed (%s)", ev->id, es);
    tg_buf_free(&b);
}

/* ---- waking the thread -------------------------------------------------------- */

/* Signalling after the submit's unlock loses no wake-up: the thread checks
 * pending and waits under the mutex, so it either saw the events or is
 * already waiting. */
static void writer_wake(tg_writer_t *w)
{
    pthread_cond_signal(&w->cv);
}

static waker_t *waker_new(tg_writer_t *w)
{
    waker_t *k = calloc(1, sizeof(*k));
    if (!k) return NULL;
    if (pthread_mutex_init(&k->mu, NULL) != 0) {
        free(k);
        return NULL;
    }
    k->w = w;
    k->refs = 1;
    return k;
}

static void waker_ref(waker_t *k)
{
    pthread_mutex_lock(&k->mu);
    k->refs++;
    pthread_mutex_unlock(&k->mu);
}

static void waker_unref(waker_t *k)
{
    pthread_mutex_lock(&k->mu);
    int last = --k->refs == 0;
    pthread_mutex_unlock(&k->mu);
    if (!last) return;
    pthread_mutex_destroy(&k->mu);
    free(k);
}

static void waker_wake(waker_t *k)
{
    pthread_mutex_lock(&k->mu); /* held across the signal: stop clears w first */
    if (k->w) writer_wake(k->w);
    pthread_mutex_unlock(&k->mu);
}

/* ---- ports ------------------------------------------------------------------- */

static void port_destroy(tg_writer_port_t *p)
{
    if (p->efd >= 0) close(p->efd);
    waker_unref(p->waker);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

/* Drops one in-flight reference; frees the port if it was the last thing
 * keeping a closed port alive. Called without p->mu held. */
static void port_unref(tg_writer_port_t *p)
{
    pthread_mutex_lock(&p->mu);
    int free_now = --p->refs == 0 && p->handles_open == 0;
    pthread_mutex_unlock(&p->mu);
    if (free_now) port_destroy(p);
}

/* On the port's loop, once per iteration that submitted through it, before
 * the loop blocks: one wake-up for the iteration's events. */
static void port_kick_cb(uv_prepare_t *h)
{
    tg_writer_port_t *p = h->data;
    uv_prepare_stop(h);
    p->kick_armed = 0;
    waker_wake(p->waker);
}

/* On the port's loop: runs the completions delivered so far, in order. */
static void port_poll_cb(uv_poll_t *h, int status, int events)
{
    tg_writer_port_t *p = h->data;
    uint64_t n;
    /* Reset the count first: a delivery after the list is taken below finds
     * it empty and writes again. */
    while (read(p->efd, &n, sizeof(n)) < 0 && errno == EINTR)
        ;
    pthread_mutex_lock(&p->mu);
    done_t *d = p->head;
    p->head = p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (d) {
        done_t *next = d->next;
        /* A callback may close this port; closing is only written on this
         * thread, so it can be read here without the lock. The rest are
         * dropped, as port_close promises: their ud may be gone. */
        if (!p->closing) d->cb(d->ud, d->status);
        free(d);
        d = next;
    }
}

static void port_closed_cb(uv_handle_t *h)
{
    tg_writer_port_t *p = h->data;
    pthread_mutex_lock(&p->mu);
    int free_now = --p->handles_open == 0 && p->refs == 0;
    pthread_mutex_unlock(&p->mu);
    if (free_now) port_destroy(p);
}

int tg_writer_port_create(tg_writer_port_t **out, tg_writer_t *w, uv_loop_t *loop)
{
    if (!out || !w || !loop) return TG_EINVAL;
    *out = NULL;
    tg_writer_port_t *p = calloc(1, sizeof(*p));
    if (!p) return TG_ENOMEM;
    if (pthread_mutex_init(&p->mu, NULL) != 0) {
        free(p);
        return TG_ENOMEM;
    }
    p->waker = w->waker;
    waker_ref(p->waker);
    p->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (p->efd < 0 || uv_poll_init(loop, &p->poll, p->efd) != 0) {
        port_destroy(p);
        return TG_EIO;
    }
    p->poll.data = p;
    uv_poll_start(&p->poll, UV_READABLE, port_poll_cb);
    uv_prepare_init(loop, &p->kick); /* cannot fail on unix */
    p->kick.data = p;
    p->handles_open = 2;
    *out = p;
    return 0;
}

void tg_writer_port_close(tg_writer_port_t *p)
{
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->closing = 1; /* from here the writer neither sends nor queues to p */
    done_t *d = p->head;
    p->head = p->tail = NULL;
    pthread_mutex_unlock(&p->mu);
    while (d) {
        done_t *next = d->next;
        free(d);
        d = next;
    }
    /* Events submitted since the last kick are queued: wake the thread now. */
    if (p->kick_armed) waker_wake(p->waker);
    p->kick_armed = 0;
    uv_close((uv_handle_t *)&p->kick, port_closed_cb);
    uv_close((uv_handle_t *)&p->poll, port_closed_cb);
}

/* On the writer thread: hands a completion to its port and wakes the loop
 * when the list was empty. The wake is written after p->mu is released (the
 * loop it wakes takes p->mu first thing) and before the completion's
 * reference is dropped, which keeps the fd open until it is written. */
static void port_deliver(done_t *d, int status)
{
    tg_writer_port_t *p = d->port;
    d->status = status;
    d->next = NULL;
    pthread_mutex_lock(&p->mu);
    int closing = p->closing, wake = 0;
    if (!closing) {
        wake = p->head == NULL;
        if (p->tail)
            p->tail->next = d;
        else
            p->head = d;
        p->tail = d;
    }
    int free_now = 0;
    if (!wake) free_now = --p->refs == 0 && p->handles_open == 0;
    pthread_mutex_unlock(&p->mu);
    if (wake) {
        uint64_t one = 1;
        while (write(p->efd, &one, sizeof(one)) < 0 && errno == EINTR)
            ;
        port_unref(p);
    }
    if (closing) free(d);
    if (free_now) port_destroy(p);
}

/* ---- the thread -------------------------------------------------------------- */

static int commit_with_retry(tg_writer_t *w, const tg_usage_event_t *ev, size_t n)
{
    int err = 0;
    for (int i = 0; i < COMMIT_TRIES; i++) {
        if (i > 0) sleep_ms(retry_delay_ms[i - 1]);
        /* Retrying a batch is safe: the append ignores ids already stored. */
        err = tg_store_usage_append(w->st, ev, n);
        if (!err) return 0;
        tg_warn("writer: commit of %zu events failed (%s), try %d of %d", n, tg_strerror(err),
                i + 1, COMMIT_TRIES);
    }
    return err;
}

/* Commits b in slices of BATCH_MAX, completing each slice once it is
 * durable (or has definitely failed). */
static void process(tg_writer_t *w, batch_t *b,
                    void (*commit_fn)(const tg_usage_event_t *, size_t, void *), void *commit_ud)
{
    for (size_t off = 0; off < b->n; off += BATCH_MAX) {
        size_t n = b->n - off < BATCH_MAX ? b->n - off : BATCH_MAX;
        int err = commit_with_retry(w, b->ev + off, n);
        if (!err) {
            atomic_store(&w->last_ok_ms, tg_wall_ms());
            if (commit_fn) commit_fn(b->ev + off, n, commit_ud);
        } else {
            for (size_t i = 0; i < n; i++)
                log_lost_event(&b->ev[off + i], err);
        }
        for (size_t i = off; i < off + n; i++)
            if (b->done[i]) port_deliver(b->done[i], err);
    }
}

static void run_tick(tg_writer_t *w, void (*fn)(tg_store_t *, void *), void *ud)
{
    if (tg_store_ping(w->st) == 0) atomic_store(&w->last_ok_ms, tg_wall_ms());
    fn(w->st, ud);
}

static void wait_until(tg_writer_t *w, uint64_t deadline_ns)
{
    struct timespec ts = {(time_t)(deadline_ns / 1000000000ull),
                          (long)(deadline_ns % 1000000000ull)};
    pthread_cond_timedwait(&w->cv, &w->mu, &ts);
}

static void *writer_main(void *arg)
{
    tg_writer_t *w = arg;
    pthread_setname_np(pthread_self(), "tg-writer");
    /* SCHED_BATCH: woken by a worker, the thread does not preempt it; it
     * runs when the worker blocks (at once, when the loop goes idle: no
     * delay at low load), on an idle CPU, or at the end of the worker's
     * slice. On a busy shared core that makes the batches larger and the
     * context switches fewer: about 1 us less per event (4.1-4.6 us from
     * 5.3-5.7) in the benchmark. Fair share is unchanged. */
    struct sched_param sp = {0};
    (void)pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
    batch_t batch = {0}; /* the thread's half of the ping-pong */
    pthread_mutex_lock(&w->mu);
    for (;;) {
        if (w->tick_fn && !w->stopping && mono_ns() >= w->next_tick_ns) {
            void (*fn)(tg_store_t *, void *) = w->tick_fn;
            void *ud = w->tick_ud;
            w->next_tick_ns = mono_ns() + w->tick_ns;
            pthread_mutex_unlock(&w->mu);
            run_tick(w, fn, ud);
            pthread_mutex_lock(&w->mu);
            continue;
        }
        if (w->pending.n > 0) {
            batch_t t = w->pending;
            w->pending = batch;
            batch = t;
            void (*commit_fn)(const tg_usage_event_t *, size_t, void *) = w->commit_fn;
            void *commit_ud = w->commit_ud;
            pthread_mutex_unlock(&w->mu);
            process(w, &batch, commit_fn, commit_ud);
            pthread_mutex_lock(&w->mu);
            w->queued -= batch.n; /* slots free only once completed: bounds memory */
            batch.n = 0;
            continue;
        }
        if (w->stopping) break; /* only once nothing is pending: stop flushes */
        if (w->tick_fn)
            wait_until(w, w->next_tick_ns);
        else
            pthread_cond_wait(&w->cv, &w->mu);
    }
    pthread_mutex_unlock(&w->mu);
    batch_free(&batch);
    return NULL;
}

/* Copies the WAL back into the database every 200 ms with a PASSIVE
 * checkpoint, which never blocks the writer. The writer's own automatic
 * checkpoint (wal_autocheckpoint, see sqlite.c) then finds the frames already
 * copied, so it costs a commit little, and restarts the log so it stops
 * growing.
 * (With automatic checkpoints off, a log written to without pause is never
 * fully copied, never restarts, and grows without bound.) */
static void *ckpt_main(void *arg)
{
    tg_writer_t *w = arg;
    pthread_setname_np(pthread_self(), "tg-checkpoint");
    /* Copying pages is background work: on a core shared with a worker it
     * yields at once when the worker wakes, instead of holding the core for
     * a scheduler slice while responses wait. (Best effort.) */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), CKPT_NICE);
    while (!atomic_load(&w->ckpt_stop)) {
        sleep_ms(200);
        tg_store_checkpoint(w->ckpt_st);
    }
    tg_store_checkpoint(w->ckpt_st);
    return NULL;
}

static void ckpt_start(tg_writer_t *w, const tg_store_config_t *cfg)
{
    if (tg_store_open(&w->ckpt_st, cfg) != 0) return; /* keep automatic checkpoints */
    if (pthread_create(&w->ckpt_thread, NULL, ckpt_main, w) != 0) {
        tg_store_close(w->ckpt_st);
        w->ckpt_st = NULL;
        return;
    }
    w->ckpt_started = 1;
}

static void ckpt_stop(tg_writer_t *w)
{
    if (!w->ckpt_started) return;
    atomic_store(&w->ckpt_stop, 1);
    pthread_join(w->ckpt_thread, NULL);
    tg_store_close(w->ckpt_st);
    w->ckpt_started = 0;
}

/* ---- public ------------------------------------------------------------------ */

int tg_writer_start(tg_writer_t **out, const tg_store_config_t *cfg, size_t queue_max)
{
    if (!out || !cfg || queue_max == 0) return TG_EINVAL;
    *out = NULL;
    tg_writer_t *w = calloc(1, sizeof(*w));
    if (!w) return TG_ENOMEM;
    w->queue_max = queue_max;
    /* Opened here, not on the thread, so a bad path fails the start. */
    int err = tg_store_open(&w->st, cfg);
    if (err) {
        free(w);
        return err;
    }
    atomic_store(&w->last_ok_ms, tg_wall_ms());
    pthread_condattr_t ca;
    int mu_ok = pthread_mutex_init(&w->mu, NULL) == 0;
    int cv_ok = pthread_condattr_init(&ca) == 0;
    if (cv_ok) {
        cv_ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 &&
                pthread_cond_init(&w->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    }
    w->waker = mu_ok && cv_ok ? waker_new(w) : NULL;
    if (w->waker) ckpt_start(w, cfg);
    if (w->waker && pthread_create(&w->thread, NULL, writer_main, w) == 0) {
        *out = w;
        return 0;
    }
    ckpt_stop(w);
    if (w->waker) waker_unref(w->waker);
    if (mu_ok) pthread_mutex_destroy(&w->mu);
    if (cv_ok) pthread_cond_destroy(&w->cv);
    tg_store_close(w->st);
    free(w);
    return TG_ENOMEM;
}

void tg_writer_stop(tg_writer_t *w)
{
    if (!w) return;
    pthread_mutex_lock(&w->mu);
    w->stopping = 1;
    pthread_cond_signal(&w->cv); /* also commits what ports have not kicked yet */
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->thread, NULL); /* the thread commits what is pending first */
    /* Ports that outlive the writer stop waking it before its cv goes. */
    pthread_mutex_lock(&w->waker->mu);
    w->waker->w = NULL;
    pthread_mutex_unlock(&w->waker->mu);
    waker_unref(w->waker);
    ckpt_stop(w);
    tg_store_close(w->st);
    batch_free(&w->pending);
    pthread_cond_destroy(&w->cv);
    pthread_mutex_destroy(&w->mu);
    free(w);
}

int tg_writer_reserve(tg_writer_t *w)
{
    int err = 0;
    pthread_mutex_lock(&w->mu);
    if (w->stopping)
        err = TG_ECLOSED;
    else if (w->reserved + w->queued >= w->queue_max)
        err = TG_EBUSY;
    else
        w->reserved++;
    pthread_mutex_unlock(&w->mu);
    return err;
}

void tg_writer_unreserve(tg_writer_t *w)
{
    pthread_mutex_lock(&w->mu);
    int underflow = w->reserved == 0;
    if (!underflow) w->reserved--;
    pthread_mutex_unlock(&w->mu);
    if (underflow) tg_warn("writer: unreserve without a reservation");
}

/* A submit uses a reservation when one is outstanding, else needs free room.
 * On failure the reservation it used is released (the caller must not
 * unreserve), and the event is logged so it is not lost silently. */
int tg_writer_submit(tg_writer_t *w, const tg_usage_event_t *ev, tg_writer_port_t *port,
                     tg_writer_done_fn cb, void *ud)
{
    if (!w || !ev || (cb && !port)) return TG_EINVAL;
    int err = 0;
    done_t *d = NULL;
    if (cb) {
        d = malloc(sizeof(*d));
        if (!d)
            err = TG_ENOMEM;
        else {
            *d = (done_t){.port = port, .cb = cb, .ud = ud};
            pthread_mutex_lock(&port->mu);
            if (port->closing)
                err = TG_ECLOSED;
            else
                port->refs++;
            pthread_mutex_unlock(&port->mu);
            if (err) {
                free(d);
                d = NULL;
            }
        }
    }
    pthread_mutex_lock(&w->mu);
    if (!err) {
        if (w->reserved > 0)
            w->reserved--;
        else if (w->queued >= w->queue_max)
            err = TG_EBUSY;
    }
    if (!err && w->stopping) err = TG_ECLOSED;
    if (!err) err = batch_grow(&w->pending, w->queue_max);
    if (!err) {
        size_t i = w->pending.n++;
        memcpy(&w->pending.ev[i], ev, sizeof(*ev));
        w->pending.done[i] = d;
        w->queued++;
    }
    pthread_mutex_unlock(&w->mu);
    if (!err) {
        if (!d)
            writer_wake(w); /* no completion: the port (if any) is not ours to use */
        else if (!port->kick_armed) {
            /* On the port's loop thread: the wake waits for the iteration's end. */
            port->kick_armed = 1;
            uv_prepare_start(&port->kick, port_kick_cb);
        }
    }
    if (err) {
        if (d) {
            port_unref(port);
            free(d);
        }
        log_lost_event(ev, err);
    }
    return err;
}

int64_t tg_writer_last_ok_ms(const tg_writer_t *w)
{
    return atomic_load(&w->last_ok_ms);
}

void tg_writer_on_commit(tg_writer_t *w, void (*fn)(const tg_usage_event_t *ev, size_t n, void *ud),
                         void *ud)
{
    pthread_mutex_lock(&w->mu);
    w->commit_fn = fn;
    w->commit_ud = ud;
    pthread_mutex_unlock(&w->mu);
}

void tg_writer_on_tick(tg_writer_t *w, uint32_t interval_ms, void (*fn)(tg_store_t *st, void *ud),
                       void *ud)
{
    pthread_mutex_lock(&w->mu);
    w->tick_fn = interval_ms ? fn : NULL; /* a zero interval would spin */
    w->tick_ud = ud;
    w->tick_ns = (uint64_t)interval_ms * 1000000ull;
    w->next_tick_ns = 0;         /* first tick at once */
    pthread_cond_signal(&w->cv); /* the thread may be in an untimed wait */
    pthread_mutex_unlock(&w->mu);
}

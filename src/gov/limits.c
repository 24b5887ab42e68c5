/* limits.c - the counters of every unit, team and key, and admission against
 * their limits and budgets (limits.h says what each limit means).
 *
 * Why it is built this way:
 * - One spinlock per counters object guards all of its state, and is held
 *   for a handful of comparisons and additions. A scope is checked and taken
 *   in one critical section, so within a scope nothing is ever half taken;
 *   across scopes, admission takes key, team and unit in turn and gives back
 *   the earlier ones when a later one refuses. A hard budget's check and its
 *   reservation happen under the same lock, which is what keeps committed
 *   within the budget however many workers admit at once.
 * - Counting does not depend on the policy: every scope with counters counts
 *   its calls, concurrency, tokens and cost in every window and every period
 *   (day, week, month), and only the checks come from the policy. A limit or
 *   budget added later then starts from what was really used.
 * - Windows and periods are keyed by their start (unix ms). Workers may pass
 *   slightly different clocks, so a counter never goes back to an earlier
 *   window: a call from the past counts in the newest window seen.
 * - Counters are allocated once and never move: the registry's chained hash
 *   table relinks entries when it grows, and policies' snapshots keep
 *   pointers to them. */
#include "gov/limits.h"

#include <assert.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

enum { NPERIODS = TG_PERIOD_MONTH + 1 };
#define MICRO     1000000LL /* micro-tokens per token */
#define MINUTE_MS 60000LL
#define MAX_BURST 1000000000000LL /* 10^12 tokens: burst * MICRO stays in range */
#define MAX_RATE  1000000000000LL /* rate_milli cap: refill arithmetic stays in range */
#define CACHELINE 64

/* A count in one window (a minute, day or month), keyed by its start. */
typedef struct {
    int64_t start;
    int64_t n;
} window_t;

/* Cost in one budget period: committed = spent + reserved. */
typedef struct {
    int64_t start;
    int64_t spent;    /* settled costs */
    int64_t reserved; /* reservations of calls in flight */
} spend_t;

/* Everything below lock is read and written only with lock held. */
struct tg_gov_counters {
    _Alignas(CACHELINE) atomic_flag lock;
    int64_t inflight;       /* admitted, not settled */
    int64_t bucket_micro;   /* tokens left x MICRO; 0 <= it <= burst x MICRO */
    int64_t bucket_ms;      /* last refill; BUCKET_UNSET: full, never used */
    window_t calls_minute;  /* admitted calls (rpm) */
    window_t tokens_minute; /* settled tokens (tpm) */
    window_t calls_day, calls_month;
    spend_t spend[NPERIODS]; /* by TG_PERIOD_* */
};
#define BUCKET_UNSET INT64_MIN

static const tg_limits_def_t no_limits; /* a scope without a policy */

/* ---- the spinlock ----------------------------------------------------------- */

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* Held for O(1) work; a waiter that spins long (its holder was preempted)
 * yields the CPU rather than burn its time slice. */
static void counters_lock(tg_gov_counters_t *c)
{
    unsigned spins = 0;
    while (atomic_flag_test_and_set_explicit(&c->lock, memory_order_acquire)) {
        if (++spins % 128 == 0)
            sched_yield();
        else
            cpu_relax();
    }
}

static void counters_unlock(tg_gov_counters_t *c)
{
    atomic_flag_clear_explicit(&c->lock, memory_order_release);
}

static void counters_init(tg_gov_counters_t *c)
{
    memset(c, 0, sizeof(*c));
    atomic_flag_clear(&c->lock);
    c->bucket_ms = BUCKET_UNSET;
    c->calls_minute.start = c->tokens_minute.start = INT64_MIN;
    c->calls_day.start = c->calls_month.start = INT64_MIN;
    for (int k = 0; k < NPERIODS; k++)
        c->spend[k].start = INT64_MIN;
}

/* ---- windows and periods ---------------------------------------------------- */

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/* Spans: TG_PERIOD_DAY, _WEEK, _MONTH, then the minute. */
enum { SPAN_MINUTE = NPERIODS, NSPANS };

static void span_bounds(int span, int64_t t, int64_t *start, int64_t *end)
{
    if (span == SPAN_MINUTE) {
        *start = floor_div(t, MINUTE_MS) * MINUTE_MS;
        *end = *start + MINUTE_MS;
        return;
    }
    tg_period_bounds(span, t, start, end);
}

/* Every span containing one moment, computed before taking a lock. */
typedef struct {
    int64_t start[NSPANS], end[NSPANS];
} spans_t;

static void spans_at(int64_t now, spans_t *sp)
{
    /* Every span starts and ends on a minute, so within one minute they are
     * all the same: each thread keeps the last minute's (a call costs a
     * compare instead of a civil-date computation). */
    static _Thread_local spans_t last;
    static _Thread_local int have;
    if (have && now >= last.start[SPAN_MINUTE] && now < last.end[SPAN_MINUTE]) {
        *sp = last;
        return;
    }
    for (int k = 0; k < NSPANS; k++)
        span_bounds(k, now, &sp->start[k], &sp->end[k]);
    last = *sp;
    have = 1;
}

/* Moves a window keyed by *start to the one in now, unless it holds a later
 * one already. Returns 1 when it moved (its counts restart); *end is the end
 * of the window it holds. */
static int roll(int64_t *start, int span, const spans_t *now, int64_t *end)
{
    int64_t ignored;
    if (now->start[span] > *start) {
        *start = now->start[span];
        *end = now->end[span];
        return 1;
    }
    if (now->start[span] == *start)
        *end = now->end[span];
    else
        span_bounds(span, *start, &ignored, end);
    return 0;
}

/* When each window of a counters object ends, once rolled. */
typedef struct {
    int64_t rpm, tpm, day, month, period[NPERIODS];
} ends_t;

/* Brings every window and period of c to now (lock held). */
static void counters_roll(tg_gov_counters_t *c, const spans_t *now, ends_t *e)
{
    if (roll(&c->calls_minute.start, SPAN_MINUTE, now, &e->rpm)) c->calls_minute.n = 0;
    if (roll(&c->tokens_minute.start, SPAN_MINUTE, now, &e->tpm)) c->tokens_minute.n = 0;
    if (roll(&c->calls_day.start, TG_PERIOD_DAY, now, &e->day)) c->calls_day.n = 0;
    if (roll(&c->calls_month.start, TG_PERIOD_MONTH, now, &e->month)) c->calls_month.n = 0;
    for (int k = 0; k < NPERIODS; k++)
        if (roll(&c->spend[k].start, k, now, &e->period[k]))
            c->spend[k].spent = c->spend[k].reserved = 0;
}

/* ---- the token bucket ------------------------------------------------------- */

typedef struct {
    int64_t rate; /* micro-tokens per ms, which is exactly rate_milli */
    int64_t cap;  /* burst x MICRO */
} bucket_def_t;

/* 0 when the policy sets no rate. */
static int bucket_def(const tg_limits_def_t *l, bucket_def_t *b)
{
    if (l->rate_milli <= 0) return 0;
    int64_t burst = l->burst > 0 ? l->burst : (l->rate_milli + 999) / 1000;
    if (burst > MAX_BURST) burst = MAX_BURST;
    b->rate = l->rate_milli < MAX_RATE ? l->rate_milli : MAX_RATE;
    b->cap = burst * MICRO;
    return 1;
}

/* Adds what was refilled since the last call (full at first; clamped to a
 * burst that may have shrunk since). */
static void bucket_refill(tg_gov_counters_t *c, const bucket_def_t *b, int64_t now)
{
    if (c->bucket_ms == BUCKET_UNSET) {
        c->bucket_micro = b->cap;
        c->bucket_ms = now;
        return;
    }
    if (now > c->bucket_ms && c->bucket_micro < b->cap) {
        int64_t need = b->cap - c->bucket_micro;
        int64_t elapsed = now - c->bucket_ms;
        if (elapsed >= need / b->rate + (need % b->rate != 0))
            c->bucket_micro = b->cap;
        else
            c->bucket_micro += elapsed * b->rate; /* < need + rate: no overflow */
    }
    if (now > c->bucket_ms) c->bucket_ms = now;
    if (c->bucket_micro > b->cap) c->bucket_micro = b->cap;
}

/* Tokens used: burst minus what is left, rounded up (a part-token is not left). */
static int64_t bucket_used(const tg_gov_counters_t *c, const bucket_def_t *b)
{
    return (b->cap - c->bucket_micro + MICRO - 1) / MICRO;
}

/* When the bucket holds `want` micro-tokens again (counted from its last
 * refill, which is later than now when another worker's clock is ahead). */
static int64_t bucket_when(const tg_gov_counters_t *c, const bucket_def_t *b, int64_t now,
                           int64_t want)
{
    int64_t need = want - c->bucket_micro;
    if (need <= 0) return now;
    int64_t from = c->bucket_ms > now ? c->bucket_ms : now;
    return from + need / b->rate + (need % b->rate != 0);
}

/* ---- registry --------------------------------------------------------------- */

typedef struct entry {
    tg_gov_counters_t c; /* first: the entry's address is the counters' */
    struct entry *next;
    uint64_t hash;
    char name[];
} entry_t;

struct tg_gov {
    pthread_mutex_t mu;
    entry_t **slots; /* chains; nslots is a power of two */
    size_t nslots, n;
};

static uint64_t fnv1a(const char *s)
{
    uint64_t h = 1469598103934665603ULL;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ULL;
    return h;
}

int tg_gov_create(tg_gov_t **out)
{
    *out = NULL;
    tg_gov_t *g = calloc(1, sizeof(*g));
    if (!g) return TG_ENOMEM;
    g->nslots = 64;
    g->slots = calloc(g->nslots, sizeof(*g->slots));
    if (!g->slots) {
        free(g);
        return TG_ENOMEM;
    }
    pthread_mutex_init(&g->mu, NULL);
    *out = g;
    return 0;
}

void tg_gov_destroy(tg_gov_t *g)
{
    if (!g) return;
    for (size_t i = 0; i < g->nslots; i++) {
        for (entry_t *e = g->slots[i], *next; e; e = next) {
            next = e->next;
            free(e);
        }
    }
    free(g->slots);
    pthread_mutex_destroy(&g->mu);
    free(g);
}

/* Doubles the table; on failure keeps the old one (longer chains, still right). */
static void registry_grow(tg_gov_t *g)
{
    size_t n = g->nslots * 2;
    entry_t **slots = calloc(n, sizeof(*slots));
    if (!slots) return;
    for (size_t i = 0; i < g->nslots; i++) {
        for (entry_t *e = g->slots[i], *next; e; e = next) {
            next = e->next;
            e->next = slots[e->hash & (n - 1)];
            slots[e->hash & (n - 1)] = e;
        }
    }
    free(g->slots);
    g->slots = slots;
    g->nslots = n;
}

tg_gov_counters_t *tg_gov_counters(tg_gov_t *g, const char *entity, int *created)
{
    if (created) *created = 0;
    if (!g || !entity) return NULL;
    uint64_t h = fnv1a(entity);
    pthread_mutex_lock(&g->mu);
    entry_t *e = g->slots[h & (g->nslots - 1)];
    while (e && !(e->hash == h && strcmp(e->name, entity) == 0))
        e = e->next;
    if (!e) {
        size_t len = strlen(entity);
        /* aligned_alloc wants a multiple of the alignment: the lock gets its own line. */
        size_t size = (sizeof(entry_t) + len + 1 + CACHELINE - 1) / CACHELINE * CACHELINE;
        e = aligned_alloc(CACHELINE, size);
        if (e) {
            counters_init(&e->c);
            e->hash = h;
            memcpy(e->name, entity, len + 1);
            if (g->n >= g->nslots) registry_grow(g);
            e->next = g->slots[h & (g->nslots - 1)];
            g->slots[h & (g->nslots - 1)] = e;
            g->n++;
            if (created) *created = 1;
        }
    }
    pthread_mutex_unlock(&g->mu);
    return e ? &e->c : NULL;
}

void tg_gov_seed(tg_gov_counters_t *c, int64_t now_ms, const tg_gov_seed_t *s)
{
    const int64_t pico[NPERIODS] = {s->day_pico, s->week_pico, s->month_pico};
    spans_t now;
    ends_t e;
    spans_at(now_ms, &now);
    counters_lock(c);
    counters_roll(c, &now, &e);
    if (s->day_requests > 0) c->calls_day.n += s->day_requests;
    if (s->month_requests > 0) c->calls_month.n += s->month_requests;
    for (int k = 0; k < NPERIODS; k++)
        if (pico[k] > 0) c->spend[k].spent += pico[k];
    counters_unlock(c);
}

/* ---- admission -------------------------------------------------------------- */

/* What one scope's admission took besides the ticket's fields: the windows
 * its counts went into, so an undo removes them only from those. */
typedef struct {
    int took_token;
    int64_t minute, day, month;
} taken_t;

static void refuse(tg_gov_verdict_t *v, int reason, int64_t limit, int64_t used, int64_t reset)
{
    static const char *const codes[] = {
        [TG_GOV_RATE] = "rate_limited",      [TG_GOV_RPM] = "requests_per_minute",
        [TG_GOV_TPM] = "tokens_per_minute",  [TG_GOV_CONCURRENCY] = "concurrency_limited",
        [TG_GOV_DAY] = "daily_quota",        [TG_GOV_MONTH] = "monthly_quota",
        [TG_GOV_BUDGET] = "budget_exceeded",
    };
    v->reason = reason;
    v->status = reason == TG_GOV_BUDGET ? 402 : 429;
    v->code = codes[reason];
    v->limit = limit;
    v->used = used;
    v->reset_ms = reset;
}

/* Whether committed + r goes past limit (an overflow does). */
static int over(int64_t committed, int64_t r, int64_t limit)
{
    int64_t sum;
    return __builtin_add_overflow(committed, r, &sum) || sum > limit;
}

/* Checks every limit of one scope in the verdict's order and, when none
 * refuses, takes a slot, a token, the counts and the reservations, all under
 * the scope's lock. Returns 0, or 1 with v filled (nothing taken). */
static int scope_take(tg_gov_ticket_t *t, int s, int64_t now, const spans_t *spans, int64_t r,
                      taken_t *tk, tg_gov_verdict_t *v)
{
    tg_gov_counters_t *c = t->scope[s].c;
    const tg_policy_t *p = t->scope[s].p;
    const tg_limits_def_t *l = p ? &p->limits : &no_limits;
    bucket_def_t b = {0, 0};
    int has_bucket = bucket_def(l, &b);
    ends_t e;
    int refused = 1;

    counters_lock(c);
    counters_roll(c, spans, &e);
    if (has_bucket) bucket_refill(c, &b, now);

    if (l->concurrency > 0 && c->inflight >= l->concurrency) {
        refuse(v, TG_GOV_CONCURRENCY, l->concurrency, c->inflight, 0);
        goto out;
    }
    if (has_bucket && c->bucket_micro < MICRO) {
        refuse(v, TG_GOV_RATE, b.cap / MICRO, bucket_used(c, &b), bucket_when(c, &b, now, MICRO));
        goto out;
    }
    if (l->rpm > 0 && c->calls_minute.n >= l->rpm) {
        refuse(v, TG_GOV_RPM, l->rpm, c->calls_minute.n, e.rpm);
        goto out;
    }
    if (l->tpm > 0 && c->tokens_minute.n >= l->tpm) {
        refuse(v, TG_GOV_TPM, l->tpm, c->tokens_minute.n, e.tpm);
        goto out;
    }
    if (l->requests_per_day > 0 && c->calls_day.n >= l->requests_per_day) {
        refuse(v, TG_GOV_DAY, l->requests_per_day, c->calls_day.n, e.day);
        goto out;
    }
    if (l->requests_per_month > 0 && c->calls_month.n >= l->requests_per_month) {
        refuse(v, TG_GOV_MONTH, l->requests_per_month, c->calls_month.n, e.month);
        goto out;
    }
    int soft_over = 0;
    for (size_t i = 0; p && i < p->nbudgets; i++) {
        const tg_budget_def_t *bd = &p->budgets[i];
        assert(bd->period >= 0 && bd->period < NPERIODS);
        const spend_t *sp = &c->spend[bd->period];
        int64_t committed = sp->spent + sp->reserved;
        if (!over(committed, r, bd->pico)) continue;
        if (bd->mode == TG_BUDGET_SOFT) {
            soft_over = 1;
            continue;
        }
        refuse(v, TG_GOV_BUDGET, bd->pico, committed, e.period[bd->period]);
        v->period = bd->period;
        v->requested = r;
        goto out;
    }

    refused = 0;
    t->soft_over |= soft_over;
    c->inflight++;
    t->holds_slot[s] = 1;
    if (has_bucket) {
        c->bucket_micro -= MICRO;
        tk->took_token = 1;
    }
    c->calls_minute.n++;
    c->calls_day.n++;
    c->calls_month.n++;
    tk->minute = c->calls_minute.start;
    tk->day = c->calls_day.start;
    tk->month = c->calls_month.start;
    for (int k = 0; k < NPERIODS; k++) {
        c->spend[k].reserved += r;
        t->reserved[s][k] = r;
        t->period_start[s][k] = c->spend[k].start;
    }
out:
    counters_unlock(c);
    return refused;
}

/* Gives back what scope_take took (a later scope refused the call). */
static void scope_undo(const tg_gov_ticket_t *t, int s, const taken_t *tk)
{
    tg_gov_counters_t *c = t->scope[s].c;
    const tg_policy_t *p = t->scope[s].p;
    bucket_def_t b = {0, 0};
    counters_lock(c);
    c->inflight--;
    if (tk->took_token && p && bucket_def(&p->limits, &b)) {
        c->bucket_micro += MICRO;
        if (c->bucket_micro > b.cap) c->bucket_micro = b.cap;
    }
    if (c->calls_minute.start == tk->minute) c->calls_minute.n--;
    if (c->calls_day.start == tk->day) c->calls_day.n--;
    if (c->calls_month.start == tk->month) c->calls_month.n--;
    for (int k = 0; k < NPERIODS; k++)
        if (c->spend[k].start == t->period_start[s][k]) c->spend[k].reserved -= t->reserved[s][k];
    counters_unlock(c);
}

int tg_gov_admit(const tg_gov_scope_t scope[TG_SCOPES], int64_t now_ms, int64_t reserve_pico,
                 tg_gov_ticket_t *t, tg_gov_verdict_t *v)
{
    taken_t taken[TG_SCOPES];
    memset(t, 0, sizeof(*t));
    memset(taken, 0, sizeof(taken));
    memset(v, 0, sizeof(*v));
    if (reserve_pico < 0) reserve_pico = 0;
    spans_t spans;
    spans_at(now_ms, &spans);
    for (int s = 0; s < TG_SCOPES; s++) {
        t->scope[s] = scope[s];
        if (!scope[s].c) continue; /* nothing to count in: no limit applies */
        if (scope_take(t, s, now_ms, &spans, reserve_pico, &taken[s], v)) {
            v->scope = s;
            v->scope_id = scope[s].id;
            while (s-- > 0)
                if (t->scope[s].c) scope_undo(t, s, &taken[s]);
            memset(t, 0, sizeof(*t));
            return 1;
        }
    }
    t->active = 1;
    return 0;
}

void tg_gov_settle(tg_gov_ticket_t *t, int64_t now_ms, int64_t tokens, int64_t cost_pico)
{
    if (!t->active) return;
    t->active = 0;
    if (tokens < 0) tokens = 0;
    if (cost_pico < 0) cost_pico = 0;
    spans_t spans;
    spans_at(now_ms, &spans);
    for (int s = 0; s < TG_SCOPES; s++) {
        tg_gov_counters_t *c = t->scope[s].c;
        if (!c) continue;
        ends_t e;
        counters_lock(c);
        counters_roll(c, &spans, &e);
        if (t->holds_slot[s]) c->inflight--;
        c->tokens_minute.n += tokens;
        for (int k = 0; k < NPERIODS; k++) {
            spend_t *sp = &c->spend[k];
            if (sp->start != t->period_start[s][k]) continue; /* its period is over */
            sp->reserved -= t->reserved[s][k];
            sp->spent += cost_pico;
        }
        counters_unlock(c);
        t->holds_slot[s] = 0;
    }
}

/* ---- status ----------------------------------------------------------------- */

static void gauge(tg_gov_gauge_t *g, int64_t limit, int64_t used, int64_t reset)
{
    g->limit = limit;
    g->used = used;
    g->reset_ms = reset;
}

void tg_gov_status(const tg_gov_scope_t *s, int64_t now_ms, tg_gov_status_t *out)
{
    memset(out, 0, sizeof(*out));
    tg_gov_counters_t *c = s->c;
    if (!c) return;
    const tg_policy_t *p = s->p;
    const tg_limits_def_t *l = p ? &p->limits : &no_limits;
    bucket_def_t b = {0, 0};
    spans_t spans;
    ends_t e;
    spans_at(now_ms, &spans);

    counters_lock(c);
    counters_roll(c, &spans, &e);
    if (bucket_def(l, &b)) {
        bucket_refill(c, &b, now_ms);
        /* Reset: when the bucket is full again. */
        gauge(&out->rate, b.cap / MICRO, bucket_used(c, &b), bucket_when(c, &b, now_ms, b.cap));
    }
    gauge(&out->rpm, l->rpm, c->calls_minute.n, e.rpm);
    gauge(&out->tpm, l->tpm, c->tokens_minute.n, e.tpm);
    gauge(&out->concurrency, l->concurrency, c->inflight, 0);
    gauge(&out->day, l->requests_per_day, c->calls_day.n, e.day);
    gauge(&out->month, l->requests_per_month, c->calls_month.n, e.month);
    for (size_t i = 0; p && i < p->nbudgets; i++) {
        const spend_t *sp = &c->spend[p->budgets[i].period];
        gauge(&out->budgets[i], p->budgets[i].pico, sp->spent + sp->reserved,
              e.period[p->budgets[i].period]);
        out->budget_spent[i] = sp->spent;
    }
    out->nbudgets = p ? p->nbudgets : 0;
    counters_unlock(c);
}

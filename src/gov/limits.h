/* limits.h - the live side of governance: counters per unit, team and key,
 * and the admission of a call against every limit and budget in its scope.
 *
 * A call's scope is its key, its team and its unit (TG_SCOPE_*), each with a
 * policy (policy.h: what may be done) and a tg_gov_counters_t (what has been
 * done). Counters live in a registry and outlive policy changes: a new
 * snapshot of policies points at the same counters, so a limit change never
 * resets what was counted.
 *
 * Admission is all or nothing: tg_gov_admit either takes, in every scope, a
 * concurrency slot, a token of the rate bucket, a count in the minute, day and
 * month windows and a reservation of the call's worst-case cost on every
 * budget, or takes nothing and says which limit refused and when it resets.
 * A hard budget is never exceeded by admitted reservations, however many
 * workers admit at once (a reservation is a compare-and-swap against the
 * budget), so concurrent calls cannot spend past it; tg_gov_settle then
 * replaces the reservation with the real cost. Everything here is lock-free
 * atomics or a per-counters spinlock held for O(1) work: no allocation, no
 * system call, no I/O on the request path. Time is always passed in (now_ms,
 * unix milliseconds), so the tests drive the clock.
 *
 * Semantics, exactly:
 *  - rate/burst: a token bucket of burst tokens, full at first, refilled
 *    continuously at rate per second; a call takes one token. Refused when
 *    less than one token is left; reset = when one will be.
 *  - rpm: calls admitted in the current UTC minute (floor(now / 60000));
 *    refused when that count has reached rpm; reset = the next minute.
 *  - tpm: tokens settled in the current UTC minute; refused when they have
 *    reached tpm (a call's tokens are counted when it settles, in the minute
 *    it settles); reset = the next minute.
 *  - concurrency: calls admitted and not yet settled; refused at the limit;
 *    no reset time (retry after 1 s is suggested).
 *  - requests_per_day / requests_per_month: calls admitted in the UTC day /
 *    calendar month; refused at the limit; reset = the next day / month.
 *  - budgets: per period (tg_period_bounds), spent (settled costs) plus
 *    reserved (calls in flight) is the committed amount. A hard budget refuses
 *    a call when committed + its reservation would exceed the budget (a call
 *    that brings it exactly to the budget is admitted); a soft one admits it
 *    and marks the ticket soft_over. Reset = the end of the period.
 *  - a new window or period starts at zero, except what tg_gov_seed loads.
 * Limits of 0 are absent. A call refused by one scope leaves no trace in any. */
#ifndef TG_GOV_LIMITS_H
#define TG_GOV_LIMITS_H

#include <stddef.h>
#include <stdint.h>

#include "gov/policy.h"

enum { TG_SCOPE_KEY = 0, TG_SCOPE_TEAM, TG_SCOPE_UNIT, TG_SCOPES };

typedef struct tg_gov_counters tg_gov_counters_t;
typedef struct tg_gov tg_gov_t;

/* The registry: counters by entity ("key:ID", "team:ID", "unit:ID"). */
int tg_gov_create(tg_gov_t **out);
void tg_gov_destroy(tg_gov_t *g); /* frees every counters object */
/* Finds or creates an entity's counters (never freed before tg_gov_destroy).
 * Thread-safe; takes a mutex: for the snapshot builder, not the request path.
 * *created (may be NULL) says whether it is new (then seed it). NULL: ENOMEM. */
tg_gov_counters_t *tg_gov_counters(tg_gov_t *g, const char *entity, int *created);

/* Loads what the ledger says was already used in the periods containing
 * now_ms: requests and cost (picodollars) of the current UTC day, ISO week and
 * calendar month. Adds to what is counted. */
typedef struct {
    int64_t day_requests, month_requests;
    int64_t day_pico, week_pico, month_pico;
} tg_gov_seed_t;
void tg_gov_seed(tg_gov_counters_t *c, int64_t now_ms, const tg_gov_seed_t *s);

/* One scope of a call: counters and policy, either NULL when there is no such
 * entity or no policy (a key without a unit, a team without limits). */
typedef struct {
    tg_gov_counters_t *c;
    const tg_policy_t *p;
    const char *id; /* the entity's id, for messages; not copied */
} tg_gov_scope_t;

/* What an admitted call holds, to be settled exactly once. Plain data: it may
 * be copied; it must not be settled twice. */
typedef struct {
    tg_gov_scope_t scope[TG_SCOPES];
    uint8_t holds_slot[TG_SCOPES]; /* a concurrency slot taken */
    /* Indexed by TG_PERIOD_* (the rest unused): every scope with counters
     * reserves in its day, week and month, budget or not, so a budget added
     * later starts from what is really committed. Picodollars. */
    int64_t reserved[TG_SCOPES][TG_POLICY_MAX_BUDGETS];
    int64_t period_start[TG_SCOPES][TG_POLICY_MAX_BUDGETS]; /* that period's start */
    int soft_over;                                          /* admitted past a soft budget */
    int active;                                             /* 1 between admit and settle */
} tg_gov_ticket_t;

/* Why a call was refused. */
enum {
    TG_GOV_RATE = 1,    /* rate/burst */
    TG_GOV_RPM,         /* requests per minute */
    TG_GOV_TPM,         /* tokens per minute */
    TG_GOV_CONCURRENCY, /* concurrent requests */
    TG_GOV_DAY,         /* requests per day */
    TG_GOV_MONTH,       /* requests per month */
    TG_GOV_BUDGET,      /* a hard budget */
};
typedef struct {
    int reason;           /* TG_GOV_* */
    int status;           /* 429, or 402 for TG_GOV_BUDGET */
    const char *code;     /* "rate_limited", "requests_per_minute", "tokens_per_minute",
                             "concurrency_limited", "daily_quota", "monthly_quota",
                             "budget_exceeded" */
    int scope;            /* TG_SCOPE_* */
    const char *scope_id; /* from the scope */
    int64_t limit;        /* the limit that refused (picodollars for budgets; burst for rate) */
    int64_t used;         /* counted against it (committed picodollars for budgets) */
    int64_t reset_ms;     /* unix ms when a retry can succeed (0: unknown) */
    int period;           /* budgets: TG_PERIOD_* */
    int64_t requested;    /* budgets: the reservation asked for */
} tg_gov_verdict_t;

/* Admits a call at now_ms whose worst-case cost is reserve_pico (0 when no
 * budget is in scope). Returns 0 with *t active, or 1 with *v filled (and
 * nothing held). Scopes with neither counters nor policy are skipped. */
int tg_gov_admit(const tg_gov_scope_t scope[TG_SCOPES], int64_t now_ms, int64_t reserve_pico,
                 tg_gov_ticket_t *t, tg_gov_verdict_t *v);
/* The call is over: frees its concurrency slots, counts its tokens in the
 * current minute, and turns each reservation into cost_pico (the real cost)
 * when the reservation's period is still current (else the new period is not
 * charged for it). Idempotent on an inactive ticket. */
void tg_gov_settle(tg_gov_ticket_t *t, int64_t now_ms, int64_t tokens, int64_t cost_pico);

/* What is left in one scope right now (for headers and /v1/limits): for each
 * limit the policy sets, its limit, what is used and when it resets. */
typedef struct {
    int64_t limit, used, reset_ms; /* limit 0: not set */
} tg_gov_gauge_t;
typedef struct {
    tg_gov_gauge_t rate; /* limit = burst, used = burst - tokens left (rounded up) */
    tg_gov_gauge_t rpm, tpm, concurrency, day, month;
    tg_gov_gauge_t budgets[TG_POLICY_MAX_BUDGETS]; /* same order as the policy's */
    int64_t budget_spent[TG_POLICY_MAX_BUDGETS];   /* settled part of used */
    size_t nbudgets;
} tg_gov_status_t;
void tg_gov_status(const tg_gov_scope_t *s, int64_t now_ms, tg_gov_status_t *out);

#endif

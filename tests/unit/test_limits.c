/* test_limits.c - admission against every limit and budget, with the clock
 * passed in: window and period boundaries (month lengths, leap day, year end,
 * Monday weeks), all-or-nothing across scopes, settling, seeding, and hard
 * budgets held under concurrent admission. Expected times are computed here
 * from civil dates, not with the code under test. */
#include <pthread.h>
#include <sched.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/core.h"
#include "gov/limits.h"

#define DAY_MS 86400000LL

static int64_t utc(int y, int mo, int d, int h, int mi, int s, int ms)
{
    return tg_days_from_civil(y, mo, d) * DAY_MS + ((h * 60LL + mi) * 60 + s) * 1000 + ms;
}

static int64_t date(int y, int mo, int d)
{
    return utc(y, mo, d, 0, 0, 0, 0);
}

/* A call in one scope (the key's), the others absent. */
static int admit1(tg_gov_counters_t *c, const tg_policy_t *p, int64_t now, int64_t r,
                  tg_gov_ticket_t *t, tg_gov_verdict_t *v)
{
    tg_gov_scope_t sc[TG_SCOPES] = {{c, p, "k1"}, {NULL, NULL, NULL}, {NULL, NULL, NULL}};
    return tg_gov_admit(sc, now, r, t, v);
}

/* How many of n calls at now are admitted (their tickets dropped unsettled). */
static int admit_n(tg_gov_counters_t *c, const tg_policy_t *p, int64_t now, int64_t r, int n)
{
    int ok = 0;
    for (int i = 0; i < n; i++) {
        tg_gov_ticket_t t;
        tg_gov_verdict_t v;
        if (admit1(c, p, now, r, &t, &v) == 0) ok++;
    }
    return ok;
}

static tg_gov_status_t status1(tg_gov_counters_t *c, const tg_policy_t *p, int64_t now)
{
    tg_gov_scope_t sc = {c, p, "k1"};
    tg_gov_status_t st;
    tg_gov_status(&sc, now, &st);
    return st;
}

/* Refused at now, with the verdict's main fields as given. */
static tg_gov_verdict_t refused(tg_gov_counters_t *c, const tg_policy_t *p, int64_t now, int64_t r,
                                int reason, int64_t limit, int64_t used, int64_t reset)
{
    tg_gov_ticket_t t;
    tg_gov_verdict_t v;
    assert_int_equal(admit1(c, p, now, r, &t, &v), 1);
    assert_int_equal(t.active, 0);
    assert_int_equal(v.reason, reason);
    assert_int_equal(v.scope, TG_SCOPE_KEY);
    assert_string_equal(v.scope_id, "k1");
    assert_int_equal(v.limit, limit);
    assert_int_equal(v.used, used);
    assert_int_equal(v.reset_ms, reset);
    return v;
}

static tg_gov_t *gov_new(void)
{
    tg_gov_t *g;
    assert_int_equal(tg_gov_create(&g), 0);
    return g;
}

/* ---- 1. rate and burst ------------------------------------------------------- */

static void test_rate_burst(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", NULL);
    tg_policy_t p = {.all_models = 1};
    p.limits.rate_milli = 2000; /* 2/s */
    p.limits.burst = 5;
    int64_t t0 = utc(2026, 3, 11, 12, 0, 0, 123);

    assert_int_equal(status1(c, &p, t0).rate.used, 0); /* full at first */
    assert_int_equal(admit_n(c, &p, t0, 0, 5), 5);
    tg_gov_verdict_t v = refused(c, &p, t0, 0, TG_GOV_RATE, 5, 5, t0 + 500);
    assert_int_equal(v.status, 429);
    assert_string_equal(v.code, "rate_limited");
    refused(c, &p, t0 + 499, 0, TG_GOV_RATE, 5, 5, t0 + 500);
    refused(c, &p, t0 - 1000, 0, TG_GOV_RATE, 5, 5, t0 + 500); /* an earlier clock adds nothing */
    assert_int_equal(admit_n(c, &p, t0 + 500, 0, 1), 1);
    refused(c, &p, t0 + 500, 0, TG_GOV_RATE, 5, 5, t0 + 1000);
    tg_gov_status_t st = status1(c, &p, t0 + 750); /* half a token back */
    assert_int_equal(st.rate.limit, 5);
    assert_int_equal(st.rate.used, 5);
    assert_int_equal(st.rate.reset_ms, t0 + 500 + 5 * 500); /* full again */

    /* Ten seconds later: full, never above burst. */
    int64_t t1 = t0 + 10500;
    st = status1(c, &p, t1);
    assert_int_equal(st.rate.used, 0);
    assert_int_equal(st.rate.reset_ms, t1);
    assert_int_equal(admit_n(c, &p, t1, 0, 6), 5);
    refused(c, &p, t1, 0, TG_GOV_RATE, 5, 5, t1 + 500);

    /* 0.5/s, burst defaulting to the rate rounded up: one call per 2 s. */
    tg_gov_counters_t *c2 = tg_gov_counters(g, "key:k2", NULL);
    tg_policy_t half = {.all_models = 1};
    half.limits.rate_milli = 500;
    assert_int_equal(admit_n(c2, &half, t0, 0, 3), 1);
    refused(c2, &half, t0, 0, TG_GOV_RATE, 1, 1, t0 + 2000);
    refused(c2, &half, t0 + 1999, 0, TG_GOV_RATE, 1, 1, t0 + 2000);
    assert_int_equal(admit_n(c2, &half, t0 + 2000, 0, 2), 1);

    /* 1.5/s: the wait for a token rounds up to the next ms (666.67 -> 667). */
    tg_gov_counters_t *c3 = tg_gov_counters(g, "key:k3", NULL);
    tg_policy_t odd = {.all_models = 1};
    odd.limits.rate_milli = 1500;
    odd.limits.burst = 2;
    assert_int_equal(admit_n(c3, &odd, t0, 0, 3), 2);
    refused(c3, &odd, t0, 0, TG_GOV_RATE, 2, 2, t0 + 667);
    refused(c3, &odd, t0 + 666, 0, TG_GOV_RATE, 2, 2, t0 + 667);
    assert_int_equal(admit_n(c3, &odd, t0 + 667, 0, 2), 1);

    /* A burst that shrinks under a full bucket clamps it. */
    assert_int_equal(status1(c3, &odd, t0 + 100000).rate.used, 0);
    odd.limits.burst = 1;
    assert_int_equal(admit_n(c3, &odd, t0 + 100000, 0, 3), 1);
    tg_gov_destroy(g);
}

/* ---- 2. requests per minute --------------------------------------------------- */

static void test_rpm(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", NULL);
    tg_policy_t p = {.all_models = 1};
    p.limits.rpm = 3;
    int64_t m0 = utc(2026, 3, 11, 12, 34, 0, 0);

    assert_int_equal(admit_n(c, &p, m0 + 10000, 0, 3), 3);
    tg_gov_verdict_t v = refused(c, &p, m0 + 10000, 0, TG_GOV_RPM, 3, 3, m0 + 60000);
    assert_int_equal(v.status, 429);
    assert_string_equal(v.code, "requests_per_minute");
    for (int i = 0; i < 5; i++)
        refused(c, &p, m0 + 59999, 0, TG_GOV_RPM, 3, 3, m0 + 60000);
    assert_int_equal(status1(c, &p, m0 + 59999).rpm.used, 3); /* refusals did not count */
    /* The next minute admits exactly rpm again. */
    tg_gov_status_t st = status1(c, &p, m0 + 60000);
    assert_int_equal(st.rpm.used, 0);
    assert_int_equal(st.rpm.limit, 3);
    assert_int_equal(st.rpm.reset_ms, m0 + 120000);
    assert_int_equal(admit_n(c, &p, m0 + 60000, 0, 4), 3);
    refused(c, &p, m0 + 60001, 0, TG_GOV_RPM, 3, 3, m0 + 120000);
    refused(c, &p, m0 + 59000, 0, TG_GOV_RPM, 3, 3, m0 + 120000); /* a lagging clock */

    /* A call refused by another limit leaves no count in the minute. */
    tg_gov_counters_t *c2 = tg_gov_counters(g, "key:k2", NULL);
    tg_policy_t q = {.all_models = 1};
    q.limits.rpm = 2;
    q.limits.concurrency = 1;
    tg_gov_ticket_t a, b;
    tg_gov_verdict_t w;
    assert_int_equal(admit1(c2, &q, m0, 0, &a, &w), 0);
    for (int i = 0; i < 5; i++)
        refused(c2, &q, m0, 0, TG_GOV_CONCURRENCY, 1, 1, 0);
    assert_int_equal(status1(c2, &q, m0).rpm.used, 1);
    tg_gov_settle(&a, m0, 0, 0);
    assert_int_equal(admit1(c2, &q, m0, 0, &b, &w), 0);
    tg_gov_settle(&b, m0, 0, 0);
    refused(c2, &q, m0, 0, TG_GOV_RPM, 2, 2, m0 + 60000);
    tg_gov_destroy(g);
}

/* ---- 3. tokens per minute ---------------------------------------------------- */

static void test_tpm(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", NULL);
    tg_policy_t p = {.all_models = 1};
    p.limits.tpm = 1000;
    int64_t m0 = utc(2026, 3, 11, 8, 0, 0, 0);
    tg_gov_ticket_t t;
    tg_gov_verdict_t v;

    assert_int_equal(admit1(c, &p, m0 + 1000, 0, &t, &v), 0);
    tg_gov_settle(&t, m0 + 2000, 600, 0);
    assert_int_equal(admit1(c, &p, m0 + 3000, 0, &t, &v), 0);
    tg_gov_settle(&t, m0 + 4000, 399, 0);
    assert_int_equal(admit1(c, &p, m0 + 5000, 0, &t, &v), 0); /* 999 < 1000 */
    tg_gov_settle(&t, m0 + 6000, 1, 0);
    v = refused(c, &p, m0 + 7000, 0, TG_GOV_TPM, 1000, 1000, m0 + 60000);
    assert_int_equal(v.status, 429);
    assert_string_equal(v.code, "tokens_per_minute");
    tg_gov_status_t st = status1(c, &p, m0 + 7000);
    assert_int_equal(st.tpm.limit, 1000);
    assert_int_equal(st.tpm.used, 1000);
    assert_int_equal(st.tpm.reset_ms, m0 + 60000);

    /* The next minute starts at zero; tokens count in the minute they settle. */
    assert_int_equal(admit1(c, &p, m0 + 60000, 0, &t, &v), 0);
    assert_int_equal(status1(c, &p, m0 + 60000).tpm.used, 0);
    tg_gov_settle(&t, m0 + 120000, 5000, 0);
    assert_int_equal(status1(c, &p, m0 + 119999).tpm.used, 5000); /* newest minute seen */
    refused(c, &p, m0 + 120001, 0, TG_GOV_TPM, 1000, 5000, m0 + 180000);
    assert_int_equal(admit_n(c, &p, m0 + 180000, 0, 1), 1);
    tg_gov_destroy(g);
}

/* ---- 4. concurrency ---------------------------------------------------------- */

static void test_concurrency(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", NULL);
    tg_policy_t p = {.all_models = 1};
    p.limits.concurrency = 3;
    int64_t now = utc(2026, 3, 11, 8, 0, 0, 0);
    tg_gov_ticket_t t[4];
    tg_gov_verdict_t v;

    for (int i = 0; i < 3; i++) {
        assert_int_equal(admit1(c, &p, now, 0, &t[i], &v), 0);
        assert_int_equal(t[i].active, 1);
        assert_int_equal(t[i].holds_slot[TG_SCOPE_KEY], 1);
    }
    v = refused(c, &p, now, 0, TG_GOV_CONCURRENCY, 3, 3, 0);
    assert_int_equal(v.status, 429);
    assert_string_equal(v.code, "concurrency_limited");
    tg_gov_settle(&t[1], now, 0, 0);
    assert_int_equal(t[1].active, 0);
    tg_gov_settle(&t[1], now, 0, 0); /* idempotent */
    assert_int_equal(status1(c, &p, now).concurrency.used, 2);
    assert_int_equal(admit1(c, &p, now, 0, &t[3], &v), 0);
    refused(c, &p, now, 0, TG_GOV_CONCURRENCY, 3, 3, 0);
    tg_gov_settle(&t[0], now, 0, 0);
    tg_gov_settle(&t[2], now, 0, 0);
    tg_gov_settle(&t[3], now, 0, 0);
    tg_gov_status_t st = status1(c, &p, now);
    assert_int_equal(st.concurrency.used, 0);
    assert_int_equal(st.concurrency.limit, 3);
    assert_int_equal(st.concurrency.reset_ms, 0);
    tg_gov_destroy(g);
}

/* ---- 5. daily and monthly quotas --------------------------------------------- */

static void test_quota_month_ends(void **state)
{
    /* {last ms of a month's last day} and the first of the next month. */
    static const struct {
        int y, m, d, ny, nm;
    } ends[] = {
        {2026, 1, 31, 2026, 2}, {2027, 2, 28, 2027, 3},  {2028, 2, 29, 2028, 3},
        {2026, 4, 30, 2026, 5}, {2026, 12, 31, 2027, 1},
    };
    tg_gov_t *g = gov_new();
    tg_policy_t p = {.all_models = 1};
    p.limits.requests_per_month = 3;
    for (size_t i = 0; i < sizeof(ends) / sizeof(ends[0]); i++) {
        char name[32];
        snprintf(name, sizeof(name), "key:%zu", i);
        tg_gov_counters_t *c = tg_gov_counters(g, name, NULL);
        int64_t first = date(ends[i].y, ends[i].m, 1);
        int64_t last = utc(ends[i].y, ends[i].m, ends[i].d, 23, 59, 59, 999);
        int64_t next = date(ends[i].ny, ends[i].nm, 1);
        assert_int_equal(last + 1, next);
        assert_int_equal(admit_n(c, &p, first, 0, 3), 3);
        tg_gov_verdict_t v = refused(c, &p, last, 0, TG_GOV_MONTH, 3, 3, next);
        assert_string_equal(v.code, "monthly_quota");
        assert_int_equal(v.status, 429);
        tg_gov_status_t st = status1(c, &p, last);
        assert_int_equal(st.month.used, 3);
        assert_int_equal(st.month.reset_ms, next);
        assert_int_equal(admit_n(c, &p, next, 0, 4), 3);
    }
    tg_gov_destroy(g);
}

static void test_quota_days(void **state)
{
    tg_gov_t *g = gov_new();
    tg_policy_t p = {.all_models = 1};
    p.limits.requests_per_day = 1;
    p.limits.requests_per_month = 2;

    /* Leap year: Feb 28 -> Feb 29 -> Mar 1; day is reported before month. */
    tg_gov_counters_t *c = tg_gov_counters(g, "key:leap", NULL);
    assert_int_equal(admit_n(c, &p, utc(2028, 2, 28, 12, 0, 0, 0), 0, 1), 1);
    tg_gov_verdict_t v =
        refused(c, &p, utc(2028, 2, 28, 23, 59, 59, 999), 0, TG_GOV_DAY, 1, 1, date(2028, 2, 29));
    assert_string_equal(v.code, "daily_quota");
    assert_int_equal(v.status, 429);
    assert_int_equal(admit_n(c, &p, date(2028, 2, 29), 0, 1), 1);
    refused(c, &p, utc(2028, 2, 29, 23, 59, 59, 999), 0, TG_GOV_DAY, 1, 1, date(2028, 3, 1));
    tg_gov_status_t st = status1(c, &p, utc(2028, 2, 29, 18, 0, 0, 0));
    assert_int_equal(st.day.used, 1);
    assert_int_equal(st.day.limit, 1);
    assert_int_equal(st.day.reset_ms, date(2028, 3, 1));
    assert_int_equal(st.month.used, 2);
    assert_int_equal(st.month.limit, 2);
    assert_int_equal(st.month.reset_ms, date(2028, 3, 1));
    /* When the day and the month both refuse, the day is reported. */
    tg_policy_t p2 = p;
    p2.limits.requests_per_month = 1;
    refused(c, &p2, utc(2028, 2, 29, 1, 0, 0, 0), 0, TG_GOV_DAY, 1, 1, date(2028, 3, 1));
    assert_int_equal(admit_n(c, &p, date(2028, 3, 1), 0, 1), 1);

    /* A day whose end is the end of the year. */
    c = tg_gov_counters(g, "key:nye", NULL);
    assert_int_equal(admit_n(c, &p, utc(2026, 12, 30, 10, 0, 0, 0), 0, 1), 1);
    assert_int_equal(admit_n(c, &p, utc(2026, 12, 31, 10, 0, 0, 0), 0, 1), 1);
    refused(c, &p, utc(2026, 12, 31, 23, 59, 59, 999), 0, TG_GOV_DAY, 1, 1, date(2027, 1, 1));
    p2.limits.requests_per_day = 0;
    p2.limits.requests_per_month = 2;
    refused(c, &p2, utc(2026, 12, 31, 23, 0, 0, 0), 0, TG_GOV_MONTH, 2, 2, date(2027, 1, 1));
    assert_int_equal(admit_n(c, &p, date(2027, 1, 1), 0, 2), 1);
    tg_gov_destroy(g);
}

static void test_quota_seed(void **state)
{
    tg_gov_t *g = gov_new();
    int created = 0;
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", &created);
    assert_int_equal(created, 1);
    tg_policy_t p = {.all_models = 1};
    p.limits.requests_per_day = 5;
    p.limits.requests_per_month = 10;
    int64_t d = utc(2026, 3, 11, 9, 0, 0, 0);
    tg_gov_seed_t s = {.day_requests = 4, .month_requests = 9};
    tg_gov_seed(c, d, &s);
    tg_gov_status_t st = status1(c, &p, d);
    assert_int_equal(st.day.used, 4);
    assert_int_equal(st.month.used, 9);
    assert_int_equal(admit_n(c, &p, d, 0, 2), 1);
    refused(c, &p, d, 0, TG_GOV_DAY, 5, 5, date(2026, 3, 12));
    /* The seeded day is over, the month is not. */
    refused(c, &p, date(2026, 3, 12), 0, TG_GOV_MONTH, 10, 10, date(2026, 4, 1));
    st = status1(c, &p, date(2026, 3, 12));
    assert_int_equal(st.day.used, 0);
    assert_int_equal(st.month.used, 10);
    /* Seeding adds to what is counted. */
    tg_gov_seed_t more = {.day_requests = 2};
    tg_gov_seed(c, date(2026, 3, 12), &more);
    tg_gov_seed(c, date(2026, 3, 12), &more);
    assert_int_equal(status1(c, &p, date(2026, 3, 12)).day.used, 4);
    assert_int_equal(admit_n(c, &p, date(2026, 4, 1), 0, 6), 5);
    tg_gov_destroy(g);
}

/* ---- 6. budgets --------------------------------------------------------------- */

static tg_policy_t budget_policy(int period, int mode, int64_t pico)
{
    tg_policy_t p = {.all_models = 1, .nbudgets = 1};
    p.budgets[0] = (tg_budget_def_t){period, mode, pico};
    return p;
}

static void test_budget_hard_day(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", NULL);
    tg_policy_t p = budget_policy(TG_PERIOD_DAY, TG_BUDGET_HARD, 1000);
    int64_t now = utc(2026, 3, 11, 15, 0, 0, 0);
    tg_gov_ticket_t t[6];
    tg_gov_verdict_t v;

    for (int i = 0; i < 3; i++) { /* floor(1000 / 300) */
        assert_int_equal(admit1(c, &p, now, 300, &t[i], &v), 0);
        assert_int_equal(t[i].reserved[TG_SCOPE_KEY][TG_PERIOD_DAY], 300);
        assert_int_equal(t[i].soft_over, 0);
    }
    v = refused(c, &p, now, 300, TG_GOV_BUDGET, 1000, 900, date(2026, 3, 12));
    assert_int_equal(v.status, 402);
    assert_string_equal(v.code, "budget_exceeded");
    assert_int_equal(v.period, TG_PERIOD_DAY);
    assert_int_equal(v.requested, 300);

    /* A real cost below the reservation frees the difference. */
    tg_gov_settle(&t[0], now, 10, 100);
    tg_gov_status_t st = status1(c, &p, now);
    assert_int_equal(st.nbudgets, 1);
    assert_int_equal(st.budgets[0].limit, 1000);
    assert_int_equal(st.budgets[0].used, 700);
    assert_int_equal(st.budget_spent[0], 100);
    assert_int_equal(st.budgets[0].reset_ms, date(2026, 3, 12));
    assert_int_equal(admit1(c, &p, now, 300, &t[3], &v), 0); /* exactly to the budget */
    refused(c, &p, now, 1, TG_GOV_BUDGET, 1000, 1000, date(2026, 3, 12));
    assert_int_equal(admit1(c, &p, now, 0, &t[4], &v), 0); /* nothing more asked */
    for (int i = 1; i < 4; i++)
        tg_gov_settle(&t[i], now, 0, 300);
    tg_gov_settle(&t[4], now, 0, 50); /* the real cost can pass the budget */
    st = status1(c, &p, now);
    assert_int_equal(st.budgets[0].used, 1050);
    assert_int_equal(st.budget_spent[0], 1050);
    refused(c, &p, now, 0, TG_GOV_BUDGET, 1000, 1050, date(2026, 3, 12));

    /* The next day starts at zero. */
    st = status1(c, &p, date(2026, 3, 12));
    assert_int_equal(st.budgets[0].used, 0);
    assert_int_equal(st.budget_spent[0], 0);
    assert_int_equal(st.budgets[0].reset_ms, date(2026, 3, 13));
    assert_int_equal(admit1(c, &p, date(2026, 3, 12), 1000, &t[5], &v), 0);
    tg_gov_settle(&t[5], date(2026, 3, 12), 0, 1000);
    tg_gov_destroy(g);
}

static void test_budget_week_month(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_verdict_t v;

    /* Weeks start on Monday: 2026-03-11 is a Wednesday, 03-16 a Monday. */
    tg_gov_counters_t *c = tg_gov_counters(g, "key:week", NULL);
    tg_policy_t w = budget_policy(TG_PERIOD_WEEK, TG_BUDGET_HARD, 1000);
    assert_int_equal(admit_n(c, &w, utc(2026, 3, 11, 12, 0, 0, 0), 400, 3), 2);
    v = refused(c, &w, utc(2026, 3, 11, 12, 0, 0, 0), 400, TG_GOV_BUDGET, 1000, 800,
                date(2026, 3, 16));
    assert_int_equal(v.period, TG_PERIOD_WEEK);
    refused(c, &w, date(2026, 3, 9), 400, TG_GOV_BUDGET, 1000, 800, date(2026, 3, 16));
    refused(c, &w, utc(2026, 3, 15, 23, 59, 59, 999), 400, TG_GOV_BUDGET, 1000, 800,
            date(2026, 3, 16));
    assert_int_equal(admit_n(c, &w, date(2026, 3, 16), 400, 3), 2);
    /* A week across the year's end: Mon 2026-12-28 to Mon 2027-01-04. */
    c = tg_gov_counters(g, "key:week2", NULL);
    assert_int_equal(admit_n(c, &w, utc(2026, 12, 30, 1, 0, 0, 0), 400, 1), 1);
    assert_int_equal(admit_n(c, &w, utc(2027, 1, 2, 1, 0, 0, 0), 400, 2), 1);
    refused(c, &w, utc(2027, 1, 3, 23, 0, 0, 0), 400, TG_GOV_BUDGET, 1000, 800, date(2027, 1, 4));
    assert_int_equal(admit_n(c, &w, date(2027, 1, 4), 400, 1), 1);

    tg_gov_counters_t *m = tg_gov_counters(g, "key:month", NULL);
    tg_policy_t mp = budget_policy(TG_PERIOD_MONTH, TG_BUDGET_HARD, 1000);
    assert_int_equal(admit_n(m, &mp, date(2026, 2, 1), 600, 2), 1);
    v = refused(m, &mp, utc(2026, 2, 28, 23, 59, 59, 999), 600, TG_GOV_BUDGET, 1000, 600,
                date(2026, 3, 1));
    assert_int_equal(v.period, TG_PERIOD_MONTH);
    assert_int_equal(admit_n(m, &mp, date(2026, 3, 1), 600, 2), 1);
    tg_gov_destroy(g);
}

static void test_budget_soft(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", NULL);
    tg_policy_t p = budget_policy(TG_PERIOD_DAY, TG_BUDGET_SOFT, 1000);
    int64_t now = utc(2026, 3, 11, 15, 0, 0, 0);
    tg_gov_ticket_t t[5];
    tg_gov_verdict_t v;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(admit1(c, &p, now, 300, &t[i], &v), 0);
        assert_int_equal(t[i].soft_over, 0);
    }
    assert_int_equal(admit1(c, &p, now, 100, &t[3], &v), 0); /* exactly to it: not over */
    assert_int_equal(t[3].soft_over, 0);
    assert_int_equal(admit1(c, &p, now, 1, &t[4], &v), 0);
    assert_int_equal(t[4].soft_over, 1);
    tg_gov_status_t st = status1(c, &p, now);
    assert_int_equal(st.budgets[0].used, 1001); /* the reservation shows */
    for (int i = 0; i < 5; i++)
        tg_gov_settle(&t[i], now, 0, 0);
    assert_int_equal(status1(c, &p, now).budgets[0].used, 0);

    /* Soft on the day, hard on the month: flagged, then refused by the month. */
    tg_gov_counters_t *c2 = tg_gov_counters(g, "key:k2", NULL);
    tg_policy_t q = {.all_models = 1, .nbudgets = 2};
    q.budgets[0] = (tg_budget_def_t){TG_PERIOD_DAY, TG_BUDGET_SOFT, 500};
    q.budgets[1] = (tg_budget_def_t){TG_PERIOD_MONTH, TG_BUDGET_HARD, 1000};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(admit1(c2, &q, now, 300, &t[i], &v), 0);
        assert_int_equal(t[i].soft_over, i > 0);
    }
    v = refused(c2, &q, now, 300, TG_GOV_BUDGET, 1000, 900, date(2026, 4, 1));
    assert_int_equal(v.period, TG_PERIOD_MONTH);
    st = status1(c2, &q, now);
    assert_int_equal(st.nbudgets, 2);
    assert_int_equal(st.budgets[0].limit, 500);
    assert_int_equal(st.budgets[0].used, 900);
    assert_int_equal(st.budgets[0].reset_ms, date(2026, 3, 12));
    assert_int_equal(st.budgets[1].limit, 1000);
    assert_int_equal(st.budgets[1].used, 900);
    assert_int_equal(st.budgets[1].reset_ms, date(2026, 4, 1));
    tg_gov_destroy(g);
}

/* A reservation from a period that ended is not charged to the next one. */
static void test_budget_settle_after_rollover(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", NULL);
    tg_policy_t p = {.all_models = 1, .nbudgets = 2};
    p.budgets[0] = (tg_budget_def_t){TG_PERIOD_DAY, TG_BUDGET_HARD, 1000};
    p.budgets[1] = (tg_budget_def_t){TG_PERIOD_MONTH, TG_BUDGET_HARD, 10000};
    tg_gov_ticket_t old, cur;
    tg_gov_verdict_t v;

    assert_int_equal(admit1(c, &p, utc(2026, 3, 11, 23, 59, 59, 0), 800, &old, &v), 0);
    int64_t d1 = date(2026, 3, 12);
    tg_gov_status_t st = status1(c, &p, d1 + 500);
    assert_int_equal(st.budgets[0].used, 0);
    assert_int_equal(st.budgets[1].used, 800);
    /* The new day admits a full reservation before the old call settles. */
    assert_int_equal(admit1(c, &p, d1 + 600, 1000, &cur, &v), 0);
    tg_gov_settle(&old, d1 + 1000, 0, 700);
    st = status1(c, &p, d1 + 1000);
    assert_int_equal(st.budgets[0].used, 1000); /* untouched */
    assert_int_equal(st.budget_spent[0], 0);
    assert_int_equal(st.budgets[1].used, 1700); /* the month goes on */
    assert_int_equal(st.budget_spent[1], 700);
    tg_gov_settle(&cur, d1 + 2000, 0, 900);
    st = status1(c, &p, d1 + 2000);
    assert_int_equal(st.budgets[0].used, 900);
    assert_int_equal(st.budget_spent[0], 900);
    assert_int_equal(st.budgets[1].used, 1600);

    /* Settled in a new month: charged nowhere. */
    assert_int_equal(admit1(c, &p, utc(2026, 3, 31, 23, 59, 0, 0), 500, &old, &v), 0);
    tg_gov_settle(&old, date(2026, 4, 1), 0, 500);
    st = status1(c, &p, date(2026, 4, 1));
    assert_int_equal(st.budgets[0].used, 0);
    assert_int_equal(st.budgets[1].used, 0);
    tg_gov_destroy(g);
}

static void test_budget_seed(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", NULL);
    tg_policy_t p = {.all_models = 1, .nbudgets = 3};
    p.budgets[0] = (tg_budget_def_t){TG_PERIOD_DAY, TG_BUDGET_HARD, 1000};
    p.budgets[1] = (tg_budget_def_t){TG_PERIOD_WEEK, TG_BUDGET_HARD, 2000};
    p.budgets[2] = (tg_budget_def_t){TG_PERIOD_MONTH, TG_BUDGET_HARD, 6000};
    int64_t now = utc(2026, 3, 11, 9, 0, 0, 0);
    tg_gov_seed_t s = {.day_pico = 800, .week_pico = 1500, .month_pico = 5000};
    tg_gov_seed(c, now, &s);
    tg_gov_status_t st = status1(c, &p, now);
    assert_int_equal(st.budgets[0].used, 800);
    assert_int_equal(st.budget_spent[0], 800);
    assert_int_equal(st.budgets[1].used, 1500);
    assert_int_equal(st.budgets[1].reset_ms, date(2026, 3, 16));
    assert_int_equal(st.budgets[2].used, 5000);
    refused(c, &p, now, 300, TG_GOV_BUDGET, 1000, 800, date(2026, 3, 12));
    assert_int_equal(admit_n(c, &p, now, 200, 1), 1);
    assert_int_equal(admit_n(c, &p, now, 0, 1), 1);
    refused(c, &p, now, 1, TG_GOV_BUDGET, 1000, 1000, date(2026, 3, 12));
    /* Next day: the week (1700 committed) refuses 400. */
    tg_gov_verdict_t v =
        refused(c, &p, date(2026, 3, 12), 400, TG_GOV_BUDGET, 2000, 1700, date(2026, 3, 16));
    assert_int_equal(v.period, TG_PERIOD_WEEK);
    tg_gov_destroy(g);
}

/* ---- 7. all or nothing, and which refusal is reported ------------------------- */

static void test_all_or_nothing(void **state)
{
    tg_gov_t *g = gov_new();
    tg_policy_t kp = {.all_models = 1, .nbudgets = 1};
    kp.limits = (tg_limits_def_t){.rate_milli = 10000,
                                  .burst = 10,
                                  .rpm = 100,
                                  .tpm = 100000,
                                  .concurrency = 10,
                                  .requests_per_day = 1000,
                                  .requests_per_month = 10000};
    kp.budgets[0] = (tg_budget_def_t){TG_PERIOD_DAY, TG_BUDGET_HARD, 1000000};
    tg_policy_t tp = budget_policy(TG_PERIOD_DAY, TG_BUDGET_HARD, 1000);
    tg_policy_t up = {.all_models = 1};
    up.limits.concurrency = 1;
    tg_gov_scope_t sc[TG_SCOPES] = {
        {tg_gov_counters(g, "key:k1", NULL), &kp, "k1"},
        {tg_gov_counters(g, "team:t1", NULL), &tp, "t1"},
        {tg_gov_counters(g, "unit:u1", NULL), &up, "u1"},
    };
    int64_t now = utc(2026, 3, 11, 9, 30, 0, 0);
    tg_gov_ticket_t t, t2;
    tg_gov_verdict_t v;
    tg_gov_status_t before[TG_SCOPES], after[TG_SCOPES];

    /* One call in flight so every counter is off zero. */
    assert_int_equal(tg_gov_admit(sc, now, 500, &t, &v), 0);
    for (int s = 0; s < TG_SCOPES; s++)
        tg_gov_status(&sc[s], now, &before[s]);
    assert_int_equal(before[0].rate.used, 1);
    assert_int_equal(before[0].concurrency.used, 1);
    assert_int_equal(before[0].rpm.used, 1);
    assert_int_equal(before[0].day.used, 1);
    assert_int_equal(before[0].month.used, 1);
    assert_int_equal(before[0].budgets[0].used, 500);
    assert_int_equal(before[1].concurrency.used, 1); /* counted, though unlimited */

    /* The team refuses: the key keeps nothing of the call. */
    assert_int_equal(tg_gov_admit(sc, now, 600, &t2, &v), 1);
    assert_int_equal(t2.active, 0);
    assert_int_equal(v.reason, TG_GOV_BUDGET);
    assert_int_equal(v.scope, TG_SCOPE_TEAM);
    assert_string_equal(v.scope_id, "t1");
    assert_int_equal(v.limit, 1000);
    assert_int_equal(v.used, 500);
    assert_int_equal(v.requested, 600);
    for (int s = 0; s < TG_SCOPES; s++) {
        tg_gov_status(&sc[s], now, &after[s]);
        assert_memory_equal(&before[s], &after[s], sizeof(before[s]));
    }
    /* The unit refuses: neither the key nor the team keeps anything. */
    assert_int_equal(tg_gov_admit(sc, now, 100, &t2, &v), 1);
    assert_int_equal(v.reason, TG_GOV_CONCURRENCY);
    assert_int_equal(v.scope, TG_SCOPE_UNIT);
    assert_string_equal(v.scope_id, "u1");
    for (int s = 0; s < TG_SCOPES; s++) {
        tg_gov_status(&sc[s], now, &after[s]);
        assert_memory_equal(&before[s], &after[s], sizeof(before[s]));
    }
    /* The key comes first: its budget before the team's concurrency. */
    tp.limits.concurrency = 1;
    assert_int_equal(tg_gov_admit(sc, now, 2000000, &t2, &v), 1);
    assert_int_equal(v.reason, TG_GOV_BUDGET);
    assert_int_equal(v.scope, TG_SCOPE_KEY);
    tg_gov_settle(&t, now, 100, 400);
    tg_gov_settle(&t, now, 100, 400);
    tg_gov_status(&sc[0], now, &after[0]);
    assert_int_equal(after[0].concurrency.used, 0);
    assert_int_equal(after[0].tpm.used, 100);
    assert_int_equal(after[0].budgets[0].used, 400);
    tg_gov_status(&sc[1], now, &after[1]);
    assert_int_equal(after[1].budgets[0].used, 400);

    /* Absent scopes are skipped; a scope with counters and no policy counts. */
    tg_gov_scope_t only[TG_SCOPES] = {
        {NULL, NULL, NULL}, {sc[1].c, NULL, "t1"}, {NULL, NULL, NULL}};
    assert_int_equal(tg_gov_admit(only, now, 0, &t, &v), 0);
    assert_int_equal(t.holds_slot[TG_SCOPE_KEY], 0);
    assert_int_equal(t.holds_slot[TG_SCOPE_TEAM], 1);
    tg_gov_settle(&t, now, 0, 0);
    tg_gov_destroy(g);
}

/* Counts survive a policy change, so relaxing one limit at a time shows the
 * order: concurrency, rate, rpm, tpm, day, month, budget. */
static void test_refusal_order(void **state)
{
    tg_gov_t *g = gov_new();
    tg_gov_counters_t *c = tg_gov_counters(g, "key:k1", NULL);
    tg_policy_t p = budget_policy(TG_PERIOD_WEEK, TG_BUDGET_HARD, 100);
    p.limits = (tg_limits_def_t){.rate_milli = 1,
                                 .burst = 1,
                                 .rpm = 1,
                                 .tpm = 1,
                                 .concurrency = 1,
                                 .requests_per_day = 1,
                                 .requests_per_month = 1};
    int64_t m0 = utc(2026, 3, 11, 10, 0, 0, 0); /* a Wednesday */
    tg_gov_ticket_t t;
    tg_gov_verdict_t v;
    assert_int_equal(admit1(c, &p, m0, 100, &t, &v), 0);
    refused(c, &p, m0, 100, TG_GOV_CONCURRENCY, 1, 1, 0);
    tg_gov_settle(&t, m0 + 1000, 5, 100);
    int64_t now = m0 + 2000;
    refused(c, &p, now, 100, TG_GOV_RATE, 1, 1, m0 + 1000000);
    p.limits.rate_milli = p.limits.burst = 0;
    refused(c, &p, now, 100, TG_GOV_RPM, 1, 1, m0 + 60000);
    p.limits.rpm = 0;
    refused(c, &p, now, 100, TG_GOV_TPM, 1, 5, m0 + 60000);
    p.limits.tpm = 0;
    refused(c, &p, now, 100, TG_GOV_DAY, 1, 1, date(2026, 3, 12));
    p.limits.requests_per_day = 0;
    refused(c, &p, now, 100, TG_GOV_MONTH, 1, 1, date(2026, 4, 1));
    p.limits.requests_per_month = 0;
    refused(c, &p, now, 100, TG_GOV_BUDGET, 100, 100, date(2026, 3, 16));
    p.budgets[0].mode = TG_BUDGET_SOFT;
    assert_int_equal(admit1(c, &p, now, 100, &t, &v), 0);
    assert_int_equal(t.soft_over, 1);
    tg_gov_settle(&t, now, 0, 0);
    tg_gov_destroy(g);
}

/* ---- 8. concurrent admission -------------------------------------------------- */

enum { THREADS = 8, CYCLES = 10000, RESERVE = 1000 };

/* One run: THREADS workers share a unit (with the limits under test) and a
 * team (no policy); each has its own key (no policy). */
typedef struct {
    tg_gov_scope_t team, unit;
    int64_t now, budget, concurrency, max_cost;
    int hold; /* spin a while holding an admission, so others meet it */
    /* What the workers hold by their own count: raised after an admission,
     * lowered before its settle, so never above what the counters hold. */
    atomic_llong committed;
    atomic_llong slots;
    atomic_int violations; /* times those passed the budget or the limit */
    atomic_int done;
} stress_t;

typedef struct {
    stress_t *run;
    tg_gov_scope_t scope[TG_SCOPES];
    int64_t settled; /* sum of this thread's costs */
    int admitted, by_budget, by_conc, other;
} worker_t;

static void busy(int n)
{
    for (volatile int k = 0; k < n; k++)
        continue;
}

/* Each cycle ends in a settled call or a budget refusal; a call refused for
 * concurrency is retried (at 2 CPUs, preempted holders can refuse most). */
static void *stress_worker(void *arg)
{
    worker_t *w = arg;
    stress_t *run = w->run;
    uint64_t x = (uint64_t)(uintptr_t)w | 1;
    for (int cycles = 0; cycles < CYCLES;) {
        tg_gov_ticket_t t;
        tg_gov_verdict_t v;
        if (tg_gov_admit(w->scope, run->now, RESERVE, &t, &v)) {
            if (v.reason == TG_GOV_CONCURRENCY) {
                w->by_conc++;
                sched_yield();
                continue;
            }
            w->by_budget += v.reason == TG_GOV_BUDGET;
            w->other += v.reason != TG_GOV_BUDGET;
            cycles++;
            continue;
        }
        if (atomic_fetch_add(&run->committed, RESERVE) + RESERVE > run->budget)
            atomic_fetch_add(&run->violations, 1);
        if (run->concurrency && atomic_fetch_add(&run->slots, 1) + 1 > run->concurrency)
            atomic_fetch_add(&run->violations, 1);
        if (run->hold) busy(1000);
        x ^= x << 13, x ^= x >> 7, x ^= x << 17;
        int64_t cost = run->max_cost ? (int64_t)(x % (uint64_t)(run->max_cost + 1)) : 0;
        atomic_fetch_sub(&run->committed, RESERVE - cost);
        if (run->concurrency) atomic_fetch_sub(&run->slots, 1);
        tg_gov_settle(&t, run->now, 1, cost);
        w->settled += cost;
        w->admitted++;
        cycles++;
    }
    return NULL;
}

typedef struct {
    stress_t *run;
    long samples;
    int64_t max_committed, max_inflight;
} watcher_t;

static void *stress_watcher(void *arg)
{
    watcher_t *w = arg;
    while (!atomic_load(&w->run->done)) {
        tg_gov_status_t st;
        tg_gov_status(&w->run->unit, w->run->now, &st);
        if (st.budgets[0].used > w->max_committed) w->max_committed = st.budgets[0].used;
        if (st.concurrency.used > w->max_inflight) w->max_inflight = st.concurrency.used;
        w->samples++;
    }
    return NULL;
}

/* Runs the workers and checks the counters against what they did. */
static void stress_run(int64_t budget, int64_t concurrency, int64_t max_cost, int hold)
{
    tg_gov_t *g = gov_new();
    tg_policy_t up = budget_policy(TG_PERIOD_DAY, TG_BUDGET_HARD, budget);
    up.limits.concurrency = concurrency;
    static stress_t run;
    memset(&run, 0, sizeof(run));
    run.team = (tg_gov_scope_t){tg_gov_counters(g, "team:t", NULL), NULL, "t"};
    run.unit = (tg_gov_scope_t){tg_gov_counters(g, "unit:u", NULL), &up, "u"};
    run.now = utc(2026, 3, 11, 12, 0, 0, 0);
    run.budget = budget;
    run.concurrency = concurrency;
    run.max_cost = max_cost;
    run.hold = hold;
    static worker_t w[THREADS];
    pthread_t th[THREADS], wt;
    watcher_t watch = {.run = &run};
    assert_int_equal(pthread_create(&wt, NULL, stress_watcher, &watch), 0);
    for (int i = 0; i < THREADS; i++) {
        char name[32];
        snprintf(name, sizeof(name), "key:%d", i);
        memset(&w[i], 0, sizeof(w[i]));
        w[i].run = &run;
        w[i].scope[TG_SCOPE_KEY] = (tg_gov_scope_t){tg_gov_counters(g, name, NULL), NULL, "k"};
        w[i].scope[TG_SCOPE_TEAM] = run.team;
        w[i].scope[TG_SCOPE_UNIT] = run.unit;
        assert_int_equal(pthread_create(&th[i], NULL, stress_worker, &w[i]), 0);
    }
    int64_t settled = 0;
    int admitted = 0, by_budget = 0;
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        settled += w[i].settled;
        admitted += w[i].admitted;
        by_budget += w[i].by_budget;
        assert_int_equal(w[i].admitted + w[i].by_budget, CYCLES);
        assert_int_equal(w[i].other, 0);
    }
    atomic_store(&run.done, 1);
    pthread_join(wt, NULL);

    assert_int_equal(atomic_load(&run.violations), 0);
    assert_true(watch.samples > 0);
    assert_true(watch.max_committed <= budget);
    assert_true(concurrency == 0 || watch.max_inflight <= concurrency);
    assert_true(admitted > 0);
    assert_true(by_budget > 0);
    int64_t now = run.now;
    tg_gov_status_t st = status1(run.unit.c, &up, now);
    assert_int_equal(st.budget_spent[0], settled);
    assert_int_equal(st.budgets[0].used, settled); /* nothing reserved */
    assert_true(settled <= budget);
    assert_int_equal(st.concurrency.used, 0);
    /* The scopes without limits counted the same calls. */
    tg_policy_t day = budget_policy(TG_PERIOD_DAY, TG_BUDGET_HARD, 1);
    st = status1(run.team.c, &day, now);
    assert_int_equal(st.budget_spent[0], settled);
    assert_int_equal(st.budgets[0].used, settled);
    assert_int_equal(st.concurrency.used, 0);
    assert_int_equal(st.tpm.used, admitted);
    assert_int_equal(st.day.used, admitted);
    int64_t keys = 0;
    for (int i = 0; i < THREADS; i++) {
        st = status1(w[i].scope[TG_SCOPE_KEY].c, &day, now);
        assert_int_equal(st.day.used, w[i].admitted);
        assert_int_equal(st.budget_spent[0], w[i].settled);
        keys += st.budget_spent[0];
    }
    assert_int_equal(keys, settled);
    tg_gov_destroy(g);
}

/* A budget for about half of the calls' costs, and 3 at once: it runs out. */
static void test_stress_budget(void **state)
{
    stress_run(20000000, 3, RESERVE, 0);
}

/* Calls that cost nothing against a budget for 2 reservations, held ~1 us:
 * admissions race for the last room in it (this catches a check and a take
 * under two lock holds about 9 runs in 10 on 2 CPUs). */
static void test_stress_budget_edge(void **state)
{
    stress_run(2 * RESERVE, 0, 0, 1);
}

enum { RUSH = 200 };

typedef struct {
    tg_gov_scope_t *scope;
    pthread_barrier_t *go;
    tg_gov_ticket_t t;
    int ok, reason; /* cmocka's asserts belong to the main thread */
} rush_t;

static void *rush_one(void *arg)
{
    rush_t *r = arg;
    tg_gov_verdict_t v;
    pthread_barrier_wait(r->go);
    r->ok = tg_gov_admit(r->scope, utc(2026, 3, 11, 12, 0, 0, 0), 100, &r->t, &v) == 0;
    r->reason = r->ok ? 0 : v.reason;
    return NULL;
}

/* 200 calls at once against a budget that fits exactly 10. */
static void test_stress_exact_fit(void **state)
{
    tg_gov_t *g = gov_new();
    tg_policy_t p = budget_policy(TG_PERIOD_MONTH, TG_BUDGET_HARD, 1000);
    tg_gov_scope_t sc[TG_SCOPES] = {
        {NULL, NULL, NULL}, {NULL, NULL, NULL}, {tg_gov_counters(g, "unit:u", NULL), &p, "u"}};
    static rush_t r[RUSH];
    pthread_t th[RUSH];
    pthread_barrier_t go;
    pthread_barrier_init(&go, NULL, RUSH);
    for (int i = 0; i < RUSH; i++) {
        r[i] = (rush_t){.scope = sc, .go = &go};
        assert_int_equal(pthread_create(&th[i], NULL, rush_one, &r[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < RUSH; i++) {
        pthread_join(th[i], NULL);
        ok += r[i].ok;
        if (!r[i].ok) assert_int_equal(r[i].reason, TG_GOV_BUDGET);
    }
    pthread_barrier_destroy(&go);
    assert_int_equal(ok, 10);
    int64_t now = utc(2026, 3, 11, 12, 0, 0, 0);
    tg_gov_status_t st;
    tg_gov_status(&sc[2], now, &st);
    assert_int_equal(st.budgets[0].used, 1000);
    assert_int_equal(st.month.used, 10);
    for (int i = 0; i < RUSH; i++)
        tg_gov_settle(&r[i].t, now, 0, 100);
    tg_gov_status(&sc[2], now, &st);
    assert_int_equal(st.budget_spent[0], 1000);
    assert_int_equal(st.budgets[0].used, 1000);
    assert_int_equal(st.concurrency.used, 0);
    tg_gov_destroy(g);
}

/* ---- 9. registry ------------------------------------------------------------- */

static int cmp_ptr(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (void *const *)a, y = (uintptr_t) * (void *const *)b;
    return x < y ? -1 : x > y;
}

static void test_registry(void **state)
{
    enum { N = 5000 };
    tg_gov_t *g = gov_new();
    int created = -1;
    tg_gov_counters_t *a = tg_gov_counters(g, "key:a", &created);
    assert_non_null(a);
    assert_int_equal(created, 1);
    assert_ptr_equal(tg_gov_counters(g, "key:a", &created), a);
    assert_int_equal(created, 0);
    assert_ptr_equal(tg_gov_counters(g, "key:a", NULL), a);
    assert_ptr_not_equal(tg_gov_counters(g, "team:a", &created), a);
    assert_int_equal(created, 1);
    assert_null(tg_gov_counters(g, NULL, &created));

    /* Many entities: the table grows, the counters do not move. */
    tg_gov_counters_t **ptrs = calloc(N, sizeof(*ptrs));
    char name[32];
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "unit:%d", i);
        ptrs[i] = tg_gov_counters(g, name, &created);
        assert_non_null(ptrs[i]);
        assert_int_equal(created, 1);
    }
    tg_policy_t p = {.all_models = 1};
    p.limits.requests_per_day = 1;
    int64_t now = utc(2026, 3, 11, 12, 0, 0, 0);
    for (int i = 0; i < N; i++) {
        snprintf(name, sizeof(name), "unit:%d", i);
        assert_ptr_equal(tg_gov_counters(g, name, &created), ptrs[i]);
        assert_int_equal(created, 0);
        assert_int_equal(admit_n(ptrs[i], &p, now, 0, 2), 1); /* each its own */
    }
    qsort(ptrs, N, sizeof(*ptrs), cmp_ptr);
    for (int i = 1; i < N; i++)
        assert_ptr_not_equal(ptrs[i - 1], ptrs[i]);
    free(ptrs);
    tg_gov_destroy(g);
    tg_gov_destroy(NULL);
}

enum { REG_THREADS = 4, REG_NAMES = 2000 };

typedef struct {
    tg_gov_t *g;
    int id;
    tg_gov_counters_t *got[REG_NAMES];
    int created;
} reg_worker_t;

static void *reg_worker(void *arg)
{
    reg_worker_t *w = arg;
    for (int k = 0; k < REG_NAMES; k++) {
        int i = w->id % 2 ? REG_NAMES - 1 - k : k; /* half go backwards */
        char name[32];
        int created;
        snprintf(name, sizeof(name), "key:%d", i);
        w->got[i] = tg_gov_counters(w->g, name, &created);
        w->created += created;
    }
    return NULL;
}

static void test_registry_threads(void **state)
{
    tg_gov_t *g = gov_new();
    static reg_worker_t w[REG_THREADS];
    pthread_t th[REG_THREADS];
    for (int i = 0; i < REG_THREADS; i++) {
        memset(&w[i], 0, sizeof(w[i]));
        w[i].g = g;
        w[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, reg_worker, &w[i]), 0);
    }
    int created = 0;
    for (int i = 0; i < REG_THREADS; i++) {
        pthread_join(th[i], NULL);
        created += w[i].created;
    }
    assert_int_equal(created, REG_NAMES); /* each created once */
    for (int i = 1; i < REG_THREADS; i++)
        assert_memory_equal(w[0].got, w[i].got, sizeof(w[0].got));
    tg_gov_destroy(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_rate_burst),
        cmocka_unit_test(test_rpm),
        cmocka_unit_test(test_tpm),
        cmocka_unit_test(test_concurrency),
        cmocka_unit_test(test_quota_month_ends),
        cmocka_unit_test(test_quota_days),
        cmocka_unit_test(test_quota_seed),
        cmocka_unit_test(test_budget_hard_day),
        cmocka_unit_test(test_budget_week_month),
        cmocka_unit_test(test_budget_soft),
        cmocka_unit_test(test_budget_settle_after_rollover),
        cmocka_unit_test(test_budget_seed),
        cmocka_unit_test(test_all_or_nothing),
        cmocka_unit_test(test_refusal_order),
        cmocka_unit_test(test_stress_budget),
        cmocka_unit_test(test_stress_budget_edge),
        cmocka_unit_test(test_stress_exact_fit),
        cmocka_unit_test(test_registry),
        cmocka_unit_test(test_registry_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

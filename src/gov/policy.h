/* policy.h - what a unit, a team or a key may do: which models, how fast, how
 * much. Written by admins as JSON, checked field by field, compiled once into
 * an immutable tg_policy_t that the request path reads without locks.
 *
 *   {
 *     "models": ["anthropic.*", "gpt-4o"],   allow-list; absent = every model
 *     "limits": {
 *       "rate": 10, "burst": 20,             token bucket: requests/s (up to 3
 *                                            decimals) refilled into a bucket of
 *                                            burst (default: rate rounded up)
 *       "rpm": 600,                          requests per UTC minute
 *       "tpm": 100000,                       tokens per UTC minute, settled
 *                                            after each call from its real counts
 *       "concurrency": 8,                    requests in flight at once
 *       "requests_per_day": 10000,           quotas per UTC day / calendar month
 *       "requests_per_month": 200000
 *     },
 *     "budgets": [                           USD per calendar period (UTC; weeks
 *       {"period": "day", "usd": "10.00"},   start on Monday), "hard" (default:
 *       {"period": "month", "usd": "200", "mode": "soft"}   refused) or "soft"
 *     ]                                      (allowed, flagged)
 *   }
 *
 * Every field is optional; an absent limit is no limit. Unknown fields are
 * refused, like the config file's. Model patterns: an exact id, or an id with
 * '*' wildcards (each matches any run of characters, '.' included):
 * "anthropic.*", "*claude-3-5*", "*". An empty list allows nothing. */
#ifndef TG_GOV_POLICY_H
#define TG_GOV_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define TG_POLICY_MAX_MODELS  256
#define TG_POLICY_MAX_BUDGETS 6
#define TG_POLICY_MAX_BYTES   65536 /* the JSON text of one policy */

enum { TG_PERIOD_DAY = 0, TG_PERIOD_WEEK, TG_PERIOD_MONTH };
enum { TG_BUDGET_HARD = 0, TG_BUDGET_SOFT };

typedef struct {
    int period;   /* TG_PERIOD_* */
    int mode;     /* TG_BUDGET_* */
    int64_t pico; /* the budget in picodollars */
} tg_budget_def_t;

/* 0 = no limit for every field. */
typedef struct {
    int64_t rate_milli; /* requests per 1000 s (rate x 1000) */
    int64_t burst;
    int64_t rpm;
    int64_t tpm;
    int64_t concurrency;
    int64_t requests_per_day;
    int64_t requests_per_month;
} tg_limits_def_t;

typedef struct tg_policy {
    int all_models; /* no "models": every model */
    char **models;  /* patterns; NULL-free, nmodels entries */
    size_t nmodels;
    tg_limits_def_t limits;
    tg_budget_def_t budgets[TG_POLICY_MAX_BUDGETS];
    size_t nbudgets;
} tg_policy_t;

/* Compiles a policy from JSON (NULL or an empty object: no restriction).
 * Returns 0, or TG_EINVAL with a message naming the field in err
 * ("limits.rpm: must be a whole number from 1 to 10^12"), or TG_ENOMEM.
 * *out is freed with tg_policy_free. */
int tg_policy_parse(const cJSON *json, tg_policy_t *out, char *err, size_t errcap);
/* The same from text (the store keeps policies as JSON text). */
int tg_policy_parse_text(const char *text, size_t len, tg_policy_t *out, char *err, size_t errcap);
void tg_policy_free(tg_policy_t *p);
/* Writes p back as canonical JSON (fields in the order above, money as exact
 * decimal strings), so equal policies print the same bytes. */
int tg_policy_to_json(const tg_policy_t *p, cJSON **out);

/* Whether pattern ('*' wildcards) matches id in full. */
int tg_glob_match(const char *pattern, const char *id, size_t idlen);
/* Whether p allows model id. */
int tg_policy_allows(const tg_policy_t *p, const char *id, size_t idlen);

/* The calendar period containing now_ms (UTC): its start and end (unix ms).
 * Weeks start on Monday 00:00. */
void tg_period_bounds(int period, int64_t now_ms, int64_t *start, int64_t *end);
const char *tg_period_name(int period); /* "day", "week", "month" */

#endif

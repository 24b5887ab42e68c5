/* policy.c - policies: parsed and checked once, then read-only. */
#include "gov/policy.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"
#include "usage/cost.h"
#include "usage/prices.h"

/* ---- parsing ------------------------------------------------------------------ */

static int fail(char *err, size_t cap, const char *field, const char *msg)
{
    snprintf(err, cap, "%s: %s", field, msg);
    return TG_EINVAL;
}

static int only_fields(const cJSON *o, const char *path, const char *const *allowed, char *err,
                       size_t cap)
{
    if (!cJSON_IsObject(o)) return fail(err, cap, path, "must be an object");
    for (const cJSON *it = o->child; it; it = it->next) {
        int ok = 0;
        for (size_t i = 0; allowed[i] && !ok; i++)
            ok = strcmp(it->string, allowed[i]) == 0;
        if (!ok) {
            char f[160];
            snprintf(f, sizeof(f), "%s.%.100s", path, it->string);
            return fail(err, cap, f, "is not a known field");
        }
    }
    return 0;
}

#define LIMIT_MAX 1000000000000LL /* 10^12 */

/* A whole number from 1 to 10^12. */
static int whole(const cJSON *v, const char *field, int64_t *out, char *err, size_t cap)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 1 || v->valuedouble > (double)LIMIT_MAX ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return fail(err, cap, field, "must be a whole number from 1 to 10^12");
    *out = (int64_t)v->valuedouble;
    return 0;
}

/* rate: requests per second, at most 3 decimals, as rate x 1000. A JSON
 * number's text is not kept by cJSON, so the double is checked to be exactly
 * a multiple of 0.001 once rounded. */
static int rate_milli(const cJSON *v, int64_t *out, char *err, size_t cap)
{
    if (!cJSON_IsNumber(v) || v->valuedouble < 0.001 || v->valuedouble > 1e9)
        return fail(err, cap, "limits.rate", "must be a number from 0.001 to 10^9 (requests/s)");
    double m = v->valuedouble * 1000.0;
    int64_t r = (int64_t)(m + 0.5);
    double diff = m - (double)r, tol = 1e-6 + m * 1e-12; /* relative: large rates */
    if (diff > tol || diff < -tol) return fail(err, cap, "limits.rate", "has more than 3 decimals");
    *out = r;
    return 0;
}

static int parse_limits(const cJSON *o, tg_limits_def_t *l, char *err, size_t cap)
{
    static const char *const fields[] = {
        "rate", "burst", "rpm", "tpm", "concurrency", "requests_per_day", "requests_per_month",
        NULL};
    int rc = only_fields(o, "limits", fields, err, cap);
    if (rc) return rc;
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(o, "rate")) &&
        (rc = rate_milli(v, &l->rate_milli, err, cap)))
        return rc;
    static const struct {
        const char *name, *field;
        size_t off;
    } ints[] = {
        {"burst", "limits.burst", offsetof(tg_limits_def_t, burst)},
        {"rpm", "limits.rpm", offsetof(tg_limits_def_t, rpm)},
        {"tpm", "limits.tpm", offsetof(tg_limits_def_t, tpm)},
        {"concurrency", "limits.concurrency", offsetof(tg_limits_def_t, concurrency)},
        {"requests_per_day", "limits.requests_per_day",
         offsetof(tg_limits_def_t, requests_per_day)},
        {"requests_per_month", "limits.requests_per_month",
         offsetof(tg_limits_def_t, requests_per_month)},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        v = cJSON_GetObjectItemCaseSensitive(o, ints[i].name);
        if (v &&
            (rc = whole(v, ints[i].field, (int64_t *)(void *)((char *)l + ints[i].off), err, cap)))
            return rc;
    }
    if (l->burst && !l->rate_milli)
        return fail(err, cap, "limits.burst", "needs limits.rate (the refill)");
    if (l->rate_milli && !l->burst)
        l->burst = (l->rate_milli + 999) / 1000; /* one second's worth */
    return 0;
}

static int parse_budgets(const cJSON *a, tg_policy_t *p, char *err, size_t cap)
{
    if (!cJSON_IsArray(a)) return fail(err, cap, "budgets", "must be an array");
    size_t i = 0;
    for (const cJSON *b = a->child; b; b = b->next, i++) {
        char path[32];
        snprintf(path, sizeof(path), "budgets[%zu]", i);
        if (i >= TG_POLICY_MAX_BUDGETS) return fail(err, cap, path, "too many budgets (6 at most)");
        static const char *const fields[] = {"period", "usd", "mode", NULL};
        int rc = only_fields(b, path, fields, err, cap);
        if (rc) return rc;
        const cJSON *period = cJSON_GetObjectItemCaseSensitive(b, "period");
        const cJSON *usd = cJSON_GetObjectItemCaseSensitive(b, "usd");
        const cJSON *mode = cJSON_GetObjectItemCaseSensitive(b, "mode");
        tg_budget_def_t *d = &p->budgets[i];
        char f[48];
        snprintf(f, sizeof(f), "%s.period", path);
        if (!cJSON_IsString(period))
            return fail(err, cap, f, "must be \"day\", \"week\" or \"month\"");
        if (strcmp(period->valuestring, "day") == 0)
            d->period = TG_PERIOD_DAY;
        else if (strcmp(period->valuestring, "week") == 0)
            d->period = TG_PERIOD_WEEK;
        else if (strcmp(period->valuestring, "month") == 0)
            d->period = TG_PERIOD_MONTH;
        else
            return fail(err, cap, f, "must be \"day\", \"week\" or \"month\"");
        for (size_t k = 0; k < i; k++)
            if (p->budgets[k].period == d->period)
                return fail(err, cap, f, "a budget for this period is already set");
        snprintf(f, sizeof(f), "%s.usd", path);
        if (!cJSON_IsString(usd))
            return fail(err, cap, f, "must be a decimal string of USD, e.g. \"10.00\"");
        const char *why = tg_price_parse_decimal(usd->valuestring, 12, &d->pico);
        if (why) return fail(err, cap, f, why);
        if (d->pico <= 0) return fail(err, cap, f, "must be more than 0");
        d->mode = TG_BUDGET_HARD;
        if (mode) {
            snprintf(f, sizeof(f), "%s.mode", path);
            if (!cJSON_IsString(mode) ||
                (strcmp(mode->valuestring, "hard") && strcmp(mode->valuestring, "soft")))
                return fail(err, cap, f, "must be \"hard\" or \"soft\"");
            d->mode = strcmp(mode->valuestring, "soft") == 0 ? TG_BUDGET_SOFT : TG_BUDGET_HARD;
        }
        p->nbudgets = i + 1;
    }
    return 0;
}

static int parse_models(const cJSON *a, tg_policy_t *p, char *err, size_t cap)
{
    if (!cJSON_IsArray(a))
        return fail(err, cap, "models", "must be an array of model ids or patterns");
    size_t n = (size_t)cJSON_GetArraySize(a);
    if (n > TG_POLICY_MAX_MODELS) return fail(err, cap, "models", "has more than 256 entries");
    p->models = calloc(n ? n : 1, sizeof(char *));
    if (!p->models) return TG_ENOMEM;
    size_t i = 0;
    for (const cJSON *m = a->child; m; m = m->next, i++) {
        char f[32];
        snprintf(f, sizeof(f), "models[%zu]", i);
        if (!cJSON_IsString(m) || !m->valuestring[0] || strlen(m->valuestring) > 200)
            return fail(err, cap, f, "must be a model id or pattern of 1 to 200 characters");
        for (const char *c = m->valuestring; *c; c++)
            if ((unsigned char)*c < 0x20) return fail(err, cap, f, "has a control character");
        if (!(p->models[i] = strdup(m->valuestring))) return TG_ENOMEM;
        p->nmodels = i + 1;
    }
    return 0;
}

int tg_policy_parse(const cJSON *json, tg_policy_t *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof(*out));
    out->all_models = 1;
    if (!json || cJSON_IsNull(json)) return 0;
    static const char *const fields[] = {"models", "limits", "budgets", NULL};
    int rc = only_fields(json, "policy", fields, err, errcap);
    const cJSON *v;
    if (!rc && (v = cJSON_GetObjectItemCaseSensitive(json, "models"))) {
        out->all_models = 0;
        rc = parse_models(v, out, err, errcap);
    }
    if (!rc && (v = cJSON_GetObjectItemCaseSensitive(json, "limits")))
        rc = parse_limits(v, &out->limits, err, errcap);
    if (!rc && (v = cJSON_GetObjectItemCaseSensitive(json, "budgets")))
        rc = parse_budgets(v, out, err, errcap);
    if (rc) {
        if (rc == TG_ENOMEM) snprintf(err, errcap, "out of memory");
        tg_policy_free(out);
    }
    return rc;
}

int tg_policy_parse_text(const char *text, size_t len, tg_policy_t *out, char *err, size_t errcap)
{
    memset(out, 0, sizeof(*out));
    out->all_models = 1;
    if (!text || len == 0) return 0;
    if (len > TG_POLICY_MAX_BYTES) return fail(err, errcap, "policy", "is larger than 64 KiB");
    cJSON *j = cJSON_ParseWithLength(text, len);
    if (!j) return fail(err, errcap, "policy", "is not valid JSON");
    int rc = tg_policy_parse(j, out, err, errcap);
    cJSON_Delete(j);
    return rc;
}

void tg_policy_free(tg_policy_t *p)
{
    if (!p) return;
    for (size_t i = 0; i < p->nmodels; i++)
        free(p->models[i]);
    free(p->models);
    memset(p, 0, sizeof(*p));
    p->all_models = 1;
}

/* ---- writing ---------------------------------------------------------------------- */

static int add_int(cJSON *o, const char *name, int64_t v)
{
    char buf[24];
    snprintf(buf, sizeof(buf), "%lld", (long long)v);
    return cJSON_AddRawToObject(o, name, buf) ? 0 : TG_ENOMEM;
}

int tg_policy_to_json(const tg_policy_t *p, cJSON **out)
{
    cJSON *o = cJSON_CreateObject();
    int rc = o ? 0 : TG_ENOMEM;
    if (!rc && !p->all_models) {
        cJSON *m = cJSON_AddArrayToObject(o, "models");
        for (size_t i = 0; m && i < p->nmodels; i++)
            cJSON_AddItemToArray(m, cJSON_CreateString(p->models[i]));
        if (!m) rc = TG_ENOMEM;
    }
    const tg_limits_def_t *l = &p->limits;
    if (!rc && (l->rate_milli || l->rpm || l->tpm || l->concurrency || l->requests_per_day ||
                l->requests_per_month)) {
        cJSON *lo = cJSON_AddObjectToObject(o, "limits");
        if (!lo) rc = TG_ENOMEM;
        if (!rc && l->rate_milli) {
            char buf[32];
            snprintf(buf, sizeof(buf), "%lld.%03lld", (long long)(l->rate_milli / 1000),
                     (long long)(l->rate_milli % 1000));
            /* trim "10.000" to "10", "0.500" to "0.5" */
            size_t n = strlen(buf);
            while (buf[n - 1] == '0')
                buf[--n] = '\0';
            if (buf[n - 1] == '.') buf[--n] = '\0';
            if (!cJSON_AddRawToObject(lo, "rate", buf)) rc = TG_ENOMEM;
            if (!rc) rc = add_int(lo, "burst", l->burst);
        }
        static const struct {
            const char *name;
            size_t off;
        } ints[] = {{"rpm", offsetof(tg_limits_def_t, rpm)},
                    {"tpm", offsetof(tg_limits_def_t, tpm)},
                    {"concurrency", offsetof(tg_limits_def_t, concurrency)},
                    {"requests_per_day", offsetof(tg_limits_def_t, requests_per_day)},
                    {"requests_per_month", offsetof(tg_limits_def_t, requests_per_month)}};
        for (size_t i = 0; !rc && i < sizeof(ints) / sizeof(ints[0]); i++) {
            int64_t v = *(const int64_t *)(const void *)((const char *)l + ints[i].off);
            if (v) rc = add_int(lo, ints[i].name, v);
        }
    }
    if (!rc && p->nbudgets) {
        cJSON *a = cJSON_AddArrayToObject(o, "budgets");
        for (size_t i = 0; a && !rc && i < p->nbudgets; i++) {
            cJSON *b = cJSON_CreateObject();
            char usd[32];
            tg_usd_format(p->budgets[i].pico, usd, sizeof(usd));
            if (!b || !cJSON_AddStringToObject(b, "period", tg_period_name(p->budgets[i].period)) ||
                !cJSON_AddStringToObject(b, "usd", usd) ||
                !cJSON_AddStringToObject(b, "mode",
                                         p->budgets[i].mode == TG_BUDGET_SOFT ? "soft" : "hard"))
                rc = TG_ENOMEM;
            if (b) cJSON_AddItemToArray(a, b);
        }
        if (!a) rc = TG_ENOMEM;
    }
    if (rc) {
        cJSON_Delete(o);
        return rc;
    }
    *out = o;
    return 0;
}

/* ---- matching ------------------------------------------------------------------ */

/* Iterative glob with backtracking to the last '*': linear in practice,
 * O(n*m) at worst, no recursion. */
int tg_glob_match(const char *pat, const char *id, size_t n)
{
    size_t i = 0;
    const char *star = NULL;
    size_t star_i = 0;
    while (i < n) {
        if (*pat == '*') {
            star = pat++;
            star_i = i;
        } else if (*pat && *pat == id[i]) {
            pat++;
            i++;
        } else if (star) {
            pat = star + 1;
            i = ++star_i;
        } else {
            return 0;
        }
    }
    while (*pat == '*')
        pat++;
    return *pat == '\0';
}

int tg_policy_allows(const tg_policy_t *p, const char *id, size_t idlen)
{
    if (!p || p->all_models) return 1;
    for (size_t i = 0; i < p->nmodels; i++)
        if (tg_glob_match(p->models[i], id, idlen)) return 1;
    return 0;
}

/* ---- periods ------------------------------------------------------------------ */

const char *tg_period_name(int period)
{
    return period == TG_PERIOD_WEEK ? "week" : period == TG_PERIOD_MONTH ? "month" : "day";
}

static int64_t floor_div(int64_t a, int64_t b)
{
    return a / b - (a % b != 0 && (a < 0) != (b < 0));
}

void tg_period_bounds(int period, int64_t now_ms, int64_t *start, int64_t *end)
{
    const int64_t day = 86400000;
    int64_t d = floor_div(now_ms, day); /* days since 1970-01-01, a Thursday */
    if (period == TG_PERIOD_WEEK) {
        int64_t monday = d - ((d + 3) % 7 + 7) % 7; /* 1970-01-05 was a Monday */
        *start = monday * day;
        *end = *start + 7 * day;
        return;
    }
    if (period == TG_PERIOD_MONTH) {
        /* Civil date of d (Hinnant), then the first of this and next month. */
        int64_t z = d + 719468;
        int64_t era = floor_div(z, 146097);
        int64_t doe = z - era * 146097;
        int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
        int64_t y = yoe + era * 400;
        int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        int64_t mp = (5 * doy + 2) / 153;
        int64_t m = mp < 10 ? mp + 3 : mp - 9;
        if (m <= 2) y++;
        *start = tg_days_from_civil(y, (int)m, 1) * day;
        *end = tg_days_from_civil(m == 12 ? y + 1 : y, m == 12 ? 1 : (int)m + 1, 1) * day;
        return;
    }
    *start = d * day;
    *end = *start + day;
}

/* report.c - chargeback reports from the rollups, in five formats.
 *
 * One table of columns describes every format: its header, which grouping
 * makes it appear, and how to read its value from a row. The formats differ
 * only in how they lay the cells out, so a column cannot be in the CSV and
 * missing from the JSON. */
#include "usage/report.h"

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "usage/cost.h"

/* ---- parsing -------------------------------------------------------------- */

static const struct {
    const char *name;
    unsigned bit;
} group_names[] = {
    {"unit", TG_GROUP_UNIT},      {"team", TG_GROUP_TEAM},     {"key", TG_GROUP_KEY},
    {"model", TG_GROUP_MODEL},    {"region", TG_GROUP_REGION}, {"day", TG_GROUP_DAY},
    {"date", TG_GROUP_DAY},       {"hour", TG_GROUP_HOUR},     {"team_id", TG_GROUP_TEAM},
    {"model_id", TG_GROUP_MODEL},
};

int tg_report_parse_group(const char *s, unsigned *out, char *err, size_t errcap)
{
    unsigned g = 0;
    const char *p = s ? s : "";
    while (*p) {
        size_t len = strcspn(p, ",");
        while (len && (*p == ' '))
            p++, len--;
        size_t n = len;
        while (n && p[n - 1] == ' ')
            n--;
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof(group_names) / sizeof(group_names[0]); i++)
            if (strlen(group_names[i].name) == n && strncmp(group_names[i].name, p, n) == 0)
                bit = group_names[i].bit;
        if (!bit) {
            snprintf(err, errcap,
                     "unknown grouping \"%.*s\" (use unit, team, key, model, region, day, hour)",
                     (int)(n > 40 ? 40 : n), p);
            return TG_EINVAL;
        }
        g |= bit;
        p += len;
        if (*p == ',') p++;
    }
    *out = g;
    return 0;
}

int tg_report_parse_format(const char *s)
{
    static const char *const names[] = {"table", "csv", "json", "jsonl", "markdown"};
    for (int i = 0; s && i < 5; i++)
        if (strcmp(s, names[i]) == 0) return i;
    if (s && strcmp(s, "md") == 0) return TG_REPORT_MARKDOWN;
    return -1;
}

int tg_report_parse_day(const char *s, int64_t *day_ms)
{
    int y, m, d;
    if (!s || strlen(s) != 10 || s[4] != '-' || s[7] != '-' || tg_parse_digits(s, 4, &y) ||
        tg_parse_digits(s + 5, 2, &m) || tg_parse_digits(s + 8, 2, &d) || m < 1 || m > 12 ||
        d < 1 || y < 1970)
        return TG_EINVAL;
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (d > mdays[m - 1] || (m == 2 && d == 29 && !leap)) return TG_EINVAL;
    *day_ms = tg_days_from_civil(y, m, d) * TG_DAY_MS;
    return 0;
}

void tg_report_format_day(int64_t day_ms, char *out, size_t cap)
{
    char iso[32];
    tg_iso8601_ms(iso, sizeof(iso), day_ms);
    snprintf(out, cap, "%.10s", iso);
}

/* ---- money ------------------------------------------------------------------ */

int tg_usd_format_round(int64_t pico, int decimals, char *out, size_t cap)
{
    if (decimals < 0 || decimals >= 12) return tg_usd_format(pico, out, cap);
    int64_t scale = 1;
    for (int i = decimals; i < 12; i++)
        scale *= 10;
    int64_t q = pico / scale, r = pico % scale;
    /* Half away from zero, without overflowing on |r| * 2. */
    if (r >= scale - r && r > 0) q++;
    if (r < 0 && -r >= scale + r) q--;
    /* q is in units of 10^-decimals USD: scale it back to pico to reuse the
     * exact formatter, which trims the trailing zeros. */
    __int128 back = (__int128)q * scale;
    if (back > INT64_MAX || back < INT64_MIN) return TG_ETOOBIG;
    return tg_usd_format((int64_t)back, out, cap);
}

/* ---- building ----------------------------------------------------------------- */

static int add_checked(int64_t *acc, int64_t v)
{
    return __builtin_add_overflow(*acc, v, acc) ? TG_ETOOBIG : 0;
}

static int sum_row(tg_rollup_row_t *t, const tg_rollup_row_t *r)
{
    int64_t *dst[] = {&t->invocations,       &t->input_tokens,       &t->output_tokens,
                      &t->cache_read_tokens, &t->cache_write_tokens, &t->images,
                      &t->cost_input,        &t->cost_output,        &t->cost_cache_read,
                      &t->cost_cache_write,  &t->cost_images,        &t->cost_total,
                      &t->unpriced,          &t->estimated,          &t->failed};
    const int64_t src[] = {r->invocations,       r->input_tokens,       r->output_tokens,
                           r->cache_read_tokens, r->cache_write_tokens, r->images,
                           r->cost_input,        r->cost_output,        r->cost_cache_read,
                           r->cost_cache_write,  r->cost_images,        r->cost_total,
                           r->unpriced,          r->estimated,          r->failed};
    for (size_t i = 0; i < sizeof(src) / sizeof(src[0]); i++)
        if (add_checked(dst[i], src[i])) return TG_ETOOBIG;
    return 0;
}

int tg_report_build(tg_store_t *st, const tg_rollup_query_t *q, tg_report_t *r)
{
    memset(r, 0, sizeof(*r));
    r->from_ms = q->from_ms;
    r->to_ms = q->to_ms;
    r->group = q->group;
    int err = tg_store_rollup_refresh(st, NULL);
    if (!err) err = tg_store_rollup_query(st, q, &r->rows, &r->nrows);
    for (size_t i = 0; !err && i < r->nrows; i++)
        err = sum_row(&r->totals, &r->rows[i]);
    if (err) tg_report_free(r);
    return err;
}

void tg_report_free(tg_report_t *r)
{
    free(r->rows);
    r->rows = NULL;
    r->nrows = 0;
}

/* ---- columns -------------------------------------------------------------------- */

enum { K_TEXT, K_COUNT, K_MONEY };

typedef struct {
    const char *name;
    unsigned group; /* shown only when grouped on this; 0 = always */
    int kind;
    size_t off;   /* of the char array (TEXT) or int64_t (COUNT, MONEY) in a row */
    int optional; /* the table leaves it out when its total is zero */
} col_t;

#define ROFF(f) offsetof(tg_rollup_row_t, f)

/* CSV, JSON and Markdown order: the reference's columns first. */
static const col_t cols[] = {
    {"team_id", TG_GROUP_TEAM, K_TEXT, ROFF(team), 0},
    {"model_id", TG_GROUP_MODEL, K_TEXT, ROFF(model), 0},
    {"input_tokens", 0, K_COUNT, ROFF(input_tokens), 0},
    {"output_tokens", 0, K_COUNT, ROFF(output_tokens), 0},
    {"invocations", 0, K_COUNT, ROFF(invocations), 0},
    {"input_cost", 0, K_MONEY, ROFF(cost_input), 0},
    {"output_cost", 0, K_MONEY, ROFF(cost_output), 0},
    {"unit", TG_GROUP_UNIT, K_TEXT, ROFF(unit), 0},
    {"key_prefix", TG_GROUP_KEY, K_TEXT, ROFF(key_prefix), 0},
    {"cache_read_tokens", 0, K_COUNT, ROFF(cache_read_tokens), 1},
    {"cache_write_tokens", 0, K_COUNT, ROFF(cache_write_tokens), 1},
    {"cache_read_cost", 0, K_MONEY, ROFF(cost_cache_read), 1},
    {"cache_write_cost", 0, K_MONEY, ROFF(cost_cache_write), 1},
    {"images", 0, K_COUNT, ROFF(images), 1},
    {"image_cost", 0, K_MONEY, ROFF(cost_images), 1},
    {"total_cost", 0, K_MONEY, ROFF(cost_total), 0},
    {"unpriced_invocations", 0, K_COUNT, ROFF(unpriced), 1},
    {"estimated_invocations", 0, K_COUNT, ROFF(estimated), 1},
    {"failed_invocations", 0, K_COUNT, ROFF(failed), 1},
    {"region", TG_GROUP_REGION, K_TEXT, ROFF(region), 0},
};
#define NCOLS (sizeof(cols) / sizeof(cols[0]))

/* The table reads better with the dimensions first. */
static const char *const table_order[] = {
    "unit",
    "team_id",
    "key_prefix",
    "model_id",
    "region",
    "invocations",
    "input_tokens",
    "output_tokens",
    "cache_read_tokens",
    "cache_write_tokens",
    "images",
    "input_cost",
    "output_cost",
    "cache_read_cost",
    "cache_write_cost",
    "image_cost",
    "total_cost",
    "unpriced_invocations",
    "estimated_invocations",
    "failed_invocations",
};

static int col_shown(const col_t *c, unsigned group)
{
    return c->group == 0 || (c->group & group);
}

static int64_t col_i64(const col_t *c, const tg_rollup_row_t *r)
{
    return *(const int64_t *)(const void *)((const char *)r + c->off);
}

static const char *col_text(const col_t *c, const tg_rollup_row_t *r)
{
    return (const char *)r + c->off;
}

/* The period column: "date" (YYYY-MM-DD) or "hour" (YYYY-MM-DDTHH:00Z). */
static const char *period_name(unsigned group)
{
    return group & TG_GROUP_HOUR ? "hour" : group & TG_GROUP_DAY ? "date" : NULL;
}

static void period_text(unsigned group, int64_t ms, char *out, size_t cap)
{
    char iso[32];
    tg_iso8601_ms(iso, sizeof(iso), ms);
    if (group & TG_GROUP_HOUR)
        snprintf(out, cap, "%.13s:00Z", iso);
    else
        snprintf(out, cap, "%.10s", iso);
}

/* A cell's text. */
static void cell(const col_t *c, const tg_rollup_row_t *r, int decimals, char *out, size_t cap)
{
    switch (c->kind) {
    case K_TEXT:
        snprintf(out, cap, "%s", col_text(c, r));
        break;
    case K_COUNT:
        snprintf(out, cap, "%lld", (long long)col_i64(c, r));
        break;
    default:
        if (tg_usd_format_round(col_i64(c, r), decimals, out, cap) < 0) snprintf(out, cap, "?");
        break;
    }
}

static void csv_field(tg_buf_t *b, const char *s)
{
    if (!s[strcspn(s, ",\"\r\n")]) {
        tg_buf_appends(b, s);
        return;
    }
    tg_buf_appends(b, "\"");
    for (const char *p = s; *p; p++) {
        if (*p == '"') tg_buf_appends(b, "\""); /* a quote is doubled */
        tg_buf_append(b, p, 1);
    }
    tg_buf_appends(b, "\"");
}

static void write_csv(tg_buf_t *b, const tg_report_t *r, int decimals)
{
    const char *pname = period_name(r->group);
    int first = 1;
    for (size_t i = 0; i < NCOLS; i++) {
        if (!col_shown(&cols[i], r->group)) continue;
        tg_buf_printf(b, "%s%s", first ? "" : ",", cols[i].name);
        first = 0;
    }
    if (pname) tg_buf_printf(b, ",%s", pname);
    tg_buf_appends(b, "\n");
    char v[192];
    for (size_t j = 0; j < r->nrows; j++) {
        first = 1;
        for (size_t i = 0; i < NCOLS; i++) {
            if (!col_shown(&cols[i], r->group)) continue;
            if (!first) tg_buf_appends(b, ",");
            first = 0;
            cell(&cols[i], &r->rows[j], decimals, v, sizeof(v));
            csv_field(b, v);
        }
        if (pname) {
            period_text(r->group, r->rows[j].period_ms, v, sizeof(v));
            tg_buf_printf(b, ",%s", v);
        }
        tg_buf_appends(b, "\n");
    }
}

/* One JSON object for a row (or the totals, without dimensions). Money as
 * exact decimal strings: a JSON number would go through a double. */
static void json_row(tg_buf_t *b, const tg_report_t *r, const tg_rollup_row_t *row, int totals,
                     int decimals)
{
    char v[192];
    int first = 1;
    tg_buf_appends(b, "{");
    for (size_t i = 0; i < NCOLS; i++) {
        const col_t *c = &cols[i];
        if (c->kind == K_TEXT && (totals || !col_shown(c, r->group))) continue;
        tg_buf_printf(b, "%s\"%s\":", first ? "" : ",", c->name);
        first = 0;
        cell(c, row, decimals, v, sizeof(v));
        if (c->kind == K_COUNT)
            tg_buf_appends(b, v);
        else
            tg_buf_json_str(b, v, strlen(v));
        if (c->off == ROFF(key_prefix)) {
            tg_buf_appends(b, ",\"key_id\":");
            tg_buf_json_str(b, row->key_id, strlen(row->key_id));
        }
    }
    const char *pname = period_name(r->group);
    if (pname && !totals) {
        period_text(r->group, row->period_ms, v, sizeof(v));
        tg_buf_printf(b, ",\"%s\":\"%s\"", pname, v);
    }
    tg_buf_appends(b, "}");
}

static void write_json(tg_buf_t *b, const tg_report_t *r, int decimals, int lines)
{
    if (lines) {
        for (size_t j = 0; j < r->nrows; j++) {
            json_row(b, r, &r->rows[j], 0, decimals);
            tg_buf_appends(b, "\n");
        }
        return;
    }
    char from[32], to[32];
    tg_iso8601_ms(from, sizeof(from), r->from_ms);
    tg_iso8601_ms(to, sizeof(to), r->to_ms);
    tg_buf_printf(b, "{\"from\":\"%.19sZ\",\"to\":\"%.19sZ\",\"currency\":\"USD\",\"group_by\":[",
                  from, to);
    int first = 1;
    for (size_t i = 0; i < sizeof(group_names) / sizeof(group_names[0]); i++) {
        /* Each grouping once, by its first name. */
        int dup = 0;
        for (size_t k = 0; k < i; k++)
            dup |= group_names[k].bit == group_names[i].bit;
        if (dup || !(r->group & group_names[i].bit)) continue;
        tg_buf_printf(b, "%s\"%s\"", first ? "" : ",", group_names[i].name);
        first = 0;
    }
    tg_buf_appends(b, "],\"rows\":[");
    for (size_t j = 0; j < r->nrows; j++) {
        if (j) tg_buf_appends(b, ",");
        json_row(b, r, &r->rows[j], 0, decimals);
    }
    tg_buf_appends(b, "],\"totals\":");
    json_row(b, r, &r->totals, 1, decimals);
    tg_buf_appends(b, "}\n");
}

/* The columns of the table and Markdown formats (the ones read by people),
 * in display order. */
static size_t display_cols(const tg_report_t *r, int table, const col_t **out)
{
    size_t n = 0;
    for (size_t t = 0; t < (table ? sizeof(table_order) / sizeof(table_order[0]) : NCOLS); t++) {
        const col_t *c = NULL;
        if (table) {
            for (size_t i = 0; i < NCOLS && !c; i++)
                if (strcmp(cols[i].name, table_order[t]) == 0) c = &cols[i];
        } else {
            c = &cols[t];
        }
        if (!c || !col_shown(c, r->group)) continue;
        /* For reading: a part nobody used is left out. */
        if (c->optional && col_i64(c, &r->totals) == 0) continue;
        out[n++] = c;
    }
    return n;
}

static void pad(tg_buf_t *b, size_t n)
{
    static const char spaces[] = "                                ";
    while (n > 0) {
        size_t k = n < sizeof(spaces) - 1 ? n : sizeof(spaces) - 1;
        tg_buf_append(b, spaces, k);
        n -= k;
    }
}

/* Aligned columns (text left, numbers right), a rule, the rows, a rule and
 * a TOTAL line. */
static int write_table(tg_buf_t *b, const tg_report_t *r, int decimals)
{
    const col_t *c[NCOLS];
    size_t nc = display_cols(r, 1, c);
    const char *pname = period_name(r->group);
    /* A first column for the period, or, when no dimension leads, for the
     * TOTAL label alone. */
    size_t lead = pname || nc == 0 || c[0]->kind != K_TEXT ? 1 : 0;
    size_t ncell = nc + lead;
    size_t *w = calloc(ncell, sizeof(size_t));
    if (!w) return TG_ENOMEM;
    char v[192];
    /* Pass 0 measures, pass 1 writes. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t j = 0; j <= r->nrows + 1; j++) {
            /* j == 0: the header; 1..nrows: rows; nrows + 1: totals. */
            const tg_rollup_row_t *row = j == 0          ? NULL
                                         : j <= r->nrows ? &r->rows[j - 1]
                                                         : &r->totals;
            int tot = j == r->nrows + 1;
            if (pass == 1 && (j == 1 || tot)) {
                size_t all = 0;
                for (size_t k = 0; k < ncell; k++)
                    all += w[k] + (k ? 2 : 0);
                for (size_t k = 0; k < all; k++)
                    tg_buf_appends(b, "-");
                tg_buf_appends(b, "\n");
            }
            for (size_t k = 0; k < ncell; k++) {
                int numeric = 0;
                if (lead && k == 0) {
                    if (!row)
                        snprintf(v, sizeof(v), "%s", pname ? pname : "");
                    else if (tot)
                        snprintf(v, sizeof(v), "TOTAL");
                    else if (pname)
                        period_text(r->group, row->period_ms, v, sizeof(v));
                    else
                        v[0] = '\0';
                } else {
                    const col_t *cc = c[k - lead];
                    numeric = cc->kind != K_TEXT;
                    if (!row)
                        snprintf(v, sizeof(v), "%s", cc->name);
                    else if (tot && !numeric)
                        snprintf(v, sizeof(v), "%s", k == 0 ? "TOTAL" : "");
                    else
                        cell(cc, row, decimals, v, sizeof(v));
                }
                size_t len = strlen(v);
                if (pass == 0) {
                    if (len > w[k]) w[k] = len;
                    continue;
                }
                if (k) tg_buf_appends(b, "  ");
                if (numeric) pad(b, w[k] - len);
                tg_buf_appends(b, v);
                if (!numeric && k + 1 < ncell) pad(b, w[k] - len);
            }
            if (pass == 1) tg_buf_appends(b, "\n");
        }
    }
    free(w);
    return 0;
}

static void write_markdown(tg_buf_t *b, const tg_report_t *r, int decimals)
{
    const col_t *c[NCOLS];
    size_t nc = display_cols(r, 0, c);
    const char *pname = period_name(r->group);
    char v[192];
    tg_buf_appends(b, "|");
    for (size_t k = 0; k < nc; k++)
        tg_buf_printf(b, " %s |", c[k]->name);
    if (pname) tg_buf_printf(b, " %s |", pname);
    tg_buf_appends(b, "\n|");
    for (size_t k = 0; k < nc + (pname ? 1 : 0); k++)
        tg_buf_appends(b, k < nc && c[k]->kind != K_TEXT ? "---:|" : "---|");
    tg_buf_appends(b, "\n");
    for (size_t j = 0; j < r->nrows; j++) {
        tg_buf_appends(b, "|");
        for (size_t k = 0; k < nc; k++) {
            cell(c[k], &r->rows[j], decimals, v, sizeof(v));
            /* A '|' inside a cell would end it; a '\\' could escape the next. */
            tg_buf_appends(b, " ");
            for (const char *p = v; *p; p++) {
                if (*p == '|' || *p == '\\') tg_buf_appends(b, "\\");
                tg_buf_append(b, p, 1);
            }
            tg_buf_appends(b, " |");
        }
        if (pname) {
            period_text(r->group, r->rows[j].period_ms, v, sizeof(v));
            tg_buf_printf(b, " %s |", v);
        }
        tg_buf_appends(b, "\n");
    }
}

int tg_report_write(tg_buf_t *b, const tg_report_t *r, int format, int decimals)
{
    switch (format) {
    case TG_REPORT_TABLE:
        if (write_table(b, r, decimals)) return TG_ENOMEM;
        break;
    case TG_REPORT_CSV:
        write_csv(b, r, decimals);
        break;
    case TG_REPORT_JSON:
    case TG_REPORT_JSONL:
        write_json(b, r, decimals, format == TG_REPORT_JSONL);
        break;
    case TG_REPORT_MARKDOWN:
        write_markdown(b, r, decimals);
        break;
    default:
        return TG_EINVAL;
    }
    return b->data || b->len ? 0 : TG_ENOMEM;
}

int tg_report_write_flagged(tg_buf_t *b, const tg_report_t *r)
{
    int any = 0;
    for (size_t j = 0; j < r->nrows; j++) {
        const tg_rollup_row_t *row = &r->rows[j];
        if (!row->unpriced) continue;
        if (!any)
            tg_buf_appends(b,
                           "# Calls with no price for some or all of their usage. They are in the "
                           "report at zero cost for that part.\n# Add the price (data/prices.json, "
                           "price_overrides, or the route's price) and re-run the day.\n");
        any = 1;
        char date[16];
        tg_report_format_day(row->period_ms, date, sizeof(date));
        tg_buf_printf(b,
                      "unpriced date=%s unit=%s team=%s key_prefix=%s model=%s region=%s "
                      "invocations=%lld unpriced_invocations=%lld input_tokens=%lld "
                      "output_tokens=%lld cache_read_tokens=%lld cache_write_tokens=%lld "
                      "images=%lld\n",
                      date, row->unit, row->team, row->key_prefix, row->model, row->region,
                      (long long)row->invocations, (long long)row->unpriced,
                      (long long)row->input_tokens, (long long)row->output_tokens,
                      (long long)row->cache_read_tokens, (long long)row->cache_write_tokens,
                      (long long)row->images);
    }
    return 0;
}

/* report.h - chargeback reports: the rollups summed over a range, grouped,
 * and written as a terminal table, CSV, JSON, JSON lines or Markdown.
 *
 * Money stays in integer picodollars until the last step and is written as
 * an exact decimal ("0.0009892"), so a report's totals equal the sum of its
 * rows, and of the events under them, to the last unit. Only when asked
 * (decimals >= 0) is it rounded for display, half away from zero; totals are
 * then the rounded exact total, not a sum of rounded rows.
 *
 * The CSV keeps the reference's columns first (team_id, model_id,
 * input_tokens, output_tokens, invocations, input_cost, output_cost), then
 * unit, key_prefix, the cache and image parts, total_cost, the flagged counts,
 * region and date. Dimensions not grouped on are left out of every format.
 * Output is a pure function of the rows: no time stamps, so producing the
 * same report twice gives the same bytes. */
#ifndef TG_USAGE_REPORT_H
#define TG_USAGE_REPORT_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "store/store.h"

enum {
    TG_REPORT_TABLE = 0,
    TG_REPORT_CSV,
    TG_REPORT_JSON,  /* one document: range, grouping, rows, totals */
    TG_REPORT_JSONL, /* one row per line */
    TG_REPORT_MARKDOWN,
};

typedef struct {
    int64_t from_ms, to_ms; /* [from, to) */
    unsigned group;         /* TG_GROUP_* */
    tg_rollup_row_t *rows;  /* malloc'ed */
    size_t nrows;
    tg_rollup_row_t totals; /* sums of every row (dimensions empty) */
} tg_report_t;

/* "team,model" -> TG_GROUP_TEAM | TG_GROUP_MODEL. Names: unit, team, key,
 * model, region, day (or date), hour. Returns 0, or TG_EINVAL with the bad
 * name in err. */
int tg_report_parse_group(const char *s, unsigned *out, char *err, size_t errcap);
/* "table", "csv", "json", "jsonl", "markdown" -> TG_REPORT_*; -1 if unknown. */
int tg_report_parse_format(const char *s);
/* Parses "YYYY-MM-DD" (a whole UTC day) into its start; TG_EINVAL. */
int tg_report_parse_day(const char *s, int64_t *day_ms);
/* Writes day_ms's UTC date as "YYYY-MM-DD" (out >= 11 bytes). */
void tg_report_format_day(int64_t day_ms, char *out, size_t cap);

/* Brings the rollups up to date, then sums them for q into r. Totals are
 * checked: TG_ETOOBIG when one would not fit in 64 bits. */
int tg_report_build(tg_store_t *st, const tg_rollup_query_t *q, tg_report_t *r);
void tg_report_free(tg_report_t *r);

/* Appends r in format to b. decimals < 0: money exact; else rounded to that
 * many places (at most 12). */
int tg_report_write(tg_buf_t *b, const tg_report_t *r, int format, int decimals);
/* The flagged rows (calls with no price, recorded at zero cost) as the
 * daily errors file's text; nothing appended when there are none. */
int tg_report_write_flagged(tg_buf_t *b, const tg_report_t *r);

/* Writes pico / 10^12 USD rounded half away from zero to `decimals` places,
 * trailing zeros trimmed ("0.0119" at 5); decimals < 0: exact. Returns the
 * length or TG_ETOOBIG. */
int tg_usd_format_round(int64_t pico, int decimals, char *out, size_t cap);

#endif

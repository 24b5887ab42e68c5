/* reportjob.h - the daily report files and the schedule that keeps them,
 * and the rollups, current.
 *
 * A day's report is three files under the reports directory, like the
 * reference's bucket: succeed/<YYYY-MM-DD>.csv and succeed/<YYYY-MM-DD>.jsonl
 * (every unit x team x key x model x region of the day) and, when some calls
 * had no price, errors/<YYYY-MM-DD>.txt. Each file is written whole to a
 * temporary name, flushed to disk and renamed into place, so a reader never
 * sees half a file; a run killed midway leaves at most stray temporary files,
 * which the next run removes before doing the day again. The same day always
 * gives the same bytes.
 *
 * The store remembers, per day, which version of its rollups the report
 * covers, so the schedule writes a day again when late events change it, and
 * a run that died before recording its work is simply done again.
 *
 * The schedule runs on its own thread ("tg-reports") with its own store
 * connection: every refresh_s it brings the rollups up to date, and once a
 * day has ended (plus daily_at) it writes the day's report, then any other
 * day whose report is out of date. Nothing here runs on a request path. */
#ifndef TG_USAGE_REPORTJOB_H
#define TG_USAGE_REPORTJOB_H

#include <stddef.h>
#include <stdint.h>

#include "store/store.h"

/* Copies a written file elsewhere (S3). key is "succeed/2026-11-26.csv".
 * Returns 0, or a TG_E* code with a message in err. */
typedef int (*tg_report_upload_fn)(void *ud, const char *key, const void *body, size_t len,
                                   const char *content_type, char *err, size_t errcap);

typedef struct {
    const char *dir;            /* the reports directory; created when missing */
    uint32_t refresh_s;         /* schedule: rollups refreshed this often (>= 1) */
    uint32_t daily_at_min;      /* schedule: a day is reported this long after it ends */
    tg_report_upload_fn upload; /* optional */
    void *upload_ud;
} tg_reportjob_opts_t;

/* Writes day_ms's report files from the rollups (rebuilding the day's
 * rollups from the events first when rebuild is set), uploads them when
 * configured, and records the day as reported. *rows (may be NULL) is the
 * number of report rows. A day without events writes nothing and removes
 * nothing. */
int tg_report_day(tg_store_t *st, const tg_reportjob_opts_t *o, int64_t day_ms, int rebuild,
                  size_t *rows);

/* Refreshes the rollups, then reports every day whose report is out of date
 * and that is due at now_ms. *days (may be NULL) counts the days written. */
int tg_report_catch_up(tg_store_t *st, const tg_reportjob_opts_t *o, int64_t now_ms, int *days);

/* The schedule's thread. */
typedef struct tg_reportjob tg_reportjob_t;
int tg_reportjob_start(tg_reportjob_t **out, const tg_store_config_t *store,
                       const tg_reportjob_opts_t *o);
/* Wakes the thread, waits for the run in progress to finish, frees. */
void tg_reportjob_stop(tg_reportjob_t *j);

/* ---- copies to S3 ------------------------------------------------------------
 *
 * An upload function for tg_reportjob_opts_t: PUTs each file as
 * PREFIX + key in the bucket (aws/s3.h: SigV4, retried while transient), with
 * the current credentials of a provider the caller started. Called only from
 * the schedule's thread; tg_report_s3_cancel cuts a call in progress short
 * (from any thread) before the schedule is stopped. */
struct tg_aws_credprov;
typedef struct {
    const char *bucket, *region;
    const char *endpoint; /* NULL: AWS's */
    const char *prefix;   /* "" or ending in '/' */
    struct tg_aws_credprov *creds;
} tg_report_s3_opts_t;
typedef struct tg_report_s3 tg_report_s3_t;
int tg_report_s3_create(tg_report_s3_t **out, const tg_report_s3_opts_t *o);
/* A tg_report_upload_fn; ud is the tg_report_s3_t. */
int tg_report_s3_upload(void *ud, const char *key, const void *body, size_t len,
                        const char *content_type, char *err, size_t errcap);
void tg_report_s3_cancel(tg_report_s3_t *u);
void tg_report_s3_destroy(tg_report_s3_t *u);

#endif

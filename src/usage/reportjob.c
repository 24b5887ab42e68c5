/* reportjob.c - daily report files, written atomically, and the schedule.
 *
 * Order of a day's run: rollups current -> the version they are at -> the
 * report built -> every file written whole and renamed into place -> the
 * copies uploaded -> the version recorded. Whatever step a crash stops, the
 * day is still pending and the next run does it again from the start; the
 * files it replaces are whole either way. */
#include "usage/reportjob.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "core/core.h"
#include "usage/report.h"

enum { REPORTS_NICE = 10 }; /* the report thread's nice value */

/* A test hook: TOLLGATE_TEST_CRASH_AT=NAME ends the process at that point of
 * a run, as a kill would, so the tests can show what the next run does. */
static void crash_point(const char *name)
{
    const char *at = getenv("TOLLGATE_TEST_CRASH_AT");
    if (at && strcmp(at, name) == 0) _exit(86);
}

/* Removes temporary files (".NAME.PID.tmp") left by runs that died: those
 * whose process is gone. */
static void clean_temporaries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *n = e->d_name;
        size_t len = strlen(n);
        if (n[0] != '.' || len < 6 || strcmp(n + len - 4, ".tmp") != 0) continue;
        const char *dot = n + len - 4;
        const char *p = dot;
        while (p > n && p[-1] >= '0' && p[-1] <= '9')
            p--;
        if (p == dot || p[-1] != '.') continue;
        long pid = strtol(p, NULL, 10);
        /* Alive (or someone else's: EPERM) means its run is still going. */
        if (pid > 0 && pid != (long)getpid() && (kill((pid_t)pid, 0) == 0 || errno == EPERM))
            continue;
        char path[1024];
        int w = snprintf(path, sizeof(path), "%s/%.255s", dir, n);
        if (w > 0 && (size_t)w < sizeof(path) && unlink(path) == 0)
            tg_info("reports: removed %s, left by an interrupted run", path);
    }
    closedir(d);
}

typedef struct {
    const char *sub;  /* "succeed" or "errors" */
    const char *ext;  /* "csv", "jsonl", "txt" */
    const char *type; /* content type for the upload */
    tg_buf_t body;
} out_file_t;

static int write_day_files(const tg_reportjob_opts_t *o, const char *date, out_file_t *f, size_t n,
                           int have_errors)
{
    char path[1024];
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s", o->dir, f[i].sub);
        if (tg_mkdirs(path, 0750)) {
            tg_error("reports: cannot create %s: %s", path, strerror(errno));
            return TG_EIO;
        }
        clean_temporaries(path);
    }
    crash_point("report:before-files");
    for (size_t i = 0; i < n; i++) {
        snprintf(path, sizeof(path), "%s/%s/%s.%s", o->dir, f[i].sub, date, f[i].ext);
        if (tg_write_file_atomic(path, f[i].body.data ? f[i].body.data : "", f[i].body.len)) {
            tg_error("reports: cannot write %s: %s", path, strerror(errno));
            return TG_EIO;
        }
        if (i == 0) crash_point("report:after-csv");
    }
    if (!have_errors) {
        /* A day that had flagged calls and has none now (a price was added
         * and the day re-run) must not keep its old errors file. */
        snprintf(path, sizeof(path), "%s/errors/%s.txt", o->dir, date);
        if (unlink(path) == 0)
            tg_info("reports: removed %s: the day has no flagged calls now", path);
    }
    return 0;
}

int tg_report_day(tg_store_t *st, const tg_reportjob_opts_t *o, int64_t day_ms, int rebuild,
                  size_t *rows)
{
    if (rows) *rows = 0;
    day_ms -= day_ms % TG_DAY_MS;
    char date[16];
    tg_report_format_day(day_ms, date, sizeof(date));
    int err = rebuild ? tg_store_rollup_rebuild(st, day_ms, day_ms + TG_DAY_MS)
                      : tg_store_rollup_refresh(st, NULL);
    int64_t version = 0;
    if (!err) err = tg_store_report_version(st, day_ms, &version);
    tg_report_t r;
    tg_rollup_query_t q = {.from_ms = day_ms, .to_ms = day_ms + TG_DAY_MS, .group = TG_GROUP_ALL};
    if (!err) err = tg_report_build(st, &q, &r);
    if (err) {
        tg_error("reports: %s: cannot sum the day: %s", date, tg_strerror(err));
        return err;
    }
    out_file_t f[3] = {
        {"succeed", "csv", "text/csv; charset=utf-8", {0}},
        {"succeed", "jsonl", "application/x-ndjson", {0}},
        {"errors", "txt", "text/plain; charset=utf-8", {0}},
    };
    size_t nf = 0;
    if (r.nrows > 0) {
        for (size_t i = 0; i < 3; i++)
            tg_buf_init(&f[i].body, 0);
        err = tg_report_write(&f[0].body, &r, TG_REPORT_CSV, -1);
        if (!err) err = tg_report_write(&f[1].body, &r, TG_REPORT_JSONL, -1);
        if (!err) err = tg_report_write_flagged(&f[2].body, &r);
        nf = f[2].body.len ? 3 : 2;
        if (!err) err = write_day_files(o, date, f, nf, nf == 3);
        for (size_t i = 0; !err && o->upload && i < nf; i++) {
            char key[64], why[256] = "";
            snprintf(key, sizeof(key), "%s/%s.%s", f[i].sub, date, f[i].ext);
            err = o->upload(o->upload_ud, key, f[i].body.data ? f[i].body.data : "", f[i].body.len,
                            f[i].type, why, sizeof(why));
            if (err) tg_error("reports: %s: upload failed: %s", key, why);
        }
        for (size_t i = 0; i < 3; i++)
            tg_buf_free(&f[i].body);
    }
    if (rows) *rows = r.nrows;
    tg_report_free(&r);
    if (!err) err = tg_store_report_done(st, day_ms, version);
    if (!err && nf) tg_info("reports: wrote %s (version %lld)", date, (long long)version);
    return err;
}

/* The first day not yet due at now_ms: days before it have ended, plus
 * daily_at, by now. */
static int64_t due_before(const tg_reportjob_opts_t *o, int64_t now_ms)
{
    int64_t t = now_ms - (int64_t)o->daily_at_min * 60000;
    return t - t % TG_DAY_MS;
}

static int catch_up(tg_store_t *st, const tg_reportjob_opts_t *o, int64_t now_ms, int *days,
                    const atomic_int *stop)
{
    if (days) *days = 0;
    int err = tg_store_rollup_refresh(st, NULL);
    tg_report_day_t *pend = NULL;
    size_t n = 0;
    if (!err) err = tg_store_report_pending(st, due_before(o, now_ms), &pend, &n);
    int first_err = err;
    for (size_t i = 0; !err && i < n && !(stop && atomic_load(stop)); i++) {
        int e = tg_report_day(st, o, pend[i].day_ms, 0, NULL);
        if (e && !first_err) first_err = e; /* the other days still get their turn */
        if (!e && days) (*days)++;
    }
    free(pend);
    return first_err;
}

int tg_report_catch_up(tg_store_t *st, const tg_reportjob_opts_t *o, int64_t now_ms, int *days)
{
    return catch_up(st, o, now_ms, days, NULL);
}

/* ---- the schedule's thread ---------------------------------------------------- */

struct tg_reportjob {
    tg_reportjob_opts_t o;
    char *dir;
    tg_store_config_t store;
    char *store_path;
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_int stop;
};

/* Sleeps until wake_ms (wall clock) or until stopped. */
static void nap_until(tg_reportjob_t *j, int64_t wake_ms)
{
    pthread_mutex_lock(&j->mu);
    while (!atomic_load(&j->stop)) {
        int64_t left = wake_ms - tg_wall_ms();
        if (left <= 0) break;
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        int64_t ns = (int64_t)ts.tv_nsec + (left % 1000) * 1000000;
        ts.tv_sec += (time_t)(left / 1000 + ns / 1000000000);
        ts.tv_nsec = (long)(ns % 1000000000);
        pthread_cond_timedwait(&j->cv, &j->mu, &ts);
    }
    pthread_mutex_unlock(&j->mu);
}

static void *reportjob_main(void *arg)
{
    tg_reportjob_t *j = arg;
    tg_store_t *st = NULL;
    /* Summing and writing reports is background work: on a core shared with
     * a worker it yields at once when the worker wakes. (Best effort.) */
    (void)setpriority(PRIO_PROCESS, (id_t)gettid(), REPORTS_NICE);
    while (!atomic_load(&j->stop)) {
        int64_t now = tg_wall_ms();
        if (!st && tg_store_open(&st, &j->store)) st = NULL;
        if (st) {
            int days = 0, err = catch_up(st, &j->o, now, &days, &j->stop);
            if (err)
                tg_warn("reports: run failed (%s); retrying in %us", tg_strerror(err),
                        j->o.refresh_s);
        }
        /* The next refresh, or the moment the next day falls due if sooner. */
        int64_t wake = now + (int64_t)j->o.refresh_s * 1000;
        int64_t due = due_before(&j->o, now) + TG_DAY_MS + (int64_t)j->o.daily_at_min * 60000;
        if (due > now && due < wake) wake = due;
        nap_until(j, wake);
    }
    tg_store_close(st);
    return NULL;
}

int tg_reportjob_start(tg_reportjob_t **out, const tg_store_config_t *store,
                       const tg_reportjob_opts_t *o)
{
    *out = NULL;
    tg_reportjob_t *j = calloc(1, sizeof(*j));
    if (!j) return TG_ENOMEM;
    j->o = *o;
    if (j->o.refresh_s == 0) j->o.refresh_s = 300;
    j->dir = strdup(o->dir);
    j->store = *store;
    j->store_path = strdup(store->path);
    if (!j->dir || !j->store_path) {
        free(j->dir), free(j->store_path), free(j);
        return TG_ENOMEM;
    }
    j->o.dir = j->dir;
    j->store.path = j->store_path;
    pthread_mutex_init(&j->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&j->cv, &ca);
    pthread_condattr_destroy(&ca);
    if (pthread_create(&j->thread, NULL, reportjob_main, j) != 0) {
        pthread_cond_destroy(&j->cv);
        pthread_mutex_destroy(&j->mu);
        free(j->dir), free(j->store_path), free(j);
        return TG_ENOMEM;
    }
    pthread_setname_np(j->thread, "tg-reports");
    *out = j;
    return 0;
}

void tg_reportjob_stop(tg_reportjob_t *j)
{
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    atomic_store(&j->stop, 1);
    pthread_cond_signal(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
    pthread_cond_destroy(&j->cv);
    pthread_mutex_destroy(&j->mu);
    free(j->dir);
    free(j->store_path);
    free(j);
}

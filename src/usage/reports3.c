/* reports3.c - report files copied to S3, for the report schedule. */
#include <curl/curl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/credentials.h"
#include "aws/s3.h"
#include "core/core.h"
#include "usage/reportjob.h"

struct tg_report_s3 {
    tg_s3_target_t target;
    char *bucket, *region, *endpoint, *prefix;
    tg_aws_credprov_t *creds;
    CURLM *multi; /* made on first use, on the schedule's thread */
    atomic_int stop;
};

int tg_report_s3_create(tg_report_s3_t **out, const tg_report_s3_opts_t *o)
{
    *out = NULL;
    tg_report_s3_t *u = calloc(1, sizeof(*u));
    if (!u) return TG_ENOMEM;
    u->bucket = strdup(o->bucket);
    u->region = strdup(o->region);
    u->endpoint = o->endpoint ? strdup(o->endpoint) : NULL;
    u->prefix = strdup(o->prefix ? o->prefix : "");
    u->multi = curl_multi_init();
    if (!u->bucket || !u->region || !u->prefix || (o->endpoint && !u->endpoint) || !u->multi) {
        tg_report_s3_destroy(u);
        return TG_ENOMEM;
    }
    u->creds = o->creds;
    u->target = (tg_s3_target_t){.bucket = u->bucket, .region = u->region, .endpoint = u->endpoint};
    *out = u;
    return 0;
}

int tg_report_s3_upload(void *ud, const char *key, const void *body, size_t len,
                        const char *content_type, char *err, size_t errcap)
{
    tg_report_s3_t *u = ud;
    tg_aws_creds_t *c = u->creds ? tg_aws_credprov_get(u->creds) : NULL;
    if (!c) {
        snprintf(err, errcap, "no AWS credentials for the reports bucket yet");
        return TG_EAUTH;
    }
    char full[TG_S3_KEY_MAX + 1];
    int n = snprintf(full, sizeof(full), "%s%s", u->prefix, key);
    int rc;
    if (n < 0 || (size_t)n >= sizeof(full)) {
        snprintf(err, errcap, "key %s%s is too long", u->prefix, key);
        rc = TG_ETOOBIG;
    } else {
        rc = tg_s3_put(u->multi, &u->stop, &u->target, c, full, body, len, content_type, err,
                       errcap);
    }
    tg_aws_creds_release(c);
    if (!rc) tg_info("reports: copied %s to s3://%s/%s", key, u->bucket, full);
    return rc;
}

void tg_report_s3_cancel(tg_report_s3_t *u)
{
    if (!u) return;
    atomic_store(&u->stop, 1);
    curl_multi_wakeup(u->multi);
}

void tg_report_s3_destroy(tg_report_s3_t *u)
{
    if (!u) return;
    if (u->multi) curl_multi_cleanup(u->multi);
    free(u->bucket), free(u->region), free(u->endpoint), free(u->prefix);
    free(u);
}

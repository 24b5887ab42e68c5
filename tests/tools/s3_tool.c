/* s3_tool.c - one S3 PutObject (tg_s3_put) from the command line, for
 * black-box tests against a fake S3.
 *
 *   s3_tool --endpoint URL --bucket B --region R --key K [--content-type T]
 *           [--timeout-ms N] [--stop-after-ms N] < body
 *
 * Credentials are static, from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
 * AWS_SESSION_TOKEN (optional). --endpoint "-" means AWS's default endpoint.
 * --stop-after-ms N sets the stop flag from another thread after N ms (then
 * wakes the multi handle), as a shutting-down owner thread would.
 * Prints "ok" and exits 0, or "error: <code name>: <message>" and exits 1;
 * 2 on usage errors. */
#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "aws/s3.h"
#include "core/core.h"

#define BODY_MAX ((size_t)64 << 20)

static int usage(void)
{
    fprintf(stderr, "usage: s3_tool --endpoint URL --bucket B --region R --key K "
                    "[--content-type T] [--timeout-ms N] [--stop-after-ms N] < body\n");
    return 2;
}

typedef struct {
    CURLM *multi;
    atomic_int stop;
    long after_ms;
} stopper_t;

static void *stopper(void *arg)
{
    stopper_t *s = arg;
    struct timespec ts = {s->after_ms / 1000, (s->after_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    atomic_store(&s->stop, 1);
    curl_multi_wakeup(s->multi);
    return NULL;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

int main(int argc, char **argv)
{
    tg_s3_target_t t = {0};
    const char *key = NULL, *content_type = NULL;
    long stop_after_ms = -1;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!v) return usage();
        if (!strcmp(a, "--endpoint"))
            t.endpoint = strcmp(v, "-") ? v : NULL;
        else if (!strcmp(a, "--bucket"))
            t.bucket = v;
        else if (!strcmp(a, "--region"))
            t.region = v;
        else if (!strcmp(a, "--key"))
            key = v;
        else if (!strcmp(a, "--content-type"))
            content_type = v;
        else if (!strcmp(a, "--timeout-ms"))
            t.timeout_ms = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(a, "--stop-after-ms"))
            stop_after_ms = strtol(v, NULL, 10);
        else
            return usage();
    }
    if (!t.bucket || !t.region || !key) return usage();

    tg_buf_t body;
    tg_buf_init(&body, BODY_MAX);
    char chunk[65536];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
        rc = tg_buf_append(&body, chunk, n);
    if (rc || ferror(stdin)) {
        printf("error: %s: cannot read the body from stdin\n", tg_strerror(rc ? rc : TG_EIO));
        tg_buf_free(&body);
        return 1;
    }

    /* Static credentials: the struct is only read by tg_s3_put. */
    tg_aws_creds_t creds = {
        .access_key_id = (char *)env("AWS_ACCESS_KEY_ID"),
        .secret_access_key = (char *)env("AWS_SECRET_ACCESS_KEY"),
        .session_token = (char *)env("AWS_SESSION_TOKEN"),
        .source = "static",
    };
    curl_global_init(CURL_GLOBAL_DEFAULT);
    stopper_t st = {.multi = curl_multi_init(), .after_ms = stop_after_ms};
    atomic_init(&st.stop, 0);
    pthread_t th;
    int stopping = st.multi && stop_after_ms >= 0 && pthread_create(&th, NULL, stopper, &st) == 0;
    char err[1024];
    rc = st.multi ? tg_s3_put(st.multi, &st.stop, &t, creds.access_key_id ? &creds : NULL, key,
                              body.data, body.len, content_type, err, sizeof(err))
                  : (snprintf(err, sizeof(err), "curl_multi_init failed"), TG_ENOMEM);
    if (stopping) { /* done first: no stop needed (nanosleep is a cancellation point) */
        pthread_cancel(th);
        pthread_join(th, NULL);
    }
    if (rc == 0)
        printf("ok\n");
    else
        printf("error: %s: %s\n", tg_strerror(rc), err);
    if (st.multi) curl_multi_cleanup(st.multi);
    curl_global_cleanup();
    tg_buf_free(&body);
    return rc ? 1 : 0;
}

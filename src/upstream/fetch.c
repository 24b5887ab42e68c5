/* fetch.c - see fetch.h. */
#include "upstream/fetch.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static size_t on_write(char *p, size_t size, size_t n, void *ud)
{
    return tg_buf_append(ud, p, size * n) == 0 ? size * n : 0;
}

int tg_fetch(CURLM *multi, const atomic_int *stop, const tg_fetch_t *q, long *status, tg_buf_t *out,
             char *why, size_t whycap)
{
    char cerr[CURL_ERROR_SIZE] = "";
    *status = 0;
    CURL *e = curl_easy_init();
    if (!e) return snprintf(why, whycap, "out of memory"), TG_ENOMEM;
    curl_easy_setopt(e, CURLOPT_URL, q->url);
    curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)q->timeout_ms);
    curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS,
                     (long)(q->connect_timeout_ms ? q->connect_timeout_ms : q->timeout_ms));
    curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
    curl_easy_setopt(e, CURLOPT_WRITEDATA, out);
    curl_easy_setopt(e, CURLOPT_ERRORBUFFER, cerr);
    curl_easy_setopt(e, CURLOPT_HTTPHEADER, q->headers);
    curl_easy_setopt(e, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
    if (q->direct) curl_easy_setopt(e, CURLOPT_NOPROXY, "*");
    if (strcmp(q->method, "GET") != 0) {
        curl_easy_setopt(e, CURLOPT_POSTFIELDS, q->body ? q->body : "");
        curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)(q->body ? q->body_len : 0));
        if (strcmp(q->method, "POST") != 0) curl_easy_setopt(e, CURLOPT_CUSTOMREQUEST, q->method);
    }
    int rc = 0;
    CURLcode res = CURLE_OK;
    if (curl_multi_add_handle(multi, e) != CURLM_OK) {
        curl_easy_cleanup(e);
        return snprintf(why, whycap, "curl_multi_add_handle failed"), TG_ENOMEM;
    }
    for (int running = 1; running;) {
        if (curl_multi_perform(multi, &running) != CURLM_OK) {
            rc = TG_EIO;
            break;
        }
        if (stop && atomic_load(stop)) {
            rc = TG_ECANCELED;
            break;
        }
        if (running) curl_multi_poll(multi, NULL, 0, 1000, NULL);
    }
    int msgs;
    for (CURLMsg *m; (m = curl_multi_info_read(multi, &msgs));)
        if (m->msg == CURLMSG_DONE && m->easy_handle == e) res = m->data.result;
    curl_easy_getinfo(e, CURLINFO_RESPONSE_CODE, status);
    curl_multi_remove_handle(multi, e);
    curl_easy_cleanup(e);
    if (rc == TG_ECANCELED) return snprintf(why, whycap, "stopped"), rc;
    if (rc) return snprintf(why, whycap, "curl multi error"), rc;
    switch (res) {
    case CURLE_OK:
        return 0;
    case CURLE_WRITE_ERROR:
        snprintf(why, whycap, "response larger than %zu bytes", out->max);
        return TG_ETOOBIG;
    case CURLE_OPERATION_TIMEDOUT:
        snprintf(why, whycap, "timed out after %" PRIu32 " ms", q->timeout_ms);
        return TG_ETIMEDOUT;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        snprintf(why, whycap, "%s", *cerr ? cerr : curl_easy_strerror(res));
        return TG_ECONNECT;
    default:
        snprintf(why, whycap, "%s", *cerr ? cerr : curl_easy_strerror(res));
        return TG_EUPSTREAM;
    }
}

int tg_fetch_header(struct curl_slist **h, size_t max, const char *fmt, ...)
{
    tg_buf_t b;
    tg_buf_init(&b, max);
    va_list ap;
    va_start(ap, fmt);
    int rc = tg_buf_vprintf(&b, fmt, ap);
    va_end(ap);
    struct curl_slist *n = rc == 0 ? curl_slist_append(*h, b.data) : NULL;
    if (b.data) explicit_bzero(b.data, b.len);
    tg_buf_free(&b);
    if (!n) return rc ? rc : TG_ENOMEM;
    *h = n;
    return 0;
}

void tg_fetch_headers_free(struct curl_slist *h)
{
    for (struct curl_slist *s = h; s; s = s->next)
        explicit_bzero(s->data, strlen(s->data));
    curl_slist_free_all(h);
}

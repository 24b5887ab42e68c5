/* fetch.h - one blocking HTTP call, for the background threads that talk to
 * AWS outside the request path (credentials, the Bedrock catalogue). Never
 * call it on a worker loop: that is what upstream.h is for.
 *
 * The call runs on a curl multi handle the calling thread owns, so another
 * thread can cut it short: set *stop, then curl_multi_wakeup(multi). The
 * response body lands in a bounded tg_buf_t; a larger one fails. */
#ifndef TG_FETCH_H
#define TG_FETCH_H

#include <curl/curl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

typedef struct {
    const char *method; /* "GET", "PUT", "POST" */
    const char *url;
    struct curl_slist *headers;
    const char *body; /* POST/PUT body, may be NULL */
    size_t body_len;
    int direct;                  /* no proxy: link-local and loopback endpoints */
    uint32_t timeout_ms;         /* whole call */
    uint32_t connect_timeout_ms; /* 0: timeout_ms */
} tg_fetch_t;

/* Performs q on multi; stop may be NULL. On failure returns TG_ENOMEM,
 * TG_ECANCELED (stopped), TG_ETOOBIG (body over out's bound), TG_ETIMEDOUT,
 * TG_ECONNECT or TG_EUPSTREAM, and why says what went wrong in words, without
 * the URL (the caller names it). status is the HTTP status when one came. */
int tg_fetch(CURLM *multi, const atomic_int *stop, const tg_fetch_t *q, long *status, tg_buf_t *out,
             char *why, size_t whycap);

/* Appends a formatted header line ("Name: value") of at most max bytes to
 * *h. Header lines may hold tokens: the working copy is wiped, and so are
 * curl's copies by tg_fetch_headers_free. Returns 0, TG_ENOMEM or TG_ETOOBIG. */
int tg_fetch_header(struct curl_slist **h, size_t max, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Wipes every line, then frees the list (NULL is fine). */
void tg_fetch_headers_free(struct curl_slist *h);

#endif

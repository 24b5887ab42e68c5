/* upstream.h - outbound HTTP calls on a worker's own libuv loop.
 *
 * One tg_upstream_t per worker. Plain http:// URLs go through a native
 * HTTP/1.1 client on that loop (h1.c); https://, and every URL while a proxy
 * variable is set (or TG_UPSTREAM_CURL=1), go through a libcurl multi handle
 * driven by curl_multi_socket_action from uv_poll and uv_timer handles on the
 * same loop. Either way upstream calls and client sockets share one thread and
 * never block it, and connections are kept and reused per host. Response bytes are
 * delivered as they arrive; the caller may pause delivery (backpressure from a
 * slow client) and resume it, or cancel the call when its client goes away.
 *
 * This module does not parse provider formats. */
#ifndef TG_UPSTREAM_H
#define TG_UPSTREAM_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/core.h"
#include "http/http.h" /* tg_header_t */

typedef struct tg_upstream tg_upstream_t;
typedef struct tg_upcall tg_upcall_t;

typedef struct {
    /* Response status and headers, once, before the first on_data. headers
     * are valid only during the call. */
    void (*on_headers)(tg_upcall_t *c, int status, const tg_header_t *headers, size_t n, void *ud);
    /* Response body bytes, consumed entirely by the callee. Return 0 to go on,
     * 1 to pause delivery until tg_upcall_resume(). */
    int (*on_data)(tg_upcall_t *c, const char *p, size_t n, void *ud);
    /* Exactly once at the end unless canceled: err is 0, TG_ECONNECT (could not
     * connect), TG_ETIMEDOUT (connect, first-byte or total timeout), or
     * TG_EUPSTREAM (transfer broke). c is freed after it returns. */
    void (*on_done)(tg_upcall_t *c, int err, void *ud);
} tg_upcall_cbs_t;

typedef struct {
    const char *method; /* "GET", "POST" */
    const char *url;
    const char *const *headers; /* "Name: value" lines, copied */
    size_t nheaders;
    const char *body; /* borrowed until on_done or cancel */
    size_t body_len;
    uint32_t connect_timeout_ms;    /* 0 = library default */
    uint32_t first_byte_timeout_ms; /* request sent to first response byte; 0 = none */
    uint32_t total_timeout_ms;      /* whole call; 0 = none */
} tg_upcall_opts_t;

int tg_upstream_create(tg_upstream_t **out, uv_loop_t *loop);
/* Cancels every call still running (no callbacks) and closes its handles;
 * the loop must run once more for them to close. */
void tg_upstream_destroy(tg_upstream_t *u);
/* Host name lookups the native client started (0 when every call goes
 * through libcurl, which keeps its own cache). */
unsigned long tg_upstream_lookups(const tg_upstream_t *u);

int tg_upcall_start(tg_upstream_t *u, const tg_upcall_opts_t *opts, const tg_upcall_cbs_t *cbs,
                    void *ud, tg_upcall_t **out);
void tg_upcall_pause(tg_upcall_t *c);
void tg_upcall_resume(tg_upcall_t *c);
/* Stops the call and frees it; no callback runs after this. */
void tg_upcall_cancel(tg_upcall_t *c);
/* Microseconds from start to the first response byte (0 if none yet). */
uint64_t tg_upcall_ttfb_us(const tg_upcall_t *c);

/* Global curl init/cleanup, once per process. */
int tg_upstream_global_init(void);
void tg_upstream_global_cleanup(void);

#endif

/* http.h - the HTTP server: listeners, connections, framing, limits, timeouts.
 *
 * N worker threads each run their own libuv loop with their own listening
 * socket on the shared port (SO_REUSEPORT). A connection is parsed with llhttp
 * (HTTP/1.1), or with nghttp2 when it opens with the HTTP/2 preface (h2c with
 * prior knowledge); an optional TLS listener offers both by ALPN. Each
 * complete request (or HTTP/2 stream) is handed to the application as a
 * tg_req_t. The request/response API below knows nothing of either framing:
 * the same handlers serve both.
 *
 * This module does not know what a model or a tenant is. */
#ifndef TG_HTTP_H
#define TG_HTTP_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "core/core.h"

typedef struct tg_server tg_server_t;
typedef struct tg_worker tg_worker_t;
typedef struct tg_req tg_req_t;

typedef struct {
    const char *name; /* NUL-terminated */
    size_t name_len;
    const char *value; /* NUL-terminated, leading/trailing spaces trimmed */
    size_t value_len;
} tg_header_t;

typedef struct {
    const char *host; /* "127.0.0.1", "::1", "0.0.0.0" */
    int port;
    int workers;                  /* >= 1 */
    size_t max_header_bytes;      /* request line + headers; over it: 431 */
    size_t max_body_bytes;        /* over it: 413 (also when Content-Length says so) */
    uint32_t header_timeout_ms;   /* first byte of a request to end of headers: 408 */
    uint32_t body_timeout_ms;     /* end of headers to end of body: 408 */
    uint32_t idle_timeout_ms;     /* keep-alive idle: connection closed quietly */
    uint32_t send_timeout_ms;     /* write queue above low water this long: slow client, aborted */
    uint32_t shutdown_timeout_ms; /* graceful stop: in-flight requests get this long */
    size_t write_high_water;      /* tg_resp_write returns 1 above this many queued bytes */
    size_t write_low_water;       /* on_drain fires when queue falls to this */
    int max_connections;          /* per worker; over it new connections are closed */
    /* TLS listener (HTTP/1.1 and HTTP/2 by ALPN), on when cert_file is set.
     * The files are read by tg_server_create. */
    const char *tls_host; /* NULL: host */
    int tls_port;         /* 0 picks a free port */
    const char *cert_file;
    const char *key_file;
    /* HTTP/2, per connection. Past a rate limit the connection gets GOAWAY
     * ENHANCE_YOUR_CALM and is closed (Rapid Reset and its kin). */
    uint32_t h2_max_streams;   /* SETTINGS_MAX_CONCURRENT_STREAMS */
    uint32_t h2_streams_per_s; /* streams opened in one second */
    uint32_t h2_resets_per_s;  /* streams the client reset in one second */
    uint32_t h2_resets_max;    /* streams the client reset over the connection's life */
} tg_http_config_t;

void tg_http_config_defaults(tg_http_config_t *cfg);

/* Called on the worker's own thread for every complete request. The request
 * stays valid until the handler finishes it with tg_resp_send() or
 * tg_resp_end(); the handler must always finish it exactly once, even after
 * on_abort. ctx is the pointer given to tg_server_create. */
typedef void (*tg_http_handler_fn)(tg_req_t *req, void *ctx);

typedef struct {
    tg_http_handler_fn handle;
    /* Optional, on each worker's thread before it accepts / after its loop
     * drained. Return value of init becomes tg_worker_data(). */
    void *(*worker_init)(tg_worker_t *w, uv_loop_t *loop, void *ctx);
    void (*worker_fini)(tg_worker_t *w, void *wdata, void *ctx);
    /* Optional, on each worker's thread when graceful shutdown begins. */
    void (*worker_draining)(tg_worker_t *w, void *wdata, void *ctx);
    void *ctx;
    /* Optional: the server answered an error itself (400, 408, 413, 431)
     * without a handler; for metrics. */
    void (*rejected)(tg_worker_t *w, void *wdata, int status, void *ctx);
} tg_http_app_t;

enum {
    TG_HTTP_OTHER = 0,
    TG_HTTP_GET,
    TG_HTTP_HEAD,
    TG_HTTP_POST,
    TG_HTTP_PUT,
    TG_HTTP_DELETE,
    TG_HTTP_PATCH,
    TG_HTTP_OPTIONS
};

enum { TG_CONN_MEMO_BYTES = 96 };

struct tg_req {
    /* Read-only for handlers. */
    tg_worker_t *worker;
    uv_loop_t *loop;
    int method; /* TG_HTTP_* */
    const char *method_str;
    const char *path; /* NUL-terminated, without query; not percent-decoded */
    size_t path_len;
    const char *query; /* after '?', NUL-terminated, "" when absent */
    size_t query_len;
    tg_header_t *headers;
    size_t nheaders;
    const char *body; /* whole request body, NUL-terminated (dechunked) */
    size_t body_len;
    tg_arena_t *arena; /* freed when the request is finished */
    uint64_t start_ns; /* tg_now_ns() when the first byte arrived */
    char remote_addr[64];
    /* TG_CONN_MEMO_BYTES that live as long as the request's connection
     * (HTTP/1.1 or /2): zeroed when it opens, wiped when it closes, used by
     * one thread. For what the handler layer may reuse across a connection's
     * requests (the last API key that authenticated on it). */
    void *conn_memo;

    /* Set by handlers. */
    void *data;
    /* The client went away or, on HTTP/2, reset the stream (or the server
     * gave up on it at shutdown or for a slow read). Called at most once; the
     * handler must still finish the request. Writes after it return
     * TG_ECLOSED. */
    void (*on_abort)(tg_req_t *req);
    /* The queued response bytes (HTTP/2: this stream's) fell to
     * write_low_water after a tg_resp_write returned 1. */
    void (*on_drain)(tg_req_t *req);
};

/* The value of parameter name in a URL query ("a=1&b=x%20y"), percent-
 * decoded ('+' is a space) into out. Returns its length, TG_ENOTFOUND,
 * TG_EINVAL (a bad escape, or an encoded NUL) or TG_ETOOBIG. A name without
 * '=' has the empty value. */
int tg_query_get(const char *query, const char *name, char *out, size_t cap);

/* Case-insensitive header lookup; NULL when absent. */
const char *tg_req_header(const tg_req_t *req, const char *name);

/* Sends a whole response and finishes the request. Adds Content-Length, Date,
 * and Connection as needed. body is copied or written before return. */
int tg_resp_send(tg_req_t *req, int status, const tg_header_t *hdrs, size_t nhdrs, const void *body,
                 size_t len);

/* Writes (replacing b's contents) the JSON error body every error answer
 * uses: {"error":{"message","type","code"}}, type derived from status. */
int tg_http_error_json(tg_buf_t *b, int status, const char *code, const char *message);

/* JSON error {"error":{"code":code,"message":message,"type":type}} and finish.
 * The shape matches the OpenAI API's error body. */
int tg_resp_error(tg_req_t *req, int status, const char *code, const char *message);

/* Streaming: starts a response with Transfer-Encoding: chunked (HTTP/2: no
 * content-length, the body follows in DATA frames). */
int tg_resp_start(tg_req_t *req, int status, const tg_header_t *hdrs, size_t nhdrs);
/* Queues data (copied only if it cannot be written at once). Returns 0, 1 when
 * the queue is above write_high_water (pause the producer until on_drain), or
 * TG_ECLOSED when the client is gone. HTTP/2 frames it as DATA instead. */
int tg_resp_write(tg_req_t *req, const void *data, size_t len);
/* Writes the final chunk and finishes the request. */
int tg_resp_end(tg_req_t *req);

/* Bytes of response body accepted so far by tg_resp_write (for usage). */
size_t tg_resp_bytes_written(const tg_req_t *req);

/* Lifecycle. */
int tg_server_create(tg_server_t **out, const tg_http_config_t *cfg, const tg_http_app_t *app);
/* Binds every worker's socket, starts the threads and returns once all are
 * listening (so the caller can print "listening"). */
int tg_server_start(tg_server_t *s);
/* Begins a graceful stop: stop accepting, let in-flight requests finish up to
 * shutdown_timeout_ms, then abort the rest. Safe from any thread and from a
 * signal handler. */
void tg_server_stop(tg_server_t *s);
/* Blocks until every worker has stopped. */
void tg_server_wait(tg_server_t *s);
void tg_server_destroy(tg_server_t *s);
/* The port actually bound (useful with port 0). */
int tg_server_port(const tg_server_t *s);
/* The TLS listener's port, once started; -1 without one. */
int tg_server_tls_port(const tg_server_t *s);

void *tg_worker_data(const tg_worker_t *w);
int tg_worker_index(const tg_worker_t *w);
/* Non-zero once graceful shutdown began on this worker. */
int tg_worker_draining(const tg_worker_t *w);

const char *tg_http_reason(int status);

#endif

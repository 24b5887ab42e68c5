/* internal.h - what server.c (connections, HTTP/1.1), h2.c (HTTP/2) and
 * tls.c (TLS) share inside src/http. Not for other modules: http.h is the
 * public contract.
 *
 * A connection (conn_t) owns the socket, the timer, the write queue and its
 * lifetime, whatever it speaks. What it speaks is conn_t.proto: HTTP/1.1
 * through llhttp (the fast path, unchanged by the rest), "sniff" (a plain
 * connection's first bytes, checked for the HTTP/2 client preface) or
 * HTTP/2 through nghttp2 (c->h2). With TLS (c->ssl) bytes are decrypted in
 * tls.c before they reach any of these, and every write is encrypted. */
#ifndef TG_HTTP_INTERNAL_H
#define TG_HTTP_INTERNAL_H

#include <netinet/in.h>
#include <stdatomic.h>

#include "http/http.h"
#include "llhttp.h"

#define TG_HTTP_READ_BUF    (64 * 1024) /* per loop, shared by all its connections */
#define TG_HTTP_PENDING_MAX (64 * 1024) /* pipelined input held before reading pauses */
#define TG_HTTP_BODY_INLINE (64 * 1024) /* Content-Length bodies up to this go in the arena */
#define TG_HTTP_LINGER_MS   2000        /* after our FIN, wait this long for the client's */
#define TG_HTTP_HDR_SLOTS   16

typedef struct conn conn_t;
typedef struct hreq hreq_t;

/* Connection states. CS_H2: an HTTP/2 session runs it (h2.c keeps c->due). */
enum { CS_IDLE, CS_HEAD, CS_BODY, CS_HANDLER, CS_DONE, CS_LINGER, CS_H2 };

/* What a connection speaks. */
enum { TG_PROTO_H1 = 0, TG_PROTO_SNIFF, TG_PROTO_H2 };

/* Every request struct is a tg_req_t followed by one byte saying whether it
 * is an HTTP/2 stream (asserted beside each definition), so tg_resp_* pick
 * their framing with one load. */
static inline int tg_req_h2(const tg_req_t *req)
{
    return ((const unsigned char *)req)[sizeof(tg_req_t)];
}

/* An HTTP/1.1 request; lives in its connection's arena. pub must stay first. */
struct hreq {
    tg_req_t pub;
    uint8_t h2; /* 0: see tg_req_h2 */
    conn_t *c;
    char *url;
    size_t url_len;
    size_t hcap; /* slots in pub.headers */
    /* The token (url, header name or value) being parsed: a span of the input
     * while it lies in one read, copied to tokbuf when a read cuts it. */
    const char *tok;
    size_t tok_len;
    tg_buf_t tokbuf;
    char *ibody; /* Content-Length body held in the arena; else cbody */
    tg_buf_t cbody;
    size_t hbytes; /* request line + header bytes seen in spans */
    size_t hraw;   /* raw bytes fed while still in the header section */
    size_t resp_bytes;
    unsigned tok_in_buf : 1;
    unsigned keepalive : 1;    /* the client allows another request */
    unsigned http10 : 1;       /* no chunked responses */
    unsigned head : 1;         /* HEAD: no response body */
    unsigned in_handler : 1;   /* handed to the handler, not finished yet */
    unsigned aborted : 1;      /* on_abort called (or due): writes fail */
    unsigned started : 1;      /* tg_resp_start done */
    unsigned chunked : 1;      /* streamed response uses chunked framing */
    unsigned resp_close : 1;   /* the response said Connection: close */
    unsigned drain_wanted : 1; /* tg_resp_write returned 1 */
};

struct conn {
    uv_tcp_t tcp; /* first: the stream pointer is the connection */
    uv_timer_t timer;
    llhttp_t parser;
    tg_worker_t *w;
    hreq_t *req; /* the request being parsed or handled, or NULL */
    conn_t *prev, *next;
    tg_arena_t arena;
    tg_buf_t pending;  /* unparsed input waiting for the in-flight request */
    size_t queued;     /* bytes in uv_write requests not yet completed */
    uint64_t due;      /* state deadline (HEAD, BODY, IDLE, LINGER, H2), loop ms */
    uint64_t send_due; /* slow-reader deadline while queued > low water */
    uint64_t timer_due;
    struct sockaddr_in6 peer; /* large enough for either family */
    char remote[64];          /* peer's address as text, made once at accept */
    /* The handler layer's memory for the connection (tg_req_t.conn_memo):
     * zeroed at accept, wiped before the connection is freed. */
    _Alignas(16) unsigned char memo[TG_CONN_MEMO_BYTES];
    struct tg_h2 *h2;    /* the HTTP/2 session (h2.c), or NULL */
    struct ssl_st *ssl;  /* TLS (tls.c), or NULL */
    uint16_t err_status; /* set by a parser callback that rejects */
    uint8_t state;
    uint8_t proto;        /* TG_PROTO_* */
    uint8_t handles;      /* handles still closing */
    unsigned closing : 1; /* uv_close called */
    unsigned closed : 1;  /* both handles closed */
    unsigned feeding : 1; /* inside conn_feed: finishing must not re-enter it */
    unsigned resume : 1;  /* pending input to parse (HTTP/2: work to run) on the next tick */
    unsigned read_stopped : 1;
    unsigned timer_armed : 1;
    unsigned eof : 1;      /* the client sent FIN */
    unsigned shutting : 1; /* uv_shutdown issued */
    unsigned linger : 1;   /* the client may still be sending: wait for its FIN */
};

struct tg_worker {
    tg_server_t *s;
    int index;
    int fd;     /* listening socket until the loop owns it */
    int tls_fd; /* the TLS listener's, likewise; -1 without TLS */
    int err;
    int thread_started;
    uv_thread_t thread;
    uv_loop_t loop;
    uv_tcp_t listener;
    uv_tcp_t tls_listener;
    uv_async_t async;
    uv_timer_t drain_timer;
    atomic_int async_live; /* tg_server_stop may uv_async_send */
    int async_inited, app_inited;
    void *data;
    conn_t *conns;
    int nconns;
    unsigned listening : 1, tls_listening : 1, draining : 1, finishing : 1;
    tg_buf_t hbuf;      /* response head being built */
    tg_buf_t ebuf;      /* JSON error body being built */
    tg_buf_t h2out;     /* HTTP/2 frames gathered for one write */
    uint64_t date_next; /* loop ms at which the cached Date goes stale */
    char date[64];      /* "Date: ...\r\n" */
    size_t date_len;
    char *rbuf;
};

struct tg_server {
    tg_http_config_t cfg;
    tg_http_app_t app;
    char *host;
    int port;
    char *tls_host;
    int tls_port;
    struct ssl_ctx_st *tls_ctx; /* NULL without a TLS listener */
    int nworkers;
    tg_worker_t *workers;
    uv_sem_t ready;
    int started, joined;
    atomic_int stop_requested;
    atomic_int stop_senders; /* tg_server_stop calls in progress */
};

/* ---- server.c ---- */

/* Writes bufs after anything already queued (encrypting them on TLS); a
 * failure closes the connection. tg_conn_write_raw skips TLS. */
int tg_conn_write(conn_t *c, const uv_buf_t *bufs, unsigned nbufs);
int tg_conn_write_raw(conn_t *c, const uv_buf_t *bufs, unsigned nbufs);
void tg_conn_close(conn_t *c);
/* No more to send after what is queued: FIN (TLS: close_notify first). */
void tg_conn_done(conn_t *c);
void tg_conn_arm(conn_t *c);
void tg_conn_free(conn_t *c);
/* Plaintext bytes (after TLS) for whatever the connection speaks. */
void tg_conn_on_plain(conn_t *c, const char *data, size_t n);
void tg_conn_on_eof(conn_t *c);
/* Stops or restarts reading the socket. */
void tg_conn_read(conn_t *c, int on);
/* Refreshes w->date ("Date: ...\r\n", at most once a second). */
void tg_worker_date(tg_worker_t *w);
/* The server's own error answer (limits, timeouts, bad syntax): counts it
 * with app->rejected and writes its JSON body into w->ebuf. Returns the
 * status used (an unknown one becomes 400) or a negative error. */
int tg_http_reject_body(tg_worker_t *w, int status);
/* A handler's header the server must not send: unsafe, or framing it owns. */
int tg_header_skip(const tg_header_t *h);

/* ---- h2.c ---- */

/* Makes c an HTTP/2 connection (the client preface is its next input). */
int tg_h2_start(conn_t *c);
void tg_h2_on_read(conn_t *c, const char *data, size_t n);
/* From a clean stack (write completion, the timer's kick): pump frames out,
 * dispatch ready requests, deliver aborts and drains. */
void tg_h2_run(conn_t *c);
void tg_h2_on_timer(conn_t *c);
/* Graceful stop: GOAWAY, in-flight streams go on. */
void tg_h2_drain(conn_t *c);
/* Both handles closed: aborts the streams handlers still hold. Returns
 * nonzero while any remain (the last one to finish frees the connection). */
int tg_h2_on_closed(conn_t *c);
void tg_h2_free(conn_t *c);
int tg_h2_req_live(const tg_req_t *req);
int tg_h2_resp_send(tg_req_t *req, int status, const tg_header_t *hdrs, size_t nhdrs,
                    const void *body, size_t len);
int tg_h2_resp_start(tg_req_t *req, int status, const tg_header_t *hdrs, size_t nhdrs);
int tg_h2_resp_write(tg_req_t *req, const void *data, size_t len);
int tg_h2_resp_end(tg_req_t *req);
size_t tg_h2_resp_bytes(const tg_req_t *req);

/* ---- tls.c ---- */

/* An OpenSSL 3 server context from PEM files, ALPN "h2" then "http/1.1".
 * Logs the reason and returns TG_ECONFIG when they cannot be used. */
int tg_tls_ctx_new(struct ssl_ctx_st **out, const char *cert_file, const char *key_file);
void tg_tls_ctx_free(struct ssl_ctx_st *ctx);
int tg_tls_conn_start(conn_t *c, struct ssl_ctx_st *ctx);
/* Ciphertext from the socket. */
void tg_tls_on_read(conn_t *c, const char *data, size_t n);
int tg_tls_write(conn_t *c, const uv_buf_t *bufs, unsigned nbufs);
void tg_tls_close_notify(conn_t *c);
void tg_tls_free(conn_t *c);

#endif

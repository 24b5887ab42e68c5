/* server.c - the HTTP server: worker loops, listeners, connections,
 * llhttp parsing, limits and timeouts, and the tg_resp_* response writer.
 * HTTP/2 (h2.c) and TLS (tls.c) plug into the connections made here; see
 * internal.h for how a connection says what it speaks.
 *
 * Shape (see http.h for the public contract):
 *  - One libuv loop per worker thread, each with its own SO_REUSEPORT
 *    listening socket bound in tg_server_start (libuv 1.44 has no
 *    UV_TCP_REUSEPORT, so the sockets are made by hand and uv_tcp_open'd).
 *  - Connections are cheap: no per-connection read buffer. Every read lands
 *    in one 64 KiB buffer per loop and is parsed synchronously in read_cb;
 *    only what must outlive the callback is copied (headers into the request
 *    arena, the body into an arena block or a bounded tg_buf_t, and bytes of
 *    pipelined requests that arrive while one is in flight).
 *  - One uv_timer per connection serves every deadline (header, body, idle,
 *    send, linger) plus the "resume pipelined input" kick. It is re-armed
 *    lazily: only when a deadline moves earlier; a timer that fires early
 *    just re-arms for whatever is due next.
 *  - Writes go out with uv_try_write first; only the unwritten remainder is
 *    copied into a queued uv_write.
 *  - A plain connection's first bytes are compared with the HTTP/2 client
 *    preface (h2c with prior knowledge); once they differ the connection is
 *    HTTP/1.1 for good and reads take the path below unchanged. A TLS
 *    connection picks its protocol by ALPN.
 *
 * Connection state machine (conn_t.state):
 *
 *   IDLE --first byte--> HEAD --headers--> BODY --message--> HANDLER
 *    ^                                                          |
 *    +------------------- request finished, keep-alive ---------+
 *   HEAD/BODY --limit, timeout, bad syntax--> DONE (error reply queued)
 *   HANDLER --finished, close wanted--> DONE --FIN sent--> LINGER --EOF--> closed
 *
 * Lifetimes. A connection is freed only when both (a) its two handles
 * (tcp, timer) have finished closing and (b) no request is in the handler's
 * hands. The request lives in the connection's arena, so it stays valid until
 * the handler finishes it, even after the socket is gone. on_abort is only
 * ever called from the last close callback, never from inside a tg_resp_*
 * call, so a handler is not re-entered from its own write. */
#include "http/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/internal.h"

/* How a response body is framed. */
enum { FRAME_LENGTH, FRAME_CHUNKED, FRAME_NONE, FRAME_CLOSE };

typedef struct {
    uv_write_t req; /* first */
    conn_t *c;
    size_t len;
    char data[];
} wreq_t;

_Static_assert(offsetof(hreq_t, h2) == sizeof(tg_req_t), "tg_req_h2 reads this byte");

static void conn_reject(conn_t *c, int status);
static void req_finish(hreq_t *r);
static void worker_maybe_finish(tg_worker_t *w);

/* ---- small helpers --------------------------------------------------------- */

static const tg_http_config_t *cfg_of(const conn_t *c)
{
    return &c->w->s->cfg;
}

static uint64_t loop_now(const conn_t *c)
{
    return uv_now(&c->w->loop);
}

const char *tg_http_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 101:
        return "Switching Protocols";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 206:
        return "Partial Content";
    case 301:
        return "Moved Permanently";
    case 302:
        return "Found";
    case 303:
        return "See Other";
    case 304:
        return "Not Modified";
    case 307:
        return "Temporary Redirect";
    case 308:
        return "Permanent Redirect";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 402:
        return "Payment Required";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 406:
        return "Not Acceptable";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 410:
        return "Gone";
    case 411:
        return "Length Required";
    case 412:
        return "Precondition Failed";
    case 413:
        return "Payload Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 416:
        return "Range Not Satisfiable";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Entity";
    case 424:
        return "Failed Dependency";
    case 425:
        return "Too Early";
    case 426:
        return "Upgrade Required";
    case 428:
        return "Precondition Required";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 499:
        return "Client Closed Request";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return status >= 500 ? "Error" : status >= 400 ? "Client Error" : "Unknown";
    }
}

void tg_http_config_defaults(tg_http_config_t *cfg)
{
    memset(cfg, 0, sizeof(*cfg));
    cfg->host = "127.0.0.1";
    cfg->port = 8080;
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    cfg->workers = n > 0 ? (int)n : 1;
    cfg->max_header_bytes = 16 * 1024;
    cfg->max_body_bytes = 10 * 1024 * 1024;
    cfg->header_timeout_ms = 10000;
    cfg->body_timeout_ms = 30000;
    cfg->idle_timeout_ms = 60000;
    cfg->send_timeout_ms = 30000;
    cfg->shutdown_timeout_ms = 10000;
    cfg->write_high_water = 256 * 1024;
    cfg->write_low_water = 64 * 1024;
    cfg->max_connections = 20000;
    cfg->h2_max_streams = 128;
    cfg->h2_streams_per_s = 20000;
    cfg->h2_resets_per_s = 200;
    cfg->h2_resets_max = 10000;
}

const char *tg_req_header(const tg_req_t *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->nheaders; i++) {
        const tg_header_t *h = &req->headers[i];
        if (tg_strcaseeq(h->name, h->name_len, name, n)) return h->value;
    }
    return NULL;
}

size_t tg_resp_bytes_written(const tg_req_t *req)
{
    if (tg_req_h2(req)) return tg_h2_resp_bytes(req);
    return ((const hreq_t *)req)->resp_bytes;
}

void *tg_worker_data(const tg_worker_t *w)
{
    return w->data;
}

int tg_worker_index(const tg_worker_t *w)
{
    return w->index;
}

int tg_worker_draining(const tg_worker_t *w)
{
    return w->draining;
}

/* The error body shared by tg_resp_error and the server's own rejections. */
int tg_http_error_json(tg_buf_t *b, int status, const char *code, const char *msg)
{
    const char *type = status >= 500   ? "api_error"
                       : status == 401 ? "authentication_error"
                       : status == 404 ? "not_found_error"
                                       : "invalid_request_error";
    tg_buf_reset(b);
    int rc = tg_buf_appends(b, "{\"error\":{\"message\":");
    if (!rc) rc = tg_buf_json_str(b, msg, strlen(msg));
    if (!rc) rc = tg_buf_appends(b, ",\"type\":");
    if (!rc) rc = tg_buf_json_str(b, type, strlen(type));
    if (!rc) rc = tg_buf_appends(b, ",\"code\":");
    if (!rc) rc = tg_buf_json_str(b, code, strlen(code));
    if (!rc) rc = tg_buf_appends(b, "}}");
    return rc;
}

/* ---- response heads -------------------------------------------------------- */

static const char *const wday[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
static const char *const month[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* "Date: ...\r\n", formatted at most once per wall-clock second per loop. */
void tg_worker_date(tg_worker_t *w)
{
    uint64_t now = uv_now(&w->loop);
    if (w->date_len && now < w->date_next) return;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(w->date, sizeof(w->date), "Date: %s, %02d %s %04d %02d:%02d:%02d GMT\r\n",
                     wday[tm.tm_wday % 7], tm.tm_mday, month[tm.tm_mon % 12], tm.tm_year + 1900,
                     tm.tm_hour, tm.tm_min, tm.tm_sec);
    w->date_len = n > 0 ? (size_t)n : 0;
    w->date_next = now + 1000 - (uint64_t)(ts.tv_nsec / 1000000);
}

/* The server owns framing: these names from a handler are dropped. */
static int header_reserved(const tg_header_t *h)
{
    switch (h->name_len) {
    case 4:
        return tg_strcaseeq(h->name, 4, "date", 4);
    case 10:
        return tg_strcaseeq(h->name, 10, "connection", 10);
    case 14:
        return tg_strcaseeq(h->name, 14, "content-length", 14);
    case 17:
        return tg_strcaseeq(h->name, 17, "transfer-encoding", 17);
    default:
        return 0;
    }
}

/* Eight bytes at a time: whether any byte of bits is below 0x21 (space and
 * controls; bytes >= 0x80 are not), or equal to the byte repeated in pat. */
#define SWAR_ONES 0x0101010101010101ull
#define SWAR_HIGH 0x8080808080808080ull
static inline uint64_t swar_below(uint64_t bits, unsigned char n)
{
    return (bits - SWAR_ONES * n) & ~bits & SWAR_HIGH;
}
static inline uint64_t swar_eq(uint64_t bits, unsigned char c)
{
    return swar_below(bits ^ (SWAR_ONES * c), 1);
}

/* A CR or LF in a name or value would let a value smuggle in headers. */
static int header_unsafe(const tg_header_t *h)
{
    if (!h->name || !h->name_len || !h->value) return 1;
    size_t i = 0;
    for (uint64_t b; i + 8 <= h->name_len; i += 8) {
        memcpy(&b, h->name + i, 8);
        if (swar_below(b, '!') | swar_eq(b, ':')) return 1;
    }
    for (; i < h->name_len; i++)
        if ((unsigned char)h->name[i] <= ' ' || h->name[i] == ':') return 1;
    for (i = 0; i + 8 <= h->value_len; i += 8) {
        uint64_t b;
        memcpy(&b, h->value + i, 8);
        if (swar_eq(b, '\r') | swar_eq(b, '\n')) return 1;
    }
    for (; i < h->value_len; i++)
        if (h->value[i] == '\r' || h->value[i] == '\n') return 1;
    return 0;
}

int tg_header_skip(const tg_header_t *h)
{
    return header_unsafe(h) || header_reserved(h);
}

/* Builds status line and headers into w->hbuf: one reservation for the
 * whole head, then plain copies. */
static int build_head(tg_worker_t *w, int status, const tg_header_t *hdrs, size_t nhdrs, int keep,
                      int frame, size_t clen)
{
    static const char cl[] = "Content-Length: ", te[] = "Transfer-Encoding: chunked\r\n",
                      ka[] = "Connection: keep-alive\r\n\r\n", cc[] = "Connection: close\r\n\r\n";
    tg_buf_t *b = &w->hbuf;
    tg_buf_reset(b);
    if (status < 100 || status > 999) status = 500;
    tg_worker_date(w);
    const char *reason = tg_http_reason(status);
    size_t rlen = strlen(reason);
    /* "HTTP/1.1 000 " reason CRLF, Date, headers, framing (20 digits at
     * most), Connection and the blank line. */
    size_t need = 13 + rlen + 2 + w->date_len + sizeof(cl) + 20 + 2 + sizeof(te) + sizeof(ka);
    for (size_t i = 0; i < nhdrs; i++)
        need += hdrs[i].name_len + 2 + hdrs[i].value_len + 2;
    int rc = tg_buf_reserve(b, need);
    if (rc) return rc;
    char *o = b->data;
    memcpy(o, "HTTP/1.1 ", 9);
    o[9] = (char)('0' + status / 100);
    o[10] = (char)('0' + status / 10 % 10);
    o[11] = (char)('0' + status % 10);
    o[12] = ' ';
    o += 13;
    memcpy(o, reason, rlen);
    o += rlen;
    *o++ = '\r', *o++ = '\n';
    memcpy(o, w->date, w->date_len);
    o += w->date_len;
    for (size_t i = 0; i < nhdrs; i++) {
        const tg_header_t *h = &hdrs[i];
        if (header_unsafe(h) || header_reserved(h)) continue;
        memcpy(o, h->name, h->name_len);
        o += h->name_len;
        *o++ = ':', *o++ = ' ';
        memcpy(o, h->value, h->value_len);
        o += h->value_len;
        *o++ = '\r', *o++ = '\n';
    }
    if (frame == FRAME_LENGTH) {
        memcpy(o, cl, sizeof(cl) - 1);
        o += sizeof(cl) - 1;
        o += tg_u64_dec(o, clen);
        *o++ = '\r', *o++ = '\n';
    } else if (frame == FRAME_CHUNKED) {
        memcpy(o, te, sizeof(te) - 1);
        o += sizeof(te) - 1;
    }
    const char *conn = keep ? ka : cc;
    size_t connlen = keep ? sizeof(ka) - 1 : sizeof(cc) - 1;
    memcpy(o, conn, connlen);
    o += connlen;
    *o = '\0';
    b->len = (size_t)(o - b->data);
    return 0;
}

/* ---- writing --------------------------------------------------------------- */

static void conn_on_write(uv_write_t *ureq, int status)
{
    wreq_t *wr = (wreq_t *)ureq;
    conn_t *c = wr->c;
    c->queued -= wr->len;
    free(wr);
    if (c->closing) return; /* canceled by uv_close; the close callback follows */
    if (status < 0) {
        tg_conn_close(c);
        return;
    }
    if (c->queued > cfg_of(c)->write_low_water) return;
    if (c->state == CS_H2) {
        tg_h2_run(c); /* more frames, and the drains they allow */
        return;
    }
    if (c->queued == 0 && c->state == CS_IDLE) {
        /* Idle time counts from the last byte sent, and a drain closes it now. */
        if (c->w->draining && !c->pending.len) {
            tg_conn_done(c);
            return;
        }
        c->due = loop_now(c) + cfg_of(c)->idle_timeout_ms;
    }
    tg_conn_arm(c);
    hreq_t *r = c->req;
    if (r && r->in_handler && r->drain_wanted && !r->aborted) {
        r->drain_wanted = 0;
        /* Last: the handler may finish the request from here. */
        if (r->pub.on_drain) r->pub.on_drain(&r->pub);
    }
}

/* Writes bufs in order after anything already queued. Tries the socket first
 * and copies only what it did not take. Failure closes the connection (the
 * request, if any, hears of it through on_abort from the close callback). */
int tg_conn_write(conn_t *c, const uv_buf_t *bufs, unsigned nbufs)
{
    if (c->ssl) return tg_tls_write(c, bufs, nbufs);
    return tg_conn_write_raw(c, bufs, nbufs);
}

int tg_conn_write_raw(conn_t *c, const uv_buf_t *bufs, unsigned nbufs)
{
    if (c->closing) return TG_ECLOSED;
    size_t total = 0, done = 0;
    for (unsigned i = 0; i < nbufs; i++)
        total += bufs[i].len;
    if (total == 0) return TG_OK;
    if (c->queued == 0) {
        int n = uv_try_write((uv_stream_t *)&c->tcp, bufs, nbufs);
        if (n >= 0) {
            done = (size_t)n;
        } else if (n != UV_EAGAIN) {
            tg_conn_close(c);
            return TG_ECLOSED;
        }
        if (done == total) return TG_OK;
    }
    size_t rest = total - done;
    wreq_t *wr = malloc(sizeof(*wr) + rest);
    if (!wr) {
        tg_conn_close(c);
        return TG_ENOMEM;
    }
    size_t skip = done, off = 0;
    for (unsigned i = 0; i < nbufs; i++) {
        size_t len = bufs[i].len;
        if (skip >= len) {
            skip -= len;
            continue;
        }
        memcpy(wr->data + off, bufs[i].base + skip, len - skip);
        off += len - skip;
        skip = 0;
    }
    wr->c = c;
    wr->len = rest;
    uv_buf_t b = uv_buf_init(wr->data, (unsigned)rest);
    if (uv_write(&wr->req, (uv_stream_t *)&c->tcp, &b, 1, conn_on_write)) {
        free(wr);
        tg_conn_close(c);
        return TG_ECLOSED;
    }
    size_t low = cfg_of(c)->write_low_water;
    if (c->queued <= low && c->queued + rest > low)
        c->send_due = loop_now(c) + cfg_of(c)->send_timeout_ms;
    c->queued += rest;
    tg_conn_arm(c);
    return TG_OK;
}

/* ---- timer ----------------------------------------------------------------- */

static void conn_feed_pending(conn_t *c);

static void conn_on_timer(uv_timer_t *t)
{
    conn_t *c = t->data;
    c->timer_armed = 0;
    if (c->closing) return;
    const tg_http_config_t *cfg = cfg_of(c);
    uint64_t now = loop_now(c);
    if (c->resume) {
        c->resume = 0;
        if (c->state == CS_H2)
            tg_h2_run(c);
        else
            conn_feed_pending(c);
        tg_conn_arm(c);
        return;
    }
    if (c->queued > cfg->write_low_water && now >= c->send_due) {
        tg_debug("http: client not reading for %u ms; closing", cfg->send_timeout_ms);
        tg_conn_close(c);
        return;
    }
    switch (c->state) {
    case CS_HEAD:
    case CS_BODY:
        if (now >= c->due) {
            conn_reject(c, 408);
            return;
        }
        break;
    case CS_IDLE:
        if (c->queued == 0 && now >= c->due) {
            /* A connection that never sent a byte is told why it is closed
             * (408, as a header timeout is); one idle between requests is
             * closed quietly, since a 408 there could cross the client's next
             * request. Before a TLS handshake there is no way to say it. */
            if (c->proto == TG_PROTO_SNIFF && !c->ssl)
                conn_reject(c, 408);
            else
                tg_conn_close(c);
            return;
        }
        break;
    case CS_LINGER:
        if (now >= c->due) {
            tg_conn_close(c);
            return;
        }
        break;
    case CS_H2:
        if (now >= c->due) tg_h2_on_timer(c);
        break;
    default:
        break;
    }
    tg_conn_arm(c);
}

/* Arms the one timer for the earliest deadline that applies now. Lazy: a
 * timer already due earlier is left alone and re-evaluates when it fires. */
void tg_conn_arm(conn_t *c)
{
    if (c->closing) return;
    const tg_http_config_t *cfg = cfg_of(c);
    uint64_t now = loop_now(c), due = UINT64_MAX;
    if (c->resume) due = now;
    if (c->queued > cfg->write_low_water && c->send_due < due) due = c->send_due;
    switch (c->state) {
    case CS_HEAD:
    case CS_BODY:
    case CS_LINGER:
    case CS_H2:
        if (c->due < due) due = c->due;
        break;
    case CS_IDLE:
        if (c->queued == 0 && c->due < due) due = c->due;
        break;
    default:
        break;
    }
    if (due == UINT64_MAX) return;
    if (c->timer_armed && c->timer_due <= due) return;
    c->timer_armed = 1;
    c->timer_due = due;
    /* libuv 1.44 runs a timer re-armed for "now" again in the same pass, so
     * only the resume kick may be immediate; a deadline gets >= 1 ms. */
    uint64_t delay = due > now ? due - now : !c->resume;
    uv_timer_start(&c->timer, conn_on_timer, delay, 0);
}

/* ---- connection lifetime ----------------------------------------------------- */

static void req_release(conn_t *c)
{
    hreq_t *r = c->req;
    if (!r) return;
    tg_buf_free(&r->tokbuf);
    tg_buf_free(&r->cbody);
    c->req = NULL;
    tg_arena_free(&c->arena); /* r itself lives here */
}

void tg_conn_free(conn_t *c)
{
    tg_worker_t *w = c->w;
    req_release(c);
    tg_buf_free(&c->pending);
    if (c->h2) tg_h2_free(c);
    if (c->ssl) tg_tls_free(c);
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next) c->next->prev = c->prev;
    w->nconns--;
    explicit_bzero(c->memo, sizeof(c->memo)); /* it may hold a key */
    free(c);
    worker_maybe_finish(w);
}

static void conn_on_close(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles) return;
    c->closed = 1;
    if (c->h2) {
        if (!tg_h2_on_closed(c)) tg_conn_free(c);
        return;
    }
    hreq_t *r = c->req;
    if (r && r->in_handler) {
        /* The handler still owns the request; it frees the connection when it
         * finishes, maybe right inside on_abort: touch nothing after it. */
        if (!r->aborted) {
            r->aborted = 1;
            if (r->pub.on_abort) r->pub.on_abort(&r->pub);
        }
        return;
    }
    tg_conn_free(c);
}

void tg_conn_close(conn_t *c)
{
    if (c->closing) return;
    c->closing = 1;
    c->handles = 2;
    uv_close((uv_handle_t *)&c->tcp, conn_on_close);
    uv_close((uv_handle_t *)&c->timer, conn_on_close);
}

static void conn_read_start(conn_t *c);

static void conn_on_shutdown(uv_shutdown_t *sr, int status)
{
    conn_t *c = sr->data;
    free(sr);
    if (c->closing) return;
    if (status < 0 || c->eof || !c->linger) {
        tg_conn_close(c);
        return;
    }
    /* Our FIN is out. The client may still be sending (a body we refused,
     * pipelined requests): closing now with its bytes unread would send a
     * reset that can destroy the reply in its receive buffer. Wait a little
     * for its FIN, as nginx's lingering close does. */
    c->state = CS_LINGER;
    c->due = loop_now(c) + TG_HTTP_LINGER_MS;
    tg_conn_arm(c);
}

/* No more requests on this connection: send FIN after the queued bytes. */
void tg_conn_done(conn_t *c)
{
    if (c->closing) return;
    if (c->pending.len) c->linger = 1;
    c->state = CS_DONE;
    c->resume = 0;
    if (c->shutting) return;
    c->shutting = 1;
    uv_shutdown_t *sr = malloc(sizeof(*sr));
    if (!sr) {
        tg_conn_close(c);
        return;
    }
    sr->data = c;
    if (c->ssl) tg_tls_close_notify(c);
    if (c->closing || uv_shutdown(sr, (uv_stream_t *)&c->tcp, conn_on_shutdown)) {
        free(sr);
        tg_conn_close(c);
        return;
    }
    if (c->read_stopped && !c->eof) conn_read_start(c);
    tg_conn_arm(c);
}

/* The server's own error reply (limits, timeouts, bad syntax); then close. */
int tg_http_reject_body(tg_worker_t *w, int status)
{
    const char *code = "bad_request", *msg = "The request is not valid HTTP.";
    switch (status) {
    case 408:
        code = "request_timeout";
        msg = "The request was not received in time.";
        break;
    case 413:
        code = "body_too_large";
        msg = "The request body is too large.";
        break;
    case 431:
        code = "headers_too_large";
        msg = "The request line and headers are too large.";
        break;
    case 500:
        code = "internal_error";
        msg = "The server could not process the request.";
        break;
    default:
        status = 400;
    }
    const tg_http_app_t *app = &w->s->app;
    if (app->rejected) app->rejected(w, w->data, status, app->ctx);
    int rc = tg_http_error_json(&w->ebuf, status, code, msg);
    return rc ? rc : status;
}

static void conn_reject(conn_t *c, int status)
{
    tg_worker_t *w = c->w;
    status = tg_http_reject_body(w, status);
    req_release(c);
    c->linger = 1; /* the rest of what we refused may still be on its way */
    char rid[40];
    tg_random_id(rid, sizeof(rid), "req_", 16); /* every answer can be quoted in a report */
    const tg_header_t hs[2] = {{"Content-Type", 12, "application/json", 16},
                               {"x-request-id", 12, rid, strlen(rid)}};
    if (status > 0 && !build_head(w, status, hs, 2, 0, FRAME_LENGTH, w->ebuf.len)) {
        uv_buf_t b[2] = {uv_buf_init(w->hbuf.data, (unsigned)w->hbuf.len),
                         uv_buf_init(w->ebuf.data, (unsigned)w->ebuf.len)};
        tg_conn_write(c, b, 2);
    }
    tg_conn_done(c);
}

/* ---- parsing ----------------------------------------------------------------- */

static int parse_fail(conn_t *c, int status)
{
    c->err_status = (uint16_t)status;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    if (c->req) return parse_fail(c, 500); /* cannot happen: requests are serial */
    hreq_t *r = tg_arena_alloc(&c->arena, sizeof(*r));
    if (!r) return parse_fail(c, 500);
    memset(r, 0, sizeof(*r));
    r->c = c;
    r->pub.worker = c->w;
    r->pub.loop = &c->w->loop;
    r->pub.arena = &c->arena;
    r->pub.start_ns = tg_now_ns();
    r->pub.query = "";
    r->pub.body = "";
    tg_buf_init(&r->tokbuf, cfg_of(c)->max_header_bytes);
    tg_buf_init(&r->cbody, cfg_of(c)->max_body_bytes);
    c->req = r;
    c->state = CS_HEAD;
    c->due = loop_now(c) + cfg_of(c)->header_timeout_ms;
    return 0;
}

static int tok_add(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    hreq_t *r = c->req;
    r->hbytes += len;
    if (r->hbytes > cfg_of(c)->max_header_bytes) return parse_fail(c, 431);
    if (r->tok_in_buf) return tg_buf_append(&r->tokbuf, at, len) ? parse_fail(c, 431) : 0;
    if (!r->tok) {
        r->tok = at;
        r->tok_len = len;
    } else if (r->tok + r->tok_len == at) {
        r->tok_len += len;
    } else {
        if (tg_buf_append(&r->tokbuf, r->tok, r->tok_len) || tg_buf_append(&r->tokbuf, at, len))
            return parse_fail(c, 431);
        r->tok = NULL;
        r->tok_in_buf = 1;
    }
    return 0;
}

/* Moves the finished token into the arena. */
static char *tok_take(conn_t *c, size_t *len)
{
    hreq_t *r = c->req;
    const char *s = "";
    size_t n = 0;
    if (r->tok_in_buf) {
        s = r->tokbuf.data;
        n = r->tokbuf.len;
    } else if (r->tok) {
        s = r->tok;
        n = r->tok_len;
    }
    char *out = tg_arena_strndup(&c->arena, s, n);
    r->tok = NULL;
    r->tok_len = 0;
    r->tok_in_buf = 0;
    tg_buf_reset(&r->tokbuf);
    *len = n;
    return out;
}

/* A read ended inside a token: its bytes are in a buffer about to be reused. */
static int tok_save(conn_t *c)
{
    hreq_t *r = c->req;
    if (!r || !r->tok) return 0;
    if (tg_buf_append(&r->tokbuf, r->tok, r->tok_len)) return -1;
    r->tok = NULL;
    r->tok_in_buf = 1;
    return 0;
}

static int on_url_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    hreq_t *r = c->req;
    r->url = tok_take(c, &r->url_len);
    return r->url ? 0 : parse_fail(c, 500);
}

/* RFC 9110 tchar. llhttp's loose mode lets spaces into names, and a name
 * one server splits differently from another is how requests get smuggled. */
static int is_token(const char *s, size_t n)
{
    static const char extra[] = "!#$%&'*+-.^_`|~";
    if (!n) return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              (ch && strchr(extra, ch))))
            return 0;
    }
    return 1;
}

static int on_header_field_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    hreq_t *r = c->req;
    tg_req_t *q = &r->pub;
    if (q->nheaders == r->hcap) {
        size_t ncap = r->hcap ? r->hcap * 2 : TG_HTTP_HDR_SLOTS;
        tg_header_t *nh = tg_arena_alloc(&c->arena, ncap * sizeof(*nh));
        if (!nh) return parse_fail(c, 500);
        if (q->nheaders) memcpy(nh, q->headers, q->nheaders * sizeof(*nh));
        q->headers = nh;
        r->hcap = ncap;
    }
    tg_header_t *h = &q->headers[q->nheaders];
    h->name = tok_take(c, &h->name_len);
    h->value = "";
    h->value_len = 0;
    if (!h->name) return parse_fail(c, 500);
    if (!is_token(h->name, h->name_len)) return parse_fail(c, 400);
    q->nheaders++;
    r->hbytes += 4; /* ": " and CRLF */
    return 0;
}

static int on_header_value_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    hreq_t *r = c->req;
    size_t n;
    char *v = tok_take(c, &n);
    if (!v) return parse_fail(c, 500);
    if (!r->pub.nheaders) return 0;
    while (n && (v[n - 1] == ' ' || v[n - 1] == '\t'))
        v[--n] = '\0';
    while (n && (*v == ' ' || *v == '\t'))
        v++, n--;
    tg_header_t *h = &r->pub.headers[r->pub.nheaders - 1];
    h->value = v;
    h->value_len = n;
    return 0;
}

static int method_of(uint8_t m)
{
    switch (m) {
    case HTTP_GET:
        return TG_HTTP_GET;
    case HTTP_HEAD:
        return TG_HTTP_HEAD;
    case HTTP_POST:
        return TG_HTTP_POST;
    case HTTP_PUT:
        return TG_HTTP_PUT;
    case HTTP_DELETE:
        return TG_HTTP_DELETE;
    case HTTP_PATCH:
        return TG_HTTP_PATCH;
    case HTTP_OPTIONS:
        return TG_HTTP_OPTIONS;
    default:
        return TG_HTTP_OTHER;
    }
}

static int on_headers_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    hreq_t *r = c->req;
    tg_req_t *q = &r->pub;
    const tg_http_config_t *cfg = cfg_of(c);
    uint8_t m = llhttp_get_method(p);
    q->method = method_of(m);
    q->method_str = llhttp_method_name((llhttp_method_t)m);
    if (!r->url) r->url = "", r->url_len = 0;
    char *qm = memchr(r->url, '?', r->url_len);
    q->path = r->url;
    q->path_len = r->url_len;
    if (qm) {
        *qm = '\0';
        q->path_len = (size_t)(qm - r->url);
        q->query = qm + 1;
        q->query_len = r->url_len - q->path_len - 1;
    }
    r->keepalive = llhttp_should_keep_alive(p) != 0;
    r->http10 = p->http_major < 1 || (p->http_major == 1 && p->http_minor == 0);
    r->head = m == HTTP_HEAD;
    int has_len = (p->flags & F_CONTENT_LENGTH) != 0;
    if (has_len && p->content_length > cfg->max_body_bytes) return parse_fail(c, 413);
    if (has_len && p->content_length && p->content_length <= TG_HTTP_BODY_INLINE) {
        r->ibody = tg_arena_alloc(&c->arena, (size_t)p->content_length + 1);
        if (!r->ibody) return parse_fail(c, 500);
    }
    const char *expect = tg_req_header(q, "expect");
    int has_body = (p->flags & F_CHUNKED) || (has_len && p->content_length);
    if (expect && has_body && !r->http10 &&
        tg_strcaseeq(expect, strlen(expect), "100-continue", 12)) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        uv_buf_t b = uv_buf_init((char *)cont, sizeof(cont) - 1);
        tg_conn_write(c, &b, 1);
    }
    c->state = CS_BODY;
    c->due = loop_now(c) + cfg->body_timeout_ms;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    hreq_t *r = c->req;
    if (r->ibody) {
        /* llhttp never passes more than Content-Length bytes. */
        memcpy(r->ibody + r->pub.body_len, at, len);
        r->pub.body_len += len;
        return 0;
    }
    int rc = tg_buf_append(&r->cbody, at, len);
    if (rc) return parse_fail(c, rc == TG_ETOOBIG ? 413 : 500);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    hreq_t *r = c->req;
    if (r->ibody) {
        r->ibody[r->pub.body_len] = '\0';
        r->pub.body = r->ibody;
    } else if (r->cbody.len) {
        r->pub.body = r->cbody.data;
        r->pub.body_len = r->cbody.len;
    }
    if (p->upgrade) r->keepalive = 0; /* no upgrades: answer, then close */
    /* Stop here: the request goes to the handler before anything after it. */
    return HPE_PAUSED;
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = tok_add,
    .on_header_field = tok_add,
    .on_header_value = tok_add,
    .on_url_complete = on_url_complete,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void conn_peer_str(const conn_t *c, char *out, size_t cap)
{
    const void *addr = c->peer.sin6_family == AF_INET
                           ? (const void *)&((struct sockaddr_in *)&c->peer)->sin_addr
                           : (const void *)&c->peer.sin6_addr;
    if (!c->peer.sin6_family || !inet_ntop(c->peer.sin6_family, addr, out, (socklen_t)cap))
        snprintf(out, cap, "-");
}

static void conn_dispatch(conn_t *c)
{
    hreq_t *r = c->req;
    c->state = CS_HANDLER;
    r->in_handler = 1;
    memcpy(r->pub.remote_addr, c->remote, sizeof(r->pub.remote_addr));
    r->pub.conn_memo = c->memo;
    const tg_http_app_t *app = &c->w->s->app;
    app->handle(&r->pub, app->ctx);
}

/* Parses input until it is used up or a request is in the handler's hands.
 * Returns the bytes consumed; the caller keeps the rest for later. */
static size_t conn_feed(conn_t *c, const char *data, size_t n)
{
    size_t off = 0;
    c->feeding = 1;
    while (off < n && !c->closing && c->state <= CS_BODY) {
        llhttp_errno_t e = llhttp_execute(&c->parser, data + off, n - off);
        if (e == HPE_OK) {
            hreq_t *r = c->req;
            if (c->state == CS_HEAD && r) {
                /* Everything fed since the request began is header bytes. */
                r->hraw += n - off;
                if (r->hraw > cfg_of(c)->max_header_bytes) {
                    conn_reject(c, 431);
                    off = n;
                    break;
                }
            }
            off = n;
            if (tok_save(c)) conn_reject(c, 431);
            break;
        }
        if (e == HPE_PAUSED) {
            off = (size_t)(llhttp_get_error_pos(&c->parser) - data);
            llhttp_resume(&c->parser);
            if (c->closing) break; /* a write failed mid-parse; the close frees it */
            conn_dispatch(c);
            continue;
        }
        /* A syntax error, a limit, or an upgrade we do not support. */
        conn_reject(c, c->err_status ? c->err_status : 400);
        off = n;
        break;
    }
    c->feeding = 0;
    return off;
}

/* Keeps input that arrived while a request is in flight. */
static void conn_hold(conn_t *c, const char *data, size_t n)
{
    if (tg_buf_append(&c->pending, data, n)) {
        tg_conn_close(c);
        return;
    }
    if (c->pending.len >= TG_HTTP_PENDING_MAX && !c->read_stopped) {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->read_stopped = 1;
    }
}

static void conn_feed_pending(conn_t *c)
{
    if (c->state > CS_BODY) return;
    size_t used = conn_feed(c, c->pending.data, c->pending.len);
    if (c->state == CS_HANDLER && !c->closing && used < c->pending.len) {
        tg_buf_consume(&c->pending, used);
        return;
    }
    tg_buf_free(&c->pending);
    if (c->read_stopped && c->state <= CS_BODY && !c->closing) conn_read_start(c);
}

static void conn_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    conn_t *c = h->data;
    *buf = uv_buf_init(c->w->rbuf, TG_HTTP_READ_BUF);
}

void tg_conn_on_eof(conn_t *c)
{
    c->eof = 1;
    switch (c->state) {
    case CS_DONE:
        /* Our reply is still going out; close once the FIN is sent. */
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->read_stopped = 1;
        return;
    case CS_IDLE:
        if (c->queued && !c->pending.len) {
            /* A half-closing client still gets the end of its last reply. */
            uv_read_stop((uv_stream_t *)&c->tcp);
            c->read_stopped = 1;
            tg_conn_done(c);
            return;
        }
        break;
    default:
        break;
    }
    /* In HANDLER this is the client going away: on_abort follows the close. */
    tg_conn_close(c);
}

/* HTTP/1.1 input (and what arrives once a connection is done). */
static void conn_on_bytes(conn_t *c, const char *data, size_t n)
{
    switch (c->state) {
    case CS_DONE:
        c->linger = 1;
        return; /* discarded */
    case CS_LINGER:
        return;
    case CS_HANDLER:
        conn_hold(c, data, n);
        return;
    default:
        break;
    }
    if (c->pending.len) {
        conn_hold(c, data, n); /* order: older input is parsed first */
        return;
    }
    size_t used = conn_feed(c, data, n);
    if (used < n && c->state == CS_HANDLER && !c->closing) conn_hold(c, data + used, n - used);
    tg_conn_arm(c);
}

/* RFC 9113 3.4: what an HTTP/2 client with prior knowledge sends first. */
static const char h2_preface[] = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
#define H2_PREFACE_LEN (sizeof(h2_preface) - 1)

/* A new connection's first bytes: the HTTP/2 preface, or HTTP/1.1. A prefix
 * of the preface cut by a read waits in c->pending (at most 23 bytes). */
static void conn_sniff(conn_t *c, const char *data, size_t n)
{
    size_t have = c->pending.len;
    size_t m = n < H2_PREFACE_LEN - have ? n : H2_PREFACE_LEN - have;
    if (memcmp(data, h2_preface + have, m) != 0) {
        c->proto = TG_PROTO_H1;
        if (!have) {
            conn_on_bytes(c, data, n);
            return;
        }
        conn_hold(c, data, n);
        if (!c->closing) conn_feed_pending(c);
        tg_conn_arm(c);
        return;
    }
    if (have + m < H2_PREFACE_LEN) {
        conn_hold(c, data, n);
        return;
    }
    if (tg_h2_start(c)) {
        tg_conn_close(c);
        return;
    }
    if (have) {
        tg_h2_on_read(c, c->pending.data, have);
        tg_buf_free(&c->pending);
    }
    if (!c->closing && c->state == CS_H2) tg_h2_on_read(c, data, n);
}

void tg_conn_on_plain(conn_t *c, const char *data, size_t n)
{
    switch (c->proto) {
    case TG_PROTO_H1:
        conn_on_bytes(c, data, n);
        break;
    case TG_PROTO_SNIFF:
        conn_sniff(c, data, n);
        break;
    default:
        if (c->state == CS_H2)
            tg_h2_on_read(c, data, n);
        else
            conn_on_bytes(c, data, n); /* winding down: discarded */
        break;
    }
}

static void conn_on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = (conn_t *)s;
    if (nread == 0 || c->closing) return;
    if (nread < 0) {
        tg_conn_on_eof(c);
        return;
    }
    if (c->proto != TG_PROTO_H1 || c->ssl) {
        if (c->ssl)
            tg_tls_on_read(c, buf->base, (size_t)nread);
        else
            tg_conn_on_plain(c, buf->base, (size_t)nread);
        return;
    }
    conn_on_bytes(c, buf->base, (size_t)nread);
}

static void conn_read_start(conn_t *c)
{
    c->read_stopped = 0;
    if (uv_read_start((uv_stream_t *)&c->tcp, conn_alloc, conn_on_read)) tg_conn_close(c);
}

void tg_conn_read(conn_t *c, int on)
{
    if (c->closing || on == !c->read_stopped) return;
    if (on) {
        if (!c->eof) conn_read_start(c);
    } else {
        uv_read_stop((uv_stream_t *)&c->tcp);
        c->read_stopped = 1;
    }
}

/* ---- finishing a request ------------------------------------------------------ */

static void req_finish(hreq_t *r)
{
    conn_t *c = r->c;
    int keep = r->keepalive && !r->resp_close && !c->w->draining;
    r->in_handler = 0;
    req_release(c); /* r is gone from here on */
    if (c->closed) {
        tg_conn_free(c);
        return;
    }
    if (c->closing) return; /* the close callback frees it */
    if (!keep) {
        tg_conn_done(c);
        return;
    }
    c->state = CS_IDLE;
    c->due = loop_now(c) + cfg_of(c)->idle_timeout_ms;
    if (c->feeding) return; /* conn_feed goes on with the rest of its input */
    if (c->pending.len)
        c->resume = 1;
    else if (c->read_stopped && !c->eof)
        conn_read_start(c);
    tg_conn_arm(c);
}

static hreq_t *req_live(tg_req_t *req)
{
    hreq_t *r = (hreq_t *)req;
    return r && r->in_handler ? r : NULL;
}

static int resp_keep(const hreq_t *r)
{
    return r->keepalive && !r->c->w->draining;
}

int tg_resp_send(tg_req_t *req, int status, const tg_header_t *hdrs, size_t nhdrs, const void *body,
                 size_t len)
{
    if (req && tg_req_h2(req)) return tg_h2_resp_send(req, status, hdrs, nhdrs, body, len);
    hreq_t *r = req_live(req);
    if (!r) return TG_EINVAL;
    if (r->started) {
        tg_resp_end(req); /* a misuse, but the request must still finish */
        return TG_EINVAL;
    }
    conn_t *c = r->c;
    tg_worker_t *w = c->w;
    int rc = TG_ECLOSED;
    if (!r->aborted && !c->closing) {
        int keep = resp_keep(r);
        int nobody = status < 200 || status == 204 || status == 304;
        rc = build_head(w, status, hdrs, nhdrs, keep, nobody ? FRAME_NONE : FRAME_LENGTH, len);
        if (rc == 0) {
            uv_buf_t b[2] = {uv_buf_init(w->hbuf.data, (unsigned)w->hbuf.len),
                             uv_buf_init((char *)body, (unsigned)len)};
            rc = tg_conn_write(c, b, r->head || nobody || !len ? 1 : 2);
            if (rc == 0) r->resp_bytes += len;
        } else {
            tg_conn_close(c); /* nothing was sent; there is no sane reply left */
        }
        if (!keep) r->resp_close = 1;
    }
    req_finish(r);
    return rc;
}

int tg_resp_error(tg_req_t *req, int status, const char *code, const char *message)
{
    if (!req || !(tg_req_h2(req) ? tg_h2_req_live(req) : req_live(req) != NULL)) return TG_EINVAL;
    tg_buf_t *b = &req->worker->ebuf;
    if (tg_http_error_json(b, status, code ? code : "error", message ? message : "") != 0)
        tg_http_error_json(b, status, "error", "error");
    static const tg_header_t ct = {"Content-Type", 12, "application/json", 16};
    return tg_resp_send(req, status, &ct, 1, b->data, b->len);
}

int tg_resp_start(tg_req_t *req, int status, const tg_header_t *hdrs, size_t nhdrs)
{
    if (req && tg_req_h2(req)) return tg_h2_resp_start(req, status, hdrs, nhdrs);
    hreq_t *r = req_live(req);
    if (!r || r->started) return TG_EINVAL;
    r->started = 1;
    conn_t *c = r->c;
    if (r->aborted || c->closing) return TG_ECLOSED;
    /* HTTP/1.0 knows no chunked encoding: the body ends when we close. */
    int keep = resp_keep(r) && !r->http10;
    r->chunked = !r->http10;
    if (!keep) r->resp_close = 1;
    int rc =
        build_head(c->w, status, hdrs, nhdrs, keep, r->chunked ? FRAME_CHUNKED : FRAME_CLOSE, 0);
    if (rc) {
        tg_conn_close(c);
        return rc;
    }
    uv_buf_t b = uv_buf_init(c->w->hbuf.data, (unsigned)c->w->hbuf.len);
    return tg_conn_write(c, &b, 1);
}

int tg_resp_write(tg_req_t *req, const void *data, size_t len)
{
    if (req && tg_req_h2(req)) return tg_h2_resp_write(req, data, len);
    hreq_t *r = req_live(req);
    if (!r || !r->started) return TG_EINVAL;
    conn_t *c = r->c;
    if (r->aborted || c->closing) return TG_ECLOSED;
    if (len && !r->head) {
        uv_buf_t b[3];
        unsigned nb = 0;
        char hx[24];
        if (r->chunked) {
            size_t v = len, n = 0;
            char tmp[20];
            do {
                tmp[n++] = "0123456789abcdef"[v & 15];
                v >>= 4;
            } while (v);
            for (size_t i = 0; i < n; i++)
                hx[i] = tmp[n - 1 - i];
            hx[n] = '\r';
            hx[n + 1] = '\n';
            b[nb++] = uv_buf_init(hx, (unsigned)(n + 2));
        }
        b[nb++] = uv_buf_init((char *)data, (unsigned)len);
        if (r->chunked) b[nb++] = uv_buf_init("\r\n", 2);
        if (tg_conn_write(c, b, nb)) return TG_ECLOSED;
    }
    r->resp_bytes += len;
    if (c->queued > cfg_of(c)->write_high_water) {
        r->drain_wanted = 1;
        return 1;
    }
    return 0;
}

int tg_resp_end(tg_req_t *req)
{
    if (req && tg_req_h2(req)) return tg_h2_resp_end(req);
    hreq_t *r = req_live(req);
    if (!r) return TG_EINVAL;
    if (!r->started) return tg_resp_send(req, 200, NULL, 0, "", 0);
    conn_t *c = r->c;
    int rc = TG_ECLOSED;
    if (!r->aborted && !c->closing) {
        rc = TG_OK;
        if (r->chunked && !r->head) {
            uv_buf_t b = uv_buf_init("0\r\n\r\n", 5);
            rc = tg_conn_write(c, &b, 1);
        }
    }
    req_finish(r);
    return rc;
}

/* ---- accepting -------------------------------------------------------------- */

static void worker_on_connection(uv_stream_t *server, int status)
{
    tg_worker_t *w = server->data;
    if (status < 0) {
        tg_warn("http: accept: %s", uv_strerror(status));
        return;
    }
    conn_t *c = calloc(1, sizeof(*c));
    if (!c) return; /* libuv pauses accepting until a later attempt succeeds */
    c->w = w;
    uv_tcp_init(&w->loop, &c->tcp);
    uv_timer_init(&w->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    tg_arena_init(&c->arena, 0);
    tg_buf_init(&c->pending, 0);
    c->next = w->conns;
    if (w->conns) w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) || w->draining ||
        w->nconns > w->s->cfg.max_connections) {
        tg_conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    int alen = sizeof(c->peer);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&c->peer, &alen)) c->peer.sin6_family = 0;
    conn_peer_str(c, c->remote, sizeof(c->remote));
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    c->state = CS_IDLE;
    c->proto = TG_PROTO_SNIFF;
    c->due = loop_now(c) + w->s->cfg.idle_timeout_ms;
    if (server == (uv_stream_t *)&w->tls_listener && tg_tls_conn_start(c, w->s->tls_ctx)) {
        tg_conn_close(c);
        return;
    }
    conn_read_start(c);
    tg_conn_arm(c);
}

/* ---- workers ------------------------------------------------------------------ */

static void worker_close_walk(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h)) uv_close(h, NULL);
}

/* Stops tg_server_stop from touching the async handle, waiting out a call
 * that is already between its check and its send, then closes it. */
static void worker_close_async(tg_worker_t *w)
{
    atomic_store(&w->async_live, 0);
    while (atomic_load(&w->s->stop_senders))
        sched_yield();
    if (w->async_inited && !uv_is_closing((uv_handle_t *)&w->async))
        uv_close((uv_handle_t *)&w->async, NULL);
}

static void worker_on_finish(uv_timer_t *t)
{
    tg_worker_t *w = t->data;
    const tg_http_app_t *app = &w->s->app;
    if (app->worker_fini) app->worker_fini(w, w->data, app->ctx);
    worker_close_async(w);
    /* Whatever the application left open would keep the loop from closing. */
    uv_walk(&w->loop, worker_close_walk, NULL);
}

static void worker_maybe_finish(tg_worker_t *w)
{
    if (!w->draining || w->nconns || w->finishing) return;
    w->finishing = 1;
    uv_timer_start(&w->drain_timer, worker_on_finish, 0, 0);
}

static void worker_on_drain_timeout(uv_timer_t *t)
{
    tg_worker_t *w = t->data;
    /* In-flight requests ran out of time: on_abort comes from the closes. */
    for (conn_t *c = w->conns; c; c = c->next)
        tg_conn_close(c);
}

static void worker_drain(tg_worker_t *w)
{
    if (w->draining) return;
    w->draining = 1;
    if (w->listening) uv_close((uv_handle_t *)&w->listener, NULL);
    if (w->tls_listening) uv_close((uv_handle_t *)&w->tls_listener, NULL);
    w->listening = w->tls_listening = 0;
    const tg_http_app_t *app = &w->s->app;
    if (app->worker_draining) app->worker_draining(w, w->data, app->ctx);
    for (conn_t *c = w->conns; c; c = c->next) {
        if (c->closing) continue;
        if (c->state == CS_H2) {
            tg_h2_drain(c); /* GOAWAY; its streams go on */
            continue;
        }
        if (c->state != CS_IDLE || c->pending.len) continue;
        if (c->queued)
            tg_conn_done(c); /* finish the reply, then close */
        else
            tg_conn_close(c);
    }
    uv_timer_start(&w->drain_timer, worker_on_drain_timeout, w->s->cfg.shutdown_timeout_ms, 0);
    worker_maybe_finish(w);
}

static void worker_on_async(uv_async_t *a)
{
    tg_worker_t *w = a->data;
    if (atomic_load(&w->s->stop_requested)) worker_drain(w);
}

static int worker_setup(tg_worker_t *w)
{
    tg_server_t *s = w->s;
    w->rbuf = malloc(TG_HTTP_READ_BUF);
    if (!w->rbuf) return TG_ENOMEM;
    if (uv_async_init(&w->loop, &w->async, worker_on_async)) return TG_EIO;
    w->async.data = w;
    w->async_inited = 1;
    atomic_store(&w->async_live, 1);
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    if (s->app.worker_init) w->data = s->app.worker_init(w, &w->loop, s->app.ctx);
    w->app_inited = 1;
    uv_tcp_init(&w->loop, &w->listener);
    w->listener.data = w;
    int rc = uv_tcp_open(&w->listener, w->fd);
    if (rc) {
        uv_close((uv_handle_t *)&w->listener, NULL);
        tg_error("http: worker %d: %s", w->index, uv_strerror(rc));
        return TG_EIO;
    }
    w->fd = -1; /* the loop owns it now */
    rc = uv_listen((uv_stream_t *)&w->listener, SOMAXCONN, worker_on_connection);
    w->listening = 1;
    if (rc) {
        tg_error("http: worker %d: listen: %s", w->index, uv_strerror(rc));
        return TG_EIO;
    }
    if (w->tls_fd < 0) return TG_OK;
    uv_tcp_init(&w->loop, &w->tls_listener);
    w->tls_listener.data = w;
    rc = uv_tcp_open(&w->tls_listener, w->tls_fd);
    if (rc) {
        uv_close((uv_handle_t *)&w->tls_listener, NULL);
        tg_error("http: worker %d: %s", w->index, uv_strerror(rc));
        return TG_EIO;
    }
    w->tls_fd = -1;
    rc = uv_listen((uv_stream_t *)&w->tls_listener, SOMAXCONN, worker_on_connection);
    w->tls_listening = 1;
    if (rc) {
        tg_error("http: worker %d: listen (tls): %s", w->index, uv_strerror(rc));
        return TG_EIO;
    }
    return TG_OK;
}

static void worker_main(void *arg)
{
    tg_worker_t *w = arg;
    char name[16];
    snprintf(name, sizeof(name), "tg-worker-%d", w->index);
    pthread_setname_np(pthread_self(), name); /* so top -H and perf name it */
    tg_server_t *s = w->s;
    int rc = uv_loop_init(&w->loop);
    if (rc) {
        w->err = TG_EIO;
        uv_sem_post(&s->ready);
        return;
    }
    rc = worker_setup(w);
    w->err = rc;
    uv_sem_post(&s->ready);
    if (rc) {
        if (s->app.worker_fini && w->app_inited) s->app.worker_fini(w, w->data, s->app.ctx);
        worker_close_async(w);
        uv_walk(&w->loop, worker_close_walk, NULL);
    } else if (atomic_load(&s->stop_requested)) {
        worker_drain(w); /* a stop that came before async_live was set */
    }
    uv_run(&w->loop, UV_RUN_DEFAULT);
    /* Handles opened by callbacks during the last run. */
    uv_walk(&w->loop, worker_close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w->loop)) tg_warn("http: worker %d: loop not closed cleanly", w->index);
}

/* ---- server ------------------------------------------------------------------- */

int tg_server_create(tg_server_t **out, const tg_http_config_t *cfg, const tg_http_app_t *app)
{
    *out = NULL;
    if (!cfg || !app || !app->handle || cfg->workers < 1 || cfg->port < 0 || cfg->port > 65535 ||
        cfg->write_low_water > cfg->write_high_water ||
        (cfg->cert_file && (!cfg->key_file || cfg->tls_port < 0 || cfg->tls_port > 65535)))
        return TG_EINVAL;
    tg_server_t *s = calloc(1, sizeof(*s));
    if (!s) return TG_ENOMEM;
    s->cfg = *cfg;
    s->app = *app;
    s->host = strdup(cfg->host && *cfg->host ? cfg->host : "0.0.0.0");
    const char *th = cfg->tls_host && *cfg->tls_host ? cfg->tls_host : s->host;
    s->tls_host = s->host ? strdup(th) : NULL;
    s->nworkers = cfg->workers;
    s->workers = calloc((size_t)s->nworkers, sizeof(*s->workers));
    if (!s->host || !s->tls_host || !s->workers || uv_sem_init(&s->ready, 0)) {
        free(s->host);
        free(s->tls_host);
        free(s->workers);
        free(s);
        return TG_ENOMEM;
    }
    s->cfg.host = s->host;
    s->cfg.tls_host = s->tls_host;
    s->tls_port = cfg->tls_port;
    /* The files are read now: the server keeps no path. */
    s->cfg.cert_file = s->cfg.key_file = NULL;
    if (cfg->cert_file && tg_tls_ctx_new(&s->tls_ctx, cfg->cert_file, cfg->key_file)) {
        uv_sem_destroy(&s->ready);
        free(s->host);
        free(s->tls_host);
        free(s->workers);
        free(s);
        return TG_ECONFIG;
    }
    atomic_init(&s->stop_requested, 0);
    atomic_init(&s->stop_senders, 0);
    for (int i = 0; i < s->nworkers; i++) {
        tg_worker_t *w = &s->workers[i];
        w->s = s;
        w->index = i;
        w->fd = -1;
        w->tls_fd = -1;
        atomic_init(&w->async_live, 0);
        tg_buf_init(&w->hbuf, 1024 * 1024);
        tg_buf_init(&w->ebuf, 64 * 1024);
        tg_buf_init(&w->h2out, 1024 * 1024);
    }
    *out = s;
    return TG_OK;
}

static int resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof(*ss));
    if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) {
        *len = sizeof(struct sockaddr_in);
        return TG_OK;
    }
    if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) {
        *len = sizeof(struct sockaddr_in6);
        return TG_OK;
    }
    /* A name such as "localhost": resolved once, at startup. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *ai = NULL;
    if (getaddrinfo(host, NULL, &hints, &ai) || !ai) return TG_ECONFIG;
    memcpy(ss, ai->ai_addr, ai->ai_addrlen);
    *len = ai->ai_addrlen;
    freeaddrinfo(ai);
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
    return TG_OK;
}

static int listen_socket(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) return -1;
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
        bind(fd, (const struct sockaddr *)ss, len) || listen(fd, SOMAXCONN)) {
        close(fd);
        return -1;
    }
    return fd;
}

/* One SO_REUSEPORT socket per worker on host:port, into each worker's fd
 * (tls: tls_fd). Port 0: the kernel picks one for the first, the others share
 * it; *bound gets the port. */
static int listen_all(tg_server_t *s, const char *host, int port, int tls, int *bound)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int rc = resolve(host, port, &ss, &len);
    if (rc) {
        tg_error("http: cannot resolve %s", host);
        return rc;
    }
    for (int i = 0; i < s->nworkers; i++) {
        int fd = listen_socket(&ss, len);
        if (fd < 0) {
            tg_error("http: cannot listen on %s:%d: %s", host, port, strerror(errno));
            for (int j = 0; j < i; j++) {
                int *f = tls ? &s->workers[j].tls_fd : &s->workers[j].fd;
                close(*f);
                *f = -1;
            }
            return TG_EIO;
        }
        *(tls ? &s->workers[i].tls_fd : &s->workers[i].fd) = fd;
        if (i == 0) {
            struct sockaddr_storage got;
            socklen_t glen = sizeof(got);
            getsockname(fd, (struct sockaddr *)&got, &glen);
            *bound = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
                                                    : ((struct sockaddr_in6 *)&got)->sin6_port);
            if (ss.ss_family == AF_INET)
                ((struct sockaddr_in *)&ss)->sin_port = htons((uint16_t)*bound);
            else
                ((struct sockaddr_in6 *)&ss)->sin6_port = htons((uint16_t)*bound);
        }
    }
    return TG_OK;
}

int tg_server_start(tg_server_t *s)
{
    if (s->started) return TG_EINVAL;
    signal(SIGPIPE, SIG_IGN);
    int rc = listen_all(s, s->host, s->cfg.port, 0, &s->port);
    if (rc) return rc;
    if (s->tls_ctx && (rc = listen_all(s, s->tls_host, s->tls_port, 1, &s->tls_port))) {
        for (int j = 0; j < s->nworkers; j++)
            close(s->workers[j].fd), s->workers[j].fd = -1;
        return rc;
    }
    s->started = 1;
    int err = TG_OK;
    for (int i = 0; i < s->nworkers; i++) {
        tg_worker_t *w = &s->workers[i];
        if (uv_thread_create(&w->thread, worker_main, w)) {
            err = TG_EIO;
            break;
        }
        w->thread_started = 1;
    }
    for (int i = 0; i < s->nworkers; i++) {
        tg_worker_t *w = &s->workers[i];
        if (!w->thread_started) continue;
        uv_sem_wait(&s->ready);
    }
    for (int i = 0; i < s->nworkers; i++)
        if (s->workers[i].err) err = s->workers[i].err;
    if (err) {
        tg_server_stop(s);
        tg_server_wait(s);
    }
    return err;
}

void tg_server_stop(tg_server_t *s)
{
    /* Only atomics and uv_async_send: this runs from signal handlers. */
    atomic_store(&s->stop_requested, 1);
    atomic_fetch_add(&s->stop_senders, 1);
    for (int i = 0; i < s->nworkers; i++) {
        tg_worker_t *w = &s->workers[i];
        if (atomic_load(&w->async_live)) uv_async_send(&w->async);
    }
    atomic_fetch_sub(&s->stop_senders, 1);
}

void tg_server_wait(tg_server_t *s)
{
    if (!s->started || s->joined) return;
    for (int i = 0; i < s->nworkers; i++) {
        tg_worker_t *w = &s->workers[i];
        if (w->thread_started) uv_thread_join(&w->thread);
        w->thread_started = 0;
    }
    s->joined = 1;
}

void tg_server_destroy(tg_server_t *s)
{
    if (!s) return;
    if (s->started && !s->joined) {
        tg_server_stop(s);
        tg_server_wait(s);
    }
    for (int i = 0; i < s->nworkers; i++) {
        tg_worker_t *w = &s->workers[i];
        if (w->fd >= 0) close(w->fd);
        if (w->tls_fd >= 0) close(w->tls_fd);
        tg_buf_free(&w->hbuf);
        tg_buf_free(&w->ebuf);
        tg_buf_free(&w->h2out);
        free(w->rbuf);
    }
    uv_sem_destroy(&s->ready);
    tg_tls_ctx_free(s->tls_ctx);
    free(s->workers);
    free(s->host);
    free(s->tls_host);
    free(s);
}

int tg_server_port(const tg_server_t *s)
{
    return s->started ? s->port : s->cfg.port;
}

int tg_server_tls_port(const tg_server_t *s)
{
    if (!s->tls_ctx) return -1;
    return s->tls_port;
}

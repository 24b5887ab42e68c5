/* h1.c - a native HTTP/1.1 client for plain http:// upstreams, on libuv and
 * llhttp, behind the tg_upcall API (upstream.c dispatches to it).
 *
 * Why not libcurl for these: per request it builds the head with printf,
 * polls twice, and searches its connection cache linearly, which at 10,000
 * concurrent streams to one host makes each new transfer O(n). Here:
 *  - connections are pooled per (host, port): an idle list per host, so get
 *    and put are O(1); a global LRU caps the idle ones kept (MAX_IDLE);
 *  - idle connections keep reading, so a server's close is noticed at once
 *    and they are never reused after it;
 *  - every read lands in one 64 KiB buffer per tg_h1_t: bytes are parsed and
 *    delivered synchronously in the read callback, so a connection owns no
 *    read buffer; only body bytes read while the caller is paused are copied
 *    (at most one read's worth: reading stops at the first such byte);
 *  - one uv_timer per connection holds the current call's nearest deadline
 *    (connect, first byte, total): O(log n) per change in libuv's heap.
 *
 * Lifetimes. A connection is freed from its handles' close callbacks (and
 * only once a pending getaddrinfo has come back). A call is freed at once
 * when canceled from outside, but while any of our callbacks is on the stack
 * (h->entered > 0) it is only parked on h->zombies and freed on the way out:
 * the parser may still hold it. Callers may start calls from on_done, cancel
 * from on_headers/on_data, and destroy from anywhere, as with the curl path.
 * Responses are parsed with llhttp; on_message_complete pauses the parser so
 * the call ends (and its connection is pooled) after llhttp has returned. */
#include "upstream/h1.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>

#include <llhttp.h>

#define READ_BUF           (64 * 1024) /* shared by all connections of a loop */
#define MAX_HEADER_BYTES   (64 * 1024) /* one response's header block, as upstream.c */
#define MAX_IDLE           1024        /* idle connections kept, as curl's MAX_CONNECTS */
#define CONNECT_DEFAULT_MS 300000      /* libcurl's default connect timeout */
#define STACK_HEADERS      64          /* headers delivered without malloc */
#define MAX_IDLE_AGE_MS    118000      /* libcurl's CURLOPT_MAXAGE_CONN default */
#define ADDR_CACHE_MS      30000       /* a name's addresses are reused this long */
#define MAX_ADDRS          16          /* addresses of a name kept and tried */

typedef struct h1_host h1_host_t;
typedef struct h1_conn h1_conn_t;
typedef struct h1_call h1_call_t;

/* One (host, port) a tg_h1_t has called; kept until destroy (few per worker). */
struct h1_host {
    h1_host_t *next;
    tg_link_t idle; /* idle connections, most recently used first */
    int port;
    int numeric; /* an IP literal: addr is it, no resolving */
    struct sockaddr_storage addr;
    /* A name's addresses from its last lookup, reused by new connections
     * until addrs_due (uv_now ms), so that a burst of them (a thousand
     * streams opening) does not queue a thousand lookups on the thread pool.
     * Dropped when a connection could reach none of them. */
    struct sockaddr_storage *addrs;
    int naddrs;
    uint64_t addrs_due;
    char name[]; /* without brackets */
};

struct h1_conn {
    uv_tcp_t tcp;
    uv_timer_t timer; /* the call's nearest deadline; also defers a failed start */
    union {           /* one at a time: resolve, then connect, then writes */
        uv_getaddrinfo_t gai;
        uv_connect_t connect;
    } req;
    uv_write_t write;
    llhttp_t parser;
    tg_h1_t *h;
    h1_host_t *host;
    h1_call_t *call;                /* the call it serves; NULL while idle */
    struct sockaddr_storage *addrs; /* the addresses to try (owned), until connected */
    int naddrs, next_addr;
    tg_link_t hlink;     /* host->idle while idle */
    tg_link_t lru;       /* h->idle while idle; h->conns otherwise */
    int handles;         /* open uv handles (tcp, timer) */
    int pending_err;     /* a failure found synchronously, reported by the timer */
    uint64_t idle_since; /* uv_now() ms when pooled */
    unsigned connected : 1;
    unsigned reused : 1;    /* served a response before: may be stale */
    unsigned writing : 1;   /* a request write is in flight */
    unsigned reading : 1;   /* uv_read_start is in effect */
    unsigned resolving : 1; /* a getaddrinfo is in flight */
    unsigned closing : 1;
    unsigned reconnect : 1; /* tcp closing to try the next address */
};

struct h1_call {
    unsigned char native; /* 1: see TG_UPCALL_NATIVE */
    tg_h1_t *h;
    h1_host_t *host;
    h1_conn_t *conn; /* NULL once the response is complete */
    tg_upcall_cbs_t cbs;
    void *ud;
    const char *body; /* borrowed */
    size_t body_len;
    char *req; /* the request head, in tail */
    size_t req_len;
    tg_buf_t head; /* "name\0value\0" pairs of the response being received */
    size_t nhead;
    tg_buf_t held; /* body bytes read while paused */
    int status;
    int err; /* a parser callback's reason to fail */
    uint32_t connect_ms, fb_ms, total_ms;
    uint64_t connect_due, fb_due, total_due; /* uv_now() ms; 0 = none */
    uint64_t start_ns, ttfb_ns;
    unsigned got_byte : 1;
    unsigned headers_done : 1;
    unsigned interim : 1; /* inside a 1xx response */
    unsigned no_body : 1; /* HEAD */
    unsigned paused : 1;
    unsigned complete : 1; /* the whole response is in (held may remain) */
    unsigned retried : 1;
    unsigned canceled : 1;
    unsigned done : 1;
    tg_link_t all; /* h->calls */
    tg_link_t aux; /* h->to_resume or h->zombies, or none */
    char tail[];
};

struct tg_h1 {
    uv_loop_t *loop;
    uv_timer_t kick; /* runs queued resumes outside the caller's stack */
    h1_host_t *hosts;
    tg_link_t calls, to_resume, zombies;
    tg_link_t idle;  /* idle connections, most recent first */
    tg_link_t conns; /* busy connections */
    size_t nidle;
    int entered;           /* our callbacks on the stack */
    int objects;           /* open kick timer + connections not yet freed */
    unsigned long lookups; /* host name lookups started (tg_h1_lookups) */
    int destroy_pending, destroying;
    char rbuf[READ_BUF];
};

static void do_destroy(tg_h1_t *h);
static void conn_close(h1_conn_t *k);
static void conn_attach(h1_call_t *c, h1_conn_t *k);
static int conn_open(h1_call_t *c);

/* ---- entering and leaving ------------------------------------------------- */

static void call_free(h1_call_t *c)
{
    tg_buf_free(&c->head);
    tg_buf_free(&c->held);
    free(c);
}

static void enter(tg_h1_t *h)
{
    h->entered++;
}

static void leave(tg_h1_t *h)
{
    if (--h->entered) return;
    while (!tg_link_empty(&h->zombies)) {
        h1_call_t *c = tg_container_of(h->zombies.next, h1_call_t, aux);
        tg_link_del(&c->aux);
        call_free(c);
    }
    if (h->destroy_pending) do_destroy(h);
}

static void object_gone(tg_h1_t *h)
{
    if (--h->objects == 0 && h->destroying) free(h);
}

/* Frees c now, or on the way out when our frames may still hold it. */
static void call_release(h1_call_t *c)
{
    tg_h1_t *h = c->h;
    tg_link_del(&c->all);
    tg_link_del(&c->aux);
    if (h->entered)
        tg_link_push(&h->zombies, &c->aux);
    else
        call_free(c);
}

/* Ends c with on_done(err). The connection is already detached. */
static void call_finish(h1_call_t *c, int err)
{
    if (c->canceled || c->done) return;
    if (err == 0 && !c->headers_done) err = TG_EUPSTREAM;
    c->done = 1;
    c->cbs.on_done((tg_upcall_t *)c, err, c->ud);
    call_release(c);
}

/* ---- deadlines -------------------------------------------------------------- */

static void on_conn_timer(uv_timer_t *t);

static uint64_t earliest(uint64_t a, uint64_t b)
{
    return !a ? b : !b ? a : a < b ? a : b;
}

/* Arms k's timer for its call's nearest deadline in the current phase. */
static void conn_arm(h1_conn_t *k)
{
    h1_call_t *c = k->call;
    if (!c) {
        uv_timer_stop(&k->timer);
        return;
    }
    uint64_t due = c->total_due;
    if (!k->connected)
        due = earliest(due, c->connect_due);
    else if (!c->got_byte)
        due = earliest(due, c->fb_due);
    if (!due) {
        uv_timer_stop(&k->timer);
        return;
    }
    uint64_t now = uv_now(k->h->loop);
    uv_timer_start(&k->timer, on_conn_timer, due > now ? due - now : 0, 0);
}

/* ---- connections ------------------------------------------------------------ */

static void conn_maybe_free(h1_conn_t *k)
{
    if (k->handles || k->resolving) return;
    tg_h1_t *h = k->h;
    free(k->addrs);
    free(k);
    object_gone(h);
}

static void conn_connect_next(h1_conn_t *k);
static void host_forget(h1_host_t *x);

static void on_tcp_closed(uv_handle_t *hd)
{
    h1_conn_t *k = hd->data;
    if (k->reconnect && !k->closing) {
        k->reconnect = 0;
        uv_tcp_init(k->h->loop, &k->tcp);
        k->tcp.data = k;
        conn_connect_next(k);
        return;
    }
    k->handles--;
    conn_maybe_free(k);
}

static void on_timer_closed(uv_handle_t *hd)
{
    h1_conn_t *k = hd->data;
    k->handles--;
    conn_maybe_free(k);
}

/* Parts k and its call; its timer served the call only. */
static void conn_detach(h1_conn_t *k)
{
    if (k->call) k->call->conn = NULL;
    k->call = NULL;
    uv_timer_stop(&k->timer);
}

static void conn_unlist(h1_conn_t *k)
{
    if (!tg_link_empty(&k->hlink)) k->h->nidle--;
    tg_link_del(&k->hlink);
    tg_link_del(&k->lru);
}

static void conn_close(h1_conn_t *k)
{
    if (k->closing) return;
    conn_detach(k);
    conn_unlist(k);
    k->closing = 1;
    if (k->resolving) uv_cancel((uv_req_t *)&k->req.gai);
    if (!uv_is_closing((uv_handle_t *)&k->tcp)) uv_close((uv_handle_t *)&k->tcp, on_tcp_closed);
    uv_close((uv_handle_t *)&k->timer, on_timer_closed);
}

static void on_alloc(uv_handle_t *hd, size_t hint, uv_buf_t *buf)
{
    h1_conn_t *k = hd->data;
    *buf = uv_buf_init(k->h->rbuf, READ_BUF);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf);

static void conn_read(h1_conn_t *k, int on)
{
    if (k->closing || !k->connected || k->reading == on) return;
    if (on)
        k->reading = uv_read_start((uv_stream_t *)&k->tcp, on_alloc, on_read) == 0;
    else
        uv_read_stop((uv_stream_t *)&k->tcp), k->reading = 0;
}

/* Puts a connection whose response ended cleanly back in its host's pool. */
static void conn_pool(h1_conn_t *k)
{
    tg_h1_t *h = k->h;
    conn_detach(k);
    k->reused = 1;
    k->idle_since = uv_now(h->loop);
    tg_link_del(&k->lru);
    tg_link_insert_after(&k->host->idle, &k->hlink);
    tg_link_insert_after(&h->idle, &k->lru);
    h->nidle++;
    conn_read(k, 1); /* to see the server close it */
    if (h->nidle > MAX_IDLE) conn_close(tg_container_of(h->idle.prev, h1_conn_t, lru));
}

static h1_conn_t *conn_new(h1_host_t *host, tg_h1_t *h)
{
    h1_conn_t *k = calloc(1, sizeof(*k));
    if (!k) return NULL;
    k->h = h;
    k->host = host;
    uv_tcp_init(h->loop, &k->tcp);
    uv_timer_init(h->loop, &k->timer);
    k->tcp.data = k->timer.data = k;
    k->handles = 2;
    tg_link_init(&k->hlink);
    tg_link_init(&k->lru);
    tg_link_push(&h->conns, &k->lru);
    h->objects++;
    return k;
}

/* ---- the call fails or ends -------------------------------------------------- */

/* Fails c, closing its connection (if any). */
static void call_fail(h1_call_t *c, int err)
{
    if (c->conn) conn_close(c->conn);
    call_finish(c, err);
}

/* A reused connection broke before any response byte: the server closed it
 * as we sent. Once per call, as libcurl does, the request goes again on a
 * fresh connection. Returns 1 if it did. */
static int call_retry(h1_call_t *c)
{
    h1_conn_t *k = c->conn;
    if (!k || !k->reused || c->got_byte || c->retried || c->h->destroy_pending) return 0;
    c->retried = 1;
    conn_close(k);
    return conn_open(c) == 0;
}

/* The whole response is in: the connection goes back to the pool (or is
 * closed), then the call ends unless paused bytes still wait for resume. */
static void call_complete(h1_call_t *c, int reusable)
{
    h1_conn_t *k = c->conn;
    c->complete = 1;
    if (reusable && !k->writing && llhttp_should_keep_alive(&k->parser))
        conn_pool(k);
    else
        conn_close(k);
    if (!c->held.len) call_finish(c, 0);
}

/* ---- parsing the response ---------------------------------------------------- */

static int fail_cb(h1_call_t *c, int err)
{
    c->err = err;
    return -1;
}

static int on_message_begin(llhttp_t *p)
{
    h1_call_t *c = ((h1_conn_t *)p->data)->call;
    tg_buf_reset(&c->head);
    /* Under 1 KiB: glibc serves it from its per-thread cache (see upstream.c). */
    (void)tg_buf_reserve(&c->head, 960);
    c->nhead = 0;
    return 0;
}

static int head_add(llhttp_t *p, const char *at, size_t len)
{
    h1_call_t *c = ((h1_conn_t *)p->data)->call;
    /* Over MAX_HEADER_BYTES the call fails, as on the curl path. */
    return tg_buf_append(&c->head, at, len) ? fail_cb(c, TG_EUPSTREAM) : 0;
}

static int on_header_field_complete(llhttp_t *p)
{
    return head_add(p, "", 1);
}

static int on_header_value_complete(llhttp_t *p)
{
    ((h1_conn_t *)p->data)->call->nhead++;
    return head_add(p, "", 1);
}

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Turns c->head's pairs into tg_header_t (values trimmed) for on_headers. */
static int deliver_headers(h1_call_t *c)
{
    tg_header_t stack[STACK_HEADERS], *hv = stack;
    stack[0] = (tg_header_t){0};
    if (c->nhead > STACK_HEADERS) {
        hv = calloc(c->nhead, sizeof(*hv));
        if (!hv) return TG_ENOMEM;
    }
    char *b = c->head.data, *end = b + c->head.len;
    size_t n = 0;
    while (b && b < end && n < c->nhead) {
        char *name = b;
        size_t nl = strlen(name);
        char *v = name + nl + 1;
        if (v >= end) break;
        size_t vl = strlen(v);
        b = v + vl + 1;
        while (vl && is_ows(*v))
            v++, vl--;
        while (vl && is_ows(v[vl - 1]))
            v[--vl] = '\0';
        hv[n++] = (tg_header_t){name, nl, v, vl};
    }
    c->cbs.on_headers((tg_upcall_t *)c, c->status, hv, n, c->ud);
    if (hv != stack) free(hv);
    return 0;
}

static int on_headers_complete(llhttp_t *p)
{
    h1_call_t *c = ((h1_conn_t *)p->data)->call;
    c->status = p->status_code;
    if (c->status < 200 && c->status != 101) { /* interim: the final head follows */
        c->interim = 1;
        return 0;
    }
    c->headers_done = 1;
    int rc = deliver_headers(c);
    tg_buf_free(&c->head);
    if (rc) return fail_cb(c, TG_EUPSTREAM);
    if (c->canceled) return -1;
    return c->no_body ? 1 : 0; /* 1: no body follows */
}

/* Delivers body bytes, or keeps them while paused (reading stops then, so
 * what is kept is at most the rest of one read). */
static int on_body(llhttp_t *p, const char *at, size_t len)
{
    h1_conn_t *k = p->data;
    h1_call_t *c = k->call;
    if (c->paused) {
        conn_read(k, 0);
        return tg_buf_append(&c->held, at, len) ? fail_cb(c, TG_EUPSTREAM) : 0;
    }
    int r = c->cbs.on_data((tg_upcall_t *)c, at, len, c->ud);
    if (c->canceled) return -1;
    /* Lazy, as on the curl path: reading goes on until more body arrives, so
     * a response whose last byte was just delivered still ends. */
    if (r) c->paused = 1;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    h1_call_t *c = ((h1_conn_t *)p->data)->call;
    if (c->interim) {
        c->interim = 0;
        return 0;
    }
    return HPE_PAUSED; /* the call ends once llhttp has returned */
}

static const llhttp_settings_t parser_settings = {
    .on_message_begin = on_message_begin,
    .on_header_field = head_add,
    .on_header_value = head_add,
    .on_header_field_complete = on_header_field_complete,
    .on_header_value_complete = on_header_value_complete,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

static void conn_feed(h1_conn_t *k, const char *p, size_t n)
{
    h1_call_t *c = k->call;
    if (!c->got_byte) {
        c->got_byte = 1;
        c->ttfb_ns = tg_now_ns() - c->start_ns;
        conn_arm(k); /* total only from here */
    }
    llhttp_errno_t e = llhttp_execute(&k->parser, p, n);
    if (c->canceled) return; /* canceled from a callback: already closed */
    if (e == HPE_PAUSED) {
        /* Bytes after the response's end are no reply to anything. */
        size_t used = (size_t)(llhttp_get_error_pos(&k->parser) - p);
        call_complete(c, used == n);
    } else if (e != HPE_OK) {
        tg_debug("upstream: %s: %s", llhttp_errno_name(e), llhttp_get_error_reason(&k->parser));
        call_fail(c, c->err ? c->err : TG_EUPSTREAM);
    }
}

/* The connection ended (EOF or error) while k->call was waiting on it. */
static void conn_end(h1_conn_t *k, ssize_t status)
{
    h1_call_t *c = k->call;
    if (call_retry(c)) return;
    if (status == UV_EOF && c->got_byte) {
        /* A body delimited by the close ends here; anything else is cut short. */
        if (llhttp_finish(&k->parser) == HPE_PAUSED) {
            call_complete(c, 0);
            return;
        }
    }
    call_fail(c, TG_EUPSTREAM);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    h1_conn_t *k = s->data;
    tg_h1_t *h = k->h;
    if (n == 0 || k->closing) return;
    enter(h);
    if (!k->call) /* idle: a close, or bytes nobody asked for */
        conn_close(k);
    else if (n > 0)
        conn_feed(k, buf->base, (size_t)n);
    else
        conn_end(k, n);
    leave(h);
}

/* ---- sending ------------------------------------------------------------------ */

static void on_write(uv_write_t *w, int status)
{
    h1_conn_t *k = w->data;
    k->writing = 0;
    if (k->closing || status == 0) return;
    h1_call_t *c = k->call;
    if (!c || c->got_byte) return; /* the response side decides */
    enter(k->h);
    if (!call_retry(c)) call_fail(c, TG_EUPSTREAM);
    leave(k->h);
}

/* Head and body in one write of two buffers; the body is not copied. */
static void conn_send(h1_conn_t *k)
{
    h1_call_t *c = k->call;
    uv_buf_t b[2] = {uv_buf_init(c->req, (unsigned)c->req_len),
                     uv_buf_init((char *)c->body, (unsigned)c->body_len)};
    llhttp_init(&k->parser, HTTP_RESPONSE, &parser_settings);
    k->parser.data = k;
    if (c->fb_ms) c->fb_due = uv_now(k->h->loop) + c->fb_ms;
    conn_arm(k);
    k->write.data = k;
    /* The socket first: a request that fits its buffer (nearly all) needs no
     * write request, and the watcher's events stay as they are (a uv_write
     * costs an epoll_ctl each time). Only what it did not take is queued. */
    unsigned nb = c->body_len ? 2 : 1;
    int rc = uv_try_write((uv_stream_t *)&k->tcp, b, nb);
    if (rc >= 0) {
        size_t took = (size_t)rc;
        for (unsigned i = 0; i < nb && took; i++) {
            size_t t = took < b[i].len ? took : b[i].len;
            b[i].base += t, b[i].len -= t, took -= t;
        }
        if (b[nb - 1].len == 0) {
            conn_read(k, 1);
            return;
        }
        if (b[0].len == 0) b[0] = b[1], nb = 1;
    }
    /* The rest, or all of it after EAGAIN or an error (which on_write then
     * hears, and retries a pooled connection the server had closed). */
    k->writing = 1;
    rc = uv_write(&k->write, (uv_stream_t *)&k->tcp, b, nb, on_write);
    if (rc) {
        k->writing = 0;
        k->pending_err = TG_EUPSTREAM;
        uv_timer_start(&k->timer, on_conn_timer, 0, 0);
        return;
    }
    conn_read(k, 1);
}

/* After a failed connect: when the call has another address left, closes the
 * socket (the next address may be of another family) to try it on a fresh
 * one, and returns 1. */
static int conn_try_next(h1_conn_t *k)
{
    if (k->next_addr >= k->naddrs || !k->call) return 0;
    k->reconnect = 1;
    uv_close((uv_handle_t *)&k->tcp, on_tcp_closed);
    return 1;
}

static void on_connect(uv_connect_t *r, int status)
{
    h1_conn_t *k = r->data;
    if (k->closing || status == UV_ECANCELED) return;
    if (status < 0) {
        if (conn_try_next(k)) return;
        host_forget(k->host);
        tg_debug("upstream: connect %s: %s", k->host->name, uv_strerror(status));
        enter(k->h);
        if (k->call) call_fail(k->call, TG_ECONNECT);
        leave(k->h);
        return;
    }
    k->connected = 1;
    free(k->addrs);
    k->addrs = NULL;
    k->naddrs = k->next_addr = 0;
    uv_tcp_nodelay(&k->tcp, 1);
    uv_tcp_keepalive(&k->tcp, 1, 60);
    if (k->call)
        conn_send(k);
    else
        conn_close(k);
}

static void conn_connect_to(h1_conn_t *k, const struct sockaddr *a)
{
    k->req.connect.data = k;
    int rc = uv_tcp_connect(&k->req.connect, &k->tcp, a, on_connect);
    /* A refused connect is reported to on_connect; other errors come back
     * here at once (an IPv6 address where the host has no IPv6: EAFNOSUPPORT,
     * ENETUNREACH): the next address is tried all the same. */
    if (rc && conn_try_next(k)) return;
    if (rc) { /* reported from the timer: never a callback from inside start */
        host_forget(k->host);
        k->pending_err = TG_ECONNECT;
        uv_timer_start(&k->timer, on_conn_timer, 0, 0);
    }
}

static void conn_connect_next(h1_conn_t *k)
{
    conn_connect_to(k, (const struct sockaddr *)&k->addrs[k->next_addr++]);
}

/* A copy of n addresses (NULL when out of memory). */
static struct sockaddr_storage *addrs_dup(const struct sockaddr_storage *a, int n)
{
    struct sockaddr_storage *d = malloc((size_t)n * sizeof(*d));
    if (d) memcpy(d, a, (size_t)n * sizeof(*d));
    return d;
}

/* Gives k its own copy of the n addresses to try and connects to the first;
 * 0 when there are none (or no memory for them). */
static int conn_connect_addrs(h1_conn_t *k, const struct sockaddr_storage *a, int n)
{
    if (n <= 0 || !(k->addrs = addrs_dup(a, n))) return 0;
    k->naddrs = n;
    conn_connect_next(k);
    return 1;
}

/* The host's cached addresses are no good (none could be reached): the next
 * connection looks the name up again. */
static void host_forget(h1_host_t *x)
{
    free(x->addrs);
    x->addrs = NULL;
    x->naddrs = 0;
}

static void on_resolved(uv_getaddrinfo_t *r, int status, struct addrinfo *res)
{
    h1_conn_t *k = r->data;
    k->resolving = 0;
    int n = 0;
    struct sockaddr_storage a[MAX_ADDRS];
    for (const struct addrinfo *i = status < 0 ? NULL : res; i && n < MAX_ADDRS; i = i->ai_next)
        if ((i->ai_family == AF_INET || i->ai_family == AF_INET6) &&
            i->ai_addrlen <= sizeof(a[0])) {
            memset(&a[n], 0, sizeof(a[n]));
            memcpy(&a[n++], i->ai_addr, i->ai_addrlen);
        }
    if (res) uv_freeaddrinfo(res);
    if (k->closing) {
        conn_maybe_free(k);
        return;
    }
    h1_host_t *x = k->host;
    if (n > 0) {
        host_forget(x);
        if ((x->addrs = addrs_dup(a, n))) {
            x->naddrs = n;
            x->addrs_due = uv_now(k->h->loop) + ADDR_CACHE_MS;
        }
    }
    if (conn_connect_addrs(k, a, n)) return;
    tg_debug("upstream: resolve %s: %s", k->host->name,
             status < 0 ? uv_strerror(status) : "no usable address");
    enter(k->h);
    if (k->call) call_fail(k->call, TG_ECONNECT);
    leave(k->h);
}

static void on_conn_timer(uv_timer_t *t)
{
    h1_conn_t *k = t->data;
    h1_call_t *c = k->call;
    if (!c) return;
    enter(k->h);
    call_fail(c, k->pending_err ? k->pending_err : TG_ETIMEDOUT);
    leave(k->h);
}

/* A new connection for c: resolve if needed, connect, then send. */
static int conn_open(h1_call_t *c)
{
    h1_host_t *host = c->host;
    h1_conn_t *k = conn_new(host, c->h);
    if (!k) return TG_ENOMEM;
    c->connect_due = uv_now(c->h->loop) + (c->connect_ms ? c->connect_ms : CONNECT_DEFAULT_MS);
    conn_attach(c, k);
    if (host->numeric) {
        conn_connect_to(k, (const struct sockaddr *)&host->addr);
        return 0;
    }
    if (uv_now(c->h->loop) < host->addrs_due && conn_connect_addrs(k, host->addrs, host->naddrs))
        return 0;
    c->h->lookups++;
    char port[8];
    snprintf(port, sizeof(port), "%d", host->port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    k->req.gai.data = k;
    if (uv_getaddrinfo(c->h->loop, &k->req.gai, on_resolved, host->name, port, &hints)) {
        k->pending_err = TG_ECONNECT;
        uv_timer_start(&k->timer, on_conn_timer, 0, 0);
    } else {
        k->resolving = 1;
    }
    return 0;
}

static void conn_attach(h1_call_t *c, h1_conn_t *k)
{
    c->conn = k;
    k->call = c;
    conn_arm(k);
}

/* ---- URLs, hosts and the request head ----------------------------------------- */

typedef struct {
    const char *host; /* without brackets */
    size_t host_len;
    const char *authority; /* what Host: says: as written, less a default port */
    size_t authority_len;
    int port;
    const char *path; /* from '/' or '?'; "" means "/" */
    size_t path_len;
} h1_url_t;

/* Parses http://host[:port][/path][?query]; 1 when the native client does not
 * take the URL (another scheme, userinfo, an odd or broken authority): libcurl
 * then handles it, errors included, exactly as before. */
static int url_parse(const char *s, h1_url_t *u)
{
    if (strncasecmp(s, "http://", 7) != 0) return 1;
    const char *a = s + 7, *e = a + strcspn(a, "/?#");
    if (memchr(a, '@', (size_t)(e - a))) return 1;
    const char *hs = a, *he, *colon;
    if (*a == '[') {
        he = memchr(a, ']', (size_t)(e - a));
        if (!he) return 1;
        hs = a + 1;
        colon = he + 1 < e && he[1] == ':' ? he + 1 : NULL;
        if (!colon && he + 1 != e) return 1;
    } else {
        colon = memchr(a, ':', (size_t)(e - a));
        he = colon ? colon : e;
    }
    if (he == hs) return 1;
    int port = 80;
    if (colon && colon + 1 < e) {
        port = 0;
        for (const char *p = colon + 1; p < e; p++) {
            if (*p < '0' || *p > '9' || port > 65535) return 1;
            port = port * 10 + (*p - '0');
        }
        if (port < 1 || port > 65535) return 1;
    }
    u->host = hs;
    u->host_len = (size_t)(he - hs);
    u->port = port;
    u->authority = a;
    /* libcurl leaves the default port out of Host:, even when written. */
    u->authority_len = (size_t)((colon && port == 80 ? colon : e) - a);
    u->path = e;
    u->path_len = strcspn(e, "#");
    return 0;
}

static h1_host_t *host_get(tg_h1_t *h, const h1_url_t *u)
{
    for (h1_host_t *x = h->hosts; x; x = x->next)
        if (x->port == u->port && strlen(x->name) == u->host_len &&
            memcmp(x->name, u->host, u->host_len) == 0)
            return x;
    h1_host_t *x = calloc(1, sizeof(*x) + u->host_len + 1);
    if (!x) return NULL;
    memcpy(x->name, u->host, u->host_len);
    x->port = u->port;
    tg_link_init(&x->idle);
    struct sockaddr_in *v4 = (struct sockaddr_in *)&x->addr;
    struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&x->addr;
    if (inet_pton(AF_INET, x->name, &v4->sin_addr) == 1) {
        v4->sin_family = AF_INET;
        v4->sin_port = htons((uint16_t)u->port);
        x->numeric = 1;
    } else if (inet_pton(AF_INET6, x->name, &v6->sin6_addr) == 1) {
        v6->sin6_family = AF_INET6;
        v6->sin6_port = htons((uint16_t)u->port);
        x->numeric = 1;
    }
    x->next = h->hosts;
    h->hosts = x;
    return x;
}

static int has_name(const char *line, const char *name, size_t n)
{
    return strncasecmp(line, name, n) == 0 && line[n] == ':';
}

/* "Name:" with nothing after it asks libcurl to leave that header out; it is
 * not sent here either. */
static int header_empty(const char *line)
{
    const char *colon = strchr(line, ':');
    return colon && colon[1 + strspn(colon + 1, " \t")] == '\0';
}

static char *put(char *p, const char *s, size_t n)
{
    memcpy(p, s, n);
    return p + n;
}

#define PUTS(p, lit) put(p, lit, sizeof(lit) - 1)

/* Writes the request head into out (when non-NULL); returns its length. The
 * same code measures and writes, so the two cannot disagree. */
static size_t build_head(char *out, const tg_upcall_opts_t *o, const h1_url_t *u, const char *m,
                         int send_len)
{
    char scratch[64], *p = out ? out : NULL;
    size_t n = 0;
#define ADD(s, len)                                                                                \
    do {                                                                                           \
        size_t l_ = (len);                                                                         \
        if (p) p = put(p, (s), l_);                                                                \
        n += l_;                                                                                   \
    } while (0)
    int own_host = 1, own_accept = 1;
    for (size_t i = 0; i < o->nheaders; i++) {
        if (has_name(o->headers[i], "host", 4)) own_host = 0;
        if (has_name(o->headers[i], "accept", 6)) own_accept = 0;
    }
    ADD(m, strlen(m));
    ADD(" ", 1);
    if (u->path_len == 0 || u->path[0] == '?') ADD("/", 1);
    ADD(u->path, u->path_len);
    ADD(" HTTP/1.1\r\n", 11);
    if (own_host) {
        ADD("Host: ", 6);
        ADD(u->authority, u->authority_len);
        ADD("\r\n", 2);
    }
    for (size_t i = 0; i < o->nheaders; i++) {
        if (header_empty(o->headers[i])) continue;
        ADD(o->headers[i], strlen(o->headers[i]));
        ADD("\r\n", 2);
    }
    if (own_accept) ADD("Accept: */*\r\n", 13);
    if (send_len) {
        size_t digits = tg_u64_dec(scratch, o->body_len);
        ADD("Content-Length: ", 16);
        ADD(scratch, digits);
        ADD("\r\n", 2);
    }
    ADD("\r\n", 2);
#undef ADD
    return n;
}

/* ---- public (through upstream.c) ------------------------------------------------ */

int tg_h1_create(tg_h1_t **out, uv_loop_t *loop)
{
    tg_h1_t *h = malloc(sizeof(*h));
    if (!h) return TG_ENOMEM;
    memset(h, 0, offsetof(tg_h1_t, rbuf));
    h->loop = loop;
    tg_link_init(&h->calls);
    tg_link_init(&h->to_resume);
    tg_link_init(&h->zombies);
    tg_link_init(&h->idle);
    tg_link_init(&h->conns);
    uv_timer_init(loop, &h->kick);
    h->kick.data = h;
    h->objects = 1;
    *out = h;
    return 0;
}

static void on_kick_closed(uv_handle_t *hd)
{
    object_gone(hd->data);
}

static void do_destroy(tg_h1_t *h)
{
    h->destroy_pending = 0;
    h->destroying = 1;
    while (!tg_link_empty(&h->calls)) {
        h1_call_t *c = tg_container_of(h->calls.next, h1_call_t, all);
        tg_link_del(&c->all);
        tg_link_del(&c->aux);
        if (c->conn) conn_close(c->conn);
        call_free(c);
    }
    while (!tg_link_empty(&h->zombies)) {
        h1_call_t *c = tg_container_of(h->zombies.next, h1_call_t, aux);
        tg_link_del(&c->aux);
        call_free(c);
    }
    while (!tg_link_empty(&h->conns))
        conn_close(tg_container_of(h->conns.next, h1_conn_t, lru));
    while (!tg_link_empty(&h->idle))
        conn_close(tg_container_of(h->idle.next, h1_conn_t, lru));
    while (h->hosts) {
        h1_host_t *x = h->hosts;
        h->hosts = x->next;
        free(x->addrs);
        free(x);
    }
    uv_close((uv_handle_t *)&h->kick, on_kick_closed);
}

unsigned long tg_h1_lookups(const tg_h1_t *h)
{
    return h ? h->lookups : 0;
}

void tg_h1_destroy(tg_h1_t *h)
{
    if (!h || h->destroy_pending || h->destroying) return;
    for (tg_link_t *l = h->calls.next; l != &h->calls; l = l->next)
        tg_container_of(l, h1_call_t, all)->canceled = 1;
    h->destroy_pending = 1;
    if (h->entered == 0) do_destroy(h);
}

int tg_h1_start(tg_h1_t *h, const tg_upcall_opts_t *o, const tg_upcall_cbs_t *cbs, void *ud,
                tg_upcall_t **out)
{
    h1_url_t u;
    int rc = url_parse(o->url, &u);
    if (rc) return rc;
    if (h->destroy_pending || h->destroying) return TG_ECLOSED;
    const char *m = o->method ? o->method : o->body ? "POST" : "GET";
    /* As libcurl: a body, or a POST even without one, says its length. */
    int send_len = o->body || strcmp(m, "POST") == 0;
    size_t hlen = build_head(NULL, o, &u, m, send_len);
    h1_host_t *host = host_get(h, &u);
    if (!host) return TG_ENOMEM;
    h1_call_t *c = calloc(1, sizeof(*c) + hlen + 1);
    if (!c) return TG_ENOMEM;
    c->native = 1;
    c->h = h;
    c->host = host;
    c->cbs = *cbs;
    c->ud = ud;
    c->req = c->tail;
    c->req_len = build_head(c->req, o, &u, m, send_len);
    c->body = o->body ? o->body : "";
    c->body_len = o->body ? o->body_len : 0;
    c->no_body = strcmp(m, "HEAD") == 0;
    c->connect_ms = o->connect_timeout_ms;
    c->fb_ms = o->first_byte_timeout_ms;
    c->start_ns = tg_now_ns();
    if (o->total_timeout_ms) c->total_due = uv_now(h->loop) + o->total_timeout_ms;
    tg_buf_init(&c->head, MAX_HEADER_BYTES);
    tg_buf_init(&c->held, 0); /* bounded by one read: reading stops when paused */
    tg_link_init(&c->all);
    tg_link_init(&c->aux);
    /* Most recently used first; one idle too long is dropped, as libcurl does,
     * since a server may close it just as we send (the retry covers that). */
    h1_conn_t *k = NULL;
    while (!k && !tg_link_empty(&host->idle)) {
        k = tg_container_of(host->idle.next, h1_conn_t, hlink);
        if (uv_now(h->loop) - k->idle_since > MAX_IDLE_AGE_MS) {
            conn_close(k);
            k = NULL;
        }
    }
    if (k) {
        conn_unlist(k);
        tg_link_push(&h->conns, &k->lru);
        conn_attach(c, k);
        conn_send(k);
    } else if ((rc = conn_open(c)) != 0) {
        call_free(c);
        return rc;
    }
    tg_link_push(&h->calls, &c->all);
    *out = (tg_upcall_t *)c;
    return 0;
}

void tg_h1_pause(tg_upcall_t *uc)
{
    h1_call_t *c = (h1_call_t *)uc;
    if (!c->done && !c->canceled) c->paused = 1;
}

/* Delivers what was held, then reads on (or ends the call). */
static void on_kick(uv_timer_t *t)
{
    tg_h1_t *h = t->data;
    tg_link_t list;
    enter(h);
    tg_link_take(&list, &h->to_resume); /* a resume from below waits for the next run */
    while (!tg_link_empty(&list) && !h->destroy_pending) {
        h1_call_t *c = tg_container_of(list.next, h1_call_t, aux);
        tg_link_del(&c->aux);
        if (c->paused || c->canceled || c->done) continue;
        if (c->held.len) {
            int r = c->cbs.on_data((tg_upcall_t *)c, c->held.data, c->held.len, c->ud);
            if (c->canceled) continue;
            tg_buf_free(&c->held); /* a paused stream's memory goes with it */
            if (r) c->paused = 1;
        }
        if (c->complete)
            call_finish(c, 0);
        else if (c->conn && !c->paused)
            conn_read(c->conn, 1);
    }
    while (!tg_link_empty(&list))
        tg_link_del(list.next);
    leave(h);
}

void tg_h1_resume(tg_upcall_t *uc)
{
    h1_call_t *c = (h1_call_t *)uc;
    if (c->done || c->canceled || !c->paused) return;
    c->paused = 0;
    /* Nothing held and still reading: nothing to do. Otherwise the held
     * bytes go out from the loop, never from inside the caller's frame. */
    if ((c->held.len || (c->conn && !c->conn->reading)) && tg_link_empty(&c->aux)) {
        tg_link_push(&c->h->to_resume, &c->aux);
        uv_timer_start(&c->h->kick, on_kick, 0, 0);
    }
}

void tg_h1_cancel(tg_upcall_t *uc)
{
    h1_call_t *c = (h1_call_t *)uc;
    if (c->done || c->canceled) return;
    c->canceled = 1;
    /* Mid-response, the connection's state is unknown: it is not reused. */
    if (c->conn) conn_close(c->conn);
    call_release(c);
}

uint64_t tg_h1_ttfb_us(const tg_upcall_t *uc)
{
    const h1_call_t *c = (const h1_call_t *)uc;
    return c->got_byte ? c->ttfb_ns / 1000 : 0;
}

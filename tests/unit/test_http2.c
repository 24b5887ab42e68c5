/* test_http2.c - HTTP/2 (h2c with prior knowledge, and h2 over TLS by ALPN)
 * end to end over loopback.
 *
 * Each test starts a real tg_server_t on 127.0.0.1, port 0, with a small
 * handler on the worker threads (the same kind test_http.c uses), and drives
 * it with nghttp2 client sessions over blocking sockets: the test thread
 * sends what the session wants to send, polls with a short timeout and feeds
 * what arrives, until a condition holds or a deadline passes (a hang fails
 * instead of blocking). Handler side effects are counted with atomics. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/http.h"

/* ---- counters the handlers bump ----------------------------------------------- */

static atomic_int n_abort, n_finished, n_pause, n_drain, n_inflight, n_peak, n_rejected;
static atomic_int n_bad; /* cmocka's asserts must not run on worker threads */
#define HCHECK(cond) ((cond) ? (void)0 : (void)atomic_fetch_add(&n_bad, 1))
static atomic_size_t big_sent;

static void counters_reset(void)
{
    atomic_store(&n_abort, 0);
    atomic_store(&n_finished, 0);
    atomic_store(&n_pause, 0);
    atomic_store(&n_drain, 0);
    atomic_store(&n_inflight, 0);
    atomic_store(&n_peak, 0);
    atomic_store(&n_rejected, 0);
    atomic_store(&big_sent, 0);
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000};
    nanosleep(&ts, NULL);
}

static int wait_for(atomic_int *v, int want, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (atomic_load(v) < want && now_ms() < end)
        sleep_ms(5);
    return atomic_load(v);
}

/* ---- the test application ------------------------------------------------------ */

typedef struct {
    uv_timer_t timer;
    tg_req_t *req;
    size_t sent, total;
} job_t;

static void job_free(uv_handle_t *h)
{
    free(h->data);
}

static job_t *job_new(tg_req_t *req)
{
    job_t *j = calloc(1, sizeof(*j));
    if (!j) abort();
    j->req = req;
    uv_timer_init(req->loop, &j->timer);
    j->timer.data = j;
    req->data = j;
    return j;
}

static void job_end(job_t *j)
{
    uv_timer_stop(&j->timer);
    uv_close((uv_handle_t *)&j->timer, job_free);
}

static long query_num(const tg_req_t *req, const char *key)
{
    const char *p = strstr(req->query, key);
    return p ? atol(p + strlen(key)) : 0;
}

static void inflight_add(int d)
{
    int v = atomic_fetch_add(&n_inflight, d) + d;
    int peak = atomic_load(&n_peak);
    while (v > peak && !atomic_compare_exchange_weak(&n_peak, &peak, v))
        ;
}

static void delay_fire(uv_timer_t *t)
{
    job_t *j = t->data;
    inflight_add(-1);
    tg_resp_send(j->req, 200, NULL, 0, "delayed", 7);
    atomic_fetch_add(&n_finished, 1);
    job_end(j);
}

static void delay_abort(tg_req_t *req)
{
    atomic_fetch_add(&n_abort, 1);
}

static void big_pump(job_t *j)
{
    static _Thread_local unsigned char block[16384];
    while (j->sent < j->total) {
        size_t n = j->total - j->sent < sizeof(block) ? j->total - j->sent : sizeof(block);
        for (size_t i = 0; i < n; i++)
            block[i] = (unsigned char)((j->sent + i) % 251);
        int rc = tg_resp_write(j->req, block, n);
        if (rc < 0) return; /* gone: on_abort ends it */
        j->sent += n;
        atomic_store(&big_sent, j->sent);
        if (rc == 1) {
            atomic_fetch_add(&n_pause, 1);
            return;
        }
    }
    HCHECK(tg_resp_end(j->req) == 0);
    atomic_fetch_add(&n_finished, 1);
    job_end(j);
}

static void big_drain(tg_req_t *req)
{
    atomic_fetch_add(&n_drain, 1);
    big_pump(req->data);
}

static void job_abort(tg_req_t *req)
{
    job_t *j = req->data;
    atomic_fetch_add(&n_abort, 1);
    /* Writes fail from now on, and the request must still be finished. */
    HCHECK(tg_resp_write(req, "x", 1) == TG_ECLOSED);
    tg_resp_end(req);
    atomic_fetch_add(&n_finished, 1);
    job_end(j);
}

static void tick_fire(uv_timer_t *t)
{
    job_t *j = t->data;
    char line[32];
    int n = snprintf(line, sizeof(line), "tick %zu\n", j->sent++);
    tg_resp_write(j->req, line, (size_t)n);
}

static void handle(tg_req_t *req, void *ctx)
{
    const char *p = req->path;
    if (strcmp(p, "/hello") == 0) {
        tg_header_t h = {"Content-Type", 12, "text/plain", 10};
        tg_resp_send(req, 200, &h, 1, "hello", 5);
    } else if (strcmp(p, "/echo") == 0) {
        const char *xt = tg_req_header(req, "x-test"), *host = tg_req_header(req, "Host");
        char len[32];
        snprintf(len, sizeof(len), "%zu", req->body_len);
        tg_header_t h[] = {
            {"X-Path", 6, req->path, req->path_len},
            {"X-Query", 7, req->query, req->query_len},
            {"X-Method", 8, req->method_str, strlen(req->method_str)},
            {"X-Test", 6, xt ? xt : "-", xt ? strlen(xt) : 1},
            {"X-Host", 6, host ? host : "-", host ? strlen(host) : 1},
            {"X-Remote", 8, req->remote_addr, strlen(req->remote_addr)},
            {"X-Body-Len", 10, len, strlen(len)},
            {"X-Evil", 6, "a\r\nInjected: 1", 14}, /* must be dropped */
            {"Connection", 10, "keep-alive", 10},  /* HTTP/2 forbids it: dropped */
        };
        HCHECK(req->body[req->body_len] == '\0');
        HCHECK(req->method == (strcmp(req->method_str, "POST") == 0 ? TG_HTTP_POST : TG_HTTP_GET));
        tg_resp_send(req, 200, h, sizeof(h) / sizeof(h[0]), req->body, req->body_len);
    } else if (strcmp(p, "/stream") == 0) {
        long n = query_num(req, "n=");
        tg_header_t h = {"Content-Type", 12, "text/event-stream", 17};
        tg_resp_start(req, 200, &h, 1);
        for (long i = 0; i < n; i++) {
            char line[32];
            int len = snprintf(line, sizeof(line), "chunk %ld\n", i);
            tg_resp_write(req, line, (size_t)len);
        }
        HCHECK(tg_resp_end(req) == 0);
    } else if (strcmp(p, "/delay") == 0) {
        job_t *j = job_new(req);
        req->on_abort = delay_abort;
        inflight_add(1);
        uv_timer_start(&j->timer, delay_fire, (uint64_t)query_num(req, "ms="), 0);
    } else if (strcmp(p, "/big") == 0) {
        job_t *j = job_new(req);
        j->total = (size_t)query_num(req, "n=");
        req->on_drain = big_drain;
        req->on_abort = job_abort;
        tg_resp_start(req, 200, NULL, 0);
        big_pump(j);
    } else if (strcmp(p, "/tick") == 0) {
        job_t *j = job_new(req);
        req->on_abort = job_abort;
        tg_resp_start(req, 200, NULL, 0);
        tick_fire(&j->timer);
        uv_timer_start(&j->timer, tick_fire, 20, 20);
    } else if (strcmp(p, "/error") == 0) {
        tg_resp_error(req, 429, "rate_limited", "slow down");
    } else {
        tg_resp_error(req, 404, "not_found", "no such path");
    }
}

static void on_rejected(tg_worker_t *w, void *wdata, int status, void *ctx)
{
    atomic_fetch_add(&n_rejected, 1);
}

/* ---- server per test ----------------------------------------------------------- */

static tg_server_t *srv;
static int port, tls_port;
static char cert_path[64], key_path[64];

static tg_http_config_t test_config(int workers)
{
    tg_http_config_t cfg;
    tg_http_config_defaults(&cfg);
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.workers = workers;
    cfg.max_body_bytes = 200000;
    cfg.header_timeout_ms = 2000;
    cfg.body_timeout_ms = 2000;
    cfg.idle_timeout_ms = 5000;
    cfg.send_timeout_ms = 5000;
    cfg.shutdown_timeout_ms = 3000;
    return cfg;
}

static void start_with(const tg_http_config_t *cfg)
{
    counters_reset();
    tg_http_app_t app = {handle, NULL, NULL, NULL, NULL, on_rejected};
    assert_int_equal(tg_server_create(&srv, cfg, &app), 0);
    assert_int_equal(tg_server_start(srv), 0);
    port = tg_server_port(srv);
    tls_port = tg_server_tls_port(srv);
    assert_true(port > 0);
}

static void start(int workers)
{
    tg_http_config_t cfg = test_config(workers);
    start_with(&cfg);
}

static int teardown(void **state)
{
    if (srv) {
        tg_server_stop(srv);
        tg_server_wait(srv);
        tg_server_destroy(srv);
        srv = NULL;
    }
    int bad = atomic_exchange(&n_bad, 0);
    if (bad) fprintf(stderr, "handler-side checks failed: %d\n", bad);
    return bad ? -1 : 0;
}

/* ---- an HTTP/2 client on a blocking socket ---------------------------------------- */

typedef struct {
    int32_t id;
    int status;
    char *body;
    size_t len, cap;
    char hdrs[8192]; /* "name: value\n" */
    size_t hlen;
    int closed;
    uint32_t error;
    const char *req_body; /* request body source */
    size_t req_len, req_off;
    int req_hold; /* send headers, then no body for now */
} cst_t;

#define MAXST 4096

typedef struct {
    int fd;
    SSL *ssl;
    SSL_CTX *sctx;
    nghttp2_session *ss;
    cst_t *st;
    int nst;
    int goaway;
    uint32_t goaway_err;
    int eof;
    size_t slow; /* send this many first bytes one at a time */
} h2c_t;

static int c_on_header(nghttp2_session *ss, const nghttp2_frame *frame, const uint8_t *name,
                       size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags,
                       void *ud)
{
    if (frame->hd.type != NGHTTP2_HEADERS) return 0;
    cst_t *s = nghttp2_session_get_stream_user_data(ss, frame->hd.stream_id);
    if (!s) return 0;
    if (namelen == 7 && memcmp(name, ":status", 7) == 0) {
        int st = atoi((const char *)value);
        if (st >= 200) s->status = st;
        return 0;
    }
    int n = snprintf(s->hdrs + s->hlen, sizeof(s->hdrs) - s->hlen, "%.*s: %.*s\n", (int)namelen,
                     name, (int)valuelen, value);
    if (n > 0 && s->hlen + (size_t)n < sizeof(s->hdrs)) s->hlen += (size_t)n;
    return 0;
}

static int c_on_data(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data,
                     size_t len, void *ud)
{
    cst_t *s = nghttp2_session_get_stream_user_data(ss, id);
    if (!s) return 0;
    if (s->len + len + 1 > s->cap) {
        s->cap = (s->len + len + 1) * 2;
        s->body = realloc(s->body, s->cap);
        if (!s->body) abort();
    }
    memcpy(s->body + s->len, data, len);
    s->len += len;
    s->body[s->len] = '\0';
    return 0;
}

static int c_on_close(nghttp2_session *ss, int32_t id, uint32_t err, void *ud)
{
    cst_t *s = nghttp2_session_get_stream_user_data(ss, id);
    if (s) {
        s->closed = 1;
        s->error = err;
    }
    return 0;
}

static int c_on_frame(nghttp2_session *ss, const nghttp2_frame *frame, void *ud)
{
    h2c_t *c = ud;
    if (frame->hd.type == NGHTTP2_GOAWAY) {
        c->goaway = 1;
        c->goaway_err = frame->goaway.error_code;
    }
    return 0;
}

static ssize_t c_read_body(nghttp2_session *ss, int32_t id, uint8_t *buf, size_t length,
                           uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    cst_t *s = src->ptr;
    if (s->req_hold) return NGHTTP2_ERR_DEFERRED;
    size_t n = s->req_len - s->req_off < length ? s->req_len - s->req_off : length;
    memcpy(buf, s->req_body + s->req_off, n);
    s->req_off += n;
    if (s->req_off == s->req_len) *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

static int io_send(h2c_t *c, const void *p, size_t n)
{
    const char *q = p;
    while (n) {
        ssize_t k = c->ssl ? SSL_write(c->ssl, q, (int)n) : send(c->fd, q, n, MSG_NOSIGNAL);
        if (k <= 0) {
            if (!c->ssl && k < 0 && errno == EINTR) continue;
            return -1;
        }
        q += k;
        n -= (size_t)k;
    }
    return 0;
}

/* >0 bytes, 0 end of stream, -1 error, -2 nothing within timeout_ms. */
static ssize_t io_recv(h2c_t *c, void *p, size_t n, int timeout_ms)
{
    if (!(c->ssl && SSL_pending(c->ssl))) {
        struct pollfd pfd = {c->fd, POLLIN, 0};
        int r = poll(&pfd, 1, timeout_ms);
        if (r == 0) return -2;
        if (r < 0) return -1;
    }
    if (c->ssl) {
        int k = SSL_read(c->ssl, p, (int)n);
        if (k > 0) return k;
        int e = SSL_get_error(c->ssl, k);
        ERR_clear_error();
        return e == SSL_ERROR_ZERO_RETURN ? 0 : e == SSL_ERROR_WANT_READ ? -2 : -1;
    }
    ssize_t k = recv(c->fd, p, n, 0);
    return k < 0 ? -1 : k;
}

static int tcp_connect(int p)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return fd;
}

/* TLS client on fd offering alpn ("" for none); returns the SSL or NULL. */
static SSL *tls_connect(h2c_t *c, int fd, const char *alpn, size_t alpn_len)
{
    c->sctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(c->sctx);
    SSL_CTX_set_verify(c->sctx, SSL_VERIFY_NONE, NULL); /* self-signed */
    if (alpn_len) SSL_CTX_set_alpn_protos(c->sctx, (const unsigned char *)alpn, (unsigned)alpn_len);
    SSL *ssl = SSL_new(c->sctx);
    SSL_set_fd(ssl, fd);
    assert_int_equal(SSL_connect(ssl), 1);
    return ssl;
}

static void h2c_flush(h2c_t *c)
{
    const uint8_t *p;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(c->ss, &p)) > 0) {
        size_t off = 0;
        for (; c->slow && off < (size_t)n; off++, c->slow--) {
            if (io_send(c, p + off, 1)) return;
            sleep_ms(5);
        }
        if (off < (size_t)n && io_send(c, p + off, (size_t)n - off)) return;
    }
}

static void h2c_open_fd(h2c_t *c, int fd, SSL *ssl, size_t slow)
{
    memset(c, 0, sizeof(*c));
    c->fd = fd;
    c->ssl = ssl;
    c->slow = slow;
    c->st = calloc(MAXST, sizeof(cst_t));
    assert_non_null(c->st);
    nghttp2_session_callbacks *cb;
    assert_int_equal(nghttp2_session_callbacks_new(&cb), 0);
    nghttp2_session_callbacks_set_on_header_callback(cb, c_on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, c_on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, c_on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, c_on_frame);
    assert_int_equal(nghttp2_session_client_new(&c->ss, cb, c), 0);
    nghttp2_session_callbacks_del(cb);
    assert_int_equal(nghttp2_submit_settings(c->ss, NGHTTP2_FLAG_NONE, NULL, 0), 0);
    h2c_flush(c);
}

static void h2c_open(h2c_t *c)
{
    h2c_open_fd(c, tcp_connect(port), NULL, 0);
}

static void h2c_close(h2c_t *c)
{
    nghttp2_session_del(c->ss);
    for (int i = 0; i < c->nst; i++)
        free(c->st[i].body);
    free(c->st);
    if (c->ssl) SSL_free(c->ssl);
    if (c->sctx) SSL_CTX_free(c->sctx);
    close(c->fd);
}

/* One round: send what is due, wait up to timeout_ms for input, feed it. */
static void h2c_step(h2c_t *c, int timeout_ms)
{
    static char buf[65536];
    h2c_flush(c);
    if (c->eof) return;
    ssize_t n = io_recv(c, buf, sizeof(buf), timeout_ms);
    if (n == -2) return;
    if (n <= 0) {
        c->eof = 1;
        return;
    }
    if (nghttp2_session_mem_recv(c->ss, (uint8_t *)buf, (size_t)n) < 0) c->eof = 1;
    h2c_flush(c);
}

#define H2C_WAIT(c, cond, ms)                                                                      \
    do {                                                                                           \
        uint64_t until_ = now_ms() + (ms);                                                         \
        while (!(cond) && !(c)->eof && now_ms() < until_)                                          \
            h2c_step((c), 20);                                                                     \
    } while (0)

/* Submits a request; extra is name, value pairs ending with NULL. */
static cst_t *h2c_req(h2c_t *c, const char *method, const char *path, const char *body,
                      size_t body_len, int hold, ...)
{
    assert_true(c->nst < MAXST);
    cst_t *s = &c->st[c->nst++];
    nghttp2_nv nv[16];
    size_t n = 0;
#define NVS(a, b)                                                                                  \
    nv[n++] =                                                                                      \
        (nghttp2_nv){(uint8_t *)(a), (uint8_t *)(b), strlen(a), strlen(b), NGHTTP2_NV_FLAG_NONE}
    NVS(":method", method);
    NVS(":scheme", c->ssl ? "https" : "http");
    NVS(":authority", "example.test");
    NVS(":path", path);
    va_list ap;
    va_start(ap, hold);
    const char *k;
    while ((k = va_arg(ap, const char *)) && n < 16) {
        const char *v = va_arg(ap, const char *);
        NVS(k, v);
    }
    va_end(ap);
#undef NVS
    s->req_body = body;
    s->req_len = body_len;
    s->req_hold = hold;
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = c_read_body};
    s->id = nghttp2_submit_request(c->ss, NULL, nv, n, body || hold ? &prd : NULL, s);
    assert_true(s->id > 0);
    return s;
}

static cst_t *h2c_get(h2c_t *c, const char *path)
{
    return h2c_req(c, "GET", path, NULL, 0, 0, NULL);
}

static const char *hdr(const cst_t *s, const char *name)
{
    static char val[1024];
    size_t nl = strlen(name);
    for (const char *p = s->hdrs; *p;) {
        const char *eol = strchr(p, '\n');
        if (!eol) break;
        if (strncmp(p, name, nl) == 0 && p[nl] == ':') {
            size_t vl = (size_t)(eol - p) - nl - 2;
            if (vl >= sizeof(val)) vl = sizeof(val) - 1;
            memcpy(val, p + nl + 2, vl);
            val[vl] = '\0';
            return val;
        }
        p = eol + 1;
    }
    return NULL;
}

/* The JSON error shape; the server's own refusals also carry a request id. */
static void check_error_body(const cst_t *s, int status, const char *code)
{
    assert_int_equal(s->status, status);
    char want[64];
    snprintf(want, sizeof(want), "\"code\":\"%s\"", code);
    assert_non_null(s->body);
    assert_non_null(strstr(s->body, want));
    assert_string_equal(hdr(s, "content-type"), "application/json");
    if (status != 429) assert_non_null(hdr(s, "x-request-id"));
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_get_head_and_headers(void **state)
{
    start(2);
    h2c_t c;
    h2c_open(&c);
    cst_t *a = h2c_get(&c, "/hello");
    cst_t *b = h2c_req(&c, "GET", "/echo?a=1&b=2", NULL, 0, 0, "x-test", "v 1", NULL);
    cst_t *d = h2c_req(&c, "HEAD", "/hello", NULL, 0, 0, NULL);
    cst_t *e = h2c_get(&c, "/error");
    H2C_WAIT(&c, a->closed && b->closed && d->closed && e->closed, 3000);
    assert_int_equal(a->status, 200);
    assert_string_equal(a->body, "hello");
    assert_string_equal(hdr(a, "content-type"), "text/plain");
    assert_string_equal(hdr(a, "content-length"), "5");
    assert_non_null(strstr(hdr(a, "date"), " GMT"));
    assert_int_equal(b->status, 200);
    assert_string_equal(hdr(b, "x-path"), "/echo");
    assert_string_equal(hdr(b, "x-query"), "a=1&b=2");
    assert_string_equal(hdr(b, "x-method"), "GET");
    assert_string_equal(hdr(b, "x-test"), "v 1");
    assert_string_equal(hdr(b, "x-host"), "example.test"); /* :authority as Host */
    assert_string_equal(hdr(b, "x-remote"), "127.0.0.1");
    assert_string_equal(hdr(b, "x-body-len"), "0");
    assert_null(hdr(b, "x-evil"));
    assert_null(hdr(b, "connection"));
    assert_int_equal(b->len, 0);
    assert_int_equal(d->status, 200); /* HEAD: the length, no body */
    assert_string_equal(hdr(d, "content-length"), "5");
    assert_int_equal(d->len, 0);
    check_error_body(e, 429, "rate_limited");
    assert_int_equal(a->error, NGHTTP2_NO_ERROR);
    h2c_close(&c);
}

static void test_post_body_over_windows(void **state)
{
    start(1);
    h2c_t c;
    h2c_open(&c);
    /* Larger than both the client's default and the server's stream window. */
    size_t n = 190000;
    char *body = malloc(n);
    assert_non_null(body);
    for (size_t i = 0; i < n; i++)
        body[i] = (char)('a' + i % 26);
    cst_t *s = h2c_req(&c, "POST", "/echo", body, n, 0, "content-type", "text/plain", NULL);
    cst_t *t = h2c_req(&c, "POST", "/echo?x", "abc", 3, 0, NULL); /* no content-length */
    H2C_WAIT(&c, s->closed && t->closed, 5000);
    assert_int_equal(s->status, 200);
    assert_string_equal(hdr(s, "x-method"), "POST");
    assert_string_equal(hdr(s, "x-body-len"), "190000");
    assert_int_equal(s->len, n);
    assert_memory_equal(s->body, body, n);
    assert_int_equal(t->status, 200);
    assert_string_equal(t->body, "abc");
    free(body);
    h2c_close(&c);
}

static void test_100_concurrent_streams(void **state)
{
    start(1);
    h2c_t c;
    h2c_open(&c);
    H2C_WAIT(&c,
             nghttp2_session_get_remote_settings(c.ss, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS) ==
                 128,
             2000);
    assert_int_equal(
        nghttp2_session_get_remote_settings(c.ss, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 128);
    cst_t *s[100];
    uint64_t t0 = now_ms();
    for (int i = 0; i < 100; i++)
        s[i] = h2c_get(&c, "/delay?ms=200");
    int done = 0;
    uint64_t until = now_ms() + 5000;
    while (done < 100 && !c.eof && now_ms() < until) {
        h2c_step(&c, 20);
        done = 0;
        for (int i = 0; i < 100; i++)
            done += s[i]->closed;
    }
    assert_int_equal(done, 100);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(s[i]->status, 200);
        assert_string_equal(s[i]->body, "delayed");
    }
    /* Concurrent on one connection, not one after another. */
    assert_true(now_ms() - t0 < 2000);
    assert_int_equal(atomic_load(&n_peak), 100);
    h2c_close(&c);
}

static void test_stream_larger_than_window_backpressure(void **state)
{
    start(1);
    h2c_t c;
    h2c_open(&c);
    size_t n = 3000000;
    char path[64];
    snprintf(path, sizeof(path), "/big?n=%zu", n);
    cst_t *s = h2c_get(&c, path);
    h2c_flush(&c);
    /* Not reading: the client's 64 KiB window stops the stream, its queue
     * fills to the high water mark and the handler is told to pause. */
    sleep_ms(300);
    assert_true(atomic_load(&n_pause) >= 1);
    size_t stalled = atomic_load(&big_sent);
    assert_true(stalled < 1000000);
    H2C_WAIT(&c, s->closed, 10000);
    assert_int_equal(s->status, 200);
    assert_int_equal(s->len, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s->body[i] != (unsigned char)(i % 251)) fail_msg("byte %zu differs", i);
    assert_true(atomic_load(&n_drain) >= 1);
    assert_int_equal(wait_for(&n_finished, 1, 2000), 1);
    assert_int_equal(atomic_load(&n_abort), 0);
    /* Many small writes, framed as DATA. */
    cst_t *t = h2c_get(&c, "/stream?n=500");
    H2C_WAIT(&c, t->closed, 3000);
    assert_int_equal(t->status, 200);
    assert_string_equal(hdr(t, "content-type"), "text/event-stream");
    assert_null(hdr(t, "content-length"));
    assert_non_null(strstr(t->body, "chunk 0\nchunk 1\n"));
    assert_non_null(strstr(t->body, "chunk 499\n"));
    h2c_close(&c);
}

static void test_client_reset_aborts(void **state)
{
    start(1);
    h2c_t c;
    h2c_open(&c);
    cst_t *s = h2c_get(&c, "/tick");
    H2C_WAIT(&c, s->len > 0, 3000);
    assert_non_null(strstr(s->body, "tick 0\n"));
    assert_int_equal(nghttp2_submit_rst_stream(c.ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL), 0);
    h2c_flush(&c);
    assert_int_equal(wait_for(&n_abort, 1, 2000), 1);
    assert_int_equal(wait_for(&n_finished, 1, 2000), 1);
    /* The connection goes on. */
    cst_t *t = h2c_get(&c, "/hello");
    H2C_WAIT(&c, t->closed, 3000);
    assert_int_equal(t->status, 200);
    assert_false(c.goaway);
    h2c_close(&c);
}

static void test_goaway_from_client(void **state)
{
    start(1);
    h2c_t c;
    h2c_open(&c);
    cst_t *s = h2c_get(&c, "/delay?ms=200");
    h2c_flush(&c);
    sleep_ms(50);
    /* As the AWS SDK does after its requests: in-flight streams still finish. */
    assert_int_equal(nghttp2_submit_goaway(c.ss, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0),
                     0);
    H2C_WAIT(&c, s->closed, 3000);
    assert_int_equal(s->status, 200);
    assert_string_equal(s->body, "delayed");
    assert_int_equal(atomic_load(&n_abort), 0);
    /* Then the server has nothing left to do and closes. */
    H2C_WAIT(&c, c.eof, 3000);
    assert_true(c.eof);
    h2c_close(&c);
}

static void test_431_headers_too_large(void **state)
{
    start(1);
    h2c_t c;
    h2c_open(&c);
    char *big = malloc(20001);
    assert_non_null(big);
    memset(big, 'x', 20000);
    big[20000] = '\0';
    cst_t *s = h2c_req(&c, "GET", "/hello", NULL, 0, 0, "x-big", big, NULL);
    H2C_WAIT(&c, s->closed, 3000);
    check_error_body(s, 431, "headers_too_large");
    assert_int_equal(wait_for(&n_rejected, 1, 1000), 1);
    /* Just that stream: the connection goes on. */
    cst_t *t = h2c_get(&c, "/hello");
    H2C_WAIT(&c, t->closed, 3000);
    assert_int_equal(t->status, 200);
    free(big);
    h2c_close(&c);
}

static void test_413_body_too_large(void **state)
{
    start(1);
    h2c_t c;
    h2c_open(&c);
    size_t n = 300000;
    char *body = calloc(1, n);
    assert_non_null(body);
    /* Said by content-length: refused at once, the rest reset (NO_ERROR). */
    cst_t *a = h2c_req(&c, "POST", "/echo", body, n, 0, "content-length", "300000", NULL);
    H2C_WAIT(&c, a->closed, 5000);
    check_error_body(a, 413, "body_too_large");
    /* Found while receiving. */
    cst_t *b = h2c_req(&c, "POST", "/echo", body, n, 0, NULL);
    H2C_WAIT(&c, b->closed, 5000);
    check_error_body(b, 413, "body_too_large");
    assert_int_equal(atomic_load(&n_rejected), 2);
    cst_t *t = h2c_get(&c, "/hello");
    H2C_WAIT(&c, t->closed, 3000);
    assert_int_equal(t->status, 200);
    free(body);
    h2c_close(&c);
}

static void test_body_timeout_and_idle(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.body_timeout_ms = 300;
    cfg.idle_timeout_ms = 400;
    start_with(&cfg);
    h2c_t c;
    h2c_open(&c);
    uint64_t t0 = now_ms();
    cst_t *s = h2c_req(&c, "POST", "/echo", NULL, 0, 1, NULL); /* headers, no body */
    H2C_WAIT(&c, s->closed, 3000);
    check_error_body(s, 408, "request_timeout");
    assert_true(now_ms() - t0 >= 250);
    /* No stream left: the idle connection is told GOAWAY and closed. */
    H2C_WAIT(&c, c.eof, 3000);
    assert_true(c.goaway);
    assert_int_equal(c.goaway_err, NGHTTP2_NO_ERROR);
    assert_true(c.eof);
    h2c_close(&c);
}

static void test_reset_flood(void **state)
{
    start(1);
    h2c_t other, c, fresh;
    h2c_open(&other);
    cst_t *o = h2c_get(&other, "/hello");
    H2C_WAIT(&other, o->closed, 3000);
    assert_int_equal(o->status, 200);

    h2c_open(&c);
    int sent = 0;
    for (; sent < 3000 && !c.eof && !c.goaway; sent++) {
        cst_t *s = h2c_get(&c, "/delay?ms=1000");
        h2c_flush(&c);
        nghttp2_submit_rst_stream(c.ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        h2c_flush(&c);
        if (sent % 50 == 49) h2c_step(&c, 0);
    }
    H2C_WAIT(&c, c.eof, 5000);
    assert_true(c.goaway);
    assert_int_equal(c.goaway_err, NGHTTP2_ENHANCE_YOUR_CALM);
    assert_true(c.eof);
    assert_true(sent < 3000);
    h2c_close(&c);

    /* Everyone else is served as before. */
    o = h2c_get(&other, "/hello");
    H2C_WAIT(&other, o->closed, 3000);
    assert_int_equal(o->status, 200);
    h2c_close(&other);
    h2c_open(&fresh);
    o = h2c_get(&fresh, "/hello");
    H2C_WAIT(&fresh, o->closed, 3000);
    assert_int_equal(o->status, 200);
    h2c_close(&fresh);
    /* A stream reset before its request reached the handler never does;
     * the ones that did were told (on_abort) and finish. */
    uint64_t until = now_ms() + 3000;
    while (atomic_load(&n_inflight) && now_ms() < until)
        sleep_ms(10);
    assert_int_equal(atomic_load(&n_inflight), 0);
}

static void test_graceful_shutdown_goaway(void **state)
{
    start(1);
    h2c_t c;
    h2c_open(&c);
    cst_t *s = h2c_get(&c, "/delay?ms=300");
    h2c_flush(&c);
    sleep_ms(50);
    uint64_t t0 = now_ms();
    tg_server_stop(srv);
    H2C_WAIT(&c, s->closed, 3000);
    assert_true(c.goaway);
    assert_int_equal(c.goaway_err, NGHTTP2_NO_ERROR);
    assert_int_equal(s->status, 200);
    assert_string_equal(s->body, "delayed");
    H2C_WAIT(&c, c.eof, 3000);
    assert_true(c.eof);
    tg_server_wait(srv);
    assert_true(now_ms() - t0 >= 200);
    assert_int_equal(atomic_load(&n_abort), 0);
    h2c_close(&c);
}

static void test_shutdown_timeout_aborts_streams(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.shutdown_timeout_ms = 200;
    start_with(&cfg);
    h2c_t c;
    h2c_open(&c);
    cst_t *s = h2c_get(&c, "/tick");
    H2C_WAIT(&c, s->len > 0, 3000);
    uint64_t t0 = now_ms();
    tg_server_stop(srv);
    tg_server_wait(srv);
    uint64_t dt = now_ms() - t0;
    assert_true(dt >= 150 && dt < 2000);
    assert_int_equal(atomic_load(&n_abort), 1);
    assert_int_equal(atomic_load(&n_finished), 1);
    h2c_close(&c);
}

/* The preface cut into single bytes is still HTTP/2; "P" then "OST ..." is
 * still HTTP/1.1. */
static void test_preface_split_and_http1_unchanged(void **state)
{
    start(1);
    h2c_t c;
    h2c_open_fd(&c, tcp_connect(port), NULL, 30);
    cst_t *s = h2c_get(&c, "/hello");
    H2C_WAIT(&c, s->closed, 3000);
    assert_int_equal(s->status, 200);
    assert_string_equal(s->body, "hello");
    h2c_close(&c);

    int fd = tcp_connect(port);
    assert_int_equal(send(fd, "P", 1, 0), 1);
    sleep_ms(50);
    const char *rest = "OST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi";
    assert_int_equal(send(fd, rest, strlen(rest), 0), (ssize_t)strlen(rest));
    char buf[4096];
    size_t len = 0;
    while (len < sizeof(buf) - 1 && !strstr(buf, "\r\n\r\nhi")) {
        ssize_t k = recv(fd, buf + len, sizeof(buf) - 1 - len, 0);
        assert_true(k > 0);
        len += (size_t)k;
        buf[len] = '\0';
    }
    assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
    assert_non_null(strstr(buf, "X-Host: x\r\n"));
    close(fd);
}

/* ---- TLS -------------------------------------------------------------------------- */

static void make_cert(void)
{
    snprintf(cert_path, sizeof(cert_path), "/tmp/tg-h2-cert-%d.pem", (int)getpid());
    snprintf(key_path, sizeof(key_path), "/tmp/tg-h2-key-%d.pem", (int)getpid());
    EVP_PKEY *pk = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    assert_non_null(pk);
    assert_non_null(x);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -60);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600);
    X509_set_pubkey(x, pk);
    X509_NAME *nm = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(nm, "CN", MBSTRING_ASC, (const unsigned char *)"127.0.0.1", -1, -1,
                               0);
    X509_set_issuer_name(x, nm);
    assert_true(X509_sign(x, pk, EVP_sha256()) > 0);
    FILE *f = fopen(cert_path, "w");
    assert_non_null(f);
    PEM_write_X509(f, x);
    fclose(f);
    f = fopen(key_path, "w");
    assert_non_null(f);
    PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(x);
    EVP_PKEY_free(pk);
}

static void start_tls(void)
{
    make_cert();
    tg_http_config_t cfg = test_config(2);
    cfg.tls_host = "127.0.0.1";
    cfg.tls_port = 0;
    cfg.cert_file = cert_path;
    cfg.key_file = key_path;
    start_with(&cfg);
    assert_true(tls_port > 0 && tls_port != port);
}

static int tls_teardown(void **state)
{
    int rc = teardown(state);
    unlink(cert_path);
    unlink(key_path);
    return rc;
}

static void test_tls_alpn_h2(void **state)
{
    start_tls();
    h2c_t c;
    int fd = tcp_connect(tls_port);
    h2c_t tmp;
    memset(&tmp, 0, sizeof(tmp));
    SSL *ssl = tls_connect(&tmp, fd, "\x02h2\x08http/1.1", 12);
    const unsigned char *p;
    unsigned n;
    SSL_get0_alpn_selected(ssl, &p, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(p, "h2", 2);
    h2c_open_fd(&c, fd, ssl, 0);
    c.sctx = tmp.sctx;
    size_t blen = 150000;
    char *body = malloc(blen);
    assert_non_null(body);
    for (size_t i = 0; i < blen; i++)
        body[i] = (char)('A' + i % 26);
    cst_t *a = h2c_get(&c, "/hello");
    cst_t *b = h2c_req(&c, "POST", "/echo", body, blen, 0, NULL);
    cst_t *d = h2c_get(&c, "/big?n=1000000");
    H2C_WAIT(&c, a->closed && b->closed && d->closed, 10000);
    assert_int_equal(a->status, 200);
    assert_string_equal(a->body, "hello");
    assert_int_equal(b->status, 200);
    assert_int_equal(b->len, blen);
    assert_memory_equal(b->body, body, blen);
    assert_int_equal(d->status, 200);
    assert_int_equal(d->len, 1000000);
    for (size_t i = 0; i < d->len; i++)
        if ((unsigned char)d->body[i] != (unsigned char)(i % 251)) fail_msg("byte %zu differs", i);
    free(body);
    h2c_close(&c);
}

/* HTTP/1.1 over TLS, by ALPN and without it. */
static void test_tls_http1(void **state)
{
    start_tls();
    for (int with_alpn = 1; with_alpn >= 0; with_alpn--) {
        h2c_t c;
        memset(&c, 0, sizeof(c));
        c.fd = tcp_connect(tls_port);
        c.ssl = tls_connect(&c, c.fd, "\x08http/1.1", with_alpn ? 9 : 0);
        const unsigned char *p;
        unsigned n;
        SSL_get0_alpn_selected(c.ssl, &p, &n);
        assert_int_equal(n, with_alpn ? 8 : 0);
        for (int i = 0; i < 2; i++) { /* keep-alive */
            const char *rq = "GET /echo?tls=1 HTTP/1.1\r\nHost: h1.test\r\n\r\n";
            assert_int_equal(io_send(&c, rq, strlen(rq)), 0);
            char buf[4096];
            size_t len = 0;
            buf[0] = '\0';
            while (!strstr(buf, "\r\n\r\n")) {
                ssize_t k = io_recv(&c, buf + len, sizeof(buf) - 1 - len, 3000);
                assert_true(k > 0);
                len += (size_t)k;
                buf[len] = '\0';
            }
            assert_non_null(strstr(buf, "HTTP/1.1 200 OK\r\n"));
            assert_non_null(strstr(buf, "X-Query: tls=1\r\n"));
            assert_non_null(strstr(buf, "X-Host: h1.test\r\n"));
            assert_non_null(strstr(buf, "Connection: keep-alive\r\n"));
        }
        SSL_free(c.ssl);
        SSL_CTX_free(c.sctx);
        close(c.fd);
    }
}

static void test_tls_bad_files(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.tls_port = 0;
    cfg.cert_file = "/nonexistent/cert.pem";
    cfg.key_file = "/nonexistent/key.pem";
    tg_http_app_t app = {handle, NULL, NULL, NULL, NULL, NULL};
    tg_server_t *s = NULL;
    assert_int_equal(tg_server_create(&s, &cfg, &app), TG_ECONFIG);
    assert_null(s);
    cfg.cert_file = NULL; /* no TLS */
    assert_int_equal(tg_server_create(&s, &cfg, &app), 0);
    assert_int_equal(tg_server_tls_port(s), -1);
    tg_server_destroy(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_get_head_and_headers, teardown),
        cmocka_unit_test_teardown(test_post_body_over_windows, teardown),
        cmocka_unit_test_teardown(test_100_concurrent_streams, teardown),
        cmocka_unit_test_teardown(test_stream_larger_than_window_backpressure, teardown),
        cmocka_unit_test_teardown(test_client_reset_aborts, teardown),
        cmocka_unit_test_teardown(test_goaway_from_client, teardown),
        cmocka_unit_test_teardown(test_431_headers_too_large, teardown),
        cmocka_unit_test_teardown(test_413_body_too_large, teardown),
        cmocka_unit_test_teardown(test_body_timeout_and_idle, teardown),
        cmocka_unit_test_teardown(test_reset_flood, teardown),
        cmocka_unit_test_teardown(test_graceful_shutdown_goaway, teardown),
        cmocka_unit_test_teardown(test_shutdown_timeout_aborts_streams, teardown),
        cmocka_unit_test_teardown(test_preface_split_and_http1_unchanged, teardown),
        cmocka_unit_test_teardown(test_tls_alpn_h2, tls_teardown),
        cmocka_unit_test_teardown(test_tls_http1, tls_teardown),
        cmocka_unit_test_teardown(test_tls_bad_files, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

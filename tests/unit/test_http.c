/* test_http.c - the HTTP/1.1 server, end to end over loopback.
 *
 * Each test starts a real tg_server_t on 127.0.0.1, port 0, with a test
 * handler running on the worker threads, and talks to it with plain blocking
 * sockets (receive timeouts, so a hang fails instead of blocking). Handler
 * side effects the tests check are counted with atomics. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http/http.h"
#include "http/internal.h"

/* ---- counters the handlers bump ------------------------------------------- */

static atomic_int n_abort, n_finished, n_pause, n_drain, n_init, n_draining, n_fini;
/* cmocka's asserts must not run on worker threads: handlers count failures. */
static atomic_int n_bad;
#define HCHECK(cond) ((cond) ? (void)0 : (void)atomic_fetch_add(&n_bad, 1))
static atomic_size_t big_sent;

static void counters_reset(void)
{
    atomic_store(&n_abort, 0);
    atomic_store(&n_finished, 0);
    atomic_store(&n_pause, 0);
    atomic_store(&n_drain, 0);
    atomic_store(&n_init, 0);
    atomic_store(&n_draining, 0);
    atomic_store(&n_fini, 0);
    atomic_store(&big_sent, 0);
}

/* ---- the test application --------------------------------------------------- */

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

static void delay_fire(uv_timer_t *t)
{
    job_t *j = t->data;
    tg_resp_send(j->req, 200, NULL, 0, "delayed", 7);
    atomic_fetch_add(&n_finished, 1);
    job_end(j);
}

static void count_abort(tg_req_t *req)
{
    atomic_fetch_add(&n_abort, 1);
}

/* /big: writes total bytes of a pattern, pausing when asked to. */
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
    tg_resp_end(j->req);
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
        const char *xt = tg_req_header(req, "x-test");
        char len[32];
        snprintf(len, sizeof(len), "%zu", req->body_len);
        tg_header_t h[] = {
            {"X-Path", 6, req->path, req->path_len},
            {"X-Query", 7, req->query, req->query_len},
            {"X-Method", 8, req->method_str, strlen(req->method_str)},
            {"X-Test", 6, xt ? xt : "-", xt ? strlen(xt) : 1},
            {"X-Remote", 8, req->remote_addr, strlen(req->remote_addr)},
            {"X-Body-Len", 10, len, strlen(len)},
            {"X-Evil", 6, "a\r\nInjected: 1", 14}, /* must be dropped */
        };
        HCHECK(req->body[req->body_len] == '\0');
        tg_resp_send(req, 200, h, 7, req->body, req->body_len);
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
        req->on_abort = count_abort;
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
    } else if (strcmp(p, "/blob") == 0) {
        size_t n = (size_t)query_num(req, "n=");
        char *b = malloc(n);
        if (!b) abort();
        memset(b, 'b', n);
        tg_resp_send(req, 200, NULL, 0, b, n); /* copied or written before return */
        free(b);
        atomic_fetch_add(&n_finished, 1);
    } else if (strcmp(p, "/error") == 0) {
        tg_resp_error(req, 429, "rate_limited", "Too \"many\"\nrequests\\");
    } else {
        tg_resp_error(req, 404, "not_found", "no such path");
    }
}

static void *w_init(tg_worker_t *w, uv_loop_t *loop, void *ctx)
{
    atomic_fetch_add(&n_init, 1);
    return ctx;
}

static void w_draining(tg_worker_t *w, void *wdata, void *ctx)
{
    HCHECK(tg_worker_draining(w));
    atomic_fetch_add(&n_draining, 1);
}

static void w_fini(tg_worker_t *w, void *wdata, void *ctx)
{
    HCHECK(wdata == ctx);
    atomic_fetch_add(&n_fini, 1);
}

/* ---- server per test ---------------------------------------------------------- */

static tg_server_t *srv;
static int port;
static int app_ctx;

static tg_http_config_t test_config(int workers)
{
    tg_http_config_t cfg;
    tg_http_config_defaults(&cfg);
    cfg.host = "127.0.0.1";
    cfg.port = 0;
    cfg.workers = workers;
    cfg.max_body_bytes = 100000;
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
    tg_http_app_t app = {handle, w_init, w_fini, w_draining, &app_ctx, NULL};
    assert_int_equal(tg_server_create(&srv, cfg, &app), 0);
    assert_int_equal(tg_server_start(srv), 0);
    port = tg_server_port(srv);
    assert_true(port > 0);
    assert_int_equal(atomic_load(&n_init), cfg->workers);
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

/* ---- a tiny blocking client ------------------------------------------------------ */

typedef struct {
    int fd;
    char *buf;
    size_t len, cap;
} cli_t;

typedef struct {
    int status;
    char head[8192];
    char *body; /* malloc'd, NUL-terminated */
    size_t body_len, body_cap;
} resp_t;

static void body_add(resp_t *r, const char *p, size_t n)
{
    if (r->body_len + n + 1 > r->body_cap) {
        while (r->body_len + n + 1 > r->body_cap)
            r->body_cap = r->body_cap ? r->body_cap * 2 : 256;
        r->body = realloc(r->body, r->body_cap);
        assert_non_null(r->body);
    }
    memcpy(r->body + r->body_len, p, n);
    r->body_len += n;
    r->body[r->body_len] = '\0';
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

static void cli_open_buf(cli_t *c, int rcvbuf)
{
    memset(c, 0, sizeof(*c));
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(c->fd >= 0);
    struct timeval tv = {3, 0};
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (rcvbuf) setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    c->cap = 1 << 16;
    c->buf = malloc(c->cap);
    assert_non_null(c->buf);
}

static void cli_open(cli_t *c)
{
    cli_open_buf(c, 0);
}

static void cli_close(cli_t *c)
{
    if (c->fd >= 0) close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
}

static void cli_send(cli_t *c, const char *s, size_t n)
{
    while (n) {
        ssize_t k = send(c->fd, s, n, MSG_NOSIGNAL);
        assert_true(k > 0);
        s += k;
        n -= (size_t)k;
    }
}

static void cli_sends(cli_t *c, const char *s)
{
    cli_send(c, s, strlen(s));
}

/* Reads more into the buffer: >0 bytes, 0 at EOF, -1 on timeout or error. */
static ssize_t cli_fill(cli_t *c)
{
    if (c->cap - c->len < 4096) {
        c->cap *= 2;
        c->buf = realloc(c->buf, c->cap);
        assert_non_null(c->buf);
    }
    ssize_t k = recv(c->fd, c->buf + c->len, c->cap - c->len - 1, 0);
    if (k > 0) c->len += (size_t)k;
    return k < 0 ? -1 : k;
}

static int cli_need(cli_t *c, size_t n)
{
    while (c->len < n)
        if (cli_fill(c) <= 0) return -1;
    return 0;
}

static void cli_take(cli_t *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

static const char *find_header(const resp_t *r, const char *name)
{
    static _Thread_local char val[1024];
    size_t n = strlen(name);
    for (const char *p = strstr(r->head, "\r\n"); p && p[2]; p = strstr(p + 2, "\r\n")) {
        if (strncasecmp(p + 2, name, n) == 0 && p[2 + n] == ':') {
            const char *v = p + 3 + n;
            while (*v == ' ')
                v++;
            const char *e = strstr(v, "\r\n");
            size_t len = (size_t)(e - v) < sizeof(val) - 1 ? (size_t)(e - v) : sizeof(val) - 1;
            memcpy(val, v, len);
            val[len] = '\0';
            return val;
        }
    }
    return NULL;
}

/* Reads one response; dechunks strictly (any framing error fails). For HEAD
 * pass no_body. Returns 0, or -1 when the connection ended or timed out. */
static int cli_resp(cli_t *c, resp_t *r, int no_body)
{
    memset(r, 0, sizeof(*r));
    char *end;
    for (;;) {
        c->buf[c->len] = '\0';
        if ((end = strstr(c->buf, "\r\n\r\n"))) break;
        if (cli_fill(c) <= 0) return -1;
    }
    size_t hl = (size_t)(end - c->buf) + 4;
    assert_true(hl < sizeof(r->head));
    memcpy(r->head, c->buf, hl);
    r->head[hl] = '\0';
    cli_take(c, hl);
    assert_int_equal(strncmp(r->head, "HTTP/1.1 ", 9), 0);
    r->status = atoi(r->head + 9);
    body_add(r, "", 0);
    if (no_body || r->status == 100 || r->status == 204 || r->status == 304) return 0;
    const char *te = find_header(r, "Transfer-Encoding");
    const char *cl = find_header(r, "Content-Length");
    if (te) {
        assert_string_equal(te, "chunked");
        assert_null(cl);
        for (;;) {
            char *eol;
            for (;;) {
                c->buf[c->len] = '\0';
                if ((eol = strstr(c->buf, "\r\n"))) break;
                if (cli_fill(c) <= 0) return -1;
            }
            char *hexend;
            unsigned long size = strtoul(c->buf, &hexend, 16);
            assert_ptr_equal(hexend, eol); /* no extensions, nothing but hex */
            cli_take(c, (size_t)(eol - c->buf) + 2);
            if (cli_need(c, size + 2)) return -1;
            assert_memory_equal(c->buf + size, "\r\n", 2);
            body_add(r, c->buf, size);
            cli_take(c, size + 2);
            if (size == 0) return 0;
        }
    }
    if (cl) {
        size_t n = (size_t)atol(cl);
        if (cli_need(c, n)) return -1;
        body_add(r, c->buf, n);
        cli_take(c, n);
        return 0;
    }
    /* Delimited by the close. */
    while (cli_fill(c) > 0) {
    }
    body_add(r, c->buf, c->len);
    c->len = 0;
    return 0;
}

/* The server closed the connection: EOF (or reset) within the timeout. */
static int cli_at_eof(cli_t *c)
{
    char b[256];
    for (;;) {
        ssize_t k = recv(c->fd, b, sizeof(b), 0);
        if (k == 0) return 1;
        if (k < 0) return errno == ECONNRESET;
    }
}

static void resp_free(resp_t *r)
{
    free(r->body);
    r->body = NULL;
}

static void assert_error_body(const resp_t *r, int status, const char *code)
{
    assert_int_equal(r->status, status);
    char want[128];
    snprintf(want, sizeof(want), "\"code\":\"%s\"", code);
    assert_non_null(strstr(r->body, want));
    assert_non_null(strstr(r->body, "{\"error\":{\"message\":"));
    assert_string_equal(find_header(r, "Content-Type"), "application/json");
    assert_string_equal(find_header(r, "Connection"), "close");
}

static int wait_for(atomic_int *v, int want, int ms)
{
    uint64_t end = now_ms() + (uint64_t)ms;
    while (atomic_load(v) < want && now_ms() < end)
        sleep_ms(5);
    return atomic_load(v);
}

/* ---- tests ------------------------------------------------------------------------ */

static void test_get_keepalive(void **state)
{
    start(2);
    cli_t c;
    cli_open(&c);
    resp_t r;
    for (int i = 0; i < 2; i++) {
        cli_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
        assert_int_equal(cli_resp(&c, &r, 0), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, "hello");
        assert_string_equal(find_header(&r, "Content-Length"), "5");
        assert_string_equal(find_header(&r, "Connection"), "keep-alive");
        assert_string_equal(find_header(&r, "Content-Type"), "text/plain");
        const char *date = find_header(&r, "Date");
        assert_non_null(date);
        assert_non_null(strstr(date, " GMT"));
        resp_free(&r);
    }
    cli_sends(&c, "GET /nope HTTP/1.1\r\n\r\n");
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_int_equal(r.status, 404);
    assert_non_null(strstr(r.head, "HTTP/1.1 404 Not Found\r\n"));
    resp_free(&r);
    cli_close(&c);
}

static void test_post_echo(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "POST /echo?a=1&b=2 HTTP/1.1\r\nHost: x\r\nX-Test:   padded value  \r\n"
                  "Content-Length: 11\r\n\r\nhello world");
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    assert_string_equal(find_header(&r, "X-Path"), "/echo");
    assert_string_equal(find_header(&r, "X-Query"), "a=1&b=2");
    assert_string_equal(find_header(&r, "X-Method"), "POST");
    assert_string_equal(find_header(&r, "X-Test"), "padded value");
    assert_string_equal(find_header(&r, "X-Remote"), "127.0.0.1");
    assert_null(find_header(&r, "X-Evil"));
    assert_null(find_header(&r, "Injected"));
    resp_free(&r);
    /* No body: "" and length 0; no query: "". */
    cli_sends(&c, "GET /echo HTTP/1.1\r\n\r\n");
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_string_equal(find_header(&r, "X-Body-Len"), "0");
    assert_string_equal(find_header(&r, "X-Query"), "");
    assert_int_equal(r.body_len, 0);
    resp_free(&r);
    cli_close(&c);
}

static void test_chunked_request_split_reads(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    /* Tokens and chunks cut across reads: the server must copy what it needs. */
    const char *parts[] = {
        "POST /ec", "ho HTTP/1.1\r\nX-Te",   "st: spl",  "it\r\nTransfer-Encoding: chunked\r\n\r\n",
        "5\r\nhel", "lo\r\n6\r\n world\r\n", "0\r\n\r\n"};
    for (size_t i = 0; i < sizeof(parts) / sizeof(*parts); i++) {
        cli_sends(&c, parts[i]);
        sleep_ms(15);
    }
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello world");
    assert_string_equal(find_header(&r, "X-Test"), "split");
    assert_string_equal(find_header(&r, "X-Path"), "/echo");
    resp_free(&r);
    cli_close(&c);
}

static void test_pipelined_in_order(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    /* The slow one in the middle must not let the third overtake it. */
    cli_sends(&c, "GET /hello HTTP/1.1\r\n\r\n"
                  "GET /delay?ms=80 HTTP/1.1\r\n\r\n"
                  "POST /echo HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc"
                  "GET /hello HTTP/1.1\r\nConnection: close\r\n\r\n");
    resp_t r;
    const char *want[] = {"hello", "delayed", "abc", "hello"};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(cli_resp(&c, &r, 0), 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body, want[i]);
        assert_string_equal(find_header(&r, "Connection"), i == 3 ? "close" : "keep-alive");
        resp_free(&r);
    }
    assert_true(cli_at_eof(&c));
    cli_close(&c);

    /* More pipelined input than the server holds while one is in flight:
     * it stops reading, then picks up where it left off. */
    cli_open(&c);
    enum { NREQ = 40, BODY = 4000 };
    char *all = malloc(NREQ * (BODY + 128) + 64), *q = all;
    q += sprintf(q, "GET /delay?ms=60 HTTP/1.1\r\n\r\n");
    for (int i = 0; i < NREQ; i++) {
        q += sprintf(q, "POST /echo HTTP/1.1\r\nContent-Length: %d\r\n\r\n", BODY);
        memset(q, 'a' + i % 26, BODY);
        q += BODY;
    }
    cli_send(&c, all, (size_t)(q - all));
    free(all);
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_string_equal(r.body, "delayed");
    resp_free(&r);
    for (int i = 0; i < NREQ; i++) {
        assert_int_equal(cli_resp(&c, &r, 0), 0);
        assert_int_equal(r.body_len, BODY);
        assert_int_equal(r.body[0], 'a' + i % 26);
        assert_int_equal(r.body[BODY - 1], 'a' + i % 26);
        resp_free(&r);
    }
    cli_close(&c);
}

static void test_head_has_no_body(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "HEAD /hello HTTP/1.1\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 1), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(find_header(&r, "Content-Length"), "5");
    resp_free(&r);
    /* Had a body been sent, it would be read as the next status line. */
    cli_sends(&c, "GET /hello HTTP/1.1\r\n\r\n");
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "hello");
    resp_free(&r);
    cli_close(&c);
}

static void test_431_headers_too_large(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    size_t n = 20000;
    char *big = malloc(n + 64);
    int k = sprintf(big, "GET /hello HTTP/1.1\r\nX-Big: ");
    memset(big + k, 'a', n);
    strcpy(big + k + n, "\r\n\r\n");
    cli_sends(&c, big);
    free(big);
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_error_body(&r, 431, "headers_too_large");
    resp_free(&r);
    assert_true(cli_at_eof(&c));
    cli_close(&c);

    /* Many small headers, trickled in, count too. */
    cli_open(&c);
    cli_sends(&c, "GET /hello HTTP/1.1\r\n");
    int got = -1;
    for (int i = 0; i < 2000 && got < 0; i++) {
        char h[64];
        snprintf(h, sizeof(h), "X-H%d: vvvvvvvvvvvvvvvvvvvv\r\n", i);
        if (send(c.fd, h, strlen(h), MSG_NOSIGNAL) <= 0) break;
        if (i % 100 == 99) {
            struct timeval tv = {0, 1000};
            setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
            if (cli_fill(&c) > 0) got = 1;
        }
    }
    struct timeval tv = {3, 0};
    setsockopt(c.fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_error_body(&r, 431, "headers_too_large");
    resp_free(&r);
    cli_close(&c);

    /* Padding the parser skips over (no token ever ends) still counts. */
    cli_open(&c);
    cli_sends(&c, "GET /hello HTTP/1.1\r\nX-Pad:");
    char pad[1000];
    memset(pad, ' ', sizeof(pad));
    for (int i = 0; i < 20; i++) {
        if (send(c.fd, pad, sizeof(pad), MSG_NOSIGNAL) <= 0) break;
        sleep_ms(2);
    }
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_error_body(&r, 431, "headers_too_large");
    resp_free(&r);
    cli_close(&c);
}

static void test_413_by_content_length(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    /* Answered from the headers alone: the body is never sent. */
    cli_sends(&c, "POST /echo HTTP/1.1\r\nContent-Length: 200000\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_error_body(&r, 413, "body_too_large");
    resp_free(&r);
    assert_true(cli_at_eof(&c));
    cli_close(&c);
}

static void test_413_by_chunked_size(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    char chunk[10000 + 16];
    int k = sprintf(chunk, "%x\r\n", 10000);
    memset(chunk + k, 'z', 10000);
    memcpy(chunk + k + 10000, "\r\n", 2);
    int got = 0;
    for (int i = 0; i < 12 && !got; i++) /* 120 000 bytes > 100 000 */
        if (send(c.fd, chunk, (size_t)k + 10002, MSG_NOSIGNAL) <= 0) got = 1;
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_error_body(&r, 413, "body_too_large");
    resp_free(&r);
    cli_close(&c);
}

static void test_expect_100_continue(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 1), 0);
    assert_int_equal(r.status, 100);
    assert_string_equal(r.head, "HTTP/1.1 100 Continue\r\n\r\n");
    resp_free(&r);
    cli_sends(&c, "ping");
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "ping");
    resp_free(&r);
    /* Too large: 413 straight away, no 100. */
    cli_sends(&c, "POST /echo HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 100001\r\n\r\n");
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_error_body(&r, 413, "body_too_large");
    resp_free(&r);
    cli_close(&c);
}

static void test_408_header_timeout(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.header_timeout_ms = 200;
    cfg.body_timeout_ms = 300;
    start_with(&cfg);
    cli_t c;
    cli_open(&c);
    uint64_t t0 = now_ms();
    cli_sends(&c, "GET /hello HTTP/1.1\r\nHost: x\r\n"); /* never ends */
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    uint64_t dt = now_ms() - t0;
    assert_true(dt >= 150 && dt < 1500);
    assert_error_body(&r, 408, "request_timeout");
    resp_free(&r);
    assert_true(cli_at_eof(&c));
    cli_close(&c);

    /* The body has its own deadline. */
    cli_open(&c);
    cli_sends(&c, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_error_body(&r, 408, "request_timeout");
    resp_free(&r);
    cli_close(&c);
}

static void test_400_malformed(void **state)
{
    start(1);
    const char *bad[] = {
        "GARBAGE\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header Name: x\r\n\r\n",
        "POST /echo HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
        cli_t c;
        cli_open(&c);
        cli_sends(&c, bad[i]);
        resp_t r;
        assert_int_equal(cli_resp(&c, &r, 0), 0);
        assert_error_body(&r, 400, "bad_request");
        resp_free(&r);
        assert_true(cli_at_eof(&c));
        cli_close(&c);
    }
}

static void test_stream_chunked_framing(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "GET /stream?n=12 HTTP/1.1\r\n\r\n");
    char *end;
    for (;;) {
        c.buf[c.len] = '\0';
        if ((end = strstr(c.buf, "0\r\n\r\n")) && end[5] == '\0') break;
        assert_true(cli_fill(&c) > 0);
    }
    char *body = strstr(c.buf, "\r\n\r\n");
    assert_non_null(body);
    *body = '\0';
    assert_non_null(strstr(c.buf, "Transfer-Encoding: chunked"));
    assert_null(strstr(c.buf, "Content-Length"));
    /* Byte for byte: size in hex, CRLF, data, CRLF; then the last chunk. */
    char want[1024];
    size_t wl = 0;
    for (int i = 0; i < 12; i++) {
        char line[32];
        int n = snprintf(line, sizeof(line), "chunk %d\n", i);
        wl += (size_t)sprintf(want + wl, "%x\r\n%s\r\n", n, line);
    }
    wl += (size_t)sprintf(want + wl, "0\r\n\r\n");
    assert_string_equal(body + 4, want);
    cli_close(&c);
}

static void test_backpressure_exact_bytes(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.write_high_water = 64 * 1024;
    cfg.write_low_water = 16 * 1024;
    start_with(&cfg);
    cli_t c;
    cli_open_buf(&c, 8192);
    const size_t total = 16u * 1024 * 1024;
    char req[64];
    snprintf(req, sizeof(req), "GET /big?n=%zu HTTP/1.1\r\n\r\n", total);
    cli_sends(&c, req);
    sleep_ms(150); /* a slow reader: the kernel buffers fill, then our queue */
    assert_true(atomic_load(&n_pause) >= 1);
    assert_true(atomic_load(&big_sent) < total);
    /* Read it all in small bites, checking every byte of the pattern. */
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_int_equal(r.body_len, total);
    size_t bad = 0;
    for (size_t i = 0; i < total; i++)
        bad += (unsigned char)r.body[i] != (unsigned char)(i % 251);
    assert_int_equal(bad, 0);
    resp_free(&r);
    assert_int_equal(wait_for(&n_finished, 1, 2000), 1);
    assert_true(atomic_load(&n_drain) >= 1);
    assert_int_equal(atomic_load(&n_abort), 0);
    /* The connection is still good for another request. */
    cli_sends(&c, "GET /hello HTTP/1.1\r\n\r\n");
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_string_equal(r.body, "hello");
    resp_free(&r);
    cli_close(&c);
}

static void test_abort_when_client_leaves_mid_stream(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "GET /tick HTTP/1.1\r\n\r\n");
    c.buf[0] = '\0';
    while (!strstr(c.buf, "tick 1\n"))
        assert_true(cli_fill(&c) > 0), c.buf[c.len] = '\0';
    assert_int_equal(atomic_load(&n_abort), 0);
    cli_close(&c);
    assert_int_equal(wait_for(&n_abort, 1, 2000), 1);
    assert_int_equal(wait_for(&n_finished, 1, 2000), 1);
    sleep_ms(60); /* and only once */
    assert_int_equal(atomic_load(&n_abort), 1);

    /* Gone before a plain reply: the handler still finishes it later, after
     * the connection itself is closed (ASan checks that path). */
    cli_open(&c);
    cli_sends(&c, "GET /delay?ms=100 HTTP/1.1\r\n\r\n");
    sleep_ms(20);
    cli_close(&c);
    assert_int_equal(wait_for(&n_abort, 2, 2000), 2);
    assert_int_equal(wait_for(&n_finished, 2, 2000), 2);
}

static void test_slow_reader_send_timeout(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.write_high_water = 64 * 1024;
    cfg.write_low_water = 16 * 1024;
    cfg.send_timeout_ms = 200;
    start_with(&cfg);
    cli_t c;
    cli_open_buf(&c, 8192);
    cli_sends(&c, "GET /big?n=268435456 HTTP/1.1\r\n\r\n");
    uint64_t t0 = now_ms();
    /* Never read: the server must give up on us. */
    assert_int_equal(wait_for(&n_abort, 1, 3000), 1);
    uint64_t dt = now_ms() - t0;
    assert_true(dt >= 150);
    assert_int_equal(wait_for(&n_finished, 1, 1000), 1);
    assert_true(atomic_load(&big_sent) < 268435456u);
    cli_close(&c);

    /* A finished reply still queued for a client that never reads: the
     * connection is dropped (nothing to abort), not kept forever. */
    cli_open_buf(&c, 8192);
    const size_t n = 32u * 1024 * 1024;
    char req[64];
    snprintf(req, sizeof(req), "GET /blob?n=%zu HTTP/1.1\r\n\r\n", n);
    cli_sends(&c, req);
    assert_int_equal(wait_for(&n_finished, 2, 2000), 2);
    sleep_ms(500);
    size_t got = 0;
    char buf[65536];
    ssize_t k;
    while ((k = recv(c.fd, buf, sizeof(buf), 0)) > 0)
        got += (size_t)k;
    assert_true(k == 0 || errno == ECONNRESET);
    assert_true(got < n);
    assert_int_equal(atomic_load(&n_abort), 1);
    cli_close(&c);
}

/* A connection that sends nothing at all is answered 408 (JSON) when its
 * idle time is up, then closed; after a request it would be closed quietly
 * (next test). */
static void test_408_fresh_connection_silent(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.idle_timeout_ms = 200;
    start_with(&cfg);
    cli_t c;
    cli_open(&c);
    uint64_t t0 = now_ms();
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    uint64_t dt = now_ms() - t0;
    assert_true(dt >= 150 && dt < 1500);
    assert_error_body(&r, 408, "request_timeout");
    resp_free(&r);
    assert_true(cli_at_eof(&c));
    cli_close(&c);
}

static void test_idle_timeout_closes_quietly(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.idle_timeout_ms = 200;
    start_with(&cfg);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "GET /hello HTTP/1.1\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    resp_free(&r);
    uint64_t t0 = now_ms();
    assert_true(cli_at_eof(&c)); /* EOF, no 408 or other bytes */
    assert_int_equal(c.len, 0);
    uint64_t dt = now_ms() - t0;
    assert_true(dt >= 150 && dt < 1500);
    cli_close(&c);
}

static void test_http10(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "GET /hello HTTP/1.0\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_string_equal(find_header(&r, "Connection"), "close");
    resp_free(&r);
    assert_true(cli_at_eof(&c));
    cli_close(&c);

    cli_open(&c);
    cli_sends(&c, "GET /hello HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_string_equal(find_header(&r, "Connection"), "keep-alive");
    resp_free(&r);
    /* A stream to an HTTP/1.0 client is delimited by the close, not chunked. */
    cli_sends(&c, "GET /stream?n=2 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_null(find_header(&r, "Transfer-Encoding"));
    assert_string_equal(find_header(&r, "Connection"), "close");
    assert_string_equal(r.body, "chunk 0\nchunk 1\n");
    resp_free(&r);
    cli_close(&c);
}

static void test_error_json_escaped(void **state)
{
    start(1);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "GET /error HTTP/1.1\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_int_equal(r.status, 429);
    assert_string_equal(r.body, "{\"error\":{\"message\":\"Too \\\"many\\\"\\nrequests\\\\\","
                                "\"type\":\"invalid_request_error\",\"code\":\"rate_limited\"}}");
    assert_string_equal(find_header(&r, "Connection"), "keep-alive");
    assert_string_equal(find_header(&r, "Content-Type"), "application/json");
    resp_free(&r);
    cli_close(&c);
}

static void test_graceful_shutdown_waits_for_inflight(void **state)
{
    start(2);
    cli_t idle, busy;
    cli_open(&idle);
    cli_sends(&idle, "GET /hello HTTP/1.1\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_resp(&idle, &r, 0), 0);
    resp_free(&r);
    cli_open(&busy);
    cli_sends(&busy, "GET /delay?ms=400 HTTP/1.1\r\n\r\n");
    sleep_ms(50);
    uint64_t t0 = now_ms();
    tg_server_stop(srv);
    tg_server_stop(srv); /* twice is harmless */
    /* The idle keep-alive connection is closed at once. */
    assert_true(cli_at_eof(&idle));
    assert_true(now_ms() - t0 < 300);
    /* The in-flight request completes, told that the connection ends. */
    assert_int_equal(cli_resp(&busy, &r, 0), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "delayed");
    assert_string_equal(find_header(&r, "Connection"), "close");
    resp_free(&r);
    assert_true(cli_at_eof(&busy));
    tg_server_wait(srv);
    assert_true(now_ms() - t0 >= 300);
    assert_int_equal(atomic_load(&n_abort), 0);
    assert_int_equal(atomic_load(&n_draining), 2);
    assert_int_equal(atomic_load(&n_fini), 2);
    /* Nobody listens any more. */
    cli_t late;
    memset(&late, 0, sizeof(late));
    late.fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_not_equal(connect(late.fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    close(late.fd);
    cli_close(&idle);
    cli_close(&busy);
}

static void test_shutdown_timeout_aborts_the_rest(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.shutdown_timeout_ms = 200;
    start_with(&cfg);
    cli_t c;
    cli_open(&c);
    cli_sends(&c, "GET /tick HTTP/1.1\r\n\r\n");
    c.buf[0] = '\0';
    while (!strstr(c.buf, "tick 0\n"))
        assert_true(cli_fill(&c) > 0), c.buf[c.len] = '\0';
    uint64_t t0 = now_ms();
    tg_server_stop(srv);
    tg_server_wait(srv);
    uint64_t dt = now_ms() - t0;
    assert_true(dt >= 150 && dt < 2000);
    assert_int_equal(atomic_load(&n_abort), 1);
    assert_int_equal(atomic_load(&n_finished), 1);
    assert_int_equal(atomic_load(&n_fini), 1);
    cli_close(&c);
}

static void test_max_connections(void **state)
{
    tg_http_config_t cfg = test_config(1);
    cfg.max_connections = 2;
    start_with(&cfg);
    cli_t a, b, x;
    cli_open(&a);
    cli_open(&b);
    cli_open(&x);
    assert_true(cli_at_eof(&x)); /* the third is turned away */
    cli_sends(&a, "GET /hello HTTP/1.1\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_resp(&a, &r, 0), 0);
    assert_int_equal(r.status, 200);
    resp_free(&r);
    cli_close(&a);
    cli_close(&b);
    cli_close(&x);
}

static void test_ipv6_and_helpers(void **state)
{
    tg_http_config_t cfg;
    tg_http_config_defaults(&cfg);
    assert_int_equal(cfg.max_header_bytes, 16 * 1024);
    assert_int_equal(cfg.max_body_bytes, 10 * 1024 * 1024);
    assert_int_equal(cfg.write_high_water, 256 * 1024);
    assert_int_equal(cfg.write_low_water, 64 * 1024);
    assert_int_equal(cfg.max_connections, 20000);
    assert_true(cfg.workers >= 1);
    assert_string_equal(tg_http_reason(431), "Request Header Fields Too Large");
    assert_string_equal(tg_http_reason(200), "OK");

    cfg = test_config(2);
    cfg.host = "::1";
    counters_reset();
    tg_http_app_t app = {handle, NULL, NULL, NULL, NULL, NULL};
    assert_int_equal(tg_server_create(&srv, &cfg, &app), 0);
    if (tg_server_start(srv) != 0) { /* no IPv6 on this host */
        tg_server_destroy(srv);
        srv = NULL;
        skip();
    }
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 sa = {.sin6_family = AF_INET6,
                              .sin6_port = htons((uint16_t)tg_server_port(srv))};
    sa.sin6_addr = in6addr_loopback;
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cli_t c = {.fd = fd, .cap = 1 << 16};
    c.buf = malloc(c.cap);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    cli_sends(&c, "GET /echo HTTP/1.1\r\n\r\n");
    resp_t r;
    assert_int_equal(cli_resp(&c, &r, 0), 0);
    assert_string_equal(find_header(&r, "X-Remote"), "::1");
    resp_free(&r);
    cli_close(&c);
}

/* Which handler headers the server drops: CR or LF anywhere in a value, a
 * control, space or colon in a name, and the names it frames itself; at
 * every position, so the 8-byte steps and the tail agree. */
static void test_header_skip(void **state)
{
    char name[40], value[40];
    for (size_t len = 1; len <= 24; len++) {
        for (size_t at = 0; at < len; at++) {
            memset(name, 'x', len);
            memset(value, 'v', len);
            tg_header_t h = {name, len, value, len};
            assert_false(tg_header_skip(&h));
            static const char bad_value[] = {'\r', '\n'};
            for (size_t k = 0; k < sizeof(bad_value); k++) {
                value[at] = bad_value[k];
                assert_true(tg_header_skip(&h));
                value[at] = 'v';
            }
            static const char bad_name[] = {' ', ':', '\t', '\r', '\n', 0x01, 0x20};
            for (size_t k = 0; k < sizeof(bad_name); k++) {
                name[at] = bad_name[k];
                assert_true(tg_header_skip(&h));
                name[at] = 'x';
            }
            static const char fine[] = {'!', '~', '-', (char)0x80, (char)0xff};
            for (size_t k = 0; k < sizeof(fine); k++) {
                name[at] = value[at] = fine[k];
                assert_false(tg_header_skip(&h));
                name[at] = 'x', value[at] = 'v';
            }
        }
    }
    tg_header_t framing[] = {{"Content-Length", 14, "1", 1},
                             {"connection", 10, "close", 5},
                             {"DATE", 4, "x", 1},
                             {"Transfer-Encoding", 17, "chunked", 7}};
    for (size_t i = 0; i < sizeof(framing) / sizeof(framing[0]); i++)
        assert_true(tg_header_skip(&framing[i]));
    tg_header_t empty = {"", 0, "v", 1};
    assert_true(tg_header_skip(&empty));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_header_skip),
        cmocka_unit_test_teardown(test_get_keepalive, teardown),
        cmocka_unit_test_teardown(test_post_echo, teardown),
        cmocka_unit_test_teardown(test_chunked_request_split_reads, teardown),
        cmocka_unit_test_teardown(test_pipelined_in_order, teardown),
        cmocka_unit_test_teardown(test_head_has_no_body, teardown),
        cmocka_unit_test_teardown(test_431_headers_too_large, teardown),
        cmocka_unit_test_teardown(test_413_by_content_length, teardown),
        cmocka_unit_test_teardown(test_413_by_chunked_size, teardown),
        cmocka_unit_test_teardown(test_expect_100_continue, teardown),
        cmocka_unit_test_teardown(test_408_header_timeout, teardown),
        cmocka_unit_test_teardown(test_400_malformed, teardown),
        cmocka_unit_test_teardown(test_stream_chunked_framing, teardown),
        cmocka_unit_test_teardown(test_backpressure_exact_bytes, teardown),
        cmocka_unit_test_teardown(test_abort_when_client_leaves_mid_stream, teardown),
        cmocka_unit_test_teardown(test_slow_reader_send_timeout, teardown),
        cmocka_unit_test_teardown(test_408_fresh_connection_silent, teardown),
        cmocka_unit_test_teardown(test_idle_timeout_closes_quietly, teardown),
        cmocka_unit_test_teardown(test_http10, teardown),
        cmocka_unit_test_teardown(test_error_json_escaped, teardown),
        cmocka_unit_test_teardown(test_graceful_shutdown_waits_for_inflight, teardown),
        cmocka_unit_test_teardown(test_shutdown_timeout_aborts_the_rest, teardown),
        cmocka_unit_test_teardown(test_max_connections, teardown),
        cmocka_unit_test_teardown(test_ipv6_and_helpers, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

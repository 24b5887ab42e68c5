/* test_upstream.c - unit tests for the upstream client (src/upstream/):
 * every contract test runs twice, once on the native HTTP/1.1 client (h1.c,
 * which takes http:// URLs) and once on libcurl (TG_UPSTREAM_CURL=1), then
 * the native client's own tests (pooling, retry, Host, timeouts) run.
 *
 * Each test runs a real uv loop against a tiny blocking HTTP/1.1 server on
 * 127.0.0.1 (a thread per connection, written here so the test depends on
 * nothing else in the tree). The server scripts one behaviour per test:
 * answer, stream, stay silent, or wait for the client to hang up. Every test
 * ends by destroying the upstream and requiring uv_loop_close() to succeed,
 * which proves every uv handle was closed; ASan proves the memory was freed. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#include "upstream/upstream.h"

/* ---- the server ----------------------------------------------------------- */

#define MAX_CONNS 16
#define CONN_BUF  (4 * 1024 * 1024)

typedef struct srv srv_t;
typedef struct {
    srv_t *s;
    int fd;
    char *buf; /* bytes received and not yet consumed */
    size_t len;
} conn_t;
typedef void (*handler_fn)(conn_t *c);

struct srv {
    int lfd, port;
    pthread_t thr;
    handler_fn handler;
    atomic_int stop, accepts, peer_closed, requests;
    pthread_t conn_thr[MAX_CONNS];
    conn_t conns[MAX_CONNS];
    int nconns;
    pthread_mutex_t mu; /* guards the last request below */
    char head[16384];
    char *body;
    size_t body_len;
};

/* Waits for fd to be readable; -1 when the test is stopping the server. */
static int wait_readable(conn_t *c)
{
    struct pollfd p = {.fd = c->fd, .events = POLLIN};
    while (!atomic_load(&c->s->stop)) {
        if (poll(&p, 1, 20) > 0) return 0;
    }
    return -1;
}

/* Receives more bytes: >0 read, 0 peer closed (FIN or reset), -1 stop. */
static ssize_t conn_fill(conn_t *c)
{
    if (wait_readable(c)) return -1;
    ssize_t n = recv(c->fd, c->buf + c->len, CONN_BUF - c->len, 0);
    if (n > 0) {
        c->len += (size_t)n;
        return n;
    }
    /* A close with unread bytes in the client's buffer arrives as a reset. */
    atomic_fetch_add(&c->s->peer_closed, 1);
    return 0;
}

/* Reads one request (head and Content-Length body) and records it.
 * Returns 1, or 0 when the peer closed, -1 on stop. */
static int read_request(conn_t *c)
{
    char *end;
    while (!(end = memmem(c->buf, c->len, "\r\n\r\n", 4))) {
        ssize_t n = conn_fill(c);
        if (n <= 0) return (int)n;
    }
    size_t hlen = (size_t)(end - c->buf) + 4, blen = 0;
    char *cl = memmem(c->buf, hlen, "Content-Length:", 15);
    if (cl) blen = strtoul(cl + 15, NULL, 10);
    while (c->len < hlen + blen) {
        ssize_t n = conn_fill(c);
        if (n <= 0) return (int)n;
    }
    srv_t *s = c->s;
    pthread_mutex_lock(&s->mu);
    size_t keep = hlen < sizeof(s->head) - 1 ? hlen : sizeof(s->head) - 1;
    memcpy(s->head, c->buf, keep);
    s->head[keep] = '\0';
    free(s->body);
    s->body = malloc(blen + 1);
    memcpy(s->body, c->buf + hlen, blen);
    s->body_len = blen;
    pthread_mutex_unlock(&s->mu);
    memmove(c->buf, c->buf + hlen + blen, c->len - hlen - blen);
    c->len -= hlen + blen;
    atomic_fetch_add(&s->requests, 1);
    return 1;
}

static void send_all(conn_t *c, const void *p, size_t n)
{
    const char *b = p;
    while (n) {
        ssize_t w = send(c->fd, b, n, MSG_NOSIGNAL);
        if (w <= 0) return;
        b += w;
        n -= (size_t)w;
    }
}

static void send_str(conn_t *c, const char *s)
{
    send_all(c, s, strlen(s));
}

/* Blocks until the client hangs up (counted in peer_closed) or the test stops. */
static void wait_peer_close(conn_t *c)
{
    while (conn_fill(c) > 0)
        c->len = 0;
}

static void *conn_main(void *arg)
{
    conn_t *c = arg;
    c->s->handler(c);
    close(c->fd);
    free(c->buf);
    return NULL;
}

static void *accept_main(void *arg)
{
    srv_t *s = arg;
    for (;;) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0) break; /* shutdown() by srv_stop */
        atomic_fetch_add(&s->accepts, 1);
        if (s->nconns == MAX_CONNS) {
            close(fd);
            continue;
        }
        conn_t *c = &s->conns[s->nconns];
        *c = (conn_t){.s = s, .fd = fd, .buf = malloc(CONN_BUF)};
        pthread_create(&s->conn_thr[s->nconns++], NULL, conn_main, c);
    }
    for (int i = 0; i < s->nconns; i++)
        pthread_join(s->conn_thr[i], NULL);
    return NULL;
}

static srv_t *srv_start(handler_fn h)
{
    srv_t *s = calloc(1, sizeof(*s));
    s->handler = h;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 16), 0);
    getsockname(s->lfd, (struct sockaddr *)&a, &alen);
    s->port = ntohs(a.sin_port);
    pthread_create(&s->thr, NULL, accept_main, s);
    return s;
}

static void srv_stop(srv_t *s)
{
    atomic_store(&s->stop, 1);
    shutdown(s->lfd, SHUT_RDWR);
    pthread_join(s->thr, NULL);
    close(s->lfd);
    pthread_mutex_destroy(&s->mu);
    free(s->body);
    free(s);
}

static void srv_url(const srv_t *s, char *out, size_t cap, const char *path)
{
    snprintf(out, cap, "http://127.0.0.1:%d%s", s->port, path);
}

/* ---- server behaviours ----------------------------------------------------- */

/* Keep-alive: every request gets the same small response. */
static void h_hello(conn_t *c)
{
    while (read_request(c) == 1)
        send_str(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                    "X-Test:   padded value  \r\nContent-Length: 5\r\n\r\nhello");
}

static void h_echo_len(conn_t *c)
{
    while (read_request(c) == 1) {
        char resp[128];
        pthread_mutex_lock(&c->s->mu);
        size_t n = c->s->body_len;
        pthread_mutex_unlock(&c->s->mu);
        char body[32];
        int blen = snprintf(body, sizeof(body), "got %zu", n);
        snprintf(resp, sizeof(resp), "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", blen, body);
        send_str(c, resp);
    }
}

static void send_chunk(conn_t *c, const char *p, size_t n)
{
    char sz[32];
    snprintf(sz, sizeof(sz), "%zx\r\n", n);
    send_str(c, sz);
    send_all(c, p, n);
    send_str(c, "\r\n");
}

static const char chunked_head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n";

/* Five pieces 30 ms apart, so they arrive as separate reads. */
static void h_chunked(conn_t *c)
{
    if (read_request(c) != 1) return;
    send_str(c, chunked_head);
    for (int i = 0; i < 5; i++) {
        char piece[32];
        int n = snprintf(piece, sizeof(piece), "data: piece-%d\n\n", i);
        send_chunk(c, piece, (size_t)n);
        usleep(30000);
    }
    send_str(c, "0\r\n\r\n");
    wait_peer_close(c);
}

/* The pattern the big bodies carry: byte i is a function of i, so a lost,
 * duplicated or reordered byte shows. */
static char pattern(size_t i)
{
    return (char)('a' + (i * 7 + i / 251) % 26);
}

#define BIG_BODY (300 * 1024)

/* A big body in chunks of varied sizes, some sent back to back, some after
 * a pause: the client sees bursts larger than it takes at once. */
static void h_big_chunked(conn_t *c)
{
    if (read_request(c) != 1) return;
    send_str(c, chunked_head);
    char *b = malloc(BIG_BODY);
    for (size_t i = 0; i < BIG_BODY; i++)
        b[i] = pattern(i);
    size_t at = 0, k = 0;
    while (at < BIG_BODY) {
        size_t n = 1 + (k * 7919) % 9000;
        if (n > BIG_BODY - at) n = BIG_BODY - at;
        send_chunk(c, b + at, n);
        at += n;
        if (++k % 16 == 0) usleep(2000);
    }
    send_str(c, "0\r\n\r\n");
    free(b);
    wait_peer_close(c);
}

/* A whole chunked response in one send: libcurl reads it all at once, so a
 * pause on the first piece must hold back the rest and the end of the body. */
static void h_one_shot(conn_t *c)
{
    if (read_request(c) != 1) return;
    char *out = malloc(64 * 1024);
    size_t len = 0;
    len += (size_t)sprintf(out + len, "%s", chunked_head);
    for (int i = 0; i < 40; i++) {
        char piece[32];
        int n = snprintf(piece, sizeof(piece), "<%02d>", i);
        len += (size_t)sprintf(out + len, "%x\r\n%s\r\n", n, piece);
    }
    len += (size_t)sprintf(out + len, "0\r\n\r\n");
    send_all(c, out, len);
    free(out);
    wait_peer_close(c);
}

static void h_silent(conn_t *c)
{
    if (read_request(c) != 1) return;
    wait_peer_close(c);
}

/* Headers and one chunk, then nothing until the client hangs up. */
static void h_stream_then_wait(conn_t *c)
{
    if (read_request(c) != 1) return;
    send_str(c, chunked_head);
    send_chunk(c, "data: first\n\n", 13);
    wait_peer_close(c);
}

static void h_503(conn_t *c)
{
    if (read_request(c) != 1) return;
    send_str(c, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy");
    wait_peer_close(c);
}

static void h_interim_no_body(conn_t *c)
{
    if (read_request(c) != 1) return;
    send_str(c, "HTTP/1.1 100 Continue\r\n\r\n");
    usleep(10000);
    send_str(c, "HTTP/1.1 204 No Content\r\nX-Final: yes\r\n\r\n");
    wait_peer_close(c);
}

static void h_huge_headers(conn_t *c)
{
    if (read_request(c) != 1) return;
    send_str(c, "HTTP/1.1 200 OK\r\n");
    char line[1100];
    memset(line, 'v', sizeof(line));
    memcpy(line, "X-Pad: ", 7);
    memcpy(line + sizeof(line) - 2, "\r\n", 2);
    for (int i = 0; i < 70; i++)
        send_all(c, line, sizeof(line));
    send_str(c, "Content-Length: 0\r\n\r\n");
    wait_peer_close(c);
}

/* ---- the client side -------------------------------------------------------- */

typedef struct {
    uv_loop_t loop;
    tg_upstream_t *u;
    uv_timer_t ticker; /* wakes the loop so conditions set by the server are seen */
} env_t;

/* Set when the test destroys the upstream: any callback after it is a bug. */
static int g_destroyed;

typedef struct rec rec_t;
struct rec {
    env_t *env;
    tg_upcall_t *call;
    int headers_calls, status, data_calls, done_calls, err;
    int violations; /* callbacks out of order or after the end */
    tg_buf_t body;
    char xtest[64], xfinal[16];
    size_t nheaders;
    uint64_t ttfb_us;
    /* behaviours */
    int pause_on_data;     /* return 1 from every on_data */
    int paused_now;        /* we asked for a pause and have not resumed */
    int cancel_on_data;    /* cancel from inside on_data (1st call) */
    int cancel_on_headers; /* cancel from inside on_headers */
    int destroy_on_data;   /* destroy the upstream from inside on_data */
    rec_t *start_on_data;  /* start this call from inside on_data */
    rec_t *start_on_done;  /* start this call from inside on_done */
    const char *start_url;
    int canceled;
};

static void on_headers(tg_upcall_t *c, int status, const tg_header_t *h, size_t n, void *ud)
{
    rec_t *r = ud;
    if (r->headers_calls || r->data_calls || r->done_calls || r->canceled || g_destroyed)
        r->violations++;
    r->headers_calls++;
    r->status = status;
    r->nheaders = n;
    for (size_t i = 0; i < n; i++) {
        if (strlen(h[i].name) != h[i].name_len || strlen(h[i].value) != h[i].value_len)
            r->violations++;
        if (strcasecmp(h[i].name, "x-test") == 0)
            snprintf(r->xtest, sizeof(r->xtest), "%s", h[i].value);
        if (strcasecmp(h[i].name, "x-final") == 0)
            snprintf(r->xfinal, sizeof(r->xfinal), "%s", h[i].value);
    }
    if (r->cancel_on_headers) {
        r->canceled = 1;
        tg_upcall_cancel(c);
    }
}

static void start(rec_t *r, const char *url, const tg_upcall_opts_t *base);

static int on_data(tg_upcall_t *c, const char *p, size_t n, void *ud)
{
    rec_t *r = ud;
    if (!r->headers_calls || r->done_calls || r->canceled || r->paused_now || g_destroyed)
        r->violations++;
    r->data_calls++;
    assert_int_equal(tg_buf_append(&r->body, p, n), 0);
    if (r->start_on_data) {
        start(r->start_on_data, r->start_url, NULL);
        r->start_on_data = NULL;
    }
    if (r->cancel_on_data) {
        r->canceled = 1;
        tg_upcall_cancel(c);
        return 0;
    }
    if (r->destroy_on_data) {
        g_destroyed = 1;
        tg_upstream_destroy(r->env->u);
        r->env->u = NULL;
        return 0;
    }
    if (r->pause_on_data) {
        r->paused_now = 1;
        return 1;
    }
    return 0;
}

static void on_done(tg_upcall_t *c, int err, void *ud)
{
    rec_t *r = ud;
    if (r->done_calls || r->canceled || g_destroyed) r->violations++;
    r->done_calls++;
    r->err = err;
    r->ttfb_us = tg_upcall_ttfb_us(c);
    tg_upcall_cancel(c); /* must be a no-op inside on_done */
    if (r->start_on_done) {
        start(r->start_on_done, r->start_url, NULL);
        r->start_on_done = NULL;
    }
}

static const tg_upcall_cbs_t cbs = {on_headers, on_data, on_done};

static void start(rec_t *r, const char *url, const tg_upcall_opts_t *base);

static void start(rec_t *r, const char *url, const tg_upcall_opts_t *base)
{
    tg_upcall_opts_t o = base ? *base : (tg_upcall_opts_t){.method = "GET"};
    o.url = url;
    if (!o.total_timeout_ms) o.total_timeout_ms = 5000; /* a hung test fails, not hangs */
    tg_buf_init(&r->body, 0);
    assert_int_equal(tg_upcall_start(r->env->u, &o, &cbs, r, &r->call), 0);
}

static void on_tick(uv_timer_t *t)
{
}

static void env_init(env_t *e)
{
    g_destroyed = 0;
    assert_int_equal(uv_loop_init(&e->loop), 0);
    assert_int_equal(tg_upstream_create(&e->u, &e->loop), 0);
    uv_timer_init(&e->loop, &e->ticker);
    uv_timer_start(&e->ticker, on_tick, 5, 5);
}

/* Destroys the upstream, lets the close callbacks run, and requires that no
 * handle is left open. */
static void env_done(env_t *e)
{
    if (e->u) tg_upstream_destroy(e->u);
    e->u = NULL;
    uv_close((uv_handle_t *)&e->ticker, NULL);
    uv_run(&e->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&e->loop), 0);
}

typedef int (*cond_fn)(void *arg);

/* Runs the loop until cond holds; fails the test after ms milliseconds. */
static void run_until(env_t *e, cond_fn cond, void *arg, unsigned ms)
{
    uint64_t end = tg_now_ns() + (uint64_t)ms * 1000000;
    while (!cond(arg)) {
        if (tg_now_ns() > end) fail_msg("condition not reached in %u ms", ms);
        uv_run(&e->loop, UV_RUN_ONCE);
    }
}

/* Runs the loop for ms milliseconds whatever happens. */
static void run_for(env_t *e, unsigned ms)
{
    uint64_t end = tg_now_ns() + (uint64_t)ms * 1000000;
    while (tg_now_ns() < end)
        uv_run(&e->loop, UV_RUN_ONCE);
}

static int is_done(void *arg)
{
    return ((rec_t *)arg)->done_calls > 0;
}

static int has_data(void *arg)
{
    return ((rec_t *)arg)->data_calls > 0;
}

static int peer_closed(void *arg)
{
    return atomic_load(&((srv_t *)arg)->peer_closed) > 0;
}

static void rec_free(rec_t *r)
{
    tg_buf_free(&r->body);
}

/* ---- tests ------------------------------------------------------------------ */

static void test_get_200_headers_and_body(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_hello);
    char url[128];
    srv_url(s, url, sizeof(url), "/hello");
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.headers_calls, 1);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.xtest, "padded value");
    assert_int_equal(r.nheaders, 3);
    assert_int_equal(r.body.len, 5);
    assert_memory_equal(r.body.data, "hello", 5);
    assert_int_equal(r.violations, 0);
    assert_true(r.ttfb_us > 0);
    assert_true(strstr(s->head, "GET /hello HTTP/1.1\r\n") == s->head);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

static void test_post_body_received_exactly(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_echo_len);
    char url[128];
    srv_url(s, url, sizeof(url), "/v1/chat");
    /* Over 1 MiB, where libcurl 7.88 would add Expect: 100-continue. */
    size_t n = 1536 * 1024;
    char *body = malloc(n);
    for (size_t i = 0; i < n; i++)
        body[i] = pattern(i);
    const char *hdrs[] = {"Content-Type: application/json", "X-Api-Key: k1"};
    tg_upcall_opts_t o = {
        .method = "POST", .headers = hdrs, .nheaders = 2, .body = body, .body_len = n};
    rec_t r = {.env = &e};
    start(&r, url, &o);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 200);
    pthread_mutex_lock(&s->mu);
    assert_int_equal(s->body_len, n);
    assert_memory_equal(s->body, body, n);
    assert_true(strstr(s->head, "POST /v1/chat HTTP/1.1\r\n") == s->head);
    assert_non_null(strstr(s->head, "\r\nX-Api-Key: k1\r\n"));
    assert_non_null(strstr(s->head, "\r\nContent-Type: application/json\r\n"));
    assert_null(strcasestr(s->head, "\r\nExpect:"));
    pthread_mutex_unlock(&s->mu);
    assert_string_equal(r.body.data, "got 1572864");
    env_done(&e);
    srv_stop(s);
    free(body);
    rec_free(&r);
}

static void test_chunked_stream_in_pieces(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_chunked);
    char url[128];
    srv_url(s, url, sizeof(url), "/stream");
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.violations, 0);
    assert_true(r.data_calls >= 3); /* delivered as it came, not at the end */
    assert_string_equal(r.body.data, "data: piece-0\n\ndata: piece-1\n\ndata: piece-2\n\n"
                                     "data: piece-3\n\ndata: piece-4\n\n");
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

/* The resumer: a repeating timer that resumes a paused call soon after, from
 * outside any upstream callback, as a client's drain would. */
typedef struct {
    uv_timer_t t;
    rec_t *r;
    int resumes;
} resumer_t;

static void on_resume_tick(uv_timer_t *t)
{
    resumer_t *rs = t->data;
    if (rs->r->paused_now && !rs->r->done_calls) {
        rs->r->paused_now = 0;
        rs->resumes++;
        tg_upcall_resume(rs->r->call);
    }
}

static void check_pause_resume(handler_fn h, const char *expect, size_t expect_len)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h);
    char url[128];
    srv_url(s, url, sizeof(url), "/big");
    rec_t r = {.env = &e, .pause_on_data = 1};
    resumer_t rs = {.r = &r};
    uv_timer_init(&e.loop, &rs.t);
    rs.t.data = &rs;
    uv_timer_start(&rs.t, on_resume_tick, 1, 1);
    start(&r, url, NULL);
    run_until(&e, is_done, &r, 5000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.violations, 0); /* no on_data while paused */
    assert_int_equal(r.body.len, expect_len);
    assert_memory_equal(r.body.data, expect, expect_len);
    assert_true(rs.resumes >= 1);
    assert_int_equal(r.data_calls, rs.resumes + 1); /* one delivery per pause */
    uv_close((uv_handle_t *)&rs.t, NULL);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

static void test_pause_resume_exactly_once_in_order(void **state)
{
    char *want = malloc(BIG_BODY);
    for (size_t i = 0; i < BIG_BODY; i++)
        want[i] = pattern(i);
    check_pause_resume(h_big_chunked, want, BIG_BODY);
    free(want);
}

static void test_pause_with_whole_body_buffered(void **state)
{
    char want[256];
    size_t len = 0;
    for (int i = 0; i < 40; i++)
        len += (size_t)sprintf(want + len, "<%02d>", i);
    check_pause_resume(h_one_shot, want, len);
}

/* Pause and resume from outside the callbacks, on a call that has not
 * delivered anything yet. */
static void test_external_pause_before_data(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_chunked);
    char url[128];
    srv_url(s, url, sizeof(url), "/stream");
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    tg_upcall_pause(r.call);
    r.paused_now = 1;
    run_for(&e, 200); /* pieces 0..5 arrive meanwhile and are held */
    assert_int_equal(r.data_calls, 0);
    r.paused_now = 0;
    tg_upcall_resume(r.call);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.violations, 0);
    assert_string_equal(r.body.data, "data: piece-0\n\ndata: piece-1\n\ndata: piece-2\n\n"
                                     "data: piece-3\n\ndata: piece-4\n\n");
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

/* A loopback port that was just bound and released: nothing listens there. */
static int closed_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    getsockname(fd, (struct sockaddr *)&a, &alen);
    close(fd);
    return ntohs(a.sin_port);
}

static void test_connection_refused(void **state)
{
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", closed_port());

    env_t e;
    env_init(&e);
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, TG_ECONNECT);
    assert_int_equal(r.headers_calls, 0);
    assert_int_equal(r.violations, 0);
    env_done(&e);
    rec_free(&r);
}

static void test_first_byte_timeout(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_silent);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e};
    tg_upcall_opts_t o = {.method = "GET", .first_byte_timeout_ms = 200};
    uint64_t t0 = tg_now_ns();
    start(&r, url, &o);
    run_until(&e, is_done, &r, 3000);
    uint64_t ms = (tg_now_ns() - t0) / 1000000;
    assert_int_equal(r.err, TG_ETIMEDOUT);
    assert_true(ms >= 180 && ms < 1500);
    assert_int_equal(r.headers_calls, 0);
    assert_int_equal(r.ttfb_us, 0);
    /* The abandoned request's connection is closed, not pooled. */
    run_until(&e, peer_closed, s, 2000);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

static void test_total_timeout(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_stream_then_wait);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e};
    tg_upcall_opts_t o = {.method = "GET", .first_byte_timeout_ms = 1000, .total_timeout_ms = 300};
    start(&r, url, &o);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, TG_ETIMEDOUT);
    assert_int_equal(r.headers_calls, 1);
    assert_int_equal(r.data_calls, 1);
    assert_true(r.ttfb_us > 0);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

static void check_cancel(rec_t *r, env_t *e, srv_t *s)
{
    run_until(e, peer_closed, s, 2000); /* the server sees the connection go */
    run_for(e, 50);
    assert_int_equal(r->done_calls, 0);
    assert_int_equal(r->violations, 0);
}

static void test_cancel_inside_on_data(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_stream_then_wait);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e, .cancel_on_data = 1};
    start(&r, url, NULL);
    check_cancel(&r, &e, s);
    assert_int_equal(r.data_calls, 1);
    /* The canceled call's easy handle really left the multi handle: the next
     * call (which reuses it from the pool) starts and runs. */
    rec_t r2 = {.env = &e};
    start(&r2, url, NULL);
    run_until(&e, has_data, &r2, 2000);
    assert_int_equal(r2.violations, 0);
    rec_free(&r2);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

static void test_cancel_inside_on_headers(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_stream_then_wait);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e, .cancel_on_headers = 1};
    start(&r, url, NULL);
    check_cancel(&r, &e, s);
    assert_int_equal(r.headers_calls, 1);
    assert_int_equal(r.data_calls, 0);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

static void test_cancel_from_outside(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_stream_then_wait);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    run_until(&e, has_data, &r, 2000);
    r.canceled = 1;
    tg_upcall_cancel(r.call);
    check_cancel(&r, &e, s);
    env_done(&e);
    srv_stop(s);

    /* Canceled before anything happened, even before libcurl saw it. */
    env_init(&e);
    rec_t r2 = {.env = &e, .canceled = 1};
    start(&r2, "http://127.0.0.1:9/", NULL);
    tg_upcall_cancel(r2.call);
    run_for(&e, 30);
    assert_int_equal(r2.done_calls + r2.headers_calls, 0);
    env_done(&e);
    rec_free(&r);
    rec_free(&r2);
}

static void test_sequential_calls_reuse_connection(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_hello);
    char url[128];
    srv_url(s, url, sizeof(url), "/again");
    rec_t r[3];
    for (int i = 0; i < 3; i++) {
        r[i] = (rec_t){.env = &e};
        start(&r[i], url, NULL);
        run_until(&e, is_done, &r[i], 3000);
        assert_int_equal(r[i].err, 0);
        assert_string_equal(r[i].body.data, "hello");
    }
    assert_int_equal(atomic_load(&s->accepts), 1);
    assert_int_equal(atomic_load(&s->requests), 3);
    env_done(&e);
    srv_stop(s);
    for (int i = 0; i < 3; i++)
        rec_free(&r[i]);
}

/* Easy handles are pooled without a reset: each call must still go out with
 * its own method, headers, body and timeouts, nothing of the call before. */
static void test_pooled_handle_keeps_nothing(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_hello);
    char url[128];
    srv_url(s, url, sizeof(url), "/p");
    const char *hdrs[] = {"X-Api-Key: k1"};
    const tg_upcall_opts_t calls[] = {
        {.method = "POST", .headers = hdrs, .nheaders = 1, .body = "abc", .body_len = 3},
        {.method = "GET"},
        {.method = "DELETE"},
        {.method = "PUT", .body = "xy", .body_len = 2},
        {.method = "POST"},
    };
    const char *lines[] = {"POST /p HTTP/1.1\r\n", "GET /p HTTP/1.1\r\n", "DELETE /p HTTP/1.1\r\n",
                           "PUT /p HTTP/1.1\r\n", "POST /p HTTP/1.1\r\n"};
    const size_t bodies[] = {3, 0, 0, 2, 0};
    for (int i = 0; i < 5; i++) {
        rec_t r = {.env = &e};
        start(&r, url, &calls[i]);
        run_until(&e, is_done, &r, 3000);
        assert_int_equal(r.err, 0);
        assert_string_equal(r.body.data, "hello");
        pthread_mutex_lock(&s->mu);
        assert_true(strstr(s->head, lines[i]) == s->head);
        assert_int_equal(s->body_len, bodies[i]);
        if (i == 0)
            assert_non_null(strstr(s->head, "\r\nX-Api-Key: k1\r\n"));
        else
            assert_null(strstr(s->head, "X-Api-Key"));
        pthread_mutex_unlock(&s->mu);
        rec_free(&r);
    }
    assert_int_equal(atomic_load(&s->requests), 5);
    env_done(&e);
    srv_stop(s);
}

static void test_non_2xx_is_a_status(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_503);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.status, 503);
    assert_string_equal(r.body.data, "busy");
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

static void test_interim_skipped_and_no_body(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_interim_no_body);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, 0);
    assert_int_equal(r.headers_calls, 1);
    assert_int_equal(r.status, 204);
    assert_string_equal(r.xfinal, "yes");
    assert_int_equal(r.data_calls, 0);
    assert_int_equal(r.violations, 0);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

static void test_header_block_over_limit(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_huge_headers);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, TG_EUPSTREAM);
    assert_int_equal(r.headers_calls, 0);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

/* A call started from inside another call's on_data (libcurl refuses nested
 * adds, so the module must queue it). */
static void test_start_inside_callback(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_hello);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r2 = {.env = &e};
    rec_t r1 = {.env = &e, .start_on_data = &r2, .start_url = url};
    start(&r1, url, NULL);
    run_until(&e, is_done, &r1, 3000);
    run_until(&e, is_done, &r2, 3000);
    assert_int_equal(r1.err, 0);
    assert_int_equal(r2.err, 0);
    assert_string_equal(r2.body.data, "hello");
    env_done(&e);
    srv_stop(s);
    rec_free(&r1);
    rec_free(&r2);
}

static int all_have_data(void *arg)
{
    rec_t *r = arg;
    return r[0].headers_calls && r[1].data_calls && r[2].data_calls;
}

static int three_closed(void *arg)
{
    return atomic_load(&((srv_t *)arg)->peer_closed) >= 3;
}

static void test_destroy_with_calls_in_flight(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_stream_then_wait);
    srv_t *quiet = srv_start(h_silent);
    char url[128], qurl[128];
    srv_url(s, url, sizeof(url), "/");
    srv_url(quiet, qurl, sizeof(qurl), "/");
    rec_t r[4];
    for (int i = 0; i < 3; i++) {
        r[i] = (rec_t){.env = &e};
        start(&r[i], url, NULL);
    }
    r[3] = (rec_t){.env = &e};
    tg_upcall_opts_t o = {.method = "GET", .first_byte_timeout_ms = 10000};
    start(&r[3], qurl, &o); /* waits on the shared first-byte timer */
    tg_upcall_pause(r[0].call);
    run_until(&e, all_have_data, r, 3000);
    g_destroyed = 1;
    tg_upstream_destroy(e.u);
    e.u = NULL;
    env_done(&e);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].done_calls, 0);
        assert_int_equal(r[i].violations, 0);
        rec_free(&r[i]);
    }
    /* Every connection was closed by the destroy. */
    for (int k = 0; k < 100 && !three_closed(s); k++)
        usleep(10000);
    assert_true(three_closed(s));
    srv_stop(s);
    srv_stop(quiet);
}

/* Destroy from inside on_data: the module must wait until its own frames
 * have returned, and still run no further callback. */
static void test_destroy_inside_callback(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_stream_then_wait);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r1 = {.env = &e, .destroy_on_data = 1}, r2 = {.env = &e};
    start(&r2, url, NULL);
    run_until(&e, has_data, &r2, 2000);
    start(&r1, url, NULL);
    run_until(&e, has_data, &r1, 2000);
    assert_null(e.u);
    env_done(&e);
    assert_int_equal(r1.done_calls + r2.done_calls, 0);
    assert_int_equal(r1.violations + r2.violations, 0);
    srv_stop(s);
    rec_free(&r1);
    rec_free(&r2);
}

/* ---- the native client's own behaviour -------------------------------------- */

/* Answers once (keep-alive), then reads the second request and hangs up
 * without a reply: the client's reused connection dies as it sends. Any later
 * connection is answered normally. */
static void h_close_second(conn_t *c)
{
    int first = atomic_load(&c->s->accepts) == 1;
    if (read_request(c) != 1) return;
    send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
    if (!first) {
        h_hello(c);
        return;
    }
    read_request(c);
}

static void test_retry_once_on_reused_connection(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_close_second);
    char url[128];
    srv_url(s, url, sizeof(url), "/r");
    rec_t r1 = {.env = &e}, r2 = {.env = &e};
    start(&r1, url, NULL);
    run_until(&e, is_done, &r1, 3000);
    assert_int_equal(r1.err, 0);
    start(&r2, url, NULL);
    run_until(&e, is_done, &r2, 3000);
    assert_int_equal(r2.err, 0);
    assert_string_equal(r2.body.data, "hello");
    assert_int_equal(atomic_load(&s->accepts), 2);
    assert_int_equal(atomic_load(&s->requests), 3);
    env_done(&e);
    srv_stop(s);
    rec_free(&r1);
    rec_free(&r2);
}

/* A fresh connection that dies without a reply is not retried. */
static void h_close_unanswered(conn_t *c)
{
    read_request(c);
}

static void test_no_retry_on_fresh_connection(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_close_unanswered);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, TG_EUPSTREAM);
    assert_int_equal(atomic_load(&s->accepts), 1);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

/* Answers one request, then closes: the idle connection must be dropped, not
 * reused (and not need a retry). */
static void h_one_then_close(conn_t *c)
{
    if (read_request(c) != 1) return;
    send_str(c, "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello");
}

static void test_idle_close_noticed(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_one_then_close);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r1 = {.env = &e}, r2 = {.env = &e};
    start(&r1, url, NULL);
    run_until(&e, is_done, &r1, 3000);
    run_for(&e, 100); /* the server's FIN arrives while the connection is idle */
    start(&r2, url, NULL);
    run_until(&e, is_done, &r2, 3000);
    assert_int_equal(r1.err, 0);
    assert_int_equal(r2.err, 0);
    assert_int_equal(atomic_load(&s->accepts), 2);
    assert_int_equal(atomic_load(&s->requests), 2);
    env_done(&e);
    srv_stop(s);
    rec_free(&r1);
    rec_free(&r2);
}

static void h_conn_close(conn_t *c)
{
    while (read_request(c) == 1)
        send_str(c, "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok");
}

/* A body that ends with the connection, and a Connection: close answer:
 * both complete, neither connection is reused. */
static void h_close_delimited(conn_t *c)
{
    if (read_request(c) != 1) return;
    send_str(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil-");
    usleep(20000);
    send_str(c, "close");
}

static void check_not_reused(handler_fn h, const char *want)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    for (int i = 0; i < 2; i++) {
        rec_t r = {.env = &e};
        start(&r, url, NULL);
        run_until(&e, is_done, &r, 3000);
        assert_int_equal(r.err, 0);
        assert_int_equal(r.status, 200);
        assert_string_equal(r.body.data, want);
        rec_free(&r);
    }
    assert_int_equal(atomic_load(&s->accepts), 2);
    env_done(&e);
    srv_stop(s);
}

static void test_close_delimited_body(void **state)
{
    check_not_reused(h_close_delimited, "until-close");
}

static void test_connection_close_not_reused(void **state)
{
    check_not_reused(h_conn_close, "ok");
}

/* The Host header as libcurl sends it (SigV4 signs it): the port only when
 * not 80; a POST without a body says Content-Length: 0; no Expect. */
static void test_host_header_and_empty_post(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_hello);
    char url[128], want[64];
    srv_url(s, url, sizeof(url), "/h?x=1");
    rec_t r = {.env = &e};
    tg_upcall_opts_t o = {.method = "POST"};
    start(&r, url, &o);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, 0);
    snprintf(want, sizeof(want), "\r\nHost: 127.0.0.1:%d\r\n", s->port);
    assert_true(strstr(s->head, "POST /h?x=1 HTTP/1.1\r\n") == s->head);
    assert_non_null(strstr(s->head, want));
    assert_non_null(strstr(s->head, "\r\nContent-Length: 0\r\n"));
    assert_null(strcasestr(s->head, "\r\nExpect:"));
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

static void test_host_header_default_port(void **state)
{
    /* Port 80 needs privileges; without them this part cannot run. */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in a = {
        .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK), .sin_port = htons(80)};
    if (bind(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close(fd);
        skip();
    }
    close(fd);
    srv_t *s = calloc(1, sizeof(*s));
    s->handler = h_hello;
    pthread_mutex_init(&s->mu, NULL);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    setsockopt(s->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 16), 0);
    s->port = 80;
    pthread_create(&s->thr, NULL, accept_main, s);
    env_t e;
    env_init(&e);
    const char *urls[] = {"http://127.0.0.1/a", "http://127.0.0.1:80/b"};
    for (int i = 0; i < 2; i++) {
        rec_t r = {.env = &e};
        start(&r, urls[i], NULL);
        run_until(&e, is_done, &r, 3000);
        assert_int_equal(r.err, 0);
        assert_non_null(strstr(s->head, "\r\nHost: 127.0.0.1\r\n"));
        rec_free(&r);
    }
    env_done(&e);
    srv_stop(s);
}

/* A name, resolved off the loop; localhost may come back as ::1 first, where
 * nothing listens: the next address is tried. */
static void test_localhost_resolved(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_hello);
    char url[128], want[64];
    snprintf(url, sizeof(url), "http://localhost:%d/n", s->port);
    rec_t r = {.env = &e};
    start(&r, url, NULL);
    run_until(&e, is_done, &r, 3000);
    assert_int_equal(r.err, 0);
    assert_string_equal(r.body.data, "hello");
    snprintf(want, sizeof(want), "\r\nHost: localhost:%d\r\n", s->port);
    assert_non_null(strstr(s->head, want));
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
}

/* A name is looked up once for many new connections (each answer closes
 * its connection); when none of its addresses can be reached, the next call
 * looks it up again. */
static void test_lookup_reused(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_conn_close);
    char url[128];
    snprintf(url, sizeof(url), "http://localhost:%d/", s->port);
    for (int i = 0; i < 3; i++) {
        rec_t r = {.env = &e};
        start(&r, url, NULL);
        run_until(&e, is_done, &r, 3000);
        assert_int_equal(r.err, 0);
        assert_string_equal(r.body.data, "ok");
        rec_free(&r);
    }
    assert_int_equal(atomic_load(&s->accepts), 3);
    assert_int_equal(tg_upstream_lookups(e.u), 1);

    /* A port nothing listens on: every address refused, so the name's
     * addresses are dropped, and looked up again by the next call. */
    snprintf(url, sizeof(url), "http://localhost:%d/", closed_port());
    for (int i = 0; i < 2; i++) {
        rec_t r = {.env = &e};
        start(&r, url, NULL);
        run_until(&e, is_done, &r, 3000);
        assert_int_equal(r.err, TG_ECONNECT);
        rec_free(&r);
    }
    assert_int_equal(tg_upstream_lookups(e.u), 3);
    env_done(&e);
    srv_stop(s);
}

/* A call started from on_done gets the connection the ended call just
 * returned to the pool. */
static void test_start_from_on_done(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_hello);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r3 = {.env = &e};
    rec_t r2 = {.env = &e, .start_on_done = &r3, .start_url = url};
    rec_t r1 = {.env = &e, .start_on_done = &r2, .start_url = url};
    start(&r1, url, NULL);
    run_until(&e, is_done, &r3, 3000);
    assert_int_equal(r1.err + r2.err + r3.err, 0);
    assert_string_equal(r3.body.data, "hello");
    assert_int_equal(r1.violations + r2.violations + r3.violations, 0);
    assert_int_equal(atomic_load(&s->accepts), 1);
    assert_int_equal(atomic_load(&s->requests), 3);
    env_done(&e);
    srv_stop(s);
    rec_free(&r1);
    rec_free(&r2);
    rec_free(&r3);
}

/* Connect timeout: a listener whose backlog is full drops our SYN. */
static void test_connect_timeout(void **state)
{
    int lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t alen = sizeof(a);
    assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(lfd, 0), 0);
    getsockname(lfd, (struct sockaddr *)&a, &alen);
    int fill[8], nfill = 0;
    for (; nfill < 8; nfill++) { /* until a connect no longer completes */
        fill[nfill] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        connect(fill[nfill], (struct sockaddr *)&a, sizeof(a));
        struct pollfd p = {.fd = fill[nfill], .events = POLLOUT};
        if (poll(&p, 1, 100) == 0) {
            nfill++;
            break;
        }
    }
    char url[128];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d/", ntohs(a.sin_port));
    env_t e;
    env_init(&e);
    rec_t r = {.env = &e};
    tg_upcall_opts_t o = {.method = "GET", .connect_timeout_ms = 200};
    uint64_t t0 = tg_now_ns();
    start(&r, url, &o);
    run_until(&e, is_done, &r, 3000);
    uint64_t ms = (tg_now_ns() - t0) / 1000000;
    assert_int_equal(r.err, TG_ETIMEDOUT);
    assert_true(ms >= 180 && ms < 1500);
    assert_int_equal(r.headers_calls, 0);
    env_done(&e);
    for (int i = 0; i < nfill; i++)
        close(fill[i]);
    close(lfd);
    rec_free(&r);
}

/* Cancel inside on_data, then a new call: the canceled call's connection was
 * closed (mid-response), so the new one opens another. */
static void test_cancel_mid_response_not_pooled(void **state)
{
    env_t e;
    env_init(&e);
    srv_t *s = srv_start(h_big_chunked);
    char url[128];
    srv_url(s, url, sizeof(url), "/");
    rec_t r = {.env = &e, .cancel_on_data = 1};
    start(&r, url, NULL);
    run_until(&e, has_data, &r, 2000);
    run_until(&e, peer_closed, s, 2000);
    rec_t r2 = {.env = &e};
    start(&r2, url, NULL);
    run_until(&e, is_done, &r2, 3000);
    assert_int_equal(r2.err, 0);
    assert_int_equal(r2.body.len, BIG_BODY);
    assert_int_equal(atomic_load(&s->accepts), 2);
    assert_int_equal(r.done_calls, 0);
    env_done(&e);
    srv_stop(s);
    rec_free(&r);
    rec_free(&r2);
}

static int setup_all(void **state)
{
    return tg_upstream_global_init();
}

static int teardown_all(void **state)
{
    tg_upstream_global_cleanup();
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get_200_headers_and_body),
        cmocka_unit_test(test_post_body_received_exactly),
        cmocka_unit_test(test_chunked_stream_in_pieces),
        cmocka_unit_test(test_pause_resume_exactly_once_in_order),
        cmocka_unit_test(test_pause_with_whole_body_buffered),
        cmocka_unit_test(test_external_pause_before_data),
        cmocka_unit_test(test_connection_refused),
        cmocka_unit_test(test_first_byte_timeout),
        cmocka_unit_test(test_total_timeout),
        cmocka_unit_test(test_cancel_inside_on_data),
        cmocka_unit_test(test_cancel_inside_on_headers),
        cmocka_unit_test(test_cancel_from_outside),
        cmocka_unit_test(test_sequential_calls_reuse_connection),
        cmocka_unit_test(test_pooled_handle_keeps_nothing),
        cmocka_unit_test(test_non_2xx_is_a_status),
        cmocka_unit_test(test_interim_skipped_and_no_body),
        cmocka_unit_test(test_header_block_over_limit),
        cmocka_unit_test(test_start_inside_callback),
        cmocka_unit_test(test_destroy_with_calls_in_flight),
        cmocka_unit_test(test_destroy_inside_callback),
        cmocka_unit_test(test_retry_once_on_reused_connection),
        cmocka_unit_test(test_no_retry_on_fresh_connection),
        cmocka_unit_test(test_idle_close_noticed),
        cmocka_unit_test(test_close_delimited_body),
        cmocka_unit_test(test_connection_close_not_reused),
        cmocka_unit_test(test_host_header_and_empty_post),
        cmocka_unit_test(test_localhost_resolved),
        cmocka_unit_test(test_start_from_on_done),
    };
    /* Only the native client: pooling details, Host for port 80, timeouts
     * libcurl is already trusted for. */
    const struct CMUnitTest native_only[] = {
        cmocka_unit_test(test_host_header_default_port),
        cmocka_unit_test(test_connect_timeout),
        cmocka_unit_test(test_cancel_mid_response_not_pooled),
        cmocka_unit_test(test_lookup_reused),
    };
    signal(SIGPIPE, SIG_IGN); /* as the gateway: a write to a closed socket is an error */
    unsetenv("TG_UPSTREAM_CURL");
    unsetenv("http_proxy");
    unsetenv("HTTP_PROXY");
    unsetenv("all_proxy");
    unsetenv("ALL_PROXY");
    int failed = _cmocka_run_group_tests("native", tests, sizeof(tests) / sizeof(tests[0]),
                                         setup_all, teardown_all);
    failed += _cmocka_run_group_tests("native_only", native_only,
                                      sizeof(native_only) / sizeof(native_only[0]), setup_all,
                                      teardown_all);
    setenv("TG_UPSTREAM_CURL", "1", 1);
    failed += _cmocka_run_group_tests("curl", tests, sizeof(tests) / sizeof(tests[0]), setup_all,
                                      teardown_all);
    return failed;
}

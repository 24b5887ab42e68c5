/* upstream.c - libcurl multi driven by a worker's libuv loop.
 *
 * Plain http:// calls go to the native HTTP/1.1 client (h1.c) instead when no
 * proxy variable is set; tg_upcall_start picks, and every other entry point
 * follows the call's first byte (TG_UPCALL_NATIVE). What follows is the
 * libcurl side, which serves https://, proxies, and TG_UPSTREAM_CURL=1.
 *
 * libcurl tells us which sockets to watch (CURLMOPT_SOCKETFUNCTION: one
 * uv_poll_t per socket) and when to wake it (CURLMOPT_TIMERFUNCTION: one
 * uv_timer_t); we hand readiness back with curl_multi_socket_action and then
 * collect finished transfers from curl_multi_info_read. One tg_upstream_t
 * per loop, so nothing here is shared between threads.
 *
 * The hard part is lifetime. libcurl forbids removing an easy handle (or
 * adding one) while it is running one of its callbacks, yet our callers may
 * cancel, start, pause or resume calls from inside on_headers/on_data. So:
 *  - u->depth counts how deep we are inside libcurl. A cancel at depth > 0
 *    only marks the call (its curl callbacks then fail the transfer) and
 *    queues it on u->zombies; settle() removes and frees it once libcurl has
 *    returned. A start at depth > 0 is queued on u->to_add the same way.
 *  - Pause is lazy: on_data returning 1 (or tg_upcall_pause) sets c->paused,
 *    and the next body write returns CURL_WRITEFUNC_PAUSE, so libcurl keeps
 *    those bytes and redelivers them after unpausing: nothing is consumed
 *    twice or dropped, and curl_easy_pause is never called from a callback.
 *  - Resume never calls back synchronously: it queues the call and a
 *    zero-delay timer unpauses it (libcurl writes the held bytes from inside
 *    curl_easy_pause, so that runs at depth > 0 like any other delivery).
 *  - u->entered counts our uv callbacks on the stack; tg_upstream_destroy
 *    called from a user callback waits until the outermost one returns.
 * A call struct is freed synchronously (the first-byte deadlines share one
 * timer per tg_upstream_t, so a call owns no uv handle); only the uv handles
 * of the tg_upstream_t itself are freed from close callbacks. */
#include "upstream/upstream.h"

#include "upstream/h1.h"

#include <assert.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <curl/curl.h>

#if LIBCURL_VERSION_NUM < 0x075500
#error "libcurl >= 7.85 required (CURLOPT_PROTOCOLS_STR, CURLOPT_PREREQFUNCTION)"
#endif
#ifndef CURL_WRITEFUNC_ERROR
#define CURL_WRITEFUNC_ERROR 0xFFFFFFFF
#endif

#define MAX_HEADER_BYTES (64 * 1024) /* one response's header block */
#define RECV_BUFFER      16384L      /* libcurl's minimum; per transfer */
#define MAX_CONNECTS     1024L       /* idle connections kept for reuse */
#define EASY_POOL        32          /* reset easy handles kept for reuse */
#define STACK_HEADERS    64          /* headers parsed without malloc */

/* ---- types ---------------------------------------------------------------- */

typedef struct {
    uv_poll_t poll;
    curl_socket_t fd;
    tg_upstream_t *u;
    int events;     /* UV_* the poll is started with; 0 when stopped */
    int idle;       /* libcurl REMOVEd it (a kept connection) but it is still watched */
    tg_link_t link; /* u->socks */
} sock_t;

struct tg_upcall {
    unsigned char native; /* 0: a libcurl call (see TG_UPCALL_NATIVE) */
    tg_upstream_t *u;
    CURL *easy;
    struct curl_slist *hdrs; /* nodes and strings in this struct's tail: no free */
    tg_upcall_cbs_t cbs;
    void *ud;
    tg_buf_t head; /* header lines of the response being received */
    int status;    /* 0 until a status line is seen (again after a 1xx) */
    uint32_t fb_timeout_ms;
    uint64_t fb_deadline; /* in uv_now() ms, while on u->fb_wait */
    uint64_t start_ns;
    uint64_t ttfb_ns;
    unsigned in_multi : 1;     /* added to u->multi */
    unsigned got_byte : 1;     /* a response byte arrived; ttfb_ns is set */
    unsigned headers_done : 1; /* on_headers has run */
    unsigned paused : 1;       /* the caller asked for no more on_data */
    unsigned curl_paused : 1;  /* libcurl holds bytes for us (we returned PAUSE) */
    unsigned canceled : 1;     /* no callback may run any more */
    unsigned done : 1;         /* on_done is running */
    tg_link_t all;             /* u->calls: every call not yet freed */
    tg_link_t fb;              /* u->fb_wait, sorted by fb_deadline */
    tg_link_t aux;             /* exactly one of u->to_add, u->to_resume, u->zombies, or none */
    /* The request's header list, built in place (one allocation with the
     * call instead of two per header): nheaders + 1 nodes, then the lines. */
    max_align_t tail[];
};

struct tg_upstream {
    uv_loop_t *loop;
    CURLM *multi;
    uv_timer_t timer;    /* libcurl's timeout */
    uv_timer_t fb_timer; /* the earliest first-byte deadline */
    uv_timer_t kick;     /* runs queued resumes */
    int depth;           /* > 0 while inside libcurl: its callbacks may be on the stack */
    int entered;         /* our uv callbacks on the stack */
    int handles;         /* open or closing uv handles; u is freed when 0 after destroy */
    int destroy_pending; /* destroy asked from a callback; done on the way out */
    int destroying;      /* handles are closing; freed in the last close callback */
    tg_link_t calls, fb_wait, to_add, to_resume, zombies, socks;
    /* Poll handles by fd number. A connection libcurl keeps for reuse is
     * REMOVEd after each transfer and added back for the next one: its handle
     * is only stopped in between, not closed and re-created (which costs an
     * ioctl, epoll_ctl calls and a malloc per call). A stopped handle holds no
     * registration, so one whose fd libcurl closed is simply restarted when
     * that fd number comes back as a new socket. */
    sock_t **byfd;
    uint8_t *conn; /* by fd: 1 while it is a connection libcurl opened through us */
    size_t nbyfd;
    CURL *pool[EASY_POOL];
    int npool;
    int no_proxy_env; /* no proxy variables set at create: libcurl need not look */
    tg_h1_t *h1;      /* the native client for http:// URLs; NULL: libcurl for all */
};

static void settle(tg_upstream_t *u);
static void do_destroy(tg_upstream_t *u);

/* ---- entering and leaving the loop's callbacks ----------------------------- */

static void enter(tg_upstream_t *u)
{
    u->entered++;
}

static void leave(tg_upstream_t *u)
{
    if (--u->entered == 0 && u->destroy_pending) do_destroy(u);
}

static void handle_closed(tg_upstream_t *u)
{
    if (--u->handles == 0 && u->destroying) free(u);
}

/* ---- calls: release ------------------------------------------------------ */

/* Takes c out of libcurl and every list. Not from inside libcurl. */
static void detach(tg_upcall_t *c)
{
    tg_upstream_t *u = c->u;
    tg_link_del(&c->all);
    tg_link_del(&c->fb);
    tg_link_del(&c->aux);
    if (c->in_multi) {
        assert(u->depth == 0);
        curl_multi_remove_handle(u->multi, c->easy);
        c->in_multi = 0;
    }
}

static void call_free(tg_upcall_t *c)
{
    tg_upstream_t *u = c->u;
    tg_buf_free(&c->head);
    if (c->easy) {
        /* Pooled as it is, not reset: its fixed options stay set (see
         * easy_get), and setup() sets every per-call one again. A reset
         * frees and re-creates them, a visible share of a call. */
        if (u->npool < EASY_POOL && !u->destroy_pending)
            u->pool[u->npool++] = c->easy;
        else
            curl_easy_cleanup(c->easy);
    }
    free(c);
}

static int map_result(CURLcode rc)
{
    switch (rc) {
    case CURLE_OK:
        return 0;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_COULDNT_RESOLVE_PROXY:
        return TG_ECONNECT;
    case CURLE_OPERATION_TIMEDOUT:
        return TG_ETIMEDOUT; /* connect or total */
    default:
        return TG_EUPSTREAM;
    }
}

/* Ends c with on_done(err) and frees it. Not from inside libcurl. */
static void finish(tg_upcall_t *c, int err)
{
    /* A transfer libcurl calls complete without a response head (it should
     * not happen for HTTP) would leave the caller with no status. */
    if (err == 0 && !c->headers_done) err = TG_EUPSTREAM;
    detach(c);
    c->done = 1;
    c->cbs.on_done(c, err, c->ud);
    call_free(c);
}

/* ---- first-byte deadlines: one timer, calls sorted by deadline ------------ */

static void on_fb_timer(uv_timer_t *t)
{
    tg_upstream_t *u = t->data;
    uint64_t now = uv_now(u->loop);
    enter(u);
    while (!tg_link_empty(&u->fb_wait) && !u->destroy_pending) {
        tg_upcall_t *c = tg_container_of(u->fb_wait.next, tg_upcall_t, fb);
        if (c->fb_deadline > now) {
            uv_timer_start(&u->fb_timer, on_fb_timer, c->fb_deadline - now, 0);
            break;
        }
        finish(c, TG_ETIMEDOUT);
    }
    leave(u);
}

/* Starts (or restarts, when libcurl retries on a fresh connection) c's wait
 * for its first response byte. Deadlines are inserted from the tail: calls
 * with equal timeouts arrive in deadline order, so this is O(1) for them. */
static void fb_arm(tg_upcall_t *c)
{
    tg_upstream_t *u = c->u;
    tg_link_del(&c->fb);
    c->fb_deadline = uv_now(u->loop) + c->fb_timeout_ms;
    tg_link_t *at = u->fb_wait.prev;
    while (at != &u->fb_wait && tg_container_of(at, tg_upcall_t, fb)->fb_deadline > c->fb_deadline)
        at = at->prev;
    tg_link_insert_after(at, &c->fb);
    if (u->fb_wait.next == &c->fb) uv_timer_start(&u->fb_timer, on_fb_timer, c->fb_timeout_ms, 0);
}

/* ---- libcurl's callbacks for one call ----------------------------------- */

/* The connection is ready and the request is about to go: the first-byte
 * clock starts here, so connecting is covered by connect_timeout_ms only. */
static int on_curl_prereq(void *ud, char *primary_ip, char *local_ip, int primary_port,
                          int local_port)
{
    tg_upcall_t *c = ud;
    if (c->canceled) return CURL_PREREQFUNC_ABORT;
    if (c->fb_timeout_ms && !c->got_byte) fb_arm(c);
    return CURL_PREREQFUNC_OK;
}

static int parse_status(const char *p, size_t n)
{
    const char *sp = memchr(p, ' ', n);
    if (!sp || (size_t)(p + n - sp) < 4) return 0;
    int s = 0;
    for (int i = 1; i <= 3; i++) {
        if (sp[i] < '0' || sp[i] > '9') return 0;
        s = s * 10 + (sp[i] - '0');
    }
    return s;
}

static int is_ows(char ch)
{
    return ch == ' ' || ch == '\t';
}

/* Splits c->head in place into NUL-terminated names and trimmed values and
 * calls on_headers. Continuation (obs-fold) lines are dropped. */
static int deliver_headers(tg_upcall_t *c)
{
    tg_header_t stack[STACK_HEADERS], *h = stack;
    stack[0] = (tg_header_t){0}; /* only the first n are read; this tells the compiler */
    char *b = c->head.data;
    size_t len = c->head.len, max = 0, n = 0;
    for (size_t i = 0; i < len; i++)
        max += b[i] == '\n';
    if (max > STACK_HEADERS) {
        h = malloc(max * sizeof(*h));
        if (!h) return TG_ENOMEM;
    }
    for (size_t i = 0; i < len;) {
        char *ls = b + i;
        char *le = memchr(ls, '\n', len - i);
        le = le ? le : b + len;
        i = (size_t)(le - b) + 1;
        char *colon = memchr(ls, ':', (size_t)(le - ls));
        if (!colon || colon == ls || is_ows(*ls)) continue;
        char *ne = colon, *vs = colon + 1, *ve = le;
        while (ne > ls && is_ows(ne[-1]))
            ne--;
        while (vs < ve && is_ows(*vs))
            vs++;
        while (ve > vs && (is_ows(ve[-1]) || ve[-1] == '\r'))
            ve--;
        *ne = '\0';
        *ve = '\0';
        h[n++] = (tg_header_t){ls, (size_t)(ne - ls), vs, (size_t)(ve - vs)};
    }
    c->cbs.on_headers(c, c->status, h, n, c->ud);
    if (h != stack) free(h);
    return 0;
}

/* One header line at a time, status line first, then an empty line; again for
 * each 1xx interim response, and once more for chunked trailers. */
static size_t on_curl_header(char *p, size_t size, size_t nmemb, void *ud)
{
    tg_upcall_t *c = ud;
    size_t len = size * nmemb;
    if (c->canceled) return CURL_WRITEFUNC_ERROR;
    if (!c->got_byte) {
        c->got_byte = 1;
        c->ttfb_ns = tg_now_ns() - c->start_ns;
        tg_link_del(&c->fb); /* the shared timer just finds nothing due */
    }
    if (c->headers_done) return len; /* trailers: not part of the head */
    if (c->status == 0) {
        c->status = parse_status(p, len);
        tg_buf_reset(&c->head);
        /* One allocation for a typical head; under 1 KiB, so glibc serves it
         * from its per-thread cache (a larger request first consolidates the
         * fast bins, which showed in profiles). */
        (void)tg_buf_reserve(&c->head, 960);
        return c->status >= 100 ? len : CURL_WRITEFUNC_ERROR;
    }
    if (len > 0 && (p[0] == '\r' || p[0] == '\n')) {
        if (c->status < 200) { /* interim: the final status line follows */
            c->status = 0;
            return len;
        }
        c->headers_done = 1;
        int rc = deliver_headers(c);
        tg_buf_free(&c->head);
        return rc || c->canceled ? CURL_WRITEFUNC_ERROR : len;
    }
    /* Over MAX_HEADER_BYTES the transfer fails (CURLE_WRITE_ERROR -> TG_EUPSTREAM). */
    return tg_buf_append(&c->head, p, len) ? CURL_WRITEFUNC_ERROR : len;
}

static size_t on_curl_body(char *p, size_t size, size_t nmemb, void *ud)
{
    tg_upcall_t *c = ud;
    size_t len = size * nmemb;
    if (c->canceled || !c->headers_done) return CURL_WRITEFUNC_ERROR;
    if (c->paused) {
        /* libcurl keeps these bytes and writes them again after CURLPAUSE_CONT. */
        c->curl_paused = 1;
        return CURL_WRITEFUNC_PAUSE;
    }
    if (len == 0) return 0;
    int r = c->cbs.on_data(c, p, len, c->ud);
    if (c->canceled) return CURL_WRITEFUNC_ERROR;
    if (r) c->paused = 1;
    return len; /* consumed either way */
}

/* ---- driving the multi handle from the loop ------------------------------ */

/* Runs after every entry into libcurl, once it has returned: frees calls
 * canceled from inside it, adds calls started from inside it, and ends the
 * transfers it finished. */
static void settle(tg_upstream_t *u)
{
    if (u->depth || u->destroy_pending) return;
    while (!tg_link_empty(&u->zombies)) {
        tg_upcall_t *c = tg_container_of(u->zombies.next, tg_upcall_t, aux);
        detach(c);
        call_free(c);
    }
    while (!tg_link_empty(&u->to_add) && !u->destroy_pending) {
        tg_upcall_t *c = tg_container_of(u->to_add.next, tg_upcall_t, aux);
        tg_link_del(&c->aux);
        if (curl_multi_add_handle(u->multi, c->easy) == CURLM_OK)
            c->in_multi = 1;
        else
            finish(c, TG_EUPSTREAM);
    }
    CURLMsg *m;
    int left;
    while (!u->destroy_pending && (m = curl_multi_info_read(u->multi, &left))) {
        if (m->msg != CURLMSG_DONE) continue;
        CURLcode rc = m->data.result; /* m dies with the handle's removal */
        char *priv = NULL;
        curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, &priv);
        tg_upcall_t *c = (tg_upcall_t *)priv;
        if (c->canceled) { /* a zombie whose removal raced its end */
            detach(c);
            call_free(c);
            continue;
        }
        if (rc != CURLE_OK) tg_debug("upstream: %s", curl_easy_strerror(rc));
        finish(c, map_result(rc));
    }
}

static void drive(tg_upstream_t *u, curl_socket_t fd, int flags)
{
    int running;
    u->depth++;
    curl_multi_socket_action(u->multi, fd, flags, &running);
    u->depth--;
    settle(u);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    sock_t *s = h->data;
    tg_upstream_t *u = s->u;
    if (s->idle) {
        /* A kept connection stirred between transfers (the server closed it,
         * most likely): libcurl is not watching it, so stop; its liveness
         * check before reuse finds it dead. */
        uv_poll_stop(&s->poll);
        s->events = 0;
        return;
    }
    int flags = 0;
    if (status < 0) flags = CURL_CSELECT_ERR;
    if (events & UV_READABLE) flags |= CURL_CSELECT_IN;
    if (events & UV_WRITABLE) flags |= CURL_CSELECT_OUT;
    enter(u);
    drive(u, s->fd, flags); /* s may be closing after this */
    leave(u);
}

static void on_timer(uv_timer_t *t)
{
    tg_upstream_t *u = t->data;
    enter(u);
    drive(u, CURL_SOCKET_TIMEOUT, 0);
    leave(u);
}

static void on_sock_closed(uv_handle_t *h)
{
    sock_t *s = h->data;
    tg_upstream_t *u = s->u;
    free(s);
    handle_closed(u);
}

static void sock_close(sock_t *s)
{
    tg_upstream_t *u = s->u;
    if ((size_t)s->fd < u->nbyfd && u->byfd[s->fd] == s) u->byfd[s->fd] = NULL;
    tg_link_del(&s->link);
    uv_close((uv_handle_t *)&s->poll, on_sock_closed);
}

static int grow_fds(tg_upstream_t *u, size_t fd)
{
    size_t n = u->nbyfd ? u->nbyfd : 64;
    while (n <= fd)
        n *= 2;
    sock_t **a = realloc(u->byfd, n * sizeof(*a));
    if (!a) return TG_ENOMEM;
    u->byfd = a;
    uint8_t *b = realloc(u->conn, n);
    if (!b) return TG_ENOMEM;
    u->conn = b;
    memset(a + u->nbyfd, 0, (n - u->nbyfd) * sizeof(*a));
    memset(b + u->nbyfd, 0, n - u->nbyfd);
    u->nbyfd = n;
    return 0;
}

/* Connection sockets are opened and closed through these two, so a kept
 * handle never outlives its fd (other sockets libcurl reports, such as a
 * resolver's wake-up pair, are closed by libcurl itself: their handles are
 * closed at REMOVE as before). */
static curl_socket_t on_curl_open(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    tg_upstream_t *u = clientp;
    curl_socket_t fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    if (fd < 0) return CURL_SOCKET_BAD;
    if ((size_t)fd >= u->nbyfd && grow_fds(u, (size_t)fd)) {
        close(fd);
        return CURL_SOCKET_BAD;
    }
    u->conn[fd] = 1;
    return fd;
}

static int on_curl_close(void *clientp, curl_socket_t fd)
{
    tg_upstream_t *u = clientp;
    if (fd >= 0 && (size_t)fd < u->nbyfd) {
        u->conn[fd] = 0;
        if (u->byfd[fd]) sock_close(u->byfd[fd]);
    }
    return close(fd);
}

/* The handle kept for fd, or a new one. */
static sock_t *sock_for(tg_upstream_t *u, curl_socket_t fd)
{
    if (fd < 0) return NULL;
    if ((size_t)fd < u->nbyfd && u->byfd[fd]) return u->byfd[fd];
    if ((size_t)fd >= u->nbyfd) {
        size_t n = u->nbyfd ? u->nbyfd : 64;
        while (n <= (size_t)fd)
            n *= 2;
        if (grow_fds(u, (size_t)fd)) return NULL;
    }
    sock_t *s = malloc(sizeof(*s));
    if (!s) return NULL;
    if (uv_poll_init_socket(u->loop, &s->poll, fd) != 0) {
        free(s);
        return NULL;
    }
    s->poll.data = s;
    s->fd = fd;
    s->u = u;
    s->events = 0;
    s->idle = 0;
    u->handles++;
    tg_link_push(&u->socks, &s->link);
    u->byfd[fd] = s;
    return s;
}

static int on_curl_socket(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
    tg_upstream_t *u = userp;
    sock_t *s = socketp;
    if (what == CURL_POLL_REMOVE) {
        /* libcurl has not closed fd yet, so stopping the poll here is safe;
         * the handle stays in u->byfd for the connection's next transfer.
         * A kept connection watched for reading only stays registered (idle):
         * its next transfer watches the same, and each uv_poll_stop/start
         * pair costs two or three epoll_ctl calls per call otherwise. */
        if (s) {
            curl_multi_assign(u->multi, fd, NULL);
            if ((size_t)fd < u->nbyfd && u->conn[fd]) {
                if (s->events == UV_READABLE) {
                    s->idle = 1;
                } else {
                    uv_poll_stop(&s->poll);
                    s->events = 0;
                }
            } else {
                sock_close(s);
            }
        }
        return 0;
    }
    if (!s) {
        s = sock_for(u, fd);
        if (!s) return -1;
        curl_multi_assign(u->multi, fd, s);
    }
    int events = 0;
    if (what & CURL_POLL_IN) events |= UV_READABLE;
    if (what & CURL_POLL_OUT) events |= UV_WRITABLE;
    s->idle = 0;
    if (events == s->events) return 0; /* uv_poll_start would re-register it */
    s->events = uv_poll_start(&s->poll, events, on_poll) == 0 ? events : 0;
    return s->events ? 0 : -1;
}

static int on_curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    tg_upstream_t *u = userp;
    if (u->destroying) return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&u->timer);
    else /* even 0: libcurl must not be re-entered from this callback */
        uv_timer_start(&u->timer, on_timer, (uint64_t)timeout_ms, 0);
    return 0;
}

/* Unpauses the calls resumed since the last run. libcurl writes the bytes it
 * held from inside curl_easy_pause, hence the depth count around it. */
static void on_kick(uv_timer_t *t)
{
    tg_upstream_t *u = t->data;
    tg_link_t list;
    enter(u);
    /* Take the current queue: a call resumed from a callback below waits for
     * the next run, so this loop always ends. */
    tg_link_take(&list, &u->to_resume);
    while (!tg_link_empty(&list) && !u->destroy_pending) {
        tg_upcall_t *c = tg_container_of(list.next, tg_upcall_t, aux);
        tg_link_del(&c->aux);
        if (c->paused || !c->curl_paused) continue; /* paused again meanwhile */
        c->curl_paused = 0;
        u->depth++;
        curl_easy_pause(c->easy, CURLPAUSE_CONT);
        u->depth--;
    }
    while (!tg_link_empty(&list))
        tg_link_del(list.next); /* destroy: drop the rest */
    if (!u->destroy_pending) drive(u, CURL_SOCKET_TIMEOUT, 0);
    leave(u);
}

/* ---- public API ---------------------------------------------------------- */

int tg_upstream_global_init(void)
{
    return curl_global_init(CURL_GLOBAL_DEFAULT) == CURLE_OK ? 0 : TG_EIO;
}

void tg_upstream_global_cleanup(void)
{
    curl_global_cleanup();
}

int tg_upstream_create(tg_upstream_t **out, uv_loop_t *loop)
{
    tg_upstream_t *u = calloc(1, sizeof(*u));
    if (!u) return TG_ENOMEM;
    u->multi = curl_multi_init();
    if (!u->multi) {
        free(u);
        return TG_ENOMEM;
    }
    u->loop = loop;
    /* libcurl reads these (getenv, one by one) for every transfer; when none
     * is set, CURLOPT_PROXY "" says so once (same result, no lookups). */
    static const char *const proxy_env[] = {"http_proxy", "https_proxy", "HTTPS_PROXY", "all_proxy",
                                            "ALL_PROXY",  "no_proxy",    "NO_PROXY"};
    u->no_proxy_env = 1;
    for (size_t i = 0; i < sizeof(proxy_env) / sizeof(proxy_env[0]); i++)
        if (getenv(proxy_env[i])) u->no_proxy_env = 0;
    /* The native client speaks to the origin only: with any proxy variable
     * set (HTTP_PROXY too, which libcurl ignores), every call goes through
     * libcurl as before. TG_UPSTREAM_CURL=1 forces libcurl (tests, fallback). */
    const char *force = getenv("TG_UPSTREAM_CURL");
    int forced = force && *force && strcmp(force, "0");
    if (u->no_proxy_env && !getenv("HTTP_PROXY") && !forced) {
        if (tg_h1_create(&u->h1, loop) != 0) {
            curl_multi_cleanup(u->multi);
            free(u);
            return TG_ENOMEM;
        }
    } else {
        static atomic_flag said = ATOMIC_FLAG_INIT; /* once, not once per worker */
        if (!atomic_flag_test_and_set(&said))
            tg_info("upstream: http:// calls go through libcurl (%s)",
                    forced ? "TG_UPSTREAM_CURL is set" : "a proxy variable is set");
    }
    tg_link_init(&u->calls);
    tg_link_init(&u->fb_wait);
    tg_link_init(&u->to_add);
    tg_link_init(&u->to_resume);
    tg_link_init(&u->zombies);
    tg_link_init(&u->socks);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket);
    curl_multi_setopt(u->multi, CURLMOPT_SOCKETDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer);
    curl_multi_setopt(u->multi, CURLMOPT_TIMERDATA, u);
    curl_multi_setopt(u->multi, CURLMOPT_MAXCONNECTS, MAX_CONNECTS);
    uv_timer_init(loop, &u->timer);
    uv_timer_init(loop, &u->fb_timer);
    uv_timer_init(loop, &u->kick);
    u->timer.data = u->fb_timer.data = u->kick.data = u;
    u->handles = 3;
    *out = u;
    return 0;
}

static void on_timer_closed(uv_handle_t *h)
{
    handle_closed(h->data);
}

static void do_destroy(tg_upstream_t *u)
{
    while (!tg_link_empty(&u->calls)) {
        tg_upcall_t *c = tg_container_of(u->calls.next, tg_upcall_t, all);
        detach(c);
        call_free(c);
    }
    while (u->npool)
        curl_easy_cleanup(u->pool[--u->npool]);
    u->destroying = 1;
    curl_multi_cleanup(u->multi); /* closes pooled connections; may remove sockets */
    u->multi = NULL;
    while (!tg_link_empty(&u->socks))
        sock_close(tg_container_of(u->socks.next, sock_t, link));
    free(u->byfd);
    free(u->conn);
    u->byfd = NULL;
    u->conn = NULL;
    u->nbyfd = 0;
    uv_close((uv_handle_t *)&u->timer, on_timer_closed);
    uv_close((uv_handle_t *)&u->fb_timer, on_timer_closed);
    uv_close((uv_handle_t *)&u->kick, on_timer_closed);
}

unsigned long tg_upstream_lookups(const tg_upstream_t *u)
{
    return u ? tg_h1_lookups(u->h1) : 0;
}

void tg_upstream_destroy(tg_upstream_t *u)
{
    if (!u || u->destroy_pending) return;
    tg_h1_destroy(u->h1);
    u->h1 = NULL;
    u->destroy_pending = 1;
    /* From inside a callback: silence every call now, free them on the way out. */
    for (tg_link_t *l = u->calls.next; l != &u->calls; l = l->next)
        tg_container_of(l, tg_upcall_t, all)->canceled = 1;
    if (u->entered == 0) do_destroy(u);
}

#define SET(opt, val)                                                                              \
    do {                                                                                           \
        if (rc == CURLE_OK) rc = curl_easy_setopt(e, opt, val);                                    \
    } while (0)

/* A pooled easy handle, or a new one with the options every call shares. */
static CURL *easy_get(tg_upstream_t *u)
{
    if (u->npool) return u->pool[--u->npool];
    CURL *e = curl_easy_init();
    if (!e) return NULL;
    CURLcode rc = CURLE_OK;
    SET(CURLOPT_PROTOCOLS_STR, "http,https"); /* never file:// or others from a config typo */
    SET(CURLOPT_NOSIGNAL, 1L);
    SET(CURLOPT_TCP_NODELAY, 1L);
    SET(CURLOPT_TCP_KEEPALIVE, 1L);
    SET(CURLOPT_BUFFERSIZE, RECV_BUFFER);
    SET(CURLOPT_UPLOAD_BUFFERSIZE, RECV_BUFFER); /* default 64 KiB per POSTing call */
    SET(CURLOPT_SUPPRESS_CONNECT_HEADERS, 1L);   /* a proxy's reply is not the response */
    SET(CURLOPT_HEADERFUNCTION, on_curl_header);
    SET(CURLOPT_WRITEFUNCTION, on_curl_body);
    SET(CURLOPT_PREREQFUNCTION, on_curl_prereq);
    SET(CURLOPT_OPENSOCKETFUNCTION, on_curl_open);
    SET(CURLOPT_OPENSOCKETDATA, (void *)u);
    SET(CURLOPT_CLOSESOCKETFUNCTION, on_curl_close);
    SET(CURLOPT_CLOSESOCKETDATA, (void *)u);
    if (u->no_proxy_env) {
        SET(CURLOPT_PROXY, "");
        SET(CURLOPT_NOPROXY, "");
    }
    if (rc != CURLE_OK) {
        curl_easy_cleanup(e);
        return NULL;
    }
    return e;
}

/* The call's own options, every one of them each time: a pooled handle
 * still holds the previous call's. */
static int setup(tg_upcall_t *c, const tg_upcall_opts_t *o)
{
    CURL *e = c->easy;
    CURLcode rc = CURLE_OK;
    SET(CURLOPT_URL, o->url);
    SET(CURLOPT_PRIVATE, (void *)c);
    SET(CURLOPT_HEADERDATA, (void *)c);
    SET(CURLOPT_WRITEDATA, (void *)c);
    SET(CURLOPT_PREREQDATA, (void *)c);
    /* 0 is libcurl's default for both: 300 s to connect, no total limit. */
    SET(CURLOPT_CONNECTTIMEOUT_MS, (long)o->connect_timeout_ms);
    SET(CURLOPT_TIMEOUT_MS, (long)o->total_timeout_ms);
    /* The method: undo a previous call's HEAD or custom method first. */
    SET(CURLOPT_CUSTOMREQUEST, (char *)NULL);
    SET(CURLOPT_NOBODY, 0L);

    const char *m = o->method ? o->method : o->body ? "POST" : "GET";
    if (o->body || strcmp(m, "POST") == 0) {
        SET(CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)o->body_len);
        SET(CURLOPT_POSTFIELDS, o->body ? o->body : ""); /* borrowed, not copied */
        if (strcmp(m, "POST") != 0) SET(CURLOPT_CUSTOMREQUEST, m);
    } else if (strcmp(m, "GET") == 0) {
        SET(CURLOPT_HTTPGET, 1L);
    } else if (strcmp(m, "HEAD") == 0) {
        SET(CURLOPT_NOBODY, 1L);
    } else {
        SET(CURLOPT_CUSTOMREQUEST, m);
    }
    SET(CURLOPT_HTTPHEADER, c->hdrs);
    return rc == CURLE_OK ? 0 : rc == CURLE_OUT_OF_MEMORY ? TG_ENOMEM : TG_EINVAL;
}
#undef SET

/* An empty Expect: stops libcurl waiting for 100-continue on big bodies. */
static const char expect_none[] = "Expect:";

/* Bytes build_headers needs in the call's tail. */
static size_t headers_size(const tg_upcall_opts_t *o)
{
    size_t n = (o->nheaders + 1) * sizeof(struct curl_slist) + sizeof(expect_none);
    for (size_t i = 0; i < o->nheaders; i++)
        n += strlen(o->headers[i]) + 1;
    return n;
}

/* Lays the header list out in c->tail: libcurl only reads a CURLOPT_HTTPHEADER
 * list (it is the caller's to keep and free), so its nodes and copies of the
 * lines can live in the call itself. */
static void build_headers(tg_upcall_t *c, const tg_upcall_opts_t *o)
{
    size_t n = o->nheaders + 1;
    struct curl_slist *nodes = (struct curl_slist *)(void *)c->tail;
    char *text = (char *)(nodes + n);
    for (size_t i = 0; i < n; i++) {
        const char *h = i < o->nheaders ? o->headers[i] : expect_none;
        size_t len = strlen(h) + 1;
        memcpy(text, h, len);
        nodes[i].data = text;
        nodes[i].next = i + 1 < n ? &nodes[i + 1] : NULL;
        text += len;
    }
    c->hdrs = nodes;
}

int tg_upcall_start(tg_upstream_t *u, const tg_upcall_opts_t *opts, const tg_upcall_cbs_t *cbs,
                    void *ud, tg_upcall_t **out)
{
    if (!u || !opts || !opts->url || !cbs || !cbs->on_headers || !cbs->on_data || !cbs->on_done ||
        !out)
        return TG_EINVAL;
    if (u->destroy_pending) return TG_ECLOSED;
    if (u->h1) {
        int r = tg_h1_start(u->h1, opts, cbs, ud, out);
        if (r <= 0) return r; /* 1: not a URL it takes */
    }
    tg_upcall_t *c = calloc(1, sizeof(*c) + headers_size(opts));
    if (!c) return TG_ENOMEM;
    build_headers(c, opts);
    c->u = u;
    c->cbs = *cbs;
    c->ud = ud;
    c->fb_timeout_ms = opts->first_byte_timeout_ms;
    c->start_ns = tg_now_ns();
    tg_buf_init(&c->head, MAX_HEADER_BYTES);
    tg_link_init(&c->all);
    tg_link_init(&c->fb);
    tg_link_init(&c->aux);
    c->easy = easy_get(u);
    int rc = c->easy ? setup(c, opts) : TG_ENOMEM;
    if (rc == 0 && u->depth == 0) {
        if (curl_multi_add_handle(u->multi, c->easy) == CURLM_OK)
            c->in_multi = 1;
        else
            rc = TG_EUPSTREAM;
    }
    if (rc) {
        call_free(c);
        return rc;
    }
    tg_link_push(&u->calls, &c->all);
    /* libcurl refuses a handle added from inside its callbacks: settle() adds it. */
    if (!c->in_multi) tg_link_push(&u->to_add, &c->aux);
    *out = c;
    return 0;
}

void tg_upcall_pause(tg_upcall_t *c)
{
    if (c && TG_UPCALL_NATIVE(c)) {
        tg_h1_pause(c);
        return;
    }
    if (c && !c->done && !c->canceled) c->paused = 1;
}

void tg_upcall_resume(tg_upcall_t *c)
{
    if (c && TG_UPCALL_NATIVE(c)) {
        tg_h1_resume(c);
        return;
    }
    if (!c || c->done || c->canceled || !c->paused) return;
    tg_upstream_t *u = c->u;
    c->paused = 0;
    /* If libcurl never got a PAUSE (no bytes came meanwhile), there is nothing to undo. */
    if (c->curl_paused && tg_link_empty(&c->aux)) {
        tg_link_push(&u->to_resume, &c->aux);
        uv_timer_start(&u->kick, on_kick, 0, 0);
    }
}

void tg_upcall_cancel(tg_upcall_t *c)
{
    if (c && TG_UPCALL_NATIVE(c)) {
        tg_h1_cancel(c);
        return;
    }
    if (!c || c->done || c->canceled) return;
    tg_upstream_t *u = c->u;
    c->canceled = 1;
    if (u->depth && c->in_multi) {
        /* libcurl may be inside this very transfer: its callbacks now fail
         * it, and settle() removes and frees it when libcurl returns. */
        tg_link_del(&c->fb);
        tg_link_del(&c->aux);
        tg_link_push(&u->zombies, &c->aux);
        return;
    }
    detach(c);
    call_free(c);
}

uint64_t tg_upcall_ttfb_us(const tg_upcall_t *c)
{
    if (c && TG_UPCALL_NATIVE(c)) return tg_h1_ttfb_us(c);
    return c && c->got_byte ? c->ttfb_ns / 1000 : 0;
}

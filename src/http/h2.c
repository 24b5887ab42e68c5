/* h2.c - HTTP/2 on a tollgate connection, with nghttp2.
 *
 * A connection becomes HTTP/2 when its first bytes are the client preface
 * (h2c with prior knowledge) or when TLS negotiated "h2" by ALPN. From then
 * on server.c hands its input here instead of to llhttp; the connection
 * itself (socket, timer, write queue, TLS, lifetime) stays server.c's conn_t.
 *
 * Each stream becomes a tg_req_t (h2s_t) given to the same application
 * handler once its request is complete; tg_resp_* reach the functions at the
 * bottom through the byte after the tg_req_t (tg_req_h2).
 *
 * Re-entrancy. A handler is never called from inside nghttp2, nor from inside
 * its own tg_resp_* call: nghttp2 callbacks only record what happened (a
 * request ready, a stream reset, a queue drained) and h2_run delivers it
 * afterwards from a clean stack (a read, write or timer callback). While
 * h->busy is set, tg_resp_* only queue; otherwise they also pump frames out at
 * once, and anything that became due is left to the timer's immediate kick.
 *
 * Lifetimes. An h2s_t lives until nghttp2 has closed its stream AND no
 * handler holds it; its request memory (arena, body) goes as soon as the
 * handler finishes. Frees wait while h->busy (lists are being walked). The
 * connection is freed by the last of its streams once both handles closed.
 *
 * Flow control. Window updates are manual. The connection window is
 * returned as bytes arrive; a stream's window only while the connection
 * holds less than max_body_bytes of request bodies (the oldest unfinished
 * body always proceeds), so 128 streams cannot make it buffer 128 full
 * bodies: memory is bounded by two bodies plus a stream window per stream.
 * Response bytes wait in each stream's queue until nghttp2 takes them, as the
 * client's windows allow; tg_resp_write reports that queue against
 * write_high_water and on_drain fires when it falls to write_low_water.
 * Frames go to the socket only while its queue is under write_high_water.
 *
 * Abuse. Streams the client resets per second and over the connection's life
 * (Rapid Reset) are counted; past a limit the connection gets GOAWAY
 * ENHANCE_YOUR_CALM and is closed. Streams opened per second are capped:
 * past h2_streams_per_s the connection is not read until the second ends
 * (its input so far waits in h->held), so one busy client slows itself
 * down rather than the worker, and is not cut off. */
#include "http/internal.h"

#include <nghttp2/nghttp2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define H2_STREAM_WINDOW (128 * 1024)  /* SETTINGS_INITIAL_WINDOW_SIZE */
#define H2_CONN_WINDOW   (1024 * 1024) /* the connection's receive window */
#define H2_OUT_FLUSH     (64 * 1024)   /* frames gathered before a write */
#define H2_RUN_ROUNDS    16            /* then the rest waits for the kick */
#define H2_HELD_MAX      (1024 * 1024) /* input held while reads pause */

typedef struct h2s h2s_t;
typedef struct tg_h2 h2_t;

/* One stream. pub and h2 must stay first. */
struct h2s {
    tg_req_t pub;
    uint8_t h2; /* 1: see tg_req_h2 */
    h2_t *h;
    int32_t id;
    h2s_t *prev, *next; /* the connection's streams, oldest first */
    h2s_t *rnext;       /* ready to dispatch */
    tg_arena_t arena;   /* request: headers, pseudo-headers */
    tg_buf_t body;      /* request body, at most max_body_bytes */
    tg_buf_t out;       /* response bytes nghttp2 has not taken yet, from out_off */
    size_t out_off;
    size_t hcap;       /* slots in pub.headers */
    size_t hbytes;     /* header bytes, counted as HTTP/1.1 would */
    size_t unconsumed; /* body bytes not yet returned to the stream's window */
    size_t resp_bytes;
    const char *method, *url, *authority;
    size_t url_len, authority_len;
    uint64_t due;      /* end of headers / end of body deadline, loop ms; 0: none */
    uint64_t send_due; /* queue above low water since then + send_timeout_ms */
    uint16_t reject;   /* answer this status instead of calling the handler */
    unsigned headers_done : 1, body_done : 1, ready : 1, in_handler : 1, finished : 1;
    unsigned closed : 1;  /* nghttp2 closed it (or the connection is gone) */
    unsigned aborted : 1; /* writes fail; on_abort called or due */
    unsigned abort_due : 1, drain_due : 1, drain_wanted : 1;
    unsigned started : 1;  /* response headers submitted */
    unsigned provider : 1; /* the response has a body to take from out */
    unsigned eof : 1;      /* out holds the last of it */
    unsigned deferred : 1; /* nghttp2 waits for resume_data */
    unsigned head : 1, rst_after : 1;
};

_Static_assert(offsetof(h2s_t, h2) == sizeof(tg_req_t), "tg_req_h2 reads this byte");

struct tg_h2 {
    conn_t *c;
    nghttp2_session *ss; /* NULL once the connection closed */
    h2s_t *head, *tail;
    h2s_t *rhead, *rtail;
    int nstreams;       /* h2s_t alive */
    int nopen;          /* of them, open in nghttp2 */
    int busy;           /* > 0: inside a run or an nghttp2 call */
    size_t body_held;   /* request body bytes held by streams */
    uint64_t idle_due;  /* with no open stream, close then */
    uint64_t win_start; /* the current one-second window, loop ms */
    uint32_t win_opens, win_resets;
    uint64_t resets;     /* over the connection's life */
    tg_buf_t held;       /* input that arrived while paused */
    unsigned events : 1; /* an abort or drain is due */
    unsigned sweep : 1;  /* a stream may be freed */
    unsigned closed : 1; /* the connection's handles closed */
    unsigned goaway : 1; /* we said GOAWAY */
    unsigned calm : 1;   /* ... ENHANCE_YOUR_CALM */
    unsigned paused : 1; /* opened its streams for this second: not read */
};

static void stream_try_free(h2s_t *s);
static void h2_after_call(h2_t *h);

/* ---- small helpers ----------------------------------------------------------- */

static const tg_http_config_t *h2_cfg(const h2_t *h)
{
    return &h->c->w->s->cfg;
}

static uint64_t h2_now(const h2_t *h)
{
    return uv_now(&h->c->w->loop);
}

static int h2_live(const h2_t *h)
{
    return h->ss && !h->c->closing && h->c->state == CS_H2;
}

static int stream_live(const h2s_t *s)
{
    return !s->aborted && h2_live(s->h);
}

static size_t stream_queued(const h2s_t *s)
{
    return s->out.len - s->out_off;
}

/* A deadline: the connection's timer fires no later than t. */
static void h2_due(h2_t *h, uint64_t t)
{
    conn_t *c = h->c;
    if (t && t < c->due) {
        c->due = t;
        tg_conn_arm(c);
    }
}

/* Work is left for a clean stack: the timer's zero-delay kick. */
static void h2_kick(h2_t *h)
{
    conn_t *c = h->c;
    if (c->closing || c->resume) return;
    c->resume = 1;
    tg_conn_arm(c);
}

static int method_of(const char *m)
{
    static const struct {
        const char *s;
        int m;
    } map[] = {{"GET", TG_HTTP_GET},        {"POST", TG_HTTP_POST},     {"HEAD", TG_HTTP_HEAD},
               {"PUT", TG_HTTP_PUT},        {"DELETE", TG_HTTP_DELETE}, {"PATCH", TG_HTTP_PATCH},
               {"OPTIONS", TG_HTTP_OPTIONS}};
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
        if (strcmp(m, map[i].s) == 0) return map[i].m;
    return TG_HTTP_OTHER;
}

/* Connection-specific fields HTTP/2 forbids (RFC 9113 8.2.2), beyond the
 * ones server.c already keeps for itself. */
static int h2_forbidden(const tg_header_t *h)
{
    static const char *const names[] = {"keep-alive", "proxy-connection", "upgrade", "te"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (tg_strcaseeq(h->name, h->name_len, names[i], strlen(names[i]))) return 1;
    return 0;
}

/* ---- streams ------------------------------------------------------------------- */

static h2s_t *stream_new(h2_t *h, int32_t id)
{
    h2s_t *s = calloc(1, sizeof(*s));
    if (!s) return NULL;
    const tg_http_config_t *cfg = h2_cfg(h);
    conn_t *c = h->c;
    s->h2 = 1;
    s->h = h;
    s->id = id;
    tg_arena_init(&s->arena, 0);
    tg_buf_init(&s->body, cfg->max_body_bytes);
    tg_buf_init(&s->out, 0); /* filled by the handler, which heeds backpressure */
    s->pub.worker = c->w;
    s->pub.loop = &c->w->loop;
    s->pub.arena = &s->arena;
    s->pub.start_ns = tg_now_ns();
    s->pub.query = "";
    s->pub.body = "";
    memcpy(s->pub.remote_addr, c->remote, sizeof(s->pub.remote_addr));
    s->pub.conn_memo = c->memo;
    s->prev = h->tail;
    if (h->tail)
        h->tail->next = s;
    else
        h->head = s;
    h->tail = s;
    h->nstreams++;
    h->nopen++;
    s->due = h2_now(h) + cfg->header_timeout_ms;
    h2_due(h, s->due);
    return s;
}

/* Gives back what the request held: memory, and the stream's window. */
static void stream_release(h2s_t *s)
{
    h2_t *h = s->h;
    h->body_held -= s->body.len;
    tg_buf_free(&s->body);
    if (s->unconsumed && h->ss) nghttp2_session_consume_stream(h->ss, s->id, s->unconsumed);
    s->unconsumed = 0;
    tg_arena_free(&s->arena);
    s->pub.headers = NULL;
    s->pub.nheaders = 0;
    s->hcap = 0;
}

static void stream_free(h2s_t *s)
{
    h2_t *h = s->h;
    stream_release(s);
    tg_buf_free(&s->out);
    if (s->prev)
        s->prev->next = s->next;
    else
        h->head = s->next;
    if (s->next)
        s->next->prev = s->prev;
    else
        h->tail = s->prev;
    h->nstreams--;
    free(s);
}

/* Frees every stream nobody needs. Frees the connection when it was waiting
 * for the last of them: touch nothing after. */
static void h2_sweep(h2_t *h)
{
    h->sweep = 0;
    for (h2s_t *s = h->head, *next; s; s = next) {
        next = s->next;
        if (s->closed && !s->in_handler && !s->ready) stream_free(s);
    }
    if (h->closed && !h->nstreams) tg_conn_free(h->c);
}

static void stream_try_free(h2s_t *s)
{
    if (!s->closed || s->in_handler || s->ready) return;
    h2_t *h = s->h;
    if (h->busy) {
        h->sweep = 1;
        return;
    }
    stream_free(s);
    if (h->closed && !h->nstreams) tg_conn_free(h->c);
}

/* The handler is done with it (or never had it). */
static void stream_finish(h2s_t *s)
{
    s->in_handler = 0;
    s->finished = 1;
    s->due = 0;
    stream_release(s);
    stream_try_free(s);
}

static void stream_ready(h2s_t *s)
{
    h2_t *h = s->h;
    if (s->ready || s->finished || s->in_handler) return;
    s->ready = 1;
    s->due = 0;
    s->rnext = NULL;
    if (h->rtail)
        h->rtail->rnext = s;
    else
        h->rhead = s;
    h->rtail = s;
}

static int stream_add_header(h2s_t *s, const char *name, size_t nlen, const char *value,
                             size_t vlen)
{
    tg_req_t *q = &s->pub;
    if (q->nheaders == s->hcap) {
        size_t ncap = s->hcap ? s->hcap * 2 : TG_HTTP_HDR_SLOTS;
        tg_header_t *nh = tg_arena_alloc(&s->arena, ncap * sizeof(*nh));
        if (!nh) return TG_ENOMEM;
        if (q->nheaders) memcpy(nh, q->headers, q->nheaders * sizeof(*nh));
        q->headers = nh;
        s->hcap = ncap;
    }
    tg_header_t *hd = &q->headers[q->nheaders];
    hd->name = tg_arena_strndup(&s->arena, name, nlen);
    hd->value = tg_arena_strndup(&s->arena, value, vlen);
    if (!hd->name || !hd->value) return TG_ENOMEM;
    hd->name_len = nlen;
    hd->value_len = vlen;
    q->nheaders++;
    return TG_OK;
}

/* The first stream still receiving its body: it always gets its window back. */
static h2s_t *h2_oldest_receiving(h2_t *h)
{
    for (h2s_t *s = h->head; s; s = s->next)
        if (s->headers_done && !s->body_done && !s->reject && !s->closed) return s;
    return NULL;
}

static size_t h2_body_budget(const h2_t *h)
{
    size_t b = h2_cfg(h)->max_body_bytes;
    return b > H2_CONN_WINDOW ? b : H2_CONN_WINDOW;
}

/* Returns the windows of bodies held back, as far as the budget allows. */
static void h2_consume_deferred(h2_t *h)
{
    if (!h->ss) return;
    h2s_t *oldest = NULL;
    int looked = 0;
    for (h2s_t *s = h->head; s; s = s->next) {
        if (!s->unconsumed) continue;
        if (h->body_held > h2_body_budget(h)) {
            if (!looked) oldest = h2_oldest_receiving(h), looked = 1;
            if (s != oldest) continue;
        }
        nghttp2_session_consume_stream(h->ss, s->id, s->unconsumed);
        s->unconsumed = 0;
    }
}

/* ---- responses ----------------------------------------------------------------- */

/* nghttp2 takes response bytes from the stream's queue. */
static ssize_t h2_read(nghttp2_session *ss, int32_t id, uint8_t *buf, size_t length,
                       uint32_t *flags, nghttp2_data_source *src, void *ud)
{
    h2s_t *s = src->ptr;
    h2_t *h = s->h;
    size_t avail = stream_queued(s);
    size_t n = avail < length ? avail : length;
    if (n) {
        memcpy(buf, s->out.data + s->out_off, n);
        s->out_off += n;
    }
    if (s->out_off == s->out.len) {
        s->out_off = 0;
        tg_buf_reset(&s->out);
        if (s->eof) {
            *flags |= NGHTTP2_DATA_FLAG_EOF;
            tg_buf_free(&s->out);
        } else if (!n) {
            s->deferred = 1;
            return NGHTTP2_ERR_DEFERRED;
        }
    } else if (s->out_off >= H2_OUT_FLUSH && s->out_off * 2 >= s->out.len) {
        tg_buf_consume(&s->out, s->out_off);
        s->out_off = 0;
    }
    size_t low = h2_cfg(h)->write_low_water;
    if (stream_queued(s) <= low) {
        s->send_due = 0;
        if (s->drain_wanted) {
            s->drain_wanted = 0;
            s->drain_due = 1;
            h->events = 1;
        }
    }
    return (ssize_t)n;
}

/* Submits the response headers (and a body source unless there is no body).
 * with_len: a whole response of clen bytes. */
static int h2_submit(h2s_t *s, int status, const tg_header_t *hdrs, size_t nhdrs, int with_len,
                     size_t clen, int has_body)
{
    h2_t *h = s->h;
    tg_worker_t *w = h->c->w;
    if (status < 100 || status > 999) status = 500;
    char st[4] = {(char)('0' + status / 100), (char)('0' + status / 10 % 10),
                  (char)('0' + status % 10), '\0'};
    /* Names must be lower case in HTTP/2: copies go to w->hbuf first, and
     * pointers into it are taken once it stops growing. */
    tg_buf_t *b = &w->hbuf;
    tg_buf_reset(b);
    size_t n = 0;
    for (size_t i = 0; i < nhdrs; i++) {
        if (tg_header_skip(&hdrs[i]) || h2_forbidden(&hdrs[i])) continue;
        if (tg_buf_append(b, hdrs[i].name, hdrs[i].name_len)) return TG_ENOMEM;
        n++;
    }
    char cl[24];
    int cln = with_len ? snprintf(cl, sizeof(cl), "%zu", clen) : 0;
    nghttp2_nv stack[24], *nva = stack;
    if (n + 3 > sizeof(stack) / sizeof(stack[0]) && !(nva = malloc((n + 3) * sizeof(*nva))))
        return TG_ENOMEM;
    for (size_t i = 0; i < b->len; i++)
        if (b->data[i] >= 'A' && b->data[i] <= 'Z') b->data[i] = (char)(b->data[i] + 32);
    size_t k = 0, off = 0;
#define NV(nm, nl, v, vl)                                                                          \
    nva[k++] = (nghttp2_nv){(uint8_t *)(nm), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE}
    NV(":status", 7, st, 3);
    for (size_t i = 0; i < nhdrs; i++) {
        const tg_header_t *hd = &hdrs[i];
        if (tg_header_skip(hd) || h2_forbidden(hd)) continue;
        NV(b->data + off, hd->name_len, hd->value, hd->value_len);
        off += hd->name_len;
    }
    tg_worker_date(w); /* "Date: ...\r\n" */
    if (w->date_len > 8) NV("date", 4, w->date + 6, w->date_len - 8);
    if (with_len) NV("content-length", 14, cl, (size_t)cln);
#undef NV
    nghttp2_data_provider prd = {.source.ptr = s, .read_callback = h2_read};
    s->provider = has_body != 0;
    int rv = nghttp2_submit_response(h->ss, s->id, nva, k, has_body ? &prd : NULL);
    if (nva != stack) free(nva);
    return rv ? TG_ECLOSED : TG_OK;
}

/* A whole response (stream = 0) or the start of a streamed one. */
static int h2_respond(h2s_t *s, int status, const tg_header_t *hdrs, size_t nhdrs, const void *body,
                      size_t len, int stream)
{
    int nobody = status < 200 || status == 204 || status == 304;
    int has_body = !nobody && !s->head && (stream || len);
    s->eof = !stream;
    s->started = 1;
    int rc = TG_ENOMEM;
    if (!has_body || !len || !tg_buf_append(&s->out, body, len))
        rc = h2_submit(s, status, hdrs, nhdrs, !stream && !nobody, len, has_body);
    if (rc && s->h->ss) /* the client must not wait for an answer that will not come */
        nghttp2_submit_rst_stream(s->h->ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_INTERNAL_ERROR);
    return rc;
}

/* The server's own answer (431, 413, 408, 400): the handler never sees it. */
static void h2_reject(h2s_t *s)
{
    h2_t *h = s->h;
    tg_worker_t *w = h->c->w;
    int status = tg_http_reject_body(w, s->reject);
    if (status > 0 && h->ss) {
        char rid[40];
        tg_random_id(rid, sizeof(rid), "req_", 16);
        const tg_header_t hs[2] = {{"Content-Type", 12, "application/json", 16},
                                   {"x-request-id", 12, rid, strlen(rid)}};
        h2_respond(s, status, hs, 2, w->ebuf.data, w->ebuf.len, 0);
        /* The body may still be on its way: once the answer is out, a
         * RST_STREAM(NO_ERROR) tells the client to stop (RFC 9113 8.1). */
        if (nghttp2_session_get_stream_remote_close(h->ss, s->id) == 0) s->rst_after = 1;
    }
    stream_finish(s);
}

/* ---- nghttp2 callbacks: they record, h2_run acts ------------------------------ */

static void h2_window(h2_t *h)
{
    uint64_t now = h2_now(h);
    if (now - h->win_start >= 1000) {
        h->win_start = now;
        h->win_opens = h->win_resets = 0;
    }
}

/* Counts a reset by the client into the current one-second window and the
 * connection's life; past a limit: GOAWAY ENHANCE_YOUR_CALM, and the
 * connection closes once it is sent. */
static int h2_count_reset(h2_t *h)
{
    const tg_http_config_t *cfg = h2_cfg(h);
    h2_window(h);
    h->resets++;
    if (++h->win_resets <= cfg->h2_resets_per_s && h->resets <= cfg->h2_resets_max) return 0;
    if (!h->calm) {
        tg_warn("http2: %s: too many streams reset by the client; closing the connection",
                h->c->remote);
        nghttp2_session_terminate_session(h->ss, NGHTTP2_ENHANCE_YOUR_CALM);
        h->calm = h->goaway = 1;
    }
    return 1;
}

static int on_begin_headers(nghttp2_session *ss, const nghttp2_frame *frame, void *ud)
{
    h2_t *h = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    if (h->calm) return 0; /* the session is ending: its frames are ignored */
    h2_window(h);
    h->win_opens++; /* h2_feed pauses reading past the cap */
    h2s_t *s = stream_new(h, frame->hd.stream_id);
    if (!s) return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* RST_STREAM for it */
    nghttp2_session_set_stream_user_data(ss, frame->hd.stream_id, s);
    return 0;
}

static int on_header(nghttp2_session *ss, const nghttp2_frame *frame, const uint8_t *name,
                     size_t namelen, const uint8_t *value, size_t valuelen, uint8_t flags, void *ud)
{
    h2_t *h = ud;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST) return 0;
    h2s_t *s = nghttp2_session_get_stream_user_data(ss, frame->hd.stream_id);
    if (!s || s->reject) return 0;
    /* As HTTP/1.1 counts them: "name: value\r\n". */
    s->hbytes += namelen + valuelen + 4;
    if (s->hbytes > h2_cfg(h)->max_header_bytes) {
        s->reject = 431; /* answered once the header block ends */
        return 0;
    }
    const char *n = (const char *)name, *v = (const char *)value;
    if (n[0] != ':') {
        if (stream_add_header(s, n, namelen, v, valuelen)) s->reject = 500;
        return 0;
    }
    char *copy = tg_arena_strndup(&s->arena, v, valuelen);
    if (!copy) {
        s->reject = 500;
        return 0;
    }
    if (namelen == 7 && memcmp(n, ":method", 7) == 0) {
        s->method = copy;
    } else if (namelen == 5 && memcmp(n, ":path", 5) == 0) {
        s->url = copy;
        s->url_len = valuelen;
    } else if (namelen == 10 && memcmp(n, ":authority", 10) == 0) {
        s->authority = copy;
        s->authority_len = valuelen;
    }
    return 0;
}

/* The request's header block is complete: fill in what the handler reads. */
static void stream_headers_done(h2s_t *s, int end_stream)
{
    h2_t *h = s->h;
    const tg_http_config_t *cfg = h2_cfg(h);
    tg_req_t *q = &s->pub;
    s->headers_done = 1;
    s->due = end_stream ? 0 : h2_now(h) + cfg->body_timeout_ms;
    h2_due(h, s->due);
    if (!s->reject && (!s->method || !s->url || !s->url_len)) s->reject = 400; /* e.g. CONNECT */
    if (s->reject) {
        stream_ready(s);
        return;
    }
    q->method = method_of(s->method);
    q->method_str = s->method;
    s->head = q->method == TG_HTTP_HEAD;
    char *url = (char *)s->url, *qm = memchr(url, '?', s->url_len);
    q->path = url;
    q->path_len = s->url_len;
    if (qm) {
        *qm = '\0';
        q->path_len = (size_t)(qm - url);
        q->query = qm + 1;
        q->query_len = s->url_len - q->path_len - 1;
    }
    /* :authority stands in for Host (RFC 9113 8.3.1). */
    if (s->authority && !tg_req_header(q, "host") &&
        stream_add_header(s, "host", 4, s->authority, s->authority_len)) {
        s->reject = 500;
        stream_ready(s);
        return;
    }
    const char *cl = tg_req_header(q, "content-length");
    if (cl && strtoull(cl, NULL, 10) > cfg->max_body_bytes) {
        s->reject = 413;
        stream_ready(s);
        return;
    }
    const char *expect = tg_req_header(q, "expect");
    if (!end_stream && expect && tg_strcaseeq(expect, strlen(expect), "100-continue", 12)) {
        static const nghttp2_nv cont = {(uint8_t *)":status", (uint8_t *)"100", 7, 3,
                                        NGHTTP2_NV_FLAG_NONE};
        nghttp2_submit_headers(h->ss, NGHTTP2_FLAG_NONE, s->id, NULL, &cont, 1, NULL);
    }
}

static void stream_body_done(h2s_t *s)
{
    if (s->body_done) return;
    s->body_done = 1;
    s->due = 0;
    stream_ready(s);
}

static int on_frame_recv(nghttp2_session *ss, const nghttp2_frame *frame, void *ud)
{
    h2_t *h = ud;
    int end = (frame->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
    h2s_t *s;
    switch (frame->hd.type) {
    case NGHTTP2_HEADERS:
        if (!(s = nghttp2_session_get_stream_user_data(ss, frame->hd.stream_id))) return 0;
        if (frame->headers.cat == NGHTTP2_HCAT_REQUEST) stream_headers_done(s, end);
        if (end) stream_body_done(s); /* after the body, these were trailers */
        break;
    case NGHTTP2_DATA:
        if (end && (s = nghttp2_session_get_stream_user_data(ss, frame->hd.stream_id)))
            stream_body_done(s);
        break;
    case NGHTTP2_RST_STREAM:
        h2_count_reset(h);
        break;
    default:
        break;
    }
    return 0;
}

static int on_data_chunk_recv(nghttp2_session *ss, uint8_t flags, int32_t id, const uint8_t *data,
                              size_t len, void *ud)
{
    h2_t *h = ud;
    h2s_t *s = nghttp2_session_get_stream_user_data(ss, id);
    /* The connection's window comes back at once: only streams wait. */
    nghttp2_session_consume_connection(ss, len);
    if (!s || s->reject || s->ready || s->in_handler || s->finished) {
        nghttp2_session_consume_stream(ss, id, len); /* not wanted: dropped */
        return 0;
    }
    int rc = tg_buf_append(&s->body, data, len);
    if (rc) {
        s->reject = rc == TG_ETOOBIG ? 413 : 500;
        nghttp2_session_consume_stream(ss, id, len);
        stream_release(s); /* the body so far is not needed either */
        stream_ready(s);
        return 0;
    }
    h->body_held += len;
    if (h->body_held <= h2_body_budget(h) || h2_oldest_receiving(h) == s)
        nghttp2_session_consume_stream(ss, id, len);
    else
        s->unconsumed += len;
    return 0;
}

static int on_frame_send(nghttp2_session *ss, const nghttp2_frame *frame, void *ud)
{
    if (!(frame->hd.flags & NGHTTP2_FLAG_END_STREAM)) return 0;
    if (frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) return 0;
    h2s_t *s = nghttp2_session_get_stream_user_data(ss, frame->hd.stream_id);
    if (s && s->rst_after && nghttp2_session_get_stream_remote_close(ss, s->id) == 0)
        nghttp2_submit_rst_stream(ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_NO_ERROR);
    return 0;
}

static int on_stream_close(nghttp2_session *ss, int32_t id, uint32_t error_code, void *ud)
{
    h2_t *h = ud;
    h2s_t *s = nghttp2_session_get_stream_user_data(ss, id);
    if (!s) return 0;
    s->closed = 1;
    s->due = s->send_due = 0;
    s->unconsumed = 0; /* a closed stream has no window */
    if (--h->nopen == 0) {
        h->idle_due = h2_now(h) + h2_cfg(h)->idle_timeout_ms;
        h2_due(h, h->idle_due);
    }
    if (s->in_handler) {
        if (!s->aborted) {
            s->aborted = 1; /* reset by the client, or the session ends */
            s->abort_due = 1;
            h->events = 1;
        }
    } else {
        h->sweep = 1;
    }
    return 0;
}

/* ---- running the connection ------------------------------------------------------ */

/* Frames out, while the socket's queue has room. */
static void h2_pump(h2_t *h)
{
    conn_t *c = h->c;
    if (!h2_live(h)) return;
    h->busy++;
    tg_buf_t *o = &c->w->h2out;
    size_t high = h2_cfg(h)->write_high_water;
    tg_buf_reset(o);
    while (!c->closing && c->queued <= high) {
        const uint8_t *p;
        ssize_t n = nghttp2_session_mem_send(h->ss, &p);
        if (n < 0) {
            tg_debug("http2: %s: send: %s", h->c->remote, nghttp2_strerror((int)n));
            tg_conn_close(c);
            break;
        }
        if (n == 0) break;
        if (o->len && o->len + (size_t)n > H2_OUT_FLUSH) {
            uv_buf_t b = uv_buf_init(o->data, (unsigned)o->len);
            tg_conn_write(c, &b, 1);
            tg_buf_reset(o);
        }
        if (c->closing) break;
        if ((size_t)n < H2_OUT_FLUSH && !tg_buf_append(o, p, (size_t)n)) continue;
        /* Too big to gather (or no memory to): after what was gathered. */
        uv_buf_t b[2] = {uv_buf_init(o->data, (unsigned)o->len),
                         uv_buf_init((char *)p, (unsigned)n)};
        tg_conn_write(c, o->len ? b : b + 1, o->len ? 2 : 1);
        tg_buf_reset(o);
    }
    if (o->len && !c->closing) {
        uv_buf_t b = uv_buf_init(o->data, (unsigned)o->len);
        tg_conn_write(c, &b, 1);
    }
    tg_buf_reset(o);
    h->busy--;
}

/* Requests whose stream is complete go to the handler (or are refused). */
static void h2_dispatch(h2_t *h)
{
    const tg_http_app_t *app = &h->c->w->s->app;
    h2s_t *s;
    while ((s = h->rhead) && !h->c->closing) {
        h->rhead = s->rnext;
        if (!h->rhead) h->rtail = NULL;
        s->rnext = NULL;
        s->ready = 0;
        if (s->closed) {
            stream_finish(s); /* reset before it got here */
        } else if (s->reject) {
            h2_reject(s);
        } else {
            s->in_handler = 1;
            s->pub.body = s->body.len ? s->body.data : "";
            s->pub.body_len = s->body.len;
            app->handle(&s->pub, app->ctx);
        }
    }
}

/* Aborts and drains that came due. Frees wait (busy), so the list holds. */
static void h2_events(h2_t *h)
{
    h->events = 0;
    for (h2s_t *s = h->head; s; s = s->next) {
        if (s->abort_due) {
            s->abort_due = s->drain_due = 0;
            if (s->in_handler && s->pub.on_abort) s->pub.on_abort(&s->pub);
        } else if (s->drain_due) {
            s->drain_due = 0;
            if (s->in_handler && !s->aborted && s->pub.on_drain) s->pub.on_drain(&s->pub);
        }
    }
}

/* Nothing left to say or hear: FIN after what is queued. */
static void h2_check_done(h2_t *h)
{
    if (!h2_live(h)) return;
    if (nghttp2_session_want_read(h->ss) || nghttp2_session_want_write(h->ss)) return;
    conn_t *c = h->c;
    c->linger = 1; /* let the client's last frames arrive rather than reset them */
    tg_conn_done(c);
}

/* From a clean stack: everything that is due, until nothing is. */
static void h2_run(h2_t *h)
{
    conn_t *c = h->c;
    for (int i = 0; i < H2_RUN_ROUNDS && h2_live(h); i++) {
        h->busy++;
        h2_dispatch(h);
        if (h->events) h2_events(h);
        h->busy--;
        h2_consume_deferred(h);
        h2_pump(h);
        if (!h->rhead && !h->events) break;
    }
    if (h2_live(h) && (h->rhead || h->events)) h2_kick(h);
    h2_check_done(h);
    if (h->sweep && !c->closing) h2_sweep(h);
}

/* After tg_resp_*: outside a run, frames go out now; what came due waits
 * for the kick. */
static void h2_after_call(h2_t *h)
{
    if (h->busy) return;
    if (h2_live(h)) {
        h2_pump(h);
        if (h->events || h->rhead) h2_kick(h);
        h2_check_done(h);
    }
    if (h->sweep) h2_sweep(h); /* may free the connection: last */
}

/* ---- entry points from server.c ----------------------------------------------- */

int tg_h2_start(conn_t *c)
{
    const tg_http_config_t *cfg = &c->w->s->cfg;
    h2_t *h = calloc(1, sizeof(*h));
    nghttp2_session_callbacks *cb = NULL;
    nghttp2_option *opt = NULL;
    if (!h || nghttp2_session_callbacks_new(&cb) || nghttp2_option_new(&opt)) {
        free(h);
        nghttp2_session_callbacks_del(cb);
        return TG_ENOMEM;
    }
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk_recv);
    nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    nghttp2_option_set_no_auto_window_update(opt, 1);
    nghttp2_option_set_no_closed_streams(opt, 1);
    /* nghttp2's own Rapid Reset guard, looser than ours so ours speaks. */
    nghttp2_option_set_stream_reset_rate_limit(opt, (uint64_t)cfg->h2_resets_max + 1,
                                               (uint64_t)cfg->h2_resets_per_s + 1);
    int rv = nghttp2_session_server_new2(&h->ss, cb, h, opt);
    nghttp2_session_callbacks_del(cb);
    nghttp2_option_del(opt);
    if (rv) {
        free(h);
        return TG_ENOMEM;
    }
    const nghttp2_settings_entry iv[] = {
        {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, cfg->h2_max_streams},
        {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, H2_STREAM_WINDOW},
    };
    if (nghttp2_submit_settings(h->ss, NGHTTP2_FLAG_NONE, iv, 2) ||
        nghttp2_session_set_local_window_size(h->ss, NGHTTP2_FLAG_NONE, 0, H2_CONN_WINDOW)) {
        nghttp2_session_del(h->ss);
        free(h);
        return TG_ENOMEM;
    }
    h->c = c;
    tg_buf_init(&h->held, H2_HELD_MAX);
    c->h2 = h;
    c->proto = TG_PROTO_H2;
    c->state = CS_H2;
    h->win_start = uv_now(&c->w->loop);
    h->idle_due = h->win_start + cfg->idle_timeout_ms;
    c->due = h->idle_due;
    tg_conn_arm(c);
    if (c->w->draining) tg_h2_drain(c);
    return TG_OK;
}

/* Input for nghttp2. Past the second's cap of new streams, reading pauses
 * until the second ends (h2_unpause). */
static void h2_feed(h2_t *h, const char *data, size_t n)
{
    conn_t *c = h->c;
    h->busy++;
    ssize_t rv = nghttp2_session_mem_recv(h->ss, (const uint8_t *)data, n);
    h->busy--;
    if (rv < 0) {
        /* A connection error: nghttp2 queued its GOAWAY where it could. */
        tg_debug("http2: %s: %s", h->c->remote, nghttp2_strerror((int)rv));
        if (rv == NGHTTP2_ERR_BAD_CLIENT_MAGIC) {
            tg_conn_close(c);
            return;
        }
        nghttp2_session_terminate_session(h->ss, NGHTTP2_PROTOCOL_ERROR);
    }
    h2_window(h);
    if (h->win_opens >= h2_cfg(h)->h2_streams_per_s && !h->calm && h2_live(h)) {
        h->paused = 1;
        tg_conn_read(c, 0);
        h2_due(h, h->win_start + 1000);
    }
    h2_run(h);
}

/* A new second: what was held goes in, and reading resumes unless that was
 * a second's worth again. */
static void h2_unpause(h2_t *h)
{
    h->paused = 0;
    h2_window(h);
    if (h->held.len) {
        tg_buf_t in = h->held;
        tg_buf_init(&h->held, H2_HELD_MAX);
        h2_feed(h, in.data, in.len);
        tg_buf_free(&in);
    }
    if (!h->paused && h2_live(h)) tg_conn_read(h->c, 1);
}

void tg_h2_on_read(conn_t *c, const char *data, size_t n)
{
    h2_t *h = c->h2;
    if (!h2_live(h)) return;
    if (h->paused) { /* the rest of a read, or of TLS records already in */
        if (tg_buf_append(&h->held, data, n)) tg_conn_close(c);
        return;
    }
    h2_feed(h, data, n);
}

void tg_h2_run(conn_t *c)
{
    h2_run(c->h2);
}

void tg_h2_on_timer(conn_t *c)
{
    h2_t *h = c->h2;
    if (!h2_live(h)) return;
    const tg_http_config_t *cfg = h2_cfg(h);
    uint64_t now = h2_now(h), next = UINT64_MAX;
    if (h->paused) {
        if (now >= h->win_start + 1000) {
            h2_unpause(h);
            if (!h2_live(h)) return;
        }
        if (h->paused) next = h->win_start + 1000;
    }
    for (h2s_t *s = h->head; s; s = s->next) {
        if (s->due && now >= s->due) {
            s->due = 0;
            if (!s->headers_done) {
                /* Stuck inside a header block: nothing else can move. */
                tg_debug("http2: %s: header timeout", h->c->remote);
                nghttp2_session_terminate_session(h->ss, NGHTTP2_PROTOCOL_ERROR);
            } else if (!s->body_done && !s->reject) {
                s->reject = 408;
                stream_release(s);
                stream_ready(s);
            }
        }
        if (s->send_due && now >= s->send_due) {
            /* The client stopped granting window for this stream. */
            s->send_due = 0;
            tg_debug("http2: %s: stream %d not read for %u ms; reset", h->c->remote, s->id,
                     cfg->send_timeout_ms);
            nghttp2_submit_rst_stream(h->ss, NGHTTP2_FLAG_NONE, s->id, NGHTTP2_CANCEL);
        }
        if (s->due && s->due < next) next = s->due;
        if (s->send_due && s->send_due < next) next = s->send_due;
    }
    if (!h->nopen) {
        if (now >= h->idle_due && !h->goaway) {
            h->goaway = 1;
            nghttp2_session_terminate_session(h->ss, NGHTTP2_NO_ERROR);
        }
        if (h->idle_due > now && h->idle_due < next) next = h->idle_due;
    }
    c->due = next;
    h2_run(h);
}

void tg_h2_drain(conn_t *c)
{
    h2_t *h = c->h2;
    if (!h2_live(h) || h->goaway) return;
    h->goaway = 1;
    nghttp2_submit_goaway(h->ss, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(h->ss),
                          NGHTTP2_NO_ERROR, NULL, 0);
    h2_kick(h); /* sent from a clean stack */
}

int tg_h2_on_closed(conn_t *c)
{
    h2_t *h = c->h2;
    h->closed = 1;
    if (h->ss) {
        nghttp2_session_del(h->ss); /* calls nothing back */
        h->ss = NULL;
    }
    h->rhead = h->rtail = NULL;
    h->busy++;
    for (h2s_t *s = h->head; s; s = s->next) {
        s->closed = 1;
        s->ready = 0;
        s->unconsumed = 0;
        if (s->in_handler && (!s->aborted || s->abort_due)) {
            s->aborted = 1;
            s->abort_due = 0;
            if (s->pub.on_abort) s->pub.on_abort(&s->pub);
        }
    }
    h->busy--;
    for (h2s_t *s = h->head, *next; s; s = next) {
        next = s->next;
        if (!s->in_handler) stream_free(s);
    }
    return h->nstreams > 0;
}

void tg_h2_free(conn_t *c)
{
    h2_t *h = c->h2;
    while (h->head)
        stream_free(h->head);
    if (h->ss) nghttp2_session_del(h->ss);
    tg_buf_free(&h->held);
    free(h);
    c->h2 = NULL;
}

/* ---- tg_resp_* for HTTP/2 streams --------------------------------------------- */

int tg_h2_req_live(const tg_req_t *req)
{
    return ((const h2s_t *)req)->in_handler;
}

size_t tg_h2_resp_bytes(const tg_req_t *req)
{
    return ((const h2s_t *)req)->resp_bytes;
}

/* Finishes s and lets the connection catch up; s (and maybe the connection)
 * may be gone after. */
static void h2_finish_call(h2s_t *s)
{
    h2_t *h = s->h;
    h->busy++;
    stream_finish(s);
    h->busy--;
    h2_after_call(h);
}

int tg_h2_resp_send(tg_req_t *req, int status, const tg_header_t *hdrs, size_t nhdrs,
                    const void *body, size_t len)
{
    h2s_t *s = (h2s_t *)req;
    if (!s->in_handler) return TG_EINVAL;
    if (s->started) {
        tg_h2_resp_end(req); /* a misuse, but the request must still finish */
        return TG_EINVAL;
    }
    int rc = TG_ECLOSED;
    if (stream_live(s)) {
        rc = h2_respond(s, status, hdrs, nhdrs, body, len, 0);
        if (rc == 0) s->resp_bytes += len;
    }
    h2_finish_call(s);
    return rc;
}

int tg_h2_resp_start(tg_req_t *req, int status, const tg_header_t *hdrs, size_t nhdrs)
{
    h2s_t *s = (h2s_t *)req;
    if (!s->in_handler || s->started) return TG_EINVAL;
    s->started = 1;
    if (!stream_live(s)) return TG_ECLOSED;
    int rc = h2_respond(s, status, hdrs, nhdrs, NULL, 0, 1);
    h2_after_call(s->h);
    return rc;
}

int tg_h2_resp_write(tg_req_t *req, const void *data, size_t len)
{
    h2s_t *s = (h2s_t *)req;
    if (!s->in_handler || !s->started) return TG_EINVAL;
    if (!stream_live(s)) return TG_ECLOSED;
    h2_t *h = s->h;
    const tg_http_config_t *cfg = h2_cfg(h);
    if (len && s->provider) {
        size_t before = stream_queued(s);
        if (tg_buf_append(&s->out, data, len)) return TG_ENOMEM;
        if (before <= cfg->write_low_water && stream_queued(s) > cfg->write_low_water) {
            s->send_due = h2_now(h) + cfg->send_timeout_ms;
            h2_due(h, s->send_due);
        }
        if (s->deferred) {
            s->deferred = 0;
            nghttp2_session_resume_data(h->ss, s->id);
        }
    }
    s->resp_bytes += len;
    h2_after_call(h); /* s is the handler's: still here */
    if (stream_queued(s) > cfg->write_high_water) {
        s->drain_wanted = 1;
        return 1;
    }
    return 0;
}

int tg_h2_resp_end(tg_req_t *req)
{
    h2s_t *s = (h2s_t *)req;
    if (!s->in_handler) return TG_EINVAL;
    if (!s->started) return tg_h2_resp_send(req, 200, NULL, 0, "", 0);
    int rc = TG_ECLOSED;
    if (stream_live(s)) {
        rc = TG_OK;
        s->eof = 1;
        if (s->deferred) {
            s->deferred = 0;
            nghttp2_session_resume_data(s->h->ss, s->id);
        }
    }
    h2_finish_call(s);
    return rc;
}

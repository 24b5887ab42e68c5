/* mock_upstream.c - a fast mock OpenAI-compatible upstream for tollgate's benchmarks.
 *
 * Serves POST /v1/chat/completions over HTTP/1.1 keep-alive on 127.0.0.1. A non-streamed request
 * gets an instant chat.completion with fixed usage (12 prompt, 34 completion tokens). A request
 * with "stream": true gets Server-Sent Events in chunked transfer-encoding: --chunks N content
 * chunks --delay-ms D apart, a usage chunk when the body asked for "include_usage": true, then
 * "data: [DONE]". GET /v1/models and GET /health answer too; anything else is a 404.
 *
 * Built to cost the measured system nothing: N threads each run their own libuv loop on their own
 * SO_REUSEPORT listening socket (libuv 1.44 has no flag for it, so the socket is made by hand and
 * handed to uv_tcp_open), responses are preformatted, writes go out with uv_try_write first, and a
 * stream is one uv_timer_t, not a thread, so 10,000+ open streams cost a few hundred bytes each.
 * Request bodies are scanned with plain substring search, not parsed: this is a mock.
 *
 * On SIGINT/SIGTERM it prints its counters (requests, streams started/finished) and exits. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <llhttp.h>
#include <uv.h>

/* a request body past MAX_BODY is answered 413 and the connection closed */
#define MAX_BODY  (1 << 20)
#define MAX_PATH  256
#define READ_SIZE 65536

static struct {
    const char *host;
    int port;
    int threads;
    int chunks;
    int delay_ms;
    int backlog;
} opt = {"127.0.0.1", 18080, 1, 20, 0, 4096};

static atomic_ulong n_requests, n_streams_started, n_streams_done, n_conns, n_conns_open;

typedef struct conn_s {
    uv_tcp_t tcp;
    uv_timer_t timer; /* drives a stream; initialised with the connection, closed with it */
    llhttp_t parser;
    int closing;
    int handles_open; /* tcp + timer: the struct is freed when both close callbacks ran */
    /* the request being parsed */
    char path[MAX_PATH];
    size_t path_len;
    char *body;
    size_t body_len, body_cap;
    int too_large;
    /* the stream being sent (the parser is paused meanwhile; unparsed bytes wait in pending) */
    int streaming;
    int stream_usage;
    int stream_keep_alive;
    int chunk_index;
    char *pending;
    size_t pending_len;
} conn_t;

typedef struct {
    uv_write_t req;
    char data[];
} write_req_t;

static llhttp_settings_t parser_settings;
static __thread char tls_read_buf[READ_SIZE]; /* one per loop thread: reads never overlap */

static void conn_close(conn_t *c);
static void parse(conn_t *c, const char *data, size_t len);

/* ---- writing ---- */

static void write_done(uv_write_t *req, int status)
{
    free(req);
    (void)status; /* a failed write shows up as a read error too; the read side closes */
}

/* Sends len bytes, copying only what the kernel did not take at once. Order is kept: libuv's
 * uv_try_write refuses (UV_EAGAIN) while earlier writes are queued. */
static void conn_send(conn_t *c, const char *data, size_t len)
{
    if (c->closing) return;
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&c->tcp, &b, 1);
    if (n == (int)len) return;
    if (n < 0 && n != UV_EAGAIN) {
        conn_close(c);
        return;
    }
    if (n < 0) n = 0;
    size_t rest = len - (size_t)n;
    write_req_t *w = malloc(sizeof(*w) + rest);
    if (!w) {
        conn_close(c);
        return;
    }
    memcpy(w->data, data + n, rest);
    b = uv_buf_init(w->data, (unsigned)rest);
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, write_done) != 0) {
        free(w);
        conn_close(c);
    }
}

static void send_simple(conn_t *c, int status, const char *reason, const char *ctype,
                        const char *body, int keep_alive)
{
    char buf[4096];
    size_t blen = strlen(body);
    int n = snprintf(buf, sizeof(buf),
                     "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
                     "Connection: %s\r\n\r\n%s",
                     status, reason, ctype, blen, keep_alive ? "keep-alive" : "close", body);
    if (n < 0 || (size_t)n >= sizeof(buf)) n = 0;
    conn_send(c, buf, (size_t)n);
}

/* ---- the chat completion answers ---- */

static const char completion_body[] =
    "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion\",\"created\":1700000000,"
    "\"model\":\"mock-model\",\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\","
    "\"content\":\"This is a mock completion from tollgate's benchmark upstream.\"},"
    "\"logprobs\":null,\"finish_reason\":\"stop\"}],"
    "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,\"total_tokens\":46}}";

static char completion_ka[1024], completion_close[1024];
static size_t completion_ka_len, completion_close_len;

static void prepare_completion(void)
{
    const char *fmt = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\nConnection: %s\r\n\r\n%s";
    completion_ka_len = (size_t)snprintf(completion_ka, sizeof(completion_ka), fmt,
                                         strlen(completion_body), "keep-alive", completion_body);
    completion_close_len = (size_t)snprintf(completion_close, sizeof(completion_close), fmt,
                                            strlen(completion_body), "close", completion_body);
}

/* Appends one SSE event "data: <json>\n\n" as one chunk of chunked transfer-encoding. */
static size_t sse_chunk(char *out, size_t cap, const char *json)
{
    size_t jl = strlen(json);
    size_t payload = 6 + jl + 2; /* "data: " json "\n\n" */
    int n = snprintf(out, cap, "%zx\r\ndata: %s\n\n\r\n", payload, json);
    return (n < 0 || (size_t)n >= cap) ? 0 : (size_t)n;
}

static void stream_end(conn_t *c);

/* Sends the next event of the stream: chunk_index 0..chunks-1 carry content (the first also the
 * role, the last the finish_reason); after them come usage (if asked), [DONE] and the last chunk.
 */
static void stream_step(conn_t *c)
{
    char json[512], out[2048];
    size_t len = 0;
    int i = c->chunk_index++;
    if (i < opt.chunks) {
        snprintf(json, sizeof(json),
                 "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\","
                 "\"created\":1700000000,\"model\":\"mock-model\",\"choices\":[{\"index\":0,"
                 "\"delta\":{%s\"content\":\"tok%d \"},\"logprobs\":null,\"finish_reason\":%s}]}",
                 i == 0 ? "\"role\":\"assistant\"," : "", i,
                 i == opt.chunks - 1 ? "\"stop\"" : "null");
        len = sse_chunk(out, sizeof(out), json);
        conn_send(c, out, len);
        return;
    }
    if (c->stream_usage) {
        len = sse_chunk(out, sizeof(out),
                        "{\"id\":\"chatcmpl-mock\",\"object\":\"chat.completion.chunk\","
                        "\"created\":1700000000,\"model\":\"mock-model\",\"choices\":[],"
                        "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34,"
                        "\"total_tokens\":46}}");
    }
    len += sse_chunk(out + len, sizeof(out) - len, "[DONE]");
    memcpy(out + len, "0\r\n\r\n", 5);
    len += 5;
    conn_send(c, out, len);
    stream_end(c);
}

static void stream_timer_cb(uv_timer_t *t)
{
    conn_t *c = t->data;
    if (c->closing || !c->streaming) return;
    stream_step(c);
    if (c->streaming && !c->closing) uv_timer_start(&c->timer, stream_timer_cb, opt.delay_ms, 0);
}

static void stream_start(conn_t *c)
{
    static const char head[] = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                               "Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\n"
                               "Connection: keep-alive\r\n\r\n";
    atomic_fetch_add_explicit(&n_streams_started, 1, memory_order_relaxed);
    c->streaming = 1;
    c->chunk_index = 0;
    conn_send(c, head, sizeof(head) - 1);
    if (opt.delay_ms <= 0) {
        while (c->streaming && !c->closing)
            stream_step(c);
        return;
    }
    /* the first chunk goes out at once (time to first token ~0), the rest delay_ms apart */
    stream_step(c);
    if (c->streaming && !c->closing) uv_timer_start(&c->timer, stream_timer_cb, opt.delay_ms, 0);
}

static void stream_end(conn_t *c)
{
    c->streaming = 0;
    atomic_fetch_add_explicit(&n_streams_done, 1, memory_order_relaxed);
    if (!c->stream_keep_alive) {
        conn_close(c);
        return;
    }
    /* resume whatever the client pipelined behind the stream */
    llhttp_resume(&c->parser);
    if (c->pending) {
        char *p = c->pending;
        size_t n = c->pending_len;
        c->pending = NULL;
        c->pending_len = 0;
        parse(c, p, n);
        free(p);
    }
}

/* Finds "key" followed by optional spaces, a colon, optional spaces and the word true. */
static int json_flag_true(const char *s, size_t len, const char *key)
{
    size_t kl = strlen(key);
    const char *end = s + len;
    for (const char *p = memmem(s, len, key, kl); p; p = memmem(p, (size_t)(end - p), key, kl)) {
        p += kl;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p >= end || *p != ':') continue;
        p++;
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (end - p >= 4 && memcmp(p, "true", 4) == 0) return 1;
    }
    return 0;
}

/* ---- request parsing (llhttp callbacks) ---- */

static int on_message_begin(llhttp_t *p)
{
    conn_t *c = p->data;
    c->path_len = 0;
    c->body_len = 0;
    c->too_large = 0;
    return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    size_t room = sizeof(c->path) - 1 - c->path_len;
    if (len > room) len = room;
    memcpy(c->path + c->path_len, at, len);
    c->path_len += len;
    c->path[c->path_len] = 0;
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    conn_t *c = p->data;
    if (c->too_large) return 0;
    if (c->body_len + len > MAX_BODY) {
        c->too_large = 1;
        return 0;
    }
    if (c->body_len + len > c->body_cap) {
        size_t cap = c->body_cap ? c->body_cap : 4096;
        while (cap < c->body_len + len)
            cap *= 2;
        char *nb = realloc(c->body, cap);
        if (!nb) {
            c->too_large = 1;
            return 0;
        }
        c->body = nb;
        c->body_cap = cap;
    }
    memcpy(c->body + c->body_len, at, len);
    c->body_len += len;
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    conn_t *c = p->data;
    int ka = llhttp_should_keep_alive(p);
    int method = llhttp_get_method(p);
    char *q = strchr(c->path, '?');
    if (q) *q = 0;
    atomic_fetch_add_explicit(&n_requests, 1, memory_order_relaxed);

    if (c->too_large) {
        send_simple(c, 413, "Payload Too Large", "application/json",
                    "{\"error\":{\"message\":\"body too large\",\"type\":\"mock\"}}", 0);
        conn_close(c);
        return HPE_PAUSED;
    }
    if (method == HTTP_POST && strcmp(c->path, "/v1/chat/completions") == 0) {
        if (json_flag_true(c->body, c->body_len, "\"stream\"")) {
            c->stream_usage = json_flag_true(c->body, c->body_len, "\"include_usage\"");
            c->stream_keep_alive = ka;
            stream_start(c);
            /* pause parsing until the stream is over; a finished stream already resumed it */
            return c->streaming ? HPE_PAUSED : 0;
        }
        if (ka)
            conn_send(c, completion_ka, completion_ka_len);
        else
            conn_send(c, completion_close, completion_close_len);
    } else if (method == HTTP_GET && strcmp(c->path, "/v1/models") == 0) {
        send_simple(c, 200, "OK", "application/json",
                    "{\"object\":\"list\",\"data\":[{\"id\":\"mock-model\",\"object\":\"model\","
                    "\"created\":1700000000,\"owned_by\":\"mock\"}]}",
                    ka);
    } else if (method == HTTP_GET && strcmp(c->path, "/health") == 0) {
        send_simple(c, 200, "OK", "text/plain", "ok\n", ka);
    } else {
        send_simple(c, 404, "Not Found", "application/json",
                    "{\"error\":{\"message\":\"not found\",\"type\":\"mock\"}}", ka);
    }
    if (!ka) {
        conn_close(c);
        return HPE_PAUSED;
    }
    return 0;
}

static void parse(conn_t *c, const char *data, size_t len)
{
    if (c->closing) return;
    llhttp_errno_t err = llhttp_execute(&c->parser, data, len);
    if (err == HPE_OK) return;
    if (err == HPE_PAUSED) {
        if (c->closing || !c->streaming) return;
        /* keep what follows the paused request for when the stream ends */
        const char *pos = llhttp_get_error_pos(&c->parser);
        size_t used = pos ? (size_t)(pos - data) : len;
        if (used < len) {
            size_t rest = len - used;
            char *np = realloc(c->pending, c->pending_len + rest);
            if (!np) {
                conn_close(c);
                return;
            }
            memcpy(np + c->pending_len, data + used, rest);
            c->pending = np;
            c->pending_len += rest;
        }
        return;
    }
    send_simple(c, 400, "Bad Request", "application/json",
                "{\"error\":{\"message\":\"bad request\",\"type\":\"mock\"}}", 0);
    conn_close(c);
}

/* ---- connections ---- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(tls_read_buf, sizeof(tls_read_buf));
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    conn_t *c = s->data;
    if (nread < 0) {
        conn_close(c);
        return;
    }
    if (nread == 0) return;
    if (c->streaming) {
        /* parser is paused: hold the bytes until the stream is over (bounded) */
        if (c->pending_len + (size_t)nread > MAX_BODY) {
            conn_close(c);
            return;
        }
        char *np = realloc(c->pending, c->pending_len + (size_t)nread);
        if (!np) {
            conn_close(c);
            return;
        }
        memcpy(np + c->pending_len, buf->base, (size_t)nread);
        c->pending = np;
        c->pending_len += (size_t)nread;
        return;
    }
    parse(c, buf->base, (size_t)nread);
}

static void handle_closed(uv_handle_t *h)
{
    conn_t *c = h->data;
    if (--c->handles_open > 0) return;
    free(c->body);
    free(c->pending);
    free(c);
    atomic_fetch_sub_explicit(&n_conns_open, 1, memory_order_relaxed);
}

static void conn_close(conn_t *c)
{
    if (c->closing) return;
    c->closing = 1;
    uv_timer_stop(&c->timer);
    uv_close((uv_handle_t *)&c->timer, handle_closed);
    uv_close((uv_handle_t *)&c->tcp, handle_closed);
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) return;
    conn_t *c = calloc(1, sizeof(*c));
    if (!c) return;
    uv_tcp_init(server->loop, &c->tcp);
    uv_timer_init(server->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->handles_open = 2;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    atomic_fetch_add_explicit(&n_conns, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&n_conns_open, 1, memory_order_relaxed);
    uv_tcp_nodelay(&c->tcp, 1);
    llhttp_init(&c->parser, HTTP_REQUEST, &parser_settings);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, alloc_cb, read_cb);
}

/* ---- threads and start-up ---- */

static int listen_socket(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) return -1;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) goto fail;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)opt.port)};
    if (inet_pton(AF_INET, opt.host, &sa.sin_addr) != 1) goto fail;
    if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) goto fail;
    if (listen(fd, opt.backlog) != 0) goto fail;
    return fd;
fail:
    perror("mock_upstream: listen socket");
    close(fd);
    return -1;
}

typedef struct {
    uv_loop_t loop;
    uv_tcp_t server;
    int fd;
    pthread_t tid;
} worker_t;

static int worker_setup(worker_t *w)
{
    w->fd = listen_socket();
    if (w->fd < 0) return -1;
    uv_loop_init(&w->loop);
    uv_tcp_init(&w->loop, &w->server);
    int rc = uv_tcp_open(&w->server, w->fd);
    if (rc == 0) rc = uv_listen((uv_stream_t *)&w->server, opt.backlog, on_connection);
    if (rc != 0) {
        fprintf(stderr, "mock_upstream: listen: %s\n", uv_strerror(rc));
        return -1;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    worker_t *w = arg;
    uv_run(&w->loop, UV_RUN_DEFAULT);
    return NULL;
}

static void on_signal(uv_signal_t *s, int signum)
{
    (void)s;
    fprintf(stderr,
            "mock_upstream: signal %d: requests=%lu streams_started=%lu streams_done=%lu "
            "connections=%lu open=%lu\n",
            signum, atomic_load(&n_requests), atomic_load(&n_streams_started),
            atomic_load(&n_streams_done), atomic_load(&n_conns), atomic_load(&n_conns_open));
    fflush(stderr);
    _exit(0);
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void usage(FILE *f)
{
    fprintf(f, "usage: mock_upstream [--host 127.0.0.1] [--port 18080] [--threads 1]\n"
               "                     [--chunks 20] [--delay-ms 0] [--backlog 4096]\n"
               "Mock OpenAI upstream: POST /v1/chat/completions (stream or not), GET /v1/models,\n"
               "GET /health. Prints its counters to stderr on SIGINT/SIGTERM.\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"host", required_argument, 0, 'H'},     {"port", required_argument, 0, 'p'},
        {"threads", required_argument, 0, 't'},  {"chunks", required_argument, 0, 'c'},
        {"delay-ms", required_argument, 0, 'd'}, {"backlog", required_argument, 0, 'b'},
        {"help", no_argument, 0, 'h'},           {0, 0, 0, 0}};
    int ch;
    while ((ch = getopt_long(argc, argv, "H:p:t:c:d:b:h", longopts, NULL)) != -1) {
        switch (ch) {
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 't':
            opt.threads = atoi(optarg);
            break;
        case 'c':
            opt.chunks = atoi(optarg);
            break;
        case 'd':
            opt.delay_ms = atoi(optarg);
            break;
        case 'b':
            opt.backlog = atoi(optarg);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    if (opt.port <= 0 || opt.port > 65535 || opt.threads < 1 || opt.threads > 256 ||
        opt.chunks < 1 || opt.delay_ms < 0) {
        usage(stderr);
        return 2;
    }
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    prepare_completion();
    llhttp_settings_init(&parser_settings);
    parser_settings.on_message_begin = on_message_begin;
    parser_settings.on_url = on_url;
    parser_settings.on_body = on_body;
    parser_settings.on_message_complete = on_message_complete;

    worker_t *workers = calloc((size_t)opt.threads, sizeof(*workers));
    if (!workers) return 1;
    for (int i = 0; i < opt.threads; i++)
        if (worker_setup(&workers[i]) != 0) return 1;

    /* thread 0 is the main thread; it also owns the signal handlers */
    uv_signal_t sigint, sigterm;
    uv_signal_init(&workers[0].loop, &sigint);
    uv_signal_init(&workers[0].loop, &sigterm);
    uv_signal_start(&sigint, on_signal, SIGINT);
    uv_signal_start(&sigterm, on_signal, SIGTERM);
    for (int i = 1; i < opt.threads; i++)
        pthread_create(&workers[i].tid, NULL, worker_main, &workers[i]);
    printf("mock_upstream listening on http://%s:%d (threads=%d chunks=%d delay_ms=%d)\n", opt.host,
           opt.port, opt.threads, opt.chunks, opt.delay_ms);
    fflush(stdout);
    worker_main(&workers[0]);
    return 0;
}

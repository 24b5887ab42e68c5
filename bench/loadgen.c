/* loadgen.c - an open-loop, fixed-rate HTTP/1.1 load generator for tollgate's benchmarks.
 *
 * wrk tells how many requests a server can take flat out; this tells how fast it answers at a
 * given rate, as wrk2 does (Debian has no wrk2). Request i is due at t0 + i/rate whatever
 * happened to the ones before it, and its latency is counted from that due time, not from when a
 * connection was free to send it: a server that stalls is charged for the whole queue it built
 * (no "coordinated omission"). Pacing uses a timerfd (ns resolution, absolute deadlines) polled
 * by the libuv loop, since uv timers only have millisecond resolution. Latencies go into a
 * log-linear histogram exact to 1 us below 2 ms and within 0.1% above.
 *
 * Two modes:
 *   fixed rate (default): --rate R for --duration S over a pool of --connections C keep-alive
 *       connections; prints p50/p90/p99/p99.9/max, achieved rate, errors and non-2xx.
 *   --sse-hold N: opens N streaming requests (ramped over --ramp-ms), reads their SSE events
 *       and holds each until the server ends it; a stream completed when it got 200, a
 *       "data: [DONE]" event and a clean end of message. Prints completed/failed, the peak
 *       number held at once, time to first event and stream durations.
 *
 * The last line of output is machine-readable: "RESULT key=value ...". Single-threaded: one core
 * is plenty for the rates it is meant for (thousands of req/s, tens of thousands of streams). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <llhttp.h>
#include <uv.h>

#define MAX_HEADERS 32

/* ---- histogram: microsecond values, log-linear (HdrHistogram's layout, 3 significant digits) ----
 */

#define H_SUB     1024 /* sub-buckets per power of two above 2048 us */
#define H_BUCKETS 24   /* up to 2^34 us (~4.7 hours) */
#define H_SIZE    (2 * H_SUB + (H_BUCKETS - 1) * H_SUB)

typedef struct {
    uint64_t counts[H_SIZE];
    uint64_t total;
    uint64_t max;
    uint64_t min;
    double sum;
} hist_t;

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static int msb64(uint64_t v)
{
    return 63 - __builtin_clzll(v);
}

static size_t hist_index(uint64_t v)
{
    if (v < 2 * H_SUB) return (size_t)v;
    int k = msb64(v) - 10; /* >= 1: bucket k has sub-buckets 2^k us wide */
    if (k >= H_BUCKETS) return H_SIZE - 1;
    return (size_t)(2 * H_SUB + (k - 1) * H_SUB + (int)((v >> k) - H_SUB));
}

/* The lowest value that maps to index i. */
static uint64_t hist_value(size_t i)
{
    if (i < 2 * H_SUB) return i;
    size_t k = (i - 2 * H_SUB) / H_SUB + 1;
    uint64_t sub = (i - 2 * H_SUB) % H_SUB + H_SUB;
    return sub << k;
}

static void hist_add(hist_t *h, uint64_t us)
{
    h->counts[hist_index(us)]++;
    if (h->total == 0 || us < h->min) h->min = us;
    if (us > h->max) h->max = us;
    h->total++;
    h->sum += (double)us;
}

/* The value at quantile q (0..1): the bucket holding the ceil(q*total)-th smallest value. */
static uint64_t hist_quantile(const hist_t *h, double q)
{
    if (h->total == 0) return 0;
    uint64_t rank = (uint64_t)(q * (double)h->total + 0.999999);
    if (rank < 1) rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < H_SIZE; i++) {
        seen += h->counts[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- options and the prebuilt request ---- */

static struct {
    char host[256];
    int port;
    char path[2048];
    const char *method;
    double rate;
    double duration;
    double warmup;
    double grace; /* seconds to wait for stragglers after the last due time */
    int connections;
    const char *headers[MAX_HEADERS];
    int nheaders;
    const char *body_file;
    int sse_hold;
    int ramp_ms;
    int spin_us;
    int verbose;
} opt = {.port = 80,
         .path = "/",
         .rate = 1000,
         .duration = 10,
         .warmup = 0,
         .grace = 10,
         .connections = 64,
         .ramp_ms = 2000};

static char *request;
static size_t request_len;
static struct sockaddr_in target;
static uv_loop_t *loop;

static void die(const char *msg)
{
    fprintf(stderr, "loadgen: %s\n", msg);
    exit(2);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + n, 1, cap - n, f)) > 0) {
        n += r;
        if (n == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    fclose(f);
    *len = n;
    return buf;
}

/* Accepts http://host:port/path, host:port/path, or host:port with the path in --path. */
static void parse_url(const char *url)
{
    if (strncmp(url, "http://", 7) == 0) url += 7;
    if (strncmp(url, "https://", 8) == 0) die("https is not supported");
    const char *slash = strchr(url, '/');
    size_t hl = slash ? (size_t)(slash - url) : strlen(url);
    char hostport[sizeof(opt.host)];
    if (hl >= sizeof(hostport)) die("url: host too long");
    memcpy(hostport, url, hl);
    hostport[hl] = 0;
    char *colon = strrchr(hostport, ':');
    if (colon) {
        *colon = 0;
        opt.port = atoi(colon + 1);
    }
    snprintf(opt.host, sizeof(opt.host), "%s",
             strcmp(hostport, "localhost") ? hostport : "127.0.0.1");
    if (slash) snprintf(opt.path, sizeof(opt.path), "%s", slash);
}

static void build_request(void)
{
    size_t blen = 0;
    char *body = NULL;
    if (opt.body_file) {
        body = read_file(opt.body_file, &blen);
        if (!body) die("cannot read --body-file");
    }
    if (!opt.method) opt.method = body ? "POST" : "GET";
    size_t cap = 4096 + blen + strlen(opt.path);
    for (int i = 0; i < opt.nheaders; i++)
        cap += strlen(opt.headers[i]) + 2;
    request = malloc(cap);
    if (!request) die("out of memory");
    size_t n = (size_t)snprintf(request, cap, "%s %s HTTP/1.1\r\nHost: %s:%d\r\n", opt.method,
                                opt.path, opt.host, opt.port);
    int has_ctype = 0;
    for (int i = 0; i < opt.nheaders; i++) {
        if (strncasecmp(opt.headers[i], "content-type:", 13) == 0) has_ctype = 1;
        n += (size_t)snprintf(request + n, cap - n, "%s\r\n", opt.headers[i]);
    }
    if (body && !has_ctype)
        n += (size_t)snprintf(request + n, cap - n, "Content-Type: application/json\r\n");
    if (body || strcmp(opt.method, "GET") != 0)
        n += (size_t)snprintf(request + n, cap - n, "Content-Length: %zu\r\n", blen);
    n += (size_t)snprintf(request + n, cap - n, "\r\n");
    if (blen) memcpy(request + n, body, blen);
    request_len = n + blen;
    free(body);
    if (uv_ip4_addr(opt.host, opt.port, &target) != 0) die("--url: host must be an IPv4 address");
}

/* ---- connections, shared by both modes ---- */

typedef struct slot_s slot_t;

typedef struct {
    uv_tcp_t tcp;
    uv_connect_t creq;
    llhttp_t parser;
    slot_t *slot;
    int dead; /* closed or closing */
} sock_t;

struct slot_s {
    sock_t *sock;
    int id;
    int ready; /* connected and not in a request */
    int busy;
    uint64_t due_ns; /* of the request in flight */
    uint64_t sent_ns;
    int measured;
    int failed_connect; /* the last attempt failed: reconnect after a pause */
    uv_timer_t retry;
    slot_t *next_idle;
    int in_idle; /* on the idle stack (maybe stale: checked when popped) */
    /* SSE state */
    int status;
    int got_event;
    int done_event;
    uint64_t events;
    char line[24]; /* the first bytes of the current SSE line */
    size_t line_len;
    int line_overflow;
};

static llhttp_settings_t settings;
static slot_t *slots;
static int nslots;

/* counters */
static uint64_t n_ok, n_non2xx, n_errors, n_connect_errors, n_timeouts, n_sent;
static hist_t lat, svc, lag, ttfe, sdur;

static void sock_close(sock_t *s);
static void slot_connect(slot_t *sl);

static void on_sock_closed(uv_handle_t *h)
{
    free(h->data);
}

static void sock_close(sock_t *s)
{
    if (s->dead) return;
    s->dead = 1;
    if (s->slot && s->slot->sock == s) s->slot->sock = NULL;
    uv_close((uv_handle_t *)&s->tcp, on_sock_closed);
}

static void write_done(uv_write_t *req, int status)
{
    (void)status; /* a failed write also fails the read side, which counts it */
    free(req);
}

static int sock_send(sock_t *s, const char *data, size_t len)
{
    uv_buf_t b = uv_buf_init((char *)data, (unsigned)len);
    int n = uv_try_write((uv_stream_t *)&s->tcp, &b, 1);
    if (n == (int)len) return 0;
    if (n < 0 && n != UV_EAGAIN) return n;
    if (n < 0) n = 0;
    uv_write_t *w = malloc(sizeof(*w));
    if (!w) return UV_ENOMEM;
    b = uv_buf_init((char *)data + n, (unsigned)(len - (size_t)n)); /* data is static */
    int rc = uv_write(w, (uv_stream_t *)&s->tcp, &b, 1, write_done);
    if (rc != 0) free(w);
    return rc;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    static char rbuf[65536]; /* single-threaded: one read at a time */
    (void)h;
    (void)suggested;
    *buf = uv_buf_init(rbuf, sizeof(rbuf));
}

/* ---- fixed-rate mode ---- */

static uint64_t t0_ns, measure_from_ns, last_due_ns, end_deadline_ns;
static uint64_t total_requests, next_due_idx, next_send_idx, completed_idx_count;
static uint64_t first_measured_done_ns, last_measured_done_ns, measured_ok_count;
static double interval_ns;
static slot_t *idle_head;
static int timer_fd = -1;
static uv_poll_t pacer;
static uv_timer_t finisher;

static uint64_t due_of(uint64_t i)
{
    return t0_ns + (uint64_t)((double)i * interval_ns);
}

static void rate_report_and_exit(void);

static void push_idle(slot_t *sl)
{
    if (sl->in_idle) return;
    sl->in_idle = 1;
    sl->next_idle = idle_head;
    idle_head = sl;
}

/* Gives due requests to idle connections (LIFO keeps a few connections hot). */
static void dispatch(void)
{
    while (next_send_idx < next_due_idx && idle_head) {
        slot_t *sl = idle_head;
        idle_head = sl->next_idle;
        sl->in_idle = 0;
        if (!sl->ready || !sl->sock || sl->busy) continue; /* stale entry */
        sl->ready = 0;
        sl->busy = 1;
        sl->due_ns = due_of(next_send_idx);
        sl->measured = sl->due_ns >= measure_from_ns;
        next_send_idx++;
        sl->sent_ns = uv_hrtime();
        if (sl->measured) hist_add(&lag, (sl->sent_ns - sl->due_ns) / 1000);
        n_sent++;
        if (sock_send(sl->sock, request, request_len) != 0) {
            n_errors++;
            sl->busy = 0;
            completed_idx_count++;
            sock_close(sl->sock);
            slot_connect(sl);
        }
    }
}

static void check_done(void)
{
    if (next_due_idx >= total_requests && completed_idx_count >= total_requests)
        rate_report_and_exit();
}

static void arm_pacer(void)
{
    if (next_due_idx >= total_requests) return;
    uint64_t t = due_of(next_due_idx) - (uint64_t)opt.spin_us * 1000;
    struct itimerspec its = {{0, 0}, {(time_t)(t / 1000000000ull), (long)(t % 1000000000ull)}};
    if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL) != 0) die("timerfd_settime");
}

static void pacer_cb(uv_poll_t *p, int status, int events)
{
    (void)p;
    (void)status;
    (void)events;
    uint64_t expirations;
    if (read(timer_fd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN) die("timerfd");
    uint64_t now = uv_hrtime();
    /* woken spin_us early on purpose: spin the rest, since a VM's timer wake-up alone can be
     * late by tens of microseconds and at p99 by milliseconds */
    if (opt.spin_us && next_due_idx < total_requests) {
        uint64_t due = due_of(next_due_idx);
        if (due > now && due - now <= (uint64_t)opt.spin_us * 1000)
            while ((now = uv_hrtime()) < due)
                cpu_relax();
    }
    while (next_due_idx < total_requests && due_of(next_due_idx) <= now)
        next_due_idx++;
    dispatch();
    arm_pacer();
}

static void rate_on_response(slot_t *sl, int keep_alive)
{
    uint64_t now = uv_hrtime();
    int status = sl->sock->parser.status_code;
    if (sl->measured) {
        hist_add(&lat, (now - sl->due_ns) / 1000);
        hist_add(&svc, (now - sl->sent_ns) / 1000);
        if (status >= 200 && status < 300) {
            measured_ok_count++;
            if (!first_measured_done_ns) first_measured_done_ns = now;
            last_measured_done_ns = now;
        }
    }
    if (status >= 200 && status < 300)
        n_ok++;
    else
        n_non2xx++;
    sl->busy = 0;
    completed_idx_count++;
    if (!keep_alive) {
        sock_close(sl->sock);
        slot_connect(sl);
    } else {
        sl->ready = 1;
        push_idle(sl);
    }
}

static void finisher_cb(uv_timer_t *t)
{
    (void)t;
    if (uv_hrtime() >= end_deadline_ns) rate_report_and_exit();
}

static void print_hist(const char *name, const hist_t *h)
{
    printf("  %-22s p50 %8lu  p90 %8lu  p99 %8lu  p99.9 %8lu  max %8lu  (us, n=%lu)\n", name,
           (unsigned long)hist_quantile(h, 0.50), (unsigned long)hist_quantile(h, 0.90),
           (unsigned long)hist_quantile(h, 0.99), (unsigned long)hist_quantile(h, 0.999),
           (unsigned long)h->max, (unsigned long)h->total);
}

static void rate_report_and_exit(void)
{
    uint64_t unfinished = total_requests - completed_idx_count;
    n_timeouts += unfinished;
    double span_s = (double)(last_measured_done_ns - measure_from_ns) / 1e9;
    if (span_s < opt.duration) span_s = opt.duration;
    double achieved = measured_ok_count ? (double)measured_ok_count / span_s : 0;
    printf("loadgen: %s %s:%d%s  rate %.0f/s  duration %.1fs (+%.1fs warm-up)  connections %d\n",
           opt.method, opt.host, opt.port, opt.path, opt.rate, opt.duration, opt.warmup,
           opt.connections);
    print_hist("latency (from due):", &lat);
    print_hist("service (from send):", &svc);
    print_hist("send lag (due->send):", &lag);
    printf("  requests %lu  sent %lu  2xx %lu  non-2xx %lu  errors %lu  connect-errors %lu  "
           "timeouts %lu  achieved %.1f req/s\n",
           (unsigned long)total_requests, (unsigned long)n_sent, (unsigned long)n_ok,
           (unsigned long)n_non2xx, (unsigned long)n_errors, (unsigned long)n_connect_errors,
           (unsigned long)n_timeouts, achieved);
    printf("RESULT mode=rate target_rate=%.0f achieved_rate=%.1f p50_us=%lu p90_us=%lu "
           "p99_us=%lu p999_us=%lu max_us=%lu mean_us=%.1f svc_p50_us=%lu svc_p99_us=%lu "
           "lag_p50_us=%lu lag_p99_us=%lu ok=%lu non2xx=%lu errors=%lu connect_errors=%lu "
           "timeouts=%lu\n",
           opt.rate, achieved, (unsigned long)hist_quantile(&lat, 0.50),
           (unsigned long)hist_quantile(&lat, 0.90), (unsigned long)hist_quantile(&lat, 0.99),
           (unsigned long)hist_quantile(&lat, 0.999), (unsigned long)lat.max,
           lat.total ? lat.sum / (double)lat.total : 0.0, (unsigned long)hist_quantile(&svc, 0.50),
           (unsigned long)hist_quantile(&svc, 0.99), (unsigned long)hist_quantile(&lag, 0.50),
           (unsigned long)hist_quantile(&lag, 0.99), (unsigned long)n_ok, (unsigned long)n_non2xx,
           (unsigned long)n_errors, (unsigned long)n_connect_errors, (unsigned long)n_timeouts);
    fflush(stdout);
    exit(0);
}

/* ---- SSE hold mode ---- */

static uint64_t sse_started_ns;
static int sse_opened, sse_finished, sse_active, sse_peak;
static uint64_t sse_completed, sse_non200, sse_reset, sse_no_done, sse_events;
static uv_timer_t ramp_timer, sse_deadline;

static void sse_report_and_exit(void);

static void sse_finish(slot_t *sl, int completed)
{
    if (sl->busy) {
        sl->busy = 0;
        sse_finished++;
        if (sl->status == 200) sse_active--;
        if (completed) {
            sse_completed++;
            hist_add(&sdur, (uv_hrtime() - sl->sent_ns) / 1000);
        }
    }
    if (sl->sock) sock_close(sl->sock);
    if (sse_finished >= opt.sse_hold) sse_report_and_exit();
}

/* Scans SSE body bytes line by line: counts "data:" lines, notes "data: [DONE]". */
static void sse_scan(slot_t *sl, const char *p, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char ch = p[i];
        if (ch == '\n') {
            if (sl->line_len >= 5 && memcmp(sl->line, "data:", 5) == 0) {
                if (!sl->got_event) {
                    sl->got_event = 1;
                    hist_add(&ttfe, (uv_hrtime() - sl->sent_ns) / 1000);
                }
                sl->events++;
                sse_events++;
                const char *v = sl->line + 5;
                size_t vl = sl->line_len - 5;
                while (vl && *v == ' ') {
                    v++;
                    vl--;
                }
                while (vl && v[vl - 1] == '\r')
                    vl--;
                if (!sl->line_overflow && vl == 6 && memcmp(v, "[DONE]", 6) == 0)
                    sl->done_event = 1;
            }
            sl->line_len = 0;
            sl->line_overflow = 0;
        } else if (sl->line_len < sizeof(sl->line)) {
            sl->line[sl->line_len++] = ch;
        } else {
            sl->line_overflow = 1;
        }
    }
}

static void ramp_cb(uv_timer_t *t)
{
    (void)t;
    uint64_t elapsed_ms = (uv_hrtime() - sse_started_ns) / 1000000;
    int want = opt.ramp_ms > 0
                   ? (int)((double)opt.sse_hold * (double)(elapsed_ms + 1) / (double)opt.ramp_ms)
                   : opt.sse_hold;
    if (want > opt.sse_hold) want = opt.sse_hold;
    while (sse_opened < want) {
        slot_t *sl = &slots[sse_opened++];
        sl->busy = 1;
        sl->sent_ns = uv_hrtime();
        slot_connect(sl);
    }
    if (sse_opened >= opt.sse_hold) uv_timer_stop(&ramp_timer);
}

static void sse_deadline_cb(uv_timer_t *t)
{
    (void)t;
    sse_report_and_exit();
}

static void sse_report_and_exit(void)
{
    uint64_t unfinished = (uint64_t)opt.sse_hold - (uint64_t)sse_finished;
    double took = (double)(uv_hrtime() - sse_started_ns) / 1e9;
    printf("loadgen: SSE hold %d streams to %s:%d%s (ramp %d ms) in %.1fs\n", opt.sse_hold,
           opt.host, opt.port, opt.path, opt.ramp_ms, took);
    print_hist("time to first event:", &ttfe);
    print_hist("stream duration:", &sdur);
    printf("  completed %lu  peak-held %d  non-200 %lu  connect-errors %lu  reset %lu  "
           "ended-without-[DONE] %lu  unfinished-at-deadline %lu  events %lu\n",
           (unsigned long)sse_completed, sse_peak, (unsigned long)sse_non200,
           (unsigned long)n_connect_errors, (unsigned long)sse_reset, (unsigned long)sse_no_done,
           (unsigned long)unfinished, (unsigned long)sse_events);
    printf("RESULT mode=sse streams=%d completed=%lu peak_held=%d non200=%lu connect_errors=%lu "
           "reset=%lu no_done=%lu unfinished=%lu events=%lu ttfe_p50_us=%lu ttfe_p99_us=%lu "
           "dur_p50_us=%lu dur_max_us=%lu seconds=%.1f\n",
           opt.sse_hold, (unsigned long)sse_completed, sse_peak, (unsigned long)sse_non200,
           (unsigned long)n_connect_errors, (unsigned long)sse_reset, (unsigned long)sse_no_done,
           (unsigned long)unfinished, (unsigned long)sse_events,
           (unsigned long)hist_quantile(&ttfe, 0.5), (unsigned long)hist_quantile(&ttfe, 0.99),
           (unsigned long)hist_quantile(&sdur, 0.5), (unsigned long)sdur.max, took);
    fflush(stdout);
    exit(0);
}

/* ---- llhttp callbacks (responses) ---- */

static int on_headers_complete(llhttp_t *p)
{
    sock_t *s = p->data;
    slot_t *sl = s->slot;
    if (opt.sse_hold && sl) {
        sl->status = p->status_code;
        if (sl->status == 200) {
            sse_active++;
            if (sse_active > sse_peak) sse_peak = sse_active;
        }
    }
    return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t len)
{
    sock_t *s = p->data;
    if (opt.sse_hold && s->slot) sse_scan(s->slot, at, len);
    return 0;
}

static int on_message_complete(llhttp_t *p)
{
    sock_t *s = p->data;
    slot_t *sl = s->slot;
    if (!sl || s->dead) return HPE_PAUSED;
    if (opt.sse_hold) {
        if (sl->status != 200)
            sse_non200++;
        else if (!sl->done_event)
            sse_no_done++;
        sse_finish(sl, sl->status == 200 && sl->done_event);
        return HPE_PAUSED;
    }
    if (!sl->busy) { /* a response nobody asked for */
        n_errors++;
        sock_close(s);
        slot_connect(sl);
        return HPE_PAUSED;
    }
    rate_on_response(sl, llhttp_should_keep_alive(p));
    dispatch();
    check_done();
    return sl->sock == s ? 0 : HPE_PAUSED;
}

/* The connection broke (error, EOF, bad response): count what it was doing and start over. */
static void sock_failed(sock_t *s)
{
    slot_t *sl = s->slot;
    sock_close(s);
    if (!sl) return;
    if (opt.sse_hold) {
        if (sl->busy && !sl->failed_connect) sse_reset++;
        sse_finish(sl, 0);
        return;
    }
    if (sl->busy) {
        n_errors++;
        sl->busy = 0;
        completed_idx_count++;
    }
    sl->ready = 0;
    slot_connect(sl);
    check_done();
}

static void read_cb(uv_stream_t *st, ssize_t nread, const uv_buf_t *buf)
{
    sock_t *s = st->data;
    if (s->dead) return;
    if (nread == UV_EOF) {
        /* a response delimited by EOF completes here; otherwise an idle close is harmless */
        if (llhttp_finish(&s->parser) == HPE_OK && s->slot && !s->slot->busy && !s->dead) {
            slot_t *sl = s->slot;
            sock_close(s);
            sl->ready = 0;
            if (!opt.sse_hold) slot_connect(sl);
            return;
        }
        if (!s->dead) sock_failed(s);
        return;
    }
    if (nread < 0) {
        sock_failed(s);
        return;
    }
    llhttp_errno_t err = llhttp_execute(&s->parser, buf->base, (size_t)nread);
    if (err != HPE_OK && err != HPE_PAUSED && !s->dead) {
        if (opt.verbose) fprintf(stderr, "loadgen: bad response: %s\n", llhttp_errno_name(err));
        sock_failed(s);
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    sock_t *s = req->data;
    slot_t *sl = s->slot;
    if (s->dead) return;
    if (status != 0) {
        n_connect_errors++;
        if (opt.verbose) fprintf(stderr, "loadgen: connect: %s\n", uv_strerror(status));
        if (sl) sl->failed_connect = 1;
        sock_failed(s);
        return;
    }
    if (sl) sl->failed_connect = 0;
    uv_read_start((uv_stream_t *)&s->tcp, alloc_cb, read_cb);
    if (opt.sse_hold) {
        if (sock_send(s, request, request_len) != 0) sock_failed(s);
        return;
    }
    sl->ready = 1;
    push_idle(sl);
    dispatch();
}

static void retry_cb(uv_timer_t *t)
{
    slot_t *sl = t->data;
    sl->failed_connect = 0;
    slot_connect(sl);
}

static void slot_connect(slot_t *sl)
{
    if (sl->failed_connect) { /* don't spin on a refused port */
        uv_timer_start(&sl->retry, retry_cb, 20, 0);
        return;
    }
    sock_t *s = calloc(1, sizeof(*s));
    if (!s) die("out of memory");
    s->slot = sl;
    sl->sock = s;
    sl->ready = 0;
    uv_tcp_init(loop, &s->tcp);
    s->tcp.data = s;
    s->creq.data = s;
    llhttp_init(&s->parser, HTTP_RESPONSE, &settings);
    s->parser.data = s;
    uv_tcp_nodelay(&s->tcp, 1);
    int rc = uv_tcp_connect(&s->creq, &s->tcp, (const struct sockaddr *)&target, on_connect);
    if (rc != 0) {
        n_connect_errors++;
        sl->failed_connect = 1;
        sock_failed(s);
    }
}

/* ---- main ---- */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: loadgen --url http://HOST:PORT/PATH [options]\n"
            "  --rate R          requests per second, open loop (1000)\n"
            "  --duration S      seconds measured (10); in --sse-hold mode, the overall deadline\n"
            "  --warmup S        seconds sent first and not measured (0)\n"
            "  --connections C   keep-alive connections in the pool (64)\n"
            "  --grace S         seconds to wait for late responses at the end (10)\n"
            "  --method M        default POST with a body, else GET\n"
            "  --header 'K: V'   repeatable\n"
            "  --body-file F     request body\n"
            "  --sse-hold N      open N streaming requests and hold them to their end\n"
            "  --ramp-ms MS      spread the N connections over MS milliseconds (2000)\n"
            "  --spin-us US      wake US microseconds before each due time and spin (0)\n"
            "  --verbose         print connection errors\n");
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {{"url", required_argument, 0, 'u'},
                                             {"path", required_argument, 0, 'P'},
                                             {"rate", required_argument, 0, 'r'},
                                             {"duration", required_argument, 0, 'd'},
                                             {"warmup", required_argument, 0, 'w'},
                                             {"grace", required_argument, 0, 'g'},
                                             {"connections", required_argument, 0, 'c'},
                                             {"header", required_argument, 0, 'H'},
                                             {"body-file", required_argument, 0, 'b'},
                                             {"method", required_argument, 0, 'm'},
                                             {"sse-hold", required_argument, 0, 's'},
                                             {"ramp-ms", required_argument, 0, 'R'},
                                             {"spin-us", required_argument, 0, 'S'},
                                             {"verbose", no_argument, 0, 'v'},
                                             {"help", no_argument, 0, 'h'},
                                             {0, 0, 0, 0}};
    int ch, have_url = 0;
    while ((ch = getopt_long(argc, argv, "u:P:r:d:w:g:c:H:b:m:s:R:S:vh", longopts, NULL)) != -1) {
        switch (ch) {
        case 'u':
            parse_url(optarg);
            have_url = 1;
            break;
        case 'P':
            snprintf(opt.path, sizeof(opt.path), "%s", optarg);
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 'd':
            opt.duration = atof(optarg);
            break;
        case 'w':
            opt.warmup = atof(optarg);
            break;
        case 'g':
            opt.grace = atof(optarg);
            break;
        case 'c':
            opt.connections = atoi(optarg);
            break;
        case 'H':
            if (opt.nheaders == MAX_HEADERS) die("too many --header");
            opt.headers[opt.nheaders++] = optarg;
            break;
        case 'b':
            opt.body_file = optarg;
            break;
        case 'm':
            opt.method = optarg;
            break;
        case 's':
            opt.sse_hold = atoi(optarg);
            break;
        case 'R':
            opt.ramp_ms = atoi(optarg);
            break;
        case 'S':
            opt.spin_us = atoi(optarg);
            break;
        case 'v':
            opt.verbose = 1;
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 2;
        }
    }
    /* "--url host:port /path" (path as a separate word) is accepted too */
    if (optind < argc && argv[optind][0] == '/')
        snprintf(opt.path, sizeof(opt.path), "%s", argv[optind++]);
    if (!have_url || optind < argc || opt.rate <= 0 || opt.duration <= 0 || opt.warmup < 0 ||
        opt.connections < 1 || opt.sse_hold < 0 || opt.ramp_ms < 0 || opt.spin_us < 0 ||
        opt.spin_us > 100000) {
        usage(stderr);
        return 2;
    }
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);
    build_request();
    loop = uv_default_loop();

    llhttp_settings_init(&settings);
    settings.on_headers_complete = on_headers_complete;
    settings.on_body = on_body;
    settings.on_message_complete = on_message_complete;

    nslots = opt.sse_hold ? opt.sse_hold : opt.connections;
    slots = calloc((size_t)nslots, sizeof(*slots));
    if (!slots) die("out of memory");
    for (int i = 0; i < nslots; i++) {
        slots[i].id = i;
        uv_timer_init(loop, &slots[i].retry);
        slots[i].retry.data = &slots[i];
    }

    if (opt.sse_hold) {
        sse_started_ns = uv_hrtime();
        uv_timer_init(loop, &ramp_timer);
        uv_timer_start(&ramp_timer, ramp_cb, 0, 1);
        uv_timer_init(loop, &sse_deadline);
        uv_timer_start(&sse_deadline, sse_deadline_cb, (uint64_t)(opt.duration * 1000), 0);
        uv_run(loop, UV_RUN_DEFAULT);
        sse_report_and_exit();
    }

    /* connect the pool first, then start the clock 200 ms later */
    for (int i = 0; i < nslots; i++)
        slot_connect(&slots[i]);
    uv_update_time(loop);
    interval_ns = 1e9 / opt.rate;
    t0_ns = uv_hrtime() + 200000000ull;
    measure_from_ns = t0_ns + (uint64_t)(opt.warmup * 1e9);
    total_requests = (uint64_t)((opt.warmup + opt.duration) * opt.rate);
    last_due_ns = due_of(total_requests ? total_requests - 1 : 0);
    end_deadline_ns = last_due_ns + (uint64_t)(opt.grace * 1e9);

    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timer_fd < 0) die("timerfd_create");
    uv_poll_init(loop, &pacer, timer_fd);
    uv_poll_start(&pacer, UV_READABLE, pacer_cb);
    arm_pacer();
    uv_timer_init(loop, &finisher);
    uv_timer_start(&finisher, finisher_cb, 100, 100);
    uv_run(loop, UV_RUN_DEFAULT);
    rate_report_and_exit();
    return 0;
}

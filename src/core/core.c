/* core.c - error names, bounded buffers, arena, clocks, ids and logging. */
#include "core/core.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

const char *tg_strerror(int err)
{
    switch (err) {
    case TG_OK:
        return "ok";
    case TG_ENOMEM:
        return "out of memory";
    case TG_EINVAL:
        return "invalid argument";
    case TG_ETOOBIG:
        return "too large";
    case TG_EIO:
        return "i/o error";
    case TG_ENOTFOUND:
        return "not found";
    case TG_EEXIST:
        return "already exists";
    case TG_EBUSY:
        return "busy";
    case TG_ETIMEDOUT:
        return "timed out";
    case TG_ECLOSED:
        return "connection closed";
    case TG_ECONNECT:
        return "could not connect";
    case TG_EUPSTREAM:
        return "upstream error";
    case TG_EAUTH:
        return "unauthenticated";
    case TG_EREVOKED:
        return "revoked";
    case TG_EEXPIRED:
        return "expired";
    case TG_ECONFIG:
        return "invalid configuration";
    case TG_ESTORE:
        return "store error";
    case TG_ECANCELED:
        return "canceled";
    case TG_EPROTO:
        return "protocol error";
    default:
        return "unknown error";
    }
}

/* ---- tg_buf ---- */

void tg_buf_init(tg_buf_t *b, size_t max)
{
    b->data = NULL;
    b->len = b->cap = 0;
    b->max = max ? max : SIZE_MAX / 2;
}

int tg_buf_reserve(tg_buf_t *b, size_t extra)
{
    if (extra > b->max || b->len > b->max - extra) return TG_ETOOBIG;
    size_t need = b->len + extra + 1;
    if (need <= b->cap) return TG_OK;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1) cap = b->max + 1;
    char *p = realloc(b->data, cap);
    if (!p) return TG_ENOMEM;
    b->data = p;
    b->cap = cap;
    return TG_OK;
}

int tg_buf_append(tg_buf_t *b, const void *p, size_t n)
{
    int rc = tg_buf_reserve(b, n);
    if (rc) return rc;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return TG_OK;
}

int tg_buf_appends(tg_buf_t *b, const char *s)
{
    return tg_buf_append(b, s, strlen(s));
}

int tg_buf_vprintf(tg_buf_t *b, const char *fmt, va_list ap)
{
    va_list cp;
    va_copy(cp, ap);
    int n = vsnprintf(NULL, 0, fmt, cp);
    va_end(cp);
    if (n < 0) return TG_EINVAL;
    int rc = tg_buf_reserve(b, (size_t)n);
    if (rc) return rc;
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    b->len += (size_t)n;
    return TG_OK;
}

int tg_buf_printf(tg_buf_t *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = tg_buf_vprintf(b, fmt, ap);
    va_end(ap);
    return rc;
}

void tg_buf_consume(tg_buf_t *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
    } else {
        memmove(b->data, b->data + n, b->len - n);
        b->len -= n;
    }
    if (b->data) b->data[b->len] = '\0';
}

void tg_buf_reset(tg_buf_t *b)
{
    b->len = 0;
    if (b->data) b->data[0] = '\0';
}

void tg_buf_free(tg_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

int tg_buf_json_str(tg_buf_t *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = tg_buf_reserve(b, n + 2);
    if (rc) return rc;
    b->data[b->len++] = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        char esc[7];
        size_t elen = 0;
        switch (c) {
        case '"':
            esc[0] = '\\', esc[1] = '"', elen = 2;
            break;
        case '\\':
            esc[0] = '\\', esc[1] = '\\', elen = 2;
            break;
        case '\n':
            esc[0] = '\\', esc[1] = 'n', elen = 2;
            break;
        case '\r':
            esc[0] = '\\', esc[1] = 'r', elen = 2;
            break;
        case '\t':
            esc[0] = '\\', esc[1] = 't', elen = 2;
            break;
        default:
            if (c < 0x20) {
                memcpy(esc, "\\u00", 4);
                esc[4] = hex[c >> 4];
                esc[5] = hex[c & 15];
                elen = 6;
            }
        }
        rc = elen ? tg_buf_append(b, esc, elen) : tg_buf_append(b, &s[i], 1);
        if (rc) return rc;
    }
    return tg_buf_append(b, "\"", 1);
}

/* ---- JSON without a parse ---- */

enum { JSON_MAX_DEPTH = 1000 }; /* cJSON's own nesting limit */

static inline __attribute__((always_inline)) const char *json_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

/* The 4 hex digits at p as a number, or -1. */
static long hex4(const char *p)
{
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int c = (unsigned char)p[i], d = c >= '0' && c <= '9'   ? c - '0'
                                         : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                                                : -1;
        if (d < 0) return -1;
        v = v * 16 + d;
    }
    return v;
}

/* Whether bits has a byte equal to the one repeated in pat (SWAR). */
static inline uint64_t has_byte(uint64_t bits, uint64_t pat)
{
    uint64_t x = bits ^ pat;
    return (x - 0x0101010101010101ull) & ~x & 0x8080808080808080ull;
}

/* p at the opening quote; returns the byte after the closing one, or NULL.
 * *escaped tells whether the string holds a backslash. Eight bytes at a time
 * are checked for a quote or a backslash (raw control characters pass, as
 * cJSON lets them); only escapes are looked at byte by byte, and refused
 * where cJSON refuses them: an unknown letter, \u without 4 hex digits, a
 * low surrogate alone, a high one not followed by a \u low one. */
static inline __attribute__((always_inline)) const char *json_string(const char *p, const char *end,
                                                                     int *escaped)
{
    *escaped = 0;
    p++;
    for (;;) {
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
        while (end - p >= 8) {
            uint64_t bits;
            memcpy(&bits, p, 8);
            uint64_t hit = has_byte(bits, 0x2222222222222222ull) | /* '"' */
                           has_byte(bits, 0x5c5c5c5c5c5c5c5cull) | /* '\\' */
                           has_byte(bits, 0);                      /* NUL */
            if (hit) {
                p += __builtin_ctzll(hit) / 8; /* the lowest hit is exact */
                break;
            }
            p += 8;
        }
#endif
        while (p < end && *p != '"' && *p != '\\' && *p)
            p++;
        if (p >= end || !*p) return NULL; /* cJSON would cut a string at a NUL: parse */
        if (*p == '"') return p + 1;
        *escaped = 1;
        if (++p >= end || !*p || !strchr("\"\\/bfnrtu", *p)) return NULL;
        if (*p == 'u') {
            long cp = end - p > 4 ? hex4(p + 1) : -1;
            if (cp < 0 || (cp >= 0xDC00 && cp <= 0xDFFF)) return NULL;
            p += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) { /* a pair: \uD8xx\uDCxx */
                long lo = end - p > 6 && p[1] == '\\' && p[2] == 'u' ? hex4(p + 3) : -1;
                if (lo < 0xDC00 || lo > 0xDFFF) return NULL;
                p += 6;
            }
        }
        p++;
    }
}

static const char *json_digits(const char *p, const char *end)
{
    const char *s = p;
    while (p < end && *p >= '0' && *p <= '9')
        p++;
    return p > s ? p : NULL;
}

/* A number as JSON writes it: -?int(.digits)?([eE][+-]?digits)? */
static const char *json_number(const char *p, const char *end)
{
    if (p < end && *p == '-') p++;
    if (p < end && *p == '0')
        p++;
    else if (!(p = json_digits(p, end)))
        return NULL;
    if (p < end && *p == '.' && !(p = json_digits(p + 1, end))) return NULL;
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (!(p = json_digits(p, end))) return NULL;
    }
    return p;
}

static const char *json_word(const char *p, const char *end, const char *w)
{
    size_t n = strlen(w);
    return (size_t)(end - p) >= n && memcmp(p, w, n) == 0 ? p + n : NULL;
}

/* p at a value's first byte; returns the byte after it, or NULL. */
static const char *json_value(const char *p, const char *end, int depth)
{
    if (p >= end) return NULL;
    int esc;
    if (*p == '"') return json_string(p, end, &esc);
    if (*p == '{' || *p == '[') {
        char close = *p == '{' ? '}' : ']';
        if (depth >= JSON_MAX_DEPTH) return NULL;
        p = json_ws(p + 1, end);
        if (p < end && *p == close) return p + 1;
        for (;;) {
            if (close == '}') {
                if (p >= end || *p != '"' || !(p = json_string(p, end, &esc))) return NULL;
                p = json_ws(p, end);
                if (p >= end || *p != ':') return NULL;
                p = json_ws(p + 1, end);
            }
            if (!(p = json_value(p, end, depth + 1))) return NULL;
            p = json_ws(p, end);
            if (p < end && *p == close) return p + 1;
            if (p >= end || *p != ',') return NULL;
            p = json_ws(p + 1, end);
        }
    }
    if (*p == 't') return json_word(p, end, "true");
    if (*p == 'f') return json_word(p, end, "false");
    if (*p == 'n') return json_word(p, end, "null");
    return json_number(p, end);
}

/* tg_json_members(), or with once, TG_JSON_DUP for a listed name that
 * occurs twice. */
static int members(const char *json, size_t len, const char *const *names, size_t n,
                   tg_span_t *vals, int once)
{
    const char *end = json + len, *p = json_ws(json, end);
    int found = 0;
    size_t nlen[TG_JSON_MEMBERS_MAX];
    if (n > TG_JSON_MEMBERS_MAX) return -1;
    for (size_t i = 0; i < n; i++) {
        vals[i] = (tg_span_t){NULL, 0};
        nlen[i] = strlen(names[i]);
    }
    if (p >= end || *p != '{') return -1;
    p = json_ws(p + 1, end);
    if (p < end && *p == '}') return 0;
    for (;;) {
        int esc;
        const char *k = p;
        if (p >= end || *p != '"' || !(p = json_string(p, end, &esc))) return -1;
        if (esc) return -1;
        size_t klen = (size_t)(p - k - 2);
        tg_span_t *hit = NULL;
        for (size_t i = 0; i < n && !hit; i++)
            if (nlen[i] == klen && memcmp(k + 1, names[i], klen) == 0) {
                if (!vals[i].p)
                    hit = &vals[i];
                else if (once)
                    return TG_JSON_DUP;
            }
        p = json_ws(p, end);
        if (p >= end || *p != ':') return -1;
        p = json_ws(p + 1, end);
        const char *v = p;
        if (!(p = json_value(p, end, 1))) return -1;
        if (hit) {
            *hit = (tg_span_t){v, (size_t)(p - v)};
            found++;
        }
        p = json_ws(p, end);
        if (p < end && *p == '}') return found;
        if (p >= end || *p != ',') return -1;
        p = json_ws(p + 1, end);
    }
}

int tg_json_members(const char *json, size_t len, const char *const *names, size_t n,
                    tg_span_t *vals)
{
    return members(json, len, names, n, vals, 0);
}

int tg_json_members_once(const char *json, size_t len, const char *const *names, size_t n,
                         tg_span_t *vals)
{
    return members(json, len, names, n, vals, 1);
}

int tg_json_member(const char *json, size_t len, const char *name, const char **val, size_t *vlen)
{
    tg_span_t v;
    int found = tg_json_members(json, len, &name, 1, &v);
    if (found > 0) *val = v.p, *vlen = v.len;
    return found;
}

size_t tg_strlcpy(char *dst, const char *src, size_t cap)
{
    size_t n = strlen(src);
    if (cap == 0) return n;
    size_t k = n < cap ? n : cap - 1;
    memcpy(dst, src, k);
    dst[k] = '\0';
    return n;
}

size_t tg_u64_dec(char *out, uint64_t v)
{
    char tmp[20];
    size_t n = sizeof(tmp);
    do {
        tmp[--n] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    memcpy(out, tmp + n, sizeof(tmp) - n);
    return sizeof(tmp) - n;
}

/* ---- arena ---- */

struct tg_arena_chunk {
    tg_arena_chunk_t *next;
    size_t size, used;
    _Alignas(16) unsigned char mem[];
};

void tg_arena_init(tg_arena_t *a, size_t max)
{
    a->head = NULL;
    a->used = 0;
    a->max = max;
}

void *tg_arena_alloc(tg_arena_t *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (a->max && (n > a->max || a->used > a->max - n)) return NULL;
    tg_arena_chunk_t *c = a->head;
    if (!c || c->size - c->used < n) {
        size_t size = n > 4000 ? n : 4000;
        c = malloc(sizeof(*c) + size);
        if (!c) return NULL;
        c->size = size;
        c->used = 0;
        c->next = a->head;
        a->head = c;
    }
    void *p = c->mem + c->used;
    c->used += n;
    a->used += n;
    return p;
}

char *tg_arena_strndup(tg_arena_t *a, const char *s, size_t n)
{
    char *p = tg_arena_alloc(a, n + 1);
    if (!p) return NULL;
    memcpy(p, s, n);
    p[n] = '\0';
    return p;
}

void tg_arena_free(tg_arena_t *a)
{
    tg_arena_chunk_t *c = a->head;
    while (c) {
        tg_arena_chunk_t *next = c->next;
        free(c);
        c = next;
    }
    a->head = NULL;
    a->used = 0;
}

/* ---- time, random ---- */

uint64_t tg_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

int64_t tg_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int tg_random(void *out, size_t n)
{
    unsigned char *p = out;
    while (n) {
        ssize_t r = getrandom(p, n, 0);
        if (r < 0) {
            if (errno == EINTR) continue;
            return TG_EIO;
        }
        p += r;
        n -= (size_t)r;
    }
    return TG_OK;
}

void tg_hex(char *out, const uint8_t *in, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = hex[in[i] >> 4];
        out[2 * i + 1] = hex[in[i] & 15];
    }
    out[2 * n] = '\0';
}

void tg_random_id(char *out, size_t cap, const char *prefix, size_t nbytes)
{
    uint8_t raw[32];
    if (nbytes > sizeof(raw)) nbytes = sizeof(raw);
    size_t plen = strlen(prefix);
    if (cap < plen + 2 * nbytes + 1) {
        if (cap) out[0] = '\0';
        return;
    }
    tg_random(raw, nbytes);
    memcpy(out, prefix, plen);
    tg_hex(out + plen, raw, nbytes);
}

void tg_iso8601_ms(char *out, size_t cap, int64_t ms)
{
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&secs, &tm);
    snprintf(out, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* ---- logging ---- */

int tg_log_level = TG_LOG_INFO;

void tg_log(int level, const char *fmt, ...)
{
    static const char *names[] = {"debug", "info", "warn", "error"};
    if (level < tg_log_level) return;
    char ts[32], line[2048];
    tg_iso8601_ms(ts, sizeof(ts), tg_wall_ms());
    int n = snprintf(line, sizeof(line), "%s %s ", ts, names[level & 3]);
    va_list ap;
    va_start(ap, fmt);
    if (n > 0 && (size_t)n < sizeof(line))
        n += vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if ((size_t)n >= sizeof(line) - 1) n = (int)sizeof(line) - 2;
    line[n++] = '\n';
    fwrite(line, 1, (size_t)n, stderr); /* one write per line: stderr is unbuffered */
}

int tg_strcaseeq(const char *a, size_t alen, const char *b, size_t blen)
{
    if (alen != blen) return 0;
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') x += 32;
        if (y >= 'A' && y <= 'Z') y += 32;
        if (x != y) return 0;
    }
    return 1;
}

int64_t tg_days_from_civil(int64_t y, int m, int d)
{
    y -= m <= 2;
    int64_t era = (y >= 0 ? y : y - 399) / 400;
    int64_t yoe = y - era * 400;
    int64_t doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + doe - 719468;
}

int tg_parse_digits(const char *s, int n, int *out)
{
    int v = 0;
    for (int i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9') return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int tg_mkdirs(const char *dir, unsigned mode)
{
    size_t len = strlen(dir);
    if (len == 0) return TG_EINVAL;
    char *d = malloc(len + 1);
    if (!d) return TG_ENOMEM;
    memcpy(d, dir, len + 1);
    int err = 0;
    for (char *p = d + 1; !err; p++) {
        if (*p != '/' && *p != '\0') continue;
        char c = *p;
        *p = '\0';
        struct stat sb;
        if (mkdir(d, (mode_t)mode) != 0 && errno != EEXIST)
            err = TG_EIO;
        else if (stat(d, &sb) != 0)
            err = TG_EIO;
        else if (!S_ISDIR(sb.st_mode))
            errno = ENOTDIR, err = TG_EIO;
        *p = c;
        if (c == '\0') break;
    }
    free(d);
    return err;
}

static int fsync_dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
    if (!dir) return TG_ENOMEM;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return TG_EIO;
    int rc = fsync(fd);
    close(fd);
    return rc == 0 ? 0 : TG_EIO;
}

int tg_write_file_atomic(const char *path, const void *data, size_t len)
{
    const char *slash = strrchr(path, '/');
    size_t dlen = slash ? (size_t)(slash - path) + 1 : 0;
    size_t cap = strlen(path) + 40;
    char *tmp = malloc(cap);
    if (!tmp) return TG_ENOMEM;
    snprintf(tmp, cap, "%.*s.%s.%ld.tmp", (int)dlen, path, path + dlen, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
    int err = fd < 0 ? TG_EIO : 0;
    const char *p = data;
    size_t left = len;
    while (!err && left > 0) {
        ssize_t w = write(fd, p, left);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            err = TG_EIO;
            break;
        }
        p += w;
        left -= (size_t)w;
    }
    if (!err && fsync(fd) != 0) err = TG_EIO;
    if (fd >= 0 && close(fd) != 0 && !err) err = TG_EIO;
    if (!err && rename(tmp, path) != 0) err = TG_EIO;
    if (err) {
        int saved = errno;
        unlink(tmp);
        errno = saved;
    } else {
        err = fsync_dir_of(path);
    }
    free(tmp);
    return err;
}

char *tg_read_file(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    fclose(f);
    if (!buf || n > max) {
        int e = buf ? EFBIG : ENOMEM;
        free(buf);
        errno = e;
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

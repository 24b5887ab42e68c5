/* core.h - the few things every tollgate module shares: error codes, bounded
 * buffers, a per-request arena, clocks, random ids and logging.
 *
 * Errors are negative TG_E* codes (0 is success) named by tg_strerror(), in
 * the libuv style. Every buffer that grows from network input is a tg_buf_t
 * with a maximum; appending past it fails with TG_ETOOBIG instead of growing. */
#ifndef TG_CORE_H
#define TG_CORE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

enum {
    TG_OK = 0,
    TG_ENOMEM = -1,     /* allocation failed */
    TG_EINVAL = -2,     /* bad argument or malformed input */
    TG_ETOOBIG = -3,    /* a bounded buffer or limit would be exceeded */
    TG_EIO = -4,        /* system call or file error */
    TG_ENOTFOUND = -5,  /* no such thing */
    TG_EEXIST = -6,     /* already exists */
    TG_EBUSY = -7,      /* queue full or resource exhausted; try later */
    TG_ETIMEDOUT = -8,  /* a deadline passed */
    TG_ECLOSED = -9,    /* the peer or connection is gone */
    TG_ECONNECT = -10,  /* could not connect upstream */
    TG_EUPSTREAM = -11, /* upstream protocol or transfer error */
    TG_EAUTH = -12,     /* missing or unknown credential */
    TG_EREVOKED = -13,  /* credential revoked */
    TG_EEXPIRED = -14,  /* credential expired */
    TG_ECONFIG = -15,   /* invalid configuration */
    TG_ESTORE = -16,    /* store (database) error */
    TG_ECANCELED = -17, /* operation canceled */
    TG_EPROTO = -18,    /* protocol violation */
};

const char *tg_strerror(int err);

/* ---- bounded dynamic buffer ------------------------------------------- */

typedef struct {
    char *data; /* always NUL-terminated when non-NULL */
    size_t len;
    size_t cap;
    size_t max; /* hard limit on len; 0 means SIZE_MAX/2 */
} tg_buf_t;

void tg_buf_init(tg_buf_t *b, size_t max);
int tg_buf_reserve(tg_buf_t *b, size_t extra);
int tg_buf_append(tg_buf_t *b, const void *p, size_t n);
int tg_buf_appends(tg_buf_t *b, const char *s);
int tg_buf_printf(tg_buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
int tg_buf_vprintf(tg_buf_t *b, const char *fmt, va_list ap);
/* Removes the first n bytes, keeping the rest. */
void tg_buf_consume(tg_buf_t *b, size_t n);
void tg_buf_reset(tg_buf_t *b); /* len = 0, memory kept */
void tg_buf_free(tg_buf_t *b);
/* Appends s as a JSON string literal (with quotes and escapes). */
int tg_buf_json_str(tg_buf_t *b, const char *s, size_t n);

/* ---- JSON without a parse ---------------------------------------------- */

/* Finds the value of the first member called name in the top-level object of
 * json[0..len), checking the whole object's structure on the way (trailing
 * bytes after it are ignored, as cJSON does). Returns 1 with *val and *vlen
 * set to the value's bytes, 0 when the object has no such member, and -1 when
 * json is not a well-formed object, nests deeper than 1000, or has a
 * top-level name written with escapes (it cannot tell whether that one is
 * name): a caller then falls back to a real parse. For reading one member of
 * a large document without building a tree of it. */
int tg_json_member(const char *json, size_t len, const char *name, const char **val, size_t *vlen);

/* A value's bytes inside a larger text. */
typedef struct {
    const char *p; /* NULL: absent */
    size_t len;
} tg_span_t;

/* tg_json_member() for n (at most TG_JSON_MEMBERS_MAX) names in one pass:
 * vals[i] is the first value called names[i] ({NULL, 0} when there is none;
 * a name listed twice gets its first and second occurrences). Returns how
 * many were found, or -1 as tg_json_member() does. Strings holding a raw NUL
 * are refused (-1): cJSON cuts them there, so only a parse reads them alike. */
enum { TG_JSON_MEMBERS_MAX = 32, TG_JSON_DUP = -2 };
int tg_json_members(const char *json, size_t len, const char *const *names, size_t n,
                    tg_span_t *vals);
/* The same for a request, where a member the gateway reads must not be
 * read one way here and another way upstream (most parsers keep the last of
 * two, cJSON and this scan the first): TG_JSON_DUP when a listed name occurs
 * twice (a name listed twice is found for its first listing only). */
int tg_json_members_once(const char *json, size_t len, const char *const *names, size_t n,
                         tg_span_t *vals);

/* Copies src into dst[cap], truncating, NUL-terminated (nothing written when
 * cap is 0); returns strlen(src). snprintf("%s") without the format work. */
size_t tg_strlcpy(char *dst, const char *src, size_t cap);

/* Writes v in decimal at out (room for 20 digits; no NUL) and returns how
 * many digits: for the request path, where printf is too much work. */
size_t tg_u64_dec(char *out, uint64_t v);

/* Reads a whole file into a new NUL-terminated buffer (free it), at most max
 * bytes: NULL with errno set when it cannot be read, EFBIG when larger. */
char *tg_read_file(const char *path, size_t max, size_t *len);

/* mkdir -p: creates dir and its missing parents with mode. Returns 0, or
 * TG_EIO with errno set (ENOTDIR when a part is not a directory). */
int tg_mkdirs(const char *dir, unsigned mode);
/* Writes len bytes to path atomically: to a temporary file beside it
 * (".NAME.PID.tmp"), flushed to disk, then renamed over path, and the
 * directory flushed. A reader sees the old file or the new one, never part
 * of one. Returns 0 or TG_EIO / TG_ENOMEM (errno set). */
int tg_write_file_atomic(const char *path, const void *data, size_t len);

/* ---- arena: request-scoped memory freed all at once -------------------- */

typedef struct tg_arena_chunk tg_arena_chunk_t;
typedef struct {
    tg_arena_chunk_t *head;
    size_t used; /* bytes handed out, across chunks */
    size_t max;  /* 0 = unlimited */
} tg_arena_t;

void tg_arena_init(tg_arena_t *a, size_t max);
void *tg_arena_alloc(tg_arena_t *a, size_t n); /* 16-byte aligned, NULL when over max */
char *tg_arena_strndup(tg_arena_t *a, const char *s, size_t n);
void tg_arena_free(tg_arena_t *a);

/* ---- time, randomness, ids --------------------------------------------- */

uint64_t tg_now_ns(void); /* monotonic */
int64_t tg_wall_ms(void); /* unix epoch milliseconds */
int tg_random(void *out, size_t n);
/* Writes prefix followed by 2*nbytes lowercase hex chars of randomness. */
void tg_random_id(char *out, size_t cap, const char *prefix, size_t nbytes);
void tg_hex(char *out, const uint8_t *in, size_t n); /* out has 2n+1 bytes */
/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * algorithm), for parsing UTC dates without timegm or the TZ environment. */
int64_t tg_days_from_civil(int64_t y, int m, int d);
/* Parses exactly n ASCII digits into out; -1 when one is not a digit. */
int tg_parse_digits(const char *s, int n, int *out);
/* Formats unix ms as 2026-11-27T05:30:21.123Z into out (>= 25 bytes). */
void tg_iso8601_ms(char *out, size_t cap, int64_t ms);

/* ---- logging ------------------------------------------------------------ */

enum { TG_LOG_DEBUG = 0, TG_LOG_INFO = 1, TG_LOG_WARN = 2, TG_LOG_ERROR = 3 };
extern int tg_log_level;
void tg_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define tg_debug(...) (tg_log_level <= TG_LOG_DEBUG ? tg_log(TG_LOG_DEBUG, __VA_ARGS__) : (void)0)
#define tg_info(...)  tg_log(TG_LOG_INFO, __VA_ARGS__)
#define tg_warn(...)  tg_log(TG_LOG_WARN, __VA_ARGS__)
#define tg_error(...) tg_log(TG_LOG_ERROR, __VA_ARGS__)

/* ASCII case-insensitive helpers (HTTP header names). */
int tg_strcaseeq(const char *a, size_t alen, const char *b, size_t blen);

#endif

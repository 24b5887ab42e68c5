/* sigv4.c - AWS Signature Version 4, header-signed (see sigv4.h).
 *
 * The canonical request is never built in memory: its pieces are streamed
 * into a SHA-256 context (and copied to the caller's debug buffer when there
 * is one). The only working memory is fixed arrays on the stack: the order of
 * the headers (indices, merge-sorted: stable, so repeated headers keep their
 * order, and n log n however many there are), the segments a normalised path
 * keeps, and the re-encoded query parameters, which must be sorted before
 * they can be hashed.
 *
 * SHA-256 comes from OpenSSL's low-level SHA256_* functions and HMAC (RFC
 * 2104) is built on them: OpenSSL 3's EVP interface allocates on every digest
 * initialisation (one or two mallocs, even with a reused context), which the
 * request path avoids. Those functions are deprecated in OpenSSL 3 but present
 * in all its releases and run the same assembly. */
#define OPENSSL_SUPPRESS_DEPRECATED

#include "aws/sigv4.h"

#include <openssl/crypto.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>

#define ALGORITHM    "AWS4-HMAC-SHA256"
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

/* ---- SHA-256 and HMAC --------------------------------------------------- */

static void sha256(uint8_t out[32], const void *p, size_t n)
{
    SHA256_CTX c;
    SHA256_Init(&c);
    SHA256_Update(&c, p, n);
    SHA256_Final(out, &c);
}

/* HMAC-SHA256 with the key k1 || k2 (the signing key starts as "AWS4" || secret). */
static void hmac(uint8_t out[32], const void *k1, size_t k1len, const void *k2, size_t k2len,
                 const void *msg, size_t mlen)
{
    uint8_t k[64] = {0}, pad[64], inner[32];
    SHA256_CTX c;
    if (k1len + k2len > sizeof(k)) {
        SHA256_Init(&c);
        SHA256_Update(&c, k1, k1len);
        SHA256_Update(&c, k2, k2len);
        SHA256_Final(k, &c);
    } else {
        memcpy(k, k1, k1len);
        if (k2len) memcpy(k + k1len, k2, k2len);
    }
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = k[i] ^ 0x36;
    SHA256_Init(&c);
    SHA256_Update(&c, pad, sizeof(pad));
    SHA256_Update(&c, msg, mlen);
    SHA256_Final(inner, &c);
    for (size_t i = 0; i < sizeof(pad); i++)
        pad[i] = k[i] ^ 0x5c;
    SHA256_Init(&c);
    SHA256_Update(&c, pad, sizeof(pad));
    SHA256_Update(&c, inner, sizeof(inner));
    SHA256_Final(out, &c);
    OPENSSL_cleanse(k, sizeof(k));
    OPENSSL_cleanse(pad, sizeof(pad));
    OPENSSL_cleanse(inner, sizeof(inner));
}

/* ---- percent-encoding ---------------------------------------------------- */

static int is_unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '_' || c == '.' || c == '~';
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
}

/* Writes c encoded into dst (room for 3 bytes); returns the length. */
static size_t encode_byte(char *dst, unsigned char c, int keep_slash)
{
    static const char hex[] = "0123456789ABCDEF";
    if (is_unreserved(c) || (keep_slash && c == '/')) {
        dst[0] = (char)c;
        return 1;
    }
    dst[0] = '%';
    dst[1] = hex[c >> 4];
    dst[2] = hex[c & 15];
    return 3;
}

/* Encodes as much of s[0..n) as fits in dst[0..cap); *used says how much of s
 * it took. Returns the bytes written. Every encoder below goes through here. */
static size_t encode_run(char *dst, size_t cap, const char *s, size_t n, int keep_slash,
                         size_t *used)
{
    size_t k = 0, i = 0;
    for (; i < n && cap - k >= 3; i++)
        k += encode_byte(dst + k, (unsigned char)s[i], keep_slash);
    *used = i;
    return k;
}

int tg_sigv4_uri_encode(tg_buf_t *out, const char *s, size_t n, int keep_slash)
{
    char chunk[256];
    while (n) {
        size_t used, k = encode_run(chunk, sizeof(chunk), s, n, keep_slash, &used);
        int rc = tg_buf_append(out, chunk, k);
        if (rc) return rc;
        s += used;
        n -= used;
    }
    return TG_OK;
}

/* ---- the canonical request, streamed ------------------------------------ */

typedef struct {
    SHA256_CTX sha;
    tg_buf_t *copy; /* debug copy, or NULL */
    int err;        /* the copy's first error */
} sink_t;

static void put(sink_t *s, const void *p, size_t n)
{
    if (n == 0) return; /* p may be NULL then (an empty header value) */
    SHA256_Update(&s->sha, p, n);
    if (s->copy && !s->err) s->err = tg_buf_append(s->copy, p, n);
}

static void put_str(sink_t *s, const char *str)
{
    put(s, str, strlen(str));
}

static void put_encoded(sink_t *s, const char *p, size_t n, int keep_slash)
{
    char chunk[256];
    while (n) {
        size_t used, k = encode_run(chunk, sizeof(chunk), p, n, keep_slash, &used);
        put(s, chunk, k);
        p += used;
        n -= used;
    }
}

/* S3 style: valid escapes kept verbatim, anything else that needs it encoded. */
static void put_path_once(sink_t *s, const char *p, size_t n)
{
    char chunk[256];
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (sizeof(chunk) - k < 3) {
            put(s, chunk, k);
            k = 0;
        }
        if (p[i] == '%' && i + 2 < n && hexval((unsigned char)p[i + 1]) >= 0 &&
            hexval((unsigned char)p[i + 2]) >= 0) {
            memcpy(chunk + k, p + i, 3);
            k += 3;
            i += 2;
        } else {
            k += encode_byte(chunk + k, (unsigned char)p[i], 1);
        }
    }
    put(s, chunk, k);
}

/* Removes dot segments and empty segments (RFC 3986 5.2.4, plus the repeated
 * slashes AWS drops), keeps a trailing slash, then encodes each segment. */
static int put_path(sink_t *s, const char *p, size_t n, unsigned flags)
{
    if (n == 0) {
        put(s, "/", 1);
        return TG_OK;
    }
    if (p[0] != '/') return TG_EINVAL;
    if (flags & TG_SIGV4_NO_NORMALIZE) {
        put_path_once(s, p, n);
        return TG_OK;
    }
    struct {
        const char *p;
        size_t n;
    } seg[TG_SIGV4_MAX_PATH_SEGMENTS];
    size_t nseg = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && p[j] != '/')
            j++;
        size_t len = j - i;
        if (len == 2 && p[i] == '.' && p[i + 1] == '.') {
            if (nseg) nseg--;
        } else if (len > 0 && !(len == 1 && p[i] == '.')) {
            if (nseg == TG_SIGV4_MAX_PATH_SEGMENTS) return TG_ETOOBIG;
            seg[nseg].p = p + i;
            seg[nseg++].n = len;
        }
        i = j + 1;
    }
    put(s, "/", 1);
    for (size_t i = 0; i < nseg; i++) {
        if (i) put(s, "/", 1);
        put_encoded(s, seg[i].p, seg[i].n, 0);
    }
    if (nseg && p[n - 1] == '/') put(s, "/", 1);
    return TG_OK;
}

/* ---- stable merge sort of small index arrays ------------------------------ */

typedef int (*cmp_fn)(const void *ctx, unsigned a, unsigned b);

static void merge_sort(uint16_t *a, uint16_t *tmp, size_t n, cmp_fn cmp, const void *ctx)
{
    for (size_t w = 1; w < n; w *= 2) {
        for (size_t lo = 0; lo < n; lo += 2 * w) {
            size_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            size_t i = lo, j = mid, k = lo;
            while (i < mid && j < hi)
                tmp[k++] = cmp(ctx, a[j], a[i]) < 0 ? a[j++] : a[i++];
            while (i < mid)
                tmp[k++] = a[i++];
            while (j < hi)
                tmp[k++] = a[j++];
        }
        memcpy(a, tmp, n * sizeof(*a));
    }
}

static int bytes_cmp(const char *a, size_t an, const char *b, size_t bn)
{
    int d = memcmp(a, b, an < bn ? an : bn);
    if (d) return d;
    return (an > bn) - (an < bn);
}

/* ---- query ---------------------------------------------------------------- */

typedef struct {
    uint16_t k, klen, v, vlen; /* offsets into the scratch text */
} qparam_t;

typedef struct {
    char text[TG_SIGV4_MAX_QUERY_BYTES];
    size_t len;
    qparam_t p[TG_SIGV4_MAX_QUERY_PARAMS];
    size_t n;
} query_t;

/* Decodes p[0..n) and appends it encoded to q->text. */
static int query_reencode(query_t *q, const char *p, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)p[i];
        if (c == '%') {
            int hi = i + 2 < n ? hexval((unsigned char)p[i + 1]) : -1;
            int lo = i + 2 < n ? hexval((unsigned char)p[i + 2]) : -1;
            if (hi < 0 || lo < 0) return TG_EINVAL;
            c = (unsigned char)(hi << 4 | lo);
            i += 2;
        }
        if (sizeof(q->text) - q->len < 3) return TG_ETOOBIG;
        q->len += encode_byte(q->text + q->len, c, 0);
    }
    return TG_OK;
}

static int query_cmp(const void *ctx, unsigned a, unsigned b)
{
    const query_t *q = ctx;
    const qparam_t *x = &q->p[a], *y = &q->p[b];
    int d = bytes_cmp(q->text + x->k, x->klen, q->text + y->k, y->klen);
    return d ? d : bytes_cmp(q->text + x->v, x->vlen, q->text + y->v, y->vlen);
}

static int put_query(sink_t *s, const char *query, size_t len)
{
    query_t q;
    q.len = q.n = 0;
    for (size_t i = 0; i < len;) {
        size_t j = i;
        while (j < len && query[j] != '&')
            j++;
        if (j > i) {
            if (q.n == TG_SIGV4_MAX_QUERY_PARAMS) return TG_ETOOBIG;
            const char *eq = memchr(query + i, '=', j - i);
            size_t kend = eq ? (size_t)(eq - query) : j;
            qparam_t *p = &q.p[q.n];
            int rc;
            p->k = (uint16_t)q.len;
            if ((rc = query_reencode(&q, query + i, kend - i))) return rc;
            p->klen = (uint16_t)(q.len - p->k);
            p->v = (uint16_t)q.len;
            if (eq && (rc = query_reencode(&q, eq + 1, j - kend - 1))) return rc;
            p->vlen = (uint16_t)(q.len - p->v);
            q.n++;
        }
        i = j + 1;
    }
    uint16_t idx[TG_SIGV4_MAX_QUERY_PARAMS], tmp[TG_SIGV4_MAX_QUERY_PARAMS];
    for (size_t i = 0; i < q.n; i++)
        idx[i] = (uint16_t)i;
    merge_sort(idx, tmp, q.n, query_cmp, &q);
    for (size_t i = 0; i < q.n; i++) {
        const qparam_t *p = &q.p[idx[i]];
        if (i) put(s, "&", 1);
        put(s, q.text + p->k, p->klen);
        put(s, "=", 1);
        put(s, q.text + p->v, p->vlen);
    }
    return TG_OK;
}

/* ---- headers -------------------------------------------------------------- */

typedef struct {
    const char *name, *value;
    size_t name_len, value_len;
} hdr_t;

static unsigned char lower(unsigned char c)
{
    return c >= 'A' && c <= 'Z' ? (unsigned char)(c + 32) : c;
}

static int is_tchar(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
           (c && strchr("!#$%&'*+-.^_`|~", c));
}

static int is_token(const char *s, size_t n)
{
    if (!s || n == 0) return 0;
    for (size_t i = 0; i < n; i++)
        if (!is_tchar((unsigned char)s[i])) return 0;
    return 1;
}

static int is_ws(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static int hdr_cmp(const void *ctx, unsigned a, unsigned b)
{
    const hdr_t *x = &((const hdr_t *)ctx)[a], *y = &((const hdr_t *)ctx)[b];
    size_t n = x->name_len < y->name_len ? x->name_len : y->name_len;
    for (size_t i = 0; i < n; i++) {
        int d = lower((unsigned char)x->name[i]) - lower((unsigned char)y->name[i]);
        if (d) return d;
    }
    return (x->name_len > y->name_len) - (x->name_len < y->name_len);
}

/* Trimmed, every run of SP/HTAB/CR/LF folded to one space. */
static void put_value(sink_t *s, const char *v, size_t n)
{
    size_t i = 0;
    while (i < n && is_ws((unsigned char)v[i]))
        i++;
    while (n > i && is_ws((unsigned char)v[n - 1]))
        n--;
    while (i < n) {
        size_t j = i;
        while (j < n && !is_ws((unsigned char)v[j]))
            j++;
        put(s, v + i, j - i);
        if (j == n) break;
        put(s, " ", 1);
        while (is_ws((unsigned char)v[j]))
            j++;
        i = j;
    }
}

/* Appends the lower-cased name to the signed-headers list in dst. */
static int list_name(char *dst, size_t cap, size_t *len, const hdr_t *h)
{
    if (cap - *len < h->name_len + 1) return TG_ETOOBIG;
    if (*len) dst[(*len)++] = ';';
    for (size_t i = 0; i < h->name_len; i++)
        dst[(*len)++] = (char)lower((unsigned char)h->name[i]);
    return TG_OK;
}

static int forbidden_name(const hdr_t *h)
{
    static const char *const names[] = {"x-amz-date", "x-amz-security-token",
                                        "x-amz-content-sha256", "authorization"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        if (tg_strcaseeq(h->name, h->name_len, names[i], strlen(names[i]))) return 1;
    return 0;
}

/* Writes the canonical header block and, into list, the signed-header names. */
static int put_headers(sink_t *s, const hdr_t *h, size_t n, char *list, size_t cap,
                       size_t *list_len)
{
    uint16_t idx[TG_SIGV4_MAX_HEADERS + 3], tmp[TG_SIGV4_MAX_HEADERS + 3];
    for (size_t i = 0; i < n; i++)
        idx[i] = (uint16_t)i;
    merge_sort(idx, tmp, n, hdr_cmp, h);
    for (size_t i = 0; i < n;) {
        const hdr_t *first = &h[idx[i]];
        size_t at = *list_len + (*list_len ? 1 : 0);
        int rc = list_name(list, cap, list_len, first);
        if (rc) return rc;
        put(s, list + at, first->name_len);
        put(s, ":", 1);
        put_value(s, first->value, first->value_len);
        for (i++; i < n && hdr_cmp(h, idx[i - 1], idx[i]) == 0; i++) {
            put(s, ",", 1);
            put_value(s, h[idx[i]].value, h[idx[i]].value_len);
        }
        put(s, "\n", 1);
    }
    return TG_OK;
}

/* ---- time ----------------------------------------------------------------- */

#define MAX_TIME 253402300799 /* 9999-12-31T23:59:59Z */

void tg_sigv4_amz_date(char *out, time_t t)
{
    struct tm tm;
    if (t < 0 || t > MAX_TIME || !gmtime_r(&t, &tm)) {
        memcpy(out, "00000000T000000Z", 17);
        return;
    }
    const int v[6] = {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                      tm.tm_hour,        tm.tm_min,     tm.tm_sec};
    char *o = out;
    for (int i = 0; i < 6; i++) {
        if (i == 3) *o++ = 'T';
        int w = i ? 2 : 4;
        for (int d = w - 1, x = v[i]; d >= 0; d--, x /= 10)
            o[d] = (char)('0' + x % 10);
        o += w;
    }
    memcpy(o, "Z", 2);
}

/* Reads exactly n digits, advancing *s. */
static int digits(const char **s, int n, int *out)
{
    if (tg_parse_digits(*s, n, out)) return -1;
    *s += n;
    return 0;
}

static int expect(const char **s, char c, int wanted)
{
    if (!wanted) return 0;
    if (**s != c) return -1;
    (*s)++;
    return 0;
}

int tg_sigv4_parse_time(const char *s, time_t *out)
{
    if (!s || !out) return TG_EINVAL;
    int ext = strlen(s) == 20; /* 2015-08-30T12:36:00Z, else 20150830T123600Z */
    if (!ext && strlen(s) != 16) return TG_EINVAL;
    int Y, M, D, h, m, sec;
    if (digits(&s, 4, &Y) || expect(&s, '-', ext) || digits(&s, 2, &M) || expect(&s, '-', ext) ||
        digits(&s, 2, &D) || expect(&s, 'T', 1) || digits(&s, 2, &h) || expect(&s, ':', ext) ||
        digits(&s, 2, &m) || expect(&s, ':', ext) || digits(&s, 2, &sec) || expect(&s, 'Z', 1))
        return TG_EINVAL;
    if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 59)
        return TG_EINVAL;
    struct tm tm = {.tm_year = Y - 1900,
                    .tm_mon = M - 1,
                    .tm_mday = D,
                    .tm_hour = h,
                    .tm_min = m,
                    .tm_sec = sec};
    time_t t = timegm(&tm);
    /* timegm carries 31 February into March: a date that moved did not exist. */
    if (t == (time_t)-1 || tm.tm_mday != D || tm.tm_mon != M - 1) return TG_EINVAL;
    *out = t;
    return TG_OK;
}

/* ---- signing ---------------------------------------------------------------- */

static void hex(char *out, const uint8_t *in, size_t n)
{
    static const char digits_[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits_[in[i] >> 4];
        out[2 * i + 1] = digits_[in[i] & 15];
    }
    out[2 * n] = '\0';
}

/* Region, service: what may sit between the slashes of a credential scope. */
static int is_scope_part(const char *s)
{
    if (!s || !*s) return 0;
    for (; *s; s++)
        if (!(is_unreserved((unsigned char)*s))) return 0;
    return 1;
}

/* Printable ASCII without the separators of the Authorization header. */
static int is_access_key_id(const char *s)
{
    if (!s || !*s) return 0;
    for (; *s; s++)
        if (*s <= ' ' || *s >= 0x7f || *s == '/' || *s == ',') return 0;
    return 1;
}

/* Printable ASCII: it goes into a header line as it is. */
static int is_header_text(const char *s)
{
    for (; *s; s++)
        if (*s < ' ' || *s >= 0x7f) return 0;
    return 1;
}

static void derive_key(uint8_t key[32], const char *secret, const char *date, const char *region,
                       const char *service)
{
    uint8_t k[32];
    hmac(k, "AWS4", 4, secret, strlen(secret), date, 8);
    hmac(k, k, 32, NULL, 0, region, strlen(region));
    hmac(k, k, 32, NULL, 0, service, strlen(service));
    hmac(key, k, 32, NULL, 0, "aws4_request", 12);
    OPENSSL_cleanse(k, sizeof(k));
}

int tg_sigv4_sign(const tg_sigv4_params_t *p, const tg_sigv4_request_t *r, tg_sigv4_key_t *key,
                  tg_sigv4_out_t *out, tg_buf_t *canonical, tg_buf_t *string_to_sign)
{
    if (!p || !r || !out || !p->secret_access_key || !p->secret_access_key[0] ||
        !is_access_key_id(p->access_key_id) || !is_scope_part(p->region) ||
        !is_scope_part(p->service) || p->time < 0 || p->time > MAX_TIME ||
        !is_token(r->method, r->method ? strlen(r->method) : 0) || (r->path_len && !r->path) ||
        (r->query_len && !r->query) || (r->nheaders && !r->headers) || (r->body_len && !r->body))
        return TG_EINVAL;
    const char *token = p->session_token && p->session_token[0] ? p->session_token : NULL;
    if (token && !is_header_text(token)) return TG_EINVAL;
    if (r->nheaders > TG_SIGV4_MAX_HEADERS) return TG_ETOOBIG;

    char amz_date[17], payload_hash[65];
    tg_sigv4_amz_date(amz_date, p->time);
    int sign_body = (p->flags & (TG_SIGV4_SIGN_BODY | TG_SIGV4_UNSIGNED_PAYLOAD)) != 0;
    if (p->flags & TG_SIGV4_UNSIGNED_PAYLOAD) {
        memcpy(payload_hash, "UNSIGNED-PAYLOAD", 17);
    } else if (r->body_len == 0) {
        memcpy(payload_hash, EMPTY_SHA256, 65);
    } else {
        uint8_t h[32];
        sha256(h, r->body, r->body_len);
        hex(payload_hash, h, 32);
    }

    /* The caller's headers and the ones the signer adds, sorted together. */
    hdr_t h[TG_SIGV4_MAX_HEADERS + 3];
    size_t n = 0;
    int has_host = 0;
    for (size_t i = 0; i < r->nheaders; i++, n++) {
        h[n] = (hdr_t){r->headers[i].name, r->headers[i].value, r->headers[i].name_len,
                       r->headers[i].value_len};
        /* HTTP/2 clients sign the :authority pseudo-header in Host's place. */
        int pseudo = h[n].name_len > 1 && h[n].name[0] == ':';
        if (!is_token(h[n].name + pseudo, h[n].name_len - (size_t)pseudo) ||
            (h[n].value_len && !h[n].value) || forbidden_name(&h[n]))
            return TG_EINVAL;
        has_host |= tg_strcaseeq(h[n].name, h[n].name_len, "host", 4) ||
                    tg_strcaseeq(h[n].name, h[n].name_len, ":authority", 10);
    }
    if (!has_host) return TG_EINVAL;
    h[n++] = (hdr_t){"x-amz-date", amz_date, 10, 16};
    if (token && !(p->flags & TG_SIGV4_OMIT_SESSION_TOKEN))
        h[n++] = (hdr_t){"x-amz-security-token", token, 20, strlen(token)};
    if (sign_body) h[n++] = (hdr_t){"x-amz-content-sha256", payload_hash, 20, strlen(payload_hash)};

    /* The scope, and the Authorization prefix up to the signed-header list,
     * which is then written in place while the canonical request is hashed. */
    char scope[sizeof(key->scope)];
    int sl = snprintf(scope, sizeof(scope), "%.8s/%s/%s", amz_date, p->region, p->service);
    if (sl < 0 || (size_t)sl >= sizeof(scope)) return TG_EINVAL;
    char auth[sizeof(out->authorization)];
    int al = snprintf(auth, sizeof(auth),
                      ALGORITHM " Credential=%s/%s/aws4_request, SignedHeaders=", p->access_key_id,
                      scope);
    static const size_t sig_tail = sizeof(", Signature=") - 1 + 64 + 1;
    if (al < 0 || (size_t)al + sig_tail > sizeof(auth)) return TG_ETOOBIG;
    char *list = auth + al;
    size_t list_cap = sizeof(auth) - (size_t)al - sig_tail, list_len = 0;

    sink_t s = {.copy = canonical};
    SHA256_Init(&s.sha);
    if (canonical) tg_buf_reset(canonical);
    put_str(&s, r->method);
    put(&s, "\n", 1);
    int rc = put_path(&s, r->path, r->path_len, p->flags);
    if (rc) return rc;
    put(&s, "\n", 1);
    if ((rc = put_query(&s, r->query, r->query_len))) return rc;
    put(&s, "\n", 1);
    if ((rc = put_headers(&s, h, n, list, list_cap, &list_len))) return rc;
    put(&s, "\n", 1);
    put(&s, list, list_len);
    put(&s, "\n", 1);
    put_str(&s, payload_hash);
    if (s.err) return s.err;
    uint8_t digest[32];
    SHA256_Final(digest, &s.sha);

    char sts[sizeof(ALGORITHM) + 17 + sizeof(scope) + 16 + 65];
    char creq_hex[65];
    hex(creq_hex, digest, 32);
    int stsl = snprintf(sts, sizeof(sts), ALGORITHM "\n%s\n%s/aws4_request\n%s", amz_date, scope,
                        creq_hex);
    if (stsl < 0 || (size_t)stsl >= sizeof(sts)) return TG_ETOOBIG; /* cannot happen */
    if (string_to_sign) {
        tg_buf_reset(string_to_sign);
        if ((rc = tg_buf_append(string_to_sign, sts, (size_t)stsl))) return rc;
    }

    /* The signing key: from the cache when it was derived for this scope and
     * this secret, else derived (and cached). */
    uint8_t fp[32], skey[32], sig[32];
    const char *secret = p->secret_access_key;
    sha256(fp, secret, strlen(secret));
    if (key && strcmp(key->scope, scope) == 0 && memcmp(key->secret_fp, fp, 32) == 0) {
        memcpy(skey, key->key, 32);
    } else {
        derive_key(skey, secret, amz_date, p->region, p->service);
        if (key) {
            memcpy(key->scope, scope, (size_t)sl + 1);
            memcpy(key->secret_fp, fp, 32);
            memcpy(key->key, skey, 32);
        }
    }
    hmac(sig, skey, 32, NULL, 0, sts, (size_t)stsl);
    OPENSSL_cleanse(skey, sizeof(skey));

    memcpy(out->amz_date, amz_date, sizeof(amz_date));
    memcpy(out->payload_hash, payload_hash, sizeof(payload_hash));
    hex(out->signature, sig, 32);
    size_t at = (size_t)al + list_len;
    memcpy(auth + at, ", Signature=", 12);
    memcpy(auth + at + 12, out->signature, 65);
    memcpy(out->authorization, auth, at + 12 + 65);
    return TG_OK;
}

/* credentials.c - the AWS SDKs' default credential chain, resolved and kept
 * fresh by one background thread per provider.
 *
 * Why it is built this way:
 * - Requests never wait on credentials. The thread publishes an immutable,
 *   reference-counted tg_aws_creds_t; get() holds the provider's mutex only to
 *   read the pointer and bump the count. All I/O (files, HTTP) happens on that
 *   thread, or in tg_aws_creds_resolve() for the CLI and tests.
 * - A fetch runs one curl easy handle on a multi handle private to the
 *   resolving thread, so destroy can interrupt a fetch in flight with
 *   curl_multi_wakeup() instead of waiting out its timeout.
 * - Each link answers one of three ways: credentials, TG_ENOTFOUND ("not
 *   configured here", the chain goes on, a note is kept for the final message)
 *   or another error, which stops the chain with a message naming the link.
 * - Secrets live only in tg_aws_creds_t and in buffers that are wiped before
 *   they are freed; messages carry links, URLs, statuses and AWS error codes,
 *   never a key id, secret or token. */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <cjson/cJSON.h>
#include <curl/curl.h>

#include "aws/credentials.h"
#include "aws/sigv4.h"
#include "core/core.h"
#include "upstream/fetch.h"

#define BODY_MAX       (64 * 1024)   /* any HTTP response */
#define FILE_MAX       (1024 * 1024) /* a shared config or credentials file */
#define TOKEN_FILE_MAX (64 * 1024)   /* a web identity or container token file */
#define PROFILE_DEPTH  5             /* source_profile hops */
#define STS_VERSION    "2011-06-15"

/* ---- credentials objects ------------------------------------------------ */

static void wipe_free(char *s)
{
    if (!s) return;
    explicit_bzero(s, strlen(s));
    free(s);
}

static void buf_wipe_free(tg_buf_t *b)
{
    if (b->data) explicit_bzero(b->data, b->len);
    tg_buf_free(b);
}

static tg_aws_creds_t *creds_new(const char *akid, const char *secret, const char *token,
                                 int64_t expires_ms, const char *source)
{
    tg_aws_creds_t *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->access_key_id = strdup(akid);
    c->secret_access_key = strdup(secret);
    c->session_token = token && *token ? strdup(token) : NULL;
    c->expires_ms = expires_ms;
    c->source = source;
    c->refs = 1;
    if (!c->access_key_id || !c->secret_access_key || (token && *token && !c->session_token)) {
        tg_aws_creds_release(c);
        return NULL;
    }
    return c;
}

void tg_aws_creds_release(tg_aws_creds_t *c)
{
    if (!c || __atomic_sub_fetch(&c->refs, 1, __ATOMIC_ACQ_REL) != 0) return;
    wipe_free(c->access_key_id);
    wipe_free(c->secret_access_key);
    wipe_free(c->session_token);
    free(c);
}

/* ---- pure helpers: time, scheduling ------------------------------------- */

int tg_aws_parse_iso8601(const char *s, int64_t *out_ms)
{
    static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int y, mo, d, h, mi, sec;
    if (!s || strlen(s) < 20) return TG_EINVAL;
    if (tg_parse_digits(s, 4, &y) || s[4] != '-' || tg_parse_digits(s + 5, 2, &mo) || s[7] != '-' ||
        tg_parse_digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
        tg_parse_digits(s + 11, 2, &h) || s[13] != ':' || tg_parse_digits(s + 14, 2, &mi) ||
        s[16] != ':' || tg_parse_digits(s + 17, 2, &sec))
        return TG_EINVAL;
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || (mo == 2 && d == 29 && !leap) ||
        h > 23 || mi > 59 || sec > 60)
        return TG_EINVAL;
    if (sec == 60) sec = 59; /* a leap second: close enough for an expiry */
    const char *p = s + 19;
    int64_t ms = 0;
    if (*p == '.' || *p == ',') {
        p++;
        if (*p < '0' || *p > '9') return TG_EINVAL;
        for (int scale = 100; *p >= '0' && *p <= '9'; p++, scale /= 10)
            ms += (*p - '0') * scale;
    }
    int64_t off_min = 0;
    if (*p == 'Z' || *p == 'z') {
        p++;
    } else if (*p == '+' || *p == '-') {
        int oh, om;
        int sign = *p == '-' ? -1 : 1;
        p++;
        if (tg_parse_digits(p, 2, &oh)) return TG_EINVAL;
        p += 2;
        if (*p == ':') p++;
        if (tg_parse_digits(p, 2, &om)) return TG_EINVAL;
        p += 2;
        if (oh > 23 || om > 59) return TG_EINVAL;
        off_min = sign * (oh * 60 + om);
    } else {
        return TG_EINVAL; /* a zone is required: AWS always writes one */
    }
    if (*p) return TG_EINVAL;
    int64_t secs = tg_days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off_min * 60;
    *out_ms = secs * 1000 + ms;
    return 0;
}

int64_t tg_aws_refresh_at(int64_t now_ms, int64_t expires_ms, uint32_t refresh_before_ms)
{
    if (expires_ms == 0) return 0;
    int64_t left = expires_ms - now_ms;
    if (left <= 0) return now_ms;
    int64_t lead = refresh_before_ms;
    if (left / 2 < lead) lead = left / 2;
    int64_t at = expires_ms - lead;
    int64_t floor = now_ms + (left < TG_AWS_REFRESH_MIN_MS ? left : TG_AWS_REFRESH_MIN_MS);
    return at < floor ? floor : at;
}

uint32_t tg_aws_retry_delay(uint32_t prev_ms)
{
    if (prev_ms < 1000) return 1000;
    return prev_ms >= 15000 ? 30000 : prev_ms * 2;
}

/* ---- pure helpers: ini -------------------------------------------------- */

static const char *skip_ws(const char *p, const char *e)
{
    while (p < e && (*p == ' ' || *p == '\t'))
        p++;
    return p;
}

static const char *rtrim(const char *s, const char *e)
{
    while (e > s && (e[-1] == ' ' || e[-1] == '\t' || e[-1] == '\r'))
        e--;
    return e;
}

static int span_eq(const char *s, const char *e, const char *z)
{
    size_t n = strlen(z);
    return (size_t)(e - s) == n && memcmp(s, z, n) == 0;
}

static int section_matches(const char *s, const char *e, const char *profile, int config_file)
{
    if (!config_file) return span_eq(s, e, profile);
    if (e - s > 7 && memcmp(s, "profile", 7) == 0 && (s[7] == ' ' || s[7] == '\t'))
        return span_eq(skip_ws(s + 7, e), e, profile);
    return strcmp(profile, "default") == 0 && span_eq(s, e, "default");
}

/* Finds key in profile's section; the value (v, vlen) points into text. */
static int ini_find(const char *text, const char *profile, int config_file, const char *key,
                    const char **v, size_t *vlen, int *section_found)
{
    int in_section = 0, in_prop = 0, found = 0;
    if (section_found) *section_found = 0;
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n');
        const char *e = rtrim(line, nl ? nl : line + strlen(line));
        const char *next = nl ? nl + 1 : NULL;
        const char *p = skip_ws(line, e);
        if (p == e || *p == '#' || *p == ';') {
            line = next;
            continue;
        }
        if (p != line && in_prop) { /* continuation of the previous property */
            line = next;
            continue;
        }
        if (*p == '[') {
            const char *close = memchr(p, ']', (size_t)(e - p));
            in_prop = 0;
            in_section = 0;
            if (close) {
                const char *ns = skip_ws(p + 1, close);
                in_section = section_matches(ns, rtrim(ns, close), profile, config_file);
                if (in_section && section_found) *section_found = 1;
            }
            line = next;
            continue;
        }
        const char *eq = memchr(p, '=', (size_t)(e - p));
        in_prop = eq != NULL;
        if (eq && in_section) {
            const char *ke = rtrim(p, eq);
            size_t klen = strlen(key);
            if ((size_t)(ke - p) == klen && strncasecmp(p, key, klen) == 0) {
                const char *vs = skip_ws(eq + 1, e), *ve = e;
                for (const char *q = vs; q + 1 < e; q++)
                    if ((*q == ' ' || *q == '\t') && (q[1] == '#' || q[1] == ';')) {
                        ve = q;
                        break;
                    }
                *v = vs;
                *vlen = (size_t)(rtrim(vs, ve) - vs);
                found = 1;
            }
        }
        line = next;
    }
    return found ? 0 : TG_ENOTFOUND;
}

int tg_aws_ini_get(const char *text, const char *profile, int config_file, const char *key,
                   char *out, size_t cap, int *section_found)
{
    const char *v;
    size_t n;
    int rc = ini_find(text, profile, config_file, key, &v, &n, section_found);
    if (rc) return rc;
    if (n >= cap) return TG_ETOOBIG;
    memcpy(out, v, n);
    out[n] = '\0';
    return 0;
}

/* ---- pure helpers: STS XML and credentials JSON ------------------------- */

/* The content of the first <tag ...>...</tag> in [s, e), or -1. */
static int xml_find(const char *s, const char *e, const char *tag, const char **cs, const char **ce)
{
    size_t n = strlen(tag);
    for (const char *p = s; p + n + 2 <= e; p++) {
        p = memchr(p, '<', (size_t)(e - p));
        if (!p || p + n + 2 > e) return -1;
        if (memcmp(p + 1, tag, n) != 0) continue;
        char after = p[1 + n];
        if (after != '>' && after != ' ' && after != '\t' && after != '\n' && after != '\r' &&
            after != '/')
            continue;
        const char *gt = memchr(p, '>', (size_t)(e - p));
        if (!gt) return -1;
        if (gt[-1] == '/') { /* <Tag/> */
            *cs = *ce = gt + 1;
            return 0;
        }
        for (const char *q = gt + 1; q + n + 3 <= e; q++) {
            q = memchr(q, '<', (size_t)(e - q));
            if (!q || q + n + 3 > e) return -1;
            if (q[1] == '/' && memcmp(q + 2, tag, n) == 0 && q[2 + n] == '>') {
                *cs = gt + 1;
                *ce = q;
                return 0;
            }
        }
        return -1;
    }
    return -1;
}

/* The decoded, trimmed text of <tag> in [s, e) (malloc'd), or NULL. */
static char *xml_text(const char *s, const char *e, const char *tag)
{
    const char *cs, *ce;
    if (xml_find(s, e, tag, &cs, &ce)) return NULL;
    while (cs < ce && isspace((unsigned char)*cs))
        cs++;
    while (ce > cs && isspace((unsigned char)ce[-1]))
        ce--;
    char *out = malloc((size_t)(ce - cs) + 1), *o = out;
    if (!out) return NULL;
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    for (const char *p = cs; p < ce;) {
        if (*p != '&') {
            *o++ = *p++;
            continue;
        }
        int done = 0;
        for (size_t i = 0; i < sizeof(ents) / sizeof(ents[0]) && !done; i++) {
            size_t n = strlen(ents[i].ent);
            if ((size_t)(ce - p) >= n && memcmp(p, ents[i].ent, n) == 0) {
                *o++ = ents[i].c;
                p += n;
                done = 1;
            }
        }
        if (!done && p + 2 < ce && p[1] == '#') { /* &#NN; &#xHH; (ASCII only) */
            int hex = p[2] == 'x' || p[2] == 'X';
            const char *q = p + 2 + hex;
            long v = 0;
            for (; q < ce && isxdigit((unsigned char)*q) && v < 128; q++) {
                int d = isdigit((unsigned char)*q) ? *q - '0' : (tolower(*q) - 'a' + 10);
                if (!hex && d > 9) break;
                v = v * (hex ? 16 : 10) + d;
            }
            if (q < ce && *q == ';' && q > p + 2 + hex && v > 0 && v < 128) {
                *o++ = (char)v;
                p = q + 1;
                done = 1;
            }
        }
        if (!done) *o++ = *p++;
    }
    *o = '\0';
    return out;
}

/* Copies printable ASCII of s into out, cut to cap: AWS messages go into logs. */
static void clean_copy(char *out, size_t cap, const char *s)
{
    size_t n = 0;
    for (; s && *s && n + 1 < cap; s++)
        out[n++] = (*s >= 0x20 && *s < 0x7f) ? *s : ' ';
    if (cap) out[n] = '\0';
}

static int expiry_from(const char *iso, int64_t *ms, char *err, size_t errcap)
{
    if (!iso || !*iso) {
        *ms = 0;
        return 0;
    }
    if (tg_aws_parse_iso8601(iso, ms) == 0) return 0;
    char shown[40];
    clean_copy(shown, sizeof(shown), iso);
    snprintf(err, errcap, "unparsable Expiration \"%s\"", shown);
    return TG_EPROTO;
}

int tg_aws_parse_sts_xml(const char *xml, size_t n, const char *source, tg_aws_creds_t **out,
                         char *err, size_t errcap)
{
    const char *e = xml + n, *cs, *ce;
    *out = NULL;
    if (xml_find(xml, e, "Credentials", &cs, &ce) != 0) {
        const char *es = xml, *ee = e;
        if (xml_find(xml, e, "Error", &es, &ee) == 0) {
            char *code = xml_text(es, ee, "Code"), *msg = xml_text(es, ee, "Message");
            char c[64], m[256];
            clean_copy(c, sizeof(c), code ? code : "unknown");
            clean_copy(m, sizeof(m), msg ? msg : "");
            snprintf(err, errcap, "STS error %s%s%s", c, *m ? ": " : "", m);
            free(code);
            free(msg);
            return TG_EAUTH;
        }
        snprintf(err, errcap, "STS response has no Credentials element");
        return TG_EPROTO;
    }
    char *akid = xml_text(cs, ce, "AccessKeyId");
    char *secret = xml_text(cs, ce, "SecretAccessKey");
    char *token = xml_text(cs, ce, "SessionToken");
    char *exp = xml_text(cs, ce, "Expiration");
    int64_t exp_ms = 0;
    int rc = 0;
    if (!akid || !*akid || !secret || !*secret) {
        snprintf(err, errcap, "STS Credentials lack AccessKeyId or SecretAccessKey");
        rc = TG_EPROTO;
    } else if (!exp || !*exp) {
        snprintf(err, errcap, "STS Credentials lack Expiration");
        rc = TG_EPROTO;
    } else if ((rc = expiry_from(exp, &exp_ms, err, errcap)) == 0) {
        *out = creds_new(akid, secret, token, exp_ms, source);
        if (!*out) rc = TG_ENOMEM;
    }
    wipe_free(akid);
    wipe_free(secret);
    wipe_free(token);
    free(exp);
    return rc;
}

static const char *json_str(const cJSON *o, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int tg_aws_parse_creds_json(const char *json, size_t n, const char *source, tg_aws_creds_t **out,
                            char *err, size_t errcap)
{
    *out = NULL;
    cJSON *doc = cJSON_ParseWithLength(json, n);
    if (!cJSON_IsObject(doc)) {
        cJSON_Delete(doc);
        snprintf(err, errcap, "response is not a JSON object");
        return TG_EPROTO;
    }
    int rc = 0;
    const char *code = json_str(doc, "Code");
    const char *akid = json_str(doc, "AccessKeyId"), *secret = json_str(doc, "SecretAccessKey");
    int64_t exp_ms = 0;
    if (code && strcmp(code, "Success") != 0) {
        char c[64], m[256];
        clean_copy(c, sizeof(c), code);
        clean_copy(m, sizeof(m), json_str(doc, "Message"));
        snprintf(err, errcap, "Code %s%s%s", c, *m ? ": " : "", m);
        rc = TG_EAUTH;
    } else if (!akid || !*akid || !secret || !*secret) {
        snprintf(err, errcap, "response lacks AccessKeyId or SecretAccessKey");
        rc = TG_EPROTO;
    } else if ((rc = expiry_from(json_str(doc, "Expiration"), &exp_ms, err, errcap)) == 0) {
        *out = creds_new(akid, secret, json_str(doc, "Token"), exp_ms, source);
        if (!*out) rc = TG_ENOMEM;
    }
    /* cJSON keeps its own copies of the secrets: wipe them before freeing. */
    for (cJSON *it = doc->child; it; it = it->next)
        if (cJSON_IsString(it) && it->valuestring)
            explicit_bzero(it->valuestring, strlen(it->valuestring));
    cJSON_Delete(doc);
    return rc;
}

/* ---- a resolution: its context, errors and HTTP -------------------------- */

typedef struct {
    const tg_aws_creds_opts_t *o; /* defaults filled in */
    CURLM *multi;                 /* owned by the resolving thread */
    atomic_int *stop;             /* set by destroy; NULL when synchronous */
    char *err;
    size_t errcap;
    tg_buf_t skipped; /* "link: why; " notes of links that were not configured */
} res_t;

static int fail(res_t *r, int rc, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(res_t *r, int rc, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, r->errcap, fmt, ap);
    va_end(ap);
    return rc;
}

static int skip(res_t *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int skip(res_t *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    if (r->skipped.len) tg_buf_appends(&r->skipped, "; ");
    tg_buf_vprintf(&r->skipped, fmt, ap);
    va_end(ap);
    return TG_ENOTFOUND;
}

static const char *env(const char *name)
{
    const char *v = getenv(name);
    return v && *v ? v : NULL;
}

/* Performs f with the link's timeout; see tg_fetch. */
static int http_fetch(res_t *r, tg_fetch_t *f, long *status, tg_buf_t *out, char *why,
                      size_t whycap)
{
    f->timeout_ms = r->o->timeout_ms;
    return tg_fetch(r->multi, r->stop, f, status, out, why, whycap);
}

/* Header lines may carry a token read from a file. */
#define header_add(h, ...) tg_fetch_header(h, TOKEN_FILE_MAX + 256, __VA_ARGS__)
#define headers_free       tg_fetch_headers_free

static int read_file(const char *path, size_t max, tg_buf_t *out, char *why, size_t whycap)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(why, whycap, "%s", strerror(errno));
        return errno == ENOENT ? TG_ENOTFOUND : TG_EIO;
    }
    char chunk[4096];
    size_t n;
    int rc = 0;
    while (rc == 0 && (n = fread(chunk, 1, sizeof(chunk), f)) > 0)
        rc = tg_buf_append(out, chunk, n);
    if (rc == 0 && ferror(f)) rc = TG_EIO;
    explicit_bzero(chunk, sizeof(chunk));
    fclose(f);
    if (rc == TG_ETOOBIG) snprintf(why, whycap, "larger than %zu bytes", max);
    if (rc == TG_EIO) snprintf(why, whycap, "read error");
    if (rc == 0 && !out->data) rc = tg_buf_append(out, "", 0);
    return rc;
}

/* Reads a token file, trimmed; rejects CR/LF inside (header injection). */
static int read_token_file(res_t *r, const char *link, const char *var, const char *path,
                           tg_buf_t *out)
{
    char why[128];
    tg_buf_init(out, TOKEN_FILE_MAX);
    int rc = read_file(path, TOKEN_FILE_MAX, out, why, sizeof(why));
    if (rc)
        return fail(r, rc == TG_ENOTFOUND ? TG_ECONFIG : rc, "%s: %s %s: %s", link, var, path, why);
    size_t s = 0, e = out->len;
    while (s < e && isspace((unsigned char)out->data[s]))
        s++;
    while (e > s && isspace((unsigned char)out->data[e - 1]))
        e--;
    memmove(out->data, out->data + s, e - s);
    explicit_bzero(out->data + (e - s), out->len - (e - s));
    out->len = e - s;
    if (!out->len) return fail(r, TG_ECONFIG, "%s: %s %s is empty", link, var, path);
    if (memchr(out->data, '\n', out->len) || memchr(out->data, '\r', out->len))
        return fail(r, TG_ECONFIG, "%s: %s %s holds a line break", link, var, path);
    return 0;
}

/* Appends s form-urlencoded (RFC 3986 unreserved kept). */
static int form_add(tg_buf_t *b, const char *name, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    int rc = tg_buf_printf(b, "%s%s=", b->len ? "&" : "", name);
    for (; rc == 0 && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            rc = tg_buf_append(b, s, 1);
        } else {
            char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
            rc = tg_buf_append(b, esc, 3);
        }
    }
    return rc;
}

/* ---- STS ---------------------------------------------------------------- */

static const char *region_of(const tg_aws_creds_opts_t *o)
{
    if (o->region && *o->region) return o->region;
    const char *r = env("AWS_REGION");
    if (!r) r = env("AWS_DEFAULT_REGION");
    return r ? r : "us-east-1";
}

/* The STS endpoint's URL, without a trailing slash. */
static void sts_base(const tg_aws_creds_opts_t *o, char *out, size_t cap)
{
    const char *ep =
        o->sts_endpoint && *o->sts_endpoint ? o->sts_endpoint : env("AWS_ENDPOINT_URL_STS");
    if (ep) {
        snprintf(out, cap, "%s", ep);
    } else {
        const char *region = region_of(o);
        snprintf(out, cap, "https://sts.%s.amazonaws.com%s", region,
                 strncmp(region, "cn-", 3) == 0 ? ".cn" : "");
    }
    size_t n = strlen(out);
    while (n && out[n - 1] == '/')
        out[--n] = '\0';
}

static const char FORM_TYPE[] = "application/x-www-form-urlencoded; charset=utf-8";

/* Signs an STS POST of form to url with base (SigV4 over Host and
 * Content-Type, the host as curl will send it) and adds the headers to h. */
static int sts_sign(res_t *r, const char *what, const char *url, const tg_buf_t *form,
                    const tg_aws_creds_t *base, struct curl_slist **h)
{
    CURLU *u = curl_url();
    char *host = NULL, *port = NULL;
    int rc = 0;
    if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
        rc = fail(r, TG_ECONFIG, "%s: bad STS endpoint %s", what, url);
        goto out;
    }
    curl_url_get(u, CURLUPART_PORT, &port, 0);
    char hosthdr[300];
    snprintf(hosthdr, sizeof(hosthdr), "%s%s%s", host, port ? ":" : "", port ? port : "");
    tg_header_t sh[2] = {
        {"host", 4, hosthdr, strlen(hosthdr)},
        {"content-type", 12, FORM_TYPE, sizeof(FORM_TYPE) - 1},
    };
    tg_sigv4_params_t sp = {
        .access_key_id = base->access_key_id,
        .secret_access_key = base->secret_access_key,
        .session_token = base->session_token,
        .region = region_of(r->o),
        .service = "sts",
        .time = time(NULL),
    };
    tg_sigv4_request_t sr = {.method = "POST",
                             .path = "/",
                             .path_len = 1,
                             .headers = sh,
                             .nheaders = 2,
                             .body = form->data,
                             .body_len = form->len};
    tg_sigv4_out_t so;
    rc = tg_sigv4_sign(&sp, &sr, NULL, &so, NULL, NULL);
    if (rc) {
        rc = fail(r, rc, "%s: signing failed (%s)", what, tg_strerror(rc));
    } else if (header_add(h, "Host: %s", hosthdr) || header_add(h, "X-Amz-Date: %s", so.amz_date) ||
               header_add(h, "Authorization: %s", so.authorization) ||
               (base->session_token &&
                header_add(h, "X-Amz-Security-Token: %s", base->session_token))) {
        rc = fail(r, TG_ENOMEM, "%s: out of memory for headers", what);
    }
    explicit_bzero(&so, sizeof(so));
out:
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return rc;
}

/* POSTs an STS query form (signed when base is non-NULL) and parses the
 * answer. what names the call in messages ("web-identity: STS
 * AssumeRoleWithWebIdentity"). */
static int sts_call(res_t *r, const char *what, const tg_buf_t *form, const tg_aws_creds_t *base,
                    const char *source, tg_aws_creds_t **out)
{
    char url[512], why[CURL_ERROR_SIZE + 64];
    sts_base(r->o, url, sizeof(url) - 1);
    strcat(url, "/");
    struct curl_slist *h = NULL;
    int rc = header_add(&h, "Content-Type: %s", FORM_TYPE) || header_add(&h, "Accept: text/xml") ||
                     header_add(&h, "Expect:")
                 ? fail(r, TG_ENOMEM, "%s: out of memory for headers", what)
                 : 0;
    if (rc == 0 && base) rc = sts_sign(r, what, url, form, base, &h);
    if (rc == 0) {
        long status = 0;
        tg_buf_t body;
        tg_buf_init(&body, BODY_MAX);
        tg_fetch_t f = {
            .method = "POST", .url = url, .headers = h, .body = form->data, .body_len = form->len};
        rc = http_fetch(r, &f, &status, &body, why, sizeof(why));
        if (rc) {
            rc = fail(r, rc, "%s at %s: %s", what, url, why);
        } else {
            rc = tg_aws_parse_sts_xml(body.data ? body.data : "", body.len, source, out, why,
                                      sizeof(why));
            if (rc == 0 && status != 200) {
                tg_aws_creds_release(*out);
                *out = NULL;
                rc = TG_EPROTO;
                snprintf(why, sizeof(why), "unexpected body");
            }
            if (rc == TG_EPROTO && status >= 500) rc = TG_EUPSTREAM;
            if (rc) rc = fail(r, rc, "%s at %s: HTTP %ld, %s", what, url, status, why);
        }
        buf_wipe_free(&body);
    }
    headers_free(h);
    return rc;
}

static int web_identity(res_t *r, const char *link, const char *token_file, const char *role_arn,
                        const char *session, tg_aws_creds_t **out)
{
    tg_buf_t tok, form;
    int rc = read_token_file(r, link, "web identity token file", token_file, &tok);
    tg_buf_init(&form, TOKEN_FILE_MAX * 3 + 4096);
    char what[96];
    snprintf(what, sizeof(what), "%s: STS AssumeRoleWithWebIdentity", link);
    if (rc == 0 &&
        (form_add(&form, "Action", "AssumeRoleWithWebIdentity") ||
         form_add(&form, "Version", STS_VERSION) || form_add(&form, "RoleArn", role_arn) ||
         form_add(&form, "RoleSessionName", session) ||
         form_add(&form, "WebIdentityToken", tok.data)))
        rc = fail(r, TG_ENOMEM, "%s: out of memory", link);
    if (rc == 0) rc = sts_call(r, what, &form, NULL, "web-identity", out);
    buf_wipe_free(&tok);
    buf_wipe_free(&form);
    return rc;
}

static int assume_role(res_t *r, const char *link, const tg_aws_creds_t *base, const char *role_arn,
                       const char *session, const char *external_id, tg_aws_creds_t **out)
{
    tg_buf_t form;
    tg_buf_init(&form, 8192);
    char what[96];
    snprintf(what, sizeof(what), "%s: STS AssumeRole", link);
    int rc = form_add(&form, "Action", "AssumeRole") || form_add(&form, "Version", STS_VERSION) ||
             form_add(&form, "RoleArn", role_arn) || form_add(&form, "RoleSessionName", session) ||
             (external_id && *external_id && form_add(&form, "ExternalId", external_id));
    rc = rc ? fail(r, TG_ETOOBIG, "%s: request too large", what)
            : sts_call(r, what, &form, base, "assume-role", out);
    buf_wipe_free(&form);
    return rc;
}

static void default_session(char *out, size_t cap, const char *given)
{
    if (given && *given)
        snprintf(out, cap, "%s", given);
    else
        snprintf(out, cap, "tollgate-%" PRId64, tg_wall_ms() / 1000);
}

/* ---- links ---------------------------------------------------------------- */

static int link_env(res_t *r, tg_aws_creds_t **out)
{
    const char *akid = env("AWS_ACCESS_KEY_ID"), *secret = env("AWS_SECRET_ACCESS_KEY");
    if (!akid && !secret) return skip(r, "environment: AWS_ACCESS_KEY_ID not set");
    if (!akid || !secret)
        return fail(r, TG_ECONFIG, "environment: %s is set but %s is not",
                    akid ? "AWS_ACCESS_KEY_ID" : "AWS_SECRET_ACCESS_KEY",
                    akid ? "AWS_SECRET_ACCESS_KEY" : "AWS_ACCESS_KEY_ID");
    int64_t exp = 0;
    char why[64];
    if (expiry_from(env("AWS_CREDENTIAL_EXPIRATION"), &exp, why, sizeof(why)))
        return fail(r, TG_ECONFIG, "environment: AWS_CREDENTIAL_EXPIRATION: %s", why);
    *out = creds_new(akid, secret, env("AWS_SESSION_TOKEN"), exp, "environment");
    return *out ? 0 : fail(r, TG_ENOMEM, "environment: out of memory");
}

/* ---- container ---------------------------------------------------------- */

static int host_allowed(const char *scheme, const char *host)
{
    if (strcasecmp(scheme, "https") == 0) return 1;
    if (strncmp(host, "127.", 4) == 0 || strcasecmp(host, "localhost") == 0 ||
        strcmp(host, "[::1]") == 0)
        return 1;
    /* ECS and EKS Pod Identity agents */
    return strcmp(host, "169.254.170.2") == 0 || strcmp(host, "169.254.170.23") == 0 ||
           strcasecmp(host, "[fd00:ec2::23]") == 0;
}

static int link_container(res_t *r, tg_aws_creds_t **out)
{
    const char *rel = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI");
    const char *full = env("AWS_CONTAINER_CREDENTIALS_FULL_URI");
    char url[2048];
    if (rel) {
        const char *base = r->o->container_endpoint && *r->o->container_endpoint
                               ? r->o->container_endpoint
                               : "http://169.254.170.2";
        size_t bl = strlen(base);
        while (bl && base[bl - 1] == '/')
            bl--;
        snprintf(url, sizeof(url), "%.*s%s%s", (int)bl, base, rel[0] == '/' ? "" : "/", rel);
    } else if (full) {
        CURLU *u = curl_url();
        char *scheme = NULL, *host = NULL;
        int ok = u && curl_url_set(u, CURLUPART_URL, full, 0) == CURLUE_OK &&
                 curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
                 curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK;
        int allowed = ok && host_allowed(scheme, host);
        curl_free(scheme);
        curl_free(host);
        curl_url_cleanup(u);
        if (!ok)
            return fail(r, TG_ECONFIG,
                        "container: AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL");
        if (!allowed)
            return fail(r, TG_ECONFIG,
                        "container: AWS_CONTAINER_CREDENTIALS_FULL_URI %s is neither https nor a "
                        "loopback or container-agent host",
                        full);
        snprintf(url, sizeof(url), "%s", full);
    } else {
        return skip(r, "container: AWS_CONTAINER_CREDENTIALS_RELATIVE_URI/FULL_URI not set");
    }

    tg_buf_t tok;
    tg_buf_init(&tok, TOKEN_FILE_MAX);
    int rc = 0;
    const char *tfile = env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE");
    const char *token = env("AWS_CONTAINER_AUTHORIZATION_TOKEN");
    if (tfile) {
        rc = read_token_file(r, "container", "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE", tfile, &tok);
        token = tok.data;
    } else if (token && strpbrk(token, "\r\n")) {
        rc = fail(r, TG_ECONFIG, "container: AWS_CONTAINER_AUTHORIZATION_TOKEN holds a line break");
    }
    struct curl_slist *h = NULL;
    if (rc == 0 && (header_add(&h, "Accept: application/json") ||
                    (token && header_add(&h, "Authorization: %s", token))))
        rc = fail(r, TG_ENOMEM, "container: out of memory for headers");
    if (rc == 0) {
        long status = 0;
        char why[CURL_ERROR_SIZE + 64];
        tg_buf_t body;
        tg_buf_init(&body, BODY_MAX);
        tg_fetch_t f = {.method = "GET", .url = url, .headers = h, .direct = 1};
        rc = http_fetch(r, &f, &status, &body, why, sizeof(why));
        if (rc) {
            rc = fail(r, rc, "container: GET %s: %s", url, why);
        } else if (status != 200) {
            cJSON *doc = cJSON_ParseWithLength(body.data ? body.data : "", body.len);
            char c[64], m[200];
            clean_copy(c, sizeof(c), json_str(doc, "code"));
            clean_copy(m, sizeof(m), json_str(doc, "message"));
            cJSON_Delete(doc);
            rc = fail(r, status == 401 || status == 403 ? TG_EAUTH : TG_EUPSTREAM,
                      "container: GET %s: HTTP %ld%s%s%s%s", url, status, *c ? " " : "", c,
                      *m ? ": " : "", m);
        } else {
            rc = tg_aws_parse_creds_json(body.data, body.len, "container", out, why, sizeof(why));
            if (rc) rc = fail(r, rc, "container: GET %s: %s", url, why);
        }
        buf_wipe_free(&body);
    }
    headers_free(h);
    buf_wipe_free(&tok);
    return rc;
}

/* ---- EC2 instance metadata (IMDSv2) --------------------------------------- */

static int imds_disabled(void)
{
    const char *v = env("AWS_EC2_METADATA_DISABLED");
    return v && strcasecmp(v, "true") == 0;
}

/* One IMDS request: 0 with the body of a 200, else the link's error. */
static int imds_fetch(res_t *r, const char *method, const char *url, struct curl_slist *h,
                      tg_buf_t *body, const char *why_404)
{
    char why[CURL_ERROR_SIZE + 64];
    long status = 0;
    tg_buf_reset(body);
    tg_fetch_t f = {.method = method, .url = url, .headers = h, .direct = 1};
    int rc = http_fetch(r, &f, &status, body, why, sizeof(why));
    if (rc) return fail(r, rc, "imds: %s %s: %s", method, url, why);
    if (status == 200) return 0;
    return fail(r, status == 401 || status == 403 || status == 404 ? TG_EAUTH : TG_EUPSTREAM,
                "imds: %s %s: HTTP %ld%s%s", method, url, status,
                status == 404 && why_404 ? ", " : "", status == 404 && why_404 ? why_404 : "");
}

/* The first line of the role listing, if it is an IAM role name. */
static int imds_role_name(res_t *r, const char *url, const tg_buf_t *body, char *role, size_t cap)
{
    const char *d = body->data ? body->data : "";
    size_t n = strcspn(d, "\r\n");
    while (n && isspace((unsigned char)d[n - 1]))
        n--;
    size_t ok = 0;
    while (ok < n && (isalnum((unsigned char)d[ok]) || strchr("+=,.@_-", d[ok])))
        ok++;
    if (n == 0 || ok != n || n >= cap)
        return fail(r, TG_EPROTO, "imds: GET %s: no usable role name", url);
    memcpy(role, d, n);
    role[n] = '\0';
    return 0;
}

static int link_imds(res_t *r, tg_aws_creds_t **out)
{
    if (imds_disabled()) return skip(r, "imds: disabled by AWS_EC2_METADATA_DISABLED");
    const char *base = r->o->imds_endpoint && *r->o->imds_endpoint
                           ? r->o->imds_endpoint
                           : env("AWS_EC2_METADATA_SERVICE_ENDPOINT");
    if (!base) {
        const char *mode = env("AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
        base = mode && strcasecmp(mode, "IPv6") == 0 ? "http://[fd00:ec2::254]"
                                                     : "http://169.254.169.254";
    }
    int bl = (int)strlen(base);
    while (bl && base[bl - 1] == '/')
        bl--;
    static const char path[] = "/latest/meta-data/iam/security-credentials/";
    char url[1024], role[256];
    tg_buf_t body;
    tg_buf_init(&body, BODY_MAX);
    struct curl_slist *h = NULL;

    /* 1. a session token: the IMDSv2 handshake */
    snprintf(url, sizeof(url), "%.*s/latest/api/token", bl, base);
    int rc = header_add(&h, "X-aws-ec2-metadata-token-ttl-seconds: 21600") ||
                     header_add(&h, "Content-Type:")
                 ? fail(r, TG_ENOMEM, "imds: out of memory for headers")
                 : imds_fetch(r, "PUT", url, h, &body, NULL);
    if (rc == 0 && (!body.len || body.len > 1024 || strpbrk(body.data, "\r\n")))
        rc = fail(r, TG_EPROTO, "imds: PUT %s: unusable token", url);
    headers_free(h);
    h = NULL;
    if (rc == 0 && header_add(&h, "X-aws-ec2-metadata-token: %s", body.data))
        rc = fail(r, TG_ENOMEM, "imds: out of memory for headers");
    /* 2. the instance role's name, 3. its credentials */
    if (rc == 0) {
        snprintf(url, sizeof(url), "%.*s%s", bl, base, path);
        rc = imds_fetch(r, "GET", url, h, &body, "no IAM role attached to the instance");
    }
    if (rc == 0) rc = imds_role_name(r, url, &body, role, sizeof(role));
    if (rc == 0) {
        snprintf(url, sizeof(url), "%.*s%s%s", bl, base, path, role);
        rc = imds_fetch(r, "GET", url, h, &body, NULL);
    }
    if (rc == 0) {
        char why[160];
        rc = tg_aws_parse_creds_json(body.data, body.len, "imds", out, why, sizeof(why));
        if (rc) rc = fail(r, rc, "imds: GET %s: %s", url, why);
    }
    headers_free(h);
    buf_wipe_free(&body);
    return rc;
}

/* ---- shared files ------------------------------------------------------- */

typedef struct {
    char cred_path[1024], conf_path[1024];
    tg_buf_t cred, conf; /* NUL-terminated texts; empty when missing */
} files_t;

static void file_path(char *out, size_t cap, const char *var, const char *rel)
{
    const char *v = env(var), *home = env("HOME");
    out[0] = '\0';
    if (v && v[0] == '~' && v[1] == '/' && home)
        snprintf(out, cap, "%s%s", home, v + 1);
    else if (v)
        snprintf(out, cap, "%s", v);
    else if (home)
        snprintf(out, cap, "%s/%s", home, rel);
}

static int files_load(res_t *r, files_t *f)
{
    file_path(f->cred_path, sizeof(f->cred_path), "AWS_SHARED_CREDENTIALS_FILE",
              ".aws/credentials");
    file_path(f->conf_path, sizeof(f->conf_path), "AWS_CONFIG_FILE", ".aws/config");
    tg_buf_init(&f->cred, FILE_MAX);
    tg_buf_init(&f->conf, FILE_MAX);
    const char *paths[2] = {f->cred_path, f->conf_path};
    tg_buf_t *bufs[2] = {&f->cred, &f->conf};
    for (int i = 0; i < 2; i++) {
        char why[128];
        int rc =
            *paths[i] ? read_file(paths[i], FILE_MAX, bufs[i], why, sizeof(why)) : TG_ENOTFOUND;
        if (rc == TG_ENOTFOUND) {
            tg_buf_reset(bufs[i]);
            rc = tg_buf_append(bufs[i], "", 0);
        } else if (rc) {
            return fail(r, rc, "shared-files: %s: %s", paths[i], why);
        }
        if (rc) return fail(r, rc, "shared-files: out of memory");
    }
    return 0;
}

static void files_free(files_t *f)
{
    buf_wipe_free(&f->cred);
    buf_wipe_free(&f->conf);
}

/* The profile's value for key, credentials file first, malloc'd; NULL when
 * absent. *exists (may be NULL) is set when either file has the profile. */
static char *prof_get(files_t *f, const char *profile, const char *key, int *exists)
{
    const char *v;
    size_t n;
    const char *v2;
    size_t n2;
    int s1 = 0, s2 = 0;
    int rc = ini_find(f->cred.data, profile, 0, key, &v, &n, &s1);
    int rc2 = ini_find(f->conf.data, profile, 1, key, &v2, &n2, &s2);
    if (rc && rc2 == 0) {
        rc = 0;
        v = v2;
        n = n2;
    }
    if (exists) *exists = s1 || s2;
    if (rc || n == 0) return NULL;
    return strndup(v, n);
}

/* The profile's own keys; when it has none: TG_ENOTFOUND (a note), or an
 * error when they are required (a source profile). */
static int profile_keys(res_t *r, files_t *f, const char *profile, int required,
                        tg_aws_creds_t **out)
{
    char *akid = prof_get(f, profile, "aws_access_key_id", NULL);
    char *sec = prof_get(f, profile, "aws_secret_access_key", NULL);
    char *tok = prof_get(f, profile, "aws_session_token", NULL);
    if (!tok) tok = prof_get(f, profile, "aws_security_token", NULL); /* the old name */
    int rc;
    if (!akid && !sec)
        rc = required ? fail(r, TG_ECONFIG,
                             "shared-files: source profile \"%s\" holds no credentials", profile)
                      : skip(r, "shared-files: profile \"%s\" holds no credentials", profile);
    else if (!akid || !sec)
        rc = fail(r, TG_ECONFIG, "shared-files: profile \"%s\" has %s but no %s", profile,
                  akid ? "aws_access_key_id" : "aws_secret_access_key",
                  akid ? "aws_secret_access_key" : "aws_access_key_id");
    else
        rc = (*out = creds_new(akid, sec, tok, 0, "shared-files"))
                 ? 0
                 : fail(r, TG_ENOMEM, "shared-files: out of memory");
    wipe_free(akid);
    wipe_free(sec);
    wipe_free(tok);
    return rc;
}

static int profile_creds(res_t *r, files_t *f, const char *profile, int depth, int named,
                         tg_aws_creds_t **out);

/* role_arn in a profile: credentials from its source, then AssumeRole. */
static int profile_role(res_t *r, files_t *f, const char *profile, const char *role_arn, int depth,
                        tg_aws_creds_t **out)
{
    char *src = prof_get(f, profile, "source_profile", NULL);
    char *csrc = prof_get(f, profile, "credential_source", NULL);
    char *wif = prof_get(f, profile, "web_identity_token_file", NULL);
    char *sess = prof_get(f, profile, "role_session_name", NULL);
    char *ext = prof_get(f, profile, "external_id", NULL);
    char session[128];
    default_session(session, sizeof(session), sess ? sess : r->o->role_session_name);
    tg_aws_creds_t *base = NULL;
    int rc;
    if (wif) {
        rc = web_identity(r, "shared-files", wif, role_arn, session, out);
        goto out;
    }
    if (src && csrc) {
        rc = fail(r, TG_ECONFIG,
                  "shared-files: profile \"%s\" has both source_profile and credential_source",
                  profile);
    } else if (src && strcmp(src, profile) == 0) {
        rc = profile_keys(r, f, profile, 1, &base); /* its own keys, then the role */
    } else if (src) {
        rc = depth + 1 >= PROFILE_DEPTH
                 ? fail(r, TG_ECONFIG,
                        "shared-files: source_profile chain from \"%s\" is longer than %d (a "
                        "cycle?)",
                        profile, PROFILE_DEPTH)
                 : profile_creds(r, f, src, depth + 1, 1, &base);
    } else if (csrc) {
        if (strcmp(csrc, "Environment") == 0)
            rc = link_env(r, &base);
        else if (strcmp(csrc, "Ec2InstanceMetadata") == 0)
            rc = link_imds(r, &base);
        else if (strcmp(csrc, "EcsContainer") == 0)
            rc = link_container(r, &base);
        else
            rc = fail(r, TG_ECONFIG,
                      "shared-files: profile \"%s\": unknown credential_source \"%s\"", profile,
                      csrc);
        if (rc == TG_ENOTFOUND)
            rc = fail(r, TG_ECONFIG,
                      "shared-files: profile \"%s\": credential_source %s yields "
                      "no credentials",
                      profile, csrc);
    } else {
        rc = fail(r, TG_ECONFIG,
                  "shared-files: profile \"%s\" has role_arn but no source_profile, "
                  "credential_source or web_identity_token_file",
                  profile);
    }
    if (rc == 0) {
        char link[160];
        snprintf(link, sizeof(link), "shared-files (profile \"%s\")", profile);
        rc = assume_role(r, link, base, role_arn, session, ext, out);
    }
out:
    tg_aws_creds_release(base);
    free(src);
    free(csrc);
    free(wif);
    free(sess);
    free(ext);
    return rc;
}

static int profile_creds(res_t *r, files_t *f, const char *profile, int depth, int named,
                         tg_aws_creds_t **out)
{
    int exists = 0;
    char *role = prof_get(f, profile, "role_arn", &exists);
    if (!exists) {
        if (!named)
            return skip(r, "shared-files: no profile \"%s\" in %s or %s", profile,
                        *f->cred_path ? f->cred_path : "(no HOME)",
                        *f->conf_path ? f->conf_path : "(no HOME)");
        return fail(r, TG_ECONFIG, "shared-files: profile \"%s\" not found in %s or %s", profile,
                    *f->cred_path ? f->cred_path : "(no HOME)",
                    *f->conf_path ? f->conf_path : "(no HOME)");
    }
    if (role) {
        int rc = profile_role(r, f, profile, role, depth, out);
        free(role);
        return rc;
    }
    return profile_keys(r, f, profile, depth > 0, out);
}

static int link_files(res_t *r, const char *profile, int named, tg_aws_creds_t **out)
{
    files_t f;
    int rc = files_load(r, &f);
    if (rc == 0) rc = profile_creds(r, &f, profile, 0, named, out);
    files_free(&f);
    return rc;
}

/* ---- web identity from the environment ---------------------------------- */

static int link_web_identity(res_t *r, tg_aws_creds_t **out)
{
    const char *file = env("AWS_WEB_IDENTITY_TOKEN_FILE"), *role = env("AWS_ROLE_ARN");
    if (!file && !role) return skip(r, "web-identity: AWS_WEB_IDENTITY_TOKEN_FILE not set");
    if (!file || !role)
        return fail(r, TG_ECONFIG, "web-identity: %s is set but %s is not",
                    file ? "AWS_WEB_IDENTITY_TOKEN_FILE" : "AWS_ROLE_ARN",
                    file ? "AWS_ROLE_ARN" : "AWS_WEB_IDENTITY_TOKEN_FILE");
    char session[128];
    default_session(session, sizeof(session), env("AWS_ROLE_SESSION_NAME"));
    return web_identity(r, "web-identity", file, role, session, out);
}

/* ---- the chain ------------------------------------------------------------ */

static int chain(res_t *r, tg_aws_creds_t **out)
{
    const tg_aws_creds_opts_t *o = r->o;
    tg_aws_creds_t *c = NULL;
    int rc;
    *out = NULL;
    if (o->access_key_id && *o->access_key_id) {
        if (!o->secret_access_key || !*o->secret_access_key)
            return fail(r, TG_ECONFIG, "static: access key id given without a secret access key");
        c = creds_new(o->access_key_id, o->secret_access_key, o->session_token, 0, "static");
        rc = c ? 0 : fail(r, TG_ENOMEM, "static: out of memory");
    } else {
        const char *profile = o->profile && *o->profile ? o->profile : env("AWS_PROFILE");
        int named = profile != NULL;
        rc = o->profile && *o->profile
                 ? skip(r, "environment: skipped for the explicit profile \"%s\"", o->profile)
                 : link_env(r, &c);
        if (rc == TG_ENOTFOUND) rc = link_files(r, named ? profile : "default", named, &c);
        if (rc == TG_ENOTFOUND) rc = link_web_identity(r, &c);
        if (rc == TG_ENOTFOUND) rc = link_container(r, &c);
        if (rc == TG_ENOTFOUND) rc = link_imds(r, &c);
        if (rc == TG_ENOTFOUND)
            rc = fail(r, TG_EAUTH, "no AWS credentials found: %s",
                      r->skipped.data ? r->skipped.data : "");
    }
    if (rc == 0 && o->role_arn && *o->role_arn) {
        tg_aws_creds_t *base = c;
        char session[128];
        default_session(session, sizeof(session), o->role_session_name);
        char link[96];
        snprintf(link, sizeof(link), "assume-role (over %s)", base->source);
        c = NULL;
        rc = assume_role(r, link, base, o->role_arn, session, o->external_id, &c);
        tg_aws_creds_release(base);
    }
    if (rc == 0 && c->expires_ms && c->expires_ms <= tg_wall_ms()) {
        char iso[32];
        tg_iso8601_ms(iso, sizeof(iso), c->expires_ms);
        rc = fail(r, TG_EEXPIRED, "%s: credentials already expired (at %s)", c->source, iso);
    }
    if (rc) {
        tg_aws_creds_release(c);
        return rc;
    }
    *out = c;
    return 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static void curl_init_once(void)
{
    curl_global_init(CURL_GLOBAL_DEFAULT);
}

static void opts_defaults(tg_aws_creds_opts_t *o)
{
    if (!o->timeout_ms) o->timeout_ms = 2000;
    if (!o->refresh_before_ms) o->refresh_before_ms = 300000;
}

static int resolve(const tg_aws_creds_opts_t *o, CURLM *multi, atomic_int *stop,
                   tg_aws_creds_t **out, char *err, size_t errcap)
{
    char dummy[1];
    res_t r = {.o = o,
               .multi = multi,
               .stop = stop,
               .err = err ? err : dummy,
               .errcap = err ? errcap : sizeof(dummy)};
    if (r.errcap) r.err[0] = '\0';
    tg_buf_init(&r.skipped, 1024);
    int rc = chain(&r, out);
    tg_buf_free(&r.skipped);
    return rc;
}

int tg_aws_creds_resolve(const tg_aws_creds_opts_t *o, tg_aws_creds_t **out, char *err,
                         size_t errcap)
{
    pthread_once(&curl_once, curl_init_once);
    tg_aws_creds_opts_t eff = *o;
    opts_defaults(&eff);
    CURLM *m = curl_multi_init();
    if (!m) {
        if (err && errcap) snprintf(err, errcap, "aws credentials: out of memory");
        return TG_ENOMEM;
    }
    int rc = resolve(&eff, m, NULL, out, err, errcap);
    curl_multi_cleanup(m);
    return rc;
}

/* ---- the provider and its refresh thread ---------------------------------- */

struct tg_aws_credprov {
    tg_aws_creds_opts_t o; /* strings are copies owned here */
    CURLM *multi;          /* the thread's; destroy only wakes it */
    atomic_int stop;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    pthread_t thread;
    int started;
    /* guarded by mu */
    tg_aws_creds_t *cur; /* one reference held here */
    int attempts;        /* resolutions finished */
    int last_err;
    char last_msg[512];
};

#define NOPT 11

/* The option strings the provider copies, as pointers to the fields. */
static void opt_fields(tg_aws_creds_opts_t *o, const char **f[NOPT])
{
    const char **all[NOPT] = {
        &o->profile,       &o->role_arn,          &o->role_session_name, &o->external_id,
        &o->region,        &o->sts_endpoint,      &o->imds_endpoint,     &o->container_endpoint,
        &o->access_key_id, &o->secret_access_key, &o->session_token};
    memcpy(f, all, sizeof(all));
}

static void opts_free(tg_aws_creds_opts_t *o)
{
    const char **f[NOPT];
    opt_fields(o, f);
    for (int i = 0; i < NOPT; i++) {
        wipe_free((char *)*f[i]);
        *f[i] = NULL;
    }
}

static void mono_deadline(struct timespec *ts, int64_t delay_ms)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    if (delay_ms < 0) delay_ms = 0;
    ts->tv_sec += delay_ms / 1000;
    ts->tv_nsec += (delay_ms % 1000) * 1000000L;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

int tg_aws_credprov_create(tg_aws_credprov_t **out, const tg_aws_creds_opts_t *o)
{
    pthread_once(&curl_once, curl_init_once);
    tg_aws_credprov_t *p = calloc(1, sizeof(*p));
    if (!p) return TG_ENOMEM;
    p->o = *o;
    opts_defaults(&p->o);
    int rc = 0;
    const char **f[NOPT];
    opt_fields(&p->o, f);
    for (int i = 0; i < NOPT; i++)
        if (*f[i] && !(*f[i] = strdup(*f[i]))) rc = TG_ENOMEM;
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int cv_ok = pthread_cond_init(&p->cv, &ca) == 0;
    pthread_condattr_destroy(&ca);
    int mu_ok = pthread_mutex_init(&p->mu, NULL) == 0;
    p->multi = curl_multi_init();
    if (rc || !cv_ok || !mu_ok || !p->multi) {
        if (cv_ok) pthread_cond_destroy(&p->cv);
        if (mu_ok) pthread_mutex_destroy(&p->mu);
        if (p->multi) curl_multi_cleanup(p->multi);
        opts_free(&p->o);
        free(p);
        return TG_ENOMEM;
    }
    *out = p;
    return 0;
}

static void *refresh_main(void *arg)
{
    tg_aws_credprov_t *p = arg;
    pthread_setname_np(pthread_self(), "tg-aws-creds");
    uint32_t backoff = 0;
    int failing = 0;
    char msg[512];
    pthread_mutex_lock(&p->mu);
    while (!atomic_load(&p->stop)) {
        pthread_mutex_unlock(&p->mu);
        tg_aws_creds_t *c = NULL, *old = NULL;
        int rc = resolve(&p->o, p->multi, &p->stop, &c, msg, sizeof(msg));
        int64_t now = tg_wall_ms(), next;
        char iso[32] = "never";
        pthread_mutex_lock(&p->mu);
        if (atomic_load(&p->stop)) {
            tg_aws_creds_release(c);
            break;
        }
        p->attempts++;
        if (rc == 0) {
            old = p->cur;
            p->cur = c;
            p->last_err = 0;
            next = tg_aws_refresh_at(now, c->expires_ms, p->o.refresh_before_ms);
            if (c->expires_ms) tg_iso8601_ms(iso, sizeof(iso), c->expires_ms);
        } else {
            p->last_err = rc;
            snprintf(p->last_msg, sizeof(p->last_msg), "%s", msg);
            if (p->cur && p->cur->expires_ms && p->cur->expires_ms <= now) {
                old = p->cur;
                p->cur = NULL;
            }
            if (p->cur && p->cur->expires_ms) tg_iso8601_ms(iso, sizeof(iso), p->cur->expires_ms);
            backoff = tg_aws_retry_delay(backoff);
            next = now + backoff;
        }
        int have = p->cur != NULL;
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);

        tg_aws_creds_release(old);
        if (rc == 0) {
            if (failing || p->attempts == 1)
                tg_info("aws credentials: from %s, expiring %s", c->source, iso);
            else
                tg_debug("aws credentials: refreshed from %s, expiring %s", c->source, iso);
            failing = 0;
            backoff = 0;
        } else {
            failing = 1;
            tg_warn("aws credentials (%s): %s; retrying in %" PRIu32 " ms%s%s", tg_strerror(rc),
                    msg, backoff, have ? "; current credentials valid until " : "",
                    have ? iso : "");
        }

        pthread_mutex_lock(&p->mu);
        struct timespec ts;
        if (next) mono_deadline(&ts, next - tg_wall_ms());
        while (!atomic_load(&p->stop)) {
            if (!next) {
                pthread_cond_wait(&p->cv, &p->mu);
            } else if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT) {
                break;
            }
        }
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

int tg_aws_credprov_start(tg_aws_credprov_t *p)
{
    if (p->started) return TG_EINVAL;
    if (pthread_create(&p->thread, NULL, refresh_main, p) != 0) return TG_EIO;
    p->started = 1;
    return 0;
}

int tg_aws_credprov_wait(tg_aws_credprov_t *p, uint32_t timeout_ms, char *err, size_t errcap)
{
    if (err && errcap) err[0] = '\0';
    if (!p->started) {
        if (err && errcap) snprintf(err, errcap, "aws credentials: provider not started");
        return TG_EINVAL;
    }
    struct timespec ts;
    mono_deadline(&ts, timeout_ms);
    pthread_mutex_lock(&p->mu);
    while (!p->cur && p->attempts == 0)
        if (pthread_cond_timedwait(&p->cv, &p->mu, &ts) == ETIMEDOUT) break;
    int rc;
    if (p->cur && (!p->cur->expires_ms || p->cur->expires_ms > tg_wall_ms())) {
        rc = 0;
    } else if (p->attempts == 0) {
        rc = TG_ETIMEDOUT;
        if (err && errcap)
            snprintf(err, errcap, "aws credentials: no answer from the chain within %" PRIu32 " ms",
                     timeout_ms);
    } else {
        rc = p->last_err ? p->last_err : TG_EEXPIRED;
        if (err && errcap)
            snprintf(err, errcap, "%s", p->last_err ? p->last_msg : "credentials expired");
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

tg_aws_creds_t *tg_aws_credprov_get(tg_aws_credprov_t *p)
{
    int64_t now = tg_wall_ms();
    pthread_mutex_lock(&p->mu);
    tg_aws_creds_t *c = p->cur;
    if (c && c->expires_ms && c->expires_ms <= now) c = NULL;
    if (c) __atomic_add_fetch(&c->refs, 1, __ATOMIC_RELAXED);
    pthread_mutex_unlock(&p->mu);
    return c;
}

void tg_aws_credprov_destroy(tg_aws_credprov_t *p)
{
    if (!p) return;
    if (p->started) {
        pthread_mutex_lock(&p->mu);
        atomic_store(&p->stop, 1);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
        curl_multi_wakeup(p->multi); /* interrupts a fetch in flight */
        pthread_join(p->thread, NULL);
    }
    tg_aws_creds_release(p->cur);
    curl_multi_cleanup(p->multi);
    pthread_cond_destroy(&p->cv);
    pthread_mutex_destroy(&p->mu);
    opts_free(&p->o);
    free(p);
}

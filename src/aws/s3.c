/* s3.c - S3 PutObject over tg_fetch (see s3.h).
 *
 * The URL is built once per call: the host and path it holds are exactly what
 * is signed and what curl sends (Host is passed explicitly), and the key is
 * percent-encoded once by tg_sigv4_uri_encode, which the S3-style signer keeps
 * as it is. Each attempt then signs with a fresh x-amz-date and performs one
 * tg_fetch; the loop around it decides, from the transport result and the
 * status, whether to sleep and try again. Sleeps are curl_multi_poll on the
 * caller's multi handle with nothing in it, so the curl_multi_wakeup that
 * cuts a fetch short also cuts a sleep short. */
#include "aws/s3.h"

#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "aws/sigv4.h"
#include "upstream/fetch.h"

#define URL_MAX          8192  /* endpoint + bucket + key encoded (<= 3 x 1024) */
#define ERROR_BODY_MAX   65536 /* S3 error XML is well under 1 KiB */
#define HEADER_LINE_MAX  16384 /* session tokens run to a few KiB */
#define CONTENT_TYPE_MAX 256

static const uint32_t backoff_ms[TG_S3_ATTEMPTS - 1] = {100, 400};

/* ---- validation --------------------------------------------------------- */

static int valid_bucket(const char *b)
{
    size_t n = b ? strlen(b) : 0;
    if (n < 3 || n > 63) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') || b[i] == '.' ||
              b[i] == '-'))
            return 0;
    return 1;
}

/* The region goes into a host name: DNS label characters only. */
static int valid_region(const char *r)
{
    size_t n = r ? strlen(r) : 0;
    if (n == 0 || n > 32) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((r[i] >= 'a' && r[i] <= 'z') || (r[i] >= '0' && r[i] <= '9') || r[i] == '-'))
            return 0;
    return 1;
}

/* 1..1024 bytes without a "." or ".." segment: curl would remove those from
 * the path (RFC 3986 5.2.4) and the object would land under another key. */
static int valid_key(const char *k, size_t n)
{
    if (n == 0 || n > TG_S3_KEY_MAX) return 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        while (j < n && k[j] != '/')
            j++;
        if ((j - i == 1 && k[i] == '.') || (j - i == 2 && k[i] == '.' && k[i + 1] == '.')) return 0;
        i = j + 1;
    }
    return 1;
}

/* A header value: printable ASCII and tabs, so nothing can split the line. */
static int valid_header_value(const char *s, size_t max)
{
    size_t n = strlen(s);
    if (n == 0 || n > max) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 0x20 && s[i] < 0x7f) || s[i] == '\t')) return 0;
    return 1;
}

/* ---- the destination: host as signed and sent, URL, path ---------------- */

typedef struct {
    char host[320]; /* host[:port], the Host header */
    tg_buf_t url;   /* scheme://host[:port]/path */
    size_t path_at; /* where the path starts in url */
} dest_t;

/* Fills d->host and starts d->url with scheme://host and the endpoint's own
 * path (no trailing '/'). */
static int dest_endpoint(dest_t *d, const char *ep, char *err, size_t errcap)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL, *path = NULL, *extra = NULL;
    int rc = TG_EINVAL;
    if (!u) {
        snprintf(err, errcap, "out of memory");
        return TG_ENOMEM;
    }
    if (curl_url_set(u, CURLUPART_URL, ep, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
        curl_url_get(u, CURLUPART_PATH, &path, 0) != CURLUE_OK) {
        snprintf(err, errcap, "endpoint is not a URL");
        goto out;
    }
    if (strcmp(scheme, "http") != 0 && strcmp(scheme, "https") != 0) {
        snprintf(err, errcap, "endpoint scheme must be http or https");
        goto out;
    }
    if (curl_url_get(u, CURLUPART_QUERY, &extra, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_FRAGMENT, &extra, 0) == CURLUE_OK ||
        curl_url_get(u, CURLUPART_USER, &extra, 0) == CURLUE_OK) {
        snprintf(err, errcap, "endpoint must not have a query, fragment or user");
        goto out;
    }
    curl_url_get(u, CURLUPART_PORT, &port, 0); /* only when the URL names one */
    int hl = snprintf(d->host, sizeof(d->host), "%s%s%s", host, port ? ":" : "", port ? port : "");
    if (hl < 0 || (size_t)hl >= sizeof(d->host)) {
        snprintf(err, errcap, "endpoint host too long");
        goto out;
    }
    size_t pl = strlen(path);
    while (pl && path[pl - 1] == '/')
        pl--;
    if (tg_buf_printf(&d->url, "%s://%s", scheme, d->host) == 0) {
        d->path_at = d->url.len;
        if (tg_buf_append(&d->url, path, pl) == 0) rc = 0;
    }
    if (rc) snprintf(err, errcap, "endpoint too long");
out:
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_free(path);
    curl_free(extra);
    curl_url_cleanup(u);
    return rc;
}

static int dest_build(dest_t *d, const tg_s3_target_t *t, const char *key, size_t klen, char *err,
                      size_t errcap)
{
    tg_buf_init(&d->url, URL_MAX);
    int path_style = 1, rc;
    if (t->endpoint) {
        if ((rc = dest_endpoint(d, t->endpoint, err, errcap))) return rc;
    } else {
        path_style = strchr(t->bucket, '.') != NULL;
        snprintf(d->host, sizeof(d->host), "%s%ss3.%s.amazonaws.com%s", path_style ? "" : t->bucket,
                 path_style ? "" : ".", t->region, strncmp(t->region, "cn-", 3) == 0 ? ".cn" : "");
        if ((rc = tg_buf_printf(&d->url, "https://%s", d->host))) goto too_long;
        d->path_at = d->url.len;
    }
    if ((path_style && (rc = tg_buf_printf(&d->url, "/%s", t->bucket))) ||
        (rc = tg_buf_append(&d->url, "/", 1)) || (rc = tg_sigv4_uri_encode(&d->url, key, klen, 1)))
        goto too_long;
    return 0;
too_long:
    snprintf(err, errcap, rc == TG_ETOOBIG ? "URL longer than %d bytes" : "out of memory", URL_MAX);
    return rc == TG_ETOOBIG ? TG_EINVAL : rc;
}

/* ---- one attempt --------------------------------------------------------- */

/* Appends "name: value" to *h (lines may hold the session token: wiped). */
static int header_add(struct curl_slist **h, const char *name, const char *value)
{
    return tg_fetch_header(h, HEADER_LINE_MAX, "%s: %s", name, value);
}

typedef struct {
    CURLM *multi;
    const atomic_int *stop;
    const tg_s3_target_t *t;
    const tg_aws_creds_t *creds;
    const dest_t *d;
    const void *body;
    size_t len;
    const char *content_type;
    char checksum[45]; /* base64 SHA-256 of the body */
} put_t;

/* Signs and performs one PUT. Returns tg_fetch's result; *status and resp as
 * it leaves them. */
static int put_once(const put_t *p, uint32_t timeout_ms, long *status, tg_buf_t *resp, char *why,
                    size_t whycap)
{
    const char *path = p->d->url.data + p->d->path_at;
    tg_header_t sh[3] = {
        {"host", 4, p->d->host, strlen(p->d->host)},
        {"content-type", 12, p->content_type, strlen(p->content_type)},
        {"x-amz-checksum-sha256", 21, p->checksum, strlen(p->checksum)},
    };
    tg_sigv4_params_t sp = {
        .access_key_id = p->creds->access_key_id,
        .secret_access_key = p->creds->secret_access_key,
        .session_token = p->creds->session_token,
        .region = p->t->region,
        .service = "s3",
        .time = time(NULL),
        .flags = TG_SIGV4_NO_NORMALIZE | TG_SIGV4_SIGN_BODY,
    };
    tg_sigv4_request_t sr = {
        .method = "PUT",
        .path = path,
        .path_len = p->d->url.len - p->d->path_at,
        .headers = sh,
        .nheaders = 3,
        .body = p->body,
        .body_len = p->len,
    };
    tg_sigv4_out_t so;
    *status = 0;
    int rc = tg_sigv4_sign(&sp, &sr, NULL, &so, NULL, NULL);
    if (rc) {
        snprintf(why, whycap, "signing failed (%s): check the credentials and region",
                 tg_strerror(rc));
        return rc == TG_ETOOBIG ? rc : TG_EINVAL;
    }
    struct curl_slist *h = NULL;
    const char *token = p->creds->session_token;
    if (header_add(&h, "Host", p->d->host) || header_add(&h, "Content-Type", p->content_type) ||
        header_add(&h, "x-amz-date", so.amz_date) ||
        header_add(&h, "x-amz-content-sha256", so.payload_hash) ||
        header_add(&h, "x-amz-checksum-sha256", p->checksum) ||
        (token && *token && header_add(&h, "x-amz-security-token", token)) ||
        header_add(&h, "Authorization", so.authorization)) {
        rc = TG_ENOMEM;
        snprintf(why, whycap, "out of memory for headers");
    } else {
        tg_fetch_t f = {.method = "PUT",
                        .url = p->d->url.data,
                        .headers = h,
                        .body = p->body,
                        .body_len = p->len,
                        .timeout_ms = timeout_ms};
        tg_buf_reset(resp);
        rc = tg_fetch(p->multi, p->stop, &f, status, resp, why, whycap);
    }
    explicit_bzero(&so, sizeof(so));
    tg_fetch_headers_free(h);
    return rc;
}

/* ---- S3's XML error body -------------------------------------------------- */

/* Copies the text of the first <tag>...</tag> into out (cut to cap), the five
 * XML entities decoded and anything but printable ASCII made a space: it goes
 * into logs. "" when absent. */
static void xml_field(const char *xml, size_t n, const char *tag, char *out, size_t cap)
{
    static const struct {
        const char *ent;
        char c;
    } ents[] = {{"&amp;", '&'}, {"&lt;", '<'}, {"&gt;", '>'}, {"&quot;", '"'}, {"&apos;", '\''}};
    if (cap) out[0] = '\0';
    if (!xml) return;
    char open[32], close[32];
    int ol = snprintf(open, sizeof(open), "<%s>", tag);
    int cl = snprintf(close, sizeof(close), "</%s>", tag);
    const char *end = xml + n, *s = memmem(xml, n, open, (size_t)ol);
    const char *e = s ? memmem(s + ol, (size_t)(end - s - ol), close, (size_t)cl) : NULL;
    size_t k = 0;
    for (const char *q = s ? s + ol : NULL; e && q < e && k + 1 < cap;) {
        char c = *q++;
        for (size_t i = 0; c == '&' && i < sizeof(ents) / sizeof(ents[0]); i++) {
            size_t el = strlen(ents[i].ent) - 1;
            if ((size_t)(e - q) >= el && memcmp(q, ents[i].ent + 1, el) == 0) {
                c = ents[i].c;
                q += el;
                break;
            }
        }
        out[k++] = c >= 0x20 && c < 0x7f ? c : ' ';
    }
    if (cap) out[k] = '\0';
}

/* The TG_E* code for a final S3 answer. */
static int status_rc(long status, const char *code)
{
    if (strcmp(code, "ExpiredToken") == 0) return TG_EEXPIRED;
    if (status == 403 || strcmp(code, "InvalidToken") == 0) return TG_EAUTH;
    if (status == 404) return TG_ENOTFOUND;
    return TG_EUPSTREAM;
}

static int transient_status(long status)
{
    return status == 500 || status == 502 || status == 503 || status == 504;
}

/* Sleeps ms unless *stop is set first (curl_multi_wakeup ends the poll). */
static int pause_ms(CURLM *multi, const atomic_int *stop, uint32_t ms)
{
    uint64_t end = tg_now_ns() + (uint64_t)ms * 1000000u;
    for (;;) {
        if (stop && atomic_load(stop)) return TG_ECANCELED;
        uint64_t now = tg_now_ns();
        if (now >= end) return 0;
        curl_multi_poll(multi, NULL, 0, (int)((end - now + 999999u) / 1000000u), NULL);
    }
}

int tg_s3_put(CURLM *multi, const atomic_int *stop, const tg_s3_target_t *t,
              const tg_aws_creds_t *creds, const char *key, const void *body, size_t len,
              const char *content_type, char *err, size_t errcap)
{
    if (errcap) err[0] = '\0';
    if (!multi || !t || !key || (len && !body))
        return snprintf(err, errcap, "bad arguments"), TG_EINVAL;
    if (!valid_bucket(t->bucket))
        return snprintf(err, errcap, "bucket name must be 3..63 of [a-z0-9.-]"), TG_EINVAL;
    if (!valid_region(t->region))
        return snprintf(err, errcap, "region must be 1..32 of [a-z0-9-]"), TG_EINVAL;
    size_t klen = strlen(key);
    if (!valid_key(key, klen))
        return snprintf(err, errcap, "key must be 1..%d bytes without a . or .. segment",
                        TG_S3_KEY_MAX),
               TG_EINVAL;
    if (!content_type) content_type = "application/octet-stream";
    if (!valid_header_value(content_type, CONTENT_TYPE_MAX))
        return snprintf(err, errcap, "bad content type"), TG_EINVAL;
    if ((uint64_t)len > TG_S3_BODY_MAX)
        return snprintf(err, errcap, "body over S3's 5 GiB limit for one PUT"), TG_ETOOBIG;
    if (!creds || !creds->access_key_id || !creds->secret_access_key)
        return snprintf(err, errcap, "no AWS credentials"), TG_EAUTH;

    dest_t d;
    int rc = dest_build(&d, t, key, klen, err, errcap);
    if (rc) {
        tg_buf_free(&d.url);
        return rc;
    }
    put_t p = {.multi = multi,
               .stop = stop,
               .t = t,
               .creds = creds,
               .d = &d,
               .body = body,
               .len = len,
               .content_type = content_type};
    unsigned char md[32];
    unsigned int mdlen = 0;
    if (!EVP_Digest(len ? body : "", len, md, &mdlen, EVP_sha256(), NULL)) {
        tg_buf_free(&d.url);
        return snprintf(err, errcap, "SHA-256 failed"), TG_ENOMEM;
    }
    EVP_EncodeBlock((unsigned char *)p.checksum, md, 32);

    tg_buf_t resp;
    tg_buf_init(&resp, ERROR_BODY_MAX);
    uint32_t total = t->timeout_ms ? t->timeout_ms : TG_S3_TIMEOUT_MS;
    uint64_t deadline = tg_now_ns() + (uint64_t)total * 1000000u;
    char why[CURL_ERROR_SIZE + 384], code[64], msg[256];
    int attempt = 1;
    for (;; attempt++) {
        uint64_t now = tg_now_ns(), left_ms = now < deadline ? (deadline - now) / 1000000u : 0;
        uint32_t share = (uint32_t)(left_ms / (uint64_t)(TG_S3_ATTEMPTS - attempt + 1));
        long status = 0;
        rc = put_once(&p, share ? share : 1, &status, &resp, why, sizeof(why));
        if ((rc == 0 || rc == TG_ETOOBIG) && status >= 200 && status < 300) {
            rc = 0;
            break;
        }
        int transient;
        if (status >= 300) { /* S3 answered: its status and error body decide */
            xml_field(resp.data, resp.len, "Code", code, sizeof(code));
            xml_field(resp.data, resp.len, "Message", msg, sizeof(msg));
            snprintf(why, sizeof(why), "HTTP %ld %s%s%s", status, *code ? code : "(no S3 error)",
                     *msg ? ": " : "", msg);
            transient = transient_status(status);
            rc = transient ? TG_EUPSTREAM : status_rc(status, code);
        } else { /* no answer, or a cut one */
            transient = rc == TG_ECONNECT || rc == TG_ETIMEDOUT || rc == TG_EUPSTREAM;
            if (rc == 0) rc = TG_EUPSTREAM, snprintf(why, sizeof(why), "HTTP %ld", status);
        }
        if (!transient || attempt == TG_S3_ATTEMPTS) break;
        now = tg_now_ns();
        if (now >= deadline) break;
        uint64_t pause = backoff_ms[attempt - 1];
        if (pause > (deadline - now) / 1000000u) pause = (deadline - now) / 1000000u;
        tg_warn("s3: PUT to bucket %s failed (attempt %d: %s); retrying in %u ms", t->bucket,
                attempt, why, (unsigned)pause);
        if (pause_ms(multi, stop, (uint32_t)pause)) {
            rc = TG_ECANCELED;
            snprintf(why, sizeof(why), "stopped");
            break;
        }
        if (tg_now_ns() >= deadline) break; /* the last failure says why */
    }
    if (rc && attempt > 1)
        snprintf(err, errcap, "after %d attempts: %s", attempt, why);
    else if (rc)
        snprintf(err, errcap, "%s", why);
    tg_buf_free(&resp);
    tg_buf_free(&d.url);
    return rc;
}

/* cmd_sigv4.c - `tollgate sigv4`: signs a raw HTTP/1.1 request read on stdin
 * with AWS Signature Version 4 (aws/sigv4.h) and prints the canonical
 * request, the string to sign, the signature or the signed request, byte for
 * byte as AWS's SigV4 test suite writes them: no line end after the first
 * three, the request's own bytes and line ends for the last.
 *
 * The request is taken as the suite writes it: a request line whose target
 * may hold raw spaces and UTF-8 (method, then target up to the last space,
 * then HTTP/1.1), header lines "Name:value" with obs-fold continuation lines
 * (leading space or tab), a blank line, the body. LF or CRLF line ends.
 *
 * --batch (for the differential tests, documented in docs/cli.md) signs one
 * JSON object per stdin line instead and answers one JSON line each. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "aws/sigv4.h"
#include "cli/cli.h"

#define SIGV4_MAX_INPUT (64u << 20)

static const char usage_text[] =
    "usage: tollgate sigv4 --access-key-id ID --secret-access-key SECRET [--session-token TOKEN]\n"
    "                      --region REGION --service SERVICE [--time 2015-08-30T12:36:00Z]\n"
    "                      [--sign-body] [--unsigned-payload] [--no-normalize] "
    "[--omit-session-token]\n"
    "                      --print canonical-request|string-to-sign|signature|signed-request\n"
    "       reads the HTTP/1.1 request to sign on stdin\n";

enum { PRINT_CANONICAL, PRINT_STS, PRINT_SIGNATURE, PRINT_SIGNED };

typedef struct {
    const char *access_key_id, *secret_access_key, *session_token, *region, *service;
    time_t time;
    unsigned flags;
    int print; /* PRINT_* or -1 */
    int batch;
} opts_t;

static int usage_error(const char *fmt, const char *arg)
{
    fputs("tollgate sigv4: ", stderr);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n%s", usage_text);
    return 2;
}

static int parse_opts(int argc, char **argv, opts_t *o)
{
    static const struct {
        const char *name;
        unsigned flag;
    } flags[] = {
        {"--sign-body", TG_SIGV4_SIGN_BODY},
        {"--unsigned-payload", TG_SIGV4_UNSIGNED_PAYLOAD},
        {"--no-normalize", TG_SIGV4_NO_NORMALIZE},
        {"--omit-session-token", TG_SIGV4_OMIT_SESSION_TOKEN},
    };
    static const char *const prints[] = {"canonical-request", "string-to-sign", "signature",
                                         "signed-request"};
    const char *time_s = NULL, *print_s = NULL;
    memset(o, 0, sizeof(*o));
    o->print = -1;
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        const char **slot = strcmp(s, "--access-key-id") == 0       ? &o->access_key_id
                            : strcmp(s, "--secret-access-key") == 0 ? &o->secret_access_key
                            : strcmp(s, "--session-token") == 0     ? &o->session_token
                            : strcmp(s, "--region") == 0            ? &o->region
                            : strcmp(s, "--service") == 0           ? &o->service
                            : strcmp(s, "--time") == 0              ? &time_s
                            : strcmp(s, "--print") == 0             ? &print_s
                                                                    : NULL;
        if (slot) {
            if (i + 1 >= argc) return usage_error("%s needs a value", s);
            *slot = argv[++i];
            continue;
        }
        if (strcmp(s, "--batch") == 0) {
            o->batch = 1;
            continue;
        }
        size_t f = 0;
        while (f < sizeof(flags) / sizeof(flags[0]) && strcmp(s, flags[f].name) != 0)
            f++;
        if (f == sizeof(flags) / sizeof(flags[0])) return usage_error("unknown argument %s", s);
        o->flags |= flags[f].flag;
    }
    if (time_s) {
        if (tg_sigv4_parse_time(time_s, &o->time))
            return usage_error("--time must look like 2015-08-30T12:36:00Z, not '%s'", time_s);
    } else {
        o->time = time(NULL);
    }
    if (print_s) {
        for (int i = 0; i < 4; i++)
            if (strcmp(print_s, prints[i]) == 0) o->print = i;
        if (o->print < 0) return usage_error("unknown --print '%s'", print_s);
    }
    if (o->batch) return 0; /* every field may come from the JSON lines */
    if (!o->access_key_id || !o->secret_access_key || !o->region || !o->service)
        return usage_error("%s", "--access-key-id, --secret-access-key, --region and --service "
                                 "are required");
    if (o->print < 0) return usage_error("%s", "--print is required");
    return 0;
}

static const char *sign_error(int rc)
{
    switch (rc) {
    case TG_EINVAL:
        return "malformed request or parameters (a missing Host header, a bad %-escape, a "
               "header name that is not a token, a path not starting with '/', or a region, "
               "service, access key id or session token with characters they cannot hold)";
    case TG_ETOOBIG:
        return "request too large to sign (too many headers or query parameters, or an "
               "Authorization header over 511 bytes)";
    default:
        return tg_strerror(rc);
    }
}

/* ---- one raw request ---------------------------------------------------------- */

typedef struct {
    char method[32];
    const char *path, *query;
    size_t path_len, query_len;
    tg_header_t h[TG_SIGV4_MAX_HEADERS];
    size_t nh;
    size_t head_len; /* request line and header lines, verbatim */
    int head_eol;    /* the last of them ended with a line end */
    const char *body;
    size_t body_len;
    const char *eol; /* the request line's: "\n" or "\r\n" */
} raw_req_t;

/* The line at pos: content [pos, *end), next line at *next. */
static void line_at(const char *b, size_t n, size_t pos, size_t *end, size_t *next)
{
    const char *nl = memchr(b + pos, '\n', n - pos);
    size_t e = nl ? (size_t)(nl - b) : n;
    *next = nl ? e + 1 : n;
    if (nl && e > pos && b[e - 1] == '\r') e--;
    *end = e;
}

static const char *parse_request(const char *b, size_t n, raw_req_t *q)
{
    memset(q, 0, sizeof(*q));
    if (n == 0) return "empty input";
    size_t end, next;
    line_at(b, n, 0, &end, &next);
    q->eol = next > end + 1 ? "\r\n" : "\n";
    const char *sp1 = memchr(b, ' ', end), *sp2 = NULL;
    for (size_t i = end; i > 0 && !sp2; i--)
        if (b[i - 1] == ' ') sp2 = b + i - 1;
    if (!sp1 || sp1 == sp2 || end - (size_t)(sp2 + 1 - b) < 5 || memcmp(sp2 + 1, "HTTP/", 5))
        return "the first line must be METHOD TARGET HTTP/1.1";
    size_t mlen = (size_t)(sp1 - b);
    if (mlen == 0 || mlen >= sizeof(q->method)) return "bad method";
    memcpy(q->method, b, mlen);
    const char *target = sp1 + 1;
    size_t tlen = (size_t)(sp2 - target);
    const char *qm = memchr(target, '?', tlen);
    q->path = target;
    q->path_len = qm ? (size_t)(qm - target) : tlen;
    if (qm) {
        q->query = qm + 1;
        q->query_len = tlen - q->path_len - 1;
    }
    size_t pos = next;
    q->head_len = pos;
    q->head_eol = next > end;
    while (pos < n) {
        line_at(b, n, pos, &end, &next);
        if (end == pos) { /* the blank line: the body follows */
            q->body = b + next;
            q->body_len = n - next;
            return NULL;
        }
        if (b[pos] == ' ' || b[pos] == '\t') {
            if (q->nh == 0) return "a continuation line before any header";
            tg_header_t *h = &q->h[q->nh - 1];
            h->value_len = (size_t)(b + end - h->value);
        } else {
            const char *colon = memchr(b + pos, ':', end - pos);
            if (!colon) return "a header line without ':'";
            if (q->nh == TG_SIGV4_MAX_HEADERS) return "too many headers";
            tg_header_t *h = &q->h[q->nh++];
            h->name = b + pos;
            h->name_len = (size_t)(colon - h->name);
            h->value = colon + 1;
            h->value_len = (size_t)(b + end - h->value);
        }
        pos = next;
        q->head_len = pos;
        q->head_eol = next > end;
    }
    return NULL;
}

static int has_host(const raw_req_t *q)
{
    for (size_t i = 0; i < q->nh; i++)
        if (tg_strcaseeq(q->h[i].name, q->h[i].name_len, "host", 4)) return 1;
    return 0;
}

static void params_from(const opts_t *o, tg_sigv4_params_t *p)
{
    *p = (tg_sigv4_params_t){
        .access_key_id = o->access_key_id,
        .secret_access_key = o->secret_access_key,
        .session_token = o->session_token,
        .region = o->region,
        .service = o->service,
        .time = o->time,
        .flags = o->flags,
    };
}

static void print_signed(const opts_t *o, const raw_req_t *q, const char *in,
                         const tg_sigv4_out_t *out)
{
    const char *eol = q->eol;
    fwrite(in, 1, q->head_len, stdout);
    if (!q->head_eol) fputs(eol, stdout);
    if (o->session_token && o->session_token[0])
        printf("X-Amz-Security-Token:%s%s", o->session_token, eol);
    printf("X-Amz-Date:%s%s", out->amz_date, eol);
    if (o->flags & (TG_SIGV4_SIGN_BODY | TG_SIGV4_UNSIGNED_PAYLOAD))
        printf("x-amz-content-sha256:%s%s", out->payload_hash, eol);
    printf("Authorization:%s%s%s", out->authorization, eol, eol);
    if (q->body_len) fwrite(q->body, 1, q->body_len, stdout);
}

static int read_all(FILE *f, tg_buf_t *b)
{
    char chunk[65536];
    size_t k;
    while ((k = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        int rc = tg_buf_append(b, chunk, k);
        if (rc) return rc;
    }
    return ferror(f) ? TG_EIO : TG_OK;
}

static int sign_one(const opts_t *o)
{
    tg_buf_t in, creq, sts;
    tg_buf_init(&in, SIGV4_MAX_INPUT);
    tg_buf_init(&creq, 0);
    tg_buf_init(&sts, 0);
    int status = 1, rc = read_all(stdin, &in);
    raw_req_t q;
    const char *bad = NULL;
    if (rc) {
        fprintf(stderr, "tollgate sigv4: cannot read stdin: %s\n", tg_strerror(rc));
        goto done;
    }
    bad = parse_request(in.data, in.len, &q);
    if (!bad && !has_host(&q)) bad = "no Host header";
    if (bad) {
        fprintf(stderr, "tollgate sigv4: bad request: %s\n", bad);
        goto done;
    }
    tg_sigv4_params_t p;
    params_from(o, &p);
    tg_sigv4_request_t r = {
        .method = q.method,
        .path = q.path,
        .path_len = q.path_len,
        .query = q.query,
        .query_len = q.query_len,
        .headers = q.h,
        .nheaders = q.nh,
        .body = q.body,
        .body_len = q.body_len,
    };
    tg_sigv4_out_t out;
    if ((rc = tg_sigv4_sign(&p, &r, NULL, &out, &creq, &sts))) {
        fprintf(stderr, "tollgate sigv4: cannot sign: %s\n", sign_error(rc));
        goto done;
    }
    switch (o->print) {
    case PRINT_CANONICAL:
        fwrite(creq.data, 1, creq.len, stdout);
        break;
    case PRINT_STS:
        fwrite(sts.data, 1, sts.len, stdout);
        break;
    case PRINT_SIGNATURE:
        fputs(out.signature, stdout);
        break;
    default:
        print_signed(o, &q, in.data, &out);
    }
    status = fflush(stdout) ? 1 : 0;
done:
    tg_buf_free(&in);
    tg_buf_free(&creq);
    tg_buf_free(&sts);
    return status;
}

/* ---- --batch: one JSON object per line -------------------------------------------- */

static const char *jstr(const cJSON *j, const char *name, const char *dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    return cJSON_IsString(v) ? v->valuestring : dflt;
}

static void jflag(const cJSON *j, const char *name, unsigned flag, int inverted, unsigned *flags)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, name);
    if (!cJSON_IsBool(v)) return;
    if (cJSON_IsTrue(v) != inverted)
        *flags |= flag;
    else
        *flags &= ~flag;
}

/* Signs the request one line describes (fields in docs/cli.md) and adds the
 * results, or "error", to res. key is the cache shared by the whole batch. */
static int batch_sign(const opts_t *dflt, const cJSON *j, tg_sigv4_key_t *key, cJSON *res)
{
    opts_t o = *dflt;
    o.access_key_id = jstr(j, "access_key_id", o.access_key_id);
    o.secret_access_key = jstr(j, "secret_access_key", o.secret_access_key);
    o.session_token = jstr(j, "session_token", o.session_token);
    o.region = jstr(j, "region", o.region);
    o.service = jstr(j, "service", o.service);
    const char *t = jstr(j, "time", NULL);
    if (t && tg_sigv4_parse_time(t, &o.time)) {
        cJSON_AddStringToObject(res, "error", "bad time");
        return 1;
    }
    jflag(j, "normalize", TG_SIGV4_NO_NORMALIZE, 1, &o.flags);
    jflag(j, "sign_body", TG_SIGV4_SIGN_BODY, 0, &o.flags);
    jflag(j, "omit_session_token", TG_SIGV4_OMIT_SESSION_TOKEN, 0, &o.flags);
    jflag(j, "unsigned_payload", TG_SIGV4_UNSIGNED_PAYLOAD, 0, &o.flags);
    if (!o.access_key_id || !o.secret_access_key || !o.region || !o.service) {
        cJSON_AddStringToObject(res, "error", "credentials, region or service missing");
        return 1;
    }
    tg_header_t h[TG_SIGV4_MAX_HEADERS + 1];
    size_t nh = 0;
    const cJSON *hs = cJSON_GetObjectItemCaseSensitive(j, "headers"), *pair;
    cJSON_ArrayForEach(pair, hs)
    {
        const char *name = cJSON_GetStringValue(cJSON_GetArrayItem(pair, 0));
        const char *value = cJSON_GetStringValue(cJSON_GetArrayItem(pair, 1));
        if (!name || !value || nh == TG_SIGV4_MAX_HEADERS + 1) {
            cJSON_AddStringToObject(res, "error", "headers must be [[name, value], ...]");
            return 1;
        }
        h[nh++] = (tg_header_t){name, strlen(name), value, strlen(value)};
    }
    const char *path = jstr(j, "path", "/"), *query = jstr(j, "query", ""),
               *body = jstr(j, "body", "");
    tg_sigv4_params_t p;
    params_from(&o, &p);
    tg_sigv4_request_t r = {
        .method = jstr(j, "method", "GET"),
        .path = path,
        .path_len = strlen(path),
        .query = query,
        .query_len = strlen(query),
        .headers = h,
        .nheaders = nh,
        .body = body,
        .body_len = strlen(body),
    };
    tg_sigv4_out_t out;
    tg_buf_t creq, sts;
    tg_buf_init(&creq, 0);
    tg_buf_init(&sts, 0);
    int rc = tg_sigv4_sign(&p, &r, key, &out, &creq, &sts);
    if (rc) {
        cJSON_AddStringToObject(res, "error", tg_strerror(rc));
    } else {
        cJSON_AddStringToObject(res, "signature", out.signature);
        cJSON_AddStringToObject(res, "authorization", out.authorization);
        cJSON_AddStringToObject(res, "amz_date", out.amz_date);
        cJSON_AddStringToObject(res, "payload_hash", out.payload_hash);
        cJSON_AddStringToObject(res, "canonical_request", creq.data);
        cJSON_AddStringToObject(res, "string_to_sign", sts.data);
    }
    tg_buf_free(&creq);
    tg_buf_free(&sts);
    return rc ? 1 : 0;
}

static int sign_batch(const opts_t *o)
{
    tg_sigv4_key_t key;
    memset(&key, 0, sizeof(key));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int status = 0;
    while ((len = getline(&line, &cap, stdin)) > 0) {
        if (len == 1 && line[0] == '\n') continue;
        cJSON *j = cJSON_ParseWithLength(line, (size_t)len), *res = cJSON_CreateObject();
        if (!res) {
            cJSON_Delete(j);
            status = 1;
            break;
        }
        if (!cJSON_IsObject(j)) {
            cJSON_AddStringToObject(res, "error", "not a JSON object");
            status = 1;
        } else {
            status |= batch_sign(o, j, &key, res);
        }
        char *s = cJSON_PrintUnformatted(res);
        if (s) puts(s);
        free(s);
        cJSON_Delete(res);
        cJSON_Delete(j);
    }
    free(line);
    return fflush(stdout) ? 1 : status;
}

int tg_cmd_sigv4(int argc, char **argv)
{
    opts_t o;
    int rc = parse_opts(argc, argv, &o);
    if (rc) return rc;
    return o.batch ? sign_batch(&o) : sign_one(&o);
}

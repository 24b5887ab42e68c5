/* bedrock.c - the Amazon Bedrock runtime's formats: operations and paths,
 * model ids and ARNs, token counts from headers, bodies and stream events,
 * and error mapping. Pure functions: nothing here does I/O.
 *
 * Counts are taken only as Bedrock reports them and only when they are
 * plain non-negative integers; anything doubtful is "no count", so the
 * caller estimates and says so instead of billing a guess as a fact.
 *
 * InvokeModelWithResponseStream wraps each of the model's own chunks as
 * {"bytes": "<base64>", "p": "<padding>"}; the base64 is decoded in place in
 * the parsed JSON string (output is never longer than input), so a chunk
 * costs two cJSON parses and no other allocation. */
#include "providers/bedrock.h"

#include <math.h>
#include <string.h>

#include "aws/sigv4.h"

#define ID_MAX    2048               /* the API's own limit on modelId */
#define COUNT_MAX 9007199254740991LL /* 2^53 - 1: every integer up to it is exact in a double */

/* ---- operations --------------------------------------------------------- */

static const struct {
    const char *path, *api;
} ops[] = {
    [TG_BR_INVOKE] = {"invoke", "bedrock.invoke"},
    [TG_BR_INVOKE_STREAM] = {"invoke-with-response-stream", "bedrock.invoke-stream"},
    [TG_BR_CONVERSE] = {"converse", "bedrock.converse"},
    [TG_BR_CONVERSE_STREAM] = {"converse-stream", "bedrock.converse-stream"},
};
#define NOPS (sizeof(ops) / sizeof(ops[0]))

static int op_valid(tg_br_op_t op)
{
    return (unsigned)op < NOPS;
}

const char *tg_br_op_path(tg_br_op_t op)
{
    return op_valid(op) ? ops[op].path : NULL;
}

const char *tg_br_op_api(tg_br_op_t op)
{
    return op_valid(op) ? ops[op].api : NULL;
}

static int eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

int tg_br_op_parse(const char *s, size_t n, tg_br_op_t *out)
{
    for (size_t i = 0; s && i < NOPS; i++) {
        if (eq(s, n, ops[i].path) || eq(s, n, ops[i].api)) {
            *out = (tg_br_op_t)i;
            return 0;
        }
    }
    return TG_EINVAL;
}

/* ---- shared AWS helpers ------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p[0..n), or 0 when invalid
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    unsigned char c = p[0];
    size_t len;
    uint32_t cp;
    if (c < 0x80) return 1;
    if (c >= 0xc2 && c <= 0xdf)
        len = 2, cp = c & 0x1f;
    else if (c >= 0xe0 && c <= 0xef)
        len = 3, cp = c & 0x0f;
    else if (c >= 0xf0 && c <= 0xf4)
        len = 4, cp = c & 0x07;
    else
        return 0;
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3f);
    }
    if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff) return 0;
    if (cp >= 0xd800 && cp <= 0xdfff) return 0;
    return len;
}

void tg_aws_text_copy(char *dst, size_t cap, const char *src, size_t n)
{
    size_t w = 0;
    if (cap == 0) return;
    for (size_t i = 0; src && i < n;) {
        const unsigned char *p = (const unsigned char *)src + i;
        size_t len = utf8_len(p, n - i);
        if (len == 0) { /* an invalid byte stands as '?' */
            if (w + 1 >= cap) break;
            dst[w++] = '?';
            i++;
            continue;
        }
        int control = (len == 1 && (p[0] < 0x20 || p[0] == 0x7f)) ||
                      (len == 2 && p[0] == 0xc2 && p[1] < 0xa0);
        if (!control) {
            if (w + len >= cap) break;
            memcpy(dst + w, p, len);
            w += len;
        }
        i += len;
    }
    dst[w] = '\0';
}

static int json_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

cJSON *tg_aws_json_parse(const char *p, size_t n)
{
    const char *end = NULL;
    if (!p || n == 0) return NULL;
    cJSON *j = cJSON_ParseWithLengthOpts(p, n, &end, 0);
    if (!j) return NULL;
    /* cJSON stops after the first value: anything but white space after it
     * means the text was not one JSON value. */
    for (const char *q = end; q && q < p + n; q++) {
        if (!json_ws(*q)) {
            cJSON_Delete(j);
            return NULL;
        }
    }
    return j;
}

static int count_value(const cJSON *v, int64_t *out)
{
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!isfinite(d) || d < 0 || d > (double)COUNT_MAX || d != floor(d)) return -1;
    *out = (int64_t)d;
    return 1;
}

int tg_aws_json_count(const cJSON *obj, const char *key, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return 0;
    return count_value(v, out);
}

/* The bare error name in type[0..n): white space trimmed, the ":http://..."
 * suffix of x-amzn-ErrorType and a "namespace#" prefix dropped. */
static void error_name(const char *type, size_t n, const char **name, size_t *len)
{
    const char *p = type ? type : "", *end = p + (type ? n : 0);
    const char *colon = memchr(p, ':', (size_t)(end - p));
    if (colon) end = colon;
    for (const char *q = end; q > p; q--) {
        if (q[-1] == '#') {
            p = q;
            break;
        }
    }
    while (p < end && (*p == ' ' || *p == '\t'))
        p++;
    while (end > p && (end[-1] == ' ' || end[-1] == '\t'))
        end--;
    *name = p;
    *len = (size_t)(end - p);
}

int tg_aws_error_status(const tg_aws_error_t *table, size_t ntable, const char *type, size_t n,
                        int upstream_status, char *code, size_t codecap)
{
    const char *name;
    size_t len;
    error_name(type, n, &name, &len);
    if (code && codecap) tg_aws_text_copy(code, codecap, name, len);
    for (size_t i = 0; len && i < ntable; i++) {
        if (tg_strcaseeq(name, len, table[i].name, strlen(table[i].name))) return table[i].status;
    }
    return upstream_status >= 400 && upstream_status <= 599 ? upstream_status : 502;
}

void tg_aws_error_message(const char *body, size_t len, char *msg, size_t cap)
{
    if (cap == 0) return;
    msg[0] = '\0';
    cJSON *j = tg_aws_json_parse(body, len);
    if (!j) return;
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(j, "message");
    if (!cJSON_IsString(m)) m = cJSON_GetObjectItemCaseSensitive(j, "Message");
    if (cJSON_IsString(m)) {
        /* InvalidSignatureException quotes the canonical request AWS expected,
         * our x-amz-security-token included: keep only what precedes it. */
        static const char *const cut_at[] = {"The Canonical String", "The String-to-Sign",
                                             "x-amz-security-token"};
        const char *s = m->valuestring;
        size_t n = strlen(s);
        for (size_t i = 0; i < sizeof(cut_at) / sizeof(cut_at[0]); i++) {
            const char *c = strcasestr(s, cut_at[i]);
            if (c && (size_t)(c - s) < n) n = (size_t)(c - s);
        }
        while (n && (s[n - 1] == ' ' || s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == '\t'))
            n--;
        tg_aws_text_copy(msg, cap, s, n);
    }
    cJSON_Delete(j);
}

static const tg_aws_error_t br_errors[] = {
    {"ValidationException", 400},           {"AccessDeniedException", 403},
    {"ResourceNotFoundException", 404},     {"ModelTimeoutException", 408},
    {"ModelErrorException", 424},           {"ModelStreamErrorException", 424},
    {"ThrottlingException", 429},           {"ModelNotReadyException", 429},
    {"ServiceQuotaExceededException", 400}, {"ConflictException", 400},
    {"InternalServerException", 500},       {"ServiceUnavailableException", 503},
};

int tg_br_error_status(const char *type, size_t n, int upstream_status, char *code, size_t codecap)
{
    return tg_aws_error_status(br_errors, sizeof(br_errors) / sizeof(br_errors[0]), type, n,
                               upstream_status, code, codecap);
}

/* ---- model ids ---------------------------------------------------------- */

/* The geographies of system-defined (cross-Region) inference profiles. */
static const char *const geos[] = {"us", "eu", "apac", "global", "us-gov", "jp", "au", "ca"};

static const char *const partitions[] = {"aws",       "aws-cn",    "aws-us-gov", "aws-iso",
                                         "aws-iso-b", "aws-iso-e", "aws-iso-f",  "aws-eusc"};

static const struct {
    const char *type;
    tg_br_id_kind_t kind;
} arn_types[] = {
    {"foundation-model", TG_BR_ID_FOUNDATION_ARN},
    {"inference-profile", TG_BR_ID_PROFILE},
    {"application-inference-profile", TG_BR_ID_PROFILE},
    {"custom-model", TG_BR_ID_CUSTOM},
    {"custom-model-deployment", TG_BR_ID_CUSTOM},
    {"provisioned-model", TG_BR_ID_PROVISIONED},
    {"imported-model", TG_BR_ID_IMPORTED},
    {"prompt", TG_BR_ID_PROMPT},
    {"prompt-router", TG_BR_ID_ROUTER},
    {"default-prompt-router", TG_BR_ID_ROUTER},
};

static int id_char(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
           c == '_' || c == ':' || c == '/' || c == '-';
}

static int in_list(const char *s, size_t n, const char *const *list, size_t nlist)
{
    for (size_t i = 0; i < nlist; i++)
        if (eq(s, n, list[i])) return 1;
    return 0;
}

static int set_str(char *dst, size_t cap, const char *s, size_t n)
{
    if (n >= cap) return TG_EINVAL;
    memcpy(dst, s, n);
    dst[n] = '\0';
    return 0;
}

/* A provider part: [a-z0-9-]+, as in every foundation model id. */
static int provider_ok(const char *s, size_t n)
{
    if (n == 0) return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-')) return 0;
    }
    return 1;
}

/* "provider.rest" (no '/'): fills family and base_model. */
static int parse_foundation(const char *s, size_t n, tg_br_model_t *m)
{
    const char *dot = memchr(s, '.', n);
    if (!dot || dot + 1 == s + n || memchr(s, '/', n)) return TG_EINVAL;
    if (!provider_ok(s, (size_t)(dot - s))) return TG_EINVAL;
    if (set_str(m->family, sizeof(m->family), s, (size_t)(dot - s))) return TG_EINVAL;
    return set_str(m->base_model, sizeof(m->base_model), s, n);
}

/* An id that may start with a geography: "us.anthropic.claude-...". */
static int parse_plain(const char *s, size_t n, tg_br_model_t *m)
{
    const char *dot = memchr(s, '.', n);
    if (dot && in_list(s, (size_t)(dot - s), geos, sizeof(geos) / sizeof(geos[0]))) {
        size_t glen = (size_t)(dot - s);
        if (parse_foundation(dot + 1, n - glen - 1, m)) return TG_EINVAL;
        m->kind = TG_BR_ID_PROFILE;
        return set_str(m->geo, sizeof(m->geo), s, glen);
    }
    m->kind = TG_BR_ID_FOUNDATION;
    return parse_foundation(s, n, m);
}

/* Splits s at the next ':' into a field; *s advances past it. */
static int next_field(const char **s, const char *end, const char **f, size_t *flen)
{
    const char *c = memchr(*s, ':', (size_t)(end - *s));
    if (!c) return -1;
    *f = *s;
    *flen = (size_t)(c - *s);
    *s = c + 1;
    return 0;
}

static int all_digits(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9') return 0;
    return 1;
}

static int region_ok(const char *s, size_t n)
{
    return n >= 1 && n <= 20 && provider_ok(s, n);
}

static int parse_arn(const char *s, size_t n, tg_br_model_t *m)
{
    const char *p = s + 4, *end = s + n, *part, *svc, *region, *account;
    size_t partlen, svclen, regionlen, accountlen;
    if (next_field(&p, end, &part, &partlen) || next_field(&p, end, &svc, &svclen) ||
        next_field(&p, end, &region, &regionlen) || next_field(&p, end, &account, &accountlen))
        return TG_EINVAL;
    if (!in_list(part, partlen, partitions, sizeof(partitions) / sizeof(partitions[0])) ||
        !eq(svc, svclen, "bedrock") || !region_ok(region, regionlen))
        return TG_EINVAL;
    const char *slash = memchr(p, '/', (size_t)(end - p));
    if (!slash || slash + 1 == end) return TG_EINVAL;
    const char *type = p, *res = slash + 1;
    size_t typelen = (size_t)(slash - p), reslen = (size_t)(end - res);
    size_t k = 0, nk = sizeof(arn_types) / sizeof(arn_types[0]);
    while (k < nk && !eq(type, typelen, arn_types[k].type))
        k++;
    if (k == nk) return TG_EINVAL;
    m->kind = arn_types[k].kind;
    /* Only AWS's own foundation models have no account. */
    if (m->kind == TG_BR_ID_FOUNDATION_ARN ? accountlen != 0
                                           : accountlen != 12 || !all_digits(account, accountlen))
        return TG_EINVAL;
    if (set_str(m->region, sizeof(m->region), region, regionlen)) return TG_EINVAL;

    switch (m->kind) {
    case TG_BR_ID_FOUNDATION_ARN:
        return parse_foundation(res, reslen, m);
    case TG_BR_ID_PROFILE:
        if (eq(type, typelen, "inference-profile")) { /* names its model: "us.anthropic..." */
            tg_br_model_t sub = {0};
            if (parse_plain(res, reslen, &sub)) return TG_EINVAL;
            memcpy(m->base_model, sub.base_model, sizeof(m->base_model));
            memcpy(m->family, sub.family, sizeof(m->family));
            memcpy(m->geo, sub.geo, sizeof(m->geo));
        }
        return 0;
    case TG_BR_ID_CUSTOM:
    case TG_BR_ID_ROUTER: {
        /* custom-model/amazon.titan-text-express-v1:0:8k/abc..., and
         * default-prompt-router/anthropic.claude:1 name their provider;
         * their price is not the base model's, so base_model stays "". */
        const char *dot = memchr(res, '.', reslen);
        if (dot && provider_ok(res, (size_t)(dot - res)))
            set_str(m->family, sizeof(m->family), res, (size_t)(dot - res));
        return 0;
    }
    default:
        return 0;
    }
}

int tg_br_model_parse(const char *id, size_t n, tg_br_model_t *out)
{
    memset(out, 0, sizeof(*out));
    if (!id || n == 0 || n > ID_MAX) return TG_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!id_char((unsigned char)id[i])) return TG_EINVAL;
    int rc = n > 4 && memcmp(id, "arn:", 4) == 0 ? parse_arn(id, n, out) : parse_plain(id, n, out);
    if (rc) memset(out, 0, sizeof(*out));
    return rc;
}

int tg_br_path(tg_buf_t *out, const char *model_id, size_t n, tg_br_op_t op)
{
    if (!op_valid(op) || !model_id || n == 0) return TG_EINVAL;
    size_t mark = out->len;
    int rc = tg_buf_appends(out, "/model/");
    if (!rc) rc = tg_sigv4_uri_encode(out, model_id, n, 0);
    if (!rc) rc = tg_buf_append(out, "/", 1);
    if (!rc) rc = tg_buf_appends(out, ops[op].path);
    if (rc && out->data) {
        out->len = mark;
        out->data[mark] = '\0';
    }
    return rc;
}

/* ---- token counts ------------------------------------------------------- */

/* A header's value as a count: decimal digits only, at most COUNT_MAX. */
static int header_count(const char *v, size_t n, int64_t *out)
{
    if (n == 0 || n > 16 || !all_digits(v, n)) return -1;
    int64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = x * 10 + (v[i] - '0');
    if (x > COUNT_MAX) return -1;
    *out = x;
    return 1;
}

int tg_br_usage_from_headers(const tg_header_t *h, size_t n, tg_br_usage_t *u)
{
    static const char *const names[4] = {
        "x-amzn-bedrock-input-token-count",
        "x-amzn-bedrock-output-token-count",
        "x-amzn-bedrock-cache-read-input-token-count",
        "x-amzn-bedrock-cache-write-input-token-count",
    };
    int64_t v[4] = {0};
    int seen[4] = {0};
    for (size_t i = 0; h && i < n; i++) {
        for (int k = 0; k < 4; k++) {
            if (seen[k] || !tg_strcaseeq(h[i].name, h[i].name_len, names[k], strlen(names[k])))
                continue;
            if (header_count(h[i].value, h[i].value_len, &v[k]) < 0) return 0;
            seen[k] = 1;
        }
    }
    if (!seen[0] || !seen[1]) return 0;
    *u = (tg_br_usage_t){
        .have = 1, .input = v[0], .output = v[1], .cache_read = v[2], .cache_write = v[3]};
    return 1;
}

/* Reads four named counts of obj into u: the first two required, the cache
 * pair optional. 1 when valid, 0 otherwise (u untouched). */
static int read_counts(const cJSON *obj, const char *const names[4], tg_br_usage_t *u)
{
    int64_t v[4] = {0};
    if (!cJSON_IsObject(obj)) return 0;
    for (int k = 0; k < 4; k++) {
        int r = tg_aws_json_count(obj, names[k], &v[k]);
        if (r < 0 || (r == 0 && k < 2)) return 0;
    }
    *u = (tg_br_usage_t){
        .have = 1, .input = v[0], .output = v[1], .cache_read = v[2], .cache_write = v[3]};
    return 1;
}

static const char *const converse_names[4] = {"inputTokens", "outputTokens", "cacheReadInputTokens",
                                              "cacheWriteInputTokens"};
static const char *const metrics_names[4] = {
    "inputTokenCount", "outputTokenCount", "cacheReadInputTokenCount", "cacheWriteInputTokenCount"};

int tg_br_usage_from_converse(const char *body, size_t len, tg_br_usage_t *u)
{
    cJSON *j = tg_aws_json_parse(body, len);
    if (!j) return TG_EINVAL;
    int r = read_counts(cJSON_GetObjectItemCaseSensitive(j, "usage"), converse_names, u);
    cJSON_Delete(j);
    return r;
}

/* ---- stream events ------------------------------------------------------ */

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Strict standard base64 (padding required, no white space, zero trailing
 * bits), decoded in place: s[0..n) becomes the bytes, *outlen their count.
 * Writing trails reading, so nothing is overwritten before it is read. */
static int b64_decode_inplace(char *s, size_t n, size_t *outlen)
{
    if (n % 4) return -1;
    size_t w = 0;
    for (size_t i = 0; i < n; i += 4) {
        const unsigned char *q = (const unsigned char *)s + i;
        int pad = 0;
        if (i + 4 == n) pad = (q[3] == '=') + (q[2] == '=' && q[3] == '=');
        int a = b64_value(q[0]), b = b64_value(q[1]);
        int c = pad >= 2 ? 0 : b64_value(q[2]), d = pad >= 1 ? 0 : b64_value(q[3]);
        if (a < 0 || b < 0 || c < 0 || d < 0) return -1;
        uint32_t x = (uint32_t)a << 18 | (uint32_t)b << 12 | (uint32_t)c << 6 | (uint32_t)d;
        if ((pad == 1 && (x & 0xff)) || (pad == 2 && (x & 0xffff))) return -1;
        s[w++] = (char)(x >> 16);
        if (pad < 2) s[w++] = (char)(x >> 8);
        if (pad < 1) s[w++] = (char)x;
    }
    *outlen = w;
    return 0;
}

static int64_t str_bytes(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? (int64_t)strlen(v->valuestring) : 0;
}

/* Generated text in an OpenAI-like choices array (AI21 Jamba, DeepSeek,
 * Mistral chat models): delta.content, message.content, text. */
static int64_t choices_bytes(const cJSON *choices)
{
    int64_t n = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, choices)
    {
        n += str_bytes(cJSON_GetObjectItemCaseSensitive(c, "delta"), "content");
        n += str_bytes(cJSON_GetObjectItemCaseSensitive(c, "message"), "content");
        n += str_bytes(c, "text");
    }
    return n;
}

/* Generated text bytes in one of the models' own stream chunks. */
static int64_t chunk_text_bytes(const cJSON *j)
{
    const cJSON *x, *e;
    int64_t n = 0;
    /* Anthropic Messages: content_block_delta with text, tool input JSON or
     * thinking; the older Text Completions: completion. */
    x = cJSON_GetObjectItemCaseSensitive(j, "delta");
    if (cJSON_IsObject(x)) {
        n += str_bytes(x, "text") + str_bytes(x, "partial_json") + str_bytes(x, "thinking");
    }
    n += str_bytes(j, "completion");
    n += str_bytes(j, "outputText");                    /* Titan */
    n += str_bytes(j, "generation");                    /* Llama */
    x = cJSON_GetObjectItemCaseSensitive(j, "outputs"); /* Mistral */
    cJSON_ArrayForEach(e, x) n += str_bytes(e, "text");
    x = cJSON_GetObjectItemCaseSensitive(j, "generations"); /* Cohere Command */
    cJSON_ArrayForEach(e, x) n += str_bytes(e, "text");
    x = cJSON_GetObjectItemCaseSensitive(j, "event_type"); /* Cohere Command R */
    if (cJSON_IsString(x) && strcmp(x->valuestring, "text-generation") == 0)
        n += str_bytes(j, "text");
    n += choices_bytes(cJSON_GetObjectItemCaseSensitive(j, "choices"));
    x = cJSON_GetObjectItemCaseSensitive(j, "contentBlockDelta"); /* Nova */
    if (cJSON_IsObject(x)) n += str_bytes(cJSON_GetObjectItemCaseSensitive(x, "delta"), "text");
    return n;
}

/* ConverseStream contentBlockDelta.delta: text, toolUse.input, reasoning. */
static int64_t converse_delta_bytes(const cJSON *delta)
{
    int64_t n = str_bytes(delta, "text");
    n += str_bytes(cJSON_GetObjectItemCaseSensitive(delta, "toolUse"), "input");
    n += str_bytes(cJSON_GetObjectItemCaseSensitive(delta, "reasoningContent"), "text");
    return n;
}

static int invoke_chunk(const tg_es_message_t *m, tg_br_event_t *ev, tg_br_usage_t *u)
{
    int rc = TG_EPROTO;
    cJSON *outer = tg_aws_json_parse(m->payload, m->payload_len), *inner = NULL;
    cJSON *bytes = cJSON_GetObjectItemCaseSensitive(outer, "bytes");
    size_t blen;
    if (!cJSON_IsString(bytes)) goto out;
    if (b64_decode_inplace(bytes->valuestring, strlen(bytes->valuestring), &blen)) goto out;
    inner = tg_aws_json_parse(bytes->valuestring, blen);
    if (!cJSON_IsObject(inner)) goto out;
    ev->kind = TG_BR_EV_CONTENT;
    ev->output_text_bytes = chunk_text_bytes(inner);
    const cJSON *metrics =
        cJSON_GetObjectItemCaseSensitive(inner, "amazon-bedrock-invocationMetrics");
    if (read_counts(metrics, metrics_names, u)) ev->kind = TG_BR_EV_USAGE;
    rc = 0;
out:
    cJSON_Delete(inner);
    cJSON_Delete(outer);
    return rc;
}

static int converse_event(const char *type, size_t tlen, const tg_es_message_t *m,
                          tg_br_event_t *ev, tg_br_usage_t *u)
{
    cJSON *j = tg_aws_json_parse(m->payload, m->payload_len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return TG_EPROTO;
    }
    ev->kind = TG_BR_EV_OTHER;
    if (eq(type, tlen, "contentBlockDelta")) {
        ev->kind = TG_BR_EV_CONTENT;
        ev->output_text_bytes = converse_delta_bytes(cJSON_GetObjectItemCaseSensitive(j, "delta"));
    } else if (eq(type, tlen, "metadata")) {
        if (read_counts(cJSON_GetObjectItemCaseSensitive(j, "usage"), converse_names, u))
            ev->kind = TG_BR_EV_USAGE;
    }
    cJSON_Delete(j);
    return 0;
}

/* An exception (or :message-type error) message: the type names it, the
 * JSON payload's message says why. */
static void exception_event(const char *type, size_t tlen, const char *msg, size_t mlen,
                            const tg_es_message_t *m, tg_br_event_t *ev)
{
    ev->kind = TG_BR_EV_EXCEPTION;
    ev->status = tg_br_error_status(type, tlen, 0, ev->code, sizeof(ev->code));
    if (msg)
        tg_aws_text_copy(ev->message, sizeof(ev->message), msg, mlen);
    else
        tg_aws_error_message(m->payload, m->payload_len, ev->message, sizeof(ev->message));
}

int tg_br_stream_event(tg_br_op_t op, const tg_es_message_t *m, tg_br_event_t *ev, tg_br_usage_t *u)
{
    memset(ev, 0, sizeof(*ev));
    ev->kind = TG_BR_EV_OTHER;
    if (op != TG_BR_INVOKE_STREAM && op != TG_BR_CONVERSE_STREAM) return TG_EINVAL;
    size_t mtlen = 0, tlen = 0, mlen = 0;
    const char *mt = tg_es_header_str(m, ":message-type", &mtlen);
    const char *type;
    if (mt && eq(mt, mtlen, "exception")) {
        type = tg_es_header_str(m, ":exception-type", &tlen);
        if (!type) return TG_EPROTO;
        exception_event(type, tlen, NULL, 0, m, ev);
        return 0;
    }
    if (mt && eq(mt, mtlen, "error")) {
        type = tg_es_header_str(m, ":error-code", &tlen);
        const char *msg = tg_es_header_str(m, ":error-message", &mlen);
        if (!type) return TG_EPROTO;
        exception_event(type, tlen, msg, mlen, m, ev);
        return 0;
    }
    if (mt && !eq(mt, mtlen, "event")) return TG_EPROTO;
    type = tg_es_header_str(m, ":event-type", &tlen);
    if (!type) return TG_EPROTO;
    if (op == TG_BR_INVOKE_STREAM) {
        if (!eq(type, tlen, "chunk")) return 0; /* a type this code does not know: other */
        return invoke_chunk(m, ev, u);
    }
    return converse_event(type, tlen, m, ev, u);
}

/* openai.c - usage extraction and token estimates for OpenAI-compatible
 * upstreams. The streaming checks look at raw bytes first so the common
 * chunk (text only) is forwarded without a JSON parse. */
#include "providers/openai.h"

#include <stdlib.h>
#include <string.h>

#include "core/core.h"

static int64_t num(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9e15) return 0;
    return (int64_t)v->valuedouble;
}

/* Reads a usage object into ev; 0 when u is not an object. */
static int read_usage(const cJSON *u, tg_usage_event_t *ev)
{
    if (!cJSON_IsObject(u)) return 0;
    int64_t prompt = num(u, "prompt_tokens");
    int64_t cached =
        num(cJSON_GetObjectItemCaseSensitive(u, "prompt_tokens_details"), "cached_tokens");
    if (cached > prompt) cached = prompt;
    ev->input_tokens = prompt - cached;
    ev->cache_read_tokens = cached;
    ev->output_tokens = num(u, "completion_tokens");
    ev->token_source = TG_TOKENS_PROVIDER;
    return 1;
}

int tg_openai_usage(const cJSON *obj, tg_usage_event_t *ev)
{
    return read_usage(cJSON_GetObjectItemCaseSensitive(obj, "usage"), ev);
}

/* num() on a member's bytes (v.p NULL: absent): 1 with *out set (0 when
 * the member is absent or not a number, as num() says), 0 when unsure (then
 * parse instead). */
static int span_num(tg_span_t v, int64_t *out)
{
    *out = 0;
    if (!v.p || !(*v.p == '-' || (*v.p >= '0' && *v.p <= '9'))) return 1;
    /* tg_json_members checked the JSON number syntax. Plain digits, as
     * counts are written, are read here; what cJSON's strtod gives for them
     * below 10^15 is exactly their value. */
    if (v.len <= 15 && *v.p != '-') {
        int64_t n = 0;
        size_t i = 0;
        while (i < v.len && v.p[i] >= '0' && v.p[i] <= '9')
            n = n * 10 + (v.p[i++] - '0');
        if (i == v.len) {
            *out = n;
            return 1;
        }
    }
    char tmp[64];
    if (v.len >= sizeof(tmp)) return 0;
    memcpy(tmp, v.p, v.len);
    tmp[v.len] = '\0';
    double d = strtod(tmp, NULL); /* what cJSON does with it (C locale) */
    if (d >= 0 && d <= 9e15) *out = (int64_t)d;
    return 1;
}

/* read_usage() on the bytes of the usage value; -1 when unsure. */
static int span_usage(const char *u, size_t len, tg_usage_event_t *ev)
{
    if (*u != '{') return 0; /* not an object: no usage */
    static const char *const names[] = {"prompt_tokens", "completion_tokens",
                                        "prompt_tokens_details"};
    static const char *const cached_name = "cached_tokens";
    tg_span_t m[3], c = {NULL, 0};
    int64_t prompt, cached = 0, out;
    if (tg_json_members(u, len, names, 3, m) < 0 || !span_num(m[0], &prompt) ||
        !span_num(m[1], &out))
        return -1;
    if (m[2].p && *m[2].p == '{' &&
        (tg_json_members(m[2].p, m[2].len, &cached_name, 1, &c) < 0 || !span_num(c, &cached)))
        return -1;
    if (cached > prompt) cached = prompt;
    ev->input_tokens = prompt - cached;
    ev->cache_read_tokens = cached;
    ev->output_tokens = out;
    ev->token_source = TG_TOKENS_PROVIDER;
    return 1;
}

int tg_openai_usage_body(const char *body, size_t len, tg_usage_event_t *ev)
{
    const char *v = NULL;
    size_t vlen = 0;
    int found = tg_json_member(body, len, "usage", &v, &vlen);
    if (found == 0) return 0;
    if (found > 0) {
        int rc = span_usage(v, vlen, ev);
        if (rc >= 0) return rc;
    }
    cJSON *root = found > 0 ? cJSON_ParseWithLength(v, vlen) : cJSON_ParseWithLength(body, len);
    int rc = root ? (found > 0 ? read_usage(root, ev) : tg_openai_usage(root, ev)) : 0;
    cJSON_Delete(root);
    return rc;
}

static int64_t content_chars(const cJSON *content)
{
    if (cJSON_IsString(content)) return (int64_t)strlen(content->valuestring);
    int64_t n = 0;
    if (cJSON_IsArray(content)) {
        for (const cJSON *part = content->child; part; part = part->next) {
            const cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (cJSON_IsString(t)) n += (int64_t)strlen(t->valuestring);
        }
    }
    return n;
}

int64_t tg_openai_estimate_input(const cJSON *messages)
{
    int64_t chars = 0, count = 0;
    for (const cJSON *m = cJSON_IsArray(messages) ? messages->child : NULL; m; m = m->next) {
        chars += content_chars(cJSON_GetObjectItemCaseSensitive(m, "content"));
        count++;
    }
    /* About 4 characters a token, plus a few tokens of framing per message. */
    return (chars + 3) / 4 + 4 * count;
}

static const char *find(const char *h, size_t hlen, const char *needle)
{
    return memmem(h, hlen, needle, strlen(needle));
}

/* Skips JSON white space after p. */
static const char *skip_ws(const char *p, const char *end)
{
    while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
        p++;
    return p;
}

int tg_openai_chunk_has_usage(const char *data, size_t len)
{
    const char *end = data + len, *p = find(data, len, "\"usage\"");
    while (p) {
        const char *q = skip_ws(p + 7, end);
        if (q < end && *q == ':') {
            q = skip_ws(q + 1, end);
            if (q < end && *q == '{') return 1;
        }
        p = find(p + 7, (size_t)(end - (p + 7)), "\"usage\"");
    }
    return 0;
}

int tg_openai_chunk_has_content(const char *data, size_t len)
{
    const char *end = data + len, *p = find(data, len, "\"content\"");
    while (p) {
        const char *q = skip_ws(p + 9, end);
        if (q < end && *q == ':') {
            q = skip_ws(q + 1, end);
            if (q + 1 < end && *q == '"' && q[1] != '"') return 1;
        }
        p = find(p + 9, (size_t)(end - (p + 9)), "\"content\"");
    }
    return 0;
}

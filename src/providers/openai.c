/* openai.c - usage extraction and token estimates for OpenAI-compatible
 * upstreams. The streaming checks look at raw bytes first so the common
 * chunk (text only) is forwarded without a JSON parse. */
#include "providers/openai.h"

#include <string.h>

static int64_t num(const cJSON *obj, const char *name)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9e15) return 0;
    return (int64_t)v->valuedouble;
}

int tg_openai_usage(const cJSON *obj, tg_usage_event_t *ev)
{
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(obj, "usage");
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

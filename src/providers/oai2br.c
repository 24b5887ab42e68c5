/* oai2br.c - OpenAI chat completions and embeddings on Bedrock: requests
 * into Converse / Titan / Cohere bodies, answers and stream events back into
 * OpenAI's shapes.
 *
 * Bodies are cJSON trees built from copies of the caller's JSON, which is
 * never changed, and printed once; every put()/push() takes its value even
 * when it fails, so one cleanup at the end of a function is enough. The
 * OpenAI fields Converse has no place for are refused by name when they ask
 * for something (n > 1, logprobs, audio, ...) and accepted when they hold
 * their no-op value (n 1, logprobs false, logit_bias {}), because SDKs and
 * frameworks send those by default. Fields that only label or route the
 * request (user, metadata, store, seed, service_tier, parallel_tool_calls,
 * unknown extras) are ignored, as LiteLLM does: seed and
 * parallel_tool_calls: false cannot be honoured, but refusing them would
 * break stock clients for a promise no Bedrock model makes.
 *
 * Converse wants user and assistant turns alternating: consecutive messages
 * of one role are merged into one turn, tool messages become toolResult
 * blocks of a user turn, and system / developer messages are lifted, in
 * order, into the system blocks wherever they stand. */
#include "providers/oai2br.h"

#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "providers/bedrock.h"

#define TITAN_MAX_INPUTS  256 /* one call each, made in turn: a bound on the wait and memory */
#define COHERE_MAX_INPUTS 96  /* Cohere embed v3 takes at most 96 texts a call */

/* ---- small helpers --------------------------------------------------------- */

/* obj[key], with null read as absent. */
static const cJSON *get(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static const char *get_str(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

/* obj[key] as a count, 0 when absent or not one. */
static int64_t get_count(const cJSON *obj, const char *key)
{
    int64_t v = 0;
    return tg_aws_json_count(obj, key, &v) == 1 ? v : 0;
}

/* Adds v under key to the object parent (key NULL: to the array parent)
 * and returns it, or NULL. v is always taken: deleted when *rc is already
 * set or the add fails (*rc = TG_ENOMEM). So a tree is built as a run of
 * add() calls with one check at the end; a NULL v (cJSON out of memory) or
 * parent (an earlier add failed) is a failure too. */
static cJSON *add(cJSON *parent, const char *key, cJSON *v, int *rc)
{
    if (!*rc && v && parent &&
        (key ? cJSON_AddItemToObject(parent, key, v) : cJSON_AddItemToArray(parent, v)))
        return v;
    cJSON_Delete(v);
    if (!*rc) *rc = TG_ENOMEM;
    return NULL;
}

static cJSON *str(const char *s)
{
    return cJSON_CreateString(s);
}

static cJSON *num(double n)
{
    return cJSON_CreateNumber(n);
}

static int is(const char *s, const char *t)
{
    return s && strcmp(s, t) == 0;
}

static int vfail(char *err, size_t cap, const char *fmt, va_list ap)
{
    if (err && cap) vsnprintf(err, cap, fmt, ap);
    return TG_EINVAL;
}

static int fail(char *err, size_t cap, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(err, cap, fmt, ap);
    va_end(ap);
    return TG_EINVAL;
}

/* *out / *out_len from a tree, which is deleted. */
static int print(cJSON *j, char **out, size_t *out_len)
{
    char *p = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    if (!p) return TG_ENOMEM;
    *out = p;
    *out_len = strlen(p);
    return 0;
}

/* Strict base64: length a multiple of 4, padding only at the end. */
static int is_base64(const char *s, size_t n)
{
    if (n == 0 || n % 4) return 0;
    size_t pad = (s[n - 1] == '=') + (s[n - 2] == '=');
    for (size_t i = 0; i + pad < n; i++) {
        char ch = s[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return 0;
    }
    return 1;
}

/* OpenAI's finish_reason for a Converse stopReason. The malformed_* reasons
 * and any reason Bedrock adds later read as "stop": the answer ended, and
 * OpenAI has no closer word for why. */
static const char *finish_reason(const char *stop)
{
    if (is(stop, "max_tokens") || is(stop, "model_context_window_exceeded")) return "length";
    if (is(stop, "tool_use")) return "tool_calls";
    if (is(stop, "guardrail_intervened") || is(stop, "content_filtered")) return "content_filter";
    return "stop";
}

/* OpenAI's usage under key in parent: Bedrock's inputTokens exclude the
 * cached tokens, OpenAI's prompt_tokens include them. */
static void add_usage(cJSON *parent, int64_t in, int64_t out, int64_t cache_read,
                      int64_t cache_write, int *rc)
{
    int64_t prompt = in + cache_read + cache_write;
    cJSON *u = add(parent, "usage", cJSON_CreateObject(), rc);
    add(u, "prompt_tokens", num((double)prompt), rc);
    add(u, "completion_tokens", num((double)out), rc);
    add(u, "total_tokens", num((double)(prompt + out)), rc);
    cJSON *d = add(u, "prompt_tokens_details", cJSON_CreateObject(), rc);
    add(d, "cached_tokens", num((double)cache_read), rc);
}

/* {"index"?, "id"?, "type"?, "function": {"name"?, "arguments"}}: an
 * OpenAI tool call or a streamed piece of one (index < 0: none; id NULL:
 * no id or type; name NULL: none). */
static cJSON *tool_call(int index, const char *id, const char *name, const char *args)
{
    int rc = 0;
    cJSON *tc = cJSON_CreateObject();
    if (index >= 0) add(tc, "index", num(index), &rc);
    if (id) add(tc, "id", str(id), &rc);
    if (id) add(tc, "type", str("function"), &rc);
    cJSON *fn = add(tc, "function", cJSON_CreateObject(), &rc);
    if (name) add(fn, "name", str(name), &rc);
    add(fn, "arguments", str(args), &rc);
    if (rc) {
        cJSON_Delete(tc);
        return NULL;
    }
    return tc;
}

/* ---- chat request ------------------------------------------------------------ */

typedef struct {
    char *err;
    size_t errcap;
    cJSON *system;   /* Converse system blocks */
    cJSON *turns;    /* Converse messages */
    cJSON *last;     /* the last turn, NULL before the first */
    int tool_blocks; /* the history holds toolUse / toolResult blocks */
} chat_t;

static int bad(chat_t *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int bad(chat_t *c, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vfail(c->err, c->errcap, fmt, ap);
    va_end(ap);
    return TG_EINVAL;
}

/* Fields that ask for something no Converse call gives, refused when set to
 * anything but their no-op value. */
enum { IF_SET, IF_TRUE, IF_NONZERO, IF_NONEMPTY };
static const struct {
    const char *key;
    int when;
    const char *hint;
} refused[] = {
    {"audio", IF_SET, ""},
    {"prediction", IF_SET, ""},
    {"functions", IF_SET, " (use tools)"},
    {"function_call", IF_SET, " (use tool_choice)"},
    {"web_search_options", IF_SET, ""},
    {"reasoning_effort", IF_SET, ""},
    {"logprobs", IF_TRUE, ""},
    {"top_logprobs", IF_NONZERO, ""},
    {"frequency_penalty", IF_NONZERO, ""},
    {"presence_penalty", IF_NONZERO, ""},
    {"logit_bias", IF_NONEMPTY, ""},
};

static int refuse_fields(chat_t *c, const cJSON *root)
{
    for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
        const cJSON *v = get(root, refused[i].key);
        int on = 0;
        if (!v) continue;
        switch (refused[i].when) {
        case IF_SET:
            on = 1;
            break;
        case IF_TRUE:
            on = !cJSON_IsFalse(v);
            break;
        case IF_NONZERO:
            on = !cJSON_IsNumber(v) || v->valuedouble != 0;
            break;
        case IF_NONEMPTY:
            on = !(cJSON_IsObject(v) || cJSON_IsArray(v)) || v->child;
            break;
        }
        if (on)
            return bad(c, "%s is not supported for Bedrock models%s", refused[i].key,
                       refused[i].hint);
    }
    const cJSON *n = get(root, "n"), *m;
    if (n && !(cJSON_IsNumber(n) && n->valuedouble == 1))
        return bad(c, "n must be 1 for Bedrock models (one choice per request)");
    cJSON_ArrayForEach(m, get(root, "modalities"))
    {
        if (!is(cJSON_GetStringValue(m), "text"))
            return bad(c, "modalities other than 'text' are not supported for Bedrock models");
    }
    const cJSON *rf = get(root, "response_format");
    const char *rft = get_str(rf, "type");
    if (rf && !is(rft, "text"))
        return bad(c,
                   "response_format type '%.32s' is not supported for Bedrock models yet (ask "
                   "for JSON in the prompt, or define a tool with the schema)",
                   rft ? rft : "?");
    return 0;
}

static int text_block(cJSON *blocks, const char *s)
{
    int rc = 0;
    add(add(blocks, NULL, cJSON_CreateObject(), &rc), "text", str(s), &rc);
    return rc;
}

/* A data: URL as a Converse image block: Bedrock takes the bytes inline
 * (base64 in the JSON), never a link it would have to fetch. */
static int image_block(chat_t *c, const cJSON *part, int i, int k, cJSON *blocks)
{
    static const struct {
        const char *media, *format;
    } formats[] = {{"image/png", "png"},
                   {"image/jpeg", "jpeg"},
                   {"image/jpg", "jpeg"},
                   {"image/gif", "gif"},
                   {"image/webp", "webp"}};
    const cJSON *iu = get(part, "image_url");
    const char *url = cJSON_IsString(iu) ? iu->valuestring : get_str(iu, "url");
    if (!url) return bad(c, "messages[%d].content[%d].image_url.url is required", i, k);
    if (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0)
        return bad(c,
                   "messages[%d].content[%d].image_url.url: Bedrock needs the image bytes, not a "
                   "link; send a data: URL (data:image/png;base64,...)",
                   i, k);
    /* data:MEDIA[;param]*;base64,DATA */
    const char *media = url + 5, *comma = strchr(url, ','), *semi = strchr(url, ';');
    if (strncmp(url, "data:", 5) != 0 || !comma || !semi || semi > comma || comma - media < 7 ||
        strncmp(comma - 7, ";base64", 7) != 0)
        return bad(c, "messages[%d].content[%d].image_url.url must be a base64 data: URL", i, k);
    const char *format = NULL;
    size_t mlen = (size_t)(semi - media);
    for (size_t f = 0; !format && f < sizeof(formats) / sizeof(formats[0]); f++) {
        if (strlen(formats[f].media) == mlen && strncasecmp(media, formats[f].media, mlen) == 0)
            format = formats[f].format;
    }
    if (!format)
        return bad(c,
                   "messages[%d].content[%d].image_url: image type '%.*s' is not supported "
                   "(png, jpeg, gif, webp)",
                   i, k, (int)(mlen > 64 ? 64 : mlen), media);
    if (!is_base64(comma + 1, strlen(comma + 1)))
        return bad(c, "messages[%d].content[%d].image_url.url is not valid base64", i, k);
    int rc = 0;
    cJSON *b = add(blocks, NULL, cJSON_CreateObject(), &rc);
    cJSON *img = add(b, "image", cJSON_CreateObject(), &rc);
    add(img, "format", str(format), &rc);
    cJSON *src = add(img, "source", cJSON_CreateObject(), &rc);
    add(src, "bytes", str(comma + 1), &rc);
    return rc;
}

enum {
    PART_IMAGES = 1,     /* image_url parts allowed (user) */
    PART_REFUSAL = 2,    /* refusal parts read as text (assistant) */
    PART_KEEP_EMPTY = 4, /* empty text kept (a tool's empty answer is still its answer) */
};

/* content (a string or an array of parts) as Converse blocks appended to
 * blocks. Empty text is left out unless PART_KEEP_EMPTY: Converse refuses
 * blank text blocks, and SDKs send content "" beside tool_calls. */
static int content_blocks(chat_t *c, const cJSON *content, int i, int flags, cJSON *blocks)
{
    int keep = flags & PART_KEEP_EMPTY, k = 0, rc = 0;
    if (!content) return 0;
    if (cJSON_IsString(content))
        return keep || content->valuestring[0] ? text_block(blocks, content->valuestring) : 0;
    if (!cJSON_IsArray(content))
        return bad(c, "messages[%d].content must be a string or an array of parts", i);
    const cJSON *p;
    cJSON_ArrayForEach(p, content)
    {
        const char *type = get_str(p, "type");
        if (is(type, "text") || ((flags & PART_REFUSAL) && is(type, "refusal"))) {
            const char *t =
                get_str(p, type); /* {"type":"text","text"}, {"type":"refusal","refusal"} */
            if (!t) return bad(c, "messages[%d].content[%d].%s must be a string", i, k, type);
            if (keep || t[0]) rc = text_block(blocks, t);
        } else if ((flags & PART_IMAGES) && is(type, "image_url")) {
            rc = image_block(c, p, i, k, blocks);
        } else if (!type) {
            return bad(c, "messages[%d].content[%d].type is required", i, k);
        } else {
            return bad(c,
                       "messages[%d].content[%d].type '%.32s' is not supported for Bedrock models",
                       i, k, type);
        }
        if (rc) return rc;
        k++;
    }
    return 0;
}

/* Adds blocks (taken) as a turn of role, or to the last turn when that has
 * the same role: Converse wants user and assistant turns alternating. */
static int add_turn(chat_t *c, const char *role, cJSON *blocks)
{
    int rc = 0;
    if (c->last && is(get_str(c->last, "role"), role)) {
        cJSON *content = cJSON_GetObjectItemCaseSensitive(c->last, "content");
        while (blocks->child)
            cJSON_AddItemToArray(content, cJSON_DetachItemViaPointer(blocks, blocks->child));
        cJSON_Delete(blocks);
        return 0;
    }
    cJSON *t = add(c->turns, NULL, cJSON_CreateObject(), &rc);
    add(t, "role", str(role), &rc);
    add(t, "content", blocks, &rc);
    if (!rc) c->last = t;
    return rc;
}

/* tool_calls[k] as {"toolUse": {toolUseId, name, input}}. */
static int tool_use_block(chat_t *c, const cJSON *tc, int i, int k, cJSON *blocks)
{
    const char *type = get_str(tc, "type"), *id = get_str(tc, "id");
    const cJSON *fn = get(tc, "function"), *args = get(fn, "arguments");
    const char *name = get_str(fn, "name");
    if (type && !is(type, "function"))
        return bad(c,
                   "messages[%d].tool_calls[%d].type '%.32s' is not supported for Bedrock models",
                   i, k, type);
    if (!id) return bad(c, "messages[%d].tool_calls[%d].id is required", i, k);
    if (!name) return bad(c, "messages[%d].tool_calls[%d].function.name is required", i, k);
    cJSON *input;
    if (cJSON_IsString(args) && args->valuestring[0]) {
        input = tg_aws_json_parse(args->valuestring, strlen(args->valuestring));
        if (!input)
            return bad(c, "messages[%d].tool_calls[%d].function.arguments is not valid JSON", i, k);
    } else if (cJSON_IsObject(args)) { /* some clients send the object itself */
        input = cJSON_Duplicate(args, 1);
    } else if (!args || cJSON_IsString(args)) { /* "" or none: a tool without parameters */
        input = cJSON_CreateObject();
    } else {
        return bad(c, "messages[%d].tool_calls[%d].function.arguments must be a JSON string", i, k);
    }
    int rc = 0;
    cJSON *tu =
        add(add(blocks, NULL, cJSON_CreateObject(), &rc), "toolUse", cJSON_CreateObject(), &rc);
    add(tu, "toolUseId", str(id), &rc);
    add(tu, "name", str(name), &rc);
    add(tu, "input", input, &rc);
    c->tool_blocks = 1;
    return rc;
}

/* A tool message as {"toolResult": {toolUseId, content: [{text}...],
 * status: "success"}}: OpenAI has no way to say a tool failed. */
static int tool_result_block(chat_t *c, const cJSON *m, int i, cJSON *blocks)
{
    const char *id = get_str(m, "tool_call_id");
    if (!id) return bad(c, "messages[%d].tool_call_id is required", i);
    int rc = 0;
    cJSON *tr =
        add(add(blocks, NULL, cJSON_CreateObject(), &rc), "toolResult", cJSON_CreateObject(), &rc);
    add(tr, "toolUseId", str(id), &rc);
    cJSON *content = add(tr, "content", cJSON_CreateArray(), &rc);
    add(tr, "status", str("success"), &rc);
    if (!rc) rc = content_blocks(c, get(m, "content"), i, PART_KEEP_EMPTY, content);
    c->tool_blocks = 1;
    return rc;
}

static int one_message(chat_t *c, const cJSON *m, int i)
{
    if (!cJSON_IsObject(m)) return bad(c, "messages[%d] must be an object", i);
    const char *role = get_str(m, "role");
    const cJSON *content = get(m, "content");
    if (!role) return bad(c, "messages[%d].role is required", i);
    if (is(role, "system") || is(role, "developer"))
        return content_blocks(c, content, i, 0, c->system);
    if (is(role, "function"))
        return bad(c, "messages[%d].role 'function' is not supported (use tools and tool messages)",
                   i);
    if (!is(role, "user") && !is(role, "assistant") && !is(role, "tool"))
        return bad(c,
                   "messages[%d].role '%.32s' is not one of system, developer, user, assistant, "
                   "tool",
                   i, role);
    int assistant = is(role, "assistant");
    if (assistant && get(m, "function_call"))
        return bad(c, "messages[%d].function_call is not supported (use tool_calls)", i);
    if (assistant && get(m, "audio"))
        return bad(c, "messages[%d].audio is not supported for Bedrock models", i);
    const cJSON *tcs = assistant ? get(m, "tool_calls") : NULL, *tc;
    if (tcs && !cJSON_IsArray(tcs)) return bad(c, "messages[%d].tool_calls must be an array", i);
    cJSON *blocks = cJSON_CreateArray();
    if (!blocks) return TG_ENOMEM;
    int rc = 0, k = 0;
    if (is(role, "tool")) {
        rc = tool_result_block(c, m, i, blocks);
    } else {
        rc = content_blocks(c, content, i, assistant ? PART_REFUSAL : PART_IMAGES, blocks);
        cJSON_ArrayForEach(tc, (rc ? NULL : tcs))
        {
            if ((rc = tool_use_block(c, tc, i, k++, blocks))) break;
        }
        if (!rc && !blocks->child)
            rc = bad(c, "messages[%d] has no content (Bedrock refuses empty turns)", i);
    }
    if (rc) {
        cJSON_Delete(blocks);
        return rc;
    }
    return add_turn(c, assistant ? "assistant" : "user", blocks);
}

static int messages(chat_t *c, const cJSON *root)
{
    const cJSON *ms = get(root, "messages"), *m;
    if (!cJSON_IsArray(ms)) return bad(c, "messages is required (an array)");
    int i = 0, rc;
    cJSON_ArrayForEach(m, ms)
    {
        if ((rc = one_message(c, m, i++))) return rc;
    }
    if (!c->last) return bad(c, "messages has no user or assistant message");
    return 0;
}

/* inferenceConfig {maxTokens, temperature, topP, stopSequences} added to
 * body when the request sets any of them. */
static int inference_config(chat_t *c, const cJSON *root, cJSON *body, int64_t *max_output)
{
    const char *mk = get(root, "max_completion_tokens") ? "max_completion_tokens" : "max_tokens";
    const cJSON *max = get(root, mk), *temp = get(root, "temperature"), *top_p = get(root, "top_p"),
                *stop = get(root, "stop"), *s;
    if (max && !(cJSON_IsNumber(max) && max->valuedouble >= 1 && max->valuedouble <= INT_MAX &&
                 max->valuedouble == (double)(int64_t)max->valuedouble))
        return bad(c, "%s must be a positive integer", mk);
    if (temp && !cJSON_IsNumber(temp)) return bad(c, "temperature must be a number");
    if (top_p && !cJSON_IsNumber(top_p)) return bad(c, "top_p must be a number");
    if (stop && !cJSON_IsString(stop) && !cJSON_IsArray(stop))
        return bad(c, "stop must be a string or an array of strings");
    cJSON_ArrayForEach(s, (cJSON_IsArray(stop) ? stop : NULL))
    {
        if (!cJSON_IsString(s)) return bad(c, "stop must be a string or an array of strings");
    }
    int has_stop = cJSON_IsString(stop) || (stop && stop->child), rc = 0;
    if (!max && !temp && !top_p && !has_stop) return 0;
    cJSON *ic = add(body, "inferenceConfig", cJSON_CreateObject(), &rc);
    if (max) add(ic, "maxTokens", num(max->valuedouble), &rc);
    if (temp) add(ic, "temperature", num(temp->valuedouble), &rc);
    if (top_p) add(ic, "topP", num(top_p->valuedouble), &rc);
    if (cJSON_IsString(stop))
        add(add(ic, "stopSequences", cJSON_CreateArray(), &rc), NULL, str(stop->valuestring), &rc);
    else if (has_stop)
        add(ic, "stopSequences", cJSON_Duplicate(stop, 1), &rc);
    if (!rc && max) *max_output = (int64_t)max->valuedouble;
    return rc;
}

/* tools[k] as {"toolSpec": {name, description?, inputSchema: {json}}}. */
static int tool_spec(chat_t *c, const cJSON *t, int k, cJSON *specs)
{
    const char *type = get_str(t, "type");
    const cJSON *fn = get(t, "function"), *params = get(fn, "parameters");
    const char *name = get_str(fn, "name"), *desc = get_str(fn, "description");
    if (!is(type, "function"))
        return bad(c, "tools[%d].type '%.32s' is not supported for Bedrock models (only function)",
                   k, type ? type : "?");
    if (!name) return bad(c, "tools[%d].function.name is required", k);
    if (params && !cJSON_IsObject(params))
        return bad(c, "tools[%d].function.parameters must be a JSON Schema object", k);
    int rc = 0;
    cJSON *spec =
        add(add(specs, NULL, cJSON_CreateObject(), &rc), "toolSpec", cJSON_CreateObject(), &rc);
    add(spec, "name", str(name), &rc);
    if (desc && desc[0]) add(spec, "description", str(desc), &rc); /* Converse: min length 1 */
    cJSON *schema = add(spec, "inputSchema", cJSON_CreateObject(), &rc);
    /* Converse requires a schema; OpenAI takes none as "no parameters" */
    add(schema, "json",
        params ? cJSON_Duplicate(params, 1)
               : cJSON_Parse("{\"type\":\"object\",\"properties\":{}}"),
        &rc);
    return rc;
}

/* tools / tool_choice as toolConfig, added to body when there is one.
 * tool_choice "none" has no Converse equivalent: the tools are left out,
 * unless the history holds tool blocks, which Converse refuses without a
 * toolConfig; then the tools go with no toolChoice, and the model may call
 * one after all. */
static int tool_config(chat_t *c, const cJSON *root, cJSON *body)
{
    const cJSON *tools = get(root, "tools"), *choice = get(root, "tool_choice"), *t;
    const char *mode = cJSON_GetStringValue(choice), *fname = NULL;
    if (tools && !cJSON_IsArray(tools)) return bad(c, "tools must be an array");
    if (choice && !mode) {
        const char *type = get_str(choice, "type");
        if (!is(type, "function"))
            return bad(c, "tool_choice type '%.32s' is not supported for Bedrock models",
                       type ? type : "?");
        if (!(fname = get_str(get(choice, "function"), "name")))
            return bad(c, "tool_choice.function.name is required");
    } else if (mode && !is(mode, "none") && !is(mode, "auto") && !is(mode, "required")) {
        return bad(c, "tool_choice '%.32s' is not one of none, auto, required", mode);
    }
    int have = tools && tools->child, found = 0, rc = 0, k = 0;
    cJSON_ArrayForEach(t, tools)
    {
        found |= fname && is(get_str(get(t, "function"), "name"), fname);
    }
    if (choice && !is(mode, "none") && !have) return bad(c, "tool_choice needs tools");
    if (fname && !found) return bad(c, "tool_choice.function.name '%.64s' is not in tools", fname);
    if (!have || (is(mode, "none") && !c->tool_blocks)) return 0;

    cJSON *tc = add(body, "toolConfig", cJSON_CreateObject(), &rc);
    cJSON *specs = add(tc, "tools", cJSON_CreateArray(), &rc);
    cJSON_ArrayForEach(t, (rc ? NULL : tools))
    {
        if ((rc = tool_spec(c, t, k++, specs))) return rc;
    }
    if (is(mode, "auto")) {
        add(add(tc, "toolChoice", cJSON_CreateObject(), &rc), "auto", cJSON_CreateObject(), &rc);
    } else if (is(mode, "required")) {
        add(add(tc, "toolChoice", cJSON_CreateObject(), &rc), "any", cJSON_CreateObject(), &rc);
    } else if (fname) {
        cJSON *tool = add(add(tc, "toolChoice", cJSON_CreateObject(), &rc), "tool",
                          cJSON_CreateObject(), &rc);
        add(tool, "name", str(fname), &rc);
    }
    return rc;
}

int tg_oai2br_chat_request(const cJSON *root, char **out, size_t *out_len, int *stream,
                           int *include_usage, int64_t *max_output, char *err, size_t errcap)
{
    *out = NULL;
    *out_len = 0;
    *stream = *include_usage = 0;
    *max_output = 0;
    if (err && errcap) err[0] = '\0';
    if (!cJSON_IsObject(root)) return fail(err, errcap, "the body must be a JSON object");
    chat_t c = {.err = err, .errcap = errcap};
    int rc = 0;
    cJSON *body = cJSON_CreateObject();
    /* built in Converse's order: messages, system, inferenceConfig, toolConfig */
    c.turns = add(body, "messages", cJSON_CreateArray(), &rc);
    c.system = cJSON_CreateArray();
    if (!rc && !c.system) rc = TG_ENOMEM;
    if (!rc) rc = refuse_fields(&c, root);
    if (!rc) rc = messages(&c, root);
    if (!rc && c.system->child) {
        add(body, "system", c.system, &rc);
        c.system = NULL;
    }
    if (!rc) rc = inference_config(&c, root, body, max_output);
    if (!rc) rc = tool_config(&c, root, body);
    cJSON_Delete(c.system);
    if (rc) {
        cJSON_Delete(body);
        *max_output = 0;
        return rc;
    }
    *stream = cJSON_IsTrue(get(root, "stream"));
    *include_usage = *stream && cJSON_IsTrue(get(get(root, "stream_options"), "include_usage"));
    rc = print(body, out, out_len);
    if (rc) *stream = *include_usage = 0, *max_output = 0;
    return rc;
}

/* ---- chat answers ------------------------------------------------------------ */

/* {"id", "object", "created", "model"} opening an answer or a chunk. */
static cJSON *answer_head(const char *id, const char *object, int64_t created, const char *model,
                          int *rc)
{
    cJSON *r = cJSON_CreateObject();
    add(r, "id", str(id ? id : ""), rc);
    add(r, "object", str(object), rc);
    add(r, "created", num((double)created), rc);
    add(r, "model", str(model ? model : ""), rc);
    return r;
}

/* The toolUse blocks of content as OpenAI tool_calls under message. */
static void add_tool_calls(cJSON *message, const cJSON *content, int *rc)
{
    cJSON *calls = NULL;
    const cJSON *b;
    cJSON_ArrayForEach(b, content)
    {
        const cJSON *tu = get(b, "toolUse"), *input = get(tu, "input");
        if (!tu || *rc) continue;
        const char *id = get_str(tu, "toolUseId"), *name = get_str(tu, "name");
        char *args = input ? cJSON_PrintUnformatted(input) : NULL;
        if (!calls) calls = add(message, "tool_calls", cJSON_CreateArray(), rc);
        if (input && !args) *rc = TG_ENOMEM;
        add(calls, NULL, tool_call(-1, id ? id : "", name ? name : "", args ? args : "{}"), rc);
        free(args);
    }
}

int tg_oai2br_chat_response(const char *body, size_t len, const char *id, int64_t created,
                            const char *model, char **out, size_t *out_len, int64_t *in,
                            int64_t *outp, int64_t *cache_read, int64_t *cache_write, char *err,
                            size_t errcap)
{
    *out = NULL;
    *out_len = 0;
    *in = *outp = *cache_read = *cache_write = 0;
    if (err && errcap) err[0] = '\0';
    cJSON *j = tg_aws_json_parse(body, len);
    const cJSON *content = get(get(get(j, "output"), "message"), "content"), *b;
    if (!cJSON_IsArray(content)) {
        cJSON_Delete(j);
        fail(err, errcap, "the Converse answer has no output.message.content");
        return TG_EUPSTREAM;
    }
    const cJSON *usage = get(j, "usage");
    *in = get_count(usage, "inputTokens");
    *outp = get_count(usage, "outputTokens");
    *cache_read = get_count(usage, "cacheReadInputTokens");
    *cache_write = get_count(usage, "cacheWriteInputTokens");

    /* text blocks joined as they are (the model put its own spaces in) */
    tg_buf_t text;
    tg_buf_init(&text, 0);
    int rc = 0, tools = 0;
    cJSON_ArrayForEach(b, content)
    {
        const char *t = get_str(b, "text");
        if (t && !rc) rc = tg_buf_appends(&text, t);
        tools |= get(b, "toolUse") != NULL;
    }
    /* OpenAI's order: id, object, created, model, choices, usage, system_fingerprint */
    cJSON *r = answer_head(id, "chat.completion", created, model, &rc);
    cJSON *ch = add(add(r, "choices", cJSON_CreateArray(), &rc), NULL, cJSON_CreateObject(), &rc);
    add(ch, "index", num(0), &rc);
    cJSON *m = add(ch, "message", cJSON_CreateObject(), &rc);
    add(m, "role", str("assistant"), &rc);
    add(m, "content", text.len || !tools ? str(text.data ? text.data : "") : cJSON_CreateNull(),
        &rc);
    add(m, "refusal", cJSON_CreateNull(), &rc);
    add_tool_calls(m, content, &rc);
    add(ch, "logprobs", cJSON_CreateNull(), &rc);
    add(ch, "finish_reason", str(finish_reason(get_str(j, "stopReason"))), &rc);
    add_usage(r, *in, *outp, *cache_read, *cache_write, &rc);
    add(r, "system_fingerprint", cJSON_CreateNull(), &rc);
    cJSON_Delete(j);
    tg_buf_free(&text);
    if (rc) {
        cJSON_Delete(r);
        return rc;
    }
    return print(r, out, out_len);
}

/* ---- streams ----------------------------------------------------------------- */

void tg_oai2br_stream_init(tg_oai2br_stream_t *s, const char *id, int64_t created,
                           const char *model, int include_usage)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->id, sizeof(s->id), "%s", id ? id : "");
    snprintf(s->model, sizeof(s->model), "%s", model ? model : "");
    s->created = created;
    s->include_usage = include_usage;
}

/* One chat.completion.chunk appended to out as an SSE event: choices
 * [{index 0, delta (taken), logprobs null, finish_reason}], or, for a NULL
 * delta, the usage chunk with choices []. */
static int emit(tg_oai2br_stream_t *s, cJSON *delta, const char *finish, tg_buf_t *out)
{
    int rc = 0;
    cJSON *r = answer_head(s->id, "chat.completion.chunk", s->created, s->model, &rc);
    add(r, "system_fingerprint", cJSON_CreateNull(), &rc);
    cJSON *choices = add(r, "choices", cJSON_CreateArray(), &rc);
    if (delta) {
        cJSON *ch = add(choices, NULL, cJSON_CreateObject(), &rc);
        add(ch, "index", num(0), &rc);
        add(ch, "delta", delta, &rc);
        add(ch, "logprobs", cJSON_CreateNull(), &rc);
        add(ch, "finish_reason", finish ? str(finish) : cJSON_CreateNull(), &rc);
        /* with include_usage OpenAI sends "usage": null on every other chunk */
        if (s->include_usage) add(r, "usage", cJSON_CreateNull(), &rc);
    } else {
        add_usage(r, s->in, s->out, s->cache_read, s->cache_write, &rc);
    }
    char *p = rc ? NULL : cJSON_PrintUnformatted(r);
    cJSON_Delete(r);
    if (!rc && !p) rc = TG_ENOMEM;
    if (!rc) rc = tg_buf_printf(out, "data: %s\n\n", p);
    free(p);
    return rc;
}

/* The first chunk, {"role": "assistant", "content": ""}, once. */
static int start(tg_oai2br_stream_t *s, tg_buf_t *out)
{
    if (s->started) return 0;
    int rc = 0;
    cJSON *d = cJSON_CreateObject();
    add(d, "role", str("assistant"), &rc);
    add(d, "content", str(""), &rc);
    add(d, "refusal", cJSON_CreateNull(), &rc);
    if (!d || rc) {
        cJSON_Delete(d);
        return TG_ENOMEM;
    }
    if (!(rc = emit(s, d, NULL, out))) s->started = 1;
    return rc;
}

/* A delta chunk {key: v}, or {"tool_calls": [v]} for key NULL; takes v. */
static int emit_delta(tg_oai2br_stream_t *s, const char *key, cJSON *v, tg_buf_t *out)
{
    int rc = start(s, out);
    cJSON *d = cJSON_CreateObject();
    if (key) {
        add(d, key, v, &rc);
    } else {
        add(add(d, "tool_calls", cJSON_CreateArray(), &rc), NULL, v, &rc);
    }
    if (rc || !d) {
        cJSON_Delete(d);
        return rc ? rc : TG_ENOMEM;
    }
    return emit(s, d, NULL, out);
}

static int on_event(tg_oai2br_stream_t *s, const char *type, const cJSON *j, tg_buf_t *out)
{
    int rc;
    if (is(type, "messageStart")) return start(s, out);
    if (is(type, "contentBlockStart")) {
        const cJSON *tu = get(get(j, "start"), "toolUse");
        const char *id = get_str(tu, "toolUseId"), *name = get_str(tu, "name");
        if (!tu) return 0;
        if (!id || !name) return TG_EPROTO;
        if (s->in_tool) s->tool_index++; /* the last one was never stopped */
        rc = emit_delta(s, NULL, tool_call(s->tool_index, id, name, ""), out);
        if (!rc) s->in_tool = 1;
        return rc;
    }
    if (is(type, "contentBlockDelta")) {
        const cJSON *d = get(j, "delta"), *tu = get(d, "toolUse");
        const char *text = get_str(d, "text"), *piece = get_str(tu, "input");
        if (tu && (!piece || !s->in_tool)) return TG_EPROTO;
        if (tu)
            return piece[0] ? emit_delta(s, NULL, tool_call(s->tool_index, NULL, NULL, piece), out)
                            : 0;
        /* reasoning and other deltas OpenAI has no place for are left out */
        return text && text[0] ? emit_delta(s, "content", str(text), out) : 0;
    }
    if (is(type, "contentBlockStop")) {
        if (s->in_tool) s->tool_index++;
        s->in_tool = 0;
        return 0;
    }
    if (is(type, "messageStop")) {
        const char *why = finish_reason(get_str(j, "stopReason"));
        cJSON *d = cJSON_CreateObject();
        rc = start(s, out);
        if (rc || !d) {
            cJSON_Delete(d);
            return rc ? rc : TG_ENOMEM;
        }
        if ((rc = emit(s, d, why, out))) return rc;
        snprintf(s->finish_reason, sizeof(s->finish_reason), "%s", why);
        s->finished = 1;
        return 0;
    }
    /* metadata */
    const cJSON *u = get(j, "usage");
    if (u) {
        s->in = get_count(u, "inputTokens");
        s->out = get_count(u, "outputTokens");
        s->cache_read = get_count(u, "cacheReadInputTokens");
        s->cache_write = get_count(u, "cacheWriteInputTokens");
        s->have_usage = 1;
    }
    return 0;
}

/* Cuts out back to mark: a failed call leaves no half-written events. */
static int rollback(tg_buf_t *out, size_t mark, int rc)
{
    if (rc && out->len > mark) {
        out->len = mark;
        out->data[mark] = '\0';
    }
    return rc;
}

int tg_oai2br_stream_feed(tg_oai2br_stream_t *s, const char *event_type, const char *payload,
                          size_t len, tg_buf_t *out)
{
    static const char *const known[] = {"messageStart",      "contentBlockStart",
                                        "contentBlockDelta", "contentBlockStop",
                                        "messageStop",       "metadata"};
    size_t k = 0, nk = sizeof(known) / sizeof(known[0]);
    while (event_type && k < nk && strcmp(event_type, known[k]) != 0)
        k++;
    if (!event_type || k == nk) return 0; /* exceptions are the caller's (tg_br_stream_event) */
    cJSON *j = tg_aws_json_parse(payload, len);
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return TG_EPROTO;
    }
    /* a failed event changes nothing, so the caller may feed it again */
    tg_oai2br_stream_t saved = *s;
    size_t mark = out->len;
    int rc = on_event(s, event_type, j, out);
    cJSON_Delete(j);
    if (rc) *s = saved;
    return rollback(out, mark, rc);
}

int tg_oai2br_stream_finish(tg_oai2br_stream_t *s, tg_buf_t *out, int done)
{
    size_t mark = out->len;
    int rc = s->include_usage ? emit(s, NULL, NULL, out) : 0;
    if (!rc && done) rc = tg_buf_appends(out, "data: [DONE]\n\n");
    return rollback(out, mark, rc);
}

/* ---- embeddings -------------------------------------------------------------- */

void tg_oai2br_embed_free(char **bodies, size_t n)
{
    for (size_t i = 0; bodies && i < n; i++)
        free(bodies[i]);
    free(bodies);
}

/* One InvokeModel body: Titan {"inputText", "dimensions"?} for text, or
 * Cohere {"texts", "input_type"} for all of input (text NULL). */
static char *embed_body(const cJSON *input, const char *text, int dims)
{
    int rc = 0;
    cJSON *o = cJSON_CreateObject();
    if (text) {
        add(o, "inputText", str(text), &rc);
        if (dims) add(o, "dimensions", num(dims), &rc);
    } else if (cJSON_IsString(input)) {
        add(add(o, "texts", cJSON_CreateArray(), &rc), NULL, str(input->valuestring), &rc);
    } else {
        add(o, "texts", cJSON_Duplicate(input, 1), &rc);
    }
    if (!text) add(o, "input_type", str("search_document"), &rc);
    char *p = rc || !o ? NULL : cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return p;
}

int tg_oai2br_embed_request(const cJSON *root, const char *family, char ***bodies, size_t *ncalls,
                            char *err, size_t errcap)
{
    *bodies = NULL;
    *ncalls = 0;
    if (err && errcap) err[0] = '\0';
    int titan = is(family, "titan"), cohere = is(family, "cohere");
    if (!titan && !cohere)
        return fail(err, errcap, "embeddings are not supported for the model family '%.32s'",
                    family ? family : "");
    if (!cJSON_IsObject(root)) return fail(err, errcap, "the body must be a JSON object");
    const cJSON *input = get(root, "input"), *x;
    const cJSON *dims = get(root, "dimensions"), *enc = get(root, "encoding_format");
    if (!cJSON_IsString(input) && !cJSON_IsArray(input))
        return fail(err, errcap, "input is required (a string or an array of strings)");
    size_t n = 0;
    cJSON_ArrayForEach(x, (cJSON_IsArray(input) ? input : NULL))
    {
        if (!cJSON_IsString(x))
            return fail(err, errcap,
                        "input[%zu]: token ids are not supported for Bedrock models; send text", n);
        if (!x->valuestring[0]) return fail(err, errcap, "input[%zu] is empty", n);
        n++;
    }
    if (cJSON_IsString(input)) n = input->valuestring[0] ? 1 : 0;
    if (n == 0) return fail(err, errcap, "input is empty");
    size_t most = titan ? TITAN_MAX_INPUTS : COHERE_MAX_INPUTS;
    if (n > most) return fail(err, errcap, "input has %zu texts; at most %zu", n, most);
    if (enc && !is(cJSON_GetStringValue(enc), "float") && !is(cJSON_GetStringValue(enc), "base64"))
        return fail(err, errcap, "encoding_format must be 'float' or 'base64'");
    if (dims && cohere)
        return fail(err, errcap, "dimensions is not supported for Cohere embedding models");
    double dv = cJSON_IsNumber(dims) ? dims->valuedouble : 0;
    if (dims && dv != 256 && dv != 512 && dv != 1024)
        return fail(err, errcap, "dimensions must be 256, 512 or 1024 for Titan embeddings");
    int d = (int)dv;

    size_t calls = titan ? n : 1, i = 0;
    char **b = calloc(calls, sizeof(*b));
    if (!b) return TG_ENOMEM;
    if (cohere) {
        i = (b[0] = embed_body(input, NULL, 0)) ? 1 : 0;
    } else {
        for (x = cJSON_IsString(input) ? input : input->child; i < calls; i++, x = x->next) {
            if (!(b[i] = embed_body(NULL, x->valuestring, d))) break;
        }
    }
    if (i < calls) {
        tg_oai2br_embed_free(b, calls);
        return TG_ENOMEM;
    }
    *bodies = b;
    *ncalls = calls;
    return 0;
}

/* A vector as OpenAI's base64: little-endian float32, whatever the host. */
static cJSON *vector_base64(const cJSON *v)
{
    size_t k = (size_t)cJSON_GetArraySize(v), i = 0;
    if (k == 0 || k > INT_MAX / 8) return NULL;
    unsigned char *raw = malloc(k * 4), *b64 = malloc(k * 4 / 3 * 4 + 8);
    cJSON *s = NULL;
    const cJSON *x;
    if (raw && b64) {
        cJSON_ArrayForEach(x, v)
        {
            float f = (float)x->valuedouble;
            uint32_t u;
            memcpy(&u, &f, sizeof(u));
            for (int byte = 0; byte < 4; byte++)
                raw[i * 4 + (size_t)byte] = (unsigned char)(u >> (8 * byte));
            i++;
        }
        EVP_EncodeBlock(b64, raw, (int)(k * 4));
        s = cJSON_CreateString((const char *)b64);
    }
    free(raw);
    free(b64);
    return s;
}

/* {"object": "embedding", "index", "embedding"} for vector v, which must
 * be an array of numbers. */
static int add_vector(cJSON *data, const cJSON *v, int base64, char *err, size_t errcap)
{
    const cJSON *x;
    int ok = cJSON_IsArray(v) && v->child, rc = 0;
    cJSON_ArrayForEach(x, (ok ? v : NULL))
    {
        ok &= cJSON_IsNumber(x);
    }
    if (!ok) {
        fail(err, errcap, "the embedding model answered without a vector of numbers");
        return TG_EUPSTREAM;
    }
    int index = cJSON_GetArraySize(data);
    cJSON *item = add(data, NULL, cJSON_CreateObject(), &rc);
    add(item, "object", str("embedding"), &rc);
    add(item, "index", num(index), &rc);
    add(item, "embedding", base64 ? vector_base64(v) : cJSON_Duplicate(v, 1), &rc);
    return rc;
}

int tg_oai2br_embed_response(const char *family, const char *const *bodies, const size_t *lens,
                             size_t n, const char *model, int64_t prompt_tokens, int base64,
                             char **out, size_t *out_len, char *err, size_t errcap)
{
    *out = NULL;
    *out_len = 0;
    if (err && errcap) err[0] = '\0';
    int titan = is(family, "titan"), rc = 0;
    if (!titan && !is(family, "cohere"))
        return fail(err, errcap, "embeddings are not supported for the model family '%.32s'",
                    family ? family : "");
    cJSON *r = cJSON_CreateObject();
    add(r, "object", str("list"), &rc);
    cJSON *data = add(r, "data", cJSON_CreateArray(), &rc);
    int64_t counted = 0;
    for (size_t i = 0; !rc && i < n; i++) {
        cJSON *j = tg_aws_json_parse(bodies[i], lens[i]);
        const cJSON *e = get(j, "embeddings"), *v;
        if (titan) {
            counted += get_count(j, "inputTextTokenCount");
            rc = add_vector(data, get(j, "embedding"), base64, err, errcap);
        } else {
            if (cJSON_IsObject(e)) e = get(e, "float"); /* the shape with embedding_types */
            if (!cJSON_IsArray(e) || !e->child) {
                fail(err, errcap, "the Cohere answer has no embeddings");
                rc = TG_EUPSTREAM;
            }
            cJSON_ArrayForEach(v, (rc ? NULL : e))
            {
                if ((rc = add_vector(data, v, base64, err, errcap))) break;
            }
        }
        cJSON_Delete(j);
    }
    int64_t p = prompt_tokens < 0 ? counted : prompt_tokens;
    add(r, "model", str(model ? model : ""), &rc);
    cJSON *u = add(r, "usage", cJSON_CreateObject(), &rc);
    add(u, "prompt_tokens", num((double)p), &rc);
    add(u, "total_tokens", num((double)p), &rc);
    if (rc) {
        cJSON_Delete(r);
        return rc;
    }
    return print(r, out, out_len);
}

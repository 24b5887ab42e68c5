/* refapi.c - the reference gateway's API on Bedrock and SageMaker: one
 * upstream call a request, and the answer back in the reference's
 * one-element arrays (seed-study sections 1.3, 2 and 3).
 *
 * Bodies are cJSON trees built from copies of the caller's JSON, which is
 * never changed, and printed once. Where the reference wrote {**parameters,
 * key: value} a key the parameters already hold keeps its place and takes the
 * new value, as in Python. The text path picks the body by the base model's
 * family (tg_br_model_parse sees through inference profiles and ARNs): the
 * text-completion bodies LangChain built for the models that still take them,
 * Converse for every other model.
 *
 * Streams keep three things: the text (bounded), the tool uses ConverseStream
 * assembles from pieces, and the counts the provider reports at the end.
 * SageMaker's bytes are read twice, by tg_sm_stream for counts and errors and
 * by an SSE / JSON Lines splitter of our own for the text, because
 * tg_sm_stream measures text without keeping it. */
#include "providers/refapi.h"

#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "providers/bedrock.h"
#include "providers/sagemaker.h"
#include "providers/sse.h"

#define DEFAULT_IMAGE_SIDE 512
#define DEFAULT_STEPS      50
#define CLAUDE_V2_MAX      1024 /* LangChain's default max_tokens_to_sample */

/* ---- small JSON helpers -------------------------------------------------- */

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

static const cJSON *first(const cJSON *arr)
{
    return cJSON_IsArray(arr) ? cJSON_GetArrayItem(arr, 0) : NULL;
}

/* obj[key] as a count, 0 when absent or not one. */
static int64_t get_count(const cJSON *obj, const char *key)
{
    int64_t v = 0;
    return tg_aws_json_count(obj, key, &v) == 1 ? v : 0;
}

/* obj[key] = v (owned, consumed even on failure), replacing a key already
 * there in its place, as Python's {**a, key: v}. */
static int put(cJSON *obj, const char *key, cJSON *v)
{
    if (!v) return TG_ENOMEM;
    int ok = cJSON_GetObjectItemCaseSensitive(obj, key)
                 ? cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v)
                 : cJSON_AddItemToObject(obj, key, v);
    if (ok) return 0;
    cJSON_Delete(v);
    return TG_ENOMEM;
}

static int put_copy(cJSON *obj, const char *key, const cJSON *v)
{
    return put(obj, key, cJSON_Duplicate(v, 1));
}

/* put() that always takes *v, leaving NULL behind for a single cleanup. */
static int move(cJSON *obj, const char *key, cJSON **v)
{
    cJSON *x = *v;
    *v = NULL;
    return put(obj, key, x);
}

/* A copy of the parameters object, or a new empty one. */
static cJSON *params_copy(const cJSON *params)
{
    return params ? cJSON_Duplicate(params, 1) : cJSON_CreateObject();
}

static int starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* Python's str.isspace() over ASCII. */
static int py_space(unsigned char c)
{
    return c == ' ' || (c >= '\t' && c <= '\r') || (c >= 0x1c && c <= 0x1f);
}

/* Text bytes of a Converse or OpenAI-style message list, for estimates. */
static int64_t content_bytes(const cJSON *content)
{
    if (cJSON_IsString(content)) return (int64_t)strlen(content->valuestring);
    int64_t n = 0;
    const cJSON *b;
    cJSON_ArrayForEach(b, (cJSON_IsArray(content) ? content : NULL))
    {
        const char *t = get_str(b, "text");
        if (t) n += (int64_t)strlen(t);
        n += content_bytes(get(get(b, "toolResult"), "content"));
    }
    return n;
}

static int64_t messages_bytes(const cJSON *messages)
{
    int64_t n = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, (cJSON_IsArray(messages) ? messages : NULL))
    {
        n += content_bytes(get(m, "content"));
    }
    return n;
}

/* ---- building the upstream call ------------------------------------------ */

typedef struct {
    const tg_ref_target_t *t;
    const cJSON *body, *inputs, *params; /* params NULL when absent or null */
    tg_ref_call_t *c;
    char *err;
    size_t errcap;
    char family[32];
    const char *base; /* the base model id, for telling models of a family apart */
} build_t;

static int fail(build_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(build_t *b, const char *fmt, ...)
{
    if (b->err && b->errcap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(b->err, b->errcap, fmt, ap);
        va_end(ap);
    }
    return TG_EINVAL;
}

static int family_is(const build_t *b, const char *f)
{
    return strcmp(b->family, f) == 0;
}

static const char *const converse_keys[] = {"maxTokens", "temperature", "topP", "stopSequences"};

/* Converse's name for a text-completion parameter, NULL when it has none. */
static const char *converse_name(const char *key)
{
    static const struct {
        const char *from, *to;
    } map[] = {
        {"maxTokens", "maxTokens"},
        {"max_tokens", "maxTokens"},
        {"max_tokens_to_sample", "maxTokens"},
        {"temperature", "temperature"},
        {"topP", "topP"},
        {"top_p", "topP"},
        {"stopSequences", "stopSequences"},
        {"stop_sequences", "stopSequences"},
    };
    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        if (strcmp(key, map[i].from) == 0) return map[i].to;
    }
    return NULL;
}

/* Takes parameters.system out of params: a string becomes Converse's
 * [{"text": s}], a list of system blocks is kept as it is. */
static int take_system(build_t *b, cJSON *params, cJSON **system)
{
    *system = NULL;
    cJSON *s = cJSON_DetachItemFromObjectCaseSensitive(params, "system");
    if (!s || cJSON_IsNull(s) || cJSON_IsArray(s)) {
        if (cJSON_IsArray(s)) {
            *system = s;
        } else {
            cJSON_Delete(s);
        }
        return 0;
    }
    if (!cJSON_IsString(s)) {
        cJSON_Delete(s);
        return fail(b, "parameters.system must be a string");
    }
    b->c->input_bytes += (int64_t)strlen(s->valuestring);
    cJSON *block = cJSON_CreateObject(), *list = cJSON_CreateArray();
    if (!block || !list || !cJSON_AddItemToArray(list, block)) {
        cJSON_Delete(block);
        cJSON_Delete(list);
        cJSON_Delete(s);
        return TG_ENOMEM;
    }
    int rc = put(block, "text", s);
    if (rc) {
        cJSON_Delete(list);
        return rc;
    }
    *system = list;
    return 0;
}

/* {"messages", "system", "inferenceConfig", "additionalModelRequestFields",
 * "toolConfig"}: empty parts are left out. Takes every argument. */
static int converse_body(build_t *b, cJSON *messages, cJSON *system, cJSON *inference, cJSON *extra,
                         cJSON **out)
{
    int rc = TG_ENOMEM;
    cJSON *o = cJSON_CreateObject();
    const cJSON *tools = get(b->body, "tool_config");
    if (!o) goto out;
    if ((rc = move(o, "messages", &messages))) goto out;
    if (system && (rc = move(o, "system", &system))) goto out;
    b->c->max_output = get_count(inference, "maxTokens");
    if (inference && inference->child && (rc = move(o, "inferenceConfig", &inference))) goto out;
    if (extra && extra->child && (rc = move(o, "additionalModelRequestFields", &extra))) goto out;
    if (tools && tools->child && (rc = put_copy(o, "toolConfig", tools))) goto out;
    b->c->op = b->t->stream ? TG_BR_CONVERSE_STREAM : TG_BR_CONVERSE;
    b->c->out = TG_REF_OUT_CONVERSE;
    *out = o;
    o = NULL;
out:
    cJSON_Delete(o);
    cJSON_Delete(messages);
    cJSON_Delete(system);
    cJSON_Delete(inference);
    cJSON_Delete(extra);
    return rc;
}

/* messages_api: the caller's messages, parameters as Converse's own. */
static int build_messages(build_t *b, cJSON **out)
{
    if (!cJSON_IsArray(b->inputs)) return fail(b, "inputs must be a list of messages");
    b->c->input_bytes = messages_bytes(b->inputs);
    cJSON *params = params_copy(b->params), *system = NULL;
    if (!params) return TG_ENOMEM;
    int rc = take_system(b, params, &system);
    for (const cJSON *p = params->child; !rc && p; p = p->next) {
        size_t i = 0, n = sizeof(converse_keys) / sizeof(converse_keys[0]);
        while (i < n && strcmp(p->string, converse_keys[i]) != 0)
            i++;
        if (i == n)
            rc = fail(b,
                      "parameters.%.64s is not a Converse inference parameter (use "
                      "additional_model_fields)",
                      p->string);
    }
    const cJSON *amf = get(b->body, "additional_model_fields");
    cJSON *messages = cJSON_Duplicate(b->inputs, 1), *extra = amf ? cJSON_Duplicate(amf, 1) : NULL;
    if (!rc && (!messages || (amf && !extra))) rc = TG_ENOMEM;
    if (rc) {
        cJSON_Delete(params);
        cJSON_Delete(system);
        cJSON_Delete(messages);
        cJSON_Delete(extra);
        return rc;
    }
    return converse_body(b, messages, system, params, extra, out);
}

/* The text path through Converse: one user turn, the model's own parameter
 * names mapped to Converse's and the rest passed as model fields. */
static int text_converse(build_t *b, cJSON **out)
{
    cJSON *params = params_copy(b->params), *system = NULL, *messages = NULL, *inference = NULL,
          *extra = NULL, *turn = NULL, *block = NULL;
    if (!params) return TG_ENOMEM;
    int rc = take_system(b, params, &system);
    if (rc) goto out;
    rc = TG_ENOMEM;
    if (!(inference = cJSON_CreateObject()) || !(extra = cJSON_CreateObject())) goto out;
    for (const cJSON *p = params->child; p; p = p->next) {
        const char *name = converse_name(p->string);
        /* the key is p's own string, which the copy does not share */
        if ((rc = put_copy(name ? inference : extra, name ? name : p->string, p))) goto out;
    }
    const cJSON *amf = get(b->body, "additional_model_fields"), *f;
    cJSON_ArrayForEach(f, amf)
    {
        if ((rc = put_copy(extra, f->string, f))) goto out;
    }
    rc = TG_ENOMEM;
    if (!(messages = cJSON_CreateArray()) || !(turn = cJSON_CreateObject())) goto out;
    if (!cJSON_AddItemToArray(messages, turn)) {
        cJSON_Delete(turn);
        goto out;
    }
    if ((rc = put(turn, "role", cJSON_CreateString("user")))) goto out;
    cJSON *content = cJSON_CreateArray();
    if ((rc = put(turn, "content", content))) goto out;
    rc = TG_ENOMEM;
    if (!(block = cJSON_CreateObject()) || !cJSON_AddItemToArray(content, block)) {
        cJSON_Delete(block);
        goto out;
    }
    if ((rc = put_copy(block, "text", b->inputs))) goto out;
    cJSON_Delete(params);
    return converse_body(b, messages, system, inference, extra, out);
out:
    cJSON_Delete(params);
    cJSON_Delete(system);
    cJSON_Delete(messages);
    cJSON_Delete(inference);
    cJSON_Delete(extra);
    return rc;
}

/* Python's s.replace(from, to) on a tg_buf_t, in place. */
static int replace_all(tg_buf_t *s, const char *from, const char *to)
{
    size_t fl = strlen(from);
    if (!s->data || !strstr(s->data, from)) return 0;
    tg_buf_t r;
    tg_buf_init(&r, 0);
    const char *p = s->data, *q;
    int rc = 0;
    while (!rc && (q = strstr(p, from))) {
        rc = tg_buf_append(&r, p, (size_t)(q - p));
        if (!rc) rc = tg_buf_appends(&r, to);
        p = q + fl;
    }
    if (!rc) rc = tg_buf_appends(&r, p);
    if (rc) {
        tg_buf_free(&r);
        return rc;
    }
    tg_buf_free(s);
    *s = r;
    return 0;
}

/* LangChain's _human_assistant_format, which the reference ran on every
 * Anthropic text prompt: adds the "\n\nHuman: " turn and the closing
 * "\n\nAssistant:" when they are missing, puts a blank line before each
 * Human:/Assistant:, and closes an odd turn. */
static int human_assistant_format(const char *in, tg_buf_t *s)
{
    static const char *const words[] = {"Human:", "Assistant:"};
    const char *h = strstr(in, "Human:"), *a = strstr(in, "Assistant:");
    int rc = 0;
    if (!h || (a && h > a)) rc = tg_buf_appends(s, "\n\nHuman: ");
    if (!rc) rc = tg_buf_appends(s, in);
    if (!rc && !strstr(s->data, "Assistant:")) rc = tg_buf_appends(s, "\n\nAssistant:");
    if (!rc && starts(s->data, "Human:")) {
        tg_buf_t t;
        tg_buf_init(&t, 0);
        rc = tg_buf_appends(&t, "\n\n");
        if (!rc) rc = tg_buf_append(&t, s->data, s->len);
        tg_buf_free(s);
        *s = t;
    }
    for (int w = 0; !rc && w < 2; w++) {
        char nl2[32], nl3[32];
        snprintf(nl2, sizeof(nl2), "\n\n%s", words[w]);
        snprintf(nl3, sizeof(nl3), "\n\n\n%s", words[w]);
        rc = replace_all(s, words[w], nl2);
        for (int i = 0; !rc && i < 2; i++)
            rc = replace_all(s, nl3, nl2);
    }
    if (rc) return rc;
    int count = 0;
    for (const char *p = s->data; *p; p++) {
        if (count % 2 == 0 && starts(p, "\n\nHuman:")) count++;
        if (count % 2 == 1 && starts(p, "\n\nAssistant:")) count++;
    }
    if (count % 2 == 1) rc = tg_buf_appends(s, "\n\nAssistant:");
    return rc;
}

/* {**parameters, key: value}: takes value. */
static int prompt_body(build_t *b, const char *key, cJSON *value, cJSON **out)
{
    cJSON *o = params_copy(b->params);
    if (!o) {
        cJSON_Delete(value);
        return TG_ENOMEM;
    }
    int rc = put(o, key, value);
    if (rc) {
        cJSON_Delete(o);
        return rc;
    }
    *out = o;
    return 0;
}

static int anthropic_text(build_t *b, cJSON **out)
{
    tg_buf_t s;
    tg_buf_init(&s, 0);
    int rc = human_assistant_format(b->inputs->valuestring, &s);
    if (!rc) rc = prompt_body(b, "prompt", cJSON_CreateString(s.data), out);
    tg_buf_free(&s);
    if (!rc && !cJSON_GetObjectItemCaseSensitive(*out, "max_tokens_to_sample"))
        rc = put(*out, "max_tokens_to_sample", cJSON_CreateNumber(CLAUDE_V2_MAX));
    if (rc) return rc;
    b->c->out = TG_REF_OUT_ANTHROPIC_TEXT;
    b->c->max_output = get_count(*out, "max_tokens_to_sample");
    return 0;
}

static int titan_text(build_t *b, cJSON **out)
{
    cJSON *o = cJSON_CreateObject(), *cfg = params_copy(b->params);
    int rc = o ? put_copy(o, "inputText", b->inputs) : TG_ENOMEM;
    if (!rc) {
        rc = move(o, "textGenerationConfig", &cfg);
    } else {
        cJSON_Delete(cfg);
    }
    if (rc) {
        cJSON_Delete(o);
        return rc;
    }
    b->c->out = TG_REF_OUT_TITAN_TEXT;
    b->c->max_output = get_count(get(o, "textGenerationConfig"), "maxTokenCount");
    *out = o;
    return 0;
}

/* Whether the model takes {"prompt"} on InvokeModel. Only the models named
 * do in their families (Mistral Large 2 and Pixtral take messages, Cohere
 * Command R and AI21 Jamba chat bodies), so a newer model of a family goes
 * through Converse instead of failing on a body it does not know. */
static int has_prompt_body(const build_t *b)
{
    static const char *const mistral[] = {"mistral-7b", "mixtral-8x7b", "mistral-large-2402",
                                          "mistral-small-2402"};
    if (family_is(b, "meta")) return 1;
    if (family_is(b, "cohere"))
        return strstr(b->base, "command-text") || strstr(b->base, "command-light-text");
    if (family_is(b, "ai21")) return strstr(b->base, "j2") != NULL;
    for (size_t i = 0; family_is(b, "mistral") && i < sizeof(mistral) / sizeof(mistral[0]); i++) {
        if (strstr(b->base, mistral[i])) return 1;
    }
    return 0;
}

/* Text without messages_api. inputs is a prompt string. */
static int build_text(build_t *b, cJSON **out)
{
    static const struct {
        const char *family, *out_max;
        tg_ref_out_t out;
    } plain[] = {
        {"meta", "max_gen_len", TG_REF_OUT_META},
        {"mistral", "max_tokens", TG_REF_OUT_MISTRAL},
        {"cohere", "max_tokens", TG_REF_OUT_COHERE},
        {"ai21", "maxTokens", TG_REF_OUT_AI21},
    };
    if (!cJSON_IsString(b->inputs)) return fail(b, "inputs must be a string");
    b->c->input_bytes = (int64_t)strlen(b->inputs->valuestring);
    b->c->op = b->t->stream ? TG_BR_INVOKE_STREAM : TG_BR_INVOKE;
    if (family_is(b, "anthropic") &&
        (strstr(b->base, "claude-v2") || strstr(b->base, "claude-instant")))
        return anthropic_text(b, out);
    if (family_is(b, "amazon") &&
        (starts(b->base, "amazon.titan-text") || starts(b->base, "amazon.titan-tg1")))
        return titan_text(b, out);
    if (!has_prompt_body(b)) return text_converse(b, out);
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        if (!family_is(b, plain[i].family)) continue;
        int rc = prompt_body(b, "prompt", cJSON_Duplicate(b->inputs, 1), out);
        if (rc) return rc;
        b->c->out = plain[i].out;
        b->c->max_output = get_count(*out, plain[i].out_max);
        return 0;
    }
    return text_converse(b, out); /* not reached: native families are in plain[] */
}

/* type: embeddings. Cohere takes a list of texts, Titan one. */
static int build_embeddings(build_t *b, cJSON **out)
{
    const cJSON *e;
    int rc;
    b->c->op = TG_BR_INVOKE;
    if (!family_is(b, "cohere")) {
        if (!cJSON_IsString(b->inputs)) return fail(b, "inputs must be a string");
        b->c->input_bytes = (int64_t)strlen(b->inputs->valuestring);
        b->c->out = TG_REF_OUT_TITAN_EMBED;
        return prompt_body(b, "inputText", cJSON_Duplicate(b->inputs, 1), out);
    }
    cJSON *texts;
    if (cJSON_IsString(b->inputs)) {
        b->c->input_bytes = (int64_t)strlen(b->inputs->valuestring);
        texts = cJSON_CreateArray();
        if (texts && !cJSON_AddItemToArray(texts, cJSON_Duplicate(b->inputs, 1))) {
            cJSON_Delete(texts);
            texts = NULL;
        }
    } else {
        if (!cJSON_IsArray(b->inputs) || !b->inputs->child)
            return fail(b, "inputs must be a string or a list of strings");
        cJSON_ArrayForEach(e, b->inputs)
        {
            if (!cJSON_IsString(e)) return fail(b, "inputs must be a string or a list of strings");
            b->c->input_bytes += (int64_t)strlen(e->valuestring);
        }
        texts = cJSON_Duplicate(b->inputs, 1);
    }
    cJSON *o = params_copy(b->params);
    if (!texts || !o) {
        cJSON_Delete(texts);
        cJSON_Delete(o);
        return TG_ENOMEM;
    }
    rc = 0;
    if (!cJSON_GetObjectItemCaseSensitive(o, "input_type"))
        rc = put(o, "input_type", cJSON_CreateString("search_document"));
    if (rc || (rc = move(o, "texts", &texts))) {
        cJSON_Delete(texts);
        cJSON_Delete(o);
        return rc;
    }
    b->c->out = TG_REF_OUT_COHERE_EMBED;
    *out = o;
    return 0;
}

/* The media type of base64 image data, from its first bytes. */
static const char *image_media_type(const char *b64)
{
    if (starts(b64, "/9j/")) return "image/jpeg";
    if (starts(b64, "R0lGOD")) return "image/gif";
    if (starts(b64, "UklGR")) return "image/webp";
    return "image/png";
}

/* type: embeddings-image: one base64 image. */
static int build_image_embedding(build_t *b, cJSON **out)
{
    if (!cJSON_IsString(b->inputs)) return fail(b, "inputs must be a base64 image string");
    b->c->op = TG_BR_INVOKE;
    b->c->images = 1;
    if (!family_is(b, "cohere")) {
        b->c->out = TG_REF_OUT_TITAN_EMBED;
        return prompt_body(b, "inputImage", cJSON_Duplicate(b->inputs, 1), out);
    }
    /* Cohere Embed takes images as data URIs, with input_type "image". */
    const char *img = b->inputs->valuestring;
    tg_buf_t uri;
    tg_buf_init(&uri, 0);
    int rc = 0;
    if (!starts(img, "data:")) rc = tg_buf_printf(&uri, "data:%s;base64,", image_media_type(img));
    if (!rc) rc = tg_buf_appends(&uri, img);
    cJSON *list = rc ? NULL : cJSON_CreateArray();
    if (list && !cJSON_AddItemToArray(list, cJSON_CreateString(uri.data))) {
        cJSON_Delete(list);
        list = NULL;
    }
    tg_buf_free(&uri);
    if (!rc && !list) rc = TG_ENOMEM;
    if (!rc) rc = prompt_body(b, "input_type", cJSON_CreateString("image"), out);
    if (!rc && (rc = move(*out, "images", &list))) {
        cJSON_Delete(*out);
        *out = NULL;
    }
    cJSON_Delete(list);
    if (rc) return rc;
    b->c->out = TG_REF_OUT_COHERE_EMBED;
    return 0;
}

static uint32_t side(const cJSON *obj, const char *key)
{
    int64_t v = get_count(obj, key);
    return v > 0 && v <= UINT32_MAX ? (uint32_t)v : DEFAULT_IMAGE_SIDE;
}

static void set_quality(tg_ref_call_t *c, int premium)
{
    snprintf(c->quality, sizeof(c->quality), "%s", premium ? "premium" : "standard");
}

/* type: image. Stability SDXL takes text_prompts, Titan / Nova Canvas
 * textToImageParams; what is asked for is read for pricing. */
static int build_image(build_t *b, cJSON **out)
{
    tg_ref_call_t *c = b->c;
    const cJSON *e;
    c->op = TG_BR_INVOKE;
    if (family_is(b, "stability")) {
        const cJSON *prompts = get(b->body, "text_prompts");
        if (!cJSON_IsArray(prompts)) return fail(b, "text_prompts is required");
        cJSON_ArrayForEach(e, prompts)
        {
            const char *t = get_str(e, "text");
            if (t) c->input_bytes += (int64_t)strlen(t);
        }
        c->out = TG_REF_OUT_STABILITY;
        c->width = side(b->params, "width");
        c->height = side(b->params, "height");
        c->steps = get_count(b->params, "steps");
        if (c->steps == 0) c->steps = DEFAULT_STEPS;
        c->images = get_count(b->params, "samples");
        if (c->images == 0) c->images = 1;
        set_quality(c, c->steps > DEFAULT_STEPS);
        return prompt_body(b, "text_prompts", cJSON_Duplicate(prompts, 1), out);
    }
    const cJSON *tti = get(b->body, "textToImageParams");
    const cJSON *cfg = get(b->params, "imageGenerationConfig");
    const char *task = get_str(b->params, "taskType");
    if (!tti && (!task || strcmp(task, "TEXT_IMAGE") == 0))
        return fail(b, "textToImageParams is required");
    const char *text = get_str(tti, "text"), *quality = get_str(cfg, "quality");
    c->input_bytes = text ? (int64_t)strlen(text) : 0;
    c->out = TG_REF_OUT_TITAN_IMAGE;
    c->width = side(cfg, "width");
    c->height = side(cfg, "height");
    c->images = get_count(cfg, "numberOfImages");
    if (c->images == 0) c->images = 1;
    /* The reference logged 51 steps for any quality but "standard". */
    int premium = quality && strcmp(quality, "standard") != 0;
    set_quality(c, premium);
    c->steps = DEFAULT_STEPS + premium;
    if (!tti) {
        cJSON *o = params_copy(b->params);
        if (!o) return TG_ENOMEM;
        *out = o;
        return 0;
    }
    return prompt_body(b, "textToImageParams", cJSON_Duplicate(tti, 1), out);
}

/* SageMaker: the reference's three body shapes (tg_sm_build_body). */
static int build_sagemaker(build_t *b, cJSON **out)
{
    tg_ref_call_t *c = b->c;
    tg_ref_mode_t mode = b->t->mode;
    if (mode == TG_REF_IMAGE) return fail(b, "type image is not supported for SageMaker");
    if (mode == TG_REF_EMBEDDINGS_IMAGE)
        return fail(b, "type embeddings-image is not supported for SageMaker");
    int messages = mode == TG_REF_MESSAGES;
    if (messages && !cJSON_IsArray(b->inputs)) return fail(b, "inputs must be a list of messages");
    tg_buf_t body;
    tg_buf_init(&body, 0);
    int rc = tg_sm_build_body(&body, b->inputs, b->params, messages, 0, c->inference_component,
                              sizeof(c->inference_component));
    if (rc == TG_EINVAL)
        rc = fail(b, "parameters.InferenceComponentName must be an inference component name");
    cJSON *o = rc ? NULL : tg_aws_json_parse(body.data, body.len);
    tg_buf_free(&body);
    if (rc) return rc;
    if (!o) return TG_ENOMEM;
    /* TGI and its Messages API stream only when the body says so. */
    if (b->t->stream && (messages || cJSON_IsString(b->inputs)) &&
        (rc = put(o, "stream", cJSON_CreateTrue()))) {
        cJSON_Delete(o);
        return rc;
    }
    c->op = b->t->stream ? TG_SM_INVOKE_STREAM : TG_SM_INVOKE;
    c->out = messages                    ? TG_REF_OUT_SM_MESSAGES
             : mode == TG_REF_EMBEDDINGS ? TG_REF_OUT_SM_EMBED
                                         : TG_REF_OUT_SM_TEXT;
    if (messages) {
        c->input_bytes = messages_bytes(b->inputs);
        c->max_output = get_count(b->params, "max_tokens");
        if (!c->max_output) c->max_output = get_count(b->params, "max_completion_tokens");
    } else if (cJSON_IsString(b->inputs)) {
        c->input_bytes = (int64_t)strlen(b->inputs->valuestring);
        c->max_output = get_count(b->params, "max_new_tokens");
    } else if (cJSON_IsObject(b->inputs)) { /* JumpStart: the first text, as the reference */
        const cJSON *f = b->inputs->child;
        c->input_bytes = cJSON_IsString(f) ? (int64_t)strlen(f->valuestring) : 0;
        c->max_output = get_count(b->params, "max_new_tokens");
    }
    *out = o;
    return 0;
}

int tg_ref_build(const tg_ref_target_t *t, const cJSON *body, tg_ref_call_t *c, char *err,
                 size_t errcap)
{
    memset(c, 0, sizeof(*c));
    if (err && errcap) err[0] = '\0';
    build_t b = {.t = t, .body = body, .c = c, .err = err, .errcap = errcap, .base = ""};
    if (!cJSON_IsObject(body)) return fail(&b, "the body must be a JSON object");
    b.inputs = get(body, "inputs");
    b.params = get(body, "parameters");
    if (b.params && !cJSON_IsObject(b.params)) return fail(&b, "parameters must be an object");
    if (t->stream && t->mode != TG_REF_TEXT && t->mode != TG_REF_MESSAGES)
        return fail(&b, "streaming is only for text");
    if (t->mode != TG_REF_IMAGE && !b.inputs) return fail(&b, "inputs is required");
    const char *names[] = {"additional_model_fields", "tool_config"};
    for (int i = 0; i < 2; i++) {
        const cJSON *v = get(body, names[i]);
        if (v && !cJSON_IsObject(v)) return fail(&b, "%s must be an object", names[i]);
    }

    tg_br_model_t m;
    const char *id = t->model_id ? t->model_id : "";
    if (tg_br_model_parse(id, strlen(id), &m) == 0) {
        snprintf(b.family, sizeof(b.family), "%s", m.family);
        b.base = m.base_model[0] ? m.base_model : id;
    }
    /* m lives until the end of this function: b.base may point into it. */

    cJSON *o = NULL;
    int rc;
    if (t->sagemaker) {
        rc = build_sagemaker(&b, &o);
    } else {
        switch (t->mode) {
        case TG_REF_TEXT:
            rc = build_text(&b, &o);
            break;
        case TG_REF_MESSAGES:
            rc = build_messages(&b, &o);
            break;
        case TG_REF_EMBEDDINGS:
            rc = build_embeddings(&b, &o);
            break;
        case TG_REF_EMBEDDINGS_IMAGE:
            rc = build_image_embedding(&b, &o);
            break;
        case TG_REF_IMAGE:
            rc = build_image(&b, &o);
            break;
        default:
            rc = fail(&b, "unknown request type");
        }
    }
    /* cJSON allocates with malloc: tollgate installs no cJSON hooks. */
    if (!rc && !(c->body = cJSON_PrintUnformatted(o))) rc = TG_ENOMEM;
    cJSON_Delete(o);
    if (rc) {
        tg_ref_call_free(c);
        return rc;
    }
    c->body_len = strlen(c->body);
    return 0;
}

void tg_ref_call_free(tg_ref_call_t *c)
{
    if (!c) return;
    free(c->body);
    c->body = NULL;
    c->body_len = 0;
}

/* ---- whole answers -------------------------------------------------------- */

/* obj[in] and obj[out] (both needed), cache counts when there: 1 when read. */
static int read_counts(const cJSON *obj, const char *in, const char *out, const char *cache_read,
                       const char *cache_write, tg_ref_usage_t *u)
{
    int64_t i, o, r = 0, w = 0;
    if (tg_aws_json_count(obj, in, &i) != 1 || tg_aws_json_count(obj, out, &o) != 1) return 0;
    if (tg_aws_json_count(obj, cache_read, &r) < 0 || tg_aws_json_count(obj, cache_write, &w) < 0)
        return 0;
    u->have = 1;
    u->input = i;
    u->output = o;
    u->cache_read = r;
    u->cache_write = w;
    return 1;
}

static int converse_counts(const cJSON *usage, tg_ref_usage_t *u)
{
    return read_counts(usage, "inputTokens", "outputTokens", "cacheReadInputTokens",
                       "cacheWriteInputTokens", u);
}

static int header_counts(const tg_header_t *h, size_t nh, tg_ref_usage_t *u)
{
    tg_br_usage_t bu = {0};
    if (!h || !tg_br_usage_from_headers(h, nh, &bu)) return 0;
    u->have = 1;
    u->input = bu.input;
    u->output = bu.output;
    u->cache_read = bu.cache_read;
    u->cache_write = bu.cache_write;
    return 1;
}

static void set_counts(tg_ref_usage_t *u, int64_t input, int64_t output)
{
    u->have = 1;
    u->input = input;
    u->output = output;
}

/* Counts some models put in their own answer, when the headers had none. */
static void body_counts(tg_ref_out_t out, const cJSON *j, tg_ref_usage_t *u)
{
    int64_t i, o;
    switch (out) {
    case TG_REF_OUT_TITAN_TEXT:
        if (tg_aws_json_count(j, "inputTextTokenCount", &i) == 1 &&
            tg_aws_json_count(first(get(j, "results")), "tokenCount", &o) == 1)
            set_counts(u, i, o);
        break;
    case TG_REF_OUT_META:
        read_counts(j, "prompt_token_count", "generation_token_count", NULL, NULL, u);
        break;
    case TG_REF_OUT_ANTHROPIC_MSG:
        read_counts(get(j, "usage"), "input_tokens", "output_tokens", "cache_read_input_tokens",
                    "cache_creation_input_tokens", u);
        break;
    case TG_REF_OUT_AI21: { /* Jurassic-2 lists the tokens of prompt and completion */
        const cJSON *pt = get(get(j, "prompt"), "tokens");
        const cJSON *ct = get(get(first(get(j, "completions")), "data"), "tokens");
        if (cJSON_IsArray(pt) && cJSON_IsArray(ct))
            set_counts(u, cJSON_GetArraySize(pt), cJSON_GetArraySize(ct));
        break;
    }
    case TG_REF_OUT_TITAN_EMBED:
        if (tg_aws_json_count(j, "inputTextTokenCount", &i) == 1) set_counts(u, i, 0);
        break;
    default:
        break;
    }
}

/* The generated text of a whole native answer, NULL when it has none. */
static const char *native_text(tg_ref_out_t out, const cJSON *j)
{
    switch (out) {
    case TG_REF_OUT_ANTHROPIC_TEXT:
        return get_str(j, "completion");
    case TG_REF_OUT_ANTHROPIC_MSG:
        return get_str(first(get(j, "content")), "text");
    case TG_REF_OUT_TITAN_TEXT:
        return get_str(first(get(j, "results")), "outputText");
    case TG_REF_OUT_META:
        return get_str(j, "generation");
    case TG_REF_OUT_MISTRAL:
        return get_str(first(get(j, "outputs")), "text");
    case TG_REF_OUT_COHERE:
        return get_str(first(get(j, "generations")), "text");
    case TG_REF_OUT_AI21:
        return get_str(get(first(get(j, "completions")), "data"), "text");
    default:
        return NULL;
    }
}

/* [{key: value}] printed into *out; takes value. */
static int answer(const char *key, cJSON *value, char **out, size_t *out_len)
{
    cJSON *arr = cJSON_CreateArray(), *obj = cJSON_CreateObject();
    int rc = TG_ENOMEM;
    if (!arr || !obj || !cJSON_AddItemToArray(arr, obj)) {
        cJSON_Delete(obj);
        cJSON_Delete(value);
        goto out;
    }
    if ((rc = put(obj, key, value))) goto out;
    rc = TG_ENOMEM;
    if (!(*out = cJSON_PrintUnformatted(arr))) goto out;
    *out_len = strlen(*out);
    rc = 0;
out:
    cJSON_Delete(arr);
    return rc;
}

static int text_answer(const char *text, size_t n, char **out, size_t *out_len)
{
    char *s = malloc(n + 1);
    if (!s) return TG_ENOMEM;
    memcpy(s, text, n);
    s[n] = '\0';
    cJSON *v = cJSON_CreateString(s);
    free(s);
    return answer("generated_text", v, out, out_len);
}

/* Converse: text blocks joined as the reference did (each followed by a
 * space, then right-trimmed), or the toolUse blocks when there are any. */
static int converse_answer(const cJSON *j, tg_ref_usage_t *u, char **out, size_t *out_len,
                           const char **why)
{
    const cJSON *content = get(get(get(j, "output"), "message"), "content"), *e;
    if (!cJSON_IsArray(content)) {
        *why = "the Converse answer has no output.message.content";
        return TG_EUPSTREAM;
    }
    tg_buf_t text;
    tg_buf_init(&text, 0);
    cJSON *tools = NULL;
    int rc = 0;
    cJSON_ArrayForEach(e, content)
    {
        const char *t = get_str(e, "text");
        const cJSON *tu = get(e, "toolUse");
        if (t) {
            rc = tg_buf_appends(&text, t);
            if (!rc) rc = tg_buf_append(&text, " ", 1);
        } else if (tu) {
            cJSON *item = cJSON_CreateObject();
            if (!tools) tools = cJSON_CreateArray();
            if (!item || !tools || !cJSON_AddItemToArray(tools, item)) {
                cJSON_Delete(item);
                rc = TG_ENOMEM;
            } else {
                rc = put_copy(item, "toolUse", tu);
                const cJSON *in = get(tu, "input");
                char *p = in ? cJSON_PrintUnformatted(in) : NULL;
                if (p) u->output_bytes += (int64_t)strlen(p);
                free(p);
            }
        }
        if (rc) break;
    }
    while (text.len && py_space((unsigned char)text.data[text.len - 1]))
        text.len--;
    u->output_bytes += (int64_t)text.len;
    converse_counts(get(j, "usage"), u);
    if (!rc) {
        if (tools) {
            rc = answer("generated_text", tools, out, out_len);
            tools = NULL;
        } else {
            rc = text_answer(text.data ? text.data : "", text.len, out, out_len);
        }
    }
    cJSON_Delete(tools);
    tg_buf_free(&text);
    return rc;
}

/* Cohere's embeddings: a list of vectors, or with embedding_types an object
 * of lists ("float" first): the first vector. */
static const cJSON *cohere_vector(const cJSON *j)
{
    const cJSON *e = get(j, "embeddings");
    if (cJSON_IsObject(e)) e = get(e, "float") ? get(e, "float") : e->child;
    e = first(e);
    return cJSON_IsArray(e) ? e : NULL;
}

static int sm_answer(const tg_ref_call_t *c, const cJSON *j, const char *body, size_t len,
                     tg_ref_usage_t *u, char **out, size_t *out_len, const char **why)
{
    if (c->out == TG_REF_OUT_SM_EMBED) {
        const cJSON *v = get(j, "embedding");
        if (!v) {
            *why = "the SageMaker answer has no embedding";
            return TG_EUPSTREAM;
        }
        return answer("embedding", cJSON_Duplicate(v, 1), out, out_len);
    }
    const char *text;
    if (c->out == TG_REF_OUT_SM_MESSAGES) {
        text = get_str(get(first(get(j, "choices")), "message"), "content");
    } else {
        text = get_str(cJSON_IsArray(j) ? first(j) : j, "generated_text");
    }
    if (!text) {
        *why = c->out == TG_REF_OUT_SM_MESSAGES ? "the SageMaker answer has no choices[0].message"
                                                : "the SageMaker answer has no generated_text";
        return TG_EUPSTREAM;
    }
    size_t n = strlen(text);
    if (c->out == TG_REF_OUT_SM_MESSAGES) { /* the reference's .strip() */
        while (n && py_space((unsigned char)*text))
            text++, n--;
        while (n && py_space((unsigned char)text[n - 1]))
            n--;
    }
    tg_sm_usage_t su;
    if (tg_sm_usage_from_body(body, len, &su) == 0 && su.have_input && su.have_output) {
        u->have = 1;
        u->input = su.input;
        u->output = su.output;
    }
    u->output_bytes = (int64_t)n;
    return text_answer(text, n, out, out_len);
}

int tg_ref_parse(const tg_ref_call_t *c, const char *body, size_t len, const tg_header_t *h,
                 size_t nh, tg_ref_usage_t *u, char **out, size_t *out_len, char *err,
                 size_t errcap)
{
    memset(u, 0, sizeof(*u));
    *out = NULL;
    *out_len = 0;
    if (err && errcap) err[0] = '\0';
    const char *why = NULL;
    int rc = TG_EUPSTREAM;
    cJSON *j = tg_aws_json_parse(body, len);
    const cJSON *v;
    if (!j) {
        why = "the model's answer is not JSON";
        goto out;
    }
    switch (c->out) {
    case TG_REF_OUT_CONVERSE:
        rc = converse_answer(j, u, out, out_len, &why);
        if (!rc && !u->have) header_counts(h, nh, u);
        break;
    case TG_REF_OUT_ANTHROPIC_TEXT:
    case TG_REF_OUT_ANTHROPIC_MSG:
    case TG_REF_OUT_TITAN_TEXT:
    case TG_REF_OUT_META:
    case TG_REF_OUT_MISTRAL:
    case TG_REF_OUT_COHERE:
    case TG_REF_OUT_AI21: {
        const char *text = native_text(c->out, j);
        if (!text) {
            why = "the model's answer has no generated text";
            break;
        }
        if (!header_counts(h, nh, u)) body_counts(c->out, j, u);
        u->output_bytes = (int64_t)strlen(text);
        rc = text_answer(text, strlen(text), out, out_len);
        break;
    }
    case TG_REF_OUT_TITAN_EMBED:
    case TG_REF_OUT_COHERE_EMBED:
        v = c->out == TG_REF_OUT_TITAN_EMBED ? get(j, "embedding") : cohere_vector(j);
        if (!cJSON_IsArray(v)) {
            why = "the model's answer has no embedding";
            break;
        }
        if (!header_counts(h, nh, u)) body_counts(c->out, j, u);
        u->images = c->images;
        rc = answer("embedding", cJSON_Duplicate(v, 1), out, out_len);
        break;
    case TG_REF_OUT_TITAN_IMAGE:
    case TG_REF_OUT_STABILITY: {
        const char *key = c->out == TG_REF_OUT_TITAN_IMAGE ? "images" : "artifacts";
        v = get(j, key);
        if (!cJSON_IsArray(v)) {
            const char *e = get_str(j, "error");
            why = e ? e : "the model's answer has no images";
            break;
        }
        header_counts(h, nh, u);
        u->images = cJSON_GetArraySize(v);
        rc = answer(key, cJSON_Duplicate(v, 1), out, out_len);
        break;
    }
    case TG_REF_OUT_SM_TEXT:
    case TG_REF_OUT_SM_MESSAGES:
    case TG_REF_OUT_SM_EMBED:
        rc = sm_answer(c, j, body, len, u, out, out_len, &why);
        break;
    default:
        why = "unknown answer format";
    }
out:
    /* why may point into j */
    if (rc == TG_EUPSTREAM && err && errcap) tg_aws_text_copy(err, errcap, why, strlen(why));
    cJSON_Delete(j);
    if (rc) {
        free(*out);
        *out = NULL;
        *out_len = 0;
    }
    return rc;
}

/* ---- streams --------------------------------------------------------------- */

enum { SM_UNDECIDED = 0, SM_SSE = 1, SM_JSONL = 2 };

/* SageMaker's private state: the counting reader and our text splitter. */
typedef struct {
    tg_sm_stream_t counts;
    tg_sse_t sse;
    tg_buf_t line; /* JSON Lines: an incomplete line */
    size_t max_event;
    int mode;
} sm_state_t;

static int is_sm(const tg_ref_call_t *c)
{
    return c->out == TG_REF_OUT_SM_TEXT || c->out == TG_REF_OUT_SM_MESSAGES ||
           c->out == TG_REF_OUT_SM_EMBED;
}

int tg_ref_stream_init(tg_ref_stream_t *s, const tg_ref_call_t *c, size_t max_text)
{
    memset(s, 0, sizeof(*s));
    s->c = c;
    tg_buf_init(&s->text, max_text);
    tg_buf_init(&s->tool_input, max_text);
    if (!is_sm(c)) return 0;
    sm_state_t *st = calloc(1, sizeof(*st));
    if (!st) return TG_ENOMEM;
    /* An event carries a token, or at most the whole text once more. */
    st->max_event = max_text && max_text < SIZE_MAX / 4 ? max_text + 65536 : 0;
    tg_sm_stream_init(&st->counts, st->max_event);
    tg_sse_init(&st->sse, st->max_event);
    tg_buf_init(&st->line, st->max_event ? st->max_event : SIZE_MAX / 2);
    s->sm = st;
    return 0;
}

void tg_ref_stream_free(tg_ref_stream_t *s)
{
    sm_state_t *st = s->sm;
    if (st) {
        tg_sm_stream_free(&st->counts);
        tg_sse_free(&st->sse);
        tg_buf_free(&st->line);
        free(st);
    }
    s->sm = NULL;
    tg_buf_free(&s->text);
    tg_buf_free(&s->tool_input);
    cJSON_Delete(s->tools);
    s->tools = NULL;
}

static int add_text(tg_ref_stream_t *s, const char *t)
{
    if (!t || !*t) return 0;
    size_t n = strlen(t);
    int rc = tg_buf_append(&s->text, t, n);
    if (!rc) s->usage.output_bytes += (int64_t)n;
    return rc;
}

/* The text of one of the model's own InvokeModelWithResponseStream chunks. */
static const char *chunk_text(tg_ref_stream_t *s, const cJSON *j)
{
    const cJSON *o;
    switch (s->c->out) {
    case TG_REF_OUT_ANTHROPIC_TEXT:
        if (get(j, "stop_reason")) s->done = 1;
        return get_str(j, "completion");
    case TG_REF_OUT_ANTHROPIC_MSG: {
        const char *type = get_str(j, "type");
        if (type && strcmp(type, "message_stop") == 0) s->done = 1;
        if (!type || strcmp(type, "content_block_delta") != 0) return NULL;
        return get_str(get(j, "delta"), "text");
    }
    case TG_REF_OUT_TITAN_TEXT:
        if (get(j, "completionReason")) s->done = 1;
        return get_str(j, "outputText");
    case TG_REF_OUT_META:
        if (get(j, "stop_reason")) s->done = 1;
        return get_str(j, "generation");
    case TG_REF_OUT_MISTRAL:
        o = first(get(j, "outputs"));
        if (get(o, "stop_reason")) s->done = 1;
        return get_str(o, "text");
    case TG_REF_OUT_COHERE:
        if (cJSON_IsTrue(get(j, "is_finished"))) { /* the last chunk repeats the answer */
            s->done = 1;
            return NULL;
        }
        return get_str(j, "text");
    case TG_REF_OUT_AI21:
        return get_str(get(first(get(j, "completions")), "data"), "text");
    default:
        return NULL;
    }
}

/* Strict base64 (length a multiple of 4, padding only at the end) into a
 * new buffer; NULL when it is not. */
static unsigned char *b64_decode(const char *in, size_t n, size_t *outlen)
{
    if (n % 4 || n > INT_MAX) return NULL;
    size_t pad = (n && in[n - 1] == '=') + (n > 1 && in[n - 2] == '=');
    for (size_t i = 0; i + pad < n; i++) {
        char ch = in[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '+' || ch == '/'))
            return NULL;
    }
    unsigned char *out = malloc(n / 4 * 3 + 1);
    if (!out) return NULL;
    int w = n ? EVP_DecodeBlock(out, (const unsigned char *)in, (int)n) : 0;
    if (w < 0 || (size_t)w < pad) {
        free(out);
        return NULL;
    }
    *outlen = (size_t)w - pad;
    out[*outlen] = '\0';
    return out;
}

static int invoke_event(tg_ref_stream_t *s, const char *type, const char *payload, size_t len)
{
    if (!type || strcmp(type, "chunk") != 0) return 0;
    cJSON *outer = tg_aws_json_parse(payload, len), *inner = NULL;
    const char *b64 = get_str(outer, "bytes");
    unsigned char *raw = NULL;
    size_t rawlen = 0;
    int rc = TG_EPROTO;
    if (!b64 || !(raw = b64_decode(b64, strlen(b64), &rawlen))) goto out;
    inner = tg_aws_json_parse((const char *)raw, rawlen);
    if (!cJSON_IsObject(inner)) goto out;
    const cJSON *metrics = get(inner, "amazon-bedrock-invocationMetrics");
    read_counts(metrics, "inputTokenCount", "outputTokenCount", "cacheReadInputTokenCount",
                "cacheWriteInputTokenCount", &s->usage);
    rc = add_text(s, chunk_text(s, inner));
out:
    free(raw);
    cJSON_Delete(inner);
    cJSON_Delete(outer);
    return rc;
}

/* The toolUse object of a tool use still receiving its input, or NULL. */
static cJSON *open_tool(tg_ref_stream_t *s)
{
    cJSON *last = s->tools ? cJSON_GetArrayItem(s->tools, cJSON_GetArraySize(s->tools) - 1) : NULL;
    cJSON *tu = cJSON_GetObjectItemCaseSensitive(last, "toolUse");
    return tu && !cJSON_GetObjectItemCaseSensitive(tu, "input") ? tu : NULL;
}

/* contentBlockStop of a tool use: its input is the JSON the pieces make. */
static int close_tool(tg_ref_stream_t *s, cJSON *tu)
{
    cJSON *in = s->tool_input.len ? tg_aws_json_parse(s->tool_input.data, s->tool_input.len)
                                  : cJSON_CreateObject();
    tg_buf_reset(&s->tool_input);
    if (!in) return TG_EPROTO;
    return put(tu, "input", in);
}

static int start_tool(tg_ref_stream_t *s, const cJSON *start)
{
    const char *id = get_str(start, "toolUseId"), *name = get_str(start, "name");
    if (!id || !name || open_tool(s)) return TG_EPROTO;
    cJSON *item = cJSON_CreateObject(), *tu = cJSON_CreateObject();
    if (!s->tools) s->tools = cJSON_CreateArray();
    if (!item || !tu || !s->tools || !cJSON_AddItemToObject(item, "toolUse", tu)) {
        cJSON_Delete(item);
        cJSON_Delete(tu);
        return TG_ENOMEM;
    }
    if (!cJSON_AddItemToArray(s->tools, item)) {
        cJSON_Delete(item);
        return TG_ENOMEM;
    }
    tg_buf_reset(&s->tool_input);
    int rc = put(tu, "toolUseId", cJSON_CreateString(id));
    return rc ? rc : put(tu, "name", cJSON_CreateString(name));
}

static int converse_event(tg_ref_stream_t *s, const char *type, const char *payload, size_t len)
{
    static const char *const known[] = {"messageStart",      "contentBlockStart",
                                        "contentBlockDelta", "contentBlockStop",
                                        "messageStop",       "metadata"};
    size_t k = 0, nk = sizeof(known) / sizeof(known[0]);
    while (type && k < nk && strcmp(type, known[k]) != 0)
        k++;
    if (!type || k == nk) return 0; /* exceptions and events we do not read */
    cJSON *j = tg_aws_json_parse(payload, len);
    int rc = 0;
    if (!cJSON_IsObject(j)) {
        rc = TG_EPROTO;
    } else if (k == 1) {
        const cJSON *start = get(get(j, "start"), "toolUse");
        if (start) rc = start_tool(s, start);
    } else if (k == 2) {
        const cJSON *d = get(j, "delta"), *tu = get(d, "toolUse");
        if (tu) {
            const char *piece = get_str(tu, "input");
            if (!open_tool(s) || !piece) {
                rc = TG_EPROTO;
            } else if (!(rc = tg_buf_appends(&s->tool_input, piece))) {
                s->usage.output_bytes += (int64_t)strlen(piece);
            }
        } else {
            rc = add_text(s, get_str(d, "text"));
        }
    } else if (k == 3) {
        cJSON *tu = open_tool(s);
        if (tu) rc = close_tool(s, tu);
    } else if (k == 4) {
        s->done = 1;
    } else if (k == 5) {
        converse_counts(get(j, "usage"), &s->usage);
    }
    cJSON_Delete(j);
    return rc;
}

/* One whole SageMaker event's data: TGI (token.text; the last event's
 * generated_text repeats the answer), OpenAI-style (choices[0].delta), a
 * whole TGI answer on one line, [DONE], or an in-band error. */
static int sm_data(tg_ref_stream_t *s, const char *d, size_t n)
{
    while (n && py_space((unsigned char)*d))
        d++, n--;
    while (n && py_space((unsigned char)d[n - 1]))
        n--;
    if (n == 6 && memcmp(d, "[DONE]", 6) == 0) {
        s->done = 1;
        return 0;
    }
    cJSON *j = tg_aws_json_parse(d, n);
    const char *text = NULL;
    int rc = 0;
    if (cJSON_IsArray(j)) {
        if (s->text.len == 0) text = get_str(first(j), "generated_text");
    } else if (cJSON_IsObject(j)) {
        const cJSON *tok = get(j, "token"), *ch = first(get(j, "choices"));
        if (get(j, "error")) {
            rc = TG_EUPSTREAM;
        } else if (cJSON_IsObject(tok)) {
            if (!cJSON_IsTrue(get(tok, "special"))) text = get_str(tok, "text");
            if (get_str(j, "generated_text")) s->done = 1;
        } else if (ch) {
            text = get_str(get(ch, "delta"), "content");
            if (!text) text = get_str(ch, "text");
        } else if (s->text.len == 0) {
            text = get_str(j, "generated_text");
        }
    }
    if (!rc) rc = add_text(s, text);
    cJSON_Delete(j);
    return rc;
}

static int sm_on_sse(const tg_sse_event_t *ev, void *ud)
{
    return sm_data(ud, ev->data, ev->data_len);
}

static int sm_lines(tg_ref_stream_t *s, sm_state_t *st, const char *p, size_t n)
{
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        int rc = tg_buf_append(&st->line, p, take);
        if (rc || !nl) return rc;
        rc = sm_data(s, st->line.data, st->line.len);
        tg_buf_reset(&st->line);
        if (rc) return rc;
        p += take + 1;
        n -= take + 1;
    }
    return 0;
}

static int sm_event(tg_ref_stream_t *s, const char *type, const char *p, size_t n)
{
    sm_state_t *st = s->sm;
    if (type && strcmp(type, "PayloadPart") != 0) return 0;
    int rc = tg_sm_stream_feed(&st->counts, p, n);
    if (rc) return rc;
    if (st->mode == SM_UNDECIDED) { /* as tg_sm_stream decides */
        while (n && py_space((unsigned char)*p))
            p++, n--;
        if (n == 0) return 0;
        st->mode = *p == '{' || *p == '[' ? SM_JSONL : SM_SSE;
    }
    rc = st->mode == SM_JSONL ? sm_lines(s, st, p, n) : tg_sse_feed(&st->sse, p, n, sm_on_sse, s);
    return rc;
}

int tg_ref_stream_feed(tg_ref_stream_t *s, const char *event_type, const char *payload, size_t len,
                       const char **delta, size_t *delta_len)
{
    size_t before = s->text.len;
    int rc;
    *delta = "";
    *delta_len = 0;
    if (s->sm) {
        rc = sm_event(s, event_type, payload, len);
    } else if (s->c->out == TG_REF_OUT_CONVERSE) {
        rc = converse_event(s, event_type, payload, len);
    } else {
        rc = invoke_event(s, event_type, payload, len);
    }
    if (s->text.len > before) {
        *delta = s->text.data + before;
        *delta_len = s->text.len - before;
    }
    return rc;
}

int tg_ref_stream_finish(tg_ref_stream_t *s, tg_ref_usage_t *u, char **out, size_t *out_len)
{
    int rc = 0;
    *out = NULL;
    *out_len = 0;
    sm_state_t *st = s->sm;
    if (st) {
        tg_sm_stream_finish(&st->counts);
        if (st->mode == SM_JSONL && st->line.len) { /* a last line without its newline */
            rc = sm_data(s, st->line.data, st->line.len);
            tg_buf_reset(&st->line);
        }
        const tg_sm_usage_t *su = &st->counts.usage;
        if (su->have_input && su->have_output) {
            s->usage.have = 1;
            s->usage.input = su->input;
            s->usage.output = su->output;
        }
    }
    cJSON *tu = open_tool(s);
    if (!rc && tu) rc = close_tool(s, tu);
    *u = s->usage;
    if (rc) return rc;
    if (s->tools && s->tools->child) {
        cJSON *tools = cJSON_Duplicate(s->tools, 1);
        return answer("generated_text", tools, out, out_len);
    }
    return text_answer(s->text.data ? s->text.data : "", s->text.len, out, out_len);
}

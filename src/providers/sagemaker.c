/* sagemaker.c - SageMaker runtime endpoints: request bodies for the
 * containers the reference served (TGI, TGI's Messages API, JumpStart),
 * token counts from their answers, and their response streams.
 *
 * SageMaker passes the container's bytes through untouched: a streamed
 * answer is the container's own Server-Sent Events (TGI, vLLM, LMI in SSE
 * mode) or JSON Lines (LMI's default), cut into PayloadParts wherever the
 * service likes, mid-line and mid-character. The stream reader therefore
 * reassembles events first (bounded by max_event) and reads counts only from
 * whole events. Counts are what the container reported or nothing: TGI's
 * details.generated_tokens / input_length / prefill, or an OpenAI-style
 * usage; everything else is left to the caller's estimate. */
#include "providers/sagemaker.h"

#include <string.h>

#include "aws/sigv4.h"
#include "providers/bedrock.h"

#define COUNT_MAX (((int64_t)1 << 53) - 1) /* as tg_aws_json_count */

enum { MODE_UNDECIDED = 0, MODE_SSE = 1, MODE_JSONL = 2 };

/* ---- operations --------------------------------------------------------- */

static const struct {
    const char *path, *api;
} ops[] = {
    [TG_SM_INVOKE] = {"invocations", "sagemaker.invoke"},
    [TG_SM_INVOKE_STREAM] = {"invocations-response-stream", "sagemaker.invoke-stream"},
};
#define NOPS (sizeof(ops) / sizeof(ops[0]))

static int op_valid(tg_sm_op_t op)
{
    return (unsigned)op < NOPS;
}

const char *tg_sm_op_path(tg_sm_op_t op)
{
    return op_valid(op) ? ops[op].path : NULL;
}

const char *tg_sm_op_api(tg_sm_op_t op)
{
    return op_valid(op) ? ops[op].api : NULL;
}

static int eq(const char *s, size_t n, const char *lit)
{
    return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

int tg_sm_op_parse(const char *s, size_t n, tg_sm_op_t *out)
{
    for (size_t i = 0; s && i < NOPS; i++) {
        if (eq(s, n, ops[i].path) || eq(s, n, ops[i].api)) {
            *out = (tg_sm_op_t)i;
            return 0;
        }
    }
    return TG_EINVAL;
}

int tg_sm_path(tg_buf_t *out, const char *endpoint, size_t n, tg_sm_op_t op)
{
    if (!op_valid(op) || !endpoint || n == 0) return TG_EINVAL;
    size_t mark = out->len;
    int rc = tg_buf_appends(out, "/endpoints/");
    if (!rc) rc = tg_sigv4_uri_encode(out, endpoint, n, 0);
    if (!rc) rc = tg_buf_append(out, "/", 1);
    if (!rc) rc = tg_buf_appends(out, ops[op].path);
    if (rc && out->data) {
        out->len = mark;
        out->data[mark] = '\0';
    }
    return rc;
}

int64_t tg_estimate_tokens(int64_t bytes)
{
    return bytes <= 0 ? 0 : bytes / 4 + (bytes % 4 != 0);
}

/* ---- errors ------------------------------------------------------------- */

static const tg_aws_error_t sm_errors[] = {
    {"ValidationError", 400},
    {"ModelError", 424},
    {"ModelNotReadyException", 429},
    {"ThrottlingException", 429},
    {"ServiceUnavailable", 503},
    {"InternalFailure", 500},
    {"InternalDependencyException", 500},
    {"ModelStreamError", 424},
    {"InternalStreamFailure", 500},
};

int tg_sm_error_status(const char *type, size_t n, int upstream_status, char *code, size_t codecap)
{
    return tg_aws_error_status(sm_errors, sizeof(sm_errors) / sizeof(sm_errors[0]), type, n,
                               upstream_status, code, codecap);
}

static void set_empty(char *s, size_t cap)
{
    if (s && cap) s[0] = '\0';
}

int tg_sm_stream_message(const tg_es_message_t *m, const char **payload, size_t *len, int *status,
                         char *code, size_t codecap, char *msg, size_t msgcap)
{
    size_t mtlen = 0, tlen = 0, mlen = 0;
    const char *mt = tg_es_header_str(m, ":message-type", &mtlen), *type;
    *payload = "";
    *len = 0;
    *status = 0;
    set_empty(code, codecap);
    set_empty(msg, msgcap);
    if (mt && eq(mt, mtlen, "exception")) {
        type = tg_es_header_str(m, ":exception-type", &tlen);
        if (!type) return TG_EPROTO;
        *status = tg_sm_error_status(type, tlen, 0, code, codecap);
        if (msg && msgcap) tg_aws_error_message(m->payload, m->payload_len, msg, msgcap);
        return 1;
    }
    if (mt && eq(mt, mtlen, "error")) {
        type = tg_es_header_str(m, ":error-code", &tlen);
        const char *text = tg_es_header_str(m, ":error-message", &mlen);
        if (!type) return TG_EPROTO;
        *status = tg_sm_error_status(type, tlen, 0, code, codecap);
        if (text && msg && msgcap) tg_aws_text_copy(msg, msgcap, text, mlen);
        return 1;
    }
    if (mt && !eq(mt, mtlen, "event")) return TG_EPROTO;
    type = tg_es_header_str(m, ":event-type", &tlen);
    if (!type) return TG_EPROTO;
    if (eq(type, tlen, "PayloadPart") && m->payload_len) {
        *payload = m->payload;
        *len = m->payload_len;
    }
    return 0;
}

/* ---- request bodies ----------------------------------------------------- */

/* An inference component's name goes into a header: SageMaker's own name
 * pattern, ^[a-zA-Z0-9]([-a-zA-Z0-9]*[a-zA-Z0-9])?$, at most 63 bytes. */
static int component_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > 63 || s[0] == '-' || s[n - 1] == '-') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '-'))
            return 0;
    }
    return 1;
}

/* obj[key] = a copy of v, keeping the key's place when it was there (a
 * Python {**a, **b}). */
static int put_owned(cJSON *obj, const char *key, cJSON *v)
{
    if (!v) return TG_ENOMEM;
    int ok = cJSON_GetObjectItemCaseSensitive(obj, key)
                 ? cJSON_ReplaceItemInObjectCaseSensitive(obj, key, v)
                 : cJSON_AddItemToObject(obj, key, v);
    if (ok) return 0;
    cJSON_Delete(v);
    return TG_ENOMEM;
}

static int put(cJSON *obj, const char *key, const cJSON *v)
{
    return put_owned(obj, key, cJSON_Duplicate(v, 1));
}

static int merge(cJSON *dst, const cJSON *src)
{
    const cJSON *item;
    cJSON_ArrayForEach(item, src)
    {
        int rc = put(dst, item->string, item);
        if (rc) return rc;
    }
    return 0;
}

int tg_sm_build_body(tg_buf_t *out, const cJSON *inputs, const cJSON *parameters, int messages_api,
                     int want_details, char *component, size_t compcap)
{
    set_empty(component, compcap);
    if (!inputs || (parameters && !cJSON_IsObject(parameters) && !cJSON_IsNull(parameters)))
        return TG_EINVAL;
    int rc = TG_ENOMEM;
    cJSON *params =
        cJSON_IsObject(parameters) ? cJSON_Duplicate(parameters, 1) : cJSON_CreateObject();
    cJSON *body = NULL;
    char *text = NULL;
    if (!params) goto out;

    const cJSON *icn = cJSON_GetObjectItemCaseSensitive(params, "InferenceComponentName");
    if (icn) {
        if (!cJSON_IsString(icn) || !component_ok(icn->valuestring) ||
            (component && strlen(icn->valuestring) >= compcap)) {
            rc = TG_EINVAL;
            goto out;
        }
        if (component) strcpy(component, icn->valuestring);
        cJSON_DeleteItemFromObjectCaseSensitive(params, "InferenceComponentName");
    }

    if (messages_api || cJSON_IsObject(inputs)) {
        body = messages_api ? cJSON_CreateObject() : cJSON_Duplicate(inputs, 1);
        if (!body) goto out;
        if (messages_api && (rc = put(body, "messages", inputs))) goto out;
        if ((rc = merge(body, params))) goto out;
    } else {
        if (want_details && (rc = put_owned(params, "details", cJSON_CreateTrue()))) goto out;
        rc = TG_ENOMEM;
        if (!(body = cJSON_CreateObject())) goto out;
        if ((rc = put(body, "inputs", inputs))) goto out;
        if (!cJSON_AddItemToObject(body, "parameters", params)) {
            rc = TG_ENOMEM;
            goto out;
        }
        params = NULL; /* body owns it now */
    }
    rc = TG_ENOMEM;
    if (!(text = cJSON_PrintUnformatted(body))) goto out;
    tg_buf_reset(out);
    rc = tg_buf_append(out, text, strlen(text));
    if (rc) tg_buf_reset(out);
out:
    cJSON_free(text);
    cJSON_Delete(body);
    cJSON_Delete(params);
    return rc;
}

/* ---- counts from whole bodies ------------------------------------------ */

static int64_t str_bytes(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? (int64_t)strlen(v->valuestring) : 0;
}

/* Text of an OpenAI-style message or delta: content (a string or parts),
 * reasoning, tool call arguments. */
static int64_t message_bytes(const cJSON *msg)
{
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(msg, "content"), *e;
    int64_t n = str_bytes(msg, "content") + str_bytes(msg, "reasoning_content");
    if (cJSON_IsArray(c)) cJSON_ArrayForEach(e, c) n += str_bytes(e, "text");
    const cJSON *calls = cJSON_GetObjectItemCaseSensitive(msg, "tool_calls");
    cJSON_ArrayForEach(e, calls)
    {
        n += str_bytes(cJSON_GetObjectItemCaseSensitive(e, "function"), "arguments");
    }
    return n;
}

static int64_t choices_bytes(const cJSON *obj)
{
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(obj, "choices"), *c;
    int64_t n = 0;
    cJSON_ArrayForEach(c, choices)
    {
        n += message_bytes(cJSON_GetObjectItemCaseSensitive(c, "message"));
        n += message_bytes(cJSON_GetObjectItemCaseSensitive(c, "delta"));
        n += str_bytes(c, "text");
    }
    return n;
}

/* Adds a reported count to a total; a total past COUNT_MAX is no count. */
static void add_count(int64_t *total, int *have, int64_t v)
{
    if (*have < 0) return;
    if (v > COUNT_MAX - *total) {
        *have = -1;
        return;
    }
    *total += v;
    *have = 1;
}

typedef struct {
    int64_t in, out, bytes;
    int have_in, have_out; /* 0 none, 1 some, -1 overflowed */
} tally_t;

/* One TGI-shaped result: {"generated_text", "details": {"generated_tokens",
 * "prefill": [...], "input_length"}}, or JumpStart's "generated_texts". */
static void tgi_result(const cJSON *r, tally_t *t)
{
    const cJSON *d = cJSON_GetObjectItemCaseSensitive(r, "details"), *e;
    int64_t v;
    t->bytes += str_bytes(r, "generated_text");
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(r, "generated_texts"))
    {
        if (cJSON_IsString(e)) t->bytes += (int64_t)strlen(e->valuestring);
    }
    if (!cJSON_IsObject(d)) return;
    if (tg_aws_json_count(d, "generated_tokens", &v) == 1) add_count(&t->out, &t->have_out, v);
    /* prefill lists the prompt's tokens only with decoder_input_details; an
     * empty list says nothing (a prompt has at least one token). */
    const cJSON *prefill = cJSON_GetObjectItemCaseSensitive(d, "prefill");
    int np = cJSON_IsArray(prefill) ? cJSON_GetArraySize(prefill) : 0;
    if (np > 0)
        add_count(&t->in, &t->have_in, np);
    else if (tg_aws_json_count(d, "input_length", &v) == 1)
        add_count(&t->in, &t->have_in, v);
}

/* OpenAI-style usage: prompt_tokens and completion_tokens, each on its own. */
static int openai_usage(const cJSON *obj, tally_t *t)
{
    const cJSON *u = cJSON_GetObjectItemCaseSensitive(obj, "usage");
    int64_t v;
    if (!cJSON_IsObject(u)) return 0;
    if (tg_aws_json_count(u, "prompt_tokens", &v) == 1) t->in = v, t->have_in = 1;
    if (tg_aws_json_count(u, "completion_tokens", &v) == 1) t->out = v, t->have_out = 1;
    return 1;
}

static void tally_to_usage(const tally_t *t, tg_sm_usage_t *u)
{
    u->text_bytes = t->bytes;
    u->have_input = t->have_in == 1;
    u->input = u->have_input ? t->in : 0;
    u->have_output = t->have_out == 1;
    u->output = u->have_output ? t->out : 0;
}

int tg_sm_usage_from_body(const char *body, size_t len, tg_sm_usage_t *u)
{
    memset(u, 0, sizeof(*u));
    cJSON *j = tg_aws_json_parse(body, len);
    if (!j) return TG_EINVAL;
    tally_t t = {0};
    const cJSON *e;
    if (cJSON_IsArray(j)) { /* TGI's SageMaker route: one result per input */
        cJSON_ArrayForEach(e, j)
        {
            if (cJSON_IsObject(e)) tgi_result(e, &t);
        }
    } else if (cJSON_IsObject(j)) {
        t.bytes = choices_bytes(j);
        openai_usage(j, &t);
        tgi_result(j, &t);
    }
    tally_to_usage(&t, u);
    cJSON_Delete(j);
    return 0;
}

/* ---- response streams --------------------------------------------------- */

void tg_sm_stream_init(tg_sm_stream_t *s, size_t max_event)
{
    memset(s, 0, sizeof(*s));
    tg_sse_init(&s->sse, max_event);
    tg_buf_init(&s->line, s->sse.max_event);
}

void tg_sm_stream_free(tg_sm_stream_t *s)
{
    tg_sse_free(&s->sse);
    tg_buf_free(&s->line);
}

size_t tg_sm_stream_pending(const tg_sm_stream_t *s)
{
    return s->mode == MODE_JSONL ? s->line.len : tg_sse_pending(&s->sse);
}

static int is_space(char c)
{
    return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static void in_band_error(tg_sm_stream_t *s, const cJSON *err)
{
    const cJSON *m = err;
    if (cJSON_IsObject(err)) m = cJSON_GetObjectItemCaseSensitive(err, "message");
    if (cJSON_IsString(m)) {
        tg_aws_text_copy(s->error, sizeof(s->error), m->valuestring, strlen(m->valuestring));
    } else if (!s->error[0]) {
        tg_aws_text_copy(s->error, sizeof(s->error), "error", 5);
    }
}

/* One whole event's data: TGI, OpenAI-style, an error, or [DONE]. */
static void stream_data(tg_sm_stream_t *s, const char *d, size_t n)
{
    while (n && is_space(*d))
        d++, n--;
    while (n && is_space(d[n - 1]))
        n--;
    if (n == 0) return;
    if (eq(d, n, "[DONE]")) {
        s->events++;
        s->done = 1;
        return;
    }
    cJSON *j = tg_aws_json_parse(d, n);
    /* A JSON line is an event only when it is JSON: a whole answer that
     * merely spans lines (pretty-printed) is then still seen as none. */
    if (s->mode == MODE_SSE || j) s->events++;
    tg_sm_usage_t *u = &s->usage;
    if (cJSON_IsArray(j)) { /* a whole TGI answer, [{generated_text, details}] */
        tally_t t = {0};
        const cJSON *e;
        cJSON_ArrayForEach(e, j)
        {
            if (cJSON_IsObject(e)) tgi_result(e, &t);
        }
        u->text_bytes += t.bytes;
        if (t.have_in == 1) u->input = t.in, u->have_input = 1;
        if (t.have_out == 1) u->output = t.out, u->have_output = 1;
    }
    if (!cJSON_IsObject(j)) {
        cJSON_Delete(j);
        return;
    }
    const cJSON *err = cJSON_GetObjectItemCaseSensitive(j, "error");
    if (err && !cJSON_IsNull(err)) in_band_error(s, err);

    /* TGI: one token an event; special tokens are not part of the text. */
    const cJSON *tok = cJSON_GetObjectItemCaseSensitive(j, "token");
    if (cJSON_IsObject(tok) && !cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(tok, "special")))
        u->text_bytes += str_bytes(tok, "text");
    else if (!cJSON_IsObject(tok) && u->text_bytes == 0)
        u->text_bytes += str_bytes(j, "generated_text");
    const cJSON *det = cJSON_GetObjectItemCaseSensitive(j, "details");
    int64_t v;
    if (cJSON_IsObject(det)) {
        if (tg_aws_json_count(det, "generated_tokens", &v) == 1) u->output = v, u->have_output = 1;
        if (tg_aws_json_count(det, "input_length", &v) == 1 ||
            tg_aws_json_count(det, "prompt_tokens", &v) == 1)
            u->input = v, u->have_input = 1;
    }

    /* OpenAI-style chunks, and their closing usage chunk. */
    u->text_bytes += choices_bytes(j);
    tally_t t = {0};
    if (openai_usage(j, &t)) {
        if (t.have_in) u->input = t.in, u->have_input = 1;
        if (t.have_out) u->output = t.out, u->have_output = 1;
    }
    cJSON_Delete(j);
}

static int on_sse(const tg_sse_event_t *ev, void *ud)
{
    stream_data(ud, ev->data, ev->data_len);
    return 0;
}

/* JSON Lines: whole lines lying in p are read in place; only a line cut by
 * the end of p is copied into s->line (bounded by max_event). */
static int feed_lines(tg_sm_stream_t *s, const char *p, size_t n)
{
    size_t max = s->sse.max_event;
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (s->line.len + take > max) return TG_ETOOBIG;
        if (!nl) return tg_buf_append(&s->line, p, take);
        if (s->line.len) {
            int rc = tg_buf_append(&s->line, p, take);
            if (rc) return rc;
            stream_data(s, s->line.data, s->line.len);
            tg_buf_reset(&s->line);
        } else {
            stream_data(s, p, take);
        }
        p += take + 1;
        n -= take + 1;
    }
    return 0;
}

int tg_sm_stream_feed(tg_sm_stream_t *s, const char *p, size_t n)
{
    if (s->err) return s->err;
    if (s->mode == MODE_UNDECIDED) {
        while (n && is_space(*p))
            p++, n--;
        if (n == 0) return 0;
        s->mode = *p == '{' || *p == '[' ? MODE_JSONL : MODE_SSE;
    }
    int rc = s->mode == MODE_JSONL ? feed_lines(s, p, n) : tg_sse_feed(&s->sse, p, n, on_sse, s);
    if (rc) s->err = rc;
    return rc;
}

size_t tg_sm_stream_finish(tg_sm_stream_t *s)
{
    if (s->err || s->mode != MODE_JSONL || s->line.len == 0) return tg_sm_stream_pending(s);
    cJSON *j = tg_aws_json_parse(s->line.data, s->line.len);
    if (!j) return s->line.len;
    cJSON_Delete(j);
    stream_data(s, s->line.data, s->line.len);
    tg_buf_reset(&s->line);
    return 0;
}

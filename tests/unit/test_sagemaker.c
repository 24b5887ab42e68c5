/* test_sagemaker.c - unit tests for the SageMaker runtime formats
 * (src/providers/sagemaker.c): paths, request bodies, counts from whole
 * answers, response streams and error mapping.
 *
 * A streamed answer is the container's own bytes cut into PayloadParts
 * anywhere; the stream tests cut realistic transcripts (TGI, OpenAI-style,
 * JSON Lines) at every byte position, carry the pieces in real event-stream
 * frames and require the same counts and text however they were cut. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "aws/eventstream.h"
#include "providers/bedrock.h"
#include "providers/sagemaker.h"

/* ---- operations and paths ---------------------------------------------- */

static void test_ops(void **state)
{
    tg_sm_op_t op;
    assert_string_equal(tg_sm_op_path(TG_SM_INVOKE), "invocations");
    assert_string_equal(tg_sm_op_path(TG_SM_INVOKE_STREAM), "invocations-response-stream");
    assert_string_equal(tg_sm_op_api(TG_SM_INVOKE), "sagemaker.invoke");
    assert_string_equal(tg_sm_op_api(TG_SM_INVOKE_STREAM), "sagemaker.invoke-stream");
    assert_null(tg_sm_op_path((tg_sm_op_t)2));
    assert_null(tg_sm_op_api((tg_sm_op_t)-1));
    const char *good[] = {"invocations", "sagemaker.invoke", "invocations-response-stream",
                          "sagemaker.invoke-stream"};
    for (size_t i = 0; i < 4; i++) {
        op = (tg_sm_op_t)-1;
        assert_int_equal(tg_sm_op_parse(good[i], strlen(good[i]), &op), 0);
        assert_int_equal(op, i < 2 ? TG_SM_INVOKE : TG_SM_INVOKE_STREAM);
    }
    const char *bad[] = {"", "invocation", "Invocations", "async-invocations", "sagemaker"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tg_sm_op_parse(bad[i], strlen(bad[i]), &op), TG_EINVAL);

    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_sm_path(&b, "hf-llm-mistral-7b", 17, TG_SM_INVOKE), 0);
    assert_string_equal(b.data, "/endpoints/hf-llm-mistral-7b/invocations");
    tg_buf_reset(&b);
    assert_int_equal(tg_sm_path(&b, "my endpoint/x:1", 15, TG_SM_INVOKE_STREAM), 0);
    assert_string_equal(b.data, "/endpoints/my%20endpoint%2Fx%3A1/invocations-response-stream");
    tg_buf_reset(&b);
    assert_int_equal(tg_sm_path(&b, "", 0, TG_SM_INVOKE), TG_EINVAL);
    assert_int_equal(tg_sm_path(&b, "e", 1, (tg_sm_op_t)7), TG_EINVAL);
    assert_int_equal(b.len, 0);
    tg_buf_free(&b);
    tg_buf_init(&b, 16);
    assert_int_equal(tg_sm_path(&b, "endpoint", 8, TG_SM_INVOKE), TG_ETOOBIG);
    assert_int_equal(b.len, 0);
    tg_buf_free(&b);
}

static void test_estimate(void **state)
{
    assert_int_equal(tg_estimate_tokens(0), 0);
    assert_int_equal(tg_estimate_tokens(-5), 0);
    assert_int_equal(tg_estimate_tokens(1), 1);
    assert_int_equal(tg_estimate_tokens(4), 1);
    assert_int_equal(tg_estimate_tokens(5), 2);
    assert_int_equal(tg_estimate_tokens(8), 2);
    assert_int_equal(tg_estimate_tokens(INT64_MAX), INT64_MAX / 4 + 1);
}

/* ---- request bodies ----------------------------------------------------- */

static cJSON *js(const char *s)
{
    cJSON *j = cJSON_Parse(s);
    assert_non_null(j);
    return j;
}

static void expect_body(const char *inputs, const char *params, int messages_api, int details,
                        const char *want, const char *want_component)
{
    cJSON *in = js(inputs), *pa = params ? js(params) : NULL;
    char *before = pa ? cJSON_PrintUnformatted(pa) : NULL;
    char comp[64] = "junk";
    tg_buf_t out;
    tg_buf_init(&out, 0);
    assert_int_equal(tg_buf_appends(&out, "old"), 0);
    assert_int_equal(tg_sm_build_body(&out, in, pa, messages_api, details, comp, sizeof(comp)), 0);
    assert_string_equal(out.data, want);
    assert_string_equal(comp, want_component);
    if (pa) { /* the caller's parameters are left as they were */
        char *after = cJSON_PrintUnformatted(pa);
        assert_string_equal(before, after);
        cJSON_free(after);
    }
    cJSON_free(before);
    tg_buf_free(&out);
    cJSON_Delete(in);
    cJSON_Delete(pa);
}

static void test_build_body(void **state)
{
    /* TGI: {"inputs", "parameters"}, details asked for, the component taken out. */
    expect_body("\"What is AI?\"",
                "{\"max_new_tokens\":50,\"InferenceComponentName\":\"ic-llama-1\",\"top_p\":0.5}",
                0, 1,
                "{\"inputs\":\"What is AI?\",\"parameters\":{\"max_new_tokens\":50,\"top_p\":0.5,"
                "\"details\":true}}",
                "ic-llama-1");
    expect_body("\"Hi\"", NULL, 0, 0, "{\"inputs\":\"Hi\",\"parameters\":{}}", "");
    expect_body("\"Hi\"", "null", 0, 1, "{\"inputs\":\"Hi\",\"parameters\":{\"details\":true}}",
                "");
    /* A details the caller set is overridden in its place. */
    expect_body("\"Hi\"", "{\"details\":false,\"x\":1}", 0, 1,
                "{\"inputs\":\"Hi\",\"parameters\":{\"details\":true,\"x\":1}}", "");
    expect_body("\"Hi\"", "{\"details\":false}", 0, 0,
                "{\"inputs\":\"Hi\",\"parameters\":{\"details\":false}}", "");
    /* A list of inputs is still TGI's shape. */
    expect_body("[\"a\",\"b\"]", "{}", 0, 0, "{\"inputs\":[\"a\",\"b\"],\"parameters\":{}}", "");

    /* TGI Messages API: {"messages": inputs, ...parameters}; details not added. */
    expect_body("[{\"role\":\"user\",\"content\":\"Hi\"}]",
                "{\"model\":\"placeholder-model\",\"InferenceComponentName\":\"c1\","
                "\"temperature\":0.5,\"stop\":[\"</s>\"]}",
                1, 1,
                "{\"messages\":[{\"role\":\"user\",\"content\":\"Hi\"}],\"model\":"
                "\"placeholder-model\",\"temperature\":0.5,\"stop\":[\"</s>\"]}",
                "c1");
    expect_body("[]", NULL, 1, 0, "{\"messages\":[]}", "");
    /* A "messages" parameter wins, as in {**a, **b}. */
    expect_body("[1]", "{\"messages\":[2]}", 1, 0, "{\"messages\":[2]}", "");

    /* JumpStart: {...inputs, ...parameters}, a parameter replacing in place. */
    expect_body("{\"text_inputs\":\"Hello\",\"mode\":\"embedding\"}",
                "{\"mode\":\"x\",\"k\":2,\"InferenceComponentName\":\"j-1\"}", 0, 1,
                "{\"text_inputs\":\"Hello\",\"mode\":\"x\",\"k\":2}", "j-1");
    expect_body("{\"text_inputs\":\"Hello\"}", NULL, 0, 0, "{\"text_inputs\":\"Hello\"}", "");
}

static void test_build_body_errors(void **state)
{
    char comp[8];
    tg_buf_t out;
    tg_buf_init(&out, 0);
    cJSON *in = js("\"x\"");
    assert_int_equal(tg_sm_build_body(&out, NULL, NULL, 0, 0, comp, sizeof(comp)), TG_EINVAL);
    const char *bad_params[] = {"[]", "1", "\"p\"", "true"};
    for (size_t i = 0; i < sizeof(bad_params) / sizeof(bad_params[0]); i++) {
        cJSON *p = js(bad_params[i]);
        assert_int_equal(tg_sm_build_body(&out, in, p, 0, 0, comp, sizeof(comp)), TG_EINVAL);
        cJSON_Delete(p);
    }
    /* Names that could not go into a header, or do not fit. */
    const char *bad_names[] = {
        "{\"InferenceComponentName\":7}",
        "{\"InferenceComponentName\":null}",
        "{\"InferenceComponentName\":\"\"}",
        "{\"InferenceComponentName\":\"a b\"}",
        "{\"InferenceComponentName\":\"-ab\"}",
        "{\"InferenceComponentName\":\"ab-\"}",
        "{\"InferenceComponentName\":\"a\\r\\nX-Evil: 1\"}",
        "{\"InferenceComponentName\":\"a_b\"}",
        "{\"InferenceComponentName\":\"abcdefgh\"}",
    };
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        cJSON *p = js(bad_names[i]);
        strcpy(comp, "junk");
        if (tg_sm_build_body(&out, in, p, 0, 0, comp, sizeof(comp)) != TG_EINVAL)
            fail_msg("accepted %s", bad_names[i]);
        assert_string_equal(comp, "");
        cJSON_Delete(p);
    }
    /* 63 bytes is the longest name; with no component buffer it is dropped. */
    char name[80], pj[128], big[64];
    memset(name, 'a', 63);
    name[63] = '\0';
    snprintf(pj, sizeof(pj), "{\"InferenceComponentName\":\"%s\"}", name);
    cJSON *p = js(pj);
    assert_int_equal(tg_sm_build_body(&out, in, p, 0, 0, big, sizeof(big)), 0);
    assert_string_equal(big, name);
    assert_int_equal(tg_sm_build_body(&out, in, p, 0, 0, NULL, 0), 0);
    assert_string_equal(out.data, "{\"inputs\":\"x\",\"parameters\":{}}");
    cJSON_Delete(p);
    name[63] = 'a';
    name[64] = '\0';
    snprintf(pj, sizeof(pj), "{\"InferenceComponentName\":\"%s\"}", name);
    p = js(pj);
    assert_int_equal(tg_sm_build_body(&out, in, p, 0, 0, NULL, 0), TG_EINVAL);
    cJSON_Delete(p);
    tg_buf_free(&out);
    /* Past out's maximum. */
    tg_buf_init(&out, 10);
    assert_int_equal(tg_sm_build_body(&out, in, NULL, 0, 0, NULL, 0), TG_ETOOBIG);
    assert_int_equal(out.len, 0);
    tg_buf_free(&out);
    cJSON_Delete(in);
}

/* ---- counts from whole answers ------------------------------------------ */

typedef struct {
    const char *body;
    int have_in, have_out;
    int64_t in, out, bytes;
} body_case_t;

static void test_usage_from_body(void **state)
{
    static const body_case_t t[] = {
        /* TGI's SageMaker route: a list, details with prefill (decoder_input_details) */
        {"[{\"generated_text\":\" Deep learning is\",\"details\":{\"finish_reason\":\"length\","
         "\"generated_tokens\":3,\"seed\":null,\"prefill\":[{\"id\":1,\"text\":\"<s>\",\"logprob\":"
         "null},{\"id\":1724,\"text\":\"What\",\"logprob\":-10.2},{\"id\":349,\"text\":\"?\","
         "\"logprob\":-1.1}],\"tokens\":[{\"id\":23,\"text\":\" "
         "Deep\",\"logprob\":-0.1,\"special\":"
         "false}]}}]",
         1, 1, 3, 3, 17},
        /* details without prefill: output only (an empty prefill says nothing) */
        {"[{\"generated_text\":\"abc\",\"details\":{\"finish_reason\":\"eos_token\","
         "\"generated_tokens\":2,\"seed\":42,\"prefill\":[],\"tokens\":[]}}]",
         0, 1, 0, 2, 3},
        /* without details */
        {"[{\"generated_text\":\"abc\"}]", 0, 0, 0, 0, 3},
        /* TGI's /generate: the object form; input_length when reported */
        {"{\"generated_text\":\"abcd\",\"details\":{\"generated_tokens\":2,\"input_length\":9}}", 1,
         1, 9, 2, 4},
        /* several results: summed */
        {"[{\"generated_text\":\"ab\",\"details\":{\"generated_tokens\":2,\"prefill\":[{},{}]}},"
         "{\"generated_text\":\"c\",\"details\":{\"generated_tokens\":5,\"prefill\":[{}]}}]",
         1, 1, 3, 7, 3},
        /* OpenAI-style (TGI Messages API, vLLM, LMI) */
        {"{\"id\":\"x\",\"object\":\"chat.completion\",\"choices\":[{\"index\":0,\"message\":{"
         "\"role\":\"assistant\",\"content\":\"Hello!\"},\"finish_reason\":\"stop\"}],\"usage\":{"
         "\"prompt_tokens\":10,\"completion_tokens\":2,\"total_tokens\":12}}",
         1, 1, 10, 2, 6},
        {"{\"choices\":[{\"message\":{\"content\":null,\"tool_calls\":[{\"function\":{\"name\":"
         "\"f\","
         "\"arguments\":\"{\\\"a\\\":1}\"}}]}}],\"usage\":{\"prompt_tokens\":4,"
         "\"completion_tokens\":8}}",
         1, 1, 4, 8, 7},
        {"{\"choices\":[{\"text\":\"abc\"}],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1}"
         "}",
         1, 1, 1, 1, 3},
        /* garbage counts are no counts, each on its own */
        {"{\"choices\":[],\"usage\":{\"prompt_tokens\":-1,\"completion_tokens\":2}}", 0, 1, 0, 2,
         0},
        {"{\"usage\":{\"prompt_tokens\":\"5\",\"completion_tokens\":2.5}}", 0, 0, 0, 0, 0},
        {"[{\"details\":{\"generated_tokens\":-3}}]", 0, 0, 0, 0, 0},
        /* a sum past 2^53 - 1 is no count */
        {"[{\"details\":{\"generated_tokens\":9007199254740991}},{\"details\":{"
         "\"generated_tokens\":1}}]",
         0, 0, 0, 0, 0},
        /* JumpStart: nothing counted */
        {"{\"embedding\":[0.1,0.2,0.3]}", 0, 0, 0, 0, 0},
        {"{\"generated_texts\":[\"a\",\"bc\"]}", 0, 0, 0, 0, 3},
        {"[[1,2],3,\"x\"]", 0, 0, 0, 0, 0},
        {"\"just a string\"", 0, 0, 0, 0, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        tg_sm_usage_t u;
        memset(&u, 0x44, sizeof(u));
        assert_int_equal(tg_sm_usage_from_body(t[i].body, strlen(t[i].body), &u), 0);
        if (u.have_input != t[i].have_in || u.have_output != t[i].have_out || u.input != t[i].in ||
            u.output != t[i].out || u.text_bytes != t[i].bytes)
            fail_msg("%s: in %d/%lld out %d/%lld bytes %lld", t[i].body, u.have_input,
                     (long long)u.input, u.have_output, (long long)u.output,
                     (long long)u.text_bytes);
    }
    const char *notjson[] = {"", "[", "{\"generated_text\":\"x\"}]", "<html>", "{} {}"};
    for (size_t i = 0; i < sizeof(notjson) / sizeof(notjson[0]); i++) {
        tg_sm_usage_t u;
        memset(&u, 0x44, sizeof(u));
        assert_int_equal(tg_sm_usage_from_body(notjson[i], strlen(notjson[i]), &u), TG_EINVAL);
        assert_int_equal(u.text_bytes, 0);
        assert_int_equal(u.have_input, 0);
        assert_int_equal(u.have_output, 0);
    }
}

/* ---- response streams ---------------------------------------------------- */

/* TGI's generate_stream as SageMaker relays it: "data:" without a space,
 * multi-byte characters, a special token, details on the last event. */
static const char tgi_sse[] =
    "data:{\"index\":1,\"token\":{\"id\":14,\"text\":\" "
    "Deep\",\"logprob\":-0.52,\"special\":false},"
    "\"generated_text\":null,\"details\":null}\n\n"
    "data:{\"index\":2,\"token\":{\"id\":15,\"text\":\" learning \xc3\xa9\",\"logprob\":-0.1,"
    "\"special\":false},\"generated_text\":null,\"details\":null}\n\n"
    "data:{\"index\":3,\"token\":{\"id\":16,\"text\":\" \xe6\x97\xa5\xe6\x9c\xac\xf0\x9f\x98\x80\","
    "\"logprob\":-0.3,\"special\":false},\"generated_text\":null,\"details\":null}\n\n"
    "data:{\"index\":4,\"token\":{\"id\":2,\"text\":\"</s>\",\"logprob\":-0.01,\"special\":true},"
    "\"generated_text\":\" Deep learning \xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\xf0\x9f\x98\x80\","
    "\"details\":{\"finish_reason\":\"eos_token\",\"generated_tokens\":4,\"seed\":null,"
    "\"input_length\":7}}\n\n";

/* TGI Messages API / vLLM: OpenAI chunks, a usage chunk, [DONE]; CRLF. */
static const char openai_sse[] =
    "data: {\"id\":\"\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hel\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n"
    ": keep-alive\r\n\r\n"
    "data: {\"id\":\"\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"lo \xe2\x9c\x93\"},"
    "\"logprobs\":null,\"finish_reason\":null}],\"usage\":null}\r\n\r\n"
    "data: {\"id\":\"\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{"
    "\"arguments\":\"{}\"}}]},\"finish_reason\":\"stop\"}],\"usage\":null}\r\n\r\n"
    "data: {\"id\":\"\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\","
    "\"choices\":[],\"usage\":{\"prompt_tokens\":11,\"completion_tokens\":3,\"total_tokens\":14}}"
    "\r\n\r\n"
    "data: [DONE]\r\n\r\n";

/* LMI (DJL Serving) default streaming: JSON Lines in TGI's shape. */
static const char lmi_jsonl[] =
    "{\"token\": {\"id\": [5], \"text\": \"Hi\", \"log_prob\": -0.1}}\n"
    "{\"token\": {\"id\": [6], \"text\": \" th\xc3\xa9re\", \"log_prob\": -0.2}}\r\n"
    "\n"
    "{\"token\": {\"id\": [7], \"text\": \"!\", \"log_prob\": -0.2}, \"generated_text\": "
    "\"Hi th\xc3\xa9re!\", \"details\": {\"finish_reason\": \"eos_token\", \"generated_tokens\": "
    "3, "
    "\"inputs\": \"Say hi\"}}\n";

typedef struct {
    int64_t bytes, in, out, events;
    int have_in, have_out, done;
} want_t;

static const want_t tgi_want = {
    .bytes = 5 + 12 + 11, .in = 7, .out = 4, .events = 4, .have_in = 1, .have_out = 1};
static const want_t openai_want = {
    .bytes = 3 + 6 + 2, .in = 11, .out = 3, .events = 5, .have_in = 1, .have_out = 1, .done = 1};
static const want_t lmi_want = {.bytes = 2 + 7 + 1, .out = 3, .events = 3, .have_out = 1};

typedef struct {
    tg_sm_stream_t *s;
    int rc;
} pump_t;

static int on_frame(const tg_es_message_t *m, void *ud)
{
    pump_t *p = ud;
    const char *payload;
    size_t len;
    int status;
    char code[64], msg[128];
    assert_int_equal(
        tg_sm_stream_message(m, &payload, &len, &status, code, sizeof(code), msg, sizeof(msg)), 0);
    p->rc = tg_sm_stream_feed(p->s, payload, len);
    return p->rc;
}

/* Carries str cut at cuts[] in PayloadPart frames through the decoder into
 * a stream reader, and checks the result. */
static void run_cuts(const char *str, size_t len, const size_t *cuts, size_t ncuts, const want_t *w)
{
    tg_buf_t frames;
    tg_buf_init(&frames, 0);
    size_t at = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        assert_int_equal(tg_es_encode_event(&frames, "PayloadPart", NULL, str + at, end - at), 0);
        at = end;
    }
    tg_sm_stream_t s;
    tg_sm_stream_init(&s, 4096);
    pump_t p = {&s, 0};
    tg_es_decoder_t d;
    tg_es_decoder_init(&d, 0, on_frame, &p);
    assert_int_equal(tg_es_decoder_feed(&d, frames.data, frames.len), 0);
    assert_true(tg_es_decoder_idle(&d));
    assert_int_equal(tg_sm_stream_finish(&s), 0);
    if (s.usage.text_bytes != w->bytes || s.usage.input != w->in || s.usage.output != w->out ||
        s.usage.have_input != w->have_in || s.usage.have_output != w->have_out ||
        s.events != w->events || s.done != w->done)
        fail_msg("cut at %zu (%zu cuts): bytes %lld in %lld out %lld events %lld done %d",
                 ncuts ? cuts[0] : 0, ncuts, (long long)s.usage.text_bytes,
                 (long long)s.usage.input, (long long)s.usage.output, (long long)s.events, s.done);
    assert_string_equal(s.error, "");
    tg_es_decoder_free(&d);
    tg_sm_stream_free(&s);
    tg_buf_free(&frames);
}

static void split_everywhere(const char *str, size_t len, const want_t *w)
{
    run_cuts(str, len, NULL, 0, w);
    for (size_t i = 0; i <= len; i++)
        run_cuts(str, len, &i, 1, w);
    for (size_t i = 1; i < len; i += 5) {
        for (size_t j = i; j < len; j += 7) {
            size_t cuts[2] = {i, j};
            run_cuts(str, len, cuts, 2, w);
        }
    }
    /* One byte a part: every character split. */
    size_t *cuts = malloc(len * sizeof(size_t));
    assert_non_null(cuts);
    for (size_t i = 0; i < len; i++)
        cuts[i] = i + 1;
    run_cuts(str, len, cuts, len - 1, w);
    free(cuts);
}

static void test_stream_tgi(void **state)
{
    split_everywhere(tgi_sse, sizeof(tgi_sse) - 1, &tgi_want);
}

static void test_stream_openai(void **state)
{
    split_everywhere(openai_sse, sizeof(openai_sse) - 1, &openai_want);
}

static void test_stream_jsonl(void **state)
{
    split_everywhere(lmi_jsonl, sizeof(lmi_jsonl) - 1, &lmi_want);
    /* A last line without its newline is read at the finish. */
    tg_sm_stream_t s;
    tg_sm_stream_init(&s, 4096);
    const char *last = "{\"token\":{\"text\":\"ab\"},\"details\":{\"generated_tokens\":1}}";
    assert_int_equal(tg_sm_stream_feed(&s, "\n  ", 3), 0);
    assert_int_equal(tg_sm_stream_feed(&s, last, strlen(last)), 0);
    assert_int_equal(tg_sm_stream_pending(&s), strlen(last));
    assert_int_equal(s.usage.have_output, 0);
    assert_int_equal(tg_sm_stream_finish(&s), 0);
    assert_int_equal(s.usage.have_output, 1);
    assert_int_equal(s.usage.text_bytes, 2);
    tg_sm_stream_free(&s);
    /* A cut-short line stays held: the stream ended early. */
    tg_sm_stream_init(&s, 4096);
    assert_int_equal(tg_sm_stream_feed(&s, last, 10), 0);
    assert_int_equal(tg_sm_stream_finish(&s), 10);
    tg_sm_stream_free(&s);
}

static void test_stream_details_variants(void **state)
{
    tg_sm_stream_t s;
    /* Old TGI: no input_length; without details at all: no counts. */
    const char *old = "data:{\"token\":{\"text\":\"a\",\"special\":false},\"generated_text\":\"a\","
                      "\"details\":{\"finish_reason\":\"length\",\"generated_tokens\":1,\"seed\":"
                      "null}}\n\n";
    tg_sm_stream_init(&s, 0);
    assert_int_equal(tg_sm_stream_feed(&s, old, strlen(old)), 0);
    assert_int_equal(s.usage.have_output, 1);
    assert_int_equal(s.usage.have_input, 0);
    assert_int_equal(s.usage.text_bytes, 1);
    tg_sm_stream_free(&s);
    const char *nodet = "data:{\"token\":{\"text\":\"ab\",\"special\":false},\"generated_text\":"
                        "\"ab\",\"details\":null}\n\n";
    tg_sm_stream_init(&s, 0);
    assert_int_equal(tg_sm_stream_feed(&s, nodet, strlen(nodet)), 0);
    assert_int_equal(s.usage.have_output, 0);
    assert_int_equal(s.usage.text_bytes, 2);
    tg_sm_stream_free(&s);
    /* A fork's prompt_tokens; garbage counts ignored. */
    const char *fork = "data:{\"token\":{\"text\":\"\"},\"details\":{\"prompt_tokens\":5,"
                       "\"generated_tokens\":\"9\"}}\n\n";
    tg_sm_stream_init(&s, 0);
    assert_int_equal(tg_sm_stream_feed(&s, fork, strlen(fork)), 0);
    assert_int_equal(s.usage.have_input, 1);
    assert_int_equal(s.usage.input, 5);
    assert_int_equal(s.usage.have_output, 0);
    tg_sm_stream_free(&s);
    /* Data that is not JSON is counted and otherwise ignored. */
    const char *odd = "event: ping\ndata: hello\n\ndata: [1,2]\n\n";
    tg_sm_stream_init(&s, 0);
    assert_int_equal(tg_sm_stream_feed(&s, odd, strlen(odd)), 0);
    assert_int_equal(s.events, 2);
    assert_int_equal(s.usage.text_bytes, 0);
    tg_sm_stream_free(&s);
}

/* A whole JSON answer that merely spans lines is no stream of events. */
static void test_stream_whole_json(void **state)
{
    tg_sm_stream_t s;
    const char *pretty = "{\n  \"generated_text\": \"abc\",\n  \"details\": null\n}\n";
    tg_sm_stream_init(&s, 0);
    assert_int_equal(tg_sm_stream_feed(&s, pretty, strlen(pretty)), 0);
    assert_int_equal(s.events, 0);
    assert_int_equal(s.usage.text_bytes, 0);
    assert_int_equal(tg_sm_stream_finish(&s), 0);
    tg_sm_stream_free(&s);
    /* Sent as one line without a newline: held, then read at the finish. */
    const char *flat = "[{\"generated_text\":\"abcd\",\"details\":{\"generated_tokens\":2}},"
                       "{\"generated_text\":\"ef\",\"details\":{\"generated_tokens\":1}}]";
    tg_sm_stream_init(&s, 0);
    assert_int_equal(tg_sm_stream_feed(&s, flat, strlen(flat)), 0);
    assert_int_equal(s.events, 0);
    assert_int_equal(tg_sm_stream_finish(&s), 0);
    assert_int_equal(s.events, 1);
    assert_int_equal(s.usage.text_bytes, 6);
    assert_int_equal(s.usage.have_output, 1);
    assert_int_equal(s.usage.output, 3);
    tg_sm_stream_free(&s);
}

static void test_stream_in_band_error(void **state)
{
    tg_sm_stream_t s;
    const char *tgi =
        "data:{\"token\":{\"text\":\"a\"}}\n\ndata:{\"error\":\"Request failed during "
        "generation: Server error: CUDA out of memory\\n\",\"error_type\":"
        "\"generation\"}\n\n";
    tg_sm_stream_init(&s, 0);
    assert_int_equal(tg_sm_stream_feed(&s, tgi, strlen(tgi)), 0);
    assert_string_equal(s.error,
                        "Request failed during generation: Server error: CUDA out of memory");
    assert_int_equal(s.usage.text_bytes, 1);
    tg_sm_stream_free(&s);
    const char *oai = "data: {\"error\":{\"message\":\"bad \\u001b request\",\"type\":\"x\"}}\n\n";
    tg_sm_stream_init(&s, 0);
    assert_int_equal(tg_sm_stream_feed(&s, oai, strlen(oai)), 0);
    assert_string_equal(s.error, "bad  request");
    tg_sm_stream_free(&s);
    const char *odd = "data: {\"error\":{\"code\":3}}\n\n";
    tg_sm_stream_init(&s, 0);
    assert_int_equal(tg_sm_stream_feed(&s, odd, strlen(odd)), 0);
    assert_string_equal(s.error, "error");
    tg_sm_stream_free(&s);
}

static void test_stream_bounds(void **state)
{
    tg_sm_stream_t s;
    char big[300];
    /* SSE: an event past max_event fails, and stays failed. */
    snprintf(big, sizeof(big), "data:{\"token\":{\"text\":\"%0200d\"}}\n\n", 0);
    tg_sm_stream_init(&s, 128);
    assert_int_equal(tg_sm_stream_feed(&s, "data:{}\n\n", 9), 0);
    assert_int_equal(tg_sm_stream_feed(&s, big, 100), 0); /* held so far */
    assert_int_equal(tg_sm_stream_feed(&s, big + 100, strlen(big) - 100), TG_ETOOBIG);
    assert_int_equal(tg_sm_stream_feed(&s, "data:{}\n\n", 9), TG_ETOOBIG);
    assert_int_equal(s.events, 1);
    tg_sm_stream_free(&s);
    tg_sm_stream_init(&s, 128);
    assert_int_equal(tg_sm_stream_feed(&s, big, strlen(big)), TG_ETOOBIG);
    tg_sm_stream_free(&s);
    /* An event of exactly max_event bytes is fine. */
    tg_sm_stream_init(&s, strlen(big));
    assert_int_equal(tg_sm_stream_feed(&s, big, strlen(big)), 0);
    assert_int_equal(s.usage.text_bytes, 200);
    tg_sm_stream_free(&s);

    /* JSON Lines: a line past the bound, whole or arriving in pieces. */
    snprintf(big, sizeof(big), "{\"token\":{\"text\":\"%0200d\"}}\n", 0);
    tg_sm_stream_init(&s, 128);
    assert_int_equal(tg_sm_stream_feed(&s, big, strlen(big)), TG_ETOOBIG);
    assert_int_equal(tg_sm_stream_feed(&s, "{}\n", 3), TG_ETOOBIG);
    tg_sm_stream_free(&s);
    tg_sm_stream_init(&s, 128);
    for (size_t i = 0; i < 100; i++)
        assert_int_equal(tg_sm_stream_feed(&s, big + i, 1), 0);
    assert_int_equal(tg_sm_stream_pending(&s), 100);
    assert_int_equal(tg_sm_stream_feed(&s, big + 100, 40), TG_ETOOBIG);
    tg_sm_stream_free(&s);
    tg_sm_stream_init(&s, strlen(big) - 1); /* the newline does not count */
    assert_int_equal(tg_sm_stream_feed(&s, big, strlen(big)), 0);
    assert_int_equal(s.usage.text_bytes, 200);
    assert_int_equal(tg_sm_stream_pending(&s), 0);
    tg_sm_stream_free(&s);
}

/* ---- event-stream messages and errors ----------------------------------- */

static void decode(tg_buf_t *b, tg_es_message_t *m)
{
    assert_int_equal(tg_es_decode_one(b->data, b->len, m, NULL, 0), 0);
}

static void test_stream_message(void **state)
{
    tg_buf_t b;
    tg_es_message_t m;
    const char *payload;
    size_t len;
    int status;
    char code[64], msg[64];

    tg_buf_init(&b, 0);
    assert_int_equal(tg_es_encode_event(&b, "PayloadPart", NULL, "data:{}\n", 8), 0);
    decode(&b, &m);
    assert_int_equal(
        tg_sm_stream_message(&m, &payload, &len, &status, code, sizeof(code), msg, sizeof(msg)), 0);
    assert_ptr_equal(payload, m.payload);
    assert_int_equal(len, 8);
    assert_int_equal(status, 0);
    tg_buf_free(&b);

    /* An event of another type: nothing to feed. */
    tg_buf_init(&b, 0);
    assert_int_equal(tg_es_encode_event(&b, "SomethingNew", NULL, "xyz", 3), 0);
    decode(&b, &m);
    assert_int_equal(tg_sm_stream_message(&m, &payload, &len, &status, NULL, 0, NULL, 0), 0);
    assert_int_equal(len, 0);
    tg_buf_free(&b);

    static const struct {
        const char *type, *payload, *msg;
        int status;
    } ex[] = {
        {"ModelStreamError",
         "{\"Message\":\"Your model raised an exception\\u0000!\",\"ErrorCode\":\"ModelError\"}",
         "Your model raised an exception", 424},
        {"InternalStreamFailure", "{\"Message\":\"internal\\r\\nfailure\"}", "internalfailure",
         500},
        {"ModelStreamError", "not json", "", 424},
        {"SomethingElse", "{\"message\":\"m\"}", "m", 502},
    };
    for (size_t i = 0; i < sizeof(ex) / sizeof(ex[0]); i++) {
        tg_buf_init(&b, 0);
        assert_int_equal(
            tg_es_encode_exception(&b, ex[i].type, ex[i].payload, strlen(ex[i].payload)), 0);
        decode(&b, &m);
        assert_int_equal(
            tg_sm_stream_message(&m, &payload, &len, &status, code, sizeof(code), msg, sizeof(msg)),
            1);
        assert_int_equal(status, ex[i].status);
        assert_string_equal(code, ex[i].type);
        assert_string_equal(msg, ex[i].msg);
        assert_int_equal(len, 0);
        tg_buf_free(&b);
    }

    /* :message-type error. */
    tg_es_header_t h[3] = {
        {":message-type", 13, TG_ES_STRING, 0, "error", 5},
        {":error-code", 11, TG_ES_STRING, 0, "ThrottlingException", 19},
        {":error-message", 14, TG_ES_STRING, 0, "Rate exceeded", 13},
    };
    tg_buf_init(&b, 0);
    assert_int_equal(tg_es_encode(&b, h, 3, NULL, 0), 0);
    decode(&b, &m);
    assert_int_equal(
        tg_sm_stream_message(&m, &payload, &len, &status, code, sizeof(code), msg, sizeof(msg)), 1);
    assert_int_equal(status, 429);
    assert_string_equal(code, "ThrottlingException");
    assert_string_equal(msg, "Rate exceeded");
    tg_buf_free(&b);

    /* Malformed: no type headers; an exception or error without its name; an
     * unknown message type. */
    tg_es_header_t exc = {":message-type", 13, TG_ES_STRING, 0, "exception", 9};
    tg_es_header_t odd = {":message-type", 13, TG_ES_STRING, 0, "surprise", 8};
    const tg_es_header_t *sets[] = {NULL, h, &exc, &odd};
    size_t nsets[] = {0, 1, 1, 1};
    for (size_t i = 0; i < 4; i++) {
        tg_buf_init(&b, 0);
        assert_int_equal(tg_es_encode(&b, sets[i], nsets[i], "{}", 2), 0);
        decode(&b, &m);
        assert_int_equal(
            tg_sm_stream_message(&m, &payload, &len, &status, code, sizeof(code), msg, sizeof(msg)),
            TG_EPROTO);
        tg_buf_free(&b);
    }
}

static void test_error_status(void **state)
{
    static const struct {
        const char *name;
        int status;
    } t[] = {
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
    char code[64], in[160];
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        assert_int_equal(tg_sm_error_status(t[i].name, strlen(t[i].name), 0, code, sizeof(code)),
                         t[i].status);
        assert_string_equal(code, t[i].name);
        snprintf(in, sizeof(in), "%s:http://internal.amazon.com/coral/com.amazon.sagemaker/",
                 t[i].name);
        assert_int_equal(tg_sm_error_status(in, strlen(in), 200, code, sizeof(code)), t[i].status);
        assert_string_equal(code, t[i].name);
        for (char *p = in; *p; p++)
            if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
        assert_int_equal(tg_sm_error_status(in, strlen(in), 0, NULL, 0), t[i].status);
    }
    assert_int_equal(tg_sm_error_status("ValidationException", 19, 0, code, 64), 502);
    assert_int_equal(tg_sm_error_status("AccessDeniedException", 21, 403, code, 64), 403);
    assert_int_equal(tg_sm_error_status("Unknown", 7, 302, code, 64), 502);
    assert_string_equal(code, "Unknown");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops),
        cmocka_unit_test(test_estimate),
        cmocka_unit_test(test_build_body),
        cmocka_unit_test(test_build_body_errors),
        cmocka_unit_test(test_usage_from_body),
        cmocka_unit_test(test_stream_tgi),
        cmocka_unit_test(test_stream_openai),
        cmocka_unit_test(test_stream_jsonl),
        cmocka_unit_test(test_stream_details_variants),
        cmocka_unit_test(test_stream_whole_json),
        cmocka_unit_test(test_stream_in_band_error),
        cmocka_unit_test(test_stream_bounds),
        cmocka_unit_test(test_stream_message),
        cmocka_unit_test(test_error_status),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

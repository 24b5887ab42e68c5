/* test_refapi.c - unit tests for the reference gateway's formats
 * (src/providers/refapi.c): the upstream body built for every mode and model
 * family, the notebook requests of seed-study 1.3, answers in AWS's
 * documented shapes turned into the reference's arrays, counts from headers
 * and bodies, and streams fed event by event.
 *
 * JSON in this file is written with ' for " (see q()), and bodies are
 * compared as printed by cJSON, so key order counts: the reference built its
 * bodies as Python dicts, whose order the wire shows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "providers/bedrock.h"
#include "providers/refapi.h"
#include "providers/sagemaker.h"

#include "jsonq.h"

/* ---- helpers ------------------------------------------------------------ */

/* Builds body for the target; the caller's JSON must come back unchanged. */
static int build(tg_ref_mode_t mode, const char *model, int stream, int sm, const char *body,
                 tg_ref_call_t *c, char *err, size_t errcap)
{
    cJSON *b = jq(body);
    char *before = cJSON_PrintUnformatted(b);
    tg_ref_target_t t = {.mode = mode, .stream = stream, .sagemaker = sm, .model_id = model};
    int rc = tg_ref_build(&t, b, c, err, errcap);
    char *after = cJSON_PrintUnformatted(b);
    assert_string_equal(before, after);
    free(before);
    free(after);
    cJSON_Delete(b);
    return rc;
}

static void expect_body(tg_ref_mode_t mode, const char *model, int stream, int sm, const char *body,
                        const char *want, int op, tg_ref_out_t out, tg_ref_call_t *c)
{
    char err[256] = "junk";
    assert_int_equal(build(mode, model, stream, sm, body, c, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_json(c->body, c->body_len, want);
    assert_int_equal(c->op, op);
    assert_int_equal(c->out, out);
}

static void expect_fail(tg_ref_mode_t mode, const char *model, int stream, int sm, const char *body,
                        const char *msg)
{
    char err[256] = "";
    tg_ref_call_t c;
    assert_int_equal(build(mode, model, stream, sm, body, &c, err, sizeof(err)), TG_EINVAL);
    assert_string_equal(err, msg);
    assert_null(c.body);
    tg_ref_call_free(&c);
}

static tg_header_t hdr(const char *name, const char *value)
{
    return (tg_header_t){name, strlen(name), value, strlen(value)};
}

/* Parses answer (in the q() notation) as the call c says, expecting want. */
static void expect_parse(const tg_ref_call_t *c, const char *answer, const tg_header_t *h,
                         size_t nh, const char *want, tg_ref_usage_t *u)
{
    char *a = q(answer), *out = NULL, err[128] = "junk";
    size_t out_len = 0;
    assert_int_equal(tg_ref_parse(c, a, strlen(a), h, nh, u, &out, &out_len, err, sizeof(err)), 0);
    assert_string_equal(err, "");
    assert_json(out, out_len, want);
    free(out);
    free(a);
}

static void expect_parse_fail(const tg_ref_call_t *c, const char *answer, const char *msg)
{
    char *a = q(answer), *out = (char *)"x", err[128] = "";
    size_t out_len = 9;
    tg_ref_usage_t u;
    assert_int_equal(tg_ref_parse(c, a, strlen(a), NULL, 0, &u, &out, &out_len, err, sizeof(err)),
                     TG_EUPSTREAM);
    assert_string_equal(err, msg);
    assert_null(out);
    assert_int_equal(out_len, 0);
    free(a);
}

static tg_ref_call_t call_for(tg_ref_out_t out)
{
    tg_ref_call_t c;
    memset(&c, 0, sizeof(c));
    c.out = out;
    return c;
}

static void b64(tg_buf_t *out, const char *s, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t x = (uint32_t)p[i] << 16;
        if (i + 1 < n) x |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) x |= p[i + 2];
        char c4[4] = {a[x >> 18 & 63], a[x >> 12 & 63], i + 1 < n ? a[x >> 6 & 63] : '=',
                      i + 2 < n ? a[x & 63] : '='};
        assert_int_equal(tg_buf_append(out, c4, 4), 0);
    }
}

/* Feeds one event; returns its text delta (static, overwritten). */
static const char *feed(tg_ref_stream_t *s, const char *type, const char *payload, int want_rc)
{
    static char d[512];
    const char *delta = NULL;
    size_t n = 99;
    assert_int_equal(tg_ref_stream_feed(s, type, payload, strlen(payload), &delta, &n), want_rc);
    assert_non_null(delta);
    assert_true(n < sizeof(d));
    memcpy(d, delta, n);
    d[n] = '\0';
    return d;
}

/* An InvokeModelWithResponseStream chunk: {"bytes": base64(model JSON)}. */
static const char *feed_chunk(tg_ref_stream_t *s, const char *model_json)
{
    char *j = q(model_json);
    tg_buf_t p;
    tg_buf_init(&p, 0);
    assert_int_equal(tg_buf_appends(&p, "{\"bytes\":\""), 0);
    b64(&p, j, strlen(j));
    assert_int_equal(tg_buf_appends(&p, "\",\"p\":\"abcdefghij\"}"), 0);
    const char *d = feed(s, "chunk", p.data, 0);
    tg_buf_free(&p);
    free(j);
    return d;
}

static const char *feed_q(tg_ref_stream_t *s, const char *type, const char *payload)
{
    char *p = q(payload);
    const char *d = feed(s, type, p, 0);
    free(p);
    return d;
}

static void expect_finish(tg_ref_stream_t *s, const char *want, tg_ref_usage_t *u)
{
    char *out = NULL;
    size_t n = 0;
    assert_int_equal(tg_ref_stream_finish(s, u, &out, &n), 0);
    assert_json(out, n, want);
    free(out);
}

/* ---- Bedrock Converse (messages_api) ------------------------------------- */

#define SONNET "anthropic.claude-3-sonnet-20240229-v1:0"

static void test_notebook_converse_system(void **state)
{
    tg_ref_call_t c;
    const char *body =
        "{'inputs': [{'role':'user','content':[{'text':'What is Amazon Bedrock?'}]}],"
        " 'parameters': {'maxTokens':4096,'temperature':0.2,'topP':0.9,"
        "'stopSequences':['\\n\\nHuman:'],"
        "'system':'Always translate the answer in Italian'}}";
    const char *want =
        "{'messages':[{'role':'user','content':[{'text':'What is Amazon Bedrock?'}]}],"
        "'system':[{'text':'Always translate the answer in Italian'}],"
        "'inferenceConfig':{'maxTokens':4096,'temperature':0.2,'topP':0.9,"
        "'stopSequences':['\\n\\nHuman:']}}";
    expect_body(TG_REF_MESSAGES, SONNET, 0, 0, body, want, TG_BR_CONVERSE, TG_REF_OUT_CONVERSE, &c);
    assert_int_equal(c.max_output, 4096);
    assert_int_equal(c.input_bytes, 23 + 38);
    assert_int_equal(c.images, 0);
    tg_ref_call_free(&c);
    assert_null(c.body);
    tg_ref_call_free(&c); /* twice is harmless */

    /* Streaming: ConverseStream, the same body. */
    expect_body(TG_REF_MESSAGES, SONNET, 1, 0, body, want, TG_BR_CONVERSE_STREAM,
                TG_REF_OUT_CONVERSE, &c);
    tg_ref_call_free(&c);

    /* Without system or parameters: only the messages. */
    expect_body(TG_REF_MESSAGES, "amazon.titan-text-express-v1", 0, 0,
                "{'inputs':[{'role':'user','content':[{'text':'Hi'}]}]}",
                "{'messages':[{'role':'user','content':[{'text':'Hi'}]}]}", TG_BR_CONVERSE,
                TG_REF_OUT_CONVERSE, &c);
    assert_int_equal(c.max_output, 0);
    assert_int_equal(c.input_bytes, 2);
    tg_ref_call_free(&c);
    /* A cross-region profile with streaming, as notebook 01 section 8. */
    expect_body(TG_REF_MESSAGES, "us.anthropic.claude-3-5-sonnet-20240620-v1:0", 1, 0,
                "{'inputs':[{'role':'user','content':[{'text':'Hi'}]}],'parameters':null,"
                "'additional_model_fields':{'top_k':200}}",
                "{'messages':[{'role':'user','content':[{'text':'Hi'}]}],"
                "'additionalModelRequestFields':{'top_k':200}}",
                TG_BR_CONVERSE_STREAM, TG_REF_OUT_CONVERSE, &c);
    tg_ref_call_free(&c);
}

static void test_notebook_converse_multimodal(void **state)
{
    tg_ref_call_t c;
    /* Image and document blocks go as they are: the HTTP API takes base64. */
    const char *msgs = "[{'role':'user','content':["
                       "{'image':{'format':'webp','source':{'bytes':'iVBORw0KGgoAAAANSUhEUg=='}}},"
                       "{'document':{'format':'pdf','name':'doc1','source':{'bytes':'JVBERi0x'}}},"
                       "{'text':'Describe both'}]}]";
    char body[1024], want[1024];
    snprintf(body, sizeof(body), "{'inputs':%s,'parameters':{'maxTokens':512}}", msgs);
    snprintf(want, sizeof(want), "{'messages':%s,'inferenceConfig':{'maxTokens':512}}", msgs);
    expect_body(TG_REF_MESSAGES, SONNET, 0, 0, body, want, TG_BR_CONVERSE, TG_REF_OUT_CONVERSE, &c);
    assert_int_equal(c.input_bytes, 13);
    assert_int_equal(c.max_output, 512);
    tg_ref_call_free(&c);
}

#define TOOLS                                                                                      \
    "{'tools':[{'toolSpec':{'name':'get_weather','description':'Get weather of a location.',"      \
    "'inputSchema':{'json':{'type':'object','properties':{'city':{'type':'string',"                \
    "'description':'The city'},'state':{'type':'string','description':'The state'}},"              \
    "'required':['city','state']}}}}]}"

static void test_notebook_converse_tools(void **state)
{
    tg_ref_call_t c;
    const char *body = "{'inputs':[{'role':'user','content':[{'text':'Weather in Seattle?'}]}],"
                       "'parameters':{'maxTokens':1024},'tool_config':" TOOLS "}";
    const char *want = "{'messages':[{'role':'user','content':[{'text':'Weather in Seattle?'}]}],"
                       "'inferenceConfig':{'maxTokens':1024},'toolConfig':" TOOLS "}";
    expect_body(TG_REF_MESSAGES, SONNET, 0, 0, body, want, TG_BR_CONVERSE, TG_REF_OUT_CONVERSE, &c);
    tg_ref_call_free(&c);
    /* The reference dropped tools when streaming; they are kept. */
    expect_body(TG_REF_MESSAGES, SONNET, 1, 0, body, want, TG_BR_CONVERSE_STREAM,
                TG_REF_OUT_CONVERSE, &c);
    tg_ref_call_free(&c);

    /* The follow-up turn: the returned toolUse list as the assistant's
     * content, then the toolResult. */
    const char *turns =
        "[{'role':'user','content':[{'text':'Weather in Seattle?'}]},"
        "{'role':'assistant','content':[{'toolUse':{'toolUseId':'tooluse_kZJMlvQmRJ6eAyJE5GIl7Q',"
        "'name':'get_weather','input':{'city':'Seattle','state':'WA'}}}]},"
        "{'role':'user','content':[{'toolResult':{'toolUseId':'tooluse_kZJMlvQmRJ6eAyJE5GIl7Q',"
        "'content':[{'text':'Sunny, 21 C'}],'status':'success'}}]}]";
    char b2[2048], w2[2048];
    snprintf(b2, sizeof(b2), "{'inputs':%s,'parameters':{'maxTokens':1024},'tool_config':%s}",
             turns, TOOLS);
    snprintf(w2, sizeof(w2), "{'messages':%s,'inferenceConfig':{'maxTokens':1024},'toolConfig':%s}",
             turns, TOOLS);
    expect_body(TG_REF_MESSAGES, SONNET, 0, 0, b2, w2, TG_BR_CONVERSE, TG_REF_OUT_CONVERSE, &c);
    assert_int_equal(c.input_bytes, 19 + 11);
    tg_ref_call_free(&c);

    /* An empty tool_config is left out, as the reference did. */
    expect_body(TG_REF_MESSAGES, SONNET, 0, 0,
                "{'inputs':[{'role':'user','content':[{'text':'x'}]}],'tool_config':{}}",
                "{'messages':[{'role':'user','content':[{'text':'x'}]}]}", TG_BR_CONVERSE,
                TG_REF_OUT_CONVERSE, &c);
    tg_ref_call_free(&c);
}

static void test_converse_bad(void **state)
{
    const char *model = SONNET;
    expect_fail(TG_REF_MESSAGES, model, 0, 0,
                "{'inputs':[{'role':'user','content':[{'text':'x'}]}],"
                "'parameters':{'maxTokens':10,'top_k':5}}",
                "parameters.top_k is not a Converse inference parameter (use "
                "additional_model_fields)");
    expect_fail(TG_REF_MESSAGES, model, 0, 0, "{'inputs':'What is Amazon Bedrock?'}",
                "inputs must be a list of messages");
    expect_fail(TG_REF_MESSAGES, model, 0, 0, "{'inputs':[],'parameters':{'system':{'text':'x'}}}",
                "parameters.system must be a string");
    expect_fail(TG_REF_MESSAGES, model, 0, 0, "{'inputs':[],'additional_model_fields':[1]}",
                "additional_model_fields must be an object");
    expect_fail(TG_REF_MESSAGES, model, 0, 0, "{'inputs':[],'tool_config':'x'}",
                "tool_config must be an object");

    /* A list of Converse system blocks is passed as it is. */
    tg_ref_call_t c;
    expect_body(
        TG_REF_MESSAGES, model, 0, 0,
        "{'inputs':[],'parameters':{'system':[{'text':'Be brief'}],'temperature':0}}",
        "{'messages':[],'system':[{'text':'Be brief'}],'inferenceConfig':{'temperature':0}}",
        TG_BR_CONVERSE, TG_REF_OUT_CONVERSE, &c);
    tg_ref_call_free(&c);
}

/* ---- Bedrock text (no messages_api) -------------------------------------- */

static void test_notebook_titan_text(void **state)
{
    tg_ref_call_t c;
    const char *body = "{'inputs':'What is Amazon Bedrock?',"
                       "'parameters':{'maxTokenCount':4096,'temperature':0.2}}";
    const char *want = "{'inputText':'What is Amazon Bedrock?',"
                       "'textGenerationConfig':{'maxTokenCount':4096,'temperature':0.2}}";
    expect_body(TG_REF_TEXT, "amazon.titan-text-express-v1", 0, 0, body, want, TG_BR_INVOKE,
                TG_REF_OUT_TITAN_TEXT, &c);
    assert_int_equal(c.max_output, 4096);
    assert_int_equal(c.input_bytes, 23);
    tg_ref_call_free(&c);
    expect_body(TG_REF_TEXT, "amazon.titan-text-express-v1", 1, 0, body, want, TG_BR_INVOKE_STREAM,
                TG_REF_OUT_TITAN_TEXT, &c);
    tg_ref_call_free(&c);
    /* The older id and no parameters: textGenerationConfig is still there. */
    expect_body(TG_REF_TEXT, "amazon.titan-tg1-large", 0, 0, "{'inputs':'Hi'}",
                "{'inputText':'Hi','textGenerationConfig':{}}", TG_BR_INVOKE, TG_REF_OUT_TITAN_TEXT,
                &c);
    assert_int_equal(c.max_output, 0);
    tg_ref_call_free(&c);
}

static void test_notebook_claude_v2_text(void **state)
{
    tg_ref_call_t c;
    expect_body(TG_REF_TEXT, "anthropic.claude-v2:1", 0, 0,
                "{'inputs':'What is Amazon Bedrock?','parameters':{'max_tokens_to_sample':4096}}",
                "{'max_tokens_to_sample':4096,"
                "'prompt':'\\n\\nHuman: What is Amazon Bedrock?\\n\\nAssistant:'}",
                TG_BR_INVOKE, TG_REF_OUT_ANTHROPIC_TEXT, &c);
    assert_int_equal(c.max_output, 4096);
    assert_int_equal(c.input_bytes, 23);
    tg_ref_call_free(&c);

    /* max_tokens_to_sample defaults to 1024, after the prompt. */
    expect_body(TG_REF_TEXT, "anthropic.claude-instant-v1", 1, 0,
                "{'inputs':'Hi','parameters':{'temperature':0.5}}",
                "{'temperature':0.5,'prompt':'\\n\\nHuman: Hi\\n\\nAssistant:',"
                "'max_tokens_to_sample':1024}",
                TG_BR_INVOKE_STREAM, TG_REF_OUT_ANTHROPIC_TEXT, &c);
    assert_int_equal(c.max_output, 1024);
    tg_ref_call_free(&c);

    /* LangChain's _human_assistant_format, case by case. */
    static const struct {
        const char *in, *prompt;
    } cases[] = {
        /* already formatted: as it is */
        {"\\n\\nHuman: Hi\\n\\nAssistant:", "\\n\\nHuman: Hi\\n\\nAssistant:"},
        /* formatted without the closing turn: it is added */
        {"\\n\\nHuman: Hi", "\\n\\nHuman: Hi\\n\\nAssistant:"},
        /* Human: at the start gets its blank line */
        {"Human: Hi\\n\\nAssistant:", "\\n\\nHuman: Hi\\n\\nAssistant:"},
        /* one newline becomes two; three stay three (Python's replace
         * passes collapse one newline each), an odd turn is closed */
        {"Human: a\\nAssistant: b\\n\\n\\nHuman: c",
         "\\n\\nHuman: a\\n\\nAssistant: b\\n\\n\\nHuman: c\\n\\nAssistant:"},
        {"Human:Human:", "\\n\\nHuman:\\n\\nHuman:\\n\\nAssistant:"},
        {"x Assistant: y Human: z",
         "\\n\\nHuman: x \\n\\nAssistant: y \\n\\nHuman: z\\n\\nAssistant:"},
        /* Assistant before any Human: a Human turn is put first */
        {"Assistant: x", "\\n\\nHuman: \\n\\nAssistant: x"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[256], want[256];
        snprintf(body, sizeof(body), "{'inputs':'%s','parameters':{'max_tokens_to_sample':9}}",
                 cases[i].in);
        snprintf(want, sizeof(want), "{'max_tokens_to_sample':9,'prompt':'%s'}", cases[i].prompt);
        expect_body(TG_REF_TEXT, "anthropic.claude-v2", 0, 0, body, want, TG_BR_INVOKE,
                    TG_REF_OUT_ANTHROPIC_TEXT, &c);
        tg_ref_call_free(&c);
    }

    /* A foundation-model ARN is read by its model id too. */
    expect_body(TG_REF_TEXT, "arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2", 0,
                0, "{'inputs':'Hi','parameters':{'max_tokens_to_sample':5}}",
                "{'max_tokens_to_sample':5,'prompt':'\\n\\nHuman: Hi\\n\\nAssistant:'}",
                TG_BR_INVOKE, TG_REF_OUT_ANTHROPIC_TEXT, &c);
    tg_ref_call_free(&c);
}

static void test_notebook_native_text(void **state)
{
    tg_ref_call_t c;
    /* Mistral Large, notebook 01 section 5. */
    expect_body(TG_REF_TEXT, "mistral.mistral-large-2402-v1:0", 0, 0,
                "{'inputs':'<s>[INST] What is Amazon Bedrock? [/INST]',"
                "'parameters':{'max_tokens':200,'temperature':0.5}}",
                "{'max_tokens':200,'temperature':0.5,"
                "'prompt':'<s>[INST] What is Amazon Bedrock? [/INST]'}",
                TG_BR_INVOKE, TG_REF_OUT_MISTRAL, &c);
    assert_int_equal(c.max_output, 200);
    assert_int_equal(c.input_bytes, 41);
    tg_ref_call_free(&c);
    /* AI21 Jurassic-2 Ultra. */
    expect_body(
        TG_REF_TEXT, "ai21.j2-ultra-v1", 0, 0,
        "{'inputs':'What is Amazon Bedrock?','parameters':{'maxTokens':200,'temperature':0.5}}",
        "{'maxTokens':200,'temperature':0.5,'prompt':'What is Amazon Bedrock?'}", TG_BR_INVOKE,
        TG_REF_OUT_AI21, &c);
    assert_int_equal(c.max_output, 200);
    tg_ref_call_free(&c);
    /* Cohere Command. */
    expect_body(TG_REF_TEXT, "cohere.command-text-v14", 1, 0,
                "{'inputs':'What is Amazon Bedrock?','parameters':{'max_tokens':300}}",
                "{'max_tokens':300,'prompt':'What is Amazon Bedrock?'}", TG_BR_INVOKE_STREAM,
                TG_REF_OUT_COHERE, &c);
    assert_int_equal(c.max_output, 300);
    tg_ref_call_free(&c);
    /* Llama, here through a cross-region profile; a prompt key in the
     * parameters is replaced in its place, as Python's {**p, 'prompt': x}. */
    expect_body(TG_REF_TEXT, "us.meta.llama3-2-11b-instruct-v1:0", 0, 0,
                "{'inputs':'Hi','parameters':{'prompt':'old','max_gen_len':512,'top_p':0.9}}",
                "{'prompt':'Hi','max_gen_len':512,'top_p':0.9}", TG_BR_INVOKE, TG_REF_OUT_META, &c);
    assert_int_equal(c.max_output, 512);
    tg_ref_call_free(&c);
    expect_body(TG_REF_TEXT, "cohere.command-light-text-v14", 0, 0, "{'inputs':'Hi'}",
                "{'prompt':'Hi'}", TG_BR_INVOKE, TG_REF_OUT_COHERE, &c);
    tg_ref_call_free(&c);
    expect_body(TG_REF_TEXT, "mistral.mixtral-8x7b-instruct-v0:1", 0, 0, "{'inputs':'Hi'}",
                "{'prompt':'Hi'}", TG_BR_INVOKE, TG_REF_OUT_MISTRAL, &c);
    tg_ref_call_free(&c);
    expect_body(TG_REF_TEXT, "mistral.mistral-7b-instruct-v0:2", 1, 0, "{'inputs':'Hi'}",
                "{'prompt':'Hi'}", TG_BR_INVOKE_STREAM, TG_REF_OUT_MISTRAL, &c);
    tg_ref_call_free(&c);
}

static void test_text_through_converse(void **state)
{
    tg_ref_call_t c;
    /* A us. profile of Claude 3.5 on the text path: Converse with one user
     * turn; Anthropic's names mapped, the rest as model fields. */
    expect_body(TG_REF_TEXT, "us.anthropic.claude-3-5-sonnet-20240620-v1:0", 0, 0,
                "{'inputs':'What is Amazon Bedrock?','parameters':{'max_tokens':300,"
                "'temperature':0.1,'top_p':0.9,'top_k':250,'stop_sequences':['END']}}",
                "{'messages':[{'role':'user','content':[{'text':'What is Amazon Bedrock?'}]}],"
                "'inferenceConfig':{'maxTokens':300,'temperature':0.1,'topP':0.9,"
                "'stopSequences':['END']},'additionalModelRequestFields':{'top_k':250}}",
                TG_BR_CONVERSE, TG_REF_OUT_CONVERSE, &c);
    assert_int_equal(c.max_output, 300);
    assert_int_equal(c.input_bytes, 23);
    tg_ref_call_free(&c);
    /* max_tokens_to_sample too; system as Converse's system; the body's
     * additional_model_fields joined to the unmapped parameters. */
    expect_body(TG_REF_TEXT, SONNET, 1, 0,
                "{'inputs':'Hi','parameters':{'max_tokens_to_sample':50,'system':'Be brief',"
                "'anthropic_version':'bedrock-2023-05-31'},"
                "'additional_model_fields':{'top_k':5}}",
                "{'messages':[{'role':'user','content':[{'text':'Hi'}]}],"
                "'system':[{'text':'Be brief'}],'inferenceConfig':{'maxTokens':50},"
                "'additionalModelRequestFields':{'anthropic_version':'bedrock-2023-05-31',"
                "'top_k':5}}",
                TG_BR_CONVERSE_STREAM, TG_REF_OUT_CONVERSE, &c);
    assert_int_equal(c.input_bytes, 2 + 8);
    tg_ref_call_free(&c);
    /* Nova: Converse's own names, as given. */
    expect_body(TG_REF_TEXT, "amazon.nova-pro-v1:0", 0, 0,
                "{'inputs':'Hi','parameters':{'maxTokens':100,'topP':0.5}}",
                "{'messages':[{'role':'user','content':[{'text':'Hi'}]}],"
                "'inferenceConfig':{'maxTokens':100,'topP':0.5}}",
                TG_BR_CONVERSE, TG_REF_OUT_CONVERSE, &c);
    assert_int_equal(c.max_output, 100);
    tg_ref_call_free(&c);
    /* Command R, Jamba, an unknown family, an application profile ARN. */
    const char *models[] = {
        "cohere.command-r-plus-v1:0",
        "ai21.jamba-1-5-large-v1:0",
        "mistral.mistral-large-2407-v1:0",
        "us.mistral.pixtral-large-2502-v1:0",
        "deepseek.r1-v1:0",
        "arn:aws:bedrock:us-east-1:123456789012:application-inference-profile/abc123"};
    for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
        expect_body(TG_REF_TEXT, models[i], 0, 0,
                    "{'inputs':'Hi','parameters':{'max_tokens':10,'k':3}}",
                    "{'messages':[{'role':'user','content':[{'text':'Hi'}]}],"
                    "'inferenceConfig':{'maxTokens':10},'additionalModelRequestFields':{'k':3}}",
                    TG_BR_CONVERSE, TG_REF_OUT_CONVERSE, &c);
        tg_ref_call_free(&c);
    }
}

static void test_text_bad(void **state)
{
    expect_fail(TG_REF_TEXT, "amazon.titan-text-express-v1", 0, 0, "{'parameters':{}}",
                "inputs is required");
    expect_fail(TG_REF_TEXT, "amazon.titan-text-express-v1", 0, 0, "{'inputs':null}",
                "inputs is required");
    expect_fail(TG_REF_TEXT, "amazon.titan-text-express-v1", 0, 0,
                "{'inputs':[{'role':'user','content':[{'text':'x'}]}]}", "inputs must be a string");
    expect_fail(TG_REF_TEXT, "meta.llama3-8b-instruct-v1:0", 0, 0,
                "{'inputs':'x','parameters':[1]}", "parameters must be an object");
    expect_fail(TG_REF_TEXT, "meta.llama3-8b-instruct-v1:0", 0, 0,
                "{'inputs':'x','parameters':'p'}", "parameters must be an object");
    expect_fail(TG_REF_TEXT, "meta.llama3-8b-instruct-v1:0", 0, 0, "['x']",
                "the body must be a JSON object");
    expect_fail(TG_REF_TEXT, SONNET, 0, 0, "{'inputs':'x','parameters':{'system':5}}",
                "parameters.system must be a string");
    /* An error with no room for the message still fails. */
    tg_ref_call_t c;
    assert_int_equal(build(TG_REF_TEXT, SONNET, 0, 0, "{}", &c, NULL, 0), TG_EINVAL);
}

/* ---- Bedrock embeddings and images --------------------------------------- */

static void test_notebook_embeddings(void **state)
{
    tg_ref_call_t c;
    expect_body(
        TG_REF_EMBEDDINGS, "amazon.titan-embed-text-v2:0", 0, 0,
        "{'inputs':'What is Amazon Bedrock?','parameters':{'dimensions':1024,'normalize':true}}",
        "{'dimensions':1024,'normalize':true,'inputText':'What is Amazon Bedrock?'}", TG_BR_INVOKE,
        TG_REF_OUT_TITAN_EMBED, &c);
    assert_int_equal(c.input_bytes, 23);
    assert_int_equal(c.images, 0);
    tg_ref_call_free(&c);
    expect_body(TG_REF_EMBEDDINGS, "amazon.titan-embed-text-v1", 0, 0, "{'inputs':'Hi'}",
                "{'inputText':'Hi'}", TG_BR_INVOKE, TG_REF_OUT_TITAN_EMBED, &c);
    tg_ref_call_free(&c);

    /* Cohere: the text in a list; input_type as given, or search_document. */
    expect_body(TG_REF_EMBEDDINGS, "cohere.embed-multilingual-v3", 0, 0,
                "{'inputs':'Ciao','parameters':{'input_type':'search_query'}}",
                "{'input_type':'search_query','texts':['Ciao']}", TG_BR_INVOKE,
                TG_REF_OUT_COHERE_EMBED, &c);
    assert_int_equal(c.input_bytes, 4);
    tg_ref_call_free(&c);
    expect_body(TG_REF_EMBEDDINGS, "cohere.embed-multilingual-v3", 0, 0,
                "{'inputs':['a','bc'],'parameters':{'truncate':'END'}}",
                "{'truncate':'END','input_type':'search_document','texts':['a','bc']}",
                TG_BR_INVOKE, TG_REF_OUT_COHERE_EMBED, &c);
    assert_int_equal(c.input_bytes, 3);
    tg_ref_call_free(&c);

    expect_fail(TG_REF_EMBEDDINGS, "cohere.embed-english-v3", 0, 0, "{'inputs':['a',1]}",
                "inputs must be a string or a list of strings");
    expect_fail(TG_REF_EMBEDDINGS, "cohere.embed-english-v3", 0, 0, "{'inputs':[]}",
                "inputs must be a string or a list of strings");
    expect_fail(TG_REF_EMBEDDINGS, "amazon.titan-embed-text-v2:0", 0, 0, "{'inputs':['a']}",
                "inputs must be a string");
    expect_fail(TG_REF_EMBEDDINGS, "amazon.titan-embed-text-v2:0", 1, 0, "{'inputs':'a'}",
                "streaming is only for text");
}

static void test_notebook_image_embeddings(void **state)
{
    tg_ref_call_t c;
    expect_body(TG_REF_EMBEDDINGS_IMAGE, "amazon.titan-embed-image-v1", 0, 0,
                "{'inputs':'iVBORw0KGgoAAAANSUhEUgAAAAE='}",
                "{'inputImage':'iVBORw0KGgoAAAANSUhEUgAAAAE='}", TG_BR_INVOKE,
                TG_REF_OUT_TITAN_EMBED, &c);
    assert_int_equal(c.images, 1);
    assert_int_equal(c.input_bytes, 0);
    tg_ref_call_free(&c);
    expect_body(TG_REF_EMBEDDINGS_IMAGE, "amazon.titan-embed-image-v1", 0, 0,
                "{'inputs':'iVBOR','parameters':{'embeddingConfig':{'outputEmbeddingLength':256}}}",
                "{'embeddingConfig':{'outputEmbeddingLength':256},'inputImage':'iVBOR'}",
                TG_BR_INVOKE, TG_REF_OUT_TITAN_EMBED, &c);
    tg_ref_call_free(&c);

    /* Cohere takes a data URI, typed by the image's first bytes. */
    expect_body(TG_REF_EMBEDDINGS_IMAGE, "cohere.embed-english-v3", 0, 0,
                "{'inputs':'iVBORw0KGgo='}",
                "{'input_type':'image','images':['data:image/png;base64,iVBORw0KGgo=']}",
                TG_BR_INVOKE, TG_REF_OUT_COHERE_EMBED, &c);
    assert_int_equal(c.images, 1);
    tg_ref_call_free(&c);
    expect_body(TG_REF_EMBEDDINGS_IMAGE, "cohere.embed-english-v3", 0, 0,
                "{'inputs':'/9j/4AAQ','parameters':{'input_type':'search_document',"
                "'embedding_types':['float']}}",
                "{'input_type':'image','embedding_types':['float'],"
                "'images':['data:image/jpeg;base64,/9j/4AAQ']}",
                TG_BR_INVOKE, TG_REF_OUT_COHERE_EMBED, &c);
    tg_ref_call_free(&c);
    expect_body(TG_REF_EMBEDDINGS_IMAGE, "cohere.embed-english-v3", 0, 0,
                "{'inputs':'data:image/webp;base64,UklGR'}",
                "{'input_type':'image','images':['data:image/webp;base64,UklGR']}", TG_BR_INVOKE,
                TG_REF_OUT_COHERE_EMBED, &c);
    tg_ref_call_free(&c);

    expect_fail(TG_REF_EMBEDDINGS_IMAGE, "amazon.titan-embed-image-v1", 0, 0, "{'inputs':{}}",
                "inputs must be a base64 image string");
    expect_fail(TG_REF_EMBEDDINGS_IMAGE, "amazon.titan-embed-image-v1", 0, 0, "{}",
                "inputs is required");
}

static void test_notebook_images(void **state)
{
    tg_ref_call_t c;
    expect_body(TG_REF_IMAGE, "amazon.titan-image-generator-v1", 0, 0,
                "{'textToImageParams':{'text':'blue backpack on a table'},"
                "'parameters':{'taskType':'TEXT_IMAGE','imageGenerationConfig':{'cfgScale':8,"
                "'seed':0,'quality':'standard','width':512,'height':512,'numberOfImages':1}}}",
                "{'taskType':'TEXT_IMAGE','imageGenerationConfig':{'cfgScale':8,'seed':0,"
                "'quality':'standard','width':512,'height':512,'numberOfImages':1},"
                "'textToImageParams':{'text':'blue backpack on a table'}}",
                TG_BR_INVOKE, TG_REF_OUT_TITAN_IMAGE, &c);
    assert_int_equal(c.images, 1);
    assert_int_equal(c.width, 512);
    assert_int_equal(c.height, 512);
    assert_string_equal(c.quality, "standard");
    assert_int_equal(c.steps, 50);
    assert_int_equal(c.input_bytes, 24);
    tg_ref_call_free(&c);
    /* numberOfImages counted (the reference ignored it); premium quality. */
    expect_body(TG_REF_IMAGE, "amazon.titan-image-generator-v2:0", 0, 0,
                "{'textToImageParams':{'text':'x'},'parameters':{'imageGenerationConfig':"
                "{'quality':'premium','width':1024,'height':768,'numberOfImages':3}}}",
                "{'imageGenerationConfig':{'quality':'premium','width':1024,'height':768,"
                "'numberOfImages':3},'textToImageParams':{'text':'x'}}",
                TG_BR_INVOKE, TG_REF_OUT_TITAN_IMAGE, &c);
    assert_int_equal(c.images, 3);
    assert_int_equal(c.width, 1024);
    assert_int_equal(c.height, 768);
    assert_string_equal(c.quality, "premium");
    assert_int_equal(c.steps, 51);
    tg_ref_call_free(&c);
    /* No imageGenerationConfig (a KeyError in the reference): defaults. */
    expect_body(TG_REF_IMAGE, "amazon.nova-canvas-v1:0", 0, 0, "{'textToImageParams':{'text':'x'}}",
                "{'textToImageParams':{'text':'x'}}", TG_BR_INVOKE, TG_REF_OUT_TITAN_IMAGE, &c);
    assert_int_equal(c.images, 1);
    assert_int_equal(c.width, 512);
    assert_string_equal(c.quality, "standard");
    tg_ref_call_free(&c);
    /* Another task needs no textToImageParams. */
    expect_body(TG_REF_IMAGE, "amazon.titan-image-generator-v1", 0, 0,
                "{'parameters':{'taskType':'IMAGE_VARIATION','imageVariationParams':"
                "{'images':['iVBOR']}}}",
                "{'taskType':'IMAGE_VARIATION','imageVariationParams':{'images':['iVBOR']}}",
                TG_BR_INVOKE, TG_REF_OUT_TITAN_IMAGE, &c);
    tg_ref_call_free(&c);

    /* Stability SDXL with 60 steps: premium. */
    expect_body(TG_REF_IMAGE, "stability.stable-diffusion-xl-v1", 0, 0,
                "{'text_prompts':[{'text':'a beautiful mountain landscape','weight':1.0}],"
                "'parameters':{'cfg_scale':5,'seed':452345,'steps':60,'style_preset':"
                "'photographic','clip_guidance_preset':'FAST_GREEN','sampler':"
                "'K_DPMPP_2S_ANCESTRAL','width':768}}",
                "{'cfg_scale':5,'seed':452345,'steps':60,'style_preset':'photographic',"
                "'clip_guidance_preset':'FAST_GREEN','sampler':'K_DPMPP_2S_ANCESTRAL',"
                "'width':768,'text_prompts':[{'text':'a beautiful mountain landscape',"
                "'weight':1.0}]}",
                TG_BR_INVOKE, TG_REF_OUT_STABILITY, &c);
    assert_int_equal(c.steps, 60);
    assert_string_equal(c.quality, "premium");
    assert_int_equal(c.width, 768);
    assert_int_equal(c.height, 512);
    assert_int_equal(c.images, 1);
    assert_int_equal(c.input_bytes, 30);
    tg_ref_call_free(&c);
    /* Defaults: 50 steps, standard; samples counted. */
    expect_body(TG_REF_IMAGE, "stability.stable-diffusion-xl-v1", 0, 0,
                "{'text_prompts':[{'text':'x'}],'parameters':{'samples':2}}",
                "{'samples':2,'text_prompts':[{'text':'x'}]}", TG_BR_INVOKE, TG_REF_OUT_STABILITY,
                &c);
    assert_int_equal(c.steps, 50);
    assert_string_equal(c.quality, "standard");
    assert_int_equal(c.images, 2);
    tg_ref_call_free(&c);

    expect_fail(TG_REF_IMAGE, "stability.stable-diffusion-xl-v1", 0, 0, "{'parameters':{}}",
                "text_prompts is required");
    expect_fail(TG_REF_IMAGE, "amazon.titan-image-generator-v1", 0, 0,
                "{'parameters':{'taskType':'TEXT_IMAGE'}}", "textToImageParams is required");
    expect_fail(TG_REF_IMAGE, "amazon.titan-image-generator-v1", 1, 0,
                "{'textToImageParams':{'text':'x'}}", "streaming is only for text");
}

/* ---- SageMaker ---------------------------------------------------------- */

static void test_notebook_sagemaker(void **state)
{
    tg_ref_call_t c;
    /* JumpStart All-MiniLM embeddings, with an inference component. */
    expect_body(TG_REF_EMBEDDINGS, "minilm", 0, 1,
                "{'inputs':{'text_inputs':'Hello'},"
                "'parameters':{'mode':'embedding','InferenceComponentName':'ic-minilm-1'}}",
                "{'text_inputs':'Hello','mode':'embedding'}", TG_SM_INVOKE, TG_REF_OUT_SM_EMBED,
                &c);
    assert_string_equal(c.inference_component, "ic-minilm-1");
    assert_int_equal(c.input_bytes, 5);
    tg_ref_call_free(&c);

    /* TGI Llama 3 through the Messages API. */
    const char *body = "{'inputs':[{'role':'user','content':'What is Amazon Bedrock?'}],"
                       "'parameters':{'model':'placeholder-model','top_p':0.9,'temperature':0.2,"
                       "'max_tokens':500,'return_full_text':false,'stop':['<|eot_id|>']}}";
    expect_body(TG_REF_MESSAGES, "llama3-tgi", 0, 1, body,
                "{'messages':[{'role':'user','content':'What is Amazon Bedrock?'}],"
                "'model':'placeholder-model','top_p':0.9,'temperature':0.2,'max_tokens':500,"
                "'return_full_text':false,'stop':['<|eot_id|>']}",
                TG_SM_INVOKE, TG_REF_OUT_SM_MESSAGES, &c);
    assert_string_equal(c.inference_component, "");
    assert_int_equal(c.max_output, 500);
    assert_int_equal(c.input_bytes, 23);
    tg_ref_call_free(&c);
    expect_body(TG_REF_MESSAGES, "llama3-tgi", 1, 1, body,
                "{'messages':[{'role':'user','content':'What is Amazon Bedrock?'}],"
                "'model':'placeholder-model','top_p':0.9,'temperature':0.2,'max_tokens':500,"
                "'return_full_text':false,'stop':['<|eot_id|>'],'stream':true}",
                TG_SM_INVOKE_STREAM, TG_REF_OUT_SM_MESSAGES, &c);
    tg_ref_call_free(&c);

    /* TGI text, whole and streamed ("stream": true at the top). */
    expect_body(TG_REF_TEXT, "falcon", 0, 1, "{'inputs':'Hi','parameters':{'max_new_tokens':64}}",
                "{'inputs':'Hi','parameters':{'max_new_tokens':64}}", TG_SM_INVOKE,
                TG_REF_OUT_SM_TEXT, &c);
    assert_int_equal(c.max_output, 64);
    tg_ref_call_free(&c);
    expect_body(TG_REF_TEXT, "falcon", 1, 1, "{'inputs':'Hi'}",
                "{'inputs':'Hi','parameters':{},'stream':true}", TG_SM_INVOKE_STREAM,
                TG_REF_OUT_SM_TEXT, &c);
    tg_ref_call_free(&c);

    expect_fail(TG_REF_IMAGE, "sd", 0, 1, "{'inputs':'x'}",
                "type image is not supported for SageMaker");
    expect_fail(TG_REF_EMBEDDINGS_IMAGE, "clip", 0, 1, "{'inputs':'x'}",
                "type embeddings-image is not supported for SageMaker");
    expect_fail(TG_REF_EMBEDDINGS, "minilm", 1, 1, "{'inputs':{'text_inputs':'x'}}",
                "streaming is only for text");
    expect_fail(TG_REF_TEXT, "falcon", 0, 1,
                "{'inputs':'x','parameters':{'InferenceComponentName':'bad name'}}",
                "parameters.InferenceComponentName must be an inference component name");
    expect_fail(TG_REF_MESSAGES, "llama3-tgi", 0, 1, "{'inputs':'x'}",
                "inputs must be a list of messages");
    expect_fail(TG_REF_TEXT, "falcon", 0, 1, "{'parameters':{}}", "inputs is required");
}

/* ---- whole answers ---------------------------------------------------- */

static void test_parse_converse(void **state)
{
    tg_ref_call_t c = call_for(TG_REF_OUT_CONVERSE);
    tg_ref_usage_t u;
    expect_parse(&c,
                 "{'output':{'message':{'role':'assistant','content':[{'text':'Amazon Bedrock'},"
                 "{'text':'is a service.\\n'}]}},'stopReason':'end_turn','usage':{'inputTokens':12,"
                 "'outputTokens':7,'totalTokens':19,'cacheReadInputTokens':3,"
                 "'cacheWriteInputTokens':0},'metrics':{'latencyMs':420}}",
                 NULL, 0, "[{'generated_text':'Amazon Bedrock is a service.'}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 12);
    assert_int_equal(u.output, 7);
    assert_int_equal(u.cache_read, 3);
    assert_int_equal(u.cache_write, 0);
    assert_int_equal(u.output_bytes, 28);

    /* A toolUse anywhere: the tool uses only, text dropped. */
    expect_parse(&c,
                 "{'output':{'message':{'role':'assistant','content':[{'text':'Let me check.'},"
                 "{'toolUse':{'toolUseId':'tooluse_1','name':'get_weather','input':{'city':"
                 "'Seattle','state':'WA'}}},{'toolUse':{'toolUseId':'tooluse_2','name':"
                 "'get_weather','input':{}}}]}},'stopReason':'tool_use','usage':{'inputTokens':"
                 "300,'outputTokens':60,'totalTokens':360}}",
                 NULL, 0,
                 "[{'generated_text':[{'toolUse':{'toolUseId':'tooluse_1','name':'get_weather',"
                 "'input':{'city':'Seattle','state':'WA'}}},{'toolUse':{'toolUseId':'tooluse_2',"
                 "'name':'get_weather','input':{}}}]}]",
                 &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 300);
    assert_int_equal(u.output, 60);

    /* No usage: no counts; an empty answer is an empty string. */
    expect_parse(&c, "{'output':{'message':{'role':'assistant','content':[]}}}", NULL, 0,
                 "[{'generated_text':''}]", &u);
    assert_int_equal(u.have, 0);
    expect_parse_fail(&c, "{'message':'x'}", "the Converse answer has no output.message.content");
    expect_parse_fail(&c, "not json", "the model's answer is not JSON");
}

static void test_parse_native_text(void **state)
{
    tg_ref_usage_t u;
    tg_header_t h[] = {hdr("Content-Type", "application/json"),
                       hdr("X-Amzn-Bedrock-Input-Token-Count", "14"),
                       hdr("x-amzn-bedrock-output-token-count", "31"),
                       hdr("x-amzn-bedrock-invocation-latency", "900")};
    static const struct {
        tg_ref_out_t out;
        const char *answer, *text;
        int have; /* counts in the body, where models give them */
        int64_t in_tokens, out_tokens;
    } cases[] = {
        {TG_REF_OUT_ANTHROPIC_TEXT,
         "{'type':'completion','completion':' Amazon Bedrock is a service.','stop_reason':"
         "'stop_sequence','stop':'\\n\\nHuman:'}",
         " Amazon Bedrock is a service.", 0, 0, 0},
        {TG_REF_OUT_ANTHROPIC_MSG,
         "{'id':'msg_01','type':'message','role':'assistant','content':[{'type':'text','text':"
         "'Hello'}],'stop_reason':'end_turn','usage':{'input_tokens':10,'output_tokens':2}}",
         "Hello", 1, 10, 2},
        {TG_REF_OUT_TITAN_TEXT,
         "{'inputTextTokenCount':6,'results':[{'tokenCount':9,'outputText':'\\nAmazon Bedrock.',"
         "'completionReason':'FINISH'}]}",
         "\nAmazon Bedrock.", 1, 6, 9},
        {TG_REF_OUT_META,
         "{'generation':' Bedrock is','prompt_token_count':10,'generation_token_count':3,"
         "'stop_reason':'stop'}",
         " Bedrock is", 1, 10, 3},
        {TG_REF_OUT_MISTRAL, "{'outputs':[{'text':' Bedrock','stop_reason':'stop'}]}", " Bedrock",
         0, 0, 0},
        {TG_REF_OUT_COHERE,
         "{'generations':[{'finish_reason':'COMPLETE','id':'g1','text':' Bedrock!'}],'id':'r1',"
         "'prompt':'What is Amazon Bedrock?'}",
         " Bedrock!", 0, 0, 0},
        {TG_REF_OUT_AI21,
         "{'id':1234,'prompt':{'text':'Hi','tokens':[{'generatedToken':{'token':'Hi'}}]},"
         "'completions':[{'data':{'text':'\\nHello there','tokens':[{},{}]},'finishReason':"
         "{'reason':'endoftext'}}]}",
         "\nHello there", 1, 1, 2},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tg_ref_call_t c = call_for(cases[i].out);
        cJSON *w = cJSON_CreateArray(), *o = cJSON_CreateObject();
        cJSON_AddItemToArray(w, o);
        cJSON_AddStringToObject(o, "generated_text", cases[i].text);
        char *want = cJSON_PrintUnformatted(w);
        cJSON_Delete(w);
        /* The headers' counts win over anything in the body. */
        expect_parse(&c, cases[i].answer, h, 4, want, &u);
        assert_int_equal(u.have, 1);
        assert_int_equal(u.input, 14);
        assert_int_equal(u.output, 31);
        assert_int_equal(u.output_bytes, strlen(cases[i].text));
        expect_parse(&c, cases[i].answer, NULL, 0, want, &u);
        free(want);
        assert_int_equal(u.output_bytes, strlen(cases[i].text));
        assert_int_equal(u.have, cases[i].have);
        assert_int_equal(u.input, cases[i].in_tokens);
        assert_int_equal(u.output, cases[i].out_tokens);
    }
    /* Headers that are not counts are no counts: the body's are used. */
    tg_header_t bad[] = {hdr("x-amzn-bedrock-input-token-count", "-1"),
                         hdr("x-amzn-bedrock-output-token-count", "3")};
    tg_ref_call_t c = call_for(TG_REF_OUT_META);
    expect_parse(&c, "{'generation':'x','prompt_token_count':4,'generation_token_count':1}", bad, 2,
                 "[{'generated_text':'x'}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 4);

    c = call_for(TG_REF_OUT_TITAN_TEXT);
    expect_parse_fail(&c, "{'results':[]}", "the model's answer has no generated text");
    c = call_for(TG_REF_OUT_MISTRAL);
    expect_parse_fail(&c, "{'outputs':[{'text':7}]}", "the model's answer has no generated text");
}

static void test_parse_embeddings(void **state)
{
    tg_ref_usage_t u;
    tg_ref_call_t c = call_for(TG_REF_OUT_TITAN_EMBED);
    expect_parse(&c, "{'embedding':[0.015625,-0.25,3e-05,1],'inputTextTokenCount':7}", NULL, 0,
                 "[{'embedding':[0.015625,-0.25,3e-05,1]}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 7);
    assert_int_equal(u.output, 0);
    assert_int_equal(u.images, 0);
    tg_header_t h[] = {hdr("x-amzn-bedrock-input-token-count", "8"),
                       hdr("x-amzn-bedrock-output-token-count", "0")};
    expect_parse(&c, "{'embedding':[1.5],'inputTextTokenCount':7}", h, 2, "[{'embedding':[1.5]}]",
                 &u);
    assert_int_equal(u.input, 8);
    /* An image embedding is one image, not base64 "tokens". */
    c.images = 1;
    expect_parse(&c, "{'embedding':[0.5,0.25],'inputTextTokenCount':0}", NULL, 0,
                 "[{'embedding':[0.5,0.25]}]", &u);
    assert_int_equal(u.images, 1);
    assert_int_equal(u.input, 0);
    expect_parse_fail(&c, "{'message':'x'}", "the model's answer has no embedding");

    c = call_for(TG_REF_OUT_COHERE_EMBED);
    expect_parse(&c,
                 "{'embeddings':[[0.5,-0.125],[1,2]],'id':'e1','response_type':"
                 "'embeddings_floats','texts':['a','b']}",
                 h, 2, "[{'embedding':[0.5,-0.125]}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 8);
    expect_parse(&c,
                 "{'embeddings':{'int8':[[1,2]],'float':[[0.75]]},'id':'e1','response_type':"
                 "'embeddings_by_type'}",
                 NULL, 0, "[{'embedding':[0.75]}]", &u);
    assert_int_equal(u.have, 0);
    expect_parse_fail(&c, "{'embeddings':[]}", "the model's answer has no embedding");
}

static void test_parse_images(void **state)
{
    tg_ref_usage_t u;
    tg_ref_call_t c = call_for(TG_REF_OUT_TITAN_IMAGE);
    expect_parse(&c, "{'images':['aGVsbG8=','d29ybGQ='],'error':null}", NULL, 0,
                 "[{'images':['aGVsbG8=','d29ybGQ=']}]", &u);
    assert_int_equal(u.images, 2);
    expect_parse_fail(&c, "{'images':null,'error':'blocked by the content filter'}",
                      "blocked by the content filter");
    c = call_for(TG_REF_OUT_STABILITY);
    expect_parse(&c,
                 "{'result':'success','artifacts':[{'seed':452345,'base64':'iVBOR',"
                 "'finishReason':'SUCCESS'}]}",
                 NULL, 0,
                 "[{'artifacts':[{'seed':452345,'base64':'iVBOR','finishReason':'SUCCESS'}]}]", &u);
    assert_int_equal(u.images, 1);
    expect_parse_fail(&c, "{'result':'error'}", "the model's answer has no images");
}

static void test_parse_sagemaker(void **state)
{
    tg_ref_usage_t u;
    tg_ref_call_t c = call_for(TG_REF_OUT_SM_TEXT);
    expect_parse(&c, "[{'generated_text':'Hello there'}]", NULL, 0,
                 "[{'generated_text':'Hello there'}]", &u);
    assert_int_equal(u.have, 0);
    assert_int_equal(u.output_bytes, 11);
    expect_parse(&c, "{'generated_text':' x '}", NULL, 0, "[{'generated_text':' x '}]", &u);
    expect_parse(&c,
                 "[{'generated_text':'Hi','details':{'finish_reason':'length','generated_tokens':5,"
                 "'prefill':[{'id':1},{'id':2}],'tokens':[]}}]",
                 NULL, 0, "[{'generated_text':'Hi'}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 2);
    assert_int_equal(u.output, 5);
    expect_parse_fail(&c, "[{'text':'x'}]", "the SageMaker answer has no generated_text");

    c = call_for(TG_REF_OUT_SM_MESSAGES);
    expect_parse(&c,
                 "{'object':'chat.completion','choices':[{'index':0,'message':{'role':'assistant',"
                 "'content':'  Hello!\\n'},'finish_reason':'stop'}],'usage':{'prompt_tokens':9,"
                 "'completion_tokens':3,'total_tokens':12}}",
                 NULL, 0, "[{'generated_text':'Hello!'}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 9);
    assert_int_equal(u.output, 3);
    assert_int_equal(u.output_bytes, 6);
    expect_parse_fail(&c, "{'choices':[]}", "the SageMaker answer has no choices[0].message");

    c = call_for(TG_REF_OUT_SM_EMBED);
    expect_parse(&c, "{'embedding':[[0.125,0.5]]}", NULL, 0, "[{'embedding':[[0.125,0.5]]}]", &u);
    assert_int_equal(u.have, 0);
    expect_parse_fail(&c, "{'x':1}", "the SageMaker answer has no embedding");
}

/* ---- streams ---------------------------------------------------------- */

static void test_stream_converse_text(void **state)
{
    tg_ref_call_t c = call_for(TG_REF_OUT_CONVERSE);
    tg_ref_stream_t s;
    tg_ref_usage_t u;
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    assert_string_equal(feed_q(&s, "messageStart", "{'role':'assistant','p':'abc'}"), "");
    assert_string_equal(
        feed_q(&s, "contentBlockDelta", "{'contentBlockIndex':0,'delta':{'text':'Hel'},'p':'a'}"),
        "Hel");
    assert_string_equal(
        feed_q(&s, "contentBlockDelta", "{'contentBlockIndex':0,'delta':{'text':'lo '}}"), "lo ");
    assert_string_equal(
        feed_q(&s, "contentBlockDelta", "{'contentBlockIndex':0,'delta':{'text':'world'}}"),
        "world");
    assert_string_equal(feed_q(&s, "contentBlockStop", "{'contentBlockIndex':0}"), "");
    assert_int_equal(s.done, 0);
    assert_string_equal(feed_q(&s, "messageStop", "{'stopReason':'end_turn'}"), "");
    assert_int_equal(s.done, 1);
    assert_int_equal(s.usage.have, 0);
    feed_q(&s, "metadata",
           "{'usage':{'inputTokens':11,'outputTokens':3,'totalTokens':14,"
           "'cacheWriteInputTokens':5},'metrics':{'latencyMs':300}}");
    /* Exceptions are the caller's: ignored here. */
    assert_string_equal(feed(&s, "throttlingException", "{\"message\":\"slow\"}", 0), "");
    expect_finish(&s, "[{'generated_text':'Hello world'}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 11);
    assert_int_equal(u.output, 3);
    assert_int_equal(u.cache_write, 5);
    assert_int_equal(u.output_bytes, 11);
    tg_ref_stream_free(&s);
    tg_ref_stream_free(&s);
}

static void test_stream_converse_tool(void **state)
{
    tg_ref_call_t c = call_for(TG_REF_OUT_CONVERSE);
    tg_ref_stream_t s;
    tg_ref_usage_t u;
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    feed_q(&s, "messageStart", "{'role':'assistant'}");
    assert_string_equal(
        feed_q(&s, "contentBlockDelta", "{'contentBlockIndex':0,'delta':{'text':'Checking.'}}"),
        "Checking.");
    feed_q(&s, "contentBlockStop", "{'contentBlockIndex':0}");
    feed_q(&s, "contentBlockStart",
           "{'contentBlockIndex':1,'start':{'toolUse':{'toolUseId':'tooluse_1','name':"
           "'get_weather'}}}");
    /* The tool's input JSON in three pieces, cut mid-token. */
    assert_string_equal(feed_q(&s, "contentBlockDelta",
                               "{'contentBlockIndex':1,'delta':{'toolUse':{'input':"
                               "'{\\'city\\':'}}}"),
                        "");
    feed_q(&s, "contentBlockDelta",
           "{'contentBlockIndex':1,'delta':{'toolUse':{'input':'\\'Seattle\\',\\'sta'}}}");
    feed_q(&s, "contentBlockDelta",
           "{'contentBlockIndex':1,'delta':{'toolUse':{'input':'te\\':\\'WA\\'}'}}}");
    feed_q(&s, "contentBlockStop", "{'contentBlockIndex':1}");
    /* A second tool use without input: {}. */
    feed_q(&s, "contentBlockStart",
           "{'contentBlockIndex':2,'start':{'toolUse':{'toolUseId':'tooluse_2','name':'now'}}}");
    feed_q(&s, "contentBlockStop", "{'contentBlockIndex':2}");
    feed_q(&s, "messageStop", "{'stopReason':'tool_use'}");
    feed_q(&s, "metadata", "{'usage':{'inputTokens':400,'outputTokens':50,'totalTokens':450}}");
    expect_finish(&s,
                  "[{'generated_text':[{'toolUse':{'toolUseId':'tooluse_1','name':'get_weather',"
                  "'input':{'city':'Seattle','state':'WA'}}},{'toolUse':{'toolUseId':'tooluse_2',"
                  "'name':'now','input':{}}}]}]",
                  &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 400);
    assert_int_equal(u.output, 50);
    tg_ref_stream_free(&s);

    /* A stream cut before contentBlockStop: finish closes the tool use. */
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    feed_q(&s, "contentBlockStart", "{'start':{'toolUse':{'toolUseId':'t','name':'n'}}}");
    feed_q(&s, "contentBlockDelta", "{'delta':{'toolUse':{'input':'{\\'a\\':1}'}}}");
    expect_finish(
        &s, "[{'generated_text':[{'toolUse':{'toolUseId':'t','name':'n','input':{'a':1}}}]}]", &u);
    assert_int_equal(u.have, 0);
    tg_ref_stream_free(&s);

    /* Pieces that do not make JSON. */
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    feed_q(&s, "contentBlockStart", "{'start':{'toolUse':{'toolUseId':'t','name':'n'}}}");
    feed_q(&s, "contentBlockDelta", "{'delta':{'toolUse':{'input':'{\\'a\\':'}}}");
    char *p = q("{'contentBlockIndex':0}");
    feed(&s, "contentBlockStop", p, TG_EPROTO);
    free(p);
    tg_ref_stream_free(&s);
}

static void test_stream_converse_bad(void **state)
{
    tg_ref_call_t c = call_for(TG_REF_OUT_CONVERSE);
    tg_ref_stream_t s;
    assert_int_equal(tg_ref_stream_init(&s, &c, 8), 0);
    feed(&s, "contentBlockDelta", "not json", TG_EPROTO);
    feed(&s, "contentBlockDelta", "[1]", TG_EPROTO);
    /* tool input without a tool use begun */
    char *p = q("{'delta':{'toolUse':{'input':'{}'}}}");
    feed(&s, "contentBlockDelta", p, TG_EPROTO);
    free(p);
    p = q("{'start':{'toolUse':{'name':'n'}}}"); /* no toolUseId */
    feed(&s, "contentBlockStart", p, TG_EPROTO);
    free(p);
    /* past max_text */
    p = q("{'delta':{'text':'12345'}}");
    assert_string_equal(feed(&s, "contentBlockDelta", p, 0), "12345");
    feed(&s, "contentBlockDelta", p, TG_ETOOBIG);
    free(p);
    tg_ref_stream_free(&s);
}

static void test_stream_invoke(void **state)
{
    tg_ref_stream_t s;
    tg_ref_usage_t u;
    static const char metrics[] = "'amazon-bedrock-invocationMetrics':{'inputTokenCount':12,"
                                  "'outputTokenCount':4,'invocationLatency':800,"
                                  "'firstByteLatency':300}";
    char last[512];

    /* Claude v2 Text Completions. */
    tg_ref_call_t c = call_for(TG_REF_OUT_ANTHROPIC_TEXT);
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    assert_string_equal(
        feed_chunk(&s, "{'type':'completion','completion':' Hello','stop_reason':null}"), " Hello");
    assert_string_equal(feed_chunk(&s, "{'completion':' world','stop_reason':null}"), " world");
    assert_int_equal(s.done, 0);
    snprintf(last, sizeof(last), "{'completion':'!','stop_reason':'stop_sequence',%s}", metrics);
    assert_string_equal(feed_chunk(&s, last), "!");
    assert_int_equal(s.done, 1);
    expect_finish(&s, "[{'generated_text':' Hello world!'}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 12);
    assert_int_equal(u.output, 4);
    assert_int_equal(u.output_bytes, 13);
    tg_ref_stream_free(&s);

    /* Titan. */
    c = call_for(TG_REF_OUT_TITAN_TEXT);
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    assert_string_equal(feed_chunk(&s, "{'outputText':'\\nBedrock','index':0,"
                                       "'totalOutputTextTokenCount':2,'completionReason':null,"
                                       "'inputTextTokenCount':6}"),
                        "\nBedrock");
    snprintf(last, sizeof(last),
             "{'outputText':' is AWS.','index':0,'totalOutputTextTokenCount':4,"
             "'completionReason':'FINISH',%s}",
             metrics);
    feed_chunk(&s, last);
    assert_int_equal(s.done, 1);
    expect_finish(&s, "[{'generated_text':'\\nBedrock is AWS.'}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.output, 4);
    tg_ref_stream_free(&s);

    /* Mistral. */
    c = call_for(TG_REF_OUT_MISTRAL);
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    assert_string_equal(feed_chunk(&s, "{'outputs':[{'text':'Bon','stop_reason':null}]}"), "Bon");
    snprintf(last, sizeof(last), "{'outputs':[{'text':'jour','stop_reason':'stop'}],%s}", metrics);
    assert_string_equal(feed_chunk(&s, last), "jour");
    assert_int_equal(s.done, 1);
    expect_finish(&s, "[{'generated_text':'Bonjour'}]", &u);
    assert_int_equal(u.have, 1);
    tg_ref_stream_free(&s);

    /* Cohere: the is_finished chunk repeats the answer and adds nothing. */
    c = call_for(TG_REF_OUT_COHERE);
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    assert_string_equal(feed_chunk(&s, "{'text':' Hi','is_finished':false}"), " Hi");
    assert_string_equal(feed_chunk(&s, "{'text':' there','is_finished':false}"), " there");
    snprintf(last, sizeof(last),
             "{'is_finished':true,'finish_reason':'COMPLETE','response':{'generations':"
             "[{'text':' Hi there'}]},'text':' Hi there',%s}",
             metrics);
    assert_string_equal(feed_chunk(&s, last), "");
    assert_int_equal(s.done, 1);
    expect_finish(&s, "[{'generated_text':' Hi there'}]", &u);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 12);
    tg_ref_stream_free(&s);

    /* Llama and Anthropic Messages on InvokeModel. */
    c = call_for(TG_REF_OUT_META);
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    feed_chunk(&s, "{'generation':'A','prompt_token_count':5,'generation_token_count':1,"
                   "'stop_reason':null}");
    feed_chunk(&s, "{'generation':'B','prompt_token_count':null,'generation_token_count':2,"
                   "'stop_reason':'stop'}");
    expect_finish(&s, "[{'generated_text':'AB'}]", &u);
    assert_int_equal(u.have, 0); /* no metrics: no counts guessed */
    assert_int_equal(u.output_bytes, 2);
    tg_ref_stream_free(&s);
    c = call_for(TG_REF_OUT_ANTHROPIC_MSG);
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    feed_chunk(&s, "{'type':'message_start','message':{'usage':{'input_tokens':9}}}");
    feed_chunk(&s, "{'type':'content_block_start','index':0,'content_block':{'type':'text',"
                   "'text':''}}");
    assert_string_equal(
        feed_chunk(&s, "{'type':'content_block_delta','index':0,'delta':{'type':'text_delta',"
                       "'text':'Hey'}}"),
        "Hey");
    snprintf(last, sizeof(last), "{'type':'message_stop',%s}", metrics);
    feed_chunk(&s, last);
    assert_int_equal(s.done, 1);
    expect_finish(&s, "[{'generated_text':'Hey'}]", &u);
    assert_int_equal(u.output, 4);
    tg_ref_stream_free(&s);
}

static void test_stream_invoke_bad(void **state)
{
    tg_ref_call_t c = call_for(TG_REF_OUT_TITAN_TEXT);
    tg_ref_stream_t s;
    assert_int_equal(tg_ref_stream_init(&s, &c, 4), 0);
    feed(&s, "chunk", "{\"bytes\":\"e30\"}", TG_EPROTO);          /* not a multiple of 4 */
    feed(&s, "chunk", "{\"bytes\":\"e3=9\"}", TG_EPROTO);         /* padding inside */
    feed(&s, "chunk", "{\"bytes\":\" e30=\"}", TG_EPROTO);        /* white space */
    feed(&s, "chunk", "{\"bytes\":\"WzFd\"}", TG_EPROTO);         /* [1]: not an object */
    feed(&s, "chunk", "{\"bytes\":\"bm90IGpzb24=\"}", TG_EPROTO); /* not json */
    feed(&s, "chunk", "{\"byte\":\"e30=\"}", TG_EPROTO);
    feed(&s, "chunk", "nope", TG_EPROTO);
    assert_string_equal(feed(&s, "chunk", "{\"bytes\":\"e30=\"}", 0), ""); /* {} */
    assert_string_equal(feed(&s, "other", "nope", 0), "");
    assert_string_equal(feed_chunk(&s, "{'outputText':'abcd'}"), "abcd");
    char *p = q("{'bytes':'eyJvdXRwdXRUZXh0IjoiZSJ9'}"); /* {"outputText":"e"} */
    feed(&s, "chunk", p, TG_ETOOBIG);
    free(p);
    tg_ref_stream_free(&s);
}

/* Feeds text to a SageMaker stream in pieces of every size from 1 to 7. */
static void sm_feed_pieces(tg_ref_stream_t *s, const char *text, size_t piece)
{
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i += piece) {
        const char *d;
        size_t dl;
        size_t take = n - i < piece ? n - i : piece;
        assert_int_equal(tg_ref_stream_feed(s, "PayloadPart", text + i, take, &d, &dl), 0);
    }
}

static void test_stream_sagemaker(void **state)
{
    tg_ref_usage_t u;
    tg_ref_stream_t s;
    /* TGI Server-Sent Events: the last event has the special end token and
     * the whole text again. */
    const char *tgi =
        "data:{\"index\":1,\"token\":{\"id\":1,\"text\":\"Hel\",\"logprob\":-0.1,\"special\":false}"
        ","
        "\"generated_text\":null,\"details\":null}\n\n"
        "data:{\"index\":2,\"token\":{\"id\":2,\"text\":\"lo\",\"logprob\":-0.1,\"special\":false},"
        "\"generated_text\":null,\"details\":null}\n\n"
        "data:{\"index\":3,\"token\":{\"id\":3,\"text\":\"</s>\",\"logprob\":0,\"special\":true},"
        "\"generated_text\":\"Hello\",\"details\":{\"finish_reason\":\"eos_token\","
        "\"generated_tokens\":3,\"input_length\":7}}\n\n";
    tg_ref_call_t c = call_for(TG_REF_OUT_SM_TEXT);
    for (size_t piece = 1; piece <= 7; piece++) {
        assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
        sm_feed_pieces(&s, tgi, piece);
        assert_int_equal(s.done, 1);
        expect_finish(&s, "[{'generated_text':'Hello'}]", &u);
        assert_int_equal(u.have, 1);
        assert_int_equal(u.input, 7);
        assert_int_equal(u.output, 3);
        assert_int_equal(u.output_bytes, 5);
        tg_ref_stream_free(&s);
    }
    /* One event a part: each part's delta. */
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    assert_string_equal(feed(&s, "PayloadPart", "data:{\"token\":{\"text\":\"A\"}}\n\n", 0), "A");
    assert_string_equal(feed(&s, NULL, "data:{\"token\":{\"text\":\"B\"}}\n\n", 0), "B");
    assert_string_equal(feed(&s, "Other", "data:{\"token\":{\"text\":\"C\"}}\n\n", 0), "");
    expect_finish(&s, "[{'generated_text':'AB'}]", &u);
    assert_int_equal(u.have, 0);
    tg_ref_stream_free(&s);

    /* TGI's Messages API (OpenAI-style chunks), its usage chunk, [DONE]. */
    const char *oai =
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"role\":\"assistant\",\"content\":\"Ciao\"},\"finish_reason\":null}]}\n\n"
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[{\"index\":0,\"delta\":"
        "{\"content\":\" mondo\"},\"finish_reason\":\"stop\"}]}\n\n"
        "data: {\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":"
        "{\"prompt_tokens\":20,\"completion_tokens\":2,\"total_tokens\":22}}\n\n"
        "data: [DONE]\n\n";
    c = call_for(TG_REF_OUT_SM_MESSAGES);
    for (size_t piece = 1; piece <= 7; piece += 3) {
        assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
        sm_feed_pieces(&s, oai, piece);
        assert_int_equal(s.done, 1);
        expect_finish(&s, "[{'generated_text':'Ciao mondo'}]", &u);
        assert_int_equal(u.have, 1);
        assert_int_equal(u.input, 20);
        assert_int_equal(u.output, 2);
        tg_ref_stream_free(&s);
    }

    /* JSON Lines (LMI), the last line without its newline. */
    c = call_for(TG_REF_OUT_SM_TEXT);
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    sm_feed_pieces(&s, "{\"token\":{\"text\":\"a\"}}\n{\"token\":{\"text\":\"b\"}}", 5);
    expect_finish(&s, "[{'generated_text':'ab'}]", &u);
    tg_ref_stream_free(&s);
    /* A whole TGI answer on one line. */
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    assert_string_equal(feed(&s, "PayloadPart", "[{\"generated_text\":\"whole\"}]\n", 0), "whole");
    expect_finish(&s, "[{'generated_text':'whole'}]", &u);
    tg_ref_stream_free(&s);

    /* An in-band error; past max_text. */
    assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
    feed(&s, "PayloadPart",
         "data:{\"error\":\"Input validation error\",\"error_type\":\"validation\"}\n\n",
         TG_EUPSTREAM);
    tg_ref_stream_free(&s);
    assert_int_equal(tg_ref_stream_init(&s, &c, 2), 0);
    feed(&s, "PayloadPart", "data:{\"token\":{\"text\":\"abc\"}}\n\n", TG_ETOOBIG);
    tg_ref_stream_free(&s);
}

/* ---- out of memory ------------------------------------------------------ */

/* cJSON's allocations fail once oom_left more have been made. */
static int oom_left = -1;

static void *oom_malloc(size_t n)
{
    if (oom_left == 0) return NULL;
    if (oom_left > 0) oom_left--;
    return malloc(n);
}

static void oom_after(int n)
{
    cJSON_Hooks h = {oom_malloc, free};
    oom_left = n;
    cJSON_InitHooks(&h);
}

static void oom_off(void)
{
    oom_left = -1;
    cJSON_InitHooks(NULL);
}

/* Every allocation failing in turn: TG_ENOMEM (or, where cJSON cannot tell
 * a failed parse from bad JSON, the error bad JSON gets), nothing leaked
 * (ASan), then success with the same answer. */
static void test_out_of_memory(void **state)
{
    static const struct {
        tg_ref_mode_t mode;
        const char *model;
        int stream, sm;
        const char *body;
    } builds[] = {
        {TG_REF_MESSAGES, SONNET, 0, 0,
         "{'inputs':[{'role':'user','content':[{'text':'Hi'}]}],'parameters':{'maxTokens':5,"
         "'system':'s'},'additional_model_fields':{'k':1},'tool_config':" TOOLS "}"},
        {TG_REF_TEXT, SONNET, 0, 0,
         "{'inputs':'Hi','parameters':{'max_tokens':5,'top_k':3,'system':'s'},"
         "'additional_model_fields':{'x':1}}"},
        {TG_REF_TEXT, "anthropic.claude-v2", 0, 0, "{'inputs':'Human: a','parameters':{'t':1}}"},
        {TG_REF_TEXT, "amazon.titan-text-lite-v1", 0, 0, "{'inputs':'a','parameters':{'t':1}}"},
        {TG_REF_TEXT, "meta.llama3-8b-instruct-v1:0", 0, 0, "{'inputs':'a','parameters':{'t':1}}"},
        {TG_REF_EMBEDDINGS, "cohere.embed-english-v3", 0, 0, "{'inputs':'a'}"},
        {TG_REF_EMBEDDINGS, "cohere.embed-english-v3", 0, 0, "{'inputs':['a','b']}"},
        {TG_REF_EMBEDDINGS_IMAGE, "cohere.embed-english-v3", 0, 0, "{'inputs':'iVBOR'}"},
        {TG_REF_EMBEDDINGS_IMAGE, "amazon.titan-embed-image-v1", 0, 0, "{'inputs':'iVBOR'}"},
        {TG_REF_IMAGE, "stability.stable-diffusion-xl-v1", 0, 0, "{'text_prompts':[{'text':'x'}]}"},
        {TG_REF_IMAGE, "amazon.titan-image-generator-v1", 0, 0,
         "{'textToImageParams':{'text':'x'}}"},
        {TG_REF_MESSAGES, "tgi", 1, 1,
         "{'inputs':[{'role':'user','content':'x'}],'parameters':{'InferenceComponentName':'ic'}}"},
    };
    for (size_t i = 0; i < sizeof(builds) / sizeof(builds[0]); i++) {
        cJSON *b = jq(builds[i].body);
        tg_ref_target_t t = {builds[i].mode, builds[i].stream, builds[i].sm, builds[i].model};
        tg_ref_call_t c;
        char err[256], *want = NULL;
        assert_int_equal(tg_ref_build(&t, b, &c, err, sizeof(err)), 0);
        want = strdup(c.body);
        tg_ref_call_free(&c);
        for (int n = 0;; n++) {
            oom_after(n);
            int rc = tg_ref_build(&t, b, &c, err, sizeof(err));
            oom_off();
            if (rc == TG_ENOMEM) {
                assert_null(c.body);
                continue;
            }
            assert_int_equal(rc, 0);
            assert_string_equal(c.body, want);
            tg_ref_call_free(&c);
            break;
        }
        free(want);
        cJSON_Delete(b);
    }

    static const struct {
        tg_ref_out_t out;
        const char *answer, *want;
    } parses[] = {
        {TG_REF_OUT_CONVERSE,
         "{'output':{'message':{'content':[{'text':'a'},{'toolUse':{'toolUseId':'t','name':'n',"
         "'input':{'x':1}}}]}},'usage':{'inputTokens':1,'outputTokens':2}}",
         "[{'generated_text':[{'toolUse':{'toolUseId':'t','name':'n','input':{'x':1}}}]}]"},
        {TG_REF_OUT_CONVERSE, "{'output':{'message':{'content':[{'text':'a'}]}}}",
         "[{'generated_text':'a'}]"},
        {TG_REF_OUT_COHERE_EMBED, "{'embeddings':[[1,2]]}", "[{'embedding':[1,2]}]"},
        {TG_REF_OUT_TITAN_IMAGE, "{'images':['a','b']}", "[{'images':['a','b']}]"},
        {TG_REF_OUT_SM_MESSAGES, "{'choices':[{'message':{'content':' a '}}]}",
         "[{'generated_text':'a'}]"},
    };
    for (size_t i = 0; i < sizeof(parses) / sizeof(parses[0]); i++) {
        tg_ref_call_t c = call_for(parses[i].out);
        char *a = q(parses[i].answer), *want = norm(parses[i].want), *out;
        size_t len;
        tg_ref_usage_t u;
        for (int n = 0;; n++) {
            oom_after(n);
            int rc = tg_ref_parse(&c, a, strlen(a), NULL, 0, &u, &out, &len, NULL, 0);
            oom_off();
            if (rc == TG_ENOMEM || rc == TG_EUPSTREAM) {
                assert_null(out);
                continue;
            }
            assert_int_equal(rc, 0);
            assert_string_equal(out, want);
            free(out);
            break;
        }
        free(a);
        free(want);
    }

    /* A ConverseStream with text and a tool use. */
    static const char *const events[][2] = {
        {"contentBlockDelta", "{'delta':{'text':'a'}}"},
        {"contentBlockStart", "{'start':{'toolUse':{'toolUseId':'t','name':'n'}}}"},
        {"contentBlockDelta", "{'delta':{'toolUse':{'input':'{\\'x\\':'}}}"},
        {"contentBlockDelta", "{'delta':{'toolUse':{'input':'1}'}}}"},
        {"contentBlockStop", "{}"},
        {"metadata", "{'usage':{'inputTokens':1,'outputTokens':2}}"},
    };
    char *want =
        norm("[{'generated_text':[{'toolUse':{'toolUseId':'t','name':'n','input':{'x':1}}}]}]");
    tg_ref_call_t c = call_for(TG_REF_OUT_CONVERSE);
    for (int n = 0;; n++) {
        tg_ref_stream_t s;
        tg_ref_usage_t u;
        char *out = NULL;
        size_t len;
        int rc = 0;
        assert_int_equal(tg_ref_stream_init(&s, &c, 1024), 0);
        oom_after(n);
        for (size_t i = 0; !rc && i < sizeof(events) / sizeof(events[0]); i++) {
            char *p = q(events[i][1]);
            const char *d;
            size_t dl;
            rc = tg_ref_stream_feed(&s, events[i][0], p, strlen(p), &d, &dl);
            free(p);
        }
        if (!rc) rc = tg_ref_stream_finish(&s, &u, &out, &len);
        oom_off();
        tg_ref_stream_free(&s);
        if (rc == TG_ENOMEM || rc == TG_EPROTO) {
            assert_null(out);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_string_equal(out, want);
        assert_int_equal(u.have, 1);
        free(out);
        break;
    }
    free(want);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_notebook_converse_system),
        cmocka_unit_test(test_notebook_converse_multimodal),
        cmocka_unit_test(test_notebook_converse_tools),
        cmocka_unit_test(test_converse_bad),
        cmocka_unit_test(test_notebook_titan_text),
        cmocka_unit_test(test_notebook_claude_v2_text),
        cmocka_unit_test(test_notebook_native_text),
        cmocka_unit_test(test_text_through_converse),
        cmocka_unit_test(test_text_bad),
        cmocka_unit_test(test_notebook_embeddings),
        cmocka_unit_test(test_notebook_image_embeddings),
        cmocka_unit_test(test_notebook_images),
        cmocka_unit_test(test_notebook_sagemaker),
        cmocka_unit_test(test_parse_converse),
        cmocka_unit_test(test_parse_native_text),
        cmocka_unit_test(test_parse_embeddings),
        cmocka_unit_test(test_parse_images),
        cmocka_unit_test(test_parse_sagemaker),
        cmocka_unit_test(test_stream_converse_text),
        cmocka_unit_test(test_stream_converse_tool),
        cmocka_unit_test(test_stream_converse_bad),
        cmocka_unit_test(test_stream_invoke),
        cmocka_unit_test(test_stream_invoke_bad),
        cmocka_unit_test(test_stream_sagemaker),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

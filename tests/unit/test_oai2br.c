/* test_oai2br.c - unit tests for the OpenAI API on Bedrock
 * (src/providers/oai2br.c): chat requests into Converse bodies (tools,
 * system / developer, images, inference parameters, refused fields), Converse
 * answers and ConverseStream events back into chat.completion and
 * chat.completion.chunk, and embeddings through Titan and Cohere.
 *
 * JSON in this file is written with ' for " (see q()), and bodies are
 * compared as printed by cJSON, so key order counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "providers/oai2br.h"

#include "jsonq.h"

/* ---- helpers ------------------------------------------------------------ */

typedef struct {
    int rc, stream, include_usage;
    int64_t max_output;
    char *body;
    size_t len;
    char err[512];
} chat_t;

/* Builds the Converse body for an OpenAI request; the caller's JSON must
 * come back unchanged. */
static chat_t chat(const char *req)
{
    chat_t c;
    memset(&c, 0, sizeof(c));
    cJSON *r = jq(req);
    char *before = cJSON_PrintUnformatted(r);
    c.rc = tg_oai2br_chat_request(r, &c.body, &c.len, &c.stream, &c.include_usage, &c.max_output,
                                  c.err, sizeof(c.err));
    char *after = cJSON_PrintUnformatted(r);
    assert_string_equal(before, after);
    free(before);
    free(after);
    cJSON_Delete(r);
    return c;
}

static void expect_body(const char *req, const char *want)
{
    chat_t c = chat(req);
    if (c.rc) fail_msg("rc %d: %s", c.rc, c.err);
    assert_json(c.body, c.len, want);
    free(c.body);
}

/* The request is refused with TG_EINVAL and an err containing want. */
static void expect_refused(const char *req, const char *want)
{
    chat_t c = chat(req);
    if (c.rc != TG_EINVAL) fail_msg("%s: rc %d, body %s", req, c.rc, c.body ? c.body : "");
    assert_null(c.body);
    assert_int_equal(c.len, 0);
    if (!strstr(c.err, want)) fail_msg("err '%s' does not say '%s'", c.err, want);
}

/* A Converse message list is alternating, starting with user. */
static void assert_alternating(const char *body)
{
    cJSON *j = cJSON_Parse(body), *m;
    assert_non_null(j);
    int i = 0;
    cJSON_ArrayForEach(m, cJSON_GetObjectItem(j, "messages"))
    {
        const char *role = cJSON_GetStringValue(cJSON_GetObjectItem(m, "role"));
        assert_string_equal(role, i % 2 ? "assistant" : "user");
        i++;
    }
    assert_true(i > 0);
    cJSON_Delete(j);
}

static char *response(const char *answer, int64_t *counts, int *rc)
{
    char *a = q(answer), *out = NULL, err[256];
    size_t len = 0;
    *rc = tg_oai2br_chat_response(a, strlen(a), "chatcmpl-1", 1700000000, "claude", &out, &len,
                                  &counts[0], &counts[1], &counts[2], &counts[3], err, sizeof(err));
    free(a);
    if (!*rc) assert_int_equal(len, strlen(out));
    return out;
}

/* Feeds one ConverseStream event (payload with ' for "). */
static int feed(tg_oai2br_stream_t *s, const char *type, const char *payload, tg_buf_t *out)
{
    char *p = q(payload);
    int rc = tg_oai2br_stream_feed(s, type, p, strlen(p), out);
    free(p);
    return rc;
}

/* The SSE text as a JSON array of its chunks: every event must be
 * "data: <JSON object>\n\n"; a final "data: [DONE]" sets *done. */
static cJSON *chunks(const char *sse, int *done)
{
    cJSON *list = cJSON_CreateArray();
    *done = 0;
    const char *p = sse;
    while (*p) {
        const char *end = strstr(p, "\n\n");
        assert_non_null(end);
        assert_memory_equal(p, "data: ", 6);
        assert_false(*done); /* nothing after [DONE] */
        if ((size_t)(end - p) == 12 && memcmp(p + 6, "[DONE]", 6) == 0) {
            *done = 1;
        } else {
            cJSON *j = cJSON_ParseWithLength(p + 6, (size_t)(end - p - 6));
            if (!cJSON_IsObject(j)) fail_msg("not a JSON object: %.*s", (int)(end - p), p);
            cJSON_AddItemToArray(list, j);
        }
        p = end + 2;
    }
    return list;
}

static cJSON *at(const cJSON *o, const char *path)
{
    /* a dotted path; a number after a dot indexes an array */
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", path);
    const cJSON *cur = o;
    for (char *save = NULL, *k = strtok_r(buf, ".", &save); cur && k;
         k = strtok_r(NULL, ".", &save)) {
        cur = (*k >= '0' && *k <= '9') ? cJSON_GetArrayItem(cur, atoi(k))
                                       : cJSON_GetObjectItemCaseSensitive(cur, k);
    }
    return (cJSON *)cur;
}

static const char *at_str(const cJSON *o, const char *path)
{
    return cJSON_GetStringValue(at(o, path));
}

/* Every chunk carries the stream's id, object, created and model, and
 * "usage" exactly when include_usage (null but on the usage chunk). */
static void assert_chunk_heads(const cJSON *list, int include_usage)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, list)
    {
        assert_string_equal(at_str(c, "id"), "chatcmpl-s");
        assert_string_equal(at_str(c, "object"), "chat.completion.chunk");
        assert_int_equal(at(c, "created")->valuedouble, 1700000001);
        assert_string_equal(at_str(c, "model"), "gpt-4o");
        const cJSON *u = at(c, "usage");
        if (!include_usage) {
            assert_null(u);
        } else {
            assert_non_null(u);
            assert_true(cJSON_IsNull(u) == (cJSON_GetArraySize(at(c, "choices")) == 1));
        }
    }
}

#define WEATHER_TOOL                                                                               \
    "{'type':'function','function':{'name':'get_weather','description':'Weather in a city',"       \
    "'parameters':{'type':'object','properties':{'city':{'type':'string'}},'required':['city']}}}"
#define WEATHER_SPEC                                                                               \
    "{'toolSpec':{'name':'get_weather','description':'Weather in a city','inputSchema':{'json':"   \
    "{'type':'object','properties':{'city':{'type':'string'}},'required':['city']}}}}"

/* ---- chat requests ------------------------------------------------------ */

static void test_tools_round_trip(void **state)
{
    /* 1. the question, with tools */
    expect_body("{'model':'gpt-4o','messages':[{'role':'system','content':'Be brief.'},"
                "{'role':'user','content':'Weather in Paris?'}],'tools':[" WEATHER_TOOL "],"
                "'tool_choice':'auto','parallel_tool_calls':true}",
                "{'messages':[{'role':'user','content':[{'text':'Weather in Paris?'}]}],"
                "'system':[{'text':'Be brief.'}],"
                "'toolConfig':{'tools':[" WEATHER_SPEC "],'toolChoice':{'auto':{}}}}");

    /* 2. Bedrock answers with a tool use */
    int64_t n[4];
    int rc;
    char *out = response("{'output':{'message':{'role':'assistant','content':["
                         "{'text':'Let me check.'},{'toolUse':{'toolUseId':'tooluse_1',"
                         "'name':'get_weather','input':{'city':'Paris'}}}]}},"
                         "'stopReason':'tool_use','usage':{'inputTokens':50,'outputTokens':20,"
                         "'totalTokens':70},'metrics':{'latencyMs':300}}",
                         n, &rc);
    assert_int_equal(rc, 0);
    assert_json(out, strlen(out),
                "{'id':'chatcmpl-1','object':'chat.completion','created':1700000000,"
                "'model':'claude','choices':[{'index':0,'message':{'role':'assistant',"
                "'content':'Let me check.','refusal':null,'tool_calls':[{'id':'tooluse_1',"
                "'type':'function','function':{'name':'get_weather',"
                "'arguments':'{\\'city\\':\\'Paris\\'}'}}]},'logprobs':null,"
                "'finish_reason':'tool_calls'}],'usage':{'prompt_tokens':50,"
                "'completion_tokens':20,'total_tokens':70,'prompt_tokens_details':"
                "{'cached_tokens':0}},'system_fingerprint':null}");
    /* the arguments are a JSON string that parses to the input */
    cJSON *r = cJSON_Parse(out);
    cJSON *args = cJSON_Parse(at_str(r, "choices.0.message.tool_calls.0.function.arguments"));
    assert_string_equal(at_str(args, "city"), "Paris");
    cJSON_Delete(args);
    cJSON_Delete(r);
    free(out);
    assert_int_equal(n[0], 50);
    assert_int_equal(n[1], 20);

    /* 3. the follow-up: the assistant's tool_calls and the tool's answer,
     * then one more user message, which joins the tool result's turn */
    const char *follow =
        "{'model':'gpt-4o','messages':[{'role':'system','content':'Be brief.'},"
        "{'role':'user','content':'Weather in Paris?'},"
        "{'role':'assistant','content':null,'tool_calls':[{'id':'tooluse_1','type':'function',"
        "'function':{'name':'get_weather','arguments':'{\\'city\\':\\'Paris\\'}'}}]},"
        "{'role':'tool','tool_call_id':'tooluse_1','content':'18C, sunny'},"
        "{'role':'user','content':'And in Fahrenheit?'}],'tools':[" WEATHER_TOOL "]}";
    const char *want =
        "{'messages':[{'role':'user','content':[{'text':'Weather in Paris?'}]},"
        "{'role':'assistant','content':[{'toolUse':{'toolUseId':'tooluse_1','name':'get_weather',"
        "'input':{'city':'Paris'}}}]},"
        "{'role':'user','content':[{'toolResult':{'toolUseId':'tooluse_1','content':"
        "[{'text':'18C, sunny'}],'status':'success'}},{'text':'And in Fahrenheit?'}]}],"
        "'system':[{'text':'Be brief.'}],'toolConfig':{'tools':[" WEATHER_SPEC "]}}";
    expect_body(follow, want);
    chat_t c = chat(follow);
    assert_int_equal(c.rc, 0);
    assert_alternating(c.body);
    free(c.body);

    /* two parallel calls: text and both toolUse blocks in one assistant
     * turn, both tool messages in one user turn */
    c = chat("{'messages':[{'role':'user','content':'Paris and Rome?'},"
             "{'role':'assistant','content':'Checking both.','tool_calls':["
             "{'id':'a','type':'function','function':{'name':'get_weather',"
             "'arguments':'{\\'city\\':\\'Paris\\'}'}},"
             "{'id':'b','type':'function','function':{'name':'get_weather',"
             "'arguments':'{\\'city\\':\\'Rome\\'}'}}]},"
             "{'role':'tool','tool_call_id':'a','content':'18C'},"
             "{'role':'tool','tool_call_id':'b','content':[{'type':'text','text':'25C'}]}],"
             "'tools':[" WEATHER_TOOL "]}");
    assert_int_equal(c.rc, 0);
    assert_json(c.body, c.len,
                "{'messages':[{'role':'user','content':[{'text':'Paris and Rome?'}]},"
                "{'role':'assistant','content':[{'text':'Checking both.'},{'toolUse':"
                "{'toolUseId':'a','name':'get_weather','input':{'city':'Paris'}}},{'toolUse':"
                "{'toolUseId':'b','name':'get_weather','input':{'city':'Rome'}}}]},"
                "{'role':'user','content':[{'toolResult':{'toolUseId':'a','content':"
                "[{'text':'18C'}],'status':'success'}},{'toolResult':{'toolUseId':'b',"
                "'content':[{'text':'25C'}],'status':'success'}}]}],"
                "'toolConfig':{'tools':[" WEATHER_SPEC "]}}");
    assert_alternating(c.body);
    free(c.body);
}

static void test_tool_choice(void **state)
{
    /* required -> any; a named function -> tool; a tool without parameters
     * gets an empty object schema, an empty description is left out */
    expect_body("{'messages':[{'role':'user','content':'x'}],'tools':[" WEATHER_TOOL "],"
                "'tool_choice':'required'}",
                "{'messages':[{'role':'user','content':[{'text':'x'}]}],"
                "'toolConfig':{'tools':[" WEATHER_SPEC "],'toolChoice':{'any':{}}}}");
    expect_body("{'messages':[{'role':'user','content':'x'}],'tools':[{'type':'function',"
                "'function':{'name':'now','description':''}}],"
                "'tool_choice':{'type':'function','function':{'name':'now'}}}",
                "{'messages':[{'role':'user','content':[{'text':'x'}]}],'toolConfig':{'tools':["
                "{'toolSpec':{'name':'now','inputSchema':{'json':{'type':'object',"
                "'properties':{}}}}}],'toolChoice':{'tool':{'name':'now'}}}}");
    /* none: no toolConfig at all while the history has no tool blocks... */
    expect_body("{'messages':[{'role':'user','content':'x'}],'tools':[" WEATHER_TOOL "],"
                "'tool_choice':'none'}",
                "{'messages':[{'role':'user','content':[{'text':'x'}]}]}");
    expect_body("{'messages':[{'role':'user','content':'x'}],'tool_choice':'none'}",
                "{'messages':[{'role':'user','content':[{'text':'x'}]}]}");
    /* ...but the tools without a toolChoice once it has, as Converse needs */
    expect_body("{'messages':[{'role':'user','content':'x'},{'role':'assistant','tool_calls':"
                "[{'id':'a','type':'function','function':{'name':'get_weather',"
                "'arguments':''}}]},{'role':'tool','tool_call_id':'a','content':''}],"
                "'tools':[" WEATHER_TOOL "],'tool_choice':'none'}",
                "{'messages':[{'role':'user','content':[{'text':'x'}]},{'role':'assistant',"
                "'content':[{'toolUse':{'toolUseId':'a','name':'get_weather','input':{}}}]},"
                "{'role':'user','content':[{'toolResult':{'toolUseId':'a','content':"
                "[{'text':''}],'status':'success'}}]}],'toolConfig':{'tools':[" WEATHER_SPEC "]}}");
    /* no tool_choice: Converse's default (auto), not sent */
    expect_body("{'messages':[{'role':'user','content':'x'}],'tools':[" WEATHER_TOOL "]}",
                "{'messages':[{'role':'user','content':[{'text':'x'}]}],"
                "'toolConfig':{'tools':[" WEATHER_SPEC "]}}");
}

static void test_system_developer(void **state)
{
    /* system and developer, string or text parts, wherever they stand, in
     * order; consecutive user messages merge */
    expect_body("{'messages':[{'role':'system','content':'One.'},"
                "{'role':'developer','content':[{'type':'text','text':'Two.'},"
                "{'type':'text','text':'Three.'}]},"
                "{'role':'user','content':'Hi'},{'role':'user','content':[{'type':'text',"
                "'text':'there'}]},{'role':'assistant','content':[{'type':'text','text':'Hello'}]},"
                "{'role':'system','content':'Four.'},{'role':'user','content':'Bye'}]}",
                "{'messages':[{'role':'user','content':[{'text':'Hi'},{'text':'there'}]},"
                "{'role':'assistant','content':[{'text':'Hello'}]},"
                "{'role':'user','content':[{'text':'Bye'}]}],"
                "'system':[{'text':'One.'},{'text':'Two.'},{'text':'Three.'},{'text':'Four.'}]}");
    expect_refused("{'messages':[{'role':'system','content':[{'type':'image_url','image_url':"
                   "{'url':'data:image/png;base64,AAAA'}}]},{'role':'user','content':'x'}]}",
                   "messages[0].content[0].type 'image_url' is not supported");
    expect_refused("{'messages':[{'role':'system','content':'only a system prompt'}]}",
                   "no user or assistant message");
}

static void test_image_data_url(void **state)
{
    expect_body("{'messages':[{'role':'user','content':[{'type':'text','text':'What is this?'},"
                "{'type':'image_url','image_url':{'url':'data:image/png;base64,iVBORw0KGgo=',"
                "'detail':'high'}},{'type':'image_url','image_url':"
                "{'url':'data:image/jpg;base64,/9j/4AAQ'}},{'type':'image_url','image_url':"
                "{'url':'data:image/webp;base64,UklGRg=='}},{'type':'image_url','image_url':"
                "{'url':'data:image/gif;base64,R0lGODlh'}}]}]}",
                "{'messages':[{'role':'user','content':[{'text':'What is this?'},"
                "{'image':{'format':'png','source':{'bytes':'iVBORw0KGgo='}}},"
                "{'image':{'format':'jpeg','source':{'bytes':'/9j/4AAQ'}}},"
                "{'image':{'format':'webp','source':{'bytes':'UklGRg=='}}},"
                "{'image':{'format':'gif','source':{'bytes':'R0lGODlh'}}}]}]}");
}

static void test_image_refused(void **state)
{
    static const struct {
        const char *url, *want;
    } cases[] = {
        {"https://example.com/cat.png", "Bedrock needs the image bytes, not a link"},
        {"HTTP://example.com/cat.png", "send a data: URL"},
        {"data:image/svg+xml;base64,PHN2Zz4=", "image type 'image/svg+xml' is not supported"},
        {"data:image/png;base64,not base64!", "is not valid base64"},
        {"data:image/png;base64,", "is not valid base64"},
        {"data:image/png,rawbytes", "must be a base64 data: URL"},
        {"data:;,", "must be a base64 data: URL"},
        {"file:///etc/passwd", "must be a base64 data: URL"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char req[512];
        snprintf(req, sizeof(req),
                 "{'messages':[{'role':'user','content':[{'type':'text','text':'x'},"
                 "{'type':'image_url','image_url':{'url':'%s'}}]}]}",
                 cases[i].url);
        expect_refused(req, cases[i].want);
        expect_refused(req, "messages[0].content[1].image_url");
    }
}

static void test_inference_config(void **state)
{
    chat_t c = chat("{'messages':[{'role':'user','content':'x'}],'max_tokens':100,"
                    "'max_completion_tokens':300,'temperature':0.5,'top_p':0.9,'stop':'END',"
                    "'stream':true,'stream_options':{'include_usage':true},'seed':7,'user':'u1',"
                    "'metadata':{'k':'v'},'store':false,'service_tier':'auto','n':1,"
                    "'logprobs':false,'logit_bias':{},'frequency_penalty':0,'presence_penalty':0,"
                    "'modalities':['text'],'response_format':{'type':'text'},'top_logprobs':0,"
                    "'some_future_field':{'x':1}}");
    assert_int_equal(c.rc, 0);
    assert_json(c.body, c.len,
                "{'messages':[{'role':'user','content':[{'text':'x'}]}],'inferenceConfig':"
                "{'maxTokens':300,'temperature':0.5,'topP':0.9,'stopSequences':['END']}}");
    assert_int_equal(c.max_output, 300);
    assert_int_equal(c.stream, 1);
    assert_int_equal(c.include_usage, 1);
    free(c.body);

    c = chat("{'messages':[{'role':'user','content':'x'}],'max_tokens':100,"
             "'max_completion_tokens':null,'stop':['a','b'],'stream_options':"
             "{'include_usage':true}}");
    assert_int_equal(c.rc, 0);
    assert_json(c.body, c.len,
                "{'messages':[{'role':'user','content':[{'text':'x'}]}],'inferenceConfig':"
                "{'maxTokens':100,'stopSequences':['a','b']}}");
    assert_int_equal(c.max_output, 100);
    assert_int_equal(c.stream, 0);
    assert_int_equal(c.include_usage, 0); /* only with stream */
    free(c.body);

    c = chat("{'messages':[{'role':'user','content':'x'}],'stop':[],'stream':true}");
    assert_int_equal(c.rc, 0);
    assert_json(c.body, c.len, "{'messages':[{'role':'user','content':[{'text':'x'}]}]}");
    assert_int_equal(c.max_output, 0);
    assert_int_equal(c.stream, 1);
    assert_int_equal(c.include_usage, 0);
    free(c.body);

    expect_refused("{'messages':[{'role':'user','content':'x'}],'max_tokens':0}",
                   "max_tokens must be a positive integer");
    expect_refused("{'messages':[{'role':'user','content':'x'}],'max_tokens':9,"
                   "'max_completion_tokens':1.5}",
                   "max_completion_tokens must be a positive integer");
    expect_refused("{'messages':[{'role':'user','content':'x'}],'temperature':'hot'}",
                   "temperature must be a number");
    expect_refused("{'messages':[{'role':'user','content':'x'}],'top_p':true}",
                   "top_p must be a number");
    expect_refused("{'messages':[{'role':'user','content':'x'}],'stop':['a',1]}",
                   "stop must be a string or an array of strings");
}

static void test_refused_fields(void **state)
{
#define U "'messages':[{'role':'user','content':'x'}]"
    static const struct {
        const char *req, *want;
    } cases[] = {
        {"{" U ",'n':2}", "n must be 1"},
        {"{" U ",'logprobs':true}", "logprobs is not supported for Bedrock models"},
        {"{" U ",'top_logprobs':3}", "top_logprobs is not supported"},
        {"{" U ",'response_format':{'type':'json_schema','json_schema':{'name':'a','schema':{}}}}",
         "response_format type 'json_schema' is not supported for Bedrock models yet"},
        {"{" U ",'response_format':{'type':'json_object'}}",
         "response_format type 'json_object' is not supported"},
        {"{" U ",'audio':{'voice':'alloy','format':'mp3'}}", "audio is not supported"},
        {"{" U ",'modalities':['text','audio']}", "modalities other than 'text'"},
        {"{" U ",'prediction':{'type':'content','content':'x'}}", "prediction is not supported"},
        {"{" U ",'logit_bias':{'50256':-100}}", "logit_bias is not supported"},
        {"{" U ",'functions':[{'name':'f'}]}",
         "functions is not supported for Bedrock models (use tools)"},
        {"{" U ",'function_call':'auto'}", "function_call is not supported"},
        {"{" U ",'frequency_penalty':0.5}", "frequency_penalty is not supported"},
        {"{" U ",'presence_penalty':-1}", "presence_penalty is not supported"},
        {"{" U ",'reasoning_effort':'high'}", "reasoning_effort is not supported"},
        {"{" U ",'web_search_options':{}}", "web_search_options is not supported"},
        {"{'messages':[{'role':'user','content':[{'type':'input_audio','input_audio':"
         "{'data':'AAAA','format':'wav'}}]}]}",
         "messages[0].content[0].type 'input_audio' is not supported for Bedrock models"},
        {"{'messages':[{'role':'user','content':[{'type':'file','file':{'file_id':'f'}}]}]}",
         "messages[0].content[0].type 'file' is not supported"},
        {"{'messages':[{'role':'user','content':[{'text':'no type'}]}]}",
         "messages[0].content[0].type is required"},
        {"{'messages':[{'role':'user','content':'x'},{'role':'function','name':'f',"
         "'content':'r'}]}",
         "messages[1].role 'function' is not supported"},
        {"{'messages':[{'role':'robot','content':'x'}]}", "messages[0].role 'robot' is not one of"},
        {"{'messages':[{'content':'x'}]}", "messages[0].role is required"},
        {"{'messages':[{'role':'user','content':''}]}", "messages[0] has no content"},
        {"{'messages':[{'role':'user','content':'x'},{'role':'assistant','content':null}]}",
         "messages[1] has no content"},
        {"{'messages':[{'role':'user','content':'x'},{'role':'assistant','tool_calls':[{'id':'a',"
         "'type':'function','function':{'name':'f','arguments':'{bad'}}]}]}",
         "messages[1].tool_calls[0].function.arguments is not valid JSON"},
        {"{'messages':[{'role':'user','content':'x'},{'role':'assistant','tool_calls':[{"
         "'type':'function','function':{'name':'f','arguments':'{}'}}]}]}",
         "messages[1].tool_calls[0].id is required"},
        {"{'messages':[{'role':'user','content':'x'},{'role':'assistant','function_call':"
         "{'name':'f','arguments':'{}'}}]}",
         "messages[1].function_call is not supported (use tool_calls)"},
        {"{'messages':[{'role':'tool','content':'r'}]}", "messages[0].tool_call_id is required"},
        {"{'messages':[{'role':'user','content':42}]}",
         "messages[0].content must be a string or an array of parts"},
        {"{'messages':'hi'}", "messages is required"},
        {"{}", "messages is required"},
        {"{" U ",'tools':[{'type':'custom','custom':{'name':'c'}}]}",
         "tools[0].type 'custom' is not supported"},
        {"{" U ",'tools':[{'type':'function','function':{'description':'d'}}]}",
         "tools[0].function.name is required"},
        {"{" U ",'tool_choice':'auto'}", "tool_choice needs tools"},
        {"{" U ",'tools':[" WEATHER_TOOL "],'tool_choice':'sometimes'}",
         "tool_choice 'sometimes' is not one of none, auto, required"},
        {"{" U ",'tools':[" WEATHER_TOOL "],'tool_choice':{'type':'function','function':"
         "{'name':'other'}}}",
         "tool_choice.function.name 'other' is not in tools"},
        {"{" U ",'tools':[" WEATHER_TOOL "],'tool_choice':{'type':'allowed_tools'}}",
         "tool_choice type 'allowed_tools' is not supported"},
    };
#undef U
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_refused(cases[i].req, cases[i].want);

    /* not an object at all */
    char *out = (char *)1, err[64];
    size_t len = 1;
    int s, iu;
    int64_t mo;
    cJSON *arr = cJSON_CreateArray();
    assert_int_equal(tg_oai2br_chat_request(arr, &out, &len, &s, &iu, &mo, err, sizeof(err)),
                     TG_EINVAL);
    assert_null(out);
    cJSON_Delete(arr);
}

/* ---- chat answers ------------------------------------------------------- */

static void test_response_stop_reasons(void **state)
{
    static const struct {
        const char *stop, *finish;
    } cases[] = {
        {"end_turn", "stop"},
        {"stop_sequence", "stop"},
        {"max_tokens", "length"},
        {"model_context_window_exceeded", "length"},
        {"tool_use", "tool_calls"},
        {"guardrail_intervened", "content_filter"},
        {"content_filtered", "content_filter"},
        {"malformed_model_output", "stop"},
        {"malformed_tool_use", "stop"},
        {"something_new", "stop"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char a[256];
        snprintf(a, sizeof(a),
                 "{'output':{'message':{'role':'assistant','content':[{'text':'a'},"
                 "{'text':'b'}]}},'stopReason':'%s','usage':{'inputTokens':1,"
                 "'outputTokens':2,'totalTokens':3}}",
                 cases[i].stop);
        int64_t n[4];
        int rc;
        char *out = response(a, n, &rc);
        assert_int_equal(rc, 0);
        cJSON *r = cJSON_Parse(out);
        assert_string_equal(at_str(r, "choices.0.finish_reason"), cases[i].finish);
        assert_string_equal(at_str(r, "choices.0.message.content"), "ab"); /* no separator */
        assert_null(at(r, "choices.0.message.tool_calls"));
        cJSON_Delete(r);
        free(out);
    }
}

static void test_response_usage_cached(void **state)
{
    int64_t n[4];
    int rc;
    char *out = response("{'output':{'message':{'role':'assistant','content':[{'toolUse':"
                         "{'toolUseId':'t1','name':'f','input':{}}},{'reasoningContent':"
                         "{'reasoningText':{'text':'hmm'}}}]}},'stopReason':'tool_use',"
                         "'usage':{'inputTokens':10,'outputTokens':5,'totalTokens':1015,"
                         "'cacheReadInputTokens':800,'cacheWriteInputTokens':200}}",
                         n, &rc);
    assert_int_equal(rc, 0);
    assert_json(out, strlen(out),
                "{'id':'chatcmpl-1','object':'chat.completion','created':1700000000,"
                "'model':'claude','choices':[{'index':0,'message':{'role':'assistant',"
                "'content':null,'refusal':null,'tool_calls':[{'id':'t1','type':'function',"
                "'function':{'name':'f','arguments':'{}'}}]},'logprobs':null,"
                "'finish_reason':'tool_calls'}],'usage':{'prompt_tokens':1010,"
                "'completion_tokens':5,'total_tokens':1015,'prompt_tokens_details':"
                "{'cached_tokens':800}},'system_fingerprint':null}");
    free(out);
    assert_int_equal(n[0], 10);
    assert_int_equal(n[1], 5);
    assert_int_equal(n[2], 800);
    assert_int_equal(n[3], 200);

    /* no usage at all: zeros, and an empty answer is "" */
    out = response("{'output':{'message':{'role':'assistant','content':[]}},"
                   "'stopReason':'end_turn'}",
                   n, &rc);
    assert_int_equal(rc, 0);
    cJSON *r = cJSON_Parse(out);
    assert_string_equal(at_str(r, "choices.0.message.content"), "");
    assert_int_equal(at(r, "usage.total_tokens")->valuedouble, 0);
    cJSON_Delete(r);
    free(out);
    assert_int_equal(n[0] + n[1] + n[2] + n[3], 0);
}

static void test_response_bad(void **state)
{
    static const char *const bad[] = {"not json", "{'output':{}}", "[]",
                                      "{'output':{'message':{'content':'x'}}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *a = q(bad[i]), *out = (char *)1, err[128];
        size_t len = 9;
        int64_t n[4];
        int rc = tg_oai2br_chat_response(a, strlen(a), "id", 1, "m", &out, &len, &n[0], &n[1],
                                         &n[2], &n[3], err, sizeof(err));
        assert_int_equal(rc, TG_EUPSTREAM);
        assert_null(out);
        assert_int_equal(len, 0);
        assert_non_null(strstr(err, "output.message.content"));
        free(a);
    }
}

/* ---- streams ------------------------------------------------------------ */

static void test_stream_text(void **state)
{
    tg_oai2br_stream_t s;
    tg_buf_t out;
    tg_buf_init(&out, 0);
    tg_oai2br_stream_init(&s, "chatcmpl-s", 1700000001, "gpt-4o", 0);
    assert_int_equal(feed(&s, "messageStart", "{'role':'assistant'}", &out), 0);
    assert_int_equal(
        feed(&s, "contentBlockDelta", "{'delta':{'text':'Hel'},'contentBlockIndex':0}", &out), 0);
    assert_int_equal(feed(&s, "contentBlockDelta",
                          "{'delta':{'text':'lo \\'world\\'\\n'},'contentBlockIndex':0}", &out),
                     0);
    assert_int_equal(feed(&s, "contentBlockStop", "{'contentBlockIndex':0}", &out), 0);
    assert_int_equal(feed(&s, "messageStop", "{'stopReason':'max_tokens'}", &out), 0);
    assert_int_equal(feed(&s, "metadata",
                          "{'usage':{'inputTokens':7,'outputTokens':3,'totalTokens':10},"
                          "'metrics':{'latencyMs':100}}",
                          &out),
                     0);
    assert_true(s.finished);
    assert_string_equal(s.finish_reason, "length");
    assert_true(s.have_usage);
    assert_int_equal(s.in, 7);
    assert_int_equal(s.out, 3);
    assert_int_equal(tg_oai2br_stream_finish(&s, &out, 1), 0);

    int done;
    cJSON *list = chunks(out.data, &done);
    assert_true(done);
    assert_int_equal(cJSON_GetArraySize(list), 4); /* role, 2 text, finish; no usage chunk */
    assert_chunk_heads(list, 0);
    char *first = cJSON_PrintUnformatted(cJSON_GetArrayItem(list, 0));
    assert_json(first, strlen(first),
                "{'id':'chatcmpl-s','object':'chat.completion.chunk','created':1700000001,"
                "'model':'gpt-4o','system_fingerprint':null,'choices':[{'index':0,"
                "'delta':{'role':'assistant','content':'','refusal':null},'logprobs':null,"
                "'finish_reason':null}]}");
    free(first);
    assert_string_equal(at_str(list, "1.choices.0.delta.content"), "Hel");
    assert_true(cJSON_IsNull(at(list, "1.choices.0.finish_reason")));
    assert_string_equal(at_str(list, "2.choices.0.delta.content"), "lo \"world\"\n");
    assert_null(at(list, "3.choices.0.delta.content"));
    assert_int_equal(cJSON_GetArraySize(at(list, "3.choices.0.delta")), 0);
    assert_string_equal(at_str(list, "3.choices.0.finish_reason"), "length");
    cJSON_Delete(list);

    /* done = 0 holds [DONE] back; no messageStart still opens with the role */
    tg_buf_reset(&out);
    tg_oai2br_stream_init(&s, "chatcmpl-s", 1700000001, "gpt-4o", 0);
    assert_int_equal(feed(&s, "contentBlockDelta", "{'delta':{'text':'x'}}", &out), 0);
    assert_int_equal(tg_oai2br_stream_finish(&s, &out, 0), 0);
    list = chunks(out.data, &done);
    assert_false(done);
    assert_int_equal(cJSON_GetArraySize(list), 2);
    assert_string_equal(at_str(list, "0.choices.0.delta.role"), "assistant");
    assert_string_equal(at_str(list, "1.choices.0.delta.content"), "x");
    cJSON_Delete(list);
    tg_buf_free(&out);
}

static void test_stream_tool_call(void **state)
{
    tg_oai2br_stream_t s;
    tg_buf_t out;
    tg_buf_init(&out, 0);
    tg_oai2br_stream_init(&s, "chatcmpl-s", 1700000001, "gpt-4o", 1);
    assert_int_equal(feed(&s, "messageStart", "{'role':'assistant'}", &out), 0);
    assert_int_equal(
        feed(&s, "contentBlockDelta", "{'delta':{'text':'Checking.'},'contentBlockIndex':0}", &out),
        0);
    assert_int_equal(feed(&s, "contentBlockStop", "{'contentBlockIndex':0}", &out), 0);
    assert_int_equal(feed(&s, "contentBlockStart",
                          "{'start':{'toolUse':{'toolUseId':'tooluse_9','name':'get_weather'}},"
                          "'contentBlockIndex':1}",
                          &out),
                     0);
    static const char *const pieces[] = {"{\\'ci", "ty\\': \\'Par", "is\\'}"};
    for (int i = 0; i < 3; i++) {
        char p[128];
        snprintf(p, sizeof(p), "{'delta':{'toolUse':{'input':'%s'}},'contentBlockIndex':1}",
                 pieces[i]);
        assert_int_equal(feed(&s, "contentBlockDelta", p, &out), 0);
    }
    assert_int_equal(feed(&s, "contentBlockStop", "{'contentBlockIndex':1}", &out), 0);
    /* a second tool use gets index 1 */
    assert_int_equal(feed(&s, "contentBlockStart",
                          "{'start':{'toolUse':{'toolUseId':'tooluse_10','name':'now'}},"
                          "'contentBlockIndex':2}",
                          &out),
                     0);
    assert_int_equal(feed(&s, "contentBlockStop", "{'contentBlockIndex':2}", &out), 0);
    assert_int_equal(feed(&s, "messageStop", "{'stopReason':'tool_use'}", &out), 0);
    assert_int_equal(feed(&s, "metadata",
                          "{'usage':{'inputTokens':40,'outputTokens':12,'totalTokens':152,"
                          "'cacheReadInputTokens':100},'metrics':{'latencyMs':9}}",
                          &out),
                     0);
    assert_int_equal(tg_oai2br_stream_finish(&s, &out, 1), 0);

    int done;
    cJSON *list = chunks(out.data, &done);
    assert_true(done);
    /* role, text, tool start, 3 pieces, second tool start, finish, usage */
    assert_int_equal(cJSON_GetArraySize(list), 9);
    assert_chunk_heads(list, 1);
    char *start = cJSON_PrintUnformatted(at(list, "2.choices.0.delta"));
    assert_json(start, strlen(start),
                "{'tool_calls':[{'index':0,'id':'tooluse_9','type':'function','function':"
                "{'name':'get_weather','arguments':''}}]}");
    free(start);
    tg_buf_t args;
    tg_buf_init(&args, 0);
    for (int i = 3; i < 6; i++) {
        char path[64];
        snprintf(path, sizeof(path), "%d.choices.0.delta.tool_calls.0", i);
        const cJSON *tc = at(list, path);
        assert_int_equal(at(tc, "index")->valuedouble, 0);
        assert_null(at(tc, "id"));
        assert_null(at(tc, "function.name"));
        assert_int_equal(tg_buf_appends(&args, at_str(tc, "function.arguments")), 0);
    }
    cJSON *a = cJSON_Parse(args.data);
    assert_non_null(a);
    assert_string_equal(at_str(a, "city"), "Paris");
    cJSON_Delete(a);
    tg_buf_free(&args);
    assert_int_equal(at(list, "6.choices.0.delta.tool_calls.0.index")->valuedouble, 1);
    assert_string_equal(at_str(list, "6.choices.0.delta.tool_calls.0.id"), "tooluse_10");
    assert_string_equal(at_str(list, "7.choices.0.finish_reason"), "tool_calls");
    char *usage = cJSON_PrintUnformatted(cJSON_GetArrayItem(list, 8));
    assert_json(usage, strlen(usage),
                "{'id':'chatcmpl-s','object':'chat.completion.chunk','created':1700000001,"
                "'model':'gpt-4o','system_fingerprint':null,'choices':[],'usage':{"
                "'prompt_tokens':140,'completion_tokens':12,'total_tokens':152,"
                "'prompt_tokens_details':{'cached_tokens':100}}}");
    free(usage);
    cJSON_Delete(list);
    tg_buf_free(&out);
}

static void test_stream_bad(void **state)
{
    tg_oai2br_stream_t s;
    tg_buf_t out;
    tg_buf_init(&out, 0);
    tg_oai2br_stream_init(&s, "chatcmpl-s", 1, "m", 0);
    assert_int_equal(feed(&s, "messageStart", "{'role':'assistant'}", &out), 0);
    size_t len = out.len;
    assert_int_equal(feed(&s, "contentBlockDelta", "{not json", &out), TG_EPROTO);
    assert_int_equal(feed(&s, "contentBlockDelta", "[1]", &out), TG_EPROTO);
    /* a tool piece with no tool use open */
    assert_int_equal(feed(&s, "contentBlockDelta", "{'delta':{'toolUse':{'input':'{}'}}}", &out),
                     TG_EPROTO);
    assert_int_equal(feed(&s, "contentBlockStart", "{'start':{'toolUse':{'name':'f'}}}", &out),
                     TG_EPROTO);
    /* exceptions and unknown events are the caller's business */
    assert_int_equal(feed(&s, "throttlingException", "{'message':'slow down'}", &out), 0);
    assert_int_equal(feed(&s, "somethingNew", "garbage", &out), 0);
    assert_int_equal(tg_oai2br_stream_feed(&s, NULL, NULL, 0, &out), 0);
    assert_int_equal(out.len, len);

    /* a full buffer: the event fails whole, nothing half-written */
    tg_buf_t small;
    tg_buf_init(&small, 0);
    tg_oai2br_stream_init(&s, "chatcmpl-s", 1, "m", 1);
    assert_int_equal(feed(&s, "contentBlockDelta", "{'delta':{'text':'x'}}", &small), 0);
    size_t before = small.len;
    small.max = small.len + 100; /* less than one more chunk */
    assert_int_equal(feed(&s, "contentBlockDelta", "{'delta':{'text':'yyy'}}", &small), TG_ETOOBIG);
    assert_int_equal(small.len, before);
    tg_buf_free(&small);
    tg_buf_free(&out);
}

/* ---- embeddings --------------------------------------------------------- */

static int embed(const char *req, const char *family, char ***bodies, size_t *n, char *err,
                 size_t errcap)
{
    cJSON *r = jq(req);
    int rc = tg_oai2br_embed_request(r, family, bodies, n, err, errcap);
    cJSON_Delete(r);
    return rc;
}

static char *embed_answer(const char *family, const char *const *answers, size_t n, int64_t tokens,
                          int base64, int *rc)
{
    char *bodies[4] = {0}, *out = NULL, err[128];
    size_t lens[4] = {0}, len = 0;
    for (size_t i = 0; i < n; i++) {
        bodies[i] = q(answers[i]);
        lens[i] = strlen(bodies[i]);
    }
    *rc = tg_oai2br_embed_response(family, (const char *const *)bodies, lens, n,
                                   "text-embedding-3-small", tokens, base64, &out, &len, err,
                                   sizeof(err));
    for (size_t i = 0; i < n; i++)
        free(bodies[i]);
    if (!*rc) assert_int_equal(len, strlen(out));
    return out;
}

static void test_embed_titan(void **state)
{
    char **b, err[128];
    size_t n;
    assert_int_equal(embed("{'model':'m','input':['first','second'],'dimensions':512,"
                           "'encoding_format':'float','user':'u'}",
                           "titan", &b, &n, err, sizeof(err)),
                     0);
    assert_int_equal(n, 2);
    assert_json(b[0], strlen(b[0]), "{'inputText':'first','dimensions':512}");
    assert_json(b[1], strlen(b[1]), "{'inputText':'second','dimensions':512}");
    tg_oai2br_embed_free(b, n);
    assert_int_equal(embed("{'input':'one'}", "titan", &b, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 1);
    assert_json(b[0], strlen(b[0]), "{'inputText':'one'}");
    tg_oai2br_embed_free(b, n);

    const char *answers[] = {"{'embedding':[0.5,-0.25],'inputTextTokenCount':3}",
                             "{'embedding':[1,0.125],'inputTextTokenCount':4}"};
    int rc;
    char *out = embed_answer("titan", answers, 2, 7, 0, &rc);
    assert_int_equal(rc, 0);
    assert_json(out, strlen(out),
                "{'object':'list','data':[{'object':'embedding','index':0,'embedding':"
                "[0.5,-0.25]},{'object':'embedding','index':1,'embedding':[1,0.125]}],"
                "'model':'text-embedding-3-small','usage':{'prompt_tokens':7,"
                "'total_tokens':7}}");
    free(out);
    /* a negative count: summed from Titan's own inputTextTokenCount */
    out = embed_answer("titan", answers, 2, -1, 0, &rc);
    assert_int_equal(rc, 0);
    cJSON *r = cJSON_Parse(out);
    assert_int_equal(at(r, "usage.prompt_tokens")->valuedouble, 7);
    assert_int_equal(at(r, "usage.total_tokens")->valuedouble, 7);
    cJSON_Delete(r);
    free(out);

    const char *broken[] = {"{'embedding':[0.5,'x']}"};
    out = embed_answer("titan", broken, 1, 1, 0, &rc);
    assert_int_equal(rc, TG_EUPSTREAM);
    assert_null(out);

    /* One call per input, made in turn: at most 256 of them. */
    cJSON *many = cJSON_CreateObject();
    cJSON *in = cJSON_AddArrayToObject(many, "input");
    for (int i = 0; i < 256; i++)
        cJSON_AddItemToArray(in, cJSON_CreateString("text"));
    assert_int_equal(tg_oai2br_embed_request(many, "titan", &b, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 256);
    tg_oai2br_embed_free(b, n);
    cJSON_AddItemToArray(in, cJSON_CreateString("one too many"));
    assert_int_equal(tg_oai2br_embed_request(many, "titan", &b, &n, err, sizeof(err)), TG_EINVAL);
    assert_non_null(strstr(err, "at most 256"));
    cJSON_Delete(many);
}

static void test_embed_cohere(void **state)
{
    char **b, err[128];
    size_t n;
    assert_int_equal(embed("{'input':['first','second']}", "cohere", &b, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 1);
    assert_json(b[0], strlen(b[0]), "{'texts':['first','second'],'input_type':'search_document'}");
    tg_oai2br_embed_free(b, n);
    assert_int_equal(embed("{'input':'one'}", "cohere", &b, &n, err, sizeof(err)), 0);
    assert_json(b[0], strlen(b[0]), "{'texts':['one'],'input_type':'search_document'}");
    tg_oai2br_embed_free(b, n);

    const char *answers[] = {"{'id':'x','embeddings':[[0.5,0.25],[-1,2]],"
                             "'response_type':'embeddings_floats','texts':['first','second']}"};
    int rc;
    char *out = embed_answer("cohere", answers, 1, 5, 0, &rc);
    assert_int_equal(rc, 0);
    assert_json(out, strlen(out),
                "{'object':'list','data':[{'object':'embedding','index':0,'embedding':"
                "[0.5,0.25]},{'object':'embedding','index':1,'embedding':[-1,2]}],"
                "'model':'text-embedding-3-small','usage':{'prompt_tokens':5,"
                "'total_tokens':5}}");
    free(out);
    const char *typed[] = {"{'embeddings':{'float':[[0.5]]}}"};
    out = embed_answer("cohere", typed, 1, 1, 0, &rc);
    assert_int_equal(rc, 0);
    free(out);
    const char *empty[] = {"{'embeddings':[]}"};
    out = embed_answer("cohere", empty, 1, 1, 0, &rc);
    assert_int_equal(rc, TG_EUPSTREAM);
}

static void test_embed_refused(void **state)
{
    static const struct {
        const char *req, *family, *want;
    } cases[] = {
        {"{'input':[1,2,3]}", "titan", "token ids are not supported"},
        {"{'input':[[1,2],[3]]}", "cohere", "token ids are not supported"},
        {"{'input':[]}", "titan", "input is empty"},
        {"{'input':''}", "titan", "input is empty"},
        {"{'input':['a','']}", "titan", "input[1] is empty"},
        {"{}", "titan", "input is required"},
        {"{'input':'a','dimensions':300}", "titan", "dimensions must be 256, 512 or 1024"},
        {"{'input':'a','dimensions':1e300}", "titan", "dimensions must be 256, 512 or 1024"},
        {"{'input':'a','dimensions':256}", "cohere", "dimensions is not supported for Cohere"},
        {"{'input':'a','encoding_format':'int8'}", "titan", "encoding_format must be"},
        {"{'input':'a'}", "meta", "not supported for the model family 'meta'"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char **b = (char **)1, err[128] = "";
        size_t n = 9;
        assert_int_equal(embed(cases[i].req, cases[i].family, &b, &n, err, sizeof(err)), TG_EINVAL);
        assert_null(b);
        assert_int_equal(n, 0);
        if (!strstr(err, cases[i].want)) fail_msg("err '%s' does not say '%s'", err, cases[i].want);
    }
    /* Cohere takes 96 texts a call */
    tg_buf_t req;
    tg_buf_init(&req, 0);
    tg_buf_appends(&req, "{'input':[");
    for (int i = 0; i < 97; i++)
        tg_buf_appends(&req, i ? ",'t'" : "'t'");
    tg_buf_appends(&req, "]}");
    char **b, err[128];
    size_t n;
    assert_int_equal(embed(req.data, "cohere", &b, &n, err, sizeof(err)), TG_EINVAL);
    assert_non_null(strstr(err, "at most 96"));
    tg_buf_free(&req);
}

static void test_embed_base64(void **state)
{
    const char *answers[] = {"{'embedding':[0.5,-1.25,3,0.1],'inputTextTokenCount':2}"};
    int rc;
    char *out = embed_answer("titan", answers, 1, 2, 1, &rc);
    assert_int_equal(rc, 0);
    cJSON *r = cJSON_Parse(out);
    const char *b64 = at_str(r, "data.0.embedding");
    assert_non_null(b64);
    assert_int_equal(strlen(b64), 24); /* 16 bytes */
    unsigned char raw[32];
    assert_int_equal(EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)strlen(b64)), 18);
    const float want[] = {0.5f, -1.25f, 3.0f, 0.1f};
    for (int i = 0; i < 4; i++) {
        uint32_t u = (uint32_t)raw[i * 4] | (uint32_t)raw[i * 4 + 1] << 8 |
                     (uint32_t)raw[i * 4 + 2] << 16 | (uint32_t)raw[i * 4 + 3] << 24;
        float f;
        memcpy(&f, &u, 4);
        assert_true(f == want[i]);
    }
    /* 0.5f little-endian is 00 00 00 3f */
    assert_memory_equal(raw, "\x00\x00\x00\x3f", 4);
    cJSON_Delete(r);
    free(out);

    const char *cohere[] = {"{'embeddings':[[1],[2]]}"};
    out = embed_answer("cohere", cohere, 1, 2, 1, &rc);
    assert_int_equal(rc, 0);
    r = cJSON_Parse(out);
    assert_string_equal(at_str(r, "data.0.embedding"), "AACAPw=="); /* 1.0f */
    assert_string_equal(at_str(r, "data.1.embedding"), "AAAAQA=="); /* 2.0f */
    cJSON_Delete(r);
    free(out);
}

/* ---- out of memory ------------------------------------------------------ */

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

/* Every cJSON allocation failing in turn: TG_ENOMEM (or, where cJSON cannot
 * tell a failed parse from bad JSON, the error bad JSON gets), nothing
 * leaked (ASan), then success with the same answer. */
static void test_out_of_memory(void **state)
{
    cJSON *req = jq("{'messages':[{'role':'system','content':'s'},{'role':'user','content':["
                    "{'type':'text','text':'x'},{'type':'image_url','image_url':"
                    "{'url':'data:image/png;base64,AAAA'}}]},{'role':'assistant','tool_calls':"
                    "[{'id':'a','type':'function','function':{'name':'get_weather',"
                    "'arguments':'{\\'city\\':\\'P\\'}'}}]},{'role':'tool','tool_call_id':'a',"
                    "'content':'r'},{'role':'user','content':'y'}],'tools':[" WEATHER_TOOL
                    ",{'type':'function','function':{'name':'now'}}],"
                    "'tool_choice':{'type':'function','function':{'name':'now'}},"
                    "'max_tokens':5,'stop':'z','temperature':1}");
    char *want = NULL, *out = NULL, err[256];
    size_t len;
    int s, iu;
    int64_t mo;
    assert_int_equal(tg_oai2br_chat_request(req, &want, &len, &s, &iu, &mo, err, sizeof(err)), 0);
    for (int n = 0;; n++) {
        oom_after(n);
        int rc = tg_oai2br_chat_request(req, &out, &len, &s, &iu, &mo, err, sizeof(err));
        oom_off();
        if (rc == TG_ENOMEM || (rc == TG_EINVAL && strstr(err, "not valid JSON"))) {
            assert_null(out);
            continue;
        }
        assert_int_equal(rc, 0);
        assert_string_equal(out, want);
        free(out);
        break;
    }
    free(want);
    cJSON_Delete(req);

    char *answer = q("{'output':{'message':{'content':[{'text':'a'},{'toolUse':{'toolUseId':'t',"
                     "'name':'n','input':{'x':1}}}]}},'stopReason':'tool_use',"
                     "'usage':{'inputTokens':1,'outputTokens':2,'cacheReadInputTokens':3}}");
    int64_t c[4];
    assert_int_equal(tg_oai2br_chat_response(answer, strlen(answer), "i", 1, "m", &want, &len,
                                             &c[0], &c[1], &c[2], &c[3], err, sizeof(err)),
                     0);
    for (int n = 0;; n++) {
        oom_after(n);
        int rc = tg_oai2br_chat_response(answer, strlen(answer), "i", 1, "m", &out, &len, &c[0],
                                         &c[1], &c[2], &c[3], err, sizeof(err));
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
    free(want);
    free(answer);

    /* streams: each event retried after a failure gives the same text. No
     * messageStart, so the first delta sends the role chunk too, and a
     * failure after it must take both back. */
    static const char *const events[][2] = {
        {"contentBlockDelta", "{'delta':{'text':'hi'}}"},
        {"contentBlockStart", "{'start':{'toolUse':{'toolUseId':'t','name':'n'}}}"},
        {"contentBlockDelta", "{'delta':{'toolUse':{'input':'{}'}}}"},
        {"contentBlockStop", "{}"},
        {"messageStop", "{'stopReason':'tool_use'}"},
        {"metadata", "{'usage':{'inputTokens':1,'outputTokens':2}}"},
    };
    tg_oai2br_stream_t ref, st;
    tg_buf_t a, b;
    tg_buf_init(&a, 0);
    tg_buf_init(&b, 0);
    tg_oai2br_stream_init(&ref, "i", 1, "m", 1);
    tg_oai2br_stream_init(&st, "i", 1, "m", 1);
    for (size_t e = 0; e < sizeof(events) / sizeof(events[0]); e++) {
        assert_int_equal(feed(&ref, events[e][0], events[e][1], &a), 0);
        char *p = q(events[e][1]);
        for (int n = 0;; n++) {
            size_t before = b.len;
            oom_after(n);
            int rc = tg_oai2br_stream_feed(&st, events[e][0], p, strlen(p), &b);
            oom_off();
            if (rc == TG_ENOMEM || rc == TG_EPROTO) {
                assert_int_equal(b.len, before);
                continue;
            }
            assert_int_equal(rc, 0);
            break;
        }
        free(p);
    }
    assert_int_equal(tg_oai2br_stream_finish(&ref, &a, 1), 0);
    for (int n = 0;; n++) {
        oom_after(n);
        int rc = tg_oai2br_stream_finish(&st, &b, 1);
        oom_off();
        if (rc == TG_ENOMEM) continue;
        assert_int_equal(rc, 0);
        break;
    }
    assert_string_equal(a.data, b.data);
    tg_buf_free(&a);
    tg_buf_free(&b);

    /* embeddings */
    static const char *const families[] = {"titan", "cohere"};
    for (int f = 0; f < 2; f++) {
        cJSON *er = jq("{'input':['a','b'],'dimensions':256}");
        if (f) cJSON_DeleteItemFromObject(er, "dimensions");
        char **bodies;
        size_t nb;
        for (int n = 0;; n++) {
            oom_after(n);
            int rc = tg_oai2br_embed_request(er, families[f], &bodies, &nb, err, sizeof(err));
            oom_off();
            if (rc == TG_ENOMEM) {
                assert_null(bodies);
                continue;
            }
            assert_int_equal(rc, 0);
            assert_int_equal(nb, f ? 1 : 2);
            tg_oai2br_embed_free(bodies, nb);
            break;
        }
        cJSON_Delete(er);
        char *ans = q(f ? "{'embeddings':[[0.5],[1]]}" : "{'embedding':[0.5,1]}");
        size_t al = strlen(ans);
        const char *const list[] = {ans};
        assert_int_equal(tg_oai2br_embed_response(families[f], list, &al, 1, "m", 1, f, &want, &len,
                                                  err, sizeof(err)),
                         0);
        for (int n = 0;; n++) {
            oom_after(n);
            int rc = tg_oai2br_embed_response(families[f], list, &al, 1, "m", 1, f, &out, &len, err,
                                              sizeof(err));
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
        free(want);
        free(ans);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tools_round_trip),
        cmocka_unit_test(test_tool_choice),
        cmocka_unit_test(test_system_developer),
        cmocka_unit_test(test_image_data_url),
        cmocka_unit_test(test_image_refused),
        cmocka_unit_test(test_inference_config),
        cmocka_unit_test(test_refused_fields),
        cmocka_unit_test(test_response_stop_reasons),
        cmocka_unit_test(test_response_usage_cached),
        cmocka_unit_test(test_response_bad),
        cmocka_unit_test(test_stream_text),
        cmocka_unit_test(test_stream_tool_call),
        cmocka_unit_test(test_stream_bad),
        cmocka_unit_test(test_embed_titan),
        cmocka_unit_test(test_embed_cohere),
        cmocka_unit_test(test_embed_refused),
        cmocka_unit_test(test_embed_base64),
        cmocka_unit_test(test_out_of_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

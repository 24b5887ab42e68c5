/* test_bedrock.c - unit tests for the Bedrock runtime formats
 * (src/providers/bedrock.c): operations and paths, model ids, token counts
 * from headers, Converse bodies and both stream kinds, and error mapping.
 *
 * Stream tests build real event-stream frames with the codec's encoder, wrap
 * each model's own chunk JSON the way Bedrock does ({"bytes": base64, "p":
 * padding}), decode the frame back and classify what came out. */
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

/* ---- helpers ------------------------------------------------------------ */

static void b64(tg_buf_t *out, const char *s, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t x = (uint32_t)p[i] << 16;
        if (i + 1 < n) x |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) x |= p[i + 2];
        char q[4] = {a[x >> 18 & 63], a[x >> 12 & 63], i + 1 < n ? a[x >> 6 & 63] : '=',
                     i + 2 < n ? a[x & 63] : '='};
        assert_int_equal(tg_buf_append(out, q, 4), 0);
    }
}

/* A chunk event's payload: {"bytes": base64(json), "p": padding}. */
static void chunk_payload(tg_buf_t *out, const char *json)
{
    assert_int_equal(tg_buf_appends(out, "{\"bytes\":\""), 0);
    b64(out, json, strlen(json));
    assert_int_equal(tg_buf_appends(out, "\",\"p\":\"abcdefghijklmnopqrstuvwxyzABCDEFGH\"}"), 0);
}

typedef struct {
    tg_buf_t frame;
    tg_es_message_t m;
} frame_t;

static void frame_decode(frame_t *f)
{
    char err[128];
    assert_int_equal(tg_es_decode_one(f->frame.data, f->frame.len, &f->m, err, sizeof(err)), 0);
}

static void make_event(frame_t *f, const char *type, const char *payload, size_t n)
{
    tg_buf_init(&f->frame, 0);
    assert_int_equal(tg_es_encode_event(&f->frame, type, "application/json", payload, n), 0);
    frame_decode(f);
}

static void make_exception(frame_t *f, const char *type, const char *payload)
{
    tg_buf_init(&f->frame, 0);
    assert_int_equal(tg_es_encode_exception(&f->frame, type, payload, strlen(payload)), 0);
    frame_decode(f);
}

static void frame_free(frame_t *f)
{
    tg_buf_free(&f->frame);
}

/* Classifies a chunk carrying the model's own json. */
static int invoke_chunk(const char *json, tg_br_event_t *ev, tg_br_usage_t *u)
{
    tg_buf_t p;
    frame_t f;
    tg_buf_init(&p, 0);
    chunk_payload(&p, json);
    make_event(&f, "chunk", p.data, p.len);
    int rc = tg_br_stream_event(TG_BR_INVOKE_STREAM, &f.m, ev, u);
    frame_free(&f);
    tg_buf_free(&p);
    return rc;
}

static int converse_ev(const char *type, const char *json, tg_br_event_t *ev, tg_br_usage_t *u)
{
    frame_t f;
    make_event(&f, type, json, strlen(json));
    int rc = tg_br_stream_event(TG_BR_CONVERSE_STREAM, &f.m, ev, u);
    frame_free(&f);
    return rc;
}

static tg_header_t hdr(const char *name, const char *value)
{
    return (tg_header_t){name, strlen(name), value, strlen(value)};
}

/* ---- operations ------------------------------------------------------- */

static void test_ops(void **state)
{
    static const struct {
        tg_br_op_t op;
        const char *path, *api;
        int streams;
    } t[] = {
        {TG_BR_INVOKE, "invoke", "bedrock.invoke", 0},
        {TG_BR_INVOKE_STREAM, "invoke-with-response-stream", "bedrock.invoke-stream", 1},
        {TG_BR_CONVERSE, "converse", "bedrock.converse", 0},
        {TG_BR_CONVERSE_STREAM, "converse-stream", "bedrock.converse-stream", 1},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        tg_br_op_t op = (tg_br_op_t)-1;
        assert_string_equal(tg_br_op_path(t[i].op), t[i].path);
        assert_string_equal(tg_br_op_api(t[i].op), t[i].api);
        assert_int_equal(tg_br_op_streams(t[i].op), t[i].streams);
        assert_int_equal(tg_br_op_parse(t[i].path, strlen(t[i].path), &op), 0);
        assert_int_equal(op, t[i].op);
        op = (tg_br_op_t)-1;
        assert_int_equal(tg_br_op_parse(t[i].api, strlen(t[i].api), &op), 0);
        assert_int_equal(op, t[i].op);
    }
    tg_br_op_t op;
    const char *bad[] = {
        "", "Invoke", "invoke ", "invoke-stream", "converse-streams", "count-tokens"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tg_br_op_parse(bad[i], strlen(bad[i]), &op), TG_EINVAL);
    assert_int_equal(tg_br_op_parse("invoke", 3, &op), TG_EINVAL); /* a prefix is not a name */
    assert_null(tg_br_op_path((tg_br_op_t)4));
    assert_null(tg_br_op_api((tg_br_op_t)-1));
}

/* ---- model ids ---------------------------------------------------------- */

typedef struct {
    const char *id;
    int rc;
    tg_br_id_kind_t kind;
    const char *base, *family, *region, *geo;
} id_case_t;

static const id_case_t id_cases[] = {
    /* foundation ids */
    {"anthropic.claude-3-5-sonnet-20240620-v1:0", 0, TG_BR_ID_FOUNDATION,
     "anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic", "", ""},
    {"amazon.titan-text-express-v1", 0, TG_BR_ID_FOUNDATION, "amazon.titan-text-express-v1",
     "amazon", "", ""},
    {"meta.llama3-70b-instruct-v1:0", 0, TG_BR_ID_FOUNDATION, "meta.llama3-70b-instruct-v1:0",
     "meta", "", ""},
    {"mistral.mistral-7b-instruct-v0:2", 0, TG_BR_ID_FOUNDATION, "mistral.mistral-7b-instruct-v0:2",
     "mistral", "", ""},
    {"cohere.command-r-plus-v1:0", 0, TG_BR_ID_FOUNDATION, "cohere.command-r-plus-v1:0", "cohere",
     "", ""},
    {"ai21.jamba-1-5-large-v1:0", 0, TG_BR_ID_FOUNDATION, "ai21.jamba-1-5-large-v1:0", "ai21", "",
     ""},
    {"anthropic.claude-3-sonnet-20240229-v1:0:28k", 0, TG_BR_ID_FOUNDATION,
     "anthropic.claude-3-sonnet-20240229-v1:0:28k", "anthropic", "", ""},
    {"anthropic.claude-sonnet-4-6", 0, TG_BR_ID_FOUNDATION, "anthropic.claude-sonnet-4-6",
     "anthropic", "", ""},
    /* system (cross-Region) inference profiles, every geography */
    {"us.anthropic.claude-3-5-sonnet-20240620-v1:0", 0, TG_BR_ID_PROFILE,
     "anthropic.claude-3-5-sonnet-20240620-v1:0", "anthropic", "", "us"},
    {"eu.anthropic.claude-3-haiku-20240307-v1:0", 0, TG_BR_ID_PROFILE,
     "anthropic.claude-3-haiku-20240307-v1:0", "anthropic", "", "eu"},
    {"apac.amazon.nova-pro-v1:0", 0, TG_BR_ID_PROFILE, "amazon.nova-pro-v1:0", "amazon", "",
     "apac"},
    {"global.anthropic.claude-opus-4-6-v1", 0, TG_BR_ID_PROFILE, "anthropic.claude-opus-4-6-v1",
     "anthropic", "", "global"},
    {"us-gov.anthropic.claude-sonnet-4-5-20250929-v1:0", 0, TG_BR_ID_PROFILE,
     "anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic", "", "us-gov"},
    {"jp.amazon.nova-lite-v1:0", 0, TG_BR_ID_PROFILE, "amazon.nova-lite-v1:0", "amazon", "", "jp"},
    {"au.anthropic.claude-haiku-4-5-20251001-v1:0", 0, TG_BR_ID_PROFILE,
     "anthropic.claude-haiku-4-5-20251001-v1:0", "anthropic", "", "au"},
    {"ca.anthropic.claude-sonnet-4-5-20250929-v1:0", 0, TG_BR_ID_PROFILE,
     "anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic", "", "ca"},
    /* ARNs, every kind */
    {"arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-v2", 0, TG_BR_ID_FOUNDATION_ARN,
     "anthropic.claude-v2", "anthropic", "us-east-1", ""},
    {"arn:aws:bedrock:us-west-2:123456789012:inference-profile/us.meta.llama3-2-90b-instruct-v1:0",
     0, TG_BR_ID_PROFILE, "meta.llama3-2-90b-instruct-v1:0", "meta", "us-west-2", "us"},
    {"arn:aws-us-gov:bedrock:us-gov-east-1:012345678901:inference-profile/"
     "us-gov.anthropic.claude-sonnet-4-5-20250929-v1:0",
     0, TG_BR_ID_PROFILE, "anthropic.claude-sonnet-4-5-20250929-v1:0", "anthropic", "us-gov-east-1",
     "us-gov"},
    {"arn:aws:bedrock:eu-west-1:123456789012:application-inference-profile/a1b2c3d4e5f6", 0,
     TG_BR_ID_PROFILE, "", "", "eu-west-1", ""},
    {"arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.titan-text-express-v1:0:8k/"
     "abcdefgh1234",
     0, TG_BR_ID_CUSTOM, "", "amazon", "us-east-1", ""},
    {"arn:aws:bedrock:us-east-1:123456789012:custom-model-deployment/abcdefgh1234", 0,
     TG_BR_ID_CUSTOM, "", "", "us-east-1", ""},
    {"arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abcdefgh1234", 0,
     TG_BR_ID_PROVISIONED, "", "", "us-east-1", ""},
    {"arn:aws-cn:bedrock:cn-north-1:123456789012:imported-model/abcdefgh1234", 0, TG_BR_ID_IMPORTED,
     "", "", "cn-north-1", ""},
    {"arn:aws:bedrock:us-east-1:123456789012:prompt/PROMPT12345:1", 0, TG_BR_ID_PROMPT, "", "",
     "us-east-1", ""},
    {"arn:aws:bedrock:us-east-1:123456789012:default-prompt-router/anthropic.claude:1", 0,
     TG_BR_ID_ROUTER, "", "anthropic", "us-east-1", ""},
    {"arn:aws:bedrock:us-east-1:123456789012:prompt-router/abcdefgh1234", 0, TG_BR_ID_ROUTER, "",
     "", "us-east-1", ""},
    /* invalid */
    {"", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"claude", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {".claude", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"anthropic.", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"us.claude", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"Anthropic.claude-v2", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"anthropic.claude v2", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"anthropic.claude-v2\n", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"anthropic.claude\tv2", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"anthropic.claude-v2%3A1", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"anthropic.claude/../x", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"anthropic.claude-\xc3\xa9", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"arn:aws:bedrock:us-east-1::foundation-model/", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"arn:aws:s3:us-east-1::foundation-model/anthropic.claude-v2", TG_EINVAL, 0, NULL, NULL, NULL,
     NULL},
    {"arn:azure:bedrock:us-east-1::foundation-model/anthropic.claude-v2", TG_EINVAL, 0, NULL, NULL,
     NULL, NULL},
    {"arn:aws:bedrock::123456789012:provisioned-model/abc", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"arn:aws:bedrock:us-east-1:12345:provisioned-model/abc", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"arn:aws:bedrock:us-east-1::provisioned-model/abc", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"arn:aws:bedrock:us-east-1:123456789012:foundation-model/anthropic.claude-v2", TG_EINVAL, 0,
     NULL, NULL, NULL, NULL},
    {"arn:aws:bedrock:us-east-1:123456789012:agent/abc", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"arn:aws:bedrock:us-east-1:123456789012:provisioned-model", TG_EINVAL, 0, NULL, NULL, NULL,
     NULL},
    {"arn:aws:bedrock:us-east-1", TG_EINVAL, 0, NULL, NULL, NULL, NULL},
    {"arn:aws:bedrock:US-EAST-1:123456789012:provisioned-model/abc", TG_EINVAL, 0, NULL, NULL, NULL,
     NULL},
};

static void test_model_ids(void **state)
{
    size_t n = sizeof(id_cases) / sizeof(id_cases[0]);
    assert_true(n >= 25);
    for (size_t i = 0; i < n; i++) {
        const id_case_t *c = &id_cases[i];
        tg_br_model_t m;
        memset(&m, 0x55, sizeof(m));
        int rc = tg_br_model_parse(c->id, strlen(c->id), &m);
        if (rc != c->rc) fail_msg("%s: rc %d, want %d", c->id, rc, c->rc);
        if (rc) {
            assert_string_equal(m.base_model, "");
            continue;
        }
        if (m.kind != c->kind) fail_msg("%s: kind %d, want %d", c->id, m.kind, c->kind);
        assert_string_equal(m.base_model, c->base);
        assert_string_equal(m.family, c->family);
        assert_string_equal(m.region, c->region);
        assert_string_equal(m.geo, c->geo);
    }
}

static void test_model_id_limits(void **state)
{
    tg_br_model_t m;
    char *id = malloc(2100);
    assert_non_null(id);
    /* A long ARN is fine up to 2048 bytes, refused past it. */
    const char *pre = "arn:aws:bedrock:us-east-1:123456789012:prompt/";
    size_t pl = strlen(pre);
    memcpy(id, pre, pl);
    memset(id + pl, 'a', 2100 - pl);
    assert_int_equal(tg_br_model_parse(id, 2048, &m), 0);
    assert_int_equal(m.kind, TG_BR_ID_PROMPT);
    assert_int_equal(tg_br_model_parse(id, 2049, &m), TG_EINVAL);
    /* A foundation id longer than base_model can hold is refused, not cut. */
    memcpy(id, "amazon.", 7);
    memset(id + 7, 'x', 200);
    assert_int_equal(tg_br_model_parse(id, 159, &m), 0);
    assert_int_equal(strlen(m.base_model), 159);
    assert_int_equal(tg_br_model_parse(id, 160, &m), TG_EINVAL);
    /* A NUL inside the given length is a control character. */
    assert_int_equal(tg_br_model_parse("amazon.titan\0x", 14, &m), TG_EINVAL);
    assert_int_equal(tg_br_model_parse(NULL, 3, &m), TG_EINVAL);
    /* Every control character and DEL is refused. */
    for (int c = 0; c < 0x20; c++) {
        char s[] = "amazon.titan-x";
        s[12] = (char)c;
        assert_int_equal(tg_br_model_parse(s, sizeof(s) - 1, &m), TG_EINVAL);
    }
    assert_int_equal(tg_br_model_parse("amazon.titan\x7f", 13, &m), TG_EINVAL);
    free(id);
}

/* ---- paths -------------------------------------------------------------- */

static void expect_path(const char *id, tg_br_op_t op, const char *want)
{
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_br_path(&b, id, strlen(id), op), 0);
    assert_string_equal(b.data, want);
    tg_buf_free(&b);
}

static void test_paths(void **state)
{
    /* As @aws-sdk/client-bedrock-runtime sends them (extendedEncodeURIComponent). */
    expect_path("anthropic.claude-3-5-sonnet-20240620-v1:0", TG_BR_INVOKE,
                "/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke");
    expect_path(
        "us.anthropic.claude-3-5-sonnet-20240620-v1:0", TG_BR_INVOKE_STREAM,
        "/model/us.anthropic.claude-3-5-sonnet-20240620-v1%3A0/invoke-with-response-stream");
    expect_path("amazon.titan-text-express-v1", TG_BR_CONVERSE,
                "/model/amazon.titan-text-express-v1/converse");
    expect_path(
        "arn:aws:bedrock:us-east-1:123456789012:provisioned-model/abc_d~e", TG_BR_CONVERSE_STREAM,
        "/model/arn%3Aaws%3Abedrock%3Aus-east-1%3A123456789012%3Aprovisioned-model%2Fabc_d~e/"
        "converse-stream");
    /* Characters a parsed id never has are still encoded, upper-case hex. */
    expect_path("a b!'()*%\xc3\xa9", TG_BR_INVOKE, "/model/a%20b%21%27%28%29%2A%25%C3%A9/invoke");

    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_buf_appends(&b, "x"), 0);
    assert_int_equal(tg_br_path(&b, "a.b", 3, (tg_br_op_t)9), TG_EINVAL);
    assert_int_equal(tg_br_path(&b, "", 0, TG_BR_INVOKE), TG_EINVAL);
    assert_string_equal(b.data, "x");
    tg_buf_free(&b);
    /* Past the buffer's maximum: nothing is left half-written. */
    tg_buf_init(&b, 20);
    assert_int_equal(tg_buf_appends(&b, "x"), 0);
    assert_int_equal(tg_br_path(&b, "anthropic.claude-v2:1", 21, TG_BR_INVOKE), TG_ETOOBIG);
    assert_int_equal(b.len, 1);
    assert_string_equal(b.data, "x");
    tg_buf_free(&b);
}

/* ---- usage from headers and Converse bodies ---------------------------- */

static void test_usage_headers(void **state)
{
    tg_br_usage_t u;
    tg_header_t h[] = {
        hdr("Content-Type", "application/json"),
        hdr("X-Amzn-Bedrock-Input-Token-Count", "12"),
        hdr("x-amzn-bedrock-output-token-count", "345"),
        hdr("X-AMZN-BEDROCK-CACHE-READ-INPUT-TOKEN-COUNT", "1000"),
        hdr("x-amzn-bedrock-Cache-Write-Input-Token-Count", "0"),
        hdr("X-Amzn-Bedrock-Invocation-Latency", "812"),
    };
    memset(&u, 0, sizeof(u));
    assert_int_equal(tg_br_usage_from_headers(h, 6, &u), 1);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 12);
    assert_int_equal(u.output, 345);
    assert_int_equal(u.cache_read, 1000);
    assert_int_equal(u.cache_write, 0);

    /* Without the cache headers: cache counts are 0. */
    memset(&u, 0x11, sizeof(u));
    assert_int_equal(tg_br_usage_from_headers(h, 3, &u), 1);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.cache_write, 0);

    /* Missing input or output: no counts, u untouched. */
    tg_br_usage_t keep = {.have = 0, .input = 7};
    u = keep;
    assert_int_equal(tg_br_usage_from_headers(h + 2, 4, &u), 0);
    assert_int_equal(u.input, 7);
    assert_int_equal(tg_br_usage_from_headers(h, 2, &u), 0);
    assert_int_equal(tg_br_usage_from_headers(NULL, 0, &u), 0);
    assert_int_equal(u.have, 0);

    /* Garbage, signs, fractions, overflow: no count. */
    const char *bad[] = {"",
                         "-1",
                         "+5",
                         "1.0",
                         "1e3",
                         "0x10",
                         "12a",
                         " 12",
                         "1 2",
                         "9007199254740992",
                         "99999999999999999999",
                         "18446744073709551617"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        tg_header_t g[] = {hdr("x-amzn-bedrock-input-token-count", bad[i]),
                           hdr("x-amzn-bedrock-output-token-count", "3")};
        u = keep;
        assert_int_equal(tg_br_usage_from_headers(g, 2, &u), 0);
        assert_int_equal(u.input, 7);
        g[0] = hdr("x-amzn-bedrock-input-token-count", "3");
        g[1] = hdr("x-amzn-bedrock-output-token-count", bad[i]);
        assert_int_equal(tg_br_usage_from_headers(g, 2, &u), 0);
    }
    /* A garbled cache count spoils the lot (priced wrong otherwise). */
    tg_header_t g[] = {hdr("x-amzn-bedrock-input-token-count", "3"),
                       hdr("x-amzn-bedrock-output-token-count", "4"),
                       hdr("x-amzn-bedrock-cache-read-input-token-count", "-2")};
    assert_int_equal(tg_br_usage_from_headers(g, 3, &u), 0);
    /* The largest exact count is fine. */
    g[0] = hdr("x-amzn-bedrock-input-token-count", "9007199254740991");
    g[2] = hdr("x-amzn-bedrock-cache-read-input-token-count", "0000000000000005");
    assert_int_equal(tg_br_usage_from_headers(g, 3, &u), 1);
    assert_int_equal(u.input, 9007199254740991LL);
    assert_int_equal(u.cache_read, 5);
}

static void test_usage_converse(void **state)
{
    tg_br_usage_t u;
    const char *plain = "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[{\"text\":"
                        "\"Hi\"}]}},\"stopReason\":\"end_turn\",\"usage\":{\"inputTokens\":25,"
                        "\"outputTokens\":9,\"totalTokens\":34},\"metrics\":{\"latencyMs\":301}}";
    memset(&u, 0x22, sizeof(u));
    assert_int_equal(tg_br_usage_from_converse(plain, strlen(plain), &u), 1);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 25);
    assert_int_equal(u.output, 9);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.cache_write, 0);

    /* inputTokens excludes the cache: each kept as reported. */
    const char *cached = "{\"usage\":{\"inputTokens\":3,\"outputTokens\":13,\"totalTokens\":25053,"
                         "\"cacheReadInputTokens\":0,\"cacheWriteInputTokens\":25037}}";
    assert_int_equal(tg_br_usage_from_converse(cached, strlen(cached), &u), 1);
    assert_int_equal(u.input, 3);
    assert_int_equal(u.output, 13);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.cache_write, 25037);
    const char *read = "{\"usage\":{\"inputTokens\":4,\"outputTokens\":5,\"totalTokens\":1009,"
                       "\"cacheReadInputTokens\":1000,\"cacheWriteInputTokens\":null}}";
    assert_int_equal(tg_br_usage_from_converse(read, strlen(read), &u), 1);
    assert_int_equal(u.cache_read, 1000);
    assert_int_equal(u.cache_write, 0);

    tg_br_usage_t keep = {.input = 7};
    const char *absent[] = {
        "{\"output\":{}}",
        "{\"usage\":null}",
        "{\"usage\":[1,2]}",
        "{\"usage\":{\"inputTokens\":3}}",
        "{\"usage\":{\"inputTokens\":-3,\"outputTokens\":4}}",
        "{\"usage\":{\"inputTokens\":3.5,\"outputTokens\":4}}",
        "{\"usage\":{\"inputTokens\":\"3\",\"outputTokens\":4}}",
        "{\"usage\":{\"inputTokens\":1e300,\"outputTokens\":4}}",
        "{\"usage\":{\"inputTokens\":3,\"outputTokens\":4,\"cacheReadInputTokens\":-1}}",
        "[]",
    };
    for (size_t i = 0; i < sizeof(absent) / sizeof(absent[0]); i++) {
        u = keep;
        assert_int_equal(tg_br_usage_from_converse(absent[i], strlen(absent[i]), &u), 0);
        assert_int_equal(u.input, 7);
        assert_int_equal(u.have, 0);
    }
    const char *notjson[] = {"", "{", "usage", "{\"usage\":{}} x", "{}{}"};
    for (size_t i = 0; i < sizeof(notjson) / sizeof(notjson[0]); i++)
        assert_int_equal(tg_br_usage_from_converse(notjson[i], strlen(notjson[i]), &u), TG_EINVAL);
    /* Exactly len bytes are read: what follows does not matter. */
    assert_int_equal(tg_br_usage_from_converse(cached, 10, &u), TG_EINVAL);
}

/* ---- InvokeModelWithResponseStream ------------------------------------- */

typedef struct {
    const char *json;
    int64_t text_bytes;
} chunk_case_t;

static void test_invoke_stream_text(void **state)
{
    static const chunk_case_t t[] = {
        /* Anthropic Messages */
        {"{\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":12,"
         "\"output_tokens\":1}}}",
         0},
        {"{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\","
         "\"text\":\"\"}}",
         0},
        {"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\","
         "\"text\":\"Hello, w\xc3\xb6rld\"}}",
         13},
        {"{\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\","
         "\"partial_json\":\"{\\\"city\\\": \"}}",
         9},
        {"{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\","
         "\"thinking\":\"hmm\"}}",
         3},
        {"{\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{"
         "\"output_tokens\":15}}",
         0},
        /* Anthropic Text Completions */
        {"{\"completion\":\" Hi there\",\"stop_reason\":null}", 9},
        /* Titan */
        {"{\"outputText\":\"abc\",\"index\":0,\"totalOutputTextTokenCount\":2,"
         "\"completionReason\":null,\"inputTextTokenCount\":5}",
         3},
        /* Llama */
        {"{\"generation\":\" four\",\"prompt_token_count\":null,\"generation_token_count\":3,"
         "\"stop_reason\":null}",
         5},
        /* Mistral (text) and Mistral chat */
        {"{\"outputs\":[{\"text\":\"ab\",\"stop_reason\":null},{\"text\":\"c\"}]}", 3},
        {"{\"choices\":[{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"xyz\"}}]}",
         3},
        /* Cohere Command and Command R */
        {"{\"generations\":[{\"text\":\"Hey\"}],\"is_finished\":false}", 3},
        {"{\"is_finished\":false,\"event_type\":\"text-generation\",\"text\":\"four\"}", 4},
        {"{\"is_finished\":true,\"event_type\":\"stream-end\",\"text\":\"not generated\"}", 0},
        /* AI21 Jamba / OpenAI-like */
        {"{\"choices\":[{\"index\":0,\"delta\":{\"content\":\"12345\"}}]}", 5},
        /* Nova */
        {"{\"contentBlockDelta\":{\"delta\":{\"text\":\"nova\"},\"contentBlockIndex\":0}}", 4},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        tg_br_event_t ev;
        tg_br_usage_t u = {0};
        assert_int_equal(invoke_chunk(t[i].json, &ev, &u), 0);
        if (ev.output_text_bytes != t[i].text_bytes)
            fail_msg("%s: %lld bytes, want %lld", t[i].json, (long long)ev.output_text_bytes,
                     (long long)t[i].text_bytes);
        assert_int_equal(ev.kind, TG_BR_EV_CONTENT);
        /* The models' own counts are never taken for Bedrock's. */
        assert_int_equal(u.have, 0);
    }
}

static void test_invoke_stream_metrics(void **state)
{
    tg_br_event_t ev;
    tg_br_usage_t u = {0};
    /* Anthropic's last chunk: counts from invocationMetrics, not message_delta. */
    const char *stop = "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{"
                       "\"inputTokenCount\":3,\"outputTokenCount\":13,\"invocationLatency\":3037,"
                       "\"firstByteLatency\":2635,\"cacheReadInputTokenCount\":0,"
                       "\"cacheWriteInputTokenCount\":25037}}";
    assert_int_equal(invoke_chunk(stop, &ev, &u), 0);
    assert_int_equal(ev.kind, TG_BR_EV_USAGE);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 3);
    assert_int_equal(u.output, 13);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.cache_write, 25037);

    /* Titan's last chunk carries text and metrics (no cache fields). */
    memset(&u, 0, sizeof(u));
    const char *titan = "{\"outputText\":\"end.\",\"index\":0,\"completionReason\":\"FINISH\","
                        "\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":5,"
                        "\"outputTokenCount\":42,\"invocationLatency\":900,"
                        "\"firstByteLatency\":300}}";
    assert_int_equal(invoke_chunk(titan, &ev, &u), 0);
    assert_int_equal(ev.kind, TG_BR_EV_USAGE);
    assert_int_equal(ev.output_text_bytes, 4);
    assert_int_equal(u.input, 5);
    assert_int_equal(u.output, 42);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.cache_write, 0);

    /* A last chunk without metrics, or with unusable ones: no guess. */
    const char *nometrics[] = {
        "{\"type\":\"message_stop\"}",
        "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{}}",
        "{\"type\":\"message_stop\",\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":3}}",
        "{\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":-3,\"outputTokenCount\":1}}",
        "{\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":3,\"outputTokenCount\":\"1\"}}",
        ("{\"amazon-bedrock-invocationMetrics\":{\"inputTokenCount\":3,\"outputTokenCount\":1,"
         "\"cacheReadInputTokenCount\":1.5}}"),
        "{\"amazon-bedrock-invocationMetrics\":\"3/13\"}",
    };
    for (size_t i = 0; i < sizeof(nometrics) / sizeof(nometrics[0]); i++) {
        tg_br_usage_t v = {.input = 77};
        assert_int_equal(invoke_chunk(nometrics[i], &ev, &v), 0);
        assert_int_equal(ev.kind, TG_BR_EV_CONTENT);
        assert_int_equal(v.have, 0);
        assert_int_equal(v.input, 77);
    }
}

static void test_invoke_stream_malformed(void **state)
{
    tg_br_event_t ev;
    tg_br_usage_t u = {0};
    frame_t f;
    /* Payloads that are not {"bytes": base64 of a JSON object}. */
    const char *bad[] = {
        "",
        "not json",
        "{\"bytes\":42}",
        "{\"p\":\"abc\"}",
        "{\"bytes\":\"e30\"}",      /* no padding */
        "{\"bytes\":\"e30=x\"}",    /* junk after padding */
        "{\"bytes\":\"e3=9\"}",     /* padding inside */
        "{\"bytes\":\"e3 0=\"}",    /* white space */
        "{\"bytes\":\"e31=\"}",     /* non-zero trailing bits */
        "{\"bytes\":\"eyJhIjox\"}", /* {"a":1 : truncated JSON */
        "{\"bytes\":\"WzFd\"}",     /* [1]: not an object */
        "{\"bytes\":\"\"}",
        "{\"bytes\":\"e30=\"} trailing",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        make_event(&f, "chunk", bad[i], strlen(bad[i]));
        if (tg_br_stream_event(TG_BR_INVOKE_STREAM, &f.m, &ev, &u) != TG_EPROTO)
            fail_msg("accepted %s", bad[i]);
        frame_free(&f);
    }
    /* "e30=" is {} and "e30K" is "{}\n": both fine. */
    make_event(&f, "chunk", "{\"bytes\":\"e30K\"}", 16);
    assert_int_equal(tg_br_stream_event(TG_BR_INVOKE_STREAM, &f.m, &ev, &u), 0);
    assert_int_equal(ev.kind, TG_BR_EV_CONTENT);
    frame_free(&f);

    /* No type headers at all. */
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_es_encode(&b, NULL, 0, "{}", 2), 0);
    tg_es_message_t m;
    assert_int_equal(tg_es_decode_one(b.data, b.len, &m, NULL, 0), 0);
    assert_int_equal(tg_br_stream_event(TG_BR_INVOKE_STREAM, &m, &ev, &u), TG_EPROTO);
    assert_int_equal(tg_br_stream_event(TG_BR_CONVERSE_STREAM, &m, &ev, &u), TG_EPROTO);
    tg_buf_free(&b);
    /* An unknown message type. */
    tg_es_header_t h = {":message-type", 13, TG_ES_STRING, 0, "whatever", 8};
    tg_buf_init(&b, 0);
    assert_int_equal(tg_es_encode(&b, &h, 1, "{}", 2), 0);
    assert_int_equal(tg_es_decode_one(b.data, b.len, &m, NULL, 0), 0);
    assert_int_equal(tg_br_stream_event(TG_BR_INVOKE_STREAM, &m, &ev, &u), TG_EPROTO);
    tg_buf_free(&b);
    /* An event type this code does not know is "other", not an error. */
    make_event(&f, "someFutureEvent", "{}", 2);
    assert_int_equal(tg_br_stream_event(TG_BR_INVOKE_STREAM, &f.m, &ev, &u), 0);
    assert_int_equal(ev.kind, TG_BR_EV_OTHER);
    /* Non-streaming operations are not classified. */
    assert_int_equal(tg_br_stream_event(TG_BR_INVOKE, &f.m, &ev, &u), TG_EINVAL);
    assert_int_equal(tg_br_stream_event(TG_BR_CONVERSE, &f.m, &ev, &u), TG_EINVAL);
    frame_free(&f);
}

/* ---- ConverseStream ----------------------------------------------------- */

static void test_converse_stream(void **state)
{
    static const struct {
        const char *type, *json;
        tg_br_ev_kind_t kind;
        int64_t bytes;
    } t[] = {
        {"messageStart", "{\"p\":\"abcdefgh\",\"role\":\"assistant\"}", TG_BR_EV_OTHER, 0},
        {"contentBlockStart",
         "{\"contentBlockIndex\":1,\"start\":{\"toolUse\":{\"name\":\"get_weather\",\"toolUseId\":"
         "\"t1\"}},\"p\":\"ab\"}",
         TG_BR_EV_OTHER, 0},
        {"contentBlockDelta",
         "{\"contentBlockIndex\":0,\"delta\":{\"text\":\"Hello\"},\"p\":\"abcd\"}",
         TG_BR_EV_CONTENT, 5},
        {"contentBlockDelta",
         "{\"contentBlockIndex\":1,\"delta\":{\"toolUse\":{\"input\":\"{\\\"city\\\":\\\"Paris\\\"}"
         "\"}},"
         "\"p\":\"a\"}",
         TG_BR_EV_CONTENT, 16},
        {"contentBlockDelta",
         "{\"contentBlockIndex\":0,\"delta\":{\"reasoningContent\":{\"text\":\"think\"}}}",
         TG_BR_EV_CONTENT, 5},
        {"contentBlockDelta",
         "{\"contentBlockIndex\":0,\"delta\":{\"reasoningContent\":{\"signature\":\"c2ln\"}}}",
         TG_BR_EV_CONTENT, 0},
        {"contentBlockStop", "{\"contentBlockIndex\":0,\"p\":\"abc\"}", TG_BR_EV_OTHER, 0},
        {"messageStop", "{\"stopReason\":\"end_turn\",\"p\":\"abcdef\"}", TG_BR_EV_OTHER, 0},
        {"metadata", "{\"metrics\":{\"latencyMs\":412},\"p\":\"abc\"}", TG_BR_EV_OTHER, 0},
    };
    for (size_t i = 0; i < sizeof(t) / sizeof(t[0]); i++) {
        tg_br_event_t ev;
        tg_br_usage_t u = {0};
        assert_int_equal(converse_ev(t[i].type, t[i].json, &ev, &u), 0);
        if (ev.kind != t[i].kind) fail_msg("%s %s: kind %d", t[i].type, t[i].json, ev.kind);
        assert_int_equal(ev.output_text_bytes, t[i].bytes);
        assert_int_equal(u.have, 0);
    }

    tg_br_event_t ev;
    tg_br_usage_t u = {0};
    const char *meta = "{\"usage\":{\"inputTokens\":30,\"outputTokens\":120,\"totalTokens\":1650,"
                       "\"cacheReadInputTokens\":1500,\"cacheWriteInputTokens\":0},"
                       "\"metrics\":{\"latencyMs\":2012},\"trace\":{},\"p\":\"abcdefghijkl\"}";
    assert_int_equal(converse_ev("metadata", meta, &ev, &u), 0);
    assert_int_equal(ev.kind, TG_BR_EV_USAGE);
    assert_int_equal(u.have, 1);
    assert_int_equal(u.input, 30);
    assert_int_equal(u.output, 120);
    assert_int_equal(u.cache_read, 1500);
    assert_int_equal(u.cache_write, 0);

    const char *plain = "{\"usage\":{\"inputTokens\":8,\"outputTokens\":2,\"totalTokens\":10},"
                        "\"metrics\":{\"latencyMs\":20}}";
    memset(&u, 0x33, sizeof(u));
    assert_int_equal(converse_ev("metadata", plain, &ev, &u), 0);
    assert_int_equal(ev.kind, TG_BR_EV_USAGE);
    assert_int_equal(u.input, 8);
    assert_int_equal(u.cache_read, 0);
    assert_int_equal(u.cache_write, 0);

    /* A payload that is not a JSON object is malformed. */
    assert_int_equal(converse_ev("contentBlockDelta", "{\"delta\":", &ev, &u), TG_EPROTO);
    assert_int_equal(converse_ev("metadata", "[]", &ev, &u), TG_EPROTO);
    assert_int_equal(converse_ev("messageStart", "", &ev, &u), TG_EPROTO);
}

/* ---- exceptions and error mapping --------------------------------------- */

static const struct {
    const char *name;
    int status;
} br_names[] = {
    {"ValidationException", 400},           {"AccessDeniedException", 403},
    {"ResourceNotFoundException", 404},     {"ModelTimeoutException", 408},
    {"ModelErrorException", 424},           {"ModelStreamErrorException", 424},
    {"ThrottlingException", 429},           {"ModelNotReadyException", 429},
    {"ServiceQuotaExceededException", 400}, {"ConflictException", 400},
    {"InternalServerException", 500},       {"ServiceUnavailableException", 503},
};

static void test_error_status(void **state)
{
    char code[64], in[256];
    for (size_t i = 0; i < sizeof(br_names) / sizeof(br_names[0]); i++) {
        const char *n = br_names[i].name;
        /* As named, with the x-amzn-ErrorType suffix, in any case, with a
         * namespace. */
        assert_int_equal(tg_br_error_status(n, strlen(n), 200, code, sizeof(code)),
                         br_names[i].status);
        assert_string_equal(code, n);
        snprintf(in, sizeof(in), "%s:http://internal.amazon.com/coral/com.amazon.bedrock/", n);
        assert_int_equal(tg_br_error_status(in, strlen(in), 0, code, sizeof(code)),
                         br_names[i].status);
        assert_string_equal(code, n);
        snprintf(in, sizeof(in), "%s", n);
        for (char *p = in; *p; p++)
            if (*p >= 'A' && *p <= 'Z') *p = (char)(*p + 32);
        assert_int_equal(tg_br_error_status(in, strlen(in), 503, code, sizeof(code)),
                         br_names[i].status);
        assert_string_equal(code, in);
        in[0] = (char)(in[0] - 32); /* mixed case */
        assert_int_equal(tg_br_error_status(in, strlen(in), 0, NULL, 0), br_names[i].status);
        snprintf(in, sizeof(in), "com.amazonaws.bedrockruntime#%s", n);
        assert_int_equal(tg_br_error_status(in, strlen(in), 0, code, sizeof(code)),
                         br_names[i].status);
        assert_string_equal(code, n);
    }
    /* Unknown names keep an error status, else 502. */
    assert_int_equal(tg_br_error_status("UnrecognizedClientException", 27, 403, code, 64), 403);
    assert_string_equal(code, "UnrecognizedClientException");
    assert_int_equal(tg_br_error_status("Mystery", 7, 200, code, 64), 502);
    assert_int_equal(tg_br_error_status("Mystery", 7, 600, code, 64), 502);
    assert_int_equal(tg_br_error_status("Mystery", 7, 399, code, 64), 502);
    assert_int_equal(tg_br_error_status("", 0, 500, code, 64), 500);
    assert_string_equal(code, "");
    assert_int_equal(tg_br_error_status(NULL, 0, 0, code, 64), 502);
    /* Only the bytes given count; the code is truncated and cleaned. */
    assert_int_equal(tg_br_error_status("ThrottlingExceptionX", 19, 0, code, 64), 429);
    assert_int_equal(tg_br_error_status("Throttling", 10, 0, code, 64), 502);
    assert_int_equal(tg_br_error_status("ThrottlingException", 19, 0, code, 6), 429);
    assert_string_equal(code, "Throt");
    assert_int_equal(tg_br_error_status(" ThrottlingException ", 21, 0, code, 64), 429);
    assert_int_equal(tg_br_error_status("Bad\nName", 8, 0, code, 64), 502);
    assert_string_equal(code, "BadName");
}

static void test_stream_exceptions(void **state)
{
    static const char *const stream_names[] = {
        "internalServerException", "modelStreamErrorException", "validationException",
        "throttlingException",     "modelTimeoutException",     "serviceUnavailableException",
    };
    static const int status[] = {500, 424, 400, 429, 408, 503};
    for (int op = TG_BR_INVOKE_STREAM; op <= TG_BR_CONVERSE_STREAM; op += 2) {
        for (size_t i = 0; i < sizeof(stream_names) / sizeof(stream_names[0]); i++) {
            frame_t f;
            tg_br_event_t ev;
            tg_br_usage_t u = {0};
            make_exception(&f, stream_names[i], "{\"message\":\"Too many\\nrequests\\u0007!\"}");
            assert_int_equal(tg_br_stream_event((tg_br_op_t)op, &f.m, &ev, &u), 0);
            assert_int_equal(ev.kind, TG_BR_EV_EXCEPTION);
            assert_int_equal(ev.status, status[i]);
            assert_string_equal(ev.code, stream_names[i]);
            assert_string_equal(ev.message, "Too manyrequests!");
            assert_int_equal(u.have, 0);
            frame_free(&f);
        }
    }
    /* modelStreamErrorException carries the model's own status and message. */
    frame_t f;
    tg_br_event_t ev;
    tg_br_usage_t u = {0};
    make_exception(&f, "modelStreamErrorException",
                   "{\"message\":\"Model error\",\"originalStatusCode\":500,"
                   "\"originalMessage\":\"boom\"}");
    assert_int_equal(tg_br_stream_event(TG_BR_INVOKE_STREAM, &f.m, &ev, &u), 0);
    assert_int_equal(ev.status, 424);
    assert_string_equal(ev.message, "Model error");
    frame_free(&f);
    /* "Message", none, not JSON. */
    make_exception(&f, "throttlingException", "{\"Message\":\"Slow down\"}");
    assert_int_equal(tg_br_stream_event(TG_BR_CONVERSE_STREAM, &f.m, &ev, &u), 0);
    assert_string_equal(ev.message, "Slow down");
    frame_free(&f);
    make_exception(&f, "throttlingException", "oops");
    assert_int_equal(tg_br_stream_event(TG_BR_CONVERSE_STREAM, &f.m, &ev, &u), 0);
    assert_int_equal(ev.status, 429);
    assert_string_equal(ev.message, "");
    frame_free(&f);
    /* An unknown exception: 502. */
    make_exception(&f, "newKindOfException", "{}");
    assert_int_equal(tg_br_stream_event(TG_BR_INVOKE_STREAM, &f.m, &ev, &u), 0);
    assert_int_equal(ev.kind, TG_BR_EV_EXCEPTION);
    assert_int_equal(ev.status, 502);
    assert_string_equal(ev.code, "newKindOfException");
    frame_free(&f);

    /* A :message-type error message (:error-code, :error-message headers). */
    tg_es_header_t h[3] = {
        {":message-type", 13, TG_ES_STRING, 0, "error", 5},
        {":error-code", 11, TG_ES_STRING, 0, "InternalFailure", 15},
        {":error-message", 14, TG_ES_STRING, 0, "It broke\r\n", 10},
    };
    tg_buf_t b;
    tg_es_message_t m;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_es_encode(&b, h, 3, NULL, 0), 0);
    assert_int_equal(tg_es_decode_one(b.data, b.len, &m, NULL, 0), 0);
    assert_int_equal(tg_br_stream_event(TG_BR_CONVERSE_STREAM, &m, &ev, &u), 0);
    assert_int_equal(ev.kind, TG_BR_EV_EXCEPTION);
    assert_int_equal(ev.status, 502);
    assert_string_equal(ev.code, "InternalFailure");
    assert_string_equal(ev.message, "It broke");
    tg_buf_free(&b);
    /* An exception without its type is malformed. */
    tg_buf_init(&b, 0);
    assert_int_equal(tg_es_encode(&b, h, 1, NULL, 0), 0);
    assert_int_equal(tg_es_decode_one(b.data, b.len, &m, NULL, 0), 0);
    assert_int_equal(tg_br_stream_event(TG_BR_CONVERSE_STREAM, &m, &ev, &u), TG_EPROTO);
    tg_buf_free(&b);
    h[0].s = "exception";
    h[0].s_len = 9;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_es_encode(&b, h, 1, NULL, 0), 0);
    assert_int_equal(tg_es_decode_one(b.data, b.len, &m, NULL, 0), 0);
    assert_int_equal(tg_br_stream_event(TG_BR_INVOKE_STREAM, &m, &ev, &u), TG_EPROTO);
    tg_buf_free(&b);
}

/* ---- error messages and the shared helpers ----------------------------- */

static void test_error_message(void **state)
{
    char msg[32];
    const char *b1 = "{\"message\":\"The provided model identifier is invalid.\"}";
    tg_aws_error_message(b1, strlen(b1), msg, sizeof(msg));
    assert_string_equal(msg, "The provided model identifier i"); /* 31 bytes + NUL */
    const char *b2 = "{\"ErrorCode\":\"CLIENT_ERROR\",\"Message\":\"Received client error (400)\"}";
    tg_aws_error_message(b2, strlen(b2), msg, sizeof(msg));
    assert_string_equal(msg, "Received client error (400)");
    const char *b3 = "{\"message\":\"a\\u0000b\\tc\\u001b[31md\\u007fe\\u0085f\"}";
    tg_aws_error_message(b3, strlen(b3), msg, sizeof(msg));
    assert_string_equal(msg, "a"); /* cJSON ends the string at \u0000 */
    const char *b4 = "{\"message\":\"b\\tc\\u001b[31md\\u007fe\\u0085f\\u2028g\"}";
    tg_aws_error_message(b4, strlen(b4), msg, sizeof(msg));
    assert_string_equal(msg, "bc[31mdef\xe2\x80\xa8g");
    const char *none[] = {"", "<html>502</html>", "{\"msg\":\"x\"}", "{\"message\":7}", "[]"};
    for (size_t i = 0; i < sizeof(none) / sizeof(none[0]); i++) {
        strcpy(msg, "junk");
        tg_aws_error_message(none[i], strlen(none[i]), msg, sizeof(msg));
        assert_string_equal(msg, "");
    }
    tg_aws_error_message(b1, strlen(b1), msg, 0); /* no room: nothing written */
}

/* AWS's InvalidSignatureException quotes the canonical request and string to
 * sign it expected; the canonical request holds the gateway's own
 * x-amz-security-token. None of that may reach a client or a log. */
static void test_error_message_no_canonical_request(void **state)
{
    char msg[2048];
    const char *b =
        "{\"message\":\"The request signature we calculated does not match the signature you "
        "provided. Check your AWS Secret Access Key and signing method. Consult the service "
        "documentation for details.\\n\\nThe Canonical String for this request should have "
        "been\\n'POST\\n/model/m/invoke\\n\\nhost:bedrock-runtime.us-east-1.amazonaws.com\\n"
        "x-amz-date:20240101T000000Z\\nx-amz-security-token:FwoGZXIvYXdzSECRETTOKEN\\n\\n"
        "host;x-amz-date;x-amz-security-token\\ne3b0c442'\\n\\nThe String-to-Sign should have "
        "been\\n'AWS4-HMAC-SHA256\\n20240101T000000Z\\n20240101/us-east-1/bedrock/aws4_request"
        "\\nabc'\\n\"}";
    tg_aws_error_message(b, strlen(b), msg, sizeof(msg));
    assert_null(strstr(msg, "SECRETTOKEN"));
    assert_null(strstr(msg, "Canonical String"));
    assert_null(strstr(msg, "String-to-Sign"));
    assert_string_equal(msg, "The request signature we calculated does not match the signature "
                             "you provided. Check your AWS Secret Access Key and signing method. "
                             "Consult the service documentation for details.");
    /* Any other mention of the token header ends the message too. */
    const char *b2 = "{\"Message\":\"bad header x-amz-security-token:IQoJSECRET here\"}";
    tg_aws_error_message(b2, strlen(b2), msg, sizeof(msg));
    assert_null(strstr(msg, "SECRET"));
    assert_string_equal(msg, "bad header");
}

static void test_text_copy(void **state)
{
    char out[8];
    /* Truncation never cuts a character: "ab" + "é" (2) + "日" (3) = 7, then
     * "本" no longer fits. */
    const char *s = "ab\xc3\xa9\xe6\x97\xa5\xe6\x9c\xac";
    tg_aws_text_copy(out, sizeof(out), s, strlen(s));
    assert_string_equal(out, "ab\xc3\xa9\xe6\x97\xa5");
    tg_aws_text_copy(out, 5, s, strlen(s));
    assert_string_equal(out, "ab\xc3\xa9");
    tg_aws_text_copy(out, 4, s, strlen(s));
    assert_string_equal(out, "ab");
    /* Invalid UTF-8 (stray continuation, overlong, surrogate, cut sequence)
     * becomes '?'. */
    const char *bad = "\x80\xc0\xaf\xed\xa0\x80\xe6\x97";
    char big[32];
    tg_aws_text_copy(big, sizeof(big), bad, strlen(bad));
    assert_string_equal(big, "????????");
    tg_aws_text_copy(big, sizeof(big), "\xf4\x90\x80\x80|\xf0\x9f\x98\x80", 9);
    assert_string_equal(big, "????|\xf0\x9f\x98\x80");
    tg_aws_text_copy(big, sizeof(big), "x\0y", 3);
    assert_string_equal(big, "xy");
    tg_aws_text_copy(big, 1, "abc", 3);
    assert_string_equal(big, "");
    tg_aws_text_copy(big, sizeof(big), NULL, 3);
    assert_string_equal(big, "");
}

static void test_json_helpers(void **state)
{
    cJSON *j = tg_aws_json_parse(" {\"a\":1} \r\n", 11);
    assert_non_null(j);
    int64_t v = -1;
    assert_int_equal(tg_aws_json_count(j, "a", &v), 1);
    assert_int_equal(v, 1);
    assert_int_equal(tg_aws_json_count(j, "b", &v), 0);
    cJSON_Delete(j);
    assert_null(tg_aws_json_parse("{\"a\":1}x", 8));
    assert_null(tg_aws_json_parse("1 2", 3));
    assert_null(tg_aws_json_parse(NULL, 0));
    const char *counts =
        "{\"z\":0,\"n\":null,\"neg\":-1,\"f\":2.5,\"s\":\"3\",\"big\":9007199254740991,"
        "\"huge\":9007199254740992,\"t\":true,\"e\":1e2}";
    j = tg_aws_json_parse(counts, strlen(counts));
    assert_non_null(j);
    assert_int_equal(tg_aws_json_count(j, "z", &v), 1);
    assert_int_equal(v, 0);
    assert_int_equal(tg_aws_json_count(j, "n", &v), 0);
    assert_int_equal(tg_aws_json_count(j, "neg", &v), -1);
    assert_int_equal(tg_aws_json_count(j, "f", &v), -1);
    assert_int_equal(tg_aws_json_count(j, "s", &v), -1);
    assert_int_equal(tg_aws_json_count(j, "big", &v), 1);
    assert_int_equal(v, 9007199254740991LL);
    assert_int_equal(tg_aws_json_count(j, "huge", &v), -1);
    assert_int_equal(tg_aws_json_count(j, "t", &v), -1);
    assert_int_equal(tg_aws_json_count(j, "e", &v), 1); /* 1e2 is the integer 100 */
    assert_int_equal(v, 100);
    cJSON_Delete(j);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops),
        cmocka_unit_test(test_model_ids),
        cmocka_unit_test(test_model_id_limits),
        cmocka_unit_test(test_paths),
        cmocka_unit_test(test_usage_headers),
        cmocka_unit_test(test_usage_converse),
        cmocka_unit_test(test_invoke_stream_text),
        cmocka_unit_test(test_invoke_stream_metrics),
        cmocka_unit_test(test_invoke_stream_malformed),
        cmocka_unit_test(test_converse_stream),
        cmocka_unit_test(test_error_status),
        cmocka_unit_test(test_stream_exceptions),
        cmocka_unit_test(test_error_message),
        cmocka_unit_test(test_error_message_no_canonical_request),
        cmocka_unit_test(test_text_copy),
        cmocka_unit_test(test_json_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

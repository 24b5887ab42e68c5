/* test_openai.c - usage extraction from OpenAI-compatible bodies and chunks,
 * and the byte-level checks that spare a JSON parse per stream chunk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "core/core.h"
#include "api/internal.h"
#include "providers/openai.h"

static void test_usage_with_cache(void **state)
{
    tg_usage_event_t ev;
    memset(&ev, 0, sizeof(ev));
    cJSON *j =
        cJSON_Parse("{\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":7,"
                    "\"total_tokens\":107,\"prompt_tokens_details\":{\"cached_tokens\":60}}}");
    assert_int_equal(tg_openai_usage(j, &ev), 1);
    assert_int_equal(ev.input_tokens, 40);
    assert_int_equal(ev.cache_read_tokens, 60);
    assert_int_equal(ev.output_tokens, 7);
    assert_int_equal(ev.token_source, TG_TOKENS_PROVIDER);
    cJSON_Delete(j);
}

static void test_usage_absent_or_null(void **state)
{
    tg_usage_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.input_tokens = 5;
    cJSON *j = cJSON_Parse("{\"usage\":null}");
    assert_int_equal(tg_openai_usage(j, &ev), 0);
    assert_int_equal(ev.input_tokens, 5);
    cJSON_Delete(j);
    j = cJSON_Parse("{\"choices\":[]}");
    assert_int_equal(tg_openai_usage(j, &ev), 0);
    cJSON_Delete(j);
}

static void test_usage_clamps_bad_values(void **state)
{
    tg_usage_event_t ev;
    memset(&ev, 0, sizeof(ev));
    cJSON *j = cJSON_Parse("{\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":-4,"
                           "\"prompt_tokens_details\":{\"cached_tokens\":9}}}");
    assert_int_equal(tg_openai_usage(j, &ev), 1);
    assert_int_equal(ev.input_tokens, 0);
    assert_int_equal(ev.cache_read_tokens, 3);
    assert_int_equal(ev.output_tokens, 0);
    cJSON_Delete(j);
}

/* The body path reads only the top-level usage member; it must agree with a
 * whole parse on every well-formed body and fall back to one when unsure. */
static void test_usage_body(void **state)
{
    static const struct {
        const char *body;
        int rc;
        int64_t in, out;
    } cases[] = {
        {"{\"id\":\"x\",\"choices\":[{\"message\":{\"content\":\"a \\\"usage\\\": {}\"}}],"
         "\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":34}}",
         1, 12, 34},
        /* nested usage members are not the response's */
        {"{\"choices\":[{\"usage\":{\"prompt_tokens\":9}}],\"x\":[1,-2.5e+3,true,false,null]}", 0,
         0, 0},
        /* the first of two wins, as with cJSON_GetObjectItem */
        {" {\"usage\" : {\"prompt_tokens\":1,\"completion_tokens\":2} , "
         "\"usage\":{\"prompt_tokens\":5}}",
         1, 1, 2},
        {"{\"usage\":null}", 0, 0, 0},
        {"{\"usage\":7}", 0, 0, 0},
        /* the numbers as num() reads them: clamped, truncated, cached apart */
        {"{\"usage\":{\"prompt_tokens\":100,\"completion_tokens\":12.9,"
         "\"prompt_tokens_details\":{\"cached_tokens\":60}}}",
         1, 40, 12},
        {"{\"usage\":{\"prompt_tokens\":-5,\"completion_tokens\":1e16,"
         "\"prompt_tokens_details\":[{\"cached_tokens\":3}]}}",
         1, 0, 0},
        {"{\"usage\":{\"prompt_tokens\":\"9\",\"completion_tokens\":2.5E+1,"
         "\"prompt_tokens_details\":{\"cached_tokens\":90}}}",
         1, 0, 25},
        /* an escaped name inside usage: parsed */
        {"{\"usage\":{\"prompt_\\u0074okens\":8,\"completion_tokens\":1}}", 1, 8, 1},
        {"{}", 0, 0, 0},
        /* an escaped top-level name: found by the whole parse */
        {"{\"us\\u0061ge\":{\"prompt_tokens\":3,\"completion_tokens\":4}}", 1, 3, 4},
        /* what the scanner refuses goes to cJSON, which takes "01" */
        {"{\"usage\":{\"prompt_tokens\":3},\"x\":01}", 1, 3, 0},
        /* raw control characters in strings pass, as cJSON lets them */
        {"{\"x\":\"a\x01\nb\\\"\",\"usage\":{\"prompt_tokens\":3}}", 1, 3, 0},
        /* malformed bodies yield nothing, whatever usage they hold */
        {"{\"usage\":{\"prompt_tokens\":3},\"x\":\"a\\", 0, 0, 0},
        {"{\"usage\":{\"prompt_tokens\":3},\"x\":tru}", 0, 0, 0},
        {"{\"usage\":{\"prompt_tokens\":3},\"x\":\"\\q\"}", 0, 0, 0},
        {"{\"usage\":{\"prompt_tokens\":3}", 0, 0, 0},
        {"[{\"usage\":{\"prompt_tokens\":3}}]", 0, 0, 0},
        {"", 0, 0, 0},
        /* counts as plain digits, up to and past 15 of them */
        {"{\"usage\":{\"prompt_tokens\":999999999999999,\"completion_tokens\":0}}", 1,
         999999999999999, 0},
        {"{\"usage\":{\"prompt_tokens\":1234567890123456,\"completion_tokens\":10}}", 1,
         1234567890123456, 10},
        /* strings longer than the byte-by-byte stretch, escapes before and after it */
        {"{\"id\":\"0123456789012345678901234567890123456789\\\"x\","
         "\"c\":\"a\\n0123456789012345678901234567890123456789\","
         "\"d\":\"0123456789012345678901234567890\\u00e9\","
         "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}",
         1, 7, 3},
        {"{\"id\":\"0123456789012345678901234567890123456789\\q\","
         "\"usage\":{\"prompt_tokens\":7,\"completion_tokens\":3}}",
         0, 0, 0},
        /* \\u escapes as cJSON takes them: a surrogate pair, and what it refuses
         * (a low surrogate alone, a high one unpaired or paired with a non-low) */
        {"{\"x\":\"\\ud83d\\ude00 \\u00e9\\u0041\",\"usage\":{\"prompt_tokens\":2}}", 1, 2, 0},
        {"{\"x\":\"\\udc00\",\"usage\":{\"prompt_tokens\":2}}", 0, 0, 0},
        {"{\"x\":\"\\ud800\",\"usage\":{\"prompt_tokens\":2}}", 0, 0, 0},
        {"{\"x\":\"\\ud800\\u0041\",\"usage\":{\"prompt_tokens\":2}}", 0, 0, 0},
        {"{\"x\":\"\\ud800\\\\ude00\",\"usage\":{\"prompt_tokens\":2}}", 0, 0, 0},
        /* cJSON takes a bad hex digit (as 0): the scanner leaves it to cJSON */
        {"{\"x\":\"\\u12G4\",\"usage\":{\"prompt_tokens\":2}}", 1, 2, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tg_usage_event_t ev;
        memset(&ev, 0, sizeof(ev));
        const char *b = cases[i].body;
        assert_int_equal(tg_openai_usage_body(b, strlen(b), &ev), cases[i].rc);
        assert_int_equal(ev.input_tokens, cases[i].in);
        assert_int_equal(ev.output_tokens, cases[i].out);
        /* the same answer as a whole parse */
        cJSON *j = cJSON_ParseWithLength(b, strlen(b));
        tg_usage_event_t ref;
        memset(&ref, 0, sizeof(ref));
        assert_int_equal(j ? tg_openai_usage(j, &ref) : 0, cases[i].rc);
        assert_int_equal(ref.input_tokens, ev.input_tokens);
        assert_int_equal(ref.cache_read_tokens, ev.cache_read_tokens);
        assert_int_equal(ref.output_tokens, ev.output_tokens);
        cJSON_Delete(j);
    }
}

static void test_json_member(void **state)
{
    const char *v = NULL;
    size_t n = 0;
    const char *j = "{\"model\" :\t\"m\\\"1\", \"messages\":[{\"model\":\"inner\"}]}";
    assert_int_equal(tg_json_member(j, strlen(j), "model", &v, &n), 1);
    assert_int_equal(n, 6);
    assert_memory_equal(v, "\"m\\\"1\"", 6);
    assert_int_equal(tg_json_member(j, strlen(j), "stream", &v, &n), 0);
    /* depth is bounded like cJSON's: 1000 levels */
    char deep[8192];
    size_t k = 0;
    k += (size_t)sprintf(deep, "{\"a\":");
    for (int i = 0; i < 1000; i++)
        deep[k++] = '[';
    for (int i = 0; i < 1000; i++)
        deep[k++] = ']';
    deep[k++] = '}';
    assert_int_equal(tg_json_member(deep, k, "a", &v, &n), -1);
    /* one level less is read, objects and arrays mixed, as cJSON reads it */
    k = (size_t)sprintf(deep, "{\"a\":");
    for (int i = 0; i < 999; i++)
        k += (size_t)sprintf(deep + k, "%s", i % 2 ? "[" : "{\"k\":");
    deep[k++] = '0';
    for (int i = 998; i >= 0; i--)
        deep[k++] = i % 2 ? ']' : '}';
    deep[k++] = '}';
    cJSON *dj = cJSON_ParseWithLength(deep, k);
    assert_non_null(dj);
    cJSON_Delete(dj);
    assert_int_equal(tg_json_member(deep, k, "a", &v, &n), 1);
    assert_int_equal(n, k - 6);
    /* several names in one pass: the first of each, absent ones NULL */
    static const char *const names[] = {"messages", "stream", "model", "x"};
    tg_span_t m[4];
    const char *two = "{\"model\":\"a\",\"x\":[1],\"model\":\"b\",\"messages\":{}}";
    assert_int_equal(tg_json_members(two, strlen(two), names, 4, m), 3);
    assert_int_equal(m[0].len, 2);
    assert_memory_equal(m[0].p, "{}", 2);
    assert_null(m[1].p);
    assert_int_equal(m[2].len, 3);
    assert_memory_equal(m[2].p, "\"a\"", 3);
    assert_int_equal(m[3].len, 3);
    assert_int_equal(tg_json_members("{\"x\":}", 6, names, 4, m), -1);
    /* once: a listed name twice is TG_JSON_DUP; unlisted ones may repeat */
    assert_int_equal(tg_json_members_once(two, strlen(two), names, 4, m), TG_JSON_DUP);
    const char *rep = "{\"y\":1,\"y\":2,\"model\":\"a\",\"stream\":true}";
    assert_int_equal(tg_json_members_once(rep, strlen(rep), names, 4, m), 2);
    assert_memory_equal(m[1].p, "true", 4);
    /* a raw NUL in a string (cJSON would cut the name there): left to a parse */
    static const char nul_key[] = "{\"model\0\":\"a\",\"model\":\"b\"}";
    assert_int_equal(tg_json_members(nul_key, sizeof(nul_key) - 1, names, 4, m), -1);
    static const char nul_val[] = "{\"model\":\"a\0b\",\"x\":\"0123456789abcdef0123\0\"}";
    assert_int_equal(tg_json_members(nul_val, sizeof(nul_val) - 1, names, 4, m), -1);
    char buf[4];
    assert_int_equal(tg_strlcpy(buf, "abcdef", sizeof(buf)), 6);
    assert_string_equal(buf, "abc");
    assert_int_equal(tg_strlcpy(buf, "ab", 0), 2);
    char dec[21] = {0};
    assert_int_equal(tg_u64_dec(dec, 0), 1);
    assert_memory_equal(dec, "0", 1);
    assert_int_equal(tg_u64_dec(dec, 1000), 4);
    assert_memory_equal(dec, "1000", 4);
    assert_int_equal(tg_u64_dec(dec, UINT64_MAX), 20);
    assert_string_equal(dec, "18446744073709551615");
}

/* The request's output cap read from its bytes agrees with the tree's
 * reading wherever the bytes are readable, and plain bodies are. */
static void test_max_output_json(void **state)
{
    static const struct {
        const char *body;
        int64_t want;
        int readable;
    } cases[] = {
        {"{\"model\":\"m\",\"max_tokens\":256}", 256, 1},
        {"{\"max_tokens\":100,\"max_completion_tokens\":50}", 50, 1},
        {"{\"max_completion_tokens\":0,\"max_tokens\":7}", 7, 1},
        {"{\"max_tokens\":\"9\",\"max_gen_len\":12.7}", 12, 1},
        {"{\"max_tokens\":2e9,\"maxTokens\":1e9}", 1000000000, 1},
        {"{\"inferenceConfig\":{\"max_new_tokens\":33}}", 33, 1},
        {"{\"inferenceConfig\":{\"maxTokens\":-1,\"max_new_tokens\":5}}", 5, 1},
        {"{\"inferenceConfig\":[{\"maxTokens\":4}],\"max_new_tokens\":3}", 3, 1},
        {"{\"textGenerationConfig\":{\"maxTokenCount\":64}}", 64, 1},
        {"{\"parameters\":{\"max_new_tokens\":8},\"parameters\":{\"max_new_tokens\":9}}", 8, 1},
        {"{\"messages\":[{\"max_tokens\":5}]}", 0, 1},
        {"{}", 0, 1},
        {"{\"max_tokens\":null}", 0, 1},
        /* what the scanner leaves to a parse */
        {"{\"max_tokens\":01}", 1, 0},
        {"{\"inferenceConfig\":{\"m\\u0061xTokens\":4}}", 4, 0},
        {"[1]", 0, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        const char *b = cases[i].body;
        cJSON *j = cJSON_ParseWithLength(b, strlen(b));
        int64_t tree = tg_api_max_output(j), bytes = -7;
        cJSON_Delete(j);
        assert_int_equal(tree, cases[i].want);
        const char *names[TG_JSON_MEMBERS_MAX];
        tg_span_t v[TG_JSON_MEMBERS_MAX];
        size_t n = 0;
        while ((names[n] = tg_api_max_output_name(n)))
            n++;
        int rc = tg_json_members(b, strlen(b), names, n, v) < 0
                     ? -1
                     : tg_api_max_output_spans(v, &bytes);
        assert_int_equal(rc, cases[i].readable ? 0 : -1);
        if (rc == 0) assert_int_equal(bytes, tree);
    }
}

static void test_chunk_checks(void **state)
{
    const char *a = "{\"choices\":[{\"delta\":{\"content\":\"Hi\"}}],\"usage\":null}";
    const char *b = "{\"choices\":[],\"usage\" : {\"prompt_tokens\":1}}";
    const char *c = "{\"choices\":[{\"delta\":{\"content\":\"\"}}]}";
    const char *d = "{\"choices\":[{\"delta\":{\"role\":\"assistant\",\"content\": \"x\"}}]}";
    assert_false(tg_openai_chunk_has_usage(a, strlen(a)));
    assert_true(tg_openai_chunk_has_usage(b, strlen(b)));
    assert_true(tg_openai_chunk_has_content(a, strlen(a)));
    assert_false(tg_openai_chunk_has_content(b, strlen(b)));
    assert_false(tg_openai_chunk_has_content(c, strlen(c)));
    assert_true(tg_openai_chunk_has_content(d, strlen(d)));
}

static void test_estimate(void **state)
{
    cJSON *m =
        cJSON_Parse("[{\"role\":\"user\",\"content\":\"12345678\"},"
                    "{\"role\":\"user\",\"content\":[{\"type\":\"text\",\"text\":\"abcd\"}]}]");
    /* 12 characters: 3 tokens, plus 4 per message. */
    assert_int_equal(tg_openai_estimate_input(m), 3 + 8);
    cJSON_Delete(m);
    assert_int_equal(tg_openai_estimate_input(NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage_with_cache),
        cmocka_unit_test(test_usage_absent_or_null),
        cmocka_unit_test(test_usage_clamps_bad_values),
        cmocka_unit_test(test_usage_body),
        cmocka_unit_test(test_max_output_json),
        cmocka_unit_test(test_json_member),
        cmocka_unit_test(test_chunk_checks),
        cmocka_unit_test(test_estimate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

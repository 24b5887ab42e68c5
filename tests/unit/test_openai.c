/* test_openai.c - usage extraction from OpenAI-compatible bodies and chunks,
 * and the byte-level checks that spare a JSON parse per stream chunk. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

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
        cmocka_unit_test(test_chunk_checks),
        cmocka_unit_test(test_estimate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* test_catalog.c - the Bedrock catalogue: parsing ListFoundationModels and
 * every page of ListInferenceProfiles, sealing (sorted, unique), lookups, and
 * snapshots that stay valid across a publish. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "providers/catalog.h"

static const char models_body[] =
    "{\"modelSummaries\":["
    "{\"modelArn\":\"arn:aws:bedrock:us-east-1::foundation-model/amazon.nova-pro-v1:0\","
    "\"modelId\":\"amazon.nova-pro-v1:0\",\"modelName\":\"Nova Pro\",\"providerName\":\"Amazon\","
    "\"inferenceTypesSupported\":[\"ON_DEMAND\"],\"modelLifecycle\":{\"status\":\"ACTIVE\"}},"
    "{\"modelId\":\"anthropic.claude-3-5-sonnet-20240620-v1:0\"},"
    "{\"modelId\":\"\"},{\"modelName\":\"no id\"},"
    "{\"modelId\":\"amazon.nova-pro-v1:0\"}]}";

static void test_models(void **state)
{
    tg_catalog_snap_t *s = tg_catalog_snap_new();
    assert_non_null(s);
    assert_int_equal(tg_catalog_parse_models(s, models_body, strlen(models_body)), 3);
    tg_catalog_snap_seal(s);
    assert_int_equal(s->n, 2); /* the duplicate is gone */
    assert_string_equal(s->entries[0].id, "amazon.nova-pro-v1:0");
    assert_string_equal(s->entries[1].id, "anthropic.claude-3-5-sonnet-20240620-v1:0");
    assert_true(tg_catalog_snap_has(s, "amazon.nova-pro-v1:0", 20));
    assert_false(tg_catalog_snap_has(s, "amazon.nova-pro-v1", 18)); /* a prefix is not a hit */
    assert_false(tg_catalog_snap_has(s, "amazon.nova-pro-v1:0x", 21));
    assert_false(tg_catalog_snap_has(NULL, "x", 1));
    tg_catalog_snap_release(s);
}

/* A looked-up id is counted bytes and may hold a NUL: it must neither match a
 * shorter entry nor make the lookup read past that entry's end. */
static void test_has_id_with_nul(void **state)
{
    tg_catalog_snap_t *s = tg_catalog_snap_new();
    assert_non_null(s);
    assert_int_equal(tg_catalog_snap_add(s, "m1", 2, TG_CATALOG_MODEL), 0);
    assert_int_equal(tg_catalog_snap_add(s, "m1zz", 4, TG_CATALOG_MODEL), 0);
    tg_catalog_snap_seal(s);
    static const char id[] = "m1\0xxxxxxxxxxxxxxxxxxxxxxxxxxxxx";
    assert_false(tg_catalog_snap_has(s, id, sizeof(id) - 1));
    assert_false(tg_catalog_snap_has(s, "m1\0", 3));
    assert_false(tg_catalog_snap_has(s, "m1z", 3));
    assert_true(tg_catalog_snap_has(s, "m1", 2));
    assert_true(tg_catalog_snap_has(s, "m1zz", 4));
    tg_catalog_snap_release(s);
}

static void test_bad_bodies(void **state)
{
    tg_catalog_snap_t *s = tg_catalog_snap_new();
    char next[64];
    assert_int_equal(tg_catalog_parse_models(s, "not json", 8), TG_EPROTO);
    assert_int_equal(tg_catalog_parse_models(s, "{\"x\":1}", 7), TG_EPROTO);
    assert_int_equal(tg_catalog_parse_models(s, "{\"modelSummaries\":{}}", 21), TG_EPROTO);
    assert_int_equal(tg_catalog_parse_profiles(s, "[", 1, next, sizeof(next)), TG_EPROTO);
    assert_int_equal(
        tg_catalog_parse_profiles(s, "{\"inferenceProfileSummaries\":3}", 31, next, sizeof(next)),
        TG_EPROTO);
    /* An account without profiles may omit the list. */
    assert_int_equal(tg_catalog_parse_profiles(s, "{}", 2, next, sizeof(next)), 0);
    assert_string_equal(next, "");
    tg_catalog_snap_release(s);
}

/* Three pages as the service sends them, the token carried from one to the next. */
static void test_profile_pages(void **state)
{
    static const char *const pages[] = {
        "{\"inferenceProfileSummaries\":[{\"inferenceProfileId\":\"us.amazon.nova-pro-v1:0\","
        "\"inferenceProfileName\":\"US Nova "
        "Pro\",\"status\":\"ACTIVE\",\"type\":\"SYSTEM_DEFINED\"},"
        "{\"inferenceProfileId\":\"eu.anthropic.claude-3-5-sonnet-20240620-v1:0\"}],"
        "\"nextToken\":\"cGFnZToy\"}",
        "{\"inferenceProfileSummaries\":[{\"inferenceProfileId\":\"global.anthropic.claude-"
        "sonnet-4-20250514-v1:0\"}],\"nextToken\":\"cGFnZToz\"}",
        "{\"inferenceProfileSummaries\":[{\"inferenceProfileId\":\"apac.amazon.nova-lite-v1:0\"}]}",
    };
    static const char *const tokens[] = {"cGFnZToy", "cGFnZToz", ""};
    tg_catalog_snap_t *s = tg_catalog_snap_new();
    char next[64];
    int total = 0;
    for (int i = 0; i < 3; i++) {
        int n = tg_catalog_parse_profiles(s, pages[i], strlen(pages[i]), next, sizeof(next));
        assert_true(n > 0);
        total += n;
        assert_string_equal(next, tokens[i]);
    }
    assert_int_equal(total, 4);
    tg_catalog_snap_seal(s);
    assert_int_equal(s->n, 4);
    for (size_t i = 0; i < s->n; i++)
        assert_int_equal(s->entries[i].kind, TG_CATALOG_PROFILE);
    assert_true(tg_catalog_snap_has(s, "apac.amazon.nova-lite-v1:0", 26));
    for (size_t i = 1; i < s->n; i++) /* sorted */
        assert_true(strcmp(s->entries[i - 1].id, s->entries[i].id) < 0);
    /* A token too long for the caller's buffer is an error, not a silent cut. */
    char small[4];
    assert_int_equal(tg_catalog_parse_profiles(s, pages[0], strlen(pages[0]), small, sizeof(small)),
                     TG_ETOOBIG);
    assert_string_equal(small, "");
    tg_catalog_snap_release(s);
}

static void test_publish_keeps_readers(void **state)
{
    tg_provider_t p;
    memset(&p, 0, sizeof(p));
    p.name = "br";
    p.region = "us-east-1";
    p.control_endpoint = "http://127.0.0.1:9/prefix";
    tg_catalog_t *c;
    assert_int_equal(tg_catalog_create(&c, &p, NULL), 0);
    assert_null(tg_catalog_acquire(c)); /* nothing loaded yet */
    tg_catalog_snap_t *a = tg_catalog_snap_new();
    assert_int_equal(tg_catalog_snap_add(a, "m1", 2, TG_CATALOG_MODEL), 0);
    tg_catalog_snap_seal(a);
    tg_catalog_publish(c, a);
    tg_catalog_snap_t *held = tg_catalog_acquire(c);
    assert_ptr_equal(held, a);
    tg_catalog_snap_t *b = tg_catalog_snap_new();
    assert_int_equal(tg_catalog_snap_add(b, "m2", 2, TG_CATALOG_MODEL), 0);
    tg_catalog_snap_seal(b);
    tg_catalog_publish(c, b); /* a stays alive: a reader holds it */
    assert_true(tg_catalog_snap_has(held, "m1", 2));
    tg_catalog_snap_release(held);
    tg_catalog_snap_t *now = tg_catalog_acquire(c);
    assert_true(tg_catalog_snap_has(now, "m2", 2));
    tg_catalog_snap_release(now);
    tg_catalog_destroy(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_models),
        cmocka_unit_test(test_has_id_with_nul),
        cmocka_unit_test(test_bad_bodies),
        cmocka_unit_test(test_profile_pages),
        cmocka_unit_test(test_publish_keeps_readers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

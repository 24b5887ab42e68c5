/* test_prices.c - unit tests for the price book and cost arithmetic
 * (src/usage/prices.c, src/usage/cost.c) and the gateway's pricing of an
 * event (tg_api_price_event): exact decimals and their rejects, dates,
 * effective-from selection (a change at noon), overrides, route prices from
 * the config, cross-region profiles priced as their base model, unpriced
 * calls, cached tokens at their own rates for Converse and InvokeModel, and
 * random costs checked against an independent computation. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "api/internal.h"
#include "config/config.h"
#include "providers/bedrock.h"
#include "usage/cost.h"
#include "usage/prices.h"

/* ---- helpers ------------------------------------------------------------ */

static char tmpdir[] = "/tmp/tg-prices-XXXXXX";
static int nfile;

static char *write_file(const char *text)
{
    static char paths[32][256];
    char *p = paths[nfile++ % 32];
    snprintf(p, 256, "%s/f%d.json", tmpdir, nfile);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return p;
}

/* Loads one book file; returns the error code, message in err. */
static int load1(const char *text, tg_prices_t **b, char *err, size_t cap)
{
    const char *files[] = {write_file(text)};
    return tg_prices_load(b, files, 1, NULL, 0, err, cap);
}

static int64_t t_ms(const char *s)
{
    int64_t ms;
    assert_int_equal(tg_price_parse_time(s, &ms), 0);
    return ms;
}

static void ev_init(tg_usage_event_t *ev, const char *model, const char *region, const char *at)
{
    memset(ev, 0, sizeof(*ev));
    snprintf(ev->id, sizeof(ev->id), "evt_test");
    snprintf(ev->model, sizeof(ev->model), "%s", model);
    snprintf(ev->upstream_model, sizeof(ev->upstream_model), "%s", model);
    snprintf(ev->region, sizeof(ev->region), "%s", region);
    ev->started_ms = t_ms(at);
}

/* ---- decimals and dates ------------------------------------------------------ */

static void test_decimal_exact(void **state)
{
    int64_t v;
    assert_null(tg_price_parse_decimal("3.00", 6, &v));
    assert_int_equal(v, 3000000);
    assert_null(tg_price_parse_decimal("0.000001", 6, &v));
    assert_int_equal(v, 1);
    assert_null(tg_price_parse_decimal("0.0000010", 6, &v)); /* trailing zeros are exact */
    assert_int_equal(v, 1);
    assert_null(tg_price_parse_decimal("0", 6, &v));
    assert_int_equal(v, 0);
    assert_null(tg_price_parse_decimal("00.25", 6, &v));
    assert_int_equal(v, 250000);
    assert_null(tg_price_parse_decimal("0.00875", 6, &v));
    assert_int_equal(v, 8750);
    assert_null(tg_price_parse_decimal("0.000000000001", 12, &v));
    assert_int_equal(v, 1);
    assert_null(tg_price_parse_decimal("0.008", 12, &v));
    assert_int_equal(v, 8000000000LL);
    assert_null(tg_price_parse_decimal("999999999999.999999", 6, &v)); /* the largest */
    assert_int_equal(v, 999999999999999999LL);
    assert_null(tg_price_parse_decimal("999999.999999999999", 12, &v));
    assert_int_equal(v, 999999999999999999LL);
}

static void test_decimal_rejects(void **state)
{
    int64_t v = 42;
    const char *bad[] = {"",   ".5",   "5.",  "1e-3",  "+1",  " 1",
                         "1 ", "0x10", "1,5", "1.2.3", "NaN", "١"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_non_null(tg_price_parse_decimal(bad[i], 6, &v));
    assert_string_equal(tg_price_parse_decimal("-0.5", 6, &v), "is negative");
    assert_non_null(strstr(tg_price_parse_decimal("0.0000001", 6, &v), "more than 6 decimals"));
    assert_non_null(strstr(tg_price_parse_decimal("1.0000005", 6, &v), "more than 6 decimals"));
    assert_non_null(
        strstr(tg_price_parse_decimal("0.0000000000001", 12, &v), "more than 12 decimals"));
    assert_string_equal(tg_price_parse_decimal("1000000000000", 6, &v), "is too large");
    assert_string_equal(tg_price_parse_decimal("1000000", 12, &v), "is too large");
    assert_int_equal(v, 42); /* untouched on error */
}

static void test_time_parse(void **state)
{
    int64_t ms;
    assert_int_equal(tg_price_parse_time("1970-01-01", &ms), 0);
    assert_int_equal(ms, 0);
    assert_int_equal(tg_price_parse_time("2024-02-29T12:00Z", &ms), 0);
    assert_int_equal(ms, 1709208000000LL);
    assert_int_equal(tg_price_parse_time("2025-06-01T12:30:15Z", &ms), 0);
    assert_int_equal(ms, 1748781015000LL);
    const char *bad[] = {"2023-02-29",
                         "2025-13-01",
                         "2025-06-31",
                         "2025-06-01T24:00Z",
                         "2025-06-01T12:00",
                         "2025-06-01 12:00Z",
                         "2025-6-1",
                         "2025-06-01T12:00:60Z",
                         "2025-06-01Z",
                         "1969-12-31",
                         ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(tg_price_parse_time(bad[i], &ms), TG_EINVAL);
}

static void test_usd_format(void **state)
{
    char b[32];
    assert_int_equal(tg_usd_format(0, b, sizeof(b)), 1);
    assert_string_equal(b, "0");
    tg_usd_format(123000000, b, sizeof(b));
    assert_string_equal(b, "0.000123");
    tg_usd_format(1, b, sizeof(b));
    assert_string_equal(b, "0.000000000001");
    tg_usd_format(12000000000000LL, b, sizeof(b));
    assert_string_equal(b, "12");
    tg_usd_format(-500000000000LL, b, sizeof(b));
    assert_string_equal(b, "-0.5");
    tg_usd_format(INT64_MAX, b, sizeof(b));
    assert_string_equal(b, "9223372.036854775807");
    tg_usd_format(INT64_MIN, b, sizeof(b));
    assert_string_equal(b, "-9223372.036854775808");
    assert_int_equal(tg_usd_format(123000000, b, 8), TG_ETOOBIG);
    assert_int_equal(tg_usd_format(123000000, b, 9), 8); /* just fits, with its NUL */
    assert_string_equal(b, "0.000123");
    assert_int_equal(tg_usd_format(1000000000001LL, b, sizeof(b)), 14);
    assert_string_equal(b, "1.000000000001");
    tg_usd_format(-10000000000000LL, b, sizeof(b));
    assert_string_equal(b, "-10");
}

/* ---- loading ------------------------------------------------------------------ */

static void test_load_rejects_name_the_entry(void **state)
{
    char err[512];
    tg_prices_t *b = NULL;
    static const struct {
        const char *json, *want;
    } cases[] = {
        {"{\"version\":\"v1\",\"entries\":[{\"model\":\"a\",\"region\":\"us-east-1\",\"input\":"
         "\"1\"},"
         "{\"model\":\"bb\",\"region\":\"us-east-1\",\"input\":3.0}]}",
         "entries[1].input: must be a decimal string"},
        {"{\"version\":\"v1\",\"entries\":[{\"model\":\"a\",\"region\":\"us-east-1\",\"output\":\"-"
         "1\"}]}",
         "entries[0].output: \"-1\" is negative"},
        {"{\"version\":\"v1\",\"entries\":[{\"model\":\"a\",\"region\":\"us-east-1\",\"cache_"
         "read\":"
         "\"0.1234567\"}]}",
         "entries[0].cache_read: \"0.1234567\" has more than 6 decimals"},
        {"{\"version\":\"v1\",\"entries\":[{\"model\":\"a\",\"region\":\"us-east-1\",\"images\":[{"
         "\"size\":\"512x512\",\"quality\":\"standard\",\"usd\":\"0.0000000000001\"}]}]}",
         "entries[0].images[0].usd: \"0.0000000000001\" has more than 12 decimals"},
        {"{\"version\":\"v1\",\"entries\":[{\"model\":\"a\",\"region\":\"us-east-1\"}]}",
         "entries[0]: names no price"},
        {"{\"version\":\"v1\",\"entries\":[{\"model\":\"a\",\"input\":\"1\"}]}",
         "entries[0]: needs exactly one of region or regions"},
        {"{\"version\":\"v1\",\"entries\":[{\"model\":\"a\",\"region\":\"us-east-1\",\"input\":"
         "\"1\","
         "\"effective_from\":\"2025-02-30\"}]}",
         "entries[0].effective_from: \"2025-02-30\" is not"},
        {"{\"version\":\"v1\",\"entries\":[{\"model\":\"a\",\"region\":\"us-east-1\",\"input\":"
         "\"1\","
         "\"colour\":\"red\"}]}",
         "entries[0].colour: unknown field"},
        {"{\"version\":\"v1\",\"entries\":[{\"model\":\"a\",\"regions\":[\"us-east-1\"],\"input\":"
         "\"1\"},"
         "{\"model\":\"a\",\"region\":\"us-east-1\",\"input\":\"2\"}]}",
         "entries[1]: model a, region us-east-1, effective_from (always): also in"},
        {"{\"version\":\"a-version-too-long\",\"entries\":[]}", "version: longer than 14"},
        {"{\"entries\":[]}", "version: is required"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        err[0] = '\0';
        assert_int_equal(load1(cases[i].json, &b, err, sizeof(err)), TG_ECONFIG);
        assert_null(b);
        if (!strstr(err, cases[i].want)) fail_msg("case %zu: got \"%s\"", i, err);
    }
}

static const char book_noon[] =
    "{\"version\":\"v7\",\"entries\":["
    " {\"model\":\"m\",\"region\":\"us-east-1\",\"effective_from\":\"2025-01-01\","
    "  \"input\":\"1.00\",\"output\":\"2.00\"},"
    " {\"model\":\"m\",\"region\":\"us-east-1\",\"effective_from\":\"2025-06-01T12:00Z\","
    "  \"input\":\"1.50\",\"output\":\"3.00\"},"
    " {\"model\":\"m\",\"region\":\"*\",\"input\":\"9\",\"output\":\"9\"},"
    " {\"model\":\"img\",\"regions\":[\"us-east-1\",\"us-west-2\"],\"images\":["
    "   {\"size\":\"larger\",\"quality\":\"standard\",\"usd\":\"0.01\"},"
    "   {\"size\":\"512x512\",\"quality\":\"standard\",\"usd\":\"0.008\"},"
    "   {\"size\":\"1024x1024\",\"quality\":\"standard\",\"usd\":\"0.009\"},"
    "   {\"size\":\"512x512\",\"quality\":\"premium\",\"usd\":\"0.01\"}]}"
    "]}";

static void test_effective_from_noon(void **state)
{
    char err[256];
    tg_prices_t *b;
    assert_int_equal(load1(book_noon, &b, err, sizeof(err)), 0);
    const tg_price_t *p = tg_prices_find(b, "m", "us-east-1", t_ms("2025-06-01T11:59:59Z"));
    assert_non_null(p);
    assert_int_equal(p->input, 1000000);
    assert_string_equal(p->version, "v7@20250101");
    p = tg_prices_find(b, "m", "us-east-1", t_ms("2025-06-01T12:00Z"));
    assert_int_equal(p->input, 1500000);
    assert_string_equal(p->version, "v7@20250601T1200Z");
    assert_int_equal(tg_prices_find(b, "m", "us-east-1", t_ms("2025-06-01T12:00Z") - 1)->input,
                     1000000);
    /* Before the first dated price of the region: the any-region entry. */
    p = tg_prices_find(b, "m", "us-east-1", t_ms("2024-12-31T23:59:59Z"));
    assert_string_equal(p->region, "*");
    assert_string_equal(p->version, "v7");
    assert_int_equal(tg_prices_find(b, "m", "eu-west-1", t_ms("2025-07-01"))->input, 9000000);
    assert_null(tg_prices_find(b, "other", "us-east-1", t_ms("2025-07-01")));
    assert_null(tg_prices_find(b, "img", "eu-west-1", t_ms("2025-07-01")));

    /* Calls before and after noon, each at its own price. */
    tg_usage_event_t ev;
    ev_init(&ev, "m", "us-east-1", "2025-06-01T11:59:59Z");
    ev.input_tokens = 1000, ev.output_tokens = 10;
    const char *keys[] = {"m"};
    assert_int_equal(tg_cost_event(b, keys, 1, &ev), 0);
    assert_int_equal(ev.cost_total, 1000 * 1000000LL + 10 * 2000000LL);
    ev_init(&ev, "m", "us-east-1", "2025-06-01T12:00:00Z");
    ev.input_tokens = 1000, ev.output_tokens = 10;
    assert_int_equal(tg_cost_event(b, keys, 1, &ev), 0);
    assert_int_equal(ev.cost_total, 1000 * 1500000LL + 10 * 3000000LL);
    assert_string_equal(ev.price_version, "v7@20250601T1200Z");
    assert_int_equal(ev.unpriced, 0);

    /* Images: the smallest size that fits, by quality; the first is the default. */
    p = tg_prices_find(b, "img", "us-west-2", t_ms("2025-07-01"));
    tg_image_spec_t s = {512, 512, NULL};
    assert_int_equal(tg_cost_image_price(p, &s)->pico, 8000000000LL);
    s = (tg_image_spec_t){513, 512, "standard"};
    assert_int_equal(tg_cost_image_price(p, &s)->pico, 9000000000LL);
    s = (tg_image_spec_t){2048, 512, NULL};
    assert_int_equal(tg_cost_image_price(p, &s)->pico, 10000000000LL);
    s = (tg_image_spec_t){256, 256, tg_image_quality_from_steps(51)};
    assert_int_equal(tg_cost_image_price(p, &s)->pico, 10000000000LL);
    s = (tg_image_spec_t){2048, 2048, "premium"};
    assert_null(tg_cost_image_price(p, &s));
    assert_int_equal(tg_cost_image_price(p, NULL)->pico, 10000000000LL);
    tg_cost_t c;
    s = (tg_image_spec_t){512, 512, "standard"};
    assert_int_equal(tg_cost_compute(p, 0, 0, 0, 0, 3, &s, &c), 0);
    assert_int_equal(c.images, 24000000000LL);
    assert_int_equal(c.total, 24000000000LL);
    assert_int_equal(c.unpriced, 0);
    tg_prices_free(b);
}

static void test_override_replaces_history(void **state)
{
    char err[256];
    const char *files[] = {
        write_file(book_noon),
        write_file("{\"version\":\"local\",\"entries\":[{\"model\":\"m\",\"region\":\"us-east-1\","
                   "\"input\":\"0.5\",\"output\":\"0.5\"},{\"model\":\"new\",\"region\":\"*\","
                   "\"input\":\"4\"}]}"),
    };
    tg_prices_t *b;
    assert_int_equal(tg_prices_load(&b, files, 2, NULL, 0, err, sizeof(err)), 0);
    /* The override owns us-east-1's whole history: the dated prices are gone. */
    const tg_price_t *p = tg_prices_find(b, "m", "us-east-1", t_ms("2025-07-01"));
    assert_int_equal(p->input, 500000);
    assert_string_equal(p->version, "local");
    /* Pairs it does not name keep the shipped book's. */
    assert_int_equal(tg_prices_find(b, "m", "eu-west-1", t_ms("2025-07-01"))->input, 9000000);
    assert_int_equal(tg_prices_find(b, "new", "ap-south-1", t_ms("2025-07-01"))->input, 4000000);
    size_t n = 0;
    for (size_t i = 0; i < tg_prices_count(b); i++)
        n += strcmp(tg_prices_at(b, i)->model, "m") == 0;
    assert_int_equal(n, 2); /* m/us-east-1 (override) and m/"*" */
    tg_prices_free(b);
}

/* ---- the gateway's pricing of an event ---------------------------------------- */

static tg_config_t *load_config(const char *book_path, const char *models)
{
    char text[4096], err[512];
    snprintf(text, sizeof(text),
             "{\"store\":{\"path\":\"%s/t.db\"},\"prices\":\"%s\",\"providers\":["
             "{\"name\":\"o\",\"type\":\"openai\",\"base_url\":\"http://127.0.0.1:9/v1\"},"
             "{\"name\":\"br\",\"type\":\"bedrock\",\"region\":\"us-east-1\","
             "\"endpoint\":\"http://127.0.0.1:9\"}],\"models\":[%s]}",
             tmpdir, book_path, models);
    tg_config_t *cfg = NULL;
    int rc = tg_config_load(&cfg, write_file(text), err, sizeof(err));
    if (rc) fail_msg("config: %s", err);
    return cfg;
}

static const char book_aws[] =
    "{\"version\":\"tb1\",\"entries\":["
    " {\"model\":\"anthropic.claude-3-7-sonnet-20250219-v1:0\",\"regions\":[\"us-east-1\"],"
    "  \"input\":\"3.00\",\"output\":\"15.00\",\"cache_read\":\"0.30\",\"cache_write\":\"3.75\"},"
    " {\"model\":\"anthropic.claude-3-7-sonnet-20250219-v1:0\",\"regions\":[\"eu-west-1\"],"
    "  \"input\":\"3.30\",\"output\":\"16.50\",\"cache_read\":\"0.33\",\"cache_write\":\"4.125\"},"
    " {\"model\":\"anthropic.claude-3-5-sonnet-20240620-v1:0\",\"region\":\"us-east-1\","
    "  \"input\":\"3\",\"output\":\"15\"},"
    " {\"model\":\"gpt-x\",\"region\":\"*\",\"input\":\"0.10\",\"output\":\"0.40\"}"
    "]}";

static void test_route_price_from_config(void **state)
{
    tg_config_t *cfg =
        load_config(write_file(book_aws),
                    "{\"id\":\"chat\",\"provider\":\"o\",\"upstream_model\":\"gpt-x\","
                    "\"price\":[{\"input\":\"1.25\",\"output\":\"5\"},{\"effective_from\":"
                    "\"2025-06-01T12:00Z\",\"input\":\"2.5\",\"output\":\"10\"}]},"
                    "{\"id\":\"plain\",\"provider\":\"o\",\"upstream_model\":\"gpt-x\"}");
    const tg_model_route_t *r = tg_config_model(cfg, "chat", 4);
    assert_true(r->has_price);
    tg_usage_event_t ev;
    ev_init(&ev, "chat", "", "2025-06-01T11:00Z");
    snprintf(ev.upstream_model, sizeof(ev.upstream_model), "gpt-x");
    ev.input_tokens = 7, ev.output_tokens = 3;
    assert_int_equal(tg_api_price_event(cfg->prices, r, 0, &ev), 0);
    assert_int_equal(ev.cost_input, 7 * 1250000LL);
    assert_int_equal(ev.cost_output, 3 * 5000000LL);
    assert_string_equal(ev.price_version, "config");
    ev.started_ms = t_ms("2025-06-01T12:00Z");
    tg_api_price_event(cfg->prices, r, 0, &ev);
    assert_int_equal(ev.cost_total, 7 * 2500000LL + 3 * 10000000LL);
    assert_string_equal(ev.price_version, "config@20250601T1200Z");
    /* A route without its own price: the book's, by the upstream model id. */
    r = tg_config_model(cfg, "plain", 5);
    assert_false(r->has_price);
    ev_init(&ev, "plain", "", "2025-06-01T11:00Z");
    snprintf(ev.upstream_model, sizeof(ev.upstream_model), "gpt-x");
    ev.input_tokens = 10, ev.output_tokens = 10;
    tg_api_price_event(cfg->prices, r, 0, &ev);
    assert_int_equal(ev.cost_total, 10 * 100000LL + 10 * 400000LL);
    assert_string_equal(ev.price_version, "tb1");
    tg_config_free(cfg);

    /* A bad route price stops the load, naming it. */
    char text[1024], err[512];
    snprintf(
        text, sizeof(text),
        "{\"store\":{\"path\":\"%s/t.db\"},\"providers\":[{\"name\":\"o\",\"type\":\"openai\","
        "\"base_url\":\"http://127.0.0.1:9/v1\"}],\"models\":[{\"id\":\"a\",\"provider\":\"o\"},"
        "{\"id\":\"b\",\"provider\":\"o\",\"price\":{\"input\":0.5}}]}",
        tmpdir);
    assert_int_equal(tg_config_load(&cfg, write_file(text), err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "models[1].price.input: must be a decimal string"));
    snprintf(text, sizeof(text), "{\"store\":{\"path\":\"%s/t.db\"},\"prices\":\"%s/nope.json\"}",
             tmpdir, tmpdir);
    assert_int_equal(tg_config_load(&cfg, write_file(text), err, sizeof(err)), TG_ECONFIG);
    assert_non_null(strstr(err, "nope.json: cannot read"));
}

static void test_cross_region_profile_base_model(void **state)
{
    tg_config_t *cfg = load_config(write_file(book_aws), "{\"id\":\"x\",\"provider\":\"o\"}");
    const char *ids[] = {"us.anthropic.claude-3-7-sonnet-20250219-v1:0",
                         "global.anthropic.claude-3-7-sonnet-20250219-v1:0",
                         "anthropic.claude-3-7-sonnet-20250219-v1:0",
                         "arn:aws:bedrock:us-east-1::foundation-model/"
                         "anthropic.claude-3-7-sonnet-20250219-v1:0"};
    for (size_t i = 0; i < sizeof(ids) / sizeof(ids[0]); i++) {
        tg_usage_event_t ev;
        ev_init(&ev, ids[i], "us-east-1", "2025-07-01");
        ev.input_tokens = 100, ev.output_tokens = 20;
        assert_int_equal(tg_api_price_event(cfg->prices, NULL, 1, &ev), 0);
        assert_int_equal(ev.cost_total, 100 * 3000000LL + 20 * 15000000LL);
        assert_int_equal(ev.unpriced, 0);
    }
    /* eu. profile: the base model at the event's (source) region's price. */
    tg_usage_event_t ev;
    ev_init(&ev, "eu.anthropic.claude-3-7-sonnet-20250219-v1:0", "eu-west-1", "2025-07-01");
    ev.input_tokens = 100, ev.cache_write_tokens = 8;
    tg_api_price_event(cfg->prices, NULL, 1, &ev);
    assert_int_equal(ev.cost_input, 100 * 3300000LL);
    assert_int_equal(ev.cost_cache_write, 8 * 4125000LL);
    /* Not a Bedrock call: the id is looked up as is (no such key). */
    ev_init(&ev, "us.anthropic.claude-3-7-sonnet-20250219-v1:0", "us-east-1", "2025-07-01");
    ev.input_tokens = 1;
    tg_api_price_event(cfg->prices, NULL, 0, &ev);
    assert_int_equal(ev.unpriced, 1);
    tg_config_free(cfg);
}

static void test_unpriced_zero_and_flagged(void **state)
{
    tg_config_t *cfg = load_config(write_file(book_aws), "{\"id\":\"x\",\"provider\":\"o\"}");
    tg_usage_event_t ev;
    ev_init(&ev, "meta.llama9-v1:0", "us-east-1", "2025-07-01");
    ev.input_tokens = 1000, ev.output_tokens = 1000, ev.cache_read_tokens = 5;
    assert_int_equal(tg_api_price_event(cfg->prices, NULL, 1, &ev), 0);
    assert_int_equal(ev.cost_total, 0);
    assert_int_equal(ev.cost_input, 0);
    assert_int_equal(ev.unpriced, 1);
    assert_string_equal(ev.price_version, "none");
    /* No tokens at all (an upstream error): still flagged when there is no price. */
    ev_init(&ev, "meta.llama9-v1:0", "us-east-1", "2025-07-01");
    tg_api_price_event(cfg->prices, NULL, 1, &ev);
    assert_int_equal(ev.unpriced, 1);
    /* Priced model, a part without a price (3.5 Sonnet v1 has no cache
     * prices): that part costs 0 and the event is flagged; the rest is billed. */
    ev_init(&ev, "anthropic.claude-3-5-sonnet-20240620-v1:0", "us-east-1", "2025-07-01");
    ev.input_tokens = 10, ev.output_tokens = 1, ev.cache_read_tokens = 4;
    tg_api_price_event(cfg->prices, NULL, 1, &ev);
    assert_int_equal(ev.cost_input, 10 * 3000000LL);
    assert_int_equal(ev.cost_cache_read, 0);
    assert_int_equal(ev.cost_total, 10 * 3000000LL + 15000000LL);
    assert_int_equal(ev.unpriced, 1);
    assert_string_equal(ev.price_version, "tb1");
    /* The region matters: no us-west-2 entry and no "*" entry. */
    ev_init(&ev, "anthropic.claude-3-5-sonnet-20240620-v1:0", "us-west-2", "2025-07-01");
    ev.input_tokens = 1;
    tg_api_price_event(cfg->prices, NULL, 1, &ev);
    assert_int_equal(ev.unpriced, 1);
    tg_config_free(cfg);
    /* No book at all. */
    ev_init(&ev, "m", "us-east-1", "2025-07-01");
    ev.output_tokens = 3;
    const char *keys[] = {"m"};
    tg_cost_event(NULL, keys, 1, &ev);
    assert_int_equal(ev.unpriced, 1);
    assert_int_equal(ev.cost_total, 0);
}

/* Cached tokens as Bedrock reports them, priced at their own rates. */
static void test_cached_tokens_converse_and_invoke(void **state)
{
    tg_config_t *cfg = load_config(write_file(book_aws), "{\"id\":\"x\",\"provider\":\"o\"}");
    const char *body =
        "{\"output\":{\"message\":{\"role\":\"assistant\",\"content\":[{\"text\":\"hi\"}]}},"
        "\"stopReason\":\"end_turn\",\"usage\":{\"inputTokens\":21,\"outputTokens\":7,"
        "\"cacheReadInputTokens\":1000,\"cacheWriteInputTokens\":300,\"totalTokens\":1328}}";
    tg_br_usage_t u;
    memset(&u, 0, sizeof(u));
    assert_int_equal(tg_br_usage_from_converse(body, strlen(body), &u), 1);
    tg_header_t h[] = {
        {"x-amzn-bedrock-input-token-count", 32, "21", 2},
        {"x-amzn-bedrock-output-token-count", 33, "7", 1},
        {"x-amzn-bedrock-cache-read-input-token-count", 43, "1000", 4},
        {"x-amzn-bedrock-cache-write-input-token-count", 44, "300", 3},
    };
    tg_br_usage_t v;
    memset(&v, 0, sizeof(v));
    assert_int_equal(tg_br_usage_from_headers(h, 4, &v), 1);
    const tg_br_usage_t *both[] = {&u, &v};
    for (int k = 0; k < 2; k++) {
        tg_usage_event_t ev;
        ev_init(&ev, "us.anthropic.claude-3-7-sonnet-20250219-v1:0", "us-east-1", "2025-07-01");
        ev.input_tokens = both[k]->input;
        ev.output_tokens = both[k]->output;
        ev.cache_read_tokens = both[k]->cache_read;
        ev.cache_write_tokens = both[k]->cache_write;
        tg_api_price_event(cfg->prices, NULL, 1, &ev);
        assert_int_equal(ev.cost_input, 21 * 3000000LL);
        assert_int_equal(ev.cost_output, 7 * 15000000LL);
        assert_int_equal(ev.cost_cache_read, 1000 * 300000LL);  /* 0.30/M, not 3.00/M */
        assert_int_equal(ev.cost_cache_write, 300 * 3750000LL); /* 3.75/M */
        assert_int_equal(ev.cost_total, 63000000LL + 105000000LL + 300000000LL + 1125000000LL);
        char usd[32];
        tg_usd_format(ev.cost_total, usd, sizeof(usd));
        assert_string_equal(usd, "0.001593");
    }
    tg_config_free(cfg);
}

/* ---- random costs against an independent computation -------------------------- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static uint64_t rnd(void)
{
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return rng;
}

/* A random decimal string with up to 6 decimals (some with trailing zeros). */
static void rand_price(char *out, size_t cap)
{
    unsigned dec = (unsigned)(rnd() % 8); /* 7: six decimals plus a trailing zero */
    unsigned long long ip = rnd() % (rnd() % 2 ? 100 : 100000);
    int n = snprintf(out, cap, "%llu", ip);
    if (dec) {
        out[n++] = '.';
        for (unsigned i = 0; i < dec; i++)
            out[n++] = (char)(i == 6 ? '0' : '0' + rnd() % 10);
        out[n] = '\0';
    }
}

/* Independently: digits without the dot, times tokens, scaled to 10^-12 USD
 * by appending zeros (price is USD per 10^6 tokens). */
static __int128 expect_pico(const char *price, int64_t tokens)
{
    __int128 digits = 0;
    int decimals = -1;
    for (const char *p = price; *p; p++) {
        if (*p == '.') {
            decimals = 0;
            continue;
        }
        digits = digits * 10 + (*p - '0');
        if (decimals >= 0) decimals++;
    }
    if (decimals < 0) decimals = 0;
    __int128 v = digits * tokens;
    for (int i = decimals; i < 6; i++)
        v *= 10;
    for (int i = 6; i < decimals; i++)
        v /= 10; /* only trailing zeros get here */
    return v;
}

static void i128_str(__int128 v, char *out)
{
    char tmp[64];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v);
    for (int i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    out[n] = '\0';
}

static void test_random_costs_exact(void **state)
{
    for (int iter = 0; iter < 3000; iter++) {
        char pr[4][32];
        for (int k = 0; k < 4; k++)
            rand_price(pr[k], sizeof(pr[k]));
        char json[1024];
        snprintf(
            json, sizeof(json),
            "{\"version\":\"r\",\"entries\":[{\"model\":\"m\",\"region\":\"*\",\"input\":\"%s\","
            "\"output\":\"%s\",\"cache_read\":\"%s\",\"cache_write\":\"%s\"}]}",
            pr[0], pr[1], pr[2], pr[3]);
        tg_prices_t *b;
        char err[256];
        assert_int_equal(load1(json, &b, err, sizeof(err)), 0);
        const tg_price_t *p = tg_prices_find(b, "m", "us-east-1", 0);
        int64_t tok[4];
        for (int k = 0; k < 4; k++)
            tok[k] = (int64_t)(rnd() % (k == 2 ? 10000000ull : 2000000ull));
        tg_cost_t c;
        assert_int_equal(tg_cost_compute(p, tok[0], tok[1], tok[2], tok[3], 0, NULL, &c), 0);
        const int64_t got[4] = {c.input, c.output, c.cache_read, c.cache_write};
        __int128 sum = 0;
        for (int k = 0; k < 4; k++) {
            __int128 e = expect_pico(pr[k], tok[k]);
            if ((__int128)got[k] != e) fail_msg("price %s x %lld tokens", pr[k], (long long)tok[k]);
            sum += e;
        }
        assert_true((__int128)c.total == sum);
        assert_int_equal(c.total, c.input + c.output + c.cache_read + c.cache_write + c.images);
        /* The decimal string is the same number: whole.fraction of the sum. */
        char usd[32], want[80], whole[48], fr[16];
        tg_usd_format(c.total, usd, sizeof(usd));
        i128_str(sum / 1000000000000LL, whole);
        snprintf(fr, sizeof(fr), "%012lld", (long long)(sum % 1000000000000LL));
        size_t k = 12;
        while (k > 0 && fr[k - 1] == '0')
            k--;
        fr[k] = '\0';
        snprintf(want, sizeof(want), "%s%s%s", whole, k ? "." : "", fr);
        assert_string_equal(usd, want);
        tg_prices_free(b);
    }
}

static void test_overflow_checked(void **state)
{
    tg_prices_t *b;
    char err[256];
    assert_int_equal(load1("{\"version\":\"o\",\"entries\":[{\"model\":\"m\",\"region\":\"*\","
                           "\"input\":\"999999999999\",\"output\":\"1\"}]}",
                           &b, err, sizeof(err)),
                     0);
    const tg_price_t *p = tg_prices_find(b, "m", "x", 0);
    tg_cost_t c;
    /* 9223372 tokens x 10^18 picodollars does not fit in 64 bits. */
    assert_int_equal(tg_cost_compute(p, 9223372, 0, 0, 0, 0, NULL, &c), TG_ETOOBIG);
    assert_int_equal(c.total, 0);
    assert_int_equal(c.unpriced, 1);
    /* 9 tokens fit; with 223372036864 output tokens at 1/M each part fits, the sum not. */
    assert_int_equal(tg_cost_compute(p, 9, 0, 0, 0, 0, NULL, &c), 0);
    assert_int_equal(c.total, 9 * 999999999999000000LL);
    assert_int_equal(tg_cost_compute(p, 9, 223372036864LL, 0, 0, 0, NULL, &c), TG_ETOOBIG);
    assert_int_equal(tg_cost_compute(p, -1, 0, 0, 0, 0, NULL, &c), TG_EINVAL);
    tg_usage_event_t ev;
    ev_init(&ev, "m", "x", "2025-01-01");
    ev.input_tokens = INT64_MAX / 2;
    const char *keys[] = {"m"};
    assert_int_equal(tg_cost_event(b, keys, 1, &ev), TG_ETOOBIG);
    assert_int_equal(ev.unpriced, 1);
    assert_int_equal(ev.cost_total, 0);
    tg_prices_free(b);
}

/* The shipped book loads, and a few of its numbers are what the sources say. */
static void test_shipped_book(void **state)
{
    char err[512];
    tg_prices_t *b;
    const char *files[] = {"data/prices.json"};
    if (access(files[0], R_OK) != 0) skip();
    assert_int_equal(tg_prices_load(&b, files, 1, NULL, 0, err, sizeof(err)), 0);
    int64_t now = t_ms("2026-11-27");
    /* Reference, USD per 1K x 1000: 0.00025 -> 0.25/M -> 250000 pico per token. */
    const tg_price_t *p =
        tg_prices_find(b, "anthropic.claude-3-haiku-20240307-v1:0", "ap-south-1", now);
    assert_int_equal(p->input, 250000);
    assert_int_equal(p->output, 1250000);
    p = tg_prices_find(b, "amazon.titan-text-express-v1", "ap-southeast-2", now);
    assert_int_equal(p->output, 788000); /* 0.000788 per 1K */
    p = tg_prices_find(b, "stability.stable-diffusion-xl-v1", "us-east-1", now);
    tg_image_spec_t s = {1024, 1024, "premium"};
    assert_int_equal(tg_cost_image_price(p, &s)->pico, 72000000000LL);
    p = tg_prices_find(b, "anthropic.claude-3-7-sonnet-20250219-v1:0", "us-west-2", now);
    assert_int_equal(p->cache_read, 300000);
    assert_int_equal(p->cache_write, 3750000);
    p = tg_prices_find(b, "amazon.nova-micro-v1:0", "us-east-1", now);
    assert_int_equal(p->cache_read, 8750);
    for (size_t i = 0; i < tg_prices_count(b); i++) {
        p = tg_prices_at(b, i);
        assert_true(p->source[0] && p->as_of[0]);
    }
    tg_prices_free(b);
}

static int setup(void **state)
{
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int teardown(void **state)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
    return system(cmd) == 0 ? 0 : -1;
}

int main(void)
{
    tg_log_level = TG_LOG_ERROR;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_decimal_exact),
        cmocka_unit_test(test_decimal_rejects),
        cmocka_unit_test(test_time_parse),
        cmocka_unit_test(test_usd_format),
        cmocka_unit_test(test_load_rejects_name_the_entry),
        cmocka_unit_test(test_effective_from_noon),
        cmocka_unit_test(test_override_replaces_history),
        cmocka_unit_test(test_route_price_from_config),
        cmocka_unit_test(test_cross_region_profile_base_model),
        cmocka_unit_test(test_unpriced_zero_and_flagged),
        cmocka_unit_test(test_cached_tokens_converse_and_invoke),
        cmocka_unit_test(test_random_costs_exact),
        cmocka_unit_test(test_overflow_checked),
        cmocka_unit_test(test_shipped_book),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

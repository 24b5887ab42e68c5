/* test_metrics.c - the Prometheus exposition: shards sum, histogram buckets
 * are cumulative, token rows are keyed by model and team, labels escaped. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "api/metrics.h"

static void contains(const char *hay, const char *needle)
{
    if (!strstr(hay, needle)) fail_msg("missing: %s\n--- in ---\n%s", needle, hay);
}

static void test_render(void **state)
{
    const char *names[] = {"fake", "other\"p"};
    tg_metrics_t *m;
    assert_int_equal(tg_metrics_create(&m, 2, 2, names), 0);
    tg_metrics_request(tg_metrics_shard(m, 0), TG_ROUTE_CHAT, 200);
    tg_metrics_request(tg_metrics_shard(m, 1), TG_ROUTE_CHAT, 200);
    tg_metrics_request(tg_metrics_shard(m, 1), TG_ROUTE_CHAT, 401);
    tg_metrics_upstream(tg_metrics_shard(m, 0), 0, 3000);          /* 3 ms: first bucket */
    tg_metrics_upstream(tg_metrics_shard(m, 1), 0, 200000);        /* 200 ms: 0.25 bucket */
    tg_metrics_upstream(tg_metrics_shard(m, 1), 0, 9000000000ull); /* only +Inf */
    tg_usage_event_t ev[3];
    memset(ev, 0, sizeof(ev));
    for (int i = 0; i < 3; i++) {
        strcpy(ev[i].model, "gpt-test");
        strcpy(ev[i].team, i == 2 ? "blue" : "red");
        ev[i].input_tokens = 10;
        ev[i].output_tokens = 5 + i;
        ev[i].cache_read_tokens = 1;
    }
    tg_metrics_usage(m, ev, 3);
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_metrics_render(m, &b), 0);
    contains(b.data,
             "tollgate_http_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 2\n");
    contains(b.data,
             "tollgate_http_requests_total{route=\"/v1/chat/completions\",status=\"401\"} 1\n");
    contains(b.data,
             "tollgate_upstream_latency_seconds_bucket{provider=\"fake\",le=\"0.005\"} 1\n");
    contains(b.data, "tollgate_upstream_latency_seconds_bucket{provider=\"fake\",le=\"0.1\"} 1\n");
    contains(b.data, "tollgate_upstream_latency_seconds_bucket{provider=\"fake\",le=\"0.25\"} 2\n");
    contains(b.data, "tollgate_upstream_latency_seconds_bucket{provider=\"fake\",le=\"+Inf\"} 3\n");
    contains(b.data, "tollgate_upstream_latency_seconds_count{provider=\"fake\"} 3\n");
    contains(b.data, "provider=\"other\\\"p\"");
    contains(b.data, "tollgate_tokens_total{model=\"gpt-test\",team=\"red\",type=\"input\"} 20\n");
    contains(b.data, "tollgate_tokens_total{model=\"gpt-test\",team=\"red\",type=\"output\"} 11\n");
    contains(b.data, "tollgate_tokens_total{model=\"gpt-test\",team=\"blue\",type=\"output\"} 7\n");
    contains(b.data,
             "tollgate_tokens_total{model=\"gpt-test\",team=\"blue\",type=\"cache_read\"} 1\n");
    contains(b.data, "tollgate_usage_events_total 3\n");
    tg_buf_free(&b);
    tg_metrics_destroy(m);
}

static void test_token_table_bounded(void **state)
{
    tg_metrics_t *m;
    const char *names[] = {"p"};
    assert_int_equal(tg_metrics_create(&m, 1, 1, names), 0);
    tg_usage_event_t ev;
    memset(&ev, 0, sizeof(ev));
    ev.output_tokens = 1;
    for (int i = 0; i < 5000; i++) {
        snprintf(ev.model, sizeof(ev.model), "m%d", i);
        strcpy(ev.team, "t");
        tg_metrics_usage(m, &ev, 1);
    }
    tg_buf_t b;
    tg_buf_init(&b, 0);
    assert_int_equal(tg_metrics_render(m, &b), 0);
    /* Every event is still counted once, overflow rows under "other". */
    contains(b.data, "tollgate_usage_events_total 5000\n");
    contains(b.data, "tollgate_tokens_total{model=\"other\",team=\"other\",type=\"output\"}");
    tg_buf_free(&b);
    tg_metrics_destroy(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render),
        cmocka_unit_test(test_token_table_bounded),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

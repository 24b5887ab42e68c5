/* test_sse.c - unit tests for the incremental SSE splitter (src/providers/sse.c).
 *
 * The splitter's promise is that where the stream is cut does not matter: so
 * most tests feed one stream whole, split at every byte boundary, in pairs of
 * cuts and byte by byte, and require the same events, raw and parsed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "providers/sse.h"

#define MAXEV 32

typedef struct {
    char *raw[MAXEV], *data[MAXEV], *event[MAXEV];
    size_t n;
    int stop_at; /* 1-based event index whose callback returns stop_rc */
    int stop_rc;
    const char *in_lo, *in_hi; /* the chunk being fed, to see zero-copy delivery */
    int in_place;              /* events whose raw pointed into the chunk */
} rec_t;

static char *dupn(const char *p, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memcpy(s, p, n);
    s[n] = '\0';
    return s;
}

static int on_event(const tg_sse_event_t *ev, void *ud)
{
    rec_t *r = ud;
    assert_true(r->n < MAXEV);
    assert_int_equal(strlen(ev->data), ev->data_len);
    r->raw[r->n] = dupn(ev->raw, ev->raw_len);
    r->data[r->n] = dupn(ev->data, ev->data_len);
    r->event[r->n] = dupn(ev->event, strlen(ev->event));
    if (ev->raw >= r->in_lo && ev->raw < r->in_hi) r->in_place++;
    r->n++;
    return (int)r->n == r->stop_at ? r->stop_rc : 0;
}

static void rec_free(rec_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        free(r->raw[i]);
        free(r->data[i]);
        free(r->event[i]);
    }
    memset(r, 0, sizeof(*r));
}

static int feed(tg_sse_t *s, rec_t *r, const char *p, size_t n)
{
    r->in_lo = p;
    r->in_hi = p + n;
    return tg_sse_feed(s, p, n, on_event, r);
}

static int feeds(tg_sse_t *s, rec_t *r, const char *str)
{
    return feed(s, r, str, strlen(str));
}

/* Feeds str cut at the given offsets (ascending, within the string). */
static void feed_cuts(rec_t *r, const char *str, const size_t *cuts, size_t ncuts, size_t max)
{
    tg_sse_t s;
    tg_sse_init(&s, max);
    size_t len = strlen(str), at = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t end = k < ncuts ? cuts[k] : len;
        /* A private copy per chunk so a raw pointer into an old chunk would
         * show up as garbage (and as a use-after-free under ASan). */
        char *chunk = dupn(str + at, end - at);
        assert_int_equal(feed(&s, r, chunk, end - at), 0);
        free(chunk);
        at = end;
    }
    tg_sse_free(&s);
}

static void assert_same(const rec_t *a, const rec_t *b, const char *what, size_t where)
{
    if (a->n != b->n) fail_msg("%s at %zu: %zu events, want %zu", what, where, b->n, a->n);
    for (size_t i = 0; i < a->n; i++) {
        if (strcmp(a->raw[i], b->raw[i]) || strcmp(a->data[i], b->data[i]) ||
            strcmp(a->event[i], b->event[i]))
            fail_msg("%s at %zu: event %zu differs", what, where, i);
    }
}

/* Whole, every single cut, every pair of cuts, and byte by byte agree. */
static void check_split_invariant(const char *str, rec_t *whole)
{
    size_t len = strlen(str);
    feed_cuts(whole, str, NULL, 0, 4096);
    for (size_t i = 1; i < len; i++) {
        rec_t r = {0};
        feed_cuts(&r, str, &i, 1, 4096);
        assert_same(whole, &r, "one cut", i);
        rec_free(&r);
        for (size_t j = i + 1; j < len; j++) {
            size_t cuts[2] = {i, j};
            rec_t r2 = {0};
            feed_cuts(&r2, str, cuts, 2, 4096);
            assert_same(whole, &r2, "two cuts", i * 1000 + j);
            rec_free(&r2);
        }
    }
    size_t bytes[512];
    assert_true(len < 512);
    for (size_t i = 1; i < len; i++)
        bytes[i - 1] = i;
    rec_t r = {0};
    feed_cuts(&r, str, bytes, len - 1, 4096);
    assert_same(whole, &r, "byte by byte", 0);
    rec_free(&r);
}

static void expect_event(const rec_t *r, size_t i, const char *raw, const char *data,
                         const char *event)
{
    assert_true(i < r->n);
    assert_string_equal(r->raw[i], raw);
    assert_string_equal(r->data[i], data);
    assert_string_equal(r->event[i], event);
}

static void test_lf_stream_split_everywhere(void **state)
{
    const char *str = "data: {\"a\":1}\n\n"
                      "event: delta\ndata: two\n\n"
                      ": comment\nid: 7\nretry: 100\ndata:x\n\n"
                      "data: [DONE]\n\n";
    rec_t whole = {0};
    check_split_invariant(str, &whole);
    assert_int_equal(whole.n, 4);
    expect_event(&whole, 0, "data: {\"a\":1}\n\n", "{\"a\":1}", "");
    expect_event(&whole, 1, "event: delta\ndata: two\n\n", "two", "delta");
    expect_event(&whole, 2, ": comment\nid: 7\nretry: 100\ndata:x\n\n", "x", "");
    expect_event(&whole, 3, "data: [DONE]\n\n", "[DONE]", "");
    rec_free(&whole);
}

static void test_crlf_stream_split_everywhere(void **state)
{
    const char *str = "event: a\r\ndata: one\r\n\r\ndata: l1\r\ndata: l2\r\n\r\n";
    rec_t whole = {0};
    check_split_invariant(str, &whole);
    assert_int_equal(whole.n, 2);
    expect_event(&whole, 0, "event: a\r\ndata: one\r\n\r\n", "one", "a");
    expect_event(&whole, 1, "data: l1\r\ndata: l2\r\n\r\n", "l1\nl2", "");
    rec_free(&whole);
}

static void test_cr_only_stream_split_everywhere(void **state)
{
    const char *str = "data: one\r\rdata: a\rdata: b\revent: e\r\r";
    rec_t whole = {0};
    check_split_invariant(str, &whole);
    assert_int_equal(whole.n, 2);
    expect_event(&whole, 0, "data: one\r\r", "one", "");
    expect_event(&whole, 1, "data: a\rdata: b\revent: e\r\r", "a\nb", "e");
    rec_free(&whole);
}

static void test_mixed_line_ends(void **state)
{
    const char *str = "data: a\r\ndata: b\ndata: c\r\n\ndata: d\n\r\n";
    rec_t whole = {0};
    check_split_invariant(str, &whole);
    assert_int_equal(whole.n, 2);
    expect_event(&whole, 0, "data: a\r\ndata: b\ndata: c\r\n\n", "a\nb\nc", "");
    expect_event(&whole, 1, "data: d\n\r\n", "d", "");
    rec_free(&whole);
}

/* The \r of a line end closes one chunk and its \n opens the next: no empty
 * line may appear between them. */
static void test_cr_lf_split_across_chunks(void **state)
{
    tg_sse_t s;
    rec_t r = {0};
    tg_sse_init(&s, 1024);
    assert_int_equal(feeds(&s, &r, "data: a\r"), 0);
    assert_int_equal(feeds(&s, &r, "\ndata: b\r"), 0);
    assert_int_equal(r.n, 0);
    assert_int_equal(feeds(&s, &r, "\n\r"), 0);
    /* The blank line's \r may still be followed by \n: held, not lost. */
    assert_int_equal(r.n, 0);
    assert_int_equal(tg_sse_pending(&s), 19);
    assert_int_equal(feeds(&s, &r, "\ndata: c\r\n\r\n"), 0);
    assert_int_equal(r.n, 2);
    expect_event(&r, 0, "data: a\r\ndata: b\r\n\r\n", "a\nb", "");
    expect_event(&r, 1, "data: c\r\n\r\n", "c", "");
    assert_int_equal(tg_sse_pending(&s), 0);
    rec_free(&r);
    tg_sse_free(&s);
}

/* A CR-only event is delivered at once; the \n that may follow is swallowed
 * as the rest of its line end rather than taken as a new blank line. */
static void test_cr_only_not_held(void **state)
{
    tg_sse_t s;
    rec_t r = {0};
    tg_sse_init(&s, 1024);
    assert_int_equal(feeds(&s, &r, "data: a\r\r"), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(tg_sse_pending(&s), 0);
    assert_int_equal(feeds(&s, &r, "\ndata: b\r\r"), 0);
    assert_int_equal(r.n, 2);
    expect_event(&r, 1, "data: b\r\r", "b", "");
    rec_free(&r);
    tg_sse_free(&s);
}

static void test_data_field_forms(void **state)
{
    tg_sse_t s;
    rec_t r = {0};
    const char *str = "data:x\ndata: y\ndata:  z\ndata\ndata:\n\n"
                      "event: only\n\n"
                      "event: first\nevent:second\nfoo: bar\n\n";
    tg_sse_init(&s, 1024);
    assert_int_equal(feed(&s, &r, str, strlen(str)), 0);
    assert_int_equal(r.n, 3);
    /* One leading space is stripped, not two; bare "data" is an empty line. */
    assert_string_equal(r.data[0], "x\ny\n z\n\n");
    expect_event(&r, 1, "event: only\n\n", "", "only");
    assert_string_equal(r.event[2], "second");
    assert_string_equal(r.data[2], "");
    rec_free(&r);
    tg_sse_free(&s);
}

/* Comment lines are no field, but a comment-only event (a keep-alive) is still
 * delivered with its raw bytes so it can be forwarded. */
static void test_comments_ignored(void **state)
{
    tg_sse_t s;
    rec_t r = {0};
    const char *str = ": keep-alive\n\n:data: no\ndata: yes\n\n";
    tg_sse_init(&s, 1024);
    assert_int_equal(feed(&s, &r, str, strlen(str)), 0);
    assert_int_equal(r.n, 2);
    expect_event(&r, 0, ": keep-alive\n\n", "", "");
    expect_event(&r, 1, ":data: no\ndata: yes\n\n", "yes", "");
    rec_free(&r);
    tg_sse_free(&s);
}

/* Whole events in a chunk are handed out in place; the raw bytes of all
 * events put together are the stream; extra blank lines are not events. */
static void test_zero_copy_and_blank_lines(void **state)
{
    tg_sse_t s;
    rec_t r = {0};
    const char *str = "\n\ndata: a\n\n\n\ndata: b\n\n";
    tg_sse_init(&s, 1024);
    assert_int_equal(feed(&s, &r, str, strlen(str)), 0);
    assert_int_equal(r.n, 2);
    assert_int_equal(r.in_place, 2);
    expect_event(&r, 0, "data: a\n\n", "a", "");
    expect_event(&r, 1, "data: b\n\n", "b", "");
    assert_int_equal(tg_sse_pending(&s), 0);
    rec_free(&r);

    /* Only the event cut by the chunk's end is copied. */
    const char *c1 = "data: 1\n\ndata: 2", *c2 = "\n\ndata: 3\n\n";
    assert_int_equal(feed(&s, &r, c1, strlen(c1)), 0);
    assert_int_equal(r.in_place, 1);
    assert_int_equal(feed(&s, &r, c2, strlen(c2)), 0);
    assert_int_equal(r.n, 3);
    assert_int_equal(r.in_place, 2); /* event 2 came from the held copy */
    expect_event(&r, 1, "data: 2\n\n", "2", "");
    rec_free(&r);
    tg_sse_free(&s);
}

static void test_too_big(void **state)
{
    tg_sse_t s;
    rec_t r = {0};
    /* 16 bytes exactly is fine. */
    tg_sse_init(&s, 16);
    assert_int_equal(feeds(&s, &r, "data: 123456789\n\n"), TG_ETOOBIG);
    assert_int_equal(r.n, 0);
    tg_sse_free(&s);

    tg_sse_init(&s, 16);
    assert_int_equal(feeds(&s, &r, "data: 12345678\n\n"), 0);
    assert_int_equal(r.n, 1);
    rec_free(&r);

    /* Arriving in small pieces, the event is refused once it passes the
     * limit, before its end is seen. */
    const char *big = "data: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    int rc = 0;
    for (size_t i = 0; i < strlen(big) && !rc; i += 4)
        rc = feed(&s, &r, big + i, 4);
    assert_int_equal(rc, TG_ETOOBIG);
    assert_true(tg_sse_pending(&s) <= 16);
    assert_int_equal(r.n, 0);
    tg_sse_free(&s);
}

static void test_callback_stop_value_returned(void **state)
{
    tg_sse_t s;
    rec_t r = {.stop_at = 2, .stop_rc = 42};
    const char *str = "data: 1\n\ndata: 2\n\ndata: 3\n\n";
    tg_sse_init(&s, 1024);
    assert_int_equal(feed(&s, &r, str, strlen(str)), 42);
    assert_int_equal(r.n, 2);
    tg_sse_free(&s);
    rec_free(&r);

    /* Also when the stopping event is the held one. */
    rec_t r2 = {.stop_at = 1, .stop_rc = -5};
    tg_sse_init(&s, 1024);
    assert_int_equal(feeds(&s, &r2, "data: 1"), 0);
    assert_int_equal(feeds(&s, &r2, "\n\ndata: 2\n\n"), -5);
    assert_int_equal(r2.n, 1);
    tg_sse_free(&s);
    rec_free(&r2);
}

static void test_pending_tail(void **state)
{
    tg_sse_t s;
    rec_t r = {0};
    tg_sse_init(&s, 1024);
    assert_int_equal(tg_sse_pending(&s), 0);
    assert_int_equal(feeds(&s, &r, "data: done\n\ndata: part"), 0);
    assert_int_equal(r.n, 1);
    assert_int_equal(tg_sse_pending(&s), 10);
    assert_int_equal(feeds(&s, &r, "ial\n"), 0);
    assert_int_equal(tg_sse_pending(&s), 14);
    assert_int_equal(feeds(&s, &r, "\n"), 0);
    assert_int_equal(r.n, 2);
    expect_event(&r, 1, "data: partial\n\n", "partial", "");
    assert_int_equal(tg_sse_pending(&s), 0);
    rec_free(&r);
    tg_sse_free(&s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lf_stream_split_everywhere),
        cmocka_unit_test(test_crlf_stream_split_everywhere),
        cmocka_unit_test(test_cr_only_stream_split_everywhere),
        cmocka_unit_test(test_mixed_line_ends),
        cmocka_unit_test(test_cr_lf_split_across_chunks),
        cmocka_unit_test(test_cr_only_not_held),
        cmocka_unit_test(test_data_field_forms),
        cmocka_unit_test(test_comments_ignored),
        cmocka_unit_test(test_zero_copy_and_blank_lines),
        cmocka_unit_test(test_too_big),
        cmocka_unit_test(test_callback_stop_value_returned),
        cmocka_unit_test(test_pending_tail),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

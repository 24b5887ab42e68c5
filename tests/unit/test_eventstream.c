/* test_eventstream.c - unit tests for the AWS event-stream codec (src/aws/eventstream.c).
 *
 * The decoder's promise is that where the stream is cut does not matter and
 * that a frame it accepts is exactly what the encoder would write. So the
 * recorder below re-encodes every decoded message: feeding a stream, however
 * split, must give back the stream byte for byte. Frames with known bytes (one
 * of AWS's own test vectors, one hand-built with every header type) pin the
 * wire format itself; corruptions pin each check and its message. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <zlib.h>

#include "aws/eventstream.h"

typedef struct {
    tg_buf_t out; /* every decoded message, re-encoded */
    size_t n;
    int stop_at; /* 1-based message index whose callback returns stop_rc */
    int stop_rc;
    const char *in_lo, *in_hi; /* the chunk being fed, to see in-place decoding */
    int in_place;
} rec_t;

static int on_message(const tg_es_message_t *m, void *ud)
{
    rec_t *r = ud;
    assert_int_equal(tg_es_encode(&r->out, m->headers, m->nheaders, m->payload, m->payload_len), 0);
    if (m->payload >= r->in_lo && m->payload < r->in_hi) r->in_place++;
    r->n++;
    return (int)r->n == r->stop_at ? r->stop_rc : 0;
}

static void rec_init(rec_t *r)
{
    memset(r, 0, sizeof(*r));
    tg_buf_init(&r->out, 0);
}

static int feed(tg_es_decoder_t *d, rec_t *r, const void *p, size_t n)
{
    r->in_lo = p;
    r->in_hi = (const char *)p + n;
    return tg_es_decoder_feed(d, p, n);
}

/* Decodes in[0..n) fed in pieces of `step` bytes (0: whole) after a first cut
 * at `cut`; requires success, idleness and the input back, re-encoded. */
static size_t decode_split(const void *in, size_t n, size_t cut, size_t step)
{
    const char *p = in;
    rec_t r;
    rec_init(&r);
    tg_es_decoder_t d;
    tg_es_decoder_init(&d, 0, on_message, &r);
    assert_int_equal(feed(&d, &r, p, cut), 0);
    for (size_t i = cut; i < n;) {
        size_t k = step && step < n - i ? step : n - i;
        assert_int_equal(feed(&d, &r, p + i, k), 0);
        i += k;
    }
    assert_true(tg_es_decoder_idle(&d));
    assert_int_equal(r.out.len, n);
    assert_memory_equal(r.out.data, in, n);
    tg_es_decoder_free(&d);
    tg_buf_free(&r.out);
    return r.n;
}

static void fix_prelude_crc(uint8_t *f)
{
    uint32_t c = (uint32_t)crc32(0, f, 8);
    f[8] = c >> 24, f[9] = c >> 16, f[10] = c >> 8, f[11] = c;
}

/* Recomputes both CRCs of the frame at f, after a deliberate corruption. */
static void fix_crcs(uint8_t *f)
{
    uint32_t total = (uint32_t)f[0] << 24 | f[1] << 16 | f[2] << 8 | f[3];
    fix_prelude_crc(f);
    uint32_t c = (uint32_t)crc32(0, f, total - 4);
    f[total - 4] = c >> 24, f[total - 3] = c >> 16, f[total - 2] = c >> 8, f[total - 1] = c;
}

/* Feeds f whole, expects TG_EPROTO with errmsg containing want, then the same
 * split byte by byte, and from tg_es_decode_one. */
static void expect_error(const uint8_t *f, size_t n, size_t max, const char *want)
{
    rec_t r;
    rec_init(&r);
    tg_es_decoder_t d;
    tg_es_decoder_init(&d, max, on_message, &r);
    assert_int_equal(feed(&d, &r, f, n), TG_EPROTO);
    if (!strstr(d.errmsg, want)) fail_msg("errmsg \"%s\" lacks \"%s\"", d.errmsg, want);
    assert_false(tg_es_decoder_idle(&d));
    /* Sticky: even a good frame is refused now. */
    static const uint8_t empty[] = {0,    0,    0,    0x10, 0,    0,    0,    0,
                                    0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff};
    assert_int_equal(feed(&d, &r, empty, sizeof(empty)), TG_EPROTO);
    assert_int_equal(r.n, 0);
    tg_es_decoder_free(&d);

    tg_es_decoder_init(&d, max, on_message, &r);
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++)
        rc = feed(&d, &r, f + i, 1);
    assert_int_equal(rc, TG_EPROTO);
    if (!strstr(d.errmsg, want)) fail_msg("bytewise errmsg \"%s\" lacks \"%s\"", d.errmsg, want);
    assert_int_equal(r.n, 0);
    tg_es_decoder_free(&d);
    tg_buf_free(&r.out);

    if (max == 0) {
        tg_es_message_t m;
        char err[128];
        assert_int_equal(tg_es_decode_one(f, n, &m, err, sizeof(err)), TG_EPROTO);
        if (!strstr(err, want)) fail_msg("decode_one errmsg \"%s\" lacks \"%s\"", err, want);
    }
}

/* AWS's "int32_header" test vector: header event-type = int 40972, payload {'foo':'bar'}. */
static const uint8_t aws_int32[] = {
    0x00, 0x00, 0x00, 0x2d, 0x00, 0x00, 0x00, 0x10, 0x41, 0xc4, 0x24, 0xb8, 0x0a, 0x65, 0x76,
    0x65, 0x6e, 0x74, 0x2d, 0x74, 0x79, 0x70, 0x65, 0x04, 0x00, 0x00, 0xa0, 0x0c, 0x7b, 0x27,
    0x66, 0x6f, 0x6f, 0x27, 0x3a, 0x27, 0x62, 0x61, 0x72, 0x27, 0x7d, 0x36, 0xf4, 0x80, 0xa0,
};

/* Hand-built, CRCs from Python's zlib: one header of each type, payload "ok". */
static const uint8_t all_types[] = {
    0x00, 0x00, 0x00, 0x63, 0x00, 0x00, 0x00, 0x51, 0xa7, 0xdc, 0xb3, 0x96, /* prelude */
    0x01, 0x74, 0x00,                                                       /* t: true */
    0x01, 0x66, 0x01,                                                       /* f: false */
    0x01, 0x62, 0x02, 0xfe,                                                 /* b: byte -2 */
    0x01, 0x73, 0x03, 0xfe, 0xd4,                                           /* s: short -300 */
    0x01, 0x69, 0x04, 0xff, 0xfe, 0xee, 0x90,                               /* i: int -70000 */
    0x01, 0x6c, 0x05, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00,       /* l: long -2^40 */
    0x01, 0x79, 0x06, 0x00, 0x03, 0x00, 0xff, 0x10,                         /* y: bytes 00ff10 */
    0x03, 0x73, 0x74, 0x72, 0x07, 0x00, 0x02, 0x68, 0x69,                   /* str: "hi" */
    0x02, 0x74, 0x73, 0x08, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x7b, /* ts: 1700000000123 */
    0x01, 0x75, 0x09, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, /* u: uuid 00..0f */
    0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f,                               /* */
    0x6f, 0x6b, 0xca, 0x11, 0xfc, 0x3b,                                     /* "ok", CRC */
};

static const uint8_t uuid16[16] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

static const tg_es_header_t all_types_headers[] = {
    {.name = "t", .name_len = 1, .type = TG_ES_BOOL_TRUE},
    {.name = "f", .name_len = 1, .type = TG_ES_BOOL_FALSE},
    {.name = "b", .name_len = 1, .type = TG_ES_BYTE, .i = -2},
    {.name = "s", .name_len = 1, .type = TG_ES_SHORT, .i = -300},
    {.name = "i", .name_len = 1, .type = TG_ES_INT, .i = -70000},
    {.name = "l", .name_len = 1, .type = TG_ES_LONG, .i = -(INT64_C(1) << 40)},
    {.name = "y", .name_len = 1, .type = TG_ES_BYTES, .s = "\x00\xff\x10", .s_len = 3},
    {.name = "str", .name_len = 3, .type = TG_ES_STRING, .s = "hi", .s_len = 2},
    {.name = "ts", .name_len = 2, .type = TG_ES_TIMESTAMP, .i = INT64_C(1700000000123)},
    {.name = "u", .name_len = 1, .type = TG_ES_UUID, .s = (const char *)uuid16, .s_len = 16},
};

static void test_known_answer_aws_vector(void **state)
{
    static const uint8_t empty[] = {0,    0,    0,    0x10, 0,    0,    0,    0,
                                    0x05, 0xc2, 0x48, 0xeb, 0x7d, 0x98, 0xc8, 0xff};
    tg_es_message_t m;
    char err[96];
    assert_int_equal(tg_es_decode_one(empty, sizeof(empty), &m, err, sizeof(err)), 0);
    assert_int_equal(m.nheaders, 0);
    assert_int_equal(m.payload_len, 0);

    assert_int_equal(tg_es_decode_one(aws_int32, sizeof(aws_int32), &m, err, sizeof(err)), 0);
    assert_int_equal(m.nheaders, 1);
    assert_int_equal(m.headers[0].type, TG_ES_INT);
    assert_int_equal(m.headers[0].i, 40972);
    assert_int_equal(m.headers[0].name_len, 10);
    assert_memory_equal(m.headers[0].name, "event-type", 10);
    assert_int_equal(m.payload_len, 13);
    assert_memory_equal(m.payload, "{'foo':'bar'}", 13);
    assert_ptr_equal(m.payload, (const char *)aws_int32 + 28); /* in place */

    tg_buf_t out;
    tg_buf_init(&out, 0);
    tg_es_header_t h = {.name = "event-type", .name_len = 10, .type = TG_ES_INT, .i = 40972};
    assert_int_equal(tg_es_encode(&out, &h, 1, "{'foo':'bar'}", 13), 0);
    assert_int_equal(out.len, sizeof(aws_int32));
    assert_memory_equal(out.data, aws_int32, sizeof(aws_int32));
    tg_buf_reset(&out);
    assert_int_equal(tg_es_encode(&out, NULL, 0, NULL, 0), 0);
    assert_memory_equal(out.data, empty, sizeof(empty));
    tg_buf_free(&out);
}

static void test_known_answer_all_types(void **state)
{
    tg_buf_t out;
    tg_buf_init(&out, 0);
    assert_int_equal(tg_es_encode(&out, all_types_headers, 10, "ok", 2), 0);
    assert_int_equal(out.len, sizeof(all_types));
    for (size_t i = 0; i < out.len; i++)
        if ((uint8_t)out.data[i] != all_types[i])
            fail_msg("byte %zu: got 0x%02x expected 0x%02x", i, (uint8_t)out.data[i], all_types[i]);
    tg_buf_free(&out);

    tg_es_message_t m;
    char err[96];
    assert_int_equal(tg_es_decode_one(all_types, sizeof(all_types), &m, err, sizeof(err)), 0);
    assert_int_equal(m.nheaders, 10);
    for (size_t i = 0; i < 10; i++) {
        const tg_es_header_t *a = &m.headers[i], *b = &all_types_headers[i];
        assert_int_equal(a->type, b->type);
        assert_int_equal(a->name_len, b->name_len);
        assert_memory_equal(a->name, b->name, b->name_len);
        assert_int_equal(a->s_len, b->s_len);
        if (b->s_len) assert_memory_equal(a->s, b->s, b->s_len);
        if (a->type == TG_ES_BOOL_TRUE)
            assert_int_equal(a->i, 1);
        else if (a->type == TG_ES_BOOL_FALSE)
            assert_int_equal(a->i, 0);
        else if (!b->s)
            assert_int_equal(a->i, b->i);
    }
    assert_int_equal(m.payload_len, 2);
    assert_memory_equal(m.payload, "ok", 2);

    size_t len;
    const char *s = tg_es_header_str(&m, "str", &len);
    assert_non_null(s);
    assert_int_equal(len, 2);
    assert_memory_equal(s, "hi", 2);
    assert_null(tg_es_header_str(&m, "i", &len)); /* not a string */
    assert_null(tg_es_header_str(&m, "st", &len));
    assert_null(tg_es_header(&m, "nope"));
    assert_int_equal(tg_es_header(&m, "ts")->i, INT64_C(1700000000123));
}

/* Extremes of every type round trip, decoded in place and through the decoder. */
static void test_round_trip_extremes(void **state)
{
    static char big[65535], name255[255];
    memset(big, 'x', sizeof(big));
    big[0] = '\0';
    memset(name255, 'n', sizeof(name255));
    tg_es_header_t h[] = {
        {.name = name255, .name_len = 255, .type = TG_ES_BOOL_TRUE},
        {.name = "b-", .name_len = 2, .type = TG_ES_BYTE, .i = INT8_MIN},
        {.name = "b+", .name_len = 2, .type = TG_ES_BYTE, .i = INT8_MAX},
        {.name = "s-", .name_len = 2, .type = TG_ES_SHORT, .i = INT16_MIN},
        {.name = "s+", .name_len = 2, .type = TG_ES_SHORT, .i = INT16_MAX},
        {.name = "i-", .name_len = 2, .type = TG_ES_INT, .i = INT32_MIN},
        {.name = "i+", .name_len = 2, .type = TG_ES_INT, .i = INT32_MAX},
        {.name = "l-", .name_len = 2, .type = TG_ES_LONG, .i = INT64_MIN},
        {.name = "l+", .name_len = 2, .type = TG_ES_LONG, .i = INT64_MAX},
        {.name = "t-", .name_len = 2, .type = TG_ES_TIMESTAMP, .i = -1},
        {.name = "e", .name_len = 1, .type = TG_ES_STRING, .s = "", .s_len = 0},
        {.name = "E", .name_len = 1, .type = TG_ES_BYTES, .s = NULL, .s_len = 0},
        {.name = "big", .name_len = 3, .type = TG_ES_STRING, .s = big, .s_len = 65535},
        {.name = "bin", .name_len = 3, .type = TG_ES_BYTES, .s = big, .s_len = 65535},
    };
    size_t nh = sizeof(h) / sizeof(h[0]);
    tg_buf_t out;
    tg_buf_init(&out, 0);
    assert_int_equal(tg_es_encode(&out, h, nh, "payload", 7), 0);
    tg_es_message_t m;
    char err[96];
    assert_int_equal(tg_es_decode_one(out.data, out.len, &m, err, sizeof(err)), 0);
    assert_int_equal(m.nheaders, nh);
    for (size_t i = 1; i < 10; i++)
        assert_true(m.headers[i].i == h[i].i);
    assert_int_equal(m.headers[0].name_len, 255);
    assert_int_equal(m.headers[12].s_len, 65535);
    assert_memory_equal(m.headers[13].s, big, 65535);
    assert_int_equal(decode_split(out.data, out.len, 0, 0), 1);
    assert_int_equal(decode_split(out.data, out.len, 12, 4096), 1);
    tg_buf_free(&out);
}

static void test_payload_sizes(void **state)
{
    size_t sizes[] = {0, 1, 1 << 20};
    for (size_t k = 0; k < 3; k++) {
        size_t n = sizes[k];
        char *p = malloc(n + 1);
        assert_non_null(p);
        for (size_t i = 0; i < n; i++)
            p[i] = (char)(i * 7 + 3);
        tg_buf_t out;
        tg_buf_init(&out, 0);
        assert_int_equal(tg_es_encode_event(&out, "chunk", "application/json", p, n), 0);
        assert_int_equal(out.len, 16 + n + (2 + 11 + 2 + 5) + (2 + 13 + 2 + 16) + (2 + 13 + 2 + 5));
        tg_es_message_t m;
        char err[96];
        assert_int_equal(tg_es_decode_one(out.data, out.len, &m, err, sizeof(err)), 0);
        assert_int_equal(m.payload_len, n);
        if (n) assert_memory_equal(m.payload, p, n);
        size_t len;
        const char *s = tg_es_header_str(&m, ":message-type", &len);
        assert_true(s && len == 5 && memcmp(s, "event", 5) == 0);
        s = tg_es_header_str(&m, ":event-type", &len);
        assert_true(s && len == 5 && memcmp(s, "chunk", 5) == 0);
        assert_int_equal(decode_split(out.data, out.len, 0, 0), 1);
        assert_int_equal(decode_split(out.data, out.len, out.len / 2, 65536), 1);
        assert_int_equal(decode_split(out.data, out.len, 5, 100000), 1);
        tg_buf_free(&out);
        free(p);
    }
}

static void test_exception_and_event_without_content_type(void **state)
{
    tg_buf_t out;
    tg_buf_init(&out, 0);
    assert_int_equal(
        tg_es_encode_exception(&out, "throttlingException", "{\"message\":\"slow\"}", 18), 0);
    size_t first = out.len;
    assert_int_equal(tg_es_encode_event(&out, "chunk", NULL, "x", 1), 0);
    tg_es_message_t m;
    char err[96];
    size_t len;
    assert_int_equal(tg_es_decode_one(out.data, first, &m, err, sizeof(err)), 0);
    const char *s = tg_es_header_str(&m, ":message-type", &len);
    assert_true(s && len == 9 && memcmp(s, "exception", 9) == 0);
    s = tg_es_header_str(&m, ":exception-type", &len);
    assert_true(s && len == 19 && memcmp(s, "throttlingException", 19) == 0);
    s = tg_es_header_str(&m, ":content-type", &len);
    assert_true(s && len == 16 && memcmp(s, "application/json", 16) == 0);
    assert_int_equal(tg_es_decode_one(out.data + first, out.len - first, &m, err, sizeof(err)), 0);
    assert_int_equal(m.nheaders, 2);
    assert_null(tg_es_header(&m, ":content-type"));
    tg_buf_free(&out);
}

/* A stream of several messages of different shapes. */
static void build_stream(tg_buf_t *s)
{
    tg_buf_init(s, 0);
    assert_int_equal(tg_es_encode(s, all_types_headers, 10, "ok", 2), 0);
    assert_int_equal(tg_es_encode_event(s, "chunk", "application/json", "{\"a\":1}", 7), 0);
    assert_int_equal(tg_es_encode(s, NULL, 0, NULL, 0), 0);
    assert_int_equal(tg_buf_append(s, aws_int32, sizeof(aws_int32)), 0);
    assert_int_equal(tg_es_encode_exception(s, "modelStreamErrorException", "{}", 2), 0);
}

static void test_several_in_one_feed(void **state)
{
    tg_buf_t s;
    build_stream(&s);
    rec_t r;
    rec_init(&r);
    tg_es_decoder_t d;
    tg_es_decoder_init(&d, 0, on_message, &r);
    assert_int_equal(feed(&d, &r, s.data, s.len), 0);
    assert_int_equal(r.n, 5);
    assert_int_equal(r.in_place, 5);
    assert_true(tg_es_decoder_idle(&d));
    assert_int_equal(d.buf.cap, 0); /* nothing was copied */
    assert_memory_equal(r.out.data, s.data, s.len);
    tg_es_decoder_free(&d);
    tg_buf_free(&r.out);
    tg_buf_free(&s);
}

static void test_split_everywhere(void **state)
{
    tg_buf_t s;
    build_stream(&s);
    for (size_t cut = 0; cut <= s.len; cut++)
        assert_int_equal(decode_split(s.data, s.len, cut, 0), 5);
    for (size_t step = 1; step <= 13; step++)
        assert_int_equal(decode_split(s.data, s.len, 0, step), 5);
    /* Two cuts: every pair inside the first two messages. */
    size_t lim = sizeof(all_types) + 80;
    for (size_t a = 0; a < lim; a += 3)
        for (size_t b = a; b < lim; b += 5) {
            rec_t r;
            rec_init(&r);
            tg_es_decoder_t d;
            tg_es_decoder_init(&d, 0, on_message, &r);
            assert_int_equal(feed(&d, &r, s.data, a), 0);
            assert_int_equal(feed(&d, &r, s.data + a, b - a), 0);
            assert_int_equal(feed(&d, &r, s.data + b, s.len - b), 0);
            assert_int_equal(r.n, 5);
            assert_memory_equal(r.out.data, s.data, s.len);
            tg_es_decoder_free(&d);
            tg_buf_free(&r.out);
        }
    tg_buf_free(&s);
}

static void test_truncated_is_not_idle(void **state)
{
    rec_t r;
    rec_init(&r);
    tg_es_decoder_t d;
    tg_es_decoder_init(&d, 0, on_message, &r);
    assert_true(tg_es_decoder_idle(&d));
    assert_int_equal(feed(&d, &r, aws_int32, 5), 0);
    assert_false(tg_es_decoder_idle(&d));
    assert_int_equal(feed(&d, &r, aws_int32 + 5, sizeof(aws_int32) - 6), 0);
    assert_false(tg_es_decoder_idle(&d));
    assert_int_equal(r.n, 0);
    assert_int_equal(feed(&d, &r, aws_int32 + sizeof(aws_int32) - 1, 1), 0);
    assert_true(tg_es_decoder_idle(&d));
    assert_int_equal(r.n, 1);
    tg_es_decoder_free(&d);
    tg_buf_free(&r.out);
}

static void test_callback_stop(void **state)
{
    tg_buf_t s;
    build_stream(&s);
    size_t second_end = sizeof(all_types);
    {
        tg_es_message_t m;
        char err[96];
        uint32_t len2 = (uint8_t)s.data[second_end + 2] << 8 | (uint8_t)s.data[second_end + 3];
        assert_int_equal(tg_es_decode_one(s.data + second_end, len2, &m, err, sizeof(err)), 0);
        second_end += len2;
    }
    for (size_t step = 0; step <= 7; step += 7) { /* whole, and in 7-byte pieces */
        rec_t r;
        rec_init(&r);
        r.stop_at = 2;
        r.stop_rc = 42;
        tg_es_decoder_t d;
        tg_es_decoder_init(&d, 0, on_message, &r);
        int rc = 0;
        size_t i = 0;
        while (i < s.len && rc == 0) {
            size_t k = step ? (s.len - i < step ? s.len - i : step) : s.len;
            rc = feed(&d, &r, s.data + i, k);
            i += k;
        }
        assert_int_equal(rc, 42);
        assert_int_equal(r.n, 2);
        /* Stopped at a message boundary and still usable: the caller resumes after it. */
        assert_true(tg_es_decoder_idle(&d));
        assert_int_equal(feed(&d, &r, s.data + second_end, s.len - second_end), 0);
        assert_int_equal(r.n, 5);
        assert_memory_equal(r.out.data, s.data, s.len);
        tg_es_decoder_free(&d);
        tg_buf_free(&r.out);
    }
    tg_buf_free(&s);
}

static void test_size_limit(void **state)
{
    /* aws_int32 is 45 bytes: fine at 45, refused at 44 from the prelude alone. */
    rec_t r;
    rec_init(&r);
    tg_es_decoder_t d;
    tg_es_decoder_init(&d, 45, on_message, &r);
    assert_int_equal(feed(&d, &r, aws_int32, sizeof(aws_int32)), 0);
    assert_int_equal(r.n, 1);
    tg_es_decoder_free(&d);

    tg_es_decoder_init(&d, 44, on_message, &r);
    assert_int_equal(feed(&d, &r, aws_int32, 11), 0);
    assert_int_equal(feed(&d, &r, aws_int32 + 11, 1), TG_EPROTO);
    assert_string_equal(d.errmsg, "message length 45 above maximum 44");
    tg_es_decoder_free(&d);
    tg_buf_free(&r.out);
    expect_error(aws_int32, sizeof(aws_int32), 44, "message length 45 above maximum 44");

    /* The default limit is the service's 16 MiB; a prelude claiming more is refused. */
    uint8_t f[16] = {0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0};
    fix_prelude_crc(f);
    tg_es_decoder_init(&d, 0, on_message, &r);
    assert_int_equal(tg_es_decoder_feed(&d, f, 12), TG_EPROTO);
    assert_string_equal(d.errmsg, "message length 16777217 above maximum 16777216");
    tg_es_decoder_free(&d);
}

static void test_corrupt_crcs(void **state)
{
    uint8_t f[sizeof(aws_int32)];
    memcpy(f, aws_int32, sizeof(f));
    f[10] ^= 0x01;
    expect_error(f, sizeof(f), 0, "prelude CRC mismatch: got 0x41c424b8 expected 0x41c425b8");
    memcpy(f, aws_int32, sizeof(f));
    f[3] = 0x2c; /* a length changed in transit: the prelude CRC catches it */
    expect_error(f, sizeof(f), 0, "prelude CRC mismatch");
    memcpy(f, aws_int32, sizeof(f));
    f[30] ^= 0x20; /* payload bit flip */
    expect_error(f, sizeof(f), 0, "message CRC mismatch: got 0x");
    memcpy(f, aws_int32, sizeof(f));
    f[44] ^= 0xff;
    expect_error(f, sizeof(f), 0, "message CRC mismatch: got 0x36f480a0 expected 0x36f4805f");
}

static void test_corrupt_lengths(void **state)
{
    uint8_t f[64];
    /* Total length 8, with a valid prelude CRC. */
    memset(f, 0, sizeof(f));
    f[3] = 8;
    fix_prelude_crc(f);
    expect_error(f, 16, 0, "message length 8 below minimum 16");
    /* Headers length past the message. */
    memcpy(f, aws_int32, sizeof(aws_int32));
    f[7] = 0x1e; /* 30 > 45 - 16 */
    fix_crcs(f);
    expect_error(f, sizeof(aws_int32), 0, "headers length 30 exceeds message length 45 minus 16");
    f[7] = 0x1d; /* 29 = 45 - 16: legal, no payload; then the header block is bad */
    fix_crcs(f);
    expect_error(f, sizeof(aws_int32), 0, "header 1: ");

    tg_es_message_t m;
    char err[96];
    assert_int_equal(tg_es_decode_one(aws_int32, 15, &m, err, sizeof(err)), TG_EPROTO);
    assert_string_equal(err, "message length 15 below minimum 16");
    assert_int_equal(tg_es_decode_one(aws_int32, 44, &m, err, sizeof(err)), TG_EPROTO);
    assert_string_equal(err, "message length 45 does not match input length 44");
    assert_int_equal(tg_es_decode_one(aws_int32, 40, &m, NULL, 0), TG_EPROTO);
}

static void test_corrupt_headers(void **state)
{
    uint8_t f[sizeof(all_types)];
    /* Unknown type 10 in the first header. */
    memcpy(f, all_types, sizeof(f));
    f[14] = 10;
    fix_crcs(f);
    expect_error(f, sizeof(f), 0, "header 0: unknown value type 10");
    /* Empty name. */
    memcpy(f, all_types, sizeof(f));
    f[12] = 0;
    fix_crcs(f);
    expect_error(f, sizeof(f), 0, "header 0: empty name");
    /* Headers length cut inside the last header's uuid: the value overruns the block. */
    memcpy(f, all_types, sizeof(f));
    f[7] = 0x50;
    fix_crcs(f);
    expect_error(f, sizeof(f), 0, "header 9: value overruns the header block");
    /* Cut just after the last header's type byte... */
    f[7] = 0x51 - 16;
    fix_crcs(f);
    expect_error(f, sizeof(f), 0, "header 9: value overruns the header block");
    /* ...inside its name... */
    f[7] = 0x51 - 18;
    fix_crcs(f);
    expect_error(f, sizeof(f), 0, "header 9: name overruns the header block");
    /* ...and inside a string's length field ("str" header starts at byte 12+41). */
    f[7] = 41 + 5 + 1;
    fix_crcs(f);
    expect_error(f, sizeof(f), 0, "header 7: value length overruns the header block");
    /* A string length larger than the block. */
    memcpy(f, all_types, sizeof(f));
    f[12 + 41 + 5] = 0x40;
    fix_crcs(f);
    expect_error(f, sizeof(f), 0, "header 7: value overruns the header block");
}

static void test_too_many_headers(void **state)
{
    tg_es_header_t h[TG_ES_MAX_HEADERS + 1];
    for (size_t i = 0; i <= TG_ES_MAX_HEADERS; i++)
        h[i] = (tg_es_header_t){.name = "h", .name_len = 1, .type = TG_ES_BOOL_TRUE};
    tg_buf_t out;
    tg_buf_init(&out, 0);
    assert_int_equal(tg_es_encode(&out, h, TG_ES_MAX_HEADERS + 1, NULL, 0), TG_EINVAL);
    assert_int_equal(out.len, 0);
    assert_int_equal(tg_es_encode(&out, h, TG_ES_MAX_HEADERS, NULL, 0), 0);
    assert_int_equal(decode_split(out.data, out.len, 7, 0), 1);
    /* Grow the block by one header by hand: 33 is refused. */
    uint8_t f[16 + 3 * (TG_ES_MAX_HEADERS + 1)];
    memcpy(f, out.data, 12 + 3 * TG_ES_MAX_HEADERS);
    memcpy(f + 12 + 3 * TG_ES_MAX_HEADERS, "\x01h\x00", 3);
    f[3] = sizeof(f);
    f[7] = 3 * (TG_ES_MAX_HEADERS + 1);
    fix_crcs(f);
    expect_error(f, sizeof(f), 0, "more than 32 headers");
    tg_buf_free(&out);
}

static void test_encode_refuses(void **state)
{
    tg_buf_t out;
    tg_buf_init(&out, 0);
    assert_int_equal(tg_buf_append(&out, "keep", 4), 0);
    tg_es_header_t bad[] = {
        {.name = "", .name_len = 0, .type = TG_ES_BOOL_TRUE},
        {.name = "x", .name_len = 1, .type = 10},
        {.name = "x", .name_len = 1, .type = TG_ES_BYTE, .i = 128},
        {.name = "x", .name_len = 1, .type = TG_ES_SHORT, .i = -32769},
        {.name = "x", .name_len = 1, .type = TG_ES_INT, .i = INT64_C(1) << 31},
        {.name = "x", .name_len = 1, .type = TG_ES_UUID, .s = "0123456789abcde", .s_len = 15},
        {.name = "x", .name_len = 1, .type = TG_ES_STRING, .s = NULL, .s_len = 3},
        {.name = NULL, .name_len = 1, .type = TG_ES_BOOL_TRUE},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(tg_es_encode(&out, &bad[i], 1, NULL, 0), TG_EINVAL);
        assert_int_equal(out.len, 4);
    }
    assert_int_equal(tg_es_encode(&out, NULL, 0, NULL, 1), TG_EINVAL);
    tg_buf_free(&out);
    /* A bounded output buffer is respected. */
    tg_buf_init(&out, 44);
    tg_es_header_t h = {.name = "event-type", .name_len = 10, .type = TG_ES_INT, .i = 40972};
    assert_int_equal(tg_es_encode(&out, &h, 1, "{'foo':'bar'}", 13), TG_ETOOBIG);
    assert_int_equal(out.len, 0);
    tg_buf_free(&out);
    char *longs = malloc(65537);
    assert_non_null(longs);
    memset(longs, 'a', 65536);
    longs[65536] = '\0';
    tg_buf_init(&out, 0);
    assert_int_equal(tg_es_encode_event(&out, longs, NULL, NULL, 0), TG_EINVAL);
    assert_int_equal(tg_es_encode_event(&out, "e", longs, NULL, 0), TG_EINVAL);
    longs[65535] = '\0';
    assert_int_equal(tg_es_encode_event(&out, longs, NULL, NULL, 0), 0);
    tg_buf_free(&out);
    free(longs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_answer_aws_vector),
        cmocka_unit_test(test_known_answer_all_types),
        cmocka_unit_test(test_round_trip_extremes),
        cmocka_unit_test(test_payload_sizes),
        cmocka_unit_test(test_exception_and_event_without_content_type),
        cmocka_unit_test(test_several_in_one_feed),
        cmocka_unit_test(test_split_everywhere),
        cmocka_unit_test(test_truncated_is_not_idle),
        cmocka_unit_test(test_callback_stop),
        cmocka_unit_test(test_size_limit),
        cmocka_unit_test(test_corrupt_crcs),
        cmocka_unit_test(test_corrupt_lengths),
        cmocka_unit_test(test_corrupt_headers),
        cmocka_unit_test(test_too_many_headers),
        cmocka_unit_test(test_encode_refuses),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* fuzz_eventstream.c - libFuzzer target for the event-stream decoder.
 *
 * Input: 4 control bytes (a cut offset, big-endian u16; a piece size and a
 * small size limit from the third; whether to repair CRCs from the fourth),
 * then the stream. Random bytes almost never carry valid CRCs, so when asked
 * the harness first rewrites each frame's CRCs, to let the fuzzer reach the
 * header parser with every frame it invents. The stream is decoded
 * whole, cut in two, in small pieces and under a small size limit, and the
 * runs must agree: same messages, same error, same message text. Every message
 * the decoder accepts must re-encode to exactly the bytes it came from, so the
 * re-encoded messages are always a prefix of the stream (all of it when the
 * stream ended cleanly). tg_es_decode_one on the whole stream must agree too.
 * Any disagreement aborts, so libFuzzer reports it like a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "aws/eventstream.h"

#define CHECK(c)                                                                                   \
    do {                                                                                           \
        if (!(c)) {                                                                                \
            fprintf(stderr, "invariant failed: %s (line %d)\n", #c, __LINE__);                     \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    tg_buf_t out; /* the decoded messages, re-encoded */
    size_t n;
    int rc, idle;
    char err[96];
} run_t;

static int on_message(const tg_es_message_t *m, void *ud)
{
    run_t *r = ud;
    CHECK(m->nheaders <= TG_ES_MAX_HEADERS);
    for (size_t i = 0; i < m->nheaders; i++)
        CHECK(m->headers[i].name_len > 0 && m->headers[i].type <= TG_ES_UUID);
    CHECK(tg_es_encode(&r->out, m->headers, m->nheaders, m->payload, m->payload_len) == 0);
    r->n++;
    return 0;
}

/* Feeds p[0..n): first [0,cut), then the rest in pieces of step (0: whole). */
static void run(run_t *r, const uint8_t *p, size_t n, size_t max, size_t cut, size_t step)
{
    memset(r, 0, sizeof(*r));
    tg_buf_init(&r->out, 0);
    tg_es_decoder_t d;
    tg_es_decoder_init(&d, max, on_message, r);
    r->rc = tg_es_decoder_feed(&d, p, cut);
    for (size_t i = cut; i < n && r->rc == 0;) {
        size_t k = step && step < n - i ? step : n - i;
        r->rc = tg_es_decoder_feed(&d, p + i, k);
        i += k;
    }
    CHECK(r->rc == 0 || r->rc == TG_EPROTO);
    CHECK(d.buf.len <= d.max_message);
    r->idle = tg_es_decoder_idle(&d);
    if (r->rc) {
        CHECK(d.err == r->rc && !r->idle && d.errmsg[0]);
        memcpy(r->err, d.errmsg, sizeof(r->err));
    }
    tg_es_decoder_free(&d);
    /* What was accepted is exactly what was sent. */
    CHECK(r->out.len <= n);
    CHECK(r->out.len == 0 || memcmp(r->out.data, p, r->out.len) == 0);
    if (r->rc == 0 && r->idle) CHECK(r->out.len == n);
}

static void same(const run_t *a, const run_t *b)
{
    CHECK(a->rc == b->rc && a->idle == b->idle && a->n == b->n);
    CHECK(strcmp(a->err, b->err) == 0);
    CHECK(a->out.len == b->out.len);
}

static void put_crc(uint8_t *at, const uint8_t *p, size_t n)
{
    uint32_t c = (uint32_t)crc32(0, p, (uInt)n);
    at[0] = (uint8_t)(c >> 24), at[1] = (uint8_t)(c >> 16), at[2] = (uint8_t)(c >> 8);
    at[3] = (uint8_t)c;
}

/* Rewrites the CRCs of each frame the length fields delimit, as far as they go. */
static void repair_crcs(uint8_t *p, size_t n)
{
    size_t off = 0;
    while (n - off >= 12) {
        uint8_t *f = p + off;
        size_t total = (size_t)f[0] << 24 | (size_t)f[1] << 16 | (size_t)f[2] << 8 | f[3];
        put_crc(f + 8, f, 8);
        if (total < 16 || total > n - off) break;
        put_crc(f + total - 4, f, total - 4);
        off += total;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 4) return 0;
    size_t cut = (size_t)data[0] << 8 | data[1];
    size_t step = data[2] & 15;
    size_t small = 16 + (size_t)(data[2] >> 4) * 24;
    int repair = data[3] & 1;
    size_t n = size - 4;
    cut %= n + 1;
    /* An exact-size copy, so ASan sees any read past the input. */
    uint8_t *p = malloc(n ? n : 1);
    CHECK(p);
    memcpy(p, data + 4, n);
    if (repair) repair_crcs(p, n);

    run_t whole, split, pieces, limited;
    run(&whole, p, n, 0, n, 0);
    run(&split, p, n, 0, cut, 0);
    run(&pieces, p, n, 0, 0, step + 1);
    same(&whole, &split);
    same(&whole, &pieces);

    /* A smaller limit only ever stops earlier, and says why. */
    run(&limited, p, n, small, cut, step);
    CHECK(limited.n <= whole.n);
    if (limited.n < whole.n) CHECK(limited.rc == TG_EPROTO);

    tg_es_message_t m;
    char err[96] = "";
    int rc = tg_es_decode_one(p, n, &m, err, sizeof(err));
    CHECK(rc == 0 || (rc == TG_EPROTO && err[0]));
    if (rc == 0) {
        CHECK(whole.rc == 0 && whole.idle && whole.n == 1);
        tg_buf_t again;
        tg_buf_init(&again, 0);
        CHECK(tg_es_encode(&again, m.headers, m.nheaders, m.payload, m.payload_len) == 0);
        CHECK(again.len == n && memcmp(again.data, p, n) == 0);
        tg_buf_free(&again);
    } else if (whole.rc == 0 && whole.idle) {
        CHECK(whole.n != 1);
    }

    tg_buf_free(&whole.out);
    tg_buf_free(&split.out);
    tg_buf_free(&pieces.out);
    tg_buf_free(&limited.out);
    free(p);
    return 0;
}

/* eventstream.c - the application/vnd.amazon.eventstream frame codec.
 *
 * Bedrock streams its responses as these binary frames, split by the network
 * anywhere. The decoder checks a frame's 12-byte prelude (lengths, prelude
 * CRC) as soon as it has it, so a peer announcing an oversized or garbled frame
 * is refused before anything is buffered. A frame lying wholly inside the fed
 * chunk is decoded where it lies; only a frame cut by the chunk's end is copied,
 * into d->buf, bounded by max_message. Every read is checked against the frame
 * and the header block first: nothing is read past the input.
 *
 * Invariant between feeds: d->buf holds the first d->buf.len bytes of one
 * frame; when that is 12 or more, its prelude has been verified. */
#include "aws/eventstream.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <zlib.h>

#define PRELUDE_LEN 12 /* total length, headers length, prelude CRC */
#define MIN_MESSAGE 16 /* a prelude and the message CRC */

static uint32_t get_be32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get_be64(const uint8_t *p)
{
    return (uint64_t)get_be32(p) << 32 | get_be32(p + 4);
}

static void put_be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static void put_be64(uint8_t *p, uint64_t v)
{
    put_be32(p, (uint32_t)(v >> 32));
    put_be32(p + 4, (uint32_t)v);
}

static uint32_t crc(uint32_t c, const uint8_t *p, size_t n)
{
    /* zlib takes a uInt length: feed huge inputs in pieces. */
    while (n > 0) {
        uInt k = n > 0x40000000u ? 0x40000000u : (uInt)n;
        c = (uint32_t)crc32(c, p, k);
        p += k;
        n -= k;
    }
    return c;
}

static int fail(char *errmsg, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int fail(char *errmsg, size_t cap, const char *fmt, ...)
{
    if (errmsg && cap) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(errmsg, cap, fmt, ap);
        va_end(ap);
    }
    return TG_EPROTO;
}

/* Checks the 12-byte prelude at p; sets *total. The CRC goes first: when it
 * fails, the lengths are noise and naming them would mislead. */
static int check_prelude(const uint8_t *p, size_t max, uint32_t *total, char *errmsg, size_t cap)
{
    uint32_t want = get_be32(p + 8), got = crc(0, p, 8);
    if (got != want)
        return fail(errmsg, cap, "prelude CRC mismatch: got 0x%08x expected 0x%08x", got, want);
    uint32_t len = get_be32(p), hlen = get_be32(p + 4);
    if (len < MIN_MESSAGE)
        return fail(errmsg, cap, "message length %u below minimum %d", len, MIN_MESSAGE);
    if (len > max) return fail(errmsg, cap, "message length %u above maximum %zu", len, max);
    if (hlen > len - MIN_MESSAGE)
        return fail(errmsg, cap, "headers length %u exceeds message length %u minus %d", hlen, len,
                    MIN_MESSAGE);
    *total = len;
    return 0;
}

/* Parses the header block p[0..n) into m->headers. */
static int parse_headers(const uint8_t *p, size_t n, tg_es_message_t *m, char *errmsg, size_t cap)
{
    static const uint8_t fixed[] = {0, 0, 1, 2, 4, 8, 0, 0, 8, 16}; /* value bytes per type */
    size_t i = 0;
    m->nheaders = 0;
    while (i < n) {
        size_t k = m->nheaders;
        if (k == TG_ES_MAX_HEADERS)
            return fail(errmsg, cap, "more than %d headers", TG_ES_MAX_HEADERS);
        tg_es_header_t *h = &m->headers[k];
        memset(h, 0, sizeof(*h));
        uint8_t nlen = p[i++];
        if (nlen == 0) return fail(errmsg, cap, "header %zu: empty name", k);
        if (n - i < (size_t)nlen + 1)
            return fail(errmsg, cap, "header %zu: name overruns the header block", k);
        h->name = (const char *)p + i;
        h->name_len = nlen;
        i += nlen;
        h->type = p[i++];
        if (h->type > TG_ES_UUID)
            return fail(errmsg, cap, "header %zu: unknown value type %u", k, h->type);
        size_t vlen = fixed[h->type];
        if (h->type == TG_ES_BYTES || h->type == TG_ES_STRING) {
            if (n - i < 2)
                return fail(errmsg, cap, "header %zu: value length overruns the header block", k);
            vlen = (size_t)p[i] << 8 | p[i + 1];
            i += 2;
        }
        if (n - i < vlen)
            return fail(errmsg, cap, "header %zu: value overruns the header block", k);
        const uint8_t *v = p + i;
        switch (h->type) {
        case TG_ES_BOOL_TRUE:
            h->i = 1;
            break;
        case TG_ES_BOOL_FALSE:
            h->i = 0;
            break;
        case TG_ES_BYTE:
            h->i = (int8_t)v[0];
            break;
        case TG_ES_SHORT:
            h->i = (int16_t)(uint16_t)(v[0] << 8 | v[1]);
            break;
        case TG_ES_INT:
            h->i = (int32_t)get_be32(v);
            break;
        case TG_ES_LONG:
        case TG_ES_TIMESTAMP:
            h->i = (int64_t)get_be64(v);
            break;
        default: /* bytes, string, uuid */
            h->s = (const char *)v;
            h->s_len = (uint16_t)vlen;
        }
        i += vlen;
        m->nheaders++;
    }
    return 0;
}

/* Decodes a frame of exactly total bytes whose prelude is verified. */
static int decode_frame(const uint8_t *p, uint32_t total, tg_es_message_t *m, char *errmsg,
                        size_t cap)
{
    uint32_t want = get_be32(p + total - 4), got = crc(0, p, total - 4);
    if (got != want)
        return fail(errmsg, cap, "message CRC mismatch: got 0x%08x expected 0x%08x", got, want);
    uint32_t hlen = get_be32(p + 4);
    int rc = parse_headers(p + PRELUDE_LEN, hlen, m, errmsg, cap);
    if (rc) return rc;
    m->payload = (const char *)p + PRELUDE_LEN + hlen;
    m->payload_len = total - MIN_MESSAGE - hlen;
    m->raw = (const char *)p;
    m->raw_len = total;
    return 0;
}

int tg_es_decode_one(const void *p, size_t n, tg_es_message_t *m, char *errmsg, size_t errcap)
{
    if (n < MIN_MESSAGE)
        return fail(errmsg, errcap, "message length %zu below minimum %d", n, MIN_MESSAGE);
    uint32_t total;
    int rc = check_prelude(p, UINT32_MAX, &total, errmsg, errcap);
    if (rc) return rc;
    if (total != n)
        return fail(errmsg, errcap, "message length %u does not match input length %zu", total, n);
    return decode_frame(p, total, m, errmsg, errcap);
}

/* ---- incremental decoder ------------------------------------------------ */

void tg_es_decoder_init(tg_es_decoder_t *d, size_t max_message, tg_es_on_message cb, void *ud)
{
    memset(d, 0, sizeof(*d));
    d->max_message = max_message ? max_message : TG_ES_DEFAULT_MAX_MESSAGE;
    if (d->max_message > UINT32_MAX) d->max_message = UINT32_MAX;
    tg_buf_init(&d->buf, d->max_message);
    d->on_message = cb;
    d->ud = ud;
}

void tg_es_decoder_free(tg_es_decoder_t *d)
{
    tg_buf_free(&d->buf);
}

int tg_es_decoder_idle(const tg_es_decoder_t *d)
{
    return d->buf.len == 0 && d->err == 0;
}

static int set_err(tg_es_decoder_t *d, int rc)
{
    if (rc == TG_ENOMEM) snprintf(d->errmsg, sizeof(d->errmsg), "out of memory");
    d->err = rc;
    tg_buf_reset(&d->buf);
    return rc;
}

/* Decodes one complete verified-prelude frame and hands it to the callback. */
static int deliver(tg_es_decoder_t *d, const uint8_t *p, uint32_t total)
{
    tg_es_message_t m;
    int rc = decode_frame(p, total, &m, d->errmsg, sizeof(d->errmsg));
    if (rc) return set_err(d, rc);
    return d->on_message(&m, d->ud);
}

int tg_es_decoder_feed(tg_es_decoder_t *d, const void *data, size_t n)
{
    const uint8_t *p = data;
    uint32_t total;
    int rc;
    if (d->err) return d->err;
    while (n > 0) {
        if (d->buf.len == 0) {
            /* Fast path: whole frames straight from the caller's bytes. */
            if (n >= PRELUDE_LEN) {
                rc = check_prelude(p, d->max_message, &total, d->errmsg, sizeof(d->errmsg));
                if (rc) return set_err(d, rc);
                if (n >= total) {
                    rc = deliver(d, p, total);
                    if (rc) return rc;
                    p += total;
                    n -= total;
                    continue;
                }
            }
            /* A cut frame: less than one frame (bounded, checked above) is left. */
            rc = tg_buf_append(&d->buf, p, n);
            return rc ? set_err(d, rc) : 0;
        }
        const uint8_t *b = (const uint8_t *)d->buf.data;
        if (d->buf.len < PRELUDE_LEN) {
            size_t take = PRELUDE_LEN - d->buf.len < n ? PRELUDE_LEN - d->buf.len : n;
            rc = tg_buf_append(&d->buf, p, take);
            if (rc) return set_err(d, rc);
            p += take;
            n -= take;
            if (d->buf.len < PRELUDE_LEN) return 0;
            b = (const uint8_t *)d->buf.data;
            rc = check_prelude(b, d->max_message, &total, d->errmsg, sizeof(d->errmsg));
            if (rc) return set_err(d, rc);
        }
        total = get_be32(b);
        size_t want = total - d->buf.len;
        size_t take = want < n ? want : n;
        rc = tg_buf_append(&d->buf, p, take);
        if (rc) return set_err(d, rc);
        p += take;
        n -= take;
        if (d->buf.len < total) return 0;
        rc = deliver(d, (const uint8_t *)d->buf.data, total);
        if (d->err) return rc;
        tg_buf_reset(&d->buf);
        if (rc) return rc;
    }
    return 0;
}

/* ---- lookup --------------------------------------------------------------- */

const tg_es_header_t *tg_es_header(const tg_es_message_t *m, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < m->nheaders; i++) {
        const tg_es_header_t *h = &m->headers[i];
        if (h->name_len == len && memcmp(h->name, name, len) == 0) return h;
    }
    return NULL;
}

const char *tg_es_header_str(const tg_es_message_t *m, const char *name, size_t *len)
{
    const tg_es_header_t *h = tg_es_header(m, name);
    if (!h || h->type != TG_ES_STRING) return NULL;
    *len = h->s_len;
    return h->s ? h->s : "";
}

/* ---- encoder -------------------------------------------------------------- */

/* The encoded size of one header, or 0 when it cannot be encoded. */
static size_t header_size(const tg_es_header_t *h)
{
    if (h->name_len == 0 || !h->name) return 0;
    size_t base = 2 + (size_t)h->name_len; /* name length, name, type */
    switch (h->type) {
    case TG_ES_BOOL_TRUE:
    case TG_ES_BOOL_FALSE:
        return base;
    case TG_ES_BYTE:
        return h->i >= INT8_MIN && h->i <= INT8_MAX ? base + 1 : 0;
    case TG_ES_SHORT:
        return h->i >= INT16_MIN && h->i <= INT16_MAX ? base + 2 : 0;
    case TG_ES_INT:
        return h->i >= INT32_MIN && h->i <= INT32_MAX ? base + 4 : 0;
    case TG_ES_LONG:
    case TG_ES_TIMESTAMP:
        return base + 8;
    case TG_ES_BYTES:
    case TG_ES_STRING:
        return h->s || h->s_len == 0 ? base + 2 + h->s_len : 0;
    case TG_ES_UUID:
        return h->s && h->s_len == 16 ? base + 16 : 0;
    }
    return 0;
}

static uint8_t *put_header(uint8_t *w, const tg_es_header_t *h)
{
    *w++ = h->name_len;
    memcpy(w, h->name, h->name_len);
    w += h->name_len;
    *w++ = h->type;
    switch (h->type) {
    case TG_ES_BYTE:
        *w++ = (uint8_t)(int8_t)h->i;
        break;
    case TG_ES_SHORT:
        w[0] = (uint8_t)((uint16_t)h->i >> 8);
        w[1] = (uint8_t)h->i;
        w += 2;
        break;
    case TG_ES_INT:
        put_be32(w, (uint32_t)h->i);
        w += 4;
        break;
    case TG_ES_LONG:
    case TG_ES_TIMESTAMP:
        put_be64(w, (uint64_t)h->i);
        w += 8;
        break;
    case TG_ES_BYTES:
    case TG_ES_STRING:
        *w++ = (uint8_t)(h->s_len >> 8);
        *w++ = (uint8_t)h->s_len;
        /* fall through */
    case TG_ES_UUID:
        if (h->s_len) memcpy(w, h->s, h->s_len);
        w += h->s_len;
        break;
    }
    return w;
}

int tg_es_encode(tg_buf_t *out, const tg_es_header_t *headers, size_t nheaders, const void *payload,
                 size_t payload_len)
{
    if (nheaders > TG_ES_MAX_HEADERS || (payload_len && !payload)) return TG_EINVAL;
    size_t hlen = 0;
    for (size_t i = 0; i < nheaders; i++) {
        size_t k = header_size(&headers[i]);
        if (k == 0) return TG_EINVAL;
        hlen += k;
    }
    if (payload_len > UINT32_MAX - MIN_MESSAGE - hlen) return TG_ETOOBIG;
    size_t total = MIN_MESSAGE + hlen + payload_len;
    int rc = tg_buf_reserve(out, total);
    if (rc) return rc;
    uint8_t *start = (uint8_t *)out->data + out->len, *w = start;
    put_be32(w, (uint32_t)total);
    put_be32(w + 4, (uint32_t)hlen);
    put_be32(w + 8, crc(0, w, 8));
    w += PRELUDE_LEN;
    for (size_t i = 0; i < nheaders; i++)
        w = put_header(w, &headers[i]);
    if (payload_len) memcpy(w, payload, payload_len);
    w += payload_len;
    put_be32(w, crc(0, start, total - 4));
    out->len += total;
    out->data[out->len] = '\0';
    return 0;
}

/* value is at most UINT16_MAX bytes long (the caller checked). */
static tg_es_header_t str_header(const char *name, const char *value)
{
    return (tg_es_header_t){
        .name = name,
        .name_len = (uint8_t)strlen(name),
        .type = TG_ES_STRING,
        .s = value,
        .s_len = (uint16_t)strlen(value),
    };
}

static int encode_typed(tg_buf_t *out, const char *message_type, const char *type_name,
                        const char *type, const char *content_type, const void *payload,
                        size_t payload_len)
{
    if (!type || strlen(type) > UINT16_MAX) return TG_EINVAL;
    if (content_type && strlen(content_type) > UINT16_MAX) return TG_EINVAL;
    tg_es_header_t h[3];
    size_t n = 0;
    h[n++] = str_header(type_name, type);
    if (content_type) h[n++] = str_header(":content-type", content_type);
    h[n++] = str_header(":message-type", message_type);
    return tg_es_encode(out, h, n, payload, payload_len);
}

int tg_es_encode_event(tg_buf_t *out, const char *event_type, const char *content_type,
                       const void *payload, size_t payload_len)
{
    return encode_typed(out, "event", ":event-type", event_type, content_type, payload,
                        payload_len);
}

int tg_es_encode_exception(tg_buf_t *out, const char *exception_type, const void *payload,
                           size_t payload_len)
{
    return encode_typed(out, "exception", ":exception-type", exception_type, "application/json",
                        payload, payload_len);
}

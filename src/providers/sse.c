/* sse.c - incremental Server-Sent Events splitter (WHATWG line rules).
 *
 * Upstream streams arrive in arbitrary pieces; the gateway needs each event
 * twice: parsed (data/event fields, to read usage) and raw (to forward to the
 * client byte for byte). So the splitter only finds event boundaries in the
 * bytes it is given and hands out a pointer to them: an event lying wholly in
 * one input chunk is never copied. Only the incomplete tail of a chunk is kept,
 * in s->pending, bounded by max_event.
 *
 * Line ends are \n, \r\n or a lone \r. An event ends at its first blank line;
 * its raw bytes include that blank line's terminator. A \r that ends the blank
 * line as the very last byte of a chunk is ambiguous (a \n may follow in the
 * next chunk), so the event is held until the next byte arrives: that keeps
 * raw identical however the stream is split. Only if the event contains no \n
 * at all (a CR-only stream) is it delivered at once, and a \n that then starts
 * the next chunk is dropped as the rest of that line end.
 *
 * Blank lines that start no event (extra blank lines between events) are
 * dropped from raw: they mean nothing to an SSE client. Comment-only events
 * (": keep-alive") are delivered with empty data so they can be forwarded. */
#include "providers/sse.h"

#include <stdint.h>
#include <string.h>

/* Where the scan of one event stands; everything needed to continue it in the
 * next chunk is derivable from s->pending and s->last_cr (see resume_scan). */
typedef struct {
    int prev_cr;     /* the byte before was a \r (a \n now completes its line end) */
    int line_empty;  /* no byte of the current line seen yet */
    int has_content; /* the event has at least one non-blank line */
} scan_t;

enum { SCAN_MORE, SCAN_END, SCAN_END_AT_CR };

static int is_eol(char c)
{
    return c == '\r' || c == '\n';
}

/* Advances *i through p[*i..n) until the current event ends. Stray blank lines
 * before any content move *start past them. Returns SCAN_END with *i just past
 * the event, SCAN_END_AT_CR when the closing \r is the chunk's last byte, or
 * SCAN_MORE when the chunk ran out first. */
static int scan(scan_t *st, const char *p, size_t n, size_t *i, size_t *start)
{
    while (*i < n) {
        char c = p[(*i)++];
        if (c == '\n' && st->prev_cr) {
            st->prev_cr = 0;
            if (!st->has_content) *start = *i;
            continue;
        }
        st->prev_cr = c == '\r';
        if (!is_eol(c)) {
            st->line_empty = 0;
            st->has_content = 1;
            continue;
        }
        if (!st->line_empty) {
            st->line_empty = 1;
            continue;
        }
        if (!st->has_content) {
            *start = *i;
            continue;
        }
        if (c == '\n') return SCAN_END;
        if (*i == n) return SCAN_END_AT_CR;
        if (p[*i] == '\n') (*i)++;
        return SCAN_END;
    }
    return SCAN_MORE;
}

/* Fills s->scratch with "data\0event\0" parsed from raw and calls cb. */
static int deliver(tg_sse_t *s, const char *raw, size_t len, tg_sse_cb cb, void *ud)
{
    const char *ev = "";
    size_t evlen = 0;
    int has_data = 0;
    tg_buf_reset(&s->scratch);
    size_t i = 0;
    while (i < len) {
        size_t ls = i;
        while (i < len && !is_eol(raw[i]))
            i++;
        size_t le = i;
        if (i < len && raw[i] == '\r' && i + 1 < len && raw[i + 1] == '\n') i++;
        i++;
        if (le == ls || raw[ls] == ':') continue; /* blank line or comment */
        const char *colon = memchr(raw + ls, ':', le - ls);
        size_t nlen = colon ? (size_t)(colon - (raw + ls)) : le - ls;
        const char *v = colon ? colon + 1 : raw + le;
        if (v < raw + le && *v == ' ') v++;
        size_t vlen = (size_t)(raw + le - v);
        if (nlen == 4 && memcmp(raw + ls, "data", 4) == 0) {
            /* Lines joined by \n: the separator goes before every line but the first. */
            int rc = has_data ? tg_buf_append(&s->scratch, "\n", 1) : 0;
            if (!rc) rc = tg_buf_append(&s->scratch, v, vlen);
            if (rc) return rc;
            has_data = 1;
        } else if (nlen == 5 && memcmp(raw + ls, "event", 5) == 0) {
            ev = v;
            evlen = vlen;
        }
    }
    size_t dlen = s->scratch.len;
    int rc = tg_buf_append(&s->scratch, "", 1);
    if (!rc) rc = tg_buf_append(&s->scratch, ev, evlen);
    if (rc) return rc;
    tg_sse_event_t e = {
        .raw = raw,
        .raw_len = len,
        .data = s->scratch.data,
        .data_len = dlen,
        .event = s->scratch.data + dlen + 1,
    };
    return cb(&e, ud);
}

/* A held event with its state: pending ends inside an event with content, so
 * only the last bytes tell where the scan stands. */
static scan_t resume_scan(const tg_sse_t *s)
{
    const char *b = s->pending.data;
    size_t n = s->pending.len;
    scan_t st = {.prev_cr = s->last_cr, .line_empty = is_eol(b[n - 1]), .has_content = 1};
    return st;
}

/* The held event ends at a blank line closed by its last byte, a \r. */
static int pending_ends_at_cr(const tg_sse_t *s)
{
    const char *b = s->pending.data;
    size_t n = s->pending.len;
    return n >= 2 && b[n - 1] == '\r' && is_eol(b[n - 2]);
}

static void reset(tg_sse_t *s)
{
    tg_buf_reset(&s->pending);
    s->last_cr = 0;
}

void tg_sse_init(tg_sse_t *s, size_t max_event)
{
    s->max_event = max_event ? max_event : SIZE_MAX / 2;
    tg_buf_init(&s->pending, s->max_event);
    /* data plus event plus two NULs never exceed the raw event. */
    tg_buf_init(&s->scratch, 0);
    s->last_cr = 0;
}

/* Delivers the held event and forgets it. */
static int deliver_pending(tg_sse_t *s, tg_sse_cb cb, void *ud)
{
    int rc = deliver(s, s->pending.data, s->pending.len, cb, ud);
    tg_buf_reset(&s->pending);
    return rc;
}

/* When cb stops the feed or an error occurs, the rest of p and any held bytes
 * are dropped: the caller is abandoning the stream. */
int tg_sse_feed(tg_sse_t *s, const char *p, size_t n, tg_sse_cb cb, void *ud)
{
    size_t i = 0;
    int rc;
    if (n == 0) return 0;

    /* First finish the event held from earlier chunks, copying only its end. */
    if (s->pending.len) {
        if (pending_ends_at_cr(s)) {
            if (p[0] == '\n') i = 1;
            rc = tg_buf_append(&s->pending, p, i);
            if (rc) goto fail;
            s->last_cr = 0;
            rc = deliver_pending(s, cb, ud);
            if (rc) goto fail;
        } else {
            scan_t st = resume_scan(s);
            size_t start = 0;
            int r = scan(&st, p, n, &i, &start);
            rc = tg_buf_append(&s->pending, p, i);
            if (rc) goto fail;
            s->last_cr = p[i - 1] == '\r';
            if (r == SCAN_MORE) return 0;
            if (r == SCAN_END_AT_CR && memchr(s->pending.data, '\n', s->pending.len)) return 0;
            rc = deliver_pending(s, cb, ud);
            if (rc) goto fail;
            if (r == SCAN_END_AT_CR) return 0; /* CR-only: a \n after it is a dropped blank line */
        }
    }

    /* Then every event that lies wholly in p is handed out in place. A \n
     * completing a \r\n cut at the chunk's edge needs no state here: before
     * an event's first line it is a blank line, and those are dropped. */
    scan_t st = {.line_empty = 1};
    size_t start = i;
    for (;;) {
        int r = scan(&st, p, n, &i, &start);
        size_t len = i - start;
        if (len > s->max_event) {
            rc = TG_ETOOBIG;
            goto fail;
        }
        if (r == SCAN_MORE || (r == SCAN_END_AT_CR && memchr(p + start, '\n', len))) {
            /* Incomplete (or held for a possible \n): keep it. Stray blank
             * lines with no event after them are not kept. */
            if (st.has_content) {
                rc = tg_buf_append(&s->pending, p + start, len);
                if (rc) goto fail;
            }
            s->last_cr = p[n - 1] == '\r';
            return 0;
        }
        rc = deliver(s, p + start, len, cb, ud);
        if (rc) goto fail;
        if (r == SCAN_END_AT_CR) {
            s->last_cr = 1;
            return 0;
        }
        start = i;
        st = (scan_t){.prev_cr = 0, .line_empty = 1};
    }

fail:
    /* The stream cannot be split further in step with its sender. */
    reset(s);
    return rc;
}

size_t tg_sse_pending(const tg_sse_t *s)
{
    return s->pending.len;
}

void tg_sse_free(tg_sse_t *s)
{
    tg_buf_free(&s->pending);
    tg_buf_free(&s->scratch);
    s->last_cr = 0;
}

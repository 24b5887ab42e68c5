/* sse.h - incremental Server-Sent Events splitter for upstream streams.
 *
 * Bytes go in as they arrive, split anywhere; each complete event (ended by a
 * blank line; \n, \r\n or \r line ends) comes out once, with its raw bytes
 * (for byte-exact forwarding) and its data field (data: lines joined by \n).
 * An event larger than max_event is an error, so a hostile upstream cannot
 * grow memory without bound. */
#ifndef TG_SSE_H
#define TG_SSE_H

#include <stddef.h>

#include "core/core.h"

typedef struct {
    const char *raw; /* the event's bytes as received, including its blank line */
    size_t raw_len;
    const char *data; /* NUL-terminated; "" when the event had no data field */
    size_t data_len;
    const char *event; /* the event: field, NUL-terminated; "" when absent */
} tg_sse_event_t;

/* Return 0 to go on, non-zero to stop feeding (tg_sse_feed returns it). */
typedef int (*tg_sse_cb)(const tg_sse_event_t *ev, void *ud);

typedef struct {
    tg_buf_t pending; /* bytes of an incomplete event */
    tg_buf_t scratch; /* data/event fields of the event being delivered */
    size_t max_event;
    int last_cr; /* previous chunk ended in '\r' */
} tg_sse_t;

void tg_sse_init(tg_sse_t *s, size_t max_event);
/* Returns 0, the callback's non-zero value, or TG_ETOOBIG. */
int tg_sse_feed(tg_sse_t *s, const char *p, size_t n, tg_sse_cb cb, void *ud);
/* Bytes held of an incomplete event (a stream that ends here was cut short). */
size_t tg_sse_pending(const tg_sse_t *s);
void tg_sse_free(tg_sse_t *s);

#endif

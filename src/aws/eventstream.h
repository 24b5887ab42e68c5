/* eventstream.h - the application/vnd.amazon.eventstream frame codec.
 *
 * A message is: total length (u32 BE), headers length (u32 BE), prelude CRC32
 * (of the first 8 bytes), headers, payload, message CRC32 (of everything
 * before it). Header values are typed: bool true/false, byte, short, int,
 * long, byte array, string, timestamp (ms), uuid.
 *
 * The decoder is incremental: feed it bytes as they arrive, split anywhere,
 * and it calls back once per complete, verified message. It buffers at most
 * one message (bounded by max_message), so a peer cannot make it grow. After
 * an error it stays failed. The encoder writes one message into a tg_buf_t. */
#ifndef TG_AWS_EVENTSTREAM_H
#define TG_AWS_EVENTSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

enum {
    TG_ES_BOOL_TRUE = 0,
    TG_ES_BOOL_FALSE = 1,
    TG_ES_BYTE = 2,
    TG_ES_SHORT = 3,
    TG_ES_INT = 4,
    TG_ES_LONG = 5,
    TG_ES_BYTES = 6,
    TG_ES_STRING = 7,
    TG_ES_TIMESTAMP = 8,
    TG_ES_UUID = 9,
};

#define TG_ES_MAX_HEADERS         32
#define TG_ES_DEFAULT_MAX_MESSAGE (16u * 1024 * 1024) /* the service's own limit */

typedef struct {
    const char *name; /* not NUL-terminated */
    uint8_t name_len;
    uint8_t type;  /* TG_ES_* */
    int64_t i;     /* bool (1/0), byte, short, int, long, timestamp */
    const char *s; /* bytes, string: not NUL-terminated; uuid: 16 bytes */
    uint16_t s_len;
} tg_es_header_t;

typedef struct {
    tg_es_header_t headers[TG_ES_MAX_HEADERS];
    size_t nheaders;
    const char *payload;
    size_t payload_len;
    const char *raw; /* the whole encoded message, for forwarding it unchanged */
    size_t raw_len;
} tg_es_message_t;

/* Pointers in m are valid only during the callback (they point into the fed
 * chunk or into the decoder's buffer). Return 0 to go on, non-zero to stop:
 * tg_es_decoder_feed returns that value at once, and the rest of that chunk is
 * not consumed (the decoder stays usable, at a message boundary). */
typedef int (*tg_es_on_message)(const tg_es_message_t *m, void *ud);

typedef struct {
    tg_buf_t buf; /* the partial message */
    size_t max_message;
    int err;         /* sticky: 0, TG_EPROTO or TG_ENOMEM */
    char errmsg[96]; /* "prelude CRC mismatch: got 0x.. expected 0x..", ... */
    tg_es_on_message on_message;
    void *ud;
} tg_es_decoder_t;

/* max_message 0 means TG_ES_DEFAULT_MAX_MESSAGE. */
void tg_es_decoder_init(tg_es_decoder_t *d, size_t max_message, tg_es_on_message cb, void *ud);
void tg_es_decoder_free(tg_es_decoder_t *d);
/* Returns 0, TG_EPROTO (with d->errmsg: bad CRC, length out of bounds, header
 * malformed or too many), TG_ENOMEM, or the callback's non-zero return. A
 * prelude is checked as soon as its 12 bytes are in, before any buffering. */
int tg_es_decoder_feed(tg_es_decoder_t *d, const void *p, size_t n);
/* True when no partial message is buffered and no error occurred (a clean end
 * of stream). */
int tg_es_decoder_idle(const tg_es_decoder_t *d);

/* Decodes exactly one whole message from p[0..n) in place: m points into p.
 * Returns 0 or TG_EPROTO with a message in errmsg (may be NULL). */
int tg_es_decode_one(const void *p, size_t n, tg_es_message_t *m, char *errmsg, size_t errcap);

/* The first header with this name, or NULL. */
const tg_es_header_t *tg_es_header(const tg_es_message_t *m, const char *name);
/* The string value of a string header, or NULL; len set when non-NULL. */
const char *tg_es_header_str(const tg_es_message_t *m, const char *name, size_t *len);

/* Appends one encoded message to out; on error out is unchanged. Booleans take
 * their value from the type; byte/short/int must fit their width; uuid needs
 * s_len 16. Returns 0, TG_EINVAL (a header that cannot be encoded, more than
 * TG_ES_MAX_HEADERS), TG_ETOOBIG (over 4 GiB or out's maximum) or TG_ENOMEM. */
int tg_es_encode(tg_buf_t *out, const tg_es_header_t *headers, size_t nheaders, const void *payload,
                 size_t payload_len);
/* Convenience: an AWS event (":event-type", ":content-type" unless NULL,
 * ":message-type" event). */
int tg_es_encode_event(tg_buf_t *out, const char *event_type, const char *content_type,
                       const void *payload, size_t payload_len);
/* An AWS exception (":exception-type", ":content-type" application/json,
 * ":message-type" exception). */
int tg_es_encode_exception(tg_buf_t *out, const char *exception_type, const void *payload,
                           size_t payload_len);

#endif

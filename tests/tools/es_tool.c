/* es_tool.c - the event-stream codec from the command line, for black-box tests.
 *
 *   es_tool decode [--split-every | --split-step N] [--max BYTES] < frames
 *   es_tool encode < json-lines
 *
 * decode prints one JSON line per message:
 *   {"headers":[{"name":":event-type","type":"string","value":"chunk"},...],"payload":"<base64>"}
 * Types are named as @smithy/eventstream-codec names them: boolean, byte,
 * short, integer (numbers), long and timestamp (decimal strings: a JS number
 * cannot hold every int64), binary (base64), string, uuid (8-4-4-4-12 hex).
 * On bad input it prints the messages before the bad one, then the decoder's
 * error on stderr, and exits 1. A stream ending inside a message is an error.
 *
 * --split-every decodes the input again cut at every offset k (fed as [0,k)
 * then [k,n)) and byte by byte, and exits 2 unless every run gives the same
 * messages and the same error as the unsplit one. --split-step N cuts at every
 * Nth offset instead, for large inputs.
 *
 * encode reads the same JSON lines (payload optional) and writes the frames. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "aws/eventstream.h"

static const char *type_names[] = {"boolean", "boolean", "byte",   "short",     "integer",
                                   "long",    "binary",  "string", "timestamp", "uuid"};

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static int append_base64(tg_buf_t *o, const uint8_t *p, size_t n)
{
    int rc = tg_buf_reserve(o, (n + 2) / 3 * 4);
    if (rc) return rc;
    char *w = o->data + o->len;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n) v |= p[i + 2];
        *w++ = b64[v >> 18 & 63];
        *w++ = b64[v >> 12 & 63];
        *w++ = i + 1 < n ? b64[v >> 6 & 63] : '=';
        *w++ = i + 2 < n ? b64[v & 63] : '=';
    }
    o->len = (size_t)(w - o->data);
    o->data[o->len] = '\0';
    return 0;
}

/* Decodes strict, padded base64 into o; -1 when malformed. */
static int decode_base64(tg_buf_t *o, const char *s)
{
    size_t n = strlen(s);
    if (n % 4) return -1;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (size_t j = 0; j < 4; j++) {
            const char *c = s[i + j] ? strchr(b64, s[i + j]) : NULL;
            if (s[i + j] == '=' && i + 4 == n && j >= 2) {
                pad++;
                v <<= 6;
                continue;
            }
            if (!c || pad) return -1;
            v = v << 6 | (uint32_t)(c - b64);
        }
        uint8_t out[3] = {(uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
        if (tg_buf_append(o, out, 3 - (size_t)pad)) return -1;
    }
    return 0;
}

static int append_json(const tg_es_message_t *m, void *ud)
{
    tg_buf_t *o = ud;
    int rc = tg_buf_appends(o, "{\"headers\":[");
    for (size_t i = 0; i < m->nheaders && !rc; i++) {
        const tg_es_header_t *h = &m->headers[i];
        rc = tg_buf_appends(o, i ? ",{\"name\":" : "{\"name\":");
        if (!rc) rc = tg_buf_json_str(o, h->name, h->name_len);
        if (!rc) rc = tg_buf_printf(o, ",\"type\":\"%s\",\"value\":", type_names[h->type]);
        if (rc) break;
        switch (h->type) {
        case TG_ES_BOOL_TRUE:
        case TG_ES_BOOL_FALSE:
            rc = tg_buf_appends(o, h->i ? "true" : "false");
            break;
        case TG_ES_BYTE:
        case TG_ES_SHORT:
        case TG_ES_INT:
            rc = tg_buf_printf(o, "%lld", (long long)h->i);
            break;
        case TG_ES_LONG:
        case TG_ES_TIMESTAMP:
            rc = tg_buf_printf(o, "\"%lld\"", (long long)h->i);
            break;
        case TG_ES_BYTES:
            rc = tg_buf_appends(o, "\"");
            if (!rc) rc = append_base64(o, (const uint8_t *)h->s, h->s_len);
            if (!rc) rc = tg_buf_appends(o, "\"");
            break;
        case TG_ES_STRING:
            rc = tg_buf_json_str(o, h->s, h->s_len);
            break;
        case TG_ES_UUID: {
            const uint8_t *u = (const uint8_t *)h->s;
            rc = tg_buf_appends(o, "\"");
            for (int k = 0; k < 16 && !rc; k++)
                rc = tg_buf_printf(o, "%s%02x", k == 4 || k == 6 || k == 8 || k == 10 ? "-" : "",
                                   u[k]);
            if (!rc) rc = tg_buf_appends(o, "\"");
            break;
        }
        }
        if (!rc) rc = tg_buf_appends(o, "}");
    }
    if (!rc) rc = tg_buf_appends(o, "],\"payload\":\"");
    if (!rc) rc = append_base64(o, (const uint8_t *)m->payload, m->payload_len);
    if (!rc) rc = tg_buf_appends(o, "\"}\n");
    return rc;
}

typedef struct {
    tg_buf_t out; /* JSON lines */
    int rc;
    char err[128];
} run_t;

/* Decodes in[0..n) fed in the pieces cuts[] marks (ascending offsets). */
static void run(run_t *r, const uint8_t *in, size_t n, size_t max, const size_t *cuts, size_t ncuts,
                size_t step)
{
    tg_buf_init(&r->out, 0);
    r->rc = 0;
    r->err[0] = '\0';
    tg_es_decoder_t d;
    tg_es_decoder_init(&d, max, append_json, &r->out);
    size_t at = 0;
    for (size_t c = 0; c <= ncuts && !r->rc; c++) {
        size_t end = c < ncuts ? cuts[c] : n;
        while (at < end && !r->rc) {
            size_t k = step && end - at > step ? step : end - at;
            r->rc = tg_es_decoder_feed(&d, in + at, k);
            at += k;
        }
    }
    if (r->rc) {
        snprintf(r->err, sizeof(r->err), "%s", d.err ? d.errmsg : tg_strerror(r->rc));
    } else if (!tg_es_decoder_idle(&d)) {
        r->rc = TG_EPROTO;
        snprintf(r->err, sizeof(r->err),
                 "truncated: %zu bytes of an incomplete message at end of input", d.buf.len);
    }
    tg_es_decoder_free(&d);
}

static int same(const run_t *a, const run_t *b)
{
    return a->rc == b->rc && strcmp(a->err, b->err) == 0 && a->out.len == b->out.len &&
           memcmp(a->out.data, b->out.data, a->out.len) == 0;
}

static int read_all(tg_buf_t *b)
{
    char chunk[65536];
    size_t k;
    tg_buf_init(b, 0);
    while ((k = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
        if (tg_buf_append(b, chunk, k)) return -1;
    return ferror(stdin) ? -1 : 0;
}

static int cmd_decode(const uint8_t *in, size_t n, size_t max, int split, size_t step)
{
    run_t ref;
    run(&ref, in, n, max, NULL, 0, 0);
    if (split) {
        size_t checked = 0;
        for (size_t k = 0; k <= n; k += step) {
            run_t r;
            run(&r, in, n, max, &k, 1, 0);
            if (!same(&r, &ref)) {
                fprintf(stderr, "es_tool: decoding cut at byte %zu differs from unsplit (%s)\n", k,
                        r.err[0] ? r.err : "no error");
                return 2;
            }
            tg_buf_free(&r.out);
            checked++;
        }
        run_t r;
        run(&r, in, n, max, NULL, 0, 1);
        if (!same(&r, &ref)) {
            fprintf(stderr, "es_tool: decoding byte by byte differs from unsplit (%s)\n",
                    r.err[0] ? r.err : "no error");
            return 2;
        }
        tg_buf_free(&r.out);
        fprintf(stderr, "es_tool: %zu cuts and byte by byte agree\n", checked);
    }
    fwrite(ref.out.data ? ref.out.data : "", 1, ref.out.len, stdout);
    tg_buf_free(&ref.out);
    if (ref.rc) {
        fprintf(stderr, "es_tool: %s\n", ref.err);
        return 1;
    }
    return 0;
}

/* ---- encode ----------------------------------------------------------------- */

static int parse_int64(const cJSON *v, int64_t *out)
{
    if (cJSON_IsNumber(v)) {
        *out = (int64_t)v->valuedouble;
        return (double)*out == v->valuedouble ? 0 : -1;
    }
    if (!cJSON_IsString(v)) return -1;
    char *end;
    errno = 0;
    long long x = strtoll(v->valuestring, &end, 10);
    if (errno || end == v->valuestring || *end) return -1;
    *out = x;
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* 32 hex digits, dashes anywhere. */
static int parse_uuid(const char *s, uint8_t *u)
{
    size_t k = 0;
    for (; *s; s++) {
        if (*s == '-') continue;
        int v = hexval(*s);
        if (v < 0 || k == 32) return -1;
        u[k / 2] = (uint8_t)(k % 2 ? u[k / 2] | v : v << 4);
        k++;
    }
    return k == 32 ? 0 : -1;
}

/* Fills h from one {"name","type","value"} object. The bytes of a binary or
 * uuid value go to store at *off (h->s is set once store stops moving). */
static const char *parse_header(const cJSON *j, tg_es_header_t *h, tg_buf_t *store, size_t *off)
{
    *off = SIZE_MAX;
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(j, "name");
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(j, "type");
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(j, "value");
    if (!cJSON_IsString(name) || !cJSON_IsString(type) || !v)
        return "header needs name, type, value";
    size_t nlen = strlen(name->valuestring);
    if (nlen == 0 || nlen > 255) return "header name must be 1..255 bytes";
    memset(h, 0, sizeof(*h));
    h->name = name->valuestring;
    h->name_len = (uint8_t)nlen;
    const char *t = type->valuestring;
    if (strcmp(t, "boolean") == 0) {
        if (!cJSON_IsBool(v)) return "boolean value must be true or false";
        h->type = cJSON_IsTrue(v) ? TG_ES_BOOL_TRUE : TG_ES_BOOL_FALSE;
        return NULL;
    }
    for (uint8_t k = TG_ES_BYTE; k <= TG_ES_UUID; k++)
        if (strcmp(t, type_names[k]) == 0) h->type = k;
    if (h->type < TG_ES_BYTE) return "unknown header type";
    if (h->type == TG_ES_STRING) {
        if (!cJSON_IsString(v)) return "string value must be a string";
        size_t len = strlen(v->valuestring);
        if (len > UINT16_MAX) return "string value over 65535 bytes";
        h->s = v->valuestring;
        h->s_len = (uint16_t)len;
        return NULL;
    }
    if (h->type == TG_ES_BYTES || h->type == TG_ES_UUID) {
        if (!cJSON_IsString(v)) return "binary and uuid values must be strings";
        size_t at = store->len;
        if (h->type == TG_ES_UUID) {
            uint8_t u[16];
            if (parse_uuid(v->valuestring, u) || tg_buf_append(store, u, 16)) return "bad uuid";
        } else if (decode_base64(store, v->valuestring)) {
            return "bad base64 in binary value";
        }
        if (store->len - at > UINT16_MAX) return "binary value over 65535 bytes";
        *off = at;
        h->s_len = (uint16_t)(store->len - at);
        return NULL;
    }
    return parse_int64(v, &h->i) ? "integer value expected" : NULL;
}

static int cmd_encode(void)
{
    tg_buf_t in, frames;
    if (read_all(&in)) {
        fprintf(stderr, "es_tool: cannot read stdin\n");
        return 1;
    }
    tg_buf_init(&frames, 0);
    size_t lineno = 0;
    char *save = NULL;
    for (char *line = strtok_r(in.data ? in.data : (char[]){0}, "\n", &save); line;
         line = strtok_r(NULL, "\n", &save)) {
        lineno++;
        cJSON *j = cJSON_Parse(line);
        const char *err = j ? NULL : "not JSON";
        tg_es_header_t h[TG_ES_MAX_HEADERS];
        size_t off[TG_ES_MAX_HEADERS], nh = 0;
        tg_buf_t store, payload;
        tg_buf_init(&store, 0);
        tg_buf_init(&payload, 0);
        const cJSON *hs = j ? cJSON_GetObjectItemCaseSensitive(j, "headers") : NULL;
        const cJSON *x;
        if (!err && hs && !cJSON_IsArray(hs)) err = "headers must be an array";
        cJSON_ArrayForEach(x, hs)
        {
            if (err) break;
            if (nh == TG_ES_MAX_HEADERS) {
                err = "too many headers";
                break;
            }
            err = parse_header(x, &h[nh], &store, &off[nh]);
            nh++;
        }
        for (size_t i = 0; i < nh && !err; i++)
            if (off[i] != SIZE_MAX) h[i].s = store.data + off[i];
        const cJSON *p = j ? cJSON_GetObjectItemCaseSensitive(j, "payload") : NULL;
        if (!err && p && (!cJSON_IsString(p) || decode_base64(&payload, p->valuestring)))
            err = "payload must be base64";
        if (!err) {
            int rc = tg_es_encode(&frames, h, nh, payload.data, payload.len);
            if (rc) err = tg_strerror(rc);
        }
        cJSON_Delete(j);
        tg_buf_free(&store);
        tg_buf_free(&payload);
        if (err) {
            fprintf(stderr, "es_tool: line %zu: %s\n", lineno, err);
            return 1;
        }
    }
    fwrite(frames.data ? frames.data : "", 1, frames.len, stdout);
    tg_buf_free(&frames);
    tg_buf_free(&in);
    return 0;
}

static int usage(void)
{
    fprintf(stderr,
            "usage: es_tool decode [--split-every | --split-step N] [--max BYTES] < frames\n"
            "       es_tool encode < json-lines\n");
    return 64;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage();
    if (strcmp(argv[1], "encode") == 0) return argc == 2 ? cmd_encode() : usage();
    if (strcmp(argv[1], "decode") != 0) return usage();
    int split = 0;
    size_t step = 1, max = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--split-every") == 0) {
            split = 1;
        } else if (strcmp(argv[i], "--split-step") == 0 && i + 1 < argc) {
            split = 1;
            step = strtoul(argv[++i], NULL, 10);
            if (step == 0) return usage();
        } else if (strcmp(argv[i], "--max") == 0 && i + 1 < argc) {
            max = strtoul(argv[++i], NULL, 10);
        } else {
            return usage();
        }
    }
    tg_buf_t in;
    if (read_all(&in)) {
        fprintf(stderr, "es_tool: cannot read stdin\n");
        return 1;
    }
    int rc = cmd_decode((const uint8_t *)in.data, in.len, max, split, step);
    tg_buf_free(&in);
    return rc;
}

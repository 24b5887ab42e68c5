/* sigv4.h - AWS Signature Version 4 for header-signed requests.
 *
 * Computes the canonical request, string to sign and signature exactly as
 * AWS's published test suite and the SDKs do: canonical URI paths
 * dot-segment normalised and encoded again for every service except S3
 * (TG_SIGV4_NO_NORMALIZE), query parameters decoded, re-encoded and sorted by
 * encoded key then value, header names lower-cased, values trimmed with inner
 * runs of whitespace folded, repeated headers joined with ','. The signing key
 * (four HMACs) is derived once per secret, day, region and service and cached
 * by the caller in a tg_sigv4_key_t, so signing a request costs two SHA-256
 * passes (payload and canonical request) and one HMAC.
 *
 * Nothing here allocates except the optional debug outputs: working memory is
 * fixed arrays on the stack, bounded by the TG_SIGV4_MAX_* limits below. */
#ifndef TG_AWS_SIGV4_H
#define TG_AWS_SIGV4_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "core/core.h"
#include "http/http.h" /* tg_header_t */

enum {
    /* S3 style: the path is not normalised and not encoded a second time. It
     * is taken as it goes on the wire: valid %XX escapes are kept as they are
     * and only bytes that still need it (space, non-ASCII, ':' ...) are
     * encoded, so a path is encoded exactly once whether or not the caller
     * already did it. */
    TG_SIGV4_NO_NORMALIZE = 1 << 0,
    TG_SIGV4_SIGN_BODY = 1 << 1,          /* add and sign x-amz-content-sha256 */
    TG_SIGV4_OMIT_SESSION_TOKEN = 1 << 2, /* token added after signing, not signed */
    /* The payload hash is the literal UNSIGNED-PAYLOAD; implies the signed
     * x-amz-content-sha256 header, which tells the service so. */
    TG_SIGV4_UNSIGNED_PAYLOAD = 1 << 3,
};

/* Limits of the fixed working memory; beyond them tg_sigv4_sign returns
 * TG_ETOOBIG. */
#define TG_SIGV4_MAX_HEADERS       128  /* headers passed by the caller */
#define TG_SIGV4_MAX_QUERY_PARAMS  128  /* name=value pairs in the query */
#define TG_SIGV4_MAX_QUERY_BYTES   8192 /* the query once re-encoded */
#define TG_SIGV4_MAX_PATH_SEGMENTS 256  /* path segments kept by normalisation */

typedef struct {
    const char *access_key_id;
    const char *secret_access_key;
    const char *session_token; /* NULL or "" when none */
    const char *region;        /* "us-east-1" */
    const char *service;       /* "bedrock", "sagemaker", "sts", "s3" */
    time_t time;               /* signing time, unix seconds (UTC), years 1970..9999 */
    unsigned flags;            /* TG_SIGV4_* */
} tg_sigv4_params_t;

typedef struct {
    const char *method; /* "POST", NUL-terminated */
    /* The path as it goes on the wire, already percent-encoded once where
     * needed ("/model/anthropic.claude-v2%3A1/invoke"); the signer encodes it
     * again for non-S3 services, as the SDKs do. Must start with '/'; empty
     * means "/". */
    const char *path;
    size_t path_len;
    /* After '?', without it; NULL or "" when none. Each name and value is
     * percent-decoded (a '%' not followed by two hex digits is TG_EINVAL) and
     * encoded again the SigV4 way; empty pieces ("a=1&&b=2") are skipped and
     * a name without '=' signs as "name=". */
    const char *query;
    size_t query_len;
    /* Headers to sign, read through name_len and value_len only (need not be
     * NUL-terminated). Must include Host. x-amz-date, x-amz-security-token,
     * x-amz-content-sha256 and Authorization are added by the signer: passing
     * them is TG_EINVAL. Values may span lines (obs-fold): CR and LF fold
     * like spaces and tabs. */
    const tg_header_t *headers;
    size_t nheaders;
    const void *body;
    size_t body_len;
} tg_sigv4_request_t;

/* Headers the caller adds to the request, NUL-terminated values. */
typedef struct {
    char amz_date[17];       /* x-amz-date: 20150830T123600Z */
    char payload_hash[65];   /* hex SHA-256 of the body, or UNSIGNED-PAYLOAD */
    char signature[65];      /* hex */
    char authorization[512]; /* Authorization: AWS4-HMAC-SHA256 Credential=..., SignedHeaders=...,
                                Signature=... */
    /* x-amz-security-token is params->session_token itself; x-amz-content-sha256
     * is payload_hash, sent only with TG_SIGV4_SIGN_BODY or
     * TG_SIGV4_UNSIGNED_PAYLOAD. */
} tg_sigv4_out_t;

/* Cache of the derived signing key; zero-initialise, keep per credential.
 * It holds no secret in clear: the secret is recognised by its SHA-256. One
 * cache must not be used by two threads at once (keep one per worker). */
typedef struct {
    char scope[128]; /* "20150830/us-east-1/service" it was derived for; "" = empty */
    uint8_t secret_fp[32];
    uint8_t key[32];
} tg_sigv4_key_t;

/* Signs r. key may be NULL (derive every time); it is re-derived whenever the
 * day, region, service or secret differs from what it holds. canonical and
 * string_to_sign, when non-NULL, are reset and receive the intermediate texts
 * (for debugging and tests; their appends are the only allocations). out is
 * filled only on success. Returns TG_EINVAL on malformed input (missing Host,
 * bad escapes, a header name that is not a token, a path not starting with
 * '/'), TG_ETOOBIG past a TG_SIGV4_MAX_* limit or if the Authorization header
 * would not fit, or the debug buffers' own error. */
int tg_sigv4_sign(const tg_sigv4_params_t *p, const tg_sigv4_request_t *r, tg_sigv4_key_t *key,
                  tg_sigv4_out_t *out, tg_buf_t *canonical, tg_buf_t *string_to_sign);

/* Appends s percent-encoded the SigV4 way to out (unreserved A-Z a-z 0-9 - _
 * . ~ kept; '/' kept when keep_slash). Used for model ids in paths ("a:b" ->
 * "a%3Ab"). Returns out's error (TG_ETOOBIG past its max). */
int tg_sigv4_uri_encode(tg_buf_t *out, const char *s, size_t n, int keep_slash);

/* Formats unix seconds as 20150830T123600Z (out >= 17 bytes). */
void tg_sigv4_amz_date(char *out, time_t t);
/* Parses 2015-08-30T12:36:00Z or 20150830T123600Z (UTC, strict). */
int tg_sigv4_parse_time(const char *s, time_t *out);

#endif

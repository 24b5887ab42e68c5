/* awsauth.h - how tollgate authenticates its calls to an AWS provider.
 *
 * Per AWS provider one tg_awsauth_t: either a Bedrock API key (sent as
 * "Authorization: Bearer", the header line built once) or a credentials
 * provider (the SDKs' default chain with a background refresh thread, see
 * aws/credentials.h) whose current credentials sign each call with SigV4.
 * Signing never blocks: when no credentials are available it fails at once
 * with TG_EAUTH and the caller answers 503 credentials_unavailable.
 *
 * The derived SigV4 signing key is cached per thread in a tg_awsauth_keys_t
 * (a worker keeps one per provider), so a call costs two SHA-256 passes and
 * one HMAC; the header lines are written into the caller's fixed buffers and
 * arena, nothing is allocated on the heap. */
#ifndef TG_PROVIDER_AWSAUTH_H
#define TG_PROVIDER_AWSAUTH_H

#include <stddef.h>
#include <stdint.h>

#include "aws/sigv4.h"
#include "config/config.h"
#include "core/core.h"
#include "http/http.h"

typedef struct tg_awsauth tg_awsauth_t;

/* For an AWS provider (bedrock or sagemaker); copies what it needs from p
 * except strings of the config, which must outlive it. Does no I/O. */
int tg_awsauth_create(tg_awsauth_t **out, const tg_provider_t *p);
/* Starts the credentials refresh thread (SigV4 only; a no-op for bearer). */
int tg_awsauth_start(tg_awsauth_t *a);
/* Waits up to timeout_ms for the first credentials; 0 when available, else
 * an error with a message in err that names no secret. */
int tg_awsauth_wait(tg_awsauth_t *a, uint32_t timeout_ms, char *err, size_t errcap);
void tg_awsauth_destroy(tg_awsauth_t *a);
/* A credentials provider (not started) for a "credentials" object of the
 * config, signing STS calls in region. When the object names environment
 * variables that are unset, *out stays NULL and missing says which (the
 * chain is never used instead). */
struct tg_aws_credprov;
int tg_aws_credprov_from_config(struct tg_aws_credprov **out, const tg_aws_creds_config_t *c,
                                const char *region, char *missing, size_t cap);
int tg_awsauth_is_bearer(const tg_awsauth_t *a);

/* A small per-thread cache of derived signing keys, one per region and
 * service seen (round robin beyond that). Zero-initialise. */
#define TG_AWSAUTH_KEYS 4
typedef struct {
    tg_sigv4_key_t keys[TG_AWSAUTH_KEYS];
    char scope[TG_AWSAUTH_KEYS][48]; /* "region/service" each slot serves */
    unsigned next;
} tg_awsauth_keys_t;

#define TG_AWSAUTH_MAX_HEADERS 16

typedef struct {
    const char *method;  /* "POST" */
    const char *host;    /* the Host header exactly as curl sends it */
    const char *region;  /* signing region */
    const char *service; /* "bedrock", "sagemaker" */
    const char *path;    /* encoded once, as on the wire */
    size_t path_len;
    const char *query; /* encoded, without '?'; NULL when none */
    size_t query_len;
    const tg_header_t *headers; /* sent and signed besides Host (content-type, accept, ...) */
    size_t nheaders;            /* at most TG_AWSAUTH_MAX_HEADERS */
    const void *body;
    size_t body_len;
} tg_awsauth_req_t;

/* The header lines to add to the call (tg_upcall_opts_t.headers); valid while
 * this struct and the arena live. */
typedef struct {
    const char *lines[3];
    size_t n;
    char date[32];  /* "x-amz-date: 20150830T123600Z" */
    char auth[544]; /* "Authorization: AWS4-HMAC-SHA256 ..." */
} tg_awsauth_out_t;

/* Signs r (or adds the bearer line). The session token line is copied into
 * arena. Returns 0, TG_EAUTH (no credentials now), TG_ENOMEM (arena full),
 * or the signer's TG_EINVAL / TG_ETOOBIG. */
int tg_awsauth_sign(tg_awsauth_t *a, tg_awsauth_keys_t *keys, const tg_awsauth_req_t *r,
                    tg_arena_t *arena, tg_awsauth_out_t *out);

#endif

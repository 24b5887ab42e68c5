/* s3.h - S3 PutObject, blocking, for background threads (report uploads).
 * Never call it on a worker loop: it runs tg_fetch on the caller's multi
 * handle and sleeps between attempts.
 *
 * One PUT of a whole body, SigV4-signed for service "s3": the path is encoded
 * once (S3 style, TG_SIGV4_NO_NORMALIZE), x-amz-content-sha256 carries the
 * body's hex SHA-256 and x-amz-checksum-sha256 its base64 SHA-256, both
 * signed, so S3 rejects a body damaged in transit (BadDigest) instead of
 * storing it. The request is signed again for each attempt (a fresh
 * x-amz-date).
 *
 * Retries: at most TG_S3_ATTEMPTS attempts, 100 ms then 400 ms apart, while
 * the failure is transient (could not connect, timed out, the connection
 * broke before an answer, HTTP 500, 502, 503 SlowDown, 504); 4xx is final.
 * The attempts share the one timeout, each getting an equal share of what is
 * left, so a hung attempt leaves time for the next. Setting *stop (then
 * curl_multi_wakeup) ends the call, sleeps included, with TG_ECANCELED.
 * PutObject is idempotent: repeating a PUT whose answer was lost is safe. */
#ifndef TG_AWS_S3_H
#define TG_AWS_S3_H

#include <curl/curl.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "aws/credentials.h"

#define TG_S3_ATTEMPTS   3                   /* sleeping 100 ms, then 400 ms, between them */
#define TG_S3_KEY_MAX    1024                /* bytes, as S3 allows */
#define TG_S3_BODY_MAX   ((uint64_t)5 << 30) /* 5 GiB: S3's limit for one PUT */
#define TG_S3_TIMEOUT_MS 30000               /* default for the whole call */

typedef struct {
    const char *bucket; /* 3..63 of [a-z0-9.-] */
    const char *region; /* signing region, "eu-west-1" */
    /* NULL: AWS, virtual-hosted https://<bucket>.s3.<region>.amazonaws.com/<key>
     * (path style https://s3.<region>.amazonaws.com/<bucket>/<key> for a bucket
     * name with a '.', which the wildcard certificate does not cover; .com.cn in
     * cn- regions). Set ("http://127.0.0.1:9000", no query): path style
     * <endpoint>/<bucket>/<key>. */
    const char *endpoint;
    uint32_t timeout_ms; /* the whole call, every attempt and sleep; 0 = 30000 */
} tg_s3_target_t;

/* PUTs body[0..len) as key ("reports/succeed/2026-11-26.csv", 1..1024 bytes,
 * no "." or ".." segment, which URLs would collapse) in t's bucket.
 * content_type NULL means application/octet-stream. Borrows everything; the
 * caller keeps creds alive for the call (a reference from
 * tg_aws_credprov_get).
 *
 * Returns 0 on a 2xx, else a TG_E* code with a message in err naming the last
 * failure: for an S3 answer its HTTP status and the Code and Message of its
 * XML error body ("HTTP 403 SignatureDoesNotMatch: The request signature
 * ..."), never a secret nor the signature, and how many attempts were made
 * when more than one. Codes: TG_EINVAL (bad bucket, key, region, endpoint or
 * content type), TG_ETOOBIG (body over TG_S3_BODY_MAX), TG_EAUTH (no
 * credentials, 403, InvalidToken), TG_EEXPIRED (ExpiredToken), TG_ENOTFOUND
 * (404 NoSuchBucket), TG_ECANCELED (*stop set), and for the last transient
 * failure TG_ECONNECT, TG_ETIMEDOUT or TG_EUPSTREAM (also every other status,
 * 5xx after the last attempt included). */
int tg_s3_put(CURLM *multi, const atomic_int *stop, const tg_s3_target_t *t,
              const tg_aws_creds_t *creds, const char *key, const void *body, size_t len,
              const char *content_type, char *err, size_t errcap);

#endif

/* bedrock.h - the Amazon Bedrock runtime: its operations, model ids, error
 * mapping and token counts. Pure functions: no I/O; nothing allocated
 * outlives a call except what goes into the tg_buf_t the caller passes.
 *
 * Usage comes from Bedrock's own counts, never estimated when it reported
 * them: the x-amzn-bedrock-*-token-count headers of InvokeModel,
 * amazon-bedrock-invocationMetrics in the last chunk of
 * InvokeModelWithResponseStream, usage in Converse, metadata.usage in
 * ConverseStream. Cache read and write tokens are kept apart from plain input
 * (Bedrock's inputTokens already exclude them). */
#ifndef TG_PROVIDER_BEDROCK_H
#define TG_PROVIDER_BEDROCK_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "aws/eventstream.h"
#include "core/core.h"
#include "http/http.h"

typedef enum {
    TG_BR_INVOKE = 0,          /* POST /model/{id}/invoke */
    TG_BR_INVOKE_STREAM = 1,   /* POST /model/{id}/invoke-with-response-stream */
    TG_BR_CONVERSE = 2,        /* POST /model/{id}/converse */
    TG_BR_CONVERSE_STREAM = 3, /* POST /model/{id}/converse-stream */
} tg_br_op_t;

/* "invoke", "invoke-with-response-stream", "converse", "converse-stream";
 * NULL for a value outside the enum. */
const char *tg_br_op_path(tg_br_op_t op);
/* The usage event's api field: "bedrock.invoke", "bedrock.invoke-stream",
 * "bedrock.converse", "bedrock.converse-stream"; NULL outside the enum. */
const char *tg_br_op_api(tg_br_op_t op);
/* Accepts either form above (exact, case-sensitive); TG_EINVAL otherwise. */
int tg_br_op_parse(const char *s, size_t n, tg_br_op_t *out);
static inline int tg_br_op_streams(tg_br_op_t op)
{
    return op == TG_BR_INVOKE_STREAM || op == TG_BR_CONVERSE_STREAM;
}

/* What a model id or ARN names. */
typedef enum {
    TG_BR_ID_FOUNDATION = 0,     /* anthropic.claude-3-5-sonnet-20240620-v1:0 */
    TG_BR_ID_PROFILE = 1,        /* us.anthropic..., eu., apac., global., ...; an inference-profile
                                    ARN; an application-inference-profile ARN (base_model "") */
    TG_BR_ID_CUSTOM = 2,         /* arn:...:custom-model/..., custom-model-deployment/... */
    TG_BR_ID_PROVISIONED = 3,    /* arn:...:provisioned-model/... */
    TG_BR_ID_IMPORTED = 4,       /* arn:...:imported-model/... */
    TG_BR_ID_FOUNDATION_ARN = 5, /* arn:...:foundation-model/ID */
    TG_BR_ID_PROMPT = 6,         /* arn:...:prompt/... (prompt management) */
    TG_BR_ID_ROUTER = 7,         /* arn:...:(default-)prompt-router/... */
} tg_br_id_kind_t;

typedef struct {
    tg_br_id_kind_t kind;
    char base_model[160]; /* for pricing: the foundation model id without a
                             region prefix ("anthropic.claude-3-5-sonnet-..."),
                             "" when the id does not say (custom, provisioned) */
    char family[32]; /* "anthropic", "amazon", "meta", "mistral", "cohere", "ai21", ... or "" */
    char region[32]; /* from an ARN, "" otherwise */
    char geo[16];    /* "us", "eu", "apac", "global", "us-gov", "jp", "au",
                        "ca" for a system profile, else "" */
} tg_br_model_t;

/* Parses a model id or ARN; TG_EINVAL when it is not a valid Bedrock id
 * (empty, over 2048 bytes, a byte outside [A-Za-z0-9._:/-], no "provider."
 * part, malformed ARN). Accepted:
 *   provider.name[:N...]                  FOUNDATION, base_model = the id
 *   GEO.provider.name[:N]                 PROFILE, geo set, base_model without GEO.
 *   arn:PARTITION:bedrock:REGION:ACCOUNT:TYPE/ID with PARTITION aws, aws-cn,
 *   aws-us-gov, aws-iso, aws-iso-b, aws-iso-e, aws-iso-f, aws-eusc; ACCOUNT 12
 *   digits (empty only for foundation-model); TYPE foundation-model,
 *   inference-profile, application-inference-profile, custom-model,
 *   custom-model-deployment, provisioned-model, imported-model, prompt,
 *   prompt-router, default-prompt-router.
 * family is the provider part wherever the id names one. On error out is
 * zeroed. */
int tg_br_model_parse(const char *id, size_t n, tg_br_model_t *out);

/* Appends "/model/<id percent-encoded>/<op>" to out: ':' and '/' in the id
 * are encoded ("%3A", "%2F") as the AWS SDKs send them (tg_sigv4_uri_encode).
 * This is the path on the wire; SigV4's canonical URI encodes it once more.
 * TG_EINVAL for an empty id or an op outside the enum, TG_ETOOBIG / TG_ENOMEM;
 * on error out is unchanged. */
int tg_br_path(tg_buf_t *out, const char *model_id, size_t n, tg_br_op_t op);

/* Token counts as Bedrock reported them. have is 0 until a count was seen. */
typedef struct {
    int have;
    int64_t input; /* plain (uncached) input tokens */
    int64_t output;
    int64_t cache_read;  /* tokens read from the prompt cache */
    int64_t cache_write; /* tokens written to the prompt cache */
} tg_br_usage_t;

/* InvokeModel: from the response headers (names case-insensitive)
 * x-amzn-bedrock-input-token-count, -output-token-count,
 * -cache-read-input-token-count, -cache-write-input-token-count. Returns 1
 * when input and output were there; 0, with u untouched, when either is
 * missing or any of the four present is not a plain decimal count (sign,
 * garbage, over 2^53 - 1). */
int tg_br_usage_from_headers(const tg_header_t *h, size_t n, tg_br_usage_t *u);
/* Converse: from the response body's "usage" (inputTokens and outputTokens
 * required, cacheReadInputTokens / cacheWriteInputTokens optional). Returns 1
 * when found, 0 when absent or not valid counts (u untouched), TG_EINVAL
 * when the body is not JSON. */
int tg_br_usage_from_converse(const char *body, size_t len, tg_br_usage_t *u);

/* One decoded event-stream message of a Bedrock stream, classified. */
typedef enum {
    TG_BR_EV_CONTENT = 0,   /* a chunk / content event without usage */
    TG_BR_EV_USAGE = 1,     /* carries the final counts (u filled) */
    TG_BR_EV_EXCEPTION = 2, /* :message-type exception: status/code/message filled */
    TG_BR_EV_OTHER = 3,     /* messageStart, contentBlockStop, ... */
} tg_br_ev_kind_t;

typedef struct {
    tg_br_ev_kind_t kind;
    int64_t output_text_bytes; /* generated text bytes in this event, for estimates */
    int status;                /* for an exception: the HTTP status it maps to */
    char code[64];             /* the exception type, e.g. "throttlingException" */
    char message[256];         /* the exception's message, truncated */
} tg_br_event_t;

/* Classifies one message of an InvokeModelWithResponseStream (op
 * TG_BR_INVOKE_STREAM: "chunk" events whose {"bytes": base64} payload is the
 * model's own chunk JSON, the last carrying amazon-bedrock-invocationMetrics)
 * or ConverseStream (metadata.usage) stream, updating u when it carries
 * counts. A chunk without valid metrics is CONTENT: its counts are never
 * guessed from the model's own fields. :message-type "error" messages
 * (:error-code, :error-message) are exceptions too. ev is always filled.
 * An event type the op does not know is OTHER. Returns 0; TG_EPROTO when the
 * message is malformed (no type headers, an unknown :message-type, a chunk
 * that is not {"bytes": strict base64 of a JSON object}, a ConverseStream
 * event whose payload is not a JSON object); TG_EINVAL when op is not a
 * streaming one. */
int tg_br_stream_event(tg_br_op_t op, const tg_es_message_t *m, tg_br_event_t *ev,
                       tg_br_usage_t *u);

/* Maps a Bedrock error to the status tollgate answers with: from the
 * x-amzn-ErrorType header ("ThrottlingException:http://...") or a stream
 * exception type, case-insensitive: ValidationException 400,
 * AccessDeniedException 403, ResourceNotFoundException 404,
 * ModelTimeoutException 408, ModelErrorException 424,
 * ModelStreamErrorException 424, ThrottlingException 429,
 * ModelNotReadyException 429, ServiceQuotaExceededException 400 (as Bedrock
 * does), ConflictException 400, InternalServerException 500,
 * ServiceUnavailableException 503; unknown names keep upstream_status when it
 * is 4xx/5xx, else 502. code gets the bare name (without the ":http://..."
 * suffix or a "namespace#" prefix), truncated, "" for an empty type. */
int tg_br_error_status(const char *type, size_t n, int upstream_status, char *code, size_t codecap);
/* The "message" (or "Message") of an AWS JSON error body, copied into msg
 * (truncated, control characters dropped, cut before a quoted canonical
 * request or string to sign, which would show our session token); "" when
 * there is none. */
void tg_aws_error_message(const char *body, size_t len, char *msg, size_t cap);

/* ---- small pieces both AWS providers use (sagemaker.c too) ------------- */

/* Copies n bytes of upstream text into dst (cap >= 1) for JSON answers and
 * logs: control characters (C0, DEL, C1) dropped, invalid UTF-8 bytes become
 * '?', truncated at a character boundary; always NUL-terminated. */
void tg_aws_text_copy(char *dst, size_t cap, const char *src, size_t n);
/* Parses exactly p[0..n) as one JSON value (white space around it allowed);
 * NULL when it is not. The caller frees with cJSON_Delete. */
cJSON *tg_aws_json_parse(const char *p, size_t n);
/* Reads obj[key] as a token count: 1 and *out set for an integral number in
 * [0, 2^53 - 1], 0 when absent or null, -1 for anything else. */
int tg_aws_json_count(const cJSON *obj, const char *key, int64_t *out);

typedef struct {
    const char *name; /* matched case-insensitively */
    int status;
} tg_aws_error_t;

/* The shared body of tg_br_error_status / tg_sm_error_status. */
int tg_aws_error_status(const tg_aws_error_t *table, size_t ntable, const char *type, size_t n,
                        int upstream_status, char *code, size_t codecap);

#endif

/* sagemaker.h - Amazon SageMaker runtime endpoints: the request bodies of the
 * containers tollgate knows, and token counts from their answers. Pure
 * functions: no I/O.
 *
 * SageMaker itself counts nothing; the container may. Hugging Face TGI
 * reports generated tokens (and prefill tokens) in "details" when asked;
 * vLLM, LMI and TGI's Messages API return an OpenAI-style "usage". Otherwise
 * the counts are estimated (4 bytes a token) and the usage event says so. */
#ifndef TG_PROVIDER_SAGEMAKER_H
#define TG_PROVIDER_SAGEMAKER_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "aws/eventstream.h"
#include "core/core.h"
#include "providers/sse.h"

typedef enum {
    TG_SM_INVOKE = 0,        /* POST /endpoints/{name}/invocations */
    TG_SM_INVOKE_STREAM = 1, /* POST /endpoints/{name}/invocations-response-stream */
} tg_sm_op_t;

const char *tg_sm_op_path(tg_sm_op_t op); /* "invocations", "invocations-response-stream" */
const char *tg_sm_op_api(tg_sm_op_t op);  /* "sagemaker.invoke", "sagemaker.invoke-stream" */
int tg_sm_op_parse(const char *s, size_t n, tg_sm_op_t *out);
/* Appends "/endpoints/<name percent-encoded>/<op>". */
int tg_sm_path(tg_buf_t *out, const char *endpoint, size_t n, tg_sm_op_t op);

/* The reference's request shapes (seed-study 2.6), for front doors that
 * build the body from inputs and parameters:
 *   messages_api          -> {"messages": inputs, ...parameters}   (TGI Messages API)
 *   inputs is an object   -> {...inputs, ...parameters}            (JumpStart)
 *   otherwise             -> {"inputs": inputs, "parameters": parameters} (TGI)
 * A key in parameters replaces the same key before it, in its place (as
 * Python's {**a, **b}); parameters may be NULL or null (as {}).
 * parameters.InferenceComponentName, when present, is removed from the body
 * and copied to component (for the X-Amzn-SageMaker-Inference-Component
 * header); component is "" when absent. With want_details (TGI text only),
 * parameters.details is set true so the container reports its token counts.
 * Nothing else is added: a TGI stream also needs "stream": true in the body,
 * which the caller adds. out is replaced. Returns 0; TG_EINVAL for no
 * inputs, parameters that are not an object, or an InferenceComponentName
 * that is not a valid name ([a-zA-Z0-9-], at most 63, no leading or trailing
 * '-') or does not fit compcap; TG_ENOMEM; TG_ETOOBIG (out's maximum). The
 * caller's JSON is not changed. */
int tg_sm_build_body(tg_buf_t *out, const cJSON *inputs, const cJSON *parameters, int messages_api,
                     int want_details, char *component, size_t compcap);

typedef struct {
    int have_input, have_output; /* which counts the container reported */
    int64_t input;
    int64_t output;
    int64_t text_bytes; /* generated text seen, for estimates */
} tg_sm_usage_t;

/* Counts from a whole InvokeEndpoint response body: TGI
 * [{"generated_text", "details": {"generated_tokens", "prefill": [...]}}]
 * (input = prefill length when present), an OpenAI-style "usage"
 * (prompt_tokens, completion_tokens), or none (JumpStart). Also measures the
 * generated text. Returns 0, or TG_EINVAL when the body is not JSON (u then
 * has text_bytes 0 and no counts). */
int tg_sm_usage_from_body(const char *body, size_t len, tg_sm_usage_t *u);

/* A response stream: PayloadPart event payloads are the container's own raw
 * bytes (TGI or OpenAI-style Server-Sent Events), split at arbitrary
 * positions across parts. Feed each part's payload; counts and generated
 * text are collected as events complete. Bounded by max_event per SSE event.
 *
 * The first non-blank byte decides the framing: '{' or '[' means JSON Lines
 * (DJL/LMI containers stream one JSON object a line, in TGI's shape),
 * anything else SSE. Events are read as TGI (token.text, details with
 * generated_tokens and input_length), OpenAI-style (choices[].delta.content
 * or .text, usage) or an in-band {"error": ...}. "[DONE]" and SSE data that
 * is not JSON are counted as events and otherwise ignored; a line that is not
 * JSON is not an event, so a whole JSON answer merely spread over lines (a
 * JumpStart body) leaves events at 0 for the caller to read it whole. */
typedef struct {
    tg_sse_t sse;
    tg_sm_usage_t usage;
    int64_t events;  /* SSE events with data, JSON lines that parse */
    int mode;        /* 0 undecided, 1 SSE, 2 JSON Lines */
    tg_buf_t line;   /* JSON Lines: the incomplete line, bounded by max_event */
    int err;         /* sticky: a failed feed fails every later one */
    int done;        /* "data: [DONE]" seen */
    char error[256]; /* the message of an in-band error event, "" when none */
} tg_sm_stream_t;

void tg_sm_stream_init(tg_sm_stream_t *s, size_t max_event);
/* Returns 0, TG_ETOOBIG when an event exceeds the bound (sticky), or
 * TG_ENOMEM. */
int tg_sm_stream_feed(tg_sm_stream_t *s, const char *p, size_t n);
/* Bytes held of an incomplete event: non-zero at the end of a stream means
 * it was cut short. */
size_t tg_sm_stream_pending(const tg_sm_stream_t *s);
/* At the end of the stream: a held JSON line that parses whole (a last line
 * without its newline) is read as the last event. Returns the bytes still
 * held after that: non-zero means the stream was cut short. */
size_t tg_sm_stream_finish(tg_sm_stream_t *s);
void tg_sm_stream_free(tg_sm_stream_t *s);

/* Classifies one event-stream message of InvokeEndpointWithResponseStream:
 * returns 0 for a PayloadPart (payload/len set to its bytes; an event of
 * another type gives len 0, to be ignored), 1 for an exception
 * (ModelStreamError, InternalStreamFailure, or a :message-type "error"
 * message: status, code and msg filled from the type and the payload's
 * "Message"), TG_EPROTO when malformed (no :message-type / type header). */
int tg_sm_stream_message(const tg_es_message_t *m, const char **payload, size_t *len, int *status,
                         char *code, size_t codecap, char *msg, size_t msgcap);

/* Maps a SageMaker error (x-amzn-ErrorType or exception name) to the status
 * tollgate answers with: ValidationError 400, ModelError 424,
 * ModelNotReadyException 429, ThrottlingException 429, ServiceUnavailable 503,
 * InternalFailure / InternalDependencyException 500 (the service itself says
 * 530 for the latter), ModelStreamError 424, InternalStreamFailure 500;
 * unknown: upstream_status when 4xx/5xx, else 502. Matching and code as
 * tg_br_error_status. */
int tg_sm_error_status(const char *type, size_t n, int upstream_status, char *code, size_t codecap);

/* The estimate used when a container reports nothing: ceil(bytes / 4). */
int64_t tg_estimate_tokens(int64_t bytes);

#endif

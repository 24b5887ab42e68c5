/* refapi.h - the reference gateway's request and response formats.
 *
 * The reference API (../shared/reference/seed-study.md sections 1-3) takes a
 * body {"inputs", "parameters", "tool_config", "additional_model_fields",
 * "textToImageParams", "text_prompts"} with headers messages_api, streaming
 * and type, and answers one-element JSON arrays ([{"generated_text": ...}],
 * [{"embedding": [...]}], [{"images": [...]}], [{"artifacts": [...]}]).
 * This module turns such a request into one upstream call (which Bedrock
 * operation or SageMaker invocation, with which JSON body) and the
 * upstream's answer, whole or streamed, back into the reference's shape, with
 * the provider's own token counts wherever it gives them. Pure functions: no
 * I/O, no configuration, no clock.
 *
 * Where the reference was wrong this follows AWS, not it: exact counts from
 * InvokeModel's x-amzn-bedrock-*-token-count headers and stream metrics
 * instead of len/4; model_arn honoured on every path; inference-profile ids
 * (us., eu., apac., global.) work on the text path by their base model's
 * family; Claude 3 and later, Nova and other models without a text-completion
 * body go through Converse on the text path; numberOfImages counted; image
 * embeddings counted as images, not as base64 "tokens"; tools work when
 * streaming. */
#ifndef TG_PROVIDERS_REFAPI_H
#define TG_PROVIDERS_REFAPI_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"
#include "http/http.h"

typedef enum {
    TG_REF_TEXT = 0,         /* no type header, messages_api false */
    TG_REF_MESSAGES,         /* messages_api: true */
    TG_REF_EMBEDDINGS,       /* type: embeddings */
    TG_REF_EMBEDDINGS_IMAGE, /* type: embeddings-image */
    TG_REF_IMAGE,            /* type: image */
} tg_ref_mode_t;

/* How the upstream answer is read. */
typedef enum {
    TG_REF_OUT_CONVERSE = 0,   /* Converse / ConverseStream */
    TG_REF_OUT_ANTHROPIC_TEXT, /* {"completion"} (Claude v2, v2.1, Instant) */
    TG_REF_OUT_ANTHROPIC_MSG,  /* Anthropic Messages on InvokeModel: content[].text */
    TG_REF_OUT_TITAN_TEXT,     /* {"results": [{"outputText"}]}; stream chunks {"outputText"} */
    TG_REF_OUT_META,           /* {"generation"} */
    TG_REF_OUT_MISTRAL,        /* {"outputs": [{"text"}]} */
    TG_REF_OUT_COHERE,      /* {"generations": [{"text"}]}; stream chunks {"text", "is_finished"} */
    TG_REF_OUT_AI21,        /* {"completions": [{"data": {"text"}}]} */
    TG_REF_OUT_TITAN_EMBED, /* {"embedding": [...]} */
    TG_REF_OUT_COHERE_EMBED, /* {"embeddings": [[...]]}: the first */
    TG_REF_OUT_TITAN_IMAGE,  /* {"images": [...]} */
    TG_REF_OUT_STABILITY,    /* {"artifacts": [...]} */
    TG_REF_OUT_SM_TEXT,      /* SageMaker TGI [{"generated_text"}] or {"generated_text"} */
    TG_REF_OUT_SM_MESSAGES,  /* SageMaker messages: choices[0].message.content */
    TG_REF_OUT_SM_EMBED,     /* SageMaker JumpStart {"embedding": [...]} */
} tg_ref_out_t;

typedef struct {
    tg_ref_mode_t mode;
    int stream;    /* the upstream call should stream (polling or SSE) */
    int sagemaker; /* the target is a SageMaker endpoint */
    /* The id whose family decides the body: the request's model_id (a
     * foundation model or inference-profile id). For a model_arn the family
     * still comes from model_id, as in the reference. */
    const char *model_id;
} tg_ref_target_t;

typedef struct {
    int op; /* tg_br_op_t, or tg_sm_op_t when sagemaker */
    tg_ref_out_t out;
    char *body; /* malloc'ed JSON, body_len bytes */
    size_t body_len;
    char inference_component[64]; /* sagemaker: from parameters.InferenceComponentName */
    /* Images asked for (TG_REF_IMAGE): count (numberOfImages, samples, 1 by
     * default), size and quality ("standard"/"premium", from Titan's quality
     * or Stability's steps > 50), for pricing. */
    int64_t images;
    uint32_t width, height;
    int64_t steps;
    char quality[16];
    int64_t max_output;  /* the request's maximum output tokens, 0 when it does not say */
    int64_t input_bytes; /* of the prompt text, for estimates when nothing is counted */
} tg_ref_call_t;

/* Builds the upstream call for body (the reference's JSON body). Returns 0;
 * TG_EINVAL with a message for the client in err (400: "inputs is
 * required", "parameters.foo is not a Converse inference parameter (use
 * additional_model_fields)", "type image is not supported for SageMaker");
 * TG_ENOMEM. c is freed with tg_ref_call_free. */
int tg_ref_build(const tg_ref_target_t *t, const cJSON *body, tg_ref_call_t *c, char *err,
                 size_t errcap);
void tg_ref_call_free(tg_ref_call_t *c);

/* What the upstream reported. */
typedef struct {
    int have; /* counts came from the provider */
    int64_t input, output, cache_read, cache_write;
    int64_t images;       /* images generated, or embedded (embeddings-image) */
    int64_t output_bytes; /* generated text, for estimates */
} tg_ref_usage_t;

/* A whole answer: status 2xx body (and its headers, for InvokeModel's
 * token-count headers) into the reference's one-element array (*out,
 * malloc'ed JSON text, out_len bytes) and usage. Returns 0, or TG_EUPSTREAM
 * when the body is not what the model returns (err says what). */
int tg_ref_parse(const tg_ref_call_t *c, const char *body, size_t len, const tg_header_t *h,
                 size_t nh, tg_ref_usage_t *u, char **out, size_t *out_len, char *err,
                 size_t errcap);

/* A streamed answer, event by event. For Bedrock, feed each event-stream
 * message's :event-type and payload (InvokeModelWithResponseStream "chunk"
 * payloads {"bytes": base64} are decoded here; ConverseStream events as they
 * are); for SageMaker, each PayloadPart's bytes. Text deltas are collected
 * (and handed back for SSE), ConverseStream tool uses assembled
 * (contentBlockStart toolUse + contentBlockDelta toolUse.input pieces), and
 * the final counts taken from amazon-bedrock-invocationMetrics or
 * metadata.usage. */
typedef struct {
    const tg_ref_call_t *c;
    tg_buf_t text;       /* all generated text so far (bounded) */
    cJSON *tools;        /* [{"toolUse": {...}}] or NULL */
    tg_buf_t tool_input; /* the input JSON of the tool use being streamed */
    tg_ref_usage_t usage;
    int done; /* the model said it finished */
    void *sm; /* SageMaker stream state, private */
} tg_ref_stream_t;

int tg_ref_stream_init(tg_ref_stream_t *s, const tg_ref_call_t *c, size_t max_text);
/* Returns 0 with *delta / *delta_len the new text of this event (possibly
 * empty; it points into s->text, valid until the next feed), TG_EPROTO for
 * an event that cannot be read, TG_EUPSTREAM for a SageMaker container's
 * in-band {"error": ...} event, TG_ETOOBIG past max_text, TG_ENOMEM. Event
 * types it does not read (exceptions included) are ignored. */
int tg_ref_stream_feed(tg_ref_stream_t *s, const char *event_type, const char *payload, size_t len,
                       const char **delta, size_t *delta_len);
/* The final answer in the reference's shape ([{"generated_text": text}], or
 * the tool uses when there were any; *out malloc'ed, out_len bytes) and the
 * usage. TG_EPROTO when a tool use's input pieces do not make JSON. */
int tg_ref_stream_finish(tg_ref_stream_t *s, tg_ref_usage_t *u, char **out, size_t *out_len);
void tg_ref_stream_free(tg_ref_stream_t *s);

#endif

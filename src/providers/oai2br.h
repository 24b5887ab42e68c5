/* oai2br.h - the OpenAI API in front of Bedrock: chat completions as
 * Converse / ConverseStream, embeddings as Titan or Cohere InvokeModel, and
 * their answers back in OpenAI's shapes, so an unmodified OpenAI SDK reaches
 * any Bedrock model. Pure functions: no I/O.
 *
 * Chat: messages (system, developer, user, assistant, tool), content parts
 * (text, image_url with a data: URL -> an image block), tools / tool_choice
 * -> toolConfig, assistant tool_calls -> toolUse blocks, tool messages ->
 * toolResult blocks (consecutive ones merged into one user turn, as Converse
 * requires), max_tokens / max_completion_tokens, temperature, top_p, stop
 * -> inferenceConfig. Fields that ask for what Converse cannot do are
 * refused by name (n > 1, logprobs, top_logprobs, audio, modalities with
 * audio, prediction, logit_bias, functions / function_call, nonzero
 * frequency / presence penalties, reasoning_effort, web_search_options,
 * response_format json_object / json_schema); their no-op values (n 1,
 * logprobs false, logit_bias {}) pass. Fields that only label or route the
 * request (model, user, metadata, store, seed, service_tier,
 * parallel_tool_calls, stream_options) and unknown ones are ignored, as
 * LiteLLM does. Answers: choices[0].message (text blocks joined, content
 * null when there are only tool uses; tool_calls with JSON-string
 * arguments), finish_reason (end_turn/stop_sequence -> stop, max_tokens /
 * model_context_window_exceeded -> length, tool_use -> tool_calls,
 * guardrail_intervened / content_filtered -> content_filter, anything else
 * -> stop), usage (prompt_tokens = input + cache read + cache write,
 * completion_tokens, prompt_tokens_details.cached_tokens). */
#ifndef TG_PROVIDERS_OAI2BR_H
#define TG_PROVIDERS_OAI2BR_H

#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "core/core.h"

/* The Converse request for an OpenAI chat request (root), as JSON text in
 * *out (malloc'ed, free()). *stream says whether the client asked to
 * stream; *include_usage whether it also set stream_options.include_usage;
 * *max_output the maxTokens sent (max_completion_tokens over max_tokens), 0
 * when none. System and developer messages become the system blocks, in
 * order, wherever they stand; consecutive turns of one role are merged.
 * tool_choice "none" leaves toolConfig out, except when the history holds
 * tool blocks (Converse refuses those without it): then the tools go
 * without a toolChoice and the model may still call one. Returns 0, or
 * TG_EINVAL with a message naming the field in err ("messages[2].content[0]
 * .type 'input_audio' is not supported for Bedrock models"), or TG_ENOMEM;
 * on error *out is NULL and the flags 0. root is not changed. */
int tg_oai2br_chat_request(const cJSON *root, char **out, size_t *out_len, int *stream,
                           int *include_usage, int64_t *max_output, char *err, size_t errcap);

/* A whole Converse answer as an OpenAI chat.completion (id, created, model
 * as given; *out malloc'ed, free()). Bedrock's token counts into *in,
 * *outp, *cache_read, *cache_write (0 when the answer has none). Returns
 * 0, TG_EUPSTREAM (err says why) when the body is not a Converse answer
 * with output.message.content, or TG_ENOMEM. */
int tg_oai2br_chat_response(const char *body, size_t len, const char *id, int64_t created,
                            const char *model, char **out, size_t *out_len, int64_t *in,
                            int64_t *outp, int64_t *cache_read, int64_t *cache_write, char *err,
                            size_t errcap);

/* ConverseStream events to chat.completion.chunk SSE events. Feed each
 * event's :event-type and JSON payload; the SSE text for the client
 * ("data: {...}\n\n", possibly several or none) is appended to out. The
 * first chunk carries the role; tool uses become tool_calls deltas (index,
 * id, function.name, then argument pieces); messageStop gives the
 * finish_reason chunk; metadata the usage (kept, see finish). Each chunk
 * has "usage": null when include_usage is set, no usage key otherwise.
 * Returns 0; TG_EPROTO when a known event's payload is not a JSON object,
 * or a toolUse piece comes with no tool use open; TG_ETOOBIG / TG_ENOMEM.
 * A failed call leaves s and out as they were. Events it does not read
 * (exceptions included: see tg_br_stream_event) are ignored. id and model
 * are copied, truncated to the fields below. */
typedef struct {
    char id[48];
    char model[160];
    int64_t created;
    int include_usage; /* the client asked for the usage chunk */
    int started;       /* the role chunk was sent */
    int tool_index;    /* next tool_calls index */
    int in_tool;       /* a toolUse block is open */
    int64_t in, out, cache_read, cache_write;
    int have_usage;
    int finished; /* messageStop seen */
    char finish_reason[24];
} tg_oai2br_stream_t;

void tg_oai2br_stream_init(tg_oai2br_stream_t *s, const char *id, int64_t created,
                           const char *model, int include_usage);
int tg_oai2br_stream_feed(tg_oai2br_stream_t *s, const char *event_type, const char *payload,
                          size_t len, tg_buf_t *out);
/* The end: the usage chunk (choices: []) when the client asked for it
 * (zeros when no metadata event came), and "data: [DONE]\n\n" (when done
 * is set; the caller may hold it back). */
int tg_oai2br_stream_finish(tg_oai2br_stream_t *s, tg_buf_t *out, int done);

/* Embeddings: OpenAI {"model", "input": string | [strings], "dimensions"?,
 * "encoding_format"?} into one InvokeModel body per call. Titan takes one
 * text per call, so *ncalls is the number of inputs and bodies[i] each's
 * body; Cohere takes them all at once (*ncalls 1, input_type
 * "search_document"). family is "titan" or "cohere" (from the model id).
 * bodies (malloc'ed) are freed with tg_oai2br_embed_free. TG_EINVAL (err
 * says why) for token-id or empty input, over 256 inputs (Titan: one call each, made in turn) or 96
 * (Cohere), dimensions other than 256 / 512 / 1024 (Titan v2; v1 takes none
 * and Bedrock refuses it) or any dimensions for Cohere, encoding_format
 * other than float / base64, another family; TG_ENOMEM. */
int tg_oai2br_embed_request(const cJSON *root, const char *family, char ***bodies, size_t *ncalls,
                            char *err, size_t errcap);
void tg_oai2br_embed_free(char **bodies, size_t n);
/* Assembles the OpenAI {"object":"list","data":[{"object":"embedding","index",
 * "embedding"}],"model","usage":{"prompt_tokens","total_tokens"}} from the
 * call answers (Titan: one body per input; Cohere: one with all vectors)
 * and their input token counts: prompt_tokens, or when it is negative the
 * sum of the Titan answers' inputTextTokenCount. base64 (the request's
 * encoding_format "base64") packs the floats as little-endian float32 in
 * base64, as OpenAI does. *out is malloc'ed (free()). TG_EUPSTREAM when an
 * answer has no vector of numbers, TG_ENOMEM. */
int tg_oai2br_embed_response(const char *family, const char *const *bodies, const size_t *lens,
                             size_t n, const char *model, int64_t prompt_tokens, int base64,
                             char **out, size_t *out_len, char *err, size_t errcap);

#endif

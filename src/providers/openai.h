/* openai.h - the OpenAI-compatible provider family (vLLM, llama.cpp server,
 * Ollama, OpenAI): usage extraction and token estimates.
 *
 * OpenAI's prompt_tokens include cached prompt tokens; tollgate keeps them
 * apart, so input_tokens is the uncached part and cache_read_tokens the
 * cached part, each priced at its own rate. */
#ifndef TG_PROVIDER_OPENAI_H
#define TG_PROVIDER_OPENAI_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "usage/usage.h"

/* Reads obj.usage into ev's token fields. Returns 1 when obj carried a usage
 * object, 0 when not (ev untouched). */
int tg_openai_usage(const cJSON *obj, tg_usage_event_t *ev);
/* The same from a whole response body: only its top-level "usage" value is
 * parsed (a completion's text is skipped, not copied into a tree); the body
 * is parsed whole only when it is not plainly a well-formed object. */
int tg_openai_usage_body(const char *body, size_t len, tg_usage_event_t *ev);

/* A rough input-token estimate (4 characters a token) from a chat request's
 * messages, for calls that end before the provider reports its counts. */
int64_t tg_openai_estimate_input(const cJSON *messages);

/* Whether an SSE data payload of a chat.completion.chunk carries usage,
 * judged without parsing (the common chunk has no "usage" or "usage":null). */
int tg_openai_chunk_has_usage(const char *data, size_t len);
/* Whether the chunk carries generated text (for estimates). */
int tg_openai_chunk_has_content(const char *data, size_t len);

#endif

/* usage.h - the usage event: one per upstream call, the unit of billing.
 *
 * Fixed-size fields so an event can be queued and copied without pointers.
 * Token counts come from the provider's own report (token_source PROVIDER)
 * or, when the provider never said (an abandoned stream, a container that
 * does not count), an estimate marked ESTIMATED. Money is integer: costs are
 * in picodollars (10^-12 USD), never floating point. */
#ifndef TG_USAGE_H
#define TG_USAGE_H

#include <stdint.h>

enum { TG_TOKENS_PROVIDER = 0, TG_TOKENS_ESTIMATED = 1 };

/* How the call ended, as recorded. */
#define TG_OUTCOME_OK             "ok"             /* response fully delivered */
#define TG_OUTCOME_UPSTREAM_ERROR "upstream_error" /* upstream answered non-2xx */
#define TG_OUTCOME_FAILED         "failed"         /* could not reach upstream / timed out */
#define TG_OUTCOME_ABANDONED      "abandoned"      /* the client went away mid-call */
#define TG_OUTCOME_INTERRUPTED    "interrupted"    /* upstream broke off mid-stream */

typedef struct tg_usage_event {
    char id[40];         /* "evt_" + 32 hex */
    char request_id[40]; /* also sent to the client as x-request-id */
    int64_t started_ms;  /* unix ms */
    int64_t ended_ms;
    char unit[64];
    char team[64];
    char key_id[40];
    char model[128]; /* public model id the client asked for */
    char upstream_model[160];
    char provider[64]; /* provider name from config */
    char region[32];
    char api[32]; /* "openai.chat", "openai.models", ... */
    int streamed;
    int status;       /* HTTP status sent to the client */
    char outcome[16]; /* TG_OUTCOME_* */
    int64_t input_tokens;
    int64_t output_tokens;
    int64_t cache_read_tokens;
    int64_t cache_write_tokens;
    int64_t images;
    /* Generated images' size and quality, which pick their price ("" /
     * 0 when not an image call; quality "standard", "premium", ...). */
    int64_t image_width, image_height, image_steps;
    char image_quality[16];
    int token_source;   /* TG_TOKENS_* */
    int64_t cost_input; /* picodollars */
    int64_t cost_output;
    int64_t cost_cache_read;
    int64_t cost_cache_write;
    int64_t cost_images;
    int64_t cost_total;
    char price_version[32]; /* the exact price used (tg_price_t.version), "none" */
    int unpriced;           /* 1: no price for some or all of it (that part cost 0) */
    int over_budget;        /* 1: admitted past a soft budget (allowed and flagged) */
    int64_t latency_us;     /* request start to response end */
    int64_t ttfb_us;        /* request start to first upstream byte */
} tg_usage_event_t;

#endif

/* cost.h - what a usage event cost, in exact integer picodollars.
 *
 * Each part (input, output, cache read, cache write, images) is its count
 * times its price, computed in 128 bits and checked to fit; the total is the
 * sum of the parts, checked too. No floating point anywhere. A part that has
 * tokens but no price counts zero and marks the event unpriced; so does an
 * event whose model has no price at all, which is still recorded, never
 * dropped. */
#ifndef TG_USAGE_COST_H
#define TG_USAGE_COST_H

#include <stddef.h>
#include <stdint.h>

#include "usage/prices.h"
#include "usage/usage.h"

/* Which image price applies: the smallest "WxH" size the image fits in (else
 * "larger"), at this quality (NULL: "standard"). */
typedef struct {
    uint32_t width, height;
    const char *quality;
} tg_image_spec_t;

typedef struct {
    int64_t input, output, cache_read, cache_write, images, total; /* picodollars */
    int unpriced; /* some part with a count had no price */
} tg_cost_t;

/* The reference's rule: more than 50 diffusion steps is "premium". */
const char *tg_image_quality_from_steps(int64_t steps);

/* The image price for spec (NULL: the entry's first, its default); NULL when
 * the entry has none that fits. */
const tg_image_price_t *tg_cost_image_price(const tg_price_t *p, const tg_image_spec_t *spec);

/* Prices the counts with p (NULL: nothing priced, every count unpriced).
 * Returns 0, TG_EINVAL for a negative count, TG_ETOOBIG when a part or the
 * total does not fit in 64 bits (out is then zeroed and unpriced). */
int tg_cost_compute(const tg_price_t *p, int64_t input, int64_t output, int64_t cache_read,
                    int64_t cache_write, int64_t images, const tg_image_spec_t *spec,
                    tg_cost_t *out);

/* Prices ev: the first of keys (book keys, most specific first; NULL or ""
 * entries skipped) with a price for ev->region at ev->started_ms. Fills the
 * cost fields, price_version ("none" when unpriced entirely) and unpriced.
 * Returns what tg_cost_compute returned (0 when no price was found). */
int tg_cost_event(const tg_prices_t *book, const char *const *keys, size_t nkeys,
                  tg_usage_event_t *ev);

/* Writes pico / 10^12 as an exact decimal with trailing zeros trimmed
 * ("0.000123", "12", "-0.5"). Returns the length, or TG_ETOOBIG when cap is
 * too small (27 bytes always suffice). */
int tg_usd_format(int64_t pico, char *out, size_t cap);

#endif

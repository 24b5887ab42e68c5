/* cost.c - exact cost arithmetic for usage events (see cost.h).
 *
 * Products go through unsigned __int128 so tokens (up to 2^63) times a price
 * (up to 10^18 picodollars) cannot wrap; anything that does not fit the
 * int64 columns is an error, never a silently wrong number. */
#include "usage/cost.h"

#include <stdio.h>
#include <string.h>

#include "core/core.h"

const char *tg_image_quality_from_steps(int64_t steps)
{
    return steps > 50 ? "premium" : "standard";
}

const tg_image_price_t *tg_cost_image_price(const tg_price_t *p, const tg_image_spec_t *spec)
{
    if (!p || !p->nimages) return NULL;
    if (!spec) return &p->images[0];
    const char *q = spec->quality && *spec->quality ? spec->quality : "standard";
    const tg_image_price_t *best = NULL, *larger = NULL;
    for (size_t i = 0; i < p->nimages; i++) {
        const tg_image_price_t *im = &p->images[i];
        if (strcmp(im->quality, q) != 0) continue;
        if (!im->max_w) {
            larger = im;
        } else if (spec->width <= im->max_w && spec->height <= im->max_h &&
                   (!best ||
                    (uint64_t)im->max_w * im->max_h < (uint64_t)best->max_w * best->max_h)) {
            best = im;
        }
    }
    return best ? best : larger;
}

/* count * price into *out; returns 0, or TG_ETOOBIG when it does not fit. */
static int part(int64_t count, int64_t price, int64_t *out, int *unpriced)
{
    *out = 0;
    if (count == 0) return 0;
    if (price == TG_PRICE_NONE) {
        *unpriced = 1;
        return 0;
    }
    unsigned __int128 v = (unsigned __int128)(uint64_t)count * (uint64_t)price;
    if (v > (unsigned __int128)INT64_MAX) return TG_ETOOBIG;
    *out = (int64_t)v;
    return 0;
}

int tg_cost_compute(const tg_price_t *p, int64_t input, int64_t output, int64_t cache_read,
                    int64_t cache_write, int64_t images, const tg_image_spec_t *spec,
                    tg_cost_t *out)
{
    memset(out, 0, sizeof(*out));
    if (input < 0 || output < 0 || cache_read < 0 || cache_write < 0 || images < 0)
        return TG_EINVAL;
    if (!p) {
        out->unpriced = input || output || cache_read || cache_write || images;
        return 0;
    }
    const tg_image_price_t *im = images ? tg_cost_image_price(p, spec) : NULL;
    int u = 0, rc = 0;
    if ((rc = part(input, p->input, &out->input, &u)) ||
        (rc = part(output, p->output, &out->output, &u)) ||
        (rc = part(cache_read, p->cache_read, &out->cache_read, &u)) ||
        (rc = part(cache_write, p->cache_write, &out->cache_write, &u)) ||
        (rc = part(images, im ? im->pico : TG_PRICE_NONE, &out->images, &u))) {
        memset(out, 0, sizeof(*out));
        out->unpriced = 1;
        return rc;
    }
    unsigned __int128 t = (unsigned __int128)(uint64_t)out->input + (uint64_t)out->output +
                          (uint64_t)out->cache_read + (uint64_t)out->cache_write +
                          (uint64_t)out->images;
    if (t > (unsigned __int128)INT64_MAX) {
        memset(out, 0, sizeof(*out));
        out->unpriced = 1;
        return TG_ETOOBIG;
    }
    out->total = (int64_t)t;
    out->unpriced = u;
    return 0;
}

int tg_cost_event(const tg_prices_t *book, const char *const *keys, size_t nkeys,
                  tg_usage_event_t *ev)
{
    const tg_price_t *p = NULL;
    for (size_t i = 0; i < nkeys && !p; i++)
        if (keys[i] && *keys[i]) p = tg_prices_find(book, keys[i], ev->region, ev->started_ms);
    tg_cost_t c;
    tg_image_spec_t spec = {(uint32_t)ev->image_width, (uint32_t)ev->image_height,
                            ev->image_quality[0] ? ev->image_quality : NULL};
    int rc =
        tg_cost_compute(p, ev->input_tokens, ev->output_tokens, ev->cache_read_tokens,
                        ev->cache_write_tokens, ev->images, ev->image_width > 0 ? &spec : NULL, &c);
    if (rc) c.unpriced = 1;
    ev->cost_input = c.input;
    ev->cost_output = c.output;
    ev->cost_cache_read = c.cache_read;
    ev->cost_cache_write = c.cache_write;
    ev->cost_images = c.images;
    ev->cost_total = c.total;
    /* A call with no price at all is flagged even when it counted nothing. */
    ev->unpriced = !p || c.unpriced;
    tg_strlcpy(ev->price_version, p ? p->version : "none", sizeof(ev->price_version));
    return rc;
}

int tg_usd_format(int64_t pico, char *out, size_t cap)
{
    /* "-" whole "." up to 12 digits of fraction without trailing zeros;
     * by hand: it runs for every response (x-tollgate-cost-usd). */
    char buf[40], *o = buf;
    uint64_t m = pico < 0 ? (uint64_t)0 - (uint64_t)pico : (uint64_t)pico;
    uint64_t whole = m / 1000000000000ull, frac = m % 1000000000000ull;
    if (pico < 0) *o++ = '-';
    o += tg_u64_dec(o, whole);
    if (frac) {
        char f[12];
        for (int i = 11; i >= 0; i--, frac /= 10)
            f[i] = (char)('0' + frac % 10);
        size_t k = 12;
        while (f[k - 1] == '0')
            k--;
        *o++ = '.';
        memcpy(o, f, k);
        o += k;
    }
    size_t len = (size_t)(o - buf);
    if (len + 1 > cap) return TG_ETOOBIG;
    memcpy(out, buf, len);
    out[len] = '\0';
    return (int)len;
}

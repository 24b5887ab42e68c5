/* prices.h - the price book: what a model costs, per region, from a date on.
 *
 * Loaded once from JSON files (the shipped data/prices.json, then the
 * operator's overrides, then the routes' own prices from the config), checked
 * entry by entry, and never changed afterwards: the loaded book is immutable
 * and shared by every thread, and a lookup allocates nothing.
 *
 * Prices are written as decimal strings ("3.00" USD per million tokens,
 * "0.008" USD per image) and held as integers: picodollars (10^-12 USD) per
 * token or per image. A price finer than that, negative, or written as a JSON
 * number is refused with a message naming the entry. Each (model, region) has
 * a history of prices, each from its effective_from (UTC) on; a lookup takes
 * the event's start time. */
#ifndef TG_USAGE_PRICES_H
#define TG_USAGE_PRICES_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#define TG_PRICE_NONE       (-1)      /* this part has no price */
#define TG_PRICE_ALWAYS     INT64_MIN /* effective_ms of an entry without a date */
#define TG_PRICE_MAX_IMAGES 16
#define TG_PRICE_ROUTE      "route:" /* book key prefix of a route's own price */

typedef struct {
    char size[16];    /* "WxH" (images up to that size) or "larger" */
    char quality[24]; /* "standard", "premium", ... */
    uint32_t max_w;   /* 0 for "larger" */
    uint32_t max_h;
    int64_t pico; /* picodollars per image */
} tg_image_price_t;

typedef struct {
    char model[160];      /* a model id, or TG_PRICE_ROUTE + route id */
    char region[32];      /* "*" matches any region */
    int64_t effective_ms; /* unix ms, or TG_PRICE_ALWAYS */
    char effective[24];   /* as written, "" when always */
    /* Picodollars per token, or TG_PRICE_NONE. */
    int64_t input, output, cache_read, cache_write;
    tg_image_price_t images[TG_PRICE_MAX_IMAGES]; /* the first is the default */
    size_t nimages;
    char version[32]; /* stored as the event's price_version: BOOKVERSION[@YYYYMMDD[THHMMSSZ]] */
    char source[320];
    char as_of[16];
    char origin[96]; /* "data/prices.json entries[3]" or "models[2].price", for messages */
} tg_price_t;

typedef struct tg_prices tg_prices_t;

/* A route's own price from the config: v is the "price" object (or an array
 * of them, each with its effective_from); path names it in errors. */
typedef struct {
    const char *route_id;
    const cJSON *v;
    const char *path;
} tg_route_price_t;

/* Loads files in order (a (model, region) named in a later file replaces its
 * whole history from earlier ones), then the routes' prices. nfiles may be 0
 * (an empty book). On error returns TG_ECONFIG (or TG_ENOMEM) with a message
 * naming the file and entry in err. *out is freed with tg_prices_free. */
int tg_prices_load(tg_prices_t **out, const char *const *files, size_t nfiles,
                   const tg_route_price_t *routes, size_t nroutes, char *err, size_t errcap);
void tg_prices_free(tg_prices_t *b);

/* The price of model in region at at_ms: the entry with the latest
 * effective_from not after at_ms, for this region, else for region "*".
 * NULL when there is none. Allocates nothing. */
const tg_price_t *tg_prices_find(const tg_prices_t *b, const char *model, const char *region,
                                 int64_t at_ms);

/* Every entry, sorted by model, region, effective_from (for listings). */
size_t tg_prices_count(const tg_prices_t *b);
const tg_price_t *tg_prices_at(const tg_prices_t *b, size_t i);

/* Parses a non-negative decimal string with at most `scale` decimals (extra
 * trailing zeros allowed) into value * 10^scale. Returns NULL, or a message
 * saying what is wrong ("is negative", "has more than 6 decimals ..."). */
const char *tg_price_parse_decimal(const char *s, unsigned scale, int64_t *out);
/* Parses "YYYY-MM-DD" or "YYYY-MM-DDTHH:MM[:SS]Z" (UTC) into unix ms.
 * Returns 0 or TG_EINVAL. */
int tg_price_parse_time(const char *s, int64_t *ms);

#endif

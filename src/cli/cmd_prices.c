/* cmd_prices.c - tollgate prices show: what the loaded price book charges.
 *
 *   tollgate prices show --config FILE [--model M] [--region R] [--at TIME] [--all]
 *
 * Prints, per model and region, the price in force at TIME (default now;
 * "YYYY-MM-DD", "YYYY-MM-DDTHH:MM[:SS]Z" or unix milliseconds), or with --all
 * every dated entry. --model takes a model id, a Bedrock inference profile or
 * ARN (shown as its base model) or a route id with its own price. Token
 * prices are USD per million tokens, image prices USD per image, exact. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "config/config.h"
#include "core/core.h"
#include "providers/bedrock.h"
#include "usage/cost.h"

static const char prices_usage[] =
    "usage: tollgate prices show --config FILE [--model M] [--region R] [--at TIME] [--all]\n";

/* picodollars per token as USD per million tokens, exact, at least 2 decimals. */
static void per_million(int64_t pico, char *out, size_t cap)
{
    if (pico == TG_PRICE_NONE) {
        snprintf(out, cap, "-");
        return;
    }
    char f[8];
    snprintf(f, sizeof(f), "%06lld", (long long)(pico % 1000000));
    size_t k = 6;
    while (k > 2 && f[k - 1] == '0')
        k--;
    f[k] = '\0';
    snprintf(out, cap, "%lld.%s", (long long)(pico / 1000000), f);
}

static int wanted(const tg_price_t *p, const char *const *models, size_t nm, const char *region)
{
    int ok = nm == 0;
    for (size_t i = 0; i < nm && !ok; i++)
        ok = models[i] && strcmp(p->model, models[i]) == 0;
    return ok && (!region || strcmp(p->region, region) == 0 || strcmp(p->region, "*") == 0);
}

int tg_cmd_prices(int argc, char **argv)
{
    const char *config = NULL, *model = NULL, *region = NULL, *at = NULL;
    int all = 0;
    if (argc < 1 || strcmp(argv[0], "show") != 0) {
        fputs(prices_usage, stderr);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        const char **slot = strcmp(argv[i], "--config") == 0   ? &config
                            : strcmp(argv[i], "--model") == 0  ? &model
                            : strcmp(argv[i], "--region") == 0 ? &region
                            : strcmp(argv[i], "--at") == 0     ? &at
                                                               : NULL;
        if (slot && i + 1 < argc) {
            *slot = argv[++i];
        } else if (strcmp(argv[i], "--all") == 0) {
            all = 1;
        } else {
            fprintf(stderr, "tollgate: prices: bad option %s\n%s", argv[i], prices_usage);
            return 2;
        }
    }
    if (!config) {
        fprintf(stderr, "tollgate: --config FILE is required\n%s", prices_usage);
        return 2;
    }
    int64_t at_ms = tg_wall_ms();
    if (at) {
        char *end;
        long long v = strtoll(at, &end, 10);
        if (*at && !*end && v >= 0)
            at_ms = v;
        else if (tg_price_parse_time(at, &at_ms)) {
            fprintf(stderr,
                    "tollgate: --at must be YYYY-MM-DD, YYYY-MM-DDTHH:MM[:SS]Z or unix ms\n");
            return 2;
        }
    }
    char err[512];
    tg_config_t *cfg;
    if (tg_config_load(&cfg, config, err, sizeof(err))) {
        fprintf(stderr, "tollgate: config error: %s\n", err);
        return 2;
    }
    /* The keys a call to `model` is priced under (see tg_api_price_event). */
    char route_key[sizeof(((tg_price_t *)0)->model)] = "";
    tg_br_model_t bm;
    const char *keys[3] = {model, NULL, NULL};
    size_t nk = model ? 1 : 0;
    if (model && tg_br_model_parse(model, strlen(model), &bm) == 0 && bm.base_model[0])
        keys[nk++] = bm.base_model;
    if (model) {
        snprintf(route_key, sizeof(route_key), TG_PRICE_ROUTE "%s", model);
        keys[nk++] = route_key;
    }
    const tg_prices_t *b = cfg->prices;
    printf("price book: %s%s\n", cfg->prices_path ? cfg->prices_path : "(none)",
           cfg->nprice_overrides ? " + overrides" : "");
    printf("%-46s %-14s %-20s %10s %10s %10s %11s  %-24s %s\n", "MODEL", "REGION", "EFFECTIVE_FROM",
           "INPUT/1M", "OUTPUT/1M", "CREAD/1M", "CWRITE/1M", "VERSION", "IMAGES (USD each)");
    size_t shown = 0;
    for (size_t i = 0; i < tg_prices_count(b); i++) {
        const tg_price_t *p = tg_prices_at(b, i);
        if (!wanted(p, keys, nk, region)) continue;
        if (!all && tg_prices_find(b, p->model, p->region, at_ms) != p) continue;
        char in[32], out[32], cr[32], cw[32], imgs[512] = "";
        per_million(p->input, in, sizeof(in));
        per_million(p->output, out, sizeof(out));
        per_million(p->cache_read, cr, sizeof(cr));
        per_million(p->cache_write, cw, sizeof(cw));
        size_t k = 0;
        for (size_t j = 0; j < p->nimages && k < sizeof(imgs); j++) {
            char usd[32];
            tg_usd_format(p->images[j].pico, usd, sizeof(usd));
            int w = snprintf(imgs + k, sizeof(imgs) - k, "%s%s/%s=%s", j ? " " : "",
                             p->images[j].size, p->images[j].quality, usd);
            k += w > 0 ? (size_t)w : 0;
        }
        printf("%-46s %-14s %-20s %10s %10s %10s %11s  %-24s %s\n", p->model, p->region,
               p->effective[0] ? p->effective : "-", in, out, cr, cw, p->version, imgs);
        shown++;
    }
    if (!shown) printf("(no prices match)\n");
    tg_config_free(cfg);
    return 0;
}

/* prices.c - loading, checking and looking up the price book.
 *
 * Every entry of every file is expanded to one record per region and checked
 * (decimal strings parsed exactly, dates parsed as UTC, no duplicate date for
 * a (model, region) within a file). The records are then sorted by model,
 * region and date, so a lookup is a binary search plus a short scan over one
 * (model, region)'s history, with no allocation. Overrides work per (model,
 * region): the latest file that names a pair owns its whole history. */
#include "usage/prices.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

#define TOKEN_SCALE   6  /* USD per million tokens -> picodollars per token */
#define IMAGE_SCALE   12 /* USD per image -> picodollars per image */
#define MAX_VERSION   14 /* so that VERSION@YYYYMMDDTHHMMSSZ fits price_version */
#define MAX_BOOK_FILE (16u << 20)

struct tg_prices {
    tg_price_t *v; /* sorted by model, region, effective_ms */
    size_t n;
};

typedef struct {
    tg_price_t p;
    size_t file; /* which source (files, then the routes) */
    size_t entry;
} rec_t;

typedef struct {
    rec_t *v;
    size_t n, cap;
    char *err;
    size_t errcap;
} loader_t;

static int failf(loader_t *L, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int failf(loader_t *L, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(L->err, L->errcap, fmt, ap);
    va_end(ap);
    return TG_ECONFIG;
}

/* ---- exact decimals and dates ---------------------------------------------- */

const char *tg_price_parse_decimal(const char *s, unsigned scale, int64_t *out)
{
    if (!s || !*s) return "is empty";
    if (*s == '-') return "is negative";
    const char *p = s;
    int64_t ip = 0;
    int idigits = 0;
    while (*p >= '0' && *p <= '9') {
        /* 10^18 / 10^scale bounds the integer part so the scaled value fits. */
        if (++idigits > 18 - (int)scale) return "is too large";
        ip = ip * 10 + (*p++ - '0');
    }
    if (idigits == 0) return "is not a decimal string like \"3.00\"";
    int64_t frac = 0;
    unsigned fd = 0;
    if (*p == '.') {
        p++;
        if (!(*p >= '0' && *p <= '9')) return "is not a decimal string like \"3.00\"";
        for (; *p >= '0' && *p <= '9'; p++) {
            if (fd < scale) {
                frac = frac * 10 + (*p - '0');
                fd++;
            } else if (*p != '0') {
                return scale == TOKEN_SCALE
                           ? "has more than 6 decimals (finer than a picodollar per token)"
                           : "has more than 12 decimals (finer than a picodollar)";
            }
        }
    }
    if (*p) return "is not a decimal string like \"3.00\"";
    for (; fd < scale; fd++)
        frac *= 10;
    int64_t mul = 1;
    for (unsigned i = 0; i < scale; i++)
        mul *= 10;
    *out = ip * mul + frac;
    return NULL;
}

int tg_price_parse_time(const char *s, int64_t *ms)
{
    int y, mo, d, h = 0, mi = 0, se = 0;
    size_t n = s ? strlen(s) : 0;
    if (n < 10 || tg_parse_digits(s, 4, &y) || s[4] != '-' || tg_parse_digits(s + 5, 2, &mo) ||
        s[7] != '-' || tg_parse_digits(s + 8, 2, &d))
        return TG_EINVAL;
    if (n > 10) {
        if (s[10] != 'T' || n < 17 || tg_parse_digits(s + 11, 2, &h) || s[13] != ':' ||
            tg_parse_digits(s + 14, 2, &mi))
            return TG_EINVAL;
        size_t k = 16;
        if (s[k] == ':') {
            if (n < 19 || tg_parse_digits(s + 17, 2, &se)) return TG_EINVAL;
            k = 19;
        }
        if (s[k] != 'Z' || k + 1 != n) return TG_EINVAL;
    }
    static const int mdays[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    int leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && leap) || h > 23 ||
        mi > 59 || se > 59)
        return TG_EINVAL;
    *ms = ((tg_days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60000 + (int64_t)se * 1000;
    return 0;
}

/* ---- entries ------------------------------------------------------------------ */

static int check_fields(loader_t *L, const cJSON *o, const char *where, const char *const *ok)
{
    if (!cJSON_IsObject(o)) return failf(L, "%s: must be an object", where);
    for (const cJSON *it = o->child; it; it = it->next) {
        int found = 0;
        for (const char *const *a = ok; *a && !found; a++)
            found = strcmp(*a, it->string) == 0;
        if (!found) return failf(L, "%s.%s: unknown field", where, it->string);
    }
    return 0;
}

/* Optional string field copied into dst (bounded). */
static int get_text(loader_t *L, const cJSON *o, const char *where, const char *name, char *dst,
                    size_t cap, int required)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v) return required ? failf(L, "%s.%s: is required", where, name) : 0;
    if (!cJSON_IsString(v) || !v->valuestring[0])
        return failf(L, "%s.%s: must be a non-empty string", where, name);
    if (strlen(v->valuestring) >= cap)
        return failf(L, "%s.%s: longer than %zu characters", where, name, cap - 1);
    memcpy(dst, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

static int get_price(loader_t *L, const cJSON *o, const char *where, const char *name,
                     unsigned scale, int64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    *out = TG_PRICE_NONE;
    if (!v) return 0;
    if (cJSON_IsNumber(v))
        return failf(L,
                     "%s.%s: must be a decimal string such as \"3.00\", not a JSON number "
                     "(floating point is not exact)",
                     where, name);
    if (!cJSON_IsString(v)) return failf(L, "%s.%s: must be a decimal string", where, name);
    const char *why = tg_price_parse_decimal(v->valuestring, scale, out);
    if (why) return failf(L, "%s.%s: \"%.40s\" %s", where, name, v->valuestring, why);
    return 0;
}

static int parse_images(loader_t *L, const cJSON *arr, const char *where, tg_price_t *p)
{
    static const char *const fields[] = {"size", "quality", "usd", NULL};
    char w[200];
    if (!cJSON_IsArray(arr)) return failf(L, "%s.images: must be an array", where);
    int i = 0;
    for (const cJSON *it = arr->child; it; it = it->next, i++) {
        snprintf(w, sizeof(w), "%s.images[%d]", where, i);
        if ((size_t)i >= TG_PRICE_MAX_IMAGES)
            return failf(L, "%s: at most %d image prices", w, TG_PRICE_MAX_IMAGES);
        tg_image_price_t *im = &p->images[i];
        int rc = check_fields(L, it, w, fields);
        if (!rc) rc = get_text(L, it, w, "size", im->size, sizeof(im->size), 1);
        if (!rc) rc = get_text(L, it, w, "quality", im->quality, sizeof(im->quality), 1);
        if (!rc) rc = get_price(L, it, w, "usd", IMAGE_SCALE, &im->pico);
        if (rc) return rc;
        if (im->pico == TG_PRICE_NONE) return failf(L, "%s.usd: is required", w);
        if (strcmp(im->size, "larger") != 0) {
            char *x;
            errno = 0;
            unsigned long mw = strtoul(im->size, &x, 10), mh = 0;
            int ok = x != im->size && *x == 'x' && mw > 0 && mw < 100000;
            if (ok) {
                char *y;
                mh = strtoul(x + 1, &y, 10);
                ok = y != x + 1 && !*y && mh > 0 && mh < 100000 && !errno;
            }
            if (!ok) return failf(L, "%s.size: must be \"WIDTHxHEIGHT\" or \"larger\"", w);
            im->max_w = (uint32_t)mw, im->max_h = (uint32_t)mh;
        }
        for (int k = 0; k < i; k++)
            if (strcmp(p->images[k].size, im->size) == 0 &&
                strcmp(p->images[k].quality, im->quality) == 0)
                return failf(L, "%s: size %s, quality %s listed twice", w, im->size, im->quality);
        p->nimages = (size_t)i + 1;
    }
    return 0;
}

static int push(loader_t *L, const rec_t *r)
{
    if (L->n == L->cap) {
        size_t ncap = L->cap ? L->cap * 2 : 256;
        rec_t *v = realloc(L->v, ncap * sizeof(*v));
        if (!v) return TG_ENOMEM;
        L->v = v, L->cap = ncap;
    }
    L->v[L->n++] = *r;
    return 0;
}

static int region_ok(const char *r)
{
    if (strcmp(r, "*") == 0) return 1;
    for (const char *q = r; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-')) return 0;
    return *r != '\0';
}

/* One entry: common fields into r->p, then one record per region. */
static int parse_entry(loader_t *L, const cJSON *e, const char *where, const char *version,
                       int route, rec_t *r)
{
    static const char *const fields[] = {
        "model",       "region", "regions", "effective_from", "input", "output", "cache_read",
        "cache_write", "images", "source",  "as_of",          "note",  NULL};
    static const char *const route_fields[] = {"effective_from", "input",  "output", "cache_read",
                                               "cache_write",    "images", "note",   NULL};
    tg_price_t *p = &r->p;
    int rc = check_fields(L, e, where, route ? route_fields : fields);
    if (!rc && !route) rc = get_text(L, e, where, "model", p->model, sizeof(p->model), 1);
    if (!rc) rc = get_text(L, e, where, "source", p->source, sizeof(p->source), 0);
    if (!rc) rc = get_text(L, e, where, "as_of", p->as_of, sizeof(p->as_of), 0);
    if (!rc) rc = get_text(L, e, where, "effective_from", p->effective, sizeof(p->effective), 0);
    if (rc) return rc;
    p->effective_ms = TG_PRICE_ALWAYS;
    if (p->effective[0] && tg_price_parse_time(p->effective, &p->effective_ms))
        return failf(L,
                     "%s.effective_from: \"%s\" is not YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS]Z (UTC)",
                     where, p->effective);
    int64_t t;
    if (p->as_of[0] && tg_price_parse_time(p->as_of, &t))
        return failf(L, "%s.as_of: \"%s\" is not a date YYYY-MM-DD", where, p->as_of);
    if ((rc = get_price(L, e, where, "input", TOKEN_SCALE, &p->input)) ||
        (rc = get_price(L, e, where, "output", TOKEN_SCALE, &p->output)) ||
        (rc = get_price(L, e, where, "cache_read", TOKEN_SCALE, &p->cache_read)) ||
        (rc = get_price(L, e, where, "cache_write", TOKEN_SCALE, &p->cache_write)))
        return rc;
    const cJSON *imgs = cJSON_GetObjectItemCaseSensitive(e, "images");
    if (imgs && (rc = parse_images(L, imgs, where, p))) return rc;
    if (p->input == TG_PRICE_NONE && p->output == TG_PRICE_NONE && p->cache_read == TG_PRICE_NONE &&
        p->cache_write == TG_PRICE_NONE && !p->nimages)
        return failf(L, "%s: names no price (input, output, cache_read, cache_write or images)",
                     where);
    /* price_version: VERSION, plus @ and the compact date when the entry has one. */
    if (!p->effective[0]) {
        snprintf(p->version, sizeof(p->version), "%s", version);
    } else {
        char compact[24];
        size_t k = 0;
        for (const char *q = p->effective; *q && k + 1 < sizeof(compact); q++)
            if (*q != '-' && *q != ':') compact[k++] = *q;
        compact[k] = '\0';
        snprintf(p->version, sizeof(p->version), "%s@%s", version, compact);
    }
    if (route) {
        snprintf(p->region, sizeof(p->region), "*");
        return push(L, r);
    }
    const cJSON *one = cJSON_GetObjectItemCaseSensitive(e, "region");
    const cJSON *many = cJSON_GetObjectItemCaseSensitive(e, "regions");
    if (!one == !many) return failf(L, "%s: needs exactly one of region or regions", where);
    if (one && !cJSON_IsString(one)) return failf(L, "%s.region: must be a string", where);
    if (many && (!cJSON_IsArray(many) || !many->child))
        return failf(L, "%s.regions: must be a non-empty array of region names", where);
    for (const cJSON *it = one ? one : many->child; it; it = one ? NULL : it->next) {
        if (!cJSON_IsString(it) || strlen(it->valuestring) >= sizeof(p->region) ||
            !region_ok(it->valuestring))
            return failf(L, "%s: region must be a region name such as \"us-east-1\", or \"*\"",
                         where);
        snprintf(p->region, sizeof(p->region), "%s", it->valuestring);
        if ((rc = push(L, r))) return rc;
    }
    return 0;
}

static int load_file(loader_t *L, const char *path, size_t fi)
{
    size_t len = 0;
    errno = 0;
    char *text = tg_read_file(path, MAX_BOOK_FILE, &len);
    if (!text) return failf(L, "%s: cannot read (%s)", path, strerror(errno ? errno : EIO));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return failf(L, "%s: invalid JSON", path);
    static const char *const fields[] = {"version", "description", "entries", NULL};
    char version[MAX_VERSION + 1] = "";
    int rc = check_fields(L, root, path, fields);
    if (!rc) rc = get_text(L, root, path, "version", version, sizeof(version), 1);
    for (const char *q = version; !rc && *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= 'A' && *q <= 'Z') || (*q >= '0' && *q <= '9') ||
              *q == '.' || *q == '-' || *q == '_'))
            rc = failf(L, "%s.version: letters, digits, '.', '-' and '_' only", path);
    const cJSON *entries = cJSON_GetObjectItemCaseSensitive(root, "entries");
    if (!rc && !cJSON_IsArray(entries)) rc = failf(L, "%s.entries: must be an array", path);
    size_t i = 0;
    for (const cJSON *e = entries ? entries->child : NULL; e && !rc; e = e->next, i++) {
        rec_t r;
        memset(&r, 0, sizeof(r));
        r.file = fi, r.entry = i;
        char where[96];
        snprintf(where, sizeof(where), "%s entries[%zu]", path, i);
        snprintf(r.p.origin, sizeof(r.p.origin), "%s", where);
        rc = parse_entry(L, e, where, version, 0, &r);
    }
    cJSON_Delete(root);
    return rc;
}

static int load_route(loader_t *L, const tg_route_price_t *rp, size_t fi)
{
    const cJSON *v = rp->v;
    int arr = cJSON_IsArray(v);
    if (!arr && !cJSON_IsObject(v))
        return failf(L, "%s: must be a price object or an array of them", rp->path);
    size_t i = 0;
    for (const cJSON *e = arr ? v->child : v; e; e = arr ? e->next : NULL, i++) {
        rec_t r;
        memset(&r, 0, sizeof(r));
        r.file = fi, r.entry = i;
        char where[96];
        if (arr)
            snprintf(where, sizeof(where), "%s[%zu]", rp->path, i);
        else
            snprintf(where, sizeof(where), "%s", rp->path);
        snprintf(r.p.origin, sizeof(r.p.origin), "%s", where);
        if (strlen(rp->route_id) + strlen(TG_PRICE_ROUTE) >= sizeof(r.p.model))
            return failf(L, "%s: the route id is too long to price", where);
        snprintf(r.p.model, sizeof(r.p.model), "%s%s", TG_PRICE_ROUTE, rp->route_id);
        int rc = parse_entry(L, e, where, "config", 1, &r);
        if (rc) return rc;
    }
    return 0;
}

/* ---- merge and lookup ----------------------------------------------------------- */

static int key_cmp(const tg_price_t *a, const char *model, const char *region)
{
    int c = strcmp(a->model, model);
    return c ? c : strcmp(a->region, region);
}

static int rec_cmp(const void *pa, const void *pb)
{
    const rec_t *a = pa, *b = pb;
    int c = key_cmp(&a->p, b->p.model, b->p.region);
    if (c) return c;
    if (a->file != b->file) return a->file > b->file ? -1 : 1; /* latest source first */
    if (a->p.effective_ms != b->p.effective_ms)
        return a->p.effective_ms < b->p.effective_ms ? -1 : 1;
    return a->entry < b->entry ? -1 : a->entry > b->entry;
}

int tg_prices_load(tg_prices_t **out, const char *const *files, size_t nfiles,
                   const tg_route_price_t *routes, size_t nroutes, char *err, size_t errcap)
{
    loader_t L = {NULL, 0, 0, err, errcap};
    *out = NULL;
    int rc = 0;
    for (size_t i = 0; i < nfiles && !rc; i++)
        rc = load_file(&L, files[i], i);
    for (size_t i = 0; i < nroutes && !rc; i++)
        rc = load_route(&L, &routes[i], nfiles + i);
    if (!rc && L.n) qsort(L.v, L.n, sizeof(*L.v), rec_cmp);
    tg_prices_t *b = rc ? NULL : calloc(1, sizeof(*b));
    if (!rc && !b) rc = TG_ENOMEM;
    if (!rc && L.n && !(b->v = malloc(L.n * sizeof(*b->v)))) rc = TG_ENOMEM;
    /* Keep, per (model, region), the records of the latest source naming it;
     * within one source a date may appear once. */
    size_t first = 0; /* first record of the current pair: from its latest source */
    for (size_t i = 0; i < L.n && !rc; i++) {
        const rec_t *r = &L.v[i], *prev = i ? &L.v[i - 1] : NULL;
        int same_pair = prev && key_cmp(&prev->p, r->p.model, r->p.region) == 0;
        if (!same_pair) first = i;
        if (same_pair && prev->file == r->file && prev->p.effective_ms == r->p.effective_ms) {
            rc = failf(&L, "%s: model %s, region %s, effective_from %s: also in %s", r->p.origin,
                       r->p.model, r->p.region, r->p.effective[0] ? r->p.effective : "(always)",
                       prev->p.origin);
            break;
        }
        if (L.v[first].file == r->file) b->v[b->n++] = r->p;
    }
    free(L.v);
    if (rc) {
        if (rc == TG_ENOMEM) snprintf(err, errcap, "price book: out of memory");
        tg_prices_free(b);
        return rc;
    }
    *out = b;
    return 0;
}

void tg_prices_free(tg_prices_t *b)
{
    if (!b) return;
    free(b->v);
    free(b);
}

static const tg_price_t *find_in(const tg_prices_t *b, const char *model, const char *region,
                                 int64_t at_ms)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) { /* first record with key >= (model, region) */
        size_t mid = lo + (hi - lo) / 2;
        if (key_cmp(&b->v[mid], model, region) < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    const tg_price_t *best = NULL;
    for (size_t i = lo; i < b->n && key_cmp(&b->v[i], model, region) == 0; i++) {
        if (b->v[i].effective_ms > at_ms) break;
        best = &b->v[i];
    }
    return best;
}

const tg_price_t *tg_prices_find(const tg_prices_t *b, const char *model, const char *region,
                                 int64_t at_ms)
{
    if (!b || !model || !*model) return NULL;
    const tg_price_t *p = region && *region ? find_in(b, model, region, at_ms) : NULL;
    return p ? p : find_in(b, model, "*", at_ms);
}

size_t tg_prices_count(const tg_prices_t *b)
{
    return b ? b->n : 0;
}

const tg_price_t *tg_prices_at(const tg_prices_t *b, size_t i)
{
    return b && i < b->n ? &b->v[i] : NULL;
}

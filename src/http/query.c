/* query.c - reading one parameter of a URL query string. */
#include <string.h>

#include "http/http.h"

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Percent-decodes s[0..n) ('+' is a space) into out; the length, or
 * TG_EINVAL / TG_ETOOBIG. */
static int decode(const char *s, size_t n, char *out, size_t cap)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            int hi = i + 2 < n ? hexval(s[i + 1]) : -1;
            int lo = i + 2 < n ? hexval(s[i + 2]) : -1;
            if (hi < 0 || lo < 0) return TG_EINVAL;
            c = (char)(hi * 16 + lo);
            i += 2;
        }
        if (c == '\0') return TG_EINVAL;
        if (o + 1 >= cap) return TG_ETOOBIG;
        out[o++] = c;
    }
    out[o] = '\0';
    return (int)o;
}

int tg_query_get(const char *query, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *p = query ? query : "";
    while (*p) {
        size_t len = strcspn(p, "&");
        const char *eq = memchr(p, '=', len);
        size_t kl = eq ? (size_t)(eq - p) : len;
        if (kl == nl && memcmp(p, name, nl) == 0) {
            const char *v = eq ? eq + 1 : p + len;
            return decode(v, (size_t)(p + len - v), out, cap);
        }
        p += len;
        if (*p == '&') p++;
    }
    return TG_ENOTFOUND;
}

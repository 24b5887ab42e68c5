/* jsonq.h - JSON helpers shared by the unit tests of the formats
 * (test_oai2br.c, test_refapi.c). JSON there is written with ' for " (see
 * q()), and compared as cJSON prints it, so key order counts. */
#ifndef TG_TEST_JSONQ_H
#define TG_TEST_JSONQ_H

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

/* s with every ' turned into ", malloc'ed. */
static inline char *q(const char *s)
{
    char *r = strdup(s);
    assert_non_null(r);
    for (char *p = r; *p; p++) {
        if (*p == '\'') *p = '"';
    }
    return r;
}

static inline cJSON *jq(const char *s)
{
    char *t = q(s);
    cJSON *j = cJSON_Parse(t);
    free(t);
    assert_non_null(j);
    return j;
}

/* The JSON text as cJSON prints it, for exact comparisons. */
static inline char *norm(const char *s)
{
    cJSON *j = jq(s);
    char *p = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    assert_non_null(p);
    return p;
}

static inline void assert_json(const char *got, size_t got_len, const char *want)
{
    char *w = norm(want);
    assert_non_null(got);
    assert_string_equal(got, w);
    assert_int_equal(got_len, strlen(got));
    free(w);
}

#endif

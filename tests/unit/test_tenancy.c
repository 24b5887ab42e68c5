/* test_tenancy.c - key generation, snapshot authentication and the
 * publication protocol (views holding old snapshots, concurrent readers). */
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "core/core.h"
#include "tenancy/tenancy.h"

static int is_base62(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void test_generate_format(void **state)
{
    enum { N = 2000, W = 64 };
    char(*secrets)[W] = calloc(N, W);
    int seen[256] = {0};
    for (int i = 0; i < N; i++) {
        tg_key_t k;
        memset(&k, 0, sizeof(k));
        char *s = secrets[i];
        assert_int_equal(tg_key_generate(&k, s, W), 0);
        assert_int_equal(strlen(s), 46);
        assert_memory_equal(s, "tg_", 3);
        for (int j = 3; j < 46; j++) {
            assert_true(is_base62(s[j]));
            seen[(unsigned char)s[j]]++;
        }
        assert_int_equal(strlen(k.id), 20);
        assert_memory_equal(k.id, "key_", 4);
        for (int j = 4; j < 20; j++)
            assert_non_null(strchr("0123456789abcdef", k.id[j]));
        assert_int_equal(strlen(k.prefix), TG_KEY_PREFIX_LEN);
        assert_memory_equal(k.prefix, s, TG_KEY_PREFIX_LEN);
        uint8_t h[32];
        tg_key_hash(s, strlen(s), h);
        assert_memory_equal(k.hash, h, 32);
        assert_true(k.created_ms > 0);
    }
    /* Distinct. */
    qsort(secrets, N, W, cmp_str);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(secrets[i - 1], secrets[i]);
    /* 86,000 draws over 62 symbols: chi-square with 61 degrees of freedom
     * has mean 61 and sd 11; 150 is beyond 1e-9 odds for a uniform source.
     * Plain modulo (no rejection) gives 8 symbols a 25% excess: ~500. */
    int symbols = 0;
    double expect = (double)N * 43 / 62, chi2 = 0;
    for (int c = 0; c < 256; c++) {
        if (!seen[c]) continue;
        symbols++;
        chi2 += (seen[c] - expect) * (seen[c] - expect) / expect;
    }
    assert_true(chi2 < 150);
    assert_int_equal(symbols, 62);
    free(secrets);
    /* Too small a buffer is refused, not overrun. */
    tg_key_t k;
    char small[20];
    assert_int_equal(tg_key_generate(&k, small, sizeof(small)), TG_EINVAL);
}

static void test_key_hash_known(void **state)
{
    /* SHA-256("abc"), FIPS 180-2 example. */
    static const uint8_t want[32] = {0xba, 0x78, 0x16, 0xbf, 0x8f, 0x01, 0xcf, 0xea,
                                     0x41, 0x41, 0x40, 0xde, 0x5d, 0xae, 0x22, 0x23,
                                     0xb0, 0x03, 0x61, 0xa3, 0x96, 0x17, 0x7a, 0x9c,
                                     0xb4, 0x10, 0xff, 0x61, 0xf2, 0x00, 0x15, 0xad};
    uint8_t h[32];
    tg_key_hash("abc", 3, h);
    assert_memory_equal(h, want, 32);
}

typedef struct {
    tg_key_t k;
    char secret[TG_KEY_SECRET_MAX];
} made_t;

static void make(made_t *m, const char *team)
{
    memset(m, 0, sizeof(*m));
    assert_int_equal(tg_key_generate(&m->k, m->secret, sizeof(m->secret)), 0);
    snprintf(m->k.team, sizeof(m->k.team), "%s", team);
}

static void test_auth(void **state)
{
    const int64_t now = 1790000000000LL;
    made_t ok, revoked, revoked_later, expired, expires_later;
    make(&ok, "ok");
    make(&revoked, "revoked");
    revoked.k.revoked_ms = now - 1;
    make(&revoked_later, "revoked_later");
    revoked_later.k.revoked_ms = now + 1000;
    make(&expired, "expired");
    expired.k.expires_ms = now; /* expiry instant itself is expired */
    make(&expires_later, "expires_later");
    expires_later.k.expires_ms = now + 1;
    tg_key_t keys[] = {ok.k, revoked.k, revoked_later.k, expired.k, expires_later.k};
    tg_snapshot_t *s = NULL;
    assert_int_equal(tg_snapshot_build(&s, keys, 5), 0);
    assert_int_equal(tg_snapshot_count(s), 5);

    const tg_key_t *k = NULL;
    assert_int_equal(tg_snapshot_auth(s, ok.secret, strlen(ok.secret), now, &k), 0);
    assert_string_equal(k->team, "ok");
    assert_int_equal(tg_snapshot_auth(s, revoked.secret, strlen(revoked.secret), now, &k),
                     TG_EREVOKED);
    assert_string_equal(k->team, "revoked");
    assert_int_equal(
        tg_snapshot_auth(s, revoked_later.secret, strlen(revoked_later.secret), now, &k), 0);
    assert_int_equal(tg_snapshot_auth(s, expired.secret, strlen(expired.secret), now, &k),
                     TG_EEXPIRED);
    assert_int_equal(
        tg_snapshot_auth(s, expires_later.secret, strlen(expires_later.secret), now, &k), 0);
    assert_int_equal(
        tg_snapshot_auth(s, expires_later.secret, strlen(expires_later.secret), now + 1, &k),
        TG_EEXPIRED);

    /* Unknown: another secret, a truncated one, empty, absurdly long. */
    made_t other;
    make(&other, "other");
    k = (const tg_key_t *)&other;
    assert_int_equal(tg_snapshot_auth(s, other.secret, strlen(other.secret), now, &k), TG_EAUTH);
    assert_null(k);
    assert_int_equal(tg_snapshot_auth(s, ok.secret, strlen(ok.secret) - 1, now, &k), TG_EAUTH);
    assert_int_equal(tg_snapshot_auth(s, "", 0, now, &k), TG_EAUTH);
    char big[200];
    memset(big, 'a', sizeof(big));
    assert_int_equal(tg_snapshot_auth(s, big, sizeof(big), now, &k), TG_EAUTH);
    assert_int_equal(tg_snapshot_auth(NULL, ok.secret, strlen(ok.secret), now, &k), TG_EAUTH);
    tg_snapshot_free(s);

    /* Two records for one hash are refused. */
    tg_key_t twice[] = {ok.k, ok.k};
    s = (tg_snapshot_t *)twice;
    assert_int_equal(tg_snapshot_build(&s, twice, 2), TG_EEXIST);
    assert_null(s);
}

/* A connection's memo of its last key: the same verdicts as a lookup, at
 * every instant, without keeping a verdict past its time or generation. */
static void test_auth_memo(void **state)
{
    const int64_t now = 1790000000000LL;
    made_t a, b, rot;
    make(&a, "a");
    a.k.expires_ms = now + 10;
    make(&b, "b");
    /* rot's secret was rotated: the old one works until now + 5 */
    make(&rot, "rot");
    char old[TG_KEY_SECRET_MAX];
    memcpy(old, rot.secret, sizeof(old));
    assert_int_equal(tg_key_generate(&rot.k, rot.secret, sizeof(rot.secret)), 0);
    snprintf(rot.k.team, sizeof(rot.k.team), "rot");
    tg_key_hash(old, strlen(old), rot.k.prev_hash);
    rot.k.prev_expires_ms = now + 5;
    tg_key_t keys[] = {a.k, b.k, rot.k};
    tg_snapshot_t *s = NULL;
    assert_int_equal(tg_snapshot_build(&s, keys, 3), 0);

    tg_key_memo_t m;
    memset(&m, 0, sizeof(m));
    const tg_key_t *k = NULL;
    const tg_principal_t *p = NULL;
    assert_int_equal(tg_snapshot_lookup_memo(s, 7, &m, a.secret, strlen(a.secret), now, &k, &p), 0);
    assert_string_equal(k->team, "a");
    assert_int_equal(m.gen, 7);
    assert_int_equal(m.len, strlen(a.secret));
    /* Remembered: the same answer again, until a's expiry comes. */
    k = NULL;
    assert_int_equal(tg_snapshot_lookup_memo(s, 7, &m, a.secret, strlen(a.secret), now + 9, &k, &p),
                     0);
    assert_string_equal(k->team, "a");
    assert_int_equal(
        tg_snapshot_lookup_memo(s, 7, &m, a.secret, strlen(a.secret), now + 10, &k, &p),
        TG_EEXPIRED);
    /* Another secret, a truncated one, one with a byte changed: each looked
     * up for itself (never a's answer). */
    assert_int_equal(tg_snapshot_lookup_memo(s, 7, &m, b.secret, strlen(b.secret), now, &k, &p), 0);
    assert_string_equal(k->team, "b");
    assert_int_equal(m.len, strlen(b.secret));
    assert_memory_equal(m.secret, b.secret, strlen(b.secret));
    assert_int_equal(tg_snapshot_lookup_memo(s, 7, &m, b.secret, strlen(b.secret) - 1, now, &k, &p),
                     TG_EAUTH);
    assert_null(k);
    char bad[TG_KEY_SECRET_MAX];
    memcpy(bad, b.secret, sizeof(bad));
    bad[strlen(bad) - 1] ^= 1;
    assert_int_equal(tg_snapshot_lookup_memo(s, 7, &m, bad, strlen(bad), now, &k, &p), TG_EAUTH);
    /* A failed lookup leaves the memo as it was. */
    assert_memory_equal(m.secret, b.secret, strlen(b.secret));
    /* The old secret of a rotated key, remembered, expires with its grace. */
    assert_int_equal(tg_snapshot_lookup_memo(s, 7, &m, old, strlen(old), now + 4, &k, &p), 0);
    assert_string_equal(k->team, "rot");
    assert_int_equal(tg_snapshot_lookup_memo(s, 7, &m, old, strlen(old), now + 5, &k, &p),
                     TG_EEXPIRED);
    assert_int_equal(
        tg_snapshot_lookup_memo(s, 7, &m, rot.secret, strlen(rot.secret), now + 5, &k, &p), 0);
    tg_snapshot_free(s);

    /* The next generation (rot gone, b revoked, the order changed) is looked
     * up afresh: the memo (rot's new secret, from generation 7) names an
     * entry of the old table. */
    assert_memory_equal(m.secret, rot.secret, strlen(rot.secret));
    b.k.revoked_ms = now;
    tg_key_t keys2[] = {b.k, a.k};
    assert_int_equal(tg_snapshot_build(&s, keys2, 2), 0);
    assert_int_equal(tg_snapshot_lookup_memo(s, 8, &m, rot.secret, strlen(rot.secret), now, &k, &p),
                     TG_EAUTH);
    assert_int_equal(tg_snapshot_lookup_memo(s, 8, &m, a.secret, strlen(a.secret), now, &k, &p), 0);
    assert_string_equal(k->team, "a");
    assert_int_equal(m.gen, 8);
    assert_int_equal(tg_snapshot_lookup_memo(s, 8, &m, b.secret, strlen(b.secret), now, &k, &p),
                     TG_EREVOKED);
    /* A refused key is not remembered. */
    assert_int_equal(m.len, strlen(a.secret));
    assert_memory_equal(m.secret, a.secret, strlen(a.secret));
    /* Generation 0 (an empty memo's) never matches. */
    memset(&m, 0, sizeof(m));
    assert_int_equal(tg_snapshot_lookup_memo(s, 0, &m, a.secret, strlen(a.secret), now, &k, &p), 0);
    assert_int_equal(tg_snapshot_lookup_memo(NULL, 0, &m, a.secret, strlen(a.secret), now, &k, &p),
                     TG_EAUTH);
    tg_snapshot_free(s);
}

/* Derived secrets: recomputable from the record (and only with the
 * derivation secret), a fresh salt per secret, random without one. */
static void test_derived_secrets(void **state)
{
    static const char master[] = "a-derivation-secret-of-at-least-32-bytes-0123456789";
    static const uint8_t zero[16];
    assert_int_equal(tg_key_set_derivation("too short", 9), TG_EINVAL);
    assert_int_equal(tg_key_set_derivation(master, strlen(master)), 0);
    tg_key_t k;
    char secret[TG_KEY_SECRET_MAX], again[TG_KEY_SECRET_MAX];
    memset(&k, 0, sizeof(k));
    assert_int_equal(tg_key_generate(&k, secret, sizeof(secret)), 0);
    assert_int_equal(strlen(secret), 46);
    assert_memory_not_equal(k.salt, zero, 16);
    assert_int_equal(tg_key_derive_secret(&k, 0, again, sizeof(again)), 0);
    assert_string_equal(again, secret);
    uint8_t h[32];
    tg_key_hash(again, strlen(again), h);
    assert_memory_equal(h, k.hash, 32);
    /* A new secret for the same key: same id, new salt, different secret. */
    tg_key_t r = k;
    char rotated[TG_KEY_SECRET_MAX];
    assert_int_equal(tg_key_regenerate(&r, rotated, sizeof(rotated)), 0);
    assert_string_equal(r.id, k.id);
    assert_memory_not_equal(r.salt, k.salt, 16);
    assert_string_not_equal(rotated, secret);
    assert_int_equal(tg_key_derive_secret(&r, 0, again, sizeof(again)), 0);
    assert_string_equal(again, rotated);
    /* The previous secret through prev_salt. */
    memcpy(r.prev_salt, k.salt, 16);
    assert_int_equal(tg_key_derive_secret(&r, 1, again, sizeof(again)), 0);
    assert_string_equal(again, secret);
    /* Another derivation secret derives something else. */
    assert_int_equal(tg_key_set_derivation("another-derivation-secret-32-bytes-or-more!!", 44), 0);
    assert_int_equal(tg_key_derive_secret(&k, 0, again, sizeof(again)), 0);
    assert_string_not_equal(again, secret);
    /* Admin keys are never derived; without a secret nothing is. */
    tg_key_t a;
    memset(&a, 0, sizeof(a));
    assert_int_equal(tg_admin_key_generate(&a, again, sizeof(again)), 0);
    assert_memory_equal(a.salt, zero, 16);
    assert_int_equal(tg_key_set_derivation(NULL, 0), 0);
    assert_int_equal(tg_key_derive_secret(&k, 0, again, sizeof(again)), TG_ENOTFOUND);
    memset(&k, 0, sizeof(k));
    assert_int_equal(tg_key_generate(&k, secret, sizeof(secret)), 0);
    assert_memory_equal(k.salt, zero, 16);
}

static void test_snapshot_10k(void **state)
{
    enum { N = 10000 };
    made_t *m = calloc(N, sizeof(*m));
    tg_key_t *keys = calloc(N, sizeof(*keys));
    for (int i = 0; i < N; i++) {
        make(&m[i], "t");
        snprintf(m[i].k.name, sizeof(m[i].k.name), "k%d", i);
        keys[i] = m[i].k;
    }
    tg_snapshot_t *s = NULL;
    assert_int_equal(tg_snapshot_build(&s, keys, N), 0);
    free(keys); /* the snapshot holds its own copy */
    assert_int_equal(tg_snapshot_count(s), N);
    for (int i = 0; i < N; i++) {
        const tg_key_t *k = NULL;
        assert_int_equal(tg_snapshot_auth(s, m[i].secret, strlen(m[i].secret), 1, &k), 0);
        char want[16];
        snprintf(want, sizeof(want), "k%d", i);
        assert_string_equal(k->name, want);
        /* And by id (SigV4's lookup). */
        assert_ptr_equal(tg_snapshot_key_by_id(s, m[i].k.id, NULL), k);
    }
    assert_null(tg_snapshot_key_by_id(s, "key_nope", NULL));
    made_t other;
    make(&other, "x");
    assert_int_equal(tg_snapshot_auth(s, other.secret, strlen(other.secret), 1, NULL), TG_EAUTH);
    tg_snapshot_free(s);
    free(m);
}

static tg_snapshot_t *snap_of(const made_t *m, size_t n)
{
    tg_key_t keys[8];
    for (size_t i = 0; i < n; i++)
        keys[i] = m[i].k;
    tg_snapshot_t *s = NULL;
    assert_int_equal(tg_snapshot_build(&s, keys, n), 0);
    return s;
}

static void test_publish_while_viewed(void **state)
{
    made_t a, b;
    make(&a, "a");
    make(&b, "b");
    tg_tenancy_t *t = NULL;
    assert_int_equal(tg_tenancy_create(&t), 0);

    tg_tenancy_view_t v1, v2;
    tg_tenancy_view_init(&v1, t);
    tg_tenancy_view_init(&v2, t);
    /* Before any publish: an empty snapshot, never NULL. */
    const tg_snapshot_t *s = tg_tenancy_view_get(&v1);
    assert_non_null(s);
    assert_int_equal(tg_snapshot_count(s), 0);

    tg_snapshot_t *sa = snap_of(&a, 1);
    tg_tenancy_publish(t, sa);
    assert_ptr_equal(tg_tenancy_view_get(&v1), sa);
    assert_ptr_equal(tg_tenancy_view_get(&v1), sa); /* no change: same pointer */

    tg_snapshot_t *sb = snap_of(&b, 1);
    tg_tenancy_publish(t, sb);
    /* v1 has not refreshed: sa must still be alive and usable (ASan). */
    assert_int_equal(tg_snapshot_auth(v1.snap, a.secret, strlen(a.secret), 1, NULL), 0);
    assert_ptr_equal(tg_tenancy_view_get(&v2), sb);
    assert_int_equal(
        tg_snapshot_auth(tg_tenancy_view_get(&v2), a.secret, strlen(a.secret), 1, NULL), TG_EAUTH);
    /* Refreshing frees sa (the last holder); the leak checker sees the rest. */
    assert_ptr_equal(tg_tenancy_view_get(&v1), sb);

    /* Several publishes while v2 holds sb: the intermediate ones never
     * reach a view and are freed at once. */
    for (int i = 0; i < 10; i++)
        tg_tenancy_publish(t, snap_of(&a, 1));
    assert_int_equal(tg_snapshot_auth(v2.snap, b.secret, strlen(b.secret), 1, NULL), 0);
    tg_tenancy_view_release(&v1);
    tg_tenancy_view_release(&v2);
    tg_tenancy_view_release(&v2); /* twice is harmless */
    int level = tg_log_level;
    tg_log_level = TG_LOG_ERROR; /* the warning is expected */
    tg_tenancy_publish(t, NULL); /* ignored */
    tg_log_level = level;
    tg_tenancy_destroy(t);
}

typedef struct {
    tg_tenancy_t *t;
    const made_t *always; /* present in every published snapshot */
    atomic_int *stop;
    atomic_int *started;
    long gets, switches, bad;
} reader_t;

static void *reader_main(void *arg)
{
    reader_t *r = arg;
    tg_tenancy_view_t v;
    tg_tenancy_view_init(&v, r->t);
    const tg_snapshot_t *last = NULL;
    atomic_fetch_add(r->started, 1);
    while (!atomic_load(r->stop)) {
        const tg_snapshot_t *s = tg_tenancy_view_get(&v);
        r->gets++;
        if (s != last) r->switches++;
        last = s;
        /* The first get may see the empty initial snapshot. */
        if (tg_snapshot_count(s) == 0) continue;
        if (tg_snapshot_auth(s, r->always->secret, strlen(r->always->secret), 1, NULL) != 0)
            r->bad++;
    }
    tg_tenancy_view_release(&v);
    return NULL;
}

static void test_publish_concurrent(void **state)
{
    made_t keys[4];
    for (int i = 0; i < 4; i++)
        make(&keys[i], "c");
    tg_tenancy_t *t = NULL;
    assert_int_equal(tg_tenancy_create(&t), 0);
    tg_tenancy_publish(t, snap_of(keys, 4));
    atomic_int stop = 0, started = 0;
    reader_t r[4];
    pthread_t th[4];
    for (int i = 0; i < 4; i++) {
        r[i] = (reader_t){.t = t, .always = &keys[0], .stop = &stop, .started = &started};
        assert_int_equal(pthread_create(&th[i], NULL, reader_main, &r[i]), 0);
    }
    while (atomic_load(&started) < 4)
        continue; /* publish while they all read */
    for (int i = 0; i < 1000; i++)
        tg_tenancy_publish(t, snap_of(keys, 1 + (size_t)i % 4));
    atomic_store(&stop, 1);
    long gets = 0, switches = 0;
    for (int i = 0; i < 4; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(r[i].bad, 0);
        gets += r[i].gets;
        switches += r[i].switches;
    }
    assert_true(gets > 0);
    assert_true(switches > 0);
    tg_tenancy_destroy(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_generate_format),
        cmocka_unit_test(test_key_hash_known),
        cmocka_unit_test(test_auth),
        cmocka_unit_test(test_auth_memo),
        cmocka_unit_test(test_derived_secrets),
        cmocka_unit_test(test_snapshot_10k),
        cmocka_unit_test(test_publish_while_viewed),
        cmocka_unit_test(test_publish_concurrent),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

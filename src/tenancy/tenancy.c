/* tenancy.c - API keys (generation, hashing) and the published snapshot the
 * request path authenticates against.
 *
 * Why it is built this way:
 * - Secrets carry 256 bits (43 base62 chars) drawn with rejection sampling,
 *   so every character is uniform; only their SHA-256 is ever stored.
 * - A snapshot is an immutable open-addressing table keyed by that hash:
 *   lookups need no lock and touch one or two cache lines.
 * - Publication: the tenancy keeps the current snapshot under a mutex and a
 *   generation counter beside it. A worker's view compares one atomic load
 *   of the generation with the one it holds and takes the mutex only when a
 *   new snapshot was published. Snapshots are reference counted (under the
 *   mutex) so an old one lives until the last view lets go of it. */
#include "tenancy/tenancy.h"

#include <assert.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/* ---- keys -------------------------------------------------------------------- */

enum { SECRET_BODY = 43 }; /* 43 * log2(62) = 256.1 bits */

static const char base62[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/* SHA-256 fetched once: OpenSSL 3's one-shot SHA256() looks the algorithm up
 * by name (under a lock) on every call, a visible share of a request's
 * authentication. NULL (fetch failed) falls back to the one-shot. */
static EVP_MD *sha256_md;
static pthread_once_t sha256_once = PTHREAD_ONCE_INIT;

static void sha256_fetch(void)
{
    sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
}

void tg_key_hash(const char *secret, size_t len, uint8_t out[32])
{
    pthread_once(&sha256_once, sha256_fetch);
    if (!sha256_md || !EVP_Digest(secret, len, out, NULL, sha256_md, NULL))
        SHA256((const unsigned char *)secret, len, out);
}

/* Fills out[0..n) with uniform base62 characters. Bytes >= 248 (= 4 * 62)
 * are rejected, so byte % 62 favours no character. */
static int random_base62(char *out, size_t n)
{
    uint8_t raw[64];
    size_t got = 0;
    while (got < n) {
        int err = tg_random(raw, sizeof(raw));
        if (err) return err;
        for (size_t i = 0; i < sizeof(raw) && got < n; i++)
            if (raw[i] < 248) out[got++] = base62[raw[i] % 62];
    }
    return 0;
}

/* The derivation secret (see tenancy.h); set once at start. */
static uint8_t derive_key[64];
static size_t derive_len;

int tg_key_set_derivation(const char *secret, size_t len)
{
    if (secret && (len < 32 || len > sizeof(derive_key))) return TG_EINVAL;
    explicit_bzero(derive_key, sizeof(derive_key));
    derive_len = secret ? len : 0;
    if (secret) memcpy(derive_key, secret, len);
    return 0;
}

/* n base62 characters from HMAC-SHA256(derivation secret, "tg-key-v1" ||
 * id || salt || counter) blocks, rejecting bytes >= 248 as random_base62
 * does, so every character is uniform. */
static int derive_base62(const char *id, const uint8_t salt[16], char *out, size_t n)
{
    size_t got = 0, idlen = strnlen(id, 40);
    for (uint32_t ctr = 0; got < n && ctr < 64; ctr++) {
        uint8_t msg[9 + 40 + 16 + 4], mac[32];
        size_t m = 0;
        memcpy(msg, "tg-key-v1", 9), m = 9;
        memcpy(msg + m, id, idlen), m += idlen;
        memcpy(msg + m, salt, 16), m += 16;
        msg[m++] = (uint8_t)(ctr >> 24), msg[m++] = (uint8_t)(ctr >> 16);
        msg[m++] = (uint8_t)(ctr >> 8), msg[m++] = (uint8_t)ctr;
        unsigned int mlen = 0;
        if (!HMAC(EVP_sha256(), derive_key, (int)derive_len, msg, m, mac, &mlen)) return TG_EINVAL;
        for (size_t i = 0; i < sizeof(mac) && got < n; i++)
            if (mac[i] < 248) out[got++] = base62[mac[i] % 62];
        explicit_bzero(mac, sizeof(mac));
    }
    return got == n ? 0 : TG_EINVAL;
}

int tg_key_derive_secret(const tg_key_t *k, int prev, char *out, size_t cap)
{
    static const uint8_t zero[16];
    const uint8_t *salt = prev ? k->prev_salt : k->salt;
    if (!derive_len || memcmp(salt, zero, 16) == 0) return TG_ENOTFOUND;
    if (cap < 3 + SECRET_BODY + 1) return TG_ETOOBIG;
    memcpy(out, "tg_", 3);
    int err = derive_base62(k->id, salt, out + 3, SECRET_BODY);
    out[err ? 0 : 3 + SECRET_BODY] = '\0';
    return err;
}

/* A tenant secret for rec (whose id is set): derived when a derivation
 * secret is set, else random. */
static int tenant_secret(tg_key_t *rec, char *secret)
{
    memset(rec->salt, 0, sizeof(rec->salt));
    if (!derive_len) return random_base62(secret + 3, SECRET_BODY);
    static const uint8_t zero[16];
    int err;
    do {
        if ((err = tg_random(rec->salt, sizeof(rec->salt)))) return err;
    } while (memcmp(rec->salt, zero, 16) == 0);
    return derive_base62(rec->id, rec->salt, secret + 3, SECRET_BODY);
}

static void finish_record(tg_key_t *rec, const char *secret, size_t len)
{
    memset(rec->prefix, 0, sizeof(rec->prefix));
    memcpy(rec->prefix, secret, TG_KEY_PREFIX_LEN);
    tg_key_hash(secret, len, rec->hash);
    rec->created_ms = tg_wall_ms();
}

int tg_key_regenerate(tg_key_t *rec, char *secret, size_t cap)
{
    if (!rec || !secret || cap < 3 + SECRET_BODY + 1 || !rec->id[0]) return TG_EINVAL;
    memcpy(secret, "tg_", 3);
    int err = tenant_secret(rec, secret);
    if (err) return err;
    secret[3 + SECRET_BODY] = '\0';
    int64_t created = rec->created_ms;
    finish_record(rec, secret, 3 + SECRET_BODY);
    rec->created_ms = created;
    return 0;
}

/* A secret "<tag>" + SECRET_BODY base62 chars, and its record. */
static int generate(tg_key_t *rec, char *secret, size_t cap, const char *tag, const char *id_tag)
{
    size_t tl = strlen(tag);
    if (!rec || !secret || cap < tl + SECRET_BODY + 1) return TG_EINVAL;
    tg_random_id(rec->id, sizeof(rec->id), id_tag, 8);
    memcpy(secret, tag, tl);
    /* Tenant keys may be derived; admin keys are always random. */
    int err = strcmp(tag, "tg_") == 0 ? tenant_secret(rec, secret)
                                      : random_base62(secret + tl, SECRET_BODY);
    if (err) return err;
    secret[tl + SECRET_BODY] = '\0';
    finish_record(rec, secret, tl + SECRET_BODY);
    return 0;
}

int tg_key_generate(tg_key_t *rec, char *secret, size_t cap)
{
    return generate(rec, secret, cap, "tg_", "key_");
}

int tg_admin_key_generate(tg_key_t *rec, char *secret, size_t cap)
{
    return generate(rec, secret, cap, "tga_", "adm_");
}

/* ---- snapshot ------------------------------------------------------------------ */

struct tg_snapshot {
    tg_key_t *keys;             /* n records, copied at build */
    tg_principal_t *principals; /* n, or NULL */
    size_t n;
    /* index + 1 into keys, with SLOT_PREV set for a key's previous secret;
     * 0 = empty. Power-of-two size >= 2 x the hashes. */
    uint32_t *slots;
    size_t mask;
    uint32_t *by_id; /* key indexes sorted by id, for SigV4's lookups */
    void *owned;
    void (*free_owned)(void *);
    int refs; /* owned by the tenancy; guarded by its mutex */
};

#define SLOT_PREV 0x80000000u

/* The hash is SHA-256, already uniform: its first 8 bytes are the index. */
static size_t slot_of(const uint8_t hash[32], size_t mask)
{
    uint64_t h;
    memcpy(&h, hash, sizeof(h));
    return (size_t)h & mask;
}

static const uint8_t *slot_hash(const tg_snapshot_t *s, uint32_t v)
{
    const tg_key_t *k = &s->keys[(v & ~SLOT_PREV) - 1];
    return v & SLOT_PREV ? k->prev_hash : k->hash;
}

static int insert_slot(tg_snapshot_t *s, const uint8_t *hash, uint32_t v)
{
    size_t j = slot_of(hash, s->mask);
    while (s->slots[j]) {
        /* Two records for one secret would make auth ambiguous. */
        if (memcmp(slot_hash(s, s->slots[j]), hash, 32) == 0) return TG_EEXIST;
        j = (j + 1) & s->mask;
    }
    s->slots[j] = v;
    return 0;
}

static int cmp_by_id(const void *a, const void *b, void *keys)
{
    const tg_key_t *k = keys;
    return strcmp(k[*(const uint32_t *)a].id, k[*(const uint32_t *)b].id);
}

int tg_snapshot_build_gov(tg_snapshot_t **out, const tg_key_t *keys,
                          const tg_principal_t *principals, size_t n, void *owned,
                          void (*free_owned)(void *))
{
    if (!out || (n && !keys) || n > UINT32_MAX / 8) return TG_EINVAL;
    *out = NULL;
    tg_snapshot_t *s = calloc(1, sizeof(*s));
    if (!s) {
        if (free_owned) free_owned(owned);
        return TG_ENOMEM;
    }
    s->owned = owned;
    s->free_owned = free_owned;
    size_t hashes = n;
    for (size_t i = 0; i < n; i++)
        hashes += keys[i].prev_expires_ms != 0;
    size_t cap = 16;
    while (cap < 2 * hashes)
        cap *= 2; /* load <= 1/2: probes stay short */
    s->slots = calloc(cap, sizeof(*s->slots));
    s->keys = n ? malloc(n * sizeof(*s->keys)) : NULL;
    s->principals = n && principals ? malloc(n * sizeof(*s->principals)) : NULL;
    if (!s->slots || (n && !s->keys) || (n && principals && !s->principals)) {
        tg_snapshot_free(s);
        return TG_ENOMEM;
    }
    if (n) memcpy(s->keys, keys, n * sizeof(*keys));
    if (s->principals) memcpy(s->principals, principals, n * sizeof(*principals));
    if (n && !(s->by_id = malloc(n * sizeof(*s->by_id)))) {
        tg_snapshot_free(s);
        return TG_ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        s->by_id[i] = (uint32_t)i;
    if (n) qsort_r(s->by_id, n, sizeof(*s->by_id), cmp_by_id, s->keys);
    s->n = n;
    s->mask = cap - 1;
    for (size_t i = 0; i < n; i++) {
        int err = insert_slot(s, s->keys[i].hash, (uint32_t)(i + 1));
        if (!err && s->keys[i].prev_expires_ms)
            err = insert_slot(s, s->keys[i].prev_hash, (uint32_t)(i + 1) | SLOT_PREV);
        if (err) {
            tg_snapshot_free(s);
            return err;
        }
    }
    *out = s;
    return 0;
}

int tg_snapshot_build(tg_snapshot_t **out, const tg_key_t *keys, size_t n)
{
    return tg_snapshot_build_gov(out, keys, NULL, n, NULL, NULL);
}

void tg_snapshot_free(tg_snapshot_t *s)
{
    if (!s) return;
    if (s->free_owned) s->free_owned(s->owned);
    free(s->keys);
    free(s->by_id);
    free(s->principals);
    free(s->slots);
    free(s);
}

size_t tg_snapshot_count(const tg_snapshot_t *s)
{
    return s ? s->n : 0;
}

/* On TG_EREVOKED and TG_EEXPIRED *key is still set, so the caller can say
 * which key was refused; on TG_EAUTH it is NULL. */
/* The verdict on table entry v at now_ms, with *key and *principal set. */
static int slot_verdict(const tg_snapshot_t *s, uint32_t v, int64_t now_ms, const tg_key_t **key,
                        const tg_principal_t **principal)
{
    size_t i = (v & ~SLOT_PREV) - 1;
    const tg_key_t *k = &s->keys[i];
    if (key) *key = k;
    if (principal && s->principals) *principal = &s->principals[i];
    if (k->revoked_ms != 0 && k->revoked_ms <= now_ms) return TG_EREVOKED;
    if (k->expires_ms != 0 && k->expires_ms <= now_ms) return TG_EEXPIRED;
    if ((v & SLOT_PREV) && k->prev_expires_ms <= now_ms) return TG_EEXPIRED;
    return 0;
}

/* The table entry whose hash is that of secret, or 0. */
static uint32_t find_slot(const tg_snapshot_t *s, const char *secret, size_t len)
{
    uint8_t h[32];
    tg_key_hash(secret, len, h);
    /* memcmp on hashes, not secrets: its timing reveals nothing usable. */
    for (size_t j = slot_of(h, s->mask); s->slots[j]; j = (j + 1) & s->mask)
        if (memcmp(slot_hash(s, s->slots[j]), h, 32) == 0) return s->slots[j];
    return 0;
}

int tg_snapshot_lookup(const tg_snapshot_t *s, const char *secret, size_t len, int64_t now_ms,
                       const tg_key_t **key, const tg_principal_t **principal)
{
    if (key) *key = NULL;
    if (principal) *principal = NULL;
    if (!s || !secret || len == 0 || len > TG_KEY_SECRET_MAX) return TG_EAUTH;
    uint32_t v = find_slot(s, secret, len);
    return v ? slot_verdict(s, v, now_ms, key, principal) : TG_EAUTH;
}

int tg_snapshot_lookup_memo(const tg_snapshot_t *s, uint64_t gen, tg_key_memo_t *m,
                            const char *secret, size_t len, int64_t now_ms, const tg_key_t **key,
                            const tg_principal_t **principal)
{
    if (key) *key = NULL;
    if (principal) *principal = NULL;
    if (!s || !secret || len == 0 || len > TG_KEY_SECRET_MAX) return TG_EAUTH;
    if (m->gen == gen && gen != 0 && m->len == len && CRYPTO_memcmp(m->secret, secret, len) == 0)
        return slot_verdict(s, m->slot, now_ms, key, principal);
    uint32_t v = find_slot(s, secret, len);
    if (!v) return TG_EAUTH;
    int rc = slot_verdict(s, v, now_ms, key, principal);
    if (rc == 0) {
        m->gen = gen;
        m->slot = v;
        m->len = (uint32_t)len;
        memcpy(m->secret, secret, len);
    }
    return rc;
}

int tg_snapshot_auth(const tg_snapshot_t *s, const char *secret, size_t len, int64_t now_ms,
                     const tg_key_t **out)
{
    return tg_snapshot_lookup(s, secret, len, now_ms, out, NULL);
}

const tg_key_t *tg_snapshot_key_at(const tg_snapshot_t *s, size_t i,
                                   const tg_principal_t **principal)
{
    if (principal) *principal = s && s->principals && i < s->n ? &s->principals[i] : NULL;
    return s && i < s->n ? &s->keys[i] : NULL;
}

const tg_key_t *tg_snapshot_key_by_id(const tg_snapshot_t *s, const char *id,
                                      const tg_principal_t **principal)
{
    if (principal) *principal = NULL;
    size_t lo = 0, hi = s ? s->n : 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        uint32_t i = s->by_id[mid];
        int c = strcmp(s->keys[i].id, id);
        if (c == 0) {
            if (principal && s->principals) *principal = &s->principals[i];
            return &s->keys[i];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

/* ---- publication ------------------------------------------------------------- */

struct tg_tenancy {
    pthread_mutex_t mu;
    tg_snapshot_t *cur;   /* guarded by mu; never NULL; holds one ref */
    _Atomic uint64_t gen; /* bumped under mu with each publish; starts at 1 */
};

/* Drops one reference; returns s if it must now be freed (done by the
 * caller after unlocking, to keep the critical section short). */
static tg_snapshot_t *snap_unref_locked(tg_snapshot_t *s)
{
    if (!s) return NULL;
    assert(s->refs > 0);
    return --s->refs == 0 ? s : NULL;
}

int tg_tenancy_create(tg_tenancy_t **out)
{
    if (!out) return TG_EINVAL;
    *out = NULL;
    tg_tenancy_t *t = calloc(1, sizeof(*t));
    if (!t) return TG_ENOMEM;
    /* Start with an empty snapshot so a view never sees NULL. */
    int err = tg_snapshot_build(&t->cur, NULL, 0);
    if (err) {
        free(t);
        return err;
    }
    if (pthread_mutex_init(&t->mu, NULL) != 0) {
        tg_snapshot_free(t->cur);
        free(t);
        return TG_ENOMEM;
    }
    t->cur->refs = 1;
    atomic_init(&t->gen, 1);
    *out = t;
    return 0;
}

/* All views must have been released: they point into t. */
void tg_tenancy_destroy(tg_tenancy_t *t)
{
    if (!t) return;
    assert(t->cur->refs == 1);
    tg_snapshot_free(t->cur);
    pthread_mutex_destroy(&t->mu);
    free(t);
}

void tg_tenancy_publish(tg_tenancy_t *t, tg_snapshot_t *s)
{
    if (!s) {
        tg_warn("tenancy: publish of a NULL snapshot ignored");
        return;
    }
    pthread_mutex_lock(&t->mu);
    s->refs = 1; /* the tenancy's own reference */
    tg_snapshot_t *old = t->cur;
    t->cur = s;
    atomic_fetch_add_explicit(&t->gen, 1, memory_order_release);
    tg_snapshot_t *dead = snap_unref_locked(old);
    pthread_mutex_unlock(&t->mu);
    tg_snapshot_free(dead);
}

void tg_tenancy_view_init(tg_tenancy_view_t *v, tg_tenancy_t *t)
{
    v->t = t;
    v->gen = 0; /* below any generation: the first get takes the snapshot */
    v->snap = NULL;
}

const tg_snapshot_t *tg_tenancy_view_get(tg_tenancy_view_t *v)
{
    tg_tenancy_t *t = v->t;
    if (atomic_load_explicit(&t->gen, memory_order_acquire) == v->gen) return v->snap;
    pthread_mutex_lock(&t->mu);
    tg_snapshot_t *dead = snap_unref_locked(v->snap);
    v->snap = t->cur;
    v->snap->refs++;
    /* Read under mu, where it always matches cur. */
    v->gen = atomic_load_explicit(&t->gen, memory_order_relaxed);
    pthread_mutex_unlock(&t->mu);
    tg_snapshot_free(dead);
    return v->snap;
}

void tg_tenancy_view_release(tg_tenancy_view_t *v)
{
    if (!v->snap) return;
    pthread_mutex_lock(&v->t->mu);
    tg_snapshot_t *dead = snap_unref_locked(v->snap);
    pthread_mutex_unlock(&v->t->mu);
    tg_snapshot_free(dead);
    v->snap = NULL;
    v->gen = 0;
}

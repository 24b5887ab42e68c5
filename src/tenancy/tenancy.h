/* tenancy.h - API keys and the immutable snapshot the request path reads.
 *
 * A key's secret is shown once at creation; only its SHA-256 is stored, with
 * a short prefix for display. Workers authenticate against a snapshot: an
 * immutable hash table built off the request path and published by pointer
 * swap. Workers notice a new generation with one atomic load per request and
 * take it under a mutex only then, so the hot path takes no lock. */
#ifndef TG_TENANCY_H
#define TG_TENANCY_H

#include <stddef.h>
#include <stdint.h>

#define TG_KEY_SECRET_MAX 64
#define TG_KEY_PREFIX_LEN 10 /* "tg_" + 7 chars */

typedef struct {
    char id[40];   /* "key_" + 16 hex */
    char unit[64]; /* "" until units exist */
    char team[64];
    char name[64];
    char prefix[16];
    uint8_t hash[32]; /* SHA-256 of the secret */
    int64_t created_ms;
    int64_t expires_ms; /* 0 = never */
    int64_t revoked_ms; /* 0 = active */
    /* Rotation: the secret replaced last, still accepted until
     * prev_expires_ms (0 = no previous secret). */
    uint8_t prev_hash[32];
    int64_t prev_expires_ms;
    /* Derived secrets (for SigV4): the salt the secret was derived with from
     * the gateway's derivation secret and the key id; all zero when the
     * secret is random (such a key cannot sign SigV4). prev_salt: of the
     * previous secret. */
    uint8_t salt[16];
    uint8_t prev_salt[16];
} tg_key_t;

/* Creates a new random secret "tg_" + 43 base62 chars into secret (>= 64
 * bytes) and fills rec's id, prefix, hash and created_ms. */
int tg_key_generate(tg_key_t *rec, char *secret, size_t cap);
/* The same for an admin credential: "tga_" + 43 base62 chars, id "adm_...". */
int tg_admin_key_generate(tg_key_t *rec, char *secret, size_t cap);
/* A new secret for an existing key (rotation): rec keeps its id; its hash,
 * prefix and salt become the new secret's. */
int tg_key_regenerate(tg_key_t *rec, char *secret, size_t cap);

/* Derived secrets. With a derivation secret set (process-wide, at start,
 * before any thread uses keys; NULL clears it), tenant secrets are made as
 * "tg_" + base62(HMAC-SHA256(derivation secret, id || salt)) with a random
 * salt, so the gateway can recompute a key's secret from its record for
 * SigV4 verification while storing only its hash. Without one, secrets are
 * random. */
int tg_key_set_derivation(const char *secret, size_t len);
/* Recomputes k's secret (prev: its previous one) into out (>= 64 bytes).
 * TG_ENOTFOUND when k's secret was not derived or no derivation secret is
 * set. */
int tg_key_derive_secret(const tg_key_t *k, int prev, char *out, size_t cap);
void tg_key_hash(const char *secret, size_t len, uint8_t out[32]);

typedef struct tg_snapshot tg_snapshot_t;

/* Builds a snapshot from keys (copied). A key with prev_expires_ms set is
 * found by its previous secret too, until then (rotation). */
int tg_snapshot_build(tg_snapshot_t **out, const tg_key_t *keys, size_t n);

/* Where a key sits in the hierarchy, for governance (gov/): its team's unit,
 * whether the team or unit is disabled, and per scope (key, team, unit, in
 * TG_SCOPE_* order) the policy and the live counters. Built off the request
 * path; the snapshot owns whatever `owned` holds (policies, strings) and
 * frees it with free_owned when the last reader lets go. */
struct tg_policy;
struct tg_gov_counters;
enum { TG_PRINCIPAL_ENABLED = 0, TG_PRINCIPAL_TEAM_DISABLED, TG_PRINCIPAL_UNIT_DISABLED };
typedef struct {
    const char *unit; /* "" when the team has none */
    int disabled;     /* TG_PRINCIPAL_* */
    const char *scope_id[3];
    const struct tg_policy *policy[3];   /* NULL: none at that scope */
    struct tg_gov_counters *counters[3]; /* NULL: no such scope */
} tg_principal_t;
/* As tg_snapshot_build, with principals[i] for keys[i] (copied). */
int tg_snapshot_build_gov(tg_snapshot_t **out, const tg_key_t *keys,
                          const tg_principal_t *principals, size_t n, void *owned,
                          void (*free_owned)(void *));
void tg_snapshot_free(tg_snapshot_t *s);

/* Authenticates a presented secret at time now_ms: 0 and *out set, or
 * TG_EAUTH (unknown), TG_EREVOKED, TG_EEXPIRED. */
int tg_snapshot_auth(const tg_snapshot_t *s, const char *secret, size_t len, int64_t now_ms,
                     const tg_key_t **out);
/* The same, with the key's principal (NULL when built without). A previous
 * secret past its rotation grace is TG_EEXPIRED. */
int tg_snapshot_lookup(const tg_snapshot_t *s, const char *secret, size_t len, int64_t now_ms,
                       const tg_key_t **key, const tg_principal_t **principal);
/* What a connection remembers of the last key that authenticated on it, so
 * that its next request with the same secret skips the hash and the table.
 * It holds the secret itself: keep it only in memory that is wiped after
 * use (tg_req_t.conn_memo). All zero: empty. */
typedef struct {
    uint64_t gen;  /* the snapshot's generation (tg_tenancy_view_t.gen) */
    uint32_t slot; /* the table entry that matched */
    uint32_t len;
    char secret[TG_KEY_SECRET_MAX];
} tg_key_memo_t;
/* tg_snapshot_lookup() through a memo: when m holds this very secret from
 * snapshot generation gen, the entry it names is checked again for the time
 * now_ms without hashing; else the lookup runs and, when it succeeds, m
 * remembers it. The secret is compared in constant time. */
int tg_snapshot_lookup_memo(const tg_snapshot_t *s, uint64_t gen, tg_key_memo_t *m,
                            const char *secret, size_t len, int64_t now_ms, const tg_key_t **key,
                            const tg_principal_t **principal);
/* The key with this id, or NULL (a linear scan: for the admin side). */
const tg_key_t *tg_snapshot_key_by_id(const tg_snapshot_t *s, const char *id,
                                      const tg_principal_t **principal);
size_t tg_snapshot_count(const tg_snapshot_t *s);
/* The i-th key (i < count) and its principal. */
const tg_key_t *tg_snapshot_key_at(const tg_snapshot_t *s, size_t i,
                                   const tg_principal_t **principal);

/* The published snapshot, shared by all workers. */
typedef struct tg_tenancy tg_tenancy_t;
int tg_tenancy_create(tg_tenancy_t **out);
void tg_tenancy_destroy(tg_tenancy_t *t);
/* Publishes s (ownership passes to t); the old one is freed when no worker
 * holds it. Any thread. */
void tg_tenancy_publish(tg_tenancy_t *t, tg_snapshot_t *s);

/* A worker's view: refresh at the start of each request (one atomic load
 * unless a new generation was published). */
typedef struct {
    tg_tenancy_t *t;
    uint64_t gen;
    tg_snapshot_t *snap;
} tg_tenancy_view_t;
void tg_tenancy_view_init(tg_tenancy_view_t *v, tg_tenancy_t *t);
const tg_snapshot_t *tg_tenancy_view_get(tg_tenancy_view_t *v);
void tg_tenancy_view_release(tg_tenancy_view_t *v);

#endif

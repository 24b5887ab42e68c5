/* catalog.h - the Bedrock control plane: which models and inference profiles
 * a provider's account can call.
 *
 * Per bedrock provider a background thread ("tg-catalog") calls
 * ListFoundationModels (GET /foundation-models) and ListInferenceProfiles
 * (GET /inference-profiles, every page) on the control endpoint, signed for
 * service "bedrock", at start and every refresh_s; a failed refresh keeps the
 * previous catalogue and is retried with backoff. The catalogue is an
 * immutable, sorted snapshot swapped under a mutex held only for the pointer
 * and a reference count: the request path never waits on I/O and never
 * fetches. */
#ifndef TG_PROVIDER_CATALOG_H
#define TG_PROVIDER_CATALOG_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "providers/awsauth.h"

enum { TG_CATALOG_MODEL = 0, TG_CATALOG_PROFILE = 1 };

typedef struct {
    char *id; /* modelId or inferenceProfileId */
    int kind; /* TG_CATALOG_* */
} tg_catalog_entry_t;

/* An immutable snapshot (once sealed): entries sorted by id, unique. */
typedef struct tg_catalog_snap {
    tg_catalog_entry_t *entries;
    size_t n, cap;
    int64_t loaded_ms;
    _Atomic int refs;
} tg_catalog_snap_t;

/* ---- building (the refresh thread, and tests) ---- */
tg_catalog_snap_t *tg_catalog_snap_new(void);
int tg_catalog_snap_add(tg_catalog_snap_t *s, const char *id, size_t n, int kind);
/* Sorts and removes duplicates; the snapshot is then read-only. */
void tg_catalog_snap_seal(tg_catalog_snap_t *s);
/* ListFoundationModels' body: every modelSummaries[].modelId. Returns the
 * number added, or TG_EPROTO when the body is not that shape. */
int tg_catalog_parse_models(tg_catalog_snap_t *s, const char *body, size_t len);
/* One ListInferenceProfiles page: every inferenceProfileSummaries[]
 * .inferenceProfileId; next gets nextToken ("" on the last page). Returns
 * the number added, TG_EPROTO, or TG_ETOOBIG when nextToken does not fit. */
int tg_catalog_parse_profiles(tg_catalog_snap_t *s, const char *body, size_t len, char *next,
                              size_t nextcap);

/* ---- reading (any thread) ---- */
/* Whether the sealed snapshot holds this id. */
int tg_catalog_snap_has(const tg_catalog_snap_t *s, const char *id, size_t n);
/* Drops a reference; frees at zero. */
void tg_catalog_snap_release(tg_catalog_snap_t *s);

/* ---- the per-provider refresher ---- */
typedef struct tg_catalog tg_catalog_t;

/* p and auth must outlive the catalogue. Does no I/O. */
int tg_catalog_create(tg_catalog_t **out, const tg_provider_t *p, tg_awsauth_t *auth);
int tg_catalog_start(tg_catalog_t *c);
/* Stops the thread (waking it) and frees; snapshots held stay valid. */
void tg_catalog_destroy(tg_catalog_t *c);
/* The current snapshot with a reference held, or NULL before the first load. */
tg_catalog_snap_t *tg_catalog_acquire(tg_catalog_t *c);
/* Installs s (sealed) as the current snapshot; takes the caller's reference. */
void tg_catalog_publish(tg_catalog_t *c, tg_catalog_snap_t *s);

#endif

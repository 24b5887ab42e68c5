/* store.c - the public tg_store_* functions: pick a backend by driver name at
 * open, then forward every call through the connection's backend table.
 *
 * Kept separate from the backends so adding PostgreSQL is one new file and
 * one line in the table below; callers never change. */
#include "store/backend.h"

#include <string.h>

#include "core/core.h"

static const tg_store_backend_t *const backends[] = {
    &tg_store_sqlite_backend,
};

int tg_store_open(tg_store_t **out, const tg_store_config_t *cfg)
{
    if (!out || !cfg || !cfg->path) return TG_EINVAL;
    *out = NULL;
    /* No driver named means the embedded default. */
    const char *driver = cfg->driver && cfg->driver[0] ? cfg->driver : "sqlite";
    for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
        if (strcmp(backends[i]->name, driver) == 0) return backends[i]->open(out, cfg);
    tg_error("store: unknown driver \"%s\"", driver);
    return TG_ECONFIG;
}

void tg_store_close(tg_store_t *st)
{
    if (st) st->be->close(st);
}

int tg_store_schema_version(tg_store_t *st)
{
    return st->be->schema_version(st);
}

int tg_store_ping(tg_store_t *st)
{
    return st->be->ping(st);
}

int tg_store_data_version(tg_store_t *st, int64_t *out)
{
    return st->be->data_version(st, out);
}

int tg_store_key_insert(tg_store_t *st, const tg_key_t *k)
{
    return st->be->key_insert(st, k);
}

int tg_store_key_revoke(tg_store_t *st, const char *id_or_prefix, int64_t now_ms)
{
    return st->be->key_revoke(st, id_or_prefix, now_ms);
}

int tg_store_keys_list(tg_store_t *st, tg_key_t **out, size_t *n)
{
    return st->be->keys_list(st, out, n);
}

int tg_store_usage_append(tg_store_t *st, const tg_usage_event_t *ev, size_t n)
{
    return st->be->usage_append(st, ev, n);
}

int tg_store_usage_list(tg_store_t *st, int64_t from_ms, int64_t to_ms, tg_usage_event_t **out,
                        size_t *n)
{
    return st->be->usage_list(st, from_ms, to_ms, out, n);
}

int tg_store_usage_count(tg_store_t *st, int64_t *out)
{
    return st->be->usage_count(st, out);
}

/* store.c - the public tg_store_* functions: pick a backend by driver name at
 * open, then forward every call through the connection's backend table.
 *
 * Kept separate from the backends so adding PostgreSQL is one new file and
 * one line in the table below; callers never change. The field tables that
 * map keys, usage events, units and teams to columns live here too, shared
 * by every backend and by the writer's failure log. */
#include "store/backend.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/core.h"

/* clang-format off */
#define FLD(T, f, k) {#f, TG_FIELD_##k, offsetof(T, f), sizeof(((T *)0)->f)}
/* clang-format on */
#define KFLD(f, k) FLD(tg_key_t, f, k)
#define UFLD(f, k) FLD(tg_usage_event_t, f, k)
#define NFLD(f, k) FLD(tg_unit_t, f, k)
#define TFLD(f, k) FLD(tg_team_t, f, k)
#define COUNT(a)   (sizeof(a) / sizeof((a)[0]))

const tg_store_field_t tg_store_key_fields[] = {
    KFLD(id, TEXT),        KFLD(unit, TEXT),      KFLD(team, TEXT),           KFLD(name, TEXT),
    KFLD(prefix, TEXT),    KFLD(hash, BLOB),      KFLD(created_ms, I64),      KFLD(expires_ms, I64),
    KFLD(revoked_ms, I64), KFLD(prev_hash, BLOB), KFLD(prev_expires_ms, I64), KFLD(salt, BLOB),
    KFLD(prev_salt, BLOB),
};
const size_t tg_store_key_nfields = COUNT(tg_store_key_fields);

/* Every field of tg_usage_event_t, in declaration order. */
const tg_store_field_t tg_store_usage_fields[] = {
    UFLD(id, TEXT),
    UFLD(request_id, TEXT),
    UFLD(started_ms, I64),
    UFLD(ended_ms, I64),
    UFLD(unit, TEXT),
    UFLD(team, TEXT),
    UFLD(key_id, TEXT),
    UFLD(model, TEXT),
    UFLD(upstream_model, TEXT),
    UFLD(provider, TEXT),
    UFLD(region, TEXT),
    UFLD(api, TEXT),
    UFLD(streamed, INT),
    UFLD(status, INT),
    UFLD(outcome, TEXT),
    UFLD(input_tokens, I64),
    UFLD(output_tokens, I64),
    UFLD(cache_read_tokens, I64),
    UFLD(cache_write_tokens, I64),
    UFLD(images, I64),
    UFLD(image_width, I64),
    UFLD(image_height, I64),
    UFLD(image_steps, I64),
    UFLD(image_quality, TEXT),
    UFLD(token_source, INT),
    UFLD(cost_input, I64),
    UFLD(cost_output, I64),
    UFLD(cost_cache_read, I64),
    UFLD(cost_cache_write, I64),
    UFLD(cost_images, I64),
    UFLD(cost_total, I64),
    UFLD(price_version, TEXT),
    UFLD(unpriced, INT),
    UFLD(over_budget, INT),
    UFLD(latency_us, I64),
    UFLD(ttfb_us, I64),
};
const size_t tg_store_usage_nfields = COUNT(tg_store_usage_fields);

const tg_store_field_t tg_store_unit_fields[] = {
    NFLD(id, TEXT),         NFLD(name, TEXT),      NFLD(updated_ms, I64),
    NFLD(disabled_ms, I64), NFLD(created_ms, I64),
};
const size_t tg_store_unit_nfields = COUNT(tg_store_unit_fields);

const tg_store_field_t tg_store_team_fields[] = {
    TFLD(id, TEXT),        TFLD(unit, TEXT),       TFLD(name, TEXT),      TFLD(cost_center, TEXT),
    TFLD(updated_ms, I64), TFLD(disabled_ms, I64), TFLD(created_ms, I64),
};
const size_t tg_store_team_nfields = COUNT(tg_store_team_fields);

static const tg_store_backend_t *const backends[] = {
    &tg_store_sqlite_backend,
};

int tg_store_open(tg_store_t **out, const tg_store_config_t *cfg)
{
    if (!out || !cfg || !cfg->path) return TG_EINVAL;
    *out = NULL;
    /* No driver named means the embedded default. */
    const char *driver = cfg->driver && cfg->driver[0] ? cfg->driver : "sqlite";
    for (size_t i = 0; i < COUNT(backends); i++)
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

int tg_store_key_update(tg_store_t *st, const char *id, const char *name, int64_t expires_ms)
{
    return st->be->key_update(st, id, name, expires_ms);
}

int tg_store_key_rotate(tg_store_t *st, const char *id, const tg_key_t *fresh,
                        int64_t prev_expires_ms)
{
    return st->be->key_rotate(st, id, fresh, prev_expires_ms);
}

int tg_store_unit_insert(tg_store_t *st, const tg_unit_t *u)
{
    return st->be->unit_insert(st, u);
}

int tg_store_unit_update(tg_store_t *st, const tg_unit_t *u)
{
    return st->be->unit_update(st, u);
}

int tg_store_units_list(tg_store_t *st, tg_unit_t **out, size_t *n)
{
    return st->be->units_list(st, out, n);
}

int tg_store_team_insert(tg_store_t *st, const tg_team_t *t)
{
    return st->be->team_insert(st, t);
}

int tg_store_team_update(tg_store_t *st, const tg_team_t *t)
{
    return st->be->team_update(st, t);
}

int tg_store_teams_list(tg_store_t *st, tg_team_t **out, size_t *n)
{
    return st->be->teams_list(st, out, n);
}

int tg_store_policy_set(tg_store_t *st, const char *entity, const char *json, int64_t now_ms)
{
    return st->be->policy_set(st, entity, json, now_ms);
}

int tg_store_policies_list(tg_store_t *st, tg_policy_row_t **out, size_t *n)
{
    return st->be->policies_list(st, out, n);
}

/* Backend-independent: the rows are plain malloc'ed memory. */
void tg_store_policies_free(tg_policy_row_t *rows, size_t n)
{
    for (size_t i = 0; rows && i < n; i++)
        free(rows[i].json);
    free(rows);
}

int tg_store_admin_key_insert(tg_store_t *st, const tg_key_t *k)
{
    return st->be->admin_key_insert(st, k);
}

int tg_store_admin_key_check(tg_store_t *st, const uint8_t hash[32])
{
    return st->be->admin_key_check(st, hash);
}

int tg_store_admin_key_count(tg_store_t *st, int64_t *active)
{
    return st->be->admin_key_count(st, active);
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

int tg_store_usage_totals(tg_store_t *st, unsigned scope, int64_t since_ms, tg_usage_total_t **out,
                          size_t *n)
{
    return st->be->usage_totals(st, scope, since_ms, out, n);
}

int tg_store_checkpoint(tg_store_t *st)
{
    return st->be->checkpoint ? st->be->checkpoint(st) : 0;
}

int tg_store_rollup_refresh(tg_store_t *st, int *hours)
{
    return st->be->rollup_refresh(st, hours);
}

int tg_store_rollup_rebuild(tg_store_t *st, int64_t from_ms, int64_t to_ms)
{
    return st->be->rollup_rebuild(st, from_ms, to_ms);
}

int tg_store_rollup_query(tg_store_t *st, const tg_rollup_query_t *q, tg_rollup_row_t **out,
                          size_t *n)
{
    return st->be->rollup_query(st, q, out, n);
}

int tg_store_report_pending(tg_store_t *st, int64_t before_ms, tg_report_day_t **out, size_t *n)
{
    return st->be->report_pending(st, before_ms, out, n);
}

int tg_store_report_version(tg_store_t *st, int64_t day_ms, int64_t *version)
{
    return st->be->report_version(st, day_ms, version);
}

int tg_store_report_done(tg_store_t *st, int64_t day_ms, int64_t version)
{
    return st->be->report_done(st, day_ms, version);
}

/* backend.h - private to src/store: the table of functions a store backend
 * provides, so SQLite today and PostgreSQL later sit behind the same public
 * tg_store_* functions (store.c dispatches; nothing outside this folder sees
 * this header).
 *
 * A backend's connection struct embeds tg_store_t as its first member, so the
 * public handle and the backend's own struct are the same pointer. */
#ifndef TG_STORE_BACKEND_H
#define TG_STORE_BACKEND_H

#include "store/store.h"

typedef struct tg_store_backend {
    const char *name; /* matched against tg_store_config_t.driver */
    int (*open)(tg_store_t **out, const tg_store_config_t *cfg);
    void (*close)(tg_store_t *st);
    int (*schema_version)(tg_store_t *st);
    int (*ping)(tg_store_t *st);
    int (*data_version)(tg_store_t *st, int64_t *out);
    int (*key_insert)(tg_store_t *st, const tg_key_t *k);
    int (*key_revoke)(tg_store_t *st, const char *id_or_prefix, int64_t now_ms);
    int (*keys_list)(tg_store_t *st, tg_key_t **out, size_t *n);
    int (*key_update)(tg_store_t *st, const char *id, const char *name, int64_t expires_ms);
    int (*key_rotate)(tg_store_t *st, const char *id, const tg_key_t *fresh,
                      int64_t prev_expires_ms);
    int (*unit_insert)(tg_store_t *st, const tg_unit_t *u);
    int (*unit_update)(tg_store_t *st, const tg_unit_t *u);
    int (*units_list)(tg_store_t *st, tg_unit_t **out, size_t *n);
    int (*team_insert)(tg_store_t *st, const tg_team_t *t);
    int (*team_update)(tg_store_t *st, const tg_team_t *t);
    int (*teams_list)(tg_store_t *st, tg_team_t **out, size_t *n);
    int (*policy_set)(tg_store_t *st, const char *entity, const char *json, int64_t now_ms);
    int (*policies_list)(tg_store_t *st, tg_policy_row_t **out, size_t *n);
    int (*admin_key_insert)(tg_store_t *st, const tg_key_t *k);
    int (*admin_key_check)(tg_store_t *st, const uint8_t hash[32]);
    int (*admin_key_count)(tg_store_t *st, int64_t *active);
    int (*usage_append)(tg_store_t *st, const tg_usage_event_t *ev, size_t n);
    int (*usage_list)(tg_store_t *st, int64_t from_ms, int64_t to_ms, tg_usage_event_t **out,
                      size_t *n);
    int (*usage_count)(tg_store_t *st, int64_t *out);
    int (*usage_totals)(tg_store_t *st, unsigned scope, int64_t since_ms, tg_usage_total_t **out,
                        size_t *n);
    int (*checkpoint)(tg_store_t *st);
    int (*rollup_refresh)(tg_store_t *st, int *hours);
    int (*rollup_rebuild)(tg_store_t *st, int64_t from_ms, int64_t to_ms);
    int (*rollup_query)(tg_store_t *st, const tg_rollup_query_t *q, tg_rollup_row_t **out,
                        size_t *n);
    int (*report_pending)(tg_store_t *st, int64_t before_ms, tg_report_day_t **out, size_t *n);
    int (*report_version)(tg_store_t *st, int64_t day_ms, int64_t *version);
    int (*report_done)(tg_store_t *st, int64_t day_ms, int64_t version);
} tg_store_backend_t;

/* One column of a row, described once: backends use the table to bind and
 * read rows (column name = field name), the writer to log an event it could
 * not commit. */
enum { TG_FIELD_TEXT, TG_FIELD_BLOB, TG_FIELD_I64, TG_FIELD_INT };
typedef struct {
    const char *name;
    int kind;
    size_t off;
    size_t size; /* bytes of the char/uint8_t array for TEXT and BLOB */
} tg_store_field_t;

extern const tg_store_field_t tg_store_key_fields[];
extern const size_t tg_store_key_nfields;
extern const tg_store_field_t tg_store_usage_fields[];
extern const size_t tg_store_usage_nfields;
/* Units and teams: id first (the primary key), then the columns an update
 * replaces, then created_ms last (set once, at insert). */
extern const tg_store_field_t tg_store_unit_fields[];
extern const size_t tg_store_unit_nfields;
extern const tg_store_field_t tg_store_team_fields[];
extern const size_t tg_store_team_nfields;

/* The common head of every backend connection. */
struct tg_store {
    const tg_store_backend_t *be;
};

extern const tg_store_backend_t tg_store_sqlite_backend;

#endif

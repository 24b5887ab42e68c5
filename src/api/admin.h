/* admin.h - the admin API: its own listener (loopback by default), its own
 * credentials (admin keys, never a tenant's key).
 *
 *   GET /admin/reports?from=DATE[&to=DATE][&group_by=LIST][&format=F]
 *                     [&decimals=N][&unit=U][&team=T][&key=KEY_ID][&model=M]
 *   GET /healthz
 *
 * Requests are authenticated with an admin key ("Authorization: Bearer
 * tga_..." or "x-api-key"); a tenant key is refused with 403. Work that
 * touches the store runs on libuv's thread pool, never on the listener's
 * loop. Later governance endpoints hang off the same router. */
#ifndef TG_API_ADMIN_H
#define TG_API_ADMIN_H

#include "config/config.h"
#include "api/metrics.h"
#include "http/http.h"
#include "tenancy/tenancy.h"

typedef struct tg_admin tg_admin_t;

int tg_admin_create(tg_admin_t **out, const tg_config_t *cfg, tg_tenancy_t *tenancy,
                    tg_metrics_t *metrics);
void tg_admin_destroy(tg_admin_t *a);
/* The callbacks to give tg_server_create for the admin listener. */
const tg_http_app_t *tg_admin_app(tg_admin_t *a);

#endif

/* manage.h - governance operations on units, teams and keys (and their
 * policies), JSON in and JSON out: the one implementation behind both the
 * admin API's endpoints and the CLI's subcommands, so the two cannot drift.
 *
 * A request is phrased the way the admin API receives it (method, path under
 * /admin, query, parsed JSON body); the CLI builds the same requests from its
 * options. The answer is an HTTP status with either a JSON body or an error
 * code and a message naming the field at fault.
 *
 *   POST  /admin/units                {id, name?, policy?}                  201 unit
 *   GET   /admin/units                                                      {"data": [unit]}
 *   GET   /admin/units/ID                                                   unit
 *   PATCH /admin/units/ID             {name?, disabled?, policy?}           unit
 *   POST  /admin/teams                {id, unit?, name?, cost_center?, policy?}  201 team
 *   GET   /admin/teams[?unit=U]                                             {"data": [team]}
 *   GET   /admin/teams/ID                                                   team
 *   PATCH /admin/teams/ID             {unit?, name?, cost_center?, disabled?, policy?}  team
 *   POST  /admin/keys                 {team, name?, expires_in_s?, policy?} 201 {key, secret}
 *   GET   /admin/keys[?team=T]                                              {"data": [key]}
 *   GET   /admin/keys/ID                                                    key
 *   PATCH /admin/keys/ID              {name?, expires_in_s?, policy?}       key
 *   POST  /admin/keys/ID/revoke                                             key
 *   POST  /admin/keys/ID/rotate       {grace_s?}                            {key, secret}
 *
 * Rules: ids are 1-63 of [A-Za-z0-9._-]; names and cost centers under 64
 * bytes, no control characters; a team's unit must exist when set ("" = none);
 * a policy is checked by tg_policy_parse and stored as its canonical JSON,
 * "policy": null removes it; expires_in_s 0 means never; grace_s is 0 to 30
 * days (default 3600). Unknown body fields are refused. A key's hash is never
 * returned; a secret only by key creation and rotation.
 *
 * An entity that changes several rows (a unit and its policy) is written by
 * consecutive store calls, each its own transaction: the policy is checked
 * before anything is written, so only a store failure can leave the first
 * write without the second. */
#ifndef TG_GOV_MANAGE_H
#define TG_GOV_MANAGE_H

#include <stddef.h>
#include <stdint.h>

#include <cjson/cJSON.h>

#include "store/store.h"

#define TG_MANAGE_MAX_BODY 65536 /* request bodies over this: 413 */

typedef struct {
    int method;       /* TG_HTTP_GET, TG_HTTP_POST, TG_HTTP_PATCH (http/http.h) */
    const char *path; /* "/admin/teams/t1", without the query; not percent-decoded */
    size_t path_len;
    const char *query; /* "unit=u1" (percent-encoded), "" or NULL */
    const cJSON *body; /* borrowed; NULL when the request has none */
    int64_t now_ms;    /* unix ms: creation, update and expiry times */
} tg_manage_req_t;

typedef struct {
    int status;        /* 200, 201; 400, 404, 405, 409; 500, 503 */
    cJSON *body;       /* status < 300: the answer, owned by the caller (cJSON_Delete) */
    const char *code;  /* status >= 300: a stable code ("invalid_field", ...); static */
    char message[320]; /* status >= 300: for people; names the field at fault */
} tg_manage_result_t;

/* Whether method and path name an endpoint above: 0, or the status to answer
 * (404 not_found, 405 method_not_allowed) with res's code and message set.
 * No store work, so a caller can answer it before authenticating. */
int tg_manage_route(const tg_manage_req_t *req, tg_manage_result_t *res);

/* Performs req on st and fills res (body NULL on errors). Returns res->status. */
int tg_manage(tg_store_t *st, const tg_manage_req_t *req, tg_manage_result_t *res);

/* Whether s is a valid id: 1-63 of [A-Za-z0-9._-]. */
int tg_manage_id_valid(const char *s, size_t len);

#endif

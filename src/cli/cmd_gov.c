/* cmd_gov.c - governance from the command line: units, teams, and the key
 * subcommands that change a key (create, show, update, rotate).
 *
 *   tollgate units create ID [--name N] [--policy JSON|@FILE]
 *   tollgate units list | show ID | disable ID | enable ID
 *   tollgate units update ID [--name N] [--policy JSON|@FILE|none]
 *   tollgate teams create ID [--unit U] [--name N] [--cost-center C] [--policy ...]
 *   tollgate teams list [--unit U] | show ID | disable ID | enable ID
 *   tollgate teams update ID [--unit U] [--name N] [--cost-center C] [--policy ...]
 *   tollgate keys create --team TEAM [--name N] [--expires-in SECONDS] [--policy ...]
 *   tollgate keys show ID
 *   tollgate keys update ID [--name N] [--expires-in SECONDS] [--policy ...]
 *   tollgate keys rotate ID [--grace SECONDS]
 *
 * (each with --config FILE). A command is the admin API request it stands
 * for: this file only turns options into that request's path and JSON body
 * and prints the answer; gov/manage.c does the work for both, so the CLI and
 * the API cannot drift. Answers are printed as the API's JSON, except key
 * creation and rotation, whose secret is alone on the last line of stdout.
 * Exit 0 done, 1 refused (the message names the field), 2 usage error. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "config/config.h"
#include "core/core.h"
#include "gov/manage.h"
#include "gov/policy.h"
#include "http/http.h"
#include "store/store.h"

static const char gov_usage[] =
    "usage: tollgate units create ID --config FILE [--name N] [--policy JSON|@FILE]\n"
    "       tollgate units list|show ID|disable ID|enable ID --config FILE\n"
    "       tollgate units update ID --config FILE [--name N] [--policy JSON|@FILE|none]\n"
    "       tollgate teams create ID --config FILE [--unit U] [--name N] [--cost-center C]\n"
    "                                [--policy JSON|@FILE]\n"
    "       tollgate teams list --config FILE [--unit U]\n"
    "       tollgate teams show ID|disable ID|enable ID --config FILE\n"
    "       tollgate teams update ID --config FILE [--unit U] [--name N] [--cost-center C]\n"
    "                                [--policy JSON|@FILE|none]\n"
    "       tollgate keys create --config FILE --team TEAM [--name N] [--expires-in SECONDS]\n"
    "                            [--policy JSON|@FILE]\n"
    "       tollgate keys show ID --config FILE\n"
    "       tollgate keys update ID --config FILE [--name N] [--expires-in SECONDS]\n"
    "                               [--policy JSON|@FILE|none]\n"
    "       tollgate keys rotate ID --config FILE [--grace SECONDS]\n";

/* Options, and the body field each becomes (NULL: not a body field). */
enum { O_NAME, O_POLICY, O_UNIT, O_COST_CENTER, O_TEAM, O_EXPIRES_IN, O_GRACE, O__COUNT };
static const struct {
    const char *flag, *field;
    int seconds; /* a number of seconds, sent as a JSON number */
} opts[O__COUNT] = {
    [O_NAME] = {"--name", "name", 0},      [O_POLICY] = {"--policy", "policy", 0},
    [O_UNIT] = {"--unit", "unit", 0},      [O_COST_CENTER] = {"--cost-center", "cost_center", 0},
    [O_TEAM] = {"--team", "team", 0},      [O_EXPIRES_IN] = {"--expires-in", "expires_in_s", 1},
    [O_GRACE] = {"--grace", "grace_s", 1},
};
#define BIT(o) (1u << (o))

enum { ID_NONE, ID_PATH, ID_BODY }; /* where the ID argument goes */
enum { OUT_JSON, OUT_CREATED, OUT_ROTATED };

typedef struct {
    const char *group, *sub;
    int method;
    const char *path; /* "%s" is the ID */
    int id;           /* ID_* */
    unsigned allowed; /* BIT(O_*) */
    int disabled;     /* -1: no "disabled" field; else its value */
    int out;          /* OUT_* */
} gov_cmd_t;

#define UPDATE_TEAM (BIT(O_UNIT) | BIT(O_NAME) | BIT(O_COST_CENTER) | BIT(O_POLICY))
static const gov_cmd_t cmds[] = {
    {"units", "create", TG_HTTP_POST, "/admin/units", ID_BODY, BIT(O_NAME) | BIT(O_POLICY), -1,
     OUT_JSON},
    {"units", "list", TG_HTTP_GET, "/admin/units", ID_NONE, 0, -1, OUT_JSON},
    {"units", "show", TG_HTTP_GET, "/admin/units/%s", ID_PATH, 0, -1, OUT_JSON},
    {"units", "update", TG_HTTP_PATCH, "/admin/units/%s", ID_PATH, BIT(O_NAME) | BIT(O_POLICY), -1,
     OUT_JSON},
    {"units", "disable", TG_HTTP_PATCH, "/admin/units/%s", ID_PATH, 0, 1, OUT_JSON},
    {"units", "enable", TG_HTTP_PATCH, "/admin/units/%s", ID_PATH, 0, 0, OUT_JSON},
    {"teams", "create", TG_HTTP_POST, "/admin/teams", ID_BODY, UPDATE_TEAM, -1, OUT_JSON},
    {"teams", "list", TG_HTTP_GET, "/admin/teams", ID_NONE, BIT(O_UNIT), -1, OUT_JSON},
    {"teams", "show", TG_HTTP_GET, "/admin/teams/%s", ID_PATH, 0, -1, OUT_JSON},
    {"teams", "update", TG_HTTP_PATCH, "/admin/teams/%s", ID_PATH, UPDATE_TEAM, -1, OUT_JSON},
    {"teams", "disable", TG_HTTP_PATCH, "/admin/teams/%s", ID_PATH, 0, 1, OUT_JSON},
    {"teams", "enable", TG_HTTP_PATCH, "/admin/teams/%s", ID_PATH, 0, 0, OUT_JSON},
    {"keys", "create", TG_HTTP_POST, "/admin/keys", ID_NONE,
     BIT(O_TEAM) | BIT(O_NAME) | BIT(O_EXPIRES_IN) | BIT(O_POLICY), -1, OUT_CREATED},
    {"keys", "show", TG_HTTP_GET, "/admin/keys/%s", ID_PATH, 0, -1, OUT_JSON},
    {"keys", "update", TG_HTTP_PATCH, "/admin/keys/%s", ID_PATH,
     BIT(O_NAME) | BIT(O_EXPIRES_IN) | BIT(O_POLICY), -1, OUT_JSON},
    {"keys", "rotate", TG_HTTP_POST, "/admin/keys/%s/rotate", ID_PATH, BIT(O_GRACE), -1,
     OUT_ROTATED},
};

static const gov_cmd_t *find_cmd(const char *group, const char *sub)
{
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
        if (strcmp(cmds[i].group, group) == 0 && strcmp(cmds[i].sub, sub) == 0) return &cmds[i];
    return NULL;
}

int tg_cmd_gov_has(const char *group, const char *sub)
{
    return sub && find_cmd(group, sub) != NULL;
}

typedef struct {
    const char *config;
    const char *val[O__COUNT];
    const char *id;
} gov_args_t;

static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static int usage_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("tollgate: ", stderr);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n%s", gov_usage);
    return 2;
}

static int parse_gov_args(const gov_cmd_t *c, int argc, char **argv, gov_args_t *a)
{
    memset(a, 0, sizeof(*a));
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        const char **slot = strcmp(s, "--config") == 0 ? &a->config : NULL;
        for (int o = 0; o < O__COUNT && !slot; o++)
            if (strcmp(s, opts[o].flag) == 0) {
                if (!(c->allowed & BIT(o)))
                    return usage_error("%s is not an option of this command (%s)", s, c->sub);
                slot = &a->val[o];
            }
        if (slot) {
            if (i + 1 >= argc) return usage_error("%s needs a value", s);
            *slot = argv[++i];
        } else if (s[0] == '-' && s[1] == '-') {
            return usage_error("unknown option %s", s);
        } else if (c->id != ID_NONE && !a->id) {
            a->id = s;
        } else {
            return usage_error("unexpected argument %s", s);
        }
    }
    if (!a->config) return usage_error("--config FILE is required");
    if (c->id != ID_NONE && !a->id) return usage_error("%s %s needs an ID", c->group, c->sub);
    if (c->out == OUT_CREATED && !a->val[O_TEAM])
        return usage_error("%s %s needs --team TEAM", c->group, c->sub);
    for (int o = 0; o < O__COUNT; o++) {
        if (!opts[o].seconds || !a->val[o]) continue;
        const char *v = a->val[o];
        char *end;
        long long n = strtoll(v, &end, 10);
        if (!*v || *end || n < 0)
            return usage_error("%s must be a non-negative integer", opts[o].flag);
    }
    return 0;
}

/* --policy: JSON text, @FILE, or none (null: removes it). NULL with a
 * message on stderr when it cannot be read or parsed. */
static cJSON *policy_arg(const char *v)
{
    if (strcmp(v, "none") == 0) return cJSON_CreateNull();
    char *text = NULL;
    size_t len = 0;
    if (v[0] == '@') {
        text = tg_read_file(v + 1, TG_POLICY_MAX_BYTES, &len);
        if (!text) {
            fprintf(stderr, "tollgate: policy: cannot read %s\n", v + 1);
            return NULL;
        }
    }
    cJSON *j = text ? cJSON_ParseWithLength(text, len) : cJSON_Parse(v);
    free(text);
    if (!j) fprintf(stderr, "tollgate: policy: is not valid JSON\n");
    return j;
}

/* The request body the API would receive for these options. */
static cJSON *build_body(const gov_cmd_t *c, const gov_args_t *a)
{
    cJSON *b = cJSON_CreateObject();
    if (!b) return NULL;
    if (c->id == ID_BODY) cJSON_AddStringToObject(b, "id", a->id);
    if (c->disabled >= 0) cJSON_AddBoolToObject(b, "disabled", c->disabled);
    for (int o = 0; o < O__COUNT; o++) {
        const char *v = a->val[o];
        if (!v || (o == O_UNIT && c->method == TG_HTTP_GET)) continue;
        if (o == O_POLICY) {
            cJSON *p = policy_arg(v);
            if (!p) {
                cJSON_Delete(b);
                return NULL;
            }
            cJSON_AddItemToObject(b, opts[o].field, p);
        } else if (opts[o].seconds) {
            cJSON_AddNumberToObject(b, opts[o].field, (double)strtoll(v, NULL, 10));
        } else {
            cJSON_AddStringToObject(b, opts[o].field, v);
        }
    }
    return b;
}

/* Percent-encodes s for a query value (ids need none; anything else is kept
 * as typed, so the API sees the same value). */
static void query_value(char *out, size_t cap, const char *name, const char *s)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = (size_t)snprintf(out, cap, "%s=", name);
    for (; *s && n + 4 < cap; s++) {
        unsigned char ch = (unsigned char)*s;
        if ((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
            ch == '.' || ch == '_' || ch == '-' || ch == '~') {
            out[n++] = (char)ch;
        } else {
            out[n++] = '%';
            out[n++] = hex[ch >> 4];
            out[n++] = hex[ch & 15];
        }
    }
    out[n] = '\0';
}

static void print_answer(const gov_cmd_t *c, const cJSON *body)
{
    const cJSON *k = cJSON_GetObjectItemCaseSensitive(body, "key");
    const cJSON *secret = cJSON_GetObjectItemCaseSensitive(body, "secret");
    const char *id = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "id"));
    const char *prefix = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "prefix"));
    const char *team = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(k, "team"));
    if (c->out == OUT_CREATED && cJSON_IsString(secret)) {
        printf("Created key %s for team %s (prefix %s). It is shown once: store it now.\n", id,
               team, prefix);
        printf("%s\n", secret->valuestring);
    } else if (c->out == OUT_ROTATED && cJSON_IsString(secret)) {
        const cJSON *until = cJSON_GetObjectItemCaseSensitive(k, "rotated_until_ms");
        char when[32];
        tg_iso8601_ms(when, sizeof(when), (int64_t)cJSON_GetNumberValue(until));
        printf("Rotated key %s (new prefix %s); the old secret is accepted until %s. The new one "
               "is shown once: store it now.\n",
               id, prefix, when);
        printf("%s\n", secret->valuestring);
    } else {
        char *s = cJSON_Print(body);
        if (s) puts(s);
        free(s);
    }
}

static int run(const gov_cmd_t *c, const gov_args_t *a, cJSON *body)
{
    char err[512];
    tg_config_t *cfg;
    if (tg_config_load(&cfg, a->config, err, sizeof(err))) {
        fprintf(stderr, "tollgate: config error: %s\n", err);
        return 2;
    }
    tg_log_level = cfg->log_level;
    /* Tenant secrets derived from it (and SigV4 verifiable), when configured. */
    tg_key_set_derivation(cfg->key_derive_secret,
                          cfg->key_derive_secret ? strlen(cfg->key_derive_secret) : 0);
    if (cfg->key_derive_env && !cfg->key_derive_secret && strcmp(c->group, "keys") == 0 &&
        (strcmp(c->sub, "create") == 0 || strcmp(c->sub, "rotate") == 0)) {
        fprintf(stderr, "tollgate: keys.derive_secret_env: environment variable %s is not set\n",
                cfg->key_derive_env);
        tg_config_free(cfg);
        return 2;
    }
    tg_store_t *st = NULL;
    int rc = tg_store_open(&st, &cfg->store), status = 1;
    if (rc) {
        fprintf(stderr, "tollgate: cannot open store %s: %s\n", cfg->store.path, tg_strerror(rc));
        tg_config_free(cfg);
        return 1;
    }
    char path[128], query[200] = "";
    snprintf(path, sizeof(path), c->path, a->id ? a->id : "");
    if (c->method == TG_HTTP_GET && a->val[O_UNIT])
        query_value(query, sizeof(query), "unit", a->val[O_UNIT]);
    tg_manage_req_t req = {.method = c->method,
                           .path = path,
                           .path_len = strlen(path),
                           .query = query,
                           .body = c->method == TG_HTTP_GET ? NULL : body,
                           .now_ms = tg_wall_ms()};
    tg_manage_result_t res;
    if (tg_manage(st, &req, &res) < 300) {
        print_answer(c, res.body);
        status = 0;
    } else {
        fprintf(stderr, "tollgate: %s %s refused: %s\n", c->group, c->sub, res.message);
    }
    cJSON_Delete(res.body);
    tg_store_close(st);
    tg_config_free(cfg);
    return status;
}

int tg_cmd_gov(const char *group, int argc, char **argv)
{
    const gov_cmd_t *c = argc > 0 ? find_cmd(group, argv[0]) : NULL;
    if (!c) {
        fprintf(stderr, "tollgate: %s needs one of:%s\n%s", group,
                strcmp(group, "keys") == 0 ? " create, list, show, update, rotate, revoke"
                                           : " create, list, show, update, disable, enable",
                gov_usage);
        return 2;
    }
    gov_args_t a;
    if (parse_gov_args(c, argc - 1, argv + 1, &a)) return 2;
    cJSON *body = build_body(c, &a);
    if (!body) return 1;
    int status = run(c, &a, body);
    cJSON_Delete(body);
    return status;
}

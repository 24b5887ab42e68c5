/* main.c - the tollgate command line: serve, keys, usage, prices, sigv4.
 *
 *   tollgate serve --config FILE [--listen HOST:PORT] [--admin-listen HOST:PORT|off]
 *   tollgate admin create-key --config FILE [--name NAME]
 *   tollgate keys list --config FILE [--json]
 *   tollgate keys revoke --config FILE ID_OR_PREFIX
 *   tollgate keys create|show|update|rotate ... (cmd_gov.c; takes its own options)
 *   tollgate units|teams ... (cmd_gov.c; takes its own options)
 *   tollgate usage list --config FILE [--since UNIX_MS] [--until UNIX_MS]
 *   tollgate usage import ... (cmd_report.c; takes its own options)
 *   tollgate report [run] ... (cmd_report.c; takes its own options)
 *   tollgate prices show ... (cmd_prices.c; takes its own options)
 *   tollgate sigv4 ... (cmd_sigv4.c; takes its own options)
 *
 * The subcommands only parse arguments and call the modules; no logic of
 * their own lives here. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "api/admin.h"
#include "api/api.h"
#include "aws/credentials.h"
#include "gov/limits.h"
#include "providers/awsauth.h"
#include "cli/cli.h"
#include "upstream/upstream.h"
#include "usage/cost.h"
#include "usage/reportjob.h"

#define TG_VERSION "0.1.0"

static const char usage_text[] =
    "usage:\n"
    "  tollgate serve --config FILE [--listen HOST:PORT] [--admin-listen HOST:PORT|off]\n"
    "  tollgate admin create-key --config FILE [--name NAME]\n"
    "  tollgate keys create --config FILE --team TEAM [--name NAME] [--expires-in SECONDS]\n"
    "                       [--policy JSON|@FILE]\n"
    "  tollgate keys list --config FILE [--json]\n"
    "  tollgate keys show ID --config FILE\n"
    "  tollgate keys update ID --config FILE [--name N] [--expires-in SECONDS]\n"
    "                       [--policy JSON|@FILE|none]\n"
    "  tollgate keys rotate ID --config FILE [--grace SECONDS]\n"
    "  tollgate keys revoke --config FILE ID_OR_PREFIX\n"
    "  tollgate units create|list|show|update|disable|enable ... (see docs/cli.md)\n"
    "  tollgate teams create|list|show|update|disable|enable ... (see docs/cli.md)\n"
    "  tollgate usage list --config FILE [--since UNIX_MS] [--until UNIX_MS]\n"
    "  tollgate usage import --config FILE [FILE|-]\n"
    "  tollgate report --config FILE --from DATE [--to DATE] [--group-by LIST]\n"
    "                  [--format table|csv|json|jsonl|markdown] [--decimals N]\n"
    "  tollgate report run --config FILE (--date DATE | --from DATE --to DATE)\n"
    "  tollgate prices show --config FILE [--model M] [--region R] [--at TIME] [--all]\n"
    "  tollgate sigv4 --access-key-id ID --secret-access-key S --region R --service SVC\n"
    "                 --print canonical-request|string-to-sign|signature|signed-request < REQUEST\n"
    "  tollgate version\n";

typedef struct {
    const char *config, *listen, *admin_listen, *name, *since, *until;
    int json;
    const char *pos[4];
    int npos;
} args_t;

static int parse_args(int argc, char **argv, args_t *a)
{
    memset(a, 0, sizeof(*a));
    for (int i = 0; i < argc; i++) {
        const char *s = argv[i];
        const char **slot = strcmp(s, "--config") == 0         ? &a->config
                            : strcmp(s, "--listen") == 0       ? &a->listen
                            : strcmp(s, "--admin-listen") == 0 ? &a->admin_listen
                            : strcmp(s, "--name") == 0         ? &a->name
                            : strcmp(s, "--since") == 0        ? &a->since
                            : strcmp(s, "--until") == 0        ? &a->until
                                                               : NULL;
        if (slot) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tollgate: %s needs a value\n", s);
                return -1;
            }
            *slot = argv[++i];
        } else if (strcmp(s, "--json") == 0) {
            a->json = 1;
        } else if (s[0] == '-' && s[1] == '-') {
            fprintf(stderr, "tollgate: unknown option %s\n", s);
            return -1;
        } else if (a->npos < 4) {
            a->pos[a->npos++] = s;
        } else {
            fprintf(stderr, "tollgate: too many arguments\n");
            return -1;
        }
    }
    return 0;
}

static tg_config_t *load_config(const args_t *a)
{
    if (!a->config) {
        fprintf(stderr, "tollgate: --config FILE is required\n%s", usage_text);
        return NULL;
    }
    char err[512];
    tg_config_t *cfg;
    if (tg_config_load(&cfg, a->config, err, sizeof(err))) {
        fprintf(stderr, "tollgate: config error: %s\n", err);
        return NULL;
    }
    tg_log_level = cfg->log_level;
    /* Tenant secrets derived from it (and SigV4 verifiable), when configured. */
    tg_key_set_derivation(cfg->key_derive_secret,
                          cfg->key_derive_secret ? strlen(cfg->key_derive_secret) : 0);
    return cfg;
}

static tg_store_t *open_store(const tg_config_t *cfg)
{
    tg_store_t *st;
    int rc = tg_store_open(&st, &cfg->store);
    if (rc) {
        fprintf(stderr, "tollgate: cannot open store %s: %s\n", cfg->store.path, tg_strerror(rc));
        return NULL;
    }
    return st;
}

static int parse_i64(const char *s, const char *what, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < 0) {
        fprintf(stderr, "tollgate: %s must be a non-negative integer\n", what);
        return -1;
    }
    *out = v;
    return 0;
}

/* ---- serve ------------------------------------------------------------------ */

static tg_server_t *g_server, *g_admin_server;

static void on_signal(int sig)
{
    (void)sig;
    if (g_server) tg_server_stop(g_server);
    if (g_admin_server) tg_server_stop(g_admin_server);
}

/* The reports bucket's credentials (refreshed on their own thread) and the
 * uploader; a missing named variable is a start-up error. */
static int start_report_s3(const tg_config_t *cfg, tg_aws_credprov_t **creds, tg_report_s3_t **out)
{
    const tg_reports_config_t *r = &cfg->reports;
    char missing[160] = "";
    int rc =
        tg_aws_credprov_from_config(creds, &r->s3_creds, r->s3_region, missing, sizeof(missing));
    if (!rc && !*creds) {
        tg_error("reports.s3.credentials: %s", missing);
        return TG_ECONFIG;
    }
    if (!rc) rc = tg_aws_credprov_start(*creds);
    if (!rc && tg_aws_credprov_wait(*creds, 3000, missing, sizeof(missing)))
        tg_warn("reports: no credentials for s3://%s yet (%s); uploads wait for them", r->s3_bucket,
                missing);
    tg_report_s3_opts_t o = {.bucket = r->s3_bucket,
                             .region = r->s3_region,
                             .endpoint = r->s3_endpoint,
                             .prefix = r->s3_prefix,
                             .creds = *creds};
    if (!rc) rc = tg_report_s3_create(out, &o);
    if (rc) tg_error("cannot set up the reports bucket: %s", tg_strerror(rc));
    return rc;
}

/* On the first start, the admin API's first credential, printed once. */
static int first_admin_key(tg_store_t *st)
{
    int64_t n = 0;
    int rc = tg_store_admin_key_count(st, &n);
    if (rc || n > 0) return rc;
    tg_key_t k;
    char secret[TG_KEY_SECRET_MAX];
    memset(&k, 0, sizeof(k));
    snprintf(k.name, sizeof(k.name), "first");
    if ((rc = tg_admin_key_generate(&k, secret, sizeof(secret))) ||
        (rc = tg_store_admin_key_insert(st, &k))) {
        tg_error("cannot create the first admin key: %s", tg_strerror(rc));
        return rc;
    }
    printf("tollgate admin key (shown once; store it now): %s\n", secret);
    fflush(stdout);
    memset(secret, 0, sizeof(secret));
    return 0;
}

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static void on_commit(const tg_usage_event_t *ev, size_t n, void *ud)
{
    tg_metrics_usage(ud, ev, n);
}

static int cmd_serve(const args_t *a)
{
    tg_config_t *cfg = load_config(a);
    if (!cfg) return 2;
    char err[256];
    if ((a->listen && tg_config_set_listen(cfg, a->listen, err, sizeof(err))) ||
        (a->admin_listen && tg_config_set_admin_listen(cfg, a->admin_listen, err, sizeof(err)))) {
        fprintf(stderr, "tollgate: %s\n", err);
        tg_config_free(cfg);
        return 2;
    }
    if (cfg->key_derive_env && !cfg->key_derive_secret) {
        /* Keys made now would not be derived: refuse rather than drift. */
        fprintf(stderr,
                "tollgate: config error: keys.derive_secret_env: environment variable %s "
                "is not set\n",
                cfg->key_derive_env);
        tg_config_free(cfg);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    raise_nofile();
    int status = 1;
    tg_tenancy_t *ten = NULL;
    tg_writer_t *writer = NULL;
    tg_metrics_t *metrics = NULL;
    tg_gateway_t *gw = NULL;
    tg_server_t *srv = NULL, *admin_srv = NULL;
    tg_admin_t *admin = NULL;
    tg_reportjob_t *reports = NULL;
    tg_report_s3_t *s3 = NULL;
    tg_aws_credprov_t *s3creds = NULL;
    tg_key_reloader_t reloader = {NULL, NULL, -1};
    tg_gov_t *gov = NULL;
    tg_store_t *st = open_store(cfg);
    if (!st || tg_upstream_global_init() || tg_tenancy_create(&ten) || tg_gov_create(&gov))
        goto out;
    if (cfg->admin_port >= 0 && first_admin_key(st)) goto out;
    /* Keys are loaded before the first request; later changes by the writer
     * tick, whose own connection starts over (seen = -1: its first tick loads). */
    reloader.tenancy = ten;
    reloader.gov = gov;
    tg_gateway_reload_tick(st, &reloader);
    reloader.seen = -1;
    tg_store_close(st);
    st = NULL;
    int rc = tg_writer_start(&writer, &cfg->store, cfg->ledger_queue_max);
    if (rc) {
        tg_error("cannot start the ledger writer: %s", tg_strerror(rc));
        goto out;
    }
    const char **names = calloc(cfg->nproviders + 1, sizeof(char *));
    for (size_t i = 0; names && i < cfg->nproviders; i++)
        names[i] = cfg->providers[i].name;
    rc = names ? tg_metrics_create(&metrics, cfg->http.workers, cfg->nproviders, names) : TG_ENOMEM;
    free(names);
    if (rc) goto out;
    tg_writer_on_commit(writer, on_commit, metrics);
    tg_writer_on_tick(writer, 500, tg_gateway_reload_tick, &reloader);
    /* AWS providers: credentials first (up to 3 s in all), then catalogues. */
    if ((rc = tg_gateway_create(&gw, cfg, ten, writer, metrics)) ||
        (rc = tg_gateway_start_aws(gw, 3000)) ||
        (rc = tg_server_create(&srv, &cfg->http, tg_gateway_app(gw)))) {
        tg_error("cannot create the server: %s", tg_strerror(rc));
        goto out;
    }
    if (cfg->admin_port >= 0) {
        tg_http_config_t ah = cfg->http;
        ah.host = cfg->admin_host;
        ah.port = cfg->admin_port;
        ah.workers = 1;
        ah.cert_file = ah.key_file = NULL; /* TLS is the gateway's listener only */
        if ((rc = tg_admin_create(&admin, cfg, ten, metrics)) ||
            (rc = tg_server_create(&admin_srv, &ah, tg_admin_app(admin))) ||
            (rc = tg_server_start(admin_srv))) {
            tg_error("cannot listen for the admin API on %s:%d: %s", ah.host, ah.port,
                     tg_strerror(rc));
            goto out;
        }
        int v6 = strchr(ah.host, ':') != NULL;
        printf("tollgate admin listening on http://%s%s%s:%d\n", v6 ? "[" : "", ah.host,
               v6 ? "]" : "", tg_server_port(admin_srv));
    }
    if (cfg->reports.enabled) {
        tg_reportjob_opts_t jo = {.dir = cfg->reports.dir,
                                  .refresh_s = cfg->reports.refresh_s,
                                  .daily_at_min = cfg->reports.daily_at_min};
        if (cfg->reports.s3_bucket && (rc = start_report_s3(cfg, &s3creds, &s3))) goto out;
        if (s3) jo.upload = tg_report_s3_upload, jo.upload_ud = s3;
        if ((rc = tg_reportjob_start(&reports, &cfg->store, &jo))) {
            tg_error("cannot start the report schedule: %s", tg_strerror(rc));
            goto out;
        }
    }
    if ((rc = tg_server_start(srv))) {
        tg_error("cannot listen on %s:%d: %s", cfg->http.host, cfg->http.port, tg_strerror(rc));
        goto out;
    }
    g_server = srv;
    g_admin_server = admin_srv;
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (cfg->http.cert_file) {
        const char *th = cfg->http.tls_host;
        int tv6 = strchr(th, ':') != NULL;
        printf("tollgate tls listening on https://%s%s%s:%d\n", tv6 ? "[" : "", th, tv6 ? "]" : "",
               tg_server_tls_port(srv));
    }
    const char *host = cfg->http.host;
    int v6 = strchr(host, ':') != NULL;
    printf("tollgate listening on http://%s%s%s:%d\n", v6 ? "[" : "", host, v6 ? "]" : "",
           tg_server_port(srv));
    fflush(stdout);
    tg_info("tollgate %s: %d workers, store %s, %zu models", TG_VERSION, cfg->http.workers,
            cfg->store.path, cfg->nmodels);
    tg_server_wait(srv);
    if (admin_srv) tg_server_wait(admin_srv);
    tg_info("stopped serving; flushing the ledger");
    status = 0;
out:
    g_server = NULL;
    g_admin_server = NULL;
    if (srv) tg_server_destroy(srv);
    if (admin_srv) tg_server_destroy(admin_srv);
    tg_admin_destroy(admin);
    tg_report_s3_cancel(s3); /* an upload in progress ends now; the day stays pending */
    tg_reportjob_stop(reports);
    tg_report_s3_destroy(s3);
    tg_aws_credprov_destroy(s3creds);
    if (writer) tg_writer_stop(writer); /* commits everything still queued */
    tg_gateway_destroy(gw);
    tg_metrics_destroy(metrics);
    if (ten) tg_tenancy_destroy(ten); /* its snapshots point at gov's counters */
    tg_gov_destroy(gov);
    if (st) tg_store_close(st);
    tg_upstream_global_cleanup();
    tg_config_free(cfg);
    return status;
}

/* ---- keys ------------------------------------------------------------------- */

static cJSON *key_json(const tg_key_t *k)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", k->id);
    cJSON_AddStringToObject(o, "unit", k->unit);
    cJSON_AddStringToObject(o, "team", k->team);
    cJSON_AddStringToObject(o, "name", k->name);
    cJSON_AddStringToObject(o, "prefix", k->prefix);
    cJSON_AddNumberToObject(o, "created_ms", (double)k->created_ms);
    cJSON_AddNumberToObject(o, "expires_ms", (double)k->expires_ms);
    cJSON_AddNumberToObject(o, "revoked_ms", (double)k->revoked_ms);
    return o;
}

static void print_json(cJSON *j)
{
    char *s = cJSON_Print(j);
    if (s) puts(s);
    free(s);
    cJSON_Delete(j);
}

/* keys list and revoke; create, show, update and rotate are cmd_gov.c's. */
static int cmd_keys(const args_t *a)
{
    const char *sub = a->npos > 1 ? a->pos[1] : "";
    if (strcmp(sub, "list") && strcmp(sub, "revoke")) {
        fprintf(stderr, "tollgate: keys needs create, list, show, update, rotate or revoke\n%s",
                usage_text);
        return 2;
    }
    if (strcmp(sub, "revoke") == 0 && a->npos < 3) {
        fprintf(stderr, "tollgate: keys revoke needs a key id or prefix\n");
        return 2;
    }
    tg_config_t *cfg = load_config(a);
    if (!cfg) return 2;
    tg_store_t *st = open_store(cfg);
    int status = 1, rc;
    if (!st) goto out;
    if (strcmp(sub, "list") == 0) {
        tg_key_t *keys = NULL;
        size_t n = 0;
        if ((rc = tg_store_keys_list(st, &keys, &n))) goto fail;
        if (a->json) {
            cJSON *arr = cJSON_CreateArray();
            for (size_t i = 0; i < n; i++)
                cJSON_AddItemToArray(arr, key_json(&keys[i]));
            print_json(arr);
        } else {
            printf("%-22s %-12s %-20s %-16s %s\n", "ID", "PREFIX", "TEAM", "NAME", "STATE");
            int64_t now = tg_wall_ms();
            for (size_t i = 0; i < n; i++) {
                const tg_key_t *k = &keys[i];
                const char *state = k->revoked_ms                           ? "revoked"
                                    : k->expires_ms && k->expires_ms <= now ? "expired"
                                                                            : "active";
                printf("%-22s %-12s %-20s %-16s %s\n", k->id, k->prefix, k->team, k->name, state);
            }
        }
        free(keys);
        status = 0;
    } else {
        rc = tg_store_key_revoke(st, a->pos[2], tg_wall_ms());
        if (rc == TG_ENOTFOUND) {
            fprintf(stderr, "tollgate: no active key with id or prefix %s\n", a->pos[2]);
            goto out;
        }
        if (rc == TG_EEXIST) {
            fprintf(stderr, "tollgate: prefix %s matches several keys; use the key id\n",
                    a->pos[2]);
            goto out;
        }
        if (rc) goto fail;
        printf("Revoked %s\n", a->pos[2]);
        status = 0;
    }
    goto out;
fail:
    fprintf(stderr, "tollgate: keys %s failed: %s\n", sub, tg_strerror(rc));
out:
    if (st) tg_store_close(st);
    tg_config_free(cfg);
    return status;
}

/* ---- admin keys ------------------------------------------------------------- */

static int cmd_admin(const args_t *a)
{
    if (a->npos < 2 || strcmp(a->pos[1], "create-key") != 0) {
        fprintf(stderr, "tollgate: admin needs create-key\n%s", usage_text);
        return 2;
    }
    if (a->name && strlen(a->name) >= sizeof(((tg_key_t *)0)->name)) {
        fprintf(stderr, "tollgate: --name must be under 64 characters\n");
        return 2;
    }
    tg_config_t *cfg = load_config(a);
    if (!cfg) return 2;
    tg_store_t *st = open_store(cfg);
    int status = 1, rc = 0;
    tg_key_t k;
    char secret[TG_KEY_SECRET_MAX];
    memset(&k, 0, sizeof(k));
    snprintf(k.name, sizeof(k.name), "%s", a->name ? a->name : "");
    if (st && !(rc = tg_admin_key_generate(&k, secret, sizeof(secret))) &&
        !(rc = tg_store_admin_key_insert(st, &k))) {
        printf("Created admin key %s (prefix %s). It is shown once: store it now.\n", k.id,
               k.prefix);
        printf("%s\n", secret);
        status = 0;
    } else if (st) {
        fprintf(stderr, "tollgate: admin create-key failed: %s\n", tg_strerror(rc));
    }
    memset(secret, 0, sizeof(secret));
    if (st) tg_store_close(st);
    tg_config_free(cfg);
    return status;
}

/* ---- usage ------------------------------------------------------------------ */

static cJSON *event_json(const tg_usage_event_t *e)
{
    cJSON *o = cJSON_CreateObject();
#define S(f) cJSON_AddStringToObject(o, #f, e->f)
#define N(f) cJSON_AddNumberToObject(o, #f, (double)e->f)
    S(id), S(request_id), N(started_ms), N(ended_ms), S(unit), S(team), S(key_id), S(model);
    S(upstream_model), S(provider), S(region), S(api);
    cJSON_AddBoolToObject(o, "streamed", e->streamed);
    N(status), S(outcome), N(input_tokens), N(output_tokens), N(cache_read_tokens);
    N(cache_write_tokens), N(images), N(image_width), N(image_height), N(image_steps);
    S(image_quality);
    cJSON_AddStringToObject(o, "token_source",
                            e->token_source == TG_TOKENS_ESTIMATED ? "estimated" : "provider");
    /* Money: cost_* in picodollars as exact JSON integers (never through a
     * double), and the same as exact decimal USD strings (input_usd, ...). */
    char buf[32], usd[48];
#define C(f)                                                                                       \
    snprintf(buf, sizeof(buf), "%lld", (long long)e->f), cJSON_AddRawToObject(o, #f, buf),         \
        snprintf(usd, sizeof(usd), "%s_usd", &(#f)[5]), tg_usd_format(e->f, buf, sizeof(buf)),     \
        cJSON_AddStringToObject(o, usd, buf)
    C(cost_input), C(cost_output), C(cost_cache_read), C(cost_cache_write), C(cost_images);
    C(cost_total);
    S(price_version);
    cJSON_AddBoolToObject(o, "unpriced", e->unpriced);
    cJSON_AddBoolToObject(o, "over_budget", e->over_budget);
    N(latency_us), N(ttfb_us);
#undef C
#undef S
#undef N
    return o;
}

static int cmd_usage(const args_t *a)
{
    if (a->npos < 2 || strcmp(a->pos[1], "list") != 0) {
        fprintf(stderr, "tollgate: usage needs list\n%s", usage_text);
        return 2;
    }
    int64_t since = 0, until = INT64_MAX;
    if ((a->since && parse_i64(a->since, "--since", &since)) ||
        (a->until && parse_i64(a->until, "--until", &until)))
        return 2;
    tg_config_t *cfg = load_config(a);
    if (!cfg) return 2;
    tg_store_t *st = open_store(cfg);
    int status = 1;
    tg_usage_event_t *ev = NULL;
    size_t n = 0;
    if (st) {
        int rc = tg_store_usage_list(st, since, until, &ev, &n);
        if (rc) {
            fprintf(stderr, "tollgate: usage list failed: %s\n", tg_strerror(rc));
        } else {
            cJSON *arr = cJSON_CreateArray();
            for (size_t i = 0; i < n; i++)
                cJSON_AddItemToArray(arr, event_json(&ev[i]));
            print_json(arr);
            status = 0;
        }
        free(ev);
        tg_store_close(st);
    }
    tg_config_free(cfg);
    return status;
}

int main(int argc, char **argv)
{
    args_t a;
    if (argc < 2) {
        fputs(usage_text, stderr);
        return 2;
    }
    if (strcmp(argv[1], "sigv4") == 0) return tg_cmd_sigv4(argc - 2, argv + 2);
    if (strcmp(argv[1], "prices") == 0) return tg_cmd_prices(argc - 2, argv + 2);
    if (strcmp(argv[1], "report") == 0) return tg_cmd_report(argc - 2, argv + 2);
    if (strcmp(argv[1], "usage") == 0 && argc > 2 && strcmp(argv[2], "import") == 0)
        return tg_cmd_usage_import(argc - 3, argv + 3);
    if (strcmp(argv[1], "units") == 0 || strcmp(argv[1], "teams") == 0 ||
        (strcmp(argv[1], "keys") == 0 && argc > 2 && tg_cmd_gov_has("keys", argv[2])))
        return tg_cmd_gov(argv[1], argc - 2, argv + 2);
    if (parse_args(argc - 1, argv + 1, &a)) return 2;
    const char *cmd = a.npos ? a.pos[0] : "";
    if (strcmp(cmd, "serve") == 0) return cmd_serve(&a);
    if (strcmp(cmd, "keys") == 0) return cmd_keys(&a);
    if (strcmp(cmd, "usage") == 0) return cmd_usage(&a);
    if (strcmp(cmd, "admin") == 0) return cmd_admin(&a);
    if (strcmp(cmd, "version") == 0) {
        printf("tollgate %s\n", TG_VERSION);
        return 0;
    }
    if (strcmp(cmd, "help") == 0) {
        fputs(usage_text, stdout);
        return 0;
    }
    fprintf(stderr, "tollgate: unknown command '%s'\n%s", cmd, usage_text);
    return 2;
}

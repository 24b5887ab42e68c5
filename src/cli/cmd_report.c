/* cmd_report.c - chargeback reports and the ledger import.
 *
 *   tollgate report --config FILE --from DATE [--to DATE] [--group-by LIST]
 *                   [--format table|csv|json|jsonl|markdown] [--decimals N]
 *                   [--unit U] [--team T] [--key KEY_ID] [--model M]
 *   tollgate report run --config FILE (--date DATE | --from DATE --to DATE)
 *   tollgate usage import --config FILE [FILE|-]
 *
 * DATEs are UTC days (YYYY-MM-DD), --to inclusive (default: --from). The
 * grouping defaults to team,model, the reference's report. `report run`
 * re-sums the days from the ledger and writes their report files again (the
 * gateway's schedule does this by itself). `usage import` records events
 * from JSON lines (the fields `usage list` prints; costs are recomputed from
 * the price book at each event's time). An event without an id gets one
 * derived from its line, so importing the same file twice records it once. */
#include <cjson/cJSON.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "cli/cli.h"
#include "config/config.h"
#include "core/core.h"
#include "usage/report.h"
#include "usage/reportjob.h"

static const char report_usage[] =
    "usage: tollgate report --config FILE --from DATE [--to DATE] [--group-by LIST]\n"
    "                       [--format table|csv|json|jsonl|markdown] [--decimals N]\n"
    "                       [--unit U] [--team T] [--key KEY_ID] [--model M]\n"
    "       tollgate report run --config FILE (--date DATE | --from DATE [--to DATE])\n"
    "  LIST: unit,team,key,model,region,day,hour (default team,model)\n";

typedef struct {
    const char *config, *from, *to, *date, *group, *format, *decimals, *unit, *team, *key, *model;
    const char *pos[2];
    int npos;
} ropts_t;

static int parse_ropts(int argc, char **argv, ropts_t *o)
{
    memset(o, 0, sizeof(*o));
    for (int i = 0; i < argc; i++) {
        static const char *const names[] = {"--config",   "--from",   "--to",       "--date",
                                            "--group-by", "--format", "--decimals", "--unit",
                                            "--team",     "--key",    "--model"};
        const char **slots[] = {&o->config,   &o->from, &o->to,   &o->date, &o->group, &o->format,
                                &o->decimals, &o->unit, &o->team, &o->key,  &o->model};
        const char **slot = NULL;
        for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++)
            if (strcmp(argv[i], names[k]) == 0) slot = slots[k];
        if (slot) {
            if (i + 1 >= argc) {
                fprintf(stderr, "tollgate: %s needs a value\n", argv[i]);
                return -1;
            }
            *slot = argv[++i];
        } else if (argv[i][0] == '-' && argv[i][1] == '-') {
            fprintf(stderr, "tollgate: unknown option %s\n%s", argv[i], report_usage);
            return -1;
        } else if (o->npos < 2) {
            o->pos[o->npos++] = argv[i];
        } else {
            fprintf(stderr, "tollgate: too many arguments\n");
            return -1;
        }
    }
    if (!o->config) {
        fprintf(stderr, "tollgate: --config FILE is required\n%s", report_usage);
        return -1;
    }
    return 0;
}

static tg_config_t *load(const char *path)
{
    char err[512];
    tg_config_t *cfg;
    if (tg_config_load(&cfg, path, err, sizeof(err))) {
        fprintf(stderr, "tollgate: config error: %s\n", err);
        return NULL;
    }
    tg_log_level = cfg->log_level;
    return cfg;
}

/* [from, to] as whole days: [from 00:00, to + 1 day 00:00). */
static int day_range(const char *from, const char *to, int64_t *a, int64_t *b)
{
    if (!from) {
        fprintf(stderr, "tollgate: --from DATE is required\n%s", report_usage);
        return -1;
    }
    if (tg_report_parse_day(from, a) || tg_report_parse_day(to ? to : from, b)) {
        fprintf(stderr, "tollgate: dates must be YYYY-MM-DD\n");
        return -1;
    }
    if (*b < *a) {
        fprintf(stderr, "tollgate: --to is before --from\n");
        return -1;
    }
    *b += TG_DAY_MS;
    return 0;
}

/* tollgate report run: the daily files again, for each day of the range. */
static int report_run(const ropts_t *o, tg_config_t *cfg, tg_store_t *st)
{
    int64_t a, b;
    if (day_range(o->date ? o->date : o->from, o->date ? o->date : o->to, &a, &b)) return 2;
    tg_reportjob_opts_t jo = {.dir = cfg->reports.dir, .daily_at_min = cfg->reports.daily_at_min};
    int status = 0;
    for (int64_t d = a; d < b; d += TG_DAY_MS) {
        size_t rows = 0;
        char date[16];
        tg_report_format_day(d, date, sizeof(date));
        int rc = tg_report_day(st, &jo, d, 1, &rows);
        if (rc) {
            fprintf(stderr, "tollgate: report for %s failed: %s\n", date, tg_strerror(rc));
            status = 1;
        } else if (rows) {
            printf("%s: %zu rows written to %s/succeed/%s.csv\n", date, rows, cfg->reports.dir,
                   date);
        } else {
            printf("%s: no usage\n", date);
        }
    }
    return status;
}

int tg_cmd_report(int argc, char **argv)
{
    ropts_t o;
    if (parse_ropts(argc, argv, &o)) return 2;
    int run = o.npos > 0 && strcmp(o.pos[0], "run") == 0;
    if (o.npos > (run ? 1 : 0)) {
        fprintf(stderr, "tollgate: unexpected argument %s\n%s", o.pos[run ? 1 : 0], report_usage);
        return 2;
    }
    unsigned group = TG_GROUP_TEAM | TG_GROUP_MODEL;
    char err[160];
    if (o.group && tg_report_parse_group(o.group, &group, err, sizeof(err))) {
        fprintf(stderr, "tollgate: --group-by: %s\n", err);
        return 2;
    }
    int format = o.format ? tg_report_parse_format(o.format) : TG_REPORT_TABLE;
    if (format < 0) {
        fprintf(stderr, "tollgate: --format must be table, csv, json, jsonl or markdown\n");
        return 2;
    }
    int decimals = -1;
    if (o.decimals) {
        char *end;
        long d = strtol(o.decimals, &end, 10);
        if (!*o.decimals || *end || d < 0 || d > 12) {
            fprintf(stderr, "tollgate: --decimals must be 0 to 12\n");
            return 2;
        }
        decimals = (int)d;
    }
    int64_t from = 0, to = 0;
    if (!run && day_range(o.from, o.to, &from, &to)) return 2;
    tg_config_t *cfg = load(o.config);
    if (!cfg) return 2;
    tg_store_t *st = NULL;
    int status = 1, rc = tg_store_open(&st, &cfg->store);
    if (rc) {
        fprintf(stderr, "tollgate: cannot open store %s: %s\n", cfg->store.path, tg_strerror(rc));
        goto out;
    }
    if (run) {
        status = report_run(&o, cfg, st);
        goto out;
    }
    tg_rollup_query_t q = {.from_ms = from,
                           .to_ms = to,
                           .group = group,
                           .unit = o.unit,
                           .team = o.team,
                           .key_id = o.key,
                           .model = o.model};
    tg_report_t r;
    if ((rc = tg_report_build(st, &q, &r))) {
        fprintf(stderr, "tollgate: report failed: %s\n", tg_strerror(rc));
        goto out;
    }
    tg_buf_t b;
    tg_buf_init(&b, 0);
    rc = tg_report_write(&b, &r, format, decimals);
    if (rc == 0 && b.len) fwrite(b.data, 1, b.len, stdout);
    tg_buf_free(&b);
    tg_report_free(&r);
    status = rc ? 1 : 0;
out:
    tg_store_close(st);
    tg_config_free(cfg);
    return status;
}

/* ---- usage import -------------------------------------------------------------- */

/* Copies string field name (optional unless req) into out; *bad names the
 * problem. */
static int str_field(const cJSON *o, const char *name, char *out, size_t cap, int req,
                     const char **bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) {
        if (req) *bad = "is required";
        return req ? -1 : 0;
    }
    if (!cJSON_IsString(v)) return *bad = "must be a string", -1;
    if (strlen(v->valuestring) >= cap) return *bad = "is too long", -1;
    memcpy(out, v->valuestring, strlen(v->valuestring) + 1);
    return 0;
}

/* A non-negative integer (JSON number without fraction, or digits in a string). */
static int int_field(const cJSON *o, const char *name, int64_t *out, int req, const char **bad)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (!v || cJSON_IsNull(v)) {
        if (req) *bad = "is required";
        return req ? -1 : 0;
    }
    if (cJSON_IsString(v)) {
        char *end;
        long long x = strtoll(v->valuestring, &end, 10);
        if (!v->valuestring[0] || *end || x < 0) return *bad = "must be a non-negative integer", -1;
        *out = x;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 9007199254740991.0 ||
        v->valuedouble != (double)(int64_t)v->valuedouble)
        return *bad = "must be a non-negative integer (below 2^53, or a string)", -1;
    *out = (int64_t)v->valuedouble;
    return 0;
}

/* One line into ev; returns the name of the bad field (with *bad) or NULL. */
static const char *parse_event(const cJSON *o, const tg_config_t *cfg, const char *line, size_t len,
                               tg_usage_event_t *ev, const char **bad)
{
    memset(ev, 0, sizeof(*ev));
    int64_t v = 0;
#define STR(f, req)                                                                                \
    if (str_field(o, #f, ev->f, sizeof(ev->f), req, bad)) return #f
#define INT(f, req)                                                                                \
    if (int_field(o, #f, &v, req, bad)) return #f;                                                 \
    ev->f = v, v = 0
    STR(id, 0);
    STR(request_id, 0);
    INT(started_ms, 1);
    INT(ended_ms, 0);
    STR(unit, 0);
    STR(team, 1);
    STR(key_id, 0);
    STR(model, 1);
    STR(upstream_model, 0);
    STR(provider, 0);
    STR(region, 0);
    STR(api, 0);
    STR(outcome, 0);
    INT(status, 0);
    INT(input_tokens, 0);
    INT(output_tokens, 0);
    INT(cache_read_tokens, 0);
    INT(cache_write_tokens, 0);
    INT(images, 0);
    INT(latency_us, 0);
    INT(ttfb_us, 0);
#undef STR
#undef INT
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(o, "streamed");
    ev->streamed = cJSON_IsTrue(s);
    char source[16] = "";
    if (str_field(o, "token_source", source, sizeof(source), 0, bad)) return "token_source";
    if (source[0] && strcmp(source, "provider") && strcmp(source, "estimated"))
        return *bad = "must be provider or estimated", "token_source";
    ev->token_source = strcmp(source, "estimated") == 0 ? TG_TOKENS_ESTIMATED : TG_TOKENS_PROVIDER;
    if (!ev->team[0]) return *bad = "is empty", "team";
    if (!ev->model[0]) return *bad = "is empty", "model";
    /* Defaults for what the line did not say. */
    if (!ev->id[0]) {
        uint8_t h[SHA256_DIGEST_LENGTH];
        SHA256((const unsigned char *)line, len, h);
        char hex[2 * 16 + 1];
        tg_hex(hex, h, 16);
        snprintf(ev->id, sizeof(ev->id), "evt_%s", hex);
    }
    if (!ev->request_id[0]) snprintf(ev->request_id, sizeof(ev->request_id), "%s", ev->id);
    if (!ev->ended_ms) ev->ended_ms = ev->started_ms;
    const tg_model_route_t *route = tg_config_model(cfg, ev->model, strlen(ev->model));
    if (!ev->upstream_model[0])
        snprintf(ev->upstream_model, sizeof(ev->upstream_model), "%s",
                 route && route->upstream_model ? route->upstream_model : ev->model);
    if (!ev->provider[0] && route)
        snprintf(ev->provider, sizeof(ev->provider), "%s", route->provider->name);
    if (!ev->region[0] && route && route->region)
        snprintf(ev->region, sizeof(ev->region), "%s", route->region);
    if (!ev->api[0]) snprintf(ev->api, sizeof(ev->api), "import");
    if (!ev->outcome[0]) snprintf(ev->outcome, sizeof(ev->outcome), TG_OUTCOME_OK);
    if (!ev->status) ev->status = 200;
    int bedrock = !route || route->provider->kind == TG_PROVIDER_BEDROCK;
    tg_api_price_event(cfg->prices, route, bedrock, ev);
    return NULL;
}

#define IMPORT_BATCH 5000

int tg_cmd_usage_import(int argc, char **argv)
{
    const char *config = NULL, *file = NULL;
    for (int i = 0; i < argc; i++) {
        if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
            config = argv[++i];
        else if (!file && (argv[i][0] != '-' || strcmp(argv[i], "-") == 0))
            file = argv[i];
        else {
            fprintf(stderr, "usage: tollgate usage import --config FILE [FILE|-]\n");
            return 2;
        }
    }
    if (!config) {
        fprintf(stderr, "usage: tollgate usage import --config FILE [FILE|-]\n");
        return 2;
    }
    FILE *in = !file || strcmp(file, "-") == 0 ? stdin : fopen(file, "r");
    if (!in) {
        fprintf(stderr, "tollgate: cannot open %s\n", file);
        return 1;
    }
    tg_config_t *cfg = load(config);
    tg_store_t *st = NULL;
    tg_usage_event_t *batch = calloc(IMPORT_BATCH, sizeof(*batch));
    int status = 1, rc = 0;
    if (!cfg || !batch) goto out;
    if ((rc = tg_store_open(&st, &cfg->store))) {
        fprintf(stderr, "tollgate: cannot open store %s: %s\n", cfg->store.path, tg_strerror(rc));
        goto out;
    }
    int64_t before = 0, after = 0;
    tg_store_usage_count(st, &before);
    char *line = NULL;
    size_t cap = 0, n = 0, lineno = 0, total = 0, unpriced = 0;
    ssize_t len;
    status = 0;
    while ((len = getline(&line, &cap, in)) >= 0) {
        lineno++;
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
            line[--len] = '\0';
        if (len == 0) continue;
        cJSON *o = cJSON_ParseWithLength(line, (size_t)len);
        const char *bad = "is not a JSON object", *field = "line";
        if (o && cJSON_IsObject(o)) field = parse_event(o, cfg, line, (size_t)len, &batch[n], &bad);
        cJSON_Delete(o);
        if (field) {
            fprintf(stderr, "tollgate: line %zu: %s %s\n", lineno, field, bad);
            status = 1;
            break;
        }
        unpriced += batch[n].unpriced != 0;
        if (++n == IMPORT_BATCH) {
            if ((rc = tg_store_usage_append(st, batch, n))) break;
            total += n;
            n = 0;
        }
    }
    free(line);
    if (status == 0 && !rc && n) rc = tg_store_usage_append(st, batch, n), total += rc ? 0 : n;
    if (rc) {
        fprintf(stderr, "tollgate: import failed: %s\n", tg_strerror(rc));
        status = 1;
    }
    tg_store_usage_count(st, &after);
    printf("imported %lld new events of %zu read (%zu unpriced)\n", (long long)(after - before),
           total, unpriced);
out:
    if (in != stdin) fclose(in);
    free(batch);
    tg_store_close(st);
    tg_config_free(cfg);
    return status;
}

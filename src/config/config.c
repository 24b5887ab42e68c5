/* config.c - parse and validate the JSON configuration.
 *
 * A small schema walker: every object lists the fields it accepts, so a typo
 * ("max_body_byte") is an error instead of a silently ignored setting. Each
 * error message starts with the JSON path of the field at fault. */
#include "config/config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *err;
    size_t errcap;
} ctx_t;

static int fail(ctx_t *x, const char *path, const char *msg)
{
    snprintf(x->err, x->errcap, "%s: %s", path, msg);
    return TG_ECONFIG;
}

static int check_fields(ctx_t *x, const cJSON *obj, const char *path, const char *const *allowed)
{
    char p[256];
    if (!cJSON_IsObject(obj)) return fail(x, path, "must be an object");
    for (const cJSON *it = obj->child; it; it = it->next) {
        int ok = 0;
        for (const char *const *a = allowed; *a; a++)
            if (strcmp(*a, it->string) == 0) ok = 1;
        if (!ok) {
            snprintf(p, sizeof(p), "%s.%s", path, it->string);
            return fail(x, p, "unknown field");
        }
    }
    return TG_OK;
}

/* Reads an optional non-negative integer field within [min, max]. */
static int get_uint(ctx_t *x, const cJSON *obj, const char *path, const char *name, uint64_t min,
                    uint64_t max, uint64_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    if (!v) return TG_OK;
    char p[256], msg[128];
    snprintf(p, sizeof(p), "%s.%s", path, name);
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int64_t)v->valuedouble)
        return fail(x, p, "must be an integer");
    if (v->valuedouble < (double)min || v->valuedouble > (double)max) {
        snprintf(msg, sizeof(msg), "must be between %llu and %llu", (unsigned long long)min,
                 (unsigned long long)max);
        return fail(x, p, msg);
    }
    *out = (uint64_t)v->valuedouble;
    return TG_OK;
}

static int get_u32(ctx_t *x, const cJSON *o, const char *path, const char *name, uint64_t min,
                   uint64_t max, uint32_t *out)
{
    uint64_t v = *out;
    int rc = get_uint(x, o, path, name, min, max, &v);
    *out = (uint32_t)v;
    return rc;
}

static int get_size(ctx_t *x, const cJSON *o, const char *path, const char *name, uint64_t min,
                    uint64_t max, size_t *out)
{
    uint64_t v = *out;
    int rc = get_uint(x, o, path, name, min, max, &v);
    *out = (size_t)v;
    return rc;
}

/* Optional string; required when req. *out is strdup'ed (or NULL). */
static int get_str(ctx_t *x, const cJSON *obj, const char *path, const char *name, int req,
                   char **out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    char p[256];
    snprintf(p, sizeof(p), "%s.%s", path, name);
    if (!v) return req ? fail(x, p, "is required") : TG_OK;
    if (!cJSON_IsString(v)) return fail(x, p, "must be a string");
    if (req && !v->valuestring[0]) return fail(x, p, "must not be empty");
    free(*out);
    *out = strdup(v->valuestring);
    return *out ? TG_OK : TG_ENOMEM;
}

static int get_bool(ctx_t *x, const cJSON *obj, const char *path, const char *name, int *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, name);
    char p[256];
    if (!v) return TG_OK;
    snprintf(p, sizeof(p), "%s.%s", path, name);
    if (!cJSON_IsBool(v)) return fail(x, p, "must be true or false");
    *out = cJSON_IsTrue(v);
    return TG_OK;
}

static int parse_listen(tg_config_t *c, const char *s, ctx_t *x, const char *path)
{
    const char *colon, *host = s;
    size_t hlen;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end || end[1] != ':') return fail(x, path, "must be HOST:PORT or [IPV6]:PORT");
        host = s + 1;
        hlen = (size_t)(end - host);
        colon = end + 1;
    } else {
        colon = strrchr(s, ':');
        if (!colon) return fail(x, path, "must be HOST:PORT");
        hlen = (size_t)(colon - s);
    }
    char *endp;
    errno = 0;
    long port = strtol(colon + 1, &endp, 10);
    if (errno || *endp || colon[1] == '\0' || port < 0 || port > 65535)
        return fail(x, path, "port must be a number from 0 to 65535");
    if (hlen == 0) return fail(x, path, "host is empty");
    free(c->listen_host);
    c->listen_host = strndup(host, hlen);
    if (!c->listen_host) return TG_ENOMEM;
    c->http.host = c->listen_host;
    c->http.port = (int)port;
    return TG_OK;
}

static int parse_http(tg_config_t *c, const cJSON *h, ctx_t *x)
{
    static const char *const fields[] = {
        "max_header_bytes", "max_body_bytes",   "max_response_bytes", "header_timeout_ms",
        "body_timeout_ms",  "idle_timeout_ms",  "send_timeout_ms",    "shutdown_timeout_ms",
        "max_connections",  "write_high_water", "write_low_water",    NULL};
    const char *p = "http";
    tg_http_config_t *hc = &c->http;
    int rc;
    if ((rc = check_fields(x, h, p, fields))) return rc;
    if ((rc = get_size(x, h, p, "max_header_bytes", 1024, 1 << 20, &hc->max_header_bytes)) ||
        (rc = get_size(x, h, p, "max_body_bytes", 1, (uint64_t)1 << 32, &hc->max_body_bytes)) ||
        (rc = get_size(x, h, p, "max_response_bytes", 1024, (uint64_t)1 << 32,
                       &c->max_response_bytes)) ||
        (rc = get_u32(x, h, p, "header_timeout_ms", 1, 3600000, &hc->header_timeout_ms)) ||
        (rc = get_u32(x, h, p, "body_timeout_ms", 1, 3600000, &hc->body_timeout_ms)) ||
        (rc = get_u32(x, h, p, "idle_timeout_ms", 1, 3600000, &hc->idle_timeout_ms)) ||
        (rc = get_u32(x, h, p, "send_timeout_ms", 1, 3600000, &hc->send_timeout_ms)) ||
        (rc = get_u32(x, h, p, "shutdown_timeout_ms", 0, 3600000, &hc->shutdown_timeout_ms)) ||
        (rc = get_size(x, h, p, "write_high_water", 4096, 1 << 30, &hc->write_high_water)) ||
        (rc = get_size(x, h, p, "write_low_water", 0, 1 << 30, &hc->write_low_water)))
        return rc;
    uint64_t mc = (uint64_t)hc->max_connections;
    if ((rc = get_uint(x, h, p, "max_connections", 1, 1000000, &mc))) return rc;
    hc->max_connections = (int)mc;
    if (hc->write_low_water >= hc->write_high_water)
        return fail(x, "http.write_low_water", "must be below write_high_water");
    return TG_OK;
}

static int parse_store(tg_config_t *c, const cJSON *s, ctx_t *x)
{
    static const char *const fields[] = {"driver", "path", "synchronous", "busy_timeout_ms", NULL};
    int rc;
    char *driver = NULL, *sync = NULL;
    if ((rc = check_fields(x, s, "store", fields))) return rc;
    if ((rc = get_str(x, s, "store", "driver", 0, &driver))) return rc;
    if (driver && strcmp(driver, "sqlite") != 0) {
        free(driver);
        return fail(x, "store.driver", "must be \"sqlite\" (postgres is not built yet)");
    }
    free(driver);
    if ((rc = get_str(x, s, "store", "path", 0, &c->store_path))) return rc;
    if ((rc = get_str(x, s, "store", "synchronous", 0, &sync))) return rc;
    if (sync) {
        if (strcmp(sync, "full") == 0)
            c->store.synchronous_full = 1;
        else if (strcmp(sync, "normal") == 0)
            c->store.synchronous_full = 0;
        else
            rc = fail(x, "store.synchronous", "must be \"normal\" or \"full\"");
        free(sync);
        if (rc) return rc;
    }
    return get_u32(x, s, "store", "busy_timeout_ms", 0, 600000, &c->store.busy_timeout_ms);
}

static int parse_provider(tg_config_t *c, tg_provider_t *pv, const cJSON *o, const char *p,
                          ctx_t *x)
{
    static const char *const fields[] = {"name",
                                         "type",
                                         "base_url",
                                         "api_key_env",
                                         "region",
                                         "connect_timeout_ms",
                                         "first_byte_timeout_ms",
                                         "total_timeout_ms",
                                         NULL};
    int rc;
    if ((rc = check_fields(x, o, p, fields))) return rc;
    if ((rc = get_str(x, o, p, "name", 1, &pv->name)) ||
        (rc = get_str(x, o, p, "type", 1, &pv->type)) ||
        (rc = get_str(x, o, p, "base_url", 1, &pv->base_url)) ||
        (rc = get_str(x, o, p, "api_key_env", 0, &pv->api_key_env)) ||
        (rc = get_str(x, o, p, "region", 0, &pv->region)))
        return rc;
    char fp[256];
    if (strcmp(pv->type, "openai") != 0) {
        snprintf(fp, sizeof(fp), "%s.type", p);
        return fail(x, fp, "must be \"openai\" (bedrock and sagemaker are not built yet)");
    }
    if (strncmp(pv->base_url, "http://", 7) != 0 && strncmp(pv->base_url, "https://", 8) != 0) {
        snprintf(fp, sizeof(fp), "%s.base_url", p);
        return fail(x, fp, "must start with http:// or https://");
    }
    size_t n = strlen(pv->base_url);
    while (n > 0 && pv->base_url[n - 1] == '/')
        pv->base_url[--n] = '\0';
    if (!pv->region && !(pv->region = strdup(""))) return TG_ENOMEM;
    if (pv->api_key_env) {
        const char *v = getenv(pv->api_key_env);
        if (v && *v && !(pv->api_key = strdup(v))) return TG_ENOMEM;
    }
    pv->connect_timeout_ms = 5000;
    pv->first_byte_timeout_ms = 120000;
    pv->total_timeout_ms = 600000;
    if ((rc = get_u32(x, o, p, "connect_timeout_ms", 1, 600000, &pv->connect_timeout_ms)) ||
        (rc = get_u32(x, o, p, "first_byte_timeout_ms", 0, 3600000, &pv->first_byte_timeout_ms)) ||
        (rc = get_u32(x, o, p, "total_timeout_ms", 0, 86400000, &pv->total_timeout_ms)))
        return rc;
    for (size_t i = 0; i < c->nproviders; i++)
        if (&c->providers[i] != pv && c->providers[i].name &&
            strcmp(c->providers[i].name, pv->name) == 0) {
            snprintf(fp, sizeof(fp), "%s.name", p);
            return fail(x, fp, "duplicate provider name");
        }
    return TG_OK;
}

static int parse_model(tg_config_t *c, tg_model_route_t *m, const cJSON *o, const char *p, ctx_t *x)
{
    static const char *const fields[] = {"id",
                                         "provider",
                                         "upstream_model",
                                         "region",
                                         "connect_timeout_ms",
                                         "first_byte_timeout_ms",
                                         "total_timeout_ms",
                                         "created",
                                         NULL};
    int rc;
    char *prov = NULL, fp[256];
    if ((rc = check_fields(x, o, p, fields))) return rc;
    if ((rc = get_str(x, o, p, "id", 1, &m->id)) || (rc = get_str(x, o, p, "provider", 1, &prov)) ||
        (rc = get_str(x, o, p, "upstream_model", 0, &m->upstream_model)) ||
        (rc = get_str(x, o, p, "region", 0, &m->region))) {
        free(prov);
        return rc;
    }
    for (size_t i = 0; i < c->nproviders; i++)
        if (strcmp(c->providers[i].name, prov) == 0) m->provider = &c->providers[i];
    free(prov);
    if (!m->provider) {
        snprintf(fp, sizeof(fp), "%s.provider", p);
        return fail(x, fp, "names no provider in \"providers\"");
    }
    if (!m->upstream_model && !(m->upstream_model = strdup(m->id))) return TG_ENOMEM;
    if (!m->region && !(m->region = strdup(m->provider->region))) return TG_ENOMEM;
    m->connect_timeout_ms = m->provider->connect_timeout_ms;
    m->first_byte_timeout_ms = m->provider->first_byte_timeout_ms;
    m->total_timeout_ms = m->provider->total_timeout_ms;
    uint64_t created = 1700000000;
    if ((rc = get_u32(x, o, p, "connect_timeout_ms", 1, 600000, &m->connect_timeout_ms)) ||
        (rc = get_u32(x, o, p, "first_byte_timeout_ms", 0, 3600000, &m->first_byte_timeout_ms)) ||
        (rc = get_u32(x, o, p, "total_timeout_ms", 0, 86400000, &m->total_timeout_ms)) ||
        (rc = get_uint(x, o, p, "created", 0, 1ull << 40, &created)))
        return rc;
    m->created = (int64_t)created;
    for (tg_model_route_t *q = c->models; q < m; q++)
        if (strcmp(q->id, m->id) == 0) {
            snprintf(fp, sizeof(fp), "%s.id", p);
            return fail(x, fp, "duplicate model id");
        }
    return TG_OK;
}

static int parse_root(tg_config_t *c, const cJSON *root, ctx_t *x)
{
    static const char *const fields[] = {"listen", "workers", "log_level", "access_log", "store",
                                         "http",   "ledger",  "providers", "models",     NULL};
    int rc;
    if ((rc = check_fields(x, root, "config", fields))) return rc;
    char *listen = NULL, *level = NULL;
    if ((rc = get_str(x, root, "config", "listen", 0, &listen))) return rc;
    rc = parse_listen(c, listen ? listen : "127.0.0.1:8080", x, "listen");
    free(listen);
    if (rc) return rc;
    uint64_t workers = 0;
    if ((rc = get_uint(x, root, "config", "workers", 0, 256, &workers))) return rc;
    if (workers) c->http.workers = (int)workers;
    if ((rc = get_str(x, root, "config", "log_level", 0, &level))) return rc;
    if (level) {
        static const char *const names[] = {"debug", "info", "warn", "error"};
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (strcmp(level, names[i]) == 0) found = i;
        free(level);
        if (found < 0) return fail(x, "log_level", "must be debug, info, warn or error");
        c->log_level = found;
    }
    if ((rc = get_bool(x, root, "config", "access_log", &c->access_log))) return rc;

    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "store")) && (rc = parse_store(c, v, x)))
        return rc;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "http")) && (rc = parse_http(c, v, x)))
        return rc;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "ledger"))) {
        static const char *const lf[] = {"queue_max", NULL};
        if ((rc = check_fields(x, v, "ledger", lf)) ||
            (rc = get_size(x, v, "ledger", "queue_max", 16, 1 << 24, &c->ledger_queue_max)))
            return rc;
    }

    const cJSON *provs = cJSON_GetObjectItemCaseSensitive(root, "providers");
    if (provs && !cJSON_IsArray(provs)) return fail(x, "providers", "must be an array");
    size_t np = provs ? (size_t)cJSON_GetArraySize(provs) : 0;
    c->providers = calloc(np ? np : 1, sizeof(*c->providers));
    if (!c->providers) return TG_ENOMEM;
    c->nproviders = np;
    size_t i = 0;
    char p[64];
    for (const cJSON *it = provs ? provs->child : NULL; it; it = it->next, i++) {
        snprintf(p, sizeof(p), "providers[%zu]", i);
        if ((rc = parse_provider(c, &c->providers[i], it, p, x))) return rc;
    }

    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    if (models && !cJSON_IsArray(models)) return fail(x, "models", "must be an array");
    size_t nm = models ? (size_t)cJSON_GetArraySize(models) : 0;
    c->models = calloc(nm ? nm : 1, sizeof(*c->models));
    if (!c->models) return TG_ENOMEM;
    i = 0;
    for (const cJSON *it = models ? models->child : NULL; it; it = it->next, i++) {
        snprintf(p, sizeof(p), "models[%zu]", i);
        c->nmodels = i + 1;
        if ((rc = parse_model(c, &c->models[i], it, p, x))) return rc;
    }
    return TG_OK;
}

static char *slurp(const char *path, size_t max, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *buf = malloc(max + 1);
    size_t n = buf ? fread(buf, 1, max + 1, f) : 0;
    fclose(f);
    if (!buf || n > max) {
        free(buf);
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

int tg_config_load(tg_config_t **out, const char *path, char *err, size_t errcap)
{
    ctx_t x = {err, errcap};
    *out = NULL;
    size_t len;
    char *text = slurp(path, 4 << 20, &len);
    if (!text) {
        snprintf(err, errcap, "%s: cannot read (%s)", path, strerror(errno ? errno : EFBIG));
        return TG_ECONFIG;
    }
    const char *ep = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len + 1, &ep, 1);
    if (!root) {
        size_t off = ep ? (size_t)(ep - text) : 0, line = 1;
        for (size_t i = 0; i < off && i < len; i++)
            line += text[i] == '\n';
        snprintf(err, errcap, "%s: invalid JSON near line %zu", path, line);
        free(text);
        return TG_ECONFIG;
    }
    free(text);
    tg_config_t *c = calloc(1, sizeof(*c));
    if (!c) {
        cJSON_Delete(root);
        return TG_ENOMEM;
    }
    c->path = strdup(path);
    tg_http_config_defaults(&c->http);
    c->max_response_bytes = 64u << 20;
    c->ledger_queue_max = 65536;
    c->log_level = TG_LOG_INFO;
    c->access_log = 1;
    c->store.busy_timeout_ms = 5000;
    int rc = parse_root(c, root, &x);
    cJSON_Delete(root);
    if (!rc && !c->store_path && !(c->store_path = strdup("var/tollgate.db"))) rc = TG_ENOMEM;
    if (rc) {
        if (rc == TG_ENOMEM) snprintf(err, errcap, "out of memory");
        tg_config_free(c);
        return rc == TG_ENOMEM ? rc : TG_ECONFIG;
    }
    c->store.driver = "sqlite";
    c->store.path = c->store_path;
    *out = c;
    return TG_OK;
}

int tg_config_set_listen(tg_config_t *c, const char *listen, char *err, size_t errcap)
{
    ctx_t x = {err, errcap};
    return parse_listen(c, listen, &x, "--listen");
}

void tg_config_free(tg_config_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->nproviders; i++) {
        tg_provider_t *p = &c->providers[i];
        free(p->name), free(p->type), free(p->base_url), free(p->api_key_env), free(p->region);
        if (p->api_key) {
            memset(p->api_key, 0, strlen(p->api_key));
            free(p->api_key);
        }
    }
    for (size_t i = 0; i < c->nmodels; i++) {
        free(c->models[i].id), free(c->models[i].upstream_model), free(c->models[i].region);
    }
    free(c->providers);
    free(c->models);
    free(c->listen_host);
    free(c->store_path);
    free(c->path);
    free(c);
}

const tg_model_route_t *tg_config_model(const tg_config_t *c, const char *id, size_t len)
{
    for (size_t i = 0; i < c->nmodels; i++)
        if (strlen(c->models[i].id) == len && memcmp(c->models[i].id, id, len) == 0)
            return &c->models[i];
    return NULL;
}

/* config.c - parse and validate the JSON configuration.
 *
 * A small schema walker: every object lists the fields it accepts, so a typo
 * ("max_body_byte") is an error instead of a silently ignored setting. Each
 * error message starts with the JSON path of the field at fault. */
#include "config/config.h"

#include "providers/bedrock.h"

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

/* HOST:PORT or [IPV6]:PORT into a new host string and a port. */
static int split_listen(const char *s, ctx_t *x, const char *path, char **host_out, int *port_out)
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
    char *h = strndup(host, hlen);
    if (!h) return TG_ENOMEM;
    *host_out = h;
    *port_out = (int)port;
    return TG_OK;
}

static int parse_listen(tg_config_t *c, const char *s, ctx_t *x, const char *path)
{
    char *host;
    int port, rc = split_listen(s, x, path, &host, &port);
    if (rc) return rc;
    free(c->listen_host);
    c->listen_host = host;
    c->http.host = c->listen_host;
    c->http.port = port;
    return TG_OK;
}

/* "off" disables the admin listener. */
static int parse_admin_listen(tg_config_t *c, const char *s, ctx_t *x, const char *path)
{
    if (strcmp(s, "off") == 0) {
        free(c->admin_host);
        c->admin_host = NULL;
        c->admin_port = -1;
        return TG_OK;
    }
    char *host;
    int port, rc = split_listen(s, x, path, &host, &port);
    if (rc) return rc;
    free(c->admin_host);
    c->admin_host = host;
    c->admin_port = port;
    return TG_OK;
}

/* "tls": {"listen", "cert_file", "key_file"}, all required. The files are
 * read when the server starts (a CLI that only reads the config does not
 * need them). */
static int parse_tls(tg_config_t *c, const cJSON *t, ctx_t *x)
{
    static const char *const fields[] = {"listen", "cert_file", "key_file", NULL};
    char *listen = NULL;
    int rc;
    if ((rc = check_fields(x, t, "tls", fields)) ||
        (rc = get_str(x, t, "tls", "listen", 1, &listen)) ||
        (rc = get_str(x, t, "tls", "cert_file", 1, &c->tls_cert_file)) ||
        (rc = get_str(x, t, "tls", "key_file", 1, &c->tls_key_file))) {
        free(listen);
        return rc;
    }
    free(c->tls_host);
    c->tls_host = NULL;
    rc = split_listen(listen, x, "tls.listen", &c->tls_host, &c->http.tls_port);
    free(listen);
    if (rc) return rc;
    c->http.tls_host = c->tls_host;
    c->http.cert_file = c->tls_cert_file;
    c->http.key_file = c->tls_key_file;
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

/* AWS region names: lower-case letters, digits and dashes ("us-east-1"). */
static int region_ok(const char *r)
{
    if (!r[0] || strlen(r) > 31) return 0;
    for (const char *q = r; *q; q++)
        if (!((*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-')) return 0;
    return 1;
}

static int url_ok(ctx_t *x, char *url, const char *p, const char *name)
{
    char fp[256];
    if (strncmp(url, "http://", 7) != 0 && strncmp(url, "https://", 8) != 0) {
        snprintf(fp, sizeof(fp), "%s.%s", p, name);
        return fail(x, fp, "must start with http:// or https://");
    }
    size_t n = strlen(url);
    while (n > 0 && url[n - 1] == '/')
        url[--n] = '\0';
    return TG_OK;
}

/* Reads an environment variable named in the file; required ones must be set. */
static int from_env(ctx_t *x, const char *p, const char *field, const char *var, int req,
                    char **out)
{
    char fp[256], msg[200];
    const char *v = var ? getenv(var) : NULL;
    if (!v || !*v) {
        if (!req) return TG_OK;
        snprintf(fp, sizeof(fp), "%s.%s", p, field);
        snprintf(msg, sizeof(msg), "environment variable %s is not set", var);
        return fail(x, fp, msg);
    }
    *out = strdup(v);
    return *out ? TG_OK : TG_ENOMEM;
}

static int parse_creds(tg_aws_creds_config_t *cr, const cJSON *o, const char *p, ctx_t *x)
{
    static const char *const fields[] = {"profile",
                                         "role_arn",
                                         "role_session_name",
                                         "external_id",
                                         "sts_endpoint",
                                         "imds_endpoint",
                                         "container_endpoint",
                                         "refresh_before_ms",
                                         "timeout_ms",
                                         "access_key_id_env",
                                         "secret_access_key_env",
                                         "session_token_env",
                                         NULL};
    int rc;
    if ((rc = check_fields(x, o, p, fields))) return rc;
    if ((rc = get_str(x, o, p, "profile", 0, &cr->profile)) ||
        (rc = get_str(x, o, p, "role_arn", 0, &cr->role_arn)) ||
        (rc = get_str(x, o, p, "role_session_name", 0, &cr->role_session_name)) ||
        (rc = get_str(x, o, p, "external_id", 0, &cr->external_id)) ||
        (rc = get_str(x, o, p, "sts_endpoint", 0, &cr->sts_endpoint)) ||
        (rc = get_str(x, o, p, "imds_endpoint", 0, &cr->imds_endpoint)) ||
        (rc = get_str(x, o, p, "container_endpoint", 0, &cr->container_endpoint)) ||
        (rc = get_str(x, o, p, "access_key_id_env", 0, &cr->access_key_id_env)) ||
        (rc = get_str(x, o, p, "secret_access_key_env", 0, &cr->secret_access_key_env)) ||
        (rc = get_str(x, o, p, "session_token_env", 0, &cr->session_token_env)) ||
        (rc = get_u32(x, o, p, "refresh_before_ms", 0, 86400000, &cr->refresh_before_ms)) ||
        (rc = get_u32(x, o, p, "timeout_ms", 0, 600000, &cr->timeout_ms)))
        return rc;
    if ((cr->sts_endpoint && (rc = url_ok(x, cr->sts_endpoint, p, "sts_endpoint"))) ||
        (cr->imds_endpoint && (rc = url_ok(x, cr->imds_endpoint, p, "imds_endpoint"))) ||
        (cr->container_endpoint &&
         (rc = url_ok(x, cr->container_endpoint, p, "container_endpoint"))))
        return rc;
    char fp[512];
    if (!cr->access_key_id_env != !cr->secret_access_key_env) {
        snprintf(fp, sizeof(fp), "%s.%s", p,
                 cr->access_key_id_env ? "secret_access_key_env" : "access_key_id_env");
        return fail(x, fp, "access_key_id_env and secret_access_key_env go together");
    }
    if (cr->session_token_env && !cr->access_key_id_env) {
        snprintf(fp, sizeof(fp), "%s.session_token_env", p);
        return fail(x, fp, "needs access_key_id_env and secret_access_key_env");
    }
    if ((rc = from_env(x, p, "access_key_id_env", cr->access_key_id_env, 0, &cr->access_key_id)) ||
        (rc = from_env(x, p, "secret_access_key_env", cr->secret_access_key_env, 0,
                       &cr->secret_access_key)) ||
        (rc = from_env(x, p, "session_token_env", cr->session_token_env, 0, &cr->session_token)))
        return rc;
    return TG_OK;
}

/* The reference's SAGEMAKER_ENDPOINTS: an object, or a string holding JSON or
 * a Python dict literal ("{'Mixtral 8x7B': 'Mixtral-SM-Endpoint'}"). Returns
 * the parsed object (to free) in *out. */
static int parse_endpoints(ctx_t *x, const cJSON *v, const char *p, cJSON **out)
{
    char fp[256];
    snprintf(fp, sizeof(fp), "%s.endpoints", p);
    cJSON *o = NULL;
    if (cJSON_IsObject(v)) {
        o = cJSON_Duplicate(v, 1);
    } else if (cJSON_IsString(v)) {
        o = cJSON_Parse(v->valuestring);
        if (!o && !strchr(v->valuestring, '"')) { /* a Python literal: quotes swapped */
            char *t = strdup(v->valuestring);
            if (!t) return TG_ENOMEM;
            for (char *q = t; *q; q++)
                if (*q == '\'') *q = '"';
            o = cJSON_Parse(t);
            free(t);
        }
    } else {
        return fail(x, fp, "must be an object {\"model id\": \"endpoint name\"}");
    }
    if (!cJSON_IsObject(o)) {
        cJSON_Delete(o);
        return fail(x, fp,
                    "must be an object {\"model id\": \"endpoint name\"} or a string holding one");
    }
    for (const cJSON *it = o->child; it; it = it->next)
        if (!cJSON_IsString(it) || !it->valuestring[0] || !it->string[0]) {
            cJSON_Delete(o);
            return fail(x, fp, "every entry must map a model id to an endpoint name");
        }
    *out = o;
    return TG_OK;
}

static int parse_aws_provider(tg_provider_t *pv, const cJSON *o, const char *p, ctx_t *x,
                              cJSON **endpoints)
{
    int rc;
    char fp[256];
    int bedrock = pv->kind == TG_PROVIDER_BEDROCK;
    if (!pv->region) {
        snprintf(fp, sizeof(fp), "%s.region", p);
        return fail(x, fp, "is required");
    }
    if (!region_ok(pv->region)) {
        snprintf(fp, sizeof(fp), "%s.region", p);
        return fail(x, fp, "must be an AWS region such as \"us-east-1\"");
    }
    char *auth = NULL;
    if ((rc = get_str(x, o, p, "endpoint", 0, &pv->endpoint)) ||
        (rc = get_str(x, o, p, "auth", 0, &auth)))
        return rc;
    if (bedrock && ((rc = get_str(x, o, p, "control_endpoint", 0, &pv->control_endpoint)) ||
                    (rc = get_str(x, o, p, "bearer_token_env", 0, &pv->bearer_token_env)))) {
        free(auth);
        return rc;
    }
    pv->endpoint_explicit = pv->endpoint != NULL;
    if (!pv->endpoint && asprintf(&pv->endpoint,
                                  bedrock ? "https://bedrock-runtime.%s.amazonaws.com"
                                          : "https://runtime.sagemaker.%s.amazonaws.com",
                                  pv->region) < 0) {
        pv->endpoint = NULL;
        free(auth);
        return TG_ENOMEM;
    }
    if (bedrock && !pv->control_endpoint &&
        asprintf(&pv->control_endpoint, "https://bedrock.%s.amazonaws.com", pv->region) < 0) {
        pv->control_endpoint = NULL;
        free(auth);
        return TG_ENOMEM;
    }
    if ((rc = url_ok(x, pv->endpoint, p, "endpoint")) ||
        (bedrock && (rc = url_ok(x, pv->control_endpoint, p, "control_endpoint")))) {
        free(auth);
        return rc;
    }
    if (bedrock && !pv->bearer_token_env &&
        !(pv->bearer_token_env = strdup("AWS_BEARER_TOKEN_BEDROCK"))) {
        free(auth);
        return TG_ENOMEM;
    }
    /* As the SDKs do: a Bedrock API key in the environment means bearer. */
    const char *tok = bedrock ? getenv(pv->bearer_token_env) : NULL;
    pv->auth = tok && *tok ? TG_AWS_AUTH_BEARER : TG_AWS_AUTH_SIGV4;
    if (auth) {
        snprintf(fp, sizeof(fp), "%s.auth", p);
        if (strcmp(auth, "sigv4") == 0)
            pv->auth = TG_AWS_AUTH_SIGV4;
        else if (strcmp(auth, "bearer") == 0 && bedrock)
            pv->auth = TG_AWS_AUTH_BEARER;
        else
            rc = fail(x, fp, bedrock ? "must be \"sigv4\" or \"bearer\"" : "must be \"sigv4\"");
        free(auth);
        if (rc) return rc;
    }
    if (pv->auth == TG_AWS_AUTH_BEARER &&
        (rc = from_env(x, p, "bearer_token_env", pv->bearer_token_env, 0, &pv->bearer_token)))
        return rc;
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "credentials");
    snprintf(fp, sizeof(fp), "%s.credentials", p);
    if (v && (rc = parse_creds(&pv->creds, v, fp, x))) return rc;
    pv->catalog_refresh_s = 3600;
    if (bedrock && (v = cJSON_GetObjectItemCaseSensitive(o, "catalog"))) {
        static const char *const cf[] = {"refresh_s", "expose", NULL};
        snprintf(fp, sizeof(fp), "%s.catalog", p);
        if ((rc = check_fields(x, v, fp, cf)) ||
            (rc = get_u32(x, v, fp, "refresh_s", 0, 604800, &pv->catalog_refresh_s)) ||
            (rc = get_bool(x, v, fp, "expose", &pv->catalog_expose)))
            return rc;
        if (pv->catalog_refresh_s && pv->catalog_refresh_s < 5) {
            snprintf(fp, sizeof(fp), "%s.catalog.refresh_s", p);
            return fail(x, fp, "must be 0 (never) or at least 5");
        }
        if (pv->catalog_expose && !pv->catalog_refresh_s) {
            snprintf(fp, sizeof(fp), "%s.catalog.expose", p);
            return fail(x, fp, "needs a catalogue: refresh_s must not be 0");
        }
    }
    if (!bedrock && (v = cJSON_GetObjectItemCaseSensitive(o, "endpoints")))
        return parse_endpoints(x, v, p, endpoints);
    return TG_OK;
}

static int parse_provider(tg_config_t *c, tg_provider_t *pv, const cJSON *o, const char *p,
                          ctx_t *x, cJSON **endpoints)
{
    static const char *const openai_fields[] = {"name",
                                                "type",
                                                "base_url",
                                                "api_key_env",
                                                "region",
                                                "connect_timeout_ms",
                                                "first_byte_timeout_ms",
                                                "total_timeout_ms",
                                                NULL};
    static const char *const bedrock_fields[] = {"name",
                                                 "type",
                                                 "region",
                                                 "endpoint",
                                                 "control_endpoint",
                                                 "auth",
                                                 "bearer_token_env",
                                                 "credentials",
                                                 "catalog",
                                                 "connect_timeout_ms",
                                                 "first_byte_timeout_ms",
                                                 "total_timeout_ms",
                                                 NULL};
    static const char *const sagemaker_fields[] = {"name",
                                                   "type",
                                                   "region",
                                                   "endpoint",
                                                   "auth",
                                                   "credentials",
                                                   "endpoints",
                                                   "connect_timeout_ms",
                                                   "first_byte_timeout_ms",
                                                   "total_timeout_ms",
                                                   NULL};
    int rc;
    char fp[256];
    if (!cJSON_IsObject(o)) return fail(x, p, "must be an object");
    if ((rc = get_str(x, o, p, "type", 1, &pv->type))) return rc;
    const char *const *fields;
    if (strcmp(pv->type, "openai") == 0) {
        pv->kind = TG_PROVIDER_OPENAI, fields = openai_fields;
    } else if (strcmp(pv->type, "bedrock") == 0) {
        pv->kind = TG_PROVIDER_BEDROCK, fields = bedrock_fields;
    } else if (strcmp(pv->type, "sagemaker") == 0) {
        pv->kind = TG_PROVIDER_SAGEMAKER, fields = sagemaker_fields;
    } else {
        snprintf(fp, sizeof(fp), "%s.type", p);
        return fail(x, fp, "must be \"openai\", \"bedrock\" or \"sagemaker\"");
    }
    if ((rc = check_fields(x, o, p, fields))) return rc;
    if ((rc = get_str(x, o, p, "name", 1, &pv->name)) ||
        (rc = get_str(x, o, p, "region", 0, &pv->region)))
        return rc;
    if (pv->kind == TG_PROVIDER_OPENAI) {
        if ((rc = get_str(x, o, p, "base_url", 1, &pv->base_url)) ||
            (rc = get_str(x, o, p, "api_key_env", 0, &pv->api_key_env)) ||
            (rc = url_ok(x, pv->base_url, p, "base_url")))
            return rc;
        if (pv->api_key_env) {
            const char *v = getenv(pv->api_key_env);
            if (v && *v && !(pv->api_key = strdup(v))) return TG_ENOMEM;
        }
    } else if ((rc = parse_aws_provider(pv, o, p, x, endpoints))) {
        return rc;
    }
    if (!pv->region && !(pv->region = strdup(""))) return TG_ENOMEM;
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

int tg_config_url_host(const char *url, char *out, size_t cap)
{
    int https = strncmp(url, "https://", 8) == 0;
    if (!https && strncmp(url, "http://", 7) != 0) return TG_EINVAL;
    const char *h = url + (https ? 8 : 7);
    size_t n = strcspn(h, "/?#");
    const char *at = memchr(h, '@', n); /* userinfo is not part of Host */
    if (at) {
        n -= (size_t)(at + 1 - h);
        h = at + 1;
    }
    if (n == 0) return TG_EINVAL;
    /* A default port is not sent: "host:443" over https goes as "host". */
    const char *colon = NULL;
    for (size_t i = n; i-- > 0;) {
        if (h[i] == ':') {
            colon = h + i;
            break;
        }
        if (h[i] == ']') break;
    }
    if (colon && ((https && (size_t)(h + n - colon) == 4 && memcmp(colon, ":443", 4) == 0) ||
                  (!https && (size_t)(h + n - colon) == 3 && memcmp(colon, ":80", 3) == 0)))
        n = (size_t)(colon - h);
    if (n + 1 > cap) return TG_EINVAL;
    for (size_t i = 0; i < n; i++) /* curl sends the host name lower-cased as given; keep it */
        out[i] = h[i];
    out[n] = '\0';
    return TG_OK;
}

/* The runtime endpoint a route calls and the Host header for it. */
static int aws_route_url(tg_model_route_t *m)
{
    const tg_provider_t *pv = m->provider;
    if (!pv->endpoint_explicit && strcmp(m->region, pv->region) != 0) {
        if (asprintf(&m->base_url,
                     pv->kind == TG_PROVIDER_BEDROCK ? "https://bedrock-runtime.%s.amazonaws.com"
                                                     : "https://runtime.sagemaker.%s.amazonaws.com",
                     m->region) < 0) {
            m->base_url = NULL;
            return TG_ENOMEM;
        }
    } else if (!(m->base_url = strdup(pv->endpoint))) {
        return TG_ENOMEM;
    }
    char host[256];
    if (tg_config_url_host(m->base_url, host, sizeof(host))) return TG_EINVAL;
    return (m->host = strdup(host)) ? TG_OK : TG_ENOMEM;
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
                                         "endpoint",
                                         "inference_component",
                                         "target_variant",
                                         "custom_attributes",
                                         "format",
                                         "served_model",
                                         "price",
                                         "max_output_tokens",
                                         NULL};
    int rc;
    char *prov = NULL, fp[256];
    uint64_t max_out = 4096;
    if ((rc = get_uint(x, o, p, "max_output_tokens", 1, 10000000, &max_out))) return rc;
    m->max_output_tokens = (int64_t)max_out;
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
    int kind = m->provider->kind;
    static const char *const sm_only[] = {"endpoint",
                                          "inference_component",
                                          "target_variant",
                                          "custom_attributes",
                                          "format",
                                          "served_model",
                                          NULL};
    for (const char *const *f = sm_only; *f && kind != TG_PROVIDER_SAGEMAKER; f++)
        if (cJSON_GetObjectItemCaseSensitive(o, *f)) {
            snprintf(fp, sizeof(fp), "%s.%s", p, *f);
            return fail(x, fp, "only for a sagemaker provider's routes");
        }
    if (kind == TG_PROVIDER_SAGEMAKER) {
        char *ep = NULL, *fmt = NULL;
        if ((rc = get_str(x, o, p, "endpoint", 0, &ep)) ||
            (rc = get_str(x, o, p, "inference_component", 0, &m->inference_component)) ||
            (rc = get_str(x, o, p, "target_variant", 0, &m->target_variant)) ||
            (rc = get_str(x, o, p, "custom_attributes", 0, &m->custom_attributes)) ||
            (rc = get_str(x, o, p, "served_model", 0, &m->served_model)) ||
            (rc = get_str(x, o, p, "format", 0, &fmt))) {
            free(ep), free(fmt);
            return rc;
        }
        if (ep) { /* the endpoint name is what goes upstream */
            free(m->upstream_model);
            m->upstream_model = ep;
        }
        if (fmt) {
            static const char *const names[] = {"raw", "tgi", "tgi-messages", "jumpstart",
                                                "openai"};
            int found = -1;
            for (int i = 0; i < 5; i++)
                if (strcmp(fmt, names[i]) == 0) found = i;
            free(fmt);
            if (found < 0) {
                snprintf(fp, sizeof(fp), "%s.format", p);
                return fail(x, fp, "must be raw, tgi, tgi-messages, jumpstart or openai");
            }
            m->format = found;
        }
    }
    if (!m->upstream_model && !(m->upstream_model = strdup(m->id))) return TG_ENOMEM;
    if (!m->region && !(m->region = strdup(m->provider->region))) return TG_ENOMEM;
    if (kind != TG_PROVIDER_OPENAI && !region_ok(m->region)) {
        snprintf(fp, sizeof(fp), "%s.region", p);
        return fail(x, fp, "must be an AWS region such as \"us-east-1\"");
    }
    if (kind == TG_PROVIDER_BEDROCK) {
        tg_br_model_t bm;
        if (tg_br_model_parse(m->upstream_model, strlen(m->upstream_model), &bm)) {
            snprintf(fp, sizeof(fp), "%s.%s", p,
                     cJSON_GetObjectItemCaseSensitive(o, "upstream_model") ? "upstream_model"
                                                                           : "id");
            return fail(x, fp, "is not a Bedrock model id, inference profile id or ARN");
        }
    }
    if (kind != TG_PROVIDER_OPENAI && (rc = aws_route_url(m))) {
        if (rc != TG_EINVAL) return rc;
        snprintf(fp, sizeof(fp), "%s.provider", p);
        return fail(x, fp, "the provider's endpoint has no host");
    }
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
    m->has_price = cJSON_GetObjectItemCaseSensitive(o, "price") != NULL; /* checked with the book */
    for (tg_model_route_t *q = c->models; q < m; q++)
        if (strcmp(q->id, m->id) == 0) {
            snprintf(fp, sizeof(fp), "%s.id", p);
            return fail(x, fp, "duplicate model id");
        }
    return TG_OK;
}

/* The shipped book when "prices" is not set: beside an installed binary
 * (BIN/../share/tollgate), in a source tree (bin/ or build/X/ beside data/),
 * else data/prices.json under the working directory. NULL when none exists. */
static char *default_prices_path(void)
{
    char exe[4096], *cand[4] = {NULL, NULL, NULL, NULL};
    ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    char *slash = n > 0 ? (exe[n] = '\0', strrchr(exe, '/')) : NULL;
    if (slash) {
        *slash = '\0';
        if (asprintf(&cand[0], "%s/../share/tollgate/prices.json", exe) < 0) cand[0] = NULL;
        if (asprintf(&cand[1], "%s/../data/prices.json", exe) < 0) cand[1] = NULL;
        if (asprintf(&cand[2], "%s/../../data/prices.json", exe) < 0) cand[2] = NULL;
    }
    cand[3] = strdup("data/prices.json");
    char *found = NULL;
    for (int i = 0; i < 4; i++) {
        if (!found && cand[i] && access(cand[i], R_OK) == 0) {
            found = realpath(cand[i], NULL); /* "bin/../data/x" reads better resolved */
            if (!found) found = strdup(cand[i]);
        }
        free(cand[i]);
    }
    return found;
}

/* "prices", "price_overrides" and the routes' "price": loaded into one book. */
static int parse_prices(tg_config_t *c, const cJSON *root, const cJSON *models, ctx_t *x)
{
    int rc = get_str(x, root, "config", "prices", 0, &c->prices_path);
    if (rc) return rc;
    if (c->prices_path && !c->prices_path[0]) return fail(x, "prices", "must not be empty");
    const cJSON *ov = cJSON_GetObjectItemCaseSensitive(root, "price_overrides");
    if (ov && !cJSON_IsArray(ov))
        return fail(x, "price_overrides", "must be an array of file paths");
    size_t no = ov ? (size_t)cJSON_GetArraySize(ov) : 0;
    if (!(c->price_overrides = calloc(no + 1, sizeof(char *)))) return TG_ENOMEM;
    for (const cJSON *it = ov ? ov->child : NULL; it; it = it->next) {
        if (!cJSON_IsString(it) || !it->valuestring[0])
            return fail(x, "price_overrides", "must be an array of file paths");
        if (!(c->price_overrides[c->nprice_overrides++] = strdup(it->valuestring)))
            return TG_ENOMEM;
    }
    if (!c->prices_path && !(c->prices_path = default_prices_path()))
        tg_warn("no price book found (set \"prices\" in the config): every call is recorded "
                "unpriced, at zero cost");
    const char **files = calloc(no + 2, sizeof(char *));
    tg_route_price_t *routes = calloc(c->nmodels + 1, sizeof(*routes));
    char(*paths)[48] = calloc(c->nmodels + 1, sizeof(*paths));
    size_t nf = 0, nr = 0;
    if (!files || !routes || !paths) rc = TG_ENOMEM;
    if (!rc && c->prices_path) files[nf++] = c->prices_path;
    for (size_t i = 0; !rc && i < c->nprice_overrides; i++)
        files[nf++] = c->price_overrides[i];
    size_t i = 0;
    for (const cJSON *it = models ? models->child : NULL; !rc && it && i < c->nmodels;
         it = it->next, i++) {
        const cJSON *pv = cJSON_GetObjectItemCaseSensitive(it, "price");
        if (!pv) continue;
        snprintf(paths[nr], sizeof(paths[nr]), "models[%zu].price", i);
        routes[nr] = (tg_route_price_t){c->models[i].id, pv, paths[nr]};
        nr++;
    }
    if (!rc) rc = tg_prices_load(&c->prices, files, nf, routes, nr, x->err, x->errcap);
    free(files), free(routes), free(paths);
    return rc;
}

/* "HH:MM" (UTC) into minutes after midnight. */
static int parse_hhmm(const char *s, uint32_t *out)
{
    int h, m;
    if (strlen(s) != 5 || s[2] != ':' || tg_parse_digits(s, 2, &h) ||
        tg_parse_digits(s + 3, 2, &m) || h > 23 || m > 59)
        return TG_EINVAL;
    *out = (uint32_t)(h * 60 + m);
    return TG_OK;
}

static int parse_reports(tg_reports_config_t *r, const cJSON *o, ctx_t *x)
{
    static const char *const fields[] = {"enabled", "dir", "refresh_s", "daily_at", "s3", NULL};
    int rc;
    char *at = NULL;
    if ((rc = check_fields(x, o, "reports", fields)) ||
        (rc = get_bool(x, o, "reports", "enabled", &r->enabled)) ||
        (rc = get_str(x, o, "reports", "dir", 0, &r->dir)) ||
        (rc = get_u32(x, o, "reports", "refresh_s", 1, 86400, &r->refresh_s)) ||
        (rc = get_str(x, o, "reports", "daily_at", 0, &at)))
        return rc;
    if (at) {
        rc = parse_hhmm(at, &r->daily_at_min);
        free(at);
        if (rc) return fail(x, "reports.daily_at", "must be HH:MM (UTC), e.g. \"00:00\"");
    }
    const cJSON *s3 = cJSON_GetObjectItemCaseSensitive(o, "s3");
    if (!s3) return TG_OK;
    static const char *const s3f[] = {"bucket",   "prefix",      "region",
                                      "endpoint", "credentials", NULL};
    if ((rc = check_fields(x, s3, "reports.s3", s3f)) ||
        (rc = get_str(x, s3, "reports.s3", "bucket", 1, &r->s3_bucket)) ||
        (rc = get_str(x, s3, "reports.s3", "prefix", 0, &r->s3_prefix)) ||
        (rc = get_str(x, s3, "reports.s3", "region", 1, &r->s3_region)) ||
        (rc = get_str(x, s3, "reports.s3", "endpoint", 0, &r->s3_endpoint)))
        return rc;
    size_t bl = strlen(r->s3_bucket);
    int bucket_ok = bl >= 3 && bl <= 63;
    for (const char *q = r->s3_bucket; *q; q++)
        bucket_ok &= (*q >= 'a' && *q <= 'z') || (*q >= '0' && *q <= '9') || *q == '-' || *q == '.';
    if (!bucket_ok)
        return fail(x, "reports.s3.bucket", "must be an S3 bucket name (3-63 of a-z 0-9 . -)");
    if (!region_ok(r->s3_region)) return fail(x, "reports.s3.region", "is not a region name");
    if (r->s3_endpoint && (rc = url_ok(x, r->s3_endpoint, "reports.s3", "endpoint"))) return rc;
    if (r->s3_prefix && r->s3_prefix[0] && r->s3_prefix[strlen(r->s3_prefix) - 1] != '/')
        return fail(x, "reports.s3.prefix", "must end with '/'");
    const cJSON *cr = cJSON_GetObjectItemCaseSensitive(s3, "credentials");
    if (cr && (rc = parse_creds(&r->s3_creds, cr, "reports.s3.credentials", x))) return rc;
    return TG_OK;
}

static int parse_root(tg_config_t *c, const cJSON *root, ctx_t *x)
{
    static const char *const fields[] = {
        "listen",    "workers", "log_level", "access_log",      "store",   "http",  "ledger",
        "providers", "models",  "prices",    "price_overrides", "reports", "admin", "reference",
        "keys",      "tls",     NULL};
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

    if ((v = cJSON_GetObjectItemCaseSensitive(root, "reports")) &&
        (rc = parse_reports(&c->reports, v, x)))
        return rc;
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "keys"))) {
        static const char *const kf[] = {"derive_secret_env", NULL};
        if ((rc = check_fields(x, v, "keys", kf)) ||
            (rc = get_str(x, v, "keys", "derive_secret_env", 0, &c->key_derive_env)))
            return rc;
        if (c->key_derive_env && (rc = from_env(x, "keys", "derive_secret_env", c->key_derive_env,
                                                0, &c->key_derive_secret)))
            return rc;
        if (c->key_derive_secret && strlen(c->key_derive_secret) < 32)
            return fail(x, "keys.derive_secret_env", "the secret must be at least 32 bytes");
        if (c->key_derive_secret && strlen(c->key_derive_secret) > 64)
            return fail(x, "keys.derive_secret_env", "the secret must be at most 64 bytes");
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "reference"))) {
        static const char *const rf[] = {"result_ttl_s", NULL};
        if ((rc = check_fields(x, v, "reference", rf)) ||
            (rc = get_u32(x, v, "reference", "result_ttl_s", 1, 86400, &c->result_ttl_s)))
            return rc;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(root, "admin"))) {
        static const char *const af[] = {"listen", NULL};
        char *al = NULL;
        if ((rc = check_fields(x, v, "admin", af)) ||
            (rc = get_str(x, v, "admin", "listen", 0, &al)))
            return rc;
        rc = al ? parse_admin_listen(c, al, x, "admin.listen") : TG_OK;
        free(al);
        if (rc) return rc;
    }

    if ((v = cJSON_GetObjectItemCaseSensitive(root, "tls")) && (rc = parse_tls(c, v, x))) return rc;

    const cJSON *provs = cJSON_GetObjectItemCaseSensitive(root, "providers");
    if (provs && !cJSON_IsArray(provs)) return fail(x, "providers", "must be an array");
    size_t np = provs ? (size_t)cJSON_GetArraySize(provs) : 0;
    c->providers = calloc(np ? np : 1, sizeof(*c->providers));
    if (!c->providers) return TG_ENOMEM;
    c->nproviders = np;
    size_t i = 0;
    char p[64];
    cJSON **eps = calloc(np ? np : 1, sizeof(cJSON *)); /* sagemaker endpoints maps */
    if (!eps) return TG_ENOMEM;
    for (const cJSON *it = provs ? provs->child : NULL; it && !rc; it = it->next, i++) {
        snprintf(p, sizeof(p), "providers[%zu]", i);
        rc = parse_provider(c, &c->providers[i], it, p, x, &eps[i]);
    }

    const cJSON *models = cJSON_GetObjectItemCaseSensitive(root, "models");
    if (!rc && models && !cJSON_IsArray(models)) rc = fail(x, "models", "must be an array");
    size_t nm = models && !rc ? (size_t)cJSON_GetArraySize(models) : 0;
    for (i = 0; i < np; i++)
        nm += eps[i] ? (size_t)cJSON_GetArraySize(eps[i]) : 0;
    if (!rc && !(c->models = calloc(nm ? nm : 1, sizeof(*c->models)))) rc = TG_ENOMEM;
    i = 0;
    for (const cJSON *it = models ? models->child : NULL; it && !rc; it = it->next, i++) {
        snprintf(p, sizeof(p), "models[%zu]", i);
        c->nmodels = i + 1;
        rc = parse_model(c, &c->models[i], it, p, x);
    }
    /* Each "model id": "endpoint name" entry is a route of its own. */
    for (size_t k = 0; k < np && !rc; k++) {
        for (const cJSON *e = eps[k] ? eps[k]->child : NULL; e && !rc; e = e->next, i++) {
            char ep[200];
            snprintf(ep, sizeof(ep), "providers[%zu].endpoints[\"%.120s\"]", k, e->string);
            cJSON *o = cJSON_CreateObject();
            if (!o || !cJSON_AddStringToObject(o, "id", e->string) ||
                !cJSON_AddStringToObject(o, "provider", c->providers[k].name) ||
                !cJSON_AddStringToObject(o, "endpoint", e->valuestring)) {
                cJSON_Delete(o);
                rc = TG_ENOMEM;
                break;
            }
            c->nmodels = i + 1;
            rc = parse_model(c, &c->models[i], o, ep, x);
            cJSON_Delete(o);
        }
    }
    for (i = 0; i < np; i++)
        cJSON_Delete(eps[i]);
    free(eps);
    if (!rc) rc = parse_prices(c, root, models, x);
    return rc;
}

int tg_config_load(tg_config_t **out, const char *path, char *err, size_t errcap)
{
    ctx_t x = {err, errcap};
    *out = NULL;
    size_t len;
    char *text = tg_read_file(path, 4 << 20, &len);
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
    c->reports.enabled = 1;
    c->reports.refresh_s = 300;
    c->admin_port = 8081;
    c->result_ttl_s = 600;
    int rc = parse_root(c, root, &x);
    cJSON_Delete(root);
    if (!rc && !c->store_path && !(c->store_path = strdup("var/tollgate.db"))) rc = TG_ENOMEM;
    if (!rc && !c->reports.dir) {
        /* Beside the database by default: var/tollgate.db -> var/reports. */
        const char *slash = strrchr(c->store_path, '/');
        int dl = slash ? (int)(slash - c->store_path) : 0;
        size_t cap = (size_t)dl + 16;
        if (!(c->reports.dir = malloc(cap)))
            rc = TG_ENOMEM;
        else
            snprintf(c->reports.dir, cap, "%.*s%sreports", dl, c->store_path, slash ? "/" : "");
    }
    if (!rc && !c->reports.s3_prefix && !(c->reports.s3_prefix = strdup(""))) rc = TG_ENOMEM;
    if (!rc && c->admin_port >= 0 && !c->admin_host && !(c->admin_host = strdup("127.0.0.1")))
        rc = TG_ENOMEM;
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

int tg_config_set_admin_listen(tg_config_t *c, const char *listen, char *err, size_t errcap)
{
    ctx_t x = {err, errcap};
    return parse_admin_listen(c, listen, &x, "--admin-listen");
}

int tg_config_set_listen(tg_config_t *c, const char *listen, char *err, size_t errcap)
{
    ctx_t x = {err, errcap};
    return parse_listen(c, listen, &x, "--listen");
}

static void wipe_free(char *s)
{
    if (!s) return;
    memset(s, 0, strlen(s));
    free(s);
}

static void free_creds(tg_aws_creds_config_t *cr)
{
    free(cr->profile), free(cr->role_arn), free(cr->role_session_name), free(cr->external_id);
    free(cr->sts_endpoint), free(cr->imds_endpoint), free(cr->container_endpoint);
    free(cr->access_key_id_env), free(cr->secret_access_key_env), free(cr->session_token_env);
    wipe_free(cr->access_key_id), wipe_free(cr->secret_access_key);
    wipe_free(cr->session_token);
}

void tg_config_free(tg_config_t *c)
{
    if (!c) return;
    for (size_t i = 0; i < c->nproviders; i++) {
        tg_provider_t *p = &c->providers[i];
        free(p->name), free(p->type), free(p->base_url), free(p->api_key_env), free(p->region);
        free(p->endpoint), free(p->control_endpoint), free(p->bearer_token_env);
        wipe_free(p->api_key), wipe_free(p->bearer_token);
        free_creds(&p->creds);
    }
    tg_reports_config_t *r = &c->reports;
    free(r->dir), free(r->s3_bucket), free(r->s3_prefix), free(r->s3_region), free(r->s3_endpoint);
    free_creds(&r->s3_creds);
    free(c->admin_host);
    free(c->tls_host), free(c->tls_cert_file), free(c->tls_key_file);
    free(c->key_derive_env);
    wipe_free(c->key_derive_secret);
    for (size_t i = 0; i < c->nmodels; i++) {
        tg_model_route_t *m = &c->models[i];
        free(m->id), free(m->upstream_model), free(m->region), free(m->base_url), free(m->host);
        free(m->inference_component), free(m->target_variant), free(m->custom_attributes);
        free(m->served_model);
    }
    for (size_t i = 0; i < c->nprice_overrides; i++)
        free(c->price_overrides[i]);
    free(c->price_overrides);
    free(c->prices_path);
    tg_prices_free(c->prices);
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

const tg_model_route_t *tg_config_sm_endpoint(const tg_config_t *c, const char *name, size_t len)
{
    for (size_t i = 0; i < c->nmodels; i++) {
        const tg_model_route_t *m = &c->models[i];
        if (m->provider->kind == TG_PROVIDER_SAGEMAKER && strlen(m->upstream_model) == len &&
            memcmp(m->upstream_model, name, len) == 0)
            return m;
    }
    return NULL;
}

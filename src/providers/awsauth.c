/* awsauth.c - credentials and SigV4 signing glue for the AWS providers.
 *
 * A provider either holds a Bedrock API key (one prebuilt header line) or a
 * tg_aws_credprov_t. Signing takes a reference to the current credentials,
 * signs with the thread's cached signing key and releases them; the only
 * copy made is the session token line, into the caller's arena. */
#include "providers/awsauth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "aws/credentials.h"

struct tg_awsauth {
    int bearer;
    char missing[160]; /* why there can be no credentials (an unset variable), or "" */
    char *bearer_line; /* "Authorization: Bearer TOKEN"; wiped on destroy */
    tg_aws_credprov_t *creds;
    int started;
};

int tg_awsauth_create(tg_awsauth_t **out, const tg_provider_t *p)
{
    tg_awsauth_t *a = calloc(1, sizeof(*a));
    if (!a) return TG_ENOMEM;
    if (p->auth == TG_AWS_AUTH_BEARER) {
        a->bearer = 1;
        if (!p->bearer_token)
            snprintf(a->missing, sizeof(a->missing), "environment variable %s is not set",
                     p->bearer_token_env);
        else if (strpbrk(p->bearer_token, "\r\n")) /* it would add header lines of its own */
            snprintf(a->missing, sizeof(a->missing), "environment variable %s holds a line break",
                     p->bearer_token_env);
        else if (asprintf(&a->bearer_line, "Authorization: Bearer %s", p->bearer_token) < 0) {
            free(a);
            return TG_ENOMEM;
        }
        *out = a;
        return TG_OK;
    }
    int rc = tg_aws_credprov_from_config(&a->creds, &p->creds, p->region, a->missing,
                                         sizeof(a->missing));
    if (rc) {
        free(a);
        return rc;
    }
    *out = a;
    return TG_OK;
}

int tg_aws_credprov_from_config(tg_aws_credprov_t **out, const tg_aws_creds_config_t *c,
                                const char *region, char *missing, size_t cap)
{
    *out = NULL;
    if (c->access_key_id_env && (!c->access_key_id || !c->secret_access_key)) {
        /* Named static keys that are not there: never fall back to the chain. */
        snprintf(missing, cap, "environment variable %s is not set",
                 !c->access_key_id ? c->access_key_id_env : c->secret_access_key_env);
        return TG_OK;
    }
    tg_aws_creds_opts_t o = {
        .profile = c->profile,
        .role_arn = c->role_arn,
        .role_session_name = c->role_session_name,
        .external_id = c->external_id,
        .region = region,
        .sts_endpoint = c->sts_endpoint,
        .imds_endpoint = c->imds_endpoint,
        .container_endpoint = c->container_endpoint,
        .timeout_ms = c->timeout_ms,
        .refresh_before_ms = c->refresh_before_ms,
        .access_key_id = c->access_key_id,
        .secret_access_key = c->secret_access_key,
        .session_token = c->session_token,
    };
    return tg_aws_credprov_create(out, &o);
}

int tg_awsauth_start(tg_awsauth_t *a)
{
    if (!a->creds || a->started) return TG_OK;
    int rc = tg_aws_credprov_start(a->creds);
    if (rc == 0) a->started = 1;
    return rc;
}

int tg_awsauth_wait(tg_awsauth_t *a, uint32_t timeout_ms, char *err, size_t errcap)
{
    if (a->missing[0]) {
        snprintf(err, errcap, "%s", a->missing);
        return TG_EAUTH;
    }
    if (a->bearer) return TG_OK;
    return tg_aws_credprov_wait(a->creds, timeout_ms, err, errcap);
}

void tg_awsauth_destroy(tg_awsauth_t *a)
{
    if (!a) return;
    if (a->bearer_line) {
        memset(a->bearer_line, 0, strlen(a->bearer_line));
        free(a->bearer_line);
    }
    if (a->creds) tg_aws_credprov_destroy(a->creds);
    free(a);
}

int tg_awsauth_is_bearer(const tg_awsauth_t *a)
{
    return a->bearer;
}

static tg_sigv4_key_t *key_for(tg_awsauth_keys_t *k, const char *region, const char *service)
{
    char scope[48];
    snprintf(scope, sizeof(scope), "%s/%s", region, service);
    for (unsigned i = 0; i < TG_AWSAUTH_KEYS; i++)
        if (strcmp(k->scope[i], scope) == 0) return &k->keys[i];
    unsigned i = k->next++ % TG_AWSAUTH_KEYS;
    memset(&k->keys[i], 0, sizeof(k->keys[i]));
    memcpy(k->scope[i], scope, sizeof(scope));
    return &k->keys[i];
}

int tg_awsauth_sign(tg_awsauth_t *a, tg_awsauth_keys_t *keys, const tg_awsauth_req_t *r,
                    tg_arena_t *arena, tg_awsauth_out_t *out)
{
    out->n = 0;
    if (a->missing[0]) return TG_EAUTH;
    if (a->bearer) {
        out->lines[out->n++] = a->bearer_line;
        return TG_OK;
    }
    if (r->nheaders > TG_AWSAUTH_MAX_HEADERS) return TG_EINVAL;
    tg_aws_creds_t *cr = tg_aws_credprov_get(a->creds);
    if (!cr) return TG_EAUTH;
    tg_header_t h[TG_AWSAUTH_MAX_HEADERS + 1];
    h[0] = (tg_header_t){"host", 4, r->host, strlen(r->host)};
    if (r->nheaders) memcpy(h + 1, r->headers, r->nheaders * sizeof(*h));
    int has_token = cr->session_token && cr->session_token[0];
    tg_sigv4_params_t p = {
        .access_key_id = cr->access_key_id,
        .secret_access_key = cr->secret_access_key,
        .session_token = has_token ? cr->session_token : NULL,
        .region = r->region,
        .service = r->service,
        .time = time(NULL),
        .flags = 0,
    };
    tg_sigv4_request_t sr = {
        .method = r->method,
        .path = r->path,
        .path_len = r->path_len,
        .query = r->query,
        .query_len = r->query ? r->query_len : 0,
        .headers = h,
        .nheaders = r->nheaders + 1,
        .body = r->body,
        .body_len = r->body_len,
    };
    tg_sigv4_out_t so;
    int rc =
        tg_sigv4_sign(&p, &sr, keys ? key_for(keys, r->region, r->service) : NULL, &so, NULL, NULL);
    char *tok = NULL;
    if (rc == 0 && has_token) {
        size_t tl = strlen(cr->session_token);
        tok = arena ? tg_arena_alloc(arena, tl + 23) : NULL;
        if (!tok)
            rc = TG_ENOMEM;
        else
            snprintf(tok, tl + 23, "x-amz-security-token: %s", cr->session_token);
    }
    tg_aws_creds_release(cr);
    if (rc) return rc;
    snprintf(out->date, sizeof(out->date), "x-amz-date: %s", so.amz_date);
    /* The signer gives the header's value (tolerate a whole line too). */
    int whole = strncasecmp(so.authorization, "Authorization:", 14) == 0;
    if ((size_t)snprintf(out->auth, sizeof(out->auth), "%s%s",
                         whole ? "" : "Authorization: ", so.authorization) >= sizeof(out->auth))
        return TG_ETOOBIG;
    out->lines[out->n++] = out->date;
    if (tok) out->lines[out->n++] = tok;
    out->lines[out->n++] = out->auth;
    return TG_OK;
}

/* gateway.c - the application on top of the HTTP server: per-worker context,
 * routing, authentication, health and metrics endpoints, the access log, and
 * the writer-thread tick that reloads API keys.
 *
 * Each worker owns an upstream client and a ledger completion port on its own
 * loop, plus a view of the tenancy snapshot; nothing here takes a lock on the
 * request path. */
#include <openssl/crypto.h>
#include <time.h>

#include "api/internal.h"
#include "aws/sigv4.h"
#include "providers/bedrock.h"
#include "usage/cost.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- ids ---------------------------------------------------------------- */

static uint64_t mix64(uint64_t x)
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

void tg_api_new_id(tg_wctx_t *w, char *out, size_t cap, const char *prefix)
{
    /* seed (random per worker per process) + counter: unique without a syscall. */
    uint64_t n = w->id_next++;
    /* An event id is the ledger's primary key: ascending per worker, its
     * index is appended to (one hot page per worker) instead of written at a
     * random page per row, which would dirty a page per event in every
     * commit. Other ids (shown to clients) keep looking random. */
    uint64_t tail = strcmp(prefix, "evt_") == 0 ? n : mix64(n ^ w->id_seed);
    /* prefix + seed and tail as 16 hex digits each (what "%s%016llx%016llx"
     * writes, without the format machinery: two ids per call). */
    uint8_t raw[16];
    for (int i = 0; i < 8; i++) {
        raw[i] = (uint8_t)(w->id_seed >> (56 - 8 * i));
        raw[8 + i] = (uint8_t)(tail >> (56 - 8 * i));
    }
    char hex[33];
    tg_hex(hex, raw, sizeof(raw));
    size_t len = tg_strlcpy(out, prefix, cap);
    if (len + 1 < cap) tg_strlcpy(out + len, hex, cap - len);
}

/* ---- cost ---------------------------------------------------------------- */

void tg_api_submit_event(tg_wctx_t *w, tg_req_t *req, tg_usage_event_t *ev, const char *outcome,
                         int status, const tg_model_route_t *route, int bedrock,
                         tg_gov_ticket_t *gov, tg_writer_done_fn done, void *ud)
{
    tg_api_submit_event_at(w, req->start_ns, ev, outcome, status, route, bedrock, gov, done, ud);
}

void tg_api_submit_event_at(tg_wctx_t *w, uint64_t start_ns, tg_usage_event_t *ev,
                            const char *outcome, int status, const tg_model_route_t *route,
                            int bedrock, tg_gov_ticket_t *gov, tg_writer_done_fn done, void *ud)
{
    tg_strlcpy(ev->outcome, outcome, sizeof(ev->outcome));
    ev->status = status;
    ev->ended_ms = tg_wall_ms();
    ev->latency_us = (int64_t)((tg_now_ns() - start_ns) / 1000);
    tg_api_price_event(w->gw->cfg->prices, route, bedrock, ev);
    if (gov && gov->active) {
        /* The reservation becomes the real cost; tokens count in this minute. */
        int64_t tokens =
            ev->input_tokens + ev->output_tokens + ev->cache_read_tokens + ev->cache_write_tokens;
        if (gov->soft_over) ev->over_budget = 1;
        tg_gov_settle(gov, ev->ended_ms, tokens, ev->cost_total);
    }
    if (tg_writer_submit(w->gw->writer, ev, w->port, done, ud) != 0) {
        tg_error("ledger refused event %s; answering anyway", ev->id);
        if (done) done(ud, TG_EBUSY);
    }
}

int tg_api_price_event(const tg_prices_t *book, const tg_model_route_t *route, int bedrock,
                       tg_usage_event_t *ev)
{
    char rk[sizeof(((tg_price_t *)0)->model)] = "";
    if (route && route->has_price) snprintf(rk, sizeof(rk), TG_PRICE_ROUTE "%s", route->id);
    tg_br_model_t bm;
    const char *base = NULL;
    if (bedrock && tg_br_model_parse(ev->upstream_model, strlen(ev->upstream_model), &bm) == 0)
        base = bm.base_model;
    const char *keys[] = {rk, base, ev->upstream_model, ev->model};
    int rc = tg_cost_event(book, keys, sizeof(keys) / sizeof(keys[0]), ev);
    if (rc)
        tg_error("event %s: cost of %s does not fit (%s); recorded unpriced", ev->id,
                 ev->upstream_model, tg_strerror(rc));
    return rc;
}

/* ---- responses ------------------------------------------------------------ */

static void access_log(tg_wctx_t *w, tg_req_t *req, int status, const char *request_id,
                       const char *key_id)
{
    if (!w->gw->cfg->access_log) return;
    uint64_t us = (tg_now_ns() - req->start_ns) / 1000;
    /* Never the key itself: only its id. */
    tg_info("access method=%s path=%.*s status=%d us=%llu request_id=%s key_id=%s remote=%s",
            req->method_str, (int)(req->path_len > 200 ? 200 : req->path_len), req->path, status,
            (unsigned long long)us, request_id ? request_id : "-", key_id && *key_id ? key_id : "-",
            req->remote_addr);
}

void tg_api_log(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *request_id,
                const char *key_id)
{
    tg_metrics_request(w->shard, route, status);
    access_log(w, req, status, request_id, key_id);
}

void tg_api_oai_stream_end(tg_wctx_t *w, tg_req_t *req, int route, int status,
                           const tg_usage_event_t *ev, int done, int aborted)
{
    char tail[96] = ": x-tollgate-cost-usd=";
    size_t n = strlen(tail);
    int len = tg_usd_format(ev->cost_total, tail + n, sizeof(tail) - n);
    n += len > 0 ? (size_t)len : 0;
    n += (size_t)snprintf(tail + n, sizeof(tail) - n, "\n\n%s", done ? "data: [DONE]\n\n" : "");
    if (!aborted) tg_resp_write(req, tail, n);
    tg_api_log(w, req, route, status, ev->request_id, ev->key_id);
    tg_resp_end(req);
}

void tg_api_send(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *content_type,
                 const char *request_id, const void *body, size_t len)
{
    tg_header_t h[2];
    size_t n = 0;
    char fresh[40];
    if (!request_id) {
        tg_api_new_id(w, fresh, sizeof(fresh), "req_");
        request_id = fresh;
    }
    h[n++] = (tg_header_t){"Content-Type", 12, content_type, strlen(content_type)};
    if (request_id) h[n++] = (tg_header_t){"x-request-id", 12, request_id, strlen(request_id)};
    tg_api_log(w, req, route, status, request_id, NULL);
    tg_resp_send(req, status, h, n, body, len);
}

void tg_api_error(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *code,
                  const char *msg, const char *request_id)
{
    tg_buf_t b;
    tg_buf_init(&b, 4096);
    if (tg_http_error_json(&b, status, code, msg)) tg_http_error_json(&b, status, code, "error");
    tg_api_send(w, req, route, status, "application/json", request_id, b.data, b.len);
    tg_buf_free(&b);
}

/* ---- authentication ------------------------------------------------------- */

static int bearer(const char *v, const char **tok, size_t *len)
{
    if (!v || strncasecmp(v, "Bearer ", 7) != 0) return 0;
    v += 7;
    while (*v == ' ')
        v++;
    *tok = v;
    *len = strlen(v);
    return *len > 0;
}

/* ---- SigV4 from clients: the access key id is a tollgate key id, the
 * secret its (derived) secret. The request is signed again here, with the
 * headers the client says it signed, and the signatures compared. */

#define SIGV4_SKEW_S 900 /* AWS's own limit: 15 minutes */

/* Copies the value of "name=" in an Authorization header up to ',' or end. */
static int auth_field(const char *auth, const char *name, char *out, size_t cap)
{
    const char *p = strstr(auth, name);
    if (!p) return -1;
    p += strlen(name);
    size_t n = strcspn(p, ", ");
    if (n == 0 || n >= cap) return -1;
    memcpy(out, p, n);
    out[n] = '\0';
    return 0;
}

static int sigv4_check(tg_wctx_t *w, tg_req_t *req, const char *auth, const tg_snapshot_t *snap,
                       const tg_key_t **kout, const tg_principal_t **pout, const char **code,
                       const char **msg)
{
    char cred[256], signed_hdrs[1024], sig[80];
    *code = "invalid_signature", *msg = "The request signature does not match.";
    if (auth_field(auth, "Credential=", cred, sizeof(cred)) ||
        auth_field(auth, "SignedHeaders=", signed_hdrs, sizeof(signed_hdrs)) ||
        auth_field(auth, "Signature=", sig, sizeof(sig))) {
        *code = "invalid_authorization", *msg = "Malformed SigV4 Authorization header.";
        return -1;
    }
    /* KEYID/YYYYMMDD/region/service/aws4_request */
    char *parts[5], *save = NULL;
    int np = 0;
    for (char *t = strtok_r(cred, "/", &save); t && np < 5; t = strtok_r(NULL, "/", &save))
        parts[np++] = t;
    if (np != 5 || strcmp(parts[4], "aws4_request") != 0 || strlen(parts[1]) != 8) {
        *code = "invalid_authorization", *msg = "Malformed SigV4 credential scope.";
        return -1;
    }
    const tg_principal_t *p = NULL;
    const tg_key_t *k = tg_snapshot_key_by_id(snap, parts[0], &p);
    if (!k) {
        *code = "invalid_api_key", *msg = "Unknown access key id.";
        return -1;
    }
    const char *date = tg_req_header(req, "x-amz-date");
    time_t t;
    if (!date || tg_sigv4_parse_time(date, &t) || strncmp(date, parts[1], 8) != 0) {
        *code = "invalid_signature", *msg = "x-amz-date is missing or does not match the scope.";
        return -1;
    }
    int64_t now = tg_wall_ms() / 1000;
    if (t > now + SIGV4_SKEW_S || t < now - SIGV4_SKEW_S) {
        *code = "signature_expired", *msg = "The request time is more than 15 minutes off.";
        return -1;
    }
    /* The headers it signed, minus those the signer adds itself. */
    tg_header_t hs[TG_SIGV4_MAX_HEADERS];
    size_t nh = 0;
    unsigned flags = 0;
    const char *token = NULL;
    save = NULL;
    for (char *h = strtok_r(signed_hdrs, ";", &save); h; h = strtok_r(NULL, ";", &save)) {
        if (strcmp(h, "x-amz-date") == 0 || strcmp(h, "authorization") == 0) continue;
        /* Over HTTP/2 the SDKs sign the :authority pseudo-header, which the
         * HTTP/2 layer hands over as Host. */
        const char *v = tg_req_header(req, strcmp(h, ":authority") == 0 ? "host" : h);
        if (!v) return -1;
        if (strcmp(h, "x-amz-content-sha256") == 0) {
            flags |=
                strcmp(v, "UNSIGNED-PAYLOAD") == 0 ? TG_SIGV4_UNSIGNED_PAYLOAD : TG_SIGV4_SIGN_BODY;
            continue;
        }
        if (strcmp(h, "x-amz-security-token") == 0) {
            token = v;
            continue;
        }
        if (nh >= TG_SIGV4_MAX_HEADERS) return -1;
        hs[nh++] = (tg_header_t){h, strlen(h), v, strlen(v)};
    }
    tg_sigv4_request_t r = {.method = req->method_str,
                            .path = req->path,
                            .path_len = req->path_len,
                            .query = req->query,
                            .query_len = req->query_len,
                            .headers = hs,
                            .nheaders = nh,
                            .body = req->body,
                            .body_len = req->body_len};
    /* The current secret, then the previous one through its grace. */
    for (int prev = 0; prev < 2; prev++) {
        if (prev && k->prev_expires_ms <= tg_wall_ms()) break;
        char secret[TG_KEY_SECRET_MAX];
        if (tg_key_derive_secret(k, prev, secret, sizeof(secret))) {
            if (!prev)
                *code = "sigv4_not_enabled",
                *msg = "This key's secret cannot sign SigV4 (it was not derived).";
            continue;
        }
        tg_sigv4_params_t sp = {.access_key_id = k->id,
                                .secret_access_key = secret,
                                .session_token = token,
                                .region = parts[2],
                                .service = parts[3],
                                .time = t,
                                .flags = flags};
        tg_sigv4_out_t so;
        int rc = tg_sigv4_sign(&sp, &r, NULL, &so, NULL, NULL);
        explicit_bzero(secret, sizeof(secret));
        if (rc) return -1;
        if (CRYPTO_memcmp(so.signature, sig, 64) == 0 && strlen(sig) == 64) {
            *kout = k, *pout = p;
            return prev ? 1 : 0;
        }
        *code = "invalid_signature", *msg = "The request signature does not match.";
    }
    return -1;
}

/* A key that authenticated: refused when its team or unit is disabled. */
static int auth_accept(const tg_key_t *k, const tg_principal_t *p, tg_caller_t *out,
                       const char **code, const char **msg)
{
    if (p && p->disabled) {
        int team = p->disabled == TG_PRINCIPAL_TEAM_DISABLED;
        *code = team ? "team_disabled" : "unit_disabled";
        *msg = team ? "This key's team is disabled." : "This key's unit is disabled.";
        return 403;
    }
    tg_strlcpy(out->id, k->id, sizeof(out->id));
    tg_strlcpy(out->unit, p ? p->unit : k->unit, sizeof(out->unit));
    tg_strlcpy(out->team, k->team, sizeof(out->team));
    out->p = p;
    return 0;
}

_Static_assert(sizeof(tg_key_memo_t) <= TG_CONN_MEMO_BYTES, "the key memo fits a connection's");
_Static_assert(_Alignof(tg_key_memo_t) <= 16, "and is aligned in it");

int tg_api_auth_check(tg_wctx_t *w, tg_req_t *req, tg_caller_t *out, const char **code,
                      const char **msg)
{
    const char *tok = NULL;
    size_t len = 0;
    const char *auth = tg_req_header(req, "authorization");
    const char *xk = tg_req_header(req, "x-api-key");
    /* An explicit x-api-key wins (an SDK may sign with other credentials and
     * add the key by middleware); else a SigV4 signature; else Bearer. */
    if ((!xk || !*xk) && auth && strncmp(auth, "AWS4-HMAC-SHA256 ", 17) == 0) {
        const tg_key_t *k = NULL;
        const tg_principal_t *p = NULL;
        const tg_snapshot_t *snap = tg_tenancy_view_get(&w->view);
        if (sigv4_check(w, req, auth, snap, &k, &p, code, msg) < 0) return 401;
        int64_t now = tg_wall_ms();
        if (k->revoked_ms && k->revoked_ms <= now) {
            *code = "revoked_api_key", *msg = "This API key has been revoked.";
            return 401;
        }
        if (k->expires_ms && k->expires_ms <= now) {
            *code = "expired_api_key", *msg = "This API key has expired.";
            return 401;
        }
        return auth_accept(k, p, out, code, msg);
    }
    if (xk && *xk) {
        tok = xk;
        len = strlen(xk);
    } else if (!bearer(auth, &tok, &len)) {
        *code = "missing_api_key";
        *msg = "No API key: send it as 'Authorization: Bearer KEY' or 'x-api-key: KEY'.";
        return 401;
    }
    const tg_key_t *k = NULL;
    const tg_principal_t *p = NULL;
    const tg_snapshot_t *snap = tg_tenancy_view_get(&w->view);
    /* The connection remembers its last key: a client that sends the same
     * one again (every SDK does) skips the SHA-256 and the table. */
    tg_key_memo_t *memo = req->conn_memo;
    int rc = !snap ? TG_EAUTH
             : memo
                 ? tg_snapshot_lookup_memo(snap, w->view.gen, memo, tok, len, tg_wall_ms(), &k, &p)
                 : tg_snapshot_lookup(snap, tok, len, tg_wall_ms(), &k, &p);
    if (rc == TG_EREVOKED) {
        *code = "revoked_api_key", *msg = "This API key has been revoked.";
        return 401;
    }
    if (rc == TG_EEXPIRED) {
        *code = "expired_api_key", *msg = "This API key has expired.";
        return 401;
    }
    if (rc || !k) {
        *code = "invalid_api_key", *msg = "Invalid API key.";
        return 401;
    }
    return auth_accept(k, p, out, code, msg);
}

int tg_api_auth(tg_wctx_t *w, tg_req_t *req, int route, tg_caller_t *out)
{
    const char *code, *msg;
    int status = tg_api_auth_check(w, req, out, &code, &msg);
    if (status == 0) return 0;
    tg_api_error(w, req, route, status, code, msg, NULL);
    return -1;
}

/* ---- health and metrics --------------------------------------------------- */

static int is_loopback(const char *addr)
{
    return strncmp(addr, "127.", 4) == 0 || strcmp(addr, "::1") == 0 ||
           strncmp(addr, "::ffff:127.", 11) == 0;
}

static void handle_readyz(tg_wctx_t *w, tg_req_t *req)
{
    int64_t last = tg_writer_last_ok_ms(w->gw->writer);
    int ok = last && tg_wall_ms() - last < 5000 && !tg_worker_draining(w->worker);
    const char *body = ok ? "{\"status\":\"ready\"}" : "{\"status\":\"unavailable\"}";
    tg_api_send(w, req, TG_ROUTE_READYZ, ok ? 200 : 503, "application/json", NULL, body,
                strlen(body));
}

static void handle_metrics(tg_wctx_t *w, tg_req_t *req)
{
    /* Token counters name every team: only for the operator's own machine. */
    if (!is_loopback(req->remote_addr)) {
        tg_api_error(w, req, TG_ROUTE_METRICS, 403, "forbidden",
                     "Metrics are served to loopback clients only.", NULL);
        return;
    }
    tg_buf_t b;
    tg_buf_init(&b, 16 << 20);
    if (tg_metrics_render(w->gw->metrics, &b)) {
        tg_buf_free(&b);
        tg_api_error(w, req, TG_ROUTE_METRICS, 500, "internal_error", "Metrics too large.", NULL);
        return;
    }
    tg_api_send(w, req, TG_ROUTE_METRICS, 200, "text/plain; version=0.0.4; charset=utf-8", NULL,
                b.data, b.len);
    tg_buf_free(&b);
}

static int path_is(const tg_req_t *req, const char *p)
{
    size_t n = strlen(p);
    return req->path_len == n && memcmp(req->path, p, n) == 0;
}

static void method_not_allowed(tg_wctx_t *w, tg_req_t *req, int route, const char *allow)
{
    char msg[96];
    snprintf(msg, sizeof(msg), "Use %s for this path.", allow);
    tg_api_error(w, req, route, 405, "method_not_allowed", msg, NULL);
}

static void handle(tg_req_t *req, void *ctx)
{
    (void)ctx;
    tg_wctx_t *w = tg_worker_data(req->worker);
    int get = req->method == TG_HTTP_GET || req->method == TG_HTTP_HEAD;
    if (path_is(req, "/v1/chat/completions")) {
        if (req->method != TG_HTTP_POST) return method_not_allowed(w, req, TG_ROUTE_CHAT, "POST");
        return tg_api_chat(w, req);
    }
    if (path_is(req, "/v1/models")) {
        if (!get) return method_not_allowed(w, req, TG_ROUTE_MODELS, "GET");
        return tg_api_models(w, req);
    }
    if (path_is(req, "/v1/completions")) {
        if (req->method != TG_HTTP_POST) return method_not_allowed(w, req, TG_ROUTE_CHAT, "POST");
        return tg_api_completions(w, req);
    }
    if (path_is(req, "/v1/embeddings")) {
        if (req->method != TG_HTTP_POST) return method_not_allowed(w, req, TG_ROUTE_OTHER, "POST");
        return tg_api_embeddings(w, req);
    }
    if (path_is(req, "/v1/limits")) {
        if (!get) return method_not_allowed(w, req, TG_ROUTE_OTHER, "GET");
        return tg_api_limits(w, req);
    }
    if (path_is(req, "/v1/usage")) {
        if (!get) return method_not_allowed(w, req, TG_ROUTE_OTHER, "GET");
        return tg_api_usage(w, req);
    }
    if (req->path_len > 7 && memcmp(req->path, "/model/", 7) == 0) return tg_api_bedrock(w, req);
    if (tg_api_reference(w, req)) return;
    if (req->path_len > 11 && memcmp(req->path, "/endpoints/", 11) == 0)
        return tg_api_sagemaker(w, req);
    if (path_is(req, "/healthz")) {
        if (!get) return method_not_allowed(w, req, TG_ROUTE_HEALTHZ, "GET");
        return tg_api_send(w, req, TG_ROUTE_HEALTHZ, 200, "application/json", NULL,
                           "{\"status\":\"ok\"}", 15);
    }
    if (path_is(req, "/readyz")) {
        if (!get) return method_not_allowed(w, req, TG_ROUTE_READYZ, "GET");
        return handle_readyz(w, req);
    }
    if (path_is(req, "/metrics")) {
        if (!get) return method_not_allowed(w, req, TG_ROUTE_METRICS, "GET");
        return handle_metrics(w, req);
    }
    tg_api_error(w, req, TG_ROUTE_OTHER, 404, "not_found", "No such route.", NULL);
}

/* ---- worker lifecycle ------------------------------------------------------ */

static void rejected(tg_worker_t *worker, void *wdata, int status, void *ctx)
{
    tg_wctx_t *w = wdata;
    if (w) tg_metrics_request(w->shard, TG_ROUTE_OTHER, status);
}

static void *worker_init(tg_worker_t *worker, uv_loop_t *loop, void *ctx)
{
    tg_gateway_t *g = ctx;
    tg_wctx_t *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->gw = g;
    w->worker = worker;
    w->loop = loop;
    w->shard = tg_metrics_shard(g->metrics, tg_worker_index(worker));
    tg_random(&w->id_seed, sizeof(w->id_seed));
    tg_tenancy_view_init(&w->view, g->tenancy);
    w->aws_keys = calloc(g->cfg->nproviders + 1, sizeof(*w->aws_keys));
    if (!w->aws_keys || tg_upstream_create(&w->up, loop) ||
        tg_writer_port_create(&w->port, g->writer, loop)) {
        tg_error("worker %d: cannot create upstream client or ledger port",
                 tg_worker_index(worker));
        abort(); /* start-up only: nothing is in flight yet */
    }
    return w;
}

static void worker_fini(tg_worker_t *worker, void *wdata, void *ctx)
{
    tg_wctx_t *w = wdata;
    if (!w) return;
    tg_api_reference_shutdown(w); /* before the upstream calls it cancels go */
    tg_upstream_destroy(w->up);
    tg_writer_port_close(w->port);
    tg_tenancy_view_release(&w->view);
    free(w->aws_keys);
    free(w);
}

int tg_gateway_create(tg_gateway_t **out, const tg_config_t *cfg, tg_tenancy_t *tenancy,
                      tg_writer_t *writer, tg_metrics_t *metrics)
{
    tg_gateway_t *g = calloc(1, sizeof(*g));
    if (!g) return TG_ENOMEM;
    g->cfg = cfg;
    g->tenancy = tenancy;
    g->writer = writer;
    g->metrics = metrics;
    g->auth_headers = calloc(cfg->nproviders + 1, sizeof(char *));
    g->chat_urls = calloc(cfg->nproviders + 1, sizeof(char *));
    g->completion_urls = calloc(cfg->nproviders + 1, sizeof(char *));
    g->aws_auth = calloc(cfg->nproviders + 1, sizeof(*g->aws_auth));
    g->catalogs = calloc(cfg->nproviders + 1, sizeof(*g->catalogs));
    g->aws_hosts = calloc(cfg->nproviders + 1, sizeof(char *));
    if (!g->auth_headers || !g->chat_urls || !g->completion_urls || !g->aws_auth || !g->catalogs ||
        !g->aws_hosts) {
        tg_gateway_destroy(g);
        return TG_ENOMEM;
    }
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const tg_provider_t *p = &cfg->providers[i];
        if (p->kind != TG_PROVIDER_OPENAI) {
            char host[256];
            int rc = tg_awsauth_create(&g->aws_auth[i], p);
            if (!rc && tg_config_url_host(p->endpoint, host, sizeof(host))) rc = TG_EINVAL;
            if (!rc && !(g->aws_hosts[i] = strdup(host))) rc = TG_ENOMEM;
            if (!rc && p->kind == TG_PROVIDER_BEDROCK && p->catalog_refresh_s)
                rc = tg_catalog_create(&g->catalogs[i], p, g->aws_auth[i]);
            if (rc) {
                tg_gateway_destroy(g);
                return rc;
            }
            continue;
        }
        if (p->api_key && asprintf(&g->auth_headers[i], "Authorization: Bearer %s", p->api_key) < 0)
            g->auth_headers[i] = NULL;
        if (asprintf(&g->completion_urls[i], "%s/completions", p->base_url) < 0)
            g->completion_urls[i] = NULL;
        if (!g->completion_urls[i] ||
            asprintf(&g->chat_urls[i], "%s/chat/completions", p->base_url) < 0) {
            g->chat_urls[i] = NULL;
            tg_gateway_destroy(g);
            return TG_ENOMEM;
        }
    }
    int rrc = tg_api_reference_init(g);
    if (rrc) {
        tg_gateway_destroy(g);
        return rrc;
    }
    g->app.handle = handle;
    g->app.worker_init = worker_init;
    g->app.worker_fini = worker_fini;
    g->app.rejected = rejected;
    g->app.ctx = g;
    *out = g;
    return TG_OK;
}

void tg_gateway_destroy(tg_gateway_t *g)
{
    if (!g) return;
    for (size_t i = 0; i < g->cfg->nproviders; i++) {
        if (g->auth_headers && g->auth_headers[i]) {
            memset(g->auth_headers[i], 0, strlen(g->auth_headers[i]));
            free(g->auth_headers[i]);
        }
        if (g->chat_urls) free(g->chat_urls[i]);
        if (g->completion_urls) free(g->completion_urls[i]);
        if (g->catalogs) tg_catalog_destroy(g->catalogs[i]); /* before the auth it signs with */
        if (g->aws_auth) tg_awsauth_destroy(g->aws_auth[i]);
        if (g->aws_hosts) free(g->aws_hosts[i]);
    }
    free(g->auth_headers);
    free(g->chat_urls);
    free(g->completion_urls);
    free(g->aws_auth);
    free(g->catalogs);
    free(g->aws_hosts);
    tg_api_reference_fini(g);
    free(g);
}

int tg_gateway_start_aws(tg_gateway_t *g, uint32_t wait_ms)
{
    const tg_config_t *cfg = g->cfg;
    for (size_t i = 0; i < cfg->nproviders; i++) {
        if (!g->aws_auth[i]) continue;
        int rc = tg_awsauth_start(g->aws_auth[i]);
        if (rc) {
            tg_error("provider %s: cannot start the AWS credentials thread: %s",
                     cfg->providers[i].name, tg_strerror(rc));
            return rc;
        }
    }
    /* One shared deadline: a few seconds in all, not per provider. */
    uint64_t deadline = tg_now_ns() + (uint64_t)wait_ms * 1000000u;
    for (size_t i = 0; i < cfg->nproviders; i++) {
        if (!g->aws_auth[i]) continue;
        const tg_provider_t *p = &cfg->providers[i];
        uint64_t now = tg_now_ns();
        uint32_t left = now < deadline ? (uint32_t)((deadline - now) / 1000000u) : 0;
        char err[512] = "";
        if (tg_awsauth_wait(g->aws_auth[i], left, err, sizeof(err)))
            tg_warn("provider %s: no AWS credentials yet (%s); its calls are answered 503 "
                    "credentials_unavailable until they arrive",
                    p->name, err[0] ? err : "still resolving");
        else
            tg_info("provider %s: %s auth ready (%s)", p->name,
                    tg_awsauth_is_bearer(g->aws_auth[i]) ? "bearer" : "SigV4", p->region);
    }
    for (size_t i = 0; i < cfg->nproviders; i++) {
        int rc = g->catalogs[i] ? tg_catalog_start(g->catalogs[i]) : 0;
        if (rc) {
            tg_error("provider %s: cannot start the catalogue thread: %s", cfg->providers[i].name,
                     tg_strerror(rc));
            return rc;
        }
    }
    return TG_OK;
}

const tg_http_app_t *tg_gateway_app(tg_gateway_t *g)
{
    return &g->app;
}

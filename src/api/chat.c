/* chat.c - POST /v1/chat/completions and GET /v1/models, OpenAI-compatible.
 * (A model routed to Bedrock goes through Converse, one on a SageMaker
 * container that speaks this API to its endpoint, both by reference.c's
 * engine; /v1/models also lists exposed Bedrock catalogues.)
 *
 * A call goes: authenticate, validate, rewrite the body for the upstream
 * (its model id; for streams, stream_options.include_usage so the provider
 * reports its own counts), reserve a ledger slot, forward. Plain responses are
 * buffered (the usage is in them) and passed through; streams are forwarded
 * event by event, with the usage-only chunk dropped when the client did not
 * ask for it. In every case the usage event is committed before the last
 * byte goes out: a plain response is sent after the commit, a stream's final
 * "data: [DONE]" is held back until it. A client that goes away cancels the
 * upstream call and is still billed for what was delivered. */
#include <assert.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "gov/policy.h"
#include "providers/openai.h"
#include "providers/sagemaker.h"
#include "providers/sse.h"
#include "usage/cost.h"

enum { FIN_PASSTHROUGH, FIN_ERROR, FIN_STREAM };

typedef struct {
    tg_wctx_t *w;
    tg_req_t *req;
    tg_upcall_t *up; /* NULL once the upstream call is over */
    const tg_model_route_t *route;
    size_t provider;
    char *upbody; /* rewritten body (owned) or NULL when the client's is sent */
    size_t upbody_len;
    int stream;
    int client_wants_usage;
    int status;  /* upstream status */
    int started; /* response headers sent to the client */
    int paused;
    int recorded; /* usage event submitted */
    int saw_done;
    int saw_usage;
    int aborted; /* the client went away */
    int fin;     /* FIN_* */
    int err_status;
    const char *err_code, *err_msg;
    int completions;    /* /v1/completions (a prompt, not messages) */
    int64_t chunks_out; /* content chunks forwarded, for estimates */
    uint64_t up_start_ns;
    tg_buf_t body; /* plain response, or an error body during a stream */
    tg_buf_t out;  /* events of one upstream read, written in one go */
    tg_sse_t sse;
    char content_type[96];
    tg_gov_ticket_t gov; /* limits and budgets held until the event is submitted */
    tg_usage_event_t ev;
} chat_t;

static void chat_free(chat_t *c)
{
    tg_buf_free(&c->body);
    tg_buf_free(&c->out);
    tg_sse_free(&c->sse);
    free(c->upbody);
    free(c);
}

/* ---- finishing ------------------------------------------------------------ */

static void on_committed(void *ud, int status)
{
    chat_t *c = ud;
    tg_wctx_t *w = c->w;
    tg_req_t *req = c->req;
    (void)status; /* a failed commit was logged as JSON by the writer; still answer */
    if (c->aborted && !c->started) {
        /* Nobody to answer; finish the request object. 499 as nginx logs it. */
        tg_api_log(w, req, TG_ROUTE_CHAT, 499, c->ev.request_id, c->ev.key_id);
        tg_resp_send(req, 499, NULL, 0, "", 0);
        chat_free(c);
        return;
    }
    switch (c->fin) {
    case FIN_PASSTHROUGH: {
        const char *ct = c->content_type[0] ? c->content_type : "application/json";
        char usd[32];
        tg_usd_format(c->ev.cost_total, usd, sizeof(usd));
        tg_header_t h[] = {
            {"Content-Type", 12, ct, strlen(ct)},
            {"x-request-id", 12, c->ev.request_id, strlen(c->ev.request_id)},
            {"x-tollgate-cost-usd", 19, usd, strlen(usd)},
        };
        tg_api_log(w, req, TG_ROUTE_CHAT, c->status, c->ev.request_id, NULL);
        tg_resp_send(req, c->status, h, 3, c->body.data ? c->body.data : "", c->body.len);
        break;
    }
    case FIN_ERROR:
        tg_api_error(w, req, TG_ROUTE_CHAT, c->err_status, c->err_code, c->err_msg,
                     c->ev.request_id);
        break;
    default:
        tg_api_oai_stream_end(w, req, TG_ROUTE_CHAT, c->ev.status, &c->ev, c->saw_done, c->aborted);
        break;
    }
    chat_free(c);
}

/* The input's size in tokens as far as the request shows it, for a call
 * whose provider never said: the body is read again only then (it is the
 * request's until it is answered). */
static int64_t estimate_input(const chat_t *c)
{
    cJSON *root = cJSON_ParseWithLength(c->req->body, c->req->body_len);
    int64_t n = 0;
    if (c->completions) {
        char *text = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(root, "prompt"));
        n = text ? tg_estimate_tokens((int64_t)strlen(text)) : 0;
        free(text);
    } else {
        n = tg_openai_estimate_input(cJSON_GetObjectItemCaseSensitive(root, "messages"));
    }
    cJSON_Delete(root);
    return n;
}

/* The output's size in tokens as far as a plain answer shows it (its
 * choices' text), for a provider that did not count it. */
static int64_t estimate_output(const chat_t *c)
{
    cJSON *root = cJSON_ParseWithLength(c->body.data ? c->body.data : "", c->body.len);
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
    int64_t chars = 0;
    for (const cJSON *ch = cJSON_IsArray(choices) ? choices->child : NULL; ch; ch = ch->next) {
        const cJSON *msg = cJSON_GetObjectItemCaseSensitive(ch, "message");
        const cJSON *t = c->completions ? cJSON_GetObjectItemCaseSensitive(ch, "text")
                                        : cJSON_GetObjectItemCaseSensitive(msg, "content");
        if (cJSON_IsString(t)) chars += (int64_t)strlen(t->valuestring);
    }
    cJSON_Delete(root);
    return chars ? tg_estimate_tokens(chars) : 0;
}

static void record(chat_t *c, const char *outcome, int status)
{
    if (c->recorded) return;
    c->recorded = 1;
    tg_usage_event_t *ev = &c->ev;
    int ok = strcmp(outcome, TG_OUTCOME_OK) == 0;
    if (!c->saw_usage && (ok || strcmp(outcome, TG_OUTCOME_ABANDONED) == 0 ||
                          strcmp(outcome, TG_OUTCOME_INTERRUPTED) == 0)) {
        /* The provider never said (an abandoned or broken stream, or a
         * server that does not count): bill what we can see, and say so. */
        ev->input_tokens = estimate_input(c);
        ev->output_tokens = c->stream || !ok ? c->chunks_out : estimate_output(c);
        ev->token_source = TG_TOKENS_ESTIMATED;
    }
    tg_api_submit_event(c->w, c->req, ev, outcome, status, c->route, 0, &c->gov, on_committed, c);
}

/* The upstream call is over (done, failed, or canceled by us). */
static void upstream_gone(chat_t *c)
{
    c->up = NULL;
    tg_metrics_upstream(c->w->shard, c->provider, (tg_now_ns() - c->up_start_ns) / 1000);
}

static void upstream_over(chat_t *c, int err)
{
    upstream_gone(c);
    if (c->sse.pending.len && !c->saw_done && !err) err = TG_EUPSTREAM;

    if (c->started) { /* a stream was under way: end it cleanly */
        c->fin = FIN_STREAM;
        record(c, err || !c->saw_done ? TG_OUTCOME_INTERRUPTED : TG_OUTCOME_OK, 200);
        return;
    }
    if (err) {
        c->fin = FIN_ERROR;
        c->err_status = err == TG_ETIMEDOUT ? 504 : 502;
        c->err_code = err == TG_ETIMEDOUT  ? "upstream_timeout"
                      : err == TG_ECONNECT ? "upstream_unreachable"
                      : err == TG_ETOOBIG  ? "upstream_response_too_large"
                                           : "upstream_error";
        c->err_msg = err == TG_ETIMEDOUT  ? "The model provider did not answer in time."
                     : err == TG_ECONNECT ? "The model provider could not be reached."
                     : err == TG_ETOOBIG  ? "The model provider's response was too large."
                                          : "The model provider's response broke off.";
        record(c, TG_OUTCOME_FAILED, c->err_status);
        return;
    }
    c->fin = FIN_PASSTHROUGH;
    if (c->status >= 200 && c->status < 300) {
        c->saw_usage = tg_openai_usage_body(c->body.data ? c->body.data : "", c->body.len, &c->ev);
        record(c, TG_OUTCOME_OK, c->status);
    } else {
        record(c, TG_OUTCOME_UPSTREAM_ERROR, c->status);
    }
}

/* ---- upstream callbacks ---------------------------------------------------- */

static void up_headers(tg_upcall_t *u, int status, const tg_header_t *h, size_t n, void *ud)
{
    chat_t *c = ud;
    c->status = status;
    c->ev.ttfb_us = (int64_t)((tg_now_ns() - c->req->start_ns) / 1000);
    for (size_t i = 0; i < n; i++)
        if (tg_strcaseeq(h[i].name, h[i].name_len, "content-type", 12))
            tg_strlcpy(c->content_type, h[i].value, sizeof(c->content_type));
    if (c->stream && status >= 200 && status < 300) {
        tg_header_t rh[] = {
            {"Content-Type", 12, "text/event-stream", 17},
            {"Cache-Control", 13, "no-cache", 8},
            {"x-request-id", 12, c->ev.request_id, strlen(c->ev.request_id)},
        };
        tg_resp_start(c->req, 200, rh, 3);
        c->started = 1;
    }
}

static int on_event(const tg_sse_event_t *e, void *ud)
{
    chat_t *c = ud;
    if (e->data_len == 6 && memcmp(e->data, "[DONE]", 6) == 0) {
        c->saw_done = 1; /* held back until the usage event is durable */
        return 0;
    }
    if (tg_openai_chunk_has_usage(e->data, e->data_len)) {
        cJSON *root = cJSON_ParseWithLength(e->data, e->data_len);
        if (root && tg_openai_usage(root, &c->ev)) {
            c->saw_usage = 1;
            const cJSON *choices = cJSON_GetObjectItemCaseSensitive(root, "choices");
            int usage_only = !cJSON_IsArray(choices) || cJSON_GetArraySize(choices) == 0;
            cJSON_Delete(root);
            if (usage_only && !c->client_wants_usage) return 0; /* we asked, not the client */
        } else {
            cJSON_Delete(root);
        }
    }
    if (tg_openai_chunk_has_content(e->data, e->data_len)) c->chunks_out++;
    return tg_buf_append(&c->out, e->raw, e->raw_len);
}

static int up_data(tg_upcall_t *u, const char *p, size_t n, void *ud)
{
    chat_t *c = ud;
    if (!c->started) {
        int rc = tg_buf_append(&c->body, p, n);
        if (rc == 0) return 0;
        tg_upcall_cancel(u); /* over max_response_bytes */
        upstream_over(c, TG_ETOOBIG);
        return 0;
    }
    tg_buf_reset(&c->out);
    int rc = tg_sse_feed(&c->sse, p, n, on_event, c);
    if (rc) {
        tg_warn("request %s: bad upstream stream (%s)", c->ev.request_id, tg_strerror(rc));
        tg_upcall_cancel(u);
        upstream_over(c, TG_EUPSTREAM);
        return 0;
    }
    if (c->out.len && tg_resp_write(c->req, c->out.data, c->out.len) == 1) {
        c->paused = 1;
        return 1;
    }
    return 0;
}

static void up_done(tg_upcall_t *u, int err, void *ud)
{
    upstream_over(ud, err);
}

static const tg_upcall_cbs_t up_cbs = {up_headers, up_data, up_done};

/* ---- client callbacks ------------------------------------------------------ */

static void on_drain(tg_req_t *req)
{
    chat_t *c = req->data;
    if (c->paused && c->up) {
        c->paused = 0;
        tg_upcall_resume(c->up);
    }
}

static void on_abort(tg_req_t *req)
{
    chat_t *c = req->data;
    c->aborted = 1;
    if (c->recorded) return; /* already waiting for the commit: it finishes */
    if (c->up) {
        tg_upcall_cancel(c->up);
        upstream_gone(c);
    }
    c->fin = FIN_STREAM;
    c->saw_done = 0; /* no [DONE] to a client that left */
    /* A stream's client already got its 200; otherwise 499, nginx's "client
     * closed request", so logs tell it from a real answer. */
    record(c, TG_OUTCOME_ABANDONED, c->started ? 200 : 499);
}

/* ---- request --------------------------------------------------------------- */

/* What a call needs from the client's body. */
typedef struct {
    const tg_model_route_t *route;
    int stream;
    int client_usage; /* (read without a tree) the stream asks for usage itself */
    int64_t max_output;
    tg_span_t model; /* the model value's bytes (read without a tree), for the splice */
} chat_in_t;

/* What a stream's body gains when the client did not ask for usage itself:
 * spliced in as the object's first member (the scan found no other
 * stream_options, so there is no duplicate). */
static const char ask_usage_member[] = "\"stream_options\":{\"include_usage\":true},";

/* The client's body with the top-level "model" value (at, or found here
 * when at.p is NULL) replaced by model (NULL: kept), and with
 * ask_usage_member put first in the object when ask_usage, spliced into the
 * bytes as they are (nothing else is re-printed, so numbers keep their
 * digits): malloc'ed, or NULL when the member cannot be located without a
 * parse (the tree is printed instead). */
static char *splice_body(const tg_req_t *req, tg_span_t at, const char *model, int ask_usage,
                         size_t *len)
{
    const char *body = req->body, *v = at.p, *open = memchr(body, '{', req->body_len);
    size_t vlen = at.len;
    if (model && !v && tg_json_member(body, req->body_len, "model", &v, &vlen) != 1) return NULL;
    if (!open) return NULL;
    size_t first = (size_t)(open - body) + 1; /* just past the object's '{' */
    size_t mlen = model ? strlen(model) : 0, alen = ask_usage ? sizeof(ask_usage_member) - 1 : 0;
    tg_buf_t b;
    tg_buf_init(&b, 0);
    int rc = tg_buf_reserve(&b, req->body_len + alen + mlen * 6 + 8);
    if (!rc) rc = tg_buf_append(&b, body, first);
    if (!rc && ask_usage) rc = tg_buf_append(&b, ask_usage_member, alen);
    if (!rc && model) {
        size_t head = (size_t)(v - body);
        rc = tg_buf_append(&b, body + first, head - first);
        if (!rc) rc = tg_buf_json_str(&b, model, mlen);
        if (!rc) rc = tg_buf_append(&b, v + vlen, req->body_len - head - vlen);
    } else if (!rc) {
        rc = tg_buf_append(&b, body + first, req->body_len - first);
    }
    if (rc) {
        tg_buf_free(&b);
        return NULL;
    }
    *len = b.len;
    return b.data;
}

/* Rewrites the request for the upstream into c->upbody (NULL when the
 * client's body goes as it is). *rootp is the parsed body, or NULL when it
 * was read without a tree (in): then a splice does it, and the body is
 * parsed here only if the splice cannot be made. */
static void rewrite(chat_t *c, cJSON **rootp, const tg_req_t *req, const tg_model_route_t *route,
                    const chat_in_t *in)
{
    int model = strcmp(route->upstream_model, route->id) != 0;
    int changed = 0;
    c->client_wants_usage = 0;
    if (!*rootp) {
        int ask = c->stream && !in->client_usage;
        c->client_wants_usage = c->stream && in->client_usage;
        if (!model && !ask) return;
        if ((c->upbody = splice_body(req, in->model, model ? route->upstream_model : NULL, ask,
                                     &c->upbody_len)))
            return;
        if (!(*rootp = cJSON_ParseWithLength(req->body, req->body_len))) return;
    }
    cJSON *root = *rootp;
    if (c->stream && tg_api_ask_usage(root, &c->client_wants_usage)) changed = 1;
    /* Only the model to change (the usual plain call): splice, no re-print. */
    if (model && !changed &&
        (c->upbody =
             splice_body(req, (tg_span_t){NULL, 0}, route->upstream_model, 0, &c->upbody_len)))
        return;
    if (model) {
        cJSON_ReplaceItemInObjectCaseSensitive(root, "model",
                                               cJSON_CreateString(route->upstream_model));
        changed = 1;
    }
    if (changed && (c->upbody = cJSON_PrintUnformatted(root))) c->upbody_len = strlen(c->upbody);
}

int tg_api_ask_usage(cJSON *root, int *client_usage)
{
    cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (!cJSON_IsObject(so)) {
        cJSON_DeleteItemFromObjectCaseSensitive(root, "stream_options");
        if (!(so = cJSON_AddObjectToObject(root, "stream_options"))) return -1;
    }
    *client_usage = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(so, "include_usage"));
    if (*client_usage) return 0;
    cJSON_DeleteItemFromObjectCaseSensitive(so, "include_usage");
    return cJSON_AddTrueToObject(so, "include_usage") ? 1 : -1;
}

static int is_true(tg_span_t v)
{
    return v.p && v.len == 4 && memcmp(v.p, "true", 4) == 0;
}

/* A JSON array value with at least one element (the scanner checked it). */
static int nonempty_array(tg_span_t v)
{
    if (!v.p || *v.p != '[') return 0;
    for (size_t i = 1; i < v.len; i++)
        if (v.p[i] != ' ' && v.p[i] != '\t' && v.p[i] != '\n' && v.p[i] != '\r')
            return v.p[i] != ']';
    return 0;
}

enum { PLAIN_OWN = 5 }; /* plain_names[]: these, then the max-output names */
static const char *plain_names[TG_JSON_MEMBERS_MAX] = {"model", "messages", "prompt", "stream",
                                                       "stream_options"};
static size_t plain_nnames;

static const char *const include_usage_name = "include_usage";

static void plain_names_fill(void)
{
    size_t n = PLAIN_OWN;
    for (const char *name;
         n < TG_JSON_MEMBERS_MAX && (name = tg_api_max_output_name(n - PLAIN_OWN));)
        plain_names[n++] = name;
    assert(!tg_api_max_output_name(n - PLAIN_OWN)); /* all of them fit */
    plain_nnames = n;
}

/* The members the gateway reads from a call's body (model, messages, ...,
 * then the output cap's): *names, and how many. */
static size_t read_names(const char *const **names)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, plain_names_fill);
    *names = plain_names;
    return plain_nnames;
}

/* Reads the usual call from the body's bytes, without building a tree: an
 * OpenAI route named without escapes, and for a stream, stream_options
 * either absent or already asking for usage (so the body needs at most its
 * model and stream_options spliced). 1 with *in filled; 0 when the body
 * needs a parse (any error among them, so the parse answers it exactly as
 * before). */
static int read_plain(tg_wctx_t *w, const tg_req_t *req, int completions, chat_in_t *in)
{
    /* One scan for what the call needs and the output cap's names; a name
     * twice (TG_JSON_DUP) goes to the parse, which refuses it. */
    const char *const *names;
    size_t nnames = read_names(&names);
    tg_span_t m[TG_JSON_MEMBERS_MAX], u;
    if (tg_json_members_once(req->body, req->body_len, names, nnames, m) < 0) return 0;
    tg_span_t model = m[0], prompt = m[2];
    if (!model.p || *model.p != '"' || model.len < 3 || memchr(model.p, '\\', model.len)) return 0;
    if (!completions && !nonempty_array(m[1])) return 0;
    if (completions && !(prompt.p && *prompt.p == '"') && !nonempty_array(prompt)) return 0;
    in->route = tg_config_model(w->gw->cfg, model.p + 1, model.len - 2);
    if (!in->route || in->route->provider->kind != TG_PROVIDER_OPENAI) return 0;
    in->stream = is_true(m[3]);
    /* A stream's usage: asked for already, or stream_options is absent and
     * is spliced in; any other stream_options goes through the tree. */
    in->client_usage = 0;
    if (in->stream && m[4].p) {
        if (!(*m[4].p == '{' &&
              tg_json_members_once(m[4].p, m[4].len, &include_usage_name, 1, &u) == 1 &&
              is_true(u)))
            return 0;
        in->client_usage = 1;
    }
    if (tg_api_max_output_spans(m + PLAIN_OWN, &in->max_output)) return 0;
    in->model = model;
    return 1;
}

/* The first of names that obj has more than once (as cJSON decodes its
 * names), or NULL. */
static const char *repeated_member(const cJSON *obj, const char *const *names, size_t n)
{
    unsigned char seen[TG_JSON_MEMBERS_MAX] = {0};
    for (const cJSON *m = obj->child; m; m = m->next)
        for (size_t i = 0; m->string && i < n; i++)
            if (strcmp(m->string, names[i]) == 0) {
                if (seen[i]) return names[i];
                seen[i] = 1;
                break;
            }
    return NULL;
}

/* The call read from the parsed body (*rootp, which it may consume): 0 with
 * *in filled and *rootp still the caller's to free, or -1 when the request
 * was answered here (an error, or another provider's engine took it). */
static int parse_call(tg_wctx_t *w, tg_req_t *req, int completions, const tg_caller_t *who,
                      cJSON **rootp, chat_in_t *in)
{
    cJSON *root = *rootp;
    if (!root || !cJSON_IsObject(root)) {
        cJSON_Delete(root), *rootp = NULL;
        tg_api_error(w, req, TG_ROUTE_CHAT, 400, "invalid_json",
                     "The request body is not a JSON object.", NULL);
        return -1;
    }
    /* A member the gateway reads, written twice, would be read here as its
     * first and by most upstreams as its last: a model not routed, a usage
     * chunk not sent. Refused. */
    const char *const *names;
    size_t nnames = read_names(&names);
    const char *dup = repeated_member(root, names, nnames);
    const cJSON *so = cJSON_GetObjectItemCaseSensitive(root, "stream_options");
    if (!dup && cJSON_IsObject(so) && repeated_member(so, &include_usage_name, 1))
        dup = "stream_options.include_usage";
    if (dup) {
        char msg[160];
        snprintf(msg, sizeof(msg), "'%s' appears more than once in the request body.", dup);
        cJSON_Delete(root), *rootp = NULL;
        tg_api_error(w, req, TG_ROUTE_CHAT, 400, "invalid_request", msg, NULL);
        return -1;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    const cJSON *prompt = cJSON_GetObjectItemCaseSensitive(root, "prompt");
    const char *bad_code = NULL, *bad_msg = NULL;
    int bad_status = 400;
    const tg_model_route_t *route = NULL;
    if (!cJSON_IsString(model) || !model->valuestring[0]) {
        bad_code = "missing_model", bad_msg = "'model' is required and must be a string.";
    } else if (!completions && (!cJSON_IsArray(messages) || cJSON_GetArraySize(messages) == 0)) {
        bad_code = "invalid_request", bad_msg = "'messages' must be a non-empty array.";
    } else if (completions && !cJSON_IsString(prompt) &&
               !(cJSON_IsArray(prompt) && cJSON_GetArraySize(prompt) > 0)) {
        bad_code = "invalid_request", bad_msg = "'prompt' must be a string or a non-empty array.";
    } else if (!(route =
                     tg_config_model(w->gw->cfg, model->valuestring, strlen(model->valuestring)))) {
        bad_status = 404, bad_code = "model_not_found",
        bad_msg = "The model does not exist or you do not have access to it.";
    }
    char native[400];
    if (!bad_code && completions && route->provider->kind != TG_PROVIDER_OPENAI) {
        snprintf(native, sizeof(native),
                 "Model '%.60s' is not a completion-style upstream: use /v1/chat/completions.",
                 route->id);
        bad_code = "unsupported_route", bad_msg = native;
    }
    if (!bad_code && route->provider->kind == TG_PROVIDER_BEDROCK) {
        /* Translated to Converse and back (reference.c's engine). */
        tg_api_chat_bedrock(w, req, who, route, root);
        cJSON_Delete(root), *rootp = NULL;
        return -1;
    }
    if (!bad_code && route->provider->kind == TG_PROVIDER_SAGEMAKER) {
        if (!completions &&
            (route->format == TG_SM_FORMAT_TGI_MESSAGES || route->format == TG_SM_FORMAT_OPENAI)) {
            /* The container speaks this API itself (reference.c's engine). */
            tg_api_chat_sagemaker(w, req, who, route, root);
            cJSON_Delete(root), *rootp = NULL;
            return -1;
        }
        /* A container with a format of its own: no translation to it. */
        snprintf(native, sizeof(native),
                 "Model '%.60s' is a SageMaker endpoint whose container does not speak the "
                 "OpenAI chat API (its route's format is not tgi-messages or openai): call POST "
                 "/endpoints/<endpoint>/invocations with its own body.",
                 route->id);
        bad_code = "unsupported_route", bad_msg = native;
    }
    if (bad_code) {
        cJSON_Delete(root), *rootp = NULL;
        tg_api_error(w, req, TG_ROUTE_CHAT, bad_status, bad_code, bad_msg, NULL);
        return -1;
    }
    in->route = route;
    in->stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    in->max_output = tg_api_max_output(root);
    return 0;
}

/* /v1/chat/completions, or (completions) the legacy /v1/completions for
 * completion-style upstreams: the same call with a prompt instead of
 * messages, forwarded to the provider's /completions. */
static void openai_call(tg_wctx_t *w, tg_req_t *req, int completions)
{
    tg_caller_t who;
    if (tg_api_auth(w, req, TG_ROUTE_CHAT, &who)) return;
    chat_in_t in = {0};
    cJSON *root = NULL;
    if (!read_plain(w, req, completions, &in)) {
        root = cJSON_ParseWithLength(req->body, req->body_len);
        if (parse_call(w, req, completions, &who, &root, &in)) return;
    }
    const tg_model_route_t *route = in.route;
    tg_api_call_t ci = {.model = route->id,
                        .model_len = strlen(route->id),
                        .route = route,
                        .upstream_model = route->upstream_model,
                        .region = route->region,
                        .max_output = in.max_output};
    tg_gov_ticket_t gov;
    tg_api_refusal_t refusal;
    if (tg_api_govern(w, req, &who, &ci, &gov, &refusal)) {
        cJSON_Delete(root);
        return tg_api_refuse(w, req, TG_ROUTE_CHAT, &refusal);
    }
    if (tg_writer_reserve(w->gw->writer) != 0) {
        cJSON_Delete(root);
        tg_api_gov_release(&gov);
        return tg_api_error(w, req, TG_ROUTE_CHAT, 503, "overloaded",
                            "The usage ledger is saturated; retry shortly.", NULL);
    }

    chat_t *c = calloc(1, sizeof(*c));
    if (!c) {
        cJSON_Delete(root);
        tg_writer_unreserve(w->gw->writer);
        tg_api_gov_release(&gov);
        return tg_api_error(w, req, TG_ROUTE_CHAT, 503, "overloaded", "Out of memory.", NULL);
    }
    c->gov = gov;
    c->w = w;
    c->req = req;
    c->route = route;
    c->provider = (size_t)(route->provider - w->gw->cfg->providers);
    c->stream = in.stream;
    c->completions = completions;
    tg_buf_init(&c->body, w->gw->cfg->max_response_bytes);
    tg_buf_init(&c->out, 0);
    tg_sse_init(&c->sse, 1 << 20);
    rewrite(c, &root, req, route, &in);
    cJSON_Delete(root);

    tg_usage_event_t *ev = &c->ev;
    tg_api_new_id(w, ev->id, sizeof(ev->id), "evt_");
    tg_api_new_id(w, ev->request_id, sizeof(ev->request_id), "req_");
    ev->started_ms = tg_wall_ms() - (int64_t)((tg_now_ns() - req->start_ns) / 1000000);
    tg_strlcpy(ev->unit, who.unit, sizeof(ev->unit));
    tg_strlcpy(ev->team, who.team, sizeof(ev->team));
    tg_strlcpy(ev->key_id, who.id, sizeof(ev->key_id));
    tg_strlcpy(ev->model, route->id, sizeof(ev->model));
    tg_strlcpy(ev->upstream_model, route->upstream_model, sizeof(ev->upstream_model));
    tg_strlcpy(ev->provider, route->provider->name, sizeof(ev->provider));
    tg_strlcpy(ev->region, route->region, sizeof(ev->region));
    tg_strlcpy(ev->api, completions ? "openai.completions" : "openai.chat", sizeof(ev->api));
    tg_strlcpy(ev->price_version, "none", sizeof(ev->price_version));
    ev->streamed = c->stream;

    const char *headers[3];
    size_t nh = 0;
    headers[nh++] = "Content-Type: application/json";
    headers[nh++] = c->stream ? "Accept: text/event-stream" : "Accept: application/json";
    if (w->gw->auth_headers[c->provider]) headers[nh++] = w->gw->auth_headers[c->provider];
    tg_upcall_opts_t o = {
        .method = "POST",
        .url = completions ? w->gw->completion_urls[c->provider] : w->gw->chat_urls[c->provider],
        .headers = headers,
        .nheaders = nh,
        .body = c->upbody ? c->upbody : req->body,
        .body_len = c->upbody ? c->upbody_len : req->body_len,
        .connect_timeout_ms = route->connect_timeout_ms,
        .first_byte_timeout_ms = route->first_byte_timeout_ms,
        .total_timeout_ms = route->total_timeout_ms,
    };
    req->data = c;
    req->on_abort = on_abort;
    req->on_drain = on_drain;
    c->up_start_ns = tg_now_ns();
    int rc = tg_upcall_start(w->up, &o, &up_cbs, c, &c->up);
    if (rc) {
        c->up = NULL;
        upstream_over(c, rc == TG_ETIMEDOUT ? rc : TG_ECONNECT);
    }
}

void tg_api_chat(tg_wctx_t *w, tg_req_t *req)
{
    openai_call(w, req, 0);
}

void tg_api_completions(tg_wctx_t *w, tg_req_t *req)
{
    openai_call(w, req, 1);
}

void tg_api_models(tg_wctx_t *w, tg_req_t *req)
{
    tg_caller_t who;
    if (tg_api_auth(w, req, TG_ROUTE_MODELS, &who)) return;
    size_t listed = 0;
    const tg_config_t *cfg = w->gw->cfg;
    tg_buf_t b;
    tg_buf_init(&b, 0);
    int rc = tg_buf_appends(&b, "{\"object\":\"list\",\"data\":[");
    for (size_t i = 0; i < cfg->nmodels && !rc; i++) {
        const tg_model_route_t *m = &cfg->models[i];
        if (!tg_api_allowed(&who, m->id)) continue;
        rc = tg_buf_appends(&b, listed++ ? ",{\"id\":" : "{\"id\":");
        if (!rc) rc = tg_buf_json_str(&b, m->id, strlen(m->id));
        if (!rc)
            rc = tg_buf_printf(
                &b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":", (long long)m->created);
        if (!rc) rc = tg_buf_json_str(&b, m->provider->name, strlen(m->provider->name));
        if (!rc) rc = tg_buf_appends(&b, "}");
    }
    /* Then what each exposing Bedrock provider's catalogue holds. */
    for (size_t p = 0; p < cfg->nproviders && !rc; p++) {
        if (!cfg->providers[p].catalog_expose) continue;
        tg_catalog_snap_t *s = tg_catalog_acquire(w->gw->catalogs[p]);
        const char *owner = cfg->providers[p].name;
        for (size_t i = 0; s && i < s->n && !rc; i++) {
            const char *id = s->entries[i].id;
            if (tg_config_model(cfg, id, strlen(id))) continue; /* listed as a route */
            if (!tg_api_allowed(&who, id)) continue;
            rc = tg_buf_appends(&b, listed++ ? ",{\"id\":" : "{\"id\":");
            if (!rc) rc = tg_buf_json_str(&b, id, strlen(id));
            if (!rc)
                rc = tg_buf_printf(&b, ",\"object\":\"model\",\"created\":%lld,\"owned_by\":",
                                   (long long)(s->loaded_ms / 1000));
            if (!rc) rc = tg_buf_json_str(&b, owner, strlen(owner));
            if (!rc) rc = tg_buf_appends(&b, "}");
        }
        tg_catalog_snap_release(s);
    }
    if (!rc) rc = tg_buf_appends(&b, "]}");
    if (rc)
        tg_api_error(w, req, TG_ROUTE_MODELS, 500, "internal_error", "Out of memory.", NULL);
    else
        tg_api_send(w, req, TG_ROUTE_MODELS, 200, "application/json", NULL, b.data, b.len);
    tg_buf_free(&b);
}

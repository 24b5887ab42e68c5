/* reference.c - the reference gateway's API, for its existing clients.
 *
 *   GET  [/<unit>_prod]/list_foundation_models
 *   POST [/<unit>_prod]/invoke_model?model_id=ID[&model_arn=ARN][&requestId=ID]
 *        headers x-api-key, team_id, messages_api, streaming, type
 *
 * The wire format is the reference's (../shared/reference/seed-study.md
 * sections 1-3): one-element JSON arrays in, bodies built per model family
 * by providers/refapi. A call runs one of three ways:
 *   plain      forwarded, the whole answer parsed, usage committed, answered;
 *   streaming  (header streaming: true) answered at once with
 *              [{"request_id": id}]; the call runs on in the background,
 *              streaming from the provider; polls with &requestId=id read
 *              [{"request_id", "partial_text"}] until the result
 *              [{"generated_text": ...}] is there, for result_ttl, to the same
 *              team only. Usage is committed when the provider finishes,
 *              whether or not anyone polls;
 *   SSE        (Accept: text/event-stream) the text streamed as it comes:
 *              "event: delta" / data {"text"}, then "event: result" with the
 *              final array once the usage is committed.
 * Errors are JSON with a stable code (no traces). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/internal.h"
#include "aws/eventstream.h"
#include "providers/bedrock.h"
#include "providers/oai2br.h"
#include "providers/openai.h"
#include "providers/refapi.h"
#include "providers/sagemaker.h"
#include "providers/sse.h"
#include "usage/cost.h"

#define REF_MAX_RESULTS 10000
#define REF_MAX_TEXT    (8u << 20) /* generated text kept per call */
#define REF_ROUTE       TG_ROUTE_OTHER

/* ---- results of background calls ---------------------------------------------- */

typedef struct result {
    char id[40];
    char team[64];
    int done;
    int status;
    tg_buf_t text; /* while pending: the text so far */
    char *answer;  /* once done: the whole answer */
    size_t answer_len;
    int64_t expires_ms; /* once done */
    struct result *next;
} result_t;

struct tg_ref_results {
    pthread_mutex_t mu;
    result_t *head;
    size_t n;
    int64_t ttl_ms;
};

static void result_free(result_t *r)
{
    tg_buf_free(&r->text);
    free(r->answer);
    free(r);
}

/* Drops results past their expiry (under mu). */
static void purge_locked(struct tg_ref_results *rs, int64_t now)
{
    for (result_t **pp = &rs->head; *pp;) {
        result_t *r = *pp;
        if (r->done && r->expires_ms <= now) {
            *pp = r->next;
            result_free(r);
            rs->n--;
        } else {
            pp = &r->next;
        }
    }
}

static result_t *result_add(struct tg_ref_results *rs, const char *id, const char *team)
{
    result_t *r = calloc(1, sizeof(*r));
    if (!r) return NULL;
    snprintf(r->id, sizeof(r->id), "%s", id);
    snprintf(r->team, sizeof(r->team), "%s", team);
    tg_buf_init(&r->text, REF_MAX_TEXT);
    pthread_mutex_lock(&rs->mu);
    purge_locked(rs, tg_wall_ms());
    if (rs->n >= REF_MAX_RESULTS) {
        pthread_mutex_unlock(&rs->mu);
        result_free(r);
        return NULL;
    }
    r->next = rs->head;
    rs->head = r;
    rs->n++;
    pthread_mutex_unlock(&rs->mu);
    return r;
}

static void result_append(struct tg_ref_results *rs, result_t *r, const char *p, size_t n)
{
    pthread_mutex_lock(&rs->mu);
    tg_buf_append(&r->text, p, n); /* past the bound the partial text stops growing */
    pthread_mutex_unlock(&rs->mu);
}

/* Takes answer (malloc'ed). */
static void result_finish(struct tg_ref_results *rs, result_t *r, int status, char *answer,
                          size_t len)
{
    pthread_mutex_lock(&rs->mu);
    r->done = 1;
    r->status = status;
    r->answer = answer;
    r->answer_len = len;
    r->expires_ms = tg_wall_ms() + rs->ttl_ms;
    tg_buf_free(&r->text);
    pthread_mutex_unlock(&rs->mu);
}

/* Copies what a poll answers into out: 1 pending (partial text), 0 done
 * (*status set), TG_ENOTFOUND (unknown, expired, or another team's). */
static int result_poll(struct tg_ref_results *rs, const char *id, const char *team, tg_buf_t *out,
                       int *status)
{
    int rc = TG_ENOTFOUND;
    pthread_mutex_lock(&rs->mu);
    purge_locked(rs, tg_wall_ms());
    for (result_t *r = rs->head; r; r = r->next) {
        if (strcmp(r->id, id) != 0 || strcmp(r->team, team) != 0) continue;
        if (r->done) {
            tg_buf_append(out, r->answer, r->answer_len);
            *status = r->status;
            rc = 0;
        } else {
            tg_buf_appends(out, "[{\"request_id\":");
            tg_buf_json_str(out, r->id, strlen(r->id));
            tg_buf_appends(out, ",\"partial_text\":");
            tg_buf_json_str(out, r->text.data ? r->text.data : "", r->text.len);
            tg_buf_appends(out, "}]");
            rc = 1;
        }
        break;
    }
    pthread_mutex_unlock(&rs->mu);
    return rc;
}

int tg_api_reference_init(tg_gateway_t *g)
{
    struct tg_ref_results *rs = calloc(1, sizeof(*rs));
    if (!rs) return TG_ENOMEM;
    pthread_mutex_init(&rs->mu, NULL);
    rs->ttl_ms = (int64_t)g->cfg->result_ttl_s * 1000;
    g->results = rs;
    return 0;
}

void tg_api_reference_fini(tg_gateway_t *g)
{
    struct tg_ref_results *rs = g ? g->results : NULL;
    if (!rs) return;
    while (rs->head) {
        result_t *r = rs->head;
        rs->head = r->next;
        result_free(r);
    }
    pthread_mutex_destroy(&rs->mu);
    free(rs);
    g->results = NULL;
}

/* ---- answers ---------------------------------------------------------------------- */

static void ref_error(tg_wctx_t *w, tg_req_t *req, int status, const char *code, const char *msg)
{
    tg_api_error(w, req, REF_ROUTE, status, code, msg, NULL);
}

/* Writes the house error body for an upstream or gateway failure. */
static char *error_body(int status, const char *code, const char *msg, size_t *len)
{
    tg_buf_t b;
    tg_buf_init(&b, 8192);
    if (tg_http_error_json(&b, status, code, msg)) tg_http_error_json(&b, status, code, "error");
    *len = b.len;
    return b.data; /* owned by the caller */
}

/* ---- a call -------------------------------------------------------------------------- */

enum { RM_PLAIN, RM_SSE, RM_BACKGROUND };

#define MAX_KEEP_HDRS 6

typedef struct refcall {
    tg_wctx_t *w;
    tg_req_t *req; /* NULL once answered (background) */
    int rmode;     /* RM_* */
    int sagemaker;
    const tg_model_route_t *route; /* NULL for a catalogue id */
    tg_ref_call_t rc;
    tg_ref_stream_t rs;
    int streaming; /* the upstream op streams */
    tg_upcall_t *up;
    int status; /* upstream status */
    int started, paused, aborted, recorded, stream_failed;
    char err_type[128];                                             /* x-amzn-ErrorType */
    char keep_name[MAX_KEEP_HDRS][48], keep_val[MAX_KEEP_HDRS][32]; /* token-count headers */
    tg_header_t keep[MAX_KEEP_HDRS];
    size_t nkeep;
    tg_buf_t url, body;
    tg_es_decoder_t dec;
    result_t *res; /* background */
    uint64_t start_ns;
    char *answer; /* the final answer (array, or an error body) */
    size_t answer_len;
    int answer_status;
    tg_gov_ticket_t gov;
    tg_usage_event_t ev;
    struct refcall *next, *prev; /* background calls of the worker */
    /* The OpenAI API in front of Bedrock (chat.c's door for Bedrock routes,
     * /v1/embeddings): the answer in OpenAI's shapes instead. */
    int oai;      /* OAI_* */
    int route_id; /* TG_ROUTE_* for metrics */
    tg_oai2br_stream_t os;
    char oai_id[48]; /* chatcmpl-... */
    int64_t created;
    char family[16]; /* embeddings: "titan" or "cohere" */
    int base64;      /* embeddings: encoding_format base64 */
    /* Titan embeds one text a call: the calls of a request with several
     * inputs are made one after another, each answer kept. */
    char **ebodies, **eanswers;
    size_t *elens;
    size_t encalls, ecur;
    int64_t etokens; /* Titan's counts of the answers kept */
    size_t ekept;    /* their bytes, bounded by max_response_bytes */
    /* Where the call goes, kept for the next embedding call: only a
     * configured route's strings outlive launch() (a reference call's
     * target may point at its handler's stack). */
    tg_api_aws_target_t t;
    /* A failure of the gateway's own, named in place of finish()'s default. */
    const char *why, *why_code;
    int why_status;
    /* The OpenAI API of a SageMaker container (TGI Messages, vLLM, LMI):
     * its own chat answers and chunks, passed on. */
    tg_sse_t smsse;
    tg_buf_t smout;
    int client_usage, saw_done, saw_usage;
    int64_t sm_text_bytes;
} refcall_t;

enum { OAI_NONE = 0, OAI_CHAT, OAI_EMBED, OAI_SMCHAT };

static void call_free(refcall_t *c)
{
    tg_ref_call_free(&c->rc);
    if (c->streaming) tg_ref_stream_free(&c->rs);
    tg_buf_free(&c->url);
    tg_buf_free(&c->body);
    tg_es_decoder_free(&c->dec);
    free(c->answer);
    tg_sse_free(&c->smsse);
    tg_buf_free(&c->smout);
    if (c->ebodies) tg_oai2br_embed_free(c->ebodies, c->encalls);
    for (size_t i = 0; c->eanswers && i < c->encalls; i++)
        free(c->eanswers[i]);
    free(c->eanswers);
    free(c->elens);
    free(c);
}

static void bg_unlink(refcall_t *c)
{
    if (c->rmode != RM_BACKGROUND) return;
    if (c->prev)
        c->prev->next = c->next;
    else if (c->w->bg == c)
        c->w->bg = c->next;
    if (c->next) c->next->prev = c->prev;
    c->next = c->prev = NULL;
}

static void sse_write(refcall_t *c, const char *event, const char *data, size_t n)
{
    if (!c->req || c->aborted) return;
    tg_buf_t b;
    tg_buf_init(&b, 0);
    tg_buf_printf(&b, "event: %s\ndata: ", event);
    tg_buf_append(&b, data, n);
    tg_buf_appends(&b, "\n\n");
    if (b.data && tg_resp_write(c->req, b.data, b.len) == 1 && c->up) {
        c->paused = 1;
        tg_upcall_pause(c->up);
    }
    tg_buf_free(&b);
}

static void on_committed(void *ud, int status)
{
    refcall_t *c = ud;
    (void)status;
    tg_wctx_t *w = c->w;
    tg_req_t *req = c->req;
    switch (c->rmode) {
    case RM_BACKGROUND:
        if (c->res) {
            result_finish(w->gw->results, c->res, c->answer_status, c->answer, c->answer_len);
            c->answer = NULL;
        }
        bg_unlink(c);
        break;
    case RM_SSE:
        if (req && c->started && c->oai == OAI_CHAT) {
            /* The cost as an SSE comment, the usage chunk, [DONE] (after the
             * commit, like the OpenAI door). */
            tg_buf_t tail;
            tg_buf_init(&tail, 0);
            char usd[32];
            tg_usd_format(c->ev.cost_total, usd, sizeof(usd));
            tg_buf_printf(&tail, ": x-tollgate-cost-usd=%s\n\n", usd);
            if (c->answer_status == 200) tg_oai2br_stream_finish(&c->os, &tail, c->os.finished);
            if (!c->aborted && tail.data) tg_resp_write(req, tail.data, tail.len);
            tg_buf_free(&tail);
            tg_api_log(w, req, c->route_id, 200, c->ev.request_id, c->ev.key_id);
            tg_resp_end(req);
            break;
        }
        if (req && c->started && c->oai == OAI_SMCHAT) {
            tg_api_oai_stream_end(w, req, c->route_id, 200, &c->ev, c->answer_status == 200,
                                  c->aborted);
            break;
        }
        if (req && c->started) {
            sse_write(c, c->answer_status == 200 ? "result" : "error", c->answer, c->answer_len);
            tg_api_log(w, req, REF_ROUTE, 200, c->ev.request_id, c->ev.key_id);
            tg_resp_end(req);
            break;
        }
        /* Nothing was streamed: answer plainly. */
        __attribute__((fallthrough));
    default:
        if (!req) break;
        if (c->aborted) {
            tg_api_log(w, req, REF_ROUTE, 499, c->ev.request_id, c->ev.key_id);
            tg_resp_send(req, 499, NULL, 0, "", 0);
            break;
        }
        char usd[32];
        tg_usd_format(c->ev.cost_total, usd, sizeof(usd));
        tg_header_t h[] = {
            {"Content-Type", 12, "application/json", 16},
            {"x-request-id", 12, c->ev.request_id, strlen(c->ev.request_id)},
            {"x-tollgate-cost-usd", 19, usd, strlen(usd)},
        };
        tg_api_log(w, req, c->route_id, c->answer_status, c->ev.request_id, c->ev.key_id);
        tg_resp_send(req, c->answer_status, h, 3, c->answer ? c->answer : "[]",
                     c->answer ? c->answer_len : 2);
        break;
    }
    call_free(c);
}

/* ---- the OpenAI API of a SageMaker container ------------------------------------- */

/* The container's counts, as the usage of the call. */
static void sm_usage(refcall_t *c, tg_ref_usage_t *u)
{
    if (c->saw_usage) {
        u->have = 1, u->input = c->ev.input_tokens, u->output = c->ev.output_tokens;
        u->cache_read = c->ev.cache_read_tokens;
    }
    u->output_bytes = c->sm_text_bytes; /* for the estimate when it said nothing */
}

/* What the client sees of the container's answer or chunk: the model it
 * asked for (TGI says "tgi"), and an id where the container gave none. */
static void sm_polish(refcall_t *c, cJSON *j)
{
    cJSON_DeleteItemFromObjectCaseSensitive(j, "model");
    cJSON_AddStringToObject(j, "model", c->ev.model);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(j, "id");
    if (!cJSON_IsString(id) || !id->valuestring[0]) {
        cJSON_DeleteItemFromObjectCaseSensitive(j, "id");
        cJSON_AddStringToObject(j, "id", c->oai_id);
    }
}

/* The length of choices[0] delta (or message) content, for estimates. */
static int64_t sm_text(const cJSON *j)
{
    const cJSON *ch = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(j, "choices"), 0);
    const cJSON *m = cJSON_GetObjectItemCaseSensitive(ch, "delta");
    if (!m) m = cJSON_GetObjectItemCaseSensitive(ch, "message");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(m, "content");
    return cJSON_IsString(t) ? (int64_t)strlen(t->valuestring) : 0;
}

static int sm_answer(refcall_t *c, const char *b, tg_ref_usage_t *u, char *msg, size_t cap)
{
    if (c->streaming) {
        sm_usage(c, u);
        return 0;
    }
    cJSON *j = cJSON_ParseWithLength(b, c->body.len);
    if (!cJSON_IsObject(j) || !cJSON_IsArray(cJSON_GetObjectItemCaseSensitive(j, "choices"))) {
        cJSON_Delete(j);
        snprintf(msg, cap,
                 "The container's answer is not a chat completion: is the route's "
                 "format right?");
        return TG_EUPSTREAM;
    }
    c->saw_usage = tg_openai_usage(j, &c->ev);
    c->sm_text_bytes = sm_text(j);
    sm_usage(c, u);
    sm_polish(c, j);
    c->answer = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!c->answer) return TG_ENOMEM;
    c->answer_len = strlen(c->answer);
    return 0;
}

/* One event of the container's chat stream: passed on, but for "[DONE]"
 * (tollgate sends its own once the usage is committed) and the usage-only
 * chunk asked for on behalf of a client that did not ask. An in-band error
 * ends the stream. */
static int sm_event(const tg_sse_event_t *e, void *ud)
{
    refcall_t *c = ud;
    if (!e->data_len) return 0; /* comments, keep-alives */
    if (e->data_len == 6 && memcmp(e->data, "[DONE]", 6) == 0) {
        c->saw_done = 1;
        return 0;
    }
    cJSON *j = cJSON_ParseWithLength(e->data, e->data_len);
    if (!cJSON_IsObject(j) || cJSON_GetObjectItemCaseSensitive(j, "error")) {
        /* The container's own error event reaches the client (SDKs raise
         * it), then the stream ends. */
        if (j) tg_buf_append(&c->smout, e->raw, e->raw_len);
        cJSON_Delete(j);
        return 1;
    }
    const cJSON *choices = cJSON_GetObjectItemCaseSensitive(j, "choices");
    int usage = tg_openai_usage(j, &c->ev);
    c->saw_usage |= usage;
    if (usage && cJSON_GetArraySize(choices) == 0 && !c->client_usage) {
        cJSON_Delete(j);
        return 0;
    }
    c->sm_text_bytes += sm_text(j);
    /* "usage": null on every chunk is the answer to include_usage. */
    if (!c->client_usage) cJSON_DeleteItemFromObjectCaseSensitive(j, "usage");
    sm_polish(c, j);
    char *p = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    if (!p) return TG_ENOMEM;
    int rc = tg_buf_appends(&c->smout, "data: ");
    if (!rc) rc = tg_buf_appends(&c->smout, p);
    if (!rc) rc = tg_buf_appends(&c->smout, "\n\n");
    free(p);
    return rc;
}

/* inputTextTokenCount of a Titan embeddings answer, or -1 when it is not one. */
static int64_t titan_count(const char *b, size_t n)
{
    cJSON *j = b ? cJSON_ParseWithLength(b, n) : NULL;
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "embedding");
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(j, "inputTextTokenCount");
    int64_t v =
        cJSON_IsArray(e) && cJSON_IsNumber(t) && t->valuedouble >= 0 ? (int64_t)t->valuedouble : -1;
    cJSON_Delete(j);
    return v;
}

/* usage.prompt_tokens of an OpenAI embeddings answer. */
static void prompt_tokens(const char *answer, size_t len, tg_ref_usage_t *u)
{
    cJSON *j = cJSON_ParseWithLength(answer, len);
    const cJSON *pt = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "usage"),
                                                       "prompt_tokens");
    if (cJSON_IsNumber(pt)) u->have = 1, u->input = (int64_t)pt->valuedouble;
    cJSON_Delete(j);
}

/* The OpenAI answer of a call that succeeded, and its counts. */
static int oai_answer(refcall_t *c, tg_ref_usage_t *u, char *msg, size_t cap)
{
    const char *b = c->body.data ? c->body.data : "";
    if (c->oai == OAI_SMCHAT) return sm_answer(c, b, u, msg, cap);
    if (c->oai == OAI_CHAT && c->streaming) {
        if (!c->os.have_usage) return 0; /* estimated by the caller */
        u->have = 1, u->input = c->os.in, u->output = c->os.out;
        u->cache_read = c->os.cache_read, u->cache_write = c->os.cache_write;
        return 0;
    }
    if (c->oai == OAI_CHAT) {
        int64_t in = 0, out = 0, cr = 0, cw = 0;
        int rc = tg_oai2br_chat_response(b, c->body.len, c->oai_id, c->created, c->ev.model,
                                         &c->answer, &c->answer_len, &in, &out, &cr, &cw, msg, cap);
        if (!rc)
            u->have = 1, u->input = in, u->output = out, u->cache_read = cr, u->cache_write = cw;
        return rc;
    }
    /* Embeddings: Cohere's one call, counted in its headers; Titan's calls,
     * one per input, the last answer still in body, counted in the bodies. */
    tg_br_usage_t bu;
    memset(&bu, 0, sizeof(bu));
    int64_t tokens = -1; /* -1: summed from the answers by the call below */
    if (c->encalls == 1 && tg_br_usage_from_headers(c->keep, c->nkeep, &bu) == 1) tokens = bu.input;
    if (c->encalls > 1) {
        int64_t last = titan_count(b, c->body.len);
        tokens = last < 0 ? -1 : c->etokens + last;
    }
    const char *one[1] = {b};
    size_t onelen[1] = {c->body.len};
    const char **bodies = one;
    size_t *lens = onelen;
    if (c->encalls > 1) {
        c->eanswers[c->ecur] = (char *)b; /* lent for the call below */
        c->elens[c->ecur] = c->body.len;
        bodies = (const char **)c->eanswers;
        lens = c->elens;
    }
    int rc = tg_oai2br_embed_response(c->family, bodies, lens, c->ecur + 1, c->ev.model, tokens,
                                      c->base64, &c->answer, &c->answer_len, msg, cap);
    if (c->encalls > 1) c->eanswers[c->ecur] = NULL;
    if (!rc && tokens >= 0) u->have = 1, u->input = tokens;
    if (!rc && tokens < 0) prompt_tokens(c->answer, c->answer_len, u); /* one small answer */
    return rc;
}

/* Titan calls answered before a later one failed: billed for what they
 * counted. */
static void embed_partial(refcall_t *c, tg_ref_usage_t *u)
{
    if (c->oai == OAI_EMBED && c->ecur > 0) u->have = 1, u->input = c->etokens;
}

/* What a stream that did not finish counted (the text so far). */
static void stream_usage(refcall_t *c, tg_ref_usage_t *u)
{
    char *tmp = NULL;
    size_t len = 0;
    tg_ref_stream_finish(&c->rs, u, &tmp, &len);
    free(tmp);
}

/* The call is over: its answer built, its usage recorded. */
static int next_embedding(refcall_t *c);

static void finish(refcall_t *c, int err)
{
    if (c->recorded) return;
    if (!err && c->status >= 200 && c->status < 300 && next_embedding(c)) return;
    c->recorded = 1;
    c->up = NULL;
    tg_ref_usage_t u;
    memset(&u, 0, sizeof(u));
    if (c->oai == OAI_SMCHAT && c->streaming && c->status >= 200 && c->status < 300 &&
        (tg_sse_pending(&c->smsse) || !c->saw_done))
        c->stream_failed = 1; /* it ended inside an event, or before its end */
    const char *outcome = TG_OUTCOME_OK;
    char msg[512] = "", code[64] = "";
    int ok = !err && c->status >= 200 && c->status < 300 && !c->stream_failed;
    if (ok && c->oai) {
        int rc = oai_answer(c, &u, msg, sizeof(msg));
        c->answer_status = rc ? 502 : 200;
        if (rc) {
            ok = 0;
            snprintf(code, sizeof(code), "upstream_error");
            outcome = TG_OUTCOME_UPSTREAM_ERROR;
        }
    } else if (ok) {
        int rc = c->streaming
                     ? tg_ref_stream_finish(&c->rs, &u, &c->answer, &c->answer_len)
                     : tg_ref_parse(&c->rc, c->body.data ? c->body.data : "", c->body.len, c->keep,
                                    c->nkeep, &u, &c->answer, &c->answer_len, msg, sizeof(msg));
        if (rc) {
            ok = 0;
            c->answer_status = 502;
            snprintf(code, sizeof(code), "upstream_error");
            if (!msg[0]) snprintf(msg, sizeof(msg), "The model's answer could not be read.");
            outcome = TG_OUTCOME_UPSTREAM_ERROR;
        } else {
            c->answer_status = 200;
        }
    } else if (err || c->stream_failed) {
        c->answer_status = err == TG_ETIMEDOUT ? 504 : 502;
        snprintf(code, sizeof(code), "%s",
                 err == TG_ETIMEDOUT  ? "upstream_timeout"
                 : err == TG_ECONNECT ? "upstream_unreachable"
                                      : "upstream_error");
        snprintf(msg, sizeof(msg), "%s",
                 err == TG_ETIMEDOUT  ? "The model did not answer in time."
                 : err == TG_ECONNECT ? "The model's endpoint could not be reached."
                                      : "The model's answer broke off.");
        if (c->why) {
            c->answer_status = c->why_status;
            snprintf(code, sizeof(code), "%s", c->why_code);
            snprintf(msg, sizeof(msg), "%s", c->why);
        }
        outcome = c->streaming && c->started ? TG_OUTCOME_INTERRUPTED : TG_OUTCOME_FAILED;
        if (c->aborted) c->answer_status = 499, outcome = TG_OUTCOME_ABANDONED;
        if (c->streaming && !c->oai) stream_usage(c, &u);
        embed_partial(c, &u);
        if (c->oai == OAI_SMCHAT) sm_usage(c, &u);
        if (c->oai == OAI_CHAT && c->os.have_usage) {
            u.have = 1, u.input = c->os.in, u.output = c->os.out;
            u.cache_read = c->os.cache_read, u.cache_write = c->os.cache_write;
        }
    } else {
        /* The provider refused: its status mapped, its message (sanitised). */
        char ucode[64];
        c->answer_status = c->sagemaker ? tg_sm_error_status(c->err_type, strlen(c->err_type),
                                                             c->status, ucode, sizeof(ucode))
                                        : tg_br_error_status(c->err_type, strlen(c->err_type),
                                                             c->status, ucode, sizeof(ucode));
        tg_aws_error_message(c->body.data ? c->body.data : "", c->body.len, msg, sizeof(msg));
        if (!msg[0]) snprintf(msg, sizeof(msg), "The model refused the request.");
        snprintf(code, sizeof(code), "%s", ucode[0] ? ucode : "upstream_error");
        outcome = TG_OUTCOME_UPSTREAM_ERROR;
        embed_partial(c, &u);
    }
    if (!ok) {
        free(c->answer);
        c->answer = error_body(c->answer_status, code, msg, &c->answer_len);
    }
    tg_usage_event_t *ev = &c->ev;
    if (u.have) {
        ev->input_tokens = u.input;
        ev->output_tokens = u.output;
        ev->cache_read_tokens = u.cache_read;
        ev->cache_write_tokens = u.cache_write;
    } else if (c->status >= 200 && c->status < 300) {
        ev->input_tokens = tg_estimate_tokens(c->rc.input_bytes);
        ev->output_tokens = tg_estimate_tokens(u.output_bytes);
        ev->token_source = TG_TOKENS_ESTIMATED;
    }
    if (c->rc.images) {
        ev->images = ok ? (u.images ? u.images : c->rc.images) : 0;
        ev->image_width = c->rc.width;
        ev->image_height = c->rc.height;
        ev->image_steps = c->rc.steps;
        snprintf(ev->image_quality, sizeof(ev->image_quality), "%s", c->rc.quality);
    }
    /* A stream's client got its 200 whatever came after. */
    tg_api_submit_event_at(c->w, c->start_ns, ev, outcome, c->started ? 200 : c->answer_status,
                           c->route, !c->sagemaker, &c->gov, on_committed, c);
}

/* ---- upstream callbacks ------------------------------------------------------------- */

static int on_frame(const tg_es_message_t *m, void *ud)
{
    refcall_t *c = ud;
    const char *payload = m->payload;
    size_t plen = m->payload_len;
    const char *etype = NULL;
    size_t elen = 0;
    char et[64] = "";
    if (c->sagemaker) {
        int st = 0;
        char code[64], msg[256];
        int rc =
            tg_sm_stream_message(m, &payload, &plen, &st, code, sizeof(code), msg, sizeof(msg));
        if (rc) return 1; /* an exception or a malformed frame: the stream failed */
        if (!plen) return 0;
        if (c->oai == OAI_SMCHAT) {
            tg_buf_reset(&c->smout);
            int fed = tg_sse_feed(&c->smsse, payload, plen, sm_event, c);
            if (c->smout.len && c->req && !c->aborted &&
                tg_resp_write(c->req, c->smout.data, c->smout.len) == 1 && c->up) {
                c->paused = 1;
                tg_upcall_pause(c->up);
            }
            return fed ? 1 : 0;
        }
    } else {
        tg_br_event_t bev;
        tg_br_usage_t bu;
        memset(&bu, 0, sizeof(bu));
        if (tg_br_stream_event((tg_br_op_t)c->rc.op, m, &bev, &bu) ||
            bev.kind == TG_BR_EV_EXCEPTION)
            return 1;
        etype = tg_es_header_str(m, ":event-type", &elen);
        snprintf(et, sizeof(et), "%.*s", (int)(elen < 63 ? elen : 63), etype ? etype : "");
    }
    if (c->oai == OAI_CHAT) {
        tg_buf_t out;
        tg_buf_init(&out, 0);
        int rc = tg_oai2br_stream_feed(&c->os, et, payload, plen, &out);
        if (!rc && out.len && c->req && !c->aborted &&
            tg_resp_write(c->req, out.data, out.len) == 1 && c->up) {
            c->paused = 1;
            tg_upcall_pause(c->up);
        }
        tg_buf_free(&out);
        return rc ? 1 : 0;
    }
    const char *delta = NULL;
    size_t dlen = 0;
    if (tg_ref_stream_feed(&c->rs, et[0] ? et : NULL, payload, plen, &delta, &dlen)) return 1;
    if (dlen) {
        if (c->rmode == RM_BACKGROUND && c->res)
            result_append(c->w->gw->results, c->res, delta, dlen);
        if (c->rmode == RM_SSE) {
            tg_buf_t j;
            tg_buf_init(&j, 0);
            tg_buf_appends(&j, "{\"text\":");
            tg_buf_json_str(&j, delta, dlen);
            tg_buf_appends(&j, "}");
            if (j.data) sse_write(c, "delta", j.data, j.len);
            tg_buf_free(&j);
        }
    }
    return 0;
}

static void up_headers(tg_upcall_t *u, int status, const tg_header_t *h, size_t n, void *ud)
{
    refcall_t *c = ud;
    c->status = status;
    c->ev.ttfb_us = (int64_t)((tg_now_ns() - c->start_ns) / 1000);
    for (size_t i = 0; i < n; i++) {
        if (tg_strcaseeq(h[i].name, h[i].name_len, "x-amzn-errortype", 16)) {
            snprintf(c->err_type, sizeof(c->err_type), "%s", h[i].value);
        } else if (h[i].name_len > 15 && tg_strcaseeq(h[i].name, 15, "x-amzn-bedrock-", 15) &&
                   c->nkeep < MAX_KEEP_HDRS) {
            size_t k = c->nkeep++;
            snprintf(c->keep_name[k], sizeof(c->keep_name[k]), "%s", h[i].name);
            snprintf(c->keep_val[k], sizeof(c->keep_val[k]), "%s", h[i].value);
            c->keep[k] = (tg_header_t){c->keep_name[k], strlen(c->keep_name[k]), c->keep_val[k],
                                       strlen(c->keep_val[k])};
        }
    }
    if (status >= 200 && status < 300 && c->streaming && c->rmode == RM_SSE && c->req &&
        !c->aborted) {
        tg_header_t rh[] = {
            {"Content-Type", 12, "text/event-stream", 17},
            {"Cache-Control", 13, "no-cache", 8},
            {"x-request-id", 12, c->ev.request_id, strlen(c->ev.request_id)},
        };
        tg_resp_start(c->req, 200, rh, 3);
        c->started = 1;
    }
}

static int up_data(tg_upcall_t *u, const char *p, size_t n, void *ud)
{
    refcall_t *c = ud;
    if (!c->streaming || c->status < 200 || c->status >= 300) {
        if (tg_buf_append(&c->body, p, n) == 0) return 0;
        tg_upcall_cancel(u); /* over max_response_bytes */
        finish(c, TG_EUPSTREAM);
        return 0;
    }
    if (tg_es_decoder_feed(&c->dec, p, n)) {
        c->stream_failed = 1;
        tg_upcall_cancel(u);
        finish(c, 0);
        return 0;
    }
    return c->paused ? 1 : 0;
}

static void up_done(tg_upcall_t *u, int err, void *ud)
{
    finish(ud, err);
}

static const tg_upcall_cbs_t up_cbs = {up_headers, up_data, up_done};

static void on_drain(tg_req_t *req)
{
    refcall_t *c = req->data;
    if (c->paused && c->up) {
        c->paused = 0;
        tg_upcall_resume(c->up);
    }
}

static void on_abort(tg_req_t *req)
{
    refcall_t *c = req->data;
    c->aborted = 1;
    if (c->recorded || !c->up) return;
    tg_upcall_cancel(c->up);
    c->up = NULL;
    finish(c, TG_ECANCELED);
}

void tg_api_reference_shutdown(tg_wctx_t *w)
{
    while (w->bg) {
        refcall_t *c = w->bg;
        w->bg = c->next;
        c->next = c->prev = NULL;
        c->rmode = RM_PLAIN; /* nobody to answer: recorded without a completion */
        if (c->up) tg_upcall_cancel(c->up);
        c->up = NULL;
        if (!c->recorded) {
            c->recorded = 1;
            tg_ref_usage_t u;
            memset(&u, 0, sizeof(u));
            if (c->streaming) stream_usage(c, &u);
            c->ev.input_tokens = tg_estimate_tokens(c->rc.input_bytes);
            c->ev.output_tokens = tg_estimate_tokens(u.output_bytes);
            c->ev.token_source = TG_TOKENS_ESTIMATED;
            tg_api_submit_event_at(w, c->start_ns, &c->ev, TG_OUTCOME_INTERRUPTED, 503, c->route,
                                   !c->sagemaker, &c->gov, NULL, NULL);
        }
        if (c->res) {
            size_t len;
            char *body = error_body(503, "shutting_down",
                                    "The gateway stopped before the model "
                                    "finished.",
                                    &len);
            result_finish(w->gw->results, c->res, 503, body, len);
        }
        call_free(c);
    }
}

/* Signs c's call to c->t (strings in arena): the URL into c->url, the
 * header lines into lines (TG_API_AWS_MAX_LINES). */
static int sign(refcall_t *c, tg_arena_t *arena, const char **lines, size_t *nl)
{
    const tg_api_aws_target_t *t = &c->t;
    const char *xn[1], *xv[1];
    size_t nx = 0;
    if (c->rc.inference_component[0]) {
        xn[nx] = "X-Amzn-SageMaker-Inference-Component";
        xv[nx++] = c->rc.inference_component;
    } else if (c->sagemaker && t->route && t->route->inference_component) {
        xn[nx] = "X-Amzn-SageMaker-Inference-Component";
        xv[nx++] = t->route->inference_component;
    }
    tg_api_aws_req_t ar = {
        .door_sagemaker = c->sagemaker,
        .op = c->rc.op,
        .upstream = t->upstream,
        .body = c->rc.body,
        .body_len = c->rc.body_len,
        .content_type = "application/json",
        .accept = c->streaming ? "application/vnd.amazon.eventstream" : "application/json",
        .names = xn,
        .values = xv,
        .n = nx,
    };
    tg_buf_reset(&c->url);
    return tg_api_aws_prepare(c->w, arena, t, &ar, &c->url, lines, nl);
}

static int start(refcall_t *c, const char **lines, size_t nl)
{
    tg_upcall_opts_t o = {
        .method = "POST",
        .url = c->url.data,
        .headers = lines,
        .nheaders = nl,
        .body = c->rc.body,
        .body_len = c->rc.body_len,
        .connect_timeout_ms = c->t.connect_ms,
        .first_byte_timeout_ms = c->t.first_byte_ms,
        .total_timeout_ms = c->t.total_ms,
    };
    return tg_upcall_start(c->w->up, &o, &up_cbs, c, &c->up);
}

/* Titan's next input, once the answer to the one before is in: 1 when
 * that call is under way (or has failed and finished c), 0 when there is
 * no next one. */
static int next_embedding(refcall_t *c)
{
    if (c->oai != OAI_EMBED || c->ecur + 1 >= c->encalls || !c->req) return 0;
    int64_t counted = titan_count(c->body.data, c->body.len);
    if (counted < 0) return 0; /* unreadable: the answer fails on it, nothing more is sent */
    if (c->ekept + c->body.len > c->w->gw->cfg->max_response_bytes) {
        c->why = "The answers to this many inputs are too large: send fewer per request.";
        c->why_code = "upstream_response_too_large", c->why_status = 502;
        finish(c, TG_ETOOBIG);
        return 1;
    }
    c->etokens += counted;
    c->ekept += c->body.len;
    c->elens[c->ecur] = c->body.len;
    c->eanswers[c->ecur++] = c->body.data ? c->body.data : strdup("");
    tg_buf_init(&c->body, c->w->gw->cfg->max_response_bytes);
    free(c->rc.body);
    c->rc.body = c->ebodies[c->ecur];
    c->rc.body_len = strlen(c->rc.body);
    c->ebodies[c->ecur] = NULL;
    c->status = 0;
    c->err_type[0] = '\0';
    c->nkeep = 0;
    const char *lines[TG_API_AWS_MAX_LINES];
    size_t nl = 0;
    int rc = sign(c, c->req->arena, lines, &nl);
    if (rc) {
        c->why_status = rc == TG_EAUTH ? 503 : 500;
        c->why_code = rc == TG_EAUTH ? "credentials_unavailable" : "internal_error";
        c->why = rc == TG_EAUTH ? "The gateway has no AWS credentials for this provider right now."
                                : "The request could not be signed.";
    } else {
        rc = start(c, lines, nl);
    }
    if (rc) {
        c->up = NULL;
        finish(c, rc == TG_ETIMEDOUT ? rc : c->why ? TG_EUPSTREAM : TG_ECONNECT);
    }
    return 1;
}

/* Governance, signing, the ledger slot, the usage event and the upstream
 * call: the part every call of this engine shares. c->rc.op/body, streaming
 * and rmode are set. On any refusal c is freed and the client answered. */
static void launch(refcall_t *c, tg_req_t *req, const tg_caller_t *who,
                   const tg_api_aws_target_t *t, const char *model_id, int64_t max_output,
                   int background, const char *api)
{
    tg_wctx_t *w = c->w;
    int sagemaker = c->sagemaker;
    tg_api_call_t ci = {.model = model_id,
                        .model_len = strlen(model_id),
                        .route = t->route,
                        .upstream_model = t->upstream,
                        .region = t->region,
                        .bedrock = !sagemaker,
                        .max_output = max_output};
    tg_api_refusal_t refusal;
    if (tg_api_govern(w, req, who, &ci, &c->gov, &refusal)) {
        int route = c->route_id;
        call_free(c);
        return tg_api_refuse(w, req, route, &refusal);
    }
    const char *lines[TG_API_AWS_MAX_LINES];
    size_t nl = 0;
    c->t = *t;
    int rc = sign(c, req->arena, lines, &nl);
    if (rc) {
        tg_api_gov_release(&c->gov);
        call_free(c);
        if (rc == TG_EAUTH)
            return ref_error(w, req, 503, "credentials_unavailable",
                             "The gateway has no AWS credentials for this provider right now.");
        return ref_error(w, req, 500, "internal_error", "The request could not be signed.");
    }
    if (tg_writer_reserve(w->gw->writer) != 0) {
        tg_api_gov_release(&c->gov);
        call_free(c);
        return ref_error(w, req, 503, "overloaded",
                         "The usage ledger is saturated; retry shortly.");
    }
    tg_usage_event_t *ev = &c->ev;
    tg_api_new_id(w, ev->id, sizeof(ev->id), "evt_");
    tg_api_new_id(w, ev->request_id, sizeof(ev->request_id), "req_");
    ev->started_ms = tg_wall_ms() - (int64_t)((tg_now_ns() - req->start_ns) / 1000000);
    snprintf(ev->unit, sizeof(ev->unit), "%s", who->unit);
    snprintf(ev->team, sizeof(ev->team), "%s", who->team);
    snprintf(ev->key_id, sizeof(ev->key_id), "%s", who->id);
    snprintf(ev->model, sizeof(ev->model), "%.*s", (int)sizeof(ev->model) - 1, model_id);
    snprintf(ev->upstream_model, sizeof(ev->upstream_model), "%.*s",
             (int)sizeof(ev->upstream_model) - 1, t->upstream);
    snprintf(ev->provider, sizeof(ev->provider), "%s", t->p->name);
    snprintf(ev->region, sizeof(ev->region), "%s", t->region);
    snprintf(ev->api, sizeof(ev->api), "%s", api);
    snprintf(ev->price_version, sizeof(ev->price_version), "none");
    ev->streamed = c->streaming;
    if (background && !(c->res = result_add(w->gw->results, ev->request_id, who->team))) {
        tg_writer_unreserve(w->gw->writer);
        tg_api_gov_release(&c->gov);
        call_free(c);
        return ref_error(w, req, 503, "overloaded", "Too many streaming requests are pending.");
    }
    if (!background) {
        req->data = c;
        req->on_abort = on_abort;
        req->on_drain = on_drain;
    } else {
        c->next = w->bg;
        if (w->bg) w->bg->prev = c;
        w->bg = c;
    }
    rc = start(c, lines, nl);
    if (background) {
        /* Answered now; the call goes on without its client. */
        char out[128];
        int n = snprintf(out, sizeof(out), "[{\"request_id\":\"%s\"}]", ev->request_id);
        tg_api_send(w, req, REF_ROUTE, 200, "application/json", ev->request_id, out, (size_t)n);
        c->req = NULL;
    }
    if (rc) {
        c->up = NULL;
        finish(c, rc == TG_ETIMEDOUT ? rc : TG_ECONNECT);
    }
}

/* A call of this engine, before its body is built. */
static refcall_t *call_new(tg_wctx_t *w, tg_req_t *req, const tg_api_aws_target_t *t, int rmode,
                           int route_id)
{
    refcall_t *c = calloc(1, sizeof(*c));
    if (!c) return NULL;
    c->w = w;
    c->req = req;
    c->sagemaker = t->p->kind == TG_PROVIDER_SAGEMAKER;
    c->route = t->route;
    c->rmode = rmode;
    c->route_id = route_id;
    c->start_ns = req->start_ns;
    tg_buf_init(&c->url, 8192);
    tg_buf_init(&c->body, w->gw->cfg->max_response_bytes);
    return c;
}

/* ---- the OpenAI API in front of Bedrock ----------------------------------------------- */

void tg_api_chat_bedrock(tg_wctx_t *w, tg_req_t *req, const tg_caller_t *who,
                         const tg_model_route_t *route, const cJSON *root)
{
    tg_api_aws_target_t t;
    memset(&t, 0, sizeof(t));
    tg_api_aws_target_route(&t, w->gw->cfg, route);
    int stream = 0, include_usage = 0;
    int64_t max_output = 0;
    char err[512];
    char *body = NULL;
    size_t len = 0;
    int rc = tg_oai2br_chat_request(root, &body, &len, &stream, &include_usage, &max_output, err,
                                    sizeof(err));
    if (rc)
        return tg_api_error(w, req, TG_ROUTE_CHAT, rc == TG_ENOMEM ? 503 : 400,
                            rc == TG_ENOMEM ? "overloaded" : "invalid_request",
                            rc == TG_ENOMEM ? "Out of memory." : err, NULL);
    refcall_t *c = call_new(w, req, &t, stream ? RM_SSE : RM_PLAIN, TG_ROUTE_CHAT);
    if (!c) {
        free(body);
        return tg_api_error(w, req, TG_ROUTE_CHAT, 503, "overloaded", "Out of memory.", NULL);
    }
    c->oai = OAI_CHAT;
    c->rc.body = body;
    c->rc.body_len = len;
    c->rc.op = stream ? TG_BR_CONVERSE_STREAM : TG_BR_CONVERSE;
    c->rc.input_bytes = (int64_t)req->body_len;
    c->streaming = stream;
    c->created = tg_wall_ms() / 1000;
    tg_api_new_id(w, c->oai_id, sizeof(c->oai_id), "chatcmpl-");
    if (stream) {
        tg_oai2br_stream_init(&c->os, c->oai_id, c->created, route->id, include_usage);
        tg_es_decoder_init(&c->dec, TG_ES_DEFAULT_MAX_MESSAGE, on_frame, c);
    }
    launch(c, req, who, &t, route->id, max_output, 0,
           stream ? "openai.chat-stream" : "openai.chat");
}

/* ---- the OpenAI API in front of SageMaker ------------------------------------------ */

void tg_api_chat_sagemaker(tg_wctx_t *w, tg_req_t *req, const tg_caller_t *who,
                           const tg_model_route_t *route, cJSON *root)
{
    tg_api_aws_target_t t;
    memset(&t, 0, sizeof(t));
    tg_api_aws_target_route(&t, w->gw->cfg, route);
    int stream = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "stream"));
    int client_usage = 0;
    /* The model the container serves, when the route names it; else none
     * (TGI ignores it, vLLM and LMI default to the model they serve). */
    cJSON_DeleteItemFromObjectCaseSensitive(root, "model");
    if ((route->served_model && !cJSON_AddStringToObject(root, "model", route->served_model)) ||
        (stream && tg_api_ask_usage(root, &client_usage) < 0))
        return tg_api_error(w, req, TG_ROUTE_CHAT, 503, "overloaded", "Out of memory.", NULL);
    char *body = cJSON_PrintUnformatted(root);
    refcall_t *c = body ? call_new(w, req, &t, stream ? RM_SSE : RM_PLAIN, TG_ROUTE_CHAT) : NULL;
    if (!c) {
        free(body);
        return tg_api_error(w, req, TG_ROUTE_CHAT, 503, "overloaded", "Out of memory.", NULL);
    }
    c->oai = OAI_SMCHAT;
    c->rc.body = body;
    c->rc.body_len = strlen(body);
    c->rc.op = stream ? TG_SM_INVOKE_STREAM : TG_SM_INVOKE;
    c->rc.input_bytes = (int64_t)req->body_len;
    c->streaming = stream;
    c->client_usage = client_usage;
    tg_api_new_id(w, c->oai_id, sizeof(c->oai_id), "chatcmpl-");
    if (stream) {
        tg_sse_init(&c->smsse, 1 << 20);
        tg_buf_init(&c->smout, 0);
        tg_es_decoder_init(&c->dec, TG_ES_DEFAULT_MAX_MESSAGE, on_frame, c);
    }
    launch(c, req, who, &t, route->id, tg_api_max_output(root), 0,
           stream ? "openai.chat-stream" : "openai.chat");
}

void tg_api_embeddings(tg_wctx_t *w, tg_req_t *req)
{
    tg_caller_t who;
    if (tg_api_auth(w, req, TG_ROUTE_OTHER, &who)) return;
    cJSON *root = cJSON_ParseWithLength(req->body, req->body_len);
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const tg_model_route_t *route =
        cJSON_IsString(model)
            ? tg_config_model(w->gw->cfg, model->valuestring, strlen(model->valuestring))
            : NULL;
    const char *bad = !cJSON_IsObject(root)    ? "The request body is not a JSON object."
                      : !cJSON_IsString(model) ? "'model' is required and must be a string."
                                               : NULL;
    if (bad) {
        cJSON_Delete(root);
        return tg_api_error(w, req, TG_ROUTE_OTHER, 400, "invalid_request", bad, NULL);
    }
    if (!route || route->provider->kind != TG_PROVIDER_BEDROCK) {
        cJSON_Delete(root);
        return tg_api_error(w, req, TG_ROUTE_OTHER, 404, "model_not_found",
                            "No Bedrock embedding model by that id.", NULL);
    }
    tg_br_model_t bm;
    const char *up = route->upstream_model;
    const char *family =
        tg_br_model_parse(up, strlen(up), &bm) == 0 && strcmp(bm.family, "cohere") == 0 ? "cohere"
                                                                                        : "titan";
    char **bodies = NULL;
    size_t n = 0;
    char err[512];
    int rc = tg_oai2br_embed_request(root, family, &bodies, &n, err, sizeof(err));
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(root, "encoding_format");
    int base64 = cJSON_IsString(fmt) && strcmp(fmt->valuestring, "base64") == 0;
    cJSON_Delete(root);
    if (rc)
        return tg_api_error(w, req, TG_ROUTE_OTHER, rc == TG_ENOMEM ? 503 : 400,
                            rc == TG_ENOMEM ? "overloaded" : "invalid_request",
                            rc == TG_ENOMEM ? "Out of memory." : err, NULL);
    tg_api_aws_target_t t;
    memset(&t, 0, sizeof(t));
    tg_api_aws_target_route(&t, w->gw->cfg, route);
    refcall_t *c = call_new(w, req, &t, RM_PLAIN, TG_ROUTE_OTHER);
    if (!c) {
        tg_oai2br_embed_free(bodies, n);
        return tg_api_error(w, req, TG_ROUTE_OTHER, 503, "overloaded", "Out of memory.", NULL);
    }
    c->oai = OAI_EMBED;
    c->rc.body = bodies[0];
    c->rc.body_len = strlen(bodies[0]);
    bodies[0] = NULL;
    c->ebodies = bodies;
    c->encalls = n;
    if (n > 1 &&
        (!(c->eanswers = calloc(n, sizeof(char *))) || !(c->elens = calloc(n, sizeof(size_t))))) {
        call_free(c);
        return tg_api_error(w, req, TG_ROUTE_OTHER, 503, "overloaded", "Out of memory.", NULL);
    }
    c->rc.op = TG_BR_INVOKE;
    c->rc.input_bytes = (int64_t)req->body_len;
    c->base64 = base64;
    snprintf(c->family, sizeof(c->family), "%s", family);
    launch(c, req, &who, &t, route->id, 0, 0, "openai.embeddings");
}

/* ---- the door ------------------------------------------------------------------------ */

/* A header compared case-insensitively to a value, as the reference did. */
static int header_is(tg_req_t *req, const char *name, const char *value)
{
    const char *v = tg_req_header(req, name);
    return v && strcasecmp(v, value) == 0;
}

static int query(tg_wctx_t *w, tg_req_t *req, const char *name, char *out, size_t cap)
{
    int rc = tg_query_get(req->query, name, out, cap);
    if (rc >= 0) return 1;
    out[0] = '\0';
    if (rc == TG_ENOTFOUND) return 0;
    char msg[128];
    snprintf(msg, sizeof(msg), "Query parameter '%s' is %s.", name,
             rc == TG_ETOOBIG ? "too long" : "not validly encoded");
    ref_error(w, req, 400, "invalid_parameter", msg);
    return -1;
}

static void poll(tg_wctx_t *w, tg_req_t *req, const tg_caller_t *who, const char *id)
{
    tg_buf_t b;
    tg_buf_init(&b, REF_MAX_TEXT + 4096);
    int status = 200;
    int rc = result_poll(w->gw->results, id, who->team, &b, &status);
    if (rc == TG_ENOTFOUND) {
        tg_buf_free(&b);
        return ref_error(w, req, 404, "request_not_found",
                         "No such request for this team, or its result has expired.");
    }
    tg_api_send(w, req, REF_ROUTE, rc == 1 ? 200 : status, "application/json", NULL,
                b.data ? b.data : "[]", b.data ? b.len : 2);
    tg_buf_free(&b);
}

static void invoke(tg_wctx_t *w, tg_req_t *req, const char *unit, size_t unit_len)
{
    tg_caller_t who;
    if (tg_api_auth(w, req, REF_ROUTE, &who)) return;
    if (unit_len && (strlen(who.unit) != unit_len || memcmp(who.unit, unit, unit_len) != 0))
        return ref_error(w, req, 403, "unit_mismatch",
                         "This key does not belong to the unit of this base path.");
    const char *team = tg_req_header(req, "team_id");
    if (!team || !*team)
        return ref_error(w, req, 400, "missing_team_id", "The team_id header is required.");
    if (strcmp(team, who.team) != 0)
        return ref_error(w, req, 403, "team_mismatch",
                         "This key belongs to another team: it can only bill its own.");
    char model_id[2048], model_arn[2048], request_id[64];
    int has;
    if ((has = query(w, req, "requestId", request_id, sizeof(request_id))) < 0) return;
    if (has) return poll(w, req, &who, request_id);
    if ((has = query(w, req, "model_id", model_id, sizeof(model_id))) < 0) return;
    if (!has || !model_id[0])
        return ref_error(w, req, 400, "missing_model_id",
                         "The model_id query parameter is required.");
    if ((has = query(w, req, "model_arn", model_arn, sizeof(model_arn))) < 0) return;
    /* What the usage event can hold, named rather than cut. */
    if (strlen(model_id) >= sizeof(((tg_usage_event_t *)0)->model) ||
        strlen(model_arn) >= sizeof(((tg_usage_event_t *)0)->upstream_model))
        return ref_error(w, req, 400, "invalid_parameter", "model_id or model_arn is too long.");
    cJSON *body = cJSON_ParseWithLength(req->body, req->body_len);
    if (!cJSON_IsObject(body)) {
        cJSON_Delete(body);
        return ref_error(w, req, 400, "invalid_json", "The request body is not a JSON object.");
    }
    /* Where it goes: a configured route, or a catalogue id. */
    const tg_config_t *cfg = w->gw->cfg;
    tg_api_aws_target_t t;
    memset(&t, 0, sizeof(t));
    const tg_model_route_t *r = tg_config_model(cfg, model_id, strlen(model_id));
    int found = 0;
    if (r && r->provider->kind != TG_PROVIDER_OPENAI) {
        tg_api_aws_target_route(&t, cfg, r);
        found = 1;
    } else if (!r) {
        found = tg_api_aws_target_exposed(w, model_id, strlen(model_id), &t) == 0;
    }
    if (!found) {
        cJSON_Delete(body);
        return ref_error(w, req, 404, "model_not_found",
                         "The model does not exist or you do not have access to it.");
    }
    int sagemaker = t.p->kind == TG_PROVIDER_SAGEMAKER;
    if (has && model_arn[0]) {
        if (sagemaker) {
            cJSON_Delete(body);
            return ref_error(w, req, 400, "invalid_parameter",
                             "model_arn is for Bedrock models, not SageMaker endpoints.");
        }
        t.upstream = model_arn; /* a custom or provisioned model: on every path */
    }
    const char *type = tg_req_header(req, "type");
    tg_ref_mode_t mode = TG_REF_TEXT;
    if (type && strcasecmp(type, "embeddings") == 0)
        mode = TG_REF_EMBEDDINGS;
    else if (type && strcasecmp(type, "embeddings-image") == 0)
        mode = TG_REF_EMBEDDINGS_IMAGE;
    else if (type && strcasecmp(type, "image") == 0)
        mode = TG_REF_IMAGE;
    else if (header_is(req, "messages_api", "true"))
        mode = TG_REF_MESSAGES;
    const char *accept = tg_req_header(req, "accept");
    int sse = accept && strstr(accept, "text/event-stream") != NULL;
    int background = !sse && header_is(req, "streaming", "true");
    int text = mode == TG_REF_TEXT || mode == TG_REF_MESSAGES;
    if ((sse || background) && !text) {
        cJSON_Delete(body);
        return ref_error(w, req, 400, "invalid_request",
                         "Streaming is for text and messages, not embeddings or images.");
    }
    refcall_t *c = call_new(w, req, &t,
                            sse          ? RM_SSE
                            : background ? RM_BACKGROUND
                                         : RM_PLAIN,
                            REF_ROUTE);
    if (!c) {
        cJSON_Delete(body);
        return ref_error(w, req, 503, "overloaded", "Out of memory.");
    }
    /* The family is the model's: a route's upstream id, else the id asked. */
    tg_ref_target_t rt = {mode, sse || background, sagemaker,
                          t.route && !sagemaker ? t.route->upstream_model : model_id};
    char err[512];
    int rc = tg_ref_build(&rt, body, &c->rc, err, sizeof(err));
    cJSON_Delete(body);
    if (rc) {
        call_free(c);
        return ref_error(w, req, rc == TG_ENOMEM ? 503 : 400,
                         rc == TG_ENOMEM ? "overloaded" : "invalid_request",
                         rc == TG_ENOMEM ? "Out of memory." : err);
    }
    c->streaming = rt.stream;
    if (c->streaming) {
        tg_ref_stream_init(&c->rs, &c->rc, REF_MAX_TEXT);
        tg_es_decoder_init(&c->dec, TG_ES_DEFAULT_MAX_MESSAGE, on_frame, c);
    }
    launch(c, req, &who, &t, model_id, c->rc.max_output, background,
           c->streaming ? "reference.invoke-stream" : "reference.invoke");
}

/* GET list_foundation_models: what the key may call, in ListFoundationModels'
 * shape. */
static void list_models(tg_wctx_t *w, tg_req_t *req)
{
    tg_caller_t who;
    if (tg_api_auth(w, req, REF_ROUTE, &who)) return;
    const tg_config_t *cfg = w->gw->cfg;
    tg_buf_t b;
    tg_buf_init(&b, 16 << 20);
    tg_buf_appends(&b, "[{\"modelSummaries\":[");
    size_t listed = 0;
    for (size_t i = 0; i < cfg->nmodels; i++) {
        const tg_model_route_t *m = &cfg->models[i];
        if (m->provider->kind == TG_PROVIDER_OPENAI || !tg_api_allowed(&who, m->id)) continue;
        int sm = m->provider->kind == TG_PROVIDER_SAGEMAKER;
        tg_br_model_t bm;
        const char *family =
            !sm && tg_br_model_parse(m->upstream_model, strlen(m->upstream_model), &bm) == 0
                ? bm.family
                : "";
        tg_buf_appends(&b, listed++ ? ",{\"modelId\":" : "{\"modelId\":");
        tg_buf_json_str(&b, m->id, strlen(m->id));
        tg_buf_appends(&b, ",\"modelName\":");
        tg_buf_json_str(&b, m->id, strlen(m->id));
        tg_buf_appends(&b, ",\"providerName\":");
        const char *pn = sm ? "SageMaker" : family[0] ? family : m->provider->name;
        tg_buf_json_str(&b, pn, strlen(pn));
        if (!sm && strncmp(m->upstream_model, "arn:", 4) != 0) {
            tg_buf_printf(&b, ",\"modelArn\":\"arn:aws:bedrock:%s::foundation-model/", m->region);
            tg_buf_appends(&b, m->upstream_model);
            tg_buf_appends(&b, "\"");
        }
        tg_buf_appends(&b, ",\"inputModalities\":[\"TEXT\"],\"outputModalities\":[\"TEXT\"],"
                           "\"responseStreamingSupported\":true,\"customizationsSupported\":[],"
                           "\"inferenceTypesSupported\":[\"ON_DEMAND\"],"
                           "\"modelLifecycle\":{\"status\":\"ACTIVE\"}}");
    }
    for (size_t p = 0; p < cfg->nproviders; p++) {
        if (!cfg->providers[p].catalog_expose) continue;
        tg_catalog_snap_t *s = tg_catalog_acquire(w->gw->catalogs[p]);
        for (size_t i = 0; s && i < s->n; i++) {
            const char *id = s->entries[i].id;
            if (tg_config_model(cfg, id, strlen(id)) || !tg_api_allowed(&who, id)) continue;
            tg_br_model_t bm;
            const char *family = tg_br_model_parse(id, strlen(id), &bm) == 0 ? bm.family : "";
            tg_buf_appends(&b, listed++ ? ",{\"modelId\":" : "{\"modelId\":");
            tg_buf_json_str(&b, id, strlen(id));
            tg_buf_appends(&b, ",\"modelName\":");
            tg_buf_json_str(&b, id, strlen(id));
            tg_buf_appends(&b, ",\"providerName\":");
            tg_buf_json_str(&b, family, strlen(family));
            tg_buf_appends(&b, ",\"inputModalities\":[\"TEXT\"],\"outputModalities\":[\"TEXT\"],"
                               "\"responseStreamingSupported\":true,"
                               "\"modelLifecycle\":{\"status\":\"ACTIVE\"}}");
        }
        tg_catalog_snap_release(s);
    }
    tg_buf_appends(&b, "]}]");
    if (!b.data) return ref_error(w, req, 500, "internal_error", "Out of memory.");
    tg_api_send(w, req, REF_ROUTE, 200, "application/json", NULL, b.data, b.len);
    tg_buf_free(&b);
}

int tg_api_reference(tg_wctx_t *w, tg_req_t *req)
{
    static const char inv[] = "/invoke_model", lst[] = "/list_foundation_models";
    const char *p = req->path;
    size_t n = req->path_len;
    const char *op = NULL;
    size_t opn = 0;
    if (n >= sizeof(inv) - 1 && memcmp(p + n - (sizeof(inv) - 1), inv, sizeof(inv) - 1) == 0)
        op = inv, opn = sizeof(inv) - 1;
    else if (n >= sizeof(lst) - 1 && memcmp(p + n - (sizeof(lst) - 1), lst, sizeof(lst) - 1) == 0)
        op = lst, opn = sizeof(lst) - 1;
    if (!op) return 0;
    /* Either the bare path or "/<unit>_prod" before it, like the reference's
     * stage URLs. */
    size_t pre = n - opn;
    const char *unit = NULL;
    size_t ulen = 0;
    if (pre) {
        if (p[0] != '/' || pre < 7 || memcmp(p + pre - 5, "_prod", 5) != 0 ||
            memchr(p + 1, '/', pre - 1))
            return 0;
        unit = p + 1;
        ulen = pre - 6;
    }
    int is_invoke = op == inv;
    if (is_invoke && req->method != TG_HTTP_POST) {
        ref_error(w, req, 405, "method_not_allowed", "Use POST for invoke_model.");
        return 1;
    }
    if (!is_invoke && req->method != TG_HTTP_GET && req->method != TG_HTTP_HEAD) {
        ref_error(w, req, 405, "method_not_allowed", "Use GET for list_foundation_models.");
        return 1;
    }
    if (is_invoke)
        invoke(w, req, unit, ulen);
    else
        list_models(w, req);
    return 1;
}

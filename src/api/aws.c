/* aws.c - the AWS-native front doors, passed through to Bedrock and SageMaker.
 *
 *   POST /model/{modelId}/invoke | invoke-with-response-stream | converse | converse-stream
 *   POST /endpoints/{EndpointName}/invocations | invocations-response-stream
 *
 * The wire format is AWS's own, so AWS SDK clients work unchanged: the
 * client's body goes upstream as is (borrowed, not copied), signed with the
 * provider's credentials; the answer comes back byte for byte. Callers
 * authenticate with a tollgate key like every other door.
 *
 * Plain answers are buffered (bounded), their usage read (Bedrock: response
 * headers or the Converse body; SageMaker: the container's body, else an
 * estimate), committed, then sent. Streams (application/vnd.amazon.eventstream)
 * are forwarded frame by frame as they arrive, with backpressure; each whole
 * frame is decoded in place to classify it. Bedrock's frame carrying the
 * final usage (and anything after it) is held back until the usage event is
 * committed; for SageMaker the end of the response is. A mid-stream exception
 * frame reaches the client, then the stream ends cleanly and the call is
 * recorded "interrupted". Errors are answered in AWS's shape
 * (x-amzn-ErrorType and {"message"}), so an SDK raises the right exception. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "api/internal.h"
#include "aws/eventstream.h"
#include "providers/bedrock.h"
#include "providers/sagemaker.h"
#include "usage/cost.h"

enum { DOOR_BEDROCK, DOOR_SAGEMAKER };
enum { FIN_PASSTHROUGH, FIN_ERROR, FIN_STREAM };

#define MAX_ID        2048 /* a model id or ARN, decoded */
#define MAX_FRAME     TG_ES_DEFAULT_MAX_MESSAGE
#define MAX_PASS_HDRS 16
#define MAX_UP_HDRS   (TG_AWSAUTH_MAX_HEADERS + 3)

typedef struct {
    tg_wctx_t *w;
    tg_req_t *req;
    tg_upcall_t *up; /* NULL once the upstream call is over */
    int door;        /* DOOR_* */
    int route;       /* TG_ROUTE_* for metrics */
    int op;          /* tg_br_op_t or tg_sm_op_t */
    int stream;
    size_t provider;
    int status;  /* upstream status */
    int started; /* response headers sent to the client */
    int paused;
    int recorded;
    int aborted;
    int stopped;          /* stream processing ended (exception or malformed frame) */
    int holding;          /* bedrock: the usage frame arrived; later frames are held too */
    int cut;              /* the stream broke off on our side: the client gets an exception */
    int fin;              /* FIN_* */
    int err_status;       /* FIN_ERROR: the answer */
    const char *err_code; /* tollgate's code for a gateway error, NULL for upstream's */
    char err_name[64];
    char err_msg[2048];
    int64_t text_bytes; /* generated text seen, for estimates */
    uint64_t up_start_ns;
    tg_buf_t url;
    tg_buf_t body;               /* plain response or error body */
    tg_es_decoder_t dec;         /* streams: frames as they complete */
    const char *feed, *feed_end; /* the upstream bytes being fed */
    const char *run;             /* frames of them not yet written, forwarded in one write */
    size_t run_len;
    tg_buf_t hold; /* bedrock: frames held until the commit */
    tg_br_usage_t bru;
    tg_sm_stream_t sms;
    tg_sm_usage_t smu;
    tg_buf_t whole;        /* sagemaker stream: payload kept while no SSE event appeared */
    int whole_over;        /* it outgrew its bound */
    int64_t payload_bytes; /* sagemaker stream: container bytes seen */
    tg_header_t pass[MAX_PASS_HDRS]; /* upstream headers the client gets (arena copies) */
    size_t npass;
    char content_type[128];
    const tg_model_route_t *mroute; /* the configured route, NULL for a catalogue id */
    tg_gov_ticket_t gov;            /* limits and budgets held until the event is submitted */
    tg_usage_event_t ev;
} awscall_t;

static void call_free(awscall_t *c)
{
    tg_buf_free(&c->url);
    tg_buf_free(&c->body);
    tg_es_decoder_free(&c->dec);
    tg_buf_free(&c->hold);
    tg_buf_free(&c->whole);
    if (c->door == DOOR_SAGEMAKER) tg_sm_stream_free(&c->sms);
    free(c);
}

/* ---- answers in AWS's shape ---------------------------------------------------- */

/* The exception name an SDK maps a gateway-originated error to. */
static const char *error_name(int door, int status)
{
    int br = door == DOOR_BEDROCK;
    switch (status) {
    case 400:
    case 405:
    case 413:
        return br ? "ValidationException" : "ValidationError";
    case 401:
    case 403:
        return "AccessDeniedException";
    case 404:
        return br ? "ResourceNotFoundException" : "ValidationError";
    case 429:
        return "ThrottlingException";
    case 402:
        return br ? "ServiceQuotaExceededException" : "ValidationError";
    case 503:
        return br ? "ServiceUnavailableException" : "ServiceUnavailable";
    case 502:
    case 504:
        return br ? "InternalServerException" : "InternalDependencyException";
    default:
        return br ? "InternalServerException" : "InternalFailure";
    }
}

/* Sends status with {"message"[, "code"]} and x-amzn-ErrorType; extra headers
 * (the upstream's request id) ride along. */
static void aws_error(tg_wctx_t *w, tg_req_t *req, int route, int status, const char *name,
                      const char *code, const char *msg, const char *request_id,
                      const tg_header_t *extra, size_t nextra)
{
    char fresh[40];
    if (!request_id) {
        tg_api_new_id(w, fresh, sizeof(fresh), "req_");
        request_id = fresh;
    }
    tg_buf_t b;
    tg_buf_init(&b, 16384);
    int rc = tg_buf_appends(&b, "{\"message\":");
    if (!rc) rc = tg_buf_json_str(&b, msg, strlen(msg));
    if (!rc && code) rc = tg_buf_appends(&b, ",\"code\":");
    if (!rc && code) rc = tg_buf_json_str(&b, code, strlen(code));
    if (!rc) rc = tg_buf_appends(&b, "}");
    const char *body = rc || !b.data ? "{\"message\":\"error\"}" : b.data;
    size_t len = strlen(body);
    tg_header_t h[4 + MAX_PASS_HDRS];
    size_t n = 0;
    h[n++] = (tg_header_t){"Content-Type", 12, "application/json", 16};
    h[n++] = (tg_header_t){"x-amzn-ErrorType", 16, name, strlen(name)};
    h[n++] = (tg_header_t){"x-request-id", 12, request_id, strlen(request_id)};
    for (size_t i = 0; i < nextra && n < sizeof(h) / sizeof(h[0]); i++)
        h[n++] = extra[i];
    tg_api_log(w, req, route, status, request_id, NULL);
    tg_resp_send(req, status, h, n, body, len);
    tg_buf_free(&b);
}

static int c_route(int door)
{
    return door == DOOR_BEDROCK ? TG_ROUTE_BEDROCK : TG_ROUTE_SAGEMAKER;
}

static void gw_error(tg_wctx_t *w, tg_req_t *req, int door, int status, const char *code,
                     const char *msg)
{
    aws_error(w, req, c_route(door), status, error_name(door, status), code, msg, NULL, NULL, 0);
}

/* ---- finishing ------------------------------------------------------------------ */

static size_t resp_headers(awscall_t *c, tg_header_t *h, const char *ct)
{
    size_t n = 0;
    h[n++] = (tg_header_t){"Content-Type", 12, ct, strlen(ct)};
    h[n++] = (tg_header_t){"x-request-id", 12, c->ev.request_id, strlen(c->ev.request_id)};
    for (size_t i = 0; i < c->npass; i++)
        h[n++] = c->pass[i];
    return n;
}

static void on_committed(void *ud, int status)
{
    awscall_t *c = ud;
    tg_wctx_t *w = c->w;
    tg_req_t *req = c->req;
    (void)status; /* a failed commit was logged by the writer; still answer */
    if (c->aborted && !c->started) {
        tg_api_log(w, req, c->route, 499, c->ev.request_id, c->ev.key_id);
        tg_resp_send(req, 499, NULL, 0, "", 0);
        call_free(c);
        return;
    }
    tg_header_t h[3 + MAX_PASS_HDRS];
    switch (c->fin) {
    case FIN_PASSTHROUGH: {
        char usd[32];
        tg_usd_format(c->ev.cost_total, usd, sizeof(usd));
        size_t n = resp_headers(c, h, c->content_type[0] ? c->content_type : "application/json");
        h[n++] = (tg_header_t){"x-tollgate-cost-usd", 19, usd, strlen(usd)};
        tg_api_log(w, req, c->route, c->status, c->ev.request_id, c->ev.key_id);
        tg_resp_send(req, c->status, h, n, c->body.data ? c->body.data : "", c->body.len);
        break;
    }
    case FIN_ERROR:
        aws_error(w, req, c->route, c->err_status, c->err_name, c->err_code, c->err_msg,
                  c->ev.request_id, c->pass, c->npass);
        break;
    default:
        if (!c->aborted && c->hold.len) tg_resp_write(req, c->hold.data, c->hold.len);
        if (!c->aborted && c->cut) { /* else an SDK takes a truncated answer for a whole one */
            static const char m[] = "{\"message\":\"The model provider's stream broke off.\"}";
            tg_buf_t f;
            tg_buf_init(&f, 1024);
            if (tg_es_encode_exception(&f,
                                       c->door == DOOR_BEDROCK ? "internalServerException"
                                                               : "InternalStreamFailure",
                                       m, sizeof(m) - 1) == 0)
                tg_resp_write(req, f.data, f.len);
            tg_buf_free(&f);
        }
        tg_api_log(w, req, c->route, c->ev.status, c->ev.request_id, c->ev.key_id);
        tg_resp_end(req);
        break;
    }
    call_free(c);
}

/* Fills the token counts: the provider's where it gave them, else estimates
 * (4 bytes a token) from the request body and the text seen. */
static void fill_tokens(awscall_t *c, const char *outcome)
{
    tg_usage_event_t *ev = &c->ev;
    if (strcmp(outcome, TG_OUTCOME_UPSTREAM_ERROR) == 0 ||
        strcmp(outcome, TG_OUTCOME_FAILED) == 0) {
        /* Bedrock counted (and bills) what its 2xx headers reported, even when
         * the body then failed us (too large, broke off, timed out). */
        if (c->door == DOOR_BEDROCK && c->bru.have) {
            ev->input_tokens = c->bru.input;
            ev->output_tokens = c->bru.output;
            ev->cache_read_tokens = c->bru.cache_read;
            ev->cache_write_tokens = c->bru.cache_write;
            ev->token_source = TG_TOKENS_PROVIDER;
        }
        return; /* else nothing was generated: zero tokens */
    }
    int64_t est_in = tg_estimate_tokens((int64_t)c->req->body_len);
    if (c->door == DOOR_BEDROCK) {
        if (c->bru.have) {
            ev->input_tokens = c->bru.input;
            ev->output_tokens = c->bru.output;
            ev->cache_read_tokens = c->bru.cache_read;
            ev->cache_write_tokens = c->bru.cache_write;
            ev->token_source = TG_TOKENS_PROVIDER;
        } else {
            ev->input_tokens = est_in;
            ev->output_tokens = tg_estimate_tokens(c->text_bytes);
            ev->token_source = TG_TOKENS_ESTIMATED;
        }
        return;
    }
    const tg_sm_usage_t *u = c->stream ? &c->sms.usage : &c->smu;
    if (c->stream && !c->sms.events && !c->whole_over && c->whole.len) {
        /* A container that answers whole JSON in parts (JumpStart): read it so. */
        tg_sm_usage_from_body(c->whole.data, c->whole.len, &c->smu);
        u = &c->smu;
    }
    int64_t out_bytes = u->text_bytes ? u->text_bytes
                        : c->stream   ? c->payload_bytes
                                      : (int64_t)c->body.len;
    ev->input_tokens = u->have_input ? u->input : est_in;
    ev->output_tokens = u->have_output ? u->output : tg_estimate_tokens(out_bytes);
    ev->token_source = u->have_input && u->have_output ? TG_TOKENS_PROVIDER : TG_TOKENS_ESTIMATED;
}

static void record(awscall_t *c, const char *outcome, int status)
{
    if (c->recorded) return;
    c->recorded = 1;
    tg_usage_event_t *ev = &c->ev;
    fill_tokens(c, outcome);
    tg_api_submit_event(c->w, c->req, ev, outcome, status, c->mroute, c->door == DOOR_BEDROCK,
                        &c->gov, on_committed, c);
}

static void upstream_gone(awscall_t *c)
{
    c->up = NULL;
    tg_metrics_upstream(c->w->shard, c->provider, (tg_now_ns() - c->up_start_ns) / 1000);
}

static void fail_with(awscall_t *c, int status, const char *code, const char *msg)
{
    c->fin = FIN_ERROR;
    c->err_status = status;
    c->err_code = code;
    snprintf(c->err_name, sizeof(c->err_name), "%s", error_name(c->door, status));
    snprintf(c->err_msg, sizeof(c->err_msg), "%s", msg);
}

/* The upstream's own error, mapped to the status and exception name AWS
 * gives, with its message (never more of its body). */
static void upstream_error(awscall_t *c)
{
    const char *type = "";
    for (size_t i = 0; i < c->npass; i++)
        if (tg_strcaseeq(c->pass[i].name, c->pass[i].name_len, "x-amzn-errortype", 16))
            type = c->pass[i].value;
    c->fin = FIN_ERROR;
    c->err_code = NULL;
    c->err_status =
        c->door == DOOR_BEDROCK
            ? tg_br_error_status(type, strlen(type), c->status, c->err_name, sizeof(c->err_name))
            : tg_sm_error_status(type, strlen(type), c->status, c->err_name, sizeof(c->err_name));
    if (!c->err_name[0])
        snprintf(c->err_name, sizeof(c->err_name), "%s", error_name(c->door, c->err_status));
    tg_aws_error_message(c->body.data ? c->body.data : "", c->body.len, c->err_msg,
                         sizeof(c->err_msg));
    if (!c->err_msg[0]) snprintf(c->err_msg, sizeof(c->err_msg), "The model provider failed.");
    /* Our own x-amzn-ErrorType replaces the upstream's (which may carry a URL). */
    size_t k = 0;
    for (size_t i = 0; i < c->npass; i++)
        if (!tg_strcaseeq(c->pass[i].name, c->pass[i].name_len, "x-amzn-errortype", 16))
            c->pass[k++] = c->pass[i];
    c->npass = k;
    /* The provider refused the gateway's own credentials: not the client's
     * fault, and AWS's message may quote our signed headers. */
    static const char *const auth_errors[] = {"UnrecognizedClientException",
                                              "InvalidSignatureException",
                                              "IncompleteSignatureException",
                                              "ExpiredTokenException",
                                              "InvalidClientTokenId",
                                              "SignatureDoesNotMatch",
                                              "MissingAuthenticationTokenException"};
    for (size_t i = 0; i < sizeof(auth_errors) / sizeof(auth_errors[0]); i++) {
        if (strcasecmp(c->err_name, auth_errors[i]) != 0) continue;
        tg_warn("request %s: provider %s rejected the gateway's AWS credentials (%s)",
                c->ev.request_id, c->ev.provider, c->err_name);
        fail_with(c, 502, "upstream_auth_failed",
                  "The model provider rejected the gateway's credentials.");
        break;
    }
}

static void upstream_over(awscall_t *c, int err)
{
    upstream_gone(c);
    if (c->started) { /* a stream was under way: end it cleanly */
        c->fin = FIN_STREAM;
        if (!err && c->dec.buf.len) err = TG_EUPSTREAM; /* cut inside a frame */
        if (c->door == DOOR_SAGEMAKER) {
            /* A last JSON line without its newline still counts; an event left
             * half-read after whole ones means the container's stream broke off. */
            size_t held = tg_sm_stream_finish(&c->sms);
            if (!err && held && c->sms.events && !c->sms.err) err = TG_EUPSTREAM;
            if (c->sms.error[0] && !c->stopped) c->stopped = 1; /* an in-band error event */
        }
        c->cut = err || c->stopped == 2;
        if (err)
            tg_warn("request %s: upstream stream broke off (%s)", c->ev.request_id,
                    tg_strerror(err));
        record(c, err || c->stopped ? TG_OUTCOME_INTERRUPTED : TG_OUTCOME_OK, 200);
        return;
    }
    if (err) {
        if (err == TG_ETIMEDOUT)
            fail_with(c, 504, "upstream_timeout", "The model provider did not answer in time.");
        else if (err == TG_ECONNECT)
            fail_with(c, 502, "upstream_unreachable", "The model provider could not be reached.");
        else if (err == TG_ETOOBIG)
            fail_with(c, 502, "upstream_response_too_large",
                      "The model provider's response was too large.");
        else
            fail_with(c, 502, "upstream_error", "The model provider's response broke off.");
        c->npass = 0;
        record(c, TG_OUTCOME_FAILED, c->err_status);
        return;
    }
    if (c->status < 200 || c->status >= 300) {
        upstream_error(c);
        record(c, TG_OUTCOME_UPSTREAM_ERROR, c->err_status);
        return;
    }
    c->fin = FIN_PASSTHROUGH;
    const char *b = c->body.data ? c->body.data : "";
    if (c->door == DOOR_BEDROCK) {
        if (c->op == TG_BR_CONVERSE) tg_br_usage_from_converse(b, c->body.len, &c->bru);
        /* InvokeModel's counts came with the headers. */
    } else {
        tg_sm_usage_from_body(b, c->body.len, &c->smu);
    }
    record(c, TG_OUTCOME_OK, c->status);
}

/* ---- event-stream frames --------------------------------------------------------- */

static void client_write(awscall_t *c, const char *p, size_t n)
{
    if (n && tg_resp_write(c->req, p, n) == 1) c->paused = 1;
}

/* Classifies one whole frame. Returns 0 to forward it, 1 to hold it, 2 to
 * forward it and stop (an exception), -1 when it is unreadable. */
static int classify(awscall_t *c, const tg_es_message_t *m)
{
    if (c->door == DOOR_BEDROCK) {
        tg_br_event_t ev;
        memset(&ev, 0, sizeof(ev));
        if (tg_br_stream_event(c->op, m, &ev, &c->bru)) {
            tg_warn("request %s: unreadable Bedrock stream event", c->ev.request_id);
            return -1;
        }
        c->text_bytes += ev.output_text_bytes;
        if (ev.kind == TG_BR_EV_EXCEPTION) {
            tg_info("request %s: upstream stream exception %s: %s", c->ev.request_id, ev.code,
                    ev.message);
            return 2;
        }
        if (ev.kind == TG_BR_EV_USAGE) c->holding = 1;
        return c->holding ? 1 : 0;
    }
    const char *payload = NULL;
    size_t plen = 0;
    int st = 0;
    char code[64], msg[256];
    int rc = tg_sm_stream_message(m, &payload, &plen, &st, code, sizeof(code), msg, sizeof(msg));
    if (rc < 0) {
        tg_warn("request %s: unreadable SageMaker stream event", c->ev.request_id);
        return -1;
    }
    if (rc == 1) {
        tg_info("request %s: upstream stream exception %s: %s", c->ev.request_id, code, msg);
        return 2;
    }
    c->payload_bytes += (int64_t)plen;
    if (!c->sms.events && !c->whole_over && tg_buf_append(&c->whole, payload, plen)) {
        c->whole_over = 1;
        tg_buf_free(&c->whole);
    }
    if (tg_sm_stream_feed(&c->sms, payload, plen))
        tg_debug("request %s: an SSE event over the bound; its counts are not read",
                 c->ev.request_id);
    return 0;
}

static void flush_run(awscall_t *c)
{
    client_write(c, c->run, c->run_len);
    c->run = NULL;
    c->run_len = 0;
}

enum { FRAME_STOP = 1, FRAME_BAD = 2 }; /* on_frame's stops, apart from the decoder's errors */

/* One verified frame from the decoder: forwarded, held, or the end. Frames
 * that lie in the bytes being fed are gathered into one write; one the
 * decoder assembled across reads is written at once (its buffer is reused). */
static int on_frame(const tg_es_message_t *m, void *ud)
{
    awscall_t *c = ud;
    int k = classify(c, m);
    if (k < 0) return FRAME_BAD;
    if (k == 1 || (k == 2 && c->holding)) { /* after the usage frame, in order */
        flush_run(c);
        if (tg_buf_append(&c->hold, m->raw, m->raw_len)) return FRAME_BAD;
    } else if (m->raw >= c->feed && m->raw < c->feed_end) {
        if (c->run && c->run + c->run_len != m->raw) flush_run(c);
        if (!c->run) c->run = m->raw;
        c->run_len += m->raw_len;
    } else {
        flush_run(c);
        client_write(c, m->raw, m->raw_len);
    }
    return k == 2 ? FRAME_STOP : 0;
}

/* Feeds upstream bytes to the frame decoder and forwards what it yields. */
static void frames(awscall_t *c, const char *p, size_t n)
{
    if (c->stopped) return;
    c->feed = p;
    c->feed_end = p + n;
    int rc = tg_es_decoder_feed(&c->dec, p, n);
    flush_run(c);
    c->feed = c->feed_end = NULL;
    if (rc == FRAME_STOP) {
        c->stopped = 1;
    } else if (rc) {
        if (rc != FRAME_BAD)
            tg_warn("request %s: malformed event-stream frame from upstream (%s)", c->ev.request_id,
                    c->dec.errmsg);
        c->stopped = 2;
    }
}

/* ---- upstream callbacks -------------------------------------------------------------- */

/* Response headers a client of the AWS API reads. */
static int passed_on(const char *name, size_t n)
{
    static const char *const exact[] = {"x-amzn-requestid", "x-amzn-errortype",
                                        "x-amzn-invoked-production-variant", NULL};
    for (const char *const *e = exact; *e; e++)
        if (tg_strcaseeq(name, n, *e, strlen(*e))) return 1;
    return (n > 15 && tg_strcaseeq(name, 15, "x-amzn-bedrock-", 15)) ||
           (n > 17 && tg_strcaseeq(name, 17, "x-amzn-sagemaker-", 17));
}

static void up_headers(tg_upcall_t *u, int status, const tg_header_t *h, size_t n, void *ud)
{
    awscall_t *c = ud;
    c->status = status;
    c->ev.ttfb_us = (int64_t)((tg_now_ns() - c->req->start_ns) / 1000);
    tg_arena_t *a = c->req->arena;
    for (size_t i = 0; i < n; i++) {
        if (tg_strcaseeq(h[i].name, h[i].name_len, "content-type", 12)) {
            snprintf(c->content_type, sizeof(c->content_type), "%s", h[i].value);
        } else if (passed_on(h[i].name, h[i].name_len) && c->npass < MAX_PASS_HDRS) {
            char *nm = tg_arena_strndup(a, h[i].name, h[i].name_len);
            char *v = tg_arena_strndup(a, h[i].value, h[i].value_len);
            if (nm && v) c->pass[c->npass++] = (tg_header_t){nm, h[i].name_len, v, h[i].value_len};
        }
    }
    if (status < 200 || status >= 300) return;
    if (c->door == DOOR_BEDROCK && c->op == TG_BR_INVOKE) tg_br_usage_from_headers(h, n, &c->bru);
    if (c->stream) {
        tg_header_t rh[2 + MAX_PASS_HDRS];
        size_t k = resp_headers(
            c, rh, c->content_type[0] ? c->content_type : "application/vnd.amazon.eventstream");
        tg_resp_start(c->req, 200, rh, k);
        c->started = 1;
    }
}

static int up_data(tg_upcall_t *u, const char *p, size_t n, void *ud)
{
    awscall_t *c = ud;
    if (!c->started) {
        if (tg_buf_append(&c->body, p, n) == 0) return 0;
        tg_upcall_cancel(u); /* over max_response_bytes */
        upstream_over(c, TG_ETOOBIG);
        return 0;
    }
    frames(c, p, n);
    if (c->stopped) {
        /* An exception was forwarded, or a frame was malformed: no more. */
        tg_upcall_cancel(u);
        upstream_over(c, 0);
        return 0;
    }
    return c->paused ? 1 : 0;
}

static void up_done(tg_upcall_t *u, int err, void *ud)
{
    upstream_over(ud, err);
}

static const tg_upcall_cbs_t up_cbs = {up_headers, up_data, up_done};

/* ---- client callbacks ------------------------------------------------------------------ */

static void on_drain(tg_req_t *req)
{
    awscall_t *c = req->data;
    if (c->paused && c->up) {
        c->paused = 0;
        tg_upcall_resume(c->up);
    }
}

static void on_abort(tg_req_t *req)
{
    awscall_t *c = req->data;
    c->aborted = 1;
    if (c->recorded) return; /* waiting for the commit: it finishes */
    if (c->up) {
        tg_upcall_cancel(c->up);
        upstream_gone(c);
    }
    c->fin = FIN_STREAM;
    record(c, TG_OUTCOME_ABANDONED, c->started ? 200 : 499);
}

/* ---- request ------------------------------------------------------------------------------ */

static int hexval(int ch)
{
    return ch >= '0' && ch <= '9'   ? ch - '0'
           : ch >= 'a' && ch <= 'f' ? ch - 'a' + 10
           : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10
                                    : -1;
}

/* Percent-decodes s[0..n) into out (NUL-terminated). Rejects bad escapes and
 * control characters. */
static int url_decode(const char *s, size_t n, char *out, size_t cap, size_t *len)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int ch = (unsigned char)s[i];
        if (ch == '%') {
            if (i + 2 >= n) return TG_EINVAL;
            int hi = hexval((unsigned char)s[i + 1]), lo = hexval((unsigned char)s[i + 2]);
            if (hi < 0 || lo < 0) return TG_EINVAL;
            ch = hi << 4 | lo;
            i += 2;
        }
        if (ch < 0x20 || ch == 0x7f) return TG_EINVAL;
        if (k + 1 >= cap) return TG_ETOOBIG;
        out[k++] = (char)ch;
    }
    out[k] = '\0';
    *len = k;
    return k ? TG_OK : TG_EINVAL;
}

int tg_api_exposed_provider(tg_gateway_t *g, const char *id, size_t n)
{
    const tg_config_t *cfg = g->cfg;
    int arn = n > 4 && memcmp(id, "arn:", 4) == 0;
    tg_br_model_t bm;
    for (size_t i = 0; i < cfg->nproviders; i++) {
        const tg_provider_t *p = &cfg->providers[i];
        if (p->kind != TG_PROVIDER_BEDROCK || !p->catalog_expose) continue;
        if (arn) {
            if (tg_br_model_parse(id, n, &bm) == 0) return (int)i;
            continue;
        }
        tg_catalog_snap_t *s = tg_catalog_acquire(g->catalogs[i]);
        int has = s && tg_catalog_snap_has(s, id, n);
        tg_catalog_snap_release(s);
        if (has) return (int)i;
    }
    return -1;
}

void tg_api_aws_target_route(tg_api_aws_target_t *t, const tg_config_t *cfg,
                             const tg_model_route_t *r)
{
    t->p = r->provider;
    t->provider = (size_t)(r->provider - cfg->providers);
    t->upstream = r->upstream_model;
    t->base_url = r->base_url;
    t->host = r->host;
    t->region = r->region;
    t->route = r;
    t->connect_ms = r->connect_timeout_ms;
    t->first_byte_ms = r->first_byte_timeout_ms;
    t->total_ms = r->total_timeout_ms;
}

int tg_api_aws_target_exposed(tg_wctx_t *w, const char *id, size_t n, tg_api_aws_target_t *t)
{
    int pi = tg_api_exposed_provider(w->gw, id, n);
    if (pi < 0) return TG_ENOTFOUND;
    const tg_provider_t *p = &w->gw->cfg->providers[pi];
    t->p = p;
    t->provider = (size_t)pi;
    t->upstream = id;
    t->base_url = p->endpoint;
    t->host = w->gw->aws_hosts[pi];
    t->region = p->region;
    t->route = NULL;
    t->connect_ms = p->connect_timeout_ms;
    t->first_byte_ms = p->first_byte_timeout_ms;
    t->total_ms = p->total_timeout_ms;
    return 0;
}

/* Splits "/prefix/{name}/{op}" (prefix without slashes) into the name, decoded
 * into the arena, and the op. */
static int split_path(tg_req_t *req, size_t prefix_len, char **name, size_t *name_len,
                      const char **op, size_t *op_len)
{
    const char *s = req->path + prefix_len, *end = req->path + req->path_len;
    const char *slash = end;
    while (slash > s && slash[-1] != '/')
        slash--;
    if (slash <= s + 1) return TG_EINVAL; /* no name, or no op */
    *op = slash, *op_len = (size_t)(end - slash);
    size_t raw = (size_t)(slash - 1 - s);
    if (raw > 3 * MAX_ID) return TG_ETOOBIG;
    char *out = tg_arena_alloc(req->arena, raw + 1);
    if (!out) return TG_ENOMEM;
    int rc = url_decode(s, raw, out, raw + 1 > MAX_ID + 1 ? MAX_ID + 1 : raw + 1, name_len);
    *name = out;
    return rc;
}

/* Appends a header line "Name: value" to lines (arena) and to the signed set. */
static int add_header(tg_arena_t *arena, const char **lines, size_t *nl, tg_header_t *sh,
                      size_t *ns, const char *name, const char *value)
{
    if (*ns >= TG_AWSAUTH_MAX_HEADERS) return TG_ETOOBIG;
    size_t nn = strlen(name), vn = strlen(value);
    char *l = tg_arena_alloc(arena, nn + vn + 3);
    if (!l) return TG_ENOMEM;
    memcpy(l, name, nn);
    memcpy(l + nn, ": ", 2);
    memcpy(l + nn + 2, value, vn + 1);
    lines[(*nl)++] = l;
    sh[(*ns)++] = (tg_header_t){l, nn, l + nn + 2, vn};
    return TG_OK;
}

int tg_api_aws_prepare(tg_wctx_t *w, tg_arena_t *arena, const tg_api_aws_target_t *t,
                       const tg_api_aws_req_t *r, tg_buf_t *url, const char **lines, size_t *nl)
{
    /* URL: the route's endpoint + the op's path, the id encoded once. */
    const char *hs = strstr(t->base_url, "://") + 3;
    size_t path_off = (size_t)(hs - t->base_url) + strcspn(hs, "/");
    tg_buf_reset(url);
    int rc = tg_buf_appends(url, t->base_url);
    if (!rc)
        rc = r->door_sagemaker
                 ? tg_sm_path(url, r->upstream, strlen(r->upstream), (tg_sm_op_t)r->op)
                 : tg_br_path(url, r->upstream, strlen(r->upstream), (tg_br_op_t)r->op);
    /* Headers, signed. */
    tg_header_t sh[TG_AWSAUTH_MAX_HEADERS];
    size_t ns = 0;
    *nl = 0;
    if (!rc) rc = add_header(arena, lines, nl, sh, &ns, "Content-Type", r->content_type);
    if (!rc) rc = add_header(arena, lines, nl, sh, &ns, "Accept", r->accept);
    for (size_t i = 0; i < r->n && !rc; i++)
        rc = add_header(arena, lines, nl, sh, &ns, r->names[i], r->values[i]);
    if (rc) return rc == TG_ENOMEM ? rc : TG_ETOOBIG;
    tg_awsauth_out_t so;
    tg_awsauth_req_t ar = {
        .method = "POST",
        .host = t->host,
        .region = t->region,
        .service = r->door_sagemaker ? "sagemaker" : "bedrock",
        .path = url->data + path_off,
        .path_len = url->len - path_off,
        .headers = sh,
        .nheaders = ns,
        .body = r->body,
        .body_len = r->body_len,
    };
    rc = tg_awsauth_sign(w->gw->aws_auth[t->provider], &w->aws_keys[t->provider], &ar, arena, &so);
    /* so's lines may live in so itself: keep copies that outlive this call. */
    for (size_t i = 0; !rc && i < so.n; i++)
        if (!(lines[(*nl)++] = tg_arena_strndup(arena, so.lines[i], strlen(so.lines[i]))))
            rc = TG_ENOMEM;
    explicit_bzero(&so, sizeof(so));
    return rc;
}

static void start_call(tg_wctx_t *w, tg_req_t *req, int door, int op, const tg_caller_t *who,
                       const char *client_id, const tg_api_aws_target_t *t)
{
    int stream =
        door == DOOR_BEDROCK ? tg_br_op_streams((tg_br_op_t)op) : op == TG_SM_INVOKE_STREAM;
    awscall_t *c = calloc(1, sizeof(*c));
    if (!c) return gw_error(w, req, door, 503, "overloaded", "Out of memory.");
    c->w = w;
    c->req = req;
    c->door = door;
    c->route = door == DOOR_BEDROCK ? TG_ROUTE_BEDROCK : TG_ROUTE_SAGEMAKER;
    c->op = op;
    c->stream = stream;
    c->provider = t->provider;
    c->mroute = t->route;
    tg_buf_init(&c->url, 8192);
    tg_buf_init(&c->body, w->gw->cfg->max_response_bytes);
    tg_es_decoder_init(&c->dec, MAX_FRAME, on_frame, c);
    tg_buf_init(&c->hold, MAX_FRAME);
    tg_buf_init(&c->whole, 1 << 20);
    if (door == DOOR_SAGEMAKER) tg_sm_stream_init(&c->sms, 1 << 20);

    const char *lines[TG_API_AWS_MAX_LINES];
    size_t nl = 0;
    const char *ct = tg_req_header(req, "content-type");
    const char *acc = tg_req_header(req, "accept");
    /* What the SDK sends of the service's own headers, then the route's
     * SageMaker defaults. */
    const char *xn[TG_AWSAUTH_MAX_HEADERS], *xv[TG_AWSAUTH_MAX_HEADERS];
    size_t nx = 0;
    const char *pfx = door == DOOR_BEDROCK ? "x-amzn-bedrock-" : "x-amzn-sagemaker-";
    size_t pl = strlen(pfx);
    int rc = 0;
    for (size_t i = 0; i < req->nheaders && !rc; i++) {
        const tg_header_t *h = &req->headers[i];
        if (h->name_len <= pl || !tg_strcaseeq(h->name, pl, pfx, pl)) continue;
        if (nx >= TG_AWSAUTH_MAX_HEADERS - 2)
            rc = TG_ETOOBIG;
        else
            xn[nx] = h->name, xv[nx++] = h->value;
    }
    if (!rc && door == DOOR_SAGEMAKER && t->route) {
        static const char *const names[] = {"X-Amzn-SageMaker-Custom-Attributes",
                                            "X-Amzn-SageMaker-Target-Variant",
                                            "X-Amzn-SageMaker-Inference-Component"};
        const char *vals[] = {t->route->custom_attributes, t->route->target_variant,
                              t->route->inference_component};
        for (int i = 0; i < 3 && !rc; i++) {
            if (!vals[i] || tg_req_header(req, names[i])) continue;
            if (nx >= TG_AWSAUTH_MAX_HEADERS - 2)
                rc = TG_ETOOBIG;
            else
                xn[nx] = names[i], xv[nx++] = vals[i];
        }
    }
    tg_api_aws_req_t ar = {
        .door_sagemaker = door == DOOR_SAGEMAKER,
        .op = op,
        .upstream = t->upstream,
        .body = req->body,
        .body_len = req->body_len,
        .content_type = ct && *ct ? ct : "application/json",
        .accept = acc && *acc ? acc
                  : stream    ? "application/vnd.amazon.eventstream"
                              : "application/json",
        .names = xn,
        .values = xv,
        .n = nx,
    };
    if (rc) {
        call_free(c);
        return gw_error(w, req, door, 400, "invalid_request",
                        "Too many or too large request headers for this call.");
    }
    rc = tg_api_aws_prepare(w, req->arena, t, &ar, &c->url, lines, &nl);
    if (rc) {
        call_free(c);
        if (rc == TG_EAUTH)
            return gw_error(w, req, door, 503, "credentials_unavailable",
                            "The gateway has no AWS credentials for this provider right now.");
        if (rc == TG_ETOOBIG || rc == TG_EINVAL)
            return gw_error(w, req, door, 400, "invalid_request",
                            "Too many or too large request headers for this call.");
        tg_error("request signing failed: %s", tg_strerror(rc));
        return gw_error(w, req, door, 500, "internal_error", "The request could not be signed.");
    }
    tg_api_call_t ci = {.model = client_id,
                        .model_len = strlen(client_id),
                        .route = t->route,
                        .upstream_model = t->upstream,
                        .region = t->region,
                        .bedrock = door == DOOR_BEDROCK,
                        .parse_body = 1};
    tg_api_refusal_t refusal;
    if (tg_api_govern(w, req, who, &ci, &c->gov, &refusal)) {
        call_free(c);
        return aws_error(w, req, c_route(door), refusal.status, error_name(door, refusal.status),
                         refusal.code, refusal.message, NULL, refusal.headers, refusal.nheaders);
    }
    if (tg_writer_reserve(w->gw->writer) != 0) {
        tg_api_gov_release(&c->gov);
        call_free(c);
        return gw_error(w, req, door, 503, "overloaded",
                        "The usage ledger is saturated; retry shortly.");
    }

    tg_usage_event_t *ev = &c->ev;
    tg_api_new_id(w, ev->id, sizeof(ev->id), "evt_");
    tg_api_new_id(w, ev->request_id, sizeof(ev->request_id), "req_");
    ev->started_ms = tg_wall_ms() - (int64_t)((tg_now_ns() - req->start_ns) / 1000000);
    snprintf(ev->unit, sizeof(ev->unit), "%s", who->unit);
    snprintf(ev->team, sizeof(ev->team), "%s", who->team);
    snprintf(ev->key_id, sizeof(ev->key_id), "%s", who->id);
    snprintf(ev->model, sizeof(ev->model), "%s", client_id);
    snprintf(ev->upstream_model, sizeof(ev->upstream_model), "%s", t->upstream);
    snprintf(ev->provider, sizeof(ev->provider), "%s", t->p->name);
    snprintf(ev->region, sizeof(ev->region), "%s", t->region);
    snprintf(ev->api, sizeof(ev->api), "%s",
             door == DOOR_BEDROCK ? tg_br_op_api((tg_br_op_t)op) : tg_sm_op_api((tg_sm_op_t)op));
    snprintf(ev->price_version, sizeof(ev->price_version), "none");
    ev->streamed = stream;

    tg_upcall_opts_t o = {
        .method = "POST",
        .url = c->url.data,
        .headers = lines,
        .nheaders = nl,
        .body = req->body,
        .body_len = req->body_len,
        .connect_timeout_ms = t->connect_ms,
        .first_byte_timeout_ms = t->first_byte_ms,
        .total_timeout_ms = t->total_ms,
    };
    req->data = c;
    req->on_abort = on_abort;
    req->on_drain = on_drain;
    c->up_start_ns = tg_now_ns();
    rc = tg_upcall_start(w->up, &o, &up_cbs, c, &c->up);
    if (rc) {
        c->up = NULL;
        upstream_over(c, rc == TG_ETIMEDOUT ? rc : TG_ECONNECT);
    }
}

static int door_prologue(tg_wctx_t *w, tg_req_t *req, int door, tg_caller_t *who)
{
    if (req->method != TG_HTTP_POST) {
        gw_error(w, req, door, 405, "method_not_allowed", "Use POST for this path.");
        return -1;
    }
    const char *code, *msg;
    int status = tg_api_auth_check(w, req, who, &code, &msg);
    if (status) {
        gw_error(w, req, door, status, code, msg);
        return -1;
    }
    return 0;
}

void tg_api_bedrock(tg_wctx_t *w, tg_req_t *req)
{
    tg_caller_t who;
    if (door_prologue(w, req, DOOR_BEDROCK, &who)) return;
    char *id;
    size_t idn;
    const char *ops;
    size_t opn;
    tg_br_op_t op;
    int rc = split_path(req, 7, &id, &idn, &ops, &opn);
    if (rc == TG_ENOMEM) return gw_error(w, req, DOOR_BEDROCK, 503, "overloaded", "Out of memory.");
    if (rc || tg_br_op_parse(ops, opn, &op))
        return gw_error(w, req, DOOR_BEDROCK, 400, "bad_path",
                        "Use /model/{modelId}/invoke, invoke-with-response-stream, converse or "
                        "converse-stream.");
    const tg_config_t *cfg = w->gw->cfg;
    tg_api_aws_target_t t;
    memset(&t, 0, sizeof(t));
    const tg_model_route_t *r = tg_config_model(cfg, id, idn);
    if (r && r->provider->kind != TG_PROVIDER_BEDROCK) {
        char msg[300];
        snprintf(msg, sizeof(msg), "Model '%.120s' is not served by Bedrock; use %s.", id,
                 r->provider->kind == TG_PROVIDER_SAGEMAKER ? "/endpoints/{name}/invocations"
                                                            : "/v1/chat/completions");
        return gw_error(w, req, DOOR_BEDROCK, 400, "unsupported_route", msg);
    }
    if (r)
        tg_api_aws_target_route(&t, cfg, r);
    else if (tg_api_aws_target_exposed(w, id, idn, &t))
        return gw_error(w, req, DOOR_BEDROCK, 404, "model_not_found",
                        "The model does not exist or you do not have access to it.");
    start_call(w, req, DOOR_BEDROCK, (int)op, &who, id, &t);
}

void tg_api_sagemaker(tg_wctx_t *w, tg_req_t *req)
{
    tg_caller_t who;
    if (door_prologue(w, req, DOOR_SAGEMAKER, &who)) return;
    char *name;
    size_t nn;
    const char *ops;
    size_t opn;
    tg_sm_op_t op;
    int rc = split_path(req, 11, &name, &nn, &ops, &opn);
    if (rc == TG_ENOMEM)
        return gw_error(w, req, DOOR_SAGEMAKER, 503, "overloaded", "Out of memory.");
    if (rc || tg_sm_op_parse(ops, opn, &op))
        return gw_error(w, req, DOOR_SAGEMAKER, 400, "bad_path",
                        "Use /endpoints/{EndpointName}/invocations or "
                        "invocations-response-stream.");
    const tg_config_t *cfg = w->gw->cfg;
    const tg_model_route_t *r = tg_config_model(cfg, name, nn);
    if (r && r->provider->kind != TG_PROVIDER_SAGEMAKER) r = NULL;
    if (!r) r = tg_config_sm_endpoint(cfg, name, nn);
    if (!r)
        return gw_error(w, req, DOOR_SAGEMAKER, 404, "model_not_found",
                        "No such SageMaker endpoint is configured, or you do not have access.");
    tg_api_aws_target_t t;
    memset(&t, 0, sizeof(t));
    tg_api_aws_target_route(&t, cfg, r);
    start_call(w, req, DOOR_SAGEMAKER, (int)op, &who, name, &t);
}

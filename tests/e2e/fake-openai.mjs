// A fake OpenAI-compatible upstream for tollgate's black-box tests.
//
// It listens on 127.0.0.1 (port 0), checks what the real API would check
// (method and path, `Authorization: Bearer <key>`, JSON content type, a JSON
// body with `model` and `messages`) and answers in OpenAI's exact formats:
// `chat.completion` objects, and `chat.completion.chunk` server-sent events
// ending in `data: [DONE]`, with the usage-only chunk (`"choices": []`) when the
// request set `stream_options.include_usage`.
//
// Behaviour is configurable per test: a default, one per upstream model name
// (`byModel`), and one-shot behaviours queued for the next requests. Every
// request received is recorded (headers, parsed body, what was sent back and
// whether the connection was closed before the answer finished) so tests can
// assert what the gateway forwarded and whether a client abort reached the
// upstream.

import http from 'node:http';
import { randomBytes } from 'node:crypto';

export const DEFAULT_BEHAVIOR = Object.freeze({
  text: 'Hello from the fake upstream.',
  promptTokens: 12,
  completionTokens: 7,
  cachedTokens: 0,
  // Streaming: the text is split into this many content deltas.
  chunks: 3,
  // Delay before each streamed content chunk (ms).
  chunkDelayMs: 0,
  // Delay before the response headers (ms), for both modes.
  delayMs: 0,
  // null | 'status' | 'hang' | 'stall-body' | 'close-mid-stream' | 'destroy'
  //  status           answer `status` with the JSON `errorBody` (OpenAI's shape)
  //  hang             read the request, never answer (until the peer closes)
  //  stall-body       send 200 headers and part of the body, then stall
  //  close-mid-stream streaming: send `closeAfterChunks` content chunks, then destroy the socket
  //  destroy          destroy the socket without any answer
  fail: null,
  status: 500,
  errorBody: null,
  closeAfterChunks: 2,
  finishReason: 'stop',
  // A server that does not count: no `usage` in answers, no usage chunk.
  noUsage: false,
});

export const ERROR_BODIES = Object.freeze({
  500: {
    error: {
      message: 'The server had an error while processing your request. Sorry about that!',
      type: 'server_error',
      param: null,
      code: null,
    },
  },
  429: {
    error: {
      message: 'Rate limit reached for upstream-gpt in organization org-fake on requests per min (RPM): Limit 3, Used 3, Requested 1.',
      type: 'requests',
      param: null,
      code: 'rate_limit_exceeded',
    },
  },
  503: {
    error: {
      message: 'The engine is currently overloaded, please try again later',
      type: 'server_error',
      param: null,
      code: null,
    },
  },
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

function hex(n) {
  return randomBytes(n).toString('hex');
}

/** Splits `text` into `n` non-empty pieces (fewer if the text is shorter). */
export function splitText(text, n) {
  const count = Math.max(1, Math.min(n, text.length || 1));
  const size = Math.ceil(text.length / count);
  const out = [];
  for (let i = 0; i < text.length; i += size) out.push(text.slice(i, i + size));
  return out.length ? out : [''];
}

/** Text of `n` distinct words, handy for many-chunk streams. */
export function wordsText(n) {
  return Array.from({ length: n }, (_, i) => `word${i + 1} `).join('');
}

function usageObject(b) {
  return {
    prompt_tokens: b.promptTokens,
    completion_tokens: b.completionTokens,
    total_tokens: b.promptTokens + b.completionTokens,
    prompt_tokens_details: { cached_tokens: b.cachedTokens, audio_tokens: 0 },
    completion_tokens_details: {
      reasoning_tokens: 0,
      audio_tokens: 0,
      accepted_prediction_tokens: 0,
      rejected_prediction_tokens: 0,
    },
  };
}

function openaiError(res, status, message, type, code, param = null) {
  const body = JSON.stringify({ error: { message, type, param, code } });
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
    'x-request-id': `req_${hex(16)}`,
  });
  res.end(body);
}

/**
 * Starts the fake. Options:
 *   apiKey      the bearer key it expects (default: a random sk-fake-... key)
 *   models      upstream model ids it knows; others get OpenAI's 404 (default: any model)
 *   behavior    default behaviour, merged over DEFAULT_BEHAVIOR
 *   byModel     { upstreamModel: behaviour } overrides
 */
export async function startFakeOpenAI(opts = {}) {
  const apiKey = opts.apiKey ?? `sk-fake-${hex(12)}`;
  const knownModels = opts.models ? new Set(opts.models) : null;
  let defaultBehavior = { ...DEFAULT_BEHAVIOR, ...(opts.behavior || {}) };
  const byModel = new Map(Object.entries(opts.byModel || {}));
  const queue = [];
  const requests = [];
  const sockets = new Set();
  const timers = new Set();
  let seq = 0;

  const later = (ms) =>
    new Promise((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });

  function behaviorFor(model) {
    if (queue.length) return { ...defaultBehavior, ...queue.shift() };
    if (model != null && byModel.has(model)) return { ...defaultBehavior, ...byModel.get(model) };
    return { ...defaultBehavior };
  }

  const server = http.createServer((req, res) => {
    const rec = {
      seq: ++seq,
      method: req.method,
      path: req.url,
      headers: { ...req.headers },
      rawHeaderNames: req.rawHeaders.filter((_, i) => i % 2 === 0), // as sent: order and case
      rawBody: '',
      body: null,
      receivedAt: Date.now(),
      answered: null, // what the fake chose to do: 'completion', 'stream', 'error', 'hang', ...
      status: null,
      rejected: null, // why the fake refused the request, if it did
      chunksSent: 0,
      writesBlocked: 0, // streamed writes the socket could not take at once (the peer not reading)
      bytesWritten: 0, // streamed bytes handed to the socket
      contentSent: '',
      finished: false, // the fake wrote its whole answer
      closed: false,
      closedBeforeFinish: false,
      closedAt: null,
    };
    requests.push(rec);
    const markClosed = () => {
      if (rec.closed) return;
      rec.closed = true;
      rec.closedAt = Date.now();
      rec.closedBeforeFinish = !rec.finished;
    };
    // 'close' on the response fires when it finished or when the connection
    // went away first: the latter is what a propagated client abort looks like.
    res.on('close', markClosed);

    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      rec.rawBody = Buffer.concat(chunks).toString('utf8');
      handle(req, res, rec).catch((err) => {
        rec.handlerError = String(err && err.stack ? err.stack : err);
        if (!res.headersSent) openaiError(res, 500, 'fake handler crashed', 'server_error', null);
        else res.destroy();
      });
    });
  });
  server.keepAliveTimeout = 5000;
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });

  /**
   * The legacy Completions API as vLLM and OpenAI serve it: {model, prompt,
   * max_tokens?, stream?, stream_options?} -> text_completion (or its chunks,
   * a usage-only chunk with "choices": [] when include_usage, then [DONE]).
   */
  function legacyCompletions(req, res, rec, reject) {
    let body;
    try {
      body = JSON.parse(rec.rawBody);
    } catch {
      return reject(400, 'We could not parse the JSON body of your request.', 'invalid_request_error', null);
    }
    rec.body = body;
    if (typeof body.model !== 'string' || !body.model) return reject(400, 'you must provide a model parameter', 'invalid_request_error', null);
    if (typeof body.prompt !== 'string' && !Array.isArray(body.prompt)) {
      return reject(400, "Missing required parameter: 'prompt'.", 'invalid_request_error', 'missing_required_parameter', 'prompt');
    }
    const b = behaviorFor(body.model);
    rec.behavior = b;
    const id = `cmpl-${hex(12)}`;
    const created = Math.floor(Date.now() / 1000);
    const usage = { prompt_tokens: b.promptTokens, completion_tokens: b.completionTokens, total_tokens: b.promptTokens + b.completionTokens };
    rec.status = 200;
    if (!body.stream) {
      const out = JSON.stringify({
        id,
        object: 'text_completion',
        created,
        model: body.model,
        choices: [{ text: b.text, index: 0, logprobs: null, finish_reason: b.finishReason }],
        usage,
      });
      rec.answered = 'completion';
      rec.sentBody = out;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(out) });
      res.end(out);
      rec.finished = true;
      return;
    }
    rec.answered = 'stream';
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
    const words = b.text.split(/(?= )/);
    for (const [i, w] of words.entries()) {
      const last = i === words.length - 1;
      res.write(`data: ${JSON.stringify({ id, object: 'text_completion', created, model: body.model, choices: [{ text: w, index: 0, logprobs: null, finish_reason: last ? b.finishReason : null }] })}\n\n`);
      rec.chunksSent++;
      rec.contentSent += w;
    }
    if (body.stream_options && body.stream_options.include_usage) {
      res.write(`data: ${JSON.stringify({ id, object: 'text_completion', created, model: body.model, choices: [], usage })}\n\n`);
    }
    res.end('data: [DONE]\n\n');
    rec.finished = true;
  }

  async function handle(req, res, rec) {
    const path = req.url.split('?')[0];
    const reject = (status, message, type, code, param) => {
      rec.rejected = `${status} ${code || type}: ${message}`;
      rec.answered = 'rejected';
      rec.status = status;
      openaiError(res, status, message, type, code, param);
      rec.finished = true;
    };

    // Authentication first, as OpenAI does.
    const auth = req.headers.authorization;
    if (!auth) {
      return reject(401, "You didn't provide an API key.", 'invalid_request_error', null);
    }
    if (auth !== `Bearer ${apiKey}`) {
      return reject(401, 'Incorrect API key provided.', 'invalid_request_error', 'invalid_api_key');
    }

    if (path === '/v1/models') {
      if (req.method !== 'GET') return reject(405, 'Method not allowed', 'invalid_request_error', null);
      const ids = knownModels ? [...knownModels] : ['upstream-gpt'];
      const body = JSON.stringify({
        object: 'list',
        data: ids.map((id) => ({ id, object: 'model', created: 1700000000, owned_by: 'system' })),
      });
      rec.answered = 'models';
      rec.status = 200;
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
      rec.finished = true;
      return;
    }

    if (path === '/v1/completions' && req.method === 'POST') return legacyCompletions(req, res, rec, reject);
    if (path !== '/v1/chat/completions') {
      return reject(404, `Invalid URL (${req.method} ${path})`, 'invalid_request_error', null);
    }
    if (req.method !== 'POST') {
      return reject(405, `Invalid method for URL (${req.method} ${path})`, 'invalid_request_error', null);
    }
    const ctype = String(req.headers['content-type'] || '');
    if (!/^application\/json\b/i.test(ctype)) {
      return reject(400, `Unsupported content type: '${ctype}'.`, 'invalid_request_error', null);
    }
    let body;
    try {
      body = JSON.parse(rec.rawBody);
    } catch {
      return reject(400, 'We could not parse the JSON body of your request.', 'invalid_request_error', null);
    }
    rec.body = body;
    if (!body || typeof body !== 'object' || Array.isArray(body)) {
      return reject(400, 'The body must be a JSON object.', 'invalid_request_error', null);
    }
    if (typeof body.model !== 'string' || !body.model) {
      return reject(400, 'you must provide a model parameter', 'invalid_request_error', null);
    }
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      return reject(400, "Missing required parameter: 'messages'.", 'invalid_request_error', 'missing_required_parameter', 'messages');
    }
    if (knownModels && !knownModels.has(body.model)) {
      return reject(404, `The model \`${body.model}\` does not exist or you do not have access to it.`, 'invalid_request_error', 'model_not_found');
    }

    const b = behaviorFor(body.model);
    rec.behavior = b;
    if (b.delayMs > 0) await later(b.delayMs);
    if (res.destroyed) return;

    if (b.fail === 'destroy') {
      rec.answered = 'destroy';
      req.socket.destroy();
      return;
    }
    if (b.fail === 'hang') {
      rec.answered = 'hang';
      return; // never answers; the socket stays open until the peer closes it or the fake stops
    }
    if (b.fail === 'status') {
      rec.answered = 'error';
      rec.status = b.status;
      const errBody = JSON.stringify(b.errorBody || ERROR_BODIES[b.status] || ERROR_BODIES[500]);
      rec.sentBody = errBody;
      const headers = {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(errBody),
        'x-request-id': `req_${hex(16)}`,
      };
      if (b.status === 429) headers['retry-after'] = '1';
      res.writeHead(b.status, headers);
      res.end(errBody);
      rec.finished = true;
      return;
    }

    const id = `chatcmpl-${hex(12)}`;
    const created = Math.floor(Date.now() / 1000);
    const fingerprint = 'fp_fake0001';

    if (!body.stream) {
      const completion = {
        id,
        object: 'chat.completion',
        created,
        model: body.model,
        choices: [
          {
            index: 0,
            message: { role: 'assistant', content: b.text, refusal: null, annotations: [] },
            logprobs: null,
            finish_reason: b.finishReason,
          },
        ],
        ...(b.noUsage ? {} : { usage: usageObject(b) }),
        service_tier: 'default',
        system_fingerprint: fingerprint,
      };
      const out = JSON.stringify(completion);
      rec.answered = 'completion';
      rec.status = 200;
      rec.sentBody = out;
      res.writeHead(200, {
        'content-type': 'application/json',
        'content-length': Buffer.byteLength(out),
        'x-request-id': `req_${hex(16)}`,
        'openai-processing-ms': '12',
      });
      if (b.fail === 'stall-body') {
        rec.answered = 'stall-body';
        res.write(out.slice(0, 20));
        return; // never finishes
      }
      res.end(out);
      rec.finished = true;
      rec.contentSent = b.text;
      return;
    }

    // Streaming, in OpenAI's chunk format.
    const includeUsage = !!(body.stream_options && body.stream_options.include_usage);
    rec.answered = 'stream';
    rec.status = 200;
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-request-id': `req_${hex(16)}`,
    });
    res.flushHeaders();
    const alive = () => !res.destroyed && !res.writableEnded && !rec.closed;
    const send = (obj) => {
      if (!alive()) return false;
      const line = `data: ${JSON.stringify(obj)}\n\n`;
      rec.bytesWritten += line.length;
      if (!res.write(line)) rec.writesBlocked++;
      return true;
    };
    // As a real server does: a full socket is waited on, not buffered without end.
    const drained = () =>
      new Promise((resolve) => {
        const done = () => {
          res.off('drain', done);
          res.off('close', done);
          resolve();
        };
        res.on('drain', done);
        res.on('close', done);
      });
    const chunk = (delta, finish) => {
      const c = {
        id,
        object: 'chat.completion.chunk',
        created,
        model: body.model,
        service_tier: 'default',
        system_fingerprint: fingerprint,
        choices: [{ index: 0, delta, logprobs: null, finish_reason: finish }],
      };
      if (includeUsage) c.usage = null;
      return c;
    };

    // Cuts the connection abruptly, after what was written has gone out (the
    // response corks writes until the next tick; destroy() would drop them).
    const cut = async () => {
      rec.answered = 'close-mid-stream';
      await later(30);
      req.socket.destroy();
    };

    if (!send(chunk({ role: 'assistant', content: '', refusal: null }, null))) return;
    if (b.fail === 'stall-body') {
      rec.answered = 'stall-body';
      return;
    }
    const pieces = splitText(b.text, b.chunks);
    for (let i = 0; i < pieces.length; i++) {
      if (b.fail === 'close-mid-stream' && i >= b.closeAfterChunks) return cut();
      if (b.chunkDelayMs > 0) await later(b.chunkDelayMs);
      if (!send(chunk({ content: pieces[i] }, null))) return;
      rec.chunksSent++;
      rec.contentSent += pieces[i];
      if (res.writableNeedDrain) await drained();
    }
    if (b.fail === 'close-mid-stream') return cut();
    if (!send(chunk({}, b.finishReason))) return;
    if (includeUsage && !b.noUsage) {
      const u = {
        id,
        object: 'chat.completion.chunk',
        created,
        model: body.model,
        service_tier: 'default',
        system_fingerprint: fingerprint,
        choices: [],
        usage: usageObject(b),
      };
      if (!send(u)) return;
    }
    if (!alive()) return;
    res.write('data: [DONE]\n\n');
    res.end();
    rec.finished = true;
  }

  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address();

  return {
    apiKey,
    port,
    url: `http://127.0.0.1:${port}`,
    baseURL: `http://127.0.0.1:${port}/v1`,
    requests,
    /** Requests to POST /v1/chat/completions only. */
    chatRequests() {
      return requests.filter((r) => r.path.split('?')[0] === '/v1/chat/completions');
    },
    /** The last chat request, or the last whose body satisfies `pred`. */
    lastChat(pred = () => true) {
      const list = this.chatRequests().filter((r) => r.body && pred(r.body, r));
      return list[list.length - 1];
    },
    setBehavior(b) {
      defaultBehavior = { ...DEFAULT_BEHAVIOR, ...b };
    },
    setModelBehavior(model, b) {
      byModel.set(model, b);
    },
    /** One-shot behaviours for the next requests, in order. */
    enqueue(...bs) {
      queue.push(...bs);
    },
    reset() {
      requests.length = 0;
      queue.length = 0;
    },
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(() => r()));
    },
  };
}

export { sleep };

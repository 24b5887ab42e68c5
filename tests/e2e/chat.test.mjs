// The OpenAI-compatible front door, driven by the official openai client:
// non-streaming and streaming chat, usage events, auth headers, models,
// health, readiness and metrics.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startFakeOpenAI } from './fake-openai.mjs';
import {
  requireBinary,
  startEnv,
  stopEnv,
  listKeys,
  usageList,
  keyEntryFor,
  request,
  chat,
  chatBody,
  parseMetrics,
  metricValue,
  waitFor,
  failureTracker,
  KEY_RE,
} from './harness.mjs';

const T = { timeout: 30000 };
const TEAM = 'team-chat';
const TEXT = 'The quick brown fox jumps over the lazy dog.';
const PROMPT = 37;
const COMPLETION = 11;
const CACHED = 5;

/** Checks one usage row against the contract; `exp` holds the exact expectations. */
function assertUsageRow(u, exp) {
  const ctx = JSON.stringify(u);
  for (const f of [
    'id', 'request_id', 'started_ms', 'ended_ms', 'unit', 'team', 'key_id', 'model', 'upstream_model',
    'provider', 'region', 'api', 'streamed', 'status', 'outcome', 'input_tokens', 'output_tokens',
    'cache_read_tokens', 'cache_write_tokens', 'images', 'token_source', 'price_version', 'latency_us', 'ttfb_us',
  ]) {
    assert.ok(Object.hasOwn(u, f), `usage row has ${f}: ${ctx}`);
  }
  for (const [k, v] of Object.entries(exp)) assert.deepEqual(u[k], v, `usage.${k} in ${ctx}`);
  for (const f of ['input_tokens', 'output_tokens', 'cache_read_tokens', 'cache_write_tokens', 'images', 'latency_us', 'ttfb_us']) {
    assert.ok(Number.isInteger(u[f]) && u[f] >= 0, `usage.${f} is a non-negative integer in ${ctx}`);
  }
  const costs = Object.keys(u).filter((k) => k.startsWith('cost_'));
  assert.ok(costs.length > 0, `usage row has cost_* fields: ${ctx}`);
  for (const k of costs) assert.ok(Number.isInteger(u[k]) && u[k] >= 0, `usage.${k} is an integer: ${ctx}`);
  assert.ok(Number.isInteger(u.started_ms) && u.started_ms > 1.6e12, `started_ms is epoch ms: ${ctx}`);
  assert.ok(u.ended_ms >= u.started_ms, `ended_ms >= started_ms: ${ctx}`);
  assert.ok(u.latency_us > 0, `latency_us > 0: ${ctx}`);
  assert.ok(u.ttfb_us <= u.latency_us, `ttfb_us <= latency_us: ${ctx}`);
}

test('bin/tollgate is built', () => requireBinary());

describe('chat completions through tollgate (openai client)', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake;
  let env;
  let key;
  let keyEntry;
  let client;
  let okCalls = 0;

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({
      models: ['upstream-gpt', 'upstream-gpt-2'],
      behavior: { text: TEXT, promptTokens: PROMPT, completionTokens: COMPLETION, cachedTokens: CACHED, chunks: 5 },
    });
    env = await startEnv({
      prefix: 'chat',
      fake,
      teams: [TEAM],
      configOverrides: {
        models: [
          { id: 'gpt-test', provider: 'fake', upstream_model: 'upstream-gpt' },
          { id: 'gpt-test-2', provider: 'fake', upstream_model: 'upstream-gpt-2' },
        ],
      },
    });
    key = env.keys[TEAM];
    assert.match(key, KEY_RE);
    keyEntry = keyEntryFor(await listKeys(env.configFile), key);
    client = new OpenAI({ baseURL: env.gw.baseURL, apiKey: key, maxRetries: 0, timeout: 10000 });
  }), { timeout: 30000 });

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    await fake?.close();
  }, { timeout: 15000 });

  test('keys list describes the key created for the team', T, async () => {
    const keys = await listKeys(env.configFile);
    const k = keys.find((x) => x.id === keyEntry.id);
    assert.ok(k, 'key in keys list');
    assert.equal(k.team, TEAM);
    assert.equal(k.name, `${TEAM}-key`);
    assert.ok(key.startsWith(k.prefix) && k.prefix.length < key.length, 'prefix is a proper prefix of the secret');
    assert.ok(Number.isInteger(k.created_ms) && k.created_ms > 1.6e12);
    assert.ok(!k.revoked_ms, 'not revoked');
    assert.ok(!k.expires_ms, 'no expiry');
    const blob = JSON.stringify(keys);
    assert.ok(!blob.includes(key), 'keys list never prints the secret');
  });

  test('non-streaming completion: text, usage, upstream rewrite and usage row', T, async () => {
    const before = fake.chatRequests().length;
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-test', messages: [{ role: 'user', content: 'Tell me about foxes.' }] })
      .withResponse();
    okCalls++;
    assert.equal(response.status, 200);
    const requestId = response.headers.get('x-request-id');
    assert.ok(requestId, 'x-request-id header');
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.choices[0].message.role, 'assistant');
    assert.equal(data.choices[0].message.content, TEXT);
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.equal(data.usage.prompt_tokens, PROMPT);
    assert.equal(data.usage.completion_tokens, COMPLETION);
    assert.equal(data.usage.total_tokens, PROMPT + COMPLETION);
    assert.equal(data.usage.prompt_tokens_details.cached_tokens, CACHED);

    // What the upstream received.
    const reqs = fake.chatRequests();
    assert.equal(reqs.length, before + 1, 'exactly one upstream call');
    const up = reqs[reqs.length - 1];
    assert.equal(up.rejected, null, `fake rejected the forwarded request: ${up.rejected}`);
    assert.equal(up.method, 'POST');
    assert.equal(up.body.model, 'upstream-gpt', 'model rewritten to upstream_model');
    assert.equal(up.headers.authorization, `Bearer ${fake.apiKey}`, 'upstream key from api_key_env');
    assert.deepEqual(up.body.messages, [{ role: 'user', content: 'Tell me about foxes.' }]);
    assert.ok(!up.body.stream, 'not streamed upstream');
    for (const [h, v] of Object.entries(up.headers)) {
      assert.ok(!String(v).includes(key), `tenant key leaked upstream in header ${h}`);
    }

    // The usage event is written before the response completes, so it is there now.
    const rows = (await usageList(env.configFile)).filter((u) => u.request_id === requestId);
    assert.equal(rows.length, 1, `exactly one usage row for ${requestId} right after the response`);
    assertUsageRow(rows[0], {
      team: TEAM,
      key_id: keyEntry.id,
      model: 'gpt-test',
      upstream_model: 'upstream-gpt',
      provider: 'fake',
      api: 'openai.chat',
      streamed: false,
      status: 200,
      outcome: 'ok',
      input_tokens: PROMPT - CACHED,
      output_tokens: COMPLETION,
      cache_read_tokens: CACHED,
      cache_write_tokens: 0,
      images: 0,
      token_source: 'provider',
    });
  });

  test('streaming without include_usage: text, no usage chunk, upstream asked for usage, exact usage row', T, async () => {
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'gpt-test', messages: [{ role: 'user', content: 'Stream please.' }], stream: true })
      .withResponse();
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') || '', /^text\/event-stream/);
    const requestId = response.headers.get('x-request-id');
    assert.ok(requestId, 'x-request-id header');
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    okCalls++;
    const text = chunks.map((c) => c.choices?.[0]?.delta?.content || '').join('');
    assert.equal(text, TEXT);
    for (const c of chunks) {
      assert.equal(c.object, 'chat.completion.chunk');
      assert.ok(!c.usage, `client did not ask for usage but got a chunk with usage: ${JSON.stringify(c)}`);
      assert.ok(Array.isArray(c.choices) && c.choices.length > 0, `usage-only chunk leaked: ${JSON.stringify(c)}`);
    }
    assert.ok(chunks.some((c) => c.choices[0].finish_reason === 'stop'), 'finish chunk seen');

    const up = fake.lastChat();
    assert.equal(up.body.stream, true);
    assert.equal(up.body.model, 'upstream-gpt');
    assert.equal(up.body.stream_options?.include_usage, true, 'gateway asked the upstream for usage');
    assert.equal(up.headers.authorization, `Bearer ${fake.apiKey}`);
    assert.equal(up.finished, true);

    const rows = (await usageList(env.configFile)).filter((u) => u.request_id === requestId);
    assert.equal(rows.length, 1, `exactly one usage row for ${requestId} right after [DONE]`);
    assertUsageRow(rows[0], {
      team: TEAM,
      key_id: keyEntry.id,
      model: 'gpt-test',
      upstream_model: 'upstream-gpt',
      api: 'openai.chat',
      streamed: true,
      status: 200,
      outcome: 'ok',
      input_tokens: PROMPT - CACHED,
      output_tokens: COMPLETION,
      cache_read_tokens: CACHED,
      token_source: 'provider',
    });
    assert.ok(rows[0].ttfb_us > 0, 'ttfb recorded for a stream');
  });

  // A chat call with the body exactly as given (a string, not re-serialized).
  const postRaw = (body) =>
    request(env.gw.port, {
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
      body,
    });

  test('the rewritten body is the client bytes with model and stream_options spliced in (numbers and escapes kept)', T, async () => {
    // Read without a tree: only the model value changes and, for a stream
    // that did not ask for usage, stream_options goes in first; the rest
    // reaches the upstream byte for byte.
    const tail = '"messages":[{"role":"user","content":"caf\\u00e9 \\"quoted\\"\\n"}],"temperature":0.50,"top_p":1e0,"stream":true}';
    const raw = `{"model":"gpt-test",${tail}`;
    const before = fake.chatRequests().length;
    const res = await postRaw(raw);
    assert.equal(res.status, 200, res.text);
    assert.ok(res.text.includes('data: [DONE]'), 'the stream ended');
    assert.ok(!res.text.includes('"usage":{'), 'the usage chunk it did not ask for is hidden');
    const reqs = fake.chatRequests();
    assert.equal(reqs.length, before + 1);
    const up = reqs[reqs.length - 1];
    assert.equal(up.rawBody, `{"stream_options":{"include_usage":true},"model":"upstream-gpt",${tail}`);
    // A plain call: the model alone changes.
    const plain = `{"temperature":0.50,  "model" : "gpt-test","messages":[{"role":"user","content":"x"}]}`;
    const res2 = await postRaw(plain);
    assert.equal(res2.status, 200, res2.text);
    assert.equal(fake.chatRequests().at(-1).rawBody, plain.replace('"gpt-test"', '"upstream-gpt"'));
    okCalls += 2;
  });

  test('a member the gateway reads, written twice, is refused (400) and never forwarded', T, async () => {
    // cJSON and the gateway's scan keep the first of two; most upstream
    // parsers keep the last: the route, the usage ask or the cap would differ.
    const msgs = '"messages":[{"role":"user","content":"x"}]';
    const cases = [
      [`{"model":"gpt-test","model":"gpt-other",${msgs}}`, 'model'],
      [`{"model":"gpt-test",${msgs},"stream":true,"stream_options":{"include_usage":true,"include_usage":false}}`, 'stream_options.include_usage'],
      [`{"model":"gpt-test",${msgs},"stream":true,"stream_options":{"include_usage":true},"stream_options":{}}`, 'stream_options'],
      [`{"model":"gpt-test",${msgs},"max_tokens":1,"max_tokens":4096}`, 'max_tokens'],
      [`{"model":"gpt-test",${msgs},"stream":false,"stream":true}`, 'stream'],
      [`{"mod\\u0065l":"gpt-test","model":"gpt-test",${msgs}}`, 'model'],
    ];
    const before = fake.chatRequests().length;
    for (const [body, name] of cases) {
      const res = await postRaw(body);
      assert.equal(res.status, 400, `${body} -> ${res.status} ${res.text}`);
      assert.equal(res.json?.error?.code, 'invalid_request', res.text);
      assert.ok(res.json.error.message.includes(`'${name}'`), res.text);
    }
    assert.equal(fake.chatRequests().length, before, 'none reached the upstream');
    const ok = await postRaw(`{"model":"gpt-test",${msgs},"temperature":1,"top_p":1}`);
    assert.equal(ok.status, 200, ok.text);
    okCalls++;
  });

  test('an upstream that does not count: the call is billed by estimate and marked so', T, async () => {
    fake.enqueue({ noUsage: true }, { noUsage: true });
    const plain = await chat(env.gw.port, key, chatBody('gpt-test'));
    assert.equal(plain.status, 200, plain.text);
    assert.equal(plain.json.usage, undefined, 'the fake sent no usage');
    const streamed = await chat(env.gw.port, key, chatBody('gpt-test', { stream: true }));
    assert.equal(streamed.status, 200);
    assert.ok(streamed.text.includes('data: [DONE]'));
    okCalls += 2;
    for (const [res, streamedFlag] of [[plain, false], [streamed, true]]) {
      const rid = res.headers['x-request-id'];
      const row = await waitFor(async () => (await usageList(env.configFile)).find((u) => u.request_id === rid), {
        timeoutMs: 3000,
        message: `usage row for ${rid}`,
      });
      assert.equal(row.outcome, 'ok');
      assert.equal(row.streamed, streamedFlag);
      assert.equal(row.token_source, 'estimated', JSON.stringify(row));
      assert.ok(row.input_tokens > 0, `an input estimate: ${JSON.stringify(row)}`);
      assert.ok(row.output_tokens > 0, `an output estimate: ${JSON.stringify(row)}`);
    }
  });

  test('streaming with include_usage: the usage chunk passes through', T, async () => {
    const { data: stream, response } = await client.chat.completions
      .create({
        model: 'gpt-test',
        messages: [{ role: 'user', content: 'Stream with usage.' }],
        stream: true,
        stream_options: { include_usage: true },
      })
      .withResponse();
    const requestId = response.headers.get('x-request-id');
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    okCalls++;
    const text = chunks.map((c) => c.choices?.[0]?.delta?.content || '').join('');
    assert.equal(text, TEXT);
    const usageChunks = chunks.filter((c) => c.usage);
    assert.equal(usageChunks.length, 1, 'one usage chunk');
    const u = usageChunks[0];
    assert.deepEqual(u.choices, []);
    assert.equal(u.usage.prompt_tokens, PROMPT);
    assert.equal(u.usage.completion_tokens, COMPLETION);
    assert.equal(u.usage.total_tokens, PROMPT + COMPLETION);
    assert.equal(u.usage.prompt_tokens_details.cached_tokens, CACHED);
    assert.equal(chunks[chunks.length - 1], u, 'usage chunk is the last one');
    assert.equal(fake.lastChat().body.stream_options?.include_usage, true);

    const rows = (await usageList(env.configFile)).filter((r) => r.request_id === requestId);
    assert.equal(rows.length, 1);
    assertUsageRow(rows[0], {
      team: TEAM,
      key_id: keyEntry.id,
      streamed: true,
      status: 200,
      outcome: 'ok',
      input_tokens: PROMPT - CACHED,
      output_tokens: COMPLETION,
      cache_read_tokens: CACHED,
      token_source: 'provider',
    });
  });

  test('raw SSE from the gateway: data: lines, ends with [DONE], no usage-only chunk', T, async () => {
    const res = await chat(env.gw.port, key, chatBody('gpt-test', { stream: true }));
    okCalls++;
    assert.equal(res.status, 200);
    assert.ok(res.headers['x-request-id']);
    const lines = res.text.split('\n').filter((l) => l.trim());
    const dataLines = lines.filter((l) => l.startsWith('data:'));
    assert.ok(dataLines.length >= 3, res.text);
    assert.match(dataLines[dataLines.length - 1], /^data: ?\[DONE\]$/);
    assert.ok(!/"choices":\s*\[\s*\]/.test(res.text), 'no usage-only chunk in the raw stream');
  });

  test('x-api-key header authenticates like Bearer', T, async () => {
    const res = await chat(env.gw.port, null, chatBody('gpt-test'), { headers: { 'x-api-key': key } });
    okCalls++;
    assert.equal(res.status, 200, res.text);
    assert.equal(res.json.choices[0].message.content, TEXT);
    const rid = res.headers['x-request-id'];
    assert.ok(rid);
    const row = (await usageList(env.configFile)).find((u) => u.request_id === rid);
    assert.ok(row, 'usage row for the x-api-key call');
    assert.equal(row.key_id, keyEntry.id);
    assert.equal(row.team, TEAM);
  });

  test('a second model routes to its own upstream model', T, async () => {
    const c = await client.chat.completions.create({ model: 'gpt-test-2', messages: [{ role: 'user', content: 'x' }] });
    okCalls++;
    assert.equal(c.choices[0].message.content, TEXT);
    assert.equal(fake.lastChat().body.model, 'upstream-gpt-2');
  });

  test('legacy /v1/completions: plain and streamed, usage from the upstream, rows recorded', T, async () => {
    const c = await client.completions.create({ model: 'gpt-test', prompt: 'Say this is a test', max_tokens: 7 });
    assert.equal(c.object, 'text_completion');
    assert.equal(typeof c.choices[0].text, 'string');
    const up = fake.requests.filter((r) => r.path === '/v1/completions').pop();
    assert.equal(up.body.model, 'upstream-gpt', 'the route rewrote the model');
    assert.equal(c.usage.prompt_tokens, up.behavior.promptTokens);
    const stream = await client.completions.create({ model: 'gpt-test', prompt: 'Stream it', stream: true });
    let text = '';
    let sawUsage = false;
    for await (const ch of stream) {
      if (ch.choices[0]) text += ch.choices[0].text;
      if (ch.usage) sawUsage = true;
    }
    assert.ok(text.length > 0);
    assert.equal(sawUsage, false, 'the usage chunk it did not ask for is dropped');
    const sup = fake.requests.filter((r) => r.path === '/v1/completions').pop();
    assert.equal(sup.body.stream_options.include_usage, true, 'the upstream was asked for its counts');
    const rows = (await usageList(env.configFile)).filter((u) => u.api === 'openai.completions');
    assert.equal(rows.length, 2);
    assert.ok(rows.every((r) => r.token_source === 'provider' && r.output_tokens > 0));
    okCalls += 2;
  });

  test('GET /v1/models via client.models.list()', T, async () => {
    const page = await client.models.list();
    const ids = page.data.map((m) => m.id).sort();
    assert.deepEqual(ids, ['gpt-test', 'gpt-test-2']);
    const m = page.data.find((x) => x.id === 'gpt-test');
    assert.equal(m.object, 'model');
    assert.equal(m.owned_by, 'fake');
    assert.ok(Number.isInteger(m.created), 'created is an integer');
    const raw = await request(env.gw.port, { path: '/v1/models', headers: { authorization: `Bearer ${key}` } });
    assert.equal(raw.status, 200);
    assert.equal(raw.json.object, 'list');
    assert.ok(raw.headers['x-request-id']);
  });

  test('GET /healthz and /readyz', T, async () => {
    const h = await request(env.gw.port, { path: '/healthz' });
    assert.equal(h.status, 200);
    assert.deepEqual(h.json, { status: 'ok' });
    assert.ok(h.headers['x-request-id']);
    const r = await request(env.gw.port, { path: '/readyz' });
    assert.equal(r.status, 200, r.text);
  });

  test('GET /metrics: request counter, token counters matching the ledger, latency histogram', T, async () => {
    const rows = (await usageList(env.configFile)).filter((u) => u.team === TEAM && u.model === 'gpt-test');
    const inSum = rows.reduce((a, u) => a + u.input_tokens, 0);
    const outSum = rows.reduce((a, u) => a + u.output_tokens, 0);
    assert.ok(inSum > 0 && outSum > 0);
    // Metrics may be updated just after the response is sent: poll briefly.
    const samples = await waitFor(
      async () => {
        const m = await request(env.gw.port, { path: '/metrics' });
        if (m.status !== 200) return null;
        const s = parseMetrics(m.text);
        const i = metricValue(s, 'tollgate_tokens_total', { model: 'gpt-test', team: TEAM, type: 'input' });
        const o = metricValue(s, 'tollgate_tokens_total', { model: 'gpt-test', team: TEAM, type: 'output' });
        return i === inSum && o === outSum ? s : null;
      },
      { timeoutMs: 3000, message: `metrics tokens input=${inSum} output=${outSum} for ${TEAM}/gpt-test` },
    );
    const m = await request(env.gw.port, { path: '/metrics' });
    assert.match(m.headers['content-type'] || '', /^text\/plain/);
    const reqs = metricValue(samples, 'tollgate_http_requests_total', { route: '/v1/chat/completions', status: '200' });
    assert.ok(reqs >= okCalls, `tollgate_http_requests_total{route=chat,status=200} = ${reqs} >= ${okCalls}`);
    const buckets = samples.filter((s) => s.name === 'tollgate_upstream_latency_seconds_bucket');
    assert.ok(buckets.length > 0, 'upstream latency histogram buckets');
    const inf = buckets.filter((b) => b.labels.le === '+Inf').reduce((a, b) => a + b.value, 0);
    assert.ok(inf >= okCalls, `+Inf bucket counts ${inf} >= ${okCalls} upstream calls`);
  });

  test('SIGTERM stops the gateway gracefully with exit code 0', T, async () => {
    const r = await env.gw.stop();
    assert.equal(r.forced, false, 'exited on SIGTERM without SIGKILL');
    assert.equal(r.signal, null);
    assert.equal(r.code, 0);
  });
});

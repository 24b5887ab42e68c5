// The Bedrock-runtime front door (/model/{id}/...) against the fake Bedrock:
// every operation through a configured route and through the exposed
// catalogue (catalogue id, ARN, cross-region profile), byte-exact frames,
// usage rows equal to what the fake reported (cache tokens apart), every
// upstream error in AWS's shape, mid-stream exceptions, cut streams,
// abandoned streams, bearer auth upstream, the AWS SDK through tollgate,
// /v1/models with the catalogue, and the door's own errors.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import {
  BedrockRuntimeClient,
  ConverseCommand,
  ConverseStreamCommand,
  InvokeModelCommand,
  ThrottlingException,
} from '@aws-sdk/client-bedrock-runtime';
import { startFakeBedrock, staticCreds, BEDROCK_ERRORS, DEFAULT_BEDROCK_MODEL } from './fake-aws.mjs';
import {
  requireBinary,
  makeTmpDir,
  writeConfig,
  createKey,
  startGateway,
  stopEnv,
  request,
  requestBytes,
  usageList,
  waitFor,
  waitForUsage,
  failureTracker,
  sleep,
} from './harness.mjs';

const T = { timeout: 60000 };
const TEAM = 'team-br';
const CLAUDE = DEFAULT_BEDROCK_MODEL;
const ARN = 'arn:aws:bedrock:us-east-1::foundation-model/anthropic.claude-3-haiku-20240307-v1:0';
const PROFILE = 'us.anthropic.claude-3-5-sonnet-20240620-v1:0';
const codec = new EventStreamCodec(toUtf8, fromUtf8);

/** Decodes every frame of an event-stream body (CRCs checked); throws on trailing bytes. */
function frames(buf) {
  const out = [];
  let off = 0;
  while (off < buf.length) {
    assert.ok(buf.length - off >= 16, `a whole frame at ${off} of ${buf.length}`);
    const total = buf.readUInt32BE(off);
    assert.ok(off + total <= buf.length, `frame at ${off} is whole`);
    const m = codec.decode(buf.subarray(off, off + total));
    const h = {};
    for (const [k, v] of Object.entries(m.headers)) h[k] = v.value;
    let json;
    try {
      json = JSON.parse(Buffer.from(m.body).toString('utf8'));
    } catch {}
    out.push({ headers: h, json, raw: buf.subarray(off, off + total) });
    off += total;
  }
  return out;
}

/** Text generated in a Bedrock stream: Converse deltas or Anthropic chunks. */
function streamText(fs) {
  let t = '';
  for (const f of fs) {
    if (f.headers[':event-type'] === 'contentBlockDelta') t += f.json.delta.text || '';
    if (f.headers[':event-type'] === 'chunk') {
      const inner = JSON.parse(Buffer.from(f.json.bytes, 'base64').toString('utf8'));
      if (inner.type === 'content_block_delta') t += inner.delta.text || '';
    }
  }
  return t;
}

const anthropicBody = (text = 'Say hello to the world', extra = {}) => ({
  anthropic_version: 'bedrock-2023-05-31',
  max_tokens: 20,
  messages: [{ role: 'user', content: text }],
  ...extra,
});
const converseBody = (text = 'Say hello to the world', extra = {}) => ({
  messages: [{ role: 'user', content: [{ text }] }],
  inferenceConfig: { maxTokens: 16 },
  ...extra,
});

describe('Bedrock runtime through tollgate', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  const registry = new Map();
  let fake;
  let env;
  let key;
  let port;

  function post(p, body, { headers = {}, onResponse, noKey = false } = {}) {
    return requestBytes(port, {
      path: p,
      body,
      onResponse,
      headers: {
        'content-type': 'application/json',
        ...(noKey ? {} : { authorization: `Bearer ${key}` }),
        ...headers,
      },
    });
  }

  /** The fake's record of the call with this request body marker. */
  function fakeCall(marker) {
    const hits = fake.requests.filter((r) => r.rawBody.includes(marker));
    assert.equal(hits.length, 1, `one fake call carries ${marker}: ${JSON.stringify(fake.requests.map((r) => [r.op, r.modelId, r.rejected]))}`);
    return hits[0];
  }

  function assertRow(row, exp) {
    for (const [k, v] of Object.entries(exp)) assert.deepEqual(row[k], v, `usage.${k} in ${JSON.stringify(row)}`);
  }

  function assertUsageEqualsFake(row, rec) {
    assert.ok(rec.usage, `the fake reported usage: ${JSON.stringify(rec)}`);
    assertRow(row, {
      input_tokens: rec.usage.input,
      output_tokens: rec.usage.output,
      cache_read_tokens: rec.usage.cacheRead,
      cache_write_tokens: rec.usage.cacheWrite,
      token_source: 'provider',
      outcome: 'ok',
    });
  }

  before(tracker.guard(async () => {
    requireBinary();
    const creds = staticCreds(registry);
    fake = await startFakeBedrock({ registry, bearerTokens: new Set(['bedrock-api-key-1']) });
    const dir = makeTmpDir('bedrock');
    const errRoutes = Object.keys(BEDROCK_ERRORS).map((n) => ({ id: `err-${n}`, provider: 'br', upstream_model: `fail.${n}` }));
    const config = {
      listen: '127.0.0.1:0',
      workers: 2,
      store: { path: path.join(dir, 't.db') },
      http: { max_body_bytes: 1048576, send_timeout_ms: 5000, shutdown_timeout_ms: 3000 },
      providers: [
        {
          name: 'br',
          type: 'bedrock',
          region: 'us-east-1',
          endpoint: fake.url,
          control_endpoint: fake.url,
          auth: 'sigv4',
          credentials: { access_key_id_env: 'TG_T_AK', secret_access_key_env: 'TG_T_SK' },
          catalog: { expose: true, refresh_s: 3600 },
          connect_timeout_ms: 2000,
          first_byte_timeout_ms: 10000,
          total_timeout_ms: 30000,
        },
        {
          name: 'br-key',
          type: 'bedrock',
          region: 'us-east-1',
          endpoint: fake.url,
          auth: 'bearer',
          bearer_token_env: 'TG_T_BR_TOKEN',
          catalog: { refresh_s: 0 },
        },
        { name: 'oai', type: 'openai', base_url: 'http://127.0.0.1:9/v1' },
      ],
      models: [
        { id: 'claude', provider: 'br', upstream_model: CLAUDE },
        { id: 'nova', provider: 'br', upstream_model: 'amazon.nova-pro-v1:0' },
        { id: 'claude-key', provider: 'br-key', upstream_model: CLAUDE },
        { id: 'mid-stream', provider: 'br', upstream_model: `midstream.modelStreamErrorException.${CLAUDE}` },
        { id: 'cut-stream', provider: 'br', upstream_model: `cut.2.${CLAUDE}` },
        { id: 'drip-stream', provider: 'br', upstream_model: `drip.200.50.${CLAUDE}` },
        { id: 'gpt', provider: 'oai' },
        ...errRoutes,
      ],
    };
    const configFile = writeConfig(dir, config);
    const genv = { TG_T_AK: creds.accessKeyId, TG_T_SK: creds.secretAccessKey, TG_T_BR_TOKEN: 'bedrock-api-key-1' };
    key = await createKey(configFile, TEAM);
    const gw = await startGateway(configFile, { env: genv });
    env = { dir, config, configFile, gw };
    port = gw.port;
  }));

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    if (fake) await fake.close();
  });

  test('InvokeModel: body passed through, usage from the headers (cache tokens apart)', T, async () => {
    const body = anthropicBody('marker-inv-1 tell me something', {
      system: [{ type: 'text', text: 'be brief', cache_control: { type: 'ephemeral' } }],
    });
    const r = await post('/model/claude/invoke', body);
    assert.equal(r.status, 200, r.text);
    const rec = fakeCall('marker-inv-1');
    assert.equal(rec.op, 'InvokeModel');
    assert.equal(rec.modelId, CLAUDE);
    assert.equal(rec.auth, 'sigv4');
    assert.equal(rec.rawBody, JSON.stringify(body), 'the request body went upstream unchanged');
    assert.equal(r.json.content[0].text, rec.textSent);
    assert.equal(r.headers['x-amzn-bedrock-input-token-count'], String(rec.usage.input));
    assert.equal(r.headers['x-amzn-bedrock-output-token-count'], String(rec.usage.output));
    assert.ok(r.headers['x-amzn-requestid']);
    assert.ok(rec.usage.cacheRead > 0 && rec.usage.cacheWrite > 0, 'the fake counted cache tokens');
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertUsageEqualsFake(row, rec);
    assertRow(row, {
      api: 'bedrock.invoke', model: 'claude', upstream_model: CLAUDE, provider: 'br', region: 'us-east-1',
      streamed: false, status: 200, team: TEAM,
    });
  });

  test('InvokeModelWithResponseStream: frames forwarded intact, usage from invocationMetrics', T, async () => {
    const r = await post('/model/claude/invoke-with-response-stream', anthropicBody('marker-inv-2 stream please'), {
      headers: { accept: 'application/vnd.amazon.eventstream' },
    });
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers['content-type'], /vnd\.amazon\.eventstream/);
    const fs = frames(r.buf);
    const rec = fakeCall('marker-inv-2');
    assert.ok(fs.length >= 4, `frames: ${fs.length}`);
    assert.ok(fs.every((f) => f.headers[':event-type'] === 'chunk'));
    assert.equal(streamText(fs), rec.textSent);
    const last = JSON.parse(Buffer.from(fs[fs.length - 1].json.bytes, 'base64').toString('utf8'));
    assert.equal(last['amazon-bedrock-invocationMetrics'].inputTokenCount, rec.usage.input, 'the usage frame reached the client');
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertUsageEqualsFake(row, rec);
    assertRow(row, { api: 'bedrock.invoke-stream', streamed: true, status: 200 });
  });

  test('Converse: usage from the body, cache tokens kept apart', T, async () => {
    const body = converseBody('marker-conv-1 hi there', {
      system: [{ text: 'You are terse.' }, { cachePoint: { type: 'default' } }],
    });
    const r = await post('/model/claude/converse', body);
    assert.equal(r.status, 200, r.text);
    const rec = fakeCall('marker-conv-1');
    assert.equal(rec.op, 'Converse');
    assert.equal(r.json.output.message.content[0].text, rec.textSent);
    assert.equal(r.json.usage.inputTokens, rec.usage.input);
    assert.ok(rec.usage.cacheRead > 0, 'cache read counted by the fake');
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertUsageEqualsFake(row, rec);
    assertRow(row, { api: 'bedrock.converse', streamed: false });
  });

  test('ConverseStream: every event forwarded, the metadata frame last, usage exact', T, async () => {
    const r = await post('/model/nova/converse-stream', converseBody('marker-conv-2 stream it', {
      messages: [{ role: 'user', content: [{ text: 'marker-conv-2 stream it' }, { cachePoint: { type: 'default' } }] }],
    }));
    assert.equal(r.status, 200, r.text);
    const fs = frames(r.buf);
    const types = fs.map((f) => f.headers[':event-type']);
    assert.equal(types[0], 'messageStart');
    assert.deepEqual(types.slice(-3), ['contentBlockStop', 'messageStop', 'metadata']);
    const rec = fakeCall('marker-conv-2');
    assert.equal(streamText(fs), rec.textSent);
    assert.equal(fs[fs.length - 1].json.usage.outputTokens, rec.usage.output);
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertUsageEqualsFake(row, rec);
    assertRow(row, { api: 'bedrock.converse-stream', model: 'nova', upstream_model: 'amazon.nova-pro-v1:0', streamed: true });
  });

  test('/v1/models lists the routes and, once loaded, the exposed catalogue', T, async () => {
    const models = await waitFor(async () => {
      const r = await request(port, { path: '/v1/models', headers: { authorization: `Bearer ${key}` } });
      const ids = (r.json?.data || []).map((m) => m.id);
      return ids.includes(PROFILE) && ids.includes('amazon.nova-lite-v1:0') ? r.json.data : null;
    }, { timeoutMs: 10000, intervalMs: 200, message: 'the catalogue in /v1/models' });
    const byId = Object.fromEntries(models.map((m) => [m.id, m]));
    for (const id of ['claude', 'nova', 'claude-key', 'gpt']) assert.ok(byId[id], `route ${id} listed`);
    assert.equal(byId[PROFILE].owned_by, 'br');
    assert.equal(byId['us.meta.llama3-2-11b-instruct-v1:0'].owned_by, 'br', 'every profile page was fetched');
    const profilePages = fake.requests.filter((r) => r.op === 'ListInferenceProfiles');
    assert.ok(profilePages.length >= 3, 'ListInferenceProfiles was paged through');
  });

  test('exposed catalogue: a catalogue id, an ARN and a cross-region profile, each op', T, async () => {
    await waitFor(async () => {
      const r = await request(port, { path: '/v1/models', headers: { authorization: `Bearer ${key}` } });
      return (r.json?.data || []).some((m) => m.id === PROFILE);
    }, { timeoutMs: 10000, intervalMs: 200, message: 'catalogue loaded' });
    const cases = [
      ['amazon.nova-lite-v1:0', 'converse', converseBody('marker-cat-1 hi')],
      [ARN, 'invoke', anthropicBody('marker-cat-2 hi')],
      [PROFILE, 'converse-stream', converseBody('marker-cat-3 hi')],
      [PROFILE, 'invoke-with-response-stream', anthropicBody('marker-cat-4 hi')],
    ];
    for (const [id, op, body] of cases) {
      const marker = JSON.stringify(body).match(/marker-cat-\d/)[0];
      const r = await post(`/model/${encodeURIComponent(id)}/${op}`, body);
      assert.equal(r.status, 200, `${id} ${op}: ${r.text}`);
      if (op.includes('stream')) frames(r.buf);
      const rec = fakeCall(marker);
      assert.equal(rec.modelId, id, 'the id went upstream as is');
      const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
      assertUsageEqualsFake(row, rec);
      assertRow(row, { model: id.slice(0, 127), upstream_model: id.slice(0, 159), provider: 'br' });
    }
  });

  test('unknown model: 404 in AWS shape; not in the catalogue, not routed', T, async () => {
    const r = await post('/model/nobody.model-v1/converse', converseBody());
    assert.equal(r.status, 404);
    assert.equal(r.headers['x-amzn-errortype'], 'ResourceNotFoundException');
    assert.equal(r.json.code, 'model_not_found');
    assert.equal(typeof r.json.message, 'string');
    assert.ok(r.headers['x-request-id']);
    const bad = await post('/model/claude/explode', converseBody());
    assert.equal(bad.status, 400);
    assert.equal(bad.headers['x-amzn-errortype'], 'ValidationException');
    const other = await post('/model/gpt/converse', converseBody());
    assert.equal(other.status, 400);
    assert.equal(other.json.code, 'unsupported_route');
  });

  test('no key / bad key: 401 in AWS shape, nothing forwarded', T, async () => {
    const before = fake.requests.length;
    const r = await post('/model/claude/converse', converseBody(), { noKey: true });
    assert.equal(r.status, 401);
    assert.equal(r.headers['x-amzn-errortype'], 'AccessDeniedException');
    assert.equal(r.json.code, 'missing_api_key');
    const r2 = await post('/model/claude/converse', converseBody(), { headers: { authorization: 'Bearer tg_nope' } });
    assert.equal(r2.status, 401);
    assert.equal(r2.json.code, 'invalid_api_key');
    assert.equal(fake.requests.length, before);
  });

  test('/v1/chat/completions for a Bedrock route: Converse underneath, OpenAI shapes on top', T, async () => {
    const r = await request(port, {
      method: 'POST', path: '/v1/chat/completions',
      headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
      body: { model: 'claude', messages: [{ role: 'system', content: 'be brief' }, { role: 'user', content: 'hi' }], max_tokens: 40 },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.object, 'chat.completion');
    assert.equal(r.json.choices[0].message.role, 'assistant');
    const up = fake.last('Converse');
    assert.deepEqual(up.body.system, [{ text: 'be brief' }]);
    assert.equal(up.body.inferenceConfig.maxTokens, 40);
    assert.equal(r.json.usage.prompt_tokens, up.usage.input + up.usage.cacheRead + up.usage.cacheWrite);
    assert.equal(r.json.usage.completion_tokens, up.usage.output);
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assert.equal(row.api, 'openai.chat');
    assert.equal(row.output_tokens, up.usage.output);
    assert.ok(r.headers['x-tollgate-cost-usd']);
  });

  test('every upstream error: AWS status, x-amzn-ErrorType, message; usage row upstream_error', T, async () => {
    for (const [name, [status, message]] of Object.entries(BEDROCK_ERRORS)) {
      for (const op of ['converse', 'invoke-with-response-stream']) {
        const body = op === 'converse' ? converseBody(`marker-err-${name}-${op}`) : anthropicBody(`marker-err-${name}-${op}`);
        const r = await post(`/model/err-${name}/${op}`, body);
        assert.equal(r.status, status, `${name} ${op}: ${r.text}`);
        assert.equal(r.headers['x-amzn-errortype'], name, `${name} error type`);
        assert.equal(r.json.message, message, `${name} message`);
        assert.equal(r.json.code, undefined, 'an upstream error carries no tollgate code');
        assert.doesNotMatch(r.text, /coral|trace|stack/i);
        const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
        assertRow(row, { outcome: 'upstream_error', status, input_tokens: 0, output_tokens: 0, model: `err-${name}` });
      }
    }
  });

  test('mid-stream exception: the client gets the exception frame and a clean end; row interrupted', T, async () => {
    for (const [op, body] of [
      ['converse-stream', converseBody('marker-mid-1 go')],
      ['invoke-with-response-stream', anthropicBody('marker-mid-2 go')],
    ]) {
      const r = await post(`/model/mid-stream/${op}`, body);
      assert.equal(r.status, 200);
      assert.ok(r.complete, 'the response ended cleanly');
      const fs = frames(r.buf);
      const last = fs[fs.length - 1];
      assert.equal(last.headers[':message-type'], 'exception');
      assert.equal(last.headers[':exception-type'], 'modelStreamErrorException');
      const rec = fakeCall(op === 'converse-stream' ? 'marker-mid-1' : 'marker-mid-2');
      assert.equal(streamText(fs), rec.textSent);
      const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
      assertRow(row, { outcome: 'interrupted', status: 200, token_source: 'estimated' });
      assert.equal(row.input_tokens, Math.ceil(Buffer.byteLength(JSON.stringify(body)) / 4));
      assert.ok(row.output_tokens > 0, 'output estimated from the text seen');
    }
  });

  test('a stream the upstream cuts: what arrived is forwarded, the response ends; row interrupted', T, async () => {
    const r = await post('/model/cut-stream/converse-stream', converseBody('marker-cut-1 go'));
    assert.equal(r.status, 200);
    const fs = frames(r.buf);
    const rec = fakeCall('marker-cut-1');
    assert.equal(streamText(fs), rec.textSent);
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertRow(row, { outcome: 'interrupted', token_source: 'estimated' });
  });

  test('client abandons a dripping stream: upstream cancelled, row abandoned', T, async () => {
    let reqId;
    await post('/model/drip-stream/converse-stream', converseBody('marker-drip-1 go'), {
      onResponse: (res, req, chunks) => {
        reqId = res.headers['x-request-id'];
        let got = 0;
        res.on('data', (c) => {
          got += c.length;
          if (got > 300) res.destroy();
        });
      },
    }).catch(() => {});
    const rec = fakeCall('marker-drip-1');
    await waitFor(() => rec.closed, { timeoutMs: 5000, message: 'the fake sees its client go' });
    assert.ok(rec.closedBeforeFinish, 'upstream cancelled before it finished');
    const row = await waitForUsage(env.configFile, reqId);
    assertRow(row, { outcome: 'abandoned', status: 200, token_source: 'estimated', api: 'bedrock.converse-stream' });
    assert.ok(row.output_tokens > 0 && row.output_tokens < 200);
  });

  test('bearer auth upstream (Bedrock API key)', T, async () => {
    const r = await post('/model/claude-key/converse', converseBody('marker-bearer-1 hi'));
    assert.equal(r.status, 200, r.text);
    const rec = fakeCall('marker-bearer-1');
    assert.equal(rec.auth, 'bearer');
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertUsageEqualsFake(row, rec);
    assertRow(row, { provider: 'br-key' });
  });

  test('@aws-sdk/client-bedrock-runtime through tollgate (bearer = the tollgate key)', T, async () => {
    const client = new BedrockRuntimeClient({
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${port}`,
      token: { token: key },
      authSchemePreference: ['httpBearerAuth'],
      requestHandler: new NodeHttpHandler(),
      maxAttempts: 1,
    });
    try {
      const out = await client.send(new ConverseCommand({
        modelId: 'claude',
        messages: [{ role: 'user', content: [{ text: 'marker-sdk-1 hello' }] }],
        inferenceConfig: { maxTokens: 9 },
      }));
      const rec = fakeCall('marker-sdk-1');
      assert.equal(out.output.message.content[0].text, rec.textSent);
      assert.equal(out.usage.outputTokens, 9);

      const st = await client.send(new ConverseStreamCommand({
        modelId: PROFILE,
        messages: [{ role: 'user', content: [{ text: 'marker-sdk-2 hello' }] }],
      }));
      let text = '';
      let usage;
      for await (const ev of st.stream) {
        if (ev.contentBlockDelta) text += ev.contentBlockDelta.delta.text;
        if (ev.metadata) usage = ev.metadata.usage;
      }
      const rec2 = fakeCall('marker-sdk-2');
      assert.equal(text, rec2.textSent);
      assert.equal(usage.outputTokens, rec2.usage.output);

      const inv = await client.send(new InvokeModelCommand({
        modelId: ARN,
        contentType: 'application/json',
        body: JSON.stringify(anthropicBody('marker-sdk-3 hi')),
      }));
      const payload = JSON.parse(Buffer.from(inv.body).toString('utf8'));
      assert.equal(payload.content[0].text, fakeCall('marker-sdk-3').textSent);

      await assert.rejects(
        client.send(new ConverseCommand({ modelId: 'err-ThrottlingException', messages: [{ role: 'user', content: [{ text: 'x' }] }] })),
        (e) => e instanceof ThrottlingException && e.$metadata.httpStatusCode === 429,
      );
      const rows = await usageList(env.configFile);
      assert.ok(rows.some((u) => u.model === PROFILE && u.api === 'bedrock.converse-stream' && u.outcome === 'ok'));
    } finally {
      client.destroy();
    }
  });

  test('metrics count the door', T, async () => {
    const r = await request(port, { path: '/metrics' });
    assert.match(r.text, /tollgate_http_requests_total\{route="\/model\/\{id\}",status="200"\} \d+/);
    await sleep(1);
  });
});

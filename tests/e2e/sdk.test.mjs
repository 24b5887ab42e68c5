// Unmodified AWS SDK clients through tollgate: @aws-sdk/client-bedrock-runtime
// (pinned) with only its endpoint and credentials changed. SigV4 from the
// client: the access key id is a tollgate key id, the secret its secret
// (derived from keys.derive_secret_env, so the gateway can verify it while it
// stores only a hash); Bearer (how the SDK sends Bedrock API keys) as well.
// InvokeModel, InvokeModelWithResponseStream, Converse and ConverseStream
// reach the fake Bedrock, signed there with the gateway's own credentials.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  BedrockRuntimeClient,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
  ConverseCommand,
  ConverseStreamCommand,
} from '@aws-sdk/client-bedrock-runtime';
import { NodeHttpHandler, NodeHttp2Handler } from '@smithy/node-http-handler';
import OpenAI from 'openai';
import { ChatBedrockConverse } from '@langchain/aws';
import { HumanMessage } from '@langchain/core/messages';
import { startFakeBedrock, staticCreds, fakeEmbedding, toolUseIdFor } from './fake-aws.mjs';
import {
  requireBinary,
  makeTmpDir,
  writeConfig,
  startGateway,
  stopEnv,
  request,
  waitFor,
  failureTracker,
  usageList,
  runCli,
} from './harness.mjs';

const T = { timeout: 60000 };
const HAIKU = 'anthropic.claude-3-haiku-20240307-v1:0';
const DERIVE = 'a-derivation-secret-of-at-least-32-bytes-0123456789';

describe('AWS SDK clients through tollgate', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let br, env, gw, port, admin, derived, random;

  const adminCall = (method, p, body) =>
    request(admin, { method, path: p, headers: { authorization: `Bearer ${gw.adminKey}` }, body });
  const client = (credentials, extra = {}) =>
    new BedrockRuntimeClient({
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${port}`,
      credentials,
      requestHandler: new NodeHttpHandler(),
      maxAttempts: 1,
      ...extra,
    });
  const converse = (c, text = 'Hello') =>
    c.send(new ConverseCommand({ modelId: HAIKU, messages: [{ role: 'user', content: [{ text }] }], inferenceConfig: { maxTokens: 32 } }));

  before(tracker.guard(async () => {
    requireBinary();
    const registry = new Map();
    const creds = staticCreds(registry);
    br = await startFakeBedrock({ registry });
    const dir = makeTmpDir('sdk');
    const config = {
      listen: '127.0.0.1:0',
      workers: 2,
      store: { path: path.join(dir, 't.db') },
      reports: { enabled: false },
      keys: { derive_secret_env: 'TG_DERIVE' },
      providers: [
        {
          name: 'br',
          type: 'bedrock',
          region: 'us-east-1',
          endpoint: br.url,
          credentials: { access_key_id_env: 'TG_T_AK', secret_access_key_env: 'TG_T_SK' },
          catalog: { refresh_s: 0 },
        },
      ],
      models: [
        { id: HAIKU, provider: 'br', upstream_model: HAIKU },
        { id: 'claude', provider: 'br', upstream_model: 'anthropic.claude-3-sonnet-20240229-v1:0' },
        { id: 'titan-embed', provider: 'br', upstream_model: 'amazon.titan-embed-text-v2:0' },
        { id: 'cohere-embed', provider: 'br', upstream_model: 'cohere.embed-english-v3' },
      ],
    };
    const configFile = writeConfig(dir, config);
    // A key made before derivation was configured: random secret, no SigV4.
    const noDerive = writeConfig(dir, { ...config, keys: undefined }, 'plain.json');
    const r = await runCli(['keys', 'create', '--config', noDerive, '--team', 'team-sdk']);
    assert.equal(r.code, 0, r.stderr);
    const randomSecret = r.stdout.trim().split('\n').pop();
    gw = await startGateway(configFile, { env: { TG_DERIVE: DERIVE, TG_T_AK: creds.accessKeyId, TG_T_SK: creds.secretAccessKey } });
    env = { dir, config, configFile, gw };
    port = gw.port;
    admin = Number(new URL(gw.adminUrl).port);
    const made = await adminCall('POST', '/admin/keys', { team: 'team-sdk' });
    assert.equal(made.status, 201, made.text);
    derived = { accessKeyId: made.json.key.id, secretAccessKey: made.json.secret };
    const keys = (await adminCall('GET', '/admin/keys?team=team-sdk')).json.data;
    random = { accessKeyId: keys.find((k) => randomSecret.startsWith(k.prefix)).id, secretAccessKey: randomSecret };
    await waitFor(async () => (await request(port, { path: '/v1/limits', headers: { authorization: `Bearer ${made.json.secret}` } })).status === 200, {
      timeoutMs: 3000,
      message: 'the new key',
    });
  }), { timeout: 30000 });

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    await br?.close();
  }, { timeout: 15000 });

  test('SigV4: all four operations, signed with the key id and its secret', T, async () => {
    const c = client(derived);
    const conv = await converse(c);
    assert.equal(conv.output.message.role, 'assistant');
    const inv = await c.send(new InvokeModelCommand({
      modelId: HAIKU,
      contentType: 'application/json',
      body: JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 32, messages: [{ role: 'user', content: 'Hi' }] }),
    }));
    assert.ok(JSON.parse(Buffer.from(inv.body).toString()).content);
    const cs = await c.send(new ConverseStreamCommand({ modelId: HAIKU, messages: [{ role: 'user', content: [{ text: 'Stream' }] }] }));
    let text = '';
    let usage;
    for await (const ev of cs.stream) {
      if (ev.contentBlockDelta) text += ev.contentBlockDelta.delta.text;
      if (ev.metadata) usage = ev.metadata.usage;
    }
    assert.ok(text.length > 0 && usage.outputTokens > 0);
    const is = await c.send(new InvokeModelWithResponseStreamCommand({
      modelId: HAIKU,
      contentType: 'application/json',
      body: JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 32, messages: [{ role: 'user', content: 'Hi' }] }),
    }));
    let chunks = 0;
    for await (const ev of is.body) if (ev.chunk) chunks++;
    assert.ok(chunks > 0);
    const rows = (await usageList(env.configFile)).filter((u) => u.key_id === derived.accessKeyId);
    assert.equal(rows.length, 4, 'each call recorded under the signing key');
  });

  test('HTTP/2 (the SDK default handler), with SigV4 and with Bearer: all four operations', T, async () => {
    for (const auth of ['sigv4', 'bearer']) {
      const h2 = new NodeHttp2Handler({ disableConcurrentStreams: false });
      const c =
        auth === 'sigv4'
          ? client(derived, { requestHandler: h2 })
          : client(undefined, { requestHandler: h2, token: { token: random.secretAccessKey }, authSchemePreference: ['httpBearerAuth'] });
      try {
        const before = br.requests.length;
        const conv = await converse(c, `h2 ${auth}`);
        assert.equal(conv.output.message.role, 'assistant');
        const inv = await c.send(new InvokeModelCommand({
          modelId: HAIKU,
          contentType: 'application/json',
          body: JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 16, messages: [{ role: 'user', content: 'Hi' }] }),
        }));
        assert.ok(JSON.parse(Buffer.from(inv.body).toString()).content);
        const cs = await c.send(new ConverseStreamCommand({ modelId: HAIKU, messages: [{ role: 'user', content: [{ text: 'Stream' }] }] }));
        let n = 0;
        for await (const ev of cs.stream) if (ev.contentBlockDelta) n++;
        assert.ok(n > 0, 'deltas over HTTP/2');
        const is = await c.send(new InvokeModelWithResponseStreamCommand({
          modelId: HAIKU,
          contentType: 'application/json',
          body: JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 16, messages: [{ role: 'user', content: 'Hi' }] }),
        }));
        let chunks = 0;
        for await (const ev of is.body) if (ev.chunk) chunks++;
        assert.ok(chunks > 0);
        // Several at once on the one connection.
        const many = await Promise.all(Array.from({ length: 20 }, (_, i) => converse(c, `parallel ${i}`)));
        assert.equal(many.length, 20);
        assert.equal(br.requests.length - before, 24, 'every call reached the provider');
      } finally {
        h2.destroy();
      }
    }
  });

  test('@langchain/aws ChatBedrockConverse: invoke and stream through tollgate', T, async () => {
    for (const handler of [new NodeHttpHandler(), new NodeHttp2Handler()]) {
      const llm = new ChatBedrockConverse({
        model: HAIKU,
        region: 'us-east-1',
        maxTokens: 32,
        client: client(derived, { requestHandler: handler }),
      });
      const answer = await llm.invoke([new HumanMessage('Hello from LangChain')]);
      assert.ok(String(answer.content).length > 0);
      let text = '';
      let usage = null;
      for await (const chunk of await llm.stream([new HumanMessage('Stream from LangChain')])) {
        text += typeof chunk.content === 'string' ? chunk.content : '';
        if (chunk.usage_metadata) usage = chunk.usage_metadata;
      }
      assert.ok(text.length > 0, 'streamed text');
      const up = br.last('ConverseStream');
      assert.equal(usage.output_tokens, up.usage.output);
      handler.destroy();
    }
  });

  test('SigV4 refusals: wrong secret, unknown id, a key whose secret was not derived, a stale date', T, async () => {
    // The last character changed (to one it is not: a random secret ends in 'x' one time in 62).
    const wrong = derived.secretAccessKey.slice(0, -1) + (derived.secretAccessKey.endsWith('x') ? 'y' : 'x');
    await assert.rejects(converse(client({ ...derived, secretAccessKey: wrong })), (e) => e.$metadata?.httpStatusCode === 401);
    await assert.rejects(converse(client({ accessKeyId: 'key_0000000000000000', secretAccessKey: derived.secretAccessKey })), (e) => e.$metadata?.httpStatusCode === 401);
    await assert.rejects(converse(client(random)), (e) => e.$metadata?.httpStatusCode === 401 && /derived/.test(e.message));
    // The same request replayed 20 minutes later is refused.
    const skewed = client(derived, { systemClockOffset: -20 * 60 * 1000 });
    await assert.rejects(converse(skewed), (e) => e.$metadata?.httpStatusCode === 401);
    // Bearer still works for the key whose secret is random.
    const bearer = client(undefined, { token: { token: random.secretAccessKey }, authSchemePreference: ['httpBearerAuth'] });
    assert.equal((await converse(bearer)).output.message.role, 'assistant');
  });

  test('rotation: the old derived secret signs through its grace, then only the new one', T, async () => {
    const rot = await adminCall('POST', `/admin/keys/${derived.accessKeyId}/rotate`, { grace_s: 2 });
    assert.equal(rot.status, 200, rot.text);
    const fresh = { accessKeyId: derived.accessKeyId, secretAccessKey: rot.json.secret };
    await waitFor(async () => {
      try {
        await converse(client(fresh));
        return true;
      } catch {
        return false;
      }
    }, { timeoutMs: 3000, message: 'the new secret' });
    assert.equal((await converse(client(derived))).output.message.role, 'assistant', 'the old secret in its grace');
    await waitFor(async () => {
      try {
        await converse(client(derived));
        return false;
      } catch (e) {
        return e.$metadata?.httpStatusCode === 401;
      }
    }, { timeoutMs: 5000, intervalMs: 200, message: 'the grace to end' });
    assert.equal((await converse(client(fresh))).output.message.role, 'assistant');
    derived = fresh;
  });
});

describe('the openai@6 SDK on Bedrock-routed models', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let br, env, gw, oai;
  const WEATHER = {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Get weather of a location.',
      parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
    },
  };

  before(tracker.guard(async () => {
    requireBinary();
    const registry = new Map();
    const creds = staticCreds(registry);
    br = await startFakeBedrock({ registry });
    const dir = makeTmpDir('sdk-openai');
    const configFile = writeConfig(dir, {
      listen: '127.0.0.1:0',
      workers: 2,
      store: { path: path.join(dir, 't.db') },
      reports: { enabled: false },
      providers: [
        {
          name: 'br',
          type: 'bedrock',
          region: 'us-east-1',
          endpoint: br.url,
          credentials: { access_key_id_env: 'TG_T_AK', secret_access_key_env: 'TG_T_SK' },
          catalog: { refresh_s: 0 },
        },
      ],
      models: [
        { id: 'claude', provider: 'br', upstream_model: 'anthropic.claude-3-sonnet-20240229-v1:0' },
        { id: 'titan-embed', provider: 'br', upstream_model: 'amazon.titan-embed-text-v2:0' },
        { id: 'cohere-embed', provider: 'br', upstream_model: 'cohere.embed-english-v3' },
      ],
    });
    gw = await startGateway(configFile, { env: { TG_T_AK: creds.accessKeyId, TG_T_SK: creds.secretAccessKey } });
    env = { dir, configFile, gw };
    const r = await runCli(['keys', 'create', '--config', configFile, '--team', 'team-oai']);
    const key = r.stdout.trim().split('\n').pop();
    oai = new OpenAI({ baseURL: gw.baseURL, apiKey: key, maxRetries: 0, timeout: 15000 });
    await waitFor(async () => (await request(gw.port, { path: '/v1/models', headers: { authorization: `Bearer ${key}` } })).status === 200, {
      timeoutMs: 3000,
      message: 'the key',
    });
  }), { timeout: 30000 });

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    await br?.close();
  }, { timeout: 15000 });

  test('chat with tools: tool_calls, then the tool result answered', T, async () => {
    const messages = [{ role: 'user', content: 'What is the weather like in Paris?' }];
    const first = await oai.chat.completions.create({ model: 'claude', messages, tools: [WEATHER], max_tokens: 200 });
    const msg = first.choices[0].message;
    assert.equal(first.choices[0].finish_reason, 'tool_calls');
    assert.equal(msg.tool_calls.length, 1);
    assert.equal(msg.tool_calls[0].function.name, 'get_weather');
    assert.deepEqual(JSON.parse(msg.tool_calls[0].function.arguments), { city: 'fake-city' });
    assert.equal(msg.tool_calls[0].id, toolUseIdFor([{ role: 'user', content: [{ text: messages[0].content }] }], 'get_weather'));
    const second = await oai.chat.completions.create({
      model: 'claude',
      tools: [WEATHER],
      messages: [...messages, msg, { role: 'tool', tool_call_id: msg.tool_calls[0].id, content: '21 degrees' }],
    });
    assert.equal(second.choices[0].finish_reason, 'stop');
    assert.equal(typeof second.choices[0].message.content, 'string');
    const up = br.last('Converse').body;
    assert.deepEqual(up.messages.map((m) => m.role), ['user', 'assistant', 'user']);
    assert.ok(up.messages[2].content[0].toolResult);
    assert.ok(second.usage.prompt_tokens > 0 && second.usage.completion_tokens > 0);
  });

  test('streaming with usage: text deltas, a streamed tool call, the usage chunk', T, async () => {
    const stream = await oai.chat.completions.create({
      model: 'claude',
      messages: [{ role: 'user', content: 'Say something' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    let text = '';
    let usage = null;
    let finish = null;
    for await (const chunk of stream) {
      if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
      if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
      if (chunk.usage) usage = chunk.usage;
    }
    assert.ok(text.length > 0);
    assert.equal(finish, 'stop');
    const up = br.last('ConverseStream');
    assert.equal(usage.completion_tokens, up.usage.output);
    const tools = await oai.chat.completions.create({
      model: 'claude',
      messages: [{ role: 'user', content: 'weather in Oslo?' }],
      tools: [WEATHER],
      stream: true,
    });
    let args = '';
    let name = null;
    for await (const chunk of tools) {
      const tc = chunk.choices[0]?.delta?.tool_calls?.[0];
      if (tc?.function?.name) name = tc.function.name;
      if (tc?.function?.arguments) args += tc.function.arguments;
      assert.equal(chunk.usage, undefined, 'no usage chunk when it was not asked for');
    }
    assert.equal(name, 'get_weather');
    assert.deepEqual(JSON.parse(args), { city: 'fake-city' });
  });

  test('embeddings: Titan and Cohere through /v1/embeddings', T, async () => {
    const t = await oai.embeddings.create({ model: 'titan-embed', input: 'hello world', dimensions: 256 });
    assert.equal(t.data.length, 1);
    // The SDK asks for base64 itself and decodes float32: compare at that precision.
    assert.deepEqual(t.data[0].embedding, fakeEmbedding('hello world', 256, { normalize: true }).map(Math.fround));
    assert.ok(t.usage.prompt_tokens > 0);
    const c = await oai.embeddings.create({ model: 'cohere-embed', input: ['one', 'two'] });
    assert.equal(c.data.length, 2);
    assert.equal(c.data[1].index, 1);
    assert.equal(c.data[0].embedding.length, 1024);
    const b64 = await oai.embeddings.create({ model: 'titan-embed', input: 'hello world', dimensions: 256, encoding_format: 'base64' });
    assert.equal(typeof b64.data[0].embedding, 'string');
    const raw = Buffer.from(b64.data[0].embedding, 'base64');
    const floats = new Float32Array(raw.buffer, raw.byteOffset, raw.length / 4);
    assert.equal(floats.length, 256);
    const rows = (await usageList(env.configFile)).filter((u) => u.api === 'openai.embeddings');
    assert.equal(rows.length, 3);
  });

  test('embeddings: several inputs to Titan are one call each, answered in order and billed together', T, async () => {
    const texts = ['marker-multi alpha', 'marker-multi beta beta', 'marker-multi gamma gamma gamma'];
    const before = br.calls('InvokeModel', 'amazon.titan-embed-text-v2:0').length;
    const res = await oai.embeddings.create({ model: 'titan-embed', input: texts, dimensions: 256 }).withResponse();
    const e = res.data;
    const calls = br.calls('InvokeModel', 'amazon.titan-embed-text-v2:0').slice(before);
    assert.deepEqual(calls.map((c) => c.body.inputText), texts, 'one call per input, in order');
    assert.deepEqual(e.data.map((d) => d.index), [0, 1, 2]);
    texts.forEach((t, i) => assert.deepEqual(e.data[i].embedding, fakeEmbedding(t, 256, { normalize: true }).map(Math.fround)));
    const counted = calls.reduce((n, c) => n + c.usage.input, 0);
    assert.equal(e.usage.prompt_tokens, counted);
    const id = res.response.headers.get('x-request-id');
    const row = (await usageList(env.configFile)).find((u) => u.request_id === id);
    assert.equal(row.input_tokens, counted);
    assert.equal(row.token_source, 'provider');
    assert.equal(row.outcome, 'ok');
  });

  test('embeddings: a Titan call that fails after others answered: the error, and the calls made billed', T, async () => {
    const before = br.calls('InvokeModel', 'amazon.titan-embed-text-v2:0').length;
    const long = 'x'.repeat(50001); // over Titan v2's 50,000 characters: ValidationException
    const err = await oai.embeddings.create({ model: 'titan-embed', input: ['marker-partial ok', long, 'never sent'] }).catch((x) => x);
    assert.ok(err instanceof OpenAI.APIError, String(err));
    assert.equal(err.status, 400);
    assert.match(err.message, /50000|length|validation/i);
    const calls = br.calls('InvokeModel', 'amazon.titan-embed-text-v2:0').slice(before);
    assert.equal(calls.length, 2, 'the third input is not sent once the second failed');
    const rows = (await usageList(env.configFile)).filter((u) => u.api === 'openai.embeddings' && u.outcome === 'upstream_error');
    assert.equal(rows.length, 1);
    assert.equal(rows[0].input_tokens, calls[0].usage.input);
    assert.equal(rows[0].status, 400);
  });
});

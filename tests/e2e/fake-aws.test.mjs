// Tests of the fake Bedrock and SageMaker runtime servers, driven by the real
// AWS SDKs pointed straight at them (no gateway, no binary): if the SDKs sign
// requests the fakes accept and parse what the fakes send (JSON bodies, event
// streams, errors into the right exception classes), the gateway tests can
// trust them.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import {
  BedrockRuntimeClient,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
  ConverseCommand,
  ConverseStreamCommand,
  ThrottlingException,
  ValidationException,
  AccessDeniedException,
  ResourceNotFoundException,
  ModelTimeoutException,
  ModelErrorException,
  ModelNotReadyException,
  ServiceQuotaExceededException,
  InternalServerException,
  ServiceUnavailableException,
  BedrockRuntimeServiceException,
} from '@aws-sdk/client-bedrock-runtime';
import {
  SageMakerRuntimeClient,
  InvokeEndpointCommand,
  InvokeEndpointWithResponseStreamCommand,
  ModelError,
  ValidationError,
  ServiceUnavailable,
  InternalFailure,
  SageMakerRuntimeServiceException,
} from '@aws-sdk/client-sagemaker-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import { SignatureV4 } from '@smithy/signature-v4';
import { HttpRequest } from '@smithy/protocol-http';
import { Sha256 } from '@aws-crypto/sha256-js';
import {
  startFakeBedrock,
  startFakeSageMaker,
  staticCreds,
  tempCreds,
  signedFetch,
  rawRequest,
  decodeEventStream,
  wordsOut,
  CACHE_READ,
  CACHE_WRITE,
  DEFAULT_OUTPUT,
} from './fake-aws.mjs';

const T = { timeout: 10000 };
const REGION = 'us-east-1';
const CLAUDE = 'anthropic.claude-3-5-sonnet-20240620-v1:0';
const PROFILE = 'us.anthropic.claude-3-7-sonnet-20250219-v1:0';
const PROFILE_ARN = `arn:aws:bedrock:us-east-1:123456789012:inference-profile/${PROFILE}`;
const BEARER = 'ABSKQmVkcm9ja0FQSUtleS1mYWtlLWtleQ==';

const json = (bytes) => JSON.parse(Buffer.from(bytes).toString('utf8'));
const enc = (obj) => Buffer.from(JSON.stringify(obj));
const claudeBody = (text, extra = {}) => enc({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 7, messages: [{ role: 'user', content: text }], ...extra });

async function expectReject(promise, name, status, cls) {
  const err = await promise.then(
    () => assert.fail(`expected ${name}`),
    (e) => e,
  );
  assert.equal(err.name, name, `${err.name}: ${err.message}`);
  if (status !== undefined) assert.equal(err.$metadata?.httpStatusCode, status);
  if (cls) assert.ok(err instanceof cls, `${name} is not an instance of ${cls.name}`);
  return err;
}

describe('fake Bedrock', () => {
  const registry = new Map();
  let creds;
  let fake;
  let h2; // the SDK's default handler (NodeHttp2Handler)
  let h1; // explicit NodeHttpHandler (HTTP/1.1)
  const client = (extra = {}) =>
    new BedrockRuntimeClient({ region: REGION, endpoint: fake.url, credentials: creds, maxAttempts: 1, ...extra });

  before(async () => {
    creds = staticCreds(registry);
    fake = await startFakeBedrock({ registry, bearerTokens: new Set([BEARER]), region: REGION });
    h2 = client();
    h1 = client({ requestHandler: new NodeHttpHandler() });
  });
  after(async () => {
    h1?.destroy();
    h2?.destroy();
    await fake?.close();
  });

  for (const [label, get] of [['HTTP/2 default handler', () => h2], ['HTTP/1.1 NodeHttpHandler', () => h1]]) {
    test(`InvokeModel, Anthropic messages, model id with ':' (${label})`, T, async () => {
      const out = await get().send(new InvokeModelCommand({ modelId: CLAUDE, contentType: 'application/json', accept: 'application/json', body: claudeBody('one two three four') }));
      const b = json(out.body);
      assert.equal(out.contentType, 'application/json');
      assert.equal(b.type, 'message');
      assert.equal(b.role, 'assistant');
      assert.equal(b.model, 'claude-3-5-sonnet-20240620');
      assert.match(b.id, /^msg_bdrk_/);
      assert.deepEqual(b.content, [{ type: 'text', text: wordsOut(7) }]);
      assert.equal(b.stop_reason, 'max_tokens');
      assert.deepEqual(b.usage, { input_tokens: 4 + 3, output_tokens: 7 });
      const rec = fake.last('InvokeModel');
      assert.equal(rec.modelId, CLAUDE);
      assert.match(rec.path, /v1%3A0\/invoke$/, 'the SDK sends ":" as %3A (and signs it as %253A)');
      assert.equal(rec.auth, 'sigv4');
      assert.equal(rec.accessKeyId, creds.accessKeyId);
      assert.deepEqual(rec.usage, { input: 7, output: 7, cacheRead: 0, cacheWrite: 0 });
      assert.equal(rec.status, 200);
      assert.equal(rec.body.max_tokens, 7);
    });

    test(`ConverseStream with a cachePoint, inference-profile ARN (${label})`, T, async () => {
      const out = await get().send(
        new ConverseStreamCommand({
          modelId: PROFILE_ARN,
          system: [{ text: 'be brief' }, { cachePoint: { type: 'default' } }],
          messages: [{ role: 'user', content: [{ text: 'a b c' }] }],
          inferenceConfig: { maxTokens: 9 },
        }),
      );
      const events = [];
      for await (const e of out.stream) events.push(e);
      const kinds = events.map((e) => Object.keys(e)[0]);
      assert.equal(kinds[0], 'messageStart');
      assert.ok(kinds.filter((k) => k === 'contentBlockDelta').length >= 3);
      assert.deepEqual(kinds.slice(-3), ['contentBlockStop', 'messageStop', 'metadata']);
      const text = events.filter((e) => e.contentBlockDelta).map((e) => e.contentBlockDelta.delta.text).join('');
      assert.equal(text, wordsOut(9));
      assert.equal(events.at(-2).messageStop.stopReason, 'max_tokens');
      const md = events.at(-1).metadata;
      assert.deepEqual(md.usage, {
        inputTokens: 2 + 3 + 3,
        outputTokens: 9,
        totalTokens: 8 + 9 + CACHE_READ + CACHE_WRITE,
        cacheReadInputTokens: CACHE_READ,
        cacheWriteInputTokens: CACHE_WRITE,
      });
      assert.equal(typeof md.metrics.latencyMs, 'number');
      const rec = fake.last('ConverseStream');
      assert.equal(rec.modelId, PROFILE_ARN);
      assert.deepEqual(rec.usage, { input: 8, output: 9, cacheRead: CACHE_READ, cacheWrite: CACHE_WRITE });
      assert.equal(rec.finished, true);
    });
  }

  test('InvokeModel: native bodies of every family', T, async () => {
    const cases = [
      ['amazon.titan-text-express-v1', { inputText: 'w x y', textGenerationConfig: { maxTokenCount: 4 } }, (b) => {
        assert.equal(b.inputTextTokenCount, 6);
        assert.deepEqual(b.results, [{ tokenCount: 4, outputText: wordsOut(4), completionReason: 'LENGTH' }]);
      }, [6, 4]],
      ['amazon.titan-embed-text-v2:0', { inputText: 'embed me please', dimensions: 256 }, (b) => {
        assert.equal(b.embedding.length, 256);
        assert.equal(b.inputTextTokenCount, 6);
      }, [6, 0]],
      ['cohere.embed-english-v3', { texts: ['a b', 'c'], input_type: 'search_document' }, (b) => {
        assert.equal(b.embeddings.length, 2);
        assert.equal(b.response_type, 'embeddings_floats');
      }, [6, 0]],
      ['meta.llama3-1-70b-instruct-v1:0', { prompt: '<|begin_of_text|>hi there', max_gen_len: 3 }, (b) => {
        assert.deepEqual(b, { generation: wordsOut(3), prompt_token_count: 5, generation_token_count: 3, stop_reason: 'length' });
      }, [5, 3]],
      ['us.meta.llama3-2-11b-instruct-v1:0', { prompt: 'hi' }, (b) => {
        assert.equal(b.generation_token_count, DEFAULT_OUTPUT);
        assert.equal(b.stop_reason, 'stop');
      }, [4, DEFAULT_OUTPUT]],
      ['mistral.mistral-large-2402-v1:0', { prompt: '<s>[INST] q [/INST]', max_tokens: 2 }, (b) => {
        assert.deepEqual(b, { outputs: [{ text: 'w1 w2', stop_reason: 'length' }] });
      }, [6, 2]],
      ['cohere.command-text-v14', { prompt: 'one', max_tokens: 2 }, (b) => {
        assert.equal(b.generations[0].text, 'w1 w2');
        assert.equal(b.generations[0].finish_reason, 'MAX_TOKENS');
      }, [4, 2]],
      ['cohere.command-r-plus-v1:0', { message: 'hello you', chat_history: [{ role: 'USER', message: 'x' }] }, (b) => {
        assert.equal(b.text, wordsOut(DEFAULT_OUTPUT));
        assert.deepEqual(b.meta.billed_units, { input_tokens: 6, output_tokens: DEFAULT_OUTPUT });
      }, [6, DEFAULT_OUTPUT]],
      ['ai21.j2-ultra-v1', { prompt: 'p q', maxTokens: 3 }, (b) => {
        assert.equal(b.completions[0].data.text, 'w1 w2 w3');
        assert.equal(b.completions[0].finishReason.reason, 'length');
      }, [5, 3]],
      ['ai21.jamba-1-5-large-v1:0', { messages: [{ role: 'user', content: 'hey' }], max_tokens: 2 }, (b) => {
        assert.equal(b.choices[0].message.content, 'w1 w2');
        assert.deepEqual(b.usage, { prompt_tokens: 4, completion_tokens: 2, total_tokens: 6 });
      }, [4, 2]],
      ['amazon.nova-pro-v1:0', { schemaVersion: 'messages-v1', messages: [{ role: 'user', content: [{ text: 'n o' }] }], inferenceConfig: { max_new_tokens: 3 } }, (b) => {
        assert.deepEqual(b.output.message, { content: [{ text: 'w1 w2 w3' }], role: 'assistant' });
        assert.equal(b.usage.inputTokens, 5);
        assert.equal(b.usage.outputTokens, 3);
      }, [5, 3]],
      ['anthropic.claude-v2:1', { prompt: '\n\nHuman: hi\n\nAssistant:', max_tokens_to_sample: 3 }, (b) => {
        assert.equal(b.type, 'completion');
        assert.equal(b.completion.trim(), 'w1 w2 w3');
      }, [6, 3]],
    ];
    for (const [modelId, body, check, [input, output]] of cases) {
      const out = await h1.send(new InvokeModelCommand({ modelId, contentType: 'application/json', body: enc(body) }));
      check(json(out.body));
      const rec = fake.last('InvokeModel');
      assert.equal(rec.modelId, modelId);
      assert.deepEqual(rec.usage, { input, output, cacheRead: 0, cacheWrite: 0 }, modelId);
    }
  });

  test('InvokeModel over raw HTTP: token-count headers, cache headers', T, async () => {
    const res = await signedFetch({
      url: fake.url,
      method: 'POST',
      path: `/model/${encodeURIComponent(CLAUDE)}/invoke`,
      headers: { accept: 'application/json' },
      body: {
        anthropic_version: 'bedrock-2023-05-31',
        max_tokens: 3,
        system: [{ type: 'text', text: 'sys words here', cache_control: { type: 'ephemeral' } }],
        messages: [{ role: 'user', content: [{ type: 'text', text: 'q' }] }],
      },
      creds,
    });
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(res.headers['content-type'], 'application/json');
    assert.equal(res.headers['x-amzn-bedrock-input-token-count'], '7');
    assert.equal(res.headers['x-amzn-bedrock-output-token-count'], '3');
    assert.equal(res.headers['x-amzn-bedrock-cache-read-input-token-count'], String(CACHE_READ));
    assert.equal(res.headers['x-amzn-bedrock-cache-write-input-token-count'], String(CACHE_WRITE));
    assert.match(res.headers['x-amzn-bedrock-invocation-latency'], /^\d+$/);
    assert.match(res.headers['x-amzn-requestid'], /^[0-9a-f-]{36}$/);
    assert.deepEqual(res.json.usage, { input_tokens: 7, output_tokens: 3, cache_creation_input_tokens: CACHE_WRITE, cache_read_input_tokens: CACHE_READ });
    // Without caching the cache headers are absent.
    const plain = await signedFetch({ url: fake.url, method: 'POST', path: `/model/${encodeURIComponent(CLAUDE)}/invoke`, body: JSON.parse(claudeBody('x').toString()), creds });
    assert.equal(plain.status, 200);
    assert.equal(plain.headers['x-amzn-bedrock-cache-read-input-token-count'], undefined);
    assert.equal(plain.headers['x-amzn-bedrock-cache-write-input-token-count'], undefined);
  });

  test('InvokeModelWithResponseStream: raw frames, Anthropic event sequence, metrics', T, async () => {
    const res = await signedFetch({
      url: fake.url,
      method: 'POST',
      path: `/model/${encodeURIComponent(CLAUDE)}/invoke-with-response-stream`,
      headers: { 'x-amzn-bedrock-accept': 'application/json' },
      body: { anthropic_version: 'bedrock-2023-05-31', max_tokens: 6, messages: [{ role: 'user', content: [{ type: 'text', text: 'cache me', cache_control: { type: 'ephemeral' } }] }] },
      creds,
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-type'], 'application/vnd.amazon.eventstream');
    assert.equal(res.headers['x-amzn-bedrock-content-type'], 'application/json');
    const frames = decodeEventStream(res.body);
    for (const f of frames) {
      assert.deepEqual(
        { t: f.headers[':event-type'], c: f.headers[':content-type'], m: f.headers[':message-type'] },
        { t: 'chunk', c: 'application/json', m: 'event' },
      );
      assert.deepEqual(Object.keys(f.json).sort(), ['bytes', 'p']);
      assert.match(f.json.p, /^[a-zA-Z0-9]+$/);
    }
    const chunks = frames.map((f) => JSON.parse(Buffer.from(f.json.bytes, 'base64').toString('utf8')));
    const types = chunks.map((c) => c.type);
    assert.deepEqual([types[0], types[1]], ['message_start', 'content_block_start']);
    assert.deepEqual(types.slice(-3), ['content_block_stop', 'message_delta', 'message_stop']);
    assert.equal(chunks.filter((c) => c.type === 'content_block_delta').map((c) => c.delta.text).join(''), wordsOut(6));
    assert.deepEqual(chunks[0].message.usage, { input_tokens: 5, cache_creation_input_tokens: CACHE_WRITE, cache_read_input_tokens: CACHE_READ, output_tokens: 1 });
    assert.equal(chunks.at(-2).usage.output_tokens, 6);
    const m = chunks.at(-1)['amazon-bedrock-invocationMetrics'];
    assert.equal(m.inputTokenCount, 5);
    assert.equal(m.outputTokenCount, 6);
    assert.equal(m.cacheReadInputTokenCount, CACHE_READ);
    assert.equal(m.cacheWriteInputTokenCount, CACHE_WRITE);
    assert.equal(typeof m.invocationLatency, 'number');
    assert.equal(typeof m.firstByteLatency, 'number');
    assert.deepEqual(fake.last().usage, { input: 5, output: 6, cacheRead: CACHE_READ, cacheWrite: CACHE_WRITE });
  });

  test('InvokeModelWithResponseStream through the SDK for several families', T, async () => {
    const cases = [
      [CLAUDE, JSON.parse(claudeBody('a b')), (c) => c.type === 'content_block_delta' && c.delta.text],
      ['amazon.titan-text-express-v1', { inputText: 'a b', textGenerationConfig: { maxTokenCount: 5 } }, (c) => c.outputText],
      ['mistral.mistral-7b-instruct-v0:2', { prompt: 'a b', max_tokens: 5 }, (c) => c.outputs[0].text],
      ['cohere.command-text-v14', { prompt: 'a b', max_tokens: 5, stream: true }, (c) => !c.is_finished && c.text],
      ['amazon.nova-lite-v1:0', { messages: [{ role: 'user', content: [{ text: 'a b' }] }], inferenceConfig: { maxTokens: 5 } }, (c) => c.contentBlockDelta?.delta.text],
      ['ai21.jamba-1-5-large-v1:0', { messages: [{ role: 'user', content: 'a b' }], max_tokens: 5 }, (c) => c.choices?.[0]?.delta?.content],
    ];
    for (const [modelId, body, textOf] of cases) {
      for (const c of [h1, h2]) {
        const out = await c.send(new InvokeModelWithResponseStreamCommand({ modelId, body: enc(body) }));
        assert.equal(out.contentType, 'application/json');
        const chunks = [];
        for await (const e of out.body) chunks.push(json(e.chunk.bytes));
        const text = chunks.map((x) => textOf(x) || '').join('');
        const max = modelId === CLAUDE ? 7 : 5;
        assert.equal(text, wordsOut(max), modelId);
        const m = chunks.at(-1)['amazon-bedrock-invocationMetrics'];
        assert.equal(m.inputTokenCount, 5, modelId);
        assert.equal(m.outputTokenCount, max, modelId);
        assert.deepEqual(fake.last().usage, { input: 5, output: max, cacheRead: 0, cacheWrite: 0 });
      }
    }
  });

  test('Converse with a cachePoint; cache fields absent without one', T, async () => {
    const out = await h2.send(
      new ConverseCommand({
        modelId: 'us.anthropic.claude-sonnet-4-20250514-v1:0',
        messages: [{ role: 'user', content: [{ text: 'long document here' }, { cachePoint: { type: 'default' } }, { text: 'question' }] }],
        inferenceConfig: { maxTokens: 4 },
      }),
    );
    assert.deepEqual(out.output.message, { role: 'assistant', content: [{ text: wordsOut(4) }] });
    assert.equal(out.stopReason, 'max_tokens');
    assert.deepEqual(out.usage, { inputTokens: 7, outputTokens: 4, totalTokens: 11 + CACHE_READ + CACHE_WRITE, cacheReadInputTokens: CACHE_READ, cacheWriteInputTokens: CACHE_WRITE });
    assert.equal(typeof out.metrics.latencyMs, 'number');
    const plain = await h1.send(new ConverseCommand({ modelId: 'meta.llama3-1-8b-instruct-v1:0', messages: [{ role: 'user', content: [{ text: 'x' }] }] }));
    assert.equal(plain.stopReason, 'end_turn');
    assert.deepEqual(plain.usage, { inputTokens: 4, outputTokens: DEFAULT_OUTPUT, totalTokens: 4 + DEFAULT_OUTPUT });
    // Custom / provisioned / imported model ARNs are accepted too.
    for (const arn of [
      'arn:aws:bedrock:us-east-1:123456789012:custom-model/amazon.titan-text-express-v1:0:8k/abcd1234',
      'arn:aws:bedrock:us-east-1:123456789012:provisioned-model/pm1234567890',
      'arn:aws:bedrock:us-east-1:123456789012:imported-model/llama-imp01',
    ]) {
      const r = await h1.send(new ConverseCommand({ modelId: arn, messages: [{ role: 'user', content: [{ text: 'x' }] }] }));
      assert.equal(r.usage.outputTokens, DEFAULT_OUTPUT);
      assert.equal(fake.last().modelId, arn);
    }
  });

  test('fail.<Name> maps to the SDK exception class and status', T, async () => {
    const table = [
      ['ThrottlingException', 429, ThrottlingException],
      ['ValidationException', 400, ValidationException],
      ['AccessDeniedException', 403, AccessDeniedException],
      ['ResourceNotFoundException', 404, ResourceNotFoundException],
      ['ModelTimeoutException', 408, ModelTimeoutException],
      ['ModelErrorException', 424, ModelErrorException],
      ['ModelNotReadyException', 429, ModelNotReadyException],
      ['ServiceQuotaExceededException', 400, ServiceQuotaExceededException],
      ['InternalServerException', 500, InternalServerException],
      ['ServiceUnavailableException', 503, ServiceUnavailableException],
    ];
    for (const [name, status, cls] of table) {
      const err = await expectReject(h1.send(new InvokeModelCommand({ modelId: `fail.${name}`, body: claudeBody('x') })), name, status, cls);
      assert.ok(err instanceof BedrockRuntimeServiceException);
      assert.ok(err.message.length > 0);
      if (name === 'ModelErrorException') assert.equal(err.originalStatusCode, 500);
      const rec = fake.last();
      assert.equal(rec.status, status);
      assert.equal(rec.errorName, name);
      assert.equal(rec.usage, null);
    }
    // Streams fail the same way before any event, over HTTP/2 too.
    await expectReject(h2.send(new ConverseStreamCommand({ modelId: `fail.ThrottlingException.${CLAUDE}`, messages: [{ role: 'user', content: [{ text: 'x' }] }] })), 'ThrottlingException', 429, ThrottlingException);
    // The raw shape.
    const raw = await signedFetch({ url: fake.url, method: 'POST', path: '/model/fail.ThrottlingException/invoke', body: {}, creds });
    assert.equal(raw.status, 429);
    assert.equal(raw.headers['x-amzn-errortype'], 'ThrottlingException:http://internal.amazon.com/coral/com.amazon.bedrock/');
    assert.ok(raw.headers['x-amzn-requestid']);
    assert.deepEqual(Object.keys(raw.json), ['message']);
    // A malformed native body is a ValidationException.
    await expectReject(h1.send(new InvokeModelCommand({ modelId: CLAUDE, body: enc({ messages: [] }) })), 'ValidationException', 400);
  });

  test('midstream.<exception>: two content events, then the SDK raises the stream error', T, async () => {
    const types = [
      ['throttlingException', 'ThrottlingException', ThrottlingException],
      ['modelStreamErrorException', 'ModelStreamErrorException'],
      ['internalServerException', 'InternalServerException', InternalServerException],
      ['validationException', 'ValidationException', ValidationException],
      ['serviceUnavailableException', 'ServiceUnavailableException', ServiceUnavailableException],
      ['modelTimeoutException', 'ModelTimeoutException', ModelTimeoutException],
    ];
    for (const [type, name, cls] of types) {
      const out = await h1.send(new InvokeModelWithResponseStreamCommand({ modelId: `midstream.${type}`, body: claudeBody('x y') }));
      const deltas = [];
      const err = await (async () => {
        for await (const e of out.body) {
          const c = json(e.chunk.bytes);
          if (c.type === 'content_block_delta') deltas.push(c.delta.text);
        }
      })().then(() => null, (e) => e);
      assert.ok(err, `${type}: no error raised`);
      assert.equal(err.name, name);
      if (cls) assert.ok(err instanceof cls);
      assert.equal(deltas.length, 2);
      const rec = fake.last();
      assert.equal(rec.usage, null);
      assert.equal(rec.eventsSent, 2);
      assert.equal(rec.errorName, type);
    }
    // ConverseStream, over HTTP/2.
    const out = await h2.send(new ConverseStreamCommand({ modelId: `midstream.throttlingException.${PROFILE}`, messages: [{ role: 'user', content: [{ text: 'x' }] }] }));
    let deltas = 0;
    const err = await (async () => {
      for await (const e of out.stream) if (e.contentBlockDelta) deltas++;
    })().then(() => null, (e) => e);
    assert.equal(err?.name, 'ThrottlingException');
    assert.equal(deltas, 2);
    // The raw exception frame.
    const raw = await signedFetch({ url: fake.url, method: 'POST', path: '/model/midstream.modelStreamErrorException/invoke-with-response-stream', body: JSON.parse(claudeBody('x')), creds });
    const last = decodeEventStream(raw.body).at(-1);
    assert.deepEqual(
      { m: last.headers[':message-type'], e: last.headers[':exception-type'], c: last.headers[':content-type'] },
      { m: 'exception', e: 'modelStreamErrorException', c: 'application/json' },
    );
    assert.equal(typeof last.json.message, 'string');
  });

  test('slow, hang, drip (abandoned) and cut', T, async () => {
    let t0 = Date.now();
    await h1.send(new InvokeModelCommand({ modelId: `slow.300.${CLAUDE}`, body: claudeBody('x') }));
    assert.ok(Date.now() - t0 >= 290);

    const ac = new AbortController();
    setTimeout(() => ac.abort(), 200);
    await assert.rejects(h1.send(new InvokeModelCommand({ modelId: `hang.${CLAUDE}`, body: claudeBody('x') }), { abortSignal: ac.signal }));
    const hung = fake.last();
    assert.equal(hung.answered, 'hang');
    await waitUntil(() => hung.closed);
    assert.equal(hung.closedBeforeFinish, true);

    // drip: n one-word events ms apart; the client leaves after 3.
    t0 = Date.now();
    const ac2 = new AbortController();
    const out = await h1.send(new InvokeModelWithResponseStreamCommand({ modelId: `drip.50.40.${CLAUDE}`, body: claudeBody('x') }), { abortSignal: ac2.signal });
    let got = 0;
    await (async () => {
      for await (const e of out.body) {
        if (json(e.chunk.bytes).type === 'content_block_delta' && ++got === 3) ac2.abort();
      }
    })().catch(() => {});
    const dripped = fake.last();
    await waitUntil(() => dripped.closed);
    assert.equal(dripped.closedBeforeFinish, true);
    assert.ok(dripped.eventsSent >= 3 && dripped.eventsSent < 50, `eventsSent ${dripped.eventsSent}`);
    assert.equal(dripped.usage, null);
    assert.ok(Date.now() - t0 < 2000);

    // A full drip: n events, n output tokens.
    const full = await h1.send(new ConverseStreamCommand({ modelId: `drip.4.10.${CLAUDE}`, messages: [{ role: 'user', content: [{ text: 'x' }] }] }));
    const evs = [];
    for await (const e of full.stream) evs.push(e);
    assert.equal(evs.filter((e) => e.contentBlockDelta).length, 4);
    assert.equal(evs.at(-1).metadata.usage.outputTokens, 4);

    // cut: the connection drops after n events, no final frame.
    const cut = await h1.send(new InvokeModelWithResponseStreamCommand({ modelId: `cut.2.${CLAUDE}`, body: claudeBody('x') }));
    const cutErr = await (async () => {
      for await (const _e of cut.body);
    })().then(() => null, (e) => e);
    assert.ok(cutErr, 'a cut stream must fail in the SDK');
    assert.equal(fake.last().usage, null);
  });

  test('control plane: ListFoundationModels, ListInferenceProfiles paginated at 2', T, async () => {
    const before = fake.counters.catalog;
    const fm = await signedFetch({ url: fake.url, path: '/foundation-models', creds });
    assert.equal(fm.status, 200);
    const s = fm.json.modelSummaries;
    assert.ok(s.length >= 10);
    const claude = s.find((x) => x.modelId === CLAUDE);
    assert.deepEqual(Object.keys(claude).sort(), ['customizationsSupported', 'inferenceTypesSupported', 'inputModalities', 'modelArn', 'modelId', 'modelLifecycle', 'modelName', 'outputModalities', 'providerName', 'responseStreamingSupported'].sort());
    assert.equal(claude.modelArn, `arn:aws:bedrock:us-east-1::foundation-model/${CLAUDE}`);
    assert.equal(claude.modelLifecycle.status, 'ACTIVE');
    for (const p of ['Anthropic', 'Amazon', 'Meta', 'Mistral AI']) assert.ok(s.some((x) => x.providerName === p), p);
    assert.ok(s.some((x) => x.modelId.startsWith('amazon.nova')));
    assert.ok(s.some((x) => x.modelId.startsWith('amazon.titan')));
    const onlyMeta = await signedFetch({ url: fake.url, path: '/foundation-models', query: { byProvider: 'meta' }, creds });
    assert.ok(onlyMeta.json.modelSummaries.every((x) => x.providerName === 'Meta'));

    const all = [];
    let token;
    let pages = 0;
    do {
      const r = await signedFetch({ url: fake.url, path: '/inference-profiles', query: token ? { nextToken: token } : {}, creds });
      assert.equal(r.status, 200, r.body.toString());
      assert.ok(r.json.inferenceProfileSummaries.length <= 2);
      all.push(...r.json.inferenceProfileSummaries);
      token = r.json.nextToken;
      pages++;
    } while (token);
    assert.ok(pages >= 3);
    const p = all.find((x) => x.inferenceProfileId === PROFILE);
    assert.ok(p);
    assert.equal(p.inferenceProfileArn, PROFILE_ARN);
    assert.equal(p.status, 'ACTIVE');
    assert.equal(p.type, 'SYSTEM_DEFINED');
    assert.match(p.models[0].modelArn, /^arn:aws:bedrock:[a-z0-9-]+::foundation-model\/anthropic\.claude-3-7-sonnet/);
    const one = await signedFetch({ url: fake.url, path: '/inference-profiles', query: { maxResults: '1' }, creds });
    assert.equal(one.json.inferenceProfileSummaries.length, 1);
    const bad = await signedFetch({ url: fake.url, path: '/inference-profiles', query: { nextToken: 'garbage' }, creds });
    assert.equal(bad.status, 400);
    assert.match(bad.headers['x-amzn-errortype'], /^ValidationException:/);
    assert.equal(fake.counters.catalog - before, 2 + pages + 2);
  });

  test('Bedrock API key (Bearer): SDK token config, AWS_BEARER_TOKEN_BEDROCK, bad key', T, async () => {
    const c = new BedrockRuntimeClient({ region: REGION, endpoint: fake.url, token: { token: BEARER }, authSchemePreference: ['httpBearerAuth'], maxAttempts: 1, requestHandler: new NodeHttpHandler() });
    const out = await c.send(new ConverseCommand({ modelId: CLAUDE, messages: [{ role: 'user', content: [{ text: 'x' }] }] }));
    assert.equal(out.usage.outputTokens, DEFAULT_OUTPUT);
    const rec = fake.last();
    assert.equal(rec.auth, 'bearer');
    assert.equal(rec.headers.authorization, `Bearer ${BEARER}`);
    assert.equal(rec.accessKeyId, null);
    c.destroy();

    const saved = process.env.AWS_BEARER_TOKEN_BEDROCK;
    process.env.AWS_BEARER_TOKEN_BEDROCK = BEARER;
    try {
      const e = new BedrockRuntimeClient({ region: REGION, endpoint: fake.url, maxAttempts: 1 });
      await e.send(new InvokeModelCommand({ modelId: CLAUDE, body: claudeBody('x') }));
      assert.equal(fake.last().auth, 'bearer');
      e.destroy();
    } finally {
      if (saved === undefined) delete process.env.AWS_BEARER_TOKEN_BEDROCK;
      else process.env.AWS_BEARER_TOKEN_BEDROCK = saved;
    }

    const bad = new BedrockRuntimeClient({ region: REGION, endpoint: fake.url, token: { token: 'ABSK-not-a-key' }, authSchemePreference: ['httpBearerAuth'], maxAttempts: 1 });
    await expectReject(bad.send(new InvokeModelCommand({ modelId: CLAUDE, body: claudeBody('x') })), 'AccessDeniedException', 403, AccessDeniedException);
    bad.destroy();
  });

  test('refusals: wrong secret, unknown key, expired, token mismatch, skewed clock, wrong region', T, async () => {
    const send = (extra) => {
      const c = client({ requestHandler: new NodeHttpHandler(), ...extra });
      return c.send(new InvokeModelCommand({ modelId: CLAUDE, body: claudeBody('x') })).finally(() => c.destroy());
    };
    let err = await expectReject(send({ credentials: { accessKeyId: creds.accessKeyId, secretAccessKey: 'wrong' } }), 'InvalidSignatureException', 403);
    assert.match(err.message, /signature we calculated does not match/);
    assert.ok(fake.last().expectedCanonicalRequest.includes('/model/anthropic.claude-3-5-sonnet-20240620-v1%253A0/invoke'));
    err = await expectReject(send({ credentials: { accessKeyId: 'AKIANOTKNOWN0000000', secretAccessKey: 'x' } }), 'UnrecognizedClientException', 403);
    assert.equal(err.message, 'The security token included in the request is invalid.');

    const expired = tempCreds(registry, { expiresAtMs: Date.now() - 1000 });
    err = await expectReject(send({ credentials: expired }), 'ExpiredTokenException', 403);
    assert.match(err.message, /expired/);
    const live = tempCreds(registry, { ttlMs: 60_000 });
    await send({ credentials: live });
    assert.equal(fake.last().accessKeyId, live.accessKeyId);
    await expectReject(send({ credentials: { ...live, sessionToken: undefined } }), 'UnrecognizedClientException', 403);
    await expectReject(send({ credentials: { ...live, sessionToken: `${live.sessionToken}x` } }), 'UnrecognizedClientException', 403);

    err = await expectReject(send({ systemClockOffset: -10 * 60 * 1000 }), 'InvalidSignatureException', 403);
    assert.match(err.message, /^Signature expired: \d{8}T\d{6}Z is now earlier than \d{8}T\d{6}Z \(\d{8}T\d{6}Z - 5 min\.\)$/);
    err = await expectReject(send({ systemClockOffset: 10 * 60 * 1000 }), 'InvalidSignatureException', 403);
    assert.match(err.message, /^Signature not yet current/);
    err = await expectReject(send({ region: 'us-west-2' }), 'InvalidSignatureException', 403);
    assert.match(err.message, /scoped to a valid region/);

    // Accepted signing variants: token sent but not signed, UNSIGNED-PAYLOAD.
    const path = `/model/${encodeURIComponent(CLAUDE)}/invoke`;
    const body = JSON.parse(claudeBody('x'));
    let ok = await signedFetch({ url: fake.url, method: 'POST', path, body, creds: live, unsignedSessionToken: true });
    assert.equal(ok.status, 200, ok.body.toString());
    assert.ok(!/x-amz-security-token/.test(fake.last().headers.authorization));
    ok = await signedFetch({ url: fake.url, method: 'POST', path, body, creds, unsignedPayload: true });
    assert.equal(ok.status, 200, ok.body.toString());
    // A body changed after signing is refused.
    const u = new URL(fake.url);
    const signed = await new SignatureV4({ credentials: creds, region: REGION, service: 'bedrock', sha256: Sha256 }).sign(
      new HttpRequest({ method: 'POST', protocol: 'http:', hostname: u.hostname, port: Number(u.port), path, headers: { host: u.host, 'content-type': 'application/json' }, body: claudeBody('x') }),
    );
    const tampered = await rawRequest(`${fake.url}${path}`, { method: 'POST', headers: signed.headers, body: claudeBody('y') });
    assert.equal(tampered.status, 403);
    assert.match(tampered.headers['x-amzn-errortype'], /^InvalidSignatureException:/);

    const raw = await rawRequest(`${fake.url}/model/${encodeURIComponent(CLAUDE)}/invoke`, { method: 'POST', body: claudeBody('x') });
    assert.equal(raw.status, 403);
    assert.match(raw.headers['x-amzn-errortype'], /^MissingAuthenticationTokenException:/);
    const rejected = fake.requests.filter((r) => r.rejected);
    assert.ok(rejected.every((r) => r.usage === null && r.status >= 400));
  });
});

describe('fake SageMaker runtime', () => {
  const registry = new Map();
  let creds;
  let fake;
  let def; // default handler (NodeHttpHandler for this client)
  let h1;

  before(async () => {
    creds = staticCreds(registry);
    fake = await startFakeSageMaker({ registry, region: REGION });
    def = new SageMakerRuntimeClient({ region: REGION, endpoint: fake.url, credentials: creds, maxAttempts: 1 });
    h1 = new SageMakerRuntimeClient({ region: REGION, endpoint: fake.url, credentials: creds, maxAttempts: 1, requestHandler: new NodeHttpHandler() });
  });
  after(async () => {
    def?.destroy();
    h1?.destroy();
    await fake?.close();
  });

  test('InvokeEndpoint TGI with details, custom attributes, variant', T, async () => {
    for (const c of [def, h1]) {
      const out = await c.send(
        new InvokeEndpointCommand({
          EndpointName: 'tgi-llama3',
          ContentType: 'application/json',
          Accept: 'application/json',
          CustomAttributes: 'accept_eula=true',
          InferenceComponentName: 'ic-llama3',
          Body: enc({ inputs: 'tell me a story', parameters: { max_new_tokens: 5, details: true, decoder_input_details: true } }),
        }),
      );
      assert.equal(out.ContentType, 'application/json');
      assert.equal(out.InvokedProductionVariant, 'AllTraffic');
      assert.equal(out.CustomAttributes, 'accept_eula=true');
      const [r] = json(out.Body);
      assert.equal(r.generated_text, wordsOut(5));
      assert.equal(r.details.finish_reason, 'length');
      assert.equal(r.details.generated_tokens, 5);
      assert.equal(r.details.tokens.length, 5);
      assert.equal(r.details.prefill.length, 4 + 3);
      const rec = fake.last();
      assert.equal(rec.op, 'InvokeEndpoint');
      assert.equal(rec.endpointName, 'tgi-llama3');
      assert.equal(rec.inferenceComponent, 'ic-llama3');
      assert.equal(rec.auth, 'sigv4');
      assert.deepEqual(rec.usage, { input: 7, output: 5, cacheRead: 0, cacheWrite: 0 });
    }
    // Without details: no token counts at all.
    const plain = await h1.send(new InvokeEndpointCommand({ EndpointName: 'tgi-llama3', ContentType: 'application/json', Body: enc({ inputs: 'x', parameters: {} }) }));
    assert.deepEqual(json(plain.Body), [{ generated_text: wordsOut(DEFAULT_OUTPUT) }]);
    assert.equal(fake.last().usage, null);
    // details without decoder_input_details: TGI leaves prefill empty.
    const d = await h1.send(new InvokeEndpointCommand({ EndpointName: 'tgi-llama3', ContentType: 'application/json', Body: enc({ inputs: 'x', parameters: { details: true } }) }));
    assert.deepEqual(json(d.Body)[0].details.prefill, []);
    assert.deepEqual(fake.last().usage, { input: null, output: DEFAULT_OUTPUT, cacheRead: 0, cacheWrite: 0 });
  });

  test('InvokeEndpoint: TGI Messages API, vLLM, JumpStart', T, async () => {
    const chat = await h1.send(new InvokeEndpointCommand({ EndpointName: 'tgi-chat', ContentType: 'application/json', Body: enc({ model: 'placeholder-model', messages: [{ role: 'user', content: 'hi there' }], max_tokens: 3 }) }));
    const c = json(chat.Body);
    assert.equal(c.object, 'chat.completion');
    assert.equal(c.choices[0].message.content, 'w1 w2 w3');
    assert.deepEqual(c.usage, { prompt_tokens: 5, completion_tokens: 3, total_tokens: 8 });
    assert.deepEqual(fake.last().usage, { input: 5, output: 3, cacheRead: 0, cacheWrite: 0 });

    const v = await def.send(new InvokeEndpointCommand({ EndpointName: 'vllm-qwen', ContentType: 'application/json', Body: enc({ model: 'qwen', messages: [{ role: 'user', content: [{ type: 'text', text: 'a' }] }] }) }));
    assert.deepEqual(json(v.Body).usage, { prompt_tokens: 4, completion_tokens: DEFAULT_OUTPUT, total_tokens: 4 + DEFAULT_OUTPUT });

    const emb = await h1.send(new InvokeEndpointCommand({ EndpointName: 'jumpstart-minilm', ContentType: 'application/json', Body: enc({ text_inputs: 'Hello', mode: 'embedding' }) }));
    const e = json(emb.Body);
    assert.equal(e.embedding.length, 1);
    assert.equal(e.embedding[0].length, 384);
    assert.equal(fake.last().usage, null);
    const gen = await h1.send(new InvokeEndpointCommand({ EndpointName: 'jumpstart-falcon', ContentType: 'application/json', Body: enc({ inputs: 'Hello', max_new_tokens: 2 }) }));
    assert.deepEqual(json(gen.Body), { generated_text: 'w1 w2' });
    assert.equal(fake.last().usage, null);
  });

  test('InvokeEndpointWithResponseStream: TGI SSE split across parts, details reassembled', T, async () => {
    for (const c of [def, h1]) {
      const out = await c.send(
        new InvokeEndpointWithResponseStreamCommand({
          EndpointName: 'tgi-llama3',
          ContentType: 'application/json',
          Accept: 'text/event-stream',
          CustomAttributes: 'trace=1',
          Body: enc({ inputs: 'one two', parameters: { max_new_tokens: 6, details: true }, stream: true }),
        }),
      );
      assert.equal(out.ContentType, 'text/event-stream');
      assert.equal(out.InvokedProductionVariant, 'AllTraffic');
      assert.equal(out.CustomAttributes, 'trace=1');
      const parts = [];
      for await (const e of out.Body) parts.push(Buffer.from(e.PayloadPart.Bytes));
      const text = Buffer.concat(parts).toString('utf8');
      const events = text.split('\n\n').filter(Boolean);
      assert.equal(events.length, 6);
      assert.ok(parts.length > events.length, 'bytes are split across more parts than events');
      assert.ok(parts.some((p) => !p.toString().endsWith('\n\n')), 'some part ends mid-event');
      const lines = events.map((l) => {
        assert.ok(l.startsWith('data:'));
        return JSON.parse(l.slice(5));
      });
      assert.deepEqual(lines[0].token, { id: 1000, text: 'w1', logprob: -0.25, special: false });
      assert.equal(lines[0].generated_text, null);
      assert.equal(lines[0].details, null);
      assert.equal(lines.map((l) => l.token.text).join(''), wordsOut(6));
      const last = lines.at(-1);
      assert.equal(last.generated_text, wordsOut(6));
      assert.equal(last.details.generated_tokens, 6);
      assert.equal(last.details.finish_reason, 'length');
      assert.deepEqual(fake.last().usage, { input: null, output: 6, cacheRead: 0, cacheWrite: 0 });
    }
  });

  test('InvokeEndpointWithResponseStream: vLLM SSE with a usage chunk', T, async () => {
    const out = await h1.send(
      new InvokeEndpointWithResponseStreamCommand({
        EndpointName: 'vllm-qwen',
        ContentType: 'application/json',
        Body: enc({ model: 'qwen', messages: [{ role: 'user', content: 'p q r' }], max_tokens: 4, stream: true, stream_options: { include_usage: true } }),
      }),
    );
    const parts = [];
    for await (const e of out.Body) parts.push(Buffer.from(e.PayloadPart.Bytes));
    const data = Buffer.concat(parts).toString().split('\n\n').filter(Boolean).map((l) => l.replace(/^data: /, ''));
    assert.equal(data.at(-1), '[DONE]');
    const chunks = data.slice(0, -1).map((d) => JSON.parse(d));
    assert.equal(chunks.map((c) => c.choices[0]?.delta?.content || '').join(''), 'w1 w2 w3 w4');
    assert.deepEqual(chunks.at(-1).choices, []);
    assert.deepEqual(chunks.at(-1).usage, { prompt_tokens: 6, completion_tokens: 4, total_tokens: 10 });
    assert.deepEqual(fake.last().usage, { input: 6, output: 4, cacheRead: 0, cacheWrite: 0 });
  });

  test('errors: ModelError, ValidationError, ServiceUnavailable, ThrottlingException, InternalFailure', T, async () => {
    const body = enc({ inputs: 'x' });
    const err = await expectReject(h1.send(new InvokeEndpointCommand({ EndpointName: 'fail.ModelError', ContentType: 'application/json', Body: body })), 'ModelError', 424, ModelError);
    assert.equal(err.OriginalStatusCode, 400);
    assert.match(err.OriginalMessage, /Input validation error/);
    assert.match(err.LogStreamArn, /^arn:aws:logs:us-east-1:123456789012:log-group:\/aws\/sagemaker\/Endpoints\/fail\.ModelError$/);
    assert.match(err.message, /^Received client error \(400\) from primary with message/);
    for (const [name, status, cls] of [
      ['ValidationError', 400, ValidationError],
      ['ServiceUnavailable', 503, ServiceUnavailable],
      ['ThrottlingException', 400, SageMakerRuntimeServiceException],
      ['InternalFailure', 500, InternalFailure],
    ]) {
      await expectReject(def.send(new InvokeEndpointCommand({ EndpointName: `fail.${name}`, ContentType: 'application/json', Body: body })), name, status, cls);
      assert.equal(fake.last().usage, null);
    }
    await expectReject(h1.send(new InvokeEndpointCommand({ EndpointName: 'nosuch-endpoint', ContentType: 'application/json', Body: body })), 'ValidationError', 400, ValidationError);
    // A container that rejects the body: ModelError with its status.
    const bad = await expectReject(h1.send(new InvokeEndpointCommand({ EndpointName: 'tgi-x', ContentType: 'application/json', Body: enc({ nope: 1 }) })), 'ModelError', 424, ModelError);
    assert.equal(bad.OriginalStatusCode, 422);
    // Streams fail up front the same way.
    await expectReject(h1.send(new InvokeEndpointWithResponseStreamCommand({ EndpointName: 'fail.ModelError', ContentType: 'application/json', Body: body })), 'ModelError', 424, ModelError);
  });

  test('midstream.ModelStreamError: parts, then the SDK raises ModelStreamError', T, async () => {
    const out = await h1.send(new InvokeEndpointWithResponseStreamCommand({ EndpointName: 'midstream.ModelStreamError.tgi-llama3', ContentType: 'application/json', Body: enc({ inputs: 'x', parameters: { details: true }, stream: true }) }));
    const parts = [];
    const err = await (async () => {
      for await (const e of out.Body) parts.push(Buffer.from(e.PayloadPart.Bytes));
    })().then(() => null, (e) => e);
    assert.equal(err?.name, 'ModelStreamError');
    assert.equal(err.ErrorCode, 'ModelStreamError');
    assert.equal(Buffer.concat(parts).toString().split('\n\n').filter(Boolean).length, 2);
    const rec = fake.last();
    assert.equal(rec.usage, null);
    assert.equal(rec.eventsSent, 2);
  });

  test('refusals: wrong secret, wrong service scope, skew', T, async () => {
    const mk = (extra) => new SageMakerRuntimeClient({ region: REGION, endpoint: fake.url, credentials: creds, maxAttempts: 1, ...extra });
    const send = (c) => c.send(new InvokeEndpointCommand({ EndpointName: 'tgi-x', ContentType: 'application/json', Body: enc({ inputs: 'x' }) })).finally(() => c.destroy());
    await expectReject(send(mk({ credentials: { accessKeyId: creds.accessKeyId, secretAccessKey: 'nope' } })), 'InvalidSignatureException', 403);
    await expectReject(send(mk({ systemClockOffset: -6 * 60 * 1000 })), 'InvalidSignatureException', 403);
    const r = await signedFetch({ url: fake.url, method: 'POST', path: '/endpoints/tgi-x/invocations', body: { inputs: 'x' }, creds, service: 'bedrock' });
    assert.equal(r.status, 403);
    assert.match(r.json.message, /scoped to correct service: 'sagemaker'/);
  });
});

async function waitUntil(fn, ms = 3000) {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error('waitUntil: timed out');
    await new Promise((r) => setTimeout(r, 10));
  }
}

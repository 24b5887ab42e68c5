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
  fakeEmbedding,
  toolUseIdFor,
  sniffImage,
  TINY_PNG_BASE64,
  SDXL_V1_DIMENSIONS,
  CACHE_READ,
  CACHE_WRITE,
  DEFAULT_OUTPUT,
  MAX_OUTPUT,
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

// ---------------------------------------------------------------------------
// Model families as the reference gateway's notebooks call them, tool use,
// and the refusals, through the real SDKs.

/** Records the raw HTTP response headers of every call a client makes. */
function captureHeaders(client) {
  const seen = { headers: null };
  client.middlewareStack.add(
    (next) => async (args) => {
      const r = await next(args);
      seen.headers = r.response?.headers ?? null;
      return r;
    },
    { step: 'deserialize', name: 'fakeTestCaptureHeaders' },
  );
  return seen;
}

const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
const WEBP_B64 = Buffer.concat([Buffer.from('RIFF'), Buffer.from([26, 0, 0, 0]), Buffer.from('WEBPVP8 '), Buffer.alloc(14)]).toString('base64');
const WEATHER_TOOLS = {
  tools: [
    {
      toolSpec: {
        name: 'get_weather',
        description: 'Get weather of a location.',
        inputSchema: {
          json: {
            type: 'object',
            properties: {
              city: { type: 'string', description: 'The name of the city' },
              state: { type: 'string', description: 'The two-letter state code' },
            },
            required: ['city', 'state'],
          },
        },
      },
    },
  ],
};

describe('fake Bedrock: model families (InvokeModel / stream), embeddings, images', () => {
  const registry = new Map();
  let fake;
  let c; // HTTP/1.1
  let c2; // HTTP/2
  let seen;

  before(async () => {
    const creds = staticCreds(registry);
    fake = await startFakeBedrock({ registry, region: REGION });
    c = new BedrockRuntimeClient({ region: REGION, endpoint: fake.url, credentials: creds, maxAttempts: 1, requestHandler: new NodeHttpHandler() });
    c2 = new BedrockRuntimeClient({ region: REGION, endpoint: fake.url, credentials: creds, maxAttempts: 1 });
    seen = captureHeaders(c);
  });
  after(async () => {
    c?.destroy();
    c2?.destroy();
    await fake?.close();
  });

  const invoke = async (modelId, body) => {
    const out = await c.send(new InvokeModelCommand({ modelId, contentType: 'application/json', accept: 'application/json', body: enc(body) }));
    return { json: json(out.body), headers: seen.headers, rec: fake.last('InvokeModel') };
  };
  const refuse = async (modelId, body, message, op = InvokeModelCommand) => {
    const input = op === ConverseCommand || op === ConverseStreamCommand ? { modelId, ...body } : { modelId, body: enc(body) };
    const err = await expectReject(c.send(new op(input)), 'ValidationException', 400, ValidationException);
    if (message instanceof RegExp) assert.match(err.message, message);
    else assert.equal(err.message, message);
    assert.equal(fake.last().usage, null);
    assert.deepEqual(fake.last().body, body, 'the parsed body is recorded even when refused');
    return err;
  };
  const malformed = (...v) => `Malformed input request: ${v.join('')}, please reformat your input and try again.`;
  const streamChunks = async (client, modelId, body) => {
    const out = await client.send(new InvokeModelWithResponseStreamCommand({ modelId, body: enc(body) }));
    const chunks = [];
    for await (const e of out.body) chunks.push(json(e.chunk.bytes));
    return chunks;
  };
  const metricsKeys = ['firstByteLatency', 'inputTokenCount', 'invocationLatency', 'outputTokenCount'];

  test('Anthropic Text Completions (claude-v2, v2:1, instant-v1): body, headers, stream chunks', T, async () => {
    const prompt = '\n\nHuman: What is Amazon Bedrock?\n\nAssistant:';
    for (const id of ['anthropic.claude-v2', 'anthropic.claude-v2:1', 'anthropic.claude-instant-v1']) {
      const r = await invoke(id, { prompt, max_tokens_to_sample: 5, temperature: 0.2 });
      assert.deepEqual(r.json, { type: 'completion', completion: ` ${wordsOut(5)}`, stop_reason: 'max_tokens', stop: null }, id);
      assert.equal(r.headers['x-amzn-bedrock-input-token-count'], '9');
      assert.equal(r.headers['x-amzn-bedrock-output-token-count'], '5');
      assert.deepEqual(r.rec.usage, { input: 9, output: 5, cacheRead: 0, cacheWrite: 0 });
      assert.deepEqual(r.rec.body, { prompt, max_tokens_to_sample: 5, temperature: 0.2 });
    }
    // The notebook's 4096: past the fake's cap, so the model "stops" by itself.
    const big = await invoke('anthropic.claude-v2', { prompt, max_tokens_to_sample: 4096 });
    assert.deepEqual(big.json, { type: 'completion', completion: ` ${wordsOut(MAX_OUTPUT)}`, stop_reason: 'stop_sequence', stop: '\n\nHuman:' });
    // A system prompt before the first Human turn is allowed (Claude 2.1).
    await invoke('anthropic.claude-v2:1', { prompt: `You are terse.${prompt}`, max_tokens_to_sample: 2 });

    const chunks = await streamChunks(c2, 'anthropic.claude-instant-v1', { prompt, max_tokens_to_sample: 5 });
    for (const ch of chunks.slice(0, -1)) assert.deepEqual(Object.keys(ch).sort(), ['completion', 'stop', 'stop_reason', 'type']);
    assert.equal(chunks.map((x) => x.completion).join(''), wordsOut(5));
    const last = chunks.at(-1);
    assert.equal(last.stop_reason, 'max_tokens');
    assert.deepEqual(Object.keys(last['amazon-bedrock-invocationMetrics']).sort(), metricsKeys);
    assert.equal(last['amazon-bedrock-invocationMetrics'].inputTokenCount, 9);
    assert.equal(last['amazon-bedrock-invocationMetrics'].outputTokenCount, 5);
  });

  test('Anthropic refusals: prompt turns, schema, Claude 3+ on the Text Completions API', T, async () => {
    await refuse('anthropic.claude-v2', { prompt: 'What is Amazon Bedrock?', max_tokens_to_sample: 5 },
      'prompt must start with "\n\nHuman:" turn after an optional system prompt, prompt must end with "\n\nAssistant:" turn');
    await refuse('anthropic.claude-v2', { prompt: '\n\nHuman: hi', max_tokens_to_sample: 5 }, 'prompt must end with "\n\nAssistant:" turn');
    await refuse('anthropic.claude-v2:1', { prompt: '\n\nHuman: hi\n\nAssistant:' }, malformed('#: required key [max_tokens_to_sample] not found'));
    await refuse('anthropic.claude-v2:1', { prompt: '\n\nHuman: hi\n\nAssistant:', max_tokens_to_sample: '5' }, malformed('#/max_tokens_to_sample: expected type: Integer, found: String'));
    await refuse('anthropic.claude-v2:1', { prompt: '\n\nHuman: hi\n\nAssistant:', max_tokens_to_sample: 5, maxTokens: 5 }, malformed('#: extraneous key [maxTokens] is not permitted'));
    await refuse('anthropic.claude-v2:1', { prompt: '\n\nHuman: hi\n\nAssistant:', max_tokens_to_sample: 5000, temperature: 2 },
      malformed('#/max_tokens_to_sample: 5000 is not less or equal to 4096', '#/temperature: 2 is not less or equal to 1'));
    await refuse('anthropic.claude-3-sonnet-20240229-v1:0', { prompt: '\n\nHuman: hi\n\nAssistant:', max_tokens_to_sample: 5 },
      '"claude-3-sonnet-20240229" is not supported on this API. Please use the Messages API instead.');
    await refuse('us.anthropic.claude-3-5-sonnet-20240620-v1:0', { prompt: '\n\nHuman: hi\n\nAssistant:', max_tokens_to_sample: 5 },
      '"claude-3-5-sonnet-20240620" is not supported on this API. Please use the Messages API instead.');
    await refuse('anthropic.claude-sonnet-4-20250514-v1:0', { prompt: '\n\nHuman: hi\n\nAssistant:', max_tokens_to_sample: 5 }, /^"claude-sonnet-4-20250514" is not supported on this API/, InvokeModelWithResponseStreamCommand);
  });

  test('Titan text: notebook body, exact answer, stream chunk shape, refusals', T, async () => {
    const body = { inputText: 'What is Amazon Bedrock?', textGenerationConfig: { maxTokenCount: 4096, temperature: 0.2 } };
    const r = await invoke('amazon.titan-text-express-v1', body);
    assert.deepEqual(r.json, { inputTextTokenCount: 7, results: [{ tokenCount: MAX_OUTPUT, outputText: wordsOut(MAX_OUTPUT), completionReason: 'FINISH' }] });
    assert.equal(r.headers['x-amzn-bedrock-input-token-count'], '7');
    assert.equal(r.headers['x-amzn-bedrock-output-token-count'], String(MAX_OUTPUT));
    const t = await invoke('amazon.titan-tg1-large', { inputText: 'a b', textGenerationConfig: { maxTokenCount: 3, topP: 0.9, stopSequences: ['User:'] } });
    assert.deepEqual(t.json.results, [{ tokenCount: 3, outputText: 'w1 w2 w3', completionReason: 'LENGTH' }]);

    const chunks = await streamChunks(c, 'amazon.titan-text-lite-v1', { inputText: 'a b', textGenerationConfig: { maxTokenCount: 4 } });
    for (const ch of chunks) {
      assert.deepEqual(Object.keys(ch).filter((k) => k !== 'amazon-bedrock-invocationMetrics').sort(), ['completionReason', 'index', 'inputTextTokenCount', 'outputText', 'totalOutputTextTokenCount']);
    }
    assert.equal(chunks[0].inputTextTokenCount, 5);
    assert.equal(chunks.map((x) => x.outputText).join(''), wordsOut(4));
    assert.equal(chunks.at(-1).completionReason, 'LENGTH');
    assert.equal(chunks.at(-1).totalOutputTextTokenCount, 4);
    assert.deepEqual(Object.keys(chunks.at(-1)['amazon-bedrock-invocationMetrics']).sort(), metricsKeys);

    await refuse('amazon.titan-text-express-v1', { inputText: 'x', textGenerationConfig: { maxTokenCount: 9000 } }, malformed('#/textGenerationConfig/maxTokenCount: 9000 is not less or equal to 8192'));
    await refuse('amazon.titan-text-lite-v1', { inputText: 'x', textGenerationConfig: { maxTokenCount: 5000 } }, malformed('#/textGenerationConfig/maxTokenCount: 5000 is not less or equal to 4096'));
    await refuse('amazon.titan-text-express-v1', { inputText: 'x', textGenerationConfig: { maxTokens: 5 } }, malformed('#/textGenerationConfig: extraneous key [maxTokens] is not permitted'));
    // What a gateway that forgot to translate the reference's {inputs, parameters} would send.
    await refuse('amazon.titan-text-express-v1', { inputs: 'x', parameters: {} }, malformed('#: required key [inputText] not found', '#: extraneous key [inputs] is not permitted', '#: extraneous key [parameters] is not permitted'));
  });

  test('Meta Llama, Mistral: exact bodies, stream, refusals', T, async () => {
    const l = await invoke('meta.llama3-1-8b-instruct-v1:0', { prompt: 'hi there', max_gen_len: 2, temperature: 0.5, top_p: 0.9 });
    assert.deepEqual(l.json, { generation: 'w1 w2', prompt_token_count: 5, generation_token_count: 2, stop_reason: 'length' });
    assert.deepEqual([l.headers['x-amzn-bedrock-input-token-count'], l.headers['x-amzn-bedrock-output-token-count']], ['5', '2']);
    await refuse('meta.llama3-1-8b-instruct-v1:0', { prompt: 'hi', max_tokens: 3 }, malformed('#: extraneous key [max_tokens] is not permitted'));
    await refuse('meta.llama3-1-8b-instruct-v1:0', { prompt: 'hi', max_gen_len: 4096 }, malformed('#/max_gen_len: 4096 is not less or equal to 2048'));
    await refuse('meta.llama3-1-8b-instruct-v1:0', { max_gen_len: 5 }, malformed('#: required key [prompt] not found'));
    const lc = await streamChunks(c, 'meta.llama3-1-8b-instruct-v1:0', { prompt: 'hi', max_gen_len: 3 });
    for (const ch of lc) assert.deepEqual(Object.keys(ch).filter((k) => k !== 'amazon-bedrock-invocationMetrics').sort(), ['generation', 'generation_token_count', 'prompt_token_count', 'stop_reason']);
    assert.equal(lc.at(-1)['amazon-bedrock-invocationMetrics'].outputTokenCount, 3);

    const m = await invoke('mistral.mistral-large-2402-v1:0', { prompt: '<s>[INST] What is Amazon Bedrock? [/INST]', max_tokens: 3, temperature: 0.2 });
    assert.deepEqual(m.json, { outputs: [{ text: 'w1 w2 w3', stop_reason: 'length' }] });
    assert.equal(m.headers['x-amzn-bedrock-input-token-count'], String(6 + 3));
    await refuse('mistral.mistral-7b-instruct-v0:2', { prompt: 'x', temperature: 2 }, malformed('#/temperature: 2 is not less or equal to 1'));
    await refuse('mistral.mixtral-8x7b-instruct-v0:1', { prompt: 'x', max_tokens: 5000 }, malformed('#/max_tokens: 5000 is not less or equal to 4096'));
  });

  test('Cohere Command: generations, num_generations, stream chunks and final response, refusals', T, async () => {
    const r = await invoke('cohere.command-text-v14', { prompt: '\nWhat is Amazon Bedrock?\n', max_tokens: 2, temperature: 0.2, num_generations: 2 });
    assert.deepEqual(Object.keys(r.json).sort(), ['generations', 'id', 'prompt']);
    assert.equal(r.json.prompt, '\nWhat is Amazon Bedrock?\n');
    assert.equal(r.json.generations.length, 2);
    for (const g of r.json.generations) {
      assert.deepEqual(Object.keys(g).sort(), ['finish_reason', 'id', 'text']);
      assert.equal(g.text, 'w1 w2');
      assert.equal(g.finish_reason, 'MAX_TOKENS');
    }
    assert.deepEqual([r.headers['x-amzn-bedrock-input-token-count'], r.headers['x-amzn-bedrock-output-token-count']], ['7', '4']);
    assert.deepEqual(r.rec.usage, { input: 7, output: 4, cacheRead: 0, cacheWrite: 0 });
    const notebook = await invoke('cohere.command-text-v14', { prompt: 'q', max_tokens: 4000, temperature: 0.2 });
    assert.equal(notebook.json.generations[0].finish_reason, 'COMPLETE');

    const chunks = await streamChunks(c, 'cohere.command-light-text-v14', { prompt: 'a b', max_tokens: 4, stream: true });
    const body = chunks.filter((x) => !x.is_finished);
    for (const ch of body) assert.deepEqual(Object.keys(ch).sort(), ['index', 'is_finished', 'text']);
    assert.equal(body.map((x) => x.text).join(''), wordsOut(4));
    const fin = chunks.at(-1);
    assert.equal(fin.is_finished, true);
    assert.equal(fin.finish_reason, 'MAX_TOKENS');
    assert.deepEqual(Object.keys(fin.response).sort(), ['generations', 'id', 'prompt']);
    assert.equal(fin.response.generations[0].text, wordsOut(4));
    assert.equal(fin['amazon-bedrock-invocationMetrics'].outputTokenCount, 4);

    await refuse('cohere.command-text-v14', { prompt: 'x', temperature: 6 }, malformed('#/temperature: 6 is not less or equal to 5'));
    await refuse('cohere.command-text-v14', { prompt: 'x', return_likelihoods: 'SOME' }, malformed('#/return_likelihoods: SOME is not a valid enum value'));
  });

  test('AI21 Jurassic-2: exact body with tokens; no streaming', T, async () => {
    const prompt = '\nWhat is Amazon Bedrock?\n';
    const r = await invoke('ai21.j2-ultra', { prompt, maxTokens: 3, temperature: 0.2 });
    assert.deepEqual(Object.keys(r.json).sort(), ['completions', 'id', 'prompt']);
    assert.equal(r.json.prompt.text, prompt);
    assert.equal(r.json.prompt.tokens.length, 7, 'one prompt token per counted input token');
    const [comp] = r.json.completions;
    assert.equal(comp.data.text, 'w1 w2 w3');
    assert.equal(comp.data.tokens.length, 3);
    assert.deepEqual(comp.data.tokens[1], { generatedToken: { token: '▁w2', logprob: -0.5, raw_logprob: -0.5 }, topTokens: null, textRange: { start: 3, end: 5 } });
    assert.deepEqual(comp.finishReason, { reason: 'length', length: 3 });
    assert.deepEqual([r.headers['x-amzn-bedrock-input-token-count'], r.headers['x-amzn-bedrock-output-token-count']], ['7', '3']);
    const free = await invoke('ai21.j2-mid-v1', { prompt: 'x', maxTokens: 4096 });
    assert.deepEqual(free.json.completions[0].finishReason, { reason: 'endoftext' });
    await refuse('ai21.j2-ultra-v1', { prompt: 'x', maxTokens: 3 }, 'The model is unsupported for streaming', InvokeModelWithResponseStreamCommand);
    await refuse('ai21.j2-ultra-v1', { prompt: 'x', max_tokens: 3 }, malformed('#: extraneous key [max_tokens] is not permitted'));
  });

  test('Titan text embeddings v1 / v2: deterministic vectors, dimensions, types, input count only', T, async () => {
    const text = 'What is Amazon Bedrock?';
    const v1 = await invoke('amazon.titan-embed-text-v1', { inputText: text });
    assert.deepEqual(Object.keys(v1.json).sort(), ['embedding', 'inputTextTokenCount']);
    assert.equal(v1.json.embedding.length, 1536);
    assert.deepEqual(v1.json.embedding, fakeEmbedding(text, 1536));
    assert.equal(v1.json.inputTextTokenCount, 7);
    assert.equal(v1.headers['x-amzn-bedrock-input-token-count'], '7');
    assert.equal(v1.headers['x-amzn-bedrock-output-token-count'], undefined);
    assert.deepEqual(v1.rec.usage, { input: 7, output: 0, cacheRead: 0, cacheWrite: 0 });
    await refuse('amazon.titan-embed-text-v1', { inputText: text, dimensions: 256 }, malformed('#: extraneous key [dimensions] is not permitted'));

    const v2 = await invoke('amazon.titan-embed-text-v2:0', { inputText: text, dimensions: 512, normalize: true, embeddingTypes: ['float', 'binary'] });
    assert.deepEqual(Object.keys(v2.json).sort(), ['embedding', 'embeddingsByType', 'inputTextTokenCount']);
    assert.equal(v2.json.embedding.length, 512);
    assert.ok(Math.abs(norm(v2.json.embedding) - 1) < 1e-4, 'normalized');
    assert.deepEqual(v2.json.embeddingsByType.float, v2.json.embedding);
    assert.equal(v2.json.embeddingsByType.binary.length, 512);
    assert.ok(v2.json.embeddingsByType.binary.every((b) => b === 0 || b === 1));
    const def = await invoke('amazon.titan-embed-text-v2:0', { inputText: text });
    assert.equal(def.json.embedding.length, 1024);
    assert.deepEqual(Object.keys(def.json.embeddingsByType), ['float']);
    assert.deepEqual(def.json.embedding, fakeEmbedding(text, 1024, { normalize: true }));
    await refuse('amazon.titan-embed-text-v2:0', { inputText: text, dimensions: 300 }, malformed('#/dimensions: 300 is not a valid enum value'));
    await refuse('amazon.titan-embed-text-v2:0', { inputText: text, embeddingTypes: ['int8'] }, malformed('#/embeddingTypes/0: int8 is not a valid enum value'));
    await refuse('amazon.titan-embed-text-v2:0', { inputText: text }, 'The model is unsupported for streaming', InvokeModelWithResponseStreamCommand);
  });

  test('Titan multimodal embeddings: text and/or PNG/JPEG image, length, refusals', T, async () => {
    const both = await invoke('amazon.titan-embed-image-v1', { inputText: 'a red square', inputImage: TINY_PNG_BASE64 });
    assert.deepEqual(Object.keys(both.json).sort(), ['embedding', 'inputTextTokenCount']);
    assert.equal(both.json.embedding.length, 1024);
    assert.equal(both.json.inputTextTokenCount, 6);
    const img = await invoke('amazon.titan-embed-image-v1', { inputImage: TINY_PNG_BASE64, embeddingConfig: { outputEmbeddingLength: 384 } });
    assert.equal(img.json.embedding.length, 384);
    assert.equal(img.json.inputTextTokenCount, 0);
    assert.equal(img.headers['x-amzn-bedrock-input-token-count'], '0');
    const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0, 16, 0x4a, 0x46, 0x49, 0x46]).toString('base64');
    await invoke('amazon.titan-embed-image-v1', { inputImage: jpeg });
    await refuse('amazon.titan-embed-image-v1', { inputImage: WEBP_B64 }, /#\/inputImage: image format webp is not supported/);
    await refuse('amazon.titan-embed-image-v1', { inputImage: Buffer.from('not an image').toString('base64') }, /#\/inputImage: the value is not a base64-encoded PNG or JPEG image/);
    await refuse('amazon.titan-embed-image-v1', {}, malformed('#: required key [inputText] not found', '#: required key [inputImage] not found'));
    await refuse('amazon.titan-embed-image-v1', { inputText: 'x', embeddingConfig: { outputEmbeddingLength: 512 } }, malformed('#/embeddingConfig/outputEmbeddingLength: 512 is not a valid enum value'));
  });

  test('Cohere Embed v3: texts, embedding_types, images, refusals', T, async () => {
    const text = '\nCosa è Amazon Bedrock?\n';
    const r = await invoke('cohere.embed-multilingual-v3', { texts: [text, 'due'], input_type: 'search_document' });
    assert.deepEqual(Object.keys(r.json).sort(), ['embeddings', 'id', 'response_type', 'texts']);
    assert.equal(r.json.response_type, 'embeddings_floats');
    assert.equal(r.json.embeddings.length, 2);
    assert.deepEqual(r.json.embeddings[0], fakeEmbedding(text, 1024, { normalize: true }));
    assert.deepEqual(r.json.texts, [text.toLowerCase(), 'due']);
    assert.equal(r.headers['x-amzn-bedrock-input-token-count'], String(4 + 1 + 3));
    assert.equal(r.headers['x-amzn-bedrock-output-token-count'], undefined);
    const typed = await invoke('cohere.embed-english-v3', { texts: ['x'], input_type: 'search_query', embedding_types: ['int8', 'float', 'ubinary'] });
    assert.equal(typed.json.response_type, 'embeddings_by_type');
    assert.deepEqual(Object.keys(typed.json.embeddings).sort(), ['float', 'int8', 'ubinary']);
    assert.equal(typed.json.embeddings.int8[0].length, 1024);
    assert.equal(typed.json.embeddings.ubinary[0].length, 128);
    const image = await invoke('cohere.embed-english-v3', { images: [`data:image/png;base64,${TINY_PNG_BASE64}`], input_type: 'image' });
    assert.equal(image.json.embeddings.length, 1);
    assert.equal(image.headers['x-amzn-bedrock-input-token-count'], '0');

    await refuse('cohere.embed-english-v3', { texts: ['x'] }, malformed('#: required key [input_type] not found'));
    await refuse('cohere.embed-english-v3', { texts: ['x'], input_type: 'search' }, malformed('#/input_type: search is not a valid enum value'));
    await refuse('cohere.embed-english-v3', { texts: Array.from({ length: 97 }, () => 'x'), input_type: 'clustering' }, malformed('#/texts: expected maximum item count: 96, found: 97'));
    await refuse('cohere.embed-english-v3', { texts: [], input_type: 'clustering' }, malformed('#/texts: expected minimum item count: 1, found: 0'));
    await refuse('cohere.embed-english-v3', { input_type: 'classification' }, malformed('#: required key [texts] not found'));
    await refuse('cohere.embed-english-v3', { images: [`data:image/jpeg;base64,${TINY_PNG_BASE64}`], input_type: 'image' }, /#\/images\/0: expected a data URI/);
    await refuse('cohere.embed-english-v3', { messages: [{ role: 'user', content: [{ text: 'x' }] }] }, "This action doesn't support the model that you provided. Try again with a supported text or chat model.", ConverseCommand);
  });

  test('Titan Image Generator: images (valid PNG), no token counts, sizes and limits', T, async () => {
    const body = {
      taskType: 'TEXT_IMAGE',
      textToImageParams: { text: '\nblue backpack on a table\n' },
      imageGenerationConfig: { cfgScale: 8, seed: 0, quality: 'standard', width: 512, height: 512, numberOfImages: 2 },
    };
    const r = await invoke('amazon.titan-image-generator-v1', body);
    assert.deepEqual(r.json, { images: [TINY_PNG_BASE64, TINY_PNG_BASE64], error: null });
    assert.equal(sniffImage(r.json.images[0]), 'png');
    assert.equal(r.headers['x-amzn-bedrock-input-token-count'], undefined, 'image models report no token counts');
    assert.equal(r.headers['x-amzn-bedrock-output-token-count'], undefined);
    assert.match(r.headers['x-amzn-bedrock-invocation-latency'], /^\d+$/);
    assert.equal(r.rec.usage, null);
    assert.equal(r.rec.images, 2);
    assert.deepEqual(r.rec.body, body);
    const v2 = await invoke('amazon.titan-image-generator-v2:0', { taskType: 'TEXT_IMAGE', textToImageParams: { text: 'x', negativeText: 'y' } });
    assert.equal(v2.json.images.length, 1);

    const bad = (cfg) => ({ ...body, imageGenerationConfig: { ...body.imageGenerationConfig, ...cfg } });
    await refuse('amazon.titan-image-generator-v1', bad({ width: 500, height: 500 }), /500x500 \(width x height\) is not a supported image size/);
    await refuse('amazon.titan-image-generator-v1', bad({ numberOfImages: 6 }), malformed('#/imageGenerationConfig/numberOfImages: 6 is not less or equal to 5'));
    await refuse('amazon.titan-image-generator-v1', bad({ quality: 'ultra' }), malformed('#/imageGenerationConfig/quality: ultra is not a valid enum value'));
    await refuse('amazon.titan-image-generator-v1', { ...body, textToImageParams: { text: 'x'.repeat(513) } }, malformed('#/textToImageParams/text: expected maxLength: 512, actual: 513'));
    // The reference gateway's body when `parameters` lacks taskType.
    await refuse('amazon.titan-image-generator-v1', { textToImageParams: { text: 'x' } }, malformed('#: required key [taskType] not found'));
    await refuse('amazon.titan-image-generator-v1', body, 'The model is unsupported for streaming', InvokeModelWithResponseStreamCommand);
  });

  test('Stability SDXL: artifacts, allowed dimensions (v1 vs the old id), refusals', T, async () => {
    const params = { cfg_scale: 5, seed: 452345, steps: 60, style_preset: 'photographic', clip_guidance_preset: 'FAST_GREEN', sampler: 'K_DPMPP_2S_ANCESTRAL' };
    const text_prompts = [{ text: '\na beautiful mountain landscape\n', weight: 1.0 }];
    const r = await invoke('stability.stable-diffusion-xl-v1', { text_prompts, ...params, width: 1152, height: 896 });
    assert.deepEqual(r.json, { result: 'success', artifacts: [{ seed: 452345, base64: TINY_PNG_BASE64, finishReason: 'SUCCESS' }] });
    assert.equal(r.headers['x-amzn-bedrock-input-token-count'], undefined);
    assert.equal(r.rec.usage, null);
    // The notebook's body (width 768, no height): refused by SDXL 1.0, served by the old id.
    await refuse('stability.stable-diffusion-xl-v1', { text_prompts, ...params, width: 768 },
      `for stable-diffusion-xl-1024-v1-0 the allowed dimensions are ${SDXL_V1_DIMENSIONS.join(', ')}, but we received 768x1024`);
    const old = await invoke('stability.stable-diffusion-xl', { text_prompts, ...params, width: 768 });
    assert.equal(old.json.artifacts[0].finishReason, 'SUCCESS');
    const seeded = await invoke('stability.stable-diffusion-xl-v1', { text_prompts });
    assert.equal(typeof seeded.json.artifacts[0].seed, 'number');

    await refuse('stability.stable-diffusion-xl-v1', { text_prompts, steps: 5 }, malformed('#/steps: 5 is not greater or equal to 10'));
    await refuse('stability.stable-diffusion-xl-v1', { text_prompts, samples: 2 }, malformed('#/samples: 2 is not less or equal to 1'));
    await refuse('stability.stable-diffusion-xl-v1', { text_prompts, style_preset: 'watercolor' }, malformed('#/style_preset: watercolor is not a valid enum value'));
    await refuse('stability.stable-diffusion-xl-v1', { prompt: 'x' }, malformed('#: required key [text_prompts] not found', '#: extraneous key [prompt] is not permitted'));
    await refuse('stability.stable-diffusion-xl-v1', { messages: [{ role: 'user', content: [{ text: 'x' }] }] },
      "This action doesn't support the model that you provided. Try again with a supported text or chat model.", ConverseCommand);
  });
});

describe('fake Bedrock: Converse / ConverseStream tool use', () => {
  const registry = new Map();
  let fake;
  let c; // HTTP/1.1
  let c2; // HTTP/2
  const SONNET3 = 'anthropic.claude-3-sonnet-20240229-v1:0';
  const ask = (text) => [{ role: 'user', content: [{ text }] }];

  before(async () => {
    const creds = staticCreds(registry);
    fake = await startFakeBedrock({ registry, region: REGION });
    c = new BedrockRuntimeClient({ region: REGION, endpoint: fake.url, credentials: creds, maxAttempts: 1, requestHandler: new NodeHttpHandler() });
    c2 = new BedrockRuntimeClient({ region: REGION, endpoint: fake.url, credentials: creds, maxAttempts: 1 });
  });
  after(async () => {
    c?.destroy();
    c2?.destroy();
    await fake?.close();
  });

  const refuse = async (input, message, cmd = ConverseCommand) => {
    const err = await expectReject(c.send(new cmd(input)), 'ValidationException', 400, ValidationException);
    assert.equal(err.message, message);
    assert.equal(fake.last().usage, null);
  };

  test('Converse: a tool call, then the answer to its toolResult (the notebook flow)', T, async () => {
    const messages = ask('What is the weather like in Seattle, WA?');
    const out = await c.send(new ConverseCommand({ modelId: SONNET3, messages, toolConfig: WEATHER_TOOLS }));
    assert.equal(out.stopReason, 'tool_use');
    const toolUseId = toolUseIdFor(messages, 'get_weather');
    assert.match(toolUseId, /^tooluse_[A-Za-z0-9_-]{22}$/);
    assert.deepEqual(out.output.message, {
      role: 'assistant',
      content: [{ text: wordsOut(DEFAULT_OUTPUT) }, { toolUse: { toolUseId, name: 'get_weather', input: { city: 'fake-city', state: 'fake-state' } } }],
    });
    // 8 words asked + 5 of the tool description + 3.
    assert.deepEqual(out.usage, { inputTokens: 16, outputTokens: DEFAULT_OUTPUT, totalTokens: 16 + DEFAULT_OUTPUT });
    const rec = fake.last('Converse');
    assert.deepEqual(rec.toolUse, { toolUseId, name: 'get_weather', input: { city: 'fake-city', state: 'fake-state' } });
    assert.deepEqual(rec.body.toolConfig, WEATHER_TOOLS);
    assert.equal(rec.textSent, wordsOut(DEFAULT_OUTPUT));

    const followUp = [
      ...messages,
      out.output.message,
      { role: 'user', content: [{ toolResult: { toolUseId, content: [{ text: 'sunny 20 C' }], status: 'success' } }] },
    ];
    const ans = await c2.send(new ConverseCommand({ modelId: SONNET3, messages: followUp, toolConfig: WEATHER_TOOLS, inferenceConfig: { maxTokens: 4 } }));
    assert.equal(ans.stopReason, 'max_tokens');
    assert.deepEqual(ans.output.message, { role: 'assistant', content: [{ text: wordsOut(4) }] });
    assert.equal(ans.usage.inputTokens, 8 + DEFAULT_OUTPUT + 3 + 5 + 3);
    assert.equal(fake.last().toolUse, undefined);

    // Nova (any non-Claude model) answers with the toolUse block alone; the tool's name triggers it too.
    const nova = await c.send(new ConverseCommand({ modelId: 'us.amazon.nova-pro-v1:0', messages: ask('please call get_weather'), toolConfig: WEATHER_TOOLS }));
    assert.equal(nova.stopReason, 'tool_use');
    assert.equal(nova.output.message.content.length, 1);
    assert.equal(nova.output.message.content[0].toolUse.name, 'get_weather');
    // No trigger: plain text.
    const plain = await c.send(new ConverseCommand({ modelId: SONNET3, messages: ask('tell me a joke'), toolConfig: WEATHER_TOOLS }));
    assert.equal(plain.stopReason, 'end_turn');
    assert.deepEqual(plain.output.message.content, [{ text: wordsOut(DEFAULT_OUTPUT) }]);
  });

  test('Converse toolChoice: {tool} forces a tool, {any} forces the first', T, async () => {
    const tools = {
      tools: [
        WEATHER_TOOLS.tools[0],
        { toolSpec: { name: 'get_time', description: 'Time now.', inputSchema: { json: { type: 'object', properties: { zone: { type: 'string', enum: ['UTC', 'PST'] }, hours: { type: 'integer' } } } } } },
      ],
    };
    const forced = await c.send(new ConverseCommand({ modelId: SONNET3, messages: ask('hello'), toolConfig: { ...tools, toolChoice: { tool: { name: 'get_time' } } } }));
    assert.deepEqual(forced.output.message.content.at(-1).toolUse.input, { zone: 'UTC', hours: 1 });
    const any = await c.send(new ConverseCommand({ modelId: SONNET3, messages: ask('hello'), toolConfig: { ...tools, toolChoice: { any: {} } } }));
    assert.equal(any.output.message.content.at(-1).toolUse.name, 'get_weather');
    await refuse({ modelId: SONNET3, messages: ask('hello'), toolConfig: { ...tools, toolChoice: { tool: { name: 'nope' } } } },
      'The tool nope in toolChoice is not defined in toolConfig.tools. Try again with a tool name that is defined in toolConfig.tools.');
  });

  test('Converse refusals: toolResult ids, counts, toolConfig, roles, tool support, limits', T, async () => {
    const messages = ask('weather in Boston?');
    const first = await c.send(new ConverseCommand({ modelId: SONNET3, messages, toolConfig: WEATHER_TOOLS }));
    const { toolUseId } = first.output.message.content.at(-1).toolUse;
    const turn = (...results) => [...messages, first.output.message, { role: 'user', content: results.map((id) => ({ toolResult: { toolUseId: id, content: [{ text: 'ok' }] } })) }];
    await refuse({ modelId: SONNET3, messages: turn('tooluse_notTheOneYouGot0000'), toolConfig: WEATHER_TOOLS }, `Expected toolResult blocks at messages.2.content for the following Ids: ${toolUseId}`);
    await refuse({ modelId: SONNET3, messages: turn(toolUseId, 'tooluse_extra'), toolConfig: WEATHER_TOOLS }, 'The number of toolResult blocks at messages.2.content exceeds the number of toolUse blocks of previous turn.');
    await refuse({ modelId: SONNET3, messages: turn(toolUseId) }, 'The toolConfig field must be defined when using toolUse and toolResult content blocks.');
    // A toolResult with no toolUse before it at all.
    await refuse({ modelId: SONNET3, messages: [{ role: 'user', content: [{ toolResult: { toolUseId, content: [{ text: 'x' }] } }] }], toolConfig: WEATHER_TOOLS },
      'The number of toolResult blocks at messages.0.content exceeds the number of toolUse blocks of previous turn.');
    // The assistant asked for a tool, the user answered with text only.
    await refuse({ modelId: SONNET3, messages: [...messages, first.output.message, { role: 'user', content: [{ text: 'never mind' }] }], toolConfig: WEATHER_TOOLS },
      `Expected toolResult blocks at messages.2.content for the following Ids: ${toolUseId}`);
    await refuse({ modelId: 'amazon.titan-text-express-v1', messages, toolConfig: WEATHER_TOOLS }, "This model doesn't support tool use.");
    await refuse({ modelId: 'anthropic.claude-v2:1', messages, toolConfig: WEATHER_TOOLS }, "This model doesn't support tool use.");
    await refuse({ modelId: SONNET3, messages: [...ask('a'), ...ask('b')] }, 'A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.');
    await refuse({ modelId: SONNET3, messages: [{ role: 'assistant', content: [{ text: 'a' }] }] }, 'A conversation must start with a user message. Try again with a conversation that starts with a user message.');
    await refuse({ modelId: SONNET3, messages, inferenceConfig: { maxTokens: 5000 } }, 'The maximum tokens you requested exceeds the model limit of 4096. Try again with a maximum tokens value that is lower than 4096.');
    await refuse({ modelId: 'amazon.titan-text-express-v1', messages, inferenceConfig: { maxTokens: 8193 } }, 'The maximum tokens you requested exceeds the model limit of 8192. Try again with a maximum tokens value that is lower than 8192.');
    await refuse({ modelId: SONNET3, messages, inferenceConfig: { temperature: 1.5 } }, "1 validation error detected: Value '1.5' at 'inferenceConfig.temperature' failed to satisfy constraint: Member must have value less than or equal to 1");
    // The notebook's values are accepted: Claude 3 Sonnet 4096, Titan 4096, Jurassic 4096.
    for (const modelId of [SONNET3, 'amazon.titan-text-express-v1', 'ai21.j2-ultra', 'anthropic.claude-v2:1']) {
      await c.send(new ConverseCommand({ modelId, messages: ask('What is Amazon Bedrock?'), inferenceConfig: { maxTokens: 4096, temperature: 0.2, topP: 0.9 } }));
    }
    // ConverseStream checks the same, before any event.
    await refuse({ modelId: SONNET3, messages: turn('tooluse_notTheOneYouGot0000'), toolConfig: WEATHER_TOOLS }, `Expected toolResult blocks at messages.2.content for the following Ids: ${toolUseId}`, ConverseStreamCommand);
  });

  test('ConverseStream: text block, then contentBlockStart toolUse, input deltas, tool_use stop, metadata', T, async () => {
    const messages = ask("What's the weather in Seattle?");
    const out = await c2.send(new ConverseStreamCommand({ modelId: 'us.anthropic.claude-3-5-sonnet-20240620-v1:0', messages, toolConfig: WEATHER_TOOLS }));
    const events = [];
    for await (const e of out.stream) events.push(e);
    const kinds = events.map((e) => Object.keys(e)[0]);
    assert.deepEqual(kinds, [
      'messageStart',
      'contentBlockDelta', 'contentBlockDelta', 'contentBlockDelta', 'contentBlockDelta',
      'contentBlockStop',
      'contentBlockStart',
      'contentBlockDelta', 'contentBlockDelta', 'contentBlockDelta',
      'contentBlockStop',
      'messageStop',
      'metadata',
    ]);
    const toolUseId = toolUseIdFor(messages, 'get_weather');
    const text = events.slice(1, 5).map((e) => e.contentBlockDelta.delta.text).join('');
    assert.equal(text, wordsOut(DEFAULT_OUTPUT));
    assert.ok(events.slice(1, 5).every((e) => e.contentBlockDelta.contentBlockIndex === 0));
    assert.equal(events[5].contentBlockStop.contentBlockIndex, 0);
    const start = events[6].contentBlockStart;
    assert.equal(start.contentBlockIndex, 1);
    assert.equal(start.start.toolUse.toolUseId, toolUseId);
    assert.equal(start.start.toolUse.name, 'get_weather');
    const pieces = events.slice(7, 10).map((e) => {
      assert.equal(e.contentBlockDelta.contentBlockIndex, 1);
      return e.contentBlockDelta.delta.toolUse.input;
    });
    assert.ok(pieces.every((p) => p.length > 0));
    assert.deepEqual(JSON.parse(pieces.join('')), { city: 'fake-city', state: 'fake-state' });
    assert.equal(events[10].contentBlockStop.contentBlockIndex, 1);
    assert.equal(events[11].messageStop.stopReason, 'tool_use');
    const md = events[12].metadata;
    assert.deepEqual(md.usage, { inputTokens: 5 + 5 + 3, outputTokens: DEFAULT_OUTPUT, totalTokens: 13 + DEFAULT_OUTPUT });
    assert.equal(typeof md.metrics.latencyMs, 'number');
    const rec = fake.last('ConverseStream');
    assert.deepEqual(rec.usage, { input: 13, output: DEFAULT_OUTPUT, cacheRead: 0, cacheWrite: 0 });
    assert.equal(rec.toolUse.toolUseId, toolUseId);
    assert.equal(rec.eventsSent, 4 + 3);

    // Over HTTP/1.1 with Llama 3.1: the toolUse block alone, at index 0; then the follow-up answers text.
    const l = await c.send(new ConverseStreamCommand({ modelId: 'meta.llama3-1-70b-instruct-v1:0', messages, toolConfig: WEATHER_TOOLS }));
    const le = [];
    for await (const e of l.stream) le.push(e);
    assert.deepEqual(le.map((e) => Object.keys(e)[0]).slice(0, 2), ['messageStart', 'contentBlockStart']);
    assert.equal(le[1].contentBlockStart.contentBlockIndex, 0);
    assert.equal(le.at(-2).messageStop.stopReason, 'tool_use');
    const id = le[1].contentBlockStart.start.toolUse.toolUseId;
    const input = JSON.parse(le.filter((e) => e.contentBlockDelta).map((e) => e.contentBlockDelta.delta.toolUse.input).join(''));
    const next = await c.send(new ConverseStreamCommand({
      modelId: 'meta.llama3-1-70b-instruct-v1:0',
      messages: [...messages, { role: 'assistant', content: [{ toolUse: { toolUseId: id, name: 'get_weather', input } }] }, { role: 'user', content: [{ toolResult: { toolUseId: id, content: [{ json: { temp: 20 } }] } }] }],
      toolConfig: WEATHER_TOOLS,
      inferenceConfig: { maxTokens: 3 },
    }));
    const ne = [];
    for await (const e of next.stream) ne.push(e);
    assert.equal(ne.filter((e) => e.contentBlockDelta).map((e) => e.contentBlockDelta.delta.text).join(''), 'w1 w2 w3');
    assert.equal(ne.at(-2).messageStop.stopReason, 'max_tokens');

    // midstream with a tool call: two deltas, then the exception.
    const mid = await c.send(new ConverseStreamCommand({ modelId: 'midstream.throttlingException.meta.llama3-1-70b-instruct-v1:0', messages, toolConfig: WEATHER_TOOLS }));
    const err = await (async () => {
      for await (const _e of mid.stream);
    })().then(() => null, (e) => e);
    assert.equal(err?.name, 'ThrottlingException');
    assert.equal(fake.last().eventsSent, 2);
  });
});

describe('fake SageMaker: JumpStart embeddings, TGI as the notebooks call it, inference components', () => {
  const registry = new Map();
  let fake;
  let c;

  before(async () => {
    const creds = staticCreds(registry);
    fake = await startFakeSageMaker({ registry, region: REGION, inferenceComponents: { 'tgi-components': ['ic-llama3', 'ic-mistral'] } });
    c = new SageMakerRuntimeClient({ region: REGION, endpoint: fake.url, credentials: creds, maxAttempts: 1, requestHandler: new NodeHttpHandler() });
  });
  after(async () => {
    c?.destroy();
    await fake?.close();
  });

  const call = (EndpointName, body, extra = {}) => c.send(new InvokeEndpointCommand({ EndpointName, ContentType: 'application/json', Body: enc(body), ...extra }));

  test('JumpStart text embedding (all-MiniLM-L6-v2): {"embedding": [[384]]} per text, deterministic', T, async () => {
    const ep = 'jumpstart-dft-hf-textembedding-all-minilm-l6-v2';
    const one = await call(ep, { text_inputs: 'Hello', mode: 'embedding' });
    assert.equal(one.ContentType, 'application/json');
    const b = json(one.Body);
    assert.deepEqual(Object.keys(b), ['embedding']);
    assert.deepEqual(b.embedding, [fakeEmbedding('Hello', 384, { normalize: true })]);
    assert.ok(Math.abs(norm(b.embedding[0]) - 1) < 1e-4);
    const rec = fake.last();
    assert.equal(rec.usage, null, 'JumpStart containers report no token counts');
    assert.deepEqual(rec.body, { text_inputs: 'Hello', mode: 'embedding' });
    const two = json((await call(ep, { text_inputs: ['a', 'b'] })).Body);
    assert.equal(two.embedding.length, 2);
    assert.deepEqual(two.embedding[1], fakeEmbedding('b', 384, { normalize: true }));

    let err = await expectReject(call(ep, { inputs: 'Hello' }), 'ModelError', 424, ModelError);
    assert.equal(err.OriginalStatusCode, 400);
    assert.match(err.OriginalMessage, /'text_inputs'/);
    err = await expectReject(call(ep, { text_inputs: 'x', mode: 'nn_corpus' }), 'ModelError', 424, ModelError);
    assert.match(err.OriginalMessage, /Unsupported mode: nn_corpus/);
    err = await expectReject(call(ep, { text_inputs: [1, 2] }), 'ModelError', 424, ModelError);
    assert.match(err.OriginalMessage, /text_inputs must be a string or a non-empty list of strings/);
  });

  test('inference components: required and must exist (option or ic.<names>.<endpoint>)', T, async () => {
    const missing = 'Inference Component Name header is required for endpoints to which you plan to deploy inference components. Please include Inference Component Name header or consider using SageMaker models.';
    let err = await expectReject(call('ic.ic-minilm.jumpstart-minilm', { text_inputs: 'Hello' }), 'ValidationError', 400, ValidationError);
    assert.equal(err.message, missing);
    assert.equal(err.ErrorCode, 'INFERENCE_COMPONENT_NAME_MISSING');
    err = await expectReject(call('ic.ic-minilm.jumpstart-minilm', { text_inputs: 'Hello' }, { InferenceComponentName: 'ic-other' }), 'ValidationError', 400, ValidationError);
    assert.equal(err.message, 'Inference Component ic-other of account 123456789012 not found.');
    const ok = await call('ic.ic-minilm.jumpstart-minilm', { text_inputs: 'Hello', mode: 'embedding' }, { InferenceComponentName: 'ic-minilm' });
    assert.equal(json(ok.Body).embedding[0].length, 384);
    assert.equal(fake.last().inferenceComponent, 'ic-minilm');

    err = await expectReject(call('tgi-components', { inputs: 'x' }), 'ValidationError', 400, ValidationError);
    assert.equal(err.message, missing);
    err = await expectReject(c.send(new InvokeEndpointWithResponseStreamCommand({ EndpointName: 'tgi-components', ContentType: 'application/json', Body: enc({ inputs: 'x', stream: true }) })), 'ValidationError', 400, ValidationError);
    assert.equal(err.message, missing);
    assert.ok(fake.requests.filter((r) => r.errorName === 'ValidationError').every((r) => r.usage === null));
    // Endpoints the fake was not told about accept the header (or its absence).
    await call('tgi-free', { inputs: 'x' }, { InferenceComponentName: 'anything' });
    await call('tgi-free', { inputs: 'x' });
  });

  test('TGI Messages API (notebook shape) and TGI text, through an inference component', T, async () => {
    const body = {
      messages: [{ role: 'system', content: 'You are helpful' }, { role: 'user', content: 'hi there' }],
      model: 'placeholder-model',
      max_tokens: 3,
      top_p: 0.9,
      temperature: 0.6,
      return_full_text: false,
      stop: ['<|eot_id|>'],
    };
    const out = await call('tgi-components', body, { InferenceComponentName: 'ic-llama3' });
    const r = json(out.Body);
    assert.deepEqual(Object.keys(r).sort(), ['choices', 'created', 'id', 'model', 'object', 'system_fingerprint', 'usage']);
    assert.equal(r.object, 'chat.completion');
    assert.deepEqual(r.choices, [{ index: 0, message: { role: 'assistant', content: 'w1 w2 w3' }, logprobs: null, finish_reason: 'length' }]);
    assert.deepEqual(r.usage, { prompt_tokens: 5 + 3, completion_tokens: 3, total_tokens: 11 });
    const rec = fake.last();
    assert.equal(rec.inferenceComponent, 'ic-llama3');
    assert.deepEqual(rec.usage, { input: 8, output: 3, cacheRead: 0, cacheWrite: 0 });
    assert.deepEqual(rec.body, body);

    const gen = await call('tgi-components', { inputs: 'What is Amazon SageMaker?', parameters: { max_new_tokens: 4, details: true } }, { InferenceComponentName: 'ic-mistral' });
    const [g] = json(gen.Body);
    assert.deepEqual(Object.keys(g).sort(), ['details', 'generated_text']);
    assert.equal(g.generated_text, wordsOut(4));
    assert.deepEqual(Object.keys(g.details).sort(), ['finish_reason', 'generated_tokens', 'prefill', 'seed', 'tokens']);
    assert.equal(g.details.generated_tokens, 4);
    const plainGen = json((await call('tgi-components', { inputs: 'x', parameters: { max_new_tokens: 2 } }, { InferenceComponentName: 'ic-mistral' })).Body);
    assert.deepEqual(plainGen, [{ generated_text: 'w1 w2' }]);
  });

  test('TGI input validation: 422 from the container, surfaced as ModelError', T, async () => {
    const check = async (body, message) => {
      const err = await expectReject(call('tgi-llama3', body), 'ModelError', 424, ModelError);
      assert.equal(err.OriginalStatusCode, 422);
      assert.deepEqual(JSON.parse(err.OriginalMessage), { error: `Input validation error: ${message}`, error_type: 'validation' });
      assert.equal(fake.last().usage, null);
    };
    await check({ inputs: 'x', parameters: { temperature: 0 } }, '`temperature` must be strictly positive');
    await check({ inputs: 'x', parameters: { top_p: 1.0 } }, '`top_p` must be > 0.0 and < 1.0');
    await check({ inputs: 'x', parameters: { top_k: 0 } }, '`top_k` must be strictly positive');
    await check({ inputs: 'x', parameters: { max_new_tokens: 0 } }, '`max_new_tokens` must be strictly positive');
    await check({ inputs: 'x', parameters: { stop: ['a', 'b', 'c', 'd', 'e'] } }, '`stop` supports up to 4 stop sequences. Given: 5');
    await check({ inputs: '' }, '`inputs` cannot be empty');
    await check({ messages: [], max_tokens: 3 }, '`inputs` cannot be empty');
    await check({ messages: [{ role: 'user', content: 'x' }], top_p: 1 }, '`top_p` must be > 0.0 and < 1.0');
    // The Messages API takes temperature 0 (greedy).
    const greedy = json((await call('tgi-llama3', { messages: [{ role: 'user', content: 'x' }], temperature: 0, max_tokens: 1 })).Body);
    assert.equal(greedy.choices[0].message.content, 'w1');
  });
});

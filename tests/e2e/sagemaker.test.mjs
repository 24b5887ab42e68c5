// The SageMaker-runtime front door (/endpoints/{name}/...) against the fake
// SageMaker: both operations for TGI (with details), TGI's Messages API,
// JumpStart (estimated counts) and vLLM (OpenAI-style usage); the
// reference's SAGEMAKER_ENDPOINTS map; custom attributes / target variant /
// inference component forwarded; every error in AWS's shape; a
// ModelStreamError mid-stream; an abandoned stream; the AWS SDK; and the
// openai SDK on /v1/chat/completions for containers that speak OpenAI's chat
// API (TGI Messages, vLLM).

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { NodeHttpHandler } from '@smithy/node-http-handler';
import {
  SageMakerRuntimeClient,
  InvokeEndpointCommand,
  InvokeEndpointWithResponseStreamCommand,
  ModelError,
} from '@aws-sdk/client-sagemaker-runtime';
import OpenAI from 'openai';
import { startFakeSageMaker, staticCreds, SAGEMAKER_ERRORS } from './fake-aws.mjs';
import {
  requireBinary,
  makeTmpDir,
  writeConfig,
  createKey,
  startGateway,
  stopEnv,
  requestBytes,
  waitFor,
  waitForUsage,
  failureTracker,
} from './harness.mjs';

const T = { timeout: 60000 };
const TEAM = 'team-sm';
const codec = new EventStreamCodec(toUtf8, fromUtf8);
const est = (bytes) => Math.ceil(bytes / 4);

// tollgate's status for each SageMaker error (sagemaker.h's table).
const SM_STATUS = {
  ValidationError: 400,
  ServiceUnavailable: 503,
  ThrottlingException: 429,
  InternalFailure: 500,
  InternalDependencyException: 500,
  ModelNotReadyException: 429,
  ModelError: 424,
};

function frames(buf) {
  const out = [];
  let off = 0;
  while (off < buf.length) {
    const total = buf.readUInt32BE(off);
    assert.ok(off + total <= buf.length, 'whole frames only');
    const m = codec.decode(buf.subarray(off, off + total));
    const h = {};
    for (const [k, v] of Object.entries(m.headers)) h[k] = v.value;
    out.push({ headers: h, body: Buffer.from(m.body) });
    off += total;
  }
  return out;
}
const payload = (fs) => Buffer.concat(fs.filter((f) => f.headers[':event-type'] === 'PayloadPart').map((f) => f.body)).toString('utf8');

describe('SageMaker endpoints through tollgate', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  const registry = new Map();
  let fake;
  let env;
  let key;
  let port;

  const post = (p, body, { headers = {}, onResponse } = {}) =>
    requestBytes(port, {
      path: p,
      body,
      onResponse,
      headers: { 'content-type': 'application/json', authorization: `Bearer ${key}`, ...headers },
    });

  function fakeCall(marker) {
    const hits = fake.requests.filter((r) => r.rawBody.includes(marker));
    assert.equal(hits.length, 1, `one fake call carries ${marker}: ${JSON.stringify(fake.requests.map((r) => [r.op, r.endpointName, r.rejected]))}`);
    return hits[0];
  }
  function assertRow(row, exp) {
    for (const [k, v] of Object.entries(exp)) assert.deepEqual(row[k], v, `usage.${k} in ${JSON.stringify(row)}`);
  }

  before(tracker.guard(async () => {
    requireBinary();
    const creds = staticCreds(registry);
    fake = await startFakeSageMaker({ registry });
    const dir = makeTmpDir('sagemaker');
    const errRoutes = Object.keys(SAGEMAKER_ERRORS).map((n) => ({ id: `err-${n}`, provider: 'sm', endpoint: `fail.${n}.tgi-x` }));
    const config = {
      listen: '127.0.0.1:0',
      workers: 2,
      store: { path: path.join(dir, 't.db') },
      http: { send_timeout_ms: 5000, shutdown_timeout_ms: 3000 },
      providers: [{
        name: 'sm',
        type: 'sagemaker',
        region: 'us-east-1',
        endpoint: fake.url,
        credentials: { access_key_id_env: 'TG_T_AK', secret_access_key_env: 'TG_T_SK' },
        endpoints: "{'Mixtral 8x7B': 'tgi-mixtral'}",
        connect_timeout_ms: 2000,
        first_byte_timeout_ms: 10000,
      }],
      models: [
        { id: 'tgi', provider: 'sm', endpoint: 'tgi-main', format: 'tgi' },
        { id: 'tgi-chat', provider: 'sm', endpoint: 'tgi-chat', format: 'tgi-messages' },
        { id: 'js', provider: 'sm', endpoint: 'jumpstart-main', format: 'jumpstart' },
        { id: 'vllm', provider: 'sm', endpoint: 'vllm-main', format: 'openai', served_model: 'meta-llama/Llama-3.1-8B-Instruct' },
        { id: 'attrs', provider: 'sm', endpoint: 'tgi-attrs', custom_attributes: 'trace=route', target_variant: 'v1', inference_component: 'ic-1' },
        { id: 'mid', provider: 'sm', endpoint: 'midstream.ModelStreamError.tgi-mid' },
        { id: 'drip', provider: 'sm', endpoint: 'drip.200.50.tgi-drip' },
        { id: 'mid-chat', provider: 'sm', endpoint: 'midstream.ModelStreamError.tgi-midchat', format: 'tgi-messages' },
        { id: 'busy-chat', provider: 'sm', endpoint: 'fail.ThrottlingException.tgi-busy', format: 'tgi-messages' },
        { id: 'oom-chat', provider: 'sm', endpoint: 'inband.2.tgi-oom', format: 'tgi-messages' },
        ...errRoutes,
      ],
    };
    const configFile = writeConfig(dir, config);
    const genv = { TG_T_AK: creds.accessKeyId, TG_T_SK: creds.secretAccessKey };
    key = await createKey(configFile, TEAM);
    const gw = await startGateway(configFile, { env: genv });
    env = { dir, config, configFile, gw };
    port = gw.port;
  }));

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    if (fake) await fake.close();
  });

  test('TGI InvokeEndpoint with details: counts from the container', T, async () => {
    const body = { inputs: 'marker-tgi-1 what is up', parameters: { max_new_tokens: 7, details: true, decoder_input_details: true } };
    const r = await post('/endpoints/tgi/invocations', body);
    assert.equal(r.status, 200, r.text);
    const rec = fakeCall('marker-tgi-1');
    assert.equal(rec.endpointName, 'tgi-main');
    assert.equal(rec.rawBody, JSON.stringify(body));
    assert.equal(r.json[0].generated_text, rec.textSent);
    assert.ok(r.headers['x-amzn-invoked-production-variant']);
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertRow(row, {
      api: 'sagemaker.invoke', model: 'tgi', upstream_model: 'tgi-main', provider: 'sm', region: 'us-east-1',
      input_tokens: rec.usage.input, output_tokens: rec.usage.output, token_source: 'provider', outcome: 'ok', streamed: false,
    });
  });

  test('TGI without prefill details: output counted, input estimated', T, async () => {
    const body = { inputs: 'marker-tgi-2 what is up', parameters: { max_new_tokens: 5, details: true } };
    const r = await post('/endpoints/tgi/invocations', body);
    assert.equal(r.status, 200, r.text);
    const rec = fakeCall('marker-tgi-2');
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertRow(row, { output_tokens: rec.usage.output, input_tokens: est(JSON.stringify(body).length), token_source: 'estimated' });
  });

  test('TGI response stream: parts forwarded intact, counts from the last event', T, async () => {
    const body = { inputs: 'marker-tgi-3 stream me', parameters: { max_new_tokens: 9, details: true, decoder_input_details: true }, stream: true };
    const r = await post('/endpoints/tgi/invocations-response-stream', body);
    assert.equal(r.status, 200, r.text);
    const fs = frames(r.buf);
    const rec = fakeCall('marker-tgi-3');
    const text = payload(fs);
    const events = text.split('\n\n').filter(Boolean).map((e) => JSON.parse(e.replace(/^data:/, '')));
    assert.equal(events.map((e) => e.token.text).join(''), rec.textSent);
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertRow(row, { api: 'sagemaker.invoke-stream', streamed: true, outcome: 'ok', output_tokens: rec.usage.output });
  });

  test('TGI Messages API, plain and streamed with include_usage', T, async () => {
    const body = { messages: [{ role: 'user', content: 'marker-chat-1 hello there' }], max_tokens: 6 };
    const r = await post('/endpoints/tgi-chat/invocations', body);
    assert.equal(r.status, 200, r.text);
    const rec = fakeCall('marker-chat-1');
    let row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertRow(row, { input_tokens: rec.usage.input, output_tokens: rec.usage.output, token_source: 'provider' });

    const sbody = { messages: [{ role: 'user', content: 'marker-chat-2 hello there' }], max_tokens: 8, stream: true, stream_options: { include_usage: true } };
    const s = await post('/endpoints/tgi-chat/invocations-response-stream', sbody);
    assert.equal(s.status, 200, s.text);
    assert.match(payload(frames(s.buf)), /data:\[DONE\]/);
    const rec2 = fakeCall('marker-chat-2');
    row = await waitForUsage(env.configFile, s.headers['x-request-id']);
    assertRow(row, { input_tokens: rec2.usage.input, output_tokens: rec2.usage.output, token_source: 'provider', streamed: true });
  });

  test('JumpStart: no counts from the container, estimated from the sizes', T, async () => {
    const body = { inputs: 'marker-js-1 tell me', parameters: { max_new_tokens: 10 } };
    const r = await post('/endpoints/js/invocations', body);
    assert.equal(r.status, 200, r.text);
    const rec = fakeCall('marker-js-1');
    assert.equal(rec.usage, null);
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertRow(row, {
      token_source: 'estimated',
      input_tokens: est(JSON.stringify(body).length),
      output_tokens: est(Buffer.byteLength(rec.textSent)),
    });
    const s = await post('/endpoints/js/invocations-response-stream', { ...body, inputs: 'marker-js-2 tell me' });
    assert.equal(s.status, 200);
    assert.equal(JSON.parse(payload(frames(s.buf))).generated_text, fakeCall('marker-js-2').textSent);
    const row2 = await waitForUsage(env.configFile, s.headers['x-request-id']);
    assertRow(row2, { token_source: 'estimated', outcome: 'ok' });
    assert.ok(row2.output_tokens > 0);
  });

  test('vLLM: OpenAI-style usage, plain and streamed', T, async () => {
    const body = { prompt: 'marker-vllm-1 complete this', max_tokens: 4 };
    const r = await post('/endpoints/vllm/invocations', body);
    assert.equal(r.status, 200, r.text);
    const rec = fakeCall('marker-vllm-1');
    let row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertRow(row, { input_tokens: rec.usage.input, output_tokens: rec.usage.output, token_source: 'provider' });
    const sb = { messages: [{ role: 'user', content: 'marker-vllm-2 x' }], stream: true, stream_options: { include_usage: true } };
    const s = await post('/endpoints/vllm/invocations-response-stream', sb);
    const rec2 = fakeCall('marker-vllm-2');
    row = await waitForUsage(env.configFile, s.headers['x-request-id']);
    assertRow(row, { input_tokens: rec2.usage.input, output_tokens: rec2.usage.output, token_source: 'provider' });
  });

  test("the reference's SAGEMAKER_ENDPOINTS map: public id and endpoint name both route", T, async () => {
    const r = await post(`/endpoints/${encodeURIComponent('Mixtral 8x7B')}/invocations`, { inputs: 'marker-map-1 hi', parameters: { details: true } });
    assert.equal(r.status, 200, r.text);
    assert.equal(fakeCall('marker-map-1').endpointName, 'tgi-mixtral');
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertRow(row, { model: 'Mixtral 8x7B', upstream_model: 'tgi-mixtral' });
    const r2 = await post('/endpoints/tgi-mixtral/invocations', { inputs: 'marker-map-2 hi' });
    assert.equal(r2.status, 200);
    assert.equal(fakeCall('marker-map-2').endpointName, 'tgi-mixtral');
    const unknown = await post('/endpoints/nope/invocations', { inputs: 'x' });
    assert.equal(unknown.status, 404);
    assert.equal(unknown.headers['x-amzn-errortype'], 'ValidationError');
    assert.equal(unknown.json.code, 'model_not_found');
  });

  test('custom attributes, target variant, inference component: route defaults, client overrides', T, async () => {
    const r = await post('/endpoints/attrs/invocations', { inputs: 'marker-attr-1 hi' });
    assert.equal(r.status, 200, r.text);
    const rec = fakeCall('marker-attr-1');
    assert.equal(rec.customAttributes, 'trace=route');
    assert.equal(rec.targetVariant, 'v1');
    assert.equal(rec.inferenceComponent, 'ic-1');
    assert.equal(r.headers['x-amzn-sagemaker-custom-attributes'], 'trace=route');
    assert.equal(r.headers['x-amzn-invoked-production-variant'], 'v1');
    const r2 = await post('/endpoints/attrs/invocations', { inputs: 'marker-attr-2 hi' }, {
      headers: { 'X-Amzn-SageMaker-Custom-Attributes': 'mine=1', 'X-Amzn-SageMaker-Target-Variant': 'v2' },
    });
    const rec2 = fakeCall('marker-attr-2');
    assert.equal(rec2.customAttributes, 'mine=1');
    assert.equal(rec2.targetVariant, 'v2');
    assert.equal(rec2.inferenceComponent, 'ic-1');
    assert.equal(r2.headers['x-amzn-invoked-production-variant'], 'v2');
  });

  test('every SageMaker error: mapped status, x-amzn-ErrorType, message; row upstream_error', T, async () => {
    for (const name of Object.keys(SAGEMAKER_ERRORS)) {
      for (const op of ['invocations', 'invocations-response-stream']) {
        const r = await post(`/endpoints/err-${name}/${op}`, { inputs: `marker-err-${name}-${op}` });
        assert.equal(r.status, SM_STATUS[name], `${name} ${op}: ${r.text}`);
        assert.equal(r.headers['x-amzn-errortype'], name);
        const rec = fakeCall(`marker-err-${name}-${op}`);
        if (rec.errorMessage) assert.equal(r.json.message, rec.errorMessage);
        else assert.equal(typeof r.json.message, 'string');
        const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
        assertRow(row, { outcome: 'upstream_error', status: SM_STATUS[name], input_tokens: 0, output_tokens: 0 });
      }
    }
  });

  test('ModelStreamError mid-stream: forwarded, clean end, row interrupted', T, async () => {
    const body = { inputs: 'marker-mid-1 go', parameters: { details: true }, stream: true };
    const r = await post('/endpoints/mid/invocations-response-stream', body);
    assert.equal(r.status, 200);
    assert.ok(r.complete, 'the response ended cleanly');
    const fs = frames(r.buf);
    const last = fs[fs.length - 1];
    assert.equal(last.headers[':message-type'], 'exception');
    assert.equal(last.headers[':exception-type'], 'ModelStreamError');
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertRow(row, { outcome: 'interrupted', status: 200, token_source: 'estimated', input_tokens: est(JSON.stringify(body).length) });
  });

  test('client abandons a dripping stream: upstream cancelled, row abandoned', T, async () => {
    let reqId;
    await post('/endpoints/drip/invocations-response-stream', { inputs: 'marker-drip-1 go', stream: true }, {
      onResponse: (res) => {
        reqId = res.headers['x-request-id'];
        let got = 0;
        res.on('data', (c) => {
          got += c.length;
          if (got > 400) res.destroy();
        });
      },
    }).catch(() => {});
    const rec = fakeCall('marker-drip-1');
    await waitFor(() => rec.closed, { timeoutMs: 5000, message: 'the fake sees its client go' });
    assert.ok(rec.closedBeforeFinish);
    const row = await waitForUsage(env.configFile, reqId);
    assertRow(row, { outcome: 'abandoned', status: 200, token_source: 'estimated' });
  });

  test('@aws-sdk/client-sagemaker-runtime through tollgate (x-api-key added by middleware)', T, async () => {
    const client = new SageMakerRuntimeClient({
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${port}`,
      credentials: { accessKeyId: 'AKIDUNUSED', secretAccessKey: 'unused' },
      requestHandler: new NodeHttpHandler(),
      maxAttempts: 1,
    });
    client.middlewareStack.add(
      (next) => async (args) => {
        args.request.headers['x-api-key'] = key;
        return next(args);
      },
      { step: 'build', name: 'tollgateKey' },
    );
    try {
      const out = await client.send(new InvokeEndpointCommand({
        EndpointName: 'tgi',
        ContentType: 'application/json',
        Body: JSON.stringify({ inputs: 'marker-sdk-1 hi', parameters: { details: true } }),
        CustomAttributes: 'sdk=1',
      }));
      const rec = fakeCall('marker-sdk-1');
      assert.equal(JSON.parse(Buffer.from(out.Body).toString())[0].generated_text, rec.textSent);
      assert.equal(out.CustomAttributes, 'sdk=1');
      assert.ok(out.InvokedProductionVariant);

      const st = await client.send(new InvokeEndpointWithResponseStreamCommand({
        EndpointName: 'Mixtral 8x7B',
        ContentType: 'application/json',
        Body: JSON.stringify({ inputs: 'marker-sdk-2 hi', stream: true }),
      }));
      let bytes = '';
      for await (const ev of st.Body) if (ev.PayloadPart) bytes += Buffer.from(ev.PayloadPart.Bytes).toString();
      const rec2 = fakeCall('marker-sdk-2');
      const toks = bytes.split('\n\n').filter(Boolean).map((e) => JSON.parse(e.replace(/^data:/, '')).token.text).join('');
      assert.equal(toks, rec2.textSent);

      await assert.rejects(
        client.send(new InvokeEndpointCommand({ EndpointName: 'err-ModelError', ContentType: 'application/json', Body: '{"inputs":"x"}' })),
        (e) => e instanceof ModelError && e.$metadata.httpStatusCode === 424,
      );
    } finally {
      client.destroy();
    }
  });
  describe('the OpenAI chat API on SageMaker containers that speak it', () => {
    let oai;
    before(() => {
      oai = new OpenAI({ baseURL: env.gw.baseURL, apiKey: key, maxRetries: 0, timeout: 15000 });
    });
    const ask = (marker, extra = {}) => ({
      messages: [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: `${marker} tell me something` }],
      max_tokens: 6,
      ...extra,
    });

    test('TGI Messages API, plain: the body passed on, the answer under the model asked, counts from the container', T, async () => {
      const { data: r, response } = await oai.chat.completions.create({ model: 'tgi-chat', ...ask('marker-oai-1') }).withResponse();
      const rec = fakeCall('marker-oai-1');
      assert.equal(rec.op, 'InvokeEndpoint');
      assert.equal(rec.endpointName, 'tgi-chat');
      assert.deepEqual(rec.body, ask('marker-oai-1'), 'the client\'s body, without its model: TGI serves one');
      assert.equal(r.model, 'tgi-chat', 'not TGI\'s "tgi"');
      assert.match(r.id, /^chatcmpl-/, 'an id where TGI gives ""');
      assert.equal(r.choices[0].message.content, rec.textSent);
      assert.equal(r.usage.prompt_tokens, rec.usage.input);
      assert.equal(r.usage.completion_tokens, rec.usage.output);
      const row = await waitForUsage(env.configFile, response.headers.get('x-request-id'));
      assertRow(row, {
        api: 'openai.chat', model: 'tgi-chat', upstream_model: 'tgi-chat', provider: 'sm', streamed: false,
        input_tokens: rec.usage.input, output_tokens: rec.usage.output, token_source: 'provider', outcome: 'ok',
      });
    });

    test('vLLM, streamed with usage asked: every chunk, the usage chunk, counts from the container', T, async () => {
      const stream = await oai.chat.completions.create({ model: 'vllm', ...ask('marker-oai-2'), stream: true, stream_options: { include_usage: true } });
      let text = '';
      let usage = null;
      let finish = null;
      for await (const chunk of stream) {
        assert.equal(chunk.model, 'vllm');
        if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
        if (chunk.choices[0]?.finish_reason) finish = chunk.choices[0].finish_reason;
        if (chunk.usage) usage = chunk.usage;
      }
      const rec = fakeCall('marker-oai-2');
      assert.equal(rec.op, 'InvokeEndpointWithResponseStream');
      assert.equal(rec.body.model, 'meta-llama/Llama-3.1-8B-Instruct', 'the route\'s served_model');
      assert.equal(text, rec.text);
      assert.equal(finish, 'length');
      assert.equal(usage.prompt_tokens, rec.usage.input);
      assert.equal(usage.completion_tokens, rec.usage.output);
    });

    test('TGI streamed without usage asked: none reaches the client, the container still counted it', T, async () => {
      const { data: stream, response } = await oai.chat.completions.create({ model: 'tgi-chat', ...ask('marker-oai-3'), stream: true }).withResponse();
      let text = '';
      for await (const chunk of stream) {
        assert.equal(chunk.usage, undefined, 'no usage chunk when it was not asked for');
        if (chunk.choices[0]?.delta?.content) text += chunk.choices[0].delta.content;
      }
      const rec = fakeCall('marker-oai-3');
      assert.deepEqual(rec.body.stream_options, { include_usage: true }, 'asked of the container on the client\'s behalf');
      assert.equal(text, rec.text);
      const row = await waitForUsage(env.configFile, response.headers.get('x-request-id'));
      assertRow(row, { api: 'openai.chat-stream', streamed: true, input_tokens: rec.usage.input, output_tokens: rec.usage.output, token_source: 'provider', outcome: 'ok' });
    });

    test('errors: the container\'s refusal, SageMaker throttling, a broken stream, a container without the API', T, async () => {
      const bad = await oai.chat.completions.create({ model: 'tgi-chat', ...ask('marker-oai-4'), temperature: -1 }).catch((e) => e);
      assert.ok(bad instanceof OpenAI.APIError, String(bad));
      assert.equal(bad.status, 424);
      assert.match(bad.message, /temperature/);
      const busy = await oai.chat.completions.create({ model: 'busy-chat', ...ask('marker-oai-5') }).catch((e) => e);
      assert.equal(busy.status, 429);
      const tgi = await oai.chat.completions.create({ model: 'tgi', ...ask('marker-oai-6') }).catch((e) => e);
      assert.equal(tgi.status, 400);
      assert.equal(tgi.code, 'unsupported_route');
      assert.equal(fake.requests.filter((r) => r.rawBody.includes('marker-oai-6')).length, 0);
      const { data: stream, response } = await oai.chat.completions.create({ model: 'mid-chat', ...ask('marker-oai-7'), stream: true }).withResponse();
      let chunks = 0;
      for await (const chunk of stream) if (chunk.choices[0]?.delta?.content) chunks++;
      assert.ok(chunks >= 1, 'what came before the exception was streamed');
      const row = await waitForUsage(env.configFile, response.headers.get('x-request-id'));
      assertRow(row, { outcome: 'interrupted', streamed: true, status: 200 });
      // The container's own error event mid-stream reaches the SDK, which raises it.
      const { data: oom, response: r2 } = await oai.chat.completions.create({ model: 'oom-chat', ...ask('marker-oai-8'), stream: true }).withResponse();
      let seen = 0;
      const raised = await (async () => {
        for await (const chunk of oom) if (chunk.choices[0]?.delta?.content) seen++;
      })().catch((e) => e);
      assert.equal(seen, 2);
      assert.ok(raised instanceof Error, 'the stream raised the error');
      assert.match(String(raised.message), /CUDA out of memory/);
      const row2 = await waitForUsage(env.configFile, r2.headers.get('x-request-id'));
      assertRow(row2, { outcome: 'interrupted', streamed: true, token_source: 'estimated' });
    });
  });
});

// The reference gateway's API, re-enacted call by call from its two
// notebooks (../shared/reference/seed-study.md section 6) against the fake
// Bedrock and SageMaker: Titan text, messages, embeddings, image embeddings
// and images; Claude 3 messages with a system prompt, an image block and a
// full tools round trip; Claude 2.1 text; Mistral, AI21, Cohere; Stability;
// a custom model ARN; a cross-region profile; SageMaker JumpStart embeddings
// and TGI messages; the streaming submit-and-poll loop (and the LangChain
// wrapper's variant of it); SSE. Each answer is checked for the reference's
// shape and each call's usage row for the provider's own counts. Then every
// bad input, and a poll with another team's key.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  startFakeBedrock,
  startFakeSageMaker,
  staticCreds,
  fakeEmbedding,
  toolUseIdFor,
  TINY_PNG_BASE64,
} from './fake-aws.mjs';
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
  createKey,
} from './harness.mjs';

const T = { timeout: 60000 };
const SONNET3 = 'anthropic.claude-3-sonnet-20240229-v1:0';
const PROFILE = 'us.anthropic.claude-3-5-sonnet-20240620-v1:0';
const CUSTOM_ARN = 'arn:aws:bedrock:us-east-1:123456789012:provisioned-model/my-titan-text-model';
const BEDROCK_IDS = [
  'amazon.titan-text-express-v1',
  'amazon.titan-embed-text-v1',
  'amazon.titan-embed-text-v2:0',
  'amazon.titan-embed-image-v1',
  'amazon.titan-image-generator-v1',
  SONNET3,
  'anthropic.claude-v2:1',
  'mistral.mistral-large-2402-v1:0',
  'ai21.j2-ultra',
  'cohere.command-text-v14',
  'cohere.embed-multilingual-v3',
  'stability.stable-diffusion-xl',
  PROFILE,
];

describe('the reference API', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let br, sm, env, gw, port, key, otherKey;

  const invoke = (query, body, headers = {}, secret = key, pathPrefix = '') =>
    request(port, {
      method: 'POST',
      path: `${pathPrefix}/invoke_model?${query}`,
      headers: { 'x-api-key': secret, team_id: 'team-ref', 'content-type': 'application/json', ...headers },
      body,
      timeoutMs: 20000,
    });
  const rowFor = async (requestId) => {
    const rows = await usageList(env.configFile);
    return rows.find((r) => r.request_id === requestId);
  };
  /** The notebooks' streaming loop: submit, then poll every 200 ms until generated_text. */
  const submitAndPoll = async (query, body, headers = {}) => {
    const sub = await invoke(query, body, { ...headers, streaming: 'true' });
    assert.equal(sub.status, 200, sub.text);
    assert.equal(sub.json.length, 1);
    const id = sub.json[0].request_id;
    assert.match(id, /^req_/);
    assert.deepEqual(Object.keys(sub.json[0]), ['request_id']);
    let last;
    await waitFor(
      async () => {
        last = await invoke(`${query}&requestId=${id}`, {}, headers);
        return last.json && 'generated_text' in last.json[0];
      },
      { timeoutMs: 10000, intervalMs: 200, message: `the result of ${id}` },
    );
    return { id, answer: last };
  };

  before(tracker.guard(async () => {
    requireBinary();
    const registry = new Map();
    const creds = staticCreds(registry);
    br = await startFakeBedrock({ registry });
    sm = await startFakeSageMaker({ registry, inferenceComponents: { 'jumpstart-minilm-embed': ['ic-minilm'] } });
    const dir = makeTmpDir('reference');
    const aws = { access_key_id_env: 'TG_T_AK', secret_access_key_env: 'TG_T_SK' };
    const config = {
      listen: '127.0.0.1:0',
      workers: 2,
      store: { path: path.join(dir, 't.db') },
      reports: { enabled: false },
      reference: { result_ttl_s: 60 },
      providers: [
        { name: 'br', type: 'bedrock', region: 'us-east-1', endpoint: br.url, credentials: aws, catalog: { refresh_s: 0 } },
        { name: 'sm', type: 'sagemaker', region: 'us-east-1', endpoint: sm.url, credentials: aws },
      ],
      models: [
        ...BEDROCK_IDS.map((id) => ({ id, provider: 'br', upstream_model: id })),
        { id: 'drip-titan', provider: 'br', upstream_model: 'drip.6.300.amazon.titan-text-express-v1' },
        { id: 'minilm-embeddings', provider: 'sm', endpoint: 'jumpstart-minilm-embed' },
        { id: 'llama3-tgi', provider: 'sm', endpoint: 'tgi-llama3', format: 'tgi-messages' },
      ],
    };
    const configFile = writeConfig(dir, config);
    gw = await startGateway(configFile, { env: { TG_T_AK: creds.accessKeyId, TG_T_SK: creds.secretAccessKey } });
    env = { dir, config, configFile, gw };
    port = gw.port;
    key = await createKey(configFile, 'team-ref');
    otherKey = await createKey(configFile, 'team-other');
    await waitFor(async () => (await request(port, { path: '/list_foundation_models', headers: { 'x-api-key': key } })).status === 200, {
      timeoutMs: 3000,
      message: 'the keys to load',
    });
  }), { timeout: 30000 });

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    await br?.close();
    await sm?.close();
  }, { timeout: 15000 });

  test('list_foundation_models: [{"modelSummaries": [...]}] of what the key may call', T, async () => {
    const r = await request(port, { path: '/list_foundation_models', headers: { 'X-Api-Key': key } });
    assert.equal(r.status, 200);
    assert.equal(r.json.length, 1);
    const ids = r.json[0].modelSummaries.map((m) => m.modelId);
    for (const id of [...BEDROCK_IDS, 'minilm-embeddings', 'llama3-tgi']) assert.ok(ids.includes(id), id);
    const titan = r.json[0].modelSummaries.find((m) => m.modelId === 'amazon.titan-text-express-v1');
    assert.equal(titan.modelArn, 'arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-text-express-v1');
    assert.equal(titan.providerName, 'amazon');
  });

  test('Titan text: InvokeModel with its own body, exact counts from the headers', T, async () => {
    const r = await invoke('model_id=amazon.titan-text-express-v1', {
      inputs: 'What is Amazon Bedrock?',
      parameters: { maxTokenCount: 4096, temperature: 0.2 },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(typeof r.json[0].generated_text, 'string');
    const up = br.last('InvokeModel');
    assert.deepEqual(up.body, { inputText: 'What is Amazon Bedrock?', textGenerationConfig: { maxTokenCount: 4096, temperature: 0.2 } });
    const row = await rowFor(r.headers['x-request-id']);
    assert.equal(row.input_tokens, up.usage.input);
    assert.equal(row.output_tokens, up.usage.output);
    assert.equal(row.token_source, 'provider');
    assert.equal(row.api, 'reference.invoke');
    assert.equal(row.team, 'team-ref');
  });

  test('Titan and Claude 3 through Converse (messages_api), with a system prompt and an image', T, async () => {
    const t = await invoke('model_id=amazon.titan-text-express-v1', { inputs: [{ role: 'user', content: [{ text: 'What is Amazon Bedrock?' }] }], parameters: { maxTokens: 512 } }, { messages_api: 'TRUE' });
    assert.equal(t.status, 200, t.text);
    assert.equal(typeof t.json[0].generated_text, 'string');
    const c = await invoke(`model_id=${SONNET3}`, {
      inputs: [{ role: 'user', content: [{ text: 'What is Amazon Bedrock?' }, { image: { format: 'png', source: { bytes: TINY_PNG_BASE64 } } }] }],
      parameters: { maxTokens: 1024, temperature: 0.2, topP: 0.9, stopSequences: ['\n\nHuman:'], system: 'Always translate the answer in Italian' },
    }, { messages_api: 'true' });
    assert.equal(c.status, 200, c.text);
    const up = br.last('Converse');
    assert.deepEqual(up.body.system, [{ text: 'Always translate the answer in Italian' }]);
    assert.deepEqual(up.body.inferenceConfig, { maxTokens: 1024, temperature: 0.2, topP: 0.9, stopSequences: ['\n\nHuman:'] });
    const row = await rowFor(c.headers['x-request-id']);
    assert.equal(row.input_tokens, up.usage.input);
    assert.equal(row.output_tokens, up.usage.output);
  });

  test('tools: a full round trip, toolUse returned, toolResult answered', T, async () => {
    const tool_config = {
      tools: [{ toolSpec: { name: 'get_weather', description: 'Get weather of a location.', inputSchema: { json: { type: 'object', properties: { city: { type: 'string' }, state: { type: 'string' } }, required: ['city', 'state'] } } } }],
    };
    const messages = [{ role: 'user', content: [{ text: 'What is the weather like in Seattle?' }] }];
    const r1 = await invoke(`model_id=${SONNET3}`, { inputs: messages, parameters: { maxTokens: 512 }, tool_config }, { messages_api: 'true' });
    assert.equal(r1.status, 200, r1.text);
    const uses = r1.json[0].generated_text;
    assert.ok(Array.isArray(uses), 'the tool uses, not text');
    assert.equal(uses[0].toolUse.name, 'get_weather');
    assert.equal(uses[0].toolUse.toolUseId, toolUseIdFor(messages, 'get_weather'));
    assert.deepEqual(uses[0].toolUse.input, { city: 'fake-city', state: 'fake-state' });
    const follow = [
      ...messages,
      { role: 'assistant', content: uses },
      { role: 'user', content: [{ toolResult: { toolUseId: uses[0].toolUse.toolUseId, content: [{ text: '20 degrees, sunny' }], status: 'success' } }] },
    ];
    const r2 = await invoke(`model_id=${SONNET3}`, { inputs: follow, parameters: { maxTokens: 512 }, tool_config }, { messages_api: 'true' });
    assert.equal(r2.status, 200, r2.text);
    assert.equal(typeof r2.json[0].generated_text, 'string');
  });

  test('tools when streaming: the assembled toolUse arrives through polling', T, async () => {
    const tool_config = { tools: [{ toolSpec: { name: 'get_weather', description: 'Get weather.', inputSchema: { json: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] } } } }] };
    const messages = [{ role: 'user', content: [{ text: 'weather in Rome?' }] }];
    const { answer } = await submitAndPoll(`model_id=${SONNET3}`, { inputs: messages, parameters: { maxTokens: 256 }, tool_config }, { messages_api: 'true' });
    const uses = answer.json[0].generated_text;
    assert.ok(Array.isArray(uses), answer.text);
    assert.deepEqual(uses[0].toolUse.input, { city: 'fake-city' });
  });

  test('Claude 2.1, Mistral, AI21 and Cohere text: each family its own body', T, async () => {
    const cases = [
      ['anthropic.claude-v2:1', { inputs: 'Tell me a joke', parameters: { max_tokens_to_sample: 200 } }, (b) => assert.equal(b.prompt, '\n\nHuman: Tell me a joke\n\nAssistant:')],
      ['mistral.mistral-large-2402-v1:0', { inputs: '<s>[INST] What is Amazon Bedrock? [/INST]', parameters: { max_tokens: 200 } }, (b) => assert.equal(b.max_tokens, 200)],
      ['ai21.j2-ultra', { inputs: 'What is Amazon Bedrock?', parameters: { maxTokens: 200 } }, (b) => assert.equal(b.prompt, 'What is Amazon Bedrock?')],
      ['cohere.command-text-v14', { inputs: 'What is Amazon Bedrock?', parameters: { max_tokens: 200 } }, (b) => assert.equal(b.prompt, 'What is Amazon Bedrock?')],
    ];
    for (const [id, body, check] of cases) {
      const r = await invoke(`model_id=${id}`, body);
      assert.equal(r.status, 200, `${id}: ${r.text}`);
      assert.equal(typeof r.json[0].generated_text, 'string', id);
      const up = br.last('InvokeModel');
      assert.equal(up.modelId, id);
      check(up.body);
      const row = await rowFor(r.headers['x-request-id']);
      assert.equal(row.input_tokens, up.usage.input, id);
      assert.equal(row.output_tokens, up.usage.output, id);
    }
  });

  test('embeddings: Titan v1 and v2, Cohere multilingual, Titan multimodal image', T, async () => {
    const v1 = await invoke('model_id=amazon.titan-embed-text-v1', { inputs: 'What is Amazon Bedrock?' }, { type: 'embeddings' });
    assert.equal(v1.status, 200, v1.text);
    assert.deepEqual(v1.json[0].embedding, fakeEmbedding('What is Amazon Bedrock?', 1536));
    const v2 = await invoke('model_id=amazon.titan-embed-text-v2:0', { inputs: 'What is Amazon Bedrock?', parameters: { dimensions: 1024, normalize: true } }, { type: 'Embeddings' });
    assert.equal(v2.status, 200, v2.text);
    assert.deepEqual(v2.json[0].embedding, fakeEmbedding('What is Amazon Bedrock?', 1024, { normalize: true }));
    const row = await rowFor(v2.headers['x-request-id']);
    assert.equal(row.input_tokens, br.last('InvokeModel').usage.input);
    const co = await invoke('model_id=cohere.embed-multilingual-v3', { inputs: 'Ciao mondo', parameters: { input_type: 'search_document' } }, { type: 'embeddings' });
    assert.equal(co.status, 200, co.text);
    assert.equal(co.json[0].embedding.length, 1024);
    assert.deepEqual(br.last('InvokeModel').body, { input_type: 'search_document', texts: ['Ciao mondo'] });
    const img = await invoke('model_id=amazon.titan-embed-image-v1', { inputs: TINY_PNG_BASE64 }, { type: 'embeddings-image' });
    assert.equal(img.status, 200, img.text);
    assert.equal(img.json[0].embedding.length, 1024);
    const irow = await rowFor(img.headers['x-request-id']);
    assert.equal(irow.images, 1, 'an image embedding counts one image, not base64 "tokens"');
  });

  test('images: Titan Image Generator and Stability, counted with size and quality', T, async () => {
    const t = await invoke('model_id=amazon.titan-image-generator-v1', {
      textToImageParams: { text: 'blue backpack on a table' },
      parameters: { taskType: 'TEXT_IMAGE', imageGenerationConfig: { cfgScale: 8, seed: 0, quality: 'standard', width: 512, height: 512, numberOfImages: 2 } },
    }, { type: 'image' });
    assert.equal(t.status, 200, t.text);
    assert.equal(t.json[0].images.length, 2);
    const trow = await rowFor(t.headers['x-request-id']);
    assert.equal(trow.images, 2, 'numberOfImages counted');
    assert.equal(trow.image_width, 512);
    assert.equal(trow.image_quality, 'standard');
    assert.equal(trow.total_usd, '0.016', 'two 512x512 standard images at the reference price');
    const s = await invoke('model_id=stability.stable-diffusion-xl', {
      text_prompts: [{ text: 'a beautiful mountain landscape', weight: 1.0 }],
      parameters: { cfg_scale: 5, seed: 452345, steps: 60, style_preset: 'photographic', clip_guidance_preset: 'FAST_GREEN', sampler: 'K_DPMPP_2S_ANCESTRAL', width: 768 },
    }, { type: 'image' });
    assert.equal(s.status, 200, s.text);
    assert.equal(s.json[0].artifacts.length, 1);
    assert.ok(s.json[0].artifacts[0].base64);
    const srow = await rowFor(s.headers['x-request-id']);
    assert.equal(srow.images, 1);
    assert.equal(srow.image_quality, 'premium', 'more than 50 steps');
  });

  test('a custom model ARN and a cross-region profile', T, async () => {
    const r = await invoke(`model_id=amazon.titan-text-express-v1&model_arn=${encodeURIComponent(CUSTOM_ARN)}`, { inputs: 'Hello', parameters: { maxTokenCount: 100 } });
    assert.equal(r.status, 200, r.text);
    assert.equal(br.last('InvokeModel').modelId, CUSTOM_ARN);
    const m = await invoke(`model_id=amazon.titan-text-express-v1&model_arn=${encodeURIComponent(CUSTOM_ARN)}`, { inputs: [{ role: 'user', content: [{ text: 'Hi' }] }] }, { messages_api: 'true' });
    assert.equal(m.status, 200, m.text);
    assert.equal(br.last('Converse').modelId, CUSTOM_ARN, 'model_arn honoured on non-stream Converse too');
    const { answer, id } = await submitAndPoll(`model_id=${PROFILE}`, { inputs: [{ role: 'user', content: [{ text: 'Hi' }] }], parameters: { maxTokens: 100 } }, { messages_api: 'true' });
    assert.equal(answer.status, 200);
    assert.equal(br.last('ConverseStream').modelId, PROFILE);
    const row = await rowFor(id);
    assert.equal(row.input_tokens, br.last('ConverseStream').usage.input);
  });

  test('streaming: submit, partial text while pending, the result; usage recorded without any poll', T, async () => {
    const { answer, id } = await submitAndPoll('model_id=amazon.titan-text-express-v1', { inputs: 'Write a story', parameters: { maxTokenCount: 200 } });
    assert.equal(typeof answer.json[0].generated_text, 'string');
    assert.ok(answer.json[0].generated_text.length > 0);
    const row = await rowFor(id);
    assert.equal(row.api, 'reference.invoke-stream');
    assert.equal(row.input_tokens, br.last('InvokeModelWithResponseStream').usage.input);
    // A result can be read again (the reference deleted it on first read).
    const again = await invoke(`model_id=amazon.titan-text-express-v1&requestId=${id}`, {});
    assert.equal(again.status, 200);
    assert.deepEqual(again.json, answer.json);
    // Nobody polls this one: its usage is recorded anyway.
    const sub = await invoke('model_id=anthropic.claude-v2:1', { inputs: 'Hello there', parameters: { max_tokens_to_sample: 50 } }, { streaming: 'true' });
    const lone = sub.json[0].request_id;
    await waitFor(async () => (await rowFor(lone))?.outcome === 'ok', { timeoutMs: 10000, intervalMs: 200, message: 'the unpolled call recorded' });
    // Pending: the submit answer's shape plus the text so far.
    const drip = await invoke('model_id=drip-titan', { inputs: [{ role: 'user', content: [{ text: 'slowly' }] }] }, { streaming: 'true', messages_api: 'true' });
    const did = drip.json[0].request_id;
    let partial;
    await waitFor(async () => {
      const p = await invoke(`model_id=drip-titan&requestId=${did}`, {});
      if (p.json && 'partial_text' in p.json[0] && p.json[0].partial_text.length > 0) partial = p.json[0];
      return partial;
    }, { timeoutMs: 8000, intervalMs: 100, message: 'a pending poll with partial text' });
    assert.deepEqual(Object.keys(partial).sort(), ['partial_text', 'request_id']);
    assert.equal(partial.request_id, did);
    let done;
    await waitFor(async () => {
      done = await invoke(`model_id=drip-titan&requestId=${did}`, {});
      return 'generated_text' in done.json[0];
    }, { timeoutMs: 10000, intervalMs: 200, message: 'the dripped result' });
    assert.ok(done.json[0].generated_text.startsWith(partial.partial_text), 'the partial text was a prefix');
  });

  test("the LangChain wrapper's polling: the same headers on the poll, poll mode wins", T, async () => {
    const headers = { streaming: 'true', messages_api: 'false' };
    const sub = await invoke('model_id=mistral.mistral-large-2402-v1:0', { inputs: '[INST] hi [/INST]', parameters: { max_tokens: 50 } }, headers);
    const id = sub.json[0].request_id;
    let last;
    await waitFor(async () => {
      last = await invoke(`model_id=mistral.mistral-large-2402-v1:0&requestId=${id}`, {}, headers);
      return 'generated_text' in last.json[0];
    }, { timeoutMs: 10000, intervalMs: 200, message: 'the wrapper loop' });
    assert.equal(last.status, 200);
  });

  test('SSE: text deltas as they arrive, then the result', T, async () => {
    const r = await invoke(`model_id=${SONNET3}`, { inputs: [{ role: 'user', content: [{ text: 'count to five' }] }], parameters: { maxTokens: 64 } }, { messages_api: 'true', accept: 'text/event-stream' });
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers['content-type'], /^text\/event-stream/);
    const events = r.text.trim().split('\n\n').map((e) => {
      const [ev, data] = e.split('\n');
      return { event: ev.replace('event: ', ''), data: JSON.parse(data.replace('data: ', '')) };
    });
    const deltas = events.filter((e) => e.event === 'delta');
    assert.ok(deltas.length >= 1);
    const last = events[events.length - 1];
    assert.equal(last.event, 'result');
    assert.equal(last.data[0].generated_text, deltas.map((d) => d.data.text).join(''));
  });

  test('SageMaker: JumpStart embeddings with an inference component, TGI messages', T, async () => {
    const e = await invoke('model_id=minilm-embeddings', { inputs: { text_inputs: 'Hello' }, parameters: { mode: 'embedding', InferenceComponentName: 'ic-minilm' } }, { type: 'embeddings' });
    assert.equal(e.status, 200, e.text);
    assert.ok(Array.isArray(e.json[0].embedding));
    const call = sm.requests[sm.requests.length - 1];
    assert.equal(call.headers['x-amzn-sagemaker-inference-component'], 'ic-minilm');
    assert.deepEqual(call.body, { text_inputs: 'Hello', mode: 'embedding' });
    const m = await invoke('model_id=llama3-tgi', {
      inputs: [{ role: 'user', content: 'What is Amazon SageMaker?' }],
      parameters: { model: 'placeholder-model', top_p: 0.6, temperature: 0.9, max_tokens: 200, stop: ['<|eot_id|>'] },
    }, { messages_api: 'true' });
    assert.equal(m.status, 200, m.text);
    assert.equal(typeof m.json[0].generated_text, 'string');
    const row = await rowFor(m.headers['x-request-id']);
    assert.equal(row.provider, 'sm');
    assert.equal(row.token_source, 'provider');
  });

  test('bad input: a clear JSON error with its code, never a trace', T, async () => {
    const expect = async (res, status, code) => {
      const r = await res;
      assert.equal(r.status, status, r.text);
      assert.equal(r.json.error.code, code, r.text);
      assert.ok(!/Traceback|\.c:\d+/.test(r.text));
    };
    await expect(invoke('', { inputs: 'x' }), 400, 'missing_model_id');
    await expect(invoke('model_id=amazon.titan-text-express-v1', { inputs: 'x' }, { team_id: '' }), 400, 'missing_team_id');
    await expect(request(port, { method: 'POST', path: '/invoke_model?model_id=amazon.titan-text-express-v1', headers: { 'x-api-key': key, team_id: 'team-ref' }, body: 'not json' }), 400, 'invalid_json');
    await expect(invoke('model_id=amazon.titan-text-express-v1', { parameters: {} }), 400, 'invalid_request');
    await expect(invoke(`model_id=${SONNET3}`, { inputs: [{ role: 'user', content: [{ text: 'x' }] }], parameters: { frequency_penalty: 1 } }, { messages_api: 'true' }), 400, 'invalid_request');
    await expect(invoke('model_id=amazon.titan-text-express-v1', { inputs: 'x' }, {}, 'tg_not_a_key'), 401, 'invalid_api_key');
    await expect(invoke('model_id=amazon.titan-text-express-v1', { inputs: 'x' }, { team_id: 'team-other' }), 403, 'team_mismatch');
    await expect(invoke('model_id=no.such-model', { inputs: 'x' }), 404, 'model_not_found');
    await expect(invoke('model_id=amazon.titan-embed-text-v1', { inputs: 'x' }, { type: 'embeddings', streaming: 'true' }), 400, 'invalid_request');
    // The model's own refusal, mapped: Titan's maxTokenCount limit.
    const big = await invoke('model_id=amazon.titan-text-express-v1', { inputs: 'x', parameters: { maxTokenCount: 90000 } });
    assert.equal(big.status, 400, big.text);
    assert.match(big.json.error.message, /maxTokenCount/);
  });

  test("a poll with another team's key finds nothing and leaks nothing", T, async () => {
    const sub = await invoke('model_id=amazon.titan-text-express-v1', { inputs: 'secret plans', parameters: { maxTokenCount: 50 } }, { streaming: 'true' });
    const id = sub.json[0].request_id;
    await waitFor(async () => 'generated_text' in (await invoke(`model_id=amazon.titan-text-express-v1&requestId=${id}`, {})).json[0], { timeoutMs: 10000, intervalMs: 200, message: 'done' });
    const r = await request(port, {
      method: 'POST',
      path: `/invoke_model?model_id=amazon.titan-text-express-v1&requestId=${id}`,
      headers: { 'x-api-key': otherKey, team_id: 'team-other', 'content-type': 'application/json' },
      body: {},
    });
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, 'request_not_found');
    assert.ok(!r.text.includes('generated_text'));
  });

  test('units: /<unit>_prod/ base paths for keys of that unit only', T, async () => {
    const adm = (method, p, body) => request(Number(new URL(gw.adminUrl).port), { method, path: p, headers: { authorization: `Bearer ${gw.adminKey}` }, body });
    assert.equal((await adm('POST', '/admin/units', { id: 'acme' })).status, 201);
    assert.equal((await adm('POST', '/admin/teams', { id: 'team-acme', unit: 'acme' })).status, 201);
    const k = (await adm('POST', '/admin/keys', { team: 'team-acme' })).json.secret;
    const call = (prefix) => invoke('model_id=amazon.titan-text-express-v1', { inputs: 'hi', parameters: { maxTokenCount: 20 } }, { team_id: 'team-acme' }, k, prefix);
    await waitFor(async () => (await call('/acme_prod')).status === 200, { timeoutMs: 3000, message: 'the unit key' });
    const wrong = await call('/other_prod');
    assert.equal(wrong.status, 403);
    assert.equal(wrong.json.error.code, 'unit_mismatch');
    const lst = await request(port, { path: '/acme_prod/list_foundation_models', headers: { 'x-api-key': k } });
    assert.equal(lst.status, 200);
  });
});

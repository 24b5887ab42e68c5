// Tests of the fake upstream itself, with the official openai client pointed
// straight at it: if the SDK accepts its JSON and SSE, the gateway tests can
// trust it. These do not need the tollgate binary.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { startFakeOpenAI, wordsText, ERROR_BODIES } from './fake-openai.mjs';
import { request, parseSSE, waitFor } from './harness.mjs';

const T = { timeout: 15000 };

describe('fake OpenAI upstream', () => {
  let fake;
  let client;
  before(async () => {
    fake = await startFakeOpenAI({
      models: ['upstream-gpt', 'upstream-hang', 'upstream-500', 'upstream-429', 'upstream-slow', 'upstream-cut'],
      behavior: { text: 'Hello there, tester!', promptTokens: 21, completionTokens: 6, cachedTokens: 4, chunks: 4 },
      byModel: {
        'upstream-hang': { fail: 'hang' },
        'upstream-500': { fail: 'status', status: 500 },
        'upstream-429': { fail: 'status', status: 429 },
        'upstream-slow': { text: wordsText(20), chunks: 20, chunkDelayMs: 50 },
        'upstream-cut': { fail: 'close-mid-stream', closeAfterChunks: 2 },
      },
    });
    client = new OpenAI({ baseURL: fake.baseURL, apiKey: fake.apiKey, maxRetries: 0, timeout: 5000 });
  });
  after(async () => {
    await fake?.close();
  });

  test('non-streaming completion in OpenAI format', T, async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'upstream-gpt', messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(data.object, 'chat.completion');
    assert.match(data.id, /^chatcmpl-/);
    assert.equal(typeof data.created, 'number');
    assert.equal(data.model, 'upstream-gpt');
    assert.equal(data.choices.length, 1);
    assert.deepEqual(
      { index: data.choices[0].index, role: data.choices[0].message.role, content: data.choices[0].message.content },
      { index: 0, role: 'assistant', content: 'Hello there, tester!' },
    );
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.equal(data.choices[0].logprobs, null);
    assert.equal(data.usage.prompt_tokens, 21);
    assert.equal(data.usage.completion_tokens, 6);
    assert.equal(data.usage.total_tokens, 27);
    assert.equal(data.usage.prompt_tokens_details.cached_tokens, 4);
    const rec = fake.lastChat();
    assert.equal(rec.headers.authorization, `Bearer ${fake.apiKey}`);
    assert.match(rec.headers['content-type'], /application\/json/);
    assert.equal(rec.body.model, 'upstream-gpt');
    assert.equal(rec.finished, true);
  });

  test('streaming without include_usage: chunks, no usage chunk, [DONE]', T, async () => {
    const stream = await client.chat.completions.create({
      model: 'upstream-gpt',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    assert.ok(chunks.length >= 3);
    assert.equal(chunks[0].choices[0].delta.role, 'assistant');
    for (const c of chunks) {
      assert.equal(c.object, 'chat.completion.chunk');
      assert.equal(c.usage, undefined);
      assert.equal(c.choices.length, 1);
    }
    const text = chunks.map((c) => c.choices[0].delta.content || '').join('');
    assert.equal(text, 'Hello there, tester!');
    assert.equal(chunks[chunks.length - 1].choices[0].finish_reason, 'stop');
  });

  test('streaming with include_usage: usage chunk with choices []', T, async () => {
    const stream = await client.chat.completions.create({
      model: 'upstream-gpt',
      messages: [{ role: 'user', content: 'hi' }],
      stream: true,
      stream_options: { include_usage: true },
    });
    const chunks = [];
    for await (const c of stream) chunks.push(c);
    const last = chunks[chunks.length - 1];
    assert.deepEqual(last.choices, []);
    assert.equal(last.usage.prompt_tokens, 21);
    assert.equal(last.usage.completion_tokens, 6);
    assert.equal(last.usage.prompt_tokens_details.cached_tokens, 4);
    for (const c of chunks.slice(0, -1)) assert.equal(c.usage, null);
    assert.equal(fake.lastChat().body.stream_options.include_usage, true);
  });

  test('raw SSE framing ends with data: [DONE]', T, async () => {
    const res = await request(fake.port, {
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { authorization: `Bearer ${fake.apiKey}`, 'content-type': 'application/json' },
      body: { model: 'upstream-gpt', messages: [{ role: 'user', content: 'hi' }], stream: true },
    });
    assert.equal(res.status, 200);
    assert.match(res.headers['content-type'], /^text\/event-stream/);
    assert.ok(res.text.endsWith('data: [DONE]\n\n'));
    const events = parseSSE(res.text);
    assert.equal(events[events.length - 1], '[DONE]');
  });

  test('wrong key is a 401 in OpenAI error shape', T, async () => {
    const bad = new OpenAI({ baseURL: fake.baseURL, apiKey: 'sk-wrong', maxRetries: 0, timeout: 5000 });
    await assert.rejects(
      bad.chat.completions.create({ model: 'upstream-gpt', messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key',
    );
  });

  test('validates body: bad JSON, missing messages, wrong content type, unknown model', T, async () => {
    const h = { authorization: `Bearer ${fake.apiKey}`, 'content-type': 'application/json' };
    const p = '/v1/chat/completions';
    let r = await request(fake.port, { method: 'POST', path: p, headers: h, body: '{nope' });
    assert.equal(r.status, 400);
    r = await request(fake.port, { method: 'POST', path: p, headers: h, body: { model: 'upstream-gpt' } });
    assert.equal(r.status, 400);
    r = await request(fake.port, { method: 'POST', path: p, headers: { ...h, 'content-type': 'text/plain' }, body: '{}' });
    assert.equal(r.status, 400);
    r = await request(fake.port, { method: 'POST', path: p, headers: h, body: { model: 'x', messages: [{ role: 'user', content: 'a' }] } });
    assert.equal(r.status, 404);
    assert.equal(r.json.error.code, 'model_not_found');
    r = await request(fake.port, { method: 'GET', path: p, headers: h });
    assert.equal(r.status, 405);
  });

  test('models list', T, async () => {
    const page = await client.models.list();
    const ids = page.data.map((m) => m.id);
    assert.ok(ids.includes('upstream-gpt'));
  });

  test('fail modes: 500 and 429 bodies', T, async () => {
    await assert.rejects(
      client.chat.completions.create({ model: 'upstream-500', messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e instanceof OpenAI.InternalServerError && e.status === 500 && e.error.type === ERROR_BODIES[500].error.type,
    );
    await assert.rejects(
      client.chat.completions.create({ model: 'upstream-429', messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e instanceof OpenAI.RateLimitError && e.code === 'rate_limit_exceeded',
    );
  });

  test('hang: client times out, fake sees the close', T, async () => {
    const c = new OpenAI({ baseURL: fake.baseURL, apiKey: fake.apiKey, maxRetries: 0, timeout: 300 });
    await assert.rejects(
      c.chat.completions.create({ model: 'upstream-hang', messages: [{ role: 'user', content: 'hi' }] }),
      (e) => e instanceof OpenAI.APIConnectionTimeoutError,
    );
    const rec = fake.lastChat((b) => b.model === 'upstream-hang');
    await waitFor(() => rec.closed, { timeoutMs: 2000, message: 'fake to see the hung request closed' });
    assert.equal(rec.closedBeforeFinish, true);
  });

  test('abort mid-stream is seen as an early close', T, async () => {
    const ac = new AbortController();
    const stream = await client.chat.completions.create(
      { model: 'upstream-slow', messages: [{ role: 'user', content: 'hi' }], stream: true },
      { signal: ac.signal },
    );
    let n = 0;
    // The SDK ends the iteration quietly (or throws an abort error) after abort().
    try {
      for await (const c of stream) {
        if (c.choices[0]?.delta?.content) n++;
        if (n === 3) ac.abort();
      }
    } catch (e) {
      assert.ok(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', String(e));
    }
    assert.equal(n, 3);
    const rec = fake.lastChat((b) => b.model === 'upstream-slow');
    await waitFor(() => rec.closed, { timeoutMs: 2000, message: 'early close' });
    assert.equal(rec.closedBeforeFinish, true);
    assert.equal(rec.finished, false);
    assert.ok(rec.chunksSent < 20, `sent ${rec.chunksSent}`);
  });

  test('close-mid-stream cuts the stream without [DONE]', T, async () => {
    const res = await request(fake.port, {
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { authorization: `Bearer ${fake.apiKey}`, 'content-type': 'application/json' },
      body: { model: 'upstream-cut', messages: [{ role: 'user', content: 'hi' }], stream: true },
    }).catch((e) => ({ error: e }));
    if (!res.error) assert.ok(!res.text.includes('[DONE]'));
    const rec = fake.lastChat((b) => b.model === 'upstream-cut');
    assert.equal(rec.answered, 'close-mid-stream');
    assert.equal(rec.chunksSent, 2);
  });
});

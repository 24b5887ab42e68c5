// The chat path over libcurl. Plain http:// upstreams go through the native
// HTTP/1.1 client; https://, proxies and TG_UPSTREAM_CURL=1 go through the
// libcurl multi handle. Here TG_UPSTREAM_CURL=1 sends every call through
// libcurl: the official client's plain and streamed calls, their usage rows,
// and a stream the client abandons (the upstream cancelled, the row written).

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import { startFakeOpenAI, wordsText } from './fake-openai.mjs';
import { requireBinary, startEnv, stopEnv, usageList, waitFor, waitForUsage, chatBody, failureTracker } from './harness.mjs';

const T = { timeout: 30000 };
const TEAM = 'team-curl';
const SLOW_CHUNKS = 30;
const SLOW_TEXT = wordsText(SLOW_CHUNKS);

test('bin/tollgate is built', () => requireBinary());

describe('chat over libcurl (TG_UPSTREAM_CURL=1)', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake;
  let env;
  let client;

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({
      models: ['upstream-gpt', 'upstream-slow'],
      behavior: { text: 'Through libcurl.', promptTokens: 17, completionTokens: 4, chunks: 3 },
      byModel: {
        'upstream-slow': { text: SLOW_TEXT, chunks: SLOW_CHUNKS, chunkDelayMs: 100, promptTokens: 50, completionTokens: 60 },
      },
    });
    env = await startEnv({
      prefix: 'curl',
      fake,
      teams: [TEAM],
      gatewayEnv: { TG_UPSTREAM_CURL: '1' },
      configOverrides: {
        models: [
          { id: 'gpt-test', provider: 'fake', upstream_model: 'upstream-gpt' },
          { id: 'gpt-slow', provider: 'fake', upstream_model: 'upstream-slow' },
        ],
      },
    });
    client = new OpenAI({ apiKey: env.keys[TEAM], baseURL: env.gw.baseURL, maxRetries: 0, timeout: 15000 });
  }));

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    if (fake) await fake.close();
  });

  test('the gateway says its http:// calls use libcurl', T, () => {
    assert.match(env.gw.stderr(), /http:\/\/ calls go through libcurl \(TG_UPSTREAM_CURL is set\)/);
  });

  test('plain and streamed calls: text and exact usage rows', T, async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }] })
      .withResponse();
    assert.equal(data.choices[0].message.content, 'Through libcurl.');
    const plainId = response.headers.get('x-request-id');

    const { data: stream, response: sres } = await client.chat.completions
      .create({ model: 'gpt-test', messages: [{ role: 'user', content: 'Hi' }], stream: true })
      .withResponse();
    let text = '';
    for await (const c of stream) {
      assert.ok(!c.usage, 'no usage chunk for a client that did not ask');
      text += c.choices?.[0]?.delta?.content || '';
    }
    assert.equal(text, 'Through libcurl.');
    assert.equal(fake.lastChat().body.stream_options?.include_usage, true);
    const streamId = sres.headers.get('x-request-id');

    const rows = await usageList(env.configFile);
    for (const [id, streamed] of [[plainId, false], [streamId, true]]) {
      const r = rows.filter((u) => u.request_id === id);
      assert.equal(r.length, 1, `one row for ${id}`);
      assert.equal(r[0].streamed, streamed);
      assert.equal(r[0].outcome, 'ok');
      assert.equal(r[0].input_tokens, 17);
      assert.equal(r[0].output_tokens, 4);
      assert.equal(r[0].token_source, 'provider');
    }
  });

  test('a stream the client abandons: upstream cancelled, row written', T, async () => {
    const before = fake.chatRequests().length;
    const requestId = await new Promise((resolve, reject) => {
      const data = JSON.stringify(chatBody('gpt-slow', { stream: true }));
      const req = http.request(
        {
          host: '127.0.0.1',
          port: env.gw.port,
          method: 'POST',
          path: '/v1/chat/completions',
          agent: false,
          headers: { Authorization: `Bearer ${env.keys[TEAM]}`, 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(data) },
        },
        (res) => {
          let got = '';
          res.setEncoding('utf8');
          res.on('data', (d) => {
            got += d;
            if ((got.match(/"content"/g) || []).length >= 3) {
              const id = res.headers['x-request-id'];
              req.destroy();
              resolve(id);
            }
          });
          res.on('error', () => {});
        },
      );
      req.on('error', () => {});
      req.setTimeout(10000, () => reject(new Error('no content in time')));
      req.end(data);
    });
    const up = fake.chatRequests()[before];
    await waitFor(() => up.closed, { timeoutMs: 5000, message: 'upstream connection closed' });
    assert.equal(up.closedBeforeFinish, true, 'the upstream call was cancelled, not run to its end');
    const row = await waitForUsage(env.configFile, requestId);
    assert.equal(row.outcome, 'abandoned');
    assert.equal(row.streamed, true);
    assert.ok(row.output_tokens > 0 && row.output_tokens < 60, `output estimated from what was delivered: ${row.output_tokens}`);
  });
});

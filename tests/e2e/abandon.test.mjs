// A client that goes away mid-stream: the gateway must cancel the upstream
// call (the fake sees its connection closed before it finished) and still
// record a usage event: outcome "abandoned", streamed, estimated tokens.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import { startFakeOpenAI, wordsText } from './fake-openai.mjs';
import {
  requireBinary,
  startEnv,
  stopEnv,
  listKeys,
  keyEntryFor,
  waitFor,
  waitForUsage,
  chat,
  chatBody,
  failureTracker,
} from './harness.mjs';

const T = { timeout: 30000 };
const TEAM = 'team-abandon';
const CHUNKS = 30;
const DELAY_MS = 100; // the whole stream would take about 3 s
const SLOW_TEXT = wordsText(CHUNKS);

test('bin/tollgate is built', () => requireBinary());

describe('client abandons a stream', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake;
  let env;
  let key;
  let keyEntry;

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({
      models: ['upstream-gpt', 'upstream-slow'],
      behavior: { text: 'Quick answer.', promptTokens: 10, completionTokens: 3, chunks: 2 },
      byModel: {
        'upstream-slow': { text: SLOW_TEXT, chunks: CHUNKS, chunkDelayMs: DELAY_MS, promptTokens: 50, completionTokens: CHUNKS * 2 },
      },
    });
    env = await startEnv({
      prefix: 'abandon',
      fake,
      teams: [TEAM],
      configOverrides: {
        models: [
          { id: 'gpt-test', provider: 'fake', upstream_model: 'upstream-gpt' },
          { id: 'gpt-slow', provider: 'fake', upstream_model: 'upstream-slow' },
        ],
      },
    });
    key = env.keys[TEAM];
    keyEntry = keyEntryFor(await listKeys(env.configFile), key);
  }), { timeout: 30000 });

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    await fake?.close();
  }, { timeout: 15000 });

  /** Waits for the upstream call to be closed early and checks the usage row. */
  async function assertAbandoned(requestId, upstreamRec, clientText) {
    await waitFor(() => upstreamRec.closed, { timeoutMs: 3000, message: 'the upstream connection to be closed' });
    assert.equal(upstreamRec.closedBeforeFinish, true, 'upstream closed before it finished: the abort reached it');
    assert.equal(upstreamRec.finished, false, 'upstream never finished its stream');
    assert.ok(upstreamRec.chunksSent < CHUNKS, `upstream sent ${upstreamRec.chunksSent} of ${CHUNKS} chunks`);

    const row = await waitForUsage(env.configFile, requestId, { timeoutMs: 5000 });
    const ctx = JSON.stringify(row);
    assert.equal(row.outcome, 'abandoned', ctx);
    assert.equal(row.streamed, true, ctx);
    assert.equal(row.status, 200, `status is what the client was sent: ${ctx}`);
    assert.equal(row.token_source, 'estimated', ctx);
    assert.equal(row.team, TEAM, ctx);
    assert.equal(row.key_id, keyEntry.id, ctx);
    assert.equal(row.model, 'gpt-slow', ctx);
    assert.equal(row.upstream_model, 'upstream-slow', ctx);
    assert.equal(row.api, 'openai.chat', ctx);
    assert.ok(Number.isInteger(row.output_tokens) && row.output_tokens > 0, `estimated output tokens > 0: ${ctx}`);
    assert.ok(Number.isInteger(row.input_tokens) && row.input_tokens > 0, `estimated input tokens > 0: ${ctx}`);
    // An estimate of what was delivered cannot exceed what the upstream produced.
    assert.ok(
      row.output_tokens <= upstreamRec.contentSent.length,
      `output_tokens ${row.output_tokens} <= ${upstreamRec.contentSent.length} characters the upstream sent`,
    );
    assert.ok(clientText.length > 0, 'the client received some content before leaving');
    // The rest of the service is unaffected.
    const ok = await chat(env.gw.port, key, chatBody('gpt-test'));
    assert.equal(ok.status, 200, ok.text);
    return row;
  }

  test('openai client aborts (AbortController) after a few chunks', T, async () => {
    const client = new OpenAI({ baseURL: env.gw.baseURL, apiKey: key, maxRetries: 0, timeout: 10000 });
    const ac = new AbortController();
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'gpt-slow', messages: [{ role: 'user', content: 'Count slowly.' }], stream: true }, { signal: ac.signal })
      .withResponse();
    const requestId = response.headers.get('x-request-id');
    assert.ok(requestId, 'x-request-id');
    let contentChunks = 0;
    let text = '';
    try {
      for await (const c of stream) {
        const piece = c.choices?.[0]?.delta?.content;
        if (piece) {
          contentChunks++;
          text += piece;
        }
        if (contentChunks >= 3) {
          ac.abort();
          break;
        }
      }
    } catch (e) {
      assert.ok(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', `unexpected error ${e}`);
    }
    assert.equal(contentChunks, 3);
    const up = fake.lastChat((b) => b.model === 'upstream-slow');
    assert.ok(up, 'upstream got the call');
    await assertAbandoned(requestId, up, text);
  });

  test('raw client destroys its socket after a few chunks', T, async () => {
    const body = JSON.stringify(chatBody('gpt-slow', { stream: true, stream_options: { include_usage: true } }));
    const { requestId, text } = await new Promise((resolve, reject) => {
      const req = http.request(
        {
          host: '127.0.0.1',
          port: env.gw.port,
          method: 'POST',
          path: '/v1/chat/completions',
          agent: false,
          headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
        },
        (res) => {
          if (res.statusCode !== 200) {
            reject(new Error(`status ${res.statusCode}`));
            return;
          }
          let buf = '';
          let text = '';
          let n = 0;
          res.setEncoding('utf8');
          res.on('data', (d) => {
            buf += d;
            let i;
            while ((i = buf.indexOf('\n\n')) >= 0) {
              const ev = buf.slice(0, i).replace(/^data: ?/, '');
              buf = buf.slice(i + 2);
              if (ev === '[DONE]') continue;
              try {
                const piece = JSON.parse(ev).choices?.[0]?.delta?.content;
                if (piece) {
                  n++;
                  text += piece;
                }
              } catch {}
            }
            if (n >= 4) {
              clearTimeout(timer);
              req.destroy();
              resolve({ requestId: res.headers['x-request-id'], text });
            }
          });
          res.on('error', () => {});
        },
      );
      const timer = setTimeout(() => {
        req.destroy();
        reject(new Error('did not get 4 chunks within 10 s'));
      }, 10000);
      req.on('error', (e) => {
        if (!req.destroyed) reject(e);
      });
      req.end(body);
    });
    assert.ok(requestId, 'x-request-id');
    const up = fake.lastChat((b) => b.model === 'upstream-slow');
    assert.ok(up);
    const row = await assertAbandoned(requestId, up, text);
    assert.equal(row.outcome, 'abandoned');
  });
});

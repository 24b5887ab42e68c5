// Backpressure through the whole path: a client that stops reading a stream
// makes the gateway stop reading the upstream (the gateway holds a bounded
// amount, write_high_water, not the whole answer), so the upstream's writes
// block and it stops sending; once the client reads again, every byte
// arrives in order and the call is billed normally.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startFakeOpenAI } from './fake-openai.mjs';
import { requireBinary, startEnv, stopEnv, waitFor, waitForUsage, chatBody, sleep, failureTracker } from './harness.mjs';

const T = { timeout: 60000 };
const TEAM = 'team-bp';
const CHUNKS = 8192;
const CHUNK_CHARS = 8192; // 64 MiB of content, more than the kernel's socket buffers hold
const TEXT = 'x'.repeat(CHUNKS * CHUNK_CHARS);

test('bin/tollgate is built', () => requireBinary());

describe('a client that stops reading', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake;
  let env;

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({
      models: ['upstream-big'],
      behavior: { text: TEXT, chunks: CHUNKS, promptTokens: 9, completionTokens: CHUNKS },
    });
    env = await startEnv({
      prefix: 'backpressure',
      fake,
      teams: [TEAM],
      configOverrides: {
        http: { send_timeout_ms: 20000 },
        models: [{ id: 'gpt-big', provider: 'fake', upstream_model: 'upstream-big' }],
      },
    });
  }));

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    if (fake) await fake.close();
  });

  test('pauses the upstream while the client is paused, then delivers everything', T, async () => {
    let res;
    const req = http.request({
      host: '127.0.0.1',
      port: env.gw.port,
      method: 'POST',
      path: '/v1/chat/completions',
      agent: false,
      headers: { Authorization: `Bearer ${env.keys[TEAM]}`, 'Content-Type': 'application/json' },
    });
    const gotResponse = new Promise((resolve, reject) => {
      req.on('response', (r) => {
        r.pause(); // read nothing yet
        res = r;
        resolve();
      });
      req.on('error', reject);
    });
    req.end(JSON.stringify(chatBody('gpt-big', { stream: true })));
    await gotResponse;
    assert.equal(res.statusCode, 200);
    const up = await waitFor(() => fake.lastChat(), { message: 'the upstream call' });

    // The upstream's writes block, and its output stops growing: the gateway
    // is not reading while it holds what the client has not taken.
    await waitFor(() => up.writesBlocked > 0, { timeoutMs: 20000, message: 'upstream writes blocked' });
    let last = -1;
    await waitFor(
      async () => {
        const now = up.bytesWritten;
        const still = now === last;
        last = now;
        if (!still) await sleep(300);
        return still;
      },
      { timeoutMs: 20000, intervalMs: 10, message: 'upstream output stopped growing' },
    );
    const total = TEXT.length;
    assert.equal(up.finished, false, 'the upstream did not get to finish while the client read nothing');
    assert.ok(last < total * 0.75, `upstream stopped at ${last} bytes of more than ${total}`);

    // Reading again: the rest flows, in order, to [DONE].
    let content = 0;
    let tail = '';
    let done = false;
    let bad = 0;
    await new Promise((resolve, reject) => {
      res.setEncoding('utf8');
      res.on('data', (d) => {
        const text = tail + d;
        const events = text.split('\n\n');
        tail = events.pop();
        for (const e of events) {
          if (!e.startsWith('data: ')) continue;
          const data = e.slice(6);
          if (data === '[DONE]') {
            done = true;
            continue;
          }
          const c = JSON.parse(data).choices?.[0]?.delta?.content;
          if (typeof c === 'string') {
            if (c !== 'x'.repeat(c.length)) bad++;
            content += c.length;
          }
        }
      });
      res.on('end', resolve);
      res.on('error', reject);
      res.resume();
    });
    assert.equal(bad, 0);
    assert.equal(content, total, 'every content byte arrived');
    assert.equal(done, true, 'the stream ended with [DONE]');
    assert.equal(up.finished, true);

    const row = await waitForUsage(env.configFile, res.headers['x-request-id']);
    assert.equal(row.outcome, 'ok');
    assert.equal(row.output_tokens, CHUNKS);
  });
});

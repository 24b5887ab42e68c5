// SIGTERM with calls in flight: the gateway stops accepting, lets the calls it
// has finish (a stream to its [DONE], a slow plain answer), writes their usage,
// and exits 0. And API keys never reach its logs, at the most verbose level,
// whether a key is accepted, a near miss, revoked, or sent as x-api-key.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startFakeOpenAI, wordsText } from './fake-openai.mjs';
import {
  requireBinary,
  startEnv,
  stopEnv,
  createKey,
  revokeKey,
  listKeys,
  keyEntryFor,
  usageList,
  waitFor,
  request,
  chat,
  chatBody,
  parseSSE,
  failureTracker,
} from './harness.mjs';

const T = { timeout: 30000 };
const TEAM = 'team-shutdown';
const CHUNKS = 8;
const DELAY_MS = 150; // the stream takes about 1.2 s
const SLOW_TEXT = wordsText(CHUNKS);

test('bin/tollgate is built', () => requireBinary());

describe('SIGTERM with calls in flight', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake;
  let env;
  let key;

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({
      models: ['upstream-slow', 'upstream-late'],
      behavior: { text: 'Quick answer.', promptTokens: 10, completionTokens: 3, chunks: 2 },
      byModel: {
        'upstream-slow': { text: SLOW_TEXT, chunks: CHUNKS, chunkDelayMs: DELAY_MS, promptTokens: 40, completionTokens: 16 },
        'upstream-late': { text: 'Late but whole.', delayMs: 900, promptTokens: 21, completionTokens: 5 },
      },
    });
    env = await startEnv({
      prefix: 'shutdown',
      fake,
      teams: [TEAM],
      configOverrides: {
        models: [
          { id: 'gpt-slow', provider: 'fake', upstream_model: 'upstream-slow' },
          { id: 'gpt-late', provider: 'fake', upstream_model: 'upstream-late' },
        ],
      },
    });
    key = env.keys[TEAM];
  }));

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    if (fake) await fake.close();
  });

  test('in-flight calls finish and are recorded; new connections are refused; exit 0', T, async () => {
    const port = env.gw.port;
    const stream = chat(port, key, chatBody('gpt-slow', { stream: true }), { timeoutMs: 15000 });
    const plain = chat(port, key, chatBody('gpt-late'), { timeoutMs: 15000 });
    await waitFor(() => fake.chatRequests().length >= 2, { timeoutMs: 5000, message: 'both calls upstream' });

    env.gw.proc.kill('SIGTERM');
    // Stops accepting: a new connection is refused (or reset) once the
    // listener is closed, while the two calls are still running.
    await waitFor(
      () =>
        new Promise((resolve) => {
          const r = http.get({ host: '127.0.0.1', port, path: '/healthz', agent: false }, (res) => {
            res.resume();
            resolve(false);
          });
          r.setTimeout(1000, () => r.destroy());
          r.on('error', () => resolve(true));
        }),
      { timeoutMs: 3000, intervalMs: 50, message: 'listener closed after SIGTERM' },
    );
    assert.equal(env.gw.exitInfo, null, 'still running while calls are in flight');

    const s = await stream;
    assert.equal(s.status, 200);
    const events = parseSSE(s.text);
    assert.equal(events[events.length - 1], '[DONE]', 'the stream ran to its end');
    const content = events
      .filter((e) => e !== '[DONE]')
      .map((c) => c.choices?.[0]?.delta?.content ?? '')
      .join('');
    assert.equal(content, SLOW_TEXT);
    const p = await plain;
    assert.equal(p.status, 200);
    assert.equal(JSON.parse(p.text).choices[0].message.content, 'Late but whole.');

    const exit = await env.gw.stop({ timeoutMs: 10000 });
    assert.equal(exit.forced, false, 'exited on its own');
    assert.equal(exit.code, 0);

    // The store, read after the process is gone: both calls, with the
    // provider's counts.
    const rows = await usageList(env.configFile);
    const byReq = new Map(rows.map((r) => [r.request_id, r]));
    const sr = byReq.get(s.headers['x-request-id']);
    const pr = byReq.get(p.headers['x-request-id']);
    assert.ok(sr, 'usage row of the stream');
    assert.ok(pr, 'usage row of the plain call');
    assert.equal(sr.outcome, 'ok');
    assert.equal(sr.input_tokens, 40);
    assert.equal(sr.output_tokens, 16);
    assert.equal(pr.outcome, 'ok');
    assert.equal(pr.input_tokens, 21);
    assert.equal(pr.output_tokens, 5);
  });
});

describe('API keys never reach the logs', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake;
  let env;

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({ models: ['upstream-gpt'] });
    env = await startEnv({
      prefix: 'keylog',
      fake,
      teams: [TEAM],
      configOverrides: { extra: { log_level: 'debug', access_log: true } },
    });
  }));

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    if (fake) await fake.close();
  });

  test('accepted, near-miss, revoked and x-api-key secrets are absent from stdout and stderr', T, async () => {
    const good = env.keys[TEAM];
    const ok = await chat(env.gw.port, good, chatBody());
    assert.equal(ok.status, 200);
    const viaHeader = await request(env.gw.port, {
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { 'x-api-key': good, 'Content-Type': 'application/json' },
      body: JSON.stringify(chatBody()),
    });
    assert.equal(viaHeader.status, 200);
    const last = good.slice(-1);
    const near = good.slice(0, -1) + (last === 'A' ? 'B' : 'A');
    const refused = await chat(env.gw.port, near, chatBody());
    assert.equal(refused.status, 401);
    const doomed = await createKey(env.configFile, TEAM, { name: 'doomed' });
    await revokeKey(env.configFile, keyEntryFor(await listKeys(env.configFile), doomed).id);
    let revokedStatus = 0;
    await waitFor(
      async () => {
        revokedStatus = (await chat(env.gw.port, doomed, chatBody())).status;
        return revokedStatus === 401;
      },
      { timeoutMs: 5000, message: 'revoked key refused' },
    );
    await env.gw.stop();

    const logs = env.gw.stderr() + env.gw.stdout();
    // Not vacuous: the calls were logged, with their routes and statuses.
    assert.match(logs, /\/v1\/chat\/completions/);
    assert.match(logs, / 401\b|"status":401|status=401/);
    for (const [what, secret] of [['accepted', good], ['near miss', near], ['revoked', doomed]]) {
      assert.equal(logs.includes(secret), false, `${what} key in the logs`);
      // nor its secret part alone (the key minus its public "tg_" prefix)
      assert.equal(logs.includes(secret.slice(3)), false, `${what} key's secret part in the logs`);
    }
  });
});

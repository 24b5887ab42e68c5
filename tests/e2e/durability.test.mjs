// The durability promise: a usage event reaches the store before the last byte
// of its response is sent. So after `kill -9` in the middle of a burst, every
// response a client fully received (a complete JSON body, or a stream that
// reached `data: [DONE]`) has exactly one usage row once the gateway is
// restarted on the same database.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import { startFakeOpenAI } from './fake-openai.mjs';
import {
  requireBinary,
  startEnv,
  stopEnv,
  startGateway,
  usageList,
  chat,
  chatBody,
  failureTracker,
} from './harness.mjs';

const TEAM = 'team-durable';
const TEXT = 'Durable reply.';
const TOTAL = 200;
const CONCURRENCY = 20;
const KILL_AFTER = 100;
const PROMPT = 13;
const COMPLETION = 5;

test('bin/tollgate is built', () => requireBinary());

/** One request; resolves {ok, requestId, status, error}. `ok` = fully received. */
function oneCall(port, key, agent, stream) {
  const body = JSON.stringify(chatBody('gpt-test', stream ? { stream: true } : {}));
  return new Promise((resolve) => {
    let settled = false;
    const finish = (r) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      resolve(r);
    };
    const req = http.request(
      {
        host: '127.0.0.1',
        port,
        method: 'POST',
        path: '/v1/chat/completions',
        agent,
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) },
      },
      (res) => {
        const requestId = res.headers['x-request-id'];
        let text = '';
        let sawDone = false;
        res.setEncoding('utf8');
        res.on('data', (d) => {
          text += d;
          // For a stream, [DONE] is the promise point: the event was recorded before it was sent.
          if (stream && !sawDone && /(^|\n)data: ?\[DONE\]\r?\n/.test(text)) sawDone = true;
        });
        const done = (complete) => {
          let ok = false;
          if (res.statusCode === 200) {
            if (stream) ok = sawDone;
            else if (complete) {
              try {
                ok = JSON.parse(text).choices[0].message.content === TEXT;
              } catch {
                ok = false;
              }
            }
          }
          finish({ ok, requestId, status: res.statusCode, error: ok ? null : `incomplete (${text.length} bytes)` });
        };
        res.on('end', () => done(true));
        res.on('aborted', () => done(false));
        res.on('error', () => done(false));
        res.on('close', () => done(res.complete));
      },
    );
    const timer = setTimeout(() => {
      req.destroy(new Error('timeout'));
    }, 10000);
    req.on('error', (e) => finish({ ok: false, requestId: null, status: null, error: e.code || e.message }));
    req.end(body);
  });
}

/**
 * Fires TOTAL calls with CONCURRENCY in flight; SIGKILLs the gateway as soon as
 * KILL_AFTER calls have fully completed, and stops issuing new ones after that.
 */
async function burstAndKill(gw, key, stream) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: CONCURRENCY });
  const results = [];
  let next = 0;
  let completed = 0;
  let killed = false;
  let killedAt = -1;
  const worker = async () => {
    for (let guard = 0; guard < TOTAL && !killed; guard++) {
      const i = next++;
      if (i >= TOTAL) return;
      const r = await oneCall(gw.port, key, agent, stream);
      results.push(r);
      if (r.ok) completed++;
      if (!killed && completed >= KILL_AFTER) {
        killed = true;
        killedAt = results.length;
        gw.proc.kill('SIGKILL');
      }
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));
  agent.destroy();
  if (!killed) gw.proc.kill('SIGKILL');
  const exit = await gw.exited;
  return { results, completed, killedAt, killed, exit, issued: Math.min(next, TOTAL) };
}

describe('no usage lost for completed responses after kill -9', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake;
  const envs = [];

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({
      models: ['upstream-gpt'],
      behavior: { text: TEXT, promptTokens: PROMPT, completionTokens: COMPLETION, cachedTokens: 0, chunks: 3, delayMs: 10, chunkDelayMs: 2 },
    });
  }), { timeout: 10000 });

  after(async () => {
    for (const e of envs) await stopEnv(e, { failed: tracker.failed });
    await fake?.close();
  }, { timeout: 30000 });

  for (const stream of [false, true]) {
    const kind = stream ? 'streaming' : 'non-streaming';
    test(`${kind}: burst of ${TOTAL} (concurrency ${CONCURRENCY}), kill -9 after ${KILL_AFTER} completions, restart, every completed response has its row`, { timeout: 90000 }, async () => {
      const env = await startEnv({ prefix: `durable-${stream ? 'stream' : 'plain'}`, fake, teams: [TEAM] });
      envs.push(env);
      const key = env.keys[TEAM];
      const warm = await chat(env.gw.port, key, chatBody('gpt-test'));
      assert.equal(warm.status, 200, warm.text);

      const first = env.gw;
      const b = await burstAndKill(first, key, stream);
      assert.equal(b.killed, true, `the burst reached ${KILL_AFTER} completions (got ${b.completed}; errors: ${[...new Set(b.results.map((r) => r.error))].join(', ')})`);
      assert.equal(b.exit.signal, 'SIGKILL', `gateway died of SIGKILL: ${JSON.stringify(b.exit)}`);
      const done = b.results.filter((r) => r.ok);
      assert.ok(done.length >= KILL_AFTER, `${done.length} completed`);
      assert.ok(done.length < TOTAL, 'the kill happened mid-burst');
      for (const r of done) assert.ok(r.requestId, 'every completed response carried x-request-id');
      assert.equal(new Set(done.map((r) => r.requestId)).size, done.length, 'request ids are unique');

      // Restart on the same database.
      env.oldGateways = [first];
      env.gw = await startGateway(env.configFile, { env: env.env });
      const after = await chat(env.gw.port, key, chatBody('gpt-test'));
      assert.equal(after.status, 200, `restarted gateway serves: ${after.text}`);

      const rows = await usageList(env.configFile);
      const byRid = new Map();
      for (const u of rows) byRid.set(u.request_id, (byRid.get(u.request_id) || []).concat([u]));
      const missing = done.filter((r) => !byRid.has(r.requestId)).map((r) => r.requestId);
      assert.deepEqual(missing, [], `${missing.length} of ${done.length} fully received responses have no usage row`);
      const dup = done.filter((r) => byRid.get(r.requestId).length !== 1).map((r) => r.requestId);
      assert.deepEqual(dup, [], 'exactly one usage row per response');
      for (const r of done) {
        const u = byRid.get(r.requestId)[0];
        assert.equal(u.outcome, 'ok', JSON.stringify(u));
        assert.equal(u.status, 200, JSON.stringify(u));
        assert.equal(u.streamed, stream, JSON.stringify(u));
        assert.equal(u.team, TEAM, JSON.stringify(u));
        assert.equal(u.input_tokens, PROMPT, JSON.stringify(u));
        assert.equal(u.output_tokens, COMPLETION, JSON.stringify(u));
        assert.equal(u.token_source, 'provider', JSON.stringify(u));
      }
      // And the call after the restart is recorded too.
      assert.ok(byRid.has(after.headers['x-request-id']), 'usage row for the call after the restart');
    });
  }
});

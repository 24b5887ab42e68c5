// Every error of the contract, with its status and code, each followed by a
// good request that must still work; key lifecycle (new, revoked, expired)
// while the gateway runs; upstream failures (down, hanging, stalling, 5xx/429,
// cut mid-stream).

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import OpenAI from 'openai';
import { startFakeOpenAI, ERROR_BODIES } from './fake-openai.mjs';
import {
  requireBinary,
  startEnv,
  stopEnv,
  createKey,
  listKeys,
  revokeKey,
  keyEntryFor,
  usageList,
  waitFor,
  waitForUsage,
  request,
  chat,
  chatBody,
  rawHttp,
  expectError,
  closedPort,
  failureTracker,
  randomId,
  sleep,
} from './harness.mjs';

const T = { timeout: 30000 };
const TEAM = 'team-errors';
const TEXT = 'All good here.';
const MAX_BODY = 16384;
const MAX_HEADER = 8192;

test('bin/tollgate is built', () => requireBinary());

describe('errors, key lifecycle and upstream failures', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake;
  let env;
  let key;
  let port;

  /** A good request right after an error: the server keeps serving. */
  async function assertStillServing(what) {
    const res = await chat(port, key, chatBody('gpt-test'));
    assert.equal(res.status, 200, `good request after ${what}: ${res.status} ${res.text}`);
    assert.equal(res.json?.choices?.[0]?.message?.content, TEXT, `good request after ${what}`);
  }

  /** Asserts that `fn` caused no upstream call. */
  async function noUpstreamCall(fn) {
    const before = fake.requests.length;
    const r = await fn();
    assert.equal(fake.requests.length, before, 'the request must not reach the upstream');
    return r;
  }

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({
      models: ['upstream-gpt', 'upstream-hang', 'upstream-stall', 'upstream-500', 'upstream-429', 'upstream-cut'],
      behavior: { text: TEXT, promptTokens: 9, completionTokens: 4, cachedTokens: 0, chunks: 2 },
      byModel: {
        'upstream-hang': { fail: 'hang' },
        'upstream-stall': { fail: 'stall-body' },
        'upstream-500': { fail: 'status', status: 500 },
        'upstream-429': { fail: 'status', status: 429 },
        'upstream-cut': { fail: 'close-mid-stream', closeAfterChunks: 1, chunks: 4, text: 'one two three four' },
      },
    });
    const downPort = await closedPort();
    const fakeProvider = (name, extra = {}) => ({
      name,
      type: 'openai',
      base_url: `http://127.0.0.1:${fake.port}/v1`,
      api_key_env: 'FAKE_UPSTREAM_KEY',
      connect_timeout_ms: 2000,
      first_byte_timeout_ms: 10000,
      total_timeout_ms: 30000,
      ...extra,
    });
    env = await startEnv({
      prefix: 'errors',
      fake,
      teams: [TEAM],
      configOverrides: {
        http: { max_body_bytes: MAX_BODY, max_header_bytes: MAX_HEADER },
        providers: [
          fakeProvider('fake'),
          fakeProvider('fake-fb', { first_byte_timeout_ms: 300, total_timeout_ms: 5000 }),
          fakeProvider('fake-total', { first_byte_timeout_ms: 5000, total_timeout_ms: 800 }),
          fakeProvider('down', { base_url: `http://127.0.0.1:${downPort}/v1`, connect_timeout_ms: 1000 }),
        ],
        models: [
          { id: 'gpt-test', provider: 'fake', upstream_model: 'upstream-gpt' },
          { id: 'gpt-down', provider: 'down', upstream_model: 'upstream-gpt' },
          { id: 'gpt-hang', provider: 'fake-fb', upstream_model: 'upstream-hang' },
          { id: 'gpt-stall', provider: 'fake-total', upstream_model: 'upstream-stall' },
          { id: 'gpt-500', provider: 'fake', upstream_model: 'upstream-500' },
          { id: 'gpt-429', provider: 'fake', upstream_model: 'upstream-429' },
          { id: 'gpt-cut', provider: 'fake', upstream_model: 'upstream-cut' },
        ],
      },
    });
    key = env.keys[TEAM];
    port = env.gw.port;
    await assertStillServing('startup');
  }), { timeout: 30000 });

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    await fake?.close();
  }, { timeout: 15000 });

  test('malformed JSON -> 400 invalid_json', T, async () => {
    const res = await noUpstreamCall(() => chat(port, key, '{"model": "gpt-test", "messages": [ {'));
    expectError(assert, res, 400, 'invalid_json', 'malformed JSON');
    await assertStillServing('invalid_json');
  });

  test('missing model -> 400 missing_model', T, async () => {
    const res = await noUpstreamCall(() => chat(port, key, { messages: [{ role: 'user', content: 'hi' }] }));
    expectError(assert, res, 400, 'missing_model', 'no model');
    await assertStillServing('missing_model');
  });

  test('missing messages -> 400 invalid_request', T, async () => {
    const res = await noUpstreamCall(() => chat(port, key, { model: 'gpt-test' }));
    expectError(assert, res, 400, 'invalid_request', 'no messages');
    await assertStillServing('invalid_request');
  });

  test('unknown model -> 404 model_not_found', T, async () => {
    const res = await noUpstreamCall(() => chat(port, key, chatBody('no-such-model')));
    expectError(assert, res, 404, 'model_not_found', 'unknown model');
    await assertStillServing('model_not_found');
  });

  test('no key -> 401 missing_api_key', T, async () => {
    const res = await noUpstreamCall(() => chat(port, null, chatBody('gpt-test')));
    expectError(assert, res, 401, 'missing_api_key', 'no key');
    await assertStillServing('missing_api_key');
  });

  test('unknown key -> 401 invalid_api_key (well-formed, garbage, x-api-key)', T, async () => {
    const fakeKey = 'tg_' + 'A'.repeat(43);
    let res = await noUpstreamCall(() => chat(port, fakeKey, chatBody('gpt-test')));
    expectError(assert, res, 401, 'invalid_api_key', 'unknown tg_ key');
    res = await noUpstreamCall(() => chat(port, 'not-a-key', chatBody('gpt-test')));
    expectError(assert, res, 401, 'invalid_api_key', 'garbage bearer');
    res = await noUpstreamCall(() => chat(port, null, chatBody('gpt-test'), { headers: { 'x-api-key': key.slice(0, -1) + (key.endsWith('a') ? 'b' : 'a') } }));
    expectError(assert, res, 401, 'invalid_api_key', 'x-api-key one char off');
    await assertStillServing('invalid_api_key');
  });

  test('the openai client sees 401 as AuthenticationError', T, async () => {
    const c = new OpenAI({ baseURL: env.gw.baseURL, apiKey: 'tg_' + 'B'.repeat(43), maxRetries: 0, timeout: 5000 });
    await assert.rejects(
      c.chat.completions.create({ model: 'gpt-test', messages: [{ role: 'user', content: 'x' }] }),
      (e) => e instanceof OpenAI.AuthenticationError && e.status === 401 && e.code === 'invalid_api_key',
    );
  });

  test('unknown route -> 404 not_found', T, async () => {
    const res = await noUpstreamCall(() =>
      request(port, { path: '/v1/no-such-route', headers: { authorization: `Bearer ${key}` } }),
    );
    expectError(assert, res, 404, 'not_found', 'unknown route');
    await assertStillServing('not_found');
  });

  test('body over max_body_bytes (Content-Length) -> 413 body_too_large', T, async () => {
    const filler = 'x'.repeat(MAX_BODY * 2);
    const body = JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: filler }] });
    const raw =
      `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${key}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const res = await noUpstreamCall(() => rawHttp(port, raw));
    assert.ok(res.status, `a response to the oversized body (error: ${res.error})`);
    expectError(assert, { ...res, text: res.body }, 413, 'body_too_large', 'oversized body');
    await assertStillServing('body_too_large');
  });

  test('body over max_body_bytes (chunked) -> 413 body_too_large', T, async () => {
    const filler = 'y'.repeat(MAX_BODY * 2);
    const body = Buffer.from(JSON.stringify({ model: 'gpt-test', messages: [{ role: 'user', content: filler }] }));
    const parts = [
      `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${key}\r\n` +
        'Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n',
    ];
    for (let off = 0; off < body.length; off += 4096) {
      const c = body.subarray(off, off + 4096);
      parts.push(`${c.length.toString(16)}\r\n`, c, '\r\n');
    }
    parts.push('0\r\n\r\n');
    const res = await noUpstreamCall(() => rawHttp(port, parts));
    assert.ok(res.status, `a response to the oversized chunked body (error: ${res.error})`);
    expectError(assert, { ...res, text: res.body }, 413, 'body_too_large', 'oversized chunked body');
    await assertStillServing('body_too_large (chunked)');
  });

  test('headers over max_header_bytes -> 431 headers_too_large', T, async () => {
    const raw =
      `GET /v1/models HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${key}\r\n` +
      `X-Padding: ${'p'.repeat(MAX_HEADER * 2)}\r\n\r\n`;
    const res = await noUpstreamCall(() => rawHttp(port, raw));
    assert.ok(res.status, `a response to the oversized headers (error: ${res.error})`);
    expectError(assert, { ...res, text: res.body }, 431, 'headers_too_large', 'oversized headers');
    await assertStillServing('headers_too_large');
  });

  test('upstream unreachable -> 502 upstream_unreachable', T, async () => {
    const res = await chat(port, key, chatBody('gpt-down'), { timeoutMs: 10000 });
    expectError(assert, res, 502, 'upstream_unreachable', 'upstream down');
    await checkErrorRowIfAny(res, 502);
    await assertStillServing('upstream_unreachable');
  });

  test('upstream never answers (first_byte_timeout_ms 300) -> 504 upstream_timeout', T, async () => {
    const t0 = Date.now();
    const res = await chat(port, key, chatBody('gpt-hang'), { timeoutMs: 10000 });
    const took = Date.now() - t0;
    expectError(assert, res, 504, 'upstream_timeout', 'upstream hang');
    assert.ok(took >= 250 && took < 4000, `timed out after ${took} ms, expected about 300 ms`);
    const rec = fake.lastChat((b) => b.model === 'upstream-hang');
    assert.ok(rec, 'the upstream got the call');
    await waitFor(() => rec.closed, { timeoutMs: 3000, message: 'the gateway to close the hung upstream call' });
    await checkErrorRowIfAny(res, 504);
    await assertStillServing('upstream_timeout (first byte)');
  });

  test('upstream stalls mid-body (total_timeout_ms 800) -> 504 upstream_timeout', T, async () => {
    const t0 = Date.now();
    const res = await chat(port, key, chatBody('gpt-stall'), { timeoutMs: 10000 });
    const took = Date.now() - t0;
    expectError(assert, res, 504, 'upstream_timeout', 'upstream stall');
    assert.ok(took >= 700 && took < 5000, `timed out after ${took} ms, expected about 800 ms`);
    await checkErrorRowIfAny(res, 504);
    await assertStillServing('upstream_timeout (total)');
  });

  for (const status of [500, 429]) {
    test(`upstream ${status} JSON error is passed through, usage outcome upstream_error`, T, async () => {
      const res = await chat(port, key, chatBody(`gpt-${status}`));
      assert.equal(res.status, status, res.text);
      assert.deepEqual(res.json, ERROR_BODIES[status], 'upstream error body passed through');
      assert.ok(res.headers['x-request-id'], 'x-request-id on a passed-through error');
      const rid = res.headers['x-request-id'];
      const row = await waitForUsage(env.configFile, rid, { timeoutMs: 3000 });
      assert.equal(row.status, status);
      assert.equal(row.outcome, 'upstream_error');
      assert.equal(row.model, `gpt-${status}`);
      assert.equal(row.team, TEAM);
      assert.equal(row.streamed, false);
      assert.equal(fake.chatRequests().filter((r) => r.body?.model === `upstream-${status}`).length >= 1, true);
      await assertStillServing(`upstream ${status}`);
    });
  }

  test('upstream 500 on a streaming request: status and body passed through, openai client sees InternalServerError', T, async () => {
    const before = fake.chatRequests().filter((r) => r.body?.model === 'upstream-500').length;
    const c = new OpenAI({ baseURL: env.gw.baseURL, apiKey: key, maxRetries: 0, timeout: 5000 });
    await assert.rejects(
      c.chat.completions.create({ model: 'gpt-500', messages: [{ role: 'user', content: 'x' }], stream: true }),
      (e) => e instanceof OpenAI.InternalServerError && e.status === 500 && e.error?.type === 'server_error',
    );
    const after = fake.chatRequests().filter((r) => r.body?.model === 'upstream-500').length;
    assert.equal(after, before + 1, 'the gateway does not retry a 500 on its own here');
    await assertStillServing('upstream 500 (stream)');
  });

  test('upstream cuts the stream: the client response ends without [DONE], event not "ok", server keeps serving', T, async () => {
    const body = JSON.stringify(chatBody('gpt-cut', { stream: true }));
    const raw =
      `POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nAuthorization: Bearer ${key}\r\n` +
      `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
    const t0 = Date.now();
    const res = await rawHttp(port, raw, { timeoutMs: 10000 });
    assert.ok(!/timed out/.test(String(res.error || '')), `the client response must end, not hang (${Date.now() - t0} ms)`);
    assert.ok(res.status, 'got a response status line');
    const rid = res.headers['x-request-id'];
    assert.ok(rid, 'x-request-id');
    if (res.status === 200) {
      // Headers already went out: the gateway can only cut the stream, and must not
      // claim a complete answer with [DONE].
      assert.ok(!/data: ?\[DONE\]/.test(res.body), `no [DONE] after an upstream cut: ${res.body}`);
    } else {
      assert.ok(res.status >= 500, `an error status: ${res.status}`);
    }
    const row = await waitForUsage(env.configFile, rid, { timeoutMs: 3000 });
    assert.equal(row.streamed, true);
    assert.equal(row.status, res.status, 'usage status is what the client got');
    assert.ok(['interrupted', 'upstream_error', 'failed'].includes(row.outcome), `a cut stream is not "ok": ${JSON.stringify(row)}`);
    await assertStillServing('upstream cut mid-stream');
  });

  test('a key created while running works within 3 s; revoked (by id) stops within 3 s -> 401 revoked_api_key', T, async () => {
    const team = `team-rev-${randomId(3)}`;
    const k = await createKey(env.configFile, team, { name: 'to-revoke' });
    await waitFor(async () => (await chat(port, k, chatBody('gpt-test'))).status === 200, {
      timeoutMs: 3000,
      message: 'a new key to be accepted by the running gateway',
    });
    const entry = keyEntryFor(await listKeys(env.configFile), k);
    await revokeKey(env.configFile, entry.id);
    const t0 = Date.now();
    const res = await waitFor(
      async () => {
        const r = await chat(port, k, chatBody('gpt-test'));
        return r.status === 401 ? r : null;
      },
      { timeoutMs: 3000, message: 'the revoked key to be refused' },
    );
    expectError(assert, res, 401, 'revoked_api_key', `revoked key after ${Date.now() - t0} ms`);
    const listed = (await listKeys(env.configFile)).find((x) => x.id === entry.id);
    assert.ok(listed.revoked_ms > 0, 'keys list shows revoked_ms');
    await assertStillServing('revoked_api_key');
  });

  test('one keep-alive connection: keys switch per request, a wrong one is refused, a revoked one stops', T, async () => {
    // The connection remembers its last key (to skip hashing it again): that
    // must never answer for another key, or outlive a revocation.
    const a = await createKey(env.configFile, `team-ka-a-${randomId(3)}`);
    const b = await createKey(env.configFile, `team-ka-b-${randomId(3)}`);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
    const sockets = new Set();
    agent.on('free', (s) => sockets.add(s));
    const on = (key) =>
      request(port, {
        method: 'POST',
        path: '/v1/chat/completions',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` },
        body: chatBody('gpt-test'),
        agent,
      });
    try {
      await waitFor(async () => (await on(a)).status === 200 && (await on(b)).status === 200, {
        timeoutMs: 3000,
        message: 'the new keys to be accepted',
      });
      const teamOf = async (key) => {
        const r = await on(key);
        assert.equal(r.status, 200, r.text);
        return (await waitForUsage(env.configFile, r.headers['x-request-id'], { timeoutMs: 3000 })).team;
      };
      assert.match(await teamOf(a), /^team-ka-a-/);
      assert.match(await teamOf(b), /^team-ka-b-/);
      assert.match(await teamOf(a), /^team-ka-a-/);
      // the remembered key with its last character changed, and cut short
      const wrong = a.slice(0, -1) + (a.endsWith('x') ? 'y' : 'x');
      expectError(assert, await on(wrong), 401, 'invalid_api_key', 'a near miss of the last key');
      expectError(assert, await on(a.slice(0, -1)), 401, 'invalid_api_key', 'the last key cut short');
      assert.equal((await on(a)).status, 200);
      await revokeKey(env.configFile, keyEntryFor(await listKeys(env.configFile), a).id);
      const res = await waitFor(
        async () => {
          const r = await on(a);
          return r.status === 401 ? r : null;
        },
        { timeoutMs: 3000, message: 'the revoked key to be refused on the same connection' },
      );
      expectError(assert, res, 401, 'revoked_api_key', 'revoked while its connection stayed open');
      assert.equal((await on(b)).status, 200, 'the other key still works on it');
      assert.equal(sockets.size, 1, 'every request went over the one connection');
    } finally {
      agent.destroy();
    }
  });

  test('revoke by prefix works too', T, async () => {
    const k = await createKey(env.configFile, `team-pfx-${randomId(3)}`);
    await waitFor(async () => (await chat(port, k, chatBody('gpt-test'))).status === 200, {
      timeoutMs: 3000,
      message: 'a new key to be accepted',
    });
    const entry = keyEntryFor(await listKeys(env.configFile), k);
    await revokeKey(env.configFile, entry.prefix);
    const res = await waitFor(
      async () => {
        const r = await chat(port, null, chatBody('gpt-test'), { headers: { 'x-api-key': k } });
        return r.status === 401 ? r : null;
      },
      { timeoutMs: 3000, message: 'the key revoked by prefix to be refused' },
    );
    expectError(assert, res, 401, 'revoked_api_key', 'revoked by prefix');
    await assertStillServing('revoked by prefix');
  });

  test('expired key (--expires-in 1) -> 401 expired_api_key', T, async () => {
    const k = await createKey(env.configFile, `team-exp-${randomId(3)}`, { expiresIn: 1 });
    const entry = keyEntryFor(await listKeys(env.configFile), k);
    assert.ok(entry.expires_ms > entry.created_ms, 'expires_ms set');
    assert.ok(Math.abs(entry.expires_ms - entry.created_ms - 1000) <= 1000, `expires about 1 s after creation: ${JSON.stringify(entry)}`);
    const wait = entry.expires_ms - Date.now() + 50;
    if (wait > 0) await sleep(Math.min(wait, 3000));
    const res = await waitFor(
      async () => {
        const r = await chat(port, k, chatBody('gpt-test'));
        return r.status === 401 ? r : null;
      },
      { timeoutMs: 3000, message: 'the expired key to be refused' },
    );
    expectError(assert, res, 401, 'expired_api_key', 'expired key');
    await assertStillServing('expired_api_key');
  });

  test('/metrics counts the errors the HTTP layer answers itself (413, 431)', T, async () => {
    const m = await request(port, { path: '/metrics' });
    assert.equal(m.status, 200);
    const text = m.text;
    for (const st of ['413', '431']) {
      const line = text.split('\n').find((l) => l.startsWith(`tollgate_http_requests_total{route="other",status="${st}"} `));
      assert.ok(line, `metrics line for status ${st} in:\n${text.split("\n").filter((l) => l.startsWith("tollgate_http")).join("\n")}`);
      assert.ok(Number(line.split(' ').pop()) >= 1, line);
    }
  });

  /** When the gateway records a usage row for a failed call, its status must be what the client got. */
  async function checkErrorRowIfAny(res, status) {
    const rid = res.headers['x-request-id'];
    const row = (await usageList(env.configFile)).find((u) => u.request_id === rid);
    if (row) {
      assert.equal(row.status, status, `usage status for ${rid}`);
      assert.notEqual(row.outcome, 'ok', `usage outcome for ${rid}`);
    }
  }
});

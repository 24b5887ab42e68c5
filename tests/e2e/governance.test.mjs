// Governance through the running gateway: units, teams and keys made with the
// admin API, their policies enforced on the tenant port. A hard budget holds
// under 200 concurrent calls; limits trip exactly at their numbers with
// Retry-After and x-ratelimit-* headers; allow-lists intersect across unit,
// team and key and shape /v1/models; team_id cannot bill another team; policy
// changes, disabling and revocation reach every worker within a second; an
// old secret works through its rotation grace and not after; a team sees only
// its own usage and limits.
//
// Refill over time is tested in tests/unit/test_limits.c with an injected
// clock; here only counts are asserted, never durations.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import path from 'node:path';
import { startFakeOpenAI } from './fake-openai.mjs';
import { startFakeBedrock, staticCreds } from './fake-aws.mjs';
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
} from './harness.mjs';

const T = { timeout: 90000 };
const PRICE = { input: '1.00', output: '2.00' }; // USD per million tokens

describe('governance', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake, br, env, gw, admin, port;

  const adminCall = async (method, p, body) => {
    const r = await request(admin, { method, path: p, headers: { authorization: `Bearer ${gw.adminKey}`, 'content-type': 'application/json' }, body });
    return { status: r.status, json: r.json, text: r.text };
  };
  const adminOk = async (method, p, body) => {
    const r = await adminCall(method, p, body);
    assert.ok(r.status === 200 || r.status === 201, `${method} ${p}: ${r.status} ${r.text}`);
    return r.json;
  };
  const newKey = async (team, policy) => {
    const r = await adminOk('POST', '/admin/keys', { team, name: 'test', ...(policy ? { policy } : {}) });
    assert.match(r.secret, /^tg_/);
    return { id: r.key.id, secret: r.secret };
  };
  const chat = (secret, model = 'gpt-test', extra = {}, headers = {}, agent = false) =>
    request(port, {
      method: 'POST',
      path: '/v1/chat/completions',
      headers: { authorization: `Bearer ${secret}`, 'content-type': 'application/json', ...headers },
      body: { model, messages: [{ role: 'user', content: 'hello' }], max_tokens: 50, ...extra },
      agent,
    });
  /** Waits until the gateway knows a new key (GET /v1/limits costs nothing and counts nowhere). */
  const known = async (secret) =>
    waitFor(async () => (await request(port, { path: '/v1/limits', headers: { authorization: `Bearer ${secret}` } })).status === 200, {
      timeoutMs: 3000,
      intervalMs: 50,
      message: 'the new key to reach the gateway',
    });
  /** Waits until a call with this secret gets `status` (a policy change reached the workers). */
  const until = async (secret, status, model = 'gpt-test', what = `status ${status}`) =>
    waitFor(async () => (await chat(secret, model)).status === status, { timeoutMs: 3000, intervalMs: 100, message: what });

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({
      behavior: { promptTokens: 10, completionTokens: 5 },
      byModel: { 'up-slow': { delayMs: 1500 } },
    });
    const registry = new Map();
    const creds = staticCreds(registry);
    br = await startFakeBedrock({ registry });
    const dir = makeTmpDir('gov');
    const route = (id, extra = {}) => ({ id, provider: 'fake', upstream_model: `up-${id}`, price: PRICE, ...extra });
    const config = {
      listen: '127.0.0.1:0',
      workers: 2,
      store: { path: path.join(dir, 't.db') },
      reports: { enabled: false },
      providers: [
        { name: 'fake', type: 'openai', base_url: `http://127.0.0.1:${fake.port}/v1`, api_key_env: 'FAKE_UPSTREAM_KEY' },
        {
          name: 'br',
          type: 'bedrock',
          region: 'us-east-1',
          endpoint: br.url,
          credentials: { access_key_id_env: 'TG_T_AK', secret_access_key_env: 'TG_T_SK' },
          catalog: { refresh_s: 0 },
        },
      ],
      models: [
        route('gpt-test'),
        route('gpt-other'),
        route('claude-x'),
        { id: 'gpt-slow', provider: 'fake', upstream_model: 'up-slow', price: PRICE },
        { id: 'haiku', provider: 'br', upstream_model: 'anthropic.claude-3-haiku-20240307-v1:0' },
      ],
    };
    const configFile = writeConfig(dir, config);
    gw = await startGateway(configFile, {
      env: { FAKE_UPSTREAM_KEY: fake.apiKey, TG_T_AK: creds.accessKeyId, TG_T_SK: creds.secretAccessKey },
    });
    env = { dir, config, configFile, gw };
    port = gw.port;
    admin = Number(new URL(gw.adminUrl).port);
    assert.ok(gw.adminKey, 'the first admin key was printed');
  }), { timeout: 30000 });

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    await fake?.close();
    await br?.close();
  }, { timeout: 15000 });

  test('a hard budget holds under 200 concurrent calls: exactly the 10 it fits are admitted', T, async () => {
    // The worst case of one call: every request byte an input token, plus
    // max_tokens of output, at the route's price.
    const body = JSON.stringify({ model: 'gpt-slow', messages: [{ role: 'user', content: 'hello' }], max_tokens: 50 });
    const reserve = BigInt(Buffer.byteLength(body)) * 1000000n + 50n * 2000000n;
    const budget = 10n * reserve;
    const usd = `${budget / 10n ** 12n}.${(budget % 10n ** 12n).toString().padStart(12, '0')}`;
    await adminOk('POST', '/admin/teams', { id: 'team-budget', policy: { budgets: [{ period: 'day', usd }] } });
    const key = await newKey('team-budget');
    await known(key.secret);
    const agent = new http.Agent({ keepAlive: true, maxSockets: 200 });
    try {
      const results = await Promise.all(
        Array.from({ length: 200 }, () =>
          request(port, {
            method: 'POST',
            path: '/v1/chat/completions',
            headers: { authorization: `Bearer ${key.secret}`, 'content-type': 'application/json' },
            body,
            agent,
            timeoutMs: 30000,
          }),
        ),
      );
      const ok = results.filter((r) => r.status === 200);
      const refused = results.filter((r) => r.status === 402);
      assert.equal(ok.length, 10, `admitted: ${results.map((r) => r.status).join(',')}`);
      assert.equal(refused.length, 190);
      const e = refused[0].json.error;
      assert.equal(e.code, 'budget_exceeded');
      assert.equal(e.budget.scope, 'team');
      assert.equal(e.budget.id, 'team-budget');
      assert.equal(e.budget.period, 'day');
      assert.match(e.budget.resets_at, /^\d{4}-\d\d-\d\dT00:00:00Z$/);
      assert.ok(refused[0].headers['retry-after'], 'Retry-After on a 402 too');
    } finally {
      agent.destroy();
    }
    const rows = (await usageList(env.configFile)).filter((u) => u.team === 'team-budget');
    assert.equal(rows.length, 10, 'one usage row per admitted call');
    const spent = rows.reduce((s, u) => s + BigInt(u.cost_total), 0n);
    assert.ok(spent <= budget, `spent ${spent} within ${budget}`);
  });

  test('limits trip exactly at their numbers, with Retry-After and x-ratelimit-* headers', T, async () => {
    // Counted per UTC minute: start well inside one.
    await waitFor(() => new Date().getUTCSeconds() < 45, { timeoutMs: 20000, intervalMs: 500, message: 'a fresh minute' });
    await adminOk('POST', '/admin/teams', { id: 'team-limits' });
    const rpmKey = await newKey('team-limits', { limits: { rpm: 5 } });
    await known(rpmKey.secret);
    for (let i = 0; i < 5; i++) assert.equal((await chat(rpmKey.secret)).status, 200, `call ${i + 1} of 5`);
    const over = await chat(rpmKey.secret);
    assert.equal(over.status, 429, over.text);
    assert.equal(over.json.error.code, 'requests_per_minute');
    assert.equal(over.headers['x-ratelimit-limit-requests'], '5');
    assert.equal(over.headers['x-ratelimit-remaining-requests'], '0');
    const retry = Number(over.headers['retry-after']);
    assert.ok(retry >= 1 && retry <= 60, `Retry-After ${retry}`);
    assert.match(over.headers['x-ratelimit-reset-requests'], /^\d+\.\d{3}s$/);

    const burstKey = await newKey('team-limits', { limits: { rate: 0.01, burst: 3 } });
    await known(burstKey.secret);
    for (let i = 0; i < 3; i++) assert.equal((await chat(burstKey.secret)).status, 200, `burst ${i + 1} of 3`);
    const b = await chat(burstKey.secret);
    assert.equal(b.status, 429);
    assert.equal(b.json.error.code, 'rate_limited');

    // 15 tokens per call (10 + 5): admitted while fewer than 40 were used.
    const tpmKey = await newKey('team-limits', { limits: { tpm: 40 } });
    await known(tpmKey.secret);
    for (let i = 0; i < 3; i++) assert.equal((await chat(tpmKey.secret)).status, 200, `tpm call ${i + 1}`);
    const t = await chat(tpmKey.secret);
    assert.equal(t.status, 429, 'refused at 45 tokens of 40');
    assert.equal(t.json.error.code, 'tokens_per_minute');
    assert.equal(t.headers['x-ratelimit-limit-tokens'], '40');

    const concKey = await newKey('team-limits', { limits: { concurrency: 2 } });
    await known(concKey.secret);
    const slowSeen = () => fake.requests.filter((r) => r.rawBody.includes('"up-slow"')).length;
    const before = slowSeen();
    const slow = [chat(concKey.secret, 'gpt-slow'), chat(concKey.secret, 'gpt-slow')];
    await waitFor(() => slowSeen() >= before + 2, { timeoutMs: 5000, message: 'two slow calls in flight' });
    const third = await chat(concKey.secret, 'gpt-slow');
    assert.equal(third.status, 429);
    assert.equal(third.json.error.code, 'concurrency_limited');
    assert.deepEqual((await Promise.all(slow)).map((r) => r.status), [200, 200]);
    assert.equal((await chat(concKey.secret)).status, 200, 'slots are given back');

    // A refusal by one scope leaves no trace in another: the team's own rpm.
    await adminOk('PATCH', '/admin/teams/team-limits', { policy: { limits: { rpm: 100 } } });
    const fresh = await newKey('team-limits');
    await known(fresh.secret);
    assert.equal((await chat(fresh.secret)).status, 200);
  });

  test('allow-lists intersect across unit, team and key, and /v1/models follows', T, async () => {
    await adminOk('POST', '/admin/units', { id: 'unit-a', policy: { models: ['gpt-*', 'claude-*'] } });
    await adminOk('POST', '/admin/teams', { id: 'team-allow', unit: 'unit-a', policy: { models: ['gpt-*', 'gpt-slow'] } });
    const key = await newKey('team-allow', { models: ['gpt-test', 'claude-x', 'gpt-slow'] });
    await until(key.secret, 200);
    assert.equal((await chat(key.secret, 'gpt-test')).status, 200);
    const claude = await chat(key.secret, 'claude-x');
    assert.equal(claude.status, 403, 'the team does not allow claude-*');
    assert.equal(claude.json.error.code, 'model_not_allowed');
    assert.equal((await chat(key.secret, 'gpt-other')).status, 403, 'the key does not list gpt-other');
    const models = await request(port, { path: '/v1/models', headers: { authorization: `Bearer ${key.secret}` } });
    assert.deepEqual(models.json.data.map((m) => m.id).sort(), ['gpt-slow', 'gpt-test']);
    // The events carry the team's unit.
    const rows = (await usageList(env.configFile)).filter((u) => u.team === 'team-allow');
    assert.ok(rows.length >= 1 && rows.every((u) => u.unit === 'unit-a'));
  });

  test('the Bedrock door enforces the same policies, in AWS error shapes', T, async () => {
    await adminOk('POST', '/admin/teams', { id: 'team-aws', policy: { limits: { rpm: 2 } } });
    const key = await newKey('team-aws', { models: ['haiku', 'gpt-*'] });
    await known(key.secret);
    await waitFor(() => new Date().getUTCSeconds() < 50, { timeoutMs: 15000, intervalMs: 500, message: 'a fresh minute' });
    const converse = (model) =>
      request(port, {
        method: 'POST',
        path: `/model/${encodeURIComponent(model)}/converse`,
        headers: { authorization: `Bearer ${key.secret}`, 'content-type': 'application/json' },
        body: { messages: [{ role: 'user', content: [{ text: 'hi' }] }], inferenceConfig: { maxTokens: 20 } },
      });
    assert.equal((await converse('haiku')).status, 200);
    assert.equal((await converse('haiku')).status, 200);
    const third = await converse('haiku');
    assert.equal(third.status, 429, third.text);
    assert.equal(third.headers['x-amzn-errortype'], 'ThrottlingException');
    assert.equal(third.json.code, 'requests_per_minute');
    assert.ok(third.headers['retry-after']);
    // A Bedrock id outside the key's allow-list.
    await adminOk('PATCH', '/admin/teams/team-aws', { policy: null });
    await adminOk('PATCH', `/admin/keys/${key.id}`, { policy: { models: ['gpt-*'] } });
    await waitFor(async () => (await converse('haiku')).status === 403, { timeoutMs: 3000, intervalMs: 100, message: 'the new allow-list' });
    const denied = await converse('haiku');
    assert.equal(denied.headers['x-amzn-errortype'], 'AccessDeniedException');
    assert.equal(denied.json.code, 'model_not_allowed');
  });

  test('a soft budget admits past its amount and flags the usage event', T, async () => {
    await adminOk('POST', '/admin/teams', { id: 'team-soft', policy: { budgets: [{ period: 'day', usd: '0.000001', mode: 'soft' }] } });
    const key = await newKey('team-soft');
    await known(key.secret);
    const r = await chat(key.secret);
    assert.equal(r.status, 200, r.text);
    const rows = (await usageList(env.configFile)).filter((u) => u.team === 'team-soft');
    assert.equal(rows.length, 1);
    assert.equal(rows[0].over_budget, true);
    const hard = (await usageList(env.configFile)).filter((u) => u.team === 'team-limits');
    assert.ok(hard.length > 0 && hard.every((u) => u.over_budget === false), 'not flagged without a budget');
  });

  test("team_id names the key's own team or is refused", T, async () => {
    await adminOk('POST', '/admin/teams', { id: 'team-a1' });
    const key = await newKey('team-a1');
    await until(key.secret, 200);
    assert.equal((await chat(key.secret, 'gpt-test', {}, { team_id: 'team-a1' })).status, 200);
    const r = await chat(key.secret, 'gpt-test', {}, { team_id: 'team-b1' });
    assert.equal(r.status, 403);
    assert.equal(r.json.error.code, 'team_mismatch');
  });

  test('changes reach every worker within a second: policy, disable, revoke', T, async () => {
    await adminOk('POST', '/admin/teams', { id: 'team-live' });
    const key = await newKey('team-live');
    await until(key.secret, 200);
    await adminOk('PATCH', '/admin/teams/team-live', { policy: { models: ['claude-*'] } });
    // Each call is a new connection, spread over both workers.
    await until(key.secret, 403, 'gpt-test', 'the new allow-list');
    for (let i = 0; i < 6; i++) assert.equal((await chat(key.secret)).status, 403, 'on every worker');
    await adminOk('PATCH', '/admin/teams/team-live', { policy: null, disabled: true });
    await waitFor(async () => (await chat(key.secret)).json?.error?.code === 'team_disabled', { timeoutMs: 1500, intervalMs: 100, message: 'team_disabled' });
    await adminOk('PATCH', '/admin/teams/team-live', { disabled: false });
    await until(key.secret, 200);
    await adminOk('POST', `/admin/keys/${key.id}/revoke`);
    const t0 = Date.now();
    await waitFor(async () => (await chat(key.secret)).status === 401, { timeoutMs: 1500, intervalMs: 50, message: 'revocation' });
    assert.ok(Date.now() - t0 < 1500);
    for (let i = 0; i < 6; i++) assert.equal((await chat(key.secret)).json.error.code, 'revoked_api_key');
  });

  test('rotation: the old secret works through its grace period and not after', T, async () => {
    await adminOk('POST', '/admin/teams', { id: 'team-rot' });
    const key = await newKey('team-rot');
    await until(key.secret, 200);
    const rot = await adminOk('POST', `/admin/keys/${key.id}/rotate`, { grace_s: 3 });
    assert.match(rot.secret, /^tg_/);
    assert.notEqual(rot.secret, key.secret);
    await until(rot.secret, 200, 'gpt-test', 'the new secret');
    assert.equal((await chat(key.secret)).status, 200, 'the old one, within its grace');
    await waitFor(async () => (await chat(key.secret)).status === 401, { timeoutMs: 6000, intervalMs: 200, message: 'the grace to end' });
    assert.equal((await chat(rot.secret)).status, 200, 'the new one still works');
  });

  test('a team reads only its own usage and limits', T, async () => {
    await adminOk('POST', '/admin/teams', { id: 'team-own', policy: { limits: { rpm: 1000 }, budgets: [{ period: 'month', usd: '5' }] } });
    await adminOk('POST', '/admin/teams', { id: 'team-other' });
    const mine = await newKey('team-own');
    const theirs = await newKey('team-other');
    await until(mine.secret, 200);
    await until(theirs.secret, 200);
    const get = (p) => request(port, { path: p, headers: { authorization: `Bearer ${mine.secret}` } });
    const usage = await get('/v1/usage?group_by=team,model');
    assert.equal(usage.status, 200, usage.text);
    assert.ok(usage.json.rows.length >= 1);
    assert.ok(usage.json.rows.every((r) => r.team_id === 'team-own'), JSON.stringify(usage.json.rows));
    const asked = await get('/v1/usage?group_by=team&team=team-other');
    assert.ok(asked.json.rows.every((r) => r.team_id === 'team-own'), 'a team filter cannot widen it');
    const limits = await get('/v1/limits');
    assert.equal(limits.status, 200, limits.text);
    assert.equal(limits.json.team.id, 'team-own');
    assert.equal(limits.json.team.limits.rpm.limit, 1000);
    assert.equal(limits.json.team.budgets[0].limit_usd, '5');
    assert.equal(limits.json.key.id, mine.id);
    assert.ok(!limits.text.includes('team-other'));
    const noKey = await request(port, { path: '/v1/limits' });
    assert.equal(noKey.status, 401);
    // Admins read any team's, on the admin listener only.
    const adm = await adminCall('GET', '/admin/limits?team=team-own');
    assert.equal(adm.status, 200, adm.text);
    assert.equal(adm.json.team.id, 'team-own');
    assert.equal(adm.json.team.budgets[0].period, 'month');
    assert.equal(adm.json.key, undefined, 'a team view, not a key view');
    const tenantTry = await request(admin, { path: '/admin/limits?team=team-other', headers: { authorization: `Bearer ${mine.secret}` } });
    assert.equal(tenantTry.status, 403);
    assert.equal((await adminCall('GET', '/admin/limits?team=nobody')).status, 404);
  });
});

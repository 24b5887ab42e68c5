// Governance over the admin API and the CLI: units, teams and keys created,
// read, changed, revoked and rotated over HTTP; policies checked field by
// field and stored canonical; 404/405/409/413 answers; secrets shown only by
// creation and rotation; the CLI subcommands producing the same records as
// the API (both go through gov/manage.c); tenant keys refused (403) and
// missing keys (401) on every endpoint.
//
// What the gateway does with policies and rotated keys on the tenant port is
// tested elsewhere: here only the admin surface and what the store holds.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import {
  requireBinary,
  makeTmpDir,
  removeTmpDir,
  writeConfig,
  createKey,
  listKeys,
  startGateway,
  runCli,
  request,
  failureTracker,
  KEY_RE,
} from './harness.mjs';

const T = { timeout: 60000 };

function baseConfig(dir) {
  return {
    listen: '127.0.0.1:0',
    workers: 1,
    store: { path: path.join(dir, 't.db') },
    providers: [],
    models: [],
  };
}

describe('admin API: units, teams, keys', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let dir, configFile, gw, port, auth, tenantKey;

  before(
    tracker.guard(async () => {
      requireBinary();
      dir = makeTmpDir('admin');
      configFile = writeConfig(dir, baseConfig(dir));
      tenantKey = await createKey(configFile, 'team-tenant');
      gw = await startGateway(configFile);
      assert.match(gw.adminKey || '', /^tga_[A-Za-z0-9]{43}$/, 'the first start printed an admin key');
      port = Number(new URL(gw.adminUrl).port);
      auth = { authorization: `Bearer ${gw.adminKey}` };
    }),
  );
  after(async () => {
    if (gw) await gw.stop();
    if (!tracker.failed) removeTmpDir(dir);
  });

  /** An admin request with the admin key; body as an object or raw string. */
  const api = (method, p, body, headers = auth) =>
    request(port, {
      method,
      path: p,
      headers: body == null ? headers : { 'content-type': 'application/json', ...headers },
      body,
    });

  const expectError = (res, status, code, messageRe) => {
    assert.equal(res.status, status, res.text);
    assert.ok(res.json && res.json.error, `an error body: ${res.text}`);
    assert.equal(res.json.error.code, code, res.text);
    assert.equal(typeof res.json.error.type, 'string');
    if (messageRe) assert.match(res.json.error.message, messageRe, res.text);
  };

  const cli = async (args, code = 0) => {
    const r = await runCli([...args, '--config', configFile]);
    assert.equal(r.code, code, `tollgate ${args.join(' ')}: code ${r.code}\nstdout: ${r.stdout}\nstderr: ${r.stderr}`);
    return r;
  };
  const cliJson = async (args) => JSON.parse((await cli(args)).stdout);

  test('units: create, list, read, rename, disable, policy set and removed', T, async () => {
    let r = await api('POST', '/admin/units', { id: 'eng', name: 'Engineering', policy: { limits: { rpm: 600 } } });
    assert.equal(r.status, 201, r.text);
    assert.match(r.headers['content-type'], /^application\/json/);
    const u = r.json;
    assert.equal(u.id, 'eng');
    assert.equal(u.name, 'Engineering');
    assert.equal(u.disabled, false);
    assert.equal(u.disabled_ms, 0);
    assert.equal(u.created_ms, u.updated_ms);
    assert.ok(Math.abs(u.created_ms - Date.now()) < 60000, 'created now');
    assert.deepEqual(u.policy, { limits: { rpm: 600 } });

    await api('POST', '/admin/units', { id: 'ops' });
    r = await api('GET', '/admin/units');
    assert.equal(r.status, 200);
    assert.deepEqual(r.json.data.map((x) => x.id).filter((id) => id === 'eng' || id === 'ops'), ['eng', 'ops']);
    assert.equal(r.json.data.find((x) => x.id === 'ops').policy, null);

    r = await api('PATCH', '/admin/units/eng', { name: 'Eng', disabled: true });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.name, 'Eng');
    assert.equal(r.json.disabled, true);
    assert.ok(r.json.disabled_ms > 0);
    assert.ok(r.json.updated_ms >= u.updated_ms);
    assert.deepEqual(r.json.policy, { limits: { rpm: 600 } }, 'a PATCH without policy keeps it');

    r = await api('PATCH', '/admin/units/eng', { disabled: false, policy: null });
    assert.equal(r.json.disabled, false);
    assert.equal(r.json.disabled_ms, 0);
    assert.equal(r.json.policy, null);
    r = await api('GET', '/admin/units/eng');
    assert.equal(r.status, 200);
    assert.equal(r.json.name, 'Eng');
    assert.equal(r.json.policy, null, 'GET after PATCH: the store holds the change');

    expectError(await api('POST', '/admin/units', { id: 'eng' }), 409, 'already_exists', /eng/);
    expectError(await api('GET', '/admin/units/nobody'), 404, 'not_found');
    expectError(await api('PATCH', '/admin/units/nobody', {}), 404, 'not_found');
  });

  test('teams: unit must exist, filter by unit, move, cost center', T, async () => {
    await api('POST', '/admin/units', { id: 'sales' });
    expectError(await api('POST', '/admin/teams', { id: 'team-a', unit: 'nowhere' }), 400, 'invalid_field', /^unit: /);
    let r = await api('POST', '/admin/teams', { id: 'team-a', unit: 'sales', name: 'A', cost_center: 'CC-100' });
    assert.equal(r.status, 201, r.text);
    assert.deepEqual(
      { id: r.json.id, unit: r.json.unit, name: r.json.name, cost_center: r.json.cost_center, disabled: r.json.disabled, policy: r.json.policy },
      { id: 'team-a', unit: 'sales', name: 'A', cost_center: 'CC-100', disabled: false, policy: null },
    );
    assert.equal((await api('POST', '/admin/teams', { id: 'team-b' })).status, 201);

    r = await api('GET', '/admin/teams?unit=sales');
    assert.deepEqual(r.json.data.map((t) => t.id), ['team-a']);
    r = await api('GET', '/admin/teams');
    assert.ok(r.json.data.some((t) => t.id === 'team-b'));

    r = await api('PATCH', '/admin/teams/team-b', { unit: 'sales', cost_center: 'CC-7', disabled: true });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.unit, 'sales');
    assert.equal(r.json.disabled, true);
    r = await api('GET', '/admin/teams?unit=sales');
    assert.deepEqual(r.json.data.map((t) => t.id), ['team-a', 'team-b']);
    r = await api('PATCH', '/admin/teams/team-b', { unit: '' });
    assert.equal(r.json.unit, '');
    assert.equal(r.json.cost_center, 'CC-7');
    r = await api('GET', '/admin/teams/team-b');
    assert.equal(r.json.unit, '');
    assert.equal(r.json.disabled, true);

    expectError(await api('POST', '/admin/teams', { id: 'team-a' }), 409, 'already_exists');
    expectError(await api('PATCH', '/admin/teams/team-a', { unit: 'nowhere' }), 400, 'invalid_field', /^unit: /);
    expectError(await api('GET', '/admin/teams/team-zz'), 404, 'not_found');
  });

  test('keys: secret once, read without it, update, revoke, rotate', T, async () => {
    let r = await api('POST', '/admin/keys', { team: 'team-k', name: 'ci', expires_in_s: 3600, policy: { models: ['gpt-*'] } });
    assert.equal(r.status, 201, r.text);
    const { key, secret } = r.json;
    assert.match(secret, KEY_RE);
    assert.ok(secret.startsWith(key.prefix));
    assert.equal(key.team, 'team-k', 'the team need not have a row');
    assert.equal(key.name, 'ci');
    assert.equal(key.state, 'active');
    assert.equal(key.revoked_ms, 0);
    assert.equal(key.rotated_until_ms, 0);
    assert.equal(key.expires_ms, key.created_ms + 3600000);
    assert.deepEqual(key.policy, { models: ['gpt-*'] });
    assert.equal(key.hash, undefined);

    // Reads never carry the secret (nor anything like one).
    r = await api('GET', `/admin/keys/${key.id}`);
    assert.equal(r.status, 200);
    assert.equal(r.json.secret, undefined);
    assert.ok(!r.text.includes(secret) && !/tg_[0-9A-Za-z]{43}/.test(r.text));
    r = await api('GET', '/admin/keys?team=team-k');
    assert.deepEqual(r.json.data.map((k) => k.id), [key.id]);
    assert.ok(!r.text.includes(secret));
    r = await api('GET', '/admin/keys');
    assert.ok(r.json.data.some((k) => k.team === 'team-tenant'), 'keys made by the CLI are listed');
    assert.ok(!/tg_[0-9A-Za-z]{43}/.test(r.text));
    // The key the API made is the key the CLI lists.
    const listed = (await listKeys(configFile)).find((k) => k.id === key.id);
    assert.equal(listed.prefix, key.prefix);

    r = await api('PATCH', `/admin/keys/${key.id}`, { name: 'ci-2', expires_in_s: 0, policy: { limits: { concurrency: 2 } } });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.name, 'ci-2');
    assert.equal(r.json.expires_ms, 0);
    assert.deepEqual(r.json.policy, { limits: { concurrency: 2 } });
    r = await api('GET', `/admin/keys/${key.id}`);
    assert.equal(r.json.name, 'ci-2');
    assert.deepEqual(r.json.policy, { limits: { concurrency: 2 } });

    // Rotation: a new secret and prefix; the old one is kept for grace_s.
    r = await api('POST', `/admin/keys/${key.id}/rotate`, { grace_s: 600 });
    assert.equal(r.status, 200, r.text);
    const secret2 = r.json.secret;
    assert.match(secret2, KEY_RE);
    assert.notEqual(secret2, secret);
    assert.ok(secret2.startsWith(r.json.key.prefix));
    assert.equal(r.json.key.id, key.id);
    assert.ok(Math.abs(r.json.key.rotated_until_ms - (Date.now() + 600000)) < 60000, JSON.stringify(r.json.key));
    r = await api('GET', `/admin/keys/${key.id}`);
    assert.equal(r.json.secret, undefined);
    assert.ok(secret2.startsWith(r.json.prefix));
    assert.ok(r.json.rotated_until_ms > Date.now());
    // Rotating with the body left out: an hour of grace.
    r = await api('POST', `/admin/keys/${key.id}/rotate`);
    assert.equal(r.status, 200, r.text);
    assert.ok(Math.abs(r.json.key.rotated_until_ms - (Date.now() + 3600000)) < 60000);
    expectError(await api('POST', `/admin/keys/${key.id}/rotate`, { grace_s: 30 * 86400 + 1 }), 400, 'invalid_field', /^grace_s: /);

    r = await api('POST', `/admin/keys/${key.id}/revoke`);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.state, 'revoked');
    assert.ok(r.json.revoked_ms > 0);
    expectError(await api('POST', `/admin/keys/${key.id}/revoke`), 409, 'key_revoked');
    expectError(await api('POST', `/admin/keys/${key.id}/rotate`), 409, 'key_revoked');
    expectError(await api('GET', '/admin/keys/key_0000000000000000'), 404, 'not_found');
    expectError(await api('POST', '/admin/keys/key_0000000000000000/rotate'), 404, 'not_found');
    expectError(await api('POST', '/admin/keys', { name: 'no team' }), 400, 'invalid_field', /^team: is required/);
  });

  test('policies: checked field by field, stored canonical', T, async () => {
    const bad = [
      [{ limits: { rpm: 0 } }, /^policy\.limits\.rpm: must be a whole number/],
      [{ limits: { rpm: 1.5 } }, /^policy\.limits\.rpm: /],
      [{ limits: { burst: 5 } }, /^policy\.limits\.burst: needs limits\.rate/],
      [{ limits: { rate: 0.0001 } }, /^policy\.limits\.rate: /],
      [{ models: 'gpt-4o' }, /^policy\.models: must be an array/],
      [{ models: [''] }, /^policy\.models\[0\]: /],
      [{ budgets: [{ period: 'year', usd: '1' }] }, /^policy\.budgets\[0\]\.period: /],
      [{ budgets: [{ period: 'day', usd: 10 }] }, /^policy\.budgets\[0\]\.usd: /],
      [{ budgets: [{ period: 'day', usd: '1', mode: 'maybe' }] }, /^policy\.budgets\[0\]\.mode: /],
      [{ colour: 'red' }, /^policy\.colour: is not a known field/],
      ['strict', /^policy: must be an object/],
    ];
    for (const [policy, re] of bad) {
      expectError(await api('POST', '/admin/units', { id: 'pol-bad', policy }), 400, 'invalid_field', re);
      expectError(await api('POST', '/admin/teams', { id: 'pol-bad', policy }), 400, 'invalid_field', re);
      expectError(await api('POST', '/admin/keys', { team: 'pol-bad', policy }), 400, 'invalid_field', re);
    }
    assert.equal((await api('GET', '/admin/units/pol-bad')).status, 404, 'a refused create writes nothing');
    assert.equal((await api('GET', '/admin/keys?team=pol-bad')).json.data.length, 0);

    // Canonical: documented field order, defaults made explicit, money exact.
    const r = await api('POST', '/admin/teams', {
      id: 'pol-team',
      policy: { budgets: [{ usd: '10.50', period: 'month' }], limits: { tpm: 1000, rate: 2.5 }, models: ['anthropic.*'] },
    });
    assert.equal(r.status, 201, r.text);
    const canonical = {
      models: ['anthropic.*'],
      limits: { rate: 2.5, burst: 3, tpm: 1000 },
      budgets: [{ period: 'month', usd: '10.5', mode: 'hard' }],
    };
    assert.deepEqual(r.json.policy, canonical);
    assert.deepEqual(Object.keys(r.json.policy), ['models', 'limits', 'budgets']);
    const g = await api('GET', '/admin/teams/pol-team');
    assert.equal(JSON.stringify(g.json.policy), JSON.stringify(canonical), 'the same bytes back');
  });

  test('bad requests: JSON, fields, paths, methods, sizes', T, async () => {
    expectError(await api('POST', '/admin/units', '{"id":'), 400, 'invalid_json');
    expectError(await api('POST', '/admin/units', '[1,2]'), 400, 'invalid_json');
    expectError(await api('POST', '/admin/units', { id: 'x', colour: 'red' }), 400, 'invalid_field', /^colour: /);
    expectError(await api('POST', '/admin/units', { id: 'bad id' }), 400, 'invalid_field', /^id: /);
    expectError(await api('POST', '/admin/units', { id: 'x'.repeat(64) }), 400, 'invalid_field', /^id: /);
    expectError(await api('POST', '/admin/units', { id: 'okname', name: 'n'.repeat(64) }), 400, 'invalid_field', /^name: /);
    expectError(await api('POST', '/admin/teams', { id: 'okteam', cost_center: 7 }), 400, 'invalid_field', /^cost_center: /);
    expectError(await api('PATCH', '/admin/units/eng', { disabled: 'yes' }), 400, 'invalid_field', /^disabled: /);
    expectError(await api('POST', '/admin/keys', { team: 't', expires_in_s: -1 }), 400, 'invalid_field', /^expires_in_s: /);
    expectError(await api('GET', '/admin/teams?unit=%G1'), 400, 'invalid_parameter');
    expectError(await api('GET', '/admin/nothing'), 404, 'not_found');
    expectError(await api('GET', '/admin/units/a/b'), 404, 'not_found');
    expectError(await api('DELETE', '/admin/units/eng'), 405, 'method_not_allowed');
    expectError(await api('PUT', '/admin/units'), 405, 'method_not_allowed');
    expectError(await api('GET', '/admin/keys/key_1/rotate'), 405, 'method_not_allowed');
    const big = JSON.stringify({ id: 'big', name: 'x'.repeat(70000) });
    expectError(await api('POST', '/admin/units', big), 413, 'body_too_large');
    // The reports endpoint answers as before.
    expectError(await api('GET', '/admin/reports'), 400, 'invalid_parameter');
    assert.equal((await api('GET', '/admin/reports?from=2026-11-20')).status, 200);
  });

  test('tenant keys are refused (403) and missing keys (401) on every endpoint', T, async () => {
    // A tenant secret rotated out is still a tenant's.
    const made = await api('POST', '/admin/keys', { team: 'team-rot' });
    const rotated = await api('POST', `/admin/keys/${made.json.key.id}/rotate`, { grace_s: 600 });
    assert.equal(rotated.status, 200);
    const endpoints = [
      ['GET', '/admin/units'],
      ['POST', '/admin/units', { id: 'tenant-made' }],
      ['GET', '/admin/units/eng'],
      ['PATCH', '/admin/units/eng', { name: 'x' }],
      ['GET', '/admin/teams'],
      ['POST', '/admin/teams', { id: 'tenant-made' }],
      ['GET', '/admin/teams/team-a'],
      ['PATCH', '/admin/teams/team-a', { name: 'x' }],
      ['GET', '/admin/keys'],
      ['POST', '/admin/keys', { team: 'tenant-made' }],
      ['GET', `/admin/keys/${made.json.key.id}`],
      ['PATCH', `/admin/keys/${made.json.key.id}`, { name: 'x' }],
      ['POST', `/admin/keys/${made.json.key.id}/revoke`],
      ['POST', `/admin/keys/${made.json.key.id}/rotate`],
      ['GET', '/admin/reports?from=2026-11-20'],
      ['GET', '/admin/metrics'],
    ];
    for (const [method, p, body] of endpoints) {
      for (const secret of [tenantKey, made.json.secret, rotated.json.secret]) {
        for (const h of [{ authorization: `Bearer ${secret}` }, { 'x-api-key': secret }]) {
          expectError(await api(method, p, body, h), 403, 'admin_key_required');
        }
      }
      expectError(await api(method, p, body, {}), 401, 'missing_admin_key');
      expectError(await api(method, p, body, { 'x-api-key': 'tga_nope' }), 401, 'invalid_admin_key');
    }
    // None of them changed anything.
    assert.equal((await api('GET', '/admin/units/tenant-made')).status, 404);
    assert.equal((await api('GET', '/admin/keys?team=tenant-made')).json.data.length, 0);
    const k = await api('GET', `/admin/keys/${made.json.key.id}`);
    assert.equal(k.json.state, 'active');
    assert.equal(k.json.name, '');
    // The tenant door does not serve these paths.
    assert.equal((await request(gw.port, { path: '/admin/units', headers: auth })).status, 404);
  });

  test('GET /admin/metrics: the gateway metrics for an admin key', T, async () => {
    await request(gw.port, { path: '/healthz' }); // one request the gateway counts
    const r = await api('GET', '/admin/metrics');
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers['content-type'] || '', /^text\/plain; version=0\.0\.4/);
    assert.match(r.text, /^# TYPE tollgate_http_requests_total counter$/m);
    assert.match(r.text, /^tollgate_usage_events_total \d+$/m);
    // The same text as the gateway's own /metrics, which loopback clients get.
    const own = await request(gw.port, { path: '/metrics' });
    assert.equal(own.status, 200);
    const names = (t) => [...t.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]);
    assert.deepEqual(names(r.text), names(own.text));
    expectError(await api('POST', '/admin/metrics'), 405, 'method_not_allowed');
  });

  test('the CLI makes the same records as the API', T, async () => {
    // units create on the CLI, then GET over HTTP.
    const policyFile = path.join(dir, 'policy.json');
    fs.writeFileSync(policyFile, JSON.stringify({ limits: { requests_per_day: 100 } }));
    const created = await cliJson(['units', 'create', 'cli-unit', '--name', 'From CLI', '--policy', `@${policyFile}`]);
    let r = await api('GET', '/admin/units/cli-unit');
    assert.deepEqual(r.json, created);
    assert.deepEqual(r.json.policy, { limits: { requests_per_day: 100 } });
    // ... and the API's records read the same on the CLI.
    await api('POST', '/admin/units', { id: 'api-unit', name: 'From API' });
    assert.deepEqual(await cliJson(['units', 'show', 'api-unit']), (await api('GET', '/admin/units/api-unit')).json);
    assert.deepEqual(await cliJson(['units', 'list']), (await api('GET', '/admin/units')).json);

    const dis = await cliJson(['units', 'disable', 'cli-unit']);
    assert.equal(dis.disabled, true);
    assert.equal((await api('GET', '/admin/units/cli-unit')).json.disabled, true);
    assert.equal((await cliJson(['units', 'enable', 'cli-unit'])).disabled, false);
    const upd = await cliJson(['units', 'update', 'cli-unit', '--name', 'Renamed', '--policy', 'none']);
    assert.equal(upd.policy, null);
    assert.deepEqual((await api('GET', '/admin/units/cli-unit')).json, upd);

    const team = await cliJson(['teams', 'create', 'cli-team', '--unit', 'cli-unit', '--name', 'T', '--cost-center', 'CC-9', '--policy', '{"limits":{"rpm":10}}']);
    assert.deepEqual((await api('GET', '/admin/teams/cli-team')).json, team);
    assert.equal(team.unit, 'cli-unit');
    assert.deepEqual(await cliJson(['teams', 'list', '--unit', 'cli-unit']), (await api('GET', '/admin/teams?unit=cli-unit')).json);
    const moved = await cliJson(['teams', 'update', 'cli-team', '--unit', 'api-unit', '--cost-center', 'CC-10']);
    assert.equal(moved.unit, 'api-unit');
    assert.equal((await api('GET', '/admin/teams/cli-team')).json.cost_center, 'CC-10');
    assert.equal((await cliJson(['teams', 'disable', 'cli-team'])).disabled, true);

    // keys create keeps its output (the secret alone on the last line) and gains --policy.
    const kc = await cli(['keys', 'create', '--team', 'cli-team', '--name', 'k', '--policy', '{"models":["m1"]}']);
    const lines = kc.stdout.trim().split('\n');
    assert.match(lines[0], /^Created key key_[0-9a-f]{16} for team cli-team \(prefix tg_[0-9A-Za-z]{7}\)\. It is shown once: store it now\.$/);
    const secret = lines[lines.length - 1];
    assert.match(secret, KEY_RE);
    const id = /Created key (key_[0-9a-f]{16})/.exec(lines[0])[1];
    r = await api('GET', `/admin/keys/${id}`);
    assert.deepEqual(r.json.policy, { models: ['m1'] });
    assert.ok(secret.startsWith(r.json.prefix));
    assert.deepEqual(await cliJson(['keys', 'show', id]), r.json);
    const ku = await cliJson(['keys', 'update', id, '--name', 'k2', '--expires-in', '60']);
    assert.equal(ku.name, 'k2');
    assert.ok(ku.expires_ms > Date.now());
    assert.deepEqual(ku.policy, { models: ['m1'] }, 'an update without --policy keeps it');

    // keys rotate: a line, then the new secret alone on the last line.
    const kr = await cli(['keys', 'rotate', id, '--grace', '120']);
    const rl = kr.stdout.trim().split('\n');
    assert.equal(rl.length, 2, kr.stdout);
    assert.match(rl[0], /^Rotated key key_[0-9a-f]{16} \(new prefix tg_[0-9A-Za-z]{7}\); the old secret is accepted until \d{4}-\d\d-\d\dT/);
    const secret2 = rl[1];
    assert.match(secret2, KEY_RE);
    assert.notEqual(secret2, secret);
    r = await api('GET', `/admin/keys/${id}`);
    assert.ok(secret2.startsWith(r.json.prefix));
    assert.ok(Math.abs(r.json.rotated_until_ms - (Date.now() + 120000)) < 60000);

    // Refusals: exit 1 with the field named on stderr; usage errors exit 2.
    let e = await cli(['units', 'create', 'cli-unit'], 1);
    assert.match(e.stderr, /already exists/);
    e = await cli(['teams', 'create', 'x-team', '--unit', 'nowhere'], 1);
    assert.match(e.stderr, /unit: /);
    e = await cli(['units', 'create', 'bad-pol', '--policy', '{"limits":{"rpm":-1}}'], 1);
    assert.match(e.stderr, /policy\.limits\.rpm: /);
    e = await cli(['units', 'create', 'bad-json', '--policy', '{nope'], 1);
    assert.match(e.stderr, /policy: /);
    e = await cli(['keys', 'create', '--team', 'bad team'], 1);
    assert.match(e.stderr, /team: /);
    e = await cli(['units', 'show', 'nobody'], 1);
    assert.match(e.stderr, /No unit 'nobody'/);
    await cli(['units', 'create'], 2);
    await cli(['units', 'create', 'x', '--team', 't'], 2);
    await cli(['units', 'frobnicate'], 2);
    await cli(['keys', 'create'], 2);
    await cli(['keys', 'rotate', id, '--grace', 'soon'], 2);
    await cli(['keys', 'update', id, '--expires-in', '-5'], 2);
    assert.equal((await api('GET', '/admin/units/bad-pol')).status, 404);
    assert.equal((await api('GET', '/admin/units/x')).status, 404);
  });
});

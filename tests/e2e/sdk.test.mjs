// Unmodified AWS SDK clients through tollgate: @aws-sdk/client-bedrock-runtime
// (pinned) with only its endpoint and credentials changed. SigV4 from the
// client: the access key id is a tollgate key id, the secret its secret
// (derived from keys.derive_secret_env, so the gateway can verify it while it
// stores only a hash); Bearer (how the SDK sends Bedrock API keys) as well.
// InvokeModel, InvokeModelWithResponseStream, Converse and ConverseStream
// reach the fake Bedrock, signed there with the gateway's own credentials.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import {
  BedrockRuntimeClient,
  InvokeModelCommand,
  InvokeModelWithResponseStreamCommand,
  ConverseCommand,
  ConverseStreamCommand,
} from '@aws-sdk/client-bedrock-runtime';
import { NodeHttpHandler } from '@smithy/node-http-handler';
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
  runCli,
} from './harness.mjs';

const T = { timeout: 60000 };
const HAIKU = 'anthropic.claude-3-haiku-20240307-v1:0';
const DERIVE = 'a-derivation-secret-of-at-least-32-bytes-0123456789';

describe('AWS SDK clients through tollgate', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let br, env, gw, port, admin, derived, random;

  const adminCall = (method, p, body) =>
    request(admin, { method, path: p, headers: { authorization: `Bearer ${gw.adminKey}` }, body });
  const client = (credentials, extra = {}) =>
    new BedrockRuntimeClient({
      region: 'us-east-1',
      endpoint: `http://127.0.0.1:${port}`,
      credentials,
      requestHandler: new NodeHttpHandler(),
      maxAttempts: 1,
      ...extra,
    });
  const converse = (c, text = 'Hello') =>
    c.send(new ConverseCommand({ modelId: HAIKU, messages: [{ role: 'user', content: [{ text }] }], inferenceConfig: { maxTokens: 32 } }));

  before(tracker.guard(async () => {
    requireBinary();
    const registry = new Map();
    const creds = staticCreds(registry);
    br = await startFakeBedrock({ registry });
    const dir = makeTmpDir('sdk');
    const config = {
      listen: '127.0.0.1:0',
      workers: 2,
      store: { path: path.join(dir, 't.db') },
      reports: { enabled: false },
      keys: { derive_secret_env: 'TG_DERIVE' },
      providers: [
        {
          name: 'br',
          type: 'bedrock',
          region: 'us-east-1',
          endpoint: br.url,
          credentials: { access_key_id_env: 'TG_T_AK', secret_access_key_env: 'TG_T_SK' },
          catalog: { refresh_s: 0 },
        },
      ],
      models: [{ id: HAIKU, provider: 'br', upstream_model: HAIKU }],
    };
    const configFile = writeConfig(dir, config);
    // A key made before derivation was configured: random secret, no SigV4.
    const noDerive = writeConfig(dir, { ...config, keys: undefined }, 'plain.json');
    const r = await runCli(['keys', 'create', '--config', noDerive, '--team', 'team-sdk']);
    assert.equal(r.code, 0, r.stderr);
    const randomSecret = r.stdout.trim().split('\n').pop();
    gw = await startGateway(configFile, { env: { TG_DERIVE: DERIVE, TG_T_AK: creds.accessKeyId, TG_T_SK: creds.secretAccessKey } });
    env = { dir, config, configFile, gw };
    port = gw.port;
    admin = Number(new URL(gw.adminUrl).port);
    const made = await adminCall('POST', '/admin/keys', { team: 'team-sdk' });
    assert.equal(made.status, 201, made.text);
    derived = { accessKeyId: made.json.key.id, secretAccessKey: made.json.secret };
    const keys = (await adminCall('GET', '/admin/keys?team=team-sdk')).json.data;
    random = { accessKeyId: keys.find((k) => randomSecret.startsWith(k.prefix)).id, secretAccessKey: randomSecret };
    await waitFor(async () => (await request(port, { path: '/v1/limits', headers: { authorization: `Bearer ${made.json.secret}` } })).status === 200, {
      timeoutMs: 3000,
      message: 'the new key',
    });
  }), { timeout: 30000 });

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    await br?.close();
  }, { timeout: 15000 });

  test('SigV4: all four operations, signed with the key id and its secret', T, async () => {
    const c = client(derived);
    const conv = await converse(c);
    assert.equal(conv.output.message.role, 'assistant');
    const inv = await c.send(new InvokeModelCommand({
      modelId: HAIKU,
      contentType: 'application/json',
      body: JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 32, messages: [{ role: 'user', content: 'Hi' }] }),
    }));
    assert.ok(JSON.parse(Buffer.from(inv.body).toString()).content);
    const cs = await c.send(new ConverseStreamCommand({ modelId: HAIKU, messages: [{ role: 'user', content: [{ text: 'Stream' }] }] }));
    let text = '';
    let usage;
    for await (const ev of cs.stream) {
      if (ev.contentBlockDelta) text += ev.contentBlockDelta.delta.text;
      if (ev.metadata) usage = ev.metadata.usage;
    }
    assert.ok(text.length > 0 && usage.outputTokens > 0);
    const is = await c.send(new InvokeModelWithResponseStreamCommand({
      modelId: HAIKU,
      contentType: 'application/json',
      body: JSON.stringify({ anthropic_version: 'bedrock-2023-05-31', max_tokens: 32, messages: [{ role: 'user', content: 'Hi' }] }),
    }));
    let chunks = 0;
    for await (const ev of is.body) if (ev.chunk) chunks++;
    assert.ok(chunks > 0);
    const rows = (await usageList(env.configFile)).filter((u) => u.key_id === derived.accessKeyId);
    assert.equal(rows.length, 4, 'each call recorded under the signing key');
  });

  test('SigV4 refusals: wrong secret, unknown id, a key whose secret was not derived, a stale date', T, async () => {
    await assert.rejects(converse(client({ ...derived, secretAccessKey: derived.secretAccessKey.slice(0, -1) + 'x' })), (e) => e.$metadata?.httpStatusCode === 401);
    await assert.rejects(converse(client({ accessKeyId: 'key_0000000000000000', secretAccessKey: derived.secretAccessKey })), (e) => e.$metadata?.httpStatusCode === 401);
    await assert.rejects(converse(client(random)), (e) => e.$metadata?.httpStatusCode === 401 && /derived/.test(e.message));
    // The same request replayed 20 minutes later is refused.
    const skewed = client(derived, { systemClockOffset: -20 * 60 * 1000 });
    await assert.rejects(converse(skewed), (e) => e.$metadata?.httpStatusCode === 401);
    // Bearer still works for the key whose secret is random.
    const bearer = client(undefined, { token: { token: random.secretAccessKey }, authSchemePreference: ['httpBearerAuth'] });
    assert.equal((await converse(bearer)).output.message.role, 'assistant');
  });

  test('rotation: the old derived secret signs through its grace, then only the new one', T, async () => {
    const rot = await adminCall('POST', `/admin/keys/${derived.accessKeyId}/rotate`, { grace_s: 2 });
    assert.equal(rot.status, 200, rot.text);
    const fresh = { accessKeyId: derived.accessKeyId, secretAccessKey: rot.json.secret };
    await waitFor(async () => {
      try {
        await converse(client(fresh));
        return true;
      } catch {
        return false;
      }
    }, { timeoutMs: 3000, message: 'the new secret' });
    assert.equal((await converse(client(derived))).output.message.role, 'assistant', 'the old secret in its grace');
    await waitFor(async () => {
      try {
        await converse(client(derived));
        return false;
      } catch (e) {
        return e.$metadata?.httpStatusCode === 401;
      }
    }, { timeoutMs: 5000, intervalMs: 200, message: 'the grace to end' });
    assert.equal((await converse(client(fresh))).output.message.role, 'assistant');
    derived = fresh;
  });
});

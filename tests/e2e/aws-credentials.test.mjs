// The gateway's own AWS credentials, end to end: a Bedrock provider with no
// keys in its config gets them from each non-trivial link of the default
// chain (web identity + STS, the container endpoint, IMDSv2, and a role
// assumed on top), configured through endpoint overrides and the
// environment of the gateway process; the fake Bedrock accepts only keys the
// fake credential servers issued. Then short-lived credentials (about 3 s)
// under continuous load: every call succeeds and the keys rotate.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startCredsFakes } from './fake-aws-creds.mjs';
import { startFakeBedrock } from './fake-aws.mjs';
import {
  requireBinary,
  makeTmpDir,
  removeTmpDir,
  writeConfig,
  createKey,
  startGateway,
  requestBytes,
  waitForUsage,
  failureTracker,
} from './harness.mjs';

const T = { timeout: 60000 };
const ROLE_ARN = 'arn:aws:iam::123456789012:role/tollgate-up';
const WEB_ROLE_ARN = 'arn:aws:iam::123456789012:role/tollgate-web';
const JWT = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl';
const CONTAINER_TOKEN = 'Bearer ctok-0123456789';
const MODEL = 'anthropic.claude-3-5-sonnet-20240620-v1:0';

// Nothing from the machine running the tests leaks into the chain.
const CLEAN = {
  AWS_ACCESS_KEY_ID: '',
  AWS_SECRET_ACCESS_KEY: '',
  AWS_SESSION_TOKEN: '',
  AWS_PROFILE: '',
  AWS_WEB_IDENTITY_TOKEN_FILE: '',
  AWS_ROLE_ARN: '',
  AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '',
  AWS_CONTAINER_CREDENTIALS_FULL_URI: '',
  AWS_CONTAINER_AUTHORIZATION_TOKEN: '',
  AWS_BEARER_TOKEN_BEDROCK: '',
  AWS_EC2_METADATA_DISABLED: 'true',
};

describe('AWS credentials of the gateway itself', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  const registry = new Map();
  let fakes;
  let bedrock;
  let dir;
  let home;
  const running = [];

  before(tracker.guard(async () => {
    requireBinary();
    fakes = await startCredsFakes({ registry, webIdentityToken: JWT, containerAuthToken: CONTAINER_TOKEN });
    bedrock = await startFakeBedrock({ registry });
    dir = makeTmpDir('awscreds');
    home = path.join(dir, 'home');
    fs.mkdirSync(home, { recursive: true });
  }));

  after(async () => {
    for (const g of running) await g.stop();
    if (tracker.failed) for (const g of running) process.stderr.write(`--- gateway stderr ---\n${g.stderr().slice(-6000)}\n`);
    if (bedrock) await bedrock.close();
    if (fakes) await fakes.close();
    if (!tracker.failed) removeTmpDir(dir);
  });

  /** A gateway whose one Bedrock provider takes `credentials` and `env`. */
  async function gateway(name, credentials, env) {
    const sub = path.join(dir, name);
    fs.mkdirSync(sub, { recursive: true });
    const configFile = writeConfig(sub, {
      listen: '127.0.0.1:0',
      workers: 2,
      store: { path: path.join(sub, 't.db') },
      http: { shutdown_timeout_ms: 2000 },
      providers: [{
        name: 'br',
        type: 'bedrock',
        region: 'us-east-1',
        endpoint: bedrock.url,
        auth: 'sigv4',
        credentials: { timeout_ms: 2000, ...credentials },
        catalog: { refresh_s: 0 },
      }],
      models: [{ id: 'claude', provider: 'br', upstream_model: MODEL }],
    });
    const key = await createKey(configFile, 'team-creds');
    const gw = await startGateway(configFile, { env: { ...CLEAN, HOME: home, ...env } });
    running.push(gw);
    return { gw, key, configFile };
  }

  async function call(g, marker) {
    const r = await requestBytes(g.gw.port, {
      path: '/model/claude/converse',
      headers: { authorization: `Bearer ${g.key}`, 'content-type': 'application/json' },
      body: { messages: [{ role: 'user', content: [{ text: marker }] }], inferenceConfig: { maxTokens: 3 } },
    });
    const rec = bedrock.requests.find((x) => x.rawBody.includes(marker));
    return { r, rec };
  }

  async function expectSource(g, marker, source) {
    const { r, rec } = await call(g, marker);
    assert.equal(r.status, 200, `${marker}: ${r.text} / fake: ${rec && rec.rejected}`);
    assert.ok(rec, 'the call reached the fake');
    const entry = registry.get(rec.accessKeyId);
    assert.ok(entry, `${rec.accessKeyId} was issued by a fake`);
    assert.equal(entry.source, source);
    const row = await waitForUsage(g.configFile, r.headers['x-request-id']);
    assert.equal(row.outcome, 'ok');
    await g.gw.stop();
  }

  test('web identity token file + STS AssumeRoleWithWebIdentity', T, async () => {
    const tokenFile = path.join(dir, 'jwt');
    fs.writeFileSync(tokenFile, JWT);
    const g = await gateway('web', { sts_endpoint: fakes.stsUrl }, {
      AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile,
      AWS_ROLE_ARN: WEB_ROLE_ARN,
      AWS_ROLE_SESSION_NAME: 'pod-1',
    });
    await expectSource(g, 'marker-web-1', 'sts-web-identity');
  });

  test('container credentials endpoint with an authorization token', T, async () => {
    const g = await gateway('container', { container_endpoint: fakes.containerUrl }, {
      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/credentials/task-1',
      AWS_CONTAINER_AUTHORIZATION_TOKEN: CONTAINER_TOKEN,
    });
    await expectSource(g, 'marker-container-1', 'container');
  });

  test('EC2 instance metadata (IMDSv2)', T, async () => {
    const g = await gateway('imds', { imds_endpoint: fakes.imdsUrl }, { AWS_EC2_METADATA_DISABLED: '' });
    await expectSource(g, 'marker-imds-1', 'imds');
  });

  test('a role assumed on top of the chain (STS AssumeRole, SigV4-signed)', T, async () => {
    const g = await gateway('role', {
      imds_endpoint: fakes.imdsUrl,
      sts_endpoint: fakes.stsUrl,
      role_arn: ROLE_ARN,
      role_session_name: 'tollgate-test',
    }, { AWS_EC2_METADATA_DISABLED: '' });
    await expectSource(g, 'marker-role-1', 'sts-assume-role');
  });

  test('no credentials at all: the gateway starts, warns, and answers 503 credentials_unavailable', T, async () => {
    const g = await gateway('none', { container_endpoint: fakes.containerUrl }, {});
    const { r } = await call(g, 'marker-none-1');
    assert.equal(r.status, 503);
    assert.equal(r.json.code, 'credentials_unavailable');
    assert.equal(r.headers['x-amzn-errortype'], 'ServiceUnavailableException');
    assert.match(g.gw.stderr(), /no AWS credentials yet/);
    await g.gw.stop();
  });

  test('credentials expiring every ~3 s under continuous load: every call 200, keys rotate', { timeout: 60000 }, async () => {
    fakes.config.expiresInMs = 3000;
    try {
      const g = await gateway('refresh', { container_endpoint: fakes.containerUrl, refresh_before_ms: 1500 }, {
        AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/credentials/task-refresh',
        AWS_CONTAINER_AUTHORIZATION_TOKEN: CONTAINER_TOKEN,
      });
      const keys = new Set();
      const failures = [];
      const end = Date.now() + 8000;
      let n = 0;
      // Two callers at once, back to back, for about 8 s.
      await Promise.all([0, 1].map(async (w) => {
        for (let i = 0; i < 10000 && Date.now() < end; i++) {
          const { r, rec } = await call(g, `marker-load-${w}-${i}-x`);
          n++;
          if (r.status !== 200) failures.push(`${r.status} ${r.text} ${rec && rec.rejected}`);
          else keys.add(rec.accessKeyId);
        }
      }));
      assert.deepEqual(failures, [], `${failures.length} of ${n} calls failed`);
      assert.ok(n >= 20, `enough calls made (${n})`);
      assert.ok(keys.size >= 2, `at least two access keys used, saw ${keys.size}`);
      for (const k of keys) assert.equal(registry.get(k).source, 'container');
      await g.gw.stop();
    } finally {
      fakes.config.expiresInMs = 3600_000;
    }
  });
});

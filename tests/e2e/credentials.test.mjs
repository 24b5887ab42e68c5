// The AWS credential chain (src/aws/credentials.c) through tests/tools/creds_tool
// against fake STS, IMDSv2 and container endpoints (fake-aws-creds.mjs): each
// link, the order of precedence, AssumeRole on top (its SigV4 signature
// verified by AWS's own signer), and background refresh of short-lived
// credentials without ever holding an expired key.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { startCredsFakes } from './fake-aws-creds.mjs';
import { staticCreds, tempCreds } from './fake-aws.mjs';
import { requireTool, makeTmpDir, removeTmpDir } from './harness.mjs';

const T = { timeout: 30000 };
const ROLE_ARN = 'arn:aws:iam::123456789012:role/tollgate-up';
const WEB_ROLE_ARN = 'arn:aws:iam::123456789012:role/tollgate-web';
const JWT = 'eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2EifQ.c2lnbmF0dXJl';
const CONTAINER_TOKEN = 'Bearer ctok-0123456789';
const sha256 = (s) => createHash('sha256').update(s).digest('hex');

let tool;
let dir;
let registry;
let fakes;
let emptyHome;

/** Runs creds_tool with only the given environment (plus PATH). */
function run(args, env = {}, { timeoutMs = 20000 } = {}) {
  return new Promise((resolve) => {
    execFile(
      tool,
      args,
      { env: { PATH: process.env.PATH, HOME: emptyHome, ...env }, timeout: timeoutMs, maxBuffer: 4 << 20 },
      (err, stdout, stderr) => {
        const lines = stdout
          .split('\n')
          .filter(Boolean)
          .map((l) => JSON.parse(l));
        resolve({ code: err ? (err.code ?? 1) : 0, lines, json: lines[lines.length - 1], stdout, stderr });
      },
    );
  });
}

async function resolveOk(args, env) {
  const r = await run(['resolve', ...args], env);
  assert.equal(r.code, 0, `creds_tool failed: ${r.stderr}`);
  return r.json;
}

async function resolveErr(args, env) {
  const r = await run(['resolve', ...args], env);
  assert.equal(r.code, 1, `creds_tool should fail: ${r.stdout}`);
  assert.ok(r.json.error, r.stdout);
  return r.json;
}

/** Asserts the tool's answer is exactly a key the fakes issued. */
function assertIssued(out, source) {
  const entry = registry.get(out.access_key_id);
  assert.ok(entry, `${out.access_key_id} was not issued by a fake`);
  assert.equal(entry.source, source);
  assert.equal(out.secret_sha256, sha256(entry.secretAccessKey));
  assert.equal(out.has_token, true);
  assert.equal(out.token_sha256, sha256(entry.sessionToken));
  assert.equal(out.expires_ms, entry.expiresAtMs);
  return entry;
}

const noImds = { AWS_EC2_METADATA_DISABLED: 'true' };
const endpoints = () => ['--sts', fakes.stsUrl, '--imds', fakes.imdsUrl, '--container', fakes.containerUrl];

function writeFile(name, text) {
  const p = path.join(dir, name);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, text);
  return p;
}

test('creds_tool is built', () => {
  tool = requireTool('creds_tool');
});

describe('AWS credential chain', () => {
  before(async () => {
    tool = requireTool('creds_tool');
    dir = makeTmpDir('creds');
    emptyHome = path.join(dir, 'empty-home');
    fs.mkdirSync(emptyHome);
    registry = new Map();
    fakes = await startCredsFakes({ registry, webIdentityToken: JWT, containerAuthToken: CONTAINER_TOKEN });
  });
  after(async () => {
    await fakes?.close();
    removeTmpDir(dir);
  });

  test('environment', T, async () => {
    const out = await resolveOk([], {
      ...noImds,
      AWS_ACCESS_KEY_ID: 'AKIDENVEXAMPLE',
      AWS_SECRET_ACCESS_KEY: 'env/secret',
      AWS_SESSION_TOKEN: 'envtoken',
    });
    assert.equal(out.source, 'environment');
    assert.equal(out.access_key_id, 'AKIDENVEXAMPLE');
    assert.equal(out.secret_sha256, sha256('env/secret'));
    assert.equal(out.has_token, true);
    assert.equal(out.expires_ms, 0);
  });

  test('nothing configured: every link says why', T, async () => {
    const out = await resolveErr([], noImds);
    assert.equal(out.code, 'unauthenticated');
    for (const s of ['environment:', 'shared-files:', 'web-identity:', 'container:', 'imds: disabled']) {
      assert.ok(out.error.includes(s), `${s} missing from: ${out.error}`);
    }
  });

  test('shared files in HOME: profiles, precedence between the files, AWS_PROFILE', T, async () => {
    const home = path.join(dir, 'home-files');
    writeFile(
      'home-files/.aws/credentials',
      '# comment\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = defsecret\n' +
        '[dev]\naws_access_key_id=AKIDDEVCREDS\naws_secret_access_key=devsecret ; note\n',
    );
    writeFile(
      'home-files/.aws/config',
      '[default]\nregion = us-east-1\n[profile dev]\naws_access_key_id = AKIDDEVCONFIG\n' +
        'aws_secret_access_key = x\naws_session_token = devtoken\n[profile cfg]\n' +
        'aws_access_key_id = AKIDCFG\naws_secret_access_key = cfgsecret\n[bare]\n' +
        'aws_access_key_id = AKIDBARE\naws_secret_access_key = bare\n',
    );
    let out = await resolveOk([], { ...noImds, HOME: home });
    assert.equal(out.source, 'shared-files');
    assert.equal(out.access_key_id, 'AKIDDEFAULT');
    out = await resolveOk([], { ...noImds, HOME: home, AWS_PROFILE: 'dev' });
    assert.equal(out.access_key_id, 'AKIDDEVCREDS'); // the credentials file wins
    assert.equal(out.secret_sha256, sha256('devsecret'));
    assert.equal(out.has_token, true); // ...key by key: the token comes from config
    out = await resolveOk(['--profile', 'cfg'], { ...noImds, HOME: home });
    assert.equal(out.access_key_id, 'AKIDCFG');
    // "[bare]" in the config file is not a profile; a named missing profile is an error.
    const err = await resolveErr(['--profile', 'bare'], { ...noImds, HOME: home });
    assert.match(err.error, /shared-files: profile "bare" not found/);
    // Explicit file locations.
    out = await resolveOk([], {
      ...noImds,
      AWS_SHARED_CREDENTIALS_FILE: writeFile('elsewhere/creds', '[default]\naws_access_key_id=AKIDELSEWHERE\naws_secret_access_key=e\n'),
      AWS_CONFIG_FILE: path.join(dir, 'elsewhere/none'),
    });
    assert.equal(out.access_key_id, 'AKIDELSEWHERE');
  });

  test('shared files: role_arn with source_profile assumes the role (SigV4 verified)', T, async () => {
    const base = staticCreds(registry);
    const home = path.join(dir, 'home-role');
    writeFile('home-role/.aws/credentials', `[base]\naws_access_key_id = ${base.accessKeyId}\naws_secret_access_key = ${base.secretAccessKey}\n`);
    writeFile('home-role/.aws/config', `[profile up]\nrole_arn = ${ROLE_ARN}\nsource_profile = base\nrole_session_name = files-session\nexternal_id = ext-1\n`);
    const before = fakes.requests.length;
    const out = await resolveOk(['--profile', 'up', '--sts', fakes.stsUrl], { ...noImds, HOME: home });
    assert.equal(out.source, 'assume-role');
    assertIssued(out, 'sts-assume-role');
    const calls = fakes.requests.slice(before);
    assert.equal(calls.length, 1);
    assert.equal(calls[0].action, 'AssumeRole');
    assert.equal(calls[0].status, 200);
    assert.equal(calls[0].callerKeyId, base.accessKeyId);
    assert.equal(calls[0].externalId, 'ext-1');
  });

  test('web identity: token file and role through STS AssumeRoleWithWebIdentity', T, async () => {
    const tokenFile = writeFile('jwt', JWT + '\n');
    const env = { ...noImds, AWS_WEB_IDENTITY_TOKEN_FILE: tokenFile, AWS_ROLE_ARN: WEB_ROLE_ARN, AWS_ROLE_SESSION_NAME: 'pod-1' };
    const out = await resolveOk(['--sts', fakes.stsUrl], env);
    assert.equal(out.source, 'web-identity');
    assertIssued(out, 'sts-web-identity');
    const last = fakes.requests.at(-1);
    assert.equal(last.action, 'AssumeRoleWithWebIdentity');
    assert.equal(last.webIdentityToken, JWT);

    // A refused token: STS's code in the message, never the token itself.
    const err = await resolveErr(['--sts', fakes.stsUrl], { ...env, AWS_WEB_IDENTITY_TOKEN_FILE: writeFile('jwt-bad', 'not.the.token') });
    assert.match(err.error, /^web-identity: STS AssumeRoleWithWebIdentity at http:\/\/127\.0\.0\.1:\d+\/: HTTP 400, STS error InvalidIdentityToken/);
    assert.ok(!err.error.includes('not.the.token'));

    // The same through a profile's web_identity_token_file.
    const home = path.join(dir, 'home-web');
    writeFile('home-web/.aws/config', `[default]\nrole_arn = ${WEB_ROLE_ARN}\nweb_identity_token_file = ${tokenFile}\n`);
    const viaProfile = await resolveOk(['--sts', fakes.stsUrl], { ...noImds, HOME: home });
    assert.equal(viaProfile.source, 'web-identity');
    assertIssued(viaProfile, 'sts-web-identity');
  });

  test('container: relative URI with a token, full URI with a token file', T, async () => {
    const rel = { ...noImds, AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/credentials/5f3c-task', AWS_CONTAINER_AUTHORIZATION_TOKEN: CONTAINER_TOKEN };
    let out = await resolveOk(['--container', fakes.containerUrl], rel);
    assert.equal(out.source, 'container');
    assertIssued(out, 'container');
    let last = fakes.requests.at(-1);
    assert.equal(last.path, '/v2/credentials/5f3c-task');
    assert.equal(last.authorization, CONTAINER_TOKEN);

    const full = {
      ...noImds,
      AWS_CONTAINER_CREDENTIALS_FULL_URI: `${fakes.containerUrl}/creds`,
      AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE: writeFile('ctoken', CONTAINER_TOKEN + '\n'),
      AWS_CONTAINER_AUTHORIZATION_TOKEN: 'Bearer ignored-when-the-file-is-set',
    };
    out = await resolveOk([], full);
    assertIssued(out, 'container');
    last = fakes.requests.at(-1);
    assert.equal(last.path, '/creds');
    assert.equal(last.authorization, CONTAINER_TOKEN);

    // A wrong token is refused (and not echoed); plain http only to loopback.
    let err = await resolveErr(['--container', fakes.containerUrl], { ...rel, AWS_CONTAINER_AUTHORIZATION_TOKEN: 'Bearer wrong-token' });
    assert.match(err.error, /^container: GET http:\/\/127\.0\.0\.1:\d+\/v2\/credentials\/5f3c-task: HTTP 401 AccessDeniedException/);
    assert.ok(!err.error.includes('wrong-token'));
    const count = fakes.counters.container;
    err = await resolveErr([], { ...noImds, AWS_CONTAINER_CREDENTIALS_FULL_URI: 'http://example.com/creds' });
    assert.match(err.error, /neither https nor a loopback/);
    assert.equal(fakes.counters.container, count);
  });

  test('IMDSv2: the token dance, then the role, then its credentials', T, async () => {
    // The fake is IMDSv2-only: a GET without a token is refused.
    const r = await fetch(`${fakes.imdsUrl}/latest/meta-data/iam/security-credentials/`);
    assert.equal(r.status, 401);

    const before = fakes.requests.length;
    const out = await resolveOk(['--imds', fakes.imdsUrl], {});
    assert.equal(out.source, 'imds');
    assertIssued(out, 'imds');
    const calls = fakes.requests.slice(before).map((q) => `${q.method} ${q.path} ${q.status}`);
    assert.deepEqual(calls, [
      'PUT /latest/api/token 200',
      'GET /latest/meta-data/iam/security-credentials/ 200',
      'GET /latest/meta-data/iam/security-credentials/tollgate-role 200',
    ]);
    // The environment's endpoint works too; AWS_EC2_METADATA_DISABLED skips it.
    const viaEnv = await resolveOk([], { AWS_EC2_METADATA_SERVICE_ENDPOINT: fakes.imdsUrl });
    assertIssued(viaEnv, 'imds');
    const n = fakes.counters.imds;
    await resolveErr([], { AWS_EC2_METADATA_SERVICE_ENDPOINT: fakes.imdsUrl, AWS_EC2_METADATA_DISABLED: 'true' });
    assert.equal(fakes.counters.imds, n);
  });

  test('AssumeRole on top of the chain, signed and verified', T, async () => {
    const base = staticCreds(registry);
    const env = { ...noImds, AWS_ACCESS_KEY_ID: base.accessKeyId, AWS_SECRET_ACCESS_KEY: base.secretAccessKey };
    let out = await resolveOk(['--sts', fakes.stsUrl, '--role-arn', ROLE_ARN, '--session-name', 'top'], env);
    assert.equal(out.source, 'assume-role');
    assertIssued(out, 'sts-assume-role');
    assert.equal(fakes.requests.at(-1).callerKeyId, base.accessKeyId);

    // Over temporary credentials (a session token signed in) from IMDS.
    out = await resolveOk(['--sts', fakes.stsUrl, '--imds', fakes.imdsUrl, '--role-arn', ROLE_ARN], {});
    assertIssued(out, 'sts-assume-role');
    const caller = registry.get(fakes.requests.at(-1).callerKeyId);
    assert.equal(caller.source, 'imds');

    // A wrong secret: the signature does not match.
    let err = await resolveErr(['--sts', fakes.stsUrl, '--role-arn', ROLE_ARN], { ...env, AWS_SECRET_ACCESS_KEY: 'not-the-secret' });
    assert.match(err.error, /^assume-role \(over environment\): STS AssumeRole at .*: HTTP 403, STS error SignatureDoesNotMatch/);
    assert.ok(!err.error.includes('not-the-secret'));
    // Expired base credentials: STS says so.
    const old = tempCreds(registry, { expiresAtMs: Date.now() - 1000 });
    err = await resolveErr(['--sts', fakes.stsUrl, '--role-arn', ROLE_ARN], {
      ...noImds,
      AWS_ACCESS_KEY_ID: old.accessKeyId,
      AWS_SECRET_ACCESS_KEY: old.secretAccessKey,
      AWS_SESSION_TOKEN: old.sessionToken,
    });
    assert.match(err.error, /STS error ExpiredToken/);
    // Signed for the wrong region.
    err = await resolveErr(['--sts', fakes.stsUrl, '--role-arn', ROLE_ARN, '--region', 'eu-west-3'], env);
    assert.match(err.error, /STS error SignatureDoesNotMatch/);
  });

  test('order: env beats files beats web identity beats container beats IMDS', T, async () => {
    const base = staticCreds(registry);
    const home = path.join(dir, 'home-order');
    writeFile('home-order/.aws/credentials', '[default]\naws_access_key_id = AKIDFILES\naws_secret_access_key = f\n');
    const layers = {
      env: { AWS_ACCESS_KEY_ID: base.accessKeyId, AWS_SECRET_ACCESS_KEY: base.secretAccessKey },
      files: { HOME: home },
      web: { AWS_WEB_IDENTITY_TOKEN_FILE: writeFile('jwt-order', JWT), AWS_ROLE_ARN: WEB_ROLE_ARN },
      container: { AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/credentials/order', AWS_CONTAINER_AUTHORIZATION_TOKEN: CONTAINER_TOKEN },
      imds: {},
    };
    const expected = { env: 'environment', files: 'shared-files', web: 'web-identity', container: 'container', imds: 'imds' };
    const order = Object.keys(layers);
    for (let i = 0; i < order.length; i++) {
      const env = Object.assign({}, ...order.slice(i).map((k) => layers[k]));
      const before = { ...fakes.counters };
      const out = await resolveOk(endpoints(), env);
      assert.equal(out.source, expected[order[i]], `with ${order.slice(i).join('+')}`);
      // The links after the winner were never asked.
      const later = order.slice(i + 1);
      if (later.includes('web')) assert.equal(fakes.counters.sts, before.sts);
      if (later.includes('container')) assert.equal(fakes.counters.container, before.container);
      if (later.includes('imds')) assert.equal(fakes.counters.imds, before.imds);
    }
  });
});

describe('AWS credentials refresh in the background', () => {
  let rdir;
  let rreg;
  let rf;
  before(async () => {
    tool = requireTool('creds_tool');
    rdir = makeTmpDir('creds-refresh');
    emptyHome = path.join(rdir, 'home');
    fs.mkdirSync(emptyHome);
    rreg = new Map();
    rf = await startCredsFakes({ registry: rreg, expiresInMs: 3000, containerAuthToken: CONTAINER_TOKEN });
  });
  after(async () => {
    await rf?.close();
    removeTmpDir(rdir);
  });

  /** Runs watch and checks: >= 3 keys, every one issued, none held expired. */
  async function watchAndCheck(args, env, source) {
    const r = await run(['watch', '--seconds', '8', '--refresh-before-ms', '1000', ...args], env, { timeoutMs: 20000 });
    assert.equal(r.code, 0, r.stderr);
    const changes = r.lines.filter((l) => l.event === 'change');
    const summary = r.lines.find((l) => l.event === 'summary');
    assert.ok(summary, r.stdout);
    assert.ok(changes.length >= 3, `expected at least two refreshes, saw ${changes.length} keys:\n${r.stdout}`);
    assert.equal(summary.empty_polls, 0, 'credentials were missing at some point');
    assert.ok(summary.polls > 100);
    for (const k of summary.keys) {
      const entry = rreg.get(k.access_key_id);
      assert.ok(entry, `${k.access_key_id} not issued`);
      assert.equal(entry.source, source);
      assert.equal(k.expires_ms, entry.expiresAtMs);
      assert.ok(k.last_ms < entry.expiresAtMs, `${k.access_key_id} held ${k.last_ms - entry.expiresAtMs} ms past its expiry`);
    }
    return summary;
  }

  test('IMDS credentials expiring every ~3 s are refreshed ahead of expiry', T, async () => {
    await watchAndCheck(['--imds', rf.imdsUrl], {}, 'imds');
  });

  test('AssumeRole over container credentials, both short-lived, stays fresh', T, async () => {
    const before = rf.requests.length;
    await watchAndCheck(
      ['--sts', rf.stsUrl, '--container', rf.containerUrl, '--role-arn', ROLE_ARN],
      { AWS_EC2_METADATA_DISABLED: 'true', AWS_CONTAINER_CREDENTIALS_RELATIVE_URI: '/v2/credentials/r', AWS_CONTAINER_AUTHORIZATION_TOKEN: CONTAINER_TOKEN },
      'sts-assume-role',
    );
    const sts = rf.requests.slice(before).filter((q) => q.server === 'sts');
    assert.ok(sts.length >= 3);
    for (const q of sts) {
      assert.equal(q.status, 200, `AssumeRole refused: ${q.authError}`);
      assert.equal(rreg.get(q.callerKeyId).source, 'container');
    }
  });
});

// AWS's SigV4 test suite against `tollgate sigv4`: for every case folder in
// ../shared/vectors/sigv4 (outside the repository, which keeps no copy), the
// four header-* files must come out byte for byte: canonical request, string
// to sign, signature, signed request.
//
// When the folder is absent the test is reported as skipped with the reason
// (a skip, not a pass: the vectors were not checked).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT, BIN, requireBinary } from './harness.mjs';

// TOLLGATE_VECTORS names the vectors folder when the checkout is elsewhere
// (a clean clone in /tmp, say); by default it sits beside the repository.
const SUITE = path.resolve(process.env.TOLLGATE_VECTORS || path.join(ROOT, '..', 'shared', 'vectors'), 'sigv4');
const OUTPUTS = ['canonical-request', 'string-to-sign', 'signature', 'signed-request'];

function casesOrNull() {
  try {
    return fs
      .readdirSync(SUITE, { withFileTypes: true })
      .filter((d) => d.isDirectory())
      .map((d) => d.name)
      .sort();
  } catch {
    return null;
  }
}

/** The command line context.json asks for. */
export function sigv4Args(ctx) {
  const c = ctx.credentials;
  const args = ['sigv4', '--access-key-id', c.access_key_id, '--secret-access-key', c.secret_access_key];
  if (c.token) args.push('--session-token', c.token);
  args.push('--region', ctx.region, '--service', ctx.service, '--time', ctx.timestamp);
  if (ctx.sign_body) args.push('--sign-body');
  if (ctx.normalize === false) args.push('--no-normalize');
  if (ctx.omit_session_token) args.push('--omit-session-token');
  return args;
}

const cases = casesOrNull();

if (!cases) {
  test('AWS SigV4 test suite', {
    skip: `SigV4 vectors not found at ${SUITE}: they live outside the repository (../shared/vectors, or set TOLLGATE_VECTORS); nothing was checked`,
  }, () => {});
} else {
  test('the suite is all there', () => {
    assert.ok(cases.length >= 38, `expected the 38 cases of the suite, found ${cases.length} in ${SUITE}`);
  });

  for (const name of cases) {
    test(`vector ${name}`, () => {
      requireBinary();
      const dir = path.join(SUITE, name);
      const ctx = JSON.parse(fs.readFileSync(path.join(dir, 'context.json'), 'utf8'));
      const request = fs.readFileSync(path.join(dir, 'request.txt'));
      for (const out of OUTPUTS) {
        const want = fs.readFileSync(path.join(dir, `header-${out}.txt`));
        const r = spawnSync(BIN, [...sigv4Args(ctx), '--print', out], { input: request, timeout: 10000 });
        assert.equal(r.status, 0, `${name} --print ${out}: exit ${r.status}, stderr: ${r.stderr}`);
        assert.equal(
          r.stdout.toString('latin1'),
          want.toString('latin1'),
          `${name}: header-${out}.txt differs`,
        );
      }
    });
  }
}

test('sigv4 CLI errors: usage is exit 2, bad input exit 1, with a message', () => {
  requireBinary();
  const base = ['sigv4', '--access-key-id', 'AKID', '--secret-access-key', 'S', '--region', 'us-east-1',
    '--service', 'service', '--time', '2015-08-30T12:36:00Z'];
  const run = (args, input = 'GET / HTTP/1.1\nHost:example.amazonaws.com\n') =>
    spawnSync(BIN, args, { input, timeout: 10000 });

  let r = run([...base]);
  assert.equal(r.status, 2);
  assert.match(r.stderr.toString(), /--print is required/);
  r = run([...base, '--print', 'everything']);
  assert.equal(r.status, 2);
  assert.match(r.stderr.toString(), /unknown --print/);
  r = run([...base, '--bogus', '--print', 'signature']);
  assert.equal(r.status, 2);
  assert.match(r.stderr.toString(), /unknown argument --bogus/);
  r = run(['sigv4', '--print', 'signature']);
  assert.equal(r.status, 2);
  assert.match(r.stderr.toString(), /required/);
  r = run([...base.slice(0, -1), '2015-02-30T12:36:00Z', '--print', 'signature']);
  assert.equal(r.status, 2);
  assert.match(r.stderr.toString(), /--time/);

  r = run([...base, '--print', 'signature'], 'GET / HTTP/1.1\nAccept:*/*\n');
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /no Host header/);
  r = run([...base, '--print', 'signature'], 'GET /\nHost:x\n');
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /METHOD TARGET HTTP\/1.1/);
  r = run([...base, '--print', 'signature'], 'GET /?a=%zz HTTP/1.1\nHost:x\n');
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /cannot sign: malformed/);
  r = run([...base, '--print', 'signature'], '');
  assert.equal(r.status, 1);
  assert.match(r.stderr.toString(), /empty input/);
});

test('sigv4 CLI keeps CRLF line ends in the signed request', () => {
  requireBinary();
  const args = ['sigv4', '--access-key-id', 'AKIDEXAMPLE', '--secret-access-key',
    'wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY', '--region', 'us-east-1', '--service', 'service',
    '--time', '20150830T123600Z', '--print', 'signed-request'];
  const r = spawnSync(BIN, args, { input: 'GET / HTTP/1.1\r\nHost:example.amazonaws.com\r\n\r\n' });
  assert.equal(r.status, 0, r.stderr.toString());
  assert.equal(
    r.stdout.toString(),
    'GET / HTTP/1.1\r\nHost:example.amazonaws.com\r\nX-Amz-Date:20150830T123600Z\r\n' +
      'Authorization:AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, ' +
      'SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31\r\n\r\n',
  );
});

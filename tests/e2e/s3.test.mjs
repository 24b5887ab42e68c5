// tollgate's S3 uploads (src/aws/s3.c, tg_s3_put) end to end: s3_tool
// (tests/tools/s3_tool.c) PUTs bodies to the fake S3 (fake-s3.mjs), which
// verifies the SigV4 signature with its own canonicalisation and
// @smithy/signature-v4, the body's SHA-256 in x-amz-content-sha256 and
// x-amz-checksum-sha256, the session token, and stores what it accepts. The
// stored bytes must be the bytes sent, under the exact key; refusals must come
// back as the right error code naming S3's Code and Message (never its
// SignatureProvided nor the token it echoes); transient failures (503, 500,
// a reset connection, a hung request, nothing listening) are retried three
// times in all with 100 ms and 400 ms pauses, 4xx never. First, the fake itself
// is checked against botocore's S3 client and against hand-made requests that
// break one rule each.

import { test, describe, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFile } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import http from 'node:http';
import net from 'node:net';
import { SignatureV4 } from '@smithy/signature-v4';
import { HttpRequest } from '@smithy/protocol-http';
import { Sha256 } from '@aws-crypto/sha256-js';
import { startFakeS3, s3CanonicalPath } from './fake-s3.mjs';
import { requireTool, closedPort } from './harness.mjs';

const T = { timeout: 30000 };
const REGION = 'eu-west-1';
const BUCKET = 'tg-reports';
const DOTTED = 'tg.reports.dotted';
const AKID = 'AKIAIOSFODNN7EXAMPLE';
const SECRET = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';
const TEMP = {
  accessKeyId: `ASIA${randomBytes(8).toString('hex').toUpperCase()}`,
  secretAccessKey: randomBytes(30).toString('base64'),
  sessionToken: `FwoGZXIvYXdzE${randomBytes(96).toString('base64')}`,
};
const CSV = 'team,model,requests,cost_usd\nteam-a,gpt-test,12,0.0042\n';

const sha256hex = (b) => createHash('sha256').update(b).digest('hex');
const sha256b64 = (b) => createHash('sha256').update(b).digest('base64');

/** Runs s3_tool once: { code, out, err, ms }. Killed after 20 s. */
function s3tool(args, input, env) {
  const tool = requireTool('s3_tool');
  return new Promise((resolve) => {
    const t0 = Date.now();
    const p = spawn(tool, args, { env: { ...process.env, AWS_SESSION_TOKEN: '', ...env } });
    let out = '';
    let err = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), 20000);
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => (err += d));
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, out: out.trim(), err, ms: Date.now() - t0 });
    });
    p.stdin.on('error', () => {});
    p.stdin.end(input);
  });
}

describe('S3 PutObject through s3_tool', () => {
  let s3; // static credentials
  let s3tok; // temporary credentials with a session token
  const creds = { AWS_ACCESS_KEY_ID: AKID, AWS_SECRET_ACCESS_KEY: SECRET };

  before(async () => {
    requireTool('s3_tool');
    s3 = await startFakeS3({ accessKeyId: AKID, secretAccessKey: SECRET, region: REGION, buckets: [BUCKET, DOTTED] });
    s3tok = await startFakeS3({ ...TEMP, region: REGION, buckets: [BUCKET] });
  });
  after(async () => {
    if (s3) await s3.close();
    if (s3tok) await s3tok.close();
  });
  beforeEach(() => {
    s3.reset();
    s3tok.reset();
  });

  /** PUT through s3_tool to `fake`: the tool's result with the fake's requests. */
  async function put(key, body, { fake = s3, bucket = BUCKET, region = REGION, env = creds, contentType, timeoutMs, endpoint, stopAfterMs } = {}) {
    const args = ['--endpoint', endpoint || fake.url, '--bucket', bucket, '--region', region, '--key', key];
    if (contentType) args.push('--content-type', contentType);
    if (timeoutMs) args.push('--timeout-ms', String(timeoutMs));
    if (stopAfterMs !== undefined) args.push('--stop-after-ms', String(stopAfterMs));
    const r = await s3tool(args, body, env);
    // Under ASan/UBSan, a report goes to stderr and may not change the exit code.
    assert.doesNotMatch(r.err, /Sanitizer|runtime error:/, `sanitizer report for ${key}`);
    return { ...r, requests: fake.requests.slice() };
  }

  function expectStored(fake, bucket, key, body, r, what = key) {
    assert.equal(r.out, 'ok', `${what}: ${r.out}\nfake: ${JSON.stringify(r.requests.map((x) => [x.status, x.code, x.detail]))}\n${r.err}`);
    assert.equal(r.code, 0);
    const o = fake.objects.get(`${bucket}/${key}`);
    assert.ok(o, `${what}: stored under its exact key (have: ${[...fake.objects.keys()].join(' | ')})`);
    assert.ok(o.body.equals(Buffer.from(body)), `${what}: stored bytes equal the bytes sent`);
    return o;
  }

  test('a report: stored as sent, every x-amz-* header and the checksum signed', T, async () => {
    const key = 'reports/succeed/2026-11-26.csv';
    const r = await put(key, CSV, { contentType: 'text/csv; charset=utf-8' });
    const o = expectStored(s3, BUCKET, key, CSV, r);
    assert.equal(o.contentType, 'text/csv; charset=utf-8');
    assert.equal(r.requests.length, 1, 'one attempt');
    const [rec] = r.requests;
    assert.equal(rec.method, 'PUT');
    assert.equal(rec.path, `/${BUCKET}/reports/succeed/2026-11-26.csv`);
    assert.deepEqual(rec.signedHeaders, ['content-type', 'host', 'x-amz-checksum-sha256', 'x-amz-content-sha256', 'x-amz-date']);
    assert.equal(rec.headers['x-amz-content-sha256'], sha256hex(CSV));
    assert.equal(rec.headers['x-amz-checksum-sha256'], sha256b64(CSV));
    assert.equal(rec.headers.host, `127.0.0.1:${s3.port}`);
    assert.equal(rec.headers['content-length'], String(Buffer.byteLength(CSV)));
    assert.equal(rec.headers['x-amz-security-token'], undefined);
    assert.match(rec.headers.authorization, new RegExp(`^AWS4-HMAC-SHA256 Credential=${AKID}/\\d{8}/${REGION}/s3/aws4_request, `));
  });

  test('the default content type is application/octet-stream', T, async () => {
    const r = await put('reports/raw.bin', Buffer.from([0, 1, 2, 255]));
    const o = expectStored(s3, BUCKET, 'reports/raw.bin', Buffer.from([0, 1, 2, 255]), r);
    assert.equal(o.contentType, 'application/octet-stream');
  });

  test('keys with spaces, unicode, + = : and other reserved bytes land under the exact key', T, async () => {
    const keys = [
      'reports/with space/a b.csv',
      'reports/ünïcødé/日本語 レポート.csv',
      'reports/a+b=c:d.csv',
      "reports/x&y@z$(1)!*'~,;[]#?.csv",
      'reports/%41 is not A.csv', // a literal '%': encoded as %25, never taken for an escape
      'reports/double//slash.csv',
      'reports/folder/',
      'reports/.hidden/..x/...csv',
      'k',
      'reports/emoji 🚀 "quoted" <tag> \\back\\slash.csv',
    ];
    for (const key of keys) {
      const body = `${CSV}${key}\n`;
      const r = await put(key, body);
      expectStored(s3, BUCKET, key, body, r);
      const rec = r.requests.at(-1);
      assert.equal(rec.key, key);
      // On the wire, every byte outside A-Za-z0-9-._~/ is %XX: what S3 signs.
      assert.equal(rec.path, s3CanonicalPath(BUCKET, key), `${key}: wire path`);
    }
  });

  test('a key of 1024 bytes is accepted; 1025 bytes, "." or ".." segments are refused before sending', T, async () => {
    const long = `reports/${'é'.repeat(508)}`; // 8 + 1016 = 1024 bytes
    assert.equal(Buffer.byteLength(long), 1024);
    expectStored(s3, BUCKET, long, CSV, await put(long, CSV));
    for (const key of [`${long}x`, 'reports/../etc.csv', 'reports/./a.csv', '..', 'a/.']) {
      s3.reset();
      const r = await put(key, CSV);
      assert.equal(r.code, 1, key);
      assert.match(r.out, /^error: invalid argument: key must be 1\.\.1024 bytes/, key);
      assert.equal(r.requests.length, 0, `${key}: nothing sent`);
    }
  });

  test('bad bucket names, regions and endpoints are refused before sending', T, async () => {
    for (const [opts, re] of [
      [{ bucket: 'Upper' }, /bucket name/],
      [{ bucket: 'ab' }, /bucket name/],
      [{ bucket: 'a'.repeat(64) }, /bucket name/],
      [{ bucket: 'under_score' }, /bucket name/],
      [{ region: 'eu-west-1.evil.com' }, /region/],
      [{ endpoint: 'ftp://127.0.0.1:1' }, /scheme/],
      [{ endpoint: `${s3.url}/?x=1` }, /query/],
      [{ contentType: 'text/csv\r\nx-evil: 1' }, /content type/],
    ]) {
      const r = await put('reports/a.csv', CSV, opts);
      assert.equal(r.code, 1, JSON.stringify(opts));
      assert.match(r.out, /^error: invalid argument: /, JSON.stringify(opts));
      assert.match(r.out, re, JSON.stringify(opts));
    }
    assert.equal(s3.requests.length, 0);
  });

  test('a bucket name with dots', T, async () => {
    expectStored(s3, DOTTED, 'reports/d.csv', CSV, await put('reports/d.csv', CSV, { bucket: DOTTED }));
  });

  // With no endpoint the URL is AWS's. The host is checked without AWS or
  // TLS: through an HTTPS proxy that records the CONNECT line and refuses it.
  test('AWS endpoints: virtual-hosted, path style for dotted buckets, .com.cn in China', T, async () => {
    const seen = [];
    const proxy = net.createServer((sock) => {
      sock.once('data', (d) => {
        seen.push(d.toString('latin1').split('\r\n')[0]);
        sock.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n');
      });
      sock.on('error', () => {});
    });
    await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
    const proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
    const env = { ...creds, https_proxy: proxyUrl, HTTPS_PROXY: proxyUrl, no_proxy: '', NO_PROXY: '' };
    try {
      for (const [bucket, region, host] of [
        [BUCKET, REGION, `${BUCKET}.s3.${REGION}.amazonaws.com:443`],
        [DOTTED, REGION, `s3.${REGION}.amazonaws.com:443`],
        [BUCKET, 'cn-north-1', `${BUCKET}.s3.cn-north-1.amazonaws.com.cn:443`],
      ]) {
        seen.length = 0;
        const r = await put('reports/a.csv', CSV, { endpoint: '-', bucket, region, env, timeoutMs: 5000 });
        assert.equal(r.code, 1, r.out);
        assert.ok(seen.length >= 1, `${bucket}: the proxy was asked`);
        assert.equal(seen[0], `CONNECT ${host} HTTP/1.1`);
      }
    } finally {
      await new Promise((r) => proxy.close(r));
    }
  });

  test('session-token credentials: the token is sent and signed', T, async () => {
    const env = { AWS_ACCESS_KEY_ID: TEMP.accessKeyId, AWS_SECRET_ACCESS_KEY: TEMP.secretAccessKey, AWS_SESSION_TOKEN: TEMP.sessionToken };
    const r = await put('reports/tok.csv', CSV, { fake: s3tok, env });
    expectStored(s3tok, BUCKET, 'reports/tok.csv', CSV, r);
    const [rec] = r.requests;
    assert.equal(rec.headers['x-amz-security-token'], TEMP.sessionToken);
    assert.ok(rec.signedHeaders.includes('x-amz-security-token'), rec.signedHeaders.join(';'));
  });

  test('a wrong or missing session token is refused, and the token is not repeated', T, async () => {
    const bad = `${TEMP.sessionToken.slice(0, -4)}AAAA`;
    const env = { AWS_ACCESS_KEY_ID: TEMP.accessKeyId, AWS_SECRET_ACCESS_KEY: TEMP.secretAccessKey, AWS_SESSION_TOKEN: bad };
    let r = await put('reports/tok.csv', CSV, { fake: s3tok, env });
    assert.equal(r.code, 1);
    assert.equal(r.out, 'error: unauthenticated: HTTP 400 InvalidToken: The provided token is malformed or otherwise invalid.');
    assert.ok(!r.out.includes(bad) && !r.err.includes(bad), 'the token S3 echoes is not repeated');
    assert.equal(r.requests.length, 1, '4xx: no retry');
    s3tok.reset();
    r = await put('reports/tok.csv', CSV, { fake: s3tok, env: { ...env, AWS_SESSION_TOKEN: '' } });
    assert.match(r.out, /^error: unauthenticated: HTTP 403 InvalidAccessKeyId: /);
  });

  test('an empty body', T, async () => {
    const r = await put('reports/empty.csv', '');
    const o = expectStored(s3, BUCKET, 'reports/empty.csv', '', r);
    assert.equal(o.body.length, 0);
    assert.equal(r.requests[0].headers['x-amz-content-sha256'], sha256hex(''));
    assert.equal(r.requests[0].headers['content-length'], '0');
  });

  test('1 MiB and 3 MiB + 1 byte bodies (the latter with Expect: 100-continue)', T, async () => {
    for (const n of [1 << 20, 3 * (1 << 20) + 1]) {
      const body = randomBytes(n);
      const r = await put(`reports/big-${n}.bin`, body);
      expectStored(s3, BUCKET, `reports/big-${n}.bin`, body, r, `${n} bytes`);
      assert.equal(r.requests.at(-1).headers['x-amz-checksum-sha256'], sha256b64(body));
    }
  });

  test('wrong secret: SignatureDoesNotMatch, one attempt, no signature or canonical request in the message', T, async () => {
    const r = await put('reports/a.csv', CSV, { env: { ...creds, AWS_SECRET_ACCESS_KEY: 'not-the-secret' } });
    assert.equal(r.code, 1);
    assert.equal(
      r.out,
      'error: unauthenticated: HTTP 403 SignatureDoesNotMatch: The request signature we calculated does not match the signature you provided. Check your key and signing method.',
    );
    assert.equal(r.requests.length, 1, '4xx: no retry');
    const sig = /Signature=([0-9a-f]{64})/.exec(r.requests[0].headers.authorization)[1];
    for (const s of [r.out, r.err]) {
      assert.ok(!s.includes(sig), 'SignatureProvided is not repeated');
      assert.ok(!s.includes('AWS4-HMAC-SHA256'), 'StringToSign is not repeated');
      assert.ok(!s.includes('not-the-secret'));
    }
    assert.ok(!s3.objects.has(`${BUCKET}/reports/a.csv`));
  });

  test('unknown access key: InvalidAccessKeyId', T, async () => {
    const r = await put('reports/a.csv', CSV, { env: { ...creds, AWS_ACCESS_KEY_ID: 'AKIAUNKNOWNKEY000000' } });
    assert.equal(r.out, 'error: unauthenticated: HTTP 403 InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records.');
    assert.equal(r.requests.length, 1);
  });

  test('no credentials at all', T, async () => {
    const r = await put('reports/a.csv', CSV, { env: { AWS_ACCESS_KEY_ID: '', AWS_SECRET_ACCESS_KEY: '' } });
    assert.equal(r.out, 'error: unauthenticated: no AWS credentials');
    assert.equal(r.requests.length, 0);
  });

  test('unknown bucket: NoSuchBucket (not found), one attempt', T, async () => {
    const r = await put('reports/a.csv', CSV, { bucket: 'no-such-bucket' });
    assert.equal(r.code, 1);
    assert.equal(r.out, 'error: not found: HTTP 404 NoSuchBucket: The specified bucket does not exist');
    assert.equal(r.requests.length, 1);
  });

  test('wrong signing region: AuthorizationHeaderMalformed, one attempt', T, async () => {
    const r = await put('reports/a.csv', CSV, { region: 'us-east-1' });
    assert.match(r.out, /^error: upstream error: HTTP 400 AuthorizationHeaderMalformed: The authorization header is malformed; the region 'us-east-1' is wrong; expecting 'eu-west-1'$/);
    assert.equal(r.requests.length, 1);
  });

  test('503 SlowDown twice: stored on the third attempt, after pauses of 100 and 400 ms', T, async () => {
    s3.failNext(2, 503);
    const r = await put('reports/retry.csv', CSV);
    expectStored(s3, BUCKET, 'reports/retry.csv', CSV, r);
    assert.deepEqual(r.requests.map((x) => x.status), [503, 503, 200]);
    const [a, b, c] = r.requests.map((x) => x.t);
    assert.ok(b - a >= 90, `first pause ${b - a} ms`);
    assert.ok(c - b >= 380, `second pause ${c - b} ms`);
    assert.ok(c - a < 2000, `pauses ${b - a} and ${c - b} ms`);
    assert.match(r.err, /attempt 1: HTTP 503 SlowDown: Please reduce your request rate\.\); retrying in 100 ms/);
  });

  test('500 InternalError once, then stored', T, async () => {
    s3.failNext(1, 500);
    const r = await put('reports/retry500.csv', CSV);
    expectStored(s3, BUCKET, 'reports/retry500.csv', CSV, r);
    assert.deepEqual(r.requests.map((x) => x.status), [500, 200]);
  });

  test('503 five times: fails after exactly three attempts', T, async () => {
    s3.failNext(5, 503);
    const r = await put('reports/never.csv', CSV);
    assert.equal(r.code, 1);
    assert.equal(r.out, 'error: upstream error: after 3 attempts: HTTP 503 SlowDown: Please reduce your request rate.');
    assert.equal(r.requests.length, 3);
    assert.ok(!s3.objects.has(`${BUCKET}/reports/never.csv`));
  });

  test('4xx answers are final: 400, 403 and 404 once each', T, async () => {
    for (const [status, expected] of [
      [400, /^error: upstream error: HTTP 400 InvalidRequest: /],
      [403, /^error: unauthenticated: HTTP 403 AccessDenied: Access Denied$/],
      [404, /^error: not found: HTTP 404 /],
    ]) {
      s3.reset();
      s3.failNext(3, status);
      const r = await put('reports/4xx.csv', CSV);
      assert.equal(r.code, 1);
      assert.match(r.out, expected);
      assert.equal(r.requests.length, 1, `${status}: one attempt`);
    }
  });

  test('a connection reset twice: stored on the third attempt', T, async () => {
    s3.failNext(2, 'reset');
    const r = await put('reports/reset.csv', CSV);
    expectStored(s3, BUCKET, 'reports/reset.csv', CSV, r);
    assert.deepEqual(r.requests.map((x) => x.status), ['reset', 'reset', 200]);
  });

  test('nothing listening: three attempts, then could not connect', T, async () => {
    const port = await closedPort();
    const r = await put('reports/a.csv', CSV, { endpoint: `http://127.0.0.1:${port}` });
    assert.equal(r.code, 1);
    assert.match(r.out, /^error: could not connect: after 3 attempts: /);
    assert.ok(r.ms >= 480, `pauses between attempts (${r.ms} ms in all)`);
    assert.equal((r.err.match(/retrying in/g) || []).length, 2);
  });

  test('hung requests: each attempt gets a share of the timeout, the whole call stays within it', T, async () => {
    s3.failNext(3, 'hang');
    const r = await put('reports/hang.csv', CSV, { timeoutMs: 3000 });
    assert.equal(r.code, 1);
    assert.match(r.out, /^error: timed out: after 3 attempts: timed out after \d+ ms$/);
    assert.equal(r.requests.length, 3);
    assert.ok(r.ms >= 2800 && r.ms < 4500, `${r.ms} ms`);
    const [a, b] = r.requests.map((x) => x.t);
    assert.ok(b - a >= 900 && b - a < 1500, `the first attempt had about a third of 3000 ms (${b - a} ms)`);
  });

  test('stop set by another thread ends a hung attempt at once', T, async () => {
    s3.failNext(3, 'hang');
    const r = await put('reports/stop.csv', CSV, { stopAfterMs: 300, timeoutMs: 20000 });
    assert.equal(r.out, 'error: canceled: stopped');
    assert.equal(r.requests.length, 1);
    assert.ok(r.ms < 2000, `${r.ms} ms`);
  });

  test('stop set during the pause between attempts ends the pause', T, async () => {
    s3.failNext(5, 503);
    const r = await put('reports/stop.csv', CSV, { stopAfterMs: 250 });
    assert.equal(r.out, 'error: canceled: after 2 attempts: stopped');
    // Not cut short, the pause would have ended in a third attempt.
    assert.equal(r.requests.length, 2);
  });
});

// ---------------------------------------------------------------------------
// The fake itself: it must accept what a real S3 client sends and refuse what
// S3 refuses, or the tests above prove nothing.

describe('fake S3', () => {
  let s3;
  before(async () => {
    s3 = await startFakeS3({ accessKeyId: AKID, secretAccessKey: SECRET, region: REGION, buckets: [BUCKET] });
  });
  after(async () => {
    if (s3) await s3.close();
  });
  beforeEach(() => s3.reset());

  // botocore's S3 client (Debian's python3-botocore), path style, with a
  // SHA-256 checksum: what AWS's own SDK sends.
  const BOTOCORE_PUT = `
import json, sys, botocore.session
from botocore.config import Config
a = json.loads(sys.argv[1])
c = botocore.session.get_session().create_client('s3', region_name=a['region'], endpoint_url=a['endpoint'],
    aws_access_key_id=a['akid'], aws_secret_access_key=a['secret'],
    config=Config(s3={'addressing_style': 'path'}, retries={'max_attempts': 1}))
try:
    r = c.put_object(Bucket=a['bucket'], Key=a['key'], Body=a['body'].encode(), ContentType='text/csv',
                     ChecksumAlgorithm='SHA256')
    print(json.dumps({'ok': True, 'etag': r['ETag']}))
except botocore.exceptions.ClientError as e:
    print(json.dumps({'ok': False, 'code': e.response['Error']['Code']}))
`;
  function botocorePut(key, body, secret = SECRET) {
    const arg = JSON.stringify({ region: REGION, endpoint: s3.url, akid: AKID, secret, bucket: BUCKET, key, body });
    return new Promise((resolve, reject) => {
      execFile('/usr/bin/python3', ['-c', BOTOCORE_PUT, arg], { timeout: 20000 }, (err, stdout, stderr) => {
        if (err) reject(new Error(`botocore: ${err.message}\n${stderr}`));
        else resolve(JSON.parse(stdout));
      });
    });
  }

  test('accepts botocore PutObject (odd keys too) and refuses it with a wrong secret', T, async () => {
    for (const key of ['reports/a.csv', "we ird/ü+=:(x)*!'~@$&,;.csv", 'x//y/']) {
      const ok = await botocorePut(key, `${CSV}${key}`);
      assert.equal(ok.ok, true, `${key}: ${JSON.stringify(ok)} ${JSON.stringify(s3.requests.at(-1))}`);
      assert.equal(ok.etag, `"${createHash('md5').update(`${CSV}${key}`).digest('hex')}"`);
      assert.ok(s3.objects.get(`${BUCKET}/${key}`).body.equals(Buffer.from(`${CSV}${key}`)));
      const bad = await botocorePut(key, CSV, 'wrong');
      assert.deepEqual(bad, { ok: false, code: 'SignatureDoesNotMatch' });
    }
  });

  /** A PUT signed here with smithy, then `tamper`ed with: { status, code, text }. */
  async function craftedPut(key, body, { tamper = () => {}, wirePath, signingDate = new Date(), extraHeaders = {} } = {}) {
    const buf = Buffer.from(body);
    const path = wirePath ?? s3CanonicalPath(BUCKET, key);
    const req = new HttpRequest({
      method: 'PUT',
      protocol: 'http:',
      hostname: '127.0.0.1',
      port: s3.port,
      path,
      headers: {
        host: `127.0.0.1:${s3.port}`,
        'content-type': 'text/csv',
        'x-amz-content-sha256': sha256hex(buf),
        'x-amz-checksum-sha256': sha256b64(buf),
        ...extraHeaders,
      },
      body: buf,
    });
    const signer = new SignatureV4({ credentials: { accessKeyId: AKID, secretAccessKey: SECRET }, region: REGION, service: 's3', sha256: Sha256, uriEscapePath: false, applyChecksum: false });
    const signed = await signer.sign(req, { signingDate });
    const headers = { ...signed.headers, 'content-length': String(buf.length) };
    const sendBody = tamper(headers) ?? buf;
    headers['content-length'] = String(sendBody.length);
    return new Promise((resolve, reject) => {
      const r = http.request({ host: '127.0.0.1', port: s3.port, method: 'PUT', path, headers, agent: false }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode, code: /<Code>([^<]*)<\/Code>/.exec(text)?.[1] ?? null, text }));
      });
      r.on('error', reject);
      r.end(sendBody);
    });
  }

  test('a correctly signed hand-made PUT is stored', T, async () => {
    const r = await craftedPut('hand/made.csv', CSV);
    assert.equal(r.status, 200, r.text);
    assert.ok(s3.objects.get(`${BUCKET}/hand/made.csv`).body.equals(Buffer.from(CSV)));
  });

  test('refuses what S3 refuses, in S3\'s XML error shape', T, async () => {
    const cases = [
      ['body changed after signing', { tamper: () => Buffer.from(CSV.toUpperCase()) }, 400, 'XAmzContentSHA256Mismatch'],
      ['checksum of another body', { extraHeaders: { 'x-amz-checksum-sha256': sha256b64('other') } }, 400, 'BadDigest'],
      ['malformed checksum', { extraHeaders: { 'x-amz-checksum-sha256': 'abc' } }, 400, 'InvalidRequest'],
      ['x-amz-content-sha256 removed', { tamper: (h) => void delete h['x-amz-content-sha256'] }, 400, 'InvalidRequest'],
      ['signed 20 minutes ago', { signingDate: new Date(Date.now() - 20 * 60 * 1000) }, 403, 'RequestTimeTooSkewed'],
      ['an unsigned x-amz-* header', { tamper: (h) => void (h['x-amz-meta-extra'] = '1') }, 403, 'AccessDenied'],
      ['no Authorization', { tamper: (h) => void delete h.authorization }, 403, 'AccessDenied'],
      ['signature of another request', { tamper: (h) => void (h['content-type'] = 'text/plain') }, 403, 'SignatureDoesNotMatch'],
      // Signed over the raw path: S3 (and the fake) canonicalise the decoded
      // key themselves, so ':' must have been signed as %3A.
      ['a path signed unencoded', { wirePath: `/${BUCKET}/a:b.csv` }, 403, 'SignatureDoesNotMatch'],
    ];
    for (const [what, opts, status, code] of cases) {
      const r = await craftedPut('hand/bad.csv', CSV, opts);
      assert.equal(r.status, status, `${what}: ${r.text}`);
      assert.equal(r.code, code, `${what}: ${r.text}`);
      assert.match(r.text, /^<\?xml version="1\.0" encoding="UTF-8"\?>\n<Error><Code>[A-Za-z0-9]+<\/Code><Message>[^<]*<\/Message>.*<RequestId>[0-9A-F]{16}<\/RequestId><HostId>[^<]+<\/HostId><\/Error>$/s, what);
    }
    assert.ok(!s3.objects.has(`${BUCKET}/hand/bad.csv`));
    assert.ok(!s3.objects.has(`${BUCKET}/a:b.csv`));
  });
});

// Fake Amazon S3 (PutObject, GetObject, HeadObject; path-style URLs
// /<bucket>/<key>) for tollgate's black-box tests of its S3 uploads.
//
// It checks a request the way S3 does, with an implementation that shares
// nothing with tollgate's signer:
//   * SigV4 (`Authorization: AWS4-HMAC-SHA256 ...`) verified by re-signing the
//     request with the pinned @smithy/signature-v4. The canonical URI is not
//     the path as received: like S3, the fake decodes the path into bucket and
//     key and encodes them again its own way (RFC 3986, every byte but
//     A-Za-z0-9-._~ and '/' as %XX, upper-case hex), so a client that signs
//     a path encoded differently from S3's rules fails here as it would there.
//     The signer then runs with uriEscapePath: false (S3 does not encode the
//     path twice) and applyChecksum: false (the payload hash is the signed
//     x-amz-content-sha256, which the fake checks against the body itself).
//   * scope (region, service s3, date = x-amz-date's day), x-amz-date within
//     15 minutes, every x-amz-* header signed, host signed, the session token;
//   * x-amz-content-sha256 present and equal to the body's SHA-256 (or
//     UNSIGNED-PAYLOAD), x-amz-checksum-sha256 and Content-MD5 when present,
//     Content-Length present on PUT, keys of at most 1024 bytes.
// Refusals carry S3's XML error document (Code, Message, the extra elements S3
// adds, such as SignatureProvided and CanonicalRequest for a bad signature,
// RequestId, HostId) with x-amz-request-id and x-amz-id-2 headers:
//
//   | case                                         | status | Code                        |
//   |----------------------------------------------|--------|-----------------------------|
//   | failNext(n, status)                          | status | SlowDown (503), InternalError (500), see INJECTED |
//   | unknown bucket                               | 404    | NoSuchBucket                |
//   | no Authorization                             | 403    | AccessDenied                |
//   | malformed Authorization, wrong scope         | 400    | AuthorizationHeaderMalformed|
//   | unknown access key, temp key without token   | 403    | InvalidAccessKeyId          |
//   | wrong or unexpected session token            | 400    | InvalidToken                |
//   | x-amz-date missing / off by > 15 min         | 403    | AccessDenied / RequestTimeTooSkewed |
//   | an x-amz-* header not signed                 | 403    | AccessDenied (HeadersNotSigned) |
//   | bad signature                                | 403    | SignatureDoesNotMatch       |
//   | no x-amz-content-sha256                      | 400    | InvalidRequest              |
//   | x-amz-content-sha256 != body                 | 400    | XAmzContentSHA256Mismatch   |
//   | x-amz-checksum-sha256 malformed / != body    | 400    | InvalidRequest / BadDigest  |
//   | Content-MD5 != body                          | 400    | BadDigest                   |
//   | PUT without Content-Length                   | 411    | MissingContentLength        |
//   | key over 1024 bytes                          | 400    | KeyTooLongError             |
//   | GET/HEAD of a missing key                    | 404    | NoSuchKey                   |
//
// A stored PUT answers 200 with ETag "<md5 hex>" (and the checksum echoed).
//
//   const s3 = await startFakeS3({ accessKeyId, secretAccessKey, sessionToken, region, buckets: ['b'] });
//   s3.url, s3.port
//   s3.objects       Map 'bucket/key' -> { body: Buffer, contentType, headers, etag }
//   s3.requests      every request: { t, method, path, bucket, key, headers, signedHeaders,
//                    accessKeyId, size, status, code, detail, canonicalRequest }
//   s3.failNext(n, status = 503)  the next n requests, whatever they are, fail
//                    with that status; or 'reset' (the connection is destroyed
//                    once the request is read) or 'hang' (no answer until close)
//   await s3.close()

import http from 'node:http';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { SignatureV4, getCanonicalHeaders, prepareRequest } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { HttpRequest } from '@smithy/protocol-http';

export const MAX_SKEW_MS = 15 * 60 * 1000;
export const KEY_MAX_BYTES = 1024;
const BODY_MAX = 64 * 1024 * 1024;

const AUTH_RE =
  /^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-f]{64})\s*$/;
const STREAMING_RE = /^STREAMING-/;

const sha256 = (buf) => createHash('sha256').update(buf).digest();
const md5hex = (buf) => createHash('md5').update(buf).digest('hex');

/** S3's canonical encoding of one path segment (RFC 3986 unreserved kept). */
export function s3EncodeSegment(s) {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/** The canonical URI S3 computes for bucket and key (path style). */
export function s3CanonicalPath(bucket, key) {
  return `/${s3EncodeSegment(bucket)}/${key.split('/').map(s3EncodeSegment).join('/')}`;
}

function xmlEscape(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&apos;' })[c]);
}

function parseAmzDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(String(s || ''));
  if (!m) return null;
  return new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
}

const isoSeconds = (d) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

function parseQuery(qs) {
  const query = {};
  for (const part of (qs || '').split('&')) {
    if (!part) continue;
    const i = part.indexOf('=');
    const k = decodeURIComponent(i < 0 ? part : part.slice(0, i));
    const v = i < 0 ? '' : decodeURIComponent(part.slice(i + 1));
    query[k] = k in query ? [].concat(query[k], v) : v;
  }
  return query;
}

/** An S3 refusal: { status, code, message, extra: {Element: value}, detail }. */
const refuse = (status, code, message, extra = {}, detail) => ({ status, code, message, extra, detail });

// What failNext(n, status) answers.
const INJECTED = {
  400: ['InvalidRequest', 'Injected failure: invalid request.'],
  403: ['AccessDenied', 'Access Denied'],
  404: ['NoSuchBucket', 'The specified bucket does not exist'],
  500: ['InternalError', 'We encountered an internal error. Please try again.'],
  503: ['SlowDown', 'Please reduce your request rate.'],
};
const injected = (status) =>
  INJECTED[status] || (status >= 500 ? ['ServiceUnavailable', 'Service is unable to handle request.'] : ['InvalidRequest', `Injected failure ${status}.`]);

export async function startFakeS3({ accessKeyId, secretAccessKey, sessionToken, region = 'us-east-1', buckets = [] } = {}) {
  if (!accessKeyId || !secretAccessKey) throw new Error('startFakeS3: accessKeyId and secretAccessKey are required');
  const bucketSet = new Set(buckets);
  const objects = new Map();
  const requests = [];
  const failures = []; // queue of statuses / 'reset' / 'hang'

  const server = http.createServer({ requestTimeout: 0 }, (req, res) => {
    const chunks = [];
    let size = 0;
    let over = false;
    req.on('data', (c) => {
      size += c.length;
      if (size > BODY_MAX) over = true;
      else chunks.push(c);
    });
    req.on('error', () => {});
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const rec = {
        t: Date.now(),
        method: req.method,
        path: req.url,
        bucket: null,
        key: null,
        headers: { ...req.headers },
        signedHeaders: null,
        accessKeyId: null,
        size,
        status: null,
        code: null,
        detail: null,
        canonicalRequest: null,
      };
      requests.push(rec);
      handle(req, res, rec, body, over).catch((e) => {
        rec.detail = `fake error: ${e.stack || e}`;
        if (!res.headersSent) send(res, rec, refuse(500, 'InternalError', 'We encountered an internal error. Please try again.'));
        else res.destroy();
      });
    });
  });
  server.keepAliveTimeout = 5000;
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address();

  function send(res, rec, r) {
    const requestId = randomBytes(8).toString('hex').toUpperCase();
    const hostId = randomBytes(48).toString('base64');
    rec.status = r.status;
    rec.code = r.code;
    if (r.detail) rec.detail = r.detail;
    const extra = Object.entries(r.extra || {})
      .map(([k, v]) => `<${k}>${xmlEscape(v)}</${k}>`)
      .join('');
    const xml =
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
      `<Error><Code>${r.code}</Code><Message>${xmlEscape(r.message)}</Message>${extra}` +
      `<RequestId>${requestId}</RequestId><HostId>${hostId}</HostId></Error>`;
    res.writeHead(r.status, {
      'Content-Type': 'application/xml',
      ...(rec.method === 'HEAD' ? {} : { 'Content-Length': Buffer.byteLength(xml) }),
      'x-amz-request-id': requestId,
      'x-amz-id-2': hostId,
      Date: new Date().toUTCString(),
      Server: 'AmazonS3',
    });
    res.end(rec.method === 'HEAD' ? undefined : xml);
  }

  async function handle(req, res, rec, body, over) {
    if (failures.length) {
      const f = failures.shift();
      rec.detail = `failNext ${f}`;
      if (f === 'reset') {
        rec.status = 'reset';
        return req.socket.destroy();
      }
      if (f === 'hang') {
        rec.status = 'hang';
        return;
      }
      const [code, message] = injected(f);
      return send(res, rec, refuse(f, code, message));
    }
    const r = await check(req, rec, body, over);
    if (r) return send(res, rec, r);
    const id = `${rec.bucket}/${rec.key}`;
    const common = {
      'x-amz-request-id': randomBytes(8).toString('hex').toUpperCase(),
      'x-amz-id-2': randomBytes(48).toString('base64'),
      Date: new Date().toUTCString(),
      Server: 'AmazonS3',
    };
    if (req.method === 'PUT') {
      const etag = `"${md5hex(body)}"`;
      objects.set(id, {
        body,
        contentType: req.headers['content-type'] ?? null,
        headers: { ...req.headers },
        etag,
        lastModified: new Date(),
      });
      const h = { ...common, ETag: etag, 'x-amz-server-side-encryption': 'AES256', 'Content-Length': 0 };
      if (req.headers['x-amz-checksum-sha256']) h['x-amz-checksum-sha256'] = req.headers['x-amz-checksum-sha256'];
      rec.status = 200;
      res.writeHead(200, h);
      return res.end();
    }
    const o = objects.get(id);
    if (!o) return send(res, rec, refuse(404, 'NoSuchKey', 'The specified key does not exist.', { Key: rec.key }));
    rec.status = 200;
    res.writeHead(200, {
      ...common,
      ETag: o.etag,
      'Content-Type': o.contentType || 'binary/octet-stream',
      'Content-Length': o.body.length,
      'Last-Modified': o.lastModified.toUTCString(),
    });
    res.end(req.method === 'HEAD' ? undefined : o.body);
  }

  /** Everything S3 checks before it stores or serves; a refusal or null. */
  async function check(req, rec, body, over) {
    if (!['PUT', 'GET', 'HEAD'].includes(req.method)) {
      return refuse(405, 'MethodNotAllowed', 'The specified method is not allowed against this resource.', { Method: req.method, ResourceType: 'OBJECT' });
    }
    const q = req.url.indexOf('?');
    const rawPath = q < 0 ? req.url : req.url.slice(0, q);
    const m = /^\/([^/]+)\/(.*)$/s.exec(rawPath);
    if (!m) return refuse(501, 'NotImplemented', 'A header you provided implies functionality that is not implemented.', {}, 'bucket-level operation');
    let bucket;
    let key;
    let query;
    try {
      bucket = decodeURIComponent(m[1]);
      key = decodeURIComponent(m[2]);
      query = parseQuery(q < 0 ? '' : req.url.slice(q + 1));
    } catch {
      return refuse(400, 'InvalidURI', "Couldn't parse the specified URI.", { URI: req.url });
    }
    rec.bucket = bucket;
    rec.key = key;
    if (!bucketSet.has(bucket)) return refuse(404, 'NoSuchBucket', 'The specified bucket does not exist', { BucketName: bucket });
    if (!key) return refuse(501, 'NotImplemented', 'A header you provided implies functionality that is not implemented.', {}, 'bucket-level operation');

    const a = await checkAuth(req, rec, body, bucket, key, query);
    if (a) return a;

    if (over) return refuse(400, 'EntityTooLarge', 'Your proposed upload exceeds the maximum allowed size', { MaxSizeAllowed: BODY_MAX }, 'fake body limit');
    if (Buffer.byteLength(key) > KEY_MAX_BYTES) {
      return refuse(400, 'KeyTooLongError', 'Your key is too long', { MaxSizeAllowed: KEY_MAX_BYTES, Size: Buffer.byteLength(key) });
    }
    if (req.method !== 'PUT') return null;
    if (req.headers['content-length'] === undefined) {
      return refuse(411, 'MissingContentLength', 'You must provide the Content-Length HTTP header.');
    }
    const declared = req.headers['x-amz-content-sha256'];
    const actual = sha256(body).toString('hex');
    if (declared !== 'UNSIGNED-PAYLOAD' && declared !== actual) {
      return refuse(400, 'XAmzContentSHA256Mismatch', "The provided 'x-amz-content-sha256' header does not match what was computed.", {
        ClientComputedContentSHA256: declared,
        S3ComputedContentSHA256: actual,
      });
    }
    const md5 = req.headers['content-md5'];
    if (md5 !== undefined) {
      const d = Buffer.from(md5, 'base64');
      if (d.length !== 16 || d.toString('base64') !== md5) return refuse(400, 'InvalidDigest', 'The Content-MD5 you specified was invalid.');
      if (d.toString('hex') !== md5hex(body)) {
        return refuse(400, 'BadDigest', 'The Content-MD5 you specified did not match what we received.', {
          ExpectedDigest: md5,
          CalculatedDigest: createHash('md5').update(body).digest('base64'),
        });
      }
    }
    const cks = req.headers['x-amz-checksum-sha256'];
    if (cks !== undefined) {
      const d = Buffer.from(cks, 'base64');
      if (d.length !== 32 || d.toString('base64') !== cks) {
        return refuse(400, 'InvalidRequest', 'Value for x-amz-checksum-sha256 header is invalid.');
      }
      if (!d.equals(sha256(body))) return refuse(400, 'BadDigest', 'The SHA256 you specified did not match the calculated checksum.');
    }
    return null;
  }

  async function checkAuth(req, rec, body, bucket, key, query) {
    const h = req.headers;
    const authz = h.authorization;
    if (!authz) return refuse(403, 'AccessDenied', 'Access Denied', {}, 'no Authorization header');
    const m = AUTH_RE.exec(authz);
    if (!m) return refuse(400, 'AuthorizationHeaderMalformed', 'The authorization header is malformed; the authorization header requires three components: Credential, SignedHeaders, and Signature.');
    const [, credential, signedList, signature] = m;
    const parts = credential.split('/');
    if (parts.length !== 5 || parts[4] !== 'aws4_request') {
      return refuse(400, 'AuthorizationHeaderMalformed', `The authorization header is malformed; the Credential is mal-formed; expecting "<YOUR-AKID>/YYYYMMDD/REGION/SERVICE/aws4_request".`);
    }
    const [akid, scopeDate, scopeRegion, scopeService] = parts;
    rec.accessKeyId = akid;
    const signedHeaders = signedList.split(';');
    rec.signedHeaders = signedHeaders;
    const rawDate = h['x-amz-date'];
    const date = parseAmzDate(rawDate);
    if (!date) return refuse(403, 'AccessDenied', 'AWS authentication requires a valid Date or x-amz-date header');
    if (scopeService !== 's3') {
      return refuse(400, 'AuthorizationHeaderMalformed', `The authorization header is malformed; incorrect service "${scopeService}". This endpoint belongs to "s3".`);
    }
    if (scopeRegion !== region) {
      return refuse(400, 'AuthorizationHeaderMalformed', `The authorization header is malformed; the region '${scopeRegion}' is wrong; expecting '${region}'`, { Region: region });
    }
    if (scopeDate !== rawDate.slice(0, 8)) {
      return refuse(400, 'AuthorizationHeaderMalformed', `The authorization header is malformed; Invalid credential date "${scopeDate}". This date is not the same as X-Amz-Date: "${rawDate.slice(0, 8)}".`);
    }
    const now = new Date();
    if (Math.abs(date.getTime() - now.getTime()) > MAX_SKEW_MS) {
      return refuse(403, 'RequestTimeTooSkewed', 'The difference between the request time and the current time is too large.', {
        RequestTime: rawDate,
        ServerTime: isoSeconds(now),
        MaxAllowedSkewMilliseconds: MAX_SKEW_MS,
      });
    }
    const token = h['x-amz-security-token'];
    if (akid !== accessKeyId || (sessionToken && token === undefined)) {
      return refuse(403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.', { AWSAccessKeyId: akid });
    }
    if ((sessionToken || token !== undefined) && token !== sessionToken) {
      return refuse(400, 'InvalidToken', 'The provided token is malformed or otherwise invalid.', { 'Token-0': token ?? '' });
    }
    const declared = h['x-amz-content-sha256'];
    if (declared === undefined) return refuse(400, 'InvalidRequest', 'Missing required header for this request: x-amz-content-sha256');
    if (STREAMING_RE.test(declared)) return refuse(501, 'NotImplemented', 'A header you provided implies functionality that is not implemented.', { Header: 'x-amz-content-sha256' });
    if (declared !== 'UNSIGNED-PAYLOAD' && !/^[0-9a-f]{64}$/.test(declared)) {
      return refuse(400, 'InvalidArgument', 'x-amz-content-sha256 must be UNSIGNED-PAYLOAD, STREAMING-UNSIGNED-PAYLOAD-TRAILER, STREAMING-AWS4-HMAC-SHA256-PAYLOAD, STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER, STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD, STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD-TRAILER or a valid sha256 value.', { ArgumentName: 'x-amz-content-sha256', ArgumentValue: declared });
    }
    const unsigned = Object.keys(h).filter((n) => (n.startsWith('x-amz-') || n === 'host') && !signedHeaders.includes(n));
    if (unsigned.length) {
      return refuse(403, 'AccessDenied', 'There were headers present in the request which were not signed', { HeadersNotSigned: unsigned.join(', ') });
    }

    // Re-sign: only the signed headers, the canonical path S3 computes, the
    // declared payload hash (smithy takes it from x-amz-content-sha256).
    const sigHeaders = {};
    for (const name of signedHeaders) {
      const v = req.headersDistinct[name];
      if (v === undefined) {
        return refuse(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.', { AWSAccessKeyId: akid }, `signed header ${name} missing`);
      }
      sigHeaders[name] = v.join(',');
    }
    const request = new HttpRequest({
      method: req.method,
      protocol: 'http:',
      hostname: String(h.host || '').replace(/:\d+$/, ''),
      path: s3CanonicalPath(bucket, key),
      query,
      headers: sigHeaders,
      body,
    });
    const signer = new SignatureV4({
      credentials: { accessKeyId: akid, secretAccessKey, sessionToken: signedHeaders.includes('x-amz-security-token') ? token : undefined },
      region,
      service: 's3',
      sha256: Sha256,
      uriEscapePath: false,
      applyChecksum: false,
    });
    const signed = await signer.sign(request, { signingDate: date, signableHeaders: new Set(signedHeaders) });
    const got = AUTH_RE.exec(signed.headers.authorization);
    const expected = Buffer.from(got ? got[3] : '');
    const provided = Buffer.from(signature);
    if (got && got[2] === signedList && expected.length === provided.length && timingSafeEqual(expected, provided)) return null;

    // What S3 tells a client whose signature does not match.
    const prepared = prepareRequest(request);
    prepared.headers['x-amz-date'] = rawDate;
    const canonical = signer.createCanonicalRequest(prepared, getCanonicalHeaders(prepared, undefined, new Set(signedHeaders)), declared);
    const stringToSign = await signer.createStringToSign(rawDate, `${scopeDate}/${region}/s3/aws4_request`, canonical, 'AWS4-HMAC-SHA256');
    rec.canonicalRequest = canonical;
    const bytes = (s) => [...Buffer.from(s)].map((b) => b.toString(16).padStart(2, '0')).join(' ');
    return refuse(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided. Check your key and signing method.', {
      AWSAccessKeyId: akid,
      StringToSign: stringToSign,
      SignatureProvided: signature,
      StringToSignBytes: bytes(stringToSign),
      CanonicalRequest: canonical,
      CanonicalRequestBytes: bytes(canonical),
    }, got && got[2] !== signedList ? `signed headers ${got[2]} != ${signedList}` : 'signature differs');
  }

  return {
    url: `http://127.0.0.1:${port}`,
    port,
    region,
    objects,
    requests,
    /** The next n requests fail with status (503 SlowDown, 500 InternalError, ...), 'reset' or 'hang'. */
    failNext(n, status = 503) {
      for (let i = 0; i < n; i++) failures.push(status);
    },
    reset() {
      requests.length = 0;
      failures.length = 0;
    },
    async close() {
      server.closeAllConnections();
      await new Promise((r) => server.close(() => r()));
    },
  };
}

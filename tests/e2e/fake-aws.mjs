// Fake Amazon Bedrock (runtime + control plane) and SageMaker runtime servers
// for tollgate's black-box tests.
//
// Each fake listens on 127.0.0.1 (port 0) and serves HTTP/1.1 and cleartext
// HTTP/2 (prior knowledge, what the AWS SDK's NodeHttp2Handler speaks) on the
// same port: the first bytes of a connection pick the protocol.
//
// What they check, as AWS does:
//   * SigV4 header signatures (`Authorization: AWS4-HMAC-SHA256 ...`), verified
//     by re-signing the received request (method, raw path as received, query,
//     the signed headers only, body) with @smithy/signature-v4 at the
//     x-amz-date time with the secret from the shared credential `registry`;
//     scope (service `bedrock` / `sagemaker`, region, date), clock skew
//     (5 minutes), session tokens and expiry of temporary credentials.
//   * Bedrock also accepts `Authorization: Bearer <token>` (Bedrock API keys)
//     for tokens in `bearerTokens`.
// What they answer: the providers' wire formats (model-native JSON bodies,
// Converse JSON, `application/vnd.amazon.eventstream` frames, AWS JSON errors
// with `x-amzn-ErrorType`), with deterministic token counts (see below).
//
// Token-count rules (both fakes):
//   input  = number of whitespace-separated words in all of the request's
//            text + 3  (INPUT_OVERHEAD)
//   output = the request's max-tokens field, capped at MAX_OUTPUT (256), when
//            given; else DEFAULT_OUTPUT (12). The output text is
//            "w1 w2 ... wN" (N = output), so clients can count words.
//   cache  = when a request asks for prompt caching (a `cachePoint` block in
//            Converse / Nova, `cache_control` in Anthropic), cacheRead =
//            CACHE_READ (10) and cacheWrite = CACHE_WRITE (4); else both 0.
//   stop   = "max tokens" when the max-tokens field was given and is <= 256,
//            else "end turn" / "stop".
//
// Behaviour is scripted by the model id (Bedrock) or endpoint name
// (SageMaker), as a chain of prefixes before the real id:
//   fail.<ErrorName>[.<rest>]      answer that AWS error (status per AWS)
//   midstream.<exceptionType>[.<rest>]  streams: two content events, then an
//                                  exception frame; usage recorded as null
//   slow.<ms>.<rest>               delay before the first byte
//   hang.<rest>                    never answer (until the peer or close() ends it)
//   drip.<n>.<ms>.<rest>           n content events (one word each) <ms> apart
//   cut.<n>.<rest>                 streams: n content events, then the TCP
//                                  connection is destroyed (no final frame)
// <rest> defaults to anthropic.claude-3-5-sonnet-20240620-v1:0 (Bedrock) or
// tgi-default (SageMaker).

import net from 'node:net';
import http from 'node:http';
import http2 from 'node:http2';
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { SignatureV4, getCanonicalHeaders, prepareRequest } from '@smithy/signature-v4';
import { Sha256 } from '@aws-crypto/sha256-js';
import { EventStreamCodec } from '@smithy/eventstream-codec';
import { fromUtf8, toUtf8 } from '@smithy/util-utf8';
import { HttpRequest } from '@smithy/protocol-http';

export const INPUT_OVERHEAD = 3;
export const DEFAULT_OUTPUT = 12;
export const MAX_OUTPUT = 256;
export const CACHE_READ = 10;
export const CACHE_WRITE = 4;
export const ACCOUNT_ID = '123456789012';
export const CLOCK_SKEW_MS = 5 * 60 * 1000;
export const DEFAULT_BEDROCK_MODEL = 'anthropic.claude-3-5-sonnet-20240620-v1:0';
export const DEFAULT_SAGEMAKER_ENDPOINT = 'tgi-default';

// The AWS documentation's example key pair.
export const STATIC_ACCESS_KEY_ID = 'AKIAIOSFODNN7EXAMPLE';
export const STATIC_SECRET_ACCESS_KEY = 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY';

const BEDROCK_NS = 'http://internal.amazon.com/coral/com.amazon.bedrock/';
const COMMON_NS = 'http://internal.amazon.com/coral/com.amazon.coral.service/';
const SAGEMAKER_NS = 'http://internal.amazon.com/coral/com.amazon.sagemaker.runtime/';

const codec = new EventStreamCodec(toUtf8, fromUtf8);
const hex = (n) => randomBytes(n).toString('hex');
const sha256hex = (buf) => createHash('sha256').update(buf).digest('hex');

/** Adds the fixed long-term key pair to `registry` and returns it. */
export function staticCreds(registry) {
  registry.set(STATIC_ACCESS_KEY_ID, {
    secretAccessKey: STATIC_SECRET_ACCESS_KEY,
    sessionToken: undefined,
    expiresAtMs: 0,
    source: 'static',
  });
  return { accessKeyId: STATIC_ACCESS_KEY_ID, secretAccessKey: STATIC_SECRET_ACCESS_KEY };
}

/** Adds a fresh temporary key (ASIA..., session token, expiry) to `registry`. */
export function tempCreds(registry, { ttlMs = 3600_000, expiresAtMs, source = 'temp' } = {}) {
  const accessKeyId = `ASIA${hex(8).toUpperCase()}`;
  const secretAccessKey = randomBytes(30).toString('base64');
  const sessionToken = `FwoGZXIvYXdzE${randomBytes(48).toString('base64')}`;
  const exp = expiresAtMs ?? Date.now() + ttlMs;
  registry.set(accessKeyId, { secretAccessKey, sessionToken, expiresAtMs: exp, source });
  return { accessKeyId, secretAccessKey, sessionToken, expiration: new Date(exp) };
}

// ---------------------------------------------------------------------------
// Token counting and text helpers

export function countWords(texts) {
  let n = 0;
  for (const t of texts) {
    if (typeof t !== 'string') continue;
    for (const w of t.split(/\s+/)) if (w) n++;
  }
  return n;
}

export function inputTokensFor(texts) {
  return countWords(texts) + INPUT_OVERHEAD;
}

/** Output token count for a max-tokens value (undefined when absent). */
export function outputTokensFor(maxTokens) {
  if (typeof maxTokens !== 'number' || !Number.isFinite(maxTokens)) return DEFAULT_OUTPUT;
  return Math.max(1, Math.min(Math.floor(maxTokens), MAX_OUTPUT));
}

/** "w1 w2 ... wn" */
export function wordsOut(n) {
  return Array.from({ length: n }, (_, i) => `w${i + 1}`).join(' ');
}

/** Splits "w1 ... wn" into k pieces whose concatenation is the whole text. */
function pieces(n, k) {
  const words = Array.from({ length: n }, (_, i) => `w${i + 1}`);
  if (n === 0) return [''];
  const count = Math.max(1, Math.min(k, n));
  const size = Math.ceil(n / count);
  const out = [];
  for (let i = 0; i < n; i += size) {
    out.push((i > 0 ? ' ' : '') + words.slice(i, i + size).join(' '));
  }
  return out;
}

function hasKeyDeep(v, key, depth = 0) {
  if (depth > 12 || v == null || typeof v !== 'object') return false;
  if (Array.isArray(v)) return v.some((x) => hasKeyDeep(x, key, depth + 1));
  if (Object.prototype.hasOwnProperty.call(v, key)) return true;
  return Object.values(v).some((x) => hasKeyDeep(x, key, depth + 1));
}

function contentTexts(content, out) {
  if (typeof content === 'string') {
    out.push(content);
    return;
  }
  if (!Array.isArray(content)) return;
  for (const b of content) {
    if (!b || typeof b !== 'object') continue;
    if (typeof b.text === 'string') out.push(b.text);
    if (b.type === 'tool_result' && b.content) contentTexts(b.content, out);
    if (b.toolResult && Array.isArray(b.toolResult.content)) contentTexts(b.toolResult.content, out);
  }
}

function messagesTexts(messages, out) {
  if (!Array.isArray(messages)) return;
  for (const m of messages) if (m && typeof m === 'object') contentTexts(m.content, out);
}

// Region prefixes of cross-region inference profile ids.
const REGION_PREFIX = /^(us|eu|apac|global|us-gov|jp|au|ca)\./;

/** The model family of a Bedrock model id / ARN. */
export function bedrockFamily(modelId) {
  let id = String(modelId);
  if (id.startsWith('arn:')) {
    const l = id.toLowerCase();
    if (l.includes('titan-embed') || l.includes('titan-e')) return 'titan-embed';
    if (l.includes('titan')) return 'titan';
    if (l.includes('nova')) return 'nova';
    if (l.includes('llama') || l.includes('meta.')) return 'llama';
    if (l.includes('mistral') || l.includes('mixtral')) return 'mistral';
    if (l.includes('cohere.embed')) return 'cohere-embed';
    if (l.includes('command-r')) return 'cohere-r';
    if (l.includes('cohere')) return 'cohere';
    if (l.includes('jamba')) return 'jamba';
    if (l.includes('ai21')) return 'ai21';
    return 'anthropic';
  }
  id = id.replace(REGION_PREFIX, '');
  if (id.startsWith('anthropic.')) return 'anthropic';
  if (id.startsWith('amazon.titan-embed')) return 'titan-embed';
  if (id.startsWith('amazon.titan-text') || id.startsWith('amazon.titan-tg1')) return 'titan';
  if (id.startsWith('amazon.nova')) return 'nova';
  if (id.startsWith('meta.')) return 'llama';
  if (id.startsWith('mistral.')) return 'mistral';
  if (id.startsWith('cohere.embed')) return 'cohere-embed';
  if (id.startsWith('cohere.command-r')) return 'cohere-r';
  if (id.startsWith('cohere.')) return 'cohere';
  if (id.startsWith('ai21.jamba')) return 'jamba';
  if (id.startsWith('ai21.')) return 'ai21';
  return null;
}

/**
 * Parses the scripting prefixes of a model id / endpoint name:
 * { fail, midstream, slowMs, hang, drip: {n, ms}, cut, id }
 */
export function parseScript(name, defaultRest) {
  const s = { fail: null, midstream: null, slowMs: 0, hang: false, drip: null, cut: null, id: name };
  let rest = String(name);
  for (let guard = 0; guard < 8; guard++) {
    let m;
    if ((m = /^fail\.([A-Za-z]+)(?:\.(\d{3}))?(?:\.(.+))?$/.exec(rest))) {
      s.fail = m[1];
      if (m[2]) s.failStatus = Number(m[2]);
      rest = m[3] || defaultRest;
      continue;
    }
    if ((m = /^midstream\.([A-Za-z]+)(?:\.(.+))?$/.exec(rest))) {
      s.midstream = m[1];
      rest = m[2] || defaultRest;
      continue;
    }
    if ((m = /^slow\.(\d+)\.(.+)$/.exec(rest))) {
      s.slowMs = Number(m[1]);
      rest = m[2];
      continue;
    }
    if ((m = /^hang\.(.+)$/.exec(rest)) || rest === 'hang') {
      s.hang = true;
      rest = m ? m[1] : defaultRest;
      continue;
    }
    if ((m = /^drip\.(\d+)\.(\d+)\.(.+)$/.exec(rest))) {
      s.drip = { n: Number(m[1]), ms: Number(m[2]) };
      rest = m[3];
      continue;
    }
    if ((m = /^cut\.(\d+)\.(.+)$/.exec(rest))) {
      s.cut = Number(m[1]);
      rest = m[2];
      continue;
    }
    break;
  }
  s.id = rest;
  return s;
}

// ---------------------------------------------------------------------------
// Event stream

const PADDING = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
let padSeq = 0;
function pad() {
  padSeq = (padSeq + 7) % PADDING.length;
  return PADDING.slice(0, padSeq + 1);
}

function strHeaders(obj) {
  const h = {};
  for (const [k, v] of Object.entries(obj)) h[k] = { type: 'string', value: v };
  return h;
}

/** An event frame (`:message-type: event`). */
export function eventFrame(eventType, payload, contentType = 'application/json') {
  const body = typeof payload === 'string' || payload instanceof Uint8Array
    ? (typeof payload === 'string' ? fromUtf8(payload) : payload)
    : fromUtf8(JSON.stringify(payload));
  return Buffer.from(
    codec.encode({
      headers: strHeaders({ ':event-type': eventType, ':content-type': contentType, ':message-type': 'event' }),
      body,
    }),
  );
}

/** An exception frame (`:message-type: exception`). */
export function exceptionFrame(exceptionType, payload) {
  return Buffer.from(
    codec.encode({
      headers: strHeaders({
        ':exception-type': exceptionType,
        ':content-type': 'application/json',
        ':message-type': 'exception',
      }),
      body: fromUtf8(JSON.stringify(payload)),
    }),
  );
}

/**
 * Decodes a buffer of event-stream frames:
 * [{ headers: {name: value}, body: Buffer, json?: any }]. Throws on a bad
 * prelude/CRC or a truncated tail unless `allowPartial`.
 */
export function decodeEventStream(buf, { allowPartial = false } = {}) {
  const out = [];
  let off = 0;
  const b = Buffer.from(buf);
  while (off < b.length) {
    if (b.length - off < 4) break;
    const total = b.readUInt32BE(off);
    if (b.length - off < total) break;
    const msg = codec.decode(b.subarray(off, off + total));
    const headers = {};
    for (const [k, v] of Object.entries(msg.headers)) headers[k] = v.value;
    const body = Buffer.from(msg.body);
    const frame = { headers, body };
    if (String(headers[':content-type'] || '').includes('json')) {
      try {
        frame.json = JSON.parse(body.toString('utf8'));
      } catch {}
    }
    out.push(frame);
    off += total;
  }
  if (off !== b.length && !allowPartial) throw new Error(`event stream: ${b.length - off} trailing bytes`);
  return out;
}

// ---------------------------------------------------------------------------
// SigV4 verification

const AUTH_RE =
  /^AWS4-HMAC-SHA256\s+Credential=([^,\s]+)\s*,\s*SignedHeaders=([^,\s]+)\s*,\s*Signature=([0-9a-fA-F]+)\s*$/;

function parseAmzDate(s) {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(String(s || ''));
  if (!m) return null;
  return new Date(Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]));
}

function amzDate(d) {
  return d.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}/, '');
}

function parseQuery(qs) {
  const query = {};
  if (!qs) return query;
  for (const part of qs.split('&')) {
    if (!part) continue;
    const i = part.indexOf('=');
    const rk = i < 0 ? part : part.slice(0, i);
    const rv = i < 0 ? '' : part.slice(i + 1);
    let k;
    let v;
    try {
      k = decodeURIComponent(rk);
      v = decodeURIComponent(rv);
    } catch {
      k = rk;
      v = rv;
    }
    if (k in query) query[k] = [].concat(query[k], v);
    else query[k] = v;
  }
  return query;
}

const authError = (status, name, message, ns = COMMON_NS) => ({ ok: false, status, name, message, ns });

/**
 * Verifies a request's authentication. Returns
 * { ok: true, auth: 'sigv4'|'bearer', accessKeyId?, entry? } or
 * { ok: false, status, name, message, ns, auth?, accessKeyId?, expectedCanonicalRequest? }.
 */
export async function verifyRequestAuth({
  method,
  rawUrl,
  headers,
  body,
  registry,
  region,
  service,
  bearerTokens,
  now = Date.now(),
}) {
  const authz = headers.authorization;
  if (!authz) {
    return authError(403, 'MissingAuthenticationTokenException', 'Missing Authentication Token');
  }
  if (/^Bearer\s/i.test(authz)) {
    if (!bearerTokens) {
      return authError(400, 'IncompleteSignatureException', `Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization=${authz.split(/\s/)[0]}`);
    }
    const token = authz.replace(/^Bearer\s+/i, '').trim();
    if (!bearerTokens.has(token)) {
      return { ...authError(403, 'AccessDeniedException', 'Authentication failed: Please make sure your API Key is valid.', BEDROCK_NS), auth: 'bearer', capitalMessage: true };
    }
    return { ok: true, auth: 'bearer' };
  }
  const m = AUTH_RE.exec(authz);
  if (!m) {
    return authError(400, 'IncompleteSignatureException', `Authorization header requires 'Credential' parameter. Authorization header requires 'Signature' parameter. Authorization header requires 'SignedHeaders' parameter. Authorization=${authz.split(/\s/)[0]}`);
  }
  const [, credential, signedHeadersStr, signature] = m;
  const parts = credential.split('/');
  if (parts.length !== 5 || parts[4] !== 'aws4_request') {
    return authError(400, 'IncompleteSignatureException', `Credential should be of the form 'ACCESS_KEY_ID/DATE/REGION/SERVICE/aws4_request'. Credential=${credential}`);
  }
  const [accessKeyId, scopeDate, scopeRegion, scopeService] = parts;
  const base = { auth: 'sigv4', accessKeyId };
  const rawDate = headers['x-amz-date'];
  const signingDate = parseAmzDate(rawDate);
  if (!signingDate) {
    return { ...authError(400, 'IncompleteSignatureException', "Authorization header requires existence of either a 'X-Amz-Date' or a 'Date' header."), ...base };
  }
  if (scopeService !== service) {
    return { ...authError(403, 'InvalidSignatureException', `Credential should be scoped to correct service: '${service}'. `), ...base };
  }
  if (scopeRegion !== region) {
    return { ...authError(403, 'InvalidSignatureException', `Credential should be scoped to a valid region. `), ...base };
  }
  if (scopeDate !== rawDate.slice(0, 8)) {
    return { ...authError(403, 'InvalidSignatureException', `Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: '${scopeDate}' != '${rawDate.slice(0, 8)}', from '${rawDate}'.`), ...base };
  }
  const skew = signingDate.getTime() - now;
  if (skew < -CLOCK_SKEW_MS) {
    const nowD = new Date(now);
    return { ...authError(403, 'InvalidSignatureException', `Signature expired: ${rawDate} is now earlier than ${amzDate(new Date(now - CLOCK_SKEW_MS))} (${amzDate(nowD)} - 5 min.)`), ...base };
  }
  if (skew > CLOCK_SKEW_MS) {
    const nowD = new Date(now);
    return { ...authError(403, 'InvalidSignatureException', `Signature not yet current: ${rawDate} is still later than ${amzDate(new Date(now + CLOCK_SKEW_MS))} (${amzDate(nowD)} + 5 min.)`), ...base };
  }
  const entry = registry.get(accessKeyId);
  if (!entry) {
    return { ...authError(403, 'UnrecognizedClientException', 'The security token included in the request is invalid.'), ...base };
  }
  const token = headers['x-amz-security-token'];
  if (entry.sessionToken) {
    if (!token || token !== entry.sessionToken) {
      return { ...authError(403, 'UnrecognizedClientException', 'The security token included in the request is invalid.'), ...base };
    }
  } else if (token) {
    return { ...authError(403, 'UnrecognizedClientException', 'The security token included in the request is invalid.'), ...base };
  }
  if (entry.expiresAtMs && now >= entry.expiresAtMs) {
    return { ...authError(403, 'ExpiredTokenException', 'The security token included in the request is expired'), ...base };
  }

  // Re-sign what was received.
  const signedHeaders = signedHeadersStr.toLowerCase().split(';');
  const sigHeaders = {};
  for (const name of signedHeaders) {
    let v = headers[name];
    if (v === undefined && name === 'host') v = headers[':authority'];
    if (v === undefined) {
      return { ...authError(403, 'InvalidSignatureException', `The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.`), ...base, detail: `signed header ${name} missing` };
    }
    sigHeaders[name] = Array.isArray(v) ? v.join(',') : String(v);
  }
  const bodyHash = sha256hex(body);
  const declared = headers['x-amz-content-sha256'];
  if (declared !== undefined && declared !== bodyHash && declared !== 'UNSIGNED-PAYLOAD') {
    return { ...authError(403, 'InvalidSignatureException', 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.'), ...base, detail: 'x-amz-content-sha256 does not match the body' };
  }
  const q = rawUrl.indexOf('?');
  const path = q < 0 ? rawUrl : rawUrl.slice(0, q);
  const query = parseQuery(q < 0 ? '' : rawUrl.slice(q + 1));
  const hostHeader = sigHeaders.host || headers.host || headers[':authority'] || '127.0.0.1';
  const request = new HttpRequest({
    method,
    protocol: 'http:',
    hostname: hostHeader.replace(/:\d+$/, ''),
    path,
    query,
    headers: sigHeaders,
    body,
  });
  const signer = new SignatureV4({
    credentials: {
      accessKeyId,
      secretAccessKey: entry.secretAccessKey,
      sessionToken: signedHeaders.includes('x-amz-security-token') ? token : undefined,
    },
    region,
    service,
    sha256: Sha256,
    uriEscapePath: true,
    applyChecksum: false,
  });
  const signed = await signer.sign(request, {
    signingDate,
    signableHeaders: new Set(signedHeaders),
  });
  const got = AUTH_RE.exec(signed.headers.authorization);
  const expectedSig = got ? got[3] : '';
  const a = Buffer.from(expectedSig.toLowerCase());
  const b = Buffer.from(signature.toLowerCase());
  const sameHeaders = got && got[2] === signedHeaders.join(';');
  if (!sameHeaders || a.length !== b.length || !timingSafeEqual(a, b)) {
    // For debugging a client's signer: the canonical request AWS would build.
    let expectedCanonicalRequest = null;
    try {
      const prepared = prepareRequest(request);
      prepared.headers['x-amz-date'] = rawDate;
      if (signedHeaders.includes('x-amz-security-token') && token) prepared.headers['x-amz-security-token'] = token;
      const ch = getCanonicalHeaders(prepared, undefined, new Set(signedHeaders));
      expectedCanonicalRequest = signer.createCanonicalRequest(prepared, ch, declared && declared !== bodyHash ? declared : bodyHash);
    } catch {}
    return {
      ...authError(403, 'InvalidSignatureException', 'The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details.'),
      ...base,
      expectedCanonicalRequest,
    };
  }
  return { ok: true, auth: 'sigv4', accessKeyId, entry, unsignedPayload: declared === 'UNSIGNED-PAYLOAD' };
}

/**
 * Signs and sends one request by hand (for calls no installed SDK makes):
 * returns { status, headers, body: Buffer, json }.
 */
export async function signedFetch({
  url,
  method = 'GET',
  path = '/',
  query = {},
  headers = {},
  body,
  creds,
  region = 'us-east-1',
  service = 'bedrock',
  signingDate = new Date(),
  // Send creds.sessionToken in x-amz-security-token without signing it.
  unsignedSessionToken = false,
  // Sign with x-amz-content-sha256: UNSIGNED-PAYLOAD.
  unsignedPayload = false,
}) {
  const u = new URL(url);
  const bodyBuf = body === undefined ? undefined : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  const req = new HttpRequest({
    method,
    protocol: u.protocol,
    hostname: u.hostname,
    port: Number(u.port),
    path,
    query,
    headers: {
      host: u.host,
      ...headers,
      ...(bodyBuf ? { 'content-type': headers['content-type'] || 'application/json' } : {}),
      ...(unsignedPayload ? { 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' } : {}),
    },
    body: bodyBuf,
  });
  const signingCreds = unsignedSessionToken ? { ...creds, sessionToken: undefined } : creds;
  const signer = new SignatureV4({ credentials: signingCreds, region, service, sha256: Sha256, uriEscapePath: true });
  const signed = await signer.sign(req, { signingDate });
  if (unsignedSessionToken && creds.sessionToken) signed.headers['x-amz-security-token'] = creds.sessionToken;
  const qs = Object.entries(query)
    .flatMap(([k, v]) => [].concat(v).map((x) => `${encodeURIComponent(k)}=${encodeURIComponent(x)}`))
    .join('&');
  const res = await rawRequest(`${u.protocol}//${u.host}${path}${qs ? `?${qs}` : ''}`, {
    method,
    headers: signed.headers,
    body: bodyBuf,
  });
  return res;
}

/** A plain HTTP/1.1 request: { status, headers, body: Buffer, json }. */
export function rawRequest(url, { method = 'GET', headers = {}, body } = {}) {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        const buf = Buffer.concat(chunks);
        let json;
        try {
          json = JSON.parse(buf.toString('utf8'));
        } catch {}
        resolve({ status: res.statusCode, headers: res.headers, body: buf, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    if (body) req.write(body);
    req.end();
  });
}

// ---------------------------------------------------------------------------
// A server speaking HTTP/1.1 and h2c on one port.

async function startDualServer(onRequest) {
  const sockets = new Set();
  const h1 = http.createServer({ requestTimeout: 0 }, onRequest);
  h1.keepAliveTimeout = 5000;
  const h2 = http2.createServer({}, onRequest);
  h2.on('sessionError', () => {});
  const srv = net.createServer((sock) => {
    sockets.add(sock);
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => {});
    sock.once('data', (buf) => {
      sock.pause();
      sock.unshift(buf);
      const target = buf.toString('latin1', 0, 3) === 'PRI' ? h2 : h1;
      target.emit('connection', sock);
      process.nextTick(() => sock.resume());
    });
  });
  await new Promise((resolve, reject) => {
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      srv.off('error', reject);
      resolve();
    });
  });
  const { port } = srv.address();
  return {
    port,
    url: `http://127.0.0.1:${port}`,
    async close() {
      for (const s of sockets) s.destroy();
      await new Promise((r) => srv.close(() => r()));
      h1.close();
      h2.close();
    },
  };
}

function isH2(res) {
  return res.stream !== undefined;
}

function writeHead(res, status, headers) {
  if (isH2(res)) {
    const lower = {};
    for (const [k, v] of Object.entries(headers)) lower[k.toLowerCase()] = v;
    res.writeHead(status, lower);
  } else {
    res.writeHead(status, headers);
  }
}

function requestId() {
  const h = hex(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20, 32)}`;
}

function newRecord(req, rawBody, seq) {
  return {
    seq,
    op: null,
    method: req.method,
    path: req.url,
    modelId: null,
    endpointName: null,
    auth: null,
    accessKeyId: null,
    headers: { ...req.headers },
    rawBody: rawBody.toString('utf8'),
    body: null,
    usage: null,
    status: null,
    errorName: null,
    errorMessage: null,
    rejected: null,
    answered: null,
    eventsSent: 0,
    textSent: '',
    receivedAt: Date.now(),
    finished: false,
    closed: false,
    closedBeforeFinish: false,
    closedAt: null,
  };
}

/** Common plumbing: body collection, records, timers, close. */
async function makeFake(handle) {
  const requests = [];
  const timers = new Set();
  let seq = 0;
  const later = (ms) =>
    new Promise((resolve) => {
      const t = setTimeout(() => {
        timers.delete(t);
        resolve();
      }, ms);
      timers.add(t);
    });
  const server = await startDualServer((req, res) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('error', () => {});
    req.on('end', () => {
      const rawBody = Buffer.concat(chunks);
      const rec = newRecord(req, rawBody, ++seq);
      requests.push(rec);
      const markClosed = () => {
        if (rec.closed) return;
        rec.closed = true;
        rec.closedAt = Date.now();
        rec.closedBeforeFinish = !rec.finished;
      };
      res.on('close', markClosed);
      handle(req, res, rec, rawBody, later).catch((err) => {
        rec.handlerError = String(err && err.stack ? err.stack : err);
        if (!res.headersSent) {
          const body = JSON.stringify({ message: `fake handler crashed: ${err}` });
          writeHead(res, 500, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
          res.end(body);
        } else res.destroy();
      });
    });
  });
  return {
    server,
    requests,
    later,
    async close() {
      for (const t of timers) clearTimeout(t);
      timers.clear();
      await server.close();
    },
  };
}

function sendJson(res, rec, status, obj, headers = {}) {
  const body = typeof obj === 'string' ? obj : JSON.stringify(obj);
  writeHead(res, status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    'x-amzn-RequestId': requestId(),
    Date: new Date().toUTCString(),
    ...headers,
  });
  res.end(body);
  rec.status = status;
  rec.finished = true;
}

function sendAwsError(res, rec, { status, name, message, ns, extra = {}, capitalMessage = false }) {
  rec.status = status;
  rec.errorName = name;
  rec.errorMessage = message;
  rec.answered = 'error';
  const body = capitalMessage ? { Message: message, ...extra } : { message, ...extra };
  sendJson(res, rec, status, body, { 'x-amzn-ErrorType': `${name}:${ns}` });
}

// Streams: write frames while the peer is there.
function streamer(res, rec) {
  const alive = () => !res.destroyed && !res.writableEnded && !rec.closed;
  return {
    alive,
    write(buf) {
      if (!alive()) return false;
      res.write(buf);
      return true;
    },
    end() {
      if (!alive()) return false;
      res.end();
      rec.finished = true;
      return true;
    },
    async cut(later) {
      rec.answered = 'cut';
      await later(30);
      if (isH2(res)) res.stream.session?.socket?.destroy();
      else res.socket?.destroy();
    },
  };
}

// ---------------------------------------------------------------------------
// Bedrock

export const BEDROCK_ERRORS = Object.freeze({
  AccessDeniedException: [403, "You don't have access to the model with the specified model ID."],
  ConflictException: [400, 'The request could not be processed because of a conflict.'],
  InternalServerException: [500, 'The system encountered an unexpected error during processing. Try your request again.'],
  ModelErrorException: [424, 'The model returned an error.'],
  ModelNotReadyException: [429, 'Model is not ready for inference. Wait and try your request again. Refer to https://docs.aws.amazon.com/bedrock/latest/userguide/invoke-imported-model.html#handle-model-not-ready-exception.'],
  ModelStreamErrorException: [424, 'The model returned an error while streaming.'],
  ModelTimeoutException: [408, 'Model has timed out in processing the request. Try your request again.'],
  ResourceNotFoundException: [404, 'Model not found. Check the model identifier and try again.'],
  ServiceQuotaExceededException: [400, 'Your request exceeds the service quota for your account. You can view your quotas at https://docs.aws.amazon.com/servicequotas/latest/userguide/gs-request-quota.html.'],
  ServiceUnavailableException: [503, 'Bedrock is unable to process your request.'],
  ThrottlingException: [429, 'Too many requests, please wait before trying again.'],
  ValidationException: [400, 'Malformed input request, please reformat your input and try again.'],
});

// Mid-stream exception events (`:exception-type`), and their payloads.
export const BEDROCK_STREAM_EXCEPTIONS = Object.freeze({
  internalServerException: 'The system encountered an unexpected error during processing. Try your request again.',
  modelStreamErrorException: 'The model returned an error while streaming.',
  validationException: 'Output blocked by content filtering policy.',
  throttlingException: 'Too many requests, please wait before trying again. You have sent too many requests.  Wait before trying again.',
  modelTimeoutException: 'Model has timed out in processing the request. Try your request again.',
  serviceUnavailableException: 'Bedrock is unable to process your request.',
});

const FOUNDATION_MODELS = [
  ['anthropic.claude-3-5-sonnet-20240620-v1:0', 'Claude 3.5 Sonnet', 'Anthropic', ['TEXT', 'IMAGE'], ['TEXT'], true, [], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['anthropic.claude-3-5-sonnet-20241022-v2:0', 'Claude 3.5 Sonnet v2', 'Anthropic', ['TEXT', 'IMAGE'], ['TEXT'], true, [], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['anthropic.claude-3-7-sonnet-20250219-v1:0', 'Claude 3.7 Sonnet', 'Anthropic', ['TEXT', 'IMAGE'], ['TEXT'], true, [], ['INFERENCE_PROFILE'], 'ACTIVE'],
  ['anthropic.claude-sonnet-4-20250514-v1:0', 'Claude Sonnet 4', 'Anthropic', ['TEXT', 'IMAGE'], ['TEXT'], true, [], ['INFERENCE_PROFILE'], 'ACTIVE'],
  ['anthropic.claude-3-haiku-20240307-v1:0', 'Claude 3 Haiku', 'Anthropic', ['TEXT', 'IMAGE'], ['TEXT'], true, [], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['anthropic.claude-v2:1', 'Claude', 'Anthropic', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'LEGACY'],
  ['amazon.nova-pro-v1:0', 'Nova Pro', 'Amazon', ['TEXT', 'IMAGE', 'VIDEO'], ['TEXT'], true, [], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['amazon.nova-lite-v1:0', 'Nova Lite', 'Amazon', ['TEXT', 'IMAGE', 'VIDEO'], ['TEXT'], true, ['FINE_TUNING', 'DISTILLATION'], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['amazon.titan-text-express-v1', 'Titan Text G1 - Express', 'Amazon', ['TEXT'], ['TEXT'], true, ['FINE_TUNING', 'CONTINUED_PRE_TRAINING'], ['ON_DEMAND'], 'ACTIVE'],
  ['amazon.titan-embed-text-v2:0', 'Titan Text Embeddings V2', 'Amazon', ['TEXT'], ['EMBEDDING'], false, [], ['ON_DEMAND'], 'ACTIVE'],
  ['amazon.titan-embed-text-v1', 'Titan Embeddings G1 - Text', 'Amazon', ['TEXT'], ['EMBEDDING'], false, [], ['ON_DEMAND'], 'ACTIVE'],
  ['meta.llama3-1-8b-instruct-v1:0', 'Llama 3.1 8B Instruct', 'Meta', ['TEXT'], ['TEXT'], true, ['FINE_TUNING'], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['meta.llama3-1-70b-instruct-v1:0', 'Llama 3.1 70B Instruct', 'Meta', ['TEXT'], ['TEXT'], true, ['FINE_TUNING'], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['meta.llama3-2-11b-instruct-v1:0', 'Llama 3.2 11B Instruct', 'Meta', ['TEXT', 'IMAGE'], ['TEXT'], true, [], ['INFERENCE_PROFILE'], 'ACTIVE'],
  ['mistral.mistral-large-2402-v1:0', 'Mistral Large (24.02)', 'Mistral AI', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'ACTIVE'],
  ['mistral.mistral-7b-instruct-v0:2', 'Mistral 7B Instruct', 'Mistral AI', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'ACTIVE'],
  ['cohere.command-r-plus-v1:0', 'Command R+', 'Cohere', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'ACTIVE'],
  ['cohere.embed-english-v3', 'Embed English', 'Cohere', ['TEXT'], ['EMBEDDING'], false, [], ['ON_DEMAND'], 'ACTIVE'],
  ['ai21.jamba-1-5-large-v1:0', 'Jamba 1.5 Large', 'AI21 Labs', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'ACTIVE'],
];

const INFERENCE_PROFILES = [
  ['us.anthropic.claude-3-5-sonnet-20240620-v1:0', 'US Anthropic Claude 3.5 Sonnet'],
  ['us.anthropic.claude-3-7-sonnet-20250219-v1:0', 'US Anthropic Claude 3.7 Sonnet'],
  ['us.anthropic.claude-sonnet-4-20250514-v1:0', 'US Claude Sonnet 4'],
  ['us.amazon.nova-pro-v1:0', 'US Nova Pro'],
  ['us.meta.llama3-2-11b-instruct-v1:0', 'US Meta Llama 3.2 11B Instruct'],
];

export function foundationModelSummaries(region = 'us-east-1') {
  return FOUNDATION_MODELS.map(([modelId, modelName, providerName, inM, outM, streaming, cust, inf, status]) => ({
    modelArn: `arn:aws:bedrock:${region}::foundation-model/${modelId}`,
    modelId,
    modelName,
    providerName,
    inputModalities: inM,
    outputModalities: outM,
    responseStreamingSupported: streaming,
    customizationsSupported: cust,
    inferenceTypesSupported: inf,
    modelLifecycle: { status },
  }));
}

export function inferenceProfileSummaries(region = 'us-east-1', accountId = ACCOUNT_ID) {
  const regions = ['us-east-1', 'us-east-2', 'us-west-2'];
  return INFERENCE_PROFILES.map(([id, name]) => {
    const base = id.replace(REGION_PREFIX, '');
    return {
      inferenceProfileName: name,
      description: `Routes requests to ${name.replace(/^US /, '')} in ${regions.join(', ')}.`,
      createdAt: '2024-08-27T00:00:00.000Z',
      updatedAt: '2024-08-27T00:00:00.000Z',
      inferenceProfileArn: `arn:aws:bedrock:${region}:${accountId}:inference-profile/${id}`,
      models: regions.map((r) => ({ modelArn: `arn:aws:bedrock:${r}::foundation-model/${base}` })),
      inferenceProfileId: id,
      status: 'ACTIVE',
      type: 'SYSTEM_DEFINED',
    };
  });
}

function anthropicModelName(modelId) {
  const base = String(modelId).split('/').pop().replace(REGION_PREFIX, '').replace(/^anthropic\./, '');
  return base.replace(/-v\d+(:\d+)?$/, '');
}

function msgId() {
  return `msg_bdrk_01${randomBytes(16).toString('base64').replace(/[^A-Za-z0-9]/g, '').slice(0, 22)}`;
}

/**
 * Plans a Bedrock answer from the request: texts, max tokens, caching.
 * Returns { family, input, output, cacheRead, cacheWrite, maxGiven, error? }.
 */
function planBedrock(op, family, body) {
  const texts = [];
  let max;
  let cache = false;
  const err = (message) => ({ error: { name: 'ValidationException', message } });
  if (!body || typeof body !== 'object' || Array.isArray(body)) return err('Malformed input request, please reformat your input and try again.');
  if (op === 'Converse' || op === 'ConverseStream') {
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      return err('A conversation must start with a user message. Try again with a conversation that starts with a user message.');
    }
    messagesTexts(body.messages, texts);
    if (Array.isArray(body.system)) contentTexts(body.system, texts);
    max = body.inferenceConfig?.maxTokens;
    cache = hasKeyDeep(body.messages, 'cachePoint') || hasKeyDeep(body.system, 'cachePoint') || hasKeyDeep(body.toolConfig, 'cachePoint');
  } else {
    switch (family) {
      case 'anthropic':
        if (Array.isArray(body.messages)) {
          if (!body.anthropic_version) return err('Malformed input request: #: required key [anthropic_version] not found, please reformat your input and try again.');
          if (body.max_tokens === undefined) return err('Malformed input request: #: required key [max_tokens] not found, please reformat your input and try again.');
          messagesTexts(body.messages, texts);
          if (body.system !== undefined) contentTexts(body.system, texts);
          max = body.max_tokens;
          cache = hasKeyDeep(body, 'cache_control');
        } else if (typeof body.prompt === 'string') {
          if (body.max_tokens_to_sample === undefined) return err('Malformed input request: #: required key [max_tokens_to_sample] not found, please reformat your input and try again.');
          texts.push(body.prompt);
          max = body.max_tokens_to_sample;
        } else {
          return err('Malformed input request: #: required key [messages] not found, please reformat your input and try again.');
        }
        break;
      case 'titan':
        if (typeof body.inputText !== 'string') return err('Malformed input request: #: required key [inputText] not found, please reformat your input and try again.');
        texts.push(body.inputText);
        max = body.textGenerationConfig?.maxTokenCount;
        break;
      case 'titan-embed':
        if (typeof body.inputText !== 'string') return err('Malformed input request: #: required key [inputText] not found, please reformat your input and try again.');
        texts.push(body.inputText);
        break;
      case 'cohere-embed':
        if (!Array.isArray(body.texts)) return err('Malformed input request: #: required key [texts] not found, please reformat your input and try again.');
        texts.push(...body.texts);
        break;
      case 'nova':
        if (!Array.isArray(body.messages)) return err('Malformed input request: #: required key [messages] not found, please reformat your input and try again.');
        messagesTexts(body.messages, texts);
        if (Array.isArray(body.system)) contentTexts(body.system, texts);
        max = body.inferenceConfig?.max_new_tokens ?? body.inferenceConfig?.maxTokens;
        cache = hasKeyDeep(body, 'cachePoint');
        break;
      case 'llama':
        if (typeof body.prompt !== 'string') return err('Malformed input request: #: required key [prompt] not found, please reformat your input and try again.');
        texts.push(body.prompt);
        max = body.max_gen_len;
        break;
      case 'mistral':
      case 'cohere':
        if (typeof body.prompt !== 'string') return err('Malformed input request: #: required key [prompt] not found, please reformat your input and try again.');
        texts.push(body.prompt);
        max = body.max_tokens;
        break;
      case 'cohere-r':
        if (typeof body.message !== 'string') return err('Malformed input request: #: required key [message] not found, please reformat your input and try again.');
        texts.push(body.message);
        if (Array.isArray(body.chat_history)) for (const m of body.chat_history) texts.push(m?.message);
        if (typeof body.preamble === 'string') texts.push(body.preamble);
        max = body.max_tokens;
        break;
      case 'ai21':
        if (typeof body.prompt !== 'string') return err('Malformed input request: #: required key [prompt] not found, please reformat your input and try again.');
        texts.push(body.prompt);
        max = body.maxTokens;
        break;
      case 'jamba':
        if (!Array.isArray(body.messages)) return err('Malformed input request: #: required key [messages] not found, please reformat your input and try again.');
        messagesTexts(body.messages, texts);
        max = body.max_tokens;
        break;
      default:
        return err('The provided model identifier is invalid.');
    }
  }
  const maxGiven = typeof max === 'number' && max <= MAX_OUTPUT;
  const embed = op !== 'Converse' && op !== 'ConverseStream' && (family === 'titan-embed' || family === 'cohere-embed');
  return {
    family,
    input: inputTokensFor(texts),
    output: embed ? 0 : outputTokensFor(max),
    cacheRead: cache ? CACHE_READ : 0,
    cacheWrite: cache ? CACHE_WRITE : 0,
    maxGiven,
    embed,
  };
}

function embeddingVector(n, seed) {
  const v = [];
  for (let i = 0; i < n; i++) v.push(Number((Math.sin(seed + i) / 10).toFixed(6)));
  return v;
}

/** The family's native InvokeModel response body. */
function nativeResponse(plan, modelId, body, text) {
  const { input, output, cacheRead, cacheWrite, maxGiven } = plan;
  switch (plan.family) {
    case 'anthropic': {
      if (!Array.isArray(body.messages)) {
        return { type: 'completion', completion: ` ${text}`, stop_reason: maxGiven ? 'max_tokens' : 'stop_sequence', stop: maxGiven ? null : '\n\nHuman:' };
      }
      const usage = { input_tokens: input, output_tokens: output };
      if (cacheRead || cacheWrite) {
        usage.cache_creation_input_tokens = cacheWrite;
        usage.cache_read_input_tokens = cacheRead;
      }
      return {
        id: msgId(),
        type: 'message',
        role: 'assistant',
        model: anthropicModelName(modelId),
        content: [{ type: 'text', text }],
        stop_reason: maxGiven ? 'max_tokens' : 'end_turn',
        stop_sequence: null,
        usage,
      };
    }
    case 'titan':
      return {
        inputTextTokenCount: input,
        results: [{ tokenCount: output, outputText: text, completionReason: maxGiven ? 'LENGTH' : 'FINISH' }],
      };
    case 'titan-embed': {
      const dims = body.dimensions || (String(modelId).includes('v2') ? 1024 : 1536);
      const embedding = embeddingVector(dims, input);
      const r = { embedding, inputTextTokenCount: input };
      if (String(modelId).includes('v2')) r.embeddingsByType = { float: embedding };
      return r;
    }
    case 'cohere-embed':
      return {
        embeddings: body.texts.map((_, i) => embeddingVector(1024, input + i)),
        id: requestId(),
        response_type: 'embeddings_floats',
        texts: body.texts.map((t) => String(t).toLowerCase()),
      };
    case 'nova': {
      const usage = { inputTokens: input, outputTokens: output, totalTokens: input + output + cacheRead + cacheWrite };
      usage.cacheReadInputTokenCount = cacheRead;
      usage.cacheWriteInputTokenCount = cacheWrite;
      return {
        output: { message: { content: [{ text }], role: 'assistant' } },
        stopReason: maxGiven ? 'max_tokens' : 'end_turn',
        usage,
      };
    }
    case 'llama':
      return { generation: text, prompt_token_count: input, generation_token_count: output, stop_reason: maxGiven ? 'length' : 'stop' };
    case 'mistral':
      return { outputs: [{ text, stop_reason: maxGiven ? 'length' : 'stop' }] };
    case 'cohere':
      return {
        generations: [{ finish_reason: maxGiven ? 'MAX_TOKENS' : 'COMPLETE', id: requestId(), text, index: 0, is_finished: true }],
        id: requestId(),
        prompt: body.prompt,
      };
    case 'cohere-r':
      return {
        response_id: requestId(),
        text,
        generation_id: requestId(),
        chat_history: [
          ...(body.chat_history || []),
          { role: 'USER', message: body.message },
          { role: 'CHATBOT', message: text },
        ],
        finish_reason: maxGiven ? 'MAX_TOKENS' : 'COMPLETE',
        meta: { api_version: { version: '1' }, billed_units: { input_tokens: input, output_tokens: output } },
      };
    case 'ai21':
      return {
        id: 1234,
        prompt: { text: body.prompt, tokens: [] },
        completions: [
          {
            data: { text, tokens: [] },
            finishReason: maxGiven ? { reason: 'length', length: output } : { reason: 'endoftext' },
          },
        ],
      };
    case 'jamba':
      return {
        id: `chatcmpl-${hex(12)}`,
        choices: [{ index: 0, message: { role: 'assistant', content: text, tool_calls: null }, finish_reason: maxGiven ? 'length' : 'stop' }],
        usage: { prompt_tokens: input, completion_tokens: output, total_tokens: input + output },
        meta: { requestDurationMillis: 120 },
        model: 'jamba-1.5-large',
      };
    default:
      return {};
  }
}

function invocationMetrics(plan, latency, firstByte) {
  const m = {
    inputTokenCount: plan.input,
    outputTokenCount: plan.output,
    invocationLatency: latency,
    firstByteLatency: firstByte,
  };
  if (plan.cacheRead) m.cacheReadInputTokenCount = plan.cacheRead;
  if (plan.cacheWrite) m.cacheWriteInputTokenCount = plan.cacheWrite;
  return m;
}

/**
 * The family's native stream chunks: { head: [...], deltas: [text...] ->
 * delta(i, text), tail(metrics) -> [...] }.
 */
function nativeStream(plan, modelId, body) {
  const { input, output, cacheRead, cacheWrite, maxGiven } = plan;
  let sent = 0;
  switch (plan.family) {
    case 'anthropic':
      if (!Array.isArray(body.messages)) {
        return {
          head: [],
          delta: (t) => ({ type: 'completion', completion: t, stop_reason: null, stop: null }),
          tail: (m) => [{ type: 'completion', completion: '', stop_reason: maxGiven ? 'max_tokens' : 'stop_sequence', stop: maxGiven ? null : '\n\nHuman:', 'amazon-bedrock-invocationMetrics': m }],
        };
      }
      return {
        head: [
          {
            type: 'message_start',
            message: {
              id: msgId(),
              type: 'message',
              role: 'assistant',
              model: anthropicModelName(modelId),
              content: [],
              stop_reason: null,
              stop_sequence: null,
              usage: cacheRead || cacheWrite
                ? { input_tokens: input, cache_creation_input_tokens: cacheWrite, cache_read_input_tokens: cacheRead, output_tokens: 1 }
                : { input_tokens: input, output_tokens: 1 },
            },
          },
          { type: 'content_block_start', index: 0, content_block: { type: 'text', text: '' } },
        ],
        delta: (t) => ({ type: 'content_block_delta', index: 0, delta: { type: 'text_delta', text: t } }),
        tail: (m) => [
          { type: 'content_block_stop', index: 0 },
          { type: 'message_delta', delta: { stop_reason: maxGiven ? 'max_tokens' : 'end_turn', stop_sequence: null }, usage: { output_tokens: output } },
          { type: 'message_stop', 'amazon-bedrock-invocationMetrics': m },
        ],
      };
    case 'titan': {
      let first = true;
      return {
        head: [],
        delta: (t, words) => {
          sent += words;
          const c = { outputText: t, index: 0, totalOutputTextTokenCount: sent, completionReason: null, inputTextTokenCount: first ? input : null };
          first = false;
          return c;
        },
        tail: (m) => [{ outputText: '', index: 0, totalOutputTextTokenCount: output, completionReason: maxGiven ? 'LENGTH' : 'FINISH', inputTextTokenCount: null, 'amazon-bedrock-invocationMetrics': m }],
      };
    }
    case 'nova':
      return {
        head: [{ messageStart: { role: 'assistant' } }],
        delta: (t) => ({ contentBlockDelta: { delta: { text: t }, contentBlockIndex: 0 } }),
        tail: (m) => [
          { contentBlockStop: { contentBlockIndex: 0 } },
          { messageStop: { stopReason: maxGiven ? 'max_tokens' : 'end_turn' } },
          {
            metadata: { usage: { inputTokens: input, outputTokens: output, cacheReadInputTokenCount: cacheRead, cacheWriteInputTokenCount: cacheWrite }, metrics: {}, trace: {} },
            'amazon-bedrock-invocationMetrics': m,
          },
        ],
      };
    case 'llama': {
      let first = true;
      return {
        head: [],
        delta: (t, words) => {
          sent += words;
          const c = { generation: t, prompt_token_count: first ? input : null, generation_token_count: sent, stop_reason: null };
          first = false;
          return c;
        },
        tail: (m) => [{ generation: '', prompt_token_count: null, generation_token_count: output, stop_reason: maxGiven ? 'length' : 'stop', 'amazon-bedrock-invocationMetrics': m }],
      };
    }
    case 'mistral':
      return {
        head: [],
        delta: (t) => ({ outputs: [{ text: t, stop_reason: null }] }),
        tail: (m) => [{ outputs: [{ text: '', stop_reason: maxGiven ? 'length' : 'stop' }], 'amazon-bedrock-invocationMetrics': m }],
      };
    case 'cohere':
      return {
        head: [],
        delta: (t) => ({ text: t, is_finished: false }),
        tail: (m) => [{
          is_finished: true,
          finish_reason: maxGiven ? 'MAX_TOKENS' : 'COMPLETE',
          response: { id: requestId(), generations: [{ id: requestId(), text: wordsOut(output), finish_reason: maxGiven ? 'MAX_TOKENS' : 'COMPLETE' }], prompt: body.prompt },
          'amazon-bedrock-invocationMetrics': m,
        }],
      };
    case 'cohere-r':
      return {
        head: [{ is_finished: false, event_type: 'stream-start', generation_id: requestId() }],
        delta: (t) => ({ is_finished: false, event_type: 'text-generation', text: t }),
        tail: (m) => [{
          is_finished: true,
          event_type: 'stream-end',
          finish_reason: maxGiven ? 'MAX_TOKENS' : 'COMPLETE',
          response: {
            response_id: requestId(),
            text: wordsOut(output),
            generation_id: requestId(),
            finish_reason: maxGiven ? 'MAX_TOKENS' : 'COMPLETE',
            meta: { api_version: { version: '1' }, billed_units: { input_tokens: input, output_tokens: output } },
          },
          'amazon-bedrock-invocationMetrics': m,
        }],
      };
    case 'jamba': {
      const id = `chatcmpl-${hex(12)}`;
      return {
        head: [{ id, choices: [{ index: 0, delta: { role: 'assistant' }, finish_reason: null }], usage: null }],
        delta: (t) => ({ id, choices: [{ index: 0, delta: { content: t }, finish_reason: null }], usage: null }),
        tail: (m) => [{
          id,
          choices: [{ index: 0, delta: {}, finish_reason: maxGiven ? 'length' : 'stop' }],
          usage: { prompt_tokens: input, completion_tokens: output, total_tokens: input + output },
          'amazon-bedrock-invocationMetrics': m,
        }],
      };
    }
    default:
      return null;
  }
}

function converseUsage(plan) {
  const u = {
    inputTokens: plan.input,
    outputTokens: plan.output,
    totalTokens: plan.input + plan.output + plan.cacheRead + plan.cacheWrite,
  };
  if (plan.cacheRead) u.cacheReadInputTokens = plan.cacheRead;
  if (plan.cacheWrite) u.cacheWriteInputTokens = plan.cacheWrite;
  return u;
}

function usageRecord(plan) {
  return { input: plan.input, output: plan.output, cacheRead: plan.cacheRead, cacheWrite: plan.cacheWrite };
}

/**
 * Starts the fake Bedrock (runtime and control plane on one server).
 *   registry      Map accessKeyId -> { secretAccessKey, sessionToken, expiresAtMs, source }
 *   bearerTokens  Set of accepted Bedrock API keys (Authorization: Bearer)
 *   region        the region requests must be scoped to
 *   pageSize      ListInferenceProfiles page size cap (default 2)
 */
export async function startFakeBedrock({ registry, bearerTokens = new Set(), region = 'us-east-1', pageSize = 2, accountId = ACCOUNT_ID } = {}) {
  if (!(registry instanceof Map)) throw new Error('startFakeBedrock: registry must be a Map');
  const counters = { catalog: 0, runtime: 0, rejected: 0 };
  const fake = await makeFake(handle);

  async function handle(req, res, rec, rawBody, later) {
    const start = Date.now();
    const [rawPath] = req.url.split('?');
    const qs = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1) : '';
    let m;
    let modelRaw = null;
    if (req.method === 'POST' && (m = /^\/model\/([^/]+)\/(invoke|invoke-with-response-stream|converse|converse-stream)$/.exec(rawPath))) {
      modelRaw = m[1];
      rec.op = { invoke: 'InvokeModel', 'invoke-with-response-stream': 'InvokeModelWithResponseStream', converse: 'Converse', 'converse-stream': 'ConverseStream' }[m[2]];
      try {
        rec.modelId = decodeURIComponent(modelRaw);
      } catch {
        rec.modelId = modelRaw;
      }
    } else if (req.method === 'GET' && rawPath === '/foundation-models') {
      rec.op = 'ListFoundationModels';
    } else if (req.method === 'GET' && rawPath === '/inference-profiles') {
      rec.op = 'ListInferenceProfiles';
    }

    const v = await verifyRequestAuth({
      method: req.method,
      rawUrl: req.url,
      headers: req.headers,
      body: rawBody,
      registry,
      region,
      service: 'bedrock',
      bearerTokens,
    });
    rec.auth = v.auth || null;
    rec.accessKeyId = v.accessKeyId || null;
    if (!v.ok) {
      counters.rejected++;
      rec.rejected = `${v.status} ${v.name}: ${v.message}`;
      if (v.expectedCanonicalRequest) rec.expectedCanonicalRequest = v.expectedCanonicalRequest;
      if (v.detail) rec.rejectDetail = v.detail;
      return sendAwsError(res, rec, v);
    }
    if (!rec.op) {
      return sendAwsError(res, rec, { status: 404, name: 'UnknownOperationException', message: null, ns: COMMON_NS });
    }

    if (rec.op === 'ListFoundationModels' || rec.op === 'ListInferenceProfiles') {
      counters.catalog++;
      rec.answered = 'catalog';
      const query = parseQuery(qs);
      if (rec.op === 'ListFoundationModels') {
        let list = foundationModelSummaries(region);
        if (query.byProvider) list = list.filter((x) => x.providerName.toLowerCase() === String(query.byProvider).toLowerCase());
        if (query.byOutputModality) list = list.filter((x) => x.outputModalities.includes(query.byOutputModality));
        if (query.byInferenceType) list = list.filter((x) => x.inferenceTypesSupported.includes(query.byInferenceType));
        if (query.byCustomizationType) list = list.filter((x) => x.customizationsSupported.includes(query.byCustomizationType));
        return sendJson(res, rec, 200, { modelSummaries: list });
      }
      let all = inferenceProfileSummaries(region, accountId);
      if (query.typeEquals && query.typeEquals !== 'SYSTEM_DEFINED') all = [];
      let max = pageSize;
      if (query.maxResults !== undefined) {
        const n = Number(query.maxResults);
        if (!Number.isInteger(n) || n < 1 || n > 1000) {
          return sendAwsError(res, rec, { status: 400, name: 'ValidationException', message: `1 validation error detected: Value '${query.maxResults}' at 'maxResults' failed to satisfy constraint: Member must have value less than or equal to 1000`, ns: BEDROCK_NS });
        }
        max = Math.min(n, pageSize);
      }
      let offset = 0;
      if (query.nextToken !== undefined) {
        const t = /^fake-page:(\d+)$/.exec(Buffer.from(String(query.nextToken), 'base64').toString('utf8'));
        if (!t || Number(t[1]) >= all.length) {
          return sendAwsError(res, rec, { status: 400, name: 'ValidationException', message: 'Invalid pagination token.', ns: BEDROCK_NS });
        }
        offset = Number(t[1]);
      }
      const page = all.slice(offset, offset + max);
      const out = { inferenceProfileSummaries: page };
      if (offset + max < all.length) out.nextToken = Buffer.from(`fake-page:${offset + max}`).toString('base64');
      rec.page = { offset, size: page.length };
      return sendJson(res, rec, 200, out);
    }

    // Runtime.
    counters.runtime++;
    const script = parseScript(rec.modelId, DEFAULT_BEDROCK_MODEL);
    rec.script = script;
    const stream = rec.op === 'InvokeModelWithResponseStream' || rec.op === 'ConverseStream';
    const converse = rec.op === 'Converse' || rec.op === 'ConverseStream';

    if (script.slowMs) await later(script.slowMs);
    if (rec.closed) return;
    if (script.hang) {
      rec.answered = 'hang';
      return; // never answers
    }
    if (script.fail) {
      const known = BEDROCK_ERRORS[script.fail];
      const [status, message] = known || [script.failStatus || 400, `${script.fail} (scripted)`];
      const extra = {};
      if (script.fail === 'ModelErrorException') {
        extra.originalStatusCode = script.failStatus || 500;
        extra.resourceName = `arn:aws:sagemaker:${region}:${accountId}:endpoint/fake-endpoint`;
      }
      return sendAwsError(res, rec, { status: script.failStatus && !known ? script.failStatus : status, name: script.fail, message, ns: BEDROCK_NS, extra });
    }

    let body = null;
    try {
      body = JSON.parse(rawBody.toString('utf8'));
    } catch {
      body = undefined;
    }
    rec.body = body ?? null;
    if (body === undefined) {
      return sendAwsError(res, rec, { status: 400, name: 'ValidationException', message: 'Malformed input request, please reformat your input and try again.', ns: BEDROCK_NS });
    }
    const family = bedrockFamily(script.id);
    if (!family && !converse) {
      return sendAwsError(res, rec, { status: 400, name: 'ValidationException', message: 'The provided model identifier is invalid.', ns: BEDROCK_NS });
    }
    if (!family && converse) {
      return sendAwsError(res, rec, { status: 400, name: 'ValidationException', message: 'The provided model identifier is invalid.', ns: BEDROCK_NS });
    }
    if (converse && (family === 'titan-embed' || family === 'cohere-embed')) {
      return sendAwsError(res, rec, { status: 400, name: 'ValidationException', message: "This action doesn't support the model that you provided. Try again with a supported text or chat model.", ns: BEDROCK_NS });
    }
    if (rec.op === 'InvokeModelWithResponseStream' && (family === 'titan-embed' || family === 'cohere-embed' || family === 'ai21')) {
      return sendAwsError(res, rec, { status: 400, name: 'ValidationException', message: 'The model is unsupported for streaming', ns: BEDROCK_NS });
    }
    const plan = planBedrock(rec.op, family, body);
    if (plan.error) return sendAwsError(res, rec, { status: 400, ns: BEDROCK_NS, ...plan.error });
    if (script.drip) plan.output = plan.embed ? 0 : script.drip.n;
    rec.plan = plan;
    const text = wordsOut(plan.output);

    if (!stream) {
      if (script.drip) await later(script.drip.n * script.drip.ms);
      if (rec.closed) return;
      const latency = Date.now() - start;
      rec.answered = converse ? 'converse' : 'invoke';
      rec.textSent = plan.embed ? '' : text;
      rec.usage = usageRecord(plan);
      if (converse) {
        return sendJson(res, rec, 200, {
          metrics: { latencyMs: latency },
          output: { message: { content: [{ text }], role: 'assistant' } },
          stopReason: plan.maxGiven ? 'max_tokens' : 'end_turn',
          usage: converseUsage(plan),
        });
      }
      const headers = {
        'X-Amzn-Bedrock-Invocation-Latency': String(latency),
        'X-Amzn-Bedrock-Input-Token-Count': String(plan.input),
      };
      if (!plan.embed) headers['X-Amzn-Bedrock-Output-Token-Count'] = String(plan.output);
      if (plan.cacheRead) headers['X-Amzn-Bedrock-Cache-Read-Input-Token-Count'] = String(plan.cacheRead);
      if (plan.cacheWrite) headers['X-Amzn-Bedrock-Cache-Write-Input-Token-Count'] = String(plan.cacheWrite);
      return sendJson(res, rec, 200, nativeResponse(plan, script.id, body, text), headers);
    }

    // Streaming.
    rec.answered = 'stream';
    rec.status = 200;
    const headers = {
      'Content-Type': 'application/vnd.amazon.eventstream',
      'x-amzn-RequestId': requestId(),
      Date: new Date().toUTCString(),
    };
    if (!converse) headers['X-Amzn-Bedrock-Content-Type'] = 'application/json';
    writeHead(res, 200, headers);
    if (!isH2(res)) res.flushHeaders();
    const s = streamer(res, rec);
    const firstByte = Date.now() - start;

    let deltas;
    if (script.drip) deltas = pieces(plan.output, plan.output);
    else deltas = pieces(plan.output, 5);
    const nDeltas = script.midstream ? Math.min(2, deltas.length) : script.cut !== null ? Math.min(script.cut, deltas.length) : deltas.length;
    const deltaWords = (t) => t.split(/\s+/).filter(Boolean).length;

    const chunkFrame = (obj) => eventFrame('chunk', { bytes: Buffer.from(JSON.stringify(obj)).toString('base64'), p: pad() });
    const cEvent = (type, obj) => eventFrame(type, { ...obj, p: pad() });

    let native = null;
    if (converse) {
      if (!s.write(cEvent('messageStart', { role: 'assistant' }))) return;
    } else {
      native = nativeStream(plan, script.id, body);
      for (const h of native.head) if (!s.write(chunkFrame(h))) return;
    }
    for (let i = 0; i < nDeltas; i++) {
      if (script.drip && script.drip.ms > 0) await later(script.drip.ms);
      const t = deltas[i];
      const ok = converse
        ? s.write(cEvent('contentBlockDelta', { contentBlockIndex: 0, delta: { text: t } }))
        : s.write(chunkFrame(native.delta(t, deltaWords(t))));
      if (!ok) return;
      rec.eventsSent++;
      rec.textSent += t;
    }
    if (script.midstream) {
      const type = script.midstream.charAt(0).toLowerCase() + script.midstream.slice(1);
      const payload = { message: BEDROCK_STREAM_EXCEPTIONS[type] || `${type} (scripted)` };
      if (type === 'modelStreamErrorException') {
        payload.originalStatusCode = 500;
        payload.originalMessage = 'Internal error in the model container.';
      }
      rec.answered = 'midstream';
      rec.errorName = type;
      rec.errorMessage = payload.message;
      rec.usage = null;
      s.write(exceptionFrame(type, payload));
      s.end();
      return;
    }
    if (script.cut !== null) return s.cut(later);
    const latency = Date.now() - start;
    if (converse) {
      if (!s.write(cEvent('contentBlockStop', { contentBlockIndex: 0 }))) return;
      if (!s.write(cEvent('messageStop', { stopReason: plan.maxGiven ? 'max_tokens' : 'end_turn' }))) return;
      if (!s.write(cEvent('metadata', { metrics: { latencyMs: latency }, usage: converseUsage(plan) }))) return;
    } else {
      for (const t of native.tail(invocationMetrics(plan, latency, firstByte))) if (!s.write(chunkFrame(t))) return;
    }
    rec.usage = usageRecord(plan);
    s.end();
  }

  return {
    url: fake.server.url,
    port: fake.server.port,
    region,
    requests: fake.requests,
    counters,
    bearerTokens,
    /** Records of one op (or all), optionally for one model id. */
    calls(op, modelId) {
      return fake.requests.filter((r) => (!op || r.op === op) && (!modelId || r.modelId === modelId));
    },
    last(op) {
      const list = op ? fake.requests.filter((r) => r.op === op) : fake.requests;
      return list[list.length - 1];
    },
    reset() {
      fake.requests.length = 0;
      counters.catalog = 0;
      counters.runtime = 0;
      counters.rejected = 0;
    },
    close: () => fake.close(),
  };
}

// ---------------------------------------------------------------------------
// SageMaker runtime

export const SAGEMAKER_ERRORS = Object.freeze({
  ValidationError: [400, 'Endpoint not found or invalid request.'],
  ServiceUnavailable: [503, 'The service is unavailable. Try your request again.'],
  ThrottlingException: [400, null],
  InternalFailure: [500, 'An internal failure occurred. Try your request again.'],
  InternalDependencyException: [530, 'An internal dependency failed. Try your request again.'],
  ModelNotReadyException: [429, 'Model is not ready for inference. Wait and try your request again.'],
  ModelError: [424, null],
});

// Deterministic "arbitrary" part sizes for splitting streamed bytes.
const PART_SIZES = [5, 17, 2, 31, 9, 64, 13, 1, 40];

function splitBytes(buf, offset = 0) {
  const parts = [];
  let i = 0;
  let k = offset;
  while (i < buf.length) {
    const n = PART_SIZES[k++ % PART_SIZES.length];
    parts.push(buf.subarray(i, i + n));
    i += n;
  }
  return parts;
}

function containerKind(name) {
  if (name.startsWith('tgi-')) return 'tgi';
  if (name.startsWith('jumpstart-')) return 'jumpstart';
  if (name.startsWith('vllm-')) return 'vllm';
  if (name.startsWith('lmi-')) return 'lmi';
  return null;
}

/**
 * What the container answers: { status, contentType, events: [string] (SSE
 * lines; streamed) | body: string, usage | null, text } or
 * { containerError: { status, message } }.
 */
function containerAnswer(kind, endpoint, body, { drip } = {}) {
  const bad = (message, status = 422) => ({ containerError: { status, message } });
  if (!body || typeof body !== 'object' || Array.isArray(body)) return bad(JSON.stringify({ error: 'Failed to deserialize the JSON body into the target type', error_type: 'validation' }));
  const created = Math.floor(Date.now() / 1000);
  const chat = Array.isArray(body.messages);
  if (kind === 'jumpstart') {
    const inputs = body.text_inputs ?? body.inputs;
    if (inputs === undefined) return bad(JSON.stringify({ code: 400, type: 'InternalServerException', message: "'text_inputs'" }), 400);
    const texts = [].concat(inputs).map(String);
    const embedding = body.mode === 'embedding' || endpoint.includes('embed');
    if (embedding) {
      return { contentType: 'application/json', body: JSON.stringify({ embedding: texts.map((t, i) => embeddingVector(384, countWords([t]) + i)) }), usage: null, text: '' };
    }
    const n = drip ? drip.n : outputTokensFor(body.max_new_tokens ?? body.parameters?.max_new_tokens);
    const text = wordsOut(n);
    return { contentType: 'application/json', body: JSON.stringify({ generated_text: text }), usage: null, text };
  }
  if (chat) {
    const texts = [];
    messagesTexts(body.messages, texts);
    const input = inputTokensFor(texts);
    const max = body.max_tokens ?? body.max_completion_tokens;
    const output = drip ? drip.n : outputTokensFor(max);
    const maxGiven = typeof max === 'number' && max <= MAX_OUTPUT;
    const text = wordsOut(output);
    const model = kind === 'tgi' ? 'tgi' : body.model || endpoint;
    const usage = { prompt_tokens: input, completion_tokens: output, total_tokens: input + output };
    const finish = maxGiven ? 'length' : 'stop';
    const id = kind === 'tgi' ? '' : `chatcmpl-${hex(12)}`;
    const fp = kind === 'tgi' ? '2.4.1-sha-d2ed52f' : undefined;
    if (!body.stream) {
      const c = {
        id,
        object: 'chat.completion',
        created,
        model,
        ...(fp ? { system_fingerprint: fp } : {}),
        choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: null, finish_reason: finish }],
        usage,
      };
      return { contentType: 'application/json', body: JSON.stringify(c), usage: { input, output, cacheRead: 0, cacheWrite: 0 }, text };
    }
    const sse = kind === 'tgi' ? (o) => `data:${typeof o === 'string' ? o : JSON.stringify(o)}\n\n` : (o) => `data: ${typeof o === 'string' ? o : JSON.stringify(o)}\n\n`;
    const includeUsage = !!body.stream_options?.include_usage;
    const chunk = (delta, fin) => ({
      id,
      object: 'chat.completion.chunk',
      created,
      model,
      ...(fp ? { system_fingerprint: fp } : {}),
      choices: [{ index: 0, delta, logprobs: null, finish_reason: fin }],
      ...(includeUsage ? { usage: null } : {}),
    });
    const events = [];
    const ps = drip ? pieces(output, output) : pieces(output, 5);
    events.push({ sse: sse(chunk({ role: 'assistant', content: '' }, null)) });
    for (const p of ps) events.push({ sse: sse(chunk({ content: p }, null)), content: p });
    events.push({ sse: sse(chunk({}, finish)) });
    if (includeUsage) events.push({ sse: sse({ id, object: 'chat.completion.chunk', created, model, choices: [], usage }) });
    events.push({ sse: sse('[DONE]') });
    return { contentType: 'text/event-stream', events, usage: includeUsage ? { input, output, cacheRead: 0, cacheWrite: 0 } : null, text };
  }
  // Prompt-style (TGI generate, LMI, vLLM completions).
  if (kind === 'vllm' && typeof body.prompt === 'string') {
    const input = inputTokensFor([body.prompt]);
    const max = body.max_tokens;
    const output = drip ? drip.n : outputTokensFor(max);
    const maxGiven = typeof max === 'number' && max <= MAX_OUTPUT;
    const text = wordsOut(output);
    const usage = { prompt_tokens: input, completion_tokens: output, total_tokens: input + output };
    return {
      contentType: 'application/json',
      body: JSON.stringify({ id: `cmpl-${hex(12)}`, object: 'text_completion', created, model: body.model || endpoint, choices: [{ index: 0, text, logprobs: null, finish_reason: maxGiven ? 'length' : 'stop' }], usage }),
      usage: { input, output, cacheRead: 0, cacheWrite: 0 },
      text,
    };
  }
  if (typeof body.inputs !== 'string') {
    return bad(JSON.stringify({ error: 'Failed to deserialize the JSON body into the target type: missing field `inputs`', error_type: 'validation' }));
  }
  const params = body.parameters || {};
  const input = inputTokensFor([body.inputs]);
  const max = params.max_new_tokens;
  const output = drip ? drip.n : outputTokensFor(max);
  const maxGiven = typeof max === 'number' && max <= MAX_OUTPUT;
  const text = wordsOut(output);
  const finish = maxGiven ? 'length' : 'eos_token';
  const tokens = Array.from({ length: output }, (_, i) => ({ id: 1000 + i, text: i === 0 ? `w${i + 1}` : ` w${i + 1}`, logprob: -0.25, special: false }));
  const prefill = params.decoder_input_details
    ? Array.from({ length: input }, (_, i) => ({ id: i === 0 ? 1 : 2000 + i, text: i === 0 ? '<s>' : `p${i}`, logprob: i === 0 ? null : -1.5 }))
    : [];
  const usage = params.details ? { input: params.decoder_input_details ? input : null, output, cacheRead: 0, cacheWrite: 0 } : null;
  if (kind === 'lmi') {
    const r = { generated_text: text };
    if (params.details) r.details = { finish_reason: maxGiven ? 'length' : 'eos_token', generated_tokens: output, inputs: body.inputs, tokens };
    if (!body.stream) return { contentType: 'application/json', body: JSON.stringify(r), usage, text };
    // LMI streams JSON lines.
    const events = [];
    tokens.forEach((t, i) => {
      const line = { token: t, generated_text: null, details: null };
      if (i === tokens.length - 1) {
        line.generated_text = text;
        if (params.details) line.details = { finish_reason: r.details.finish_reason, generated_tokens: output, inputs: body.inputs };
      }
      events.push({ sse: `${JSON.stringify(line)}\n`, content: t.text });
    });
    return { contentType: 'application/jsonlines', events, usage, text };
  }
  // TGI.
  if (!body.stream) {
    const r = { generated_text: text };
    if (params.details) r.details = { finish_reason: finish, generated_tokens: output, seed: params.seed ?? null, prefill, tokens };
    return { contentType: 'application/json', body: JSON.stringify([r]), usage, text };
  }
  const events = [];
  tokens.forEach((t, i) => {
    const last = i === tokens.length - 1;
    const line = { index: i + 1, token: t, generated_text: last ? text : null, details: null };
    if (last && params.details) line.details = { finish_reason: finish, generated_tokens: output, seed: params.seed ?? null, input_length: input };
    events.push({ sse: `data:${JSON.stringify(line)}\n\n`, content: t.text });
  });
  return { contentType: 'text/event-stream', events, usage, text };
}

/**
 * Starts the fake SageMaker runtime.
 *   registry  Map accessKeyId -> { secretAccessKey, sessionToken, expiresAtMs, source }
 *   region    the region requests must be scoped to
 */
export async function startFakeSageMaker({ registry, region = 'us-east-1', accountId = ACCOUNT_ID } = {}) {
  if (!(registry instanceof Map)) throw new Error('startFakeSageMaker: registry must be a Map');
  const counters = { runtime: 0, rejected: 0 };
  const fake = await makeFake(handle);

  const smError = (res, rec, name, message, extra = {}, status) => {
    const [st, msg] = SAGEMAKER_ERRORS[name] || [status || 400, `${name} (scripted)`];
    const m = message !== undefined ? message : msg;
    if (name === 'ThrottlingException') {
      // What SageMaker really sends for throttling: 400, lowercase "message", often null.
      return sendAwsError(res, rec, { status: st, name, message: m, ns: COMMON_NS });
    }
    return sendAwsError(res, rec, { status: status || st, name, message: m, ns: SAGEMAKER_NS, extra, capitalMessage: true });
  };

  async function handle(req, res, rec, rawBody, later) {
    const [rawPath] = req.url.split('?');
    let m;
    if (req.method === 'POST' && (m = /^\/endpoints\/([^/]+)\/(invocations|invocations-response-stream)$/.exec(rawPath))) {
      rec.op = m[2] === 'invocations' ? 'InvokeEndpoint' : 'InvokeEndpointWithResponseStream';
      try {
        rec.endpointName = decodeURIComponent(m[1]);
      } catch {
        rec.endpointName = m[1];
      }
      rec.modelId = rec.endpointName;
    }
    const v = await verifyRequestAuth({
      method: req.method,
      rawUrl: req.url,
      headers: req.headers,
      body: rawBody,
      registry,
      region,
      service: 'sagemaker',
      bearerTokens: null,
    });
    rec.auth = v.auth || null;
    rec.accessKeyId = v.accessKeyId || null;
    if (!v.ok) {
      counters.rejected++;
      rec.rejected = `${v.status} ${v.name}: ${v.message}`;
      if (v.expectedCanonicalRequest) rec.expectedCanonicalRequest = v.expectedCanonicalRequest;
      if (v.detail) rec.rejectDetail = v.detail;
      return sendAwsError(res, rec, v);
    }
    if (!rec.op) return sendAwsError(res, rec, { status: 404, name: 'UnknownOperationException', message: null, ns: COMMON_NS });
    counters.runtime++;
    const stream = rec.op === 'InvokeEndpointWithResponseStream';
    const script = parseScript(rec.endpointName, DEFAULT_SAGEMAKER_ENDPOINT);
    rec.script = script;
    const name = script.id;
    const kind = containerKind(name);
    rec.container = kind;
    rec.customAttributes = req.headers['x-amzn-sagemaker-custom-attributes'] ?? null;
    rec.targetVariant = req.headers['x-amzn-sagemaker-target-variant'] ?? null;
    rec.inferenceComponent = req.headers['x-amzn-sagemaker-inference-component'] ?? null;

    if (script.slowMs) await later(script.slowMs);
    if (rec.closed) return;
    if (script.hang) {
      rec.answered = 'hang';
      return;
    }
    if (script.fail) {
      if (script.fail === 'ModelError') {
        const orig = script.failStatus || 400;
        const originalMessage = JSON.stringify({ error: 'Input validation error: `inputs` must have less than 4096 tokens.', error_type: 'validation' });
        const logGroup = `/aws/sagemaker/Endpoints/${rec.endpointName}`;
        const extra = {
          OriginalStatusCode: orig,
          OriginalMessage: originalMessage,
          LogStreamArn: `arn:aws:logs:${region}:${accountId}:log-group:${logGroup}`,
        };
        if (orig < 500) extra.ErrorCode = 'CLIENT_ERROR_FROM_MODEL';
        const message = `Received ${orig < 500 ? 'client' : 'server'} error (${orig}) from primary with message "${originalMessage}". See https://${region}.console.aws.amazon.com/cloudwatch/home?region=${region}#logEventViewer:group=${logGroup} in account ${accountId} for more information.`;
        return smError(res, rec, 'ModelError', message, extra);
      }
      return smError(res, rec, script.fail, undefined, {}, SAGEMAKER_ERRORS[script.fail] ? undefined : script.failStatus);
    }
    if (!kind) {
      return smError(res, rec, 'ValidationError', `Endpoint ${rec.endpointName} of account ${accountId} not found.`);
    }
    const ct = String(req.headers['content-type'] || '');
    let body;
    try {
      body = JSON.parse(rawBody.toString('utf8'));
    } catch {
      body = undefined;
    }
    rec.body = body ?? null;
    const ans = body === undefined
      ? { containerError: { status: 415, message: JSON.stringify({ error: `Expected request with \`Content-Type: application/json\` (got ${ct || 'none'})`, error_type: 'validation' }) } }
      : containerAnswer(kind, name, body, { drip: script.drip });
    if (ans.containerError) {
      const { status: orig, message: originalMessage } = ans.containerError;
      const logGroup = `/aws/sagemaker/Endpoints/${rec.endpointName}`;
      return smError(res, rec, 'ModelError', `Received client error (${orig}) from primary with message "${originalMessage}". See https://${region}.console.aws.amazon.com/cloudwatch/home?region=${region}#logEventViewer:group=${logGroup} in account ${accountId} for more information.`, {
        ErrorCode: 'CLIENT_ERROR_FROM_MODEL',
        OriginalStatusCode: orig,
        OriginalMessage: originalMessage,
        LogStreamArn: `arn:aws:logs:${region}:${accountId}:log-group:${logGroup}`,
      });
    }
    rec.text = ans.text;
    const common = {
      'x-amzn-RequestId': requestId(),
      'x-Amzn-Invoked-Production-Variant': rec.targetVariant || 'AllTraffic',
      Date: new Date().toUTCString(),
    };
    if (rec.customAttributes != null) common['X-Amzn-SageMaker-Custom-Attributes'] = rec.customAttributes;

    if (!stream) {
      if (script.drip) await later(script.drip.n * script.drip.ms);
      if (rec.closed) return;
      const out = ans.events ? ans.events.map((e) => e.sse).join('') : ans.body;
      rec.answered = 'invoke';
      rec.usage = ans.usage;
      rec.textSent = ans.text;
      writeHead(res, 200, { 'Content-Type': ans.contentType, 'Content-Length': Buffer.byteLength(out), ...common });
      res.end(out);
      rec.status = 200;
      rec.finished = true;
      return;
    }

    rec.answered = 'stream';
    rec.status = 200;
    writeHead(res, 200, {
      'Content-Type': 'application/vnd.amazon.eventstream',
      'X-Amzn-SageMaker-Content-Type': ans.contentType,
      ...common,
    });
    if (!isH2(res)) res.flushHeaders();
    const s = streamer(res, rec);
    const part = (bytes) => eventFrame('PayloadPart', bytes, 'application/octet-stream');
    if (!ans.events) {
      // A non-streaming container answer, passed on in parts.
      for (const p of splitBytes(Buffer.from(ans.body))) if (!s.write(part(p))) return;
      rec.usage = ans.usage;
      rec.textSent = ans.text;
      s.end();
      return;
    }
    const contentEvents = ans.events.filter((e) => e.content !== undefined).length;
    const limit = script.midstream ? 2 : script.cut !== null ? script.cut : Infinity;
    const chosen = [];
    let contentSeen = 0;
    for (const e of ans.events) {
      if (e.content !== undefined) {
        if (contentSeen >= limit) break;
        contentSeen++;
      }
      chosen.push(e);
    }
    const account = (e) => {
      if (e.content === undefined) return;
      rec.eventsSent++;
      rec.textSent += e.content;
    };
    if (script.drip) {
      // One part per event, spaced out.
      for (const e of chosen) {
        if (script.drip.ms > 0 && e.content !== undefined) await later(script.drip.ms);
        if (!s.write(part(Buffer.from(e.sse)))) return;
        account(e);
      }
    } else {
      // All at once, split across parts at arbitrary byte positions, so
      // events straddle parts as they do from real endpoints.
      const all = Buffer.from(chosen.map((e) => e.sse).join(''));
      for (const p of splitBytes(all)) if (!s.write(part(p))) return;
      chosen.forEach(account);
    }
    if (script.midstream) {
      const type = script.midstream;
      rec.answered = 'midstream';
      rec.errorName = type;
      rec.usage = null;
      const payload = type === 'ModelStreamError'
        ? { Message: 'Your model stream ran into an error.', ErrorCode: 'ModelStreamError' }
        : { Message: `${type} (scripted)` };
      rec.errorMessage = payload.Message;
      s.write(exceptionFrame(type, payload));
      s.end();
      return;
    }
    if (script.cut !== null && script.cut < contentEvents) return s.cut(later);
    rec.usage = ans.usage;
    s.end();
  }

  return {
    url: fake.server.url,
    port: fake.server.port,
    region,
    requests: fake.requests,
    counters,
    calls(op, endpointName) {
      return fake.requests.filter((r) => (!op || r.op === op) && (!endpointName || r.endpointName === endpointName));
    },
    last(op) {
      const list = op ? fake.requests.filter((r) => r.op === op) : fake.requests;
      return list[list.length - 1];
    },
    reset() {
      fake.requests.length = 0;
      counters.runtime = 0;
      counters.rejected = 0;
    },
    close: () => fake.close(),
  };
}

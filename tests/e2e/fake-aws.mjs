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
//   inband.<n>.<rest>              SageMaker streams: n content events, then the
//                                  container's own in-band error event (TGI's
//                                  {"error", "error_type": "generation"}) and
//                                  a clean end, no [DONE]; usage recorded as null
//   ic.<a>[_<b>...].<rest>         SageMaker: the endpoint has these inference
//                                  components (the header is then required)
// <rest> defaults to anthropic.claude-3-5-sonnet-20240620-v1:0 (Bedrock) or
// tgi-default (SageMaker).
//
// Bedrock native bodies are checked per model family the way the models'
// schemas answer (ValidationException "Malformed input request: #/...");
// embeddings are deterministic (fakeEmbedding), images are a 1x1 PNG, image
// models report no token counts. Converse with a toolConfig calls a tool when
// the last user text names it or says "weather" (see pickTool) and checks
// toolResult turns like Bedrock. tests/e2e/README.md has the details.

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

/** Splits a string into at most k non-empty consecutive pieces. */
function splitString(str, k) {
  const count = Math.max(1, Math.min(k, str.length));
  const size = Math.ceil(str.length / count);
  const out = [];
  for (let i = 0; i < str.length; i += size) out.push(str.slice(i, i + size));
  return out.length ? out : [''];
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

// ---------------------------------------------------------------------------
// Body validation, the way Bedrock's per-model JSON schemas answer (everit
// style: "#/path: message", violations concatenated, wrapped in "Malformed
// input request: ..., please reformat your input and try again.").

const SCHEMA_TYPE = { string: 'String', integer: 'Integer', number: 'Number', boolean: 'Boolean', object: 'JSONObject', array: 'JSONArray' };

function jsonTypeName(v) {
  if (v === null) return 'Null';
  if (Array.isArray(v)) return 'JSONArray';
  if (typeof v === 'string') return 'String';
  if (typeof v === 'boolean') return 'Boolean';
  if (typeof v === 'number') return Number.isInteger(v) ? 'Integer' : 'BigDecimal';
  if (typeof v === 'object') return 'JSONObject';
  return 'Unknown';
}

function typeMatches(type, v) {
  switch (type) {
    case 'string': return typeof v === 'string';
    case 'integer': return Number.isInteger(v);
    case 'number': return typeof v === 'number' && Number.isFinite(v);
    case 'boolean': return typeof v === 'boolean';
    case 'object': return v !== null && typeof v === 'object' && !Array.isArray(v);
    case 'array': return Array.isArray(v);
    default: return true;
  }
}

/**
 * Checks `v` against a small JSON schema ({type, required, properties,
 * additional: false, enum, minimum, maximum, minLength, maxLength, minItems,
 * maxItems, items}); pushes everit-style violations onto `out`.
 */
export function schemaViolations(schema, v, at = '#', out = []) {
  if (schema.type && !typeMatches(schema.type, v)) {
    out.push(`${at}: expected type: ${SCHEMA_TYPE[schema.type]}, found: ${jsonTypeName(v)}`);
    return out;
  }
  if (schema.enum && !schema.enum.includes(v)) out.push(`${at}: ${v} is not a valid enum value`);
  if (typeof v === 'number') {
    if (schema.minimum !== undefined && v < schema.minimum) out.push(`${at}: ${v} is not greater or equal to ${schema.minimum}`);
    if (schema.maximum !== undefined && v > schema.maximum) out.push(`${at}: ${v} is not less or equal to ${schema.maximum}`);
  }
  if (typeof v === 'string') {
    if (schema.minLength !== undefined && v.length < schema.minLength) out.push(`${at}: expected minLength: ${schema.minLength}, actual: ${v.length}`);
    if (schema.maxLength !== undefined && v.length > schema.maxLength) out.push(`${at}: expected maxLength: ${schema.maxLength}, actual: ${v.length}`);
  }
  if (Array.isArray(v)) {
    if (schema.minItems !== undefined && v.length < schema.minItems) out.push(`${at}: expected minimum item count: ${schema.minItems}, found: ${v.length}`);
    if (schema.maxItems !== undefined && v.length > schema.maxItems) out.push(`${at}: expected maximum item count: ${schema.maxItems}, found: ${v.length}`);
    if (schema.items) v.forEach((x, i) => schemaViolations(schema.items, x, `${at}/${i}`, out));
  }
  if (typeMatches('object', v)) {
    for (const k of schema.required || []) if (!(k in v)) out.push(`${at}: required key [${k}] not found`);
    if (schema.properties && schema.additional === false) {
      for (const k of Object.keys(v)) if (!(k in schema.properties)) out.push(`${at}: extraneous key [${k}] is not permitted`);
    }
    for (const [k, sub] of Object.entries(schema.properties || {})) if (k in v) schemaViolations(sub, v[k], `${at}/${k}`, out);
  }
  return out;
}

export function malformed(violations) {
  return `Malformed input request: ${violations.join('')}, please reformat your input and try again.`;
}

// ---------------------------------------------------------------------------
// Deterministic vectors and images

/**
 * A deterministic embedding of `text`: `dims` floats derived from SHA-256 of
 * the text (same text, same vector), unit length when `normalize`.
 */
export function fakeEmbedding(text, dims, { normalize = false } = {}) {
  const v = [];
  for (let block = 0; v.length < dims; block++) {
    const h = createHash('sha256').update(`${String(text)}\u0000${block}`).digest();
    for (let o = 0; o + 4 <= h.length && v.length < dims; o += 4) v.push(h.readInt32BE(o) / 2147483648);
  }
  let out = v;
  if (normalize) {
    const norm = Math.sqrt(v.reduce((s, x) => s + x * x, 0)) || 1;
    out = v.map((x) => x / norm);
  }
  return out.map((x) => Number(x.toFixed(7)));
}

function int8Of(vec) {
  return vec.map((x) => Math.max(-128, Math.min(127, Math.round(x * 127))));
}

function bitsOf(vec) {
  return vec.map((x) => (x > 0 ? 1 : 0));
}

function packedBits(vec, signed) {
  const out = [];
  for (let i = 0; i < vec.length; i += 8) {
    let b = 0;
    for (let j = 0; j < 8; j++) b = (b << 1) | (vec[i + j] > 0 ? 1 : 0);
    out.push(signed ? b - 128 : b);
  }
  return out;
}

/** A valid 1x1 RGBA PNG (real signature, IHDR, IDAT, IEND), base64. */
export const TINY_PNG_BASE64 = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==';

/** 'png' | 'jpeg' | 'gif' | 'webp' | null, from the magic bytes of base64 data. */
export function sniffImage(b64) {
  if (typeof b64 !== 'string' || b64.length === 0) return null;
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(b64.replace(/\s+/g, ''))) return null;
  const b = Buffer.from(b64, 'base64');
  if (b.length >= 8 && b.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]))) return 'png';
  if (b.length >= 3 && b[0] === 0xff && b[1] === 0xd8 && b[2] === 0xff) return 'jpeg';
  if (b.length >= 6 && /^GIF8[79]a$/.test(b.toString('latin1', 0, 6))) return 'gif';
  if (b.length >= 12 && b.toString('latin1', 0, 4) === 'RIFF' && b.toString('latin1', 8, 12) === 'WEBP') return 'webp';
  return null;
}

// Region prefixes of cross-region inference profile ids.
const REGION_PREFIX = /^(us|eu|apac|global|us-gov|jp|au|ca)\./;

/** The model family of a Bedrock model id / ARN. */
export function bedrockFamily(modelId) {
  let id = String(modelId);
  if (id.startsWith('arn:')) {
    const l = id.toLowerCase();
    if (l.includes('titan-embed-image')) return 'titan-embed-image';
    if (l.includes('titan-image')) return 'titan-image';
    if (l.includes('stable-diffusion') || l.includes('stability.')) return 'stability';
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
  if (id.startsWith('amazon.titan-embed-image')) return 'titan-embed-image';
  if (id.startsWith('amazon.titan-embed')) return 'titan-embed';
  if (id.startsWith('amazon.titan-image-generator')) return 'titan-image';
  if (id.startsWith('stability.stable-diffusion-xl')) return 'stability';
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
  const s = { fail: null, midstream: null, slowMs: 0, hang: false, drip: null, cut: null, inband: null, components: null, id: name };
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
    if ((m = /^inband\.(\d+)\.(.+)$/.exec(rest))) {
      s.inband = Number(m[1]);
      rest = m[2];
      continue;
    }
    if ((m = /^cut\.(\d+)\.(.+)$/.exec(rest))) {
      s.cut = Number(m[1]);
      rest = m[2];
      continue;
    }
    // SageMaker: an endpoint with inference components (names joined by '_',
    // which component names cannot contain).
    if ((m = /^ic\.([A-Za-z0-9_-]+)\.(.+)$/.exec(rest))) {
      s.components = m[1].split('_').filter(Boolean);
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
  ['anthropic.claude-3-sonnet-20240229-v1:0', 'Claude 3 Sonnet', 'Anthropic', ['TEXT', 'IMAGE'], ['TEXT'], true, [], ['ON_DEMAND'], 'LEGACY'],
  ['anthropic.claude-v2:1', 'Claude', 'Anthropic', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'LEGACY'],
  ['anthropic.claude-v2', 'Claude', 'Anthropic', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'LEGACY'],
  ['anthropic.claude-instant-v1', 'Claude Instant', 'Anthropic', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'LEGACY'],
  ['amazon.nova-pro-v1:0', 'Nova Pro', 'Amazon', ['TEXT', 'IMAGE', 'VIDEO'], ['TEXT'], true, [], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['amazon.nova-lite-v1:0', 'Nova Lite', 'Amazon', ['TEXT', 'IMAGE', 'VIDEO'], ['TEXT'], true, ['FINE_TUNING', 'DISTILLATION'], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['amazon.titan-text-express-v1', 'Titan Text G1 - Express', 'Amazon', ['TEXT'], ['TEXT'], true, ['FINE_TUNING', 'CONTINUED_PRE_TRAINING'], ['ON_DEMAND'], 'ACTIVE'],
  ['amazon.titan-embed-text-v2:0', 'Titan Text Embeddings V2', 'Amazon', ['TEXT'], ['EMBEDDING'], false, [], ['ON_DEMAND'], 'ACTIVE'],
  ['amazon.titan-embed-text-v1', 'Titan Embeddings G1 - Text', 'Amazon', ['TEXT'], ['EMBEDDING'], false, [], ['ON_DEMAND'], 'ACTIVE'],
  ['amazon.titan-embed-image-v1', 'Titan Multimodal Embeddings G1', 'Amazon', ['TEXT', 'IMAGE'], ['EMBEDDING'], false, ['FINE_TUNING'], ['ON_DEMAND'], 'ACTIVE'],
  ['amazon.titan-image-generator-v1', 'Titan Image Generator G1', 'Amazon', ['TEXT', 'IMAGE'], ['IMAGE'], false, ['FINE_TUNING'], ['ON_DEMAND'], 'LEGACY'],
  ['amazon.titan-image-generator-v2:0', 'Titan Image Generator G1 v2', 'Amazon', ['TEXT', 'IMAGE'], ['IMAGE'], false, ['FINE_TUNING'], ['ON_DEMAND'], 'ACTIVE'],
  ['stability.stable-diffusion-xl-v1', 'SDXL 1.0', 'Stability AI', ['TEXT', 'IMAGE'], ['IMAGE'], false, [], ['ON_DEMAND'], 'LEGACY'],
  ['meta.llama3-1-8b-instruct-v1:0', 'Llama 3.1 8B Instruct', 'Meta', ['TEXT'], ['TEXT'], true, ['FINE_TUNING'], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['meta.llama3-1-70b-instruct-v1:0', 'Llama 3.1 70B Instruct', 'Meta', ['TEXT'], ['TEXT'], true, ['FINE_TUNING'], ['ON_DEMAND', 'INFERENCE_PROFILE'], 'ACTIVE'],
  ['meta.llama3-2-11b-instruct-v1:0', 'Llama 3.2 11B Instruct', 'Meta', ['TEXT', 'IMAGE'], ['TEXT'], true, [], ['INFERENCE_PROFILE'], 'ACTIVE'],
  ['mistral.mistral-large-2402-v1:0', 'Mistral Large (24.02)', 'Mistral AI', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'ACTIVE'],
  ['mistral.mistral-7b-instruct-v0:2', 'Mistral 7B Instruct', 'Mistral AI', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'ACTIVE'],
  ['cohere.command-r-plus-v1:0', 'Command R+', 'Cohere', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'ACTIVE'],
  ['cohere.command-text-v14', 'Command', 'Cohere', ['TEXT'], ['TEXT'], true, [], ['ON_DEMAND'], 'LEGACY'],
  ['cohere.embed-english-v3', 'Embed English', 'Cohere', ['TEXT'], ['EMBEDDING'], false, [], ['ON_DEMAND'], 'ACTIVE'],
  ['cohere.embed-multilingual-v3', 'Embed Multilingual', 'Cohere', ['TEXT'], ['EMBEDDING'], false, [], ['ON_DEMAND'], 'ACTIVE'],
  ['ai21.j2-ultra-v1', 'Jurassic-2 Ultra', 'AI21 Labs', ['TEXT'], ['TEXT'], false, [], ['ON_DEMAND'], 'LEGACY'],
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

const NUM01 = { type: 'number', minimum: 0, maximum: 1 };
const STRINGS = { type: 'array', items: { type: 'string' } };

/** The bare model id of an id / ARN ("us.anthropic.x" -> "anthropic.x"). */
function baseModelId(modelId) {
  return String(modelId).split('/').pop().replace(REGION_PREFIX, '');
}

/** Which Anthropic APIs a model serves: Text Completions only up to Claude 2.1 / Instant. */
function anthropicApis(modelId) {
  const base = baseModelId(modelId);
  if (!base.startsWith('anthropic.')) return { text: true, messages: true }; // an opaque ARN
  return { text: /^anthropic\.claude-(v2|instant-v1)/.test(base), messages: true };
}

export const TITAN_IMAGE_SIZES = Object.freeze([
  '1024x1024', '768x768', '512x512', '768x1152', '384x576', '1152x768', '576x384', '768x1280', '384x640',
  '1280x768', '640x384', '896x1152', '448x576', '1152x896', '576x448', '768x1408', '384x704', '1408x768',
  '704x384', '640x1408', '320x704', '1408x640', '704x320', '1152x640', '1173x640',
]);
export const SDXL_V1_DIMENSIONS = Object.freeze(['1024x1024', '1152x896', '1216x832', '1344x768', '1536x640', '640x1536', '768x1344', '832x1216', '896x1152']);
const SDXL_STYLES = ['3d-model', 'analog-film', 'anime', 'cinematic', 'comic-book', 'digital-art', 'enhance', 'fantasy-art', 'isometric', 'line-art', 'low-poly', 'modeling-compound', 'neon-punk', 'origami', 'photographic', 'pixel-art', 'tile-texture'];
const SDXL_SAMPLERS = ['DDIM', 'DDPM', 'K_DPMPP_2M', 'K_DPMPP_2S_ANCESTRAL', 'K_DPM_2', 'K_DPM_2_ANCESTRAL', 'K_EULER', 'K_EULER_ANCESTRAL', 'K_HEUN', 'K_LMS'];
const SDXL_CLIP = ['FAST_BLUE', 'FAST_GREEN', 'NONE', 'SIMPLE', 'SLOW', 'SLOWER', 'SLOWEST'];
export const COHERE_INPUT_TYPES = Object.freeze(['search_document', 'search_query', 'classification', 'clustering', 'image']);

/** The native body schema of a model (null: not checked key by key). */
function nativeSchema(family, modelId, body) {
  const id = baseModelId(modelId);
  switch (family) {
    case 'anthropic':
      if (Array.isArray(body.messages) || typeof body.prompt !== 'string') return null;
      return {
        type: 'object', required: ['prompt', 'max_tokens_to_sample'], additional: false,
        properties: {
          prompt: { type: 'string' }, max_tokens_to_sample: { type: 'integer', minimum: 0, maximum: 4096 },
          temperature: NUM01, top_p: NUM01, top_k: { type: 'integer', minimum: 0, maximum: 500 },
          stop_sequences: STRINGS, anthropic_version: { type: 'string' },
        },
      };
    case 'titan': {
      const limit = /titan-text-lite/.test(id) ? 4096 : /titan-text-premier/.test(id) ? 3072 : 8192;
      return {
        type: 'object', required: ['inputText'], additional: false,
        properties: {
          inputText: { type: 'string' },
          textGenerationConfig: {
            type: 'object', additional: false,
            properties: { maxTokenCount: { type: 'integer', minimum: 0, maximum: limit }, temperature: NUM01, topP: NUM01, stopSequences: STRINGS },
          },
        },
      };
    }
    case 'llama':
      return {
        type: 'object', required: ['prompt'], additional: false,
        properties: { prompt: { type: 'string' }, temperature: NUM01, top_p: NUM01, max_gen_len: { type: 'integer', minimum: 1, maximum: 2048 }, images: STRINGS },
      };
    case 'mistral':
      return {
        type: 'object', required: ['prompt'], additional: false,
        properties: {
          prompt: { type: 'string' }, max_tokens: { type: 'integer', minimum: 1, maximum: /mixtral/.test(id) ? 4096 : 8192 },
          stop: { type: 'array', maxItems: 10, items: { type: 'string' } }, temperature: NUM01, top_p: NUM01, top_k: { type: 'integer', minimum: 1, maximum: 200 },
        },
      };
    case 'cohere':
      return {
        type: 'object', required: ['prompt'], additional: false,
        properties: {
          prompt: { type: 'string' }, temperature: { type: 'number', minimum: 0, maximum: 5 }, p: NUM01, k: { type: 'integer', minimum: 0, maximum: 500 },
          max_tokens: { type: 'integer', minimum: 1, maximum: 4096 }, stop_sequences: { type: 'array', maxItems: 4, items: { type: 'string' } },
          return_likelihoods: { type: 'string', enum: ['GENERATION', 'ALL', 'NONE'] }, stream: { type: 'boolean' },
          num_generations: { type: 'integer', minimum: 1, maximum: 5 }, logit_bias: { type: 'object' }, truncate: { type: 'string', enum: ['NONE', 'START', 'END'] },
        },
      };
    case 'ai21':
      return {
        type: 'object', required: ['prompt'], additional: false,
        properties: {
          prompt: { type: 'string' }, maxTokens: { type: 'integer', minimum: 0, maximum: 8191 }, minTokens: { type: 'integer', minimum: 0 },
          temperature: NUM01, topP: NUM01, stopSequences: STRINGS, numResults: { type: 'integer', minimum: 1, maximum: 16 },
          countPenalty: { type: 'object' }, presencePenalty: { type: 'object' }, frequencyPenalty: { type: 'object' },
        },
      };
    case 'titan-embed':
      if (!/v2/.test(id) && baseModelId(modelId).startsWith('amazon.')) {
        return { type: 'object', required: ['inputText'], additional: false, properties: { inputText: { type: 'string' } } };
      }
      return {
        type: 'object', required: ['inputText'], additional: false,
        properties: {
          inputText: { type: 'string', maxLength: 50000 }, dimensions: { type: 'integer', enum: [256, 512, 1024] }, normalize: { type: 'boolean' },
          embeddingTypes: { type: 'array', minItems: 1, items: { type: 'string', enum: ['float', 'binary'] } },
        },
      };
    case 'titan-embed-image':
      return {
        type: 'object', additional: false,
        properties: {
          inputText: { type: 'string' }, inputImage: { type: 'string' },
          embeddingConfig: { type: 'object', required: ['outputEmbeddingLength'], additional: false, properties: { outputEmbeddingLength: { type: 'integer', enum: [256, 384, 1024] } } },
        },
      };
    case 'cohere-embed':
      return {
        type: 'object', required: ['input_type'], additional: false,
        properties: {
          texts: { type: 'array', minItems: 1, maxItems: 96, items: { type: 'string', maxLength: 2048 } },
          images: { type: 'array', minItems: 1, maxItems: 1, items: { type: 'string' } },
          input_type: { type: 'string', enum: [...COHERE_INPUT_TYPES] }, truncate: { type: 'string', enum: ['NONE', 'START', 'END'] },
          embedding_types: { type: 'array', minItems: 1, items: { type: 'string', enum: ['float', 'int8', 'uint8', 'binary', 'ubinary'] } },
        },
      };
    case 'titan-image':
      return {
        type: 'object', required: ['taskType'], additional: false,
        properties: {
          taskType: { type: 'string', enum: ['TEXT_IMAGE', 'INPAINTING', 'OUTPAINTING', 'IMAGE_VARIATION', ...(/v2/.test(id) ? ['COLOR_GUIDED_GENERATION', 'BACKGROUND_REMOVAL'] : [])] },
          textToImageParams: {
            type: 'object', required: ['text'], additional: false,
            properties: {
              text: { type: 'string', minLength: 1, maxLength: 512 }, negativeText: { type: 'string', minLength: 1, maxLength: 512 },
              ...(/v2/.test(id) ? { conditionImage: { type: 'string' }, controlMode: { type: 'string', enum: ['CANNY_EDGE', 'SEGMENTATION'] }, controlStrength: NUM01 } : {}),
            },
          },
          inPaintingParams: { type: 'object' }, outPaintingParams: { type: 'object' }, imageVariationParams: { type: 'object' },
          colorGuidedGenerationParams: { type: 'object' }, backgroundRemovalParams: { type: 'object' },
          imageGenerationConfig: {
            type: 'object', additional: false,
            properties: {
              numberOfImages: { type: 'integer', minimum: 1, maximum: 5 }, quality: { type: 'string', enum: ['standard', 'premium'] },
              height: { type: 'integer' }, width: { type: 'integer' }, cfgScale: { type: 'number', minimum: 1.1, maximum: 10 },
              seed: { type: 'integer', minimum: 0, maximum: 2147483646 },
            },
          },
        },
      };
    case 'stability':
      return {
        type: 'object', required: ['text_prompts'], additional: false,
        properties: {
          text_prompts: {
            type: 'array', minItems: 1,
            items: { type: 'object', required: ['text'], additional: false, properties: { text: { type: 'string', minLength: 1, maxLength: 2000 }, weight: { type: 'number' } } },
          },
          height: { type: 'integer', minimum: 128 }, width: { type: 'integer', minimum: 128 },
          cfg_scale: { type: 'number', minimum: 0, maximum: 35 }, clip_guidance_preset: { type: 'string', enum: SDXL_CLIP },
          sampler: { type: 'string', enum: SDXL_SAMPLERS }, samples: { type: 'integer', minimum: 1, maximum: 1 },
          seed: { type: 'integer', minimum: 0, maximum: 4294967295 }, steps: { type: 'integer', minimum: 10, maximum: 150 },
          style_preset: { type: 'string', enum: SDXL_STYLES }, extras: { type: 'object' },
        },
      };
    default:
      return null;
  }
}

// Largest Converse inferenceConfig.maxTokens per model (null: not checked).
function converseMaxTokens(family, modelId) {
  const id = baseModelId(modelId);
  switch (family) {
    case 'anthropic':
      if (/claude-(v2|instant)/.test(id)) return 4096;
      if (/claude-3-5-/.test(id)) return 8192;
      if (/claude-3-(haiku|sonnet|opus)/.test(id)) return 4096;
      if (/claude-3-7|claude-sonnet-4/.test(id)) return 64000;
      if (/claude-opus-4/.test(id)) return 32000;
      return null;
    case 'titan':
      return /titan-text-lite/.test(id) ? 4096 : /titan-text-premier/.test(id) ? 3072 : 8192;
    case 'llama':
      return 2048;
    case 'mistral':
      return /mixtral/.test(id) ? 4096 : 8192;
    case 'cohere':
      return 4096;
    case 'ai21':
      return 8191;
    default:
      return null;
  }
}

/** Whether Converse accepts a toolConfig for the model. */
function converseToolSupport(family, modelId) {
  const id = baseModelId(modelId);
  if (!/^[a-z0-9]+\./.test(id)) return true; // an opaque ARN
  switch (family) {
    case 'anthropic': return !/claude-(v2|instant)/.test(id);
    case 'nova': return true;
    case 'llama': return /llama3-[1-9]-|llama4/.test(id);
    case 'mistral': return /mistral-(large|small)|pixtral/.test(id);
    case 'cohere-r': return true;
    case 'jamba': return true;
    default: return false;
  }
}

function blocksOf(m) {
  return m && Array.isArray(m.content) ? m.content.filter((b) => b && typeof b === 'object') : [];
}

function smithyRange(value, path, op, bound) {
  return `1 validation error detected: Value '${value}' at '${path}' failed to satisfy constraint: Member must have value ${op} ${bound}`;
}

/**
 * Converse checks Bedrock makes before the model: roles, tool turns,
 * inferenceConfig. Returns an error message or null.
 */
function converseViolation(body, family, modelId) {
  const msgs = body.messages;
  for (let i = 0; i < msgs.length; i++) {
    const role = msgs[i]?.role;
    if (role !== 'user' && role !== 'assistant') {
      return `1 validation error detected: Value '${role}' at 'messages.${i + 1}.member.role' failed to satisfy constraint: Member must satisfy enum value set: [user, assistant]`;
    }
  }
  if (msgs[0].role !== 'user') return 'A conversation must start with a user message. Try again with a conversation that starts with a user message.';
  for (let i = 1; i < msgs.length; i++) {
    if (msgs[i].role === msgs[i - 1].role) {
      return 'A conversation must alternate between user and assistant roles. Make sure the conversation alternates between user and assistant roles and try again.';
    }
  }
  const ic = body.inferenceConfig || {};
  if (ic.maxTokens !== undefined) {
    if (ic.maxTokens < 1) return smithyRange(ic.maxTokens, 'inferenceConfig.maxTokens', 'greater than or equal to', 1);
    const limit = converseMaxTokens(family, modelId);
    if (limit && ic.maxTokens > limit) {
      return `The maximum tokens you requested exceeds the model limit of ${limit}. Try again with a maximum tokens value that is lower than ${limit}.`;
    }
  }
  if (ic.temperature !== undefined) {
    if (ic.temperature < 0) return smithyRange(ic.temperature, 'inferenceConfig.temperature', 'greater than or equal to', 0);
    if (ic.temperature > 1) return smithyRange(ic.temperature, 'inferenceConfig.temperature', 'less than or equal to', 1);
  }
  if (ic.topP !== undefined) {
    if (ic.topP < 0) return smithyRange(ic.topP, 'inferenceConfig.topP', 'greater than or equal to', 0);
    if (ic.topP > 1) return smithyRange(ic.topP, 'inferenceConfig.topP', 'less than or equal to', 1);
  }
  const toolBlocks = msgs.some((m) => blocksOf(m).some((b) => b.toolUse || b.toolResult));
  const tc = body.toolConfig;
  if (toolBlocks && !tc) return 'The toolConfig field must be defined when using toolUse and toolResult content blocks.';
  if (tc) {
    if (!Array.isArray(tc.tools) || tc.tools.length === 0) {
      return `1 validation error detected: Value '[]' at 'toolConfig.tools' failed to satisfy constraint: Member must have length greater than or equal to 1`;
    }
    if (!converseToolSupport(family, modelId)) return "This model doesn't support tool use.";
    const forced = tc.toolChoice?.tool?.name;
    if (forced !== undefined && !tc.tools.some((t) => t?.toolSpec?.name === forced)) {
      return `The tool ${forced} in toolChoice is not defined in toolConfig.tools. Try again with a tool name that is defined in toolConfig.tools.`;
    }
  }
  // Each toolResult answers a toolUse of the assistant turn just before it.
  for (let i = 0; i < msgs.length; i++) {
    if (msgs[i].role !== 'user') continue;
    const results = blocksOf(msgs[i]).filter((b) => b.toolResult).map((b) => b.toolResult.toolUseId);
    const prev = i > 0 ? blocksOf(msgs[i - 1]).filter((b) => b.toolUse).map((b) => b.toolUse.toolUseId) : [];
    if (results.length > prev.length) {
      return `The number of toolResult blocks at messages.${i}.content exceeds the number of toolUse blocks of previous turn.`;
    }
    const missing = prev.filter((id) => !results.includes(id));
    if (missing.length) return `Expected toolResult blocks at messages.${i}.content for the following Ids: ${missing.join(', ')}`;
  }
  return null;
}

/** A value satisfying a JSON schema, deterministically (tool inputs). */
export function sampleFromSchema(schema, name = 'value', depth = 0) {
  if (!schema || typeof schema !== 'object' || depth > 6) return `fake-${name}`;
  if (Array.isArray(schema.enum) && schema.enum.length) return schema.enum[0];
  if (schema.const !== undefined) return schema.const;
  const type = Array.isArray(schema.type) ? schema.type[0] : schema.type;
  switch (type) {
    case 'integer': return schema.minimum ?? 1;
    case 'number': return schema.minimum ?? 1.5;
    case 'boolean': return true;
    case 'null': return null;
    case 'array': return schema.items ? [sampleFromSchema(schema.items, name, depth + 1)] : [];
    case 'object': {
      const props = schema.properties || {};
      const keys = Array.isArray(schema.required) && schema.required.length ? schema.required : Object.keys(props);
      const o = {};
      for (const k of keys) o[k] = sampleFromSchema(props[k], k, depth + 1);
      return o;
    }
    default:
      return `fake-${name}`;
  }
}

/** The deterministic toolUseId the fake gives a tool call. */
export function toolUseIdFor(messages, name) {
  const h = createHash('sha256').update(JSON.stringify(messages)).update('\u0000').update(String(name)).digest('base64url');
  return `tooluse_${h.slice(0, 22)}`;
}

/**
 * Which tool (if any) the fake "model" calls: only when the last message is
 * a user turn without toolResult blocks. toolChoice {tool} forces that tool;
 * otherwise the first tool whose name (or the name with '_' read as ' ')
 * appears in the last user text, else the first tool when that text
 * mentions "weather", else, with toolChoice {any}, the first tool.
 */
export function pickTool(body) {
  const tc = body.toolConfig;
  if (!tc || !Array.isArray(tc.tools) || tc.tools.length === 0) return null;
  const last = body.messages[body.messages.length - 1];
  if (last.role !== 'user' || blocksOf(last).some((b) => b.toolResult)) return null;
  const specs = tc.tools.map((t) => t?.toolSpec).filter((t) => t && typeof t.name === 'string');
  if (specs.length === 0) return null;
  const text = blocksOf(last).map((b) => (typeof b.text === 'string' ? b.text : '')).join(' ').toLowerCase();
  let spec = null;
  if (tc.toolChoice?.tool?.name) spec = specs.find((t) => t.name === tc.toolChoice.tool.name) || null;
  if (!spec) spec = specs.find((t) => text.includes(t.name.toLowerCase()) || text.includes(t.name.toLowerCase().replace(/_/g, ' '))) || null;
  if (!spec && /\bweather\b/.test(text)) spec = specs[0];
  if (!spec && tc.toolChoice?.any) spec = specs[0];
  if (!spec) return null;
  const schema = spec.inputSchema?.json;
  const input = schema ? sampleFromSchema(typeof schema === 'string' ? JSON.parse(schema) : schema, spec.name) : {};
  return { toolUseId: toolUseIdFor(body.messages, spec.name), name: spec.name, input: input && typeof input === 'object' ? input : {} };
}

/**
 * Plans a Bedrock answer from the request: texts, max tokens, caching, and
 * the model-specific checks. Returns { family, input, output, cacheRead,
 * cacheWrite, maxGiven, embed, image, n, each, tool } or { error }.
 */
function planBedrock(op, family, body, modelId = '') {
  const texts = [];
  let max;
  let cache = false;
  let n = 1;
  let tool = null;
  let image = null;
  let embedInput = null;
  const err = (message) => ({ error: { name: 'ValidationException', message } });
  if (!body || typeof body !== 'object' || Array.isArray(body)) return err('Malformed input request, please reformat your input and try again.');
  const converse = op === 'Converse' || op === 'ConverseStream';
  if (converse) {
    if (!Array.isArray(body.messages) || body.messages.length === 0) {
      return err('A conversation must start with a user message. Try again with a conversation that starts with a user message.');
    }
    const v = converseViolation(body, family, modelId);
    if (v) return err(v);
    messagesTexts(body.messages, texts);
    if (Array.isArray(body.system)) contentTexts(body.system, texts);
    for (const t of body.toolConfig?.tools || []) if (typeof t?.toolSpec?.description === 'string') texts.push(t.toolSpec.description);
    max = body.inferenceConfig?.maxTokens;
    cache = hasKeyDeep(body.messages, 'cachePoint') || hasKeyDeep(body.system, 'cachePoint') || hasKeyDeep(body.toolConfig, 'cachePoint');
    tool = pickTool(body);
  } else {
    const schema = nativeSchema(family, modelId, body);
    if (schema) {
      const v = schemaViolations(schema, body);
      if (v.length) return err(malformed(v));
    }
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
          if (!anthropicApis(modelId).text) {
            return err(`"${anthropicModelName(modelId)}" is not supported on this API. Please use the Messages API instead.`);
          }
          const starts = /^(?:[\s\S]*?)\n\nHuman:/.test(body.prompt);
          const lastHuman = body.prompt.lastIndexOf('\n\nHuman:');
          const lastAssistant = body.prompt.lastIndexOf('\n\nAssistant:');
          const ends = lastAssistant >= 0 && lastAssistant > lastHuman;
          const problems = [];
          if (!starts) problems.push('prompt must start with "\n\nHuman:" turn after an optional system prompt');
          if (!ends) problems.push('prompt must end with "\n\nAssistant:" turn');
          if (problems.length) return err(problems.join(', '));
          texts.push(body.prompt);
          max = body.max_tokens_to_sample;
        } else {
          return err('Malformed input request: #: required key [messages] not found, please reformat your input and try again.');
        }
        break;
      case 'titan':
        texts.push(body.inputText);
        max = body.textGenerationConfig?.maxTokenCount;
        break;
      case 'titan-embed':
        texts.push(body.inputText);
        embedInput = body.inputText;
        break;
      case 'titan-embed-image': {
        if (body.inputText === undefined && body.inputImage === undefined) {
          return err(malformed(['#: required key [inputText] not found', '#: required key [inputImage] not found']));
        }
        if (body.inputImage !== undefined) {
          const kind = sniffImage(body.inputImage);
          if (kind !== 'png' && kind !== 'jpeg') {
            return err(malformed([`#/inputImage: ${kind ? `image format ${kind} is not supported, only PNG and JPEG are` : 'the value is not a base64-encoded PNG or JPEG image'}`]));
          }
        }
        if (typeof body.inputText === 'string') texts.push(body.inputText);
        break;
      }
      case 'cohere-embed': {
        const hasTexts = body.texts !== undefined;
        const hasImages = body.images !== undefined;
        if (!hasTexts && !hasImages) return err(malformed(['#: required key [texts] not found']));
        if (hasTexts && hasImages) return err(malformed(['#: only one of [texts, images] may be given']));
        if (hasImages) {
          if (body.input_type !== 'image') return err(malformed([`#/input_type: ${body.input_type} is not a valid enum value for images, expected: image`]));
          const m = /^data:image\/(png|jpeg|jpg|webp|gif);base64,(.+)$/s.exec(body.images[0]);
          const kind = m ? sniffImage(m[2]) : null;
          if (!m || !kind || (m[1] === 'jpg' ? 'jpeg' : m[1]) !== kind) {
            return err(malformed(['#/images/0: expected a data URI (data:image/<png|jpeg|webp|gif>;base64,...) of that image type']));
          }
        } else {
          if (body.input_type === 'image') return err(malformed(['#/input_type: image requires [images], not [texts]']));
          texts.push(...body.texts);
        }
        break;
      }
      case 'nova':
        if (!Array.isArray(body.messages)) return err('Malformed input request: #: required key [messages] not found, please reformat your input and try again.');
        messagesTexts(body.messages, texts);
        if (Array.isArray(body.system)) contentTexts(body.system, texts);
        max = body.inferenceConfig?.max_new_tokens ?? body.inferenceConfig?.maxTokens;
        cache = hasKeyDeep(body, 'cachePoint');
        break;
      case 'llama':
        texts.push(body.prompt);
        max = body.max_gen_len;
        break;
      case 'mistral':
        texts.push(body.prompt);
        max = body.max_tokens;
        break;
      case 'cohere':
        texts.push(body.prompt);
        max = body.max_tokens;
        if (op === 'InvokeModel') n = body.num_generations ?? 1;
        break;
      case 'cohere-r':
        if (typeof body.message !== 'string') return err('Malformed input request: #: required key [message] not found, please reformat your input and try again.');
        texts.push(body.message);
        if (Array.isArray(body.chat_history)) for (const m of body.chat_history) texts.push(m?.message);
        if (typeof body.preamble === 'string') texts.push(body.preamble);
        max = body.max_tokens;
        break;
      case 'ai21':
        texts.push(body.prompt);
        max = body.maxTokens;
        n = body.numResults ?? 1;
        break;
      case 'jamba':
        if (!Array.isArray(body.messages)) return err('Malformed input request: #: required key [messages] not found, please reformat your input and try again.');
        messagesTexts(body.messages, texts);
        max = body.max_tokens;
        break;
      case 'titan-image': {
        if (body.taskType !== 'TEXT_IMAGE') {
          return err(`taskType ${body.taskType} needs an input image; this fake serves TEXT_IMAGE only.`);
        }
        if (body.textToImageParams === undefined) return err(malformed(['#: required key [textToImageParams] not found']));
        const cfg = body.imageGenerationConfig || {};
        const width = cfg.width ?? 1024;
        const height = cfg.height ?? 1024;
        if (!TITAN_IMAGE_SIZES.includes(`${width}x${height}`)) {
          return err(malformed([`#/imageGenerationConfig: ${width}x${height} (width x height) is not a supported image size`]));
        }
        image = { count: cfg.numberOfImages ?? 1, width, height, quality: cfg.quality ?? 'standard', seed: cfg.seed ?? 42 };
        break;
      }
      case 'stability': {
        const v1 = /stable-diffusion-xl-v1/.test(baseModelId(modelId));
        const width = body.width ?? (v1 ? 1024 : 512);
        const height = body.height ?? (v1 ? 1024 : 512);
        if (v1 && !SDXL_V1_DIMENSIONS.includes(`${width}x${height}`)) {
          return err(`for stable-diffusion-xl-1024-v1-0 the allowed dimensions are ${SDXL_V1_DIMENSIONS.join(', ')}, but we received ${width}x${height}`);
        }
        if (!v1 && (width % 64 || height % 64 || width * height < 262144 || width * height > 1048576)) {
          return err(`height and width must be specified in increments of 64 and give between 262144 and 1048576 pixels, but we received ${width}x${height}`);
        }
        const prompt = body.text_prompts.map((p) => p.text).join(' ');
        const seed = body.seed ?? createHash('sha256').update(prompt).digest().readUInt32BE(0);
        image = { count: 1, width, height, steps: body.steps ?? 30, seed };
        break;
      }
      default:
        return err('The provided model identifier is invalid.');
    }
  }
  const maxGiven = typeof max === 'number' && max <= MAX_OUTPUT;
  const embed = !converse && (family === 'titan-embed' || family === 'cohere-embed' || family === 'titan-embed-image');
  const each = embed || image ? 0 : outputTokensFor(max);
  // Image-only embedding requests carry no text: no input tokens.
  const imageOnly = (family === 'titan-embed-image' && typeof body.inputText !== 'string') || (family === 'cohere-embed' && body.images !== undefined);
  return {
    family,
    input: image ? 0 : imageOnly ? 0 : inputTokensFor(texts),
    output: each * n,
    each,
    n,
    cacheRead: cache ? CACHE_READ : 0,
    cacheWrite: cache ? CACHE_WRITE : 0,
    maxGiven,
    embed,
    embedInput,
    image,
    tool,
  };
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
      if (!/v2/.test(baseModelId(modelId))) return { embedding: fakeEmbedding(body.inputText, 1536), inputTextTokenCount: input };
      const dims = body.dimensions ?? 1024;
      const embedding = fakeEmbedding(body.inputText, dims, { normalize: body.normalize ?? true });
      const types = body.embeddingTypes ?? ['float'];
      const byType = {};
      if (types.includes('binary')) byType.binary = bitsOf(embedding);
      if (types.includes('float')) byType.float = embedding;
      return { embedding, inputTextTokenCount: input, embeddingsByType: byType };
    }
    case 'titan-embed-image': {
      const dims = body.embeddingConfig?.outputEmbeddingLength ?? 1024;
      return { embedding: fakeEmbedding(`${body.inputText ?? ''}\u0001${body.inputImage ?? ''}`, dims, { normalize: true }), inputTextTokenCount: input };
    }
    case 'cohere-embed': {
      const items = body.texts ?? body.images;
      const floats = items.map((t) => fakeEmbedding(t, 1024, { normalize: true }));
      const r = { embeddings: floats, id: requestId(), response_type: 'embeddings_floats', texts: (body.texts ?? []).map((t) => String(t).toLowerCase()) };
      if (body.embedding_types) {
        const by = {};
        for (const t of body.embedding_types) {
          if (t === 'float') by.float = floats;
          if (t === 'int8') by.int8 = floats.map(int8Of);
          if (t === 'uint8') by.uint8 = floats.map((v) => int8Of(v).map((x) => x + 128));
          if (t === 'binary') by.binary = floats.map((v) => packedBits(v, true));
          if (t === 'ubinary') by.ubinary = floats.map((v) => packedBits(v, false));
        }
        r.embeddings = by;
        r.response_type = 'embeddings_by_type';
      }
      return r;
    }
    case 'titan-image':
      return { images: Array.from({ length: plan.image.count }, () => TINY_PNG_BASE64), error: null };
    case 'stability':
      return { result: 'success', artifacts: [{ seed: plan.image.seed, base64: TINY_PNG_BASE64, finishReason: 'SUCCESS' }] };
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
    case 'cohere': {
      const likely = body.return_likelihoods === 'GENERATION' || body.return_likelihoods === 'ALL';
      const gen = () => {
        const g = { id: requestId(), text, finish_reason: maxGiven ? 'MAX_TOKENS' : 'COMPLETE' };
        if (likely) {
          g.likelihood = Number((-0.25 * plan.each).toFixed(4));
          g.token_likelihoods = text.split(' ').map((w, i) => ({ token: i ? ` ${w}` : w, likelihood: -0.25 }));
        }
        return g;
      };
      return { generations: Array.from({ length: plan.n }, gen), id: requestId(), prompt: body.prompt };
    }
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
    case 'ai21': {
      const tokensOf = (str, count) => {
        const out = [];
        const re = /\S+/g;
        let m;
        while ((m = re.exec(str)) && out.length < count) {
          out.push({ generatedToken: { token: `▁${m[0]}`, logprob: -0.5, raw_logprob: -0.5 }, topTokens: null, textRange: { start: m.index, end: m.index + m[0].length } });
        }
        while (out.length < count) out.push({ generatedToken: { token: '<|endoftext|>', logprob: 0, raw_logprob: 0 }, topTokens: null, textRange: { start: str.length, end: str.length } });
        return out;
      };
      return {
        id: 1234,
        prompt: { text: body.prompt, tokens: tokensOf(body.prompt, input) },
        completions: Array.from({ length: plan.n }, () => ({
          data: { text, tokens: tokensOf(text, plan.each) },
          finishReason: maxGiven ? { reason: 'length', length: plan.each } : { reason: 'endoftext' },
        })),
      };
    }
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
        delta: (t) => ({ text: t, is_finished: false, index: 0 }),
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
    const nonChat = family === 'titan-embed' || family === 'titan-embed-image' || family === 'cohere-embed' || family === 'titan-image' || family === 'stability';
    if (converse && nonChat) {
      return sendAwsError(res, rec, { status: 400, name: 'ValidationException', message: "This action doesn't support the model that you provided. Try again with a supported text or chat model.", ns: BEDROCK_NS });
    }
    if (rec.op === 'InvokeModelWithResponseStream' && (nonChat || family === 'ai21')) {
      return sendAwsError(res, rec, { status: 400, name: 'ValidationException', message: 'The model is unsupported for streaming', ns: BEDROCK_NS });
    }
    const plan = planBedrock(rec.op, family, body, script.id);
    if (plan.error) return sendAwsError(res, rec, { status: 400, ns: BEDROCK_NS, ...plan.error });
    if (script.drip && !plan.embed && !plan.image) {
      plan.output = plan.each = script.drip.n;
      plan.n = 1;
    }
    rec.plan = plan;
    const text = wordsOut(plan.each);
    // With a tool call, Claude writes a short text block first; other models
    // answer with the toolUse block alone.
    const showText = !plan.tool || family === 'anthropic';

    if (!stream) {
      if (script.drip) await later(script.drip.n * script.drip.ms);
      if (rec.closed) return;
      const latency = Date.now() - start;
      rec.answered = converse ? 'converse' : 'invoke';
      rec.textSent = plan.embed || plan.image || !showText ? '' : text;
      if (plan.image) {
        // Image models: no token counts, in the headers or anywhere.
        rec.usage = null;
        rec.images = plan.image.count;
        return sendJson(res, rec, 200, nativeResponse(plan, script.id, body, text), { 'X-Amzn-Bedrock-Invocation-Latency': String(latency) });
      }
      rec.usage = usageRecord(plan);
      if (converse) {
        const content = [];
        if (showText) content.push({ text });
        if (plan.tool) {
          content.push({ toolUse: { ...plan.tool } });
          rec.toolUse = plan.tool;
        }
        return sendJson(res, rec, 200, {
          metrics: { latencyMs: latency },
          output: { message: { content, role: 'assistant' } },
          stopReason: plan.tool ? 'tool_use' : plan.maxGiven ? 'max_tokens' : 'end_turn',
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
    const limit = script.midstream ? 2 : script.cut !== null ? script.cut : Infinity;
    const deltaWords = (t) => t.split(/\s+/).filter(Boolean).length;

    const chunkFrame = (obj) => eventFrame('chunk', { bytes: Buffer.from(JSON.stringify(obj)).toString('base64'), p: pad() });
    const cEvent = (type, obj) => eventFrame(type, { ...obj, p: pad() });

    if (converse) {
      if (!s.write(cEvent('messageStart', { role: 'assistant' }))) return;
      // [event type, payload, text carried, is a content delta]
      const evs = [];
      if (showText) {
        for (const t of deltas) evs.push(['contentBlockDelta', { contentBlockIndex: 0, delta: { text: t } }, t, true]);
        evs.push(['contentBlockStop', { contentBlockIndex: 0 }, null, false]);
      }
      if (plan.tool) {
        const idx = showText ? 1 : 0;
        evs.push(['contentBlockStart', { contentBlockIndex: idx, start: { toolUse: { toolUseId: plan.tool.toolUseId, name: plan.tool.name } } }, null, false]);
        for (const piece of splitString(JSON.stringify(plan.tool.input), 3)) {
          evs.push(['contentBlockDelta', { contentBlockIndex: idx, delta: { toolUse: { input: piece } } }, null, true]);
        }
        evs.push(['contentBlockStop', { contentBlockIndex: idx }, null, false]);
        rec.toolUse = plan.tool;
      }
      let sent = 0;
      for (const [type, payload, t, isDelta] of evs) {
        if (sent >= limit) break;
        if (isDelta && script.drip && script.drip.ms > 0) await later(script.drip.ms);
        if (!s.write(cEvent(type, payload))) return;
        if (isDelta) {
          sent++;
          rec.eventsSent++;
          if (t) rec.textSent += t;
        }
      }
    } else {
      const native = nativeStream(plan, script.id, body);
      for (const h of native.head) if (!s.write(chunkFrame(h))) return;
      const nDeltas = Math.min(limit, deltas.length);
      for (let i = 0; i < nDeltas; i++) {
        if (script.drip && script.drip.ms > 0) await later(script.drip.ms);
        const t = deltas[i];
        if (!s.write(chunkFrame(native.delta(t, deltaWords(t))))) return;
        rec.eventsSent++;
        rec.textSent += t;
      }
      if (!script.midstream && script.cut === null) {
        const latency = Date.now() - start;
        for (const t of native.tail(invocationMetrics(plan, latency, firstByte))) if (!s.write(chunkFrame(t))) return;
      }
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
    if (converse) {
      const latency = Date.now() - start;
      if (!s.write(cEvent('messageStop', { stopReason: plan.tool ? 'tool_use' : plan.maxGiven ? 'max_tokens' : 'end_turn' }))) return;
      if (!s.write(cEvent('metadata', { metrics: { latencyMs: latency }, usage: converseUsage(plan) }))) return;
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

/** JumpStart endpoints serving a text-embedding model (by name). */
function jumpstartEmbedding(name) {
  return name.startsWith('jumpstart-') && /embed|minilm|mpnet|bge|gte|e5-/i.test(name);
}

function jumpstartEmbeddingDims(name) {
  if (/large/i.test(name)) return 1024;
  if (/mpnet|base/i.test(name)) return 768;
  return 384;
}

/**
 * TGI's request validation (router/src/validation.rs): the 422
 * "Input validation error: ..." message, or null.
 */
function tgiViolation(p, chat) {
  const bad = (m) => `Input validation error: ${m}`;
  if (p.temperature !== undefined && p.temperature !== null) {
    if (typeof p.temperature !== 'number') return null;
    if (chat ? p.temperature < 0 : p.temperature <= 0) return bad('`temperature` must be strictly positive');
  }
  if (p.top_p !== undefined && p.top_p !== null && (p.top_p <= 0 || p.top_p >= 1)) return bad('`top_p` must be > 0.0 and < 1.0');
  if (p.top_k !== undefined && p.top_k !== null && p.top_k <= 0) return bad('`top_k` must be strictly positive');
  if (p.repetition_penalty !== undefined && p.repetition_penalty !== null && p.repetition_penalty <= 0) return bad('`repetition_penalty` must be strictly positive');
  const maxNew = chat ? p.max_tokens : p.max_new_tokens;
  if (maxNew !== undefined && maxNew !== null && maxNew <= 0) return bad('`max_new_tokens` must be strictly positive');
  if (Array.isArray(p.stop) && p.stop.length > 4) return bad(`\`stop\` supports up to 4 stop sequences. Given: ${p.stop.length}`);
  return null;
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
    // JumpStart text-embedding models (all-MiniLM-L6-v2, bge, gte, e5, ...):
    // {"text_inputs": str | [str], "mode": "embedding"} -> {"embedding": [[dims floats] per text]}.
    if (jumpstartEmbedding(endpoint)) {
      const mmsError = (message) => bad(JSON.stringify({ code: 400, type: 'InternalServerException', message }), 400);
      if (body.text_inputs === undefined) return mmsError("'text_inputs'");
      const list = Array.isArray(body.text_inputs) ? body.text_inputs : [body.text_inputs];
      if (list.length === 0 || list.some((t) => typeof t !== 'string')) {
        return mmsError('text_inputs must be a string or a non-empty list of strings.');
      }
      if (body.mode !== undefined && body.mode !== 'embedding') {
        return mmsError(`Unsupported mode: ${body.mode}. This fake serves mode 'embedding' only.`);
      }
      const dims = jumpstartEmbeddingDims(endpoint);
      return { contentType: 'application/json', body: JSON.stringify({ embedding: list.map((t) => fakeEmbedding(t, dims, { normalize: true })) }), usage: null, text: '' };
    }
    const inputs = body.text_inputs ?? body.inputs;
    if (inputs === undefined) return bad(JSON.stringify({ code: 400, type: 'InternalServerException', message: "'text_inputs'" }), 400);
    const texts = [].concat(inputs).map(String);
    if (body.mode === 'embedding') {
      return { contentType: 'application/json', body: JSON.stringify({ embedding: texts.map((t) => fakeEmbedding(t, 384, { normalize: true })) }), usage: null, text: '' };
    }
    const n = drip ? drip.n : outputTokensFor(body.max_new_tokens ?? body.parameters?.max_new_tokens);
    const text = wordsOut(n);
    return { contentType: 'application/json', body: JSON.stringify({ generated_text: text }), usage: null, text };
  }
  if (chat) {
    if (kind === 'tgi') {
      if (body.messages.length === 0) return bad(JSON.stringify({ error: 'Input validation error: `inputs` cannot be empty', error_type: 'validation' }));
      const v = tgiViolation(body, true);
      if (v) return bad(JSON.stringify({ error: v, error_type: 'validation' }));
    }
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
  if (kind === 'tgi') {
    if (body.inputs === '') return bad(JSON.stringify({ error: 'Input validation error: `inputs` cannot be empty', error_type: 'validation' }));
    const v = tgiViolation(params, false);
    if (v) return bad(JSON.stringify({ error: v, error_type: 'validation' }));
  }
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
export async function startFakeSageMaker({ registry, region = 'us-east-1', accountId = ACCOUNT_ID, inferenceComponents = {} } = {}) {
  if (!(registry instanceof Map)) throw new Error('startFakeSageMaker: registry must be a Map');
  // endpoint name -> its inference component names (an endpoint listed here,
  // or named ic.<a>_<b>.<rest>, requires X-Amzn-SageMaker-Inference-Component).
  const components = inferenceComponents instanceof Map ? inferenceComponents : new Map(Object.entries(inferenceComponents));
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
    const declared = script.components || components.get(rec.endpointName) || components.get(name) || null;
    if (declared) {
      if (!rec.inferenceComponent) {
        return smError(res, rec, 'ValidationError', 'Inference Component Name header is required for endpoints to which you plan to deploy inference components. Please include Inference Component Name header or consider using SageMaker models.', { ErrorCode: 'INFERENCE_COMPONENT_NAME_MISSING' });
      }
      if (!declared.includes(rec.inferenceComponent)) {
        return smError(res, rec, 'ValidationError', `Inference Component ${rec.inferenceComponent} of account ${accountId} not found.`);
      }
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
    const limit = script.midstream ? 2 : script.cut !== null ? script.cut : script.inband !== null ? script.inband : Infinity;
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
    if (script.inband !== null) {
      const message = 'Request failed during generation: Server error: CUDA out of memory. Tried to allocate 2.00 GiB';
      rec.answered = 'inband-error';
      rec.errorMessage = message;
      rec.usage = null;
      s.write(part(Buffer.from(`data:${JSON.stringify({ error: message, error_type: 'generation' })}\n\n`)));
      s.end();
      return;
    }
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

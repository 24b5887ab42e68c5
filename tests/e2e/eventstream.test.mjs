// The event-stream codec (src/aws/eventstream.c) against the AWS SDK's own,
// @smithy/eventstream-codec, through the es_tool test program: frames smithy
// encodes (every header type, empty and large payloads, long streams) must
// decode to the same messages however the stream is cut (es_tool checks every
// cut itself), corrupt frames must be refused with a clear reason, and frames
// es_tool encodes must be byte-identical to smithy's and decode with smithy.
//
// es_tool is found beside the gateway binary: build/tools/es_tool, or
// build/asan/tools/es_tool when TOLLGATE_BIN=build/asan/tollgate.

import { test, describe } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { EventStreamCodec, Int64 } from '@smithy/eventstream-codec';
import { toUtf8, fromUtf8 } from '@smithy/util-utf8';
import { requireTool } from './harness.mjs';

const codec = new EventStreamCodec(toUtf8, fromUtf8);
const T = { timeout: 120000 };

function esTool(args, input) {
  const r = spawnSync(requireTool('es_tool'), args, { input, maxBuffer: 1 << 28 });
  if (r.error) throw r.error;
  return { status: r.status, stdout: r.stdout.toString('utf8'), stderr: r.stderr.toString('utf8') };
}

/** Decodes with es_tool (checking every cut, or every step-th); the messages as JSON objects. */
function decode(bytes, { step } = {}) {
  const r = esTool(['decode', ...(step ? ['--split-step', String(step)] : ['--split-every'])], bytes);
  assert.equal(r.status, 0, `es_tool decode failed: ${r.stderr}`);
  return r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

const int64Of = (bytes) => BigInt.asIntN(64, BigInt('0x' + Buffer.from(bytes).toString('hex'))).toString();

/** A smithy message ({headers, body}) in es_tool's JSON form. */
function normalize({ headers, body }) {
  const out = [];
  for (const [name, h] of Object.entries(headers)) {
    let value = h.value;
    if (h.type === 'long') value = int64Of(h.value.bytes);
    else if (h.type === 'timestamp') value = String(h.value.getTime());
    else if (h.type === 'binary') value = Buffer.from(h.value).toString('base64');
    out.push({ name, type: h.type, value });
  }
  return { headers: out, payload: Buffer.from(body).toString('base64') };
}

/** Cuts a stream into frames by their length fields. */
function frames(bytes) {
  const out = [];
  for (let off = 0; off < bytes.length; ) {
    const len = Buffer.from(bytes.buffer, bytes.byteOffset + off, 4).readUInt32BE(0);
    out.push(bytes.subarray(off, off + len));
    off += len;
  }
  return out;
}

const CRC_TABLE = Array.from({ length: 256 }, (_, n) => {
  let c = n;
  for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
  return c >>> 0;
});
function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}
/** Rewrites a frame's prelude CRC (and its message CRC, when whole) after a deliberate edit. */
function fixCrcs(f, { message = true } = {}) {
  f.writeUInt32BE(crc32(f.subarray(0, 8)), 8);
  if (message) f.writeUInt32BE(crc32(f.subarray(0, f.length - 4)), f.length - 4);
  return f;
}

const enc = (headers, body = '') =>
  codec.encode({ headers, body: typeof body === 'string' ? fromUtf8(body) : body });
const concat = (list) => Buffer.concat(list.map((f) => Buffer.from(f)));

const long = (hex) => new Int64(Uint8Array.from(Buffer.from(hex, 'hex')));
const EVERY_TYPE = {
  yes: { type: 'boolean', value: true },
  no: { type: 'boolean', value: false },
  'byte-min': { type: 'byte', value: -128 },
  'byte-max': { type: 'byte', value: 127 },
  'short-min': { type: 'short', value: -32768 },
  'short-max': { type: 'short', value: 32767 },
  'int-min': { type: 'integer', value: -2147483648 },
  'int-max': { type: 'integer', value: 2147483647 },
  'long-min': { type: 'long', value: long('8000000000000000') },
  'long-max': { type: 'long', value: long('7fffffffffffffff') },
  'long-neg': { type: 'long', value: Int64.fromNumber(-1234567890123) },
  bin: { type: 'binary', value: Uint8Array.from([0, 1, 254, 255]) },
  'bin-empty': { type: 'binary', value: new Uint8Array(0) },
  'bin-big': { type: 'binary', value: Uint8Array.from({ length: 32767 }, (_, i) => (i * 31) & 255) },
  str: { type: 'string', value: 'héllo ✓ 🚀 "quoted" \\ \n\t' },
  'str-empty': { type: 'string', value: '' },
  ts: { type: 'timestamp', value: new Date(1700000000123) },
  'ts-epoch': { type: 'timestamp', value: new Date(0) },
  uuid: { type: 'uuid', value: '0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0' },
  ['n'.repeat(255)]: { type: 'boolean', value: true },
};

const BEDROCK_EVENT = {
  ':event-type': { type: 'string', value: 'chunk' },
  ':content-type': { type: 'string', value: 'application/json' },
  ':message-type': { type: 'string', value: 'event' },
};

/** A long stream of assorted messages (about 9 KB): every cut is checked. */
function assortedStream() {
  const msgs = [];
  for (let i = 0; i < 40; i++) {
    const headers = { ...BEDROCK_EVENT, seq: { type: 'integer', value: i } };
    if (i % 7 === 3) headers.flag = { type: 'boolean', value: i % 2 === 0 };
    if (i % 5 === 1) headers.when = { type: 'timestamp', value: new Date(1700000000000 + i) };
    const body = i % 9 === 0 ? '' : JSON.stringify({ bytes: Buffer.from(`part ${i} `.repeat(i % 13)).toString('base64') });
    msgs.push({ headers, body: fromUtf8(body) });
  }
  return msgs;
}

test('es_tool is built', () => requireTool('es_tool'));

describe('smithy encodes, tollgate decodes', () => {
  test('every header type, cut at every byte', T, () => {
    const msg = { headers: EVERY_TYPE, body: fromUtf8('{"ok":true}') };
    const bytes = codec.encode(msg);
    const got = decode(bytes);
    assert.deepEqual(got, [normalize(msg)]);
    assert.deepEqual(got, [normalize(codec.decode(bytes))]);
  });

  test('empty payload and no headers', T, () => {
    const bytes = concat([enc({}), enc(BEDROCK_EVENT), enc({}, 'x')]);
    assert.deepEqual(decode(bytes), [
      { headers: [], payload: '' },
      normalize({ headers: BEDROCK_EVENT, body: new Uint8Array(0) }),
      { headers: [], payload: Buffer.from('x').toString('base64') },
    ]);
  });

  test('a 1 MiB payload, cut every 64 KiB and fed byte by byte', T, () => {
    const body = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 131 + 7) & 255);
    const bytes = concat([enc(BEDROCK_EVENT, body), enc({}, 'after')]);
    const got = decode(bytes, { step: 65521 });
    assert.equal(got.length, 2);
    assert.deepEqual(got[0], normalize({ headers: BEDROCK_EVENT, body }));
    assert.equal(Buffer.from(got[1].payload, 'base64').toString(), 'after');
  });

  test('forty messages concatenated, cut at every byte', T, () => {
    const msgs = assortedStream();
    const bytes = concat(msgs.map((m) => codec.encode(m)));
    assert.ok(bytes.length > 4000);
    assert.deepEqual(decode(bytes), msgs.map(normalize));
  });
});

describe('corrupt frames are refused with the reason', () => {
  const good = () => Buffer.from(enc(BEDROCK_EVENT, '{"bytes":"aGk="}'));
  const lead = () => Buffer.from(enc({ first: { type: 'string', value: 'ok' } }, 'first'));

  /** es_tool must print the good lead message, then fail with `re` (on every cut). */
  function refuses(bad, re, args = []) {
    const r = esTool(['decode', '--split-every', ...args], concat([lead(), bad]));
    assert.equal(r.status, 1, `expected failure, got ${r.status}: ${r.stderr}`);
    assert.match(r.stderr, re);
    assert.match(r.stderr, /cuts and byte by byte agree/);
    const lines = r.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l));
    assert.deepEqual(lines, [normalize(codec.decode(lead()))]);
    return r.stderr;
  }

  test('prelude CRC', T, () => {
    const f = good();
    f[9] ^= 0x40;
    refuses(f, /prelude CRC mismatch: got 0x[0-9a-f]{8} expected 0x[0-9a-f]{8}/);
    assert.throws(() => codec.decode(f), /prelude checksum/);
  });

  test('message CRC', T, () => {
    const f = good();
    f[f.length - 1] ^= 0x01;
    const want = f.readUInt32BE(f.length - 4).toString(16).padStart(8, '0');
    refuses(f, new RegExp(`message CRC mismatch: got 0x[0-9a-f]{8} expected 0x${want}`));
    const g = good();
    g[g.length - 8] ^= 0x10; // a payload bit
    refuses(g, /message CRC mismatch/);
    assert.throws(() => codec.decode(g), /message checksum/);
  });

  test('a length field changed in transit fails the prelude CRC', T, () => {
    const f = good();
    f.writeUInt32BE(f.length + 1, 0);
    refuses(f, /prelude CRC mismatch/);
    const g = good();
    g.writeUInt32BE(3, 4);
    refuses(g, /prelude CRC mismatch/);
  });

  test('lengths out of bounds, with a valid prelude CRC', T, () => {
    const short = Buffer.alloc(16);
    short.writeUInt32BE(8, 0);
    refuses(fixCrcs(short, { message: false }), /message length 8 below minimum 16/);

    const f = good();
    f.writeUInt32BE(f.length - 15, 4);
    refuses(fixCrcs(f), new RegExp(`headers length ${f.length - 15} exceeds message length ${f.length} minus 16`));

    refuses(good(), /message length \d+ above maximum 60/, ['--max', '60']);
  });

  test('malformed headers, with valid CRCs', T, () => {
    const f = good();
    f[12 + 1 + 11] = 10; // the first header's type byte
    refuses(fixCrcs(f), /header 0: unknown value type 10/);
    const g = good();
    g[12] = 0;
    refuses(fixCrcs(g), /header 0: empty name/);
    const h = good();
    h.writeUInt16BE(0x7fff, 12 + 1 + 11 + 1); // a string longer than the block
    refuses(fixCrcs(h), /header 0: value overruns the header block/);
  });

  test('more than 32 headers', T, () => {
    const headers = Object.fromEntries(Array.from({ length: 33 }, (_, i) => [`h${i}`, { type: 'boolean', value: true }]));
    refuses(enc(headers), /more than 32 headers/);
  });

  test('a stream that ends inside a message', T, () => {
    const f = good();
    refuses(f.subarray(0, f.length - 1), /truncated: \d+ bytes of an incomplete message/);
    refuses(f.subarray(0, 5), /truncated: 5 bytes/);
  });
});

describe('tollgate encodes, smithy decodes', () => {
  test('byte-identical to smithy, and smithy decodes it', T, () => {
    const msgs = [
      { headers: EVERY_TYPE, body: fromUtf8('payload') },
      { headers: {}, body: new Uint8Array(0) },
      ...assortedStream().slice(0, 10),
      { headers: BEDROCK_EVENT, body: Uint8Array.from({ length: 300000 }, (_, i) => i & 255) },
    ];
    const r = spawnSync(requireTool('es_tool'), ['encode'], {
      input: msgs.map((m) => JSON.stringify(normalize(m))).join('\n') + '\n',
      maxBuffer: 1 << 26,
    });
    assert.equal(r.status, 0, r.stderr.toString());
    const bytes = r.stdout;
    assert.ok(bytes.equals(concat(msgs.map((m) => codec.encode(m)))), 'es_tool and smithy frames differ');
    const decoded = frames(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length)).map((f) => codec.decode(f));
    assert.deepEqual(decoded.map(normalize), msgs.map(normalize));
  });

  test('refuses what cannot be encoded', T, () => {
    for (const [line, re] of [
      ['{"headers":[{"name":"","type":"string","value":"x"}]}', /name must be 1..255/],
      ['{"headers":[{"name":"b","type":"byte","value":300}]}', /invalid argument|EINVAL|argument/i],
      ['{"headers":[{"name":"u","type":"uuid","value":"1234"}]}', /bad uuid/],
      ['{"headers":[{"name":"x","type":"float","value":1}]}', /unknown header type/],
      ['{"payload":"not base64!"}', /payload must be base64/],
      ['not json', /not JSON/],
    ]) {
      const r = esTool(['encode'], Buffer.from(line + '\n'));
      assert.equal(r.status, 1, line);
      assert.match(r.stderr, /line 1: /);
      assert.match(r.stderr, re, line);
    }
  });
});

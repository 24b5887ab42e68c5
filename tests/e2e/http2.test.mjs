// HTTP/2 in front of the same handlers: h2c with prior knowledge on the plain
// listener (Node's http2 client), the TLS listener with ALPN h2 and
// http/1.1 (a self-signed certificate made here with openssl), 100 streams
// on one session, h2load, and a Rapid Reset flood from a raw client after
// which fresh connections are still served.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import http2 from 'node:http2';
import https from 'node:https';
import net from 'node:net';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, execFile } from 'node:child_process';
import { startFakeOpenAI, wordsText } from './fake-openai.mjs';
import {
  requireBinary,
  startEnv,
  stopEnv,
  failureTracker,
  parseSSE,
  request,
  waitFor,
  waitForUsage,
  KEY_RE,
} from './harness.mjs';

const T = { timeout: 30000 };
const TEAM = 'team-h2';
const TEXT = 'Streams share one connection in HTTP/2.';

/** A self-signed P-256 certificate for 127.0.0.1 in dir: {cert, key, ca}. */
function makeCert(dir) {
  const cert = path.join(dir, 'cert.pem');
  const key = path.join(dir, 'key.pem');
  execFileSync('openssl', [
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
    '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', key, '-out', cert,
  ], { stdio: 'ignore' });
  return { cert, key, ca: fs.readFileSync(cert) };
}

/** Opens a session and waits for the server's SETTINGS. */
function connect(authority, opts = {}) {
  return new Promise((resolve, reject) => {
    const s = http2.connect(authority, opts);
    const timer = setTimeout(() => reject(new Error(`no HTTP/2 session with ${authority}`)), 5000);
    s.once('remoteSettings', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

/** One request on a session: {status, headers, text, json}. */
function h2req(session, headers, body, { timeoutMs = 10000 } = {}) {
  return new Promise((resolve, reject) => {
    const req = session.request(headers);
    const chunks = [];
    let resHeaders;
    const timer = setTimeout(() => {
      req.close(http2.constants.NGHTTP2_CANCEL);
      reject(new Error(`${headers[':path']} timed out`));
    }, timeoutMs);
    req.on('response', (h) => {
      resHeaders = h;
    });
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      clearTimeout(timer);
      const text = Buffer.concat(chunks).toString('utf8');
      let json;
      try {
        json = JSON.parse(text);
      } catch {}
      resolve({ status: resHeaders?.[':status'], headers: resHeaders, text, json });
    });
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    req.end(body);
  });
}

function closeSession(s) {
  return new Promise((resolve) => {
    if (!s || s.closed || s.destroyed) return resolve();
    s.close(resolve);
  });
}

/** Where h2load is, or null. */
function which(cmd) {
  for (const dir of (process.env.PATH || '').split(':')) {
    const p = path.join(dir, cmd);
    try {
      fs.accessSync(p, fs.constants.X_OK);
      return p;
    } catch {}
  }
  return null;
}

// Raw HTTP/2 frames for the flood: what a Rapid Reset attacker sends.
function frame(type, flags, streamId, payload) {
  const h = Buffer.alloc(9);
  h.writeUIntBE(payload.length, 0, 3);
  h[3] = type;
  h[4] = flags;
  h.writeUInt32BE(streamId & 0x7fffffff, 5);
  return Buffer.concat([h, payload]);
}
// HPACK: :method GET, :scheme http, :path /healthz (literal, not indexed).
const HPACK_GET = Buffer.concat([Buffer.from([0x82, 0x86, 0x04, 0x08]), Buffer.from('/healthz')]);
const CANCEL = Buffer.from([0, 0, 0, 8]);

describe('HTTP/2 through tollgate', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  let fake;
  let env;
  let key;
  let tls;
  const sessions = [];

  before(tracker.guard(async () => {
    requireBinary();
    fake = await startFakeOpenAI({
      models: ['upstream-gpt', 'upstream-slow'],
      behavior: { text: TEXT, promptTokens: 9, completionTokens: 8, chunks: 6 },
      byModel: { 'upstream-slow': { text: wordsText(30), chunks: 30, chunkDelayMs: 100 } },
    });
    env = await startEnv({
      prefix: 'http2',
      fake,
      teams: [TEAM],
      configOverrides: {
        models: [
          { id: 'gpt-test', provider: 'fake', upstream_model: 'upstream-gpt' },
          { id: 'gpt-slow', provider: 'fake', upstream_model: 'upstream-slow' },
        ],
      },
      buildExtra: (config, dir) => {
        tls = makeCert(dir);
        return { ...config, tls: { listen: '127.0.0.1:0', cert_file: tls.cert, key_file: tls.key } };
      },
    });
    key = env.keys[TEAM];
    assert.match(key, KEY_RE);
    assert.ok(env.gw.tlsPort > 0, `tls listening line: ${env.gw.stdout()}`);
  }), { timeout: 30000 });

  after(async () => {
    for (const s of sessions) s.destroy();
    await stopEnv(env, { failed: tracker.failed });
    await fake?.close();
  }, { timeout: 15000 });

  test('h2c with prior knowledge: /v1/models', T, async () => {
    const s = await connect(`http://127.0.0.1:${env.gw.port}`);
    sessions.push(s);
    const r = await h2req(s, { ':path': '/v1/models', authorization: `Bearer ${key}` });
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers['content-type'], /application\/json/);
    assert.ok(r.headers['x-request-id']);
    assert.ok(r.json.data.some((m) => m.id === 'gpt-test'), r.text);
    const bad = await h2req(s, { ':path': '/v1/models' });
    assert.equal(bad.status, 401);
    await closeSession(s);
  });

  test('h2c: a streamed chat completion and a plain one', T, async () => {
    const s = await connect(`http://127.0.0.1:${env.gw.port}`);
    sessions.push(s);
    const headers = {
      ':method': 'POST',
      ':path': '/v1/chat/completions',
      'content-type': 'application/json',
      authorization: `Bearer ${key}`,
    };
    const body = { model: 'gpt-test', messages: [{ role: 'user', content: 'Say it.' }] };
    const st = await h2req(s, headers, JSON.stringify({ ...body, stream: true }));
    assert.equal(st.status, 200, st.text);
    assert.match(st.headers['content-type'], /^text\/event-stream/);
    const events = parseSSE(st.text);
    assert.equal(events[events.length - 1], '[DONE]');
    const text = events.filter((e) => e !== '[DONE]').map((e) => e.choices?.[0]?.delta?.content || '').join('');
    assert.equal(text, TEXT);
    const plain = await h2req(s, headers, JSON.stringify(body));
    assert.equal(plain.status, 200, plain.text);
    assert.equal(plain.json.choices[0].message.content, TEXT);
    assert.equal(plain.json.usage.completion_tokens, 8);
    await closeSession(s);
  });

  test('h2c: RST_STREAM mid-stream reaches the upstream; the call is billed as abandoned', T, async () => {
    const s = await connect(`http://127.0.0.1:${env.gw.port}`);
    sessions.push(s);
    const req = s.request({
      ':method': 'POST',
      ':path': '/v1/chat/completions',
      'content-type': 'application/json',
      authorization: `Bearer ${key}`,
    });
    req.end(JSON.stringify({ model: 'gpt-slow', stream: true, messages: [{ role: 'user', content: 'Slowly.' }] }));
    const requestId = await new Promise((resolve, reject) => {
      let id;
      let text = '';
      req.on('response', (h) => {
        id = h['x-request-id'];
      });
      req.on('data', (d) => {
        text += d;
        if ((text.match(/"content"/g) || []).length >= 3) {
          req.close(http2.constants.NGHTTP2_CANCEL);
          resolve(id);
        }
      });
      req.on('error', () => {});
      req.on('end', () => reject(new Error(`stream ended before the reset: ${text}`)));
    });
    assert.ok(requestId, 'x-request-id');
    const up = fake.lastChat((b) => b.model === 'upstream-slow');
    assert.ok(up, 'upstream got the call');
    await waitFor(() => up.closed, { timeoutMs: 3000, message: 'the upstream call to be cancelled' });
    assert.equal(up.finished, false, 'the upstream never finished its stream');
    const row = await waitForUsage(env.configFile, requestId);
    assert.equal(row.outcome, 'abandoned', JSON.stringify(row));
    // The session itself goes on.
    const r = await h2req(s, { ':path': '/healthz' });
    assert.equal(r.status, 200);
    await closeSession(s);
  });

  test('100 concurrent streams on one session all get 200', T, async () => {
    const s = await connect(`http://127.0.0.1:${env.gw.port}`);
    sessions.push(s);
    assert.equal(s.remoteSettings.maxConcurrentStreams, 128);
    const rs = await Promise.all(
      Array.from({ length: 100 }, (_, i) =>
        h2req(s, { ':path': i % 2 ? '/v1/models' : '/healthz', authorization: `Bearer ${key}` })),
    );
    assert.deepEqual(rs.map((r) => r.status), Array(100).fill(200));
    await closeSession(s);
  });

  test('TLS: ALPN h2', T, async () => {
    const s = await connect(`https://127.0.0.1:${env.gw.tlsPort}`, { ca: tls.ca });
    sessions.push(s);
    assert.equal(s.alpnProtocol, 'h2');
    assert.equal(s.encrypted, true);
    const r = await h2req(s, { ':path': '/v1/models', authorization: `Bearer ${key}` });
    assert.equal(r.status, 200, r.text);
    const st = await h2req(
      s,
      { ':method': 'POST', ':path': '/v1/chat/completions', 'content-type': 'application/json', authorization: `Bearer ${key}` },
      JSON.stringify({ model: 'gpt-test', stream: true, messages: [{ role: 'user', content: 'Hi.' }] }),
    );
    assert.equal(st.status, 200, st.text);
    assert.ok(st.text.includes('data: [DONE]'));
    await closeSession(s);
  });

  test('TLS: HTTP/1.1, by ALPN and without it', T, async () => {
    for (const ALPNProtocols of [['http/1.1'], undefined]) {
      const r = await new Promise((resolve, reject) => {
        const req = https.request(
          {
            host: '127.0.0.1',
            port: env.gw.tlsPort,
            path: '/v1/models',
            ca: tls.ca,
            agent: false,
            headers: { authorization: `Bearer ${key}` },
            ...(ALPNProtocols ? { ALPNProtocols } : {}),
          },
          (res) => {
            const chunks = [];
            res.on('data', (d) => chunks.push(d));
            res.on('end', () => resolve({ res, text: Buffer.concat(chunks).toString('utf8'), alpn: res.socket?.alpnProtocol }));
          },
        );
        req.setTimeout(10000, () => req.destroy(new Error('timed out')));
        req.on('error', reject);
        req.end();
      });
      assert.equal(r.res.statusCode, 200, r.text);
      assert.equal(r.res.httpVersion, '1.1');
      assert.equal(r.alpn, ALPNProtocols ? 'http/1.1' : false);
      assert.ok(JSON.parse(r.text).data.some((m) => m.id === 'gpt-test'));
    }
  });

  test('h2load: 2000 requests, 4 connections, 100 streams each, no errors', T, async (t) => {
    const h2load = which('h2load');
    if (!h2load) {
      t.skip('h2load is not installed (scripts/deps.sh installs it with nghttp2-client)');
      return;
    }
    const out = await new Promise((resolve, reject) => {
      execFile(h2load, ['-n', '2000', '-c', '4', '-m', '100', `http://127.0.0.1:${env.gw.port}/healthz`],
        { timeout: 20000 }, (err, stdout, stderr) => (err ? reject(new Error(`${err.message}\n${stdout}\n${stderr}`)) : resolve(stdout)));
    });
    const m = /requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, (\d+) errored, (\d+) timeout/.exec(out);
    assert.ok(m, out);
    assert.deepEqual(m.slice(1).map(Number), [2000, 2000, 2000, 2000, 0, 0, 0], out);
    assert.match(out, /status codes: 2000 2xx, 0 3xx, 0 4xx, 0 5xx/);
  });

  test('a Rapid Reset flood gets GOAWAY ENHANCE_YOUR_CALM; fresh connections are still served', T, async () => {
    const result = await new Promise((resolve) => {
      const sock = net.connect(env.gw.port, '127.0.0.1');
      let inbuf = Buffer.alloc(0);
      let goaway = null;
      let sent = 0;
      const done = (why) => {
        clearTimeout(timer);
        sock.destroy();
        resolve({ goaway, sent, why });
      };
      const timer = setTimeout(() => done('timeout'), 15000);
      sock.on('error', () => {});
      sock.on('close', () => done('closed'));
      sock.on('data', (d) => {
        inbuf = Buffer.concat([inbuf, d]);
        while (inbuf.length >= 9) {
          const len = inbuf.readUIntBE(0, 3);
          if (inbuf.length < 9 + len) break;
          if (inbuf[3] === 7 && !goaway) goaway = { lastStreamId: inbuf.readUInt32BE(9) & 0x7fffffff, code: inbuf.readUInt32BE(13) };
          inbuf = inbuf.subarray(9 + len);
        }
      });
      sock.on('connect', () => {
        // Thousands of streams, each opened and reset at once, in one burst.
        const parts = [Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'), frame(4, 0, 0, Buffer.alloc(0))];
        for (; sent < 5000; sent++) {
          const id = 2 * sent + 1;
          parts.push(frame(1, 0x5, id, HPACK_GET), frame(3, 0, id, CANCEL));
        }
        sock.write(Buffer.concat(parts));
      });
    });
    assert.ok(result.goaway, `GOAWAY received (${result.why}, ${result.sent} streams sent)`);
    assert.equal(result.goaway.code, http2.constants.NGHTTP2_ENHANCE_YOUR_CALM);
    assert.ok(result.goaway.lastStreamId < 2 * result.sent, 'cut off before the end of the flood');
    assert.match(env.gw.stderr(), /too many streams reset by the client/);

    const s = await connect(`http://127.0.0.1:${env.gw.port}`);
    sessions.push(s);
    const r = await h2req(s, { ':path': '/healthz' });
    assert.equal(r.status, 200);
    await closeSession(s);
    const h1 = await request(env.gw.port, { path: '/healthz' });
    assert.equal(h1.status, 200);
  });
});

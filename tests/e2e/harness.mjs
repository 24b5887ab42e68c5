// Helpers for tollgate's black-box tests: temp dirs, configs, starting and
// stopping the real binary, the keys/usage CLI, bounded polling and a raw
// HTTP/1.1 client for requests that ordinary clients will not send.
//
// Nothing here builds anything: the binary must already exist at bin/tollgate
// (or at $TOLLGATE_BIN). When it is missing, requireBinary() throws, so the
// tests fail loudly instead of skipping.

import { spawn, execFile } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import http from 'node:http';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BIN = process.env.TOLLGATE_BIN
  ? path.resolve(process.env.TOLLGATE_BIN)
  : path.join(ROOT, 'bin', 'tollgate');
// The test tools (tests/tools/*.c) are built beside the binary they go with:
// build/asan/tollgate -> build/asan/tools; bin/tollgate (the default) -> build/tools.
export const TOOLS_DIR = process.env.TOLLGATE_TOOLS
  ? path.resolve(process.env.TOLLGATE_TOOLS)
  : process.env.TOLLGATE_BIN && path.basename(path.dirname(BIN)) !== 'bin'
    ? path.join(path.dirname(BIN), 'tools')
    : path.join(ROOT, 'build', 'tools');
export const TMP_ROOT = path.join(ROOT, 'tests', 'e2e', '.tmp');
export const KEY_RE = /^tg_[0-9A-Za-z]{43}$/;
const LISTEN_RE = /^tollgate listening on http:\/\/(127\.0\.0\.1):(\d+)$/;
const ADMIN_LISTEN_RE = /^tollgate admin listening on http:\/\/(127\.0\.0\.1):(\d+)$/;
const TLS_LISTEN_RE = /^tollgate tls listening on https:\/\/(127\.0\.0\.1):(\d+)$/;
const ADMIN_KEY_RE = /^tollgate admin key \(shown once; store it now\): (tga_\S+)$/;

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Throws a clear error when the binary is not built: tests must fail, not skip. */
export function requireBinary() {
  try {
    fs.accessSync(BIN, fs.constants.X_OK);
  } catch {
    throw new Error(
      `tollgate binary not found or not executable at ${BIN}: build it with \`make\` ` +
        '(or point TOLLGATE_BIN at one) before running the e2e tests',
    );
  }
}

/** The path of a test tool; throws a clear error when it is not built. */
export function requireTool(name) {
  const p = path.join(TOOLS_DIR, name);
  try {
    fs.accessSync(p, fs.constants.X_OK);
  } catch {
    throw new Error(`test tool not found at ${p}: build it with \`make ${path.relative(ROOT, p)}\``);
  }
  return p;
}

/** A fresh temp dir under tests/e2e/.tmp (git-ignored). */
export function makeTmpDir(prefix = 'e2e') {
  fs.mkdirSync(TMP_ROOT, { recursive: true });
  return fs.mkdtempSync(path.join(TMP_ROOT, `${prefix}-`));
}

/** Removes a temp dir unless TOLLGATE_E2E_KEEP is set (for post-mortems). */
export function removeTmpDir(dir) {
  if (!dir || process.env.TOLLGATE_E2E_KEEP) return;
  fs.rmSync(dir, { recursive: true, force: true });
}

export function randomId(n = 6) {
  return randomBytes(n).toString('hex');
}

/** A port on 127.0.0.1 that nothing listens on (bound, then released). */
export async function closedPort() {
  const srv = net.createServer();
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address();
  await new Promise((r) => srv.close(r));
  return port;
}

/**
 * Builds a config object. `providers` and `models` replace the defaults when
 * given; `fakePort` is where the default "fake" provider points.
 */
export function buildConfig({ dir, fakePort, http: httpCfg = {}, providers, models, extra = {}, provider = {} }) {
  return {
    listen: '127.0.0.1:0',
    workers: 2,
    log_level: 'info',
    access_log: true,
    store: { driver: 'sqlite', path: path.join(dir, 't.db') },
    http: {
      max_header_bytes: 16384,
      max_body_bytes: 1048576,
      header_timeout_ms: 5000,
      body_timeout_ms: 5000,
      idle_timeout_ms: 10000,
      send_timeout_ms: 5000,
      shutdown_timeout_ms: 3000,
      ...httpCfg,
    },
    providers: providers || [
      {
        name: 'fake',
        type: 'openai',
        base_url: `http://127.0.0.1:${fakePort}/v1`,
        api_key_env: 'FAKE_UPSTREAM_KEY',
        connect_timeout_ms: 2000,
        first_byte_timeout_ms: 10000,
        total_timeout_ms: 30000,
        ...provider,
      },
    ],
    models: models || [{ id: 'gpt-test', provider: 'fake', upstream_model: 'upstream-gpt' }],
    ...extra,
  };
}

export function writeConfig(dir, config, name = 'tollgate.json') {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify(config, null, 2));
  return file;
}

/** Runs `bin/tollgate ARGS`, bounded by timeoutMs. Resolves {code, signal, stdout, stderr}. */
export function runCli(args, { env = {}, timeoutMs = 10000 } = {}) {
  requireBinary();
  return new Promise((resolve) => {
    execFile(
      BIN,
      args,
      { cwd: ROOT, env: { ...process.env, ...env }, timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
        resolve({ code, signal: err ? err.signal || null : null, stdout, stderr, timedOut: !!(err && err.killed) });
      },
    );
  });
}

async function cliOk(args, opts) {
  const r = await runCli(args, opts);
  if (r.code !== 0) {
    throw new Error(
      `tollgate ${args.join(' ')} failed (code ${r.code}, signal ${r.signal}${r.timedOut ? ', timed out' : ''})\n` +
        `stdout: ${r.stdout}\nstderr: ${r.stderr}`,
    );
  }
  return r;
}

/** `keys create`: returns the secret (the last non-empty stdout line), checked against tg_ + 43 base62. */
export async function createKey(configFile, team, { name, expiresIn } = {}) {
  const args = ['keys', 'create', '--config', configFile, '--team', team];
  if (name != null) args.push('--name', name);
  if (expiresIn != null) args.push('--expires-in', String(expiresIn));
  const r = await cliOk(args);
  const lines = r.stdout.split('\n').map((l) => l.trim()).filter(Boolean);
  const secret = lines[lines.length - 1];
  if (!KEY_RE.test(secret || '')) {
    throw new Error(`keys create: last stdout line is not a tg_ key: ${JSON.stringify(r.stdout)}`);
  }
  return secret;
}

export async function listKeys(configFile) {
  const r = await cliOk(['keys', 'list', '--config', configFile, '--json']);
  return parseJsonOutput(r.stdout, 'keys list --json');
}

export async function revokeKey(configFile, idOrPrefix) {
  return cliOk(['keys', 'revoke', '--config', configFile, idOrPrefix]);
}

export async function usageList(configFile) {
  const r = await cliOk(['usage', 'list', '--config', configFile]);
  return parseJsonOutput(r.stdout, 'usage list');
}

function parseJsonOutput(stdout, what) {
  try {
    const v = JSON.parse(stdout);
    if (!Array.isArray(v)) throw new Error('not an array');
    return v;
  } catch (e) {
    throw new Error(`${what}: stdout is not a JSON array (${e.message}): ${stdout.slice(0, 2000)}`);
  }
}

/** The keys-list entry whose prefix starts the secret (the secret itself is never stored). */
export function keyEntryFor(keys, secret) {
  const matches = keys.filter((k) => k.prefix && secret.startsWith(k.prefix));
  if (matches.length !== 1) {
    throw new Error(`expected one key whose prefix starts the secret, found ${matches.length}: ${JSON.stringify(keys)}`);
  }
  return matches[0];
}

/**
 * Polls fn() until it returns a truthy value (returned) or timeoutMs passes
 * (throws with `message` and the last value or error). Bounded in time and tries.
 */
export async function waitFor(fn, { timeoutMs = 3000, intervalMs = 100, message = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  const maxTries = Math.ceil(timeoutMs / Math.max(1, intervalMs)) + 2;
  let last;
  let lastErr;
  for (let i = 0; i < maxTries; i++) {
    try {
      last = await fn();
      lastErr = undefined;
      if (last) return last;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) break;
    await sleep(Math.min(intervalMs, Math.max(0, deadline - Date.now())));
  }
  const detail = lastErr ? `last error: ${lastErr.stack || lastErr}` : `last value: ${JSON.stringify(last)}`;
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${message}; ${detail}`);
}

/** Polls `usage list` until a row with this request_id appears. */
export async function waitForUsage(configFile, requestId, { timeoutMs = 5000 } = {}) {
  return waitFor(
    async () => (await usageList(configFile)).find((u) => u.request_id === requestId),
    { timeoutMs, intervalMs: 150, message: `a usage row with request_id ${requestId}` },
  );
}

/**
 * Starts `bin/tollgate serve --config FILE --listen 127.0.0.1:0` and waits for
 * the one `tollgate listening on http://HOST:PORT` line. Resolves a handle:
 *   { port, url, baseURL, adminUrl, adminKey, tlsPort, proc, stderr(), stdout(), stop(), kill9(), exited }
 * The admin API listens on a port of its own (adminListen, default any free
 * loopback port; 'off' disables it). adminKey is the first admin key, printed
 * only on the store's first start (else null). tlsPort is the TLS listener's
 * port when the config has "tls" (else null).
 */
export async function startGateway(
  configFile,
  { env = {}, timeoutMs = 10000, listen = '127.0.0.1:0', adminListen = '127.0.0.1:0' } = {},
) {
  requireBinary();
  const proc = spawn(BIN, ['serve', '--config', configFile, '--listen', listen, '--admin-listen', adminListen], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  const CAP = 2 * 1024 * 1024;
  proc.stderr.setEncoding('utf8');
  proc.stderr.on('data', (d) => {
    stderr += d;
    if (stderr.length > CAP) stderr = stderr.slice(-CAP / 2);
  });
  proc.stdout.setEncoding('utf8');

  let exitInfo = null;
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      exitInfo = { code, signal };
      resolve(exitInfo);
    });
  });
  proc.on('error', () => {});

  let adminPort = null;
  let adminKey = null;
  let tlsPort = null;
  const port = await new Promise((resolve, reject) => {
    let buf = '';
    let done = false;
    const finish = (err, val) => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      if (err) reject(err);
      else resolve(val);
    };
    const timer = setTimeout(() => {
      proc.kill('SIGKILL');
      finish(new Error(`gateway did not print its listening line within ${timeoutMs} ms\nstdout: ${stdout}\nstderr: ${stderr}`));
    }, timeoutMs);
    proc.stdout.on('data', (d) => {
      stdout += d;
      if (stdout.length > CAP) stdout = stdout.slice(-CAP / 2);
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).replace(/\r$/, '');
        buf = buf.slice(i + 1);
        const a = ADMIN_LISTEN_RE.exec(line);
        if (a) adminPort = Number(a[2]);
        const k = ADMIN_KEY_RE.exec(line);
        if (k) adminKey = k[1];
        const t = TLS_LISTEN_RE.exec(line);
        if (t) tlsPort = Number(t[2]);
        const m = LISTEN_RE.exec(line);
        if (m) return finish(null, Number(m[2]));
      }
    });
    exited.then(({ code, signal }) =>
      finish(new Error(`gateway exited before listening (code ${code}, signal ${signal})\nstdout: ${stdout}\nstderr: ${stderr}`)),
    );
    proc.on('error', (e) => finish(new Error(`cannot spawn ${BIN}: ${e.message}`)));
  });

  const gw = {
    proc,
    pid: proc.pid,
    port,
    url: `http://127.0.0.1:${port}`,
    baseURL: `http://127.0.0.1:${port}/v1`,
    adminUrl: adminPort ? `http://127.0.0.1:${adminPort}` : null,
    adminKey,
    tlsPort,
    exited,
    stderr: () => stderr,
    stdout: () => stdout,
    get exitInfo() {
      return exitInfo;
    },
    /** SIGTERM, wait up to timeoutMs, then SIGKILL. Resolves {code, signal, forced}. */
    async stop({ timeoutMs: t = 8000 } = {}) {
      if (exitInfo) return { ...exitInfo, forced: false };
      proc.kill('SIGTERM');
      let timer;
      const timedOut = new Promise((r) => {
        timer = setTimeout(() => r(null), t);
      });
      const res = await Promise.race([exited, timedOut]);
      clearTimeout(timer);
      if (res) return { ...res, forced: false };
      proc.kill('SIGKILL');
      const r2 = await exited;
      return { ...r2, forced: true };
    },
    /** kill -9, wait for the exit. */
    async kill9() {
      if (!exitInfo) proc.kill('SIGKILL');
      return exited;
    },
  };
  return gw;
}

/**
 * Starts a fresh environment: temp dir, config pointing at `fake`, a key per team
 * (created before the gateway starts), then the gateway.
 */
export async function startEnv({ prefix, fake, teams = ['team-a'], configOverrides = {}, buildExtra, gatewayEnv = {} } = {}) {
  requireBinary();
  const dir = makeTmpDir(prefix);
  let config = buildConfig({ dir, fakePort: fake.port, ...configOverrides });
  if (buildExtra) config = buildExtra(config, dir);
  const configFile = writeConfig(dir, config);
  const env = { FAKE_UPSTREAM_KEY: fake.apiKey, ...gatewayEnv };
  const keys = {};
  for (const t of teams) keys[t] = await createKey(configFile, t, { name: `${t}-key` });
  const gw = await startGateway(configFile, { env });
  return { dir, config, configFile, env, keys, gw };
}

/**
 * Stops the gateway and removes the temp dir. When `failed`, writes the
 * gateway's stderr to DIR/gateway.stderr.log, prints its tail and keeps DIR.
 */
export async function stopEnv(e, { failed = false } = {}) {
  if (!e) return;
  const gws = [e.gw, ...(e.oldGateways || [])].filter(Boolean);
  for (const gw of gws) await gw.stop();
  if (failed || process.env.TOLLGATE_E2E_LOGS) {
    for (const gw of gws) {
      const log = gw.stderr();
      try {
        fs.writeFileSync(path.join(e.dir, `gateway-${gw.pid}.stderr.log`), log);
      } catch {}
      process.stderr.write(`--- gateway ${gw.pid} stderr, last 8 KiB (kept in ${e.dir}) ---\n${log.slice(-8192)}\n`);
    }
  }
  if (!failed) removeTmpDir(e.dir);
}

/** For afterEach: remembers whether any test of the file failed. */
export function failureTracker() {
  const state = { failed: false };
  state.afterEach = (t) => {
    if (t && t.passed === false) state.failed = true;
  };
  /** Wraps a hook so that a throw also counts as a failure. */
  state.guard = (fn) => async (...args) => {
    try {
      return await fn(...args);
    } catch (e) {
      state.failed = true;
      throw e;
    }
  };
  return state;
}

/**
 * A plain HTTP request with node:http (no keep-alive), bounded by timeoutMs.
 * Resolves {status, headers, text, json}.
 */
export function request(port, { method = 'GET', path: p = '/', headers = {}, body, timeoutMs = 10000, agent = false } = {}) {
  return new Promise((resolve, reject) => {
    const data = body == null ? null : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const h = { ...headers };
    if (data != null && h['content-length'] == null && h['transfer-encoding'] == null) {
      h['content-length'] = Buffer.byteLength(data);
    }
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: h, agent }, (res) => {
      const chunks = [];
      res.on('data', (c) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(timer);
        const text = Buffer.concat(chunks).toString('utf8');
        let json;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode, headers: res.headers, text, json });
      });
      res.on('error', (e) => {
        clearTimeout(timer);
        reject(e);
      });
    });
    const timer = setTimeout(() => req.destroy(new Error(`request ${method} ${p} timed out after ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    if (data != null) req.write(data);
    req.end();
  });
}

/** POST /v1/chat/completions with a bearer key (or custom auth headers). */
export function chat(port, key, body, { headers, timeoutMs } = {}) {
  const h = { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}), ...(headers || {}) };
  return request(port, { method: 'POST', path: '/v1/chat/completions', headers: h, body, timeoutMs });
}

export function chatBody(model = 'gpt-test', extra = {}) {
  return { model, messages: [{ role: 'user', content: 'Say hello.' }], ...extra };
}

/**
 * Raw HTTP/1.1 over a TCP socket: writes `raw` (string or Buffer, written in
 * pieces if an array), then reads until the server closes, a complete response
 * is parsed, or timeoutMs passes. Tolerates a reset after the response.
 * Resolves {status, headers, body, json, raw, error}.
 */
export function rawHttp(port, raw, { timeoutMs = 5000 } = {}) {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    const chunks = [];
    let settled = false;
    let error = null;
    const done = () => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve({ ...parseRawResponse(Buffer.concat(chunks)), error });
    };
    const timer = setTimeout(() => {
      error = error || new Error(`raw request timed out after ${timeoutMs} ms`);
      done();
    }, timeoutMs);
    sock.on('data', (d) => {
      chunks.push(d);
      const p = parseRawResponse(Buffer.concat(chunks));
      if (p.complete) done();
    });
    sock.on('error', (e) => {
      error = e;
      done();
    });
    sock.on('close', done);
    sock.on('connect', () => {
      const parts = Array.isArray(raw) ? raw : [raw];
      for (const part of parts) {
        if (sock.destroyed) break;
        sock.write(part, () => {});
      }
    });
  });
}

/** Parses one HTTP/1.1 response (Content-Length or chunked). */
export function parseRawResponse(buf) {
  const s = buf.toString('latin1');
  const end = s.indexOf('\r\n\r\n');
  if (end < 0) return { complete: false, status: null, headers: {}, body: '', raw: s };
  const lines = s.slice(0, end).split('\r\n');
  const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0]);
  const headers = {};
  for (const l of lines.slice(1)) {
    const i = l.indexOf(':');
    if (i > 0) headers[l.slice(0, i).trim().toLowerCase()] = l.slice(i + 1).trim();
  }
  const rest = buf.subarray(Buffer.byteLength(s.slice(0, end + 4), 'latin1'));
  let body = '';
  let complete = false;
  if (headers['content-length'] != null) {
    const n = Number(headers['content-length']);
    body = rest.subarray(0, n).toString('utf8');
    complete = rest.length >= n;
  } else if (/chunked/i.test(headers['transfer-encoding'] || '')) {
    let off = 0;
    const out = [];
    for (let guard = 0; guard < 100000; guard++) {
      const nl = rest.indexOf('\r\n', off);
      if (nl < 0) break;
      const size = parseInt(rest.subarray(off, nl).toString('latin1'), 16);
      if (Number.isNaN(size)) break;
      if (size === 0) {
        complete = true;
        break;
      }
      if (rest.length < nl + 2 + size + 2) break;
      out.push(rest.subarray(nl + 2, nl + 2 + size));
      off = nl + 2 + size + 2;
    }
    body = Buffer.concat(out).toString('utf8');
  } else {
    body = rest.toString('utf8');
  }
  let json;
  try {
    json = JSON.parse(body);
  } catch {
    json = undefined;
  }
  return { complete, status: m ? Number(m[1]) : null, headers, body, json, raw: s };
}

/** Asserts the contract's error shape; returns the error object. */
export function expectError(assert, res, status, code, what = '') {
  const ctx = `${what} -> ${res.status} ${typeof res.text === 'string' ? res.text : res.body}`;
  assert.equal(res.status, status, `status for ${ctx}`);
  const j = res.json;
  assert.ok(j && typeof j === 'object' && j.error && typeof j.error === 'object', `error JSON for ${ctx}`);
  assert.equal(j.error.code, code, `error code for ${ctx}`);
  assert.equal(typeof j.error.message, 'string', `error.message for ${ctx}`);
  assert.ok(j.error.message.length > 0, `non-empty error.message for ${ctx}`);
  assert.equal(typeof j.error.type, 'string', `error.type for ${ctx}`);
  const ct = res.headers['content-type'] || '';
  assert.match(ct, /application\/json/i, `content-type for ${ctx}`);
  assert.ok(res.headers['x-request-id'], `x-request-id on ${ctx}`);
  return j.error;
}

/**
 * Parses Prometheus text into [{name, labels, value}].
 */
export function parseMetrics(text) {
  const out = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)(\s+\d+)?$/.exec(line.trim());
    if (!m) continue;
    const labels = {};
    if (m[3]) {
      const re = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;
      let lm;
      while ((lm = re.exec(m[3]))) labels[lm[1]] = lm[2].replace(/\\"/g, '"').replace(/\\n/g, '\n').replace(/\\\\/g, '\\');
    }
    out.push({ name: m[1], labels, value: Number(m[4]) });
  }
  return out;
}

/** The single sample with this name whose labels include `labels`, or undefined. */
export function metricValue(samples, name, labels = {}) {
  const hits = samples.filter(
    (s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v),
  );
  if (hits.length === 0) return undefined;
  return hits.reduce((a, s) => a + s.value, 0);
}

/**
 * Reads an SSE body (string) into its data payloads: JSON objects, and the
 * literal '[DONE]'.
 */
export function parseSSE(text) {
  const events = [];
  for (const block of text.split(/\r?\n\r?\n/)) {
    const data = block
      .split(/\r?\n/)
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(5).replace(/^ /, ''))
      .join('\n');
    if (!data) continue;
    if (data === '[DONE]') events.push('[DONE]');
    else {
      try {
        events.push(JSON.parse(data));
      } catch {
        events.push({ unparsable: data });
      }
    }
  }
  return events;
}

/**
 * POST with a binary-safe answer (AWS event streams): resolves
 * {status, headers, buf, text, json}. `onResponse(res, req)` may read or
 * destroy the response itself (then buf holds what was read so far).
 */
export function requestBytes(port, { method = 'POST', path: p = '/', headers = {}, body, timeoutMs = 15000, onResponse } = {}) {
  return new Promise((resolve, reject) => {
    const data = body == null ? null : typeof body === 'string' || Buffer.isBuffer(body) ? body : JSON.stringify(body);
    const h = { ...headers };
    if (data != null && h['content-length'] == null) h['content-length'] = Buffer.byteLength(data);
    let timer;
    const req = http.request({ host: '127.0.0.1', port, method, path: p, headers: h, agent: false }, (res) => {
      const chunks = [];
      const finish = () => {
        clearTimeout(timer);
        const buf = Buffer.concat(chunks);
        let json;
        try {
          json = JSON.parse(buf.toString('utf8'));
        } catch {}
        resolve({ status: res.statusCode, headers: res.headers, buf, text: buf.toString('utf8'), json, complete: res.complete });
      };
      res.on('data', (c) => chunks.push(c));
      res.on('end', finish);
      res.on('close', finish);
      res.on('error', () => finish());
      if (onResponse) onResponse(res, req, chunks);
    });
    timer = setTimeout(() => req.destroy(new Error(`request ${method} ${p} timed out after ${timeoutMs} ms`)), timeoutMs);
    req.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    if (data != null) req.write(data);
    req.end();
  });
}

/** Polls `usage list` until `n` rows exist; returns them. */
export async function waitForUsageCount(configFile, n, { timeoutMs = 5000 } = {}) {
  return waitFor(
    async () => {
      const rows = await usageList(configFile);
      return rows.length >= n ? rows : null;
    },
    { timeoutMs, intervalMs: 150, message: `${n} usage rows` },
  );
}

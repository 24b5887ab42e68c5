// What a call cost, seen by the caller and in the ledger: an OpenAI route with
// its own price in the config and Bedrock routes priced from the shipped book
// (data/prices.json), with cache tokens at their own rates. Checks the
// x-tollgate-cost-usd header on plain answers, the final SSE comment of an
// OpenAI stream (and that the openai@6 client ignores it), the cost columns
// of the usage rows to the picodollar, unpriced calls, and `prices show`.
// Expected values are computed here with BigInt from the decimal prices.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import OpenAI from 'openai';
import { startFakeOpenAI } from './fake-openai.mjs';
import { startFakeBedrock, staticCreds, CACHE_READ, CACHE_WRITE } from './fake-aws.mjs';
import {
  requireBinary,
  makeTmpDir,
  writeConfig,
  createKey,
  startGateway,
  stopEnv,
  requestBytes,
  waitForUsage,
  failureTracker,
  runCli,
} from './harness.mjs';

async function cliOk(args) {
  const r = await runCli(args);
  assert.equal(r.code, 0, `tollgate ${args.join(' ')}: ${r.stderr}`);
  return r;
}

const T = { timeout: 60000 };
const SONNET37 = 'anthropic.claude-3-7-sonnet-20250219-v1:0';
// The shipped book's us-east-1 price for it, USD per million tokens.
const SONNET37_PRICE = { input: '3.00', output: '15.00', cache_read: '0.30', cache_write: '3.75' };
const ROUTE_PRICE = { input: '0.15', output: '0.60', cache_read: '0.075' };

/** A decimal string of USD per million tokens as picodollars per token (BigInt). */
function picoPerToken(s) {
  const [w, f = ''] = s.split('.');
  assert.ok(f.length <= 6, `price ${s} is exact to the picodollar`);
  return BigInt(w) * 1000000n + BigInt((f + '000000').slice(0, 6));
}

/** Picodollars as tollgate writes USD: exact, trailing zeros trimmed. */
function usd(pico) {
  const neg = pico < 0n;
  const m = neg ? -pico : pico;
  const whole = m / 10n ** 12n;
  const frac = (m % 10n ** 12n).toString().padStart(12, '0').replace(/0+$/, '');
  return `${neg ? '-' : ''}${whole}${frac ? `.${frac}` : ''}`;
}

/** The expected cost parts of a usage row's counts at a price. */
function expected(row, price) {
  const part = (tokens, p) => (tokens ? BigInt(tokens) * picoPerToken(p) : 0n);
  const e = {
    cost_input: part(row.input_tokens, price.input),
    cost_output: part(row.output_tokens, price.output),
    cost_cache_read: part(row.cache_read_tokens, price.cache_read),
    cost_cache_write: part(row.cache_write_tokens, price.cache_write),
    cost_images: 0n,
  };
  e.cost_total = e.cost_input + e.cost_output + e.cost_cache_read + e.cost_cache_write;
  return e;
}

function assertCosts(row, exp) {
  for (const [k, v] of Object.entries(exp)) {
    assert.equal(BigInt(row[k]), v, `${k} in ${JSON.stringify(row)}`);
    assert.equal(row[`${k.slice(5)}_usd`], usd(v), `${k.slice(5)}_usd`);
  }
  assert.equal(row.unpriced, false, 'priced');
}

describe('cost of every call', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  const registry = new Map();
  let oai, br, env, key, port, client;

  before(tracker.guard(async () => {
    requireBinary();
    oai = await startFakeOpenAI({
      behavior: { text: 'Priced words here.', promptTokens: 1234, completionTokens: 567, cachedTokens: 200, chunks: 3 },
    });
    const creds = staticCreds(registry);
    br = await startFakeBedrock({ registry });
    const dir = makeTmpDir('cost');
    const config = {
      listen: '127.0.0.1:0',
      workers: 2,
      store: { path: path.join(dir, 't.db') },
      // No "prices": the shipped book is found by the default rule.
      providers: [
        { name: 'oai', type: 'openai', base_url: `http://127.0.0.1:${oai.port}/v1`, api_key_env: 'FAKE_UPSTREAM_KEY' },
        {
          name: 'br',
          type: 'bedrock',
          region: 'us-east-1',
          endpoint: br.url,
          auth: 'sigv4',
          credentials: { access_key_id_env: 'TG_T_AK', secret_access_key_env: 'TG_T_SK' },
          catalog: { refresh_s: 0 },
        },
      ],
      models: [
        { id: 'priced-gpt', provider: 'oai', upstream_model: 'up-gpt', price: ROUTE_PRICE },
        { id: 'free-gpt', provider: 'oai', upstream_model: 'up-unknown' },
        { id: 'sonnet', provider: 'br', upstream_model: `us.${SONNET37}` },
      ],
    };
    const configFile = writeConfig(dir, config);
    key = await createKey(configFile, 'team-cost');
    const gw = await startGateway(configFile, {
      env: { FAKE_UPSTREAM_KEY: oai.apiKey, TG_T_AK: creds.accessKeyId, TG_T_SK: creds.secretAccessKey },
    });
    env = { dir, config, configFile, gw };
    port = gw.port;
    client = new OpenAI({ baseURL: gw.baseURL, apiKey: key, maxRetries: 0, timeout: 10000 });
  }), { timeout: 30000 });

  after(async () => {
    await stopEnv(env, { failed: tracker.failed });
    await oai?.close();
    await br?.close();
  }, { timeout: 15000 });

  const post = (p, body) =>
    requestBytes(port, { path: p, body, headers: { 'content-type': 'application/json', authorization: `Bearer ${key}` } });

  test('OpenAI route with a configured price: header and row, exact', T, async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'priced-gpt', messages: [{ role: 'user', content: 'how much?' }] })
      .withResponse();
    assert.equal(data.choices[0].message.content, 'Priced words here.');
    const row = await waitForUsage(env.configFile, response.headers.get('x-request-id'));
    assert.equal(row.input_tokens, 1234 - 200);
    assert.equal(row.cache_read_tokens, 200);
    assert.equal(row.output_tokens, 567);
    const exp = expected(row, ROUTE_PRICE);
    assert.equal(exp.cost_total, 1034n * 150000n + 567n * 600000n + 200n * 75000n);
    assertCosts(row, exp);
    assert.equal(row.price_version, 'config');
    assert.equal(response.headers.get('x-tollgate-cost-usd'), usd(exp.cost_total));
    assert.equal(response.headers.get('x-tollgate-cost-usd'), '0.0005103');
  });

  test('OpenAI stream: the cost as a final SSE comment before [DONE]; openai@6 ignores it', T, async () => {
    const raw = await post('/v1/chat/completions', { model: 'priced-gpt', stream: true, messages: [{ role: 'user', content: 'stream it' }] });
    assert.equal(raw.status, 200);
    const m = /\n\n: x-tollgate-cost-usd=([0-9.]+)\n\ndata: \[DONE\]\n\n$/.exec(raw.text);
    assert.ok(m, `comment then [DONE] at the end: ${JSON.stringify(raw.text.slice(-160))}`);
    const row = await waitForUsage(env.configFile, raw.headers['x-request-id']);
    const exp = expected(row, ROUTE_PRICE);
    assertCosts(row, exp);
    assert.equal(m[1], usd(exp.cost_total));
    assert.equal(row.streamed, true);

    // The official client reads the same stream without complaint.
    let text = '';
    let chunks = 0;
    const stream = await client.chat.completions.create({ model: 'priced-gpt', stream: true, messages: [{ role: 'user', content: 'again' }] });
    for await (const c of stream) {
      chunks++;
      text += c.choices[0]?.delta?.content || '';
    }
    assert.equal(text, 'Priced words here.');
    assert.ok(chunks >= 3);
  });

  test('a model without a price: zero cost, flagged, header 0', T, async () => {
    const r = await post('/v1/chat/completions', { model: 'free-gpt', messages: [{ role: 'user', content: 'free?' }] });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-tollgate-cost-usd'], '0');
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assert.equal(row.unpriced, true);
    assert.equal(row.cost_total, 0);
    assert.equal(row.total_usd, '0');
    assert.equal(row.price_version, 'none');
    assert.ok(row.input_tokens > 0, 'tokens still recorded');
  });

  test('Bedrock Converse through a us. profile: base model from the shipped book, cache at its own rates', T, async () => {
    const r = await post('/model/sonnet/converse', {
      system: [{ text: 'be brief' }, { cachePoint: { type: 'default' } }],
      messages: [{ role: 'user', content: [{ text: 'price me with a cache' }] }],
      inferenceConfig: { maxTokens: 16 },
    });
    assert.equal(r.status, 200, r.text);
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assert.equal(row.cache_read_tokens, CACHE_READ);
    assert.equal(row.cache_write_tokens, CACHE_WRITE);
    assert.equal(row.region, 'us-east-1');
    const exp = expected(row, SONNET37_PRICE);
    assert.equal(exp.cost_cache_read, BigInt(CACHE_READ) * 300000n, 'cache read at 0.30/M, not 3.00/M');
    assert.equal(exp.cost_cache_write, BigInt(CACHE_WRITE) * 3750000n, 'cache write at 3.75/M');
    assertCosts(row, exp);
    assert.match(row.price_version, /^tg-/);
    assert.equal(r.headers['x-tollgate-cost-usd'], usd(exp.cost_total));
    // The body is the model's, untouched.
    assert.ok(r.json && r.json.usage && r.json.output, 'Converse body passed through');
  });

  test('Bedrock InvokeModel: counts from the headers, priced the same way', T, async () => {
    const r = await post('/model/sonnet/invoke', {
      anthropic_version: 'bedrock-2023-05-31',
      max_tokens: 20,
      system: [{ type: 'text', text: 'be brief', cache_control: { type: 'ephemeral' } }],
      messages: [{ role: 'user', content: 'invoke with a cache' }],
    });
    assert.equal(r.status, 200, r.text);
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assert.equal(row.cache_read_tokens, CACHE_READ);
    assert.equal(row.cache_write_tokens, CACHE_WRITE);
    const exp = expected(row, SONNET37_PRICE);
    assertCosts(row, exp);
    assert.equal(r.headers['x-tollgate-cost-usd'], usd(exp.cost_total));
  });

  test('Bedrock ConverseStream: no extra frame; the cost is in the row', T, async () => {
    const r = await post('/model/sonnet/converse-stream', {
      system: [{ text: 'be brief' }, { cachePoint: { type: 'default' } }],
      messages: [{ role: 'user', content: [{ text: 'stream with a cache' }] }],
      inferenceConfig: { maxTokens: 16 },
    });
    assert.equal(r.status, 200);
    assert.equal(r.headers['x-tollgate-cost-usd'], undefined, 'headers went out before the cost was known');
    const row = await waitForUsage(env.configFile, r.headers['x-request-id']);
    assertCosts(row, expected(row, SONNET37_PRICE));
    assert.ok(BigInt(row.cost_total) > 0n);
  });

  test('prices show: the effective prices of a profile id and of a route', T, async () => {
    let out = (await cliOk(['prices', 'show', '--config', env.configFile, '--model', `us.${SONNET37}`, '--region', 'us-east-1'])).stdout;
    const line = out.split('\n').find((l) => l.startsWith(SONNET37));
    assert.ok(line, out);
    assert.deepEqual(line.split(/\s+/).slice(1, 7), ['us-east-1', '-', '3.00', '15.00', '0.30', '3.75']);
    out = (await cliOk(['prices', 'show', '--config', env.configFile, '--model', 'priced-gpt'])).stdout;
    assert.match(out, /route:priced-gpt\s+\*\s+-\s+0\.15\s+0\.60\s+0\.075\s+-\s+config/);
  });
});

// Chargeback reports: the reference README's example table reproduced from
// synthetic events, report totals equal to the events' sums for random
// events and random groupings (property), a price change at noon, daily files
// that are the same bytes when re-run, a run killed midway that the next run
// completes, the schedule inside the gateway (late events re-report the day)
// and GET /admin/reports on the admin listener.
//
// Events reach the ledger through `tollgate usage import` (priced there with
// the same code every door uses); expected money is computed here with BigInt
// from the decimal prices, never with floating point.

import { test, describe, before, after, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { startFakeS3 } from './fake-s3.mjs';
import { startFakeOpenAI } from './fake-openai.mjs';
import {
  requireBinary,
  makeTmpDir,
  removeTmpDir,
  writeConfig,
  createKey,
  listKeys,
  keyEntryFor,
  startGateway,
  runCli,
  usageList,
  request,
  waitFor,
  failureTracker,
} from './harness.mjs';

const T = { timeout: 120000 };

async function cli(args, opts) {
  const r = await runCli(args, { timeoutMs: 60000, ...opts });
  assert.equal(r.code, 0, `tollgate ${args.join(' ')}: code ${r.code}\n${r.stderr}`);
  return r;
}

/** USD per million tokens (decimal string) as picodollars per token. */
function picoPerToken(s) {
  const [w, f = ''] = s.split('.');
  assert.ok(f.length <= 6, `price ${s} is exact to the picodollar`);
  return BigInt(w) * 1000000n + BigInt((f + '000000').slice(0, 6));
}

/** An exact USD decimal string as picodollars. */
function pico(s) {
  assert.match(s, /^-?\d+(\.\d{1,12})?$/, `money ${s} is an exact decimal`);
  const neg = s.startsWith('-');
  const [w, f = ''] = (neg ? s.slice(1) : s).split('.');
  const v = BigInt(w) * 10n ** 12n + BigInt((f + '000000000000').slice(0, 12));
  return neg ? -v : v;
}

/** Picodollars rounded half away from zero to d decimals, zeros trimmed. */
function usdRounded(p, d) {
  const scale = 10n ** BigInt(12 - d);
  let q = p / scale;
  const r = p % scale;
  if (r * 2n >= scale) q += 1n;
  const whole = q / 10n ** BigInt(d);
  const frac = (q % 10n ** BigInt(d)).toString().padStart(d, '0').replace(/0+$/, '');
  return `${whole}${frac ? `.${frac}` : ''}`;
}

function writeJsonl(dir, name, events) {
  const file = path.join(dir, name);
  fs.writeFileSync(file, events.map((e) => JSON.stringify(e)).join('\n') + '\n');
  return file;
}

function writePrices(dir, entries, name = 'prices.json') {
  const file = path.join(dir, name);
  fs.writeFileSync(file, JSON.stringify({ version: 'test-1', entries }, null, 2));
  return file;
}

function baseConfig(dir, extra = {}) {
  return {
    listen: '127.0.0.1:0',
    workers: 1,
    store: { path: path.join(dir, 't.db') },
    providers: [],
    models: [],
    ...extra,
  };
}

const DAY = '2026-11-20';
const DAY_MS = Date.UTC(2026, 10, 20);

/** A Markdown table as header + rows of trimmed cells. */
function parseMarkdown(text) {
  const lines = text.trim().split('\n').filter((l) => l.startsWith('|'));
  const cells = (l) => l.slice(1, -1).split('|').map((c) => c.trim());
  const header = cells(lines[0]);
  assert.ok(/^(\|\s*-{3,}:?\s*)+\|$/.test(lines[1]), 'second line is the rule');
  return { header, rows: lines.slice(2).map(cells) };
}

function parseCsv(text) {
  const lines = text.trimEnd().split('\n');
  const header = lines[0].split(',');
  return lines.slice(1).map((l) => Object.fromEntries(l.split(',').map((v, i) => [header[i], v])));
}

describe('chargeback reports', () => {
  const tracker = failureTracker();
  afterEach(tracker.afterEach);
  const dirs = [];
  const gateways = [];
  const mkdir = (p) => {
    const d = makeTmpDir(p);
    dirs.push(d);
    return d;
  };

  before(() => requireBinary());
  after(async () => {
    for (const gw of gateways) await gw.stop();
    if (!tracker.failed) for (const d of dirs) removeTmpDir(d);
  });

  test("the reference README's example table, reproduced from synthetic events", T, async () => {
    // The README's table (copied verbatim from the reference's README).
    const README = `
| team_id | model_id | input_tokens | output_tokens | invocations | input_cost | output_cost |
|---------|----------|--------------|---------------|-------------|------------|-------------|
| tenant1 | amazon.titan-tg1-large | 24000        | 2473          | 1000        | 0.0072     | 0.00099     |
| tenant1 | anthropic.claude-v2 | 2448         | 4800          | 24          | 0.02698    | 0.15686     |
| tenant2 | amazon.titan-tg1-large | 35000        | 52500         | 350         | 0.0105     | 0.021       |
| tenant2 | ai21.j2-grande-instruct | 4590         | 9000          | 45          | 0.05738    | 0.1125      |
| tenant2 | anthropic.claude-v2 | 1080         | 4400          | 20          | 0.0119     | 0.14379     |`;
    const want = parseMarkdown(README);
    // The table predates the reference's models.json: its numbers are the
    // 2023 Bedrock prices (per 1K tokens: Titan TG1 Large 0.0003 / 0.0004,
    // Claude v2 0.01102 / 0.03268, Jurassic-2 Grande 0.0125 / 0.0125), here
    // per million tokens. At models.json's prices the same events cost less.
    const dir = mkdir('report-readme');
    const prices = writePrices(dir, [
      { model: 'amazon.titan-tg1-large', region: 'us-east-1', input: '0.30', output: '0.40', source: 'reference README (2023)' },
      { model: 'anthropic.claude-v2', region: 'us-east-1', input: '11.02', output: '32.68', source: 'reference README (2023)' },
      { model: 'ai21.j2-grande-instruct', region: 'us-east-1', input: '12.50', output: '12.50', source: 'reference README (2023)' },
    ]);
    const configFile = writeConfig(dir, baseConfig(dir, { price_overrides: [prices] }));
    // Split each row's totals over its invocations, at times spread over the day.
    const events = [];
    let n = 0;
    for (const [team, model, inTok, outTok, calls] of want.rows) {
      const c = Number(calls);
      for (let i = 0; i < c; i++) {
        const share = (total) => Math.floor(Number(total) / c) + (i < Number(total) % c ? 1 : 0);
        events.push({
          started_ms: DAY_MS + ((n++ * 7919) % 86400) * 1000,
          team,
          model,
          region: 'us-east-1',
          input_tokens: share(inTok),
          output_tokens: share(outTok),
          request_id: `req_${team}_${model}_${i}`,
        });
      }
    }
    const file = writeJsonl(dir, 'events.jsonl', events);
    const imp = await cli(['usage', 'import', '--config', configFile, file]);
    assert.match(imp.stdout, /imported 1439 new events of 1439 read \(0 unpriced\)/);
    const r = await cli(['report', '--config', configFile, '--from', DAY, '--group-by', 'team,model', '--format', 'markdown', '--decimals', '5']);
    const got = parseMarkdown(r.stdout);
    assert.deepEqual(got.header.slice(0, 7), want.header, 'the reference columns come first, in its order');
    const key = (row) => `${row[0]}|${row[1]}`;
    const gotRows = new Map(got.rows.map((row) => [key(row), row.slice(0, 7)]));
    assert.equal(gotRows.size, want.rows.length);
    for (const row of want.rows) assert.deepEqual(gotRows.get(key(row)), row, `row ${key(row)}`);
    // Unrounded, the money is exact: 2473 Titan output tokens at 0.40/M.
    const exact = await cli(['report', '--config', configFile, '--from', DAY, '--format', 'json']);
    const doc = JSON.parse(exact.stdout);
    const titan1 = doc.rows.find((x) => x.team_id === 'tenant1' && x.model_id === 'amazon.titan-tg1-large');
    assert.equal(titan1.output_cost, '0.0009892');
    assert.equal(pico(doc.totals.total_cost), doc.rows.reduce((s, x) => s + pico(x.total_cost), 0n));
    // The daily job writes the same numbers as CSV, reference columns first.
    await cli(['report', 'run', '--config', configFile, '--date', DAY]);
    const csvText = fs.readFileSync(path.join(dir, 'reports', 'succeed', `${DAY}.csv`), 'utf8');
    assert.ok(
      csvText.startsWith(
        'team_id,model_id,input_tokens,output_tokens,invocations,input_cost,output_cost,unit,key_prefix,',
      ),
      csvText.slice(0, 200),
    );
    const csvRows = parseCsv(csvText);
    const claude2 = csvRows.find((x) => x.team_id === 'tenant2' && x.model_id === 'anthropic.claude-v2');
    assert.equal(claude2.input_cost, '0.0119016');
    assert.equal(claude2.output_cost, '0.143792');
    assert.equal(claude2.invocations, '20');
    assert.equal(claude2.region, 'us-east-1');
    assert.equal(claude2.date, DAY);
    assert.ok(!fs.existsSync(path.join(dir, 'reports', 'errors', `${DAY}.txt`)), 'nothing flagged');
  });

  test('property: random events, random groupings, totals equal the event sums exactly', T, async () => {
    const dir = mkdir('report-prop');
    // A deterministic generator so a failure can be replayed.
    let seed = 0x2545f491;
    const rnd = (n) => {
      seed ^= seed << 13;
      seed ^= seed >>> 17;
      seed ^= seed << 5;
      return (seed >>> 0) % n;
    };
    const PRICES = {
      'p-small': { input: '0.000001', output: '0.000003', cache_read: '0.000001', cache_write: '0.000002' },
      'p-big': { input: '15.00', output: '75.00', cache_read: '1.50', cache_write: '18.75' },
      'p-odd': { input: '0.333333', output: '1.777777' },
    };
    const prices = writePrices(
      dir,
      Object.entries(PRICES).map(([model, p]) => ({ model, region: '*', ...p, source: 'test' })),
    );
    const configFile = writeConfig(dir, baseConfig(dir, { price_overrides: [prices] }));
    const keyA = await createKey(configFile, 'team-a');
    const keys = await listKeys(configFile);
    const keyIdA = keyEntryFor(keys, keyA).id;
    const models = [...Object.keys(PRICES), 'unpriced-model'];
    const events = [];
    for (let i = 0; i < 600; i++) {
      const big = rnd(10) === 0;
      events.push({
        id: `evt_prop_${i}`,
        started_ms: DAY_MS - 86400000 + rnd(3 * 86400) * 1000 + rnd(1000),
        unit: ['u1', 'u2'][rnd(2)],
        team: ['team-a', 'team-b', 'team,c "q"'][rnd(3)],
        key_id: [keyIdA, 'key_gone', ''][rnd(3)],
        model: models[rnd(models.length)],
        region: ['us-east-1', 'eu-west-1'][rnd(2)],
        input_tokens: big ? 400000000 + rnd(1000) : rnd(50000),
        output_tokens: big ? 200000000 : rnd(8000),
        cache_read_tokens: rnd(3) === 0 ? rnd(100000) : 0,
        cache_write_tokens: rnd(4) === 0 ? rnd(20000) : 0,
        outcome: rnd(8) === 0 ? 'abandoned' : 'ok',
        token_source: rnd(10) === 0 ? 'estimated' : 'provider',
      });
    }
    await cli(['usage', 'import', '--config', configFile, writeJsonl(dir, 'events.jsonl', events)]);
    const rows = (await usageList(configFile)).filter((e) => e.id.startsWith('evt_prop_'));
    assert.equal(rows.length, events.length);
    // Each event's cost, independently: count x price, part by part.
    for (const e of rows) {
      const p = PRICES[e.model];
      const part = (tok, price) => (p && price ? BigInt(tok) * picoPerToken(price) : 0n);
      const parts = {
        input_usd: part(e.input_tokens, p?.input),
        output_usd: part(e.output_tokens, p?.output),
        cache_read_usd: part(e.cache_read_tokens, p?.cache_read),
        cache_write_usd: part(e.cache_write_tokens, p?.cache_write),
      };
      for (const [k, v] of Object.entries(parts)) assert.equal(pico(e[k]), v, `${e.id} ${k}`);
      assert.equal(pico(e.total_usd), Object.values(parts).reduce((a, b) => a + b, 0n), `${e.id} total`);
      const missing = !p || (e.cache_read_tokens > 0 && !p.cache_read) || (e.cache_write_tokens > 0 && !p.cache_write);
      assert.equal(e.unpriced, missing, `${e.id} unpriced flag`);
    }
    const prefixA = keyEntryFor(keys, keyA).prefix;
    const dims = ['unit', 'team', 'key', 'model', 'region', 'day'];
    const MEASURES = [
      ['invocations', () => 1n],
      ['input_tokens', (e) => BigInt(e.input_tokens)],
      ['output_tokens', (e) => BigInt(e.output_tokens)],
      ['cache_read_tokens', (e) => BigInt(e.cache_read_tokens)],
      ['cache_write_tokens', (e) => BigInt(e.cache_write_tokens)],
      ['input_cost', (e) => pico(e.input_usd)],
      ['output_cost', (e) => pico(e.output_usd)],
      ['cache_read_cost', (e) => pico(e.cache_read_usd)],
      ['cache_write_cost', (e) => pico(e.cache_write_usd)],
      ['total_cost', (e) => pico(e.total_usd)],
      ['unpriced_invocations', (e) => (e.unpriced ? 1n : 0n)],
      ['estimated_invocations', (e) => (e.token_source === 'estimated' ? 1n : 0n)],
      ['failed_invocations', (e) => (e.outcome !== 'ok' ? 1n : 0n)],
    ];
    const dimOf = {
      unit: (e) => e.unit,
      team: (e) => e.team,
      key: (e) => e.key_id,
      model: (e) => e.model,
      region: (e) => e.region,
      day: (e) => new Date(e.started_ms - (e.started_ms % 86400000)).toISOString().slice(0, 10),
    };
    const rowDim = {
      unit: (r) => r.unit,
      team: (r) => r.team_id,
      key: (r) => r.key_id,
      model: (r) => r.model_id,
      region: (r) => r.region,
      day: (r) => r.date,
    };
    const from = new Date(DAY_MS - 86400000).toISOString().slice(0, 10);
    const to = new Date(DAY_MS + 86400000).toISOString().slice(0, 10);
    for (let round = 0; round < 8; round++) {
      const group = dims.filter(() => rnd(2) === 1);
      const args = ['report', '--config', configFile, '--from', from, '--to', to, '--format', 'json'];
      if (group.length) args.push('--group-by', group.join(','));
      else args.push('--group-by', '');
      const doc = JSON.parse((await cli(args)).stdout);
      const expect = new Map();
      for (const e of rows) {
        const k = JSON.stringify(group.map((d) => dimOf[d](e)));
        if (!expect.has(k)) expect.set(k, Object.fromEntries(MEASURES.map(([m]) => [m, 0n])));
        const acc = expect.get(k);
        for (const [m, f] of MEASURES) acc[m] += f(e);
      }
      assert.equal(doc.rows.length, expect.size, `rows for grouping [${group}]`);
      const num = (v) => (typeof v === 'string' ? pico(v) : BigInt(v));
      const total = Object.fromEntries(MEASURES.map(([m]) => [m, 0n]));
      for (const r of doc.rows) {
        const k = JSON.stringify(group.map((d) => rowDim[d](r)));
        const acc = expect.get(k);
        assert.ok(acc, `unexpected row ${k} for grouping [${group}]`);
        for (const [m] of MEASURES) {
          assert.equal(num(r[m]), acc[m], `${m} of ${k} for grouping [${group}]`);
          total[m] += num(r[m]);
        }
        if (group.includes('key')) assert.equal(r.key_prefix, r.key_id === keyIdA ? prefixA : '', 'key prefix');
      }
      for (const [m] of MEASURES) assert.equal(num(doc.totals[m]), total[m], `total ${m} for grouping [${group}]`);
    }
    // Filters narrow the same sums.
    const onlyA = JSON.parse((await cli(['report', '--config', configFile, '--from', from, '--to', to, '--format', 'json', '--team', 'team-a', '--group-by', 'team'])).stdout);
    const sumA = rows.filter((e) => e.team === 'team-a').reduce((s, e) => s + pico(e.total_usd), 0n);
    assert.equal(onlyA.rows.length, 1);
    assert.equal(pico(onlyA.totals.total_cost), sumA);
    // The CSV keeps a team name with a comma and quotes in one quoted field.
    const csv = (await cli(['report', '--config', configFile, '--from', from, '--to', to, '--format', 'csv', '--group-by', 'team'])).stdout;
    assert.ok(csv.includes('\n"team,c ""q""",'), csv);
  });

  test('a price change at noon: calls before and after are charged at their own prices', T, async () => {
    const dir = mkdir('report-noon');
    const prices = writePrices(dir, [
      { model: 'm-noon', region: 'us-east-1', effective_from: '2026-11-01', input: '1.00', output: '2.00', source: 'test' },
      { model: 'm-noon', region: 'us-east-1', effective_from: `${DAY}T12:00:00Z`, input: '3.00', output: '5.00', source: 'test' },
    ]);
    const configFile = writeConfig(dir, baseConfig(dir, { price_overrides: [prices] }));
    const noon = DAY_MS + 12 * 3600000;
    const base = { team: 'team-n', model: 'm-noon', region: 'us-east-1', input_tokens: 1000, output_tokens: 100 };
    const file = writeJsonl(dir, 'noon.jsonl', [
      { ...base, id: 'evt_before', started_ms: noon - 1 },
      { ...base, id: 'evt_after', started_ms: noon },
    ]);
    await cli(['usage', 'import', '--config', configFile, file]);
    const byId = Object.fromEntries((await usageList(configFile)).map((e) => [e.id, e]));
    assert.equal(pico(byId.evt_before.total_usd), 1000n * 1000000n + 100n * 2000000n);
    assert.equal(pico(byId.evt_after.total_usd), 1000n * 3000000n + 100n * 5000000n);
    assert.notEqual(byId.evt_before.price_version, byId.evt_after.price_version);
    const doc = JSON.parse((await cli(['report', '--config', configFile, '--from', DAY, '--group-by', 'hour', '--format', 'json'])).stdout);
    assert.deepEqual(
      doc.rows.map((r) => [r.hour, r.total_cost]),
      [
        [`${DAY}T11:00Z`, '0.0012'],
        [`${DAY}T12:00Z`, '0.0035'],
      ],
    );
    assert.equal(doc.totals.total_cost, '0.0047');
  });

  test('a price change during live calls: each call is charged at the price in force when it started', T, async () => {
    const oai = await startFakeOpenAI({ behavior: { text: 'ok', promptTokens: 1000, completionTokens: 100 } });
    try {
      const dir = mkdir('report-live');
      // The new price takes effect at the next whole second, 2 s or more away.
      const changeMs = Math.ceil((Date.now() + 2000) / 1000) * 1000;
      const at = new Date(changeMs).toISOString().replace('.000Z', 'Z');
      const prices = writePrices(dir, [
        { model: 'm-live', region: '*', input: '1.00', output: '2.00', source: 'test' },
        { model: 'm-live', region: '*', effective_from: at, input: '3.00', output: '5.00', source: 'test' },
      ]);
      const configFile = writeConfig(dir, baseConfig(dir, {
        price_overrides: [prices],
        providers: [{ name: 'oai', type: 'openai', base_url: `http://127.0.0.1:${oai.port}/v1`, api_key_env: 'FAKE_UPSTREAM_KEY' }],
        models: [{ id: 'm-live', provider: 'oai', upstream_model: 'up-live' }],
      }));
      const key = await createKey(configFile, 'team-live');
      const gw = await startGateway(configFile, { env: { FAKE_UPSTREAM_KEY: oai.apiKey } });
      gateways.push(gw);
      const call = () => request(gw.port, {
        method: 'POST',
        path: '/v1/chat/completions',
        headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
        body: { model: 'm-live', messages: [{ role: 'user', content: 'hi' }] },
      });
      const before = await call();
      assert.equal(before.status, 200, before.text);
      assert.ok(Date.now() < changeMs, 'the first call finished before the change');
      await waitFor(() => Date.now() >= changeMs + 20, { timeoutMs: 5000, intervalMs: 50, message: 'the change time' });
      const afterCall = await call();
      assert.equal(afterCall.status, 200, afterCall.text);
      assert.equal(before.headers['x-tollgate-cost-usd'], '0.0012', '1000 x 1.00/M + 100 x 2.00/M');
      assert.equal(afterCall.headers['x-tollgate-cost-usd'], '0.0035', '1000 x 3.00/M + 100 x 5.00/M');
      const day = new Date().toISOString().slice(0, 10);
      const doc = JSON.parse((await cli(['report', '--config', configFile, '--from', day, '--group-by', 'model', '--format', 'json'])).stdout);
      assert.equal(doc.totals.total_cost, '0.0047');
      assert.equal(doc.totals.invocations, 2);
      await gw.stop();
    } finally {
      await oai.close();
    }
  });

  test('daily files: re-running gives the same bytes; a run killed midway is completed by the next', T, async () => {
    const dir = mkdir('report-files');
    const configFile = writeConfig(dir, baseConfig(dir));
    const events = [];
    for (let i = 0; i < 50; i++) {
      events.push({
        id: `evt_f_${i}`,
        started_ms: DAY_MS + i * 1700000,
        team: i % 10 === 0 ? 'team-0' : `team-${i % 3}`,
        // Claude 3 Haiku is in the shipped book; "mystery" is not.
        model: i % 10 === 0 ? 'mystery-model' : 'anthropic.claude-3-haiku-20240307-v1:0',
        region: 'us-east-1',
        input_tokens: 100 + i,
        output_tokens: 10 + i,
      });
    }
    await cli(['usage', 'import', '--config', configFile, writeJsonl(dir, 'f.jsonl', events)]);
    const rdir = path.join(dir, 'reports');
    const files = [`succeed/${DAY}.csv`, `succeed/${DAY}.jsonl`, `errors/${DAY}.txt`];
    const read = () => Object.fromEntries(files.map((f) => [f, fs.existsSync(path.join(rdir, f)) ? fs.readFileSync(path.join(rdir, f)) : null]));
    await cli(['report', 'run', '--config', configFile, '--date', DAY]);
    const first = read();
    for (const f of files) assert.ok(first[f] && first[f].length > 0, `${f} written`);
    assert.match(first[`errors/${DAY}.txt`].toString(), /unpriced date=2026-11-20 .*model=mystery-model .*invocations=5 unpriced_invocations=5/);
    // JSON lines: one parseable object per row, the same rows as the CSV.
    const jl = first[`succeed/${DAY}.jsonl`].toString().trim().split('\n').map((l) => JSON.parse(l));
    assert.equal(jl.length, parseCsv(first[`succeed/${DAY}.csv`].toString()).length);
    await cli(['report', 'run', '--config', configFile, '--date', DAY]);
    const second = read();
    for (const f of files) assert.ok(first[f].equals(second[f]), `${f} is the same bytes on a re-run`);

    // Killed after the CSV is in place, before the JSON lines: every visible
    // file is whole, and a temporary file left by a dead run is cleaned up.
    fs.rmSync(path.join(rdir, 'succeed'), { recursive: true });
    fs.rmSync(path.join(rdir, 'errors'), { recursive: true });
    const killed = await runCli(['report', 'run', '--config', configFile, '--date', DAY], { env: { TOLLGATE_TEST_CRASH_AT: 'report:after-csv' } });
    assert.equal(killed.code, 86, `the run stopped where it was told to: ${killed.stderr}`);
    assert.ok(fs.readFileSync(path.join(rdir, 'succeed', `${DAY}.csv`)).equals(first[`succeed/${DAY}.csv`]), 'the CSV is whole');
    assert.ok(!fs.existsSync(path.join(rdir, 'succeed', `${DAY}.jsonl`)), 'the JSON lines were not written yet');
    const stale = path.join(rdir, 'succeed', `.${DAY}.jsonl.2147480000.tmp`);
    fs.writeFileSync(stale, '{"half":');
    const visible = fs.readdirSync(path.join(rdir, 'succeed')).filter((n) => !n.startsWith('.'));
    assert.deepEqual(visible, [`${DAY}.csv`], 'no partial report under its real name');

    // The gateway's schedule finds the day still pending and completes it.
    const gw = await startGateway(configFile);
    gateways.push(gw);
    await waitFor(() => files.every((f) => fs.existsSync(path.join(rdir, f))), { timeoutMs: 10000, message: 'the schedule to finish the day' });
    await waitFor(() => !fs.existsSync(stale), { timeoutMs: 5000, message: 'the stale temporary file to be removed' });
    const third = read();
    for (const f of files) assert.ok(first[f].equals(third[f]), `${f} completed, the same bytes`);
    await gw.stop();
  });

  test('the schedule: past days reported at start, a late event re-reports its day', T, async () => {
    const dir = mkdir('report-sched');
    const configFile = writeConfig(dir, baseConfig(dir, { reports: { refresh_s: 1, dir: path.join(dir, 'out') } }));
    const ev = (id, t, tokens) => ({ id, started_ms: t, team: 'team-s', model: 'anthropic.claude-3-haiku-20240307-v1:0', region: 'us-east-1', input_tokens: tokens, output_tokens: 1 });
    await cli(['usage', 'import', '--config', configFile, writeJsonl(dir, 'a.jsonl', [ev('evt_s1', DAY_MS + 1000, 1000)])]);
    const csvPath = path.join(dir, 'out', 'succeed', `${DAY}.csv`);
    const gw = await startGateway(configFile);
    gateways.push(gw);
    await waitFor(() => fs.existsSync(csvPath), { timeoutMs: 10000, message: 'the day report' });
    assert.equal(parseCsv(fs.readFileSync(csvPath, 'utf8'))[0].input_tokens, '1000');
    // Today is not over: nothing for it yet, even with events.
    const today = new Date().toISOString().slice(0, 10);
    await cli(['usage', 'import', '--config', configFile, writeJsonl(dir, 'b.jsonl', [ev('evt_now', Date.now(), 5), ev('evt_late', DAY_MS + 7200000, 234)])]);
    await waitFor(() => parseCsv(fs.readFileSync(csvPath, 'utf8'))[0].input_tokens === '1234', { timeoutMs: 10000, message: 'the late event in the day report' });
    assert.ok(!fs.existsSync(path.join(dir, 'out', 'succeed', `${today}.csv`)), 'today is not reported before it ends');
    await gw.stop();
  });

  test('copies to S3: each file PUT, signed; a failed upload is retried at the next refresh', T, async () => {
    const creds = { accessKeyId: 'AKIDREPORTS0000001', secretAccessKey: 'reports/secret/0123456789abcdefghij', sessionToken: 'report-session-token' };
    const s3 = await startFakeS3({ ...creds, region: 'eu-west-1', buckets: ['tg-chargeback'] });
    try {
      const dir = mkdir('report-s3');
      const configFile = writeConfig(dir, baseConfig(dir, {
        reports: {
          refresh_s: 1,
          s3: {
            bucket: 'tg-chargeback',
            region: 'eu-west-1',
            endpoint: s3.url,
            prefix: 'finance/daily/',
            credentials: { access_key_id_env: 'TG_S3_AK', secret_access_key_env: 'TG_S3_SK', session_token_env: 'TG_S3_ST' },
          },
        },
      }));
      await cli(['usage', 'import', '--config', configFile, writeJsonl(dir, 's3.jsonl', [
        { id: 'evt_s3a', started_ms: DAY_MS + 60000, team: 'team-s3', model: 'anthropic.claude-3-haiku-20240307-v1:0', region: 'us-east-1', input_tokens: 777, output_tokens: 7 },
        { id: 'evt_s3b', started_ms: DAY_MS + 120000, team: 'team-s3', model: 'no-price-model', region: 'us-east-1', input_tokens: 1, output_tokens: 1 },
      ])]);
      // Every attempt of the first run fails (503 SlowDown, retried 3 times).
      s3.failNext(3, 503);
      const gw = await startGateway(configFile, { env: { TG_S3_AK: creds.accessKeyId, TG_S3_SK: creds.secretAccessKey, TG_S3_ST: creds.sessionToken } });
      gateways.push(gw);
      const names = [`succeed/${DAY}.csv`, `succeed/${DAY}.jsonl`, `errors/${DAY}.txt`];
      await waitFor(() => names.every((n) => s3.objects.has(`tg-chargeback/finance/daily/${n}`)), { timeoutMs: 15000, message: 'the three files in the bucket' });
      for (const n of names) {
        const local = fs.readFileSync(path.join(dir, 'reports', n));
        assert.ok(s3.objects.get(`tg-chargeback/finance/daily/${n}`).body.equals(local), `${n}: the bucket has the same bytes`);
      }
      assert.match(s3.objects.get(`tg-chargeback/finance/daily/succeed/${DAY}.csv`).contentType, /^text\/csv/);
      const puts = s3.requests.filter((r) => r.method === 'PUT');
      assert.ok(puts.slice(0, 3).every((r) => r.status === 503), 'the first run was refused');
      assert.ok(puts.filter((r) => r.status === 200).length >= 3, 'a later run stored them');
      assert.ok(puts.every((r) => r.status === 503 || r.status === 200), JSON.stringify(puts.map((r) => [r.status, r.code, r.detail])));
      assert.ok(!gw.stderr().includes(creds.secretAccessKey) && !gw.stderr().includes(creds.sessionToken), 'no secret in the logs');
      assert.match(gw.stderr(), /upload failed/);
      await gw.stop();
    } finally {
      await s3.close();
    }
  });

  test('GET /admin/reports: admin keys only, the same report as the CLI', T, async () => {
    const dir = mkdir('report-admin');
    const configFile = writeConfig(dir, baseConfig(dir, { reports: { enabled: false } }));
    const tenantKey = await createKey(configFile, 'team-x');
    const file = writeJsonl(dir, 'x.jsonl', [
      { id: 'evt_x1', started_ms: DAY_MS + 5000, team: 'team-x', model: 'anthropic.claude-3-haiku-20240307-v1:0', region: 'us-east-1', input_tokens: 4000, output_tokens: 300 },
      { id: 'evt_y1', started_ms: DAY_MS + 9000, team: 'team-y', model: 'anthropic.claude-3-haiku-20240307-v1:0', region: 'us-east-1', input_tokens: 10, output_tokens: 20 },
    ]);
    await cli(['usage', 'import', '--config', configFile, file]);
    const gw = await startGateway(configFile);
    gateways.push(gw);
    assert.match(gw.adminKey || '', /^tga_[A-Za-z0-9]{43}$/, 'the first start printed the first admin key');
    const port = Number(new URL(gw.adminUrl).port);
    assert.notEqual(port, gw.port, 'its own listener');
    const get = (q, headers = {}) => request(port, { path: `/admin/reports?${q}`, headers });
    const auth = { authorization: `Bearer ${gw.adminKey}` };

    const r = await get(`from=${DAY}&group_by=team,model&format=csv`, auth);
    assert.equal(r.status, 200, r.text);
    assert.match(r.headers['content-type'], /^text\/csv/);
    const cliCsv = await cli(['report', '--config', configFile, '--from', DAY, '--group-by', 'team,model', '--format', 'csv']);
    assert.equal(r.text, cliCsv.stdout, 'the admin API and the CLI give the same bytes');
    const j = await get(`from=${DAY}&to=${DAY}&team=team-x`, { 'x-api-key': gw.adminKey });
    assert.equal(j.status, 200);
    const doc = JSON.parse(j.text);
    assert.deepEqual(doc.rows.map((x) => x.team_id), ['team-x']);
    assert.equal(doc.totals.input_tokens, 4000);

    const expectError = (res, status, code) => {
      assert.equal(res.status, status, res.text);
      assert.equal(JSON.parse(res.text).error.code, code, res.text);
    };
    expectError(await get(`from=${DAY}`), 401, 'missing_admin_key');
    expectError(await get(`from=${DAY}`, { authorization: `Bearer ${tenantKey}` }), 403, 'admin_key_required');
    expectError(await get(`from=${DAY}`, { 'x-api-key': 'tga_nope' }), 401, 'invalid_admin_key');
    expectError(await get('from=2026-02-30', auth), 400, 'invalid_parameter');
    expectError(await get(`from=${DAY}&group_by=colour`, auth), 400, 'invalid_parameter');
    expectError(await get(`from=${DAY}&format=xml`, auth), 400, 'invalid_parameter');
    expectError(await get(`from=${DAY}&team=%G1`, auth), 400, 'invalid_parameter');
    expectError(await get('to=2026-11-20', auth), 400, 'invalid_parameter');
    expectError(await request(port, { path: '/admin/nothing', headers: auth }), 404, 'not_found');
    // The tenant door does not serve admin paths.
    const tenantSide = await request(gw.port, { path: `/admin/reports?from=${DAY}`, headers: auth });
    assert.equal(tenantSide.status, 404);

    // A second admin key from the CLI works at once; the first start's key
    // is not printed again on a restart.
    const created = await cli(['admin', 'create-key', '--config', configFile, '--name', 'ops']);
    const second = created.stdout.trim().split('\n').pop();
    assert.match(second, /^tga_/);
    assert.equal((await get(`from=${DAY}`, { authorization: `Bearer ${second}` })).status, 200);
    await gw.stop();
    const again = await startGateway(configFile);
    gateways.push(again);
    assert.equal(again.adminKey, null, 'shown once');
    await again.stop();
  });

  test('usage import refuses bad lines and names them', T, async () => {
    const dir = mkdir('report-import');
    const configFile = writeConfig(dir, baseConfig(dir));
    const bad = [
      ['{"team":"t","model":"m"}', /line 1: started_ms is required/],
      ['{"started_ms":-5,"team":"t","model":"m"}', /line 1: started_ms must be a non-negative integer/],
      ['{"started_ms":1,"team":"t","model":"m","input_tokens":1.5}', /line 1: input_tokens must be a non-negative integer/],
      ['{"started_ms":1,"team":"","model":"m"}', /line 1: team is empty/],
      ['[1,2]', /line 1: line is not a JSON object/],
      ['{"started_ms":1,"team":"t","model":"m","token_source":"guess"}', /line 1: token_source must be provider or estimated/],
    ];
    for (const [line, re] of bad) {
      const f = path.join(dir, 'bad.jsonl');
      fs.writeFileSync(f, line + '\n');
      const r = await runCli(['usage', 'import', '--config', configFile, f]);
      assert.equal(r.code, 1, line);
      assert.match(r.stderr, re, line);
    }
    assert.equal((await usageList(configFile)).length, 0, 'nothing recorded from bad lines');
  });
});

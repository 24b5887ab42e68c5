#!/usr/bin/env bash
# A short, bounded fuzzing run for the test suite: builds the libFuzzer target
# (make fuzz, clang) and runs it for FUZZ_RUNS inputs (default 500000, at most 45
# seconds) from a seed corpus written now by @smithy/eventstream-codec, the
# AWS SDK's own encoder. The corpus grows in build/fuzz/corpus/ across runs; a
# crash is saved as build/fuzz/crash-*. Prints the closing line
# scripts/test.sh counts: "unit: 1 passed, 0 failed" or "unit: 0 passed, 1 failed".
set -uo pipefail
cd "$(dirname "$0")/../.."

result() { # passed(0/1)
  if [ "$1" -eq 1 ]; then echo "unit: 1 passed, 0 failed"; exit 0; fi
  echo "unit: 0 passed, 1 failed"; exit 1
}

make --no-print-directory fuzz || result 0

corpus=build/fuzz/corpus/eventstream
mkdir -p "$corpus"
# Seeds: 4 control bytes (cut offset u16, piece size / limit, repair CRCs), then frames.
node --input-type=module - "$corpus" <<'EOF' || echo "fuzz: no seeds written (node or @smithy missing)" >&2
import fs from 'node:fs';
import path from 'node:path';
import { EventStreamCodec, Int64 } from '@smithy/eventstream-codec';
import { toUtf8, fromUtf8 } from '@smithy/util-utf8';
const codec = new EventStreamCodec(toUtf8, fromUtf8);
const enc = (headers, body) => codec.encode({ headers, body: fromUtf8(body) });
const frames = {
  empty: enc({}, ''),
  event: enc({
    ':event-type': { type: 'string', value: 'chunk' },
    ':content-type': { type: 'string', value: 'application/json' },
    ':message-type': { type: 'string', value: 'event' },
  }, '{"bytes":"eyJ0eXBlIjoibWVzc2FnZV9zdGFydCJ9"}'),
  all: enc({
    t: { type: 'boolean', value: true }, f: { type: 'boolean', value: false },
    b: { type: 'byte', value: -3 }, s: { type: 'short', value: -300 },
    i: { type: 'integer', value: 70000 }, l: { type: 'long', value: Int64.fromNumber(-(2 ** 40)) },
    y: { type: 'binary', value: Uint8Array.from([0, 255, 16]) }, str: { type: 'string', value: 'hi' },
    ts: { type: 'timestamp', value: new Date(1700000000123) },
    u: { type: 'uuid', value: '00010203-0405-0607-0809-0a0b0c0d0e0f' },
  }, 'ok'),
};
const write = (name, ctl, ...parts) =>
  fs.writeFileSync(path.join(process.argv[2], `seed-${name}`), Buffer.concat([Buffer.from(ctl), ...parts]));
for (const [name, f] of Object.entries(frames)) write(name, [0, 7, 0x23, 0], f);
write('stream', [0, 40, 0x05, 1], frames.all, frames.event, frames.empty, frames.event);
const bad = Buffer.from(frames.event); bad[bad.length - 1] ^= 1;
write('bad-crc', [0, 13, 0x10, 0], frames.empty, bad);
EOF

timeout --kill-after=10 120 ./build/fuzz/fuzz_eventstream \
  -runs="${FUZZ_RUNS:-500000}" -max_len=4096 -max_total_time=45 -print_final_stats=1 \
  -artifact_prefix=build/fuzz/ "$corpus" 2>&1 | grep -Eav '^(#[0-9]+.*(NEW|REDUCE|pulse)|"|###### )'
rc=${PIPESTATUS[0]}
[ "$rc" -eq 0 ] && result 1
echo "fuzz: fuzz_eventstream failed (exit $rc); reproduce with ./build/fuzz/fuzz_eventstream build/fuzz/crash-*" >&2
result 0

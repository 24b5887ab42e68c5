#!/usr/bin/env bash
# Runs tollgate's black-box tests (tests/e2e/*.test.mjs) with Node's built-in
# test runner against bin/tollgate (or $TOLLGATE_BIN). Builds nothing: run
# `make` first. Test files run one at a time (each starts its own gateway and
# fake upstream); the whole run is bounded by E2E_TIMEOUT seconds (default
# 900). Exit code: node's (124 when the global timeout fired).
#
#   bash tests/e2e/run.sh                   # every test file
#   bash tests/e2e/run.sh tests/e2e/chat.test.mjs
#   TOLLGATE_E2E_KEEP=1 / TOLLGATE_E2E_LOGS=1   keep temp dirs / print gateway logs
set -uo pipefail
cd "$(dirname "$0")/../.."

node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "e2e: Node.js 20 or later is needed (node --test's options, the openai and @aws-sdk" \
    "packages); found $(node --version 2>/dev/null || echo none)" >&2
  exit 1
fi

if [ ! -d node_modules/openai ]; then
  echo "e2e: installing the pinned Node packages (npm ci)" >&2
  timeout 300 npm ci --no-audit --no-fund >&2 || { echo "e2e: npm ci failed" >&2; exit 1; }
fi

if [ -z "${TOLLGATE_BIN:-}" ] && [ ! -x bin/tollgate ]; then
  echo "e2e: bin/tollgate is missing: run 'make' first (the tests will fail)" >&2
fi

if [ $# -eq 0 ]; then
  set -- tests/e2e/
fi

timeout --kill-after=15 "${E2E_TIMEOUT:-900}" \
  node --test --test-concurrency=1 --test-timeout=180000 "$@"
rc=$?
if [ $rc -eq 124 ]; then
  echo "e2e: global timeout of ${E2E_TIMEOUT:-900} s reached" >&2
fi
exit $rc

#!/usr/bin/env bash
# `make test`: every test, in order: unit tests, the same under ASan+UBSan,
# a short libFuzzer run (tests/fuzz/run.sh), the black-box tests against
# bin/tollgate, and again against a gateway built with ASan+UBSan (a memory
# error aborts it mid-test; a leak fails the graceful-exit test). Prints one
# closing line with the totals; exits non-zero when any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp -d)
trap 'rm -rf "$log"' EXIT
pass=0; fail=0; skipped=0; status=0

stage() { # name, command...
  local name=$1; shift
  echo "== $name"
  "$@" 2>&1 | tee "$log/$name.out"
  local rc=${PIPESTATUS[0]}
  local p f k
  p=$(grep -Eo '^unit: [0-9]+ passed' "$log/$name.out" | tail -n 1 | grep -Eo '[0-9]+')
  f=$(grep -Eo '^unit: [0-9]+ passed, [0-9]+ failed' "$log/$name.out" | tail -n 1 | grep -Eo '[0-9]+$')
  if [ -z "$p" ]; then # node's test runner (tap or spec reporter)
    p=$(grep -Ea '^(# |ℹ )pass [0-9]+' "$log/$name.out" | tail -n 1 | grep -Eo '[0-9]+$')
    f=$(grep -Ea '^(# |ℹ )fail [0-9]+' "$log/$name.out" | tail -n 1 | grep -Eo '[0-9]+$')
    k=$(grep -Ea '^(# |ℹ )skipped [0-9]+' "$log/$name.out" | tail -n 1 | grep -Eo '[0-9]+$')
  fi
  p=${p:-0}; f=${f:-0}; k=${k:-0}
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  pass=$((pass + p)); fail=$((fail + f)); skipped=$((skipped + k))
  [ "$rc" -eq 0 ] || status=1
  echo "== $name: $p passed, $f failed, $k skipped (exit $rc)"
}

stage unit make --no-print-directory unit
stage unit-asan make --no-print-directory unit-asan
stage fuzz bash tests/fuzz/run.sh
stage e2e bash tests/e2e/run.sh
stage e2e-asan make --no-print-directory e2e-asan
echo "tests: $pass passed, $fail failed, $skipped skipped (a skip is not a pass; see the stage logs for why)"
exit $status

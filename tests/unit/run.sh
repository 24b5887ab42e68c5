#!/usr/bin/env bash
# Runs each cmocka test binary and prints one closing line with the totals.
set -u
pass=0; fail=0; bad=()
for t in "$@"; do
  out=$("$t" 2>&1); rc=$?
  p=$(grep -Eo '\[  PASSED  \] [0-9]+' <<<"$out" | grep -Eo '[0-9]+$' | awk '{s+=$1} END {print s+0}')
  f=$(grep -Eo '\[  FAILED  \] [0-9]+' <<<"$out" | grep -Eo '[0-9]+$' | awk '{s+=$1} END {print s+0}')
  p=${p:-0}; f=${f:-0}
  if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then f=1; fi
  pass=$((pass + p)); fail=$((fail + f))
  if [ $rc -ne 0 ]; then bad+=("$t"); echo "$out" | tail -n 40; fi
  echo "unit: $(basename "$t"): $p passed, $f failed"
done
echo "unit: $pass passed, $fail failed"
[ $fail -eq 0 ] && [ ${#bad[@]} -eq 0 ]

#!/usr/bin/env bash
# Installs every system package tollgate needs to build, run, test and
# benchmark, from Debian's archive. Idempotent: when all are present it only
# checks (a fraction of a second). Then installs the pinned Node packages for
# the tests (npm ci) when package-lock.json changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PKGS=(
  build-essential pkg-config
  libuv1-dev node-llhttp libcurl4-openssl-dev libcjson-dev libsqlite3-dev libssl-dev zlib1g-dev
  libnghttp2-dev nghttp2-client
  libcmocka-dev sqlite3 curl python3 python3-botocore
  clang libclang-rt-14-dev
  nodejs npm
  wrk nginx-light procps
)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# nodejs/npm may come from elsewhere than Debian (an image's own Node 20): accept a working node+npm.
if command -v node >/dev/null && command -v npm >/dev/null; then
  tmp=()
  for p in "${missing[@]}"; do [[ $p == nodejs || $p == npm ]] || tmp+=("$p"); done
  missing=("${tmp[@]+"${tmp[@]}"}")
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "deps: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The black-box tests need Node.js 20 or later (node --test's options; the
# openai and @aws-sdk packages' engines). Debian 12's own nodejs is 18: say so
# plainly instead of failing later on an unknown option.
# The gateway itself does not need Node: warn, build, and let the tests refuse.
node_major=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
if [ "$node_major" -lt 20 ]; then
  echo "deps: warning: the black-box tests need Node.js 20 or later; found $(node --version 2>/dev/null || echo none)" >&2
fi

# Node packages for the black-box tests, pinned by package-lock.json.
if [ -f package-lock.json ] && [ "$node_major" -ge 20 ]; then
  stamp=node_modules/.tollgate-lock
  if [ ! -f "$stamp" ] || ! cmp -s package-lock.json "$stamp"; then
    npm ci --no-audit --no-fund --loglevel=error >&2
    cp package-lock.json "$stamp"
  fi
fi

#!/usr/bin/env bash
# `make run`: starts tollgate on the embedded default (SQLite under ./var) with
# the example configuration. On the first run it creates an API key for team
# "demo" and prints it once, with a curl line to try.
set -euo pipefail
cd "$(dirname "$0")/.."
CONFIG=${TOLLGATE_CONFIG:-examples/tollgate.json}
mkdir -p var
if [ ! -s var/.quickstart-key-made ]; then
  key=$(bin/tollgate keys create --config "$CONFIG" --team demo --name quickstart | tail -n 1)
  date -u +%FT%TZ > var/.quickstart-key-made
  cat <<MSG

  Your first API key (team "demo"); it is shown only this once:

    $key

  Try it (the example routes "llama-3.1-8b-instruct" to an OpenAI-compatible
  server on 127.0.0.1:8000 such as vLLM or Ollama; edit $CONFIG to point elsewhere):

    curl -s http://127.0.0.1:8080/v1/chat/completions \\
      -H "Authorization: Bearer $key" -H "Content-Type: application/json" \\
      -d '{"model":"llama-3.1-8b-instruct","messages":[{"role":"user","content":"Hello"}]}'

  More keys: bin/tollgate keys create --config $CONFIG --team TEAM

MSG
fi
exec bin/tollgate serve --config "$CONFIG"

#!/usr/bin/env bash
# A curl session with Strata's OpenAI-compatible HTTP API. Start a cluster
# with it first, e.g.
#   build/tools/strata up --http-listen 127.0.0.1:8000
# then: bash examples/openai_curl.sh [http://127.0.0.1:8000] [API_KEY]
set -euo pipefail
base="${1:-http://127.0.0.1:8000}"
auth=()
[[ -n "${2:-}" ]] && auth=(-H "Authorization: Bearer $2")
model="$(curl -s "${auth[@]}" "$base/v1/models" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')"
echo "# model: $model"

echo "# a completion"
curl -s "${auth[@]}" "$base/v1/completions" -H 'Content-Type: application/json' -d "{
  \"model\": \"$model\", \"prompt\": \"The old lighthouse keeper\", \"max_tokens\": 16,
  \"temperature\": 0.8, \"seed\": 7}"
echo

echo "# a chat, streamed as server-sent events (with usage at the end)"
curl -sN "${auth[@]}" "$base/v1/chat/completions" -H 'Content-Type: application/json' -d "{
  \"model\": \"$model\", \"messages\": [{\"role\": \"user\", \"content\": \"Tell me about the sea\"}],
  \"max_tokens\": 8, \"stream\": true, \"stream_options\": {\"include_usage\": true}}"

echo "# three samples of one prompt (sample j uses seed + j), with penalties"
curl -s "${auth[@]}" "$base/v1/completions" -H 'Content-Type: application/json' -d "{
  \"model\": \"$model\", \"prompt\": \"Once upon a time\", \"max_tokens\": 12, \"n\": 3,
  \"temperature\": 0.9, \"seed\": 11, \"presence_penalty\": 0.5, \"frequency_penalty\": 0.5}"
echo

echo "# the prompt's log-probabilities (echo), as lm-eval scores with"
curl -s "${auth[@]}" "$base/v1/completions" -H 'Content-Type: application/json' -d "{
  \"model\": \"$model\", \"prompt\": \"The sea is\", \"max_tokens\": 1, \"temperature\": 0,
  \"echo\": true, \"logprobs\": 1}"
echo

echo "# an unsupported parameter is refused by name"
curl -s "${auth[@]}" "$base/v1/completions" -H 'Content-Type: application/json' -d "{
  \"model\": \"$model\", \"prompt\": \"x\", \"logit_bias\": {\"5\": 100}}"
echo

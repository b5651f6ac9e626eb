#!/bin/bash
# Strata's CPU engine against llama.cpp's on the same bf16 weights, side by
# side in one run: for each thread count and prompt length, engine_bench and
# llama.cpp (through bench/llama_cpp/driver.cc, measured the same way: one
# prefill of the prompt after a warm-up pass, then batch-1 greedy decode
# steps) run alternately, RUNS times; the medians and their ratios are
# printed as JSON lines on stdout and a table on stderr.
#
#   bench/llama_cpp_compare.sh [--model DIR] [--threads "1 2"] [--prompts "128 512"]
#                              [--decode 64] [--runs 1]
#
# The model defaults to engine_bench's 1B-class bf16 llama (made if missing);
# it is written once as GGUF beside itself (bench/llama_cpp/to_gguf.py).
# llama.cpp comes from LLAMA_CPP_SRC (a source tree in upstream layout),
# default ~/.cache/strata/llama.cpp, cloned from GitHub when missing, and is
# built once into its strata-build/ folder (bench/llama_cpp/build.sh). If it
# cannot be fetched or built, the script says so and reports Strata's figures
# against the memory bandwidth engine_bench measures.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${STRATA_BUILD:-$ROOT/build}
CACHE=${STRATA_HOME:-$HOME/.cache/strata}
MODEL=$CACHE/models/bench-llama-1b-bf16
THREADS="1 2"
PROMPTS="128 512"
DECODE=64
RUNS=1
while [ $# -gt 0 ]; do
  case $1 in
    --model) MODEL=$2; shift 2 ;;
    --threads) THREADS=$2; shift 2 ;;
    --prompts) PROMPTS=$2; shift 2 ;;
    --decode) DECODE=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    *) echo "llama_cpp_compare: unknown argument $1" >&2; exit 2 ;;
  esac
done
ENGINE_BENCH=$BUILD/bench/engine_bench
[ -x "$ENGINE_BENCH" ] || { echo "llama_cpp_compare: $ENGINE_BENCH is missing; build Strata first" >&2; exit 1; }
PYTHON=${STRATA_PYTHON:-/usr/bin/python3}
OUT=$(mktemp -d)
trap 'rm -rf "$OUT"' EXIT

# The model (engine_bench makes its default on first use) and its GGUF copy.
if [ ! -f "$MODEL/config.json" ]; then
  if [ "$MODEL" != "$CACHE/models/bench-llama-1b-bf16" ]; then
    echo "llama_cpp_compare: $MODEL/config.json is missing" >&2
    exit 1
  fi
  "$ENGINE_BENCH" --prompt-tokens 8 --decode-tokens 1 > /dev/null
fi
GGUF=${MODEL%/}.gguf
if [ ! -f "$GGUF" ] || [ "$MODEL/model.safetensors" -nt "$GGUF" ]; then
  echo "llama_cpp_compare: writing $GGUF" >&2
  "$PYTHON" "$ROOT/bench/llama_cpp/to_gguf.py" "$MODEL" "$GGUF"
fi

# llama.cpp: found, or fetched, then built once.
SRC=${LLAMA_CPP_SRC:-$CACHE/llama.cpp}
LLAMA=""
WHY=""
if [ ! -d "$SRC/ggml" ]; then
  echo "llama_cpp_compare: fetching llama.cpp into $SRC" >&2
  git clone -q --depth 1 https://github.com/ggml-org/llama.cpp "$SRC" 2> "$OUT/clone.log" ||
    WHY="could not fetch llama.cpp ($(tail -1 "$OUT/clone.log")); set LLAMA_CPP_SRC to a source tree"
fi
if [ -z "$WHY" ]; then
  if [ ! -x "$SRC/strata-build/llama_cpp_driver" ] ||
     [ "$ROOT/bench/llama_cpp/driver.cc" -nt "$SRC/strata-build/llama_cpp_driver" ]; then
    echo "llama_cpp_compare: building llama.cpp in $SRC/strata-build (minutes)" >&2
    "$ROOT/bench/llama_cpp/build.sh" "$SRC" "$SRC/strata-build" > "$OUT/build.log" 2>&1 ||
      WHY="could not build llama.cpp in $SRC: $(tail -3 "$OUT/build.log" | tr '\n' ' ')"
  fi
  [ -z "$WHY" ] && LLAMA=$SRC/strata-build/llama_cpp_driver
fi
VERSION=unknown
if [ -n "$LLAMA" ]; then
  if git -C "$SRC" rev-parse --short HEAD > /dev/null 2>&1; then
    VERSION=$(git -C "$SRC" rev-parse --short HEAD)
  elif [ -f "$SRC/VERSION" ]; then
    VERSION=$(head -1 "$SRC/VERSION")
  fi
else
  echo "llama_cpp_compare: $WHY; reporting Strata alone" >&2
fi

# Alternate the engines, run by run.
for run in $(seq "$RUNS"); do
  for t in $THREADS; do
    for p in $PROMPTS; do
      "$ENGINE_BENCH" --model "$MODEL" --threads "$t" --prompt-tokens "$p" \
        --decode-tokens "$DECODE" 2> /dev/null | grep '"bench":"engine"' >> "$OUT/strata.jsonl"
      if [ -n "$LLAMA" ]; then
        "$LLAMA" "$GGUF" "$t" "$p" "$DECODE" 2> /dev/null >> "$OUT/llama.jsonl"
      fi
    done
  done
done

"$PYTHON" - "$OUT" "$VERSION" "$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)" <<'PY'
import json, os, statistics, sys
out, llama_version, strata_version = sys.argv[1:4]
def rows(name):
    path = os.path.join(out, name)
    return [json.loads(l) for l in open(path)] if os.path.exists(path) else []
strata, llama = rows("strata.jsonl"), rows("llama.jsonl")
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
keys = sorted({(r["threads"], r["prompt_tokens"]) for r in strata})
med = lambda xs: statistics.median(xs) if xs else None
print(f"llama_cpp_compare: {cpu}; Strata {strata_version} ({strata[0]['backend'] if strata else '?'}), "
      f"llama.cpp {llama_version if llama else 'not run'}", file=sys.stderr)
print(f"{'threads':>7} {'prompt':>6} | {'prefill tok/s':>22} {'ratio':>6} | {'decode tok/s':>20} {'ratio':>6} | decode GB/s of copy", file=sys.stderr)
for t, p in keys:
    s = [r for r in strata if (r["threads"], r["prompt_tokens"]) == (t, p)]
    l = [r for r in llama if (r["threads"], r["prompt_tokens"]) == (t, p)]
    sp, sd = med([r["prefill_tokens_per_s"] for r in s]), med([r["decode_tokens_per_s"] for r in s])
    lp, ld = med([r["prefill_tokens_per_s"] for r in l]), med([r["decode_tokens_per_s"] for r in l])
    frac = med([r["decode_fraction_of_copy_bandwidth"] for r in s])
    copy = med([r["stream_copy_gbps"] for r in s])
    rec = {"bench": "llama_cpp_compare", "cpu": cpu, "threads": t, "prompt_tokens": p,
           "runs": len(s), "strata_backend": s[0]["backend"], "strata_version": strata_version,
           "llama_cpp_version": llama_version if l else None,
           "strata_prefill_tokens_per_s": sp, "strata_decode_tokens_per_s": sd,
           "llama_cpp_prefill_tokens_per_s": lp, "llama_cpp_decode_tokens_per_s": ld,
           "prefill_ratio": sp / lp if lp else None, "decode_ratio": sd / ld if ld else None,
           "stream_copy_gbps": copy, "strata_decode_fraction_of_copy": frac}
    print(json.dumps(rec))
    fmt = lambda a, b: f"{a:9.1f} vs {b:9.1f}" if b else f"{a:9.1f} vs {'-':>9}"
    ratio = lambda a, b: f"{a / b:6.2f}" if b else f"{'-':>6}"
    print(f"{t:>7} {p:>6} | {fmt(sp, lp):>22} {ratio(sp, lp)} | {fmt(sd, ld):>20} {ratio(sd, ld)} | "
          f"{100 * frac:.0f}% of {copy:.1f}", file=sys.stderr)
PY

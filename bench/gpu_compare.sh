#!/usr/bin/env bash
# Strata's gpu_bench and transformers' generate() in one run on the same GPU
# and model, side by side, with the issue's targets: batch-1 decode at >= 70%
# of the measured copy bandwidth and >= 5x transformers.
#
#   bench/gpu_compare.sh MODEL_DIR [GPU_BENCH_BINARY]
set -euo pipefail
model="$1"
bench="${2:-$(dirname "$0")/../build/bench/gpu_bench}"
python="${PYTHON:-python3}"
ours="$("$bench" --model "$model")"
theirs="$("$python" "$(dirname "$0")/hf_generate_bench.py" --model "$model")"
"$python" - "$ours" "$theirs" <<'PY'
import json, sys
ours, theirs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
hf = {d["batch"]: d for d in theirs["decode"]}
print(json.dumps({"strata": ours, "transformers": theirs}))
print(f"GPU: {ours['device']}  model: {ours['model']}", file=sys.stderr)
print(f"{'':>14} {'strata':>12} {'transformers':>14} {'ratio':>7}", file=sys.stderr)
p, q = ours["prefill_tokens_per_second"], theirs["prefill_tokens_per_second"]
print(f"{'prefill tok/s':>14} {p:12.0f} {q:14.0f} {p / q:7.2f}", file=sys.stderr)
for d in ours["decode"]:
    h = hf.get(d["batch"])
    if h:
        r = d["tokens_per_second"] / h["tokens_per_second"]
        print(f"{'decode b=' + str(d['batch']):>14} {d['tokens_per_second']:12.1f} "
              f"{h['tokens_per_second']:14.1f} {r:7.2f}", file=sys.stderr)
frac = ours["batch1_fraction_of_copy_bandwidth"]
speedup = ours["decode"][0]["tokens_per_second"] / hf[ours["decode"][0]["batch"]]["tokens_per_second"]
print(f"batch-1 weight bandwidth {100 * frac:.1f}% of copy bandwidth (target >= 70%): "
      f"{'met' if frac >= 0.70 else 'NOT met'}", file=sys.stderr)
print(f"batch-1 decode {speedup:.1f}x transformers (target >= 5x): "
      f"{'met' if speedup >= 5 else 'NOT met'}", file=sys.stderr)
PY

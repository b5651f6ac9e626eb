#!/usr/bin/env bash
# The GPU verification in one run, for a machine with an NVIDIA GPU, the CUDA
# driver, python3 with torch and transformers. Built elsewhere and carried:
#   here:   bash tools/gpu/pack.sh             # .gpu/strata-gpu.tar.xz
#   there:  bash tools/gpu/verify.sh [BIN_DIR]  # BIN_DIR: bin/ and lib/ of the pack
# or, where the tree builds (bash tools/setup), with BIN_DIR unset: build/.
#
#   1. the host-side checks of the GPU path: the peer-hop protocol against an
#      in-memory communicator, the v2 attention's host emulation;
#   2. every op on CUDA against float64, with attention v1 and v2; stage parity
#      with the CPU and graph replay, both versions (runtime_backend_ops_test);
#   3. a Qwen2.5-1.5B-shaped model made by transformers: greedy tokens and
#      logits against transformers, with v1 and with v2;
#   4. gpu_bench (prefill, batch 1/8/32 decode, bandwidth) with v1 and v2;
#   5. two workers sharing GPU 0 (gRPC hop) whose completion must equal one
#      worker's, and each worker's NVML series (utilisation, memory, UUID);
#   6. with two GPUs or more: a 2-worker local cluster, one worker per GPU
#      (an NCCL hop), whose completion must equal `strata generate` on one GPU;
#   7. a 2-replica layout on GPU 0 (two workers sharing it) under 16 streams,
#      then the same layout on the simulated GPU of the device-table row the
#      worker was matched to: measured decode step times beside the model's
#      (replicas.txt).
# Every output goes to $OUT (default .gpu/verify); the summary is printed last
# and the exit status is that of the first failed step.
set -uo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="${OUT:-$root/.gpu/verify}"
mkdir -p "$out"
if [[ -n "${1:-}" ]]; then
  bin="$1/bin"
  export LD_LIBRARY_PATH="$1/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  tests="$bin" benches="$bin" strata="$bin/strata"
else
  tests="$root/build/tests" benches="$root/build/bench" strata="$root/build/tools/strata"
fi
python="${PYTHON:-python3}"
summary=()
status=0
step() {  # NAME COMMAND...: runs it, logs to $out/NAME.log, records the outcome
  local name="$1"
  shift
  local t0=$SECONDS
  if "$@" >"$out/$name.log" 2>&1; then
    summary+=("ok      $name ($((SECONDS - t0)) s)")
  else
    summary+=("FAILED  $name ($((SECONDS - t0)) s): see $out/$name.log")
    ((status == 0)) && status=1
  fi
}

nvidia-smi --query-gpu=index,name,uuid,memory.total,driver_version --format=csv >"$out/gpus.csv" 2>&1
gpus=$(($(wc -l <"$out/gpus.csv") - 1))

step host_protocol "$tests/runtime_peer_link_test"
step host_attention_v2 "$tests/runtime_attention_v2_test"
step cuda_ops "$tests/runtime_backend_ops_test"

model="$out/qwen15"
step make_model "$python" "$root/tools/gpu/make_hf_qwen2.py" "$model"
for v in v1 v2; do
  step "parity_$v" env STRATA_CUDA_ATTENTION=$v "$python" "$root/tools/gpu/hf_parity.py" \
    --model "$model" --strata "$strata"
  step "bench_$v" env STRATA_CUDA_ATTENTION=$v GPU_BENCH="$benches/gpu_bench" \
    bash -c '"$GPU_BENCH" --model "$0" > "$1"' "$model" "$out/bench_$v.json"
done
step bench_transformers bash -c '"$0" "$1/bench/hf_generate_bench.py" --model "$2" > "$3"' \
  "$python" "$root" "$model" "$out/bench_transformers.json"

# (e) two workers sharing GPU 0 against one, (f) the workers' NVML series,
# from one cluster that keeps serving while it is asked.
one_gpu_cluster() {
  local want got addr gateway
  addr="$out/cluster-1gpu/addresses"
  mkdir -p "$out/cluster-1gpu"
  want="$("$strata" generate --model "$model" --device cuda:0 --prompt "The old lighthouse" \
    --max-tokens 48)" || return 1
  "$strata" up --model "$model" --workers 2 --worker-flags "--device cuda:0 --capacity 20GiB" \
    --address-file "$addr" --log-dir "$out/cluster-1gpu" &
  local up=$!
  for _ in $(seq 300); do [[ -s "$addr" ]] && grep -q '^gateway' "$addr" && break; sleep 0.2; done
  gateway="$(awk '$1 == "gateway" {print $2}' "$addr")"
  got="$("$strata" client --address "$gateway" "The old lighthouse" --max-tokens 48)" || got="(failed)"
  echo "one worker:  $want"
  echo "two workers: $got"
  local ok=0
  [[ "$want" == "$got" ]] || ok=1
  for m in $(awk '$1 ~ /^worker/ {print $4}' "$addr"); do
    echo "== $m"
    curl -s "http://$m/metrics" | grep -E '^strata_worker_gpu_(utilization_ratio|memory_used_bytes)' | tee -a "$out/nvml.txt"
  done
  grep -q 'UUID="GPU-' "$out/nvml.txt" || ok=1
  kill -TERM $up  # SIGINT is ignored by jobs a script starts in the background
  wait $up || true
  return $ok
}
step one_gpu_two_workers_and_nvml one_gpu_cluster

if ((gpus >= 2)); then
  two_gpus() {
    local want got
    want="$("$strata" generate --model "$model" --device cuda:0 --prompt "The old lighthouse" \
      --max-tokens 48)" || return 1
    got="$("$strata" up --model "$model" --workers 2 --worker-flags "--device cuda:{i}" \
      --prompt "The old lighthouse" --max-tokens 48 --log-dir "$out/cluster")" || return 1
    echo "one GPU:  $want"
    echo "two GPUs: $got"
    grep -h "peer\|NCCL\|nccl" "$out"/cluster/*.log || true
    [[ "$want" == "$got" ]]
  }
  step nccl_pipeline two_gpus
else
  summary+=("skipped nccl_pipeline: $gpus GPU(s), it needs two")
fi

# (g) Two replicas sharing GPU 0 under load, then the same on the simulated
# GPU the worker was modelled as: each worker's mean decode step.
replicas_run() {  # NAME WORKER_FLAGS: serves 16 streams, prints the workers' decode steps
  local dir="$out/replicas-$1" addr gateway up failed=0
  mkdir -p "$dir"
  addr="$dir/addresses"
  rm -f "$addr"  # a stale one would name a gone gateway
  "$strata" up --model "$model" --workers 2 --replicas 2 --worker-flags "$2" \
    --address-file "$addr" --log-dir "$dir" &
  up=$!
  for _ in $(seq 300); do [[ -s "$addr" ]] && grep -q '^gateway' "$addr" && break; sleep 0.2; done
  gateway="$(awk '$1 == "gateway" {print $2}' "$addr")"
  local clients=()
  for i in $(seq 16); do
    "$strata" client --address "$gateway" "The old lighthouse $i" --max-tokens 128 >/dev/null &
    clients+=($!)
  done
  for c in "${clients[@]}"; do wait "$c" || failed=1; done
  for m in $(awk '$1 ~ /^worker/ {print $4}' "$addr"); do
    curl -s "http://$m/metrics" | awk -v name="$1" '
      /^strata_worker_step_duration_seconds_sum/ && /phase="decode"/ {sum = $2}
      /^strata_worker_step_duration_seconds_count/ && /phase="decode"/ {n = $2}
      END {printf "%s: %d decode steps, mean %.3f ms\n", name, n, (n > 0 ? 1000 * sum / n : 0)}'
  done
  grep -h "layout" "$dir/coordinator.log" | head -3
  kill -TERM $up
  wait $up || true
  return $failed
}
two_replicas_one_gpu() {
  replicas_run cuda "--device cuda:0 --capacity 20GiB" || return 1
  local sim
  sim="$(grep -oh -- '--device sim:[a-z0-9-]*' "$out"/replicas-cuda/worker-*.log | head -1)"
  [[ -n "$sim" ]] || { echo "the worker matched no device-table row"; return 1; }
  replicas_run "${sim#--device }" "$sim"
}
step two_replicas_on_gpu0 two_replicas_one_gpu
cp "$out/two_replicas_on_gpu0.log" "$out/replicas.txt" 2>/dev/null || true

echo "GPUs:"
cat "$out/gpus.csv"
for b in v1 v2; do
  [[ -s "$out/bench_$b.json" ]] && echo "gpu_bench, attention $b: $(head -c 600 "$out/bench_$b.json")"
done
[[ -s "$out/bench_transformers.json" ]] && echo "transformers: $(head -c 600 "$out/bench_transformers.json")"
[[ -s "$out/replicas.txt" ]] && echo "two replicas on GPU 0:" && cat "$out/replicas.txt"
printf '%s\n' "${summary[@]}"
exit $status

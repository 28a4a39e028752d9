#!/usr/bin/env bash
# Thirteenth session, 4 GPUs (nvidia-h200-x4), one call: issue 13's 4-GPU rows on today's code
# (PDL, the shared-memory epilogue, the backward's CTA start landed since the last 4-GPU call,
# 2026-11-27): `./launch/gpu_suite.sh build multi` (verify over NCCL at 2 and 4 GPUs on every
# named config, dense 128k and geometric weak/strong scaling beside the PyTorch ring, 4M set-up,
# the fault test), then `verify --op backward` over NCCL on all GPUs (the backward's kernels
# changed since its last 4-GPU run) while time is left. Summary lines carry seconds since start.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
T0=$(date +%s)
OUT="$OUT/suite" timeout "${SUITE_S:-480}" ./launch/gpu_suite.sh build multi 2>&1 | tee "$OUT/suite.log" | grep '^== ' | sed "s/^/[$(( $(date +%s) - T0 ))s] /"
echo "[$(( $(date +%s) - T0 ))s] suite: rc=${PIPESTATUS[0]}"
G=$(nvidia-smi -L | grep -c GPU)
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none"
RA=build/gpu/launch/ringattn
for c in "geometric 32k --causal" "longnet4 32k --dtype f16" "dense 8k" "longnet-paper 32k --head-offsets blocked"; do
  [ $(( $(date +%s) - T0 )) -gt "${BWD_BY_S:-540}" ] && { echo "verify --op backward $c: skipped (time)"; continue; }
  set -- $c; cfg=$1; seq=$2; shift 2
  log="$OUT/verify_bwd_${cfg}_np$G.log"
  timeout 50 $MPI -np "$G" $RA verify --backend cuda --transport nccl --op backward --config "$cfg" --seq "$seq" --heads 4 --head-dim 128 "$@" > "$log" 2>&1
  echo "[$(( $(date +%s) - T0 ))s] verify --op backward nccl np$G $cfg $*: rc=$? $(tail -1 "$log" | cut -c1-200)"
done

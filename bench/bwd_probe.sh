#!/usr/bin/env bash
# The backward's launches timed apart (bench/kernel_fwd.cu --bwd) and an ncu
# summary of each kernel where ncu exists. One GPU.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export PATH="/usr/local/cuda/bin:$PATH"
K=build/gpu/bench/ringattn_kernel_fwd
{ [ -d build/gpu ] || cmake --preset gpu > "$OUT/configure.log" 2>&1; } && cmake --build --preset gpu -j 16 --target ringattn_kernel_fwd > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
for dq in pass atomic; do
  for cfg in "--config dense --seq 16384" "--config longnet4 --seq 65536" "--config dense --seq 16384 --causal"; do
    echo "== $cfg (dQ $dq)"; $K $cfg --heads 16 --head-dim 128 --bwd --bwd-dq $dq --iters 10 | tail -2
  done
done
if command -v ncu >/dev/null; then
  ncu --kernel-name regex:bwd_ --launch-count 2 --section SpeedOfLight --section Occupancy --section WarpStateStats \
      $K --config dense --seq 16384 --heads 16 --head-dim 128 --bwd --iters 1 --warmup 0 > "$OUT/ncu_bwd.txt" 2>&1
  echo "ncu: rc=$? (ncu_bwd.txt)"
else
  echo "ncu: not on this machine ($(ls /usr/local/cuda/bin | tr '\n' ' ' | cut -c1-200))"
fi

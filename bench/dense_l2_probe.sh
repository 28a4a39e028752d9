#!/usr/bin/env bash
# Why the dense forward slows as keys per query grow (645 TF/s at 16k, 532 at
# 128k on one H200): the fused forward kernel alone (bench/kernel_fwd.cu) at
# 16k-128k tokens, then ncu's memory sections at 16k and 128k (L2 hit rate,
# DRAM bytes and throughput). One GPU; logs to $OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export PATH="/usr/local/cuda/bin:$PATH"
K=build/gpu/bench/ringattn_kernel_fwd
[ -x $K ] || { { [ -d build/gpu ] || cmake --preset gpu > "$OUT/configure.log" 2>&1; } &&
  cmake --build --preset gpu -j 16 --target ringattn_kernel_fwd > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }; }
for n in 16384 32768 65536 131072; do
  echo "== dense $n"; $K --config dense --seq $n --heads 16 --head-dim 128 --iters 5 | tail -2
done
if command -v ncu >/dev/null; then
  for n in 16384 131072; do
    timeout 200 ncu --kernel-name regex:fwd_kernel --launch-count 1 --section SpeedOfLight --section MemoryWorkloadAnalysis \
      $K --config dense --seq $n --heads 16 --head-dim 128 --iters 1 --warmup 0 > "$OUT/ncu_dense_$n.txt" 2>&1
    echo "ncu dense $n: rc=$?"; grep -E "L2 Hit Rate|DRAM Throughput|Memory Throughput|Duration|Compute \(SM\)" "$OUT/ncu_dense_$n.txt" | head -8
  done
fi

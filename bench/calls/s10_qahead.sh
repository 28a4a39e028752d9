#!/usr/bin/env bash
# Tenth session, one GPU: the forward's producer claims, decodes and gathers the next short
# item's Q one item ahead into a second Q buffer (branch fwd-qahead), against .trees/base
# (main): the forward GPU tests, the kernel driver round-robin (bench/kernel_bisect.sh), the
# per-item trace of this tree, and the runtime's forward (its dynamic scheduler) alternated
# with base's (s10_rows.sh ab). Each part's summary.txt and logs.tgz under $OUT/{k,t,r}.
# CTEST_R / TESTS_S override the tests' regex and time limit (default below).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
F="--heads 16 --head-dim 128"
OUT="$OUT/k" KB_TIMEOUT=60 KB_CASES="--config longnet4 --seq 65536 $F --iters 20;--branches 2048:1 --seq 65536 $F --iters 20;--config dense --seq 16384 $F --iters 20;--config longnet4 --seq 1048576 $F --iters 5;--config longnet4 --seq 65536 $F --causal --iters 20" \
  CTEST_R="${CTEST_R:-gpu_fused|gpu_kernel_short|gpu_verify_(longnet4|paper|dense|geometric|straddle|nccl|short_np1)}" TESTS_S="${TESTS_S:-150}" \
  timeout 380 bench/calls/s8_kernels.sh build tests bisect
# The per-item trace of this tree (the forward kernel built with RINGATTN_FWD_TRACE).
mkdir -p "$OUT/t"
{ cmake -S . -B build/gpu-trace -DRINGATTN_CUDA=ON -DRINGATTN_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release -DRINGATTN_FWD_TRACE=ON &&
  cmake --build build/gpu-trace -j 16 --target ringattn_kernel_fwd; } > "$OUT/t/build_trace.log" 2>&1 && for c in "--branches 2048:1 --seq 65536" "--config longnet4 --seq 65536"; do
  # shellcheck disable=SC2086
  timeout 60 build/gpu-trace/bench/ringattn_kernel_fwd --trace $c $F --iters 10 > "$OUT/t/trace.log" 2>&1
  { echo "== trace $c"; grep -E "^trace (forward|pass [0-9] (of|item_wg|q_wait|epilogue_wg0|first_block_wg0|p_decode|q_issue|q_empty_vs|item overhead))" "$OUT/t/trace.log"; } >> "$OUT/t/summary.txt"
done
# The runtime's forward, alternated with base's.
OUT="$OUT/r" AB_OP=forward AB_ROUNDS=3 AB_ROWS="--config longnet4 --seq 64k --iters 20;--config longnet4 --seq 1M --iters 5 --warmup 1" \
  timeout 200 bench/calls/s10_rows.sh ab
cat "$OUT"/k/summary.txt "$OUT"/t/summary.txt "$OUT"/r/summary.txt > "$OUT/summary.txt" 2>/dev/null

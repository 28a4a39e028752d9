#!/usr/bin/env bash
# Twelfth session, one GPU: the dK/dV kernel's start (the backward trace, h200-2026-11-28s12 call 4:
# ~2.6 us of tile search and ~3 us of K/V issue before a CTA's first block; its CTAs live ~100 us).
# This tree: a 32-ary warp search for the tile, K and V gathered by the consumers (affine rows: one
# 64-bit add per row), the dQ pass's Q/dO by the affine gather. Against .trees/base (main before it):
#   k: build, bench/kernel_bisect.sh over the backward cases (ROUNDS rounds), then the backward GPU
#      tests (CTEST_R; received keys take the index path in the NCCL/MPI ones);
#   r: issue 14's runtime rows (bench/calls/s10_rows.sh rows; 1M atomic REPEAT1M times);
#   b: the backward trace of this tree (bench/calls/s11_bwdtrace.sh), when B=1.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
F="--heads 16 --head-dim 128 --bwd --bwd-acc split"
OUT="$OUT/k" ROUNDS="${ROUNDS:-2}" BISECT_S=200 KB_TIMEOUT=60 TESTS_S="${TESTS_S:-240}" \
  CTEST_R="${CTEST_R:-gpu_fused|gpu_kernel|bwd}" \
  KB_CASES="--config longnet4 --seq 65536 $F --bwd-dq atomic --iters 10;--config longnet4 --seq 1048576 $F --bwd-dq atomic --iters 3;--config dense --seq 16384 $F --bwd-dq atomic --iters 10;--config longnet4 --seq 65536 $F --bwd-dq pass --iters 10" \
  timeout 500 bench/calls/s8_kernels.sh build bisect tests
OUT="$OUT/r" REPEAT1M="${REPEAT1M:-3}" timeout 90 bench/calls/s10_rows.sh rows
[ "${B:-0}" = 1 ] && OUT="$OUT/b" ITERS=3 timeout 150 bench/calls/s11_bwdtrace.sh > /dev/null 2>&1
cat "$OUT"/k/summary.txt "$OUT"/r/summary.txt "$OUT"/b/summary.txt > "$OUT/summary.txt" 2>/dev/null

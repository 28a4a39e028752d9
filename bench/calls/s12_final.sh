#!/usr/bin/env bash
# Twelfth session's last call, one GPU: the backward's start change (e628ec7) plus the drain's
# thread index read fresh (no spilled reloads before a drain) against .trees/base (main before both):
#   b: build (gpu preset);
#   r: the rows of issues 13, 14 and 16 (bench/calls/s10_rows.sh rows fwd torch);
#   k: bench/kernel_bisect.sh over the atomic backward cases (ROUNDS rounds), then the
#      atomic/nondeterministic backward GPU tests and the small-kernel test (CTEST_R).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
F="--heads 16 --head-dim 128 --bwd --bwd-acc split --bwd-dq atomic"
OUT="$OUT/b" timeout 100 bench/calls/s8_kernels.sh build
OUT="$OUT/r" REPEAT1M="${REPEAT1M:-3}" timeout 120 bench/calls/s10_rows.sh rows fwd torch
OUT="$OUT/k" ROUNDS="${ROUNDS:-2}" BISECT_S=130 KB_TIMEOUT=60 TESTS_S="${TESTS_S:-100}" \
  CTEST_R="${CTEST_R:-gpu_kernel_bwd_small|atomic|nondeterministic|bwd_nccl_hostid_np2|bwd_short_np1}" \
  KB_CASES="--config longnet4 --seq 1048576 $F --iters 3;--config longnet4 --seq 65536 $F --iters 10;--config dense --seq 16384 $F --iters 10" \
  timeout 250 bench/calls/s8_kernels.sh bisect tests
cat "$OUT"/b/summary.txt "$OUT"/r/summary.txt "$OUT"/k/summary.txt > "$OUT/summary.txt" 2>/dev/null

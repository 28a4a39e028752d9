#!/usr/bin/env bash
# Twelfth session, one GPU: the two prepared forward epilogue branches against main, then the
# single-GPU rows of issues 13, 14 and 16 with PDL on (it was merged after they were measured).
#   k: build main (gpu preset), bench/kernel_bisect.sh over .trees/* (mload = fwd-merge-loads,
#      sepi = fwd-smem-epi, each rebased on main) and "cur" (main), forward cases, ROUNDS rounds;
#      each row carries the hash of O and LSE: a branch that claims main's bits must show main's.
#   r: bench/calls/s10_rows.sh rows fwd torch (issue 14's runtime rows, issue 13's forward rows,
#      the PyTorch op beside the recipe).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
F="--heads 16 --head-dim 128"
OUT="$OUT/k" ROUNDS="${ROUNDS:-3}" BISECT_S=300 KB_TIMEOUT=60 \
  KB_CASES="--config longnet4 --seq 65536 $F --iters 20;--config dense --seq 16384 $F --iters 20;--config longnet4 --seq 1048576 $F --iters 5;--config longnet4 --seq 65536 $F --causal --iters 20" \
  timeout 380 bench/calls/s8_kernels.sh build bisect
OUT="$OUT/r" REPEAT1M=3 timeout 200 bench/calls/s10_rows.sh ${ROWS_PHASES:-rows fwd torch}
cat "$OUT"/k/summary.txt "$OUT"/r/summary.txt > "$OUT/summary.txt" 2>/dev/null

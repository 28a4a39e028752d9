#!/usr/bin/env bash
# Twelfth session, one GPU: main with the shared-memory epilogue merged. The forward's GPU tests
# (t), the backward's per-CTA trace (b: bench/calls/s11_bwdtrace.sh, never run before), then the
# forward's per-item trace of the new epilogue (f: bench/calls/s11_trace.sh). Each part's
# summary.txt and logs.tgz under $OUT/{t,b,f}; their summaries concatenated in $OUT/summary.txt.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
OUT="$OUT/t" CTEST_R="${CTEST_R:-gpu_fused|gpu_kernel_short|gpu_kernel_pdl|gpu_verify_(longnet4|paper|dense|geometric|straddle|nccl|short_np1)}" \
  TESTS_S=200 timeout 260 bench/calls/s8_kernels.sh build tests
for part in ${PARTS:-b f}; do
  case $part in
    b) OUT="$OUT/b" ITERS=3 timeout 200 bench/calls/s11_bwdtrace.sh > /dev/null 2>&1 ;;
    f) OUT="$OUT/f" ITERS=5 timeout 150 bench/calls/s11_trace.sh > /dev/null 2>&1 ;;
  esac
done
cat "$OUT"/t/summary.txt "$OUT"/b/summary.txt "$OUT"/f/summary.txt > "$OUT/summary.txt" 2>/dev/null

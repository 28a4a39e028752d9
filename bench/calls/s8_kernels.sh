#!/usr/bin/env bash
# Eighth session's kernel calls on one GPU (kept for the record; see bench/results/*-2026-11-28s8).
# Phases (arguments, in order): build bisect tests profile. Each phase has a time limit so the
# logs always come back; everything is bundled into $OUT/logs.tgz plus $OUT/summary.txt.
#   KB_CASES (bench/kernel_bisect.sh), CTEST_R (GPU test regex), PROFILE_CASES (bench/bwd_profile.sh).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT/logs"
S="$OUT/summary.txt"; : > "$S"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
say() { echo "$*" | tee -a "$S"; }
say "device: $(nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader | head -1); $(date -u)"
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
for ph in "$@"; do
  t0=$(date +%s)
  case "$ph" in
    build) OUT="$OUT/logs" timeout 200 ./launch/gpu_suite.sh build > "$OUT/logs/build_phase.log" 2>&1; rc=$? ;;
    bisect) OUT="$OUT/logs" timeout "${BISECT_S:-300}" bench/kernel_bisect.sh "${ROUNDS:-2}" > "$OUT/logs/bisect_phase.log" 2>&1; rc=$?
            grep -E "^[0-9]+ \|" "$OUT/logs/kernel_bisect.txt" | sed -E 's/--heads 16 --head-dim 128 //; s/--iters [0-9]+ //' >> "$S" ;;
    tests) OUT="$OUT/logs" CTEST_R="${CTEST_R:-kernel|fused}" timeout "${TESTS_S:-300}" ./launch/gpu_suite.sh ctest > "$OUT/logs/tests_phase.log" 2>&1; rc=$?
           grep -E "^== ctest|Failed|\*\*\*" "$OUT/logs/tests_phase.log" | head -20 >> "$S" ;;
    profile) OUT="$OUT/logs" timeout "${PROFILE_S:-200}" bench/bwd_profile.sh > "$OUT/logs/profile_phase.log" 2>&1; rc=$?
             head -60 "$OUT/logs/bwd_profile.txt" >> "$S" ;;
    *) rc=2; say "unknown phase $ph" ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s"
done
rm -f "$OUT"/logs/*.ncu-rep
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

#!/usr/bin/env bash
# Eighth session's kernel calls on one GPU (kept for the record; see bench/results/*-2026-11-28s8).
# Phases (arguments, in order): build bisect tests rows profile (rows: issue 14's runtime rows,
# forward+backward through `ringattn bench`, dQ pass and atomic). Each phase has a time limit so the
# logs always come back; everything is bundled into $OUT/logs.tgz plus $OUT/summary.txt.
#   KB_CASES (bench/kernel_bisect.sh), CTEST_R (GPU test regex), PROFILE_CASES (bench/bwd_profile.sh).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT/logs" "$OUT/phase"  # logs: gpu_suite bundles it into logs/logs.tgz
S="$OUT/summary.txt"; : > "$S"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
say() { echo "$*" | tee -a "$S"; }
say "device: $(nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv,noheader | head -1); $(date -u)"
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
for ph in "$@"; do
  t0=$(date +%s)
  case "$ph" in
    build) OUT="$OUT/logs" timeout 200 ./launch/gpu_suite.sh build > "$OUT/phase/build.log" 2>&1; rc=$? ;;
    bisect) OUT="$OUT/logs" timeout "${BISECT_S:-300}" bench/kernel_bisect.sh "${ROUNDS:-2}" > "$OUT/phase/bisect.log" 2>&1; rc=$?
            grep -E "^[0-9]+ \|" "$OUT/logs/kernel_bisect.txt" | sed -E 's/--heads 16 --head-dim 128 //; s/--iters [0-9]+ //' >> "$S" ;;
    tests) OUT="$OUT/logs" CTEST_R="${CTEST_R:-kernel|fused}" timeout "${TESTS_S:-300}" ./launch/gpu_suite.sh ctest > "$OUT/phase/tests.log" 2>&1; rc=$?
           grep -E "^== ctest|Failed|\*\*\*" "$OUT/phase/tests.log" | head -20 >> "$S" ;;
    profile) OUT="$OUT/logs" timeout "${PROFILE_S:-200}" bench/bwd_profile.sh > "$OUT/phase/profile.log" 2>&1; rc=$?
             head -60 "$OUT/logs/bwd_profile.txt" >> "$S" ;;
    rows) rc=0
          for v in "longnet4 64k" "dense 16k" "longnet4 1M --iters 5 --warmup 1"; do
            set -- $v; c=$1 n=$2; shift 2
            for dq in pass atomic; do
              RINGATTN_BWD_DQ=$dq timeout 200 mpirun --allow-run-as-root -np 1 build/gpu/launch/ringattn bench --backend cuda \
                --op backward --config "$c" --seq "$n" --heads 16 --head-dim 128 "$@" > "$OUT/phase/row_${c}_${n}_$dq.log" 2>&1 || rc=1
              say "$c $n $dq: $(grep -h '^# forward .* backward' "$OUT/phase/row_${c}_${n}_$dq.log" | head -1 | cut -c1-200) $(grep -ho 'peak device memory [0-9.]* [GM]B' "$OUT/phase/row_${c}_${n}_$dq.log" | head -1)"
            done
          done ;;
    *) rc=2; say "unknown phase $ph" ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s"
done
rm -f "$OUT"/logs/*.ncu-rep
tar czf "$OUT/logs.tgz" -C "$OUT" logs phase && rm -rf "$OUT/logs" "$OUT/phase"

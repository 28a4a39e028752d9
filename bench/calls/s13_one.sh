#!/usr/bin/env bash
# Thirteenth session, one GPU, one call: the two prepared kernel branches together (checked out:
# s13-both = main + fwd-epi-prefetch + bwd-epi-rows; they touch disjoint kernels, so the forward
# cases measure the first and the backward cases the second) against .trees/base (main, made with
# `bench/kernel_bisect.sh --prepare base main`). Phases, each started only while the call has time:
#   build:  this tree's gpu preset, the base tree's kernel driver beside it;
#   bisect: forward longnet4 64k / 1M / dense 16k, backward (atomic dQ) the same, ROUNDS (3) rounds
#           alternated; each row carries the O/LSE hash (same bits => same hash);
#   tests:  the forward and backward GPU tests of this tree (CTEST_R);
#   rows:   bench/calls/s10_rows.sh rows (issue 14 through the runtime) if time is left.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed; base $(cat .trees/base/REVISION)"
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
F="--heads 16 --head-dim 128"
B="$F --bwd --bwd-acc split --bwd-dq atomic"
for ph in ${PHASES:-build bisect tests rows}; do
  t0=$(date +%s)
  case "$ph" in
    build) ( cmake -S .trees/base -B build/tree_base -DCMAKE_BUILD_TYPE=Release -DRINGATTN_CUDA=ON -DRINGATTN_BUILD_TESTS=OFF &&
             cmake --build build/tree_base -j 8 --target ringattn_kernel_fwd ) > "$OUT/logs/tree_base_build.log" 2>&1 &
           bp=$!
           OUT="$OUT/logs" timeout 240 ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$?
           wait $bp; rc=$((rc | $?)) ;;
    bisect) OUT="$OUT/logs" KB_TIMEOUT=60 \
            KB_CASES="--config longnet4 --seq 65536 $F --iters 20;--config longnet4 --seq 1048576 $F --iters 3;--config dense --seq 16384 $F --iters 20;--config longnet4 --seq 65536 $B --iters 10;--config longnet4 --seq 1048576 $B --iters 2;--config dense --seq 16384 $B --iters 10" \
            timeout 280 bench/kernel_bisect.sh "${ROUNDS:-3}" > "$OUT/logs/bisect.log" 2>&1; rc=$?
            grep -E "^[0-9]+ \|" "$OUT/logs/kernel_bisect.txt" | sed -E 's/--heads 16 --head-dim 128 //; s/--bwd-acc split //; s/--iters [0-9]+ //' >> "$S" ;;
    tests) [ "$(el)" -gt 400 ] && { say "tests: skipped at $(el) s"; continue; }
           OUT="$OUT/logs" CTEST_R="${CTEST_R:-gpu_fused|gpu_kernel|gpu_verify_(longnet4|paper|dense|geometric|straddle|nccl|short_np1)|bwd|atomic|nondeterministic}" \
             timeout $(( 560 - $(el) )) ./launch/gpu_suite.sh ctest > "$OUT/logs/tests.log" 2>&1; rc=$?
           grep -E "^== ctest|Failed|\*\*\*" "$OUT/logs/tests.log" | head -20 >> "$S" ;;
    rows) [ "$(el)" -gt 470 ] && { say "rows: skipped at $(el) s"; continue; }
          OUT="$OUT/r" REPEAT1M=2 timeout $(( 580 - $(el) )) bench/calls/s10_rows.sh rows > /dev/null 2>&1; rc=$?
          cat "$OUT/r/summary.txt" >> "$S" ;;
    *) say "unknown phase $ph"; rc=2 ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s (at $(el) s)"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

#!/usr/bin/env bash
# Ninth session, last call (one GPU): the backward's kernels with the runtime's accumulators
# (kernel_fwd --bwd-acc split) against float32 ones, per branch and on the issue's cases, and an
# ncu profile of a dilated branch whose epilogue adds to the accumulators (4096:2, atomic dQ).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
{ cmake --preset gpu && cmake --build --preset gpu -j 16 --target ringattn_kernel_fwd; } > "$OUT/logs/build.log" 2>&1 || { tail -20 "$OUT/logs/build.log"; exit 1; }
K=build/gpu/bench/ringattn_kernel_fwd
for c in "--config dense --seq 16384 --bwd-dq atomic" "--config longnet4 --seq 65536 --bwd-dq atomic" "--config longnet4 --seq 65536 --bwd-dq pass" \
         "--branches 2048:1 --seq 65536 --bwd-dq atomic" "--branches 4096:2 --seq 65536 --bwd-dq atomic" "--config longnet4 --seq 1048576 --bwd-dq atomic --iters 3 --warmup 1"; do
  for acc in split f32; do
    # shellcheck disable=SC2086
    line=$(timeout 120 $K $c --heads 16 --head-dim 128 --bwd --bwd-acc $acc 2>&1 | tee -a "$OUT/logs/runs.log" | grep -E "^backward" | tail -1 | sed -E 's/backward \(([^)]*)\): /[\1] /' | cut -c1-260)
    say "$c $acc | $line"
  done
done
PROFILE_ARGS="--heads 16 --head-dim 128" PROFILE_CASES="split4096|bwd_dkdv|--branches 4096:2 --seq 65536 --bwd --bwd-dq atomic --bwd-acc split" \
  OUT="$OUT/logs" timeout 200 bench/bwd_profile.sh > "$OUT/logs/profile.log" 2>&1
head -45 "$OUT/logs/bwd_profile.txt" >> "$S"
rm -f "$OUT"/logs/*.ncu-rep
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

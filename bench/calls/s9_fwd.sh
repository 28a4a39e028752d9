#!/usr/bin/env bash
# Ninth session, one GPU: why the forward runs `longnet4` at ~540 TF/s when `dense` 16k runs at
# ~620 (issue 13's single-GPU rows): the forward kernel alone on one branch at a time at 64k
# (kernel driver) and an ncu profile of 2048:1 against 16384:1 (the same SASS, short against
# long segments); then issue 14's 64k and dense rows once more on this card (atomic dQ).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
{ cmake --preset gpu && cmake --build --preset gpu -j 16 --target ringattn_kernel_fwd ringattn_cli; } > "$OUT/logs/build.log" 2>&1 || { tail -20 "$OUT/logs/build.log"; exit 1; }
K=build/gpu/bench/ringattn_kernel_fwd
for c in "--config dense --seq 16384" "--branches 2048:1 --seq 65536" "--branches 4096:2 --seq 65536" "--branches 16384:8 --seq 65536" \
         "--branches 16384:1 --seq 65536" "--config longnet4 --seq 65536"; do
  # shellcheck disable=SC2086
  line=$(timeout 60 $K $c --heads 16 --head-dim 128 --iters 20 2>&1 | tee -a "$OUT/logs/fwd.log" | grep -A1 "^branches" | tail -1)
  say "fwd $c | $line"
done
PROFILE_ARGS="--heads 16 --head-dim 128" PROFILE_CASES="fwd2048|fwd_kernel|--branches 2048:1 --seq 65536 --iters 1;fwd16384|fwd_kernel|--branches 16384:1 --seq 65536 --iters 1" \
  OUT="$OUT/logs" timeout 200 bench/bwd_profile.sh > "$OUT/logs/profile.log" 2>&1
grep -E "^== |gpu__time|issue_active|samples by execution" "$OUT/logs/bwd_profile.txt" >> "$S"
for c in "longnet4 64k" "dense 16k"; do
  set -- $c
  RINGATTN_BWD_DQ=atomic timeout 120 mpirun --allow-run-as-root -np 1 build/gpu/launch/ringattn bench --backend cuda --op backward \
    --config "$1" --seq "$2" --heads 16 --head-dim 128 > "$OUT/logs/row_$1.log" 2>&1
  say "$c atomic: $(grep -h '^# forward .* backward' "$OUT/logs/row_$1.log" | cut -c1-160)"
done
rm -f "$OUT"/logs/*.ncu-rep
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

#!/usr/bin/env bash
# Prepared in the twelfth session for the next one's first call (one GPU, ~5 min): the rows of
# issues 13, 14 and 16 in the GPU's sustained state, now that the benchmarks warm up by time
# (363ec8c: `ringattn bench --warmup-ms`, `ringattn_kernel_fwd --warmup-ms`, `bench/torch_op.py
# --warmup-s` with its cases timed in turn). Phases (arguments, in order; default all):
#   build:  the gpu preset;
#   clock:  the kernel driver on `longnet4` 64k and `dense` 16k with the old protocol
#           (--warmup 2 --warmup-ms 0) and the new default, alternated ROUNDS (3) times: shows the
#           boost-clock step (each row's `timing:` line has the first and last timed run) and
#           which numbers the earlier sessions' minima were;
#   rows:   bench/calls/s10_rows.sh rows fwd torch (runtime rows, forward rows, the op vs the recipe).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
K=build/gpu/bench/ringattn_kernel_fwd
phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(build clock rows)
for ph in "${phases[@]}"; do
  t0=$(date +%s)
  case "$ph" in
    build) OUT="$OUT/logs" timeout 200 ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$? ;;
    clock) rc=0
           for r in $(seq 1 "${ROUNDS:-3}"); do
             for c in "--config longnet4 --seq 65536" "--config dense --seq 16384"; do
               for w in "--warmup 2 --warmup-ms 0" "--warmup 2"; do
                 # shellcheck disable=SC2086
                 out=$(timeout 60 $K $c --heads 16 --head-dim 128 --iters 20 $w 2>&1); rc=$((rc | $?))
                 echo "$out" >> "$OUT/logs/clock.log"
                 say "clock r$r | $c | $w | $(echo "$out" | grep -A1 '^branches' | tail -1 | tr -s ' ' | cut -d' ' -f7-10) | $(echo "$out" | grep '^timing:' | cut -c9-)"
               done
             done
           done ;;
    rows)  OUT="$OUT/r" REPEAT1M="${REPEAT1M:-2}" timeout 300 bench/calls/s10_rows.sh rows fwd torch > /dev/null 2>&1; rc=$?
           cat "$OUT/r/summary.txt" >> "$S" ;;
    *) say "unknown phase $ph"; rc=2 ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

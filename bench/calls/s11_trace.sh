#!/usr/bin/env bash
# Eleventh session, one GPU: where the forward loses ~3.5 us per work item (an item of 128
# queries x 2048 keys takes ~31.3 us while a key block inside long items costs ~1.74 us;
# h200-2026-11-28s10). Builds the forward kernel with its per-item trace (-DRINGATTN_FWD_TRACE=ON,
# kernels/cuda/fwd_trace.cuh) in build/gpu-trace and runs ringattn_kernel_fwd --trace: per pass,
# the medians of each phase of an item (`trace ` lines into $S, every traced item into
# logs/trace_N.csv). The same cases from a build without the option (build/gpu-notrace) show what
# the instrumentation costs. ITERS (default 5) timed forwards per case.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
ITERS="${ITERS:-5}"
build_driver build/gpu-trace build_trace.log -DRINGATTN_FWD_TRACE=ON; rc_t=$?
build_driver build/gpu-notrace build_notrace.log -DRINGATTN_FWD_TRACE=OFF; rc_n=$?
i=0
for c in "--branches 2048:1 --seq 65536" "--config dense --seq 16384" "--config longnet4 --seq 65536"; do
  i=$((i + 1))
  if [ $rc_n = 0 ]; then
    # shellcheck disable=SC2086
    line=$(timeout 60 build/gpu-notrace/bench/ringattn_kernel_fwd $c --heads 16 --head-dim 128 --iters "$ITERS" 2>&1 |
           tee -a "$OUT/logs/notrace.log" | grep -A1 "^branches" | tail -1)
    say "notrace $c | $line"
  fi
  [ $rc_t = 0 ] || continue
  t0=$(date +%s)
  # shellcheck disable=SC2086
  timeout 90 build/gpu-trace/bench/ringattn_kernel_fwd --trace --trace-csv "$OUT/logs/trace_$i.csv" $c --heads 16 \
    --head-dim 128 --iters "$ITERS" > "$OUT/logs/trace_$i.log" 2>&1
  rc=$?
  say "== trace $i: $c: rc=$rc in $(( $(date +%s) - t0 )) s | $(grep -A1 "^branches" "$OUT/logs/trace_$i.log" | tail -1)"
  grep "^trace " "$OUT/logs/trace_$i.log" >> "$S"
  [ $rc = 0 ] || tail -5 "$OUT/logs/trace_$i.log" >> "$S"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

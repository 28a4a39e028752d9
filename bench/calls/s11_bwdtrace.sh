#!/usr/bin/env bash
# Eleventh session, one GPU: where a CTA of the backward's dK/dV kernel spends its time (one CTA
# per 128-key block, not persistent: with longnet4's 2048-key segments a CTA walks 32 query blocks
# and pays ~10 us of its ~110 us outside the steady loop; with atomic dQ the consumers wait ~12% on
# the producer's drain). Builds the kernels with the dK/dV kernel's per-CTA trace
# (-DRINGATTN_BWD_TRACE=ON, kernels/cuda/bwd_trace.cuh) in build/gpu-bwdtrace and runs
# ringattn_kernel_fwd --bwd --trace: per pass, the medians of each phase of a CTA (`trace bwd `
# lines into $S, every CTA's record into logs/bwdtrace_N.csv). The same cases from a build without
# the option (build/gpu-notrace) show what the instrumentation costs (the `backward` lines' dK/dV
# times). ITERS (default 3) timed runs per case.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
ITERS="${ITERS:-3}"
build_driver build/gpu-bwdtrace build_bwdtrace.log -DRINGATTN_BWD_TRACE=ON -DRINGATTN_FWD_TRACE=OFF; rc_t=$?
build_driver build/gpu-notrace build_notrace.log -DRINGATTN_BWD_TRACE=OFF -DRINGATTN_FWD_TRACE=OFF; rc_n=$?
COMMON="--bwd --bwd-acc split --heads 16 --head-dim 128 --iters $ITERS"
i=0
for c in "--config longnet4 --seq 65536 --bwd-dq atomic" "--config dense --seq 16384 --bwd-dq atomic" \
         "--branches 2048:1 --seq 65536 --bwd-dq pass"; do
  i=$((i + 1))
  if [ $rc_n = 0 ]; then
    # shellcheck disable=SC2086
    line=$(timeout 60 build/gpu-notrace/bench/ringattn_kernel_fwd $c $COMMON 2>&1 | tee -a "$OUT/logs/notrace.log" |
           grep "^backward")
    say "notrace $c | $line"
  fi
  [ $rc_t = 0 ] || continue
  t0=$(date +%s)
  # shellcheck disable=SC2086
  timeout 90 build/gpu-bwdtrace/bench/ringattn_kernel_fwd $c $COMMON --trace --bwd-trace-csv "$OUT/logs/bwdtrace_$i.csv" \
    > "$OUT/logs/bwdtrace_$i.log" 2>&1
  rc=$?
  say "== bwdtrace $i: $c: rc=$rc in $(( $(date +%s) - t0 )) s | $(grep "^backward" "$OUT/logs/bwdtrace_$i.log")"
  grep "^trace " "$OUT/logs/bwdtrace_$i.log" >> "$S"
  [ $rc = 0 ] || tail -5 "$OUT/logs/bwdtrace_$i.log" >> "$S"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

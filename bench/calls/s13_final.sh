#!/usr/bin/env bash
# Thirteenth session's last call, one GPU (~300 s of device time left): the dQ pass's K/V through
# TMA tensor maps as well (BwdParams::k_maps), then the backward's GPU tests on the final tree.
# Phases, each started only while the call has time (DEADLINE_S, default 300):
#   build:  the gpu preset;
#   sanity: one backward with the dQ pass, one causal f16 D 64 (a hang here stops the call);
#   ab:     the kernel driver, dQ pass, TMA and cp.async (--bwd-no-tma) on longnet4 64k and 1M;
#   tests:  CTEST_R (the backward's GPU tests and the training example's), until the deadline;
#   rows:   issue 14 through the runtime if time is left.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
DL=${DEADLINE_S:-290}
K=build/gpu/bench/ringattn_kernel_fwd
F="--heads 16 --head-dim 128 --bwd --bwd-acc split"
stop=0
for ph in ${PHASES:-build sanity ab tests rows}; do
  [ $stop = 1 ] && break
  t0=$(date +%s); rc=0
  case "$ph" in
    build) OUT="$OUT/logs" timeout 200 ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$?; [ $rc = 0 ] || stop=1 ;;
    sanity) for c in "--config longnet4 --seq 65536 $F --bwd-dq pass" \
                     "--config geometric --seq 32768 --causal --heads 4 --head-dim 64 --dtype f16 --bwd --bwd-dq pass"; do
              # shellcheck disable=SC2086
              out=$(timeout 30 $K $c --iters 2 2>&1); r=$?; echo "$out" >> "$OUT/logs/sanity.log"
              say "sanity rc=$r | $c | $(echo "$out" | grep '^bwd: TMA' | cut -c1-30) | $(echo "$out" | grep '^backward' | grep -oE 'dQ [0-9.]+ ms' | head -1)"
              [ $r = 0 ] || { rc=1; stop=1; }
            done ;;
    ab) for c in "--config longnet4 --seq 65536 $F --bwd-dq pass --iters 10" "--config longnet4 --seq 1048576 $F --bwd-dq pass --iters 2"; do
          for m in tma no-tma; do
            # shellcheck disable=SC2086
            out=$(timeout 60 $K $c $([ $m = no-tma ] && echo --bwd-no-tma) 2>&1) || rc=1
            echo "$out" >> "$OUT/logs/ab.log"
            say "ab | $m | $(echo "$c" | sed -E 's/--heads 16 --head-dim 128 --bwd --bwd-acc split //; s/ --iters [0-9]+//') | $(echo "$out" | grep '^backward' | grep -oE '(dK/dV|dQ) [0-9.]+ ms|total [0-9.]+( ms)?' | tr '\n' ' ')"
          done
        done ;;
    tests) left=$(( DL - 25 - $(el) )); [ $left -lt 60 ] && { say "tests: skipped at $(el) s"; continue; }
           OUT="$OUT/logs/t" CTEST_R="${CTEST_R:-gpu_kernel|bwd|atomic|nondeterministic|train_gpu}" \
             timeout $left ./launch/gpu_suite.sh ctest > "$OUT/logs/tests_phase.log" 2>&1; rc=$?
           say "$(grep -h '^== ctest' "$OUT/logs/tests_phase.log" | head -1)"
           # per-test lines: ctest's log while it runs (gpu_suite bundles it away when it completes)
           cat "$OUT/logs/t/ctest_subset.log" 2>/dev/null | grep -E "Failed|\*\*\*|Passed" | cut -c1-100 > "$OUT/logs/tests_lines.txt"
           grep -hE "Failed|\*\*\*" "$OUT/logs/tests_phase.log" | head -20 >> "$S"
           [ -s "$OUT/logs/tests_lines.txt" ] && say "tests (cut by the deadline): $(grep -c Passed "$OUT/logs/tests_lines.txt") passed, $(grep -cE "Failed|\*\*\*" "$OUT/logs/tests_lines.txt") failed or timed out" ;;
    rows) [ $(( DL - $(el) )) -lt 15 ] && { say "rows: skipped at $(el) s"; continue; }
          log="$OUT/logs/row_1M_atomic.log"
          RINGATTN_BWD_DQ=atomic timeout $(( DL - $(el) )) mpirun --allow-run-as-root -np 1 build/gpu/launch/ringattn bench --backend cuda \
            --op backward --heads 16 --head-dim 128 --config longnet4 --seq 1M --iters 5 --warmup 1 > "$log" 2>&1 || rc=1
          say "row | longnet4 1M atomic | $(grep -h '^# forward .* backward' "$log" | head -1 | cut -c3-150)" ;;
    *) say "unknown phase $ph"; rc=2 ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s (at $(el) s)"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

#!/usr/bin/env bash
# Thirteenth session, one GPU, one call: the dK/dV kernel's Q and dO through TMA tensor maps
# (BwdParams::q_maps; whole 64-row blocks of tiles with query stride 1, 2, 4, 8; one thread issues
# them, the producer's 127 others only arrive) against the cp.async gather (--bwd-no-tma, the same
# binary: the same bits). Phases, each started only while the call has time:
#   build:  the gpu preset;
#   sanity: one backward of each kind (a hang here stops the call);
#   ab:     the kernel driver's backward, TMA and cp.async alternated, ROUNDS (3) rounds;
#   tests:  the backward GPU tests (CTEST_R; KernelPdl compares TMA against cp.async bit for bit);
#   rows:   issue 14 through the runtime (RINGATTN_BWD_TMA=1 default vs 0 on longnet4 1M atomic).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
K=build/gpu/bench/ringattn_kernel_fwd
F="--heads 16 --head-dim 128 --bwd --bwd-acc split"
R="mpirun --allow-run-as-root -np 1 build/gpu/launch/ringattn bench --backend cuda --op backward --heads 16 --head-dim 128"
stop=0
for ph in ${PHASES:-build sanity ab tests rows}; do
  [ $stop = 1 ] && break
  t0=$(date +%s); rc=0
  case "$ph" in
    build) OUT="$OUT/logs" timeout 200 ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$?; [ $rc = 0 ] || stop=1 ;;
    sanity) for c in "--config longnet4 --seq 65536 $F --bwd-dq atomic" "--config longnet4 --seq 65536 $F --bwd-dq pass" \
                     "--config geometric --seq 32768 --causal --heads 4 --head-dim 64 --dtype f16 --bwd --bwd-dq atomic"; do
              # shellcheck disable=SC2086
              out=$(timeout 30 $K $c --iters 2 2>&1); r=$?; echo "$out" >> "$OUT/logs/sanity.log"
              say "sanity rc=$r | $c | $(echo "$out" | grep '^backward' | grep -o 'dK/dV [0-9.]* ms' | head -1)"
              [ $r = 0 ] || { rc=1; stop=1; }
            done ;;
    ab) for r in $(seq 1 "${ROUNDS:-3}"); do
          for c in "--config longnet4 --seq 65536 $F --bwd-dq atomic --iters 10" "--config longnet4 --seq 1048576 $F --bwd-dq atomic --iters 2" \
                   "--config dense --seq 16384 $F --bwd-dq atomic --iters 10" "--config longnet4 --seq 65536 $F --bwd-dq pass --iters 10"; do
            for m in tma no-tma; do
              # shellcheck disable=SC2086
              out=$(timeout 60 $K $c $([ $m = no-tma ] && echo --bwd-no-tma) 2>&1) || rc=1
              echo "$out" >> "$OUT/logs/ab.log"
              say "ab r$r | $m | $(echo "$c" | sed -E 's/--heads 16 --head-dim 128 --bwd --bwd-acc split //; s/ --iters [0-9]+//') | $(echo "$out" | grep '^backward' | grep -oE 'dK/dV [0-9.]+ ms \([0-9.]+ TFLOP/s executed\)|total [0-9.]+( ms)?' | tr '\n' ' ') | $(echo "$out" | grep -o 'hash of O and LSE 0x[0-9a-f]*')"
            done
          done
        done ;;
    tests) [ "$(el)" -gt 330 ] && { say "tests: skipped at $(el) s"; continue; }
           OUT="$OUT/logs/t" CTEST_R="${CTEST_R:-gpu_kernel|bwd|atomic|nondeterministic}" \
             timeout $(( 540 - $(el) )) ./launch/gpu_suite.sh ctest > "$OUT/logs/tests_phase.log" 2>&1; rc=$?
           say "$(grep -h '^== ctest' "$OUT/logs/tests_phase.log" | head -1)"
           grep -hE "Failed|\*\*\*" "$OUT/logs/tests_phase.log" | head -20 >> "$S" ;;
    rows) [ "$(el)" -gt 500 ] && { say "rows: skipped at $(el) s"; continue; }
          for r in 1 2; do
            for m in 1 0; do
              log="$OUT/logs/row_1M_tma${m}_$r.log"
              RINGATTN_BWD_TMA=$m RINGATTN_BWD_DQ=atomic timeout 40 $R --config longnet4 --seq 1M --iters 5 --warmup 1 > "$log" 2>&1 || rc=1
              say "row r$r RINGATTN_BWD_TMA=$m | longnet4 1M atomic | $(grep -h '^# forward .* backward' "$log" | head -1 | cut -c3-150)"
            done
          done ;;
    *) say "unknown phase $ph"; rc=2 ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s (at $(el) s)"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

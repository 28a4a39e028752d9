#!/usr/bin/env bash
# Eleventh session, one GPU: programmatic dependent launch (PDL) between the pass launches of
# one sequence (branch `pdl`: FwdParams::pdl, BwdParams::pdl / pdl_dq, RINGATTN_PDL). Its tests
# first (the bits of every PDL sequence must equal the plain launches'), then the kernel driver
# alternated with and without --no-pdl (ABBA order over the rounds, so a drift of the clocks
# weighs on both alike). Phases (arguments, in order; default all three): build tests ab.
#   tests: the GPU tests matching CTEST_R (default: the PDL ones, the forward kernels, atomic
#          and nondeterministic dQ, the longnet4 and short-segment runtime verifies);
#   ab:    ROUNDS (default 3) rounds of every case in AB_CASES (";"-separated kernel_fwd
#          arguments; default below) with PDL (the driver's default) and with --no-pdl.
# Everything within DEADLINE_S (default 540) seconds of the start: a run that would begin
# later is skipped and said so. Summary lines in $S; logs bundled into $OUT/logs.tgz.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
start=$(date +%s)
left() { echo $(( ${DEADLINE_S:-540} - ($(date +%s) - start) )); }
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
K=build/gpu/bench/ringattn_kernel_fwd
phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(build tests ab)
for ph in "${phases[@]}"; do
  t0=$(date +%s)
  case "$ph" in
    build) OUT="$OUT/logs" timeout "${BUILD_S:-170}" ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$?
           grep -E "== build|== sass" "$OUT/logs/build.log" | head -3 >> "$S" ;;
    tests) re="${CTEST_R:-pdl|fused_forward|atomic|nondeterministic|bwd_longnet4|bwd_short|verify_longnet4}"
           say "tests: $(ctest --test-dir build/gpu -L gpu -N -R "$re" 2>/dev/null | grep -c 'Test *#') selected by '$re'"
           OUT="$OUT/logs" CTEST_R="$re" timeout "${TESTS_S:-200}" ./launch/gpu_suite.sh ctest > "$OUT/tests.log" 2>&1; rc=$?
           grep -E "== ctest|Failed|\*\*\*" "$OUT/tests.log" | head -20 >> "$S"; mv "$OUT/tests.log" "$OUT/logs/" ;;  # gpu_suite bundles $OUT/logs
    ab) rc=0
        [ -x "$K" ] || { say "ab: $K missing (build first)"; rc=1; continue; }
        IFS=';' read -r -a cases <<< "${AB_CASES:---config longnet4 --seq 65536 --heads 16 --head-dim 128 --iters 20;--config longnet4 --seq 65536 --heads 16 --head-dim 128 --bwd --bwd-dq atomic --bwd-acc split --iters 10;--config longnet4 --seq 65536 --heads 16 --head-dim 128 --bwd --bwd-dq pass --bwd-acc split --iters 10;--config dense --seq 16384 --heads 16 --head-dim 128 --iters 20}"
        for r in $(seq 1 "${ROUNDS:-3}"); do
          order="pdl nopdl"; [ $((r % 2)) = 0 ] && order="nopdl pdl"
          for ci in "${!cases[@]}"; do
            for v in $order; do
              if [ "$(left)" -lt 25 ]; then say "ab $r $v case$ci: skipped (deadline)"; continue; fi
              flag=""; [ "$v" = nopdl ] && flag="--no-pdl"
              log="$OUT/logs/ab_case${ci}_${v}.log"
              echo "### round $r: $K ${cases[$ci]} $flag" >> "$log"
              # shellcheck disable=SC2086
              out=$(timeout 60 $K ${cases[$ci]} $flag 2>&1); x=$?
              echo "$out" >> "$log"; [ $x = 0 ] || rc=1
              # the backward's summary line, else the forward's row (the line after its header)
              line=$(echo "$out" | grep -E -A1 "^backward|^branches" | grep -vE "^branches|^--" | tail -1 | cut -c1-260)
              say "ab $r $v case$ci rc=$x | $line"
            done
          done
        done
        # Medians over the rounds: forward ms(med) (8th field of the row), backward total ms.
        lines=$(grep -E "^ab [0-9]+ (pdl|nopdl) case[0-9]+ rc=0 " "$S")
        for ci in "${!cases[@]}"; do
          for v in pdl nopdl; do
            med=$(echo "$lines" | grep -E "^ab [0-9]+ $v case$ci rc=0 " | sed -E 's/.*\| //' |
              awk '{ if ($1 == "backward") { for (i = 1; i <= NF; ++i) if ($i == "total") { x = $(i + 1); break } } else x = $8; print x }' |
              sort -g | awk '{ m[NR] = $1 } END { if (NR) printf "%.3f ms over %d rounds", m[int((NR + 1) / 2)], NR }')
            say "ab median case$ci $v ${med:-none} | ${cases[$ci]}"
          done
        done ;;
    *) rc=2; say "unknown phase $ph" ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s ($(left) s left)"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

#!/usr/bin/env bash
# Tenth session, one GPU: every single-GPU must row of issues 13, 14 and 16 on one card in one call.
# Phases (arguments, in order): build tests rows ab fwd torch.
#   tests: GPU tests matching CTEST_R (default: the backward kernels' atomic and NCCL ones);
#   rows:  issue 14 through `ringattn bench --op backward` (dQ pass and atomic; 1M atomic REPEAT1M times);
#   ab:    the runtime of .trees/base (bench/kernel_bisect.sh --prepare base REV) against this tree, AB_ROWS
#          (";"-separated `ringattn bench` arguments; default longnet4 1M atomic) alternated AB_ROUNDS times (AB_OP: --op, default backward);
#   fwd:   issue 13's forward rows, the kernel driver (dense 16k, longnet4 64k and 1M);
#   torch: issue 16, bench/torch_op_gpu.sh with TORCH_BENCH_ONLY=1 (the op against the recipe, side by side).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
R="mpirun --allow-run-as-root -np 1 build/gpu/launch/ringattn bench --backend cuda --op backward --heads 16 --head-dim 128"
for ph in "$@"; do
  t0=$(date +%s)
  case "$ph" in
    build) OUT="$OUT/logs" timeout 200 ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$? ;;
    tests) OUT="$OUT/logs" CTEST_R="${CTEST_R:-kernel|atomic|nondeterministic}" timeout "${TESTS_S:-200}" ./launch/gpu_suite.sh ctest > "$OUT/tests.log" 2>&1; rc=$?
           grep -E "^== ctest|Failed|\*\*\*" "$OUT/tests.log" | head -20 >> "$S"; mv "$OUT/tests.log" "$OUT/logs/" ;;  # gpu_suite bundles $OUT/logs
    rows) rc=0
          for v in "longnet4 64k pass" "longnet4 64k atomic" "dense 16k pass" "dense 16k atomic" "longnet4 1M pass"; do
            set -- $v
            RINGATTN_BWD_DQ=$3 timeout 120 $R --config "$1" --seq "$2" $([ "$2" = 1M ] && echo "--iters 5 --warmup 1") > "$OUT/logs/row_$1_$2_$3.log" 2>&1 || rc=1
            say "$v: $(grep -h '^# forward .* backward' "$OUT/logs/row_$1_$2_$3.log" | head -1 | cut -c1-200) $(grep -ho 'peak device memory [0-9.]* [GM]B' "$OUT/logs/row_$1_$2_$3.log" | head -1)"
          done
          for i in $(seq 1 "${REPEAT1M:-3}"); do
            RINGATTN_BWD_DQ=atomic timeout 120 $R --config longnet4 --seq 1M --iters 5 --warmup 1 > "$OUT/logs/row_1M_atomic_$i.log" 2>&1 || rc=1
            say "longnet4 1M atomic #$i: $(grep -h '^# forward .* backward' "$OUT/logs/row_1M_atomic_$i.log" | head -1 | cut -c1-200) $(grep -ho 'peak device memory [0-9.]* [GM]B' "$OUT/logs/row_1M_atomic_$i.log" | head -1)"
          done ;;
    ab) rc=0
        { cmake -S .trees/base -B build/tree_base_rt -DCMAKE_BUILD_TYPE=Release -DRINGATTN_CUDA=ON -DRINGATTN_BUILD_TESTS=OFF &&
          cmake --build build/tree_base_rt -j 16 --target ringattn_cli; } > "$OUT/logs/ab_build.log" 2>&1 || { rc=1; say "ab: base build failed"; continue; }
        say "ab: base = $(cat .trees/base/REVISION)"
        IFS=';' read -r -a abrows <<< "${AB_ROWS:-RINGATTN_BWD_DQ=atomic --config longnet4 --seq 1M --iters 5 --warmup 1}"
        for r in $(seq 1 "${AB_ROUNDS:-3}"); do
          for row in "${abrows[@]}"; do
            for t in base cur; do
              bin=$([ $t = base ] && echo build/tree_base_rt/launch/ringattn || echo build/gpu/launch/ringattn)
              # shellcheck disable=SC2086
              env ${row%%--*} timeout 120 mpirun --allow-run-as-root -np 1 $bin bench --backend cuda --op "${AB_OP:-backward}" --heads 16 --head-dim 128 --${row#*--} \
                > "$OUT/logs/ab_${t}_$r.log" 2>&1 || rc=1
              say "ab $r $t | ${row} | $(grep -h '^# forward .* backward' "$OUT/logs/ab_${t}_$r.log" | head -1 | cut -c1-170)$(grep -E '^ +[a-z]' "$OUT/logs/ab_${t}_$r.log" | tail -1 | cut -c1-120)"
            done
          done
        done ;;
    fwd) rc=0
         for c in "--config dense --seq 16384 --iters 20" "--config longnet4 --seq 65536 --iters 20" "--config longnet4 --seq 1048576 --iters 5"; do
           # shellcheck disable=SC2086
           out=$(timeout 90 build/gpu/bench/ringattn_kernel_fwd $c --heads 16 --head-dim 128 2>&1); echo "$out" >> "$OUT/logs/fwd.log"
           say "fwd $c | $(echo "$out" | grep -A1 "^branches" | tail -1) | $(echo "$out" | grep "^timing:" | cut -c9-)"
         done ;;
    torch) OUT="$OUT/logs/torch" TORCH_BENCH_ONLY=1 timeout 300 bench/torch_op_gpu.sh > "$OUT/logs/torch.log" 2>&1; rc=$?
           grep -E "^  |^speedup|^overhead|^#|torch_op" "$OUT/logs/torch.log" | cut -c1-200 >> "$S" ;;
    *) rc=2; say "unknown phase $ph" ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

#!/usr/bin/env bash
# Thirteenth session, one GPU, one call: the rows in the GPU's sustained state against the old
# protocol, on one card (the boost clock holds only the first ~0.1 s of load; the benchmarks warm
# up by time since 363ec8c). Each pair runs old, then new, ROUNDS (2) times:
#   kernel: the kernel driver, dense 16k and longnet4 64k forward (old: --warmup 2 --warmup-ms 0);
#   cudnn:  cuDNN's SDPA alone at dense 16k (bench/torch_ring.py at one rank; old: --warmup-s 0);
#   rt:     issue 14 through the runtime, atomic dQ: longnet4 1M, longnet4 64k, dense 16k
#           (old: --warmup 1 --warmup-ms 0);
#   torch:  issue 16, the op against the recipe (bench/calls/s10_rows.sh torch; time-based).
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
K=build/gpu/bench/ringattn_kernel_fwd
R="mpirun --allow-run-as-root -np 1 build/gpu/launch/ringattn bench --backend cuda --op backward --heads 16 --head-dim 128"
for ph in ${PHASES:-build kernel cudnn rt torch}; do
  t0=$(date +%s); rc=0
  case "$ph" in
    build) OUT="$OUT/logs" timeout 200 ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$? ;;
    kernel) for r in $(seq 1 "${ROUNDS:-2}"); do
              for c in "--config dense --seq 16384" "--config longnet4 --seq 65536"; do
                for w in "--warmup 2 --warmup-ms 0" "--warmup 2 --warmup-ms 1000"; do
                  # shellcheck disable=SC2086
                  out=$(timeout 60 $K $c --heads 16 --head-dim 128 --iters 20 $w 2>&1) || rc=1
                  echo "$out" >> "$OUT/logs/kernel.log"
                  say "kernel r$r | $c | $w | $(echo "$out" | grep -A1 '^branches' | tail -1 | tr -s ' ' | cut -d' ' -f8-10) | $(echo "$out" | grep '^timing:' | cut -c9-)"
                done
              done
            done ;;
    cudnn) for r in $(seq 1 "${ROUNDS:-2}"); do
             for w in "--warmup 3 --warmup-s 0" "--warmup 3 --warmup-s 1"; do
               # shellcheck disable=SC2086
               out=$(timeout 90 mpirun --allow-run-as-root -np 1 python3 bench/torch_ring.py --seq 16k --heads 16 --head-dim 128 --iters 20 $w 2>&1) || rc=1
               echo "$out" >> "$OUT/logs/cudnn.log"
               say "cudnn r$r | dense 16k | $w | $(echo "$out" | grep -E '^  dense' | tr -s ' ' | cut -d' ' -f5,7) | $(echo "$out" | grep '^# median' | cut -c1-80)"
             done
           done ;;
    rt) for r in $(seq 1 "${ROUNDS:-2}"); do
          for c in "longnet4 1M --iters 5" "longnet4 64k --iters 10" "dense 16k --iters 10"; do
            set -- $c; cfg=$1 n=$2; shift 2
            for w in "--warmup 1 --warmup-ms 0" "--warmup 1 --warmup-ms 1000"; do
              log="$OUT/logs/rt_${cfg}_${n}_r${r}_$(echo "$w" | tr -cd '0-9').log"
              # shellcheck disable=SC2086
              RINGATTN_BWD_DQ=atomic timeout 120 $R --config "$cfg" --seq "$n" "$@" $w > "$log" 2>&1 || rc=1
              say "rt r$r | $cfg $n atomic | $w | $(grep -h '^# forward .* backward' "$log" | head -1 | cut -c3-150)"
            done
          done
        done ;;
    torch) [ "$(el)" -gt 420 ] && { say "torch: skipped at $(el) s"; continue; }
           OUT="$OUT/t" timeout $(( 580 - $(el) )) bench/calls/s10_rows.sh torch > /dev/null 2>&1; rc=$?
           cat "$OUT/t/summary.txt" >> "$S" ;;
    *) say "unknown phase $ph"; rc=2 ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s (at $(el) s)"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

#!/usr/bin/env bash
# Ninth session, one GPU: where longnet4's backward loses against dense's per FLOP, and where the
# runtime loses against its kernels. Phases (arguments, in order):
#   build     ./launch/gpu_suite.sh build
#   branches  the kernel driver's backward (atomic dQ and dQ pass) on one branch at a time at 64k
#             (2048:1, 4096:2, 8192:4, 16384:8, 16384:1) and on dense 16k: which property costs
#   gap       ringattn bench (forward, forward+backward; atomic dQ) on longnet4 64k and dense 16k with
#             the SM clock, power and throttle reasons sampled every 100 ms (nvidia-smi), then ncu's
#             duration of every kernel of one forward+backward through the runtime (--clock-control
#             none): kernel sum against the event time
#   mem1m     longnet4 1M forward+backward, atomic dQ: time and peak memory
# Logs bundled into $OUT/logs.tgz plus $OUT/summary.txt.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
K=build/gpu/bench/ringattn_kernel_fwd R=build/gpu/launch/ringattn
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
smi() { nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw,temperature.gpu,clocks_throttle_reasons.active --format=csv -lms 100 > "$1" 2>&1 & echo $!; }
bench() {  # name, mode, args...
  local name=$1 dq=$2; shift 2
  RINGATTN_BWD_DQ=$dq timeout 200 mpirun --allow-run-as-root -np 1 $R bench --backend cuda --heads 16 --head-dim 128 "$@" > "$OUT/logs/$name.log" 2>&1
  say "$name: rc=$? $(grep -hE '^  [a-z0-9]' "$OUT/logs/$name.log" | head -1 | awk '{print $4" ms"}') $(grep -h '^# forward .* backward' "$OUT/logs/$name.log" | cut -c1-150) $(grep -ho 'host time inside the call: [0-9.]* ms' "$OUT/logs/$name.log") $(grep -ho 'peak device memory [0-9.]* [GM]B' "$OUT/logs/$name.log")"
}
for ph in "$@"; do
  t0=$(date +%s)
  case "$ph" in
    build) OUT="$OUT/logs" timeout 200 ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$? ;;
    branches) rc=0
      for c in "--config dense --seq 16384" "--branches 2048:1 --seq 65536" "--branches 4096:2 --seq 65536" \
               "--branches 8192:4 --seq 65536" "--branches 16384:8 --seq 65536" "--branches 16384:1 --seq 65536" \
               "--config longnet4 --seq 65536"; do
        for dq in atomic pass; do
          # shellcheck disable=SC2086
          line=$(timeout 60 $K $c --heads 16 --head-dim 128 --bwd --bwd-dq $dq --iters 10 2>&1 | tee -a "$OUT/logs/branches.log" | grep -E "^backward" | tail -1 | sed -E 's/backward \([^)]*\): //' | cut -c1-200)
          say "$c $dq | $line"
        done
      done ;;
    gap) rc=0
      pid=$(smi "$OUT/logs/smi_gap.csv")
      for c in "longnet4 65536" "dense 16384"; do
        set -- $c
        bench "fwd_$1" atomic --op forward --config "$1" --seq "$2" --iters 20
        bench "fwdbwd_$1" atomic --op backward --config "$1" --seq "$2" --iters 20
        bench "fwd_again_$1" atomic --op forward --config "$1" --seq "$2" --iters 20
      done
      kill "$pid" 2>/dev/null
      for c in "longnet4 65536" "dense 16384"; do
        set -- $c
        RINGATTN_BWD_DQ=atomic timeout 200 mpirun --allow-run-as-root -np 1 ncu --clock-control none --metrics gpu__time_duration.sum \
          --csv --log-file "$OUT/logs/ncu_$1.csv" $R bench --backend cuda --heads 16 --head-dim 128 --op backward --config "$1" \
          --seq "$2" --warmup 1 --iters 1 > "$OUT/logs/ncu_$1_run.log" 2>&1 || rc=1
        python3 - "$OUT/logs/ncu_$1.csv" <<'PY' | tee -a "$S"
import csv, sys, collections
rows = [r for r in csv.reader(open(sys.argv[1])) if len(r) > 10]
if not rows: print("no ncu rows"); sys.exit()
h = rows[0]; ki = h.index("Kernel Name"); vi = h.index("Metric Value"); ii = h.index("ID")
ks = [(int(r[ii]), r[ki][:60], float(r[vi].replace(",", "")) / 1e6) for r in rows[1:]]
print(f"{sys.argv[1].split('/')[-1]}: {len(ks)} kernels, sum {sum(k[2] for k in ks):.3f} ms")
agg = collections.OrderedDict()
for _, n, ms in ks: agg.setdefault(n, []).append(ms)
for n, v in agg.items(): print(f"  {len(v):3d} x {n}: sum {sum(v):.3f} ms, each {min(v):.3f}-{max(v):.3f}")
PY
      done ;;
    mem1m) rc=0; pid=$(smi "$OUT/logs/smi_1m.csv")
      bench "fwdbwd_1m_atomic" atomic --op backward --config longnet4 --seq 1048576 --iters 5 --warmup 1
      bench "fwdbwd_1m_pass" pass --op backward --config longnet4 --seq 1048576 --iters 5 --warmup 1
      kill "$pid" 2>/dev/null ;;
    *) rc=2; say "unknown phase $ph" ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s"
done
python3 - "$OUT/logs" <<'PY' >> "$S" 2>&1
import csv, glob, sys
for f in sorted(glob.glob(sys.argv[1] + "/smi_*.csv")):
    rows = [r for r in csv.reader(open(f)) if len(r) >= 6 and r[1].strip().endswith("MHz")]
    if not rows: continue
    sm = [int(r[1].split()[0]) for r in rows]; pw = [float(r[3].split()[0]) for r in rows if r[3].split()[0].replace('.', '').isdigit()]
    busy = [x for x in sm if x > 1000]
    print(f"{f.split('/')[-1]}: {len(rows)} samples, SM clock busy min/median/max {min(busy or [0])}/{sorted(busy or [0])[len(busy or [0])//2]}/{max(busy or [0])} MHz, power max {max(pw or [0]):.0f} W, throttle reasons seen {sorted(set(r[5].strip() for r in rows))}")
PY
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

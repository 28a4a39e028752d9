#!/usr/bin/env bash
# Prepared for issue 17 (eight GPUs; NOT run on an 8-GPU machine: none has been lent). Every GPU of
# the machine (G = nvidia-smi's count, or GPUS), phases in the order given (default all); each
# phase fits one device call (<= 10 min) on 8 x H100/H200 by the sizes below:
#   build:    the gpu preset;
#   verify:   `verify` and `verify --op backward` over NCCL at G ranks on every named config,
#             non-causal bf16 and causal f16 (backward's `dense` at 8k: its float64 reference is
#             O(N^2) on the host);
#   scale:    one `bench` job per case and rank count 1, 2, 4, .., G (timeline and JSON each):
#             `geometric` 1M tokens per GPU (weak), `geometric` 2M and 8M and `dense` 256k (strong;
#             8M from MIN_NP_8M GPUs, default 2), forward; the PyTorch ring (bench/torch_ring.py)
#             at `dense` 256k on 2 .. G GPUs; then a table of efficiencies;
#   scalebwd: the same with `--op backward` (forward+backward; 8M from MIN_NP_8M_BWD, default 8);
#   gpuvar:   each GPU alone on 1M tokens of `geometric` (the spread between the GPUs);
#   fault:    a rank that exits at ring step 1 (the job's exit code 3) and one that raises an
#             error there (exit code 1), at G ranks: the exit code and the time to the last exit.
# BACKEND=cpu TINY=1 runs the same logic with tiny sizes on the CPU backend (mpi transport, no
# PyTorch ring): the check of this script on a machine without GPUs.
#   bench/calls/s17_x8.sh build verify          # call 1
#   bench/calls/s17_x8.sh scale gpuvar          # call 2 (a warm machine keeps the build)
#   bench/calls/s17_x8.sh scalebwd fault        # call 3
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT/logs"
S="$OUT/summary.txt"; touch "$S"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
say() { echo "$*" | tee -a "$S"; }
B=${BACKEND:-cuda}
if [ "$B" = cuda ]; then
  G=${GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c GPU)}; TR=nccl; RA=build/gpu/launch/ringattn
  say "device: $(nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit --format=csv,noheader | head -1) x $G; $(date -u)"
else
  G=${GPUS:-4}; TR=mpi; RA=${RA:-build/cpu/launch/ringattn}
  say "backend $B, $G ranks (a check of the script's logic); $(date -u)"
fi
[ "$G" -ge 2 ] || { say "s17_x8: needs at least 2 GPUs (found $G)"; exit 2; }
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none"
# Sizes: TINY=1 shrinks every one (tokens per rank stay a multiple of every branch's needs).
if [ "${TINY:-0}" = 1 ]; then
  M1=4096 VSEQ=8k VBSEQ=4k DENSE=8k GEO2=16k H="--heads 2 --head-dim 64" IT="--iters 2 --warmup 1"
else
  M1=1048576 VSEQ=32k VBSEQ=8k DENSE=256k GEO2=2M H="--heads 16 --head-dim 128" IT="--iters 5 --warmup 1"
fi
VH=$([ "${TINY:-0}" = 1 ] && echo "--heads 2 --head-dim 64" || echo "--heads 4 --head-dim 128")
T0=$(date +%s); el() { echo $(( $(date +%s) - T0 )); }
phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(build verify scale gpuvar scalebwd fault)
for ph in "${phases[@]}"; do
  t0=$(date +%s); rc=0
  case "$ph" in
    build)
      if [ "$B" = cuda ]; then OUT="$OUT/logs" timeout 300 ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$?
      else [ -x "$RA" ] || { say "build: $RA missing (cmake --build build/cpu)"; rc=1; }; fi ;;
    verify)
      for cfg in longnet4 longnet-paper geometric dense; do
        for extra in "" "--causal --dtype f16"; do
          [ "$B" = cpu ] && [ -n "$extra" ] && extra="--causal"  # cpu: f32 only
          tag="${cfg}${extra:+_causal}"
          log="$OUT/logs/verify_${tag}_np$G.log"
          # shellcheck disable=SC2086
          timeout 300 $MPI -np "$G" $RA verify --backend "$B" --transport $TR --config $cfg --seq $VSEQ $VH $extra > "$log" 2>&1 || rc=1
          say "verify np$G $cfg $extra: $(tail -1 "$log" | cut -c1-170)"
          bseq=$([ $cfg = dense ] && echo $VBSEQ || echo $VSEQ)
          log="$OUT/logs/verify_bwd_${tag}_np$G.log"
          # shellcheck disable=SC2086
          timeout 300 $MPI -np "$G" $RA verify --backend "$B" --transport $TR --op backward --config $cfg --seq $bseq $VH $extra > "$log" 2>&1 || rc=1
          say "verify --op backward np$G $cfg $extra: $(tail -1 "$log" | cut -c1-200)"
        done
      done ;;
    scale|scalebwd)
      # One job per (case, rank count), as gpu_suite.sh multi: a case too large for few GPUs
      # starts at the smallest rank count given (MIN_NP_8M: forward 2, forward+backward 8 by
      # default: at 1M tokens per GPU forward+backward peaks at ~48 GB), and its strong
      # efficiency is against that count: (n0 t(n0)) / (n t(n)).
      op=$([ "$ph" = scalebwd ] && echo "--op backward" || echo "")
      nps=$(printf '%s\n' 1 2 4 8 "$G" | awk -v g="$G" '$1 <= g' | sort -un)
      m8=$([ "$ph" = scalebwd ] && echo "${MIN_NP_8M_BWD:-8}" || echo "${MIN_NP_8M:-2}")
      for np in $nps; do
        cases=("weak_geometric_1M_per_gpu geometric $((np * M1))" "strong_geometric_$GEO2 geometric $GEO2"
               "strong_dense_$DENSE dense $DENSE")
        [ "$np" -ge "$m8" ] && cases+=("strong_geometric_8M geometric $((8 * M1))")
        for c in "${cases[@]}"; do
          set -- $c; name=$1; cfg=$2; seq=$3
          base="$OUT/logs/${ph}_${name}_np$np"
          # shellcheck disable=SC2086
          timeout 300 $MPI -np "$np" $RA bench --backend "$B" --transport $TR $op --config $cfg --seq $seq $H $IT \
            --timeline --json "$base.json" > "$base.log" 2>&1 || rc=1
          say "$ph $name np$np: $(grep -A1 '# config' "$base.log" | tail -1 | tr -s ' ' | cut -c1-120)"
        done
        if [ "$ph" = scale ] && [ "$B" = cuda ] && [ "$np" -ge 2 ]; then
          # shellcheck disable=SC2086
          timeout 300 $MPI -np $np python3 bench/torch_ring.py --seq $DENSE $H > "$OUT/logs/torch_ring_${DENSE}_np$np.log" 2>&1 || rc=1
          say "torch ring dense $DENSE np$np: $(grep -E '^  dense' "$OUT/logs/torch_ring_${DENSE}_np$np.log" | tr -s ' ')"
        fi
      done
      # The table: per case, efficiency against its smallest rank count.
      python3 - "$OUT/logs" "$ph" <<'PY' | tee -a "$S"
import glob, json, os, re, sys
d, ph = sys.argv[1], sys.argv[2]
runs = {}
for f in glob.glob(os.path.join(d, ph + "_*_np*.json")):
    m = re.match(re.escape(ph) + r"_(.+)_np(\d+)\.json$", os.path.basename(f))
    try:
        with open(f) as fh:
            runs.setdefault(m.group(1), {})[int(m.group(2))] = json.load(fh)["median_ms"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
for name in sorted(runs):
    t = runs[name]
    n0 = min(t)
    cells = []
    for n in sorted(t):
        eff = t[n0] / t[n] if name.startswith("weak") else n0 * t[n0] / (n * t[n])
        cells.append(f"{n}: {t[n]:.2f} ms ({eff:.3f})")
    print(f"{ph} {name} (efficiency against {n0} GPU{'s' if n0 > 1 else ''}): " + ", ".join(cells))
PY
      ;;
    gpuvar)
      # Each GPU alone on the weak case's per-GPU work: the spread that bounds every efficiency
      # measured against GPU 0 (4 x H200 on 2026-11-28: 3.4% between GPU 0 and GPU 3).
      [ "$B" = cuda ] || { say "gpuvar: cuda only"; continue; }
      for i in $(seq 0 $((G - 1))); do
        log="$OUT/logs/gpuvar_gpu$i.log"
        # shellcheck disable=SC2086
        CUDA_VISIBLE_DEVICES=$i timeout 120 $MPI -np 1 $RA bench --backend cuda --config geometric --seq $M1 $H $IT > "$log" 2>&1 || rc=1
        say "gpuvar GPU $i geometric $M1: $(grep -A1 '# config' "$log" | tail -1 | tr -s ' ' | cut -d' ' -f5) ms"
      done ;;
    fault)
      for mode in exit error; do
        t1=$(date +%s)
        # shellcheck disable=SC2086
        timeout 180 $MPI -np "$G" $RA run --backend "$B" --transport $TR --config geometric --seq $((G * 64))k $VH --timeout 10 \
          --inject-fault rank=1,step=1,mode=$mode --iters 3 --warmup 0 > "$OUT/logs/fault_${mode}_np$G.log" 2>&1
        r=$?
        # expected: exit -> 3 (the others see a communication failure), error -> 1 (the error,
        # named once with its rank); 124 would be this script's timeout: a hang
        want=$([ $mode = exit ] && echo 3 || echo 1)
        say "fault (rank 1, mode=$mode, at ring step 1, $G ranks): exit $r (want $want) after $(( $(date +%s) - t1 )) s: $(grep -m1 -h 'error' "$OUT/logs/fault_${mode}_np$G.log" | cut -c1-160)"
        [ $r = "$want" ] || rc=1
      done ;;
    *) say "unknown phase $ph"; rc=2 ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s (at $(el) s)"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

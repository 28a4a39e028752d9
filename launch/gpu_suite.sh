#!/usr/bin/env bash
# One call on the GPU machine: build (gpu preset), GPU tests, benchmarks.
#   ./launch/gpu_suite.sh [build|test|bench|ring|cache|multi|all]...   (default: all)
#   multi: every GPU of the machine (verify over NCCL, scaling, the PyTorch ring, a fault)
#   ab:    every GPU: one setting A/B (AB_VAR, AB_VALUES; default the comm lane's stream
#          priority), interleaved, beside the PyTorch ring; e.g. AB_VAR=RINGATTN_RING_SLOTS AB_VALUES="auto 2"
#   bwd:   the backward: resource report, GPU backward tests, forward and forward+backward timings
#   train: the training example on every GPU (issue 15: dilated and local-only, held-out accuracy)
#   mfu:   the training example's throughput on every GPU (issue 15: MFU of models of a training run's size)
#   traintests: the training example's GPU tests (ctest -L gpu -R train_gpu)
#   ctest: the GPU tests matching CTEST_R (a regex) only
#   gpuvar: each GPU alone (the spread between the machine's GPUs)
#   bwdws: the backward's kernels: dQ pass with and without ping-pong, atomic dQ first and last (tests, kernels alone, runtime, ncu)
#   graderr: the gradient error at 4 ranks vs 1 (one GPU); torch: the PyTorch op (bench/torch_op_gpu.sh)
#   multibwd: every GPU: verify --op backward over NCCL, forward+backward scaling, the forward ring vs PyTorch's
#   pack:  short segments packed into one tile (RINGATTN_PACK_SEGMENTS): their GPU tests, then
#          the kernels alone and forward+backward, packing on vs off, interleaved (one GPU)
# Logs go to $OUT (or ./build/gpu-logs); the last lines are a summary table.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/build/gpu-logs}"
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(all)
want() { for p in "${phases[@]}"; do [ "$p" = "$1" ] || [ "$p" = all ] && return 0; done; return 1; }
summary=()
note() { summary+=("$*"); echo "== $*"; }
# gpu_ctest LOG JOBS TIMEOUT [REGEX] [EXTRA]: the GPU tests (those matching REGEX) into $OUT/LOG,
# a summary line, then the failures (and lines matching EXTRA).
gpu_ctest() {
  local log="$1" jobs="$2" tmo="$3" re="${4:-}" extra="${5:-}" t0 rc sel=()
  t0=$(date +%s); [ -n "$re" ] && sel=(-R "$re")
  ctest --test-dir build/gpu -L gpu "${sel[@]}" -j "$jobs" --output-on-failure --timeout "$tmo" > "$OUT/$log" 2>&1
  rc=$?; note "ctest -L gpu${re:+ -R '$re'}: rc=$rc in $(( $(date +%s) - t0 )) s: $(grep -E 'tests passed|tests failed' "$OUT/$log")"
  grep -E "Failed|\*\*\*${extra:+|$extra}" "$OUT/$log" | head -20
}
RA=build/gpu/launch/ringattn
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none"

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader; nvcc --version | tail -1; date -u; } > "$OUT/device.txt" 2>&1
note "device: $(head -1 "$OUT/device.txt")"

if want build || { [ ! -x "$RA" ] && [ -z "${NO_BUILD:-}" ]; }; then  # NO_BUILD=1: a dry run without the gpu build
  t0=$(date +%s)
  cmake --preset gpu > "$OUT/configure.log" 2>&1 && cmake --build --preset gpu -j 16 > "$OUT/build.log" 2>&1
  rc=$?; note "build: rc=$rc in $(( $(date +%s) - t0 )) s"
  [ $rc = 0 ] || { tail -40 "$OUT/build.log"; exit 1; }
  # Resource report and SASS summary of the fused kernels.
  obj=$(find build/gpu/kernels -name 'fwd_bf16_hd128.cu.o' | head -1)
  if [ -n "$obj" ]; then
    cuobjdump -res-usage "$obj" > "$OUT/resource_usage.txt" 2>&1
    cuobjdump -sass "$obj" > "$OUT/sass.txt" 2>&1
    note "sass bf16 hd128: HGMMA=$(grep -c HGMMA "$OUT/sass.txt") HMMA=$(grep -c HMMA "$OUT/sass.txt") LDL/STL=$(grep -cE 'LDL|STL' "$OUT/sass.txt")"
    grep -E "REG|STACK|LOCAL" "$OUT/resource_usage.txt" | head -8 > "$OUT/resource_summary.txt"
  fi
fi

if want test; then
  gpu_ctest ctest_gpu.log 4 600
fi

bench() {  # name, np, args...
  local name="$1" np="$2"; shift 2
  timeout "${BENCH_TIMEOUT:-400}" $MPI -np "$np" $RA bench --backend cuda --json "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  note "$name: rc=$rc $(grep -A1 '# config' "$OUT/$name.log" | tail -1)"
}
if want bench; then
  bench longnet4_64k 1 --config longnet4 --seq 64k --heads 16 --head-dim 128 --timeline
  grep -A2 "# timeline" "$OUT/longnet4_64k.log" | tail -1 | sed "s/^/   ring machinery check, kernel passes of the last forward: /"
  bench longnet4_1M 1 --config longnet4 --seq 1M --heads 16 --head-dim 128 --iters 10 --warmup 2
  bench longnet4_1M_causal 1 --config longnet4 --seq 1M --heads 16 --head-dim 128 --causal --iters 10 --warmup 2
  bench dense_16k 1 --config dense --seq 16k --heads 16 --head-dim 128
  bench longnet4_16k 1 --config longnet4 --seq 16k --heads 16 --head-dim 128 --cache-stats
  grep -h "peak device memory" "$OUT"/longnet4_1M.log | head -1 | sed 's/^/   1M: /'
fi

# The gradient's error at 4 ranks against 1 rank (same seed and inputs; bf16): SPEC's
# relative L2 of dQ, dK, dV against the float64 reference (issue 14's last row).
grad_error() {
  for np in 1 4; do
    timeout 300 $MPI -np $np $RA verify --backend cuda --transport mpi --op backward --seed 7 --config geometric --seq 64k \
      --heads 4 --head-dim 128 > "$OUT/grad_error_np$np.log" 2>&1
    note "gradient error, geometric 64k bf16, $np rank(s) on one GPU: rc=$? $(tail -1 "$OUT/grad_error_np$np.log" | cut -c1-220)"
  done
}
if want graderr && ! want bwd; then grad_error; fi
if want torch; then  # issue 16: the PyTorch op on this GPU (bench/torch_op_gpu.sh)
  OUT="$OUT/torch" timeout "${TORCH_TIMEOUT:-560}" ./bench/torch_op_gpu.sh > "$OUT/torch_op_gpu.log" 2>&1
  note "torch op: rc=$? $(grep -E "speedup|overhead|torch_op(_gpu)?:|Error|^np [0-9]" "$OUT/torch_op_gpu.log" | head -10 | tr '\n' ' ' | cut -c1-400)"
fi

# The backward's kernels: ping-pong (the default) against none (RINGATTN_BWD_PINGPONG=0)
# and atomic dQ, the GPU backward tests, each launch alone (bench/kernel_fwd.cu
# --bwd), forward+backward through the runtime, ncu of the dK/dV kernel.
if want bwdws; then
  gpu_ctest ctest_gpu_bwd.log 6 300 "${BWDWS_TESTS:-bwd|train_gpu}"
  K=build/gpu/bench/ringattn_kernel_fwd
  for cfg in "--config dense --seq 16384" "--config longnet4 --seq 65536" "--config dense --seq 16384 --causal"; do
    # dQ pass with ping-pong (the default) and without; atomic dQ with its GEMM first (the default) and last.
    for v in "pass ping-pong|--bwd-dq pass" "pass, no ping-pong|--bwd-dq pass --bwd-no-pingpong" \
             "atomic|--bwd-dq atomic" "atomic, dQ GEMM last|--bwd-dq atomic --bwd-dq-last"; do
      IFS='|' read -r label kargs <<< "$v"
      # shellcheck disable=SC2086
      line=$(timeout 120 $K $cfg --heads 16 --head-dim 128 --bwd $kargs --iters 10 2>&1 | tee -a "$OUT/bwd_kernels.log" | grep "^backward" | sed -E 's/.*(dK\/dV [0-9.]+ ms).*(dQ [0-9.]+ ms).*(total [0-9.]+ ms).* ([0-9.]+ TFLOP\/s useful)/\1, \2, \3, \4/')
      note "bwd kernels $cfg, dQ $label: $line"
    done
  done
  if command -v ncu >/dev/null && [ -z "${NO_NCU:-}" ]; then  # what bounds the dK/dV kernel (dense 16k)
    for dq in pass atomic; do
      timeout 120 ncu --kernel-name regex:bwd_dkdv --launch-count 1 --section SpeedOfLight --section WarpStateStats \
        --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis $K --config dense --seq 16384 --heads 16 \
        --head-dim 128 --bwd --bwd-dq $dq --iters 1 --warmup 0 > "$OUT/ncu_dkdv_ws_$dq.txt" 2>&1
      note "ncu dK/dV ws dQ $dq: rc=$? $(grep -E 'Duration|Compute \(SM\) Throughput|Warp Cycles Per Issued' "$OUT/ncu_dkdv_ws_$dq.txt" | awk '{print $1, $NF}' | tr '\n' ' ')"
    done
  fi
  for cfg in "longnet4_64k --config longnet4 --seq 64k" "dense_16k --config dense --seq 16k" "longnet4_1M --config longnet4 --seq 1M --iters 5 --warmup 1"; do
    set -- $cfg; name=$1; shift
    bench "fb_$name" 1 --op backward "$@" --heads 16 --head-dim 128
    grep -h "^# forward .* backward" "$OUT/fb_$name.log" | head -1 | cut -c1-160 | sed "s/^/   /"
    grep -h "peak device memory" "$OUT/fb_$name.log" | head -1 | sed "s/^/   $name fwd+bwd: /"
  done
  RINGATTN_BWD_DQ=atomic bench fb_longnet4_64k_atomic 1 --op backward --config longnet4 --seq 64k --heads 16 --head-dim 128
  grep -h "^# forward .* backward" "$OUT/fb_longnet4_64k_atomic.log" | head -1 | cut -c1-160 | sed "s/^/   /"
  RINGATTN_BWD_PINGPONG=0 bench fb_longnet4_64k_nopingpong 1 --op backward --config longnet4 --seq 64k --heads 16 --head-dim 128
  grep -h "^# forward .* backward" "$OUT/fb_longnet4_64k_nopingpong.log" | head -1 | cut -c1-160 | sed "s/^/   /"
fi

# Short segments packed into one tile with a block-diagonal mask (PlanOptions::
# pack_segments): the GPU tests that cover it, then packing on (1) vs off (0)
# on the training branches (64:1, 512:8 and a long one; 64k tokens, one GPU):
# the kernels alone (kernel_fwd --bwd) and forward+backward through the runtime.
if want pack; then
  gpu_ctest ctest_gpu_pack.log 4 600 "${PACK_TESTS:-short}"
  K=build/gpu/bench/ringattn_kernel_fwd
  PACK_BRANCHES="${PACK_BRANCHES:-64:1,512:8,262144:16}"
  for round in 1 2; do
    for pk in 1 0; do
      for causal in "" "--causal"; do
        line=$(RINGATTN_PACK_SEGMENTS=$pk timeout 120 $K --branches "$PACK_BRANCHES" --seq 65536 --heads 16 --head-dim 128 $causal \
               --bwd --iters 10 2>&1 | tee -a "$OUT/pack_kernels.log" | grep -E "^$PACK_BRANCHES|^backward|^plan" | \
               awk '{printf "%s | ", $0}' | cut -c1-400)
        note "pack=$pk round $round ${causal:-non-causal}: $line"
      done
    done
  done
  for pk in 1 0; do
    RINGATTN_PACK_SEGMENTS=$pk bench "fb_pack${pk}_64k" 1 --op backward --branches "$PACK_BRANCHES" --seq 64k --heads 16 --head-dim 128 --causal
    grep -h "^# forward .* backward" "$OUT/fb_pack${pk}_64k.log" | head -1 | cut -c1-160 | sed "s/^/   pack=$pk: /"
  done
fi

if want bwd; then
  obj=$(find build/gpu/kernels -name 'bwd_bf16_hd128.cu.o' | head -1)
  if [ -n "$obj" ]; then
    cuobjdump -res-usage "$obj" > "$OUT/bwd_resource_usage.txt" 2>&1
    note "bwd bf16 hd128 resources: $(grep -E 'REG' "$OUT/bwd_resource_usage.txt" | sed -E 's/.*(REG:[0-9]+).*(STACK:[0-9]+).*(SHARED:[0-9]+).*(LOCAL:[0-9]+).*/\1 \2 \3 \4/' | sort -u | tr '\n' ' ')"
  fi
  if ! want test; then
    gpu_ctest ctest_gpu_bwd.log 4 600 bwd
  fi
  for cfg in "longnet4_64k --config longnet4 --seq 64k" "dense_16k --config dense --seq 16k" \
             "dense_16k_causal --config dense --seq 16k --causal" "longnet4_1M --config longnet4 --seq 1M --iters 5 --warmup 1"; do
    set -- $cfg; name=$1; shift
    bench "fwd_$name" 1 "$@" --heads 16 --head-dim 128
    bench "fb_$name" 1 --op backward "$@" --heads 16 --head-dim 128
    grep -h "peak device memory" "$OUT/fb_$name.log" | head -1 | sed "s/^/   $name fwd+bwd: /"
    grep -h "^# forward .* backward" "$OUT/fb_$name.log" | head -1 | cut -c1-160 | sed "s/^/   /"
  done
  # dQ with float32 atomics inside the dK/dV kernel (not bit-identical): the same two cases.
  for cfg in "longnet4_64k --config longnet4 --seq 64k" "dense_16k --config dense --seq 16k"; do
    set -- $cfg; name=$1; shift
    RINGATTN_BWD_DQ=atomic bench "fb_${name}_dq_atomic" 1 --op backward "$@" --heads 16 --head-dim 128
    grep -h "^# forward .* backward" "$OUT/fb_${name}_dq_atomic.log" | head -1 | cut -c1-160 | sed "s/^/   /"
  done
  grad_error
  hostid=tests/gpu/nccl_hostid.sh
  $MPI -np 2 $hostid $RA bench --backend cuda --transport nccl --op backward --config geometric --seq 256k --heads 16 --head-dim 128 --timeline --iters 5 --warmup 1 > "$OUT/fb_geometric_256k_np2_hostid.log" 2>&1
  note "fb geometric 256k, 2 ranks on one GPU (nccl): rc=$? $(grep -A1 '# config' "$OUT/fb_geometric_256k_np2_hostid.log" | tail -1)"
fi

if want ring; then
  bench geometric_256k_np4_mpi 4 --config geometric --seq 256k --heads 16 --head-dim 128 --transport mpi --timeline --iters 5 --warmup 1
  # NCCL with several ranks on one GPU: each rank its own NCCL_HOSTID.
  hostid=tests/gpu/nccl_hostid.sh
  timeout 240 $MPI -np 2 $hostid $RA verify --backend cuda --transport nccl --branches 512:1,1024:2,2048:4,4096:8 --seq 8192 --heads 4 --head-dim 128 --timeout 60 > "$OUT/nccl_np2_hostid.log" 2>&1
  note "nccl np2 (NCCL_HOSTID per rank): rc=$? $(tail -1 "$OUT/nccl_np2_hostid.log")"
  timeout 240 $MPI -np 2 $RA verify --backend cuda --transport nccl --branches 512:1,1024:2 --seq 4096 --heads 4 --head-dim 128 --timeout 30 > "$OUT/nccl_np2_plain.log" 2>&1
  note "nccl np2 (plain, expected to be refused): rc=$? $(grep -m1 -iE 'error|verify' "$OUT/nccl_np2_plain.log")"
  t0=$(date +%s)
  timeout 120 $MPI -np 4 $RA run --backend cuda --transport mpi --config geometric --seq 64k --heads 4 --head-dim 128 --timeout 10 --inject-fault rank=1,step=1 --iters 1 --warmup 0 > "$OUT/fault_mpi.log" 2>&1
  note "fault (rank 1 exits at step 1, mpi transport, 4 ranks): rc=$? after $(( $(date +%s) - t0 )) s"
  t0=$(date +%s)
  timeout 120 $MPI -np 3 $hostid $RA run --backend cuda --transport nccl --config geometric --seq 48k --heads 4 --head-dim 128 --timeout 10 --inject-fault rank=1,step=1 --iters 3 --warmup 0 > "$OUT/fault_nccl.log" 2>&1
  note "fault (rank 1 exits at step 1, nccl, 3 ranks, forwards left in flight): rc=$? after $(( $(date +%s) - t0 )) s: $(grep -m2 -h 'error' "$OUT/fault_nccl.log" | tr '\n' ' ' | cut -c1-300)"
  $MPI -np 4 $RA bench --backend cuda --transport mpi --scaling --config geometric --seq 256k --heads 16 --head-dim 128 --iters 5 --warmup 1 --json "$OUT/scaling.json" > "$OUT/scaling.log" 2>&1
  note "scaling: rc=$?"; grep -E "^  (weak|strong)" "$OUT/scaling.log"
  python3 examples/plot_scaling.py "$OUT/scaling.json" "$OUT/scaling.png" >/dev/null 2>&1
fi

if want cache; then
  for n in 16384 65536; do
    bench cache_on_$n 1 --config longnet4 --seq $n --heads 16 --head-dim 128 --warmup 5 --iters 50 --cache-stats
    grep -A2 "pattern cache" "$OUT/cache_on_$n.log" | tail -1 | sed 's/^/   cache on: /'
    bench cache_off_$n 1 --config longnet4 --seq $n --heads 16 --head-dim 128 --warmup 5 --iters 50 --cache off --cache-stats
  done
  # The clocks, power and throttle reasons while the loops run (read-only query).
  nvidia-smi --query-gpu=timestamp,clocks.sm,power.draw,temperature.gpu,clocks_event_reasons.active --format=csv -lms 100 > "$OUT/smi_varlen.csv" 2>&1 &
  smi=$!
  varlen() {  # tag, env assignments or "", args...
    local tag="$1" envs="$2"; shift 2
    env $envs $MPI -np 1 build/gpu/examples/ringattn_varlen --backend cuda --long --steps 100 "$@" > "$OUT/varlen_$tag.log" 2>&1
    note "varlen $tag [$envs $*]: rc=$? $(grep -h '^# step / warm' "$OUT/varlen_$tag.log" | cut -c1-220)"
    grep -h "^# steady state" "$OUT/varlen_$tag.log" | sed 's/^/   /'
  }
  varlen cacheoff "" --cache off
  varlen noprefetch "" --no-prefetch
  varlen prefetch ""
  varlen prefetch2 ""
  varlen prefetch_layers4 "" --layers 4
  varlen prefetch_sync "" --sync
  varlen cacheoff_sync "" --cache off --sync
  kill $smi 2>/dev/null
fi

# All GPUs of the machine (issue 13): verify over NCCL at 2 and G ranks on
# every named config, weak and strong scaling beside the PyTorch ring, the
# ring's exchange bandwidth against a send/recv probe, a fault on real GPUs.
G=${GPUS:-$(nvidia-smi -L 2>/dev/null | grep -c GPU)}  # GPUS: override (a dry run of a phase's logic)
if want multi && [ "$G" -ge 2 ]; then
  note "multi: $G GPUs: $(nvidia-smi topo -m 2>/dev/null | sed -n 2p | tr -s ' ' | cut -c1-80)"
  nvidia-smi topo -m > "$OUT/topo.txt" 2>&1
  nps=$(printf '%s\n' 1 2 4 8 "$G" | awk -v g="$G" '$1 <= g' | sort -un)
  for np in $(printf '%s\n' 2 "$G" | sort -un); do
    for cfg in longnet4 longnet-paper geometric dense; do
      for extra in "" "--causal --dtype f16"; do
        log="$OUT/verify_${cfg}_np${np}${extra:+_causal_f16}.log"
        timeout 300 $MPI -np $np $RA verify --backend cuda --transport nccl --config $cfg --seq 32k --heads 4 --head-dim 128 $extra > "$log" 2>&1
        note "verify nccl np$np $cfg $extra: rc=$? $(tail -1 "$log" | cut -c1-160)"
      done
    done
  done
  run_bench() {  # name, np, args...
    local name="$1" np="$2"; shift 2
    timeout 400 $MPI -np "$np" $RA bench --backend cuda --transport nccl --timeline --json "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
    note "$name: rc=$? $(grep -A1 '# config' "$OUT/$name.log" | tail -1)"
  }
  for np in $nps; do
    run_bench dense_128k_np$np $np --config dense --seq 128k --heads 16 --head-dim 128 --iters 10 --warmup 2
    [ "$np" -gt 1 ] && { timeout 300 $MPI -np $np python3 bench/torch_ring.py --seq 128k --heads 16 --head-dim 128 > "$OUT/torch_ring_128k_np$np.log" 2>&1
      note "torch ring dense 128k np$np: rc=$? $(grep -A1 '# config' "$OUT/torch_ring_128k_np$np.log" | tail -1)"; }
    run_bench geometric_weak_1M_per_gpu_np$np $np --config geometric --seq $((np * 1024))k --heads 16 --head-dim 128 --iters 5 --warmup 1
    run_bench geometric_strong_2M_np$np $np --config geometric --seq 2M --heads 16 --head-dim 128 --iters 5 --warmup 1
  done
  # Host set-up before the first forward at 4M tokens (inputs made on the GPUs).
  run_bench setup_4M_np$G $G --config longnet4 --seq 4M --heads 16 --head-dim 128 --iters 3 --warmup 1
  grep -h "set-up before the first call" "$OUT/setup_4M_np$G.log" | head -1 | sed "s/^/   /"
  t0=$(date +%s)
  timeout 120 $MPI -np $G $RA run --backend cuda --transport nccl --config geometric --seq $((G * 64))k --heads 4 --head-dim 128 --timeout 10 --inject-fault rank=1,step=1 --iters 3 --warmup 0 > "$OUT/fault_nccl_multi.log" 2>&1
  note "fault (rank 1 exits at step 1, nccl, $G GPUs): rc=$? after $(( $(date +%s) - t0 )) s"
fi

# The backward on every GPU of the machine: verify --op backward over NCCL,
# forward+backward strong (dense 128k) and weak (geometric 1M tokens per GPU)
# scaling, and the forward ring beside the PyTorch ring.
if want multibwd && [ "$G" -ge 2 ]; then
  note "multibwd: $G GPUs"
  # dense at 8k: its float64 reference backward is O(N^2) on the host (32k took > 300 s)
  for c in "geometric 32k --causal" "longnet4 32k --dtype f16" "dense 8k" "longnet-paper 32k --head-offsets blocked"; do
    set -- $c; cfg=$1; seq=$2; shift 2
    log="$OUT/verify_bwd_${cfg}_np$G.log"
    timeout 300 $MPI -np $G $RA verify --backend cuda --transport nccl --op backward --config $cfg --seq $seq --heads 4 --head-dim 128 "$@" > "$log" 2>&1
    note "verify --op backward nccl np$G $cfg $*: rc=$? $(tail -1 "$log" | cut -c1-200)"
  done
  fb_bench() {  # name, np, args...
    local name="$1" np="$2"; shift 2
    timeout 400 $MPI -np "$np" $RA bench --backend cuda --transport nccl --timeline --json "$OUT/$name.json" "$@" > "$OUT/$name.log" 2>&1
    note "$name: rc=$? $(grep -A1 '# config' "$OUT/$name.log" | tail -1)"
    grep -h "^# forward .* backward" "$OUT/$name.log" | head -1 | cut -c1-170 | sed "s/^/   /"
  }
  for np in 1 $G; do
    fb_bench fb_dense_128k_np$np $np --op backward --config dense --seq 128k --heads 16 --head-dim 128 --iters 5 --warmup 1
    fb_bench fb_geometric_weak_1M_per_gpu_np$np $np --op backward --config geometric --seq $((np * 1024))k --heads 16 --head-dim 128 --iters 5 --warmup 1
    fb_bench dense_128k_np$np $np --config dense --seq 128k --heads 16 --head-dim 128 --iters 10 --warmup 2
  done
  timeout 300 $MPI -np $G python3 bench/torch_ring.py --seq 128k --heads 16 --head-dim 128 > "$OUT/torch_ring_128k_np$G.log" 2>&1
  note "torch ring dense 128k np$G: rc=$? $(grep -A1 '# config' "$OUT/torch_ring_128k_np$G.log" | tail -1)"
fi

# Each GPU alone (one rank, CUDA_VISIBLE_DEVICES=i): the spread between the
# machine's GPUs, which bounds any scaling efficiency measured against GPU 0.
if want gpuvar && [ "$G" -ge 2 ]; then
  for i in $(seq 0 $((G - 1))); do
    for c in "geometric_1M --config geometric --seq 1M" "dense_32k --config dense --seq 32k"; do
      set -- $c; name=$1; shift
      log="$OUT/gpuvar_${name}_gpu$i.log"
      CUDA_VISIBLE_DEVICES=$i timeout 120 $MPI -np 1 $RA bench --backend cuda "$@" --heads 16 --head-dim 128 --iters 10 --warmup 2 > "$log" 2>&1
      note "gpuvar GPU $i $name: rc=$? $(grep -A1 '# config' "$log" | tail -1)"
    done
  done
fi

# Issue 15 on every GPU: the training example, a curriculum over N. Stage 1
# learns recall at N = 4096 (1500 steps); stage 2 starts from its weights at
# TRAIN_SEQ tokens per sequence (default 256k, issue 15's must) for
# TRAIN_STEPS steps (default 100) and reports held-out accuracy; the same for
# the local-only ablation (--branches 64:1 in both stages). TRAIN_ARGS adds
# options to both stages; TRAIN_BACKEND=cpu (with GPUS=2) runs the phase's
# logic on a machine without a GPU. (On the CPU, N = 4096's weights gave 1.000 at N =
# 16k-256k within 2-25 steps, where 1500 steps from scratch at 16k gave 0.07.)
if want train; then
  # The curriculum over N (README, "Training example"): stage 0 at N = 1024 (24 pairs, gap
  # 128: the GPU model, d 128, leaves the plateau here reliably; at N = 4096 from scratch it did
  # in 1 of 3 runs), stage 1 at N = 4096 (the task's defaults) from those weights, stage 2 at
  # each N of TRAIN_SEQ from stage 1's weights. The same for the local-only ablation.
  # TRAIN_STAGE0_STEPS, TRAIN_STAGE1_STEPS, TRAIN_STEPS (stage 2), TRAIN_TIMEOUT (per run),
  # TRAIN_KINDS (default "dilated local_only"), TRAIN_ARGS (added to every run, e.g. a model size).
  T=${TRAIN_TIMEOUT:-400}
  for kind in ${TRAIN_KINDS:-dilated local_only}; do
    b=(); [ "$kind" = local_only ] && b=(--branches 64:1)
    ck0="/tmp/ringattn-train-stage0-$kind" ck="/tmp/ringattn-train-stage1-$kind"; rm -rf "$ck0" "$ck"
    name="train_np${G}_1024_$kind"
    timeout "$T" ./launch/train -np "$G" --backend "${TRAIN_BACKEND:-cuda}" --seq 1024 --pairs 24 --gap 128 \
      --steps "${TRAIN_STAGE0_STEPS:-600}" --log-every 100 --eval --save "$ck0" --json "$OUT/$name.json" "${b[@]}" ${TRAIN_ARGS:-} > "$OUT/$name.log" 2>&1
    note "$name: rc=$? $(grep -E 'held-out' "$OUT/$name.log" | tail -1 | cut -c1-90)"
    name="train_np${G}_4096_$kind"
    timeout "$T" ./launch/train -np "$G" --backend "${TRAIN_BACKEND:-cuda}" --seq 4096 --init-from "$ck0" --warmup 10 \
      --steps "${TRAIN_STAGE1_STEPS:-200}" --log-every 50 --eval --save "$ck" --json "$OUT/$name.json" "${b[@]}" ${TRAIN_ARGS:-} > "$OUT/$name.log" 2>&1
    note "$name: rc=$? $(grep -E 'held-out' "$OUT/$name.log" | tail -1 | cut -c1-90)"
    for tseq in ${TRAIN_SEQ:-256k 1M}; do
      name="train_np${G}_${tseq}_$kind"
      timeout "$T" ./launch/train -np "$G" --backend "${TRAIN_BACKEND:-cuda}" --seq "$tseq" --init-from "$ck" --steps "${TRAIN_STEPS:-300}" --warmup 10 \
        --log-every 10 --eval --json "$OUT/$name.json" "${b[@]}" ${TRAIN_ARGS:-} > "$OUT/$name.log" 2>&1
      note "$name: rc=$? $(grep -E '^ *step' "$OUT/$name.log" | tail -1 | cut -c1-150) | $(grep -E 'held-out' "$OUT/$name.log" | tail -1 | cut -c1-90)"
    done
  done
  python3 examples/train/plot_train.py "$OUT/train_curves.png" "$OUT"/train_np${G}_*.json > "$OUT/train_table.txt" 2>&1 ||
    note "train: plot_train.py failed (the JSON logs are in logs.tgz)"
fi

if want ctest && [ -n "${CTEST_R:-}" ]; then  # a chosen subset of the GPU tests: CTEST_R=regex
  gpu_ctest ctest_subset.log 4 600 "$CTEST_R"
fi

if want traintests; then  # the training example's GPU tests alone (also in test and bwdws)
  gpu_ctest ctest_train_gpu.log 3 600 train_gpu "held-out accuracy on cuda|whole .* worst"
fi

if want mfu; then
  # Issue 15's throughput rows on every GPU: the gradient summed over NCCL against the host's sum
  # (step 0, the recall model), then models of a training run's size (MFU_RUNS: ";"-separated
  # option sets; default d 2048 x 4 layers at N = 256k with the recall task's branches and with
  # longnet4's, d 1024 x 2 layers at N = 1M, d 4096 x 2 layers at 128k with longnet4's) with
  # the defaults (bf16 GEMMs, NCCL gradient sum), the first also with --grad-sum host and with
  # --matmul f32 (fewer steps): MFU and the step's split (attention, GEMMs) from the progress
  # lines. Throughput only: 30 steps, the task is not learned (longnet4 spans 16k tokens).
  T=${TRAIN_TIMEOUT:-400}
  gd=(--seq 4096 --pairs 16 --gap 128 --d-model 128 --heads 2 --mlp 256)
  for gs in host nccl; do
    timeout "$T" ./launch/train -np "$G" --backend cuda "${gd[@]}" --grad-sum "$gs" --grad-dump "$OUT/grad_$gs.txt" > "$OUT/grad_$gs.log" 2>&1
    note "grad-dump --grad-sum $gs np$G: rc=$? $(grep -E 'grad-dump:' "$OUT/grad_$gs.log" | cut -c1-100)"
  done
  note "gradient, NCCL sum against host sum: $(paste -d' ' "$OUT/grad_host.txt" "$OUT/grad_nccl.txt" | awk 'NR > 1 { d = $2 - $4; D += d * d; B += $4 * $4 } END { if (NR < 2 || B == 0) print "no data"; else printf "relative L2 %.3e over %d parameters\n", sqrt(D / B), NR - 1 }')"
  IFS=';' read -r -a runs <<< "${MFU_RUNS:---seq 256k --d-model 2048 --heads 16 --layers 4 --mlp 8192;--seq 256k --d-model 2048 --heads 16 --layers 4 --mlp 8192 --config longnet4;--seq 1M --d-model 1024 --heads 8 --layers 2 --mlp 4096;--seq 128k --d-model 4096 --heads 32 --layers 2 --mlp 16384 --config longnet4}"
  i=0
  for r in "${runs[@]}"; do
    i=$((i + 1))
    # What each part buys, on the first: MFU_VARIANTS (default: packing of short segments off);
    # e.g. MFU_VARIANTS="nopack --grad-sum host;--matmul f32" (";"-separated; nopack = RINGATTN_PACK_SEGMENTS=0).
    variants=(default); [ $i = 1 ] && IFS=';' read -r -a more <<< "${MFU_VARIANTS:-nopack}" && variants+=("${more[@]}")
    for v in "${variants[@]}"; do
      steps=(--steps 30 --log-every 10); [ "$v" = default ] || [ "$v" = nopack ] || steps=(--steps 8 --log-every 4)
      va=(); [ "$v" = default ] || [ "$v" = nopack ] || read -r -a va <<< "$v"
      pack=1; [ "$v" = nopack ] && pack=0
      name="mfu${i}_$(echo "$v" | tr -d ' -')"
      # shellcheck disable=SC2086
      RINGATTN_PACK_SEGMENTS=$pack timeout "$T" ./launch/train -np "$G" --backend cuda $r --lr 3e-4 --warmup 10 "${steps[@]}" "${va[@]}" --json "$OUT/$name.json" > "$OUT/$name.log" 2>&1
      note "$name ($r ${va[*]}): rc=$? $(grep -E '^ *step' "$OUT/$name.log" | tail -1)"
    done
    grep -E "^train:|^throughput:" "$OUT/mfu${i}_default.log" | sed 's/^/   /'
  done
fi

# A/B of one runtime setting on all GPUs, interleaved, on the cases where the
# ring's exchange meets the attention: AB_VAR (default RINGATTN_COMM_PRIORITY)
# over AB_VALUES (default "high normal"), e.g.
#   AB_VAR=RINGATTN_TILE_SCHEDULE AB_VALUES="dynamic static" ./launch/gpu_suite.sh ab
if want ab && [ "$G" -ge 2 ]; then
  ab_var="${AB_VAR:-RINGATTN_COMM_PRIORITY}"; ab_values="${AB_VALUES:-high normal}"
  for round in 1 2; do
    for val in $ab_values; do
      for c in "geometric_strong_2M --config geometric --seq 2M" "dense_128k --config dense --seq 128k"; do
        set -- $c; name=$1; shift
        log="$OUT/ab_${name}_np${G}_${val}_$round.log"
        timeout 300 $MPI -x "$ab_var=$val" -np $G $RA bench --backend cuda --transport nccl --timeline "$@" --heads 16 --head-dim 128 --iters 10 --warmup 2 > "$log" 2>&1
        note "ab $name np$G $ab_var=$val round $round: rc=$? $(grep -A1 '# config' "$log" | tail -1)"
      done
    done
    timeout 300 $MPI -np $G python3 bench/torch_ring.py --seq 128k --heads 16 --head-dim 128 > "$OUT/ab_torch_ring_128k_np${G}_$round.log" 2>&1
    note "ab torch ring dense 128k np$G round $round: rc=$? $(grep -A1 '# config' "$OUT/ab_torch_ring_128k_np${G}_$round.log" | tail -1)"
  done
fi

echo; echo "================ summary ================"
printf '%s\n' "${summary[@]}" | tee "$OUT/summary.txt"
# At most 8 files come back from the device tool: bundle the logs.
(cd "$OUT" && tar czf /tmp/ringattn-logs.tgz --exclude summary.txt --exclude scaling.png --exclude train_curves.png --exclude scaling.json --exclude same_speed.txt --exclude same_speed_logs.tgz . && mv /tmp/ringattn-logs.tgz logs.tgz && find . -maxdepth 1 -type f ! -name logs.tgz ! -name summary.txt ! -name scaling.png ! -name train_curves.png ! -name scaling.json ! -name same_speed.txt ! -name same_speed_logs.tgz -delete && find . -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +)

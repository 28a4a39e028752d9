#!/usr/bin/env bash
# examples/train/gpu_check.sh: the training example's GPU path, in one call on a GPU machine.
#   ./examples/train/gpu_check.sh [build|test|speed|full|run|cpu|all]...   (default: build test run)
#   build  the gpu preset (cmake --preset gpu), if build/gpu/examples/ringattn_train is missing
#          or older than a source of the example (FORCE_BUILD=1: always); ~1 min on 16 cores
#   test   the GPU train tests: ctest -R '^train_gpu_' (recall proof, gradient against the cpu
#          backend, resume bit for bit; 2 ranks on one GPU; a few minutes)
#   speed  100 steps of the cuda defaults (256k tokens per rank) at 1 rank (no ring), at 2 ranks
#          on one GPU over the mpi transport and over NCCL (each rank its own NCCL_HOSTID):
#          ms per step, the attention share, tokens/s
#   full   the curriculum at 2 ranks on one GPU over NCCL: recall learned at N = 1024 (600
#          steps, 24 pairs), N = 4096 from those weights (200 steps), then the cuda defaults
#          (N = 512k) from N = 4096's (--init-from, 100 steps), held-out evaluation (from
#          scratch N = 512k stayed at 0.216 in 1500 steps)
#   run    speed, then full
#   cpu    the CPU train tests here (ctest -L train): --backend cpu on a machine with a GPU
#   all    build test run
# Where one command may run only minutes, call the phases one by one (build, test, speed, full).
# Logs, JSON step logs (plot: examples/train/plot_train.py) and summary.txt go to $OUT
# (default build/gpu-logs/train); the last lines printed are the summary. TRAIN_ARGS adds
# options to the timed runs (e.g. "--steps 300").
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.." || exit 1
OUT="${OUT:-$PWD/build/gpu-logs/train}"
mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(all)
# want PHASE: asked for by name, by "run" (speed, full) or by "all" (build, test, speed, full).
want() {
  local p
  for p in "${phases[@]}"; do
    [ "$p" = "$1" ] && return 0
    [ "$p" = run ] && { [ "$1" = speed ] || [ "$1" = full ]; } && return 0
    [ "$p" = all ] && [ "$1" != cpu ] && return 0
  done
  return 1
}
summary=()
note() { summary+=("$*"); echo "== $*"; }
BIN=build/gpu/examples/ringattn_train
MPI=(mpirun --allow-run-as-root --oversubscribe --bind-to none)
# The options of the timed runs, word-split on purpose.
# shellcheck disable=SC2206
extra=(${TRAIN_ARGS:-})

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv,noheader; nvcc --version | tail -1
  git log -1 --format='%H %s'; date -u; } > "$OUT/device.txt" 2>&1
note "device: $(head -1 "$OUT/device.txt"); commit $(git log -1 --format=%h)"

if want build; then
  stale=0
  [ -x "$BIN" ] || stale=1
  [ "${FORCE_BUILD:-0}" = 1 ] && stale=1
  if [ $stale = 0 ] && [ -n "$(find examples/train launch/src runtime kernels tests/train -newer "$BIN" -type f 2>/dev/null | head -1)" ]; then stale=1; fi
  if [ $stale = 1 ]; then
    t0=$(date +%s)
    cmake --preset gpu > "$OUT/configure.log" 2>&1 &&
      cmake --build --preset gpu -j "$(nproc)" --target ringattn_train ringattn_cli > "$OUT/build.log" 2>&1
    rc=$?; note "build (gpu preset): rc=$rc in $(( $(date +%s) - t0 )) s"
    [ $rc = 0 ] || { tail -40 "$OUT/build.log"; exit 1; }
  else
    note "build: $BIN is up to date"
  fi
fi
[ -x "$BIN" ] || { echo "gpu_check: no $BIN (run the build phase)"; exit 1; }

if want test; then
  t0=$(date +%s)
  ctest --test-dir build/gpu -R '^train_gpu_' --output-on-failure --timeout 900 > "$OUT/ctest_train_gpu.log" 2>&1
  rc=$?; note "ctest -R ^train_gpu_: rc=$rc in $(( $(date +%s) - t0 )) s: $(grep -E 'tests passed|tests failed' "$OUT/ctest_train_gpu.log")"
  grep -E "^held-out accuracy on cuda|^control|^whole|against|Failed|FAILED" "$OUT/ctest_train_gpu.log" | head -40
fi

# timed NAME NP LAUNCHER-PREFIX... -- ARGS...: one run, its log and JSON in $OUT, its last lines in the summary.
timed() {
  local name="$1" np="$2"; shift 2
  local pre=()
  while [ "$1" != -- ]; do pre+=("$1"); shift; done; shift
  local t0; t0=$(date +%s)
  timeout -k 10 "${RUN_TIMEOUT:-1500}" "${MPI[@]}" -np "$np" "${pre[@]}" "$BIN" --backend cuda --json "$OUT/$name.json" "$@" "${extra[@]}" > "$OUT/$name.log" 2>&1
  local rc=$?
  note "$name: rc=$rc in $(( $(date +%s) - t0 )) s: $(grep -E "^train:" "$OUT/$name.log" | head -1 | sed 's/ | recall.*| backend/ | backend/')"
  local line
  while IFS= read -r line; do note "   $line"; done < <(grep -E "^step " "$OUT/$name.log" | tail -1; grep -E "^eval " "$OUT/$name.log" | tail -1
                                                      [ $rc = 0 ] || grep -m3 -iE "error|fail" "$OUT/$name.log")
}
hostid=tests/gpu/nccl_hostid.sh
if want speed; then
  # 100 steps of the default schedule (--stop-after): one rank holding 256k tokens alone, then two
  # ranks on one GPU (N = 512k) over the host-staged mpi transport and over NCCL.
  timed train_cuda_np1_100 1 -- --stop-after 100 --log-every 25
  timed train_cuda_np2_mpi_100 2 -- --transport mpi --stop-after 100 --log-every 25
  timed train_cuda_np2_nccl_100 2 "$hostid" -- --stop-after 100 --log-every 25
fi
if want full; then
  # The issue's scale, 256k tokens per rank, 2 ranks on one GPU over NCCL, after the curriculum
  # (README, "Training example"): N = 1024 (24 pairs, gap 128) from scratch, N = 4096 from
  # those weights, then the cuda defaults from N = 4096's.
  stage0=/tmp/ringattn-gpu-check-stage0 stage1=/tmp/ringattn-gpu-check-stage1; rm -rf "$stage0" "$stage1"
  timed train_cuda_np2_nccl_1024 2 "$hostid" -- --seq 1024 --pairs 24 --gap 128 --steps 600 --log-every 100 --eval --save "$stage0"
  timed train_cuda_np2_nccl_4096 2 "$hostid" -- --seq 4096 --init-from "$stage0" --steps 200 --warmup 10 --log-every 50 --eval --save "$stage1"
  timed train_cuda_np2_nccl 2 "$hostid" -- --init-from "$stage1" --steps 100 --warmup 10 --log-every 10 --eval
fi

if want cpu; then
  t0=$(date +%s)
  ctest --test-dir build/gpu -L train -j 4 --output-on-failure --timeout 900 > "$OUT/ctest_train_cpu.log" 2>&1
  rc=$?; note "ctest -L train (cpu backend on a GPU machine): rc=$rc in $(( $(date +%s) - t0 )) s: $(grep -E 'tests passed|tests failed' "$OUT/ctest_train_cpu.log")"
fi

printf '%s\n' "${summary[@]}" > "$OUT/summary.txt"
echo
echo "== summary ($OUT/summary.txt)"
cat "$OUT/summary.txt"

#!/usr/bin/env bash
# Same speed as a base commit, on one GPU, in one call (issue 11's check):
# builds this tree (gpu preset) and a base tree carried in .base/ (made here
# with `bench/same_speed.sh --prepare REV`: `git archive REV` into the ignored
# folder .base/), then runs the benchmarks alternately, base first, so both
# see the same card, clocks and temperature. Logs and a table go to $OUT.
#   bench/same_speed.sh --prepare 96f4baa     # here, before the device call
#   bench/same_speed.sh [rounds]               # on the GPU machine (default 2 rounds)
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${1:-}" = --prepare ]; then
  rev="${2:?usage: bench/same_speed.sh --prepare REV}"
  rm -rf .base && mkdir -p .base && git archive "$rev" | tar -x -C .base || exit 1
  grep -qx '/.base/' .git/info/exclude 2>/dev/null || echo '/.base/' >> .git/info/exclude
  git rev-parse "$rev" > .base/REVISION
  echo "base $(cat .base/REVISION) in .base/ (carry it: run's carry [\".base\"])"; exit 0
fi
rounds="${1:-2}"
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
[ -f .base/REVISION ] || { echo "no .base/ (run bench/same_speed.sh --prepare REV here first)"; exit 2; }
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none -np 1"
cur=build/gpu/launch/ringattn
if [ ! -x "$cur" ] || [ ! -x build/gpu/bench/ringattn_kernel_fwd ]; then
  cmake --preset gpu > "$OUT/configure.log" 2>&1 && cmake --build --preset gpu -j 16 --target ringattn_cli ringattn_kernel_fwd > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
fi
if [ ! -x build/base/launch/ringattn ] || [ "$(cat build/base/REVISION 2>/dev/null)" != "$(cat .base/REVISION)" ]; then
  cmake -S .base -B build/base -DCMAKE_BUILD_TYPE=Release -DRINGATTN_CUDA=ON -DRINGATTN_BUILD_TESTS=OFF > "$OUT/base_configure.log" 2>&1 &&
    cmake --build build/base -j 16 --target ringattn_cli ringattn_kernel_fwd > "$OUT/base_build.log" 2>&1 || { tail -30 "$OUT/base_build.log"; exit 1; }
  cp .base/REVISION build/base/REVISION
fi
# Cases: "NAME|ENV|TOOL|ARGS" (TOOL: rt = `ringattn bench --backend cuda`, k = the kernel
# driver bench/kernel_fwd.cu; ENV: space-separated VAR=VALUE or empty). SAME_SPEED_CASES
# picks a set: fwd (default: issue 11's three forward cases), bwd (forward+backward through
# the runtime and the backward's kernels alone, dQ pass and atomic), all.
fwd_cases=("longnet4_64k||rt|--config longnet4 --seq 64k --heads 16 --head-dim 128"
           "longnet4_1M||rt|--config longnet4 --seq 1M --heads 16 --head-dim 128 --iters 10 --warmup 2"
           "dense_16k||rt|--config dense --seq 16k --heads 16 --head-dim 128")
bwd_cases=("fb_longnet4_64k||rt|--op backward --config longnet4 --seq 64k --heads 16 --head-dim 128"
           "fb_longnet4_64k_atomic|RINGATTN_BWD_DQ=atomic|rt|--op backward --config longnet4 --seq 64k --heads 16 --head-dim 128"
           "fb_dense_16k_atomic|RINGATTN_BWD_DQ=atomic|rt|--op backward --config dense --seq 16k --heads 16 --head-dim 128"
           "kb_dense_16k_atomic||k|--config dense --seq 16384 --heads 16 --head-dim 128 --bwd --bwd-dq atomic --iters 10"
           "kb_longnet4_64k_atomic||k|--config longnet4 --seq 65536 --heads 16 --head-dim 128 --bwd --bwd-dq atomic --iters 10"
           "kb_longnet4_64k_pass||k|--config longnet4 --seq 65536 --heads 16 --head-dim 128 --bwd --iters 10")
case "${SAME_SPEED_CASES:-fwd}" in
  fwd) cases=("${fwd_cases[@]}") ;;
  bwd) cases=("${bwd_cases[@]}") ;;
  all) cases=("${fwd_cases[@]}" "${bwd_cases[@]}") ;;
  *) echo "SAME_SPEED_CASES='${SAME_SPEED_CASES}' (allowed: fwd, bwd, all)"; exit 2 ;;
esac
{ echo "# same speed: base $(cat .base/REVISION) vs this tree ($(git rev-parse HEAD 2>/dev/null || echo working tree)), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(date -u +%F)"
  echo "# case | which | round | median ms | TFLOP/s (rt: the bench's result line; k: the backward's summary)"; } > "$OUT/same_speed.txt"
for r in $(seq 1 "$rounds"); do
  for c in "${cases[@]}"; do
    IFS='|' read -r name envs tool args <<< "$c"
    for which in base cur; do
      dir=build/gpu; [ $which = base ] && dir=build/base
      log="$OUT/${name}_${which}_$r.log"
      # shellcheck disable=SC2086
      if [ "$tool" = k ]; then
        env $envs timeout 120 $dir/bench/ringattn_kernel_fwd $args > "$log" 2>&1
        row=$(grep -E "^backward" "$log" | sed -E 's/.*(dK\/dV [0-9.]+ ms).*(dQ [0-9.]+ ms).*(total [0-9.]+ ms).* ([0-9.]+ TFLOP\/s useful)/\1, \2, \3, \4/')
      else
        env $envs timeout 300 $MPI $dir/launch/ringattn bench --backend cuda $args > "$log" 2>&1
        row=$(grep -A1 '# config' "$log" | tail -1)
        fb=$(grep -m1 '^# forward .* backward' "$log" | cut -c3-130)
        [ -n "$row" ] && [ -n "$fb" ] && row="$fb"
      fi
      echo "$name | $which | $r | ${row:-rc=$? (see $(basename "$log"))}" >> "$OUT/same_speed.txt"
    done
  done
done
cat "$OUT/same_speed.txt"
# At most 8 files come back from the device tool: bundle the logs.
(cd "$OUT" && tar czf same_speed_logs.tgz ./*_base_*.log ./*_cur_*.log base_*.log 2>/dev/null && rm -f ./*_base_*.log ./*_cur_*.log base_*.log)

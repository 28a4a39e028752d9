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
cur=build/gpu/launch/ringattn base=build/base/launch/ringattn
if [ ! -x "$cur" ]; then cmake --preset gpu > "$OUT/configure.log" 2>&1 && cmake --build --preset gpu -j 16 --target ringattn_cli > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }; fi
cmake -S .base -B build/base -DCMAKE_BUILD_TYPE=Release -DRINGATTN_CUDA=ON -DRINGATTN_BUILD_TESTS=OFF > "$OUT/base_configure.log" 2>&1 &&
  cmake --build build/base -j 16 --target ringattn_cli > "$OUT/base_build.log" 2>&1 || { tail -30 "$OUT/base_build.log"; exit 1; }
cases=("longnet4_64k --config longnet4 --seq 64k --heads 16 --head-dim 128"
       "longnet4_1M --config longnet4 --seq 1M --heads 16 --head-dim 128 --iters 10 --warmup 2"
       "dense_16k --config dense --seq 16k --heads 16 --head-dim 128")
{ echo "# same speed: base $(cat .base/REVISION) vs this tree ($(git rev-parse HEAD 2>/dev/null || echo working tree)), $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(date -u +%F)"
  echo "# case | which | round | median ms | TFLOP/s"; } > "$OUT/same_speed.txt"
for r in $(seq 1 "$rounds"); do
  for c in "${cases[@]}"; do
    set -- $c; name=$1; shift
    for which in base cur; do
      bin=$base; [ $which = cur ] && bin=$cur
      $MPI $bin bench --backend cuda "$@" > "$OUT/${name}_${which}_$r.log" 2>&1
      row=$(grep -A1 '# config' "$OUT/${name}_${which}_$r.log" | tail -1)
      echo "$name | $which | $r | $row" >> "$OUT/same_speed.txt"
    done
  done
done
cat "$OUT/same_speed.txt"
# At most 8 files come back from the device tool: bundle the logs.
(cd "$OUT" && tar czf same_speed_logs.tgz ./*_base_*.log ./*_cur_*.log base_*.log 2>/dev/null && rm -f ./*_base_*.log ./*_cur_*.log base_*.log)

#!/usr/bin/env bash
# The backward's (or forward's) kernels alone across several commits, on one GPU, in one
# call: each tree carried in .trees/NAME (made here with `bench/kernel_bisect.sh --prepare
# NAME REV`: `git archive REV`), its kernel driver (bench/kernel_fwd.cu) built apart, then
# every case run on every tree in turn (round-robin, so all see the same clocks). This tree's
# driver (build/gpu) runs as "cur". Used to find which change moved a number.
#   bench/kernel_bisect.sh --prepare old 95bc2fe      # here, before the device call
#   bench/kernel_bisect.sh [rounds]                    # on the GPU machine (default 2)
# KB_TIMEOUT: seconds per run (default 120). KB_CASES: ";"-separated kernel_fwd argument sets (default: dense 16k and longnet4 64k,
# backward with atomic dQ). Logs and a table go to $OUT.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ "${1:-}" = --prepare ]; then
  name="${2:?usage: --prepare NAME REV}" rev="${3:?usage: --prepare NAME REV}"
  rm -rf ".trees/$name" && mkdir -p ".trees/$name" && git archive "$rev" | tar -x -C ".trees/$name" || exit 1
  grep -qx '/.trees/' .git/info/exclude 2>/dev/null || echo '/.trees/' >> .git/info/exclude
  git rev-parse "$rev" > ".trees/$name/REVISION"
  echo "tree $name = $(cat ".trees/$name/REVISION") (carry .trees)"; exit 0
fi
rounds="${1:-2}"
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export PATH="/usr/local/cuda/bin:$PATH"
declare -A bin
for d in .trees/*/; do
  n=$(basename "$d")
  if [ ! -x "build/tree_$n/bench/ringattn_kernel_fwd" ]; then
    { cmake -S "$d" -B "build/tree_$n" -DCMAKE_BUILD_TYPE=Release -DRINGATTN_CUDA=ON -DRINGATTN_BUILD_TESTS=OFF &&
      cmake --build "build/tree_$n" -j 16 --target ringattn_kernel_fwd; } > "$OUT/tree_${n}_build.log" 2>&1 ||
      { echo "tree $n: build failed"; tail -20 "$OUT/tree_${n}_build.log"; continue; }
  fi
  bin[$n]="build/tree_$n/bench/ringattn_kernel_fwd"
done
if [ ! -x build/gpu/bench/ringattn_kernel_fwd ]; then
  { cmake --preset gpu && cmake --build --preset gpu -j 16 --target ringattn_kernel_fwd; } > "$OUT/cur_build.log" 2>&1 || { tail -20 "$OUT/cur_build.log"; exit 1; }
fi
bin[cur]=build/gpu/bench/ringattn_kernel_fwd
IFS=';' read -r -a cases <<< "${KB_CASES:---config dense --seq 16384 --heads 16 --head-dim 128 --bwd --bwd-dq atomic --iters 10;--config longnet4 --seq 65536 --heads 16 --head-dim 128 --bwd --bwd-dq atomic --iters 10}"
{ echo "# kernel bisect, $(nvidia-smi --query-gpu=name --format=csv,noheader | head -1), $(date -u +%F)"
  for n in "${!bin[@]}"; do echo "# $n = $(cat ".trees/$n/REVISION" 2>/dev/null || echo 'this tree')"; done; } > "$OUT/kernel_bisect.txt"
for r in $(seq 1 "$rounds"); do
  for c in "${cases[@]}"; do
    for n in $(printf '%s\n' "${!bin[@]}" | sort); do
      # shellcheck disable=SC2086
      # the backward's summary line, else the forward's row (the line after its header)
      out=$(timeout "${KB_TIMEOUT:-120}" "${bin[$n]}" $c 2>&1); echo "$out" >> "$OUT/kernel_bisect_$n.log"
      line=$(echo "$out" | grep -E -A1 "^backward|^branches" | grep -vE "^branches|^--" | tail -1 | cut -c1-230)
      # the forward output's hash (trees built before it was printed show none): equal hashes, equal bits
      bits=$(echo "$out" | grep -o "^bits: hash of O and LSE 0x[0-9a-f]*" | awk '{print $NF}')
      echo "$r | $n | $c | $line${bits:+ | O/LSE $bits}" >> "$OUT/kernel_bisect.txt"
    done
  done
done
cat "$OUT/kernel_bisect.txt"

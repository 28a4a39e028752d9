# Sourced first by the call scripts here (bench/calls/s9_*.sh): strict mode, the
# repository root as working directory, $OUT/logs (bundled by the caller),
# $S = $OUT/summary.txt (emptied) and say() that also appends to it, NVLink
# multicast off, the device's line (name, memory, clocks, power limit, date), and
# build_driver DIR LOG [cmake args...]: the kernel driver (ringattn_kernel_fwd) alone
# in its own build folder (e.g. with a trace option), its log in $OUT/logs/LOG.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT/logs"
S="$OUT/summary.txt"; : > "$S"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
say() { echo "$*" | tee -a "$S"; }
say "device: $(nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv,noheader | head -1); $(date -u)"
build_driver() {
  local dir="$1" log="$2" t0 rc
  t0=$(date +%s); shift 2
  { cmake -S . -B "$dir" -DRINGATTN_CUDA=ON -DRINGATTN_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release "$@" &&
    cmake --build "$dir" -j 16 --target ringattn_kernel_fwd; } > "$OUT/logs/$log" 2>&1
  rc=$?; say "build $dir ($*): rc=$rc in $(( $(date +%s) - t0 )) s"
  [ $rc = 0 ] || tail -20 "$OUT/logs/$log" >> "$S"
  return $rc
}

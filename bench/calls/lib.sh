# Sourced first by the call scripts here (bench/calls/s9_*.sh): strict mode, the
# repository root as working directory, $OUT/logs (bundled by the caller),
# $S = $OUT/summary.txt (emptied) and say() that also appends to it, NVLink
# multicast off, and the device's line (name, memory, clocks, power limit, date).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT/logs"
S="$OUT/summary.txt"; : > "$S"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
say() { echo "$*" | tee -a "$S"; }
say "device: $(nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm,power.limit --format=csv,noheader | head -1); $(date -u)"

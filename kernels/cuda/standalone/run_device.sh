#!/usr/bin/env bash
# Build, test and benchmark the CUDA fused dilated attention forward in one call
# (no CMake needed). Usage: kernels/cuda/standalone/run_device.sh [test|bench|all|build]
# Logs go to $OUT (or ./out_cuda). Exit code non-zero on any failure.
set -o pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-$PWD/out_cuda}; mkdir -p "$OUT"
MODE=${1:-all}
NVCC=${NVCC:-nvcc}
BUILD=${BUILD:-/tmp/ra_cuda_build}; mkdir -p "$BUILD"
FLAGS="-std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Xptxas -v -lineinfo"
rc=0
echo "== build $(date -u +%FT%TZ)"; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,temperature.gpu,power.draw --format=csv 2>/dev/null
objs=""
for f in kernels/cuda/*.cu; do
  o=$BUILD/$(basename "$f" .cu).o; objs="$objs $o"
  $NVCC $FLAGS -c "$f" -o "$o" 2> "$BUILD/$(basename "$f").ptxas" &
done
$NVCC $FLAGS -c kernels/cuda/standalone/fwd_main.cu -o $BUILD/fwd_main.o 2> $BUILD/fwd_main.ptxas &
wait
cat $BUILD/*.ptxas > "$OUT/ptxas.txt"
$NVCC -gencode=arch=compute_90a,code=sm_90a $objs $BUILD/fwd_main.o -o $BUILD/fwd_main || { echo BUILD FAILED; cat "$OUT/ptxas.txt" | grep -i error; exit 1; }
grep -A2 "fwd_kernel" "$OUT/ptxas.txt" | grep -E "Used|spill" | sort | uniq -c
if grep -E "[1-9][0-9]* bytes spill" "$OUT/ptxas.txt"; then echo "SPILLS FOUND"; rc=1; fi
grep -i "warn" "$OUT/ptxas.txt" | head
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass $BUILD/fwd_bf16_hd128.o > "$BUILD/sass.txt"
  echo "== SASS matrix instructions per kernel (bf16 hd128)"
  awk '/Function :/{f=$3} /HGMMA/{h[f]++} /HMMA/{m[f]++} /LDL|STL/{l[f]++} END{for(k in h)print "HGMMA",h[k],k; for(k in m)print "HMMA",m[k],k; for(k in l)print "LDL/STL",l[k],k}' "$BUILD/sass.txt" | c++filt | sed 's/ringattn::kern::cuda::detail:://g' | tee "$OUT/sass_summary.txt"
fi
[ "$MODE" = build ] && exit $rc
if [ "$MODE" = test ] || [ "$MODE" = all ]; then
  echo "== correctness"; $BUILD/fwd_main test mma wgmma pipe 2>&1 | tee "$OUT/test.txt" || rc=1
  if command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer"
    compute-sanitizer --tool memcheck --error-exitcode 3 $BUILD/fwd_main small mma wgmma pipe > "$OUT/memcheck.txt" 2>&1; m=$?
    compute-sanitizer --tool racecheck --error-exitcode 3 $BUILD/fwd_main small mma wgmma pipe > "$OUT/racecheck.txt" 2>&1; r=$?
    tail -n 3 "$OUT/memcheck.txt"; tail -n 3 "$OUT/racecheck.txt"
    echo "memcheck rc=$m racecheck rc=$r"; [ $m = 0 ] && [ $r = 0 ] || rc=1
  fi
fi
if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
  echo "== bench"; $BUILD/fwd_main bench ${BENCH_VARIANTS:-mma wgmma pipe} 2>&1 | tee "$OUT/bench.txt" || rc=1
fi
echo "== done rc=$rc"
exit $rc

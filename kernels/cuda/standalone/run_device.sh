#!/usr/bin/env bash
# Build, test and benchmark the CUDA fused dilated attention forward in one call
# (no CMake needed). Usage: kernels/cuda/standalone/run_device.sh [test|bench|all|build]
# Logs go to $OUT (or ./out_cuda). Exit code non-zero on any failure.
# Env: PREBUILT=1 uses the objects already in $BUILD (built elsewhere with the
# same script, MODE=build); TEST_VARIANTS, SAN_VARIANTS, BENCH_VARIANTS pick
# paths; NCU_VARIANTS="wgmma ws" profiles the first longnet4-64k launch of
# each (ncu --set full) into $OUT/ncu_<variant>.txt.
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
  [ "${PREBUILT:-0}" = 1 ] || $NVCC $FLAGS -c "$f" -o "$o" 2> "$BUILD/$(basename "$f").ptxas" &
done
[ "${PREBUILT:-0}" = 1 ] || $NVCC $FLAGS -c kernels/cuda/standalone/fwd_main.cu -o $BUILD/fwd_main.o 2> $BUILD/fwd_main.ptxas &
wait
cat $BUILD/*.ptxas > "$OUT/ptxas.txt"
[ "${PREBUILT:-0}" = 1 ] && [ -x $BUILD/fwd_main ] || \
$NVCC -gencode=arch=compute_90a,code=sm_90a $objs $BUILD/fwd_main.o -o $BUILD/fwd_main || { echo BUILD FAILED; cat "$OUT/ptxas.txt" | grep -i error; exit 1; }
if grep -E "C7514|C7508" "$OUT/ptxas.txt" | grep -v "FwdTraits.*Li2EEE" ; then echo "WGMMA SERIALISED / SETMAXNREG IGNORED"; rc=1; fi
grep -A2 -E "fwd_kernel|fwd_ws_kernel" "$OUT/ptxas.txt" | grep -E "Used|spill" | sort | uniq -c
if grep -E "[1-9][0-9]* bytes spill" "$OUT/ptxas.txt"; then echo "SPILLS FOUND"; rc=1; fi
grep -i "warn" "$OUT/ptxas.txt" | head
if command -v cuobjdump >/dev/null; then
  cuobjdump -sass $BUILD/fwd_bf16_hd128.o > "$BUILD/sass.txt"
  echo "== SASS matrix instructions per kernel (bf16 hd128)"
  awk '/Function :/{f=$3} /HGMMA/{h[f]++} /HMMA/{m[f]++} /LDL|STL/{l[f]++} END{for(k in h)print "HGMMA",h[k],k; for(k in m)print "HMMA",m[k],k; for(k in l)print "LDL/STL",l[k],k}' "$BUILD/sass.txt" | c++filt | sed 's/ringattn::kern::cuda::detail:://g' | tee "$OUT/sass_summary.txt"
fi
[ "$MODE" = build ] && exit $rc
if [ "$MODE" = test ] || [ "$MODE" = all ]; then
  echo "== correctness"; $BUILD/fwd_main test ${TEST_VARIANTS:-mma wgmma pipe ws ws3 auto} 2>&1 | tee "$OUT/test.txt" || rc=1
  if command -v compute-sanitizer >/dev/null; then
    echo "== compute-sanitizer"
    compute-sanitizer --tool memcheck --error-exitcode 3 $BUILD/fwd_main small ${SAN_VARIANTS:-mma wgmma pipe ws ws3} > "$OUT/memcheck.txt" 2>&1; m=$?
    compute-sanitizer --tool racecheck --error-exitcode 3 $BUILD/fwd_main small ${SAN_VARIANTS:-mma wgmma pipe ws ws3} > "$OUT/racecheck.txt" 2>&1; r=$?
    tail -n 3 "$OUT/memcheck.txt"; tail -n 3 "$OUT/racecheck.txt"
    echo "memcheck rc=$m racecheck rc=$r"; [ $m = 0 ] && [ $r = 0 ] || rc=1
  fi
fi
if [ "$MODE" = bench ] || [ "$MODE" = all ]; then
  echo "== bench"; $BUILD/fwd_main bench ${BENCH_VARIANTS:-mma wgmma pipe ws ws3} 2>&1 | tee "$OUT/bench.txt" || rc=1
fi
if [ -n "${NCU_VARIANTS:-}" ] && command -v ncu >/dev/null; then
  for v in $NCU_VARIANTS; do
    k='regex:fwd_kernel'; case $v in ws*) k='regex:fwd_ws_kernel';; esac
    echo "== ncu $v"
    BENCH_CASES="longnet4 64k" BENCH_ITERS=1 timeout 240 ncu --set full --metrics "regex:smsp__average_warps_issue_stalled_.*_per_issue_active\.ratio" -k "$k" -c 1 --import-source no \
      $BUILD/fwd_main bench $v > "$OUT/ncu_$v.txt" 2>&1 || echo "ncu $v rc=$?"
    if [ "${NCU_SOURCE:-0}" = 1 ]; then
      BENCH_CASES="longnet4 64k" BENCH_ITERS=1 timeout 200 ncu --section SourceCounters --section WarpStateStats \
        --section SpeedOfLight -k "$k" -c 1 --import-source no -o "$BUILD/src_$v" -f $BUILD/fwd_main bench $v > /dev/null 2>&1 || echo "ncu src $v rc=$?"
      ncu --import "$BUILD/src_$v.ncu-rep" --page source --csv --print-source sass > "$OUT/ncu_src_$v.csv" 2> "$OUT/ncu_src_$v.err" || echo "ncu src print rc=$?"
      ls -la "$OUT/ncu_src_$v.csv"; head -c 600 "$OUT/ncu_src_$v.csv"; echo
    fi
    grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|Achieved Occupancy|Registers Per|Executed Ipc A|Issue Slots Busy|No Eligible|Eligible Warps|Warp Cycles Per Issued|L2 Hit Rate|L1/TEX Hit|Bank" "$OUT/ncu_$v.txt" | head -30
  done
fi
echo "== done rc=$rc"
exit $rc

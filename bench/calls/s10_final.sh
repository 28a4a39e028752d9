#!/usr/bin/env bash
# Tenth session's last call, one GPU: the GPU tests this session's calls had not run on main
# (the forward's runtime tests, NCCL on one GPU, the fault test, short segments), the forward's
# per-item trace (bench/calls/s11_trace.sh's cases; the gpu preset's kernel driver is the
# untraced one), then the PyTorch op's GPU tests at 1 and 2 ranks.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
t0=$(date +%s)
OUT="$OUT/logs/suite" timeout 200 ./launch/gpu_suite.sh build > "$OUT/build.log" 2>&1; say "build: rc=$? in $(( $(date +%s) - t0 )) s"
t0=$(date +%s)
OUT="$OUT/logs/suite" CTEST_R="${CTEST_R:-gpu_verify_(longnet4|paper|dense|geometric|straddle|nccl|short_np1)|gpu_nccl_fault|gpu_kernel_short|gpu_fused}" \
  timeout "${TESTS_S:-220}" ./launch/gpu_suite.sh ctest > "$OUT/tests.log" 2>&1; rc=$?
grep -E "^== ctest|Failed|\*\*\*" "$OUT/tests.log" | head -20 >> "$S"; say "tests: rc=$rc in $(( $(date +%s) - t0 )) s"
# The trace: a traced build of the kernel driver beside the gpu preset's.
t0=$(date +%s)
{ cmake -S . -B build/gpu-trace -DRINGATTN_CUDA=ON -DRINGATTN_BUILD_TESTS=OFF -DCMAKE_BUILD_TYPE=Release -DRINGATTN_FWD_TRACE=ON &&
  cmake --build build/gpu-trace -j 16 --target ringattn_kernel_fwd; } > "$OUT/logs/build_trace.log" 2>&1; rc_t=$?
say "build trace: rc=$rc_t in $(( $(date +%s) - t0 )) s"; [ $rc_t = 0 ] || tail -20 "$OUT/logs/build_trace.log" >> "$S"
i=0
for c in "--branches 2048:1 --seq 65536" "--config dense --seq 16384" "--config longnet4 --seq 65536"; do
  i=$((i + 1))
  # shellcheck disable=SC2086
  say "notrace $c | $(timeout 60 build/gpu/bench/ringattn_kernel_fwd $c --heads 16 --head-dim 128 --iters 10 2>&1 | grep -A1 "^branches" | tail -1)"
  [ $rc_t = 0 ] || continue
  # shellcheck disable=SC2086
  timeout 90 build/gpu-trace/bench/ringattn_kernel_fwd --trace --trace-csv "$OUT/logs/trace_$i.csv" $c --heads 16 --head-dim 128 \
    --iters 10 > "$OUT/logs/trace_$i.log" 2>&1
  rc=$?; say "== trace $i: $c: rc=$rc | $(grep -A1 "^branches" "$OUT/logs/trace_$i.log" | tail -1)"
  grep "^trace " "$OUT/logs/trace_$i.log" >> "$S"; [ $rc = 0 ] || tail -5 "$OUT/logs/trace_$i.log" >> "$S"
done
t0=$(date +%s)
OUT="$OUT/logs/torch" TORCH_GPU_TESTS_ONLY=1 timeout 240 bench/torch_op_gpu.sh > "$OUT/torch.log" 2>&1; rc=$?
grep -E "^np |torch_op_gpu" "$OUT/torch.log" | cut -c1-200 >> "$S"; say "torch tests: rc=$rc in $(( $(date +%s) - t0 )) s"
mv "$OUT/build.log" "$OUT/tests.log" "$OUT/torch.log" "$OUT/logs/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

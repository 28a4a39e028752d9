#!/usr/bin/env bash
# Tenth session, one GPU: why the forward's dilated branches run slower per work item than
# r = 1 (h100-2026-11-28s9 call 8: 2048:1 581 TF/s, 4096:2 526, 16384:8 400 at 64k, every
# item 128 queries x 2048 keys). Separates the dilation's stride from the item count (a
# branch with few items per CTA pays its ramp and tail): the same item count at r = 1 and
# r = 8, then ncu (SpeedOfLight, memory, warp states, source counters) of both.
# Phases: build tests fwd prof torchtests.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed"
K=build/gpu/bench/ringattn_kernel_fwd
for ph in "$@"; do
  t0=$(date +%s)
  case "$ph" in
    build) OUT="$OUT/logs" timeout 200 ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$? ;;
    tests) OUT="$OUT/logs" CTEST_R="${CTEST_R:-kernel_bwd_small|fused_forward}" timeout "${TESTS_S:-200}" ./launch/gpu_suite.sh ctest > "$OUT/tests.log" 2>&1; rc=$?
           grep -E "== ctest|Failed|\*\*\*" "$OUT/tests.log" | head -20 >> "$S"; mv "$OUT/tests.log" "$OUT/logs/" ;;  # gpu_suite bundles $OUT/logs
    fwd) rc=0
         for c in "--branches 2048:1 --seq 65536" "--branches 16384:8 --seq 65536" "--branches 2048:1 --seq 8192" \
                  "--branches 16384:8 --seq 524288" "--branches 4096:2 --seq 65536" "--branches 8192:4 --seq 65536" \
                  "--branches 2048:1 --seq 32768" "--branches 16384:1 --seq 65536"; do
           # shellcheck disable=SC2086
           line=$(timeout 60 $K $c --heads 16 --head-dim 128 --iters 20 2>&1 | tee -a "$OUT/logs/fwd.log" | grep -A1 "^branches" | tail -1)
           say "fwd $c | $line"
         done ;;
    prof) rc=0
          for v in "r8_64k|--branches 16384:8 --seq 65536" "r1_8k|--branches 2048:1 --seq 8192" "r1_64k|--branches 2048:1 --seq 65536"; do
            IFS='|' read -r name args <<< "$v"
            # shellcheck disable=SC2086
            timeout 150 ncu --clock-control none --kernel-name regex:fwd_kernel --launch-skip 2 --launch-count 1 --section SpeedOfLight \
              --section MemoryWorkloadAnalysis --section WarpStateStats --section SchedulerStats --section Occupancy --section LaunchStats \
              -f -o "$OUT/logs/prof_$name" $K $args --heads 16 --head-dim 128 --iters 1 --warmup 2 > "$OUT/logs/prof_${name}_run.log" 2>&1 || rc=1
            ncu -i "$OUT/logs/prof_$name.ncu-rep" --page details --print-details all > "$OUT/logs/prof_${name}_details.txt" 2>&1
            say "== prof $name ($args)"
            grep -E "^ +(Duration|DRAM Throughput|Memory Throughput|L1/TEX Hit Rate|L2 Hit Rate|Compute \(SM\) Throughput|Mem Busy|Max Bandwidth|Issue Slots Busy|No Eligible|Warp Cycles Per Issued|Waves Per SM|Achieved Occupancy|L2 Compression|SM Frequency|DRAM Frequency) " \
              "$OUT/logs/prof_${name}_details.txt" | sed -E 's/ {2,}/ /g' | head -24 >> "$S"
          done
          rm -f "$OUT"/logs/*.ncu-rep ;;
    torchtests) OUT="$OUT/logs/torch" TORCH_GPU_TESTS_ONLY=1 timeout 300 bench/torch_op_gpu.sh > "$OUT/logs/torch.log" 2>&1; rc=$?
                grep -E "^np |torch_op_gpu" "$OUT/logs/torch.log" | cut -c1-200 >> "$S" ;;
    *) rc=2; say "unknown phase $ph" ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

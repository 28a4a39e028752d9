#!/usr/bin/env bash
# Twelfth session, 2 GPUs (nvidia-h200-x2): everything programmatic dependent launch (PDL,
# default on since the tenth session) had not run under. Phases (arguments, in order; default
# build tests torch multi):
#   build:  the gpu preset (./launch/gpu_suite.sh build);
#   tests:  every GPU test (ctest -L gpu; CTEST_R narrows it);
#   torch:  the PyTorch op's GPU tests (bench/torch_op_gpu.sh, np 2 over NCCL on the 2 GPUs);
#   multi:  verify and verify --op backward over NCCL at 2 real GPUs on the named configs, then
#           dense 128k forward at 1 and 2 GPUs beside the PyTorch ring (bench/torch_ring.py).
# Everything within DEADLINE_S (default 570) seconds: a step that would begin later is skipped
# and said so. Summary lines in $S; logs bundled into $OUT/logs.tgz.
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"  # strict mode, cwd, $OUT/logs, $S, say, the device line
start=$(date +%s)
left() { echo $(( ${DEADLINE_S:-570} - ($(date +%s) - start) )); }
say "tree: $(git rev-parse --short HEAD 2>/dev/null) $(git status --short 2>/dev/null | wc -l) changed; GPUs: $(nvidia-smi -L | grep -c GPU)"
RA=build/gpu/launch/ringattn
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none"
phases=("$@"); [ ${#phases[@]} -eq 0 ] && phases=(build tests torch multi)
for ph in "${phases[@]}"; do
  t0=$(date +%s)
  [ "$(left)" -gt 30 ] || { say "phase $ph: skipped ($(left) s left)"; continue; }
  case "$ph" in
    build) OUT="$OUT/logs" timeout "${BUILD_S:-170}" ./launch/gpu_suite.sh build > "$OUT/logs/build.log" 2>&1; rc=$?
           grep -E "== build|== sass" "$OUT/logs/build.log" | head -3 >> "$S" ;;
    tests) re="${CTEST_R:-.}"
           say "tests: $(ctest --test-dir build/gpu -L gpu -N -R "$re" 2>/dev/null | grep -c 'Test *#') selected by '$re'"
           OUT="$OUT/logs" CTEST_R="$re" timeout "$(( $(left) - ${RESERVE_S:-200} ))" ./launch/gpu_suite.sh ctest > "$OUT/tests.log" 2>&1; rc=$?
           grep -E "== ctest|Failed|\*\*\*" "$OUT/tests.log" | head -30 >> "$S"; mv "$OUT/tests.log" "$OUT/logs/" ;;
    torch) OUT="$OUT/logs/torch" TORCH_GPU_TESTS_ONLY=1 timeout "$(( $(left) < 240 ? $(left) : 240 ))" bench/torch_op_gpu.sh > "$OUT/logs/torch.log" 2>&1; rc=$?
           grep -E "^np |torch_op_gpu" "$OUT/logs/torch.log" | cut -c1-200 >> "$S" ;;
    multi) rc=0
           for c in "longnet4 --seq 32k" "longnet-paper --seq 32k --causal --dtype f16" "geometric --seq 32k --head-offsets blocked" "dense --seq 32k --causal"; do
             set -- $c; cfg=$1; shift
             [ "$(left)" -gt 60 ] || { say "verify $c: skipped"; continue; }
             timeout 120 $MPI -np 2 $RA verify --backend cuda --transport nccl --config "$cfg" --heads 4 --head-dim 128 "$@" > "$OUT/logs/verify_$cfg.log" 2>&1
             r=$?; rc=$((rc | r)); say "verify nccl 2 GPUs $c: rc=$r $(tail -1 "$OUT/logs/verify_$cfg.log" | cut -c1-170)"
           done
           for c in "geometric --seq 32k --causal" "longnet4 --seq 32k --dtype f16" "dense --seq 8k"; do
             set -- $c; cfg=$1; shift
             [ "$(left)" -gt 60 ] || { say "verify --op backward $c: skipped"; continue; }
             timeout 150 $MPI -np 2 $RA verify --backend cuda --transport nccl --op backward --config "$cfg" --heads 4 --head-dim 128 "$@" > "$OUT/logs/verify_bwd_$cfg.log" 2>&1
             r=$?; rc=$((rc | r)); say "verify --op backward nccl 2 GPUs $c: rc=$r $(tail -1 "$OUT/logs/verify_bwd_$cfg.log" | cut -c1-200)"
           done
           for round in 1 2; do
             for np in 1 2; do
               [ "$(left)" -gt 45 ] || { say "dense 128k np$np: skipped"; continue; }
               timeout 120 $MPI -np $np $RA bench --backend cuda --transport nccl --timeline --config dense --seq 128k --heads 16 --head-dim 128 \
                 --iters 10 --warmup 2 > "$OUT/logs/dense_128k_np${np}_r$round.log" 2>&1
               say "dense 128k np$np r$round: rc=$? $(grep -A1 '# config' "$OUT/logs/dense_128k_np${np}_r$round.log" | tail -1)"
             done
             [ "$(left)" -gt 45 ] || { say "torch ring: skipped"; continue; }
             timeout 120 $MPI -np 2 python3 bench/torch_ring.py --seq 128k --heads 16 --head-dim 128 > "$OUT/logs/torch_ring_128k_np2_r$round.log" 2>&1
             say "torch ring dense 128k np2 r$round: rc=$? $(grep -A1 '# config' "$OUT/logs/torch_ring_128k_np2_r$round.log" | tail -1)"
           done ;;
    *) say "unknown phase $ph"; rc=2 ;;
  esac
  say "phase $ph: rc=$rc in $(( $(date +%s) - t0 )) s ($(left) s left)"
done
tar czf "$OUT/logs.tgz" -C "$OUT" logs && rm -rf "$OUT/logs"

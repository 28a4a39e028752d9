#!/usr/bin/env bash
# Where the backward's kernels spend their cycles, on the GPU machine: ncu on one
# launch each of the dK/dV kernel (atomic dQ, and with the dQ pass) and of the dQ
# pass's kernel (bench/kernel_fwd.cu --bwd; dense 16k unless PROFILE_ARGS), with
# the stall-sampling sections; then per kernel the SASS with its samples
# (prof_NAME_sass.csv), the raw metrics (prof_NAME_raw.csv) and a summary of the
# hottest instructions and stall reasons (bench/bwd_profile_summary.py) in
# bwd_profile.txt. Needs build/gpu (./launch/gpu_suite.sh build).
#   bench/bwd_profile.sh                 # dense 16k
#   PROFILE_ARGS="--config longnet4 --seq 65536 --heads 16 --head-dim 128" bench/bwd_profile.sh
# PROFILE_CASES: ";"-separated "NAME|KERNEL REGEX|kernel_fwd arguments after PROFILE_ARGS"
# (default the three backward launches); e.g. the forward: "fwd|fwd_kernel|--iters 1".
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export PATH="/usr/local/cuda/bin:$PATH"
K=build/gpu/bench/ringattn_kernel_fwd
[ -x "$K" ] || { echo "no $K: run ./launch/gpu_suite.sh build first"; exit 2; }
command -v ncu >/dev/null || { echo "no ncu on this machine"; exit 2; }
ARGS="${PROFILE_ARGS:---config dense --seq 16384 --heads 16 --head-dim 128}"
: > "$OUT/bwd_profile.txt"
IFS=';' read -r -a cases <<< "${PROFILE_CASES:-dkdv_atomic|bwd_dkdv|--bwd --bwd-dq atomic;dkdv_pass|bwd_dkdv|--bwd --bwd-dq pass;dq_pass|bwd_dq|--bwd --bwd-dq pass}"
for v in "${cases[@]}"; do
  IFS='|' read -r name kern kargs <<< "$v"
  # shellcheck disable=SC2086
  timeout 300 ncu --kernel-name "regex:$kern" --launch-count 1 --section SpeedOfLight --section WarpStateStats \
    --section SchedulerStats --section SourceCounters --section ComputeWorkloadAnalysis --import-source no -f \
    -o "$OUT/prof_$name" $K $ARGS $kargs --iters 1 --warmup 0 > "$OUT/prof_${name}_run.log" 2>&1
  echo "ncu $name: rc=$?" | tee -a "$OUT/bwd_profile.txt"
  ncu -i "$OUT/prof_$name.ncu-rep" --page source --csv --print-source sass > "$OUT/prof_${name}_sass.csv" 2> "$OUT/prof_${name}_sass.err" ||
    echo "  source page: $(head -3 "$OUT/prof_${name}_sass.err")" | tee -a "$OUT/bwd_profile.txt"
  ncu -i "$OUT/prof_$name.ncu-rep" --page raw --csv > "$OUT/prof_${name}_raw.csv" 2>&1
  ncu -i "$OUT/prof_$name.ncu-rep" --page details --print-details all > "$OUT/prof_${name}_details.txt" 2>&1
  python3 bench/bwd_profile_summary.py "$name" "$OUT/prof_${name}_sass.csv" "$OUT/prof_${name}_raw.csv" >> "$OUT/bwd_profile.txt" 2>&1
done
cat "$OUT/bwd_profile.txt"

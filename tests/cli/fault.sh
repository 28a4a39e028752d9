#!/usr/bin/env bash
# fault.sh NP RINGATTN [EXPECT [ARGS...]]: rank 1 exits at ring step 1 (or the
# fault ARGS name, with EXPECT the line it prints); the job must end with a
# non-zero code well inside the 10 s timeout, not hang.
set -uo pipefail
np="$1"; bin="$2"
expect="${3:-injected fault: rank 1 exits at ring step 1}"
shift $(( $# < 3 ? $# : 3 ))
extra=("$@"); [ ${#extra[@]} -gt 0 ] || extra=(--inject-fault rank=1,step=1)
flags=(--oversubscribe)
[ "$(id -u)" = 0 ] && flags+=(--allow-run-as-root)
start=$(date +%s)
out=$(timeout 90 mpirun "${flags[@]}" --bind-to none -np "$np" "$bin" run --config geometric --seq 8192 --heads 2 --head-dim 16 \
      --iters 1 --warmup 0 --timeout 10 "${extra[@]}" 2>&1)
rc=$?
end=$(date +%s)
echo "$out"
echo "fault: exit $rc after $((end - start)) s"
[ "$rc" != 0 ] || { echo "fault: job succeeded despite the injected fault"; exit 1; }
[ "$rc" != 124 ] || { echo "fault: job hung"; exit 1; }
grep -q "$expect" <<<"$out" || { echo "fault: the fault was not injected ($expect)"; exit 1; }
[ $((end - start)) -le 60 ] || { echo "fault: took longer than 60 s"; exit 1; }
echo "fault: OK"

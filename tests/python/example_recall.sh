#!/usr/bin/env bash
# examples/torch_train.py's claim (label python): at its defaults (N=1024, 24 pairs, 32 values,
# gap 128, 1000 steps) on 2 ranks, the dilated branches 32:1,256:8,1024:16 reach held-out
# accuracy >= 90% and the local branch 32:1 alone stays near chance (<= 10%; chance 1/32 = 3.1%),
# the pairs being at least 128 tokens before every query. About 20 s each on 2 idle cores.
# usage: example_recall.sh SOURCE_DIR WORK_DIR PYTHON -- MPIRUN [FLAGS...] NPFLAG
set -euo pipefail
src="$1" work="$2" python="$3"
shift 3
[ "${1:-}" = "--" ] && shift
mpirun=("$@")  # ends with the -np flag
fail() { echo "example_recall: FAILED: $*" >&2; exit 1; }
rm -rf "$work" && mkdir -p "$work"
run() {  # NAME ARGS...
  local name="$1"; shift
  echo "== ${mpirun[*]} 2 $python examples/torch_train.py $*"
  "${mpirun[@]}" 2 "$python" "$src/examples/torch_train.py" --log-every 250 --ckpt "$work/$name.pt" "$@" \
    >"$work/$name.out" 2>&1 || { cat "$work/$name.out"; fail "$name: exited non-zero (accuracy check or error)"; }
  cat "$work/$name.out"
  grep -q "^held-out accuracy" "$work/$name.out" || fail "$name: no held-out accuracy line"
}
run dilated --min-accuracy 90
run local --branches 32:1 --max-accuracy 10
echo "example_recall: OK"

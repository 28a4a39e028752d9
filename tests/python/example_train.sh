#!/usr/bin/env bash
# examples/torch_train.py as the README runs it, small (label python):
#   1. 20 steps at np 1 and at np 2 from the same seed: the logged losses and
#      accuracies agree (sharding the sequence over ranks computes the same model;
#      float32 sums in another order: relative 1e-4 on the loss);
#   2. a checkpoint at step 20, then --resume at np 2 goes on to step 30.
# usage: example_train.sh SOURCE_DIR WORK_DIR PYTHON -- MPIRUN [FLAGS...] NPFLAG
set -euo pipefail
src="$1" work="$2" python="$3"
shift 3
[ "${1:-}" = "--" ] && shift
mpirun=("$@")  # ends with the -np flag
fail() { echo "example_train: FAILED: $*" >&2; exit 1; }
rm -rf "$work" && mkdir -p "$work"
small=(--seq 128 --batch 4 --pairs 4 --keys 16 --values 16 --cell 8 --gap 32 --branches 32:1,128:8 --dim 32 --heads 2
       --eval-seqs 4 --log-every 10 --ckpt-every 10)
for np in 1 2; do
  echo "== ${mpirun[*]} $np $python examples/torch_train.py ${small[*]} --steps 20"
  "${mpirun[@]}" "$np" "$python" "$src/examples/torch_train.py" "${small[@]}" --steps 20 --ckpt "$work/np$np.pt" \
    >"$work/np$np.out" 2>&1 || { cat "$work/np$np.out"; fail "np $np exited non-zero"; }
  cat "$work/np$np.out"
  grep -q "^step    20: checkpoint $work/np$np.pt" "$work/np$np.out" || fail "np $np: no checkpoint line"
  [ -s "$work/np$np.pt" ] || fail "np $np: no checkpoint file"
done
"$python" - "$work/np1.out" "$work/np2.out" <<'PY' || fail "np 1 and np 2 differ"
import re, sys
def lines(path):
    return [tuple(float(x) for x in m.groups()) for m in
            re.finditer(r"step +\d+/\d+  loss ([0-9.]+)  accuracy +([0-9.]+)%", open(path).read())]
a, b = lines(sys.argv[1]), lines(sys.argv[2])
assert len(a) == 2 and len(b) == 2, (a, b)
for (la, aa), (lb, ab) in zip(a, b):
    assert abs(la - lb) <= 1e-4 * la, "loss %g at np 1, %g at np 2" % (la, lb)
    assert abs(aa - ab) <= 100.0 / 16 + 1e-9, "accuracy %g%% at np 1, %g%% at np 2" % (aa, ab)
print("np 1 and np 2: the same losses", a, b)
PY
echo "== --resume at np 2"
"${mpirun[@]}" 2 "$python" "$src/examples/torch_train.py" "${small[@]}" --steps 30 --ckpt "$work/np2.pt" --resume \
  >"$work/resume.out" 2>&1 || { cat "$work/resume.out"; fail "--resume exited non-zero"; }
cat "$work/resume.out"
grep -q "resumed from $work/np2.pt at step 20" "$work/resume.out" || fail "no resume line"
grep -q "^step    30/30  loss" "$work/resume.out" || fail "no step 30 line"
echo "example_train: OK"

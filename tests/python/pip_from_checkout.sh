#!/usr/bin/env bash
# `pip install ./python` from a fresh clone, where no installed ringattn is given:
# the package builds the runtime from the checkout (add_subdirectory, CPU only
# here: RINGATTN_CUDA=OFF) into a wheel that holds only the package (no headers
# or libraries of the project's own install rules); unpacked elsewhere, it runs
# one forward and backward at np 2.
# usage: pip_from_checkout.sh SOURCE_DIR WORK_DIR PYTHON -- MPIRUN [FLAGS...]
set -euo pipefail
src="$1" work="$2" python="$3"
shift 3
[ "${1:-}" = "--" ] && shift
fail() { echo "pip_from_checkout: FAILED: $*" >&2; exit 1; }
rm -rf "$work/wheel" "$work/site" && mkdir -p "$work/wheel" "$work/site"
echo "== $python -m pip wheel --no-build-isolation $src/python -C cmake.define.RINGATTN_CUDA=OFF"
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$python" -m pip wheel -v --no-build-isolation --no-deps --disable-pip-version-check "$src/python" -w "$work/wheel" \
  -C cmake.define.RINGATTN_CUDA=OFF -C build-dir="$work/build" >"$work/pip.log" 2>&1 || { tail -60 "$work/pip.log"; fail "pip wheel"; }
grep -q "ringattn python: no installed runtime found, building it from" "$work/pip.log" ||
  { tail -60 "$work/pip.log"; fail "the runtime was not built from the checkout"; }
wheel=$(ls "$work"/wheel/ringattn-*.whl)
"$python" - "$wheel" "$work/site" <<'PY' || fail "the wheel's contents"
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
print("\n".join("   " + n for n in names))
assert any(n.startswith("ringattn/_C.") and n.endswith(".so") for n in names), "no extension"
assert all(n.startswith(("ringattn/", "ringattn-")) for n in names), "files outside the package"
zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])
PY
echo "== forward and backward at np 2 from the unpacked wheel"
(cd "$work" && PYTHONPATH="$work/site" "$@" 2 "$python" -c "
import torch, ringattn, ringattn.torch as rt
assert ringattn.__file__.startswith('$work/site'), ringattn.__file__
q = torch.randn(1, 16, 2, 8, requires_grad=True)
o = rt.dilated_attention(q, q, q, [(32, 2)], causal=True)
o.sum().backward()
assert torch.isfinite(o).all() and torch.isfinite(q.grad).all() and q.grad.abs().sum() > 0
print('forward and backward OK')
") | tee "$work/run.log"
[ "$(grep -o 'forward and backward OK' "$work/run.log" | wc -l)" = 2 ] || fail "not both ranks ran"
echo "pip_from_checkout: OK"

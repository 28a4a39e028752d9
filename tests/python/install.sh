#!/usr/bin/env bash
# The package as the README installs it (label python; the fixture of the other
# Python tests): this build into a prefix (cmake --install), then
#   pip install --no-build-isolation ./python -C cmake.define.ringattn_ROOT=PREFIX
# into the environment of PYTHON (no network: its build tools come from that
# environment, the runtime from the prefix), then an import from outside the tree.
# usage: install.sh BUILD_DIR SOURCE_DIR PYTHON CMAKE
set -euo pipefail
build="$1" src="$2" python="$3" cmake="$4"
prefix="$build/python-prefix"
log="$build/python-install.log"
fail() { echo "python_install: FAILED: $*" >&2; exit 1; }

echo "== $cmake --install $build --prefix $prefix"
rm -rf "$prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$log" 2>&1 || { cat "$log"; fail "cmake --install"; }
echo "== $python -m pip install --no-build-isolation $src/python (log: $log)"
# build-dir: kept, so that a rerun recompiles only what changed.
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
  "$python" -m pip install -v --no-build-isolation --no-deps --disable-pip-version-check "$src/python" \
  -C cmake.define.ringattn_ROOT="$prefix" -C build-dir="$build/python-ext" >>"$log" 2>&1 ||
  { tail -60 "$log"; fail "pip install $src/python"; }
grep -q "^ringattn_DIR:PATH=$prefix/" "$build/python-ext/CMakeCache.txt" ||
  { tail -60 "$log"; fail "the extension was not built against $prefix (ringattn_DIR in $build/python-ext/CMakeCache.txt)"; }
echo "== import from outside the tree"
(cd / && "$python" -c "
import ringattn, ringattn.torch, torch  # ringattn first: it must load torch's CUDA libraries before its own
print('ringattn', ringattn.version(), 'at', ringattn.__file__, '| torch', torch.__version__)
assert '$src/python' not in ringattn.__file__, 'imported the source tree, not the installed package'
") || fail "import ringattn.torch"
echo "python_install: OK"

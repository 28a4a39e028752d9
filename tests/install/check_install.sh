#!/usr/bin/env bash
# The installed package used from outside the tree, as the README says:
#   1. cmake --install BUILD --prefix WORK/prefix: headers, libringattn.so/.a,
#      lib/cmake/ringattn (config + version), lib/pkgconfig/ringattn.pc;
#      the .so of a CPU build needs nothing of CUDA (ldd);
#   2. C:   mpicc hello.c -o hello_c $(pkg-config --cflags --libs ringattn)
#   3. C++: cmake -S consumer -B build -DCMAKE_PREFIX_PATH=PREFIX && cmake --build build
#      (find_package(ringattn): ringattn::ringattn, ringattn::ringattn_static);
#      the shared program's link line names no kernel library;
#   4. each program under mpirun at np 2, its "OK" line checked.
#   Built without the shared library (RINGATTN_BUILD_SHARED=OFF), the C program links
#   libringattn.a: mpicxx ... $(pkg-config --static --cflags --libs ringattn).
# usage: check_install.sh BUILD_DIR WORK_DIR CMAKE MPICC MPICXX WITH_CUDA(ON|OFF) SHARED(ON|OFF) -- MPIRUN [FLAGS...]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
build="$1" work="$2" cmake="$3" mpicc="$4" mpicxx="$5" with_cuda="$6" shared="$7"
shift 7
[ "${1:-}" = "--" ] && shift
mpirun=("$@")

fail() { echo "check_install: FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }

rm -rf "$work"
mkdir -p "$work"
prefix="$work/prefix"

step "cmake --install $build --prefix $prefix"
"$cmake" --install "$build" --prefix "$prefix" >"$work/install.log" || { cat "$work/install.log"; fail "cmake --install"; }
libdir=""
for d in "$prefix"/lib "$prefix"/lib64 "$prefix"/lib/*; do
  if [ -z "$libdir" ] && [ -e "$d/cmake/ringattn/ringattnConfig.cmake" ]; then libdir="${d#"$prefix"/}"; fi
done
[ -n "$libdir" ] || fail "no lib*/cmake/ringattn under $prefix"
want=(include/ringattn/ringattn.h include/ringattn/ringattn.hpp include/ringattn/config.hpp
      include/ringattn/status.hpp include/ringattn/device.hpp "$libdir/libringattn.a"
      "$libdir/cmake/ringattn/ringattnConfig.cmake" "$libdir/cmake/ringattn/ringattnConfigVersion.cmake"
      "$libdir/pkgconfig/ringattn.pc")
[ "$shared" = ON ] && want+=("$libdir/libringattn.so")
for f in "${want[@]}"; do
  [ -e "$prefix/$f" ] || fail "missing $f in the install"
  echo "   $f"
done

if [ "$shared" = ON ]; then
  step "ldd $libdir/libringattn.so"
  ldd "$prefix/$libdir/libringattn.so" | tee "$work/ldd.txt"
  grep -q 'not found' "$work/ldd.txt" && fail "libringattn.so has unresolved libraries"
  if [ "$with_cuda" = ON ]; then
    grep -qi 'libcudart' "$work/ldd.txt" || fail "a CUDA build's libringattn.so should need libcudart"
  elif grep -Eqi 'cuda|nccl' "$work/ldd.txt"; then
    fail "a CPU build's libringattn.so needs CUDA/NCCL"
  fi
fi

step "C through pkg-config"
export PKG_CONFIG_PATH="$prefix/$libdir/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
echo "   pkg-config --cflags --libs ringattn: $(pkg-config --cflags --libs ringattn)"
pkg-config --libs ringattn | grep -q kernels && fail "pkg-config --libs names a kernel library"
if [ "$shared" = ON ]; then
  (cd "$work" && set -x && "$mpicc" "$here/consumer/hello.c" -o hello_c $(pkg-config --cflags --libs ringattn))
else
  (cd "$work" && set -x && "$mpicxx" -x c "$here/consumer/hello.c" -x none -o hello_c $(pkg-config --static --cflags --libs ringattn))
fi

step "C++ (and C) through find_package(ringattn)"
(set -x && "$cmake" -S "$here/consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_BUILD_TYPE=Release \
   >"$work/consumer-configure.log" 2>&1) || { cat "$work/consumer-configure.log"; fail "configuring the consumer"; }
(set -x && "$cmake" --build "$work/consumer" -j 2) >"$work/consumer-build.log" 2>&1 ||
  { cat "$work/consumer-build.log"; fail "building the consumer"; }
grep -i 'warning' "$work/consumer-build.log" && fail "the consumer build has warnings"
link="$work/consumer/CMakeFiles/hello_cxx.dir/link.txt"
if [ "$shared" = ON ] && [ -e "$link" ]; then
  grep -q kernels "$link" && { cat "$link"; fail "hello_cxx (shared) links a kernel library"; }
  echo "   hello_cxx link line: no kernel library"
fi

status=0
run() {
  local name="$1" exe="$2"
  step "${mpirun[*]} $exe"
  if ! "${mpirun[@]}" "$exe" >"$work/$name.out" 2>&1; then
    cat "$work/$name.out"; echo "check_install: $name exited non-zero" >&2; status=1; return
  fi
  cat "$work/$name.out"
  grep -q "^$3: 2 ranks: OK" "$work/$name.out" || { echo "check_install: $name did not print OK" >&2; status=1; }
}
run hello_c "$work/hello_c" hello_c
run hello_c_cmake "$work/consumer/hello_c_cmake" hello_c
run hello_cxx "$work/consumer/hello_cxx" hello_cxx
run hello_cxx_static "$work/consumer/hello_cxx_static" hello_cxx
grep -q 'bytes sent [1-9]' "$work/hello_cxx.out" || { echo "check_install: no bytes moved" >&2; status=1; }
[ $status = 0 ] || fail "a program failed"
echo "check_install: OK"

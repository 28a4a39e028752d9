# Shared set-up of ./launch/demo and ./launch/test (sourced, not run):
# installs what is missing (OpenMPI, CMake, GoogleTest, a compiler) through
# apt-get when root, or prints the exact command otherwise; then configures
# and builds with the preset that fits this machine.
#   cpu: no CUDA compiler;  gpu: nvcc and a visible GPU;  ci: nvcc, no GPU.
# The Python package's tests run from a virtual environment, build/pyenv
# (ringattn_python_env): made here when missing, with what it lacks from PyPI;
# without network or Python they are left out with the reason, the rest runs.

RINGATTN_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

ringattn_log() { printf '[ringattn] %s\n' "$*" >&2; }

ringattn_install_deps() {
  local missing=()
  command -v mpirun >/dev/null 2>&1 && command -v mpicxx >/dev/null 2>&1 || missing+=(openmpi-bin libopenmpi-dev)
  command -v cmake >/dev/null 2>&1 || missing+=(cmake)
  command -v g++ >/dev/null 2>&1 || missing+=(g++)
  command -v make >/dev/null 2>&1 || command -v ninja >/dev/null 2>&1 || missing+=(make)
  if [ ! -e /usr/include/gtest/gtest.h ] && [ ! -e /usr/local/include/gtest/gtest.h ]; then
    missing+=(libgtest-dev)
  fi
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    ringattn_log "missing: ${missing[*]}"
    ringattn_log "run as root:  apt-get update && apt-get install -y ${missing[*]}"
    return 1
  fi
  ringattn_log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null || ringattn_log "apt-get update failed (no network?); trying the install anyway"
  apt-get install -y -qq "${missing[@]}" >/dev/null || { ringattn_log "apt-get install ${missing[*]} failed"; return 1; }
}

ringattn_pick_preset() {
  if [ -n "${RINGATTN_PRESET:-}" ]; then echo "$RINGATTN_PRESET"; return; fi
  if ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then export PATH="/usr/local/cuda/bin:$PATH"; fi
  if command -v nvcc >/dev/null 2>&1; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then echo gpu; else echo ci; fi
  else
    echo cpu
  fi
}

# build/pyenv: a virtual environment that also sees the system's packages
# (--system-site-packages), so a machine that has torch, mpi4py, pybind11 and
# scikit-build-core already (the GPU machine, offline) uses its own; what is
# missing comes from PyPI; torch from PyTorch's CPU wheel index when it
# answers, else from PyPI (whose Linux wheel is the CUDA build, ~5 GB
# installed, ~70 s here; it runs on the CPU). RINGATTN_TORCH_PIP_ARGS
# replaces "torch" in that pip command (e.g. another index's CPU wheel);
# RINGATTN_PYTHON_TESTS=off leaves the Python tests out. Sets RINGATTN_PYTHON to
# the environment's interpreter, or to "" (tests not registered) after saying why.
# python3 may itself live in a virtual environment (as on the GPU machine's
# image, where `python3 -m venv --system-site-packages` reached the base
# interpreter's packages, not torch's): a .pth file in the new environment adds
# python3's own site-packages after the environment's.
ringattn_python_see_base() {  # base-python venv-dir
  local purelib
  purelib=$("$2/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') || return 1
  # site.addsitedir also runs the .pth files of those directories (editable installs).
  "$1" -c 'import site, sys
for p in dict.fromkeys(site.getsitepackages() + [p for p in sys.path if p.endswith("-packages")]):
    print("import site; site.addsitedir(%r)" % p)' >"$purelib/ringattn_base_site.pth"
}

ringattn_python_env() {
  local venv="$RINGATTN_ROOT/build/pyenv" log="$RINGATTN_ROOT/build/pyenv-setup.log" base missing pkgs=() m m_args
  RINGATTN_PYTHON=""
  if [ "${RINGATTN_PYTHON_TESTS:-on}" = off ]; then
    ringattn_log "python: RINGATTN_PYTHON_TESTS=off: Python tests left out"; return 0
  fi
  base=$(command -v python3) || { ringattn_log "python: no python3 on PATH: Python tests left out"; return 0; }
  : >"$log"
  # Debian's python3 keeps venv and its headers in packages of their own (best effort, as root).
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    local want=()
    "$base" -c 'import ensurepip' 2>/dev/null || want+=(python3-venv)
    "$base" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
      want+=(python3-dev)
    if [ ${#want[@]} -gt 0 ]; then
      ringattn_log "python: installing ${want[*]}"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${want[@]}" >>"$log" 2>&1 ||
        ringattn_log "python: apt-get install ${want[*]} failed (see $log)"
    fi
  fi
  if [ ! -x "$venv/bin/python" ]; then
    ringattn_log "python: making $venv (log: $log)"
    if ! "$base" -m venv --system-site-packages "$venv" >>"$log" 2>&1; then
      rm -rf "$venv"
      ringattn_log "python: '$base -m venv' failed (Debian: apt-get install python3-venv): Python tests left out"
      return 0
    fi
  fi
  ringattn_python_see_base "$base" "$venv" >>"$log" 2>&1 || ringattn_log "python: could not add $base's packages to $venv (see $log)"
  # Imported, not only found: a torch whose libraries are missing must not count.
  missing=$("$venv/bin/python" - torch mpi4py pybind11 scikit_build_core <<'PY' 2>>"$log"
import importlib, sys
bad = []
for m in sys.argv[1:]:
    try:
        importlib.import_module(m)
    except Exception as e:
        bad.append(m)
        print("import %s: %s" % (m, e), file=sys.stderr)
print(" ".join(bad))
PY
) || missing="torch mpi4py pybind11 scikit_build_core"
  # torch: PyTorch's CPU wheel (~200 MB) where its index answers, before PyPI's CUDA build.
  if [[ " $missing " == *" torch "* ]] && [ -z "${RINGATTN_TORCH_PIP_ARGS:-}" ] &&
     "$venv/bin/python" -m pip install --disable-pip-version-check -q --timeout 15 --retries 1 \
       --index-url https://download.pytorch.org/whl/cpu torch >>"$log" 2>&1; then
    ringattn_log "python: torch installed from PyTorch's CPU wheel index"
    missing=$(echo " $missing " | sed 's/ torch / /; s/^ *//; s/ *$//')
  fi
  if [ -n "$missing" ]; then
    for m in $missing; do
      case "$m" in
        torch) read -r -a m_args <<<"${RINGATTN_TORCH_PIP_ARGS:-torch}"; pkgs+=("${m_args[@]}") ;;
        scikit_build_core) pkgs+=(scikit-build-core) ;;
        *) pkgs+=("$m") ;;
      esac
    done
    ringattn_log "python: installing into $venv: ${pkgs[*]} numpy (from PyPI; log: $log)"
    if ! "$venv/bin/python" -m pip install --disable-pip-version-check -q "${pkgs[@]}" numpy >>"$log" 2>&1; then
      ringattn_log "python: pip install ${pkgs[*]} failed (no network? see $log): Python tests left out"
      return 0
    fi
  fi
  # pybind11 compiles against the interpreter's headers.
  if ! "$venv/bin/python" -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then
    ringattn_log "python: no Python.h for $base (Debian: apt-get install python3-dev): Python tests left out"
    return 0
  fi
  RINGATTN_PYTHON="$venv/bin/python"
}

ringattn_build() {
  local preset="$1" jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  ringattn_log "configuring (preset $preset)"
  # Always given, so that a run without the environment also unregisters the Python tests.
  (cd "$RINGATTN_ROOT" && cmake --preset "$preset" -DRINGATTN_PYTHON="${RINGATTN_PYTHON:-}" \
     >"$RINGATTN_ROOT/build/configure-$preset.log" 2>&1) || {
    cat "$RINGATTN_ROOT/build/configure-$preset.log" >&2; return 1; }
  ringattn_log "building with $jobs jobs"
  (cd "$RINGATTN_ROOT" && cmake --build --preset "$preset" -j "$jobs" 2>&1 | grep -E "error|warning: |Error" >&2; exit "${PIPESTATUS[0]}")
}

ringattn_setup() {
  ringattn_install_deps || return 1
  mkdir -p "$RINGATTN_ROOT/build"
  ringattn_python_env
  RINGATTN_PRESET_USED=$(ringattn_pick_preset)
  ringattn_build "$RINGATTN_PRESET_USED" || return 1
  export RINGATTN_BIN="$RINGATTN_ROOT/build/$RINGATTN_PRESET_USED/launch/ringattn"
}

# Shared set-up of ./launch/demo and ./launch/test (sourced, not run):
# installs what is missing (OpenMPI, CMake, GoogleTest, a compiler) through
# apt-get when root, or prints the exact command otherwise; then configures
# and builds with the preset that fits this machine.
#   cpu: no CUDA compiler;  gpu: nvcc and a visible GPU;  ci: nvcc, no GPU.

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

ringattn_build() {
  local preset="$1" jobs
  jobs=$(nproc 2>/dev/null || echo 2)
  ringattn_log "configuring (preset $preset)"
  (cd "$RINGATTN_ROOT" && cmake --preset "$preset" >"$RINGATTN_ROOT/build/configure-$preset.log" 2>&1) || {
    cat "$RINGATTN_ROOT/build/configure-$preset.log" >&2; return 1; }
  ringattn_log "building with $jobs jobs"
  (cd "$RINGATTN_ROOT" && cmake --build --preset "$preset" -j "$jobs" 2>&1 | grep -E "error|warning: |Error" >&2; exit "${PIPESTATUS[0]}")
}

ringattn_setup() {
  ringattn_install_deps || return 1
  mkdir -p "$RINGATTN_ROOT/build"
  RINGATTN_PRESET_USED=$(ringattn_pick_preset)
  ringattn_build "$RINGATTN_PRESET_USED" || return 1
  export RINGATTN_BIN="$RINGATTN_ROOT/build/$RINGATTN_PRESET_USED/launch/ringattn"
}

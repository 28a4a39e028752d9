#!/usr/bin/env bash
# One GPU call: the PyTorch op on the GPU. Builds (gpu preset), installs the
# runtime into a prefix and the package into a venv that sees the machine's
# torch (no network), runs bench/torch_op.py (correctness + speed against the
# PyTorch recipe) and the C++ bench of the same case, for the Python layer's overhead;
# then tests/python/gpu_torch_op.py (the op against the float64 reference on the
# GPU, inside torch.compile) at 1 rank and at 2 ranks over NCCL (2 GPUs where the
# machine has them, else 2 ranks on one GPU through tests/gpu/nccl_hostid.sh).
# TORCH_BENCH_ONLY=1: the benchmarks only; TORCH_GPU_TESTS_ONLY=1: the tests only.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
OUT="${OUT:-$PWD/build/gpu-logs}"; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 PATH="/usr/local/cuda/bin:$PATH"
MPI="mpirun --allow-run-as-root --oversubscribe --bind-to none"
{ [ -d build/gpu ] || cmake --preset gpu > "$OUT/configure.log" 2>&1; } && cmake --build --preset gpu -j 16 > "$OUT/build.log" 2>&1 ||
  { tail -30 "$OUT/build.log"; exit 1; }
prefix=/tmp/ringattn-prefix venv=/tmp/ringattn-venv
cmake --install build/gpu --prefix $prefix > "$OUT/install.log" 2>&1 || { tail "$OUT/install.log"; exit 1; }
python3 -m venv --system-site-packages $venv >> "$OUT/install.log" 2>&1 || exit 1
# python3 may itself be a virtual environment: see its packages too (launch/setup.sh).
. launch/setup.sh && ringattn_python_see_base python3 $venv || exit 1
{ command -v python3; python3 -c 'import sys; print(sys.prefix, sys.base_prefix); print(sys.path)'; } >> "$OUT/install.log" 2>&1
$venv/bin/python -c "import torch, mpi4py, pybind11, scikit_build_core; print('torch', torch.__version__, torch.version.cuda)" 2>&1 | tee -a "$OUT/install.log"
[ "${PIPESTATUS[0]}" = 0 ] || { echo "the venv does not see torch, mpi4py, pybind11, scikit_build_core:"; tail -5 "$OUT/install.log"; exit 1; }
CMAKE_BUILD_PARALLEL_LEVEL=16 $venv/bin/python -m pip install -v --no-build-isolation --no-deps --disable-pip-version-check ./python \
  -C cmake.define.ringattn_ROOT=$prefix -C build-dir=build/python-ext-gpu >> "$OUT/install.log" 2>&1 ||
  { tail -40 "$OUT/install.log"; exit 1; }
G=$(nvidia-smi -L 2>/dev/null | grep -c GPU)
failed=()
if [ -z "${TORCH_GPU_TESTS_ONLY:-}" ]; then  # TORCH_GPU_TESTS_ONLY=1: only gpu_torch_op.py over the machine's GPUs
  echo "[torch_op_gpu] $(date +%T) installed; bench/torch_op.py"
  (cd / && timeout 300 $MPI -np 1 $venv/bin/python "$ROOT/bench/torch_op.py" "$@") 2>&1 | tee "$OUT/torch_op.log"
  [ "${PIPESTATUS[0]}" = 0 ] || failed+=("bench/torch_op.py")
  timeout 120 $MPI -np 1 build/gpu/launch/ringattn bench --backend cuda --op backward --config longnet4 --seq 64k --heads 16 \
    --head-dim 128 --iters 10 --warmup 3 > "$OUT/cxx_fb_longnet4_64k.log" 2>&1
  grep -A1 "# config" "$OUT/cxx_fb_longnet4_64k.log" | tail -1; grep "^# forward" "$OUT/cxx_fb_longnet4_64k.log"
fi
[ -n "${TORCH_BENCH_ONLY:-}" ] && { [ ${#failed[@]} = 0 ] && echo "torch_op_gpu: OK (bench only)" && exit 0; echo "torch_op_gpu: FAILED: ${failed[*]}"; exit 1; }
# gpu_torch_op.py: np 1 and 2 on one GPU (2 ranks through nccl_hostid.sh); 2 and G ranks on G GPUs.
if [ "$G" -ge 2 ]; then wrap=""; nps="2 $([ "$G" -gt 2 ] && echo "$G")"; else wrap="$ROOT/tests/gpu/nccl_hostid.sh"; nps="1 2"; fi
for np in $nps; do
  echo "[torch_op_gpu] $(date +%T) gpu_torch_op.py np $np (GPUs: $G)"
  w=$([ "$np" -gt 1 ] && echo "$wrap")
  (cd "$ROOT/tests/python" && timeout 300 $MPI -np $np $w $venv/bin/python gpu_torch_op.py) > "$OUT/gpu_torch_op_np$np.log" 2>&1
  rc=$?; [ $rc = 0 ] || failed+=("gpu_torch_op.py np $np (rc $rc)")
  echo "np $np ($([ "$G" -ge 2 ] && echo "$np GPUs" || echo "one GPU${w:+, nccl_hostid.sh}")): $(grep -E 'gpu_torch_op: np' "$OUT/gpu_torch_op_np$np.log" | tail -1)"
done
[ ${#failed[@]} = 0 ] || { echo "torch_op_gpu: FAILED: ${failed[*]}"; exit 1; }
echo "torch_op_gpu: OK"

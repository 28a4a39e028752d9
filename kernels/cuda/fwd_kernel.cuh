// Fused dilated flash-attention forward: the kernel, composed of its roles
// (FlashAttention-3's warp-specialised, persistent structure), and its launch.
//
//   kernel_traits.cuh   tile sizes, threads and registers per role, shared-memory layout
//   tile_scheduler.cuh  which CTA takes which query block (persistent grid)
//   load.cuh            producer warpgroup: dilated-row gather of Q/K/V (affine
//                       or index-list keys) into swizzled shared memory, mbarrier ring
//   mainloop_fwd.cuh    consumer warpgroups: wgmma, masking, online softmax (softmax.cuh)
//   epilogue.cuh        O/LSE write, merging in place by the log-sum-exp rule (O staged in
//                       shared memory, 16-byte global accesses)
//   sm90_ptx.cuh        the Hopper instructions they use
//   fwd_trace.cuh       optional per-item timing trace (RINGATTN_FWD_TRACE builds only)
//
// One CTA per SM, grid = min(#SMs, work items); a CTA walks the items
// blockIdx.x, +gridDim.x, ... or takes the next untaken one from the pass's
// tile counter (tile_scheduler.cuh). The producer (setmaxnreg 40) decodes each item,
// hands it to the consumers through shared memory and streams its Q and K/V
// rows; the two consumer warpgroups (setmaxnreg 232) compute and write it.
// Atomics only hand out work items (never sum results): reruns are bit-identical.
//
// Programmatic dependent launch (FwdParams::pdl): a pass launched with pdl
// starts while the pass before it drains. Every CTA lets the next pass start
// (griddepcontrol.launch_dependents) once its producer starts an item with
// fewer than a grid's worth left after it (tile_scheduler.cuh), or has no
// more; with pdl, each consumer thread waits for the pass before
// (griddepcontrol.wait) in its first item's epilogue, before its first read
// or write of O and LSE (load.cuh, epilogue.cuh say why the rest is safe).
// Every CTA has an item (grid <= items), so the grid waits before it
// completes: a pass's completion implies that of every pass before it.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "kernels/cuda/fwd_trace.cuh"
#include "kernels/cuda/kernel_traits.cuh"
#include "kernels/cuda/launch.cuh"
#include "kernels/cuda/load.cuh"
#include "kernels/cuda/mainloop_fwd.cuh"
#include "kernels/cuda/tile_scheduler.cuh"

namespace ringattn::kern::cuda::detail {

template <typename Traits, bool kCausal>
__global__ void __launch_bounds__(Traits::kThreads, 1) fwd_kernel(const FwdParams p) {
  extern __shared__ uint8_t smem_raw[];
  const SmemLayout<Traits> sm(smem_raw);
  const int tid = threadIdx.x;
  const int total = p.num_blocks * p.batch;
  if (tid == 0) sm.init_barriers();
  __syncthreads();
#if RINGATTN_FWD_TRACE
  if (tid == 0) {
    trace_times(p, kTrHTimerStart);
    trace_header(p, kTrHSmId, smid_now());
  }
#endif
  if (tid < Traits::kProducerThreads) {
    warpgroup_reg_dealloc<Traits::kProducerRegs>();
    produce<Traits, kCausal>(p, sm, tid, total);
  } else {
    warpgroup_reg_alloc<Traits::kConsumerRegs>();
    consume<Traits, kCausal>(p, sm, tid);
  }
}

template <typename Traits, bool kCausal>
cudaError_t launch_fwd(const FwdParams& p, cudaStream_t stream) {
  auto kernel = fwd_kernel<Traits, kCausal>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       Traits::kSmemBytes);
  if (e != cudaSuccess) return e;
  int grid = 0;
  if ((e = fwd_grid_size(p, &grid)) != cudaSuccess) return e;
  return launch_kernel(kernel, dim3(unsigned(grid)), Traits::kThreads, Traits::kSmemBytes, stream, p, p.pdl);
}

// Causal becomes a template constant here (the flash-attention habit: runtime
// values turn into template constants in one place).
template <typename Elem, int D>
cudaError_t run_fwd(const FwdParams& p, cudaStream_t stream) {
  using T = FwdTraits<Elem, D>;
  return p.causal ? launch_fwd<T, true>(p, stream) : launch_fwd<T, false>(p, stream);
}

}  // namespace ringattn::kern::cuda::detail

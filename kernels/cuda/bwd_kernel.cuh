// Fused dilated flash-attention backward on Hopper wgmma: the two kernels of
// a pass (attention_bwd.hpp), composed of their parts (bwd_common.cuh: stages,
// gather, GEMM forms; bwd_dkdv.cuh; bwd_dq.cuh), and their launch. Two consumer
// warpgroups per CTA, every GEMM an
// asynchronous warpgroup MMA on the forward's 128-byte-swizzled tiles
// (kernel_traits.cuh swz(); the forward's descriptors and wgmma wrappers).
//
// Every operand of both kernels has a form the forward already uses:
//   K-major A and B from shared memory (the forward's S = Q K^T):
//     S^T = K Q^T and dP^T = V dO^T (bwd_dkdv), S = Q K^T and dP = dO V^T (bwd_dq);
//   A from registers (the forward's P), B MN-major from the same tile (the
//   forward's V): dV += P^T dO, dK += dS^T Q (bwd_dkdv), dQ += dS K (bwd_dq).
// A tile is stored once and read both ways (K-major for the score GEMMs,
// MN-major for the gradient GEMMs).
//
// bwd_dkdv: a CTA owns kBwdBlockN = 128 keys of one tile (consumer warpgroup
// w keys 64w..64w+63; dK and dV in registers), walks the tile's query blocks
// of 64 (Q, dO, LSE, Delta; three stages, mbarriers) and adds dK, dV to the
// accumulators at the end. bwd_dq: a CTA owns kBwdBlockM = 128 queries
// (consumer warpgroup w rows 64w..), walks key blocks of 64 (K, V; three
// stages) and adds dQ at the end.
//
// Warp-specialised (kBwdThreads = 384): the first warpgroup is the producer
// (setmaxnreg down): it loads each block into a ring of kBwdStages stages
// with a full and an empty mbarrier each (no CTA barrier in the loop). A
// whole block of rows r apart (r = 1, 2, 4, 8: Q/dO in bwd_dkdv, K/V of
// affine tiles in bwd_dq) is one thread's TMA boxes: a 5-D tensor map
// {D, H, r, rows / r, B} makes the dilated rows a box at any row offset
// (BwdParams::q_maps, k_maps; the 128-byte swizzle is the wgmma layout);
// -5 to -8% against the gather, whose 16 cp.async per thread per block kept
// the 24-register dK/dV producer from draining dQ in time (h200-2026-11-28s13).
// Partial blocks, other strides and index lists take the 16-byte cp.async
// gather into the same swizzled tiles (the same bytes: the same bits). The two
// consumer warpgroups (setmaxnreg up) wait on `full`, fence the async proxy
// (the forward's rule: cp.async writes through the generic proxy, wgmma reads
// through the async proxy; TMA writes need no fence), compute, and arrive on `empty`. Inside a block
// the exponentials of P run under the dP GEMM (and dS under the dV GEMM);
// with p.pingpong the two consumer warpgroups also take turns issuing GEMMs.
//
// Measured against the alternatives (bench/results/bwd-2026-11-27,
// h100-2026-11-27d): the mma.sync m16n8k16 version of the same two kernels
// was 1.4x slower; one warpgroup per CTA (two CTAs per SM, own barriers)
// 1.0-1.2x slower; two buffers with a CTA barrier per block (ncu: 38% of the
// cycles stalled at that barrier) 1.15x slower than the mbarrier ring; every
// thread loading as well as computing (no producer) 1.05x slower with the dQ
// pass and 1.24x with atomic dQ (dense 16k, H100).
//
// Programmatic dependent launch (BwdParams::pdl, pdl_dq): neither kernel is
// persistent (a CTA per item, several waves), so every CTA lets the next
// launch start (griddepcontrol.launch_dependents) as it starts: the next
// launch begins once the last wave has started, and its CTAs take the SMs
// that wave's CTAs leave. A launch made with pdl runs its whole main loop
// (which reads only what was written before the sequence) and waits for the
// launch before it (griddepcontrol.wait) in every thread that then touches
// the accumulators, just before its epilogue. A CTA with nothing to do
// returns at once; block (0, 0) waits first, so every grid waits somewhere
// and a launch's completion implies that of all launches before it.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "kernels/cuda/bwd_dkdv.cuh"
#include "kernels/cuda/bwd_dq.cuh"
#include "kernels/cuda/launch.cuh"

namespace ringattn::kern::cuda::detail {

// One launch (none for no items); `pdl` is this launch's BwdParams::pdl (the
// kernels read it from their copy of the parameters).
template <typename Kernel>
cudaError_t launch_bwd_kernel(Kernel kernel, int smem, int items, int batch, int threads, const BwdParams& p, bool pdl,
                              cudaStream_t stream, bool* launched) {
  if (items == 0) return cudaSuccess;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return e;
  BwdParams q = p;
  q.pdl = pdl;
  e = launch_kernel(kernel, dim3(unsigned(items), unsigned(batch)), threads, smem, stream, q, pdl);
  *launched |= e == cudaSuccess;
  return e;
}

template <typename Elem, int D, bool kCausal>
cudaError_t launch_bwd(const BwdParams& p, cudaStream_t stream, bool* launched) {
  bool dkdv = false;
  if (p.parts & 1) {
    cudaError_t e = launch_bwd_kernel(bwd_dkdv_kernel<Elem, D, kCausal>, DkdvSmem<D>::kBytes, p.k_items, p.batch,
                                      kBwdThreads, p, p.pdl, stream, &dkdv);
    *launched |= dkdv;
    if (e != cudaSuccess) return e;
  }
  if (!(p.parts & 2) || p.dq_atomic) return cudaSuccess;
  // Right behind this pass's dK/dV launch (pdl_dq), or, where that launched
  // nothing, first of the pass (pdl).
  return launch_bwd_kernel(bwd_dq_kernel<Elem, D, kCausal>, DqSmem<D>::kBytes, p.q_items, p.batch, kBwdThreads, p,
                           dkdv ? p.pdl || p.pdl_dq : p.pdl, stream, launched);
}

// Explicitly instantiated once per (dtype, head dim) file (bwd_<dtype>_hd<D>.cu).
template <typename Elem, int D>
cudaError_t run_bwd(const BwdParams& p, cudaStream_t stream, bool* launched) {
  return p.causal ? launch_bwd<Elem, D, true>(p, stream, launched) : launch_bwd<Elem, D, false>(p, stream, launched);
}

}  // namespace ringattn::kern::cuda::detail

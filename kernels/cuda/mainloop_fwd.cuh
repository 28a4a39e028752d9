// The consumer warpgroups of the forward: wgmma, masking, online softmax.
//
// Two consumer warpgroups of 64 query rows each. Step g of an item issues
// S_g = Q K_g^T (A and B from shared memory) and O += P_{g-1} V_{g-1} (P from
// registers, V through a transposed, MN-major descriptor) back to back, hands
// the turn to the other warpgroup once S_g is done, runs the softmax of S_g,
// then frees the stage. The two warpgroups take turns issuing their GEMMs
// (ping-pong on named barriers 1 and 2), so one's softmax runs under the
// other's GEMMs. No CTA-wide barrier after the set-up.
// cp.async writes through the generic proxy and wgmma reads through the async
// proxy: each consumer thread issues fence.proxy.async after its wait on a
// `full` barrier (the barrier's acquire makes the writes visible to it).
#pragma once
#include <cstdint>
#include "kernels/cuda/epilogue.cuh"
#include "kernels/cuda/fwd_trace.cuh"
#include "kernels/cuda/kernel_traits.cuh"
#include "kernels/cuda/softmax.cuh"

namespace ringattn::kern::cuda::detail {

// S[64 x BN] = Q[rows 64wg.., D] K^T of the key stage at sk (warpgroup wg).
template <typename Traits>
__device__ __forceinline__ void gemm_qk(float* s, uint32_t s_q, uint32_t sk, int wg) {
  using Elem = typename Traits::elem_t;
  constexpr int D = Traits::kHeadDim, BM = Traits::kBlockM, BN = Traits::kBlockN;
  const uint64_t da = gmma_desc(s_q + wg * 64 * 128, 16, 1024), db = gmma_desc(sk, 16, 1024);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma_ss<Elem, BN>(s, gmma_desc_add(da, (kk >> 2) * BM * 128 + (kk & 3) * 32),
                       gmma_desc_add(db, (kk >> 2) * BN * 128 + (kk & 3) * 32), kk > 0);
}

// O[64 x D] += P[64 x BN] V of the value stage at sv.
template <typename Traits>
__device__ __forceinline__ void gemm_pv(float* o_acc, const uint32_t (*pf)[4], uint32_t sv) {
  using Elem = typename Traits::elem_t;
  constexpr int D = Traits::kHeadDim, BN = Traits::kBlockN;
  const uint64_t db = gmma_desc(sv, BN * 128, 1024);
#pragma unroll
  for (int kk = 0; kk < BN / 16; ++kk) wgmma_rs<Elem, D>(o_acc, pf[kk], gmma_desc_add(db, kk * 16 * 128));
}

// The consumers' whole life: every item of this CTA (tid >= kProducerThreads).
template <typename Traits, bool kCausal>
__device__ __forceinline__ void consume(const FwdParams& p, const SmemLayout<Traits>& sm, int tid) {
  using Elem = typename Traits::elem_t;
  constexpr int D = Traits::kHeadDim;
  constexpr int BN = Traits::kBlockN;
  constexpr int S = Traits::kStages;
  constexpr int kSN = BN / 8;  // 8-column score blocks per thread row
  constexpr int kON = D / 8;   // 8-column output blocks
  const int ctid = tid - Traits::kProducerThreads;
  const int cw = ctid >> 5;  // consumer warp 0..7: query rows 16cw..16cw+15
  const int lane = tid & 31;
  const int wg = cw >> 2;    // consumer warpgroup 0/1: rows 64wg..
  const int my_bar = 1 + wg, other_bar = 2 - wg;
  const int r_lo = cw * 16 + (lane >> 2);
  const int qc = (lane & 3) * 2;  // column pair inside an 8-column block
  const float sl2 = p.scale * 1.4426950408889634f;
  if (wg == 1) named_arrive(1);  // warpgroup 0 issues first
#if RINGATTN_FWD_TRACE
  const bool tracer = (ctid & 127) == 0;  // this warpgroup's trace writer
  const int tr = kTrC0 + wg * kTrCEvents;
#endif

  int stage = 0;
  uint32_t phase = 0;
  for (int itc = 0;; ++itc) {
    mbar_wait(sm.q_full, itc & 1);
    fence_proxy_async();
    const WorkItem it = *sm.item;
    if (it.q_rows == 0) break;  // the producer has no more items
#if RINGATTN_FWD_TRACE
    if (tracer) trace_mark(p, itc, tr + kTrCQReady);
#endif
    const int m0 = it.m0, diag = it.diag, k_count = it.k_count, n_blocks = it.n_blocks, seg_len = it.seg_len;
    // pdl: the pass before may still be running until the first item's
    // epilogue has waited for it (epilogue.cuh); nothing before touches O or LSE.
    const bool pdl_first = p.pdl && itc == 0;
    Epilogue<Traits> epilogue(p, it, r_lo, lane, pdl_first);

    float o_acc[kON * 4];
#pragma unroll
    for (int i = 0; i < kON * 4; ++i) o_acc[i] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};
    float row_sum[2] = {0.f, 0.f};
    uint32_t pf[BN / 16][4];

    for (int blk = 0; blk < n_blocks; ++blk) {
      mbar_wait(sm.full + 8 * stage, phase);
      fence_proxy_async();
      float s[kSN * 4];
      named_sync(my_bar);
      wgmma_fence();
      gemm_qk<Traits>(s, sm.q, sm.k + stage * Traits::kKVBytes, wg);
      wgmma_commit();
      if (blk > 0) {
        gemm_pv<Traits>(o_acc, pf, sm.v + stage * Traits::kKVBytes);
        wgmma_commit();
      }
      // S_blk done (P_{blk-1} V_{blk-1} may still run): the other warpgroup's
      // turn. (A bar.arrive between the wgmma issue and this wait makes
      // ptxas serialise every wgmma of the kernel, C7514.)
      if (blk > 0) wgmma_wait<1>(); else wgmma_wait<0>();
      named_arrive(other_bar);
      if (blk == n_blocks - 1) mbar_arrive(sm.q_empty);  // this warpgroup's Q rows are read
#if RINGATTN_FWD_TRACE
      if (tracer && blk == 0) trace_mark(p, itc, tr + kTrCFirstSDone);
#endif

      // ---- softmax of S_blk (overlaps P_{blk-1} V_{blk-1}) ----
      const int n0 = blk * BN;
      // Packed segments (seg_len > 0) always mask: blocks of c keys on the diagonal.
      const bool need_mask = seg_len > 0 || n0 + BN > k_count || (kCausal && n0 + BN - 1 > diag + m0 + cw * 16);
      if (need_mask) mask_scores<kSN, kCausal>(s, n0, qc, m0 + r_lo, k_count, diag, seg_len);
      float corr[2];
      online_softmax_step<kSN>(s, row_max, row_sum, sl2, corr);
      // P_{blk-1} V_{blk-1} done: O and pf are free, so is the stage.
      // NOTE: ptxas schedules this wait right after the first FMNMX of the
      // softmax (SASS: WARPGROUP.DEPBAR.LE gsb0, 0x0), so the softmax does
      // not overlap this warpgroup's own P V; the tensor cores are kept busy
      // by the other warpgroup (ping-pong) instead. A version that really
      // overlaps it (wait, rescale and pack moved behind the next turn's
      // barriers; verified in SASS) measured 8-12% slower on H100
      // (bench/results/cuda_kernel_notes.md, run 7), so this order stays.
      wgmma_wait<0>();
      mbar_arrive(sm.empty + 8 * stage);
      rescale_rows<kON>(o_acc, corr);
      pack_probs<Elem, kSN>(s, pf);
      if (++stage == S) { stage = 0; phase ^= 1; }
    }
#if RINGATTN_FWD_TRACE
    if (tracer) trace_mark(p, itc, tr + kTrCLoopEnd);
#endif
    if (n_blocks > 0) {
      mbar_wait(sm.full + 8 * stage, phase);
      fence_proxy_async();
      named_sync(my_bar);
      wgmma_fence();
      gemm_pv<Traits>(o_acc, pf, sm.v + stage * Traits::kKVBytes);
      wgmma_commit();
      named_arrive(other_bar);
      wgmma_wait<0>();
#if RINGATTN_FWD_TRACE
      if (tracer) trace_mark(p, itc, tr + kTrCTailPvDone);
#endif
      mbar_arrive(sm.empty + 8 * stage);
      if (++stage == S) { stage = 0; phase ^= 1; }
    } else {
      mbar_arrive(sm.q_empty);
    }
    epilogue.store(p, sm, it, o_acc, row_max, row_sum, sl2, ctid, r_lo, lane, pdl_first);
#if RINGATTN_FWD_TRACE
    if (tracer) trace_mark(p, itc, tr + kTrCEpilogueDone);
#endif
  }
  if (wg == 0) named_sync(1);  // takes warpgroup 1's last arrive
#if RINGATTN_FWD_TRACE
  if (ctid == 0) trace_times(p, kTrHTimerEnd);
#endif
}

}  // namespace ringattn::kern::cuda::detail

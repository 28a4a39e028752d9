// The producer warpgroup: the dilated-row gather.
//
// Every row of Q, K and V is D contiguous elements, but consecutive rows of a
// tile are anywhere: an affine stride (q_stride / k_stride = r rows of the
// shard) or, for keys received from a peer, an index list into a packed
// block (k_stride == 0, KeySource::index). The producer copies them with
// 16-byte cp.async straight into the 128-byte-swizzled shared tiles the
// wgmma descriptors read (no staging, no TMA: a dilated row block is not a
// box). Each producer thread always moves the same 16-byte chunk column of
// every (128 / kChunks)-th row, so its swizzled offset is fixed.
//
// Per work item: Q once the consumers have released the last Q (q_empty),
// then groups g = 0..n_blocks of {K_g, V_{g-1}} into a kStages-deep ring:
// exactly what the consumers' step g reads. Each thread signals a group with
// cp.async.mbarrier.arrive.noinc on the stage's `full` barrier, so the
// producer never waits for its own loads, only for the consumers to free a
// stage (`empty`). The ring runs on across items, so the next item's Q/K/V
// arrive during this one's tail and epilogue.
//
// With FwdParams::pdl the producer runs while the pass before it on the
// stream may still be running, and never waits for it: it reads only Q, K/V,
// the tiles, the prefix (written before the sequence of passes began: the
// caller's rule) and this pass's own tile counter (zeroed before the
// sequence; every pass has its own), none of which an earlier pass writes.
#pragma once
#include <cstdint>
#include "kernels/common/tile.hpp"
#include "kernels/cuda/kernel_traits.cuh"
#include "kernels/cuda/tile_scheduler.cuh"

namespace ringattn::kern::cuda::detail {

// One producer thread's share of a gather: chunk column my_ch of rows
// my_row0, my_row0 + RS, ... of a kBlockN-row tile.
template <typename Traits>
struct RowGather {
  using Elem = typename Traits::elem_t;
  static constexpr int D = Traits::kHeadDim;
  static constexpr int BN = Traits::kBlockN;
  static constexpr int CH = Traits::kChunks;
  static constexpr int RS = Traits::kProducerThreads / CH;  // rows per pass (8 or 16), a multiple of 8:
  static constexpr int IT = BN / RS;                        // the swizzle of row + i*RS equals row's
  int my_ch, my_row0;
  uint32_t my_soff;

  __device__ __forceinline__ explicit RowGather(int tid)
      : my_ch(tid % CH), my_row0(tid / CH), my_soff(swz(my_row0, my_ch, BN)) {}

  // Query rows m0 .. m0 + kBlockM - 1 of tile t (rows >= q_rows zero-filled).
  __device__ __forceinline__ void query_block(const FwdParams& p, const Tile& t, int batch, int m0, int q_rows,
                                              uint32_t s_q) const {
    const Elem* gq = static_cast<const Elem*>(p.q) + batch * p.q_batch_stride + int64_t(t.head) * D;
    const int64_t step = int64_t(RS) * t.q_stride * p.q_row_stride;
    const Elem* src = gq + (t.q_row0 + int64_t(m0 + my_row0) * t.q_stride) * p.q_row_stride + my_ch * 8;
#pragma unroll 4
    for (int i = 0; i < IT; ++i) {
      const bool valid = my_row0 + i * RS < q_rows;
      cp_async16(s_q + my_soff + i * RS * 128, valid ? src : gq, valid);
      src += step;
    }
  }

  // Key (or value) block blk of a tile's k_count keys from g, the tensor's
  // rows of this (batch, head): rows k_row0 + j * k_stride, or, with
  // k_stride == 0, rows index[k_row0 + j]; kstep = RS rows of an affine
  // tile. Affine full blocks go unpredicated; rows past k_count are zero-filled.
  __device__ __forceinline__ void key_block(const Elem* __restrict__ g, const KeySource& src_desc, int64_t k_row0,
                                            int k_stride, int k_count, int64_t kstep, uint32_t s_base,
                                            int blk) const {
    const int n0 = blk * BN;
    const uint32_t dst = s_base + my_soff;
    if (k_stride != 0) {
      const Elem* src = g + (k_row0 + int64_t(n0 + my_row0) * k_stride) * src_desc.row_stride + my_ch * 8;
      if (n0 + BN <= k_count) {
#pragma unroll 4
        for (int i = 0; i < IT; ++i) {
          cp_async16(dst + i * RS * 128, src, true);
          src += kstep;
        }
      } else {
#pragma unroll 4
        for (int i = 0; i < IT; ++i) {
          const bool valid = n0 + my_row0 + i * RS < k_count;
          cp_async16(dst + i * RS * 128, valid ? src : g, valid);
          src += kstep;
        }
      }
    } else {
      const int32_t* idx = src_desc.index + k_row0 + n0 + my_row0;
#pragma unroll 4
      for (int i = 0; i < IT; ++i) {
        const bool valid = n0 + my_row0 + i * RS < k_count;
        const int64_t srow = valid ? int64_t(__ldg(idx + i * RS)) : 0;
        cp_async16(dst + i * RS * 128, g + srow * src_desc.row_stride + my_ch * 8, valid);
      }
    }
  }
};

// The producer's whole life: every item of this CTA (tid < kProducerThreads).
template <typename Traits, bool kCausal>
__device__ __forceinline__ void produce(const FwdParams& p, const SmemLayout<Traits>& sm, int tid, int total) {
  using Elem = typename Traits::elem_t;
  constexpr int S = Traits::kStages;
  const RowGather<Traits> gather(tid);
  const int lane = tid & 31;
  int stage = 0;
  uint32_t phase = 0;
  const int items = for_each_item<Traits, kCausal>(p, total, lane, sm.next, [&](const Tile& t, const ItemBlock& item, int itc) {
    // Q (and the work item) once the consumers are done with the last Q.
    mbar_wait(sm.q_empty, (itc & 1) ^ 1);
#if RINGATTN_FWD_TRACE
    if (tid == 0) trace_mark(p, itc, kTrPQEmptyDone);
#endif
    if (tid == 0) {
      *sm.item = item.work(t);
      mbar_arrive(sm.q_full);
    }
    gather.query_block(p, t, item.batch, item.m0, item.q_rows, sm.q);
    cp_async_mbar_arrive_noinc(sm.q_full);
    if (item.n_blocks == 0) return;

    // Then groups {K_g, V_{g-1}}, g = 0..n_blocks, as stages free up.
    const Elem* gk = static_cast<const Elem*>(p.src.k) + item.batch * p.src.batch_stride +
                     int64_t(t.head) * p.src.head_stride;
    const Elem* gv = static_cast<const Elem*>(p.src.v) + item.batch * p.src.batch_stride +
                     int64_t(t.head) * p.src.head_stride;
    const int64_t kstep = int64_t(RowGather<Traits>::RS) * t.k_stride * p.src.row_stride;
    for (int g = 0; g <= item.n_blocks; ++g) {
      mbar_wait(sm.empty + 8 * stage, phase ^ 1);
      if (g < item.n_blocks)
        gather.key_block(gk, p.src, t.k_row0, t.k_stride, t.k_count, kstep, sm.k + stage * Traits::kKVBytes, g);
      if (g > 0)
        gather.key_block(gv, p.src, t.k_row0, t.k_stride, t.k_count, kstep, sm.v + stage * Traits::kKVBytes, g - 1);
      cp_async_mbar_arrive_noinc(sm.full + 8 * stage);
      if (++stage == S) { stage = 0; phase ^= 1; }
    }
#if RINGATTN_FWD_TRACE
    if (tid == 0) trace_mark(p, itc, kTrPLastKvIssued);
#endif
  });
  // No more items (a CTA whose items all came before the last G of the pass
  // lets the next pass start only now: for_each_item).
  if (tid == 0) griddep_launch_dependents();
  // An empty item (q_rows == 0) once the consumers are done with the last Q,
  // with every arrival q_full expects.
  mbar_wait(sm.q_empty, (items & 1) ^ 1);
  if (tid == 0) {
    WorkItem done{};
    done.q_rows = 0;
    *sm.item = done;
    mbar_arrive(sm.q_full);
  }
  mbar_arrive(sm.q_full);
  cp_async_wait<0>();
#if RINGATTN_FWD_TRACE
  if (tid == 0) trace_header(p, kTrHItems, unsigned(items));
#endif
}

}  // namespace ringattn::kern::cuda::detail

// Which CTA takes which query block: the persistent tile scheduler.
//
// A pass has num_blocks work items per batch element (query blocks of
// kBlockM rows; tile i owns items [prefix[i], prefix[i+1])), so
// num_blocks * batch in all. The grid is persistent (at most one CTA per SM);
// CTA c takes item c first, then c + G, c + 2G, ... (G = gridDim.x), or, with
// a tile counter, the next item nobody has taken (G + atomicAdd). Only the
// producer decodes items (for_each_item); it hands each to the consumers as
// a WorkItem through shared memory, and then an item with q_rows == 0 that
// tells them the CTA is done.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "kernels/cuda/fwd_trace.cuh"
#include "kernels/cuda/kernel_traits.cuh"

namespace ringattn::kern::cuda::detail {

// One decoded item: a block of its tile's queries.
struct ItemBlock {
  int batch;
  int m0;        // first query of the block inside the tile
  int q_rows;    // valid query rows of the block
  int diag;      // key j visible to query i iff j <= diag + i
  int n_blocks;  // key blocks any query of the block sees (causal trims the tail)
  // What the consumers need of the item.
  __device__ __forceinline__ WorkItem work(const Tile& t) const {
    WorkItem it;
    it.q_row0 = t.q_row0; it.q_stride = t.q_stride; it.head = t.head; it.m0 = m0;
    it.q_rows = q_rows; it.n_blocks = n_blocks; it.diag = diag; it.k_count = t.k_count;
    it.batch = batch; it.seg_len = t.seg_len;
    return it;
  }
};

// Calls f(tile, block, index) for this CTA's items in order (index counts
// them from 0) and returns their count; every producer thread calls it (the
// tile search is warp-wide; a dynamic fetch is shared through `next`).
template <typename Traits, bool kCausal, typename F>
__device__ __forceinline__ int for_each_item(const FwdParams& p, int total, int lane, int* next, F&& f) {
  constexpr int BM = Traits::kBlockM;
  constexpr int BN = Traits::kBlockN;
  int itc = 0;
  int lo_prev = 0, cta_prev = 0, batch_prev = -1;
  // Item order. The planner lists tiles head-major (all segments of head 0,
  // then head 1, ...), so neighbouring items read rows far apart (64 MB per
  // tile at (16384,8) and 1M tokens). When the pass splits evenly into
  // heads x segments x blocks-per-tile, walk it segment-major instead
  // (segment, head, block): items running at the same time then read the
  // same token rows (other heads' 256-byte columns), which keeps DRAM pages
  // and TLB entries shared. Any such reshape is a bijection on the items,
  // so this is only about speed: correctness does not depend on the layout.
  const int bpt = p.num_tiles > 1 ? __ldg(p.tile_block_prefix + 1) : p.num_blocks;
  const bool reorder = p.heads > 1 && bpt > 0 && p.num_blocks % (p.heads * bpt) == 0;
  const int segs = reorder ? p.num_blocks / (p.heads * bpt) : 1;
  for (int w = blockIdx.x; w < total; ++itc) {
    const int batch = w / p.num_blocks;
    int cta = w - batch * p.num_blocks;
    if (reorder) {
      const int q = cta / bpt, blk = cta - q * bpt;
      const int sg = q / p.heads, h = q - sg * p.heads;
      cta = (h * segs + sg) * bpt + blk;
    }
    // Tile of this item: last i with prefix[i] <= cta. Items of a CTA only
    // move forward, so first one coalesced probe of the 32 tiles after the
    // last one (a single round trip instead of a ~log2(tiles)-deep chain of
    // dependent loads, which showed as a gap before each item); a binary
    // search only when the item is further ahead.
    int lo = batch == batch_prev && cta >= cta_prev ? lo_prev : 0;
    {
      const int cand = lo + 1 + lane;
      const bool le = cand < p.num_tiles && __ldg(p.tile_block_prefix + cand) <= cta;
      const unsigned m = __ballot_sync(0xffffffffu, le);
      if (m != 0xffffffffu) {
        lo += __popc(m);  // prefix is increasing: the lanes with le are 0..k-1
      } else {
        lo += 32;
        int hi = p.num_tiles - 1;
        while (lo < hi) {
          const int mid = (lo + hi + 1) >> 1;
          if (__ldg(p.tile_block_prefix + mid) <= cta) lo = mid; else hi = mid - 1;
        }
      }
    }
    lo_prev = lo;
    batch_prev = batch;
    cta_prev = cta;
    const Tile t = p.tiles[lo];
    ItemBlock it;
    it.batch = batch;
    it.m0 = (cta - __ldg(p.tile_block_prefix + lo)) * BM;
    it.q_rows = min(BM, t.q_count - it.m0);
    int64_t diag64 = t.q_idx0 - t.k_idx0;
    if (diag64 > (int64_t(1) << 30)) diag64 = int64_t(1) << 30;
    if (diag64 < -(int64_t(1) << 30)) diag64 = -(int64_t(1) << 30);
    it.diag = int(diag64);
    int n_end = t.k_count;
    if (kCausal) {
      const int64_t last = int64_t(it.diag) + it.m0 + it.q_rows;  // keys [0, last) visible to some row
      n_end = int(last < 0 ? 0 : (last < t.k_count ? last : t.k_count));
    }
    it.n_blocks = (n_end + BN - 1) / BN;
    // Fewer than G items are left after this one: in the static order this
    // is the CTA's last item, and with the counter every CTA is at about its
    // last. The next pass (launched with FwdParams::pdl) may then start once
    // every CTA has got here or exited, and its CTAs take the SMs that this
    // pass's finished CTAs leave (one CTA fills an SM's shared memory, so
    // none starts on an SM whose CTA still runs). Only a hint: the next pass
    // orders itself behind this one with griddepcontrol.wait, so where this
    // sits changes the timing, never the results. (Later than this, at the
    // counter's exhaustion, the CTA holding the pass's last item would hold
    // the launch back for most of that item while other SMs idle.)
    if (w >= total - int(gridDim.x) && threadIdx.x == 0) griddep_launch_dependents();
#if RINGATTN_FWD_TRACE
    if (threadIdx.x == 0) {
      trace_mark(p, itc, kTrPItemDecoded);
      trace_put(p, itc, kTrNBlocks, unsigned(it.n_blocks));
      trace_put(p, itc, kTrItem, unsigned(w));
    }
#endif
    f(t, it, itc);
    if (p.tile_counter == nullptr) {
      w += gridDim.x;
    } else {
      // Slot itc & 1: its readers of two items ago passed this barrier since.
      if (threadIdx.x == 0) next[itc & 1] = int(gridDim.x) + atomicAdd(p.tile_counter, 1);
      producer_sync();
      w = next[itc & 1];
    }
#if RINGATTN_FWD_TRACE
    if (threadIdx.x == 0) trace_mark(p, itc, kTrPNextClaimed);
#endif
  }
  return itc;
}

// Grid of one pass: one CTA per SM, at most one per item.
inline cudaError_t fwd_grid_size(const FwdParams& p, int* grid) {
  int dev = 0, sms = 0;
  cudaError_t e;
  if ((e = cudaGetDevice(&dev)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return e;
  const int64_t total = int64_t(p.num_blocks) * p.batch;
  if (total > INT32_MAX) return cudaErrorInvalidValue;
  if (p.max_ctas > 0 && p.max_ctas < sms) sms = p.max_ctas;
  // Causal items of a tile cost 1, 2, ... key blocks in turn (query block
  // order). CTA c takes items c, c+G, c+2G, ...: with G = 132 (a multiple of
  // 4) a CTA would only ever see query blocks of one residue mod 4 (up to 18%
  // more work than the mean at 16 blocks per tile); an odd G walks every
  // residue.
  if (p.causal && sms > 1 && (sms & 1) == 0) --sms;
  *grid = int(total < sms ? total : sms);
  return cudaSuccess;
}

}  // namespace ringattn::kern::cuda::detail

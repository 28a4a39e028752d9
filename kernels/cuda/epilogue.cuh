// The consumers' epilogue: O and LSE of a work item. Each consumer warpgroup
// stages its 64 rows of O in shared memory and copies them out with 16-byte
// accesses, so Q's shared memory is still free as soon as the last S GEMM is
// done (the staging tiles are their own: kernel_traits.cuh).
//
// Without `accumulate` it overwrites O and LSE (O = 0, LSE = -inf for a row
// that saw no key). With it, it merges into the O and LSE already there by
// the log-sum-exp rule in fp32 (SPEC.md, kernels/common/lse_merge.hpp):
//   m = max(l1, l2);  l = m + log(exp(l1 - m) + exp(l2 - m));
//   o = o1 * exp(l1 - m) / s + o2 * exp(l2 - m) / s,  s = exp(l1 - m) + exp(l2 - m),
// where a row with nothing new (l2 = -inf) is left alone and a row with
// nothing old (l1 = -inf) is overwritten without reading O.
// A thread owns rows r_lo and r_lo + 8 of its warp's 16, columns qc, qc+1 of
// every 8-column block (softmax.cuh); the quad's lane 0 writes LSE.
//
// O goes out in two roles, both played by every thread of the warpgroup:
//   fragment: the accumulator layout above; the thread computes its rows'
//     weights, scales (or merges) its O pairs in fp32, rounds them and writes
//     them into the warpgroup's staging tile with stmatrix (4 8 x 8 blocks per
//     instruction: two 8-column blocks of both its rows); the quad's lane 0
//     writes its two rows' flags (write, merge) beside the tile;
//   copy: thread t of the warpgroup keeps the 16-byte chunk t % (D / 8) of
//     rows t / (D / 8) + i * 128 / (D / 8) (a warp covers whole rows: 2 of 256
//     bytes at D = 128, 4 of 128 at D = 64) and copies them between the tile
//     and O with 16-byte global accesses (16-byte loads and stores, instead of
//     the 4-byte ones from registers that covered half a sector per row).
// Per item, on the warpgroup's own barriers (128 threads; A on 4 + wg, B and
// C on 6 + wg: sm90_ptx.cuh):
//   fragment: weights, flags, LSE    -> A (bar.red.or: does any row merge?)
//   [merging: copy: old O rows -> tile (cp.async) -> B -> fragment: ldmatrix the old pairs]
//   fragment: stmatrix the new pairs -> C -> copy: tile -> O (rows with `write`)
// (A has an id of its own so that no bar.sync phase follows a bar.red phase
// on one barrier while a warp may still be reading the reduction's result.)
// The warpgroup's next item reuses the tile and flags with no barrier more:
// the flags are written before A and read right after it (before C); the
// tile is written only after A and read before C (ldmatrix) or after it (the
// copy-out, whose values the thread's own global stores consume). So a
// thread writes the next item's flags only after passing this item's C, when
// every thread has read its flags, and the next item's tile only after
// passing the next A, which no thread reaches before its copy-out is done.
// (A second tile per warpgroup would add 32 KB at D = 128 for nothing.)
// O must be 16-byte aligned (as Q, K and V already are for cp.async); O's
// rows are D * 2 bytes apart at least (the row stride is heads x D).
// The written bits are those of the epilogue before it (4-byte stores
// straight from the registers): the same weights, fp32 products, fused
// multiply-adds and round-to-nearest packs, only moved through shared memory
// (the merge pinned as fma(o1, w1, o2 * w2), what the compiler made of
// o1 * w1 + o2 * w2 there: SASS FMUL, then FFMA with the product as addend).
//
// Programmatic dependent launch (FwdParams::pdl): O and LSE are what the
// passes before this one on the stream wrote, and the one just before may
// still be running. So in the CTA's first item (`defer`, `wait`) each consumer
// thread waits for it (griddepcontrol.wait) at the top of store(), before its first
// read or write of O and LSE in this pass, and reads the old LSE only after
// that wait (not at the item's start); later items read and write after this
// thread's wait. The old O rows are still pulled into L2 at the first item's
// start: a prefetch brings no data into registers or L1, and L2 is where
// every SM's stores land (the point of coherence), so a line prefetched
// before the earlier pass writes it is updated by that write, not left stale.
// The loads that use it come after the wait. Every consumer thread plays
// both roles, so its wait comes before all of its own global accesses.
#pragma once
#include "kernels/cuda/kernel_traits.cuh"
#include "kernels/cuda/softmax.cuh"

namespace ringattn::kern::cuda::detail {

constexpr float kLn2 = 0.6931471805599453f;  // LSE is a natural log; the softmax runs in base 2

template <typename Traits>
struct Epilogue {
  using Elem = typename Traits::elem_t;
  static constexpr int D = Traits::kHeadDim;
  static constexpr int kON = D / 8;      // 8-column blocks (fragment)
  static constexpr int kCH = D / 8;      // 16-byte chunks per row (copy)
  static constexpr int kRPP = 128 / kCH; // rows the warpgroup copies per pass: 8 (D = 128) or 16
  static constexpr int kNP = 64 / kRPP;  // passes over its 64 rows: 8 or 4
  static constexpr uint32_t kWrite = 1, kMerge = 2;  // row flags
  static_assert(kRPP % 8 == 0, "a copy thread's rows share their swizzle");
  static_assert(kNP == 4 || kNP == 8, "a copy thread's flags are one 32- or 64-bit word");
  float* lrow[2];  // LSE of each row
  float l_old[2] = {-INFINITY, -INFINITY};

  // At the item's start: when merging, fetch the old LSE now and pull the old
  // O rows into L2, so the epilogue does not wait two dependent DRAM round
  // trips while the tensor cores idle. With `defer` (pdl, the CTA's first
  // item) the LSE is read by store(), after its wait.
  __device__ __forceinline__ Epilogue(const FwdParams& p, const WorkItem& it, int r_lo, int lane, bool defer) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = r_lo + h * 8;
      const int64_t qrow = it.q_row0 + int64_t(it.m0 + row) * it.q_stride;
      lrow[h] = p.lse + it.batch * p.lse_batch_stride + it.head + qrow * p.lse_row_stride;
      if (p.accumulate && row < it.q_rows) {
        if (!defer) l_old[h] = *lrow[h];
        // The quad's 4 lanes cover the row's 2 (D = 128) or 1 (D = 64) 128-byte lines.
        const Elem* orow = static_cast<const Elem*>(p.o) + it.batch * p.q_batch_stride + int64_t(it.head) * D +
                           qrow * p.q_row_stride;
        if ((lane & 3) * 128 < D * 2) prefetch_l2(orow + (lane & 3) * 64);
      }
    }
  }

  // O = o_acc / row_sum and LSE = log(row_sum) + row_max * scale, written or
  // merged. `wait` (pdl, the CTA's first item; the constructor's `defer`):
  // wait for the pass before, then read the old LSE. Every thread of the
  // warpgroup calls it (ctid: the consumer thread index, 0..255).
  __device__ __forceinline__ void store(const FwdParams& p, const SmemLayout<Traits>& sm, const WorkItem& it,
                                        const float* o_acc, const float* row_max, float* row_sum, float sl2,
                                        int ctid, int r_lo, int lane, bool wait) {
    const int wg = ctid >> 7, t = ctid & 127, w = t >> 5;
    const int bar_a = 4 + wg, bar = 6 + wg;  // this warpgroup's epilogue barriers: A; B and C
    const uint32_t tile = sm.epi + wg * Traits::kEpiTileBytes;
    const uint32_t flags = sm.epi_flags + wg * Traits::kEpiFlagBytes;
    if (wait) {
      griddep_wait();
      if (p.accumulate) {
#pragma unroll
        for (int h = 0; h < 2; ++h)
          if (r_lo + h * 8 < it.q_rows) l_old[h] = *lrow[h];
      }
    }
    quad_allreduce_sum(row_sum);
    float w1[2], w2[2], lnew[2];
    bool write[2], merge[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = r_lo + h * 8;
      const bool valid = row < it.q_rows;
      const bool any = row_sum[h] > 0.f;
      const float inv = any ? 1.f / row_sum[h] : 0.f;
      const float l2 = any ? (row_max[h] * sl2 + __log2f(row_sum[h])) * kLn2 : -INFINITY;
      w1[h] = 0.f; w2[h] = inv; lnew[h] = l2; write[h] = valid;
      if (p.accumulate && valid) {
        if (l2 == -INFINITY) {
          write[h] = false;  // nothing new for this row: leave O and LSE
        } else {
          const float l1 = l_old[h];
          if (l1 != -INFINITY) {
            const float m = fmaxf(l1, l2);
            const float e1 = __expf(l1 - m), e2 = __expf(l2 - m);
            lnew[h] = m + __logf(e1 + e2);
            w1[h] = e1 / (e1 + e2);
            w2[h] = inv * (e2 / (e1 + e2));
          }
        }
      }
      merge[h] = write[h] && w1[h] != 0.f;  // else O = o_acc * w2, the old O unread
    }
    __syncwarp();  // every lane of the quad has read the old LSE before lane 0 writes it
    if ((lane & 3) == 0) {
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (write[h]) *lrow[h] = lnew[h];
        const int row = w * 16 + (lane >> 2) + h * 8;  // of the warpgroup's 64
        sts8(flags + (row % kRPP) * kNP + row / kRPP, (write[h] ? kWrite : 0u) | (merge[h] ? kMerge : 0u));
      }
    }
    // A: the flags are in; the tile and flags of the item before are read.
    const bool any_merge = wg_sync_or(bar_a, merge[0] || merge[1]);

    // Copy role: chunk cc of rows r0 + i * kRPP (flag byte i of the word at r0 * kNP).
    const int cc = t % kCH, r0 = t / kCH;
    const uint32_t cs = tile + epi_swz<Traits>(r0, cc);  // row r0 + i * kRPP: + i * kRPP * kEpiRowBytes
    uint32_t fl[2];  // flag byte i: byte i % 4 of fl[i / 4]
    if constexpr (kNP == 8) {
      const uint64_t f = lds64(flags + r0 * kNP);
      fl[0] = uint32_t(f);
      fl[1] = uint32_t(f >> 32);
    } else {
      fl[0] = lds32(flags + r0 * kNP);
      fl[1] = 0;
    }
    auto flag = [&](int i, uint32_t f) { return fl[i >> 2] & (f << (8 * (i & 3))); };  // nonzero: set
    Elem* const g = static_cast<Elem*>(p.o) + it.batch * p.q_batch_stride + int64_t(it.head) * D + cc * 8 +
                    (it.q_row0 + int64_t(it.m0 + 64 * wg + r0) * it.q_stride) * p.q_row_stride;
    const int64_t gstep = int64_t(kRPP) * it.q_stride * p.q_row_stride;  // elements to row r0 + (i + 1) * kRPP
    // Fragment role: lane l gives row l % 8 of matrix l / 8 of each stmatrix /
    // ldmatrix x4 k: matrix m is rows +8 (m & 1) of 8-column block 2k + (m >> 1).
    const int frow = w * 16 + ((lane >> 3) & 1) * 8 + (lane & 7);
    const int fch = lane >> 4;

    if (any_merge) {
      // The old rows into the tile (copy role), straight from global memory
      // (cp.async: no registers; the rows that do not merge zero-filled,
      // nothing read), all of them in flight at once: one round trip.
      const Elem* src = g;
#pragma unroll
      for (int i = 0; i < kNP; ++i, src += gstep) {
        const bool m = flag(i, kMerge) != 0;
        cp_async16(cs + i * kRPP * Traits::kEpiRowBytes, m ? src : static_cast<const Elem*>(p.o), m);
      }
      cp_async_wait_all();  // this thread's copies landed (the consumers issue no other cp.async)
      wg_sync(bar);         // B: and everyone's
      uint32_t prev[kON / 2][4];
#pragma unroll
      for (int k = 0; k < kON / 2; ++k) ldmatrix_x4(tile + epi_swz<Traits>(frow, 2 * k + fch), prev[k]);
#pragma unroll
      for (int k = 0; k < kON / 2; ++k) {
        uint32_t v[4];
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const int h = m & 1, ob = 2 * k + (m >> 1);
          const float a = __fmul_rn(o_acc[ob * 4 + 2 * h], w2[h]), b = __fmul_rn(o_acc[ob * 4 + 2 * h + 1], w2[h]);
          if (merge[h]) {
            const float2 x1 = unpack2<Elem>(prev[k][m]);
            v[m] = pack2<Elem>(__fmaf_rn(x1.x, w1[h], a), __fmaf_rn(x1.y, w1[h], b));
          } else {
            v[m] = pack2<Elem>(a, b);
          }
        }
        stmatrix_x4(tile + epi_swz<Traits>(frow, 2 * k + fch), v[0], v[1], v[2], v[3]);
      }
    } else {
#pragma unroll
      for (int k = 0; k < kON / 2; ++k) {
        uint32_t v[4];
#pragma unroll
        for (int m = 0; m < 4; ++m) {
          const int h = m & 1, ob = 2 * k + (m >> 1);
          v[m] = pack2<Elem>(__fmul_rn(o_acc[ob * 4 + 2 * h], w2[h]), __fmul_rn(o_acc[ob * 4 + 2 * h + 1], w2[h]));
        }
        stmatrix_x4(tile + epi_swz<Traits>(frow, 2 * k + fch), v[0], v[1], v[2], v[3]);
      }
    }
    wg_sync(bar);  // C: the tile holds the item's O rows

    // Copy out (copy role): every chunk read first, then the stores.
    uint4 v[kNP];
#pragma unroll
    for (int i = 0; i < kNP; ++i) v[i] = lds128(cs + i * kRPP * Traits::kEpiRowBytes);
    Elem* dst = g;
#pragma unroll
    for (int i = 0; i < kNP; ++i, dst += gstep) stg128_if(dst, v[i], flag(i, kWrite));
  }
};

}  // namespace ringattn::kern::cuda::detail

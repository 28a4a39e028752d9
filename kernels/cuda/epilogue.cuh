// The consumers' epilogue: O and LSE of a work item, straight from the
// accumulator registers to global memory (4-byte stores), so Q's shared
// memory is free as soon as the last S GEMM is done.
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
// The loads that use it come after the wait.
#pragma once
#include "kernels/cuda/kernel_traits.cuh"
#include "kernels/cuda/softmax.cuh"

namespace ringattn::kern::cuda::detail {

constexpr float kLn2 = 0.6931471805599453f;  // LSE is a natural log; the softmax runs in base 2

template <typename Traits>
struct Epilogue {
  using Elem = typename Traits::elem_t;
  static constexpr int D = Traits::kHeadDim;
  static constexpr int kON = D / 8;
  Elem* orow[2];   // this thread's first O element of each of its rows
  float* lrow[2];  // LSE of each row
  float l_old[2] = {-INFINITY, -INFINITY};

  // At the item's start: when merging, fetch the old LSE now and pull the old
  // O rows into L2, so the epilogue does not wait two dependent DRAM round
  // trips while the tensor cores idle. With `defer` (pdl, the CTA's first
  // item) the LSE is read by store(), after its wait.
  __device__ __forceinline__ Epilogue(const FwdParams& p, const WorkItem& it, int r_lo, int qc, int lane,
                                      bool defer) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = r_lo + h * 8;
      const int64_t qrow = it.q_row0 + int64_t(it.m0 + row) * it.q_stride;
      orow[h] = static_cast<Elem*>(p.o) + it.batch * p.q_batch_stride + int64_t(it.head) * D + qc +
                qrow * p.q_row_stride;
      lrow[h] = p.lse + it.batch * p.lse_batch_stride + it.head + qrow * p.lse_row_stride;
      if (p.accumulate && row < it.q_rows) {
        if (!defer) l_old[h] = *lrow[h];
        // The quad's 4 lanes cover the row's 2 (D = 128) or 1 (D = 64) 128-byte lines.
        if ((lane & 3) * 128 < D * 2) prefetch_l2(orow[h] - qc + (lane & 3) * 64);
      }
    }
  }

  // O = o_acc / row_sum and LSE = log(row_sum) + row_max * scale, written or
  // merged. `wait` (pdl, the CTA's first item; the constructor's `defer`):
  // wait for the pass before, then read the old LSE.
  __device__ __forceinline__ void store(const FwdParams& p, const WorkItem& it, const float* o_acc,
                                        const float* row_max, float* row_sum, float sl2, int r_lo, int lane,
                                        bool wait) {
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
    bool write[2];
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
    }
    __syncwarp();  // every lane of the quad has read the old LSE before lane 0 writes it
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      if (!write[h]) continue;
      uint32_t* dst = reinterpret_cast<uint32_t*>(orow[h]);
      if (w1[h] != 0.f) {
        // Every old pair first: one round trip for the row, not one per pair.
        uint32_t old[kON];
#pragma unroll
        for (int ob = 0; ob < kON; ++ob) old[ob] = dst[ob * 4];
#pragma unroll
        for (int ob = 0; ob < kON; ++ob) {
          const float2 x1 = unpack2<Elem>(old[ob]);
          dst[ob * 4] = pack2<Elem>(x1.x * w1[h] + o_acc[ob * 4 + 2 * h] * w2[h],
                                    x1.y * w1[h] + o_acc[ob * 4 + 2 * h + 1] * w2[h]);
        }
      } else {
#pragma unroll
        for (int ob = 0; ob < kON; ++ob)
          dst[ob * 4] = pack2<Elem>(o_acc[ob * 4 + 2 * h] * w2[h], o_acc[ob * 4 + 2 * h + 1] * w2[h]);
      }
      if ((lane & 3) == 0) *lrow[h] = lnew[h];
    }
  }
};

}  // namespace ringattn::kern::cuda::detail

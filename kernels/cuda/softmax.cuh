// The consumers' per-block math on a score block: masking and the online
// softmax (fp32, base 2 with a log2(e)-prescaled scale: sl2 = scale * log2 e).
//
// Accumulator layout of wgmma m64nNk16 (the same per-thread layout as
// mma.sync's m16n8 C fragment): a warp holds a 16 x (8*kSN) block of S;
// s[nb*4 + e] is row r_lo + 8*(e>>1), column nb*8 + qc + (e&1), with
// r_lo = 16*warp + lane/4 and qc = 2*(lane%4); each row is spread over the
// 4 lanes of a quad. O (16 x D per warp) has the same layout with kON = D/8.
#pragma once
#include <cstdint>
#include "kernels/cuda/sm90_ptx.cuh"

namespace ringattn::kern::cuda::detail {

// Keys [*lo, *hi) of a tile of packed segments (seg_len > 0) share query qi's
// segment (Tile::seg_len); every key for an ordinary tile (seg_len == 0).
__device__ __forceinline__ void segment_keys(int qi, int seg_len, int* lo, int* hi) {
  if (seg_len > 0) {
    *lo = qi / seg_len * seg_len;
    *hi = *lo + seg_len;
  } else {
    *lo = 0;
    *hi = 0x7fffffff;
  }
}

// Sets S to -inf past the tile's keys (col >= k_count), if causal above
// the diagonal (key position in I > query position: col > diag + query row),
// and for packed segments (seg_len > 0) outside the query's segment.
// (q_row_lo: the thread's first row as a query index of the tile.)
template <int kSN, bool kCausal>
__device__ __forceinline__ void mask_scores(float* s, int n0, int qc, int q_row_lo, int k_count, int diag,
                                            int seg_len) {
  int seg_lo[2], seg_hi[2];  // the thread's two rows: q_row_lo and q_row_lo + 8
  segment_keys(q_row_lo, seg_len, &seg_lo[0], &seg_hi[0]);
  segment_keys(q_row_lo + 8, seg_len, &seg_lo[1], &seg_hi[1]);
#pragma unroll
  for (int nb = 0; nb < kSN; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = n0 + nb * 8 + qc + (e & 1);
      const int h = e >> 1;
      const int qi = q_row_lo + (h << 3);
      bool ok = col < k_count && col >= seg_lo[h] && col < seg_hi[h];
      if (kCausal) ok = ok && col <= diag + qi;
      if (!ok) s[nb * 4 + e] = -INFINITY;
    }
  }
}

// One online-softmax step: updates the running row max and sum, turns s
// into unnormalised probabilities in place and returns in corr the factor
// the O accumulator must be rescaled by.
template <int kSN>
__device__ __forceinline__ void online_softmax_step(float* s, float* row_max, float* row_sum, float sl2, float* corr) {
  float mx[2] = {row_max[0], row_max[1]};
#pragma unroll
  for (int nb = 0; nb < kSN; ++nb) {
    mx[0] = fmaxf(mx[0], fmaxf(s[nb * 4 + 0], s[nb * 4 + 1]));
    mx[1] = fmaxf(mx[1], fmaxf(s[nb * 4 + 2], s[nb * 4 + 3]));
  }
  float base[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
    mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    // A row with nothing visible yet keeps max -inf: subtract 0 instead so
    // exp2(-inf - base) is 0 and never NaN.
    base[h] = mx[h] == -INFINITY ? 0.f : mx[h] * sl2;
    corr[h] = fast_exp2(row_max[h] * sl2 - base[h]);
    row_max[h] = mx[h];
    row_sum[h] *= corr[h];
  }
#pragma unroll
  for (int nb = 0; nb < kSN; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) s[nb * 4 + e] = fast_exp2(fmaf(s[nb * 4 + e], sl2, -base[e >> 1]));
    row_sum[0] += s[nb * 4 + 0] + s[nb * 4 + 1];
    row_sum[1] += s[nb * 4 + 2] + s[nb * 4 + 3];
  }
}

// O *= corr, row by row.
template <int kON>
__device__ __forceinline__ void rescale_rows(float* o_acc, const float* corr) {
#pragma unroll
  for (int ob = 0; ob < kON; ++ob) {
    o_acc[ob * 4 + 0] *= corr[0];
    o_acc[ob * 4 + 1] *= corr[0];
    o_acc[ob * 4 + 2] *= corr[1];
    o_acc[ob * 4 + 3] *= corr[1];
  }
}

// P (16-bit) as the register A operand of wgmma k16: pf[k] holds columns 16k..16k+15.
template <typename Elem, int kSN>
__device__ __forceinline__ void pack_probs(const float* s, uint32_t (*pf)[4]) {
#pragma unroll
  for (int nb = 0; nb < kSN; ++nb) {
    pf[nb >> 1][(nb & 1) * 2 + 0] = pack2<Elem>(s[nb * 4 + 0], s[nb * 4 + 1]);
    pf[nb >> 1][(nb & 1) * 2 + 1] = pack2<Elem>(s[nb * 4 + 2], s[nb * 4 + 3]);
  }
}

// Completes a row's sum over the 4 lanes of its quad.
__device__ __forceinline__ void quad_allreduce_sum(float* row_sum) {
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
  }
}

}  // namespace ringattn::kern::cuda::detail

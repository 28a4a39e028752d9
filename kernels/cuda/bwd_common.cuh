// What both backward kernels share (bwd_kernel.cuh): the stage count of the
// streamed blocks, the item -> tile lookup, key rows, the dilated-row gather
// into swizzled tiles, and the two GEMM forms on the forward's descriptors.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "kernels/cuda/attention_bwd.hpp"
#include "kernels/cuda/kernel_traits.cuh"
#include "kernels/cuda/softmax.cuh"

namespace ringattn::kern::cuda::detail {

// Threads of both kernels' CTAs: a producer warpgroup, then two consumer warpgroups.
constexpr int kBwdThreads = 384;

// Tile of item `item` of a pass: the last t with prefix[t] <= item.
__device__ __forceinline__ int find_tile(const int32_t* prefix, int num_tiles, int item) {
  // Last i with prefix[i] <= item (prefix[0] = 0, non-decreasing). A 32-ary
  // search by the whole warp: each round one coalesced probe of 32 evenly
  // spaced entries of the range left and a ballot, so ~log32(tiles) dependent
  // loads (2 at 512 tiles) instead of the binary search's ~log2 (9-10), which
  // were most of the ~2.6 us a dK/dV CTA spent before its first load
  // (bench/calls/s11_bwdtrace.sh, h200-2026-11-28s12). Every lane of the
  // warp must call it (all threads of these kernels do, before any branch).
  const int lane = threadIdx.x & 31;
  int lo = 0, n = num_tiles;  // the answer is in [lo, lo + n); prefix[lo] <= item
  while (n > 1) {
    const int step = (n + 31) >> 5;
    const bool le = lane * step < n && __ldg(prefix + lo + lane * step) <= item;
    const unsigned m = __ballot_sync(0xffffffffu, le);  // lanes 0..k (prefix does not decrease); lane 0 always
    const int k = 31 - __clz(m);
    lo += k * step;
    n = min(step, n - k * step);
  }
  return lo;
}

__device__ __forceinline__ int clamp_diag(int64_t d) {
  const int64_t lim = int64_t(1) << 30;
  return int(d > lim ? lim : (d < -lim ? -lim : d));
}

// Row of key j of tile t in its KeySource (affine, or through the index list).
__device__ __forceinline__ int64_t key_row(const Tile& t, const KeySource& src, int j) {
  return t.k_stride != 0 ? t.k_row0 + int64_t(j) * t.k_stride : int64_t(__ldg(src.index + t.k_row0 + j));
}

constexpr float kLog2e = 1.4426950408889634f;

// The rows of one (batch, head) of an item's tile: Q and dO of the local
// shard, K and V of the pass's KeySource (rows are then offsets in elements).
template <typename Elem, int D>
struct TileRows {
  const Elem *q, *dout, *k, *v;
  __device__ __forceinline__ TileRows(const BwdParams& p, const Tile& t, int batch)
      : q(static_cast<const Elem*>(p.q) + batch * p.q_batch_stride + int64_t(t.head) * D),
        dout(static_cast<const Elem*>(p.dout) + batch * p.q_batch_stride + int64_t(t.head) * D),
        k(static_cast<const Elem*>(p.src.k) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride),
        v(static_cast<const Elem*>(p.src.v) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride) {}
};

// The ring of S stages: full[st] expects full_count arrivals per fill,
// empty[st] one per thread (nt) per use. Thread 0 initialises, every thread
// passes the CTA barrier after it.
__device__ __forceinline__ void init_stage_barriers(uint32_t full, uint32_t empty, int stages, int full_count, int nt) {
  if (threadIdx.x == 0) {
    for (int st = 0; st < stages; ++st) {
      mbar_init(full + 8 * st, full_count);
      mbar_init(empty + 8 * st, nt);
    }
    fence_mbar_init();
  }
  __syncthreads();
}

// Two tensors' tiles (Q and dO, or K and V) whose rows are affine and shared:
// row i of both is at element offset row0 + i * step of g0 and g1. The same chunks as
// gather_swz, but one 64-bit add per row for both tensors instead of each
// row's index times the stride for each tensor (the dK/dV producer ran ~15
// instructions per 16-byte copy, 239 IMADs per block: bench/results/h100-2026-11-28e).
template <int D, int ROWS, int NT, typename Elem>
__device__ __forceinline__ void gather2_swz_affine(uint32_t s0, const Elem* g0, uint32_t s1, const Elem* g1,
                                                   int64_t row0, int64_t step, int valid, int tid) {
  constexpr int CH = D / 8, RS = NT / CH, IT = ROWS / RS;
  static_assert(NT % CH == 0 && RS % 8 == 0 && ROWS % RS == 0, "a thread keeps its chunk column and swizzle");
  const int ch = tid % CH, r0 = tid / CH;
  const uint32_t sw = swz(r0, ch, ROWS);
  int64_t off = row0 + int64_t(r0) * step + ch * 8;
  const int64_t inc = int64_t(RS) * step;
#pragma unroll
  for (int i = 0; i < IT; ++i) {
    const bool ok = r0 + i * RS < valid;
    cp_async16(s0 + sw + uint32_t(i * RS * 128), ok ? g0 + off : g0, ok);
    cp_async16(s1 + sw + uint32_t(i * RS * 128), ok ? g1 + off : g1, ok);
    off += inc;
  }
}

// Gathers ROWS rows (rows >= valid zero-filled) of D elements into a
// swizzled tile at s; row i is g + row_of(i) * row_stride. NT threads; each
// keeps one 16-byte chunk column (tid % CH) of rows tid / CH + k * NT / CH, a
// multiple of 8 rows apart, so its swizzled offset only moves by whole rows.
template <int D, int ROWS, int NT, typename Elem, typename RowOf>
__device__ __forceinline__ void gather_swz(uint32_t s, const Elem* g, int64_t row_stride, int valid, RowOf row_of,
                                           int tid) {
  constexpr int CH = D / 8, RS = NT / CH, IT = ROWS / RS;
  static_assert(NT % CH == 0 && RS % 8 == 0 && ROWS % RS == 0, "a thread keeps its chunk column and swizzle");
  const int ch = tid % CH, r0 = tid / CH;
  const uint32_t dst = s + swz(r0, ch, ROWS);
#pragma unroll
  for (int i = 0; i < IT; ++i) {
    const int r = r0 + i * RS;
    const bool ok = r < valid;
    const Elem* src = ok ? g + row_of(r) * row_stride + ch * 8 : g;
    cp_async16(dst + uint32_t(i * RS * 128), src, ok);
  }
}

// D[64 x N] (+)= A rows [64 a_row0, +64) of an a_rows-row tile times B^T of a
// b_rows-row tile (both K-major, k = the head dim).
template <typename Elem, int D, int N, int kARows, int kBRows>
__device__ __forceinline__ void gemm_kmajor(float* acc, uint32_t s_a, int a_row0, uint32_t s_b) {
  const uint64_t da = gmma_desc(s_a + a_row0 * 128, 16, 1024), db = gmma_desc(s_b, 16, 1024);
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk)
    wgmma_ss<Elem, N>(acc, gmma_desc_add(da, (kk >> 2) * kARows * 128 + (kk & 3) * 32),
                      gmma_desc_add(db, (kk >> 2) * kBRows * 128 + (kk & 3) * 32), kk > 0);
}

// D[64 x D] += A (registers, k = kRows rows of the tile) times the tile read MN-major.
template <typename Elem, int D, int kRows>
__device__ __forceinline__ void gemm_mnmajor(float* acc, const uint32_t (*af)[4], uint32_t s_b) {
  const uint64_t db = gmma_desc(s_b, kRows * 128, 1024);
#pragma unroll
  for (int kk = 0; kk < kRows / 16; ++kk) wgmma_rs<Elem, D>(acc, af[kk], gmma_desc_add(db, kk * 16 * 128));
}

__device__ __forceinline__ int clamp_lim(int64_t v) {
  return int(v > (1 << 20) ? (1 << 20) : (v < -(1 << 20) ? -(1 << 20) : v));
}

// One gradient accumulator: float32 (lo == null), or split: hi in the
// gradient's dtype, rounded to nearest, plus the bf16 remainder lo
// (attention_bwd.hpp). hi + lo is exact in float32; a remainder of a value
// beyond the dtype's range is dropped, so an overflow reads as inf, never NaN.
struct GradAcc {
  float* f32;
  void* hi;
  uint16_t* lo;
};

// x added to one accumulator pair, given and returned as its bits: split,
// (a, b) = the hi pair (gradient dtype) and the lo pair (bf16 remainder):
// the sum rounded to the dtype, its rounding error kept as the remainder (0
// where the rounded sum is not finite); float32, (a, b) = the two floats.
template <typename Elem>
__device__ __forceinline__ void acc_add2(bool split, uint32_t& a, uint32_t& b, float2 x) {
  if (split) {
    const float2 h = unpack2<Elem>(a), l = unpack2<__nv_bfloat16>(b);
    const float sx = (h.x + l.x) + x.x, sy = (h.y + l.y) + x.y;
    a = pack2<Elem>(sx, sy);
    const float2 r = unpack2<Elem>(a);
    b = pack2<__nv_bfloat16>(isfinite(r.x) ? sx - r.x : 0.f, isfinite(r.y) ? sy - r.y : 0.f);
  } else {
    a = __float_as_uint(__uint_as_float(a) + x.x);
    b = __float_as_uint(__uint_as_float(b) + x.y);
  }
}

// Adds val(i) (a float2) to elements idx(i) and idx(i) + 1 of acc(i), for
// i < N. Every old value is loaded before the first store, so the batch costs
// one round trip to memory, not N: the compiler may not move a load above a
// store through a pointer that can alias it, so pairwise read-modify-writes
// ran one DRAM latency each (the dK/dV epilogue's 64 per thread were a tenth
// of a short tile's time). The N pairs must not overlap.
// With `fresh` the old values are taken as 0 and not read (the first write of
// a row that no other CTA of the pass writes): 0 + 0 + x gives the same bits.
template <typename Elem, int N, typename AccOf, typename IdxOf, typename ValOf>
__device__ __forceinline__ void grad_add2_batch(AccOf acc, IdxOf idx, ValOf val, bool fresh = false) {
  uint32_t a[N], b[N];  // split: the hi and lo pairs; float32: the two floats' bits
#pragma unroll
  for (int i = 0; i < N; ++i) {
    if (fresh) {
      a[i] = b[i] = 0u;  // +0 in every form
      continue;
    }
    const GradAcc g = acc(i);
    const int64_t k = idx(i);
    if (g.lo != nullptr) {
      a[i] = *reinterpret_cast<const uint32_t*>(static_cast<const Elem*>(g.hi) + k);
      b[i] = *reinterpret_cast<const uint32_t*>(g.lo + k);
    } else {
      const float2 v = *reinterpret_cast<const float2*>(g.f32 + k);
      a[i] = __float_as_uint(v.x);
      b[i] = __float_as_uint(v.y);
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const GradAcc g = acc(i);
    const int64_t k = idx(i);
    const float2 x = val(i);
    if (g.lo != nullptr) {
      acc_add2<Elem>(true, a[i], b[i], x);
      *reinterpret_cast<uint32_t*>(static_cast<Elem*>(g.hi) + k) = a[i];
      *reinterpret_cast<uint32_t*>(g.lo + k) = b[i];
    } else {
      acc_add2<Elem>(false, a[i], b[i], x);
      *reinterpret_cast<float2*>(g.f32 + k) = make_float2(__uint_as_float(a[i]), __uint_as_float(b[i]));
    }
  }
}

// The epilogue of bwd_dkdv: adds 4 consecutive floats from shared memory
// (src + i * stride) to elements idx[i] .. idx[i] + 3 of acc, for the N rows
// with idx[i] >= 0 (a thread's 16-byte chunk of N rows of dK or dV), as
// grad_add2_batch does pairs: every old value loaded first, `fresh` as there.
// idx[i] is a multiple of 4.
template <typename Elem, int N>
__device__ __forceinline__ void grad_add4_rows(const GradAcc& g, const int64_t (&idx)[N], const float* src, int stride,
                                               bool fresh) {
  uint4 o[N];  // float32: the four old values; split: the hi (x, y) and lo (z, w) pairs
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int64_t k = idx[i];
    o[i] = make_uint4(0u, 0u, 0u, 0u);
    if (fresh || k < 0) continue;
    if (g.lo != nullptr) {
      const uint2 h = *reinterpret_cast<const uint2*>(static_cast<const Elem*>(g.hi) + k);
      const uint2 l = *reinterpret_cast<const uint2*>(g.lo + k);
      o[i] = make_uint4(h.x, h.y, l.x, l.y);
    } else {
      o[i] = *reinterpret_cast<const uint4*>(g.f32 + k);
    }
  }
#pragma unroll
  for (int i = 0; i < N; ++i) {
    const int64_t k = idx[i];
    if (k < 0) continue;
    const float4 x = *reinterpret_cast<const float4*>(src + i * stride);
    uint4 v = o[i];
    if (g.lo != nullptr) {
      acc_add2<Elem>(true, v.x, v.z, make_float2(x.x, x.y));
      acc_add2<Elem>(true, v.y, v.w, make_float2(x.z, x.w));
      *reinterpret_cast<uint2*>(static_cast<Elem*>(g.hi) + k) = make_uint2(v.x, v.y);
      *reinterpret_cast<uint2*>(g.lo + k) = make_uint2(v.z, v.w);
    } else {
      acc_add2<Elem>(false, v.x, v.y, make_float2(x.x, x.y));
      acc_add2<Elem>(false, v.z, v.w, make_float2(x.z, x.w));
      *reinterpret_cast<uint4*>(g.f32 + k) = v;
    }
  }
}

}  // namespace ringattn::kern::cuda::detail

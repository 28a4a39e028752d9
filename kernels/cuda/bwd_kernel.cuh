// Fused dilated flash-attention backward: the two kernels of a pass
// (attention_bwd.hpp) on mma.sync m16n8k16 tensor-core instructions.
//
// Shared tiles are row-major [rows][D + 8] 16-bit elements: the 16-byte pad
// makes the row pitch an odd number of 16-byte units, so the 8 row addresses
// of every ldmatrix phase hit 8 distinct bank groups. Rows are gathered with
// 16-byte cp.async (zero-filled past the tile), like the forward's producer:
// a dilated row block is not a box.
//
// Fragment recipes (per warp; g = lane / 4, c = lane % 4):
//   A (16 x 16, row-major in smem):       ldmatrix.x4, lane -> row (lane & 15), col 8 (lane >> 4)
//   B from Bt[n][k] (k contiguous):       ldmatrix.x4 -> two n8 tiles of k16
//   B from B[k][n] (n contiguous):        ldmatrix.x4.trans -> two n8 tiles of k16
//   C of S (16 x 64) -> A of the next GEMM: 8-column C tiles 2kk, 2kk+1 are
//   A's k16 block kk (flash-attention's register reuse).
//
// bwd_dkdv (4 warps, 64 keys, 2 CTAs per SM): warp w owns keys 16w..16w+15
// and computes S^T = K Q^T and dP^T = V dO^T for a block of 64 queries, then
// P^T, dS^T, and dV += P^T dO, dK += dS^T Q in registers; query blocks are
// double-buffered. bwd_dq (8 warps, 128 queries): warp w owns queries
// 16w..16w+15, computes S = Q K^T, dP = dO V^T per block of 64 keys (double
// buffered) and dQ += dS K.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "kernels/cuda/attention_bwd.hpp"
#include "kernels/cuda/sm90_ptx.cuh"

namespace ringattn::kern::cuda::detail {

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }

__device__ __forceinline__ void ldsm4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldsm4_t(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}

template <typename Elem>
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1);
template <>
__device__ __forceinline__ void mma16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
template <>
__device__ __forceinline__ void mma16816<__half>(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
               : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
               : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

template <int D>
struct BwdTile {
  static constexpr int kPitch = D + 8;                 // elements per smem row
  static constexpr int kRowBytes = kPitch * 2;
  // Per-lane ldmatrix addresses (see the recipes above).
  __device__ static __forceinline__ uint32_t a_addr(uint32_t base, int r0, int k0, int lane) {
    return base + uint32_t(((r0 + (lane & 15)) * kPitch + k0 + ((lane >> 4) << 3)) * 2);
  }
  __device__ static __forceinline__ uint32_t bt_addr(uint32_t base, int n0, int k0, int lane) {
    return base + uint32_t(((n0 + (lane & 7) + ((lane >> 4) << 3)) * kPitch + k0 + (((lane >> 3) & 1) << 3)) * 2);
  }
  __device__ static __forceinline__ uint32_t b_addr(uint32_t base, int k0, int n0, int lane) {
    return base + uint32_t(((k0 + (lane & 7) + (((lane >> 3) & 1) << 3)) * kPitch + n0 + ((lane >> 4) << 3)) * 2);
  }
  // Gathers `rows` rows (rows >= valid zero-filled) into a tile at s; row i
  // of the tile is g + row_of(i) * row_stride. nt threads, thread tid.
  template <typename Elem, typename RowOf>
  __device__ static __forceinline__ void gather(uint32_t s, const Elem* g, int64_t row_stride, int rows, int valid,
                                                RowOf row_of, int tid, int nt) {
    constexpr int CH = D / 8;
    for (int c = tid; c < rows * CH; c += nt) {
      const int i = c / CH, ch = c - (c / CH) * CH;
      const bool ok = i < valid;
      const Elem* src = ok ? g + row_of(i) * row_stride + ch * 8 : g;
      cp_async16(s + uint32_t((i * kPitch + ch * 8) * 2), src, ok);
    }
  }
};

// Tile of item `item` of a pass: the last t with prefix[t] <= item.
__device__ __forceinline__ int find_tile(const int32_t* prefix, int num_tiles, int item) {
  int lo = 0, hi = num_tiles - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (__ldg(prefix + mid) <= item) lo = mid; else hi = mid - 1;
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

// ---------------------------------------------------------------- dK / dV --

template <int D>
struct DkdvSmem {
  static constexpr int BN = 64, BQ = 64;
  static constexpr int kTile = BN * BwdTile<D>::kRowBytes;  // also BQ rows
  // K | V | Q[2] | dO[2] | lse2[2][BQ] | delta[2][BQ]
  static constexpr int kBytes = 6 * kTile + 4 * BQ * 4;
};

template <typename Elem, int D, bool kCausal>
__global__ void __launch_bounds__(128, 2) bwd_dkdv_kernel(const BwdParams p) {
  using T = BwdTile<D>;
  constexpr int BN = DkdvSmem<D>::BN, BQ = DkdvSmem<D>::BQ, NT = 128;
  constexpr int ND = D / 8;  // 8-column output tiles
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t s_k = smem_u32(smem), s_v = s_k + DkdvSmem<D>::kTile;
  const uint32_t s_q0 = s_v + DkdvSmem<D>::kTile, s_do0 = s_q0 + 2 * DkdvSmem<D>::kTile;
  float* s_lse = reinterpret_cast<float*>(smem + 6 * DkdvSmem<D>::kTile);  // [2][BQ], log2 units
  float* s_delta = s_lse + 2 * BQ;                                           // [2][BQ]

  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  // An item of kBwdBlockN keys is two CTAs of BN = 64 here.
  constexpr int kSplit = kBwdBlockN / BN;
  const int item = blockIdx.x / kSplit, batch = blockIdx.y;
  const int ti = find_tile(p.k_prefix, p.num_tiles, item);
  const Tile t = p.tiles[ti];
  const int n0 = (item - __ldg(p.k_prefix + ti)) * kBwdBlockN + (blockIdx.x % kSplit) * BN;
  if (n0 >= t.k_count) return;
  const int kn = min(BN, t.k_count - n0);
  const int diag = clamp_diag(t.q_idx0 - t.k_idx0);  // key j visible to query i iff j <= diag + i
  int m_lo = 0;
  if (kCausal) {
    const int64_t first = int64_t(n0) - diag;  // first query that sees key n0
    m_lo = first <= 0 ? 0 : (first >= t.q_count ? t.q_count : int(first));
    m_lo -= m_lo % BQ;
  }
  if (m_lo >= t.q_count) return;  // no query sees these keys: nothing to add

  const Elem* gq = static_cast<const Elem*>(p.q) + batch * p.q_batch_stride + int64_t(t.head) * D;
  const Elem* gdo = static_cast<const Elem*>(p.dout) + batch * p.q_batch_stride + int64_t(t.head) * D;
  const Elem* gk = static_cast<const Elem*>(p.src.k) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  const Elem* gv = static_cast<const Elem*>(p.src.v) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  const float* glse = p.lse + batch * p.lse_batch_stride + t.head;
  const float* gdelta = p.delta + batch * p.lse_batch_stride + t.head;
  auto krow = [&](int i) { return key_row(t, p.src, n0 + i); };
  T::gather(s_k, gk, p.src.row_stride, BN, kn, krow, tid, NT);
  T::gather(s_v, gv, p.src.row_stride, BN, kn, krow, tid, NT);
  auto load_queries = [&](int m0, int buf) {
    const int valid = min(BQ, t.q_count - m0);
    auto qrow = [&](int i) { return t.q_row0 + int64_t(m0 + i) * t.q_stride; };
    T::gather(s_q0 + buf * DkdvSmem<D>::kTile, gq, p.q_row_stride, BQ, valid, qrow, tid, NT);
    T::gather(s_do0 + buf * DkdvSmem<D>::kTile, gdo, p.q_row_stride, BQ, valid, qrow, tid, NT);
    if (tid < BQ) {
      // Rows past the tile (and, defensively, rows no branch selected) get
      // P = 0: exp2(x - inf).
      float l = INFINITY, dl = 0.f;
      if (tid < valid) {
        const int64_t off = qrow(tid) * p.lse_row_stride;
        const float v = __ldg(glse + off);
        if (v > -INFINITY) { l = v * kLog2e; dl = __ldg(gdelta + off); }
      }
      s_lse[buf * BQ + tid] = l;
      s_delta[buf * BQ + tid] = dl;
    }
  };
  load_queries(m_lo, 0);
  cp_async_commit();

  const float sl2 = p.scale * kLog2e;
  float dk[ND][4], dv[ND][4];
#pragma unroll
  for (int j = 0; j < ND; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[j][e] = dv[j][e] = 0.f;

  int buf = 0;
  for (int m0 = m_lo; m0 < t.q_count; m0 += BQ, buf ^= 1) {
    if (m0 + BQ < t.q_count) {
      load_queries(m0 + BQ, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint32_t s_q = s_q0 + buf * DkdvSmem<D>::kTile, s_do = s_do0 + buf * DkdvSmem<D>::kTile;
    // S^T = K Q^T, dP^T = V dO^T: 16 keys x 64 queries per warp.
    float st[8][4], dpt[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[j][e] = dpt[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t ak[4], av[4];
      ldsm4(ak, T::a_addr(s_k, 16 * w, 16 * kk, lane));
      ldsm4(av, T::a_addr(s_v, 16 * w, 16 * kk, lane));
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        ldsm4(b, T::bt_addr(s_q, 16 * np, 16 * kk, lane));
        mma16816<Elem>(st[2 * np], ak, b[0], b[1]);
        mma16816<Elem>(st[2 * np + 1], ak, b[2], b[3]);
        ldsm4(b, T::bt_addr(s_do, 16 * np, 16 * kk, lane));
        mma16816<Elem>(dpt[2 * np], av, b[0], b[1]);
        mma16816<Elem>(dpt[2 * np + 1], av, b[2], b[3]);
      }
    }
    // P^T and dS^T. Key kr (of the block) is visible to query qc iff
    // n0 + kr < k_count and (causal) n0 + kr <= diag + m0 + qc.
    const int64_t lim64 = int64_t(diag) + m0 - n0;
    const int lim = int(lim64 > (1 << 20) ? (1 << 20) : (lim64 < -(1 << 20) ? -(1 << 20) : lim64));
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kr = 16 * w + g + ((e >> 1) << 3);
        const int qc = 8 * j + c2 + (e & 1);
        const bool ok = kr < kn && (!kCausal || kr <= lim + qc);
        const float pr = ok ? fast_exp2(st[j][e] * sl2 - s_lse[buf * BQ + qc]) : 0.f;
        dpt[j][e] = pr * (dpt[j][e] - s_delta[buf * BQ + qc]);
        st[j][e] = pr;
      }
    // dV += P^T dO, dK += dS^T Q (k = the 64 queries).
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) {
      uint32_t ap[4], ads[4];
      ap[0] = pack2<Elem>(st[2 * kq][0], st[2 * kq][1]);
      ap[1] = pack2<Elem>(st[2 * kq][2], st[2 * kq][3]);
      ap[2] = pack2<Elem>(st[2 * kq + 1][0], st[2 * kq + 1][1]);
      ap[3] = pack2<Elem>(st[2 * kq + 1][2], st[2 * kq + 1][3]);
      ads[0] = pack2<Elem>(dpt[2 * kq][0], dpt[2 * kq][1]);
      ads[1] = pack2<Elem>(dpt[2 * kq][2], dpt[2 * kq][3]);
      ads[2] = pack2<Elem>(dpt[2 * kq + 1][0], dpt[2 * kq + 1][1]);
      ads[3] = pack2<Elem>(dpt[2 * kq + 1][2], dpt[2 * kq + 1][3]);
#pragma unroll
      for (int dp = 0; dp < D / 16; ++dp) {
        uint32_t b[4];
        ldsm4_t(b, T::b_addr(s_do, 16 * kq, 16 * dp, lane));
        mma16816<Elem>(dv[2 * dp], ap, b[0], b[1]);
        mma16816<Elem>(dv[2 * dp + 1], ap, b[2], b[3]);
        ldsm4_t(b, T::b_addr(s_q, 16 * kq, 16 * dp, lane));
        mma16816<Elem>(dk[2 * dp], ads, b[0], b[1]);
        mma16816<Elem>(dk[2 * dp + 1], ads, b[2], b[3]);
      }
    }
    __syncthreads();  // the next iteration's loads overwrite this buffer's twin after it
  }

  // This CTA owns its keys' accumulator rows in this pass: read, add, write.
  float* dka = p.dk_acc + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  float* dva = p.dv_acc + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
#pragma unroll
  for (int half = 0; half < 2; ++half) {
    const int kr = 16 * w + g + 8 * half;
    if (kr >= kn) continue;
    const int64_t base = key_row(t, p.src, n0 + kr) * p.src.row_stride;
#pragma unroll
    for (int j = 0; j < ND; ++j) {
      float2* a = reinterpret_cast<float2*>(dka + base + 8 * j + c2);
      float2* b = reinterpret_cast<float2*>(dva + base + 8 * j + c2);
      float2 x = *a, y = *b;
      x.x += p.scale * dk[j][2 * half];
      x.y += p.scale * dk[j][2 * half + 1];
      y.x += dv[j][2 * half];
      y.y += dv[j][2 * half + 1];
      *a = x;
      *b = y;
    }
  }
}

// --------------------------------------------------------------------- dQ --

template <int D>
struct DqSmem {
  static constexpr int BM = kBwdBlockM, BK = 64;
  static constexpr int kQTile = BM * BwdTile<D>::kRowBytes;
  static constexpr int kKTile = BK * BwdTile<D>::kRowBytes;
  // Q | dO | K[2] | V[2]
  static constexpr int kBytes = 2 * kQTile + 4 * kKTile;
};

template <typename Elem, int D, bool kCausal>
__global__ void __launch_bounds__(256, 1) bwd_dq_kernel(const BwdParams p) {
  using T = BwdTile<D>;
  constexpr int BM = kBwdBlockM, BK = DqSmem<D>::BK, NT = 256;
  constexpr int ND = D / 8;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t s_q = smem_u32(smem), s_do = s_q + DqSmem<D>::kQTile;
  const uint32_t s_k0 = s_do + DqSmem<D>::kQTile, s_v0 = s_k0 + 2 * DqSmem<D>::kKTile;

  const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
  const int g = lane >> 2, c2 = (lane & 3) * 2;
  const int item = blockIdx.x, batch = blockIdx.y;
  const int ti = find_tile(p.q_prefix, p.num_tiles, item);
  const Tile t = p.tiles[ti];
  const int m0 = (item - __ldg(p.q_prefix + ti)) * BM;
  const int q_rows = min(BM, t.q_count - m0);
  const int diag = clamp_diag(t.q_idx0 - t.k_idx0);
  int n_end = t.k_count;
  if (kCausal) {
    const int64_t last = int64_t(diag) + m0 + q_rows;  // keys [0, last) visible to some row
    n_end = int(last < 0 ? 0 : (last < t.k_count ? last : t.k_count));
  }
  if (n_end == 0) return;  // no key visible: dQ gets nothing from this tile

  const Elem* gq = static_cast<const Elem*>(p.q) + batch * p.q_batch_stride + int64_t(t.head) * D;
  const Elem* gdo = static_cast<const Elem*>(p.dout) + batch * p.q_batch_stride + int64_t(t.head) * D;
  const Elem* gk = static_cast<const Elem*>(p.src.k) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  const Elem* gv = static_cast<const Elem*>(p.src.v) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  auto qrow = [&](int i) { return t.q_row0 + int64_t(m0 + i) * t.q_stride; };
  T::gather(s_q, gq, p.q_row_stride, BM, q_rows, qrow, tid, NT);
  T::gather(s_do, gdo, p.q_row_stride, BM, q_rows, qrow, tid, NT);
  auto load_keys = [&](int n0, int buf) {
    const int valid = min(BK, t.k_count - n0);
    auto krow = [&](int i) { return key_row(t, p.src, n0 + i); };
    T::gather(s_k0 + buf * DqSmem<D>::kKTile, gk, p.src.row_stride, BK, valid, krow, tid, NT);
    T::gather(s_v0 + buf * DqSmem<D>::kKTile, gv, p.src.row_stride, BK, valid, krow, tid, NT);
  };
  load_keys(0, 0);
  cp_async_commit();

  // LSE (log2 units) and Delta of this thread's two rows.
  float lse2[2], dlt[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 16 * w + g + 8 * h;
    lse2[h] = INFINITY;
    dlt[h] = 0.f;
    if (r < q_rows) {
      const int64_t off = batch * p.lse_batch_stride + qrow(r) * p.lse_row_stride + t.head;
      const float v = __ldg(p.lse + off);
      if (v > -INFINITY) { lse2[h] = v * kLog2e; dlt[h] = __ldg(p.delta + off); }
    }
  }
  const float sl2 = p.scale * kLog2e;
  float dq[ND][4];
#pragma unroll
  for (int j = 0; j < ND; ++j)
#pragma unroll
    for (int e = 0; e < 4; ++e) dq[j][e] = 0.f;

  int buf = 0;
  for (int n0 = 0; n0 < n_end; n0 += BK, buf ^= 1) {
    if (n0 + BK < n_end) {
      load_keys(n0 + BK, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const uint32_t s_k = s_k0 + buf * DqSmem<D>::kKTile, s_v = s_v0 + buf * DqSmem<D>::kKTile;
    float s[8][4], dp[8][4];
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[j][e] = dp[j][e] = 0.f;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      uint32_t aq[4], ado[4];
      ldsm4(aq, T::a_addr(s_q, 16 * w, 16 * kk, lane));
      ldsm4(ado, T::a_addr(s_do, 16 * w, 16 * kk, lane));
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t b[4];
        ldsm4(b, T::bt_addr(s_k, 16 * np, 16 * kk, lane));
        mma16816<Elem>(s[2 * np], aq, b[0], b[1]);
        mma16816<Elem>(s[2 * np + 1], aq, b[2], b[3]);
        ldsm4(b, T::bt_addr(s_v, 16 * np, 16 * kk, lane));
        mma16816<Elem>(dp[2 * np], ado, b[0], b[1]);
        mma16816<Elem>(dp[2 * np + 1], ado, b[2], b[3]);
      }
    }
    // dS: key kc visible to row r iff n0 + kc < k_count and (causal) n0 + kc <= diag + m0 + r.
    const int kvalid = t.k_count - n0;
    const int64_t lim64 = int64_t(diag) + m0 - n0;
    const int lim = int(lim64 > (1 << 20) ? (1 << 20) : (lim64 < -(1 << 20) ? -(1 << 20) : lim64));
#pragma unroll
    for (int j = 0; j < 8; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1;
        const int r = 16 * w + g + 8 * h;
        const int kc = 8 * j + c2 + (e & 1);
        const bool ok = kc < kvalid && (!kCausal || kc <= lim + r);
        const float pr = ok ? fast_exp2(s[j][e] * sl2 - lse2[h]) : 0.f;
        dp[j][e] = pr * (dp[j][e] - dlt[h]);
      }
    // dQ += dS K (k = the 64 keys).
#pragma unroll
    for (int kq = 0; kq < 4; ++kq) {
      uint32_t ads[4];
      ads[0] = pack2<Elem>(dp[2 * kq][0], dp[2 * kq][1]);
      ads[1] = pack2<Elem>(dp[2 * kq][2], dp[2 * kq][3]);
      ads[2] = pack2<Elem>(dp[2 * kq + 1][0], dp[2 * kq + 1][1]);
      ads[3] = pack2<Elem>(dp[2 * kq + 1][2], dp[2 * kq + 1][3]);
#pragma unroll
      for (int d2 = 0; d2 < D / 16; ++d2) {
        uint32_t b[4];
        ldsm4_t(b, T::b_addr(s_k, 16 * kq, 16 * d2, lane));
        mma16816<Elem>(dq[2 * d2], ads, b[0], b[1]);
        mma16816<Elem>(dq[2 * d2 + 1], ads, b[2], b[3]);
      }
    }
    __syncthreads();
  }

  float* dqa = p.dq_acc + batch * p.q_batch_stride + int64_t(t.head) * D;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 16 * w + g + 8 * h;
    if (r >= q_rows) continue;
    const int64_t base = qrow(r) * p.q_row_stride;
#pragma unroll
    for (int j = 0; j < ND; ++j) {
      float2* a = reinterpret_cast<float2*>(dqa + base + 8 * j + c2);
      float2 x = *a;
      x.x += p.scale * dq[j][2 * h];
      x.y += p.scale * dq[j][2 * h + 1];
      *a = x;
    }
  }
}

template <typename Kernel>
cudaError_t launch_bwd_kernel(Kernel kernel, int smem, int items, int batch, int threads, const BwdParams& p,
                              cudaStream_t stream) {
  if (items == 0) return cudaSuccess;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (e != cudaSuccess) return e;
  kernel<<<dim3(unsigned(items), unsigned(batch)), threads, smem, stream>>>(p);
  return cudaGetLastError();
}

template <typename Elem, int D, bool kCausal>
cudaError_t launch_bwd_causal(const BwdParams& p, cudaStream_t stream) {
  if (p.parts & 1) {
    cudaError_t e = launch_bwd_kernel(bwd_dkdv_kernel<Elem, D, kCausal>, DkdvSmem<D>::kBytes,
                                      p.k_items * (kBwdBlockN / DkdvSmem<D>::BN), p.batch, 128, p, stream);
    if (e != cudaSuccess) return e;
  }
  if (!(p.parts & 2)) return cudaSuccess;
  return launch_bwd_kernel(bwd_dq_kernel<Elem, D, kCausal>, DqSmem<D>::kBytes, p.q_items, p.batch, 256, p, stream);
}

}  // namespace ringattn::kern::cuda::detail

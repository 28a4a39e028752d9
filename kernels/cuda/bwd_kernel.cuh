// Fused dilated flash-attention backward on Hopper wgmma: the two kernels of
// a pass (attention_bwd.hpp), two consumer warpgroups per CTA, every GEMM an
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
// bwd_dkdv: a CTA owns kBwdBlockN = 128 keys of one tile (warpgroup w keys
// 64w..64w+63; dK and dV in registers), walks the tile's query blocks of 64
// (Q, dO, LSE, Delta; three stages, mbarriers) and adds dK, dV to the
// accumulators at the end. bwd_dq: a CTA owns kBwdBlockM = 128 queries
// (warpgroup w rows 64w..), walks key blocks of 64 (K, V; three stages)
// and adds dQ at the end.
//
// Loads: every thread gathers with 16-byte cp.async into the swizzled tiles
// (the dilated rows are not a box), two blocks ahead of the math, into a
// ring of kBwdStages stages with a full and an empty mbarrier each (no CTA
// barrier in the loop); after its wait on `full` each thread fences the
// async proxy (the forward's rule: cp.async writes through the generic
// proxy, wgmma reads through the async proxy).
//
// Measured against the alternatives (bench/results/bwd-2026-11-27): the
// mma.sync m16n8k16 version of the same two kernels was 1.4x slower; one
// warpgroup per CTA (two CTAs per SM, own barriers) 1.0-1.2x slower; two
// buffers with a CTA barrier per block (ncu: 38% of the cycles stalled at
// that barrier) 1.15x slower than this ring (dense 16k, H200).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "kernels/cuda/attention_bwd.hpp"
#include "kernels/cuda/kernel_traits.cuh"
#include "kernels/cuda/softmax.cuh"

namespace ringattn::kern::cuda::detail {

// Stages of the streamed blocks (Q/dO/LSE/Delta in bwd_dkdv, K/V in bwd_dq):
// a block is refilled once every thread is done with the one S blocks
// before it, two blocks ahead of its use.
constexpr int kBwdStages = 3;

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
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    const uint32_t a = s_a + (kk >> 2) * kARows * 128 + a_row0 * 128 + (kk & 3) * 32;
    const uint32_t b = s_b + (kk >> 2) * kBRows * 128 + (kk & 3) * 32;
    wgmma_ss<Elem, N>(acc, gmma_desc(a, 16, 1024), gmma_desc(b, 16, 1024), kk > 0);
  }
}

// D[64 x D] += A (registers, k = kRows rows of the tile) times the tile read MN-major.
template <typename Elem, int D, int kRows>
__device__ __forceinline__ void gemm_mnmajor(float* acc, const uint32_t (*af)[4], uint32_t s_b) {
#pragma unroll
  for (int kk = 0; kk < kRows / 16; ++kk) wgmma_rs<Elem, D>(acc, af[kk], gmma_desc(s_b + kk * 16 * 128, kRows * 128, 1024));
}

__device__ __forceinline__ int clamp_lim(int64_t v) {
  return int(v > (1 << 20) ? (1 << 20) : (v < -(1 << 20) ? -(1 << 20) : v));
}

// ---------------------------------------------------------------- dK / dV --

template <int D>
struct DkdvSmem {
  static constexpr int BN = kBwdBlockN, BQ = 64;
  static constexpr int kKV = BN * D * 2;  // a K or V tile
  static constexpr int kQ = BQ * D * 2;   // a Q or dO tile (per stage)
  static constexpr int S = kBwdStages;
  // K | V | Q[S] | dO[S] | lse2[S][BQ] | delta[S][BQ] | full[S] | empty[S], + alignment to the swizzle atom
  static constexpr int kFloatsOff = 2 * kKV + 2 * S * kQ;
  static constexpr int kBarOff = kFloatsOff + 2 * S * BQ * 4;
  // dq_atomic: two dS^T tiles [BN keys][BQ queries] after the barriers (1024-aligned).
  static constexpr int kDsOff = (kBarOff + 2 * S * 8 + 1023) / 1024 * 1024;
  static constexpr int kDs = BN * BQ * 2;
  static constexpr int kBytes = kDsOff + 2 * kDs + 1024;
  static_assert(kBytes <= 227 * 1024, "fits the sm_90 shared memory");
};

template <typename Elem, int D, bool kCausal>
__global__ void __launch_bounds__(256, 1) bwd_dkdv_kernel(const BwdParams p) {
  using L = DkdvSmem<D>;
  constexpr int BN = L::BN, BQ = L::BQ, NT = 256;
  constexpr int kSN = BQ / 8, kON = D / 8;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t raw = smem_u32(smem);
  const uint32_t pad = ((raw + 1023u) & ~1023u) - raw;
  constexpr int S = L::S;
  const uint32_t s_k = raw + pad, s_v = s_k + L::kKV, s_q0 = s_v + L::kKV, s_do0 = s_q0 + S * L::kQ;
  float* s_lse = reinterpret_cast<float*>(smem + pad + L::kFloatsOff);  // [S][BQ], log2 units
  float* s_delta = s_lse + S * BQ;
  const uint32_t full = s_k + L::kBarOff, empty = full + 8 * S;
  const uint32_t s_ds0 = s_k + L::kDsOff;  // dq_atomic only

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int r_lo = 16 * (warp & 3) + (lane >> 2), qc = (lane & 3) * 2;
  const int item = blockIdx.x, batch = blockIdx.y;
  const int ti = find_tile(p.k_prefix, p.num_tiles, item);
  const Tile t = p.tiles[ti];
  const int n0 = (item - __ldg(p.k_prefix + ti)) * BN;
  const int kn = min(BN, t.k_count - n0);
  const int diag = clamp_diag(t.q_idx0 - t.k_idx0);
  int m_lo = 0;
  if (kCausal) {
    const int64_t first = int64_t(n0) - diag;
    m_lo = first <= 0 ? 0 : (first >= t.q_count ? t.q_count : int(first));
    m_lo -= m_lo % BQ;
  }
  if (m_lo >= t.q_count) return;

  const Elem* gq = static_cast<const Elem*>(p.q) + batch * p.q_batch_stride + int64_t(t.head) * D;
  const Elem* gdo = static_cast<const Elem*>(p.dout) + batch * p.q_batch_stride + int64_t(t.head) * D;
  const Elem* gk = static_cast<const Elem*>(p.src.k) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  const Elem* gv = static_cast<const Elem*>(p.src.v) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  const float* glse = p.lse + batch * p.lse_batch_stride + t.head;
  const float* gdelta = p.delta + batch * p.lse_batch_stride + t.head;
  auto krow = [&](int i) { return key_row(t, p.src, n0 + i); };
  gather_swz<D, BN, NT>(s_k, gk, p.src.row_stride, kn, krow, tid);
  gather_swz<D, BN, NT>(s_v, gv, p.src.row_stride, kn, krow, tid);
  // Stage st (of S) holds query block j = st, st + S, ...: Q, dO (cp.async,
  // one noinc arrival per thread on full[st] when they land) and LSE, Delta
  // (plain stores, then an arrival: its release makes them visible). A
  // thread refills a stage once every thread has arrived on its empty
  // barrier (done with the block S before), so the two warpgroups run up to
  // a block apart instead of meeting at a CTA barrier on every block.
  if (tid == 0) {
    for (int st = 0; st < S; ++st) {
      mbar_init(full + 8 * st, 2 * NT);
      mbar_init(empty + 8 * st, NT);
    }
    fence_mbar_init();
  }
  __syncthreads();
  const int nblk = (t.q_count - m_lo + BQ - 1) / BQ;
  auto issue = [&](int j) {
    const int st = j % S, f = j / S;
    if (f > 0) mbar_wait(empty + 8 * st, (f - 1) & 1);
    const int m0 = m_lo + j * BQ;
    const int valid = min(BQ, t.q_count - m0);
    auto qrow = [&](int i) { return t.q_row0 + int64_t(m0 + i) * t.q_stride; };
    gather_swz<D, BQ, NT>(s_q0 + st * L::kQ, gq, p.q_row_stride, valid, qrow, tid);
    gather_swz<D, BQ, NT>(s_do0 + st * L::kQ, gdo, p.q_row_stride, valid, qrow, tid);
    if (tid < BQ) {
      float l = INFINITY, dl = 0.f;  // rows past the tile: P = exp2(x - inf) = 0
      if (tid < valid) {
        const int64_t off = qrow(tid) * p.lse_row_stride;
        const float v = __ldg(glse + off);
        if (v > -INFINITY) { l = v * kLog2e; dl = __ldg(gdelta + off); }
      }
      s_lse[st * BQ + tid] = l;
      s_delta[st * BQ + tid] = dl;
    }
    mbar_arrive(full + 8 * st);
    cp_async_mbar_arrive_noinc(full + 8 * st);
  };
  issue(0);  // K and V were gathered before: stage 0's arrivals cover them
  if (nblk > 1) issue(1);

  const float sl2 = p.scale * kLog2e;
  float dk[kON * 4], dv[kON * 4];
#pragma unroll
  for (int i = 0; i < kON * 4; ++i) dk[i] = dv[i] = 0.f;

  for (int j = 0; j < nblk; ++j) {
    if (j + 2 < nblk) issue(j + 2);
    const int buf = j % S, m0 = m_lo + j * BQ;
    mbar_wait(full + 8 * buf, (j / S) & 1);
    fence_proxy_async();
    const uint32_t s_q = s_q0 + buf * L::kQ, s_do = s_do0 + buf * L::kQ;
    float st[kSN * 4], dpt[kSN * 4];
#pragma unroll
    for (int i = 0; i < kSN * 4; ++i) st[i] = dpt[i] = 0.f;
    wgmma_fence();
    gemm_kmajor<Elem, D, BQ, BN, BQ>(st, s_k, 64 * wg, s_q);
    gemm_kmajor<Elem, D, BQ, BN, BQ>(dpt, s_v, 64 * wg, s_do);
    wgmma_commit();
    wgmma_wait<0>();
    // P^T and dS^T: key kr of the block is visible to query col iff
    // kr < kn and (causal) n0 + kr <= diag + m0 + col. A warpgroup whose 64
    // keys are all present and (causal) all visible to every query of the
    // block skips the mask (most blocks); LSE and Delta are read as pairs.
    const int lim = clamp_lim(int64_t(diag) + m0 - n0);
    const int k_hi = 64 * wg + 63;
    const bool all = k_hi < kn && (!kCausal || k_hi <= lim);
#pragma unroll
    for (int nb = 0; nb < kSN; ++nb) {
      const int col0 = nb * 8 + qc;
      const float2 l2 = *reinterpret_cast<const float2*>(s_lse + buf * BQ + col0);
      const float2 dl = *reinterpret_cast<const float2*>(s_delta + buf * BQ + col0);
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int kr = 64 * wg + r_lo + ((e >> 1) << 3);
        const int col = col0 + (e & 1);
        const bool ok = all || (kr < kn && (!kCausal || kr <= lim + col));
        const float pr = ok ? fast_exp2(st[nb * 4 + e] * sl2 - ((e & 1) ? l2.y : l2.x)) : 0.f;
        dpt[nb * 4 + e] = pr * (dpt[nb * 4 + e] - ((e & 1) ? dl.y : dl.x));
        st[nb * 4 + e] = pr;
      }
    }
    uint32_t pf[BQ / 16][4], dsf[BQ / 16][4];
    pack_probs<Elem, kSN>(st, pf);
    pack_probs<Elem, kSN>(dpt, dsf);
    const uint32_t s_ds = s_ds0 + (j & 1) * L::kDs;
    if (p.dq_atomic) {
      // dS^T (this warpgroup's 64 keys) into the swizzled [BN][BQ] tile: row
      // = key, 16-byte chunk nb = queries 8nb..8nb+7; pairs from dsf.
#pragma unroll
      for (int nb = 0; nb < kSN; ++nb)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int kr = 64 * wg + r_lo + 8 * h;
          const uint32_t v = dsf[nb >> 1][(nb & 1) * 2 + h];
          asm volatile("st.shared.b32 [%0], %1;\n" ::"r"(s_ds + swz(kr, nb, BN) + qc * 2), "r"(v) : "memory");
        }
      fence_proxy_async();  // generic-proxy stores, read by wgmma below
    }
    wgmma_fence();
    gemm_mnmajor<Elem, D, BQ>(dv, pf, s_do);
    gemm_mnmajor<Elem, D, BQ>(dk, dsf, s_q);
    wgmma_commit();
    if (p.dq_atomic) {
      // Both warpgroups' dS^T rows are in place (and the other tile, read
      // two blocks ago, is free: this barrier follows that block's wait).
      named_sync(1);
      // dQ (64 queries x 64 head-dim columns 64wg.., D = 128; all 64 by
      // warpgroup 0 when D = 64) = dS (MN-major from dS^T) K (MN-major), k = the BN keys.
      if (D == 128 || wg == 0) {
        float dq[32];
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
          wgmma_ss_tt64<Elem>(dq, gmma_desc(s_ds + kk * 16 * 128, BN * 128, 1024),
                              gmma_desc(s_k + wg * BN * 128 + kk * 16 * 128, BN * 128, 1024), kk > 0);
        wgmma_commit();
        wgmma_wait<0>();
        float* dqa = p.dq_acc + batch * p.q_batch_stride + int64_t(t.head) * D + 64 * wg;
        const int valid = min(BQ, t.q_count - m0);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int r = r_lo + 8 * h;
          if (r >= valid) continue;
          float* row = dqa + (t.q_row0 + int64_t(m0 + r) * t.q_stride) * p.q_row_stride + qc;
#pragma unroll
          for (int nb = 0; nb < 8; ++nb)
            atomicAdd(reinterpret_cast<float2*>(row + nb * 8),
                      make_float2(p.scale * dq[nb * 4 + 2 * h], p.scale * dq[nb * 4 + 2 * h + 1]));
        }
      }
    }
    wgmma_wait<0>();
    mbar_arrive(empty + 8 * buf);  // this thread's last read of the stage is done
  }

  float* dka = p.dk_acc + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  float* dva = p.dv_acc + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int kr = 64 * wg + r_lo + 8 * h;
    if (kr >= kn) continue;
    const int64_t base = key_row(t, p.src, n0 + kr) * p.src.row_stride;
#pragma unroll
    for (int ob = 0; ob < kON; ++ob) {
      float2* a = reinterpret_cast<float2*>(dka + base + ob * 8 + qc);
      float2* b = reinterpret_cast<float2*>(dva + base + ob * 8 + qc);
      float2 x = *a, y = *b;
      x.x += p.scale * dk[ob * 4 + 2 * h];
      x.y += p.scale * dk[ob * 4 + 2 * h + 1];
      y.x += dv[ob * 4 + 2 * h];
      y.y += dv[ob * 4 + 2 * h + 1];
      *a = x;
      *b = y;
    }
  }
}

// --------------------------------------------------------------------- dQ --

template <int D>
struct DqSmem {
  static constexpr int BM = kBwdBlockM, BK = 64;
  static constexpr int kQ = BM * D * 2;   // Q or dO
  static constexpr int kKV = BK * D * 2;  // a K or V tile (per stage)
  static constexpr int S = kBwdStages;
  // Q | dO | K[S] | V[S] | full[S] | empty[S], + alignment
  static constexpr int kBarOff = 2 * kQ + 2 * S * kKV;
  static constexpr int kBytes = kBarOff + 2 * S * 8 + 1024;
  static_assert(kBytes <= 227 * 1024, "fits the sm_90 shared memory");
};

template <typename Elem, int D, bool kCausal>
__global__ void __launch_bounds__(256, 1) bwd_dq_kernel(const BwdParams p) {
  using L = DqSmem<D>;
  constexpr int BM = L::BM, BK = L::BK, NT = 256;
  constexpr int kSN = BK / 8, kON = D / 8;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t raw = smem_u32(smem);
  const uint32_t pad = ((raw + 1023u) & ~1023u) - raw;
  constexpr int S = L::S;
  const uint32_t s_q = raw + pad, s_do = s_q + L::kQ, s_k0 = s_do + L::kQ, s_v0 = s_k0 + S * L::kKV;
  const uint32_t full = s_q + L::kBarOff, empty = full + 8 * S;

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5, wg = warp >> 2;
  const int r_lo = 16 * (warp & 3) + (lane >> 2), qc = (lane & 3) * 2;
  const int item = blockIdx.x, batch = blockIdx.y;
  const int ti = find_tile(p.q_prefix, p.num_tiles, item);
  const Tile t = p.tiles[ti];
  const int m0 = (item - __ldg(p.q_prefix + ti)) * BM;
  const int q_rows = min(BM, t.q_count - m0);
  const int diag = clamp_diag(t.q_idx0 - t.k_idx0);
  int n_end = t.k_count;
  if (kCausal) {
    const int64_t last = int64_t(diag) + m0 + q_rows;
    n_end = int(last < 0 ? 0 : (last < t.k_count ? last : t.k_count));
  }
  if (n_end == 0) return;

  const Elem* gq = static_cast<const Elem*>(p.q) + batch * p.q_batch_stride + int64_t(t.head) * D;
  const Elem* gdo = static_cast<const Elem*>(p.dout) + batch * p.q_batch_stride + int64_t(t.head) * D;
  const Elem* gk = static_cast<const Elem*>(p.src.k) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  const Elem* gv = static_cast<const Elem*>(p.src.v) + batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  auto qrow = [&](int i) { return t.q_row0 + int64_t(m0 + i) * t.q_stride; };
  gather_swz<D, BM, NT>(s_q, gq, p.q_row_stride, q_rows, qrow, tid);
  gather_swz<D, BM, NT>(s_do, gdo, p.q_row_stride, q_rows, qrow, tid);
  // Stage st holds key block j = st, st + S, ... (K, V), as in bwd_dkdv;
  // Q and dO were gathered before stage 0's arrivals, which cover them.
  if (tid == 0) {
    for (int st = 0; st < S; ++st) {
      mbar_init(full + 8 * st, NT);
      mbar_init(empty + 8 * st, NT);
    }
    fence_mbar_init();
  }
  __syncthreads();
  const int nblk = (n_end + BK - 1) / BK;
  auto issue = [&](int j) {
    const int st = j % S, f = j / S;
    if (f > 0) mbar_wait(empty + 8 * st, (f - 1) & 1);
    const int n0 = j * BK;
    const int valid = min(BK, t.k_count - n0);
    auto krow = [&](int i) { return key_row(t, p.src, n0 + i); };
    gather_swz<D, BK, NT>(s_k0 + st * L::kKV, gk, p.src.row_stride, valid, krow, tid);
    gather_swz<D, BK, NT>(s_v0 + st * L::kKV, gv, p.src.row_stride, valid, krow, tid);
    cp_async_mbar_arrive_noinc(full + 8 * st);
  };
  issue(0);
  if (nblk > 1) issue(1);

  float lse2[2], dlt[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 64 * wg + r_lo + 8 * h;
    lse2[h] = INFINITY;
    dlt[h] = 0.f;
    if (r < q_rows) {
      const int64_t off = batch * p.lse_batch_stride + qrow(r) * p.lse_row_stride + t.head;
      const float v = __ldg(p.lse + off);
      if (v > -INFINITY) { lse2[h] = v * kLog2e; dlt[h] = __ldg(p.delta + off); }
    }
  }
  const float sl2 = p.scale * kLog2e;
  float dq[kON * 4];
#pragma unroll
  for (int i = 0; i < kON * 4; ++i) dq[i] = 0.f;

  for (int j = 0; j < nblk; ++j) {
    if (j + 2 < nblk) issue(j + 2);
    const int buf = j % S, n0 = j * BK;
    mbar_wait(full + 8 * buf, (j / S) & 1);
    fence_proxy_async();
    const uint32_t s_k = s_k0 + buf * L::kKV, s_v = s_v0 + buf * L::kKV;
    float s[kSN * 4], dp[kSN * 4];
#pragma unroll
    for (int i = 0; i < kSN * 4; ++i) s[i] = dp[i] = 0.f;
    wgmma_fence();
    gemm_kmajor<Elem, D, BK, BM, BK>(s, s_q, 64 * wg, s_k);
    gemm_kmajor<Elem, D, BK, BM, BK>(dp, s_do, 64 * wg, s_v);
    wgmma_commit();
    wgmma_wait<0>();
    // dS: key col visible to row r iff col < k_count - n0 and (causal)
    // n0 + col <= diag + m0 + r; blocks with every key visible to every row of
    // this warpgroup skip the mask.
    const int kvalid = t.k_count - n0;
    const int lim = clamp_lim(int64_t(diag) + m0 - n0);
    const bool full = BK <= kvalid && (!kCausal || BK - 1 <= lim + 64 * wg);
#pragma unroll
    for (int nb = 0; nb < kSN; ++nb)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int h = e >> 1;
        const int r = 64 * wg + r_lo + 8 * h;
        const int col = nb * 8 + qc + (e & 1);
        const bool ok = full || (col < kvalid && (!kCausal || col <= lim + r));
        const float pr = ok ? fast_exp2(s[nb * 4 + e] * sl2 - lse2[h]) : 0.f;
        dp[nb * 4 + e] = pr * (dp[nb * 4 + e] - dlt[h]);
      }
    uint32_t dsf[BK / 16][4];
    pack_probs<Elem, kSN>(dp, dsf);
    wgmma_fence();
    gemm_mnmajor<Elem, D, BK>(dq, dsf, s_k);
    wgmma_commit();
    wgmma_wait<0>();
    mbar_arrive(empty + 8 * buf);
  }

  float* dqa = p.dq_acc + batch * p.q_batch_stride + int64_t(t.head) * D;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 64 * wg + r_lo + 8 * h;
    if (r >= q_rows) continue;
    const int64_t base = qrow(r) * p.q_row_stride;
#pragma unroll
    for (int ob = 0; ob < kON; ++ob) {
      float2* a = reinterpret_cast<float2*>(dqa + base + ob * 8 + qc);
      float2 x = *a;
      x.x += p.scale * dq[ob * 4 + 2 * h];
      x.y += p.scale * dq[ob * 4 + 2 * h + 1];
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
cudaError_t launch_bwd(const BwdParams& p, cudaStream_t stream) {
  if (p.parts & 1) {
    cudaError_t e = launch_bwd_kernel(bwd_dkdv_kernel<Elem, D, kCausal>, DkdvSmem<D>::kBytes, p.k_items, p.batch, 256, p, stream);
    if (e != cudaSuccess) return e;
  }
  if (!(p.parts & 2) || p.dq_atomic) return cudaSuccess;
  return launch_bwd_kernel(bwd_dq_kernel<Elem, D, kCausal>, DqSmem<D>::kBytes, p.q_items, p.batch, 256, p, stream);
}

// Explicitly instantiated once per (dtype, head dim) file (bwd_<dtype>_hd<D>.cu).
template <typename Elem, int D>
cudaError_t run_bwd(const BwdParams& p, cudaStream_t stream) {
  return p.causal ? launch_bwd<Elem, D, true>(p, stream) : launch_bwd<Elem, D, false>(p, stream);
}

}  // namespace ringattn::kern::cuda::detail

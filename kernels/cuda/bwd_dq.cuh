// The backward's query-major pass: dQ of kBwdBlockM queries of a tile per CTA
// (bwd_kernel.cuh has the whole picture).
#pragma once
#include "kernels/cuda/bwd_common.cuh"

namespace ringattn::kern::cuda::detail {

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

// Warp-specialised as bwd_dkdv: a producer warpgroup (setmaxnreg 88; below
// that its K/V gathers spill) gathers Q, dO, then loads every K/V block (TMA
// boxes for whole blocks of affine keys, else the gather); the two
// consumer warpgroups (setmaxnreg 208) compute P under the dP GEMM.
template <typename Elem, int D, bool kCausal>
__global__ void __launch_bounds__(kBwdThreads, 1) bwd_dq_kernel(const __grid_constant__ BwdParams p) {
  using L = DqSmem<D>;
  constexpr int BM = L::BM, BK = L::BK;
  constexpr int NP = 128;  // producer threads, in front of the consumers
  constexpr int NC = 256;  // consumer threads: warpgroup w owns queries 64w..64w+63
  constexpr int NT = NP;   // threads that load
  constexpr int kSN = BK / 8, kON = D / 8;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t raw = smem_u32(smem);
  const uint32_t pad = ((raw + 1023u) & ~1023u) - raw;
  constexpr int S = L::S;
  const uint32_t s_q = raw + pad, s_do = s_q + L::kQ, s_k0 = s_do + L::kQ, s_v0 = s_k0 + S * L::kKV;
  const uint32_t full = s_q + L::kBarOff, empty = full + 8 * S;

  const int tid = threadIdx.x, lane = tid & 31, warp = (tid - NP) >> 5, wg = warp >> 2;
  const int r_lo = 16 * (warp & 3) + (lane >> 2), qc = (lane & 3) * 2;
  const int item = blockIdx.x, batch = blockIdx.y;
  if (tid == 0) griddep_launch_dependents();  // as in bwd_dkdv
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
  if (n_end == 0) {
    if (p.pdl && item == 0 && batch == 0 && tid == 0) griddep_wait();  // as in bwd_dkdv
    return;
  }

  const TileRows<Elem, D> g(p, t, batch);
  auto qrow = [&](int i) { return t.q_row0 + int64_t(m0 + i) * t.q_stride; };
  // Stage st holds key block j = st, st + S, ... (K, V), as in bwd_dkdv;
  // Q and dO were gathered before stage 0's arrivals, which cover them.
  init_stage_barriers(full, empty, S, NT, NC);
  const int nblk = (n_end + BK - 1) / BK;
  // The tensor maps of this tile's key stride (log2 of it), or -1: the gather
  // for every block (BwdParams::k_maps).
  int tma_map = -1;
  if (t.k_stride == 1 || t.k_stride == 2 || t.k_stride == 4 || t.k_stride == 8) {
    const int i = __ffs(t.k_stride) - 1;
    if ((p.kv_map_mask >> i) & 1u) tma_map = i;
  }
  auto issue = [&](int j) {
    const int st = j % S, f = j / S;
    if (f > 0) mbar_wait(empty + 8 * st, (f - 1) & 1);
    const int n0 = j * BK;
    const int valid = min(BK, t.k_count - n0);
    if (tma_map >= 0 && valid == BK) {
      // A whole block through the maps: thread 0 issues D / 64 boxes of K and of
      // V; every thread's cp.async arrival below lands at once.
      if (tid == 0) {
        const int64_t r0 = t.k_row0 + int64_t(n0) * t.k_stride;
        const int o = int(r0 & (t.k_stride - 1)), jr = int(r0 >> tma_map);
        mbar_expect_tx(full + 8 * st, 2 * L::kKV);
#pragma unroll
        for (int cb = 0; cb < D / 64; ++cb) {
          tma_load_5d(s_k0 + st * L::kKV + cb * BK * 128, p.k_maps[tma_map], full + 8 * st, cb * 64, t.head, o, jr, batch);
          tma_load_5d(s_v0 + st * L::kKV + cb * BK * 128, p.v_maps[tma_map], full + 8 * st, cb * 64, t.head, o, jr, batch);
        }
      }
    } else if (t.k_stride != 0) {  // affine keys (every local tile): one offset per row for K and V
      gather2_swz_affine<D, BK, NT>(s_k0 + st * L::kKV, g.k, s_v0 + st * L::kKV, g.v,
                                    (t.k_row0 + int64_t(n0) * t.k_stride) * p.src.row_stride,
                                    int64_t(t.k_stride) * p.src.row_stride, valid, tid);
    } else {  // received keys through the list (KeySource::index)
      auto krow = [&](int i) { return key_row(t, p.src, n0 + i); };
      gather_swz<D, BK, NT>(s_k0 + st * L::kKV, g.k, p.src.row_stride, valid, krow, tid);
      gather_swz<D, BK, NT>(s_v0 + st * L::kKV, g.v, p.src.row_stride, valid, krow, tid);
    }
    cp_async_mbar_arrive_noinc(full + 8 * st);
  };
  if (tid < NP) {  // the producer: Q and dO (covered by stage 0's arrivals), then every block
    warpgroup_reg_dealloc<88>();
    // Q and dO rows are affine (query rows of the local shard): one 64-bit add per row for both.
    gather2_swz_affine<D, BM, NT>(s_q, g.q, s_do, g.dout, qrow(0) * p.q_row_stride,
                                  int64_t(t.q_stride) * p.q_row_stride, q_rows, tid);
    for (int j = 0; j < nblk; ++j) issue(j);
    cp_async_wait_all();  // the copies are never committed to groups
    return;
  }
  warpgroup_reg_alloc<208>();

  float lse2[2], dlt[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 64 * wg + r_lo + 8 * h;
    lse2[h] = INFINITY;
    dlt[h] = 0.f;
    if (r < q_rows) {
      const int64_t off = batch * p.lse_batch_stride + qrow(r) * p.lse_row_stride + t.head;
      const float v = __ldg(p.lse + off);
      if (v * kLog2e > -INFINITY) { lse2[h] = v * kLog2e; dlt[h] = __ldg(p.delta + off); }  // never -inf
    }
  }
  const float sl2 = p.scale * kLog2e;
  // Packed segments (t.seg_len > 0): the keys [seg_lo, seg_hi) of each of the
  // thread's two rows' segment (tile indices); all of them otherwise.
  int seg_lo[2], seg_hi[2];
  segment_keys(m0 + 64 * wg + r_lo, t.seg_len, &seg_lo[0], &seg_hi[0]);
  segment_keys(m0 + 64 * wg + r_lo + 8, t.seg_len, &seg_lo[1], &seg_hi[1]);
  float dq[kON * 4];
#pragma unroll
  for (int i = 0; i < kON * 4; ++i) dq[i] = 0.f;
  // Ping-pong as in bwd_dkdv (p.pingpong): batches S+dP and dQ, in turns.
  const bool pp = p.pingpong;
  const int my_bar = 2 + wg, other_bar = 3 - wg;
  if (pp && wg == 1) named_arrive(2);

  for (int j = 0; j < nblk; ++j) {
    const int buf = j % S, n0 = j * BK;
    mbar_wait(full + 8 * buf, (j / S) & 1);
    fence_proxy_async();
    const uint32_t s_k = s_k0 + buf * L::kKV, s_v = s_v0 + buf * L::kKV;
    float s[kSN * 4], dp[kSN * 4];
    if (pp) named_sync(my_bar);
    wgmma_fence();
    gemm_kmajor<Elem, D, BK, BM, BK>(s, s_q, 64 * wg, s_k);
    wgmma_commit();  // S, then dP: P is computed under the dP GEMM
    gemm_kmajor<Elem, D, BK, BM, BK>(dp, s_do, 64 * wg, s_v);
    wgmma_commit();
    wgmma_wait<1>();
    if (pp) named_arrive(other_bar);
    // dS: key col visible to row r iff col < k_count - n0, (causal)
    // n0 + col <= diag + m0 + r and (packed segments) n0 + col is in the
    // row's segment; blocks with every key visible to every row of this
    // warpgroup skip the mask (never with packed segments).
    const int kvalid = t.k_count - n0;
    const int lim = clamp_lim(int64_t(diag) + m0 - n0);
    const bool full = t.seg_len == 0 && BK <= kvalid && (!kCausal || BK - 1 <= lim + 64 * wg);
    // Masked keys: S = -inf in a pass most blocks skip (bwd_dkdv says why).
    if (!full) {
#pragma unroll
      for (int nb = 0; nb < kSN; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int h = e >> 1;
          const int col = nb * 8 + qc + (e & 1);
          const int kj = n0 + col;
          const bool ok = col < kvalid && kj >= seg_lo[h] && kj < seg_hi[h] &&
                          (!kCausal || col <= lim + 64 * wg + r_lo + 8 * h);
          if (!ok) s[nb * 4 + e] = -INFINITY;
        }
    }
#pragma unroll
    for (int i = 0; i < kSN * 4; ++i) s[i] = fast_exp2(s[i] * sl2 - lse2[(i >> 1) & 1]);
    wgmma_wait<0>();  // dP
#pragma unroll
    for (int i = 0; i < kSN * 4; ++i) dp[i] = s[i] * (dp[i] - dlt[(i >> 1) & 1]);
    uint32_t dsf[BK / 16][4];
    pack_probs<Elem, kSN>(dp, dsf);
    if (pp) named_sync(my_bar);
    wgmma_fence();
    gemm_mnmajor<Elem, D, BK>(dq, dsf, s_k);
    wgmma_commit();
    wgmma_wait<0>();
    if (pp) named_arrive(other_bar);
    mbar_arrive(empty + 8 * buf);
  }
  if (pp && wg == 0) named_sync(2);  // takes warpgroup 1's last arrive

  const int64_t q0 = batch * p.q_batch_stride + int64_t(t.head) * D;
  // pdl: earlier passes' adds to these dQ rows (or the first pass's writes)
  // complete and visible before this thread's first access (bwd_dkdv).
  if (p.pdl) griddep_wait();
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int r = 64 * wg + r_lo + 8 * h;
    if (r >= q_rows) continue;
    const int64_t base = q0 + qrow(r) * p.q_row_stride + qc;
    const GradAcc g{p.dq_acc, p.dq_hi, p.dq_lo};
    grad_add2_batch<Elem, kON>([&](int) { return g; }, [&](int ob) { return base + ob * 8; },
                               [&](int ob) { return make_float2(p.scale * dq[ob * 4 + 2 * h], p.scale * dq[ob * 4 + 2 * h + 1]); },
                               p.overwrite && p.dq_lo != nullptr);
  }
}

}  // namespace ringattn::kern::cuda::detail

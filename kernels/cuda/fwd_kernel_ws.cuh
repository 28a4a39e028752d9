// Fused dilated flash-attention forward, path 3: warp-specialised, persistent
// (FA3 structure). Included from fwd_kernel.cuh (uses its helpers).
//
// 3 warpgroups per CTA, one CTA per SM, grid = min(#SMs, work items); a CTA
// walks the items (query blocks of kBlockM rows) blockIdx.x, +gridDim.x, ...
//   WG 0, producer (setmaxnreg 40): decodes the next item into shared memory,
//     gathers its Q rows and then, group by group, its K/V rows with 16-byte
//     cp.async into a kStages-deep ring. Group g of an item holds K_g and
//     V_{g-1} (g = 0..n): exactly what the consumers' step g reads. Each
//     producer thread signals a group with cp.async.mbarrier.arrive.noinc on
//     the stage's `full` barrier, so the producer never waits for its loads,
//     only for the consumers to free a stage (`empty`). The ring runs on
//     across items, so the next item's Q/K/V arrive during this one's tail
//     and epilogue.
//   WG 1, 2, consumers (setmaxnreg 232): 64 query rows each. Step g issues
//     S_g = Q K_g^T and O += P_{g-1} V_{g-1} back to back, hands the turn to
//     the other consumer once S_g is done, runs the softmax of S_g (after
//     P_{g-1} V_{g-1}: see the note at its wait), then frees the stage. The
//     two consumers take turns issuing their GEMMs (ping-pong on named
//     barriers 1 and 2), so one's softmax runs under the other's GEMMs. No
//     CTA-wide barrier after the set-up.
//   Epilogue: straight from registers to global memory (4-byte stores; the
//     log-sum-exp merge reads the old O and LSE the same way), so Q's shared
//     memory is free as soon as the last S GEMM is done.
// cp.async writes through the generic proxy and wgmma reads through the async
// proxy: each consumer thread issues fence.proxy.async after its wait on a
// `full` barrier (the barrier's acquire makes the writes visible to it).
#pragma once

namespace ringattn::kern::cuda::detail {

template <typename Elem, int kHeadDim_, int kStages_>
struct FwdWsTraits {
  using elem_t = Elem;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kStages = kStages_;
  static constexpr int kBlockM = 128;
  static constexpr int kBlockN = 128;
  static constexpr int kThreads = 384;  // producer WG + 2 consumer WGs
  static constexpr int kChunks = kHeadDim / 8;
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKVBytes = kBlockN * kHeadDim * 2;
  // Q | K stages | V stages | barriers | item info
  static constexpr int kBarOff = kQBytes + 2 * kStages * kKVBytes;
  static constexpr int kNumBars = 2 * kStages + 2;  // full[S], empty[S], q_full, q_empty
  static constexpr int kInfoOff = kBarOff + kNumBars * 8;
  static constexpr int kSmemBytes = kInfoOff + 64 + 1024;
  static constexpr int kProducerRegs = 40;
  static constexpr int kConsumerRegs = 232;
  static_assert(kSmemBytes <= 227 * 1024, "fits the sm_90 shared memory");
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head dim 64 or 128");
  static_assert(128 * kProducerRegs + 256 * kConsumerRegs <= 65536, "register file");
};

// What the producer tells the consumers about an item (shared memory).
struct WsItem {
  int64_t q_row0;
  int32_t q_stride, head, m0, q_rows, n_blocks, diag, k_count, batch;
};

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
  asm volatile(
      "{\n.reg .pred P1;\nLAB_WAIT:\n"
      "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1, %2;\n"
      "@P1 bra DONE;\nbra LAB_WAIT;\nDONE:\n}\n" ::"r"(bar),
      "r"(parity), "r"(0x989680)
      : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.release.cta.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void cp_async_mbar_arrive_noinc(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
__device__ __forceinline__ void named_sync(int id) {
  asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory");
}
__device__ __forceinline__ void named_arrive(int id) {
  asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory");
}

template <typename Traits, bool kCausal>
__global__ void __launch_bounds__(384, 1) fwd_ws_kernel(const FwdParams p) {
  using Elem = typename Traits::elem_t;
  constexpr int D = Traits::kHeadDim;
  constexpr int BM = Traits::kBlockM;
  constexpr int BN = Traits::kBlockN;
  constexpr int CH = Traits::kChunks;
  constexpr int S = Traits::kStages;
  constexpr int kSN = BN / 8;
  constexpr int kON = D / 8;

  extern __shared__ uint8_t smem_raw[];
  const uint32_t raw_addr = smem_u32(smem_raw);
  const uint32_t pad = ((raw_addr + 1023u) & ~1023u) - raw_addr;
  uint8_t* smem = smem_raw + pad;
  const uint32_t s_q = raw_addr + pad;
  const uint32_t s_k = s_q + Traits::kQBytes;
  const uint32_t s_v = s_k + S * Traits::kKVBytes;
  const uint32_t bar_full = s_q + Traits::kBarOff;  // + 8*stage
  const uint32_t bar_empty = bar_full + 8 * S;
  const uint32_t bar_qfull = bar_empty + 8 * S;
  const uint32_t bar_qempty = bar_qfull + 8;
  WsItem* info = reinterpret_cast<WsItem*>(smem + Traits::kInfoOff);

  const int tid = threadIdx.x;
  const int total = p.num_blocks * p.batch;

  if (tid == 0) {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      mbar_init(bar_full + 8 * s, 128);  // one noinc arrive per producer thread
      mbar_init(bar_empty + 8 * s, 256);  // every consumer thread
    }
    mbar_init(bar_qfull, 128 + 1);  // 128 noinc + the item info's writer
    mbar_init(bar_qempty, 256);
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (tid < 128) {
    // ================================ producer ================================
    asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(Traits::kProducerRegs));
    const int my_ch = tid % CH;
    const int my_row0 = tid / CH;
    const int lane = tid & 31;
    constexpr int RS = 128 / CH;  // rows per pass (8 or 16), a multiple of 8:
    constexpr int IT = BN / RS;   // the swizzle of row + i*RS equals row's
    static_assert(BM == BN, "Q and K/V loads share the row mapping");
    const uint32_t my_soff = swz(my_row0, my_ch, BN);
    int stage = 0;
    uint32_t phase = 0;
    int itc = 0;
    int lo_prev = 0, batch_prev = -1, cta_prev = 0;
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
    for (int w = blockIdx.x; w < total; w += gridDim.x, ++itc) {
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
      const int m0 = (cta - __ldg(p.tile_block_prefix + lo)) * BM;
      const int q_rows = min(BM, t.q_count - m0);
      int64_t diag64 = t.q_idx0 - t.k_idx0;
      if (diag64 > (int64_t(1) << 30)) diag64 = int64_t(1) << 30;
      if (diag64 < -(int64_t(1) << 30)) diag64 = -(int64_t(1) << 30);
      const int diag = int(diag64);
      int n_end = t.k_count;
      if (kCausal) {
        const int64_t last = int64_t(diag) + m0 + q_rows;
        n_end = int(last < 0 ? 0 : (last < t.k_count ? last : t.k_count));
      }
      const int n_blocks = (n_end + BN - 1) / BN;

      // Q (and the item info) once the consumers are done with the last Q.
      mbar_wait(bar_qempty, (itc & 1) ^ 1);
      if (tid == 0) {
        WsItem it;
        it.q_row0 = t.q_row0; it.q_stride = t.q_stride; it.head = t.head; it.m0 = m0;
        it.q_rows = q_rows; it.n_blocks = n_blocks; it.diag = diag; it.k_count = t.k_count;
        it.batch = batch;
        *info = it;
        mbar_arrive(bar_qfull);
      }
      {
        const Elem* gq = static_cast<const Elem*>(p.q) + batch * p.q_batch_stride + int64_t(t.head) * D;
        const int64_t step = int64_t(RS) * t.q_stride * p.q_row_stride;
        const Elem* src = gq + (t.q_row0 + int64_t(m0 + my_row0) * t.q_stride) * p.q_row_stride + my_ch * 8;
#pragma unroll 4
        for (int i = 0; i < IT; ++i) {
          const bool valid = my_row0 + i * RS < q_rows;
          cp_async16(s_q + my_soff + i * RS * 128, valid ? src : gq, valid);
          src += step;
        }
        cp_async_mbar_arrive_noinc(bar_qfull);
      }
      if (n_blocks == 0) continue;

      const Elem* gk = static_cast<const Elem*>(p.src.k) + batch * p.src.batch_stride +
                       int64_t(t.head) * p.src.head_stride;
      const Elem* gv = static_cast<const Elem*>(p.src.v) + batch * p.src.batch_stride +
                       int64_t(t.head) * p.src.head_stride;
      const int64_t kstep = int64_t(RS) * t.k_stride * p.src.row_stride;
      auto load_rows = [&](const Elem* __restrict__ g, uint32_t s_base, int blk) {
        const int n0 = blk * BN;
        const uint32_t dst = s_base + my_soff;
        if (t.k_stride != 0) {
          const Elem* src = g + (t.k_row0 + int64_t(n0 + my_row0) * t.k_stride) * p.src.row_stride + my_ch * 8;
          if (n0 + BN <= t.k_count) {
#pragma unroll 4
            for (int i = 0; i < IT; ++i) {
              cp_async16(dst + i * RS * 128, src, true);
              src += kstep;
            }
          } else {
#pragma unroll 4
            for (int i = 0; i < IT; ++i) {
              const bool valid = n0 + my_row0 + i * RS < t.k_count;
              cp_async16(dst + i * RS * 128, valid ? src : g, valid);
              src += kstep;
            }
          }
        } else {
          const int32_t* idx = p.src.index + t.k_row0 + n0 + my_row0;
#pragma unroll 4
          for (int i = 0; i < IT; ++i) {
            const bool valid = n0 + my_row0 + i * RS < t.k_count;
            const int64_t srow = valid ? int64_t(__ldg(idx + i * RS)) : 0;
            cp_async16(dst + i * RS * 128, g + srow * p.src.row_stride + my_ch * 8, valid);
          }
        }
      };
      for (int g = 0; g <= n_blocks; ++g) {
        mbar_wait(bar_empty + 8 * stage, phase ^ 1);
        if (g < n_blocks) load_rows(gk, s_k + stage * Traits::kKVBytes, g);
        if (g > 0) load_rows(gv, s_v + stage * Traits::kKVBytes, g - 1);
        cp_async_mbar_arrive_noinc(bar_full + 8 * stage);
        if (++stage == S) { stage = 0; phase ^= 1; }
      }
    }
    cp_async_wait<0>();
  } else {
    // ================================ consumers ===============================
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(Traits::kConsumerRegs));
    const int ctid = tid - 128;
    const int cw = ctid >> 5;  // consumer warp 0..7: query rows 16cw..16cw+15
    const int lane = tid & 31;
    const int wg = cw >> 2;    // consumer warpgroup 0/1: rows 64wg..
    const int my_bar = 1 + wg, other_bar = 2 - wg;
    const int r_lo = cw * 16 + (lane >> 2);
    const int qc = (lane & 3) * 2;  // column pair inside an 8-column block
    const float sl2 = p.scale * 1.4426950408889634f;
    if (wg == 1) named_arrive(1);  // warpgroup 0 issues first

    int stage = 0;
    uint32_t phase = 0;
    int itc = 0;
    for (int w = blockIdx.x; w < total; w += gridDim.x, ++itc) {
      mbar_wait(bar_qfull, itc & 1);
      fence_proxy_async();
      const WsItem it = *info;
      const int m0 = it.m0, diag = it.diag, k_count = it.k_count, n_blocks = it.n_blocks;

      // Rows of this thread in global memory. When merging, fetch the old LSE
      // now and pull the old O rows into L2, so the epilogue does not wait
      // two dependent DRAM round trips while the tensor cores idle.
      Elem* orow[2];
      float* lrow[2];
      float l_old[2] = {-INFINITY, -INFINITY};
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = r_lo + h * 8;
        const int64_t qrow = it.q_row0 + int64_t(m0 + row) * it.q_stride;
        orow[h] = static_cast<Elem*>(p.o) + it.batch * p.q_batch_stride + int64_t(it.head) * D + qc +
                  qrow * p.q_row_stride;
        lrow[h] = p.lse + it.batch * p.lse_batch_stride + it.head + qrow * p.lse_row_stride;
        if (p.accumulate && row < it.q_rows) {
          l_old[h] = *lrow[h];
          // The quad's 4 lanes cover the row's 2 (D = 128) or 1 (D = 64) 128-byte lines.
          if ((lane & 3) * 128 < D * 2)
            asm volatile("prefetch.global.L2 [%0];\n" ::"l"(orow[h] - qc + (lane & 3) * 64));
        }
      }

      float o_acc[kON * 4];
#pragma unroll
      for (int i = 0; i < kON * 4; ++i) o_acc[i] = 0.f;
      float row_max[2] = {-INFINITY, -INFINITY};
      float row_sum[2] = {0.f, 0.f};
      uint32_t pf[BN / 16][4];

      auto gemm_s = [&](float* s, uint32_t sk) {
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          const uint32_t qa = s_q + (kk >> 2) * BM * 128 + wg * 64 * 128 + (kk & 3) * 32;
          const uint32_t kb = sk + (kk >> 2) * BN * 128 + (kk & 3) * 32;
          wgmma_ss<Elem, BN>(s, gmma_desc(qa, 16, 1024), gmma_desc(kb, 16, 1024), kk > 0);
        }
      };
      auto gemm_pv = [&](uint32_t sv) {
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk)
          wgmma_rs<Elem, D>(o_acc, pf[kk], gmma_desc(sv + kk * 16 * 128, BN * 128, 1024));
      };

      for (int blk = 0; blk < n_blocks; ++blk) {
        mbar_wait(bar_full + 8 * stage, phase);
        fence_proxy_async();
        float s[kSN * 4];
        named_sync(my_bar);
        wgmma_fence();
        gemm_s(s, s_k + stage * Traits::kKVBytes);
        wgmma_commit();
        if (blk > 0) {
          gemm_pv(s_v + stage * Traits::kKVBytes);
          wgmma_commit();
        }
        // S_blk done (P_{blk-1} V_{blk-1} may still run): the other warpgroup's
        // turn. (A bar.arrive between the wgmma issue and this wait makes
        // ptxas serialise every wgmma of the kernel, C7514.)
        if (blk > 0) wgmma_wait<1>(); else wgmma_wait<0>();
        named_arrive(other_bar);
        if (blk == n_blocks - 1) mbar_arrive(bar_qempty);  // this warpgroup's Q rows are read

        // ---- softmax of S_blk (overlaps P_{blk-1} V_{blk-1}) ----
        const int n0 = blk * BN;
        const bool need_mask = n0 + BN > k_count || (kCausal && n0 + BN - 1 > diag + m0 + cw * 16);
        if (need_mask) mask_scores<kSN, kCausal>(s, n0, qc, m0 + r_lo, k_count, diag);
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
        mbar_arrive(bar_empty + 8 * stage);
#pragma unroll
        for (int ob = 0; ob < kON; ++ob) {
          o_acc[ob * 4 + 0] *= corr[0];
          o_acc[ob * 4 + 1] *= corr[0];
          o_acc[ob * 4 + 2] *= corr[1];
          o_acc[ob * 4 + 3] *= corr[1];
        }
#pragma unroll
        for (int nb = 0; nb < kSN; ++nb) {
          pf[nb >> 1][(nb & 1) * 2 + 0] = pack2<Elem>(s[nb * 4 + 0], s[nb * 4 + 1]);
          pf[nb >> 1][(nb & 1) * 2 + 1] = pack2<Elem>(s[nb * 4 + 2], s[nb * 4 + 3]);
        }
        if (++stage == S) { stage = 0; phase ^= 1; }
      }
      if (n_blocks > 0) {
        mbar_wait(bar_full + 8 * stage, phase);
        fence_proxy_async();
        named_sync(my_bar);
        wgmma_fence();
        gemm_pv(s_v + stage * Traits::kKVBytes);
        wgmma_commit();
        named_arrive(other_bar);
        wgmma_wait<0>();
        mbar_arrive(bar_empty + 8 * stage);
        if (++stage == S) { stage = 0; phase ^= 1; }
      } else {
        mbar_arrive(bar_qempty);
      }

      // ---- epilogue: registers -> global, merging by log-sum-exp ----
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
        row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
      }
      float w1[2], w2[2], lnew[2];
      bool write[2];
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = r_lo + h * 8;
        const bool valid = row < it.q_rows;
        const bool any = row_sum[h] > 0.f;
        const float inv = any ? 1.f / row_sum[h] : 0.f;
        const float l2 = any ? (row_max[h] * sl2 + __log2f(row_sum[h])) * 0.6931471805599453f : -INFINITY;
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
#pragma unroll
          for (int ob = 0; ob < kON; ++ob) {
            const float2 x1 = unpack2<Elem>(dst[ob * 4]);
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
    if (wg == 0) named_sync(1);  // takes warpgroup 1's last arrive
  }
}

template <typename Traits, bool kCausal>
cudaError_t launch_fwd_ws_kernel(const FwdParams& p, cudaStream_t stream) {
  auto kernel = fwd_ws_kernel<Traits, kCausal>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       Traits::kSmemBytes);
  if (e != cudaSuccess) return e;
  int dev = 0, sms = 0;
  if ((e = cudaGetDevice(&dev)) != cudaSuccess) return e;
  if ((e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev)) != cudaSuccess) return e;
  const int64_t total = int64_t(p.num_blocks) * p.batch;
  if (total > INT32_MAX) return cudaErrorInvalidValue;
  // Causal items of a tile cost 1, 2, ... key blocks in turn (query block
  // order). CTA c takes items c, c+G, c+2G, ...: with G = 132 (a multiple of
  // 4) a CTA would only ever see query blocks of one residue mod 4 (up to 18%
  // more work than the mean at 16 blocks per tile); an odd G walks every
  // residue.
  if (p.causal && sms > 1 && (sms & 1) == 0) --sms;
  const int grid = int(total < sms ? total : sms);
  kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

}  // namespace ringattn::kern::cuda::detail

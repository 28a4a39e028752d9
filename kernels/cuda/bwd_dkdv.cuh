// The backward's key-major kernel: dK and dV of kBwdBlockN keys of a tile per
// CTA (bwd_kernel.cuh has the whole picture). bwd_trace.cuh: its optional
// per-CTA timing trace (RINGATTN_BWD_TRACE builds only).
#pragma once
#include "kernels/cuda/bwd_common.cuh"
#include "kernels/cuda/bwd_trace.cuh"

namespace ringattn::kern::cuda::detail {

// ---------------------------------------------------------------- dK / dV --

template <int D>
struct DkdvSmem {
  static constexpr int BN = kBwdBlockN, BQ = 64;
  static constexpr int kKV = BN * D * 2;  // a K or V tile
  static constexpr int kQ = BQ * D * 2;   // a Q or dO tile (per stage)
  static constexpr int S = kBwdStages;
  // K | V | Q[S] | dO[S] | dS^T[2] | dQ | lse2[S][BQ] | delta[S][BQ] | full[S] | empty[S] | dq_full | dq_empty,
  // + alignment to the swizzle atom. Every tile is a multiple of 1024 bytes.
  // dq_atomic: two dS^T tiles [BN keys][BQ queries] and the block's dQ
  // [BQ][D] float32 (rows of D floats, 16-byte chunks swizzled: dq_chunk).
  static constexpr int kDs = BN * BQ * 2;
  static constexpr int kDq = BQ * D * 4;
  static constexpr int kDsOff = 2 * kKV + 2 * S * kQ;
  static constexpr int kDqOff = kDsOff + 2 * kDs;
  static constexpr int kFloatsOff = kDqOff + kDq;
  static constexpr int kBarOff = kFloatsOff + 2 * S * BQ * 4;
#if RINGATTN_BWD_TRACE
  // bwd_trace.cuh's shadow of the CTA's trace record, after the barriers.
  static constexpr int kTraceOff = kBarOff + (2 * S + 2) * 8;
  static constexpr int kBytes = kTraceOff + kBwdTraceSlots * 8 + 1024;
#else
  static constexpr int kBytes = kBarOff + (2 * S + 2) * 8 + 1024;
#endif
  static_assert(kKV % 1024 == 0 && kQ % 1024 == 0 && kDs % 1024 == 0, "tiles keep the swizzle atom's alignment");
  static_assert(kBytes <= 227 * 1024, "fits the sm_90 shared memory");
};

// Physical 16-byte chunk of logical chunk c (4 floats) of row `row` of the
// staged dQ: c ^ 2 (row % 4), so the consumers' float2 stores (a quad's
// rows, 8 columns each) and the drain's row reads are free of bank conflicts.
__device__ __forceinline__ int dq_chunk(int row, int c) { return c ^ ((row & 3) << 1); }

// Warp-specialised like the forward: a producer warpgroup (setmaxnreg 24)
// loads Q, dO (TMA boxes from one thread for whole blocks, else the gather),
// LSE, Delta of every query block into the stage ring; the two
// consumer warpgroups (setmaxnreg 240; at 232 ptxas serialises their wgmma)
// gather the CTA's K and V once at the start, then only compute, and overlap
// inside a block: the exponentials of P with the dP GEMM, dS with the dV GEMM.
template <typename Elem, int D, bool kCausal>
__global__ void __launch_bounds__(kBwdThreads, 1) bwd_dkdv_kernel(const __grid_constant__ BwdParams p) {
  using L = DkdvSmem<D>;
  constexpr int BN = L::BN, BQ = L::BQ;
  constexpr int NP = 128;  // producer threads, in front of the consumers
  constexpr int NC = 256;  // consumer threads: warpgroup w owns keys 64w..64w+63
  constexpr int NT = NP;   // threads that load
  // setmaxnreg: the consumers can only take what the producer frees of the
  // CTA's launch registers (384 x 168 = 64512, not the SM's 65536): a producer
  // at 32 left the consumers' increase to 240 waiting forever (a hang, call 1
  // of h100-2026-11-28s8).
  constexpr int kProdRegs = 24, kConsRegs = 240;
  static_assert(NP * kProdRegs + NC * kConsRegs <= kBwdThreads * 168, "registers the producer frees");
  constexpr int kSN = BQ / 8, kON = D / 8;
  extern __shared__ __align__(128) uint8_t smem[];
  const uint32_t raw = smem_u32(smem);
  const uint32_t pad = ((raw + 1023u) & ~1023u) - raw;
  constexpr int S = L::S;
  const uint32_t s_k = raw + pad, s_v = s_k + L::kKV, s_q0 = s_v + L::kKV, s_do0 = s_q0 + S * L::kQ;
  float* s_lse = reinterpret_cast<float*>(smem + pad + L::kFloatsOff);  // [S][BQ], log2 units
  float* s_delta = s_lse + S * BQ;
  const uint32_t full = s_k + L::kBarOff, empty = full + 8 * S;
  const uint32_t s_ds0 = s_k + L::kDsOff, s_dq = s_k + L::kDqOff;  // dq_atomic only
  // dq_atomic: the consumers stage a block's dQ (scaled) and arrive on
  // dq_full; the producer adds it to dq_acc and arrives on dq_empty.
  const uint32_t dq_full = empty + 8 * S, dq_empty = dq_full + 8;

  const int tid = threadIdx.x, lane = tid & 31, warp = (tid - NP) >> 5, wg = warp >> 2;
  const int r_lo = 16 * (warp & 3) + (lane >> 2), qc = (lane & 3) * 2;
  const int item = blockIdx.x, batch = blockIdx.y;
#if RINGATTN_BWD_TRACE
  const unsigned long long tr_entry = tid == 0 ? clock64_now() : 0ull;
#endif
  // The next launch may start once every CTA of this one has started
  // (bwd_kernel.cuh): it waits for this one before touching what it writes.
  if (tid == 0) griddep_launch_dependents();
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
  if (m_lo >= t.q_count) {
    // Nothing to do. pdl: one thread of the grid waits for the launch before
    // all the same, so that this grid's completion implies that one's even if
    // every CTA returns here (bwd_kernel.cuh).
    if (p.pdl && item == 0 && batch == 0 && tid == 0) griddep_wait();
    return;
  }

  const TileRows<Elem, D> g(p, t, batch);
  const float* glse = p.lse + batch * p.lse_batch_stride + t.head;
  const float* gdelta = p.delta + batch * p.lse_batch_stride + t.head;
  auto krow = [&](int i) { return key_row(t, p.src, n0 + i); };
  // Stage st (of S) holds query block j = st, st + S, ...: Q, dO (TMA with
  // expect_tx from thread 0, or cp.async; either way one noinc arrival per
  // thread on full[st] when its copies land) and LSE, Delta
  // (plain stores, then an arrival: its release makes them visible). A
  // thread refills a stage once every thread has arrived on its empty
  // barrier (done with the block S before), so the two warpgroups run up to
  // a block apart instead of meeting at a CTA barrier on every block.
  if (tid == 0) {
    mbar_init(dq_full, NC);
    mbar_init(dq_empty, NP);
  }
#if RINGATTN_BWD_TRACE
  const uint32_t tr_s = s_k + L::kTraceOff;  // the record's shadow (bwd_trace.cuh)
  if (tid == 0)
    for (int i = 0; i < kBwdTraceSlots; ++i) bwd_trace_st(tr_s, i, 0ull);
#endif
  init_stage_barriers(full, empty, S, 2 * NT, NC);  // fences the inits, then a CTA barrier
  const int nblk = (t.q_count - m_lo + BQ - 1) / BQ;
#if RINGATTN_BWD_TRACE
  if (unsigned long long* r = tid == 0 ? bwd_trace_rec(p) : nullptr) {
    r[kBtTimerStart] = globaltimer_now();
    r[kBtClockStart] = clock64_now();
    r[kBtClockEntry] = tr_entry;
    r[kBtSmId] = smid_now();
    r[kBtNBlk] = unsigned(nblk);
    r[kBtFlags] = (p.overwrite && p.dk_lo != nullptr ? kBtFlagFresh : 0u) | (p.dq_atomic ? kBtFlagAtomic : 0u) |
                  (p.pdl ? kBtFlagPdl : 0u) | (p.dq_first ? kBtFlagDqFirst : 0u) |
                  (p.pingpong ? kBtFlagPingpong : 0u);
  }
#endif
  // LSE and Delta of row tid of block j (threads tid < BQ), as loaded: -inf
  // past the tile. Both loads are issued together, one block ahead of their
  // use (issue(j) loads block j + 1's): the producer had waited for them, one
  // dependent DRAM round trip after the other, in every block (~5% of all
  // warp samples at `--branches 4096:2`, h100-2026-11-28s9 call 7), and
  // while it waits it cannot drain the consumers' dQ.
  auto load_ld = [&](int j, float& v, float& d) {
    const int m0 = m_lo + j * BQ;
    v = -INFINITY;
    d = 0.f;
    if (tid < t.q_count - m0) {
      const int64_t off = (t.q_row0 + int64_t(m0 + tid) * t.q_stride) * p.lse_row_stride;
      v = __ldg(glse + off);
      d = __ldg(gdelta + off);
    }
  };
  float next_v = -INFINITY, next_d = 0.f;  // block j + 1's, loaded by issue(j)
  // The tensor maps of this tile's query stride (log2 of it), or -1: the
  // cp.async gather for every block (BwdParams::q_maps).
  int tma_map = -1;
  if (t.q_stride == 1 || t.q_stride == 2 || t.q_stride == 4 || t.q_stride == 8) {
    const int i = __ffs(t.q_stride) - 1;
    if ((p.q_map_mask >> i) & 1u) tma_map = i;
  }
  auto issue = [&](int j) {
    const int st = j % S, f = j / S;
#if RINGATTN_BWD_TRACE
    if (f > 0) {
      if (tid == 0) bwd_trace_sub_now(tr_s, kBtPEmptyWait);
      mbar_wait(empty + 8 * st, (f - 1) & 1);
      if (tid == 0) bwd_trace_add_now(tr_s, kBtPEmptyWait);
    }
#else
    if (f > 0) mbar_wait(empty + 8 * st, (f - 1) & 1);
#endif
    const int m0 = m_lo + j * BQ;
    const int valid = min(BQ, t.q_count - m0);
    auto qrow = [&](int i) { return t.q_row0 + int64_t(m0 + i) * t.q_stride; };
    if (tma_map >= 0 && valid == BQ) {
      // A whole block through the tensor maps of its stride (BwdParams::q_maps):
      // thread 0 issues D / 64 boxes of Q and of dO; the other threads' arrivals
      // below stay as they are (the cp.async one lands at once).
      if (tid == 0) {
        const int64_t r0 = qrow(0);
        const int o = int(r0 & (t.q_stride - 1)), jr = int(r0 >> tma_map);
        mbar_expect_tx(full + 8 * st, 2 * L::kQ);
#pragma unroll
        for (int cb = 0; cb < D / 64; ++cb) {
          tma_load_5d(s_q0 + st * L::kQ + cb * BQ * 128, p.q_maps[tma_map], full + 8 * st, cb * 64, t.head, o, jr, batch);
          tma_load_5d(s_do0 + st * L::kQ + cb * BQ * 128, p.do_maps[tma_map], full + 8 * st, cb * 64, t.head, o, jr,
                      batch);
        }
      }
    } else {
      gather2_swz_affine<D, BQ, NT>(s_q0 + st * L::kQ, g.q, s_do0 + st * L::kQ, g.dout, qrow(0) * p.q_row_stride,
                                    int64_t(t.q_stride) * p.q_row_stride, valid, tid);
    }
    if (tid < BQ) {
      float v = next_v, d = next_d;
      if (j == 0) load_ld(0, v, d);
      if (j + 1 < nblk) load_ld(j + 1, next_v, next_d);
      // Rows past the tile or without keys (LSE -inf): l = +inf, so P =
      // exp2(x - inf) = 0, and Delta 0; l is never -inf.
      const bool ok = v * kLog2e > -INFINITY;
      s_lse[st * BQ + tid] = ok ? v * kLog2e : INFINITY;
      s_delta[st * BQ + tid] = ok ? d : 0.f;
    }
    mbar_arrive(full + 8 * st);
    cp_async_mbar_arrive_noinc(full + 8 * st);
#if RINGATTN_BWD_TRACE
    if (tid == 0 && j == 0) bwd_trace_mark(tr_s, kBtPFirstIssued);
    if (tid == 0 && j == nblk - 1) bwd_trace_mark(tr_s, kBtPLastIssued);
#endif
  };
  // dq_atomic: block j's staged dQ into dq_acc, one red.v4 per 16-byte
  // chunk (thread: chunk column tid % CH of rows tid / CH + k NP / CH; a warp
  // adds whole rows). The producer has the time: it waited on `empty` half
  // of its samples, while the consumers spent a quarter of theirs waiting
  // behind their own REDGs (bench/results/h100-2026-11-28e). Unrolled twice
  // (4-8 bytes of the producer's loop state spill): 5% faster than once. The
  // consumers still wait ~12% of their samples on dq_empty: the loop is a
  // latency chain (REDG waits for its LDS; with 24 registers the next LDS
  // waits for the REDG to read its source), h100-2026-11-28s8 call 9.
  auto drain = [&](int j) {
    constexpr int CH = D / 4, RS = NP / CH;
#if RINGATTN_BWD_TRACE
    if (tid == 0) bwd_trace_sub_now(tr_s, kBtPDqFullWait);
    mbar_wait(dq_full, j & 1);
    if (tid == 0) {
      const uint32_t now = clock32_now();
      bwd_trace_st32(tr_s, kBtPDqFullWait, bwd_trace_ld32(tr_s, kBtPDqFullWait) + now);
      bwd_trace_st32(tr_s, kBtPDrainWork, bwd_trace_ld32(tr_s, kBtPDrainWork) - now);
    }
#else
    mbar_wait(dq_full, j & 1);
#endif
    const int m0 = m_lo + j * BQ;
    const int valid = min(BQ, t.q_count - m0);
    // The thread's chunk from a fresh read of %tid.x (volatile: not hoisted),
    // so ptxas recomputes these few values here instead of keeping them live
    // across the producer's loop: at 24 registers it spilled them and
    // reloaded them before every drain (the consumers then waited longer on
    // dq_empty, h200-2026-11-28s12 call 5).
    const int tid_d = thread_x_volatile();
    const int c = tid_d % CH, r0 = tid_d / CH;
    const int col = dq_chunk(r0, c) * 4;  // logical chunk of physical chunk c (an involution; r % 4 == r0 % 4)
    const int64_t step = int64_t(RS) * t.q_stride * p.q_row_stride;
    float* row = p.dq_acc + batch * p.q_batch_stride + int64_t(t.head) * D + col +
                 (t.q_row0 + int64_t(m0 + r0) * t.q_stride) * p.q_row_stride;
    uint32_t src = s_dq + uint32_t(r0 * D * 4 + c * 16);
#pragma unroll 2
    for (int r = r0; r < valid; r += RS, row += step, src += RS * D * 4) {
      float4 v;
      asm volatile("ld.shared.v4.f32 {%0, %1, %2, %3}, [%4];\n" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "r"(src));
      red_add_v4(row, v.x, v.y, v.z, v.w);
    }
    mbar_arrive(dq_empty);  // its release orders the loads above before the consumers' next stores
#if RINGATTN_BWD_TRACE
    if (tid == 0) bwd_trace_add_now(tr_s, kBtPDrainWork);
#endif
  };
  // Two blocks before the end, the consumers fetch the old dK/dV values
  // their epilogue adds to into L2, so its loads wait for L2, not DRAM (the
  // epilogue runs while the SM has no other work; a 2048-key tile has only
  // 32 blocks). Not from the producer: at 24 registers it spilled.
  auto prefetch_acc = [&](int first, int step) {
    if (p.overwrite && p.dk_lo != nullptr) return;  // written fresh: nothing is read
    constexpr int LF = D * 4 / 128;                  // 128-byte lines of a float32 row (split: LF / 2 of hi, of lo)
    const int64_t kv0 = batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
    for (int x = first; x < kn * 2 * LF; x += step) {
      const int row = x / (2 * LF), q = x % (2 * LF), line = q % LF;
      const bool v = q >= LF;
      const int64_t e = kv0 + krow(row) * p.src.row_stride;
      if ((v ? p.dv_lo : p.dk_lo) == nullptr) {  // the epilogue's choice (GradAcc)
        prefetch_l2((v ? p.dv_acc : p.dk_acc) + e + line * 32);
      } else {
        const void* a = line < LF / 2 ? static_cast<const void*>(static_cast<const Elem*>(v ? p.dv_hi : p.dk_hi) + e + line * 64)
                                      : static_cast<const void*>((v ? p.dv_lo : p.dk_lo) + e + (line - LF / 2) * 64);
        prefetch_l2(a);
      }
    }
  };
  if (tid < NP) {  // the producer: Q, dO, LSE and Delta of every block (K and V: the consumers)
    warpgroup_reg_dealloc<kProdRegs>();
    // Block k's dQ is staged halfway through block k (after its dQ GEMM) and
    // needed free halfway through block k + 1; its stage frees at the end of
    // block k. So drain(k) first, then the loads of block k + S (S - 1 blocks
    // ahead of need): the drain gets a whole block. (Loads first, drain(k)
    // started at the end of block k and had half a block: the consumers
    // waited 17% of their samples on dq_empty, call 4 of h100-2026-11-28s8.)
    for (int j = 0; j < min(nblk, S); ++j) issue(j);
    for (int k = 0; k < nblk; ++k) {
      if (p.dq_atomic) drain(k);
      if (k + S < nblk) issue(k + S);
    }
#if RINGATTN_BWD_TRACE
    if (tid == 0) {
      bwd_trace_mark(tr_s, kBtPDone);
      if (unsigned long long* r = bwd_trace_rec(p)) bwd_trace_copy(r, tr_s, kBtPKvIssued, kBtC0 - kBtPKvIssued);
    }
#endif
    cp_async_wait_all();  // the copies are never committed to groups
    return;
  }
  warpgroup_reg_alloc<kConsRegs>();
  // K and V, by the consumers, who wait for them before their first block
  // (below): the producer at 24 registers took ~3 us to issue them through
  // krow (per row a branch, a multiply, the index path: ~68 instructions per
  // 16-byte copy), before block 0's Q and dO, and with the affine path
  // (one 64-bit add per row) it spilled ~300 bytes (h200-2026-11-28s12).
  if (t.k_stride != 0) {  // affine keys (every local tile)
    gather2_swz_affine<D, BN, NC>(s_k, g.k, s_v, g.v, (t.k_row0 + int64_t(n0) * t.k_stride) * p.src.row_stride,
                                  int64_t(t.k_stride) * p.src.row_stride, kn, tid - NP);
  } else {  // received keys through the list (KeySource::index)
    gather_swz<D, BN, NC>(s_k, g.k, p.src.row_stride, kn, krow, tid - NP);
    gather_swz<D, BN, NC>(s_v, g.v, p.src.row_stride, kn, krow, tid - NP);
  }
#if RINGATTN_BWD_TRACE
  if (tid == NP) bwd_trace_mark(tr_s, kBtPKvIssued);
#endif

  const float sl2 = p.scale * kLog2e;
  // Packed segments (t.seg_len > 0): the queries [seg_lo, seg_hi) of each of
  // the thread's two keys' segment (tile indices); all of them otherwise.
  int seg_lo[2], seg_hi[2];
  segment_keys(n0 + 64 * wg + r_lo, t.seg_len, &seg_lo[0], &seg_hi[0]);
  segment_keys(n0 + 64 * wg + r_lo + 8, t.seg_len, &seg_lo[1], &seg_hi[1]);
  float dk[kON * 4], dv[kON * 4];
#pragma unroll
  for (int i = 0; i < kON * 4; ++i) dk[i] = dv[i] = 0.f;
  // Ping-pong (dQ pass, p.pingpong): the two consumer warpgroups take turns
  // issuing their GEMM batches (S+dP, dV, dK), as the forward's do, so one's
  // exponentials run under the other's GEMMs. Warpgroup w waits on named barrier
  // 2 + w for its turn and passes it on barrier 3 - w once its batch's first
  // group is done (a bar.arrive right after a wgmma issue serialises ptxas'
  // wgmma, C7514); warpgroup 1 hands warpgroup 0 the first turn.
  const bool pp = p.pingpong && !p.dq_atomic;
  const int my_bar = 2 + wg, other_bar = 3 - wg;
  if (pp && wg == 1) named_arrive(2);
#if RINGATTN_BWD_TRACE
  const bool tracer = ((tid - NP) & 127) == 0;  // this warpgroup's trace writer
  const int tr = kBtC0 + wg * kBtCEvents;
  uint32_t tr_dq_empty = 0, tr_full = 0;  // summed wait cycles (every thread; the tracer's are written)
#endif

  // dq_atomic: dQ (64 queries x 64 head-dim columns 64wg.., D = 128; all 64
  // by warpgroup 0 when D = 64) = dS (MN-major from dS^T) K (MN-major), k =
  // the BN keys; issued and committed as one group.
  auto dq_gemm = [&](float* dq, uint32_t s_ds) {
    const uint64_t da = gmma_desc(s_ds, BN * 128, 1024), db = gmma_desc(s_k + wg * BN * 128, BN * 128, 1024);
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
      wgmma_ss_tt64<Elem>(dq, gmma_desc_add(da, kk * 16 * 128), gmma_desc_add(db, kk * 16 * 128), kk > 0);
    wgmma_commit();
  };
  // ... and its staging for the producer's drain: once the producer has
  // read block j - 1's dQ, each thread stores its scaled pairs (row r_lo + 8h,
  // columns 64wg + 8nb + qc, +1) as float2 into the swizzled rows, then
  // arrives on dq_full. (Adding from registers with red.global.add.v4 here
  // held a quarter of the consumers' warp samples: they waited on registers
  // their in-flight REDGs had yet to read. Bulk reductions of shared-memory
  // rows were slower still: per lane from the consumers, branch tma-dq, 13-16%;
  // four producer lanes issuing one per row from the Q/dO tiles of the stage
  // the block before used, branch dq-bulk, 10-17% slower than this.)
  auto dq_stage = [&](const float* dq, int j) {
#if RINGATTN_BWD_TRACE
    if (j > 0) {
      tr_dq_empty -= clock32_now();
      mbar_wait(dq_empty, (j - 1) & 1);
      tr_dq_empty += clock32_now();
    }
#else
    if (j > 0) mbar_wait(dq_empty, (j - 1) & 1);
#endif
    // dq_chunk(r, 16wg + 2nb + (qc >> 2)) = 16wg + 2 (nb ^ (r % 4)) + (qc >> 2), r % 4
    // the same for both rows: four addresses and immediates (nb >= 4, the second row).
    const int rr = r_lo & 3;
    uint32_t a[4];
#pragma unroll
    for (int k = 0; k < 4; ++k)
      a[k] = s_dq + uint32_t(r_lo * D * 4 + (16 * wg + 2 * (k ^ rr) + (qc >> 2)) * 16 + (qc & 3) * 4);
#pragma unroll
    for (int h = 0; h < 2; ++h)
#pragma unroll
      for (int nb = 0; nb < 8; ++nb)
        asm volatile("st.shared.v2.f32 [%0], {%1, %2};\n" ::"r"(a[nb & 3] + uint32_t((nb >> 2) * 128 + h * 8 * D * 4)),
                     "f"(p.scale * dq[nb * 4 + 2 * h]), "f"(p.scale * dq[nb * 4 + 2 * h + 1])
                     : "memory");
    mbar_arrive(dq_full);
  };

  // K and V landed (each thread's own copies), visible to wgmma (async
  // proxy), for every consumer thread (barrier 1: the 256 consumers).
  cp_async_wait_all();
  fence_proxy_async();
  named_sync(1);
  const int j_pre = max(nblk - 2, 0);
  for (int j = 0; j < nblk; ++j) {
    const int buf = j % S, m0 = m_lo + j * BQ;
    if (j == j_pre) prefetch_acc(tid - NP, NC);
#if RINGATTN_BWD_TRACE
    if (tracer && j == nblk - 1) bwd_trace_mark(tr_s, tr + kBtCLastStart);
    tr_full -= clock32_now();
    mbar_wait(full + 8 * buf, (j / S) & 1);
    tr_full += clock32_now();
    if (tracer && j == 0) bwd_trace_mark(tr_s, tr + kBtCFirstFull);
#else
    mbar_wait(full + 8 * buf, (j / S) & 1);
#endif
    fence_proxy_async();
    const uint32_t s_q = s_q0 + buf * L::kQ, s_do = s_do0 + buf * L::kQ;
    float st[kSN * 4], dpt[kSN * 4];
    // P^T and dS^T: key kr of the block is visible to query col iff
    // kr < kn, (causal) n0 + kr <= diag + m0 + col and (packed segments)
    // m0 + col is in the key's segment. A warpgroup whose 64 keys are all
    // present and (causal) all visible to every query of the block skips the
    // mask (most blocks; never with packed segments); LSE and Delta are read
    // as pairs.
    const int lim = clamp_lim(int64_t(diag) + m0 - n0);
    const int k_hi = 64 * wg + 63;
    const bool all = t.seg_len == 0 && k_hi < kn && (!kCausal || k_hi <= lim);
    uint32_t pf[BQ / 16][4], dsf[BQ / 16][4];
    // S^T and dP^T as two groups; P under the dP GEMM, dS under the dV GEMM.
    if (pp) named_sync(my_bar);
    wgmma_fence();
    gemm_kmajor<Elem, D, BQ, BN, BQ>(st, s_k, 64 * wg, s_q);
    wgmma_commit();
    gemm_kmajor<Elem, D, BQ, BN, BQ>(dpt, s_v, 64 * wg, s_do);
    wgmma_commit();
    wgmma_wait<1>();
    if (pp) named_arrive(other_bar);
    // Masked keys get S = -inf first, in a pass of its own that most blocks
    // skip (`all`): with `all || ...` folded into the exponentials' loop the
    // compiler evaluated every term for every element (a select, not a
    // branch), which cost the atomic-dQ kernel 11% once packed segments added
    // two terms. exp2(-inf - l) = 0 (l is never -inf: rows without keys carry
    // l = +inf).
    if (!all) {
#pragma unroll
      for (int nb = 0; nb < kSN; ++nb)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int col0 = nb * 8 + qc;
          const int kr = 64 * wg + r_lo + ((e >> 1) << 3);
          const int qi = m0 + col0 + (e & 1);
          const bool ok = kr < kn && qi >= seg_lo[e >> 1] && qi < seg_hi[e >> 1] &&
                          (!kCausal || kr <= lim + col0 + (e & 1));
          if (!ok) st[nb * 4 + e] = -INFINITY;
        }
    }
#pragma unroll
    for (int nb = 0; nb < kSN; ++nb) {
      const float2 l2 = *reinterpret_cast<const float2*>(s_lse + buf * BQ + nb * 8 + qc);
#pragma unroll
      for (int e = 0; e < 4; ++e) st[nb * 4 + e] = fast_exp2(st[nb * 4 + e] * sl2 - ((e & 1) ? l2.y : l2.x));
    }
    pack_probs<Elem, kSN>(st, pf);
    if (pp) named_sync(my_bar);
    wgmma_fence();
    gemm_mnmajor<Elem, D, BQ>(dv, pf, s_do);
    wgmma_commit();
    wgmma_wait<1>();  // dP^T (the dV GEMM runs on)
    if (pp) named_arrive(other_bar);
#pragma unroll
    for (int nb = 0; nb < kSN; ++nb) {
      const float2 dl = *reinterpret_cast<const float2*>(s_delta + buf * BQ + nb * 8 + qc);
#pragma unroll
      for (int e = 0; e < 4; ++e) dpt[nb * 4 + e] = st[nb * 4 + e] * (dpt[nb * 4 + e] - ((e & 1) ? dl.y : dl.x));
    }
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
    // dQ (atomic) = dS K over the block's BN keys needs both warpgroups' dS^T
    // rows: with p.dq_first the warpgroups meet first, issue dQ and then dK
    // (dS^T Q), and add dQ while the dK GEMM runs; otherwise dK is issued
    // before the meeting and dQ's adds wait for both GEMMs.
    const bool dq_first = p.dq_atomic && p.dq_first;
    if (dq_first) {
      // Both warpgroups' dS^T rows are in place (and the other tile, read
      // two blocks ago, is free: this barrier follows that block's wait).
      named_sync(1);
      if (D == 128 || wg == 0) {
        float dq[32];
        wgmma_fence();  // C7520, below
        dq_gemm(dq, s_ds);
        gemm_mnmajor<Elem, D, BQ>(dk, dsf, s_q);
        wgmma_commit();
        wgmma_wait<1>();  // dQ (the dK GEMM runs on)
        dq_stage(dq, j);
      } else {
        wgmma_fence();
        gemm_mnmajor<Elem, D, BQ>(dk, dsf, s_q);
        wgmma_commit();
        mbar_arrive(dq_full);  // D = 64: warpgroup 0 stages every column
      }
    } else {
      if (pp) named_sync(my_bar);
      wgmma_fence();
      gemm_mnmajor<Elem, D, BQ>(dk, dsf, s_q);
      wgmma_commit();
      if (pp) {
        wgmma_wait<1>();  // dV (the dK GEMM runs on)
        named_arrive(other_bar);
      }
      if (p.dq_atomic) {
        named_sync(1);  // as above
        if (D == 128 || wg == 0) {
          float dq[32];
          // A fence before the first wgmma of this (at D = 64 divergent) branch:
          // without it ptxas injects one there and serialises every wgmma of the
          // kernel (C7520).
          wgmma_fence();
          dq_gemm(dq, s_ds);
          wgmma_wait<0>();
          dq_stage(dq, j);
        } else {
          mbar_arrive(dq_full);  // D = 64: warpgroup 0 stages every column
        }
      }
    }
    wgmma_wait<0>();
    mbar_arrive(empty + 8 * buf);  // this thread's last read of the stage is done
#if RINGATTN_BWD_TRACE
    if (tracer && j == 0) bwd_trace_mark(tr_s, tr + kBtCBlock0End);
#endif
  }
#if RINGATTN_BWD_TRACE
  if (tracer) bwd_trace_mark(tr_s, tr + kBtCLoopEnd);
#endif
  if (pp && wg == 0) named_sync(2);  // takes warpgroup 1's last arrive

  // dK and dV leave through shared memory: each thread stores its scaled
  // pairs (rows 64wg + r_lo + 8h, columns 8nb + qc, +1) into two float32
  // [BN][D] tiles over K, V and the stages (free once both warpgroups are
  // past their last GEMM), 16-byte chunks swizzled as dQ's (dq_chunk: no bank
  // conflicts either way); then every consumer thread adds 16-byte chunks of
  // whole rows (a warp covers a row's D values: full sectors, a quarter of
  // the instructions of per-thread pairs, whose 32-byte pieces of 8 rows were
  // a tenth of a 2048-key tile's time: the tile's epilogue runs while its SM
  // has nothing else to do, h100-2026-11-28s9).
  static_assert(2 * BN * D * 4 <= L::kDsOff, "the dK/dV tiles fit over K, V and the stages");
  named_sync(1);  // both warpgroups are done with K, V and the stages
  float* s_acc = reinterpret_cast<float*>(smem + pad);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int kr = 64 * wg + r_lo + 8 * h;
#pragma unroll
    for (int nb = 0; nb < kON; ++nb) {
      const int off = kr * D + dq_chunk(kr, 2 * nb + (qc >> 2)) * 4 + (qc & 3);
      *reinterpret_cast<float2*>(s_acc + off) = make_float2(p.scale * dk[nb * 4 + 2 * h], p.scale * dk[nb * 4 + 2 * h + 1]);
      *reinterpret_cast<float2*>(s_acc + BN * D + off) = make_float2(dv[nb * 4 + 2 * h], dv[nb * 4 + 2 * h + 1]);
    }
  }
  named_sync(1);
#if RINGATTN_BWD_TRACE
  if (tracer && wg == 0) bwd_trace_mark(tr_s, kBtStaged0);
#endif
  const int64_t kv0 = batch * p.src.batch_stride + int64_t(t.head) * p.src.head_stride;
  constexpr int CH = D / 4, RPS = NC / CH, NR = BN / RPS;  // chunks per row, rows per sweep, sweeps
  const int ct = tid - NP, c = ct % CH, r0 = ct / CH;
  int64_t gidx[NR];  // element of this thread's chunk in each of its rows (the same in dK and dV)
#pragma unroll
  for (int i = 0; i < NR; ++i) {
    const int r = r0 + i * RPS;
    gidx[i] = r < kn ? kv0 + key_row(t, p.src, n0 + r) * p.src.row_stride + dq_chunk(r, c) * 4 : -1;
  }
  const bool fresh = p.overwrite && p.dk_lo != nullptr;
  // pdl: the launch before may still be running, and earlier passes' adds to
  // these rows (or the first pass's writes) must be complete and visible
  // before this thread's first read or write of dK/dV (or of a received
  // block's float32 partial): wait for it. Everything before read only
  // Q, dO, K/V, LSE, Delta (written before the sequence) and, with atomic
  // dQ, added to dq_acc (additions commute across launches; nothing else
  // touches dq_acc during the sequence). prefetch_acc only pulled lines into
  // L2, where every SM's stores land: nothing stale is read through it.
  if (p.pdl) griddep_wait();
#if RINGATTN_BWD_TRACE
  if (tracer) bwd_trace_mark(tr_s, tr + kBtCAddsStart);
#endif
  grad_add4_rows<Elem, NR>(GradAcc{p.dk_acc, p.dk_hi, p.dk_lo}, gidx, s_acc + r0 * D + c * 4, RPS * D, fresh);
  grad_add4_rows<Elem, NR>(GradAcc{p.dv_acc, p.dv_hi, p.dv_lo}, gidx, s_acc + BN * D + r0 * D + c * 4, RPS * D, fresh);
#if RINGATTN_BWD_TRACE
  if (tracer) {
    bwd_trace_mark(tr_s, tr + kBtCEpilogueDone);
    bwd_trace_st(tr_s, tr + kBtCDqEmptyWait, tr_dq_empty);
    bwd_trace_st(tr_s, tr + kBtCFullWait, tr_full);
    if (unsigned long long* r = bwd_trace_rec(p)) {
      bwd_trace_copy(r, tr_s, tr, kBtCEvents);
      if (wg == 0) {
        r[kBtStaged0] = bwd_trace_ld(tr_s, kBtStaged0);
        r[kBtTimerEnd] = globaltimer_now();
        r[kBtClockEnd] = clock64_now();
      }
    }
  }
#endif
}

}  // namespace ringattn::kern::cuda::detail

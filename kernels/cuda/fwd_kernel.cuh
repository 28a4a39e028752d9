// Fused dilated flash-attention forward: the kernel template.
//
// One CTA = one query block (kBlockM rows) of one tile. It gathers the tile's
// query rows and, block by block, its key/value rows straight from memory
// (each row is D contiguous elements; rows are anywhere: affine stride or an
// index list) with 16-byte cp.async into 128-byte-swizzled shared memory,
// double-buffered. Scores and the online softmax live in registers (fp32,
// exp2 with a log2(e)-prescaled scale); the epilogue stages O through shared
// memory and writes (or log-sum-exp merges into) O and LSE with 16-byte
// accesses.
//
// (Path 3, the warp-specialised persistent kernel that `automatic` runs, is
// in fwd_kernel_ws.cuh.)
// Three matrix paths (Traits::kPath) share everything but the GEMMs:
//   0: mma.sync m16n8k16 + ldmatrix (FA2 style, any sm_80+).
//   1: Hopper wgmma (HGMMA in SASS), A = Q from shared memory for S = Q K^T,
//      A = P from registers for O += P V, B from the same swizzled tiles
//      through matrix descriptors; each GEMM waited for before the softmax.
//   2: as 1, with the softmax of key block j overlapping P_{j-1} V_{j-1} on
//      the tensor cores (FA3's intra-warpgroup pipelining).
// 8 warps; warp w owns query rows 16w..16w+15 in both paths (the wgmma
// m64nNk16 accumulator of warpgroup g gives warp 4g+i rows 16i.. of its 64,
// the same per-thread layout as mma.sync's C fragment), so the softmax,
// masking and epilogue code is shared.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include "attention_fwd.hpp"

namespace ringattn::kern::cuda::detail {

// kPath: 0 = mma.sync, 1 = wgmma, 2 = wgmma with intra-warpgroup overlap.
template <typename Elem, int kHeadDim_, int kPath_>
struct FwdTraits {
  using elem_t = Elem;
  static constexpr int kHeadDim = kHeadDim_;
  static constexpr int kPath = kPath_;
  static constexpr int kBlockM = 128;  // query rows per CTA
  static constexpr int kBlockN = 128;  // keys per main-loop step
  static constexpr int kWarps = 8;     // 16 query rows each
  static constexpr int kThreads = kWarps * 32;
  static constexpr int kChunks = kHeadDim / 8;          // 16-byte chunks per row
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKVBytes = kBlockN * kHeadDim * 2;  // one K (or V) stage
  // Path 2 prefetches K two steps and V one step ahead in a 3-deep ring
  // (Q 32 KB + 3 x 64 KB = 224 KB at D = 128, under the 227 KB limit).
  static constexpr int kStages = kPath_ == 2 ? 3 : 2;
  // Q | K stages | V stages | lse_new[kBlockM] | lse_old[kBlockM]; +1024 for
  // aligning the base to the 128B-swizzle atom (1024 bytes).
  static constexpr int kSmemBytes =
      kQBytes + 2 * kStages * kKVBytes + 2 * kBlockM * 4 + 1024;
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head dim 64 or 128");
  static_assert(sizeof(Elem) == 2, "16-bit inputs");
  static_assert(kWarps * 16 == kBlockM, "a warp owns 16 query rows");
  static_assert((kBlockM * kChunks) % kThreads == 0, "Q load divides evenly");
  static_assert((kBlockN * kChunks) % kThreads == 0, "K/V load divides evenly");
  static_assert(kThreads % kChunks == 0, "a thread keeps one chunk column");
  static_assert(kSmemBytes <= 227 * 1024, "fits the sm_90 shared memory");
  static_assert(kBlockN % 16 == 0 && kBlockN <= 256, "wgmma N");
  static_assert(kPath >= 0 && kPath <= 2, "matrix path");
};

// ---------------------------------------------------------------- helpers --

// Byte offset of 16-byte chunk `ch` of row `row` in a tile of `rows` rows
// stored as kHeadDim/64 column blocks of [rows][128 bytes], 128B swizzle
// (chunk ^= row % 8), the canonical wgmma SW128 layout (K-major for Q and K,
// MN-major for V) and conflict-free for ldmatrix.
__device__ __forceinline__ uint32_t swz(int row, int ch, int rows) {
  return uint32_t((ch >> 3) * rows * 128 + row * 128 + (((ch & 7) ^ (row & 7)) << 4));
}

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  // src-size 0 zero-fills: rows past the tile read nothing and hold zeros
  // (P * V must not see garbage: 0 * NaN is NaN).
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// cp.async writes are generic-proxy writes; wgmma reads through the async
// proxy, so each writing thread fences before the barrier.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
}

// ---- Softmax pieces shared by every path. A warp holds a 16 x (8*kSN) block
// of S as m16n8 accumulator fragments: s[nb*4 + e] is row r_lo + 8*(e>>1),
// column nb*8 + qc + (e&1); each row is spread over the 4 lanes of a quad.

// Sets S to -inf past the tile's keys (col >= k_count) and, if causal, above
// the diagonal (key position in I > query position: col > diag + query row).
template <int kSN, bool kCausal>
__device__ __forceinline__ void mask_scores(float* s, int n0, int qc, int q_row_lo, int k_count, int diag) {
#pragma unroll
  for (int nb = 0; nb < kSN; ++nb) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int col = n0 + nb * 8 + qc + (e & 1);
      const int qi = q_row_lo + ((e >> 1) << 3);
      bool ok = col < k_count;
      if (kCausal) ok = ok && col <= diag + qi;
      if (!ok) s[nb * 4 + e] = -INFINITY;
    }
  }
}

// One online-softmax step (base-2, sl2 = scale * log2 e): updates the running
// row max and sum, turns s into unnormalised probabilities in place and
// returns in corr the factor the O accumulator must be rescaled by.
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

template <typename Elem>
__device__ __forceinline__ uint32_t pack2(float a, float b);
template <>
__device__ __forceinline__ uint32_t pack2<__nv_bfloat16>(float a, float b) {
  __nv_bfloat162 v = __floats2bfloat162_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <>
__device__ __forceinline__ uint32_t pack2<__half>(float a, float b) {
  __half2 v = __floats2half2_rn(a, b);
  return *reinterpret_cast<uint32_t*>(&v);
}
template <typename Elem>
__device__ __forceinline__ float2 unpack2(uint32_t u);
template <>
__device__ __forceinline__ float2 unpack2<__nv_bfloat16>(uint32_t u) {
  return __bfloat1622float2(*reinterpret_cast<__nv_bfloat162*>(&u));
}
template <>
__device__ __forceinline__ float2 unpack2<__half>(uint32_t u) {
  return __half22float2(*reinterpret_cast<__half2*>(&u));
}

// ------------------------------------------------------------- mma.sync ----

__device__ __forceinline__ void ldsm_x4(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                        uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t addr, uint32_t& r0, uint32_t& r1, uint32_t& r2,
                                          uint32_t& r3) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
               : "r"(addr));
}
template <typename Elem>
__device__ __forceinline__ void mma16816(float* d, const uint32_t* a, uint32_t b0, uint32_t b1) {
  if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  } else {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
  }
}

// ---------------------------------------------------------------- wgmma ----

// Shared-memory matrix descriptor, 128-byte swizzle (layout type 1 in bits
// 62-63); addresses and offsets in 16-byte units. K-major SW128: LBO unused
// (1), SBO = 1024 (8 rows of 128 B). MN-major SW128: LBO = stride between
// 64-element column blocks, SBO = 1024.
__device__ __forceinline__ uint64_t gmma_desc(uint32_t saddr, uint32_t lbo, uint32_t sbo) {
  uint64_t d = 0;
  d |= uint64_t((saddr & 0x3FFFF) >> 4);
  d |= uint64_t((lbo >> 4) & 0x3FFF) << 16;
  d |= uint64_t((sbo >> 4) & 0x3FFF) << 32;
  d |= uint64_t(1) << 62;
  return d;
}
__device__ __forceinline__ void wgmma_fence() {
  asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
  asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}

#define RA_R8(i) "+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), \
                 "+f"(d[i + 4]), "+f"(d[i + 5]), "+f"(d[i + 6]), "+f"(d[i + 7])
#define RA_D32 RA_R8(0), RA_R8(8), RA_R8(16), RA_R8(24)
#define RA_D64 RA_D32, RA_R8(32), RA_R8(40), RA_R8(48), RA_R8(56)
// Register lists for the asm strings.
#define RA_L32                                                                          \
  "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22," \
  "%23,%24,%25,%26,%27,%28,%29,%30,%31}"
#define RA_L64                                                                          \
  "{%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22," \
  "%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43," \
  "%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}"

// D[64 x N] (+)= A[64 x 16] (smem, K-major) * B[16 x N] (smem, K-major).
template <typename Elem, int N>
__device__ __forceinline__ void wgmma_ss(float* d, uint64_t da, uint64_t db, int scale_d) {
  static_assert(N == 64 || N == 128, "N");
  if constexpr (N == 128) {
    if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                   "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " RA_L64
                   ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                   : RA_D64 : "l"(da), "l"(db), "r"(scale_d));
    } else {
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                   "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " RA_L64
                   ", %64, %65, p, 1, 1, 0, 0;\n}\n"
                   : RA_D64 : "l"(da), "l"(db), "r"(scale_d));
    }
  } else {
    if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                   "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " RA_L32
                   ", %32, %33, p, 1, 1, 0, 0;\n}\n"
                   : RA_D32 : "l"(da), "l"(db), "r"(scale_d));
    } else {
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %34, 0;\n"
                   "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " RA_L32
                   ", %32, %33, p, 1, 1, 0, 0;\n}\n"
                   : RA_D32 : "l"(da), "l"(db), "r"(scale_d));
    }
  }
}

// D[64 x N] += A[64 x 16] (registers) * B[16 x N] (smem, MN-major: transposed).
template <typename Elem, int N>
__device__ __forceinline__ void wgmma_rs(float* d, const uint32_t* a, uint64_t db) {
  static_assert(N == 64 || N == 128, "N");
  if constexpr (N == 128) {
    if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                   "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 " RA_L64
                   ", {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
                   : RA_D64 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
    } else {
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                   "wgmma.mma_async.sync.aligned.m64n128k16.f32.f16.f16 " RA_L64
                   ", {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
                   : RA_D64 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
    }
  } else {
    if constexpr (std::is_same_v<Elem, __nv_bfloat16>) {
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                   "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 " RA_L32
                   ", {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
                   : RA_D32 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
    } else {
      asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
                   "wgmma.mma_async.sync.aligned.m64n64k16.f32.f16.f16 " RA_L32
                   ", {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
                   : RA_D32 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
    }
  }
}

// --------------------------------------------------------------- kernel ----

template <typename Traits, bool kCausal>
__global__ void __launch_bounds__(Traits::kThreads, 1) fwd_kernel(const FwdParams p) {
  using Elem = typename Traits::elem_t;
  constexpr int D = Traits::kHeadDim;
  constexpr int BM = Traits::kBlockM;
  constexpr int BN = Traits::kBlockN;
  constexpr int CH = Traits::kChunks;
  constexpr int NT = Traits::kThreads;
  constexpr int kSN = BN / 8;  // 8-column score blocks per thread row
  constexpr int kON = D / 8;   // 8-column output blocks

  extern __shared__ uint8_t smem_raw[];
  // Align to the 1024-byte swizzle atom (descriptor base offset 0).
  const uint32_t raw_addr = smem_u32(smem_raw);
  const uint32_t pad = ((raw_addr + 1023u) & ~1023u) - raw_addr;
  uint8_t* smem = smem_raw + pad;
  const uint32_t s_q = raw_addr + pad;
  const uint32_t s_k = s_q + Traits::kQBytes;
  const uint32_t s_v = s_k + Traits::kStages * Traits::kKVBytes;
  float* s_lse_new =
      reinterpret_cast<float*>(smem + Traits::kQBytes + 2 * Traits::kStages * Traits::kKVBytes);
  float* s_lse_old = s_lse_new + BM;

  const int tid = threadIdx.x;
  const int warp = tid >> 5;
  const int lane = tid & 31;
  const int batch = blockIdx.y;

  // Find the tile of this CTA: last i with prefix[i] <= blockIdx.x.
  const int cta = blockIdx.x;
  int lo = 0, hi = p.num_tiles - 1;
  while (lo < hi) {
    const int mid = (lo + hi + 1) >> 1;
    if (__ldg(p.tile_block_prefix + mid) <= cta) lo = mid; else hi = mid - 1;
  }
  const Tile t = p.tiles[lo];
  const int m0 = (cta - __ldg(p.tile_block_prefix + lo)) * BM;  // first query of this block
  const int q_rows = min(BM, t.q_count - m0);                     // valid query rows

  // Keys visible to the last valid query of this block (causal trims the tail).
  int n_end = t.k_count;
  int64_t diag64 = t.q_idx0 - t.k_idx0;  // key j visible to query i iff j <= diag + i
  if (diag64 > (int64_t(1) << 30)) diag64 = int64_t(1) << 30;
  if (diag64 < -(int64_t(1) << 30)) diag64 = -(int64_t(1) << 30);
  const int diag = int(diag64);
  if (kCausal) {
    const int64_t last = int64_t(diag) + m0 + q_rows;  // keys [0, last) visible to some row
    n_end = int(last < 0 ? 0 : (last < t.k_count ? last : t.k_count));
  }
  const int n_blocks = (n_end + BN - 1) / BN;

  const Elem* __restrict__ gq = static_cast<const Elem*>(p.q) + batch * p.q_batch_stride +
                                int64_t(t.head) * D;
  const Elem* __restrict__ gk = static_cast<const Elem*>(p.src.k) + batch * p.src.batch_stride +
                                int64_t(t.head) * p.src.head_stride;
  const Elem* __restrict__ gv = static_cast<const Elem*>(p.src.v) + batch * p.src.batch_stride +
                                int64_t(t.head) * p.src.head_stride;

  // Each thread always moves the same 16-byte chunk column of its rows.
  const int my_ch = tid % CH;
  const int my_row0 = tid / CH;
  constexpr int kRowStep = NT / CH;

  auto load_rows = [&](const Elem* __restrict__ g, uint32_t s_base, int blk) {
    const int n0 = blk * BN;
#pragma unroll
    for (int it = 0; it < BN / kRowStep; ++it) {
      const int row = my_row0 + it * kRowStep;
      const int j = n0 + row;
      const bool valid = j < t.k_count;
      int64_t srow = 0;
      if (valid) srow = t.k_stride ? t.k_row0 + int64_t(j) * t.k_stride : int64_t(__ldg(p.src.index + t.k_row0 + j));
      const int64_t off = valid ? srow * p.src.row_stride + my_ch * 8 : 0;
      cp_async16(s_base + swz(row, my_ch, BN), g + off, valid);
    }
  };
  auto load_k = [&](int blk, int stage) { load_rows(gk, s_k + stage * Traits::kKVBytes, blk); };
  auto load_v = [&](int blk, int stage) { load_rows(gv, s_v + stage * Traits::kKVBytes, blk); };

  // Prologue: Q and the first K/V block in one group.
#pragma unroll
  for (int it = 0; it < BM / kRowStep; ++it) {
    const int row = my_row0 + it * kRowStep;
    const bool valid = row < q_rows;
    const int64_t off =
        valid ? (t.q_row0 + int64_t(m0 + row) * t.q_stride) * p.q_row_stride + my_ch * 8 : 0;
    cp_async16(s_q + swz(row, my_ch, BM), gq + off, valid);
  }
  if constexpr (Traits::kPath == 2) {
    if (n_blocks > 0) load_k(0, 0);
    cp_async_commit();
    if (n_blocks > 1) load_k(1, 1);
    if (n_blocks > 0) load_v(0, 0);
    cp_async_commit();
  }

  // Per-thread rows: r0 = 16*warp + lane/4 and r0 + 8.
  const int r_lo = warp * 16 + (lane >> 2);
  const int qc = (lane & 3) * 2;  // column offset inside an 8-column block
  float o_acc[kON * 4];
#pragma unroll
  for (int i = 0; i < kON * 4; ++i) o_acc[i] = 0.f;
  float row_max[2] = {-INFINITY, -INFINITY};  // raw scores
  float row_sum[2] = {0.f, 0.f};              // per-thread partial sums
  const float sl2 = p.scale * 1.4426950408889634f;

  // ---- shared pieces of one key block ----
  auto gemm_s_wgmma = [&](float* s, uint32_t sk) {
    const int wg = warp >> 2;
#pragma unroll
    for (int kk = 0; kk < D / 16; ++kk) {
      const uint32_t qa = s_q + (kk >> 2) * BM * 128 + wg * 64 * 128 + (kk & 3) * 32;
      const uint32_t kb = sk + (kk >> 2) * BN * 128 + (kk & 3) * 32;
      wgmma_ss<Elem, BN>(s, gmma_desc(qa, 16, 1024), gmma_desc(kb, 16, 1024), kk > 0);
    }
  };
  auto gemm_pv_wgmma = [&](uint32_t (*pf)[4], uint32_t sv) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
      wgmma_rs<Elem, D>(o_acc, pf[kk], gmma_desc(sv + kk * 16 * 128, BN * 128, 1024));
  };
  // Masks keys past the tile (and causal), updates the running max/sum and
  // turns s into unnormalised probabilities in place; returns the factor the
  // O accumulator must be rescaled by.
  auto softmax_block = [&](float* s, int blk, float* corr) {
    const int n0 = blk * BN;
    const bool need_mask =
        n0 + BN > t.k_count || (kCausal && n0 + BN - 1 > diag + m0 + warp * 16);
    if (need_mask) mask_scores<kSN, kCausal>(s, n0, qc, m0 + r_lo, t.k_count, diag);
    online_softmax_step<kSN>(s, row_max, row_sum, sl2, corr);
  };
  auto rescale_o = [&](const float* corr) {
#pragma unroll
    for (int ob = 0; ob < kON; ++ob) {
      o_acc[ob * 4 + 0] *= corr[0];
      o_acc[ob * 4 + 1] *= corr[0];
      o_acc[ob * 4 + 2] *= corr[1];
      o_acc[ob * 4 + 3] *= corr[1];
    }
  };
  // P as the A operand of m16n8k16 / wgmma k16 (same fragment layout).
  auto pack_p = [&](const float* s, uint32_t (*pf)[4]) {
#pragma unroll
    for (int nb = 0; nb < kSN; ++nb) {
      pf[nb >> 1][(nb & 1) * 2 + 0] = pack2<Elem>(s[nb * 4 + 0], s[nb * 4 + 1]);
      pf[nb >> 1][(nb & 1) * 2 + 1] = pack2<Elem>(s[nb * 4 + 2], s[nb * 4 + 3]);
    }
  };

  if constexpr (Traits::kPath == 2) {
    // wgmma, pipelined inside the warpgroup (FA3's intra-warpgroup overlap):
    // step j issues S_j = Q K_j^T and O += P_{j-1} V_{j-1} back to back, runs
    // the softmax of S_j while the tensor cores work on P_{j-1} V_{j-1}, then
    // rescales O. K_j and V_{j-1} are live at once, so step j loads K_{j+1}
    // and V_j (one group, one barrier per step).
    // Groups: prologue {Q, K_0}, {K_1, V_0}; step j commits {K_{j+2}, V_{j+1}}
    // (possibly empty), so at the top of step j waiting for all but the
    // newest group leaves K_j and V_{j-1} landed. Stage of block i: i % 3.
    // K stage (j+2)%3 last held K_{j-1} (read by S_{j-1}, waited in step
    // j-1); V stage (j+1)%3 last held V_{j-2} (read by P V in step j-1).
    uint32_t pf[BN / 16][4];
    int st = 0;  // stage of block blk
    for (int blk = 0; blk < n_blocks; ++blk) {
      cp_async_wait<1>();
      fence_proxy_async();
      __syncthreads();
      const int st1 = st == 2 ? 0 : st + 1, st2 = st1 == 2 ? 0 : st1 + 1, stm1 = st2;
      if (blk + 2 < n_blocks) load_k(blk + 2, st2);
      if (blk + 1 < n_blocks) load_v(blk + 1, st1);
      cp_async_commit();
      float s[kSN * 4];
      wgmma_fence();
      gemm_s_wgmma(s, s_k + st * Traits::kKVBytes);
      wgmma_commit();
      if (blk > 0) {
        gemm_pv_wgmma(pf, s_v + stm1 * Traits::kKVBytes);
        wgmma_commit();
        wgmma_wait<1>();  // S_j done; P_{j-1} V_{j-1} may still run
      } else {
        wgmma_wait<0>();
      }
      float corr[2];
      softmax_block(s, blk, corr);
      wgmma_wait<0>();  // P_{j-1} V_{j-1} done: O and pf are free
      rescale_o(corr);
      pack_p(s, pf);
      st = st1;
    }
    if (n_blocks > 0) {
      cp_async_wait<0>();
      fence_proxy_async();
      __syncthreads();
      wgmma_fence();
      gemm_pv_wgmma(pf, s_v + ((n_blocks - 1) % 3) * Traits::kKVBytes);
      wgmma_commit();
      wgmma_wait<0>();
    }
  } else {
    if (n_blocks > 0) { load_k(0, 0); load_v(0, 0); }
    cp_async_commit();
    for (int blk = 0; blk < n_blocks; ++blk) {
      const int stage = blk & 1;
      cp_async_wait<0>();
      if constexpr (Traits::kPath == 1) fence_proxy_async();
      __syncthreads();
      if (blk + 1 < n_blocks) {
        load_k(blk + 1, stage ^ 1);
        load_v(blk + 1, stage ^ 1);
        cp_async_commit();
      }
      const uint32_t sk = s_k + stage * Traits::kKVBytes;
      const uint32_t sv = s_v + stage * Traits::kKVBytes;
      float s[kSN * 4];
      if constexpr (Traits::kPath == 1) {
        wgmma_fence();
        gemm_s_wgmma(s, sk);
        wgmma_commit();
        wgmma_wait<0>();
      } else {
#pragma unroll
        for (int i = 0; i < kSN * 4; ++i) s[i] = 0.f;
#pragma unroll
        for (int kk = 0; kk < D / 16; ++kk) {
          uint32_t a[4];
          ldsm_x4(s_q + swz(warp * 16 + (lane & 15), 2 * kk + (lane >> 4), BM), a[0], a[1], a[2], a[3]);
#pragma unroll
          for (int np = 0; np < BN / 16; ++np) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4(sk + swz(np * 16 + ((lane >> 4) << 3) + (lane & 7), 2 * kk + ((lane >> 3) & 1), BN),
                    b0, b1, b2, b3);
            mma16816<Elem>(s + (2 * np) * 4, a, b0, b1);
            mma16816<Elem>(s + (2 * np + 1) * 4, a, b2, b3);
          }
        }
      }
      float corr[2];
      softmax_block(s, blk, corr);
      rescale_o(corr);
      uint32_t pf[BN / 16][4];
      pack_p(s, pf);
      if constexpr (Traits::kPath == 1) {
        wgmma_fence();
        gemm_pv_wgmma(pf, sv);
        wgmma_commit();
        wgmma_wait<0>();
      } else {
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
#pragma unroll
          for (int dp = 0; dp < D / 16; ++dp) {
            uint32_t b0, b1, b2, b3;
            ldsm_x4_t(sv + swz(kk * 16 + (lane & 7) + (((lane >> 3) & 1) << 3), 2 * dp + (lane >> 4), BN),
                      b0, b1, b2, b3);
            mma16816<Elem>(o_acc + (2 * dp) * 4, pf[kk], b0, b1);
            mma16816<Elem>(o_acc + (2 * dp + 1) * 4, pf[kk], b2, b3);
          }
        }
      }
    }
  }
  cp_async_wait<0>();

  // ---- epilogue ----
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 1);
    row_sum[h] += __shfl_xor_sync(0xffffffffu, row_sum[h], 2);
  }
  float inv[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) inv[h] = row_sum[h] > 0.f ? 1.f / row_sum[h] : 0.f;
  __syncthreads();  // every warp is done with Q's shared memory
  // Stage normalised O (input dtype) into the Q buffer, same swizzle.
#pragma unroll
  for (int ob = 0; ob < kON; ++ob) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = r_lo + h * 8;
      const uint32_t v = pack2<Elem>(o_acc[ob * 4 + 2 * h] * inv[h], o_acc[ob * 4 + 2 * h + 1] * inv[h]);
      *reinterpret_cast<uint32_t*>(smem + swz(row, ob, BM) + qc * 2) = v;
    }
  }
  if ((lane & 3) == 0) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = r_lo + h * 8;
      s_lse_new[row] = row_sum[h] > 0.f
                           ? (row_max[h] * sl2 + __log2f(row_sum[h])) * 0.6931471805599453f
                           : -INFINITY;
    }
  }
  const int64_t lse_base = batch * p.lse_batch_stride + t.head;
  if (p.accumulate && tid < BM) {
    s_lse_old[tid] = tid < q_rows
                         ? p.lse[lse_base + (t.q_row0 + int64_t(m0 + tid) * t.q_stride) * p.lse_row_stride]
                         : -INFINITY;
  }
  __syncthreads();

  Elem* __restrict__ go = static_cast<Elem*>(p.o) + batch * p.q_batch_stride + int64_t(t.head) * D;
#pragma unroll
  for (int it = 0; it < BM / kRowStep; ++it) {
    const int row = my_row0 + it * kRowStep;
    if (row >= q_rows) continue;
    const int64_t qrow = t.q_row0 + int64_t(m0 + row) * t.q_stride;
    uint4* dst = reinterpret_cast<uint4*>(go + qrow * p.q_row_stride + my_ch * 8);
    const uint4 o2 = *reinterpret_cast<const uint4*>(smem + swz(row, my_ch, BM));
    const float l2 = s_lse_new[row];
    float* lse_dst = p.lse + lse_base + qrow * p.lse_row_stride;
    if (!p.accumulate) {
      *dst = o2;  // zeros when nothing is visible
      if (my_ch == 0) *lse_dst = l2;
      continue;
    }
    if (l2 == -INFINITY) continue;  // nothing new for this row: leave O and LSE
    const float l1 = s_lse_old[row];
    if (l1 == -INFINITY) {
      *dst = o2;
      if (my_ch == 0) *lse_dst = l2;
      continue;
    }
    // m = max(l1,l2); l = m + log(exp(l1-m) + exp(l2-m)); o = o1 e^(l1-l) + o2 e^(l2-l)
    const float m = fmaxf(l1, l2);
    const float e1 = __expf(l1 - m), e2 = __expf(l2 - m);
    const float l = m + __logf(e1 + e2);
    const float w1 = e1 / (e1 + e2), w2 = e2 / (e1 + e2);
    const uint4 o1 = *dst;
    const uint32_t* a1 = reinterpret_cast<const uint32_t*>(&o1);
    const uint32_t* a2 = reinterpret_cast<const uint32_t*>(&o2);
    uint4 out;
    uint32_t* ao = reinterpret_cast<uint32_t*>(&out);
#pragma unroll
    for (int k = 0; k < 4; ++k) {
      const float2 x1 = unpack2<Elem>(a1[k]);
      const float2 x2 = unpack2<Elem>(a2[k]);
      ao[k] = pack2<Elem>(x1.x * w1 + x2.x * w2, x1.y * w1 + x2.y * w2);
    }
    *dst = out;
    if (my_ch == 0) *lse_dst = l;
  }
}

}  // namespace ringattn::kern::cuda::detail

#include "fwd_kernel_ws.cuh"

namespace ringattn::kern::cuda::detail {

// Launch one pass for a fixed dtype / head dim; causal and path are switched
// here (the flash-attention habit: runtime values become template constants in
// one place). Explicitly instantiated once per (dtype, head dim) file.
template <typename Elem, int D>
cudaError_t run_fwd(const FwdParams& p, cudaStream_t stream);

template <typename Traits, bool kCausal>
cudaError_t launch_fwd_kernel(const FwdParams& p, cudaStream_t stream) {
  auto kernel = fwd_kernel<Traits, kCausal>;
  cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                       Traits::kSmemBytes);
  if (e != cudaSuccess) return e;
  dim3 grid(unsigned(p.num_blocks), unsigned(p.batch));
  kernel<<<grid, Traits::kThreads, Traits::kSmemBytes, stream>>>(p);
  return cudaGetLastError();
}

template <typename Elem, int D>
cudaError_t run_fwd(const FwdParams& p, cudaStream_t stream) {
  // automatic = wgmma_ws (warp-specialised, persistent, 2-stage ring): the
  // fastest correct path measured on H100 (bench/results/cuda_kernel_notes.md:
  // 1.45-1.7x path 1 on longnet4, run 4 of 2026-11-25).
  switch (p.variant) {
    case FwdVariant::mma_sync: {
      using T = FwdTraits<Elem, D, 0>;
      return p.causal ? launch_fwd_kernel<T, true>(p, stream) : launch_fwd_kernel<T, false>(p, stream);
    }
    case FwdVariant::wgmma: {
      using T = FwdTraits<Elem, D, 1>;
      return p.causal ? launch_fwd_kernel<T, true>(p, stream) : launch_fwd_kernel<T, false>(p, stream);
    }
    case FwdVariant::wgmma_ws_3stage: {
      using T = FwdWsTraits<Elem, D, 3>;
      return p.causal ? launch_fwd_ws_kernel<T, true>(p, stream) : launch_fwd_ws_kernel<T, false>(p, stream);
    }
    case FwdVariant::wgmma_pipelined: {
      using T = FwdTraits<Elem, D, 2>;
      return p.causal ? launch_fwd_kernel<T, true>(p, stream) : launch_fwd_kernel<T, false>(p, stream);
    }
    default: {  // automatic, wgmma_ws
      using T = FwdWsTraits<Elem, D, 2>;
      return p.causal ? launch_fwd_ws_kernel<T, true>(p, stream) : launch_fwd_ws_kernel<T, false>(p, stream);
    }
  }
}

}  // namespace ringattn::kern::cuda::detail

// Hopper (sm_90a) instructions the attention kernels use, one thin wrapper
// each: 16-byte cp.async gathers, mbarriers, named barriers, register
// reallocation, wgmma with shared-memory matrix descriptors, and the 16-bit
// pack/unpack and exp2 of the math. No policy here: the roles (load.cuh,
// mainloop_fwd.cuh, epilogue.cuh) decide what to issue when.
#pragma once
#include <cstdint>
#include <type_traits>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace ringattn::kern::cuda::detail {

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// ------------------------------------------------------------ async copies --

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  // src-size 0 zero-fills: rows past the tile read nothing and hold zeros
  // (P * V must not see garbage: 0 * NaN is NaN).
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
               "r"(valid ? 16 : 0));
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
// threadIdx.x read by a volatile asm: the compiler may not hoist or reuse it,
// so values derived from it are recomputed where they are used (register
// pressure: the backward's producer runs at 24 registers).
__device__ __forceinline__ int thread_x_volatile() {
  int t;
  asm volatile("mov.u32 %0, %%tid.x;\n" : "=r"(t));
  return t;
}
// Every cp.async this thread issued, committed to a group or not, has landed.
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;\n" ::: "memory"); }
// The mbarrier at `bar` sees one arrival when every cp.async this thread has
// issued so far has landed (noinc: the arrival is counted in the barrier's
// expected count).
__device__ __forceinline__ void cp_async_mbar_arrive_noinc(uint32_t bar) {
  asm volatile("cp.async.mbarrier.arrive.noinc.shared::cta.b64 [%0];\n" ::"r"(bar) : "memory");
}
// cp.async writes are generic-proxy writes; wgmma reads through the async
// proxy: a reader fences after the barrier that made the writes visible.
__device__ __forceinline__ void fence_proxy_async() {
  asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}
__device__ __forceinline__ void prefetch_l2(const void* p) {
  asm volatile("prefetch.global.L2 [%0];\n" ::"l"(p));
}

// --------------------------------------------------------------- barriers --

__device__ __forceinline__ void mbar_init(uint32_t bar, int count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void fence_mbar_init() {
  asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
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
// The barrier's phase also waits for `bytes` more bytes of asynchronous
// copies (TMA) that complete_tx on it; not an arrival (the issuing thread
// still arrives as before). Before the copies are issued.
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
  asm volatile("mbarrier.expect_tx.relaxed.cta.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
// TMA tensor load: the box at coordinates {c0, .., c4} of the 5-D tensor map
// at `map` (a generic address: a __grid_constant__ parameter's) into shared
// memory at dst (the map's swizzled layout; 1024-aligned for the 128-byte
// swizzle), completing its bytes on the mbarrier at bar (mbar_expect_tx).
__device__ __forceinline__ void tma_load_5d(uint32_t dst, const void* map, uint32_t bar, int c0, int c1, int c2,
                                            int c3, int c4) {
  asm volatile(
      "cp.async.bulk.tensor.5d.shared::cluster.global.tile.mbarrier::complete_tx::bytes [%0], [%1, {%3, %4, %5, %6, "
      "%7}], [%2];\n" ::"r"(dst),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(bar), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(c4)
      : "memory");
}
// Named barrier ids (bar.sync / bar.arrive; 0 is __syncthreads):
//   forward (fwd_kernel.cuh): 1, 2  the consumer warpgroups' ping-pong (256 threads, mainloop_fwd.cuh)
//                             3     the producer warpgroup alone (128, producer_sync)
//                             4, 5  consumer warpgroup 0 / 1 alone: its epilogue's A (128, wg_sync_or, epilogue.cuh)
//                             6, 7  the same: its epilogue's B and C (128, wg_sync)
//   backward (bwd_*.cuh):     1 (both consumer warpgroups), 2, 3 their ping-pong (256 threads)
// Named barriers over the 256 consumer threads.
__device__ __forceinline__ void named_sync(int id) {
  asm volatile("bar.sync %0, 256;\n" ::"r"(id) : "memory");
}
// The producer warpgroup alone (barrier 3, 128 threads).
__device__ __forceinline__ void producer_sync() { asm volatile("bar.sync 3, 128;\n" ::: "memory"); }
__device__ __forceinline__ void named_arrive(int id) {
  asm volatile("bar.arrive %0, 256;\n" ::"r"(id) : "memory");
}

// One consumer warpgroup alone (128 threads; the forward's epilogue, ids 4 to 7).
__device__ __forceinline__ void wg_sync(int id) { asm volatile("bar.sync %0, 128;\n" ::"r"(id) : "memory"); }
// The same, returning whether `pred` held in any of the 128 threads (bar.red.or).
__device__ __forceinline__ bool wg_sync_or(int id, bool pred) {
  uint32_t r;
  asm volatile(
      "{\n.reg .pred p, q;\nsetp.ne.u32 p, %2, 0;\nbar.red.or.pred q, %1, 128, p;\nselp.u32 %0, 1, 0, q;\n}\n"
      : "=r"(r)
      : "r"(id), "r"(uint32_t(pred))
      : "memory");
  return r != 0;
}

// 16 bytes to global memory if pred != 0.
__device__ __forceinline__ void stg128_if(void* p, uint4 v, uint32_t pred) {
  asm volatile("{\n.reg .pred p;\nsetp.ne.u32 p, %5, 0;\n@p st.global.v4.b32 [%0], {%1, %2, %3, %4};\n}\n" ::"l"(p),
               "r"(v.x), "r"(v.y), "r"(v.z), "r"(v.w), "r"(pred)
               : "memory");
}

// *addr += (a, b, c, d) as one L2 atomic (sm_90; addr 16-byte aligned).
__device__ __forceinline__ void red_add_v4(float* addr, float a, float b, float c, float d) {
  asm volatile("red.global.add.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"l"(addr), "f"(a), "f"(b), "f"(c), "f"(d)
               : "memory");
}

// ------------------------------------------- programmatic dependent launch --
// (PDL, sm_90; FwdParams::pdl.) The kernel launched after this one on the
// stream with programmatic stream serialization may start once every CTA of
// this grid has executed launch_dependents or exited (a hint: repeats in a CTA
// do nothing more; without such a dependent it does nothing).
__device__ __forceinline__ void griddep_launch_dependents() {
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
}
// Blocks the calling thread until the grid this one was launched behind has
// completed and its memory operations are visible to this grid. Only what
// follows in this thread is ordered (every thread that touches the earlier
// kernel's data waits itself); the memory clobber keeps the compiler from
// moving loads or stores across it. A no-op when the launch was not
// programmatic.
__device__ __forceinline__ void griddep_wait() { asm volatile("griddepcontrol.wait;\n" ::: "memory"); }

// Register reallocation between warpgroups (every warp of the warpgroup).
template <int kRegs>
__device__ __forceinline__ void warpgroup_reg_dealloc() {
  asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}
template <int kRegs>
__device__ __forceinline__ void warpgroup_reg_alloc() {
  asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(kRegs));
}

// ----------------------------------------------------- shared memory, b16 --

// Four 8 x 8 matrices of 16-bit values to/from shared memory (sm_90
// stmatrix / ldmatrix, every lane of the warp): lanes 8i..8i+7 give the
// addresses of the 8 16-byte rows of matrix i; register i of lane t holds
// row t / 4, columns 2 (t % 4), +1 of matrix i (the low half the lower
// column): the wgmma / mma accumulator fragment (softmax.cuh).
__device__ __forceinline__ void stmatrix_x4(uint32_t addr, uint32_t a, uint32_t b, uint32_t c, uint32_t d) {
  asm volatile("stmatrix.sync.aligned.m8n8.x4.shared.b16 [%0], {%1, %2, %3, %4};\n" ::"r"(addr), "r"(a), "r"(b),
               "r"(c), "r"(d)
               : "memory");
}
__device__ __forceinline__ void ldmatrix_x4(uint32_t addr, uint32_t* r) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr)
               : "memory");
}
__device__ __forceinline__ uint4 lds128(uint32_t addr) {
  uint4 v;
  asm volatile("ld.shared.v4.b32 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(addr)
               : "memory");
  return v;
}
__device__ __forceinline__ void sts8(uint32_t addr, uint32_t v) {
  asm volatile("st.shared.u8 [%0], %1;\n" ::"r"(addr), "r"(v) : "memory");
}
__device__ __forceinline__ uint32_t lds32(uint32_t addr) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(addr) : "memory");
  return v;
}
__device__ __forceinline__ uint64_t lds64(uint32_t addr) {
  uint64_t v;
  asm volatile("ld.shared.u64 %0, [%1];\n" : "=l"(v) : "r"(addr) : "memory");
  return v;
}

// ------------------------------------------------------------------ wgmma --

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
// The descriptor d moved by `bytes` (a multiple of 16) in shared memory: only
// the start-address field (bits 0-13, 16-byte units) changes, and it cannot
// carry (shared addresses stay below 228 KB < 256 KB). Built from a base made
// once per GEMM, the k-steps' descriptors cost one add each instead of the
// mask, shift and move per wgmma that ptxas emitted from gmma_desc(base + off)
// (~12 instructions before every HGMMA of the backward; bench/bwd_profile.sh).
__device__ __forceinline__ uint64_t gmma_desc_add(uint64_t d, uint32_t bytes) {
  return (d & 0xFFFFFFFF00000000ull) | uint64_t(uint32_t(d) + (bytes >> 4));
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

// Accumulator operand lists of m64nNk16 (N/2 floats per thread).
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
// One wgmma, A and B from shared memory: shape (m64nNk16), input type, the
// accumulator lists and the operand numbers of A, B and scale-d.
#define RA_WGMMA_SS(SHAPE, TY, LIST, ACC, A, B, SC)                                        \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #SC ", 0;\n"                           \
               "wgmma.mma_async.sync.aligned." SHAPE ".f32." TY "." TY " " LIST ", %" #A \
               ", %" #B ", p, 1, 1, 0, 0;\n}\n"                                            \
               : ACC : "l"(da), "l"(db), "r"(scale_d))
// The same with both operands MN-major (transposed: imm-trans-a = imm-trans-b = 1).
#define RA_WGMMA_SS_TT(SHAPE, TY, LIST, ACC, A, B, SC)                                     \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %" #SC ", 0;\n"                           \
               "wgmma.mma_async.sync.aligned." SHAPE ".f32." TY "." TY " " LIST ", %" #A \
               ", %" #B ", p, 1, 1, 1, 1;\n}\n"                                            \
               : ACC : "l"(da), "l"(db), "r"(scale_d))
// One wgmma, A from registers (4 x 32-bit, operands A..A+3), B from shared memory.
#define RA_WGMMA_RS(SHAPE, TY, LIST, ACC, A0, A1, A2, A3, B)                                       \
  asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"                                          \
               "wgmma.mma_async.sync.aligned." SHAPE ".f32." TY "." TY " " LIST ", {%" #A0 ",%" #A1 \
               ",%" #A2 ",%" #A3 "}, %" #B ", p, 1, 1, 1;\n}\n"                                     \
               : ACC : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db))

// D[64 x N] (+)= A[64 x 16] (smem, K-major) * B[16 x N] (smem, K-major).
template <typename Elem, int N>
__device__ __forceinline__ void wgmma_ss(float* d, uint64_t da, uint64_t db, int scale_d) {
  static_assert(N == 64 || N == 128, "N");
  constexpr bool kBf16 = std::is_same_v<Elem, __nv_bfloat16>;
  if constexpr (N == 128) {
    if constexpr (kBf16) RA_WGMMA_SS("m64n128k16", "bf16", RA_L64, RA_D64, 64, 65, 66);
    else RA_WGMMA_SS("m64n128k16", "f16", RA_L64, RA_D64, 64, 65, 66);
  } else {
    if constexpr (kBf16) RA_WGMMA_SS("m64n64k16", "bf16", RA_L32, RA_D32, 32, 33, 34);
    else RA_WGMMA_SS("m64n64k16", "f16", RA_L32, RA_D32, 32, 33, 34);
  }
}

// D[64 x 64] (+)= A[64 x 16] (smem, MN-major) * B[16 x 64] (smem, MN-major):
// both operands stored k-row by k-row (the backward's dQ = dS K from dS^T).
template <typename Elem>
__device__ __forceinline__ void wgmma_ss_tt64(float* d, uint64_t da, uint64_t db, int scale_d) {
  constexpr bool kBf16 = std::is_same_v<Elem, __nv_bfloat16>;
  if constexpr (kBf16) RA_WGMMA_SS_TT("m64n64k16", "bf16", RA_L32, RA_D32, 32, 33, 34);
  else RA_WGMMA_SS_TT("m64n64k16", "f16", RA_L32, RA_D32, 32, 33, 34);
}

// D[64 x N] += A[64 x 16] (registers) * B[16 x N] (smem, MN-major: transposed).
template <typename Elem, int N>
__device__ __forceinline__ void wgmma_rs(float* d, const uint32_t* a, uint64_t db) {
  static_assert(N == 64 || N == 128, "N");
  constexpr bool kBf16 = std::is_same_v<Elem, __nv_bfloat16>;
  if constexpr (N == 128) {
    if constexpr (kBf16) RA_WGMMA_RS("m64n128k16", "bf16", RA_L64, RA_D64, 64, 65, 66, 67, 68);
    else RA_WGMMA_RS("m64n128k16", "f16", RA_L64, RA_D64, 64, 65, 66, 67, 68);
  } else {
    if constexpr (kBf16) RA_WGMMA_RS("m64n64k16", "bf16", RA_L32, RA_D32, 32, 33, 34, 35, 36);
    else RA_WGMMA_RS("m64n64k16", "f16", RA_L32, RA_D32, 32, 33, 34, 35, 36);
  }
}

#undef RA_WGMMA_SS
#undef RA_WGMMA_SS_TT
#undef RA_WGMMA_RS
#undef RA_L64
#undef RA_L32
#undef RA_D64
#undef RA_D32
#undef RA_R8

// ------------------------------------------------------------------- math --

__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
  return y;
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

// Clock and placement reads for the kernels' optional timing traces
// (fwd_trace.cuh, bwd_trace.cuh): the SM's cycle counter (64 and 32 bits;
// only differences within one SM mean something), the global timer (ns) and
// the SM's id.
__device__ __forceinline__ unsigned long long clock64_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%clock64;\n" : "=l"(t)::"memory");
  return t;
}
__device__ __forceinline__ uint32_t clock32_now() {
  uint32_t t;
  asm volatile("mov.u32 %0, %%clock;\n" : "=r"(t)::"memory");
  return t;
}
__device__ __forceinline__ unsigned long long globaltimer_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;\n" : "=l"(t)::"memory");
  return t;
}
__device__ __forceinline__ unsigned smid_now() {
  unsigned s;
  asm volatile("mov.u32 %0, %%smid;\n" : "=r"(s));
  return s;
}

}  // namespace ringattn::kern::cuda::detail

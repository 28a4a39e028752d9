// Fused dilated flash-attention backward: dispatch over dtype and head dim,
// and the small kernels around the passes (Delta, the float32 -> 16-bit
// conversion of the gradients, the owner's add of returned partials).
#include <cuda.h>  // CUtensorMap and its enums (types only: the encoder comes through the runtime)
#include <cudaTypedefs.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>

#include "kernels/cuda/attention_bwd.hpp"
#include "kernels/cuda/bwd_common.cuh"
#include "kernels/cuda/sm90_ptx.cuh"

namespace ringattn::kern::cuda {

namespace detail {
template <typename Elem, int D>
cudaError_t run_bwd(const BwdParams& p, cudaStream_t stream, bool* launched);
extern template cudaError_t run_bwd<__nv_bfloat16, 64>(const BwdParams&, cudaStream_t, bool*);
extern template cudaError_t run_bwd<__nv_bfloat16, 128>(const BwdParams&, cudaStream_t, bool*);
extern template cudaError_t run_bwd<__half, 64>(const BwdParams&, cudaStream_t, bool*);
extern template cudaError_t run_bwd<__half, 128>(const BwdParams&, cudaStream_t, bool*);
}  // namespace detail

namespace {

// cuTensorMapEncodeTiled through the runtime's driver entry point (no libcuda
// link); null where the driver lacks it (every block then takes cp.async).
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* f = nullptr;
    cudaDriverEntryPointQueryResult q = cudaDriverEntryPointSymbolNotFound;
    const cudaError_t pending = cudaPeekAtLastError();  // the caller's, left as it was
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) != cudaSuccess ||
        q != cudaDriverEntryPointSuccess) {
      if (pending == cudaSuccess) (void)cudaGetLastError();  // ours (not sticky)
      return PFN_cuTensorMapEncodeTiled_v12000(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(f);
  }();
  return fn;
}

// Tensor maps i < 4 of two 16-bit tensors a and b of the same layout
// (BwdParams::q_maps / k_maps, see there): B x rows x H x D with the given
// element strides (rows = batch_stride / row_stride) as {D, H, r,
// ceil(rows / r), B}, r = 2^i: element (c, h, o, j, b) is row o + j r of head
// h. Only whole 64-row blocks of a tile are loaded through them, so every row
// they read is a row of the tile (a map's last j may name rows past the
// tensor: never asked for). Returns the mask of the maps encoded.
uint32_t encode_maps(const BwdParams& p, const void* a, const void* b, int64_t batch_stride, int64_t row_stride,
                     int64_t head_stride, unsigned char (*ma)[128], unsigned char (*mb)[128]) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  const int64_t d = p.head_dim, h = p.heads, rs = row_stride, bs = batch_stride, hs = head_stride;
  if (!encode || !p.tma || !a || !b || hs < d || rs < h * hs || bs <= 0 || bs % rs != 0 || (hs * 2) % 16 != 0 ||
      (rs * 2) % 16 != 0 || (bs * 2) % 16 != 0 || reinterpret_cast<uintptr_t>(a) % 16 != 0 ||
      reinterpret_cast<uintptr_t>(b) % 16 != 0)
    return 0;
  const int64_t rows = bs / rs;
  static_assert(sizeof(CUtensorMap) == 128, "BwdParams' maps hold CUtensorMaps");
  uint32_t mask = 0;
  for (int i = 0; i < 4; ++i) {
    const int64_t r = int64_t(1) << i, m = (rows + r - 1) / r;
    if (m < 1 || m > (int64_t(1) << 31) - 1) continue;
    const cuuint64_t dims[5] = {cuuint64_t(d), cuuint64_t(h), cuuint64_t(r), cuuint64_t(m), cuuint64_t(p.batch)};
    const cuuint64_t strides[4] = {cuuint64_t(hs * 2), cuuint64_t(rs * 2), cuuint64_t(r * rs * 2), cuuint64_t(bs * 2)};
    const cuuint32_t box[5] = {64, 1, 1, 64, 1}, elem[5] = {1, 1, 1, 1, 1};
    const CUtensorMapDataType ty =
        p.dtype == ElemType::bf16 ? CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 : CU_TENSOR_MAP_DATA_TYPE_FLOAT16;
    bool ok = true;
    for (int t = 0; t < 2 && ok; ++t)
      ok = encode(reinterpret_cast<CUtensorMap*>(t == 0 ? ma[i] : mb[i]), ty, 5, const_cast<void*>(t == 0 ? a : b),
                  dims, strides, box, elem, CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B,
                  CU_TENSOR_MAP_L2_PROMOTION_L2_128B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
    if (ok) mask |= 1u << i;
  }
  return mask;
}

// Q/dO maps for the dK/dV kernel, K/V maps for the dQ pass's (bits 4-7).
uint32_t encode_all_maps(BwdParams* p) {
  const uint32_t qm = (p->parts & 1)
                          ? encode_maps(*p, p->q, p->dout, p->q_batch_stride, p->q_row_stride, p->head_dim, p->q_maps,
                                        p->do_maps)
                          : 0u;
  const uint32_t kvm = (p->parts & 2) && !p->dq_atomic
                           ? encode_maps(*p, p->src.k, p->src.v, p->src.batch_stride, p->src.row_stride,
                                         p->src.head_stride, p->k_maps, p->v_maps)
                           : 0u;
  p->q_map_mask = qm;
  p->kv_map_mask = kvm;
  return qm | kvm << 4;
}

}  // namespace

uint32_t bwd_tma_map_mask(const BwdParams& p_in) {
  BwdParams p = p_in;
  return encode_all_maps(&p);
}

cudaError_t bwd_launch(const BwdParams& p_in, cudaStream_t stream, bool* launched) {
  BwdParams p = p_in;
  bool any = false;
  if (launched) *launched = false;
  if (p.head_dim != 64 && p.head_dim != 128) return cudaErrorInvalidValue;
  if (p.dtype != ElemType::bf16 && p.dtype != ElemType::f16) return cudaErrorInvalidValue;
  if (p.num_tiles < 0 || p.q_items < 0 || p.k_items < 0 || p.batch < 1 || p.batch > 65535) return cudaErrorInvalidValue;
  if (p.num_tiles == 0 || (p.q_items == 0 && p.k_items == 0)) return cudaSuccess;  // empty pass
  auto acc_ok = [](const float* f32, const void* hi, const uint16_t* lo) { return lo ? hi != nullptr : f32 != nullptr; };
  if (!p.q || !p.dout || !p.lse || !p.delta || !p.src.k || !p.src.v || !p.tiles || !p.q_prefix || !p.k_prefix ||
      !acc_ok(p.dq_acc, p.dq_hi, p.dq_lo) || !acc_ok(p.dk_acc, p.dk_hi, p.dk_lo) || !acc_ok(p.dv_acc, p.dv_hi, p.dv_lo))
    return cudaErrorInvalidValue;
  if (p.dq_atomic && (p.dq_lo || !p.dq_acc)) return cudaErrorInvalidValue;  // float atomics need float32
  // A writing first pass stores split dK and dV (one `fresh` for both) and, with the dQ
  // pass, split dQ; float32 accumulators are only ever added to.
  if (p.overwrite && (!p.dk_lo || !p.dv_lo || (!p.dq_atomic && !p.dq_lo))) return cudaErrorInvalidValue;
  encode_all_maps(&p);
  cudaError_t e;
  if (p.dtype == ElemType::bf16)
    e = p.head_dim == 128 ? detail::run_bwd<__nv_bfloat16, 128>(p, stream, &any)
                          : detail::run_bwd<__nv_bfloat16, 64>(p, stream, &any);
  else
    e = p.head_dim == 128 ? detail::run_bwd<__half, 128>(p, stream, &any) : detail::run_bwd<__half, 64>(p, stream, &any);
  if (launched) *launched = any;
  return e;
}

namespace {

unsigned grid_for(int64_t work, int threads) {
  const int64_t b = (work + threads - 1) / threads;
  return unsigned(b < 1 ? 1 : (b > 65535 * 16 ? 65535 * 16 : b));
}

// Generic Delta (any even head dim): one warp per (batch, row, head), D / 32
// elements per lane, float sums; zero (if given) row r's D floats cleared too.
template <typename Elem>
__global__ void delta_kernel(const Elem* __restrict__ o, const Elem* __restrict__ dout, float* __restrict__ delta,
                             float* __restrict__ zero, int64_t rows_total, int head_dim) {
  const int lane = threadIdx.x & 31;
  const int64_t warps = int64_t(gridDim.x) * (blockDim.x / 32);
  for (int64_t r = int64_t(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5); r < rows_total; r += warps) {
    const Elem* a = o + r * head_dim;
    const Elem* b = dout + r * head_dim;
    float s = 0.f;
    for (int d = 2 * lane; d < head_dim; d += 64) {
      const float2 x = detail::unpack2<Elem>(*reinterpret_cast<const uint32_t*>(a + d));
      const float2 y = detail::unpack2<Elem>(*reinterpret_cast<const uint32_t*>(b + d));
      s += x.x * y.x + x.y * y.y;
      if (zero) *reinterpret_cast<float2*>(zero + r * head_dim + d) = make_float2(0.f, 0.f);
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) delta[r] = s;
  }
}

// Delta for D = 64 and 128 at the memory's speed: 16-byte loads (G = D / 8
// lanes per row, 32 / G rows per warp, kU row groups in flight per lane), the
// row's sum over its G lanes; zero (if given: atomic dQ's float32 accumulator,
// the same B x rows x H x D layout) cleared in the same pass, two 16-byte
// stores per lane, instead of a memset of its own. (The one-warp-per-row
// kernel above moved O and dO at ~2.7 TB/s on an H200, 4-byte loads.)
constexpr int kDeltaGroups = 2;  // row groups in flight per lane

template <typename Elem, int D>
__global__ void delta_vec_kernel(const Elem* __restrict__ o, const Elem* __restrict__ dout, float* __restrict__ delta,
                                 float* __restrict__ zero, int64_t rows_total) {
  constexpr int G = D / 8, RPW = 32 / G, kU = kDeltaGroups;
  const int lane = threadIdx.x & 31, sub = lane / G, c = lane % G;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int64_t warps = (int64_t(gridDim.x) * blockDim.x) >> 5;
  for (int64_t base = warp * RPW * kU; base < rows_total; base += warps * RPW * kU) {  // warp-uniform
    uint4 x[kU], y[kU];
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t r = base + u * RPW + sub;
      x[u] = y[u] = make_uint4(0, 0, 0, 0);
      if (r < rows_total) {
        x[u] = __ldcs(reinterpret_cast<const uint4*>(o + r * D) + c);
        y[u] = __ldg(reinterpret_cast<const uint4*>(dout + r * D) + c);
      }
    }
#pragma unroll
    for (int u = 0; u < kU; ++u) {
      const int64_t r = base + u * RPW + sub;
      const uint32_t xs[4] = {x[u].x, x[u].y, x[u].z, x[u].w}, ys[4] = {y[u].x, y[u].y, y[u].z, y[u].w};
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const float2 a = detail::unpack2<Elem>(xs[k]), b = detail::unpack2<Elem>(ys[k]);
        s += a.x * b.x + a.y * b.y;
      }
#pragma unroll
      for (int off = G / 2; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
      if (r < rows_total) {
        if (c == 0) delta[r] = s;
        if (zero) {
          float4* z = reinterpret_cast<float4*>(zero + r * D) + 2 * c;
          z[0] = z[1] = make_float4(0.f, 0.f, 0.f, 0.f);
        }
      }
    }
  }
}

template <typename Elem, int D>
void launch_delta_vec(const void* o, const void* dout, float* delta, float* zero, int64_t rows, cudaStream_t stream) {
  constexpr int per_warp = kDeltaGroups * 32 / (D / 8);  // rows a warp takes per iteration
  delta_vec_kernel<Elem, D><<<grid_for((rows + per_warp - 1) / per_warp * 32, 256), 256, 0, stream>>>(
      static_cast<const Elem*>(o), static_cast<const Elem*>(dout), delta, zero, rows);
}

// Pairs (any even n, 8-byte aligned) ...
template <typename Elem>
__global__ void convert_kernel(const float2* __restrict__ src, uint32_t* __restrict__ dst, int64_t pairs) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < pairs; i += int64_t(gridDim.x) * blockDim.x) {
    const float2 v = src[i];
    dst[i] = detail::pack2<Elem>(v.x, v.y);
  }
}

// ... and quads (n % 4 == 0, 16-byte aligned source): 16-byte loads, 8-byte stores.
template <typename Elem>
__global__ void convert4_kernel(const float4* __restrict__ src, uint2* __restrict__ dst, int64_t quads) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < quads; i += int64_t(gridDim.x) * blockDim.x) {
    const float4 v = __ldcs(src + i);
    dst[i] = make_uint2(detail::pack2<Elem>(v.x, v.y), detail::pack2<Elem>(v.z, v.w));
  }
}

// One thread per 4 elements of a row (head_dim / 4 per row).
template <typename Elem>
__global__ void scatter_add_kernel(ScatterAddParams p, int64_t total) {
  const int q = p.head_dim / 4;
  const int64_t half = p.rows ? int64_t(p.batch) * p.total_rows * p.head_dim
                              : int64_t(p.batch) * p.local_rows * p.heads * p.head_dim;
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < total; c += int64_t(gridDim.x) * blockDim.x) {
    int64_t to = c * 4, from = c * 4;
    if (p.rows) {
      const int64_t chunk = c % q, br = c / q;  // br = b * total_rows + i
      const int64_t i = br % p.total_rows, b = br / p.total_rows;
      int lo = 0, hi = p.heads;  // head_prefix[lo] <= i < head_prefix[hi]
      while (hi - lo > 1) {
        const int mid = (lo + hi) / 2;
        if (p.head_prefix[mid] <= i) lo = mid; else hi = mid;
      }
      to = ((b * p.local_rows + p.rows[i]) * p.heads + lo) * p.head_dim + chunk * 4;
    }
    const float4 a = *reinterpret_cast<const float4*>(p.part + from);
    const float4 b = *reinterpret_cast<const float4*>(p.part + half + from);
    const detail::GradAcc gk{p.dk, p.dk_hi, p.dk_lo}, gv{p.dv, p.dv_hi, p.dv_lo};
    const float2 x[4] = {{a.x, a.y}, {a.z, a.w}, {b.x, b.y}, {b.z, b.w}};
    detail::grad_add2_batch<Elem, 4>([&](int i) { return i < 2 ? gk : gv; }, [&](int i) { return to + 2 * (i & 1); },
                                     [&](int i) { return x[i]; });
  }
}

}  // namespace

cudaError_t bwd_delta(const void* o, const void* dout, float* delta, int64_t batch, int64_t rows, int64_t heads,
                      int64_t head_dim, ElemType dtype, cudaStream_t stream, float* zero) {
  if (!o || !dout || !delta || head_dim % 2 != 0 || head_dim < 2) return cudaErrorInvalidValue;
  const int64_t n = batch * rows * heads;
  if (n == 0) return cudaSuccess;
  const bool bf = dtype == ElemType::bf16;
  auto aligned = [](const void* x) { return reinterpret_cast<uintptr_t>(x) % 16 == 0; };
  if ((head_dim == 64 || head_dim == 128) && aligned(o) && aligned(dout) && aligned(zero)) {
    if (head_dim == 128)
      bf ? launch_delta_vec<__nv_bfloat16, 128>(o, dout, delta, zero, n, stream)
         : launch_delta_vec<__half, 128>(o, dout, delta, zero, n, stream);
    else
      bf ? launch_delta_vec<__nv_bfloat16, 64>(o, dout, delta, zero, n, stream)
         : launch_delta_vec<__half, 64>(o, dout, delta, zero, n, stream);
    return cudaGetLastError();
  }
  const unsigned grid = grid_for(n * 32, 256);
  if (bf)
    delta_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(static_cast<const __nv_bfloat16*>(o),
                                                         static_cast<const __nv_bfloat16*>(dout), delta, zero, n,
                                                         int(head_dim));
  else
    delta_kernel<__half><<<grid, 256, 0, stream>>>(static_cast<const __half*>(o), static_cast<const __half*>(dout), delta,
                                                  zero, n, int(head_dim));
  return cudaGetLastError();
}

cudaError_t bwd_convert(const float* src, void* dst, int64_t n, ElemType dtype, cudaStream_t stream) {
  if (!src || !dst || n % 2 != 0 || reinterpret_cast<uintptr_t>(src) % 8 != 0 || reinterpret_cast<uintptr_t>(dst) % 4 != 0)
    return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const bool bf = dtype == ElemType::bf16;
  if (n % 4 == 0 && reinterpret_cast<uintptr_t>(src) % 16 == 0 && reinterpret_cast<uintptr_t>(dst) % 8 == 0) {
    const int64_t quads = n / 4;
    const unsigned grid = grid_for(quads, 256);
    const float4* s = reinterpret_cast<const float4*>(src);
    uint2* d = static_cast<uint2*>(dst);
    if (bf) convert4_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(s, d, quads);
    else convert4_kernel<__half><<<grid, 256, 0, stream>>>(s, d, quads);
    return cudaGetLastError();
  }
  const int64_t pairs = n / 2;
  const unsigned grid = grid_for(pairs, 256);
  const float2* s = reinterpret_cast<const float2*>(src);
  uint32_t* d = static_cast<uint32_t*>(dst);
  if (bf) convert_kernel<__nv_bfloat16><<<grid, 256, 0, stream>>>(s, d, pairs);
  else convert_kernel<__half><<<grid, 256, 0, stream>>>(s, d, pairs);
  return cudaGetLastError();
}

cudaError_t bwd_scatter_add(const ScatterAddParams& p, cudaStream_t stream) {
  const bool split = p.dk_lo != nullptr;
  if (!p.part || p.head_dim % 4 != 0 || (p.rows && !p.head_prefix) || (split != (p.dv_lo != nullptr)) ||
      (split ? !p.dk_hi || !p.dv_hi : !p.dk || !p.dv))
    return cudaErrorInvalidValue;
  const int64_t rows = p.rows ? int64_t(p.batch) * p.total_rows : int64_t(p.batch) * p.local_rows * p.heads;
  const int64_t total = rows * (p.head_dim / 4);
  if (total == 0) return cudaSuccess;
  if (p.dtype == ElemType::f16) scatter_add_kernel<__half><<<grid_for(total, 256), 256, 0, stream>>>(p, total);
  else scatter_add_kernel<__nv_bfloat16><<<grid_for(total, 256), 256, 0, stream>>>(p, total);
  return cudaGetLastError();
}

}  // namespace ringattn::kern::cuda

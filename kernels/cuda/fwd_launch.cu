// Fused dilated flash-attention forward: dispatch over dtype and head dim,
// output initialisation. The kernels themselves are instantiated one
// (dtype, head dim) per file (fwd_<dtype>_hd<D>.cu) so builds run in parallel.
#include <cmath>
#include "kernels/cuda/attention_fwd.hpp"
#include "kernels/cuda/kernel_traits.cuh"

namespace ringattn::kern::cuda {

namespace detail {
extern template cudaError_t run_fwd<__nv_bfloat16, 64>(const FwdParams&, cudaStream_t);
extern template cudaError_t run_fwd<__nv_bfloat16, 128>(const FwdParams&, cudaStream_t);
extern template cudaError_t run_fwd<__half, 64>(const FwdParams&, cudaStream_t);
extern template cudaError_t run_fwd<__half, 128>(const FwdParams&, cudaStream_t);
}  // namespace detail

int fwd_block_m(ElemType /*dtype*/, int /*head_dim*/) {
  return detail::FwdTraits<__nv_bfloat16, 128>::kBlockM;  // 128 for every dtype and head dim
}

cudaError_t fwd_launch(const FwdParams& p, cudaStream_t stream, bool* launched) {
  if (launched) *launched = false;
  if (p.head_dim != 64 && p.head_dim != 128) return cudaErrorInvalidValue;
  if (p.dtype != ElemType::bf16 && p.dtype != ElemType::f16) return cudaErrorInvalidValue;
  if (p.num_tiles < 0 || p.num_blocks < 0 || p.batch < 1) return cudaErrorInvalidValue;
  if (p.num_tiles == 0 || p.num_blocks == 0) return cudaSuccess;  // empty pass
  if (!p.q || !p.o || !p.lse || !p.src.k || !p.src.v || !p.tiles || !p.tile_block_prefix)
    return cudaErrorInvalidValue;
  if (p.batch > 65535) return cudaErrorInvalidValue;
  cudaError_t e;
  if (p.dtype == ElemType::bf16) {
    e = p.head_dim == 128 ? detail::run_fwd<__nv_bfloat16, 128>(p, stream)
                          : detail::run_fwd<__nv_bfloat16, 64>(p, stream);
  } else {
    e = p.head_dim == 128 ? detail::run_fwd<__half, 128>(p, stream) : detail::run_fwd<__half, 64>(p, stream);
  }
  if (launched) *launched = e == cudaSuccess;
  return e;
}

namespace {
__global__ void fill_outputs(uint16_t* o, float* lse, int64_t o_elems, int64_t lse_elems) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < lse_elems; i += stride)
    lse[i] = -INFINITY;
  if (o)
    for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < o_elems; i += stride)
      o[i] = 0;  // +0 in both bf16 and fp16
}
}  // namespace

cudaError_t fwd_init_outputs(void* o, float* lse, int64_t o_elems, int64_t lse_elems,
                             ElemType /*dtype*/, bool zero_o, cudaStream_t stream) {
  if (!lse || lse_elems < 0 || o_elems < 0 || (zero_o && !o)) return cudaErrorInvalidValue;
  int dev = 0, sms = 0;
  cudaError_t e = cudaGetDevice(&dev);
  if (e != cudaSuccess) return e;
  e = cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev);
  if (e != cudaSuccess) return e;
  fill_outputs<<<sms * 8, 256, 0, stream>>>(zero_o ? static_cast<uint16_t*>(o) : nullptr, lse,
                                            o_elems, lse_elems);
  return cudaGetLastError();
}

}  // namespace ringattn::kern::cuda

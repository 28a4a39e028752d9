#include "kernels/cuda/synth_fill.hpp"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include "kernels/cpu/synth.hpp"

namespace ringattn::kern::cuda {
namespace {

__global__ void synth_fill_kernel(void* dst, ElemKind kind, uint64_t seed, uint64_t tensor, double amplitude,
                                  int64_t seq, int64_t row0, int64_t rows, int64_t hd, int64_t total) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const int64_t e = i % hd, r = i / hd;  // element in the row, row of the shard
    const int64_t b = r / rows, t = row0 + r % rows;
    const uint64_t g = uint64_t((b * seq + t) * hd + e);  // bnhd_index
    const float x = float(synth_value(seed, SynthTensor(tensor), g, amplitude));
    if (kind == ElemKind::f32) static_cast<float*>(dst)[i] = x;
    else if (kind == ElemKind::f16) static_cast<__half*>(dst)[i] = __float2half_rn(x);
    else static_cast<__nv_bfloat16*>(dst)[i] = __float2bfloat16_rn(x);
  }
}

}  // namespace

cudaError_t synth_fill(void* dst, ElemKind kind, uint64_t seed, uint64_t tensor, double amplitude, int64_t batch,
                       int64_t seq, int64_t row0, int64_t rows, int64_t heads, int64_t head_dim, cudaStream_t stream) {
  if (batch < 1 || rows < 0 || row0 < 0 || row0 + rows > seq || heads < 1 || head_dim < 1) return cudaErrorInvalidValue;
  const int64_t total = batch * rows * heads * head_dim;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  synth_fill_kernel<<<int(blocks < 65536 ? blocks : 65536), threads, 0, stream>>>(dst, kind, seed, tensor, amplitude,
                                                                                  seq, row0, rows, heads * head_dim, total);
  return cudaGetLastError();
}

}  // namespace ringattn::kern::cuda

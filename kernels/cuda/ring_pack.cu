#include "kernels/cuda/ring_pack.hpp"

namespace ringattn::kern::cuda {
namespace {

// One thread per 16-byte chunk of a row (rows are D*elem_bytes long, a
// multiple of 16 for D in {64, 128}); consecutive threads read consecutive
// chunks of one row, so every load and store is a full 16-byte vector.
__global__ void pack_kernel(PackParams p, int64_t chunks_per_row, int64_t total_chunks) {
  const int64_t row_bytes = int64_t(p.head_dim) * p.elem_bytes;
  const char* ks = static_cast<const char*>(p.k);
  const char* vs = static_cast<const char*>(p.v);
  char* out = static_cast<char*>(p.out);
  const int64_t half = int64_t(p.batch) * p.total_rows * row_bytes;  // bytes of the K part
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < total_chunks;
       c += int64_t(gridDim.x) * blockDim.x) {
    const int64_t chunk = c % chunks_per_row;
    const int64_t br = c / chunks_per_row;  // b * total_rows + i
    const int64_t i = br % p.total_rows, b = br / p.total_rows;
    // Head of packed row i: the last h with head_prefix[h] <= i.
    int lo = 0, hi = p.heads;  // invariant: head_prefix[lo] <= i < head_prefix[hi]
    while (hi - lo > 1) {
      int mid = (lo + hi) / 2;
      if (p.head_prefix[mid] <= i) lo = mid; else hi = mid;
    }
    const int64_t src = ((b * p.local_rows + p.rows[i]) * p.heads + lo) * row_bytes + chunk * 16;
    const int64_t dst = br * row_bytes + chunk * 16;
    *reinterpret_cast<int4*>(out + dst) = *reinterpret_cast<const int4*>(ks + src);
    *reinterpret_cast<int4*>(out + half + dst) = *reinterpret_cast<const int4*>(vs + src);
  }
}

}  // namespace

cudaError_t pack_rows(const PackParams& p, cudaStream_t stream) {
  const int64_t row_bytes = int64_t(p.head_dim) * p.elem_bytes;
  if (row_bytes % 16 != 0) return cudaErrorInvalidValue;
  if (p.total_rows == 0) return cudaSuccess;
  const int64_t chunks_per_row = row_bytes / 16;
  const int64_t total = chunks_per_row * p.total_rows * p.batch;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  pack_kernel<<<unsigned(blocks < 65536 ? blocks : 65536), threads, 0, stream>>>(p, chunks_per_row, total);
  return cudaGetLastError();
}

}  // namespace ringattn::kern::cuda

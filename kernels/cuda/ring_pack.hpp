// Pack kernel of the ring: gathers, for one peer, the K and V rows its
// queries need (all branches, all heads of a step) into one contiguous
// block. Block layout (plan.hpp RowList): K then V, each
// batch x total_rows x head_dim, head h's rows at [head_prefix[h], head_prefix[h+1]).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

namespace ringattn::kern::cuda {

struct PackParams {
  const void* k = nullptr;          // local shard B x L x H x D
  const void* v = nullptr;
  void* out = nullptr;              // packed block
  const int32_t* rows = nullptr;    // device: local row of each packed row
  const int32_t* head_prefix = nullptr;  // device: heads + 1 entries
  int64_t total_rows = 0;
  int64_t local_rows = 0;           // L
  int32_t batch = 1, heads = 1, head_dim = 128;
  int32_t elem_bytes = 2;
};

cudaError_t pack_rows(const PackParams& p, cudaStream_t stream);

}  // namespace ringattn::kern::cuda

// The float32 CPU fast path: walks tiles like the CUDA kernel does, with an
// online softmax per query, and merges each tile's result into float32
// accumulators by the log-sum-exp rule. Work is O(sum over tiles of
// queries x keys x D) = O(N * sum_i w_i / r_i * D), never O(N^2).
#pragma once
#include <cstdint>

#include "kernels/common/tile.hpp"

namespace ringattn::kern {

struct CpuPassParams {
  const float* q = nullptr;     // local shard, B x L x H x D
  int64_t q_batch_stride = 0;   // elements
  int64_t q_row_stride = 0;     // elements (= H*D)
  KeySource src;                // float keys/values
  const Tile* tiles = nullptr;
  int64_t num_tiles = 0;
  int64_t batch = 1, heads = 1, head_dim = 1;
  float scale = 1.f;
  bool causal = false;
  float* o_acc = nullptr;       // same layout as q, float32
  float* lse_acc = nullptr;     // B x L x H; -inf where nothing merged yet
  int64_t lse_batch_stride = 0; // floats (= L*H)
  int64_t lse_row_stride = 0;   // floats (= H)
};

void cpu_forward_pass(const CpuPassParams& p);

}  // namespace ringattn::kern

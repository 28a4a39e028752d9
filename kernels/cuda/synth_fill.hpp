// Deterministic inputs made on the GPU: the same function of (seed, tensor,
// global index) as kernels/cpu/synth.hpp, rounded to the dtype as the host
// rounds them (round to nearest even), written straight into device memory.
// A 1M-token shard of Q, K and V (16 heads, D 128) takes milliseconds here
// against tens of seconds on one host core.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>

#include "kernels/common/convert.hpp"

namespace ringattn::kern::cuda {

// Rows [row0, row0 + rows) of every batch element of a batch x seq x heads x
// head_dim tensor `tensor` (SynthTensor's value), into dst (batch x rows x
// heads x head_dim elements of `kind`).
cudaError_t synth_fill(void* dst, ElemKind kind, uint64_t seed, uint64_t tensor, double amplitude, int64_t batch,
                       int64_t seq, int64_t row0, int64_t rows, int64_t heads, int64_t head_dim, cudaStream_t stream);

}  // namespace ringattn::kern::cuda

// Fused dilated flash-attention forward on CUDA: the launch interface.
//
// One launch ("pass") walks a list of tiles that all read keys from one
// KeySource and never share a (query row, head) pair, so every work item (a
// block of fwd_block_m() query rows of one tile) owns its output rows. With `accumulate`, the epilogue merges its result into the O
// and LSE already in memory by the log-sum-exp rule in float32 (rows whose
// stored LSE is -inf are treated as empty and O is not read); without it,
// it overwrites them. A forward is a sequence of passes on one stream.
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "kernels/common/tile.hpp"

namespace ringattn::kern::cuda {

enum class ElemType : int { f16 = 0, bf16 = 1 };

struct FwdParams {
  // Local shard, token-major B x L x H x D (elements of `dtype`).
  const void* q = nullptr;
  void* o = nullptr;
  float* lse = nullptr;          // B x L x H, natural log
  int64_t q_batch_stride = 0;    // elements; O uses the same strides
  int64_t q_row_stride = 0;      // elements between tokens (= H*D)
  int64_t lse_batch_stride = 0;  // floats (= L*H)
  int64_t lse_row_stride = 0;    // floats (= H)
  KeySource src;                 // keys/values of every tile in this pass
  const Tile* tiles = nullptr;   // device array
  int32_t num_tiles = 0;
  // tile_block_prefix[i] = first work item (query block of fwd_block_m() rows)
  // of tile i; tile_block_prefix[num_tiles] = items per batch. Device array.
  const int32_t* tile_block_prefix = nullptr;
  // Host copy of tile_block_prefix[num_tiles] (items per batch element).
  int32_t num_blocks = 0;
  int32_t batch = 1;
  int32_t heads = 1;
  int32_t head_dim = 128;        // 64 or 128
  float scale = 1.f;
  bool causal = false;
  bool accumulate = false;
  // Cap on the persistent grid (0: one CTA per SM). SMs left free run the
  // ring's exchange (NCCL) and pack kernels beside the attention instead of
  // only between passes.
  int32_t max_ctas = 0;
  // Dynamic tile scheduling: a device int, zero before the pass, that CTAs
  // take work items from (atomicAdd) after their first, so a CTA that starts
  // late (an exchange kernel held its SM) takes fewer items instead of
  // stretching the pass. Null: the static order c, c + G, c + 2G, ...
  // Results are the same bits either way (an item is computed the same way
  // whichever CTA takes it).
  int32_t* tile_counter = nullptr;
  ElemType dtype = ElemType::bf16;
  // Per-item timing trace (kernels/cuda/fwd_trace.cuh: layout, events); only
  // read by kernels built with RINGATTN_FWD_TRACE, and there only when
  // non-null. trace_items: items recorded per CTA.
  unsigned long long* trace = nullptr;
  int32_t trace_items = 0;
  // Programmatic dependent launch (sm_90): this launch may start while the
  // kernel before it on the stream finishes (cudaLaunchKernelEx with
  // programmatic stream serialization), its CTAs taking the SMs that kernel's
  // tail leaves idle. The producer reads Q, K/V, the tiles, the prefix and
  // tile_counter before the earlier kernel has completed, so these must have
  // been written before the first launch that is NOT pdl (the start of the
  // sequence) and by nothing on the stream since; every consumer thread waits
  // for the earlier kernel (griddepcontrol.wait) before its first access to O
  // and LSE (its first item's old LSE is read after that wait, in the
  // epilogue). Set it only where the operation just before on the stream is
  // another attention pass's launch (no memset, event wait or other kernel in
  // between): the CUDA executor sets it for every launch of a step's pass
  // loop but the first (RINGATTN_PDL=0: never). Every CTA executes
  // griddepcontrol.launch_dependents once fewer than a grid's worth of items
  // is left after the one it starts (tile_scheduler.cuh), with or without pdl
  // (a no-op unless the next launch is programmatic). The same bits either
  // way. False: a plain launch, as before.
  bool pdl = false;
};

// The layout fields FwdParams and BwdParams share, for a token-major shard
// (Q and O or dO: batch x rows x heads x head_dim; LSE: batch x rows x heads).
template <class Params>
inline void set_shard_layout(Params* p, int64_t batch, int64_t rows, int64_t heads, int64_t head_dim, float scale,
                             bool causal, ElemType dtype) {
  p->q_batch_stride = rows * heads * head_dim;
  p->q_row_stride = heads * head_dim;
  p->lse_batch_stride = rows * heads;
  p->lse_row_stride = heads;
  p->batch = int32_t(batch);
  p->heads = int32_t(heads);
  p->head_dim = int32_t(head_dim);
  p->scale = scale;
  p->causal = causal;
  p->dtype = dtype;
}

// FwdParams of a token-major shard with accumulate on; each pass then sets
// src, tiles, tile_block_prefix, num_tiles and num_blocks.
inline FwdParams fwd_shard_params(const void* q, void* o, float* lse, int64_t batch, int64_t rows, int64_t heads,
                                  int64_t head_dim, float scale, bool causal, ElemType dtype) {
  FwdParams p;
  p.q = q;
  p.o = o;
  p.lse = lse;
  set_shard_layout(&p, batch, rows, heads, head_dim, scale, causal, dtype);
  p.accumulate = true;
  return p;
}

// Query rows per work item for this dtype/head dim (the planner splits tiles by it).
int fwd_block_m(ElemType dtype, int head_dim);

// Returns cudaSuccess or the launch error; cudaErrorInvalidValue for an
// unsupported head_dim (callers turn it into a Status naming the value).
// *launched (if given): whether a kernel went onto the stream (an empty pass
// launches none, so the next pass's launch follows whatever came before it:
// a caller setting FwdParams::pdl needs to know).
cudaError_t fwd_launch(const FwdParams& p, cudaStream_t stream, bool* launched = nullptr);

// Fill LSE with -inf (and O with zeros when zero_o) before the first pass.
cudaError_t fwd_init_outputs(void* o, float* lse, int64_t o_elems, int64_t lse_elems,
                             ElemType dtype, bool zero_o, cudaStream_t stream);

}  // namespace ringattn::kern::cuda

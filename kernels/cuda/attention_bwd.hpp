// Fused dilated flash-attention backward on CUDA: the launch interface.
//
// The exact gradient of docs/SPEC.md ("Backward"), pass by pass over the
// forward's tiles (same Tile, same KeySource), as the float32 CPU path
// (kernels/cpu/attention_cpu_bwd.hpp) computes it:
//
//   P  = exp(scale <Q[t], K[u]> - LSE[t])       LSE: the merged forward LSE
//   dV[u] += P dO[t]
//   dS = P (<dO[t], V[u]> - Delta[t])           Delta[t] = <dO[t], O[t]>
//   dQ[t] += scale dS K[u]
//   dK[u] += scale dS Q[t]
//
// A pass is two launches on one stream, both on Hopper tensor cores (wgmma,
// float32 accumulation; bwd_kernel.cuh):
//   bwd_dkdv  key-major: a CTA owns kBwdBlockN keys of one tile, walks the
//             tile's query blocks and keeps dK/dV in registers, then adds
//             them to dk_acc/dv_acc;
//   bwd_dq    query-major: a CTA owns kBwdBlockM queries of one tile (the
//             forward's work item), walks the key blocks and adds dQ to dq_acc.
// The tiles of one pass share no (query, head) and no (key row, head), so
// every CTA owns the accumulator rows it adds to: no atomics anywhere, and
// the same inputs give the same bits on every rerun. dQ costs a second walk
// over the pairs (7 GEMMs per pair block instead of 5 with float32 atomics);
// that is the price of bit-identical reruns.
//
// Accumulators are added to (+=): the caller zeroes them once and runs any
// number of passes into them, or (BwdParams::overwrite) lets a first pass that
// holds every row write them. Each is either float32 (`*_acc`; converted
// at the end with bwd_convert; a received block's partial, which travels in
// float32) or split (`*_lo` set): `*_hi` is the gradient itself in the input
// dtype, rounded to nearest after every add, and `*_lo` (bf16) holds what the
// rounding left, so hi + lo carries 16+ significant bits through the sum
// (an add's error is at most 2^-17 of the value for bf16, 2^-20 for f16), the
// result needs no conversion, and the accumulators cost 2 bytes per element
// instead of 4. dq_acc has the query shard's layout; dk_acc/dv_acc have the
// layout of `src`, element for element (a received block's partial has the
// block's layout and goes back to its owner as it is: bwd_scatter_add).
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "kernels/common/tile.hpp"
#include "kernels/cuda/attention_fwd.hpp"

namespace ringattn::kern::cuda {

// Query rows per bwd_dq work item: the forward's fwd_block_m(), so the
// plan image's query-block prefix serves both.
constexpr int kBwdBlockM = 128;
// Keys per bwd_dkdv work item (the plan image's key-block prefix).
constexpr int kBwdBlockN = 128;
// Stages of the streamed blocks (Q/dO/LSE/Delta in bwd_dkdv, K/V in bwd_dq):
// the producer refills a stage once every consumer thread is done with the
// block kBwdStages blocks before it.
constexpr int kBwdStages = 3;

struct BwdParams {
  // Local shard, token-major B x L x H x D (elements of `dtype`); dout and
  // dq_acc (float) use the same strides.
  const void* q = nullptr;
  const void* dout = nullptr;
  int64_t q_batch_stride = 0;
  int64_t q_row_stride = 0;
  // B x L x H floats: the merged forward LSE (natural log) and Delta.
  const float* lse = nullptr;
  const float* delta = nullptr;
  int64_t lse_batch_stride = 0;
  int64_t lse_row_stride = 0;
  KeySource src;
  const Tile* tiles = nullptr;  // device
  int32_t num_tiles = 0;
  // Per tile: first query item (kBwdBlockM rows) and first key item
  // (kBwdBlockN keys); entry num_tiles = items per batch element. Device.
  const int32_t* q_prefix = nullptr;
  const int32_t* k_prefix = nullptr;
  int32_t q_items = 0, k_items = 0;  // host copies of the last entries
  int32_t batch = 1, heads = 1, head_dim = 128;
  float scale = 1.f;
  bool causal = false;
  ElemType dtype = ElemType::bf16;
  float* dq_acc = nullptr;
  float* dk_acc = nullptr;
  float* dv_acc = nullptr;
  // Split accumulators (used where *_lo is set; hi has dq_acc's or dk_acc's layout).
  void* dq_hi = nullptr;
  void* dk_hi = nullptr;
  void* dv_hi = nullptr;
  uint16_t* dq_lo = nullptr;
  uint16_t* dk_lo = nullptr;
  uint16_t* dv_lo = nullptr;
  // dQ from the dK/dV kernel with float32 atomics (dS^T staged in shared
  // memory, dQ = dS K on the tensor cores, staged in shared memory and added
  // to dq_acc by the producer warpgroup's red.global.add.v4), instead of the
  // query-major bwd_dq pass: 3 GEMMs per pair block less, but the order of
  // the float additions into dq_acc depends on timing, so reruns are not
  // bit-identical in dQ (dK and dV still are).
  bool dq_atomic = false;
  // With dq_atomic: the dQ GEMM before the dK GEMM, its adds under dK's
  // (RINGATTN_BWD_DQ_ORDER=first, default), or after both GEMMs (last).
  bool dq_first = true;
  // With the dQ pass: the two consumer warpgroups of each kernel take turns
  // issuing their GEMMs. The same sums in the same order. The runtime turns
  // it on (3% faster; RINGATTN_BWD_PINGPONG=0 turns it off); off here, so the
  // kernel-level tests keep the other path covered.
  bool pingpong = false;
  // The pass holds every row it writes exactly once (Plan::first_pass_covers_local)
  // and the accumulators are not initialised: the epilogues store x (hi and lo
  // of 0 + 0 + x, the same bits as adding to zeros) without reading them.
  // Split accumulators of dK/dV and, with the dQ pass, dQ.
  bool overwrite = false;
  // Which launches run (bit 0: dK/dV, bit 1: dQ): both, except in the
  // kernel benchmark, which times them apart.
  int32_t parts = 3;
  // Programmatic dependent launch (sm_90; FwdParams::pdl says when a caller
  // may set it): `pdl`: the pass's first launch may start while the kernel
  // before it on the stream (an earlier pass's) finishes; `pdl_dq`: the dQ
  // launch may start while this pass's own dK/dV launch finishes (set it
  // whenever PDL is wanted, also on a sequence's first pass; with `pdl` it is
  // implied). Both kernels read Q, dO, K/V, LSE, Delta, the tiles and the
  // prefixes before the earlier kernel has completed: these must have been
  // written before the sequence's first launch that is not pdl. Each waits
  // for the earlier kernel (griddepcontrol.wait) before its first access to
  // what earlier passes write: dK/dV's accumulators (or a received block's
  // float32 partial), the dQ pass's accumulator. Atomic dQ's adds into dq_acc
  // do not wait: float additions from two launches commute as well as from
  // two CTAs; dq_acc is zeroed (Delta's kernel) before the sequence and read
  // (the conversion, a plain launch) after it. Every CTA lets the next launch
  // start (griddepcontrol.launch_dependents) as it starts, with or without
  // pdl. The same bits either way. False: plain launches, as before.
  bool pdl = false;
  bool pdl_dq = false;
  // TMA tensor maps of q and dout for the dK/dV kernel's producer (the bytes
  // of a CUtensorMap each; set by bwd_launch, the caller's values are
  // ignored): map i serves tiles of query stride r = 2^i (i < 4) as a 5-D
  // tensor {D, H, r, ceil(rows / r), B} with box {64, 1, 1, 64, 1} and the
  // 128-byte swizzle (the wgmma layout the cp.async gather writes), so a
  // full block of 64 query rows of any such tile is 2 x D / 64 boxes issued
  // by one thread instead of 16 cp.async per producer thread. Bit i of
  // q_map_mask: map i was encoded. Partial blocks, other strides and a
  // driver without the encoder take the cp.async gather (the same bytes land
  // in the same places: the same bits).
  alignas(64) unsigned char q_maps[4][128] = {};
  alignas(64) unsigned char do_maps[4][128] = {};
  uint32_t q_map_mask = 0;
  // The same for the dQ pass's key blocks (64 keys) of src.k and src.v, for
  // tiles with key stride 2^i (affine keys: the local shard's, or a received
  // block sent whole); index-list tiles take the gather.
  alignas(64) unsigned char k_maps[4][128] = {};
  alignas(64) unsigned char v_maps[4][128] = {};
  uint32_t kv_map_mask = 0;
  // false: no tensor maps (every block through cp.async; tests and A/B runs).
  bool tma = true;
  // Per-CTA timing trace of the dK/dV kernel (kernels/cuda/bwd_trace.cuh:
  // layout, events; k_items x batch records); only read by kernels built with
  // RINGATTN_BWD_TRACE, and there only when non-null.
  unsigned long long* trace = nullptr;
};

// BwdParams of a token-major shard (Q, dO: batch x rows x heads x head_dim;
// LSE, Delta: batch x rows x heads), as fwd_shard_params for the forward; the
// caller then sets the accumulators and the modes, and each pass src, tiles,
// prefixes and item counts.
inline BwdParams bwd_shard_params(const void* q, const void* dout, const float* lse, const float* delta, int64_t batch,
                                  int64_t rows, int64_t heads, int64_t head_dim, float scale, bool causal, ElemType dtype) {
  BwdParams p;
  p.q = q;
  p.dout = dout;
  p.lse = lse;
  p.delta = delta;
  set_shard_layout(&p, batch, rows, heads, head_dim, scale, causal, dtype);
  return p;
}

// Both launches of one pass (dK/dV, then dQ). cudaErrorInvalidValue for an
// unsupported head dim or dtype or a missing pointer. *launched (if given):
// whether any kernel went onto the stream (fwd_launch says why it matters).
cudaError_t bwd_launch(const BwdParams& p, cudaStream_t stream, bool* launched = nullptr);

// The masks bwd_launch would set for p, for reports and tests: bits 0-3
// BwdParams::q_map_mask (Q/dO maps of query stride 2^i), bits 4-7
// kv_map_mask (K/V maps of key stride 2^i); 0 without tma, without the
// driver's encoder or with strides a map cannot take.
uint32_t bwd_tma_map_mask(const BwdParams& p);

// Delta[b,t,h] = sum_d dout * o (float32 sums), t < rows; o and dout
// token-major B x rows x H x D, delta B x rows x H. zero (optional, float32,
// B x rows x H x D: atomic dQ's accumulator) is cleared in the same pass.
cudaError_t bwd_delta(const void* o, const void* dout, float* delta, int64_t batch, int64_t rows, int64_t heads,
                      int64_t head_dim, ElemType dtype, cudaStream_t stream, float* zero = nullptr);

// dst[i] = (Elem) src[i], i < n (round to nearest even); n even, src 8-byte and
// dst 4-byte aligned (cudaErrorInvalidValue otherwise).
cudaError_t bwd_convert(const float* src, void* dst, int64_t n, ElemType dtype, cudaStream_t stream);

// The owner adds a returned float32 partial (K part then V part) into its
// dK/dV accumulators (B x L x H x D): packed (rows != null): part row i of
// head h (head_prefix[h] <= i < head_prefix[h+1]) goes to local row rows[i];
// whole (rows == null): the block has the shard's layout. The inverse of
// pack_rows; (row, head) pairs of a block are distinct, so no atomics.
struct ScatterAddParams {
  const float* part = nullptr;  // K part, then V part
  float* dk = nullptr;          // float32 accumulators, or
  float* dv = nullptr;
  void* dk_hi = nullptr;        // split ones (dk_lo set; dtype: the gradient's)
  void* dv_hi = nullptr;
  uint16_t* dk_lo = nullptr;
  uint16_t* dv_lo = nullptr;
  ElemType dtype = ElemType::bf16;
  const int32_t* rows = nullptr;
  const int32_t* head_prefix = nullptr;
  int64_t total_rows = 0;  // packed rows per batch element
  int64_t local_rows = 0;  // L
  int32_t batch = 1, heads = 1, head_dim = 128;
};
cudaError_t bwd_scatter_add(const ScatterAddParams& p, cudaStream_t stream);

}  // namespace ringattn::kern::cuda

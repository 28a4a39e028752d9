// The float32 CPU backward: walks the forward's tiles (same Tile, same
// KeySource) once more and accumulates the exact gradient of SPEC.md
// section 4 for one key source at a time, so the ring can run it step by step:
//
//   P(t,u) = exp(scale <Q[t], K[u]> - LSE[t])     LSE: the merged forward LSE
//   dV[u] += P dO[t]
//   dS     = P (<dO[t], V[u]> - Delta[t])         Delta[t] = <dO[t], O[t]>
//   dQ[t] += scale dS K[u]
//   dK[u] += scale dS Q[t]
//
// Nothing of the forward but O (through Delta) and LSE is needed, and nothing
// grows with N^2: work is O(sum over tiles of visible pairs x D), the same
// tiles as the forward.
//
// How the ring uses it, on rank p (the owner of queries and local keys):
//   1. delta = cpu_backward_delta(O, dO) of the shard; dq, dk, dv = 0.
//   2. Local passes (plan step 0), src = the local K/V shard, dk_acc/dv_acc =
//      the shard's dK/dV: queries' dQ and local keys' dK/dV.
//   3. For each plan step d with a received block (the forward's K/V block of
//      rank (p-d) mod P, packed or `whole`): zero a float32 partial dK/dV
//      with exactly the block's layout, run the step's passes with src = the
//      block and dk_acc/dv_acc = the partial. dq keeps accumulating in place.
//      The partial has the same rows, in the same order, as the block that
//      came (packed: K part batch x R x D per head range; whole: batch x L x
//      H x D), so it goes back to rank (p-d) mod P as it is, in float32
//      (2 * batch * rows * head_dim floats: twice the bytes of a 16-bit block).
//   4. The owner p adds into its dK/dV, row by row (the inverse of the pack:
//      tests/common/cpu_bwd_sim.hpp, scatter_add_block), the partial of step
//      d computed by rank (p+d) mod P from the rows p sent it at step d, in a
//      fixed order: its local passes first, then d = 1..P-1. The result then
//      depends on the inputs and P only, never on timing.
#pragma once
#include <cstdint>

#include "kernels/common/tile.hpp"

namespace ringattn::kern {

struct CpuBwdParams {
  // Queries of the local shard, B x L x H x D, token-major; dout (= dL/dO)
  // and dq_acc have the same layout and strides (head stride = head_dim).
  const float* q = nullptr;
  const float* dout = nullptr;
  int64_t q_batch_stride = 0;    // elements (= L*H*D)
  int64_t q_row_stride = 0;      // elements (= H*D)
  // Per (query, head) of the shard, B x L x H: the merged forward LSE (-inf
  // where no branch selects the token; such queries are skipped) and Delta
  // from cpu_backward_delta. Same strides for both.
  const float* lse = nullptr;
  const float* delta = nullptr;
  int64_t lse_batch_stride = 0;  // floats (= L*H)
  int64_t lse_row_stride = 0;    // floats (= H)
  // Keys and values of this pass (float32), addressed as tile.hpp says.
  KeySource src;
  const Tile* tiles = nullptr;
  int64_t num_tiles = 0;
  int64_t batch = 1, heads = 1, head_dim = 1;
  float scale = 1.f;
  bool causal = false;
  // Accumulators, float32, added to (+=), never overwritten: the caller
  // zeroes them once and may run any number of passes into them.
  //   dq_acc: the queries' layout above (like q).
  //   dk_acc, dv_acc: the layout of src, element for element: the gradient of
  //     src.k[off] is added at dk_acc[off] (of src.v[off] at dv_acc[off]),
  //     off = b*src.batch_stride + row*src.row_stride + h*src.head_stride with
  //     `row` the tile's key row (affine, or through src.index). So for local
  //     keys they are B x L x H x D like the shard; for a packed block they
  //     are B x R x D like its K (V) part; for a `whole` block, B x L x H x D.
  //     Rows no tile reads are not touched.
  float* dq_acc = nullptr;
  float* dk_acc = nullptr;
  float* dv_acc = nullptr;
};

// Adds the gradient of every visible (query, key) pair of the tiles, tile by
// tile in list order, batch by batch, queries in order and keys in order:
// the same inputs give the same bits. Per tile, dK/dV are summed over its
// queries in tile-local float32 rows (scale applied once at the end) and then
// added to dk_acc/dv_acc; dQ of a query is summed over the tile's keys, then
// added to dq_acc. The tiles of one plan Pass share no (query, head) and no
// (key row, head), so a caller may split one pass's tiles across threads
// without changing a bit; passes that share rows must run in a fixed order.
// With finite inputs nothing overflows (every exponent x - LSE is <= ~0),
// also for logits of magnitude 1e4.
void cpu_backward_pass(const CpuBwdParams& p);

// Delta[b,t,h] = sum_d dout[b,t,h,d] * o[b,t,h,d], summed in double and
// stored as float32, for t in [0, rows) of every batch and head. o and dout
// share one layout (batch_stride, row_stride elements; head stride head_dim);
// delta is written (overwritten) at b*delta_batch_stride + t*delta_row_stride
// + h. Rows with O = 0 (no branch selects them) get Delta = 0.
void cpu_backward_delta(const float* o, const float* dout, int64_t batch, int64_t rows, int64_t heads,
                        int64_t head_dim, int64_t batch_stride, int64_t row_stride, float* delta,
                        int64_t delta_batch_stride, int64_t delta_row_stride);

}  // namespace ringattn::kern

// The unit of attention work shared by every backend.
//
// A Tile is the attention of the queries of one (branch, head, segment) that
// live on this shard against the keys of that same segment held by one source
// (this shard, or a packed block received from a peer). The planner emits
// tiles; the CPU and CUDA kernels walk them. Kernels know nothing of MPI/NCCL.
//
// Index sets (SPEC.md): for branch (w, r), head h with offset o, segment s,
//   I = { s*w + o + j*r : j >= 0, < min((s+1)*w, N) }.
// Queries and keys of a tile are consecutive runs of the same I, so causality
// is a comparison of positions in I: key j is visible to query i iff
//   !causal || k_idx0 + j <= q_idx0 + i.
#pragma once
#include <cstdint>

namespace ringattn::kern {

struct Tile {
  int64_t q_row0;    // local shard row of the first query
  int64_t q_idx0;    // position of the first query in I
  int64_t k_idx0;    // position of the first key in I
  int64_t k_row0;    // k_stride > 0: source row of the first key
                     // k_stride == 0: offset of the first key in KeySource::index
  int32_t q_count;   // queries (>= 1)
  int32_t k_count;   // keys (>= 1)
  int32_t q_stride;  // rows between consecutive queries (= r)
  int32_t k_stride;  // rows between consecutive keys (= r), or 0 for an index list
  int32_t head;      // head h
  int32_t branch;    // branch i (informational: statistics, debugging)
};
static_assert(sizeof(Tile) == 56, "Tile is part of the device plan layout");

// Where the keys and values of a set of tiles live.
// Element address of row `row`, batch `b`, head `h`:
//   k + b*batch_stride + row*row_stride + h*head_stride   (same for v)
// For the local shard (B x L x H x D): batch_stride = L*H*D, row_stride = H*D,
// head_stride = D. For a packed peer block the rows of all heads are listed
// in `index` (entries already include the head's offset) and head_stride = 0.
struct KeySource {
  const void* k = nullptr;
  const void* v = nullptr;
  int64_t batch_stride = 0;
  int64_t row_stride = 0;
  int64_t head_stride = 0;
  const int32_t* index = nullptr;  // key rows for tiles with k_stride == 0
};

// Visible key count for query i of a tile (causal trims the tail).
inline int64_t tile_visible_keys(const Tile& t, int64_t i, bool causal) {
  if (!causal) return t.k_count;
  int64_t last = t.q_idx0 + i - t.k_idx0 + 1;  // keys [0, last) are visible
  return last < 0 ? 0 : (last > t.k_count ? t.k_count : last);
}

// Visible (query, key) pairs of a tile: sum over queries of tile_visible_keys.
inline int64_t tile_visible_pairs(const Tile& t, bool causal) {
  const int64_t n = t.q_count, K = t.k_count;
  if (!causal) return n * K;
  const int64_t c = t.q_idx0 - t.k_idx0 + 1;  // query i sees clamp(c + i, 0, K) keys
  int64_t a = c >= 1 ? 0 : 1 - c;              // first i that sees a key
  if (a > n) a = n;
  int64_t b = K - c;                           // first i that sees all K keys
  b = b < a ? a : (b > n ? n : b);
  return (b - a) * c + (a + b - 1) * (b - a) / 2 + (n - b) * K;
}

}  // namespace ringattn::kern

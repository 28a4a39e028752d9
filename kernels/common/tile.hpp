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
//
// Packed segments (seg_len = c > 0): when r divides w, the index sets of
// consecutive segments s, s+1, ... of one (branch, head) continue each other
// with the same stride (segment s+1 starts at (s+1)w + o = s*w + o + c*r,
// c = w/r), so the planner packs m whole short segments into one tile of
// m*c queries and the same m*c keys (q_idx0 = k_idx0 = 0, rows advancing by
// r). Query i and key j then belong to segments i / c and j / c of the run,
// and the visibility rule gains a block-diagonal term:
//   j / c == i / c  and  (!causal || j <= i).
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
  int32_t seg_len;   // 0: an ordinary tile; c > 0: packed segments of c queries
                     // and c keys each (key j visible to query i only if j / c == i / c)
  int32_t reserved;  // 0 (explicit padding: plan images compare bytewise)
};
static_assert(sizeof(Tile) == 64, "Tile is part of the device plan layout");

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

// Keys [*j0, *j1) of a tile are the ones visible to query i: a prefix of the
// tile's keys (causal trims the tail), or, for packed segments, the part of
// that prefix inside query i's segment. Empty: *j0 == *j1.
inline void tile_visible_range(const Tile& t, int64_t i, bool causal, int64_t* j0, int64_t* j1) {
  int64_t lo = 0, hi = t.k_count;
  if (causal) {
    const int64_t last = t.q_idx0 + i - t.k_idx0 + 1;  // keys [0, last) are at or before the query
    hi = last < 0 ? 0 : (last > hi ? hi : last);
  }
  if (t.seg_len > 0) {
    const int64_t c = t.seg_len, s0 = i / c * c;
    lo = s0;
    if (hi > s0 + c) hi = s0 + c;
  }
  *j0 = lo;
  *j1 = hi > lo ? hi : lo;
}

// Visible key count for query i of a tile.
inline int64_t tile_visible_keys(const Tile& t, int64_t i, bool causal) {
  int64_t j0, j1;
  tile_visible_range(t, i, causal, &j0, &j1);
  return j1 - j0;
}

// Visible (query, key) pairs of an ordinary tile of n queries and K keys
// whose first query is `c - 1` positions after its first key.
inline int64_t visible_pairs_block(int64_t n, int64_t K, int64_t c, bool causal) {
  if (!causal) return n * K;
  // query i sees clamp(c + i, 0, K) keys
  int64_t a = c >= 1 ? 0 : 1 - c;  // first i that sees a key
  if (a > n) a = n;
  int64_t b = K - c;               // first i that sees all K keys
  b = b < a ? a : (b > n ? n : b);
  return (b - a) * c + (a + b - 1) * (b - a) / 2 + (n - b) * K;
}

// Visible (query, key) pairs of a tile: sum over queries of tile_visible_keys.
// Packed segments: the sum over the diagonal blocks (segment s: queries and
// keys [s*c, (s+1)*c), the same causal offset).
inline int64_t tile_visible_pairs(const Tile& t, bool causal) {
  const int64_t c = t.q_idx0 - t.k_idx0 + 1;
  if (t.seg_len <= 0) return visible_pairs_block(t.q_count, t.k_count, c, causal);
  const int64_t L = t.seg_len;
  int64_t sum = 0;
  for (int64_t s0 = 0; s0 < t.q_count && s0 < t.k_count; s0 += L) {
    const int64_t n = t.q_count - s0 < L ? t.q_count - s0 : L, K = t.k_count - s0 < L ? t.k_count - s0 : L;
    sum += visible_pairs_block(n, K, c, causal);
  }
  return sum;
}

}  // namespace ringattn::kern

// The K/V block a rank receives at one ring step, cut on the host from the
// global tensors the way the sending rank sends it (plan.hpp RowList): packed
// (kernels/cuda/ring_pack.hpp: K then V, each batch x rows x head_dim, head
// h's rows at [head_prefix[h], head_prefix[h+1]); tiles read it by position,
// affine or through the plan's key_index, with head_stride 0), or, when the
// step moves whole shards, the sender's K and V shards as they are
// (token-major; tiles read it by source row, like local keys).
#pragma once
#include <cstdint>
#include <vector>

#include "plan/plan.hpp"

namespace ringattn::test {

// k, v: global B x N x H x D; `recv` lists rows of shard `recv.peer` (L tokens each).
template <typename T>
std::vector<T> pack_block(const RowList& recv, int64_t L, const std::vector<T>& k, const std::vector<T>& v, int64_t B,
                          int64_t N, int64_t H, int64_t D) {
  const int64_t R = recv.total_rows();
  std::vector<T> blk(size_t(2 * B * R * D));
  T* kb = blk.data();
  T* vb = kb + B * R * D;
  if (recv.whole) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < L * H * D; ++e) {
        const size_t g = size_t((b * N + int64_t(recv.peer) * L) * H * D + e);
        kb[b * L * H * D + e] = k[g];
        vb[b * L * H * D + e] = v[g];
      }
    return blk;
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = recv.head_prefix[size_t(h)]; i < recv.head_prefix[size_t(h + 1)]; ++i) {
        const int64_t u = int64_t(recv.peer) * L + recv.rows[size_t(i)];
        for (int64_t d = 0; d < D; ++d) {
          kb[(b * R + i) * D + d] = k[size_t(((b * N + u) * H + h) * D + d)];
          vb[(b * R + i) * D + d] = v[size_t(((b * N + u) * H + h) * D + d)];
        }
      }
  return blk;
}

// Where the keys of a block made by pack_block lie (`blk`: its first element;
// `elem`: bytes per element, 1 when blk is typed).
inline kern::KeySource block_source(const RowList& recv, const void* blk, int64_t elem, int64_t B, int64_t L, int64_t H,
                                    int64_t D, const int32_t* key_index) {
  const int64_t R = recv.total_rows();
  const void* vb = static_cast<const char*>(blk) + B * R * D * elem;
  if (recv.whole) return kern::KeySource{blk, vb, L * H * D, H * D, D, nullptr};
  return kern::KeySource{blk, vb, R * D, D, 0, key_index};
}

// Test-only: the same plan with every affine tile of a packed block turned
// into an index list, so the kernels' index-list path is tested on every
// case (the planner makes evenly spaced keys affine).
inline Plan with_index_lists(Plan plan) {
  for (const Pass& ps : plan.passes) {
    if (ps.step == 0) continue;
    const PlanStep* st = nullptr;
    for (const PlanStep& x : plan.steps)
      if (x.step == ps.step) st = &x;
    if (st == nullptr || st->recv.whole) continue;
    for (int64_t ti = ps.tile_begin; ti < ps.tile_end; ++ti) {
      kern::Tile& t = plan.tiles[size_t(ti)];
      if (t.k_stride == 0) continue;
      const int64_t at = int64_t(plan.key_index.size());
      for (int64_t j = 0; j < t.k_count; ++j) plan.key_index.push_back(int32_t(t.k_row0 + j * t.k_stride));
      t.k_row0 = at;
      t.k_stride = 0;
    }
  }
  return plan;
}

}  // namespace ringattn::test

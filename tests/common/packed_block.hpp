// The packed K/V block a rank receives at one ring step, cut on the host from
// the global tensors the way the sending rank packs it (kernels/cuda/ring_pack.hpp,
// plan.hpp RowList): K then V, each batch x rows x head_dim, head h's rows at
// [head_prefix[h], head_prefix[h+1]). Tiles that read it use the plan's
// key_index (KeySource with head_stride 0).
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

}  // namespace ringattn::test

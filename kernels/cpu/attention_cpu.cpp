#include "attention_cpu.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/common/lse_merge.hpp"
#include "kernels/cpu/dot.hpp"

namespace ringattn::kern {
namespace {

constexpr int64_t kKeyBlock = 128;

}  // namespace

void cpu_forward_pass(const CpuPassParams& p) {
  const int64_t D = p.head_dim;
  const float* K = static_cast<const float*>(p.src.k);
  const float* V = static_cast<const float*>(p.src.v);
  std::vector<float> kt, vt, acc(D), s(kKeyBlock);
  for (int64_t ti = 0; ti < p.num_tiles; ++ti) {
    const Tile& t = p.tiles[ti];
    for (int64_t b = 0; b < p.batch; ++b) {
      // Gather this tile's keys and values into contiguous rows.
      kt.resize(size_t(t.k_count * D));
      vt.resize(size_t(t.k_count * D));
      for (int64_t j = 0; j < t.k_count; ++j) {
        int64_t row = t.k_stride > 0 ? t.k_row0 + j * t.k_stride : p.src.index[t.k_row0 + j];
        int64_t off = b * p.src.batch_stride + row * p.src.row_stride + int64_t(t.head) * p.src.head_stride;
        std::copy(K + off, K + off + D, kt.data() + j * D);
        std::copy(V + off, V + off + D, vt.data() + j * D);
      }
      for (int64_t i = 0; i < t.q_count; ++i) {
        int64_t ja, je;  // visible keys [ja, je) (packed segments: query i's own)
        tile_visible_range(t, i, p.causal, &ja, &je);
        const int64_t nk = je - ja;
        if (nk == 0) continue;
        const int64_t row = t.q_row0 + i * t.q_stride;
        const float* qr = p.q + b * p.q_batch_stride + row * p.q_row_stride + int64_t(t.head) * D;
        float m = -INFINITY, l = 0.f;
        std::fill(acc.begin(), acc.end(), 0.f);
        for (int64_t j0 = 0; j0 < nk; j0 += kKeyBlock) {
          const int64_t nb = std::min(kKeyBlock, nk - j0);
          float bm = -INFINITY;
          for (int64_t j = 0; j < nb; ++j) {
            s[j] = p.scale * dot(qr, kt.data() + (ja + j0 + j) * D, D);
            bm = std::max(bm, s[j]);
          }
          const float mn = std::max(m, bm);
          const float corr = std::exp(m - mn);  // 0 on the first block (m = -inf)
          l *= corr;
          for (int64_t d = 0; d < D; ++d) acc[d] *= corr;
          for (int64_t j = 0; j < nb; ++j) {
            const float pj = std::exp(s[j] - mn);
            l += pj;
            const float* vr = vt.data() + (ja + j0 + j) * D;
            for (int64_t d = 0; d < D; ++d) acc[d] += pj * vr[d];
          }
          m = mn;
        }
        // Merge (acc / l, m + log l) into the accumulators.
        const float lse_tile = m + std::log(l);
        float* o = p.o_acc + b * p.q_batch_stride + row * p.q_row_stride + int64_t(t.head) * D;
        float& lse = p.lse_acc[b * p.lse_batch_stride + row * p.lse_row_stride + t.head];
        const LseWeights w = lse_merge(lse, lse_tile);
        const float w2 = w.w2 / l;
        if (w.w1 == 0.f) {
          for (int64_t d = 0; d < D; ++d) o[d] = acc[d] * w2;
        } else {
          for (int64_t d = 0; d < D; ++d) o[d] = o[d] * w.w1 + acc[d] * w2;
        }
        lse = w.lse;
      }
    }
  }
}

}  // namespace ringattn::kern

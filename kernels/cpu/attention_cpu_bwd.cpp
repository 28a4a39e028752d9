#include "kernels/cpu/attention_cpu_bwd.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/dot.hpp"

namespace ringattn::kern {

void cpu_backward_pass(const CpuBwdParams& p) {
  const int64_t D = p.head_dim;
  const float* K = static_cast<const float*>(p.src.k);
  const float* V = static_cast<const float*>(p.src.v);
  std::vector<float> kt, vt, dkt, dvt, dq(static_cast<size_t>(D));
  std::vector<int64_t> off;  // element offset in src of each key of the tile
  for (int64_t ti = 0; ti < p.num_tiles; ++ti) {
    const Tile& t = p.tiles[ti];
    const size_t n = size_t(t.k_count * D);
    for (int64_t b = 0; b < p.batch; ++b) {
      // Gather this tile's keys and values into contiguous rows, as the forward does.
      kt.resize(n);
      vt.resize(n);
      off.resize(size_t(t.k_count));
      for (int64_t j = 0; j < t.k_count; ++j) {
        const int64_t row = t.k_stride > 0 ? t.k_row0 + j * t.k_stride : p.src.index[t.k_row0 + j];
        const int64_t o = b * p.src.batch_stride + row * p.src.row_stride + int64_t(t.head) * p.src.head_stride;
        off[size_t(j)] = o;
        std::copy(K + o, K + o + D, kt.data() + j * D);
        std::copy(V + o, V + o + D, vt.data() + j * D);
      }
      dkt.assign(n, 0.f);
      dvt.assign(n, 0.f);
      int64_t last_key = 0;  // keys [0, last_key) got a contribution
      for (int64_t i = 0; i < t.q_count; ++i) {
        int64_t ja, je;  // visible keys [ja, je) (packed segments: query i's own)
        tile_visible_range(t, i, p.causal, &ja, &je);
        if (je == ja) continue;
        const int64_t row = t.q_row0 + i * t.q_stride;
        const int64_t li = b * p.lse_batch_stride + row * p.lse_row_stride + t.head;
        const float lse = p.lse[li], delta = p.delta[li];
        if (lse == -INFINITY) continue;  // no keys in the forward: P = 0 (cannot happen with a consistent LSE)
        const int64_t qo = b * p.q_batch_stride + row * p.q_row_stride + int64_t(t.head) * D;
        const float* qr = p.q + qo;
        const float* gr = p.dout + qo;
        std::fill(dq.begin(), dq.end(), 0.f);
        for (int64_t j = ja; j < je; ++j) {
          const float* kr = kt.data() + j * D;
          const float* vr = vt.data() + j * D;
          const float pj = std::exp(p.scale * dot(qr, kr, D) - lse);  // the forward's logit, bit for bit
          const float ds = pj * (dot(gr, vr, D) - delta);
          float* dkr = dkt.data() + j * D;
          float* dvr = dvt.data() + j * D;
          for (int64_t d = 0; d < D; ++d) {
            dq[size_t(d)] += ds * kr[d];
            dkr[d] += ds * qr[d];
            dvr[d] += pj * gr[d];
          }
        }
        float* dqo = p.dq_acc + qo;
        for (int64_t d = 0; d < D; ++d) dqo[d] += p.scale * dq[size_t(d)];
        last_key = std::max(last_key, je);
      }
      // Keys no query of the tile sees (causal) got nothing: leave them alone.
      for (int64_t j = 0; j < last_key; ++j) {
        float* dk = p.dk_acc + off[size_t(j)];
        float* dv = p.dv_acc + off[size_t(j)];
        const float* dkr = dkt.data() + j * D;
        const float* dvr = dvt.data() + j * D;
        for (int64_t d = 0; d < D; ++d) {
          dk[d] += p.scale * dkr[d];
          dv[d] += dvr[d];
        }
      }
    }
  }
}

void cpu_backward_delta(const float* o, const float* dout, int64_t batch, int64_t rows, int64_t heads,
                        int64_t head_dim, int64_t batch_stride, int64_t row_stride, float* delta,
                        int64_t delta_batch_stride, int64_t delta_row_stride) {
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t < rows; ++t)
      for (int64_t h = 0; h < heads; ++h) {
        const int64_t e = b * batch_stride + t * row_stride + h * head_dim;
        double s = 0;
        for (int64_t d = 0; d < head_dim; ++d) s += double(dout[e + d]) * double(o[e + d]);
        delta[b * delta_batch_stride + t * delta_row_stride + h] = float(s);
      }
}

}  // namespace ringattn::kern

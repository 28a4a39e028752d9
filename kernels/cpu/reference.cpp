#include "reference.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace ringattn::kern {

// o_i(h), written out again here from SPEC.md so the oracle shares no code
// with the runtime it checks.
static int64_t spec_offset(HeadOffsets rule, int64_t r, int64_t h, int64_t H) {
  if (rule == HeadOffsets::interleaved) return h % r;
  const int64_t Hp = r * ((H + r - 1) / r);
  return h / (Hp / r);
}

void reference_forward(const Config& c, int64_t B, int64_t N, const double* q, const double* k, const double* v,
                       int64_t t0, int64_t t1, double* o, double* lse) {
  const int64_t H = c.heads, D = c.head_dim;
  const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(D));
  std::vector<int64_t> keys;
  std::vector<double> x;
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t t = t0; t < t1; ++t) {
      for (int64_t h = 0; h < H; ++h) {
        // The multiset union of A_i(t, h) over branches.
        keys.clear();
        for (const Branch& br : c.branches) {
          const int64_t s = t / br.w;
          const int64_t seg_begin = s * br.w, seg_end = std::min(seg_begin + br.w, N);
          const int64_t off = spec_offset(c.head_offsets, br.r, h, H);
          if ((t - seg_begin) % br.r != off) continue;  // t is not in I(i,h,s)
          for (int64_t u = seg_begin + off; u < seg_end; u += br.r) {
            if (c.causal && u > t) break;
            keys.push_back(u);
          }
        }
        const double* qt = q + ((b * N + t) * H + h) * D;
        double* ot = o + ((b * (t1 - t0) + (t - t0)) * H + h) * D;
        double& l = lse[(b * (t1 - t0) + (t - t0)) * H + h];
        std::fill(ot, ot + D, 0.0);
        if (keys.empty()) {
          l = -std::numeric_limits<double>::infinity();
          continue;
        }
        x.resize(keys.size());
        double m = -std::numeric_limits<double>::infinity();
        for (size_t j = 0; j < keys.size(); ++j) {
          const double* ku = k + ((b * N + keys[j]) * H + h) * D;
          double dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += qt[d] * ku[d];
          x[j] = scale * dot;
          m = std::max(m, x[j]);
        }
        double sum = 0;
        for (size_t j = 0; j < keys.size(); ++j) {
          const double p = std::exp(x[j] - m);
          sum += p;
          const double* vu = v + ((b * N + keys[j]) * H + h) * D;
          for (int64_t d = 0; d < D; ++d) ot[d] += p * vu[d];
        }
        for (int64_t d = 0; d < D; ++d) ot[d] /= sum;
        l = m + std::log(sum);
      }
    }
  }
}

}  // namespace ringattn::kern

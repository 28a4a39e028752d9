// SPEC.md written out a third time, as plainly as possible, for the tests.
// Nothing here calls the runtime or the kernels: membership is decided token
// by token from the definition (same segment floor(t/w) == floor(u/w), and
// residue (t - s*w) mod r == o_i(h)), so a shared mistake in index_set(),
// positions_in() or the reference cannot hide behind itself.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "ringattn/config.hpp"

namespace ringattn::test {

// o_i(h) of SPEC.md: interleaved h mod r; blocked H' = r*ceil(H/r), o = floor(h / (H'/r)).
inline int64_t spec_head_offset(HeadOffsets rule, int64_t r, int64_t h, int64_t H) {
  if (rule == HeadOffsets::interleaved) return h % r;
  int64_t Hp = r;
  while (Hp < H) Hp += r;  // smallest multiple of r that is >= H
  return h / (Hp / r);
}

// Is token t in some I(i, h, s) of branch b (i.e. does the branch select t for head h)?
inline bool spec_selected(const Config& c, const Branch& b, int64_t h, int64_t t) {
  const int64_t s = t / b.w;
  return (t - s * b.w) % b.r == spec_head_offset(c.head_offsets, b.r, h, c.heads);
}

// Is key u in A_i(t, h) for branch b? Decided from the definition only.
inline bool spec_attends(const Config& c, const Branch& b, int64_t h, int64_t t, int64_t u) {
  if (t / b.w != u / b.w) return false;  // same segment
  if (!spec_selected(c, b, h, t) || !spec_selected(c, b, h, u)) return false;
  return !c.causal || u <= t;
}

// The multiset union over branches of A_i(t, h), by scanning every key of the
// sequence (O(N) per query: this is the brute force).
inline void spec_keys_scan(const Config& c, int64_t N, int64_t h, int64_t t, std::vector<int64_t>* keys) {
  keys->clear();
  for (const Branch& b : c.branches)
    for (int64_t u = 0; u < N; ++u)
      if (spec_attends(c, b, h, t, u)) keys->push_back(u);
}

// The same multiset, walking only the segment of t (used where O(N^2) is too slow).
inline void spec_keys_segment(const Config& c, int64_t N, int64_t h, int64_t t, std::vector<int64_t>* keys) {
  keys->clear();
  for (const Branch& b : c.branches) {
    if (!spec_selected(c, b, h, t)) continue;  // A_i(t, h) is empty
    const int64_t s = t / b.w, a = s * b.w, e = std::min(a + b.w, N);
    const int64_t o = spec_head_offset(c.head_offsets, b.r, h, c.heads);
    const int64_t last = c.causal ? std::min(e, t + 1) : e;
    for (int64_t u = a; u < last; ++u)
      if ((u - a) % b.r == o) keys->push_back(u);  // u in I(i, h, s)
  }
}

// O(N^2) brute-force attention of SPEC.md in float64 for all tokens.
// q, k, v: B x N x H x D; o: B x N x H x D; lse: B x N x H.
inline void spec_brute_forward(const Config& c, int64_t B, int64_t N, const std::vector<double>& q,
                               const std::vector<double>& k, const std::vector<double>& v, std::vector<double>* o,
                               std::vector<double>* lse) {
  const int64_t H = c.heads, D = c.head_dim;
  const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(D));
  o->assign(size_t(B * N * H * D), 0.0);
  lse->assign(size_t(B * N * H), 0.0);
  std::vector<int64_t> keys;
  std::vector<double> x;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < N; ++t)
      for (int64_t h = 0; h < H; ++h) {
        spec_keys_scan(c, N, h, t, &keys);
        double* ot = o->data() + ((b * N + t) * H + h) * D;
        double& l = (*lse)[size_t((b * N + t) * H + h)];
        if (keys.empty()) {
          l = -std::numeric_limits<double>::infinity();
          continue;
        }
        x.assign(keys.size(), 0.0);
        double m = -std::numeric_limits<double>::infinity();
        for (size_t j = 0; j < keys.size(); ++j) {
          double dot = 0;
          for (int64_t d = 0; d < D; ++d)
            dot += q[size_t(((b * N + t) * H + h) * D + d)] * k[size_t(((b * N + keys[j]) * H + h) * D + d)];
          x[j] = scale * dot;
          m = std::max(m, x[j]);
        }
        double sum = 0;
        for (size_t j = 0; j < keys.size(); ++j) {
          const double p = std::exp(x[j] - m);
          sum += p;
          for (int64_t d = 0; d < D; ++d) ot[d] += p * v[size_t(((b * N + keys[j]) * H + h) * D + d)];
        }
        for (int64_t d = 0; d < D; ++d) ot[d] /= sum;
        l = m + std::log(sum);
      }
}

// Rows each rank needs from every other rank, enumerated from the definition:
// need[dst][h * N + u] = 1 iff some query token t of dst's shard attends to
// key u (global) for head h through some branch. A rank's own keys are
// included (callers skip src == dst).
inline std::vector<std::vector<uint8_t>> spec_brute_need(const Config& c, int64_t N, int P) {
  const int64_t L = N / P, H = c.heads;
  std::vector<std::vector<uint8_t>> need(size_t(P), std::vector<uint8_t>(size_t(H * N), 0));
  std::vector<int64_t> keys;
  for (int64_t t = 0; t < N; ++t) {
    const int dst = int(t / L);
    for (int64_t h = 0; h < H; ++h) {
      spec_keys_segment(c, N, h, t, &keys);
      for (int64_t u : keys) need[size_t(dst)][size_t(h * N + u)] = 1;
    }
  }
  return need;
}

// Number of (head, key) rows of src's shard that dst needs.
inline int64_t spec_need_count(const std::vector<uint8_t>& need_dst, int64_t N, int64_t H, int64_t L, int src) {
  int64_t n = 0;
  for (int64_t h = 0; h < H; ++h)
    for (int64_t u = int64_t(src) * L; u < int64_t(src + 1) * L; ++u) n += need_dst[size_t(h * N + u)];
  return n;
}

// Rows this rank sends in total (to every other rank), by brute force.
inline int64_t spec_rows_sent(const std::vector<std::vector<uint8_t>>& need, int64_t N, int64_t H, int P, int rank) {
  const int64_t L = N / P;
  int64_t n = 0;
  for (int dst = 0; dst < P; ++dst)
    if (dst != rank) n += spec_need_count(need[size_t(dst)], N, H, L, rank);
  return n;
}

}  // namespace ringattn::test

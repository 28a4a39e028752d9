// Interval arithmetic on LongNet index sets (SPEC.md):
//   I(i,h,s) = { s*w + o + j*r : j >= 0, s*w + o + j*r < min((s+1)*w, N) }.
// Everything the planner does (which queries a shard owns, which keys a peer
// holds, which rows must travel) is a range of j computed here.
#pragma once
#include <algorithm>
#include <cstdint>

#include "ringattn/config.hpp"

namespace ringattn {

struct IndexSet {
  int64_t base = 0;   // first token, s*w + o
  int64_t r = 1;      // stride
  int64_t count = 0;  // |I|
  int64_t token(int64_t j) const { return base + j * r; }
};

inline IndexSet index_set(const Branch& b, int64_t n, int64_t o, int64_t s) {
  IndexSet I;
  I.r = b.r;
  I.base = s * b.w + o;
  int64_t end = std::min((s + 1) * b.w, n);
  I.count = I.base < end ? (end - I.base + b.r - 1) / b.r : 0;
  return I;
}

// Positions [lo, hi) of I whose tokens lie in [a, b).
inline void positions_in(const IndexSet& I, int64_t a, int64_t b, int64_t* lo, int64_t* hi) {
  auto first_at_or_after = [&](int64_t t) -> int64_t {
    if (t <= I.base) return 0;
    return std::min(I.count, (t - I.base + I.r - 1) / I.r);
  };
  *lo = first_at_or_after(a);
  *hi = std::max(*lo, first_at_or_after(b));
}

}  // namespace ringattn

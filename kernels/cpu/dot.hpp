// The float32 dot product of the CPU path, shared by the forward and the
// backward passes so that both compute a logit with the same arithmetic.
#pragma once
#include <cstdint>

namespace ringattn::kern {

// Eight independent partial sums, so the compiler can vectorise it without
// reassociating a single float reduction; a fixed order, so a logit has the
// same bits wherever it is computed.
inline float dot(const float* a, const float* b, int64_t n) {
  float s[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int i = 0; i < 8; ++i) s[i] += a[d + i] * b[d + i];
  float t = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
  for (; d < n; ++d) t += a[d] * b[d];
  return t;
}

}  // namespace ringattn::kern

// Merging two partial attention results by the log-sum-exp rule (SPEC.md):
//   m = max(l1, l2);  l = m + log(exp(l1 - m) + exp(l2 - m));
//   o = o1 * exp(l1 - l) + o2 * exp(l2 - l)
// An empty partial has l = -inf and weight 0. Float32 throughout; with
// logits of magnitude 1e4 nothing overflows since every exponent is <= 0.
// The weights are computed as exp(li - m) / (exp(l1 - m) + exp(l2 - m)), the
// same value as exp(li - l), because l rounded to float32 is off by up to
// half an ulp of |l| (5e-4 at |l| = 1e4): exp(li - l) then gives weights that
// do not sum to 1 (O off by ~1e-4 relative at logits of 1e4; both weights 1
// at |l| = 1e30). Found by tests/unit/lse_merge_test.cpp.
#pragma once
#include <cmath>

#if defined(__CUDACC__)
#define RINGATTN_HD __host__ __device__ __forceinline__
#else
#define RINGATTN_HD inline
#endif

namespace ringattn::kern {

struct LseWeights {
  float lse;  // merged log-sum-exp
  float w1;   // weight of the first partial
  float w2;   // weight of the second partial
};

RINGATTN_HD LseWeights lse_merge(float l1, float l2) {
  if (l2 == -INFINITY) return {l1, l1 == -INFINITY ? 0.f : 1.f, 0.f};
  if (l1 == -INFINITY) return {l2, 0.f, 1.f};
  float m = fmaxf(l1, l2);
  float e1 = expf(l1 - m), e2 = expf(l2 - m);
  float s = e1 + e2;
  return {m + logf(s), e1 / s, e2 / s};
}

}  // namespace ringattn::kern

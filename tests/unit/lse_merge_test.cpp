// kern::lse_merge: the float32 log-sum-exp rule of SPEC.md, its edge cases
// (empty partials, huge differences) and its use to merge split softmaxes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>

#include "common/test_util.hpp"
#include "kernels/common/lse_merge.hpp"

namespace ringattn::test {
namespace {

using kern::lse_merge;
using kern::LseWeights;

void expect_finite(const LseWeights& w) {
  EXPECT_TRUE(std::isfinite(w.lse)) << w.lse;
  EXPECT_TRUE(std::isfinite(w.w1)) << w.w1;
  EXPECT_TRUE(std::isfinite(w.w2)) << w.w2;
}

TEST(LseMerge, BothEmpty) {
  LseWeights w = lse_merge(-INFINITY, -INFINITY);
  EXPECT_TRUE(std::isinf(w.lse) && w.lse < 0);
  EXPECT_EQ(w.w1, 0.f);
  EXPECT_EQ(w.w2, 0.f);
}

TEST(LseMerge, OneEmpty) {
  for (float x : {0.f, -3.5f, 12.f, 1e4f, -1e4f, 3e38f, -3e38f}) {
    LseWeights a = lse_merge(-INFINITY, x);
    EXPECT_EQ(a.lse, x);
    EXPECT_EQ(a.w1, 0.f);
    EXPECT_EQ(a.w2, 1.f);
    LseWeights b = lse_merge(x, -INFINITY);
    EXPECT_EQ(b.lse, x);
    EXPECT_EQ(b.w1, 1.f);
    EXPECT_EQ(b.w2, 0.f);
  }
}

TEST(LseMerge, Equal) {
  for (float x : {0.f, 1e4f, -1e4f, 7.25f}) {
    LseWeights w = lse_merge(x, x);
    expect_finite(w);
    EXPECT_NEAR(w.lse, x + std::log(2.0), 1e-6 * std::max(1.f, std::fabs(x)) + 1e-6);
    EXPECT_NEAR(w.w1, 0.5f, 1e-6);
    EXPECT_NEAR(w.w2, 0.5f, 1e-6);
  }
}

TEST(LseMerge, HugeDifferences) {
  const float pairs[][2] = {{1e4f, -1e4f}, {-1e4f, 1e4f}, {1e4f, 1e4f - 200.f}, {3e38f, -3e38f},
                            {-3e38f, 3e38f}, {3e38f, 3e38f}, {0.f, 1e30f}, {-1e30f, -1e30f}};
  for (const auto& p : pairs) {
    SCOPED_TRACE(testing::Message() << "l1=" << p[0] << " l2=" << p[1]);
    LseWeights w = lse_merge(p[0], p[1]);
    expect_finite(w);
    EXPECT_GE(w.w1, 0.f);
    EXPECT_GE(w.w2, 0.f);
    EXPECT_LE(w.w1, 1.f);
    EXPECT_LE(w.w2, 1.f);
    EXPECT_GE(w.lse, std::max(p[0], p[1]));
    EXPECT_NEAR(double(w.w1) + double(w.w2), 1.0, 1e-6);
  }
  LseWeights w = lse_merge(1e4f, -1e4f);
  EXPECT_EQ(w.lse, 1e4f);
  EXPECT_EQ(w.w1, 1.f);
  EXPECT_EQ(w.w2, 0.f);
}

TEST(LseMerge, MatchesDoubleFormula) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 g(seed);
  std::uniform_real_distribution<double> u(-1e4, 1e4), small(-30, 30);
  for (int i = 0; i < 10000; ++i) {
    const float l1 = float(u(g)), l2 = i % 2 ? float(l1 + small(g)) : float(u(g));
    const double m = std::max(double(l1), double(l2));
    const double l = m + std::log(std::exp(double(l1) - m) + std::exp(double(l2) - m));
    LseWeights w = lse_merge(l1, l2);
    ASSERT_TRUE(std::isfinite(w.lse) && std::isfinite(w.w1) && std::isfinite(w.w2)) << l1 << " " << l2;
    // One float32 ulp at |l| <= 1e4 is <= 1e-3.
    EXPECT_NEAR(w.lse, l, 2e-3) << l1 << " " << l2;
    EXPECT_NEAR(w.w1, std::exp(double(l1) - l), 2e-3) << l1 << " " << l2;
    EXPECT_NEAR(w.w2, std::exp(double(l2) - l), 2e-3) << l1 << " " << l2;
  }
}

// Splitting one softmax into parts and merging them by the rule gives the
// softmax of the whole (the property every ring step relies on).
TEST(LseMerge, MergingPartsEqualsWhole) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 g(seed);
  for (double amp : {1.0, 1e2, 1e4}) {
    std::uniform_real_distribution<double> x(-amp, amp), val(-1, 1);
    const int n = 64;
    std::vector<double> s(n), v(n);
    for (int i = 0; i < n; ++i) {
      s[i] = double(float(x(g)));
      v[i] = val(g);
    }
    double m = -INFINITY;
    for (double e : s) m = std::max(m, e);
    double sum = 0, acc = 0;
    for (int i = 0; i < n; ++i) {
      sum += std::exp(s[i] - m);
      acc += std::exp(s[i] - m) * v[i];
    }
    const double want_l = m + std::log(sum), want_o = acc / sum;
    // Merge parts of sizes 1, 2, 3, ... in float32.
    float lse = -INFINITY, o = 0.f;
    for (int a = 0, len = 1; a < n; a += len, ++len) {
      const int e = std::min(n, a + len);
      double pm = -INFINITY, ps = 0, pa = 0;
      for (int i = a; i < e; ++i) pm = std::max(pm, s[i]);
      for (int i = a; i < e; ++i) {
        ps += std::exp(s[i] - pm);
        pa += std::exp(s[i] - pm) * v[i];
      }
      LseWeights w = lse_merge(lse, float(pm + std::log(ps)));
      o = (w.w1 == 0.f ? 0.f : o * w.w1) + float(pa / ps) * w.w2;
      lse = w.lse;
    }
    ASSERT_TRUE(std::isfinite(lse) && std::isfinite(o));
    EXPECT_NEAR(lse, want_l, 1e-6 * std::max(1.0, std::fabs(want_l)) + 1e-6) << "amp=" << amp;
    EXPECT_NEAR(o, want_o, 1e-5) << "amp=" << amp;
  }
}

}  // namespace
}  // namespace ringattn::test

// The float64 reference (kernels/cpu/reference.cpp) against an O(N^2) brute
// force written from SPEC.md in tests/common/spec_brute.hpp, one case per
// SPEC feature. Each case also checks that the feature it names is really
// exercised (e.g. that some token is skipped by every branch), so a config
// typo cannot turn a case into a duplicate of another.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>

#include "common/spec_brute.hpp"
#include "common/test_util.hpp"
#include "kernels/cpu/reference.hpp"

namespace ringattn::test {
namespace {

struct RefResult {
  std::vector<double> o, lse;
};

RefResult run_reference(const Config& c, int64_t B, int64_t N, const std::vector<double>& q,
                        const std::vector<double>& k, const std::vector<double>& v) {
  RefResult r;
  r.o.assign(size_t(B * N * c.heads * c.head_dim), std::nan(""));
  r.lse.assign(size_t(B * N * c.heads), std::nan(""));
  kern::reference_forward(ref_problem(c), B, N, q.data(), k.data(), v.data(), 0, N, r.o.data(), r.lse.data());
  return r;
}

// Runs reference and brute force on random inputs; they must agree to float64 rounding.
RefResult check_against_brute(const Config& c, int64_t B, int64_t N, uint64_t seed) {
  SCOPED_TRACE(describe(c, N, B) + " seed=" + std::to_string(seed));
  std::mt19937_64 g(seed);
  const size_t n = size_t(B * N * c.heads * c.head_dim);
  auto q = random_tensor(g, n), k = random_tensor(g, n), v = random_tensor(g, n);
  RefResult ref = run_reference(c, B, N, q, k, v);
  RefResult bf;
  spec_brute_forward(c, B, N, q, k, v, &bf.o, &bf.lse);
  double max_o = 0, max_l = 0;
  int64_t inf_mismatch = 0, nonfinite = 0;
  for (size_t i = 0; i < ref.o.size(); ++i) {
    if (!std::isfinite(ref.o[i])) nonfinite++;
    max_o = std::max(max_o, std::fabs(ref.o[i] - bf.o[i]));
  }
  for (size_t i = 0; i < ref.lse.size(); ++i) {
    const bool ri = std::isinf(ref.lse[i]) && ref.lse[i] < 0, bi = std::isinf(bf.lse[i]) && bf.lse[i] < 0;
    if (ri != bi) inf_mismatch++;
    if (!ri && !bi) max_l = std::max(max_l, std::fabs(ref.lse[i] - bf.lse[i]));
    if (std::isnan(ref.lse[i])) inf_mismatch++;
  }
  EXPECT_EQ(nonfinite, 0);
  EXPECT_EQ(inf_mismatch, 0);
  EXPECT_LE(max_o, 1e-12);
  EXPECT_LE(max_l, 1e-12);
  return ref;
}

int64_t count_neg_inf(const std::vector<double>& lse) {
  int64_t n = 0;
  for (double x : lse) n += (std::isinf(x) && x < 0);
  return n;
}

TEST(Reference, InterleavedOffsets) {
  Config c = make_config({{8, 1}, {16, 2}, {32, 4}}, 5, 8);
  check_against_brute(c, 2, 64, fresh_seed());
}

TEST(Reference, BlockedOffsetsHeadsNotDivisibleByR) {
  // H = 5 with r = 2 (H' = 6) and r = 4 (H' = 8): padded heads.
  Config c = make_config({{8, 2}, {24, 4}}, 5, 8, false, HeadOffsets::blocked);
  const uint64_t seed = fresh_seed();
  RefResult blocked = check_against_brute(c, 1, 72, seed);
  // The rule must matter: the same inputs with interleaved offsets give a different result.
  c.head_offsets = HeadOffsets::interleaved;
  RefResult inter = check_against_brute(c, 1, 72, seed);
  double diff = 0;
  for (size_t i = 0; i < blocked.o.size(); ++i) diff = std::max(diff, std::fabs(blocked.o[i] - inter.o[i]));
  EXPECT_GT(diff, 1e-3) << "blocked and interleaved offsets gave the same output";
}

TEST(Reference, Causal) {
  Config c = make_config({{8, 1}, {16, 2}, {40, 4}}, 3, 8, true);
  check_against_brute(c, 2, 80, fresh_seed());
}

TEST(Reference, LastSegmentShorterThanW) {
  // 70 = 4*16 + 6 = 2*32 + 6: the last segment of both branches is 6 tokens.
  Config c = make_config({{16, 1}, {32, 2}}, 3, 8);
  check_against_brute(c, 1, 70, fresh_seed());
  c.causal = true;
  check_against_brute(c, 1, 70, fresh_seed());
}

TEST(Reference, DilationNotDividingSegment) {
  Config c = make_config({{10, 3}, {14, 4}, {25, 6}}, 4, 8);
  check_against_brute(c, 1, 77, fresh_seed());
}

TEST(Reference, TokensNoBranchSelects) {
  // r = 3 and r = 5 with H = 2: for head 0 a token at position 1 of both
  // segments' residues is skipped by both branches.
  Config c = make_config({{12, 3}, {20, 5}}, 2, 8);
  RefResult r = check_against_brute(c, 1, 60, fresh_seed());
  const int64_t skipped = count_neg_inf(r.lse);
  EXPECT_GT(skipped, 0) << "the config was meant to leave some tokens unselected";
  for (size_t i = 0; i < r.lse.size(); ++i) {
    if (!std::isinf(r.lse[i])) continue;
    for (int64_t d = 0; d < c.head_dim; ++d) EXPECT_EQ(r.o[i * size_t(c.head_dim) + size_t(d)], 0.0);
  }
}

TEST(Reference, KeySelectedByTwoBranchesCountsTwice) {
  // Overlapping branches: brute force counts multiplicity.
  Config c = make_config({{16, 1}, {32, 2}}, 2, 8);
  check_against_brute(c, 1, 64, fresh_seed());
  // The same branch twice doubles every weight: O unchanged, LSE + log 2.
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 g(seed);
  const int64_t N = 48, H = 2, D = 8;
  auto q = random_tensor(g, size_t(N * H * D)), k = random_tensor(g, size_t(N * H * D)), v = random_tensor(g, size_t(N * H * D));
  Config one = make_config({{16, 2}}, H, D), two = make_config({{16, 2}, {16, 2}}, H, D);
  RefResult r1 = run_reference(one, 1, N, q, k, v), r2 = run_reference(two, 1, N, q, k, v);
  int64_t selected = 0;
  for (size_t i = 0; i < r1.lse.size(); ++i) {
    if (std::isinf(r1.lse[i])) {
      EXPECT_EQ(r2.lse[i], r1.lse[i]) << "at " << i;
      continue;
    }
    selected++;
    EXPECT_NEAR(r2.lse[i], r1.lse[i] + std::log(2.0), 1e-12) << "at " << i;
  }
  EXPECT_GT(selected, 0);
  for (size_t i = 0; i < r1.o.size(); ++i) EXPECT_NEAR(r2.o[i], r1.o[i], 1e-12) << "at " << i;
}

TEST(Reference, DenseIsPlainAttention) {
  const int64_t N = 50;
  Config c = make_config({{N, 1}}, 2, 8);
  RefResult r = check_against_brute(c, 2, N, fresh_seed());
  EXPECT_EQ(count_neg_inf(r.lse), 0);
  c.causal = true;
  r = check_against_brute(c, 1, N, fresh_seed());
  EXPECT_EQ(count_neg_inf(r.lse), 0);
}

TEST(Reference, ExplicitScale) {
  Config c = make_config({{8, 1}, {24, 3}}, 3, 8);
  c.scale = 0.37;
  check_against_brute(c, 1, 48, fresh_seed());
}

TEST(Reference, EverythingAtOnce) {
  // Causal, blocked with H not divisible by r, r not dividing w, last segment shorter, overlap.
  Config c = make_config({{9, 1}, {20, 3}, {33, 5}}, 7, 4, true, HeadOffsets::blocked);
  check_against_brute(c, 2, 71, fresh_seed());
}

TEST(Reference, RowRangeMatchesFullSequence) {
  // Computing rows [t0, t1) gives the same rows as computing everything.
  Config c = make_config({{16, 1}, {32, 4}}, 3, 8, true);
  const int64_t B = 2, N = 64, t0 = 20, t1 = 45, H = c.heads, D = c.head_dim;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 g(seed);
  const size_t n = size_t(B * N * H * D);
  auto q = random_tensor(g, n), k = random_tensor(g, n), v = random_tensor(g, n);
  RefResult all = run_reference(c, B, N, q, k, v);
  std::vector<double> o(size_t(B * (t1 - t0) * H * D)), lse(size_t(B * (t1 - t0) * H));
  kern::reference_forward(ref_problem(c), B, N, q.data(), k.data(), v.data(), t0, t1, o.data(), lse.data());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t h = 0; h < H; ++h) {
        EXPECT_EQ(lse[size_t((b * (t1 - t0) + t - t0) * H + h)], all.lse[size_t((b * N + t) * H + h)]);
        for (int64_t d = 0; d < D; ++d)
          EXPECT_EQ(o[size_t(((b * (t1 - t0) + t - t0) * H + h) * D + d)], all.o[size_t(((b * N + t) * H + h) * D + d)]);
      }
}

TEST(Reference, ThreadCountDoesNotChangeABit) {
  // Rows are split over threads, but each row is computed by one thread with
  // the same arithmetic: 1 and 4 threads give the same bits (memcmp).
  Config c = make_config({{24, 1}, {40, 3}, {64, 8}}, 5, 16, true, HeadOffsets::blocked);
  const int64_t B = 2, N = 150, t0 = 7, t1 = 143, H = c.heads, D = c.head_dim, rows = t1 - t0;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 g(seed);
  const size_t n = size_t(B * N * H * D);
  auto q = random_tensor(g, n, 3.0), k = random_tensor(g, n, 3.0), v = random_tensor(g, n);
  std::vector<double> o1(size_t(B * rows * H * D)), l1(size_t(B * rows * H)), o4(o1.size(), 1.0), l4(l1.size(), 1.0);
  kern::RefOptions one;
  one.threads = 1;
  kern::reference_forward(ref_problem(c), B, N, q.data(), k.data(), v.data(), t0, t1, o1.data(), l1.data(), one);
  kern::RefOptions four;
  four.threads = 4;
  std::vector<double> seen;
  four.progress = [&](double f) { seen.push_back(f); };
  four.progress_interval_s = 0;  // report after every chunk of rows
  kern::reference_forward(ref_problem(c), B, N, q.data(), k.data(), v.data(), t0, t1, o4.data(), l4.data(), four);
  EXPECT_EQ(std::memcmp(o1.data(), o4.data(), o1.size() * sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(l1.data(), l4.data(), l1.size() * sizeof(double)), 0);
  // Progress: non-decreasing fractions in (0, 1], the last one exactly 1.
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), 1.0);
  for (size_t i = 0; i < seen.size(); ++i) {
    EXPECT_GT(seen[i], 0.0);
    EXPECT_LE(seen[i], 1.0);
    if (i > 0) {
      EXPECT_GE(seen[i], seen[i - 1]);
    }
  }
}

TEST(Reference, MoreThreadsThanRows) {
  Config c = make_config({{4, 1}}, 2, 8);
  const int64_t N = 8;
  std::mt19937_64 g(fresh_seed());
  const size_t n = size_t(N * c.heads * c.head_dim);
  auto q = random_tensor(g, n), k = random_tensor(g, n), v = random_tensor(g, n);
  RefResult serial = run_reference(c, 1, N, q, k, v);
  std::vector<double> o(serial.o.size()), lse(serial.lse.size());
  kern::RefOptions many;
  many.threads = 64;
  kern::reference_forward(ref_problem(c), 1, N, q.data(), k.data(), v.data(), 0, N, o.data(), lse.data(), many);
  EXPECT_EQ(o, serial.o);
  EXPECT_EQ(lse, serial.lse);
}

}  // namespace
}  // namespace ringattn::test

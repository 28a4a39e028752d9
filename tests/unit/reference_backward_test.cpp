// The float64 reference backward (kern::reference_backward) against finite
// differences of the float64 reference forward: with a random G and the
// scalar loss L = sum(O * G), dL/dQ, dL/dK, dL/dV by a fourth-order central
// difference must equal reference_backward's dq, dk, dv with dO = G. One
// case per SPEC feature; each also checks that its feature is exercised.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iostream>
#include <random>

#include "common/test_util.hpp"
#include "kernels/cpu/reference.hpp"

namespace ringattn::test {
namespace {

struct Problem {
  Config c;
  int64_t B, N;
  std::vector<double> q, k, v, g;  // g: dL/dO
  size_t size() const { return size_t(B * N * c.heads * c.head_dim); }
};

Problem make_problem(const Config& c, int64_t B, int64_t N, uint64_t seed, double qk_amp = 1.5) {
  std::mt19937_64 gen(seed);
  Problem p{c, B, N, {}, {}, {}, {}};
  p.q = random_tensor(gen, p.size(), qk_amp);
  p.k = random_tensor(gen, p.size(), qk_amp);
  p.v = random_tensor(gen, p.size());
  p.g = random_tensor(gen, p.size());
  return p;
}

struct Grads {
  std::vector<double> o, lse, dq, dk, dv;
};

Grads backward(const Problem& p, const kern::RefOptions& options = {}) {
  const int64_t H = p.c.heads;
  Grads r;
  r.o.assign(p.size(), std::nan(""));
  r.lse.assign(size_t(p.B * p.N * H), std::nan(""));
  r.dq.assign(p.size(), std::nan(""));
  r.dk = r.dq;
  r.dv = r.dq;
  kern::reference_forward(ref_problem(p.c), p.B, p.N, p.q.data(), p.k.data(), p.v.data(), 0, p.N, r.o.data(),
                          r.lse.data());
  kern::reference_backward(ref_problem(p.c), p.B, p.N, p.q.data(), p.k.data(), p.v.data(), r.o.data(), r.lse.data(),
                           p.g.data(), r.dq.data(), r.dk.data(), r.dv.data(), options);
  return r;
}

// L = sum(O * G) through the float64 forward.
double loss(const Problem& p, const std::vector<double>& q, const std::vector<double>& k, const std::vector<double>& v) {
  std::vector<double> o(p.size()), lse(size_t(p.B * p.N * p.c.heads));
  kern::reference_forward(ref_problem(p.c), p.B, p.N, q.data(), k.data(), v.data(), 0, p.N, o.data(), lse.data());
  double l = 0;
  for (size_t i = 0; i < o.size(); ++i) l += o[i] * p.g[i];
  return l;
}

// dL/dX for X = q (which 0), k (1), v (2), entry by entry:
//   (8 (L(x+h) - L(x-h)) - (L(x+2h) - L(x-2h))) / (12 h)
// Truncation is O(h^4) ~ 1e-12 at h = 1e-3 and rounding ~ 1e-16 |L| / h, so
// the difference is good to about 1e-11 relative: far below the 1e-6 bound.
std::vector<double> finite_difference(const Problem& p, int which) {
  const double h = 1e-3;
  std::vector<double> x[3] = {p.q, p.k, p.v};
  std::vector<double> d(p.size());
  for (size_t i = 0; i < p.size(); ++i) {
    const double x0 = x[which][i];
    auto at = [&](double dx) {
      x[which][i] = x0 + dx;
      return loss(p, x[0], x[1], x[2]);
    };
    d[i] = (8 * (at(h) - at(-h)) - (at(2 * h) - at(-2 * h))) / (12 * h);
    x[which][i] = x0;
  }
  return d;
}

double rel_l2(const std::vector<double>& x, const std::vector<double>& ref) {
  kern::ErrorAccumulator acc;
  for (size_t i = 0; i < x.size(); ++i) acc.add(x[i], ref[i]);
  return acc.rel_l2();
}

// (token, head) pairs that no branch selects: LSE = -inf.
int64_t count_unselected(const std::vector<double>& lse) {
  int64_t n = 0;
  for (double x : lse) n += (x == -INFINITY);
  return n;
}

// Checks reference_backward against finite differences; returns the gradients.
Grads check_fd(const Config& c, int64_t B, int64_t N, uint64_t seed) {
  SCOPED_TRACE(describe(c, N, B) + " seed=" + std::to_string(seed));
  const Problem p = make_problem(c, B, N, seed);
  Grads r = backward(p);
  const char* names[3] = {"dQ", "dK", "dV"};
  const std::vector<double>* got[3] = {&r.dq, &r.dk, &r.dv};
  for (int w = 0; w < 3; ++w) {
    const std::vector<double> fd = finite_difference(p, w);
    const double e = rel_l2(*got[w], fd);
    std::cout << "  " << names[w] << " vs finite differences: relative L2 " << e << "\n";
    EXPECT_LE(e, 1e-6) << names[w] << " vs finite differences, relative L2";
    double norm = 0;
    for (double x : fd) norm += x * x;
    EXPECT_GT(norm, 1e-6) << names[w] << " is zero: the case tests nothing";
  }
  // Tokens no branch selects for a head: exactly zero gradients there.
  const int64_t D = c.head_dim;
  for (size_t i = 0; i < r.lse.size(); ++i) {
    if (r.lse[i] != -INFINITY) continue;
    for (int64_t d = 0; d < D; ++d) {
      const size_t e = i * size_t(D) + size_t(d);
      EXPECT_EQ(r.dq[e], 0.0) << "at " << e;
      EXPECT_EQ(r.dk[e], 0.0) << "at " << e;
      EXPECT_EQ(r.dv[e], 0.0) << "at " << e;
    }
  }
  return r;
}

TEST(ReferenceBackward, DilatedInterleaved) {
  check_fd(make_config({{8, 2}, {12, 3}, {24, 1}}, 3, 4), 2, 24, fresh_seed());
}

TEST(ReferenceBackward, DilationNotDividingSegmentShortLast) {
  // 23 = 2*10 + 3 = 3*7 + 2: short last segments, r = 3 and 4 do not divide w.
  check_fd(make_config({{10, 3}, {7, 2}, {12, 4}}, 2, 4), 1, 23, fresh_seed());
}

TEST(ReferenceBackward, Causal) {
  check_fd(make_config({{8, 1}, {12, 3}, {20, 2}}, 3, 4, true), 1, 22, fresh_seed());
}

TEST(ReferenceBackward, BlockedOffsets) {
  // H = 5 with r = 2 (H' = 6) and r = 4 (H' = 8): padded heads.
  check_fd(make_config({{8, 2}, {16, 4}}, 5, 3, false, HeadOffsets::blocked), 1, 24, fresh_seed());
}

TEST(ReferenceBackward, TokensNoBranchSelects) {
  // r = 3 and r = 5 with H = 2: some tokens are skipped by both branches.
  const Config c = make_config({{12, 3}, {20, 5}}, 2, 4);
  const Grads r = check_fd(c, 1, 40, fresh_seed());
  EXPECT_GT(count_unselected(r.lse), 0) << "the config was meant to leave some tokens unselected";
}

TEST(ReferenceBackward, KeysSelectedByTwoBranchesCountTwice) {
  // Overlapping branches (every key of (16,2) is also in (16,1)) and a
  // branch listed twice: finite differences see the multiset.
  check_fd(make_config({{16, 1}, {16, 2}, {16, 2}}, 2, 4), 1, 32, fresh_seed());
  // The same branch twice: each P halves and counts twice, so the gradient
  // equals that of the branch alone.
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  const Problem one = make_problem(make_config({{8, 2}}, 2, 4), 1, 24, seed);
  Problem two = one;
  two.c = make_config({{8, 2}, {8, 2}}, 2, 4);
  const Grads g1 = backward(one), g2 = backward(two);
  EXPECT_LE(rel_l2(g2.dq, g1.dq), 1e-13);
  EXPECT_LE(rel_l2(g2.dk, g1.dk), 1e-13);
  EXPECT_LE(rel_l2(g2.dv, g1.dv), 1e-13);
}

TEST(ReferenceBackward, EverythingAtOnce) {
  // Causal, blocked with H not divisible by r, r not dividing w, last segment shorter, overlap, batch 2.
  check_fd(make_config({{9, 1}, {20, 3}, {13, 5}}, 3, 3, true, HeadOffsets::blocked), 2, 27, fresh_seed());
}

TEST(ReferenceBackward, ExplicitScale) {
  Config c = make_config({{8, 1}, {24, 3}}, 2, 4);
  c.scale = 0.37;
  check_fd(c, 1, 24, fresh_seed());
}

TEST(ReferenceBackward, DenseIsPlainAttention) {
  check_fd(make_config({{20, 1}}, 2, 4, true), 1, 20, fresh_seed());
}

// Logits of magnitude 1e4: no NaN or Inf, and unselected tokens still zero.
TEST(ReferenceBackward, LargeLogitsStayFinite) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  const Config c = make_config({{16, 1}, {32, 4}, {64, 8}}, 2, 16, true);
  const Problem p = make_problem(c, 1, 64, seed, 100.0);
  const Grads r = backward(p);
  for (const std::vector<double>* x : {&r.dq, &r.dk, &r.dv})
    for (double e : *x) ASSERT_TRUE(std::isfinite(e));
}

TEST(ReferenceBackward, RowRangeMatchesFullSequence) {
  const Config c = make_config({{16, 1}, {32, 4}}, 3, 8, true);
  const int64_t B = 2, N = 64, t0 = 20, t1 = 45, H = c.heads, D = c.head_dim;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  const Problem p = make_problem(c, B, N, seed);
  const Grads all = backward(p);
  const size_t n = size_t(B * (t1 - t0) * H * D);
  std::vector<double> dq(n, 1.0), dk(n, 1.0), dv(n, 1.0);
  kern::reference_backward(ref_problem(c), B, N, p.q.data(), p.k.data(), p.v.data(), all.o.data(), all.lse.data(),
                           p.g.data(), t0, t1, dq.data(), dk.data(), dv.data());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t e = 0; e < H * D; ++e) {
        const size_t i = size_t((b * (t1 - t0) + t - t0) * H * D + e), g = size_t((b * N + t) * H * D + e);
        EXPECT_EQ(dq[i], all.dq[g]);
        EXPECT_EQ(dk[i], all.dk[g]);
        EXPECT_EQ(dv[i], all.dv[g]);
      }
}

TEST(ReferenceBackward, ThreadCountDoesNotChangeABit) {
  const Config c = make_config({{24, 1}, {40, 3}, {64, 8}}, 5, 16, true, HeadOffsets::blocked);
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  const Problem p = make_problem(c, 2, 150, seed);
  kern::RefOptions one;
  const Grads g1 = backward(p, one);
  kern::RefOptions four;
  four.threads = 4;
  std::vector<double> seen;
  four.progress = [&](double f) { seen.push_back(f); };
  four.progress_interval_s = 0;
  const Grads g4 = backward(p, four);
  EXPECT_EQ(std::memcmp(g1.dq.data(), g4.dq.data(), g1.dq.size() * sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(g1.dk.data(), g4.dk.data(), g1.dk.size() * sizeof(double)), 0);
  EXPECT_EQ(std::memcmp(g1.dv.data(), g4.dv.data(), g1.dv.size() * sizeof(double)), 0);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back(), 1.0);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GE(seen[i], seen[i - 1]);
}

}  // namespace
}  // namespace ringattn::test

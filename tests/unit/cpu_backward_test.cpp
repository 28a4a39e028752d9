// The float32 CPU backward (kern::cpu_backward_pass over the planner's
// tiles, partial dK/dV of received blocks scattered back to their owners)
// against the float64 reference backward, at simulated world sizes 1..4
// (tests/common/cpu_bwd_sim.hpp), for every SPEC case of the forward's CPU
// path test. Fresh random inputs every run; the seed is printed on failure.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <iomanip>
#include <iostream>
#include <random>

#include "common/cpu_bwd_sim.hpp"
#include "common/spec_cases.hpp"
#include "common/test_util.hpp"
#include "kernels/cpu/reference.hpp"

namespace ringattn::test {
namespace {

struct Inputs {
  std::vector<double> q, k, v, dout;  // float32-representable values
};

// q, k uniform in [-amp, amp) (whole numbers with `integer`: then with
// |q|, |k| <= 100, D <= 16 and a power-of-two scale every logit is exact in
// float32); v and dout in [-1, 1).
Inputs make_inputs(uint64_t seed, size_t n, double amp, bool integer = false) {
  std::mt19937_64 g(seed);
  Inputs in;
  in.q = random_tensor(g, n, amp);
  in.k = random_tensor(g, n, amp);
  in.v = random_tensor(g, n);
  in.dout = random_tensor(g, n);
  if (integer) {
    for (double& x : in.q) x = std::round(x);
    for (double& x : in.k) x = std::round(x);
  }
  return in;
}

struct Reference {
  std::vector<double> o, lse, dq, dk, dv;
};

Reference reference(const Config& c, int64_t B, int64_t N, const Inputs& in) {
  const size_t n = in.q.size();
  Reference r;
  r.o.resize(n);
  r.lse.resize(size_t(B * N * c.heads));
  r.dq.resize(n);
  r.dk.resize(n);
  r.dv.resize(n);
  kern::RefOptions opt;
  opt.threads = 2;
  kern::reference_forward(ref_problem(c), B, N, in.q.data(), in.k.data(), in.v.data(), 0, N, r.o.data(), r.lse.data(),
                          opt);
  kern::reference_backward(ref_problem(c), B, N, in.q.data(), in.k.data(), in.v.data(), r.o.data(), r.lse.data(),
                           in.dout.data(), r.dq.data(), r.dk.data(), r.dv.data(), opt);
  return r;
}

struct GradErrors {
  double dq = 0, dk = 0, dv = 0;  // relative L2 over the tensor
  // RMS absolute error of dQ (dK) over the natural size of a gradient row,
  // scale * |K| * |dO| * |V| (scale * |Q| * |dO| * |V|), row norms as RMS.
  double dq_nat = 0, dk_nat = 0;
  int64_t nonfinite = 0;           // NaN or Inf in dQ, dK, dV
  int64_t unselected = 0;          // (token, head) pairs no branch selects
  int64_t unselected_nonzero = 0;  // ... whose dQ, dK or dV is not exactly 0
  std::string str() const {
    std::ostringstream os;
    os << std::setprecision(3) << "dQ " << dq << "  dK " << dk << "  dV " << dv << "  (natural: dQ " << dq_nat
       << "  dK " << dk_nat << ")";
    return os.str();
  }
};

// RMS over (token, head) rows of the norm of a row of D values.
double rms_row_norm(const std::vector<double>& x, int64_t D) {
  double s = 0;
  for (double e : x) s += e * e;
  return std::sqrt(s / double(x.size()) * double(D));
}

GradErrors errors_of(const Gradients& g, const Reference& r, const Inputs& in, double scale, int64_t D) {
  GradErrors e;
  kern::ErrorAccumulator aq, ak, av;
  for (size_t i = 0; i < r.dq.size(); ++i) {
    aq.add(g.dq[i], r.dq[i]);
    ak.add(g.dk[i], r.dk[i]);
    av.add(g.dv[i], r.dv[i]);
    e.nonfinite += !std::isfinite(g.dq[i]) + !std::isfinite(g.dk[i]) + !std::isfinite(g.dv[i]);
  }
  e.dq = aq.rel_l2();
  e.dk = ak.rel_l2();
  e.dv = av.rel_l2();
  const double rows = double(r.dq.size()) / double(D);
  const double go = rms_row_norm(in.dout, D) * rms_row_norm(in.v, D) * scale;
  e.dq_nat = std::sqrt(aq.diff2 / rows) / (go * rms_row_norm(in.k, D));
  e.dk_nat = std::sqrt(ak.diff2 / rows) / (go * rms_row_norm(in.q, D));
  for (size_t i = 0; i < r.lse.size(); ++i) {
    if (r.lse[i] != -INFINITY) continue;
    e.unselected++;
    bool zero = true;
    for (int64_t d = 0; d < D; ++d) {
      const size_t x = i * size_t(D) + size_t(d);
      zero = zero && g.dq[x] == 0.f && g.dk[x] == 0.f && g.dv[x] == 0.f;
    }
    e.unselected_nonzero += !zero;
  }
  return e;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

struct Bounds {
  double dq, dk, dv;               // relative L2
  double natural = INFINITY;       // dq_nat, dk_nat
};

// Runs the backward at P = 1..4 (those dividing N) on the same inputs and
// prints the errors; returns them by P (index P - 1; -1 where P does not divide N).
std::vector<GradErrors> check_backward(const Config& c, int64_t B, int64_t N, const Inputs& in, uint64_t seed,
                                       const Bounds& bound, const char* name) {
  SCOPED_TRACE(describe(c, N, B) + " seed=" + std::to_string(seed));
  const Reference ref = reference(c, B, N, in);
  const std::vector<float> q = to_f32(in.q), k = to_f32(in.k), v = to_f32(in.v), dout = to_f32(in.dout);
  const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(c.head_dim));
  Shape s;
  s.batch = B;
  s.seq = N;
  std::vector<GradErrors> by_p(4, GradErrors{-1, -1, -1, -1, -1, 0, 0, 0});
  for (int P = 1; P <= 4; ++P) {
    if (N % P) continue;
    SCOPED_TRACE("P=" + std::to_string(P));
    const Gradients g = simulate_backward(c, s, P, q, k, v, dout);
    const GradErrors e = errors_of(g, ref, in, scale, c.head_dim);
    by_p[size_t(P - 1)] = e;
    std::cout << "  " << std::left << std::setw(30) << name << " P=" << P << "  " << e.str() << "  blocks: " << g.packed_blocks
              << " packed, " << g.whole_blocks << " whole\n";
    EXPECT_LE(e.dq, bound.dq) << e.str();
    EXPECT_LE(e.dk, bound.dk) << e.str();
    EXPECT_LE(e.dv, bound.dv) << e.str();
    EXPECT_LE(std::max(e.dq_nat, e.dk_nat), bound.natural) << e.str();
    EXPECT_EQ(e.nonfinite, 0) << "NaN or Inf in the gradients";
    EXPECT_EQ(e.unselected_nonzero, 0) << "tokens no branch selects must get exactly zero gradients";
    if (P > 1) {
      // Index-list tiles address the same rows as affine ones: the same bits.
      const Gradients gl = simulate_backward(c, s, P, q, k, v, dout, /*index_lists=*/true);
      EXPECT_TRUE(same_bits(g.dq, gl.dq) && same_bits(g.dk, gl.dk) && same_bits(g.dv, gl.dv))
          << "index-list tiles changed the gradients";
    }
  }
  return by_p;
}

class CpuBackward : public ::testing::TestWithParam<SpecCase> {};

TEST_P(CpuBackward, SimulatedRanksMatchReference) {
  const SpecCase& p = GetParam();
  const Config c = make_config(p.branches, p.H, p.D, p.causal, p.offsets);
  const uint64_t seed = fresh_seed();
  const double tol = 2 * tolerance_of(DType::f32).o;  // SPEC: gradients, twice the O bound
  const Inputs in = make_inputs(seed, size_t(p.B * p.N * p.H * p.D), 1.0);
  const std::vector<GradErrors> e = check_backward(c, p.B, p.N, in, seed, {tol, tol, tol}, p.name);
  if (std::string(p.name) == "no_branch_selects") {
    EXPECT_GT(e[0].unselected, 0) << "the case was meant to leave some tokens unselected";
  }
  // The error must not grow with the ring: partials stay float32 and are
  // added in a fixed order. Measured over 100 runs of every case (2700
  // (case, P >= 2, tensor) triples): error at P / error at P = 1 is at most
  // 1.043 (dense: ~0.6, shorter sums per tile); the worst error was 8.0e-7.
  for (int P = 2; P <= 4; ++P) {
    const GradErrors& x = e[size_t(P - 1)];
    if (x.dq < 0) continue;
    EXPECT_LE(x.dq, 1.1 * e[0].dq) << "dQ error grows with P = " << P << ": " << x.str() << " vs " << e[0].str();
    EXPECT_LE(x.dk, 1.1 * e[0].dk) << "dK error grows with P = " << P << ": " << x.str() << " vs " << e[0].str();
    EXPECT_LE(x.dv, 1.1 * e[0].dv) << "dV error grows with P = " << P << ": " << x.str() << " vs " << e[0].str();
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, CpuBackward, ::testing::ValuesIn(spec_cases()),
                         [](const ::testing::TestParamInfo<SpecCase>& i) { return std::string(i.param.name); });

// Short segments packed into one tile (PlanOptions::pack_segments, the
// default) against the same plan unpacked: every key of a packed tile gets
// the contributions of its own segment's queries in the same order as in the
// unpacked tile, every query those of its own segment's keys, so dQ, dK and
// dV must be the same bits at every simulated world size; the packed
// gradients match the float64 reference (which does not read the plan).
TEST(CpuBackwardPacked, SameBitsAsUnpackedAndMatchesReference) {
  const double tol = 2 * tolerance_of(DType::f32).o;  // SPEC: gradients, twice the O bound
  for (const SpecCase& pc : packed_segment_cases()) {
    const Config c = make_config(pc.branches, pc.H, pc.D, pc.causal, pc.offsets);
    const uint64_t seed = fresh_seed();
    SCOPED_TRACE(std::string(pc.name) + ": " + describe(c, pc.N, pc.B) + " seed=" + std::to_string(seed));
    const Inputs in = make_inputs(seed, size_t(pc.B * pc.N * pc.H * pc.D), 1.0);
    const std::vector<float> q = to_f32(in.q), k = to_f32(in.k), v = to_f32(in.v), dout = to_f32(in.dout);
    Shape s;
    s.batch = pc.B;
    s.seq = pc.N;
    int64_t packed = 0;
    for (int P = 1; P <= 4; ++P) {
      if (pc.N % P) continue;
      SCOPED_TRACE("P=" + std::to_string(P));
      for (int rank = 0; rank < P; ++rank)
        for (const kern::Tile& t : build_plan(c, s, P, rank).tiles) packed += t.seg_len > 0;
      const Gradients on = simulate_backward(c, s, P, q, k, v, dout, false, PlanOptions{true});
      const Gradients off = simulate_backward(c, s, P, q, k, v, dout, false, PlanOptions{false});
      EXPECT_TRUE(same_bits(on.o, off.o) && same_bits(on.lse, off.lse)) << "the forward differs";
      EXPECT_TRUE(same_bits(on.dq, off.dq)) << "dQ differs";
      EXPECT_TRUE(same_bits(on.dk, off.dk)) << "dK differs";
      EXPECT_TRUE(same_bits(on.dv, off.dv)) << "dV differs";
    }
    EXPECT_GT(packed, 0) << "the case packs nothing: it tests nothing";
    check_backward(c, pc.B, pc.N, in, seed, {tol, tol, tol}, pc.name);
  }
}

// Logits of magnitude 1e4 (q, k scaled by 100): no NaN or Inf, unselected
// tokens exactly zero, and errors at the floors float32 sets:
// - P = exp(x - LSE) takes LSE as the forward stored it, in float32: near
//   |LSE| = 1e4 that is off by up to half an ulp, 4.9e-4, and so is every P of
//   the row, relative. dV = sum P dO inherits it: bound 5e-4 (measured max
//   9.2e-5 over 300 runs of each test).
// - Most rows' softmax is then one-hot to float32 precision, so their true
//   dQ, dK are exponentially small while dS = P (dP - Delta) cancels down to
//   the rounding of Delta (from the float32 O): relative L2 over dQ, dK
//   measures that cancellation alone (measured up to 2e-2 with exact logits,
//   0.2 with general ones, 300 runs) and is not bounded here. The absolute
//   error is, against the natural size of a gradient row,
//   scale * |K| * |dO| * |V| (with |Q| for dK): bound 2e-5, measured max 4.3e-6
//   (at amplitude 1 the same measure is ~5e-9).
const Bounds kLargeLogits{INFINITY, INFINITY, 5e-4, 2e-5};

TEST(CpuBackwardLargeLogits, ExactLogitsScaledBy100) {
  // Whole-number q, k: every logit is exact in float32 (cpu_path_test.cpp).
  const uint64_t seed = fresh_seed();
  Config c = make_config({{64, 1}, {128, 2}, {256, 4}}, 2, 16);
  const Inputs in = make_inputs(seed, size_t(512 * 2 * 16), 100.0, /*integer=*/true);
  check_backward(c, 1, 512, in, seed, kLargeLogits, "exact_x100");
  c.causal = true;
  check_backward(c, 1, 512, in, seed, kLargeLogits, "exact_x100_causal");
}

TEST(CpuBackwardLargeLogits, GeneralLogitsScaledBy100) {
  const uint64_t seed = fresh_seed();
  const Config c = make_config({{64, 1}, {128, 2}, {256, 4}}, 2, 16, true);
  const Inputs in = make_inputs(seed, size_t(512 * 2 * 16), 100.0);
  check_backward(c, 1, 512, in, seed, kLargeLogits, "general_x100_causal");
}

// Delta = rowsum(dO * O) of a strided view (rows padded to 3 heads' room,
// batches padded by a row): exact to float32 rounding of a double sum, and
// nothing outside the view's Delta entries is written.
TEST(CpuBackwardDelta, RowDotOfAStridedView) {
  std::mt19937_64 g(fresh_seed());
  const int64_t B = 2, L = 5, H = 2, D = 7, row = 3 * D, batch = (L + 1) * row, drow = 4, dbatch = L * drow + 3;
  const std::vector<double> o = random_tensor(g, size_t(B * batch)), go = random_tensor(g, size_t(B * batch));
  const std::vector<float> of = to_f32(o), gf = to_f32(go);
  std::vector<float> delta(size_t(B * dbatch), -7.f);
  kern::cpu_backward_delta(of.data(), gf.data(), B, L, H, D, batch, row, delta.data(), dbatch, drow);
  std::vector<bool> written(delta.size(), false);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < L; ++t)
      for (int64_t h = 0; h < H; ++h) {
        double s = 0;
        for (int64_t d = 0; d < D; ++d) s += o[size_t(b * batch + t * row + h * D + d)] * go[size_t(b * batch + t * row + h * D + d)];
        const size_t i = size_t(b * dbatch + t * drow + h);
        EXPECT_EQ(delta[i], float(s));
        written[i] = true;
      }
  for (size_t i = 0; i < delta.size(); ++i) {
    if (!written[i]) {
      EXPECT_EQ(delta[i], -7.f) << "at " << i;
    }
  }
}

// The accumulators are added to, never overwritten: starting from 0.5 gives
// 0.5 + the gradient (to rounding), and rows no tile reaches stay 0.5.
TEST(CpuBackwardPass, AddsToItsAccumulators) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  const Config c = make_config({{16, 2}, {24, 4}}, 2, 8, true);
  const int64_t B = 1, N = 48, H = c.heads, D = c.head_dim;
  const Inputs in = make_inputs(seed, size_t(B * N * H * D), 1.0);
  const std::vector<float> q = to_f32(in.q), k = to_f32(in.k), v = to_f32(in.v), dout = to_f32(in.dout);
  Shape s;
  s.batch = B;
  s.seq = N;
  Plan plan;
  std::vector<float> o, lse;
  simulate_rank(c, s, 1, 0, q, k, v, &o, &lse, &plan);
  std::vector<float> delta(size_t(B * N * H));
  kern::cpu_backward_delta(o.data(), dout.data(), B, N, H, D, N * H * D, H * D, delta.data(), N * H, H);
  auto run = [&](float init, std::vector<float>* dq, std::vector<float>* dk, std::vector<float>* dv) {
    dq->assign(q.size(), init);
    dk->assign(q.size(), init);
    dv->assign(q.size(), init);
    kern::CpuBwdParams bp;
    bp.q = q.data();
    bp.dout = dout.data();
    bp.q_batch_stride = N * H * D;
    bp.q_row_stride = H * D;
    bp.lse = lse.data();
    bp.delta = delta.data();
    bp.lse_batch_stride = N * H;
    bp.lse_row_stride = H;
    bp.src = kern::KeySource{k.data(), v.data(), N * H * D, H * D, D, nullptr};
    bp.tiles = plan.tiles.data();
    bp.num_tiles = int64_t(plan.tiles.size());
    bp.batch = B;
    bp.heads = H;
    bp.head_dim = D;
    bp.scale = float(1.0 / std::sqrt(double(D)));
    bp.causal = c.causal;
    bp.dq_acc = dq->data();
    bp.dk_acc = dk->data();
    bp.dv_acc = dv->data();
    kern::cpu_backward_pass(bp);
  };
  std::vector<float> q0, k0, v0, q1, k1, v1;
  run(0.f, &q0, &k0, &v0);
  run(0.5f, &q1, &k1, &v1);
  int64_t untouched = 0;
  for (size_t i = 0; i < q0.size(); ++i) {
    EXPECT_NEAR(q1[i], 0.5f + q0[i], 1e-6) << "at " << i;
    EXPECT_NEAR(k1[i], 0.5f + k0[i], 1e-6) << "at " << i;
    EXPECT_NEAR(v1[i], 0.5f + v0[i], 1e-6) << "at " << i;
    if (q0[i] == 0.f && k0[i] == 0.f && v0[i] == 0.f) {
      untouched++;
      EXPECT_EQ(q1[i], 0.5f);
      EXPECT_EQ(k1[i], 0.5f);
      EXPECT_EQ(v1[i], 0.5f);
    }
  }
  EXPECT_GT(untouched, 0) << "r = 2 and 4 leave every other token of each head unselected";
}

}  // namespace
}  // namespace ringattn::test

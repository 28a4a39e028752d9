// Distributed forward on the cpu backend (nccl-tests habit: every input is a
// pure function of (seed, tensor, global index), so each rank makes the whole
// sequence itself and checks its own shard without gathering anything):
//   (a) against the float64 reference of its rows, computed on the
//       dtype-rounded inputs, within the SPEC tolerance of the dtype;
//   (b) against a Context on MPI_COMM_SELF running the whole sequence
//       (world size 1), within the same tolerance;
//   and its bytes sent equal the ideal (rows its peers actually need).
// Outputs are poisoned with NaN before every run; the seed is fresh every run
// (drawn on rank 0, broadcast) and printed on failure.
#include <gtest/gtest.h>

#include <cmath>
#include <memory>

#include "common/mpi_util.hpp"
#include "common/spec_brute.hpp"
#include "common/test_util.hpp"
#include "kernels/cpu/reference.hpp"
#include "kernels/cpu/synth.hpp"
#include "ringattn/ringattn.hpp"

namespace ringattn::test {
namespace {

struct FwdCase {
  const char* name;
  std::vector<Branch> branches;
  int64_t N, B, H, D;
  bool causal;
  HeadOffsets offsets;
  DType dtype;
  bool check_bytes_brute;  // also compare bytes with a brute-force need count
};
std::ostream& operator<<(std::ostream& os, const FwdCase& c) { return os << c.name; }

const std::vector<Branch> kLongnet4Scaled = {{256, 1}, {512, 2}, {1024, 4}, {2048, 8}};  // longnet4 / 8

// Every N is a multiple of 12, so np = 1, 2, 3, 4 all divide it.
const FwdCase kCases[] = {
    // N = 6144: with np = 4 each shard is 1536 tokens, no multiple of w = 1024 or
    // 2048: segments straddle shard edges.
    {"longnet4_scaled", kLongnet4Scaled, 6144, 1, 4, 32, false, HeadOffsets::interleaved, DType::f32, false},
    {"longnet4_scaled_f16_batch2", kLongnet4Scaled, 3072, 2, 2, 16, false, HeadOffsets::interleaved, DType::f16, false},
    {"longnet4_scaled_bf16", kLongnet4Scaled, 3072, 1, 4, 16, false, HeadOffsets::interleaved, DType::bf16, false},
    // Segments span ranks (w up to 4096 > every shard).
    {"geometric_scaled", geometric_scaled(256, 6144), 6144, 1, 4, 16, false, HeadOffsets::interleaved, DType::f32, true},
    {"geometric_named", {{2048, 1}, {4096, 2}}, 6144, 1, 2, 16, false, HeadOffsets::interleaved, DType::f32, true},
    {"geometric_scaled_causal_bf16", geometric_scaled(256, 6144), 6144, 1, 2, 16, true, HeadOffsets::interleaved, DType::bf16, true},
    // Plain ring attention.
    {"dense", {{3072, 1}}, 3072, 1, 2, 16, false, HeadOffsets::interleaved, DType::f32, false},
    {"dense_causal", {{2400, 1}}, 2400, 1, 2, 16, true, HeadOffsets::interleaved, DType::f32, false},
    {"longnet4_scaled_causal", kLongnet4Scaled, 6144, 1, 4, 16, true, HeadOffsets::interleaved, DType::f32, false},
    {"longnet4_scaled_causal_f16", kLongnet4Scaled, 3072, 1, 2, 32, true, HeadOffsets::interleaved, DType::f16, false},
    // Blocked offsets with H not divisible by r (3 heads, r = 2, 4, 8; 5 heads, r = 3, 7).
    {"blocked_h3", kLongnet4Scaled, 6144, 1, 3, 16, false, HeadOffsets::blocked, DType::f32, false},
    {"blocked_h5_causal_bf16", {{300, 1}, {600, 3}, {1400, 7}}, 4200, 1, 5, 16, true, HeadOffsets::blocked, DType::bf16, false},
    // N = 6000 is no multiple of 256, 1024 or 2048: the last segments are shorter.
    {"last_segment_short", {{256, 1}, {1024, 4}, {2048, 8}}, 6000, 1, 2, 32, false, HeadOffsets::interleaved, DType::f32, true},
    // r does not divide w (and 4200 is no multiple of 700 or 1000).
    {"r_not_dividing_w", {{300, 3}, {700, 7}, {1000, 6}}, 4200, 1, 4, 16, false, HeadOffsets::interleaved, DType::f32, true},
    // Tokens no branch selects (O = 0, LSE = -inf), which poisoned outputs must show.
    {"no_branch_selects", {{512, 4}, {1024, 8}}, 3072, 1, 2, 16, false, HeadOffsets::interleaved, DType::f32, true},
};

class DistributedForward : public MpiTestWithParam<FwdCase> {};

struct Outputs {
  std::vector<uint8_t> o;
  std::vector<float> lse;
};

TEST_P(DistributedForward, MatchesReferenceAndSingleRank) {
  const FwdCase& fc = GetParam();
  const int P = mpi_size(), p = mpi_rank();
  ASSERT_EQ(fc.N % P, 0) << "test config error";
  const uint64_t seed = shared_seed();
  const Config c = make_config(fc.branches, fc.H, fc.D, fc.causal, fc.offsets, fc.dtype);
  SCOPED_TRACE(describe(c, fc.N, fc.B) + " P=" + std::to_string(P) + " rank=" + std::to_string(p) +
               " seed=" + std::to_string(seed));
  const int64_t B = fc.B, N = fc.N, H = fc.H, D = fc.D, L = N / P;
  const DType dt = fc.dtype;
  const size_t es = dtype_size(dt);

  // The whole sequence, rounded to the dtype (what the runtime sees).
  const size_t n_all = size_t(B * N * H * D);
  std::vector<float> qf(n_all), kf(n_all), vf(n_all);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < N; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) {
          const uint64_t gi = kern::bnhd_index(b, t, h, d, N, H, D);
          qf[gi] = round_to(dt, float(kern::synth_value(seed, kern::SynthTensor::q, gi)));
          kf[gi] = round_to(dt, float(kern::synth_value(seed, kern::SynthTensor::k, gi)));
          vf[gi] = round_to(dt, float(kern::synth_value(seed, kern::SynthTensor::v, gi)));
        }

  // (a) the float64 reference of my rows.
  std::vector<double> ref_o(size_t(B * L * H * D)), ref_lse(size_t(B * L * H));
  {
    std::vector<double> qd(qf.begin(), qf.end()), kd(kf.begin(), kf.end()), vd(vf.begin(), vf.end());
    kern::reference_forward(ref_problem(c), B, N, qd.data(), kd.data(), vd.data(), int64_t(p) * L, int64_t(p + 1) * L,
                            ref_o.data(), ref_lse.data());
  }

  // My shard, encoded in the dtype.
  auto shard = [&](const std::vector<float>& x) {
    std::vector<float> y(size_t(B * L * H * D));
    for (int64_t b = 0; b < B; ++b)
      std::copy(x.begin() + (b * N + int64_t(p) * L) * H * D, x.begin() + (b * N + int64_t(p + 1) * L) * H * D,
                y.begin() + b * L * H * D);
    return encode(dt, y.data(), y.size());
  };
  const std::vector<uint8_t> qs = shard(qf), ks = shard(kf), vs = shard(vf);

  Shape shape;
  shape.batch = B;
  shape.seq = N;

  // Distributed run over MPI_COMM_WORLD.
  Outputs dist;
  dist.o.resize(size_t(B * L * H * D) * es);
  dist.lse.resize(size_t(B * L * H));
  poison(dt, &dist.o);
  poison(&dist.lse);
  std::unique_ptr<Context> ctx;
  Status st = Context::create(c, MPI_COMM_WORLD, &ctx);
  ASSERT_TRUE(st.ok()) << st.to_string();
  ASSERT_EQ(ctx->world_size(), P);
  ASSERT_EQ(ctx->rank(), p);
  st = ctx->forward(shape, qs.data(), ks.data(), vs.data(), dist.o.data(), dist.lse.data());
  ASSERT_TRUE(st.ok()) << st.to_string();
  const Stats stats = ctx->stats();

  const kern::Tolerance tol = tolerance_of(dt);
  auto check = [&](const Outputs& out, auto oref, auto lref, const char* what) {
    Errors e = compare(
        size_t(B * L * H * D), size_t(B * L * H), [&](size_t i) { return double(decode_one(dt, out.o.data(), i)); },
        [&](size_t i) { return double(out.lse[i]); }, oref, lref);
    EXPECT_EQ(e.nonfinite_o, 0) << what << ": " << e.str();
    EXPECT_EQ(e.lse_inf_mismatch, 0) << what << ": " << e.str();
    EXPECT_LE(e.o_rel, tol.o) << what << ": " << e.str();
    EXPECT_LE(e.lse_abs, tol.lse) << what << ": " << e.str();
  };
  check(dist, [&](size_t i) { return ref_o[i]; }, [&](size_t i) { return ref_lse[i]; }, "distributed vs float64 reference");

  // (b) the whole sequence on this rank alone (world size 1).
  {
    Outputs solo;
    solo.o.resize(n_all * es);
    solo.lse.resize(size_t(B * N * H));
    poison(dt, &solo.o);
    poison(&solo.lse);
    std::unique_ptr<Context> one;
    st = Context::create(c, MPI_COMM_SELF, &one);
    ASSERT_TRUE(st.ok()) << st.to_string();
    ASSERT_EQ(one->world_size(), 1);
    const std::vector<uint8_t> qa = encode(dt, qf.data(), n_all), ka = encode(dt, kf.data(), n_all),
                               va = encode(dt, vf.data(), n_all);
    st = one->forward(shape, qa.data(), ka.data(), va.data(), solo.o.data(), solo.lse.data());
    ASSERT_TRUE(st.ok()) << st.to_string();
    EXPECT_EQ(one->stats().last_bytes_sent, 0);
    // My rows of the single-rank result.
    auto gi = [&](size_t i, int64_t per_row) {
      const int64_t row = int64_t(i) / per_row, e = int64_t(i) % per_row;
      return size_t((row / L * N + int64_t(p) * L + row % L) * per_row + e);
    };
    check(dist, [&](size_t i) { return double(decode_one(dt, solo.o.data(), gi(i, H * D))); },
          [&](size_t i) { return double(solo.lse[gi(i, H)]); }, "distributed vs world size 1");
    // And the single-rank run itself against the reference on my rows.
    Outputs mine;
    mine.o.resize(size_t(B * L * H * D) * es);
    mine.lse.resize(size_t(B * L * H));
    for (size_t i = 0; i < mine.lse.size(); ++i) mine.lse[i] = solo.lse[gi(i, H)];
    for (size_t i = 0; i < size_t(B * L * H * D); ++i)
      std::copy(solo.o.begin() + gi(i, H * D) * es, solo.o.begin() + (gi(i, H * D) + 1) * es, mine.o.begin() + i * es);
    check(mine, [&](size_t i) { return ref_o[i]; }, [&](size_t i) { return ref_lse[i]; }, "world size 1 vs float64 reference");
  }

  // Bytes: what was sent equals what the peers need.
  EXPECT_EQ(stats.last_bytes_sent, stats.last_bytes_ideal);
  int64_t timeline_sent = 0;
  for (const StepTiming& s : stats.timeline) timeline_sent += s.bytes_sent;
  EXPECT_EQ(timeline_sent, stats.last_bytes_sent);
  if (P == 1) {
    EXPECT_EQ(stats.last_bytes_sent, 0);
    EXPECT_EQ(stats.last_bytes_received, 0);
  }
  if (fc.check_bytes_brute && P > 1) {
    const auto need = spec_brute_need(c, N, P);
    const int64_t row_bytes = 2 * B * D * int64_t(es);
    int64_t recv_rows = 0;
    for (int src = 0; src < P; ++src)
      if (src != p) recv_rows += spec_need_count(need[size_t(p)], N, H, L, src);
    EXPECT_EQ(stats.last_bytes_sent, spec_rows_sent(need, N, H, P, p) * row_bytes);
    EXPECT_EQ(stats.last_bytes_received, recv_rows * row_bytes);
    if (!fc.causal && fc.branches.size() > 1) {
      // Dilation pays: fewer bytes than moving every K/V row of the shard to every peer.
      EXPECT_LT(stats.last_bytes_sent, int64_t(P - 1) * L * H * row_bytes);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, DistributedForward, ::testing::ValuesIn(kCases),
                         [](const ::testing::TestParamInfo<FwdCase>& i) { return std::string(i.param.name); });

// A second forward on the same context (cached plan) with fresh inputs gives
// the right answer too, and a different N on the same context works.
class RepeatedForward : public MpiTest {};

TEST_F(RepeatedForward, CachedPlanAndNewShape) {
  const int P = mpi_size(), p = mpi_rank();
  const Config c = make_config({{256, 1}, {768, 3}}, 2, 16, true);
  std::unique_ptr<Context> ctx;
  Status st = Context::create(c, MPI_COMM_WORLD, &ctx);
  ASSERT_TRUE(st.ok()) << st.to_string();
  for (int64_t N : {1536, 1536, 2400}) {
    const uint64_t seed = shared_seed();
    SCOPED_TRACE(describe(c, N) + " P=" + std::to_string(P) + " rank=" + std::to_string(p) + " seed=" + std::to_string(seed));
    const int64_t H = c.heads, D = c.head_dim, L = N / P;
    std::vector<double> q(size_t(N * H * D)), k(q.size()), v(q.size());
    for (size_t i = 0; i < q.size(); ++i) {
      q[i] = double(float(kern::synth_value(seed, kern::SynthTensor::q, i)));
      k[i] = double(float(kern::synth_value(seed, kern::SynthTensor::k, i)));
      v[i] = double(float(kern::synth_value(seed, kern::SynthTensor::v, i)));
    }
    std::vector<double> ro(size_t(L * H * D)), rl(size_t(L * H));
    kern::reference_forward(ref_problem(c), 1, N, q.data(), k.data(), v.data(), int64_t(p) * L, int64_t(p + 1) * L, ro.data(), rl.data());
    auto sh = [&](const std::vector<double>& x) {
      return std::vector<float>(x.begin() + int64_t(p) * L * H * D, x.begin() + int64_t(p + 1) * L * H * D);
    };
    const std::vector<float> qs = sh(q), ks = sh(k), vs = sh(v);
    std::vector<float> o(size_t(L * H * D)), lse(size_t(L * H));
    poison(&o);
    poison(&lse);
    Shape s;
    s.seq = N;
    st = ctx->forward(s, qs.data(), ks.data(), vs.data(), o.data(), lse.data());
    ASSERT_TRUE(st.ok()) << st.to_string();
    Errors e = compare(
        o.size(), lse.size(), [&](size_t i) { return double(o[i]); }, [&](size_t i) { return double(lse[i]); },
        [&](size_t i) { return ro[i]; }, [&](size_t i) { return rl[i]; });
    const kern::Tolerance tol = tolerance_of(DType::f32);
    EXPECT_EQ(e.nonfinite_o, 0) << e.str();
    EXPECT_LE(e.o_rel, tol.o) << e.str();
    EXPECT_LE(e.lse_abs, tol.lse) << e.str();
    EXPECT_EQ(ctx->stats().last_bytes_sent, ctx->stats().last_bytes_ideal);
  }
  EXPECT_EQ(ctx->stats().forwards, 3);
}

}  // namespace
}  // namespace ringattn::test

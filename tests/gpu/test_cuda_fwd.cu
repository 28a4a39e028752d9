// GPU tests of the fused dilated flash-attention forward (label `gpu`):
// every SPEC case against the float64 reference, fresh random inputs, NaN-
// poisoned outputs, 1e4-magnitude logits, unselected tokens, index-list keys,
// multi-pass merging, bit-identical reruns; both matrix paths.
// Skips cleanly where no CUDA device is present.
#include <chrono>
#include <gtest/gtest.h>
#include "kernels/cuda/standalone/fwd_runner.hpp"

using namespace ringattn::kern::cuda;
using namespace ringattn::kern::cuda::harness;

namespace {

bool have_device() {
  int n = 0;
  return cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
}

struct Param {
  int index;
  FwdVariant variant;
};

class CudaFwd : public ::testing::TestWithParam<Param> {};

TEST_P(CudaFwd, MatchesFloat64Reference) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  const auto cases = test_cases();
  const Case& c = cases[size_t(GetParam().index)];
  const uint64_t seed =
      uint64_t(std::chrono::steady_clock::now().time_since_epoch().count()) + GetParam().index;
  const CaseResult r = run_case_any(c, GetParam().variant, seed);
  SCOPED_TRACE(c.name + " seed " + std::to_string(seed));
  EXPECT_EQ(r.err.nonfinite, 0);
  EXPECT_EQ(r.err.empty_wrong, 0);
  EXPECT_LE(r.err.o_rel_l2, r.o_tol);
  EXPECT_LE(r.err.lse_max_abs, r.lse_tol);
  EXPECT_TRUE(r.identical) << "two runs differ";
}

std::vector<Param> all_params() {
  std::vector<Param> ps;
  const int n = int(test_cases().size());
  for (FwdVariant v : {FwdVariant::mma_sync, FwdVariant::wgmma, FwdVariant::wgmma_pipelined})
    for (int i = 0; i < n; ++i) ps.push_back({i, v});
  return ps;
}

INSTANTIATE_TEST_SUITE_P(AllCases, CudaFwd, ::testing::ValuesIn(all_params()),
                         [](const ::testing::TestParamInfo<Param>& info) {
                           const FwdVariant v = info.param.variant;
                           return std::string(v == FwdVariant::wgmma ? "wgmma"
                                              : v == FwdVariant::mma_sync ? "mma" : "pipe") +
                                  "_" + std::to_string(info.param.index);
                         });

TEST(CudaFwdApi, RejectsUnsupportedHeadDim) {
  FwdParams p;
  p.head_dim = 96;
  EXPECT_EQ(fwd_launch(p, nullptr), cudaErrorInvalidValue);  // checked before any device call
}

}  // namespace

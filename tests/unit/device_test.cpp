// ringattn::dev on the cpu backend: the deterministic inputs front ends make
// (fill_synthetic) are the synth function rounded to the dtype, and a call
// outside the tensor is refused before anything is written.
#include <gtest/gtest.h>

#include <cstring>
#include <vector>

#include "common/test_util.hpp"
#include "kernels/cpu/synth.hpp"
#include "ringattn/device.hpp"

namespace ringattn::test {
namespace {

TEST(FillSynthetic, IsTheSynthFunctionRoundedToTheDtype) {
  const int64_t B = 2, N = 40, row0 = 10, rows = 20, H = 3, D = 4;
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    for (int tensor = 1; tensor <= 4; ++tensor) {
      const uint64_t seed = fresh_seed();
      std::vector<float> want;
      for (int64_t b = 0; b < B; ++b)
        for (int64_t t = row0; t < row0 + rows; ++t)
          for (int64_t e = 0; e < H * D; ++e)
            want.push_back(float(kern::synth_value(seed, kern::SynthTensor(tensor), uint64_t((b * N + t) * H * D + e), 3.0)));
      const std::vector<uint8_t> bits = encode(dt, want.data(), want.size());
      std::vector<uint8_t> got(bits.size(), 0xff);
      ASSERT_TRUE(dev::fill_synthetic(Backend::cpu, dt, seed, tensor, 3.0, B, N, row0, rows, H, D, got.data()).ok());
      EXPECT_EQ(std::memcmp(got.data(), bits.data(), bits.size()), 0) << to_string(dt) << " tensor " << tensor;
    }
  }
}

TEST(FillSynthetic, RefusesRowsOutsideTheSequenceAndUnknownTensors) {
  std::vector<float> out(64, 7.f);
  const Status beyond = dev::fill_synthetic(Backend::cpu, DType::f32, 1, 1, 1.0, 1, 8, 6, 4, 1, 2, out.data());
  EXPECT_EQ(beyond.code(), StatusCode::kInvalidArgument);
  EXPECT_NE(beyond.message().find("rows [6, 10) of a sequence of 8"), std::string::npos) << beyond.message();
  EXPECT_EQ(dev::fill_synthetic(Backend::cpu, DType::f32, 1, 5, 1.0, 1, 8, 0, 4, 1, 2, out.data()).code(),
            StatusCode::kInvalidArgument);
  for (float x : out) EXPECT_EQ(x, 7.f) << "nothing is written on an error";
}

}  // namespace
}  // namespace ringattn::test

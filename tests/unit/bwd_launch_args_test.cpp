// The backward launcher's argument checks that run before any CUDA call, so
// they are tested without a GPU (built where the CUDA backend is): a writing
// first pass (BwdParams::overwrite) needs split dK and dV accumulators and,
// with the dQ pass, a split dQ; float32 accumulators are only ever added to.
#include <gtest/gtest.h>

#include "kernels/cuda/attention_bwd.hpp"

namespace kc = ringattn::kern::cuda;

namespace {

// A pass whose every other argument passes the checks. Host addresses stand in
// for device pointers: a refused call never touches them.
kc::BwdParams split_pass(float* f32, uint16_t* b16) {
  kc::BwdParams p = kc::bwd_shard_params(b16, b16, f32, f32, 1, 128, 1, 64, 0.125f, false, kc::ElemType::bf16);
  static const ringattn::kern::Tile tile{};
  static const int32_t prefix[2] = {0, 1};
  p.src = ringattn::kern::KeySource{b16, b16, 0, 64, 64, nullptr};
  p.tiles = &tile;
  p.num_tiles = 1;
  p.q_prefix = p.k_prefix = prefix;
  p.q_items = p.k_items = 1;
  p.dq_hi = p.dk_hi = p.dv_hi = b16;
  p.dq_lo = p.dk_lo = p.dv_lo = b16;
  p.overwrite = true;
  return p;
}

}  // namespace

TEST(BwdLaunchArgs, OverwriteNeedsSplitAccumulators) {
  static float f32[16];
  static uint16_t b16[16];
  {
    kc::BwdParams p = split_pass(f32, b16);  // float32 dK beside split dV
    p.dk_acc = f32;
    p.dk_hi = nullptr;
    p.dk_lo = nullptr;
    EXPECT_EQ(kc::bwd_launch(p, nullptr), cudaErrorInvalidValue);
  }
  {
    kc::BwdParams p = split_pass(f32, b16);  // float32 dV beside split dK
    p.dv_acc = f32;
    p.dv_hi = nullptr;
    p.dv_lo = nullptr;
    EXPECT_EQ(kc::bwd_launch(p, nullptr), cudaErrorInvalidValue);
  }
  {
    kc::BwdParams p = split_pass(f32, b16);  // the dQ pass into a float32 dQ
    p.dq_acc = f32;
    p.dq_hi = nullptr;
    p.dq_lo = nullptr;
    EXPECT_EQ(kc::bwd_launch(p, nullptr), cudaErrorInvalidValue);
  }
}

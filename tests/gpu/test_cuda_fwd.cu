// Kernel-level GPU tests of the shipped fused forward (label gpu): the kernel
// is called straight through fwd_launch, on plans of the project's planner,
// the way the CUDA executor calls it, and checked against the float64
// reference.
//
// Every rank of a P-rank plan runs on its own: fwd_init_outputs, its local
// passes (keys of its own shard: affine KeySource), then the passes of every
// ring step on the block that step receives, made on the host exactly as the
// sending rank sends it (packed K/V read by position, affine or through the
// plan's index list; or a whole shard read by source row); every multi-rank
// case runs again with every packed tile turned into an index list, so both
// load paths of received keys are tested. Every SPEC case (longnet4 and longnet-paper scaled
// down, geometric, dense; causal and not; both head-offset rules; short last
// segments; N not a multiple of w; tokens no branch selects; logits of 1e4),
// both dtypes (f16, bf16) and both head dims (64, 128). Fresh random inputs
// every run (the seed is printed on failure); outputs NaN-poisoned before
// each run, so a row the kernel forgets stays NaN and fails (NaN never
// passes a bound); every rank runs twice and must give the same bits.
// Skips cleanly where no CUDA device is present.
//
// Short segments (ShortSegments/*, ctest gpu_kernel_short_segments): whole
// segments of c = w / r <= 64 keys packed into one tile with a block-diagonal
// mask (PlanOptions::pack_segments, kern::Tile::seg_len), every case also with
// packing off; the forward as above, and at one rank the backward too
// (KernelBwd: bwd_launch on the same plan, the GPU's own O and LSE, against
// the float64 reference backward, with the dQ pass and split accumulators and
// again with atomic dQ and float32 accumulators converted into NaN-poisoned
// outputs).
#include <gtest/gtest.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/packed_block.hpp"
#include "common/test_util.hpp"
#include "kernels/common/convert.hpp"
#include "kernels/cpu/reference.hpp"
#include "kernels/cpu/synth.hpp"
#include "kernels/cuda/attention_bwd.hpp"
#include "kernels/cuda/attention_fwd.hpp"
#include "plan/plan.hpp"
#include "plan/plan_image.hpp"
#include "ringattn/device.hpp"

namespace ringattn::test {
namespace {

namespace kc = kern::cuda;

bool have_device() {
  int n = 0;
  const bool ok = cudaGetDeviceCount(&n) == cudaSuccess && n > 0;
  cudaGetLastError();  // clear "no device" for later calls
  return ok;
}

// A device allocation (at least 16 bytes, so empty blocks still get a pointer).
class DeviceBuffer {
 public:
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) { err_ = cudaMalloc(&p_, std::max<size_t>(bytes, 16)); }
  ~DeviceBuffer() { if (p_) cudaFree(p_); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return p_; }
  cudaError_t status() const { return err_; }
  cudaError_t upload(const void* src) { return cudaMemcpy(p_, src, bytes_, cudaMemcpyHostToDevice); }

 private:
  void* p_ = nullptr;
  size_t bytes_;
  cudaError_t err_;
};

struct KernelCase {
  std::string name;
  std::vector<Branch> branches;
  int64_t seq;
  int world;  // ranks of the plan: every rank is run; > 1 gives received keys
  int64_t heads;
  bool causal;
  HeadOffsets offsets;
  int64_t batch;
  double amplitude;  // inputs in [-amplitude, amplitude): 100 gives logits of ~1e4
  bool pack = true;  // PlanOptions::pack_segments (the runtime's default)
  bool packs = true;  // with pack on, some tile must pack (ShortSegmentsPlan); false where no segment is short
};

struct Variant {
  DType dtype;
  int64_t head_dim;
};

// gtest prints parameters with these (instead of their bytes).
void PrintTo(const KernelCase& c, std::ostream* os) { *os << c.name; }
void PrintTo(const Variant& v, std::ostream* os) { *os << to_string(v.dtype) << " d" << v.head_dim; }

// The backward's split accumulators (bwd_launch): dQ, dK, dV of n elements
// each, 16-bit values at hi (bytes) and their bf16 remainders at lo, in that
// order; no float32 accumulators.
void use_split_accumulators(kc::BwdParams* bp, char* hi, uint16_t* lo, size_t n) {
  bp->dq_acc = bp->dk_acc = bp->dv_acc = nullptr;
  bp->dq_hi = hi;
  bp->dk_hi = hi + n * 2;
  bp->dv_hi = hi + 2 * n * 2;
  bp->dq_lo = lo;
  bp->dk_lo = lo + n;
  bp->dv_lo = lo + 2 * n;
}

// Sizes keep the float64 reference (the cost of this binary) to a few seconds
// on a 16-core host for all 44 tests.
std::vector<KernelCase> kernel_cases() {
  const std::vector<Branch> ln4 = {{512, 1}, {1024, 2}, {2048, 4}, {4096, 8}};   // longnet4, w / 4
  const std::vector<Branch> ln4s = {{256, 1}, {512, 2}, {1024, 4}, {2048, 8}};  // longnet4, w / 8
  const std::vector<Branch> paper = {{128, 1}, {256, 2}, {512, 4}, {1024, 6}, {2048, 12}};  // longnet-paper, w / 16
  const HeadOffsets il = HeadOffsets::interleaved, bl = HeadOffsets::blocked;
  return {
      {"longnet4_local", ln4, 8192, 1, 2, false, il, 1, 1.0},
      {"longnet4_causal_4ranks", ln4s, 4096, 4, 4, true, il, 1, 1.0},
      // r does not divide w; N = 3000 is no multiple of any w (short last segments).
      {"paper_blocked_2ranks", paper, 3000, 2, 3, false, bl, 1, 1.0},
      {"paper_causal_3ranks", paper, 3000, 3, 5, true, il, 1, 1.0},
      // Segments span ranks (w/r constant); N = 3072 cuts the last segment short.
      {"geometric_causal_blocked_4ranks", geometric_scaled(256, 4096), 4096, 4, 4, true, bl, 1, 1.0},
      {"geometric_batch2_2ranks", geometric_scaled(256, 3072), 3072, 2, 2, false, il, 2, 1.0},
      // One branch (N, 1): plain ring attention; L = 500 leaves partial query and key blocks.
      {"dense_batch2_2ranks", {{1024, 1}}, 1024, 2, 2, false, il, 2, 1.0},
      {"dense_causal_3ranks", {{1500, 1}}, 1500, 3, 2, true, il, 1, 1.0},
      // No branch with r = 1: tokens no branch selects keep O = 0, LSE = -inf.
      {"unselected_tokens_4ranks", {{512, 4}, {2048, 8}}, 4096, 4, 2, false, il, 1, 1.0},
      // Segments straddling shard boundaries, r not dividing w, H not a multiple of r.
      {"straddle_causal_blocked_4ranks", {{500, 1}, {1500, 3}, {2500, 7}}, 6000, 4, 3, true, bl, 1, 1.0},
      {"logits_1e4_causal_4ranks", ln4s, 4096, 4, 2, true, il, 1, 100.0},
  };
}

// Inputs: the synth values (nccl-tests style) rounded to the dtype, as the
// dtype's bytes for the device and as doubles for the reference.
struct Inputs {
  std::vector<uint16_t> q, k, v;  // B x N x H x D
  std::vector<double> qd, kd, vd;
};

Inputs make_inputs(kern::ElemKind kind, uint64_t seed, size_t n, double amplitude) {
  Inputs in;
  std::vector<float> f(n);
  auto one = [&](kern::SynthTensor t, std::vector<uint16_t>* bits, std::vector<double>* d) {
    for (size_t i = 0; i < n; ++i) f[i] = float(kern::synth_value(seed, t, i, amplitude));
    bits->resize(n);
    kern::from_float(kind, f.data(), n, bits->data());
    kern::to_float(kind, bits->data(), n, f.data());
    d->assign(f.begin(), f.end());
  };
  one(kern::SynthTensor::q, &in.q, &in.qd);
  one(kern::SynthTensor::k, &in.k, &in.kd);
  one(kern::SynthTensor::v, &in.v, &in.vd);
  return in;
}

// Rows [rank*L, (rank+1)*L) of every batch element: B x L x H x D.
template <typename T>
std::vector<T> shard_of(const std::vector<T>& x, int64_t B, int64_t N, int64_t L, int rank, int64_t row_elems) {
  std::vector<T> y(size_t(B * L * row_elems));
  for (int64_t b = 0; b < B; ++b)
    std::copy(x.begin() + (b * N + rank * L) * row_elems, x.begin() + (b * N + (rank + 1) * L) * row_elems,
              y.begin() + b * L * row_elems);
  return y;
}

// Packed tiles of a plan (seg_len > 0).
int64_t packed_tiles(const Plan& plan) {
  int64_t n = 0;
  for (const kern::Tile& t : plan.tiles) n += t.seg_len > 0;
  return n;
}

class KernelRunner : public ::testing::Test {
 protected:
  // One rank's forward, run twice (each run on NaN-poisoned outputs); its O
  // (dtype bits) and LSE; *packed: packed tiles of its plan.
  void run_rank(const KernelCase& kc_case, const Config& c, const Inputs& in, int rank, std::vector<uint16_t>* o,
                std::vector<float>* lse, bool lists, bool* received, int64_t* packed = nullptr) {
    const int64_t B = kc_case.batch, N = kc_case.seq, P = kc_case.world, L = N / P, H = c.heads, D = c.head_dim;
    const kc::ElemType et = c.dtype == DType::bf16 ? kc::ElemType::bf16 : kc::ElemType::f16;
    Shape s;
    s.batch = B;
    s.seq = N;
    ASSERT_TRUE(validate_shape(c, s, int(P)).ok());
    const PlanOptions opt{kc_case.pack};
    const Plan plan = lists ? with_index_lists(build_plan(c, s, int(P), rank, opt)) : build_plan(c, s, int(P), rank, opt);
    if (packed) *packed = packed_tiles(plan);
    const PlanImage im = build_plan_image(plan, kc::fwd_block_m(et, int(D)));

    DeviceBuffer image(im.blob.size()), q(size_t(B * L * H * D) * 2), k(size_t(B * L * H * D) * 2),
        v(size_t(B * L * H * D) * 2), out(size_t(B * L * H * D) * 2), out_lse(size_t(B * L * H) * 4);
    for (const DeviceBuffer* d : {&image, &q, &k, &v, &out, &out_lse}) ASSERT_EQ(d->status(), cudaSuccess);
    ASSERT_EQ(image.upload(im.blob.data()), cudaSuccess);
    ASSERT_EQ(q.upload(shard_of(in.q, B, N, L, rank, H * D).data()), cudaSuccess);
    ASSERT_EQ(k.upload(shard_of(in.k, B, N, L, rank, H * D).data()), cudaSuccess);
    ASSERT_EQ(v.upload(shard_of(in.v, B, N, L, rank, H * D).data()), cudaSuccess);
    // The block each ring step receives, packed on the host.
    std::vector<std::unique_ptr<DeviceBuffer>> blocks;
    for (const PlanStep& st : plan.steps) {
      const std::vector<uint16_t> blk = pack_block(st.recv, L, in.k, in.v, B, N, H, D);
      blocks.push_back(std::make_unique<DeviceBuffer>(blk.size() * 2));
      ASSERT_EQ(blocks.back()->status(), cudaSuccess);
      ASSERT_EQ(blocks.back()->upload(blk.data()), cudaSuccess);
    }
    const char* base = static_cast<const char*>(image.get());
    const auto* tiles = reinterpret_cast<const kern::Tile*>(base + im.tiles_offset);
    const auto* prefix = reinterpret_cast<const int32_t*>(base + im.prefix_offset);
    const auto* key_index = reinterpret_cast<const int32_t*>(base + im.key_index_offset);
    *received = false;
    for (const Pass& ps : plan.passes) *received |= ps.step > 0;

    kc::FwdParams fp = kc::fwd_shard_params(q.get(), out.get(), static_cast<float*>(out_lse.get()), B, L, H, D,
                                            float(1.0 / std::sqrt(double(D))), c.causal, et);
    // Run 0: the static tile order; run 1: dynamic (a tile counter per pass).
    // An item is computed the same way whichever CTA takes it: same bits.
    DeviceBuffer counter_buf(std::max<size_t>(1, plan.passes.size()) * sizeof(int32_t));
    ASSERT_EQ(counter_buf.status(), cudaSuccess);
    const DeviceBuffer* counters = nullptr;
    auto run_passes = [&](int step, const kern::KeySource& src) {
      for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
        const Pass& ps = plan.passes[pi];
        if (ps.step != step) continue;
        fp.src = src;
        fp.tiles = tiles + ps.tile_begin;
        fp.num_tiles = int32_t(ps.tile_end - ps.tile_begin);
        fp.tile_block_prefix = prefix + im.pass_prefix_offset[pi];
        fp.num_blocks = im.pass_blocks[pi];
        fp.tile_counter = counters ? static_cast<int32_t*>(counters->get()) + pi : nullptr;
        ASSERT_EQ(kc::fwd_launch(fp, nullptr), cudaSuccess) << "pass " << pi;
      }
    };

    std::vector<uint16_t> o_runs[2];
    std::vector<float> lse_runs[2];
    for (int run = 0; run < 2; ++run) {
      counters = run == 1 ? &counter_buf : nullptr;
      ASSERT_EQ(cudaMemset(counter_buf.get(), 0, std::max<size_t>(1, plan.passes.size()) * sizeof(int32_t)), cudaSuccess);
      // Poison: 0xFF bytes are NaN in bf16, fp16 and float32.
      ASSERT_EQ(cudaMemset(out.get(), 0xFF, size_t(B * L * H * D) * 2), cudaSuccess);
      ASSERT_EQ(cudaMemset(out_lse.get(), 0xFF, size_t(B * L * H) * 4), cudaSuccess);
      ASSERT_EQ(kc::fwd_init_outputs(out.get(), fp.lse, B * L * H * D, B * L * H, et, !plan.covers_all, nullptr),
                cudaSuccess);
      run_passes(0, kern::KeySource{k.get(), v.get(), L * H * D, H * D, D, nullptr});
      for (size_t i = 0; i < plan.steps.size(); ++i) {
        if (plan.steps[i].recv.empty()) continue;
        run_passes(plan.steps[i].step, block_source(plan.steps[i].recv, blocks[i]->get(), 2, B, L, H, D, key_index));
      }
      if (HasFatalFailure()) return;
      ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
      o_runs[run].resize(size_t(B * L * H * D));
      lse_runs[run].resize(size_t(B * L * H));
      ASSERT_EQ(cudaMemcpy(o_runs[run].data(), out.get(), o_runs[run].size() * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      ASSERT_EQ(cudaMemcpy(lse_runs[run].data(), fp.lse, lse_runs[run].size() * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    }
    EXPECT_EQ(std::memcmp(o_runs[0].data(), o_runs[1].data(), o_runs[0].size() * 2), 0)
        << "O differs between runs (static and dynamic tile order)";
    EXPECT_EQ(std::memcmp(lse_runs[0].data(), lse_runs[1].data(), lse_runs[0].size() * 4), 0)
        << "LSE differs between runs";
    *o = std::move(o_runs[0]);
    *lse = std::move(lse_runs[0]);
  }
};

class KernelFwd : public KernelRunner, public ::testing::WithParamInterface<std::tuple<KernelCase, Variant>> {};

TEST_P(KernelFwd, MatchesFloat64Reference) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  const KernelCase& kcase = std::get<0>(GetParam());
  const Variant& var = std::get<1>(GetParam());
  const int64_t B = kcase.batch, N = kcase.seq, P = kcase.world, L = N / P, H = kcase.heads, D = var.head_dim;
  Config c = make_config(kcase.branches, H, D, kcase.causal, kcase.offsets, var.dtype);
  c.backend = Backend::cuda;
  ASSERT_TRUE(validate_config(c).ok());
  const kern::ElemKind kind = elem_kind(var.dtype);
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(describe(c, N, B) + " ranks=" + std::to_string(P) + " amplitude=" + std::to_string(kcase.amplitude) +
               " seed=" + std::to_string(seed));
  const Inputs in = make_inputs(kind, seed, size_t(B * N * H * D), kcase.amplitude);

  // The reference for every row (all ranks' shards), on every core.
  std::vector<double> ro(size_t(B * N * H * D)), rl(size_t(B * N * H));
  kern::RefOptions ropt;
  ropt.threads = int(std::max(1u, std::thread::hardware_concurrency()));
  kern::reference_forward(ref_problem(c), B, N, in.qd.data(), in.kd.data(), in.vd.data(), 0, N, ro.data(), rl.data(),
                          ropt);
  const kern::Tolerance tol = kern::spec_tolerance(int(var.dtype), /*gpu=*/true);

  bool any_received = false;
  int64_t any_packed = 0;
  // Received keys as planned (affine where evenly spaced, whole shards by
  // source row) and again with every packed tile as an index list.
  for (int rank_run = 0; rank_run < 2 * P; ++rank_run) {
    const int rank = rank_run % int(P);
    const bool lists = rank_run >= P;
    if (lists && P == 1) break;
    SCOPED_TRACE("rank " + std::to_string(rank) + (lists ? " (received keys as index lists)" : ""));
    std::vector<uint16_t> o_bits;
    std::vector<float> lse;
    bool received = false;
    int64_t packed = 0;
    run_rank(kcase, c, in, rank, &o_bits, &lse, lists, &received, &packed);
    any_received |= received;
    any_packed += packed;
    if (HasFatalFailure()) return;
    std::vector<float> o(o_bits.size());
    kern::to_float(kind, o_bits.data(), o_bits.size(), o.data());
    const std::vector<double> ro_r = shard_of(ro, B, N, L, rank, H * D), rl_r = shard_of(rl, B, N, L, rank, H);
    // O: relative L2 over the shard (non-finite anywhere gives +inf); rows no
    // branch selects must be exactly 0.
    kern::ErrorAccumulator eo;
    int64_t nonfinite = 0, empty_wrong = 0, lse_wrong = 0;
    for (size_t i = 0; i < o.size(); ++i) {
      nonfinite += !std::isfinite(o[i]);
      eo.add(o[i], ro_r[i]);
    }
    // LSE: within max(SPEC bound, 4e-6 |LSE|) element by element; -inf exactly where the reference has -inf.
    double lse_worst = 0, lse_ratio = 0;
    for (size_t i = 0; i < lse.size(); ++i) {
      kern::LseErrorAccumulator one;
      one.add(lse[i], rl_r[i]);
      const double ratio = one.max_abs / kern::lse_bound(tol.lse, std::isfinite(rl_r[i]) ? rl_r[i] : 0.0);
      if (!(ratio <= 1.0)) ++lse_wrong;  // NaN fails
      lse_worst = std::max(lse_worst, std::isnan(one.max_abs) ? INFINITY : one.max_abs);
      lse_ratio = std::max(lse_ratio, std::isnan(ratio) ? INFINITY : ratio);
      if (std::isinf(rl_r[i]))
        for (int64_t d = 0; d < D; ++d) empty_wrong += o[i * size_t(D) + size_t(d)] != 0.f;
    }
    const double o_err = eo.rel_l2();
    EXPECT_EQ(nonfinite, 0) << "non-finite O values";
    EXPECT_EQ(empty_wrong, 0) << "O not 0 where no branch selects the token";
    EXPECT_LE(o_err, tol.o) << "O relative L2";
    EXPECT_EQ(lse_wrong, 0) << "LSE entries out of bounds (worst abs error " << lse_worst << ", worst error/bound "
                            << lse_ratio << ")";
  }
  if (P > 1) EXPECT_TRUE(any_received) << "no rank read received keys: the case tests nothing remote";
  if (!kcase.pack) EXPECT_EQ(any_packed, 0) << "packing off, yet the plan has packed tiles";
}

std::string param_name(const ::testing::TestParamInfo<std::tuple<KernelCase, Variant>>& info) {
  const Variant& v = std::get<1>(info.param);
  return std::get<0>(info.param).name + "_" + to_string(v.dtype) + "_d" + std::to_string(v.head_dim);
}

const auto kVariants = ::testing::Values(Variant{DType::bf16, 128}, Variant{DType::f16, 128}, Variant{DType::bf16, 64},
                                        Variant{DType::f16, 64});

INSTANTIATE_TEST_SUITE_P(SpecCases, KernelFwd, ::testing::Combine(::testing::ValuesIn(kernel_cases()), kVariants),
                         param_name);

// ---- short segments: packed tiles (block-diagonal mask) and the same unpacked

// Each case twice: packing on (the default; with `packs` some tile must pack)
// and off (name + "_nopack"). Shards of N / P tokens cut segments, so
// shard-edge pieces and received keys stay unpacked beside packed tiles.
// backward: the cases KernelBwd runs: one rank, logits of order 1 (at 1e4
// f16 gradients overflow and dQ, dK's relative error is not bounded: see
// tests/unit/cpu_backward_test.cpp).
std::vector<KernelCase> short_segment_cases(bool backward) {
  const HeadOffsets il = HeadOffsets::interleaved, bl = HeadOffsets::blocked;
  const std::vector<KernelCase> base = {
      {"w64_r1_local", {{64, 1}}, 4096, 1, 4, false, il, 1, 1.0},
      {"w32_r1_causal_local", {{32, 1}}, 4096, 1, 4, true, il, 1, 1.0},
      // Two passes (the second adds onto what the first wrote), batch 2.
      {"w64_r1_w512_r8_batch2_local", {{64, 1}, {512, 8}}, 4096, 1, 4, false, il, 2, 1.0},
      {"w512_r8_causal_local", {{512, 8}}, 8192, 1, 4, true, il, 1, 1.0},
      // A causal first pass of two 128-key blocks per segment and a short last segment
      // (4000 = 15 x 256 + 160): the first pass writes (runs 3 and 4) across both.
      // Segments of 256 are not short (nothing packs): here for the first pass's writes.
      {"w256_r1_causal_short_last_local", {{256, 1}}, 4000, 1, 4, true, il, 1, 1.0, true, false},
      // c = 1 (every query sees only itself) and c = 4; batch 2; N = 2000 cuts the last segment short.
      {"w16_r16_w8_r2_batch2_local", {{16, 16}, {8, 2}}, 2000, 1, 3, false, bl, 2, 1.0},
      // The training branches (64:1, 512:8 and a long one), logits of ~1e4.
      {"training_mix_causal_local_logits_1e4", {{64, 1}, {512, 8}, {4096, 16}}, 8192, 1, 4, true, il, 1, 100.0},
      // At 2 ranks the long branch spans both shards (N:16, as in training), so rank 1 reads received keys.
      {"training_mix_causal_2ranks", {{64, 1}, {512, 8}, {8192, 16}}, 8192, 2, 4, true, il, 1, 1.0},
      // L = 1250: shard edges inside segments of 64, 32, 128 and 512 tokens; r not dividing w beside them.
      {"short_mix_blocked_4ranks", {{64, 1}, {32, 1}, {512, 8}, {128, 4}, {100, 3}}, 5000, 4, 3, false, bl, 1, 1.0},
  };
  std::vector<KernelCase> out;
  for (const KernelCase& k : base) {
    if (backward && (k.world != 1 || k.amplitude != 1.0)) continue;
    out.push_back(k);
    KernelCase off = k;
    off.name += "_nopack";
    off.pack = false;
    out.push_back(off);
  }
  return out;
}

INSTANTIATE_TEST_SUITE_P(ShortSegments, KernelFwd,
                         ::testing::Combine(::testing::ValuesIn(short_segment_cases(false)), kVariants), param_name);

// Packing on must pack: checked once per case on the host (no device needed).
TEST(ShortSegmentsPlan, PackedCasesPack) {
  for (const KernelCase& k : short_segment_cases(false)) {
    const Config c = make_config(k.branches, k.heads, 128, k.causal, k.offsets);
    int64_t packed = 0;
    for (int rank = 0; rank < k.world; ++rank)
      packed += packed_tiles(build_plan(c, Shape{k.batch, k.seq}, k.world, rank, PlanOptions{k.pack}));
    if (k.pack && k.packs) EXPECT_GT(packed, 0) << k.name << " packs nothing";
    else if (k.pack) EXPECT_EQ(packed, 0) << k.name << " packs (say so: packs = true)";
    else EXPECT_EQ(packed, 0) << k.name;
  }
}

// The backward at one rank, kernel-level: the GPU forward's O and LSE (as the
// runtime hands them to the backward), Delta by bwd_delta, then bwd_launch for
// every pass, the way the CUDA executor runs the local step:
//   run 0: the dQ pass, split accumulators (hi = the gradient in the dtype,
//          zeroed, lo = bf16 remainder), the runtime's default;
//   run 1: the same again: the same bits (no atomics);
//   run 2: atomic dQ, float32 accumulators, converted by bwd_convert into
//          NaN-poisoned outputs.
// dQ, dK, dV against the float64 reference backward (from the reference
// forward): relative L2 within SPEC's gradient bound (the O bound times 2).
class KernelBwd : public KernelRunner, public ::testing::WithParamInterface<std::tuple<KernelCase, Variant>> {};

TEST_P(KernelBwd, MatchesFloat64Reference) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  const KernelCase& kcase = std::get<0>(GetParam());
  const Variant& var = std::get<1>(GetParam());
  ASSERT_EQ(kcase.world, 1) << "the kernel-level backward runs the local step only";
  const int64_t B = kcase.batch, N = kcase.seq, H = kcase.heads, D = var.head_dim;
  Config c = make_config(kcase.branches, H, D, kcase.causal, kcase.offsets, var.dtype);
  c.backend = Backend::cuda;
  ASSERT_TRUE(validate_config(c).ok());
  const kern::ElemKind kind = elem_kind(var.dtype);
  const kc::ElemType et = var.dtype == DType::bf16 ? kc::ElemType::bf16 : kc::ElemType::f16;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(describe(c, N, B) + " amplitude=" + std::to_string(kcase.amplitude) + " pack=" +
               std::to_string(kcase.pack) + " seed=" + std::to_string(seed));
  const size_t n = size_t(B * N * H * D), rows = size_t(B * N * H);
  const Inputs in = make_inputs(kind, seed, n, kcase.amplitude);
  std::vector<uint16_t> dout(n);
  std::vector<double> doutd(n);
  {
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = float(kern::synth_value(seed, kern::SynthTensor::dout, i));
    kern::from_float(kind, f.data(), n, dout.data());
    kern::to_float(kind, dout.data(), n, f.data());
    doutd.assign(f.begin(), f.end());
  }

  // The reference: forward, then the exact gradient from its O and LSE.
  std::vector<double> ro(n), rl(rows), rdq(n), rdk(n), rdv(n);
  kern::RefOptions ropt;
  ropt.threads = int(std::max(1u, std::thread::hardware_concurrency()));
  kern::reference_forward(ref_problem(c), B, N, in.qd.data(), in.kd.data(), in.vd.data(), 0, N, ro.data(), rl.data(),
                          ropt);
  kern::reference_backward(ref_problem(c), B, N, in.qd.data(), in.kd.data(), in.vd.data(), ro.data(), rl.data(),
                           doutd.data(), rdq.data(), rdk.data(), rdv.data(), ropt);
  const double bound = 2 * kern::spec_tolerance(int(var.dtype), /*gpu=*/true).o;

  // The GPU forward (checked by KernelFwd on the same cases).
  std::vector<uint16_t> o_bits;
  std::vector<float> lse;
  bool received = false;
  int64_t packed = 0;
  run_rank(kcase, c, in, 0, &o_bits, &lse, false, &received, &packed);
  if (HasFatalFailure()) return;
  if (!kcase.pack) EXPECT_EQ(packed, 0);

  Shape s;
  s.batch = B;
  s.seq = N;
  const Plan plan = build_plan(c, s, 1, 0, PlanOptions{kcase.pack});
  const PlanImage im = build_plan_image(plan, kc::fwd_block_m(et, int(D)));
  ASSERT_EQ(im.block_m, kc::kBwdBlockM);
  ASSERT_EQ(im.block_n, kc::kBwdBlockN);
  DeviceBuffer image(im.blob.size()), q(n * 2), k(n * 2), v(n * 2), o(n * 2), dO(n * 2), lse_d(rows * 4),
      delta(rows * 4), acc(3 * n * 4), hi(3 * n * 2), lo(3 * n * 2);
  for (const DeviceBuffer* d : {&image, &q, &k, &v, &o, &dO, &lse_d, &delta, &acc, &hi, &lo})
    ASSERT_EQ(d->status(), cudaSuccess);
  ASSERT_EQ(image.upload(im.blob.data()), cudaSuccess);
  ASSERT_EQ(q.upload(in.q.data()), cudaSuccess);
  ASSERT_EQ(k.upload(in.k.data()), cudaSuccess);
  ASSERT_EQ(v.upload(in.v.data()), cudaSuccess);
  ASSERT_EQ(o.upload(o_bits.data()), cudaSuccess);
  ASSERT_EQ(dO.upload(dout.data()), cudaSuccess);
  ASSERT_EQ(lse_d.upload(lse.data()), cudaSuccess);
  ASSERT_EQ(kc::bwd_delta(o.get(), dO.get(), static_cast<float*>(delta.get()), B, N, H, D, et, nullptr), cudaSuccess);

  const char* base = static_cast<const char*>(image.get());
  kc::BwdParams bp = kc::bwd_shard_params(q.get(), dO.get(), static_cast<const float*>(lse_d.get()),
                                          static_cast<const float*>(delta.get()), B, N, H, D,
                                          float(1.0 / std::sqrt(double(D))), c.causal, et);
  bp.src = kern::KeySource{k.get(), v.get(), N * H * D, H * D, D, nullptr};
  float* const f32 = static_cast<float*>(acc.get());
  char* const hib = static_cast<char*>(hi.get());
  uint16_t* const lob = static_cast<uint16_t*>(lo.get());

  // Runs 0 and 1: the dQ pass, split accumulators (bit-identical); run 2:
  // atomic dQ, float32 accumulators. Where the first pass holds every row
  // (Plan::first_pass_covers_local), run 3: split accumulators poisoned
  // instead of zeroed, the first pass writing (BwdParams::overwrite): the same
  // bits as run 0; run 4: atomic dQ (float32) beside split dK/dV written by
  // the first pass, as the runtime pairs them: within the bound.
  struct Run {
    bool split;      // dQ pass; else atomic dQ
    bool overwrite;  // poisoned accumulators, the first pass writes
    bool mixed;      // with !split: float32 dQ, split dK/dV
  };
  const Run runs[] = {{true, false, false}, {true, false, false}, {false, false, false}, {true, true, false}, {false, true, true}};
  std::vector<uint16_t> first[3];
  for (int run = 0; run < int(sizeof(runs) / sizeof(runs[0])); ++run) {
    const bool split = runs[run].split, overwrite = runs[run].overwrite, mixed = runs[run].mixed;
    if (overwrite && !plan.first_pass_covers_local) continue;
    SCOPED_TRACE(std::string(split ? "dQ pass, split accumulators"
                                   : (mixed ? "atomic dQ, float32 dQ, split dK/dV" : "atomic dQ, float32 accumulators")) +
                 " (run " + std::to_string(run) + (overwrite ? ", first pass writes)" : ")"));
    bp.dq_atomic = !split;
    if (split || mixed) {
      const int fill = overwrite ? 0xFF : 0;  // 0xFFFF: NaN in bf16 and f16, which a read would carry into the result
      ASSERT_EQ(cudaMemset(hi.get(), fill, 3 * n * 2), cudaSuccess);
      ASSERT_EQ(cudaMemset(lo.get(), fill, 3 * n * 2), cudaSuccess);
      use_split_accumulators(&bp, hib, lob, n);
      if (mixed) {
        ASSERT_EQ(cudaMemset(acc.get(), 0, n * 4), cudaSuccess);
        bp.dq_acc = f32;
        bp.dq_hi = nullptr;
        bp.dq_lo = nullptr;
      }
    } else {
      ASSERT_EQ(cudaMemset(acc.get(), 0, 3 * n * 4), cudaSuccess);
      ASSERT_EQ(cudaMemset(hi.get(), 0xFF, 3 * n * 2), cudaSuccess);  // NaN in bf16 and f16
      bp.dq_acc = f32;
      bp.dk_acc = f32 + n;
      bp.dv_acc = f32 + 2 * n;
      bp.dq_hi = bp.dk_hi = bp.dv_hi = nullptr;
      bp.dq_lo = bp.dk_lo = bp.dv_lo = nullptr;
    }
    for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
      const Pass& ps = plan.passes[pi];
      ASSERT_EQ(ps.step, 0);
      bp.tiles = reinterpret_cast<const kern::Tile*>(base + im.tiles_offset) + ps.tile_begin;
      bp.num_tiles = int32_t(ps.tile_end - ps.tile_begin);
      bp.q_prefix = reinterpret_cast<const int32_t*>(base + im.prefix_offset) + im.pass_prefix_offset[pi];
      bp.k_prefix = reinterpret_cast<const int32_t*>(base + im.key_prefix_offset) + im.pass_prefix_offset[pi];
      bp.q_items = im.pass_blocks[pi];
      bp.k_items = im.pass_key_blocks[pi];
      bp.overwrite = overwrite && pi == 0;
      ASSERT_EQ(kc::bwd_launch(bp, nullptr), cudaSuccess) << "pass " << pi;
    }
    if (!split)
      for (int g = 0; g < (mixed ? 1 : 3); ++g)
        ASSERT_EQ(kc::bwd_convert(f32 + g * n, hib + g * n * 2, int64_t(n), et, nullptr), cudaSuccess);
    ASSERT_EQ(cudaDeviceSynchronize(), cudaSuccess);
    const char* names[3] = {"dQ", "dK", "dV"};
    const std::vector<double>* ref[3] = {&rdq, &rdk, &rdv};
    for (int g = 0; g < 3; ++g) {
      std::vector<uint16_t> bits(n);
      ASSERT_EQ(cudaMemcpy(bits.data(), hib + g * n * 2, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
      std::vector<float> x(n);
      kern::to_float(kind, bits.data(), n, x.data());
      kern::ErrorAccumulator e;
      int64_t nonfinite = 0;
      for (size_t i = 0; i < n; ++i) {
        nonfinite += !std::isfinite(x[i]);
        e.add(x[i], (*ref[g])[i]);
      }
      EXPECT_EQ(nonfinite, 0) << names[g] << ": non-finite values";
      EXPECT_LE(e.rel_l2(), bound) << names[g] << " relative L2";
      if (run == 0) first[g] = bits;
      if (run == 1 || run == 3)
        EXPECT_EQ(std::memcmp(first[g].data(), bits.data(), n * 2), 0) << names[g] << " differs from run 0";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(ShortSegments, KernelBwd,
                         ::testing::Combine(::testing::ValuesIn(short_segment_cases(true)), kVariants), param_name);

// ---- programmatic dependent launch (FwdParams::pdl, BwdParams::pdl, pdl_dq)
//
// A sequence of pass launches on one stream, every launch after the first a
// programmatic dependent launch (as the CUDA executor launches a ring step's
// passes), must give the bits of the same launches made plain: a launch reads
// and writes what the launch before it wrote (every pass merges into the same
// O/LSE rows; every backward pass adds into the same dQ/dK/dV rows), so a
// missing or misplaced griddepcontrol.wait shows as other bits (or NaN: the
// outputs are poisoned first where nothing should read them). The plan's
// passes run kRepeat times in a row in one sequence (the same keys merged
// again: a different result, but a deterministic one) for more launch
// boundaries. Forward: the static and the dynamic tile order, plain once, pdl
// twice each. Backward (plain once, pdl twice, then plain with every block
// through the cp.async gather instead of TMA: BwdParams::tma): the dQ pass with split accumulators (the first pass
// writing where it holds every row; dQ, dK, dV and their remainders
// bit-identical), and atomic dQ with float32 accumulators (dK and dV
// bit-identical; dQ's float adds come in a timing-dependent order, so within
// 1e-5 relative L2 of the plain run's). Everything on a stream of its own.
struct PdlCase {
  std::string name;
  std::vector<Branch> branches;
  int64_t seq, heads, head_dim, batch;
  bool causal;
  DType dtype;
};
void PrintTo(const PdlCase& c, std::ostream* os) { *os << c.name; }

class KernelPdl : public ::testing::TestWithParam<PdlCase> {};

TEST_P(KernelPdl, SameBitsAsPlainLaunches) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  constexpr int kRepeat = 3;
  const PdlCase& pc = GetParam();
  const int64_t B = pc.batch, N = pc.seq, H = pc.heads, D = pc.head_dim;
  Config c = make_config(pc.branches, H, D, pc.causal, HeadOffsets::interleaved, pc.dtype);
  c.backend = Backend::cuda;
  ASSERT_TRUE(validate_config(c).ok());
  const kern::ElemKind kind = elem_kind(pc.dtype);
  const kc::ElemType et = pc.dtype == DType::bf16 ? kc::ElemType::bf16 : kc::ElemType::f16;
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE(describe(c, N, B) + " seed=" + std::to_string(seed));
  Shape s;
  s.batch = B;
  s.seq = N;
  const Plan plan = build_plan(c, s, 1, 0, PlanOptions{});
  const PlanImage im = build_plan_image(plan, kc::fwd_block_m(et, int(D)));
  const size_t np = plan.passes.size();
  ASSERT_GE(np, 2u) << "a sequence of one pass has no launch boundary";
  const size_t n = size_t(B * N * H * D), rows = size_t(B * N * H);
  const Inputs in = make_inputs(kind, seed, n, 1.0);
  std::vector<uint16_t> dout(n);
  {
    std::vector<float> f(n);
    for (size_t i = 0; i < n; ++i) f[i] = float(kern::synth_value(seed, kern::SynthTensor::dout, i));
    kern::from_float(kind, f.data(), n, dout.data());
  }
  DeviceBuffer image(im.blob.size()), q(n * 2), k(n * 2), v(n * 2), o(n * 2), dO(n * 2), lse(rows * 4),
      delta(rows * 4), acc(3 * n * 4), hi(3 * n * 2), lo(3 * n * 2), counters(kRepeat * np * sizeof(int32_t));
  for (const DeviceBuffer* d : {&image, &q, &k, &v, &o, &dO, &lse, &delta, &acc, &hi, &lo, &counters})
    ASSERT_EQ(d->status(), cudaSuccess);
  ASSERT_EQ(image.upload(im.blob.data()), cudaSuccess);
  ASSERT_EQ(q.upload(in.q.data()), cudaSuccess);
  ASSERT_EQ(k.upload(in.k.data()), cudaSuccess);
  ASSERT_EQ(v.upload(in.v.data()), cudaSuccess);
  ASSERT_EQ(dO.upload(dout.data()), cudaSuccess);
  cudaStream_t st = nullptr;
  ASSERT_EQ(cudaStreamCreate(&st), cudaSuccess);
  struct StreamGuard {
    cudaStream_t s;
    ~StreamGuard() { cudaStreamDestroy(s); }
  } guard{st};
  const char* base = static_cast<const char*>(image.get());
  const auto* tiles = reinterpret_cast<const kern::Tile*>(base + im.tiles_offset);
  const auto* prefix = reinterpret_cast<const int32_t*>(base + im.prefix_offset);
  const auto* key_prefix = reinterpret_cast<const int32_t*>(base + im.key_prefix_offset);
  const kern::KeySource src{k.get(), v.get(), N * H * D, H * D, D, nullptr};
  auto fetch = [&](const void* dev, size_t bytes) {
    std::vector<uint8_t> h(bytes);
    EXPECT_EQ(cudaMemcpy(h.data(), dev, bytes, cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  };

  // ---- forward: O and LSE of kRepeat x the plan's passes, from NaN.
  kc::FwdParams fp = kc::fwd_shard_params(q.get(), o.get(), static_cast<float*>(lse.get()), B, N, H, D,
                                          float(1.0 / std::sqrt(double(D))), c.causal, et);
  fp.src = src;
  auto forward = [&](bool pdl, bool dynamic, std::vector<uint8_t>* o_bits, std::vector<uint8_t>* lse_bits) {
    ASSERT_EQ(cudaMemsetAsync(counters.get(), 0, kRepeat * np * sizeof(int32_t), st), cudaSuccess);
    ASSERT_EQ(cudaMemsetAsync(o.get(), 0xFF, n * 2, st), cudaSuccess);  // NaN in bf16, f16 and float32
    ASSERT_EQ(cudaMemsetAsync(lse.get(), 0xFF, rows * 4, st), cudaSuccess);
    ASSERT_EQ(kc::fwd_init_outputs(o.get(), fp.lse, int64_t(n), int64_t(rows), et, !plan.covers_all, st), cudaSuccess);
    bool after_pass = false;
    for (int rep = 0; rep < kRepeat; ++rep)
      for (size_t pi = 0; pi < np; ++pi) {
        fp.tiles = tiles + plan.passes[pi].tile_begin;
        fp.num_tiles = int32_t(plan.passes[pi].tile_end - plan.passes[pi].tile_begin);
        fp.tile_block_prefix = prefix + im.pass_prefix_offset[pi];
        fp.num_blocks = im.pass_blocks[pi];
        fp.tile_counter = dynamic ? static_cast<int32_t*>(counters.get()) + rep * np + pi : nullptr;
        fp.pdl = pdl && after_pass;
        bool launched = false;
        ASSERT_EQ(kc::fwd_launch(fp, st, &launched), cudaSuccess) << "pass " << pi;
        after_pass |= launched;
      }
    ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
    *o_bits = fetch(o.get(), n * 2);
    *lse_bits = fetch(lse.get(), rows * 4);
  };
  std::vector<uint8_t> o_ref, lse_ref;
  forward(false, false, &o_ref, &lse_ref);
  if (HasFatalFailure()) return;
  {
    std::vector<float> of(n);
    kern::to_float(kind, reinterpret_cast<const uint16_t*>(o_ref.data()), n, of.data());
    int64_t bad = 0;
    for (float x : of) bad += !std::isfinite(x);
    const float* l = reinterpret_cast<const float*>(lse_ref.data());
    for (size_t i = 0; i < rows; ++i) bad += std::isnan(l[i]);
    ASSERT_EQ(bad, 0) << "non-finite O or NaN LSE in the plain launches' forward";
  }
  for (int dynamic = 0; dynamic < 2; ++dynamic)
    for (int run = 0; run < 2; ++run) {
      SCOPED_TRACE(std::string("forward, pdl, ") + (dynamic ? "dynamic" : "static") + " tile order, run " +
                   std::to_string(run));
      std::vector<uint8_t> ob, lb;
      forward(true, dynamic == 1, &ob, &lb);
      if (HasFatalFailure()) return;
      EXPECT_EQ(std::memcmp(ob.data(), o_ref.data(), ob.size()), 0) << "O differs from the plain launches'";
      EXPECT_EQ(std::memcmp(lb.data(), lse_ref.data(), lb.size()), 0) << "LSE differs from the plain launches'";
    }
  // The backward reads the plain launches' O and LSE.
  {
    std::vector<uint8_t> ob, lb;
    forward(false, true, &ob, &lb);
    if (HasFatalFailure()) return;
  }

  // ---- backward: kRepeat x the plan's passes into the same accumulators.
  kc::BwdParams bp = kc::bwd_shard_params(q.get(), dO.get(), static_cast<const float*>(lse.get()),
                                          static_cast<const float*>(delta.get()), B, N, H, D,
                                          float(1.0 / std::sqrt(double(D))), c.causal, et);
  bp.src = src;
  bp.pingpong = true;  // the runtime's default
  // Q/dO (dK/dV kernel) and K/V (dQ pass) through TMA for strides 1, 2, 4, 8 (else run 2 below
  // would compare the gather with itself).
  ASSERT_EQ(kc::bwd_tma_map_mask(bp), 0xFFu) << "the backward kernels' tensor maps were not encoded";
  float* const f32 = static_cast<float*>(acc.get());
  char* const hib = static_cast<char*>(hi.get());
  uint16_t* const lob = static_cast<uint16_t*>(lo.get());
  // split: dQ pass, split accumulators (hi then lo of dQ, dK, dV); else atomic dQ, float32 (dQ, dK, dV).
  auto backward = [&](bool pdl, bool split, std::vector<uint8_t>* out) {
    const bool overwrite = split && plan.first_pass_covers_local;
    bp.dq_atomic = !split;
    if (split) {
      const int fill = overwrite ? 0xFF : 0;  // NaN where the first pass writes without reading
      ASSERT_EQ(cudaMemsetAsync(hi.get(), fill, 3 * n * 2, st), cudaSuccess);
      ASSERT_EQ(cudaMemsetAsync(lo.get(), fill, 3 * n * 2, st), cudaSuccess);
      use_split_accumulators(&bp, hib, lob, n);
    } else {
      ASSERT_EQ(cudaMemsetAsync(acc.get(), 0xFF, n * 4, st), cudaSuccess);  // dQ: Delta's kernel zeroes it
      ASSERT_EQ(cudaMemsetAsync(f32 + n, 0, 2 * n * 4, st), cudaSuccess);
      bp.dq_acc = f32;
      bp.dk_acc = f32 + n;
      bp.dv_acc = f32 + 2 * n;
      bp.dq_hi = bp.dk_hi = bp.dv_hi = nullptr;
      bp.dq_lo = bp.dk_lo = bp.dv_lo = nullptr;
    }
    ASSERT_EQ(kc::bwd_delta(o.get(), dO.get(), static_cast<float*>(delta.get()), B, N, H, D, et, st,
                            split ? nullptr : f32),
              cudaSuccess);
    bool after_pass = false;
    bp.pdl_dq = pdl;
    for (int rep = 0; rep < kRepeat; ++rep)
      for (size_t pi = 0; pi < np; ++pi) {
        bp.tiles = tiles + plan.passes[pi].tile_begin;
        bp.num_tiles = int32_t(plan.passes[pi].tile_end - plan.passes[pi].tile_begin);
        bp.q_prefix = prefix + im.pass_prefix_offset[pi];
        bp.k_prefix = key_prefix + im.pass_prefix_offset[pi];
        bp.q_items = im.pass_blocks[pi];
        bp.k_items = im.pass_key_blocks[pi];
        bp.overwrite = overwrite && rep == 0 && pi == 0;
        bp.pdl = pdl && after_pass;
        bool launched = false;
        ASSERT_EQ(kc::bwd_launch(bp, st, &launched), cudaSuccess) << "pass " << pi;
        after_pass |= launched;
      }
    ASSERT_EQ(cudaStreamSynchronize(st), cudaSuccess);
    if (split) {
      *out = fetch(hi.get(), 3 * n * 2);
      const std::vector<uint8_t> l = fetch(lo.get(), 3 * n * 2);
      out->insert(out->end(), l.begin(), l.end());
    } else {
      *out = fetch(acc.get(), 3 * n * 4);
    }
  };
  for (int split = 1; split >= 0; --split) {
    SCOPED_TRACE(split ? "backward, dQ pass, split accumulators" : "backward, atomic dQ, float32 accumulators");
    std::vector<uint8_t> ref;
    backward(false, split == 1, &ref);
    if (HasFatalFailure()) return;
    {
      int64_t bad = 0;
      if (split) {
        std::vector<float> x(3 * n);
        kern::to_float(kind, reinterpret_cast<const uint16_t*>(ref.data()), 3 * n, x.data());
        for (float y : x) bad += !std::isfinite(y);
      } else {
        const float* x = reinterpret_cast<const float*>(ref.data());
        for (size_t i = 0; i < 3 * n; ++i) bad += !std::isfinite(x[i]);
      }
      ASSERT_EQ(bad, 0) << "non-finite gradients from the plain launches";
    }
    for (int run = 0; run < 3; ++run) {
      // Runs 0 and 1: pdl (Q/dO and K/V blocks through TMA where they can be); run 2:
      // plain launches with every block through the cp.async gather (BwdParams::tma):
      // the same bytes land in the same places, so the same bits.
      SCOPED_TRACE(run < 2 ? "pdl, run " + std::to_string(run) : std::string("plain, no TMA (the gather)"));
      std::vector<uint8_t> got;
      bp.tma = run < 2;
      backward(run < 2, split == 1, &got);
      bp.tma = true;
      if (HasFatalFailure()) return;
      ASSERT_EQ(got.size(), ref.size());
      if (split) {
        EXPECT_EQ(std::memcmp(got.data(), ref.data(), got.size()), 0) << "dQ/dK/dV (hi or lo) differ from the plain launches'";
        continue;
      }
      // dK, dV: the same bits; dQ: the same sums in another order.
      EXPECT_EQ(std::memcmp(got.data() + n * 4, ref.data() + n * 4, 2 * n * 4), 0) << "dK/dV differ from the plain launches'";
      const float* a = reinterpret_cast<const float*>(got.data());
      const float* r = reinterpret_cast<const float*>(ref.data());
      double num = 0, den = 0;
      int64_t bad = 0;
      for (size_t i = 0; i < n; ++i) {
        bad += !std::isfinite(a[i]);
        num += (double(a[i]) - r[i]) * (double(a[i]) - r[i]);
        den += double(r[i]) * r[i];
      }
      EXPECT_EQ(bad, 0) << "non-finite dQ";
      EXPECT_LE(std::sqrt(num / std::max(den, 1e-300)), 1e-5) << "dQ relative L2 against the plain launches'";
    }
  }
}

INSTANTIATE_TEST_SUITE_P(
    Sequences, KernelPdl,
    ::testing::Values(
        // Four passes (one per branch) over the same query rows; 8 forward work items per CTA
        // in the first pass, several waves of backward CTAs.
        PdlCase{"longnet4_16k_bf16_d128", {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}}, 16384, 8, 128, 1, false,
                DType::bf16},
        // Causal (backward CTAs with nothing to do return at once; forward items without keys),
        // a short-segment branch (packed tiles), batch 2 (grid y), f16, D = 64.
        PdlCase{"causal_mix_8k_f16_d64_batch2", {{64, 1}, {1024, 1}, {2048, 2}, {8192, 4}}, 8192, 4, 64, 2, true,
                DType::f16}),
    [](const ::testing::TestParamInfo<PdlCase>& info) { return info.param.name; });

TEST(KernelFwdApi, RejectsBadArgumentsBeforeAnyDeviceCall) {
  kc::FwdParams p;
  p.head_dim = 96;
  EXPECT_EQ(kc::fwd_launch(p, nullptr), cudaErrorInvalidValue);
  p.head_dim = 128;
  p.num_tiles = -1;
  EXPECT_EQ(kc::fwd_launch(p, nullptr), cudaErrorInvalidValue);
  p.num_tiles = 0;  // an empty pass does nothing
  EXPECT_EQ(kc::fwd_launch(p, nullptr), cudaSuccess);
  p.num_tiles = 1;
  p.num_blocks = 1;  // non-empty, but null pointers
  EXPECT_EQ(kc::fwd_launch(p, nullptr), cudaErrorInvalidValue);
}

}  // namespace
}  // namespace ringattn::test

namespace ringattn::test {
namespace {

// Inputs made on the GPU (dev::fill_synthetic, used by run and bench) have the
// bits of the host's: the same function of (seed, tensor, index), rounded the same way.
TEST(SynthFill, GpuMatchesHostBits) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 2, N = 1000, row0 = 250, rows = 500, H = 3, D = 64;
  for (DType dt : {DType::f32, DType::f16, DType::bf16}) {
    for (int tensor = 1; tensor <= 4; ++tensor) {
      const size_t bytes = size_t(B * rows * H * D) * dtype_size(dt);
      std::vector<char> host(bytes), back(bytes, 0);
      const uint64_t seed = fresh_seed();
      ASSERT_TRUE(dev::fill_synthetic(Backend::cpu, dt, seed, tensor, 100.0, B, N, row0, rows, H, D, host.data()).ok());
      DeviceBuffer d(bytes);
      ASSERT_EQ(d.status(), cudaSuccess);
      ASSERT_EQ(cudaMemset(d.get(), 0xFF, bytes), cudaSuccess);
      ASSERT_TRUE(dev::fill_synthetic(Backend::cuda, dt, seed, tensor, 100.0, B, N, row0, rows, H, D, d.get()).ok());
      ASSERT_EQ(cudaMemcpy(back.data(), d.get(), bytes, cudaMemcpyDeviceToHost), cudaSuccess);
      EXPECT_EQ(std::memcmp(host.data(), back.data(), bytes), 0) << to_string(dt) << " tensor " << tensor << " seed " << seed;
    }
  }
}

// The backward's small kernels: Delta (the 16-byte path at D = 64 and 128,
// the generic one at other head dims and at pointers not 16-byte aligned),
// with atomic dQ's float32 accumulator zeroed in the same pass (NaN-poisoned
// first, so a row it skips fails), and the float32 -> 16-bit conversion
// (quads, and pairs where n % 4 != 0 or dst is only 4-byte aligned; dst not
// 4-byte aligned is refused), against
// the host: Delta within float32 summation error, conversion bit-exact
// (round to nearest even). Row counts leave partial row groups.
TEST(BwdSmallKernels, DeltaZeroAndConvertMatchHost) {
  if (!have_device()) GTEST_SKIP() << "no CUDA device";
  const uint64_t seed = fresh_seed();
  std::mt19937_64 rng(seed);
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  for (DType dt : {DType::bf16, DType::f16}) {
    const auto kind = static_cast<kern::ElemKind>(dt);
    const kc::ElemType et = dt == DType::bf16 ? kc::ElemType::bf16 : kc::ElemType::f16;
    for (int64_t D : {128, 64, 96}) {
      for (int64_t shift : {0, 4}) {  // elements: 4 x 2 bytes leaves o and dout 8-byte aligned only
        const int64_t B = 2, L = 37, H = 3, rows = B * L * H, n = rows * D;
        std::vector<float> of(n), gf(n);
        for (auto& x : of) x = kern::round_to(kind, u(rng));
        for (auto& x : gf) x = kern::round_to(kind, u(rng));
        std::vector<uint16_t> oh(n + shift), gh(n + shift);
        kern::from_float(kind, of.data(), n, oh.data() + shift);
        kern::from_float(kind, gf.data(), n, gh.data() + shift);
        DeviceBuffer o((n + shift) * 2), g((n + shift) * 2), delta(rows * 4), zero(n * 4);
        ASSERT_EQ(o.upload(oh.data()), cudaSuccess);
        ASSERT_EQ(g.upload(gh.data()), cudaSuccess);
        ASSERT_EQ(cudaMemset(delta.get(), 0xFF, rows * 4), cudaSuccess);
        ASSERT_EQ(cudaMemset(zero.get(), 0xFF, n * 4), cudaSuccess);
        ASSERT_EQ(kc::bwd_delta(static_cast<uint16_t*>(o.get()) + shift, static_cast<uint16_t*>(g.get()) + shift,
                                static_cast<float*>(delta.get()), B, L, H, D, et, nullptr, static_cast<float*>(zero.get())),
                  cudaSuccess);
        std::vector<float> dh(rows), zh(n);
        ASSERT_EQ(cudaMemcpy(dh.data(), delta.get(), rows * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        ASSERT_EQ(cudaMemcpy(zh.data(), zero.get(), n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        for (int64_t r = 0; r < rows; ++r) {
          double s = 0, a = 0;
          for (int64_t d = 0; d < D; ++d) {
            s += double(of[r * D + d]) * gf[r * D + d];
            a += std::fabs(double(of[r * D + d]) * gf[r * D + d]);
          }
          // float32 sums of D products; NaN fails the bound
          ASSERT_LE(std::fabs(dh[r] - s), 1e-6 * a + 1e-30)
              << to_string(dt) << " D " << D << " shift " << shift << " row " << r << " seed " << seed;
        }
        for (int64_t i = 0; i < n; ++i)
          ASSERT_EQ(zh[i], 0.f) << "accumulator element " << i << " not zeroed, D " << D << " shift " << shift;
      }
    }
    for (int64_t n : {4 * 1001, 4 * 1001 + 2}) {
      for (int64_t shift : {0, 2}) {  // dst elements: 2 x 2 bytes leaves dst 4-byte aligned only (the pairs' path)
        std::vector<float> src(n);
        for (auto& x : src) x = u(rng) * 1000.f;
        std::vector<uint16_t> want(n), got(n);
        kern::from_float(kind, src.data(), n, want.data());
        DeviceBuffer s(n * 4), d((n + shift) * 2);
        ASSERT_EQ(s.upload(src.data()), cudaSuccess);
        ASSERT_EQ(cudaMemset(d.get(), 0xFF, (n + shift) * 2), cudaSuccess);
        ASSERT_EQ(kc::bwd_convert(static_cast<float*>(s.get()), static_cast<uint16_t*>(d.get()) + shift, n, et, nullptr),
                  cudaSuccess);
        ASSERT_EQ(cudaMemcpy(got.data(), static_cast<uint16_t*>(d.get()) + shift, n * 2, cudaMemcpyDeviceToHost),
                  cudaSuccess);
        EXPECT_EQ(std::memcmp(got.data(), want.data(), n * 2), 0) << to_string(dt) << " n " << n << " shift " << shift;
      }
      // dst not 4-byte aligned: refused before any launch (it was a misaligned-address fault)
      DeviceBuffer s(n * 4), d((n + 1) * 2);
      EXPECT_EQ(kc::bwd_convert(static_cast<float*>(s.get()), static_cast<uint16_t*>(d.get()) + 1, n, et, nullptr),
                cudaErrorInvalidValue);
    }
  }
}

}  // namespace
}  // namespace ringattn::test

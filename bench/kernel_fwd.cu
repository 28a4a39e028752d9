// Kernel development driver: times one single-rank forward (fwd_init_outputs
// and every pass of the plan, as the CUDA executor runs them) with device
// events, on the project's planner and nothing else of the runtime.
//
//   ringattn_kernel_fwd [--config NAME | --branches W:R,...] [--seq N] [--heads H]
//                       [--head-dim 64|128] [--dtype bf16|f16] [--causal] [--batch B]
//                       [--warmup 2] [--iters 20] [--bwd [--bwd-dq pass|atomic] [--bwd-dq-last] [--bwd-no-pingpong]
//                       [--bwd-acc f32|split]] [--no-pdl]
//
// --bwd: also the backward's launches, each timed apart (Delta, the dK/dV
// kernels of every pass, the dQ kernels, the float32 -> 16-bit conversion),
// with the FLOPs each really executes (dK/dV: S, dP, dV, dK = 4 GEMMs = 2x
// the forward's useful FLOPs; dQ: S, dP, dQ = 1.5x) and the useful backward
// TFLOP/s (SPEC: 2.5x the forward) of their sum. --bwd-acc f32 (default):
// dQ, dK, dV accumulate in float32, three conversions; split: as the CUDA
// executor runs them, the gradients plus bf16 remainders (atomic dQ: float32,
// one conversion), the first pass writing instead of adding where it holds
// every local row (Plan::first_pass_covers_local); the executor's memsets
// of the other case are not timed.
//
// As the executor (RINGATTN_PDL, default on), every pass launch after the
// first of a timed sequence is a programmatic dependent launch
// (FwdParams::pdl, BwdParams::pdl, pdl_dq), so it starts on the SMs the
// previous pass's tail leaves; --no-pdl launches them all plain (A/B). Work
// goes onto a stream of its own (blocking: ordered with the default stream's
// input fills and copies).
//
// Prints the median and minimum time of --iters runs after --warmup, the
// useful FLOPs (SPEC.md) and TFLOP/s. Inputs are random (generated on the
// device) and rotate between two sets where memory allows, so no run finds
// its inputs in L2. Correctness is tests/gpu/test_cuda_fwd.cu's job; this
// only checks that a sample of O is finite.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "ringattn/names.hpp"
#include "backend/env_choice.hpp"
#include "kernels/cuda/attention_bwd.hpp"
#include "kernels/cuda/attention_fwd.hpp"
#include "plan/plan.hpp"
#include "plan/plan_image.hpp"
#include "ringattn/config.hpp"

namespace kc = ringattn::kern::cuda;
using namespace ringattn;

#define CHECK_CUDA(expr)                                                                                  \
  do {                                                                                                   \
    cudaError_t e_ = (expr);                                                                             \
    if (e_ != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                      \
    }                                                                                                    \
  } while (0)

namespace {

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "ringattn_kernel_fwd: %s\nusage: ringattn_kernel_fwd [--config NAME | --branches W:R,...] [--seq N] "
               "[--heads H] [--head-dim 64|128] [--dtype bf16|f16] [--causal] [--batch B] [--warmup N] [--iters N]\n"
               "       [--bwd [--bwd-dq pass|atomic] [--bwd-dq-last] [--bwd-no-pingpong] [--bwd-acc f32|split]] [--no-pdl]\n",
               why.c_str());
  std::exit(2);
}

void check(const Status& s) {
  if (!s.ok()) usage(s.to_string());
}

// Uniform values in [-1, 1) from a hash of (seed, index), as 16-bit floats.
__global__ void fill_random(uint16_t* x, size_t n, uint32_t seed, bool bf16) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ uint32_t(i >> 32) * 40503u ^ seed * 0x9E3779B9u;
    h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
    const float f = float(h >> 8) * (2.f / 16777216.f) - 1.f;
    x[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16(f)) : __half_as_ushort(__float2half(f));
  }
}

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

}  // namespace

int main(int argc, char** argv) {
  Config c;
  c.backend = Backend::cuda;
  c.dtype = DType::bf16;
  c.heads = 16;
  c.head_dim = 128;
  std::string config = "longnet4", branches;
  Shape s;
  s.seq = 65536;
  int warmup = 2, iters = 20;
  bool bwd = false, dq_atomic = false, bwd_pp = true, dq_last = false, split = false, pdl = true;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--config") config = value();
    else if (a == "--branches") branches = value();
    else if (a == "--seq") s.seq = std::atoll(value().c_str());
    else if (a == "--heads") c.heads = std::atoll(value().c_str());
    else if (a == "--head-dim") c.head_dim = std::atoll(value().c_str());
    else if (a == "--dtype") check(parse_dtype(value(), &c.dtype));
    else if (a == "--causal") c.causal = true;
    else if (a == "--batch") s.batch = std::atoll(value().c_str());
    else if (a == "--warmup") warmup = std::max(0, std::atoi(value().c_str()));
    else if (a == "--iters") iters = std::max(1, std::atoi(value().c_str()));
    else if (a == "--bwd") bwd = true;
    else if (a == "--bwd-dq") {
      const std::string v = value();
      if (v != "pass" && v != "atomic") usage("--bwd-dq " + v + " (allowed: pass, atomic)");
      dq_atomic = v == "atomic";
    } else if (a == "--bwd-acc") {
      const std::string v = value();
      if (v != "f32" && v != "split") usage("--bwd-acc " + v + " (allowed: f32, split)");
      split = v == "split";
    } else if (a == "--bwd-dq-last") {
      dq_last = true;
    } else if (a == "--bwd-pingpong") {  // the default, as in the runtime
      bwd_pp = true;
    } else if (a == "--bwd-no-pingpong") {
      bwd_pp = false;
    } else if (a == "--no-pdl") {
      pdl = false;
    }
    else usage("unknown option " + a);
  }
  check(branches.empty() ? named_branches(config, s.seq, &c.branches) : parse_branches(branches, &c.branches));
  check(validate_config(c));
  check(validate_shape(c, s, 1));

  const kc::ElemType et = c.dtype == DType::bf16 ? kc::ElemType::bf16 : kc::ElemType::f16;
  const int64_t B = s.batch, N = s.seq, H = c.heads, D = c.head_dim;
  const size_t elems = size_t(B * N * H * D), rows = size_t(B * N * H);
  // RINGATTN_PACK_SEGMENTS=1 (default) | 0, as the runtime reads it (PlanOptions).
  PlanOptions popt;
  check(env_choice("RINGATTN_PACK_SEGMENTS", "1", "0", false, &popt.pack_segments));
  const Plan plan = build_plan(c, s, 1, 0, popt);
  const PlanImage im = build_plan_image(plan, kc::fwd_block_m(et, int(D)));
  const double flops = useful_flops(c, s);

  cudaDeviceProp prop{};
  int dev = 0;
  CHECK_CUDA(cudaGetDevice(&dev));
  CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  size_t free_bytes = 0, total_bytes = 0;
  CHECK_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int sets = 3 * elems * 2 * 2 + elems * 2 < free_bytes * 9 / 10 ? 2 : 1;
  std::vector<std::unique_ptr<DeviceBuffer>> qkv;
  for (int i = 0; i < 3 * sets; ++i) {
    qkv.push_back(std::make_unique<DeviceBuffer>(elems * 2));
    fill_random<<<prop.multiProcessorCount * 8, 256>>>(static_cast<uint16_t*>(qkv.back()->p), elems, 1234u + i,
                                                      et == kc::ElemType::bf16);
    CHECK_CUDA(cudaGetLastError());
  }
  DeviceBuffer o(elems * 2), lse(rows * 4), image(im.blob.size());
  CHECK_CUDA(cudaMemcpy(image.p, im.blob.data(), im.blob.size(), cudaMemcpyHostToDevice));
  const char* base = static_cast<const char*>(image.p);

  cudaStream_t st = nullptr;
  CHECK_CUDA(cudaStreamCreate(&st));
  kc::FwdParams fp = kc::fwd_shard_params(nullptr, o.p, static_cast<float*>(lse.p), B, N, H, D,
                                          float(1.0 / std::sqrt(double(D))), c.causal, et);
  auto forward = [&](int set) {
    fp.q = qkv[3 * set]->p;
    fp.src = ringattn::kern::KeySource{qkv[3 * set + 1]->p, qkv[3 * set + 2]->p, N * H * D, H * D, D, nullptr};
    CHECK_CUDA(kc::fwd_init_outputs(o.p, fp.lse, int64_t(elems), int64_t(rows), et, !plan.covers_all, st));
    bool after_pass = false;  // as the executor: pdl right behind another pass's launch only
    for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
      const Pass& ps = plan.passes[pi];
      fp.tiles = reinterpret_cast<const ringattn::kern::Tile*>(base + im.tiles_offset) + ps.tile_begin;
      fp.num_tiles = int32_t(ps.tile_end - ps.tile_begin);
      fp.tile_block_prefix = reinterpret_cast<const int32_t*>(base + im.prefix_offset) + im.pass_prefix_offset[pi];
      fp.num_blocks = im.pass_blocks[pi];
      fp.pdl = pdl && after_pass;
      bool launched = false;
      CHECK_CUDA(kc::fwd_launch(fp, st, &launched));
      after_pass |= launched;
    }
  };

  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  std::vector<float> ms;
  for (int it = 0; it < warmup + iters; ++it) {
    CHECK_CUDA(cudaEventRecord(e0, st));
    forward(it % sets);
    CHECK_CUDA(cudaEventRecord(e1, st));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
    if (it >= warmup) ms.push_back(t);
  }
  std::vector<uint16_t> sample(std::min<size_t>(elems, size_t(1) << 20));
  CHECK_CUDA(cudaMemcpy(sample.data(), o.p, sample.size() * 2, cudaMemcpyDeviceToHost));
  size_t bad = 0;
  for (uint16_t x : sample) bad += et == kc::ElemType::bf16 ? (x & 0x7f80u) == 0x7f80u : (x & 0x7c00u) == 0x7c00u;
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::printf("%-28s %9s %5s %4s %4s %6s %12s %10s %10s %9s\n", "branches", "tokens", "batch", "H", "D", "dtype",
              "useful_FLOP", "ms(med)", "ms(min)", "TFLOP/s");
  std::printf("%-28s %9lld %5lld %4lld %4lld %6s %12.3e %10.3f %10.3f %9.1f%s%s\n", format_branches(c.branches).c_str(),
              (long long)N, (long long)B, (long long)H, (long long)D, to_string(c.dtype), flops, med, ms.front(),
              flops / (med * 1e-3) / 1e12, c.causal ? "  causal" : "", bad ? "  NON-FINITE OUTPUT" : "");
  int64_t packed = 0;
  for (const kern::Tile& t : plan.tiles) packed += t.seg_len > 0;
  std::printf("plan: %zu tiles, %lld of them packed segments (RINGATTN_PACK_SEGMENTS=%d), %zu passes, %s\n",
              plan.tiles.size(), (long long)packed, popt.pack_segments ? 1 : 0, plan.passes.size(),
              pdl ? "pdl (passes after the first: programmatic dependent launch)" : "no pdl (--no-pdl)");
  if (bwd) {
    // The backward of the last forward (set (warmup + iters - 1) % sets), each launch kind timed apart.
    const int set = (warmup + iters - 1) % sets;
    DeviceBuffer dout(elems * 2), acc((split ? (dq_atomic ? 1 : 0) : 3) * elems * 4), delta(rows * 4), grads(elems * 2);
    // split: the gradients (hi) and their bf16 remainders (lo), dQ, dK, dV; acc then holds only atomic dQ.
    DeviceBuffer hi(split ? 3 * elems * 2 : 16), lo(split ? 3 * elems * 2 : 16);
    fill_random<<<prop.multiProcessorCount * 8, 256>>>(static_cast<uint16_t*>(dout.p), elems, 777u, et == kc::ElemType::bf16);
    CHECK_CUDA(cudaGetLastError());
    float* accs = static_cast<float*>(acc.p);
    kc::BwdParams bp = kc::bwd_shard_params(qkv[3 * set]->p, dout.p, static_cast<float*>(lse.p),
                                            static_cast<float*>(delta.p), B, N, H, D,
                                            float(1.0 / std::sqrt(double(D))), c.causal, et);
    bp.src = ringattn::kern::KeySource{qkv[3 * set + 1]->p, qkv[3 * set + 2]->p, N * H * D, H * D, D, nullptr};
    bp.dq_acc = accs;
    bp.dk_acc = split ? nullptr : accs + elems;
    bp.dv_acc = split ? nullptr : accs + 2 * elems;
    if (split) {
      uint16_t* h = static_cast<uint16_t*>(hi.p);
      uint16_t* l = static_cast<uint16_t*>(lo.p);
      bp.dk_hi = h + elems;
      bp.dk_lo = l + elems;
      bp.dv_hi = h + 2 * elems;
      bp.dv_lo = l + 2 * elems;
      if (!dq_atomic) {
        bp.dq_acc = nullptr;
        bp.dq_hi = h;
        bp.dq_lo = l;
      }
    }
    bp.dq_atomic = dq_atomic;
    bp.pingpong = bwd_pp;
    bp.dq_first = !dq_last;
    bp.pdl_dq = pdl;  // only used where one call launches both kernels (parts 3)
    auto passes = [&](int parts) {
      bp.parts = parts;
      bool after_pass = false;
      for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
        const Pass& ps = plan.passes[pi];
        bp.tiles = reinterpret_cast<const ringattn::kern::Tile*>(base + im.tiles_offset) + ps.tile_begin;
        bp.num_tiles = int32_t(ps.tile_end - ps.tile_begin);
        bp.q_prefix = reinterpret_cast<const int32_t*>(base + im.prefix_offset) + im.pass_prefix_offset[pi];
        bp.k_prefix = reinterpret_cast<const int32_t*>(base + im.key_prefix_offset) + im.pass_prefix_offset[pi];
        bp.q_items = im.pass_blocks[pi];
        bp.k_items = im.pass_key_blocks[pi];
        bp.overwrite = split && pi == 0 && plan.first_pass_covers_local;
        bp.pdl = pdl && after_pass;
        bool launched = false;
        CHECK_CUDA(kc::bwd_launch(bp, st, &launched));
        after_pass |= launched;
      }
    };
    auto median_ms = [&](auto&& f) {
      std::vector<float> t;
      for (int it = 0; it < warmup + iters; ++it) {
        CHECK_CUDA(cudaEventRecord(e0, st));
        f();
        CHECK_CUDA(cudaEventRecord(e1, st));
        CHECK_CUDA(cudaEventSynchronize(e1));
        float x = 0;
        CHECK_CUDA(cudaEventElapsedTime(&x, e0, e1));
        if (it >= warmup) t.push_back(x);
      }
      std::sort(t.begin(), t.end());
      return double(t[t.size() / 2]);
    };
    CHECK_CUDA(cudaMemset(acc.p, 0, std::max<size_t>((split ? (dq_atomic ? 1 : 0) : 3) * elems * 4, 16)));
    if (split) {
      CHECK_CUDA(cudaMemset(hi.p, 0, 3 * elems * 2));
      CHECK_CUDA(cudaMemset(lo.p, 0, 3 * elems * 2));
    }
    const int converts = !split ? 3 : dq_atomic ? 1 : 0;  // float32 tensors the run ends with
    const double t_delta = median_ms([&] {
      // atomic dQ: its float32 accumulator is zeroed in the same pass, as the runtime does
      CHECK_CUDA(kc::bwd_delta(o.p, dout.p, static_cast<float*>(delta.p), B, N, H, D, et, st, dq_atomic ? accs : nullptr));
    });
    const double t_dkdv = median_ms([&] { passes(1); });
    const double t_dq = median_ms([&] { passes(2); });
    const double t_conv = median_ms([&] {
      for (int g = 0; g < converts; ++g) CHECK_CUDA(kc::bwd_convert(accs + g * elems, grads.p, int64_t(elems), et, st));
    });
    const double total = t_delta + t_dkdv + t_dq + t_conv;
    std::printf("backward (%s kernels, dQ %s, %s accumulators): delta %.3f ms, dK/dV %.3f ms (%.1f TFLOP/s executed), dQ %.3f ms (%.1f TFLOP/s executed), "
                "convert %.3f ms; total %.3f ms, useful %.3e FLOP, %.1f TFLOP/s useful\n",
                bwd_pp && !dq_atomic ? "ping-pong" : "no ping-pong", dq_atomic ? (dq_last ? "atomic, inside dK/dV, after dK" : "atomic, inside dK/dV") : "pass",
                split ? (plan.first_pass_covers_local ? "split, first pass writes" : "split") : "float32", t_delta, t_dkdv, 2 * flops / (t_dkdv * 1e-3) / 1e12, t_dq,
                1.5 * flops / (t_dq * 1e-3) / 1e12, t_conv, total, 2.5 * flops, 2.5 * flops / (total * 1e-3) / 1e12);
  }
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  CHECK_CUDA(cudaStreamDestroy(st));
  return bad ? 1 : 0;
}

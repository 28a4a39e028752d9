// Standalone driver for the fused dilated flash-attention forward.
//   fwd_main test  [variant]     correctness suite against the float64 reference
//   fwd_main small [variant]     one small case (for compute-sanitizer)
//   fwd_main bench [variant...]  the issue-4 benchmark table
// variant: auto | mma | wgmma | pipe. Exit code non-zero on any failure.
#include <algorithm>
#include <cstdlib>
#include <chrono>
#include "fwd_runner.hpp"

using namespace ringattn::kern;
using namespace ringattn::kern::cuda;
using namespace ringattn::kern::cuda::harness;

static FwdVariant parse_variant(const std::string& s) {
  if (s == "mma") return FwdVariant::mma_sync;
  if (s == "wgmma") return FwdVariant::wgmma;
  if (s == "pipe") return FwdVariant::wgmma_pipelined;
  if (s == "ws") return FwdVariant::wgmma_ws;
  if (s == "ws3") return FwdVariant::wgmma_ws_3stage;
  return FwdVariant::automatic;
}
static const char* variant_name(FwdVariant v) {
  return v == FwdVariant::mma_sync ? "mma" : v == FwdVariant::wgmma ? "wgmma"
         : v == FwdVariant::wgmma_pipelined ? "pipe" : v == FwdVariant::wgmma_ws ? "ws"
         : v == FwdVariant::wgmma_ws_3stage ? "ws3" : "auto";
}

static int run_tests(FwdVariant v, bool small_only) {
  auto cases = test_cases();
  if (small_only) {
    Case c; c.name = "sanitizer small"; c.br = {{300, 1}, {700, 3}}; c.N = 1000; c.H = 2;
    c.causal = true; c.opt.split_keys = true; c.opt.split_queries = true;
    cases = {c};
    Case d = c; d.name = "sanitizer small packed f16 d64"; d.bf16 = false; d.D = 64; d.packed = true;
    d.causal = false; cases.push_back(d);
  }
  std::printf("%-46s %-6s %10s %10s %6s %6s %5s %s\n", "case", "path", "O relL2", "LSE abs",
              "nonfin", "empty!", "ident", "result");
  int failed = 0;
  uint64_t seed = uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
  for (const Case& c : cases) {
    const CaseResult r = run_case_any(c, v, seed++);
    std::printf("%-46s %-6s %10.3e %10.3e %6lld %6lld %5s %s\n", c.name.c_str(), variant_name(v),
                r.err.o_rel_l2, r.err.lse_max_abs, (long long)r.err.nonfinite,
                (long long)r.err.empty_wrong, r.identical ? "yes" : "NO", r.pass ? "ok" : "FAILED");
    failed += !r.pass;
  }
  std::printf("%s: %d of %zu cases failed (seed base printed above is time-based)\n",
              failed ? "FAILED" : "OK", failed, cases.size());
  return failed ? 1 : 0;
}

// Roughly normal values (sum of 4 hashed uniforms, unit variance).
__global__ void fill_random(__nv_bfloat16* x, size_t n, uint32_t seed) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += size_t(gridDim.x) * blockDim.x) {
    float acc = 0.f;
    uint32_t h = uint32_t(i) * 2654435761u ^ uint32_t(i >> 32) * 40503u ^ seed * 0x9E3779B9u;
    for (int j = 0; j < 4; ++j) {
      h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
      acc += float(h >> 8) * (1.f / 16777216.f);
    }
    x[i] = __float2bfloat16((acc - 2.f) * 1.7320508f);
  }
}

struct BenchCase {
  const char* name;
  std::string cfg;
  int64_t N;
  bool causal;
};

static int run_bench(const std::vector<FwdVariant>& variants) {
  const int H = 16, D = 128, B = 1;
  const std::vector<BenchCase> cases = {
      {"longnet4 64k", "longnet4", 65536, false},
      {"dense 16k", "dense", 16384, false},
      {"longnet4 64k causal", "longnet4", 65536, true},
      {"dense 16k causal", "dense", 16384, true},
      {"longnet4 1M", "longnet4", 1048576, false},
      {"longnet4 1M causal", "longnet4", 1048576, true},
  };
  cudaDeviceProp prop{};
  int dev = 0;
  RA_CUDA_CHECK(cudaGetDevice(&dev));
  RA_CUDA_CHECK(cudaGetDeviceProperties(&prop, dev));
  std::printf("device: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount,
              prop.l2CacheSize >> 20);
  std::printf("%-22s %-6s %9s %10s %9s %9s %9s %10s\n", "case", "path", "tokens", "useful_FLOP",
              "ms(med)", "ms(min)", "TFLOP/s", "peak_GiB");
  // BENCH_CASES="name1,name2": only those cases (exact names); BENCH_ITERS: timed runs.
  const char* only = std::getenv("BENCH_CASES");
  const char* iters_env = std::getenv("BENCH_ITERS");
  for (const BenchCase& bc : cases) {
    if (only && *only) {
      const std::string list = std::string(",") + only + ",";
      if (list.find(std::string(",") + bc.name + ",") == std::string::npos) continue;
    }
    const auto br = named_config(bc.cfg, bc.N);
    const size_t elems = size_t(B) * bc.N * H * D;
    const size_t rows = size_t(B) * bc.N * H;
    const double flops = useful_flops(br, bc.N, H, D, bc.causal, HeadRule::interleaved);
    // Rotate input sets so that no run finds its inputs in the 50 MB L2:
    // every set here is already >= 200 MB; two sets where memory allows.
    const int sets = elems * 2 * 3 * 2 < (size_t(24) << 30) ? 2 : 1;
    size_t free0 = 0, total = 0;
    RA_CUDA_CHECK(cudaMemGetInfo(&free0, &total));
    std::vector<std::unique_ptr<DevBuf<__nv_bfloat16>>> q, k, v;
    for (int s = 0; s < sets; ++s) {
      q.push_back(std::make_unique<DevBuf<__nv_bfloat16>>(elems));
      k.push_back(std::make_unique<DevBuf<__nv_bfloat16>>(elems));
      v.push_back(std::make_unique<DevBuf<__nv_bfloat16>>(elems));
    }
    DevBuf<__nv_bfloat16> o(elems);
    DevBuf<float> lse(rows);
    // Random (not zero) inputs, generated on the device (host RNG is far too
    // slow for 3 x 2^31 elements at 1M tokens).
    for (int s = 0; s < sets; ++s) {
      uint32_t seed = 1234u + 3u * uint32_t(s);
      for (auto* buf : {q[s]->p, k[s]->p, v[s]->p}) {
        fill_random<<<prop.multiProcessorCount * 8, 256>>>(buf, elems, seed++);
        RA_CUDA_CHECK(cudaGetLastError());
      }
    }
    RA_CUDA_CHECK(cudaDeviceSynchronize());
    auto passes = make_passes(br, bc.N, H, HeadRule::interleaved, TileOpts{});
    DevicePlan plan = upload_plan(passes, br[0].r == 1);
    size_t free1 = 0;
    RA_CUDA_CHECK(cudaMemGetInfo(&free1, &total));
    const double peak_gib = double(free0 - free1) / (1 << 30);
    for (FwdVariant var : variants) {
      FwdParams base;
      base.o = o.p; base.lse = lse.p;
      base.q_batch_stride = bc.N * H * D; base.q_row_stride = H * D;
      base.lse_batch_stride = bc.N * H; base.lse_row_stride = H;
      base.src.batch_stride = base.q_batch_stride; base.src.row_stride = H * D;
      base.src.head_stride = D;
      base.batch = B; base.heads = H; base.head_dim = D;
      base.scale = float(1.0 / std::sqrt(double(D)));
      base.causal = bc.causal; base.dtype = ElemType::bf16; base.variant = var;
      cudaEvent_t e0, e1;
      RA_CUDA_CHECK(cudaEventCreate(&e0));
      RA_CUDA_CHECK(cudaEventCreate(&e1));
      const int warm = 2, iters = iters_env ? std::max(1, std::atoi(iters_env))
                                            : bc.N >= (1 << 20) ? 10 : 20;
      std::vector<float> ms;
      for (int it = 0; it < warm + iters; ++it) {
        const int s = it % sets;
        base.q = q[s]->p; base.src.k = k[s]->p; base.src.v = v[s]->p;
        RA_CUDA_CHECK(cudaEventRecord(e0, 0));
        RA_CUDA_CHECK(run_forward(plan, base, int64_t(elems), int64_t(rows), 0));
        RA_CUDA_CHECK(cudaEventRecord(e1, 0));
        RA_CUDA_CHECK(cudaEventSynchronize(e1));
        float t = 0;
        RA_CUDA_CHECK(cudaEventElapsedTime(&t, e0, e1));
        if (it >= warm) ms.push_back(t);
      }
      RA_CUDA_CHECK(cudaGetLastError());
      // Sanity: no NaN in a sample of the output.
      std::vector<__nv_bfloat16> sample(std::min<size_t>(elems, 1 << 20));
      RA_CUDA_CHECK(cudaMemcpy(sample.data(), o.p, sample.size() * 2, cudaMemcpyDeviceToHost));
      size_t bad = 0;
      for (auto x : sample) bad += !std::isfinite(__bfloat162float(x));
      std::sort(ms.begin(), ms.end());
      const double med = ms[ms.size() / 2];
      std::printf("%-22s %-6s %9lld %10.3e %9.3f %9.3f %9.1f %10.2f%s\n", bc.name, variant_name(var),
                  (long long)bc.N, flops, med, ms.front(), flops / (med * 1e-3) / 1e12, peak_gib,
                  bad ? "  NONFINITE!" : "");
      std::fflush(stdout);
      RA_CUDA_CHECK(cudaEventDestroy(e0));
      RA_CUDA_CHECK(cudaEventDestroy(e1));
    }
  }
  return 0;
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "test";
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess || n == 0) {
    std::printf("no CUDA device: nothing to run\n");
    return 0;
  }
  if (mode == "test" || mode == "small") {
    int rc = 0;
    const std::vector<std::string> vs = argc > 2 ? std::vector<std::string>(argv + 2, argv + argc)
                                                 : std::vector<std::string>{"mma", "wgmma", "pipe"};
    for (const auto& s : vs) rc |= run_tests(parse_variant(s), mode == "small");
    return rc;
  }
  if (mode == "bench") {
    std::vector<FwdVariant> vs;
    for (int i = 2; i < argc; ++i) vs.push_back(parse_variant(argv[i]));
    if (vs.empty()) vs = {FwdVariant::mma_sync, FwdVariant::wgmma, FwdVariant::wgmma_pipelined};
    return run_bench(vs);
  }
  std::fprintf(stderr, "usage: %s test|small|bench [mma|wgmma|auto ...]\n", argv[0]);
  return 2;
}

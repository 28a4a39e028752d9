// A training-like loop whose sequence length changes every step (cycling over
// five lengths, as with length-bucketed batches). Each step announces the
// next step's shape with prefetch(), so its plan is ready before it is needed.
// Prints time per step and the pattern-cache counters; then the warm time of
// each length (the same length repeated, a device hit every call), each
// steady-state step (after the first cycle) against the warm step of its
// length, the steady-state hit rate and the lookup cost per forward.
//   mpirun -np 2 ./build/cpu/examples/ringattn_varlen [--backend cuda] [--steps 20] [--no-prefetch] [--cache off]
//       [--long] [--promote-after N] [--cache-device-mb N] [--warm N]
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ringattn/device.hpp"
#include "ringattn/ringattn.hpp"

using namespace ringattn;

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  Config cfg;
  cfg.branches = {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}};
  cfg.heads = 4;
  cfg.head_dim = 64;
  int steps = 20, warm = 10;
  bool prefetch = true;
  std::vector<int64_t> lengths = {8192, 12288, 16384, 10240, 14336};
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--backend" && i + 1 < argc) {
      if (!parse_backend(argv[++i], &cfg.backend).ok()) MPI_Abort(MPI_COMM_WORLD, 2);
    } else if (a == "--steps" && i + 1 < argc) {
      steps = std::atoi(argv[++i]);
    } else if (a == "--no-prefetch") {
      prefetch = false;
    } else if (a == "--cache" && i + 1 < argc) {
      cfg.cache.enabled = std::string(argv[++i]) != "off";
    } else if (a == "--promote-after" && i + 1 < argc) {
      cfg.cache.promote_after_hits = std::atoi(argv[++i]);
    } else if (a == "--cache-device-mb" && i + 1 < argc) {
      cfg.cache.device_budget_bytes = int64_t(std::atoll(argv[++i])) << 20;
    } else if (a == "--warm" && i + 1 < argc) {
      warm = std::atoi(argv[++i]);
    } else if (a == "--long") {  // the 24k..64k cycle with GPU-sized heads
      lengths = {24576, 32768, 40960, 49152, 65536};
      cfg.heads = 16;
      cfg.head_dim = 128;
    } else {
      if (rank == 0) std::fprintf(stderr, "usage: ringattn_varlen [--backend cpu|cuda] [--steps N] [--no-prefetch] [--cache on|off] [--long] [--promote-after N] [--cache-device-mb N] [--warm N]\n");
      MPI_Finalize();
      return a == "--help" ? 0 : 2;
    }
  }
  if (cfg.backend == Backend::cuda) {
    cfg.dtype = DType::bf16;
    cfg.transport = world > 1 ? Transport::mpi : Transport::nccl;
    if (!dev::select_device(rank).ok()) MPI_Abort(MPI_COMM_WORLD, 1);
  }
  for (int64_t& n : lengths) n = n / world * world;
  std::unique_ptr<Context> ctx;
  Status st = Context::create(cfg, MPI_COMM_WORLD, &ctx);
  if (!st.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, st.to_string().c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  const int64_t max_n = *std::max_element(lengths.begin(), lengths.end());
  const size_t es = dtype_size(cfg.dtype);
  const size_t elems = size_t(max_n / world * cfg.heads * cfg.head_dim);
  void *q, *k, *v, *o, *lse;
  std::vector<char> host(elems * es, 0x11);  // any finite values
  for (void** p : {&q, &k, &v, &o}) {
    if (!dev::alloc(cfg.backend, elems * es, p).ok()) MPI_Abort(MPI_COMM_WORLD, 1);
  }
  for (void* p : {q, k, v}) dev::upload(cfg.backend, p, host.data(), host.size());
  if (!dev::alloc(cfg.backend, size_t(max_n / world * cfg.heads) * 4, &lse).ok()) MPI_Abort(MPI_COMM_WORLD, 1);
  dev::Timer timer(cfg.backend);
  auto step = [&](const Shape& shape, double* ms) {
    MPI_Barrier(MPI_COMM_WORLD);
    timer.start();
    Status fst = ctx->forward(shape, q, k, v, o, static_cast<float*>(lse));
    timer.stop(ms);
    if (!fst.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", rank, fst.to_string().c_str());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Allreduce(MPI_IN_PLACE, ms, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  };
  const size_t nlen = lengths.size();
  std::vector<double> step_ms(static_cast<size_t>(steps)), plan_ms(static_cast<size_t>(steps));
  CacheStats after_first_cycle;
  if (rank == 0) std::printf("# step   tokens    ms   plan_ms\n");
  for (int s = 0; s < steps; ++s) {
    Shape shape{1, lengths[size_t(s) % nlen]};
    if (prefetch) ctx->prefetch(Shape{1, lengths[size_t(s + 1) % nlen]});
    double ms = 0;
    step(shape, &ms);
    step_ms[size_t(s)] = ms;
    double pm = ctx->stats().last_plan_ms;
    MPI_Allreduce(MPI_IN_PLACE, &pm, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    plan_ms[size_t(s)] = pm;
    if (size_t(s) + 1 == nlen) after_first_cycle = ctx->stats().cache;
    if (rank == 0) std::printf("%6d %8lld %8.3f %8.3f\n", s, (long long)shape.seq, ms, pm);
  }
  const CacheStats c = ctx->stats().cache;
  // Warm step of each length: the same length again and again (median).
  std::vector<double> warm_ms(nlen, 0.0);
  double warm_spread = 0;  // noise floor: slowest warm run / median warm run, over lengths
  for (size_t l = 0; l < nlen && warm > 0; ++l) {
    std::vector<double> t;
    for (int i = 0; i < warm + 1; ++i) {
      double ms = 0;
      step(Shape{1, lengths[l]}, &ms);
      if (i > 0) t.push_back(ms);
    }
    std::sort(t.begin(), t.end());
    warm_ms[l] = t[t.size() / 2];
    warm_spread = std::max(warm_spread, t.back() / warm_ms[l]);
  }
  if (rank == 0) {
    std::printf("# cache: device hits %lld, host hits %lld, misses %lld, promotions %lld, plans held %lld (on device %lld), "
                "device bytes %lld of %lld, build %.2f ms, lookup %.3f ms, prefetches %lld, prefetch waits %lld, "
                "copies %lld, staged %lld\n",
                (long long)c.device_hits, (long long)c.host_hits, (long long)c.misses, (long long)c.promotions,
                (long long)c.plans_held, (long long)c.device_plans, (long long)c.device_bytes,
                (long long)cfg.cache.device_budget_bytes, c.build_ms, c.lookup_ms, (long long)c.prefetches,
                (long long)c.prefetch_waits, (long long)c.copies, (long long)c.staged);
    if (size_t(steps) > nlen) {
      const int64_t lookups = (c.device_hits + c.host_hits + c.misses) -
                              (after_first_cycle.device_hits + after_first_cycle.host_hits + after_first_cycle.misses);
      const int64_t dev_hits = c.device_hits - after_first_cycle.device_hits;
      const int64_t hits = dev_hits + c.host_hits - after_first_cycle.host_hits;
      double worst = 0, sum_plan = 0, sum_ms = 0;
      std::vector<double> ratios;
      for (size_t s = nlen; s < size_t(steps); ++s) {
        if (warm_ms[s % nlen] > 0) {
          worst = std::max(worst, step_ms[s] / warm_ms[s % nlen]);
          ratios.push_back(step_ms[s] / warm_ms[s % nlen]);
        }
        sum_plan += plan_ms[s];
        sum_ms += step_ms[s];
      }
      const double n = double(size_t(steps) - nlen);
      std::printf("# steady state (steps %zu..%d): hit rate %.1f%% (device %.1f%%), plan lookup %.2f us per forward "
                  "(%.3f%% of the step), worst step / warm step of its length %.3f\n",
                  nlen, steps - 1, lookups ? 100.0 * double(hits) / double(lookups) : 0.0,
                  lookups ? 100.0 * double(dev_hits) / double(lookups) : 0.0, 1e3 * sum_plan / n,
                  100.0 * sum_plan / sum_ms, worst);
      std::sort(ratios.begin(), ratios.end());
      std::printf("# step / warm step of its length: median %.3f, worst %.3f; noise floor (slowest / median warm run "
                  "of one length, no length change at all) %.3f\n",
                  ratios.empty() ? 0.0 : ratios[ratios.size() / 2], worst, warm_spread);
    }
    std::printf("# warm ms per length:");
    for (size_t l = 0; l < nlen; ++l) std::printf(" %lld:%.3f", (long long)lengths[l], warm_ms[l]);
    std::printf("\n");
  }
  for (void* p : {q, k, v, o, lse}) dev::release(cfg.backend, p);
  ctx.reset();
  MPI_Finalize();
  return 0;
}

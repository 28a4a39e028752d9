// A training-like loop whose sequence length changes every step (cycling over
// five lengths, as with length-bucketed batches). Each step announces the
// next step's shape with prefetch(), so its plan is ready before it is needed.
// Prints time per step and the pattern-cache counters.
//   mpirun -np 2 ./build/cpu/examples/ringattn_varlen [--backend cuda] [--steps 20] [--no-prefetch] [--cache off]
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
  int steps = 20;
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
    } else if (a == "--long") {  // the 24k..64k cycle with GPU-sized heads
      lengths = {24576, 32768, 40960, 49152, 65536};
      cfg.heads = 16;
      cfg.head_dim = 128;
    } else {
      if (rank == 0) std::fprintf(stderr, "usage: ringattn_varlen [--backend cpu|cuda] [--steps N] [--no-prefetch] [--cache on|off] [--long]\n");
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
  if (rank == 0) std::printf("# step   tokens    ms   plan_ms\n");
  for (int s = 0; s < steps; ++s) {
    Shape shape{1, lengths[size_t(s) % lengths.size()]};
    if (prefetch) ctx->prefetch(Shape{1, lengths[size_t(s + 1) % lengths.size()]});
    MPI_Barrier(MPI_COMM_WORLD);
    timer.start();
    st = ctx->forward(shape, q, k, v, o, static_cast<float*>(lse));
    double ms = 0;
    timer.stop(&ms);
    if (!st.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", rank, st.to_string().c_str());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
    MPI_Allreduce(MPI_IN_PLACE, &ms, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    if (rank == 0) std::printf("%6d %8lld %8.3f %8.3f\n", s, (long long)shape.seq, ms, ctx->stats().last_plan_ms);
  }
  const CacheStats c = ctx->stats().cache;
  if (rank == 0)
    std::printf("# cache: device hits %lld, host hits %lld, misses %lld, plans held %lld, build %.2f ms, lookup %.3f ms\n",
                (long long)c.device_hits, (long long)c.host_hits, (long long)c.misses, (long long)c.plans_held,
                c.build_ms, c.lookup_ms);
  for (void* p : {q, k, v, o, lse}) dev::release(cfg.backend, p);
  ctx.reset();
  MPI_Finalize();
  return 0;
}

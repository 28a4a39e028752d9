// The smallest complete use of ringattn: every rank fills its shard of Q, K
// and V, runs one distributed forward, and prints a checksum of its output.
//   mpirun -np 2 ./build/cpu/examples/ringattn_minimal
#include <mpi.h>

#include <cmath>
#include <cstdio>
#include <memory>
#include <vector>

#include "ringattn/ringattn.hpp"

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);

  ringattn::Config cfg;
  cfg.branches = {{512, 1}, {1024, 2}, {2048, 4}};  // (w, r) pairs, LongNet style
  cfg.heads = 4;
  cfg.head_dim = 32;
  cfg.dtype = ringattn::DType::f32;
  cfg.backend = ringattn::Backend::cpu;

  std::unique_ptr<ringattn::Context> ctx;
  ringattn::Status st = ringattn::Context::create(cfg, MPI_COMM_WORLD, &ctx);
  if (!st.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, st.to_string().c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }

  const ringattn::Shape shape{1, 4096 * world};  // batch 1, N tokens in total
  const int64_t L = shape.seq / world;            // this rank's tokens
  const size_t n = size_t(L * cfg.heads * cfg.head_dim);
  std::vector<float> q(n), k(n), v(n), o(n), lse(size_t(L * cfg.heads));
  for (size_t i = 0; i < n; ++i) {
    const double x = double(i + size_t(rank) * n);
    q[i] = float(std::sin(0.01 * x));
    k[i] = float(std::cos(0.013 * x));
    v[i] = float(std::sin(0.007 * x + 1.0));
  }
  st = ctx->forward(shape, q.data(), k.data(), v.data(), o.data(), lse.data());
  if (!st.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, st.to_string().c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  double sum = 0;
  for (float x : o) sum += x;
  const ringattn::Stats& s = ctx->stats();
  std::printf("rank %d: tokens [%lld, %lld), sum(O) = %.6f, bytes sent %lld (ideal %lld)\n", rank,
              (long long)(rank * L), (long long)((rank + 1) * L), sum, (long long)s.last_bytes_sent,
              (long long)s.last_bytes_ideal);
  ctx.reset();
  MPI_Finalize();
  return 0;
}

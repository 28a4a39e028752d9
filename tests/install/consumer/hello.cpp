// A C++ program outside the ringattn tree, built against the installed
// package with CMake (find_package(ringattn), see CMakeLists.txt here). One
// distributed forward with segments longer than a shard; prints the bytes
// the ring moved (Context::stats) and checks them against the ideal.
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
  cfg.branches = {{256, 1}, {1024, 2}, {2048, 4}};  // 512 tokens per rank: the last two span ranks
  cfg.heads = 2;
  cfg.head_dim = 16;
  std::unique_ptr<ringattn::Context> ctx;
  ringattn::Status st = ringattn::Context::create(cfg, MPI_COMM_WORLD, &ctx);
  const ringattn::Shape shape{1, 512 * int64_t(world)};
  const size_t n = size_t(512 * cfg.heads * cfg.head_dim);
  std::vector<float> q(n), k(n), v(n), o(n), lse(size_t(512 * cfg.heads));
  for (size_t i = 0; i < n; ++i) {
    const double x = double(i + size_t(rank) * n);
    q[i] = float(std::sin(0.011 * x));
    k[i] = float(std::cos(0.017 * x));
    v[i] = float(std::sin(0.005 * x + 1.0));
  }
  if (st.ok()) st = ctx->forward(shape, q.data(), k.data(), v.data(), o.data(), lse.data());
  if (st.ok()) st = ctx->synchronize();
  if (!st.ok()) {
    std::fprintf(stderr, "hello_cxx: rank %d: %s\n", rank, st.to_string().c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  bool finite = true;
  for (float x : o) finite = finite && std::isfinite(x);
  const ringattn::Stats& s = ctx->stats();
  const bool ok = finite && s.last_bytes_sent == s.last_bytes_ideal && (world == 1 || s.last_bytes_sent > 0);
  std::printf("hello_cxx: ringattn %s, rank %d of %d: bytes sent %lld (ideal %lld), received %lld, outputs %s\n",
              ringattn::version(), rank, world, (long long)s.last_bytes_sent, (long long)s.last_bytes_ideal,
              (long long)s.last_bytes_received, finite ? "finite" : "NOT FINITE");
  std::fflush(stdout);
  ctx.reset();
  int bad = ok ? 0 : 1, total = 0;
  MPI_Allreduce(&bad, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) std::printf("hello_cxx: %d ranks: %s\n", world, total ? "FAILED" : "OK");
  MPI_Finalize();
  return total ? 1 : 0;
}

// The smallest complete use of ringattn: every rank fills its shard of Q, K
// and V, runs one distributed forward, and reports what the ring moved.
//
//   ./launch/ringattn -np 2 --bin minimal        (as root or not; any -np)
//
// The branches are SPEC's `geometric` pattern scaled down, (512*2^j, 2^j)
// while the segment fits the sequence, with 1024 tokens per rank: every
// segment longer than a shard spans ranks, so each rank needs some K/V rows
// of its peers (only the dilated rows its heads select) and the ring moves
// them. Rank 0 prints each rank's bytes sent next to the ideal (Context::stats).
#include <mpi.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <vector>

#include "ringattn/ringattn.hpp"

static void check(const ringattn::Status& st, int rank) {
  if (st.ok()) return;
  std::fprintf(stderr, "minimal: rank %d: %s\n", rank, st.to_string().c_str());
  MPI_Abort(MPI_COMM_WORLD, 1);
}

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);

  const int64_t L = 1024;                            // tokens per rank
  const ringattn::Shape shape{1, L * world};         // batch 1, N tokens in total
  ringattn::Config cfg;
  for (int64_t w = 512, r = 1; w <= shape.seq; w *= 2, r *= 2) cfg.branches.push_back({w, r});  // (w, r)
  cfg.heads = 4;
  cfg.head_dim = 32;
  cfg.dtype = ringattn::DType::f32;
  cfg.backend = ringattn::Backend::cpu;  // host buffers; Backend::cuda takes device buffers

  std::unique_ptr<ringattn::Context> ctx;
  check(ringattn::Context::create(cfg, MPI_COMM_WORLD, &ctx), rank);  // collective

  // This rank's shard [rank*L, (rank+1)*L) of B x N x H x D tensors.
  const size_t n = size_t(L * cfg.heads * cfg.head_dim);
  std::vector<float> q(n), k(n), v(n), o(n), lse(size_t(L * cfg.heads));
  for (size_t i = 0; i < n; ++i) {  // any values; these depend on the global index only
    const uint64_t x = (uint64_t(rank) * n + i) * 0x9E3779B97F4A7C15ull;
    q[i] = float(x >> 40) / float(1 << 24) - 0.5f;
    k[i] = float((x >> 16) & 0xffffff) / float(1 << 24) - 0.5f;
    v[i] = float(i % 7) - 3.0f;
  }
  check(ctx->forward(shape, q.data(), k.data(), v.data(), o.data(), lse.data()), rank);  // collective
  check(ctx->synchronize(), rank);  // needed before reading O on the cuda backend; a no-op on cpu

  double sum = 0;
  for (float x : o) sum += x;
  const ringattn::Stats& s = ctx->stats();
  long long mine[4] = {s.last_bytes_sent, s.last_bytes_ideal, s.last_bytes_received, 0};
  std::vector<long long> all(size_t(4 * world));
  std::vector<double> sums(static_cast<size_t>(world));
  MPI_Gather(mine, 4, MPI_LONG_LONG, all.data(), 4, MPI_LONG_LONG, 0, MPI_COMM_WORLD);
  MPI_Gather(&sum, 1, MPI_DOUBLE, sums.data(), 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  if (rank == 0) {
    std::printf("minimal: %d ranks, N = %lld tokens (%lld per rank), H = %lld, D = %lld, f32, cpu backend\n", world,
                (long long)shape.seq, (long long)L, (long long)cfg.heads, (long long)cfg.head_dim);
    std::printf("branches (w, r):");
    for (const ringattn::Branch& b : cfg.branches) std::printf(" (%lld, %lld)", (long long)b.w, (long long)b.r);
    std::printf("; segments longer than %lld tokens span ranks\n", (long long)L);
    std::printf("%4s  %-16s %12s %12s %12s %14s\n", "rank", "tokens", "bytes sent", "ideal", "received", "sum(O)");
    long long total = 0, ideal = 0;
    for (int p = 0; p < world; ++p) {
      const long long* b = &all[size_t(4 * p)];
      char span[40];
      std::snprintf(span, sizeof span, "[%lld, %lld)", (long long)(p * L), (long long)((p + 1) * L));
      std::printf("%4d  %-16s %12lld %12lld %12lld %14.6f\n", p, span, b[0], b[1], b[2], sums[size_t(p)]);
      total += b[0];
      ideal += b[1];
    }
    std::printf("the ring moved %lld bytes in all (ideal %lld)%s\n", total, ideal,
                world == 1 ? ": one rank has no peers; try -np 2" : "");
  }
  ctx.reset();  // before MPI_Finalize: the context holds a duplicated communicator
  MPI_Finalize();
  return 0;
}

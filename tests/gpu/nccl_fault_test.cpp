// Failures on the NCCL path with several ranks (first: one rank's config is
// invalid, so every rank must fail in Context::create before the collective
// NCCL bootstrap). Then a rank that leaves an NCCL ring mid-forward, with forwards left in flight
// (run as: mpirun -np 3 nccl_hostid.sh ringattn_nccl_fault_test; three ranks
// sharing one GPU). Dense attention, so every rank needs keys from every other.
// The first forward succeeds everywhere (and makes NCCL's connections). In the
// second, rank 1 fails at ring step 1 (RINGATTN_INJECT_FAULT, set here before
// the context exists; mode=error returns an error instead of exiting, so
// nothing aborts the job). Every rank must then report an error without
// hanging: rank 1 from forward(); ranks 0 and 2, whose forward returns with its
// work in flight, from synchronize(): a timeout naming the ring step, within
// the 5 s timeout plus slack. Destroying the contexts (which aborts the
// communicators) must end too. The CLI cannot show this: it aborts the whole
// job at the first error.
#include <mpi.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "ringattn/device.hpp"
#include "ringattn/ringattn.hpp"

using namespace ringattn;
using Clock = std::chrono::steady_clock;

static double since(Clock::time_point t0) { return std::chrono::duration<double>(Clock::now() - t0).count(); }

int main(int argc, char** argv) {
  setenv("RINGATTN_INJECT_FAULT", "rank=1,step=1,mode=error,forward=2", 1);
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  int failures = 0;
  auto expect = [&](bool ok, const std::string& what) {
    if (!ok) {
      std::fprintf(stderr, "rank %d: FAILED: %s\n", rank, what.c_str());
      failures++;
    }
  };
  if (world != 3) {
    if (rank == 0) std::fprintf(stderr, "nccl_fault_test: run with 3 ranks (got %d)\n", world);
    MPI_Finalize();
    return 2;
  }
  Config cfg;
  cfg.branches = {{3 * 8192, 1}};  // dense: every rank needs every other rank's keys
  cfg.heads = 4;
  cfg.head_dim = 128;
  cfg.dtype = DType::bf16;
  cfg.backend = Backend::cuda;
  cfg.transport = Transport::nccl;
  cfg.timeout_seconds = 5;
  const Shape shape{1, 3 * 8192};
  Status st = dev::select_device(0);
  if (st.ok()) {
    // One rank's config is invalid: every rank fails in create with that
    // rank's message; none is left waiting in the NCCL bootstrap.
    Config bad = cfg;
    if (rank == 2) bad.heads = 0;
    std::unique_ptr<Context> none;
    const auto tc = Clock::now();
    Status cs = Context::create(bad, MPI_COMM_WORLD, &none);
    expect(!cs.ok() && cs.message().find("rank 2") != std::string::npos && cs.message().find("heads") != std::string::npos,
           "create with rank 2's heads = 0 should fail on every rank naming rank 2 and heads, got: " + cs.to_string());
    expect(since(tc) < 20.0, "the failed create took " + std::to_string(since(tc)) + " s");
  }
  std::unique_ptr<Context> ctx;
  if (st.ok()) st = Context::create(cfg, MPI_COMM_WORLD, &ctx);
  if (!st.ok()) {
    std::fprintf(stderr, "rank %d: setup: %s\n", rank, st.to_string().c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  const size_t elems = size_t(shape.seq / world * cfg.heads * cfg.head_dim);
  void *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *lse = nullptr;
  for (void** p : {&q, &k, &v, &o})
    if (!dev::alloc(cfg.backend, elems * 2, p).ok()) MPI_Abort(MPI_COMM_WORLD, 1);
  if (!dev::alloc(cfg.backend, elems / size_t(cfg.head_dim) * 4, &lse).ok()) MPI_Abort(MPI_COMM_WORLD, 1);
  std::vector<char> zeros(elems * 2, 0);
  for (void* p : {q, k, v}) dev::upload(cfg.backend, p, zeros.data(), zeros.size());

  // First forward: no fault, every rank succeeds.
  Status first = ctx->forward(shape, q, k, v, o, static_cast<float*>(lse));
  if (first.ok()) first = ctx->synchronize();
  expect(first.ok(), "the first forward (no fault) should succeed, got: " + first.to_string());

  const auto t0 = Clock::now();
  Status fwd = ctx->forward(shape, q, k, v, o, static_cast<float*>(lse));
  Status sync = fwd.ok() ? ctx->synchronize() : fwd;
  const double t_err = since(t0);
  std::fprintf(stderr, "rank %d: second forward: %s; synchronize: %s; after %.1f s\n", rank, fwd.to_string().c_str(),
               fwd.ok() ? sync.to_string().c_str() : "(not called)", t_err);
  if (rank == 1) {
    expect(!fwd.ok() && fwd.message().find("injected fault") != std::string::npos,
           "rank 1's forward should fail with the injected fault, got: " + fwd.to_string());
  } else {
    expect(fwd.ok(), "the forward should return with its work in flight, got: " + fwd.to_string());
    expect(!sync.ok() && (sync.code() == StatusCode::kTimeout || sync.code() == StatusCode::kCommError),
           "synchronize should time out or report NCCL's error, got: " + sync.to_string());
    expect(sync.message().find("ring step") != std::string::npos || sync.code() == StatusCode::kCommError,
           "the timeout should name the ring step: " + sync.message());
  }
  expect(t_err < 20.0, "the error took " + std::to_string(t_err) + " s (timeout 5 s)");
  const auto t1 = Clock::now();
  ctx.reset();  // aborts the communicator; must not hang on the posted operations
  const double t_destroy = since(t1);
  expect(t_destroy < 40.0, "destroying the context took " + std::to_string(t_destroy) + " s");
  std::fprintf(stderr, "rank %d: context destroyed in %.1f s\n", rank, t_destroy);
  for (void* p : {q, k, v, o, lse}) dev::release(cfg.backend, p);
  int total = 0;
  MPI_Allreduce(&failures, &total, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
  if (rank == 0) std::printf("nccl_fault_test: %s (%d failed checks)\n", total ? "FAILED" : "OK", total);
  MPI_Finalize();
  return total ? 1 : 0;
}

// ringattn: distributed dilated (LongNet) ring attention.
//
// A Context is made once per MPI communicator. Each rank passes its own
// contiguous token shard [p*L, (p+1)*L), L = N/P, of Q, K and V
// (B x L x H x D, token-major, Config::dtype) and receives the same shard of
// O (same dtype) and LSE (float32, B x L x H). Buffers are host memory for
// the cpu backend and device memory for the cuda backend.
//
// Every call validates its inputs on every rank and agrees on them with one
// allreduce before any K/V moves, so a bad value on one rank fails all ranks
// with the same message instead of leaving a peer waiting.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "ringattn/config.hpp"
#include "ringattn/status.hpp"

namespace ringattn {

// One ring step of the last forward, as this rank saw it.
struct StepTiming {
  int step = 0;             // 0 = local keys, d = keys from rank (p - d) mod P
  int send_peer = -1;       // -1: nothing sent this step
  int recv_peer = -1;       // -1: nothing received this step
  int64_t bytes_sent = 0;
  int64_t bytes_ideal = 0;
  double compute_ms = 0;    // attention on this step's keys
  double transfer_ms = 0;   // post to completion of this step's exchange
  double exposed_ms = 0;    // time spent waiting for it (not overlapped)
};

// Counters of the tiered pattern cache (compiled plans), this rank.
struct CacheStats {
  int64_t device_hits = 0, host_hits = 0, misses = 0;  // misses: plans built on the forward's path
  int64_t promotions = 0, device_evictions = 0, host_evictions = 0;
  int64_t bytes_copied = 0;  // host->device, all plan copies (promotions, staging, cache off)
  int64_t device_bytes = 0;  // device memory held now (resident plans + evicted ones still in use)
  int64_t host_bytes = 0;    // host tier: plans and their images
  int64_t plans_held = 0;    // distinct plans in the host tier (device ones are a subset)
  double build_ms = 0;       // building plans and images, on any thread
  double lookup_ms = 0;      // inside the lookup on hits (both tiers)
  int64_t prefetches = 0;      // plans built by the prefetch worker
  int64_t prefetch_waits = 0;  // forwards that waited for a prefetch build still running
  int64_t copies = 0;          // batched host->device copies (one may move several plans)
  int64_t staged = 0;          // uses of a plan not resident on the device (copied for one call)
  int64_t device_plans = 0;    // plans resident on the device now
};

struct Stats {
  int64_t forwards = 0;
  int64_t backwards = 0;
  double last_forward_ms = 0;      // host time in the last forward() call (returning with work in flight: enqueue time)
  int64_t last_bytes_sent = 0;     // this rank, last forward
  int64_t last_bytes_ideal = 0;    // rows its peers actually need, in bytes
  int64_t last_bytes_received = 0;
  double last_plan_ms = 0;         // time to obtain the plan (build or lookup)
  int64_t last_plan_tiles = 0;     // this rank's tiles in the last call's plan
  int64_t last_packed_tiles = 0;   // of them, tiles of packed short segments (RINGATTN_PACK_SEGMENTS)
  // The last completed forward's ring steps (after synchronize(), the last forward's).
  std::vector<StepTiming> timeline;
  CacheStats cache;
};

class Context {
 public:
  // Collective over `comm` (duplicated internally). Validates the config on
  // every rank and checks that all ranks passed the same one.
  static Status create(const Config& config, MPI_Comm comm, std::unique_ptr<Context>* out);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  int rank() const;
  int world_size() const;
  const Config& config() const;

  // Collective. Shapes of the local shard: q, k, v, o: batch x seq/P x heads
  // x head_dim; lse: batch x seq/P x heads. `stream` is a cudaStream_t for the
  // cuda backend (nullptr: the default stream) and ignored on the cpu backend.
  //
  // Stream semantics (cuda backend): O and LSE are ready in stream order
  // after the call, like any CUDA library call. With NCCL (or one rank) the
  // forward returns with its work in flight, so the host prepares the next
  // forward while the GPU runs this one; at most one forward is in flight:
  // the next forward, synchronize() and the destructor wait for it with the
  // timeout and NCCL error checks, and a failure of a forward in flight is
  // returned by whichever of them comes next. With the mpi transport the
  // host drives the ring and the call returns when the work is complete. On
  // the cpu backend the call is synchronous.
  // Buffers are aligned to 16 bytes on the cuda backend (as cudaMalloc and
  // torch give them; the kernels move rows in 16-byte chunks), to their
  // element on cpu, lse to 4: otherwise InvalidArgument on every rank (also
  // for backward).
  Status forward(const Shape& shape, const void* q, const void* k, const void* v, void* o,
                 float* lse, void* stream = nullptr);

  // Collective: the exact gradient (docs/SPEC.md, "Backward") of a forward
  // on the same shapes. q, k, v, o, dout, dq, dk, dv: the local shard, batch x
  // seq/P x heads x head_dim in the config's dtype; lse: the forward's LSE
  // (float, batch x seq/P x heads). Nothing else is kept from the forward:
  // Delta = rowsum(dO * O) is computed here, and no buffer grows with N^2 or
  // with the number of branches. dK/dV of keys a peer used travel back to
  // this rank in float32 and are added in ring-step order (the same bits for
  // any timing). dq, dk, dv are overwritten. Same validation and agreement
  // as forward. Both backends; on cuda it is stream-ordered like forward and,
  // with nccl (or one rank), returns with its work in flight (the next call,
  // synchronize() and the destructor wait for it). dq, dk, dv must not
  // overlap any input: on cuda they are the accumulators (zeroed first or
  // written by a first pass that holds every row, then added to, rounded to
  // the dtype after every add), beside a bf16 remainder
  // each (3 x the shard's elements x 2 bytes; the cpu backend keeps float32
  // ones); with Config::deterministic = false, dQ is summed in a float32
  // buffer (4 bytes per element, instead of its remainder) and written whole
  // at the end. With several ranks on nccl it also keeps one float32 return
  // slot per ring step. After a failed call their contents are undefined.
  Status backward(const Shape& shape, const void* q, const void* k, const void* v, const void* o,
                  const float* lse, const void* dout, void* dq, void* dk, void* dv, void* stream = nullptr);

  // Waits for the forward in flight, if any, under the timeout (a peer that
  // died gives kTimeout or kCommError, never a hang). Call it instead of
  // cudaStreamSynchronize before reading O on the host; stats().timeline
  // describes the last forward once it returns.
  Status synchronize();

  // Announce the next shape: its plan is built off the critical path.
  Status prefetch(const Shape& shape);

  const Stats& stats() const;

 private:
  Context();
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Library version string, e.g. "0.1.0".
const char* version();

}  // namespace ringattn

namespace ringattn {
// Collective: if any rank's `local` is an error, every rank returns the
// error of the lowest failing rank (its message prefixed "rank R: ").
// Front ends use it to fail file and argument errors on all ranks at once.
Status all_ranks(MPI_Comm comm, const Status& local);
// Collective: as above, then kMismatch on every rank unless all passed the
// same `key` (a digest of what must be equal everywhere, e.g. config_hash()),
// shape.seq and shape.batch: the check Context calls make, for front ends
// whose per-rank state (the Python binding's cache of contexts) must take
// the same path on every rank.
Status all_ranks(MPI_Comm comm, const Status& local, uint64_t key, const Shape& shape);
}  // namespace ringattn

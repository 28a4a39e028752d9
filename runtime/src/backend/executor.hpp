// An executor runs one plan on one backend: it packs rows for peers, drives
// the transport step by step, runs the attention passes on whatever keys
// have arrived and merges them into O and LSE.
#pragma once
#include <mpi.h>

#include <memory>

#include "plan/plan.hpp"
#include "plan/plan_image.hpp"
#include "ringattn/ringattn.hpp"
#include "transport/transport.hpp"

namespace ringattn {

struct ForwardArgs {
  const Shape* shape;
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;
  void* stream;
  // The plan's device image (plan_image.hpp) from the pattern cache's lease;
  // the stream already waits for its copy. Null on the cpu backend.
  const PlanImage* image = nullptr;
  const void* image_device = nullptr;
};

class Executor {
 public:
  virtual ~Executor() = default;
  // Returns once O and LSE are complete or enqueued on a.stream: every reader
  // of the plan's device image is on that stream (the cache fences it there).
  // At most one forward is left in flight; the next forward (after enqueuing
  // its own work) or finish() waits for it under the timeout and fills its
  // timeline into the Stats it was given.
  virtual Status forward(const Plan& plan, const ForwardArgs& a, Stats* stats) = 0;
  // Waits for the forward in flight, if any (timeout and NCCL errors watched).
  virtual Status finish() { return Status::Ok(); }
  // Query rows per CTA that the device image's prefix tables are built for;
  // 0: this executor reads no device image (the cpu backend).
  virtual int plan_image_block_m() const { return 0; }
};

std::unique_ptr<Executor> make_cpu_executor(const Config& c, RingTransport* transport, int rank);

// Defined by the CUDA backend; without CUDA support it returns kUnsupported.
Status make_cuda_executor(const Config& c, MPI_Comm comm, std::unique_ptr<Executor>* out);
bool cuda_backend_compiled();

}  // namespace ringattn

// An executor is a backend's forward: it says what the ring (ring/ring.hpp)
// packs and computes on each step's keys, on this backend's kernels, and
// merges every pass into O and LSE. The ring itself, the transports and the
// lanes are shared by every backend.
#pragma once
#include <mpi.h>

#include <memory>
#include <vector>

#include "plan/plan.hpp"
#include "plan/plan_image.hpp"
#include "ring/ring.hpp"
#include "ringattn/ringattn.hpp"

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

// The backward's buffers (Context::backward), on the same plan as the forward.
struct BackwardArgs {
  const Shape* shape;
  const void *q, *k, *v, *o;
  const float* lse;
  const void* dout;
  void *dq, *dk, *dv;
  void* stream;
  const PlanImage* image = nullptr;
  const void* image_device = nullptr;
};

class Executor {
 public:
  virtual ~Executor() = default;
  // Returns once O and LSE are complete or enqueued on a.stream: every reader
  // of the plan's device image is on that stream (the cache fences it there).
  // At most one forward is left in flight (ring.hpp).
  virtual Status forward(const Plan& plan, const ForwardArgs& a, Stats* stats) = 0;
  // The exact gradient (Context::backward); the forward's ring in, partial
  // dK/dV back on the ring's return channel.
  virtual Status backward(const Plan& plan, const BackwardArgs& a, Stats* stats) {
    (void)plan;
    (void)a;
    (void)stats;
    return Unsupported("backward is not implemented on this backend yet (allowed: --backend cpu)");
  }
  // Waits for the forward in flight, if any (timeout and transport errors watched).
  virtual Status finish() { return Status::Ok(); }
  // Query rows per CTA that the device image's prefix tables are built for;
  // 0: this executor reads no device image (the cpu backend).
  virtual int plan_image_block_m() const { return 0; }
};

// The forward's ring steps: K then V rows of the plan's row lists, each row
// `row_bytes` (batch x head_dim elements of K and of V).
inline std::vector<RingStep> forward_ring_steps(const Plan& plan, int64_t row_bytes) {
  std::vector<RingStep> steps(plan.steps.size());
  for (size_t i = 0; i < steps.size(); ++i) {
    const PlanStep& ps = plan.steps[i];
    RingStep& s = steps[i];
    s.step = ps.step;
    s.send_peer = ps.send.peer;
    s.recv_peer = ps.recv.peer;
    s.send_bytes = size_t(ps.send.total_rows() * row_bytes);
    s.recv_bytes = size_t(ps.recv.total_rows() * row_bytes);
    s.bytes_ideal = ps.send.total_rows() * row_bytes;
    s.send_whole = ps.send.whole;
  }
  return steps;
}

// The backward's ring steps: the forward's, plus the return channel: the
// float32 partial dK/dV of every received row goes back to its owner (the
// same rows, 2 x batch x head_dim floats each), and the owner receives them
// for every row it sent.
inline std::vector<RingStep> backward_ring_steps(const Plan& plan, int64_t row_bytes, int64_t back_row_bytes) {
  std::vector<RingStep> steps = forward_ring_steps(plan, row_bytes);
  for (size_t i = 0; i < steps.size(); ++i) {
    const PlanStep& ps = plan.steps[i];
    steps[i].back_send_bytes = size_t(ps.recv.total_rows() * back_row_bytes);
    steps[i].back_recv_bytes = size_t(ps.send.total_rows() * back_row_bytes);
    steps[i].bytes_ideal += ps.recv.total_rows() * back_row_bytes;
  }
  return steps;
}

// Collective over comm (Context::create calls them on every rank, after the
// ranks agreed on the config).
Status make_cpu_executor(const Config& c, MPI_Comm comm, std::unique_ptr<Executor>* out);
// Defined by the CUDA backend; without CUDA support it returns kUnsupported.
Status make_cuda_executor(const Config& c, MPI_Comm comm, std::unique_ptr<Executor>* out);
bool cuda_backend_compiled();

}  // namespace ringattn

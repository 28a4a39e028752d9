// The weights' gradient summed over the ranks on the GPUs: an NCCL
// all-reduce in place, on the legacy default stream (where the model's
// kernels run), on a communicator of the example's own (the Context's ring
// has its own; the two never have work in flight at once on a rank: the
// all-reduce is stream-ordered after the step's last attention backward).
// The cuda backend's alternative to staging the gradient through the host
// for MPI_Allreduce (--grad-sum host), which moves 2 x 4 bytes per
// parameter over PCIe every step. Defined when the project builds CUDA.
#pragma once
#include <mpi.h>

#include <cstdint>
#include <memory>

#include "ringattn/status.hpp"

namespace train {

class GradSum {
 public:
  virtual ~GradSum() = default;
  // g (n floats, device memory) = the sum over the ranks of g, on the
  // default stream, waited for before returning (under the timeout).
  virtual ringattn::Status sum(float* g, int64_t n) = 0;
};

// Collective over comm (every rank calls it; the current device selected):
// rank 0 makes the NCCL id and broadcasts it over MPI. A failure is this
// rank's error value (the caller agrees on it and ends the job). The init
// and every sum wait at most timeout_s (a lost peer: kTimeout, not a hang).
ringattn::Status make_nccl_grad_sum(MPI_Comm comm, double timeout_s, std::unique_ptr<GradSum>* out);

}  // namespace train

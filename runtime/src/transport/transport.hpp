// A transport moves one packed block per ring step in each direction. It is
// a small table of operations (nccl's ncclTransport habit): `start` posts
// the step's send and receive without blocking, `wait` completes them.
// Either direction may be absent (peer < 0). Buffers are host memory for
// the mpi transport and device memory for nccl.
#pragma once
#include <mpi.h>

#include <cstddef>
#include <memory>
#include <string>
#include <vector>

#include "transport/host_wait.hpp"
#include "ringattn/status.hpp"

namespace ringattn {

struct TransportCounters {
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
};

class RingTransport {
 public:
  virtual ~RingTransport() = default;
  virtual const char* name() const = 0;
  // Post step `step`: send `send_bytes` to `dst`, receive `recv_bytes` from `src`.
  virtual Status start(int step, const void* send, size_t send_bytes, int dst, void* recv, size_t recv_bytes,
                       int src) = 0;
  // Complete step `step`; a peer silent for `timeout_s` gives kTimeout naming the step and peer.
  virtual Status wait(int step, double timeout_s) = 0;
  TransportCounters counters;
};

// Non-blocking MPI point-to-point on host buffers; messages over 1 GiB are
// split so counts fit in an int. `wait` polls under `policy` (host_wait.hpp).
std::unique_ptr<RingTransport> make_mpi_transport(MPI_Comm comm, WaitPolicy policy);

}  // namespace ringattn

// A transport moves one packed block per ring step in each direction, behind
// one stream-ordered interface (nccl's `struct ncclTransport` habit: a small
// table of operations):
//   post      the step's send and receive, once the send block is ready in
//             the comm lane's order (lanes.hpp);
//   post_group  several steps' exchanges at once, their slots all free (nccl:
//             one group, one kernel; others: one post each);
//   complete  the received block is ready in the comm lane's order when it
//             returns; a host-driven transport waits here, under the timeout;
//   poll_error  an asynchronous failure (a peer NCCL saw die), or Ok;
//   abort     this rank leaves the ring with exchanges posted: they are
//             abandoned, never waited for.
// Either direction may be absent (peer < 0). A block is two halves of equal
// size (K rows, then V rows); the sent halves may lie anywhere (a shard sent
// as it is), the received ones lie back to back. Every transport moves the
// halves as two messages each way. Buffers are what the ring's lanes
// allocate or the caller's tensors (host memory on the cpu backend, device
// memory on cuda).
//
// Implementations: `mpi` on host buffers (transport/mpi.cpp), `mpi` on device
// buffers, staged through pinned host memory or handed to a CUDA-aware MPI
// (transport/mpi_device.cu), and `nccl` (transport/nccl.cu: bootstrap over
// MPI, one group per step on the comm stream, abort).
#pragma once
#include <mpi.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "transport/host_wait.hpp"
#include "ringattn/status.hpp"

namespace ringattn {

struct TransportCounters {
  int64_t bytes_sent = 0;
  int64_t bytes_received = 0;
};

// Reached once the receive slot of an exchange may be overwritten (its last
// reader, the compute of the step two before, is done). `lane_wait` makes the
// comm lane wait for it; `host_wait` blocks the host until it is reached.
class SlotFence {
 public:
  virtual ~SlotFence() = default;
  virtual Status lane_wait() const = 0;
  virtual Status host_wait() const = 0;
};

struct Exchange {
  int step = 0;      // ring step (names the peers in errors)
  size_t index = 0;  // position in this run: slot index % 2
  const void* send = nullptr;    // first half (K)
  const void* send_v = nullptr;  // second half (V)
  size_t send_bytes = 0;         // both halves
  int dst = -1;  // -1: nothing to send
  void* recv = nullptr;  // both halves, back to back
  size_t recv_bytes = 0;
  int src = -1;                          // -1: nothing to receive
  const SlotFence* recv_free = nullptr;  // never null
  // 0: the ring's blocks; 1: blocks returned to their owners (the ring's
  // return channel), matched apart from channel 0's.
  int channel = 0;
};

class RingTransport {
 public:
  virtual ~RingTransport() = default;
  virtual const char* name() const = 0;
  // True: the host posts and completes every exchange (mpi); false: they are
  // enqueued on the comm lane and complete in its order (nccl).
  virtual bool host_driven() const = 0;
  // Called with nothing in flight before blocks of these sizes are exchanged
  // on `channel` (0: the ring's blocks, 1: the return channel).
  virtual Status reserve(size_t send_bytes, size_t recv_bytes, int channel) {
    (void)send_bytes;
    (void)recv_bytes;
    (void)channel;
    return Status::Ok();
  }
  virtual Status post(const Exchange& x) = 0;
  virtual Status post_group(const std::vector<Exchange>& xs) {
    for (const Exchange& x : xs) RINGATTN_RETURN_IF_ERROR(post(x));
    return Status::Ok();
  }
  virtual Status complete(const Exchange& x, double timeout_s) = 0;
  virtual Status poll_error() { return Status::Ok(); }
  virtual void abort() {}
  TransportCounters counters;
};

// A one-rank ring: nothing to exchange (transport/none.cpp).
std::unique_ptr<RingTransport> make_no_transport();

// Non-blocking MPI point-to-point on host buffers; messages over 1 GiB are
// split so counts fit in an int. `complete` polls under `policy` (host_wait.hpp).
std::unique_ptr<RingTransport> make_mpi_transport(MPI_Comm comm, WaitPolicy policy);

// The waiting policy of a GPU rank: spin, unless this host runs more ranks of
// `comm` than it has cores (RINGATTN_HOST_WAIT overrides).
Status default_device_wait_policy(MPI_Comm comm, WaitPolicy* out);

// MPI on device buffers (cuda backend): a CUDA-aware MPI gets the device
// pointers; otherwise blocks are staged through pinned host memory, copied on
// the comm stream `comm_stream` (a cudaStream_t).
Status make_mpi_device_transport(MPI_Comm comm, WaitPolicy policy, void* comm_stream, std::unique_ptr<RingTransport>* out);

// NCCL over the ranks of `comm` (collective: rank 0's unique id is broadcast
// over MPI; non-blocking init under `timeout_s`); exchanges on `comm_stream`
// with at most `max_ctas` CTAs (0: NCCL's default).
Status make_nccl_transport(MPI_Comm comm, double timeout_s, int max_ctas, void* comm_stream,
                           std::unique_ptr<RingTransport>* out);

}  // namespace ringattn

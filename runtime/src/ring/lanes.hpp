// Where the ring's work runs, and how its order is kept.
//
// A ring step has two kinds of work: moving blocks (packing and exchanging:
// the communication lane) and computing on them (the compute lane, the
// caller's stream). On the CUDA backend a lane is a stream and a mark is an
// event; on the CPU backend both lanes are the host thread, work is done when
// it returns, and a mark is a host time stamp. The ring loop (ring.hpp) only
// records, waits for and times marks, so the same loop serves both.
//
// Marks of one ring run, per step index i (0..n-1; index n is the local step):
//   in      compute lane, before anything (the comm lane waits for it: the
//           inputs were written in the caller's stream order)
//   t0[i]   comm lane, before step i's pack          (transfer starts)
//   recv[i] comm lane, step i's block has arrived    (transfer ends)
//   c0[i]   compute lane, before step i's compute
//   c1[i]   compute lane, after it: the last read of step i's receive slot
//   back[i] comm lane, the block returned for step i's send has arrived
//           (the return channel of the backward)
//   end     compute lane, after everything
// Two mark sets alternate, so one run can stay in flight while the next is
// enqueued (set 0 and 1; `current` is the one being enqueued).
#pragma once
#include <cstddef>
#include <memory>

#include "ringattn/status.hpp"

namespace ringattn {

enum class Lane { compute, comm };
enum class Mark { in, t0, recv, c0, c1, back, end };

class Lanes {
 public:
  virtual ~Lanes() = default;
  // False: every call returns with its work done (the host backend).
  virtual bool asynchronous() const = 0;
  // Starts a run of `steps` ring steps on the caller's `stream` in the current
  // mark set: records `in` on it and makes the comm lane wait for it.
  virtual Status begin(size_t steps, void* stream) = 0;
  // Records mark m (of step i) on the lane it belongs to, in the current set.
  virtual Status mark(Mark m, size_t i) = 0;
  // `waiter` waits (in its own order) for mark m of step i of the current set.
  virtual Status lane_wait(Lane waiter, Mark m, size_t i) = 0;
  // The host waits for mark m of step i of the current set.
  virtual Status host_wait(Mark m, size_t i) = 0;
  // Whether mark m (of step i) of set `set` has been reached: 1 yes, 0 not yet.
  virtual Status reached(int set, Mark m, size_t i, bool* yes) const = 0;
  // Milliseconds between two marks of one set (0 when unavailable).
  virtual double elapsed_ms(int set, Mark a, size_t i, Mark b, size_t j) const = 0;
  virtual int current() const = 0;
  virtual void swap_sets() = 0;
  // The comm lane's native handle (cudaStream_t; null on the host).
  virtual void* comm_stream() const = 0;
  // Memory for the ring's send and receive slots (device memory on CUDA).
  virtual Status alloc(size_t bytes, void** p) = 0;
  virtual void free(void* p) = 0;
};

// Host lanes: the cpu backend.
std::unique_ptr<Lanes> make_host_lanes();
// CUDA lanes: a non-blocking comm stream and events (cuda backend only).
Status make_cuda_lanes(std::unique_ptr<Lanes>* out);

}  // namespace ringattn

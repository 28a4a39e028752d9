// Every device operation the pattern cache needs, behind one small table of
// operations (nccl's `struct ncclTransport` habit): device and pinned-host
// allocation, one batched host->device copy on a copy stream, and fences
// (events) to poll, to wait on from the compute stream and to record on it.
//
// The cache holds the policy; a DeviceTier only moves bytes. The CUDA tier
// lives in cuda/device_tier.cu; the unit tests use a deterministic fake, so
// the policy is tested on machines without a GPU. The cpu backend has none.
#pragma once
#include <cstddef>
#include <memory>
#include <vector>

#include "ringattn/status.hpp"

namespace ringattn {

// A point on a stream (a CUDA event). Owned through FenceRef; a null
// FenceRef is a fence that has already completed.
struct Fence {
  virtual ~Fence() = default;
};
using FenceRef = std::shared_ptr<Fence>;

class DeviceTier {
 public:
  struct Copy {
    void* dst;        // device
    const void* src;  // host (pinned or pageable)
    size_t bytes;
  };

  virtual ~DeviceTier() = default;

  virtual Status alloc_device(size_t bytes, void** out) = 0;
  // Only called once every fence of a reader of `p` has completed.
  virtual void free_device(void* p) = 0;
  // Host memory the copy stream reads asynchronously (page-locked).
  virtual Status alloc_host(size_t bytes, void** out) = 0;
  virtual void free_host(void* p) = 0;

  // Enqueues all copies on the copy stream and records one fence after the
  // last: several plans moved by one batched copy.
  virtual Status copy_batch(const std::vector<Copy>& copies, FenceRef* ready) = 0;
  // Non-blocking: has the fence completed? (null: yes)
  virtual bool done(const FenceRef& f) = 0;
  // Makes `stream` (the caller's compute stream) wait for the fence; no host wait.
  virtual Status wait(const FenceRef& f, void* stream) = 0;
  // A fence after the work enqueued so far on `stream`.
  virtual Status record(void* stream, FenceRef* out) = 0;
};

// The CUDA tier on the current device: a non-blocking copy stream and a pool
// of events. Without the CUDA backend it returns kUnsupported.
Status make_cuda_device_tier(std::unique_ptr<DeviceTier>* out);

}  // namespace ringattn

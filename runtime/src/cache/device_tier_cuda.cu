// The CUDA DeviceTier of the pattern cache: plan images go host (pinned) ->
// device on a non-blocking copy stream of their own, so a promotion or a
// prefetch never queues behind attention or the ring exchange.
//
// Device memory comes from the stream-ordered allocator (cudaMallocAsync /
// cudaFreeAsync on the copy stream) where the device supports memory pools:
// cudaFree would synchronize the whole device, stalling the compute stream
// each time an evicted plan is freed. Fences are events from a pool: one is
// recorded per forward (release), so creating and destroying one each time
// would add to every lookup.
#include <cuda_runtime.h>

#include <memory>
#include <mutex>
#include <vector>

#include "cache/device_tier.hpp"
#include "device/check_cuda.hpp"

namespace ringattn {
namespace {

struct EventPool {
  std::mutex mu;
  std::vector<cudaEvent_t> free;
  ~EventPool() {
    for (cudaEvent_t e : free) cudaEventDestroy(e);
  }
  cudaError_t get(cudaEvent_t* e) {
    {
      std::lock_guard<std::mutex> g(mu);
      if (!free.empty()) {
        *e = free.back();
        free.pop_back();
        return cudaSuccess;
      }
    }
    return cudaEventCreateWithFlags(e, cudaEventDisableTiming);
  }
  void put(cudaEvent_t e) {
    std::lock_guard<std::mutex> g(mu);
    free.push_back(e);
  }
};

struct CudaFence final : Fence {
  cudaEvent_t ev = nullptr;
  std::shared_ptr<EventPool> pool;  // outlives the tier while fences do
  ~CudaFence() override {
    if (ev) pool->put(ev);
  }
};

cudaEvent_t event_of(const FenceRef& f) { return static_cast<const CudaFence*>(f.get())->ev; }

class CudaDeviceTier final : public DeviceTier {
 public:
  ~CudaDeviceTier() override {
    if (stream_) {
      cudaSetDevice(device_);
      cudaStreamSynchronize(stream_);
      cudaStreamDestroy(stream_);
    }
  }

  Status init() {
    RINGATTN_CUDA_CHECK(cudaGetDevice(&device_));
    int pools = 0;
    if (cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device_) != cudaSuccess) {
      cudaGetLastError();
      pools = 0;
    }
    async_alloc_ = pools != 0;
    RINGATTN_CUDA_CHECK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    return Status::Ok();
  }

  // Called from the forward's thread and from the cache's prefetch worker:
  // the device is per thread, so set it each time (cheap).
  Status alloc_device(size_t bytes, void** out) override {
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_));
    if (async_alloc_) RINGATTN_CUDA_CHECK(cudaMallocAsync(out, bytes, stream_));
    else RINGATTN_CUDA_CHECK(cudaMalloc(out, bytes));
    return Status::Ok();
  }
  void free_device(void* p) override {
    cudaSetDevice(device_);
    if (async_alloc_) cudaFreeAsync(p, stream_);
    else cudaFree(p);
  }
  Status alloc_host(size_t bytes, void** out) override {
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_));
    RINGATTN_CUDA_CHECK(cudaHostAlloc(out, bytes, cudaHostAllocPortable));
    return Status::Ok();
  }
  void free_host(void* p) override { cudaFreeHost(p); }

  // One cudaMemcpyAsync per plan (each a contiguous blob) and one event after
  // the last. (cudaMemcpyBatchAsync, CUDA 12.8+, could fold the calls.)
  Status copy_batch(const std::vector<Copy>& copies, FenceRef* ready) override {
    RINGATTN_CUDA_CHECK(cudaSetDevice(device_));
    for (const Copy& c : copies)
      if (c.bytes) RINGATTN_CUDA_CHECK(cudaMemcpyAsync(c.dst, c.src, c.bytes, cudaMemcpyHostToDevice, stream_));
    return record(stream_, ready);
  }
  bool done(const FenceRef& f) override {
    if (!f) return true;
    cudaError_t e = cudaEventQuery(event_of(f));
    // Any answer but "not ready" ends the wait; a device error surfaces in the forward.
    return e != cudaErrorNotReady;
  }
  Status wait(const FenceRef& f, void* stream) override {
    if (!f) return Status::Ok();
    RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(static_cast<cudaStream_t>(stream), event_of(f), 0));
    return Status::Ok();
  }
  Status record(void* stream, FenceRef* out) override {
    auto f = std::make_shared<CudaFence>();
    f->pool = pool_;
    RINGATTN_CUDA_CHECK(pool_->get(&f->ev));
    RINGATTN_CUDA_CHECK(cudaEventRecord(f->ev, static_cast<cudaStream_t>(stream)));
    *out = std::move(f);
    return Status::Ok();
  }

 private:
  int device_ = 0;
  bool async_alloc_ = false;
  cudaStream_t stream_ = nullptr;
  std::shared_ptr<EventPool> pool_ = std::make_shared<EventPool>();
};

}  // namespace

Status make_cuda_device_tier(std::unique_ptr<DeviceTier>* out) {
  auto t = std::make_unique<CudaDeviceTier>();
  RINGATTN_RETURN_IF_ERROR(t->init());
  *out = std::move(t);
  return Status::Ok();
}

}  // namespace ringattn

// CUDA lanes: the compute lane is the caller's stream, the comm lane a
// non-blocking stream of the ring's own; a mark is an event. Two event sets
// alternate so that one run stays in flight while the next is enqueued.
#include <cuda_runtime.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "device/check_cuda.hpp"
#include "ring/lanes.hpp"

namespace ringattn {
namespace {

class CudaLanes final : public Lanes {
  struct Set {
    cudaEvent_t in = nullptr, end = nullptr;
    std::vector<cudaEvent_t> t0, recv, c0, c1, back;
  };

 public:
  ~CudaLanes() override {
    for (Set& s : sets_) {
      for (auto* v : {&s.t0, &s.recv, &s.c0, &s.c1, &s.back})
        for (cudaEvent_t e : *v) cudaEventDestroy(e);
      if (s.in) cudaEventDestroy(s.in);
      if (s.end) cudaEventDestroy(s.end);
    }
    if (comm_) cudaStreamDestroy(comm_);
  }

  Status init() {
    // RINGATTN_COMM_PRIORITY=high (default) puts the comm lane at the highest
    // stream priority: a pack or an exchange kernel is scheduled before
    // further attention CTAs when both wait for an SM; `normal` leaves it
    // at the default (bench/results/gpu-2026-11-27 has both measured).
    int least = 0, greatest = 0;
    RINGATTN_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    int priority = greatest;
    if (const char* e = std::getenv("RINGATTN_COMM_PRIORITY"); e != nullptr && *e != '\0') {
      if (std::string(e) == "normal") priority = least;
      else if (std::string(e) != "high")
        return InvalidArgument(std::string("RINGATTN_COMM_PRIORITY='") + e + "' (allowed: high, normal)");
    }
    RINGATTN_CUDA_CHECK(cudaStreamCreateWithPriority(&comm_, cudaStreamNonBlocking, priority));
    for (Set& s : sets_) {
      RINGATTN_CUDA_CHECK(cudaEventCreateWithFlags(&s.in, cudaEventDisableTiming));
      RINGATTN_CUDA_CHECK(cudaEventCreateWithFlags(&s.end, cudaEventDisableTiming));
    }
    return Status::Ok();
  }

  bool asynchronous() const override { return true; }

  Status begin(size_t steps, void* stream) override {
    stream_ = static_cast<cudaStream_t>(stream);
    Set& s = sets_[cur_];
    for (auto* v : {&s.t0, &s.recv, &s.c0, &s.c1, &s.back}) {
      while (v->size() < steps + 1) {
        cudaEvent_t e;
        RINGATTN_CUDA_CHECK(cudaEventCreate(&e));
        v->push_back(e);
      }
    }
    // A run may still be in flight on another stream (the ring keeps one):
    // the executors' buffers (accumulators, counters) and the ring's slots are
    // shared between runs, so this stream waits for its end first. An end
    // never recorded is complete, and on the same stream this costs nothing.
    RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(stream_, sets_[1 - cur_].end, 0));
    RINGATTN_CUDA_CHECK(cudaEventRecord(s.in, stream_));
    RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(comm_, s.in, 0));
    return Status::Ok();
  }

  Status mark(Mark m, size_t i) override {
    RINGATTN_CUDA_CHECK(cudaEventRecord(event(cur_, m, i), m == Mark::t0 || m == Mark::recv || m == Mark::back ? comm_ : stream_));
    return Status::Ok();
  }
  Status lane_wait(Lane waiter, Mark m, size_t i) override {
    RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(waiter == Lane::comm ? comm_ : stream_, event(cur_, m, i), 0));
    return Status::Ok();
  }
  Status host_wait(Mark m, size_t i) override {
    RINGATTN_CUDA_CHECK(cudaEventSynchronize(event(cur_, m, i)));
    return Status::Ok();
  }
  Status reached(int set, Mark m, size_t i, bool* yes) const override {
    cudaError_t e = cudaEventQuery(event(set, m, i));
    *yes = e == cudaSuccess;
    if (e != cudaSuccess && e != cudaErrorNotReady) RINGATTN_CUDA_CHECK(e);
    return Status::Ok();
  }
  double elapsed_ms(int set, Mark a, size_t i, Mark b, size_t j) const override {
    float f = 0;
    return cudaEventElapsedTime(&f, event(set, a, i), event(set, b, j)) == cudaSuccess ? double(f) : 0.0;
  }
  int current() const override { return cur_; }
  void swap_sets() override { cur_ = 1 - cur_; }
  void* comm_stream() const override { return comm_; }
  Status alloc(size_t bytes, void** p) override {
    RINGATTN_CUDA_CHECK(cudaMalloc(p, bytes > 0 ? bytes : 1));
    return Status::Ok();
  }
  void free(void* p) override { cudaFree(p); }

 private:
  cudaEvent_t event(int set, Mark m, size_t i) const {
    const Set& s = sets_[set];
    switch (m) {
      case Mark::in: return s.in;
      case Mark::end: return s.end;
      case Mark::t0: return s.t0[i];
      case Mark::recv: return s.recv[i];
      case Mark::c0: return s.c0[i];
      case Mark::back: return s.back[i];
      default: return s.c1[i];
    }
  }
  Set sets_[2];
  int cur_ = 0;
  cudaStream_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

Status make_cuda_lanes(std::unique_ptr<Lanes>* out) {
  auto l = std::make_unique<CudaLanes>();
  RINGATTN_RETURN_IF_ERROR(l->init());
  *out = std::move(l);
  return Status::Ok();
}

}  // namespace ringattn

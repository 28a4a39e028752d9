// MPI on device buffers (the cuda backend's `mpi` transport, which lets
// several ranks share a GPU): the host posts and completes every exchange
// through the host mpi transport.
//   staged:     the packed block is copied to pinned memory on the comm
//               stream, sent, received into pinned memory and copied into
//               the device slot on the comm stream once the slot is free;
//   CUDA-aware: the device slots go to MPI directly (Open MPI reporting CUDA
//               support at compile and run time); the host waits until the
//               receive slot is free before posting.
#include <cuda_runtime.h>
#include <mpi.h>
#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h>  // MPIX_CUDA_AWARE_SUPPORT, MPIX_Query_cuda_support
#endif

#include <cstdlib>
#include <string>

#include "device/check_cuda.hpp"
#include "transport/transport.hpp"

namespace ringattn {
namespace {

// Both the compile- and the run-time query must agree before device pointers
// go to MPI. RINGATTN_MPI_CUDA_AWARE=0 forces host staging.
bool detect_cuda_aware_mpi() {
  const char* env = std::getenv("RINGATTN_MPI_CUDA_AWARE");
  if (env && std::string(env) == "0") return false;
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

class MpiDeviceTransport final : public RingTransport {
 public:
  MpiDeviceTransport(std::unique_ptr<RingTransport> host, bool cuda_aware, cudaStream_t stream)
      : host_(std::move(host)), cuda_aware_(cuda_aware), stream_(stream) {}
  ~MpiDeviceTransport() override {
    for (int s = 0; s < 2; ++s) {
      if (send_host_[s]) cudaFreeHost(send_host_[s]);
      if (recv_host_[s]) cudaFreeHost(recv_host_[s]);
      if (copied_[s]) cudaEventDestroy(copied_[s]);
    }
  }
  Status init() {
    for (cudaEvent_t& e : copied_) RINGATTN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return Status::Ok();
  }

  const char* name() const override { return cuda_aware_ ? "mpi (CUDA-aware)" : "mpi (host-staged)"; }
  bool host_driven() const override { return true; }

  Status reserve(size_t send_bytes, size_t recv_bytes) override {
    if (cuda_aware_) return Status::Ok();
    RINGATTN_RETURN_IF_ERROR(grow(send_host_, &send_cap_, send_bytes));
    return grow(recv_host_, &recv_cap_, recv_bytes);
  }

  Status post(const Exchange& x) override {
    Exchange h = x;
    if (cuda_aware_) {
      // MPI writes the receive slot outside stream order.
      RINGATTN_RETURN_IF_ERROR(x.recv_free->host_wait());
    } else {
      const int s = int(x.index % 2);
      // The pinned receive slot is drained once its copy to the device is done.
      if (x.index >= 2) RINGATTN_CUDA_CHECK(cudaEventSynchronize(copied_[s]));
      const size_t half = x.send_bytes / 2;
      char* hs = static_cast<char*>(send_host_[s]);
      if (x.dst >= 0) {
        RINGATTN_CUDA_CHECK(cudaMemcpyAsync(hs, x.send, half, cudaMemcpyDeviceToHost, stream_));
        RINGATTN_CUDA_CHECK(cudaMemcpyAsync(hs + half, x.send_v, half, cudaMemcpyDeviceToHost, stream_));
      }
      h.send = hs;
      h.send_v = hs + half;
      h.recv = recv_host_[s];
    }
    if (x.dst >= 0) RINGATTN_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the packed block is complete
    RINGATTN_RETURN_IF_ERROR(host_->post(h));
    counters = host_->counters;
    return Status::Ok();
  }

  Status complete(const Exchange& x, double timeout_s) override {
    RINGATTN_RETURN_IF_ERROR(host_->complete(x, timeout_s));
    if (cuda_aware_) return Status::Ok();
    const int s = int(x.index % 2);
    RINGATTN_RETURN_IF_ERROR(x.recv_free->lane_wait());
    if (x.src >= 0)
      RINGATTN_CUDA_CHECK(cudaMemcpyAsync(x.recv, recv_host_[s], x.recv_bytes, cudaMemcpyHostToDevice, stream_));
    RINGATTN_CUDA_CHECK(cudaEventRecord(copied_[s], stream_));
    return Status::Ok();
  }

 private:
  static Status grow(void* (&bufs)[2], size_t* cap, size_t bytes) {
    if (bytes <= *cap) return Status::Ok();
    for (void*& p : bufs) {
      if (p) cudaFreeHost(p);
      p = nullptr;
      RINGATTN_CUDA_CHECK(cudaMallocHost(&p, bytes));
    }
    *cap = bytes;
    return Status::Ok();
  }

  std::unique_ptr<RingTransport> host_;
  bool cuda_aware_;
  cudaStream_t stream_;
  void* send_host_[2] = {nullptr, nullptr};
  void* recv_host_[2] = {nullptr, nullptr};
  size_t send_cap_ = 0, recv_cap_ = 0;
  cudaEvent_t copied_[2] = {nullptr, nullptr};
};

}  // namespace

Status make_mpi_device_transport(MPI_Comm comm, WaitPolicy policy, void* comm_stream, std::unique_ptr<RingTransport>* out) {
  auto t = std::make_unique<MpiDeviceTransport>(make_mpi_transport(comm, policy), detect_cuda_aware_mpi(),
                                                static_cast<cudaStream_t>(comm_stream));
  RINGATTN_RETURN_IF_ERROR(t->init());
  *out = std::move(t);
  return Status::Ok();
}

}  // namespace ringattn

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
    for (Staging& st : staging_)
      for (int s = 0; s < 2; ++s) {
        if (st.send_host[s]) cudaFreeHost(st.send_host[s]);
        if (st.recv_host[s]) cudaFreeHost(st.recv_host[s]);
        if (st.copied[s]) cudaEventDestroy(st.copied[s]);
      }
  }
  Status init() {
    for (Staging& st : staging_)
      for (cudaEvent_t& e : st.copied) RINGATTN_CUDA_CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming));
    return Status::Ok();
  }

  const char* name() const override { return cuda_aware_ ? "mpi (CUDA-aware)" : "mpi (host-staged)"; }
  bool host_driven() const override { return true; }

  Status reserve(size_t send_bytes, size_t recv_bytes, int channel) override {
    if (cuda_aware_) return Status::Ok();
    Staging& st = staging_[channel];
    RINGATTN_RETURN_IF_ERROR(grow(st.send_host, &st.send_cap, send_bytes));
    return grow(st.recv_host, &st.recv_cap, recv_bytes);
  }

  Status post(const Exchange& x) override {
    Exchange h = x;
    if (cuda_aware_) {
      // MPI writes the receive slot outside stream order.
      RINGATTN_RETURN_IF_ERROR(x.recv_free->host_wait());
    } else {
      Staging& stg = staging_[x.channel];
      const int s = int(x.index % 2);
      // The pinned receive slot is drained once its copy to the device is done.
      if (x.index >= 2) RINGATTN_CUDA_CHECK(cudaEventSynchronize(stg.copied[s]));
      const size_t half = x.send_bytes / 2;
      char* hs = static_cast<char*>(stg.send_host[s]);
      if (x.dst >= 0) {
        RINGATTN_CUDA_CHECK(cudaMemcpyAsync(hs, x.send, half, cudaMemcpyDeviceToHost, stream_));
        RINGATTN_CUDA_CHECK(cudaMemcpyAsync(hs + half, x.send_v, half, cudaMemcpyDeviceToHost, stream_));
      }
      h.send = hs;
      h.send_v = hs + half;
      h.recv = stg.recv_host[s];
    }
    if (x.dst >= 0) RINGATTN_CUDA_CHECK(cudaStreamSynchronize(stream_));  // the packed block is complete
    RINGATTN_RETURN_IF_ERROR(host_->post(h));
    counters = host_->counters;
    return Status::Ok();
  }

  Status complete(const Exchange& x, double timeout_s) override {
    RINGATTN_RETURN_IF_ERROR(host_->complete(x, timeout_s));
    if (cuda_aware_) return Status::Ok();
    Staging& stg = staging_[x.channel];
    const int s = int(x.index % 2);
    RINGATTN_RETURN_IF_ERROR(x.recv_free->lane_wait());
    if (x.src >= 0)
      RINGATTN_CUDA_CHECK(cudaMemcpyAsync(x.recv, stg.recv_host[s], x.recv_bytes, cudaMemcpyHostToDevice, stream_));
    RINGATTN_CUDA_CHECK(cudaEventRecord(stg.copied[s], stream_));
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
  // Pinned slots per channel (the ring's blocks, the return channel), two each.
  struct Staging {
    void* send_host[2] = {nullptr, nullptr};
    void* recv_host[2] = {nullptr, nullptr};
    size_t send_cap = 0, recv_cap = 0;
    cudaEvent_t copied[2] = {nullptr, nullptr};
  };
  Staging staging_[2];
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

// The nccl transport: rank 0's unique id is broadcast over MPI, the
// communicator is created non-blocking (so init and a lost peer can be timed
// out), and each ring step is one ncclGroupStart/End of its send and receive
// on the comm stream (or several steps in one group: post_group). A communicator left with operations posted (a failed
// ring, a peer that died) is aborted, never destroyed.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>

#include <chrono>
#include <string>
#include <thread>

#include "device/check_cuda.hpp"
#include "transport/transport.hpp"

namespace ringattn {
namespace {

class NcclTransport final : public RingTransport {
 public:
  NcclTransport(double timeout_s, cudaStream_t stream) : timeout_s_(timeout_s), stream_(stream) {}
  ~NcclTransport() override {
    if (comm_ == nullptr) return;
    if (aborted_) ncclCommAbort(comm_);
    else ncclCommDestroy(comm_);
  }

  Status init(MPI_Comm comm, int max_ctas) {
    int rank = 0, world = 1;
    RINGATTN_MPI_CHECK(MPI_Comm_rank(comm, &rank));
    RINGATTN_MPI_CHECK(MPI_Comm_size(comm, &world));
    ncclUniqueId id;
    if (rank == 0) RINGATTN_NCCL_CHECK(ncclGetUniqueId(&id));
    RINGATTN_MPI_CHECK(MPI_Bcast(&id, int(sizeof(id)), MPI_BYTE, 0, comm));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // non-blocking: init and abort can be timed out
    if (max_ctas > 0) config.maxCTAs = max_ctas;  // the SMs the attention leaves free
    RINGATTN_NCCL_CHECK(ncclCommInitRankConfig(&comm_, world, id, rank, &config));
    return ready();
  }

  const char* name() const override { return "nccl"; }
  bool host_driven() const override { return false; }

  Status post(const Exchange& x) override { return post_group({x}); }

  // One group: a single NCCL kernel moves every exchange of `xs`. Sends to
  // one peer match its receives in order (steps in order, K then V).
  Status post_group(const std::vector<Exchange>& xs) override {
    RINGATTN_NCCL_CHECK(ncclGroupStart());
    // A failed call inside the group still closes it (NCCL's group state is
    // per thread: an open one would swallow every later call, abort included).
    ncclResult_t bad = ncclSuccess;
    const char* what = "";
    auto call = [&](ncclResult_t r, const char* name) {
      if (r != ncclSuccess && r != ncclInProgress && bad == ncclSuccess) {
        bad = r;
        what = name;
      }
    };
    for (const Exchange& x : xs) {
      const size_t sh = x.send_bytes / 2, rh = x.recv_bytes / 2;
      if (x.dst >= 0) {
        call(ncclSend(x.send, sh, ncclUint8, x.dst, comm_, stream_), "ncclSend");
        call(ncclSend(x.send_v, sh, ncclUint8, x.dst, comm_, stream_), "ncclSend");
      }
      if (x.src >= 0) {
        call(ncclRecv(x.recv, rh, ncclUint8, x.src, comm_, stream_), "ncclRecv");
        call(ncclRecv(static_cast<char*>(x.recv) + rh, rh, ncclUint8, x.src, comm_, stream_), "ncclRecv");
      }
    }
    const ncclResult_t end = ncclGroupEnd();
    if (bad == ncclSuccess && end != ncclSuccess && end != ncclInProgress) {
      bad = end;
      what = "ncclGroupEnd";
    }
    if (bad != ncclSuccess) {
      aborted_ = true;
      return Status(StatusCode::kCommError, std::string(what) + " failed: " + ncclGetErrorString(bad));
    }
    Status r = ready();
    if (!r.ok()) {  // e.g. the first exchange with a peer that never joins (connections are made lazily)
      std::string what;
      for (const Exchange& x : xs)
        what += (what.empty() ? "ring step " : "; ring step ") + std::to_string(x.step) +
                (x.dst < 0 ? "" : " sending to rank " + std::to_string(x.dst)) +
                (x.src < 0 ? "" : " receiving from rank " + std::to_string(x.src));
      return Status(r.code(), what + ": " + r.message() + " (peer failed or hung; see its output)");
    }
    for (const Exchange& x : xs) {
      if (x.dst >= 0) counters.bytes_sent += int64_t(x.send_bytes);
      if (x.src >= 0) counters.bytes_received += int64_t(x.recv_bytes);
    }
    return Status::Ok();
  }

  // Enqueued on the comm stream: the block is there in its order.
  Status complete(const Exchange&, double) override { return Status::Ok(); }

  Status poll_error() override {
    ncclResult_t r = ncclSuccess;
    RINGATTN_NCCL_CHECK(ncclCommGetAsyncError(comm_, &r));
    if (r == ncclSuccess || r == ncclInProgress) return Status::Ok();
    aborted_ = true;
    return Status(StatusCode::kCommError, std::string("NCCL asynchronous error: ") + ncclGetErrorString(r));
  }

  void abort() override { aborted_ = true; }

 private:
  // Polls the non-blocking communicator until its last call is done.
  Status ready() {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    for (;;) {
      ncclResult_t r = ncclInProgress;
      RINGATTN_NCCL_CHECK(ncclCommGetAsyncError(comm_, &r));
      if (r == ncclSuccess) return Status::Ok();
      if (r != ncclInProgress) {
        aborted_ = true;
        return Status(StatusCode::kCommError, std::string("NCCL: ") + ncclGetErrorString(r));
      }
      if (std::chrono::duration<double>(Clock::now() - t0).count() > timeout_s_) {
        aborted_ = true;
        return Status(StatusCode::kTimeout, "NCCL did not become ready within " + std::to_string(int(timeout_s_)) + " s");
      }
      std::this_thread::yield();
    }
  }

  double timeout_s_;
  cudaStream_t stream_;
  ncclComm_t comm_ = nullptr;
  bool aborted_ = false;
};

}  // namespace

Status make_nccl_transport(MPI_Comm comm, double timeout_s, int max_ctas, void* comm_stream,
                           std::unique_ptr<RingTransport>* out) {
  auto t = std::make_unique<NcclTransport>(timeout_s, static_cast<cudaStream_t>(comm_stream));
  Status st = t->init(comm, max_ctas);
  *out = std::move(t);  // kept after a failed init, so the destructor aborts what was started
  return st;
}

}  // namespace ringattn

// The NCCL gradient sum (grad_sum.hpp). Like the ring's NCCL transport
// (runtime/src/transport/nccl.cu), the communicator is non-blocking, so its
// init and every all-reduce are waited for under a timeout while its
// asynchronous error is polled: a peer that dies or stalls is an error after
// `timeout` seconds on the ranks that remain, never a hang; the communicator
// is then aborted, not destroyed (which would wait for the lost work).
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <string>
#include <thread>

#include "grad_sum.hpp"

namespace train {
namespace {

using ringattn::Status;
using ringattn::StatusCode;

Status nccl_status(ncclResult_t r, const char* what) {
  if (r == ncclSuccess || r == ncclInProgress) return Status::Ok();
  return Status(StatusCode::kCommError, std::string("--grad-sum nccl: ") + what + ": " + ncclGetErrorString(r));
}

Status cuda_status(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return Status::Ok();
  return Status(StatusCode::kDeviceError, std::string("--grad-sum nccl: ") + what + ": " + cudaGetErrorString(e));
}

// Polls until done() or the communicator reports an error, for at most timeout_s.
template <class Done>
Status wait_for(ncclComm_t c, double timeout_s, const char* what, Done done) {
  const auto t0 = std::chrono::steady_clock::now();
  for (;;) {
    ncclResult_t r = ncclSuccess;
    RINGATTN_RETURN_IF_ERROR(nccl_status(ncclCommGetAsyncError(c, &r), "ncclCommGetAsyncError"));
    RINGATTN_RETURN_IF_ERROR(nccl_status(r, what));
    bool ok = false;
    RINGATTN_RETURN_IF_ERROR(done(r, &ok));
    if (ok) return Status::Ok();
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() > timeout_s)
      return Status(StatusCode::kTimeout, std::string("--grad-sum nccl: ") + what + " did not finish in " +
                                              std::to_string(timeout_s) + " s (a peer stopped or stalls; --timeout)");
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

class NcclGradSum final : public GradSum {
 public:
  NcclGradSum(ncclComm_t c, double timeout_s) : comm_(c), timeout_s_(timeout_s) {}
  ~NcclGradSum() override {
    if (done_) cudaEventDestroy(done_);
    if (comm_) ncclCommAbort(comm_);  // nothing is pending after a successful sum; after a failure this must not wait
  }
  Status init_event() { return cuda_status(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming), "cudaEventCreate"); }

  Status sum(float* g, int64_t n) override {
    if (n <= 0) return Status::Ok();
    RINGATTN_RETURN_IF_ERROR(nccl_status(ncclAllReduce(g, g, size_t(n), ncclFloat32, ncclSum, comm_, cudaStreamLegacy),
                                         "ncclAllReduce (gradients)"));
    // A non-blocking communicator may still be enqueuing: wait until the call is issued.
    RINGATTN_RETURN_IF_ERROR(wait_for(comm_, timeout_s_, "ncclAllReduce (gradients)", [](ncclResult_t r, bool* ok) {
      *ok = r == ncclSuccess;
      return Status::Ok();
    }));
    // Then until it is done on the device, polling NCCL's error: a lost peer never completes it.
    RINGATTN_RETURN_IF_ERROR(cuda_status(cudaEventRecord(done_, cudaStreamLegacy), "cudaEventRecord"));
    return wait_for(comm_, timeout_s_, "the gradients' all-reduce", [this](ncclResult_t, bool* ok) {
      const cudaError_t e = cudaEventQuery(done_);
      *ok = e == cudaSuccess;
      return e == cudaErrorNotReady ? Status::Ok() : cuda_status(e, "cudaEventQuery");
    });
  }

 private:
  ncclComm_t comm_ = nullptr;
  double timeout_s_;
  cudaEvent_t done_ = nullptr;
};

}  // namespace

Status make_nccl_grad_sum(MPI_Comm comm, double timeout_s, std::unique_ptr<GradSum>* out) {
  int rank = 0, size = 0;
  if (MPI_Comm_rank(comm, &rank) != MPI_SUCCESS || MPI_Comm_size(comm, &size) != MPI_SUCCESS)
    return Status(StatusCode::kCommError, "--grad-sum nccl: MPI_Comm_rank/size failed");
  // Rank 0's id and whether it could make one travel together: no rank enters
  // the collective NCCL init when rank 0 could not.
  struct {
    ncclUniqueId id;
    int ok;
  } msg{};
  if (rank == 0) msg.ok = ncclGetUniqueId(&msg.id) == ncclSuccess ? 1 : 0;
  if (MPI_Bcast(&msg, int(sizeof(msg)), MPI_BYTE, 0, comm) != MPI_SUCCESS)
    return Status(StatusCode::kCommError, "--grad-sum nccl: MPI_Bcast of the NCCL id failed");
  if (!msg.ok) return Status(StatusCode::kCommError, "--grad-sum nccl: ncclGetUniqueId failed on rank 0");
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;  // init and every call can be timed out
  ncclComm_t c = nullptr;
  RINGATTN_RETURN_IF_ERROR(nccl_status(ncclCommInitRankConfig(&c, size, msg.id, rank, &config), "ncclCommInitRankConfig"));
  auto gs = std::make_unique<NcclGradSum>(c, timeout_s);  // owns c from here (aborted on any failure below)
  RINGATTN_RETURN_IF_ERROR(wait_for(c, timeout_s, "NCCL init (gradient sum)", [](ncclResult_t r, bool* ok) {
    *ok = r == ncclSuccess;
    return Status::Ok();
  }));
  RINGATTN_RETURN_IF_ERROR(gs->init_event());
  *out = std::move(gs);
  return Status::Ok();
}

}  // namespace train

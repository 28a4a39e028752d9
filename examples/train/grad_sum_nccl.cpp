#include <cuda_runtime.h>
#include <nccl.h>

#include <string>

#include "grad_sum.hpp"

namespace train {
namespace {

using ringattn::Status;
using ringattn::StatusCode;

Status nccl_status(ncclResult_t r, const char* what) {
  if (r == ncclSuccess) return Status::Ok();
  return Status(StatusCode::kCommError, std::string("--grad-sum nccl: ") + what + ": " + ncclGetErrorString(r));
}

class NcclGradSum final : public GradSum {
 public:
  explicit NcclGradSum(ncclComm_t c) : comm_(c) {}
  ~NcclGradSum() override {
    if (comm_) ncclCommDestroy(comm_);
  }
  Status sum(float* g, int64_t n) override {
    if (n <= 0) return Status::Ok();
    return nccl_status(ncclAllReduce(g, g, size_t(n), ncclFloat32, ncclSum, comm_, cudaStreamLegacy),
                       "ncclAllReduce (gradients)");
  }

 private:
  ncclComm_t comm_ = nullptr;
};

}  // namespace

Status make_nccl_grad_sum(MPI_Comm comm, std::unique_ptr<GradSum>* out) {
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
  ncclComm_t c = nullptr;
  RINGATTN_RETURN_IF_ERROR(nccl_status(ncclCommInitRank(&c, size, msg.id, rank), "ncclCommInitRank"));
  *out = std::make_unique<NcclGradSum>(c);
  return Status::Ok();
}

}  // namespace train

#include "api/agree.hpp"

#include <cstring>
#include <string>

#include "device/check.hpp"
#include "ringattn/ringattn.hpp"

namespace ringattn {

Status agree(MPI_Comm comm, const Status& local, uint64_t hash, int64_t seq, int64_t batch) {
  int rank = 0, world = 1;
  RINGATTN_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  RINGATTN_MPI_CHECK(MPI_Comm_size(comm, &world));
  const int64_t lo = int64_t(hash & 0xffffffffu), hi = int64_t(hash >> 32);
  int64_t v[9] = {local.ok() ? 0 : int64_t(world - rank), lo, -lo, hi, -hi, seq, -seq, batch, -batch};
  RINGATTN_MPI_CHECK(MPI_Allreduce(MPI_IN_PLACE, v, 9, MPI_INT64_T, MPI_MAX, comm));
  if (v[0] > 0) {
    const int root = int(world - v[0]);  // lowest failing rank
    struct {
      int code;
      char msg[1024];
    } m{};
    if (rank == root) {
      m.code = int(local.code());
      std::strncpy(m.msg, local.message().c_str(), sizeof(m.msg) - 1);
    }
    RINGATTN_MPI_CHECK(MPI_Bcast(&m, int(sizeof(m)), MPI_BYTE, root, comm));
    std::string text = world > 1 ? "rank " + std::to_string(root) + ": " + m.msg : std::string(m.msg);
    return Status(StatusCode(m.code), text);
  }
  if (v[5] != -v[6]) {
    return Status(StatusCode::kMismatch, "ranks disagree on seq (N): values range from " + std::to_string(-v[6]) +
                                             " to " + std::to_string(v[5]) + " (every rank must pass the same N)");
  }
  if (v[7] != -v[8]) {
    return Status(StatusCode::kMismatch, "ranks disagree on batch: values range from " + std::to_string(-v[8]) +
                                             " to " + std::to_string(v[7]) + " (every rank must pass the same batch)");
  }
  if (v[1] != -v[2] || v[3] != -v[4]) {
    return Status(StatusCode::kMismatch,
                  "ranks disagree on the configuration (branches, causal, scale, head offsets, dtype, backend, "
                  "transport, heads, head_dim, deterministic or RINGATTN_PACK_SEGMENTS differ between ranks)");
  }
  return Status::Ok();
}

}  // namespace ringattn

namespace ringattn {
Status all_ranks(MPI_Comm comm, const Status& local) { return agree(comm, local, 0, 0, 0); }
Status all_ranks(MPI_Comm comm, const Status& local, uint64_t key, const Shape& shape) {
  return agree(comm, local, key, shape.seq, shape.batch);
}
}  // namespace ringattn

#include "job.hpp"

#include <cstdio>
#include <cstdlib>

#include "ringattn/device.hpp"

namespace ringattn::cli {

Group Group::world() {
  Group g;
  MPI_Comm_rank(MPI_COMM_WORLD, &g.rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g.size);
  return g;
}

int exit_code(const Status& s) {
  switch (s.code()) {
    case StatusCode::kOk:
      return 0;
    case StatusCode::kInvalidArgument:
    case StatusCode::kMismatch:
    case StatusCode::kUnsupported:
      return 2;
    case StatusCode::kCommError:
    case StatusCode::kTimeout:
    case StatusCode::kPeerError:
      return 3;
    default:
      return 1;
  }
}

Status agree(const Group& g, const Status& local, bool name_rank) {
  const int mine[2] = {local.ok() ? g.size : g.rank, local.ok() ? 0 : 1};
  int lowest = g.size, failed = 0;
  MPI_Allreduce(&mine[0], &lowest, 1, MPI_INT, MPI_MIN, g.comm);
  MPI_Allreduce(&mine[1], &failed, 1, MPI_INT, MPI_SUM, g.comm);
  if (failed == 0) return Status::Ok();
  int code = int(local.code());
  std::string text = local.message();
  int len = int(text.size());
  MPI_Bcast(&code, 1, MPI_INT, lowest, g.comm);
  MPI_Bcast(&len, 1, MPI_INT, lowest, g.comm);
  text.resize(size_t(len));
  MPI_Bcast(&text[0], len, MPI_CHAR, lowest, g.comm);
  if (name_rank && failed < g.size) text = "rank " + std::to_string(lowest) + " of " + std::to_string(g.size) + ": " + text;
  return Status(StatusCode(code), text);
}

void exit_job(const Status& s) {
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank == 0) std::fprintf(stderr, "ringattn: error: %s\n", s.message().c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  MPI_Finalize();
  std::exit(exit_code(s));
}

void abort_job(const Group& g, const Status& s) {
  std::fprintf(stderr, "ringattn: error on rank %d of %d: %s (ending the job)\n", g.rank, g.size, s.message().c_str());
  std::fflush(stdout);
  std::fflush(stderr);
  const int code = exit_code(s);
  MPI_Abort(MPI_COMM_WORLD, code);
  std::exit(code);
}

std::vector<std::string> gather_lines(const Group& g, const std::string& mine) {
  int len = int(mine.size());
  std::vector<int> lens(size_t(g.size)), displs(size_t(g.size));
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, g.comm);
  std::string all;
  if (g.rank == 0) {
    int total = 0;
    for (int i = 0; i < g.size; ++i) displs[size_t(i)] = total, total += lens[size_t(i)];
    all.resize(size_t(total));
  }
  MPI_Gatherv(mine.data(), len, MPI_CHAR, g.rank == 0 ? &all[0] : nullptr, lens.data(), displs.data(), MPI_CHAR, 0, g.comm);
  std::vector<std::string> out;
  if (g.rank == 0)
    for (int i = 0; i < g.size; ++i) out.push_back(all.substr(size_t(displs[size_t(i)]), size_t(lens[size_t(i)])));
  return out;
}

void host_rank(int* local_rank, int* local_size) {
  MPI_Comm local;
  MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &local);
  MPI_Comm_rank(local, local_rank);
  MPI_Comm_size(local, local_size);
  MPI_Comm_free(&local);
}

Transport default_transport(Backend b) { return b == Backend::cuda ? Transport::nccl : Transport::mpi; }

Status select_local_device() {
  int local_rank = 0, local_size = 1;
  host_rank(&local_rank, &local_size);
  return dev::select_device(local_rank);
}

}  // namespace ringattn::cli

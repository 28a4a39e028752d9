// The ranks of a job and how it ends. Errors found before data moves are
// agreed on by every rank (collective), printed once by rank 0 and end the
// job with the documented exit code after MPI_Finalize, so the launcher adds
// nothing (./launch/ringattn runs mpirun -q). A failure after data started to
// move cannot be agreed on (a peer may be gone): the rank that sees it prints
// it and aborts the job.
#pragma once
#include <mpi.h>

#include <string>
#include <vector>

#include "ringattn/config.hpp"
#include "ringattn/status.hpp"

namespace ringattn::cli {

// The ranks of one measurement: the world, or the first g ranks (--scaling).
struct Group {
  MPI_Comm comm = MPI_COMM_WORLD;
  int rank = 0, size = 1;
  static Group world();
};

// Exit codes: 0 success; 1 a failure (verify FAILED, a write, the device);
// 2 bad arguments or inputs (invalid, mismatched, unsupported);
// 3 communication failure or timeout.
int exit_code(const Status& s);

// Collective over `g`: OK when no rank failed, else the lowest failing rank's
// error on every rank. Its message names that rank ("rank 1 of 2: ...")
// unless every rank failed or `name_rank` is false.
Status agree(const Group& g, const Status& local, bool name_rank = true);

// Collective over the world, all ranks with the same error: rank 0 prints it
// once, every rank finalizes MPI and exits with exit_code(s).
[[noreturn]] void exit_job(const Status& s);

// Not collective: this rank prints the error, naming itself, and aborts the job.
[[noreturn]] void abort_job(const Group& g, const Status& s);

// Collective over `g`: one line per rank, in rank order, on rank 0 (empty elsewhere).
std::vector<std::string> gather_lines(const Group& g, const std::string& mine);

// This rank's index among the ranks of its host, and their number.
void host_rank(int* local_rank, int* local_size);

// The transport of a job that names none: nccl on cuda, mpi on cpu.
Transport default_transport(Backend b);

// Collective over the world (host_rank): this rank takes the GPU
// local_rank mod dev::device_count(). Call it before any CUDA work of the
// rank (a Context, a cuBLAS handle) and agree on the outcome.
Status select_local_device();

}  // namespace ringattn::cli

// Agrees on `expr` over `group`; returns the agreed error from the enclosing function.
#define CLI_AGREE(group, expr)                                      \
  do {                                                              \
    ::ringattn::Status _agreed = ::ringattn::cli::agree(group, expr); \
    if (!_agreed.ok()) return _agreed;                              \
  } while (0)

// After data started to move: a failure aborts the job (see abort_job).
#define CLI_OR_ABORT(group, expr)                             \
  do {                                                        \
    ::ringattn::Status _st = (expr);                          \
    if (!_st.ok()) ::ringattn::cli::abort_job(group, _st);    \
  } while (0)

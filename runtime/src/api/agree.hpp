// Collective agreement before any data moves: one allreduce carries every
// rank's error flag, config hash and shape; if anything is off, every rank
// returns the same Status (the lowest failing rank's message, broadcast).
#pragma once
#include <mpi.h>

#include <cstdint>

#include "ringattn/status.hpp"

namespace ringattn {

Status agree(MPI_Comm comm, const Status& local, uint64_t config_hash, int64_t seq, int64_t batch);

}  // namespace ringattn

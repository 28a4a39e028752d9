// Helpers of the MPI suite: rank and size, a seed every rank agrees on, string
// broadcast, and a fixture that reports on rank 0 which ranks failed a test
// (their own messages go to stderr, prefixed with the rank).
#pragma once
#include <gtest/gtest.h>
#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common/test_util.hpp"

namespace ringattn::test {

inline int mpi_rank() {
  int r = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &r);
  return r;
}
inline int mpi_size() {
  int n = 1;
  MPI_Comm_size(MPI_COMM_WORLD, &n);
  return n;
}

// A fresh seed, drawn on rank 0 and broadcast so all ranks make the same inputs.
inline uint64_t shared_seed() {
  uint64_t s = mpi_rank() == 0 ? fresh_seed() : 0;
  MPI_Bcast(&s, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
  return s;
}

inline std::string bcast_string(const std::string& s, int root) {
  int n = int(s.size());
  MPI_Bcast(&n, 1, MPI_INT, root, MPI_COMM_WORLD);
  std::string out = s;
  out.resize(size_t(n));
  MPI_Bcast(out.data(), n, MPI_CHAR, root, MPI_COMM_WORLD);
  return out;
}

// Fails on every rank when the value differs between ranks (returns rank 0's value).
inline int64_t bcast_i64(int64_t v, int root) {
  MPI_Bcast(&v, 1, MPI_INT64_T, root, MPI_COMM_WORLD);
  return v;
}

// Every test of the MPI suite derives from this: at the end of a test all
// ranks exchange whether they failed, and rank 0 (the only one that prints
// the gtest report) adds a failure naming the failing ranks.
class MpiTest : public ::testing::Test {
 protected:
  void TearDown() override {
    const int P = mpi_size();
    int mine = HasFailure() ? 1 : 0;
    std::vector<int> all(size_t(P), 0);
    MPI_Allgather(&mine, 1, MPI_INT, all.data(), 1, MPI_INT, MPI_COMM_WORLD);
    if (mpi_rank() != 0) return;
    std::string who;
    for (int r = 1; r < P; ++r)
      if (all[size_t(r)]) who += (who.empty() ? "" : ", ") + std::to_string(r);
    if (!who.empty()) ADD_FAILURE() << "failed on rank(s) " << who << " (their messages are on stderr)";
  }
};

template <class Param>
class MpiTestWithParam : public MpiTest, public ::testing::WithParamInterface<Param> {};

}  // namespace ringattn::test

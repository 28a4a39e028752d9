// An executor runs one plan on one backend: it packs rows for peers, drives
// the transport step by step, runs the attention passes on whatever keys
// have arrived and merges them into O and LSE.
#pragma once
#include <mpi.h>

#include <memory>

#include "plan.hpp"
#include "ringattn/ringattn.hpp"
#include "transport.hpp"

namespace ringattn {

struct ForwardArgs {
  const Shape* shape;
  const void* q;
  const void* k;
  const void* v;
  void* o;
  float* lse;
  void* stream;
};

class Executor {
 public:
  virtual ~Executor() = default;
  virtual Status forward(const Plan& plan, const ForwardArgs& a, Stats* stats) = 0;
};

std::unique_ptr<Executor> make_cpu_executor(const Config& c, RingTransport* transport, int rank);

// Defined by the CUDA backend; without CUDA support it returns kUnsupported.
Status make_cuda_executor(const Config& c, MPI_Comm comm, std::unique_ptr<Executor>* out);
bool cuda_backend_compiled();

}  // namespace ringattn

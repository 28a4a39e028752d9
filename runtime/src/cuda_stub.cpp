// Built when the CUDA backend is not compiled in.
#include "executor.hpp"

namespace ringattn {

bool cuda_backend_compiled() { return false; }

Status make_cuda_executor(const Config&, MPI_Comm, std::unique_ptr<Executor>*) {
  return Unsupported("backend 'cuda' is not compiled into this build (configure with the 'gpu' or 'ci' preset on a "
                     "machine with the CUDA toolkit; allowed here: cpu)");
}

}  // namespace ringattn

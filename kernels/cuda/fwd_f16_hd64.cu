// Explicit instantiation: f16, head dim 64 (causal and not).
#include "kernels/cuda/fwd_kernel.cuh"

namespace ringattn::kern::cuda::detail {
template cudaError_t run_fwd<__half, 64>(const FwdParams&, cudaStream_t);
}  // namespace ringattn::kern::cuda::detail

// Explicit instantiation: f16, head dim 128 (causal and not).
#include "kernels/cuda/bwd_kernel.cuh"

namespace ringattn::kern::cuda::detail {
template cudaError_t run_bwd<__half, 128>(const BwdParams&, cudaStream_t, bool*);
}  // namespace ringattn::kern::cuda::detail

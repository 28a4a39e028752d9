// Explicit instantiation: bf16, head dim 128 (causal and not).
#include "kernels/cuda/bwd_kernel.cuh"

namespace ringattn::kern::cuda::detail {
template cudaError_t run_bwd<__nv_bfloat16, 128>(const BwdParams&, cudaStream_t, bool*);
}  // namespace ringattn::kern::cuda::detail

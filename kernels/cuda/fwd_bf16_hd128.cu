// Explicit instantiation: bf16, head dim 128 (causal and not).
#include "kernels/cuda/fwd_kernel.cuh"

namespace ringattn::kern::cuda::detail {
template cudaError_t run_fwd<__nv_bfloat16, 128>(const FwdParams&, cudaStream_t);
}  // namespace ringattn::kern::cuda::detail

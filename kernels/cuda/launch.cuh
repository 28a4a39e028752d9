// One launch of an attention kernel, plain or as a programmatic dependent
// launch (PDL, sm_90; FwdParams::pdl, BwdParams::pdl): with `pdl` the kernel
// goes through cudaLaunchKernelEx with programmatic stream serialization, so
// its CTAs may start once every CTA of the kernel before it on the stream has
// executed griddepcontrol.launch_dependents (or exited), before that kernel
// has completed; the kernel then orders itself behind it with
// griddepcontrol.wait wherever it touches that kernel's data. Without `pdl`
// the triple-chevron launch, exactly as before.
#pragma once
#include <cuda_runtime.h>

namespace ringattn::kern::cuda::detail {

template <typename Params>
cudaError_t launch_kernel(void (*kernel)(Params), dim3 grid, int threads, int smem, cudaStream_t stream,
                          const Params& p, bool pdl) {
  if (!pdl) {
    kernel<<<grid, threads, smem, stream>>>(p);
    return cudaGetLastError();
  }
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = grid;
  cfg.blockDim = dim3(unsigned(threads));
  cfg.dynamicSmemBytes = size_t(smem);
  cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  const cudaError_t e = cudaLaunchKernelEx(&cfg, kernel, p);
  const cudaError_t last = cudaGetLastError();  // cleared, as after a <<<>>> launch
  return e != cudaSuccess ? e : last;
}

}  // namespace ringattn::kern::cuda::detail

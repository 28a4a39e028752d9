// The CUDA half of ringattn::dev: device buffers, poison, events.
#include <string>

#include "device/device_impl.hpp"
#include "kernels/cuda/synth_fill.hpp"
#include "device/check_cuda.hpp"
#include "ringattn/device.hpp"

namespace ringattn::dev {

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}

Status select_device(int local_rank) {
  int n = device_count();
  if (n == 0) return Status(StatusCode::kDeviceError, "backend 'cuda' needs a GPU but none is visible (allowed here: --backend cpu)");
  RINGATTN_CUDA_CHECK(cudaSetDevice(local_rank % n));
  return Status::Ok();
}

Status cuda_alloc(size_t bytes, void** out) {
  cudaError_t e = cudaMalloc(out, bytes ? bytes : 16);
  if (e != cudaSuccess) {
    return Status(StatusCode::kDeviceError, "cudaMalloc of " + std::to_string(bytes) + " bytes failed: " + cudaGetErrorString(e));
  }
  return Status::Ok();
}
void cuda_release(void* p) {
  if (p) cudaFree(p);
}
Status cuda_copy(void* dst, const void* src, size_t n, bool to_device) {
  RINGATTN_CUDA_CHECK(cudaMemcpy(dst, src, n, to_device ? cudaMemcpyHostToDevice : cudaMemcpyDeviceToHost));
  return Status::Ok();
}
Status cuda_poison(void* p, size_t n) {
  // Ordered on the default stream (before any forward enqueued after it on
  // that stream); no host wait, so it can go between forwards in flight.
  RINGATTN_CUDA_CHECK(cudaMemsetAsync(p, 0xff, n, nullptr));
  return Status::Ok();
}
Status cuda_fill_synthetic(int dtype, uint64_t seed, int tensor, double amplitude, int64_t batch, int64_t seq,
                           int64_t row0, int64_t rows, int64_t heads, int64_t head_dim, void* dst) {
  RINGATTN_CUDA_CHECK(kern::cuda::synth_fill(dst, kern::ElemKind(dtype), seed, uint64_t(tensor), amplitude, batch, seq,
                                             row0, rows, heads, head_dim, nullptr));
  return Status::Ok();
}

Status cuda_synchronize() {
  RINGATTN_CUDA_CHECK(cudaDeviceSynchronize());
  return Status::Ok();
}
int64_t cuda_bytes_in_use() {
  size_t free_b = 0, total = 0;
  if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) return 0;
  return int64_t(total - free_b);
}
const char* cuda_device_name() {
  static std::string name;
  cudaDeviceProp prop;
  int d = 0;
  if (cudaGetDevice(&d) != cudaSuccess || cudaGetDeviceProperties(&prop, d) != cudaSuccess) return "cuda (unknown)";
  name = prop.name;
  return name.c_str();
}
void cuda_events_create(void** ev) {
  cudaEventCreate(reinterpret_cast<cudaEvent_t*>(&ev[0]));
  cudaEventCreate(reinterpret_cast<cudaEvent_t*>(&ev[1]));
}
void cuda_events_destroy(void** ev) {
  if (ev[0]) cudaEventDestroy(static_cast<cudaEvent_t>(ev[0]));
  if (ev[1]) cudaEventDestroy(static_cast<cudaEvent_t>(ev[1]));
}
Status cuda_event_record(void* ev, void* stream) {
  RINGATTN_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(ev), static_cast<cudaStream_t>(stream)));
  return Status::Ok();
}
Status cuda_event_elapsed(void** ev, void* stream, double* ms) {
  RINGATTN_CUDA_CHECK(cudaEventRecord(static_cast<cudaEvent_t>(ev[1]), static_cast<cudaStream_t>(stream)));
  RINGATTN_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(ev[1])));
  float f = 0;
  RINGATTN_CUDA_CHECK(cudaEventElapsedTime(&f, static_cast<cudaEvent_t>(ev[0]), static_cast<cudaEvent_t>(ev[1])));
  *ms = f;
  return Status::Ok();
}

void* cuda_event_new() {
  cudaEvent_t e = nullptr;
  return cudaEventCreate(&e) == cudaSuccess ? static_cast<void*>(e) : nullptr;
}
void cuda_event_free(void* ev) {
  if (ev) cudaEventDestroy(static_cast<cudaEvent_t>(ev));
}
Status cuda_event_between(void* a, void* b, double* ms) {
  RINGATTN_CUDA_CHECK(cudaEventSynchronize(static_cast<cudaEvent_t>(b)));
  float f = 0;
  RINGATTN_CUDA_CHECK(cudaEventElapsedTime(&f, static_cast<cudaEvent_t>(a), static_cast<cudaEvent_t>(b)));
  *ms = f;
  return Status::Ok();
}

}  // namespace ringattn::dev

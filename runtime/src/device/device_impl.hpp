// The CUDA half of ringattn::dev (runtime/src/cuda/device.cu), or stubs
// that report the backend missing (runtime/src/cuda_stub.cpp).
#pragma once
#include <cstddef>
#include <cstdint>

#include "ringattn/status.hpp"

namespace ringattn::dev {
Status cuda_alloc(size_t bytes, void** out);
void cuda_release(void* p);
Status cuda_copy(void* dst, const void* src, size_t n, bool to_device);
Status cuda_poison(void* p, size_t n);
Status cuda_synchronize();
Status cuda_fill_synthetic(int dtype, uint64_t seed, int tensor, double amplitude, int64_t batch, int64_t seq,
                           int64_t row0, int64_t rows, int64_t heads, int64_t head_dim, void* dst);
int64_t cuda_bytes_in_use();
const char* cuda_device_name();
void cuda_events_create(void** ev);
void cuda_events_destroy(void** ev);
Status cuda_event_record(void* ev, void* stream);
Status cuda_event_elapsed(void** ev, void* stream, double* ms);
void* cuda_event_new();
void cuda_event_free(void* ev);
Status cuda_event_between(void* a, void* b, double* ms);  // waits for b
}  // namespace ringattn::dev

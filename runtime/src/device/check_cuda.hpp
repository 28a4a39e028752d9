#pragma once
#include <cuda_runtime.h>
#include <nccl.h>

#include "device/check.hpp"

#define RINGATTN_CUDA_CHECK(call)                                                                          \
  do {                                                                                                     \
    cudaError_t _e = (call);                                                                               \
    if (_e != cudaSuccess)                                                                                 \
      return ::ringattn::Status(::ringattn::StatusCode::kDeviceError,                                      \
                                ::ringattn::where(__FILE__, __LINE__) + ": " #call " failed: " +           \
                                    cudaGetErrorString(_e));                                               \
  } while (0)

#define RINGATTN_NCCL_CHECK(call)                                                                          \
  do {                                                                                                     \
    ncclResult_t _r = (call);                                                                              \
    if (_r != ncclSuccess && _r != ncclInProgress)                                                         \
      return ::ringattn::Status(::ringattn::StatusCode::kCommError,                                        \
                                ::ringattn::where(__FILE__, __LINE__) + ": " #call " failed: " +           \
                                    ncclGetErrorString(_r));                                               \
  } while (0)

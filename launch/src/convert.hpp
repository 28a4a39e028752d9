// Bulk element conversions of the command line, each in one function
// (kernels/common/convert.hpp does the work): float <-> the run's dtype. Rounding a value to the dtype is encode followed by decode.
#pragma once
#include <cstddef>

#include "ringattn/config.hpp"

namespace ringattn::cli {

// n floats -> n elements of `dt` (dtype_size(dt) bytes each) at dst.
void encode(DType dt, const float* src, size_t n, void* dst);
// n elements of `dt` -> n floats.
void decode(DType dt, const void* src, size_t n, float* dst);

}  // namespace ringattn::cli

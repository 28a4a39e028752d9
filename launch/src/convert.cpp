#include "convert.hpp"

#include <cstdint>
#include <cstring>

#include "kernels/common/half.hpp"

namespace ringattn::cli {

void encode(DType dt, const float* src, size_t n, void* dst) {
  if (dt == DType::f32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst);
  for (size_t i = 0; i < n; ++i) d[i] = dt == DType::f16 ? kern::float_to_f16(src[i]) : kern::float_to_bf16(src[i]);
}

void decode(DType dt, const void* src, size_t n, float* dst) {
  if (dt == DType::f32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src);
  for (size_t i = 0; i < n; ++i) dst[i] = dt == DType::f16 ? kern::f16_to_float(s[i]) : kern::bf16_to_float(s[i]);
}

}  // namespace ringattn::cli

// Bulk conversion between float and the element types of Q, K, V and O on the
// host (the CPU backend, the command line, .npy files): the one place where a
// buffer of f32, f16 or bf16 becomes float and back. Round to nearest even
// (half.hpp).
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "kernels/common/half.hpp"

namespace ringattn::kern {

// Element type of a host buffer. The values match ringattn::DType's.
enum class ElemKind : int { f32 = 0, f16 = 1, bf16 = 2 };

inline size_t elem_bytes(ElemKind k) { return k == ElemKind::f32 ? 4 : 2; }

// n elements of `kind` at src -> n floats at dst.
inline void to_float(ElemKind kind, const void* src, size_t n, float* dst) {
  if (kind == ElemKind::f32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  const uint16_t* s = static_cast<const uint16_t*>(src);
  if (kind == ElemKind::f16) {
    for (size_t i = 0; i < n; ++i) dst[i] = f16_to_float(s[i]);
  } else {
    for (size_t i = 0; i < n; ++i) dst[i] = bf16_to_float(s[i]);
  }
}

// n floats at src -> n elements of `kind` at dst.
inline void from_float(ElemKind kind, const float* src, size_t n, void* dst) {
  if (kind == ElemKind::f32) {
    std::memcpy(dst, src, n * 4);
    return;
  }
  uint16_t* d = static_cast<uint16_t*>(dst);
  if (kind == ElemKind::f16) {
    for (size_t i = 0; i < n; ++i) d[i] = float_to_f16(src[i]);
  } else {
    for (size_t i = 0; i < n; ++i) d[i] = float_to_bf16(src[i]);
  }
}

// The value a float takes once stored as `kind`.
inline float round_to(ElemKind kind, float x) {
  if (kind == ElemKind::f16) return f16_to_float(float_to_f16(x));
  if (kind == ElemKind::bf16) return bf16_to_float(float_to_bf16(x));
  return x;
}

}  // namespace ringattn::kern

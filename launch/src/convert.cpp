#include "convert.hpp"

#include "kernels/common/convert.hpp"

namespace ringattn::cli {
namespace {
// The runtime's DType and the kernels' ElemKind number the dtypes alike.
kern::ElemKind kind(DType dt) { return kern::ElemKind(int(dt)); }
static_assert(int(DType::f32) == int(kern::ElemKind::f32) && int(DType::f16) == int(kern::ElemKind::f16) &&
              int(DType::bf16) == int(kern::ElemKind::bf16));
}  // namespace

void encode(DType dt, const float* src, size_t n, void* dst) { kern::from_float(kind(dt), src, n, dst); }
void decode(DType dt, const void* src, size_t n, float* dst) { kern::to_float(kind(dt), src, n, dst); }

}  // namespace ringattn::cli

// Small helpers shared by the unit and MPI suites: configs, fresh seeds,
// random inputs, dtype rounding and SPEC error metrics.
#pragma once
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ringattn/names.hpp"
#include "kernels/common/convert.hpp"
#include "kernels/cpu/reference.hpp"
#include "kernels/cpu/synth.hpp"
#include "ringattn/config.hpp"

namespace ringattn::test {

inline Config make_config(std::vector<Branch> branches, int64_t heads, int64_t head_dim, bool causal = false,
                          HeadOffsets offsets = HeadOffsets::interleaved, DType dtype = DType::f32) {
  Config c;
  c.branches = std::move(branches);
  c.heads = heads;
  c.head_dim = head_dim;
  c.causal = causal;
  c.head_offsets = offsets;
  c.dtype = dtype;
  c.backend = Backend::cpu;
  c.transport = Transport::mpi;
  return c;
}

// The float64 reference's description of a config.
inline kern::RefProblem ref_problem(const Config& c) {
  kern::RefProblem p{{}, c.heads, c.head_dim, c.causal, c.scale, c.head_offsets == HeadOffsets::blocked};
  for (const Branch& b : c.branches) p.branches.emplace_back(b.w, b.r);
  return p;
}

// The named `geometric` shape with a smaller base: (base*2^j, 2^j) while base*2^j <= N.
inline std::vector<Branch> geometric_scaled(int64_t base, int64_t N) {
  std::vector<Branch> b;
  for (int64_t j = 0; (base << j) <= N; ++j) b.push_back({base << j, int64_t(1) << j});
  return b;
}

inline std::string describe(const Config& c, int64_t N, int64_t B = 1) {
  std::ostringstream os;
  os << "branches=" << format_branches(c.branches) << " N=" << N << " B=" << B << " H=" << c.heads
     << " D=" << c.head_dim << " causal=" << c.causal << " offsets=" << to_string(c.head_offsets)
     << " dtype=" << to_string(c.dtype);
  return os.str();
}

// A fresh seed for every run (printed by the caller on failure).
inline uint64_t fresh_seed() {
  std::random_device rd;
  uint64_t s = (uint64_t(rd()) << 32) ^ uint64_t(rd());
  return s ^ uint64_t(std::chrono::steady_clock::now().time_since_epoch().count());
}

// Uniform values in [-amp, amp), as float32-representable doubles.
inline std::vector<double> random_tensor(std::mt19937_64& g, size_t n, double amp = 1.0) {
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  std::vector<double> x(n);
  for (double& e : x) e = double(float(amp) * u(g));
  return x;
}

inline std::vector<float> to_f32(const std::vector<double>& x) { return std::vector<float>(x.begin(), x.end()); }

inline kern::ElemKind elem_kind(DType dt) { return kern::ElemKind(int(dt)); }  // same values

// Rounds a float to the dtype and back (what the runtime sees as input).
inline float round_to(DType dt, float x) { return kern::round_to(elem_kind(dt), x); }

// Encodes floats as the dtype's bytes (f32: 4 bytes each, f16/bf16: 2).
inline std::vector<uint8_t> encode(DType dt, const float* x, size_t n) {
  std::vector<uint8_t> out(n * dtype_size(dt));
  kern::from_float(elem_kind(dt), x, n, out.data());
  return out;
}

inline float decode_one(DType dt, const uint8_t* base, size_t i) {
  float f;
  kern::to_float(elem_kind(dt), base + i * dtype_size(dt), 1, &f);
  return f;
}

// Fills a dtype buffer with NaN so that any element the runtime forgets to write shows up.
inline void poison(DType dt, std::vector<uint8_t>* buf) {
  const size_t n = buf->size() / dtype_size(dt);
  if (dt == DType::f32) {
    float nan = std::numeric_limits<float>::quiet_NaN();
    for (size_t i = 0; i < n; ++i) std::memcpy(buf->data() + 4 * i, &nan, 4);
  } else {
    uint16_t nan = dt == DType::f16 ? uint16_t(0x7e00) : uint16_t(0x7fc0);
    for (size_t i = 0; i < n; ++i) std::memcpy(buf->data() + 2 * i, &nan, 2);
  }
}
inline void poison(std::vector<float>* x) { std::fill(x->begin(), x->end(), std::numeric_limits<float>::quiet_NaN()); }

inline kern::Tolerance tolerance_of(DType dt) { return kern::spec_tolerance(int(dt), /*gpu=*/false); }

// Error of (o, lse) against a reference: relative L2 of O, max |LSE| error
// (-inf must match -inf), and the count of non-finite O values.
struct Errors {
  double o_rel = 0, lse_abs = 0;
  int64_t nonfinite_o = 0, lse_inf_mismatch = 0;
  std::string str() const {
    std::ostringstream os;
    os << "O rel L2 = " << o_rel << ", LSE max abs = " << lse_abs << ", non-finite O = " << nonfinite_o
       << ", LSE -inf mismatches = " << lse_inf_mismatch;
    return os.str();
  }
};

template <class OGet, class LGet, class ORef, class LRef>
Errors compare(size_t n_o, size_t n_lse, OGet o, LGet lse, ORef oref, LRef lref) {
  Errors e;
  kern::ErrorAccumulator acc;
  kern::LseErrorAccumulator lacc;
  for (size_t i = 0; i < n_o; ++i) {
    const double x = o(i);
    if (!std::isfinite(x)) e.nonfinite_o++;
    acc.add(x, oref(i));
  }
  for (size_t i = 0; i < n_lse; ++i) {
    const double x = lse(i), r = lref(i);
    if ((std::isinf(r) && r < 0) != (std::isinf(x) && x < 0)) e.lse_inf_mismatch++;
    lacc.add(x, r);
  }
  e.o_rel = acc.rel_l2();
  e.lse_abs = lacc.max_abs;
  return e;
}

}  // namespace ringattn::test

// Host-side helpers shared by the standalone driver (fwd_main.cu) and the
// GoogleTest (tests/gpu/test_cuda_fwd.cu): single-rank tile generation for a
// branch list, a float64 reference computed straight from SPEC.md, input
// generation and error metrics. Host code only (compiled by nvcc for the
// bf16/fp16 conversions).
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include "../../common/tile.hpp"
#include "../attention_fwd.hpp"

#define RA_CUDA_CHECK(expr)                                                              \
  do {                                                                                   \
    cudaError_t ra_err_ = (expr);                                                        \
    if (ra_err_ != cudaSuccess) {                                                        \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr,          \
                   cudaGetErrorString(ra_err_));                                         \
      std::exit(2);                                                                      \
    }                                                                                    \
  } while (0)

namespace ringattn::kern::cuda::harness {

struct Branch {
  int64_t w;
  int r;
};
enum class HeadRule { interleaved, blocked };

inline int head_offset(int h, int H, int r, HeadRule rule) {
  if (rule == HeadRule::interleaved) return h % r;
  const int Hp = r * ((H + r - 1) / r);
  return h / (Hp / r);
}

// One pass per branch on a single rank: tile (branch, head, segment) with
// queries and keys both the whole index set I. Options split tiles to
// exercise q_idx0/k_idx0 and multi-pass merging.
struct TileOpts {
  bool split_queries = false;  // two tiles per (h, s): queries [0,a) and [a,|I|)
  bool split_keys = false;     // keys in two passes: [0,c) and [c,|I|) (k_idx0 = c)
};

inline std::vector<std::vector<Tile>> make_passes(const std::vector<Branch>& br, int64_t N, int H,
                                                   HeadRule rule, TileOpts opt) {
  std::vector<std::vector<Tile>> passes;
  for (size_t bi = 0; bi < br.size(); ++bi) {
    const int64_t w = br[bi].w;
    const int r = br[bi].r;
    std::vector<Tile> full;
    for (int h = 0; h < H; ++h) {
      const int o = head_offset(h, H, r, rule);
      for (int64_t s = 0; s * w < N; ++s) {
        const int64_t base = s * w + o;
        const int64_t end = std::min((s + 1) * w, N);
        if (base >= end) continue;
        const int64_t cnt = (end - base + r - 1) / r;
        Tile t{};
        t.q_row0 = base; t.q_idx0 = 0; t.k_idx0 = 0; t.k_row0 = base;
        t.q_count = int32_t(cnt); t.k_count = int32_t(cnt);
        t.q_stride = r; t.k_stride = r; t.head = h; t.branch = int32_t(bi);
        full.push_back(t);
      }
    }
    auto split_q = [&](const std::vector<Tile>& in) {
      if (!opt.split_queries) return in;
      std::vector<Tile> out;
      for (const Tile& t : in) {
        const int a = t.q_count / 3;  // not a multiple of the block size
        if (a < 1) { out.push_back(t); continue; }
        Tile t1 = t; t1.q_count = a; out.push_back(t1);
        Tile t2 = t; t2.q_idx0 = t.q_idx0 + a; t2.q_row0 = t.q_row0 + int64_t(a) * t.q_stride;
        t2.q_count = t.q_count - a; out.push_back(t2);
      }
      return out;
    };
    if (!opt.split_keys) {
      passes.push_back(split_q(full));
    } else {
      std::vector<Tile> a, b;
      for (const Tile& t : full) {
        const int c = (t.k_count * 5) / 8;
        if (c < 1) { a.push_back(t); continue; }
        Tile t1 = t; t1.k_count = c; a.push_back(t1);
        Tile t2 = t; t2.k_idx0 = c; t2.k_row0 = t.k_row0 + int64_t(c) * t.k_stride;
        t2.k_count = t.k_count - c; b.push_back(t2);
      }
      passes.push_back(split_q(a));
      if (!b.empty()) passes.push_back(split_q(b));
    }
  }
  return passes;
}

inline std::vector<int32_t> block_prefix(const std::vector<Tile>& tiles, int block_m) {
  std::vector<int32_t> pre(tiles.size() + 1, 0);
  for (size_t i = 0; i < tiles.size(); ++i)
    pre[i + 1] = pre[i] + (tiles[i].q_count + block_m - 1) / block_m;
  return pre;
}

// Useful FLOPs (SPEC "Counting work").
inline double useful_flops(const std::vector<Branch>& br, int64_t N, int H, int D, bool causal,
                           HeadRule rule) {
  double f = 0;
  for (const Branch& b : br)
    for (int h = 0; h < H; ++h) {
      const int o = head_offset(h, H, b.r, rule);
      for (int64_t s = 0; s * b.w < N; ++s) {
        const int64_t base = s * b.w + o, end = std::min((s + 1) * b.w, N);
        if (base >= end) continue;
        const double n = double((end - base + b.r - 1) / b.r);
        f += causal ? 2.0 * n * (n + 1) * D : 4.0 * n * n * D;
      }
    }
  return f;
}

template <typename T> inline float to_f(T x);
template <> inline float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <> inline float to_f<__half>(__half x) { return __half2float(x); }
template <typename T> inline T from_f(float x);
template <> inline __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <> inline __half from_f<__half>(float x) { return __float2half(x); }

// float64 reference straight from SPEC.md: one softmax over the multiset union
// of every branch's visible keys. In: B x N x H x D floats (already rounded to
// the input dtype). Out: O (B x N x H x D), LSE (B x N x H; -inf where empty).
inline void reference(const std::vector<float>& q, const std::vector<float>& k,
                      const std::vector<float>& v, int B, int64_t N, int H, int D,
                      const std::vector<Branch>& br, bool causal, HeadRule rule, double scale,
                      std::vector<double>& o, std::vector<double>& lse) {
  o.assign(size_t(B) * N * H * D, 0.0);
  lse.assign(size_t(B) * N * H, -INFINITY);
  const int nth = std::max(1u, std::min(64u, std::thread::hardware_concurrency()));
  auto work = [&](int tid) {
    std::vector<double> logits, acc(D);
    std::vector<int64_t> keys;
    for (int64_t bt = tid; bt < int64_t(B) * N; bt += nth) {
      const int b = int(bt / N);
      const int64_t t = bt % N;
      for (int h = 0; h < H; ++h) {
        keys.clear();
        for (const Branch& brn : br) {
          const int64_t s = t / brn.w;
          const int off = head_offset(h, H, brn.r, rule);
          if ((t - s * brn.w) % brn.r != off) continue;
          const int64_t end = std::min((s + 1) * brn.w, N);
          for (int64_t u = s * brn.w + off; u < end; u += brn.r) {
            if (causal && u > t) break;
            keys.push_back(u);
          }
        }
        if (keys.empty()) continue;
        const float* qr = &q[((size_t(b) * N + t) * H + h) * D];
        logits.resize(keys.size());
        double mx = -INFINITY;
        for (size_t i = 0; i < keys.size(); ++i) {
          const float* kr = &k[((size_t(b) * N + keys[i]) * H + h) * D];
          double dot = 0;
          for (int d = 0; d < D; ++d) dot += double(qr[d]) * double(kr[d]);
          logits[i] = dot * scale;
          mx = std::max(mx, logits[i]);
        }
        double sum = 0;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (size_t i = 0; i < keys.size(); ++i) {
          const double pr = std::exp(logits[i] - mx);
          sum += pr;
          const float* vr = &v[((size_t(b) * N + keys[i]) * H + h) * D];
          for (int d = 0; d < D; ++d) acc[d] += pr * double(vr[d]);
        }
        double* orow = &o[((size_t(b) * N + t) * H + h) * D];
        for (int d = 0; d < D; ++d) orow[d] = acc[d] / sum;
        lse[(size_t(b) * N + t) * H + h] = mx + std::log(sum);
      }
    }
  };
  std::vector<std::thread> th;
  for (int i = 0; i < nth; ++i) th.emplace_back(work, i);
  for (auto& x : th) x.join();
}

struct Errors {
  double o_rel_l2 = 0;      // ||O - ref|| / ||ref||
  double lse_max_abs = 0;   // over rows with a finite reference
  int64_t nonfinite = 0;    // NaN/Inf in O, or NaN/+Inf in LSE, or -inf where ref finite
  int64_t empty_wrong = 0;  // rows with ref LSE -inf whose LSE != -inf or O != 0
};

template <typename T>
inline Errors compare(const std::vector<T>& o, const std::vector<float>& lse,
                      const std::vector<double>& o_ref, const std::vector<double>& lse_ref, int D) {
  Errors e;
  double num = 0, den = 0;
  for (size_t i = 0; i < o.size(); ++i) {
    const double x = to_f<T>(o[i]);
    if (!std::isfinite(x)) { ++e.nonfinite; continue; }
    num += (x - o_ref[i]) * (x - o_ref[i]);
    den += o_ref[i] * o_ref[i];
  }
  e.o_rel_l2 = den > 0 ? std::sqrt(num / den) : std::sqrt(num);
  for (size_t r = 0; r < lse.size(); ++r) {
    if (std::isinf(lse_ref[r])) {
      bool bad = !(std::isinf(lse[r]) && lse[r] < 0);
      for (int d = 0; d < D && !bad; ++d) bad = to_f<T>(o[r * D + d]) != 0.f;
      e.empty_wrong += bad;
      continue;
    }
    if (!std::isfinite(lse[r])) { ++e.nonfinite; continue; }
    e.lse_max_abs = std::max(e.lse_max_abs, std::fabs(double(lse[r]) - lse_ref[r]));
  }
  return e;
}

inline std::vector<Branch> named_config(const std::string& name, int64_t N) {
  if (name == "longnet4") return {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}};
  if (name == "longnet-paper") return {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 6}, {32768, 12}};
  if (name == "dense") return {{N, 1}};
  if (name == "geometric") {
    std::vector<Branch> b;
    for (int j = 0; (int64_t(2048) << j) <= N; ++j) b.push_back({int64_t(2048) << j, 1 << j});
    return b;
  }
  // "w:r,w:r,..."
  std::vector<Branch> b;
  size_t pos = 0;
  while (pos < name.size()) {
    size_t c = name.find(',', pos);
    if (c == std::string::npos) c = name.size();
    const std::string item = name.substr(pos, c - pos);
    const size_t colon = item.find(':');
    if (colon == std::string::npos) return {};
    b.push_back({std::stoll(item.substr(0, colon)), std::stoi(item.substr(colon + 1))});
    pos = c + 1;
  }
  return b;
}

}  // namespace ringattn::kern::cuda::harness

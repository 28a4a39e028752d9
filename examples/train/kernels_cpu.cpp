// The CPU implementation of train::Kernels: plain loops, one thread.
//
// GEMM: every case is brought to C = A B with both operands row-major (a
// transposed operand is copied transposed first: the weights are small, and
// the one large transposed operand, the activations of a weight gradient, is
// read once). The product runs in tiles of 4 rows x 32 columns held in
// registers over the whole K, so every element of C is one sum in k order
// (the same bits whatever the tiling of M and N). On x86-64 with GCC the
// loop is compiled twice, for AVX2+FMA and for the baseline, and the loader
// picks the one the machine runs (target_clones): 2-cores machines here have
// AVX2, and the baseline keeps the binary portable.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels.hpp"
#include "kernels/common/convert.hpp"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define TRAIN_CLONES __attribute__((target_clones("arch=haswell", "default")))
#else
#define TRAIN_CLONES
#endif

namespace train {
namespace {

constexpr int kMR = 4, kNR = 32;

// C[M,N] = alpha * A[M,K] B[K,N] + beta * C, all row-major.
TRAIN_CLONES void gemm_nn(int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda, const float* B,
                          int64_t ldb, float beta, float* C, int64_t ldc) {
  for (int64_t j0 = 0; j0 < N; j0 += kNR) {
    const int64_t nr = std::min<int64_t>(kNR, N - j0);
    for (int64_t i0 = 0; i0 < M; i0 += kMR) {
      const int64_t mr = std::min<int64_t>(kMR, M - i0);
      float acc[kMR][kNR] = {};
      if (mr == kMR && nr == kNR) {
        const float* a0 = A + (i0 + 0) * lda;
        const float* a1 = A + (i0 + 1) * lda;
        const float* a2 = A + (i0 + 2) * lda;
        const float* a3 = A + (i0 + 3) * lda;
        for (int64_t k = 0; k < K; ++k) {
          const float* b = B + k * ldb + j0;
          const float x0 = a0[k], x1 = a1[k], x2 = a2[k], x3 = a3[k];
#pragma GCC unroll 32
          for (int j = 0; j < kNR; ++j) {
            acc[0][j] += x0 * b[j];
            acc[1][j] += x1 * b[j];
            acc[2][j] += x2 * b[j];
            acc[3][j] += x3 * b[j];
          }
        }
      } else {
        for (int64_t k = 0; k < K; ++k) {
          const float* b = B + k * ldb + j0;
          for (int64_t r = 0; r < mr; ++r) {
            const float x = A[(i0 + r) * lda + k];
            for (int64_t j = 0; j < nr; ++j) acc[r][j] += x * b[j];
          }
        }
      }
      for (int64_t r = 0; r < mr; ++r) {
        float* c = C + (i0 + r) * ldc + j0;
        if (beta == 0.0f) {
          for (int64_t j = 0; j < nr; ++j) c[j] = alpha * acc[r][j];
        } else {
          for (int64_t j = 0; j < nr; ++j) c[j] = alpha * acc[r][j] + c[j];
        }
      }
    }
  }
}

// dst[cols x rows] = src[rows x cols]^T (src row stride ld), in blocks of 32.
void transpose(int64_t rows, int64_t cols, const float* src, int64_t ld, float* dst) {
  constexpr int64_t kB = 32;
  for (int64_t i0 = 0; i0 < rows; i0 += kB)
    for (int64_t j0 = 0; j0 < cols; j0 += kB)
      for (int64_t i = i0; i < std::min(rows, i0 + kB); ++i)
        for (int64_t j = j0; j < std::min(cols, j0 + kB); ++j) dst[j * rows + i] = src[i * ld + j];
}

class CpuKernels final : public Kernels {
 public:
  const char* name() const override { return "cpu"; }
  ringattn::Backend backend() const override { return ringattn::Backend::cpu; }
  void synchronize() override {}

  void copy(int64_t n, const float* x, float* y) override { std::memcpy(y, x, size_t(n) * sizeof(float)); }
  void zero(int64_t n, float* x) override { std::fill(x, x + n, 0.0f); }
  void gather_rows(int64_t n, int64_t d, const int64_t* rows, const float* x, float* out) override {
    for (int64_t i = 0; i < n; ++i) std::memcpy(out + i * d, x + rows[i] * d, size_t(d) * sizeof(float));
  }
  void scatter_add_rows(int64_t n, int64_t d, const int64_t* rows, const float* g, float* x) override {
    for (int64_t i = 0; i < n; ++i) add(d, g + i * d, x + rows[i] * d);
  }
  void to_half(ringattn::DType t, int64_t n, const float* x, void* y) override {
    ringattn::kern::from_float(ringattn::kern::ElemKind(int(t)), x, size_t(n), y);
  }
  void from_half(ringattn::DType t, int64_t n, const void* x, float* y) override {
    ringattn::kern::to_float(ringattn::kern::ElemKind(int(t)), x, size_t(n), y);
  }

  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    if (ta) {  // A is K x M: copy it to M x K
      at_.resize(size_t(M * K));
      transpose(K, M, A, lda, at_.data());
      A = at_.data();
      lda = K;
    }
    if (tb) {  // B is N x K: copy it to K x N
      bt_.resize(size_t(K * N));
      transpose(N, K, B, ldb, bt_.data());
      B = bt_.data();
      ldb = N;
    }
    gemm_nn(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
  }

  // The bf16 operands widened (exactly), then the float32 GEMM: the same
  // products as the tensor cores' up to the order of the float32 sums.
  void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                 const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    if (M == 0 || N == 0) return;
    const auto widen = [&](const uint16_t* x, int64_t rows, int64_t cols, int64_t ld, std::vector<float>* out) {
      const size_t n = rows > 0 ? size_t((rows - 1) * ld + cols) : 0;
      out->resize(n);
      from_half(ringattn::DType::bf16, int64_t(n), x, out->data());
      return out->data();
    };
    const float* a = widen(A, ta ? K : M, ta ? M : K, lda, &a16_);
    const float* b = widen(B, tb ? N : K, tb ? K : N, ldb, &b16_);
    gemm(ta, tb, M, N, K, alpha, a, lda, b, ldb, beta, C, ldc);
  }

  void rmsnorm_fwd(int64_t rows, int64_t d, const float* x, const float* g, float eps, float* y, float* rstd,
                   uint16_t* y16) override {
    for (int64_t t = 0; t < rows; ++t) {
      const float* xr = x + t * d;
      double ss = 0;
      for (int64_t i = 0; i < d; ++i) ss += double(xr[i]) * xr[i];
      const float r = float(1.0 / std::sqrt(ss / double(d) + double(eps)));
      rstd[t] = r;
      for (int64_t i = 0; i < d; ++i) y[t * d + i] = xr[i] * r * g[i];
    }
    if (y16) to_half(ringattn::DType::bf16, rows * d, y, y16);
  }

  // y_i = g_i x_i r, r = (mean x^2 + eps)^-1/2:
  // dx_j = r g_j dy_j - r^3 x_j / d * sum_i dy_i g_i x_i.
  void rmsnorm_bwd(int64_t rows, int64_t d, const float* x, const float* g, const float* rstd, const float* dy,
                   float* dx, float* dg) override {
    for (int64_t t = 0; t < rows; ++t) {
      const float* xr = x + t * d;
      const float* dyr = dy + t * d;
      const float r = rstd[t];
      double dot = 0;
      for (int64_t i = 0; i < d; ++i) dot += double(dyr[i]) * g[i] * xr[i];
      const float c = float(dot) * r * r * r / float(d);
      for (int64_t i = 0; i < d; ++i) {
        dx[t * d + i] += r * g[i] * dyr[i] - c * xr[i];
        dg[i] += dyr[i] * xr[i] * r;
      }
    }
  }

  void rope_bf16(int64_t batch, int64_t tokens, int64_t heads, int64_t D, int64_t rot, int64_t pos0, float base,
                 bool inverse, uint16_t* x) override {
    const int64_t n = batch * tokens * heads * D;  // widened whole (exact), rotated, rounded back: untouched dims keep their bits
    w16_.resize(size_t(n));
    from_half(ringattn::DType::bf16, n, x, w16_.data());
    rope(batch, tokens, heads, D, rot, pos0, base, inverse, w16_.data());
    to_half(ringattn::DType::bf16, n, w16_.data(), x);
  }
  void rope(int64_t batch, int64_t tokens, int64_t heads, int64_t D, int64_t rot, int64_t pos0, float base,
            bool inverse, float* x) override {
    const int64_t half = rot / 2;
    cs_.resize(size_t(2 * half));
    for (int64_t t = 0; t < tokens; ++t) {
      const double pos = double(pos0 + t);
      for (int64_t i = 0; i < half; ++i) {
        const double ang = pos * std::pow(double(base), -2.0 * double(i) / double(rot));
        cs_[size_t(2 * i)] = float(std::cos(ang));
        cs_[size_t(2 * i + 1)] = float(inverse ? -std::sin(ang) : std::sin(ang));
      }
      for (int64_t b = 0; b < batch; ++b) {
        float* row = x + (b * tokens + t) * heads * D;
        for (int64_t h = 0; h < heads; ++h) {
          float* p = row + h * D;
          for (int64_t i = 0; i < half; ++i) {
            const float c = cs_[size_t(2 * i)], s = cs_[size_t(2 * i + 1)];
            const float x0 = p[2 * i], x1 = p[2 * i + 1];
            p[2 * i] = x0 * c - x1 * s;
            p[2 * i + 1] = x0 * s + x1 * c;
          }
        }
      }
    }
  }

  // gelu(u) = u/2 (1 + tanh(k (u + 0.044715 u^3))), k = sqrt(2/pi).
  void gelu_fwd(int64_t n, const float* u, float* a, uint16_t* a16) override {
    for (int64_t i = 0; i < n; ++i) {
      const float x = u[i];
      a[i] = 0.5f * x * (1.0f + std::tanh(kK * (x + 0.044715f * x * x * x)));
    }
    if (a16) to_half(ringattn::DType::bf16, n, a, a16);
  }
  void gelu_bwd(int64_t n, const float* u, const float* da, float* du, uint16_t* du16) override {
    for (int64_t i = 0; i < n; ++i) {
      const float x = u[i];
      const float th = std::tanh(kK * (x + 0.044715f * x * x * x));
      const float dth = (1.0f - th * th) * kK * (1.0f + 3.0f * 0.044715f * x * x);
      du[i] = da[i] * (0.5f * (1.0f + th) + 0.5f * x * dth);
    }
    if (du16) to_half(ringattn::DType::bf16, n, du, du16);
  }

  void embed_fwd(int64_t rows, int64_t d, const int32_t* tok, const float* E, float* x) override {
    for (int64_t t = 0; t < rows; ++t) std::memcpy(x + t * d, E + int64_t(tok[t]) * d, size_t(d) * sizeof(float));
  }
  void embed_bwd(int64_t rows, int64_t d, int64_t, const int32_t* tok, const float* dx, float* dE) override {
    for (int64_t t = 0; t < rows; ++t) {
      float* e = dE + int64_t(tok[t]) * d;
      for (int64_t i = 0; i < d; ++i) e[i] += dx[t * d + i];
    }
  }

  void shift_fwd(int64_t rows, int64_t d, const int32_t* prev, const float* E, const float* s, float* x) override {
    for (int64_t t = 0; t < rows; ++t) {
      if (prev[t] < 0) continue;
      const float* e = E + int64_t(prev[t]) * d;
      for (int64_t i = 0; i < d; ++i) x[t * d + i] += s[i] * e[i];
    }
  }
  void shift_bwd(int64_t rows, int64_t d, int64_t, const int32_t* prev, const float* E, const float* s,
                 const float* dx, float* dE, float* ds) override {
    for (int64_t t = 0; t < rows; ++t) {
      if (prev[t] < 0) continue;
      const float* e = E + int64_t(prev[t]) * d;
      float* de = dE + int64_t(prev[t]) * d;
      for (int64_t i = 0; i < d; ++i) {
        de[i] += s[i] * dx[t * d + i];
        ds[i] += dx[t * d + i] * e[i];
      }
    }
  }

  void add(int64_t n, const float* x, float* y) override {
    for (int64_t i = 0; i < n; ++i) y[i] += x[i];
  }

  double xent(int64_t rows, int64_t V, const float* z, const int32_t* target, float scale, float* dz,
              int64_t* correct) override {
    double loss = 0;
    int64_t right = 0;
    for (int64_t t = 0; t < rows; ++t) {
      const float* zr = z + t * V;
      int64_t arg = 0;
      for (int64_t j = 1; j < V; ++j)
        if (zr[j] > zr[arg]) arg = j;
      const double m = zr[arg];
      double s = 0;
      for (int64_t j = 0; j < V; ++j) s += std::exp(double(zr[j]) - m);
      const double lse = m + std::log(s);
      loss += lse - zr[target[t]];
      right += arg == target[t];
      for (int64_t j = 0; j < V; ++j)
        dz[t * V + j] = float((std::exp(double(zr[j]) - lse) - (j == target[t] ? 1.0 : 0.0)) * double(scale));
    }
    *correct = right;
    return loss;
  }

  double sumsq(int64_t n, const float* x) override {
    double s = 0;
    for (int64_t i = 0; i < n; ++i) s += double(x[i]) * x[i];
    return s;
  }
  void scale(int64_t n, float s, float* x) override {
    for (int64_t i = 0; i < n; ++i) x[i] *= s;
  }

  void adamw(int64_t n, float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2,
             const float* grad, float* w, float* m, float* v) override {
    for (int64_t i = 0; i < n; ++i) {
      m[i] = beta1 * m[i] + (1.0f - beta1) * grad[i];
      v[i] = beta2 * v[i] + (1.0f - beta2) * grad[i] * grad[i];
      const float mh = m[i] / bc1, vh = v[i] / bc2;
      w[i] -= lr * (mh / (std::sqrt(vh) + eps) + wd * w[i]);
    }
  }

 private:
  static constexpr float kK = 0.7978845608028654f;
  std::vector<float> at_, bt_, cs_;
  std::vector<float> a16_, b16_;  // gemm_bf16: the operands widened
  std::vector<float> w16_;        // rope_bf16: x widened
};

}  // namespace

std::unique_ptr<Kernels> make_cpu_kernels() { return std::make_unique<CpuKernels>(); }

}  // namespace train

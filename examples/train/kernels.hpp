// The math of the training example other than attention, behind one small
// interface with a CPU implementation (kernels_cpu.cpp) and a CUDA one
// (kernels_cuda.cu: cuBLAS GEMMs, small kernels of its own): the model calls
// only these, on buffers of the backend's memory (buffer.hpp). All tensors
// are float32, row-major; "rows" are tokens. Index arrays (tokens, rows,
// targets) live in the backend's memory too.
//
// Determinism: every implementation must give the same bits for the same
// inputs on the same machine (fixed reduction order, no atomics in sums), so
// a resumed run repeats the loss trajectory bit for bit. The two backends
// need not agree bit for bit with each other (their sums run in other
// orders): they agree to float32 rounding.
//
// Errors: a failed device call or launch throws std::runtime_error naming
// the call and its file:line (a failure mid-step cannot be agreed on across
// ranks; main() turns it into the job's abort).
#pragma once
#include <cstdint>
#include <memory>

#include "ringattn/config.hpp"

namespace train {

class Kernels {
 public:
  virtual ~Kernels() = default;
  virtual const char* name() const = 0;
  // Where the buffers these kernels take live.
  virtual ringattn::Backend backend() const = 0;
  // Waits for the work queued so far (cuda: the default stream; cpu: nothing).
  virtual void synchronize() = 0;

  // y = x (n floats); x = 0.
  virtual void copy(int64_t n, const float* x, float* y) = 0;
  virtual void zero(int64_t n, float* x) = 0;
  // out[i,:] = x[rows[i],:] (i < n; d columns).
  virtual void gather_rows(int64_t n, int64_t d, const int64_t* rows, const float* x, float* out) = 0;
  // x[rows[i],:] += g[i,:], i in order (a row given twice adds twice).
  virtual void scatter_add_rows(int64_t n, int64_t d, const int64_t* rows, const float* g, float* x) = 0;
  // float32 <-> the 16-bit attention dtype (bf16 or f16, round to nearest
  // even): the Context's inputs and outputs under mixed precision.
  virtual void to_half(ringattn::DType t, int64_t n, const float* x, void* y) = 0;
  virtual void from_half(ringattn::DType t, int64_t n, const void* x, float* y) = 0;

  // C[M,N] = alpha * op(A) op(B) + beta * C. op(A) is M x K: A itself
  // (M x K, row stride lda) or, with ta, the transpose of A (K x M, stride
  // lda); likewise op(B) is K x N. beta is 0 or 1.
  virtual void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
                    const float* B, int64_t ldb, float beta, float* C, int64_t ldc) = 0;
  // The same with A and B in bf16 (the model's bf16 copies of float32
  // operands, made by to_half), products accumulated in float32, C float32:
  // the GEMMs of mixed precision (cuda: tensor cores; cpu: the operands
  // widened, then gemm).
  virtual void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                         const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) = 0;

  // y[t,:] = x[t,:] * g / rms(x[t,:]), rstd[t] = 1 / sqrt(mean(x^2) + eps);
  // y16 (may be null): y rounded to bf16 too, in the same pass (a GEMM's operand).
  virtual void rmsnorm_fwd(int64_t rows, int64_t d, const float* x, const float* g, float eps, float* y,
                           float* rstd, uint16_t* y16) = 0;
  // dx += d(y)/d(x)^T dy; dg += sum over rows of dy * x * rstd.
  virtual void rmsnorm_bwd(int64_t rows, int64_t d, const float* x, const float* g, const float* rstd,
                           const float* dy, float* dx, float* dg) = 0;

  // Rotary position embedding on the first `rot` dims of every head (pairs
  // (2i, 2i+1), angle pos * base^(-2i/rot)), in place on x: rows x heads x D,
  // rows = batch x local tokens, token t of a batch entry at position pos0 + t.
  // The backward applies the inverse rotation (the map is orthogonal).
  virtual void rope(int64_t batch, int64_t tokens, int64_t heads, int64_t D, int64_t rot, int64_t pos0, float base,
                    bool inverse, float* x) = 0;
  // The same on bf16 x in place: each rotated pair widened, rotated in float32 as rope
  // does, rounded back; the other dims untouched (the same bits as widening x, rope, rounding).
  virtual void rope_bf16(int64_t batch, int64_t tokens, int64_t heads, int64_t D, int64_t rot, int64_t pos0,
                         float base, bool inverse, uint16_t* x) = 0;

  // a = gelu(u) (tanh form); du = da * gelu'(u); a16, du16 (may be null): the
  // results rounded to bf16 too, in the same pass.
  virtual void gelu_fwd(int64_t n, const float* u, float* a, uint16_t* a16) = 0;
  virtual void gelu_bwd(int64_t n, const float* u, const float* da, float* du, uint16_t* du16) = 0;

  // E, dE: vocab x d.
  // x[t,:] = E[tok[t],:];  dE[tok[t],:] += dx[t,:] (in a fixed order: cpu row
  // order; cuda per chunk of rows in row order, then the chunks in order).
  virtual void embed_fwd(int64_t rows, int64_t d, const int32_t* tok, const float* E, float* x) = 0;
  virtual void embed_bwd(int64_t rows, int64_t d, int64_t vocab, const int32_t* tok, const float* dx, float* dE) = 0;

  // Token shift: x[t,:] += s * E[prev[t],:] (nothing where prev[t] < 0);
  // its backward: dE[prev[t],:] += s * dx[t,:], ds += dx[t,:] * E[prev[t],:] (fixed order, as embed_bwd).
  virtual void shift_fwd(int64_t rows, int64_t d, const int32_t* prev, const float* E, const float* s, float* x) = 0;
  virtual void shift_bwd(int64_t rows, int64_t d, int64_t vocab, const int32_t* prev, const float* E, const float* s,
                         const float* dx, float* dE, float* ds) = 0;

  // y += x (n elements).
  virtual void add(int64_t n, const float* x, float* y) = 0;

  // Cross-entropy over the rows of z (rows x V logits), each with its target:
  // dz = (softmax(z) - onehot) * scale; returns the summed loss (double) and
  // the number of rows whose argmax equals the target in *correct.
  virtual double xent(int64_t rows, int64_t V, const float* z, const int32_t* target, float scale, float* dz,
                      int64_t* correct) = 0;

  // sum of squares (double accumulation, fixed order).
  virtual double sumsq(int64_t n, const float* x) = 0;
  virtual void scale(int64_t n, float s, float* x) = 0;

  // One AdamW step on n parameters (decoupled weight decay wd * lr, applied
  // only where decay is set); bc1/bc2 are the bias corrections 1 - beta^t.
  virtual void adamw(int64_t n, float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                     const float* grad, float* w, float* m, float* v) = 0;
};

// Plain loops, cache-blocked GEMM, one thread per rank (ranks share the cores).
std::unique_ptr<Kernels> make_cpu_kernels();
// cuBLAS and small kernels on the current device (select it first), all on
// the default stream, the stream the model passes to ringattn::Context.
// Defined when the project builds CUDA (RINGATTN_WITH_CUDA).
std::unique_ptr<Kernels> make_cuda_kernels();

}  // namespace train

// The CUDA implementation of train::Kernels: GEMMs through cuBLAS, every
// other op a small kernel of its own, all on the default stream (the stream
// the model gives ringattn::Context), on the current device.
//
// GEMM: row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T, so
// cuBLAS gets B before A with the same transpose flags and M, N swapped.
// gemm: full float32 (cublasSgemm, CUBLAS_DEFAULT_MATH: no TF32); gemm_bf16:
// cublasGemmEx, bf16 A and B, float32 C, CUBLAS_COMPUTE_32F (tensor cores).
// Atomics not allowed either way. (Measured on 4 x H200, the d 2048 model:
// CUBLAS_COMPUTE_32F_FAST_16BF on the float32 operands, which rounds them
// inside cuBLAS, ran the step's GEMMs at ~310 TF/s; bench/results/.) cuBLAS
// gives the same bits run after run for one toolkit, one architecture and
// one SM count when a handle stays on one stream (ours does; the
// CUBLAS_WORKSPACE_CONFIG setting is needed only when one handle's workspace
// serves several streams).
//
// Reductions in a fixed order, without float atomics (kernels.hpp):
//   - per row (rmsnorm, cross-entropy): one warp or block per row, a fixed
//     shuffle or shared-memory tree;
//   - over rows (rmsnorm's dg, the shift's ds): chunks of consecutive rows,
//     one thread per column summing its chunk in row order into a partial,
//     then one thread per column adding the chunks in order;
//   - scatter-add by token (embed_bwd, the shift's dE): the same chunks, each
//     with its own [vocab x d] partial (a thread owns a column of it, so no
//     two threads ever add to one element), then the chunks in order; the
//     number of chunks is capped so the partials stay under 64 MB (a large
//     vocabulary gets fewer, longer chunks);
//   - sumsq: a fixed grid of 256 x 256 threads, each a strided double sum, a
//     shared-memory tree per block, the 256 block sums added on the host in
//     order.
// Every launch is checked (cudaGetLastError) and every API call; a failure
// throws std::runtime_error naming the call and file:line.
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.hpp"

namespace train {
namespace {

[[noreturn]] void fail(const char* file, int line, const char* call, const std::string& what) {
  const char* base = std::strrchr(file, '/');
  throw std::runtime_error(std::string(base ? base + 1 : file) + ":" + std::to_string(line) + ": " + call +
                           " failed: " + what);
}

#define TRAIN_CUDA_CHECK(call)                                                     \
  do {                                                                             \
    cudaError_t _e = (call);                                                       \
    if (_e != cudaSuccess) fail(__FILE__, __LINE__, #call, cudaGetErrorString(_e)); \
  } while (0)

#define TRAIN_CUBLAS_CHECK(call)                                                             \
  do {                                                                                       \
    cublasStatus_t _s = (call);                                                              \
    if (_s != CUBLAS_STATUS_SUCCESS) fail(__FILE__, __LINE__, #call, cublasGetStatusString(_s)); \
  } while (0)

// A launch and its own error (bad configuration, no kernel image for this GPU).
#define TRAIN_LAUNCH(kernel, grid, block, ...)                                                           \
  do {                                                                                                   \
    kernel<<<grid, block>>>(__VA_ARGS__);                                                                \
    cudaError_t _e = cudaGetLastError();                                                                 \
    if (_e != cudaSuccess) fail(__FILE__, __LINE__, "the launch of " #kernel, cudaGetErrorString(_e)); \
  } while (0)

constexpr int kThreads = 256;
constexpr int kSumBlocks = 256;                 // sumsq's fixed grid: the same sum order on every GPU
constexpr int64_t kMinChunkRows = 64;           // rows per chunk of a reduction over rows, at least
constexpr int64_t kMaxChunks = 4096;            // chunks of a reduction over rows, at most
constexpr int64_t kScatterFloats = 16ll << 20;  // the scatter partials: 64 MB at most

#define GRID_LOOP(i, n) \
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

unsigned blocks_for(int64_t n) { return unsigned(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, 1 << 16))); }

// Chunks of consecutive rows for the reductions over rows.
struct Chunks {
  int64_t rows_per = 1, count = 0;
};
Chunks chunks_for(int64_t rows, int64_t cap) {
  Chunks c;
  const int64_t most = std::max<int64_t>(1, std::min(cap, (rows + kMinChunkRows - 1) / kMinChunkRows));
  c.rows_per = std::max<int64_t>(1, (rows + most - 1) / most);
  c.count = rows == 0 ? 0 : (rows + c.rows_per - 1) / c.rows_per;
  return c;
}

__device__ double warp_sum(double x) {
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// A fixed tree over the block's kThreads values in shared memory; the total lands in sh[0].
template <class T>
__device__ void block_sum(T* sh) {
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    __syncthreads();
    if (int(threadIdx.x) < s) sh[threadIdx.x] += sh[threadIdx.x + s];
  }
  __syncthreads();
}

__global__ void k_gather_rows(int64_t n, int64_t d, const int64_t* rows, const float* x, float* out) {
  GRID_LOOP(e, n * d) out[e] = x[rows[e / d] * d + e % d];
}

// One thread per column, the rows in order: a row given twice adds twice, deterministically.
__global__ void k_scatter_add_rows(int64_t n, int64_t d, const int64_t* rows, const float* g, float* x) {
  GRID_LOOP(c, d) {
    for (int64_t i = 0; i < n; ++i) x[rows[i] * d + c] += g[i * d + c];
  }
}

__global__ void k_to_bf16(int64_t n, const float* x, __nv_bfloat16* y) { GRID_LOOP(i, n) y[i] = __float2bfloat16_rn(x[i]); }
__global__ void k_from_bf16(int64_t n, const __nv_bfloat16* x, float* y) { GRID_LOOP(i, n) y[i] = __bfloat162float(x[i]); }
__global__ void k_to_f16(int64_t n, const float* x, __half* y) { GRID_LOOP(i, n) y[i] = __float2half_rn(x[i]); }
__global__ void k_from_f16(int64_t n, const __half* x, float* y) { GRID_LOOP(i, n) y[i] = __half2float(x[i]); }

// One warp per row: rstd = 1/sqrt(mean(x^2) + eps) (double sum), y = x * rstd * g.
__global__ void k_rmsnorm_fwd(int64_t rows, int64_t d, const float* x, const float* g, float eps, float* y, float* rstd,
                              __nv_bfloat16* y16) {
  const int64_t t = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= rows) return;
  const float* xr = x + t * d;
  double ss = 0;
  for (int64_t i = lane; i < d; i += 32) ss += double(xr[i]) * xr[i];
  ss = warp_sum(ss);
  const float r = float(1.0 / sqrt(ss / double(d) + double(eps)));
  if (lane == 0) rstd[t] = r;
  for (int64_t i = lane; i < d; i += 32) {
    const float v = xr[i] * r * g[i];
    y[t * d + i] = v;
    if (y16) y16[t * d + i] = __float2bfloat16_rn(v);
  }
}

// One warp per row: dx_j += r g_j dy_j - r^3 x_j / d * sum_i dy_i g_i x_i.
__global__ void k_rmsnorm_bwd_dx(int64_t rows, int64_t d, const float* x, const float* g, const float* rstd,
                                 const float* dy, float* dx) {
  const int64_t t = int64_t(blockIdx.x) * (kThreads / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x % 32;
  if (t >= rows) return;
  const float* xr = x + t * d;
  const float* dyr = dy + t * d;
  const float r = rstd[t];
  double dot = 0;
  for (int64_t i = lane; i < d; i += 32) dot += double(dyr[i]) * g[i] * xr[i];
  dot = warp_sum(dot);
  const float c = float(dot) * r * r * r / float(d);
  for (int64_t i = lane; i < d; i += 32) dx[t * d + i] += r * g[i] * dyr[i] - c * xr[i];
}

// partial[chunk, i] = sum over the chunk's rows t, in order, of dy[t,i] x[t,i] rstd[t].
__global__ void k_rmsnorm_dg_partial(int64_t rows, int64_t d, int64_t rows_per, const float* x, const float* rstd,
                                     const float* dy, float* partial) {
  const int64_t chunk = blockIdx.y;
  const int64_t t0 = chunk * rows_per, t1 = min(rows, t0 + rows_per);
  GRID_LOOP(i, d) {
    float acc = 0;
    for (int64_t t = t0; t < t1; ++t) acc += dy[t * d + i] * x[t * d + i] * rstd[t];
    partial[chunk * d + i] = acc;
  }
}

// partial[chunk, i] = sum over the chunk's rows t with prev[t] >= 0, in order, of dx[t,i] E[prev[t],i].
__global__ void k_shift_ds_partial(int64_t rows, int64_t d, int64_t rows_per, const int32_t* prev, const float* E,
                                   const float* dx, float* partial) {
  const int64_t chunk = blockIdx.y;
  const int64_t t0 = chunk * rows_per, t1 = min(rows, t0 + rows_per);
  GRID_LOOP(i, d) {
    float acc = 0;
    for (int64_t t = t0; t < t1; ++t)
      if (prev[t] >= 0) acc += dx[t * d + i] * E[int64_t(prev[t]) * d + i];
    partial[chunk * d + i] = acc;
  }
}

// out[e] += sum over chunks c, in order, of partial[c, e] (e < width).
__global__ void k_add_chunks(int64_t chunks, int64_t width, const float* partial, float* out) {
  GRID_LOOP(e, width) {
    float acc = 0;
    for (int64_t c = 0; c < chunks; ++c) acc += partial[c * width + e];
    out[e] += acc;
  }
}

// The chunk's [V x d] partial of a scatter-add by index: each thread owns
// column i of it: zeroes it, then adds (s ? s[i] : 1) * dx[t,i] at row
// idx[t] for the chunk's rows in order (idx < 0: nothing).
__global__ void k_scatter_partial(int64_t rows, int64_t d, int64_t V, int64_t rows_per, const int32_t* idx,
                                  const float* s, const float* dx, float* partial) {
  const int64_t chunk = blockIdx.y;
  const int64_t t0 = chunk * rows_per, t1 = min(rows, t0 + rows_per);
  float* P = partial + chunk * V * d;
  GRID_LOOP(i, d) {
    for (int64_t v = 0; v < V; ++v) P[v * d + i] = 0.0f;
    const float si = s ? s[i] : 1.0f;
    for (int64_t t = t0; t < t1; ++t) {
      const int32_t v = idx[t];
      if (v >= 0) P[int64_t(v) * d + i] += s ? si * dx[t * d + i] : dx[t * d + i];
    }
  }
}

// Rotary embedding in place, on float32 or bf16 x: each pair widened, rotated
// in float32, written back (rounded for bf16), so the bf16 form gives the same
// bits as widening, rotating in float32 and rounding.
__device__ float widen(float x) { return x; }
__device__ float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ void store(float* p, float v) { *p = v; }
__device__ void store(__nv_bfloat16* p, float v) { *p = __float2bfloat16_rn(v); }

template <class T>
__global__ void k_rope(int64_t batch_rows, int64_t tokens, int64_t heads, int64_t D, int64_t half, int64_t pos0,
                       double base, int64_t rot, bool inverse, T* x) {
  GRID_LOOP(e, batch_rows * heads * half) {
    const int64_t i = e % half, h = (e / half) % heads, r = e / (half * heads);
    const double pos = double(pos0 + r % tokens);
    const double ang = pos * pow(base, -2.0 * double(i) / double(rot));
    const float c = float(cos(ang)), sn = float(inverse ? -sin(ang) : sin(ang));
    T* p = x + (r * heads + h) * D;
    const float x0 = widen(p[2 * i]), x1 = widen(p[2 * i + 1]);
    store(p + 2 * i, x0 * c - x1 * sn);
    store(p + 2 * i + 1, x0 * sn + x1 * c);
  }
}

constexpr float kK = 0.7978845608028654f;  // sqrt(2/pi)
__global__ void k_gelu_fwd(int64_t n, const float* u, float* a, __nv_bfloat16* a16) {
  GRID_LOOP(i, n) {
    const float x = u[i];
    const float v = 0.5f * x * (1.0f + tanhf(kK * (x + 0.044715f * x * x * x)));
    a[i] = v;
    if (a16) a16[i] = __float2bfloat16_rn(v);
  }
}
__global__ void k_gelu_bwd(int64_t n, const float* u, const float* da, float* du, __nv_bfloat16* du16) {
  GRID_LOOP(i, n) {
    const float x = u[i];
    const float th = tanhf(kK * (x + 0.044715f * x * x * x));
    const float dth = (1.0f - th * th) * kK * (1.0f + 3.0f * 0.044715f * x * x);
    const float v = da[i] * (0.5f * (1.0f + th) + 0.5f * x * dth);
    du[i] = v;
    if (du16) du16[i] = __float2bfloat16_rn(v);
  }
}

__global__ void k_embed_fwd(int64_t rows, int64_t d, const int32_t* tok, const float* E, float* x) {
  GRID_LOOP(e, rows * d) x[e] = E[int64_t(tok[e / d]) * d + e % d];
}
__global__ void k_shift_fwd(int64_t rows, int64_t d, const int32_t* prev, const float* E, const float* s, float* x) {
  GRID_LOOP(e, rows * d) {
    const int32_t p = prev[e / d];
    if (p >= 0) x[e] += s[e % d] * E[int64_t(p) * d + e % d];
  }
}

__global__ void k_add(int64_t n, const float* x, float* y) { GRID_LOOP(i, n) y[i] += x[i]; }
__global__ void k_scale(int64_t n, float s, float* x) { GRID_LOOP(i, n) x[i] *= s; }

constexpr int64_t kNone = 0x7fffffffffffffffll;  // no index yet

// One block per row of logits: argmax (the first index of the maximum, as
// the CPU's scan), lse in double, the row's loss and dz.
__global__ void k_xent(int64_t V, const float* z, const int32_t* target, float scale, float* dz, double* loss,
                       int* right) {
  __shared__ float best[kThreads];
  __shared__ int64_t arg[kThreads];
  __shared__ double sh[kThreads];
  const int64_t row = blockIdx.x;
  const float* zr = z + row * V;
  const int tid = threadIdx.x;
  float b = -INFINITY;
  int64_t a = kNone;
  for (int64_t j = tid; j < V; j += kThreads)
    if (a == kNone || zr[j] > b) b = zr[j], a = j;
  best[tid] = b;
  arg[tid] = a;
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    __syncthreads();
    if (tid < s) {
      const float ob = best[tid + s];
      const int64_t oa = arg[tid + s];
      if (oa != kNone && (arg[tid] == kNone || ob > best[tid] || (ob == best[tid] && oa < arg[tid])))
        best[tid] = ob, arg[tid] = oa;
    }
  }
  __syncthreads();
  const int64_t am = arg[0];
  const double m = zr[am];
  double s = 0;
  for (int64_t j = tid; j < V; j += kThreads) s += exp(double(zr[j]) - m);
  sh[tid] = s;
  block_sum(sh);
  const double lse = m + log(sh[0]);
  const int32_t tg = target[row];
  if (tid == 0) {
    loss[row] = lse - zr[tg];
    right[row] = am == tg ? 1 : 0;
  }
  for (int64_t j = tid; j < V; j += kThreads)
    dz[row * V + j] = float((exp(double(zr[j]) - lse) - (j == tg ? 1.0 : 0.0)) * double(scale));
}

// Block b: the double sum of x[i]^2 over i = b*kThreads + tid + k*kSumBlocks*kThreads.
__global__ void k_sumsq(int64_t n, const float* x, double* partial) {
  __shared__ double sh[kThreads];
  double s = 0;
  for (int64_t i = int64_t(blockIdx.x) * kThreads + threadIdx.x; i < n; i += int64_t(kSumBlocks) * kThreads)
    s += double(x[i]) * x[i];
  sh[threadIdx.x] = s;
  block_sum(sh);
  if (threadIdx.x == 0) partial[blockIdx.x] = sh[0];
}

__global__ void k_adamw(int64_t n, float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2,
                        const float* grad, float* w, float* m, float* v) {
  GRID_LOOP(i, n) {
    m[i] = beta1 * m[i] + (1.0f - beta1) * grad[i];
    v[i] = beta2 * v[i] + (1.0f - beta2) * grad[i] * grad[i];
    const float mh = m[i] / bc1, vh = v[i] / bc2;
    w[i] -= lr * (mh / (sqrtf(vh) + eps) + wd * w[i]);
  }
}

// Device scratch that grows and never shrinks.
template <class T>
class Scratch {
 public:
  ~Scratch() {
    if (p_) cudaFree(p_);
  }
  T* get(int64_t n) {
    if (n > n_) {
      if (p_) TRAIN_CUDA_CHECK(cudaFree(p_));
      p_ = nullptr;
      n_ = 0;
      TRAIN_CUDA_CHECK(cudaMalloc(&p_, size_t(std::max<int64_t>(n, 1)) * sizeof(T)));
      n_ = n;
    }
    return p_;
  }

 private:
  T* p_ = nullptr;
  int64_t n_ = 0;
};

int to_int(int64_t x, const char* what) {
  if (x < 0 || x > int64_t(std::numeric_limits<int>::max()))
    throw std::runtime_error(std::string("GEMM: ") + what + " = " + std::to_string(x) + " does not fit an int");
  return int(x);
}

class CudaKernels final : public Kernels {
 public:
  CudaKernels() {
    TRAIN_CUBLAS_CHECK(cublasCreate(&h_));
    TRAIN_CUBLAS_CHECK(cublasSetStream(h_, nullptr));
    TRAIN_CUBLAS_CHECK(cublasSetMathMode(h_, CUBLAS_DEFAULT_MATH));
    TRAIN_CUBLAS_CHECK(cublasSetAtomicsMode(h_, CUBLAS_ATOMICS_NOT_ALLOWED));
    TRAIN_CUBLAS_CHECK(cublasSetPointerMode(h_, CUBLAS_POINTER_MODE_HOST));
  }
  ~CudaKernels() override {
    if (h_) cublasDestroy(h_);
  }

  const char* name() const override { return "cuda"; }
  ringattn::Backend backend() const override { return ringattn::Backend::cuda; }
  void synchronize() override { TRAIN_CUDA_CHECK(cudaStreamSynchronize(nullptr)); }

  void copy(int64_t n, const float* x, float* y) override {
    TRAIN_CUDA_CHECK(cudaMemcpyAsync(y, x, size_t(n) * sizeof(float), cudaMemcpyDeviceToDevice, nullptr));
  }
  void zero(int64_t n, float* x) override { TRAIN_CUDA_CHECK(cudaMemsetAsync(x, 0, size_t(n) * sizeof(float), nullptr)); }
  void gather_rows(int64_t n, int64_t d, const int64_t* rows, const float* x, float* out) override {
    if (n * d == 0) return;
    TRAIN_LAUNCH(k_gather_rows, blocks_for(n * d), kThreads, n, d, rows, x, out);
  }
  void scatter_add_rows(int64_t n, int64_t d, const int64_t* rows, const float* g, float* x) override {
    if (n * d == 0) return;
    TRAIN_LAUNCH(k_scatter_add_rows, blocks_for(d), kThreads, n, d, rows, g, x);
  }
  void to_half(ringattn::DType t, int64_t n, const float* x, void* y) override {
    if (n == 0) return;
    if (t == ringattn::DType::bf16)
      TRAIN_LAUNCH(k_to_bf16, blocks_for(n), kThreads, n, x, static_cast<__nv_bfloat16*>(y));
    else if (t == ringattn::DType::f16)
      TRAIN_LAUNCH(k_to_f16, blocks_for(n), kThreads, n, x, static_cast<__half*>(y));
    else
      throw std::runtime_error("to_half: dtype f32 is not a 16-bit type");
  }
  void from_half(ringattn::DType t, int64_t n, const void* x, float* y) override {
    if (n == 0) return;
    if (t == ringattn::DType::bf16)
      TRAIN_LAUNCH(k_from_bf16, blocks_for(n), kThreads, n, static_cast<const __nv_bfloat16*>(x), y);
    else if (t == ringattn::DType::f16)
      TRAIN_LAUNCH(k_from_f16, blocks_for(n), kThreads, n, static_cast<const __half*>(x), y);
    else
      throw std::runtime_error("from_half: dtype f32 is not a 16-bit type");
  }

  void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const float* A, int64_t lda,
            const float* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    if (M == 0 || N == 0) return;
    TRAIN_CUBLAS_CHECK(cublasSgemm(h_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, to_int(N, "N"),
                                   to_int(M, "M"), to_int(K, "K"), &alpha, B, to_int(ldb, "ldb"), A, to_int(lda, "lda"),
                                   &beta, C, to_int(ldc, "ldc")));
  }

  void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, const uint16_t* A, int64_t lda,
                 const uint16_t* B, int64_t ldb, float beta, float* C, int64_t ldc) override {
    if (M == 0 || N == 0) return;
    TRAIN_CUBLAS_CHECK(cublasGemmEx(h_, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, to_int(N, "N"),
                                    to_int(M, "M"), to_int(K, "K"), &alpha, B, CUDA_R_16BF, to_int(ldb, "ldb"), A,
                                    CUDA_R_16BF, to_int(lda, "lda"), &beta, C, CUDA_R_32F, to_int(ldc, "ldc"),
                                    CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
  }

  void rmsnorm_fwd(int64_t rows, int64_t d, const float* x, const float* g, float eps, float* y, float* rstd,
                   uint16_t* y16) override {
    if (rows == 0) return;
    const unsigned blocks = unsigned((rows + kThreads / 32 - 1) / (kThreads / 32));
    TRAIN_LAUNCH(k_rmsnorm_fwd, blocks, kThreads, rows, d, x, g, eps, y, rstd, reinterpret_cast<__nv_bfloat16*>(y16));
  }
  void rmsnorm_bwd(int64_t rows, int64_t d, const float* x, const float* g, const float* rstd, const float* dy,
                   float* dx, float* dg) override {
    if (rows == 0) return;
    const unsigned blocks = unsigned((rows + kThreads / 32 - 1) / (kThreads / 32));
    TRAIN_LAUNCH(k_rmsnorm_bwd_dx, blocks, kThreads, rows, d, x, g, rstd, dy, dx);
    const Chunks c = chunks_for(rows, kMaxChunks);
    float* partial = partial_.get(c.count * d);
    TRAIN_LAUNCH(k_rmsnorm_dg_partial, (dim3(blocks_for(d), unsigned(c.count))), kThreads, rows, d, c.rows_per, x,
                                                                                               rstd, dy, partial);
    TRAIN_LAUNCH(k_add_chunks, blocks_for(d), kThreads, c.count, d, partial, dg);
  }

  void rope(int64_t batch, int64_t tokens, int64_t heads, int64_t D, int64_t rot, int64_t pos0, float base,
            bool inverse, float* x) override {
    const int64_t half = rot / 2, n = batch * tokens * heads * half;
    if (n == 0) return;
    TRAIN_LAUNCH(k_rope<float>, blocks_for(n), kThreads, batch * tokens, tokens, heads, D, half, pos0, double(base), rot,
                 inverse, x);
  }
  void rope_bf16(int64_t batch, int64_t tokens, int64_t heads, int64_t D, int64_t rot, int64_t pos0, float base,
                 bool inverse, uint16_t* x) override {
    const int64_t half = rot / 2, n = batch * tokens * heads * half;
    if (n == 0) return;
    TRAIN_LAUNCH(k_rope<__nv_bfloat16>, blocks_for(n), kThreads, batch * tokens, tokens, heads, D, half, pos0, double(base), rot,
                 inverse, reinterpret_cast<__nv_bfloat16*>(x));
  }

  void gelu_fwd(int64_t n, const float* u, float* a, uint16_t* a16) override {
    if (n == 0) return;
    TRAIN_LAUNCH(k_gelu_fwd, blocks_for(n), kThreads, n, u, a, reinterpret_cast<__nv_bfloat16*>(a16));
  }
  void gelu_bwd(int64_t n, const float* u, const float* da, float* du, uint16_t* du16) override {
    if (n == 0) return;
    TRAIN_LAUNCH(k_gelu_bwd, blocks_for(n), kThreads, n, u, da, du, reinterpret_cast<__nv_bfloat16*>(du16));
  }

  void embed_fwd(int64_t rows, int64_t d, const int32_t* tok, const float* E, float* x) override {
    if (rows * d == 0) return;
    TRAIN_LAUNCH(k_embed_fwd, blocks_for(rows * d), kThreads, rows, d, tok, E, x);
  }
  void embed_bwd(int64_t rows, int64_t d, int64_t vocab, const int32_t* tok, const float* dx, float* dE) override {
    scatter_add(rows, d, vocab, tok, nullptr, dx, dE);
  }
  void shift_fwd(int64_t rows, int64_t d, const int32_t* prev, const float* E, const float* s, float* x) override {
    if (rows * d == 0) return;
    TRAIN_LAUNCH(k_shift_fwd, blocks_for(rows * d), kThreads, rows, d, prev, E, s, x);
  }
  void shift_bwd(int64_t rows, int64_t d, int64_t vocab, const int32_t* prev, const float* E, const float* s,
                 const float* dx, float* dE, float* ds) override {
    if (rows * d == 0) return;
    scatter_add(rows, d, vocab, prev, s, dx, dE);
    const Chunks c = chunks_for(rows, kMaxChunks);
    float* partial = partial_.get(c.count * d);
    TRAIN_LAUNCH(k_shift_ds_partial, (dim3(blocks_for(d), unsigned(c.count))), kThreads, rows, d, c.rows_per, prev,
                                                                                             E, dx, partial);
    TRAIN_LAUNCH(k_add_chunks, blocks_for(d), kThreads, c.count, d, partial, ds);
  }

  void add(int64_t n, const float* x, float* y) override {
    if (n == 0) return;
    TRAIN_LAUNCH(k_add, blocks_for(n), kThreads, n, x, y);
  }

  double xent(int64_t rows, int64_t V, const float* z, const int32_t* target, float scale, float* dz,
              int64_t* correct) override {
    *correct = 0;
    if (rows == 0) return 0;
    double* loss = loss_.get(rows);
    int* right = right_.get(rows);
    TRAIN_LAUNCH(k_xent, unsigned(rows), kThreads, V, z, target, scale, dz, loss, right);
    std::vector<double> l(static_cast<size_t>(rows));
    std::vector<int> r(static_cast<size_t>(rows));
    TRAIN_CUDA_CHECK(cudaMemcpy(l.data(), loss, size_t(rows) * sizeof(double), cudaMemcpyDeviceToHost));
    TRAIN_CUDA_CHECK(cudaMemcpy(r.data(), right, size_t(rows) * sizeof(int), cudaMemcpyDeviceToHost));
    double sum = 0;
    for (int64_t t = 0; t < rows; ++t) sum += l[size_t(t)], *correct += r[size_t(t)];
    return sum;
  }

  double sumsq(int64_t n, const float* x) override {
    double* partial = loss_.get(kSumBlocks);
    TRAIN_LAUNCH(k_sumsq, kSumBlocks, kThreads, n, x, partial);
    std::vector<double> p(kSumBlocks);
    TRAIN_CUDA_CHECK(cudaMemcpy(p.data(), partial, sizeof(double) * kSumBlocks, cudaMemcpyDeviceToHost));
    double s = 0;
    for (double v : p) s += v;
    return s;
  }
  void scale(int64_t n, float s, float* x) override {
    if (n == 0) return;
    TRAIN_LAUNCH(k_scale, blocks_for(n), kThreads, n, s, x);
  }

  void adamw(int64_t n, float lr, float beta1, float beta2, float eps, float wd, float bc1, float bc2,
             const float* grad, float* w, float* m, float* v) override {
    if (n == 0) return;
    TRAIN_LAUNCH(k_adamw, blocks_for(n), kThreads, n, lr, beta1, beta2, eps, wd, bc1, bc2, grad, w, m, v);
  }

 private:
  // out[idx[t],:] += (s ? s : 1) * dx[t,:] over the rows with idx >= 0, in chunks (see the top of the file).
  void scatter_add(int64_t rows, int64_t d, int64_t V, const int32_t* idx, const float* s, const float* dx, float* out) {
    if (rows * d == 0 || V == 0) return;
    const Chunks c = chunks_for(rows, std::max<int64_t>(1, std::min(kMaxChunks, kScatterFloats / std::max<int64_t>(1, V * d))));
    float* partial = partial_.get(c.count * V * d);
    TRAIN_LAUNCH(k_scatter_partial, (dim3(blocks_for(d), unsigned(c.count))), kThreads, rows, d, V, c.rows_per, idx,
                                                                                            s, dx, partial);
    TRAIN_LAUNCH(k_add_chunks, blocks_for(V * d), kThreads, c.count, V * d, partial, out);
  }
  cublasHandle_t h_ = nullptr;
  Scratch<float> partial_;
  Scratch<double> loss_;
  Scratch<int> right_;
};

}  // namespace

std::unique_ptr<Kernels> make_cuda_kernels() { return std::make_unique<CudaKernels>(); }

}  // namespace train

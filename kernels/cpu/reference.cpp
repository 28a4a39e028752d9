#include "kernels/cpu/reference.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <thread>

namespace ringattn::kern {
namespace {

// o_i(h), written out again here from SPEC.md so the oracle shares no code
// with the runtime it checks.
int64_t spec_offset(bool blocked, int64_t r, int64_t h, int64_t H) {
  if (!blocked) return h % r;
  const int64_t Hp = r * ((H + r - 1) / r);
  return h / (Hp / r);
}

// Rows handed out per grab: small enough to balance threads, large enough
// that the shared counter is cold.
constexpr int64_t kChunkRows = 16;

// Output row (b, t) for every head.
class RowKernel {
 public:
  RowKernel(const RefProblem& c, int64_t N, const double* q, const double* k, const double* v, int64_t t0, int64_t t1,
            double* o, double* lse)
      : c_(c), N_(N), q_(q), k_(k), v_(v), t0_(t0), t1_(t1), o_(o), lse_(lse),
        scale_(c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(c.head_dim))) {}

  void row(int64_t b, int64_t t) {
    const int64_t H = c_.heads, D = c_.head_dim, N = N_, rows = t1_ - t0_;
    for (int64_t h = 0; h < H; ++h) {
      // The multiset union of A_i(t, h) over branches.
      keys_.clear();
      for (const auto& [w, r] : c_.branches) {
        const int64_t s = t / w;
        const int64_t seg_begin = s * w, seg_end = std::min(seg_begin + w, N);
        const int64_t off = spec_offset(c_.blocked_offsets, r, h, H);
        if ((t - seg_begin) % r != off) continue;  // t is not in I(i,h,s)
        for (int64_t u = seg_begin + off; u < seg_end; u += r) {
          if (c_.causal && u > t) break;
          keys_.push_back(u);
        }
      }
      const double* qt = q_ + ((b * N + t) * H + h) * D;
      double* ot = o_ + ((b * rows + (t - t0_)) * H + h) * D;
      double& l = lse_[(b * rows + (t - t0_)) * H + h];
      std::fill(ot, ot + D, 0.0);
      if (keys_.empty()) {
        l = -std::numeric_limits<double>::infinity();
        continue;
      }
      x_.resize(keys_.size());
      double m = -std::numeric_limits<double>::infinity();
      for (size_t j = 0; j < keys_.size(); ++j) {
        const double* ku = k_ + ((b * N + keys_[j]) * H + h) * D;
        double dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += qt[d] * ku[d];
        x_[j] = scale_ * dot;
        m = std::max(m, x_[j]);
      }
      double sum = 0;
      for (size_t j = 0; j < keys_.size(); ++j) {
        const double p = std::exp(x_[j] - m);
        sum += p;
        const double* vu = v_ + ((b * N + keys_[j]) * H + h) * D;
        for (int64_t d = 0; d < D; ++d) ot[d] += p * vu[d];
      }
      for (int64_t d = 0; d < D; ++d) ot[d] /= sum;
      l = m + std::log(sum);
    }
  }

 private:
  const RefProblem& c_;
  const int64_t N_;
  const double *q_, *k_, *v_;
  const int64_t t0_, t1_;
  double *o_, *lse_;
  const double scale_;
  std::vector<int64_t> keys_;
  std::vector<double> x_;
};

}  // namespace

void reference_forward(const RefProblem& c, int64_t B, int64_t N, const double* q, const double* k, const double* v,
                       int64_t t0, int64_t t1, double* o, double* lse, const RefOptions& options) {
  const int64_t rows = t1 - t0, total = B * rows;  // (batch, token) rows
  std::atomic<int64_t> next{0}, done{0};
  using Clock = std::chrono::steady_clock;
  // Rows in chunks from a shared counter; the calling thread (tid 0) also
  // reports progress.
  auto work = [&](int tid) {
    RowKernel kernel(c, N, q, k, v, t0, t1, o, lse);
    Clock::time_point last = Clock::now();
    for (;;) {
      const int64_t first = next.fetch_add(kChunkRows);
      if (first >= total) break;
      const int64_t end = std::min(total, first + kChunkRows);
      for (int64_t i = first; i < end; ++i) kernel.row(i / rows, t0 + i % rows);
      const int64_t now_done = done.fetch_add(end - first) + (end - first);
      if (tid == 0 && options.progress &&
          std::chrono::duration<double>(Clock::now() - last).count() >= options.progress_interval_s) {
        last = Clock::now();
        options.progress(double(now_done) / double(total));
      }
    }
  };
  const int nthreads = int(std::max<int64_t>(1, std::min<int64_t>(options.threads, (total + kChunkRows - 1) / kChunkRows)));
  std::vector<std::thread> helpers;
  for (int i = 1; i < nthreads; ++i) helpers.emplace_back(work, i);
  work(0);
  for (std::thread& th : helpers) th.join();
  if (options.progress) options.progress(1.0);
}

}  // namespace ringattn::kern

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

// The tokens paired with token t of head h, as a multiset over branches (a
// token two branches pair with t is listed twice):
//   keys of query t:    the union of A_i(t, h)               (u <= t if causal)
//   queries of key t:   the union of { t' : t in A_i(t', h) } (t' >= t if causal)
// Both walk I_i(t, h), the index set of t's segment, since u in I_i(t, h)
// iff t in I_i(u, h).
enum class Partners { keys_of_query, queries_of_key };

void partners(const RefProblem& c, int64_t N, int64_t t, int64_t h, Partners role, std::vector<int64_t>* out) {
  out->clear();
  for (const auto& [w, r] : c.branches) {
    const int64_t s = t / w;
    const int64_t seg_begin = s * w, seg_end = std::min(seg_begin + w, N);
    const int64_t off = spec_offset(c.blocked_offsets, r, h, c.heads);
    if ((t - seg_begin) % r != off) continue;  // t is not in I(i,h,s)
    for (int64_t u = seg_begin + off; u < seg_end; u += r) {
      if (c.causal && role == Partners::keys_of_query && u > t) break;
      if (c.causal && role == Partners::queries_of_key && u < t) continue;
      out->push_back(u);
    }
  }
}

double scale_of(const RefProblem& c) { return c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(c.head_dim)); }

double dot(const double* a, const double* b, int64_t n) {
  double s = 0;
  for (int64_t d = 0; d < n; ++d) s += a[d] * b[d];
  return s;
}

// Rows handed out per grab: small enough to balance threads, large enough
// that the shared counter is cold.
constexpr int64_t kChunkRows = 16;

// Runs row(tid_state, b, t) for every (b, t) of batch x [t0, t1) on
// options.threads threads, in chunks from a shared counter; the calling
// thread (tid 0) also reports progress. `make_state` gives each thread its
// own scratch.
template <class MakeState, class Row>
void for_rows(int64_t B, int64_t t0, int64_t t1, const RefOptions& options, MakeState make_state, Row row) {
  const int64_t rows = t1 - t0, total = B * rows;  // (batch, token) rows
  std::atomic<int64_t> next{0}, done{0};
  using Clock = std::chrono::steady_clock;
  auto work = [&](int tid) {
    auto state = make_state();
    Clock::time_point last = Clock::now();
    for (;;) {
      const int64_t first = next.fetch_add(kChunkRows);
      if (first >= total) break;
      const int64_t end = std::min(total, first + kChunkRows);
      for (int64_t i = first; i < end; ++i) row(state, i / rows, t0 + i % rows);
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

// Output row (b, t) of the forward, every head.
class FwdRow {
 public:
  FwdRow(const RefProblem& c, int64_t N, const double* q, const double* k, const double* v, int64_t t0, int64_t t1,
         double* o, double* lse)
      : c_(c), N_(N), q_(q), k_(k), v_(v), t0_(t0), t1_(t1), o_(o), lse_(lse), scale_(scale_of(c)) {}

  void row(int64_t b, int64_t t) {
    const int64_t H = c_.heads, D = c_.head_dim, N = N_, rows = t1_ - t0_;
    for (int64_t h = 0; h < H; ++h) {
      partners(c_, N, t, h, Partners::keys_of_query, &keys_);  // the multiset union of A_i(t, h)
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
        x_[j] = scale_ * dot(qt, k_ + ((b * N + keys_[j]) * H + h) * D, D);
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

// Gradient row (b, t), every head: dQ[t] as a query (over its keys), dK[t]
// and dV[t] as a key (over its queries). Each pair's P, dS is computed once
// from each side; the row writes nothing but its own rows of dq, dk, dv.
class BwdRow {
 public:
  BwdRow(const RefProblem& c, int64_t N, const double* q, const double* k, const double* v, const double* lse,
         const double* dout, const double* delta, int64_t t0, int64_t t1, double* dq, double* dk, double* dv)
      : c_(c), N_(N), q_(q), k_(k), v_(v), lse_(lse), dout_(dout), delta_(delta), t0_(t0), t1_(t1), dq_(dq), dk_(dk),
        dv_(dv), scale_(scale_of(c)) {}

  void row(int64_t b, int64_t t) {
    const int64_t H = c_.heads, D = c_.head_dim, N = N_, rows = t1_ - t0_;
    auto at = [&](const double* x, int64_t u, int64_t h) { return x + ((b * N + u) * H + h) * D; };
    for (int64_t h = 0; h < H; ++h) {
      const int64_t out = ((b * rows + (t - t0_)) * H + h) * D;
      double *dq = dq_ + out, *dk = dk_ + out, *dv = dv_ + out;
      std::fill(dq, dq + D, 0.0);
      std::fill(dk, dk + D, 0.0);
      std::fill(dv, dv + D, 0.0);
      // t as a query: dQ[t] = scale * sum_u dS(t,u) K[u].
      const double lse_t = lse_[(b * N + t) * H + h];
      if (lse_t != -std::numeric_limits<double>::infinity()) {  // else no keys: dQ = 0
        partners(c_, N, t, h, Partners::keys_of_query, &pairs_);
        const double *qt = at(q_, t, h), *dout_t = at(dout_, t, h), delta_t = delta_[(b * N + t) * H + h];
        for (int64_t u : pairs_) {
          const double p = std::exp(scale_ * dot(qt, at(k_, u, h), D) - lse_t);
          const double ds = p * (dot(dout_t, at(v_, u, h), D) - delta_t);
          const double* ku = at(k_, u, h);
          for (int64_t d = 0; d < D; ++d) dq[d] += scale_ * ds * ku[d];
        }
      }
      // t as a key: dV[t] = sum_t' P(t',t) dO[t'], dK[t] = scale * sum_t' dS(t',t) Q[t'].
      partners(c_, N, t, h, Partners::queries_of_key, &pairs_);
      const double *kt = at(k_, t, h), *vt = at(v_, t, h);
      for (int64_t u : pairs_) {
        const double lse_u = lse_[(b * N + u) * H + h];
        if (lse_u == -std::numeric_limits<double>::infinity()) continue;  // cannot happen: u sees t
        const double *qu = at(q_, u, h), *dou = at(dout_, u, h);
        const double p = std::exp(scale_ * dot(qu, kt, D) - lse_u);
        const double ds = p * (dot(dou, vt, D) - delta_[(b * N + u) * H + h]);
        for (int64_t d = 0; d < D; ++d) {
          dv[d] += p * dou[d];
          dk[d] += scale_ * ds * qu[d];
        }
      }
    }
  }

 private:
  const RefProblem& c_;
  const int64_t N_;
  const double *q_, *k_, *v_, *lse_, *dout_, *delta_;
  const int64_t t0_, t1_;
  double *dq_, *dk_, *dv_;
  const double scale_;
  std::vector<int64_t> pairs_;
};

}  // namespace

void reference_forward(const RefProblem& c, int64_t B, int64_t N, const double* q, const double* k, const double* v,
                       int64_t t0, int64_t t1, double* o, double* lse, const RefOptions& options) {
  for_rows(
      B, t0, t1, options, [&] { return FwdRow(c, N, q, k, v, t0, t1, o, lse); },
      [](FwdRow& r, int64_t b, int64_t t) { r.row(b, t); });
}

void reference_backward(const RefProblem& c, int64_t B, int64_t N, const double* q, const double* k, const double* v,
                        const double* o, const double* lse, const double* dout, int64_t t0, int64_t t1, double* dq,
                        double* dk, double* dv, const RefOptions& options) {
  const int64_t H = c.heads, D = c.head_dim;
  // Delta[t,h] = <dO[t,h], O[t,h]> for every token: row t's keys are seen by
  // queries anywhere in their segments.
  std::vector<double> delta(size_t(B * N * H));
  for (int64_t i = 0; i < B * N * H; ++i) delta[size_t(i)] = dot(dout + i * D, o + i * D, D);
  for_rows(
      B, t0, t1, options, [&] { return BwdRow(c, N, q, k, v, lse, dout, delta.data(), t0, t1, dq, dk, dv); },
      [](BwdRow& r, int64_t b, int64_t t) { r.row(b, t); });
}

void reference_backward(const RefProblem& c, int64_t B, int64_t N, const double* q, const double* k, const double* v,
                        const double* o, const double* lse, const double* dout, double* dq, double* dk, double* dv,
                        const RefOptions& options) {
  reference_backward(c, B, N, q, k, v, o, lse, dout, 0, N, dq, dk, dv, options);
}

}  // namespace ringattn::kern

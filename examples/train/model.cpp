#include "model.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace train {
namespace {

double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// Normal deviates from splitmix64 + Box-Muller: the same numbers everywhere.
struct Normal {
  uint64_t s;
  double uniform() {  // (0, 1)
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (double(z >> 11) + 0.5) / 9007199254740992.0;
  }
  double next() { return std::sqrt(-2.0 * std::log(uniform())) * std::cos(6.283185307179586 * uniform()); }
};

}  // namespace

std::vector<TensorInfo> param_layout(const ModelDims& m) {
  std::vector<TensorInfo> t;
  int64_t off = 0;
  auto add = [&](std::string name, int64_t size, bool decay) {
    t.push_back({std::move(name), off, size, decay});
    off += size;
  };
  add("embed", m.vocab * m.d, true);
  if (m.prev_token) add("shift", m.d, false);
  for (int64_t l = 0; l < m.layers; ++l) {
    const std::string p = "l" + std::to_string(l) + ".";
    add(p + "norm1", m.d, false);
    add(p + "wq", m.d * m.d, true);
    add(p + "wk", m.d * m.d, true);
    add(p + "wv", m.d * m.d, true);
    add(p + "wo", m.d * m.d, true);
    add(p + "norm2", m.d, false);
    add(p + "w1", m.d * m.mlp, true);
    add(p + "w2", m.mlp * m.d, true);
  }
  add("normf", m.d, false);
  if (!m.tied) add("head", m.d * m.vocab, true);
  return t;
}

int64_t param_count(const std::vector<TensorInfo>& layout) {
  return layout.empty() ? 0 : layout.back().offset + layout.back().size;
}

void init_params(const ModelDims& m, const std::vector<TensorInfo>& layout, uint64_t seed, float* w) {
  Normal rng{seed ^ 0x5851F42D4C957F2Dull};
  const double out_scale = 1.0 / std::sqrt(2.0 * double(m.layers));
  for (const TensorInfo& t : layout) {
    const bool norm = t.name.find("norm") != std::string::npos;
    if (t.name == "shift") {  // a ramp over the channels, 0 .. 1 (RWKV's token-shift init): some carry the previous token, some not
      for (int64_t i = 0; i < t.size; ++i) w[t.offset + i] = float(double(i) / double(std::max<int64_t>(1, t.size - 1)));
      continue;
    }
    const bool residual_out = t.name.size() > 3 && (t.name.compare(t.name.size() - 3, 3, ".wo") == 0 ||
                                                    t.name.compare(t.name.size() - 3, 3, ".w2") == 0);
    const bool vo = t.name.size() > 3 && (t.name.compare(t.name.size() - 3, 3, ".wv") == 0 ||
                                          t.name.compare(t.name.size() - 3, 3, ".wo") == 0);
    double sd = 0.02 * (residual_out ? out_scale : 1.0);
    if (m.copy_init && t.name == "embed") sd = 1.0 / std::sqrt(double(m.d));  // rows of norm ~1: tied logits O(1)
    for (int64_t i = 0; i < t.size; ++i) w[t.offset + i] = norm ? 1.0f : float(sd * rng.next());
    if (m.copy_init && vo)
      for (int64_t i = 0; i < m.d; ++i) w[t.offset + i * m.d + i] += 1.0f;
  }
}

Model::Model(const ModelDims& dims, Kernels* k, ringattn::Context* ctx, int64_t batch, int64_t seq)
    : dims_(dims), layout_(param_layout(dims)), k_(k), ctx_(ctx), shape_{batch, seq} {
  const int64_t L = seq / ctx->world_size();
  rows_ = batch * L;
  pos0_ = int64_t(ctx->rank()) * L;
  const size_t rd = size_t(rows_ * dims.d), rf = size_t(rows_ * dims.mlp), r = size_t(rows_);
  acts_.resize(size_t(dims.layers));
  for (Layer& a : acts_) {
    for (auto* b : {&a.x_in, &a.h, &a.q, &a.k, &a.v, &a.o, &a.x_mid, &a.h2}) b->resize(rd);
    a.u.resize(rf);
    a.a.resize(rf);
    a.lse.resize(r * size_t(dims.heads));
    a.rstd1.resize(r);
    a.rstd2.resize(r);
  }
  for (auto* b : {&x_, &dx_, &dh_, &dq_, &dk_, &dv_, &dout_}) b->resize(rd);
  da_.resize(rf);
  du_.resize(rf);
}

const float* Model::P(const float* w, const std::string& name) const {
  for (const TensorInfo& t : layout_)
    if (t.name == name) return w + t.offset;
  throw std::logic_error("no parameter " + name);
}
float* Model::P(float* w, const std::string& name) const {
  return const_cast<float*>(P(static_cast<const float*>(w), name));
}

ringattn::Status Model::run(const float* w, const int32_t* tokens, const int32_t* prev, const std::vector<int64_t>& rows,
                            const std::vector<int32_t>& targets, float loss_scale, float* grad, StepResult* out) {
  const int64_t d = dims_.d, f = dims_.mlp, V = dims_.vocab, H = dims_.heads, D = dims_.head_dim();
  const int64_t T = rows_, L = shape_.seq / ctx_->world_size(), n = int64_t(rows.size());
  const size_t td = size_t(T * d);
  out->attn_ms = 0;
  auto timed = [&](auto&& call) {
    const auto t0 = std::chrono::steady_clock::now();
    ringattn::Status st = call();
    out->attn_ms += ms_since(t0);
    return st;
  };

  // Forward.
  k_->embed_fwd(T, d, tokens, P(w, "embed"), x_.data());
  if (dims_.prev_token) k_->shift_fwd(T, d, prev, P(w, "embed"), P(w, "shift"), x_.data());
  for (int64_t l = 0; l < dims_.layers; ++l) {
    Layer& a = acts_[size_t(l)];
    const std::string p = "l" + std::to_string(l) + ".";
    std::memcpy(a.x_in.data(), x_.data(), td * sizeof(float));
    k_->rmsnorm_fwd(T, d, x_.data(), P(w, p + "norm1"), 1e-5f, a.h.data(), a.rstd1.data());
    k_->gemm(false, false, T, d, d, 1.0f, a.h.data(), d, P(w, p + "wq"), d, 0.0f, a.q.data(), d);
    k_->gemm(false, false, T, d, d, 1.0f, a.h.data(), d, P(w, p + "wk"), d, 0.0f, a.k.data(), d);
    k_->gemm(false, false, T, d, d, 1.0f, a.h.data(), d, P(w, p + "wv"), d, 0.0f, a.v.data(), d);
    k_->rope(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, false, a.q.data());
    k_->rope(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, false, a.k.data());
    RINGATTN_RETURN_IF_ERROR(timed([&] { return ctx_->forward(shape_, a.q.data(), a.k.data(), a.v.data(), a.o.data(), a.lse.data()); }));
    k_->gemm(false, false, T, d, d, 1.0f, a.o.data(), d, P(w, p + "wo"), d, 1.0f, x_.data(), d);
    std::memcpy(a.x_mid.data(), x_.data(), td * sizeof(float));
    k_->rmsnorm_fwd(T, d, x_.data(), P(w, p + "norm2"), 1e-5f, a.h2.data(), a.rstd2.data());
    k_->gemm(false, false, T, f, d, 1.0f, a.h2.data(), d, P(w, p + "w1"), f, 0.0f, a.u.data(), f);
    k_->gelu_fwd(T * f, a.u.data(), a.a.data());
    k_->gemm(false, false, T, d, f, 1.0f, a.a.data(), f, P(w, p + "w2"), d, 1.0f, x_.data(), d);
  }
  // The head runs on the answer rows only: the loss needs nothing else.
  hsel_.assign(size_t(n * d), 0.0f);
  hf_.resize(size_t(n * d));
  rstdf_.resize(size_t(n));
  zsel_.resize(size_t(n * V));
  dz_.resize(size_t(n * V));
  for (int64_t i = 0; i < n; ++i) std::memcpy(&hsel_[size_t(i * d)], &x_[size_t(rows[size_t(i)] * d)], size_t(d) * sizeof(float));
  out->answers = n;
  out->loss_sum = 0;
  out->correct = 0;
  if (n > 0) {
    k_->rmsnorm_fwd(n, d, hsel_.data(), P(w, "normf"), 1e-5f, hf_.data(), rstdf_.data());
    if (dims_.tied)  // z = hf E^T, E: V x d
      k_->gemm(false, true, n, V, d, 1.0f, hf_.data(), d, P(w, "embed"), d, 0.0f, zsel_.data(), V);
    else
      k_->gemm(false, false, n, V, d, 1.0f, hf_.data(), d, P(w, "head"), V, 0.0f, zsel_.data(), V);
    out->loss_sum = k_->xent(n, V, zsel_.data(), targets.data(), loss_scale, dz_.data(), &out->correct);
  }
  if (!grad) return ringattn::Status::Ok();

  // Backward: dx_ is the gradient of the residual stream.
  std::fill(dx_.begin(), dx_.end(), 0.0f);
  if (n > 0) {
    std::vector<float> dhf(size_t(n * d)), dsel(size_t(n * d), 0.0f);
    if (dims_.tied) {  // dE += dz^T hf; dhf = dz E
      k_->gemm(true, false, V, d, n, 1.0f, dz_.data(), V, hf_.data(), d, 1.0f, P(grad, "embed"), d);
      k_->gemm(false, false, n, d, V, 1.0f, dz_.data(), V, P(w, "embed"), d, 0.0f, dhf.data(), d);
    } else {
      k_->gemm(true, false, d, V, n, 1.0f, hf_.data(), d, dz_.data(), V, 1.0f, P(grad, "head"), V);
      k_->gemm(false, true, n, d, V, 1.0f, dz_.data(), V, P(w, "head"), V, 0.0f, dhf.data(), d);
    }
    k_->rmsnorm_bwd(n, d, hsel_.data(), P(w, "normf"), rstdf_.data(), dhf.data(), dsel.data(), P(grad, "normf"));
    for (int64_t i = 0; i < n; ++i) k_->add(d, &dsel[size_t(i * d)], &dx_[size_t(rows[size_t(i)] * d)]);
  }
  for (int64_t l = dims_.layers - 1; l >= 0; --l) {
    Layer& a = acts_[size_t(l)];
    const std::string p = "l" + std::to_string(l) + ".";
    // MLP: x_out = x_mid + gelu(norm2(x_mid) W1) W2.
    k_->gemm(true, false, f, d, T, 1.0f, a.a.data(), f, dx_.data(), d, 1.0f, P(grad, p + "w2"), d);
    k_->gemm(false, true, T, f, d, 1.0f, dx_.data(), d, P(w, p + "w2"), d, 0.0f, da_.data(), f);
    k_->gelu_bwd(T * f, a.u.data(), da_.data(), du_.data());
    k_->gemm(true, false, d, f, T, 1.0f, a.h2.data(), d, du_.data(), f, 1.0f, P(grad, p + "w1"), f);
    k_->gemm(false, true, T, d, f, 1.0f, du_.data(), f, P(w, p + "w1"), f, 0.0f, dh_.data(), d);
    k_->rmsnorm_bwd(T, d, a.x_mid.data(), P(w, p + "norm2"), a.rstd2.data(), dh_.data(), dx_.data(), P(grad, p + "norm2"));
    // Attention: x_mid = x_in + attn(rope(h Wq), rope(h Wk), h Wv) Wo, h = norm1(x_in).
    k_->gemm(true, false, d, d, T, 1.0f, a.o.data(), d, dx_.data(), d, 1.0f, P(grad, p + "wo"), d);
    k_->gemm(false, true, T, d, d, 1.0f, dx_.data(), d, P(w, p + "wo"), d, 0.0f, dout_.data(), d);
    RINGATTN_RETURN_IF_ERROR(timed([&] {
      return ctx_->backward(shape_, a.q.data(), a.k.data(), a.v.data(), a.o.data(), a.lse.data(), dout_.data(), dq_.data(),
                            dk_.data(), dv_.data());
    }));
    k_->rope(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, true, dq_.data());
    k_->rope(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, true, dk_.data());
    k_->gemm(true, false, d, d, T, 1.0f, a.h.data(), d, dq_.data(), d, 1.0f, P(grad, p + "wq"), d);
    k_->gemm(true, false, d, d, T, 1.0f, a.h.data(), d, dk_.data(), d, 1.0f, P(grad, p + "wk"), d);
    k_->gemm(true, false, d, d, T, 1.0f, a.h.data(), d, dv_.data(), d, 1.0f, P(grad, p + "wv"), d);
    k_->gemm(false, true, T, d, d, 1.0f, dq_.data(), d, P(w, p + "wq"), d, 0.0f, dh_.data(), d);
    k_->gemm(false, true, T, d, d, 1.0f, dk_.data(), d, P(w, p + "wk"), d, 1.0f, dh_.data(), d);
    k_->gemm(false, true, T, d, d, 1.0f, dv_.data(), d, P(w, p + "wv"), d, 1.0f, dh_.data(), d);
    k_->rmsnorm_bwd(T, d, a.x_in.data(), P(w, p + "norm1"), a.rstd1.data(), dh_.data(), dx_.data(), P(grad, p + "norm1"));
  }
  k_->embed_bwd(T, d, tokens, dx_.data(), P(grad, "embed"));
  if (dims_.prev_token) k_->shift_bwd(T, d, prev, P(w, "embed"), P(w, "shift"), dx_.data(), P(grad, "embed"), P(grad, "shift"));
  return ringattn::Status::Ok();
}

}  // namespace train

#include "model.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace train {
namespace {

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

Model::Model(const ModelDims& dims, Kernels* k, ringattn::Context* ctx, int64_t batch, int64_t seq, bool bf16_matmul)
    : dims_(dims), layout_(param_layout(dims)), k_(k), ctx_(ctx), shape_{batch, seq}, adt_(ctx->config().dtype),
      bf16_(bf16_matmul) {
  const int64_t L = seq / ctx->world_size();
  rows_ = batch * L;
  pos0_ = int64_t(ctx->rank()) * L;
}

ringattn::Status Model::allocate() {
  const ringattn::Backend b = k_->backend();
  const size_t rd = size_t(rows_ * dims_.d), rf = size_t(rows_ * dims_.mlp), r = size_t(rows_);
  // Every float32 buffer starts zeroed (each is written before it is read; zero keeps a bug from reading garbage);
  // the 16-bit ones are written whole (conversions, Context outputs) before any read.
  auto f32 = [&](Buf<float>* x, size_t n) -> ringattn::Status {
    RINGATTN_RETURN_IF_ERROR(x->resize(b, n));
    k_->zero(int64_t(n), x->data());
    return ringattn::Status::Ok();
  };
  auto f16 = [&](Buf<uint16_t>* x, size_t n) { return x->resize(b, n); };
  acts_.resize(size_t(dims_.layers));
  for (Layer& a : acts_) {
    for (auto* x : {&a.x_in, &a.h, &a.x_mid, &a.h2}) RINGATTN_RETURN_IF_ERROR(f32(x, rd));
    RINGATTN_RETURN_IF_ERROR(f32(&a.u, rf));
    RINGATTN_RETURN_IF_ERROR(f32(&a.a, rf));
    RINGATTN_RETURN_IF_ERROR(f32(&a.lse, r * size_t(dims_.heads)));
    RINGATTN_RETURN_IF_ERROR(f32(&a.rstd1, r));
    RINGATTN_RETURN_IF_ERROR(f32(&a.rstd2, r));
    if (half()) {
      for (auto* x : {&a.q16, &a.k16, &a.v16, &a.o16}) RINGATTN_RETURN_IF_ERROR(f16(x, rd));
    } else {
      for (auto* x : {&a.q, &a.k, &a.v, &a.o}) RINGATTN_RETURN_IF_ERROR(f32(x, rd));
    }
  }
  for (auto* x : {&x_, &dx_, &dh_, &dq_, &dk_, &dv_, &dout_}) RINGATTN_RETURN_IF_ERROR(f32(x, rd));
  RINGATTN_RETURN_IF_ERROR(f32(&da_, rf));
  RINGATTN_RETURN_IF_ERROR(f32(&du_, rf));
  if (half()) {
    for (auto* x : {&sq_, &sk_, &sv_, &so_}) RINGATTN_RETURN_IF_ERROR(f32(x, rd));
    for (auto* x : {&dout16_, &dq16_, &dk16_, &dv16_}) RINGATTN_RETURN_IF_ERROR(f16(x, rd));
  }
  if (bf16_) {
    for (Layer& a : acts_) {
      for (auto* x : {&a.h16, &a.h2_16}) RINGATTN_RETURN_IF_ERROR(f16(x, rd));
      RINGATTN_RETURN_IF_ERROR(f16(&a.a16, rf));
    }
    RINGATTN_RETURN_IF_ERROR(f16(&w16_, size_t(param_count(layout_))));
    RINGATTN_RETURN_IF_ERROR(f16(&x16_, rd));
    RINGATTN_RETURN_IF_ERROR(f16(&u16_, rf));
    if (adt_ != ringattn::DType::bf16) RINGATTN_RETURN_IF_ERROR(f16(&o16s_, rd));
    if (!half())
      for (auto* x : {&dq16s_, &dk16s_, &dv16s_}) RINGATTN_RETURN_IF_ERROR(f16(x, rd));
  }
  k_->synchronize();
  return ringattn::Status::Ok();
}

int64_t Model::offset(const std::string& name) const {
  for (const TensorInfo& t : layout_)
    if (t.name == name) return t.offset;
  throw std::logic_error("no parameter " + name);
}

const float* Model::P(const float* w, const std::string& name) const { return w + offset(name); }
float* Model::P(float* w, const std::string& name) const {
  return const_cast<float*>(P(static_cast<const float*>(w), name));
}

ringattn::Status Model::run(const float* w, const int32_t* tokens, const int32_t* prev, const std::vector<int64_t>& rows,
                            const std::vector<int32_t>& targets, float loss_scale, float* grad, StepResult* out) {
  const int64_t d = dims_.d, f = dims_.mlp, V = dims_.vocab, H = dims_.heads, D = dims_.head_dim();
  const int64_t T = rows_, L = shape_.seq / ctx_->world_size(), n = int64_t(rows.size());
  const ringattn::Backend b = k_->backend();
  // The answer rows go to the backend first: a host copy later would wait for attention in flight.
  out->answers = n;
  out->loss_sum = 0;
  out->correct = 0;
  if (n > 0) {
    RINGATTN_RETURN_IF_ERROR(rows_dev_.resize(b, size_t(n)));
    RINGATTN_RETURN_IF_ERROR(rows_dev_.upload(rows.data(), size_t(n)));
    RINGATTN_RETURN_IF_ERROR(targets_dev_.resize(b, size_t(n)));
    RINGATTN_RETURN_IF_ERROR(targets_dev_.upload(targets.data(), size_t(n)));
    for (auto* x : {&hsel_, &hf_, &dhf_, &dsel_}) RINGATTN_RETURN_IF_ERROR(x->resize(b, size_t(n * d)));
    for (auto* x : {&zsel_, &dz_}) RINGATTN_RETURN_IF_ERROR(x->resize(b, size_t(n * V)));
    RINGATTN_RETURN_IF_ERROR(rstdf_.resize(b, size_t(n)));
  }
  // Attention time: a mark before and after every Context call (host clock
  // on cpu; CUDA events on the stream on cuda, so the time is the device's,
  // not the enqueue's), read once the step's work is done.
  ringattn::dev::Marks marks(b);
  // Every GEMM of the step through here: its FLOPs (2 M N K) are the step's
  // matmul work (MFU), its time (marks as for attention) the step's GEMM time.
  out->matmul_flops = 0;
  ringattn::dev::Marks gemm_marks(b);
  ringattn::Status gemm_mark_st;
  // An operand: float32, and its bf16 copy where the GEMMs run on bf16 (bf16_);
  // a GEMM with both copies runs on them, any other in float32.
  struct Opnd {
    const float* f;
    const uint16_t* h;
  };
  const ringattn::DType kBf16 = ringattn::DType::bf16;
  if (bf16_) k_->to_half(kBf16, param_count(layout_), w, w16_.data());  // the step's weights, rounded once
  auto W = [&](const std::string& name) { return Opnd{P(w, name), bf16_ ? w16_.data() + offset(name) : nullptr}; };
  auto rounded = [&](const float* x, int64_t count, uint16_t* h) {  // x, rounded into h now
    if (bf16_) k_->to_half(kBf16, count, x, h);
    return Opnd{x, bf16_ ? h : nullptr};
  };
  auto kept = [&](const float* x, const uint16_t* h) { return Opnd{x, bf16_ ? h : nullptr}; };  // rounded earlier
  auto f32 = [](const float* x) { return Opnd{x, nullptr}; };
  uint16_t* const none = nullptr;
  auto copy16 = [&](Buf<uint16_t>& h) { return bf16_ ? h.data() : none; };  // where a kernel also writes its output's bf16 copy
  // bf16 attention with bf16 GEMMs: O and dV as attention gives them are the GEMMs' operands
  // (their float32 widenings are not needed).
  const bool attn16_is_operand = bf16_ && adt_ == kBf16;
  auto mm = [&](bool ta, bool tb, int64_t M, int64_t N, int64_t K, float alpha, Opnd A, int64_t lda, Opnd B,
                int64_t ldb, float beta, float* C, int64_t ldc) {
    out->matmul_flops += 2.0 * double(M) * double(N) * double(K);
    if (gemm_mark_st.ok()) gemm_mark_st = gemm_marks.mark();
    if (A.h && B.h)
      k_->gemm_bf16(ta, tb, M, N, K, alpha, A.h, lda, B.h, ldb, beta, C, ldc);
    else
      k_->gemm(ta, tb, M, N, K, alpha, A.f, lda, B.f, ldb, beta, C, ldc);
    if (gemm_mark_st.ok()) gemm_mark_st = gemm_marks.mark();
  };
  auto timed = [&](auto&& call) {
    RINGATTN_RETURN_IF_ERROR(marks.mark());
    RINGATTN_RETURN_IF_ERROR(call());
    return marks.mark();
  };
  auto attn_ms = [&]() -> ringattn::Status {
    RINGATTN_RETURN_IF_ERROR(ctx_->synchronize());  // nothing in flight: the marks are all reached (under the timeout)
    out->attn_ms = 0;
    for (size_t i = 0; i + 1 < marks.size(); i += 2) {
      double ms = 0;
      RINGATTN_RETURN_IF_ERROR(marks.elapsed_ms(i, i + 1, &ms));
      out->attn_ms += ms;
    }
    RINGATTN_RETURN_IF_ERROR(gemm_mark_st);
    out->gemm_ms = 0;
    for (size_t i = 0; i + 1 < gemm_marks.size(); i += 2) {
      double ms = 0;
      RINGATTN_RETURN_IF_ERROR(gemm_marks.elapsed_ms(i, i + 1, &ms));
      out->gemm_ms += ms;
    }
    return ringattn::Status::Ok();
  };
  const int64_t td = T * d;

  // Forward.
  k_->embed_fwd(T, d, tokens, P(w, "embed"), x_.data());
  if (dims_.prev_token) k_->shift_fwd(T, d, prev, P(w, "embed"), P(w, "shift"), x_.data());
  for (int64_t l = 0; l < dims_.layers; ++l) {
    Layer& a = acts_[size_t(l)];
    const std::string p = "l" + std::to_string(l) + ".";
    float* q = half() ? sq_.data() : a.q.data();
    float* k = half() ? sk_.data() : a.k.data();
    float* v = half() ? sv_.data() : a.v.data();
    float* o = half() ? so_.data() : a.o.data();
    k_->copy(td, x_.data(), a.x_in.data());
    k_->rmsnorm_fwd(T, d, x_.data(), P(w, p + "norm1"), 1e-5f, a.h.data(), a.rstd1.data(), copy16(a.h16));
    const Opnd h = kept(a.h.data(), a.h16.data());
    mm(false, false, T, d, d, 1.0f, h, d, W(p + "wq"), d, 0.0f, q, d);
    mm(false, false, T, d, d, 1.0f, h, d, W(p + "wk"), d, 0.0f, k, d);
    mm(false, false, T, d, d, 1.0f, h, d, W(p + "wv"), d, 0.0f, v, d);
    k_->rope(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, false, q);
    k_->rope(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, false, k);
    if (half()) {
      k_->to_half(adt_, td, q, a.q16.data());
      k_->to_half(adt_, td, k, a.k16.data());
      k_->to_half(adt_, td, v, a.v16.data());
      RINGATTN_RETURN_IF_ERROR(timed([&] {
        return ctx_->forward(shape_, a.q16.data(), a.k16.data(), a.v16.data(), a.o16.data(), a.lse.data());
      }));
      if (!attn16_is_operand) k_->from_half(adt_, td, a.o16.data(), o);
    } else {
      RINGATTN_RETURN_IF_ERROR(timed([&] { return ctx_->forward(shape_, q, k, v, o, a.lse.data()); }));
    }
    // O: bf16 attention's output is already its bf16 copy (o is it, widened).
    const Opnd op = adt_ == kBf16 ? kept(o, a.o16.data()) : rounded(o, td, o16s_.data());
    mm(false, false, T, d, d, 1.0f, op, d, W(p + "wo"), d, 1.0f, x_.data(), d);
    k_->copy(td, x_.data(), a.x_mid.data());
    k_->rmsnorm_fwd(T, d, x_.data(), P(w, p + "norm2"), 1e-5f, a.h2.data(), a.rstd2.data(), copy16(a.h2_16));
    mm(false, false, T, f, d, 1.0f, kept(a.h2.data(), a.h2_16.data()), d, W(p + "w1"), f, 0.0f, a.u.data(), f);
    k_->gelu_fwd(T * f, a.u.data(), a.a.data(), copy16(a.a16));
    mm(false, false, T, d, f, 1.0f, kept(a.a.data(), a.a16.data()), f, W(p + "w2"), d, 1.0f, x_.data(), d);
  }
  // The head runs on the answer rows only: the loss needs nothing else. Its
  // result comes to the host: wait for attention in flight under the timeout first.
  RINGATTN_RETURN_IF_ERROR(ctx_->synchronize());
  if (n > 0) {
    k_->gather_rows(n, d, rows_dev_.data(), x_.data(), hsel_.data());
    k_->rmsnorm_fwd(n, d, hsel_.data(), P(w, "normf"), 1e-5f, hf_.data(), rstdf_.data(), nullptr);
    if (dims_.tied)  // z = hf E^T, E: V x d
      mm(false, true, n, V, d, 1.0f, f32(hf_.data()), d, f32(P(w, "embed")), d, 0.0f, zsel_.data(), V);
    else
      mm(false, false, n, V, d, 1.0f, f32(hf_.data()), d, f32(P(w, "head")), V, 0.0f, zsel_.data(), V);
    out->loss_sum = k_->xent(n, V, zsel_.data(), targets_dev_.data(), loss_scale, dz_.data(), &out->correct);
  }
  if (!grad) return attn_ms();

  // Backward: dx_ is the gradient of the residual stream.
  k_->zero(td, dx_.data());
  if (n > 0) {
    k_->zero(n * d, dsel_.data());
    if (dims_.tied) {  // dE += dz^T hf; dhf = dz E
      mm(true, false, V, d, n, 1.0f, f32(dz_.data()), V, f32(hf_.data()), d, 1.0f, P(grad, "embed"), d);
      mm(false, false, n, d, V, 1.0f, f32(dz_.data()), V, f32(P(w, "embed")), d, 0.0f, dhf_.data(), d);
    } else {
      mm(true, false, d, V, n, 1.0f, f32(hf_.data()), d, f32(dz_.data()), V, 1.0f, P(grad, "head"), V);
      mm(false, true, n, d, V, 1.0f, f32(dz_.data()), V, f32(P(w, "head")), V, 0.0f, dhf_.data(), d);
    }
    k_->rmsnorm_bwd(n, d, hsel_.data(), P(w, "normf"), rstdf_.data(), dhf_.data(), dsel_.data(), P(grad, "normf"));
    k_->scatter_add_rows(n, d, rows_dev_.data(), dsel_.data(), dx_.data());
  }
  for (int64_t l = dims_.layers - 1; l >= 0; --l) {
    Layer& a = acts_[size_t(l)];
    const std::string p = "l" + std::to_string(l) + ".";
    // MLP: x_out = x_mid + gelu(norm2(x_mid) W1) W2.
    const Opnd dxm = rounded(dx_.data(), td, x16_.data());
    mm(true, false, f, d, T, 1.0f, kept(a.a.data(), a.a16.data()), f, dxm, d, 1.0f, P(grad, p + "w2"), d);
    mm(false, true, T, f, d, 1.0f, dxm, d, W(p + "w2"), d, 0.0f, da_.data(), f);
    k_->gelu_bwd(T * f, a.u.data(), da_.data(), du_.data(), copy16(u16_));
    const Opnd du = kept(du_.data(), u16_.data());
    mm(true, false, d, f, T, 1.0f, kept(a.h2.data(), a.h2_16.data()), d, du, f, 1.0f, P(grad, p + "w1"), f);
    mm(false, true, T, d, f, 1.0f, du, f, W(p + "w1"), f, 0.0f, dh_.data(), d);
    k_->rmsnorm_bwd(T, d, a.x_mid.data(), P(w, p + "norm2"), a.rstd2.data(), dh_.data(), dx_.data(), P(grad, p + "norm2"));
    // Attention: x_mid = x_in + attn(rope(h Wq), rope(h Wk), h Wv) Wo, h = norm1(x_in).
    const float* o = a.o.data();
    if (half() && !attn16_is_operand) {  // the O the forward used, widened again (the same bits)
      k_->from_half(adt_, td, a.o16.data(), so_.data());
      o = so_.data();
    }
    const Opnd op = adt_ == kBf16 ? kept(o, a.o16.data()) : rounded(o, td, o16s_.data());
    const Opnd dxa = rounded(dx_.data(), td, x16_.data());
    mm(true, false, d, d, T, 1.0f, op, d, dxa, d, 1.0f, P(grad, p + "wo"), d);
    mm(false, true, T, d, d, 1.0f, dxa, d, W(p + "wo"), d, 0.0f, dout_.data(), d);
    if (half()) {
      k_->to_half(adt_, td, dout_.data(), dout16_.data());
      RINGATTN_RETURN_IF_ERROR(timed([&] {
        return ctx_->backward(shape_, a.q16.data(), a.k16.data(), a.v16.data(), a.o16.data(), a.lse.data(),
                              dout16_.data(), dq16_.data(), dk16_.data(), dv16_.data());
      }));
      if (!attn16_is_operand) {  // else dq16_, dk16_ (rotated in place below) and dv16_ are the operands
        k_->from_half(adt_, td, dq16_.data(), dq_.data());
        k_->from_half(adt_, td, dk16_.data(), dk_.data());
        k_->from_half(adt_, td, dv16_.data(), dv_.data());
      }
    } else {
      RINGATTN_RETURN_IF_ERROR(timed([&] {
        return ctx_->backward(shape_, a.q.data(), a.k.data(), a.v.data(), a.o.data(), a.lse.data(), dout_.data(),
                              dq_.data(), dk_.data(), dv_.data());
      }));
    }
    if (attn16_is_operand) {  // the same bits as widening, rotating and rounding again
      k_->rope_bf16(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, true, dq16_.data());
      k_->rope_bf16(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, true, dk16_.data());
    } else {
      k_->rope(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, true, dq_.data());
      k_->rope(shape_.batch, L, H, D, dims_.rot, pos0_, dims_.rope_base, true, dk_.data());
    }
    // dQ, dK, dV as operands: bf16 attention's own outputs, or rounded into the 16-bit
    // attention's buffers (read above, free now) or, with float32 attention, scratch.
    auto attn_grad = [&](Buf<float>& g, Buf<uint16_t>& g16, Buf<uint16_t>& scratch) {
      return attn16_is_operand ? kept(g.data(), g16.data()) : rounded(g.data(), td, half() ? g16.data() : scratch.data());
    };
    const Opnd dq = attn_grad(dq_, dq16_, dq16s_), dk = attn_grad(dk_, dk16_, dk16s_), dv = attn_grad(dv_, dv16_, dv16s_);
    const Opnd h = kept(a.h.data(), a.h16.data());
    mm(true, false, d, d, T, 1.0f, h, d, dq, d, 1.0f, P(grad, p + "wq"), d);
    mm(true, false, d, d, T, 1.0f, h, d, dk, d, 1.0f, P(grad, p + "wk"), d);
    mm(true, false, d, d, T, 1.0f, h, d, dv, d, 1.0f, P(grad, p + "wv"), d);
    mm(false, true, T, d, d, 1.0f, dq, d, W(p + "wq"), d, 0.0f, dh_.data(), d);
    mm(false, true, T, d, d, 1.0f, dk, d, W(p + "wk"), d, 1.0f, dh_.data(), d);
    mm(false, true, T, d, d, 1.0f, dv, d, W(p + "wv"), d, 1.0f, dh_.data(), d);
    k_->rmsnorm_bwd(T, d, a.x_in.data(), P(w, p + "norm1"), a.rstd1.data(), dh_.data(), dx_.data(), P(grad, p + "norm1"));
  }
  k_->embed_bwd(T, d, V, tokens, dx_.data(), P(grad, "embed"));
  if (dims_.prev_token)
    k_->shift_bwd(T, d, V, prev, P(w, "embed"), P(w, "shift"), dx_.data(), P(grad, "embed"), P(grad, "shift"));
  return attn_ms();
}

}  // namespace train

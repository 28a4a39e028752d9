// The decoder: token embedding with a token shift (x_t = E[tok_t] + s * E[tok_{t-1}],
// s learned per channel, as RWKV's token shift; --prev-token off drops it),
// so that one attention layer can match a query's key against the pair "key,
// value" (the value's position then holds its key's embedding) without first
// learning a previous-token head; every long-range move is still attention; L layers of (RMSNorm, Q/K/V projections,
// rotary positions, ringattn dilated attention, O projection, residual,
// RMSNorm, GELU MLP, residual), final RMSNorm, output head. Each rank runs it
// on its own contiguous shard of the sequence (context parallel): everything
// but attention is per token, and attention crosses the shards through
// ringattn::Context (forward and exact backward over the ring). Weights are
// replicated: the caller sums the gradients over the ranks.
//
// All math goes through Kernels (kernels.hpp) and the Context, on buffers of
// the backend's memory (buffer.hpp): host on cpu, device on cuda.
//
// Precision: weights, activations, gradients are float32. Attention runs in
// the Context's dtype: float32 (the cpu default; q, k, v, o are the model's
// own buffers) or 16-bit (bf16, the cuda default; f16): rotated q, k and v
// are rounded to it before Context::forward, O comes back in it and is
// widened for the O projection; dO is rounded before Context::backward and
// dQ, dK, dV are widened after it. The 16-bit q, k, v, o of every layer are
// what the backward needs (float32 copies are scratch shared by the layers).
//
// GEMMs (bf16_matmul, the cuda default): the weights are rounded to a bf16
// copy once per step, and every activation a GEMM reads to a bf16 copy where
// it is made (the forward's kept for the backward: norm outputs, the MLP's
// hidden activation; O is attention's own bf16 output), so each GEMM runs on
// the tensor cores with float32 accumulation into float32 results; the
// master weights, the optimizer and every other op stay float32. The head
// (answer rows only) stays float32.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "buffer.hpp"
#include "kernels.hpp"
#include "ringattn/ringattn.hpp"

namespace train {

struct ModelDims {
  int64_t vocab = 0;
  int64_t d = 32;        // d_model = heads x head_dim
  int64_t heads = 2;
  int64_t layers = 2;
  int64_t mlp = 64;      // hidden width of the MLP
  int64_t rot = 4;       // rotary dims per head (the rest carry content unrotated)
  float rope_base = 10000.0f;
  bool tied = true;        // the output head is the token embedding, transposed (GPT-2): copying a retrieved token is near the identity
  bool prev_token = true;
  bool copy_init = true;   // Wv = Wo = identity at init: attention starts as a copy of what it attends to  // the token shift: add s * (embedding of the previous token)
  int64_t head_dim() const { return d / heads; }
};

// One named tensor of the flat parameter vector.
struct TensorInfo {
  std::string name;
  int64_t offset = 0, size = 0;
  bool decay = false;  // AdamW weight decay (matrices; not norms)
};

std::vector<TensorInfo> param_layout(const ModelDims& m);
int64_t param_count(const std::vector<TensorInfo>& layout);
// Deterministic from the seed: matrices N(0, 0.02) (residual outputs scaled
// by 1/sqrt(2L)), norms 1.
void init_params(const ModelDims& m, const std::vector<TensorInfo>& layout, uint64_t seed, float* w);

// What one forward (and backward) of this rank's shard gave.
struct StepResult {
  double loss_sum = 0;   // sum over this rank's answers (unscaled)
  int64_t correct = 0;   // answers whose argmax is right
  int64_t answers = 0;
  double attn_ms = 0;    // in Context::forward + Context::backward (cuda: events around the calls)
  double matmul_flops = 0;  // 2 M N K over every GEMM this rank ran (forward and backward)
  double gemm_ms = 0;       // in those GEMMs (marks as for attn_ms)
};

class Model {
 public:
  // batch sequences of seq tokens; this rank holds tokens [rank*L, (rank+1)*L).
  // Nothing is allocated until allocate().
  Model(const ModelDims& dims, Kernels* k, ringattn::Context* ctx, int64_t batch, int64_t seq, bool bf16_matmul = false);
  // The activations of every layer and the scratch of a step, on k's backend.
  ringattn::Status allocate();

  const ModelDims& dims() const { return dims_; }
  const std::vector<TensorInfo>& layout() const { return layout_; }
  int64_t rows() const { return rows_; }  // tokens of this rank per step: batch x L

  // w, grad: the flat parameter vector and its gradient, tokens, prev: this
  // rank's B x L tokens and the token before each (-1 at the start of a
  // sequence; the first token of a shard has its previous token on the rank
  // before, and every rank knows the whole sequence), all in the backend's
  // memory. answers: (row in the shard, target), on the host. With grad
  // (zeroed by the caller) the backward runs too, of the loss
  // sum(answers' cross-entropy) * loss_scale.
  ringattn::Status run(const float* w, const int32_t* tokens, const int32_t* prev, const std::vector<int64_t>& rows,
                       const std::vector<int32_t>& targets, float loss_scale, float* grad, StepResult* out);

 private:
  struct Layer {
    Buf<float> x_in, h, x_mid, h2, u, a, rstd1, rstd2, lse;
    Buf<float> q, k, v, o;              // float32 attention: the Context's own inputs and output
    Buf<uint16_t> q16, k16, v16, o16;   // 16-bit attention: what the Context took and gave
    Buf<uint16_t> h16, h2_16, a16;      // bf16_matmul: the GEMM inputs h, h2, a, rounded
  };
  const float* P(const float* w, const std::string& name) const;
  float* P(float* w, const std::string& name) const;
  bool half() const { return adt_ != ringattn::DType::f32; }
  int64_t offset(const std::string& name) const;

  ModelDims dims_;
  std::vector<TensorInfo> layout_;
  Kernels* k_;
  ringattn::Context* ctx_;
  ringattn::Shape shape_;
  ringattn::DType adt_;
  bool bf16_ = false;  // GEMMs on bf16 copies of their operands
  int64_t rows_ = 0, pos0_ = 0;
  std::vector<Layer> acts_;
  Buf<float> x_, dx_, dh_, dq_, dk_, dv_, dout_, da_, du_;
  Buf<float> sq_, sk_, sv_, so_;                    // 16-bit attention: float32 q, k, v, o of the layer at hand
  Buf<uint16_t> dout16_, dq16_, dk16_, dv16_;       // 16-bit attention: dO in, dQ, dK, dV out
  // bf16_matmul: the weights; dx and du rounded for their GEMMs; O rounded where attention is not
  // bf16; dQ, dK, dV rounded where attention is float32 (16-bit attention: in dq16_.. after use).
  Buf<uint16_t> w16_, x16_, u16_, o16s_, dq16s_, dk16s_, dv16s_;
  // The head, on the answer rows only (sized per step).
  Buf<float> hsel_, hf_, rstdf_, zsel_, dz_, dhf_, dsel_;
  Buf<int64_t> rows_dev_;
  Buf<int32_t> targets_dev_;
};

}  // namespace train

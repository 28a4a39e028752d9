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
// All math goes through Kernels (kernels.hpp) and the Context; the buffers
// are host memory today (cpu backend). A CUDA path needs device buffers and
// a Kernels of its own, not another model.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

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
  double attn_ms = 0;    // in Context::forward + Context::backward
};

class Model {
 public:
  // batch sequences of seq tokens; this rank holds tokens [rank*L, (rank+1)*L).
  Model(const ModelDims& dims, Kernels* k, ringattn::Context* ctx, int64_t batch, int64_t seq);

  const ModelDims& dims() const { return dims_; }
  const std::vector<TensorInfo>& layout() const { return layout_; }

  // tokens: this rank's B x L tokens; prev: the token before each (-1 at
  // the start of a sequence; the first token of a shard has its previous
  // token on the rank before, and every rank knows the whole sequence). answers: (row in the shard, target).
  // With grad (zeroed by the caller, same layout as w) the backward runs too,
  // of the loss  sum(answers' cross-entropy) * loss_scale.
  ringattn::Status run(const float* w, const int32_t* tokens, const int32_t* prev, const std::vector<int64_t>& rows,
                       const std::vector<int32_t>& targets, float loss_scale, float* grad, StepResult* out);

 private:
  struct Layer {
    std::vector<float> x_in, h, q, k, v, o, lse, x_mid, h2, u, a, rstd1, rstd2;
  };
  const float* P(const float* w, const std::string& name) const;
  float* P(float* w, const std::string& name) const;

  ModelDims dims_;
  std::vector<TensorInfo> layout_;
  Kernels* k_;
  ringattn::Context* ctx_;
  ringattn::Shape shape_;
  int64_t rows_ = 0, pos0_ = 0;
  std::vector<Layer> acts_;
  std::vector<float> x_, hf_, rstdf_, zsel_, dz_, hsel_, dx_, dh_, dq_, dk_, dv_, dout_, da_, du_;
};

}  // namespace train

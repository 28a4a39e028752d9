// The cpu backend: float32 passes (kernels/cpu) over the local shard and every
// received block, rows packed with memcpy, the ring on host lanes over the
// mpi transport. Synchronous: forward and backward return with their outputs
// written.
//
// Forward: O and LSE accumulate in float32 pass by pass (log-sum-exp merge).
// Backward: Delta = rowsum(dO * O) first; dQ and the local keys' dK/dV
// accumulate in float32; the dK/dV of a received block accumulate in a
// float32 partial with the block's layout, which the ring's return channel
// takes back to the block's owner, who adds it in ring-step order.
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/executor.hpp"
#include "device/check.hpp"
#include "kernels/common/convert.hpp"
#include "kernels/cpu/attention_cpu.hpp"
#include "kernels/cpu/attention_cpu_bwd.hpp"

namespace ringattn {
namespace {

kern::ElemKind elem_kind(DType dt) {
  static_assert(int(DType::f32) == int(kern::ElemKind::f32) && int(DType::f16) == int(kern::ElemKind::f16) &&
                    int(DType::bf16) == int(kern::ElemKind::bf16),
                "DType and ElemKind agree");
  return kern::ElemKind(int(dt));
}

// n elements of `dt` as float: the data itself for f32, else a converted copy in *buf.
const float* as_float(DType dt, const void* src, size_t n, std::vector<float>* buf) {
  if (dt == DType::f32) return static_cast<const float*>(src);
  buf->resize(n);
  kern::to_float(elem_kind(dt), src, n, buf->data());
  return buf->data();
}

// What both directions share: the shape of the shard and the plan's steps.
struct Shard {
  const Plan& plan;
  DType dtype;
  int64_t B, L, H, D;

  // K then V rows of my shard that step i's destination needs; a whole
  // shard travels as it is.
  void pack(size_t i, const void* k, const void* v, void* slot, const void* block[2]) const {
    const RowList& rl = plan.steps[i].send;
    if (rl.whole) {
      block[0] = k;
      block[1] = v;
      return;
    }
    const size_t row = size_t(D) * dtype_size(dtype);
    const int64_t R = rl.total_rows();
    char* kb = static_cast<char*>(slot);
    char* vb = kb + size_t(B * R) * row;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t r = rl.head_prefix[h]; r < rl.head_prefix[h + 1]; ++r) {
          const size_t src = size_t((b * L + rl.rows[r]) * H + h) * row, dst = size_t(b * R + r) * row;
          std::memcpy(kb + dst, static_cast<const char*>(k) + src, row);
          std::memcpy(vb + dst, static_cast<const char*>(v) + src, row);
        }
  }

  // Where the keys of step i's received block lie (its K part at k; V after it).
  kern::KeySource received(size_t i, const float* k) const {
    const RowList& rl = plan.steps[i].recv;
    const int64_t R = rl.total_rows();
    if (rl.whole) return kern::KeySource{k, k + B * R * D, L * H * D, H * D, D, nullptr};
    return kern::KeySource{k, k + B * R * D, R * D, D, 0, plan.key_index.data()};
  }
  kern::KeySource local(const float* k, const float* v) const { return kern::KeySource{k, v, L * H * D, H * D, D, nullptr}; }

  // What the forward's and the backward's pass parameters share: the query
  // shard's layout, the per-(query, head) strides, the sizes.
  template <typename Params>
  void describe(const float* q, float scale, bool causal, Params* p) const {
    p->q = q;
    p->q_batch_stride = L * H * D;
    p->q_row_stride = H * D;
    p->lse_batch_stride = L * H;
    p->lse_row_stride = H;
    p->batch = B;
    p->heads = H;
    p->head_dim = D;
    p->scale = scale;
    p->causal = causal;
  }

  // pass(*p) for every pass of ring step `step` (0: local keys) on keys `src`.
  template <typename Params>
  void run(int step, const kern::KeySource& src, Params* p, void (*pass)(const Params&)) const {
    p->src = src;
    for (const Pass& ps : plan.passes) {
      if (ps.step != step) continue;
      p->tiles = plan.tiles.data() + ps.tile_begin;
      p->num_tiles = ps.tile_end - ps.tile_begin;
      pass(*p);
    }
  }
};

class CpuExecutor final : public Executor {
 public:
  CpuExecutor(const Config& c, int rank, std::unique_ptr<RingTransport> t)
      : cfg_(c),
        transport_(std::move(t)),
        lanes_(make_host_lanes()),
        ring_(RingOptions{rank, c.timeout_seconds, WaitPolicy::sleep}, transport_.get(), lanes_.get()) {}

  Status forward(const Plan& plan, const ForwardArgs& a, Stats* stats) override {
    Forward w(this, shard(plan, *a.shape), a);
    RINGATTN_RETURN_IF_ERROR(ring_.run(forward_ring_steps(plan, row_bytes(*a.shape)), &w, a.stream, stats));
    kern::from_float(elem_kind(cfg_.dtype), o_acc_.data(), o_acc_.size(), a.o);
    std::memcpy(a.lse, lse_acc_.data(), lse_acc_.size() * sizeof(float));
    return Status::Ok();
  }

  Status backward(const Plan& plan, const BackwardArgs& a, Stats* stats) override {
    Backward w(this, shard(plan, *a.shape), a);
    const int64_t back_row_bytes = 2 * a.shape->batch * cfg_.head_dim * int64_t(sizeof(float));
    RINGATTN_RETURN_IF_ERROR(
        ring_.run(backward_ring_steps(plan, row_bytes(*a.shape), back_row_bytes), &w, a.stream, stats));
    const kern::ElemKind kind = elem_kind(cfg_.dtype);
    kern::from_float(kind, dq_acc_.data(), dq_acc_.size(), a.dq);
    kern::from_float(kind, dk_acc_.data(), dk_acc_.size(), a.dk);
    kern::from_float(kind, dv_acc_.data(), dv_acc_.size(), a.dv);
    return Status::Ok();
  }

 private:
  Shard shard(const Plan& plan, const Shape& s) const {
    return Shard{plan, cfg_.dtype, s.batch, plan.local_rows, cfg_.heads, cfg_.head_dim};
  }
  int64_t row_bytes(const Shape& s) const { return 2 * s.batch * cfg_.head_dim * int64_t(dtype_size(cfg_.dtype)); }
  float scale() const { return float(cfg_.scale > 0 ? cfg_.scale : 1.0 / std::sqrt(double(cfg_.head_dim))); }

  // One forward on the ring: float32 passes into O and LSE accumulators.
  class Forward final : public RingWork {
   public:
    Forward(CpuExecutor* ex, const Shard& s, const ForwardArgs& a) : ex_(ex), s_(s), a_(a) {}

    Status prologue() override {
      const size_t n = size_t(s_.B * s_.L * s_.H * s_.D);
      k_ = as_float(s_.dtype, a_.k, n, &ex_->k32_);
      v_ = as_float(s_.dtype, a_.v, n, &ex_->v32_);
      ex_->o_acc_.assign(n, 0.f);
      ex_->lse_acc_.assign(size_t(s_.B * s_.L * s_.H), -INFINITY);
      s_.describe(as_float(s_.dtype, a_.q, n, &ex_->q32_), ex_->scale(), ex_->cfg_.causal, &pp_);
      pp_.o_acc = ex_->o_acc_.data();
      pp_.lse_acc = ex_->lse_acc_.data();
      return Status::Ok();
    }
    Status pack(size_t i, void* slot, const void* block[2]) override {
      s_.pack(i, a_.k, a_.v, slot, block);
      return Status::Ok();
    }
    Status compute(size_t i, const void* recv, void*) override {
      if (i == kLocal) return run(0, s_.local(k_, v_));
      const float* k = as_float(s_.dtype, recv, size_t(2 * s_.B * s_.plan.steps[i].recv.total_rows() * s_.D), &ex_->recv32_);
      return run(s_.plan.steps[i].step, s_.received(i, k));
    }

   private:
    Status run(int step, const kern::KeySource& src) {
      s_.run(step, src, &pp_, &kern::cpu_forward_pass);
      return Status::Ok();
    }
    CpuExecutor* ex_;
    Shard s_;
    const ForwardArgs& a_;
    const float *k_ = nullptr, *v_ = nullptr;
    kern::CpuPassParams pp_;
  };

  // One backward on the ring: dQ and the local dK/dV in place; a received
  // block's dK/dV into the step's return block (float32, the block's layout),
  // which goes back to its owner; the blocks returned to this rank added in
  // at the rows it sent, in step order.
  class Backward final : public RingWork {
   public:
    Backward(CpuExecutor* ex, const Shard& s, const BackwardArgs& a) : ex_(ex), s_(s), a_(a) {}

    Status prologue() override {
      const size_t n = size_t(s_.B * s_.L * s_.H * s_.D), nh = size_t(s_.B * s_.L * s_.H);
      k_ = as_float(s_.dtype, a_.k, n, &ex_->k32_);
      v_ = as_float(s_.dtype, a_.v, n, &ex_->v32_);
      const float* o = as_float(s_.dtype, a_.o, n, &ex_->o32_);
      const float* dout = as_float(s_.dtype, a_.dout, n, &ex_->dout32_);
      ex_->delta_.assign(nh, 0.f);
      kern::cpu_backward_delta(o, dout, s_.B, s_.L, s_.H, s_.D, s_.L * s_.H * s_.D, s_.H * s_.D, ex_->delta_.data(),
                               s_.L * s_.H, s_.H);
      for (std::vector<float>* acc : {&ex_->dq_acc_, &ex_->dk_acc_, &ex_->dv_acc_}) acc->assign(n, 0.f);
      s_.describe(as_float(s_.dtype, a_.q, n, &ex_->q32_), ex_->scale(), ex_->cfg_.causal, &bp_);
      bp_.dout = dout;
      bp_.lse = a_.lse;
      bp_.delta = ex_->delta_.data();
      bp_.dq_acc = ex_->dq_acc_.data();
      return Status::Ok();
    }
    Status pack(size_t i, void* slot, const void* block[2]) override {
      s_.pack(i, a_.k, a_.v, slot, block);
      return Status::Ok();
    }
    Status compute(size_t i, const void* recv, void* back) override {
      if (i == kLocal) return run(0, s_.local(k_, v_), ex_->dk_acc_.data(), ex_->dv_acc_.data());
      const int64_t half = s_.B * s_.plan.steps[i].recv.total_rows() * s_.D;
      const float* k = as_float(s_.dtype, recv, size_t(2 * half), &ex_->recv32_);
      float* part = static_cast<float*>(back);
      std::fill(part, part + 2 * half, 0.f);
      return run(s_.plan.steps[i].step, s_.received(i, k), part, part + half);
    }
    // The partial dK/dV of the rows this rank sent at step i: the inverse of pack.
    Status returned(size_t i, const void* block) override {
      const RowList& rl = s_.plan.steps[i].send;
      const int64_t R = rl.total_rows(), B = s_.B, L = s_.L, H = s_.H, D = s_.D;
      const float* pk = static_cast<const float*>(block);
      const float* pv = pk + B * R * D;
      float* dk = ex_->dk_acc_.data();
      float* dv = ex_->dv_acc_.data();
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t r = rl.head_prefix[h]; r < rl.head_prefix[h + 1]; ++r) {
            // whole: the block is the shard's layout; packed: rows of head h in order.
            const int64_t row = rl.whole ? r - rl.head_prefix[h] : rl.rows[r];
            const int64_t from = rl.whole ? ((b * L + row) * H + h) * D : (b * R + r) * D;
            const int64_t to = ((b * L + row) * H + h) * D;
            for (int64_t d = 0; d < D; ++d) {
              dk[to + d] += pk[from + d];
              dv[to + d] += pv[from + d];
            }
          }
      return Status::Ok();
    }

   private:
    Status run(int step, const kern::KeySource& src, float* dk, float* dv) {
      bp_.dk_acc = dk;
      bp_.dv_acc = dv;
      s_.run(step, src, &bp_, &kern::cpu_backward_pass);
      return Status::Ok();
    }
    CpuExecutor* ex_;
    Shard s_;
    const BackwardArgs& a_;
    const float *k_ = nullptr, *v_ = nullptr;
    kern::CpuBwdParams bp_;
  };

  Config cfg_;
  std::unique_ptr<RingTransport> transport_;
  std::unique_ptr<Lanes> lanes_;
  Ring ring_;
  std::vector<float> q32_, k32_, v32_, o32_, dout32_, recv32_;  // float copies of 16-bit inputs
  std::vector<float> o_acc_, lse_acc_, delta_, dq_acc_, dk_acc_, dv_acc_;
};

}  // namespace

Status make_cpu_executor(const Config& c, MPI_Comm comm, std::unique_ptr<Executor>* out) {
  int rank = 0;
  RINGATTN_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  *out = std::make_unique<CpuExecutor>(c, rank, make_mpi_transport(comm, WaitPolicy::sleep));
  return Status::Ok();
}

}  // namespace ringattn

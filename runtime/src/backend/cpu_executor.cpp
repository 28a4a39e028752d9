// The cpu backend's forward: float32 passes (kernels/cpu) over the local
// shard and every received block, rows packed with memcpy, the ring on host
// lanes over the mpi transport. Synchronous: forward returns with O and LSE
// written.
#include <cmath>
#include <cstring>
#include <vector>

#include "backend/executor.hpp"
#include "device/check.hpp"
#include "kernels/common/convert.hpp"
#include "kernels/cpu/attention_cpu.hpp"

namespace ringattn {
namespace {

kern::ElemKind elem_kind(DType dt) {
  static_assert(int(DType::f32) == int(kern::ElemKind::f32) && int(DType::f16) == int(kern::ElemKind::f16) &&
                    int(DType::bf16) == int(kern::ElemKind::bf16),
                "DType and ElemKind agree");
  return kern::ElemKind(int(dt));
}

void to_float(DType dt, const void* src, size_t n, std::vector<float>* out) {
  out->resize(n);
  kern::to_float(elem_kind(dt), src, n, out->data());
}

class CpuExecutor final : public Executor {
 public:
  CpuExecutor(const Config& c, int rank, std::unique_ptr<RingTransport> t)
      : cfg_(c),
        transport_(std::move(t)),
        lanes_(make_host_lanes()),
        ring_(RingOptions{rank, c.timeout_seconds, WaitPolicy::sleep}, transport_.get(), lanes_.get()) {}

  Status forward(const Plan& plan, const ForwardArgs& a, Stats* stats) override {
    Work w(this, plan, a);
    RINGATTN_RETURN_IF_ERROR(
        ring_.run(forward_ring_steps(plan, 2 * a.shape->batch * cfg_.head_dim * int64_t(dtype_size(cfg_.dtype))), &w,
                  a.stream, stats));
    kern::from_float(elem_kind(cfg_.dtype), o_acc_.data(), o_acc_.size(), a.o);
    std::memcpy(a.lse, lse_acc_.data(), lse_acc_.size() * sizeof(float));
    return Status::Ok();
  }

 private:
  // One forward on the ring: float32 passes into the executor's accumulators.
  class Work final : public RingWork {
   public:
    Work(CpuExecutor* ex, const Plan& plan, const ForwardArgs& a) : ex_(ex), plan_(plan), a_(a) {}

    Status prologue() override {
      const Config& c = ex_->cfg_;
      const int64_t B = a_.shape->batch, L = plan_.local_rows, H = c.heads, D = c.head_dim;
      const size_t n = size_t(B * L * H * D);
      if (c.dtype == DType::f32) {
        q_ = static_cast<const float*>(a_.q);
        k_ = static_cast<const float*>(a_.k);
        v_ = static_cast<const float*>(a_.v);
      } else {
        to_float(c.dtype, a_.q, n, &ex_->q32_);
        to_float(c.dtype, a_.k, n, &ex_->k32_);
        to_float(c.dtype, a_.v, n, &ex_->v32_);
        q_ = ex_->q32_.data();
        k_ = ex_->k32_.data();
        v_ = ex_->v32_.data();
      }
      ex_->o_acc_.assign(n, 0.f);
      ex_->lse_acc_.assign(size_t(B * L * H), -INFINITY);
      pp_.q = q_;
      pp_.q_batch_stride = L * H * D;
      pp_.q_row_stride = H * D;
      pp_.batch = B;
      pp_.heads = H;
      pp_.head_dim = D;
      pp_.scale = float(c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(D)));
      pp_.causal = c.causal;
      pp_.o_acc = ex_->o_acc_.data();
      pp_.lse_acc = ex_->lse_acc_.data();
      pp_.lse_batch_stride = L * H;
      pp_.lse_row_stride = H;
      return Status::Ok();
    }

    // K then V rows of my shard that the step's destination needs; a whole
    // shard travels as it is.
    Status pack(size_t i, void* slot, const void* block[2]) override {
      const RowList& rl = plan_.steps[i].send;
      if (rl.whole) {
        block[0] = a_.k;
        block[1] = a_.v;
        return Status::Ok();
      }
      const int64_t B = a_.shape->batch, L = plan_.local_rows, H = ex_->cfg_.heads, D = ex_->cfg_.head_dim;
      const size_t es = dtype_size(ex_->cfg_.dtype), row = size_t(D) * es;
      const int64_t R = rl.total_rows();
      char* kb = static_cast<char*>(slot);
      char* vb = kb + size_t(B * R) * row;
      const char* ks = static_cast<const char*>(a_.k);
      const char* vs = static_cast<const char*>(a_.v);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t r = rl.head_prefix[h]; r < rl.head_prefix[h + 1]; ++r) {
            const size_t src = size_t((b * L + rl.rows[r]) * H + h) * row, dst = size_t(b * R + r) * row;
            std::memcpy(kb + dst, ks + src, row);
            std::memcpy(vb + dst, vs + src, row);
          }
      return Status::Ok();
    }

    Status compute(size_t i, const void* recv, void*) override {
      const Config& c = ex_->cfg_;
      const int64_t B = a_.shape->batch, L = plan_.local_rows, H = c.heads, D = c.head_dim;
      if (i == kLocal) return run_passes(0, kern::KeySource{k_, v_, L * H * D, H * D, D, nullptr});
      const RowList& rl = plan_.steps[i].recv;
      const int64_t R = rl.total_rows();
      const float* rk = static_cast<const float*>(recv);
      if (c.dtype != DType::f32) {
        to_float(c.dtype, recv, size_t(2 * B * R * D), &ex_->recv32_);
        rk = ex_->recv32_.data();
      }
      if (rl.whole) return run_passes(plan_.steps[i].step, kern::KeySource{rk, rk + B * R * D, L * H * D, H * D, D, nullptr});
      return run_passes(plan_.steps[i].step, kern::KeySource{rk, rk + B * R * D, R * D, D, 0, plan_.key_index.data()});
    }

   private:
    Status run_passes(int step, const kern::KeySource& src) {
      for (const Pass& ps : plan_.passes) {
        if (ps.step != step) continue;
        pp_.src = src;
        pp_.tiles = plan_.tiles.data() + ps.tile_begin;
        pp_.num_tiles = ps.tile_end - ps.tile_begin;
        kern::cpu_forward_pass(pp_);
      }
      return Status::Ok();
    }
    CpuExecutor* ex_;
    const Plan& plan_;
    const ForwardArgs& a_;
    const float *q_ = nullptr, *k_ = nullptr, *v_ = nullptr;
    kern::CpuPassParams pp_;
  };

  Config cfg_;
  std::unique_ptr<RingTransport> transport_;
  std::unique_ptr<Lanes> lanes_;
  Ring ring_;
  std::vector<float> q32_, k32_, v32_, o_acc_, lse_acc_, recv32_;
};

}  // namespace

Status make_cpu_executor(const Config& c, MPI_Comm comm, std::unique_ptr<Executor>* out) {
  int rank = 0;
  RINGATTN_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  *out = std::make_unique<CpuExecutor>(c, rank, make_mpi_transport(comm, WaitPolicy::sleep));
  return Status::Ok();
}

}  // namespace ringattn

#include <chrono>
#include <cmath>
#include <cstring>
#include <vector>

#include "kernels/common/convert.hpp"
#include "kernels/cpu/attention_cpu.hpp"
#include "backend/executor.hpp"
#include "ring/fault.hpp"

namespace ringattn {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

kern::ElemKind elem_kind(DType dt) {
  static_assert(int(DType::f32) == int(kern::ElemKind::f32) && int(DType::f16) == int(kern::ElemKind::f16) &&
                int(DType::bf16) == int(kern::ElemKind::bf16), "DType and ElemKind agree");
  return kern::ElemKind(int(dt));
}

void to_float(DType dt, const void* src, size_t n, std::vector<float>* out) {
  out->resize(n);
  kern::to_float(elem_kind(dt), src, n, out->data());
}

class CpuExecutor final : public Executor {
 public:
  CpuExecutor(const Config& c, RingTransport* t, int rank) : cfg_(c), transport_(t), rank_(rank), fault_(FaultPlan::from_env()) {}

  Status forward(const Plan& plan, const ForwardArgs& a, Stats* stats) override {
    fault_.next_forward();
    const int64_t B = a.shape->batch, L = plan.local_rows, H = cfg_.heads, D = cfg_.head_dim;
    const size_t es = dtype_size(cfg_.dtype);
    const size_t n = size_t(B * L * H * D);
    const float scale = float(cfg_.scale > 0 ? cfg_.scale : 1.0 / std::sqrt(double(D)));

    const float *qf, *kf, *vf;
    if (cfg_.dtype == DType::f32) {
      qf = static_cast<const float*>(a.q);
      kf = static_cast<const float*>(a.k);
      vf = static_cast<const float*>(a.v);
    } else {
      to_float(cfg_.dtype, a.q, n, &q32_);
      to_float(cfg_.dtype, a.k, n, &k32_);
      to_float(cfg_.dtype, a.v, n, &v32_);
      qf = q32_.data();
      kf = k32_.data();
      vf = v32_.data();
    }
    o_acc_.assign(n, 0.f);
    lse_acc_.assign(size_t(B * L * H), -INFINITY);

    kern::CpuPassParams pp;
    pp.q = qf;
    pp.q_batch_stride = L * H * D;
    pp.q_row_stride = H * D;
    pp.batch = B;
    pp.heads = H;
    pp.head_dim = D;
    pp.scale = scale;
    pp.causal = cfg_.causal;
    pp.o_acc = o_acc_.data();
    pp.lse_acc = lse_acc_.data();
    pp.lse_batch_stride = L * H;
    pp.lse_row_stride = H;

    auto run_passes = [&](int step, const kern::KeySource& src) {
      for (const Pass& ps : plan.passes) {
        if (ps.step != step) continue;
        pp.src = src;
        pp.tiles = plan.tiles.data() + ps.tile_begin;
        pp.num_tiles = ps.tile_end - ps.tile_begin;
        kern::cpu_forward_pass(pp);
      }
    };

    // Pack K then V rows of my shard that the step's destination needs.
    auto pack = [&](const RowList& rl, std::vector<char>* buf) {
      const int64_t R = rl.total_rows();
      buf->resize(size_t(2 * B * R * D) * es);
      char* kb = buf->data();
      char* vb = kb + size_t(B * R * D) * es;
      const char* ks = static_cast<const char*>(a.k);
      const char* vs = static_cast<const char*>(a.v);
      for (int64_t b = 0; b < B; ++b)
        for (int64_t h = 0; h < H; ++h)
          for (int64_t i = rl.head_prefix[h]; i < rl.head_prefix[h + 1]; ++i) {
            size_t src = size_t(((b * L + rl.rows[i]) * H + h) * D) * es;
            size_t dst = size_t((b * R + i) * D) * es;
            std::memcpy(kb + dst, ks + src, size_t(D) * es);
            std::memcpy(vb + dst, vs + src, size_t(D) * es);
          }
    };
    auto block_bytes = [&](const RowList& rl) { return size_t(2 * B * rl.total_rows() * D) * es; };

    stats->timeline.clear();
    const int64_t sent0 = transport_->counters.bytes_sent, recv0 = transport_->counters.bytes_received;
    std::vector<Clock::time_point> started(plan.steps.size());
    auto start = [&](size_t i) -> Status {
      const PlanStep& st = plan.steps[i];
      RINGATTN_RETURN_IF_ERROR(fault_.check(rank_, st.step));
      pack(st.send, &send_[i % 2]);
      recv_[i % 2].resize(block_bytes(st.recv));
      started[i] = Clock::now();
      return transport_->start(st.step, send_[i % 2].data(), block_bytes(st.send), st.send.empty() ? -1 : st.send.peer,
                               recv_[i % 2].data(), block_bytes(st.recv), st.recv.empty() ? -1 : st.recv.peer);
    };

    if (!plan.steps.empty()) RINGATTN_RETURN_IF_ERROR(start(0));
    {
      StepTiming t;
      auto t0 = Clock::now();
      run_passes(0, kern::KeySource{kf, vf, L * H * D, H * D, D, nullptr});
      t.compute_ms = ms_since(t0);
      stats->timeline.push_back(t);
    }
    for (size_t i = 0; i < plan.steps.size(); ++i) {
      const PlanStep& st = plan.steps[i];
      if (i + 1 < plan.steps.size()) RINGATTN_RETURN_IF_ERROR(start(i + 1));
      StepTiming t;
      t.step = st.step;
      t.send_peer = st.send.empty() ? -1 : st.send.peer;
      t.recv_peer = st.recv.empty() ? -1 : st.recv.peer;
      t.bytes_sent = int64_t(block_bytes(st.send));
      t.bytes_ideal = t.bytes_sent;
      auto w0 = Clock::now();
      RINGATTN_RETURN_IF_ERROR(transport_->wait(st.step, cfg_.timeout_seconds));
      t.exposed_ms = ms_since(w0);
      t.transfer_ms = ms_since(started[i]);
      auto c0 = Clock::now();
      if (!st.recv.empty()) {
        const int64_t R = st.recv.total_rows();
        const float *rk, *rv;
        if (cfg_.dtype == DType::f32) {
          rk = reinterpret_cast<const float*>(recv_[i % 2].data());
        } else {
          to_float(cfg_.dtype, recv_[i % 2].data(), size_t(2 * B * R * D), &recv32_);
          rk = recv32_.data();
        }
        rv = rk + B * R * D;
        run_passes(st.step, kern::KeySource{rk, rv, R * D, D, 0, plan.key_index.data()});
      }
      t.compute_ms = ms_since(c0);
      stats->timeline.push_back(t);
    }

    kern::from_float(elem_kind(cfg_.dtype), o_acc_.data(), n, a.o);
    std::memcpy(a.lse, lse_acc_.data(), lse_acc_.size() * sizeof(float));
    stats->last_bytes_sent = transport_->counters.bytes_sent - sent0;
    stats->last_bytes_received = transport_->counters.bytes_received - recv0;
    stats->last_bytes_ideal = plan.rows_sent() * 2 * B * D * int64_t(es);
    return Status::Ok();
  }

 private:
  Config cfg_;
  RingTransport* transport_;
  int rank_;
  FaultPlan fault_;
  std::vector<float> q32_, k32_, v32_, o_acc_, lse_acc_, recv32_;
  std::vector<char> send_[2], recv_[2];
};

}  // namespace

std::unique_ptr<Executor> make_cpu_executor(const Config& c, RingTransport* t, int rank) {
  return std::make_unique<CpuExecutor>(c, t, rank);
}

}  // namespace ringattn

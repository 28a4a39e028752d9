// The cuda backend: fused attention passes (kernels/cuda) on the caller's
// stream, rows packed by a kernel on the ring's comm stream, the ring
// (ring/ring.hpp) on CUDA lanes over the nccl or mpi transport. With nccl (or
// one rank) a forward or backward returns with its work in flight.
//
// Backward: Delta first; dQ and the local keys' dK/dV accumulate in the
// gradients themselves plus bf16 remainders (split accumulators; atomic dQ:
// a float32 buffer converted at the end), written by the first pass where it
// holds every local row (Plan::first_pass_covers_local) and zeroed first
// otherwise; a received block's dK/dV accumulate in a float32 partial with
// the block's layout (the ring's return slot), which goes back to the
// block's owner, who adds it in ring-step order (bwd_scatter_add). With the
// dQ pass reruns are bit-identical (attention_bwd.hpp).
//
// A ring step's pass launches after the first are programmatic dependent
// launches (RINGATTN_PDL=1, the default): they start on the SMs the previous
// pass leaves idle and wait for it before touching its outputs (Work::run_passes).
#include <cuda_runtime.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/env_choice.hpp"
#include "backend/executor.hpp"
#include "device/check_cuda.hpp"
#include "kernels/cuda/attention_bwd.hpp"
#include "kernels/cuda/attention_fwd.hpp"
#include "kernels/cuda/ring_pack.hpp"

namespace ringattn {
namespace {

namespace kc = kern::cuda;

// A packed tile of segments (plan.hpp, PlanOptions) is one work item of each
// kernel: the masks are right at any size, this is only about the work.
static_assert(kPackRows == kc::kBwdBlockM && kPackRows == kc::kBwdBlockN && kPackRows == kImageBlockN,
              "packed tiles fill one query block and one key block");

// A plan's device arrays: the image the pattern cache copied to the device
// (plan_image.hpp), turned into pointers.
struct DevicePlan {
  const kern::Tile* tiles = nullptr;
  const int32_t* key_index = nullptr;
  const int32_t* prefix = nullptr;              // per pass: num_tiles + 1 entries
  const int32_t* key_prefix = nullptr;          // the same for key blocks (the backward)
  const int64_t* pass_prefix_offset = nullptr;  // into prefix and key_prefix, per pass
  const int32_t* pass_blocks = nullptr;         // CTAs per batch of each pass
  const int32_t* pass_key_blocks = nullptr;     // key blocks per batch of each pass
  std::vector<const int32_t*> send_rows, send_prefix;  // per plan step
  int32_t* tile_counters = nullptr;  // one per pass (dynamic tile scheduling), zeroed by the prologue

  // Calls launch(view) for every pass of ring step `step`, in plan order;
  // stops at the first error (the forward and the backward alike).
  template <typename F>
  Status for_step(const Plan& plan, int step, F&& launch) const {
    for (size_t pi = 0; pi < plan.passes.size(); ++pi)
      if (plan.passes[pi].step == step) RINGATTN_RETURN_IF_ERROR(launch(pass(plan, pi)));
    return Status::Ok();
  }
  // What a launch needs of plan pass pi (forward and backward alike).
  struct PassView {
    const kern::Tile* tiles;
    int32_t num_tiles;
    const int32_t *q_prefix, *k_prefix;  // query-block and key-block prefixes of its tiles
    int32_t q_items, k_items;            // per batch element
    int32_t* tile_counter;               // null: static tile order
  };
  PassView pass(const Plan& plan, size_t pi) const {
    const Pass& ps = plan.passes[pi];
    return PassView{tiles + ps.tile_begin,
                    int32_t(ps.tile_end - ps.tile_begin),
                    prefix + pass_prefix_offset[pi],
                    key_prefix + pass_prefix_offset[pi],
                    pass_blocks[pi],
                    pass_key_blocks[pi],
                    tile_counters ? tile_counters + pi : nullptr};
  }
};

Status device_plan_view(const Plan& plan, const PlanImage* im, const void* image_device, int block_m, DevicePlan* dp) {
  if (im == nullptr || image_device == nullptr)
    return Status(StatusCode::kInternal, "cuda executor: the plan has no device image (pattern cache lease missing)");
  if (im->block_m != block_m || im->pass_blocks.size() != plan.passes.size() || im->send_rows_offset.size() != plan.steps.size())
    return Status(StatusCode::kInternal, "cuda executor: the device image was built for block_m " + std::to_string(im->block_m) +
                                             ", the kernel needs " + std::to_string(block_m));
  const void* base = image_device;
  dp->tiles = image_at<kern::Tile>(base, im->tiles_offset);
  dp->key_index = image_at<int32_t>(base, im->key_index_offset);
  dp->prefix = image_at<int32_t>(base, im->prefix_offset);
  dp->key_prefix = image_at<int32_t>(base, im->key_prefix_offset);
  dp->pass_prefix_offset = im->pass_prefix_offset.data();
  dp->pass_blocks = im->pass_blocks.data();
  dp->pass_key_blocks = im->pass_key_blocks.data();
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    dp->send_rows.push_back(image_at<int32_t>(base, im->send_rows_offset[i]));
    dp->send_prefix.push_back(image_at<int32_t>(base, im->send_prefix_offset[i]));
  }
  return Status::Ok();
}

class CudaExecutor final : public Executor {
 public:
  CudaExecutor(const Config& c, MPI_Comm comm) : cfg_(c), comm_(comm) {}

  // Collective over comm.
  Status init() {
    int rank = 0, world = 1;
    RINGATTN_MPI_CHECK(MPI_Comm_rank(comm_, &rank));
    RINGATTN_MPI_CHECK(MPI_Comm_size(comm_, &world));
    WaitPolicy wait = WaitPolicy::spin;
    RINGATTN_RETURN_IF_ERROR(default_device_wait_policy(comm_, &wait));
    // Every rank reaches the NCCL bootstrap below only if all set up locally:
    // a rank without a GPU fails them all instead of leaving them waiting.
    RINGATTN_RETURN_IF_ERROR(all_ranks(comm_, init_local(wait)));
    if (!transport_)
      RINGATTN_RETURN_IF_ERROR(
          make_nccl_transport(comm_, cfg_.timeout_seconds, comm_sms_, lanes_->comm_stream(), &transport_));
    RingOptions ro{rank, cfg_.timeout_seconds, wait};
    ro.slots = ring_slots_;
    ro.slot_budget = slot_budget_;
    ring_ = std::make_unique<Ring>(ro, transport_.get(), lanes_.get());
    return Status::Ok();
  }

  // Order matters: the forward in flight first (under the timeout); then the
  // transport, which aborts a communicator left with operations posted, ending
  // NCCL kernels that would otherwise never finish; only then the ring's
  // slots (cudaFree waits for the device) and the lanes.
  ~CudaExecutor() override {
    if (ring_) (void)ring_->finish();
    transport_.reset();
    ring_.reset();
    for (int32_t* c : counters_)
      if (c) cudaFree(c);
    free_backward();
  }

  Status forward(const Plan& plan, const ForwardArgs& a, Stats* stats) override {
    DevicePlan dp;
    RINGATTN_RETURN_IF_ERROR(device_plan_view(plan, a.image, a.image_device, block_m_, &dp));
    if (dynamic_tiles_) {
      // One tile counter per pass, in two sets (at most one forward in
      // flight may still read the other); they grow rarely.
      const size_t need = std::max<size_t>(1, plan.passes.size());
      if (need > counter_cap_) {
        RINGATTN_RETURN_IF_ERROR(ring_->finish());
        for (int32_t*& c : counters_) {
          if (c) cudaFree(c);
          c = nullptr;
          RINGATTN_CUDA_CHECK(cudaMalloc(&c, need * sizeof(int32_t)));
        }
        counter_cap_ = need;
      }
      counter_set_ ^= 1;
      dp.tile_counters = counters_[counter_set_];
    }
    Work w(this, plan, a, dp);
    const int64_t row_bytes = 2 * a.shape->batch * cfg_.head_dim * int64_t(dtype_size(cfg_.dtype));
    return ring_->run(forward_ring_steps(plan, row_bytes), &w, a.stream, stats);
  }

  Status backward(const Plan& plan, const BackwardArgs& a, Stats* stats) override {
    DevicePlan dp;
    RINGATTN_RETURN_IF_ERROR(device_plan_view(plan, a.image, a.image_device, block_m_, &dp));
    if (block_m_ != kc::kBwdBlockM || a.image->block_n != kc::kBwdBlockN)
      return Status(StatusCode::kInternal, "cuda executor: the backward kernels take " + std::to_string(kc::kBwdBlockM) +
                                               " queries and " + std::to_string(kc::kBwdBlockN) + " keys per item, the plan image has " +
                                               std::to_string(block_m_) + " and " + std::to_string(a.image->block_n));
    const int64_t nh = a.shape->batch * plan.local_rows * cfg_.heads;
    RINGATTN_RETURN_IF_ERROR(reserve_backward(nh * cfg_.head_dim, nh));
    BackwardWork w(this, plan, a, dp);
    const int64_t row_bytes = 2 * a.shape->batch * cfg_.head_dim * int64_t(dtype_size(cfg_.dtype));
    const int64_t back_row_bytes = 2 * a.shape->batch * cfg_.head_dim * int64_t(sizeof(float));
    return ring_->run(backward_ring_steps(plan, row_bytes, back_row_bytes), &w, a.stream, stats);
  }

  Status finish() override { return ring_->finish(); }
  int plan_image_block_m() const override { return block_m_; }

 private:
  kc::ElemType elem() const { return cfg_.dtype == DType::f16 ? kc::ElemType::f16 : kc::ElemType::bf16; }

  Status init_local(WaitPolicy wait) {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      cudaGetLastError();
      return Status(StatusCode::kDeviceError, "backend 'cuda' needs a GPU but none is visible (allowed here: --backend cpu)");
    }
    RINGATTN_RETURN_IF_ERROR(make_cuda_lanes(&lanes_));
    block_m_ = kc::fwd_block_m(elem(), int(cfg_.head_dim));
    int world = 1, dev = 0, sms = 0;
    RINGATTN_MPI_CHECK(MPI_Comm_size(comm_, &world));
    RINGATTN_CUDA_CHECK(cudaGetDevice(&dev));
    RINGATTN_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
    // SMs kept from the attention for the ring's exchange (RINGATTN_COMM_SMS,
    // default 0): the persistent attention grid is capped at the rest and
    // NCCL uses at most that many CTAs.
    if (const char* e = std::getenv("RINGATTN_COMM_SMS"); e != nullptr && *e != '\0') {
      char* end = nullptr;
      const long v = std::strtol(e, &end, 10);
      if (*end != '\0' || v < 0 || v >= sms)
        return InvalidArgument(std::string("RINGATTN_COMM_SMS='") + e + "' (allowed: 0 to " + std::to_string(sms - 1) +
                               ", SMs kept for the ring's exchange on this " + std::to_string(sms) + "-SM GPU)");
      comm_sms_ = int(v);
    }
    attention_ctas_ = world > 1 && comm_sms_ > 0 ? sms - comm_sms_ : 0;
    // RINGATTN_TILE_SCHEDULE=dynamic (default) | static: how the persistent
    // attention CTAs share a pass's work items (attention_fwd.hpp).
    RINGATTN_RETURN_IF_ERROR(env_choice("RINGATTN_TILE_SCHEDULE", "dynamic", "static", false, &dynamic_tiles_));
    // dQ of the backward from its own query-major pass (reruns bit-identical;
    // Config::deterministic, the default) or from the dK/dV kernel with float32
    // atomics (attention_bwd.hpp, BwdParams::dq_atomic); RINGATTN_BWD_DQ=pass|atomic
    // overrides the config for A/B runs.
    dq_atomic_ = !cfg_.deterministic;
    RINGATTN_RETURN_IF_ERROR(env_choice("RINGATTN_BWD_DQ", "pass", "atomic", true, &dq_atomic_));
    // RINGATTN_BWD_DQ_ORDER=first (default) | last: with atomic dQ, its GEMM
    // before or after the dK GEMM (BwdParams::dq_first).
    RINGATTN_RETURN_IF_ERROR(env_choice("RINGATTN_BWD_DQ_ORDER", "first", "last", false, &dq_first_));
    // RINGATTN_BWD_PINGPONG=1 (default) | 0: with the dQ pass, the backward kernels'
    // consumer warpgroups take turns issuing GEMMs (BwdParams::pingpong; 3% faster
    // on one H100, bench/results/h100-2026-11-28d).
    RINGATTN_RETURN_IF_ERROR(env_choice("RINGATTN_BWD_PINGPONG", "1", "0", false, &bwd_pingpong_));
    // RINGATTN_BWD_TMA=1 (default) | 0: the backward's kernels load whole
    // blocks (Q/dO of the dK/dV kernel, K/V of the dQ pass) with TMA tensor maps
    // (BwdParams::tma) or every block with the cp.async gather. The same bits
    // either way.
    RINGATTN_RETURN_IF_ERROR(env_choice("RINGATTN_BWD_TMA", "1", "0", false, &bwd_tma_));
    // RINGATTN_PDL=1 (default) | 0: consecutive attention launches of one ring
    // step's pass loop as programmatic dependent launches (FwdParams::pdl,
    // BwdParams::pdl): each starts on the SMs the previous one's tail leaves
    // idle. The same bits either way.
    RINGATTN_RETURN_IF_ERROR(env_choice("RINGATTN_PDL", "1", "0", false, &pdl_));
    // RINGATTN_RING_SLOTS=auto (default) | N: receive slots of the ring on
    // nccl (ring.hpp); auto takes every step's when they fit a budget of
    // min(4 GiB, 1/16 of this GPU's memory).
    RINGATTN_RETURN_IF_ERROR(ring_slots_from_env(&ring_slots_));
    size_t free_b = 0, total_b = 0;
    RINGATTN_CUDA_CHECK(cudaMemGetInfo(&free_b, &total_b));
    slot_budget_ = std::min(size_t(4) << 30, total_b / 16);
    // With one rank there is nothing to exchange: no communicator is made.
    if (world == 1) transport_ = make_no_transport();
    else if (cfg_.transport == Transport::mpi)
      RINGATTN_RETURN_IF_ERROR(make_mpi_device_transport(comm_, wait, lanes_->comm_stream(), &transport_));
    return Status::Ok();
  }

  // What the forward and the backward share: the shard's layout, the rows
  // a step sends (packed on the comm lane, or the shard as it is), and where
  // a step's keys lie.
  struct ShardView {
    const Plan& plan;
    const DevicePlan& dp;
    const void *k, *v;
    int64_t batch, heads, head_dim, es;

    Status pack(size_t i, void* slot, const void* block[2], cudaStream_t comm) const {
      if (plan.steps[i].send.whole) {  // no pack kernel, no SMs taken from the attention
        block[0] = k;
        block[1] = v;
        return Status::Ok();
      }
      kc::PackParams pp;
      pp.k = k;
      pp.v = v;
      pp.out = slot;
      pp.rows = dp.send_rows[i];
      pp.head_prefix = dp.send_prefix[i];
      pp.total_rows = plan.steps[i].send.total_rows();
      pp.local_rows = plan.local_rows;
      pp.batch = int32_t(batch);
      pp.heads = int32_t(heads);
      pp.head_dim = int32_t(head_dim);
      pp.elem_bytes = int32_t(es);
      RINGATTN_CUDA_CHECK(kc::pack_rows(pp, comm));
      return Status::Ok();
    }
    kern::KeySource local() const { return kern::KeySource{k, v, plan.local_rows * heads * head_dim, heads * head_dim, head_dim, nullptr}; }
    // Keys of the block received at step i (K part, then V part).
    kern::KeySource received(size_t i, const void* recv) const {
      const RowList& rl = plan.steps[i].recv;
      const int64_t R = rl.total_rows(), D = head_dim;
      const char* kb = static_cast<const char*>(recv);
      const char* vb = kb + batch * R * D * es;
      if (rl.whole) return kern::KeySource{kb, vb, plan.local_rows * heads * D, heads * D, D, nullptr};
      return kern::KeySource{kb, vb, R * D, D, 0, dp.key_index};
    }
    // Elements of one half (K or V) of the block received at step i.
    int64_t recv_half(size_t i) const { return batch * plan.steps[i].recv.total_rows() * head_dim; }
  };
  ShardView view(const Plan& plan, const DevicePlan& dp, const Shape& s, const void* k, const void* v) const {
    return ShardView{plan, dp, k, v, s.batch, cfg_.heads, cfg_.head_dim, int64_t(dtype_size(cfg_.dtype))};
  }
  float scale() const { return float(cfg_.scale > 0 ? cfg_.scale : 1.0 / std::sqrt(double(cfg_.head_dim))); }
  cudaStream_t comm_stream() const { return static_cast<cudaStream_t>(lanes_->comm_stream()); }

  // One forward on the ring: fused passes merging into O and LSE in place.
  class Work final : public RingWork {
   public:
    Work(CudaExecutor* ex, const Plan& plan, const ForwardArgs& a, const DevicePlan& dp)
        : ex_(ex), plan_(plan), a_(a), dp_(dp), sv_(ex->view(plan, dp, *a.shape, a.k, a.v)),
          cs_(static_cast<cudaStream_t>(a.stream)) {
      const Config& c = ex->cfg_;
      fp_ = kc::fwd_shard_params(a.q, a.o, a.lse, a.shape->batch, plan.local_rows, c.heads, c.head_dim, ex->scale(),
                                 c.causal, ex->elem());
      fp_.max_ctas = ex->attention_ctas_;
    }

    Status prologue() override {
      const int64_t n = a_.shape->batch * plan_.local_rows * ex_->cfg_.heads;
      RINGATTN_CUDA_CHECK(kc::fwd_init_outputs(a_.o, a_.lse, n * ex_->cfg_.head_dim, n, fp_.dtype, !plan_.covers_all, cs_));
      if (dp_.tile_counters)
        RINGATTN_CUDA_CHECK(cudaMemsetAsync(dp_.tile_counters, 0, plan_.passes.size() * sizeof(int32_t), cs_));
      return Status::Ok();
    }
    Status pack(size_t i, void* slot, const void* block[2]) override { return sv_.pack(i, slot, block, ex_->comm_stream()); }
    Status compute(size_t i, const void* recv, void*) override {
      if (i == kLocal) return run_passes(0, sv_.local());
      return run_passes(plan_.steps[i].step, sv_.received(i, recv));
    }

   private:
    // Programmatic dependent launch (FwdParams::pdl): a launch is pdl only
    // when the operation just before it on cs_ is a pass launch of this same
    // loop (nothing else goes onto cs_ inside it). The loop's first launch
    // follows the ring's event wait for the received block (or the prologue's
    // memset and fill, or another step's passes, or a scatter-add) and is
    // plain, so everything the producers read without waiting (Q, this
    // step's K/V block, the plan image, the tile counters zeroed by the
    // prologue) is written before it; the passes' own tile counters are
    // distinct. The ring's mark after the loop (an event that frees the
    // receive slot) covers every pass: each pdl launch waits for the one
    // before it, so the last one's completion implies all of theirs.
    Status run_passes(int step, const kern::KeySource& src) {
      fp_.src = src;
      bool after_pass = false;  // a pass of this loop is the last launch on cs_
      return dp_.for_step(plan_, step, [&](const DevicePlan::PassView& v) -> Status {
        fp_.tiles = v.tiles;
        fp_.num_tiles = v.num_tiles;
        fp_.tile_block_prefix = v.q_prefix;
        fp_.num_blocks = v.q_items;
        fp_.tile_counter = v.tile_counter;
        fp_.pdl = ex_->pdl_ && after_pass;
        bool launched = false;  // an empty pass launches nothing
        RINGATTN_CUDA_CHECK(kc::fwd_launch(fp_, cs_, &launched));
        after_pass |= launched;
        return Status::Ok();
      });
    }
    CudaExecutor* ex_;
    const Plan& plan_;
    const ForwardArgs& a_;
    const DevicePlan& dp_;
    ShardView sv_;
    cudaStream_t cs_;
    kc::FwdParams fp_;
  };

  // One backward on the ring: Delta, then per step the passes' dK/dV and dQ
  // kernels into split accumulators (the gradients themselves plus bf16
  // remainders, attention_bwd.hpp) or, for a received block, the step's
  // float32 return slot; the owner's adds of returned partials. With atomic
  // dQ, dQ accumulates in float32 and is converted at the end.
  class BackwardWork final : public RingWork {
   public:
    BackwardWork(CudaExecutor* ex, const Plan& plan, const BackwardArgs& a, const DevicePlan& dp)
        : ex_(ex), plan_(plan), a_(a), dp_(dp), sv_(ex->view(plan, dp, *a.shape, a.k, a.v)),
          cs_(static_cast<cudaStream_t>(a.stream)) {
      const Config& c = ex->cfg_;
      const int64_t L = plan.local_rows, H = c.heads, D = c.head_dim;
      bp_ = kc::bwd_shard_params(a.q, a.dout, a.lse, ex->delta_, a.shape->batch, L, H, D, ex->scale(), c.causal,
                                 ex->elem());
      bp_.dq_atomic = ex->dq_atomic_;
      bp_.dq_first = ex->dq_first_;
      bp_.pingpong = ex->bwd_pingpong_;
      bp_.tma = ex->bwd_tma_;
      if (bp_.dq_atomic) {
        bp_.dq_acc = ex->dq_acc_;
      } else {
        bp_.dq_hi = a.dq;
        bp_.dq_lo = ex->lo_[0];
      }
      n_ = a.shape->batch * L * H * D;
    }

    Status prologue() override {
      const size_t es = dtype_size(ex_->cfg_.dtype);
      // Atomic dQ: a_.dq is written whole by the conversion at the end. When
      // the first pass holds every local row (Plan::first_pass_covers_local),
      // it writes dK, dV (and, with the dQ pass, dQ) and their remainders:
      // nothing to zero (BwdParams::overwrite).
      if (!plan_.first_pass_covers_local) {
        for (void* g : {a_.dq, a_.dk, a_.dv})
          if (g != a_.dq || !bp_.dq_atomic) RINGATTN_CUDA_CHECK(cudaMemsetAsync(g, 0, size_t(n_) * es, cs_));
        for (uint16_t* lo : {bp_.dq_atomic ? nullptr : ex_->lo_[0], dk_lo(), ex_->lo_[2]})  // atomic dQ: float32, no remainder
          if (lo) RINGATTN_CUDA_CHECK(cudaMemsetAsync(lo, 0, size_t(n_) * sizeof(uint16_t), cs_));
      }
      // Atomic dQ's float32 accumulator is zeroed by Delta's kernel, in the same pass over the rows.
      RINGATTN_CUDA_CHECK(kc::bwd_delta(a_.o, a_.dout, ex_->delta_, bp_.batch, plan_.local_rows, bp_.heads, bp_.head_dim,
                                        bp_.dtype, cs_, bp_.dq_atomic ? ex_->dq_acc_ : nullptr));
      return Status::Ok();
    }
    Status pack(size_t i, void* slot, const void* block[2]) override { return sv_.pack(i, slot, block, ex_->comm_stream()); }
    Status compute(size_t i, const void* recv, void* back) override {
      if (i == kLocal) return run_passes(0, sv_.local(), nullptr, nullptr);
      const int64_t half = sv_.recv_half(i);
      float* part = static_cast<float*>(back);
      RINGATTN_CUDA_CHECK(cudaMemsetAsync(part, 0, size_t(2 * half) * sizeof(float), cs_));
      return run_passes(plan_.steps[i].step, sv_.received(i, recv), part, part + half);
    }
    // The partial dK/dV of the rows this rank sent at step i: the inverse of the pack.
    Status returned(size_t i, const void* block) override {
      const RowList& rl = plan_.steps[i].send;
      kc::ScatterAddParams sp;
      sp.part = static_cast<const float*>(block);
      sp.dk_hi = a_.dk;
      sp.dv_hi = a_.dv;
      sp.dk_lo = dk_lo();
      sp.dv_lo = ex_->lo_[2];
      sp.dtype = bp_.dtype;
      sp.rows = rl.whole ? nullptr : dp_.send_rows[i];
      sp.head_prefix = rl.whole ? nullptr : dp_.send_prefix[i];
      sp.total_rows = rl.total_rows();
      sp.local_rows = plan_.local_rows;
      sp.batch = bp_.batch;
      sp.heads = bp_.heads;
      sp.head_dim = bp_.head_dim;
      RINGATTN_CUDA_CHECK(kc::bwd_scatter_add(sp, cs_));
      return Status::Ok();
    }
    Status epilogue() override {
      if (bp_.dq_atomic) RINGATTN_CUDA_CHECK(kc::bwd_convert(ex_->dq_acc_, a_.dq, n_, bp_.dtype, cs_));
      return Status::Ok();
    }

   private:
    // dK's bf16 remainder. With atomic dQ the caller's dQ buffer holds it (the
    // same n 16-bit elements): dQ accumulates in float32 elsewhere and is
    // written only by the conversion at the end, after the last add of dK
    // (every return is added before epilogue(), on this stream), so the
    // buffer is free until then; this keeps the atomic mode's peak memory
    // at the dQ pass's (2 bytes per element less than a remainder of its own).
    uint16_t* dk_lo() const { return bp_.dq_atomic ? static_cast<uint16_t*>(a_.dq) : ex_->lo_[1]; }
    // dk/dv: a received block's float32 partial; null: this rank's keys (split).
    Status run_passes(int step, const kern::KeySource& src, float* dk, float* dv) {
      bp_.src = src;
      bp_.dk_acc = dk;
      bp_.dv_acc = dv;
      bp_.dk_hi = dk ? nullptr : a_.dk;
      bp_.dv_hi = dv ? nullptr : a_.dv;
      bp_.dk_lo = dk ? nullptr : dk_lo();
      bp_.dv_lo = dv ? nullptr : ex_->lo_[2];
      // The step's first pass writes instead of adding when it holds every
      // local row (step 0 only; prologue() did not zero the accumulators).
      bool first = step == 0 && plan_.first_pass_covers_local;
      // Programmatic dependent launch as in the forward's loop
      // (Work::run_passes; BwdParams::pdl): the loop's first launch is plain
      // (before it: the memset of a received block's partial, the ring's
      // event wait, Delta's kernel, a scatter-add); the kernels read Q, dO,
      // K/V, LSE and Delta without waiting, all written before it. The dQ
      // launch overlaps its own pass's dK/dV launch even in the first pass.
      bool after_pass = false;
      bp_.pdl_dq = ex_->pdl_;
      return dp_.for_step(plan_, step, [&](const DevicePlan::PassView& v) -> Status {
        bp_.tiles = v.tiles;
        bp_.num_tiles = v.num_tiles;
        bp_.q_prefix = v.q_prefix;
        bp_.k_prefix = v.k_prefix;
        bp_.q_items = v.q_items;
        bp_.k_items = v.k_items;
        bp_.overwrite = first;
        first = false;
        bp_.pdl = ex_->pdl_ && after_pass;
        bool launched = false;
        RINGATTN_CUDA_CHECK(kc::bwd_launch(bp_, cs_, &launched));
        after_pass |= launched;
        return Status::Ok();
      });
    }
    CudaExecutor* ex_;
    const Plan& plan_;
    const BackwardArgs& a_;
    const DevicePlan& dp_;
    ShardView sv_;
    cudaStream_t cs_;
    kc::BwdParams bp_;
    int64_t n_ = 0;
  };

  // The backward's buffers: the bf16 remainders of dK, dV and (dQ pass) dQ
  // (n elements each), Delta (n / head_dim floats) and, for atomic dQ, a
  // float32 dQ instead of dQ's remainder; they grow rarely, after the run in
  // flight (which may read them) is done.
  Status reserve_backward(int64_t n, int64_t nh) {
    const bool f32 = dq_atomic_;
    if (n <= acc_cap_ && nh <= delta_cap_ && (!f32 || dq_acc_)) return Status::Ok();
    RINGATTN_RETURN_IF_ERROR(ring_->finish());
    free_backward();
    // Atomic dQ: no dQ remainder, and dK's lives in the caller's dQ (BackwardWork::dk_lo).
    for (int g = f32 ? 2 : 0; g < 3; ++g) RINGATTN_CUDA_CHECK(cudaMalloc(&lo_[g], size_t(n) * sizeof(uint16_t)));
    if (f32) RINGATTN_CUDA_CHECK(cudaMalloc(&dq_acc_, size_t(n) * sizeof(float)));
    RINGATTN_CUDA_CHECK(cudaMalloc(&delta_, size_t(nh) * sizeof(float)));
    acc_cap_ = n;
    delta_cap_ = nh;
    return Status::Ok();
  }
  void free_backward() {
    for (float** p : {&dq_acc_, &delta_}) {
      if (*p) cudaFree(*p);
      *p = nullptr;
    }
    for (uint16_t*& lo : lo_) {
      if (lo) cudaFree(lo);
      lo = nullptr;
    }
    acc_cap_ = delta_cap_ = 0;
  }

  Config cfg_;
  MPI_Comm comm_;
  int block_m_ = 128;
  int comm_sms_ = 0;        // SMs kept for the exchange (RINGATTN_COMM_SMS)
  size_t ring_slots_ = 0;   // RINGATTN_RING_SLOTS (0: auto)
  size_t slot_budget_ = size_t(4) << 30;
  int attention_ctas_ = 0;  // the attention grid's cap (0: every SM)
  bool dynamic_tiles_ = true;
  bool dq_atomic_ = false;
  bool dq_first_ = true;
  bool bwd_pingpong_ = true;
  bool bwd_tma_ = true;
  bool pdl_ = true;  // RINGATTN_PDL
  int32_t* counters_[2] = {nullptr, nullptr};
  size_t counter_cap_ = 0;
  int counter_set_ = 0;
  float *dq_acc_ = nullptr, *delta_ = nullptr;  // the backward's (dq_acc_: atomic dQ only)
  uint16_t* lo_[3] = {nullptr, nullptr, nullptr};  // bf16 remainders of dQ, dK, dV (atomic dQ: [2] only, BackwardWork::dk_lo)
  int64_t acc_cap_ = 0, delta_cap_ = 0;
  std::unique_ptr<Lanes> lanes_;
  std::unique_ptr<RingTransport> transport_;
  std::unique_ptr<Ring> ring_;
};

}  // namespace

bool cuda_backend_compiled() { return true; }

Status make_cuda_executor(const Config& c, MPI_Comm comm, std::unique_ptr<Executor>* out) {
  auto ex = std::make_unique<CudaExecutor>(c, comm);
  Status st = ex->init();
  if (!st.ok()) return st;
  *out = std::move(ex);
  return Status::Ok();
}

}  // namespace ringattn

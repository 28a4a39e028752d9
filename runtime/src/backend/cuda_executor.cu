// The cuda backend's forward: fused attention passes (kernels/cuda) on the
// caller's stream, rows packed by a kernel on the ring's comm stream, the ring
// (ring/ring.hpp) on CUDA lanes over the nccl or mpi transport. With nccl (or
// one rank) a forward returns with its work in flight.
#include <cuda_runtime.h>
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "backend/executor.hpp"
#include "device/check_cuda.hpp"
#include "kernels/cuda/attention_fwd.hpp"
#include "kernels/cuda/ring_pack.hpp"

namespace ringattn {
namespace {

namespace kc = kern::cuda;

// A plan's device arrays: the image the pattern cache copied to the device
// (plan_image.hpp), turned into pointers.
struct DevicePlan {
  const kern::Tile* tiles = nullptr;
  const int32_t* key_index = nullptr;
  const int32_t* prefix = nullptr;              // per pass: num_tiles + 1 entries
  const int64_t* pass_prefix_offset = nullptr;  // into prefix, per pass
  const int32_t* pass_blocks = nullptr;         // CTAs per batch of each pass
  std::vector<const int32_t*> send_rows, send_prefix;  // per plan step
  int32_t* tile_counters = nullptr;  // one per pass (dynamic tile scheduling), zeroed by the prologue
};

Status device_plan_view(const Plan& plan, const ForwardArgs& a, int block_m, DevicePlan* dp) {
  const PlanImage* im = a.image;
  if (im == nullptr || a.image_device == nullptr)
    return Status(StatusCode::kInternal, "cuda executor: the plan has no device image (pattern cache lease missing)");
  if (im->block_m != block_m || im->pass_blocks.size() != plan.passes.size() || im->send_rows_offset.size() != plan.steps.size())
    return Status(StatusCode::kInternal, "cuda executor: the device image was built for block_m " + std::to_string(im->block_m) +
                                             ", the kernel needs " + std::to_string(block_m));
  const void* base = a.image_device;
  dp->tiles = image_at<kern::Tile>(base, im->tiles_offset);
  dp->key_index = image_at<int32_t>(base, im->key_index_offset);
  dp->prefix = image_at<int32_t>(base, im->prefix_offset);
  dp->pass_prefix_offset = im->pass_prefix_offset.data();
  dp->pass_blocks = im->pass_blocks.data();
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
    ring_ = std::make_unique<Ring>(RingOptions{rank, cfg_.timeout_seconds, wait}, transport_.get(), lanes_.get());
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
  }

  Status forward(const Plan& plan, const ForwardArgs& a, Stats* stats) override {
    DevicePlan dp;
    RINGATTN_RETURN_IF_ERROR(device_plan_view(plan, a, block_m_, &dp));
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
    if (const char* e = std::getenv("RINGATTN_TILE_SCHEDULE"); e != nullptr && *e != '\0') {
      if (std::string(e) == "static") dynamic_tiles_ = false;
      else if (std::string(e) != "dynamic")
        return InvalidArgument(std::string("RINGATTN_TILE_SCHEDULE='") + e + "' (allowed: dynamic, static)");
    }
    // With one rank there is nothing to exchange: no communicator is made.
    if (world == 1) transport_ = make_no_transport();
    else if (cfg_.transport == Transport::mpi)
      RINGATTN_RETURN_IF_ERROR(make_mpi_device_transport(comm_, wait, lanes_->comm_stream(), &transport_));
    return Status::Ok();
  }

  // One forward on the ring: fused passes merging into O and LSE in place.
  class Work final : public RingWork {
   public:
    Work(CudaExecutor* ex, const Plan& plan, const ForwardArgs& a, const DevicePlan& dp)
        : ex_(ex), plan_(plan), a_(a), dp_(dp), cs_(static_cast<cudaStream_t>(a.stream)) {
      const Config& c = ex->cfg_;
      const int64_t D = c.head_dim;
      es_ = int64_t(dtype_size(c.dtype));
      fp_ = kc::fwd_shard_params(a.q, a.o, a.lse, a.shape->batch, plan.local_rows, c.heads, D,
                                 float(c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(D))), c.causal, ex->elem());
      fp_.max_ctas = ex->attention_ctas_;
    }

    Status prologue() override {
      const int64_t n = a_.shape->batch * plan_.local_rows * ex_->cfg_.heads;
      RINGATTN_CUDA_CHECK(kc::fwd_init_outputs(a_.o, a_.lse, n * ex_->cfg_.head_dim, n, fp_.dtype, !plan_.covers_all, cs_));
      if (dp_.tile_counters)
        RINGATTN_CUDA_CHECK(cudaMemsetAsync(dp_.tile_counters, 0, plan_.passes.size() * sizeof(int32_t), cs_));
      return Status::Ok();
    }

    // The rows a peer needs, packed on the comm lane; a whole shard travels
    // as it is (no pack kernel, no SMs taken from the attention).
    Status pack(size_t i, void* slot, const void* block[2]) override {
      if (plan_.steps[i].send.whole) {
        block[0] = a_.k;
        block[1] = a_.v;
        return Status::Ok();
      }
      kc::PackParams pp;
      pp.k = a_.k;
      pp.v = a_.v;
      pp.out = slot;
      pp.rows = dp_.send_rows[i];
      pp.head_prefix = dp_.send_prefix[i];
      pp.total_rows = plan_.steps[i].send.total_rows();
      pp.local_rows = plan_.local_rows;
      pp.batch = fp_.batch;
      pp.heads = fp_.heads;
      pp.head_dim = fp_.head_dim;
      pp.elem_bytes = int32_t(es_);
      RINGATTN_CUDA_CHECK(kc::pack_rows(pp, static_cast<cudaStream_t>(ex_->lanes_->comm_stream())));
      return Status::Ok();
    }

    Status compute(size_t i, const void* recv, void*) override {
      const int64_t H = fp_.heads, D = fp_.head_dim;
      if (i == kLocal) return run_passes(0, kern::KeySource{a_.k, a_.v, plan_.local_rows * H * D, H * D, D, nullptr});
      const RowList& rl = plan_.steps[i].recv;
      const int64_t R = rl.total_rows();
      const char* k = static_cast<const char*>(recv);
      const char* v = k + a_.shape->batch * R * D * es_;
      if (rl.whole) return run_passes(rl_step(i), kern::KeySource{k, v, plan_.local_rows * H * D, H * D, D, nullptr});
      return run_passes(rl_step(i), kern::KeySource{k, v, R * D, D, 0, dp_.key_index});
    }

   private:
    int rl_step(size_t i) const { return plan_.steps[i].step; }
    Status run_passes(int step, const kern::KeySource& src) {
      for (size_t pi = 0; pi < plan_.passes.size(); ++pi) {
        const Pass& ps = plan_.passes[pi];
        if (ps.step != step) continue;
        fp_.src = src;
        fp_.tiles = dp_.tiles + ps.tile_begin;
        fp_.num_tiles = int32_t(ps.tile_end - ps.tile_begin);
        fp_.tile_block_prefix = dp_.prefix + dp_.pass_prefix_offset[pi];
        fp_.num_blocks = dp_.pass_blocks[pi];
        fp_.tile_counter = dp_.tile_counters ? dp_.tile_counters + pi : nullptr;
        RINGATTN_CUDA_CHECK(kc::fwd_launch(fp_, cs_));
      }
      return Status::Ok();
    }
    CudaExecutor* ex_;
    const Plan& plan_;
    const ForwardArgs& a_;
    const DevicePlan& dp_;
    cudaStream_t cs_;
    int64_t es_ = 2;
    kc::FwdParams fp_;
  };

  Config cfg_;
  MPI_Comm comm_;
  int block_m_ = 128;
  int comm_sms_ = 0;        // SMs kept for the exchange (RINGATTN_COMM_SMS)
  int attention_ctas_ = 0;  // the attention grid's cap (0: every SM)
  bool dynamic_tiles_ = true;
  int32_t* counters_[2] = {nullptr, nullptr};
  size_t counter_cap_ = 0;
  int counter_set_ = 0;
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

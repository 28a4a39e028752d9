// The CUDA executor: fused attention passes on the compute stream, the ring
// exchange on a communication stream, ordered by events so that step d+1's
// transfer runs under step d's attention.
//
//   comm stream:    pack(0) send/recv(0) | pack(1) send/recv(1) | wait done(0) pack(2) ...
//   compute stream: init, local passes | wait recv(0) passes(0) done(0) | wait recv(1) ...
//
// Two receive slots (double buffer): the exchange of step i+2 is enqueued
// only after the compute stream has recorded done(i), the last reader of
// slot i%2. Transports:
//   nccl: one ncclGroupStart/End per step with its send and receive, on the
//         communication stream; all steps enqueued without host waits.
//   mpi:  host-staged: the packed block is copied to pinned memory, sent with
//         MPI_Isend/Irecv, and copied back; lets several ranks share a GPU.
// The forward returns once O and LSE are complete, polling for completion so
// that a silent peer ends the call with kTimeout (naming step and peer)
// instead of a hang.
#include <cuda_runtime.h>
#include <mpi.h>
#include <nccl.h>
#if defined(OPEN_MPI) && OPEN_MPI
#include <mpi-ext.h>  // MPIX_CUDA_AWARE_SUPPORT, MPIX_Query_cuda_support
#endif
#include <cstdlib>
#include <string>

#include <chrono>
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <tuple>
#include <vector>

#include "kernels/cuda/attention_fwd.hpp"
#include "kernels/cuda/ring_pack.hpp"
#include "backend/executor.hpp"
#include "ring/fault.hpp"
#include "transport/host_wait.hpp"
#include "device/check_cuda.hpp"

namespace ringattn {
namespace {

using Clock = std::chrono::steady_clock;
namespace kc = kern::cuda;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// A plan's device arrays: the image the pattern cache copied to the device
// (plan_image.hpp), turned into pointers.
struct DevicePlan {
  const kern::Tile* tiles = nullptr;
  const int32_t* key_index = nullptr;
  const int32_t* prefix = nullptr;            // per pass: num_tiles + 1 entries
  const int64_t* pass_prefix_offset = nullptr;  // into prefix, per pass
  const int32_t* pass_blocks = nullptr;         // CTAs per batch of each pass
  std::vector<const int32_t*> send_rows, send_prefix;  // per plan step
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
  dp->send_rows.clear();
  dp->send_prefix.clear();
  for (size_t i = 0; i < plan.steps.size(); ++i) {
    dp->send_rows.push_back(image_at<int32_t>(base, im->send_rows_offset[i]));
    dp->send_prefix.push_back(image_at<int32_t>(base, im->send_prefix_offset[i]));
  }
  return Status::Ok();
}

// Open MPI reports CUDA support at compile time (MPIX_CUDA_AWARE_SUPPORT) and
// at run time (MPIX_Query_cuda_support); both must agree before device
// pointers go to MPI. RINGATTN_MPI_CUDA_AWARE=0 forces host staging.
bool detect_cuda_aware_mpi() {
  const char* env = std::getenv("RINGATTN_MPI_CUDA_AWARE");
  if (env && std::string(env) == "0") return false;
#if defined(MPIX_CUDA_AWARE_SUPPORT) && MPIX_CUDA_AWARE_SUPPORT
  return MPIX_Query_cuda_support() == 1;
#else
  return false;
#endif
}

class CudaExecutor final : public Executor {
  // Events of one forward: `cur_` for the one being enqueued, `pend_` for the
  // one in flight (swapped when a forward is left in flight).
  struct EventSet {
    cudaEvent_t in = nullptr, end = nullptr;
    std::vector<cudaEvent_t> recv, done, c0, c1, t0;
  };
  struct Pending {
    bool active = false;
    Stats* stats = nullptr;
    std::vector<StepTiming> steps;  // peers and bytes per ring step (times filled on completion)
  };
 public:
  CudaExecutor(const Config& c, MPI_Comm comm) : cfg_(c), comm_(comm), fault_(FaultPlan::from_env()) {}

  ~CudaExecutor() override {
    // The forward still in flight reads the buffers and events freed below.
    if (pending_.active) (void)finish();  // a timeout marks the communicator aborted
    if (nccl_) {
      if (aborted_) ncclCommAbort(nccl_);
      else ncclCommDestroy(nccl_);
    }
    for (EventSet* es : {&cur_, &pend_}) {
      for (auto* v : {&es->recv, &es->done, &es->c0, &es->c1, &es->t0})
        for (cudaEvent_t e : *v) cudaEventDestroy(e);
      if (es->in) cudaEventDestroy(es->in);
      if (es->end) cudaEventDestroy(es->end);
    }
    if (comm_stream_) cudaStreamDestroy(comm_stream_);
    for (int i = 0; i < 2; ++i) {
      if (send_dev_[i]) cudaFree(send_dev_[i]);
      if (recv_dev_[i]) cudaFree(recv_dev_[i]);
      if (send_host_[i]) cudaFreeHost(send_host_[i]);
      if (recv_host_[i]) cudaFreeHost(recv_host_[i]);
    }
  }

  // Collective over comm (Context::create calls it on every rank, after the
  // ranks agreed on the config).
  Status init() {
    RINGATTN_MPI_CHECK(MPI_Comm_rank(comm_, &rank_));
    RINGATTN_MPI_CHECK(MPI_Comm_size(comm_, &world_));
    // Busy-polling costs a core per rank: the default turns to sleeping when
    // this host runs more ranks than it has cores (RINGATTN_HOST_WAIT overrides).
    MPI_Comm node = MPI_COMM_NULL;
    RINGATTN_MPI_CHECK(MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &node));
    int local_ranks = 1;
    MPI_Comm_size(node, &local_ranks);
    MPI_Comm_free(&node);
    const unsigned cores = std::thread::hardware_concurrency();
    wait_policy_ = wait_policy_from_env(cores > 0 && unsigned(local_ranks) > cores ? WaitPolicy::sleep : WaitPolicy::spin);
    // Every rank reaches the NCCL bootstrap below only if all set up locally:
    // a rank without a GPU fails them all instead of leaving them waiting.
    RINGATTN_RETURN_IF_ERROR(all_ranks(comm_, init_local()));
    if (cfg_.transport == Transport::nccl && world_ > 1) RINGATTN_RETURN_IF_ERROR(init_nccl());
    return Status::Ok();
  }

  Status init_local() {
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess || n == 0) {
      cudaGetLastError();
      return Status(StatusCode::kDeviceError, "backend 'cuda' needs a GPU but none is visible (allowed here: --backend cpu)");
    }
    RINGATTN_CUDA_CHECK(cudaStreamCreateWithFlags(&comm_stream_, cudaStreamNonBlocking));
    for (EventSet* es : {&cur_, &pend_}) {
      RINGATTN_CUDA_CHECK(cudaEventCreateWithFlags(&es->in, cudaEventDisableTiming));
      RINGATTN_CUDA_CHECK(cudaEventCreateWithFlags(&es->end, cudaEventDisableTiming));
    }
    block_m_ = kc::fwd_block_m(elem(), int(cfg_.head_dim));
    if (cfg_.transport == Transport::mpi) {
      mpi_ = make_mpi_transport(comm_, wait_policy_);
      cuda_aware_mpi_ = detect_cuda_aware_mpi();
    }
    return Status::Ok();
  }

  Status forward(const Plan& plan, const ForwardArgs& a, Stats* stats) override {
    fault_.next_forward();
    cudaStream_t cs = static_cast<cudaStream_t>(a.stream);
    const int64_t B = a.shape->batch, L = plan.local_rows, H = cfg_.heads, D = cfg_.head_dim;
    const int64_t es = int64_t(dtype_size(cfg_.dtype));
    const size_t nsteps = plan.steps.size();
    DevicePlan dplan;
    RINGATTN_RETURN_IF_ERROR(device_plan_view(plan, a, block_m_, &dplan));
    const DevicePlan* dp = &dplan;
    RINGATTN_RETURN_IF_ERROR(ensure_events(&cur_, nsteps + 1));
    EventSet& E = cur_;

    // Buffers for the largest block of any step.
    int64_t max_send = 0, max_recv = 0;
    for (const PlanStep& st : plan.steps) {
      max_send = std::max(max_send, st.send.total_rows());
      max_recv = std::max(max_recv, st.recv.total_rows());
    }
    // Buffers grow rarely; the forward still in flight may be using them.
    if (needs_growth(size_t(2 * B * max_send * D * es), size_t(2 * B * max_recv * D * es)) && pending_.active)
      RINGATTN_RETURN_IF_ERROR(finish());
    RINGATTN_RETURN_IF_ERROR(ensure_buffers(size_t(2 * B * max_send * D * es), size_t(2 * B * max_recv * D * es)));

    RINGATTN_CUDA_CHECK(cudaEventRecord(E.in, cs));
    RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, E.in, 0));
    RINGATTN_CUDA_CHECK(kc::fwd_init_outputs(a.o, a.lse, B * L * H * D, B * L * H, elem(), !plan.covers_all, cs));

    kc::FwdParams fp = kc::fwd_shard_params(a.q, a.o, a.lse, B, L, H, D,
                                            float(cfg_.scale > 0 ? cfg_.scale : 1.0 / std::sqrt(double(D))),
                                            cfg_.causal, elem());
    auto run_passes = [&](int step, const kern::KeySource& src) -> Status {
      for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
        const Pass& ps = plan.passes[pi];
        if (ps.step != step) continue;
        fp.src = src;
        fp.tiles = dp->tiles + ps.tile_begin;
        fp.num_tiles = int32_t(ps.tile_end - ps.tile_begin);
        fp.tile_block_prefix = dp->prefix + dp->pass_prefix_offset[pi];
        fp.num_blocks = dp->pass_blocks[pi];
        RINGATTN_CUDA_CHECK(kc::fwd_launch(fp, cs));
      }
      return Status::Ok();
    };
    auto recv_source = [&](size_t i) {
      const int64_t R = plan.steps[i].recv.total_rows();
      const char* base = static_cast<const char*>(recv_dev_[i % 2]);
      return kern::KeySource{base, base + B * R * D * es, R * D, D, 0, dp->key_index};
    };
    auto pack = [&](size_t i) -> Status {
      const PlanStep& st = plan.steps[i];
      kc::PackParams pp;
      pp.k = a.k;
      pp.v = a.v;
      pp.out = send_dev_[i % 2];
      pp.rows = dp->send_rows[i];
      pp.head_prefix = dp->send_prefix[i];
      pp.total_rows = st.send.total_rows();
      pp.local_rows = L;
      pp.batch = int32_t(B);
      pp.heads = int32_t(H);
      pp.head_dim = int32_t(D);
      pp.elem_bytes = int32_t(es);
      RINGATTN_CUDA_CHECK(kc::pack_rows(pp, comm_stream_));
      return Status::Ok();
    };
    auto block_bytes = [&](const RowList& rl) { return size_t(2 * B * rl.total_rows() * D * es); };

    Pending done;  // this forward, for its timeline once complete
    done.steps.resize(nsteps);
    for (size_t i = 0; i < nsteps; ++i) {
      const PlanStep& ps = plan.steps[i];
      StepTiming& t = done.steps[i];
      t.step = ps.step;
      t.send_peer = ps.send.empty() ? -1 : ps.send.peer;
      t.recv_peer = ps.recv.empty() ? -1 : ps.recv.peer;
      t.bytes_sent = int64_t(block_bytes(ps.send));
      t.bytes_ideal = ps.send.total_rows() * 2 * B * D * es;
    }
    std::vector<Clock::time_point> host_t0(nsteps), host_t1(nsteps);

    // Enqueue the exchange of step i on the communication stream.
    auto start_nccl = [&](size_t i) -> Status {
      const PlanStep& st = plan.steps[i];
      RINGATTN_RETURN_IF_ERROR(fault_.check(rank_, st.step));
      if (i >= 2) RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, E.done[i - 2], 0));
      RINGATTN_CUDA_CHECK(cudaEventRecord(E.t0[i], comm_stream_));
      RINGATTN_RETURN_IF_ERROR(pack(i));
      RINGATTN_NCCL_CHECK(ncclGroupStart());
      if (!st.send.empty())
        RINGATTN_NCCL_CHECK(ncclSend(send_dev_[i % 2], block_bytes(st.send), ncclUint8, st.send.peer, nccl_, comm_stream_));
      if (!st.recv.empty())
        RINGATTN_NCCL_CHECK(ncclRecv(recv_dev_[i % 2], block_bytes(st.recv), ncclUint8, st.recv.peer, nccl_, comm_stream_));
      RINGATTN_NCCL_CHECK(ncclGroupEnd());
      Status ready = nccl_ready();
      if (!ready.ok())  // e.g. the first exchange with a peer that never joins (connections are made lazily)
        return Status(ready.code(), "ring step " + std::to_string(st.step) +
                                        (st.send.empty() ? "" : " sending to rank " + std::to_string(st.send.peer)) +
                                        (st.recv.empty() ? "" : " receiving from rank " + std::to_string(st.recv.peer)) +
                                        ": " + ready.message() + " (peer failed or hung; see its output)");
      RINGATTN_CUDA_CHECK(cudaEventRecord(E.recv[i], comm_stream_));
      bytes_sent_ += int64_t(block_bytes(st.send));
      bytes_recv_ += int64_t(block_bytes(st.recv));
      return Status::Ok();
    };
    // Host-staged MPI: pack, copy to pinned memory, post Isend/Irecv. With
    // a CUDA-aware MPI the device blocks are posted directly instead.
    auto start_mpi = [&](size_t i) -> Status {
      const PlanStep& st = plan.steps[i];
      RINGATTN_RETURN_IF_ERROR(fault_.check(rank_, st.step));
      if (cuda_aware_mpi_) {
        // The receive slot's last reader is step i-2's attention.
        if (i >= 2) RINGATTN_CUDA_CHECK(cudaEventSynchronize(E.done[i - 2]));
        RINGATTN_CUDA_CHECK(cudaEventRecord(E.t0[i], comm_stream_));
        host_t0[i] = Clock::now();
        if (!st.send.empty()) RINGATTN_RETURN_IF_ERROR(pack(i));
        RINGATTN_CUDA_CHECK(cudaStreamSynchronize(comm_stream_));
        return mpi_->start(st.step, send_dev_[i % 2], block_bytes(st.send), st.send.empty() ? -1 : st.send.peer,
                           recv_dev_[i % 2], block_bytes(st.recv), st.recv.empty() ? -1 : st.recv.peer);
      }
      if (i >= 2) RINGATTN_CUDA_CHECK(cudaEventSynchronize(E.recv[i - 2]));  // recv_host slot drained
      RINGATTN_CUDA_CHECK(cudaEventRecord(E.t0[i], comm_stream_));
      host_t0[i] = Clock::now();
      if (!st.send.empty()) {
        RINGATTN_RETURN_IF_ERROR(pack(i));
        RINGATTN_CUDA_CHECK(cudaMemcpyAsync(send_host_[i % 2], send_dev_[i % 2], block_bytes(st.send),
                                            cudaMemcpyDeviceToHost, comm_stream_));
        RINGATTN_CUDA_CHECK(cudaStreamSynchronize(comm_stream_));
      }
      return mpi_->start(st.step, send_host_[i % 2], block_bytes(st.send), st.send.empty() ? -1 : st.send.peer,
                         recv_host_[i % 2], block_bytes(st.recv), st.recv.empty() ? -1 : st.recv.peer);
    };
    auto finish_mpi = [&](size_t i) -> Status {
      const PlanStep& st = plan.steps[i];
      RINGATTN_RETURN_IF_ERROR(mpi_->wait(st.step, cfg_.timeout_seconds));
      host_t1[i] = Clock::now();
      if (i >= 2) RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(comm_stream_, E.done[i - 2], 0));
      if (!st.recv.empty() && !cuda_aware_mpi_)
        RINGATTN_CUDA_CHECK(cudaMemcpyAsync(recv_dev_[i % 2], recv_host_[i % 2], block_bytes(st.recv),
                                            cudaMemcpyHostToDevice, comm_stream_));
      RINGATTN_CUDA_CHECK(cudaEventRecord(E.recv[i], comm_stream_));
      return Status::Ok();
    };

    const bool use_nccl = !mpi_;
    const int64_t mpi_sent0 = mpi_ ? mpi_->counters.bytes_sent : 0, mpi_recv0 = mpi_ ? mpi_->counters.bytes_received : 0;
    const int64_t nccl_sent0 = bytes_sent_, nccl_recv0 = bytes_recv_;
    Status st = Status::Ok();
    // The exchanges in flight before the local passes: two with NCCL (both
    // receive slots), one with MPI (the host posts the next while the GPU computes).
    size_t started = 0;
    const size_t ahead = use_nccl ? 2 : 1;
    for (; started < std::min(ahead, nsteps) && st.ok(); ++started) st = use_nccl ? start_nccl(started) : start_mpi(started);
    if (st.ok()) {
      RINGATTN_CUDA_CHECK(cudaEventRecord(E.c0[nsteps], cs));
      st = run_passes(0, kern::KeySource{a.k, a.v, L * H * D, H * D, D, nullptr});
      RINGATTN_CUDA_CHECK(cudaEventRecord(E.c1[nsteps], cs));
    }
    for (size_t i = 0; i < nsteps && st.ok(); ++i) {
      if (!use_nccl) {
        if (started < nsteps) st = start_mpi(started++);
        if (st.ok()) st = finish_mpi(i);
        if (!st.ok()) break;
      }
      RINGATTN_CUDA_CHECK(cudaStreamWaitEvent(cs, E.recv[i], 0));
      RINGATTN_CUDA_CHECK(cudaEventRecord(E.c0[i], cs));
      if (!plan.steps[i].recv.empty()) st = run_passes(plan.steps[i].step, recv_source(i));
      RINGATTN_CUDA_CHECK(cudaEventRecord(E.c1[i], cs));
      RINGATTN_CUDA_CHECK(cudaEventRecord(E.done[i], cs));
      if (use_nccl && st.ok() && started < nsteps) st = start_nccl(started++);
    }
    if (!st.ok()) {
      // This rank leaves the ring mid-forward: its peers will time out, and
      // this communicator may hold posted operations: abort it, never destroy.
      if (nccl_) aborted_ = true;
      return st;
    }
    RINGATTN_CUDA_CHECK(cudaEventRecord(E.end, cs));
    stats->last_bytes_sent = use_nccl ? bytes_sent_ - nccl_sent0 : mpi_->counters.bytes_sent - mpi_sent0;
    stats->last_bytes_received = use_nccl ? bytes_recv_ - nccl_recv0 : mpi_->counters.bytes_received - mpi_recv0;
    stats->last_bytes_ideal = plan.rows_sent() * 2 * B * D * es;
    done.active = true;
    done.stats = stats;
    if (!use_nccl) {
      // Host-staged MPI: the host drove every exchange, so only the last
      // passes are still running; wait for them here.
      for (size_t i = 0; i < nsteps; ++i) done.steps[i].transfer_ms = ms_between(host_t0[i], host_t1[i]);
      Status w = wait_complete(E, done);
      if (w.ok()) fill_timeline(E, done, false);
      return w;
    }
    // NCCL (or one rank): nothing left for the host to drive. Return with
    // this forward in flight, so the host prepares the next one while the GPU
    // runs this one; the forward before it must be complete first (at most
    // one in flight, each one's completion watched under the timeout).
    Status prev = finish();
    pending_ = std::move(done);
    std::swap(cur_, pend_);
    return prev;
  }

  // Waits for the forward in flight (if any) and fills its timeline.
  Status finish() override {
    if (!pending_.active) return Status::Ok();
    Pending p = std::move(pending_);
    pending_ = Pending{};
    Status w = wait_complete(pend_, p);
    if (w.ok()) fill_timeline(pend_, p, true);
    return w;
  }

  int plan_image_block_m() const override { return block_m_; }

 private:
  kc::ElemType elem() const { return cfg_.dtype == DType::f16 ? kc::ElemType::f16 : kc::ElemType::bf16; }

  Status init_nccl() {
    ncclUniqueId id;
    if (rank_ == 0) RINGATTN_NCCL_CHECK(ncclGetUniqueId(&id));
    RINGATTN_MPI_CHECK(MPI_Bcast(&id, int(sizeof(id)), MPI_BYTE, 0, comm_));
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;  // non-blocking: init and abort can be timed out
    RINGATTN_NCCL_CHECK(ncclCommInitRankConfig(&nccl_, world_, id, rank_, &config));
    return nccl_ready();
  }

  // Polls a non-blocking NCCL communicator until its last call is done.
  Status nccl_ready() {
    const auto t0 = Clock::now();
    for (;;) {
      ncclResult_t r = ncclInProgress;
      RINGATTN_NCCL_CHECK(ncclCommGetAsyncError(nccl_, &r));
      if (r == ncclSuccess) return Status::Ok();
      if (r != ncclInProgress) {
        aborted_ = true;
        return Status(StatusCode::kCommError, std::string("NCCL: ") + ncclGetErrorString(r));
      }
      if (ms_between(t0, Clock::now()) > cfg_.timeout_seconds * 1e3) {
        aborted_ = true;
        return Status(StatusCode::kTimeout, "NCCL did not become ready within " + std::to_string(int(cfg_.timeout_seconds)) + " s");
      }
      std::this_thread::yield();
    }
  }

  // Waits for the compute stream, watching NCCL's asynchronous errors and the
  // timeout; on failure names the first ring step whose receive is missing.
  Status wait_complete(const EventSet& E, const Pending& p) {
    Backoff backoff(wait_policy_);
    for (;;) {
      cudaError_t e = cudaEventQuery(E.end);
      if (e == cudaSuccess) return Status::Ok();
      if (e != cudaErrorNotReady) RINGATTN_CUDA_CHECK(e);
      if (nccl_ && backoff.polls() % 64 == 0) {
        ncclResult_t r = ncclSuccess;
        RINGATTN_NCCL_CHECK(ncclCommGetAsyncError(nccl_, &r));
        if (r != ncclSuccess && r != ncclInProgress) {
          aborted_ = true;
          return Status(StatusCode::kCommError, std::string("NCCL asynchronous error: ") + ncclGetErrorString(r));
        }
      }
      if (backoff.waited_ms() > cfg_.timeout_seconds * 1e3) {
        std::string where = "the attention passes";
        for (size_t i = 0; i < p.steps.size(); ++i) {
          if (cudaEventQuery(E.recv[i]) == cudaErrorNotReady) {
            const StepTiming& s = p.steps[i];
            where = "ring step " + std::to_string(s.step) +
                    (s.recv_peer < 0 ? " (sending to rank " + std::to_string(s.send_peer) + ")"
                                     : " waiting for rank " + std::to_string(s.recv_peer));
            break;
          }
        }
        if (nccl_) aborted_ = true;
        return Status(StatusCode::kTimeout, "no progress for " + std::to_string(int(cfg_.timeout_seconds)) + " s at " +
                                                where + " (peer failed or hung; see its output)");
      }
      backoff.pause();
    }
  }

  // Timeline of a completed forward from its events (and, with MPI, the
  // host's transfer times already in p.steps).
  static void fill_timeline(const EventSet& E, const Pending& p, bool nccl) {
    auto elapsed = [](cudaEvent_t x, cudaEvent_t y) {
      float f = 0;
      return cudaEventElapsedTime(&f, x, y) == cudaSuccess ? double(f) : 0.0;
    };
    const size_t n = p.steps.size();
    std::vector<StepTiming>& tl = p.stats->timeline;
    tl.assign(n + 1, StepTiming{});
    tl[0].compute_ms = elapsed(E.c0[n], E.c1[n]);
    for (size_t i = 0; i < n; ++i) {
      StepTiming& t = tl[i + 1];
      t = p.steps[i];
      t.compute_ms = elapsed(E.c0[i], E.c1[i]);
      if (nccl) t.transfer_ms = elapsed(E.t0[i], E.recv[i]);
      // Exposed: the compute stream idled between the previous step's end and this one's start.
      t.exposed_ms = elapsed(i == 0 ? E.c1[n] : E.c1[i - 1], E.c0[i]);
    }
  }

  Status ensure_events(EventSet* es, size_t n) {
    for (auto* v : {&es->recv, &es->done, &es->c0, &es->c1, &es->t0}) {
      while (v->size() < n) {
        cudaEvent_t e;
        RINGATTN_CUDA_CHECK(cudaEventCreate(&e));
        v->push_back(e);
      }
    }
    return Status::Ok();
  }

  bool needs_growth(size_t send_bytes, size_t recv_bytes) const { return send_bytes > send_cap_ || recv_bytes > recv_cap_; }

  Status ensure_buffers(size_t send_bytes, size_t recv_bytes) {
    if (send_bytes > send_cap_) {
      for (int i = 0; i < 2; ++i) {
        if (send_dev_[i]) cudaFree(send_dev_[i]);
        send_dev_[i] = nullptr;
        RINGATTN_CUDA_CHECK(cudaMalloc(&send_dev_[i], send_bytes));
        if (mpi_ && !cuda_aware_mpi_) {
          if (send_host_[i]) cudaFreeHost(send_host_[i]);
          send_host_[i] = nullptr;
          RINGATTN_CUDA_CHECK(cudaMallocHost(&send_host_[i], send_bytes));
        }
      }
      send_cap_ = send_bytes;
    }
    if (recv_bytes > recv_cap_) {
      for (int i = 0; i < 2; ++i) {
        if (recv_dev_[i]) cudaFree(recv_dev_[i]);
        recv_dev_[i] = nullptr;
        RINGATTN_CUDA_CHECK(cudaMalloc(&recv_dev_[i], recv_bytes));
        if (mpi_ && !cuda_aware_mpi_) {
          if (recv_host_[i]) cudaFreeHost(recv_host_[i]);
          recv_host_[i] = nullptr;
          RINGATTN_CUDA_CHECK(cudaMallocHost(&recv_host_[i], recv_bytes));
        }
      }
      recv_cap_ = recv_bytes;
    }
    return Status::Ok();
  }

  Config cfg_;
  MPI_Comm comm_;
  int rank_ = 0, world_ = 1;
  FaultPlan fault_;
  WaitPolicy wait_policy_ = WaitPolicy::spin;  // set by init()
  int block_m_ = 128;
  ncclComm_t nccl_ = nullptr;
  bool aborted_ = false;
  std::unique_ptr<RingTransport> mpi_;
  bool cuda_aware_mpi_ = false;  // MPI takes device pointers: no host staging
  cudaStream_t comm_stream_ = nullptr;
  EventSet cur_, pend_;
  Pending pending_;
  void* send_dev_[2] = {nullptr, nullptr};
  void* recv_dev_[2] = {nullptr, nullptr};
  void* send_host_[2] = {nullptr, nullptr};
  void* recv_host_[2] = {nullptr, nullptr};
  size_t send_cap_ = 0, recv_cap_ = 0;
  int64_t bytes_sent_ = 0, bytes_recv_ = 0;
};

}  // namespace

bool cuda_backend_compiled() { return true; }

Status make_cuda_executor(const Config& c, MPI_Comm comm, std::unique_ptr<Executor>* out) {
  auto ex = std::make_unique<CudaExecutor>(c, comm);
  RINGATTN_RETURN_IF_ERROR(ex->init());
  *out = std::move(ex);
  return Status::Ok();
}

}  // namespace ringattn

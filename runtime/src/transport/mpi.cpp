#include <chrono>
#include <map>
#include <thread>
#include <vector>

#include "device/check.hpp"
#include "transport/transport.hpp"

namespace ringattn {
namespace {

constexpr size_t kChunk = size_t(1) << 30;
constexpr int kTagBase = 0x5241;  // "RA"

class MpiTransport final : public RingTransport {
 public:
  MpiTransport(MPI_Comm comm, WaitPolicy policy) : comm_(comm), policy_(policy) {}
  const char* name() const override { return "mpi"; }

  bool host_driven() const override { return true; }

  Status post(const Exchange& x) override {
    const int step = x.step, src = x.src, dst = x.dst;
    const size_t send_bytes = x.send_bytes, recv_bytes = x.recv_bytes;
    const void* send = x.send;
    void* recv = x.recv;
    Pending& p = pending_[step];
    p = Pending{};
    p.src = src;
    p.dst = dst;
    const int tag = kTagBase + (step % 8192) + (x.channel == 1 ? 8192 : 0);
    // Each half in messages of at most 1 GiB; same tag: MPI keeps their order.
    auto post = [&](bool is_send, const void* buf, size_t bytes) -> Status {
      char* b = const_cast<char*>(static_cast<const char*>(buf));  // MPI_Isend's buffer is const
      for (size_t off = 0; off < bytes; off += kChunk) {
        MPI_Request r;
        const int n = int(std::min(kChunk, bytes - off));
        if (is_send) RINGATTN_MPI_CHECK(MPI_Isend(b + off, n, MPI_BYTE, dst, tag, comm_, &r));
        else RINGATTN_MPI_CHECK(MPI_Irecv(b + off, n, MPI_BYTE, src, tag, comm_, &r));
        p.reqs.push_back(r);
      }
      return Status::Ok();
    };
    if (src >= 0 && recv_bytes > 0) {
      RINGATTN_RETURN_IF_ERROR(post(false, recv, recv_bytes / 2));
      RINGATTN_RETURN_IF_ERROR(post(false, static_cast<char*>(recv) + recv_bytes / 2, recv_bytes / 2));
      counters.bytes_received += int64_t(recv_bytes);
    }
    if (dst >= 0 && send_bytes > 0) {
      RINGATTN_RETURN_IF_ERROR(post(true, send, send_bytes / 2));
      RINGATTN_RETURN_IF_ERROR(post(true, x.send_v, send_bytes / 2));
      counters.bytes_sent += int64_t(send_bytes);
    }
    return Status::Ok();
  }

  Status complete(const Exchange& x, double timeout_s) override {
    const int step = x.step;
    auto it = pending_.find(step);
    if (it == pending_.end()) return Status::Ok();
    Pending& p = it->second;
    if (p.reqs.empty()) {
      pending_.erase(it);
      return Status::Ok();
    }
    Backoff backoff(policy_);
    for (;;) {
      int done = 0;
      RINGATTN_MPI_CHECK(MPI_Testall(int(p.reqs.size()), p.reqs.data(), &done, MPI_STATUSES_IGNORE));
      if (done) break;
      if (backoff.waited_ms() > timeout_s * 1e3) {
        std::string who;
        if (p.src >= 0) who += "receiving from rank " + std::to_string(p.src);
        if (p.dst >= 0) who += std::string(who.empty() ? "" : ", ") + "sending to rank " + std::to_string(p.dst);
        for (MPI_Request& r : p.reqs)
          if (r != MPI_REQUEST_NULL) MPI_Cancel(&r);
        pending_.erase(it);
        return Status(StatusCode::kTimeout, "ring step " + std::to_string(step) + ": no progress for " +
                                                std::to_string(int(timeout_s)) + " s " + who +
                                                " (peer failed or hung; see its output)");
      }
      backoff.pause();
    }
    pending_.erase(it);
    return Status::Ok();
  }

 private:
  struct Pending {
    std::vector<MPI_Request> reqs;
    int src = -1, dst = -1;
  };
  MPI_Comm comm_;
  WaitPolicy policy_;
  std::map<int, Pending> pending_;
};

}  // namespace

std::unique_ptr<RingTransport> make_mpi_transport(MPI_Comm comm, WaitPolicy policy) {
  return std::make_unique<MpiTransport>(comm, wait_policy_from_env(policy));
}

Status default_device_wait_policy(MPI_Comm comm, WaitPolicy* out) {
  // Busy-polling costs a core per rank: the default turns to sleeping when
  // this host runs more ranks than it has cores.
  int rank = 0;
  RINGATTN_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  MPI_Comm node = MPI_COMM_NULL;
  RINGATTN_MPI_CHECK(MPI_Comm_split_type(comm, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node));
  int local_ranks = 1;
  const int e = MPI_Comm_size(node, &local_ranks);
  MPI_Comm_free(&node);
  RINGATTN_MPI_CHECK(e);
  const unsigned cores = std::thread::hardware_concurrency();
  *out = wait_policy_from_env(cores > 0 && unsigned(local_ranks) > cores ? WaitPolicy::sleep : WaitPolicy::spin);
  return Status::Ok();
}

}  // namespace ringattn

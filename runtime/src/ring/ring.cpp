#include "ring/ring.hpp"

#include <algorithm>
#include <cstdlib>
#include <string>
#include <tuple>

namespace ringattn {

Status ring_slots_from_env(size_t* slots) {
  *slots = 0;
  const char* e = std::getenv("RINGATTN_RING_SLOTS");
  if (e == nullptr || *e == '\0' || std::string(e) == "auto") return Status::Ok();
  char* end = nullptr;
  const long v = std::strtol(e, &end, 10);
  if (*end != '\0' || v < 2 || v > 1 << 20)
    return InvalidArgument(std::string("RINGATTN_RING_SLOTS='") + e +
                           "' (allowed: auto, or an integer >= 2: receive slots of the ring on nccl)");
  *slots = size_t(v);
  return Status::Ok();
}

// The receive slot of step i is free once compute(i-k), its last reader, is
// done: mark c1 of step i-k. Steps 0..k-1 find their slots free.
class Ring::Fence final : public SlotFence {
 public:
  Fence(Lanes* l, size_t i, size_t k) : lanes_(l), i_(i), k_(k) {}
  Status lane_wait() const override { return i_ < k_ ? Status::Ok() : lanes_->lane_wait(Lane::comm, Mark::c1, i_ - k_); }
  Status host_wait() const override { return i_ < k_ ? Status::Ok() : lanes_->host_wait(Mark::c1, i_ - k_); }

 private:
  Lanes* lanes_;
  size_t i_, k_;
};

// The return slots of step i are free once its compute, their writer, is
// done (mark c1 of step i): the block returned two steps before was added in
// before it on the compute lane (or, with a slot per step, none shares it).
class Ring::BackFence final : public SlotFence {
 public:
  BackFence(Lanes* l, size_t i) : lanes_(l), i_(i) {}
  Status lane_wait() const override { return lanes_->lane_wait(Lane::comm, Mark::c1, i_); }
  Status host_wait() const override { return lanes_->host_wait(Mark::c1, i_); }

 private:
  Lanes* lanes_;
  size_t i_;
};

Ring::Ring(const RingOptions& o, RingTransport* transport, Lanes* lanes)
    : opt_(o), transport_(transport), lanes_(lanes), fault_(FaultPlan::from_env()) {}

Ring::~Ring() {
  // The run still in flight reads the slots freed below.
  if (pending_.active) (void)finish();  // a timeout aborts the transport
  release_slots();
}


// Step i's exchange: channel 0 moves the block of send_[i % k] (or what the
// work pointed at) to the send peer and receives into recv_[i % k]; channel 1
// (the return channel) goes the other way round: back_send_ to the receive
// peer, back_recv_ from the send peer.
Exchange Ring::exchange(size_t i, const RingStep& s, const SlotFence* fence, int channel) {
  const bool back = channel == 1;
  const size_t sb = back ? s.back_send_bytes : s.send_bytes, rb = back ? s.back_recv_bytes : s.recv_bytes;
  Exchange x;
  x.step = s.step;
  x.index = i;
  x.channel = channel;
  x.send = back ? back_send_slot(i) : block_[2 * (i % k_)];
  x.send_v = back ? static_cast<const char*>(back_send_slot(i)) + sb / 2 : block_[2 * (i % k_) + 1];
  x.send_bytes = sb;
  x.dst = sb > 0 ? (back ? s.recv_peer : s.send_peer) : -1;
  x.recv = back ? back_recv_slot(i) : recv_[i % k_];
  x.recv_bytes = rb;
  x.src = rb > 0 ? (back ? s.send_peer : s.recv_peer) : -1;
  x.recv_free = fence;
  return x;
}

// Slots for the largest block of any step: k of each (send slots only for
// blocks that are packed), k as in RingOptions::slots; the return channel's:
// two alternating slots on host-driven transports, one per step on the
// others. They grow rarely; the run still in flight may be using them, so it
// completes first.
Status Ring::reserve(const std::vector<RingStep>& steps) {
  size_t max_send = 0, max_recv = 0, max_bs = 0, max_br = 0, max_sent = 0;
  for (const RingStep& s : steps) {
    if (!s.send_whole) max_send = std::max(max_send, s.send_bytes);
    max_sent = std::max(max_sent, s.send_bytes);
    max_recv = std::max(max_recv, s.recv_bytes);
    max_bs = std::max(max_bs, s.back_send_bytes);
    max_br = std::max(max_br, s.back_recv_bytes);
  }
  auto up = [](size_t b) { return (b + 255) & ~size_t(255); };  // 256-byte aligned slots
  const bool per_step = !transport_->host_driven();
  const size_t n = steps.size();
  size_t k = 2;
  if (per_step && n > 2) {
    const size_t block = up(max_send) + up(max_recv);
    if (opt_.slots >= 2) k = opt_.slots;
    else k = block == 0 ? n : std::max<size_t>(2, opt_.slot_budget / block);
    k = std::min(k, n);
  }
  back_send_at_.assign(n, 0);
  back_recv_at_.assign(n, 0);
  size_t need_bs = 0, need_br = 0;
  for (size_t i = 0; i < n; ++i) {
    back_send_at_[i] = per_step ? need_bs : (i % 2) * up(max_bs);
    back_recv_at_[i] = per_step ? need_br : (i % 2) * up(max_br);
    need_bs = per_step ? need_bs + up(steps[i].back_send_bytes) : 2 * up(max_bs);
    need_br = per_step ? need_br + up(steps[i].back_recv_bytes) : 2 * up(max_br);
  }
  // Slots already there serve while there are enough of them and they stay
  // within the budget (an explicit slot count ignores it): a shape with
  // longer blocks after a short one does not keep n slots of the long size.
  const size_t have = send_.size();
  const bool slots_fit = k <= have && max_send <= send_cap_ && max_recv <= recv_cap_ &&
                         (have == k || opt_.slots >= 2 || have * (up(send_cap_) + up(recv_cap_)) <= opt_.slot_budget);
  const bool fits = reserved_ && slots_fit && need_bs <= back_send_cap_ && need_br <= back_recv_cap_ && max_sent <= sent_cap_;
  if (!fits && pending_.active) RINGATTN_RETURN_IF_ERROR(finish());
  k_ = k;
  if (fits) return Status::Ok();
  // Nothing is in flight now. On any failure every slot goes, so the next
  // run starts from nothing instead of finding some slots missing.
  reserved_ = false;
  Status st = Status::Ok();
  if (!slots_fit) {
    for (auto [slots, cap, want] : {std::make_tuple(&send_, &send_cap_, max_send), std::make_tuple(&recv_, &recv_cap_, max_recv)}) {
      for (void*& p : *slots)
        if (p) lanes_->free(p);
      slots->assign(k, nullptr);
      *cap = 0;
      for (void*& p : *slots)
        if (st.ok() && want > 0) st = lanes_->alloc(want, &p);
      if (st.ok()) *cap = want;
    }
    block_.assign(2 * k, nullptr);
  }
  for (auto [buf, cap, want] : {std::make_tuple(&back_send_, &back_send_cap_, need_bs), std::make_tuple(&back_recv_, &back_recv_cap_, need_br)}) {
    if (!st.ok() || want <= *cap) continue;
    if (*buf) lanes_->free(*buf);
    *buf = nullptr;
    *cap = 0;
    st = lanes_->alloc(want, buf);
    if (st.ok()) *cap = want;
  }
  // The transport stages whole blocks too (mpi_device): the largest block sent.
  const size_t sent = std::max(sent_cap_, max_sent);
  if (st.ok()) st = transport_->reserve(sent, recv_cap_, 0);
  if (st.ok()) st = transport_->reserve(up(max_bs), up(max_br), 1);
  if (!st.ok()) {
    release_slots();
    return st;
  }
  sent_cap_ = sent;
  reserved_ = true;
  return Status::Ok();
}

void Ring::release_slots() {
  for (std::vector<void*>* slots : {&send_, &recv_}) {
    for (void* p : *slots)
      if (p) lanes_->free(p);
    slots->clear();
  }
  block_.clear();
  for (void** p : {&back_send_, &back_recv_}) {
    if (*p) lanes_->free(*p);
    *p = nullptr;
  }
  send_cap_ = recv_cap_ = back_send_cap_ = back_recv_cap_ = sent_cap_ = 0;
  reserved_ = false;
}

// Packs and posts step i. An exchange enqueued on the comm lane waits there
// for its receive slot; a host-driven one lets the transport decide (it may
// copy into the slot later, or hand it to the network at once).
Status Ring::start(size_t i, const std::vector<RingStep>& steps, RingWork* work) {
  return start_group(i, i + 1, steps, work);
}

// Packs steps [first, end) and posts their exchanges as one transport group,
// each after its receive slot's fence (the caller groups several only while
// i < k, whose slots are free). With k = n, recv(i) of every grouped step is
// reached when the whole group is done: compute(0) waits for all of it, which
// the local step hides when it is longer than the transfers. Ranks may pick
// different k (auto depends on each rank's blocks); the NCCL group moves each
// pair's blocks in step order, so a rank that posts a later step later only
// delays that step.
Status Ring::start_group(size_t first, size_t end, const std::vector<RingStep>& steps, RingWork* work) {
  std::vector<Fence> fences;
  fences.reserve(end - first);
  std::vector<Exchange> xs;
  for (size_t i = first; i < end; ++i) {
    const RingStep& s = steps[i];
    RINGATTN_RETURN_IF_ERROR(fault_.check(opt_.rank, s.step));
    fences.emplace_back(lanes_, i, k_);
    if (!transport_->host_driven()) RINGATTN_RETURN_IF_ERROR(fences.back().lane_wait());
    RINGATTN_RETURN_IF_ERROR(lanes_->mark(Mark::t0, i));
    const void** block = &block_[2 * (i % k_)];
    void* slot = send_[i % k_];
    block[0] = slot;
    block[1] = slot == nullptr ? nullptr : static_cast<const char*>(slot) + s.send_bytes / 2;
    if (s.send_bytes > 0) RINGATTN_RETURN_IF_ERROR(work->pack(i, slot, block));
  }
  for (size_t i = first; i < end; ++i) xs.push_back(exchange(i, steps[i], &fences[i - first]));
  Status st = xs.size() == 1 ? transport_->post(xs[0]) : transport_->post_group(xs);
  if (!st.ok()) return st;
  if (!transport_->host_driven())
    for (size_t i = first; i < end; ++i) RINGATTN_RETURN_IF_ERROR(lanes_->mark(Mark::recv, i));
  return Status::Ok();
}

Status Ring::run(const std::vector<RingStep>& steps, RingWork* work, void* stream, Stats* stats) {
  fault_.next_forward();
  const size_t n = steps.size();
  RINGATTN_RETURN_IF_ERROR(reserve(steps));
  RINGATTN_RETURN_IF_ERROR(lanes_->begin(n, stream));
  RINGATTN_RETURN_IF_ERROR(work->prologue());

  Pending done;  // this run, for its timeline once complete
  done.steps.resize(n);
  int64_t ideal = 0;
  for (size_t i = 0; i < n; ++i) {
    StepTiming& t = done.steps[i];
    t.step = steps[i].step;
    t.send_peer = steps[i].send_bytes > 0 ? steps[i].send_peer : -1;
    t.recv_peer = steps[i].recv_bytes > 0 ? steps[i].recv_peer : -1;
    t.bytes_sent = int64_t(steps[i].send_bytes);
    t.bytes_ideal = steps[i].bytes_ideal;
    ideal += steps[i].bytes_ideal;
  }
  const int64_t sent0 = transport_->counters.bytes_sent, recv0 = transport_->counters.bytes_received;

  // Exchanges in flight before the local compute: k on the comm lane (every
  // receive slot, one group), one when host-driven (the host posts the next
  // while the lanes compute).
  const bool host = transport_->host_driven();
  const size_t ahead = host ? 1 : k_;
  auto has_back = [&](size_t i) { return steps[i].back_send_bytes > 0 || steps[i].back_recv_bytes > 0; };
  // The return of step i, once its compute is enqueued: the comm lane waits
  // for that compute (the block's writer), then the exchange is posted.
  auto post_back = [&](size_t i) -> Status {
    const BackFence fence(lanes_, i);
    if (lanes_->asynchronous()) RINGATTN_RETURN_IF_ERROR(fence.lane_wait());
    RINGATTN_RETURN_IF_ERROR(transport_->post(exchange(i, steps[i], &fence, 1)));
    return host ? Status::Ok() : lanes_->mark(Mark::back, i);
  };
  // ... and its completion: the compute lane waits for the returned block and
  // the work adds it in.
  auto finish_back = [&](size_t i) -> Status {
    const BackFence fence(lanes_, i);
    RINGATTN_RETURN_IF_ERROR(transport_->complete(exchange(i, steps[i], &fence, 1), opt_.timeout_s));
    if (host) RINGATTN_RETURN_IF_ERROR(lanes_->mark(Mark::back, i));
    RINGATTN_RETURN_IF_ERROR(lanes_->lane_wait(Lane::compute, Mark::back, i));
    return steps[i].back_recv_bytes > 0 ? work->returned(i, back_recv_slot(i)) : Status::Ok();
  };
  size_t started = 0, backs_posted = 0;
  // Lane-ordered transports: returns go on the comm lane after the last
  // forward exchange (ring.hpp), each as soon as its compute is enqueued.
  auto post_backs_upto = [&](size_t end) -> Status {
    for (; backs_posted < end; ++backs_posted)
      if (has_back(backs_posted)) RINGATTN_RETURN_IF_ERROR(post_back(backs_posted));
    return Status::Ok();
  };
  Status st = Status::Ok();
  if (host) {
    for (; started < std::min(ahead, n) && st.ok(); ++started) st = start(started, steps, work);
  } else if (n > 0) {
    started = std::min(ahead, n);
    st = start_group(0, started, steps, work);
  }
  if (st.ok()) st = lanes_->mark(Mark::c0, n);
  if (st.ok()) st = work->compute(RingWork::kLocal, nullptr, nullptr);
  if (st.ok()) st = lanes_->mark(Mark::c1, n);
  for (size_t i = 0; i < n && st.ok(); ++i) {
    if (host) {
      if (started < n) st = start(started++, steps, work);
      Fence fence(lanes_, i, k_);
      if (st.ok()) st = transport_->complete(exchange(i, steps[i], &fence), opt_.timeout_s);
      if (st.ok()) st = lanes_->mark(Mark::recv, i);
      if (!st.ok()) break;
    }
    st = lanes_->lane_wait(Lane::compute, Mark::recv, i);
    if (st.ok()) st = lanes_->mark(Mark::c0, i);
    if (st.ok() && steps[i].recv_bytes > 0)
      st = work->compute(i, recv_[i % k_], steps[i].back_send_bytes > 0 ? back_send_slot(i) : nullptr);
    if (st.ok()) st = lanes_->mark(Mark::c1, i);
    if (host) {
      if (st.ok() && has_back(i)) st = post_back(i);
      if (st.ok() && i > 0 && has_back(i - 1)) st = finish_back(i - 1);
    } else {
      if (st.ok() && started < n) st = start(started++, steps, work);
      if (st.ok() && started == n) st = post_backs_upto(i + 1);
    }
  }
  if (host) {
    if (st.ok() && n > 0 && has_back(n - 1)) st = finish_back(n - 1);
  } else {
    if (st.ok()) st = post_backs_upto(n);
    for (size_t i = 0; i < n && st.ok(); ++i)
      if (has_back(i)) st = finish_back(i);
  }
  if (st.ok()) st = work->epilogue();
  if (!st.ok()) {
    // This rank leaves the ring mid-run: its peers will time out, and the
    // transport may hold posted exchanges: abandon them.
    transport_->abort();
    return st;
  }
  RINGATTN_RETURN_IF_ERROR(lanes_->mark(Mark::end, 0));
  stats->last_bytes_sent = transport_->counters.bytes_sent - sent0;
  stats->last_bytes_received = transport_->counters.bytes_received - recv0;
  stats->last_bytes_ideal = ideal;
  done.active = true;
  done.stats = stats;
  if (host || !lanes_->asynchronous()) {
    // The host drove every exchange (or the lanes ran everything): only the
    // last computes may still be running; wait for them here.
    Status w = wait_complete(lanes_->current(), done);
    if (w.ok()) fill_timeline(lanes_->current(), done);
    return w;
  }
  // Nothing left for the host to drive: return with this run in flight, so
  // the host prepares the next one; the run before it must be complete first.
  Status prev = finish();
  pending_ = std::move(done);
  lanes_->swap_sets();
  return prev;
}

Status Ring::finish() {
  if (!pending_.active) return Status::Ok();
  Pending p = std::move(pending_);
  pending_ = Pending{};
  const int set = 1 - lanes_->current();
  Status w = wait_complete(set, p);
  if (w.ok()) fill_timeline(set, p);
  return w;
}

// Waits for mark `end`, watching the transport's asynchronous errors and the
// timeout; on failure names the first ring step whose block is missing.
Status Ring::wait_complete(int set, const Pending& p) {
  Backoff backoff(opt_.wait);
  for (;;) {
    bool yes = false;
    RINGATTN_RETURN_IF_ERROR(lanes_->reached(set, Mark::end, 0, &yes));
    if (yes) return Status::Ok();
    if (backoff.polls() % 64 == 0) {
      Status e = transport_->poll_error();
      if (!e.ok()) {
        transport_->abort();
        return e;
      }
    }
    if (backoff.waited_ms() > opt_.timeout_s * 1e3) {
      std::string where = "the attention passes";
      for (size_t i = 0; i < p.steps.size(); ++i) {
        bool arrived = true;
        if (lanes_->reached(set, Mark::recv, i, &arrived).ok() && !arrived) {
          const StepTiming& s = p.steps[i];
          where = "ring step " + std::to_string(s.step) +
                  (s.recv_peer < 0 ? " (sending to rank " + std::to_string(s.send_peer) + ")"
                                   : " waiting for rank " + std::to_string(s.recv_peer));
          break;
        }
      }
      // Every forward block came: a return (the backward's dK/dV) may be missing.
      for (size_t i = 0; i < p.steps.size() && where == "the attention passes"; ++i) {
        bool arrived = true;
        const StepTiming& s = p.steps[i];
        if (s.send_peer >= 0 && lanes_->reached(set, Mark::back, i, &arrived).ok() && !arrived)
          where = "the return of ring step " + std::to_string(s.step) + " (dK/dV) from rank " + std::to_string(s.send_peer);
      }
      transport_->abort();
      return Status(StatusCode::kTimeout, "no progress for " + std::to_string(int(opt_.timeout_s)) + " s at " + where +
                                              " (peer failed or hung; see its output)");
    }
    backoff.pause();
  }
}

// Timeline of a completed run from its marks: entry 0 is the local step.
void Ring::fill_timeline(int set, const Pending& p) const {
  const size_t n = p.steps.size();
  std::vector<StepTiming>& tl = p.stats->timeline;
  tl.assign(n + 1, StepTiming{});
  tl[0].compute_ms = lanes_->elapsed_ms(set, Mark::c0, n, Mark::c1, n);
  for (size_t i = 0; i < n; ++i) {
    StepTiming& t = tl[i + 1];
    t = p.steps[i];
    t.compute_ms = lanes_->elapsed_ms(set, Mark::c0, i, Mark::c1, i);
    t.transfer_ms = lanes_->elapsed_ms(set, Mark::t0, i, Mark::recv, i);
    // Exposed: the compute lane idled between the previous step's end and this one's start.
    t.exposed_ms = lanes_->elapsed_ms(set, Mark::c1, i == 0 ? n : i - 1, Mark::c0, i);
  }
}

}  // namespace ringattn

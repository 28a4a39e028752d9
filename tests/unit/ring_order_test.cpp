// The ring's order of exchanges on a lane-ordered transport (the nccl case,
// return channel included), without a GPU: P rings in P threads on host lanes
// over an in-process transport that behaves like NCCL's point-to-point.
// Messages between a pair are matched in posting order, whatever their
// channel, and a post returns only when its sends were taken and its
// receives arrived (an ncclGroupStart/End of a send and a receive). A rank
// whose order of posts differs from its peers' then deadlocks (the waits time
// out and the test fails) or receives a block of another step or channel (the
// receiver checks every message's tag and every block's contents).
#include <gtest/gtest.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "ring/lanes.hpp"
#include "ring/ring.hpp"
#include "transport/transport.hpp"

namespace ringattn {
namespace {

struct Msg {
  int channel, step, from;
  std::vector<char> bytes;
  bool taken = false;
};

// The pairs' FIFOs of every rank, shared by the threads.
struct Hub {
  std::mutex m;
  std::condition_variable cv;
  std::map<std::pair<int, int>, std::deque<std::shared_ptr<Msg>>> q;  // (from, to)
};

class LoopbackTransport final : public RingTransport {
 public:
  LoopbackTransport(Hub* hub, int rank) : hub_(hub), rank_(rank) {}
  const char* name() const override { return "loopback"; }
  bool host_driven() const override { return false; }

  Status post(const Exchange& x) override { return post_group({x}); }

  // A group (ncclGroupStart/End): every send of the group is pushed first,
  // then every receive is matched in order, then the sends must be taken.
  Status post_group(const std::vector<Exchange>& xs) override {
    using namespace std::chrono_literals;
    std::unique_lock<std::mutex> lock(hub_->m);
    groups += xs.size() > 1;
    std::vector<std::shared_ptr<Msg>> sent;
    for (const Exchange& x : xs) {
      if (x.dst < 0) continue;
      sent.push_back(std::make_shared<Msg>(Msg{x.channel, x.step, rank_, {}}));
      const size_t half = x.send_bytes / 2;
      sent.back()->bytes.resize(x.send_bytes);
      std::memcpy(sent.back()->bytes.data(), x.send, half);
      std::memcpy(sent.back()->bytes.data() + half, x.send_v, half);
      hub_->q[{rank_, x.dst}].push_back(sent.back());
      hub_->cv.notify_all();
      counters.bytes_sent += int64_t(x.send_bytes);
    }
    for (const Exchange& x : xs) {
      const std::string where = "rank " + std::to_string(rank_) + " channel " + std::to_string(x.channel) + " step " +
                                std::to_string(x.step);
      if (x.src < 0) continue;
      auto& fifo = hub_->q[{x.src, rank_}];
      if (!hub_->cv.wait_for(lock, 2s, [&] { return !fifo.empty(); }))
        return Status(StatusCode::kTimeout, where + ": nothing from rank " + std::to_string(x.src) + " (deadlock)");
      std::shared_ptr<Msg> got = fifo.front();
      fifo.pop_front();
      if (got->channel != x.channel || got->step != x.step || got->bytes.size() != x.recv_bytes)
        return Status(StatusCode::kInternal, where + ": matched rank " + std::to_string(x.src) + "'s channel " +
                                                 std::to_string(got->channel) + " step " + std::to_string(got->step) +
                                                 " (" + std::to_string(got->bytes.size()) + " bytes)");
      std::memcpy(x.recv, got->bytes.data(), got->bytes.size());
      got->taken = true;
      hub_->cv.notify_all();
      counters.bytes_received += int64_t(x.recv_bytes);
    }
    for (const std::shared_ptr<Msg>& m : sent)
      if (!hub_->cv.wait_for(lock, 2s, [&] { return m->taken; }))
        return Status(StatusCode::kTimeout, "rank " + std::to_string(rank_) + " step " + std::to_string(m->step) +
                                                ": its block was never taken (deadlock)");
    return Status::Ok();
  }
  int groups = 0;  // posts of more than one exchange

  Status complete(const Exchange&, double) override { return Status::Ok(); }

 private:
  Hub* hub_;
  int rank_;
};

// Every block is stamped: 8-byte cells (tag, owner rank, step) all the way.
void stamp(void* p, size_t bytes, char tag, int rank, int step) {
  char* c = static_cast<char*>(p);
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    c[i] = tag;
    std::memcpy(c + i + 1, &rank, 4);
    c[i + 5] = char(step);
    c[i + 6] = c[i + 7] = 0;
  }
}
bool stamped(const void* p, size_t bytes, char tag, int rank, int step) {
  std::vector<char> want(bytes);
  stamp(want.data(), bytes, tag, rank, step);
  return std::memcmp(p, want.data(), bytes) == 0;
}

// Checks what arrives: the forward blocks from the receive peer, the returns
// from the send peer, each of its step; returns are stamped with the rank
// that computed them.
class StampWork final : public RingWork {
 public:
  StampWork(int rank, const std::vector<RingStep>& steps) : rank_(rank), steps_(steps) {}
  Status pack(size_t i, void* slot, const void* block[2]) override {
    stamp(slot, steps_[i].send_bytes, 'F', rank_, steps_[i].step);
    (void)block;  // the halves point into the slot already
    return Status::Ok();
  }
  Status compute(size_t i, const void* recv, void* back) override {
    if (i == kLocal) return Status::Ok();
    const RingStep& s = steps_[i];
    if (!stamped(recv, s.recv_bytes, 'F', s.recv_peer, s.step)) return bad("forward block", i);
    if (back) stamp(back, s.back_send_bytes, 'B', rank_, s.step);
    ++computed;
    return Status::Ok();
  }
  Status returned(size_t i, const void* block) override {
    const RingStep& s = steps_[i];
    if (!stamped(block, s.back_recv_bytes, 'B', s.send_peer, s.step)) return bad("returned block", i);
    ++returns;
    return Status::Ok();
  }
  int computed = 0, returns = 0;

 private:
  Status bad(const char* what, size_t i) const {
    return Status(StatusCode::kInternal, "rank " + std::to_string(rank_) + ": wrong " + what + " at step " +
                                             std::to_string(steps_[i].step));
  }
  int rank_;
  const std::vector<RingStep>& steps_;
};

// Which ranks send at which ring distance: traffic[p][d] = rank p sends to
// p+d at step d. causal: only without wrapping (p + d < P); random: any subset,
// so ranks skip different steps and a pair may exchange forward blocks in one
// direction and returns in the other at distances d and P - d.
using Traffic = std::vector<std::vector<bool>>;
Traffic causal_traffic(int world) {
  Traffic t(size_t(world), std::vector<bool>(size_t(world), false));
  for (int p = 0; p < world; ++p)
    for (int d = 1; d < world; ++d) t[size_t(p)][size_t(d)] = p + d < world;
  return t;
}
Traffic random_traffic(int world, unsigned seed) {
  Traffic t(size_t(world), std::vector<bool>(size_t(world), false));
  for (int p = 0; p < world; ++p)
    for (int d = 1; d < world; ++d) {
      seed = seed * 1103515245u + 12345u;
      t[size_t(p)][size_t(d)] = (seed >> 16) % 3 != 0;
    }
  return t;
}

// Rank `rank`'s ring steps for `traffic`; returns go back for what was
// received. Sizes differ per step and channel (float32 returns are twice
// the 16-bit blocks).
std::vector<RingStep> traffic_steps(int rank, int world, const Traffic& traffic) {
  std::vector<RingStep> steps;
  for (int d = 1; d < world; ++d) {
    RingStep s;
    s.step = d;
    s.send_peer = (rank + d) % world;
    s.recv_peer = (rank - d + world) % world;
    const bool sends = traffic[size_t(rank)][size_t(d)], receives = traffic[size_t(s.recv_peer)][size_t(d)];
    if (!sends && !receives) continue;  // as the planner: a step with no traffic is skipped
    s.send_bytes = sends ? size_t(64 * d) : 0;
    s.recv_bytes = receives ? size_t(64 * d) : 0;
    s.back_send_bytes = 2 * s.recv_bytes;
    s.back_recv_bytes = 2 * s.send_bytes;
    s.bytes_ideal = int64_t(s.send_bytes + s.back_send_bytes);
    steps.push_back(s);
  }
  return steps;
}

// slots: RingOptions::slots (0: auto, here every step's: one group before the local step).
void run_world(int world, int runs, const Traffic& traffic, size_t slots = 0) {
  Hub hub;
  const size_t n = static_cast<size_t>(world);
  std::vector<std::string> errors(n);
  std::vector<int> computed(n, 0), returns(n, 0), groups(n, 0);
  std::vector<std::thread> threads;
  for (int r = 0; r < world; ++r)
    threads.emplace_back([&, r] {
      LoopbackTransport t(&hub, r);
      std::unique_ptr<Lanes> lanes = make_host_lanes();
      RingOptions ro{r, 10, WaitPolicy::sleep};
      ro.slots = slots;
      Ring ring(ro, &t, lanes.get());
      const std::vector<RingStep> steps = traffic_steps(r, world, traffic);
      for (int k = 0; k < runs; ++k) {
        StampWork w(r, steps);
        Stats stats;
        Status st = ring.run(steps, &w, nullptr, &stats);
        if (!st.ok()) {
          errors[size_t(r)] = st.to_string();
          return;
        }
        computed[size_t(r)] += w.computed;
        returns[size_t(r)] += w.returns;
      }
      groups[size_t(r)] = t.groups;
    });
  for (std::thread& th : threads) th.join();
  for (int r = 0; r < world; ++r) {
    EXPECT_EQ(errors[size_t(r)], "") << "rank " << r;
    int recv_steps = 0, send_steps = 0;
    for (const RingStep& s : traffic_steps(r, world, traffic)) {
      recv_steps += s.recv_bytes > 0;
      send_steps += s.send_bytes > 0;
    }
    EXPECT_EQ(computed[size_t(r)], runs * recv_steps) << "rank " << r;
    EXPECT_EQ(returns[size_t(r)], runs * send_steps) << "rank " << r;
    // Auto slots post a run's steps in one group; 2 slots group the first two.
    const size_t nsteps = traffic_steps(r, world, traffic).size();
    if (nsteps >= 2) {
      EXPECT_EQ(groups[size_t(r)], runs) << "rank " << r;
    }
  }
}

TEST(RingOrder, LaneOrderedReturnsMatchEveryBlockOnEveryRank) {
  for (int world : {2, 3, 4, 5, 8})
    for (size_t slots : {size_t(0), size_t(2), size_t(3)}) {
      SCOPED_TRACE("causal, world " + std::to_string(world) + ", slots " + std::to_string(slots));
      run_world(world, 2, causal_traffic(world), slots);
    }
  // Returns posted interleaved with the forward exchanges (after each compute,
  // before the next forward post) fail this on some of these patterns: a
  // pair's FIFO then matches a return against a forward block.
  for (int world : {3, 4, 5, 6})
    for (unsigned seed = 1; seed <= 40; ++seed) {
      SCOPED_TRACE("random traffic, world " + std::to_string(world) + ", seed " + std::to_string(seed));
      run_world(world, 2, random_traffic(world, seed), seed % 3 == 0 ? 2 : 0);
      if (::testing::Test::HasFailure()) return;
    }
}

}  // namespace
}  // namespace ringattn

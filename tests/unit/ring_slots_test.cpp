// The ring's slots (Ring::reserve) on a lane-ordered transport, one rank
// sending to itself over host lanes that count live bytes and can fail an
// allocation: the slot budget holds when the shape changes, and a failed
// reservation leaves no half-made slot behind (the next run works).
#include <gtest/gtest.h>

#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <memory>
#include <vector>

#include "ring/lanes.hpp"
#include "ring/ring.hpp"
#include "transport/transport.hpp"

namespace ringattn {
namespace {

class CountingLanes final : public Lanes {
 public:
  size_t live = 0, peak = 0;
  int allocs = 0, fail_at = -1;  // fail_at: the allocation (0-based) that fails
  bool asynchronous() const override { return h_->asynchronous(); }
  Status begin(size_t s, void* st) override { return h_->begin(s, st); }
  Status mark(Mark m, size_t i) override { return h_->mark(m, i); }
  Status lane_wait(Lane w, Mark m, size_t i) override { return h_->lane_wait(w, m, i); }
  Status host_wait(Mark m, size_t i) override { return h_->host_wait(m, i); }
  Status reached(int s, Mark m, size_t i, bool* y) const override { return h_->reached(s, m, i, y); }
  double elapsed_ms(int s, Mark a, size_t i, Mark b, size_t j) const override { return h_->elapsed_ms(s, a, i, b, j); }
  int current() const override { return h_->current(); }
  void swap_sets() override { h_->swap_sets(); }
  void* comm_stream() const override { return nullptr; }
  Status alloc(size_t b, void** p) override {
    if (allocs++ == fail_at) return Status(StatusCode::kDeviceError, "injected allocation failure");
    RINGATTN_RETURN_IF_ERROR(h_->alloc(b, p));
    sizes_[*p] = b;
    live += b;
    peak = std::max(peak, live);
    return Status::Ok();
  }
  void free(void* p) override {
    live -= sizes_[p];
    sizes_.erase(p);
    h_->free(p);
  }

 private:
  std::unique_ptr<Lanes> h_ = make_host_lanes();
  std::map<void*, size_t> sizes_;
};

// Lane-ordered, to itself: the block arrives in the receive slot as sent.
class SelfTransport final : public RingTransport {
 public:
  const char* name() const override { return "self"; }
  bool host_driven() const override { return false; }
  Status post(const Exchange& x) override {
    const size_t h = x.send_bytes / 2;
    std::memcpy(x.recv, x.send, h);
    std::memcpy(static_cast<char*>(x.recv) + h, x.send_v, h);
    return Status::Ok();
  }
  Status complete(const Exchange&, double) override { return Status::Ok(); }
};

// Stamps each block with its step and checks it arrived.
class CheckWork final : public RingWork {
 public:
  explicit CheckWork(const std::vector<RingStep>& s) : steps_(s) {}
  Status pack(size_t i, void* slot, const void* block[2]) override {
    std::memset(slot, int(i + 1), steps_[i].send_bytes);
    (void)block;
    return Status::Ok();
  }
  Status compute(size_t i, const void* recv, void*) override {
    if (i == kLocal) return Status::Ok();
    const unsigned char* b = static_cast<const unsigned char*>(recv);
    for (size_t j = 0; j < steps_[i].recv_bytes; ++j)
      if (b[j] != (unsigned char)(i + 1)) return Status(StatusCode::kInternal, "step " + std::to_string(i) + ": wrong block");
    ++computed;
    return Status::Ok();
  }
  int computed = 0;

 private:
  const std::vector<RingStep>& steps_;
};

std::vector<RingStep> self_steps(size_t n, size_t bytes) {
  std::vector<RingStep> s(n);
  for (size_t i = 0; i < n; ++i) {
    s[i].step = int(i + 1);
    s[i].send_peer = s[i].recv_peer = 0;
    s[i].send_bytes = s[i].recv_bytes = bytes;
  }
  return s;
}

Status run(Ring& ring, size_t n, size_t bytes, int* computed) {
  const std::vector<RingStep> s = self_steps(n, bytes);
  CheckWork w(s);
  Stats stats;
  Status st = ring.run(s, &w, nullptr, &stats);
  *computed = w.computed;
  return st;
}

TEST(RingSlots, BudgetHoldsWhenTheShapeChanges) {
  CountingLanes lanes;
  SelfTransport t;
  RingOptions o;
  o.slot_budget = size_t(1) << 20;
  Ring ring(o, &t, &lanes);
  int c = 0;
  // Long blocks (two slots of 256 KiB each way fit 1 MiB), short ones (64 of
  // 1 KiB), long again: live slot bytes never exceed the budget.
  for (auto [n, bytes] : {std::pair<size_t, size_t>{3, 256 << 10}, {64, 1 << 10}, {3, 256 << 10}, {64, 1 << 10}}) {
    ASSERT_TRUE(run(ring, n, bytes, &c).ok());
    EXPECT_EQ(c, int(n));
    EXPECT_LE(lanes.live, o.slot_budget) << n << " steps of " << bytes << " bytes";
  }
  EXPECT_LE(lanes.peak, o.slot_budget);
}

TEST(RingSlots, AFailedReservationLeavesNothingHalfMade) {
  for (int fail_at = 0; fail_at < 8; ++fail_at) {
    SCOPED_TRACE("allocation " + std::to_string(fail_at) + " fails");
    CountingLanes lanes;
    SelfTransport t;
    RingOptions o;
    o.slots = 4;
    Ring ring(o, &t, &lanes);
    lanes.fail_at = fail_at;
    int c = 0;
    const Status first = run(ring, 4, 4096, &c);
    EXPECT_EQ(first.code(), StatusCode::kDeviceError) << first.to_string();
    EXPECT_EQ(lanes.live, 0u);  // nothing kept
    lanes.fail_at = -1;
    const Status again = run(ring, 4, 4096, &c);
    ASSERT_TRUE(again.ok()) << again.to_string();
    EXPECT_EQ(c, 4);
  }
}

// RINGATTN_RING_SLOTS: auto (or unset) -> 0, an integer >= 2 -> that many,
// anything else an error naming the value and what is allowed.
TEST(RingSlots, EnvironmentValue) {
  const char* saved = std::getenv("RINGATTN_RING_SLOTS");
  const std::string keep = saved ? saved : "";
  size_t k = 99;
  unsetenv("RINGATTN_RING_SLOTS");
  ASSERT_TRUE(ring_slots_from_env(&k).ok());
  EXPECT_EQ(k, 0u);
  for (auto [text, want] : {std::pair<const char*, size_t>{"auto", 0}, {"2", 2}, {"7", 7}}) {
    setenv("RINGATTN_RING_SLOTS", text, 1);
    k = 99;
    ASSERT_TRUE(ring_slots_from_env(&k).ok()) << text;
    EXPECT_EQ(k, want) << text;
  }
  for (const char* bad : {"1", "0", "-3", "two", "4x"}) {
    setenv("RINGATTN_RING_SLOTS", bad, 1);
    const Status st = ring_slots_from_env(&k);
    EXPECT_EQ(st.code(), StatusCode::kInvalidArgument) << bad;
    EXPECT_NE(st.message().find(std::string("RINGATTN_RING_SLOTS='") + bad + "'"), std::string::npos) << st.message();
    EXPECT_NE(st.message().find("allowed: auto, or an integer >= 2"), std::string::npos) << st.message();
  }
  if (saved) setenv("RINGATTN_RING_SLOTS", keep.c_str(), 1);
  else unsetenv("RINGATTN_RING_SLOTS");
}

}  // namespace
}  // namespace ringattn

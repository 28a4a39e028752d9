// Host lanes (the cpu backend): both lanes are the calling thread, so work is
// done when it returns, waits are no-ops and a mark is a time stamp.
#include <chrono>
#include <cstdlib>
#include <new>
#include <vector>

#include "ring/lanes.hpp"

namespace ringattn {
namespace {

using Clock = std::chrono::steady_clock;

class HostLanes final : public Lanes {
 public:
  bool asynchronous() const override { return false; }
  Status begin(size_t steps, void*) override {
    for (auto* v : {&t0_, &recv_, &c0_, &c1_, &back_}) v->assign(steps + 1, Clock::time_point{});
    return mark(Mark::in, 0);
  }
  Status mark(Mark m, size_t i) override {
    const auto now = Clock::now();
    if (m == Mark::in) in_ = now;
    else if (m == Mark::end) end_ = now;
    else (*slot(m))[i] = now;
    return Status::Ok();
  }
  Status lane_wait(Lane, Mark, size_t) override { return Status::Ok(); }
  Status host_wait(Mark, size_t) override { return Status::Ok(); }
  Status reached(int, Mark, size_t, bool* yes) const override {
    *yes = true;
    return Status::Ok();
  }
  double elapsed_ms(int, Mark a, size_t i, Mark b, size_t j) const override {
    return std::chrono::duration<double, std::milli>(at(b, j) - at(a, i)).count();
  }
  int current() const override { return 0; }
  void swap_sets() override {}
  void* comm_stream() const override { return nullptr; }
  Status alloc(size_t bytes, void** p) override {
    *p = std::malloc(bytes > 0 ? bytes : 1);
    if (*p == nullptr)
      return Status(StatusCode::kInternal, "host lanes: out of memory allocating " + std::to_string(bytes) + " bytes");
    return Status::Ok();
  }
  void free(void* p) override { std::free(p); }

 private:
  std::vector<Clock::time_point>* slot(Mark m) {
    return m == Mark::t0 ? &t0_ : m == Mark::recv ? &recv_ : m == Mark::c0 ? &c0_ : m == Mark::back ? &back_ : &c1_;
  }
  Clock::time_point at(Mark m, size_t i) const {
    if (m == Mark::in) return in_;
    if (m == Mark::end) return end_;
    return (m == Mark::t0 ? t0_ : m == Mark::recv ? recv_ : m == Mark::c0 ? c0_ : m == Mark::back ? back_ : c1_)[i];
  }
  Clock::time_point in_, end_;
  std::vector<Clock::time_point> t0_, recv_, c0_, c1_, back_;
};

}  // namespace

std::unique_ptr<Lanes> make_host_lanes() { return std::make_unique<HostLanes>(); }

}  // namespace ringattn

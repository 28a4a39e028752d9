// How a host thread waits for the device or the network.
//
// Whoever waits for a forward (synchronize(), the next forward, the host-driven
// mpi ring) watches NCCL's asynchronous errors and the timeouts, and what the
// caller does next starts only when the wait returns: every microsecond between
// completion and the waiter noticing it can be idle device time. A sleep of
// 20 us lasts 60-80 us on Linux (timer slack), which is 2-5% of a 1.5 ms
// forward and was the largest source of step-to-step spread on the GPU
// (bench/results/RESULTS.md, issue 6).
//
// `spin` (the GPU backend's default unless a host runs more ranks than it has
// cores, like CUDA's own cudaDeviceScheduleAuto): busy-poll for the first `spin_ms`
// (no sched_yield: a yield to another runnable thread can cost a whole time
// slice), then sleep at most 1/1000 of the time waited so far, so the added
// latency stays under ~0.1% of any wait. `sleep` (the CPU backend, whose
// ranks share cores with the computing ones): a short spin, then 50 us sleeps.
// RINGATTN_HOST_WAIT=spin|sleep overrides either (for measurements).
#pragma once
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include "ringattn/status.hpp"

namespace ringattn {

enum class WaitPolicy { spin, sleep };

// RINGATTN_HOST_WAIT, or `fallback` when it is unset. A value that is not
// allowed is an error (Context::create agrees it across ranks before any data
// moves); its callers after that point ignore the status.
inline Status parse_wait_env(WaitPolicy fallback, WaitPolicy* out) {
  *out = fallback;
  const char* s = std::getenv("RINGATTN_HOST_WAIT");
  if (s == nullptr || *s == '\0') return Status::Ok();
  if (std::strcmp(s, "spin") == 0) *out = WaitPolicy::spin;
  else if (std::strcmp(s, "sleep") == 0) *out = WaitPolicy::sleep;
  else return InvalidArgument(std::string("RINGATTN_HOST_WAIT='") + s + "' (allowed: spin, sleep, or unset)");
  return Status::Ok();
}

inline WaitPolicy wait_policy_from_env(WaitPolicy fallback) {
  WaitPolicy p;
  (void)parse_wait_env(fallback, &p);
  return p;
}

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  asm volatile("yield" ::: "memory");
#endif
}

class Backoff {
 public:
  using Clock = std::chrono::steady_clock;
  explicit Backoff(WaitPolicy p, double spin_ms = 50.0) : policy_(p), spin_ms_(spin_ms), t0_(Clock::now()) {}

  // Milliseconds since construction.
  double waited_ms() const { return std::chrono::duration<double, std::milli>(Clock::now() - t0_).count(); }

  // One pause between two polls.
  void pause() {
    ++polls_;
    if (policy_ == WaitPolicy::sleep) {
      if (polls_ > 1000) std::this_thread::sleep_for(std::chrono::microseconds(50));
      return;
    }
    const double w = waited_ms();
    if (w < spin_ms_) {
      cpu_relax();
      return;
    }
    const double us = std::min(1000.0, w);  // w ms / 1000, in us
    std::this_thread::sleep_for(std::chrono::microseconds(static_cast<int64_t>(us)));
  }

  int64_t polls() const { return polls_; }

 private:
  WaitPolicy policy_;
  double spin_ms_;
  Clock::time_point t0_;
  int64_t polls_ = 0;
};

}  // namespace ringattn

// Backend-neutral buffers and timers, so front ends (the CLI, examples,
// tests) need no CUDA headers: with Backend::cpu these are host memory and a
// host clock; with Backend::cuda, device memory and CUDA events.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ringattn/config.hpp"
#include "ringattn/status.hpp"

namespace ringattn::dev {

// Number of visible CUDA devices (0 without a GPU or without the CUDA build).
int device_count();
// Picks the device of this local rank (local_rank mod device_count()).
Status select_device(int local_rank);
// Name of the current device, or "cpu".
const char* device_name(Backend b);

Status alloc(Backend b, size_t bytes, void** out);
void release(Backend b, void* p);
Status upload(Backend b, void* dst, const void* host_src, size_t bytes);
Status download(Backend b, void* host_dst, const void* src, size_t bytes);
// Fills with 0xff bytes (NaN for every float type): poisons outputs. On cuda,
// ordered on the default stream, without a host wait.
Status poison(Backend b, void* p, size_t bytes);
Status synchronize(Backend b);
// Deterministic inputs (front ends, benchmarks, tests): rows [row0, row0 +
// rows) of every batch element of the batch x seq x heads x head_dim tensor
// number `tensor` (1 q, 2 k, 3 v, 4 dout), uniform in [-amplitude,
// amplitude) as a function of (seed, tensor, global index), rounded to
// `dtype`, written to `dst` (batch x rows x heads x head_dim). The same bits
// on both backends; on cuda made on the GPU (default stream, no host wait),
// so a shard of millions of tokens takes milliseconds.
Status fill_synthetic(Backend b, DType dtype, uint64_t seed, int tensor, double amplitude, int64_t batch,
                      int64_t seq, int64_t row0, int64_t rows, int64_t heads, int64_t head_dim, void* dst);
// Bytes of device memory in use now and the most seen by peak_sample().
int64_t device_bytes_in_use(Backend b);
void peak_sample(Backend b);
int64_t device_bytes_peak(Backend b);
void peak_reset(Backend b);

// Elapsed time of device work between start() and stop() (host clock on cpu).
class Timer {
 public:
  explicit Timer(Backend b);
  ~Timer();
  Status start(void* stream = nullptr);
  Status stop(double* ms, void* stream = nullptr);

 private:
  Backend b_;
  void* ev_[2] = {nullptr, nullptr};
  double t0_ = 0;
};

// Time stamps put on a stream without waiting, read afterwards: for timing
// a loop whose host runs ahead of the device (a training loop) step by step.
// elapsed_ms(i, j) waits for mark j (call Context::synchronize() first when a
// forward may be in flight). On cpu, marks are host clock readings.
class Marks {
 public:
  explicit Marks(Backend b) : b_(b) {}
  ~Marks();
  Marks(const Marks&) = delete;
  Marks& operator=(const Marks&) = delete;
  Status mark(void* stream = nullptr);
  Status elapsed_ms(size_t i, size_t j, double* ms) const;
  size_t size() const { return b_ == Backend::cpu ? t_.size() : ev_.size(); }

 private:
  Backend b_;
  std::vector<void*> ev_;  // cuda: one event per mark
  std::vector<double> t_;  // cpu: one host clock reading per mark
};

}  // namespace ringattn::dev

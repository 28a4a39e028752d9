// Buffers of the training example in the backend's memory: host memory on
// the cpu backend, device memory on cuda, through ringattn::dev (no CUDA
// header here). The model and the trainer hold every activation, weight,
// gradient and optimizer moment in these; only checkpoints, the gradient
// all-reduce (staged through the host on cuda) and the few numbers a step
// reports cross to the host.
#pragma once
#include <cstddef>
#include <utility>

#include "ringattn/config.hpp"
#include "ringattn/device.hpp"
#include "ringattn/status.hpp"

namespace train {

template <class T>
class Buf {
 public:
  Buf() = default;
  ~Buf() { reset(); }
  Buf(const Buf&) = delete;
  Buf& operator=(const Buf&) = delete;
  Buf(Buf&& o) noexcept { *this = std::move(o); }
  Buf& operator=(Buf&& o) noexcept {
    if (this != &o) {
      reset();
      std::swap(b_, o.b_);
      std::swap(p_, o.p_);
      std::swap(n_, o.n_);
      std::swap(cap_, o.cap_);
    }
    return *this;
  }

  // n elements on backend b, contents undefined (the caller writes or zeroes
  // them). Reallocates only when n exceeds what is held.
  ringattn::Status resize(ringattn::Backend b, size_t n) {
    if (p_ && b == b_ && n <= cap_) {
      n_ = n;
      return ringattn::Status::Ok();
    }
    reset();
    void* p = nullptr;
    RINGATTN_RETURN_IF_ERROR(ringattn::dev::alloc(b, n * sizeof(T), &p));
    b_ = b, p_ = static_cast<T*>(p), n_ = n, cap_ = n;
    return ringattn::Status::Ok();
  }
  void reset() {
    if (p_) ringattn::dev::release(b_, p_);
    p_ = nullptr, n_ = 0, cap_ = 0;
  }

  // Host <-> this buffer, count elements from element `at` (synchronous).
  ringattn::Status upload(const T* host, size_t count, size_t at = 0) {
    if (count == 0) return ringattn::Status::Ok();
    return ringattn::dev::upload(b_, p_ + at, host, count * sizeof(T));
  }
  ringattn::Status download(T* host, size_t count, size_t at = 0) const {
    if (count == 0) return ringattn::Status::Ok();
    return ringattn::dev::download(b_, host, p_ + at, count * sizeof(T));
  }

  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  ringattn::Backend backend() const { return b_; }

 private:
  ringattn::Backend b_ = ringattn::Backend::cpu;
  T* p_ = nullptr;
  size_t n_ = 0, cap_ = 0;
};

}  // namespace train

// Host side of ringattn::dev, used by the cpu backend in every build and by
// the cuda backend's stubs when CUDA is not compiled in.
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "device/device_impl.hpp"
#include "kernels/common/convert.hpp"
#include "kernels/cpu/synth.hpp"
#include "ringattn/device.hpp"

namespace ringattn::dev {

static double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

Status alloc(Backend b, size_t bytes, void** out) {
  if (b == Backend::cuda) return cuda_alloc(bytes, out);
  *out = std::malloc(bytes ? bytes : 1);
  if (*out == nullptr) return Status(StatusCode::kInternal, "host allocation of " + std::to_string(bytes) + " bytes failed");
  return Status::Ok();
}
void release(Backend b, void* p) {
  if (b == Backend::cuda) return cuda_release(p);
  std::free(p);
}
Status upload(Backend b, void* dst, const void* src, size_t n) {
  if (b == Backend::cuda) return cuda_copy(dst, src, n, true);
  std::memcpy(dst, src, n);
  return Status::Ok();
}
Status download(Backend b, void* dst, const void* src, size_t n) {
  if (b == Backend::cuda) return cuda_copy(dst, src, n, false);
  std::memcpy(dst, src, n);
  return Status::Ok();
}
Status poison(Backend b, void* p, size_t n) {
  if (b == Backend::cuda) return cuda_poison(p, n);
  std::memset(p, 0xff, n);
  return Status::Ok();
}
Status fill_synthetic(Backend b, DType dtype, uint64_t seed, int tensor, double amplitude, int64_t batch,
                      int64_t seq, int64_t row0, int64_t rows, int64_t heads, int64_t head_dim, void* dst) {
  if (batch < 1 || rows < 0 || row0 < 0 || row0 + rows > seq || heads < 1 || head_dim < 1 || tensor < 1 || tensor > 4)
    return InvalidArgument("fill_synthetic: rows [" + std::to_string(row0) + ", " + std::to_string(row0 + rows) +
                           ") of a sequence of " + std::to_string(seq) + ", tensor " + std::to_string(tensor) +
                           " (allowed 1-4)");
  if (b == Backend::cuda)
    return cuda_fill_synthetic(int(dtype), seed, tensor, amplitude, batch, seq, row0, rows, heads, head_dim, dst);
  const int64_t hd = heads * head_dim;
  std::vector<float> row(static_cast<size_t>(hd));
  char* out = static_cast<char*>(dst);
  const size_t row_bytes = size_t(hd) * dtype_size(dtype);
  for (int64_t bi = 0; bi < batch; ++bi)
    for (int64_t t = row0; t < row0 + rows; ++t) {
      for (int64_t e = 0; e < hd; ++e)
        row[size_t(e)] = float(kern::synth_value(seed, kern::SynthTensor(tensor), uint64_t((bi * seq + t) * hd + e), amplitude));
      kern::from_float(kern::ElemKind(int(dtype)), row.data(), size_t(hd), out);
      out += row_bytes;
    }
  return Status::Ok();
}

Status synchronize(Backend b) { return b == Backend::cuda ? cuda_synchronize() : Status::Ok(); }
int64_t device_bytes_in_use(Backend b) { return b == Backend::cuda ? cuda_bytes_in_use() : 0; }
static int64_t g_peak = 0;
void peak_sample(Backend b) {
  int64_t u = device_bytes_in_use(b);
  if (u > g_peak) g_peak = u;
}
int64_t device_bytes_peak(Backend) { return g_peak; }
void peak_reset(Backend b) { g_peak = device_bytes_in_use(b); }

const char* device_name(Backend b) { return b == Backend::cuda ? cuda_device_name() : "cpu"; }

Timer::Timer(Backend b) : b_(b) {
  if (b_ == Backend::cuda) cuda_events_create(ev_);
}
Timer::~Timer() {
  if (b_ == Backend::cuda) cuda_events_destroy(ev_);
}
Status Timer::start(void* stream) {
  if (b_ == Backend::cuda) return cuda_event_record(ev_[0], stream);
  t0_ = now_ms();
  return Status::Ok();
}
Status Timer::stop(double* ms, void* stream) {
  if (b_ == Backend::cuda) return cuda_event_elapsed(ev_, stream, ms);
  *ms = now_ms() - t0_;
  return Status::Ok();
}

Marks::~Marks() {
  for (void* e : ev_) cuda_event_free(e);
}
Status Marks::mark(void* stream) {
  if (b_ == Backend::cpu) {
    t_.push_back(now_ms());
    return Status::Ok();
  }
  void* e = cuda_event_new();
  if (e == nullptr) return Status(StatusCode::kDeviceError, "Marks: cudaEventCreate failed");
  ev_.push_back(e);
  return cuda_event_record(e, stream);
}
Status Marks::elapsed_ms(size_t i, size_t j, double* ms) const {
  if (i >= size() || j >= size())
    return InvalidArgument("Marks::elapsed_ms(" + std::to_string(i) + ", " + std::to_string(j) + "): only " +
                           std::to_string(size()) + " marks");
  if (b_ == Backend::cpu) {
    *ms = t_[j] - t_[i];
    return Status::Ok();
  }
  return cuda_event_between(ev_[i], ev_[j], ms);
}

}  // namespace ringattn::dev

// Built when the CUDA backend is not compiled in: every CUDA entry point
// reports that, naming what is allowed instead.
#include "device/device_impl.hpp"
#include "cache/device_tier.hpp"
#include "backend/executor.hpp"
#include "ringattn/device.hpp"

namespace ringattn {

static Status no_cuda() {
  return Unsupported("backend 'cuda' is not compiled into this build (configure with the 'gpu' or 'ci' preset on a "
                     "machine with the CUDA toolkit; allowed here: cpu)");
}

bool cuda_backend_compiled() { return false; }
Status make_cuda_executor(const Config&, MPI_Comm, std::unique_ptr<Executor>*) { return no_cuda(); }
Status make_cuda_device_tier(std::unique_ptr<DeviceTier>*) { return no_cuda(); }

namespace dev {
int device_count() { return 0; }
Status select_device(int) { return Status::Ok(); }
Status cuda_alloc(size_t, void**) { return no_cuda(); }
void cuda_release(void*) {}
Status cuda_copy(void*, const void*, size_t, bool) { return no_cuda(); }
Status cuda_poison(void*, size_t) { return no_cuda(); }
Status cuda_synchronize() { return no_cuda(); }
Status cuda_fill_synthetic(int, uint64_t, int, double, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, void*) {
  return no_cuda();
}
int64_t cuda_bytes_in_use() { return 0; }
const char* cuda_device_name() { return "none"; }
void cuda_events_create(void**) {}
void cuda_events_destroy(void**) {}
Status cuda_event_record(void*, void*) { return no_cuda(); }
Status cuda_event_elapsed(void**, void*, double*) { return no_cuda(); }
void* cuda_event_new() { return nullptr; }
void cuda_event_free(void*) {}
Status cuda_event_between(void*, void*, double*) { return no_cuda(); }
}  // namespace dev

}  // namespace ringattn

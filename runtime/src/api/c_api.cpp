#include "ringattn/ringattn.h"

#include <cstddef>
#include <string>

#include "ringattn/ringattn.hpp"

// The C header's codes are the C++ StatusCode values (returned as int(code)).
#define RINGATTN_SAME_CODE(c_name, cxx_name) \
  static_assert(int(c_name) == int(ringattn::StatusCode::cxx_name), #c_name " != StatusCode::" #cxx_name)
RINGATTN_SAME_CODE(RINGATTN_STATUS_OK, kOk);
RINGATTN_SAME_CODE(RINGATTN_STATUS_INVALID_ARGUMENT, kInvalidArgument);
RINGATTN_SAME_CODE(RINGATTN_STATUS_MISMATCH, kMismatch);
RINGATTN_SAME_CODE(RINGATTN_STATUS_UNSUPPORTED, kUnsupported);
RINGATTN_SAME_CODE(RINGATTN_STATUS_COMM_ERROR, kCommError);
RINGATTN_SAME_CODE(RINGATTN_STATUS_DEVICE_ERROR, kDeviceError);
RINGATTN_SAME_CODE(RINGATTN_STATUS_TIMEOUT, kTimeout);
RINGATTN_SAME_CODE(RINGATTN_STATUS_IO_ERROR, kIoError);
RINGATTN_SAME_CODE(RINGATTN_STATUS_INTERNAL, kInternal);
RINGATTN_SAME_CODE(RINGATTN_STATUS_PEER_ERROR, kPeerError);
#undef RINGATTN_SAME_CODE

struct ringattn_context {
  std::unique_ptr<ringattn::Context> ctx;
};

namespace {
thread_local std::string g_last_error;
// sizeof(ringattn_config_t) before `deterministic` was added (the field starts
// where that struct ended: it ended with a double).
constexpr uint32_t kConfigSizeV1 = uint32_t(offsetof(ringattn_config_t, nondeterministic));
int fail(const ringattn::Status& s) {
  g_last_error = s.message();
  return int(s.code());
}
}  // namespace

// Collective: a bad argument on one rank fails every rank (one allreduce in
// all_ranks) instead of leaving the others waiting in Context::create.
extern "C" int ringattn_create(const ringattn_config_t* c, MPI_Comm comm, ringattn_context_t* out) {
  using namespace ringattn;
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return fail(InvalidArgument("ringattn_create: MPI is not initialized (call MPI_Init first)"));
  if (comm == MPI_COMM_NULL) return fail(InvalidArgument("ringattn_create: communicator is MPI_COMM_NULL"));
  Config cfg;
  Status local = Status::Ok();
  if (c == nullptr || out == nullptr) {
    local = InvalidArgument("ringattn_create: config or out is null");
  } else if (c->struct_size != sizeof(ringattn_config_t) && c->struct_size != kConfigSizeV1) {
    local = InvalidArgument("ringattn_config_t.struct_size is " + std::to_string(c->struct_size) + ", expected " +
                            std::to_string(sizeof(ringattn_config_t)) + " (or " + std::to_string(kConfigSizeV1) +
                            ", a struct without `nondeterministic`)");
  } else if (c->struct_size == sizeof(ringattn_config_t) && c->nondeterministic != 0 && c->nondeterministic != 1) {
    local = InvalidArgument("nondeterministic is " + std::to_string(c->nondeterministic) + " (allowed: 0 or 1)");
  } else if (c->num_branches < 0 || (c->num_branches > 0 && (c->w == nullptr || c->r == nullptr))) {
    local = InvalidArgument("ringattn_create: num_branches is " + std::to_string(c->num_branches) +
                            " (allowed: >= 0, with w and r non-null when > 0)");
  } else if (c->head_offsets < 0 || c->head_offsets > 1) {
    local = InvalidArgument("head_offsets is " + std::to_string(c->head_offsets) + " (allowed: 0 interleaved, 1 blocked)");
  } else if (c->dtype < 0 || c->dtype > 2) {
    local = InvalidArgument("dtype is " + std::to_string(c->dtype) + " (allowed: 0 f32, 1 f16, 2 bf16)");
  } else if (c->backend < 0 || c->backend > 1) {
    local = InvalidArgument("backend is " + std::to_string(c->backend) + " (allowed: 0 cpu, 1 cuda)");
  } else if (c->transport < 0 || c->transport > 1) {
    local = InvalidArgument("transport is " + std::to_string(c->transport) + " (allowed: 0 mpi, 1 nccl)");
  } else {
    for (int i = 0; i < c->num_branches; ++i) cfg.branches.push_back({c->w[i], c->r[i]});
    cfg.causal = c->causal != 0;
    cfg.scale = c->scale;
    cfg.head_offsets = HeadOffsets(c->head_offsets);
    cfg.dtype = DType(c->dtype);
    cfg.backend = Backend(c->backend);
    cfg.transport = Transport(c->transport);
    cfg.heads = c->heads;
    cfg.head_dim = c->head_dim;
    if (c->timeout_seconds > 0) cfg.timeout_seconds = c->timeout_seconds;
    cfg.deterministic = c->struct_size == kConfigSizeV1 || c->nondeterministic == 0;
  }
  Status agreed = all_ranks(comm, local);
  if (!agreed.ok()) return fail(agreed);
  auto h = std::make_unique<ringattn_context>();
  Status s = Context::create(cfg, comm, &h->ctx);
  if (!s.ok()) return fail(s);
  *out = h.release();
  return 0;
}

extern "C" int ringattn_forward(ringattn_context_t ctx, int64_t batch, int64_t seq, const void* q, const void* k,
                                const void* v, void* o, float* lse, void* stream) {
  if (ctx == nullptr) return fail(ringattn::InvalidArgument("ringattn_forward: context is null"));
  ringattn::Status s = ctx->ctx->forward(ringattn::Shape{batch, seq}, q, k, v, o, lse, stream);
  return s.ok() ? 0 : fail(s);
}

extern "C" int ringattn_backward(ringattn_context_t ctx, int64_t batch, int64_t seq, const void* q, const void* k,
                                 const void* v, const void* o, const float* lse, const void* dout, void* dq, void* dk,
                                 void* dv, void* stream) {
  if (ctx == nullptr) return fail(ringattn::InvalidArgument("ringattn_backward: context is null"));
  ringattn::Status s = ctx->ctx->backward(ringattn::Shape{batch, seq}, q, k, v, o, lse, dout, dq, dk, dv, stream);
  return s.ok() ? 0 : fail(s);
}

extern "C" int ringattn_synchronize(ringattn_context_t ctx) {
  if (ctx == nullptr) return fail(ringattn::InvalidArgument("ringattn_synchronize: context is null"));
  ringattn::Status s = ctx->ctx->synchronize();
  return s.ok() ? 0 : fail(s);
}

extern "C" void ringattn_destroy(ringattn_context_t ctx) { delete ctx; }
extern "C" const char* ringattn_last_error(void) { return g_last_error.c_str(); }

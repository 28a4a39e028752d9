#include <chrono>
#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <utility>
#include <map>
#include <mutex>
#include <string>
#include <tuple>
#include <vector>

#include "api/agree.hpp"
#include "backend/env_choice.hpp"
#include "cache/device_tier.hpp"
#include "device/check.hpp"
#include "backend/executor.hpp"
#include "transport/host_wait.hpp"
#include "cache/plan_cache.hpp"
#include "ringattn/ringattn.hpp"

namespace ringattn {

const char* version() { return "0.1.0"; }

struct Context::Impl {
  Config cfg;
  uint64_t hash = 0;      // config_hash(cfg)
  PlanOptions plan_opt;   // from the environment, fixed for the context's life
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0, world = 1;
  std::unique_ptr<Executor> executor;
  std::unique_ptr<PlanCache> cache;
  Stats stats;

  // buffers from index first_output on are written by the call.
  Status check(const Shape& shape, std::initializer_list<std::pair<const char*, const void*>> buffers,
               size_t first_output);
  template <typename F>
  Status with_plan(const Shape& shape, void* stream, F&& run);
  PlanKey key(const Shape& s) const { return PlanKey{hash, s.batch, s.seq, world, rank, plan_opt.pack_segments}; }
  // What the ranks agree on before any data moves: the config and the plan
  // options (a rank that packs while another does not would still compute
  // the same function, but at a different speed: refused, as a config
  // mismatch is).
  uint64_t agreed_hash() const { return plan_opt.pack_segments ? hash : hash ^ 0x9e6c63d0676a9a99ull; }

  ~Impl() {
    // The executor first: it waits for the forward in flight (under the
    // timeout) and, after a failed ring, aborts its communicator, which ends
    // NCCL operations still posted, so the cache's fences then complete.
    executor.reset();
    cache.reset();  // waits for the fences of its last readers
    if (comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
  }
};

Context::Context() : impl_(new Impl) {}
Context::~Context() = default;
int Context::rank() const { return impl_->rank; }
int Context::world_size() const { return impl_->world; }
const Config& Context::config() const { return impl_->cfg; }
const Stats& Context::stats() const {
  impl_->stats.cache = impl_->cache->stats();
  return impl_->stats;
}

Status Context::create(const Config& config, MPI_Comm comm, std::unique_ptr<Context>* out) {
  int initialized = 0;
  MPI_Initialized(&initialized);
  if (!initialized) return InvalidArgument("Context::create: MPI is not initialized (call MPI_Init first)");
  if (comm == MPI_COMM_NULL) return InvalidArgument("Context::create: communicator is MPI_COMM_NULL");

  std::unique_ptr<Context> ctx(new Context);
  Impl& im = *ctx->impl_;
  RINGATTN_MPI_CHECK(MPI_Comm_dup(comm, &im.comm));
  RINGATTN_MPI_CHECK(MPI_Comm_set_errhandler(im.comm, MPI_ERRORS_RETURN));
  RINGATTN_MPI_CHECK(MPI_Comm_rank(im.comm, &im.rank));
  RINGATTN_MPI_CHECK(MPI_Comm_size(im.comm, &im.world));
  im.cfg = config;

  Status local = validate_config(config);
  // A null `out` on one rank is agreed like any other bad value: returning
  // before agree() would leave the other ranks waiting in it.
  if (out == nullptr) local = InvalidArgument("Context::create: output pointer is null");
  WaitPolicy unused;
  if (local.ok()) local = parse_wait_env(WaitPolicy::spin, &unused);
  // RINGATTN_PACK_SEGMENTS=1 (default) | 0: pack whole short segments into
  // tiles of kPackRows rows with a block-diagonal mask (PlanOptions); must be
  // the same on every rank (agreed below with the config).
  if (local.ok()) local = env_choice("RINGATTN_PACK_SEGMENTS", "1", "0", false, &im.plan_opt.pack_segments);
  // Agree first: executor set-up is collective (the NCCL bootstrap), so every
  // rank must enter it with the same valid config or none may.
  im.hash = config_hash(config);
  RINGATTN_RETURN_IF_ERROR(agree(im.comm, local, im.agreed_hash(), 0, 0));
  std::unique_ptr<DeviceTier> tier;  // the pattern cache's device tier (cuda backend)
  if (config.backend == Backend::cpu) {
    local = make_cpu_executor(config, im.comm, &im.executor);
  } else {
    local = make_cuda_executor(config, im.comm, &im.executor);
    if (local.ok()) local = make_cuda_device_tier(&tier);
  }
  RINGATTN_RETURN_IF_ERROR(all_ranks(im.comm, local));

  im.cache = std::make_unique<PlanCache>(config.cache, std::move(tier), im.executor->plan_image_block_m());
  std::vector<std::pair<PlanKey, PlanCache::Builder>> pregen;
  for (const Shape& s : config.pregenerate) {
    Status st = validate_shape(config, s, im.world);
    if (!st.ok()) return Status(st.code(), "pregenerate: " + st.message());
    const int world = im.world, rank = im.rank;
    const PlanOptions opt = im.plan_opt;
    pregen.emplace_back(im.key(s), [config, s, world, rank, opt] { return build_plan(config, s, world, rank, opt); });
  }
  // Built now, pinned, and placed on the device in one batched copy.
  Status st = im.cache->pregenerate(pregen);
  if (!st.ok()) return Status(st.code(), "pregenerate: " + st.message());
  *out = std::move(ctx);
  return Status::Ok();
}

Status Context::synchronize() { return impl_->executor->finish(); }

Status Context::prefetch(const Shape& shape) {
  Impl& im = *impl_;
  RINGATTN_RETURN_IF_ERROR(validate_shape(im.cfg, shape, im.world));
  Config cfg = im.cfg;
  int world = im.world, rank = im.rank;
  const PlanOptions opt = im.plan_opt;
  im.cache->prefetch(im.key(shape), [cfg, shape, world, rank, opt] { return build_plan(cfg, shape, world, rank, opt); });
  return Status::Ok();
}

// Every rank checks the shape, that it passes every buffer and that no output
// shares memory with another buffer (the CUDA kernels write outputs while they
// read inputs, and zero the gradients first), then all agree (with the config
// hash and the shape), before any data moves.
Status Context::Impl::check(const Shape& shape, std::initializer_list<std::pair<const char*, const void*>> buffers,
                            size_t first_output) {
  Status local = validate_shape(cfg, shape, world);
  if (local.ok())
    for (const auto& [name, ptr] : buffers)
      if (ptr == nullptr) {
        local = InvalidArgument(std::string("buffer '") + name + "' is null (every rank must pass its shard)");
        break;
      }
  if (local.ok()) {
    // The CUDA kernels move every tensor's rows in 16-byte chunks (cp.async,
    // 16-byte loads and stores; a misaligned one faulted the GPU); the CPU
    // backend reads whole elements. LSE is read and written as floats.
    const size_t tensor_align = cfg.backend == Backend::cuda ? 16 : dtype_size(cfg.dtype);
    for (const auto& [name, ptr] : buffers) {
      const size_t need = std::string(name) == "lse" ? sizeof(float) : tensor_align;
      if (reinterpret_cast<uintptr_t>(ptr) % need != 0) {
        char at[32];
        std::snprintf(at, sizeof(at), "%p", ptr);
        local = InvalidArgument(std::string("buffer '") + name + "' at " + at + " is not " + std::to_string(need) +
                                "-byte aligned (allowed: an address that is a multiple of " + std::to_string(need) +
                                (cfg.backend == Backend::cuda ? " on the cuda backend, as cudaMalloc and torch give"
                                                              : ", the element size") + ")");
        break;
      }
    }
  }
  if (local.ok()) {
    const uint64_t rows = uint64_t(shape.batch) * uint64_t(shape.seq / world) * uint64_t(cfg.heads);
    auto bytes = [&](const char* name) {
      return std::string(name) == "lse" ? rows * sizeof(float) : rows * uint64_t(cfg.head_dim) * dtype_size(cfg.dtype);
    };
    const std::vector<std::pair<const char*, const void*>> b(buffers);
    for (size_t i = first_output; i < b.size() && local.ok(); ++i)
      for (size_t j = 0; j < b.size(); ++j) {
        if (j == i) continue;
        const uintptr_t a0 = reinterpret_cast<uintptr_t>(b[i].second), b0 = reinterpret_cast<uintptr_t>(b[j].second);
        if (a0 < b0 + bytes(b[j].first) && b0 < a0 + bytes(b[i].first)) {
          local = InvalidArgument(std::string("output '") + b[i].first + "' overlaps '" + b[j].first +
                                  "' (outputs may not share memory with any other buffer of the call)");
          break;
        }
      }
  }
  return agree(comm, local, agreed_hash(), shape.seq, shape.batch);
}

// Runs `run(plan, image, image_device)` on the shape's plan, leased from the
// pattern cache: the lease keeps the plan (and its device copy) alive until
// the fence that release() records after the call's last kernel.
template <typename F>
Status Context::Impl::with_plan(const Shape& shape, void* stream, F&& run) {
  using Clock = std::chrono::steady_clock;
  const auto tp = Clock::now();
  PlanLease lease;
  const Config& c = cfg;
  const int w = world, r = rank;
  Status got = cache->acquire(key(shape), [&] { return build_plan(c, shape, w, r, plan_opt); }, stream, &lease);
  stats.last_plan_ms = std::chrono::duration<double, std::milli>(Clock::now() - tp).count();
  RINGATTN_RETURN_IF_ERROR(got);
  stats.last_plan_tiles = int64_t(lease.plan->tiles.size());
  stats.last_packed_tiles = lease.plan->packed_tiles;
  Status st = run(*lease.plan, lease.image.get(), lease.device);
  cache->release(&lease, stream);
  return st;
}

Status Context::forward(const Shape& shape, const void* q, const void* k, const void* v, void* o, float* lse,
                        void* stream) {
  Impl& im = *impl_;
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  RINGATTN_RETURN_IF_ERROR(im.check(shape, {{"q", q}, {"k", k}, {"v", v}, {"o", o}, {"lse", lse}}, 3));
  RINGATTN_RETURN_IF_ERROR(im.with_plan(shape, stream, [&](const Plan& plan, const PlanImage* image, const void* dev) {
    ForwardArgs a{&shape, q, k, v, o, lse, stream};
    a.image = image;
    a.image_device = dev;
    return im.executor->forward(plan, a, &im.stats);
  }));
  im.stats.forwards++;
  im.stats.last_forward_ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  return Status::Ok();
}

Status Context::backward(const Shape& shape, const void* q, const void* k, const void* v, const void* o,
                         const float* lse, const void* dout, void* dq, void* dk, void* dv, void* stream) {
  Impl& im = *impl_;
  RINGATTN_RETURN_IF_ERROR(im.check(shape, {{"q", q}, {"k", k}, {"v", v}, {"o", o}, {"lse", lse}, {"dout", dout},
                                            {"dq", dq}, {"dk", dk}, {"dv", dv}},
                                     6));
  RINGATTN_RETURN_IF_ERROR(im.with_plan(shape, stream, [&](const Plan& plan, const PlanImage* image, const void* dev) {
    BackwardArgs a{&shape, q, k, v, o, lse, dout, dq, dk, dv, stream};
    a.image = image;
    a.image_device = dev;
    return im.executor->backward(plan, a, &im.stats);
  }));
  im.stats.backwards++;
  return Status::Ok();
}

}  // namespace ringattn

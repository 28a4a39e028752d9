// The tiered pattern cache: compiled plans (plan.hpp) and their device
// images (plan_image.hpp), keyed by PlanKey (config hash, batch, N, world,
// rank, PlanOptions; the config hash covers branches, causality, head rule, heads, dtype,
// backend...).
//
// Tiers (both LRU, each under its own byte budget, MRU first):
//   host:   the Plan and its image blob in pinned memory (from the
//           DeviceTier). Every cached plan is here; the device holds a subset.
//   device: a device copy of the image. A plan is promoted after
//           `promote_after_hits` host hits (0: at once); pinned plans
//           (Config::pregenerate) and announced ones (prefetch) go straight
//           to the device. Evicted from the device, a plan stays on the host
//           until the host tier evicts it.
// A plan used while only on the host is copied to the device for that call
// ("staged", freed after it): the same path as `enabled = false`, which
// rebuilds the plan and its image on every call (the comparison baseline).
//
// Lifetime: acquire() returns a lease; release(lease, stream) records a fence
// after the last kernel that read it. A device or host block dropped by the
// cache (eviction, staging, cache off) is freed only once no lease holds it
// and all its fences (kernels, copies) completed: polled, never waited on by
// the forward.
//
// Device memory held (resident plans + dropped blocks not yet freed) never
// exceeds device_budget_bytes; when room cannot be made (the rest is pinned
// or still in use) the plan stays on the host and is staged. Staging copies
// are per-call working memory and not counted (as with the cache off).
//
// Prefetch: one worker thread (owned by the cache) builds announced plans and
// places them on the device with one batched copy per drained queue. A
// forward that needs a plan still building waits for that build (counted in
// prefetch_waits), never rebuilds it. One mutex; builds run outside it.
//
// Without a DeviceTier (cpu backend) only the host tier exists and no image
// is built: nothing would read it.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cache/device_tier.hpp"
#include "plan/plan.hpp"
#include "plan/plan_image.hpp"
#include "ringattn/ringattn.hpp"

namespace ringattn {

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = k.config_hash;
    h ^= uint64_t(k.batch) * 0x9e3779b97f4a7c15ull;
    h ^= uint64_t(k.seq) * 0xc2b2ae3d27d4eb4full;
    h ^= uint64_t(k.world) << 32 ^ uint64_t(k.rank);
    h ^= k.pack_segments ? 0 : 0x8f1bbcdcca62c1d6ull;
    return size_t(h);
  }
};

namespace cache_detail {
// Memory the cache allocated; freed by reclaim() once unused.
struct Block {
  enum class Kind { device, pinned_host, malloc_host };
  Kind kind = Kind::device;
  void* ptr = nullptr;
  int64_t bytes = 0;
  bool staged = false;              // per-call device copy, outside the budget
  int leases = 0;                   // forwards holding it
  std::vector<FenceRef> fences;     // readers not yet known complete
};
}  // namespace cache_detail

// A plan in use by one forward. `device` is the device copy of `image`
// (null without a device tier); the compute stream passed to acquire()
// already waits for its copy.
struct PlanLease {
  std::shared_ptr<const Plan> plan;
  std::shared_ptr<const PlanImage> image;
  const void* device = nullptr;
  std::shared_ptr<cache_detail::Block> block;
  explicit operator bool() const { return plan != nullptr; }
};

class PlanCache {
 public:
  using Builder = std::function<Plan()>;

  // `tier`: null for the cpu backend. `block_m`: query rows per CTA of the
  // device kernel (the image's prefix tables depend on it).
  PlanCache(const CacheOptions& o, std::unique_ptr<DeviceTier> tier, int block_m);
  ~PlanCache();
  PlanCache(const PlanCache&) = delete;
  PlanCache& operator=(const PlanCache&) = delete;

  // The plan of `key`, built by `build` on a miss. `stream`: the compute
  // stream of the kernels that will read it.
  Status acquire(const PlanKey& key, const Builder& build, void* stream, PlanLease* out);
  // Records a fence on `stream` after the lease's readers; clears the lease.
  void release(PlanLease* lease, void* stream);

  // Builds the plans now, pins them (never evicted) and places them on the
  // device in one batched copy.
  Status pregenerate(const std::vector<std::pair<PlanKey, Builder>>& plans);
  // Announces a plan: built on the worker thread, placed on the device.
  void prefetch(const PlanKey& key, Builder build);

  // Frees dropped blocks whose fences completed (also done by every call).
  void poll();
  // Waits until the prefetch worker has nothing queued or building.
  void wait_idle();

  CacheStats stats() const;

  // Introspection for tests.
  bool on_host(const PlanKey& key) const;
  bool on_device(const PlanKey& key) const;
  std::vector<PlanKey> host_order() const;    // MRU first
  std::vector<PlanKey> device_order() const;  // MRU first

 private:
  using Block = cache_detail::Block;
  using BlockRef = std::shared_ptr<Block>;
  enum class State { building, ready, failed };
  struct Entry {
    PlanKey key;
    State state = State::building;
    Status error;
    std::shared_ptr<const Plan> plan;
    std::shared_ptr<const PlanImage> image;
    BlockRef host;       // image blob on the host
    BlockRef dev;        // resident device copy
    FenceRef dev_ready;  // the copy that filled `dev`
    int64_t host_bytes = 0;
    int hits = 0;            // host hits since it arrived on the host tier (or left the device)
    bool pinned = false;     // never evicted; placed on the device
    bool announced = false;  // prefetched: place on the device when built
    bool in_host = false, in_dev = false;
    std::list<Entry*>::iterator host_it, dev_it;
  };
  struct Payload {
    std::shared_ptr<const Plan> plan;
    std::shared_ptr<const PlanImage> image;
    BlockRef host;
    double build_ms = 0;
  };
  struct Job {
    PlanKey key;
    Builder build;
  };

  Status build_payload(const Builder& build, bool pinned_host, Payload* out);
  void free_block(Block& b);
  void drop(BlockRef b);  // to the pending list (freed by reclaim)
  Entry* begin_build(const PlanKey& key);
  Status finish_build(Entry* e, Status built, Payload&& p);  // under the lock
  void touch(Entry* e);
  void evict_device(Entry* e);
  void evict_entry(Entry* e);
  void enforce_host_budget();
  int64_t device_held() const { return resident_bytes_ + dropped_device_bytes_; }
  bool make_room(int64_t need, const std::vector<Entry*>& batch);
  Status place_on_device(const std::vector<Entry*>& batch);
  void wait_for_dropped(std::unique_lock<std::mutex>& lk);
  Status lease_device(Entry* e, void* stream, PlanLease* out);
  Status stage(const std::shared_ptr<const PlanImage>& image, const BlockRef& host, void* stream, PlanLease* out);
  Status acquire_uncached(const Builder& build, void* stream, PlanLease* out);
  void reclaim();
  void worker();
  static int64_t alloc_size(int64_t bytes) { return bytes > 256 ? bytes : 256; }

  CacheOptions opt_;
  std::unique_ptr<DeviceTier> tier_;
  int block_m_;

  mutable std::mutex mu_;
  std::condition_variable built_cv_;  // an entry left the building state
  std::condition_variable work_cv_;   // worker: a job arrived, or stop
  std::condition_variable idle_cv_;   // worker: queue drained
  std::unordered_map<PlanKey, std::unique_ptr<Entry>, PlanKeyHash> map_;
  std::list<Entry*> host_lru_, dev_lru_;  // MRU first
  std::vector<BlockRef> dropped_;         // waiting for leases and fences
  int64_t resident_bytes_ = 0, dropped_device_bytes_ = 0;
  CacheStats stats_;

  std::deque<Job> queue_;
  std::vector<PlanKey> to_place_;  // built by the worker, announced, not yet placed
  bool worker_busy_ = false, stop_ = false;
  std::thread worker_;
};

}  // namespace ringattn

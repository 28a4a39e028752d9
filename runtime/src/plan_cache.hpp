// The pattern cache: compiled plans keyed by (config hash, batch, N, world,
// rank). This is the host tier; see docs in README for the tiers.
#pragma once
#include <chrono>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <unordered_map>

#include "plan.hpp"
#include "ringattn/ringattn.hpp"

namespace ringattn {

struct PlanKeyHash {
  size_t operator()(const PlanKey& k) const {
    uint64_t h = k.config_hash;
    h ^= uint64_t(k.batch) * 0x9e3779b97f4a7c15ull;
    h ^= uint64_t(k.seq) * 0xc2b2ae3d27d4eb4full;
    h ^= uint64_t(k.world) << 32 ^ uint64_t(k.rank);
    return size_t(h);
  }
};

class PlanCache {
 public:
  using Builder = std::function<Plan()>;
  explicit PlanCache(const CacheOptions& o) : opt_(o) {}

  std::shared_ptr<const Plan> get(const PlanKey& key, const Builder& build) {
    auto t0 = std::chrono::steady_clock::now();
    std::lock_guard<std::mutex> g(mu_);
    if (opt_.enabled) {
      auto it = map_.find(key);
      if (it != map_.end()) {
        stats_.host_hits++;
        lru_.splice(lru_.begin(), lru_, it->second.lru);
        stats_.lookup_ms += ms(t0);
        return it->second.plan;
      }
    }
    stats_.misses++;
    auto b0 = std::chrono::steady_clock::now();
    auto plan = std::make_shared<const Plan>(build());
    stats_.build_ms += ms(b0);
    if (opt_.enabled) insert(key, plan, false);
    return plan;
  }

  void pin(const PlanKey& key, const Builder& build) {
    std::lock_guard<std::mutex> g(mu_);
    auto b0 = std::chrono::steady_clock::now();
    auto plan = std::make_shared<const Plan>(build());
    stats_.build_ms += ms(b0);
    insert(key, plan, true);
  }

  void prefetch(const PlanKey& key, const Builder& build) {
    {
      std::lock_guard<std::mutex> g(mu_);
      if (!opt_.enabled || map_.count(key)) return;
    }
    get(key, build);
  }

  CacheStats stats() const {
    std::lock_guard<std::mutex> g(mu_);
    CacheStats s = stats_;
    s.plans_held = int64_t(map_.size());
    return s;
  }

 private:
  struct Entry {
    std::shared_ptr<const Plan> plan;
    std::list<PlanKey>::iterator lru;
    bool pinned = false;
    int64_t bytes = 0;
  };
  static double ms(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
  }
  void insert(const PlanKey& key, std::shared_ptr<const Plan> plan, bool pinned) {
    auto it = map_.find(key);
    if (it != map_.end()) {
      it->second.pinned |= pinned;
      return;
    }
    lru_.push_front(key);
    Entry e{std::move(plan), lru_.begin(), pinned, 0};
    e.bytes = e.plan->host_bytes();
    stats_.host_bytes += e.bytes;
    map_.emplace(key, std::move(e));
    // Evict least recently used unpinned plans over the host budget.
    for (auto r = lru_.end(); stats_.host_bytes > opt_.host_budget_bytes && r != lru_.begin();) {
      --r;
      auto m = map_.find(*r);
      if (m->second.pinned || *r == key) continue;
      stats_.host_bytes -= m->second.bytes;
      stats_.host_evictions++;
      map_.erase(m);
      r = lru_.erase(r);
    }
  }

  CacheOptions opt_;
  mutable std::mutex mu_;
  std::unordered_map<PlanKey, Entry, PlanKeyHash> map_;
  std::list<PlanKey> lru_;
  CacheStats stats_;
};

}  // namespace ringattn

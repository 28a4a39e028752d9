// The tiered pattern cache (runtime/src/plan_cache.hpp): its policy, tested
// deterministically on the CPU through a fake DeviceTier whose "device" is
// host memory and whose fences complete only when the test says so; and the
// whole runtime through Context on MPI_COMM_SELF (cpu backend): outputs with
// the cache on, off, and after eviction are bit-identical.
//
// Own main: the Context tests need MPI (a singleton MPI_Init, no mpirun).
#include <gtest/gtest.h>
#include <mpi.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <future>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "plan/plan.hpp"
#include "cache/plan_cache.hpp"
#include "plan/plan_image.hpp"
#include "ringattn/ringattn.hpp"

namespace ringattn {
namespace {

// ------------------------------------------------------------------ fake tier

class FakeTier final : public DeviceTier {
 public:
  struct FakeFence final : Fence {
    explicit FakeFence(int64_t i) : id(i) {}
    int64_t id;
  };
  struct Counters {
    int copy_batches = 0;
    int64_t copies = 0, bytes = 0;
    int waits = 0, records = 0;
    int64_t device_live = 0, device_peak = 0;
    int device_allocs = 0, device_frees = 0, host_allocs = 0, host_frees = 0;
  };

  // Copies and kernel fences complete at once unless the test holds them.
  std::atomic<bool> complete_copies{true}, complete_records{true};

  Status alloc_device(size_t bytes, void** out) override {
    std::lock_guard<std::mutex> g(mu_);
    void* p = std::malloc(bytes);
    live_[p] = bytes;
    c_.device_allocs++;
    c_.device_live += int64_t(bytes);
    c_.device_peak = std::max(c_.device_peak, c_.device_live);
    *out = p;
    return Status::Ok();
  }
  void free_device(void* p) override {
    std::lock_guard<std::mutex> g(mu_);
    auto it = live_.find(p);
    if (it == live_.end()) {
      bad_frees_++;
      return;
    }
    c_.device_live -= int64_t(it->second);
    c_.device_frees++;
    live_.erase(it);
    freed_.insert(p);  // kept allocated: addresses never reused, so "was p freed" is exact
  }
  Status alloc_host(size_t bytes, void** out) override {
    std::lock_guard<std::mutex> g(mu_);
    *out = std::malloc(bytes);
    c_.host_allocs++;
    return Status::Ok();
  }
  void free_host(void* p) override {
    std::lock_guard<std::mutex> g(mu_);
    c_.host_frees++;
    std::free(p);
  }
  Status copy_batch(const std::vector<Copy>& copies, FenceRef* ready) override {
    std::lock_guard<std::mutex> g(mu_);
    c_.copy_batches++;
    for (const Copy& c : copies) {
      EXPECT_TRUE(live_.count(c.dst)) << "copy into freed or unknown device memory";
      std::memcpy(c.dst, c.src, c.bytes);
      c_.copies++;
      c_.bytes += int64_t(c.bytes);
    }
    *ready = make(complete_copies);
    return Status::Ok();
  }
  bool done(const FenceRef& f) override {
    if (!f) return true;
    std::lock_guard<std::mutex> g(mu_);
    return completed_.count(static_cast<const FakeFence*>(f.get())->id) != 0;
  }
  Status wait(const FenceRef&, void*) override {
    std::lock_guard<std::mutex> g(mu_);
    c_.waits++;
    return Status::Ok();
  }
  Status record(void*, FenceRef* out) override {
    std::lock_guard<std::mutex> g(mu_);
    c_.records++;
    *out = make(complete_records);
    return Status::Ok();
  }

  // Test controls.
  void complete_all() {
    std::lock_guard<std::mutex> g(mu_);
    for (int64_t i = 1; i < next_; ++i) completed_.insert(i);
  }
  bool freed(const void* p) {
    std::lock_guard<std::mutex> g(mu_);
    return freed_.count(const_cast<void*>(p)) != 0;
  }
  Counters counters() {
    std::lock_guard<std::mutex> g(mu_);
    return c_;
  }
  int bad_frees() {
    std::lock_guard<std::mutex> g(mu_);
    return bad_frees_;
  }
  ~FakeTier() override {
    for (void* p : freed_) std::free(p);
    for (auto& kv : live_) std::free(kv.first);
  }

 private:
  FenceRef make(bool complete) {  // under mu_
    int64_t id = next_++;
    if (complete) completed_.insert(id);
    return std::make_shared<FakeFence>(id);
  }
  std::mutex mu_;
  int64_t next_ = 1;
  std::set<int64_t> completed_;
  std::map<void*, size_t> live_;
  std::set<void*> freed_;
  int bad_frees_ = 0;
  Counters c_;
};

// ------------------------------------------------------------------ helpers

constexpr int kBlockM = 64;

Config small_config() {
  Config c;
  c.branches = {{64, 1}, {128, 2}, {256, 4}};
  c.heads = 2;
  c.head_dim = 16;
  return c;
}

// Keys with the same seq and different batch have plans of identical size
// (the plan does not depend on the batch), so budgets can be set in plans.
PlanKey key_of(int64_t batch, int64_t seq = 512) { return PlanKey{config_hash(small_config()), batch, seq, 1, 0}; }

struct Builds {
  std::atomic<int> n{0};
  PlanCache::Builder of(int64_t batch, int64_t seq = 512) {
    return [this, batch, seq] {
      n++;
      return build_plan(small_config(), Shape{batch, seq}, 1, 0);
    };
  }
};

CacheOptions options(int promote_after, int64_t device_budget = 1ll << 30, int64_t host_budget = 1ll << 30) {
  CacheOptions o;
  o.enabled = true;
  o.promote_after_hits = promote_after;
  o.device_budget_bytes = device_budget;
  o.host_budget_bytes = host_budget;
  return o;
}

// Bytes one plan of seq 512 takes in each tier (measured on a probe cache).
struct Sizes {
  int64_t host = 0, device = 0;
};
Sizes plan_sizes() {
  PlanCache c(options(0), std::make_unique<FakeTier>(), kBlockM);
  Builds b;
  PlanLease l;
  EXPECT_TRUE(c.acquire(key_of(1), b.of(1), nullptr, &l).ok());
  c.release(&l, nullptr);
  CacheStats s = c.stats();
  return Sizes{s.host_bytes, s.device_bytes};
}

// One forward: acquire and release at once.
Status use(PlanCache& c, Builds& b, int64_t batch, int64_t seq = 512) {
  PlanLease l;
  Status st = c.acquire(key_of(batch, seq), b.of(batch, seq), nullptr, &l);
  c.release(&l, nullptr);
  return st;
}

struct Fixture {
  FakeTier* tier;
  std::unique_ptr<PlanCache> cache;
  Builds builds;
  explicit Fixture(const CacheOptions& o) {
    auto t = std::make_unique<FakeTier>();
    tier = t.get();
    cache = std::make_unique<PlanCache>(o, std::move(t), kBlockM);
  }
};

// ------------------------------------------------------------------ image

TEST(PlanImage, HoldsEveryArrayOfThePlan) {
  Config c = small_config();
  for (int world : {1, 2, 4}) {
    for (int rank = 0; rank < world; ++rank) {
      Plan p = build_plan(c, Shape{1, 1024}, world, rank);
      PlanImage im = build_plan_image(p, kBlockM);
      ASSERT_EQ(int64_t(im.blob.size()), im.bytes);
      const char* base = im.blob.data();
      EXPECT_EQ(0, std::memcmp(image_at<kern::Tile>(base, im.tiles_offset), p.tiles.data(), p.tiles.size() * sizeof(kern::Tile)));
      EXPECT_EQ(0, std::memcmp(image_at<int32_t>(base, im.key_index_offset), p.key_index.data(), p.key_index.size() * 4));
      ASSERT_EQ(im.pass_blocks.size(), p.passes.size());
      const int32_t* prefix = image_at<int32_t>(base, im.prefix_offset);
      for (size_t i = 0; i < p.passes.size(); ++i) {
        const int32_t* pp = prefix + im.pass_prefix_offset[i];
        int32_t acc = 0;
        for (int64_t t = p.passes[i].tile_begin; t < p.passes[i].tile_end; ++t) {
          EXPECT_EQ(pp[t - p.passes[i].tile_begin], acc);
          acc += (p.tiles[t].q_count + kBlockM - 1) / kBlockM;
        }
        EXPECT_EQ(pp[p.passes[i].tile_end - p.passes[i].tile_begin], acc);
        EXPECT_EQ(im.pass_blocks[i], acc);
      }
      ASSERT_EQ(im.send_rows_offset.size(), p.steps.size());
      for (size_t s = 0; s < p.steps.size(); ++s) {
        const RowList& rl = p.steps[s].send;
        EXPECT_EQ(0, std::memcmp(image_at<int32_t>(base, im.send_rows_offset[s]), rl.rows.data(), rl.rows.size() * 4));
        EXPECT_EQ(0, std::memcmp(image_at<int32_t>(base, im.send_prefix_offset[s]), rl.head_prefix.data(),
                                 rl.head_prefix.size() * 4));
      }
      // Deterministic, padding included: two builds compare bytewise.
      PlanImage again = build_plan_image(build_plan(c, Shape{1, 1024}, world, rank), kBlockM);
      EXPECT_EQ(again.blob, im.blob);
    }
  }
}

// ------------------------------------------------------------------ policy

TEST(PlanCachePolicy, PromotesAfterTheConfiguredHostHits) {
  Fixture f(options(3));
  PlanCache& c = *f.cache;
  ASSERT_TRUE(use(c, f.builds, 1).ok());  // miss: on the host, staged for the call
  EXPECT_TRUE(c.on_host(key_of(1)));
  EXPECT_FALSE(c.on_device(key_of(1)));
  for (int hit = 1; hit <= 2; ++hit) {
    ASSERT_TRUE(use(c, f.builds, 1).ok());
    EXPECT_FALSE(c.on_device(key_of(1))) << "promoted after " << hit << " host hits";
  }
  ASSERT_TRUE(use(c, f.builds, 1).ok());  // third host hit: promoted
  EXPECT_TRUE(c.on_device(key_of(1)));
  ASSERT_TRUE(use(c, f.builds, 1).ok());  // device hit
  CacheStats s = c.stats();
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.host_hits, 3);
  EXPECT_EQ(s.device_hits, 1);
  EXPECT_EQ(s.promotions, 1);
  EXPECT_EQ(s.staged, 3);  // the miss and two host hits ran on a per-call copy
  EXPECT_EQ(f.builds.n, 1);

  Fixture g(options(0));
  ASSERT_TRUE(use(*g.cache, g.builds, 1).ok());
  EXPECT_TRUE(g.cache->on_device(key_of(1))) << "promote_after_hits = 0 places a plan at once";
  ASSERT_TRUE(use(*g.cache, g.builds, 1).ok());
  EXPECT_EQ(g.cache->stats().device_hits, 1);
  EXPECT_EQ(g.cache->stats().staged, 0);
}

TEST(PlanCachePolicy, LeastRecentlyUsedOrderInEachTier) {
  const Sizes z = plan_sizes();
  Fixture f(options(0, 2 * z.device, 3 * z.host));
  PlanCache& c = *f.cache;
  for (int b : {1, 2, 3}) ASSERT_TRUE(use(c, f.builds, b).ok());
  EXPECT_EQ(c.host_order(), (std::vector<PlanKey>{key_of(3), key_of(2), key_of(1)}));
  EXPECT_EQ(c.device_order(), (std::vector<PlanKey>{key_of(3), key_of(2)}));  // 1 evicted from the device
  EXPECT_TRUE(c.on_host(key_of(1))) << "evicted from the device, a plan stays on the host";
  ASSERT_TRUE(use(c, f.builds, 2).ok());  // touch 2
  EXPECT_EQ(c.device_order(), (std::vector<PlanKey>{key_of(2), key_of(3)}));
  ASSERT_TRUE(use(c, f.builds, 1).ok());  // host hit, promoted (threshold 0): evicts 3, the LRU one
  EXPECT_EQ(c.device_order(), (std::vector<PlanKey>{key_of(1), key_of(2)}));
  EXPECT_EQ(c.host_order(), (std::vector<PlanKey>{key_of(1), key_of(2), key_of(3)}));
  ASSERT_TRUE(use(c, f.builds, 4).ok());  // host: 3 is the LRU one
  EXPECT_EQ(c.host_order(), (std::vector<PlanKey>{key_of(4), key_of(1), key_of(2)}));
  EXPECT_FALSE(c.on_host(key_of(3)));
  CacheStats s = c.stats();
  EXPECT_EQ(s.host_evictions, 1);
  EXPECT_EQ(s.device_evictions, 3);  // 1, then 3, then 2 (for 4)
  EXPECT_EQ(f.tier->bad_frees(), 0);
}

TEST(PlanCachePolicy, BudgetsAreNeverExceeded) {
  const Sizes z = plan_sizes();
  for (int promote : {0, 1, 3}) {
    Fixture f(options(promote, 2 * z.device + z.device / 2, 3 * z.host + z.host / 2));
    PlanCache& c = *f.cache;
    std::mt19937 g(1234 + promote);
    for (int i = 0; i < 300; ++i) {
      int b = 1 + int(g() % 7);
      if (g() % 5 == 0) c.prefetch(key_of(b), f.builds.of(b));
      ASSERT_TRUE(use(c, f.builds, b).ok());
      CacheStats s = c.stats();
      ASSERT_LE(s.host_bytes, 3 * z.host + z.host / 2) << "step " << i;
      ASSERT_LE(s.device_bytes, 2 * z.device + z.device / 2) << "step " << i;
      ASSERT_LE(s.plans_held, 3);
      ASSERT_LE(s.device_plans, 2);
    }
    c.wait_idle();
    EXPECT_GT(c.stats().host_evictions, 0);
    EXPECT_EQ(f.tier->bad_frees(), 0);
  }
}

TEST(PlanCachePolicy, PinnedPlansAreNeverEvicted) {
  const Sizes z = plan_sizes();
  Fixture f(options(0, 3 * z.device, 4 * z.host));
  PlanCache& c = *f.cache;
  ASSERT_TRUE(c.pregenerate({{key_of(1), f.builds.of(1)}, {key_of(2), f.builds.of(2)}}).ok());
  EXPECT_TRUE(c.on_device(key_of(1)));
  EXPECT_TRUE(c.on_device(key_of(2)));
  for (int round = 0; round < 3; ++round)
    for (int b = 3; b <= 9; ++b) {
      ASSERT_TRUE(use(c, f.builds, b).ok());
      ASSERT_TRUE(c.on_device(key_of(1)) && c.on_device(key_of(2))) << "pinned plan evicted at " << b;
      ASSERT_TRUE(c.on_host(key_of(1)) && c.on_host(key_of(2)));
    }
  ASSERT_TRUE(use(c, f.builds, 1).ok());
  CacheStats s = c.stats();
  EXPECT_GT(s.device_evictions, 10);
  EXPECT_GT(s.host_evictions, 10);
  EXPECT_EQ(s.device_hits, 1);
  EXPECT_EQ(f.builds.n, 2 + 21) << "pinned plans are built once";
}

TEST(PlanCachePolicy, PrefetchTurnsTheNextLookupIntoADeviceHit) {
  Fixture f(options(3));
  PlanCache& c = *f.cache;
  c.prefetch(key_of(1), f.builds.of(1));
  c.wait_idle();
  EXPECT_TRUE(c.on_device(key_of(1)));
  ASSERT_TRUE(use(c, f.builds, 1).ok());
  CacheStats s = c.stats();
  EXPECT_EQ(s.device_hits, 1);
  EXPECT_EQ(s.misses, 0);
  EXPECT_EQ(s.prefetches, 1);
  EXPECT_EQ(s.prefetch_waits, 0);

  // A plan on the host only: announcing it places it on the device now.
  ASSERT_TRUE(use(c, f.builds, 2).ok());  // miss, host
  EXPECT_FALSE(c.on_device(key_of(2)));
  c.prefetch(key_of(2), f.builds.of(2));
  EXPECT_TRUE(c.on_device(key_of(2)));
  ASSERT_TRUE(use(c, f.builds, 2).ok());
  EXPECT_EQ(c.stats().device_hits, 2);
  EXPECT_EQ(f.builds.n, 2);
}

TEST(PlanCachePolicy, AForwardWaitsForAPrefetchBuildAndNeverRebuilds) {
  Fixture f(options(3));
  PlanCache& c = *f.cache;
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  std::atomic<int> builds{0};
  auto slow = [&, open] {
    open.wait();
    builds++;
    return build_plan(small_config(), Shape{1, 512}, 1, 0);
  };
  c.prefetch(key_of(1), slow);
  Status st;
  std::thread fwd([&] {
    PlanLease l;
    st = c.acquire(key_of(1), slow, nullptr, &l);
    c.release(&l, nullptr);
  });
  while (c.stats().prefetch_waits == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  gate.set_value();
  fwd.join();
  ASSERT_TRUE(st.ok()) << st.to_string();
  CacheStats s = c.stats();
  EXPECT_EQ(builds, 1);
  EXPECT_EQ(s.prefetch_waits, 1);
  EXPECT_EQ(s.misses, 0);
  EXPECT_EQ(s.device_hits, 1) << "the waited-for plan was placed on the device before the forward went on";
}

TEST(PlanCachePolicy, APlanInUseIsNeverFreedBeforeItsFenceCompletes) {
  const Sizes z = plan_sizes();
  Fixture f(options(0, z.device, 1ll << 30));  // room for one plan on the device
  PlanCache& c = *f.cache;
  f.tier->complete_records = false;  // kernels "still running"

  // Released, its kernel fence pending: evicting it defers the free.
  PlanLease a;
  ASSERT_TRUE(c.acquire(key_of(1), f.builds.of(1), nullptr, &a).ok());
  const void* a_dev = a.device;
  ASSERT_TRUE(c.on_device(key_of(1)));
  c.release(&a, nullptr);
  ASSERT_TRUE(use(c, f.builds, 2).ok());  // needs the device: evicts 1
  EXPECT_FALSE(c.on_device(key_of(1)));
  EXPECT_FALSE(f.tier->freed(a_dev)) << "freed while its last kernel may still read it";
  EXPECT_FALSE(c.on_device(key_of(2))) << "no room until the evicted copy is freed: staged instead";
  EXPECT_LE(c.stats().device_bytes, z.device);
  f.tier->complete_all();
  c.poll();
  EXPECT_TRUE(f.tier->freed(a_dev));
  ASSERT_TRUE(use(c, f.builds, 2).ok());  // now it fits
  EXPECT_TRUE(c.on_device(key_of(2)));
  f.tier->complete_all();  // the cache's destructor waits for every fence

  // Still leased (its forward not even released): the host tier drops the
  // whole entry; the device copy and the plan live on for the lease.
  Fixture g(options(0, 1ll << 30, z.host));
  PlanCache& h = *g.cache;
  g.tier->complete_records = false;
  PlanLease b;
  ASSERT_TRUE(h.acquire(key_of(1), g.builds.of(1), nullptr, &b).ok());
  ASSERT_TRUE(use(h, g.builds, 2).ok());  // host budget: evicts 1 entirely
  EXPECT_FALSE(h.on_host(key_of(1)));
  EXPECT_FALSE(g.tier->freed(b.device));
  g.tier->complete_all();
  h.poll();
  EXPECT_FALSE(g.tier->freed(b.device)) << "freed while leased";
  PlanImage expect = build_plan_image(*b.plan, kBlockM);
  EXPECT_EQ(0, std::memcmp(b.device, expect.blob.data(), expect.blob.size())) << "device copy changed under its reader";
  const void* b_dev = b.device;
  h.release(&b, nullptr);  // fence pending again
  h.poll();
  EXPECT_FALSE(g.tier->freed(b_dev));
  g.tier->complete_all();
  h.poll();
  EXPECT_TRUE(g.tier->freed(b_dev));
}

TEST(PlanCachePolicy, DistinctPlansHeldEqualsDistinctKeysUsed) {
  Fixture f(options(3));
  PlanCache& c = *f.cache;
  const int64_t seqs[] = {256, 512, 768, 1024, 1280};
  for (int cycle = 0; cycle < 6; ++cycle)
    for (int64_t n : seqs) ASSERT_TRUE(use(c, f.builds, 1, n).ok());
  CacheStats s = c.stats();
  EXPECT_EQ(s.plans_held, 5) << "the old cache held one pattern";
  EXPECT_EQ(s.device_plans, 5);
  EXPECT_EQ(s.misses, 5);
  EXPECT_EQ(f.builds.n, 5);
  EXPECT_EQ(s.promotions, 5);
  EXPECT_EQ(s.host_hits, 15);
  EXPECT_EQ(s.device_hits, 5 * 2);
}

TEST(PlanCachePolicy, SeveralPlansMoveInOneBatchedCopy) {
  Fixture f(options(3));
  PlanCache& c = *f.cache;
  ASSERT_TRUE(c.pregenerate({{key_of(1), f.builds.of(1)}, {key_of(2), f.builds.of(2)}, {key_of(3), f.builds.of(3)}}).ok());
  EXPECT_EQ(f.tier->counters().copy_batches, 1);
  EXPECT_EQ(f.tier->counters().copies, 3);
  EXPECT_EQ(c.stats().promotions, 3);
  EXPECT_EQ(c.stats().copies, 1);

  // Prefetches queued behind a running build leave the worker as one batch.
  Fixture g(options(3));
  std::promise<void> gate;
  std::shared_future<void> open = gate.get_future().share();
  g.cache->prefetch(key_of(4), [open] {
    open.wait();
    return build_plan(small_config(), Shape{4, 512}, 1, 0);
  });
  g.cache->prefetch(key_of(5), g.builds.of(5));
  g.cache->prefetch(key_of(6), g.builds.of(6));
  gate.set_value();
  g.cache->wait_idle();
  EXPECT_EQ(g.tier->counters().copy_batches, 1);
  EXPECT_EQ(g.tier->counters().copies, 3);
  for (int b : {4, 5, 6}) EXPECT_TRUE(g.cache->on_device(key_of(b)));
}

TEST(PlanCachePolicy, CacheOffRebuildsAndUploadsOnEveryCall) {
  CacheOptions o = options(0);
  o.enabled = false;
  Fixture f(o);
  PlanCache& c = *f.cache;
  c.prefetch(key_of(1), f.builds.of(1));  // nothing to announce to
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(use(c, f.builds, 1).ok());
  CacheStats s = c.stats();
  EXPECT_EQ(f.builds.n, 5);
  EXPECT_EQ(s.misses, 5);
  EXPECT_EQ(s.plans_held, 0);
  EXPECT_EQ(f.tier->counters().copy_batches, 5);
  EXPECT_EQ(f.tier->counters().device_live, 0) << "every upload freed after use";
  EXPECT_EQ(s.device_bytes, 0);
}

TEST(PlanCachePolicy, EvictedAndRepromotedCopyIsBitIdentical) {
  const Sizes z = plan_sizes();
  Fixture f(options(1, z.device, 1ll << 30));
  PlanCache& c = *f.cache;
  PlanImage expect = build_plan_image(build_plan(small_config(), Shape{1, 512}, 1, 0), kBlockM);
  for (int round = 0; round < 3; ++round) {
    ASSERT_TRUE(use(c, f.builds, 1).ok());
    ASSERT_TRUE(use(c, f.builds, 1).ok());  // host hit: promoted
    PlanLease l;
    ASSERT_TRUE(c.acquire(key_of(1), f.builds.of(1), nullptr, &l).ok());
    ASSERT_TRUE(c.on_device(key_of(1)));
    EXPECT_EQ(0, std::memcmp(l.device, expect.blob.data(), expect.blob.size())) << "round " << round;
    c.release(&l, nullptr);
    ASSERT_TRUE(use(c, f.builds, 2).ok());  // 2 on the host
    ASSERT_TRUE(use(c, f.builds, 2).ok());  // 2 promoted: 1 evicted from the device
    ASSERT_FALSE(c.on_device(key_of(1)));
  }
  EXPECT_EQ(f.builds.n, 2);
  EXPECT_GE(c.stats().device_evictions, 5);
}

TEST(PlanCachePolicy, WithoutADeviceTierOnlyTheHostTierExists) {
  PlanCache c(options(0), nullptr, 0);
  Builds b;
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(use(c, b, 1).ok());
  c.prefetch(key_of(2), b.of(2));
  c.wait_idle();
  ASSERT_TRUE(use(c, b, 2).ok());
  CacheStats s = c.stats();
  EXPECT_EQ(s.misses, 1);
  EXPECT_EQ(s.host_hits, 4);
  EXPECT_EQ(s.device_hits + s.promotions + s.device_bytes + s.copies, 0);
  EXPECT_EQ(s.plans_held, 2);
  EXPECT_EQ(b.n, 2);
}

// ------------------------------------------------------------------ Context

struct Inputs {
  int64_t B, L, H, D;
  std::vector<float> q, k, v;
};

Inputs inputs(const Config& c, int64_t seq, uint32_t seed) {
  Inputs in{1, seq, c.heads, c.head_dim, {}, {}, {}};
  std::mt19937 g(seed);
  std::uniform_real_distribution<float> u(-1.f, 1.f);
  for (auto* v : {&in.q, &in.k, &in.v}) {
    v->resize(size_t(in.B * in.L * in.H * in.D));
    for (float& x : *v) x = u(g);
  }
  return in;
}

struct Out {
  std::vector<float> o, lse;
};

Out forward(Context& ctx, const Inputs& in) {
  Out r;
  r.o.assign(in.q.size(), 0.f);
  r.lse.assign(size_t(in.B * in.L * in.H), 0.f);
  Status st = ctx.forward(Shape{in.B, in.L}, in.q.data(), in.k.data(), in.v.data(), r.o.data(), r.lse.data());
  EXPECT_TRUE(st.ok()) << st.to_string();
  return r;
}

bool same(const Out& a, const Out& b) {
  return a.o.size() == b.o.size() && std::memcmp(a.o.data(), b.o.data(), a.o.size() * 4) == 0 &&
         std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4) == 0;
}

TEST(PlanCacheContext, OutputsAreBitIdenticalWithCacheOnOffAndAfterEviction) {
  Config c = small_config();
  c.causal = true;
  const int64_t seqs[] = {512, 768, 1024};
  std::vector<Inputs> in;
  for (int64_t n : seqs) in.push_back(inputs(c, n, uint32_t(n)));

  // Reference: cache off.
  Config off = c;
  off.cache.enabled = false;
  std::unique_ptr<Context> ctx;
  ASSERT_TRUE(Context::create(off, MPI_COMM_SELF, &ctx).ok());
  std::vector<Out> ref;
  for (const Inputs& x : in) ref.push_back(forward(*ctx, x));
  EXPECT_EQ(ctx->stats().cache.plans_held, 0);

  // On: misses, then host hits; with prefetch and pregeneration.
  Config on = c;
  on.pregenerate = {Shape{1, 512}};
  ASSERT_TRUE(Context::create(on, MPI_COMM_SELF, &ctx).ok());
  for (int cycle = 0; cycle < 3; ++cycle)
    for (size_t i = 0; i < in.size(); ++i) {
      ASSERT_TRUE(ctx->prefetch(Shape{1, seqs[(i + 1) % 3]}).ok());
      EXPECT_TRUE(same(forward(*ctx, in[i]), ref[i])) << "cache on, N=" << seqs[i] << " cycle " << cycle;
    }
  CacheStats s = ctx->stats().cache;
  EXPECT_EQ(s.plans_held, 3);
  EXPECT_EQ(s.host_hits, 9);
  EXPECT_EQ(s.misses, 0) << "pregenerated or prefetched";

  // A host budget of about one plan: every switch evicts and rebuilds.
  Config tight = c;
  tight.cache.host_budget_bytes = 1;
  ASSERT_TRUE(Context::create(tight, MPI_COMM_SELF, &ctx).ok());
  for (int cycle = 0; cycle < 2; ++cycle)
    for (size_t i = 0; i < in.size(); ++i)
      EXPECT_TRUE(same(forward(*ctx, in[i]), ref[i])) << "after eviction, N=" << seqs[i];
  s = ctx->stats().cache;
  EXPECT_EQ(s.misses, 6);
  EXPECT_GE(s.host_evictions, 5);
  EXPECT_LE(s.host_bytes, 1);
}

}  // namespace
}  // namespace ringattn

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  ::testing::InitGoogleTest(&argc, argv);
  int rc = RUN_ALL_TESTS();
  MPI_Finalize();
  return rc;
}

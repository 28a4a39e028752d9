#include "cache/plan_cache.hpp"

#include <chrono>
#include <cstdlib>

namespace ringattn {
namespace {

using Clock = std::chrono::steady_clock;
double ms_since(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

}  // namespace

PlanCache::PlanCache(const CacheOptions& o, std::unique_ptr<DeviceTier> tier, int block_m)
    : opt_(o), tier_(std::move(tier)), block_m_(block_m > 0 ? block_m : 1) {}

PlanCache::~PlanCache() {
  {
    std::lock_guard<std::mutex> g(mu_);
    stop_ = true;
  }
  work_cv_.notify_all();
  if (worker_.joinable()) worker_.join();
  std::lock_guard<std::mutex> g(mu_);
  for (auto& kv : map_) {
    if (kv.second->dev) drop(std::move(kv.second->dev));
    if (kv.second->host) drop(std::move(kv.second->host));
  }
  host_lru_.clear();
  dev_lru_.clear();
  map_.clear();
  // Readers were synchronized by their forwards; wait for the last fences.
  // A block still leased (a lease outlived the cache) is leaked, never freed
  // under a kernel.
  const auto t0 = Clock::now();
  for (;;) {
    reclaim();
    bool waiting = false;
    for (const BlockRef& b : dropped_) waiting |= (b->leases == 0);
    if (!waiting || ms_since(t0) > 30e3) break;
    std::this_thread::sleep_for(std::chrono::microseconds(50));
  }
}

// ---------------------------------------------------------------- building

Status PlanCache::build_payload(const Builder& build, bool pinned_host, Payload* out) {
  const auto t0 = Clock::now();
  auto plan = std::make_shared<const Plan>(build());
  if (tier_) {
    auto image = std::make_shared<PlanImage>(layout_plan_image(*plan, block_m_));
    auto b = std::make_shared<Block>();
    b->bytes = alloc_size(image->bytes);
    if (pinned_host) {
      b->kind = Block::Kind::pinned_host;
      RINGATTN_RETURN_IF_ERROR(tier_->alloc_host(size_t(b->bytes), &b->ptr));
    } else {
      // Cache off: a plain allocation, as a one-shot upload would use.
      b->kind = Block::Kind::malloc_host;
      b->ptr = std::malloc(size_t(b->bytes));
      if (b->ptr == nullptr)
        return Status(StatusCode::kInternal, "pattern cache: host allocation of " + std::to_string(b->bytes) + " bytes failed");
    }
    write_plan_image(*plan, *image, b->ptr);
    out->image = std::move(image);
    out->host = std::move(b);
  }
  out->plan = std::move(plan);
  out->build_ms = ms_since(t0);
  return Status::Ok();
}

PlanCache::Entry* PlanCache::begin_build(const PlanKey& key) {
  auto e = std::make_unique<Entry>();
  e->key = key;
  e->state = State::building;
  Entry* p = e.get();
  map_[key] = std::move(e);
  return p;
}

Status PlanCache::finish_build(Entry* e, Status built, Payload&& p) {
  stats_.build_ms += p.build_ms;
  if (!built.ok()) {
    if (p.host) drop(std::move(p.host));
    e->state = State::failed;
    e->error = built;
    built_cv_.notify_all();
    return built;
  }
  e->plan = std::move(p.plan);
  e->image = std::move(p.image);
  e->host = std::move(p.host);
  e->host_bytes = e->plan->host_bytes() + (e->image ? e->image->meta_bytes() + e->host->bytes : 0);
  e->state = State::ready;
  host_lru_.push_front(e);
  e->host_it = host_lru_.begin();
  e->in_host = true;
  stats_.host_bytes += e->host_bytes;
  built_cv_.notify_all();
  return Status::Ok();
}

// ---------------------------------------------------------------- memory

void PlanCache::free_block(Block& b) {
  if (b.ptr == nullptr) return;
  switch (b.kind) {
    case Block::Kind::device: tier_->free_device(b.ptr); break;
    case Block::Kind::pinned_host: tier_->free_host(b.ptr); break;
    case Block::Kind::malloc_host: std::free(b.ptr); break;
  }
  b.ptr = nullptr;
}

void PlanCache::drop(BlockRef b) {
  if (!b) return;
  if (b->kind == Block::Kind::device && !b->staged) dropped_device_bytes_ += b->bytes;
  dropped_.push_back(std::move(b));
}

void PlanCache::reclaim() {
  for (size_t i = 0; i < dropped_.size();) {
    Block& b = *dropped_[i];
    bool free_now = b.leases == 0;
    if (free_now && tier_) {
      auto& f = b.fences;
      for (size_t j = 0; j < f.size();) {
        if (tier_->done(f[j])) {
          f[j] = std::move(f.back());
          f.pop_back();
        } else {
          ++j;
        }
      }
      free_now = f.empty();
    }
    if (!free_now) {
      ++i;
      continue;
    }
    if (b.kind == Block::Kind::device && !b.staged) dropped_device_bytes_ -= b.bytes;
    free_block(b);
    dropped_[i] = std::move(dropped_.back());
    dropped_.pop_back();
  }
}

void PlanCache::poll() {
  std::lock_guard<std::mutex> g(mu_);
  reclaim();
}

void PlanCache::wait_for_dropped(std::unique_lock<std::mutex>& lk) {
  std::vector<FenceRef> fences;
  for (const BlockRef& b : dropped_)
    if (b->leases == 0 && b->kind == Block::Kind::device) fences.insert(fences.end(), b->fences.begin(), b->fences.end());
  if (fences.empty() || !tier_) return;
  lk.unlock();
  const auto t0 = Clock::now();
  for (const FenceRef& f : fences)
    while (!tier_->done(f) && ms_since(t0) < 10e3) std::this_thread::sleep_for(std::chrono::microseconds(20));
  lk.lock();
  reclaim();
}

// ---------------------------------------------------------------- tiers

void PlanCache::touch(Entry* e) {
  if (e->in_host) host_lru_.splice(host_lru_.begin(), host_lru_, e->host_it);
  if (e->in_dev) dev_lru_.splice(dev_lru_.begin(), dev_lru_, e->dev_it);
}

void PlanCache::evict_device(Entry* e) {
  dev_lru_.erase(e->dev_it);
  e->in_dev = false;
  resident_bytes_ -= e->dev->bytes;
  drop(std::move(e->dev));
  e->dev.reset();
  e->dev_ready.reset();
  e->hits = 0;  // promoted again only after promote_after_hits new host hits
  stats_.device_evictions++;
}

void PlanCache::evict_entry(Entry* e) {
  if (e->in_dev) evict_device(e);
  host_lru_.erase(e->host_it);
  e->in_host = false;
  stats_.host_bytes -= e->host_bytes;
  drop(std::move(e->host));
  stats_.host_evictions++;
  map_.erase(e->key);  // destroys e; a lease keeps its plan, image and device block
}

void PlanCache::enforce_host_budget() {
  for (auto it = host_lru_.end(); stats_.host_bytes > opt_.host_budget_bytes && it != host_lru_.begin();) {
    Entry* e = *--it;
    if (e->pinned) continue;
    it = std::next(it);  // evict_entry erases *it; keep the position after it
    evict_entry(e);
  }
}

bool PlanCache::make_room(int64_t need, const std::vector<Entry*>& batch) {
  const int64_t budget = opt_.device_budget_bytes;
  if (need > budget) return false;
  reclaim();
  if (device_held() + need <= budget) return true;
  auto in_batch = [&](Entry* e) {
    for (Entry* b : batch)
      if (b == e) return true;
    return false;
  };
  auto evictable = [&](Entry* e) { return !e->pinned && !in_batch(e) && e->dev->leases == 0; };
  // Only evict if that can make room: pinned plans, plans leased now and
  // dropped blocks still leased stay.
  int64_t freeable = 0;
  for (Entry* e : dev_lru_)
    if (evictable(e)) freeable += e->dev->bytes;
  for (const BlockRef& b : dropped_)
    if (b->kind == Block::Kind::device && !b->staged && b->leases == 0) freeable += b->bytes;
  if (device_held() - freeable + need > budget) return false;
  for (auto it = dev_lru_.end(); device_held() + need > budget && it != dev_lru_.begin();) {
    Entry* e = *--it;
    if (!evictable(e)) continue;
    it = std::next(it);
    evict_device(e);
    reclaim();
  }
  return device_held() + need <= budget;  // false while evicted blocks' fences are pending
}

Status PlanCache::place_on_device(const std::vector<Entry*>& batch) {
  if (!tier_) return Status::Ok();
  std::vector<DeviceTier::Copy> copies;
  std::vector<Entry*> placed;
  for (Entry* e : batch) {
    if (e->state != State::ready || e->dev || !e->host) continue;
    const int64_t need = alloc_size(e->image->bytes);
    if (!make_room(need, batch)) continue;  // stays on the host (staged when used)
    auto b = std::make_shared<Block>();
    b->kind = Block::Kind::device;
    b->bytes = need;
    if (!tier_->alloc_device(size_t(need), &b->ptr).ok()) continue;  // a cache degrades, it does not fail
    e->dev = std::move(b);
    resident_bytes_ += need;
    dev_lru_.push_front(e);
    e->dev_it = dev_lru_.begin();
    e->in_dev = true;
    copies.push_back(DeviceTier::Copy{e->dev->ptr, e->host->ptr, size_t(e->image->bytes)});
    placed.push_back(e);
  }
  if (copies.empty()) return Status::Ok();
  FenceRef ready;
  Status st = tier_->copy_batch(copies, &ready);
  if (!st.ok()) {
    for (Entry* e : placed) {  // nothing read them yet
      dev_lru_.erase(e->dev_it);
      e->in_dev = false;
      resident_bytes_ -= e->dev->bytes;
      free_block(*e->dev);
      e->dev.reset();
    }
    return st;
  }
  stats_.copies++;
  for (Entry* e : placed) {
    e->dev_ready = ready;
    e->dev->fences.push_back(ready);   // the copy writes it
    e->host->fences.push_back(ready);  // and reads this
    e->hits = 0;
    e->announced = false;
    stats_.promotions++;
    stats_.bytes_copied += e->image->bytes;
  }
  return Status::Ok();
}

Status PlanCache::lease_device(Entry* e, void* stream, PlanLease* out) {
  if (e->dev_ready) {
    if (tier_->done(e->dev_ready)) e->dev_ready.reset();
    else RINGATTN_RETURN_IF_ERROR(tier_->wait(e->dev_ready, stream));
  }
  e->dev->leases++;
  out->plan = e->plan;
  out->image = e->image;
  out->device = e->dev->ptr;
  out->block = e->dev;
  return Status::Ok();
}

Status PlanCache::stage(const std::shared_ptr<const PlanImage>& image, const BlockRef& host, void* stream,
                        PlanLease* out) {
  auto b = std::make_shared<Block>();
  b->kind = Block::Kind::device;
  b->staged = true;
  b->bytes = alloc_size(image->bytes);
  RINGATTN_RETURN_IF_ERROR(tier_->alloc_device(size_t(b->bytes), &b->ptr));
  FenceRef ready;
  Status st = tier_->copy_batch({DeviceTier::Copy{b->ptr, host->ptr, size_t(image->bytes)}}, &ready);
  if (!st.ok()) {
    free_block(*b);
    return st;
  }
  stats_.copies++;
  stats_.staged++;
  stats_.bytes_copied += image->bytes;
  b->fences.push_back(ready);
  host->fences.push_back(ready);
  b->leases = 1;
  drop(b);  // freed once released and its readers are done
  RINGATTN_RETURN_IF_ERROR(tier_->wait(ready, stream));
  out->image = image;
  out->device = b->ptr;
  out->block = std::move(b);
  return Status::Ok();
}

// ---------------------------------------------------------------- API

Status PlanCache::acquire_uncached(const Builder& build, void* stream, PlanLease* out) {
  Payload p;
  Status st = build_payload(build, false, &p);
  std::lock_guard<std::mutex> g(mu_);
  stats_.misses++;
  stats_.build_ms += p.build_ms;
  reclaim();
  if (!st.ok()) return st;
  out->plan = std::move(p.plan);
  if (tier_) {
    st = stage(p.image, p.host, stream, out);
    drop(std::move(p.host));
  }
  return st;
}

Status PlanCache::acquire(const PlanKey& key, const Builder& build, void* stream, PlanLease* out) {
  *out = PlanLease{};
  if (!opt_.enabled) return acquire_uncached(build, stream, out);
  const auto t0 = Clock::now();
  std::unique_lock<std::mutex> lk(mu_);
  reclaim();
  auto it = map_.find(key);
  if (it != map_.end() && it->second->state == State::building) {
    stats_.prefetch_waits++;  // announced, still building: wait for that build, never rebuild
    built_cv_.wait(lk, [&] {
      auto j = map_.find(key);
      return j == map_.end() || j->second->state != State::building;
    });
    it = map_.find(key);
  }
  if (it != map_.end() && it->second->state == State::failed) {
    map_.erase(it);
    it = map_.end();
  }
  const bool miss = it == map_.end();
  Entry* e = nullptr;
  if (miss) {
    stats_.misses++;
    e = begin_build(key);
    lk.unlock();
    Payload p;
    Status built = build_payload(build, true, &p);
    lk.lock();
    Status st = finish_build(e, built, std::move(p));
    if (!st.ok()) {
      map_.erase(key);
      return st;
    }
  } else {
    e = it->second.get();
  }
  touch(e);
  Status st;
  if (!tier_) {
    if (!miss) stats_.host_hits++;
    out->plan = e->plan;
  } else if (e->dev) {
    if (!miss) stats_.device_hits++;
    st = lease_device(e, stream, out);
  } else {
    if (!miss) {
      stats_.host_hits++;
      e->hits++;
    }
    if (opt_.promote_after_hits <= 0 || e->hits >= opt_.promote_after_hits || e->pinned || e->announced)
      st = place_on_device({e});
    if (st.ok()) st = e->dev ? lease_device(e, stream, out) : stage(e->image, e->host, stream, out);
    out->plan = e->plan;
  }
  enforce_host_budget();  // after the lease: may drop `e` itself if it alone exceeds the budget
  if (!miss) stats_.lookup_ms += ms_since(t0);
  if (!st.ok()) *out = PlanLease{};
  return st;
}

void PlanCache::release(PlanLease* lease, void* stream) {
  if (lease == nullptr || !lease->plan) return;
  FenceRef f;
  if (lease->block && tier_) {
    // The fence after every kernel of the forward that read the plan. If it
    // cannot be recorded the device is broken; the block then frees on reclaim.
    (void)tier_->record(stream, &f);
  }
  std::lock_guard<std::mutex> g(mu_);
  if (lease->block) {
    Block& b = *lease->block;
    auto& fs = b.fences;
    for (size_t j = 0; j < fs.size();) {  // keep only the fences still running
      if (tier_->done(fs[j])) {
        fs[j] = std::move(fs.back());
        fs.pop_back();
      } else {
        ++j;
      }
    }
    if (f) fs.push_back(std::move(f));
    b.leases--;
  }
  reclaim();
  *lease = PlanLease{};
}

Status PlanCache::pregenerate(const std::vector<std::pair<PlanKey, Builder>>& plans) {
  if (!opt_.enabled) return Status::Ok();
  std::unique_lock<std::mutex> lk(mu_);
  std::vector<PlanKey> keys;
  for (const auto& kb : plans) {
    built_cv_.wait(lk, [&] {
      auto j = map_.find(kb.first);
      return j == map_.end() || j->second->state != State::building;
    });
    auto it = map_.find(kb.first);
    if (it != map_.end() && it->second->state == State::ready) {
      it->second->pinned = true;
      keys.push_back(kb.first);
      continue;
    }
    if (it != map_.end()) map_.erase(it);
    Entry* e = begin_build(kb.first);
    e->pinned = true;
    lk.unlock();
    Payload p;
    Status built = build_payload(kb.second, true, &p);
    lk.lock();
    Status st = finish_build(e, built, std::move(p));
    if (!st.ok()) {
      map_.erase(kb.first);
      return st;
    }
    keys.push_back(kb.first);
  }
  std::vector<Entry*> batch;
  for (const PlanKey& k : keys) batch.push_back(map_.at(k).get());
  Status st = place_on_device(batch);  // one batched copy
  enforce_host_budget();
  return st;
}

void PlanCache::prefetch(const PlanKey& key, Builder build) {
  if (!opt_.enabled) return;
  std::lock_guard<std::mutex> g(mu_);
  reclaim();
  auto it = map_.find(key);
  if (it != map_.end()) {
    Entry* e = it->second.get();
    if (e->state == State::ready) {
      touch(e);
      if (tier_ && !e->dev) {
        e->announced = true;
        (void)place_on_device({e});  // async copy now; a failure leaves it staged at use
      }
    } else if (e->state == State::building) {
      e->announced = true;
    }
    return;  // failed: the forward rebuilds it
  }
  Entry* e = begin_build(key);
  e->announced = true;
  queue_.push_back(Job{key, std::move(build)});
  if (!worker_.joinable()) worker_ = std::thread([this] { worker(); });
  work_cv_.notify_one();
}

void PlanCache::worker() {
  std::unique_lock<std::mutex> lk(mu_);
  for (;;) {
    work_cv_.wait(lk, [&] { return stop_ || !queue_.empty(); });
    if (stop_) return;
    Job job = std::move(queue_.front());
    queue_.pop_front();
    worker_busy_ = true;
    Entry* e = map_.at(job.key).get();  // building entries are never erased by others
    lk.unlock();
    Payload p;
    Status built = build_payload(job.build, true, &p);
    lk.lock();
    stats_.prefetches++;
    if (finish_build(e, built, std::move(p)).ok()) to_place_.push_back(job.key);
    if (queue_.empty()) {
      // Everything announced so far moves in one batched copy. Off the
      // forward's path, so it may wait for evicted blocks' fences to make room.
      if (tier_ && !to_place_.empty()) {
        int64_t need = 0;
        for (const PlanKey& k : to_place_) {
          auto j = map_.find(k);
          if (j != map_.end() && j->second->state == State::ready && !j->second->dev)
            need += alloc_size(j->second->image->bytes);
        }
        if (device_held() + need > opt_.device_budget_bytes) wait_for_dropped(lk);
      }
      std::vector<Entry*> batch;
      for (const PlanKey& k : to_place_) {
        auto j = map_.find(k);
        if (j != map_.end() && j->second->state == State::ready && j->second->announced) batch.push_back(j->second.get());
      }
      to_place_.clear();
      (void)place_on_device(batch);  // a plan left on the host is staged when used
      enforce_host_budget();
    }
    worker_busy_ = false;
    idle_cv_.notify_all();
  }
}

void PlanCache::wait_idle() {
  std::unique_lock<std::mutex> lk(mu_);
  idle_cv_.wait(lk, [&] { return queue_.empty() && !worker_busy_; });
}

CacheStats PlanCache::stats() const {
  std::lock_guard<std::mutex> g(mu_);
  CacheStats s = stats_;
  s.plans_held = int64_t(host_lru_.size());
  s.device_plans = int64_t(dev_lru_.size());
  s.device_bytes = device_held();
  return s;
}

bool PlanCache::on_host(const PlanKey& key) const {
  std::lock_guard<std::mutex> g(mu_);
  auto it = map_.find(key);
  return it != map_.end() && it->second->in_host;
}

bool PlanCache::on_device(const PlanKey& key) const {
  std::lock_guard<std::mutex> g(mu_);
  auto it = map_.find(key);
  return it != map_.end() && it->second->in_dev;
}

std::vector<PlanKey> PlanCache::host_order() const {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<PlanKey> v;
  for (const Entry* e : host_lru_) v.push_back(e->key);
  return v;
}

std::vector<PlanKey> PlanCache::device_order() const {
  std::lock_guard<std::mutex> g(mu_);
  std::vector<PlanKey> v;
  for (const Entry* e : dev_lru_) v.push_back(e->key);
  return v;
}

}  // namespace ringattn

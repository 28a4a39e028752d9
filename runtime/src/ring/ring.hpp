// The ring: one step loop for every backend and every direction.
//
// A run is a list of ring steps. At step i this rank packs a block for
// `send_peer`, exchanges it over the transport while receiving one from
// `recv_peer` into one of k receive slots, and computes on what arrived. The
// caller says what to pack and what to compute (RingWork); the ring owns the
// schedule, the slots, the marks (events), the timeouts, the timeline and
// fault injection.
//
//   comm lane:    pack(0..k-1) xchg(0..k-1) | wait c1(0) pack(k) xchg(k) ...
//   compute lane: prologue, local | wait recv(0) compute(0) | wait recv(1) ...
//
// The exchange of step i+k reuses slot i%k, so it waits for compute(i) (its
// last reader). Every rank sends only its own rows (step d goes straight to
// rank p+d), so no exchange waits for another's data: with k = n slots
// (RingOptions::slots; `auto` when the blocks fit the slot budget) all of a
// run's exchanges are posted before the local compute, in one transport
// group (one NCCL kernel that holds its SMs before the persistent attention
// grid takes them all). Host-driven transports (mpi) keep k = 2 and post one
// ahead, the host completing each before its compute is enqueued.
//
// On asynchronous lanes a run whose transport is not host-driven returns with
// its work in flight; at most one is: the next run (after enqueuing its own
// work), finish() and the destructor wait for it under the timeout, watching
// the transport's asynchronous errors, and a failure names the first step
// whose block never arrived. A rank that fails mid-run aborts the transport.
//
// The return channel (the backward): a step may also send a block back to the
// rank it received from, made by its compute (partial dK/dV of the received
// keys, in float32), and receive the block its own send peer returns; the
// work then adds it in (`returned`), in schedule order, so the sum never
// depends on timing. Returns travel on channel 1 of the transport.
//   host-driven transports (mpi): a step's return is posted after its compute
//   and completed (and added) after the next step's, through two slots;
//   lane-ordered transports (nccl): every return is enqueued on the comm lane
//   after the last forward exchange, in step order, and added after the last
//   compute; each step has its own return slots (no slot is reused within a
//   run). The order of operations on the comm lane is then the same on every
//   rank whatever steps it skips (all forward exchanges by ring distance, then
//   all returns by ring distance), so one communicator and one stream cannot
//   deadlock or match a return against a forward block.
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

#include "ring/fault.hpp"
#include "ring/lanes.hpp"
#include "ringattn/ringattn.hpp"
#include "transport/transport.hpp"

namespace ringattn {

struct RingStep {
  int step = 0;  // ring distance d: send to p+d, receive from p-d
  int send_peer = -1, recv_peer = -1;
  size_t send_bytes = 0, recv_bytes = 0;
  int64_t bytes_ideal = 0;  // bytes the peer's computation needs from this rank
  bool send_whole = false;  // the block is the shard as it is: pack writes no slot
  // Return channel: bytes sent back to recv_peer (made by this step's
  // compute), bytes received from send_peer (returned for what it was sent).
  size_t back_send_bytes = 0, back_recv_bytes = 0;
};

// What the caller computes. Every call enqueues on its lane (or runs, on the
// host lanes) and returns.
class RingWork {
 public:
  static constexpr size_t kLocal = size_t(-1);
  virtual ~RingWork() = default;
  // Compute lane, first: e.g. initialise O and LSE.
  virtual Status prologue() { return Status::Ok(); }
  // Where step i's block for its send peer lies: its halves (K, V) are
  // `block[0]` and `block[1]`, set to the two halves of the send slot
  // `slot`, which the work fills on the comm lane; or the work points them
  // at data that can travel as it is (a shard sent whole), writing nothing.
  virtual Status pack(size_t i, void* slot, const void* block[2]) = 0;
  // Compute lane: on this rank's own data (i == kLocal), or on the block
  // received at step i (`recv`, only for steps that receive); `back`: the
  // block to return to the step's receive peer, which this call fills (null
  // when the step returns nothing).
  virtual Status compute(size_t i, const void* recv, void* back) = 0;
  // Compute lane: the block returned for what step i sent (return channel).
  virtual Status returned(size_t i, const void* block) {
    (void)i;
    (void)block;
    return Status::Ok();
  }
  // Compute lane, last: after every compute and every returned block.
  virtual Status epilogue() { return Status::Ok(); }
};

struct RingOptions {
  int rank = 0;
  double timeout_s = 60;
  WaitPolicy wait = WaitPolicy::spin;  // how the host waits for the lanes
  // Receive (and send) slots on lane-ordered transports: 0 = auto (every
  // step's, when they fit slot_budget bytes; else as many as fit, at least
  // 2); otherwise that many (at least 2, at most the steps of a run).
  // Host-driven transports always use 2. RINGATTN_RING_SLOTS (cuda backend).
  size_t slots = 0;
  size_t slot_budget = size_t(4) << 30;
};

// Parses RINGATTN_RING_SLOTS ("auto" or an integer >= 2) into RingOptions::slots.
Status ring_slots_from_env(size_t* slots);

class Ring {
 public:
  // `lanes` outlive the ring; `transport` too, unless finish() returned
  // before it went (a transport that aborts must go before the slots are
  // freed: freeing device memory waits for every kernel, NCCL's included).
  Ring(const RingOptions& o, RingTransport* transport, Lanes* lanes);
  ~Ring();
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;

  // Runs `steps` on the caller's `stream`; fills stats' bytes now and its
  // timeline once the run is complete.
  Status run(const std::vector<RingStep>& steps, RingWork* work, void* stream, Stats* stats);
  // Waits for the run in flight, if any.
  Status finish();

 private:
  struct Pending {
    bool active = false;
    Stats* stats = nullptr;
    std::vector<StepTiming> steps;
  };
  class Fence;
  class BackFence;
  Status start(size_t i, const std::vector<RingStep>& steps, RingWork* work);
  Status start_group(size_t first, size_t end, const std::vector<RingStep>& steps, RingWork* work);
  Status reserve(const std::vector<RingStep>& steps);
  void release_slots();
  Status wait_complete(int set, const Pending& p);
  void fill_timeline(int set, const Pending& p) const;
  Exchange exchange(size_t i, const RingStep& s, const SlotFence* fence, int channel = 0);

  RingOptions opt_;
  RingTransport* transport_;
  Lanes* lanes_;
  FaultPlan fault_;
  Pending pending_;
  size_t k_ = 2;                      // slots in use this run (step i uses slot i % k_)
  std::vector<void*> send_, recv_;    // allocated slots (at least k_ of each)
  std::vector<const void*> block_;    // per slot: the halves sent (2 per slot)
  size_t send_cap_ = 0, recv_cap_ = 0;
  size_t sent_cap_ = 0;               // the largest block sent (slot or not)
  bool reserved_ = false;             // every slot and the transport reserved for the caps
  // Return slots: one buffer per direction; step i's slot at back_*_at_[i]
  // (two alternating slots on host-driven transports, one per step otherwise).
  void* back_send_ = nullptr;
  void* back_recv_ = nullptr;
  size_t back_send_cap_ = 0, back_recv_cap_ = 0;
  std::vector<size_t> back_send_at_, back_recv_at_;
  void* back_send_slot(size_t i) const { return static_cast<char*>(back_send_) + back_send_at_[i]; }
  void* back_recv_slot(size_t i) const { return static_cast<char*>(back_recv_) + back_recv_at_[i]; }
};

}  // namespace ringattn

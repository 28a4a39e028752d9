// Diagnostic per-item timing trace of the forward kernel (builds with
// RINGATTN_FWD_TRACE=1, CMake option RINGATTN_FWD_TRACE; default off, and then
// no kernel code reads FwdParams::trace). bench/kernel_fwd.cu --trace reads it.
//
// FwdParams::trace, per CTA c: 1 + trace_items records of kTraceSlots words at
// trace + c * (trace_items + 1) * kTraceSlots. Record 0 is the CTA's header
// (kTraceH*), record 1 + i its item i (i = this CTA's item index, 0, 1, ...;
// items past trace_items are not recorded). Times are clock64() (the SM's
// cycle counter: only differences within one CTA mean something) except the
// header's globaltimer words (ns), which give the cycles' rate. One thread per
// role writes: producer tid 0, consumer warpgroup w its thread 128 * w. A word
// nobody wrote keeps what the host put there (0).
#pragma once
#include <cstdint>
#include "kernels/cuda/attention_fwd.hpp"
#include "kernels/cuda/sm90_ptx.cuh"

namespace ringattn::kern::cuda {

enum FwdTraceSlot : int {
  // producer (tid 0)
  kTrPItemDecoded = 0,  // tile found, just before the item's f() (tile_scheduler.cuh)
  kTrPQEmptyDone,       // mbar_wait(q_empty) returned: Q's gather starts
  kTrPLastKvIssued,     // the item's last {K, V} group issued
  kTrPNextClaimed,      // next item known (after the atomicAdd and producer_sync when dynamic)
  // consumer warpgroup w: kTrC0 + w * kTrCEvents + event
  kTrC0,
  kTrCEvents = 5,
  // values, not times (producer)
  kTrNBlocks = kTrC0 + 2 * kTrCEvents,  // the item's key blocks
  kTrItem,                              // the item's index in the pass (w)
  kTraceSlots                           // 16
};
enum FwdTraceCEvent : int {
  kTrCQReady = 0,     // mbar_wait(q_full) returned and the item read
  kTrCFirstSDone,     // the first block's S = Q K^T waited for (and the other warpgroup's turn given)
  kTrCLoopEnd,        // after the per-block loop
  kTrCTailPvDone,     // the tail P V waited for
  kTrCEpilogueDone,   // epilogue.store returned (its stores issued)
};
enum FwdTraceHeader : int {
  kTrHTimerStart = 0,  // %globaltimer (ns), after the barrier set-up
  kTrHClockStart,      // clock64 at the same point
  kTrHTimerEnd,        // %globaltimer, consumer warpgroup 0 done
  kTrHClockEnd,
  kTrHItems,           // items this CTA took (the producer's count)
  kTrHSmId,
};
static_assert(kTraceSlots == 16, "trace record layout");

#if RINGATTN_FWD_TRACE
namespace detail {

// Word `slot` of this CTA's record r (0: the header).
__device__ __forceinline__ unsigned long long* trace_word(const FwdParams& p, int r, int slot) {
  return p.trace + (int64_t(blockIdx.x) * (p.trace_items + 1) + r) * kTraceSlots + slot;
}
// Item itc's word `slot` = v (when traced and itc fits).
__device__ __forceinline__ void trace_put(const FwdParams& p, int itc, int slot, unsigned long long v) {
  if (p.trace != nullptr && itc < p.trace_items) *trace_word(p, 1 + itc, slot) = v;
}
__device__ __forceinline__ void trace_mark(const FwdParams& p, int itc, int slot) {
  if (p.trace != nullptr && itc < p.trace_items) *trace_word(p, 1 + itc, slot) = clock64_now();
}
// Header: globaltimer and clock64 at slots ts, ts + 1.
__device__ __forceinline__ void trace_times(const FwdParams& p, int ts) {
  if (p.trace == nullptr) return;
  const unsigned long long g = globaltimer_now(), c = clock64_now();
  *trace_word(p, 0, ts) = g;
  *trace_word(p, 0, ts + 1) = c;
}
__device__ __forceinline__ void trace_header(const FwdParams& p, int slot, unsigned long long v) {
  if (p.trace != nullptr) *trace_word(p, 0, slot) = v;
}

}  // namespace detail
#endif

}  // namespace ringattn::kern::cuda

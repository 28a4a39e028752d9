// Diagnostic per-CTA timing trace of the backward's dK/dV kernel (builds with
// RINGATTN_BWD_TRACE=1, CMake option RINGATTN_BWD_TRACE; default off, and then
// no kernel code reads BwdParams::trace). bench/kernel_fwd.cu --bwd --trace reads it.
//
// BwdParams::trace, per CTA (item x, batch y; c = y * gridDim.x + x): one
// record of kBwdTraceSlots words at trace + c * kBwdTraceSlots. Times are
// clock64() (the SM's cycle counter: only differences within one CTA mean
// something) except the globaltimer words (ns), which give the cycles' rate;
// the *Wait and kBtPDrainWork words are cycles summed over the CTA (32 bits).
// One thread per role writes: producer tid 0 (the header, its slots), consumer
// warpgroup w its first thread (its slots; w = 0 also the end times and
// kBtStaged0). A CTA with nothing to do (causal) writes nothing. During the
// run the producer's slots and the consumers' times live in a shadow of the
// record in shared memory (DkdvSmem::kTraceOff, 256 bytes more shared memory);
// each role copies its slots out at its end. The shadow is written also when
// p.trace is null (a traced build's untraced runs cost the same). A word
// nobody wrote keeps what the host put there (0).
#pragma once
#include <cstdint>
#include "kernels/cuda/attention_bwd.hpp"
#include "kernels/cuda/sm90_ptx.cuh"

namespace ringattn::kern::cuda {

enum BwdTraceSlot : int {
  // header (producer tid 0 after the barrier set-up; the end: consumer warpgroup 0)
  kBtTimerStart = 0,  // %globaltimer (ns), after the barrier set-up
  kBtClockStart,      // clock64 at the same point
  kBtTimerEnd,        // %globaltimer, consumer warpgroup 0's epilogue done
  kBtClockEnd,
  kBtClockEntry,      // clock64 at the kernel's entry (before the tile lookup)
  kBtSmId,
  kBtNBlk,            // query blocks of 64 this CTA walks
  kBtFlags,           // kBtFlag* bits
  kBtStaged0,         // consumer warpgroup 0: both warpgroups' dK/dV staged in shared memory
                      // (before the key rows and the pdl wait)
  // producer (tid 0): times
  kBtPKvIssued,       // the K and V gathers issued (by the consumers; the first consumer thread marks it)
  kBtPFirstIssued,    // issue(0) done (block 0's loads issued)
  kBtPLastIssued,     // issue(nblk - 1) done
  kBtPDone,           // after the loop (last drain done), before cp.async.wait_all
  // producer: cycles summed over the CTA
  kBtPDqFullWait,     // drain's mbar_wait(dq_full)
  kBtPDrainWork,      // drain after that wait: the LDS/REDG loop and the dq_empty arrive
  kBtPEmptyWait,      // issue's mbar_wait(empty)
  // consumer warpgroup w: kBtC0 + w * kBtCEvents + event
  kBtC0,
  kBtCEvents = 8,
  kBwdTraceSlots = kBtC0 + 2 * kBtCEvents  // 32
};
enum BwdTraceCEvent : int {
  kBtCFirstFull = 0,  // block 0's full wait returned (its data landed)
  kBtCBlock0End,      // block 0's empty arrive
  kBtCLastStart,      // top of block nblk - 1 (before its full wait)
  kBtCLoopEnd,        // after the main loop, before the epilogue
  kBtCAddsStart,      // dK/dV staged, key rows found, the pdl wait passed: grad_add4_rows starts
  kBtCEpilogueDone,   // both grad_add4_rows returned (their stores issued)
  // cycles summed over the CTA
  kBtCDqEmptyWait,    // dq_stage's mbar_wait(dq_empty)
  kBtCFullWait,       // the main loop's mbar_wait(full)
};
enum BwdTraceFlag : unsigned {
  kBtFlagFresh = 1,     // p.overwrite with split accumulators: the epilogue writes without reading
  kBtFlagAtomic = 2,    // p.dq_atomic
  kBtFlagPdl = 4,       // p.pdl
  kBtFlagDqFirst = 8,   // p.dq_first
  kBtFlagPingpong = 16, // p.pingpong
};
static_assert(kBwdTraceSlots == 32, "trace record layout");

#if RINGATTN_BWD_TRACE
namespace detail {

// This CTA's record, null when p.trace is. Its inputs read afresh (asm
// volatile): a null test or indices kept from the kernel's start cost the
// producer (24 registers) spills.
__device__ __forceinline__ unsigned long long* bwd_trace_rec(const BwdParams& p) {
  unsigned long long* t;
  uint32_t x, y, nx;
  asm volatile("mov.b64 %0, %1;\n" : "=l"(t) : "l"(p.trace));
  asm volatile("mov.u32 %0, %%ctaid.x;\n" : "=r"(x));
  asm volatile("mov.u32 %0, %%ctaid.y;\n" : "=r"(y));
  asm volatile("mov.u32 %0, %%nctaid.x;\n" : "=r"(nx));
  return t == nullptr ? nullptr : t + (int64_t(y) * nx + x) * kBwdTraceSlots;
}
// The shared-memory shadow: word `slot` at sh + 8 slot.
__device__ __forceinline__ void bwd_trace_st(uint32_t sh, int slot, unsigned long long v) {
  asm volatile("st.shared.u64 [%0], %1;\n" ::"r"(sh + 8 * slot), "l"(v) : "memory");
}
__device__ __forceinline__ unsigned long long bwd_trace_ld(uint32_t sh, int slot) {
  unsigned long long v;
  asm volatile("ld.shared.u64 %0, [%1];\n" : "=l"(v) : "r"(sh + 8 * slot) : "memory");
  return v;
}
__device__ __forceinline__ void bwd_trace_mark(uint32_t sh, int slot) { bwd_trace_st(sh, slot, clock64_now()); }
// Summed cycles in the shadow, as 32 bits (the word's low half; a CTA's sums
// fit): v - clock before a wait, v + clock after it.
__device__ __forceinline__ uint32_t bwd_trace_ld32(uint32_t sh, int slot) {
  uint32_t v;
  asm volatile("ld.shared.u32 %0, [%1];\n" : "=r"(v) : "r"(sh + 8 * slot) : "memory");
  return v;
}
__device__ __forceinline__ void bwd_trace_st32(uint32_t sh, int slot, uint32_t v) {
  asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(sh + 8 * slot), "r"(v) : "memory");
}
__device__ __forceinline__ void bwd_trace_sub_now(uint32_t sh, int slot) {
  bwd_trace_st32(sh, slot, bwd_trace_ld32(sh, slot) - clock32_now());
}
__device__ __forceinline__ void bwd_trace_add_now(uint32_t sh, int slot) {
  bwd_trace_st32(sh, slot, bwd_trace_ld32(sh, slot) + clock32_now());
}
// Words [first, first + n) of the shadow into the record.
__device__ __forceinline__ void bwd_trace_copy(unsigned long long* r, uint32_t sh, int first, int n) {
  for (int s = first; s < first + n; ++s) r[s] = bwd_trace_ld(sh, s);
}

}  // namespace detail
#endif

}  // namespace ringattn::kern::cuda

// Kernel development driver: times one single-rank forward (fwd_init_outputs
// and every pass of the plan, as the CUDA executor runs them) with device
// events, on the project's planner and nothing else of the runtime.
//
//   ringattn_kernel_fwd [--config NAME | --branches W:R,...] [--seq N] [--heads H]
//                       [--head-dim 64|128] [--dtype bf16|f16] [--causal] [--batch B]
//                       [--warmup 2] [--warmup-ms 1000] [--iters 20] [--bwd [--bwd-dq pass|atomic] [--bwd-dq-last] [--bwd-no-pingpong]
//                       [--bwd-acc f32|split] [--bwd-no-tma]] [--no-pdl] [--trace [--trace-csv FILE] [--bwd-trace-csv FILE]]
//
// --trace (a build with -DRINGATTN_FWD_TRACE=ON only): after the timed runs,
// one more forward with FwdParams::trace set, each pass into its own buffer
// (kernels/cuda/fwd_trace.cuh), and per pass the medians (p10, p90, mean)
// over work items of where a CTA's time goes, in microseconds, on lines
// starting with `trace `; --trace-csv also writes every traced item (cycles
// from its CTA's start).
// --bwd --trace (a build with -DRINGATTN_BWD_TRACE=ON): after the timed
// backward, one more sequence of the dK/dV launches with BwdParams::trace set,
// each pass into its own buffer (kernels/cuda/bwd_trace.cuh: one record per
// CTA), and per pass the same statistics over CTAs on lines starting with
// `trace bwd `; --bwd-trace-csv writes every CTA's record. With both options
// built --trace traces both; with one, what is built.
//
// --bwd: also the backward's launches, each timed apart (Delta, the dK/dV
// kernels of every pass, the dQ kernels, the float32 -> 16-bit conversion),
// with the FLOPs each really executes (dK/dV: S, dP, dV, dK = 4 GEMMs = 2x
// the forward's useful FLOPs; dQ: S, dP, dQ = 1.5x) and the useful backward
// TFLOP/s (SPEC: 2.5x the forward) of their sum. --bwd-acc f32 (default):
// dQ, dK, dV accumulate in float32, three conversions; split: as the CUDA
// executor runs them, the gradients plus bf16 remainders (atomic dQ: float32,
// one conversion), the first pass writing instead of adding where it holds
// every local row (Plan::first_pass_covers_local); the executor's memsets
// of the other case are not timed.
//
// As the executor (RINGATTN_PDL, default on), every pass launch after the
// first of a timed sequence is a programmatic dependent launch
// (FwdParams::pdl, BwdParams::pdl, pdl_dq), so it starts on the SMs the
// previous pass's tail leaves; --no-pdl launches them all plain (A/B). Work
// goes onto a stream of its own (blocking: ordered with the default stream's
// input fills and copies).
//
// Warm-up: --warmup forwards, then more until --warmup-ms (default 1000) have
// passed: under its power cap a GPU holds its boost clock only for the first
// ~0.1 s of load (a `longnet4` 64k forward: 3.70 ms for six runs, then 3.94-4.45,
// bench/results/gpu-2026-11-25/cache_on_65536.json), so 20 runs straight after
// two warm-ups mixed both states and their median swung between calls.
// The forward's line also gives the first and last of the timed runs.
//
// Prints a hash of the last forward's O and LSE (`bits:`; the same for two trees
// that compute the same bits), and the median and minimum time of --iters runs after --warmup, the
// useful FLOPs (SPEC.md) and TFLOP/s. Inputs are random (generated on the
// device) and rotate between two sets where memory allows, so no run finds
// its inputs in L2. Correctness is tests/gpu/test_cuda_fwd.cu's job; this
// only checks that a sample of O is finite.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "ringattn/names.hpp"
#include "backend/env_choice.hpp"
#include "kernels/cuda/attention_bwd.hpp"
#include "kernels/cuda/attention_fwd.hpp"
#include "kernels/cuda/bwd_trace.cuh"
#include "kernels/cuda/fwd_trace.cuh"
#include "plan/plan.hpp"
#include "plan/plan_image.hpp"
#include "ringattn/config.hpp"

namespace kc = ringattn::kern::cuda;
using namespace ringattn;

#define CHECK_CUDA(expr)                                                                                  \
  do {                                                                                                   \
    cudaError_t e_ = (expr);                                                                             \
    if (e_ != cudaSuccess) {                                                                             \
      std::fprintf(stderr, "%s:%d: %s failed: %s\n", __FILE__, __LINE__, #expr, cudaGetErrorString(e_)); \
      std::exit(1);                                                                                      \
    }                                                                                                    \
  } while (0)

namespace {

#if RINGATTN_FWD_TRACE
constexpr bool kFwdTraceBuilt = true;
#else
constexpr bool kFwdTraceBuilt = false;
#endif
#if RINGATTN_BWD_TRACE
constexpr bool kBwdTraceBuilt = true;
#else
constexpr bool kBwdTraceBuilt = false;
#endif

[[noreturn]] void usage(const std::string& why) {
  std::fprintf(stderr,
               "ringattn_kernel_fwd: %s\nusage: ringattn_kernel_fwd [--config NAME | --branches W:R,...] [--seq N] "
               "[--heads H] [--head-dim 64|128] [--dtype bf16|f16] [--causal] [--batch B] [--warmup N] [--warmup-ms MS] [--iters N]\n"
               "       [--bwd [--bwd-dq pass|atomic] [--bwd-dq-last] [--bwd-no-pingpong] [--bwd-acc f32|split] [--bwd-no-tma]] [--no-pdl]\n"
               "       [--trace [--trace-csv FILE] [--bwd-trace-csv FILE]] (a build with -DRINGATTN_FWD_TRACE=ON\n"
               "       and/or -DRINGATTN_BWD_TRACE=ON: the forward's, the backward dK/dV kernel's trace)\n",
               why.c_str());
  std::exit(2);
}

void check(const Status& s) {
  if (!s.ok()) usage(s.to_string());
}

// Uniform values in [-1, 1) from a hash of (seed, index), as 16-bit floats.
__global__ void fill_random(uint16_t* x, size_t n, uint32_t seed, bool bf16) {
  for (size_t i = size_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += size_t(gridDim.x) * blockDim.x) {
    uint32_t h = uint32_t(i) * 2654435761u ^ uint32_t(i >> 32) * 40503u ^ seed * 0x9E3779B9u;
    h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
    const float f = float(h >> 8) * (2.f / 16777216.f) - 1.f;
    x[i] = bf16 ? __bfloat16_as_ushort(__float2bfloat16(f)) : __half_as_ushort(__float2half(f));
  }
}

struct DeviceBuffer {
  void* p = nullptr;
  explicit DeviceBuffer(size_t bytes) { CHECK_CUDA(cudaMalloc(&p, std::max<size_t>(bytes, 16))); }
  ~DeviceBuffer() { cudaFree(p); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
};

// Per-item trace of one pass (fwd_trace.cuh): words of `ctas` CTAs of
// (items + 1) records each.
struct PassTrace {
  std::vector<unsigned long long> w;
  int ctas = 0, items = 0;
  const unsigned long long* rec(int cta, int r) const {
    return w.data() + (size_t(cta) * (items + 1) + r) * kc::kTraceSlots;
  }
};

// Order statistics of one quantity over items, in microseconds.
struct Stat {
  std::vector<double> v;
  void add(double x) { v.push_back(x); }
  double q(double f) const { return v[size_t(f * double(v.size() - 1) + 0.5)]; }
  void print(const std::string& tag, const char* name, const char* what) {
    if (v.empty()) {
      std::printf("%s %-26s (no items)  %s\n", tag.c_str(), name, what);
      return;
    }
    std::sort(v.begin(), v.end());
    double sum = 0;
    for (double x : v) sum += x;
    std::printf("%s %-26s med %9.3f p10 %9.3f p90 %9.3f mean %9.3f n %6zu  %s\n", tag.c_str(), name, q(0.5), q(0.1),
                q(0.9), sum / double(v.size()), v.size(), what);
  }
};

double median_of(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

// The `trace ` lines of one pass (and its items into csv, if open).
void summarize_trace(const PassTrace& t, const std::string& tag, int64_t pass_items, int pass, FILE* csv) {
  using ull = unsigned long long;
  std::vector<double> ghz, life;
  ull t_first = ~0ull, t_last = 0, start_max = 0, end_min = ~0ull;
  int ctas = 0, items_min = INT32_MAX, items_max = 0, headless = 0;
  int64_t items_all = 0, untraced = 0;
  for (int c = 0; c < t.ctas; ++c) {
    const ull* h = t.rec(c, 0);
    if (h[kc::kTrHTimerStart] == 0) continue;  // no such CTA
    ++ctas;
    if (h[kc::kTrHTimerEnd] == 0) { ++headless; continue; }
    const double dt = double(h[kc::kTrHTimerEnd] - h[kc::kTrHTimerStart]);
    if (dt > 0) ghz.push_back(double(h[kc::kTrHClockEnd] - h[kc::kTrHClockStart]) / dt);
    life.push_back(dt * 1e-3);
    t_first = std::min(t_first, h[kc::kTrHTimerStart]);
    start_max = std::max(start_max, h[kc::kTrHTimerStart]);
    t_last = std::max(t_last, h[kc::kTrHTimerEnd]);
    end_min = std::min(end_min, h[kc::kTrHTimerEnd]);
    const int n = int(h[kc::kTrHItems]);
    items_min = std::min(items_min, n);
    items_max = std::max(items_max, n);
    items_all += n;
    untraced += std::max(0, n - t.items);
  }
  if (ctas == 0 || ghz.empty()) {
    std::printf("%s no CTA wrote its header: were the kernels built with RINGATTN_FWD_TRACE?\n", tag.c_str());
    return;
  }
  const double f = median_of(ghz);  // cycles per ns
  std::sort(ghz.begin(), ghz.end());
  std::printf("%s %lld items, %d CTAs traced (%d without an end), items/CTA %d..%d, %lld items taken, %lld past "
              "trace_items=%d\n",
              tag.c_str(), (long long)pass_items, ctas, headless, items_min, items_max, (long long)items_all,
              (long long)untraced, t.items);
  std::printf("%s SM clock %.4f GHz (median over CTAs, %.4f..%.4f); pass %.2f us by globaltimer (first CTA start -> "
              "last CTA end), CTA starts spread %.2f us, ends spread %.2f us, CTA life med %.2f us\n",
              tag.c_str(), f, ghz.front(), ghz.back(), double(t_last - t_first) * 1e-3,
              double(start_max - t_first) * 1e-3, double(t_last - end_min) * 1e-3, median_of(life));

  const auto us = [f](ull a, ull b) { return (double(b) - double(a)) / (f * 1e3); };  // a -> b
  const auto C = [](const ull* r, int wg, int e) { return r[kc::kTrC0 + wg * kc::kTrCEvents + e]; };
  Stat item, first_item, nblk, qw[2], first_q[2], first_blk[2], loop[2], per_blk[2], per_blk2[2], tail[2], epi[2],
      lag_q, lag_epi, p_decode, p_qwait, p_claim_to_q, p_kv, p_claim, qe_vs_loop, qe_to_ready, kv_vs_loop;
  for (int c = 0; c < t.ctas; ++c) {
    const ull* h = t.rec(c, 0);
    if (h[kc::kTrHTimerStart] == 0 || h[kc::kTrHTimerEnd] == 0) continue;
    const int n = std::min(int(h[kc::kTrHItems]), t.items);
    const ull c0 = h[kc::kTrHClockStart];
    for (int i = 0; i < n; ++i) {
      const ull* r = t.rec(c, 1 + i);
      const ull* pr = i > 0 ? t.rec(c, i) : nullptr;
      const int nb = int(r[kc::kTrNBlocks]);
      nblk.add(nb);
      auto ok = [](ull a, ull b) { return a != 0 && b != 0; };
      if (pr && ok(C(pr, 0, kc::kTrCEpilogueDone), C(r, 0, kc::kTrCEpilogueDone)))
        item.add(us(C(pr, 0, kc::kTrCEpilogueDone), C(r, 0, kc::kTrCEpilogueDone)));
      if (!pr && C(r, 0, kc::kTrCEpilogueDone)) first_item.add(us(c0, C(r, 0, kc::kTrCEpilogueDone)));
      for (int wg = 0; wg < 2; ++wg) {
        const ull q = C(r, wg, kc::kTrCQReady), s0 = C(r, wg, kc::kTrCFirstSDone), le = C(r, wg, kc::kTrCLoopEnd),
                  tp = C(r, wg, kc::kTrCTailPvDone), ep = C(r, wg, kc::kTrCEpilogueDone);
        if (pr && ok(C(pr, wg, kc::kTrCEpilogueDone), q)) qw[wg].add(us(C(pr, wg, kc::kTrCEpilogueDone), q));
        if (!pr && q) first_q[wg].add(us(c0, q));
        if (ok(q, s0)) first_blk[wg].add(us(q, s0));
        if (ok(q, le)) loop[wg].add(us(q, le));
        if (ok(q, le) && nb > 0) per_blk[wg].add(us(q, le) / nb);
        if (ok(s0, le) && nb > 1) per_blk2[wg].add(us(s0, le) / (nb - 1));
        if (ok(le, tp)) tail[wg].add(us(le, tp));
        if (ok(tp, ep)) epi[wg].add(us(tp, ep));
      }
      if (ok(C(r, 0, kc::kTrCQReady), C(r, 1, kc::kTrCQReady)))
        lag_q.add(us(C(r, 0, kc::kTrCQReady), C(r, 1, kc::kTrCQReady)));
      if (ok(C(r, 0, kc::kTrCEpilogueDone), C(r, 1, kc::kTrCEpilogueDone)))
        lag_epi.add(us(C(r, 0, kc::kTrCEpilogueDone), C(r, 1, kc::kTrCEpilogueDone)));
      const ull dec = r[kc::kTrPItemDecoded], qe = r[kc::kTrPQEmptyDone], kv = r[kc::kTrPLastKvIssued],
                nx = r[kc::kTrPNextClaimed];
      if (pr && ok(pr[kc::kTrPNextClaimed], dec)) p_decode.add(us(pr[kc::kTrPNextClaimed], dec));
      if (ok(dec, qe)) p_qwait.add(us(dec, qe));
      if (pr && ok(pr[kc::kTrPNextClaimed], qe)) p_claim_to_q.add(us(pr[kc::kTrPNextClaimed], qe));
      if (ok(qe, kv)) p_kv.add(us(qe, kv));
      if (ok(kv, nx)) p_claim.add(us(kv, nx));
      if (pr && ok(C(pr, 0, kc::kTrCLoopEnd), C(pr, 1, kc::kTrCLoopEnd)) && qe)
        qe_vs_loop.add(us(std::max(C(pr, 0, kc::kTrCLoopEnd), C(pr, 1, kc::kTrCLoopEnd)), qe));
      if (ok(qe, C(r, 0, kc::kTrCQReady))) qe_to_ready.add(us(qe, C(r, 0, kc::kTrCQReady)));
      if (ok(C(r, 0, kc::kTrCLoopEnd), kv)) kv_vs_loop.add(us(C(r, 0, kc::kTrCLoopEnd), kv));
      if (csv) {
        std::fprintf(csv, "%d,%d,%llu,%d,%llu,%d,%.6f", pass, c, h[kc::kTrHSmId], i, r[kc::kTrItem], nb, f);
        for (int e = 0; e < kc::kTrNBlocks; ++e) std::fprintf(csv, ",%lld", r[e] ? (long long)(r[e] - c0) : -1ll);
        std::fprintf(csv, "\n");
      }
    }
  }
  std::printf("%s us over items (item i; wg0/wg1 = consumer warpgroup; P = producer):\n", tag.c_str());
  nblk.print(tag, "n_blocks", "(a count, not us) key blocks per item");
  item.print(tag, "item_wg0", "C_EPILOGUE_DONE(i-1) -> C_EPILOGUE_DONE(i), wg0");
  first_item.print(tag, "first_item_wg0", "CTA start -> C_EPILOGUE_DONE(0), wg0");
  for (int wg = 0; wg < 2; ++wg) {
    const std::string s = std::to_string(wg);
    qw[wg].print(tag, ("q_wait_wg" + s).c_str(), "C_EPILOGUE_DONE(i-1) -> C_Q_READY(i)");
    first_q[wg].print(tag, ("first_q_wg" + s).c_str(), "CTA start -> C_Q_READY(0)");
    first_blk[wg].print(tag, ("first_block_wg" + s).c_str(), "C_Q_READY -> C_FIRST_S_DONE");
    loop[wg].print(tag, ("main_loop_wg" + s).c_str(), "C_Q_READY -> C_LOOP_END");
    per_blk[wg].print(tag, ("per_block_wg" + s).c_str(), "main loop / n_blocks");
    per_blk2[wg].print(tag, ("per_block_after_first_wg" + s).c_str(), "C_FIRST_S_DONE -> C_LOOP_END / (n_blocks - 1)");
    tail[wg].print(tag, ("tail_pv_wg" + s).c_str(), "C_LOOP_END -> C_TAIL_PV_DONE");
    epi[wg].print(tag, ("epilogue_wg" + s).c_str(), "C_TAIL_PV_DONE -> C_EPILOGUE_DONE");
  }
  lag_q.print(tag, "wg1_lag_q_ready", "C_Q_READY wg1 - wg0");
  lag_epi.print(tag, "wg1_lag_epilogue", "C_EPILOGUE_DONE wg1 - wg0");
  p_decode.print(tag, "p_decode", "P_NEXT_CLAIMED(i-1) -> P_ITEM_DECODED(i)");
  p_qwait.print(tag, "p_q_empty_wait", "P_ITEM_DECODED -> P_Q_EMPTY_DONE");
  p_claim_to_q.print(tag, "p_claim_to_q", "P_NEXT_CLAIMED(i-1) -> P_Q_EMPTY_DONE(i)");
  p_kv.print(tag, "p_kv_issue", "P_Q_EMPTY_DONE -> P_LAST_KV_ISSUED");
  p_claim.print(tag, "p_claim", "P_LAST_KV_ISSUED -> P_NEXT_CLAIMED");
  qe_vs_loop.print(tag, "q_empty_vs_loop_end", "max(C_LOOP_END wg0, wg1)(i-1) -> P_Q_EMPTY_DONE(i)");
  qe_to_ready.print(tag, "q_issue_to_ready_wg0", "P_Q_EMPTY_DONE(i) -> C_Q_READY(i) wg0");
  kv_vs_loop.print(tag, "last_kv_vs_loop_end_wg0", "C_LOOP_END wg0 -> P_LAST_KV_ISSUED (negative: producer ahead)");
  if (!item.v.empty() && !per_blk2[0].v.empty()) {
    const double blk = per_blk2[0].q(0.5), it = item.q(0.5), nb = nblk.q(0.5);
    std::printf("%s item overhead: med item %.3f us - med n_blocks %.0f x med per block after the first %.3f us = "
                "%.3f us\n",
                tag.c_str(), it, nb, blk, it - nb * blk);
  }
}


// The `trace bwd ` lines of one pass of the backward's dK/dV kernel
// (bwd_trace.cuh: `ctas` records, `items` per batch element) and its CTAs into csv, if open.
void summarize_bwd_trace(const unsigned long long* w, int64_t ctas, int64_t items, const std::string& tag, int pass,
                         FILE* csv) {
  using ull = unsigned long long;
  const auto R = [w](int64_t c) { return w + size_t(c) * kc::kBwdTraceSlots; };
  const auto C = [](const ull* r, int wg, int e) { return r[kc::kBtC0 + wg * kc::kBtCEvents + e]; };
  std::vector<double> ghz;
  ull t_first = ~0ull, t_last = 0, start_max = 0, end_min = ~0ull, flags = 0;
  int64_t traced = 0, headless = 0, flag_mix = 0;
  for (int64_t c = 0; c < ctas; ++c) {
    const ull* r = R(c);
    if (r[kc::kBtTimerStart] == 0) continue;  // nothing to do (causal), or not run
    if (traced++ == 0) flags = r[kc::kBtFlags];
    flag_mix += r[kc::kBtFlags] != flags;
    if (r[kc::kBtTimerEnd] == 0) { ++headless; continue; }
    const double dt = double(r[kc::kBtTimerEnd] - r[kc::kBtTimerStart]);
    if (dt > 0) ghz.push_back(double(r[kc::kBtClockEnd] - r[kc::kBtClockStart]) / dt);
    t_first = std::min(t_first, r[kc::kBtTimerStart]);
    start_max = std::max(start_max, r[kc::kBtTimerStart]);
    t_last = std::max(t_last, r[kc::kBtTimerEnd]);
    end_min = std::min(end_min, r[kc::kBtTimerEnd]);
  }
  if (traced == 0 || ghz.empty()) {
    std::printf("%s %lld CTAs, none wrote its record: were the kernels built with RINGATTN_BWD_TRACE?\n", tag.c_str(),
                (long long)ctas);
    return;
  }
  const double f = median_of(ghz);  // cycles per ns
  std::sort(ghz.begin(), ghz.end());
  std::printf("%s %lld CTAs, %lld traced (%lld without an end, %lld with nothing to do), flags:%s%s%s%s%s%s\n",
              tag.c_str(), (long long)ctas, (long long)traced, (long long)headless, (long long)(ctas - traced),
              flags & kc::kBtFlagFresh ? " fresh (written, not added)" : " adds", flags & kc::kBtFlagAtomic ? ", atomic dQ" : "",
              flags & kc::kBtFlagAtomic ? (flags & kc::kBtFlagDqFirst ? " first" : " last") : "",
              flags & kc::kBtFlagPingpong ? ", pingpong" : "", flags & kc::kBtFlagPdl ? ", pdl" : "",
              flag_mix ? " (CTAs differ)" : "");
  std::printf("%s SM clock %.4f GHz (median over CTAs, %.4f..%.4f); pass %.2f us by globaltimer (first CTA start -> "
              "last wg0 end), CTA starts spread %.2f us, ends spread %.2f us\n",
              tag.c_str(), f, ghz.front(), ghz.back(), double(t_last - t_first) * 1e-3,
              double(start_max - t_first) * 1e-3, double(t_last - end_min) * 1e-3);

  const auto us = [f](ull a, ull b) { return (double(b) - double(a)) / (f * 1e3); };  // a -> b
  const auto cyc = [f](ull n) { return double(uint32_t(n)) / (f * 1e3); };          // summed cycles
  auto ok = [](ull a, ull b) { return a != 0 && b != 0; };
  Stat nblk, life, setup, p_kv, p_first, p_last, p_done, p_tail, p_full, p_full_b, p_drain, p_drain_b, p_empty,
      p_empty_b, first[2], blk0[2], steady[2], last[2], epi[2], epi_stage[2], epi_adds[2], c_dqe[2], c_dqe_b[2],
      c_full[2], c_full_b[2], c_full_after0[2], lag_loop, overhead, ov_first, ov_blk0, ov_last, ov_epi, epi_meet0,
      epi_pre_adds0;
  for (int64_t c = 0; c < ctas; ++c) {
    const ull* r = R(c);
    if (r[kc::kBtTimerStart] == 0 || r[kc::kBtTimerEnd] == 0) continue;
    const ull c0 = r[kc::kBtClockStart];
    const int nb = int(r[kc::kBtNBlk]);
    nblk.add(nb);
    ull end = std::max(r[kc::kBtPDone], std::max(C(r, 0, kc::kBtCEpilogueDone), C(r, 1, kc::kBtCEpilogueDone)));
    life.add(us(c0, end));
    if (r[kc::kBtClockEntry]) setup.add(us(r[kc::kBtClockEntry], c0));
    if (r[kc::kBtPKvIssued]) p_kv.add(us(c0, r[kc::kBtPKvIssued]));
    if (r[kc::kBtPFirstIssued]) p_first.add(us(c0, r[kc::kBtPFirstIssued]));
    if (r[kc::kBtPLastIssued]) p_last.add(us(c0, r[kc::kBtPLastIssued]));
    if (r[kc::kBtPDone]) p_done.add(us(c0, r[kc::kBtPDone]));
    const ull le_max = std::max(C(r, 0, kc::kBtCLoopEnd), C(r, 1, kc::kBtCLoopEnd));
    if (ok(le_max, r[kc::kBtPDone])) p_tail.add(us(le_max, r[kc::kBtPDone]));
    if (flags & kc::kBtFlagAtomic) {
      p_full.add(cyc(r[kc::kBtPDqFullWait]));
      p_drain.add(cyc(r[kc::kBtPDrainWork]));
      if (nb > 0) {
        p_full_b.add(cyc(r[kc::kBtPDqFullWait]) / nb);
        p_drain_b.add(cyc(r[kc::kBtPDrainWork]) / nb);
      }
    }
    p_empty.add(cyc(r[kc::kBtPEmptyWait]));
    if (nb > kc::kBwdStages) p_empty_b.add(cyc(r[kc::kBtPEmptyWait]) / (nb - kc::kBwdStages));
    double st0 = -1;
    for (int wg = 0; wg < 2; ++wg) {
      const ull ff = C(r, wg, kc::kBtCFirstFull), b0 = C(r, wg, kc::kBtCBlock0End), ls = C(r, wg, kc::kBtCLastStart),
                le = C(r, wg, kc::kBtCLoopEnd), as = C(r, wg, kc::kBtCAddsStart), ep = C(r, wg, kc::kBtCEpilogueDone);
      if (ff) first[wg].add(us(c0, ff));
      if (ok(ff, b0)) blk0[wg].add(us(ff, b0));
      const double sb = ok(b0, ls) && nb > 2 ? us(b0, ls) / (nb - 2) : -1;
      if (sb >= 0) steady[wg].add(sb);
      if (wg == 0) st0 = sb;
      if (ok(ls, le)) last[wg].add(us(ls, le));
      if (ok(le, ep)) epi[wg].add(us(le, ep));
      if (ok(le, as)) epi_stage[wg].add(us(le, as));
      if (ok(as, ep)) epi_adds[wg].add(us(as, ep));
      if (flags & kc::kBtFlagAtomic) {
        c_dqe[wg].add(cyc(C(r, wg, kc::kBtCDqEmptyWait)));
        if (nb > 1) c_dqe_b[wg].add(cyc(C(r, wg, kc::kBtCDqEmptyWait)) / (nb - 1));
      }
      const double fw = cyc(C(r, wg, kc::kBtCFullWait));
      c_full[wg].add(fw);
      if (nb > 0) c_full_b[wg].add(fw / nb);
      if (ff && nb > 1) c_full_after0[wg].add((fw - us(c0, ff)) / (nb - 1));
    }
    if (ok(C(r, 0, kc::kBtCLoopEnd), r[kc::kBtStaged0])) epi_meet0.add(us(C(r, 0, kc::kBtCLoopEnd), r[kc::kBtStaged0]));
    if (ok(r[kc::kBtStaged0], C(r, 0, kc::kBtCAddsStart)))
      epi_pre_adds0.add(us(r[kc::kBtStaged0], C(r, 0, kc::kBtCAddsStart)));
    if (ok(C(r, 0, kc::kBtCLoopEnd), C(r, 1, kc::kBtCLoopEnd)))
      lag_loop.add(us(C(r, 0, kc::kBtCLoopEnd), C(r, 1, kc::kBtCLoopEnd)));
    if (st0 >= 0) {
      const ull ff = C(r, 0, kc::kBtCFirstFull), b0 = C(r, 0, kc::kBtCBlock0End), ls = C(r, 0, kc::kBtCLastStart),
                le = C(r, 0, kc::kBtCLoopEnd);
      overhead.add(us(c0, end) - nb * st0);
      ov_first.add(us(c0, ff));
      ov_blk0.add(us(ff, b0) - st0);
      ov_last.add(us(ls, le) - st0);
      ov_epi.add(us(le, end));
    }
    if (csv) {
      std::fprintf(csv, "%d,%lld,%lld,%lld,%llu,%d,%llu,%.6f", pass, (long long)c, (long long)(c % items),
                   (long long)(c / items), r[kc::kBtSmId], nb, r[kc::kBtFlags], f);
      const auto t = [&](ull x) { std::fprintf(csv, ",%lld", x ? (long long)(x - c0) : -1ll); };
      const auto n = [&](ull x) { std::fprintf(csv, ",%llu", x & 0xffffffffull); };
      t(r[kc::kBtClockEntry]);
      t(r[kc::kBtStaged0]);
      for (int e = kc::kBtPKvIssued; e <= kc::kBtPDone; ++e) t(r[e]);
      for (int e = kc::kBtPDqFullWait; e <= kc::kBtPEmptyWait; ++e) n(r[e]);
      for (int wg = 0; wg < 2; ++wg) {
        for (int e = kc::kBtCFirstFull; e <= kc::kBtCEpilogueDone; ++e) t(C(r, wg, e));
        n(C(r, wg, kc::kBtCDqEmptyWait));
        n(C(r, wg, kc::kBtCFullWait));
      }
      std::fprintf(csv, "\n");
    }
  }
  std::printf("%s us over CTAs (start = after the barrier set-up; wg0/wg1 = consumer warpgroup; P = producer; "
              "waits: cycles summed over the CTA):\n", tag.c_str());
  nblk.print(tag, "nblk", "(a count, not us) query blocks of 64 per CTA");
  life.print(tag, "cta_life", "start -> last of C_EPILOGUE_DONE wg0/wg1, P_DONE");
  setup.print(tag, "setup", "kernel entry -> start (tile lookup, barrier init)");
  p_kv.print(tag, "p_kv_issued", "start -> P_KV_ISSUED (K/V gathers issued, by the consumers)");
  p_first.print(tag, "p_first_issued", "start -> P_FIRST_ISSUED (block 0's loads issued)");
  p_last.print(tag, "p_last_issued", "start -> P_LAST_ISSUED");
  p_done.print(tag, "p_done", "start -> P_DONE (last drain done)");
  p_tail.print(tag, "p_done_after_loops", "max(C_LOOP_END wg0, wg1) -> P_DONE");
  if (flags & kc::kBtFlagAtomic) {
    p_full.print(tag, "p_dq_full_wait", "P waits on dq_full, per CTA");
    p_full_b.print(tag, "p_dq_full_wait_per_blk", "... / nblk");
    p_drain.print(tag, "p_drain_work", "P in drain after dq_full (LDS/REDG loop, dq_empty arrive), per CTA");
    p_drain_b.print(tag, "p_drain_work_per_blk", "... / nblk");
  }
  p_empty.print(tag, "p_empty_wait", "P waits on empty (stage refills), per CTA");
  p_empty_b.print(tag, "p_empty_wait_per_refill", "... / (nblk - 3)");
  for (int wg = 0; wg < 2; ++wg) {
    const std::string x = std::to_string(wg);
    first[wg].print(tag, ("first_data_wg" + x).c_str(), "start -> C_FIRST_FULL (K/V gathered, block 0 landed)");
    blk0[wg].print(tag, ("block0_wg" + x).c_str(), "C_FIRST_FULL -> C_BLOCK0_END");
    steady[wg].print(tag, ("steady_per_block_wg" + x).c_str(), "(C_LAST_START - C_BLOCK0_END) / (nblk - 2), nblk > 2");
    last[wg].print(tag, ("last_block_wg" + x).c_str(), "C_LAST_START -> C_LOOP_END");
    epi[wg].print(tag, ("epilogue_wg" + x).c_str(), "C_LOOP_END -> C_EPILOGUE_DONE");
    epi_stage[wg].print(tag, ("epilogue_pre_adds_wg" + x).c_str(),
                        "C_LOOP_END -> C_ADDS_START (meeting the other wg, smem staging, key rows, pdl wait)");
    if (wg == 0) {
      epi_meet0.print(tag, "epilogue_staged_wg0", "C_LOOP_END -> STAGED0 (meeting wg1, smem staging), wg0");
      epi_pre_adds0.print(tag, "epilogue_rows_pdl_wg0", "STAGED0 -> C_ADDS_START (key rows, pdl wait), wg0");
    }
    epi_adds[wg].print(tag, ("epilogue_adds_wg" + x).c_str(), "C_ADDS_START -> C_EPILOGUE_DONE (grad_add4_rows x2)");
    if (flags & kc::kBtFlagAtomic) {
      c_dqe[wg].print(tag, ("dq_empty_wait_wg" + x).c_str(), "waits on dq_empty in dq_stage, per CTA");
      c_dqe_b[wg].print(tag, ("dq_empty_wait_per_blk_wg" + x).c_str(), "... / (nblk - 1)");
    }
    c_full[wg].print(tag, ("full_wait_wg" + x).c_str(), "waits on full, per CTA (block 0's included)");
    c_full_b[wg].print(tag, ("full_wait_per_blk_wg" + x).c_str(), "... / nblk");
    c_full_after0[wg].print(tag, ("full_wait_after0_wg" + x).c_str(),
                            "(full waits - (start -> C_FIRST_FULL)) / (nblk - 1), ~ blocks 1..");
  }
  lag_loop.print(tag, "wg1_lag_loop_end", "C_LOOP_END wg1 - wg0");
  overhead.print(tag, "overhead", "cta_life - nblk x the CTA's steady_per_block_wg0, nblk > 2 (= the 4 below)");
  ov_first.print(tag, "overhead_first_data", "of which start -> C_FIRST_FULL wg0");
  ov_blk0.print(tag, "overhead_block0_excess", "block0_wg0 - steady");
  ov_last.print(tag, "overhead_last_excess", "last_block_wg0 - steady");
  ov_epi.print(tag, "overhead_epilogue", "C_LOOP_END wg0 -> CTA end");
  if (!life.v.empty() && !steady[0].v.empty()) {
    const double l = life.q(0.5), nb = nblk.q(0.5), b = steady[0].q(0.5);
    std::printf("%s per-CTA overhead = CTA life - nblk x steady per-block: med %.3f us - med nblk %.0f x med %.3f us "
                "= %.3f us (%.1f%% of the life); over CTAs (nblk > 2): med %.3f us\n",
                tag.c_str(), l, nb, b, l - nb * b, 100.0 * (l - nb * b) / l, overhead.q(0.5));
  }
}

}  // namespace

int main(int argc, char** argv) {
  Config c;
  c.backend = Backend::cuda;
  c.dtype = DType::bf16;
  c.heads = 16;
  c.head_dim = 128;
  std::string config = "longnet4", branches;
  Shape s;
  s.seq = 65536;
  int warmup = 2, iters = 20;
  double warmup_ms = 1000;
  bool bwd = false, dq_atomic = false, bwd_pp = true, bwd_tma = true, dq_last = false, split = false, trace = false, pdl = true;
  std::string trace_csv, bwd_trace_csv;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage(a + " needs a value");
      return argv[++i];
    };
    if (a == "--config") config = value();
    else if (a == "--branches") branches = value();
    else if (a == "--seq") s.seq = std::atoll(value().c_str());
    else if (a == "--heads") c.heads = std::atoll(value().c_str());
    else if (a == "--head-dim") c.head_dim = std::atoll(value().c_str());
    else if (a == "--dtype") check(parse_dtype(value(), &c.dtype));
    else if (a == "--causal") c.causal = true;
    else if (a == "--batch") s.batch = std::atoll(value().c_str());
    else if (a == "--warmup") warmup = std::max(0, std::atoi(value().c_str()));
    else if (a == "--warmup-ms") warmup_ms = std::max(0.0, std::atof(value().c_str()));
    else if (a == "--iters") iters = std::max(1, std::atoi(value().c_str()));
    else if (a == "--bwd") bwd = true;
    else if (a == "--bwd-dq") {
      const std::string v = value();
      if (v != "pass" && v != "atomic") usage("--bwd-dq " + v + " (allowed: pass, atomic)");
      dq_atomic = v == "atomic";
    } else if (a == "--bwd-acc") {
      const std::string v = value();
      if (v != "f32" && v != "split") usage("--bwd-acc " + v + " (allowed: f32, split)");
      split = v == "split";
    } else if (a == "--bwd-dq-last") {
      dq_last = true;
    } else if (a == "--bwd-pingpong") {  // the default, as in the runtime
      bwd_pp = true;
    } else if (a == "--bwd-no-pingpong") {
      bwd_pp = false;
    } else if (a == "--bwd-no-tma") {  // every backward block through cp.async (BwdParams::tma)
      bwd_tma = false;
    } else if (a == "--trace") {
      if (!kFwdTraceBuilt && !kBwdTraceBuilt)
        usage("--trace needs kernels built with a trace: configure with -DRINGATTN_FWD_TRACE=ON (the forward) "
              "and/or -DRINGATTN_BWD_TRACE=ON (the backward's dK/dV kernel)");
      trace = true;
    } else if (a == "--trace-csv") {
      trace_csv = value();
    } else if (a == "--bwd-trace-csv") {
      bwd_trace_csv = value();
    } else if (a == "--no-pdl") {
      pdl = false;
    }
    else usage("unknown option " + a);
  }
  if (trace && !kFwdTraceBuilt && !bwd)
    usage("--trace: this build traces only the backward's dK/dV kernel (RINGATTN_BWD_TRACE): add --bwd");
  check(branches.empty() ? named_branches(config, s.seq, &c.branches) : parse_branches(branches, &c.branches));
  check(validate_config(c));
  check(validate_shape(c, s, 1));

  const kc::ElemType et = c.dtype == DType::bf16 ? kc::ElemType::bf16 : kc::ElemType::f16;
  const int64_t B = s.batch, N = s.seq, H = c.heads, D = c.head_dim;
  const size_t elems = size_t(B * N * H * D), rows = size_t(B * N * H);
  // RINGATTN_PACK_SEGMENTS=1 (default) | 0, as the runtime reads it (PlanOptions).
  PlanOptions popt;
  check(env_choice("RINGATTN_PACK_SEGMENTS", "1", "0", false, &popt.pack_segments));
  const Plan plan = build_plan(c, s, 1, 0, popt);
  const PlanImage im = build_plan_image(plan, kc::fwd_block_m(et, int(D)));
  const double flops = useful_flops(c, s);

  cudaDeviceProp prop{};
  int dev = 0;
  CHECK_CUDA(cudaGetDevice(&dev));
  CHECK_CUDA(cudaGetDeviceProperties(&prop, dev));
  size_t free_bytes = 0, total_bytes = 0;
  CHECK_CUDA(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int sets = 3 * elems * 2 * 2 + elems * 2 < free_bytes * 9 / 10 ? 2 : 1;
  std::vector<std::unique_ptr<DeviceBuffer>> qkv;
  for (int i = 0; i < 3 * sets; ++i) {
    qkv.push_back(std::make_unique<DeviceBuffer>(elems * 2));
    fill_random<<<prop.multiProcessorCount * 8, 256>>>(static_cast<uint16_t*>(qkv.back()->p), elems, 1234u + i,
                                                      et == kc::ElemType::bf16);
    CHECK_CUDA(cudaGetLastError());
  }
  DeviceBuffer o(elems * 2), lse(rows * 4), image(im.blob.size());
  CHECK_CUDA(cudaMemcpy(image.p, im.blob.data(), im.blob.size(), cudaMemcpyHostToDevice));
  const char* base = static_cast<const char*>(image.p);

  cudaStream_t st = nullptr;
  CHECK_CUDA(cudaStreamCreate(&st));
  kc::FwdParams fp = kc::fwd_shard_params(nullptr, o.p, static_cast<float*>(lse.p), B, N, H, D,
                                          float(1.0 / std::sqrt(double(D))), c.causal, et);
  // --trace: pass pi writes its trace at trace_at[pi] (empty: not traced).
  std::vector<unsigned long long*> trace_at;
  std::vector<int> trace_items;
  auto forward = [&](int set) {
    fp.q = qkv[3 * set]->p;
    fp.src = ringattn::kern::KeySource{qkv[3 * set + 1]->p, qkv[3 * set + 2]->p, N * H * D, H * D, D, nullptr};
    CHECK_CUDA(kc::fwd_init_outputs(o.p, fp.lse, int64_t(elems), int64_t(rows), et, !plan.covers_all, st));
    bool after_pass = false;  // as the executor: pdl right behind another pass's launch only
    for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
      const Pass& ps = plan.passes[pi];
      fp.tiles = reinterpret_cast<const ringattn::kern::Tile*>(base + im.tiles_offset) + ps.tile_begin;
      fp.num_tiles = int32_t(ps.tile_end - ps.tile_begin);
      fp.tile_block_prefix = reinterpret_cast<const int32_t*>(base + im.prefix_offset) + im.pass_prefix_offset[pi];
      fp.num_blocks = im.pass_blocks[pi];
      fp.trace = trace_at.empty() ? nullptr : trace_at[pi];
      fp.trace_items = trace_at.empty() ? 0 : trace_items[pi];
      fp.pdl = pdl && after_pass;
      bool launched = false;
      CHECK_CUDA(kc::fwd_launch(fp, st, &launched));
      after_pass |= launched;
    }
  };

  cudaEvent_t e0, e1;
  CHECK_CUDA(cudaEventCreate(&e0));
  CHECK_CUDA(cudaEventCreate(&e1));
  std::vector<float> ms;
  const auto w0 = std::chrono::steady_clock::now();
  auto warm_ms = [&] { return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - w0).count(); };
  int warm_runs = 0;
  // A whole number of input-set rotations, so the last timed run (whose O/LSE `bits:` hashes)
  // always reads the same set: with the time-based warm-up the count varies between runs, and
  // an odd count gave two trees of the same bits two different hashes (s13, longnet4 64k).
  for (; warm_runs < warmup || warm_ms() < warmup_ms || warm_runs % sets != 0; ++warm_runs) {
    forward(warm_runs % sets);
    CHECK_CUDA(cudaStreamSynchronize(st));
  }
  const double warm_s = warm_ms() * 1e-3;
  for (int it = warm_runs; it < warm_runs + iters; ++it) {
    CHECK_CUDA(cudaEventRecord(e0, st));
    forward(it % sets);
    CHECK_CUDA(cudaEventRecord(e1, st));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
    ms.push_back(t);
  }
  const float first_ms = ms.front(), last_ms = ms.back();
  std::vector<uint16_t> sample(std::min<size_t>(elems, size_t(1) << 20));
  CHECK_CUDA(cudaMemcpy(sample.data(), o.p, sample.size() * 2, cudaMemcpyDeviceToHost));
  size_t bad = 0;
  for (uint16_t x : sample) bad += et == kc::ElemType::bf16 ? (x & 0x7f80u) == 0x7f80u : (x & 0x7c00u) == 0x7c00u;
  std::sort(ms.begin(), ms.end());
  const double med = ms[ms.size() / 2];
  std::printf("device: %s, %d SMs\n", prop.name, prop.multiProcessorCount);
  std::printf("%-28s %9s %5s %4s %4s %6s %12s %10s %10s %9s\n", "branches", "tokens", "batch", "H", "D", "dtype",
              "useful_FLOP", "ms(med)", "ms(min)", "TFLOP/s");
  std::printf("%-28s %9lld %5lld %4lld %4lld %6s %12.3e %10.3f %10.3f %9.1f%s%s\n", format_branches(c.branches).c_str(),
              (long long)N, (long long)B, (long long)H, (long long)D, to_string(c.dtype), flops, med, ms.front(),
              flops / (med * 1e-3) / 1e12, c.causal ? "  causal" : "", bad ? "  NON-FINITE OUTPUT" : "");
  std::printf("timing: %d runs after %d warm-up forwards in %.2f s (--warmup %d, --warmup-ms %.0f); first timed %.3f ms, "
              "last %.3f ms\n",
              iters, warm_runs, warm_s, warmup, warmup_ms, first_ms, last_ms);
  {
    // The output's bits, to compare trees that must compute the same function
    // (kernel_bisect.sh prints this line per tree): an FNV-1a-style hash over
    // the 8-byte words (then the tail bytes) of O and LSE of the last timed
    // forward (deterministic inputs, deterministic kernels), 64 MB at a time.
    uint64_t h = 1469598103934665603ull;
    auto fnv = [&](const void* dev, size_t bytes) {
      std::vector<uint64_t> buf(std::min<size_t>((bytes + 7) / 8, size_t(8) << 20));
      for (size_t at = 0; at < bytes; at += buf.size() * 8) {
        const size_t nb = std::min(buf.size() * 8, bytes - at);
        CHECK_CUDA(cudaMemcpy(buf.data(), static_cast<const char*>(dev) + at, nb, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < nb / 8; ++i) h = (h ^ buf[i]) * 1099511628211ull;
        const unsigned char* tail = reinterpret_cast<const unsigned char*>(buf.data()) + nb / 8 * 8;
        for (size_t i = 0; i < nb % 8; ++i) h = (h ^ tail[i]) * 1099511628211ull;
      }
    };
    fnv(o.p, elems * 2);
    fnv(lse.p, rows * 4);
    std::printf("bits: hash of O and LSE 0x%016llx\n", (unsigned long long)h);
  }
  int64_t packed = 0;
  for (const kern::Tile& t : plan.tiles) packed += t.seg_len > 0;
  std::printf("plan: %zu tiles, %lld of them packed segments (RINGATTN_PACK_SEGMENTS=%d), %zu passes, %s\n",
              plan.tiles.size(), (long long)packed, popt.pack_segments ? 1 : 0, plan.passes.size(),
              pdl ? "pdl (passes after the first: programmatic dependent launch)" : "no pdl (--no-pdl)");
  if (trace && kFwdTraceBuilt) {
    // One more forward, every pass traced into its own buffer (CTAs: at most one per SM).
    const int sms = prop.multiProcessorCount;
    std::vector<size_t> off;
    size_t words = 0;
    for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
      const int64_t items = int64_t(im.pass_blocks[pi]) * B;
      const int64_t g = std::max(1, sms - 1);  // the grid may be sms - 1 (causal)
      const int64_t per_cta = (items + g - 1) / g;
      trace_items.push_back(int(std::min<int64_t>(items, 2 * per_cta + 16)));
      off.push_back(words);
      words += size_t(sms) * (trace_items.back() + 1) * kc::kTraceSlots;
    }
    DeviceBuffer tbuf(words * 8);
    CHECK_CUDA(cudaMemset(tbuf.p, 0, words * 8));
    for (size_t o : off) trace_at.push_back(static_cast<unsigned long long*>(tbuf.p) + o);
    CHECK_CUDA(cudaEventRecord(e0, st));
    forward((warm_runs + iters) % sets);
    CHECK_CUDA(cudaEventRecord(e1, st));
    CHECK_CUDA(cudaEventSynchronize(e1));
    float t = 0;
    CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
    trace_at.clear();
    std::vector<unsigned long long> all(words);
    CHECK_CUDA(cudaMemcpy(all.data(), tbuf.p, words * 8, cudaMemcpyDeviceToHost));
    std::printf("trace forward: %.3f ms traced (untraced median %.3f ms), %zu passes, %d SMs\n", t, med,
                plan.passes.size(), sms);
    FILE* csv = nullptr;
    if (!trace_csv.empty()) {
      csv = std::fopen(trace_csv.c_str(), "w");
      if (!csv) usage("cannot write " + trace_csv);
      std::fprintf(csv, "pass,cta,sm,itc,item,n_blocks,ghz,p_item_decoded,p_q_empty_done,p_last_kv_issued,"
                        "p_next_claimed");
      for (int wg = 0; wg < 2; ++wg)
        std::fprintf(csv, ",c%d_q_ready,c%d_first_s_done,c%d_loop_end,c%d_tail_pv_done,c%d_epilogue_done", wg, wg, wg,
                     wg, wg);
      std::fprintf(csv, "\n");  // times: cycles from the CTA's start, -1 not written
    }
    for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
      const Pass& ps = plan.passes[pi];
      PassTrace pt;
      pt.ctas = sms;
      pt.items = trace_items[pi];
      pt.w.assign(all.begin() + off[pi], all.begin() + off[pi] + size_t(sms) * (pt.items + 1) * kc::kTraceSlots);
      const Branch& br = c.branches[size_t(ps.branch)];
      char tag[64];
      std::snprintf(tag, sizeof tag, "trace pass %zu", pi);
      std::printf("%s of %zu: branch %d (%lld:%lld), step %d, %lld tiles\n", tag, plan.passes.size(), ps.branch,
                  (long long)br.w, (long long)br.r, ps.step, (long long)(ps.tile_end - ps.tile_begin));
      summarize_trace(pt, tag, int64_t(im.pass_blocks[pi]) * B, int(pi), csv);
    }
    if (csv) std::fclose(csv);
  }
  if (bwd) {
    // The backward of the last forward (set (warm_runs + iters - 1) % sets), each launch kind timed apart.
    const int set = (warm_runs + iters - 1) % sets;
    DeviceBuffer dout(elems * 2), acc((split ? (dq_atomic ? 1 : 0) : 3) * elems * 4), delta(rows * 4), grads(elems * 2);
    // split: the gradients (hi) and their bf16 remainders (lo), dQ, dK, dV; acc then holds only atomic dQ.
    DeviceBuffer hi(split ? 3 * elems * 2 : 16), lo(split ? 3 * elems * 2 : 16);
    fill_random<<<prop.multiProcessorCount * 8, 256>>>(static_cast<uint16_t*>(dout.p), elems, 777u, et == kc::ElemType::bf16);
    CHECK_CUDA(cudaGetLastError());
    float* accs = static_cast<float*>(acc.p);
    kc::BwdParams bp = kc::bwd_shard_params(qkv[3 * set]->p, dout.p, static_cast<float*>(lse.p),
                                            static_cast<float*>(delta.p), B, N, H, D,
                                            float(1.0 / std::sqrt(double(D))), c.causal, et);
    bp.src = ringattn::kern::KeySource{qkv[3 * set + 1]->p, qkv[3 * set + 2]->p, N * H * D, H * D, D, nullptr};
    bp.dq_acc = accs;
    bp.dk_acc = split ? nullptr : accs + elems;
    bp.dv_acc = split ? nullptr : accs + 2 * elems;
    if (split) {
      uint16_t* h = static_cast<uint16_t*>(hi.p);
      uint16_t* l = static_cast<uint16_t*>(lo.p);
      bp.dk_hi = h + elems;
      bp.dk_lo = l + elems;
      bp.dv_hi = h + 2 * elems;
      bp.dv_lo = l + 2 * elems;
      if (!dq_atomic) {
        bp.dq_acc = nullptr;
        bp.dq_hi = h;
        bp.dq_lo = l;
      }
    }
    bp.dq_atomic = dq_atomic;
    bp.pingpong = bwd_pp;
    bp.tma = bwd_tma;
    std::printf("bwd: TMA tensor maps 0x%02x (bit i: Q/dO of the dK/dV kernel for query stride 2^i; bit 4 + i: "
                "K/V of the dQ pass for key stride 2^i)%s\n",
                kc::bwd_tma_map_mask(bp), bwd_tma ? "" : " (--bwd-no-tma)");
    bp.dq_first = !dq_last;
    bp.pdl_dq = pdl;  // only used where one call launches both kernels (parts 3)
    std::vector<unsigned long long*> bwd_trace_at;  // --trace: pass pi's dK/dV records (empty: not traced)
    auto passes = [&](int parts) {
      bp.parts = parts;
      bool after_pass = false;
      for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
        const Pass& ps = plan.passes[pi];
        bp.tiles = reinterpret_cast<const ringattn::kern::Tile*>(base + im.tiles_offset) + ps.tile_begin;
        bp.num_tiles = int32_t(ps.tile_end - ps.tile_begin);
        bp.q_prefix = reinterpret_cast<const int32_t*>(base + im.prefix_offset) + im.pass_prefix_offset[pi];
        bp.k_prefix = reinterpret_cast<const int32_t*>(base + im.key_prefix_offset) + im.pass_prefix_offset[pi];
        bp.q_items = im.pass_blocks[pi];
        bp.k_items = im.pass_key_blocks[pi];
        bp.overwrite = split && pi == 0 && plan.first_pass_covers_local;
        bp.pdl = pdl && after_pass;
        bp.trace = bwd_trace_at.empty() ? nullptr : bwd_trace_at[pi];
        bool launched = false;
        CHECK_CUDA(kc::bwd_launch(bp, st, &launched));
        after_pass |= launched;
      }
    };
    auto median_ms = [&](auto&& f) {
      std::vector<float> t;
      for (int it = 0; it < warmup + iters; ++it) {
        CHECK_CUDA(cudaEventRecord(e0, st));
        f();
        CHECK_CUDA(cudaEventRecord(e1, st));
        CHECK_CUDA(cudaEventSynchronize(e1));
        float x = 0;
        CHECK_CUDA(cudaEventElapsedTime(&x, e0, e1));
        if (it >= warmup) t.push_back(x);
      }
      std::sort(t.begin(), t.end());
      return double(t[t.size() / 2]);
    };
    CHECK_CUDA(cudaMemset(acc.p, 0, std::max<size_t>((split ? (dq_atomic ? 1 : 0) : 3) * elems * 4, 16)));
    if (split) {
      CHECK_CUDA(cudaMemset(hi.p, 0, 3 * elems * 2));
      CHECK_CUDA(cudaMemset(lo.p, 0, 3 * elems * 2));
    }
    const int converts = !split ? 3 : dq_atomic ? 1 : 0;  // float32 tensors the run ends with
    const double t_delta = median_ms([&] {
      // atomic dQ: its float32 accumulator is zeroed in the same pass, as the runtime does
      CHECK_CUDA(kc::bwd_delta(o.p, dout.p, static_cast<float*>(delta.p), B, N, H, D, et, st, dq_atomic ? accs : nullptr));
    });
    const double t_dkdv = median_ms([&] { passes(1); });
    const double t_dq = median_ms([&] { passes(2); });
    const double t_conv = median_ms([&] {
      for (int g = 0; g < converts; ++g) CHECK_CUDA(kc::bwd_convert(accs + g * elems, grads.p, int64_t(elems), et, st));
    });
    const double total = t_delta + t_dkdv + t_dq + t_conv;
    std::printf("backward (%s kernels, dQ %s, %s accumulators): delta %.3f ms, dK/dV %.3f ms (%.1f TFLOP/s executed), dQ %.3f ms (%.1f TFLOP/s executed), "
                "convert %.3f ms; total %.3f ms, useful %.3e FLOP, %.1f TFLOP/s useful\n",
                bwd_pp && !dq_atomic ? "ping-pong" : "no ping-pong", dq_atomic ? (dq_last ? "atomic, inside dK/dV, after dK" : "atomic, inside dK/dV") : "pass",
                split ? (plan.first_pass_covers_local ? "split, first pass writes" : "split") : "float32", t_delta, t_dkdv, 2 * flops / (t_dkdv * 1e-3) / 1e12, t_dq,
                1.5 * flops / (t_dq * 1e-3) / 1e12, t_conv, total, 2.5 * flops, 2.5 * flops / (total * 1e-3) / 1e12);
    if (trace && !kBwdTraceBuilt) {
      std::printf("trace bwd: not built (configure with -DRINGATTN_BWD_TRACE=ON)\n");
    } else if (trace) {
      // One more sequence of the dK/dV launches, every pass traced into its own buffer (a record per CTA).
      std::vector<size_t> off;
      size_t words = 0;
      for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
        off.push_back(words);
        words += size_t(im.pass_key_blocks[pi]) * size_t(B) * kc::kBwdTraceSlots;
      }
      DeviceBuffer tbuf(words * 8);
      CHECK_CUDA(cudaMemset(tbuf.p, 0, std::max<size_t>(words * 8, 16)));
      for (size_t o : off) bwd_trace_at.push_back(static_cast<unsigned long long*>(tbuf.p) + o);
      CHECK_CUDA(cudaEventRecord(e0, st));
      passes(1);
      CHECK_CUDA(cudaEventRecord(e1, st));
      CHECK_CUDA(cudaEventSynchronize(e1));
      float t = 0;
      CHECK_CUDA(cudaEventElapsedTime(&t, e0, e1));
      bwd_trace_at.clear();
      std::vector<unsigned long long> all(words);
      if (words) CHECK_CUDA(cudaMemcpy(all.data(), tbuf.p, words * 8, cudaMemcpyDeviceToHost));
      std::printf("trace bwd dK/dV: %.3f ms traced (untraced median %.3f ms), %zu passes, %d SMs\n", t, t_dkdv,
                  plan.passes.size(), prop.multiProcessorCount);
      FILE* csv = nullptr;
      if (!bwd_trace_csv.empty()) {
        csv = std::fopen(bwd_trace_csv.c_str(), "w");
        if (!csv) usage("cannot write " + bwd_trace_csv);
        std::fprintf(csv, "pass,cta,item,batch,sm,nblk,flags,ghz,entry,staged0,p_kv_issued,p_first_issued,p_last_issued,p_done,"
                          "p_dq_full_wait,p_drain_work,p_empty_wait");
        for (int wg = 0; wg < 2; ++wg)
          std::fprintf(csv, ",c%d_first_full,c%d_block0_end,c%d_last_start,c%d_loop_end,c%d_adds_start,"
                            "c%d_epilogue_done,c%d_dq_empty_wait,c%d_full_wait", wg, wg, wg, wg, wg, wg, wg, wg);
        std::fprintf(csv, "\n");  // times: cycles from the CTA's start, -1 not written; waits: summed cycles
      }
      for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
        const Pass& ps = plan.passes[pi];
        const Branch& br = c.branches[size_t(ps.branch)];
        char tag[64];
        std::snprintf(tag, sizeof tag, "trace bwd pass %zu", pi);
        std::printf("%s of %zu: branch %d (%lld:%lld), step %d, %lld tiles, %d key blocks x batch %lld\n", tag,
                    plan.passes.size(), ps.branch, (long long)br.w, (long long)br.r, ps.step,
                    (long long)(ps.tile_end - ps.tile_begin), im.pass_key_blocks[pi], (long long)B);
        summarize_bwd_trace(all.data() + off[pi], int64_t(im.pass_key_blocks[pi]) * B, im.pass_key_blocks[pi], tag,
                            int(pi), csv);
      }
      if (csv) std::fclose(csv);
    }
  }
  CHECK_CUDA(cudaEventDestroy(e0));
  CHECK_CUDA(cudaEventDestroy(e1));
  CHECK_CUDA(cudaStreamDestroy(st));
  return bad ? 1 : 0;
}

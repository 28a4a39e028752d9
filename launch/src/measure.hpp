// Timing an operation (run and bench, and each --scaling sub-run): warm-up,
// timed iterations on device events, each iteration's time the slowest
// rank's, and the summary every timing is printed with: useful FLOPs, rate,
// bytes sent per rank against the ideal, exposed transfer time.
#pragma once
#include <vector>

#include "inputs.hpp"
#include "ops.hpp"
#include "options.hpp"

namespace ringattn::cli {

// Seconds since the program started (the first call of this, at the top of main).
double seconds_since_start();

struct Timing {
  double setup_s = 0;              // program start to the first call of the op (max over ranks)
  std::vector<double> slowest_ms;  // per timed iteration, max over ranks
  double own_last_ms = 0;          // this rank's last timed iteration
  int64_t warmup_runs = 0;         // untimed iterations run (--warmup, then until --warmup-ms had passed)
  double warmup_s = 0;             // their wall time (rank 0's)
  double median_ms = 0;            // of slowest_ms
  // The host's time inside the op's call (validation, agreement, plan lookup,
  // launches; the GPU runs on after it returns): median over the timed
  // iterations, max over ranks. The device events start before the call, so
  // the part of it before the first kernel is inside median_ms.
  double host_call_ms = 0;
};

struct Summary {
  double ms = 0, flops = 0;
  int64_t bytes_sent_max = 0, bytes_ideal_max = 0, bytes_sent_total = 0, bytes_ideal_total = 0;
  double exposed_ms_max = 0;
  double tflops() const { return flops / (ms * 1e-3) / 1e12; }
};

// Collective over p.group. Input sets rotate from one iteration to the next.
// Warm-up: at least `warmup` untimed iterations, and more until `warmup_ms`
// milliseconds have passed since the first (the ranks agree on each further
// one: all run the same count). A GPU at its power cap runs its first ~0.1 s
// of load at a higher clock than it can hold: a `longnet4` 64k forward on an
// H100 took 3.70-3.77 ms for its first six runs, then 3.94-4.45 ms
// (bench/results/gpu-2026-11-25/cache_on_65536.json, times_ms).
// progress: rank 0 prints a line per iteration once 5 s have passed.
Timing time_op(const Op& op, Context& ctx, const Problem& p, const InputSets& in, const DeviceTensors& out, int64_t warmup,
               double warmup_ms, int64_t iters, bool progress);
Summary summarize(const Op& op, const Context& ctx, const Problem& p, const Timing& t);

// run and bench: makes `sets` input sets (--seed, --amplitude or the files)
// and the outputs (left in *out), times `op`, prints the tables and writes
// --json. Collective over p.group; returns the agreed error, if any.
Status measure_and_report(const Options& o, const Op& op, Context& ctx, const Problem& p, int sets, DeviceTensors* out);

}  // namespace ringattn::cli

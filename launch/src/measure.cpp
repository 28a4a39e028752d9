#include "measure.hpp"

#include "ringattn/names.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "report.hpp"
#include "ringattn/device.hpp"

namespace ringattn::cli {

double seconds_since_start() {
  static const auto t0 = std::chrono::steady_clock::now();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

Timing time_op(const Op& op, Context& ctx, const Problem& p, const InputSets& in, const DeviceTensors& out, int64_t warmup,
               double warmup_ms, int64_t iters, bool progress) {
  Timing t;
  t.setup_s = seconds_since_start();
  MPI_Allreduce(MPI_IN_PLACE, &t.setup_s, 1, MPI_DOUBLE, MPI_MAX, p.group.comm);
  dev::Timer timer(p.cfg.backend);
  const auto t_start = std::chrono::steady_clock::now();
  const auto since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  };
  std::vector<double> host;
  // One iteration; `timed` ones are recorded.
  auto once = [&](int64_t i, bool timed) {
    const DeviceTensors& set = *in[size_t(i) % in.size()];
    MPI_Barrier(p.group.comm);
    CLI_OR_ABORT(p.group, timer.start());
    const auto h0 = std::chrono::steady_clock::now();
    CLI_OR_ABORT(p.group, op.run(ctx, p.shape, set.ptrs(), out.ptrs()));
    if (timed) host.push_back(since(h0));
    CLI_OR_ABORT(p.group, ctx.synchronize());  // a dead peer times out here instead of hanging the timer
    double ms = 0;
    CLI_OR_ABORT(p.group, timer.stop(&ms));
    dev::peak_sample(p.cfg.backend);
    if (timed) t.own_last_ms = ms;
    MPI_Allreduce(MPI_IN_PLACE, &ms, 1, MPI_DOUBLE, MPI_MAX, p.group.comm);
    if (timed) t.slowest_ms.push_back(ms);
    if (progress && p.group.rank == 0 && since(t_start) > 5000.0) {
      if (timed)
        std::fprintf(stderr, "[ringattn] iteration %lld/%lld: %.2f ms\n", (long long)(i - t.warmup_runs + 1),
                     (long long)iters, ms);
      else
        std::fprintf(stderr, "[ringattn] warm-up %lld (at least %lld, and %.0f ms): %.2f ms\n", (long long)(i + 1),
                     (long long)warmup, warmup_ms, ms);
    }
  };
  for (;;) {
    // Rank 0's clock decides (the others follow): every rank runs the same count.
    int more = t.warmup_runs < warmup || since(t_start) < warmup_ms;
    MPI_Bcast(&more, 1, MPI_INT, 0, p.group.comm);
    if (!more) break;
    once(t.warmup_runs, false);
    ++t.warmup_runs;
  }
  t.warmup_s = since(t_start) * 1e-3;
  for (int64_t i = 0; i < iters; ++i) once(t.warmup_runs + i, true);
  t.median_ms = median(t.slowest_ms);
  t.host_call_ms = median(host);
  MPI_Allreduce(MPI_IN_PLACE, &t.host_call_ms, 1, MPI_DOUBLE, MPI_MAX, p.group.comm);
  return t;
}

Summary summarize(const Op& op, const Context& ctx, const Problem& p, const Timing& t) {
  Summary r;
  r.ms = t.median_ms;
  r.flops = op.flops(p.cfg, p.shape);
  const Stats& st = ctx.stats();
  int64_t v[2] = {st.last_bytes_sent, st.last_bytes_ideal}, mx[2], sm[2];
  MPI_Allreduce(v, mx, 2, MPI_INT64_T, MPI_MAX, p.group.comm);
  MPI_Allreduce(v, sm, 2, MPI_INT64_T, MPI_SUM, p.group.comm);
  r.bytes_sent_max = mx[0];
  r.bytes_ideal_max = mx[1];
  r.bytes_sent_total = sm[0];
  r.bytes_ideal_total = sm[1];
  double exposed = 0;
  for (const StepTiming& x : st.timeline) exposed += x.exposed_ms;
  MPI_Allreduce(&exposed, &r.exposed_ms_max, 1, MPI_DOUBLE, MPI_MAX, p.group.comm);
  return r;
}

Status measure_and_report(const Options& o, const Op& op, Context& ctx, const Problem& p, int sets, DeviceTensors* out) {
  const Config& c = p.cfg;
  InputSets in;
  CLI_AGREE(p.group, make_input_sets(op, p, source_of(o, uint64_t(o.seed)), sets, &in));
  CLI_AGREE(p.group, make_outputs(op, p, out));
  if (p.group.rank == 0) std::printf("# ringattn %s\n%s", o.command.c_str(), describe(o, p).c_str());
  dev::peak_reset(c.backend);
  const Timing t = time_op(op, ctx, p, in, *out, o.warmup, o.warmup_ms, o.iters, true);
  const Summary r = summarize(op, ctx, p, t);
  // The tables describe the op's last run: made before anything else runs.
  const std::string ranks = rank_table(ctx, p, t.own_last_ms);
  const std::string tl = o.timeline ? timeline_table(ctx, p) : "";
  const std::string cs = o.cache_stats ? cache_table(ctx, p) : "";
  // A training step's attention (--op backward): the forward alone too, on
  // the same inputs and outputs (its tensors lead both tables), so the
  // backward's own time is the difference.
  double fwd_ms = 0, fwd_flops = 0;
  const bool split = std::string(op.name) == "backward";
  if (split) {
    const Op* f = nullptr;
    CLI_AGREE(p.group, find_op("forward", &f));
    // Right after the timed runs: the device is warm, the count-based warm-up is enough.
    fwd_ms = time_op(*f, ctx, p, in, *out, o.warmup, 0, o.iters, false).median_ms;
    fwd_flops = f->flops(c, p.shape);
  }
  int64_t peak = dev::device_bytes_peak(c.backend), peak_max = 0;
  MPI_Allreduce(&peak, &peak_max, 1, MPI_INT64_T, MPI_MAX, p.group.comm);
  Status st;
  if (p.group.rank == 0) {
    std::printf("%s%s%s", ranks.c_str(), tl.c_str(), cs.c_str());
    std::printf("# %-10s %10s %10s %12s %14s %10s %16s %16s %12s\n", "config", "tokens", "ranks", "median_ms", "useful_FLOPs",
                "TFLOP/s", "bytes/rank(max)", "ideal/rank(max)", "exposed_ms");
    std::printf("  %-10s %10lld %10d %12.3f %14.4g %10.3f %16lld %16lld %12.3f\n", config_label(o).c_str(), (long long)p.shape.seq,
                p.group.size, r.ms, r.flops, r.tflops(), (long long)r.bytes_sent_max, (long long)r.bytes_ideal_max, r.exposed_ms_max);
    std::printf("# median of %lld (after %lld warm-up in %.2f s: --warmup %lld, --warmup-ms %.0f), slowest rank per "
                "iteration; %s sent per rank (ideal %s)%s\n",
                (long long)o.iters, (long long)t.warmup_runs, t.warmup_s, (long long)o.warmup, o.warmup_ms,
                human(double(r.bytes_sent_max), "B").c_str(),
                human(double(r.bytes_ideal_max), "B").c_str(),
                r.bytes_sent_total == r.bytes_ideal_total ? ", equal to the ideal" : ", ABOVE the ideal");
    if (split) {
      // A difference of two medians: noise can make it small or negative on tiny problems.
      const double bwd_ms = std::max(r.ms - fwd_ms, 1e-9), bwd_flops = r.flops - fwd_flops;
      std::printf("# forward %.3f ms (%.1f TFLOP/s), backward %.3f ms (%.1f TFLOP/s useful, SPEC: 2.5x the forward's FLOPs), "
                  "forward+backward %.3f ms (%.1f TFLOP/s); bytes above: the backward's ring, K/V out and float32 dK/dV back\n",
                  fwd_ms, fwd_flops / (fwd_ms * 1e-3) / 1e12, bwd_ms, bwd_flops / (bwd_ms * 1e-3) / 1e12, r.ms, r.tflops());
    }
    if (c.backend == Backend::cuda) std::printf("# peak device memory %s (rank max)\n", human(double(peak_max), "B").c_str());
    std::printf("# host time inside the call: %.3f ms (median, slowest rank; the device runs on after it returns)\n",
                t.host_call_ms);
    std::printf("# set-up before the first call: %.2f s (program start, MPI, context, plan, inputs; slowest rank)\n", t.setup_s);
    std::fflush(stdout);
    Json j = json_common(o, p);
    j.integer("iters", o.iters).integer("warmup", o.warmup).num("warmup_ms", o.warmup_ms);
    j.integer("warmup_runs", t.warmup_runs).num("warmup_s", t.warmup_s).num("median_ms", r.ms).num("useful_flops", r.flops);
    j.num("tflops", r.tflops()).integer("bytes_sent_per_rank_max", r.bytes_sent_max);
    j.integer("bytes_ideal_per_rank_max", r.bytes_ideal_max).num("exposed_ms_max", r.exposed_ms_max);
    j.integer("peak_device_bytes", peak_max).nums("times_ms", t.slowest_ms).num("setup_s", t.setup_s);
    j.num("host_call_ms", t.host_call_ms);
    if (split) j.num("forward_ms", fwd_ms).num("backward_ms", r.ms - fwd_ms);
    st = write_json(o.json, j);
  }
  return agree(p.group, st);
}

}  // namespace ringattn::cli

// A training-like loop whose sequence length changes every step (cycling over
// five lengths, as with length-bucketed batches). Each step announces the
// next step's shape with prefetch(), so its plan is ready before it is needed.
// A step is `--layers` forwards of its shape (one per attention layer).
//
// Timing: a mark (device event) goes on the stream at every step boundary and
// the host never waits per step, as in training: the host prepares step s+1
// while the device runs step s, and a step's time is the device time between
// its marks, idle gaps included (a host that falls behind shows up there).
// --sync waits for every step and adds a barrier (latency of one step, host
// preparation exposed).
//
// Warm reference: the same length twice in a row, the second timed (same
// plan, same shape as the forward before it). A block of these (one per
// length) follows every cycle, so each steady-state cycle lies between two
// blocks; each of its steps is compared with the mean of the two warm samples
// of its length that bracket it in time (drift of the device over tens of
// milliseconds lands in both alike), and with their overall median. The same
// bracketing comparison applied to the warm samples themselves (no length
// change at all) is printed as the noise floor. --warm 0 skips the blocks.
//   mpirun -np 2 ./build/cpu/examples/ringattn_varlen [--backend cuda] [--steps 20] [--no-prefetch] [--cache off]
//       [--long] [--layers N] [--sync] [--promote-after N] [--cache-device-mb N] [--warm 0|1]
#include <mpi.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "ringattn/names.hpp"
#include "launch/src/parse.hpp"
#include "ringattn/device.hpp"
#include "ringattn/ringattn.hpp"

using namespace ringattn;

namespace {

struct LoopOptions {
  int64_t steps = 20, layers = 1, warm = 1;
  bool prefetch = true, sync = false, help = false;
  std::vector<int64_t> lengths = {8192, 12288, 16384, 10240, 14336};
};

const char* kUsage =
    "usage: ringattn_varlen [--backend cpu|cuda] [--steps N] [--no-prefetch] [--cache on|off] [--long] [--layers N] "
    "[--sync] [--promote-after N] [--cache-device-mb N] [--warm 0|1]\n";

// Every value parsed strictly (launch/src/parse.hpp: whole string, range,
// k/M suffixes, no overflow); an unknown option or a bad value is an error.
Status parse_args(int argc, char** argv, Config* cfg, LoopOptions* lo) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    std::string v;
    auto value = [&]() {
      if (i + 1 >= argc) return InvalidArgument(a + " needs a value (see --help)");
      v = argv[++i];
      return Status::Ok();
    };
    auto count = [&](int64_t low, int64_t high, int64_t* out) {
      Status st = value();
      return st.ok() ? cli::parse_count(a, v, low, high, out) : st;
    };
    int64_t n = 0;
    Status st;
    if (a == "--help" || a == "-h") {
      lo->help = true;
    } else if (a == "--backend") {
      st = value();
      if (st.ok()) st = parse_backend(v, &cfg->backend);
    } else if (a == "--steps") {
      st = count(1, 1000000, &lo->steps);
    } else if (a == "--layers") {  // attention layers per step: forwards of one shape
      st = count(1, 1000, &lo->layers);
    } else if (a == "--sync") {
      lo->sync = true;
    } else if (a == "--no-prefetch") {
      lo->prefetch = false;
    } else if (a == "--cache") {
      st = value();
      if (st.ok() && v != "on" && v != "off") st = InvalidArgument("--cache '" + v + "' (allowed: on, off)");
      cfg->cache.enabled = v != "off";
    } else if (a == "--promote-after") {
      st = count(0, 1 << 20, &n);
      cfg->cache.promote_after_hits = int(n);
    } else if (a == "--cache-device-mb") {
      st = count(0, int64_t(1) << 30, &n);
      cfg->cache.device_budget_bytes = n << 20;
    } else if (a == "--warm") {
      st = count(0, 1, &lo->warm);
    } else if (a == "--long") {  // the 24k..64k cycle with GPU-sized heads
      lo->lengths = {24576, 32768, 40960, 49152, 65536};
      cfg->heads = 16;
      cfg->head_dim = 128;
    } else {
      st = InvalidArgument("unknown option '" + a + "' (see --help)");
    }
    RINGATTN_RETURN_IF_ERROR(st);
  }
  return Status::Ok();
}

}  // namespace

int main(int argc, char** argv) {
  MPI_Init(&argc, &argv);
  int rank = 0, world = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &world);
  Config cfg;
  cfg.branches = {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}};
  cfg.heads = 4;
  cfg.head_dim = 64;
  LoopOptions lo;
  const Status parsed = parse_args(argc, argv, &cfg, &lo);  // every rank parses the same arguments
  if (!parsed.ok() || lo.help) {
    if (rank == 0) std::fprintf(stderr, parsed.ok() ? "%s" : "ringattn_varlen: error: %s\n", parsed.ok() ? kUsage : parsed.message().c_str());
    MPI_Finalize();
    return parsed.ok() ? 0 : 2;
  }
  const int steps = int(lo.steps), layers = int(lo.layers);
  const bool warm = lo.warm != 0, prefetch = lo.prefetch, sync = lo.sync;
  std::vector<int64_t> lengths = lo.lengths;
  if (cfg.backend == Backend::cuda) {
    cfg.dtype = DType::bf16;
    cfg.transport = world > 1 ? Transport::mpi : Transport::nccl;
    if (!dev::select_device(rank).ok()) MPI_Abort(MPI_COMM_WORLD, 1);
  }
  for (int64_t& n : lengths) n = n / world * world;
  std::unique_ptr<Context> ctx;
  Status st = Context::create(cfg, MPI_COMM_WORLD, &ctx);
  if (!st.ok()) {
    std::fprintf(stderr, "rank %d: %s\n", rank, st.to_string().c_str());
    MPI_Abort(MPI_COMM_WORLD, 1);
  }
  const int64_t max_n = *std::max_element(lengths.begin(), lengths.end());
  const size_t es = dtype_size(cfg.dtype);
  const size_t elems = size_t(max_n / world * cfg.heads * cfg.head_dim);
  void *q, *k, *v, *o, *lse;
  std::vector<char> host(elems * es, 0x11);  // any finite values
  for (void** p : {&q, &k, &v, &o}) {
    if (!dev::alloc(cfg.backend, elems * es, p).ok()) MPI_Abort(MPI_COMM_WORLD, 1);
  }
  for (void* p : {q, k, v}) dev::upload(cfg.backend, p, host.data(), host.size());
  if (!dev::alloc(cfg.backend, size_t(max_n / world * cfg.heads) * 4, &lse).ok()) MPI_Abort(MPI_COMM_WORLD, 1);
  auto check = [&](const Status& x) {
    if (!x.ok()) {
      std::fprintf(stderr, "rank %d: %s\n", rank, x.to_string().c_str());
      MPI_Abort(MPI_COMM_WORLD, 1);
    }
  };
  dev::Marks marks(cfg.backend);
  // One step: a mark, then `layers` forwards. Returns the index of its mark;
  // the step ends at the next mark.
  auto run_step = [&](const Shape& shape) {
    const size_t m = marks.size();
    check(marks.mark());
    for (int l = 0; l < layers; ++l) check(ctx->forward(shape, q, k, v, o, static_cast<float*>(lse)));
    if (sync) {
      check(ctx->synchronize());
      MPI_Barrier(MPI_COMM_WORLD);
    }
    return m;
  };
  const size_t nlen = lengths.size();
  std::vector<size_t> step_mark(static_cast<size_t>(steps));
  std::vector<double> plan_ms(static_cast<size_t>(steps));
  std::vector<std::vector<size_t>> block_mark;  // [b][l]: mark of the timed warm run of length l in block b
  auto warm_block = [&] {
    std::vector<size_t> w(nlen);
    for (size_t l = 0; l < nlen; ++l) {
      run_step(Shape{1, lengths[l]});
      w[l] = run_step(Shape{1, lengths[l]});
    }
    block_mark.push_back(w);
  };
  int64_t ss_lookups = 0, ss_hits = 0, ss_dev_hits = 0;  // steady-state cycling steps only
  auto hits_of = [](const CacheStats& c) { return c.device_hits + c.host_hits; };
  for (int s = 0; s < steps; ++s) {
    Shape shape{1, lengths[size_t(s) % nlen]};
    if (prefetch) check(ctx->prefetch(Shape{1, lengths[size_t(s + 1) % nlen]}));
    const CacheStats before = ctx->stats().cache;
    step_mark[size_t(s)] = run_step(shape);
    if (size_t(s) >= nlen) {
      const CacheStats now = ctx->stats().cache;
      ss_hits += hits_of(now) - hits_of(before);
      ss_lookups += hits_of(now) + now.misses - hits_of(before) - before.misses;
      ss_dev_hits += now.device_hits - before.device_hits;
    }
    plan_ms[size_t(s)] = ctx->stats().last_plan_ms;
    if (warm && ((size_t(s) + 1) % nlen == 0 || s + 1 == steps)) warm_block();
  }
  check(ctx->synchronize());
  check(marks.mark());  // the end of the last step
  // Every interval between consecutive marks, slowest rank's.
  std::vector<double> span(marks.size() - 1);
  for (size_t i = 0; i + 1 < marks.size(); ++i) check(marks.elapsed_ms(i, i + 1, &span[i]));
  MPI_Allreduce(MPI_IN_PLACE, span.data(), int(span.size()), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  MPI_Allreduce(MPI_IN_PLACE, plan_ms.data(), int(plan_ms.size()), MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  std::vector<double> step_ms(static_cast<size_t>(steps));
  for (size_t s = 0; s < step_ms.size(); ++s) step_ms[s] = span[step_mark[s]];
  std::vector<std::vector<double>> blocks;  // [b][l]: warm ms of length l in block b (after cycle b)
  for (const auto& bm : block_mark) {
    std::vector<double> w;
    for (size_t m : bm) w.push_back(span[m]);
    blocks.push_back(w);
  }
  const CacheStats c = ctx->stats().cache;
  auto median = [](std::vector<double> v) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  auto worst_of = [](const std::vector<double>& v) { return v.empty() ? 0.0 : *std::max_element(v.begin(), v.end()); };
  // Warm reference of step s (cycle c >= 1): blocks c-1 and c bracket it.
  auto paired_ref = [&](size_t s) {
    const size_t cyc = s / nlen, l = s % nlen;
    if (cyc == 0 || cyc >= blocks.size()) return 0.0;
    return 0.5 * (blocks[cyc - 1][l] + blocks[cyc][l]);
  };
  std::vector<double> warm_ms(nlen, 0.0), unpaired_noise, paired_noise;
  for (size_t l = 0; l < nlen; ++l) {
    std::vector<double> t;
    for (const auto& w : blocks) t.push_back(w[l]);
    warm_ms[l] = median(t);
    for (double x : t) unpaired_noise.push_back(x / warm_ms[l]);
    // The same comparison with no length change: a warm sample against the mean of its neighbours.
    for (size_t b = 1; b + 1 < blocks.size(); ++b) paired_noise.push_back(t[b] / (0.5 * (t[b - 1] + t[b + 1])));
  }
  if (rank == 0) {
    std::printf("# %d ranks, backend %s, %d layer(s) per step, timing %s\n", world, to_string(cfg.backend),
                layers, sync ? "synchronous (wait + barrier every step)" : "run-ahead (marks on the stream)");
    std::printf("# step   tokens       ms  plan_ms   warm_ref   ratio\n");
    for (size_t s = 0; s < size_t(steps); ++s) {
      const double ref = paired_ref(s);
      std::printf("%6zu %8lld %8.3f %8.3f %10.3f %7.3f\n", s, (long long)lengths[s % nlen], step_ms[s], plan_ms[s], ref,
                  ref > 0 ? step_ms[s] / ref : 0.0);
    }
    std::printf("# cache: device hits %lld, host hits %lld, misses %lld, promotions %lld, plans held %lld (on device %lld), "
                "device bytes %lld of %lld, build %.2f ms, lookup %.3f ms, prefetches %lld, prefetch waits %lld, "
                "copies %lld, staged %lld\n",
                (long long)c.device_hits, (long long)c.host_hits, (long long)c.misses, (long long)c.promotions,
                (long long)c.plans_held, (long long)c.device_plans, (long long)c.device_bytes,
                (long long)cfg.cache.device_budget_bytes, c.build_ms, c.lookup_ms, (long long)c.prefetches,
                (long long)c.prefetch_waits, (long long)c.copies, (long long)c.staged);
    if (size_t(steps) > nlen) {
      const int64_t lookups = ss_lookups, dev_hits = ss_dev_hits, hits = ss_hits;
      double sum_plan = 0, sum_ms = 0;
      std::vector<double> paired, unpaired;
      for (size_t s = nlen; s < size_t(steps); ++s) {
        if (warm_ms[s % nlen] > 0) unpaired.push_back(step_ms[s] / warm_ms[s % nlen]);
        const double ref = paired_ref(s);
        if (ref > 0) paired.push_back(step_ms[s] / ref);
        sum_plan += plan_ms[s];
        sum_ms += step_ms[s];
      }
      const double n = double(size_t(steps) - nlen);
      // plan_ms is the last forward's of its step; every layer's lookup is alike (all device hits).
      std::printf("# steady state (steps %zu..%d): hit rate %.1f%% (device %.1f%%), plan lookup %.2f us per forward "
                  "(%.3f%% of the step), mean step %.3f ms\n",
                  nlen, steps - 1, lookups ? 100.0 * double(hits) / double(lookups) : 0.0,
                  lookups ? 100.0 * double(dev_hits) / double(lookups) : 0.0, 1e3 * sum_plan / n,
                  100.0 * layers * sum_plan / sum_ms, sum_ms / n);
      if (warm) {
        std::printf("# step / warm step of its length, paired (mean of the two warm samples bracketing its cycle): "
                    "median %.3f, worst %.3f over %zu steps; noise floor, the same comparison with no length change "
                    "(warm sample / mean of its neighbours): median %.3f, worst %.3f over %zu\n",
                    median(paired), worst_of(paired), paired.size(), median(paired_noise), worst_of(paired_noise),
                    paired_noise.size());
        std::printf("# step / median warm step of its length (%zu samples each), unpaired: median %.3f, worst %.3f; "
                    "noise floor (slowest / median warm sample of one length) %.3f\n",
                    blocks.size(), median(unpaired), worst_of(unpaired), worst_of(unpaired_noise));
      }
    }
    std::printf("# warm ms per length (median):");
    for (size_t l = 0; l < nlen; ++l) std::printf(" %lld:%.3f", (long long)lengths[l], warm_ms[l]);
    std::printf("\n");
    if (warm) {
      std::printf("# warm samples, one row per block (after cycle 0, 1, ...):\n");
      for (const auto& w : blocks) {
        std::printf("#  ");
        for (double x : w) std::printf(" %8.3f", x);
        std::printf("\n");
      }
    }
  }
  for (void* p : {q, k, v, o, lse}) dev::release(cfg.backend, p);
  ctx.reset();
  MPI_Finalize();
  return 0;
}

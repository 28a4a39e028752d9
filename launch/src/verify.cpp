// ringattn verify: every rank checks its own output shard against the float64
// reference on deterministic inputs (nccl-tests style): one line per rank, a
// footer with the tolerances, and a last line that says OK or FAILED.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <memory>
#include <thread>

#include "commands.hpp"
#include "inputs.hpp"
#include "report.hpp"
#include "ringattn/device.hpp"

namespace ringattn::cli {
namespace {

// Reference threads per rank: --threads, else this host's cores over its ranks.
int reference_threads(const Options& o) {
  if (o.has("--threads")) return int(o.threads);
  int local_rank = 0, local_size = 1;
  host_rank(&local_rank, &local_size);
  return std::max(1, int(std::thread::hardware_concurrency()) / std::max(1, local_size));
}

// Rank 0 prints the reference's progress every --progress seconds (its own
// rows; every rank has as many).
std::function<void(double)> progress_printer(const Options& o, const Problem& p, int threads) {
  if (p.group.rank != 0 || o.progress <= 0) return nullptr;
  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const auto every = std::chrono::duration<double>(o.progress);
  auto last = std::make_shared<clock::time_point>(start);
  return [=](double fraction) {
    const auto now = clock::now();
    if (now - *last < every) return;
    *last = now;
    std::fprintf(stderr, "[ringattn] verify: float64 reference %3.0f%% of rank 0's %lld rows (%d thread%s, %.1f s)\n",
                 100 * fraction, (long long)(p.rows() * p.shape.batch), threads, threads == 1 ? "" : "s",
                 std::chrono::duration<double>(now - start).count());
  };
}

}  // namespace

Status verify_command(const Options& o, const Op& op, Context& ctx, const Problem& p, int* rc) {
  const Config& c = p.cfg;
  uint64_t seed = o.has("--seed") ? uint64_t(o.seed)
                                  : uint64_t(std::chrono::system_clock::now().time_since_epoch().count() & 0xffffffff);
  MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, p.group.comm);
  const Source src = source_of(o, seed);
  if (p.group.rank == 0)
    std::printf("# ringattn verify (seed %llu, amplitude %g)\n%s", (unsigned long long)seed, o.amplitude, describe(o, p).c_str());
  InputSets in;
  DeviceTensors out(c.backend);
  CLI_AGREE(p.group, make_input_sets(op, p, src, 1, &in));
  CLI_AGREE(p.group, make_outputs(op, p, &out));
  for (int64_t i = 0; i < o.repeat; ++i) {
    if (i > 0) CLI_OR_ABORT(p.group, out.poison());  // stream-ordered after the op in flight: the last one must write everything
    CLI_OR_ABORT(p.group, op.run(ctx, p.shape, in[0]->ptrs(), out.ptrs()));
  }
  CLI_OR_ABORT(p.group, ctx.synchronize());  // under the timeout, before anything waits on the stream
  CLI_OR_ABORT(p.group, dev::synchronize(c.backend));
  HostTensors host;
  CLI_OR_ABORT(p.group, out.download(p, op.outputs, &host));

  const int threads = reference_threads(o);
  CheckResult r;
  CLI_AGREE(p.group, op.check(p, src, host, RefRun{threads, progress_printer(o, p, threads)}, &r));
  std::string header = "#  rank     tokens", line(64, '\0');
  line.resize(size_t(std::snprintf(&line[0], line.size(), "%6d %10lld", p.group.rank, (long long)p.rows())));
  std::vector<double> worst;  // max over ranks of each error, NaN as +inf
  for (const TensorError& e : r.errors) {
    char cell[32];
    std::snprintf(cell, sizeof(cell), " %14s", (e.name + "_" + e.metric).c_str());
    header += cell;
    std::snprintf(cell, sizeof(cell), " %14.3e", e.err);
    line += cell;
    worst.push_back(std::isnan(e.err) ? INFINITY : e.err);
  }
  char tail[64];
  std::snprintf(tail, sizeof(tail), " %10lld %s\n", (long long)r.wrong, r.ok ? "ok" : "WRONG");
  const std::vector<std::string> lines = gather_lines(p.group, line + tail);
  int64_t bad[2] = {r.ok ? 0 : 1, r.wrong};
  MPI_Allreduce(MPI_IN_PLACE, worst.data(), int(worst.size()), MPI_DOUBLE, MPI_MAX, p.group.comm);
  MPI_Allreduce(MPI_IN_PLACE, bad, 2, MPI_INT64_T, MPI_SUM, p.group.comm);
  const Stats& st = ctx.stats();
  int64_t bytes[2] = {st.last_bytes_sent, st.last_bytes_ideal};
  MPI_Allreduce(MPI_IN_PLACE, bytes, 2, MPI_INT64_T, MPI_MAX, p.group.comm);
  const bool ok = bad[0] == 0;
  Status written;
  if (p.group.rank == 0) {
    std::printf("%s     #wrong\n", header.c_str());
    for (const std::string& l : lines) std::printf("%s", l.c_str());
    std::printf("# tolerance: %s; bytes sent per rank %lld (ideal %lld)\n", r.tolerance.c_str(), (long long)bytes[0], (long long)bytes[1]);
    std::string errs;
    for (size_t i = 0; i < worst.size(); ++i) {
      char e[64];
      std::snprintf(e, sizeof(e), "max %s err %.3e, ", r.errors[i].name.c_str(), worst[i]);
      errs += e;
    }
    std::printf("verify: %d ranks, %lld tokens, %s#wrong %lld: %s\n", p.group.size, (long long)p.shape.seq, errs.c_str(),
                (long long)bad[1], ok ? "OK" : "FAILED");
    std::fflush(stdout);
    Json j = json_common(o, p);
    j.integer("seed", int64_t(seed));
    for (size_t i = 0; i < worst.size(); ++i) {
      std::string key = r.errors[i].name + "_" + r.errors[i].metric.substr(0, r.errors[i].metric.rfind("_err")) + "_max";
      std::transform(key.begin(), key.end(), key.begin(), [](unsigned char ch) { return char(std::tolower(ch)); });
      j.num(key, worst[i]);
    }
    written = write_json(o.json, j.integer("wrong", bad[1]).boolean("ok", ok));
  }
  CLI_AGREE(p.group, written);
  *rc = ok ? 0 : 1;
  return Status::Ok();
}

}  // namespace ringattn::cli

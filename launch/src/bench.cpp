// ringattn bench: the operation timed on rotating input sets; --scaling:
// weak and strong scaling over 1, 2, 4, ... ranks.
#include <mpi.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "commands.hpp"
#include "inputs.hpp"
#include "measure.hpp"
#include "report.hpp"
#include "ringattn/device.hpp"

namespace ringattn::cli {
namespace {

// One measurement of --scaling: `ranks` ranks, `tokens` in all.
struct SubRun {
  std::string mode;  // weak | strong
  int ranks;
  int64_t tokens;
  std::string label() const {
    return "bench --scaling, " + mode + " run on " + std::to_string(ranks) + (ranks == 1 ? " rank (" : " ranks (") +
           std::to_string(tokens) + " tokens)";
  }
};

Status sub_config(const Options& o, const SubRun& r, Options* so, Config* c) {
  *so = o;
  so->seq = r.tokens;
  RINGATTN_RETURN_IF_ERROR(make_config(*so, c));
  return validate_shape(*c, Shape{so->batch, r.tokens}, r.ranks);
}

// One sub-run on `g` (the first r.ranks ranks). Collective over g; the error
// agreed on by g, if any.
Status measure_sub_run(const Options& o, const Op& op, const Group& g, const SubRun& r, Summary* out) {
  Options so;
  Problem p;
  p.group = g;
  p.shape = Shape{o.batch, r.tokens};
  CLI_AGREE(g, sub_config(o, r, &so, &p.cfg));
  std::unique_ptr<Context> ctx;
  CLI_AGREE(g, Context::create(p.cfg, g.comm, &ctx));
  InputSets in;
  DeviceTensors outs(p.cfg.backend);
  CLI_AGREE(g, make_input_sets(op, p, source_of(so, uint64_t(so.seed)), 1, &in));
  CLI_AGREE(g, make_outputs(op, p, &outs));
  *out = summarize(op, *ctx, p, time_op(op, *ctx, p, in, outs, o.warmup, o.warmup_ms, o.iters, false));
  if (g.rank == 0) std::fprintf(stderr, "[ringattn] scaling %s: %d ranks, %lld tokens: %.3f ms\n", r.mode.c_str(), r.ranks, (long long)r.tokens, out->ms);
  return Status::Ok();
}

}  // namespace

Status bench_command(const Options& o, const Op& op, Context& ctx, const Problem& p, int* rc) {
  // Rotate input sets so repeated runs do not measure L2 (device memory only).
  int sets = 1;
  if (p.cfg.backend == Backend::cuda)
    sets = int(std::min(8.0, std::max(1.0, std::ceil(2.0 * 64e6 / double(device_bytes(p, op.inputs))))));
  DeviceTensors out(p.cfg.backend);
  RINGATTN_RETURN_IF_ERROR(measure_and_report(o, op, ctx, p, sets, &out));
  *rc = 0;
  return Status::Ok();
}

// Weak scaling (tokens per rank fixed at --seq / ranks) and strong scaling
// (--seq total) over 1, 2, 4, ... ranks and all of them: each measurement runs
// on a sub-communicator of the first g ranks while the others wait. Every
// sub-run is checked on every rank before the first one starts, and after each
// one all ranks of the world agree on its outcome, so a failure ends the job
// on every rank instead of leaving the waiting ones in a barrier.
Status scaling_command(const Options& o, const Op& op, int* rc) {
  const Group world = Group::world();
  std::vector<int> counts;
  for (int g = 1; g < world.size; g *= 2) counts.push_back(g);
  counts.push_back(world.size);
  const int64_t per_rank = o.seq / world.size;
  std::vector<SubRun> runs;
  for (const char* mode : {"weak", "strong"})
    for (int g : counts) runs.push_back({mode, g, std::string(mode) == "weak" ? per_rank * g : o.seq});
  Status st;
  for (const SubRun& r : runs) {
    Options so;
    Config c;
    st = sub_config(o, r, &so, &c);
    if (!st.ok()) {
      st = Status(st.code(), r.label() + ": " + st.message());
      break;
    }
  }
  CLI_AGREE(world, st);  // every rank computed the same: no sub-run can fail on its arguments

  std::vector<Summary> rows(runs.size());
  for (size_t i = 0; i < runs.size(); ++i) {
    MPI_Comm sub = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, world.rank < runs[i].ranks ? 0 : MPI_UNDEFINED, world.rank, &sub);
    Status mine;
    if (sub != MPI_COMM_NULL) {
      mine = measure_sub_run(o, op, Group{sub, world.rank, runs[i].ranks}, runs[i], &rows[i]);
      MPI_Comm_free(&sub);
    }
    const Status all = agree(world, mine, false);  // the sub-run already named its failing rank
    if (!all.ok()) return Status(all.code(), runs[i].label() + ": " + all.message());
  }

  if (world.rank == 0) {
    std::printf("# ringattn bench --scaling: config %s, %lld tokens per rank (weak) / %lld total (strong), up to %d ranks\n",
                config_label(o).c_str(), (long long)per_rank, (long long)o.seq, world.size);
    std::printf("# %-6s %6s %10s %11s %11s %12s %14s %14s %10s %11s\n", "mode", "ranks", "tokens", "median_ms", "TFLOP/s",
                "TF/s/rank", "bytes/rank", "ideal/rank", "exposed%", "efficiency");
  }
  std::vector<Json> json_rows;
  for (size_t i = 0; i < runs.size() && world.rank == 0; ++i) {
    const SubRun& w = runs[i];
    const Summary& r = rows[i];
    const Summary& base = rows[w.mode == "weak" ? 0 : counts.size()];
    const double eff = w.mode == "weak" ? base.ms / r.ms : base.ms / (double(w.ranks) * r.ms);
    const double exposed = 100.0 * r.exposed_ms_max / r.ms;
    std::printf("  %-6s %6d %10lld %11.3f %11.3f %12.3f %14lld %14lld %10.2f %11.3f\n", w.mode.c_str(), w.ranks,
                (long long)w.tokens, r.ms, r.tflops(), r.tflops() / w.ranks, (long long)r.bytes_sent_max,
                (long long)r.bytes_ideal_max, exposed, eff);
    Json j;
    j.str("mode", w.mode).integer("ranks", w.ranks).integer("tokens", w.tokens).num("median_ms", r.ms).num("tflops", r.tflops());
    j.integer("bytes_per_rank", r.bytes_sent_max).integer("ideal_per_rank", r.bytes_ideal_max).num("exposed_pct", exposed);
    json_rows.push_back(j.num("efficiency", eff));
  }
  Status written;
  if (world.rank == 0) {
    std::printf("# efficiency: weak = t(1)/t(g); strong = t(1)/(g*t(g)). Ranks sharing one GPU share its compute.\n");
    std::fflush(stdout);
    Json j;
    j.str("command", "bench --scaling").str("op", op.name).str("config", config_label(o)).str("backend", o.backend);
    j.str("device", dev::device_name(o.backend == "cuda" ? Backend::cuda : Backend::cpu));
    written = write_json(o.json, j.objects("rows", json_rows));
  }
  CLI_AGREE(world, written);
  *rc = 0;
  return Status::Ok();
}

}  // namespace ringattn::cli

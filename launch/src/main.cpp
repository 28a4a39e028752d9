// `ringattn`: the command-line front end (run | verify | bench).
// Launch it with mpirun (or ./launch/ringattn -np N ..., which adds the flags
// this machine needs and -q). Every rank parses the same arguments; each
// error is agreed on by all ranks before data moves, printed once by rank 0,
// and ends the job with the exit code of job.hpp (2: bad arguments).
#include <mpi.h>

#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>

#include "commands.hpp"
#include "measure.hpp"
#include "files.hpp"
#include "inputs.hpp"
#include "job.hpp"
#include "ops.hpp"
#include "options.hpp"

namespace ringattn::cli {
namespace {

// Everything that can be checked before any computation: the operation, the
// files' shapes, the config, the shape against the ranks, the fault spec and
// every output path (on rank 0, which writes them). Collective.
Status set_up(Options* o, const Group& world, const Op** op, Problem* p) {
  Status st = Status::Ok();
  if (o->backward) {
    if (o->has("--op") && o->op != "backward")
      st = InvalidArgument("--backward and --op " + o->op + " name two operations (allowed: one of them)");
    o->op = "backward";
  }
  if (st.ok()) st = find_op(o->op, op);
  // The backward's own files: dO in, dQ/dK/dV out.
  const bool backward = st.ok() && std::string((*op)->name) == "backward";
  for (const char* f : {"--dout", "--dq", "--dk", "--dv"})
    if (st.ok() && o->has(f) && !backward)
      st = InvalidArgument(std::string(f) + " is a file of the backward (allowed with --op backward, not --op " + o->op + ")");
  if (st.ok() && o->has("--dout") && o->q_file.empty())
    st = InvalidArgument("--dout needs --q/--k/--v (the files define the shape; without them dO comes from --seed)");
  if (st.ok()) st = shape_from_files(o);
  if (st.ok()) st = make_config(*o, &p->cfg);
  p->group = world;
  p->shape = Shape{o->batch, o->seq};
  if (st.ok()) st = validate_shape(p->cfg, p->shape, world.size);
  if (st.ok()) st = check_world(*o, world.size);
  RINGATTN_RETURN_IF_ERROR(agree(world, st));
  // Rank 0 writes every output: its view of the paths is the one that counts.
  if (world.rank == 0)
    st = check_output_paths({{"--out", o->out_file}, {"--lse", o->lse_file}, {"--dq", o->dq_file}, {"--dk", o->dk_file},
                             {"--dv", o->dv_file}, {"--json", o->json}});
  return agree(world, st, false);
}

int main_checked(int argc, char** argv, const Group& world) {
  Options o;
  Status st = agree(world, parse_options(argc - 1, argv + 1, &o));
  if (!st.ok()) exit_job(st);
  if (o.help || o.command.empty()) {  // no command: usage on stderr, exit 2
    if (world.rank == 0) std::fprintf(o.help ? stdout : stderr, "%s", usage(o.command).c_str());
    MPI_Finalize();
    return o.help ? 0 : 2;
  }
  const Op* op = nullptr;
  Problem p;
  st = set_up(&o, world, &op, &p);
  if (!st.ok()) exit_job(st);
  if (!o.fault.text.empty()) setenv("RINGATTN_INJECT_FAULT", o.fault.text.c_str(), 1);
  if (p.cfg.backend == Backend::cuda) {
    st = agree(world, select_local_device());
    if (!st.ok()) exit_job(st);
  }
  int rc = 0;
  if (o.command == "bench" && o.scaling) {
    st = scaling_command(o, *op, &rc);
  } else {
    std::unique_ptr<Context> ctx;
    st = agree(world, Context::create(p.cfg, MPI_COMM_WORLD, &ctx));
    if (st.ok()) {
      const auto command = o.command == "run" ? run_command : o.command == "verify" ? verify_command : bench_command;
      st = command(o, *op, *ctx, p, &rc);
    }
  }
  if (!st.ok()) exit_job(st);
  MPI_Finalize();
  return rc;
}

}  // namespace
}  // namespace ringattn::cli

int main(int argc, char** argv) {
  using namespace ringattn;
  (void)cli::seconds_since_start();  // the clock of "set-up before the first call" starts here
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    std::fprintf(stderr, "ringattn: error: MPI_Init failed\n");
    return 3;
  }
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  const cli::Group world = cli::Group::world();
  try {
    return cli::main_checked(argc, argv, world);
  } catch (const std::bad_alloc&) {
    cli::abort_job(world, Status(StatusCode::kInternal, "out of host memory (a smaller --seq, --batch or fewer tokens per rank)"));
  } catch (const std::exception& e) {
    cli::abort_job(world, Status(StatusCode::kInternal, std::string("unexpected exception: ") + e.what()));
  }
}

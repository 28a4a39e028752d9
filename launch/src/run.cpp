// ringattn run: the operation on synthetic inputs or .npy files, timed, with
// --out/--lse gathering the outputs to rank 0.
#include <mpi.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "commands.hpp"
#include "inputs.hpp"
#include "measure.hpp"
#include "npy.hpp"

namespace ringattn::cli {
namespace {

// Gathers each output named by a file (op.outputs order: --out, --lse, and
// for the backward --dq, --dk, --dv) to
// rank 0, where rank p's rows land at [p*L, (p+1)*L) of every batch element,
// and writes it. Collective.
Status write_outputs(const Options& o, const Op& op, const Problem& p, const DeviceTensors& out) {
  const std::vector<std::string> paths = {o.out_file, o.lse_file, o.dq_file, o.dk_file, o.dv_file};
  if (std::all_of(paths.begin(), paths.end(), [](const std::string& s) { return s.empty(); })) return Status::Ok();
  HostTensors host;
  CLI_AGREE(p.group, out.download(p, op.outputs, &host));
  Status st;
  for (size_t i = 0; i < op.outputs.size() && i < paths.size(); ++i) {
    if (paths[i].empty()) continue;
    const bool per_head = op.outputs[i].per_head;
    const int64_t B = p.shape.batch, N = p.shape.seq, row = p.cfg.heads * (per_head ? 1 : p.cfg.head_dim), chunk = p.rows() * row;
    if (chunk > INT32_MAX) {  // MPI counts are int: a shard of 2^31 floats or more would wrap
      st = InvalidArgument(std::string("gathering ") + paths[i] + ": " + std::to_string(chunk) +
                           " floats per rank and batch element (allowed: below 2^31; use fewer tokens per rank)");
      break;
    }
    std::vector<float> all(p.group.rank == 0 ? size_t(B * N * row) : 0);
    for (int64_t b = 0; b < B && st.ok(); ++b)
      if (MPI_Gather(host[i].data() + b * chunk, int(chunk), MPI_FLOAT, p.group.rank == 0 ? all.data() + b * N * row : nullptr,
                     int(chunk), MPI_FLOAT, 0, p.group.comm) != MPI_SUCCESS)
        st = Status(StatusCode::kCommError, "MPI_Gather of " + paths[i] + " failed");
    std::vector<int64_t> shape = {B, N, p.cfg.heads};
    if (!per_head) shape.push_back(p.cfg.head_dim);
    if (p.group.rank == 0 && st.ok()) st = npy::write_f32(paths[i], shape, all.data());
  }
  return agree(p.group, st);
}

}  // namespace

Status run_command(const Options& o, const Op& op, Context& ctx, const Problem& p, int* rc) {
  DeviceTensors out(p.cfg.backend);
  RINGATTN_RETURN_IF_ERROR(measure_and_report(o, op, ctx, p, 1, &out));
  RINGATTN_RETURN_IF_ERROR(write_outputs(o, op, p, out));
  *rc = 0;
  return Status::Ok();
}

}  // namespace ringattn::cli

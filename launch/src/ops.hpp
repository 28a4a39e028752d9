// The operations of the command line, one table entry each (as nccl-tests'
// testColl): the tensors an operation reads and writes (their shapes give its
// bytes), its useful FLOPs, how its inputs are made, how it runs, and how its
// output is checked against the float64 reference. `run`, `verify` and
// `bench` (with --scaling) work on any entry: the backward pass is one more
// entry in ops.cpp.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "job.hpp"
#include "kernels/cpu/synth.hpp"
#include "ringattn/ringattn.hpp"

namespace ringattn::cli {

// What one measurement computes, on which ranks.
struct Problem {
  Group group;
  Config cfg;
  Shape shape;
  int64_t rows() const { return shape.seq / group.size; }  // L: tokens of this rank's shard
};

// One tensor of an operation: this rank's shard of it.
struct TensorInfo {
  const char* name;         // "q", "o", "lse"
  kern::SynthTensor synth;  // inputs: the synthetic stream that makes it (outputs: SynthTensor{})
  bool per_head;            // true: B x L x H float32 (LSE); false: B x L x H x D in the run's dtype
};
size_t elements(const Problem& p, const TensorInfo& t);
size_t device_bytes(const Problem& p, const TensorInfo& t);
size_t device_bytes(const Problem& p, const std::vector<TensorInfo>& ts);

// Where the inputs come from: synthetic (seed, amplitude) or one .npy file per input.
struct Source {
  uint64_t seed = 1;
  double amplitude = 1;
  std::vector<std::string> files;  // empty: synthetic; else one per input, in table order
  bool allow_nonfinite = false;
};

using HostTensors = std::vector<std::vector<float>>;  // one per tensor, in table order

// One output's comparison with the reference on this rank.
struct TensorError {
  std::string name;    // "O", "LSE"
  std::string metric;  // column suffix: "rel_l2_err", "abs_err"
  double err = 0;
};
struct CheckResult {
  std::vector<TensorError> errors;
  int64_t wrong = 0;      // elements outside their bound
  bool ok = false;
  std::string tolerance;  // the bounds used, for the table's footer
};

// How the float64 reference runs: threads per rank, and a callback told the
// fraction done (called from the calling thread).
struct RefRun {
  int threads = 1;
  std::function<void(double)> progress;
};

struct Op {
  const char* name;
  std::vector<TensorInfo> inputs, outputs;
  double (*flops)(const Config& c, const Shape& s);  // useful FLOPs, whole sequence (SPEC "Counting work")
  Status (*make_inputs)(const Op& op, const Problem& p, const Source& src, HostTensors* in);
  Status (*run)(Context& ctx, const Shape& s, void* const* in, void* const* out);
  Status (*check)(const Problem& p, const Source& src, const HostTensors& out, const RefRun& ref, CheckResult* r);
};

// The entry named `name` ("forward"), or an error listing the names.
Status find_op(const std::string& name, const Op** op);

}  // namespace ringattn::cli

// Inputs of an operation: synthetic (a pure function of seed, tensor and
// global index, so any rank can make any shard, nccl-tests style) or read
// from .npy files, which define N, B, H and D; and the device buffers that
// hold a set of tensors.
#pragma once
#include <memory>
#include <vector>

#include "ops.hpp"
#include "options.hpp"

namespace ringattn::cli {

// Device (or host, on the cpu backend) buffers of one set of tensors.
class DeviceTensors {
 public:
  explicit DeviceTensors(Backend b) : backend_(b) {}
  Status alloc(const Problem& p, const std::vector<TensorInfo>& ts);
  Status upload(const Problem& p, const std::vector<TensorInfo>& ts, const HostTensors& host);  // alloc + copy in
  Status download(const Problem& p, const std::vector<TensorInfo>& ts, HostTensors* host) const;
  Status poison() const;  // 0xff bytes (NaN), stream-ordered: what the next op must overwrite
  void* const* ptrs() const { return ptrs_.data(); }
  ~DeviceTensors();  // releases every buffer
  DeviceTensors(const DeviceTensors&) = delete;
  DeviceTensors& operator=(const DeviceTensors&) = delete;

 private:
  Backend backend_;
  std::vector<void*> ptrs_;
  std::vector<size_t> bytes_;
};
using InputSets = std::vector<std::unique_ptr<DeviceTensors>>;

// With --q/--k/--v: reads the three headers, checks they agree, and sets
// o->seq, batch, heads and head_dim from them. A flag given on the command
// line that differs from the files is an error naming both values.
Status shape_from_files(Options* o);

// Where the inputs of a run come from (--seed, --amplitude, --q/--k/--v).
Source source_of(const Options& o, uint64_t seed);

// `sets` input sets on the device, set i from seed + 7919 i (bench rotates
// them); from files, one set. Not collective.
Status make_input_sets(const Op& op, const Problem& p, const Source& src, int sets, InputSets* in);

// The outputs of `op` on the device, poisoned. Not collective.
Status make_outputs(const Op& op, const Problem& p, DeviceTensors* out);

// The input maker of plain operations: each input from its file (checked for
// NaN/Inf unless allowed) or from its synthetic stream.
Status make_inputs_plain(const Op& op, const Problem& p, const Source& src, HostTensors* in);

// The whole sequence (all ranks' tokens) of one synthetic input, rounded to
// the run's dtype as the kernels see it: the float64 reference's input.
std::vector<double> synth_sequence(const Problem& p, const Source& src, kern::SynthTensor which);

}  // namespace ringattn::cli

// Checkpoints: DIR/checkpoint.bin, written by rank 0 (the weights and the
// optimizer state are the same on every rank) and read by rank 0 and
// broadcast on resume, so no shared file system is needed and every rank
// holds the same bits.
//
// Layout: magic "RINGATTN-TRAIN1\n", the options that must match
// (fingerprint, "name=value\n" lines, length-prefixed), the step, the
// parameter count, weights, AdamW m and v (float32), then an FNV-1a 64 hash
// of everything before it: a truncated or damaged file is refused, never
// half loaded. A save goes to checkpoint.bin.tmp, is flushed, synced and
// renamed over checkpoint.bin, so a failed save leaves the last good one.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ringattn/status.hpp"

namespace train {

struct TrainState {
  int64_t step = 0;  // steps completed
  std::vector<float> w, m, v;
};

using Fingerprint = std::vector<std::pair<std::string, std::string>>;

std::string checkpoint_path(const std::string& dir);
// Creates dir if missing and proves a file can be written there (removed again).
ringattn::Status check_save_dir(const std::string& dir);
ringattn::Status save_checkpoint(const std::string& dir, const Fingerprint& fp, const TrainState& s);
// Refuses another configuration (naming the first option that differs), a
// wrong parameter count, a truncated or damaged file.
// subset (--init-from): only the options in fp must be there with their
// values (the model's); errors name `flag`.
ringattn::Status load_checkpoint(const std::string& dir, const Fingerprint& fp, int64_t nparams, TrainState* s,
                                 bool subset = false, const std::string& flag = "--resume");

}  // namespace train

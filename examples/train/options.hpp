// Options of the training example: strict parsing (launch/src/parse.hpp:
// whole-string values, ranges, k/M suffixes, a flag given twice is an
// error) and every check that needs no communication, so each rank finds
// the same error before anything moves.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "model.hpp"
#include "ringattn/config.hpp"
#include "ringattn/status.hpp"
#include "task.hpp"

namespace train {

struct TrainOptions {
  // Where it runs: --backend (empty: cuda when the build has CUDA and every
  // rank sees a GPU, else cpu; resolve_backend), --transport (empty: the
  // CLI's default for the backend), --attn-dtype (empty: f32 on cpu, bf16 on cuda).
  std::string backend_text, transport_text, attn_dtype_text;
  ringattn::Backend backend = ringattn::Backend::cpu;   // resolved
  ringattn::DType attn_dtype = ringattn::DType::f32;    // resolved (validate_options)
  // --matmul f32|bf16 (empty: bf16 on cuda, f32 on cpu), --grad-sum host|nccl (empty: nccl on
  // cuda with the nccl transport, else host), --peak-tflops (0: the device's, where known).
  std::string matmul_text, grad_sum_text;
  bool bf16_matmul = false;                             // resolved (validate_options)
  std::string grad_sum = "host";  // resolved: "none" (one rank: nothing to sum), "host" or "nccl"
  double peak_tflops = 0;
  TaskSpec task;
  ModelDims dims;
  std::string branches_text, config_name;   // --branches / --config; neither: the default below
  std::vector<ringattn::Branch> branches;   // resolved
  int64_t steps = 1500, batch = 1, warmup = 50, log_every = 50;
  double lr = 3e-3, min_lr = 0.1, wd = 0.01, clip = 1.0, beta1 = 0.9, beta2 = 0.98, eps = 1e-8;
  int64_t seed = 1;
  std::string json, save, resume;
  std::string init_from;  // weights only, from a checkpoint of the same model (a curriculum's next stage)
  int64_t save_every = 0, stop_after = 0;   // 0: at the end / no stop
  bool eval = false;
  int64_t eval_seqs = 8, eval_every = 0;
  bool check_grad = false;
  bool deterministic = true;  // --deterministic on|off: Config::deterministic (atomic dQ on cuda when off)
  std::string grad_dump;   // --grad-dump FILE: step 0's gradient as text, then exit
  std::set<std::string> given;  // the flags on the command line (the rest take the backend's defaults)
  double timeout = 60;
  bool help = false;
};

extern const char* kUsage;

// Parses argv (every rank parses the same arguments).
ringattn::Status parse_options(int argc, char** argv, TrainOptions* o);
// Sets o->backend from --backend, or (none given) from gpu_everywhere: true
// when this build has CUDA and every rank sees a GPU (the caller agrees on it).
ringattn::Status resolve_backend(TrainOptions* o, bool gpu_everywhere);
// Fills the backend's defaults of what was not given (cuda: a longer
// sequence and a model whose head dim the cuda kernels take), resolves the
// branches against N and checks the sizes against each other, the world
// size and the backend.
ringattn::Status validate_options(TrainOptions* o, int world);
// The default attention: a local branch, a middle one and one spanning the whole sequence.
std::string default_branches(int64_t seq);
// What a checkpoint must match to be resumed (name, value): everything that
// changes the trajectory; not the logging, file or evaluation options.
std::vector<std::pair<std::string, std::string>> fingerprint(const TrainOptions& o);
// What --init-from needs to match: the options that shape the parameters.
std::vector<std::pair<std::string, std::string>> model_fingerprint(const TrainOptions& o);

}  // namespace train

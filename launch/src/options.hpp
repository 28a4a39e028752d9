// Command-line options of `ringattn run|verify|bench`: one parser for all
// subcommands, every bad value answered with a message that names it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ringattn/config.hpp"
#include "ringattn/status.hpp"

namespace ringattn::cli {

struct Options {
  std::string command;          // run | verify | bench
  bool help = false;
  std::string config_name;      // longnet4 | longnet-paper | geometric | dense
  std::string branches_text;    // explicit "w:r,..."
  bool branches_given = false;  // --branches seen (even empty: an error)
  int64_t seq = 32768;
  int64_t heads = 4;
  int64_t head_dim = 64;
  int64_t batch = 1;
  bool causal = false;
  std::string head_offsets = "interleaved";
  std::string dtype;            // default: f32 on cpu, bf16 on cuda
  std::string backend = "cpu";
  std::string transport;        // default: mpi on cpu, nccl on cuda
  double scale = 0;
  uint64_t seed = 0;            // 0: from the clock (verify) / 1 (run, bench)
  bool seed_given = false;
  double amplitude = 1.0;       // inputs uniform in [-a, a)
  int iters = -1;               // default: 3 (run), 10 (bench)
  int warmup = -1;              // default: 1 (run), 3 (bench)
  int repeat = 1;               // verify: forwards back to back (outputs poisoned in between), last one checked
  std::string json;
  std::string q_file, k_file, v_file, out_file, lse_file;
  bool timeline = false;
  bool cache_stats = false;
  std::string cache = "on";
  int64_t cache_device_mb = 256;
  int64_t cache_host_mb = 1024;
  int promote_after = 3;
  double timeout = 60;
  std::string inject_fault;     // rank=R,step=S[,mode=exit|error]
  bool scaling = false;         // bench: weak/strong scaling study
};

// Parses argv (after the program name). On --help sets opts->help.
Status parse_options(int argc, char** argv, Options* opts);
// Resolves names and defaults into a Config (branches need seq for some names).
Status make_config(const Options& o, Config* c);
std::string usage(const std::string& command);

}  // namespace ringattn::cli

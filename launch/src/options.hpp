// Command-line options of `ringattn run|verify|bench`. One table of flags
// (options.cpp) gives each flag its value, the commands that take it and its
// help line, so parsing and `ringattn COMMAND --help` cannot drift apart.
// A flag given twice, a flag of another command, a switch given a value other
// than true/false, and any value out of range are errors naming the value.
#pragma once
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "ringattn/config.hpp"
#include "ringattn/status.hpp"

namespace ringattn::cli {

// --inject-fault rank=R,step=S[,mode=exit|error][,forward=F] (test only).
struct FaultSpec {
  int64_t rank = -1, step = -1, forward = 0;  // forward 0: every forward
  std::string mode = "exit";
  std::string text;  // as given, for RINGATTN_INJECT_FAULT
};

struct Options {
  std::string command;          // run | verify | bench
  bool help = false;
  std::set<std::string> given;  // flags on the command line ("--seq", ...)
  bool has(const char* flag) const { return given.count(flag) != 0; }

  std::string op = "forward";   // an entry of the operation table (ops.hpp)
  bool backward = false;        // --backward: the same as --op backward (resolved in set_up)
  std::string config_name;      // longnet4 | longnet-paper | geometric | dense
  std::string branches_text;    // explicit "w:r,..."
  bool branches_given = false;  // --branches seen (even empty: an error)
  int64_t seq = 32768;
  int64_t heads = 4;
  int64_t head_dim = 64;
  int64_t batch = 1;
  bool causal = false;
  bool deterministic = true;    // --deterministic=false: atomic dQ on cuda (Config::deterministic)
  std::string head_offsets = "interleaved";
  std::string dtype;            // default: f32 on cpu, bf16 on cuda
  std::string backend = "cpu";
  std::string transport;        // default: mpi on cpu, nccl on cuda
  double scale = 0;
  int64_t seed = 0;             // verify: from the clock unless given; run, bench: 1
  double amplitude = 1.0;       // inputs uniform in [-a, a)
  int64_t iters = -1;           // default: 3 (run), 10 (bench)
  int64_t warmup = -1;          // default: 1 (run), 3 (bench)
  double warmup_ms = -1;        // warm-up goes on until this long has passed; default: 1000 (bench on cuda), else 0
  int64_t repeat = 1;           // verify: forwards back to back (outputs poisoned in between), last one checked
  int64_t threads = 0;          // verify: reference threads per rank; 0: cores / ranks on this host
  double progress = 3;          // verify: seconds between progress lines of the reference; 0: none
  std::string json;
  std::string q_file, k_file, v_file, out_file, lse_file;
  std::string dout_file, dq_file, dk_file, dv_file;  // --op backward
  bool allow_nonfinite = false;
  bool timeline = false;
  bool cache_stats = false;
  std::string cache = "on";
  int64_t cache_device_mb = 256;
  int64_t cache_host_mb = 1024;
  int64_t promote_after = 3;
  double timeout = 60;
  FaultSpec fault;              // fault.text empty: none
  bool scaling = false;         // bench: weak/strong scaling study
};

// Largest amplitude of synthetic inputs: SPEC.md's tolerances are stated up
// to logits of magnitude ~1e4, i.e. inputs scaled by 100.
constexpr double kMaxAmplitude = 100;
// Shortest --timeout: below it a healthy job on a loaded machine (ranks
// sharing cores, a rank descheduled for a time slice) would be killed.
constexpr double kMinTimeout = 1.0;

// Parses argv (after the program name). No command: opts->command is empty
// (the caller prints usage and exits 2). On --help sets opts->help.
Status parse_options(int argc, char** argv, Options* opts);
// Checks what needs the world size: --inject-fault's rank and step.
Status check_world(const Options& o, int world);
// Resolves names and defaults into a Config; named configs use o.seq (with
// --q/--k/--v files: the files' N, see inputs.hpp).
Status make_config(const Options& o, Config* c);
std::string usage(const std::string& command);
// "custom" for --branches, else the config name.
std::string config_label(const Options& o);

}  // namespace ringattn::cli

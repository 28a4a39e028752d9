#include "options.hpp"

#include "ringattn/names.hpp"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>

#include "job.hpp"
#include "parse.hpp"

namespace ringattn::cli {
namespace {

constexpr unsigned kRun = 1, kVerify = 2, kBench = 4, kAll = 7;

unsigned command_bit(const std::string& c) { return c == "run" ? kRun : c == "verify" ? kVerify : c == "bench" ? kBench : 0; }

std::string command_names(unsigned mask) {
  std::string s;
  for (const char* c : {"run", "verify", "bench"})
    if (mask & command_bit(c)) s += (s.empty() ? "" : ", ") + std::string(c);
  return s;
}

using Setter = std::function<Status(Options& o, const std::string& flag, const std::string& value)>;

// One flag: its value (empty metavar: a switch, true unless =false), the
// commands that take it, and its help text (lines after the first indented).
struct Flag {
  const char* name;
  const char* metavar;
  unsigned commands;
  const char* section;
  const char* help;
  Setter set;
};

Setter text(std::string Options::*m) {
  return [m](Options& o, const std::string&, const std::string& v) {
    o.*m = v;
    return Status::Ok();
  };
}
Setter count(int64_t Options::*m, int64_t lo, int64_t hi) {
  return [=](Options& o, const std::string& f, const std::string& v) { return parse_count(f, v, lo, hi, &(o.*m)); };
}
Setter real(double Options::*m, double lo, double hi, const char* why) {
  return [=](Options& o, const std::string& f, const std::string& v) {
    Status st = parse_real(f, v, lo, hi, &(o.*m));
    return st.ok() || !*why ? st : InvalidArgument(st.message() + " (" + why + ")");
  };
}
Setter on_off(bool Options::*m) {
  return [m](Options& o, const std::string& f, const std::string& v) { return v.empty() ? (o.*m = true, Status::Ok()) : parse_bool(f, v, &(o.*m)); };
}

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> parts;
  for (size_t pos = 0;;) {
    const size_t end = std::min(text.find(sep, pos), text.size());
    parts.push_back(text.substr(pos, end - pos));
    if (end == text.size()) return parts;
    pos = end + 1;
  }
}

// rank=R,step=S[,mode=exit|error][,forward=F]: every key known, once; R and S required.
Status parse_fault(const std::string& flag, const std::string& text, FaultSpec* f) {
  const std::string form = " (allowed: rank=R,step=S[,mode=exit|error][,forward=F])";
  *f = FaultSpec{};
  f->text = text;
  std::set<std::string> seen;
  for (const std::string& kv : split(text, ',')) {
    const size_t eq = kv.find('=');
    const std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
    if (eq == std::string::npos || !seen.insert(k).second)
      return InvalidArgument(flag + " '" + text + "': '" + kv + "' is " + (eq == std::string::npos ? "not key=value" : "given twice") + form);
    if (k == "rank") RINGATTN_RETURN_IF_ERROR(parse_count(flag + " rank", v, 0, 1 << 20, &f->rank));
    else if (k == "step") RINGATTN_RETURN_IF_ERROR(parse_count(flag + " step", v, 0, 1 << 20, &f->step));
    else if (k == "forward") RINGATTN_RETURN_IF_ERROR(parse_count(flag + " forward", v, 1, 1 << 20, &f->forward));
    else if (k == "mode" && (v == "exit" || v == "error")) f->mode = v;
    else return InvalidArgument(flag + " '" + text + "': unknown " + (k == "mode" ? "mode '" + v + "'" : "key '" + k + "'") + form);
  }
  if (!seen.count("rank") || !seen.count("step")) return InvalidArgument(flag + " '" + text + "' needs rank= and step=" + form);
  return Status::Ok();
}

// W:R,... with every W and R a count (k/M/G suffixes, overflow refused); R
// defaults to 1. Empty lists and entries get the library's message; values
// below 1 are left to validate_config, which names the branch.
Status parse_branch_list(const std::string& text, std::vector<Branch>* out) {
  if (text.empty() || text.front() == ',' || text.back() == ',' || text.find(",,") != std::string::npos)
    return parse_branches(text, out);
  out->clear();
  for (const std::string& item : split(text, ',')) {
    const std::vector<std::string> wr = split(item, ':');
    Branch b;
    if (wr.size() > 2) return InvalidArgument("--branches: bad branch '" + item + "' (expected w:r, e.g. 4096:2 or 4k:2)");
    RINGATTN_RETURN_IF_ERROR(parse_count("--branches w", wr[0], 0, int64_t(1) << 40, &b.w));
    if (wr.size() == 2) RINGATTN_RETURN_IF_ERROR(parse_count("--branches r", wr[1], 0, int64_t(1) << 40, &b.r));
    out->push_back(b);
  }
  return Status::Ok();
}

const std::vector<Flag>& flags() {
  static const char* P = "Problem (same on every rank)";
  static const char* I = "Inputs";
  static const char* T = "Timing";
  static const char* K = "Checking";
  static const char* C = "Cache";
  static const char* O = "Output";
  static const std::vector<Flag> table = {
      {"--op", "NAME", kAll, P, "operation: forward (default) | backward (the forward, then the exact gradient)",
       text(&Options::op)},
      {"--backward", "", kAll, P, "the same as --op backward", on_off(&Options::backward)},
      {"--config", "NAME", kAll, P, "longnet4 | longnet-paper | geometric | dense (default longnet4)", text(&Options::config_name)},
      {"--branches", "W:R,...", kAll, P, "explicit branches instead of --config, e.g. 2048:1,4096:2 or 2k:1,4k:2",
       [](Options& o, const std::string&, const std::string& v) {
         o.branches_text = v;
         o.branches_given = true;
         return Status::Ok();
       }},
      {"--seq", "N", kAll, P, "total tokens over all ranks (k/M suffixes; default 32768)",
       count(&Options::seq, 1, int64_t(1) << 40)},
      {"--heads", "H", kAll, P, "heads (default 4)", count(&Options::heads, 1, 4096)},
      {"--head-dim", "D", kAll, P, "head dimension (default 64)", count(&Options::head_dim, 1, 1024)},
      {"--batch", "B", kAll, P, "batch (default 1)", count(&Options::batch, 1, 1 << 20)},
      {"--causal", "", kAll, P, "causal masking (--causal=false: off, the default)", on_off(&Options::causal)},
      {"--deterministic", "", kAll, P, "the backward's reruns give the same bits (the default); --deterministic=false:\n"
       "                        cuda sums dQ with float32 atomics (about 1.1x faster backward, the same\n"
       "                        memory; the cpu backend is always deterministic)", on_off(&Options::deterministic)},
      {"--head-offsets", "RULE", kAll, P, "interleaved (LongNet) | blocked (torchscale) (default interleaved)", text(&Options::head_offsets)},
      {"--scale", "S", kAll, P, "softmax scale (default 1/sqrt(D))", real(&Options::scale, 0, 1e4, "")},
      {"--dtype", "T", kAll, P, "f32 | f16 | bf16 (default f32 on cpu, bf16 on cuda)", text(&Options::dtype)},
      {"--backend", "B", kAll, P, "cpu | cuda (default cpu)", text(&Options::backend)},
      {"--transport", "T", kAll, P, "mpi | nccl (default mpi on cpu, nccl on cuda)", text(&Options::transport)},
      {"--timeout", "SEC", kAll, P, "fail if a peer is silent this long (default 60, at least 1)",
       real(&Options::timeout, kMinTimeout, 1e6, "below 1 s a healthy job on a loaded machine could be failed")},
      {"--q", "FILE.npy", kRun, I, "inputs (B,N,H,D) or (N,H,D), float64/32/16, C order; with --k and --v.\n"
                                   "The files define N, B, H and D; a flag that differs is an error", text(&Options::q_file)},
      {"--k", "FILE.npy", kRun, I, "keys, same shape as --q", text(&Options::k_file)},
      {"--v", "FILE.npy", kRun, I, "values, same shape as --q", text(&Options::v_file)},
      {"--dout", "FILE.npy", kRun, I, "dL/dO for --op backward, same shape as --q (default: from --seed)", text(&Options::dout_file)},
      {"--allow-nonfinite", "", kRun, I, "accept NaN/Inf in --q/--k/--v (default: an error naming the first one)",
       on_off(&Options::allow_nonfinite)},
      {"--seed", "S", kAll, I, "seed of the synthetic inputs (default 1; verify: from the clock, printed)",
       count(&Options::seed, 0, INT64_MAX)},
      {"--amplitude", "A", kAll, I, "synthetic inputs uniform in [-A, A), A <= 100 (100 gives logits ~1e4)",
       real(&Options::amplitude, 0, kMaxAmplitude, "SPEC.md's tolerances hold up to logits ~1e4, i.e. amplitude 100")},
      {"--iters", "N", kRun | kBench, T, "timed iterations (default 3 run, 10 bench)", count(&Options::iters, 1, 100000)},
      {"--warmup", "N", kRun | kBench, T, "untimed iterations first (default 1 run, 3 bench)", count(&Options::warmup, 0, 100000)},
      {"--warmup-ms", "MS", kRun | kBench, T, "and untimed iterations until MS milliseconds have passed (default 1000\n"
                                              "for bench on cuda, else 0): a GPU under its power cap slows within\n"
                                              "the first ~0.1 s of load, so short runs would time its boost clock",
       real(&Options::warmup_ms, 0, 600000, "10 minutes at most")},
      {"--repeat", "N", kVerify, K, "N forwards back to back, outputs poisoned in between, the last\n"
                                    "one checked (forwards left in flight on the GPU; default 1)", count(&Options::repeat, 1, 1000)},
      {"--threads", "N", kVerify, K, "threads per rank for the float64 reference (default: this host's\n"
                                     "cores / its ranks, at least 1)", count(&Options::threads, 1, 1024)},
      {"--progress", "SEC", kVerify, K, "seconds between progress lines of the reference (default 3; 0: none)",
       real(&Options::progress, 0, 3600, "")},
      {"--timeline", "", kRun | kBench, T, "per ring step: compute, transfer, exposed time, bytes vs ideal", on_off(&Options::timeline)},
      {"--scaling", "", kBench, T, "weak (tokens per rank fixed) and strong (total fixed) scaling over\n"
                                   "the rank counts 1, 2, 4, ... up to the ranks given (--seq: total tokens;\n"
                                   "weak scaling keeps --seq / ranks per rank); --json FILE for the table,\n"
                                   "examples/plot_scaling.py FILE out.png for the plot", on_off(&Options::scaling)},
      {"--cache", "on|off", kAll, C, "pattern cache (off: rebuild the plan every call)",
       [](Options& o, const std::string& f, const std::string& v) {
         o.cache = v;
         return v == "on" || v == "off" ? Status::Ok() : InvalidArgument(f + " '" + v + "' (allowed: on, off)");
       }},
      {"--cache-device-mb", "N", kAll, C, "device tier budget (default 256)", count(&Options::cache_device_mb, 0, int64_t(1) << 30)},
      {"--cache-host-mb", "N", kAll, C, "host tier budget (default 1024)", count(&Options::cache_host_mb, 0, int64_t(1) << 30)},
      {"--promote-after", "N", kAll, C, "host hits before promotion to the device (default 3)", count(&Options::promote_after, 0, 1 << 20)},
      {"--cache-stats", "", kRun | kBench, C, "print cache counters", on_off(&Options::cache_stats)},
      {"--out", "FILE.npy", kRun, O, "gather O to rank 0 and write it (float32)", text(&Options::out_file)},
      {"--lse", "FILE.npy", kRun, O, "gather LSE to rank 0 and write it (float32, (B,N,H))", text(&Options::lse_file)},
      {"--dq", "FILE.npy", kRun, O, "--op backward: gather dQ to rank 0 and write it (float32)", text(&Options::dq_file)},
      {"--dk", "FILE.npy", kRun, O, "--op backward: gather dK to rank 0 and write it (float32)", text(&Options::dk_file)},
      {"--dv", "FILE.npy", kRun, O, "--op backward: gather dV to rank 0 and write it (float32)", text(&Options::dv_file)},
      {"--json", "FILE", kAll, O, "write the results as JSON (rank 0; non-finite numbers as null)", text(&Options::json)},
      {"--inject-fault", "SPEC", kRun, O, "test only: rank=R,step=S[,mode=exit|error][,forward=F]: rank R\n"
                                          "exits (or fails) at ring step S (of its F-th ring run, default every one;\n"
                                          "with --backward an iteration is its forward, then its backward)",
       [](Options& o, const std::string& f, const std::string& v) { return parse_fault(f, v, &o.fault); }},
      {"--help", "", kAll, O, "this text", on_off(&Options::help)},
  };
  return table;
}

const Flag* find_flag(const std::string& name) {
  for (const Flag& f : flags())
    if (name == f.name) return &f;
  return nullptr;
}

}  // namespace

std::string config_label(const Options& o) {
  return o.branches_given ? "custom" : (o.config_name.empty() ? "longnet4" : o.config_name);
}

std::string usage(const std::string& cmd) {
  static const std::map<std::string, std::string> intro = {
      {"run", "Runs the distributed forward on synthetic inputs (or .npy files) and prints time,\n"
              "useful FLOPs, effective TFLOP/s and bytes sent per rank against the ideal.\n"},
      {"verify", "Each rank checks its own output shard against the float64 reference, computed from\n"
                 "deterministic inputs (seed, tensor, index), with SPEC.md tolerances. The last line\n"
                 "says OK or FAILED and the exit code matches.\n"},
      {"bench", "Times the forward: device events, warm-up, median of --iters, rotating input sets\n"
                "larger than L2; prints tokens, useful FLOPs, time, effective TFLOP/s, bytes, peak memory.\n"},
  };
  const unsigned bit = command_bit(cmd);
  if (!bit) {
    return "usage: ringattn [-np N] <command> [options]\n"
           "Distributed dilated (LongNet) ring attention.\n\n"
           "Commands:\n"
           "  run      run the forward, print time, FLOPs, rate and bytes per rank\n"
           "  verify   check every rank's shard against the float64 reference (OK / FAILED)\n"
           "  bench    benchmark the forward (median of many runs, rotating inputs)\n\n"
           "`ringattn <command> --help` lists the options of a command.\n"
           "Exit codes: 0 success, 1 failure (verify FAILED, a write failed, ...), 2 bad arguments\n"
           "or inputs, 3 communication failure or timeout.\n";
  }
  std::string u = "usage: ringattn " + cmd + " [options]\n" + intro.at(cmd) + "\n";
  std::string section;
  for (const Flag& f : flags()) {
    if (!(f.commands & bit)) continue;
    if (section != f.section) u += (section = f.section) + ":\n";
    std::string left = std::string(f.name) + (*f.metavar ? std::string(" ") + f.metavar : "");
    std::string help = f.help;
    for (size_t nl = help.find('\n'); nl != std::string::npos; nl = help.find('\n', nl + 1)) help.insert(nl + 1, 24, ' ');
    char line[64];
    std::snprintf(line, sizeof(line), "  %-21s ", left.c_str());
    u += line + help + "\n";
  }
  u += "Environment:\n"
       "  RINGATTN_HOST_WAIT=spin|sleep   how the host waits for the GPU and the network\n"
       "                        (default spin on cuda: lowest latency; sleep frees the core)\n"
       "  RINGATTN_RING_SLOTS=auto|N  receive slots of the ring on nccl (auto: one per step when\n"
       "                        they fit min(4 GiB, GPU memory/16), so every exchange starts\n"
       "                        under the local step; 2: double buffer)\n"
       "  RINGATTN_TILE_SCHEDULE=dynamic|static, RINGATTN_COMM_SMS=N, RINGATTN_COMM_PRIORITY=high|normal,\n"
       "  RINGATTN_BWD_PINGPONG=1|0, RINGATTN_BWD_TMA=1|0 (the backward's whole blocks through TMA),\n"
       "  RINGATTN_PACK_SEGMENTS=1|0 (short segments packed 128/c to a tile;\n"
       "                        the same on every rank),\n"
       "  RINGATTN_BWD_DQ=pass|atomic, RINGATTN_BWD_DQ_ORDER=first|last (atomic dQ's GEMM before or\n"
       "                        after dK's), RINGATTN_PDL=1|0 (consecutive attention launches of a ring\n"
       "                        step overlap: programmatic dependent launch)\n"
       "                        kernel and ring settings for A/B runs (README, Status and limits)\n"
       "Exit codes: 0 success, 1 failure (verify FAILED, a write failed, ...), 2 bad arguments\n"
       "or inputs, 3 communication failure or timeout. An error is printed once, by rank 0.\n";
  if (cmd == "bench") u += "(training-like loop with changing lengths and prefetch: examples/varlen_loop.cpp)\n";
  return u;
}

Status parse_options(int argc, char** argv, Options* o) {
  if (argc < 1) return Status::Ok();  // no command: usage, exit 2
  const std::string cmd = argv[0];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    o->help = true;
    return Status::Ok();
  }
  if (!command_bit(cmd)) return InvalidArgument("unknown command '" + cmd + "' (allowed: run, verify, bench; see --help)");
  o->command = cmd;
  std::map<std::string, std::string> values;  // for "given twice" messages
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i], val;
    if (a == "-h") a = "--help";
    if (a.rfind("--", 0) != 0)
      return InvalidArgument("unexpected argument '" + a + "' (options start with --; see ringattn " + cmd + " --help)");
    const size_t eq = a.find('=');
    const bool has_eq = eq != std::string::npos;
    if (has_eq) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    const Flag* f = find_flag(a);
    if (!f) return InvalidArgument("unknown option '" + a + "' for '" + cmd + "' (see ringattn " + cmd + " --help)");
    if (!(f->commands & command_bit(cmd)))
      return InvalidArgument(a + " is not an option of '" + cmd + "' (it belongs to: " + command_names(f->commands) +
                             "; see ringattn " + cmd + " --help)");
    if (*f->metavar && !has_eq) {
      if (i + 1 >= argc) return InvalidArgument(a + " needs a value (" + a + " " + f->metavar + ")");
      val = argv[++i];
    }
    if (*f->metavar == 0 && has_eq && val.empty()) return InvalidArgument(a + "= needs true or false");
    const std::string shown = *f->metavar || has_eq ? val : "true";
    if (!o->given.insert(a).second)
      return InvalidArgument(a + " is given twice ('" + values[a] + "', then '" + shown + "'): give it once");
    values[a] = shown;
    RINGATTN_RETURN_IF_ERROR(f->set(*o, a, val));
  }
  if (o->iters < 0) o->iters = cmd == "bench" ? 10 : 3;
  if (o->warmup < 0) o->warmup = cmd == "bench" ? 3 : 1;
  if (o->warmup_ms < 0) o->warmup_ms = cmd == "bench" && o->backend == "cuda" ? 1000 : 0;
  if (!o->has("--seed") && cmd != "verify") o->seed = 1;
  const int files = o->has("--q") + o->has("--k") + o->has("--v");
  if (files != 0 && files != 3) return InvalidArgument("--q, --k and --v must be given together");
  if (o->has("--allow-nonfinite") && files == 0) return InvalidArgument("--allow-nonfinite applies to --q/--k/--v files only");
  if (!o->config_name.empty() && o->branches_given) return InvalidArgument("give --config or --branches, not both");
  // forward=F counts ring runs: a training step (--backward) is two (its forward, then its
  // backward), and run/bench then time the forward alone too: 3 runs per iteration.
  const bool bwd = o->backward || o->op == "backward";
  const int64_t runs = (o->warmup + o->iters) * (bwd ? 3 : 1);
  if (o->has("--inject-fault") && o->fault.forward > runs)
    return InvalidArgument("--inject-fault forward=" + std::to_string(o->fault.forward) + " but the run has " +
                           std::to_string(runs) + " ring runs (" +
                           (bwd ? "3 x (--warmup + --iters): forward, backward, then the forward alone" : "--warmup + --iters") + ")");
  return Status::Ok();
}

Status check_world(const Options& o, int world) {
  if (o.fault.text.empty()) return Status::Ok();
  if (o.fault.rank >= world)
    return InvalidArgument("--inject-fault rank=" + std::to_string(o.fault.rank) + " but the job has " + std::to_string(world) +
                           " ranks (allowed: 0.." + std::to_string(world - 1) + ")");
  if (o.fault.step >= world)
    return InvalidArgument("--inject-fault step=" + std::to_string(o.fault.step) + " but " + std::to_string(world) +
                           " ranks make ring steps 0.." + std::to_string(world - 1));
  return Status::Ok();
}

Status make_config(const Options& o, Config* c) {
  *c = Config{};
  RINGATTN_RETURN_IF_ERROR(parse_backend(o.backend, &c->backend));
  std::string dt = o.dtype.empty() ? (c->backend == Backend::cuda ? "bf16" : "f32") : o.dtype;
  RINGATTN_RETURN_IF_ERROR(parse_dtype(dt, &c->dtype));
  if (o.transport.empty()) c->transport = default_transport(c->backend);
  else RINGATTN_RETURN_IF_ERROR(parse_transport(o.transport, &c->transport));
  RINGATTN_RETURN_IF_ERROR(parse_head_offsets(o.head_offsets, &c->head_offsets));
  if (o.branches_given) {
    RINGATTN_RETURN_IF_ERROR(parse_branch_list(o.branches_text, &c->branches));
  } else {
    RINGATTN_RETURN_IF_ERROR(named_branches(config_label(o), o.seq, &c->branches));
  }
  c->causal = o.causal;
  c->deterministic = o.deterministic;
  c->scale = o.scale;
  c->heads = o.heads;
  c->head_dim = o.head_dim;
  c->timeout_seconds = o.timeout;
  c->cache.enabled = o.cache == "on";
  c->cache.device_budget_bytes = o.cache_device_mb << 20;
  c->cache.host_budget_bytes = o.cache_host_mb << 20;
  c->cache.promote_after_hits = int(o.promote_after);
  return validate_config(*c);
}

}  // namespace ringattn::cli

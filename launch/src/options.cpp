#include "options.hpp"

#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdlib>
#include <functional>
#include <map>

namespace ringattn::cli {
namespace {

Status parse_i64(const std::string& flag, const std::string& v, int64_t lo, int64_t hi, int64_t* out) {
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(v.c_str(), &end, 10);
  // Accept k/M/G suffixes for token counts: 32k, 1M.
  if (end && *end && errno == 0) {
    char s = *end;
    if ((s == 'k' || s == 'K') && end[1] == 0) x *= 1024;
    else if ((s == 'm' || s == 'M') && end[1] == 0) x *= 1024 * 1024;
    else if ((s == 'g' || s == 'G') && end[1] == 0) x *= 1024ll * 1024 * 1024;
    else x = LLONG_MIN;
  }
  if (v.empty() || errno != 0 || x == LLONG_MIN || x < lo || x > hi) {
    return InvalidArgument(flag + " '" + v + "' is not an integer in [" + std::to_string(lo) + ", " +
                           std::to_string(hi) + "]");
  }
  *out = x;
  return Status::Ok();
}

Status parse_f64(const std::string& flag, const std::string& v, double lo, double* out) {
  char* end = nullptr;
  errno = 0;
  double x = std::strtod(v.c_str(), &end);
  if (v.empty() || errno != 0 || *end != 0 || !std::isfinite(x) || x < lo) {
    return InvalidArgument(flag + " '" + v + "' is not a number >= " + std::to_string(lo));
  }
  *out = x;
  return Status::Ok();
}

}  // namespace

std::string usage(const std::string& cmd) {
  const std::string common =
      "Problem (same on every rank):\n"
      "  --config NAME         longnet4 | longnet-paper | geometric | dense (default longnet4)\n"
      "  --branches W:R,...    explicit branches instead of --config, e.g. 2048:1,4096:2\n"
      "  --seq N               total tokens over all ranks (k/M suffixes; default 32768)\n"
      "  --heads H             heads (default 4)\n"
      "  --head-dim D          head dimension (default 64)\n"
      "  --batch B             batch (default 1)\n"
      "  --causal              causal masking\n"
      "  --head-offsets RULE   interleaved (LongNet) | blocked (torchscale) (default interleaved)\n"
      "  --scale S             softmax scale (default 1/sqrt(D))\n"
      "  --dtype T             f32 | f16 | bf16 (default f32 on cpu, bf16 on cuda)\n"
      "  --backend B           cpu | cuda (default cpu)\n"
      "  --transport T         mpi | nccl (default mpi on cpu, nccl on cuda)\n"
      "  --timeout SEC         fail if a peer is silent this long (default 60)\n"
      "Cache:\n"
      "  --cache on|off        pattern cache (off: rebuild the plan every call)\n"
      "  --cache-device-mb N   device tier budget (default 256)\n"
      "  --cache-host-mb N     host tier budget (default 1024)\n"
      "  --promote-after N     host hits before promotion to the device (default 3)\n"
      "  --cache-stats         print cache counters\n"
      "Output:\n"
      "  --json FILE           write the results as JSON (rank 0)\n"
      "  --help                this text\n"
      "Environment:\n"
      "  RINGATTN_HOST_WAIT=spin|sleep   how the host waits for the GPU and the network\n"
      "                        (default spin on cuda: lowest latency; sleep frees the core)\n";
  if (cmd == "run") {
    return "usage: ringattn run [options]\n"
           "Runs the distributed forward on random inputs (or .npy files) and prints time,\n"
           "useful FLOPs, effective TFLOP/s and bytes sent per rank against the ideal.\n\n" +
           common +
           "Run:\n"
           "  --q/--k/--v FILE.npy  inputs (B,N,H,D) or (N,H,D), float64/32/16; each rank reads its shard\n"
           "  --out FILE.npy        gather O to rank 0 and write it (float32)\n"
           "  --lse FILE.npy        gather LSE to rank 0 and write it (float32, (B,N,H))\n"
           "  --seed S              seed of random inputs (default 1)\n"
           "  --iters N --warmup N  timed and untimed iterations (default 3 and 1)\n"
           "  --timeline            per ring step: compute, transfer, exposed time, bytes vs ideal\n"
           "  --inject-fault rank=R,step=S[,mode=exit|error][,forward=F]   test only: fail rank R at ring step S\n";
  }
  if (cmd == "verify") {
    return "usage: ringattn verify [options]\n"
           "Each rank checks its own output shard against the float64 reference, computed from\n"
           "deterministic inputs (seed, tensor, index), with docs/SPEC.md tolerances. The last line\n"
           "says OK or FAILED and the exit code matches.\n\n" +
           common +
           "Verify:\n"
           "  --seed S              input seed (default: from the clock, printed)\n"
           "  --amplitude A         inputs uniform in [-A, A) (100 gives logits ~1e4)\n"
           "  --repeat N            N forwards back to back, outputs poisoned in between, the last\n"
           "                        one checked (forwards left in flight on the GPU; default 1)\n";
  }
  if (cmd == "bench") {
    return "usage: ringattn bench [options]\n"
           "Times the forward: device events, warm-up, median of --iters, rotating input sets\n"
           "larger than L2; prints tokens, useful FLOPs, time, effective TFLOP/s, bytes, peak memory.\n\n" +
           common +
           "Bench:\n"
           "  --iters N --warmup N  (default 10 and 3)\n"
           "  --scaling             weak (tokens per rank fixed) and strong (total fixed) scaling over\n"
           "                        the rank counts 1, 2, 4, ... up to the ranks given (--seq: total tokens;\n"
           "                        weak scaling keeps --seq / ranks per rank); --json FILE for the table,\n"
           "                        examples/plot_scaling.py FILE out.png for the plot\n"
           "(training-like loop with changing lengths and prefetch: examples/varlen_loop.cpp)\n";
  }
  return "usage: ringattn [-np N] <command> [options]\n"
         "Distributed dilated (LongNet) ring attention.\n\n"
         "Commands:\n"
         "  run      run the forward, print time, FLOPs, rate and bytes per rank\n"
         "  verify   check every rank's shard against the float64 reference (OK / FAILED)\n"
         "  bench    benchmark the forward (median of many runs, rotating inputs)\n\n"
         "`ringattn <command> --help` lists the options of a command.\n";
}

Status parse_options(int argc, char** argv, Options* o) {
  if (argc < 1) {
    o->help = true;
    return Status::Ok();
  }
  std::string cmd = argv[0];
  if (cmd == "--help" || cmd == "-h" || cmd == "help") {
    o->help = true;
    return Status::Ok();
  }
  if (cmd != "run" && cmd != "verify" && cmd != "bench")
    return InvalidArgument("unknown command '" + cmd + "' (allowed: run, verify, bench; see --help)");
  o->command = cmd;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    std::string val;
    auto eq = a.find('=');
    bool has_eq = a.rfind("--", 0) == 0 && eq != std::string::npos;
    if (has_eq) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
    }
    auto need = [&](std::string* out) -> Status {
      if (has_eq) {
        *out = val;
        return Status::Ok();
      }
      if (i + 1 >= argc) return InvalidArgument(a + " needs a value");
      *out = argv[++i];
      return Status::Ok();
    };
    std::string v;
    if (a == "--help" || a == "-h") {
      o->help = true;
    } else if (a == "--causal") {
      o->causal = true;
    } else if (a == "--timeline") {
      o->timeline = true;
    } else if (a == "--cache-stats") {
      o->cache_stats = true;
    } else if (a == "--scaling") {
      o->scaling = true;
    } else if (a == "--config") {
      RINGATTN_RETURN_IF_ERROR(need(&o->config_name));
    } else if (a == "--branches") {
      RINGATTN_RETURN_IF_ERROR(need(&o->branches_text));
      o->branches_given = true;
    } else if (a == "--seq") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      RINGATTN_RETURN_IF_ERROR(parse_i64(a, v, 1, int64_t(1) << 40, &o->seq));
    } else if (a == "--heads") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      RINGATTN_RETURN_IF_ERROR(parse_i64(a, v, 1, 4096, &o->heads));
    } else if (a == "--head-dim") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      RINGATTN_RETURN_IF_ERROR(parse_i64(a, v, 1, 1024, &o->head_dim));
    } else if (a == "--batch") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      RINGATTN_RETURN_IF_ERROR(parse_i64(a, v, 1, 1 << 20, &o->batch));
    } else if (a == "--head-offsets") {
      RINGATTN_RETURN_IF_ERROR(need(&o->head_offsets));
    } else if (a == "--dtype") {
      RINGATTN_RETURN_IF_ERROR(need(&o->dtype));
    } else if (a == "--backend") {
      RINGATTN_RETURN_IF_ERROR(need(&o->backend));
    } else if (a == "--transport") {
      RINGATTN_RETURN_IF_ERROR(need(&o->transport));
    } else if (a == "--scale") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      RINGATTN_RETURN_IF_ERROR(parse_f64(a, v, 0, &o->scale));
    } else if (a == "--amplitude") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      RINGATTN_RETURN_IF_ERROR(parse_f64(a, v, 0, &o->amplitude));
    } else if (a == "--timeout") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      RINGATTN_RETURN_IF_ERROR(parse_f64(a, v, 0.001, &o->timeout));
    } else if (a == "--seed") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      int64_t s;
      RINGATTN_RETURN_IF_ERROR(parse_i64(a, v, 0, INT64_MAX, &s));
      o->seed = uint64_t(s);
      o->seed_given = true;
    } else if (a == "--iters" || a == "--warmup") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      int64_t n;
      RINGATTN_RETURN_IF_ERROR(parse_i64(a, v, a == "--iters" ? 1 : 0, 100000, &n));
      (a == "--iters" ? o->iters : o->warmup) = int(n);
    } else if (a == "--repeat") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      int64_t n;
      RINGATTN_RETURN_IF_ERROR(parse_i64(a, v, 1, 1000, &n));
      o->repeat = int(n);
    } else if (a == "--json") {
      RINGATTN_RETURN_IF_ERROR(need(&o->json));
    } else if (a == "--q") {
      RINGATTN_RETURN_IF_ERROR(need(&o->q_file));
    } else if (a == "--k") {
      RINGATTN_RETURN_IF_ERROR(need(&o->k_file));
    } else if (a == "--v") {
      RINGATTN_RETURN_IF_ERROR(need(&o->v_file));
    } else if (a == "--out") {
      RINGATTN_RETURN_IF_ERROR(need(&o->out_file));
    } else if (a == "--lse") {
      RINGATTN_RETURN_IF_ERROR(need(&o->lse_file));
    } else if (a == "--cache") {
      RINGATTN_RETURN_IF_ERROR(need(&o->cache));
      if (o->cache != "on" && o->cache != "off")
        return InvalidArgument("--cache '" + o->cache + "' (allowed: on, off)");
    } else if (a == "--cache-device-mb" || a == "--cache-host-mb") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      RINGATTN_RETURN_IF_ERROR(parse_i64(a, v, 0, int64_t(1) << 30, a == "--cache-device-mb" ? &o->cache_device_mb : &o->cache_host_mb));
    } else if (a == "--promote-after") {
      RINGATTN_RETURN_IF_ERROR(need(&v));
      int64_t n;
      RINGATTN_RETURN_IF_ERROR(parse_i64(a, v, 0, 1 << 20, &n));
      o->promote_after = int(n);
    } else if (a == "--inject-fault") {
      RINGATTN_RETURN_IF_ERROR(need(&o->inject_fault));
    } else {
      return InvalidArgument("unknown option '" + a + "' for '" + cmd + "' (see ringattn " + cmd + " --help)");
    }
  }
  if (o->iters < 0) o->iters = cmd == "bench" ? 10 : 3;
  if (o->warmup < 0) o->warmup = cmd == "bench" ? 3 : 1;
  bool any_file = !o->q_file.empty() || !o->k_file.empty() || !o->v_file.empty();
  bool all_files = !o->q_file.empty() && !o->k_file.empty() && !o->v_file.empty();
  if (any_file && !all_files) return InvalidArgument("--q, --k and --v must be given together");
  if (any_file && cmd != "run") return InvalidArgument("--q/--k/--v are options of 'run' only");
  if (!o->config_name.empty() && o->branches_given)
    return InvalidArgument("give --config or --branches, not both");
  return Status::Ok();
}

Status make_config(const Options& o, Config* c) {
  *c = Config{};
  RINGATTN_RETURN_IF_ERROR(parse_backend(o.backend, &c->backend));
  std::string dt = o.dtype.empty() ? (c->backend == Backend::cuda ? "bf16" : "f32") : o.dtype;
  RINGATTN_RETURN_IF_ERROR(parse_dtype(dt, &c->dtype));
  std::string tr = o.transport.empty() ? (c->backend == Backend::cuda ? "nccl" : "mpi") : o.transport;
  RINGATTN_RETURN_IF_ERROR(parse_transport(tr, &c->transport));
  RINGATTN_RETURN_IF_ERROR(parse_head_offsets(o.head_offsets, &c->head_offsets));
  if (o.branches_given) {
    RINGATTN_RETURN_IF_ERROR(parse_branches(o.branches_text, &c->branches));
  } else {
    RINGATTN_RETURN_IF_ERROR(named_branches(o.config_name.empty() ? "longnet4" : o.config_name, o.seq, &c->branches));
  }
  c->causal = o.causal;
  c->scale = o.scale;
  c->heads = o.heads;
  c->head_dim = o.head_dim;
  c->timeout_seconds = o.timeout;
  c->cache.enabled = o.cache == "on";
  c->cache.device_budget_bytes = o.cache_device_mb << 20;
  c->cache.host_budget_bytes = o.cache_host_mb << 20;
  c->cache.promote_after_hits = o.promote_after;
  return validate_config(*c);
}

}  // namespace ringattn::cli

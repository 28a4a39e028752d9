#include "options.hpp"

#include <cstdio>
#include <map>

#include "launch/src/parse.hpp"
#include "ringattn/names.hpp"

namespace train {

using ringattn::InvalidArgument;
using ringattn::Status;

const char* kUsage =
    "usage: ./launch/train [-np N] [options]   (runs ringattn_train under mpirun; default -np 2)\n"
    "Trains a small decoder on multi-query associative recall over the whole sequence, the\n"
    "sequence sharded over the ranks (context parallel), weights replicated.\n"
    "where it runs:\n"
    "  --backend cpu|cuda   (default cuda when this build has CUDA and every rank sees a GPU, else cpu);\n"
    "                     cuda: rank r takes GPU (its index on the host) mod (GPUs visible), cuBLAS\n"
    "                     GEMMs (bf16 inputs: --matmul), float32 weights and activations,\n"
    "                     16-bit attention\n"
    "  --transport mpi|nccl   how the ring moves K/V (default: mpi on cpu, nccl on cuda; several\n"
    "                     ranks on one GPU need mpi, or NCCL_HOSTID per rank: tests/gpu/nccl_hostid.sh)\n"
    "  --attn-dtype f32|bf16|f16   Q/K/V/O of attention (default f32 on cpu, bf16 on cuda; cuda\n"
    "                     takes bf16 and f16)\n"
    "  --matmul f32|bf16  the GEMMs' inputs (default bf16 on cuda: bf16 copies of the weights and\n"
    "                     activations on the tensor cores, float32 accumulation, float32 master weights;\n"
    "                     f32 on cpu, where bf16 rounds the same operands and multiplies in float32)\n"
    "  --grad-sum host|nccl   the weights' gradient summed over the ranks through the host (MPI) or on\n"
    "                     the GPUs (NCCL all-reduce; default nccl on cuda with --transport nccl, else host)\n"
    "  --deterministic on|off   on (default): the attention backward's reruns give the same bits (a\n"
    "                     resumed run repeats the uninterrupted one bit for bit); off: cuda sums dQ with\n"
    "                     float32 atomics (about 1.1x faster attention backward; a resume then matches\n"
    "                     only to rounding; Config::deterministic)\n"
    "  --peak-tflops X    the device's dense bf16 peak for the MFU column (default: H100 SXM and H200\n"
    "                     989.4, H100 PCIe 756; other devices and cpu: no MFU unless given)\n"
    "task:\n"
    "  --seq N            tokens per sequence, all ranks (default 4096 on cpu, 256k per rank on cuda;\n"
    "                     a multiple of ranks and --cell)\n"
    "  --pairs K          key/value pairs per sequence, each asked once at the end (default 48)\n"
    "  --keys K --values V --filler F   vocabulary sizes (default 64 32 1; chance = 1/V)\n"
    "  --cell C           tokens per cell; every dilation r must divide it (default 16)\n"
    "  --gap G            every pair at least G tokens before every query (default 512)\n"
    "model:\n"
    "  --d-model D --heads H --layers L --mlp F --rope-dims R   (default 32 2 2 64 4 on cpu,\n"
    "                     128 2 2 256 4 on cuda, whose attention takes head dims D/H of 64 and 128)\n"
    "  --tied-head on|off   the output head is the token embedding transposed (default on)\n"
    "  --prev-token on|off  token shift: add s * (embedding of the previous token), s learned (default on)\n"
    "  --copy-init on|off   V and O projections start as the identity (default on)\n"
    "  --branches W:R,... or --config NAME   attention (default 64:1,512:8,N:16;\n"
    "                     the ablation: --branches 64:1)\n"
    "training:\n"
    "  --steps S --batch B --lr X --warmup S --min-lr FRAC --weight-decay X --clip X\n"
    "  --beta1 X --beta2 X --seed S   (default 1500 1 3e-3 50 0.1 0.01 1.0 0.9 0.98 1)\n"
    "  --log-every K      a progress line every K steps (default 50)\n"
    "  --json FILE        the log: options, every step, evaluations\n"
    "  --save DIR         checkpoint at the end (and every --save-every S steps)\n"
    "  --resume DIR       continue from DIR/checkpoint.bin (same options; bit for bit on the same\n"
    "                     backend and machine; a checkpoint also moves between backends)\n"
    "  --init-from DIR    start from the weights of DIR/checkpoint.bin (the same model and vocabulary;\n"
    "                     any --seq, branches, steps, lr): the next stage of a curriculum over N;\n"
    "                     step 0, fresh optimizer state\n"
    "  --stop-after S     end after step S (saving with --save), as a job split in parts\n"
    "  --eval             accuracy on --eval-seqs E held-out sequences at the end (default 8)\n"
    "  --eval-every K     also every K steps\n"
    "  --check-grad       the whole model's gradient at step 0 against central differences, per tensor\n"
    "                     (its tolerance is float32's: --attn-dtype f32 and --matmul f32, i.e. the cpu backend)\n"
    "  --grad-dump FILE   write step 0's gradient (summed over ranks, before clipping) as text and\n"
    "                     exit: a line 'loss L answers A', then 'tensor value' per parameter\n"
    "  --timeout SEC      a silent peer fails the job after this long (default 60)\n";

std::string default_branches(int64_t seq) { return "64:1,512:8," + std::to_string(seq) + ":16"; }

Status parse_options(int argc, char** argv, TrainOptions* o) {
  std::map<std::string, std::string> seen;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--help" || a == "-h") {
      o->help = true;
      continue;
    }
    std::string v;
    const bool is_switch = a == "--eval" || a == "--check-grad";
    if (!is_switch) {
      if (a.rfind("--", 0) != 0) return InvalidArgument("unexpected argument '" + a + "' (see --help)");
      if (i + 1 >= argc) return InvalidArgument(a + " needs a value (see --help)");
      v = argv[++i];
    }
    auto it = seen.find(a);
    if (it != seen.end())
      return InvalidArgument(a + " is given twice ('" + it->second + "', then '" + v + "'): give it once");
    seen[a] = v;
    auto count = [&](int64_t lo, int64_t hi, int64_t* out) { return ringattn::cli::parse_count(a, v, lo, hi, out); };
    auto real = [&](double lo, double hi, double* out) { return ringattn::cli::parse_real(a, v, lo, hi, out); };
    constexpr int64_t kBig = int64_t(1) << 30;
    Status st;
    if (a == "--backend") {
      if (v != "cpu" && v != "cuda") st = InvalidArgument("--backend '" + v + "' (allowed: cpu, cuda)");
      o->backend_text = v;
    } else if (a == "--transport") {
      if (v != "mpi" && v != "nccl") st = InvalidArgument("--transport '" + v + "' (allowed: mpi, nccl)");
      o->transport_text = v;
    } else if (a == "--attn-dtype") {
      if (v != "f32" && v != "bf16" && v != "f16") st = InvalidArgument("--attn-dtype '" + v + "' (allowed: f32, bf16, f16)");
      o->attn_dtype_text = v;
    } else if (a == "--matmul") {
      if (v != "f32" && v != "bf16") st = InvalidArgument("--matmul '" + v + "' (allowed: f32, bf16)");
      o->matmul_text = v;
    } else if (a == "--grad-sum") {
      if (v != "host" && v != "nccl") st = InvalidArgument("--grad-sum '" + v + "' (allowed: host, nccl)");
      o->grad_sum_text = v;
    } else if (a == "--peak-tflops") st = real(0, 1e6, &o->peak_tflops);
    else if (a == "--seq") st = count(1, kBig, &o->task.seq);
    else if (a == "--pairs") st = count(1, 1 << 20, &o->task.pairs);
    else if (a == "--keys") st = count(1, 1 << 20, &o->task.keys);
    else if (a == "--values") st = count(2, 1 << 20, &o->task.values);
    else if (a == "--filler") st = count(1, 1 << 20, &o->task.filler);
    else if (a == "--cell") st = count(1, 1 << 20, &o->task.cell);
    else if (a == "--gap") st = count(0, kBig, &o->task.gap);
    else if (a == "--d-model") st = count(2, 4096, &o->dims.d);
    else if (a == "--heads") st = count(1, 256, &o->dims.heads);
    else if (a == "--layers") st = count(1, 64, &o->dims.layers);
    else if (a == "--mlp") st = count(1, 16384, &o->dims.mlp);
    else if (a == "--rope-dims") st = count(0, 1024, &o->dims.rot);
    else if (a == "--copy-init") {
      if (v != "on" && v != "off") st = InvalidArgument("--copy-init '" + v + "' (allowed: on, off)");
      o->dims.copy_init = v == "on";
    } else if (a == "--deterministic") {
      if (v != "on" && v != "off") st = InvalidArgument("--deterministic '" + v + "' (allowed: on, off)");
      o->deterministic = v == "on";
    } else if (a == "--tied-head") {
      if (v != "on" && v != "off") st = InvalidArgument("--tied-head '" + v + "' (allowed: on, off)");
      o->dims.tied = v == "on";
    } else if (a == "--prev-token") {
      if (v != "on" && v != "off") st = InvalidArgument("--prev-token '" + v + "' (allowed: on, off)");
      o->dims.prev_token = v == "on";
    } else if (a == "--branches") o->branches_text = v;
    else if (a == "--config") o->config_name = v;
    else if (a == "--steps") st = count(0, 10000000, &o->steps);
    else if (a == "--batch") st = count(1, 1024, &o->batch);
    else if (a == "--lr") st = real(0, 10, &o->lr);
    else if (a == "--warmup") st = count(0, 10000000, &o->warmup);
    else if (a == "--min-lr") st = real(0, 1, &o->min_lr);
    else if (a == "--weight-decay") st = real(0, 10, &o->wd);
    else if (a == "--clip") st = real(0, 1e6, &o->clip);
    else if (a == "--beta1") st = real(0, 0.999999, &o->beta1);
    else if (a == "--beta2") st = real(0, 0.999999, &o->beta2);
    else if (a == "--seed") st = count(0, int64_t(1) << 62, &o->seed);
    else if (a == "--log-every") st = count(1, 10000000, &o->log_every);
    else if (a == "--json") o->json = v;
    else if (a == "--save") o->save = v;
    else if (a == "--resume") o->resume = v;
    else if (a == "--init-from") o->init_from = v;
    else if (a == "--save-every") st = count(1, 10000000, &o->save_every);
    else if (a == "--stop-after") st = count(1, 10000000, &o->stop_after);
    else if (a == "--eval") o->eval = true;
    else if (a == "--eval-seqs") st = count(1, 100000, &o->eval_seqs);
    else if (a == "--eval-every") st = count(1, 10000000, &o->eval_every);
    else if (a == "--check-grad") o->check_grad = true;
    else if (a == "--grad-dump") o->grad_dump = v;
    else if (a == "--timeout") st = real(1, 1e6, &o->timeout);
    else return InvalidArgument("unknown option '" + a + "' (see --help)");
    RINGATTN_RETURN_IF_ERROR(st);
    if ((a == "--json" || a == "--save" || a == "--resume" || a == "--init-from" || a == "--grad-dump") && v.empty())
      return InvalidArgument(a + " needs a non-empty path");
  }
  for (const auto& kv : seen) o->given.insert(kv.first);
  return Status::Ok();
}

Status resolve_backend(TrainOptions* o, bool gpu_everywhere) {
  if (o->backend_text.empty()) o->backend = gpu_everywhere ? ringattn::Backend::cuda : ringattn::Backend::cpu;
  else o->backend = o->backend_text == "cuda" ? ringattn::Backend::cuda : ringattn::Backend::cpu;
  return Status::Ok();
}

Status validate_options(TrainOptions* o, int world) {
  const auto s = [](int64_t x) { return std::to_string(x); };
  TaskSpec& t = o->task;
  ModelDims& m = o->dims;
  // The backend's defaults. cuda: 256k tokens per rank (the scale of issue
  // 15) and a model of head dim 64 (the cuda kernels take 64 and 128).
  const bool cuda = o->backend == ringattn::Backend::cuda;
  const auto given = [&](const char* flag) { return o->given.count(flag) != 0; };
  if (!given("--seq")) t.seq = cuda ? int64_t(world) * 262144 : 4096;
  if (cuda && !given("--d-model")) m.d = 128;
  if (cuda && !given("--mlp")) m.mlp = 256;
  if (o->attn_dtype_text.empty()) o->attn_dtype = cuda ? ringattn::DType::bf16 : ringattn::DType::f32;
  else RINGATTN_RETURN_IF_ERROR(ringattn::parse_dtype(o->attn_dtype_text, &o->attn_dtype));
  if (t.seq % world != 0)
    return InvalidArgument("--seq " + s(t.seq) + " is not divisible by the number of ranks " + s(world) +
                           " (each rank holds N/P tokens; allowed: a multiple of " + s(world) + ")");
  RINGATTN_RETURN_IF_ERROR(validate_task(t));
  if (m.d % m.heads != 0)
    return InvalidArgument("--d-model " + s(m.d) + " is not divisible by --heads " + s(m.heads) +
                           " (d-model = heads x head dim)");
  const int64_t D = m.head_dim();
  if (m.rot % 2 != 0 || m.rot > D)
    return InvalidArgument("--rope-dims " + s(m.rot) + " must be even and at most the head dim " + s(D) +
                           " (allowed: 0, 2, ..., " + s(D - D % 2) + ")");
  if (!o->branches_text.empty() && !o->config_name.empty())
    return InvalidArgument("--branches and --config both given: give one");
  if (!o->config_name.empty()) {
    RINGATTN_RETURN_IF_ERROR(ringattn::named_branches(o->config_name, t.seq, &o->branches));
  } else {
    RINGATTN_RETURN_IF_ERROR(ringattn::parse_branches(o->branches_text.empty() ? default_branches(t.seq) : o->branches_text,
                                                      &o->branches));
  }
  for (const ringattn::Branch& b : o->branches) {
    const std::string name = "branch " + s(b.w) + ":" + s(b.r);
    if (b.w < 1 || b.r < 1 || b.r > b.w) break;  // Config validation names these (Context::create)
    if (t.cell % b.r != 0)
      return InvalidArgument(name + ": the dilation " + s(b.r) + " does not divide the task's cell of " + s(t.cell) +
                             " tokens (--cell), so no query would share a residue with its pair (allowed: r dividing " +
                             s(t.cell) + ")");
    if (b.r > 1 && m.heads < 2)
      return InvalidArgument("--heads " + s(m.heads) + ": " + name +
                             " keeps offset 1 (where the task's keys and queries sit) only in head 1 (allowed: --heads >= 2)");
    if (b.w % b.r != 0 && m.heads < b.r)
      return InvalidArgument(name + ": r does not divide w, so the offset of the task's tokens changes from segment to "
                             "segment and needs all " + s(b.r) + " offsets (allowed: --heads >= " + s(b.r) +
                             ", or r dividing w)");
  }
  if (!o->resume.empty() && !o->init_from.empty())
    return InvalidArgument("--init-from " + o->init_from + " with --resume " + o->resume +
                           " (allowed: one of them; --resume continues a run, --init-from starts one from its weights)");
  if (o->stop_after > 0 && o->stop_after > o->steps)
    return InvalidArgument("--stop-after " + s(o->stop_after) + " is beyond --steps " + s(o->steps));
  if (!cuda && o->transport_text == "nccl")
    return InvalidArgument("--transport nccl needs --backend cuda (the cpu backend moves K/V over mpi)");
  if (!cuda && o->grad_sum_text == "nccl")
    return InvalidArgument("--grad-sum nccl needs --backend cuda (the cpu backend sums the gradient over MPI; allowed: host)");
  o->bf16_matmul = o->matmul_text.empty() ? cuda : o->matmul_text == "bf16";
  if (o->check_grad && o->bf16_matmul)  // the perturbations (~1e-4 per weight) are below bf16's spacing of the weights
    return InvalidArgument(std::string("--check-grad needs float32 GEMMs") +
                           (o->matmul_text.empty() ? " (the cuda default is --matmul bf16)" : "") +
                           ": bf16 copies of the weights round the difference quotient's perturbations away "
                           "(allowed: --matmul f32, with --attn-dtype f32 on the cpu backend)");
  const bool nccl = o->grad_sum_text.empty() ? cuda && o->transport_text != "mpi" : o->grad_sum_text == "nccl";
  o->grad_sum = world == 1 ? "none" : nccl ? "nccl" : "host";
  // What the cuda attention takes (after the checks above, so an error they name reads the same on both backends).
  if (cuda && o->attn_dtype == ringattn::DType::f32)
    return ringattn::Unsupported("--attn-dtype f32: the cuda backend's attention takes 16-bit inputs (allowed: bf16, f16; "
                                 "or --backend cpu)");
  if (cuda && D != 64 && D != 128)
    return ringattn::Unsupported("--d-model " + s(m.d) + " / --heads " + s(m.heads) + " = head dim " + s(D) +
                                 ": the cuda backend's attention takes head dims 64 and 128 (allowed: --d-model = 64 or "
                                 "128 x --heads; or --backend cpu)");
  m.vocab = t.vocab();
  return ringattn::Status::Ok();
}

std::vector<std::pair<std::string, std::string>> fingerprint(const TrainOptions& o) {
  const auto s = [](int64_t x) { return std::to_string(x); };
  const auto r = [](double x) {
    char b[40];
    std::snprintf(b, sizeof(b), "%.17g", x);
    return std::string(b);
  };
  return {{"seq", s(o.task.seq)},         {"pairs", s(o.task.pairs)},     {"keys", s(o.task.keys)},
          {"values", s(o.task.values)},   {"filler", s(o.task.filler)},   {"cell", s(o.task.cell)},
          {"gap", s(o.task.gap)},         {"d-model", s(o.dims.d)},       {"heads", s(o.dims.heads)},
          {"layers", s(o.dims.layers)},   {"mlp", s(o.dims.mlp)},         {"rope-dims", s(o.dims.rot)},
          {"prev-token", o.dims.prev_token ? "on" : "off"}, {"tied-head", o.dims.tied ? "on" : "off"},
          {"copy-init", o.dims.copy_init ? "on" : "off"},
          {"branches", ringattn::format_branches(o.branches)},            {"steps", s(o.steps)},
          {"batch", s(o.batch)},          {"lr", r(o.lr)},                {"warmup", s(o.warmup)},
          {"min-lr", r(o.min_lr)},        {"weight-decay", r(o.wd)},      {"clip", r(o.clip)},
          {"beta1", r(o.beta1)},          {"beta2", r(o.beta2)},          {"seed", s(o.seed)}};
}

std::vector<std::pair<std::string, std::string>> model_fingerprint(const TrainOptions& o) {
  const std::vector<std::pair<std::string, std::string>> all = fingerprint(o);
  std::vector<std::pair<std::string, std::string>> m;
  for (const auto& kv : all)
    for (const char* k : {"keys", "values", "filler", "d-model", "heads", "layers", "mlp", "rope-dims", "prev-token",
                          "tied-head", "copy-init"})
      if (kv.first == k) m.push_back(kv);
  return m;
}

}  // namespace train

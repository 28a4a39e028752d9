// ringattn_train: a small decoder trained end to end on multi-query
// associative recall over the whole sequence (task.hpp), the sequence
// sharded over the MPI ranks (context parallel: rank p holds tokens
// [p*N/P, (p+1)*N/P)), the weights replicated. Attention forward and
// backward go through ringattn::Context (causal, dilated); every other op
// through train::Kernels (kernels.hpp). Run it with ./launch/train.
//
// Backends (--backend): cpu (host buffers, float32 throughout) and cuda
// (device buffers, cuBLAS with bf16 inputs, bf16 attention; each rank takes
// the GPU the CLI would give it, and the CLI's default transport). The state
// lives in the backend's memory; checkpoints go through the host, the
// gradient all-reduce too (cpu, --grad-sum host) or over NCCL (grad_sum.hpp).
//
// Throughput: every GEMM's 2 M N K (counted where the model calls it) plus
// attention's useful FLOPs of docs/SPEC.md, the backward counted as 2.5x the
// forward, over the step's wall time: TF/s per rank and, against the
// device's dense bf16 peak, the model FLOPs utilisation (MFU).
//
// How the job ends: every error found before the first step (options, sizes
// the config cannot take, files, a checkpoint of another config) is agreed
// on by all ranks, printed once by rank 0 and ends the job with exit code 2
// (bad input) or 1 (a file), like the ringattn CLI (launch/src/job.hpp). A
// failure once data moves (an MPI call, the ring) is printed by the rank that
// sees it and aborts the job (exit 3 for communication).
#include <mpi.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include <exception>

#include "buffer.hpp"
#include "checkpoint.hpp"
#include "grad_sum.hpp"
#include "kernels.hpp"
#include "launch/src/job.hpp"
#include "model.hpp"
#include "options.hpp"
#include "ringattn/device.hpp"
#include "ringattn/names.hpp"
#include "ringattn/ringattn.hpp"
#include "task.hpp"

using ringattn::Status;
using ringattn::StatusCode;
using ringattn::cli::Group;

namespace train {
namespace {

Status mpi_status(int rc, const char* what) {
  if (rc == MPI_SUCCESS) return Status::Ok();
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  MPI_Error_string(rc, text, &len);
  return Status(StatusCode::kCommError, std::string(what) + " failed: " + std::string(text, size_t(len)));
}

// After data started to move a failure cannot be agreed on: abort the job.
#define OR_ABORT(g, expr)                                        \
  do {                                                           \
    ::ringattn::Status _s = (expr);                              \
    if (!_s.ok()) ::ringattn::cli::abort_job(g, _s);             \
  } while (0)

void mpi_check(const Group& g, int rc, const char* what) {
  if (rc != MPI_SUCCESS) ringattn::cli::abort_job(g, mpi_status(rc, what));
}

#ifdef RINGATTN_WITH_CUDA
constexpr bool kCudaBuilt = true;
#else
constexpr bool kCudaBuilt = false;
#endif

// The backend's Kernels (cuda: after select_local_device; a cuBLAS handle that cannot be made is an error value here).
Status make_kernels(ringattn::Backend b, std::unique_ptr<Kernels>* out) {
  if (b == ringattn::Backend::cpu) {
    *out = make_cpu_kernels();
    return Status::Ok();
  }
#ifdef RINGATTN_WITH_CUDA
  try {
    *out = make_cuda_kernels();
    return Status::Ok();
  } catch (const std::exception& e) {
    return Status(StatusCode::kDeviceError, e.what());
  }
#else
  return ringattn::Unsupported("--backend cuda: this build has no CUDA");
#endif
}

// The device's dense bf16 tensor peak in TF/s (0: unknown), from its name.
double known_peak_tflops(const std::string& device) {
  const auto has = [&](const char* s) { return device.find(s) != std::string::npos; };
  if (has("H200")) return 989.4;
  if (has("H100") && has("PCIe")) return 756.0;
  if (has("H100") && has("NVL")) return 835.0;
  if (has("H100") && (has("SXM") || has("HBM3"))) return 989.4;  // "NVIDIA H100 80GB HBM3" is the SXM part
  return 0;  // unknown: no MFU unless --peak-tflops
}

double now_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

std::string fmt(const char* f, double x) {
  char b[64];
  std::snprintf(b, sizeof(b), f, x);
  return b;
}

// This rank's part of `batch` sequences: tokens (B x L) and answers (row, target).
struct Batch {
  std::vector<int32_t> tokens, prev;
  std::vector<int64_t> rows;
  std::vector<int32_t> targets;
};

Batch make_batch(const TrainOptions& o, int rank, int world, uint64_t stream, uint64_t first) {
  const int64_t N = o.task.seq, L = N / world, p0 = int64_t(rank) * L;
  Batch b;
  b.tokens.resize(size_t(o.batch * L));
  b.prev.resize(size_t(o.batch * L));
  for (int64_t s = 0; s < o.batch; ++s) {
    const Sequence q = make_sequence(o.task, uint64_t(o.seed), stream, first + uint64_t(s));
    std::memcpy(&b.tokens[size_t(s * L)], &q.tokens[size_t(p0)], size_t(L) * sizeof(int32_t));
    for (int64_t t = 0; t < L; ++t)
      b.prev[size_t(s * L + t)] = p0 + t == 0 ? -1 : q.tokens[size_t(p0 + t - 1)];
    for (size_t i = 0; i < q.answer_pos.size(); ++i) {
      if (q.answer_pos[i] < p0 || q.answer_pos[i] >= p0 + L) continue;
      b.rows.push_back(s * L + q.answer_pos[i] - p0);
      b.targets.push_back(q.answer[i]);
    }
  }
  return b;
}

// Loss and accuracy of the whole job (every rank gets the sums).
struct Totals {
  double loss = 0, correct = 0, answers = 0;
  double matmul_flops = 0;  // all ranks' GEMMs
};

Totals reduce_totals(const Group& g, const StepResult& r) {
  double x[4] = {r.loss_sum, double(r.correct), double(r.answers), r.matmul_flops};
  mpi_check(g, MPI_Allreduce(MPI_IN_PLACE, x, 4, MPI_DOUBLE, MPI_SUM, g.comm), "MPI_Allreduce (loss)");
  return {x[0], x[1], x[2], x[3]};
}

uint64_t hash_state(const TrainState& s) {
  uint64_t h = 0xcbf29ce484222325ull ^ uint64_t(s.step);
  for (const auto* t : {&s.w, &s.m, &s.v}) {
    const auto* p = reinterpret_cast<const unsigned char*>(t->data());
    for (size_t i = 0; i < t->size() * sizeof(float); ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  }
  return h;
}

class Trainer {
 public:
  Trainer(TrainOptions o, const Group& g, ringattn::Context* ctx, Kernels* k)
      : o_(std::move(o)), g_(g), k_(k), model_(o_.dims, k, ctx, o_.batch, o_.task.seq, o_.bf16_matmul) {
    n_ = param_count(model_.layout());
  }

  int64_t params() const { return n_; }
  // --grad-sum nccl: the gradient is summed on the GPUs from here on.
  void use_grad_sum(std::unique_ptr<GradSum> gs) { gs_ = std::move(gs); }
  // The host copy of the state: checkpoints read and write it; push_state()
  // and pull_state() move it to and from the backend's buffers.
  TrainState& state() { return s_; }

  // Every buffer of the run on the backend: activations, weights, gradient,
  // AdamW moments, the step's tokens (before any step: an allocation that
  // fails is agreed on and ends the job cleanly).
  Status allocate() {
    const ringattn::Backend b = k_->backend();
    RINGATTN_RETURN_IF_ERROR(model_.allocate());
    for (auto* x : {&w_, &m_, &v_, &grad_}) {
      RINGATTN_RETURN_IF_ERROR(x->resize(b, size_t(n_)));
      k_->zero(n_, x->data());
    }
    RINGATTN_RETURN_IF_ERROR(tokens_.resize(b, size_t(model_.rows())));
    RINGATTN_RETURN_IF_ERROR(prev_.resize(b, size_t(model_.rows())));
    if (b != ringattn::Backend::cpu && o_.grad_sum == "host") host_grad_.resize(size_t(n_));
    k_->synchronize();
    return Status::Ok();
  }
  Status push_state() {
    RINGATTN_RETURN_IF_ERROR(w_.upload(s_.w.data(), size_t(n_)));
    RINGATTN_RETURN_IF_ERROR(m_.upload(s_.m.data(), size_t(n_)));
    return v_.upload(s_.v.data(), size_t(n_));
  }
  Status pull_state() {
    for (auto* t : {&s_.w, &s_.m, &s_.v}) t->resize(size_t(n_));
    RINGATTN_RETURN_IF_ERROR(w_.download(s_.w.data(), size_t(n_)));
    RINGATTN_RETURN_IF_ERROR(m_.download(s_.m.data(), size_t(n_)));
    return v_.download(s_.v.data(), size_t(n_));
  }

  // The mean cross-entropy over all answers of the job: each rank scales its
  // own answers by 1/(all answers), so the sum over ranks of the gradients
  // (MPI_SUM) is the gradient of the mean; the weights are the same on every
  // rank, and so are the summed gradients and the update.
  Totals forward_backward(const Batch& b, bool backward, double* attn_ms, double* gemm_ms = nullptr) {
    const float scale = float(1.0 / double(o_.batch * o_.task.pairs));
    StepResult r;
    OR_ABORT(g_, tokens_.upload(b.tokens.data(), b.tokens.size()));
    OR_ABORT(g_, prev_.upload(b.prev.data(), b.prev.size()));
    if (backward) k_->zero(n_, grad_.data());
    OR_ABORT(g_, model_.run(w_.data(), tokens_.data(), prev_.data(), b.rows, b.targets, scale,
                            backward ? grad_.data() : nullptr, &r));
    if (backward) allreduce_grad();
    if (attn_ms) *attn_ms = r.attn_ms;
    if (gemm_ms) *gemm_ms = r.gemm_ms;
    return reduce_totals(g_, r);
  }

  // The sum of the ranks' gradients, in place: on the host buffer itself
  // (cpu), on the GPUs with NCCL (--grad-sum nccl), or staged through the
  // host (cuda, --grad-sum host; no CUDA-aware MPI is assumed).
  void allreduce_grad() {
    if (o_.grad_sum == "none") return;  // one rank: the sum is the gradient itself
    if (gs_) {
      OR_ABORT(g_, gs_->sum(grad_.data(), n_));
      return;
    }
    float* g = grad_.data();
    if (k_->backend() != ringattn::Backend::cpu) {
      OR_ABORT(g_, grad_.download(host_grad_.data(), size_t(n_)));
      g = host_grad_.data();
    }
    mpi_check(g_, MPI_Allreduce(MPI_IN_PLACE, g, int(n_), MPI_FLOAT, MPI_SUM, g_.comm), "MPI_Allreduce (gradients)");
    if (k_->backend() != ringattn::Backend::cpu) OR_ABORT(g_, grad_.upload(host_grad_.data(), size_t(n_)));
  }

  double lr_at(int64_t step) const {  // linear warm-up, then cosine down to min_lr * lr at the last step
    if (step < o_.warmup) return o_.lr * double(step + 1) / double(o_.warmup);
    const double span = double(std::max<int64_t>(1, o_.steps - o_.warmup));
    const double c = 0.5 * (1.0 + std::cos(3.141592653589793 * double(step - o_.warmup) / span));
    return o_.lr * (o_.min_lr + (1.0 - o_.min_lr) * c);
  }

  // One optimizer step: returns the gradient norm before clipping.
  double update(int64_t step) {
    const double norm = std::sqrt(k_->sumsq(n_, grad_.data()));
    if (o_.clip > 0 && norm > o_.clip) k_->scale(n_, float(o_.clip / norm), grad_.data());
    const float lr = float(lr_at(step));
    const float bc1 = float(1.0 - std::pow(o_.beta1, double(step + 1)));
    const float bc2 = float(1.0 - std::pow(o_.beta2, double(step + 1)));
    for (const TensorInfo& t : model_.layout())
      k_->adamw(t.size, lr, float(o_.beta1), float(o_.beta2), float(o_.eps), t.decay ? float(o_.wd) : 0.0f, bc1, bc2,
                grad_.data() + t.offset, w_.data() + t.offset, m_.data() + t.offset, v_.data() + t.offset);
    k_->synchronize();  // the step's time includes its update
    return norm;
  }

  // Held-out accuracy: stream 1, sequences 0 .. eval_seqs-1 (rounded up to whole batches).
  Totals evaluate() {
    Totals all;
    for (int64_t first = 0; first < o_.eval_seqs; first += o_.batch) {
      const Totals t = forward_backward(make_batch(o_, g_.rank, g_.size, 1, uint64_t(first)), false, nullptr);
      all.loss += t.loss;
      all.correct += t.correct;
      all.answers += t.answers;
    }
    return all;
  }

  // Gradient check: the loss along a direction u of one tensor at a time,
  // (L(w + eps u) - L(w - eps u)) / 2 eps against <grad, u>. u mixes the
  // gradient's own direction with a random one, so an error in any
  // direction shows. Returns true when every tensor agrees.
  bool check_grad() {
    const Batch b = make_batch(o_, g_.rank, g_.size, 0, 0);
    const Totals t0 = forward_backward(b, true, nullptr);
    std::vector<float> g(static_cast<size_t>(n_));
    OR_ABORT(g_, grad_.download(g.data(), size_t(n_)));
    OR_ABORT(g_, pull_state());
    const std::vector<float> w0 = s_.w;
    const double scale = 1.0 / double(o_.batch * o_.task.pairs);
    if (g_.rank == 0) std::printf("check-grad: loss %.9e over %.0f answers\n", t0.loss * scale, t0.answers);
    bool ok = true;
    uint64_t rs = 12345;
    for (const TensorInfo& t : model_.layout()) {
      double gn = 0;
      for (int64_t i = 0; i < t.size; ++i) gn += double(g[size_t(t.offset + i)]) * g[size_t(t.offset + i)];
      gn = std::sqrt(gn);
      std::vector<double> u(size_t(t.size));
      double un = 0;
      for (int64_t i = 0; i < t.size; ++i) {
        rs = rs * 6364136223846793005ull + 1442695040888963407ull;
        const double r = double(int64_t(rs >> 11) % 2001 - 1000) / 1000.0;
        u[size_t(i)] = r;
        un += r * r;
      }
      double a = 0, nn = 0;
      for (int64_t i = 0; i < t.size; ++i) {
        u[size_t(i)] = u[size_t(i)] / std::sqrt(un) + (gn > 0 ? g[size_t(t.offset + i)] / gn : 0.0);
        nn += u[size_t(i)] * u[size_t(i)];
      }
      for (int64_t i = 0; i < t.size; ++i) {
        u[size_t(i)] /= std::sqrt(nn);
        a += u[size_t(i)] * g[size_t(t.offset + i)];
      }
      const double eps = 1e-2;
      double lpm[2];
      for (int sgn = 0; sgn < 2; ++sgn) {
        s_.w = w0;
        for (int64_t i = 0; i < t.size; ++i) s_.w[size_t(t.offset + i)] += float((sgn ? -eps : eps) * u[size_t(i)]);
        OR_ABORT(g_, w_.upload(s_.w.data(), size_t(n_)));
        lpm[sgn] = forward_backward(b, false, nullptr).loss * scale;
      }
      s_.w = w0;
      OR_ABORT(g_, w_.upload(s_.w.data(), size_t(n_)));
      const double num = (lpm[0] - lpm[1]) / (2 * eps);
      // float32 forward: the loss carries ~1e-7 relative noise, i.e. ~1e-5
      // in the difference quotient at eps 1e-2 (seen: <= 4e-4 of |a| and
      // <= 1e-6 absolute on the tiny test model); a wrong term is O(|a|).
      const double tol = 5e-3 * std::fabs(a) + 2e-5;
      const bool pass = std::fabs(num - a) <= tol;
      ok = ok && pass;
      if (g_.rank == 0)
        std::printf("check-grad: %-10s |g| %.9e  <g,u> %+.6e  numeric %+.6e  diff %.2e (tol %.2e) %s\n", t.name.c_str(),
                    gn, a, num, std::fabs(num - a), tol, pass ? "ok" : "WRONG");
    }
    if (g_.rank == 0) std::printf("check-grad: %s\n", ok ? "OK" : "FAILED");
    return ok;
  }

  // Step 0's gradient (the first training batch, summed over the ranks,
  // before clipping) as text, written by rank 0: "loss L answers A", then
  // one line "tensor value" per parameter in layout order (%.9e: every
  // float32 bit). Collective; the write's outcome is agreed on.
  // f: the file, open on rank 0 (nullptr elsewhere).
  Status grad_dump(const std::string& path, std::FILE* f) {
    const Totals t = forward_backward(make_batch(o_, g_.rank, g_.size, 0, 0), true, nullptr);
    std::vector<float> g(static_cast<size_t>(n_));
    OR_ABORT(g_, grad_.download(g.data(), size_t(n_)));
    Status st;
    if (g_.rank == 0) {
      bool ok = std::fprintf(f, "loss %.9e answers %.0f\n", t.loss / std::max(1.0, t.answers), t.answers) > 0;
      for (const TensorInfo& ti : model_.layout())
        for (int64_t i = 0; i < ti.size && ok; ++i) ok = std::fprintf(f, "%s %.9e\n", ti.name.c_str(), g[size_t(ti.offset + i)]) > 0;
      if (std::fclose(f) != 0 || !ok) st = Status(StatusCode::kIoError, "--grad-dump " + path + ": write failed");
      if (st.ok()) std::printf("grad-dump: %s: loss %.9e over %.0f answers, %lld parameters\n", path.c_str(),
                               t.loss / std::max(1.0, t.answers), t.answers, static_cast<long long>(n_));
    }
    return ringattn::cli::agree(g_, st, false);
  }

 private:
  TrainOptions o_;
  Group g_;
  Kernels* k_;
  Model model_;
  int64_t n_ = 0;
  TrainState s_;
  Buf<float> w_, m_, v_, grad_;   // the backend's copy of the state, and the gradient
  Buf<int32_t> tokens_, prev_;    // this step's tokens on the backend
  std::vector<float> host_grad_;  // cuda: the gradient's stop on the host for the all-reduce
  std::unique_ptr<GradSum> gs_;   // --grad-sum nccl
};

std::string json_escape(const std::string& s) {
  std::string r;
  for (char c : s) {
    if (c == '"' || c == '\\') r += '\\';
    if (static_cast<unsigned char>(c) < 0x20) continue;
    r += c;
  }
  return r;
}

// Collective: the state comes to the host, rank 0 writes; the outcome is
// agreed on (a failed save ends the job on every rank).
void save(const TrainOptions& o, const Group& g, Trainer& tr) {
  OR_ABORT(g, tr.pull_state());
  const TrainState& s = tr.state();
  // The ranks must hold the same state (the update is replicated): prove it before writing one copy.
  uint64_t h = hash_state(s), lo = 0, hi = 0;
  mpi_check(g, MPI_Allreduce(&h, &lo, 1, MPI_UINT64_T, MPI_MIN, g.comm), "MPI_Allreduce (state hash)");
  mpi_check(g, MPI_Allreduce(&h, &hi, 1, MPI_UINT64_T, MPI_MAX, g.comm), "MPI_Allreduce (state hash)");
  Status st;
  if (lo != hi) st = Status(StatusCode::kInternal, "the ranks hold different weights at step " + std::to_string(s.step));
  else if (g.rank == 0) st = save_checkpoint(o.save, fingerprint(o), s);
  st = ringattn::cli::agree(g, st, false);
  if (!st.ok()) ringattn::cli::exit_job(st);
  if (g.rank == 0) std::printf("saved %s at step %lld\n", checkpoint_path(o.save).c_str(), static_cast<long long>(s.step));
}

int run(int argc, char** argv) {
  const Group g = Group::world();
  TrainOptions o;
  Status st = parse_options(argc, argv, &o);
  st = ringattn::cli::agree(g, st, false);
  if (!st.ok()) ringattn::cli::exit_job(st);
  if (o.help) {
    if (g.rank == 0) std::fputs(kUsage, stdout);
    return 0;
  }
  // The backend: --backend, else cuda when this build has CUDA and every rank sees a GPU.
  {
    int gpu = kCudaBuilt && ringattn::dev::device_count() > 0 ? 1 : 0, all = 0;
    mpi_check(g, MPI_Allreduce(&gpu, &all, 1, MPI_INT, MPI_MIN, g.comm), "MPI_Allreduce (GPUs visible)");
    st = ringattn::cli::agree(g, resolve_backend(&o, all == 1), false);
    if (!st.ok()) ringattn::cli::exit_job(st);
  }
  st = ringattn::cli::agree(g, validate_options(&o, g.size), false);
  if (!st.ok()) ringattn::cli::exit_job(st);
  const bool cuda = o.backend == ringattn::Backend::cuda;
  if (cuda && !kCudaBuilt)  // after the options' checks: their messages read the same in every build
    ringattn::cli::exit_job(ringattn::Unsupported("--backend cuda: this build has no CUDA (configure with the 'gpu' or 'ci' "
                                                  "preset on a machine with the CUDA toolkit; allowed here: --backend cpu)"));

  // Files before anything is computed: the log, the checkpoint directory.
  std::FILE* json = nullptr;
  if (g.rank == 0 && !o.json.empty()) {
    json = std::fopen(o.json.c_str(), "w");
    if (!json) st = Status(StatusCode::kIoError, "--json " + o.json + ": cannot open for writing: " + std::strerror(errno));
  }
  std::FILE* grad_file = nullptr;
  if (st.ok() && g.rank == 0 && !o.grad_dump.empty()) {
    grad_file = std::fopen(o.grad_dump.c_str(), "w");
    if (!grad_file)
      st = Status(StatusCode::kIoError, "--grad-dump " + o.grad_dump + ": cannot open for writing: " + std::strerror(errno));
  }
  if (st.ok() && g.rank == 0 && !o.save.empty()) st = check_save_dir(o.save);
  st = ringattn::cli::agree(g, st, false);  // files are rank 0's
  if (!st.ok()) ringattn::cli::exit_job(st);

  // cuda: this rank's GPU (the CLI's rule), before any CUDA work of the rank.
  if (cuda) {
    st = ringattn::cli::agree(g, ringattn::cli::select_local_device());
    if (!st.ok()) ringattn::cli::exit_job(st);
  }
  ringattn::Config cfg;
  cfg.branches = o.branches;
  cfg.causal = true;
  cfg.heads = o.dims.heads;
  cfg.head_dim = o.dims.head_dim();
  cfg.dtype = o.attn_dtype;
  cfg.backend = o.backend;
  cfg.transport = ringattn::cli::default_transport(o.backend);  // the CLI's default
  if (!o.transport_text.empty()) st = ringattn::parse_transport(o.transport_text, &cfg.transport);
  cfg.timeout_seconds = o.timeout;
  cfg.deterministic = o.deterministic;
  std::unique_ptr<ringattn::Context> ctx;
  if (st.ok()) st = ringattn::Context::create(cfg, MPI_COMM_WORLD, &ctx);
  st = ringattn::cli::agree(g, st);
  if (!st.ok()) ringattn::cli::exit_job(st);
  st = ringattn::cli::agree(g, ringattn::validate_shape(cfg, ringattn::Shape{o.batch, o.task.seq}, g.size));
  if (!st.ok()) ringattn::cli::exit_job(st);

  std::unique_ptr<Kernels> kernels;
  st = make_kernels(o.backend, &kernels);
  std::unique_ptr<Trainer> trainer;
  if (st.ok()) {
    trainer = std::make_unique<Trainer>(o, g, ctx.get(), kernels.get());
    st = trainer->allocate();
  }
  st = ringattn::cli::agree(g, st);
  if (!st.ok()) ringattn::cli::exit_job(st);
  Trainer& tr = *trainer;
#ifdef RINGATTN_WITH_CUDA
  if (o.grad_sum == "nccl") {  // collective: every rank is here (after the agreement above)
    std::unique_ptr<GradSum> gs;
    st = ringattn::cli::agree(g, make_nccl_grad_sum(g.comm, o.timeout, &gs));
    if (!st.ok()) ringattn::cli::exit_job(st);
    tr.use_grad_sum(std::move(gs));
  }
#endif
  TrainState& s = tr.state();
  const int64_t n = tr.params();
  s.w.assign(size_t(n), 0.0f);
  s.m.assign(size_t(n), 0.0f);
  s.v.assign(size_t(n), 0.0f);
  init_params(o.dims, param_layout(o.dims), uint64_t(o.seed), s.w.data());
  if (!o.resume.empty()) {
    // Rank 0 reads and checks; every rank learns the outcome before any step, then gets the same bits.
    st = g.rank == 0 ? load_checkpoint(o.resume, fingerprint(o), n, &s) : Status::Ok();
    st = ringattn::cli::agree(g, st, false);  // only rank 0 reads: naming it says nothing
    if (!st.ok()) ringattn::cli::exit_job(st);
    mpi_check(g, MPI_Bcast(&s.step, 1, MPI_INT64_T, 0, g.comm), "MPI_Bcast (checkpoint step)");
    for (auto* t : {&s.w, &s.m, &s.v}) mpi_check(g, MPI_Bcast(t->data(), int(n), MPI_FLOAT, 0, g.comm), "MPI_Bcast (checkpoint)");
    if (s.step > o.steps) {
      st = ringattn::cli::agree(g, ringattn::InvalidArgument("--resume " + o.resume + ": the checkpoint is at step " +
                                                            std::to_string(s.step) + ", beyond --steps " + std::to_string(o.steps)), false);
      ringattn::cli::exit_job(st);
    }
  }

  if (!o.init_from.empty()) {
    // The weights of another run of the same model (any N, branches, schedule): step 0, fresh optimizer state.
    TrainState from;
    st = g.rank == 0 ? load_checkpoint(o.init_from, model_fingerprint(o), n, &from, true, "--init-from") : Status::Ok();
    st = ringattn::cli::agree(g, st, false);  // only rank 0 reads
    if (!st.ok()) ringattn::cli::exit_job(st);
    if (g.rank == 0) s.w = from.w;
    mpi_check(g, MPI_Bcast(s.w.data(), int(n), MPI_FLOAT, 0, g.comm), "MPI_Bcast (--init-from weights)");
  }

  OR_ABORT(g, tr.push_state());

  if (o.check_grad) {
    const bool ok = tr.check_grad();
    return ok ? 0 : 1;
  }
  if (!o.grad_dump.empty()) {
    st = tr.grad_dump(o.grad_dump, grad_file);
    if (!st.ok()) ringattn::cli::exit_job(st);
    return 0;
  }

  const int64_t L = o.task.seq / g.size;
  const double chance = 1.0 / double(o.task.values);
  // Useful attention FLOPs of a training step, all ranks: every layer's forward and backward (2.5x).
  const double attn_flops =
      3.5 * double(o.dims.layers) * ringattn::useful_flops(cfg, ringattn::Shape{o.batch, o.task.seq});
  const double peak = o.peak_tflops > 0 ? o.peak_tflops : cuda ? known_peak_tflops(ringattn::dev::device_name(o.backend)) : 0;
  if (g.rank == 0) {
    std::printf("train: %lld tokens per sequence (%d ranks x %lld), batch %lld | model d=%lld heads=%lld layers=%lld mlp=%lld, "
                "%lld params | attention %s causal | recall: %lld pairs, %lld keys, %lld values (chance %.3f), cell %lld, "
                "gap %lld | %lld steps, lr %g | backend %s (%s), attention %s, transport %s\n",
                static_cast<long long>(o.task.seq), g.size, static_cast<long long>(L), static_cast<long long>(o.batch),
                static_cast<long long>(o.dims.d), static_cast<long long>(o.dims.heads), static_cast<long long>(o.dims.layers),
                static_cast<long long>(o.dims.mlp), static_cast<long long>(n), ringattn::format_branches(o.branches).c_str(),
                static_cast<long long>(o.task.pairs), static_cast<long long>(o.task.keys), static_cast<long long>(o.task.values),
                chance, static_cast<long long>(o.task.cell), static_cast<long long>(o.task.gap), static_cast<long long>(o.steps), o.lr,
                ringattn::to_string(o.backend), ringattn::dev::device_name(o.backend), ringattn::to_string(cfg.dtype),
                ringattn::to_string(cfg.transport));
    std::printf("throughput: GEMMs in %s, gradient summed %s; useful attention %.3g TFLOP per step (all ranks, "
                "backward 2.5x forward); MFU against %s\n",
                o.bf16_matmul ? "bf16 (bf16 copies of the operands, float32 accumulation)" : "float32",
                o.grad_sum == "none" ? "nowhere (one rank)" : o.grad_sum == "nccl" ? "over NCCL" : "through the host",
                attn_flops / 1e12, peak > 0 ? (fmt("%.1f", peak) + " TF/s per rank (dense bf16)").c_str() : "nothing (unknown peak: --peak-tflops)");
    if (s.step > 0) std::printf("resumed from %s at step %lld\n", checkpoint_path(o.resume).c_str(), static_cast<long long>(s.step));
    if (!o.init_from.empty()) std::printf("weights from %s (step 0, fresh optimizer state)\n", checkpoint_path(o.init_from).c_str());
    std::fflush(stdout);
  }

  std::string steps_json, evals_json;
  auto do_eval = [&](int64_t step) {
    const double t0 = now_ms();
    const Totals t = tr.evaluate();
    const double acc = t.correct / std::max(1.0, t.answers), loss = t.loss / std::max(1.0, t.answers);
    if (g.rank == 0) {
      std::printf("eval  step %6lld: held-out accuracy %.4f (%.0f/%.0f answers), loss %.4f, %.1f s\n",
                  static_cast<long long>(step), acc, t.correct, t.answers, loss, (now_ms() - t0) / 1000);
      std::fflush(stdout);
      evals_json += std::string(evals_json.empty() ? "" : ",\n    ") + "{\"step\": " + std::to_string(step) +
                    ", \"accuracy\": " + fmt("%.17g", acc) + ", \"loss\": " + fmt("%.17g", loss) +
                    ", \"answers\": " + fmt("%.0f", t.answers) + "}";
    }
  };

  const int64_t end = o.stop_after > 0 ? o.stop_after : o.steps;
  const double run_t0 = now_ms();
  double win_loss = 0, win_acc = 0, win_ms = 0, win_attn = 0, win_gemm = 0, win_flops = 0;
  int64_t win_n = 0;
  for (int64_t step = s.step; step < end; ++step) {
    const double t0 = now_ms();
    const Batch b = make_batch(o, g.rank, g.size, 0, uint64_t(step * o.batch));
    double attn = 0, gemm = 0;
    const Totals t = tr.forward_backward(b, true, &attn, &gemm);
    const double lr = tr.lr_at(step);
    const double gnorm = tr.update(step);
    s.step = step + 1;
    double tm[3] = {now_ms() - t0, attn, gemm};  // the slowest rank's
    mpi_check(g, MPI_Allreduce(MPI_IN_PLACE, tm, 3, MPI_DOUBLE, MPI_MAX, g.comm), "MPI_Allreduce (timing)");
    const double loss = t.loss / t.answers, acc = t.correct / t.answers;
    const double flops = t.matmul_flops + attn_flops;  // the step's model FLOPs, all ranks
    win_loss += loss, win_acc += acc, win_ms += tm[0], win_attn += tm[1], win_gemm += tm[2], win_flops += flops, ++win_n;
    if (g.rank == 0) {
      steps_json += std::string(steps_json.empty() ? "" : ",\n    ") + "{\"step\": " + std::to_string(step + 1) +
                    ", \"loss\": " + fmt("%.17g", loss) + ", \"accuracy\": " + fmt("%.17g", acc) +
                    ", \"grad_norm\": " + fmt("%.17g", gnorm) + ", \"lr\": " + fmt("%.9g", lr) +
                    ", \"ms\": " + fmt("%.3f", tm[0]) + ", \"attention_ms\": " + fmt("%.3f", tm[1]) + ", \"gemm_ms\": " + fmt("%.3f", tm[2]) +
                    ", \"model_tflop\": " + fmt("%.6g", flops / 1e12) +
                    ", \"tflops_per_rank\": " + fmt("%.3f", flops / g.size / tm[0] / 1e9) + "}";
      if ((step + 1) % o.log_every == 0 || step + 1 == end) {
        const double ms = win_ms / double(win_n);
        const double tf = win_flops / g.size / win_ms / 1e9;  // per rank
        std::printf("step %6lld/%lld  loss %.4f  acc %.3f  tok/s %7.0f  ms/step %7.1f  attn %2.0f%%  gemm %2.0f%%  TF/s %.3g%s  (%.0f s)\n",
                    static_cast<long long>(step + 1), static_cast<long long>(o.steps), win_loss / double(win_n),
                    win_acc / double(win_n), double(o.batch * o.task.seq) * 1000.0 / ms, ms, 100.0 * win_attn / win_ms,
                    100.0 * win_gemm / win_ms, tf, peak > 0 ? ("  MFU " + fmt("%.1f", 100.0 * tf / peak) + "%").c_str() : "",
                    (now_ms() - run_t0) / 1000);
        std::fflush(stdout);
        win_loss = win_acc = win_ms = win_attn = win_gemm = win_flops = 0;
        win_n = 0;
      }
    }
    if (o.eval_every > 0 && (step + 1) % o.eval_every == 0 && step + 1 != end) do_eval(step + 1);
    if (!o.save.empty() && o.save_every > 0 && (step + 1) % o.save_every == 0 && step + 1 != end) save(o, g, tr);
  }
  if (!o.save.empty()) save(o, g, tr);
  if (o.eval) do_eval(s.step);
  const double wall = (now_ms() - run_t0) / 1000;
  if (g.rank == 0) std::printf("done: step %lld, %.1f s\n", static_cast<long long>(s.step), wall);

  // The log: written by rank 0, every write and the close checked.
  if (json) {
    std::string args;
    for (int i = 1; i < argc; ++i) args += std::string(i > 1 ? ", " : "") + "\"" + json_escape(argv[i]) + "\"";
    std::string opts;
    for (const auto& kv : fingerprint(o))
      opts += std::string(opts.empty() ? "" : ", ") + "\"" + kv.first + "\": \"" + json_escape(kv.second) + "\"";
    const std::string text = "{\n  \"tool\": \"ringattn_train\",\n  \"args\": [" + args + "],\n  \"ranks\": " +
                             std::to_string(g.size) + ",\n  \"backend\": \"" + ringattn::to_string(o.backend) +
                             "\",\n  \"device\": \"" + json_escape(ringattn::dev::device_name(o.backend)) +
                             "\",\n  \"attention_dtype\": \"" + ringattn::to_string(cfg.dtype) +
                             "\",\n  \"transport\": \"" + ringattn::to_string(cfg.transport) + "\",\n  \"params\": " + std::to_string(n) +
                             ",\n  \"matmul\": \"" + (o.bf16_matmul ? "bf16" : "f32") + "\",\n  \"grad_sum\": \"" +
                             o.grad_sum + "\",\n  \"deterministic\": " + (o.deterministic ? "true" : "false") +
                             ",\n  \"attention_tflop_per_step\": " +
                             fmt("%.6g", attn_flops / 1e12) + ",\n  \"peak_tflops\": " + fmt("%.1f", peak) +
                             ",\n  \"chance\": " + fmt("%.17g", chance) + ",\n  \"options\": {" + opts +
                             "},\n  \"wall_s\": " + fmt("%.3f", wall) + ",\n  \"steps\": [\n    " + steps_json +
                             "\n  ],\n  \"evals\": [\n    " + evals_json + "\n  ]\n}\n";
    const bool ok = std::fwrite(text.data(), 1, text.size(), json) == text.size();
    if (std::fclose(json) != 0 || !ok) {
      std::fprintf(stderr, "ringattn: error: --json %s: write failed: %s\n", o.json.c_str(), std::strerror(errno));
      return 1;
    }
  }
  return 0;
}

}  // namespace
}  // namespace train

int main(int argc, char** argv) {
  if (MPI_Init(&argc, &argv) != MPI_SUCCESS) {
    std::fprintf(stderr, "ringattn: error: MPI_Init failed\n");
    return 3;
  }
  // Errors of MPI calls come back as return codes, each checked (mpi_check).
  if (MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN) != MPI_SUCCESS) {
    std::fprintf(stderr, "ringattn: error: MPI_Comm_set_errhandler failed\n");
    MPI_Abort(MPI_COMM_WORLD, 3);
  }
  // A device failure inside a kernel (kernels.hpp: an exception naming the
  // call) comes once data moves: this rank reports it and ends the job.
  int rc = 0;
  try {
    rc = train::run(argc, argv);
  } catch (const std::exception& e) {
    ringattn::cli::abort_job(ringattn::cli::Group::world(), ringattn::Status(ringattn::StatusCode::kDeviceError, e.what()));
  }
  // One exit code for the job: the worst rank's.
  int worst = rc;
  if (MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD) != MPI_SUCCESS) worst = 3;
  MPI_Finalize();
  return worst;
}

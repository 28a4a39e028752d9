#include "ops.hpp"

#include "ringattn/names.hpp"

#include <algorithm>
#include <cmath>
#include <thread>

#include "inputs.hpp"
#include "kernels/cpu/reference.hpp"

namespace ringattn::cli {
namespace {

// The reference's own description of the problem (kernels/ knows no Config).
kern::RefProblem ref_problem(const Config& c) {
  kern::RefProblem p{{}, c.heads, c.head_dim, c.causal, c.scale, c.head_offsets == HeadOffsets::blocked};
  for (const Branch& b : c.branches) p.branches.emplace_back(b.w, b.r);
  return p;
}

// The one call of the float64 reference in launch/: rows [t0, t1) of every
// batch element of the whole-sequence inputs q, k, v (B x N x H x D); o is
// B x (t1-t0) x H x D, lse B x (t1-t0) x H; threads and progress from `run`.
void reference_rows(const Config& c, int64_t B, int64_t N, const double* q, const double* k, const double* v, int64_t t0,
                    int64_t t1, const RefRun& run, double* o, double* lse) {
  kern::RefOptions opt;
  opt.threads = std::max(1, run.threads);
  opt.progress = run.progress;
  opt.progress_interval_s = 0;  // the CLI's printer keeps its own --progress interval
  kern::reference_forward(ref_problem(c), B, N, q, k, v, t0, t1, o, lse, opt);
}

Status forward_run(Context& ctx, const Shape& s, void* const* in, void* const* out) {
  return ctx.forward(s, in[0], in[1], in[2], out[0], static_cast<float*>(out[1]));
}

// O: relative L2 error (SPEC bound) and every element within 16x the bound of
// the reference's RMS; LSE: absolute error within max(SPEC bound, 4e-6*|LSE|).
// out[0] (O) and out[1] (LSE) of this rank against the reference's rows of it.
void compare_forward(const Problem& p, const HostTensors& out, const std::vector<double>& ro, const std::vector<double>& rl,
                     CheckResult* r) {
  const Config& c = p.cfg;
  const std::vector<float>&o = out[0], &lse = out[1];
  kern::ErrorAccumulator eo;
  kern::LseErrorAccumulator el;
  double ref_rms = 0;
  for (double x : ro) ref_rms += x * x;
  ref_rms = std::sqrt(ref_rms / double(std::max<size_t>(1, ro.size())));
  const kern::Tolerance tol = kern::spec_tolerance(int(c.dtype), c.backend == Backend::cuda);
  r->wrong = 0;
  for (size_t i = 0; i < ro.size(); ++i) {
    eo.add(o[i], ro[i]);
    if (!std::isfinite(o[i]) || std::fabs(o[i] - ro[i]) > 16 * tol.o * std::max(ref_rms, 1e-30)) ++r->wrong;
  }
  double lse_ratio = 0;  // max over entries of |error| / bound (bound: kern::lse_bound)
  for (size_t i = 0; i < rl.size(); ++i) {
    kern::LseErrorAccumulator one;
    one.add(lse[i], rl[i]);
    el.add(lse[i], rl[i]);
    const double x = one.max_abs / kern::lse_bound(tol.lse, std::isfinite(rl[i]) ? rl[i] : 0.0);
    lse_ratio = std::isnan(x) ? INFINITY : std::max(lse_ratio, x);
    if (!(x <= 1.0)) ++r->wrong;
  }
  r->errors = {{"O", "rel_l2_err", eo.rel_l2()}, {"LSE", "abs_err", el.max_abs}};
  r->ok = eo.rel_l2() <= tol.o && lse_ratio <= 1.0 && r->wrong == 0;
  char text[160];
  std::snprintf(text, sizeof(text), "O relative L2 %.1e, LSE absolute max(%.1e, %.0e*|LSE|) (SPEC.md, %s on %s)", tol.o,
                tol.lse, kern::kLseRelFloor, to_string(c.dtype), to_string(c.backend));
  r->tolerance = text;
}

Status forward_check(const Problem& p, const Source& src, const HostTensors& out, const RefRun& ref, CheckResult* r) {
  const Config& c = p.cfg;
  const int64_t B = p.shape.batch, N = p.shape.seq, L = p.rows();
  const std::vector<double> q = synth_sequence(p, src, kern::SynthTensor::q), k = synth_sequence(p, src, kern::SynthTensor::k),
                            v = synth_sequence(p, src, kern::SynthTensor::v);
  std::vector<double> ro(size_t(B * L * c.heads * c.head_dim)), rl(size_t(B * L * c.heads));
  reference_rows(c, B, N, q.data(), k.data(), v.data(), p.group.rank * L, (p.group.rank + 1) * L, ref, ro.data(), rl.data());
  compare_forward(p, out, ro, rl, r);
  return Status::Ok();
}

// forward + backward, as a training step runs them: SPEC counts the
// backward as 2.5 forwards.
double training_flops(const Config& c, const Shape& s) { return 3.5 * useful_flops(c, s); }

Status training_run(Context& ctx, const Shape& s, void* const* in, void* const* out) {
  RINGATTN_RETURN_IF_ERROR(ctx.forward(s, in[0], in[1], in[2], out[0], static_cast<float*>(out[1])));
  return ctx.backward(s, in[0], in[1], in[2], out[0], static_cast<const float*>(out[1]), in[3], out[2], out[3], out[4]);
}

// O and LSE as forward_check does; dQ, dK, dV against the float64 reference
// backward (from the reference forward of the whole sequence) by relative L2
// within SPEC's gradient bound, the O bound times 2.
Status training_check(const Problem& p, const Source& src, const HostTensors& out, const RefRun& ref, CheckResult* r) {
  const Config& c = p.cfg;
  const int64_t B = p.shape.batch, N = p.shape.seq, L = p.rows(), H = c.heads, D = c.head_dim, t0 = p.group.rank * L;
  using kern::SynthTensor;
  const std::vector<double> q = synth_sequence(p, src, SynthTensor::q), k = synth_sequence(p, src, SynthTensor::k),
                            v = synth_sequence(p, src, SynthTensor::v), dout = synth_sequence(p, src, SynthTensor::dout);
  // The reference forward of the whole sequence once: the backward needs every
  // row's O and LSE, and this rank's rows check O and LSE as forward_check does.
  std::vector<double> o(size_t(B * N * H * D)), lse(size_t(B * N * H));
  reference_rows(c, B, N, q.data(), k.data(), v.data(), 0, N, ref, o.data(), lse.data());
  std::vector<double> ro(size_t(B * L * H * D)), rl(size_t(B * L * H));
  for (int64_t b = 0; b < B; ++b) {
    std::copy_n(o.begin() + (b * N + t0) * H * D, L * H * D, ro.begin() + b * L * H * D);
    std::copy_n(lse.begin() + (b * N + t0) * H, L * H, rl.begin() + b * L * H);
  }
  compare_forward(p, out, ro, rl, r);
  std::vector<double> g[3];
  for (auto& x : g) x.resize(size_t(B * L * H * D));
  kern::RefOptions opt;
  opt.threads = std::max(1, ref.threads);
  kern::reference_backward(ref_problem(c), B, N, q.data(), k.data(), v.data(), o.data(), lse.data(), dout.data(),
                           t0, t0 + L, g[0].data(), g[1].data(), g[2].data(), opt);
  const double bound = 2 * kern::spec_tolerance(int(c.dtype), c.backend == Backend::cuda).o;
  const char* names[3] = {"dQ", "dK", "dV"};
  for (int t = 0; t < 3; ++t) {
    kern::ErrorAccumulator e;
    for (size_t i = 0; i < g[t].size(); ++i) e.add(out[size_t(2 + t)][i], g[t][i]);
    r->errors.push_back({names[t], "rel_l2_err", e.rel_l2()});
    r->ok = r->ok && e.rel_l2() <= bound;
  }
  char text[96];
  std::snprintf(text, sizeof(text), "; dQ/dK/dV relative L2 %.1e", bound);
  r->tolerance += text;
  return Status::Ok();
}

const std::vector<Op>& table() {
  using kern::SynthTensor;
  static const std::vector<Op> ops = {
      {"forward",
       {{"q", SynthTensor::q, false}, {"k", SynthTensor::k, false}, {"v", SynthTensor::v, false}},
       {{"o", SynthTensor{}, false}, {"lse", SynthTensor{}, true}},
       &useful_flops, &make_inputs_plain, &forward_run, &forward_check},
      // A training step's attention: the forward, then the exact gradient.
      {"backward",
       {{"q", SynthTensor::q, false}, {"k", SynthTensor::k, false}, {"v", SynthTensor::v, false},
        {"dout", SynthTensor::dout, false}},
       {{"o", SynthTensor{}, false}, {"lse", SynthTensor{}, true}, {"dq", SynthTensor{}, false},
        {"dk", SynthTensor{}, false}, {"dv", SynthTensor{}, false}},
       &training_flops, &make_inputs_plain, &training_run, &training_check},
  };
  return ops;
}

}  // namespace

size_t elements(const Problem& p, const TensorInfo& t) {
  return size_t(p.shape.batch * p.rows() * p.cfg.heads * (t.per_head ? 1 : p.cfg.head_dim));
}

size_t device_bytes(const Problem& p, const TensorInfo& t) { return elements(p, t) * (t.per_head ? 4 : dtype_size(p.cfg.dtype)); }

size_t device_bytes(const Problem& p, const std::vector<TensorInfo>& ts) {
  size_t n = 0;
  for (const TensorInfo& t : ts) n += device_bytes(p, t);
  return n;
}

Status find_op(const std::string& name, const Op** op) {
  std::string names;
  for (const Op& o : table()) {
    if (name == o.name) {
      *op = &o;
      return Status::Ok();
    }
    names += (names.empty() ? "" : ", ") + std::string(o.name);
  }
  return InvalidArgument("--op '" + name + "' is not an operation (allowed: " + names + ")");
}

}  // namespace ringattn::cli

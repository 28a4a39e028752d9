// `ringattn`: the command-line front end (run | verify | bench).
// Launch it with mpirun (or ./launch/ringattn -np N ..., which adds the flags
// this machine needs). Every rank parses the same arguments; any error is
// agreed on by all ranks before data moves, printed by every rank, and ends
// the job with a non-zero exit code.
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "kernels/common/convert.hpp"
#include "kernels/cpu/reference.hpp"
#include "kernels/cpu/synth.hpp"
#include "npy.hpp"
#include "options.hpp"
#include "ringattn/device.hpp"
#include "ringattn/ringattn.hpp"

using namespace ringattn;
using cli::Options;

namespace {

int g_rank = 0, g_world = 1;
MPI_Comm g_comm = MPI_COMM_WORLD;  // the ranks of the current measurement (scaling uses subsets)

[[noreturn]] void fail(const Status& s, int code = 1) {
  std::fprintf(stderr, "ringattn: error (rank %d of %d): %s\n", g_rank, g_world, s.to_string().c_str());
  std::fflush(stderr);
  MPI_Finalize();
  std::exit(code);
}

// A failure after data started to move: peers may be blocked, so abort the job.
[[noreturn]] void abort_job(const Status& s) {
  std::fprintf(stderr, "ringattn: error (rank %d of %d): %s\nringattn: aborting the job\n", g_rank, g_world,
               s.to_string().c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, 3);
  std::exit(3);
}

void check_all(const Status& local) {
  Status s = all_ranks(g_comm, local);
  if (!s.ok()) fail(s, s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kIoError ? 2 : 1);
}

#define OR_ABORT(expr)                \
  do {                                \
    ::ringattn::Status _s = (expr);   \
    if (!_s.ok()) abort_job(_s);      \
  } while (0)

std::string human(double v, const char* unit) {
  const char* pre[] = {"", "K", "M", "G", "T", "P"};
  int i = 0;
  while (std::fabs(v) >= 1000 && i < 5) v /= 1000, ++i;
  char b[64];
  std::snprintf(b, sizeof(b), "%.3g %s%s", v, pre[i], unit);
  return b;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Gathers one text line per rank to rank 0.
std::vector<std::string> gather_lines(const std::string& mine) {
  int len = int(mine.size());
  std::vector<int> lens(g_world), displs(g_world);
  MPI_Gather(&len, 1, MPI_INT, lens.data(), 1, MPI_INT, 0, g_comm);
  std::string all;
  if (g_rank == 0) {
    int total = 0;
    for (int i = 0; i < g_world; ++i) displs[i] = total, total += lens[i];
    all.resize(size_t(total));
  }
  MPI_Gatherv(mine.data(), len, MPI_CHAR, g_rank == 0 ? &all[0] : nullptr, lens.data(), displs.data(), MPI_CHAR, 0,
              g_comm);
  std::vector<std::string> out;
  if (g_rank == 0)
    for (int i = 0; i < g_world; ++i) out.push_back(all.substr(size_t(displs[i]), size_t(lens[i])));
  return out;
}

kern::ElemKind elem_kind(DType dt) { return kern::ElemKind(int(dt)); }  // same values

void encode(DType dt, const float* src, size_t n, std::vector<char>* out) {
  out->resize(n * dtype_size(dt));
  kern::from_float(elem_kind(dt), src, n, out->data());
}

void decode(DType dt, const char* src, size_t n, std::vector<float>* out) {
  out->resize(n);
  kern::to_float(elem_kind(dt), src, n, out->data());
}

// Value of the element after rounding to the run's dtype (what the kernels see).
double rounded(DType dt, double x) { return kern::round_to(elem_kind(dt), float(x)); }

// The reference's description of the problem.
kern::RefProblem ref_problem(const Config& c) {
  kern::RefProblem p{{}, c.heads, c.head_dim, c.causal, c.scale, c.head_offsets == HeadOffsets::blocked};
  for (const Branch& b : c.branches) p.branches.emplace_back(b.w, b.r);
  return p;
}

// The local shard of one input tensor, float, from the synth function.
void synth_shard(uint64_t seed, kern::SynthTensor which, double amp, const Config& c, const Shape& s, std::vector<float>* out) {
  const int64_t L = s.seq / g_world, H = c.heads, D = c.head_dim;
  out->resize(size_t(s.batch * L * H * D));
  size_t i = 0;
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t t = g_rank * L; t < (g_rank + 1) * L; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d)
          (*out)[i++] = float(kern::synth_value(seed, which, kern::bnhd_index(b, t, h, d, s.seq, H, D), amp));
}

// Reads this rank's shard of a (B,N,H,D) or (N,H,D) .npy file.
Status npy_shard(const std::string& path, const Config& c, Shape* s, std::vector<float>* out, bool set_shape) {
  npy::Header h;
  RINGATTN_RETURN_IF_ERROR(npy::read_header(path, &h));
  std::vector<int64_t> sh = h.shape;
  if (sh.size() == 3) sh.insert(sh.begin(), 1);
  auto shape_str = [&] {
    std::string x = "(";
    for (size_t i = 0; i < h.shape.size(); ++i) x += (i ? ", " : "") + std::to_string(h.shape[i]);
    return x + ")";
  };
  if (sh.size() != 4)
    return InvalidArgument("'" + path + "' has shape " + shape_str() + " (allowed: (B, N, H, D) or (N, H, D))");
  if (sh[2] != c.heads || sh[3] != c.head_dim)
    return InvalidArgument("'" + path + "' has shape " + shape_str() + " but --heads " + std::to_string(c.heads) +
                           " --head-dim " + std::to_string(c.head_dim) + " (H and D must match)");
  if (set_shape) {
    s->batch = sh[0];
    s->seq = sh[1];
  } else if (sh[0] != s->batch || sh[1] != s->seq) {
    return InvalidArgument("'" + path + "' has shape " + shape_str() + " but --q has batch " + std::to_string(s->batch) +
                           " and " + std::to_string(s->seq) + " tokens (q, k and v must have one shape)");
  }
  if (s->seq % g_world != 0)
    return InvalidArgument("'" + path + "' has N = " + std::to_string(s->seq) + " tokens, not divisible by the " +
                           std::to_string(g_world) + " ranks (allowed: a multiple of " + std::to_string(g_world) + ")");
  const int64_t L = s->seq / g_world, row = c.heads * c.head_dim;
  out->resize(size_t(s->batch * L * row));
  for (int64_t b = 0; b < s->batch; ++b) {
    RINGATTN_RETURN_IF_ERROR(npy::read_floats(path, h, (b * s->seq + g_rank * L) * row, L * row, out->data() + b * L * row));
  }
  return Status::Ok();
}

// Device (or host) buffers of one input set and the outputs.
struct Buffers {
  Backend b;
  size_t elems = 0, lse_elems = 0;
  std::vector<void*> q, k, v;
  void* o = nullptr;
  float* lse = nullptr;
  explicit Buffers(Backend be) : b(be) {}
  ~Buffers() {
    for (auto* vec : {&q, &k, &v})
      for (void* p : *vec) dev::release(b, p);
    dev::release(b, o);
    dev::release(b, lse);
  }
};

Status upload_set(Buffers* buf, DType dt, const std::vector<float>& q, const std::vector<float>& k,
                  const std::vector<float>& v) {
  std::vector<char> bytes;
  const size_t n = q.size();
  void *dq, *dk, *dv;
  RINGATTN_RETURN_IF_ERROR(dev::alloc(buf->b, n * dtype_size(dt), &dq));
  buf->q.push_back(dq);
  RINGATTN_RETURN_IF_ERROR(dev::alloc(buf->b, n * dtype_size(dt), &dk));
  buf->k.push_back(dk);
  RINGATTN_RETURN_IF_ERROR(dev::alloc(buf->b, n * dtype_size(dt), &dv));
  buf->v.push_back(dv);
  encode(dt, q.data(), n, &bytes);
  RINGATTN_RETURN_IF_ERROR(dev::upload(buf->b, dq, bytes.data(), bytes.size()));
  encode(dt, k.data(), n, &bytes);
  RINGATTN_RETURN_IF_ERROR(dev::upload(buf->b, dk, bytes.data(), bytes.size()));
  encode(dt, v.data(), n, &bytes);
  RINGATTN_RETURN_IF_ERROR(dev::upload(buf->b, dv, bytes.data(), bytes.size()));
  return Status::Ok();
}

Status alloc_outputs(Buffers* buf, DType dt, size_t elems, size_t lse_elems) {
  buf->elems = elems;
  buf->lse_elems = lse_elems;
  RINGATTN_RETURN_IF_ERROR(dev::alloc(buf->b, elems * dtype_size(dt), &buf->o));
  void* l;
  RINGATTN_RETURN_IF_ERROR(dev::alloc(buf->b, lse_elems * 4, &l));
  buf->lse = static_cast<float*>(l);
  return Status::Ok();
}

std::string config_label(const Options& o) {
  return o.branches_given ? "custom" : (o.config_name.empty() ? "longnet4" : o.config_name);
}

std::string describe(const Options& o, const Config& c, const Shape& s) {
  std::ostringstream ss;
  ss << "# config " << config_label(o)
     << " (" << format_branches(c.branches) << ")" << (c.causal ? " causal" : "") << ", head offsets "
     << to_string(c.head_offsets) << "\n"
     << "# backend " << to_string(c.backend) << " (" << dev::device_name(c.backend) << "), transport "
     << to_string(c.transport) << ", dtype " << to_string(c.dtype) << ", ranks " << g_world << "\n"
     << "# batch " << s.batch << ", tokens " << s.seq << " (" << s.seq / g_world << " per rank), heads " << c.heads
     << ", head_dim " << c.head_dim << "\n";
  return ss.str();
}

struct Timing {
  std::vector<double> per_iter_ms;  // max over ranks
  double median_ms = 0;
};

// Runs warm-up and timed forwards; each timed iteration's time is the
// slowest rank's (device events on the compute stream).
Timing time_forwards(Context& ctx, const Shape& s, Buffers& buf, int warmup, int iters, bool progress) {
  Timing t;
  dev::Timer timer(ctx.config().backend);
  const size_t sets = buf.q.size();
  auto t_start = std::chrono::steady_clock::now();
  for (int i = 0; i < warmup + iters; ++i) {
    const size_t k = size_t(i) % sets;
    MPI_Barrier(g_comm);
    OR_ABORT(timer.start());
    OR_ABORT(ctx.forward(s, buf.q[k], buf.k[k], buf.v[k], buf.o, buf.lse));
    OR_ABORT(ctx.synchronize());  // a dead peer times out here instead of hanging the timer
    double ms = 0;
    OR_ABORT(timer.stop(&ms));
    dev::peak_sample(ctx.config().backend);
    MPI_Allreduce(MPI_IN_PLACE, &ms, 1, MPI_DOUBLE, MPI_MAX, g_comm);
    if (i >= warmup) t.per_iter_ms.push_back(ms);
    double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - t_start).count();
    if (progress && g_rank == 0 && elapsed > 5.0)
      std::fprintf(stderr, "[ringattn] %s %d/%d: %.2f ms\n", i < warmup ? "warm-up" : "iteration",
                   i < warmup ? i + 1 : i - warmup + 1, i < warmup ? warmup : iters, ms);
  }
  t.median_ms = median(t.per_iter_ms);
  return t;
}

struct Summary {
  double ms = 0, flops = 0;
  int64_t bytes_sent_max = 0, bytes_ideal_max = 0, bytes_sent_total = 0, bytes_ideal_total = 0;
  double exposed_ms_max = 0;
};

Summary summarize(Context& ctx, const Shape& s, const Timing& t) {
  Summary r;
  r.ms = t.median_ms;
  r.flops = useful_flops(ctx.config(), s);
  const Stats& st = ctx.stats();
  int64_t v[2] = {st.last_bytes_sent, st.last_bytes_ideal};
  int64_t mx[2], sm[2];
  MPI_Allreduce(v, mx, 2, MPI_INT64_T, MPI_MAX, g_comm);
  MPI_Allreduce(v, sm, 2, MPI_INT64_T, MPI_SUM, g_comm);
  r.bytes_sent_max = mx[0];
  r.bytes_ideal_max = mx[1];
  r.bytes_sent_total = sm[0];
  r.bytes_ideal_total = sm[1];
  double exposed = 0;
  for (const StepTiming& x : st.timeline) exposed += x.exposed_ms;
  MPI_Allreduce(&exposed, &r.exposed_ms_max, 1, MPI_DOUBLE, MPI_MAX, g_comm);
  return r;
}

std::string rank_table(Context& ctx, const Shape& s, double my_ms) {
  const Stats& st = ctx.stats();
  char line[256];
  std::snprintf(line, sizeof(line), "%6d %10lld %12.3f %14lld %14lld %14lld %10.3f\n", g_rank,
                (long long)(s.seq / g_world), my_ms, (long long)st.last_bytes_sent, (long long)st.last_bytes_ideal,
                (long long)st.last_bytes_received, st.last_plan_ms);
  auto lines = gather_lines(line);
  std::string out =
      "#  rank     tokens      last_ms     bytes_sent    bytes_ideal  bytes_received    plan_ms\n";
  for (auto& l : lines) out += l;
  return out;
}

std::string timeline_table(Context& ctx) {
  std::ostringstream ss;
  for (const StepTiming& t : ctx.stats().timeline) {
    char line[256];
    std::snprintf(line, sizeof(line), "%6d %5d %6d %6d %12.3f %12.3f %12.3f %14lld %14lld\n", g_rank, t.step,
                  t.send_peer, t.recv_peer, t.compute_ms, t.transfer_ms, t.exposed_ms, (long long)t.bytes_sent,
                  (long long)t.bytes_ideal);
    ss << line;
  }
  auto lines = gather_lines(ss.str());
  std::string out =
      "# timeline (last forward)\n#  rank  step   send   recv   compute_ms  transfer_ms   exposed_ms     bytes_sent    bytes_ideal\n";
  for (auto& l : lines) out += l;
  return out;
}

std::string cache_table(Context& ctx) {
  const CacheStats& c = ctx.stats().cache;
  char line[512];
  std::snprintf(line, sizeof(line), "%6d %8lld %8lld %6lld %6lld %6lld %6lld %6lld %6lld %6lld %6lld %11lld %11lld %9.3f %9.4f\n",
                g_rank, (long long)c.device_hits, (long long)c.host_hits, (long long)c.misses,
                (long long)c.promotions, (long long)c.device_evictions, (long long)c.host_evictions,
                (long long)c.staged, (long long)c.copies, (long long)c.prefetch_waits, (long long)c.plans_held,
                (long long)c.device_bytes, (long long)c.host_bytes, c.build_ms, c.lookup_ms);
  auto lines = gather_lines(line);
  std::string out =
      "# pattern cache\n#  rank  dev_hit host_hit   miss  promo dev_ev hst_ev staged copies pf_wait plans  dev_bytes  host_bytes  build_ms lookup_ms\n";
  for (auto& l : lines) out += l;
  return out;
}

std::string json_common(const Options& o, const Config& c, const Shape& s) {
  std::ostringstream j;
  j << "  \"command\": \"" << o.command << "\",\n"
    << "  \"config\": \"" << config_label(o)
    << "\",\n  \"branches\": \"" << format_branches(c.branches) << "\",\n"
    << "  \"causal\": " << (c.causal ? "true" : "false") << ",\n"
    << "  \"head_offsets\": \"" << to_string(c.head_offsets) << "\",\n"
    << "  \"backend\": \"" << to_string(c.backend) << "\",\n  \"device\": \"" << dev::device_name(c.backend) << "\",\n"
    << "  \"transport\": \"" << to_string(c.transport) << "\",\n  \"dtype\": \"" << to_string(c.dtype) << "\",\n"
    << "  \"ranks\": " << g_world << ",\n  \"batch\": " << s.batch << ",\n  \"tokens\": " << s.seq << ",\n"
    << "  \"heads\": " << c.heads << ",\n  \"head_dim\": " << c.head_dim << ",\n";
  return j.str();
}

void write_json(const std::string& path, const std::string& body) {
  if (path.empty() || g_rank != 0) return;
  std::ofstream f(path);
  f << "{\n" << body << "}\n";
  if (!f) std::fprintf(stderr, "ringattn: warning: could not write --json '%s'\n", path.c_str());
}

// Inputs of a run: from .npy files or the synth function; set `sets` copies.
void make_inputs(const Options& o, const Config& c, Shape* s, Buffers* buf, int sets) {
  std::vector<float> q, k, v;
  if (!o.q_file.empty()) {
    Status st = npy_shard(o.q_file, c, s, &q, true);
    if (st.ok()) st = npy_shard(o.k_file, c, s, &k, false);
    if (st.ok()) st = npy_shard(o.v_file, c, s, &v, false);
    check_all(st);
    check_all(upload_set(buf, c.dtype, q, k, v));
    return;
  }
  for (int i = 0; i < sets; ++i) {
    uint64_t seed = (o.seed_given ? o.seed : 1) + uint64_t(i) * 7919;
    synth_shard(seed, kern::SynthTensor::q, o.amplitude, c, *s, &q);
    synth_shard(seed, kern::SynthTensor::k, o.amplitude, c, *s, &k);
    synth_shard(seed, kern::SynthTensor::v, o.amplitude, c, *s, &v);
    check_all(upload_set(buf, c.dtype, q, k, v));
  }
}

Status write_outputs(const Options& o, const Config& c, const Shape& s, Buffers& buf) {
  if (o.out_file.empty() && o.lse_file.empty()) return Status::Ok();
  const int64_t L = s.seq / g_world, row = c.heads * c.head_dim;
  std::vector<char> raw(buf.elems * dtype_size(c.dtype));
  RINGATTN_RETURN_IF_ERROR(dev::download(c.backend, raw.data(), buf.o, raw.size()));
  std::vector<float> mine, lse(buf.lse_elems);
  decode(c.dtype, raw.data(), buf.elems, &mine);
  RINGATTN_RETURN_IF_ERROR(dev::download(c.backend, lse.data(), buf.lse, lse.size() * 4));
  // Gather shards per batch element: rank p's rows land at [p*L, (p+1)*L).
  auto gather = [&](const std::vector<float>& part, int64_t per_row, std::vector<float>* all) {
    const int64_t chunk = L * per_row;
    std::vector<float> tmp(g_rank == 0 ? size_t(chunk * g_world) : 0);
    if (g_rank == 0) all->resize(size_t(s.batch * s.seq * per_row));
    for (int64_t b = 0; b < s.batch; ++b) {
      MPI_Gather(part.data() + b * chunk, int(chunk), MPI_FLOAT, tmp.data(), int(chunk), MPI_FLOAT, 0, g_comm);
      if (g_rank == 0) std::copy(tmp.begin(), tmp.end(), all->begin() + b * s.seq * per_row);
    }
  };
  std::vector<float> all;
  Status st;
  if (!o.out_file.empty()) {
    gather(mine, row, &all);
    if (g_rank == 0) st = npy::write_f32(o.out_file, {s.batch, s.seq, c.heads, c.head_dim}, all.data());
  }
  if (st.ok() && !o.lse_file.empty()) {
    gather(lse, c.heads, &all);
    if (g_rank == 0) st = npy::write_f32(o.lse_file, {s.batch, s.seq, c.heads}, all.data());
  }
  return all_ranks(g_comm, st);
}

int cmd_run_or_bench(const Options& o, Context& ctx) {
  const Config& c = ctx.config();
  Shape s{o.batch, o.seq};
  const bool bench = o.command == "bench";
  Buffers buf(c.backend);
  // Rotate input sets so repeated runs do not measure L2 (bench only).
  int sets = 1;
  if (bench && c.backend == Backend::cuda) {
    double set_bytes = 3.0 * double(s.batch * (s.seq / g_world) * c.heads * c.head_dim) * double(dtype_size(c.dtype));
    sets = int(std::min(8.0, std::max(1.0, std::ceil(2.0 * 64e6 / set_bytes))));
  }
  make_inputs(o, c, &s, &buf, sets);
  const int64_t L = s.seq / g_world;
  check_all(alloc_outputs(&buf, c.dtype, size_t(s.batch * L * c.heads * c.head_dim), size_t(s.batch * L * c.heads)));
  check_all(dev::poison(c.backend, buf.o, buf.elems * dtype_size(c.dtype)));
  if (g_rank == 0) std::printf("# ringattn %s\n%s", o.command.c_str(), describe(o, c, s).c_str());
  dev::peak_reset(c.backend);
  Timing t = time_forwards(ctx, s, buf, o.warmup, o.iters, true);
  Summary r = summarize(ctx, s, t);
  std::string ranks = rank_table(ctx, s, t.per_iter_ms.back());
  std::string tl = o.timeline ? timeline_table(ctx) : "";
  std::string cs = o.cache_stats ? cache_table(ctx) : "";
  const double tflops = r.flops / (r.ms * 1e-3) / 1e12;
  int64_t peak = dev::device_bytes_peak(c.backend);
  int64_t peak_max = 0;
  MPI_Allreduce(&peak, &peak_max, 1, MPI_INT64_T, MPI_MAX, g_comm);
  if (g_rank == 0) {
    std::printf("%s", ranks.c_str());
    if (!tl.empty()) std::printf("%s", tl.c_str());
    if (!cs.empty()) std::printf("%s", cs.c_str());
    std::printf("# %-10s %10s %10s %12s %14s %10s %16s %16s %12s\n", "config", "tokens", "ranks", "median_ms",
                "useful_FLOPs", "TFLOP/s", "bytes/rank(max)", "ideal/rank(max)", "exposed_ms");
    std::printf("  %-10s %10lld %10d %12.3f %14.4g %10.3f %16lld %16lld %12.3f\n",
                config_label(o).c_str(),
                (long long)s.seq, g_world, r.ms, r.flops, tflops, (long long)r.bytes_sent_max,
                (long long)r.bytes_ideal_max, r.exposed_ms_max);
    std::printf("# median of %d (after %d warm-up), slowest rank per iteration; %s sent per rank (ideal %s)%s\n",
                o.iters, o.warmup, human(double(r.bytes_sent_max), "B").c_str(),
                human(double(r.bytes_ideal_max), "B").c_str(),
                r.bytes_sent_total == r.bytes_ideal_total ? ", equal to the ideal" : ", ABOVE the ideal");
    if (c.backend == Backend::cuda) std::printf("# peak device memory %s (rank max)\n", human(double(peak_max), "B").c_str());
  }
  Status st = write_outputs(o, c, s, buf);
  if (!st.ok()) fail(st);
  if (g_rank == 0 && !o.json.empty()) {
    std::ostringstream j;
    j << json_common(o, c, s) << "  \"iters\": " << o.iters << ",\n  \"warmup\": " << o.warmup << ",\n"
      << "  \"median_ms\": " << r.ms << ",\n  \"useful_flops\": " << r.flops << ",\n  \"tflops\": " << tflops << ",\n"
      << "  \"bytes_sent_per_rank_max\": " << r.bytes_sent_max << ",\n  \"bytes_ideal_per_rank_max\": "
      << r.bytes_ideal_max << ",\n  \"exposed_ms_max\": " << r.exposed_ms_max << ",\n  \"peak_device_bytes\": "
      << peak_max << ",\n  \"times_ms\": [";
    for (size_t i = 0; i < t.per_iter_ms.size(); ++i) j << (i ? ", " : "") << t.per_iter_ms[i];
    j << "]\n";
    write_json(o.json, j.str());
  }
  return 0;
}

int cmd_verify(const Options& o, Context& ctx) {
  const Config& c = ctx.config();
  Shape s{o.batch, o.seq};
  uint64_t seed = o.seed_given ? o.seed : uint64_t(std::chrono::system_clock::now().time_since_epoch().count() & 0xffffffff);
  MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, g_comm);
  const int64_t N = s.seq, L = N / g_world, H = c.heads, D = c.head_dim, B = s.batch;
  if (g_rank == 0) std::printf("# ringattn verify (seed %llu, amplitude %g)\n%s", (unsigned long long)seed, o.amplitude, describe(o, c, s).c_str());

  // Whole-sequence inputs (rounded to the dtype) for the reference, and the shard.
  const size_t total = size_t(B * N * H * D);
  std::vector<double> q(total), k(total), v(total);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < N; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d) {
          uint64_t i = kern::bnhd_index(b, t, h, d, N, H, D);
          q[i] = rounded(c.dtype, kern::synth_value(seed, kern::SynthTensor::q, i, o.amplitude));
          k[i] = rounded(c.dtype, kern::synth_value(seed, kern::SynthTensor::k, i, o.amplitude));
          v[i] = rounded(c.dtype, kern::synth_value(seed, kern::SynthTensor::v, i, o.amplitude));
        }
  std::vector<float> qs, ks, vs;
  auto shard = [&](const std::vector<double>& all, std::vector<float>* out) {
    out->resize(size_t(B * L * H * D));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = 0; i < L * H * D; ++i) (*out)[size_t(b * L * H * D + i)] = float(all[size_t((b * N + g_rank * L) * H * D + i)]);
  };
  shard(q, &qs);
  shard(k, &ks);
  shard(v, &vs);
  Buffers buf(c.backend);
  check_all(upload_set(&buf, c.dtype, qs, ks, vs));
  check_all(alloc_outputs(&buf, c.dtype, size_t(B * L * H * D), size_t(B * L * H)));
  check_all(dev::poison(c.backend, buf.o, buf.elems * dtype_size(c.dtype)));
  check_all(dev::poison(c.backend, buf.lse, buf.lse_elems * 4));
  for (int i = 0; i < o.repeat; ++i) {
    if (i > 0) {  // stream-ordered after the forward still in flight: the last forward must write everything
      OR_ABORT(dev::poison(c.backend, buf.o, buf.elems * dtype_size(c.dtype)));
      OR_ABORT(dev::poison(c.backend, buf.lse, buf.lse_elems * 4));
    }
    OR_ABORT(ctx.forward(s, buf.q[0], buf.k[0], buf.v[0], buf.o, buf.lse));
  }
  OR_ABORT(ctx.synchronize());  // under the timeout, before anything waits on the stream
  OR_ABORT(dev::synchronize(c.backend));
  std::vector<char> raw(buf.elems * dtype_size(c.dtype));
  OR_ABORT(dev::download(c.backend, raw.data(), buf.o, raw.size()));
  std::vector<float> out, lse(buf.lse_elems);
  decode(c.dtype, raw.data(), buf.elems, &out);
  OR_ABORT(dev::download(c.backend, lse.data(), buf.lse, lse.size() * 4));

  std::vector<double> ro(size_t(B * L * H * D)), rl(size_t(B * L * H));
  kern::RefOptions ref_opt;  // the ranks of this host share its cores
  ref_opt.threads = int(std::max(1u, std::thread::hardware_concurrency() / unsigned(g_world)));
  kern::reference_forward(ref_problem(c), B, N, q.data(), k.data(), v.data(), g_rank * L, (g_rank + 1) * L, ro.data(),
                          rl.data(), ref_opt);
  kern::ErrorAccumulator eo;
  kern::LseErrorAccumulator el;
  double ref_rms = 0;
  for (double x : ro) ref_rms += x * x;
  ref_rms = std::sqrt(ref_rms / double(std::max<size_t>(1, ro.size())));
  const kern::Tolerance tol = kern::spec_tolerance(int(c.dtype), c.backend == Backend::cuda);
  int64_t wrong = 0;
  for (size_t i = 0; i < ro.size(); ++i) {
    eo.add(out[i], ro[i]);
    if (!std::isfinite(out[i]) || std::fabs(out[i] - ro[i]) > 16 * tol.o * std::max(ref_rms, 1e-30)) ++wrong;
  }
  double lse_ratio = 0;  // max over entries of |error| / bound (bound: kern::lse_bound)
  for (size_t i = 0; i < rl.size(); ++i) {
    kern::LseErrorAccumulator one;
    one.add(lse[i], rl[i]);
    el.add(lse[i], rl[i]);
    const double r = one.max_abs / kern::lse_bound(tol.lse, std::isfinite(rl[i]) ? rl[i] : 0.0);
    lse_ratio = std::isnan(r) ? INFINITY : std::max(lse_ratio, r);
    if (!(r <= 1.0)) ++wrong;
  }
  const double oerr = eo.rel_l2(), lerr = el.max_abs;
  const bool ok = oerr <= tol.o && lse_ratio <= 1.0 && wrong == 0;
  char line[256];
  std::snprintf(line, sizeof(line), "%6d %10lld %14.3e %14.3e %10lld %s\n", g_rank, (long long)L, oerr, lerr,
                (long long)wrong, ok ? "ok" : "WRONG");
  auto lines = gather_lines(line);
  double worst[2] = {std::isnan(oerr) ? INFINITY : oerr, std::isnan(lerr) ? INFINITY : lerr};
  int64_t bad[2] = {ok ? 0 : 1, wrong};
  MPI_Allreduce(MPI_IN_PLACE, worst, 2, MPI_DOUBLE, MPI_MAX, g_comm);
  MPI_Allreduce(MPI_IN_PLACE, bad, 2, MPI_INT64_T, MPI_SUM, g_comm);
  const Stats& st = ctx.stats();
  int64_t bytes[2] = {st.last_bytes_sent, st.last_bytes_ideal};
  MPI_Allreduce(MPI_IN_PLACE, bytes, 2, MPI_INT64_T, MPI_MAX, g_comm);
  if (g_rank == 0) {
    std::printf("#  rank     tokens  O_rel_l2_err    LSE_abs_err     #wrong\n");
    for (auto& l : lines) std::printf("%s", l.c_str());
    std::printf("# tolerance: O relative L2 %.1e, LSE absolute max(%.1e, %.0e*|LSE|) (docs/SPEC.md, %s on %s); bytes sent per rank %lld (ideal %lld)\n",
                tol.o, tol.lse, kern::kLseRelFloor, to_string(c.dtype), to_string(c.backend), (long long)bytes[0], (long long)bytes[1]);
    std::printf("verify: %d ranks, %lld tokens, max O err %.3e, max LSE err %.3e, #wrong %lld: %s\n", g_world,
                (long long)N, worst[0], worst[1], (long long)bad[1], bad[0] == 0 ? "OK" : "FAILED");
  }
  if (g_rank == 0 && !o.json.empty()) {
    std::ostringstream j;
    j << json_common(o, c, s) << "  \"seed\": " << seed << ",\n  \"o_rel_l2_max\": " << worst[0]
      << ",\n  \"lse_abs_max\": " << worst[1] << ",\n  \"wrong\": " << bad[1] << ",\n  \"ok\": "
      << (bad[0] == 0 ? "true" : "false") << "\n";
    write_json(o.json, j.str());
  }
  return bad[0] == 0 ? 0 : 1;
}


// Weak scaling (tokens per rank fixed at --seq / ranks) and strong scaling
// (--seq total) over 1, 2, 4, ... ranks and all of them: each measurement runs
// on a sub-communicator of the first g ranks while the others wait.
int cmd_scaling(const Options& o) {
  const int world = g_world, me = g_rank;
  std::vector<int> counts;
  for (int g = 1; g < world; g *= 2) counts.push_back(g);
  counts.push_back(world);
  const int64_t per_rank = o.seq / world;
  struct Row {
    std::string mode;
    int ranks;
    int64_t tokens;
    Summary r;
  };
  std::vector<Row> rows;
  for (const char* mode : {"weak", "strong"}) {
    for (int g : counts) {
      const int64_t seq = std::string(mode) == "weak" ? per_rank * g : o.seq;
      MPI_Comm sub = MPI_COMM_NULL;
      MPI_Comm_split(MPI_COMM_WORLD, me < g ? 0 : MPI_UNDEFINED, me, &sub);
      if (sub != MPI_COMM_NULL) {
        g_comm = sub;
        g_world = g;
        Options so = o;
        so.seq = seq;
        Config c;
        check_all(cli::make_config(so, &c));
        check_all(validate_shape(c, Shape{so.batch, seq}, g));
        std::unique_ptr<Context> ctx;
        Status st = Context::create(c, sub, &ctx);
        if (!st.ok()) fail(st);
        Shape s{so.batch, seq};
        {
          Buffers buf(c.backend);
          make_inputs(so, c, &s, &buf, 1);
          const int64_t L = seq / g;
          check_all(alloc_outputs(&buf, c.dtype, size_t(s.batch * L * c.heads * c.head_dim), size_t(s.batch * L * c.heads)));
          Timing t = time_forwards(*ctx, s, buf, o.warmup, o.iters, false);
          Summary r = summarize(*ctx, s, t);
          if (me == 0) {
            rows.push_back({mode, g, seq, r});
            std::fprintf(stderr, "[ringattn] scaling %s: %d ranks, %lld tokens: %.3f ms\n", mode, g, (long long)seq, r.ms);
          }
        }
        ctx.reset();
        MPI_Comm_free(&sub);
        g_comm = MPI_COMM_WORLD;
        g_world = world;
      }
      MPI_Barrier(MPI_COMM_WORLD);
    }
  }
  if (me != 0) return 0;
  std::printf("# ringattn bench --scaling: config %s, %lld tokens per rank (weak) / %lld total (strong), up to %d ranks\n",
              config_label(o).c_str(), (long long)per_rank, (long long)o.seq, world);
  std::printf("# %-6s %6s %10s %11s %11s %12s %14s %14s %10s %11s\n", "mode", "ranks", "tokens", "median_ms",
              "TFLOP/s", "TF/s/rank", "bytes/rank", "ideal/rank", "exposed%", "efficiency");
  std::ostringstream j;
  j << "  \"command\": \"bench --scaling\",\n  \"config\": \"" << config_label(o) << "\",\n  \"backend\": \"" << o.backend
    << "\",\n  \"device\": \"" << dev::device_name(o.backend == "cuda" ? Backend::cuda : Backend::cpu) << "\",\n  \"rows\": [\n";
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& w = rows[i];
    const Row& base = rows[w.mode == "weak" ? 0 : counts.size()];
    const double tf = w.r.flops / (w.r.ms * 1e-3) / 1e12;
    const double eff = w.mode == "weak" ? base.r.ms / w.r.ms : base.r.ms / (double(w.ranks) * w.r.ms);
    const double exposed = 100.0 * w.r.exposed_ms_max / w.r.ms;
    std::printf("  %-6s %6d %10lld %11.3f %11.3f %12.3f %14lld %14lld %10.2f %11.3f\n", w.mode.c_str(), w.ranks,
                (long long)w.tokens, w.r.ms, tf, tf / w.ranks, (long long)w.r.bytes_sent_max, (long long)w.r.bytes_ideal_max,
                exposed, eff);
    j << "    {\"mode\": \"" << w.mode << "\", \"ranks\": " << w.ranks << ", \"tokens\": " << w.tokens
      << ", \"median_ms\": " << w.r.ms << ", \"tflops\": " << tf << ", \"bytes_per_rank\": " << w.r.bytes_sent_max
      << ", \"ideal_per_rank\": " << w.r.bytes_ideal_max << ", \"exposed_pct\": " << exposed
      << ", \"efficiency\": " << eff << "}" << (i + 1 < rows.size() ? "," : "") << "\n";
  }
  j << "  ]\n";
  std::printf("# efficiency: weak = t(1)/t(g); strong = t(1)/(g*t(g)). Ranks sharing one GPU share its compute.\n");
  write_json(o.json, j.str());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  if (MPI_Init_thread(&argc, &argv, MPI_THREAD_FUNNELED, &provided) != MPI_SUCCESS) {
    std::fprintf(stderr, "ringattn: MPI_Init failed\n");
    return 1;
  }
  MPI_Comm_rank(MPI_COMM_WORLD, &g_rank);
  MPI_Comm_size(MPI_COMM_WORLD, &g_world);
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);

  Options o;
  Status st = cli::parse_options(argc - 1, argv + 1, &o);
  check_all(st);
  if (o.help) {
    if (g_rank == 0) std::printf("%s", cli::usage(o.command).c_str());
    MPI_Finalize();
    return 0;
  }
  Config cfg;
  check_all(cli::make_config(o, &cfg));
  check_all(validate_shape(cfg, Shape{o.batch, o.seq}, g_world));
  if (!o.inject_fault.empty()) setenv("RINGATTN_INJECT_FAULT", o.inject_fault.c_str(), 1);
  if (cfg.backend == Backend::cuda) {
    MPI_Comm local;
    int local_rank = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, g_rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &local_rank);
    MPI_Comm_free(&local);
    check_all(dev::select_device(local_rank));
  }
  if (o.command == "bench" && o.scaling) {
    int rc = cmd_scaling(o);
    MPI_Finalize();
    return rc;
  }
  std::unique_ptr<Context> ctx;
  st = Context::create(cfg, MPI_COMM_WORLD, &ctx);
  if (!st.ok()) fail(st, st.code() == StatusCode::kInvalidArgument ? 2 : 1);
  int rc = o.command == "verify" ? cmd_verify(o, *ctx) : cmd_run_or_bench(o, *ctx);
  ctx.reset();
  MPI_Finalize();
  return rc;
}

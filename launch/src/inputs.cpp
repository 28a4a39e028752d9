#include "inputs.hpp"

#include <cmath>

#include "convert.hpp"
#include "npy.hpp"
#include "ringattn/device.hpp"

namespace ringattn::cli {
namespace {

// Rows [t0, t1) of every batch element of one synthetic tensor (B x N x H x D).
void synth_rows(const Problem& p, const Source& src, kern::SynthTensor which, int64_t t0, int64_t t1, float* out) {
  const int64_t N = p.shape.seq, H = p.cfg.heads, D = p.cfg.head_dim;
  size_t i = 0;
  for (int64_t b = 0; b < p.shape.batch; ++b)
    for (int64_t t = t0; t < t1; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d)
          out[i++] = float(kern::synth_value(src.seed, which, kern::bnhd_index(b, t, h, d, N, H, D), src.amplitude));
}

// A value the run's dtype cannot hold: NaN, Inf, or beyond its largest finite value.
bool representable(DType dt, float x) {
  if (!std::isfinite(x)) return false;
  if (dt == DType::f16) return std::fabs(x) < 65520.0f;  // rounds to 65504 or below
  if (dt == DType::bf16) return std::fabs(x) < 3.3961e38f;
  return true;
}

// The first element of this rank's shard (B x L x H x D) the dtype cannot hold.
Status check_finite(const Problem& p, const std::string& flag, const std::string& path, const std::vector<float>& x) {
  const int64_t L = p.rows(), H = p.cfg.heads, D = p.cfg.head_dim;
  for (size_t i = 0; i < x.size(); ++i) {
    if (representable(p.cfg.dtype, x[i])) continue;
    const int64_t d = int64_t(i) % D, h = int64_t(i) / D % H, t = int64_t(i) / (D * H) % L + p.group.rank * L,
                  b = int64_t(i) / (D * H * L);
    char where[160];
    std::snprintf(where, sizeof(where), "holds %g at [b=%lld, t=%lld, h=%lld, d=%lld]", double(x[i]), (long long)b,
                  (long long)t, (long long)h, (long long)d);
    return InvalidArgument(flag + " '" + path + "' " + where + (std::isfinite(x[i]) ? std::string(", beyond the range of ") + to_string(p.cfg.dtype) : "") +
                           " (inputs must be finite; --allow-nonfinite accepts them)");
  }
  return Status::Ok();
}

// This rank's shard of a (B, N, H, D) or (N, H, D) .npy file whose shape shape_from_files checked.
Status read_shard(const Problem& p, const std::string& path, std::vector<float>* out) {
  npy::Header h;
  RINGATTN_RETURN_IF_ERROR(npy::read_header(path, &h));
  const int64_t N = p.shape.seq, L = p.rows(), row = p.cfg.heads * p.cfg.head_dim;
  out->resize(size_t(p.shape.batch * L * row));
  for (int64_t b = 0; b < p.shape.batch; ++b)
    RINGATTN_RETURN_IF_ERROR(npy::read_floats(path, h, (b * N + p.group.rank * L) * row, L * row, out->data() + b * L * row));
  return Status::Ok();
}

// (B, N, H, D) of a header: a 3-d file is (N, H, D) with B = 1.
Status file_dims(const std::string& path, npy::Header* h, int64_t dims[4]) {
  RINGATTN_RETURN_IF_ERROR(npy::read_header(path, h));
  if (h->shape.size() != 3 && h->shape.size() != 4)
    return InvalidArgument("'" + path + "' has shape " + h->shape_text() + " (allowed: (B, N, H, D) or (N, H, D))");
  const size_t skip = 4 - h->shape.size();
  for (size_t i = 0; i < 4; ++i) dims[i] = i < skip ? 1 : h->shape[i - skip];
  return Status::Ok();
}

}  // namespace

Status shape_from_files(Options* o) {
  if (o->q_file.empty()) return Status::Ok();
  npy::Header hq, h;
  int64_t dims[4], other[4];
  RINGATTN_RETURN_IF_ERROR(file_dims(o->q_file, &hq, dims));
  for (const std::string* f : {&o->k_file, &o->v_file, &o->dout_file}) {
    if (f->empty()) continue;  // --dout is optional
    RINGATTN_RETURN_IF_ERROR(file_dims(*f, &h, other));
    if (!std::equal(dims, dims + 4, other))
      return InvalidArgument("'" + *f + "' has shape " + h.shape_text() + " but --q '" + o->q_file + "' has shape " +
                             hq.shape_text() + " (q, k, v and dout must have one shape)");
  }
  const char* flag[4] = {"--batch", "--seq", "--heads", "--head-dim"};
  const char* name[4] = {"B", "N", "H", "D"};
  int64_t* value[4] = {&o->batch, &o->seq, &o->heads, &o->head_dim};
  for (int i = 0; i < 4; ++i) {
    if (o->has(flag[i]) && *value[i] != dims[i])
      return InvalidArgument("'" + o->q_file + "' has shape " + hq.shape_text() + " but " + flag[i] + " " + std::to_string(*value[i]) +
                             " (the files define N, B, H and D: " + name[i] + " = " + std::to_string(dims[i]) + "; drop " +
                             flag[i] + " or give " + std::to_string(dims[i]) + ")");
    *value[i] = dims[i];
  }
  return Status::Ok();
}

Source source_of(const Options& o, uint64_t seed) {
  Source s;
  s.seed = seed;
  s.amplitude = o.amplitude;
  if (!o.q_file.empty()) s.files = {o.q_file, o.k_file, o.v_file, o.dout_file};  // "": made from the seed
  s.allow_nonfinite = o.allow_nonfinite;
  return s;
}

// Synthetic inputs made where they are used (dev::fill_synthetic: on the GPU
// for the cuda backend, milliseconds for a 1M-token shard instead of a minute
// on the host), the same bits as the host path.
bool synthetic_in_place(const Op& op, const Source& src) {
  if (!src.files.empty() || op.make_inputs != make_inputs_plain) return false;
  for (const TensorInfo& t : op.inputs)
    if (t.per_head) return false;
  return true;
}

Status make_input_sets(const Op& op, const Problem& p, const Source& src, int sets, InputSets* in) {
  for (int i = 0; i < (src.files.empty() ? sets : 1); ++i) {
    Source si = src;
    si.seed = src.seed + uint64_t(i) * 7919;
    if (synthetic_in_place(op, si)) {
      in->push_back(std::make_unique<DeviceTensors>(p.cfg.backend));
      RINGATTN_RETURN_IF_ERROR(in->back()->alloc(p, op.inputs));
      for (size_t t = 0; t < op.inputs.size(); ++t)
        RINGATTN_RETURN_IF_ERROR(dev::fill_synthetic(p.cfg.backend, p.cfg.dtype, si.seed, int(op.inputs[t].synth),
                                                     si.amplitude, p.shape.batch, p.shape.seq, p.group.rank * p.rows(),
                                                     p.rows(), p.cfg.heads, p.cfg.head_dim, in->back()->ptrs()[t]));
      continue;
    }
    HostTensors host;
    RINGATTN_RETURN_IF_ERROR(op.make_inputs(op, p, si, &host));
    in->push_back(std::make_unique<DeviceTensors>(p.cfg.backend));
    RINGATTN_RETURN_IF_ERROR(in->back()->upload(p, op.inputs, host));
  }
  return Status::Ok();
}

Status make_outputs(const Op& op, const Problem& p, DeviceTensors* out) {
  RINGATTN_RETURN_IF_ERROR(out->alloc(p, op.outputs));
  return out->poison();
}

Status make_inputs_plain(const Op& op, const Problem& p, const Source& src, HostTensors* in) {
  const std::vector<std::string> flags = {"--q", "--k", "--v", "--dout"};
  // Files, in table order (q, k, v, dout); an empty or absent one is made from the seed.
  for (size_t i = op.inputs.size(); i < src.files.size(); ++i)
    if (!src.files[i].empty())
      return InvalidArgument("'" + src.files[i] + "' (" + flags[std::min(i, flags.size() - 1)] + ") is not an input of --op " +
                             op.name);
  in->assign(op.inputs.size(), {});
  for (size_t i = 0; i < op.inputs.size(); ++i) {
    std::vector<float>& x = (*in)[i];
    if (i >= src.files.size() || src.files[i].empty()) {
      x.resize(elements(p, op.inputs[i]));
      synth_rows(p, src, op.inputs[i].synth, p.group.rank * p.rows(), (p.group.rank + 1) * p.rows(), x.data());
      continue;
    }
    const std::string flag = i < flags.size() ? flags[i] : "--" + std::string(op.inputs[i].name);
    RINGATTN_RETURN_IF_ERROR(read_shard(p, src.files[i], &x));
    if (!src.allow_nonfinite) RINGATTN_RETURN_IF_ERROR(check_finite(p, flag, src.files[i], x));
  }
  return Status::Ok();
}

std::vector<double> synth_sequence(const Problem& p, const Source& src, kern::SynthTensor which) {
  const size_t n = size_t(p.shape.batch * p.shape.seq * p.cfg.heads * p.cfg.head_dim);
  std::vector<float> x(n);
  std::vector<char> bytes(n * dtype_size(p.cfg.dtype));
  synth_rows(p, src, which, 0, p.shape.seq, x.data());
  encode(p.cfg.dtype, x.data(), n, bytes.data());
  decode(p.cfg.dtype, bytes.data(), n, x.data());
  return std::vector<double>(x.begin(), x.end());
}

DeviceTensors::~DeviceTensors() {
  for (void* ptr : ptrs_) dev::release(backend_, ptr);
}

Status DeviceTensors::alloc(const Problem& p, const std::vector<TensorInfo>& ts) {
  for (const TensorInfo& t : ts) {
    void* ptr = nullptr;
    RINGATTN_RETURN_IF_ERROR(dev::alloc(backend_, device_bytes(p, t), &ptr));
    ptrs_.push_back(ptr);
    bytes_.push_back(device_bytes(p, t));
  }
  return Status::Ok();
}

Status DeviceTensors::upload(const Problem& p, const std::vector<TensorInfo>& ts, const HostTensors& host) {
  RINGATTN_RETURN_IF_ERROR(alloc(p, ts));
  std::vector<char> bytes;
  for (size_t i = 0; i < ts.size(); ++i) {
    bytes.resize(bytes_[i]);
    encode(ts[i].per_head ? DType::f32 : p.cfg.dtype, host[i].data(), host[i].size(), bytes.data());
    RINGATTN_RETURN_IF_ERROR(dev::upload(backend_, ptrs_[i], bytes.data(), bytes.size()));
  }
  return Status::Ok();
}

Status DeviceTensors::download(const Problem& p, const std::vector<TensorInfo>& ts, HostTensors* host) const {
  host->assign(ts.size(), {});
  std::vector<char> bytes;
  for (size_t i = 0; i < ts.size(); ++i) {
    bytes.resize(bytes_[i]);
    RINGATTN_RETURN_IF_ERROR(dev::download(backend_, bytes.data(), ptrs_[i], bytes.size()));
    (*host)[i].resize(elements(p, ts[i]));
    decode(ts[i].per_head ? DType::f32 : p.cfg.dtype, bytes.data(), (*host)[i].size(), (*host)[i].data());
  }
  return Status::Ok();
}

Status DeviceTensors::poison() const {
  for (size_t i = 0; i < ptrs_.size(); ++i) RINGATTN_RETURN_IF_ERROR(dev::poison(backend_, ptrs_[i], bytes_[i]));
  return Status::Ok();
}

}  // namespace ringattn::cli

#include "ringattn/config.hpp"

#include <cerrno>
#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <sstream>

#include "plan/index_set.hpp"

namespace ringattn {

const char* status_code_name(StatusCode c) {
  switch (c) {
    case StatusCode::kOk: return "ok";
    case StatusCode::kInvalidArgument: return "invalid argument";
    case StatusCode::kMismatch: return "ranks disagree";
    case StatusCode::kUnsupported: return "unsupported";
    case StatusCode::kCommError: return "communication error";
    case StatusCode::kDeviceError: return "device error";
    case StatusCode::kTimeout: return "timeout";
    case StatusCode::kIoError: return "i/o error";
    case StatusCode::kInternal: return "internal error";
    case StatusCode::kPeerError: return "error on another rank";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (ok()) return "ok";
  return std::string(status_code_name(code_)) + ": " + message_;
}

const char* to_string(DType d) {
  switch (d) {
    case DType::f32: return "f32";
    case DType::f16: return "f16";
    case DType::bf16: return "bf16";
  }
  return "?";
}
const char* to_string(Backend b) { return b == Backend::cpu ? "cpu" : "cuda"; }
const char* to_string(Transport t) { return t == Transport::mpi ? "mpi" : "nccl"; }
const char* to_string(HeadOffsets h) { return h == HeadOffsets::interleaved ? "interleaved" : "blocked"; }

size_t dtype_size(DType d) { return d == DType::f32 ? 4 : 2; }

Status parse_dtype(const std::string& s, DType* out) {
  if (s == "f32" || s == "float32" || s == "fp32") *out = DType::f32;
  else if (s == "f16" || s == "float16" || s == "fp16") *out = DType::f16;
  else if (s == "bf16" || s == "bfloat16") *out = DType::bf16;
  else return InvalidArgument("unknown dtype '" + s + "' (allowed: f32, f16, bf16)");
  return Status::Ok();
}
Status parse_backend(const std::string& s, Backend* out) {
  if (s == "cpu") *out = Backend::cpu;
  else if (s == "cuda" || s == "gpu") *out = Backend::cuda;
  else return InvalidArgument("unknown backend '" + s + "' (allowed: cpu, cuda)");
  return Status::Ok();
}
Status parse_transport(const std::string& s, Transport* out) {
  if (s == "mpi") *out = Transport::mpi;
  else if (s == "nccl") *out = Transport::nccl;
  else return InvalidArgument("unknown transport '" + s + "' (allowed: mpi, nccl)");
  return Status::Ok();
}
Status parse_head_offsets(const std::string& s, HeadOffsets* out) {
  if (s == "interleaved") *out = HeadOffsets::interleaved;
  else if (s == "blocked") *out = HeadOffsets::blocked;
  else return InvalidArgument("unknown head-offset rule '" + s + "' (allowed: interleaved, blocked)");
  return Status::Ok();
}

static bool parse_int(const std::string& s, int64_t* v) {
  if (s.empty()) return false;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || *end != '\0') return false;
  *v = x;
  return true;
}

Status parse_branches(const std::string& s, std::vector<Branch>* out) {
  out->clear();
  if (s.empty()) return InvalidArgument("empty branch list (expected w:r[,w:r...], e.g. 2048:1,4096:2)");
  if (s.back() == ',' || s.front() == ',' || s.find(",,") != std::string::npos)
    return InvalidArgument("bad branch list '" + s + "': empty entry (expected w:r[,w:r...])");
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ',')) {
    auto colon = item.find(':');
    Branch b;
    if (colon == std::string::npos) {
      if (!parse_int(item, &b.w)) return InvalidArgument("bad branch '" + item + "' (expected w:r with integers, e.g. 4096:2)");
      b.r = 1;
    } else if (!parse_int(item.substr(0, colon), &b.w) || !parse_int(item.substr(colon + 1), &b.r)) {
      return InvalidArgument("bad branch '" + item + "' (expected w:r with integers, e.g. 4096:2)");
    }
    out->push_back(b);
  }
  return Status::Ok();
}

std::string format_branches(const std::vector<Branch>& b) {
  std::string s;
  for (size_t i = 0; i < b.size(); ++i) {
    if (i) s += ",";
    s += std::to_string(b[i].w) + ":" + std::to_string(b[i].r);
  }
  return s;
}

const std::vector<std::string>& named_config_names() {
  static const std::vector<std::string> names = {"longnet4", "longnet-paper", "geometric", "dense"};
  return names;
}

Status named_branches(const std::string& name, int64_t seq, std::vector<Branch>* out) {
  out->clear();
  if (name == "longnet4") {
    *out = {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 8}};
  } else if (name == "longnet-paper") {
    *out = {{2048, 1}, {4096, 2}, {8192, 4}, {16384, 6}, {32768, 12}};
  } else if (name == "geometric") {
    if (seq < 2048) return InvalidArgument("config 'geometric' needs --seq >= 2048 (got " + std::to_string(seq) + ")");
    for (int64_t j = 0; (2048ll << j) <= seq; ++j) out->push_back({2048ll << j, 1ll << j});
  } else if (name == "dense") {
    if (seq < 1) return InvalidArgument("config 'dense' needs --seq >= 1 (got " + std::to_string(seq) + ")");
    *out = {{seq, 1}};
  } else {
    return InvalidArgument("unknown config name '" + name + "' (allowed: longnet4, longnet-paper, geometric, dense)");
  }
  return Status::Ok();
}

int64_t head_offset(HeadOffsets rule, int64_t r, int64_t h, int64_t heads) {
  if (rule == HeadOffsets::interleaved) return h % r;
  int64_t padded = r * ((heads + r - 1) / r);  // H' = r * ceil(H / r)
  return h / (padded / r);
}

Status validate_config(const Config& c) {
  if (c.struct_size != sizeof(Config)) {
    return InvalidArgument("Config.struct_size is " + std::to_string(c.struct_size) + ", this library expects " +
                           std::to_string(sizeof(Config)) + " (rebuild against this header)");
  }
  if (c.branches.empty()) return InvalidArgument("empty branch list: give at least one branch (w, r)");
  for (size_t i = 0; i < c.branches.size(); ++i) {
    const Branch& b = c.branches[i];
    std::string where = "branch " + std::to_string(i) + " (w=" + std::to_string(b.w) + ", r=" + std::to_string(b.r) + "): ";
    if (b.w < 1) return InvalidArgument(where + "segment length w must be >= 1");
    if (b.r < 1) return InvalidArgument(where + "dilation r must be >= 1");
    if (b.r > b.w) return InvalidArgument(where + "dilation r must be <= w");
    if (b.w > (int64_t(1) << 40)) return InvalidArgument(where + "w must be <= 2^40");
  }
  if (c.heads < 1 || c.heads > 4096) return InvalidArgument("heads is " + std::to_string(c.heads) + " (allowed: 1..4096)");
  if (c.head_dim < 1 || c.head_dim > 1024) return InvalidArgument("head_dim is " + std::to_string(c.head_dim) + " (allowed: 1..1024)");
  // The kernels compute in float32: a scale must stay a normal float there
  // (a denormal or zero one would make masked logits -inf * 0 = NaN).
  if (!(c.scale >= 0.0) || !std::isfinite(c.scale) ||
      (c.scale != 0.0 && !(c.scale >= double(FLT_MIN) && c.scale <= double(FLT_MAX)))) {
    std::ostringstream v;
    v << c.scale;
    return InvalidArgument("scale is " + v.str() + " (allowed: 0 for 1/sqrt(head_dim), or a value from 1.18e-38 to 3.4e38, a normal float32)");
  }
  if (!(c.timeout_seconds > 0)) return InvalidArgument("timeout is " + std::to_string(c.timeout_seconds) + " s (allowed: > 0)");
  if (c.backend == Backend::cpu && c.transport == Transport::nccl) {
    return InvalidArgument("transport 'nccl' needs backend 'cuda' (the cpu backend uses transport 'mpi')");
  }
  if (c.backend == Backend::cuda) {
    if (c.dtype == DType::f32) return Unsupported("dtype f32 is not supported by the cuda backend (allowed: f16, bf16)");
    if (c.head_dim != 64 && c.head_dim != 128) return Unsupported("head_dim " + std::to_string(c.head_dim) + " is not supported by the cuda backend (allowed: 64, 128)");
  }
  if (c.cache.promote_after_hits < 0) return InvalidArgument("cache promotion threshold is " + std::to_string(c.cache.promote_after_hits) + " (allowed: >= 0)");
  if (c.cache.device_budget_bytes < 0 || c.cache.host_budget_bytes < 0) return InvalidArgument("cache budgets must be >= 0 bytes");
  return Status::Ok();
}

Status validate_shape(const Config& c, const Shape& s, int world_size) {
  if (s.batch < 1) return InvalidArgument("batch is " + std::to_string(s.batch) + " (allowed: >= 1)");
  if (s.seq < 1) return InvalidArgument("seq (N) is " + std::to_string(s.seq) + " (allowed: >= 1)");
  if (s.seq % world_size != 0) {
    return InvalidArgument("seq (N) = " + std::to_string(s.seq) + " is not divisible by the number of ranks " +
                           std::to_string(world_size) + " (allowed: a multiple of " + std::to_string(world_size) + ")");
  }
  if (s.seq > (int64_t(1) << 40)) return InvalidArgument("seq (N) = " + std::to_string(s.seq) + " (allowed: <= 2^40)");
  int64_t local_rows = s.seq / world_size;
  if (local_rows * c.heads > (int64_t(1) << 31) - 1) {
    return InvalidArgument("seq/ranks * heads = " + std::to_string(local_rows * c.heads) + " exceeds 2^31-1 rows per shard; use more ranks");
  }
  return Status::Ok();
}

double useful_flops(const Config& c, const Shape& s) {
  double total = 0;
  for (const Branch& b : c.branches) {
    int64_t segments = (s.seq + b.w - 1) / b.w;
    for (int64_t h = 0; h < c.heads; ++h) {
      int64_t o = head_offset(c.head_offsets, b.r, h, c.heads);
      for (int64_t seg = 0; seg < segments; ++seg) {
        double n = double(index_set(b, s.seq, o, seg).count);
        total += c.causal ? 2.0 * n * (n + 1) * c.head_dim : 4.0 * n * n * c.head_dim;
      }
    }
  }
  return total * double(s.batch);
}

static uint64_t fnv(uint64_t h, uint64_t v) {
  for (int i = 0; i < 8; ++i) {
    h ^= (v >> (8 * i)) & 0xff;
    h *= 1099511628211ull;
  }
  return h;
}

uint64_t config_hash(const Config& c) {
  uint64_t h = 1469598103934665603ull;
  h = fnv(h, c.branches.size());
  for (const Branch& b : c.branches) h = fnv(fnv(h, uint64_t(b.w)), uint64_t(b.r));
  h = fnv(h, c.causal);
  uint64_t sb;
  static_assert(sizeof(double) == 8, "");
  std::memcpy(&sb, &c.scale, 8);
  h = fnv(h, sb);
  h = fnv(h, uint64_t(c.head_offsets));
  h = fnv(h, uint64_t(c.dtype));
  h = fnv(h, uint64_t(c.backend));
  h = fnv(h, uint64_t(c.transport));
  h = fnv(h, uint64_t(c.heads));
  h = fnv(h, uint64_t(c.head_dim));
  h = fnv(h, c.deterministic);
  return h;
}

}  // namespace ringattn

// What to compute: branches, causality, head-offset rule, element type,
// backend and transport. A Config is fixed for the life of a Context; the
// per-call Shape (batch, total tokens) may change from call to call.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ringattn/status.hpp"

namespace ringattn {

enum class DType : int { f32 = 0, f16 = 1, bf16 = 2 };
enum class Backend : int { cpu = 0, cuda = 1 };
enum class Transport : int { mpi = 0, nccl = 1 };
enum class HeadOffsets : int { interleaved = 0, blocked = 1 };

// One LongNet branch: segment length w and dilation rate r (1 <= r <= w).
struct Branch {
  int64_t w = 0;
  int64_t r = 1;
};

// The per-call shape: B x N x H x D globally; each of P ranks holds N/P tokens.
struct Shape {
  int64_t batch = 1;
  int64_t seq = 0;  // N, total tokens over all ranks
};

struct CacheOptions {
  bool enabled = true;
  int64_t device_budget_bytes = 256ll << 20;
  int64_t host_budget_bytes = 1ll << 30;
  int promote_after_hits = 3;
};

struct Config {
  uint32_t struct_size = sizeof(Config);  // lets the struct grow (nccl habit)
  uint32_t version = 1;
  std::vector<Branch> branches;
  bool causal = false;
  double scale = 0.0;  // 0 means 1/sqrt(head_dim)
  HeadOffsets head_offsets = HeadOffsets::interleaved;
  DType dtype = DType::f32;
  Backend backend = Backend::cpu;
  Transport transport = Transport::mpi;
  int64_t heads = 0;
  int64_t head_dim = 0;
  double timeout_seconds = 60.0;  // a peer silent this long fails the call
  // The backward's reruns give the same bits (true, the default: on cuda dQ
  // comes from its own pass), or may differ in rounding (false: on cuda dQ is
  // summed with float32 atomics inside the dK/dV kernel, about 1.1x faster,
  // the same device memory). The cpu backend is always
  // deterministic. RINGATTN_BWD_DQ=pass|atomic overrides it for A/B runs.
  bool deterministic = true;
  CacheOptions cache;
  std::vector<Shape> pregenerate;  // plans built at context creation
};

const char* to_string(DType d);
const char* to_string(Backend b);
const char* to_string(Transport t);
const char* to_string(HeadOffsets h);
size_t dtype_size(DType d);

// Offset o_i(h) of head h for a branch of dilation r (docs/SPEC.md).
int64_t head_offset(HeadOffsets rule, int64_t r, int64_t h, int64_t heads);

// Checks of the config alone (branch values, heads, head_dim, scale) and of
// a shape against a world size. Messages name the value and the allowed range.
Status validate_config(const Config& c);
Status validate_shape(const Config& c, const Shape& s, int world_size);

// Stable 64-bit hash of everything ranks must agree on.
uint64_t config_hash(const Config& c);

}  // namespace ringattn

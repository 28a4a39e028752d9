// The SPEC cases of the float32 CPU path, shared by its forward
// (tests/unit/cpu_path_test.cpp) and backward (tests/unit/cpu_backward_test.cpp)
// tests so that both cover the same features: dense, longnet-like scaled,
// r not dividing w, geometric, causal, blocked offsets, short last segments,
// tokens no branch selects, a head dim that is not a multiple of 8.
#pragma once
#include <cstdint>
#include <ostream>
#include <vector>

#include "ringattn/config.hpp"

namespace ringattn::test {

struct SpecCase {
  const char* name;
  std::vector<Branch> branches;
  int64_t N, B, H, D;
  bool causal;
  HeadOffsets offsets;
};

inline std::ostream& operator<<(std::ostream& os, const SpecCase& c) { return os << c.name; }

inline const std::vector<SpecCase>& spec_cases() {
  static const std::vector<SpecCase> cases = {
      {"longnet4_scaled", {{128, 1}, {256, 2}, {512, 4}, {1024, 8}}, 2048, 1, 4, 32, false, HeadOffsets::interleaved},
      {"longnet4_scaled_causal", {{128, 1}, {256, 2}, {512, 4}, {1024, 8}}, 2048, 2, 2, 16, true, HeadOffsets::interleaved},
      {"geometric_scaled", {{64, 1}, {128, 2}, {256, 4}, {512, 8}, {1024, 16}}, 1536, 1, 3, 32, false, HeadOffsets::interleaved},
      {"longnet_paper_scaled_blocked", {{64, 1}, {128, 2}, {256, 4}, {512, 6}, {1024, 12}}, 1200, 1, 5, 16, false, HeadOffsets::blocked},
      {"r_not_dividing_w_short_last", {{300, 3}, {700, 7}, {100, 6}}, 1500, 1, 4, 16, false, HeadOffsets::interleaved},
      {"no_branch_selects", {{96, 4}, {160, 8}}, 960, 1, 2, 16, false, HeadOffsets::interleaved},
      {"dense", {{768, 1}}, 768, 1, 2, 32, false, HeadOffsets::interleaved},
      {"dense_causal", {{768, 1}}, 768, 1, 2, 16, true, HeadOffsets::interleaved},
      {"blocked_causal_mixed", {{100, 1}, {333, 3}, {1000, 7}}, 1440, 2, 5, 8, true, HeadOffsets::blocked},
      {"head_dim_not_multiple_of_8", {{64, 1}, {256, 4}}, 512, 1, 3, 13, true, HeadOffsets::interleaved},
  };
  return cases;
}

// Short segments that pack (PlanOptions::pack_segments) beside ones that do
// not: the packed-vs-unpacked tests of the CPU path's forward and backward.
inline const std::vector<SpecCase>& packed_segment_cases() {
  static const std::vector<SpecCase> cases = {
      {"w64_r1", {{64, 1}}, 1440, 1, 2, 16, false, HeadOffsets::interleaved},
      {"w64_r1_w512_r8", {{64, 1}, {512, 8}}, 1536, 2, 2, 16, false, HeadOffsets::interleaved},
      {"w64_r1_w512_r8_causal", {{64, 1}, {512, 8}}, 3072, 2, 3, 16, true, HeadOffsets::interleaved},
      {"w128_r4_w32_r1_unpackable_blocked_causal", {{128, 4}, {32, 1}, {100, 3}}, 1440, 1, 5, 8, true, HeadOffsets::blocked},
      {"w8_r8_w64_r2", {{8, 8}, {64, 2}}, 960, 1, 3, 8, false, HeadOffsets::interleaved},
  };
  return cases;
}

}  // namespace ringattn::test

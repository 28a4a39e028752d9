// Counting work: useful_flops() and the planner's local_flops against a
// brute count of (query, key) pairs from SPEC.md, and the closed forms of
// tile_visible_keys / tile_visible_pairs against loops.
#include <gtest/gtest.h>

#include <random>

#include "ringattn/names.hpp"
#include "common/spec_brute.hpp"
#include "common/test_util.hpp"
#include "kernels/common/tile.hpp"
#include "plan/plan.hpp"

namespace ringattn::test {
namespace {

// Number of (branch, head, query t, key u in A_i(t, h)) pairs, from the definition.
int64_t brute_pairs(const Config& c, int64_t N) {
  int64_t n = 0;
  std::vector<int64_t> keys;
  for (int64_t t = 0; t < N; ++t)
    for (int64_t h = 0; h < c.heads; ++h) {
      spec_keys_segment(c, N, h, t, &keys);
      n += int64_t(keys.size());
    }
  return n;
}

// SPEC's own formula, with |I| counted token by token.
double brute_formula(const Config& c, int64_t B, int64_t N) {
  double total = 0;
  for (const Branch& b : c.branches)
    for (int64_t h = 0; h < c.heads; ++h)
      for (int64_t s = 0; s * b.w < N; ++s) {
        double n = 0;
        for (int64_t t = s * b.w; t < std::min(N, (s + 1) * b.w); ++t) n += spec_selected(c, b, h, t);
        total += c.causal ? 2.0 * n * (n + 1) * double(c.head_dim) : 4.0 * n * n * double(c.head_dim);
      }
  return total * double(B);
}

TEST(UsefulFlops, MatchesBruteCount) {
  const std::vector<std::pair<std::vector<Branch>, int64_t>> cases = {
      {{{64, 1}, {128, 2}, {256, 4}, {512, 8}}, 1024},
      {{{64, 1}, {128, 2}, {256, 4}, {512, 6}, {1024, 12}}, 1200},
      {{{300, 3}, {700, 7}, {100, 6}}, 1500},
      {{{96, 4}, {160, 8}}, 960},
      {{{500, 1}}, 500},
  };
  for (const auto& cs : cases)
    for (bool causal : {false, true})
      for (HeadOffsets ho : {HeadOffsets::interleaved, HeadOffsets::blocked}) {
        Config c = make_config(cs.first, 5, 24, causal, ho);
        const int64_t N = cs.second;
        SCOPED_TRACE(describe(c, N));
        Shape s;
        s.batch = 3;
        s.seq = N;
        const double want = 4.0 * double(c.head_dim) * double(brute_pairs(c, N)) * double(s.batch);
        EXPECT_DOUBLE_EQ(useful_flops(c, s), want);
        EXPECT_DOUBLE_EQ(useful_flops(c, s), brute_formula(c, s.batch, N));
        // The plans of all ranks together count the same work (local_flops is per batch element).
        for (int P : {1, 2, 3, 4}) {
          if (N % P) continue;
          double sum = 0;
          s.batch = 1;
          for (int p = 0; p < P; ++p) sum += build_plan(c, s, P, p).local_flops;
          EXPECT_DOUBLE_EQ(sum, want / 3.0) << "P=" << P;
          s.batch = 3;
        }
      }
}

TEST(TileCounts, VisiblePairsMatchLoop) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int64_t> idx(0, 80), cnt(1, 50);
  for (int iter = 0; iter < 20000; ++iter) {
    kern::Tile t{};
    t.q_idx0 = idx(g);
    t.k_idx0 = idx(g);
    t.q_count = int32_t(cnt(g));
    t.k_count = int32_t(cnt(g));
    t.q_stride = t.k_stride = 1;
    for (bool causal : {false, true}) {
      int64_t total = 0;
      for (int64_t i = 0; i < t.q_count; ++i) {
        int64_t n = 0;
        for (int64_t j = 0; j < t.k_count; ++j) n += (!causal || t.k_idx0 + j <= t.q_idx0 + i);
        // Visible keys are a prefix: the kernel loops j < tile_visible_keys.
        ASSERT_EQ(kern::tile_visible_keys(t, i, causal), n)
            << "q_idx0=" << t.q_idx0 << " k_idx0=" << t.k_idx0 << " K=" << t.k_count << " i=" << i << " causal=" << causal;
        total += n;
      }
      ASSERT_EQ(kern::tile_visible_pairs(t, causal), total)
          << "q_idx0=" << t.q_idx0 << " k_idx0=" << t.k_idx0 << " Q=" << t.q_count << " K=" << t.k_count
          << " causal=" << causal;
    }
  }
}

// Packed segments (seg_len = c > 0): key j is visible to query i iff j / c
// == i / c, besides j < k_count and causality; the visible keys of a query
// are then a run [j0, j1) (tile_visible_range), and tile_visible_pairs counts
// the diagonal blocks.
TEST(TileCounts, PackedSegmentsMatchLoop) {
  const uint64_t seed = fresh_seed();
  SCOPED_TRACE("seed=" + std::to_string(seed));
  std::mt19937_64 g(seed);
  std::uniform_int_distribution<int64_t> idx(0, 80), cnt(1, 130), seg(1, 70);
  for (int iter = 0; iter < 5000; ++iter) {
    kern::Tile t{};
    const bool planner_shape = iter % 2 == 0;  // what the planner makes: whole segments from index 0
    t.seg_len = int32_t(seg(g));
    if (planner_shape) {
      t.q_count = t.k_count = int32_t(t.seg_len * (1 + cnt(g) % 8));
    } else {
      t.q_idx0 = idx(g);
      t.k_idx0 = idx(g);
      t.q_count = int32_t(cnt(g));
      t.k_count = int32_t(cnt(g));
    }
    t.q_stride = t.k_stride = 1;
    for (bool causal : {false, true}) {
      int64_t total = 0;
      for (int64_t i = 0; i < t.q_count; ++i) {
        int64_t n = 0, first = -1, last = -1;
        for (int64_t j = 0; j < t.k_count; ++j) {
          const bool vis = j / t.seg_len == i / t.seg_len && (!causal || t.k_idx0 + j <= t.q_idx0 + i);
          n += vis;
          if (vis && first < 0) first = j;
          if (vis) last = j;
        }
        int64_t j0, j1;
        kern::tile_visible_range(t, i, causal, &j0, &j1);
        ASSERT_EQ(j1 - j0, n) << "seg_len=" << t.seg_len << " q_idx0=" << t.q_idx0 << " k_idx0=" << t.k_idx0
                              << " K=" << t.k_count << " i=" << i << " causal=" << causal;
        if (n > 0) {
          ASSERT_EQ(j0, first) << "i=" << i;
          ASSERT_EQ(j1, last + 1) << "i=" << i;
        }
        ASSERT_EQ(kern::tile_visible_keys(t, i, causal), n);
        total += n;
      }
      ASSERT_EQ(kern::tile_visible_pairs(t, causal), total)
          << "seg_len=" << t.seg_len << " q_idx0=" << t.q_idx0 << " k_idx0=" << t.k_idx0 << " Q=" << t.q_count
          << " K=" << t.k_count << " causal=" << causal;
      if (planner_shape) {
        const int64_t m = t.q_count / t.seg_len, c = t.seg_len;
        EXPECT_EQ(total, causal ? m * c * (c + 1) / 2 : m * c * c);
      }
    }
  }
}

TEST(TileCounts, EdgeCases) {
  kern::Tile t{};
  t.q_count = 4;
  t.k_count = 4;
  t.q_idx0 = 0;
  t.k_idx0 = 100;  // every key after every query
  EXPECT_EQ(kern::tile_visible_pairs(t, true), 0);
  EXPECT_EQ(kern::tile_visible_pairs(t, false), 16);
  t.q_idx0 = 100;
  t.k_idx0 = 0;  // every key before every query
  EXPECT_EQ(kern::tile_visible_pairs(t, true), 16);
  t.q_idx0 = t.k_idx0 = 7;  // diagonal block
  EXPECT_EQ(kern::tile_visible_pairs(t, true), 10);
  t.q_count = 1;
  t.k_count = 1;
  EXPECT_EQ(kern::tile_visible_pairs(t, true), 1);
}

}  // namespace
}  // namespace ringattn::test

// The planner against brute-force enumerations written from SPEC.md:
//  - needed_rows(dst, src) is exactly the set of (head, key) rows of src's
//    shard that some query of dst's shard attends to, head by head;
//  - each plan's steps send and receive exactly those rows, once, to and from
//    the ring peers the schedule names;
//  - expanding every tile of every rank gives exactly the multiset of
//    (query, head, key) pairs of SPEC.md (a key two branches select twice).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "ringattn/names.hpp"
#include "common/spec_brute.hpp"
#include "common/test_util.hpp"
#include "kernels/common/tile.hpp"
#include "plan/plan.hpp"

namespace ringattn::test {
namespace {

struct PlanCase {
  const char* name;
  std::vector<Branch> branches;
  int64_t N, H;
  bool causal;
  HeadOffsets offsets;
};
std::ostream& operator<<(std::ostream& os, const PlanCase& c) { return os << c.name; }

// The named config itself (checked against SPEC in config_test.cpp); empty on error.
std::vector<Branch> named(const char* name, int64_t N) {
  std::vector<Branch> b;
  if (!named_branches(name, N, &b).ok()) b.clear();
  return b;
}

// N is a multiple of 24, so every P in {2, 3, 4, 8} divides it.
const PlanCase kPlanCases[] = {
    {"geometric_scaled", geometric_scaled(64, 1536), 1536, 3, false, HeadOffsets::interleaved},
    {"geometric_scaled_causal", geometric_scaled(64, 1536), 1536, 3, true, HeadOffsets::interleaved},
    {"geometric_named_6144", named("geometric", 6144), 6144, 2, false, HeadOffsets::interleaved},
    // longnet-paper / 32; N = 1200: shards of 600, 400, 300, 150 tokens are no multiple of w.
    {"longnet_paper_scaled", {{64, 1}, {128, 2}, {256, 4}, {512, 6}, {1024, 12}}, 1200, 4, false, HeadOffsets::interleaved},
    {"longnet_paper_scaled_blocked_causal", {{64, 1}, {128, 2}, {256, 4}, {512, 6}, {1024, 12}}, 1200, 5, true, HeadOffsets::blocked},
    {"longnet4_scaled_shards_straddle", {{96, 1}, {192, 2}, {384, 4}, {768, 8}}, 1320, 4, false, HeadOffsets::interleaved},
    {"r_not_dividing_w", {{300, 3}, {700, 7}, {100, 6}}, 1488, 5, false, HeadOffsets::interleaved},
    {"sparse_no_branch_selects", {{96, 4}, {240, 8}}, 960, 2, false, HeadOffsets::blocked},
    {"dense", {{480, 1}}, 480, 2, false, HeadOffsets::interleaved},
    {"dense_causal", {{480, 1}}, 480, 2, true, HeadOffsets::interleaved},
};

class Planner : public ::testing::TestWithParam<PlanCase> {
 protected:
  Config config() const {
    const PlanCase& p = GetParam();
    return make_config(p.branches, p.H, 16, p.causal, p.offsets);
  }
};

TEST_P(Planner, NeededRowsMatchBruteForce) {
  const Config c = config();
  const int64_t N = GetParam().N, H = c.heads;
  ASSERT_FALSE(c.branches.empty());
  for (int P : {2, 3, 4, 8}) {
    ASSERT_EQ(N % P, 0);
    SCOPED_TRACE(describe(c, N) + " P=" + std::to_string(P));
    const int64_t L = N / P;
    const auto need = spec_brute_need(c, N, P);
    int64_t total = 0;
    for (int dst = 0; dst < P; ++dst)
      for (int src = 0; src < P; ++src) {
        if (dst == src) continue;
        SCOPED_TRACE("dst=" + std::to_string(dst) + " src=" + std::to_string(src));
        const RowList rl = needed_rows(c, N, P, dst, src);
        const int64_t want = spec_need_count(need[size_t(dst)], N, H, L, src);
        total += want;
        EXPECT_EQ(int64_t(rl.rows.size()), want);
        EXPECT_EQ(rl.peer, src);
        ASSERT_EQ(int64_t(rl.head_prefix.size()), H + 1);
        EXPECT_EQ(rl.head_prefix.front(), 0);
        EXPECT_EQ(rl.head_prefix.back(), int32_t(rl.rows.size()));
        for (int64_t h = 0; h < H; ++h) {
          std::vector<int32_t> got(rl.rows.begin() + rl.head_prefix[size_t(h)],
                                   rl.rows.begin() + rl.head_prefix[size_t(h + 1)]);
          std::vector<int32_t> brute;
          for (int64_t u = int64_t(src) * L; u < int64_t(src + 1) * L; ++u)
            if (need[size_t(dst)][size_t(h * N + u)]) brute.push_back(int32_t(u - int64_t(src) * L));
          EXPECT_EQ(got, brute) << "head " << h;
        }
      }
    if (std::string(GetParam().name).rfind("dense", 0) != 0 && !c.causal) {
      // A useful guard: the dilated configs must move strictly less than everything.
      EXPECT_LT(total, int64_t(P - 1) * N * H) << "every row of every shard travels";
    }
  }
}

TEST_P(Planner, StepsSendExactlyTheNeededRows) {
  const Config c = config();
  const int64_t N = GetParam().N, H = c.heads;
  Shape s;
  s.batch = 2;
  s.seq = N;
  for (int P : {2, 3, 4, 8}) {
    SCOPED_TRACE(describe(c, N) + " P=" + std::to_string(P));
    const int64_t L = N / P;
    const auto need = spec_brute_need(c, N, P);
    for (int rank = 0; rank < P; ++rank) {
      SCOPED_TRACE("rank=" + std::to_string(rank));
      const Plan plan = build_plan(c, s, P, rank);
      EXPECT_EQ(plan.local_rows, L);
      int64_t want_recv = 0;
      for (int src = 0; src < P; ++src)
        if (src != rank) want_recv += spec_need_count(need[size_t(rank)], N, H, L, src);
      EXPECT_EQ(plan.rows_sent(), spec_rows_sent(need, N, H, P, rank));
      EXPECT_EQ(plan.rows_received(), want_recv);
      std::set<int> seen;
      for (const PlanStep& st : plan.steps) {
        ASSERT_GE(st.step, 1);
        ASSERT_LT(st.step, P);
        EXPECT_TRUE(seen.insert(st.step).second) << "step " << st.step << " twice";
        const int dst = (rank + st.step) % P, src = (rank - st.step + P) % P;
        EXPECT_FALSE(st.send.empty() && st.recv.empty()) << "step " << st.step << " moves nothing";
        if (!st.send.empty()) {
          EXPECT_EQ(st.send.peer, dst);
        }
        if (!st.recv.empty()) {
          EXPECT_EQ(st.recv.peer, src);
        }
        EXPECT_EQ(st.send.total_rows(), spec_need_count(need[size_t(dst)], N, H, L, rank)) << "step " << st.step;
        EXPECT_EQ(st.recv.total_rows(), spec_need_count(need[size_t(rank)], N, H, L, src)) << "step " << st.step;
      }
      // No step with traffic is left out of the plan.
      for (int d = 1; d < P; ++d) {
        const int dst = (rank + d) % P, src = (rank - d + P) % P;
        const bool traffic = spec_need_count(need[size_t(dst)], N, H, L, rank) > 0 ||
                             spec_need_count(need[size_t(rank)], N, H, L, src) > 0;
        EXPECT_EQ(seen.count(d) == 1, traffic) << "step " << d;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Configs, Planner, ::testing::ValuesIn(kPlanCases),
                         [](const ::testing::TestParamInfo<PlanCase>& i) { return std::string(i.param.name); });

// ---- tiles cover the attention exactly ------------------------------------

uint64_t pack(int64_t t, int64_t h, int64_t u, int64_t N, int64_t H) { return uint64_t((t * H + h) * N + u); }

// (query, head, key) triples of rank's shard per SPEC.md, with multiplicity over branches.
std::vector<uint64_t> brute_triples(const Config& c, int64_t N, int P, int rank) {
  const int64_t L = N / P;
  std::vector<uint64_t> out;
  std::vector<int64_t> keys;
  for (int64_t t = int64_t(rank) * L; t < int64_t(rank + 1) * L; ++t)
    for (int64_t h = 0; h < c.heads; ++h) {
      spec_keys_scan(c, N, h, t, &keys);
      for (int64_t u : keys) out.push_back(pack(t, h, u, N, c.heads));
    }
  std::sort(out.begin(), out.end());
  return out;
}

// The same triples, read from the plan's tiles.
std::vector<uint64_t> tile_triples(const Config& c, const Plan& plan, int64_t N, int P, int rank) {
  const int64_t L = N / P, qa = int64_t(rank) * L, H = c.heads;
  std::vector<uint64_t> out;
  int64_t prev_end = 0;
  for (size_t pi = 0; pi < plan.passes.size(); ++pi) {
    const Pass& ps = plan.passes[pi];
    SCOPED_TRACE("pass " + std::to_string(pi) + " step " + std::to_string(ps.step) + " branch " + std::to_string(ps.branch));
    EXPECT_EQ(ps.tile_begin, prev_end) << "passes must tile the tile array in order";
    prev_end = ps.tile_end;
    const PlanStep* step = nullptr;
    for (const PlanStep& st : plan.steps)
      if (st.step == ps.step) step = &st;
    if (ps.step > 0) {
      if (step == nullptr || step->recv.empty()) {
        ADD_FAILURE() << "pass reads step " << ps.step << " that receives nothing (the executor would skip it)";
        continue;
      }
      EXPECT_EQ(step->recv.peer, (rank - ps.step + P) % P);
    }
    std::set<std::pair<int64_t, int64_t>> queries;  // (query row, head): unique within a pass
    for (int64_t ti = ps.tile_begin; ti < ps.tile_end; ++ti) {
      const kern::Tile& t = plan.tiles[size_t(ti)];
      EXPECT_EQ(t.branch, ps.branch);
      EXPECT_GE(t.q_count, 1);
      EXPECT_GE(t.k_count, 1);
      EXPECT_EQ(t.q_stride, int32_t(c.branches[size_t(t.branch)].r));
      for (int64_t i = 0; i < t.q_count; ++i) {
        const int64_t qrow = t.q_row0 + i * t.q_stride;
        EXPECT_TRUE(qrow >= 0 && qrow < L) << "query row " << qrow;
        EXPECT_TRUE(queries.insert({qrow, t.head}).second) << "two tiles of one pass share query " << qrow << " head " << t.head;
        int64_t j0, j1;  // a prefix of the keys, or (packed segments) query i's segment of it
        kern::tile_visible_range(t, i, c.causal, &j0, &j1);
        for (int64_t j = j0; j < j1; ++j) {
          int64_t u;
          if (ps.step == 0) {
            EXPECT_GT(t.k_stride, 0);
            const int64_t krow = t.k_row0 + j * t.k_stride;
            EXPECT_TRUE(krow >= 0 && krow < L) << "key row " << krow;
            u = qa + krow;
          } else {
            if (step->recv.whole) {  // the peer's shard as it is: source rows
              EXPECT_GT(t.k_stride, 0);
              const int64_t krow = t.k_row0 + j * t.k_stride;
              EXPECT_TRUE(krow >= 0 && krow < L) << "key row " << krow;
              out.push_back(pack(qa + qrow, t.head, int64_t(step->recv.peer) * L + krow, N, H));
              continue;
            }
            // Received keys: an affine run of the block's rows, or an index list.
            EXPECT_GE(t.k_stride, 0);
            int32_t idx = 0;
            if (t.k_stride > 0) {
              idx = int32_t(t.k_row0 + j * t.k_stride);
            } else {
              const int64_t at = t.k_row0 + j;
              if (at < 0 || at >= int64_t(plan.key_index.size())) {
                ADD_FAILURE() << "key_index position " << at << " out of range";
                continue;
              }
              idx = plan.key_index[size_t(at)];
            }
            const RowList& rl = step->recv;
            if (idx < rl.head_prefix[size_t(t.head)] || idx >= rl.head_prefix[size_t(t.head + 1)]) {
              ADD_FAILURE() << "key_index " << idx << " is outside head " << t.head << "'s rows of the block";
              continue;
            }
            u = int64_t(rl.peer) * L + rl.rows[size_t(idx)];
          }
          out.push_back(pack(qa + qrow, t.head, u, N, H));
        }
      }
    }
  }
  EXPECT_EQ(prev_end, int64_t(plan.tiles.size()));
  std::sort(out.begin(), out.end());
  return out;
}

struct TileCase {
  const char* name;
  std::vector<Branch> branches;
  int64_t N, H;
  bool causal;
  HeadOffsets offsets;
};

TEST(PlannerTiles, CoverTheAttentionExactly) {
  const TileCase cases[] = {
      {"mixed", {{16, 1}, {32, 2}, {64, 4}, {100, 3}}, 288, 3, false, HeadOffsets::interleaved},
      {"mixed_causal_blocked", {{16, 1}, {32, 2}, {64, 4}, {100, 3}}, 288, 3, true, HeadOffsets::blocked},
      {"geometric_scaled", geometric_scaled(16, 288), 288, 4, false, HeadOffsets::interleaved},
      {"geometric_scaled_causal", geometric_scaled(16, 288), 288, 2, true, HeadOffsets::interleaved},
      {"overlap_twice", {{48, 2}, {48, 2}, {96, 1}}, 288, 2, true, HeadOffsets::interleaved},
      {"dense", {{288, 1}}, 288, 1, false, HeadOffsets::interleaved},
      {"sparse", {{24, 4}, {60, 5}}, 288, 3, false, HeadOffsets::blocked},
  };
  for (const TileCase& tc : cases) {
    const Config c = make_config(tc.branches, tc.H, 8, tc.causal, tc.offsets);
    Shape s;
    s.batch = 1;
    s.seq = tc.N;
    for (int P : {3, 1, 2, 4}) {
      for (int rank = 0; rank < P; ++rank) {
        SCOPED_TRACE(std::string(tc.name) + ": " + describe(c, tc.N) + " P=" + std::to_string(P) + " rank=" + std::to_string(rank));
        const Plan plan = build_plan(c, s, P, rank);
        const std::vector<uint64_t> want = brute_triples(c, tc.N, P, rank);
        const std::vector<uint64_t> got = tile_triples(c, plan, tc.N, P, rank);
        EXPECT_EQ(got.size(), want.size());
        if (got != want) {
          std::vector<uint64_t> extra, missing;
          std::set_difference(got.begin(), got.end(), want.begin(), want.end(), std::back_inserter(extra));
          std::set_difference(want.begin(), want.end(), got.begin(), got.end(), std::back_inserter(missing));
          auto show = [&](const std::vector<uint64_t>& v) {
            std::string str;
            for (size_t i = 0; i < std::min<size_t>(v.size(), 5); ++i) {
              const uint64_t x = v[i];
              const int64_t u = int64_t(x % uint64_t(tc.N)), th = int64_t(x / uint64_t(tc.N));
              str += " (t=" + std::to_string(th / tc.H) + ",h=" + std::to_string(th % tc.H) + ",u=" + std::to_string(u) + ")";
            }
            return str;
          };
          ADD_FAILURE() << extra.size() << " extra pairs:" << show(extra) << "; " << missing.size()
                        << " missing pairs:" << show(missing);
        }
        if (tc.causal) {
          for (uint64_t x : want) ASSERT_LE(int64_t(x % uint64_t(tc.N)), int64_t(x / uint64_t(tc.N)) / tc.H);
        }
      }
    }
  }
}

TEST(PlannerTiles, DuplicateBranchesCountTwice) {
  // Guard for the multiset comparison: with a branch listed twice every pair appears twice.
  const Config one = make_config({{32, 2}}, 2, 8), two = make_config({{32, 2}, {32, 2}}, 2, 8);
  Shape s;
  s.seq = 96;
  for (int rank = 0; rank < 3; ++rank) {
    auto a = tile_triples(one, build_plan(one, s, 3, rank), 96, 3, rank);
    auto b = tile_triples(two, build_plan(two, s, 3, rank), 96, 3, rank);
    EXPECT_EQ(b.size(), 2 * a.size());
  }
}

// ---- packed segments (PlanOptions::pack_segments) ---------------------------

// The plan with only pass pi (its tiles re-based), for per-pass triples.
Plan only_pass(const Plan& plan, size_t pi) {
  Plan one = plan;
  Pass ps = plan.passes[pi];
  one.tiles.assign(plan.tiles.begin() + ps.tile_begin, plan.tiles.begin() + ps.tile_end);
  ps.tile_end -= ps.tile_begin;
  ps.tile_begin = 0;
  one.passes = {ps};
  return one;
}

// Packed tiles per SPEC's rule for them (tile.hpp): whole segments of one
// (branch, head) on local keys, c = w / r each, at most kPackRows rows.
int64_t check_packed_tiles(const Config& c, const Plan& plan) {
  int64_t packed = 0;
  for (const Pass& ps : plan.passes)
    for (int64_t ti = ps.tile_begin; ti < ps.tile_end; ++ti) {
      const kern::Tile& t = plan.tiles[size_t(ti)];
      if (t.seg_len == 0) continue;
      ++packed;
      const Branch& b = c.branches[size_t(t.branch)];
      EXPECT_EQ(b.w % b.r, 0) << "packed a branch whose r does not divide w";
      EXPECT_EQ(int64_t(t.seg_len), b.w / b.r);
      EXPECT_EQ(ps.step, 0) << "packed tiles read local keys";
      EXPECT_EQ(t.q_idx0, 0);
      EXPECT_EQ(t.k_idx0, 0);
      EXPECT_EQ(t.q_count, t.k_count);
      EXPECT_EQ(t.q_count % t.seg_len, 0);
      EXPECT_GE(t.q_count, 2 * t.seg_len) << "a packed tile holds two segments or more";
      EXPECT_LE(t.q_count, kPackRows);
      EXPECT_EQ(t.k_stride, t.q_stride);
      EXPECT_EQ(t.k_row0, t.q_row0);
      EXPECT_EQ(t.reserved, 0);
    }
  return packed;
}

struct PackCase {
  const char* name;
  std::vector<Branch> branches;
  int64_t N, H;
  bool causal;
  HeadOffsets offsets;
  bool packs;  // some tiles pack (else the packed plan must equal the unpacked one)
};

// Every N is a multiple of 12, so P = 1..4 divide it; shards of N / P tokens
// cut segments (e.g. 64:1 at N = 1440, P = 3: segment 7 is [448, 512), the
// shard edge at 480), so shard-edge pieces stay ordinary tiles.
const PackCase kPackCases[] = {
    {"w64_r1", {{64, 1}}, 1440, 2, false, HeadOffsets::interleaved, true},
    {"w64_r1_causal", {{64, 1}}, 1440, 2, true, HeadOffsets::interleaved, true},
    {"w512_r8", {{512, 8}}, 4608, 3, false, HeadOffsets::interleaved, true},
    {"w512_r8_causal_blocked", {{512, 8}}, 4608, 5, true, HeadOffsets::blocked, true},
    {"w128_r4_causal", {{128, 4}}, 1440, 3, true, HeadOffsets::interleaved, true},
    {"w8_r8_one_token_segments", {{8, 8}, {32, 2}}, 1440, 3, false, HeadOffsets::interleaved, true},
    {"training_mix_causal", {{64, 1}, {512, 8}, {2048, 16}}, 4608, 4, true, HeadOffsets::interleaved, true},
    {"mixed_with_unpackable", {{64, 1}, {100, 3}, {96, 5}, {256, 2}}, 1440, 3, true, HeadOffsets::blocked, true},
    // r not dividing w, or c = w / r >= kPackRows: nothing packs.
    {"r_not_dividing_w", {{100, 3}, {96, 5}, {70, 4}}, 1440, 3, false, HeadOffsets::interleaved, false},
    {"c_128_or_more", {{128, 1}, {512, 2}, {300, 1}}, 1440, 2, true, HeadOffsets::interleaved, false},
};

TEST(PlannerPack, SamePairsAsUnpackedWithFewerTiles) {
  for (const PackCase& pc : kPackCases) {
    const Config c = make_config(pc.branches, pc.H, 8, pc.causal, pc.offsets);
    Shape s;
    s.batch = 1;
    s.seq = pc.N;
    int64_t tiles_on = 0, tiles_off = 0, packed = 0;
    for (int P = 1; P <= 4; ++P) {
      ASSERT_EQ(pc.N % P, 0);
      for (int rank = 0; rank < P; ++rank) {
        SCOPED_TRACE(std::string(pc.name) + ": " + describe(c, pc.N) + " P=" + std::to_string(P) + " rank=" +
                     std::to_string(rank));
        const Plan on = build_plan(c, s, P, rank, PlanOptions{true});
        const Plan off = build_plan(c, s, P, rank, PlanOptions{false});
        EXPECT_FALSE(on.key == off.key) << "the packing choice must be part of the cache key";
        EXPECT_TRUE(on.key.pack_segments);
        EXPECT_FALSE(off.key.pack_segments);
        for (const kern::Tile& t : off.tiles) ASSERT_EQ(t.seg_len, 0);
        packed += check_packed_tiles(c, on);
        tiles_on += int64_t(on.tiles.size());
        tiles_off += int64_t(off.tiles.size());
        EXPECT_LE(on.tiles.size(), off.tiles.size());
        // What travels does not change; the work counted does not either.
        EXPECT_EQ(on.rows_sent(), off.rows_sent());
        EXPECT_EQ(on.rows_received(), off.rows_received());
        EXPECT_EQ(on.key_index, off.key_index);
        EXPECT_DOUBLE_EQ(on.local_flops, off.local_flops);
        // Pass by pass (the same key source and branch), the same multiset of
        // (query, head, key) triples: a tile packed wrongly, or a mask that
        // lets a query see another segment, changes it.
        ASSERT_EQ(on.passes.size(), off.passes.size());
        for (size_t pi = 0; pi < on.passes.size(); ++pi) {
          SCOPED_TRACE("pass " + std::to_string(pi));
          EXPECT_EQ(on.passes[pi].step, off.passes[pi].step);
          EXPECT_EQ(on.passes[pi].branch, off.passes[pi].branch);
          EXPECT_EQ(tile_triples(c, only_pass(on, pi), pc.N, P, rank), tile_triples(c, only_pass(off, pi), pc.N, P, rank));
        }
        // And SPEC's pairs as a whole (the brute force scans every key of
        // every query: the smaller cases only).
        if (pc.N <= 1440) {
          EXPECT_EQ(tile_triples(c, on, pc.N, P, rank), brute_triples(c, pc.N, P, rank));
        }
        if (!pc.packs) {
          ASSERT_EQ(on.tiles.size(), off.tiles.size());
          EXPECT_EQ(std::memcmp(on.tiles.data(), off.tiles.data(), on.tiles.size() * sizeof(kern::Tile)), 0)
              << "nothing to pack, yet the tiles changed";
        }
      }
    }
    if (pc.packs) {
      EXPECT_GT(packed, 0) << pc.name << ": nothing packed";
      EXPECT_LT(tiles_on, tiles_off) << pc.name;
    } else {
      EXPECT_EQ(packed, 0) << pc.name;
      EXPECT_EQ(tiles_on, tiles_off) << pc.name;
    }
  }
}

// Exact tile counts where the arithmetic is easy: one rank, N = 1024, H = 2.
TEST(PlannerPack, TileCounts) {
  struct Count {
    std::vector<Branch> b;
    size_t off, on;
  };
  const Count counts[] = {
      {{{64, 1}}, 2 * 16, 2 * 8},    // c = 64: 16 segments per head, 2 per tile
      {{{512, 8}}, 2 * 2, 2 * 1},    // c = 64: 2 segments per head
      {{{128, 4}}, 2 * 8, 2 * 2},    // c = 32: 8 segments per head, 4 per tile
      {{{16, 1}}, 2 * 64, 2 * 8},    // c = 16: 64 segments per head, 8 per tile
      {{{4, 4}}, 2 * 256, 2 * 2},    // c = 1: 256 segments per head, 128 per tile
      {{{128, 1}}, 2 * 8, 2 * 8},    // c = 128: already one block
      {{{96, 5}}, 2 * 11, 2 * 11},   // r does not divide w
  };
  for (const Count& ct : counts)
    for (bool causal : {false, true}) {
      const Config c = make_config(ct.b, 2, 8, causal);
      SCOPED_TRACE(describe(c, 1024));
      EXPECT_EQ(build_plan(c, Shape{1, 1024}, 1, 0, PlanOptions{false}).tiles.size(), ct.off);
      EXPECT_EQ(build_plan(c, Shape{1, 1024}, 1, 0).tiles.size(), ct.on) << "packing is the default";
    }
}

// The comparison above can fail: a packed tile without its block-diagonal
// rule (seg_len cleared) or with the wrong segment length reaches keys of
// other segments, and its pairs differ from the unpacked plan's.
TEST(PlannerPack, BrokenPackingIsCaught) {
  const Config c = make_config({{64, 1}, {128, 4}}, 2, 8, true);
  const int64_t N = 1440;
  for (int P : {1, 3}) {
    const Plan off = build_plan(c, Shape{1, N}, P, 0, PlanOptions{false});
    const Plan on = build_plan(c, Shape{1, N}, P, 0);
    const std::vector<uint64_t> want = tile_triples(c, off, N, P, 0);
    ASSERT_EQ(tile_triples(c, on, N, P, 0), want);
    size_t first = on.tiles.size();
    for (size_t i = 0; i < on.tiles.size() && first == on.tiles.size(); ++i)
      if (on.tiles[i].seg_len > 0) first = i;
    ASSERT_LT(first, on.tiles.size()) << "nothing packed";
    for (int32_t bad : {0, 2 * on.tiles[first].seg_len, on.tiles[first].seg_len / 2}) {
      Plan broken = on;
      broken.tiles[first].seg_len = bad;
      EXPECT_NE(tile_triples(c, broken, N, P, 0), want) << "seg_len " << bad << " went unnoticed";
    }
    Plan shifted = on;  // key rows that are not the queries' own segments
    shifted.tiles[first].k_row0 += 1;
    EXPECT_NE(tile_triples(c, shifted, N, P, 0), want);
  }
}

TEST(PlannerCoverage, CoversAllMeansEveryTokenSelected) {
  // covers_all promises that no (token, head) is left with LSE = -inf; check the promise.
  const std::vector<std::vector<Branch>> sets = {{{16, 1}, {32, 4}}, {{32, 2}, {64, 4}}, {{24, 4}, {60, 5}}, {{8, 8}}};
  for (const auto& br : sets)
    for (int64_t H : {1, 2, 3, 8}) {
      const Config c = make_config(br, H, 8);
      Shape s;
      s.seq = 192;
      const Plan plan = build_plan(c, s, 1, 0);
      if (!plan.covers_all) continue;
      for (int64_t t = 0; t < s.seq; ++t)
        for (int64_t h = 0; h < H; ++h) {
          bool any = false;
          for (const Branch& b : c.branches) any |= spec_selected(c, b, h, t);
          EXPECT_TRUE(any) << format_branches(br) << " H=" << H << " t=" << t << " h=" << h;
        }
    }
}

// first_pass_covers_local promises that the backward's first pass holds every
// local (row, head) exactly once as a query and once as a key (the kernels then
// write the gradients instead of adding to zeros). Check it on the tiles
// themselves, packed and not, causal and not, at 1-4 ranks; and that a config
// whose first branch is dilated does not claim it.
TEST(PlannerCoverage, FirstPassCoversLocalRowsOnce) {
  const std::vector<std::vector<Branch>> sets = {{{16, 1}, {32, 4}}, {{64, 1}, {128, 2}, {384, 4}}, {{24, 1}, {60, 5}},
                                                 {{384, 1}}, {{32, 2}, {16, 1}},
                                                 // w not dividing N = 384: a short last segment
                                                 {{100, 1}, {200, 2}}, {{50, 1}}};
  for (const auto& br : sets)
    for (bool causal : {false, true})
      for (bool pack : {true, false})
        for (int P : {1, 2, 3, 4}) {
          Config c = make_config(br, 3, 8);
          c.causal = causal;
          const Shape s{1, 384};
          for (int rank = 0; rank < P; ++rank) {
            const Plan plan = build_plan(c, s, P, rank, PlanOptions{pack});
            SCOPED_TRACE(format_branches(br) + (causal ? " causal" : "") + (pack ? " packed" : "") + " P=" +
                         std::to_string(P) + " rank " + std::to_string(rank));
            EXPECT_EQ(plan.first_pass_covers_local, br[0].r == 1);
            if (!plan.first_pass_covers_local) continue;
            const Pass& ps = plan.passes[0];
            std::vector<int> as_query(size_t(plan.local_rows * c.heads), 0), as_key(as_query.size(), 0);
            for (int64_t ti = ps.tile_begin; ti < ps.tile_end; ++ti) {
              const kern::Tile& t = plan.tiles[size_t(ti)];
              for (int64_t i = 0; i < t.q_count; ++i) as_query[size_t((t.q_row0 + i * t.q_stride) * c.heads + t.head)]++;
              ASSERT_GT(t.k_stride, 0) << "local keys are affine";
              for (int64_t j = 0; j < t.k_count; ++j) as_key[size_t((t.k_row0 + j * t.k_stride) * c.heads + t.head)]++;
              // Every key is seen by some query (so no dK/dV item of the pass is skipped).
              for (int64_t j = 0; j < t.k_count; ++j) {
                bool seen = false;
                for (int64_t i = 0; i < t.q_count && !seen; ++i) {
                  int64_t j0 = 0, j1 = 0;
                  kern::tile_visible_range(t, i, causal, &j0, &j1);
                  seen = j >= j0 && j < j1;
                }
                EXPECT_TRUE(seen) << "tile " << ti << " key " << j << " seen by no query";
              }
              // ... and every query sees a key (so no dQ item is skipped).
              for (int64_t i = 0; i < t.q_count; ++i)
                EXPECT_GT(kern::tile_visible_keys(t, i, causal), 0) << "tile " << ti << " query " << i << " sees no key";
            }
            for (size_t x = 0; x < as_query.size(); ++x) {
              EXPECT_EQ(as_query[x], 1) << "row " << x / size_t(c.heads) << " head " << x % size_t(c.heads) << " as a query";
              EXPECT_EQ(as_key[x], 1) << "row " << x / size_t(c.heads) << " head " << x % size_t(c.heads) << " as a key";
            }
          }
        }
}

// Received keys on the fast path: a `dense` ring receives whole shards, so
// every received tile is affine (no index list); a geometric config's blocks
// hold one branch's rows per head, also affine. Every tile still maps to the
// right keys (CoverTheAttentionExactly checks both kinds).
TEST(PlannerTiles, ReceivedKeysAffineWhereRowsAreEvenlySpaced) {
  const int64_t N = 4096, P = 4;
  for (bool causal : {false, true}) {
    const Config dense = make_config({{N, 1}}, 3, 8, causal);
    const Config geo = make_config(geometric_scaled(256, N), 4, 8, causal);
    for (const Config* c : {&dense, &geo}) {
      for (int rank = 0; rank < P; ++rank) {
        SCOPED_TRACE(describe(*c, N) + " rank " + std::to_string(rank));
        const Plan plan = build_plan(*c, Shape{1, N}, int(P), rank);
        EXPECT_TRUE(plan.key_index.empty()) << plan.key_index.size() << " index-list keys";
        for (const PlanStep& st : plan.steps) {
          if (c == &dense) {  // whole shards travel as they are
            EXPECT_TRUE(st.send.empty() || st.send.whole);
            EXPECT_TRUE(st.recv.empty() || st.recv.whole);
          }
        }
        for (const kern::Tile& t : plan.tiles) EXPECT_GT(t.k_stride, 0);
      }
    }
  }
}

}  // namespace
}  // namespace ringattn::test

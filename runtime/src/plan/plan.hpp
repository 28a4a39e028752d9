// The planner: for one (config, shape, world size, rank) it computes, by
// interval arithmetic on index sets, every tile of attention this rank runs
// and every row it sends to or receives from each peer. A Plan is immutable
// once built; the pattern cache keeps plans, the executors walk them.
//
// Ring schedule: at step d (1..P-1) rank p sends to (p+d) mod P the rows that
// rank needs from p, and receives from (p-d) mod P the rows p needs from it.
// Every needed row travels once, straight to the rank that needs it, so the
// bytes sent equal the ideal. A direction with nothing to move is skipped by
// both sides (they compute the same plan).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/common/tile.hpp"
#include "ringattn/config.hpp"

namespace ringattn {

// Rows of one shard that travel to one peer: for every head, the sorted
// union over branches and segments of the rows that peer's queries select.
// Packed layout of a block: K then V, each batch x total_rows() x head_dim,
// head h's rows at [head_prefix[h], head_prefix[h+1]) (unless `whole`).
struct RowList {
  int peer = -1;
  std::vector<int32_t> head_prefix;  // heads + 1 entries
  std::vector<int32_t> rows;         // local rows of the source shard
  // Every row of the shard for every head (`dense`, or segments covering
  // whole shards): the block travels as the shard itself, token-major
  // (K then V, each batch x L x heads x head_dim), with no pack, and the
  // receiver's tiles address it by source row like local keys.
  bool whole = false;
  int64_t total_rows() const { return rows.size(); }
  bool empty() const { return rows.empty(); }
};

// A range of tiles that read one key source and never share a (query, head).
struct Pass {
  int step = 0;    // key source: 0 = local shard, d = block received at step d
  int branch = 0;
  int64_t tile_begin = 0, tile_end = 0;
};

struct PlanStep {
  int step = 0;
  RowList send;  // rows of my shard for rank (p+d) mod P
  RowList recv;  // rows of rank (p-d) mod P's shard that I need
};

// How a plan is built, beyond the config and shape (part of its cache key).
struct PlanOptions {
  // Pack whole short segments of one (branch, head) into tiles of up to
  // kPackRows queries with a block-diagonal mask (kern::Tile::seg_len).
  // RINGATTN_PACK_SEGMENTS=1 (default) | 0 (plan_options_from_env); only
  // this rank's tiles change, never what travels, so results do not depend
  // on it beyond float rounding inside the CUDA kernels; set it the same on
  // every rank (Context::create checks that the ranks agree).
  bool pack_segments = true;
};

// Rows of a packed tile at most: the CUDA kernels' query and key blocks
// (forward kBlockM = kBlockN, backward kBwdBlockM = kBwdBlockN = 128), so a
// packed tile is one work item of every kernel. Segments of c = w / r keys
// are packed when c divides it (c = 64, 32, ... 1: m = kPackRows / c
// segments per tile).
constexpr int kPackRows = 128;

struct PlanKey {
  uint64_t config_hash = 0;
  int64_t batch = 0, seq = 0;
  int world = 1, rank = 0;
  bool pack_segments = true;
  bool operator==(const PlanKey& o) const {
    return config_hash == o.config_hash && batch == o.batch && seq == o.seq && world == o.world && rank == o.rank &&
           pack_segments == o.pack_segments;
  }
};

struct Plan {
  PlanKey key;
  int64_t seq = 0, local_rows = 0, heads = 0, head_dim = 0;
  int world = 1, rank = 0;
  std::vector<kern::Tile> tiles;      // grouped by pass
  std::vector<Pass> passes;           // local passes first, then by step
  std::vector<int32_t> key_index;     // rows of packed blocks for list tiles
  std::vector<PlanStep> steps;        // steps 1..P-1 with any traffic
  bool covers_all = false;            // every (token, head) selected by a branch
  // The first pass of step 0 is a branch with r == 1 on this rank's own keys:
  // its tiles hold every local row of every head once as a query and once as
  // a key (causal too: each row sees itself), so the backward's first pass
  // may write dQ, dK, dV instead of adding to zeroed accumulators.
  bool first_pass_covers_local = false;
  double local_flops = 0;             // useful FLOPs of this rank's queries (batch 1)
  int64_t packed_tiles = 0;           // tiles holding packed short segments (seg_len > 0)

  // Rows (of all heads) sent / received per batch element, summed over steps.
  int64_t rows_sent() const;
  int64_t rows_received() const;
  // Bytes of the plan itself (what the cache budgets).
  int64_t host_bytes() const;
};

// Rows of shard `src` that queries of shard `dst` select, per head (sorted).
RowList needed_rows(const Config& c, int64_t seq, int world, int dst, int src);

// Builds the plan of `rank`. Config and shape must be valid.
Plan build_plan(const Config& c, const Shape& s, int world, int rank, const PlanOptions& opt = PlanOptions());

// Packs runs of whole short segments in place (build_plan does it when
// opt.pack_segments): consecutive tiles of one pass with the same head, each
// a whole segment of c = w / r queries and the same c keys (q_idx0 = k_idx0 =
// 0, q_count = k_count = c, r dividing w, c dividing kPackRows, c <
// kPackRows), whose query and key rows continue each other (the next
// segment's first row = the previous one's + c * stride), become one tile of
// up to kPackRows / c segments with seg_len = c. Everything else is left as
// it is. Returns the number of tiles removed.
int64_t pack_segments(const Config& c, Plan* plan);

}  // namespace ringattn

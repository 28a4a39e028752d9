// The planner: for one rank, the tiles (queries of a branch/head/segment on
// this shard x the keys one source holds), grouped into passes per branch and
// ring step, the rows each peer needs per step (build_plan), and whole short
// segments packed into block-diagonal tiles (pack_segments). docs/SPEC.md
// defines what the tiles must cover; README "How it works" the layout.
#include "plan/plan.hpp"

#include <algorithm>

#include "plan/index_set.hpp"

namespace ringattn {

int64_t Plan::rows_sent() const {
  int64_t n = 0;
  for (const PlanStep& s : steps) n += s.send.total_rows();
  return n;
}
int64_t Plan::rows_received() const {
  int64_t n = 0;
  for (const PlanStep& s : steps) n += s.recv.total_rows();
  return n;
}
int64_t Plan::host_bytes() const {
  int64_t b = sizeof(Plan) + tiles.size() * sizeof(kern::Tile) + passes.size() * sizeof(Pass) +
              key_index.size() * sizeof(int32_t);
  for (const PlanStep& s : steps) {
    b += (s.send.rows.size() + s.recv.rows.size() + s.send.head_prefix.size() + s.recv.head_prefix.size()) * sizeof(int32_t);
  }
  return b;
}

// Segments of branch b that intersect tokens [a, e).
static void segments_touching(const Branch& b, int64_t a, int64_t e, int64_t* s0, int64_t* s1) {
  *s0 = a / b.w;
  *s1 = (e + b.w - 1) / b.w;
}

RowList needed_rows(const Config& c, int64_t seq, int world, int dst, int src) {
  RowList out;
  out.peer = src;
  out.head_prefix.assign(c.heads + 1, 0);
  if (dst == src || (c.causal && src > dst)) return out;  // causal: keys after queries are never seen
  const int64_t L = seq / world;
  const int64_t qa = dst * L, qe = qa + L, ka = src * L, ke = ka + L;
  std::vector<int32_t> rows;
  for (int64_t h = 0; h < c.heads; ++h) {
    rows.clear();
    for (const Branch& b : c.branches) {
      // A segment matters only if it spans both shards.
      int64_t s0, s1, t0, t1;
      segments_touching(b, qa, qe, &s0, &s1);
      segments_touching(b, ka, ke, &t0, &t1);
      s0 = std::max(s0, t0);
      s1 = std::min(s1, t1);
      int64_t o = head_offset(c.head_offsets, b.r, h, c.heads);
      for (int64_t s = s0; s < s1; ++s) {
        IndexSet I = index_set(b, seq, o, s);
        int64_t q0, q1, k0, k1;
        positions_in(I, qa, qe, &q0, &q1);
        if (q0 == q1) continue;
        positions_in(I, ka, ke, &k0, &k1);
        for (int64_t j = k0; j < k1; ++j) rows.push_back(int32_t(I.token(j) - ka));
      }
    }
    std::sort(rows.begin(), rows.end());
    rows.erase(std::unique(rows.begin(), rows.end()), rows.end());
    out.rows.insert(out.rows.end(), rows.begin(), rows.end());
    out.head_prefix[h + 1] = int32_t(out.rows.size());
  }
  out.whole = int64_t(out.rows.size()) == c.heads * L;  // sorted, unique, in [0, L): all of them
  return out;
}

Plan build_plan(const Config& c, const Shape& shape, int world, int rank, const PlanOptions& opt) {
  Plan p;
  p.key = PlanKey{config_hash(c), shape.batch, shape.seq, world, rank, opt.pack_segments};
  p.seq = shape.seq;
  p.world = world;
  p.rank = rank;
  p.heads = c.heads;
  p.head_dim = c.head_dim;
  const int64_t N = shape.seq, L = N / world;
  p.local_rows = L;
  const int64_t qa = int64_t(rank) * L, qe = qa + L;

  // Rows I receive at each step (needed to map keys into packed blocks).
  std::vector<RowList> recv(world);
  for (int d = 1; d < world; ++d) {
    int src = (rank - d + world) % world;
    int dst = (rank + d) % world;
    PlanStep st;
    st.step = d;
    st.recv = needed_rows(c, N, world, rank, src);
    st.send = needed_rows(c, N, world, dst, rank);
    st.send.peer = dst;
    recv[d] = st.recv;
    if (!st.recv.empty() || !st.send.empty()) p.steps.push_back(std::move(st));
  }

  std::vector<int32_t> pos;  // rows of one tile's keys in a received block
  // Tiles, grouped into passes by (step, branch).
  std::vector<std::vector<std::vector<kern::Tile>>> by_pass(world, std::vector<std::vector<kern::Tile>>(c.branches.size()));
  for (size_t bi = 0; bi < c.branches.size(); ++bi) {
    const Branch& b = c.branches[bi];
    int64_t s0 = qa / b.w, s1 = (qe + b.w - 1) / b.w;
    for (int64_t h = 0; h < c.heads; ++h) {
      int64_t o = head_offset(c.head_offsets, b.r, h, c.heads);
      for (int64_t s = s0; s < s1; ++s) {
        IndexSet I = index_set(b, N, o, s);
        int64_t q0, q1;
        positions_in(I, qa, qe, &q0, &q1);
        if (q0 == q1) continue;
        int64_t seg_a = s * b.w, seg_e = std::min(seg_a + b.w, N);
        int src_first = int(seg_a / L), src_last = int((seg_e - 1) / L);
        for (int src = src_first; src <= src_last; ++src) {
          if (c.causal && src > rank) break;
          int64_t k0, k1;
          positions_in(I, int64_t(src) * L, int64_t(src + 1) * L, &k0, &k1);
          if (c.causal) k1 = std::min(k1, q1);  // keys after the last query are never seen
          if (k0 >= k1) continue;
          kern::Tile t{};
          t.q_row0 = I.token(q0) - qa;
          t.q_idx0 = q0;
          t.q_count = int32_t(q1 - q0);
          t.q_stride = int32_t(b.r);
          t.k_idx0 = k0;
          t.k_count = int32_t(k1 - k0);
          t.head = int32_t(h);
          t.branch = int32_t(bi);
          int d = (rank - src + world) % world;
          if (src == rank) {
            t.k_row0 = I.token(k0) - qa;
            t.k_stride = int32_t(b.r);
          } else if (recv[d].whole) {
            // The peer's whole shard, token-major: source rows, like local keys.
            t.k_row0 = I.token(k0) - int64_t(src) * L;
            t.k_stride = int32_t(b.r);
          } else {
            // Keys in a received block: their rows there, in order. Rows at a
            // constant distance (the whole shard for `dense`, one branch's rows
            // of a head, one branch's every r-th row among another's) make an
            // affine tile that the kernels stream like local keys; others
            // become an index list.
            const RowList& rl = recv[d];
            auto hb = rl.rows.begin() + rl.head_prefix[h], he = rl.rows.begin() + rl.head_prefix[h + 1];
            pos.clear();
            for (int64_t j = k0; j < k1; ++j) {
              int32_t row = int32_t(I.token(j) - int64_t(src) * L);
              pos.push_back(int32_t(std::lower_bound(hb, he, row) - rl.rows.begin()));
            }
            const int64_t stride = pos.size() > 1 ? int64_t(pos[1]) - pos[0] : 1;
            bool affine = stride >= 1;
            for (size_t j = 2; affine && j < pos.size(); ++j) affine = int64_t(pos[j]) - pos[j - 1] == stride;
            if (affine) {
              t.k_row0 = pos[0];
              t.k_stride = int32_t(stride);
            } else {
              t.k_row0 = int64_t(p.key_index.size());
              t.k_stride = 0;
              p.key_index.insert(p.key_index.end(), pos.begin(), pos.end());
            }
          }
          by_pass[d][bi].push_back(t);
        }
      }
    }
  }
  for (int d = 0; d < world; ++d) {
    for (size_t bi = 0; bi < c.branches.size(); ++bi) {
      auto& v = by_pass[d][bi];
      if (v.empty()) continue;
      Pass ps;
      ps.step = d;
      ps.branch = int(bi);
      ps.tile_begin = int64_t(p.tiles.size());
      p.tiles.insert(p.tiles.end(), v.begin(), v.end());
      ps.tile_end = int64_t(p.tiles.size());
      p.passes.push_back(ps);
    }
  }

  if (opt.pack_segments) pack_segments(c, &p);
  for (const kern::Tile& t : p.tiles) {
    p.local_flops += 4.0 * double(kern::tile_visible_pairs(t, c.causal)) * double(c.head_dim);
    p.packed_tiles += t.seg_len > 0 ? 1 : 0;
  }

  // Coverage: with a branch of r == 1 every token of every head is selected.
  p.covers_all = false;
  for (const Branch& b : c.branches) p.covers_all |= (b.r == 1);
  p.first_pass_covers_local = !p.passes.empty() && p.passes[0].step == 0 && c.branches[size_t(p.passes[0].branch)].r == 1;
  return p;
}

int64_t pack_segments(const Config& c, Plan* plan) {
  std::vector<kern::Tile> out;
  out.reserve(plan->tiles.size());
  for (Pass& ps : plan->passes) {
    const Branch& b = c.branches[size_t(ps.branch)];
    const int64_t seg = b.w / b.r;  // keys (and queries) of a whole segment
    const bool packable_branch = b.w % b.r == 0 && seg < kPackRows && kPackRows % seg == 0;
    const int64_t most = packable_branch ? kPackRows / seg : 1;  // segments per packed tile
    // A whole segment alone: all c queries and the same c keys, rows by stride.
    auto whole = [&](const kern::Tile& t) {
      return t.seg_len == 0 && t.q_idx0 == 0 && t.k_idx0 == 0 && t.q_count == seg && t.k_count == seg &&
             t.q_stride == b.r && t.k_stride > 0;
    };
    const int64_t begin = int64_t(out.size());
    int64_t run = 0;  // segments in out.back() (0: out.back() is not a packable run)
    for (int64_t ti = ps.tile_begin; ti < ps.tile_end; ++ti) {
      const kern::Tile& t = plan->tiles[size_t(ti)];
      const bool packable = packable_branch && whole(t);
      if (packable && run > 0 && run < most) {
        kern::Tile& r = out.back();
        // The next segment's rows continue the run's: one affine tile.
        if (t.head == r.head && t.branch == r.branch && t.k_stride == r.k_stride &&
            t.q_row0 == r.q_row0 + run * seg * r.q_stride && t.k_row0 == r.k_row0 + run * seg * r.k_stride) {
          ++run;
          r.q_count = int32_t(run * seg);
          r.k_count = int32_t(run * seg);
          r.seg_len = int32_t(seg);
          continue;
        }
      }
      out.push_back(t);
      run = packable ? 1 : 0;
    }
    ps.tile_begin = begin;
    ps.tile_end = int64_t(out.size());
  }
  const int64_t removed = int64_t(plan->tiles.size()) - int64_t(out.size());
  plan->tiles = std::move(out);
  return removed;
}

}  // namespace ringattn

// The backward of a P-rank job inside one process, without MPI: the model of
// the reverse ring for the float32 CPU path.
//
// Each rank (simulate_rank_backward) runs its forward (cpu_sim.hpp), then
// kern::cpu_backward_pass over the plan's local passes and, for every plan
// step, over the K/V block it received at that step (packed_block.hpp: the
// packed rows, or the whole shard). The dK/dV of a received block go into a
// float32 partial with exactly the block's layout: the rows that came are the
// rows that go back. The owner then adds the partials into its dK/dV
// (owner_gradients), the inverse of the pack (scatter_add_block), in a fixed
// order: its own local passes first, then the partial of step d = 1, 2, ...,
// P-1, which rank (p+d) mod P computed from the block p sent it at step d.
// So the result depends on nothing but the inputs and P.
#pragma once
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "common/cpu_sim.hpp"
#include "common/packed_block.hpp"
#include "kernels/cpu/attention_cpu_bwd.hpp"
#include "plan/plan.hpp"

namespace ringattn::test {

// Rows [rank*L, (rank+1)*L) of a global B x N x W tensor (W values per token).
inline std::vector<float> cut_shard(const std::vector<float>& x, int64_t B, int64_t N, int64_t L, int rank, int64_t W) {
  std::vector<float> y(size_t(B * L * W));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t e = 0; e < L * W; ++e) y[size_t(b * L * W + e)] = x[size_t((b * N + int64_t(rank) * L) * W + e)];
  return y;
}

// dK then dV of one received block, float32, in the block's layout
// (packed: each batch x R x D, head h's rows at recv.head_prefix[h..h+1];
// whole: each batch x L x H x D), owed to rank recv.peer.
struct Partial {
  int step = 0;
  RowList recv;
  std::vector<float> dkv;
};

struct RankBackward {
  std::vector<float> o, lse;       // the forward of the shard (cpu_sim.hpp)
  std::vector<float> dq;           // B x L x H x D, complete
  std::vector<float> dk, dv;       // B x L x H x D, from this rank's own queries only
  std::vector<Partial> partials;   // by step
};

// Adds a partial into the owner's dK/dV shards (B x L x H x D): row i of a
// packed partial is the owner's row recv.rows[i] of head h, for i in
// [head_prefix[h], head_prefix[h+1]); a whole partial is the shard itself.
inline void scatter_add_block(const RowList& recv, const float* part, int64_t B, int64_t L, int64_t H, int64_t D,
                              float* dk, float* dv) {
  const int64_t R = recv.total_rows();
  const float* pk = part;
  const float* pv = part + B * R * D;
  if (recv.whole) {
    for (int64_t e = 0; e < B * L * H * D; ++e) {
      dk[e] += pk[e];
      dv[e] += pv[e];
    }
    return;
  }
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = recv.head_prefix[size_t(h)]; i < recv.head_prefix[size_t(h + 1)]; ++i) {
        const int64_t to = ((b * L + recv.rows[size_t(i)]) * H + h) * D, from = (b * R + i) * D;
        for (int64_t d = 0; d < D; ++d) {
          dk[to + d] += pk[from + d];
          dv[to + d] += pv[from + d];
        }
      }
}

// One rank's backward. q, k, v, dout: global B x N x H x D float32. With
// `index_lists`, every affine tile of a packed block becomes an index list
// (packed_block.hpp: with_index_lists), so the scatter through src.index is
// tested too; the result must not change by a bit.
inline RankBackward simulate_rank_backward(const Config& c, const Shape& s, int P, int rank, const std::vector<float>& q,
                                           const std::vector<float>& k, const std::vector<float>& v,
                                           const std::vector<float>& dout, bool index_lists = false,
                                           const PlanOptions& opt = PlanOptions()) {
  const int64_t B = s.batch, N = s.seq, L = N / P, H = c.heads, D = c.head_dim;
  RankBackward r;
  Plan plan;
  simulate_rank(c, s, P, rank, q, k, v, &r.o, &r.lse, &plan, opt);
  if (index_lists) plan = with_index_lists(std::move(plan));
  const std::vector<float> qs = cut_shard(q, B, N, L, rank, H * D), ks = cut_shard(k, B, N, L, rank, H * D),
                           vs = cut_shard(v, B, N, L, rank, H * D), gs = cut_shard(dout, B, N, L, rank, H * D);
  std::vector<float> delta(size_t(B * L * H));
  kern::cpu_backward_delta(r.o.data(), gs.data(), B, L, H, D, L * H * D, H * D, delta.data(), L * H, H);
  r.dq.assign(size_t(B * L * H * D), 0.f);
  r.dk.assign(r.dq.size(), 0.f);
  r.dv.assign(r.dq.size(), 0.f);

  kern::CpuBwdParams bp;
  bp.q = qs.data();
  bp.dout = gs.data();
  bp.q_batch_stride = L * H * D;
  bp.q_row_stride = H * D;
  bp.lse = r.lse.data();
  bp.delta = delta.data();
  bp.lse_batch_stride = L * H;
  bp.lse_row_stride = H;
  bp.batch = B;
  bp.heads = H;
  bp.head_dim = D;
  bp.scale = float(c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(D)));
  bp.causal = c.causal;
  bp.dq_acc = r.dq.data();
  auto run = [&](int step, const kern::KeySource& src, float* dk, float* dv) {
    for (const Pass& ps : plan.passes) {
      if (ps.step != step) continue;
      bp.src = src;
      bp.dk_acc = dk;
      bp.dv_acc = dv;
      bp.tiles = plan.tiles.data() + ps.tile_begin;
      bp.num_tiles = ps.tile_end - ps.tile_begin;
      kern::cpu_backward_pass(bp);
    }
  };
  run(0, kern::KeySource{ks.data(), vs.data(), L * H * D, H * D, D, nullptr}, r.dk.data(), r.dv.data());
  for (const PlanStep& st : plan.steps) {
    if (st.recv.empty()) continue;
    const std::vector<float> blk = pack_block(st.recv, L, k, v, B, N, H, D);
    Partial part{st.step, st.recv, std::vector<float>(blk.size(), 0.f)};
    const int64_t half = int64_t(blk.size() / 2);
    run(st.step, block_source(st.recv, blk.data(), int64_t(sizeof(float)), B, L, H, D, plan.key_index.data()),
        part.dkv.data(), part.dkv.data() + half);
    r.partials.push_back(std::move(part));
  }
  return r;
}

// The owner's dK/dV (B x L x H x D each): its own, then the partial of step
// d from rank (p+d) mod P, for d = 1..P-1, in that order.
inline void owner_gradients(const std::vector<RankBackward>& ranks, int p, int64_t B, int64_t L, int64_t H, int64_t D,
                            std::vector<float>* dk, std::vector<float>* dv) {
  const int P = int(ranks.size());
  *dk = ranks[size_t(p)].dk;
  *dv = ranks[size_t(p)].dv;
  for (int d = 1; d < P; ++d) {
    for (const Partial& part : ranks[size_t((p + d) % P)].partials) {
      if (part.step != d) continue;
      if (part.recv.peer != p) throw std::logic_error("a partial of step d is owed to rank (sender - d) mod P");
      scatter_add_block(part.recv, part.dkv.data(), B, L, H, D, dk->data(), dv->data());
    }
  }
}

struct Gradients {
  std::vector<float> dq, dk, dv;  // global B x N x H x D
  std::vector<float> o, lse;      // the forward: B x N x H x D, B x N x H
  int64_t packed_blocks = 0, whole_blocks = 0;  // received blocks (= partials returned), all ranks
};

// The whole P-rank backward, gathered into global tensors.
inline Gradients simulate_backward(const Config& c, const Shape& s, int P, const std::vector<float>& q,
                                   const std::vector<float>& k, const std::vector<float>& v,
                                   const std::vector<float>& dout, bool index_lists = false,
                                   const PlanOptions& opt = PlanOptions()) {
  const int64_t B = s.batch, N = s.seq, L = N / P, H = c.heads, D = c.head_dim;
  std::vector<RankBackward> ranks;
  for (int p = 0; p < P; ++p) ranks.push_back(simulate_rank_backward(c, s, P, p, q, k, v, dout, index_lists, opt));
  Gradients g;
  g.dq.resize(size_t(B * N * H * D));
  g.dk.resize(g.dq.size());
  g.dv.resize(g.dq.size());
  g.o.resize(g.dq.size());
  g.lse.resize(size_t(B * N * H));
  auto put = [&](const std::vector<float>& shard, int p, int64_t W, std::vector<float>* global) {
    for (int64_t b = 0; b < B; ++b)
      for (int64_t e = 0; e < L * W; ++e) (*global)[size_t((b * N + int64_t(p) * L) * W + e)] = shard[size_t(b * L * W + e)];
  };
  for (int p = 0; p < P; ++p) {
    std::vector<float> dk, dv;
    owner_gradients(ranks, p, B, L, H, D, &dk, &dv);
    put(ranks[size_t(p)].dq, p, H * D, &g.dq);
    put(dk, p, H * D, &g.dk);
    put(dv, p, H * D, &g.dv);
    put(ranks[size_t(p)].o, p, H * D, &g.o);
    put(ranks[size_t(p)].lse, p, H, &g.lse);
    for (const Partial& part : ranks[size_t(p)].partials) (part.recv.whole ? g.whole_blocks : g.packed_blocks)++;
  }
  return g;
}

}  // namespace ringattn::test

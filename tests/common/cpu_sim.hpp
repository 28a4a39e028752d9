// Runs one rank of a P-rank job inside one process, without MPI: the plan's
// local passes on the rank's shard, then for every plan step the packed K/V
// block of the step's receive rows, cut from the global tensors the way the
// sending rank sends it (packed_block.hpp: packed rows, or whole shards as
// they are). Used by the unit tests of the float32
// path; the MPI suite checks the real transport.
#pragma once
#include <cmath>
#include <limits>
#include <vector>

#include "common/packed_block.hpp"
#include "kernels/cpu/attention_cpu.hpp"
#include "plan/plan.hpp"

namespace ringattn::test {

// q, k, v: global B x N x H x D float32. o: B x L x H x D, lse: B x L x H of
// this rank's shard; both are overwritten (the accumulator O starts as NaN,
// so every (query, head) a tile reaches must be written in full; rows no tile
// reaches are set to O = 0 afterwards, as the executor's zero-initialised
// accumulator does).
inline void simulate_rank(const Config& c, const Shape& s, int P, int rank, const std::vector<float>& q,
                          const std::vector<float>& k, const std::vector<float>& v, std::vector<float>* o,
                          std::vector<float>* lse, Plan* plan_out = nullptr, const PlanOptions& opt = PlanOptions()) {
  const int64_t B = s.batch, N = s.seq, L = N / P, H = c.heads, D = c.head_dim;
  const Plan plan = build_plan(c, s, P, rank, opt);
  auto shard_of = [&](const std::vector<float>& x, int r) {
    std::vector<float> y(size_t(B * L * H * D));
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < L; ++t)
        for (int64_t e = 0; e < H * D; ++e)
          y[size_t((b * L + t) * H * D + e)] = x[size_t((b * N + int64_t(r) * L + t) * H * D + e)];
    return y;
  };
  const std::vector<float> qs = shard_of(q, rank), ks = shard_of(k, rank), vs = shard_of(v, rank);
  o->assign(size_t(B * L * H * D), std::numeric_limits<float>::quiet_NaN());
  lse->assign(size_t(B * L * H), -INFINITY);

  kern::CpuPassParams pp;
  pp.q = qs.data();
  pp.q_batch_stride = L * H * D;
  pp.q_row_stride = H * D;
  pp.batch = B;
  pp.heads = H;
  pp.head_dim = D;
  pp.scale = float(c.scale > 0 ? c.scale : 1.0 / std::sqrt(double(D)));
  pp.causal = c.causal;
  pp.o_acc = o->data();
  pp.lse_acc = lse->data();
  pp.lse_batch_stride = L * H;
  pp.lse_row_stride = H;
  auto run = [&](int step, const kern::KeySource& src) {
    for (const Pass& ps : plan.passes) {
      if (ps.step != step) continue;
      pp.src = src;
      pp.tiles = plan.tiles.data() + ps.tile_begin;
      pp.num_tiles = ps.tile_end - ps.tile_begin;
      kern::cpu_forward_pass(pp);
    }
  };
  run(0, kern::KeySource{ks.data(), vs.data(), L * H * D, H * D, D, nullptr});
  for (const PlanStep& st : plan.steps) {
    if (st.recv.empty()) continue;
    const std::vector<float> blk = pack_block(st.recv, L, k, v, B, N, H, D);
    run(st.step, block_source(st.recv, blk.data(), int64_t(sizeof(float)), B, L, H, D, plan.key_index.data()));
  }
  for (size_t i = 0; i < lse->size(); ++i)
    if ((*lse)[i] == -INFINITY)
      for (int64_t d = 0; d < D; ++d) (*o)[i * size_t(D) + size_t(d)] = 0.f;
  if (plan_out) *plan_out = plan;
}

}  // namespace ringattn::test

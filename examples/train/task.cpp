#include "task.hpp"

#include <numeric>

namespace train {
namespace {

// splitmix64: a fixed, portable generator (std:: distributions are not the
// same across standard libraries, and the data must be).
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, n) by multiply-shift (bias < n / 2^64).
  int64_t below(int64_t n) { return int64_t((unsigned __int128)next() * uint64_t(n) >> 64); }
};

}  // namespace

int64_t TaskSpec::pair_cells() const {
  const int64_t end = query_start() - gap;  // a pair cell must end by here
  return end > 0 ? end / cell : 0;
}

ringattn::Status validate_task(const TaskSpec& t) {
  using ringattn::InvalidArgument;
  const auto s = [](int64_t x) { return std::to_string(x); };
  if (t.cell < 3) return InvalidArgument("--cell " + s(t.cell) + " is below 3 (a query cell holds Q, key, value)");
  if (t.seq % t.cell != 0)
    return InvalidArgument("--seq " + s(t.seq) + " is not a multiple of the cell size --cell " + s(t.cell));
  if (t.keys < t.pairs)
    return InvalidArgument("--keys " + s(t.keys) + " is below --pairs " + s(t.pairs) + " (keys are distinct within a sequence)");
  if (t.pair_cells() < t.pairs)
    return InvalidArgument("--pairs " + s(t.pairs) + " do not fit: --seq " + s(t.seq) + " has room for " +
                           s(t.pair_cells()) + " pair cells of " + s(t.cell) + " tokens before the " + s(t.pairs) +
                           " query cells and the --gap of " + s(t.gap) + " tokens (allowed: pairs <= " +
                           s((t.seq - t.gap) / (2 * t.cell)) + ")");
  return ringattn::Status::Ok();
}

Sequence make_sequence(const TaskSpec& t, uint64_t seed, uint64_t stream, uint64_t index) {
  Rng rng{seed * 0x2545F4914F6CDD1Dull ^ (stream + 1) * 0x9E3779B97F4A7C15ull ^ index * 0xD1B54A32D192ED03ull};
  rng.next();
  Sequence q;
  q.tokens.resize(size_t(t.seq));
  for (auto& x : q.tokens) x = int32_t(rng.below(t.filler));
  // Distinct keys and distinct pair cells: partial Fisher-Yates shuffles.
  std::vector<int64_t> keys(size_t(t.keys)), cells(size_t(t.pair_cells())), order(size_t(t.pairs));
  std::iota(keys.begin(), keys.end(), 0);
  std::iota(cells.begin(), cells.end(), 0);
  std::iota(order.begin(), order.end(), 0);
  auto shuffle_prefix = [&](std::vector<int64_t>& v, int64_t n) {
    for (int64_t i = 0; i < n; ++i) std::swap(v[size_t(i)], v[size_t(i + rng.below(int64_t(v.size()) - i))]);
  };
  shuffle_prefix(keys, t.pairs);
  shuffle_prefix(cells, t.pairs);
  shuffle_prefix(order, t.pairs);
  std::vector<int64_t> value(size_t(t.pairs));
  for (int64_t i = 0; i < t.pairs; ++i) {
    value[size_t(i)] = rng.below(t.values);
    const int64_t p = cells[size_t(i)] * t.cell;
    q.tokens[size_t(p)] = int32_t(t.key_token(keys[size_t(i)]));
    q.tokens[size_t(p + 1)] = int32_t(t.value_token(value[size_t(i)]));
  }
  for (int64_t j = 0; j < t.pairs; ++j) {
    const int64_t i = order[size_t(j)];
    const int64_t p = t.query_start() + j * t.cell;
    q.tokens[size_t(p)] = int32_t(t.query_token());
    q.tokens[size_t(p + 1)] = int32_t(t.key_token(keys[size_t(i)]));
    q.tokens[size_t(p + 2)] = int32_t(t.value_token(value[size_t(i)]));
    q.answer_pos.push_back(p + 1);
    q.answer.push_back(int32_t(t.value_token(value[size_t(i)])));
  }
  return q;
}

}  // namespace train

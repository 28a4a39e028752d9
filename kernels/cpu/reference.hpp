// The float64 reference: SPEC.md read line by line, with no planner, no
// tiles and no sharding. It is the oracle of every test and of `verify`.
// It takes its own plain description of the problem, so it shares no type
// (and no code) with the runtime it checks.
#pragma once
#include <cstdint>
#include <functional>
#include <utility>
#include <vector>

namespace ringattn::kern {

struct RefProblem {
  std::vector<std::pair<int64_t, int64_t>> branches;  // (w, r) of every branch
  int64_t heads = 0, head_dim = 0;
  bool causal = false;
  double scale = 0.0;            // <= 0 means 1/sqrt(head_dim)
  bool blocked_offsets = false;  // head offsets: false = interleaved (h mod r), true = blocked
};

struct RefOptions {
  // Worker threads (>= 1). Each output row is computed by one thread with the
  // same sequential arithmetic, so the result is bit-identical for any count.
  int threads = 1;
  // Called with the fraction of rows done, from the calling thread only, at
  // most once per progress_interval_s and once with 1.0 at the end.
  std::function<void(double fraction)> progress;
  double progress_interval_s = 1.0;
};

// q, k, v: batch x seq x heads x head_dim (whole sequence). Computes the
// rows [t0, t1) of every batch element: o is batch x (t1-t0) x heads x
// head_dim, lse is batch x (t1-t0) x heads (natural log; -inf where no
// branch selects the token).
void reference_forward(const RefProblem& c, int64_t batch, int64_t seq, const double* q, const double* k,
                       const double* v, int64_t t0, int64_t t1, double* o, double* lse,
                       const RefOptions& options = {});

}  // namespace ringattn::kern

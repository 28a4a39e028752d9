// The float64 reference: SPEC.md read line by line, with no planner, no
// tiles and no sharding. It is the oracle of every test and of `verify`.
// reference_forward gives O and LSE, reference_backward the exact gradient.
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

// The exact gradient of SPEC.md section 4 ("Backward"), in float64, over the
// whole sequence. Inputs, all batch x seq x heads (x head_dim), token-major:
// q, k, v; o and lse as reference_forward gives them (lse natural log, -inf
// where no branch selects the token); dout = dL/dO. Outputs dq, dk, dv, each
// batch x seq x heads x head_dim, are overwritten:
//   Delta[t] = <dO[t], O[t]>;  P(t,u) = exp(x(t,u) - LSE[t]) with the merged LSE;
//   for every branch i and u in A_i(t,h):
//     dV[u] += P dO[t];  dS = P (<dO[t], V[u]> - Delta[t]);
//     dQ[t] += scale dS K[u];  dK[u] += scale dS Q[t].
// A key two branches select counts twice; a token no branch selects for a
// head gets zero dQ, dK, dV there (never NaN).
// Threads: each output row (b, t) is written by one thread, which computes
// dQ[t] over t's keys and dK[t], dV[t] over t's queries (u in A_i(t', h) iff
// t' in I_i(u, h), t' >= u if causal) with the same sequential arithmetic, so
// the result is bit-identical for any thread count. Every pair's P is thus
// computed twice (2x the forward's exp work). Progress as reference_forward.
void reference_backward(const RefProblem& c, int64_t batch, int64_t seq, const double* q, const double* k,
                        const double* v, const double* o, const double* lse, const double* dout, double* dq,
                        double* dk, double* dv, const RefOptions& options = {});

// The same, for the rows [t0, t1) only (one rank's shard, as `verify` needs):
// dq, dk, dv are batch x (t1-t0) x heads x head_dim and hold the gradients of
// those tokens. q, k, v, o, lse, dout are still the whole sequence (the
// queries that see a key of the shard may lie anywhere in its segments).
// Bit-identical to the same rows of the whole-sequence call.
void reference_backward(const RefProblem& c, int64_t batch, int64_t seq, const double* q, const double* k,
                        const double* v, const double* o, const double* lse, const double* dout, int64_t t0,
                        int64_t t1, double* dq, double* dk, double* dv, const RefOptions& options = {});

}  // namespace ringattn::kern

// The float64 reference: SPEC.md read line by line, with no planner, no
// tiles and no sharding. It is the oracle of every test and of `verify`.
#pragma once
#include <cstdint>
#include <vector>

#include "ringattn/config.hpp"

namespace ringattn::kern {

// q, k, v: batch x seq x heads x head_dim (whole sequence). Computes the
// rows [t0, t1) of every batch element: o is batch x (t1-t0) x heads x
// head_dim, lse is batch x (t1-t0) x heads (natural log; -inf where no
// branch selects the token).
void reference_forward(const Config& c, int64_t batch, int64_t seq, const double* q, const double* k,
                       const double* v, int64_t t0, int64_t t1, double* o, double* lse);

}  // namespace ringattn::kern

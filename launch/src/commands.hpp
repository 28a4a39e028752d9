// One function per command, each collective over the world: it returns the
// error all ranks agreed on (main ends the job with it) or OK with the exit
// code in *rc (verify: 1 when the check FAILED).
#pragma once
#include "ops.hpp"
#include "options.hpp"

namespace ringattn::cli {

Status run_command(const Options& o, const Op& op, Context& ctx, const Problem& p, int* rc);     // run.cpp
Status verify_command(const Options& o, const Op& op, Context& ctx, const Problem& p, int* rc);  // verify.cpp
Status bench_command(const Options& o, const Op& op, Context& ctx, const Problem& p, int* rc);   // bench.cpp
// bench --scaling: makes a Context per sub-run on the first g ranks.
Status scaling_command(const Options& o, const Op& op, int* rc);  // bench.cpp

}  // namespace ringattn::cli

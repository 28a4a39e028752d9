// Test-only fault injection: RINGATTN_INJECT_FAULT="rank=R,step=S[,mode=exit|error][,forward=F]"
// makes rank R die (exit) or leave the ring with an error (error) just before
// ring step S is posted (before the transport group that holds it: over nccl
// the first slots' steps go out together, before the local step) (of its F-th
// ring run, counting from 1; default: every run; a backward is a run of its
// own, after its forward's),
// so tests can prove that every other rank ends within --timeout. With F > 1
// the NCCL connections already exist, so the peers' forwards return with their
// work in flight and the failure surfaces in synchronize().
#pragma once
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "ringattn/status.hpp"

namespace ringattn {

struct FaultPlan {
  int rank = -1, step = -1, forward = -1;
  bool exit_process = true;
  int forwards_seen = 0;  // ring runs (forwards and backwards) started by this executor
  static FaultPlan from_env() {
    FaultPlan f;
    const char* e = std::getenv("RINGATTN_INJECT_FAULT");
    if (!e || !*e) return f;
    std::string s(e);
    size_t pos = 0;
    while (pos < s.size()) {
      size_t comma = s.find(',', pos);
      std::string kv = s.substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
      auto eq = kv.find('=');
      if (eq != std::string::npos) {
        std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
        if (k == "rank") f.rank = std::atoi(v.c_str());
        else if (k == "step") f.step = std::atoi(v.c_str());
        else if (k == "mode") f.exit_process = v != "error";
        else if (k == "forward") f.forward = std::atoi(v.c_str());
      }
      if (comma == std::string::npos) break;
      pos = comma + 1;
    }
    return f;
  }
  // Called at the start of every ring run.
  void next_forward() { ++forwards_seen; }
  // Called before each ring step's exchange.
  Status check(int rank_now, int step_now) const {
    if (rank_now != rank || step_now != step || (forward > 0 && forwards_seen != forward)) return Status::Ok();
    if (exit_process) {
      std::fprintf(stderr, "ringattn: injected fault: rank %d exits at ring step %d\n", rank, step);
      std::fflush(stderr);
      std::_Exit(3);
    }
    return Status(StatusCode::kInternal, "injected fault: rank " + std::to_string(rank) + " fails at ring step " +
                                             std::to_string(step));
  }
};

}  // namespace ringattn

// A two-valued setting from the environment, for A/B runs of the backends
// (README, "Status and limits"): NAME unset or empty leaves *out as it is (the
// caller's default, which may come from the config); NAME=`dflt` sets *out =
// !other_is and NAME=`other` sets *out = other_is, so either value overrides
// it; anything else is an error naming the variable, its value and the two
// allowed values.
#pragma once
#include <cstdlib>
#include <string>

#include "ringattn/status.hpp"

namespace ringattn {

inline Status env_choice(const char* name, const char* dflt, const char* other, bool other_is, bool* out) {
  const char* e = std::getenv(name);
  if (e == nullptr || *e == '\0') return Status::Ok();
  if (std::string(e) == dflt) {
    *out = !other_is;
    return Status::Ok();
  }
  if (std::string(e) != other)
    return InvalidArgument(std::string(name) + "='" + e + "' (allowed: " + dflt + ", " + other + ")");
  *out = other_is;
  return Status::Ok();
}

}  // namespace ringattn

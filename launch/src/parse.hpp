// Strict parsing of command-line values, shared by `ringattn` and the
// examples (header only, so an example needs no extra library):
//   parse_count  a whole-string integer in [lo, hi], optional binary suffix
//                k/K (2^10), m/M (2^20), g/G (2^30); overflow is an error,
//                never a wrap-around
//   parse_real   a whole-string finite number in [lo, hi]
//   parse_bool   true | false (nothing else)
// Every error names the flag, the value and what is allowed.
#pragma once
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "ringattn/status.hpp"

namespace ringattn::cli {

inline Status parse_count(const std::string& flag, const std::string& text, int64_t lo, int64_t hi, int64_t* out) {
  const Status bad = InvalidArgument(flag + " '" + text + "' is not an integer in [" + std::to_string(lo) + ", " +
                                     std::to_string(hi) + "] (suffixes: k = 2^10, M = 2^20, G = 2^30)");
  // strtoll alone accepts leading blanks and '+': a value starts with a digit or '-'.
  if (text.empty() || !(std::isdigit(static_cast<unsigned char>(text[0])) || text[0] == '-')) return bad;
  char* end = nullptr;
  errno = 0;
  long long x = std::strtoll(text.c_str(), &end, 10);
  if (errno != 0 || end == text.c_str()) return bad;
  long long mul = 1;
  if (*end) {
    const char s = *end;
    if (end[1] != 0) return bad;
    if (s == 'k' || s == 'K') mul = 1ll << 10;
    else if (s == 'm' || s == 'M') mul = 1ll << 20;
    else if (s == 'g' || s == 'G') mul = 1ll << 30;
    else return bad;
  }
  long long v = 0;
  if (__builtin_mul_overflow(x, mul, &v) || v < lo || v > hi) return bad;
  *out = v;
  return Status::Ok();
}

inline Status parse_real(const std::string& flag, const std::string& text, double lo, double hi, double* out) {
  char* end = nullptr;
  errno = 0;
  const double x = text.empty() || std::isspace(static_cast<unsigned char>(text[0])) ? NAN : std::strtod(text.c_str(), &end);
  if (text.empty() || errno != 0 || !end || *end != 0 || !std::isfinite(x) || x < lo || x > hi) {
    char range[96];
    std::snprintf(range, sizeof(range), "[%g, %g]", lo, hi);
    return InvalidArgument(flag + " '" + text + "' is not a number in " + range);
  }
  *out = x;
  return Status::Ok();
}

inline Status parse_bool(const std::string& flag, const std::string& text, bool* out) {
  if (text == "true" || text == "false") {
    *out = text == "true";
    return Status::Ok();
  }
  return InvalidArgument(flag + "=" + text + " (allowed: " + flag + ", " + flag + "=true or " + flag + "=false)");
}

}  // namespace ringattn::cli

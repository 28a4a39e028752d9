// For front ends (the CLI, examples, benchmarks, tests), apart from the
// library's API: names and parsing of the config's values, the named
// configurations of docs/SPEC.md and its count of useful FLOPs. The runtime
// itself needs none of it.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ringattn/config.hpp"

namespace ringattn {

Status parse_dtype(const std::string& s, DType* out);
Status parse_backend(const std::string& s, Backend* out);
Status parse_transport(const std::string& s, Transport* out);
Status parse_head_offsets(const std::string& s, HeadOffsets* out);

// "2048:1,4096:2" -> branches.
Status parse_branches(const std::string& s, std::vector<Branch>* out);
std::string format_branches(const std::vector<Branch>& b);

// Named configurations of docs/SPEC.md: longnet4, longnet-paper, geometric (needs
// N), dense (needs N).
Status named_branches(const std::string& name, int64_t seq, std::vector<Branch>* out);
const std::vector<std::string>& named_config_names();

// Useful forward FLOPs of docs/SPEC.md for the whole sequence (all ranks).
double useful_flops(const Config& c, const Shape& s);

}  // namespace ringattn

// Minimal .npy (format 1.0/2.0/3.0) reading of an element range and writing
// of a whole array: little-endian float64/float32/float16, C order. A header
// that does not parse (a dimension beyond int64, a size that overflows, a
// file shorter than its shape) is an error naming the file.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "ringattn/status.hpp"

namespace ringattn::npy {

struct Header {
  std::string descr;  // "<f4", "<f2", "<f8"
  std::vector<int64_t> shape;
  size_t data_offset = 0;
  size_t elem_size() const { return descr == "<f8" ? 8 : descr == "<f4" ? 4 : 2; }
  std::string shape_text() const;  // "(1, 256, 2, 8)"
};

Status read_header(const std::string& path, Header* h);
// Reads elements [first, first + count) (flat C-order index) as float.
Status read_floats(const std::string& path, const Header& h, int64_t first, int64_t count, float* out);
// Writes a float32 array of the given shape; every write and the close checked.
Status write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data);

}  // namespace ringattn::npy

#include "npy.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "convert.hpp"
#include "files.hpp"

namespace ringattn::npy {
namespace {

// The most elements a .npy may hold here (bytes must fit an int64 with room).
constexpr int64_t kMaxElements = int64_t(1) << 56;

struct File {
  FILE* f = nullptr;
  ~File() {
    if (f) std::fclose(f);
  }
};

Status bad(const std::string& path, const std::string& what) { return InvalidArgument("'" + path + "': " + what); }

std::string dict_value(const std::string& dict, const std::string& key) {
  auto k = dict.find("'" + key + "'");
  if (k == std::string::npos) return "";
  auto colon = dict.find(':', k);
  if (colon == std::string::npos) return "";
  size_t i = colon + 1;
  while (i < dict.size() && dict[i] == ' ') ++i;
  if (i >= dict.size()) return "";
  if (dict[i] == '\'') {
    auto e = dict.find('\'', i + 1);
    return e == std::string::npos ? "" : dict.substr(i + 1, e - i - 1);
  }
  if (dict[i] == '(') {
    auto e = dict.find(')', i);
    return e == std::string::npos ? "" : dict.substr(i, e - i + 1);
  }
  auto e = dict.find_first_of(",}", i);
  return dict.substr(i, e == std::string::npos ? std::string::npos : e - i);
}

// "(2, 3, 4)" -> {2, 3, 4}; every dimension and their product within kMaxElements.
Status parse_shape(const std::string& path, const std::string& text, std::vector<int64_t>* shape) {
  shape->clear();
  int64_t product = 1;
  for (size_t i = 1; i < text.size();) {
    while (i < text.size() && (text[i] == ' ' || text[i] == ',')) ++i;
    if (i >= text.size() || text[i] == ')') break;
    size_t e = i;
    int64_t d = 0;
    for (; e < text.size() && text[e] >= '0' && text[e] <= '9'; ++e) {
      if (d > (kMaxElements - (text[e] - '0')) / 10)
        return bad(path, "shape " + text + " has a dimension above " + std::to_string(kMaxElements) + " elements");
      d = d * 10 + (text[e] - '0');
    }
    if (e == i) return bad(path, "malformed shape '" + text + "'");
    if (d > 0 && product > kMaxElements / d)
      return bad(path, "shape " + text + " holds more than " + std::to_string(kMaxElements) + " elements");
    product *= d;
    shape->push_back(d);
    i = e;
  }
  return Status::Ok();
}

}  // namespace

std::string Header::shape_text() const {
  std::string x = "(";
  for (size_t i = 0; i < shape.size(); ++i) x += (i ? ", " : "") + std::to_string(shape[i]);
  return x + ")";
}

Status read_header(const std::string& path, Header* h) {
  File fh;
  fh.f = std::fopen(path.c_str(), "rb");
  if (!fh.f) return bad(path, std::string("cannot open (") + std::strerror(errno) + ")");
  unsigned char magic[8];
  if (std::fread(magic, 1, 8, fh.f) != 8 || std::memcmp(magic, "\x93NUMPY", 6) != 0) return bad(path, "not a .npy file (bad magic)");
  size_t hlen = 0, pre = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    if (std::fread(b, 1, 2, fh.f) != 2) return bad(path, "truncated header");
    hlen = b[0] | (size_t(b[1]) << 8);
    pre = 10;
  } else if (magic[6] == 2 || magic[6] == 3) {
    unsigned char b[4];
    if (std::fread(b, 1, 4, fh.f) != 4) return bad(path, "truncated header");
    hlen = b[0] | (size_t(b[1]) << 8) | (size_t(b[2]) << 16) | (size_t(b[3]) << 24);
    pre = 12;
  } else {
    return bad(path, "unsupported .npy version " + std::to_string(magic[6]));
  }
  if (hlen > (1u << 20)) return bad(path, "header too large");
  std::string dict(hlen, '\0');
  if (std::fread(&dict[0], 1, hlen, fh.f) != hlen) return bad(path, "truncated header");
  h->descr = dict_value(dict, "descr");
  if (h->descr != "<f4" && h->descr != "<f2" && h->descr != "<f8")
    return bad(path, "dtype '" + h->descr + "' is not supported (allowed: <f8, <f4, <f2)");
  if (dict_value(dict, "fortran_order").find("False") == std::string::npos)
    return bad(path, "Fortran-order arrays are not supported (save with C order)");
  const std::string shape = dict_value(dict, "shape");
  RINGATTN_RETURN_IF_ERROR(parse_shape(path, shape, &h->shape));
  h->data_offset = pre + hlen;
  int64_t n = 1;
  for (int64_t d : h->shape) n *= d;
  if (std::fseek(fh.f, 0, SEEK_END) != 0) return bad(path, "cannot seek");
  const long size = std::ftell(fh.f);
  if (size < 0 || size_t(size) < h->data_offset + size_t(n) * h->elem_size())
    return bad(path, "file is shorter than its shape " + shape + " says (truncated?)");
  return Status::Ok();
}

Status read_floats(const std::string& path, const Header& h, int64_t first, int64_t count, float* out) {
  File fh;
  fh.f = std::fopen(path.c_str(), "rb");
  if (!fh.f) return bad(path, std::string("cannot open (") + std::strerror(errno) + ")");
  const size_t es = h.elem_size();
  if (std::fseek(fh.f, long(h.data_offset + size_t(first) * es), SEEK_SET) != 0) return bad(path, "cannot seek");
  std::vector<unsigned char> buf(size_t(count) * es);
  if (std::fread(buf.data(), 1, buf.size(), fh.f) != buf.size()) return bad(path, "short read");
  if (es == 8) {
    std::vector<double> d(static_cast<size_t>(count));
    std::memcpy(d.data(), buf.data(), buf.size());
    std::copy(d.begin(), d.end(), out);  // float64 -> float32
  } else {
    cli::decode(es == 4 ? DType::f32 : DType::f16, buf.data(), size_t(count), out);
  }
  return Status::Ok();
}

Status write_f32(const std::string& path, const std::vector<int64_t>& shape, const float* data) {
  std::string dims;
  int64_t n = 1;
  for (size_t i = 0; i < shape.size(); ++i) {
    dims += (i ? ", " : "") + std::to_string(shape[i]);
    n *= shape[i];
  }
  if (shape.size() == 1) dims += ",";
  std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  const size_t total = 10 + dict.size() + 1;
  dict += std::string((64 - total % 64) % 64, ' ') + "\n";
  const unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, uint8_t(dict.size() & 0xff), uint8_t(dict.size() >> 8)};
  cli::OutFile f;
  RINGATTN_RETURN_IF_ERROR(f.open(path));
  RINGATTN_RETURN_IF_ERROR(f.write(pre, sizeof(pre)));
  RINGATTN_RETURN_IF_ERROR(f.write(dict.data(), dict.size()));
  RINGATTN_RETURN_IF_ERROR(f.write(data, size_t(n) * 4));
  return f.close();
}

}  // namespace ringattn::npy

#include "npy.hpp"

#include <cstdio>
#include <cstring>
#include <memory>

#include "kernels/common/convert.hpp"

namespace ringattn::npy {
namespace {

struct File {
  FILE* f = nullptr;
  ~File() {
    if (f) std::fclose(f);
  }
};

Status io(const std::string& path, const std::string& what) {
  return Status(StatusCode::kIoError, "'" + path + "': " + what);
}

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

}  // namespace

Status read_header(const std::string& path, Header* h) {
  File fh;
  fh.f = std::fopen(path.c_str(), "rb");
  if (!fh.f) return io(path, std::string("cannot open (") + std::strerror(errno) + ")");
  unsigned char magic[8];
  if (std::fread(magic, 1, 8, fh.f) != 8 || std::memcmp(magic, "\x93NUMPY", 6) != 0)
    return io(path, "not a .npy file (bad magic)");
  size_t hlen = 0, pre = 0;
  if (magic[6] == 1) {
    unsigned char b[2];
    if (std::fread(b, 1, 2, fh.f) != 2) return io(path, "truncated header");
    hlen = b[0] | (size_t(b[1]) << 8);
    pre = 10;
  } else if (magic[6] == 2 || magic[6] == 3) {
    unsigned char b[4];
    if (std::fread(b, 1, 4, fh.f) != 4) return io(path, "truncated header");
    hlen = b[0] | (size_t(b[1]) << 8) | (size_t(b[2]) << 16) | (size_t(b[3]) << 24);
    pre = 12;
  } else {
    return io(path, "unsupported .npy version " + std::to_string(magic[6]));
  }
  if (hlen > (1u << 20)) return io(path, "header too large");
  std::string dict(hlen, '\0');
  if (std::fread(&dict[0], 1, hlen, fh.f) != hlen) return io(path, "truncated header");
  h->descr = dict_value(dict, "descr");
  if (h->descr != "<f4" && h->descr != "<f2" && h->descr != "<f8")
    return InvalidArgument("'" + path + "': dtype '" + h->descr + "' is not supported (allowed: <f8, <f4, <f2)");
  if (dict_value(dict, "fortran_order").find("False") == std::string::npos)
    return InvalidArgument("'" + path + "': Fortran-order arrays are not supported (save with C order)");
  std::string shape = dict_value(dict, "shape");
  h->shape.clear();
  for (size_t i = 1; i < shape.size();) {
    while (i < shape.size() && (shape[i] == ' ' || shape[i] == ',')) ++i;
    if (i >= shape.size() || shape[i] == ')') break;
    size_t e = i;
    while (e < shape.size() && std::isdigit(static_cast<unsigned char>(shape[e]))) ++e;
    if (e == i) return io(path, "malformed shape '" + shape + "'");
    h->shape.push_back(std::stoll(shape.substr(i, e - i)));
    i = e;
  }
  h->data_offset = pre + hlen;
  int64_t n = 1;
  for (int64_t d : h->shape) n *= d;
  if (std::fseek(fh.f, 0, SEEK_END) != 0) return io(path, "cannot seek");
  long size = std::ftell(fh.f);
  if (size < 0 || size_t(size) < h->data_offset + size_t(n) * h->elem_size())
    return io(path, "file is shorter than its shape " + shape + " says (truncated?)");
  return Status::Ok();
}

Status read_floats(const std::string& path, const Header& h, int64_t first, int64_t count, float* out) {
  File fh;
  fh.f = std::fopen(path.c_str(), "rb");
  if (!fh.f) return io(path, std::string("cannot open (") + std::strerror(errno) + ")");
  const size_t es = h.elem_size();
  if (std::fseek(fh.f, long(h.data_offset + size_t(first) * es), SEEK_SET) != 0) return io(path, "cannot seek");
  std::vector<unsigned char> buf(size_t(count) * es);
  if (std::fread(buf.data(), 1, buf.size(), fh.f) != buf.size()) return io(path, "short read");
  if (es == 8) {
    for (int64_t i = 0; i < count; ++i) {
      double d;
      std::memcpy(&d, buf.data() + size_t(i) * 8, 8);
      out[i] = float(d);
    }
  } else {
    kern::to_float(es == 4 ? kern::ElemKind::f32 : kern::ElemKind::f16, buf.data(), size_t(count), out);
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
  size_t total = 10 + dict.size() + 1;
  size_t pad = (64 - total % 64) % 64;
  dict += std::string(pad, ' ') + "\n";
  File fh;
  fh.f = std::fopen(path.c_str(), "wb");
  if (!fh.f) return io(path, std::string("cannot create (") + std::strerror(errno) + ")");
  unsigned char pre[10] = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0, 0, 0};
  pre[8] = dict.size() & 0xff;
  pre[9] = (dict.size() >> 8) & 0xff;
  if (std::fwrite(pre, 1, 10, fh.f) != 10 || std::fwrite(dict.data(), 1, dict.size(), fh.f) != dict.size() ||
      std::fwrite(data, 4, size_t(n), fh.f) != size_t(n))
    return io(path, "write failed");
  return Status::Ok();
}

}  // namespace ringattn::npy

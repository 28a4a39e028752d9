#include "checkpoint.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace train {
namespace {

using ringattn::Status;
using ringattn::StatusCode;

constexpr char kMagic[16] = {'R', 'I', 'N', 'G', 'A', 'T', 'T', 'N', '-', 'T', 'R', 'A', 'I', 'N', '1', '\n'};

Status io_error(const std::string& what) { return Status(StatusCode::kIoError, what + ": " + std::strerror(errno)); }

uint64_t fnv1a(const char* p, size_t n, uint64_t h = 0xcbf29ce484222325ull) {
  for (size_t i = 0; i < n; ++i) h = (h ^ uint8_t(p[i])) * 0x100000001b3ull;
  return h;
}

std::string fingerprint_text(const Fingerprint& fp) {
  std::string t;
  for (const auto& kv : fp) t += kv.first + "=" + kv.second + "\n";
  return t;
}

template <class T>
void put(std::string* b, const T& x) {
  b->append(reinterpret_cast<const char*>(&x), sizeof(T));
}

}  // namespace

std::string checkpoint_path(const std::string& dir) { return dir + "/checkpoint.bin"; }

Status check_save_dir(const std::string& dir) {
  // Creates the directory and its missing parents (mkdir -p).
  for (size_t at = dir.find('/', 1); ; at = dir.find('/', at + 1)) {
    const std::string part = at == std::string::npos ? dir : dir.substr(0, at);
    if (!part.empty() && ::mkdir(part.c_str(), 0777) != 0 && errno != EEXIST)
      return io_error("--save " + dir + ": cannot create the directory " + part);
    if (at == std::string::npos) break;
  }
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode))
    return Status(StatusCode::kIoError, "--save " + dir + ": not a directory");
  const std::string probe = checkpoint_path(dir) + ".tmp";
  std::FILE* f = std::fopen(probe.c_str(), "wb");
  if (!f) return io_error("--save " + dir + ": cannot write " + probe);
  if (std::fclose(f) != 0) return io_error("--save " + dir + ": cannot write " + probe);
  if (std::remove(probe.c_str()) != 0) return io_error("--save " + dir + ": cannot remove " + probe);
  return Status::Ok();
}

Status save_checkpoint(const std::string& dir, const Fingerprint& fp, const TrainState& s) {
  std::string b(kMagic, sizeof(kMagic));
  const std::string text = fingerprint_text(fp);
  put(&b, uint64_t(text.size()));
  b += text;
  put(&b, int64_t(s.step));
  put(&b, int64_t(s.w.size()));
  for (const auto* t : {&s.w, &s.m, &s.v}) b.append(reinterpret_cast<const char*>(t->data()), t->size() * sizeof(float));
  put(&b, fnv1a(b.data(), b.size()));
  const std::string path = checkpoint_path(dir), tmp = path + ".tmp";
  std::FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return io_error("checkpoint: cannot create " + tmp);
  bool ok = std::fwrite(b.data(), 1, b.size(), f) == b.size() && std::fflush(f) == 0 && ::fsync(fileno(f)) == 0;
  const int err = errno;
  ok = (std::fclose(f) == 0) && ok;
  if (!ok) {
    errno = err ? err : errno;
    const Status st = io_error("checkpoint: cannot write " + tmp + " (the last good " + path + " is kept)");
    std::remove(tmp.c_str());
    return st;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const Status st = io_error("checkpoint: cannot rename " + tmp + " to " + path + " (the last good one is kept)");
    std::remove(tmp.c_str());
    return st;
  }
  return Status::Ok();
}

Status load_checkpoint(const std::string& dir, const Fingerprint& fp, int64_t nparams, TrainState* s, bool subset,
                       const std::string& flag) {
  const std::string path = checkpoint_path(dir);
  std::FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) return io_error(flag + " " + dir + ": cannot open " + path);
  std::string b;
  char chunk[1 << 16];
  size_t got = 0;
  while ((got = std::fread(chunk, 1, sizeof(chunk), f)) > 0) b.append(chunk, got);
  const bool read_error = std::ferror(f) != 0;
  if (std::fclose(f) != 0 || read_error) return io_error(flag + " " + dir + ": cannot read " + path);
  const auto bad = [&](const std::string& why) {
    return Status(StatusCode::kInvalidArgument, flag + " " + dir + ": " + path + " " + why);
  };
  size_t at = 0;
  auto take = [&](void* out, size_t n) {
    if (b.size() - at < n) return false;
    std::memcpy(out, b.data() + at, n);
    at += n;
    return true;
  };
  char magic[sizeof(kMagic)];
  if (!take(magic, sizeof(magic)) || std::memcmp(magic, kMagic, sizeof(kMagic)) != 0)
    return bad("is not a checkpoint of ringattn_train (" + std::to_string(b.size()) + " bytes, no magic)");
  uint64_t text_len = 0;
  if (!take(&text_len, sizeof(text_len)) || text_len > b.size() - at)
    return bad("is truncated (" + std::to_string(b.size()) + " bytes, ends inside its header)");
  const std::string text = b.substr(at, size_t(text_len));
  at += size_t(text_len);
  // Another configuration: name the first option that differs.
  const std::string mine = fingerprint_text(fp);
  if (subset || text != mine) {  // subset: every option of fp must be there, with its value
    for (const auto& kv : fp) {
      const std::string key = "\n" + kv.first + "=";
      const size_t p = ("\n" + text).find(key);
      std::string theirs = "(absent)";
      if (p != std::string::npos) {
        const size_t start = p + key.size() - 1, end = text.find('\n', start);
        theirs = text.substr(start, end == std::string::npos ? std::string::npos : end - start);
      }
      if (theirs != kv.second)
        return bad("was written by another " + std::string(subset ? "model" : "configuration") + ": --" + kv.first +
                   " " + theirs + " there, " + kv.second + " here (" +
                   (subset ? "start from a checkpoint of the same model" : "resume with the options of the saved run") + ")");
    }
    if (!subset) return bad("was written by another configuration (its options: " + text + ")");
  }
  int64_t step = 0, n = 0;
  if (!take(&step, sizeof(step)) || !take(&n, sizeof(n))) return bad("is truncated (" + std::to_string(b.size()) + " bytes)");
  if (n != nparams)
    return bad("holds " + std::to_string(n) + " parameters, this model has " + std::to_string(nparams));
  const size_t expect = at + 3 * size_t(n) * sizeof(float) + sizeof(uint64_t);
  if (b.size() != expect)
    return bad(std::string(b.size() < expect ? "is truncated" : "has trailing bytes") + " (" + std::to_string(b.size()) +
               " bytes, expected " + std::to_string(expect) + ")");
  uint64_t hash = 0;
  std::memcpy(&hash, b.data() + expect - sizeof(uint64_t), sizeof(hash));
  if (hash != fnv1a(b.data(), expect - sizeof(uint64_t))) return bad("is damaged (checksum mismatch)");
  s->step = step;
  for (auto* t : {&s->w, &s->m, &s->v}) {
    t->resize(size_t(n));
    take(t->data(), size_t(n) * sizeof(float));
  }
  return Status::Ok();
}

}  // namespace train

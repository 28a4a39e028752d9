#include "files.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <climits>
#include <cstdlib>
#include <cstring>

namespace ringattn::cli {
namespace {

Status io(const std::string& path, const std::string& what) {
  return Status(StatusCode::kIoError, "'" + path + "': " + what + " (" + std::strerror(errno) + ")");
}

std::string folder_of(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

// A name for the file `path` denotes, equal for two paths of one file:
// device and inode when it exists, else the real path of its folder + name.
std::string identity(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return "inode " + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
  char real[PATH_MAX];
  const std::string dir = folder_of(path), name = path.substr(path.rfind('/') + 1);  // npos + 1 == 0
  return (::realpath(dir.c_str(), real) ? std::string(real) : dir) + "/" + name;
}

Status check_writable(const std::string& flag, const std::string& path) {
  auto bad = [&](const std::string& why) { return InvalidArgument(flag + " '" + path + "': " + why); };
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return bad("is a directory (allowed: a file path)");
    if (::access(path.c_str(), W_OK) != 0) return bad(std::string("cannot be written (") + std::strerror(errno) + ")");
    return Status::Ok();
  }
  if (path.empty() || path.back() == '/') return bad("names a directory (allowed: a file path)");
  const std::string dir = folder_of(path);
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return bad("folder '" + dir + "' does not exist");
  if (::access(dir.c_str(), W_OK | X_OK) != 0) return bad("folder '" + dir + "' cannot be written (" + std::strerror(errno) + ")");
  return Status::Ok();
}

}  // namespace

OutFile::~OutFile() {
  if (f_) std::fclose(f_);
}

Status OutFile::open(const std::string& path) {
  path_ = path;
  f_ = std::fopen(path.c_str(), "wb");
  return f_ ? Status::Ok() : io(path, "cannot create");
}

Status OutFile::write(const void* data, size_t bytes) {
  if (!f_) return Status(StatusCode::kInternal, "'" + path_ + "': write before open");
  return std::fwrite(data, 1, bytes, f_) == bytes ? Status::Ok() : io(path_, "write failed");
}

Status OutFile::close() {
  FILE* f = f_;
  f_ = nullptr;
  if (!f) return Status::Ok();
  const bool flushed = std::fflush(f) == 0;
  const int flush_errno = errno;
  const bool closed = std::fclose(f) == 0;
  if (!flushed) errno = flush_errno;
  return flushed && closed ? Status::Ok() : io(path_, "write failed at close");
}

Status write_file(const std::string& path, const std::string& bytes) {
  OutFile f;
  RINGATTN_RETURN_IF_ERROR(f.open(path));
  RINGATTN_RETURN_IF_ERROR(f.write(bytes.data(), bytes.size()));
  return f.close();
}

Status check_output_paths(const std::vector<std::pair<std::string, std::string>>& outputs) {
  std::vector<std::pair<std::string, std::string>> seen;  // identity, flag
  for (const auto& [flag, path] : outputs) {
    if (path.empty()) continue;
    RINGATTN_RETURN_IF_ERROR(check_writable(flag, path));
    const std::string id = identity(path);
    for (const auto& [other_id, other_flag] : seen)
      if (id == other_id) return InvalidArgument(flag + " '" + path + "' is the file of " + other_flag + " too (allowed: different files)");
    seen.emplace_back(id, flag);
  }
  return Status::Ok();
}

}  // namespace ringattn::cli

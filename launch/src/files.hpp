// Output files: every path checked before any computation, every write and
// the close checked after it (a full disk or /dev/full is an error, not a
// silently short file).
#pragma once
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "ringattn/status.hpp"

namespace ringattn::cli {

class OutFile {
 public:
  OutFile() = default;
  OutFile(const OutFile&) = delete;
  OutFile& operator=(const OutFile&) = delete;
  ~OutFile();
  Status open(const std::string& path);
  Status write(const void* data, size_t bytes);
  Status close();  // flush and close, both checked

 private:
  std::string path_;
  FILE* f_ = nullptr;
};

Status write_file(const std::string& path, const std::string& bytes);

// (flag, path) pairs, empty paths skipped: each must be writable as a file
// (not a directory; an existing folder we may write in), and no two may name
// the same file. Errors are kInvalidArgument naming the flag and the path.
Status check_output_paths(const std::vector<std::pair<std::string, std::string>>& outputs);

}  // namespace ringattn::cli

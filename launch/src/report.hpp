// What a person reads: the header lines, the per-rank tables (one line per
// rank, gathered to rank 0), and JSON. JSON numbers that are not finite are
// written as null (JSON has no inf or nan).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "ops.hpp"
#include "options.hpp"

namespace ringattn::cli {

std::string human(double v, const char* unit);  // 1.23e6, "B" -> "1.23 MB"
double median(std::vector<double> v);

// "# config ...", "# backend ...", "# batch ..." lines.
std::string describe(const Options& o, const Problem& p);

// Collective over p.group; the table on rank 0, "" elsewhere.
std::string rank_table(const Context& ctx, const Problem& p, double own_last_ms);
std::string timeline_table(const Context& ctx, const Problem& p);
std::string cache_table(const Context& ctx, const Problem& p);

// A JSON object, fields in the order added.
class Json {
 public:
  Json& num(const std::string& key, double v);
  Json& integer(const std::string& key, int64_t v);
  Json& str(const std::string& key, const std::string& v);
  Json& boolean(const std::string& key, bool v);
  Json& nums(const std::string& key, const std::vector<double>& v);
  Json& objects(const std::string& key, const std::vector<Json>& v);
  std::string text(int indent = 0) const;  // "{...}"; one field per line when indent >= 0 at the top

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

// Fields every command writes: command, config, branches, backend, shape, ...
Json json_common(const Options& o, const Problem& p);
// Writes `j` to `path` (rank 0), every write and the close checked.
Status write_json(const std::string& path, const Json& j);

}  // namespace ringattn::cli

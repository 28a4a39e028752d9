#include "report.hpp"

#include "ringattn/names.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

#include "files.hpp"
#include "ringattn/device.hpp"

namespace ringattn::cli {
namespace {

std::string quoted(const std::string& s) {
  std::string q = "\"";
  for (char ch : s) {
    if (ch == '"' || ch == '\\') q += '\\';
    if (static_cast<unsigned char>(ch) < 0x20) {
      char u[8];
      std::snprintf(u, sizeof(u), "\\u%04x", ch);
      q += u;
    } else {
      q += ch;
    }
  }
  return q + "\"";
}

std::string number(double v) {
  if (!std::isfinite(v)) return "null";
  char b[32];
  std::snprintf(b, sizeof(b), "%.9g", v);
  return b;
}

// A header line and one line per rank (gathered to rank 0).
std::string table(const Problem& p, const std::string& header, const std::string& mine) {
  std::string out = header;
  for (const std::string& l : gather_lines(p.group, mine)) out += l;
  return p.group.rank == 0 ? out : "";
}

}  // namespace

std::string human(double v, const char* unit) {
  const char* pre[] = {"", "K", "M", "G", "T", "P"};
  int i = 0;
  while (std::fabs(v) >= 1000 && i < 5) v /= 1000, ++i;
  char b[64];
  std::snprintf(b, sizeof(b), "%.3g %s%s", v, pre[i], unit);
  return b;
}

double median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

std::string describe(const Options& o, const Problem& p) {
  const Config& c = p.cfg;
  std::ostringstream ss;
  ss << "# config " << config_label(o) << " (" << format_branches(c.branches) << ")" << (c.causal ? " causal" : "")
     << ", head offsets " << to_string(c.head_offsets) << (c.deterministic ? "" : ", nondeterministic backward") << "\n"
     << "# backend " << to_string(c.backend) << " (" << dev::device_name(c.backend) << "), transport " << to_string(c.transport)
     << ", dtype " << to_string(c.dtype) << ", ranks " << p.group.size << "\n"
     << "# batch " << p.shape.batch << ", tokens " << p.shape.seq << " (" << p.rows() << " per rank), heads " << c.heads
     << ", head_dim " << c.head_dim << "\n";
  return ss.str();
}

std::string rank_table(const Context& ctx, const Problem& p, double own_last_ms) {
  const Stats& st = ctx.stats();
  char line[256];
  std::snprintf(line, sizeof(line), "%6d %10lld %12.3f %14lld %14lld %14lld %10.3f\n", p.group.rank, (long long)p.rows(),
                own_last_ms, (long long)st.last_bytes_sent, (long long)st.last_bytes_ideal, (long long)st.last_bytes_received,
                st.last_plan_ms);
  return table(p, "#  rank     tokens      last_ms     bytes_sent    bytes_ideal  bytes_received    plan_ms\n", line);
}

std::string timeline_table(const Context& ctx, const Problem& p) {
  std::string mine;
  for (const StepTiming& t : ctx.stats().timeline) {
    char line[256];
    std::snprintf(line, sizeof(line), "%6d %5d %6d %6d %12.3f %12.3f %12.3f %14lld %14lld\n", p.group.rank, t.step, t.send_peer,
                  t.recv_peer, t.compute_ms, t.transfer_ms, t.exposed_ms, (long long)t.bytes_sent, (long long)t.bytes_ideal);
    mine += line;
  }
  return table(p,
               "# timeline (last forward)\n"
               "#  rank  step   send   recv   compute_ms  transfer_ms   exposed_ms     bytes_sent    bytes_ideal\n",
               mine);
}

std::string cache_table(const Context& ctx, const Problem& p) {
  const CacheStats& c = ctx.stats().cache;
  char line[512];
  std::snprintf(line, sizeof(line), "%6d %8lld %8lld %6lld %6lld %6lld %6lld %6lld %6lld %6lld %6lld %11lld %11lld %9.3f %9.4f\n",
                p.group.rank, (long long)c.device_hits, (long long)c.host_hits, (long long)c.misses, (long long)c.promotions,
                (long long)c.device_evictions, (long long)c.host_evictions, (long long)c.staged, (long long)c.copies,
                (long long)c.prefetch_waits, (long long)c.plans_held, (long long)c.device_bytes, (long long)c.host_bytes,
                c.build_ms, c.lookup_ms);
  return table(p,
               "# pattern cache\n"
               "#  rank  dev_hit host_hit   miss  promo dev_ev hst_ev staged copies pf_wait plans  dev_bytes  host_bytes  build_ms lookup_ms\n",
               line);
}

Json& Json::num(const std::string& key, double v) {
  fields_.emplace_back(key, number(v));
  return *this;
}
Json& Json::integer(const std::string& key, int64_t v) {
  fields_.emplace_back(key, std::to_string(v));
  return *this;
}
Json& Json::str(const std::string& key, const std::string& v) {
  fields_.emplace_back(key, quoted(v));
  return *this;
}
Json& Json::boolean(const std::string& key, bool v) {
  fields_.emplace_back(key, v ? "true" : "false");
  return *this;
}
Json& Json::nums(const std::string& key, const std::vector<double>& v) {
  std::string a = "[";
  for (size_t i = 0; i < v.size(); ++i) a += (i ? ", " : "") + number(v[i]);
  fields_.emplace_back(key, a + "]");
  return *this;
}
Json& Json::objects(const std::string& key, const std::vector<Json>& v) {
  std::string a = "[\n";
  for (size_t i = 0; i < v.size(); ++i) a += "    " + v[i].text(-1) + (i + 1 < v.size() ? ",\n" : "\n");
  fields_.emplace_back(key, a + "  ]");
  return *this;
}

std::string Json::text(int indent) const {
  const std::string sep = indent >= 0 ? ",\n  " : ", ", open = indent >= 0 ? "{\n  " : "{", close = indent >= 0 ? "\n}\n" : "}";
  std::string s = open;
  for (size_t i = 0; i < fields_.size(); ++i) s += (i ? sep : "") + quoted(fields_[i].first) + ": " + fields_[i].second;
  return s + close;
}

Json json_common(const Options& o, const Problem& p) {
  const Config& c = p.cfg;
  Json j;
  j.str("command", o.command).str("op", o.op).str("config", config_label(o)).str("branches", format_branches(c.branches));
  j.boolean("causal", c.causal).boolean("deterministic", c.deterministic).str("head_offsets", to_string(c.head_offsets));
  j.str("backend", to_string(c.backend));
  j.str("device", dev::device_name(c.backend)).str("transport", to_string(c.transport)).str("dtype", to_string(c.dtype));
  j.integer("ranks", p.group.size).integer("batch", p.shape.batch).integer("tokens", p.shape.seq);
  return j.integer("heads", c.heads).integer("head_dim", c.head_dim);
}

Status write_json(const std::string& path, const Json& j) { return path.empty() ? Status::Ok() : write_file(path, j.text()); }

}  // namespace ringattn::cli

#include "plan/plan_image.hpp"

#include <cstring>

namespace ringattn {
namespace {

constexpr int64_t kAlign = 256;  // every array starts on a 256-byte boundary (coalesced loads)

struct Cursor {
  int64_t at = 0;
  int64_t take(int64_t n) {
    int64_t off = (at + kAlign - 1) & ~(kAlign - 1);
    at = off + n;
    return off;
  }
};

}  // namespace

int64_t PlanImage::meta_bytes() const {
  return int64_t(sizeof(PlanImage)) + int64_t(pass_prefix_offset.size() + send_rows_offset.size() + send_prefix_offset.size()) * 8 +
         int64_t(pass_blocks.size() + pass_key_blocks.size()) * 4;
}

PlanImage layout_plan_image(const Plan& plan, int block_m) {
  PlanImage im;
  im.block_m = block_m;
  Cursor c;
  im.tiles_offset = c.take(int64_t(plan.tiles.size() * sizeof(kern::Tile)));
  im.key_index_offset = c.take(int64_t(plan.key_index.size() * sizeof(int32_t)));
  int64_t entries = 0;
  for (const Pass& ps : plan.passes) {
    im.pass_prefix_offset.push_back(entries);
    int32_t acc = 0, kacc = 0;
    for (int64_t t = ps.tile_begin; t < ps.tile_end; ++t) {
      acc += (plan.tiles[t].q_count + block_m - 1) / block_m;
      kacc += (plan.tiles[t].k_count + im.block_n - 1) / im.block_n;
    }
    im.pass_blocks.push_back(acc);
    im.pass_key_blocks.push_back(kacc);
    entries += ps.tile_end - ps.tile_begin + 1;
  }
  im.prefix_offset = c.take(entries * int64_t(sizeof(int32_t)));
  im.key_prefix_offset = c.take(entries * int64_t(sizeof(int32_t)));
  for (const PlanStep& st : plan.steps) {
    im.send_rows_offset.push_back(c.take(int64_t(st.send.rows.size() * sizeof(int32_t))));
    im.send_prefix_offset.push_back(c.take(int64_t(st.send.head_prefix.size() * sizeof(int32_t))));
  }
  im.bytes = c.at;
  return im;
}

void write_plan_image(const Plan& plan, const PlanImage& im, void* dst) {
  char* base = static_cast<char*>(dst);
  std::memset(base, 0, size_t(im.bytes));
  auto put = [&](int64_t off, const void* p, size_t n) {
    if (n) std::memcpy(base + off, p, n);
  };
  put(im.tiles_offset, plan.tiles.data(), plan.tiles.size() * sizeof(kern::Tile));
  put(im.key_index_offset, plan.key_index.data(), plan.key_index.size() * sizeof(int32_t));
  int32_t* prefix = reinterpret_cast<int32_t*>(base + im.prefix_offset);
  int32_t* key_prefix = reinterpret_cast<int32_t*>(base + im.key_prefix_offset);
  for (size_t p = 0; p < plan.passes.size(); ++p) {
    const Pass& ps = plan.passes[p];
    int32_t* out = prefix + im.pass_prefix_offset[p];
    int32_t* kout = key_prefix + im.pass_prefix_offset[p];
    int32_t acc = 0, kacc = 0;
    for (int64_t t = ps.tile_begin; t < ps.tile_end; ++t) {
      *out++ = acc;
      *kout++ = kacc;
      acc += (plan.tiles[t].q_count + im.block_m - 1) / im.block_m;
      kacc += (plan.tiles[t].k_count + im.block_n - 1) / im.block_n;
    }
    *out = acc;
    *kout = kacc;
  }
  for (size_t s = 0; s < plan.steps.size(); ++s) {
    const RowList& rl = plan.steps[s].send;
    put(im.send_rows_offset[s], rl.rows.data(), rl.rows.size() * sizeof(int32_t));
    put(im.send_prefix_offset[s], rl.head_prefix.data(), rl.head_prefix.size() * sizeof(int32_t));
  }
}

PlanImage build_plan_image(const Plan& plan, int block_m) {
  PlanImage im = layout_plan_image(plan, block_m);
  im.blob.resize(size_t(im.bytes));
  write_plan_image(plan, im, im.blob.data());
  return im;
}

}  // namespace ringattn

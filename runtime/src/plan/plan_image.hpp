// The device image of a plan: every array the CUDA executor reads, laid out
// in one blob so that one copy moves a whole plan (and one batched copy
// several). Host only: the cache writes the blob into (pinned) host memory
// and copies it; the executor turns (device base + offset) into pointers.
//
// Blob (each array 256-byte aligned, padding zeroed so images compare
// bytewise):
//   tiles      kern::Tile[plan.tiles.size()]
//   key_index  int32[plan.key_index.size()]
//   prefix     per pass p: int32[num_tiles(p) + 1], the first CTA (query block
//              of block_m rows) of each tile; prefix[num_tiles] = CTAs of the pass
//   key_prefix per pass p: the same for key blocks of kImageBlockN keys (the
//              backward's key-major items), at the same entry offsets
//   per plan step s: send_rows int32[steps[s].send.rows.size()],
//                    send_prefix int32[heads + 1]
#pragma once
#include <cstdint>
#include <vector>

#include "plan/plan.hpp"

namespace ringattn {

// Keys per key-major work item of the CUDA backward (kern::cuda::kBwdBlockN;
// the executor checks that they agree).
constexpr int kImageBlockN = 128;

struct PlanImage {
  int block_m = 0;
  int block_n = kImageBlockN;
  int64_t bytes = 0;  // size of the blob
  int64_t tiles_offset = 0, key_index_offset = 0, prefix_offset = 0, key_prefix_offset = 0;  // bytes
  std::vector<int64_t> pass_prefix_offset;  // per pass: entries into prefix (and key_prefix)
  std::vector<int32_t> pass_blocks;         // per pass: CTAs per batch element
  std::vector<int32_t> pass_key_blocks;     // per pass: key blocks per batch element
  std::vector<int64_t> send_rows_offset, send_prefix_offset;  // per plan step, bytes
  std::vector<char> blob;  // filled by build_plan_image only (the cache writes elsewhere)

  // Host bookkeeping of the image, not counting the blob.
  int64_t meta_bytes() const;
};

// Offsets and host-side tables only (no blob).
PlanImage layout_plan_image(const Plan& plan, int block_m);
// Writes the blob described by `layout` to dst (layout.bytes bytes).
void write_plan_image(const Plan& plan, const PlanImage& layout, void* dst);
// Both, the blob in PlanImage::blob.
PlanImage build_plan_image(const Plan& plan, int block_m);

// Typed pointer into an image at `base` (host or device).
template <typename T>
inline const T* image_at(const void* base, int64_t offset) {
  return reinterpret_cast<const T*>(static_cast<const char*>(base) + offset);
}

}  // namespace ringattn

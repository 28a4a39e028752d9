// Compile-time geometry of the fused dilated attention forward: tile sizes,
// threads and registers per role, and the shared-memory layout of a CTA.
//
// 3 warpgroups per CTA, one CTA per SM:
//   warpgroup 0, the producer (load.cuh): gathers Q and K/V rows;
//   warpgroups 1 and 2, the consumers (mainloop_fwd.cuh, epilogue.cuh):
//   64 query rows each of a kBlockM-row query block.
// Shared memory: Q | K stages | V stages | O staging | staging flags |
// mbarriers | work item; Q, K and V in the 128-byte-swizzled layout of swz()
// (based on a 1024-byte boundary), the O staging tiles in that of epi_swz().
#pragma once
#include <cstdint>
#include <cuda_runtime.h>
#include "kernels/cuda/attention_fwd.hpp"
#include "kernels/cuda/sm90_ptx.cuh"

namespace ringattn::kern::cuda::detail {

// What the producer tells the consumers about a work item (shared memory).
struct WorkItem {
  int64_t q_row0;  // of the tile (first query row, local shard)
  int32_t q_stride, head;
  int32_t m0;        // first query of this block inside the tile
  int32_t q_rows;    // valid query rows of this block (<= kBlockM)
  int32_t n_blocks;  // key blocks to visit (causal trims the tail)
  int32_t diag;      // key j is visible to query i iff j <= diag + i (clamped to +-2^30)
  int32_t k_count;
  int32_t batch;
  int32_t seg_len;   // packed segments (Tile::seg_len): key j visible to query i only if j / seg_len == i / seg_len
};
// The dynamic scheduler's two `next` slots follow the item at +48 (SmemLayout).
static_assert(sizeof(WorkItem) <= 48, "WorkItem ends before the next-item slots");

template <typename Elem, int kHeadDim_>
struct FwdTraits {
  using elem_t = Elem;
  static constexpr int kHeadDim = kHeadDim_;
  // Measured on H100 (bench/results/cuda_kernel_notes.md, session 2): a third
  // stage helps 1M by <= 5% in some runs and costs up to 12% at 64k and dense.
  static constexpr int kStages = 2;
  static constexpr int kBlockM = 128;  // query rows per work item
  static constexpr int kBlockN = 128;  // keys per main-loop step
  static constexpr int kProducerThreads = 128;
  static constexpr int kConsumerThreads = 256;  // 2 warpgroups of 64 query rows
  static constexpr int kThreads = kProducerThreads + kConsumerThreads;
  static constexpr int kChunks = kHeadDim / 8;  // 16-byte chunks per row
  static constexpr int kQBytes = kBlockM * kHeadDim * 2;
  static constexpr int kKVBytes = kBlockN * kHeadDim * 2;  // one K (or V) stage
  // Q | K stages | V stages | O staging | staging flags | barriers | work item
  // The epilogue's O staging (epilogue.cuh): per consumer warpgroup 64 rows
  // of D 16-bit values (rows of D * 2 bytes, 16-byte chunks swizzled:
  // epi_swz), then per warpgroup 64 one-byte row flags.
  static constexpr int kEpiOff = kQBytes + 2 * kStages * kKVBytes;
  static constexpr int kEpiRowBytes = kHeadDim * 2;
  static constexpr int kEpiTileBytes = 64 * kEpiRowBytes;  // one warpgroup's
  static constexpr int kEpiFlagsOff = kEpiOff + 2 * kEpiTileBytes;
  static constexpr int kEpiFlagBytes = 64;                 // one warpgroup's
  static constexpr int kBarOff = kEpiFlagsOff + 2 * kEpiFlagBytes;
  static constexpr int kNumBars = 2 * kStages + 2;  // full[S], empty[S], q_full, q_empty
  static constexpr int kInfoOff = kBarOff + kNumBars * 8;
  static constexpr int kInfoBytes = 64;
  static constexpr int kSmemBytes = kInfoOff + kInfoBytes + 1024;  // + alignment to the swizzle atom
  static constexpr int kProducerRegs = 40;   // the 16-row gathers spill below 40 (unroll 4)
  static constexpr int kConsumerRegs = 232;  // double-buffered P would need more
  static_assert(kHeadDim == 64 || kHeadDim == 128, "head dim 64 or 128");
  static_assert(sizeof(Elem) == 2, "16-bit inputs");
  static_assert(kBlockM == kBlockN, "Q and K/V gathers share the row mapping");
  static_assert(kConsumerThreads / 128 * 64 == kBlockM, "a consumer warpgroup owns 64 query rows");
  static_assert(kProducerThreads % kChunks == 0 && kBlockN % (kProducerThreads / kChunks) == 0,
                "a producer thread keeps one chunk column and a whole number of rows");
  static_assert((kProducerThreads / kChunks) % 8 == 0, "rows a thread skips keep its swizzle");
  static_assert(kBlockN % 16 == 0 && kBlockN <= 256, "wgmma N");
  static_assert(sizeof(WorkItem) + 8 <= kInfoBytes, "the work item and the next-item slots fit");
  // 193.2 KB at D = 128 (97.2 KB at D = 64). Rows of the staging tile are not
  // padded (a swizzle instead): with the 1 KB the driver reserves per CTA
  // this stays under the 196 KB shared-memory carveout (padded rows, +2 KB,
  // would need the 228 KB one and leave L1 28 KB instead of 60).
  static_assert(kSmemBytes <= 227 * 1024, "fits the sm_90 shared memory");
  static_assert(kEpiOff % 1024 == 0 && kBarOff % 8 == 0, "staging and barrier alignment");
  static_assert(kProducerThreads * kProducerRegs + kConsumerThreads * kConsumerRegs <= 65536, "register file");
};

// Byte offset of 16-byte chunk `ch` of row `row` in a tile of `rows` rows
// stored as kHeadDim/64 column blocks of [rows][128 bytes], 128B swizzle
// (chunk ^= row % 8): the canonical wgmma SW128 layout (K-major for Q and K,
// MN-major for V).
__device__ __forceinline__ uint32_t swz(int row, int ch, int rows) {
  return uint32_t((ch >> 3) * rows * 128 + row * 128 + (((ch & 7) ^ (row & 7)) << 4));
}

// Byte offset of 16-byte chunk `ch` of row `row` in an O staging tile (rows
// of kHeadDim * 2 bytes): chunk ^= row % 8, so the 8 rows of an 8 x 8
// stmatrix/ldmatrix block and the 8 chunks a quarter warp copies each fall
// in distinct banks (epilogue.cuh).
template <typename Traits>
__device__ __forceinline__ uint32_t epi_swz(int row, int ch) {
  return uint32_t(row * Traits::kEpiRowBytes + ((ch ^ (row & 7)) << 4));
}

// Addresses of one CTA's shared memory (shared-window addresses for the
// async proxy and barriers, a generic pointer for the work item).
template <typename Traits>
struct SmemLayout {
  static constexpr int S = Traits::kStages;
  uint32_t q, k, v;                        // tiles; stage s at + s * kKVBytes
  uint32_t epi, epi_flags;                 // O staging; warpgroup w's tile at + w * kEpiTileBytes,
                                           // its flags at + w * kEpiFlagBytes
  uint32_t full, empty, q_full, q_empty;   // mbarriers; full/empty of stage s at + 8 * s
  WorkItem* item;  // q_rows == 0: no more items (the producer's last word)
  int* next;       // two slots: the next item a dynamic scheduler fetched

  __device__ __forceinline__ explicit SmemLayout(uint8_t* raw) {
    const uint32_t raw_addr = smem_u32(raw);
    const uint32_t pad = ((raw_addr + 1023u) & ~1023u) - raw_addr;
    q = raw_addr + pad;
    k = q + Traits::kQBytes;
    v = k + S * Traits::kKVBytes;
    epi = q + Traits::kEpiOff;
    epi_flags = q + Traits::kEpiFlagsOff;
    full = q + Traits::kBarOff;
    empty = full + 8 * S;
    q_full = empty + 8 * S;
    q_empty = q_full + 8;
    item = reinterpret_cast<WorkItem*>(raw + pad + Traits::kInfoOff);
    next = reinterpret_cast<int*>(raw + pad + Traits::kInfoOff + 48);
  }
  // Expected arrivals: full, one noinc per producer thread; empty, every
  // consumer thread; q_full, the producer threads plus the work item's writer.
  __device__ __forceinline__ void init_barriers() const {
#pragma unroll
    for (int s = 0; s < S; ++s) {
      mbar_init(full + 8 * s, Traits::kProducerThreads);
      mbar_init(empty + 8 * s, Traits::kConsumerThreads);
    }
    mbar_init(q_full, Traits::kProducerThreads + 1);
    mbar_init(q_empty, Traits::kConsumerThreads);
    fence_mbar_init();
  }
};

// Launches one pass for a fixed dtype / head dim (fwd_kernel.cuh);
// explicitly instantiated once per (dtype, head dim) file.
template <typename Elem, int D>
cudaError_t run_fwd(const FwdParams& p, cudaStream_t stream);

}  // namespace ringattn::kern::cuda::detail

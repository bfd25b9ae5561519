// Internal interface between the lightning indexer's driver and its micro-kernels.
#pragma once

#include <cstdint>

namespace attnkit::detail {

inline constexpr int64_t kIndexTileKeys = 32;  // keys per packed tile
inline constexpr int kIndexRowsBf16 = 8;       // (query, head) rows per AVX-512 BF16 call

// For r < rows (<= kIndexRowsBf16): dst[r][j] += weights[r] · max(0, q_r · key_j), j < 32.
// q_rows[r]: [depth] bf16 pairs; tile: [depth][32] bf16 pairs (see gather_indexer_bf16.cc).
void IndexTileBf16(const uint32_t* const* q_rows, const float* weights, float* const* dst, int rows,
                   const uint32_t* tile, int64_t depth);
bool CpuHasAvx512Bf16();

// Test hook: false forces the portable f32 SIMD path even where AVX-512 BF16 exists.
void SetIndexerBf16Allowed(bool allowed);

}  // namespace attnkit::detail

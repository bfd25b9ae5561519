// The lightning indexer's AVX-512 BF16 micro-kernel (vdpbf16ps), compiled for that extension
// only through function attributes and called only after a run-time CPU check, so the library
// still builds and runs on any x86-64 (and elsewhere, where this file compiles to nothing).
//
// Layouts: a key tile is 32 keys × index_dim, stored as pairs [depth = ceil(index_dim / 2)][32]
// of uint32 (two bf16: element 2p in the low half, 2p + 1 in the high half), so one 512-bit
// load holds one pair of 16 keys and vdpbf16ps adds q[2p]·k[2p] + q[2p+1]·k[2p+1] to 16 lanes
// (one lane per key). A query row is [depth] such pairs, broadcast one pair at a time.
#include "kernels/gather_indexer.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#include "hwy/targets.h"

namespace attnkit::detail {

// max(x, 0) (written with a mask: GCC 12 warns about _mm512_max_ps's undefined pass-through).
__attribute__((target("avx512f"))) static inline __m512 Relu(__m512 x) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GT_OQ), x);
}

__attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16"))) void IndexTileBf16(
    const uint32_t* const* q_rows, const float* weights, float* const* dst, int rows,
    const uint32_t* tile, int64_t depth) {
  __m512 acc[kIndexRowsBf16][2];
  for (int r = 0; r < kIndexRowsBf16; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t p = 0; p < depth; ++p) {
    const __m512i k0 = _mm512_loadu_si512(tile + p * kIndexTileKeys);
    const __m512i k1 = _mm512_loadu_si512(tile + p * kIndexTileKeys + 16);
    for (int r = 0; r < kIndexRowsBf16; ++r) {
      if (r >= rows) break;
      const __m512i qp = _mm512_set1_epi32(static_cast<int>(q_rows[r][p]));
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], (__m512bh)qp, (__m512bh)k0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], (__m512bh)qp, (__m512bh)k1);
    }
  }
  for (int r = 0; r < rows; ++r) {
    const __m512 w = _mm512_set1_ps(weights[r]);
    for (int h = 0; h < 2; ++h) {
      const __m512 s = _mm512_loadu_ps(dst[r] + 16 * h);
      _mm512_storeu_ps(dst[r] + 16 * h, _mm512_fmadd_ps(w, Relu(acc[r][h]), s));
    }
  }
}

bool CpuHasAvx512Bf16() {
  // CPUID says the instructions exist; Highway's AVX3 check adds the OS's AVX-512 state support.
  return __builtin_cpu_supports("avx512bf16") && (hwy::SupportedTargets() & HWY_AVX3) != 0;
}

}  // namespace attnkit::detail

#else

namespace attnkit::detail {
void IndexTileBf16(const uint32_t* const*, const float*, float* const*, int, const uint32_t*,
                   int64_t) {}
bool CpuHasAvx512Bf16() { return false; }
}  // namespace attnkit::detail

#endif

// SIMD helpers of the backward kernels, compiled once per Highway target.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/backward_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include <algorithm>

#include "hwy/highway.h"
#include "kernels/backward_simd.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::detail {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

void TransposeMatrixImpl(const float* x, int64_t rows, int64_t cols, int64_t ldx, float* xt) {
  constexpr int64_t kTile = 32;  // tiles of 32 × 32 keep both sides in L1
  for (int64_t i0 = 0; i0 < rows; i0 += kTile) {
    const int64_t i1 = std::min(rows, i0 + kTile);
    for (int64_t c0 = 0; c0 < cols; c0 += kTile) {
      const int64_t c1 = std::min(cols, c0 + kTile);
      int64_t i = i0;
#if HWY_TARGET != HWY_SCALAR
      const hn::Full128<float> d4;
      for (; i + 4 <= i1; i += 4) {
        const float* r0 = x + i * ldx;
        const float* r1 = r0 + ldx;
        const float* r2 = r1 + ldx;
        const float* r3 = r2 + ldx;
        int64_t c = c0;
        for (; c + 4 <= c1; c += 4) {
          const auto a = hn::LoadU(d4, r0 + c), b = hn::LoadU(d4, r1 + c);
          const auto e = hn::LoadU(d4, r2 + c), f = hn::LoadU(d4, r3 + c);
          const auto ab_lo = hn::InterleaveLower(d4, a, b), ab_hi = hn::InterleaveUpper(d4, a, b);
          const auto ef_lo = hn::InterleaveLower(d4, e, f), ef_hi = hn::InterleaveUpper(d4, e, f);
          float* out = xt + c * rows + i;
          hn::StoreU(hn::ConcatLowerLower(d4, ef_lo, ab_lo), d4, out);
          hn::StoreU(hn::ConcatUpperUpper(d4, ef_lo, ab_lo), d4, out + rows);
          hn::StoreU(hn::ConcatLowerLower(d4, ef_hi, ab_hi), d4, out + 2 * rows);
          hn::StoreU(hn::ConcatUpperUpper(d4, ef_hi, ab_hi), d4, out + 3 * rows);
        }
        for (; c < c1; ++c) {
          for (int64_t t = 0; t < 4; ++t) xt[c * rows + i + t] = x[(i + t) * ldx + c];
        }
      }
#endif
      for (; i < i1; ++i) {
        for (int64_t c = c0; c < c1; ++c) xt[c * rows + i] = x[i * ldx + c];
      }
    }
  }
}

float DotProductImpl(const float* a, const float* b, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
  int64_t i = 0;
  for (; i + 2 * lanes <= n; i += 2 * lanes) {
    acc0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), acc0);
    acc1 = hn::MulAdd(hn::LoadU(d, a + i + lanes), hn::LoadU(d, b + i + lanes), acc1);
  }
  for (; i + lanes <= n; i += lanes)
    acc0 = hn::MulAdd(hn::LoadU(d, a + i), hn::LoadU(d, b + i), acc0);
  float s = hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0, acc1)));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::detail
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::detail {

HWY_EXPORT(TransposeMatrixImpl);
HWY_EXPORT(DotProductImpl);

void TransposeMatrix(const float* x, int64_t rows, int64_t cols, int64_t ldx, float* xt) {
  HWY_DYNAMIC_DISPATCH(TransposeMatrixImpl)(x, rows, cols, ldx, xt);
}

float DotProduct(const float* a, const float* b, int64_t n) {
  return HWY_DYNAMIC_DISPATCH(DotProductImpl)(a, b, n);
}

}  // namespace attnkit::detail
#endif  // HWY_ONCE

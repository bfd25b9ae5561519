// SIMD building blocks of the linear and recurrent engines, compiled once per Highway target.
//
// Performance note (SmallGemm): a register tile of C (6 rows × 4 vectors with AVX-512's 32
// registers, 4 × 2 with AVX2's 16) is kept across the whole k loop; per k step it loads the
// tile's vectors of B and broadcasts one value of A per row, so each loaded B vector feeds 6 (4)
// FMAs. The 4 × 2 tile left the FMA pipes waiting on loads; the 6 × 4 tile keeps them busy
// (figures in docs/BENCHMARKS.md, "Measurements behind code choices"). The j (column
// panel) loop is outermost, so the B panel (k × 4 vectors, 32 KiB for k = 128) stays in L1
// while all row tiles pass over it.
// The chunk-sized products this engine needs fit L2 entirely, so no packing is done.
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "kernels/linear_simd.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include <algorithm>
#include <cmath>

#include "hwy/contrib/math/math-inl.h"
#include "hwy/highway.h"
#include "kernels/linear_simd.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::detail {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

template <int kRows, int kVecs, class D>
HWY_INLINE void GemmTile(D d, const GemmArgs& g, int64_t i, int64_t j) {
  using V = hn::Vec<D>;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  V acc[kRows][kVecs];
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kVecs; ++c) acc[r][c] = hn::Zero(d);
  }
  const float* a = g.a + i * g.a_rs;
  const float* b = g.b + j;
  for (int64_t p = 0; p < g.k; ++p) {
    V bv[kVecs];
    for (int c = 0; c < kVecs; ++c) bv[c] = hn::LoadU(d, b + p * g.ldb + c * lanes);
    for (int r = 0; r < kRows; ++r) {
      const V av = hn::Set(d, a[r * g.a_rs + p * g.a_cs]);
      for (int c = 0; c < kVecs; ++c) acc[r][c] = hn::MulAdd(av, bv[c], acc[r][c]);
    }
  }
  const V alpha = hn::Set(d, g.alpha);
  for (int r = 0; r < kRows; ++r) {
    for (int c = 0; c < kVecs; ++c) {
      float* cp = g.c + (i + r) * g.ldc + j + c * lanes;
      V res = hn::Mul(acc[r][c], alpha);
      if (g.accumulate) res = hn::Add(res, hn::LoadU(d, cp));
      hn::StoreU(res, d, cp);
    }
  }
}

// With 32 vector registers (AVX-512) the main tile is 6 rows × 4 vectors: 24 accumulators, 4 B
// loads and 6 broadcasts per 24 FMAs; with 16 (AVX2) it is 4 rows × 2 vectors.
#if HWY_ARCH_X86 && HWY_TARGET <= HWY_AVX3
constexpr int kGemmRows = 6;
constexpr int kGemmVecs = 4;
#else
constexpr int kGemmRows = 4;
constexpr int kGemmVecs = 2;
#endif

template <int kVecs, class D>
HWY_INLINE void GemmPanel(D d, const GemmArgs& g, int64_t j) {
  int64_t i = 0;
  if constexpr (kGemmRows > 4) {
    for (; i + kGemmRows <= g.m; i += kGemmRows) GemmTile<kGemmRows, kVecs>(d, g, i, j);
  }
  for (; i + 4 <= g.m; i += 4) GemmTile<4, kVecs>(d, g, i, j);
  for (; i < g.m; ++i) GemmTile<1, kVecs>(d, g, i, j);
}

void SmallGemmImpl(const GemmArgs& g) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t j = 0;
  if constexpr (kGemmVecs > 2) {
    for (; j + kGemmVecs * lanes <= g.n; j += kGemmVecs * lanes) GemmPanel<kGemmVecs>(d, g, j);
  }
  for (; j + 2 * lanes <= g.n; j += 2 * lanes) GemmPanel<2>(d, g, j);
  for (; j + lanes <= g.n; j += lanes) GemmPanel<1>(d, g, j);
  for (; j < g.n; ++j) {  // scalar column tail
    for (int64_t i = 0; i < g.m; ++i) {
      float acc = 0.0f;
      for (int64_t p = 0; p < g.k; ++p) acc += g.a[i * g.a_rs + p * g.a_cs] * g.b[p * g.ldb + j];
      float& c = g.c[i * g.ldc + j];
      c = g.accumulate ? c + g.alpha * acc : g.alpha * acc;
    }
  }
}

void FavorExpRowsImpl(float* p, int64_t rows, int64_t m, int64_t ld, const float* half_sq_norm,
                      float log_scale, float* row_max) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t t = 0; t < rows; ++t) {
    float* row = p + t * ld;
    const float h = half_sq_norm[t];
    // a = w·x − ‖x‖²/2; the row max r is the stabiliser of this row.
    float r = -INFINITY;
    int64_t l = 0;
    if (m >= lanes) {
      auto vmax = hn::Set(d, -INFINITY);
      for (; l + lanes <= m; l += lanes) vmax = hn::Max(vmax, hn::LoadU(d, row + l));
      r = hn::GetLane(hn::MaxOfLanes(d, vmax));
    }
    for (; l < m; ++l) r = std::max(r, row[l]);
    r -= h;
    row_max[t] = r;
    const float shift = h + r + log_scale;  // exp(p − h − r − log_scale)
    const auto vshift = hn::Set(d, shift);
    l = 0;
    for (; l + lanes <= m; l += lanes) {
      hn::StoreU(hn::Exp(d, hn::Sub(hn::LoadU(d, row + l), vshift)), d, row + l);
    }
    for (; l < m; ++l) row[l] = std::exp(row[l] - shift);
  }
}

void ScaleRowsImpl(const float* x, int64_t x_rs, int64_t rows, int64_t dim, bool l2, float eps,
                   float scale, float* out, int64_t out_rs) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t t = 0; t < rows; ++t) {
    const float* xr = x + t * x_rs;
    float* orow = out + t * out_rs;
    float f = scale;
    if (l2) {
      auto acc0 = hn::Zero(d), acc1 = hn::Zero(d);
      int64_t c = 0;
      for (; c + 2 * lanes <= dim; c += 2 * lanes) {
        const auto a0 = hn::LoadU(d, xr + c), a1 = hn::LoadU(d, xr + c + lanes);
        acc0 = hn::MulAdd(a0, a0, acc0);
        acc1 = hn::MulAdd(a1, a1, acc1);
      }
      for (; c + lanes <= dim; c += lanes) {
        const auto a0 = hn::LoadU(d, xr + c);
        acc0 = hn::MulAdd(a0, a0, acc0);
      }
      float sq = hn::GetLane(hn::SumOfLanes(d, hn::Add(acc0, acc1)));
      for (; c < dim; ++c) sq += xr[c] * xr[c];
      f = scale / std::sqrt(sq + eps);
    }
    const auto vf = hn::Set(d, f);
    int64_t c = 0;
    for (; c + lanes <= dim; c += lanes) hn::StoreU(hn::Mul(hn::LoadU(d, xr + c), vf), d, orow + c);
    for (; c < dim; ++c) orow[c] = xr[c] * f;
  }
}

void UnitLowerInverseImpl(const float* a, const float* beta, int64_t n, float* t) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t i = 0; i < n; ++i) {
    float* ti = t + i * n;
    const float* ai = a + i * n;
    // Columns j < i: Σ_{l<i} (−β_i a_il) t_lj, where t_lj = 0 for j > l, so column vector
    // [c, c + lanes) only needs rows l ≥ c. Whole vectors inside the row are computed (their
    // columns j ≥ i come out 0, as they must); the last partial vector of a row is scalar.
    int64_t c = 0;
    for (; c < i && c + lanes <= n; c += lanes) {
      auto acc = hn::Zero(d);
      for (int64_t l = c; l < i; ++l) {
        acc = hn::MulAdd(hn::Set(d, -beta[i] * ai[l]), hn::LoadU(d, t + l * n + c), acc);
      }
      hn::StoreU(acc, d, ti + c);
    }
    for (; c < i; ++c) {
      float acc = 0.0f;
      for (int64_t l = c; l < i; ++l) acc += -beta[i] * ai[l] * t[l * n + c];
      ti[c] = acc;
    }
    for (int64_t j = std::max(c, i); j < n; ++j) ti[j] = 0.0f;
    ti[i] = 1.0f;
  }
}

void ExpInPlaceImpl(float* x, int64_t n) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) hn::StoreU(hn::Exp(d, hn::LoadU(d, x + i)), d, x + i);
  for (; i < n; ++i) x[i] = std::exp(x[i]);
}

void EluPlusOneImpl(const float* x, int64_t n, float* out) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const auto zero = hn::Zero(d), one = hn::Set(d, 1.0f);
  int64_t i = 0;
  for (; i + lanes <= n; i += lanes) {
    const auto v = hn::LoadU(d, x + i);
    const auto e = hn::Exp(d, hn::Min(v, zero));
    hn::StoreU(hn::IfThenElse(hn::Gt(v, zero), hn::Add(v, one), e), d, out + i);
  }
  for (; i < n; ++i) out[i] = x[i] > 0.0f ? x[i] + 1.0f : std::exp(x[i]);
}

void DecayedDotsImpl(const float* x, const float* gx, const float* y, const float* gy, int64_t ldy,
                     int64_t count, int64_t dim, float* out) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  for (int64_t j = 0; j < count; ++j) {
    const float* yj = y + j * ldy;
    const float* gj = gy + j * ldy;
    auto acc = hn::Zero(d);
    int64_t c = 0;
    for (; c + lanes <= dim; c += lanes) {
      const auto decay = hn::Exp(d, hn::Sub(hn::LoadU(d, gx + c), hn::LoadU(d, gj + c)));
      acc = hn::MulAdd(hn::Mul(hn::LoadU(d, x + c), hn::LoadU(d, yj + c)), decay, acc);
    }
    float s = hn::GetLane(hn::SumOfLanes(d, acc));
    for (; c < dim; ++c) s += x[c] * yj[c] * std::exp(gx[c] - gj[c]);
    out[j] = s;
  }
}

void DeltaRecurrentStepsImpl(const DeltaStepArgs& a) {
  const hn::ScalableTag<float> d;
  const int64_t lanes = static_cast<int64_t>(hn::Lanes(d));
  const int64_t dk = a.dk, dv = a.dv;
  float* ka = a.scratch;      // [dk]  k ⊙ α
  float* u = a.scratch + dk;  // [dv]  the value written
  float* o = u + dv;          // [dv]
  for (int64_t t = 0; t < a.tokens; ++t) {
    const float* q = a.q + t * a.q_rs;
    const float* k = a.k + t * a.k_rs;
    const float* v = a.v + t * a.v_rs;
    const float* al = a.alpha ? a.alpha + t * a.alpha_stride : nullptr;
    auto decay = [&](int64_t c) { return al ? al[a.alpha_dim == 1 ? 0 : c] : 1.0f; };
    if (a.delta) {
      // u = β (v − (diag(α) s)ᵀ k) = β (v − sᵀ (k ⊙ α)).
      for (int64_t c = 0; c < dk; ++c) ka[c] = k[c] * decay(c);
      const float beta = a.beta[t * a.beta_stride];
      // sᵀ ka row by row (4 rows per pass over u), so the accumulation chains are independent.
      std::fill(u, u + dv, 0.0f);
      int64_t c = 0;
      for (; c + 4 <= dk; c += 4) {
        const float* r0 = a.s + c * dv;
        const auto k0 = hn::Set(d, ka[c]), k1 = hn::Set(d, ka[c + 1]);
        const auto k2 = hn::Set(d, ka[c + 2]), k3 = hn::Set(d, ka[c + 3]);
        int64_t e = 0;
        for (; e + lanes <= dv; e += lanes) {
          auto acc = hn::LoadU(d, u + e);
          acc = hn::MulAdd(k0, hn::LoadU(d, r0 + e), acc);
          acc = hn::MulAdd(k1, hn::LoadU(d, r0 + dv + e), acc);
          acc = hn::MulAdd(k2, hn::LoadU(d, r0 + 2 * dv + e), acc);
          acc = hn::MulAdd(k3, hn::LoadU(d, r0 + 3 * dv + e), acc);
          hn::StoreU(acc, d, u + e);
        }
        for (; e < dv; ++e) {
          u[e] += ka[c] * r0[e] + ka[c + 1] * r0[dv + e] + ka[c + 2] * r0[2 * dv + e] +
                  ka[c + 3] * r0[3 * dv + e];
        }
      }
      for (; c < dk; ++c) {
        for (int64_t e = 0; e < dv; ++e) u[e] += ka[c] * a.s[c * dv + e];
      }
      for (int64_t e = 0; e < dv; ++e) u[e] = beta * (v[e] - u[e]);
    } else {
      std::copy(v, v + dv, u);
    }
    // s ← diag(α) s + k uᵀ and o = sᵀ q, in one pass over s.
    std::fill(o, o + dv, 0.0f);
    for (int64_t c = 0; c < dk; ++c) {
      float* row = a.s + c * dv;
      const auto vdec = hn::Set(d, decay(c));
      const auto vk = hn::Set(d, k[c]);
      const auto vq = hn::Set(d, q[c]);
      int64_t e = 0;
      for (; e + lanes <= dv; e += lanes) {
        const auto sn = hn::MulAdd(vk, hn::LoadU(d, u + e), hn::Mul(vdec, hn::LoadU(d, row + e)));
        hn::StoreU(sn, d, row + e);
        hn::StoreU(hn::MulAdd(vq, sn, hn::LoadU(d, o + e)), d, o + e);
      }
      const float dc = decay(c);
      for (; e < dv; ++e) {
        row[e] = dc * row[e] + k[c] * u[e];
        o[e] += q[c] * row[e];
      }
    }
    std::copy(o, o + dv, a.out + t * a.out_rs);
  }
}

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::detail
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::detail {

HWY_EXPORT(SmallGemmImpl);
HWY_EXPORT(FavorExpRowsImpl);
HWY_EXPORT(DecayedDotsImpl);
HWY_EXPORT(ExpInPlaceImpl);
HWY_EXPORT(UnitLowerInverseImpl);
HWY_EXPORT(ScaleRowsImpl);
HWY_EXPORT(EluPlusOneImpl);
HWY_EXPORT(DeltaRecurrentStepsImpl);

void SmallGemm(const GemmArgs& args) {
  if (args.m <= 0 || args.n <= 0) return;
  if (args.k <= 0) {  // empty product: C = 0 (+ C)
    if (!args.accumulate) {
      for (int64_t i = 0; i < args.m; ++i) std::fill_n(args.c + i * args.ldc, args.n, 0.0f);
    }
    return;
  }
  HWY_DYNAMIC_DISPATCH(SmallGemmImpl)(args);
}

void FavorExpRows(float* p, int64_t rows, int64_t m, int64_t ld, const float* half_sq_norm,
                  float log_scale, float* row_max) {
  HWY_DYNAMIC_DISPATCH(FavorExpRowsImpl)(p, rows, m, ld, half_sq_norm, log_scale, row_max);
}

void ExpInPlace(float* x, int64_t n) { HWY_DYNAMIC_DISPATCH(ExpInPlaceImpl)(x, n); }

void UnitLowerInverse(const float* a, const float* beta, int64_t n, float* t) {
  HWY_DYNAMIC_DISPATCH(UnitLowerInverseImpl)(a, beta, n, t);
}

void ScaleRows(const float* x, int64_t x_rs, int64_t rows, int64_t dim, bool l2, float eps,
               float scale, float* out, int64_t out_rs) {
  HWY_DYNAMIC_DISPATCH(ScaleRowsImpl)(x, x_rs, rows, dim, l2, eps, scale, out, out_rs);
}

void EluPlusOne(const float* x, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(EluPlusOneImpl)(x, n, out);
}

void DecayedDots(const float* x, const float* gx, const float* y, const float* gy, int64_t ldy,
                 int64_t count, int64_t dim, float* out) {
  HWY_DYNAMIC_DISPATCH(DecayedDotsImpl)(x, gx, y, gy, ldy, count, dim, out);
}

void DeltaRecurrentSteps(const DeltaStepArgs& args) {
  HWY_DYNAMIC_DISPATCH(DeltaRecurrentStepsImpl)(args);
}

}  // namespace attnkit::detail
#endif  // HWY_ONCE

// Triangular GEMMs and decayed Gram matrices of the chunk-wise delta rule (recurrent_chunk.h).
#include "kernels/recurrent_chunk.h"

#include <algorithm>

namespace attnkit::detail {

void LowerTriangularAGemm(const GemmArgs& g) {
  for (int64_t i0 = 0; i0 < g.m; i0 += kTriBlock) {
    const int64_t i1 = std::min(g.m, i0 + kTriBlock);
    GemmArgs b = g;
    b.m = i1 - i0, b.k = i1;
    b.a = g.a + i0 * g.a_rs;
    b.c = g.c + i0 * g.ldc;
    SmallGemm(b);
  }
}

void UpperTriangularAGemm(const GemmArgs& g) {
  for (int64_t i0 = 0; i0 < g.m; i0 += kTriBlock) {
    const int64_t i1 = std::min(g.m, i0 + kTriBlock);
    GemmArgs b = g;
    b.m = i1 - i0, b.k = g.m - i0;
    b.a = g.a + i0 * g.a_rs + i0 * g.a_cs;
    b.b = g.b + i0 * g.ldb;
    b.c = g.c + i0 * g.ldc;
    SmallGemm(b);
  }
}

void LowerTriangularCGemm(const GemmArgs& g) {
  for (int64_t i0 = 0; i0 < g.m; i0 += kTriBlock) {
    const int64_t i1 = std::min(g.m, i0 + kTriBlock);
    GemmArgs b = g;
    b.m = i1 - i0, b.n = i1;
    b.a = g.a + i0 * g.a_rs;
    b.c = g.c + i0 * g.ldc;
    SmallGemm(b);
  }
}

void DecayedGram(int64_t dk, bool per_channel, const float* x, const float* y, const float* g,
                 int64_t n, bool strict, float* out, const DecayedGramScratch& s) {
  if (!per_channel) {
    GemmArgs a;
    a.m = n, a.n = n, a.k = dk;
    a.a = x, a.a_rs = dk, a.a_cs = 1;
    a.b = s.yt, a.ldb = n;
    a.c = out, a.ldc = n;
    LowerTriangularCGemm(a);
    for (int64_t i = 0; i < n; ++i) {
      float* row = out + i * n;
      const int64_t last = strict ? i : i + 1;
      if (s.dec != nullptr) {
        const float* dec = s.dec + i * n;  // exp(γ_i − γ_j), j ≤ i
        for (int64_t j = 0; j < last; ++j) row[j] *= dec[j];
      }
      std::fill(row + last, row + n, 0.0f);
    }
    return;
  }
  for (int64_t i0 = 0; i0 < n; i0 += kTriBlock) {
    const int64_t i1 = std::min(n, i0 + kTriBlock);
    const int64_t rows = i1 - i0;
    if (i0 > 0) {
      // Reference row r = i0: x_i ⊙ exp(γ_i − γ_r) for i in the block, y_j ⊙ exp(γ_r − γ_j) for
      // j < r; both factors ≤ 1.
      const float* gr = g + i0 * dk;
      float* e = s.e;  // exponents, then factors
      for (int64_t i = i0; i < i1; ++i) {
        for (int64_t c = 0; c < dk; ++c) e[(i - i0) * dk + c] = g[i * dk + c] - gr[c];
      }
      ExpInPlace(e, rows * dk);
      for (int64_t i = 0; i < rows * dk; ++i) s.xl[i] = x[i0 * dk + i] * e[i];
      for (int64_t j = 0; j < i0; ++j) {
        for (int64_t c = 0; c < dk; ++c) e[j * dk + c] = gr[c] - g[j * dk + c];
      }
      ExpInPlace(e, i0 * dk);
      for (int64_t j = 0; j < i0; ++j) {
        for (int64_t c = 0; c < dk; ++c) s.yrt[c * i0 + j] = y[j * dk + c] * e[j * dk + c];
      }
      GemmArgs a;
      a.m = rows, a.n = i0, a.k = dk;
      a.a = s.xl, a.a_rs = dk, a.a_cs = 1;
      a.b = s.yrt, a.ldb = i0;
      a.c = out + i0 * n, a.ldc = n;
      SmallGemm(a);
    }
    for (int64_t i = i0; i < i1; ++i) {
      float* row = out + i * n;
      const int64_t last = strict ? i : i + 1;
      DecayedDots(x + i * dk, g + i * dk, y + i0 * dk, g + i0 * dk, dk, last - i0, dk, row + i0);
      std::fill(row + last, row + n, 0.0f);
    }
  }
}

}  // namespace attnkit::detail

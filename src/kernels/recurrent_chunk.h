// Internal building blocks of the chunk-wise (WY / UT) delta-rule kernels, shared by the forward
// (recurrent.cc) and the backward (recurrent_backward.cc): triangular GEMMs over 16-row blocks
// and the decayed Gram matrices of a chunk.
#pragma once

#include <cstdint>

#include "kernels/linear_simd.h"

namespace attnkit::detail {

inline constexpr int64_t kTriBlock = 16;  // row block of the triangular products

// C = alpha A B (+ C) with A (m × m) lower triangular: the row block [i0, i1) reads A's columns
// (and B's rows) below i1 only, which skips about half the work.
void LowerTriangularAGemm(const GemmArgs& g);
// The same with A (m × m) upper triangular (e.g. Aᵀ of a lower-triangular matrix through the
// strides): the row block [i0, i1) reads A's columns and B's rows from i0 on.
void UpperTriangularAGemm(const GemmArgs& g);
// The lower triangle of C = A B (m × m): columns < i1 for the row block [i0, i1); the caller
// ignores or zeroes what lies above the diagonal.
void LowerTriangularCGemm(const GemmArgs& g);

// Scratch of DecayedGram: yt = yᵀ (dk × n, filled by the caller) and dec = exp(γ_i − γ_j) (n × n,
// j ≤ i) for a scalar decay, dec == nullptr without decay; xl, e (n × dk) and yrt (dk × n) for the
// per-channel split.
struct DecayedGramScratch {
  const float* yt = nullptr;
  const float* dec = nullptr;
  float *xl = nullptr, *e = nullptr, *yrt = nullptr;
};

// out (n × n, row-major) = Σ_c x_ic y_jc exp(γ_ic − γ_jc) for j < i (strict) or j ≤ i; zero
// above. g holds the cumulative log decays: n × dk when per_channel (then the chunk is cut into
// 16-row blocks, split at each block's first row r into the bounded factors exp(γ_i − γ_r) and
// exp(γ_r − γ_j), the diagonal blocks summed pairwise), else unused (the scalar decay is dec).
void DecayedGram(int64_t dk, bool per_channel, const float* x, const float* y, const float* g,
                 int64_t n, bool strict, float* out, const DecayedGramScratch& s);

}  // namespace attnkit::detail

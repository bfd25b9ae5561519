// Internal helpers shared by the recurrent engine's fast kernels and its reference twin.
#pragma once

#include <cstdint>

#include "attnkit/kernels/recurrent.h"
#include "kernels/problem.h"

namespace attnkit::detail {

// The shared problem description (value heads share q/k heads: heads_q = q/k heads, heads = v
// heads, seqlen_q = seqlen_kv = seqlen; scale on q after normalisation) plus the decay's width.
struct DeltaGeometry : Problem {
  int64_t decay_dim = 0;  // 0: α ≡ 1, 1: scalar, dk: per channel
};

// Checks shapes, gate ranges and the state exactly as GatedDeltaForward documents.
DeltaGeometry CheckDeltaArgs(const char* fn, TensorView<const float> q, TensorView<const float> k,
                             TensorView<const float> v, TensorView<const float> log_alpha,
                             TensorView<const float> beta, TensorView<float> out,
                             TensorView<float> state, const GatedDeltaOptions& options);

inline constexpr float kL2NormEps = 1e-6f;  // x / sqrt(Σ x² + eps), as the models' l2norm

}  // namespace attnkit::detail

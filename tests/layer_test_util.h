// Helpers for the layer tests: random hidden states (the chunked runner, ForwardInChunks, is in
// attnkit/layers/layer.h).
#pragma once

#include <random>

#include "attnkit/layers/layer.h"
#include "attnkit/layers/ops.h"
#include "test_util.h"

namespace attnkit::testing {

// Hidden states x [batch, 1, tokens, hidden] with N(0, 1) entries.
inline Tensor<float> RandomHidden(int64_t batch, int64_t tokens, int64_t hidden, uint64_t seed) {
  Tensor<float> x(batch, 1, tokens, hidden);
  std::mt19937_64 rng(seed);
  FillNormal(x, rng);
  return x;
}

}  // namespace attnkit::testing

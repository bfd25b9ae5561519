// Helpers for the layer tests: random hidden states and "prefill then decode == full pass".
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <vector>

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

// Rows [t0, t0 + n) of every batch entry of x [batch, 1, tokens, hidden], contiguous.
inline Tensor<float> Slice(const Tensor<float>& x, int64_t t0, int64_t n) {
  const auto& s = x.shape();
  Tensor<float> y(s[0], 1, n, s[3]);
  for (int64_t b = 0; b < s[0]; ++b) {
    std::memcpy(y.data() + b * n * s[3], x.data() + (b * s[2] + t0) * s[3],
                sizeof(float) * n * s[3]);
  }
  return y;
}

// Runs `layer` over x with calls of the given token counts (summing to x's tokens), returning
// the concatenated per-token outputs [batch, 1, tokens, hidden].
inline Tensor<float> RunChunked(Layer& layer, const Tensor<float>& x,
                                const std::vector<int64_t>& chunks) {
  const auto& s = x.shape();
  Tensor<float> out(s[0], 1, s[2], s[3]);
  int64_t t0 = 0;
  for (int64_t n : chunks) {
    Tensor<float> xi = Slice(x, t0, n), oi(s[0], 1, n, s[3]);
    layer.Forward(xi.view(), t0, oi.view());
    for (int64_t b = 0; b < s[0]; ++b) {
      std::memcpy(out.data() + (b * s[2] + t0) * s[3], oi.data() + b * n * s[3],
                  sizeof(float) * n * s[3]);
    }
    t0 += n;
  }
  EXPECT_EQ(t0, s[2]);
  return out;
}

// Prefill of `prefill` tokens, then one token at a time for the rest.
inline std::vector<int64_t> PrefillThenDecode(int64_t prefill, int64_t total) {
  std::vector<int64_t> chunks;
  if (prefill > 0) chunks.push_back(prefill);
  for (int64_t t = prefill; t < total; ++t) chunks.push_back(1);
  return chunks;
}

}  // namespace attnkit::testing

// Shared helpers for attnkit's tests: random tensors and error metrics.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>

#include "attnkit/core/tensor.h"

namespace attnkit::testing {

// A fresh seed per test run unless ATTNKIT_TEST_SEED is set; printed on failure via SCOPED_TRACE.
inline uint64_t TestSeed() {
  static const uint64_t seed = [] {
    if (const char* s = std::getenv("ATTNKIT_TEST_SEED")) return std::strtoull(s, nullptr, 10);
    return static_cast<uint64_t>(std::random_device{}()) ^ 0x9e3779b97f4a7c15ull;
  }();
  return seed;
}

template <typename T>
void FillNormal(Tensor<T>& t, std::mt19937_64& rng, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if constexpr (std::is_same_v<T, bf16>) {
      t.data()[i] = ToBf16(dist(rng));
    } else {
      t.data()[i] = dist(rng);
    }
  }
}

// max |a - b| / (max |b| + tiny) over two views of the same shape: scale-independent.
// max |a − b| / max(max |b|, min_scale). Log-sum-exp values take min_scale 1: they are logs, so
// an absolute error e there is a relative error e of the probabilities, however near 0 the lse.
inline double RelMaxError(TensorView<const float> a, TensorView<const float> b,
                          double min_scale = 0.0) {
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < a.shape[0]; ++i) {
    for (int64_t j = 0; j < a.shape[1]; ++j) {
      for (int64_t t = 0; t < a.shape[2]; ++t) {
        for (int64_t d = 0; d < a.shape[3]; ++d) {
          const double x = a.at(i, j, t, d), y = b.at(i, j, t, d);
          if (std::isnan(x) != std::isnan(y)) return INFINITY;
          if (std::isinf(x) || std::isinf(y)) {
            if (x != y) return INFINITY;
            continue;
          }
          max_diff = std::max(max_diff, std::abs(x - y));
          max_ref = std::max(max_ref, std::abs(y));
        }
      }
    }
  }
  return max_diff / (std::max(max_ref, min_scale) + 1e-30);
}

inline bool AllFinite(TensorView<const float> a) {
  for (int64_t i = 0; i < a.shape[0]; ++i) {
    for (int64_t j = 0; j < a.shape[1]; ++j) {
      for (int64_t t = 0; t < a.shape[2]; ++t) {
        for (int64_t d = 0; d < a.shape[3]; ++d) {
          if (!std::isfinite(a.at(i, j, t, d))) return false;
        }
      }
    }
  }
  return true;
}

}  // namespace attnkit::testing

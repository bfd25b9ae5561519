// Internal helpers shared by the linear engine's fast kernel and its reference twin: argument
// checks and the resolved geometry.
#pragma once

#include <cmath>
#include <cstdint>

#include "attnkit/kernels/linear.h"
#include "kernels/problem.h"

namespace attnkit::detail {

// The shared problem description plus the feature count.
struct LinearGeometry : Problem {
  int64_t m = 0;         // features per row of φ
  float x_scale = 1.0f;  // FAVOR+: head_dim_qk^(-1/4) on q and k; 1 for elu+1 / ReLU
};

// Checks shapes, options and the state exactly as LinearForward documents; throws Error.
LinearGeometry CheckLinearArgs(const char* fn, TensorView<const float> q, TensorView<const float> k,
                               TensorView<const float> v, TensorView<float> out,
                               const LinearOptions& options, const LinearState* state);

}  // namespace attnkit::detail

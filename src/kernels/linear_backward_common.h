// Internal helpers shared by the linear engine's fast backward and its reference twin.
#pragma once

#include "attnkit/kernels/linear_backward.h"
#include "kernels/linear_common.h"

namespace attnkit::detail {

// The forward's checks (dout in the place of out, no state) and the gradient views' shapes.
LinearGeometry CheckLinearBackwardArgs(const char* fn, TensorView<const float> q,
                                       TensorView<const float> k, TensorView<const float> v,
                                       TensorView<const float> dout, TensorView<float> dq,
                                       TensorView<float> dk, TensorView<float> dv,
                                       const LinearOptions& options);

}  // namespace attnkit::detail

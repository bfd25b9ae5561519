// Internal helpers shared by the recurrent engine's fast backward and its reference twin.
#pragma once

#include "attnkit/kernels/recurrent_backward.h"
#include "kernels/recurrent_common.h"

namespace attnkit::detail {

// Checks the inputs as GatedDeltaForward does (dout in the place of out, initial_state in the
// place of state), dfinal_state, and every gradient view against the shape it must have.
DeltaGeometry CheckDeltaBackwardArgs(
    const char* fn, TensorView<const float> q, TensorView<const float> k, TensorView<const float> v,
    TensorView<const float> log_alpha, TensorView<const float> beta,
    TensorView<const float> initial_state, TensorView<const float> dout,
    TensorView<const float> dfinal_state, const GatedDeltaGrads& grads,
    const GatedDeltaOptions& options);

// x̂ = scale · x / sqrt(‖x‖² + eps) when l2, else scale · x: writes dx (dim floats) from dx̂.
void NormalizeBackward(const float* x, const double* dxh, int64_t dim, bool l2, double scale,
                       float* dx);

}  // namespace attnkit::detail

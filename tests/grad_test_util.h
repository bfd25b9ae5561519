// Finite-difference checks shared by the gradient tests.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>

#include "attnkit/core/tensor.h"

namespace attnkit::testing {

// Central differences of `loss` over every element of x against `grad`: max |fd − grad| must be
// below tol · max(1, max |fd|). The step actually taken is the float difference, so the rounding
// of x ± h does not bias the quotient.
inline void CheckFiniteDifferences(const char* name, Tensor<float>& x, const Tensor<float>& grad,
                                   const std::function<double()>& loss, float h, double tol) {
  SCOPED_TRACE(name);
  double max_err = 0, max_g = 0;
  for (int64_t i = 0; i < x.numel(); ++i) {
    const float x0 = x.data()[i];
    x.data()[i] = x0 + h;
    const double up = loss();
    const double step_up = static_cast<double>(x.data()[i]) - x0;
    x.data()[i] = x0 - h;
    const double down = loss();
    const double step_down = x0 - static_cast<double>(x.data()[i]);
    x.data()[i] = x0;
    const double fd = (up - down) / (step_up + step_down);
    max_err = std::max(max_err, std::abs(fd - grad.data()[i]));
    max_g = std::max(max_g, std::abs(fd));
  }
  EXPECT_LT(max_err, tol * std::max(1.0, max_g)) << name << ": max |grad| " << max_g;
}

}  // namespace attnkit::testing

// Gradient checks for trainable layers (Layer::TrainForward / TrainBackward / Params): the
// analytic gradients of loss = Σ out ⊙ r (r fixed random) against central finite differences of
// the layer's own TrainForward, for the input and a sample of every parameter's elements.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>

#include "attnkit/layers/layer.h"
#include "layer_test_util.h"

namespace attnkit::testing {

struct LayerGradCheck {
  int64_t batch = 1, tokens = 5;
  float h = 1e-2f;       // finite-difference step
  double tol = 2e-2;     // max |fd − analytic| < tol · max(1, max |fd|), per tensor
  int64_t samples = 12;  // elements checked per parameter (and for x); all if fewer
  uint64_t seed = 1;
};

// Σ out ⊙ r of one TrainForward, in double. L: a Layer, or anything with the same training calls
// (TrainForward, TrainBackward, Params, ZeroGrad, hidden, Describe), e.g. a Stack.
template <typename L>
double LayerLoss(L& layer, const Tensor<float>& x, const Tensor<float>& r) {
  Tensor<float> out(x.shape()[0], 1, x.shape()[2], x.shape()[3]);
  layer.TrainForward(x.view(), out.view());
  double s = 0;
  for (int64_t i = 0; i < out.numel(); ++i) s += static_cast<double>(out.data()[i]) * r.data()[i];
  return s;
}

// Checks dx and every parameter gradient of `layer` (whose grads are zeroed first).
template <typename L>
void CheckLayerGradients(L& layer, const LayerGradCheck& c) {
  const int64_t hidden = layer.hidden();
  Tensor<float> x = RandomHidden(c.batch, c.tokens, hidden, c.seed);
  Tensor<float> r = RandomHidden(c.batch, c.tokens, hidden, c.seed + 1);
  Tensor<float> out(c.batch, 1, c.tokens, hidden), dx(c.batch, 1, c.tokens, hidden);
  layer.ZeroGrad();
  auto tape = layer.TrainForward(x.view(), out.view());
  layer.TrainBackward(*tape, r.view(), dx.view());
  std::mt19937_64 rng(c.seed + 2);
  auto check = [&](const std::string& name, float* value, const float* grad, int64_t n) {
    SCOPED_TRACE(layer.Describe() + " " + name);
    std::vector<int64_t> idx(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) idx[static_cast<size_t>(i)] = i;
    std::shuffle(idx.begin(), idx.end(), rng);
    if (n > c.samples) idx.resize(static_cast<size_t>(c.samples));
    double max_err = 0, max_fd = 0;
    for (int64_t i : idx) {
      const float v0 = value[i];
      value[i] = v0 + c.h;
      const double up = LayerLoss(layer, x, r);
      const double step_up = static_cast<double>(value[i]) - v0;
      value[i] = v0 - c.h;
      const double down = LayerLoss(layer, x, r);
      const double step_down = v0 - static_cast<double>(value[i]);
      value[i] = v0;
      const double fd = (up - down) / (step_up + step_down);
      max_err = std::max(max_err, std::abs(fd - grad[i]));
      max_fd = std::max(max_fd, std::abs(fd));
    }
    EXPECT_LT(max_err, c.tol * std::max(1.0, max_fd)) << name << ": max |fd| " << max_fd;
  };
  check("x", x.data(), dx.data(), x.numel());
  for (const Param& p : layer.Params()) check(p.name, p.value, p.grad, p.size());
}

}  // namespace attnkit::testing

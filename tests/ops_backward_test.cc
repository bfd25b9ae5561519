// Backward passes of the layer building blocks (ops.h) against central finite differences:
// Linear, RmsNorm (plain, zero-centred, no weight), SigmoidGate, RoPE (both layouts, partial).
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "attnkit/layers/ops.h"
#include "grad_test_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::CheckFiniteDifferences;

double Dot(const Tensor<float>& a, const Tensor<float>& r) {
  double s = 0;
  for (int64_t i = 0; i < a.numel(); ++i) s += static_cast<double>(a.data()[i]) * r.data()[i];
  return s;
}

TEST(OpsBackward, Linear) {
  std::mt19937_64 rng(testing::TestSeed());
  const int64_t rows = 5, in = 7, out = 3;
  Tensor<float> x(1, 1, rows, in), r(1, 1, rows, out), y(1, 1, rows, out);
  testing::FillNormal(x, rng);
  testing::FillNormal(r, rng);
  Matrix w = RandomMatrix(in, out, 3);
  Tensor<float> wt(1, 1, in, out);
  std::copy(w.data.begin(), w.data.end(), wt.data());
  Tensor<float> dx(1, 1, rows, in), dw(1, 1, in, out);
  std::fill(dx.data(), dx.data() + dx.numel(), 5.0f);  // overwritten
  LinearBackward(x.data(), rows, w, r.data(), dx.data(), dw.data());
  auto loss = [&] {
    std::copy(wt.data(), wt.data() + wt.numel(), w.data.begin());
    Linear(x.data(), rows, w, y.data());
    return Dot(y, r);
  };
  CheckFiniteDifferences("dx", x, dx, loss, 1e-2f, 1e-3);
  CheckFiniteDifferences("dw", wt, dw, loss, 1e-2f, 1e-3);
  // accumulate_dx adds (w back to its value: the last loss() left a perturbed copy in it).
  std::copy(wt.data(), wt.data() + wt.numel(), w.data.begin());
  Tensor<float> dx2(1, 1, rows, in);
  std::fill(dx2.data(), dx2.data() + dx2.numel(), 1.0f);
  LinearBackward(x.data(), rows, w, r.data(), dx2.data(), nullptr, /*accumulate_dx=*/true);
  for (int64_t i = 0; i < dx.numel(); ++i) EXPECT_NEAR(dx2.data()[i], dx.data()[i] + 1.0f, 1e-5);
}

TEST(OpsBackward, RmsNormEveryForm) {
  for (int form = 0; form < 3; ++form) {
    SCOPED_TRACE(form);
    std::mt19937_64 rng(testing::TestSeed() + form);
    const int64_t rows = 4, dim = 9;
    Tensor<float> x(1, 1, rows, dim), r(1, 1, rows, dim), y(1, 1, rows, dim);
    testing::FillNormal(x, rng);
    testing::FillNormal(r, rng);
    std::vector<float> w = form == 2 ? std::vector<float>{} : RandomNormWeight(dim, 5, form == 1);
    Tensor<float> wt(1, 1, 1, form == 2 ? 1 : dim);
    std::copy(w.begin(), w.end(), wt.data());
    Tensor<float> dx(1, 1, rows, dim), dw(1, 1, 1, wt.shape()[3]);
    RmsNormBackward(x.data(), rows, dim, dim, w, 1e-6f, form == 1, r.data(), dx.data(),
                    form == 2 ? nullptr : dw.data());
    auto loss = [&] {
      if (form != 2) std::copy(wt.data(), wt.data() + dim, w.begin());
      std::copy(x.data(), x.data() + x.numel(), y.data());
      RmsNorm(y.data(), rows, dim, dim, w, 1e-6f, form == 1);
      return Dot(y, r);
    };
    CheckFiniteDifferences("dx", x, dx, loss, 1e-2f, 2e-3);
    if (form != 2) CheckFiniteDifferences("dw", wt, dw, loss, 1e-2f, 2e-3);
  }
}

TEST(OpsBackward, SigmoidGate) {
  std::mt19937_64 rng(testing::TestSeed());
  const int64_t n = 11;
  Tensor<float> x(1, 1, 1, n), g(1, 1, 1, n), r(1, 1, 1, n), y(1, 1, 1, n);
  testing::FillNormal(x, rng);
  testing::FillNormal(g, rng);
  testing::FillNormal(r, rng);
  Tensor<float> dx(1, 1, 1, n), dg(1, 1, 1, n);
  SigmoidGateBackward(x.data(), g.data(), r.data(), dx.data(), dg.data(), n);
  auto loss = [&] {
    std::copy(x.data(), x.data() + n, y.data());
    SigmoidGate(y.data(), g.data(), n);
    return Dot(y, r);
  };
  CheckFiniteDifferences("dx", x, dx, loss, 1e-2f, 1e-3);
  CheckFiniteDifferences("dg", g, dg, loss, 1e-2f, 1e-3);
}

TEST(OpsBackward, RopeIsItsOwnTransposeRotatedBack) {
  for (RopeLayout layout : {RopeLayout::kHalf, RopeLayout::kInterleaved}) {
    for (float fraction : {1.0f, 0.5f}) {
      std::mt19937_64 rng(testing::TestSeed());
      RopeConfig rope;
      rope.layout = layout;
      rope.fraction = fraction;
      Tensor<float> x(2, 2, 3, 8), r(2, 2, 3, 8), y(2, 2, 3, 8);
      testing::FillNormal(x, rng);
      testing::FillNormal(r, rng);
      Tensor<float> dx(2, 2, 3, 8);
      std::copy(r.data(), r.data() + r.numel(), dx.data());
      ApplyRopeBackward(dx.view(), 17, rope);
      auto loss = [&] {
        std::copy(x.data(), x.data() + x.numel(), y.data());
        ApplyRope(y.view(), 17, rope);
        return Dot(y, r);
      };
      CheckFiniteDifferences("dx", x, dx, loss, 1e-2f, 1e-3);
    }
  }
}

}  // namespace
}  // namespace attnkit

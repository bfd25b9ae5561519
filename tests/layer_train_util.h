// Shared checks of the training calls (TrainForward / TrainBackward / Params / ZeroGrad) for any
// object that has them: a Layer, or a Stack. One training step's results (Step), gradients
// linear in dout (per-token pieces sum to the whole), thread-count invariance, fast vs reference
// backends, bad backward input refused with nothing written, Params names. The finite-difference
// check itself is in layer_grad_util.h.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/layers/layer.h"
#include "layer_test_util.h"
#include "test_util.h"

namespace attnkit::testing {

// What one training step produced: the output, dx and every parameter gradient (in Params order).
struct Step {
  Tensor<float> out, dx;
  std::vector<std::vector<float>> grads;
};

template <typename L>
std::vector<std::vector<float>> Grads(L& layer) {
  std::vector<std::vector<float>> g;
  for (const Param& p : layer.Params()) g.emplace_back(p.grad, p.grad + p.size());
  return g;
}

// ZeroGrad, TrainForward, TrainBackward(dout).
template <typename L>
Step TrainStep(L& layer, const Tensor<float>& x, const Tensor<float>& dout) {
  const auto& s = x.shape();
  Step r{Tensor<float>(s[0], 1, s[2], s[3]), Tensor<float>(s[0], 1, s[2], s[3]), {}};
  layer.ZeroGrad();
  auto tape = layer.TrainForward(x.view(), r.out.view());
  layer.TrainBackward(*tape, dout.view(), r.dx.view());
  r.grads = Grads(layer);
  return r;
}

inline double MaxAbs(const std::vector<float>& v) {
  double m = 0;
  for (float x : v) m = std::max(m, std::abs(static_cast<double>(x)));
  return m;
}

// max |a − b| / max(max |b|, floor) over one gradient buffer (0 when a == b). A floor keeps a
// gradient that is zero analytically (e.g. linear attention's queries at one token) from
// comparing rounding with rounding.
inline double RelDiff(const std::vector<float>& a, const std::vector<float>& b,
                      double floor = 1e-30) {
  double diff = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
  }
  return diff == 0 ? 0.0 : diff / std::max(MaxAbs(b), floor);
}

// Every tensor of a against b: out, dx, each parameter gradient (named in the failure), each
// relative to its own scale but no finer than `floor` times the step's largest gradient (the
// default 1e-2: a gradient that is zero analytically, e.g. dq at one token, holds f32 rounding
// of the other gradients' size, which differs between backends and optimisation levels).
template <typename L>
void ExpectStepsClose(L& layer, const Step& a, const Step& b, double tol, double floor = 1e-2) {
  EXPECT_LT(RelMaxError(a.out.view(), b.out.view()), tol) << "out";
  EXPECT_LT(RelMaxError(a.dx.view(), b.dx.view()), tol) << "dx";
  const std::vector<Param> ps = layer.Params();
  ASSERT_EQ(a.grads.size(), ps.size());
  ASSERT_EQ(b.grads.size(), ps.size());
  double largest = 0;
  for (const auto& g : b.grads) largest = std::max(largest, MaxAbs(g));
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_LT(RelDiff(a.grads[i], b.grads[i], std::max(1e-30, floor * largest)), tol) << ps[i].name;
  }
}

inline bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
inline bool BitEqual(const Tensor<float>& a, const Tensor<float>& b) {
  return a.numel() == b.numel() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

// dout restricted to token t (zero elsewhere).
inline Tensor<float> TokenPiece(const Tensor<float>& dout, int64_t t) {
  const auto& s = dout.shape();
  Tensor<float> piece(s[0], 1, s[2], s[3]);
  std::fill(piece.data(), piece.data() + piece.numel(), 0.0f);
  for (int64_t b = 0; b < s[0]; ++b) {
    const int64_t off = (b * s[2] + t) * s[3];
    std::copy(dout.data() + off, dout.data() + off + s[3], piece.data() + off);
  }
  return piece;
}

// Gradients are linear in dout: one backward with dout equals the per-token pieces' backwards
// (each its own forward and tape) with the weight gradients ACCUMULATED in the layer's buffers
// and dx summed.
template <typename L>
void ExpectPerTokenPiecesSumToWhole(L& layer, int64_t batch, int64_t tokens, uint64_t seed,
                                    double tol) {
  const Tensor<float> x = RandomHidden(batch, tokens, layer.hidden(), seed);
  const Tensor<float> dout = RandomHidden(batch, tokens, layer.hidden(), seed + 1);
  const Step whole = TrainStep(layer, x, dout);
  layer.ZeroGrad();
  Step sum{Tensor<float>(batch, 1, tokens, layer.hidden()),
           Tensor<float>(batch, 1, tokens, layer.hidden()),
           {}};
  std::fill(sum.dx.data(), sum.dx.data() + sum.dx.numel(), 0.0f);
  Tensor<float> dx(batch, 1, tokens, layer.hidden());
  for (int64_t t = 0; t < tokens; ++t) {
    const Tensor<float> piece = TokenPiece(dout, t);
    auto tape = layer.TrainForward(x.view(), sum.out.view());
    layer.TrainBackward(*tape, piece.view(), dx.view());
    for (int64_t i = 0; i < dx.numel(); ++i) sum.dx.data()[i] += dx.data()[i];
  }
  sum.grads = Grads(layer);
  ExpectStepsClose(layer, sum, whole, tol);
}

// Same step with 1 and 3 kernel threads: bit-identical.
template <typename L>
void ExpectThreadCountInvariant(L& layer, int64_t batch, int64_t tokens, uint64_t seed) {
  const Tensor<float> x = RandomHidden(batch, tokens, layer.hidden(), seed);
  const Tensor<float> dout = RandomHidden(batch, tokens, layer.hidden(), seed + 1);
  const int previous = GetNumThreads();
  SetNumThreads(1);
  const Step one = TrainStep(layer, x, dout);
  SetNumThreads(3);
  const Step three = TrainStep(layer, x, dout);
  SetNumThreads(previous);
  EXPECT_TRUE(BitEqual(one.out, three.out)) << "out";
  EXPECT_TRUE(BitEqual(one.dx, three.dx)) << "dx";
  ASSERT_EQ(one.grads.size(), three.grads.size());
  for (size_t i = 0; i < one.grads.size(); ++i) {
    EXPECT_TRUE(BitEqual(one.grads[i], three.grads[i])) << "gradient " << i;
  }
}

// A failing backward changes no gradient and leaves dx alone.
template <typename L>
void ExpectThrowsUnchanged(L& layer, const std::function<void()>& call, const char* what) {
  SCOPED_TRACE(what);
  const std::vector<std::vector<float>> before = Grads(layer);
  EXPECT_THROW(call(), Error);
  const std::vector<std::vector<float>> after = Grads(layer);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(BitEqual(before[i], after[i]));
}

// Second backward on one tape, a tape from another block of the same kind, dout of another
// shape: each throws attnkit::Error before writing a gradient or dx.
template <typename L>
void ExpectBadBackwardInputsRefused(L& layer, L& other, int64_t tokens, uint64_t seed) {
  const int64_t hidden = layer.hidden();
  const Tensor<float> x = RandomHidden(1, tokens, hidden, seed);
  const Tensor<float> dout = RandomHidden(1, tokens, hidden, seed + 1);
  Tensor<float> out(1, 1, tokens, hidden), dx(1, 1, tokens, hidden);
  layer.ZeroGrad();
  auto tape = layer.TrainForward(x.view(), out.view());
  layer.TrainBackward(*tape, dout.view(), dx.view());  // fills the gradients
  const Tensor<float> dx_before = [&] {
    Tensor<float> c(1, 1, tokens, hidden);
    std::copy(dx.data(), dx.data() + dx.numel(), c.data());
    return c;
  }();
  std::fill(dx.data(), dx.data() + dx.numel(), 7.0f);
  const float sentinel = 7.0f;
  auto dx_untouched = [&] {
    for (int64_t i = 0; i < dx.numel(); ++i) {
      if (dx.data()[i] != sentinel) return false;
    }
    return true;
  };
  ExpectThrowsUnchanged(
      layer, [&] { layer.TrainBackward(*tape, dout.view(), dx.view()); },
      "second backward on one tape");
  EXPECT_TRUE(dx_untouched());

  Tensor<float> other_out(1, 1, tokens, hidden);
  auto other_tape = other.TrainForward(x.view(), other_out.view());
  ExpectThrowsUnchanged(
      layer, [&] { layer.TrainBackward(*other_tape, dout.view(), dx.view()); },
      "tape from another block");
  EXPECT_TRUE(dx_untouched());

  auto fresh = layer.TrainForward(x.view(), out.view());
  const Tensor<float> short_dout = RandomHidden(1, tokens - 1, hidden, seed + 2);
  ExpectThrowsUnchanged(
      layer, [&] { layer.TrainBackward(*fresh, short_dout.view(), dx.view()); },
      "dout with one token too few");
  EXPECT_TRUE(dx_untouched());
  EXPECT_FALSE(fresh->consumed);
  // The refused calls left the tape usable: the backward now gives the first backward's dx.
  layer.TrainBackward(*fresh, dout.view(), dx.view());
  EXPECT_TRUE(BitEqual(dx, dx_before));
}

// The same step through `fast` and `slow` (the same weights on another backend) at `tokens`
// (floor: see ExpectStepsClose).
template <typename L>
void ExpectBackendsAgree(L& fast, L& slow, int64_t tokens, uint64_t seed, double tol,
                         int64_t batch = 1, double floor = 1e-2) {
  const Tensor<float> x = RandomHidden(batch, tokens, fast.hidden(), seed);
  const Tensor<float> dout = RandomHidden(batch, tokens, fast.hidden(), seed + 1);
  const Step a = TrainStep(fast, x, dout);
  const Step b = TrainStep(slow, x, dout);
  ExpectStepsClose(fast, a, b, tol, floor);
}

// Params' names in order; checks that the gradients start at zero and that the parameters are
// every weight (their floats add up to WeightBytes()).
template <typename L>
std::vector<std::string> ParamNames(L& layer) {
  std::vector<std::string> names;
  int64_t floats = 0;
  for (const Param& p : layer.Params()) {
    names.push_back(p.name);
    floats += p.size();
    for (int64_t i = 0; i < p.size(); ++i) EXPECT_EQ(p.grad[i], 0.0f) << p.name;
  }
  EXPECT_EQ(static_cast<size_t>(floats) * sizeof(float), layer.WeightBytes());
  return names;
}

// dx with data == nullptr: the weight gradients are those of a backward that writes dx.
template <typename L>
void ExpectNullDxSameWeightGradients(L& layer, int64_t batch, int64_t tokens, uint64_t seed) {
  const Tensor<float> x = RandomHidden(batch, tokens, layer.hidden(), seed);
  const Tensor<float> dout = RandomHidden(batch, tokens, layer.hidden(), seed + 1);
  const Step with_dx = TrainStep(layer, x, dout);
  Tensor<float> out(batch, 1, tokens, layer.hidden());
  layer.ZeroGrad();
  auto tape = layer.TrainForward(x.view(), out.view());
  layer.TrainBackward(*tape, dout.view(), TensorView<float>{});
  const auto grads = Grads(layer);
  ASSERT_EQ(grads.size(), with_dx.grads.size());
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_TRUE(BitEqual(grads[i], with_dx.grads[i])) << i;
}

// Allocation failures injected into TrainForward and TrainBackward (detail::FailNthAllocation,
// the nth checked allocation from 1 to 16): a failed forward leaves `out` alone; a failed
// backward leaves every gradient, dx and the tape (still usable) unchanged. Both calls must have
// been failed at least once.
template <typename L>
void ExpectInjectedAllocationFailuresChangeNothing(L& layer, int64_t batch, int64_t tokens) {
  const int64_t hidden = layer.hidden();
  const Tensor<float> x = RandomHidden(batch, tokens, hidden, 1);
  const Tensor<float> r = RandomHidden(batch, tokens, hidden, 2);
  Tensor<float> out(batch, 1, tokens, hidden), dx(batch, 1, tokens, hidden);
  auto warm = layer.TrainForward(x.view(), out.view());
  layer.TrainBackward(*warm, r.view(), dx.view());  // non-zero gradients
  int forward_failures = 0, backward_failures = 0;
  for (int64_t nth = 1; nth <= 16; ++nth) {
    SCOPED_TRACE(nth);
    std::fill(out.data(), out.data() + out.numel(), 5.0f);
    detail::FailNthAllocation(nth);
    try {
      layer.TrainForward(x.view(), out.view());
    } catch (const Error&) {
      ++forward_failures;
      EXPECT_TRUE(
          std::all_of(out.data(), out.data() + out.numel(), [](float v) { return v == 5; }));
    }
    detail::FailNthAllocation(0);
    auto tape = layer.TrainForward(x.view(), out.view());
    std::fill(dx.data(), dx.data() + dx.numel(), 3.0f);
    const auto before = Grads(layer);
    detail::FailNthAllocation(nth);
    bool failed = false;
    try {
      layer.TrainBackward(*tape, r.view(), dx.view());
    } catch (const Error&) {
      failed = true;
      ++backward_failures;
    }
    detail::FailNthAllocation(0);
    if (failed) {
      EXPECT_EQ(Grads(layer), before);
      EXPECT_TRUE(std::all_of(dx.data(), dx.data() + dx.numel(), [](float v) { return v == 3; }));
      EXPECT_FALSE(tape->consumed);
      EXPECT_NO_THROW(layer.TrainBackward(*tape, r.view(), dx.view()));
    }
  }
  EXPECT_GT(forward_failures, 0);
  EXPECT_GT(backward_failures, 0);
}

}  // namespace attnkit::testing

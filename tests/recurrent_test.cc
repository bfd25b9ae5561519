// The recurrent engine (gated delta rule family): chunked and token-by-token kernels vs the
// double-precision reference, prefill + decode == one pass, numerical safety under strong
// per-channel decay, the layer pieces (gates, short conv, gated RMSNorm) and bad input.
#include "attnkit/kernels/recurrent.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "test_util.h"

namespace attnkit {
namespace {

using testing::FillNormal;
using testing::RelMaxError;

using testing::Sanitized;

enum class Variant { kDeltaNet, kGatedDeltaNet, kKda, kGlaScalar, kGlaChannel };

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
  int64_t batch, heads_qk, heads_v, seqlen, dk, dv;
  Variant variant;
  Tensor<float> q, k, v, log_alpha, beta, state;
  bool has_decay() const { return variant != Variant::kDeltaNet; }
  bool delta() const {
    return variant == Variant::kDeltaNet || variant == Variant::kGatedDeltaNet ||
           variant == Variant::kKda;
  }
  int64_t decay_dim() const {
    return variant == Variant::kKda || variant == Variant::kGlaChannel ? dk : 1;
  }
  GatedDeltaOptions Options() const {
    GatedDeltaOptions o;
    o.delta_rule = delta();
    return o;
  }
  TensorView<const float> LogAlpha() const {
    return has_decay() ? log_alpha.view() : TensorView<const float>{};
  }
  TensorView<const float> Beta() const { return delta() ? beta.view() : TensorView<const float>{}; }
};

// Random inputs with gates computed as the models do; decay_rate scales exp(A_log).
Problem MakeProblem(int64_t batch, int64_t hqk, int64_t hv, int64_t seqlen, int64_t dk, int64_t dv,
                    Variant variant, uint64_t seed, float decay_rate = 1.0f) {
  std::mt19937_64 rng(seed);
  Problem p{batch,
            hqk,
            hv,
            seqlen,
            dk,
            dv,
            variant,
            Tensor<float>(batch, hqk, seqlen, dk),
            Tensor<float>(batch, hqk, seqlen, dk),
            Tensor<float>(batch, hv, seqlen, dv),
            Tensor<float>(),
            Tensor<float>(batch, hv, seqlen, 1),
            Tensor<float>(batch, hv, dk, dv)};
  FillNormal(p.q, rng);
  FillNormal(p.k, rng);
  FillNormal(p.v, rng);
  FillNormal(p.state, rng, 0.3f);
  const int64_t width = p.decay_dim();
  Tensor<float> a(batch, hv, seqlen, width), blog(batch, hv, seqlen, 1);
  FillNormal(a, rng);
  FillNormal(blog, rng);
  std::normal_distribution<float> n01(0.0f, 1.0f);
  std::vector<float> a_log(hv), dt_bias(hv * width);
  for (auto& x : a_log) x = std::log(decay_rate) + 0.3f * n01(rng);
  for (auto& x : dt_bias) x = 0.5f * n01(rng) - 1.0f;
  p.log_alpha = Tensor<float>(batch, hv, seqlen, width);
  ComputeDecayGate(a.view(), a_log, dt_bias, p.log_alpha.view());
  ComputeWriteGate(blog.view(), p.beta.view());
  return p;
}

// f32 kernels vs the double reference: errors come from f32 rounding of sums of length dk, dv and
// of the chunk (64), accumulated over the sequence through the state (which decays or is
// contracted by the delta rule). Measured errors are <= 2e-6; 4e-6 · (1 + log2 T) keeps a margin.
double Tolerance(int64_t seqlen) { return 4e-6 * (1.0 + std::log2(static_cast<double>(seqlen))); }

void CheckAgainstReference(const Problem& p, DeltaAlgorithm algo, int64_t chunk, bool with_state) {
  SCOPED_TRACE(::testing::Message()
               << Name(p.variant) << " batch " << p.batch << " hqk " << p.heads_qk << " hv "
               << p.heads_v << " T " << p.seqlen << " dk " << p.dk << " dv " << p.dv << " chunk "
               << chunk << " state " << with_state << " algo " << static_cast<int>(algo));
  GatedDeltaOptions o = p.Options();
  o.algorithm = algo;
  o.chunk_size = chunk;
  Tensor<float> out(p.batch, p.heads_v, p.seqlen, p.dv),
      out_ref(p.batch, p.heads_v, p.seqlen, p.dv);
  Tensor<float> s(p.batch, p.heads_v, p.dk, p.dv), s_ref(p.batch, p.heads_v, p.dk, p.dv);
  if (with_state) {
    std::copy(p.state.data(), p.state.data() + p.state.numel(), s.data());
    std::copy(p.state.data(), p.state.data() + p.state.numel(), s_ref.data());
  }
  GatedDeltaForward(p.q.view(), p.k.view(), p.v.view(), p.LogAlpha(), p.Beta(), out.view(),
                    s.view(), o);
  ref::GatedDeltaForward(p.q.view(), p.k.view(), p.v.view(), p.LogAlpha(), p.Beta(), out_ref.view(),
                         s_ref.view(), o);
  EXPECT_LT(RelMaxError(out.view(), out_ref.view()), Tolerance(p.seqlen));
  EXPECT_LT(RelMaxError(s.view(), s_ref.view()), Tolerance(p.seqlen));
}

const Variant kAllVariants[] = {Variant::kDeltaNet, Variant::kGatedDeltaNet, Variant::kKda,
                                Variant::kGlaScalar, Variant::kGlaChannel};

TEST(Recurrent, ChunkedAndTokenByTokenMatchReferenceAtAwkwardLengths) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed;
  for (Variant variant : kAllVariants) {
    for (int64_t seqlen : {1, 63, 64, 65, 130}) {
      const Problem p = MakeProblem(2, 1, 2, seqlen, 32, 24, variant, ++s);
      for (DeltaAlgorithm algo : {DeltaAlgorithm::kChunked, DeltaAlgorithm::kRecurrent}) {
        CheckAgainstReference(p, algo, 64, /*with_state=*/seqlen != 63);
      }
    }
  }
}

TEST(Recurrent, ChunkBoundariesOddSizesAndHeadSharing) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed ^ 0x1234;
  struct Shape {
    int64_t batch, hqk, hv, seqlen, dk, dv, chunk;
  };
  const std::vector<Shape> shapes = {{1, 2, 2, 50, 16, 16, 16},
                                     {1, 1, 3, 33, 20, 36, 8},
                                     {3, 2, 4, 17, 8, 8, 1},
                                     {1, 1, 1, 100, 64, 64, 32},
                                     {2, 1, 1, 49, 17, 33, 48}};
  for (Variant variant : kAllVariants) {
    for (const Shape& sh : shapes) {
      const Problem p = MakeProblem(sh.batch, sh.hqk, sh.hv, sh.seqlen, sh.dk, sh.dv, variant, ++s);
      CheckAgainstReference(p, DeltaAlgorithm::kChunked, sh.chunk, true);
    }
  }
}

TEST(Recurrent, LongSequenceAtModelHeadDims) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const int64_t seqlen = Sanitized() ? 130 : 1000;
  uint64_t s = seed ^ 0x777;
  for (Variant variant : {Variant::kGatedDeltaNet, Variant::kKda}) {
    const Problem p = MakeProblem(1, 1, 1, seqlen, 128, 128, variant, ++s);
    CheckAgainstReference(p, DeltaAlgorithm::kChunked, 64, true);
  }
}

TEST(Recurrent, ChunkedEqualsTokenByToken) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed ^ 0x99;
  for (Variant variant : kAllVariants) {
    SCOPED_TRACE(Name(variant));
    const Problem p = MakeProblem(1, 2, 2, 200, 48, 40, variant, ++s);
    GatedDeltaOptions o = p.Options();
    Tensor<float> a(1, 2, 200, 40), b(1, 2, 200, 40);
    Tensor<float> sa(1, 2, 48, 40), sb(1, 2, 48, 40);
    o.algorithm = DeltaAlgorithm::kChunked;
    GatedDeltaForward(p.q.view(), p.k.view(), p.v.view(), p.LogAlpha(), p.Beta(), a.view(),
                      sa.view(), o);
    o.algorithm = DeltaAlgorithm::kRecurrent;
    GatedDeltaForward(p.q.view(), p.k.view(), p.v.view(), p.LogAlpha(), p.Beta(), b.view(),
                      sb.view(), o);
    EXPECT_LT(RelMaxError(a.view(), b.view()), Tolerance(200));
    EXPECT_LT(RelMaxError(sa.view(), sb.view()), Tolerance(200));
  }
}

// Views of tokens [t0, t0 + n) of a [b, h, T, d] tensor.
template <typename T>
TensorView<T> Tokens(TensorView<T> x, int64_t t0, int64_t n) {
  x.data = x.data + t0 * x.stride[2];
  x.shape[2] = n;
  return x;
}

TEST(Recurrent, PrefillThenDecodeEqualsOnePass) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed ^ 0x4242;
  const int64_t prefill = 70, decode = 9, total = prefill + decode;
  for (Variant variant : kAllVariants) {
    SCOPED_TRACE(Name(variant));
    const Problem p = MakeProblem(2, 1, 2, total, 32, 16, variant, ++s);
    const GatedDeltaOptions o = p.Options();
    Tensor<float> full(2, 2, total, 16), split(2, 2, total, 16);
    Tensor<float> s_full(2, 2, 32, 16), s_split(2, 2, 32, 16);
    GatedDeltaForward(p.q.view(), p.k.view(), p.v.view(), p.LogAlpha(), p.Beta(), full.view(),
                      s_full.view(), o);
    auto part = [&](int64_t t0, int64_t n) {
      const TensorView<const float> la =
          p.has_decay() ? Tokens(p.LogAlpha(), t0, n) : TensorView<const float>{};
      const TensorView<const float> be =
          p.delta() ? Tokens(p.Beta(), t0, n) : TensorView<const float>{};
      GatedDeltaForward(Tokens(p.q.view(), t0, n), Tokens(p.k.view(), t0, n),
                        Tokens(p.v.view(), t0, n), la, be, Tokens(split.view(), t0, n),
                        s_split.view(), o);
    };
    part(0, prefill);
    for (int64_t t = prefill; t < total; ++t) part(t, 1);
    EXPECT_LT(RelMaxError(split.view(), full.view()), Tolerance(total));
    EXPECT_LT(RelMaxError(s_split.view(), s_full.view()), Tolerance(total));
  }
}

TEST(Recurrent, StrongPerChannelDecayStaysFinite) {
  // Per-token log decays down to about −40 per channel: over a chunk of 64 the cumulative decay
  // reaches −2500, so any form that multiplies by exp(−γ) overflows. The chunked kernel must stay
  // finite and equal the reference.
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (Variant variant : {Variant::kKda, Variant::kGatedDeltaNet, Variant::kGlaChannel}) {
    SCOPED_TRACE(Name(variant));
    const Problem p = MakeProblem(1, 1, 1, 150, 32, 32, variant, seed + 5, /*decay_rate=*/30.0f);
    CheckAgainstReference(p, DeltaAlgorithm::kChunked, 64, true);
    Tensor<float> out(1, 1, 150, 32);
    GatedDeltaOptions o = p.Options();
    o.algorithm = DeltaAlgorithm::kChunked;
    GatedDeltaForward(p.q.view(), p.k.view(), p.v.view(), p.LogAlpha(), p.Beta(), out.view(), {},
                      o);
    EXPECT_TRUE(testing::AllFinite(out.view()));
  }
}

TEST(Recurrent, ShortConvDecodeContinuesPrefill) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed);
  const int64_t batch = 2, seqlen = 11, channels = 7, kernel = 4;
  Tensor<float> x(batch, 1, seqlen, channels), w(1, 1, channels, kernel);
  FillNormal(x, rng);
  FillNormal(w, rng);
  Tensor<float> full(batch, 1, seqlen, channels), split(batch, 1, seqlen, channels);
  const std::span<const float> weight(w.data(), static_cast<size_t>(w.numel()));
  ShortConvForward(x.view(), weight, kernel, full.view());
  // Direct formula for one element.
  auto silu = [](double z) { return z / (1 + std::exp(-z)); };
  for (int64_t t = 0; t < seqlen; ++t) {
    for (int64_t c = 0; c < channels; ++c) {
      double acc = 0;
      for (int64_t i = 0; i < kernel; ++i) {
        const int64_t src = t - kernel + 1 + i;
        if (src >= 0) acc += w.data()[c * kernel + i] * x.view().at(1, 0, src, c);
      }
      EXPECT_NEAR(full.view().at(1, 0, t, c), silu(acc), 1e-5);
    }
  }
  Tensor<float> state(batch, 1, kernel - 1, channels);
  ShortConvForward(Tokens(x.view(), 0, 6), weight, kernel, Tokens(split.view(), 0, 6),
                   state.view());
  for (int64_t t = 6; t < seqlen; ++t) {
    ShortConvForward(Tokens(x.view(), t, 1), weight, kernel, Tokens(split.view(), t, 1),
                     state.view());
  }
  EXPECT_LT(RelMaxError(split.view(), full.view()), 1e-6);
}

TEST(Recurrent, GatesAndGatedRmsNorm) {
  Tensor<float> a(1, 2, 3, 1), la(1, 2, 3, 1), b(1, 2, 3, 1), beta(1, 2, 3, 1);
  const float vals[] = {-1e4f, -3.0f, 0.0f, 2.0f, 50.0f, 1e4f};
  for (int i = 0; i < 6; ++i) a.data()[i] = b.data()[i] = vals[i];
  const float a_log[] = {0.0f, 1.0f}, dt_bias[] = {0.0f, 0.5f};
  ComputeDecayGate(a.view(), a_log, dt_bias, la.view());
  ComputeWriteGate(b.view(), beta.view());
  for (int i = 0; i < 6; ++i) {
    EXPECT_TRUE(std::isfinite(la.data()[i]));
    EXPECT_LE(la.data()[i], 0.0f);
    EXPECT_GE(beta.data()[i], 0.0f);
    EXPECT_LE(beta.data()[i], 1.0f);
  }
  // head 0: −exp(0) · softplus(−3) = −log(1 + e^−3)
  EXPECT_NEAR(la.data()[1], -std::log1p(std::exp(-3.0)), 1e-6);
  EXPECT_NEAR(la.data()[5], -std::exp(1.0) * (1e4 + 0.5), 1.0);

  Tensor<float> o(1, 1, 2, 4), g(1, 1, 2, 4), out(1, 1, 2, 4);
  const float ov[] = {1, 2, 3, 4, 0, 0, 0, 1}, gv[] = {0, 1, -1, 2, 3, 3, 3, 3};
  std::copy(ov, ov + 8, o.data());
  std::copy(gv, gv + 8, g.data());
  const float wt[] = {1.0f, 0.5f, 2.0f, 1.0f};
  GatedRmsNorm(o.view(), g.view(), wt, 1e-6f, out.view());
  const double rms = std::sqrt((1 + 4 + 9 + 16) / 4.0 + 1e-6);
  EXPECT_NEAR(out.data()[1], 2 / rms * 0.5 * (1 / (1 + std::exp(-1.0))), 1e-6);
}

TEST(Recurrent, BadInputThrows) {
  const Problem p = MakeProblem(1, 1, 2, 5, 8, 8, Variant::kGatedDeltaNet, 3);
  Tensor<float> out(1, 2, 5, 8);
  const GatedDeltaOptions o = p.Options();
  auto run = [&](TensorView<const float> la, TensorView<const float> be, TensorView<float> st,
                 GatedDeltaOptions opt) {
    GatedDeltaForward(p.q.view(), p.k.view(), p.v.view(), la, be, out.view(), st, opt);
  };
  EXPECT_NO_THROW(run(p.LogAlpha(), p.Beta(), {}, o));
  Tensor<float> bad_la(1, 2, 5, 1);
  bad_la.data()[3] = 0.5f;  // α > 1
  EXPECT_THROW(run(bad_la.view(), p.Beta(), {}, o), Error);
  bad_la.data()[3] = NAN;
  EXPECT_THROW(run(bad_la.view(), p.Beta(), {}, o), Error);
  Tensor<float> bad_beta(1, 2, 5, 1);
  bad_beta.data()[2] = 1.5f;
  EXPECT_THROW(run(p.LogAlpha(), bad_beta.view(), {}, o), Error);
  bad_beta.data()[2] = -0.1f;
  EXPECT_THROW(run(p.LogAlpha(), bad_beta.view(), {}, o), Error);
  EXPECT_THROW(run(p.LogAlpha(), {}, {}, o), Error);  // delta rule without beta
  GatedDeltaOptions gla = o;
  gla.delta_rule = false;
  EXPECT_THROW(run(p.LogAlpha(), p.Beta(), {}, gla), Error);  // beta without the delta rule
  Tensor<float> bad_state(1, 2, 8, 9);
  EXPECT_THROW(run(p.LogAlpha(), p.Beta(), bad_state.view(), o), Error);
  Tensor<float> bad_state2(1, 1, 8, 8);
  EXPECT_THROW(run(p.LogAlpha(), p.Beta(), bad_state2.view(), o), Error);
  Tensor<float> wrong_width(1, 2, 5, 3);
  EXPECT_THROW(run(wrong_width.view(), p.Beta(), {}, o), Error);
  GatedDeltaOptions zero_chunk = o;
  zero_chunk.chunk_size = 0;
  EXPECT_THROW(run(p.LogAlpha(), p.Beta(), {}, zero_chunk), Error);
  Tensor<float> v3(1, 3, 5, 8), out3(1, 3, 5, 8);  // 1 q/k head cannot serve... fine, but 2 ∤ 3
  Tensor<float> q2(1, 2, 5, 8);
  EXPECT_THROW(GatedDeltaForward(q2.view(), q2.view(), v3.view(), {}, {}, out3.view(), {},
                                 GatedDeltaOptions{.delta_rule = false}),
               Error);
  Tensor<float> x(1, 1, 4, 3), y(1, 1, 4, 3), cs(1, 1, 2, 3);
  const float w[12] = {};
  EXPECT_THROW(ShortConvForward(x.view(), w, 4, y.view(), cs.view()), Error);  // state 2 != 3
  EXPECT_THROW(ShortConvForward(x.view(), w, 0, y.view()), Error);
}

// Per-head and per-channel parameters carry their length; a wrong one is an Error naming it,
// and nothing is written.
TEST(Recurrent, PerHeadParametersAreCheckedAgainstTheirShapes) {
  auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected attnkit::Error mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Tensor<float> a(1, 2, 3, 4), la(1, 2, 3, 4);
  std::fill(la.data(), la.data() + la.numel(), 5.0f);
  const std::vector<float> one = {0.0f}, two = {0.0f, 0.0f}, eight(8, 0.0f), seven(7, 0.0f);
  expect_error([&] { ComputeDecayGate(a.view(), one, eight, la.view()); },
               "a_log must hold num_heads_v = 2 values, got 1");
  expect_error([&] { ComputeDecayGate(a.view(), two, seven, la.view()); },
               "dt_bias must hold num_heads_v * width = 8 values, got 7");
  const std::vector<float> inf_log = {0.0f, 1e30f};
  expect_error([&] { ComputeDecayGate(a.view(), inf_log, eight, la.view()); }, "a_log");
  for (int64_t i = 0; i < la.numel(); ++i) ASSERT_EQ(la.data()[i], 5.0f);
  Tensor<float> x(1, 1, 4, 3), y(1, 1, 4, 3);
  const std::vector<float> w11(11, 0.1f);
  expect_error([&] { ShortConvForward(x.view(), w11, 4, y.view()); },
               "weight must hold channels * kernel = 12 values, got 11");
  Tensor<float> o(1, 1, 2, 4), g(1, 1, 2, 4), out(1, 1, 2, 4);
  expect_error([&] { GatedRmsNorm(o.view(), g.view(), seven, 1e-6f, out.view()); },
               "weight must hold head_dim_v = 4 values, got 7");
}

// The recurrent engine checks its operands with the shared problem description: value heads
// grouped over q/k heads, out shaped like v, no overlap of out with an input.
TEST(Recurrent, SharedProblemChecks) {
  Tensor<float> q(1, 2, 5, 8), v(1, 4, 5, 8), out(1, 4, 5, 8), v3(1, 3, 5, 8);
  const GatedDeltaOptions o{.delta_rule = false};
  EXPECT_NO_THROW(GatedDeltaForward(q.view(), q.view(), v.view(), {}, {}, out.view(), {}, o));
  try {
    GatedDeltaForward(q.view(), q.view(), v3.view(), {}, {}, out.view(), {}, o);
    ADD_FAILURE() << "expected attnkit::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("must divide v heads"), std::string::npos) << e.what();
  }
  try {  // out aliasing v
    GatedDeltaForward(q.view(), q.view(), v.view(), {}, {}, v.view(), {}, o);
    ADD_FAILURE() << "expected attnkit::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out overlaps"), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace attnkit

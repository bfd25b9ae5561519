// Gradients of the recurrent engine: the reference backward against central finite differences
// of the reference forward, the chunked backward against the reference on awkward shapes (every
// variant, chunk boundaries, groups, dk ≠ dv, state in and out), thread-count invariance, strong
// decay, the gradients of the gates, the short convolution and the gated RMSNorm, and bad input.
#include "attnkit/kernels/recurrent_backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "attnkit/core/runtime.h"
#include "grad_test_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::CheckFiniteDifferences;
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

// Fast (chunked) gradients against the reference: f32 sums of length dk, dv and the chunk,
// carried through the state in both directions. 2e-5 · (1 + log2 T) relative to the largest
// gradient of each tensor.
double Tolerance(int64_t seqlen) { return 2e-5 * (1.0 + std::log2(static_cast<double>(seqlen))); }

void ExpectClose(const char* name, const Tensor<float>& a, const Tensor<float>& b, double tol) {
  const double err = RelMaxError(a.view(), b.view());
  EXPECT_LT(err, tol) << name;
}

void CheckAgainstReference(const Problem& p, int64_t chunk, bool with_state, int threads = 0) {
  SCOPED_TRACE(::testing::Message()
               << Name(p.variant) << " batch " << p.batch << " hqk " << p.hqk << " hv " << p.hv
               << " T " << p.seqlen << " dk " << p.dk << " dv " << p.dv << " chunk " << chunk
               << " state " << with_state);
  GatedDeltaOptions o = p.Options();
  o.chunk_size = chunk;
  o.num_threads = threads;
  const Grads fast = RunBackward(&GatedDeltaBackward, p, o, with_state);
  const Grads ref = RunBackward(&ref::GatedDeltaBackward, p, o, with_state);
  const double tol = Tolerance(p.seqlen);
  ExpectClose("dq", fast.dq, ref.dq, tol);
  ExpectClose("dk", fast.dk, ref.dk, tol);
  ExpectClose("dv", fast.dv, ref.dv, tol);
  ExpectClose("dstate", fast.dstate, ref.dstate, tol);
  if (p.decay()) ExpectClose("dlog_alpha", fast.dla, ref.dla, tol);
  if (p.delta()) ExpectClose("dbeta", fast.dbeta, ref.dbeta, tol);
}

TEST(RecurrentBackward, ChunkedMatchesReferenceAtAwkwardLengths) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed ^ 0x51;
  for (Variant variant : kAllVariants) {
    for (int64_t seqlen : {1, 63, 64, 65, 300}) {
      if (Sanitized() && seqlen == 300) continue;
      const Problem p = MakeProblem(1, 1, 2, seqlen, 24, 16, variant, ++s);
      CheckAgainstReference(p, 64, /*with_state=*/seqlen != 63);
    }
  }
}

TEST(RecurrentBackward, ChunkBoundariesGroupsAndOddDims) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed ^ 0x52;
  struct Shape {
    int64_t batch, hqk, hv, seqlen, dk, dv, chunk;
  };
  const std::vector<Shape> shapes = {{1, 2, 2, 50, 16, 16, 16},
                                     {1, 1, 3, 33, 20, 36, 8},
                                     {2, 2, 4, 17, 8, 8, 1},
                                     {1, 1, 1, 49, 17, 33, 48},
                                     {1, 1, 1, 40, 2, 3, 16}};
  for (Variant variant : kAllVariants) {
    for (const Shape& sh : shapes) {
      const Problem p = MakeProblem(sh.batch, sh.hqk, sh.hv, sh.seqlen, sh.dk, sh.dv, variant, ++s);
      CheckAgainstReference(p, sh.chunk, true);
    }
  }
}

TEST(RecurrentBackward, StrongDecayAndUnnormalisedInputsStayAccurate) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (Variant variant : {Variant::kKda, Variant::kGatedDeltaNet, Variant::kGlaChannel}) {
    // log α down to −20 per token: the cumulative decay of a chunk reaches −1300.
    const Problem p = MakeProblem(1, 1, 1, 150, 32, 32, variant, seed + 9, 20.0f);
    CheckAgainstReference(p, 64, true);
    GatedDeltaOptions o = p.Options();
    const Grads g = RunBackward(&GatedDeltaBackward, p, o, true);
    EXPECT_TRUE(testing::AllFinite(g.dq.view()) && testing::AllFinite(g.dk.view()) &&
                testing::AllFinite(g.dla.view()));
  }
}

TEST(RecurrentBackward, ThreadCountDoesNotChangeTheResult) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const Problem p = MakeProblem(2, 1, 3, 130, 32, 32, Variant::kGatedDeltaNet, seed ^ 0x53);
  GatedDeltaOptions o = p.Options();
  o.num_threads = 1;
  const Grads one = RunBackward(&GatedDeltaBackward, p, o, true);
  o.num_threads = 3;
  const Grads three = RunBackward(&GatedDeltaBackward, p, o, true);
  for (auto [a, b] : {std::pair{&one.dq, &three.dq},
                      {&one.dk, &three.dk},
                      {&one.dv, &three.dv},
                      {&one.dla, &three.dla},
                      {&one.dbeta, &three.dbeta},
                      {&one.dstate, &three.dstate}}) {
    EXPECT_EQ(0, std::memcmp(a->data(), b->data(), sizeof(float) * a->numel()));
  }
}

TEST(RecurrentBackward, BadInputThrowsNamingTheArgumentAndWritesNothing) {
  const Problem p = MakeProblem(1, 1, 2, 5, 8, 8, Variant::kGatedDeltaNet, 3);
  for (BackwardFn fn : {&GatedDeltaBackward, &ref::GatedDeltaBackward}) {
    Grads g(p);
    for (Tensor<float>* t : {&g.dq, &g.dk, &g.dv, &g.dla, &g.dbeta, &g.dstate}) {
      std::fill(t->data(), t->data() + t->numel(), 7.0f);
    }
    auto expect_error = [&](const std::string& needle, GatedDeltaGrads views,
                            TensorView<const float> dout, TensorView<const float> dfinal,
                            TensorView<const float> la) {
      try {
        fn(p.q.view(), p.k.view(), p.v.view(), la, p.Beta(), p.state.view(), dout, dfinal, views,
           p.Options());
        ADD_FAILURE() << "no error for " << needle;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      }
      for (Tensor<float>* t : {&g.dq, &g.dk, &g.dv, &g.dla, &g.dbeta, &g.dstate}) {
        for (int64_t i = 0; i < t->numel(); ++i) ASSERT_EQ(t->data()[i], 7.0f) << needle;
      }
    };
    GatedDeltaGrads views = g.Views(p);
    Tensor<float> wrong(1, 2, 5, 7);
    expect_error("dout", views, wrong.view(), {}, p.LogAlpha());
    expect_error("dout", views, {}, {}, p.LogAlpha());
    expect_error("dfinal_state", views, p.dout.view(), wrong.view(), p.LogAlpha());
    GatedDeltaGrads bad = views;
    bad.dq = wrong.view();
    expect_error("grads.dq", bad, p.dout.view(), {}, p.LogAlpha());
    bad = views;
    bad.dbeta = {};
    expect_error("grads.dbeta", bad, p.dout.view(), {}, p.LogAlpha());
    bad = views;
    bad.dlog_alpha = {};
    expect_error("grads.dlog_alpha", bad, p.dout.view(), {}, p.LogAlpha());
    expect_error("grads.dlog_alpha", views, p.dout.view(), {}, {});
    bad = views;
    bad.dstate = wrong.view();
    expect_error("grads.dstate", bad, p.dout.view(), {}, p.LogAlpha());
    Tensor<float> bad_la(1, 2, 5, 1);
    bad_la.data()[2] = 0.5f;
    expect_error("log_alpha", views, p.dout.view(), {}, bad_la.view());
  }
}

std::span<float> Span(Tensor<float>& t) { return {t.data(), static_cast<size_t>(t.numel())}; }

double Dot(const Tensor<float>& a, const Tensor<float>& b) {
  double l = 0;
  for (int64_t i = 0; i < a.numel(); ++i) l += static_cast<double>(a.data()[i]) * b.data()[i];
  return l;
}

TEST(RecurrentBackward, GateConvAndNormGradientsMatchFiniteDifferences) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  std::mt19937_64 rng(seed ^ 0x54);
  const float h = 1e-3f;
  const double tol = 5e-4;
  for (int64_t width : {1, 4}) {  // decay gate: scalar and per channel
    SCOPED_TRACE(::testing::Message() << "decay gate width " << width);
    Tensor<float> a(2, 2, 3, width), a_log(1, 1, 1, 2), dt_bias(1, 1, 1, 2 * width);
    Tensor<float> dla(2, 2, 3, width), la(2, 2, 3, width);
    testing::FillNormal(a, rng, 2.0f);
    testing::FillNormal(a_log, rng, 0.5f);
    testing::FillNormal(dt_bias, rng);
    testing::FillNormal(dla, rng);
    Tensor<float> da(2, 2, 3, width), da_log(1, 1, 1, 2), ddt(1, 1, 1, 2 * width);
    ComputeDecayGateBackward(a.view(), Span(a_log), Span(dt_bias), dla.view(), da.view(),
                             Span(da_log), Span(ddt));
    auto loss = [&] {
      ComputeDecayGate(a.view(), Span(a_log), Span(dt_bias), la.view());
      return Dot(la, dla);
    };
    CheckFiniteDifferences("a", a, da, loss, h, tol);
    CheckFiniteDifferences("a_log", a_log, da_log, loss, h, tol);
    CheckFiniteDifferences("dt_bias", dt_bias, ddt, loss, h, tol);
  }
  {
    Tensor<float> b(2, 3, 4, 1), beta(2, 3, 4, 1), dbeta(2, 3, 4, 1), db(2, 3, 4, 1);
    testing::FillNormal(b, rng, 2.0f);
    testing::FillNormal(dbeta, rng);
    ComputeWriteGateBackward(b.view(), dbeta.view(), db.view());
    auto loss = [&] {
      ComputeWriteGate(b.view(), beta.view());
      return Dot(beta, dbeta);
    };
    CheckFiniteDifferences("write gate b", b, db, loss, h, tol);
  }
  for (bool with_state : {false, true}) {
    SCOPED_TRACE(::testing::Message() << "short conv, state " << with_state);
    const int64_t batch = 2, seqlen = 7, channels = 3, kernel = 4;
    Tensor<float> x(batch, 1, seqlen, channels), w(1, 1, channels, kernel);
    Tensor<float> st(batch, 1, kernel - 1, channels), dout(batch, 1, seqlen, channels);
    testing::FillNormal(x, rng);
    testing::FillNormal(w, rng, 0.7f);
    testing::FillNormal(st, rng);
    testing::FillNormal(dout, rng);
    Tensor<float> dx(batch, 1, seqlen, channels), dw(1, 1, channels, kernel);
    Tensor<float> dst(batch, 1, kernel - 1, channels);
    ShortConvBackward(x.view(), Span(w), kernel, with_state ? st.view() : TensorView<const float>{},
                      dout.view(), dx.view(), Span(dw),
                      with_state ? dst.view() : TensorView<float>{});
    auto loss = [&] {
      Tensor<float> out(batch, 1, seqlen, channels), s(batch, 1, kernel - 1, channels);
      std::copy(st.data(), st.data() + st.numel(), s.data());
      ShortConvForward(x.view(), Span(w), kernel, out.view(),
                       with_state ? s.view() : TensorView<float>{});
      return Dot(out, dout);
    };
    CheckFiniteDifferences("x", x, dx, loss, h, tol);
    CheckFiniteDifferences("weight", w, dw, loss, h, tol);
    if (with_state) CheckFiniteDifferences("conv_state", st, dst, loss, h, tol);
  }
  {
    Tensor<float> o(1, 2, 3, 5), g(1, 2, 3, 5), w(1, 1, 1, 5), dout(1, 2, 3, 5), out(1, 2, 3, 5);
    testing::FillNormal(o, rng);
    testing::FillNormal(g, rng);
    testing::FillNormal(w, rng);
    testing::FillNormal(dout, rng);
    Tensor<float> d_o(1, 2, 3, 5), dg(1, 2, 3, 5), dw(1, 1, 1, 5);
    GatedRmsNormBackward(o.view(), g.view(), Span(w), 1e-6f, dout.view(), d_o.view(), dg.view(),
                         Span(dw));
    auto loss = [&] {
      GatedRmsNorm(o.view(), g.view(), Span(w), 1e-6f, out.view());
      return Dot(out, dout);
    };
    CheckFiniteDifferences("norm o", o, d_o, loss, h, tol);
    CheckFiniteDifferences("norm gate", g, dg, loss, h, tol);
    CheckFiniteDifferences("norm weight", w, dw, loss, h, tol);
  }
}

TEST(RecurrentBackward, LayerPieceBadInputThrows) {
  Tensor<float> a(1, 2, 3, 1), wrong(1, 2, 4, 1), da(1, 2, 3, 1);
  float a_log[2] = {0, 0}, bias[2] = {0, 0}, g1[2], g2[2];
  EXPECT_THROW(ComputeDecayGateBackward(a.view(), a_log, bias, wrong.view(), da.view(), g1, g2),
               Error);
  EXPECT_THROW(ComputeDecayGateBackward(a.view(), a_log, bias, a.view(), da.view(), {}, g2),
               Error);  // da_log of the wrong length
  EXPECT_THROW(ComputeDecayGateBackward(a.view(), std::span<const float>(a_log, 1), bias, a.view(),
                                        da.view(), g1, g2),
               Error);  // a_log of the wrong length
  EXPECT_THROW(ComputeWriteGateBackward(a.view(), a.view(), wrong.view()), Error);
  Tensor<float> x(1, 1, 5, 2), dx(1, 1, 5, 2), st(1, 1, 3, 2), bad_st(1, 1, 2, 2);
  float w[8] = {}, dw[8];
  EXPECT_THROW(ShortConvBackward(x.view(), w, 4, bad_st.view(), x.view(), dx.view(), dw), Error);
  EXPECT_THROW(ShortConvBackward(x.view(), w, 4, {}, x.view(), dx.view(), dw, st.view()), Error);
  EXPECT_THROW(ShortConvBackward(x.view(), w, 0, {}, x.view(), dx.view(), dw), Error);
  EXPECT_THROW(ShortConvBackward(x.view(), w, 4, {}, x.view(), dx.view(), std::span<float>(dw, 7)),
               Error);
  Tensor<float> o(1, 1, 2, 4), bad(1, 1, 2, 3);
  float nw[4] = {1, 1, 1, 1}, dnw[4];
  EXPECT_THROW(
      GatedRmsNormBackward(o.view(), o.view(), nw, 1e-6f, bad.view(), o.view(), o.view(), dnw),
      Error);
  EXPECT_THROW(
      GatedRmsNormBackward(o.view(), o.view(), nw, 0.0f, o.view(), o.view(), o.view(), dnw), Error);
}

}  // namespace
}  // namespace attnkit

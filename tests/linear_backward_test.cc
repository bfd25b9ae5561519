// Gradients of the linear engine: the reference backward against central finite differences of
// the reference forward (FAVOR+, elu+1, ReLU; causal and bidirectional; groups), the fast
// chunk-wise backward against the reference at awkward lengths and chunk boundaries, large
// norms (the stabilisers), thread-count invariance and bad input.
#include "attnkit/kernels/linear_backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <random>
#include <string>

#include "attnkit/bench/backward_linear.h"
#include "grad_test_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::CheckFiniteDifferences;
using testing::RelMaxError;

bool Sanitized() { return std::getenv("ATTNKIT_SANITIZED") != nullptr; }

const char* Name(FeatureMap f) {
  switch (f) {
    case FeatureMap::kFavorPositive:
      return "favor+";
    case FeatureMap::kEluPlusOne:
      return "elu+1";
    case FeatureMap::kRelu:
      return "relu";
  }
  return "?";
}

struct Problem {
  int64_t batch = 0, hq = 0, hkv = 0, tq = 0, tk = 0, dk = 0, dv = 0;
  Tensor<float> q, k, v, dout;
  std::unique_ptr<PerformerFeatures> features;
  LinearOptions options;
};

Problem MakeProblem(int64_t batch, int64_t hq, int64_t hkv, int64_t tq, int64_t tk, int64_t dk,
                    int64_t dv, FeatureMap map, bool causal, int64_t m, uint64_t seed,
                    float qk_std = 0.7f) {
  std::mt19937_64 rng(seed);
  Problem p;
  p.batch = batch, p.hq = hq, p.hkv = hkv, p.tq = tq, p.tk = tk, p.dk = dk, p.dv = dv;
  p.q = Tensor<float>(batch, hq, tq, dk);
  p.k = Tensor<float>(batch, hkv, tk, dk);
  p.v = Tensor<float>(batch, hkv, tk, dv);
  p.dout = Tensor<float>(batch, hq, tq, dv);
  testing::FillNormal(p.q, rng, qk_std);
  testing::FillNormal(p.k, rng, qk_std);
  testing::FillNormal(p.v, rng);
  testing::FillNormal(p.dout, rng);
  p.options.feature_map = map;
  p.options.causal = causal;
  if (map == FeatureMap::kFavorPositive) {
    p.features = std::make_unique<PerformerFeatures>(m, dk, RandomFeatureKind::kOrthogonal, seed);
    p.options.features = p.features.get();
  }
  return p;
}

struct Grads {
  Tensor<float> dq, dk, dv;
  explicit Grads(const Problem& p)
      : dq(p.batch, p.hq, p.tq, p.dk),
        dk(p.batch, p.hkv, p.tk, p.dk),
        dv(p.batch, p.hkv, p.tk, p.dv) {}
};

using BackwardFn = void (*)(TensorView<const float>, TensorView<const float>,
                            TensorView<const float>, TensorView<const float>, TensorView<float>,
                            TensorView<float>, TensorView<float>, const LinearOptions&);

Grads RunBackward(BackwardFn fn, const Problem& p, const LinearOptions& o) {
  Grads g(p);
  fn(p.q.view(), p.k.view(), p.v.view(), p.dout.view(), g.dq.view(), g.dk.view(), g.dv.view(), o);
  return g;
}

double Loss(const Problem& p) {
  Tensor<float> out(p.batch, p.hq, p.tq, p.dv);
  ref::LinearForward(p.q.view(), p.k.view(), p.v.view(), out.view(), p.options);
  double l = 0;
  for (int64_t i = 0; i < out.numel(); ++i)
    l += static_cast<double>(out.data()[i]) * p.dout.data()[i];
  return l;
}

const FeatureMap kMaps[] = {FeatureMap::kFavorPositive, FeatureMap::kEluPlusOne, FeatureMap::kRelu};

TEST(LinearBackward, ReferenceMatchesFiniteDifferences) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed;
  for (FeatureMap map : kMaps) {
    for (bool causal : {true, false}) {
      SCOPED_TRACE(::testing::Message() << Name(map) << " causal " << causal);
      // ReLU: inputs shifted up so that normalisers stay away from 0 (where the output jumps to
      // 0) and away from the kink at 0 (finite differences across it are wrong).
      Problem p = MakeProblem(1, 2, 1, 5, causal ? 5 : 4, 3, 2, map, causal, 6, ++s);
      if (map == FeatureMap::kRelu) {
        for (Tensor<float>* t : {&p.q, &p.k}) {
          for (int64_t i = 0; i < t->numel(); ++i) {
            float& x = t->data()[i];
            x += 0.5f;
            if (std::abs(x) < 0.05f) x = x < 0 ? -0.05f : 0.05f;
          }
        }
      }
      const Grads g = RunBackward(&ref::LinearBackward, p, p.options);
      auto loss = [&] { return Loss(p); };
      CheckFiniteDifferences("q", p.q, g.dq, loss, 1e-3f, 5e-4);
      CheckFiniteDifferences("k", p.k, g.dk, loss, 1e-3f, 5e-4);
      CheckFiniteDifferences("v", p.v, g.dv, loss, 1e-3f, 5e-4);
    }
  }
}

// Fast vs reference: f32 feature rows (an exp of a dot product of length dk), chunk sums and the
// state, relative to the largest gradient of each tensor.
void CheckAgainstReference(const Problem& p, int64_t chunk, int threads = 0) {
  SCOPED_TRACE(::testing::Message()
               << Name(p.options.feature_map) << " causal " << p.options.causal << " batch "
               << p.batch << " hq " << p.hq << " hkv " << p.hkv << " tq " << p.tq << " tk " << p.tk
               << " dk " << p.dk << " dv " << p.dv << " chunk " << chunk);
  LinearOptions o = p.options;
  o.chunk_size = chunk;
  o.num_threads = threads;
  const Grads fast = RunBackward(&LinearBackward, p, o);
  const Grads ref = RunBackward(&ref::LinearBackward, p, o);
  const double tol = 2e-5 * (1 + std::log2(static_cast<double>(p.tk)));
  // dq and dk relative to at least the scale of dv: with one causal token out = v_0 whatever q
  // and k, so dq and dk are exactly 0 and only the rounding of do·(v − o) / den is left.
  double dv_scale = 0;
  for (int64_t i = 0; i < ref.dv.numel(); ++i)
    dv_scale = std::max(dv_scale, double(std::abs(ref.dv.data()[i])));
  EXPECT_LT(RelMaxError(fast.dq.view(), ref.dq.view(), dv_scale), tol) << "dq";
  EXPECT_LT(RelMaxError(fast.dk.view(), ref.dk.view(), dv_scale), tol) << "dk";
  EXPECT_LT(RelMaxError(fast.dv.view(), ref.dv.view()), tol) << "dv";
}

TEST(LinearBackward, ChunkedMatchesReferenceAtAwkwardLengths) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed ^ 0x61;
  for (FeatureMap map : kMaps) {
    for (bool causal : {true, false}) {
      for (int64_t t : {1, 63, 64, 65, 300}) {
        if (Sanitized() && t == 300) continue;
        const Problem p = MakeProblem(1, 2, 1, t, causal ? t : t + 7, 16, 12, map, causal, 24, ++s);
        CheckAgainstReference(p, 64);
      }
    }
  }
}

TEST(LinearBackward, ChunkBoundariesGroupsAndOddDims) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  uint64_t s = seed ^ 0x62;
  struct Shape {
    int64_t batch, hq, hkv, t, dk, dv, m, chunk;
  };
  const Shape shapes[] = {{2, 3, 1, 50, 8, 20, 40, 16},
                          {1, 2, 2, 33, 20, 7, 9, 8},
                          {1, 1, 1, 17, 5, 5, 3, 1},
                          {1, 4, 2, 100, 32, 16, 70, 48}};
  for (FeatureMap map : kMaps) {
    for (bool causal : {true, false}) {
      for (const Shape& sh : shapes) {
        const Problem p =
            MakeProblem(sh.batch, sh.hq, sh.hkv, sh.t, sh.t, sh.dk, sh.dv, map, causal, sh.m, ++s);
        CheckAgainstReference(p, sh.chunk);
      }
    }
  }
}

TEST(LinearBackward, LargeNormsUseTheStabilisers) {
  // q, k ~ N(0, 4²) at dk 16: ‖x‖²/2 reaches ~30, so unstabilised features would span e^±60 and
  // a per-key maximum that changes from chunk to chunk rescales the state (and its gradient).
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (bool causal : {true, false}) {
    const Problem p = MakeProblem(1, 1, 1, 150, 150, 16, 8, FeatureMap::kFavorPositive, causal, 32,
                                  seed + 3, 4.0f);
    CheckAgainstReference(p, 32);
    const Grads g = RunBackward(&LinearBackward, p, p.options);
    EXPECT_TRUE(testing::AllFinite(g.dq.view()) && testing::AllFinite(g.dk.view()));
  }
}

TEST(LinearBackward, ThreadCountDoesNotChangeTheResult) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (bool causal : {true, false}) {
    const Problem p =
        MakeProblem(2, 4, 2, 200, 200, 32, 32, FeatureMap::kFavorPositive, causal, 64, seed ^ 7);
    LinearOptions o = p.options;
    o.num_threads = 1;
    const Grads one = RunBackward(&LinearBackward, p, o);
    o.num_threads = 3;
    const Grads three = RunBackward(&LinearBackward, p, o);
    EXPECT_EQ(0, std::memcmp(one.dq.data(), three.dq.data(), sizeof(float) * one.dq.numel()));
    EXPECT_EQ(0, std::memcmp(one.dk.data(), three.dk.data(), sizeof(float) * one.dk.numel()));
    EXPECT_EQ(0, std::memcmp(one.dv.data(), three.dv.data(), sizeof(float) * one.dv.numel()));
  }
}

TEST(LinearBackward, BadInputThrowsNamingTheArgumentAndWritesNothing) {
  const Problem p = MakeProblem(1, 2, 1, 6, 6, 8, 4, FeatureMap::kFavorPositive, true, 16, 5);
  for (BackwardFn fn : {&LinearBackward, &ref::LinearBackward}) {
    Grads g(p);
    for (Tensor<float>* t : {&g.dq, &g.dk, &g.dv})
      std::fill(t->data(), t->data() + t->numel(), 7.0f);
    auto expect_error = [&](const std::string& needle, TensorView<const float> dout,
                            TensorView<float> dq, TensorView<float> dk, TensorView<float> dv,
                            const LinearOptions& o) {
      try {
        fn(p.q.view(), p.k.view(), p.v.view(), dout, dq, dk, dv, o);
        ADD_FAILURE() << "no error for " << needle;
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      }
      for (Tensor<float>* t : {&g.dq, &g.dk, &g.dv}) {
        for (int64_t i = 0; i < t->numel(); ++i) ASSERT_EQ(t->data()[i], 7.0f) << needle;
      }
    };
    Tensor<float> wrong(1, 2, 6, 5);
    expect_error("dout", wrong.view(), g.dq.view(), g.dk.view(), g.dv.view(), p.options);
    expect_error("dout", {}, g.dq.view(), g.dk.view(), g.dv.view(), p.options);
    expect_error("dq", p.dout.view(), wrong.view(), g.dk.view(), g.dv.view(), p.options);
    expect_error("dk", p.dout.view(), g.dq.view(), {}, g.dv.view(), p.options);
    expect_error("dv", p.dout.view(), g.dq.view(), g.dk.view(), wrong.view(), p.options);
    LinearOptions no_features = p.options;
    no_features.features = nullptr;
    expect_error("features", p.dout.view(), g.dq.view(), g.dk.view(), g.dv.view(), no_features);
  }
}

TEST(LinearBackward, BenchRunsBothCasesAndTimesSomething) {
  bench::BackwardLinearConfig cfg;
  cfg.seqlen = 200, cfg.heads = 1, cfg.head_dim = 32, cfg.num_features = 16;
  cfg.threads = 1, cfg.repeats = 1, cfg.sgemm_size = 128;
  const bench::BackwardLinearResult r = bench::RunBackwardLinearBench(cfg);
  ASSERT_EQ(r.cases.size(), 2u);
  EXPECT_GT(r.sgemm_gflops, 0);
  for (const auto& c : r.cases) {
    EXPECT_GT(c.forward_seconds, 0) << c.name;
    EXPECT_GT(c.backward_seconds, 0) << c.name;
    EXPECT_GT(c.backward_own_flops, c.forward_flops) << c.name;
    EXPECT_NEAR(c.backward_gflops * c.backward_seconds, 2.5 * c.forward_flops * 1e-9,
                1e-6 * c.forward_flops * 1e-9)
        << c.name;
  }
  cfg.repeats = 0;
  EXPECT_THROW(bench::RunBackwardLinearBench(cfg), Error);
}

}  // namespace
}  // namespace attnkit

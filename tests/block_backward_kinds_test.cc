// Training the layer kinds beyond GQA, MLA and Gated DeltaNet / KDA: linear attention
// (performer, linear_elu, linear_relu) and DeltaNet. For every kind: gradients against finite
// differences of the block's own TrainForward (reference backends), TrainForward == Forward from
// position 0 with the cache or state untouched, prefill then decode == one pass, gradients linear
// in dout, fast vs reference backends at awkward lengths, thread-count invariance, and bad backward
// input refused with nothing written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/layers/factory.h"
#include "attnkit/layers/gated_deltanet.h"
#include "attnkit/layers/linear_attention.h"
#include "layer_grad_util.h"
#include "layer_test_util.h"
#include "layer_train_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

using namespace attnkit::testing;  // NOLINT: the training-test helpers

// One kind under test: a tiny block on a backend, for a decode batch, from a seed (the same seed
// gives the same weights on both backends).
struct KindCase {
  std::string kind;
  std::function<std::unique_ptr<Layer>(Backend backend, int64_t batch, uint64_t seed)> make;
  double fd_tol = 3e-3;  // finite-difference tolerance (see LayerGradCheck)
  float fd_step = 1e-2f;
};

// ---- Linear attention ----

LinearAttentionConfig LinearCfg(FeatureMap map, Backend backend, int64_t batch) {
  LinearAttentionConfig c;
  c.hidden = 12;
  c.num_heads = 4;
  c.num_heads_kv = 2;  // query heads share kv heads
  c.head_dim = 4;
  c.head_dim_v = 3;
  c.feature_map = map;
  if (map == FeatureMap::kFavorPositive) c.num_features = 6;
  c.chunk_size = 4;  // sequences of 5 to 13 tokens cross chunk boundaries
  c.backend = backend;
  c.batch = batch;
  return c;
}

KindCase LinearCase(FeatureMap map) {
  KindCase k;
  k.kind = LinearAttentionKind(map);
  k.make = [map](Backend backend, int64_t batch, uint64_t seed) -> std::unique_ptr<Layer> {
    LinearAttentionConfig c = LinearCfg(map, backend, batch);
    c.feature_seed = seed + 17;
    return std::make_unique<LinearAttentionBlock>(c, LinearAttentionWeights::Random(c, seed));
  };
  // ReLU's kinks: a smaller step keeps the central difference from straddling many of them.
  if (map == FeatureMap::kRelu) k.fd_step = 1e-3f;
  return k;
}

// ---- DeltaNet (Gated DeltaNet without the decay gate) ----

KindCase DeltaNetCase() {
  KindCase k;
  k.kind = "deltanet";
  k.make = [](Backend backend, int64_t batch, uint64_t seed) -> std::unique_ptr<Layer> {
    GatedDeltaNetConfig c;
    c.hidden = 12;
    c.num_heads_qk = 1;
    c.num_heads_v = 2;
    c.head_dim_qk = 8;
    c.head_dim_v = 3;
    c.decay_gate = false;
    c.norm_eps = 0.05f;  // keeps the gated norm's curvature small for the finite differences
    c.kernel.chunk_size = 4;
    c.kernel.backend = backend;
    c.batch = batch;
    return std::make_unique<GatedDeltaNetBlock>(c, GatedDeltaNetWeights::Random(c, seed));
  };
  k.fd_step = 3e-3f;  // as for Gated DeltaNet: the L2 norms of q and k curve
  return k;
}

std::vector<KindCase> Cases() {
  return {LinearCase(FeatureMap::kFavorPositive), LinearCase(FeatureMap::kEluPlusOne),
          LinearCase(FeatureMap::kRelu), DeltaNetCase()};
}

// ---- Every kind ----

TEST(KindsTrain, GradientsMatchFiniteDifferences) {
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = k.make(Backend::kReference, 1, seed);
    LayerGradCheck check;
    check.batch = 2;
    check.tokens = 7;
    check.seed = seed;
    check.h = k.fd_step;
    check.tol = k.fd_tol;
    CheckLayerGradients(*block, check);
  }
}

TEST(KindsTrain, ParamsAreEveryWeight) {
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = k.make(Backend::kAuto, 1, seed);
    EXPECT_TRUE(block->trainable());
    EXPECT_EQ(block->Kind(), k.kind);
    EXPECT_FALSE(ParamNames(*block).empty());
  }
}

TEST(KindsTrain, TrainForwardEqualsForwardAndLeavesTheCache) {
  const uint64_t seed = testing::TestSeed();
  const int64_t batch = 2, tokens = 11, more = 5;
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = k.make(Backend::kAuto, batch, seed), twin = k.make(Backend::kAuto, batch, seed);
    const int64_t hidden = block->hidden();
    const Tensor<float> x = RandomHidden(batch, tokens + more, hidden, seed + 3);
    const Tensor<float> head = SliceTokens(x, 0, tokens), tail = SliceTokens(x, tokens, more);
    Tensor<float> ref(batch, 1, tokens, hidden), out(batch, 1, tokens, hidden);
    block->Forward(head.view(), 0, ref.view());
    twin->Forward(head.view(), 0, ref.view());
    block->TrainForward(head.view(), out.view());
    EXPECT_LT(RelMaxError(out.view(), ref.view()), 5e-5);
    // The cache / state is untouched: the next tokens continue as in the twin that never trained.
    EXPECT_EQ(block->tokens_seen(), tokens);
    Tensor<float> a(batch, 1, more, hidden), b(batch, 1, more, hidden);
    block->Forward(tail.view(), tokens, a.view());
    twin->Forward(tail.view(), tokens, b.view());
    EXPECT_TRUE(BitEqual(a, b));
  }
}

TEST(KindsTrain, PrefillThenDecodeEqualsOnePass) {
  const uint64_t seed = testing::TestSeed();
  const int64_t batch = 2, tokens = 13;
  for (const KindCase& k : Cases()) {
    for (const int64_t prefill : {0, 1, 6}) {
      SCOPED_TRACE(::testing::Message() << k.kind << " prefill " << prefill);
      auto full = k.make(Backend::kAuto, batch, seed), inc = k.make(Backend::kAuto, batch, seed);
      const Tensor<float> x = RandomHidden(batch, tokens, full->hidden(), seed + 4);
      const Tensor<float> want = ForwardInChunks(*full, x, {tokens});
      const Tensor<float> got = ForwardInChunks(*inc, x, PrefillThenDecodeChunks(prefill, tokens));
      EXPECT_LT(RelMaxError(got.view(), want.view()), 1e-5);
      EXPECT_EQ(inc->tokens_seen(), tokens);
      EXPECT_GT(inc->CacheBytes(), 0u);
    }
  }
}

TEST(KindsTrain, PerTokenPiecesSumToTheWhole) {
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = k.make(Backend::kAuto, 1, seed);
    ExpectPerTokenPiecesSumToWhole(*block, 2, 9, seed + 5, 1e-4);
  }
}

TEST(KindsTrain, ThreadCountInvariant) {
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = k.make(Backend::kAuto, 1, seed);
    ExpectThreadCountInvariant(*block, 2, 70, seed + 6);
  }
}

TEST(KindsTrain, FastMatchesReferenceAtAwkwardLengths) {
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    // From 2 tokens: at 1 token linear attention's q and k get no gradient (o = v whatever φ
    // gives), so their relative difference is rounding over rounding (see
    // OneTokenGivesQueriesAndKeysNoGradient).
    for (const int64_t tokens : {2, 63, 64, 65}) {
      SCOPED_TRACE(::testing::Message() << k.kind << " tokens " << tokens);
      auto fast = k.make(Backend::kAuto, 1, seed), slow = k.make(Backend::kReference, 1, seed);
      ExpectBackendsAgree(*fast, *slow, tokens, seed + 7, 1e-4);
    }
  }
}

TEST(KindsTrain, BadBackwardInputsAreRefused) {
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = k.make(Backend::kAuto, 1, seed), other = k.make(Backend::kAuto, 1, seed + 1);
    ExpectBadBackwardInputsRefused(*block, *other, 6, seed);
  }
}

// Every new kind is in the factory, builds from a LayerShape and can be trained.
TEST(KindsTrain, FactoryBuildsTrainableBlocks) {
  LayerShape s;
  s.hidden = 16;
  s.num_heads = 2;
  s.num_heads_kv = 1;
  s.head_dim = 8;
  s.max_tokens = 32;
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = MakeLayer(k.kind, s, testing::TestSeed());
    EXPECT_EQ(block->Kind(), k.kind);
    EXPECT_TRUE(block->trainable());
  }
}

// One token attends only to itself: o = v, so w_q and w_k get no gradient (up to rounding) while
// w_v and w_o do.
TEST(LinearAttentionTrain, OneTokenGivesQueriesAndKeysNoGradient) {
  const uint64_t seed = testing::TestSeed();
  for (FeatureMap map : {FeatureMap::kFavorPositive, FeatureMap::kEluPlusOne, FeatureMap::kRelu}) {
    SCOPED_TRACE(LinearAttentionKind(map));
    const LinearAttentionConfig c = LinearCfg(map, Backend::kAuto, 1);
    LinearAttentionBlock block(c, LinearAttentionWeights::Random(c, seed));
    const Tensor<float> x = RandomHidden(2, 1, c.hidden, seed + 1);
    const Tensor<float> dout = RandomHidden(2, 1, c.hidden, seed + 2);
    const Step step = TrainStep(block, x, dout);
    auto max_abs = [](const std::vector<float>& g) {
      double m = 0;
      for (float v : g) m = std::max(m, std::abs(static_cast<double>(v)));
      return m;
    };
    const double scale = max_abs(step.grads[2]);  // w_v
    EXPECT_GT(scale, 1e-3);
    EXPECT_LT(max_abs(step.grads[0]), 1e-5 * scale) << "w_q";
    EXPECT_LT(max_abs(step.grads[1]), 1e-5 * scale) << "w_k";
  }
}

// DeltaNet has no decay parameters, and is Gated DeltaNet with α ≡ 1: the same weights with a
// decay gate that is 1 everywhere (a_log = −inf is not allowed, so exp(a_log) tiny) agree.
TEST(DeltaNetTrain, IsGatedDeltaNetWithoutDecay) {
  const uint64_t seed = testing::TestSeed();
  auto block = DeltaNetCase().make(Backend::kAuto, 1, seed);
  EXPECT_EQ(ParamNames(*block),
            (std::vector<std::string>{"w_qkv", "w_b", "w_g", "w_o", "conv", "norm"}));
  auto& dn = dynamic_cast<GatedDeltaNetBlock&>(*block);
  GatedDeltaNetConfig gc = dn.config();
  gc.decay_gate = true;
  GatedDeltaNetWeights gw = GatedDeltaNetWeights::Random(gc, seed);
  EXPECT_EQ(gw.w_qkv.data, dn.weights().w_qkv.data);  // the same draw for the shared weights
  for (float& a : gw.a_log) a = -40.0f;               // exp(a_log) ≈ 4e-18: log α ≈ 0
  GatedDeltaNetBlock gated(gc, gw);
  const Tensor<float> x = RandomHidden(1, 9, gc.hidden, seed + 1);
  Tensor<float> a(1, 1, 9, gc.hidden), b(1, 1, 9, gc.hidden);
  block->Forward(x.view(), 0, a.view());
  gated.Forward(x.view(), 0, b.view());
  EXPECT_LT(RelMaxError(a.view(), b.view()), 1e-5);
  gc.per_channel_decay = true;
  gc.decay_gate = false;  // KDA without decay is not a thing
  EXPECT_THROW(gc.Validate(), Error);
}

// ---- Performer's features ----

TEST(LinearAttentionTrain, RedrawChangesTheFunctionResetsTheStateAndStalesTapes) {
  const uint64_t seed = testing::TestSeed();
  const LinearAttentionConfig c = LinearCfg(FeatureMap::kFavorPositive, Backend::kAuto, 1);
  LinearAttentionBlock block(c, LinearAttentionWeights::Random(c, seed));
  const Tensor<float> x = RandomHidden(1, 6, c.hidden, seed + 1);
  Tensor<float> before(1, 1, 6, c.hidden), after(1, 1, 6, c.hidden), dx(1, 1, 6, c.hidden);
  block.Forward(x.view(), 0, before.view());
  auto tape = block.TrainForward(x.view(), before.view());
  block.RedrawFeatures(seed + 99);
  EXPECT_EQ(block.tokens_seen(), 0);
  EXPECT_EQ(block.features().seed(), seed + 99);
  ExpectThrowsUnchanged(
      block, [&] { block.TrainBackward(*tape, x.view(), dx.view()); }, "tape before the redraw");
  block.Forward(x.view(), 0, after.view());
  EXPECT_GT(RelMaxError(after.view(), before.view()), 1e-3);  // other features, another output
  // Weights are unchanged by a redraw; the features are not parameters.
  EXPECT_EQ(block.Params().size(), 4u);

  const LinearAttentionConfig e = LinearCfg(FeatureMap::kEluPlusOne, Backend::kAuto, 1);
  LinearAttentionBlock elu(e, LinearAttentionWeights::Random(e, seed));
  EXPECT_THROW(elu.RedrawFeatures(1), Error);
}

TEST(LinearAttentionTrain, ConfigErrorsNameTheField) {
  LinearAttentionConfig c = LinearCfg(FeatureMap::kEluPlusOne, Backend::kAuto, 1);
  c.num_features = 8;  // FAVOR+ only
  EXPECT_THROW(c.Validate(), Error);
  c = LinearCfg(FeatureMap::kFavorPositive, Backend::kAuto, 1);
  c.num_heads_kv = 3;  // does not divide 4
  EXPECT_THROW(c.Validate(), Error);
  c = LinearCfg(FeatureMap::kFavorPositive, Backend::kAuto, 1);
  c.num_features = 0;          // default: d ln d, at least d
  EXPECT_EQ(c.features(), 6);  // round(4 ln 4) = 6
  c.head_dim = 64;
  EXPECT_EQ(c.features(), 266);
}

}  // namespace
}  // namespace attnkit

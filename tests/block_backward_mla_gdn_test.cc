// Training MlaBlock and GatedDeltaNetBlock (Gated DeltaNet and KDA) through Layer::TrainForward /
// TrainBackward / Params: gradients against finite differences of the block's own TrainForward,
// TrainForward == Forward from position 0 (cache untouched), gradients linear in dout (the sum of
// per-token pieces equals the whole, accumulated through the grad buffers), thread-count
// invariance, fast vs reference backends at awkward lengths, and bad input.
#include <gtest/gtest.h>

#include <cstring>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/layers/gated_deltanet.h"
#include "attnkit/layers/mla.h"
#include "layer_grad_util.h"
#include "layer_test_util.h"
#include "layer_train_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::RandomHidden;
using testing::RelMaxError;

using testing::BitEqual;
using testing::ExpectBackendsAgree;
using testing::ExpectBadBackwardInputsRefused;
using testing::ExpectNullDxSameWeightGradients;
using testing::ExpectPerTokenPiecesSumToWhole;
using testing::ExpectThreadCountInvariant;
using testing::ExpectThrowsUnchanged;
using testing::ParamNames;

// ---- MLA ----

MlaConfig Mla(int64_t hidden, int64_t heads, int64_t q_lora, int64_t kv_lora, int64_t nope,
              int64_t rope, int64_t v, Backend backend) {
  MlaConfig c;
  c.hidden = hidden;
  c.num_heads = heads;
  c.q_lora_rank = q_lora;
  c.kv_lora_rank = kv_lora;
  c.qk_nope_head_dim = nope;
  c.qk_rope_head_dim = rope;
  c.v_head_dim = v;
  c.max_tokens = 80;
  c.backend = backend;
  return c;
}

// Tiny configurations: with and without the q LoRA, both RoPE layouts, v != nope.
std::vector<MlaConfig> MlaCases(Backend backend) {
  std::vector<MlaConfig> cs = {Mla(16, 2, 10, 8, 6, 4, 5, backend),
                               Mla(20, 3, 0, 12, 4, 6, 7, backend)};
  cs[1].rope.layout = RopeLayout::kInterleaved;
  return cs;
}

TEST(MlaTrain, GradientsMatchFiniteDifferences) {
  const uint64_t seed = testing::TestSeed();
  for (const MlaConfig& c : MlaCases(Backend::kReference)) {
    MlaBlock block(c, MlaWeights::Random(c, seed));
    testing::LayerGradCheck check;
    check.batch = 2;
    check.tokens = 6;
    check.seed = seed;
    check.tol = 3e-3;
    testing::CheckLayerGradients(block, check);
  }
}

TEST(MlaTrain, ParamsNameEveryWeight) {
  const uint64_t seed = testing::TestSeed();
  const std::vector<std::string> tail = {"w_uq", "w_dkv", "kv_norm", "w_kr", "w_uk", "w_uv", "w_o"};
  for (const MlaConfig& c : MlaCases(Backend::kAuto)) {
    MlaBlock block(c, MlaWeights::Random(c, seed));
    std::vector<std::string> want = tail;
    if (c.q_lora_rank > 0) want.insert(want.begin(), {"w_dq", "q_norm"});
    EXPECT_EQ(ParamNames(block), want);
  }
}

TEST(MlaTrain, TrainForwardEqualsForwardAndLeavesTheCache) {
  const uint64_t seed = testing::TestSeed();
  const int64_t tokens = 13;
  for (MlaConfig c : MlaCases(Backend::kAuto)) {
    c.batch = 2;
    SCOPED_TRACE(c.Describe());
    const MlaWeights w = MlaWeights::Random(c, seed);
    const Tensor<float> x = RandomHidden(c.batch, tokens, c.hidden, seed + 3);
    for (MlaPath path : {MlaPath::kNaive, MlaPath::kAbsorbed}) {
      c.path = path;
      MlaBlock block(c, w);
      Tensor<float> ref(c.batch, 1, tokens, c.hidden), out(c.batch, 1, tokens, c.hidden);
      block.Forward(x.view(), 0, ref.view());
      const std::vector<float> cache = block.latent_cache();
      block.TrainForward(x.view(), out.view());
      EXPECT_EQ(block.tokens_seen(), tokens);
      EXPECT_EQ(block.latent_cache(), cache);
      EXPECT_LT(RelMaxError(out.view(), ref.view()), 2e-4) << MlaPathName(path);
    }
  }
}

TEST(MlaTrain, PerTokenPiecesSumToTheWhole) {
  const uint64_t seed = testing::TestSeed();
  for (const MlaConfig& c : MlaCases(Backend::kAuto)) {
    SCOPED_TRACE(c.Describe());
    MlaBlock block(c, MlaWeights::Random(c, seed));
    ExpectPerTokenPiecesSumToWhole(block, 2, 7, seed + 5, 1e-4);
  }
}

TEST(MlaTrain, ThreadCountInvariant) {
  const uint64_t seed = testing::TestSeed();
  for (const MlaConfig& c : MlaCases(Backend::kAuto)) {
    SCOPED_TRACE(c.Describe());
    MlaBlock block(c, MlaWeights::Random(c, seed));
    ExpectThreadCountInvariant(block, 2, 70, seed + 6);
  }
}

TEST(MlaTrain, FastMatchesReferenceAtAwkwardLengths) {
  const uint64_t seed = testing::TestSeed();
  for (const int64_t tokens : {1, 63, 64, 65}) {
    for (const MlaConfig& c : MlaCases(Backend::kAuto)) {
      SCOPED_TRACE(::testing::Message() << c.Describe() << " tokens " << tokens);
      const MlaWeights w = MlaWeights::Random(c, seed);
      MlaConfig rc = c;
      rc.backend = Backend::kReference;
      MlaBlock fast(c, w), slow(rc, w);
      ExpectBackendsAgree(fast, slow, tokens, seed + 7, 1e-4);
    }
  }
}

TEST(MlaTrain, BadBackwardInputsAreRefused) {
  const uint64_t seed = testing::TestSeed();
  const MlaConfig c = MlaCases(Backend::kAuto)[0];
  MlaBlock block(c, MlaWeights::Random(c, seed)), other(c, MlaWeights::Random(c, seed + 1));
  ExpectBadBackwardInputsRefused(block, other, 5, seed);
}

TEST(MlaTrain, NullDxGivesTheSameWeightGradients) {
  const MlaConfig c = MlaCases(Backend::kAuto)[0];
  MlaBlock block(c, MlaWeights::Random(c, testing::TestSeed()));
  ExpectNullDxSameWeightGradients(block, 1, 9, testing::TestSeed());
}

// ---- Gated DeltaNet and KDA ----

GatedDeltaNetConfig Gdn(bool kda, int64_t hidden, int64_t hqk, int64_t hv, int64_t dk, int64_t dv,
                        int64_t chunk, Backend backend) {
  GatedDeltaNetConfig c;
  c.hidden = hidden;
  c.num_heads_qk = hqk;
  c.num_heads_v = hv;
  c.head_dim_qk = dk;
  c.head_dim_v = dv;
  c.per_channel_decay = kda;
  c.kernel.chunk_size = chunk;
  c.kernel.backend = backend;
  return c;
}

// Tiny configurations with num_heads_v > num_heads_qk and a chunk of 4 (sequences of 6 to 9
// tokens cross chunk boundaries), for both decay kinds.
std::vector<GatedDeltaNetConfig> GdnCases(Backend backend) {
  return {Gdn(false, 12, 1, 2, 8, 3, 4, backend), Gdn(true, 12, 1, 2, 8, 3, 4, backend),
          Gdn(false, 10, 2, 4, 6, 2, 3, backend), Gdn(true, 10, 2, 4, 6, 2, 3, backend)};
}

TEST(GdnTrain, GradientsMatchFiniteDifferences) {
  const uint64_t seed = testing::TestSeed();
  for (GatedDeltaNetConfig c : GdnCases(Backend::kReference)) {
    c.norm_eps = 0.05f;
    GatedDeltaNetBlock block(c, GatedDeltaNetWeights::Random(c, seed));
    testing::LayerGradCheck check;
    check.batch = 2;
    check.tokens = 9;
    check.seed = seed;
    // A smaller step than the default: the L2 norms of 3- and 4-wide q/k rows curve enough that
    // the central difference's O(h²) error shows at h = 1e-2.
    check.h = 3e-3f;
    check.tol = 3e-3;
    testing::CheckLayerGradients(block, check);
  }
}

TEST(GdnTrain, ParamsNameEveryWeight) {
  const uint64_t seed = testing::TestSeed();
  for (const GatedDeltaNetConfig& c : GdnCases(Backend::kAuto)) {
    GatedDeltaNetBlock block(c, GatedDeltaNetWeights::Random(c, seed));
    EXPECT_EQ(ParamNames(block), (std::vector<std::string>{"w_qkv", "w_a", "w_b", "w_g", "w_o",
                                                           "conv", "a_log", "dt_bias", "norm"}));
  }
}

TEST(GdnTrain, TrainForwardEqualsForwardAndLeavesTheState) {
  const uint64_t seed = testing::TestSeed();
  const int64_t tokens = 11, more = 5;
  for (GatedDeltaNetConfig c : GdnCases(Backend::kAuto)) {
    c.batch = 2;
    SCOPED_TRACE(c.Describe());
    const GatedDeltaNetWeights w = GatedDeltaNetWeights::Random(c, seed);
    const Tensor<float> x = RandomHidden(c.batch, tokens + more, c.hidden, seed + 3);
    const Tensor<float> head = SliceTokens(x, 0, tokens);
    const Tensor<float> tail = SliceTokens(x, tokens, more);
    GatedDeltaNetBlock block(c, w), twin(c, w);
    Tensor<float> ref(c.batch, 1, tokens, c.hidden), out(c.batch, 1, tokens, c.hidden);
    block.Forward(head.view(), 0, ref.view());
    twin.Forward(head.view(), 0, ref.view());
    block.TrainForward(head.view(), out.view());
    EXPECT_LT(RelMaxError(out.view(), ref.view()), 5e-5);
    // The state (and the convolution history) are untouched: the next tokens continue as in the
    // twin that never trained.
    EXPECT_EQ(block.tokens_seen(), tokens);
    Tensor<float> a(c.batch, 1, more, c.hidden), b(c.batch, 1, more, c.hidden);
    block.Forward(tail.view(), tokens, a.view());
    twin.Forward(tail.view(), tokens, b.view());
    EXPECT_TRUE(BitEqual(a, b));
  }
}

TEST(GdnTrain, PerTokenPiecesSumToTheWhole) {
  const uint64_t seed = testing::TestSeed();
  for (const GatedDeltaNetConfig& c : GdnCases(Backend::kAuto)) {
    SCOPED_TRACE(c.Describe());
    GatedDeltaNetBlock block(c, GatedDeltaNetWeights::Random(c, seed));
    ExpectPerTokenPiecesSumToWhole(block, 2, 10, seed + 5, 1e-4);
  }
}

TEST(GdnTrain, ThreadCountInvariant) {
  const uint64_t seed = testing::TestSeed();
  // batch · num_heads_v · tokens · dk · dv above the engine's 2^20 threading threshold.
  for (bool kda : {false, true}) {
    const GatedDeltaNetConfig c = Gdn(kda, 32, 2, 4, 32, 32, 16, Backend::kAuto);
    SCOPED_TRACE(c.Describe());
    GatedDeltaNetBlock block(c, GatedDeltaNetWeights::Random(c, seed));
    ExpectThreadCountInvariant(block, 2, 130, seed + 6);
  }
}

TEST(GdnTrain, FastMatchesReferenceAtAwkwardLengths) {
  const uint64_t seed = testing::TestSeed();
  for (const int64_t tokens : {1, 63, 64, 65}) {
    for (bool kda : {false, true}) {
      // The default chunk of 64: lengths around one chunk.
      const GatedDeltaNetConfig c = Gdn(kda, 24, 1, 2, 16, 8, 64, Backend::kAuto);
      SCOPED_TRACE(::testing::Message() << c.Describe() << " tokens " << tokens);
      const GatedDeltaNetWeights w = GatedDeltaNetWeights::Random(c, seed);
      GatedDeltaNetConfig rc = c;
      rc.kernel.backend = Backend::kReference;
      GatedDeltaNetBlock fast(c, w), slow(rc, w);
      ExpectBackendsAgree(fast, slow, tokens, seed + 7, 1e-4);
    }
  }
}

TEST(GdnTrain, BadBackwardInputsAreRefused) {
  const uint64_t seed = testing::TestSeed();
  for (const GatedDeltaNetConfig& c : GdnCases(Backend::kAuto)) {
    SCOPED_TRACE(c.Describe());
    GatedDeltaNetBlock block(c, GatedDeltaNetWeights::Random(c, seed)),
        other(c, GatedDeltaNetWeights::Random(c, seed + 1));
    ExpectBadBackwardInputsRefused(block, other, 6, seed);
  }
}

TEST(BlockTrain, TapeOfAnotherKindIsRefused) {
  const uint64_t seed = testing::TestSeed();
  const MlaConfig mc = MlaCases(Backend::kAuto)[0];
  GatedDeltaNetConfig gc = GdnCases(Backend::kAuto)[0];
  gc.hidden = mc.hidden;
  MlaBlock mla(mc, MlaWeights::Random(mc, seed));
  GatedDeltaNetBlock gdn(gc, GatedDeltaNetWeights::Random(gc, seed));
  const Tensor<float> x = RandomHidden(1, 4, mc.hidden, seed);
  Tensor<float> out(1, 1, 4, mc.hidden), dx(1, 1, 4, mc.hidden);
  auto mla_tape = mla.TrainForward(x.view(), out.view());
  auto gdn_tape = gdn.TrainForward(x.view(), out.view());
  ExpectThrowsUnchanged(
      gdn, [&] { gdn.TrainBackward(*mla_tape, x.view(), dx.view()); }, "mla");
  ExpectThrowsUnchanged(
      mla, [&] { mla.TrainBackward(*gdn_tape, x.view(), dx.view()); }, "gdn");
}

}  // namespace
}  // namespace attnkit

// The Gated DeltaNet / KDA layers and hybrid stacks (3 linear : 1 attention): fast vs reference
// kernel, prefill + decode == one pass, fixed state bytes vs growing KV-cache bytes, bad input.
#include "attnkit/layers/gated_deltanet.h"

#include <gtest/gtest.h>

#include <memory>

#include "attnkit/layers/factory.h"
#include "layer_test_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::RandomHidden;
using testing::RelMaxError;

// Layer outputs pass through projections and norms after the kernel; f32 vs the double kernel
// stays at the kernel's ~1e-6 relative level, amplified a little by the RMSNorm.
constexpr double kTol = 5e-5;

GatedDeltaNetConfig SmallConfig(bool kda, Backend backend) {
  GatedDeltaNetConfig c;
  c.hidden = 48;
  c.num_heads_qk = 2;
  c.num_heads_v = 4;
  c.head_dim_qk = 16;
  c.head_dim_v = 12;
  c.per_channel_decay = kda;
  c.batch = 2;
  c.kernel.chunk_size = 8;
  c.kernel.backend = backend;
  return c;
}

TEST(GatedDeltaNetLayer, PrefillThenDecodeEqualsReferencePass) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (bool kda : {false, true}) {
    SCOPED_TRACE(kda ? "kda" : "gated_deltanet");
    const GatedDeltaNetConfig fast = SmallConfig(kda, Backend::kAuto);
    const GatedDeltaNetConfig slow = SmallConfig(kda, Backend::kReference);
    GatedDeltaNetBlock ref(slow, GatedDeltaNetWeights::Random(slow, seed));
    GatedDeltaNetBlock inc(fast, GatedDeltaNetWeights::Random(fast, seed));
    const Tensor<float> x = RandomHidden(2, 41, fast.hidden, seed + 1);
    const Tensor<float> want = ForwardInChunks(ref, x, {41});
    const size_t bytes_before = inc.CacheBytes();
    const Tensor<float> got = ForwardInChunks(inc, x, {19, 13, 1, 1, 1, 1, 1, 1, 1, 1, 1});
    EXPECT_LT(RelMaxError(got.view(), want.view()), kTol);
    EXPECT_EQ(inc.tokens_seen(), 41);
    EXPECT_EQ(inc.CacheBytes(), bytes_before);  // fixed-size state
    EXPECT_EQ(inc.CacheBytes(), sizeof(float) * 2 * (4 * 16 * 12 + 3 * fast.conv_channels()));
    inc.Reset();
    EXPECT_EQ(inc.tokens_seen(), 0);
    const Tensor<float> again = ForwardInChunks(inc, x, {41});
    EXPECT_LT(RelMaxError(again.view(), want.view()), kTol);
  }
}

TEST(GatedDeltaNetLayer, BadInput) {
  GatedDeltaNetConfig c = SmallConfig(false, Backend::kAuto);
  GatedDeltaNetBlock blk(c, GatedDeltaNetWeights::Random(c, 1));
  Tensor<float> x(2, 1, 3, c.hidden), o(2, 1, 3, c.hidden);
  EXPECT_THROW(blk.Forward(x.view(), 1, o.view()), Error);  // position skips
  Tensor<float> xb(1, 1, 3, c.hidden), ob(1, 1, 3, c.hidden);
  EXPECT_THROW(blk.Forward(xb.view(), 0, ob.view()), Error);  // batch mismatch
  GatedDeltaNetConfig bad = c;
  bad.num_heads_v = 3;  // not a multiple of num_heads_qk
  EXPECT_THROW(GatedDeltaNetWeights::Random(bad, 1), Error);
  GatedDeltaNetWeights w = GatedDeltaNetWeights::Random(c, 1);
  w.a_log.pop_back();
  EXPECT_THROW(GatedDeltaNetBlock(c, w), Error);
}

// Qwen3-Next's pattern (3 Gated DeltaNet : 1 gated attention) and Kimi Linear's (3 KDA : 1 MLA)
// from the layer factory: prefill then decode equals one pass, the recurrent layers' state bytes
// stay fixed while the attention layers' cache is sized by max_tokens.
TEST(HybridStack, PrefillThenDecodeEqualsOnePass) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  LayerShape s;
  s.hidden = 32;
  s.num_heads = 4;
  s.num_heads_kv = 2;
  s.head_dim = 16;
  s.q_lora_rank = 24;
  s.kv_lora_rank = 16;
  s.rope_head_dim = 8;
  s.max_tokens = 32;
  for (const char* spec : {"3*gated_deltanet,gated", "3*kda,mla"}) {
    SCOPED_TRACE(spec);
    auto build = [&] {
      Stack st(s.hidden);
      uint64_t i = 0;
      for (const auto& kind : ParseLayerList(spec)) st.Add(MakeLayer(kind, s, seed + ++i));
      return st;
    };
    Stack full = build(), inc = build();
    const Tensor<float> x = RandomHidden(1, 20, s.hidden, seed);
    Tensor<float> want(1, 1, 20, s.hidden), step(1, 1, 1, s.hidden);
    full.Forward(x.view(), 0, want.view());
    const Tensor<float> xp = SliceTokens(x, 0, 12);
    Tensor<float> op(1, 1, 12, s.hidden);
    inc.Forward(xp.view(), 0, op.view());
    EXPECT_LT(RelMaxError(op.view(), SliceTokens(want, 0, 12).view()), kTol);
    for (int64_t t = 12; t < 20; ++t) {
      inc.Forward(SliceTokens(x, t, 1).view(), t, step.view());
      EXPECT_LT(RelMaxError(step.view(), SliceTokens(want, t, 1).view()), kTol) << t;
    }
    size_t recurrent_bytes = 0;
    for (size_t i = 0; i < inc.num_layers(); ++i) {
      const Layer& l = inc.layer(i);
      if (l.Kind() == "gated_deltanet" || l.Kind() == "kda") recurrent_bytes += l.CacheBytes();
    }
    EXPECT_GT(recurrent_bytes, 0u);
    EXPECT_LT(recurrent_bytes, inc.CacheBytes());
  }
}

}  // namespace
}  // namespace attnkit

// Layer 4: RoPE properties, RMSNorm, the GQA-family block (prefill + decode == full pass, ring
// buffer wrap, cache size, bad input) and the Stack runner.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <set>
#include <string>
#include <vector>

#include "attnkit/layers/factory.h"
#include "attnkit/layers/gqa.h"
#include "attnkit/layers/layer.h"
#include "attnkit/layers/mla.h"
#include "attnkit/layers/ops.h"
#include "layer_test_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::RandomHidden;
using testing::RelMaxError;

using testing::Sanitized;

Tensor<float> RandomRows(int64_t heads, int64_t tokens, int64_t dim, uint64_t seed) {
  Tensor<float> x(1, heads, tokens, dim);
  std::mt19937_64 rng(seed);
  testing::FillNormal(x, rng);
  return x;
}

double Dot(const float* a, const float* b, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += static_cast<double>(a[i]) * b[i];
  return s;
}

const RopeLayout kLayouts[] = {RopeLayout::kHalf, RopeLayout::kInterleaved};

TEST(Rope, MatchesReferenceAndPreservesNorms) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (RopeLayout layout : kLayouts) {
    for (float fraction : {1.0f, 0.5f, 0.25f, 0.3f}) {
      for (int64_t dim : {8, 64, 80, 128}) {
        RopeConfig rope{10000.0f, layout, fraction};
        if (static_cast<int64_t>(fraction * dim) < 2) continue;
        Tensor<float> x = RandomRows(3, 37, dim, seed + dim),
                      a = RandomRows(3, 37, dim, seed + dim),
                      b = RandomRows(3, 37, dim, seed + dim);
        ApplyRope(a.view(), 4090, rope);
        ref::ApplyRope(b.view(), 4090, rope);
        EXPECT_LT(RelMaxError(a.view(), b.view()), 1e-5) << RopeLayoutName(layout) << fraction;
        for (int64_t h = 0; h < 3; ++h) {
          for (int64_t t = 0; t < 37; ++t) {
            const float* p = x.view().row(0, h, t);
            const float* q = a.view().row(0, h, t);
            EXPECT_NEAR(std::sqrt(Dot(q, q, dim)), std::sqrt(Dot(p, p, dim)),
                        1e-5 * std::sqrt(Dot(p, p, dim)));
          }
        }
      }
    }
  }
}

TEST(Rope, PartialRotaryLeavesTheRestUntouched) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (RopeLayout layout : kLayouts) {
    const int64_t dim = 64;
    RopeConfig rope{1e6f, layout, 0.25f};
    const int64_t rd = RotaryDim(rope, dim);
    ASSERT_EQ(rd, 16);
    Tensor<float> x = RandomRows(2, 9, dim, seed), y = RandomRows(2, 9, dim, seed);
    ApplyRope(y.view(), 123, rope);
    for (int64_t h = 0; h < 2; ++h) {
      for (int64_t t = 0; t < 9; ++t) {
        for (int64_t d = rd; d < dim; ++d) {
          ASSERT_EQ(x.view().at(0, h, t, d), y.view().at(0, h, t, d));
        }
        bool changed = false;
        for (int64_t d = 0; d < rd; ++d)
          changed |= x.view().at(0, h, t, d) != y.view().at(0, h, t, d);
        EXPECT_TRUE(changed || t == 0) << "token " << t;
      }
    }
  }
}

TEST(Rope, ScoreDependsOnlyOnRelativePosition) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (RopeLayout layout : kLayouts) {
    for (float fraction : {1.0f, 0.5f}) {
      RopeConfig rope{10000.0f, layout, fraction};
      const int64_t dim = 32;
      Tensor<float> q0 = RandomRows(1, 1, dim, seed), k0 = RandomRows(1, 1, dim, seed + 1);
      auto score = [&](int64_t m, int64_t n) {
        Tensor<float> q = RandomRows(1, 1, dim, seed);
        Tensor<float> k = RandomRows(1, 1, dim, seed + 1);
        ApplyRope(q.view(), m, rope);
        ApplyRope(k.view(), n, rope);
        return Dot(q.data(), k.data(), dim);
      };
      const double base = score(10, 3);
      const double scale =
          std::sqrt(Dot(q0.data(), q0.data(), dim) * Dot(k0.data(), k0.data(), dim));
      for (int64_t shift : {1, 57, 1000, 30000}) {
        EXPECT_NEAR(score(10 + shift, 3 + shift), base, 2e-5 * scale) << "shift " << shift;
      }
      // And it does depend on the offset: other values of m − n change the score. (Over one
      // step the change can be tiny for unlucky random vectors; over 64 steps the fastest
      // rotating pair alone, at 1 rad per step, turns many times.)
      double moved = 0.0;
      for (int64_t delta = 1; delta <= 64; ++delta) {
        moved = std::max(moved, std::abs(score(10 + delta, 3) - base));
      }
      EXPECT_GT(moved, 1e-3 * scale);
    }
  }
}

TEST(Rope, LayoutsAreOnePermutationApart) {
  // interleaved(x) == P⁻¹ half(P x), with P moving dim 2i → i and 2i + 1 → i + rd/2.
  const uint64_t seed = testing::TestSeed();
  const int64_t dim = 48;
  RopeConfig half{500.0f, RopeLayout::kHalf, 0.5f}, inter{500.0f, RopeLayout::kInterleaved, 0.5f};
  const int64_t rd = RotaryDim(half, dim);
  Tensor<float> x = RandomRows(2, 5, dim, seed), y = RandomRows(2, 5, dim, seed), px(1, 2, 5, dim);
  auto perm = [&](int64_t d) { return d >= rd ? d : (d % 2 == 0 ? d / 2 : d / 2 + rd / 2); };
  for (int64_t i = 0; i < x.numel(); ++i) {
    px.data()[(i / dim) * dim + perm(i % dim)] = x.data()[i];
  }
  ApplyRope(px.view(), 77, half);
  ApplyRope(y.view(), 77, inter);
  for (int64_t i = 0; i < x.numel(); ++i) {
    EXPECT_NEAR(y.data()[i], px.data()[(i / dim) * dim + perm(i % dim)], 1e-6);
  }
}

TEST(Rope, RejectsBadFractions) {
  Tensor<float> x(1, 1, 2, 16);
  for (float f : {0.0f, -0.5f, 1.01f, 2.0f, NAN}) {
    RopeConfig rope{10000.0f, RopeLayout::kHalf, f};
    EXPECT_THROW(ApplyRope(x.view(), 0, rope), Error) << f;
    EXPECT_THROW(RotaryDim(rope, 16), Error) << f;
  }
  EXPECT_THROW(RotaryDim(RopeConfig{10000.0f, RopeLayout::kHalf, 0.1f}, 16), Error);
  EXPECT_THROW(RotaryDim(RopeConfig{-1.0f, RopeLayout::kHalf, 1.0f}, 16), Error);
  GqaConfig c;
  c.hidden = 16;
  c.num_heads_q = 2;
  c.num_heads_kv = 1;
  c.head_dim = 8;
  c.rope.fraction = 1.5f;
  EXPECT_THROW(GqaBlock(c, GqaWeights{}), Error);
}

TEST(RmsNorm, PlainAndZeroCentred) {
  std::vector<float> x = {3.0f, 4.0f, 0.0f, 0.0f}, y = x;
  std::vector<float> w = {2.0f, 1.0f, 1.0f, 1.0f}, w0 = {1.0f, 0.0f, 0.0f, 0.0f};
  RmsNorm(x.data(), 1, 4, 4, w, 0.0f + 1e-12f);
  RmsNorm(y.data(), 1, 4, 4, w0, 1e-12f, /*zero_centred=*/true);
  // rms = sqrt(25 / 4) = 2.5
  EXPECT_NEAR(x[0], 2.4f, 1e-6);
  EXPECT_NEAR(x[1], 1.6f, 1e-6);
  EXPECT_EQ(x, y);
}

// The GQA-family configurations of real models, shrunk.
struct GqaCase {
  const char* name;
  GqaConfig config;
};

std::vector<GqaCase> GqaCases() {
  auto base = [](int64_t hq, int64_t hkv, int64_t d) {
    GqaConfig c;
    c.hidden = 48;
    c.num_heads_q = hq;
    c.num_heads_kv = hkv;
    c.head_dim = d;
    c.max_tokens = 64;
    return c;
  };
  std::vector<GqaCase> cases;
  cases.push_back({"llama3 gqa", base(4, 2, 16)});
  cases.push_back({"mha", base(3, 3, 8)});
  {
    auto c = base(4, 1, 16);  // MQA, dk != dv, interleaved (GPT-J) rotary
    c.head_dim_v = 24;
    c.rope.layout = RopeLayout::kInterleaved;
    cases.push_back({"mqa dv!=dk gptj", c});
  }
  {
    auto c = base(4, 2, 16);
    c.qk_norm = true;
    cases.push_back({"qwen3 qk-norm", c});
  }
  {
    auto c = base(4, 2, 16);  // Gemma 3 local layer: zero-centred QK-norm, window, soft-cap
    c.qk_norm = true;
    c.qk_norm_zero_centred = true;
    c.window = 5;
    c.softcap = 20.0f;
    cases.push_back({"gemma3 local", c});
  }
  {
    auto c = base(6, 2, 8);  // gpt-oss: sinks and a window
    c.sinks = true;
    c.window = 7;
    c.max_step = 3;
    cases.push_back({"gpt-oss window+sinks", c});
  }
  {
    auto c = base(6, 2, 8);
    c.sinks = true;
    cases.push_back({"gpt-oss full+sinks", c});
  }
  {
    auto c = base(4, 2, 32);  // Qwen3-Next gated attention
    c.qk_norm = true;
    c.qk_norm_zero_centred = true;
    c.rope.fraction = 0.25f;
    c.rope.theta = 1e7f;
    c.output_gate = true;
    cases.push_back({"qwen3-next gated", c});
  }
  {
    auto c = base(2, 2, 8);
    c.use_rope = false;
    c.batch = 2;
    c.window = 4;
    cases.push_back({"no rope, batch 2, window", c});
  }
  return cases;
}

// f32 block vs the same block on the double-accumulating dense reference: both do the same
// f32 projections, so the differences are the kernel's rounding amplified by W_o.
constexpr double kBlockTol = 2e-4;

TEST(GqaBlock, PrefillThenDecodeEqualsFullPass) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const int64_t total = Sanitized() ? 20 : 29;
  for (const auto& cs : GqaCases()) {
    SCOPED_TRACE(cs.name);
    GqaConfig fast = cs.config, slow = cs.config;
    slow.backend = Backend::kReference;
    slow.max_step = total;  // the full pass goes through the gather path on windowed layers
    const GqaWeights w = GqaWeights::Random(fast, seed);
    const Tensor<float> x = RandomHidden(fast.batch, total, fast.hidden, seed + 1);
    GqaBlock full(slow, w);
    const Tensor<float> want = ForwardInChunks(full, x, {total});
    for (int64_t prefill : {int64_t{0}, int64_t{1}, int64_t{11}}) {
      GqaBlock blk(fast, w);
      const Tensor<float> got = ForwardInChunks(blk, x, PrefillThenDecodeChunks(prefill, total));
      EXPECT_LT(RelMaxError(got.view(), want.view()), kBlockTol) << "prefill " << prefill;
      EXPECT_EQ(blk.tokens_seen(), total);
    }
    // Chunked prefill in uneven pieces (crossing the ring's max_step on windowed layers).
    GqaBlock chunked(fast, w);
    const Tensor<float> got = ForwardInChunks(chunked, x, {3, 8, 1, 2, total - 14});
    EXPECT_LT(RelMaxError(got.view(), want.view()), kBlockTol) << "chunked";
  }
}

TEST(GqaBlock, WindowedCacheIsBoundedAndWraps) {
  const uint64_t seed = testing::TestSeed();
  GqaConfig c = GqaCases()[4].config;  // gemma3 local, window 5
  ASSERT_EQ(c.window, 5);
  GqaBlock blk(c, GqaWeights::Random(c, seed));
  const size_t per_token = static_cast<size_t>(GqaCacheBytesPerToken(c));
  EXPECT_EQ(blk.CacheBytes(), per_token * static_cast<size_t>(c.window + c.max_step - 1));
  const Tensor<float> x = RandomHidden(1, 23, c.hidden, seed);
  ForwardInChunks(blk, x, PrefillThenDecodeChunks(4, 23));
  EXPECT_EQ(blk.cache().stored(), c.window);  // wrapped: 23 tokens seen, 5 held
  EXPECT_EQ(blk.CacheBytes(), per_token * static_cast<size_t>(c.window + c.max_step - 1));
}

TEST(GqaBlock, CacheSizeMatchesFormula) {
  GqaConfig c = GqaCases()[0].config;
  c.batch = 3;
  c.max_tokens = 100;
  GqaBlock blk(c, GqaWeights::Random(c, 1));
  EXPECT_EQ(GqaCacheBytesPerToken(c), c.num_heads_kv * 2 * c.head_dim * 4);
  EXPECT_EQ(blk.CacheBytes(), static_cast<size_t>(3 * 100 * GqaCacheBytesPerToken(c)));
}

TEST(GqaBlock, BadInput) {
  GqaConfig c = GqaCases()[3].config;  // qk-norm
  GqaWeights w = GqaWeights::Random(c, 5);
  {
    GqaWeights bad = w;
    bad.w_k = Matrix(c.hidden, c.num_heads_q * c.head_dim);
    try {
      GqaBlock blk(c, bad);
      FAIL() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("w_k"), std::string::npos) << e.what();
    }
    bad = w;
    bad.k_norm.pop_back();
    EXPECT_THROW(GqaBlock(c, bad), Error);
    bad = w;
    bad.w_gate = Matrix(c.hidden, 8);  // gate weight given for a block without a gate
    EXPECT_THROW(GqaBlock(c, bad), Error);
  }
  GqaConfig g = c;
  g.num_heads_kv = 3;  // does not divide 4
  EXPECT_THROW(g.Validate(), Error);
  GqaBlock blk(c, w);
  const Tensor<float> x = RandomHidden(1, c.max_tokens + 1, c.hidden, 9);
  Tensor<float> out(1, 1, c.max_tokens + 1, c.hidden);
  EXPECT_THROW(blk.Forward(x.view(), 0, out.view()), Error);  // past capacity
  EXPECT_EQ(blk.tokens_seen(), 0);
  const Tensor<float> x1 = RandomHidden(1, 1, c.hidden, 9);
  Tensor<float> o1(1, 1, 1, c.hidden);
  blk.Forward(x1.view(), 0, o1.view());
  EXPECT_THROW(blk.Forward(x1.view(), 2, o1.view()), Error);  // skips position 1
  EXPECT_THROW(blk.Forward(x1.view(), 0, o1.view()), Error);  // repeats position 0
  blk.Decode(x1.view(), 1, o1.view());
  const Tensor<float> wrong = RandomHidden(1, 1, c.hidden + 1, 9);
  EXPECT_THROW(blk.Forward(wrong.view(), 2, o1.view()), Error);
  EXPECT_THROW(blk.Forward(x1.view(), 2,
                           TensorView<float>{const_cast<float*>(x1.data()), x1.view().shape,
                                             x1.view().stride}),
               Error);
  // Fill to capacity, then one more token.
  for (int64_t t = 2; t < c.max_tokens; ++t) blk.Decode(x1.view(), t, o1.view());
  EXPECT_THROW(blk.Decode(x1.view(), c.max_tokens, o1.view()), Error);
}

TEST(Stack, HybridPrefillThenDecodeEqualsFullPass) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const int64_t hidden = 32, total = 17;
  auto build = [&](Backend backend) {
    Stack s(hidden);
    GqaConfig local;
    local.hidden = hidden;
    local.num_heads_q = 4;
    local.num_heads_kv = 2;
    local.head_dim = 8;
    local.window = 4;
    local.max_step = total;
    local.backend = backend;
    GqaConfig global = local;
    global.window = 0;
    global.qk_norm = true;
    MlaConfig mla;
    mla.hidden = hidden;
    mla.num_heads = 3;
    mla.q_lora_rank = 12;
    mla.kv_lora_rank = 10;
    mla.qk_nope_head_dim = 8;
    mla.qk_rope_head_dim = 4;
    mla.v_head_dim = 6;
    mla.backend = backend;
    s.Add(std::make_unique<GqaBlock>(local, GqaWeights::Random(local, seed)));
    s.Add(std::make_unique<GqaBlock>(global, GqaWeights::Random(global, seed + 1)));
    s.Add(std::make_unique<MlaBlock>(mla, MlaWeights::Random(mla, seed + 2)));
    return s;
  };
  const Tensor<float> x = RandomHidden(1, total, hidden, seed);
  Stack full = build(Backend::kReference), inc = build(Backend::kAuto);
  Tensor<float> want(1, 1, total, hidden), step(1, 1, 1, hidden);
  full.Forward(x.view(), 0, want.view());
  const int64_t prefill = 6;
  const Tensor<float> xp = SliceTokens(x, 0, prefill);
  Tensor<float> op(1, 1, prefill, hidden);
  inc.Forward(xp.view(), 0, op.view());
  EXPECT_LT(RelMaxError(op.view(), SliceTokens(want, 0, prefill).view()), kBlockTol);
  for (int64_t t = prefill; t < total; ++t) {
    const Tensor<float> xt = SliceTokens(x, t, 1);
    inc.Forward(xt.view(), t, step.view());
    EXPECT_LT(RelMaxError(step.view(), SliceTokens(want, t, 1).view()), kBlockTol) << t;
  }
  EXPECT_EQ(inc.tokens_seen(), total);
  EXPECT_EQ(inc.CacheBytes(), full.CacheBytes() - 0);  // same configurations, same caches
  EXPECT_THROW(inc.Forward(SliceTokens(x, 0, 1).view(), total + 1, step.view()), Error);
}

TEST(LayerFactory, EveryKindDecodesLikeItPrefills) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  LayerShape s;
  s.hidden = 32;
  s.num_heads = 4;
  s.num_heads_kv = 2;
  s.head_dim = 16;
  s.window = 5;
  s.q_lora_rank = 24;
  s.kv_lora_rank = 16;
  s.rope_head_dim = 8;
  s.max_tokens = 16;
  const Tensor<float> x = RandomHidden(1, 16, s.hidden, seed);
  for (const auto& kind : LayerKinds()) {
    SCOPED_TRACE(kind);
    auto full = MakeLayer(kind, s, seed), inc = MakeLayer(kind, s, seed);
    // GQA-family kinds are GqaBlocks ("gqa"), mla-naive an MlaBlock; the others name themselves.
    const std::set<std::string> gqa = {"mha",   "gqa",     "mqa",        "swa",
                                       "sinks", "qknorm",  "gated",      "strided",
                                       "fixed", "bigbird", "longformer", "chunked"};
    EXPECT_EQ(full->Kind(), gqa.count(kind) ? "gqa" : kind.rfind("mla", 0) == 0 ? "mla" : kind);
    // Windowed layers serve at most max_step (1) tokens from the ring: prefill of 4 and of 16
    // goes through the gather path, decode through the ring; all must agree.
    const Tensor<float> want = ForwardInChunks(*full, x, {16});
    const Tensor<float> got = ForwardInChunks(*inc, x, PrefillThenDecodeChunks(4, 16));
    EXPECT_LT(RelMaxError(got.view(), want.view()), kBlockTol);
    EXPECT_GT(inc->CacheBytes(), 0u);
  }
  EXPECT_THROW(MakeLayer("nope", s, 1), Error);
  EXPECT_EQ(ParseLayerList("3*swa,gqa").size(), 4u);
  EXPECT_THROW(ParseLayerList("2*"), Error);
  EXPECT_THROW(ParseLayerList("x*gqa"), Error);
  EXPECT_THROW(ParseLayerList(""), Error);
}

}  // namespace
}  // namespace attnkit

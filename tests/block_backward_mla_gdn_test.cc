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
#include "test_util.h"

namespace attnkit {
namespace {

using testing::RandomHidden;
using testing::RelMaxError;

// ---- Helpers shared by both block families ----

// What one training step produced: the output, dx and every parameter gradient (in Params order).
struct Step {
  Tensor<float> out, dx;
  std::vector<std::vector<float>> grads;
};

std::vector<std::vector<float>> Grads(Layer& layer) {
  std::vector<std::vector<float>> g;
  for (const Param& p : layer.Params()) g.emplace_back(p.grad, p.grad + p.size());
  return g;
}

// ZeroGrad, TrainForward, TrainBackward(dout).
Step TrainStep(Layer& layer, const Tensor<float>& x, const Tensor<float>& dout) {
  const auto& s = x.shape();
  Step r{Tensor<float>(s[0], 1, s[2], s[3]), Tensor<float>(s[0], 1, s[2], s[3]), {}};
  layer.ZeroGrad();
  auto tape = layer.TrainForward(x.view(), r.out.view());
  layer.TrainBackward(*tape, dout.view(), r.dx.view());
  r.grads = Grads(layer);
  return r;
}

// max |a − b| / max |b| over one gradient buffer.
double RelDiff(const std::vector<float>& a, const std::vector<float>& b) {
  double diff = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(static_cast<double>(a[i]) - b[i]));
    scale = std::max(scale, std::abs(static_cast<double>(b[i])));
  }
  return diff / (scale + 1e-30);
}

// Every tensor of a against b: out, dx, each parameter gradient (named in the failure).
void ExpectStepsClose(Layer& layer, const Step& a, const Step& b, double tol) {
  EXPECT_LT(RelMaxError(a.out.view(), b.out.view()), tol) << "out";
  EXPECT_LT(RelMaxError(a.dx.view(), b.dx.view()), tol) << "dx";
  const std::vector<Param> ps = layer.Params();
  ASSERT_EQ(a.grads.size(), ps.size());
  ASSERT_EQ(b.grads.size(), ps.size());
  for (size_t i = 0; i < ps.size(); ++i) {
    EXPECT_LT(RelDiff(a.grads[i], b.grads[i]), tol) << ps[i].name;
  }
}

bool BitEqual(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}
bool BitEqual(const Tensor<float>& a, const Tensor<float>& b) {
  return a.numel() == b.numel() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

// dout restricted to token t (zero elsewhere).
Tensor<float> TokenPiece(const Tensor<float>& dout, int64_t t) {
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
void ExpectPerTokenPiecesSumToWhole(Layer& layer, int64_t batch, int64_t tokens, uint64_t seed,
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
void ExpectThreadCountInvariant(Layer& layer, int64_t batch, int64_t tokens, uint64_t seed) {
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
void ExpectThrowsUnchanged(Layer& layer, const std::function<void()>& call, const char* what) {
  SCOPED_TRACE(what);
  const std::vector<std::vector<float>> before = Grads(layer);
  EXPECT_THROW(call(), Error);
  const std::vector<std::vector<float>> after = Grads(layer);
  ASSERT_EQ(before.size(), after.size());
  for (size_t i = 0; i < before.size(); ++i) EXPECT_TRUE(BitEqual(before[i], after[i]));
}

// Second backward on one tape, a tape from another block of the same kind, dout of another
// shape: each throws attnkit::Error before writing a gradient or dx.
void ExpectBadBackwardInputsRefused(Layer& layer, Layer& other, int64_t tokens, uint64_t seed) {
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

// The same step through `fast` and `slow` (the same weights on another backend) at `tokens`.
void ExpectBackendsAgree(Layer& fast, Layer& slow, int64_t tokens, uint64_t seed, double tol) {
  const Tensor<float> x = RandomHidden(1, tokens, fast.hidden(), seed);
  const Tensor<float> dout = RandomHidden(1, tokens, fast.hidden(), seed + 1);
  const Step a = TrainStep(fast, x, dout);
  const Step b = TrainStep(slow, x, dout);
  ExpectStepsClose(fast, a, b, tol);
}

// Params' names in order; checks that the gradients start at zero and that the parameters are
// every weight (their floats add up to WeightBytes()).
std::vector<std::string> ParamNames(Layer& layer) {
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
  const uint64_t seed = testing::TestSeed();
  const MlaConfig c = MlaCases(Backend::kAuto)[0];
  MlaBlock block(c, MlaWeights::Random(c, seed));
  const Tensor<float> x = RandomHidden(1, 9, c.hidden, seed);
  const Tensor<float> dout = RandomHidden(1, 9, c.hidden, seed + 1);
  const Step with_dx = TrainStep(block, x, dout);
  Tensor<float> out(1, 1, 9, c.hidden);
  block.ZeroGrad();
  auto tape = block.TrainForward(x.view(), out.view());
  block.TrainBackward(*tape, dout.view(), TensorView<float>{});
  const auto grads = Grads(block);
  for (size_t i = 0; i < grads.size(); ++i) EXPECT_TRUE(BitEqual(grads[i], with_dx.grads[i]));
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

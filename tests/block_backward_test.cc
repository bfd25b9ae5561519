// Gradients of the trainable blocks (GqaBlock, Stack; layer.h's training interface): against
// central finite differences of the block's own TrainForward for every option, fast vs reference
// backend at awkward lengths, TrainForward == Forward, prefill gradients == the sum of per-token
// pieces, thread-count invariance, and bad input (nothing written).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/layers/gqa.h"
#include "attnkit/layers/layer.h"
#include "attnkit/layers/ops.h"
#include "layer_grad_util.h"
#include "layer_test_util.h"
#include "layer_train_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::CheckLayerGradients;
using testing::ExpectBackendsAgree;
using testing::ExpectBadBackwardInputsRefused;
using testing::ExpectNullDxSameWeightGradients;
using testing::ExpectPerTokenPiecesSumToWhole;
using testing::ExpectThreadCountInvariant;
using testing::ExpectThrowsUnchanged;
using testing::Grads;
using testing::LayerGradCheck;
using testing::ParamNames;
using testing::RandomHidden;
using testing::RelMaxError;

// Tiny configurations that together cover every option of the block.
std::vector<GqaConfig> TinyConfigs() {
  std::vector<GqaConfig> cs;
  auto base = [] {
    GqaConfig c;
    c.hidden = 8;
    c.num_heads_q = 2;
    c.num_heads_kv = 2;
    c.head_dim = 4;
    c.max_tokens = 64;
    c.backend = Backend::kReference;
    return c;
  };
  GqaConfig c = base();  // MHA, full RoPE (half), batch 2
  c.batch = 2;
  cs.push_back(c);
  c = base();  // GQA, QK-norm, interleaved RoPE
  c.num_heads_q = 4;
  c.num_heads_kv = 2;
  c.qk_norm = true;
  c.rope.layout = RopeLayout::kInterleaved;
  cs.push_back(c);
  c = base();  // MQA, zero-centred QK-norm, partial RoPE, head_dim_v != head_dim, output gate
  c.num_heads_q = 3;
  c.num_heads_kv = 1;
  c.qk_norm = true;
  c.qk_norm_zero_centred = true;
  c.rope.fraction = 0.5f;
  c.head_dim_v = 6;
  c.output_gate = true;
  cs.push_back(c);
  c = base();  // sinks, sliding window, soft-cap, explicit scale, no RoPE
  c.use_rope = false;
  c.sinks = true;
  c.window = 3;
  c.softcap = 2.0f;
  c.scale = 0.7f;
  cs.push_back(c);
  c = base();  // everything at once, batch 2
  c.batch = 2;
  c.num_heads_q = 4;
  c.num_heads_kv = 2;
  c.head_dim = 6;
  c.head_dim_v = 3;
  c.qk_norm = true;
  c.qk_norm_zero_centred = true;
  c.rope.layout = RopeLayout::kInterleaved;
  c.rope.fraction = 0.5f;
  c.output_gate = true;
  c.sinks = true;
  c.window = 2;
  c.softcap = 3.0f;
  cs.push_back(c);
  return cs;
}

GqaBlock MakeBlock(const GqaConfig& c, uint64_t seed) {
  return GqaBlock(c, GqaWeights::Random(c, seed));
}

TEST(GqaBackward, FiniteDifferencesEveryOption) {
  int i = 0;
  for (const GqaConfig& c : TinyConfigs()) {
    GqaBlock block = MakeBlock(c, testing::TestSeed() + i);
    LayerGradCheck check;
    check.batch = c.batch;
    check.tokens = 5;
    check.seed = testing::TestSeed() + 100 + i;
    CheckLayerGradients(block, check);
    EXPECT_EQ(block.tokens_seen(), 0) << "TrainForward must not touch the cache";
    ++i;
  }
}

TEST(GqaBackward, ParamsNameEveryPresentWeight) {
  const auto cs = TinyConfigs();
  GqaBlock plain = MakeBlock(cs[0], 1);
  EXPECT_EQ(ParamNames(plain), (std::vector<std::string>{"w_q", "w_k", "w_v", "w_o"}));
  GqaBlock all = MakeBlock(cs[4], 1);
  EXPECT_EQ(ParamNames(all), (std::vector<std::string>{"w_q", "w_k", "w_v", "w_o", "w_gate",
                                                       "q_norm", "k_norm", "sinks"}));
  const auto ps = all.Params();
  EXPECT_EQ(ps[0].shape, (std::vector<int64_t>{8, 4 * 6}));
  EXPECT_EQ(ps[3].shape, (std::vector<int64_t>{4 * 3, 8}));
  EXPECT_EQ(ps[5].shape, (std::vector<int64_t>{6}));
  EXPECT_EQ(ps[7].shape, (std::vector<int64_t>{4}));
  EXPECT_EQ(ps[0].value, all.weights().w_q.data.data());
  EXPECT_EQ(ps[0].grad, all.grads().w_q.data.data());
}

TEST(GqaBackward, TrainForwardEqualsPrefillForward) {
  int i = 0;
  for (GqaConfig c : TinyConfigs()) {
    for (const Backend backend : {Backend::kReference, Backend::kAuto}) {
      c.backend = backend;
      GqaBlock block = MakeBlock(c, testing::TestSeed() + i);
      SCOPED_TRACE(block.Describe());
      Tensor<float> x = RandomHidden(c.batch, 7, c.hidden, testing::TestSeed() + 50 + i);
      Tensor<float> a(c.batch, 1, 7, c.hidden), b(c.batch, 1, 7, c.hidden);
      block.TrainForward(x.view(), a.view());
      EXPECT_EQ(block.tokens_seen(), 0);
      block.Forward(x.view(), 0, b.view());
      EXPECT_LT(RelMaxError(a.view(), b.view()), 1e-5);
    }
    ++i;
  }
}

// The fast backend's gradients match the reference backend's at awkward lengths.
TEST(GqaBackward, FastBackendMatchesReference) {
  GqaConfig c;
  c.hidden = 24;
  c.num_heads_q = 4;
  c.num_heads_kv = 2;
  c.head_dim = 16;
  c.head_dim_v = 8;
  c.qk_norm = true;
  c.output_gate = true;
  c.sinks = true;
  c.softcap = 20.0f;
  int i = 0;
  for (const int64_t window : {int64_t{0}, int64_t{17}}) {
    for (const int64_t n : {1, 63, 64, 65}) {
      c.window = window;
      c.backend = Backend::kAuto;
      GqaBlock fast = MakeBlock(c, testing::TestSeed() + i);
      c.backend = Backend::kReference;
      GqaBlock ref = MakeBlock(c, testing::TestSeed() + i);
      SCOPED_TRACE(fast.Describe() + " tokens " + std::to_string(n));
      ExpectBackendsAgree(fast, ref, n, testing::TestSeed() + 10 + i, 1e-4, /*batch=*/2);
      ++i;
    }
  }
}

// The same for every option of the tiny grid (the finite-difference configurations).
TEST(GqaBackward, FastBackendMatchesReferenceEveryOption) {
  int i = 0;
  for (GqaConfig c : TinyConfigs()) {
    for (const int64_t n : {1, 63, 64, 65}) {
      c.backend = Backend::kAuto;
      GqaBlock fast = MakeBlock(c, testing::TestSeed() + i);
      c.backend = Backend::kReference;
      GqaBlock ref = MakeBlock(c, testing::TestSeed() + i);
      SCOPED_TRACE(fast.Describe() + " tokens " + std::to_string(n));
      ExpectBackendsAgree(fast, ref, n, testing::TestSeed() + 30 + i, 1e-4, c.batch);
      ++i;
    }
  }
}

// dout is linear in the loss: the gradients of dout over all tokens equal the sum of those of
// dout restricted to each single token (accumulated by the block into its buffers; dx summed).
TEST(GqaBackward, PrefillGradientsEqualSumOfPerTokenPieces) {
  const auto configs = TinyConfigs();
  for (const size_t ci : {size_t{2}, size_t{4}}) {
    GqaConfig c = configs[ci];
    c.backend = Backend::kAuto;
    GqaBlock block = MakeBlock(c, testing::TestSeed() + ci);
    SCOPED_TRACE(block.Describe());
    ExpectPerTokenPiecesSumToWhole(block, c.batch, 6, testing::TestSeed() + 7, 1e-5);
  }
}

TEST(GqaBackward, GradientsDoNotDependOnThreadCount) {
  GqaConfig c = TinyConfigs()[4];
  c.backend = Backend::kAuto;
  c.hidden = 16;
  c.window = 40;
  GqaBlock block = MakeBlock(c, testing::TestSeed());
  ExpectThreadCountInvariant(block, c.batch, testing::Sanitized() ? 70 : 150,
                             testing::TestSeed() + 1);
}

TEST(GqaBackward, BadInputThrowsAndWritesNothing) {
  const GqaConfig c = TinyConfigs()[4];
  GqaBlock block = MakeBlock(c, 1), other = MakeBlock(c, 2);
  ExpectBadBackwardInputsRefused(block, other, 4, testing::TestSeed());
  // dx of another shape; x with another hidden size.
  const int64_t n = 4;
  Tensor<float> x = RandomHidden(c.batch, n, c.hidden, 3),
                r = RandomHidden(c.batch, n, c.hidden, 4);
  Tensor<float> out(c.batch, 1, n, c.hidden), short_dx(c.batch, 1, n - 1, c.hidden);
  auto tape = block.TrainForward(x.view(), out.view());
  ExpectThrowsUnchanged(
      block, [&] { block.TrainBackward(*tape, r.view(), short_dx.view()); }, "dx too short");
  EXPECT_FALSE(tape->consumed);
  Tensor<float> wide(c.batch, 1, n, c.hidden + 1), wide_out(c.batch, 1, n, c.hidden + 1);
  EXPECT_THROW(block.TrainForward(wide.view(), wide_out.view()), Error);
}

// Out of memory at any checked allocation of a training call: attnkit::Error, and the call
// changed nothing (out, the gradients, dx, the tape, which a retry then uses normally).
TEST(GqaBackward, InjectedAllocationFailuresChangeNothing) {
  const GqaConfig c = TinyConfigs()[4];
  GqaBlock block = MakeBlock(c, 4);
  testing::ExpectInjectedAllocationFailuresChangeNothing(block, c.batch, 5);
}

// The tape holds exactly GqaTrainBytesPerToken per token (the figure docs/training.md gives).
TEST(GqaBackward, TapeHoldsGqaTrainBytesPerToken) {
  for (const GqaConfig& c : TinyConfigs()) {
    GqaBlock block = MakeBlock(c, 3);
    SCOPED_TRACE(block.Describe());
    const int64_t n = 5;
    Tensor<float> x = RandomHidden(c.batch, n, c.hidden, 1), out(c.batch, 1, n, c.hidden);
    auto tape = block.TrainForward(x.view(), out.view());
    const auto* t = dynamic_cast<const GqaTape*>(tape.get());
    ASSERT_NE(t, nullptr);
    const size_t floats = t->x.size() + t->q_pre.size() + t->k_pre.size() + t->q.size() +
                          t->k.size() + t->v.size() + t->o.size() + t->g.size() + t->lse.size();
    EXPECT_EQ(static_cast<int64_t>(floats * sizeof(float)), GqaTrainBytesPerToken(c) * c.batch * n);
  }
  GqaConfig llama;  // hidden 4096, 32/8 heads, d 128: 14368 floats per token
  llama.hidden = 4096;
  llama.num_heads_q = 32;
  llama.num_heads_kv = 8;
  llama.head_dim = 128;
  EXPECT_EQ(GqaTrainBytesPerToken(llama), 57472);
}

// dx == nullptr skips the input gradient; the weight gradients are the same.
TEST(GqaBackward, NullDxGivesTheSameWeightGradients) {
  GqaBlock block = MakeBlock(TinyConfigs()[4], 9);
  ExpectNullDxSameWeightGradients(block, 2, 5, testing::TestSeed());
}

// A stack of two GQA layers with different options; its norm weights moved off 1.
Stack TwoLayerStack(uint64_t seed) {
  const auto cs = TinyConfigs();
  Stack stack(8);
  stack.Add(std::make_unique<GqaBlock>(MakeBlock(cs[1], seed)));
  stack.Add(std::make_unique<GqaBlock>(MakeBlock(cs[4], seed + 1)));
  uint64_t k = seed;
  for (const Param& p : stack.Params()) {
    if (p.name == "final_norm" || p.name.ends_with(".norm")) {
      std::vector<float> w = RandomNormWeight(p.size(), ++k);
      std::copy(w.begin(), w.end(), p.value);
    }
  }
  return stack;
}

// A layer without a backward (test-only): out = x.
class Frozen final : public Layer {
 public:
  std::string Kind() const override { return "frozen"; }
  std::string Describe() const override { return "frozen(hidden=8)"; }
  int64_t hidden() const override { return 8; }
  void Forward(TensorView<const float> x, int64_t, TensorView<float> out) override {
    std::copy(x.data, x.data + x.numel(), out.data);
  }
  int64_t tokens_seen() const override { return 0; }
  void Reset() override {}
  size_t CacheBytes() const override { return 0; }
  size_t WeightBytes() const override { return 0; }
};

TEST(StackBackward, FiniteDifferences) {
  Stack stack = TwoLayerStack(testing::TestSeed());
  LayerGradCheck check;
  check.batch = 2;
  check.tokens = 5;
  check.seed = testing::TestSeed() + 3;
  CheckLayerGradients(stack, check);
  EXPECT_EQ(stack.tokens_seen(), 0);
}

TEST(StackBackward, ParamNamesAndTrainForwardEqualsForward) {
  Stack stack = TwoLayerStack(testing::TestSeed());
  EXPECT_EQ(ParamNames(stack),
            (std::vector<std::string>{
                "layers.0.w_q", "layers.0.w_k", "layers.0.w_v", "layers.0.w_o", "layers.0.q_norm",
                "layers.0.k_norm", "layers.0.norm", "layers.1.w_q", "layers.1.w_k", "layers.1.w_v",
                "layers.1.w_o", "layers.1.w_gate", "layers.1.q_norm", "layers.1.k_norm",
                "layers.1.sinks", "layers.1.norm", "final_norm"}));
  // Forward needs layers built for the batch it runs (TrainForward takes any batch).
  const auto cs = TinyConfigs();
  Stack s2(8);
  s2.Add(std::make_unique<GqaBlock>(MakeBlock(cs[0], 1)));
  s2.Add(std::make_unique<GqaBlock>(MakeBlock(cs[4], 2)));
  Tensor<float> x = RandomHidden(2, 6, 8, testing::TestSeed());
  Tensor<float> a(2, 1, 6, 8), b(2, 1, 6, 8);
  s2.TrainForward(x.view(), a.view());
  EXPECT_EQ(s2.tokens_seen(), 0);
  s2.Forward(x.view(), 0, b.view());
  EXPECT_LT(RelMaxError(a.view(), b.view()), 1e-5);
}

TEST(StackBackward, NonTrainableLayerIsRefusedByName) {
  Stack stack(8);
  stack.Add(std::make_unique<GqaBlock>(MakeBlock(TinyConfigs()[0], 1)));
  stack.Add(std::make_unique<Frozen>());
  EXPECT_FALSE(stack.trainable());
  Tensor<float> x = RandomHidden(1, 3, 8, 1), out(1, 1, 3, 8);
  try {
    stack.TrainForward(x.view(), out.view());
    ADD_FAILURE() << "expected attnkit::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 1 (frozen(hidden=8))"), std::string::npos)
        << e.what();
  }
  EXPECT_THROW(stack.Params(), Error);
  EXPECT_THROW(stack.ZeroGrad(), Error);
}

TEST(StackBackward, BadInputThrowsAndWritesNothing) {
  Stack stack = TwoLayerStack(5), other = TwoLayerStack(5);
  ExpectBadBackwardInputsRefused(stack, other, 4, testing::TestSeed());
  // A layer's tape is not the stack's, and the stack's tape is not a layer's.
  Tensor<float> x = RandomHidden(2, 4, 8, 1), r = RandomHidden(2, 4, 8, 2);
  Tensor<float> out(2, 1, 4, 8), dx(2, 1, 4, 8);
  auto tape = stack.TrainForward(x.view(), out.view());
  Layer& first = stack.layer(0);
  auto layer_tape = first.TrainForward(x.view(), out.view());
  ExpectThrowsUnchanged(
      stack, [&] { first.TrainBackward(*tape, r.view(), dx.view()); }, "stack tape to a layer");
  ExpectThrowsUnchanged(
      stack, [&] { stack.TrainBackward(*layer_tape, r.view(), dx.view()); },
      "layer tape to the stack");
}

TEST(StackBackward, PerTokenPiecesAndThreadCounts) {
  Stack stack = TwoLayerStack(testing::TestSeed());
  ExpectPerTokenPiecesSumToWhole(stack, 2, 6, testing::TestSeed() + 1, 1e-5);
  ExpectThreadCountInvariant(stack, 2, 70, testing::TestSeed() + 2);
}

}  // namespace
}  // namespace attnkit

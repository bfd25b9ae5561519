// Training the layer kinds beyond GQA, MLA and Gated DeltaNet / KDA: linear attention
// (performer, linear_elu, linear_relu), DeltaNet, and static sparse attention (strided, fixed,
// bigbird, longformer, chunked), and DeepSeek Sparse Attention (dsa). For every kind: gradients
// against finite differences of the block's own TrainForward (reference backends), TrainForward ==
// Forward from position 0 with the cache or state untouched, prefill then decode == one pass,
// gradients linear in dout, fast vs reference backends at awkward lengths, thread-count invariance,
// and bad backward input refused with nothing written.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/layers/dsa.h"
#include "attnkit/layers/factory.h"
#include "attnkit/layers/gated_deltanet.h"
#include "attnkit/layers/gqa.h"
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
  std::string kind;        // the factory's name
  std::string block_kind;  // the block's Kind() when it differs (GqaBlock: "gqa")
  std::function<std::unique_ptr<Layer>(Backend backend, int64_t batch, uint64_t seed)> make;
  bool fd = true;        // checked against finite differences here
  double fd_tol = 3e-3;  // finite-difference tolerance (see LayerGradCheck)
  float fd_step = 1e-2f;
  // Fast vs reference: each gradient relative to its own scale, no finer than this fraction of
  // the step's largest gradient (see ExpectStepsClose).
  double grad_floor = 1e-3;
  int64_t min_tokens = 1;  // shortest sequence of that comparison
  double backend_tol = 1e-4;
  bool linear_in_dout = true;  // every gradient linear in dout (DSA's indexer's is not)
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
  // ReLU: a weight's step moves every projected q and k, and one of them near 0 puts a kink
  // inside the central difference (about 1 seed in 20 at any usable step). The block's chain is
  // the elu+1 block's, checked here; the engine's ReLU backward is checked against finite
  // differences on inputs kept off the kink (tests/linear_backward_test.cc), and the ReLU block
  // against the reference backend and per-token sums below.
  if (map == FeatureMap::kRelu) k.fd = false;
  // At one token q and k get no gradient analytically (o = v), so theirs is the float kernel's
  // rounding of two cancelling terms; ReLU features can also make a row's normaliser φ(q)·Σφ(k)
  // tiny, and that rounding then grows as 1 / normaliser.
  k.grad_floor = map == FeatureMap::kRelu ? 3e-2 : 1e-2;
  // ReLU at one token: every row's normaliser is one product φ(q)·φ(k), often tiny.
  // and at any length a tiny normaliser amplifies rounding (about 1 seed in 80 above 1e-4).
  if (map == FeatureMap::kRelu) {
    k.min_tokens = 2;
    k.backend_tol = 1e-3;
  }
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

// ---- Static sparse attention ----

// Patterns small enough to be sparse within the tests' 5 to 13 tokens (the factory's defaults
// scale with max_tokens and are nearly dense this short).
PatternSpec SmallPattern(const std::string& name) {
  PatternSpec p(name, 0);
  if (name == "strided") p.stride = 3;
  if (name == "fixed") {
    p.block = 4;
    p.summary = 1;
  }
  if (name == "bigbird") {
    p.block = 2;
    p.window_blocks = 1;
    p.global_blocks = 1;
    p.random_blocks = 1;
    p.seed = 5;
  }
  if (name == "chunked") p.window = 4;
  if (name == "longformer") {
    p.window = 3;
    p.dilation = 2;
    p.dilated_window = 1;
  }
  return p;
}

GqaConfig SparseCfg(const std::string& name, Backend backend, int64_t batch) {
  GqaConfig a;
  a.hidden = 12;
  a.num_heads_q = 4;
  a.num_heads_kv = 2;
  a.head_dim = 4;
  a.head_dim_v = 3;
  a.rope.layout = name == "fixed" ? RopeLayout::kInterleaved : RopeLayout::kHalf;
  a.qk_norm = name == "bigbird";  // the pattern composes with GqaBlock's other options
  a.output_gate = name == "longformer";
  a.batch = batch;
  a.max_tokens = 80;
  a.backend = backend;
  a.pattern = SmallPattern(name);
  return a;
}

KindCase SparseCase(const std::string& name) {
  KindCase k;
  k.kind = name;
  k.block_kind = "gqa";
  k.make = [name](Backend backend, int64_t batch, uint64_t seed) -> std::unique_ptr<Layer> {
    const GqaConfig c = SparseCfg(name, backend, batch);
    return std::make_unique<GqaBlock>(c, GqaWeights::Random(c, seed));
  };
  // QK-norm over 4-wide rows curves enough that the central difference's O(h²) error shows.
  if (name == "bigbird") k.fd_step = 2e-3f;
  return k;
}

const std::vector<std::string> kSparseKinds = {"strided", "fixed", "bigbird", "longformer",
                                               "chunked"};

// ---- DeepSeek Sparse Attention ----

DsaConfig DsaCfg(Backend backend, int64_t batch) {
  DsaConfig c;
  GqaConfig& a = c.attention;
  a.hidden = 12;
  a.num_heads_q = 4;
  a.num_heads_kv = 2;
  a.head_dim = 4;
  a.head_dim_v = 3;
  a.batch = batch;
  a.max_tokens = 80;
  a.backend = backend;
  c.index_heads = 2;
  c.index_dim = 3;
  c.top_k = 3;  // of up to 13 visible keys
  return c;
}

KindCase DsaCase() {
  KindCase k;
  k.kind = "dsa";
  k.make = [](Backend backend, int64_t batch, uint64_t seed) -> std::unique_ptr<Layer> {
    const DsaConfig c = DsaCfg(backend, batch);
    return std::make_unique<DsaBlock>(c, DsaWeights::Random(c, seed));
  };
  // Its indexer's gradients are those of the indexer's own loss, not of the output (one per
  // backward, whatever dout): DsaTrain's tests below check them, and the rest.
  k.fd = false;
  k.linear_in_dout = false;
  return k;
}

std::vector<KindCase> Cases() {
  std::vector<KindCase> cs = {LinearCase(FeatureMap::kFavorPositive),
                              LinearCase(FeatureMap::kEluPlusOne), LinearCase(FeatureMap::kRelu),
                              DeltaNetCase()};
  for (const std::string& name : kSparseKinds) cs.push_back(SparseCase(name));
  cs.push_back(DsaCase());
  return cs;
}

// One kernel thread in every test but ThreadCountInvariant (which runs 1 and 3): these tests run
// many tiny steps, and on a loaded machine a fork per step costs far more than the step.
struct OneThread {
  int previous = GetNumThreads();
  OneThread() { SetNumThreads(1); }
  ~OneThread() { SetNumThreads(previous); }
};

// ---- Every kind ----

TEST(KindsTrain, GradientsMatchFiniteDifferences) {
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    if (!k.fd) continue;
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
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = k.make(Backend::kAuto, 1, seed);
    EXPECT_TRUE(block->trainable());
    EXPECT_EQ(block->Kind(), k.block_kind.empty() ? k.kind : k.block_kind);
    EXPECT_FALSE(ParamNames(*block).empty());
  }
}

TEST(KindsTrain, TrainForwardEqualsForwardAndLeavesTheCache) {
  const OneThread one_thread;
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
  const OneThread one_thread;
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
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    if (!k.linear_in_dout) continue;
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
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    for (const int64_t tokens : {k.min_tokens, int64_t{63}, int64_t{64}, int64_t{65}}) {
      SCOPED_TRACE(::testing::Message() << k.kind << " tokens " << tokens);
      auto fast = k.make(Backend::kAuto, 1, seed), slow = k.make(Backend::kReference, 1, seed);
      ExpectBackendsAgree(*fast, *slow, tokens, seed + 7, k.backend_tol, 1, k.grad_floor);
    }
  }
}

TEST(KindsTrain, BadBackwardInputsAreRefused) {
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = k.make(Backend::kAuto, 1, seed), other = k.make(Backend::kAuto, 1, seed + 1);
    ExpectBadBackwardInputsRefused(*block, *other, 6, seed);
  }
}

TEST(KindsTrain, InjectedAllocationFailuresChangeNothing) {
  const OneThread one_thread;
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = k.make(Backend::kAuto, 1, testing::TestSeed());
    ExpectInjectedAllocationFailuresChangeNothing(*block, 2, 6);
  }
}

// Every new kind is in the factory, builds from a LayerShape and can be trained.
TEST(KindsTrain, FactoryBuildsTrainableBlocks) {
  const OneThread one_thread;
  LayerShape s;
  s.hidden = 16;
  s.num_heads = 2;
  s.num_heads_kv = 1;
  s.head_dim = 8;
  s.max_tokens = 32;
  for (const KindCase& k : Cases()) {
    SCOPED_TRACE(k.kind);
    auto block = MakeLayer(k.kind, s, testing::TestSeed());
    EXPECT_EQ(block->Kind(), k.block_kind.empty() ? k.kind : k.block_kind);
    EXPECT_TRUE(block->trainable());
  }
}

// One token attends only to itself: o = v, so w_q and w_k get no gradient (up to rounding) while
// w_v and w_o do.
TEST(LinearAttentionTrain, OneTokenGivesQueriesAndKeysNoGradient) {
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  for (FeatureMap map : {FeatureMap::kFavorPositive, FeatureMap::kEluPlusOne, FeatureMap::kRelu}) {
    SCOPED_TRACE(LinearAttentionKind(map));
    const LinearAttentionConfig c = LinearCfg(map, Backend::kAuto, 1);
    LinearAttentionBlock block(c, LinearAttentionWeights::Random(c, seed));
    const Tensor<float> x = RandomHidden(2, 1, c.hidden, seed + 1);
    const Tensor<float> dout = RandomHidden(2, 1, c.hidden, seed + 2);
    const Step step = TrainStep(block, x, dout);
    const double scale = MaxAbs(step.grads[2]);  // w_v
    EXPECT_GT(scale, 1e-3);
    EXPECT_LT(MaxAbs(step.grads[0]), 1e-4 * scale) << "w_q";
    EXPECT_LT(MaxAbs(step.grads[1]), 1e-4 * scale) << "w_k";
  }
}

// DeltaNet has no decay parameters, and is Gated DeltaNet with α ≡ 1: the same weights with a
// decay gate that is 1 everywhere (a_log = −inf is not allowed, so exp(a_log) tiny) agree.
TEST(DeltaNetTrain, IsGatedDeltaNetWithoutDecay) {
  const OneThread one_thread;
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

// ---- Sparse attention ----

// Output row q depends on input token j (j != q) exactly when the pattern lets q see j: perturbing
// token j changes the rows that see it and no other, through Forward (prefill, then decode) and
// TrainForward alike.
TEST(SparseAttentionTrain, OutputsDependOnExactlyTheKeysThePatternAllows) {
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  const int64_t tokens = 11;
  for (const std::string& name : kSparseKinds) {
    SCOPED_TRACE(name);
    const GqaConfig c = SparseCfg(name, Backend::kAuto, 1);
    GqaBlock block(c, GqaWeights::Random(c, seed));
    const MaskPtr mask = MakePattern(c.ResolvedPattern());
    const int64_t hidden = c.hidden;
    const Tensor<float> x = RandomHidden(1, tokens, hidden, seed + 1);
    Tensor<float> base(1, 1, tokens, hidden);
    block.TrainForward(x.view(), base.view());
    const Tensor<float> base_decoded =
        ForwardInChunks(block, x, PrefillThenDecodeChunks(5, tokens));
    block.Reset();
    int64_t masked_pairs = 0;
    for (int64_t j = 0; j < tokens; ++j) {
      Tensor<float> xj = SliceTokens(x, 0, tokens);
      for (int64_t i = 0; i < hidden; ++i) xj.data()[j * hidden + i] += 1.0f;
      Tensor<float> train(1, 1, tokens, hidden);
      block.TrainForward(xj.view(), train.view());
      block.Reset();
      const Tensor<float> decoded = ForwardInChunks(block, xj, PrefillThenDecodeChunks(5, tokens));
      block.Reset();
      for (int64_t q = 0; q < tokens; ++q) {
        if (q == j) continue;
        double change = 0, change_decoded = 0;
        for (int64_t i = 0; i < hidden; ++i) {
          const int64_t e = q * hidden + i;
          change = std::max(change, std::abs(double{train.data()[e]} - base.data()[e]));
          change_decoded = std::max(change_decoded,
                                    std::abs(double{decoded.data()[e]} - base_decoded.data()[e]));
        }
        const bool allowed = mask->Allowed(q, j);
        masked_pairs += allowed ? 0 : 1;
        EXPECT_EQ(change > 1e-6, allowed) << "query " << q << " key " << j;
        EXPECT_EQ(change_decoded > 1e-6, allowed) << "decoded: query " << q << " key " << j;
      }
    }
    // The pattern is sparse here (not merely causal): some earlier keys are hidden.
    int64_t hidden_earlier = 0;
    for (int64_t q = 0; q < tokens; ++q) {
      for (int64_t j = 0; j < q; ++j) hidden_earlier += mask->Allowed(q, j) ? 0 : 1;
    }
    EXPECT_GT(hidden_earlier, 0);
    EXPECT_GT(masked_pairs, hidden_earlier);  // the later keys are hidden too (causal)
  }
}

TEST(SparseAttentionTrain, ConfigErrorsNameTheField) {
  const OneThread one_thread;
  GqaConfig c = SparseCfg("strided", Backend::kAuto, 1);
  c.window = 8;  // a pattern needs the contiguous cache
  EXPECT_THROW(c.Validate(), Error);
  c = SparseCfg("strided", Backend::kAuto, 1);
  c.pattern.name = "nope";
  EXPECT_THROW(c.Validate(), Error);
  c = SparseCfg("strided", Backend::kAuto, 1);
  c.pattern.stride = 0;
  EXPECT_THROW(c.Validate(), Error);
  // Beyond the pattern's extent (max_tokens): refused, for training and for the cache.
  c = SparseCfg("bigbird", Backend::kAuto, 1);
  c.max_tokens = 8;
  GqaBlock block(c, GqaWeights::Random(c, 1));
  const Tensor<float> x = RandomHidden(1, 9, c.hidden, 2);
  Tensor<float> out(1, 1, 9, c.hidden);
  EXPECT_THROW(block.TrainForward(x.view(), out.view()), Error);
  EXPECT_THROW(block.Forward(x.view(), 0, out.view()), Error);
  EXPECT_EQ(block.tokens_seen(), 0);
}

// ---- DSA ----

// The DSA block seen through its attention parameters only (w_q, w_k, w_v, w_o), for the
// finite-difference check of the output: the indexer's parameters get the gradient of another
// loss.
struct DsaAttentionOnly {
  DsaBlock& block;
  int64_t hidden() const { return block.hidden(); }
  std::string Describe() const { return block.Describe(); }
  std::unique_ptr<TrainTape> TrainForward(TensorView<const float> x, TensorView<float> out) {
    return block.TrainForward(x, out);
  }
  void TrainBackward(TrainTape& t, TensorView<const float> dout, TensorView<float> dx) {
    block.TrainBackward(t, dout, dx);
  }
  std::vector<Param> Params() {
    std::vector<Param> ps = block.Params();
    ps.resize(4);
    return ps;
  }
  void ZeroGrad() { block.ZeroGrad(); }
};

TEST(DsaTrain, AttentionGradientsMatchFiniteDifferences) {
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  const DsaConfig c = DsaCfg(Backend::kReference, 1);
  DsaWeights w = DsaWeights::Random(c, seed);
  // Head weights w = 0: every score is 0 and the ties select the first top_k positions, a sparse
  // selection that no step of x can change (with scores from x, a step across a near tie changes
  // the selection and the output jumps: it is only piecewise smooth in x).
  std::fill(w.w_index_w.data.begin(), w.w_index_w.data.end(), 0.0f);
  DsaBlock block(c, w);
  DsaAttentionOnly attention{block};
  LayerGradCheck check;
  check.batch = 2;
  check.tokens = 7;
  check.seed = seed;
  check.tol = 3e-3;
  CheckLayerGradients(attention, check);
}

TEST(DsaTrain, AttentionGradientsAreLinearInDout) {
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  const DsaConfig c = DsaCfg(Backend::kAuto, 1);
  DsaBlock block(c, DsaWeights::Random(c, seed));
  DsaAttentionOnly attention{block};
  ExpectPerTokenPiecesSumToWhole(attention, 2, 9, seed + 5, 1e-4);
}

// The indexer's gradients are those of its KL loss (against finite differences of
// last_indexer_loss), and do not depend on dout: the main attention's gradient does not reach
// the indexer, and the indexer's loss does not reach x or the attention's weights.
TEST(DsaTrain, IndexerTrainsByItsOwnLossOnly) {
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  const DsaConfig c = DsaCfg(Backend::kReference, 1);
  DsaBlock block(c, DsaWeights::Random(c, seed));
  const int64_t hidden = c.attention.hidden, tokens = 9;
  const Tensor<float> x = RandomHidden(2, tokens, hidden, seed + 1);
  const Tensor<float> dout = RandomHidden(2, tokens, hidden, seed + 2);
  Tensor<float> zero(2, 1, tokens, hidden);
  std::fill(zero.data(), zero.data() + zero.numel(), 0.0f);
  const Step with = TrainStep(block, x, dout);
  const double loss = block.last_indexer_loss();
  EXPECT_GT(loss, 0.0);
  const Step without = TrainStep(block, x, zero);
  EXPECT_EQ(block.last_indexer_loss(), loss);
  for (size_t i = 0; i < 7; ++i) {
    if (i < 4) {
      EXPECT_EQ(MaxAbs(without.grads[i]), 0.0) << "attention weight " << i << " with dout = 0";
      EXPECT_GT(MaxAbs(with.grads[i]), 0.0) << "attention weight " << i;
    } else {
      EXPECT_TRUE(BitEqual(with.grads[i], without.grads[i])) << "indexer weight " << i;
      EXPECT_GT(MaxAbs(with.grads[i]), 0.0) << "indexer weight " << i;
    }
  }
  for (int64_t i = 0; i < without.dx.numel(); ++i) ASSERT_EQ(without.dx.data()[i], 0.0f) << i;

  // d L_I / d w for a sample of each indexer weight, by central differences of the loss. Every
  // visible key selected (top_k >= tokens): a step may not change the selection, where L_I jumps.
  // The indexer's ReLU still has kinks (every q_I · k_I pair moves with a weight): a step that
  // crosses one on one side is judged by the difference on the other side, so each element
  // passes when the central or either one-sided difference agrees.
  DsaConfig all = c;
  all.top_k = tokens;
  DsaBlock full(all, DsaWeights::Random(all, seed));
  const Step step = TrainStep(full, x, zero);
  const float h = 1e-3f;
  auto loss_at = [&]() {
    Tensor<float> out(2, 1, tokens, hidden), dx(2, 1, tokens, hidden);
    auto tape = full.TrainForward(x.view(), out.view());
    full.TrainBackward(*tape, zero.view(), dx.view());
    return full.last_indexer_loss();
  };
  std::vector<Param> ps = full.Params();
  for (size_t i = 4; i < 7; ++i) {
    SCOPED_TRACE(ps[i].name);
    const std::vector<float> grad = step.grads[i];
    double max_err = 0, max_fd = 0;
    for (int64_t e = 0; e < ps[i].size(); e += 3) {
      const float v0 = ps[i].value[e];
      const double mid = loss_at();
      ps[i].value[e] = v0 + h;
      const double up = loss_at();
      ps[i].value[e] = v0 - h;
      const double down = loss_at();
      ps[i].value[e] = v0;
      const double g = grad[static_cast<size_t>(e)];
      const double fd = (up - down) / (2.0 * h);
      max_err = std::max(max_err, std::min({std::abs(fd - g), std::abs((up - mid) / h - g),
                                            std::abs((mid - down) / h - g)}));
      max_fd = std::max(max_fd, std::abs(fd));
    }
    EXPECT_GT(max_fd, 0.0);
    EXPECT_LT(max_err, 1e-2 * std::max(1.0, max_fd)) << "max |fd| " << max_fd;
  }
}

// With top_k at least the sequence, every query selects all its keys: DSA is causal attention,
// the same as a GqaBlock with the same attention weights.
TEST(DsaTrain, TopKOverTheWholeSequenceIsCausalAttention) {
  const OneThread one_thread;
  const uint64_t seed = testing::TestSeed();
  DsaConfig c = DsaCfg(Backend::kAuto, 1);
  c.top_k = 16;
  const DsaWeights w = DsaWeights::Random(c, seed);
  DsaBlock dsa(c, w);
  GqaBlock gqa(c.attention, w.attention);
  const Tensor<float> x = RandomHidden(1, 12, c.attention.hidden, seed + 1);
  const Tensor<float> a = ForwardInChunks(dsa, x, PrefillThenDecodeChunks(5, 12));
  const Tensor<float> b = ForwardInChunks(gqa, x, {12});
  EXPECT_LT(RelMaxError(a.view(), b.view()), 1e-5);
  DsaConfig bad = DsaCfg(Backend::kAuto, 1);
  bad.attention.window = 4;  // a GqaBlock option
  EXPECT_THROW(bad.Validate(), Error);
  bad = DsaCfg(Backend::kAuto, 1);
  bad.top_k = 0;
  EXPECT_THROW(bad.Validate(), Error);
}

// ---- Performer's features ----

TEST(LinearAttentionTrain, RedrawChangesTheFunctionResetsTheStateAndStalesTapes) {
  const OneThread one_thread;
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
  const OneThread one_thread;
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

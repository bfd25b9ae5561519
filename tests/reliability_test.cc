// Reliability: sizes near the int64 limit, checked allocations, bounded work for huge pattern
// parameters (issue 13). Each test here failed (crashed, hung or allocated gigabytes) before the
// fix it guards.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/core/runtime.h"
#include "attnkit/core/tensor.h"
#include "attnkit/kernels/gather.h"
#include "attnkit/kernels/kv_cache.h"
#include "attnkit/kernels/linear.h"
#include "attnkit/kernels/recurrent.h"
#include "attnkit/layers/factory.h"
#include "attnkit/layers/ops.h"
#include "attnkit/masks/mask.h"
#include "attnkit/masks/sparse.h"
#include "layer_test_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

// Expects an attnkit::Error whose message contains `needle`.
template <typename F>
void ExpectError(F&& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no attnkit::Error (expected one mentioning '" << needle << "')";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
  }
}

TEST(Checked, MulAddProduct) {
  EXPECT_EQ(CheckedMul(0, kMax, "f", "x"), 0);
  EXPECT_EQ(CheckedMul(1, kMax, "f", "x"), kMax);
  EXPECT_EQ(CheckedMul(int64_t{1} << 31, int64_t{1} << 31, "f", "x"), int64_t{1} << 62);
  ExpectError([] { CheckedMul(int64_t{1} << 32, int64_t{1} << 31, "f", "x"); }, "overflows");
  ExpectError([] { CheckedMul(kMax, 2, "f", "what"); }, "f: what");
  ExpectError([] { CheckedMul(-1, 2, "f", "x"); }, "negative");
  ExpectError([] { CheckedAdd(kMax, 1, "f", "x"); }, "overflows");
  EXPECT_EQ(CheckedProduct({1, 8, int64_t{1} << 20}, "f", "x"), int64_t{8} << 20);
  ExpectError([] { CheckedProduct({1, 8, int64_t{1} << 61}, "f", "x"); }, "overflows");
}

// Heap corruption before the fix: batch*capacity*index_dim wrapped to 0, so the cache accepted
// the size, allocated nothing and a later Append wrote past the buffer.
TEST(Checked, IndexerCacheSizeProduct) {
  ExpectError([] { IndexerCache(1, 8, int64_t{1} << 61); }, "batch*capacity*index_dim");
  ExpectError([] { IndexerCache(kMax, kMax, kMax); }, "IndexerCache");
  // Within int64 but beyond any buffer: refused with the size, not std::bad_alloc.
  ExpectError([] { IndexerCache(1, 8, int64_t{1} << 50); }, "more than");
  IndexerCache ok(1, 8, 4);
  Tensor<float> k(1, 1, 5, 8);
  ExpectError([&] { ok.Append(k.view()); }, "capacity");
  EXPECT_EQ(ok.length(), 0);
}

TEST(Checked, KvCacheAndTensorSizes) {
  ExpectError([] { KvCache<float>(1, 1, 8, 8, int64_t{1} << 61); }, "KvCache");
  ExpectError([] { KvCache<float>(1, 1, 8, 8, 16, kMax, 2); }, "window + max_step - 1");
  ExpectError([] { Tensor<float>(int64_t{1} << 20, int64_t{1} << 20, int64_t{1} << 20, 1024); },
              "overflows");
  ExpectError([] { Tensor<float>(1, 1, int64_t{1} << 40, 1024); }, "more than");
  ExpectError([] { Tensor<float>(0, 1, 1, 1); }, "positive");
  ExpectError([] { Tensor<float>(-1, 1, 1, 1); }, "positive");
}

// Matrix threw std::length_error / std::bad_alloc (which no caller catches as attnkit::Error).
TEST(Checked, MatrixThrowsOnlyAttnkitError) {
  ExpectError([] { Matrix(-1, 4); }, "Matrix");
  ExpectError([] { Matrix(int64_t{1} << 40, int64_t{1} << 40); }, "Matrix");
  ExpectError([] { Matrix(int64_t{1} << 20, int64_t{1} << 30); }, "more than");
  EXPECT_EQ(Matrix(0, 0).data.size(), 0u);
}

TEST(Checked, AllocationFailureHookBecomesError) {
  detail::FailNthAllocation(1);
  ExpectError([] { Tensor<float>(1, 2, 3, 4); }, "out of memory");
  Tensor<float> after(1, 2, 3, 4);  // the hook fires once
  EXPECT_EQ(after.numel(), 24);
  detail::FailNthAllocation(2);
  std::vector<float> v;
  CheckedResize(v, 10, "f", "first");  // 1st: fine
  ExpectError([&] { CheckedResize(v, 100, "f", "second buffer"); }, "second buffer");
  EXPECT_EQ(v.size(), 10u);
  EXPECT_EQ(detail::FailNthAllocation(0), 0);
}

TEST(Checked, ViewExtentAndStrides) {
  float x[16] = {};
  TensorView<const float> v{x, {1, 1, 4, 4}, {16, 16, 4, 1}};
  CheckView(v, "f", "q");
  auto bad = v;
  bad.stride[2] = -4;
  ExpectError([&] { CheckView(bad, "f", "q"); }, "negative stride");
  bad = v;
  bad.shape[2] = 0;
  ExpectError([&] { CheckView(bad, "f", "q"); }, "non-positive");
  bad = v;
  bad.stride[3] = 0;
  ExpectError([&] { CheckView(bad, "f", "q"); }, "unit stride");
  // The extent (tokens-1)·stride overflows int64: a view nobody can index.
  bad = v;
  bad.shape[2] = int64_t{1} << 40;
  bad.stride[2] = int64_t{1} << 40;
  ExpectError([&] { CheckView(bad, "f", "q"); }, "q");
  // numel overflows although each size is fine.
  bad = v;
  bad.shape = {int64_t{1} << 20, int64_t{1} << 20, int64_t{1} << 20, 1 << 10};
  bad.stride = {0, 0, 0, 1};
  ExpectError([&] { CheckView(bad, "f", "k"); }, "k");
  // Near the limit but representable in elements, not in bytes.
  bad = v;
  bad.shape = {1, 1, 2, 4};
  bad.stride = {0, 0, kMax / 2, 1};
  ExpectError([&] { CheckView(bad, "f", "v"); }, "v");
}

// Hung before the fix: MaskDensity visited (2^40 / 64)^2 tiles.
TEST(Checked, MaskDensityRefusesHugeGrids) {
  const auto t0 = std::chrono::steady_clock::now();
  const MaskPtr causal = CausalMask();
  ExpectError([&] { MaskDensity(causal.get(), int64_t{1} << 40, int64_t{1} << 40); }, "tiles");
  ExpectError([&] { CountTiles(causal.get(), kMax, kMax); }, "tiles");
  EXPECT_NEAR(MaskDensity(causal.get(), 256, 256), (256.0 * 257 / 2) / (256.0 * 256), 1e-12);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

// Brute-force Longformer: window taps, dilated taps q ± m·dilation (m <= dilated_window), globals.
bool LongformerAllowed(int64_t n, int64_t w, int64_t dil, int64_t dw, int64_t q, int64_t k) {
  if (k > q || q >= n) return false;
  const int64_t d = q - k;
  if (d <= w || q == 0 || k == 0) return true;  // global position 0
  return dil > 1 && d % dil == 0 && d / dil <= dw;
}

// Ran for minutes before the fix (a loop over every dilated tap of every row).
TEST(Checked, LongformerHugeDilatedWindowIsBoundedAndExact) {
  const auto t0 = std::chrono::steady_clock::now();
  for (const int64_t dw : {int64_t{3}, int64_t{100000000}, kMax}) {
    for (const int64_t dil : {int64_t{2}, int64_t{5}, kMax}) {
      PatternSpec s;
      s.name = "longformer";
      s.seqlen = 37;
      s.window = 3;
      s.dilation = dil;
      s.dilated_window = dw;
      const MaskPtr m = MakePattern(s);
      std::vector<uint8_t> tile(37 * 37);
      m->FillTile(0, 37, 0, 37, tile.data());
      for (int64_t q = 0; q < 37; ++q) {
        for (int64_t k = 0; k < 37; ++k) {
          const bool want = LongformerAllowed(37, 2, dil, dw, q, k);
          ASSERT_EQ(tile[q * 37 + k] != 0, want) << "q " << q << " k " << k << " dw " << dw;
          ASSERT_EQ(m->Allowed(q, k), want) << "q " << q << " k " << k << " dw " << dw;
        }
      }
      (void)MaskDensity(m.get(), 37, 37);
    }
  }
  ExpectError(
      [] {
        PatternSpec s;
        s.name = "longformer";
        s.seqlen = 32;
        s.dilated_window = -1;
        MakePattern(s);
      },
      "dilated_window");
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 10.0);
}

// The BigBird random blocks as first written (every candidate listed, partial Fisher–Yates),
// kept here to show the O(r)-per-block sampler draws exactly the same blocks.
std::vector<int64_t> BigBirdRandomListed(const BigBirdOptions& o, int64_t qb) {
  const int64_t nb = (o.seqlen + o.block - 1) / o.block;
  std::vector<int64_t> c;
  const int64_t end = o.causal ? qb : nb;
  for (int64_t kb = o.global_blocks; kb < end; ++kb) {
    if (std::abs(qb - kb) > o.window_blocks) c.push_back(kb);
  }
  const int64_t n = static_cast<int64_t>(c.size());
  const int64_t take = std::min(o.random_blocks, n);
  auto mix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
  };
  uint64_t state = mix(o.seed ^ mix(static_cast<uint64_t>(qb)));
  for (int64_t i = 0; i < take; ++i) {
    state = mix(state);
    const int64_t j = i + static_cast<int64_t>(state % static_cast<uint64_t>(n - i));
    std::swap(c[i], c[j]);
  }
  c.resize(static_cast<size_t>(take));
  std::sort(c.begin(), c.end());
  return c;
}

TEST(Checked, BigBirdSamplerUnchangedAndHugeCountsClamped) {
  for (const bool causal : {true, false}) {
    for (const uint64_t seed : {uint64_t{0}, uint64_t{7}, testing::TestSeed()}) {
      BigBirdOptions o;
      o.seqlen = 61;
      o.block = 2;
      o.window_blocks = 2;
      o.global_blocks = 1;
      o.random_blocks = 4;
      o.seed = seed;
      o.causal = causal;
      const MaskPtr m = BigBirdMask(o);
      const int64_t nb = 31;
      for (int64_t qb = o.global_blocks; qb < nb; ++qb) {
        const auto want = BigBirdRandomListed(o, qb);
        for (int64_t kb = 0; kb < nb; ++kb) {
          const bool structural = std::abs(qb - kb) <= o.window_blocks || kb < o.global_blocks;
          if (structural || (causal && kb > qb)) continue;
          const bool picked = std::binary_search(want.begin(), want.end(), kb);
          ASSERT_EQ(m->Allowed(qb * 2, kb * 2), picked)
              << "causal " << causal << " seed " << seed << " qb " << qb << " kb " << kb;
        }
      }
    }
  }
  // Allocated random_blocks × num_blocks entries before the fix (gigabytes for 1e8).
  const auto t0 = std::chrono::steady_clock::now();
  PatternSpec s;
  s.name = "bigbird";
  s.seqlen = 32;
  s.random_blocks = 100000000;
  const MaskPtr huge = MakePattern(s);
  s.random_blocks = 16;  // every block: the same mask
  const MaskPtr all = MakePattern(s);
  for (int64_t q = 0; q < 32; ++q) {
    for (int64_t k = 0; k < 32; ++k) ASSERT_EQ(huge->Allowed(q, k), all->Allowed(q, k));
  }
  s.window_blocks = kMax;
  s.global_blocks = kMax;
  s.random_blocks = kMax;
  (void)MaskDensity(MakePattern(s).get(), 32, 32);
  EXPECT_LT(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(), 5.0);
}

LayerShape SmallShape() {
  LayerShape shape;
  shape.hidden = 32;
  shape.num_heads = 4;
  shape.num_heads_kv = 2;
  shape.head_dim = 8;
  shape.window = 3;  // swa / sinks: a ring buffer that wraps during the test
  shape.q_lora_rank = 16;
  shape.kv_lora_rank = 16;
  shape.rope_head_dim = 4;
  shape.max_tokens = 128;
  return shape;
}

// Injects an allocation failure at each checked allocation (1st, 2nd, ...) of a 3-token step
// after a prompt of P tokens, for every layer kind; returns nothing, fails the test on any change.
void InjectFailuresInEveryKind(int64_t P, int threads, bool every_kind_must_fail) {
  LayerShape shape = SmallShape();
  shape.max_tokens = 512;
  const uint64_t seed = testing::TestSeed();
  const int previous_threads = GetNumThreads();
  SetNumThreads(threads);
  const Tensor<float> prompt = testing::RandomHidden(1, P, shape.hidden, seed);
  const Tensor<float> x = testing::RandomHidden(1, 3, shape.hidden, seed + 1);
  for (const std::string& kind : LayerKinds()) {
    SCOPED_TRACE(kind);
    // What a twin that never failed gives for three 3-token steps after the prompt.
    std::vector<float> expected;
    size_t cache_bytes = 0;
    {
      auto b = MakeLayer(kind, shape, 7);
      Tensor<float> ob(1, 1, P, shape.hidden), yb(1, 1, 3, shape.hidden);
      b->Forward(prompt.view(), 0, ob.view());
      cache_bytes = b->CacheBytes();
      for (int64_t t = P; t < P + 9; t += 3) {
        b->Forward(testing::RandomHidden(1, 3, shape.hidden, seed + t).view(), t, yb.view());
        expected.insert(expected.end(), yb.data(), yb.data() + yb.numel());
      }
    }
    int failures_seen = 0;
    for (int64_t nth = 1; nth <= 16; ++nth) {
      auto a = MakeLayer(kind, shape, 7);
      Tensor<float> oa(1, 1, P, shape.hidden), ya(1, 1, 3, shape.hidden);
      a->Forward(prompt.view(), 0, oa.view());
      // A bad shape first (one token too many for the output).
      Tensor<float> wrong(1, 1, 2, shape.hidden);  // x has 3 tokens
      EXPECT_THROW(a->Forward(x.view(), P, wrong.view()), Error);
      // A step of 3 tokens (a chunk: attention allocates its partial results) after the prompt.
      detail::FailNthAllocation(nth);
      bool failed = false;
      try {
        a->Forward(x.view(), P, ya.view());
      } catch (const Error& e) {
        failed = true;
        EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
      }
      detail::FailNthAllocation(0);
      if (!failed) break;  // this step makes fewer than nth checked allocations
      ++failures_seen;
      ASSERT_EQ(a->tokens_seen(), P) << "failed at allocation " << nth;
      EXPECT_EQ(a->CacheBytes(), cache_bytes);
      std::vector<float> got;
      for (int64_t t = P; t < P + 9; t += 3) {
        a->Forward(testing::RandomHidden(1, 3, shape.hidden, seed + t).view(), t, ya.view());
        got.insert(got.end(), ya.data(), ya.data() + ya.numel());
      }
      ASSERT_EQ(got, expected) << "allocation " << nth << " failed";
    }
    if (every_kind_must_fail || kind.rfind("mla", 0) != 0) {
      EXPECT_GT(failures_seen, 0) << "no checked allocation in a step of " << kind;
    }
  }
  SetNumThreads(previous_threads);
}

// A call that fails leaves the block as it was: for every layer kind, an allocation failure
// injected at each checked allocation of a decode step (and a bad shape) must leave tokens_seen
// unchanged, and the next calls must give bit-identical outputs to a twin that never failed.
// Before the fix GqaBlock appended to its KV cache before attention (so a failure advanced
// tokens_seen), and GatedDeltaNetBlock had already advanced its convolution state.
// 300 cached tokens and 2 threads: decode splits the keys into pieces (and allocates their
// partial results), the step where a failure used to leave the KV cache appended. MLA makes no
// checked allocation in this step once its prefill has grown its scratch (by 1.25x).
TEST(FailedCallsChangeNothing, EveryLayerKindUnderInjectedFailures) {
  InjectFailuresInEveryKind(300, /*threads=*/2, /*every_kind_must_fail=*/false);
}

// The same after a 2-token prompt: the 3-token step grows every block's scratch, so every kind
// (MLA's latent-length restore included) fails at least once.
TEST(FailedCallsChangeNothing, EveryLayerKindAfterAShortPrompt) {
  InjectFailuresInEveryKind(2, /*threads=*/1, /*every_kind_must_fail=*/true);
}

// Every layer kind in one stack, the recurrent kinds last (so that a failure there comes after
// every cache has advanced), plus `last` if given.
Stack EveryKindStack(const LayerShape& shape, std::unique_ptr<Layer> last = nullptr) {
  Stack s(shape.hidden);
  std::vector<std::string> kinds = LayerKinds();
  std::stable_partition(kinds.begin(), kinds.end(),
                        [](const std::string& k) { return k != "gated_deltanet" && k != "kda"; });
  uint64_t seed = 11;
  for (const std::string& kind : kinds) s.Add(MakeLayer(kind, shape, seed++));
  if (last != nullptr) s.Add(std::move(last));
  return s;
}

void ExpectSameSteps(Stack& a, Stack& b, int64_t from, int64_t steps, int64_t step_tokens,
                     uint64_t seed, const std::string& what) {
  const int64_t hidden = a.hidden();
  Tensor<float> ya(1, 1, step_tokens, hidden), yb(1, 1, step_tokens, hidden);
  for (int64_t t = from; t < from + steps * step_tokens; t += step_tokens) {
    Tensor<float> xt = testing::RandomHidden(1, step_tokens, hidden, seed + t);
    a.Forward(xt.view(), t, ya.view());
    b.Forward(xt.view(), t, yb.view());
    for (int64_t i = 0; i < step_tokens * hidden; ++i) {
      ASSERT_EQ(ya.data()[i], yb.data()[i]) << what << "; token " << t << " element " << i;
    }
  }
}

// A Stack call that fails in layer i leaves layers 0 … i − 1 as they were (they had advanced
// before the fix: the stack's tokens_seen() was P + 3 after the failure). Allocation failures are
// injected at each checked allocation of a 3-token step (every layer in turn, the last one
// included), then the stack must match a twin that never failed, bit for bit. The prompt is
// shorter than the step, so every layer grows its scratch (a checked allocation) in the step.
TEST(FailedCallsChangeNothing, StackRollsBackEveryLayerOnAnInjectedFailure) {
  const LayerShape shape = SmallShape();
  const uint64_t seed = testing::TestSeed();
  constexpr int64_t P = 2, kSteps = 3;
  const Tensor<float> prompt = testing::RandomHidden(1, P, shape.hidden, seed);
  const Tensor<float> x = testing::RandomHidden(1, 3, shape.hidden, seed + 1);
  Tensor<float> o(1, 1, P, shape.hidden), y(1, 1, 3, shape.hidden);
  // What a stack that never failed gives for kSteps steps of 3 tokens after the prompt.
  std::vector<float> expected;
  {
    Stack b = EveryKindStack(shape);
    b.Forward(prompt.view(), 0, o.view());
    for (int64_t s = 0; s < kSteps; ++s) {
      const Tensor<float> xt = testing::RandomHidden(1, 3, shape.hidden, seed + 100 + s);
      b.Forward(xt.view(), P + 3 * s, y.view());
      expected.insert(expected.end(), y.data(), y.data() + y.numel());
    }
  }
  bool failed_in_last_layer = false;
  int failures = 0;
  const int previous_threads = GetNumThreads();
  SetNumThreads(1);  // no fork/join per layer call: the test is about state, not threads
  // Every fourth checked allocation of the step (about 160 with every kind stacked; the stride
  // keeps the test fast under ASan and still fails every layer).
  for (int64_t nth = 1; nth <= 4000; nth += 4) {
    Stack a = EveryKindStack(shape);
    a.Forward(prompt.view(), 0, o.view());
    const size_t cache_bytes = a.CacheBytes();
    detail::FailNthAllocation(nth);
    std::string message;
    try {
      a.Forward(x.view(), P, y.view());
    } catch (const Error& e) {
      message = e.what();
    }
    detail::FailNthAllocation(0);
    if (message.empty()) break;  // the step makes fewer than nth checked allocations
    ++failures;
    EXPECT_NE(message.find("out of memory"), std::string::npos) << message;
    if (message.find("GatedDeltaNetBlock") != std::string::npos) failed_in_last_layer = true;
    for (size_t i = 0; i < a.num_layers(); ++i) {
      ASSERT_EQ(a.layer(i).tokens_seen(), P) << "layer " << i << " after: " << message;
    }
    EXPECT_EQ(a.CacheBytes(), cache_bytes);
    std::vector<float> got;
    for (int64_t s = 0; s < kSteps; ++s) {
      const Tensor<float> xt = testing::RandomHidden(1, 3, shape.hidden, seed + 100 + s);
      a.Forward(xt.view(), P + 3 * s, y.view());
      got.insert(got.end(), y.data(), y.data() + y.numel());
    }
    ASSERT_EQ(got, expected) << "allocation " << nth << " failed: " << message;
  }
  SetNumThreads(previous_threads);
  EXPECT_GT(failures, 10);
  EXPECT_TRUE(failed_in_last_layer) << "no failure reached the recurrent layers at the end";
}

// A later layer refuses the call (its KV cache is full) after every other layer has run: the
// stack is rolled back and goes on as a twin that never saw the call.
TEST(FailedCallsChangeNothing, StackRollsBackWhenALaterLayerRefuses) {
  const LayerShape shape = SmallShape();
  const uint64_t seed = testing::TestSeed();
  constexpr int64_t P = 20;
  LayerShape small = shape;
  small.max_tokens = P + 2;  // room for two more tokens, not three
  const int previous_threads = GetNumThreads();
  SetNumThreads(1);
  Stack a = EveryKindStack(shape, MakeLayer("gqa", small, 99));
  Stack b = EveryKindStack(shape, MakeLayer("gqa", small, 99));
  const Tensor<float> prompt = testing::RandomHidden(1, P, shape.hidden, seed);
  Tensor<float> oa(1, 1, P, shape.hidden), ob(1, 1, P, shape.hidden), y(1, 1, 3, shape.hidden);
  a.Forward(prompt.view(), 0, oa.view());
  b.Forward(prompt.view(), 0, ob.view());
  const Tensor<float> x = testing::RandomHidden(1, 3, shape.hidden, seed + 1);
  ExpectError([&] { a.Forward(x.view(), P, y.view()); }, "exceed the KV cache capacity");
  for (size_t i = 0; i < a.num_layers(); ++i) ASSERT_EQ(a.layer(i).tokens_seen(), P) << i;
  ExpectSameSteps(a, b, P, 2, 1, seed, "after the refused call");
  SetNumThreads(previous_threads);
}

// UndoForward itself: each kind put back after a successful call (ring wrap included) continues
// exactly as a twin; only the last call can be undone, and not after a failed call or Reset().
TEST(FailedCallsChangeNothing, UndoForwardOfEveryKind) {
  const LayerShape shape = SmallShape();
  const uint64_t seed = testing::TestSeed();
  const Tensor<float> prompt = testing::RandomHidden(1, 7, shape.hidden, seed);
  const int previous_threads = GetNumThreads();
  SetNumThreads(1);
  for (const std::string& kind : LayerKinds()) {
    SCOPED_TRACE(kind);
    auto a = MakeLayer(kind, shape, 5), b = MakeLayer(kind, shape, 5);
    EXPECT_FALSE(a->UndoForward());  // nothing yet
    Tensor<float> o(1, 1, 7, shape.hidden), y(1, 1, 2, shape.hidden), yb(1, 1, 2, shape.hidden);
    a->Forward(prompt.view(), 0, o.view());
    b->Forward(prompt.view(), 0, o.view());
    // A 5-token call (longer than the window: the ring is overwritten whole), undone.
    const Tensor<float> x5 = testing::RandomHidden(1, 5, shape.hidden, seed + 2);
    Tensor<float> o5(1, 1, 5, shape.hidden);
    a->Forward(x5.view(), 7, o5.view());
    EXPECT_TRUE(a->UndoForward());
    EXPECT_FALSE(a->UndoForward());  // once
    EXPECT_EQ(a->tokens_seen(), 7);
    // A failed call leaves nothing to undo (the earlier successful call stays done).
    const Tensor<float> x2 = testing::RandomHidden(1, 2, shape.hidden, seed + 3);
    a->Forward(x2.view(), 7, y.view());
    b->Forward(x2.view(), 7, yb.view());
    EXPECT_THROW(a->Forward(x2.view(), 7, y.view()), Error);  // repeats a position
    EXPECT_FALSE(a->UndoForward());
    for (int64_t t = 9; t < 15; t += 2) {
      const Tensor<float> xt = testing::RandomHidden(1, 2, shape.hidden, seed + t);
      a->Forward(xt.view(), t, y.view());
      b->Forward(xt.view(), t, yb.view());
      for (int64_t i = 0; i < 2 * shape.hidden; ++i) ASSERT_EQ(y.data()[i], yb.data()[i]) << t;
    }
    a->Reset();
    EXPECT_FALSE(a->UndoForward());
  }
  SetNumThreads(previous_threads);
}

// Tokens [t0, t0 + n) of a [batch, heads, tokens, dim] tensor, as a view.
template <typename T>
TensorView<T> TokenRange(TensorView<T> x, int64_t t0, int64_t n) {
  return TensorView<T>{x.data + t0 * x.stride[2], {x.batch(), x.heads(), n, x.dim()}, x.stride};
}

// Runs `call(t0, n, state, out)` (a kernel with a caller-held state) with an allocation failure
// injected at each checked allocation in turn, and a bad shape, after a prefill: the state must
// be unchanged bit for bit (`same`), and the next calls must match a twin's. Returns the number
// of injected failures that made the call throw.
template <typename State, typename Call, typename Same>
int InjectIntoStatefulCall(const std::function<State()>& fresh, Call call, Same same, int64_t dv) {
  constexpr int64_t P = 10, step = 5;
  int failures = 0;
  for (int64_t nth = 1; nth <= 32; ++nth) {
    State a = fresh(), b = fresh();
    Tensor<float> out(1, 2, P + 3 * step, dv), out_b(1, 2, P + 3 * step, dv);
    call(0, P, a, TokenRange(out.view(), 0, P));
    call(0, P, b, TokenRange(out_b.view(), 0, P));
    const State before = a;
    Tensor<float> wrong(1, 2, step + 1, dv);
    EXPECT_THROW(call(P, step, a, wrong.view()), Error);  // out has one token too many
    EXPECT_TRUE(same(a, before)) << "a bad shape changed the state";
    detail::FailNthAllocation(nth);
    bool failed = false;
    try {
      call(P, step, a, TokenRange(out.view(), P, step));
    } catch (const Error& e) {
      failed = true;
      EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
    }
    detail::FailNthAllocation(0);
    if (!failed) break;
    ++failures;
    EXPECT_TRUE(same(a, before)) << "allocation " << nth << " failed and changed the state";
    for (int64_t t = P; t < P + 3 * step; t += step) {
      call(t, step, a, TokenRange(out.view(), t, step));
      call(t, step, b, TokenRange(out_b.view(), t, step));
    }
    EXPECT_TRUE(same(a, b)) << "after allocation " << nth << " failed";
    EXPECT_TRUE(std::equal(out.data(), out.data() + out.numel(), out_b.data()))
        << "outputs differ after allocation " << nth << " failed";
  }
  return failures;
}

// LinearState (both backends, every feature map): a failed call leaves it as it was. Before the
// fix the reference allocated each head's state inside its loop (an allocation failure there came
// after earlier heads' states were written) and neither backend's scratch was checked.
TEST(FailedCallsChangeNothing, LinearStateUnderInjectedFailures) {
  const uint64_t seed = testing::TestSeed();
  constexpr int64_t T = 25, dk = 8, dv = 6;
  std::mt19937_64 rng(seed);
  Tensor<float> q(1, 2, T, dk), k(1, 2, T, dk), v(1, 2, T, dv);
  testing::FillNormal(q, rng);
  testing::FillNormal(k, rng);
  testing::FillNormal(v, rng);
  const PerformerFeatures feats(16, dk, RandomFeatureKind::kOrthogonal, seed);
  for (const Backend backend : {Backend::kAuto, Backend::kReference}) {
    for (const FeatureMap f :
         {FeatureMap::kFavorPositive, FeatureMap::kEluPlusOne, FeatureMap::kRelu}) {
      SCOPED_TRACE(::testing::Message()
                   << "backend " << static_cast<int>(backend) << " map " << static_cast<int>(f));
      LinearOptions o;
      o.feature_map = f;
      o.features = &feats;
      o.backend = backend;
      o.chunk_size = 4;
      const int64_t m = LinearNumFeatures(o, dk);
      auto call = [&](int64_t t0, int64_t n, LinearState& st, TensorView<float> out) {
        LinearForward(TokenRange(q.view(), t0, n), TokenRange(k.view(), t0, n),
                      TokenRange(v.view(), t0, n), out, o, &st);
      };
      auto same = [](const LinearState& x, const LinearState& y) {
        return x.tokens == y.tokens && x.s == y.s && x.z == y.z && x.max_shift == y.max_shift;
      };
      const int failures = InjectIntoStatefulCall<LinearState>(
          [&] { return LinearState(1, 2, m, dv); }, call, same, dv);
      EXPECT_GT(failures, 0) << "no checked allocation in a call";
    }
  }
}

// The recurrent state in/out of GatedDeltaForward (both backends, chunked and token by token).
TEST(FailedCallsChangeNothing, RecurrentStateUnderInjectedFailures) {
  const uint64_t seed = testing::TestSeed();
  constexpr int64_t T = 25, dk = 8, dv = 6;
  std::mt19937_64 rng(seed);
  Tensor<float> q(1, 2, T, dk), k(1, 2, T, dk), v(1, 2, T, dv), la(1, 2, T, 1), beta(1, 2, T, 1);
  testing::FillNormal(q, rng);
  testing::FillNormal(k, rng);
  testing::FillNormal(v, rng);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  for (int64_t i = 0; i < la.numel(); ++i) la.data()[i] = -u01(rng);
  for (int64_t i = 0; i < beta.numel(); ++i) beta.data()[i] = u01(rng);
  for (const Backend backend : {Backend::kAuto, Backend::kReference}) {
    for (const DeltaAlgorithm alg : {DeltaAlgorithm::kChunked, DeltaAlgorithm::kRecurrent}) {
      SCOPED_TRACE(::testing::Message() << "backend " << static_cast<int>(backend) << " algorithm "
                                        << static_cast<int>(alg));
      GatedDeltaOptions o;
      o.backend = backend;
      o.algorithm = alg;
      o.chunk_size = 4;
      // The state [1, 2, dk, dv] in a vector (copyable, compared bit for bit).
      auto call = [&](int64_t t0, int64_t n, std::vector<float>& st, TensorView<float> out) {
        GatedDeltaForward(TokenRange(q.view(), t0, n), TokenRange(k.view(), t0, n),
                          TokenRange(v.view(), t0, n), TokenRange(la.view(), t0, n),
                          TokenRange(beta.view(), t0, n), out, MakeBhsd(st.data(), 1, 2, dk, dv),
                          o);
      };
      auto same = [](const std::vector<float>& x, const std::vector<float>& y) { return x == y; };
      const int failures = InjectIntoStatefulCall<std::vector<float>>(
          [] { return std::vector<float>(2 * dk * dv, 0.0f); }, call, same, dv);
      EXPECT_GT(failures, 0) << "no checked allocation in a call";
    }
  }
}

// IndexerCache: a refused Append (wrong shape, past the capacity) keeps its length and rows, and
// the next Append gives the same cache as on a fresh one.
TEST(FailedCallsChangeNothing, IndexerCacheRefusedAppends) {
  std::mt19937_64 rng(testing::TestSeed());
  IndexerCache a(2, 8, 10), b(2, 8, 10);
  Tensor<float> k1(2, 1, 6, 8), k2(2, 1, 3, 8), big(2, 1, 5, 8), bad(2, 1, 2, 7);
  for (Tensor<float>* t : {&k1, &k2, &big, &bad}) testing::FillNormal(*t, rng);
  a.Append(k1.view());
  b.Append(k1.view());
  auto rows = [](const IndexerCache& c) {
    const TensorView<const bf16> v = c.view();
    std::vector<uint16_t> r;
    for (int64_t bi = 0; bi < v.batch(); ++bi) {
      for (int64_t t = 0; t < v.tokens(); ++t) {
        for (int64_t d = 0; d < v.dim(); ++d) r.push_back(v.at(bi, 0, t, d).bits);
      }
    }
    return r;
  };
  const auto before = rows(a);
  ExpectError([&] { a.Append(big.view()); }, "exceed the capacity");
  ExpectError([&] { a.Append(bad.view()); }, "k_index must be");
  EXPECT_EQ(a.length(), 6);
  EXPECT_EQ(rows(a), before);
  a.Append(k2.view());
  b.Append(k2.view());
  EXPECT_EQ(rows(a), rows(b));
}

// The ring buffer's undo record puts overwritten slots back byte for byte.
TEST(FailedCallsChangeNothing, KvCacheUndoRestoresRingSlots) {
  KvCache<float> c(1, 2, 4, 3, 0, /*window=*/3, /*max_step=*/2);
  std::mt19937_64 rng(testing::TestSeed());
  auto fill = [&](int64_t n) {
    Tensor<float> k(1, 2, n, 4), v(1, 2, n, 3);
    testing::FillNormal(k, rng);
    testing::FillNormal(v, rng);
    c.Append(k.view(), v.view());
  };
  auto snapshot = [&] {
    std::vector<float> all;
    for (const auto& s : c.Segments()) {
      for (int64_t h = 0; h < 2; ++h) {
        for (int64_t t = 0; t < s.k.tokens(); ++t) {
          all.insert(all.end(), s.k.row(0, h, t), s.k.row(0, h, t) + 4);
          all.insert(all.end(), s.v.row(0, h, t), s.v.row(0, h, t) + 3);
        }
      }
    }
    return all;
  };
  fill(5);  // wrapped already (4 slots)
  for (const int64_t n : {int64_t{1}, int64_t{2}, int64_t{5}}) {
    const auto before = snapshot();
    const int64_t length = c.length();
    KvCache<float>::UndoRecord undo;
    c.SaveUndo(n, &undo);
    fill(n);
    c.Undo(undo);
    EXPECT_EQ(c.length(), length);
    EXPECT_EQ(snapshot(), before) << "n " << n;
  }
}

}  // namespace
}  // namespace attnkit

// The dense engine: tiled kernel vs the double-precision reference on fresh random inputs.
#include "attnkit/kernels/dense.h"

#include <gtest/gtest.h>

#include <vector>

#include "attnkit/core/runtime.h"
#include "attnkit/kernels/kv_cache.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::FillNormal;
using testing::RelMaxError;

// f32 kernel vs double reference: the error grows with the number of keys summed (rounding of
// each f32 product and the running sums). A plain f32 implementation gets ~sqrt(n)·2^-24
// relative per sum; we allow a generous but still tight 2e-5 · (1 + log2(seqlen_kv)).
double Tolerance(int64_t seqlen_kv, bool bf16_kv = false) {
  const double base = 2e-5 * (1.0 + std::log2(static_cast<double>(seqlen_kv)));
  return bf16_kv ? base * 4 : base;  // bf16 K/V: both sides see the same rounded inputs
}

struct Case {
  int64_t batch, hq, hkv, sq, skv, dk, dv;
};

void CompareOnce(const Case& c, const DenseOptions& opt, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Tensor<float> q(c.batch, c.hq, c.sq, c.dk), k(c.batch, c.hkv, c.skv, c.dk),
      v(c.batch, c.hkv, c.skv, c.dv);
  FillNormal(q, rng);
  FillNormal(k, rng);
  FillNormal(v, rng);
  Tensor<float> o_fast(c.batch, c.hq, c.sq, c.dv), o_ref(c.batch, c.hq, c.sq, c.dv);
  Tensor<float> l_fast(c.batch, c.hq, c.sq, 1), l_ref(c.batch, c.hq, c.sq, 1);
  DenseForward(q.view(), k.view(), v.view(), o_fast.view(), opt, l_fast.view());
  ref::DenseForward(q.view(), k.view(), v.view(), o_ref.view(), opt, l_ref.view());
  EXPECT_LT(RelMaxError(o_fast.view(), o_ref.view()), Tolerance(c.skv));
  EXPECT_LT(RelMaxError(l_fast.view(), l_ref.view()), Tolerance(c.skv));
}

TEST(Dense, MatchesReferenceAcrossShapesAndMasks) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const std::vector<Case> cases = {
      {1, 1, 1, 1, 1, 8, 8},      {1, 2, 1, 7, 7, 16, 16},    {2, 4, 2, 65, 65, 32, 24},
      {1, 8, 1, 33, 130, 64, 64}, {1, 6, 3, 100, 37, 40, 72}, {1, 4, 4, 129, 257, 128, 128},
  };
  const auto causal = CausalMask();
  const auto win = CausalWindowMask(17);
  const auto band = WindowMask(5, 9);
  const auto chunk = ChunkedLocalMask(20);
  const std::vector<const Mask*> masks = {nullptr, causal.get(), win.get(), band.get(),
                                          chunk.get()};
  uint64_t s = seed;
  for (const auto& c : cases) {
    for (const Mask* m : masks) {
      SCOPED_TRACE(::testing::Message() << "sq " << c.sq << " skv " << c.skv << " mask "
                                        << (m ? m->Describe() : "none"));
      DenseOptions opt;
      opt.mask = m;
      CompareOnce(c, opt, ++s);
    }
  }
}

TEST(Dense, ScoreOptions) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const Case c{2, 4, 2, 70, 90, 32, 48};
  std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.0625f}, sinks = {0.3f, -1.0f, 2.0f, 0.0f};
  const auto causal = CausalMask();
  DenseOptions a;
  a.softcap = 5.0f;
  a.mask = causal.get();
  CompareOnce(c, a, seed + 1);
  DenseOptions b;
  b.alibi_slopes = slopes;
  b.mask = causal.get();
  CompareOnce(c, b, seed + 2);
  DenseOptions d;
  d.sinks = sinks;
  d.scale = 0.3f;
  CompareOnce(c, d, seed + 3);
}

TEST(Dense, AllMaskedRowsAreDefined) {
  // Window of 1 key with right = 0 but queries placed before every key: nothing visible.
  Tensor<float> q(1, 2, 5, 8), k(1, 2, 9, 8), v(1, 2, 9, 8), o(1, 2, 5, 8), l(1, 2, 5, 1);
  std::mt19937_64 rng(1);
  FillNormal(q, rng);
  FillNormal(k, rng);
  FillNormal(v, rng);
  const auto causal = CausalMask();
  DenseOptions opt;
  opt.mask = causal.get();
  opt.q_start = -10;  // every query precedes every key
  DenseForward(q.view(), k.view(), v.view(), o.view(), opt, l.view());
  for (int64_t i = 0; i < o.numel(); ++i) EXPECT_EQ(o.data()[i], 0.0f);
  for (int64_t i = 0; i < l.numel(); ++i) EXPECT_EQ(l.data()[i], -INFINITY);
}

TEST(Dense, LargeLogitsDoNotOverflow) {
  Tensor<float> q(1, 1, 33, 4), k(1, 1, 70, 4), v(1, 1, 70, 4), o(1, 1, 33, 4), r(1, 1, 33, 4);
  std::mt19937_64 rng(testing::TestSeed());
  FillNormal(q, rng, 100.0f);
  FillNormal(k, rng, 100.0f);  // scores of order ±1e4
  FillNormal(v, rng);
  DenseForward(q.view(), k.view(), v.view(), o.view());
  ref::DenseForward(q.view(), k.view(), v.view(), r.view());
  EXPECT_TRUE(testing::AllFinite(o.view()));
  EXPECT_LT(RelMaxError(o.view(), r.view()), 1e-3);
}

TEST(Dense, SplitKvMergedThroughLseEqualsWhole) {
  std::mt19937_64 rng(testing::TestSeed());
  Tensor<float> q(1, 4, 9, 32), k(1, 2, 200, 32), v(1, 2, 200, 32);
  FillNormal(q, rng);
  FillNormal(k, rng);
  FillNormal(v, rng);
  const auto causal = CausalMask();
  DenseOptions opt;
  opt.mask = causal.get();
  Tensor<float> whole(1, 4, 9, 32), a(1, 4, 9, 32), b(1, 4, 9, 32), merged(1, 4, 9, 32);
  Tensor<float> la(1, 4, 9, 1), lb(1, 4, 9, 1);
  DenseForward(q.view(), k.view(), v.view(), whole.view(), opt);
  const int64_t cut = 77;
  auto k1 = k.view(), v1 = v.view();
  k1.shape[2] = v1.shape[2] = cut;
  auto k2 = k.view(), v2 = v.view();
  k2.data += cut * 32;
  v2.data += cut * 32;
  k2.shape[2] = v2.shape[2] = 200 - cut;
  DenseOptions o1 = opt, o2 = opt;
  o1.k_start = 0;
  o1.q_start = 191;
  o2.k_start = cut;
  o2.q_start = 191;
  DenseForward(q.view(), TensorView<const float>(k1), TensorView<const float>(v1), a.view(), o1,
               la.view());
  DenseForward(q.view(), TensorView<const float>(k2), TensorView<const float>(v2), b.view(), o2,
               lb.view());
  std::vector<TensorView<const float>> outs = {a.view(), b.view()}, lses = {la.view(), lb.view()};
  MergeAttention(outs, lses, merged.view());
  EXPECT_LT(RelMaxError(merged.view(), whole.view()), 1e-5);
}

TEST(Dense, ThreadCountDoesNotChangeResults) {
  std::mt19937_64 rng(testing::TestSeed());
  Tensor<float> q(1, 4, 150, 64), k(1, 2, 150, 64), v(1, 2, 150, 64), o1(1, 4, 150, 64),
      o2(1, 4, 150, 64);
  FillNormal(q, rng);
  FillNormal(k, rng);
  FillNormal(v, rng);
  const auto causal = CausalMask();
  DenseOptions opt;
  opt.mask = causal.get();
  opt.num_threads = 1;
  DenseForward(q.view(), k.view(), v.view(), o1.view(), opt);
  opt.num_threads = 2;
  DenseForward(q.view(), k.view(), v.view(), o2.view(), opt);
  EXPECT_LT(RelMaxError(o1.view(), o2.view()), 1e-6);
}

TEST(Dense, PrefillThenDecodeEqualsFullPass) {
  for (int64_t window : {int64_t{0}, int64_t{16}}) {
    SCOPED_TRACE(::testing::Message() << "window " << window);
    std::mt19937_64 rng(testing::TestSeed() + window);
    const int64_t T = 40, M = 25, hq = 4, hkv = 2, d = 32;
    Tensor<float> q(1, hq, T + M, d), k(1, hkv, T + M, d), v(1, hkv, T + M, d);
    FillNormal(q, rng);
    FillNormal(k, rng);
    FillNormal(v, rng);
    const auto full_mask = window > 0 ? CausalWindowMask(window) : CausalMask();
    DenseOptions opt;
    opt.mask = full_mask.get();
    Tensor<float> full(1, hq, T + M, d);
    DenseForward(q.view(), k.view(), v.view(), full.view(), opt);
    KvCache<float> cache(1, hkv, d, d, T + M, window, 1);
    auto prefix = [](TensorView<float> t, int64_t from, int64_t n) {
      t.data += from * t.stride[2];
      t.shape[2] = n;
      return TensorView<const float>(t);
    };
    cache.Append(prefix(k.view(), 0, T), prefix(v.view(), 0, T));
    for (int64_t t = T; t < T + M; ++t) {
      cache.Append(prefix(k.view(), t, 1), prefix(v.view(), t, 1));
      Tensor<float> o(1, hq, 1, d);
      DenseDecode(prefix(q.view(), t, 1), cache, o.view());
      const auto expect = prefix(full.view(), t, 1);
      ASSERT_LT(RelMaxError(o.view(), expect), 1e-5) << "token " << t;
    }
    if (window > 0) {
      EXPECT_EQ(cache.slots(), window);
    }
  }
}

TEST(Dense, BadInputThrowsNamedError) {
  Tensor<float> q(1, 3, 4, 8), k(1, 2, 4, 8), v(1, 2, 4, 8), o(1, 3, 4, 8);
  try {
    DenseForward(q.view(), k.view(), v.view(), o.view());
    FAIL() << "expected attnkit::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("num_heads_q"), std::string::npos) << e.what();
  }
  Tensor<float> q2(1, 2, 4, 8), o2(1, 2, 4, 9);
  EXPECT_THROW(DenseForward(q2.view(), k.view(), v.view(), o2.view()), Error);
  Tensor<float> o3(1, 2, 4, 8);
  DenseOptions bad;
  bad.softcap = -1.0f;
  EXPECT_THROW(DenseForward(q2.view(), k.view(), v.view(), o3.view(), bad), Error);
  EXPECT_THROW(DenseForward(q2.view(), k.view(), v.view(), TensorView<float>(q2.view())), Error);
  EXPECT_THROW(CausalWindowMask(0), Error);
  KvCache<float> cache(1, 2, 8, 8, 3);
  EXPECT_THROW(cache.Append(k.view(), v.view()), Error);  // 4 tokens > capacity 3
}

}  // namespace
}  // namespace attnkit

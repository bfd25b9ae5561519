// The gather engine (DSA): gathered attention vs its reference and vs the dense kernel with the
// equivalent mask; any thread count; the lightning indexer vs its reference on both SIMD paths;
// top-k determinism and tie-breaking; MLA's absorbed form; prefill + decode with cached indexer
// keys.
#include "attnkit/kernels/gather.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <numeric>
#include <random>
#include <vector>

#include "attnkit/kernels/kv_cache.h"
#include "attnkit/masks/sparse.h"
#include "kernels/gather_indexer.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::FillNormal;
using testing::RelMaxError;

using testing::Sanitized;
double Tol(int64_t n) { return 2e-5 * (1.0 + std::log2(static_cast<double>(n))); }

// Random distinct key rows per query (some slots −1), shared by all heads or per kv head.
Tensor<int32_t> RandomIndices(std::mt19937_64& rng, int64_t batch, int64_t heads, int64_t sq,
                              int64_t skv, int64_t top_k) {
  Tensor<int32_t> idx(batch, heads, sq, top_k);
  std::vector<int32_t> all(static_cast<size_t>(skv));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t h = 0; h < heads; ++h) {
      for (int64_t i = 0; i < sq; ++i) {
        std::iota(all.begin(), all.end(), 0);
        std::shuffle(all.begin(), all.end(), rng);
        int32_t* r = idx.view().row(b, h, i);
        for (int64_t j = 0; j < top_k; ++j) {
          r[j] = (j < skv && rng() % 5 != 0) ? all[j] : -1;
        }
      }
    }
  }
  return idx;
}

struct Case {
  int64_t batch, hq, hkv, sq, skv, dk, dv, top_k, idx_heads;
};

// Random inputs of a case: f32 K/V, the same rounded to bf16, and a selection.
struct CaseInputs {
  Tensor<float> q, k, v;
  Tensor<bf16> kb, vb;
  Tensor<int32_t> idx;
  CaseInputs(const Case& c, std::mt19937_64& rng)
      : q(c.batch, c.hq, c.sq, c.dk),
        k(c.batch, c.hkv, c.skv, c.dk),
        v(c.batch, c.hkv, c.skv, c.dv),
        kb(c.batch, c.hkv, c.skv, c.dk),
        vb(c.batch, c.hkv, c.skv, c.dv) {
    FillNormal(q, rng);
    FillNormal(k, rng);
    FillNormal(v, rng);
    for (int64_t x = 0; x < k.numel(); ++x) kb.data()[x] = ToBf16(k.data()[x]);
    for (int64_t x = 0; x < v.numel(); ++x) vb.data()[x] = ToBf16(v.data()[x]);
    idx = RandomIndices(rng, c.batch, c.idx_heads, c.sq, c.skv, c.top_k);
  }
};

TEST(Gather, MatchesReferenceOnAwkwardShapes) {
  std::mt19937_64 rng(testing::TestSeed());
  SCOPED_TRACE(::testing::Message() << "seed " << testing::TestSeed());
  const std::vector<Case> cases = {
      {1, 1, 1, 1, 1, 8, 8, 1, 1},      {2, 4, 2, 9, 70, 40, 24, 13, 1},
      {1, 6, 3, 17, 33, 72, 40, 50, 3}, {1, 8, 1, 5, 300, 64, 64, 129, 1},
      {1, 3, 3, 31, 65, 17, 9, 64, 3},  {1, 2, 1, 3, 40, 128, 128, 2, 1},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(::testing::Message() << "hq " << c.hq << " hkv " << c.hkv << " sq " << c.sq
                                      << " skv " << c.skv << " top_k " << c.top_k);
    const CaseInputs in(c, rng);
    Tensor<float> o(c.batch, c.hq, c.sq, c.dv), r(c.batch, c.hq, c.sq, c.dv);
    Tensor<float> lo(c.batch, c.hq, c.sq, 1), lr(c.batch, c.hq, c.sq, 1);
    GatherForward(in.q.view(), in.k.view(), in.v.view(), in.idx.view(), o.view(), {}, lo.view());
    ref::GatherForward(in.q.view(), in.k.view(), in.v.view(), in.idx.view(), r.view(), {},
                       lr.view());
    EXPECT_LT(RelMaxError(o.view(), r.view()), Tol(c.top_k));
    EXPECT_LT(RelMaxError(lo.view(), lr.view()), Tol(c.top_k));
    // bf16 K/V: both sides read the same rounded values.
    GatherForward(in.q.view(), in.kb.view(), in.vb.view(), in.idx.view(), o.view());
    ref::GatherForward(in.q.view(), in.kb.view(), in.vb.view(), in.idx.view(), r.view());
    EXPECT_LT(RelMaxError(o.view(), r.view()), 4 * Tol(c.top_k));
  }
}

// The gathered kernel equals the dense kernel under the mask of the same selection.
TEST(Gather, EqualsDenseKernelWithTheEquivalentMask) {
  std::mt19937_64 rng(testing::TestSeed() + 1);
  const int64_t sq = 37, skv = 211, hq = 6, hkv = 2, d = 48;
  Tensor<float> q(1, hq, sq, d), k(1, hkv, skv, d), v(1, hkv, skv, d);
  FillNormal(q, rng);
  FillNormal(k, rng);
  FillNormal(v, rng);
  Tensor<int32_t> idx = RandomIndices(rng, 1, 1, sq, skv, 60);
  const int64_t q_start = skv - sq;
  const auto mask = SelectionMask(idx.view(), q_start);
  DenseOptions dopt;
  dopt.mask = mask.get();
  Tensor<float> og(1, hq, sq, d), od(1, hq, sq, d);
  GatherForward(q.view(), k.view(), v.view(), idx.view(), og.view());
  DenseForward(q.view(), k.view(), v.view(), od.view(), dopt);
  EXPECT_LT(RelMaxError(og.view(), od.view()), Tol(skv));
}

// Reduced-precision and f32 indexer paths (and AVX-512 BF16 where present) vs the reference.
TEST(Gather, IndexerMatchesReference) {
  std::mt19937_64 rng(testing::TestSeed() + 2);
  for (const bool allow_bf16 : {true, false}) {
    for (const bool reduced : {true, false}) {
      detail::SetIndexerBf16Allowed(allow_bf16);
      SCOPED_TRACE(::testing::Message() << "bf16 allowed " << allow_bf16 << " reduced " << reduced
                                        << " avx512bf16 " << IndexerUsesAvx512Bf16());
      const int64_t heads = 1 + static_cast<int64_t>(rng() % 6);
      const int64_t dim = 1 + static_cast<int64_t>(rng() % 70);
      const int64_t skv = 1 + static_cast<int64_t>(rng() % 150),
                    sq = 1 + static_cast<int64_t>(rng() % 40);
      Tensor<float> qi(2, heads, sq, dim), w(2, 1, sq, heads), ki(2, 1, skv, dim);
      FillNormal(qi, rng);
      FillNormal(w, rng);
      FillNormal(ki, rng);
      IndexerOptions opt;
      opt.reduced_precision = reduced;
      opt.k_start = 3;
      opt.q_start = 3 + skv - sq - static_cast<int64_t>(rng() % 5);  // some queries see nothing
      Tensor<float> s(2, 1, sq, skv), r(2, 1, sq, skv);
      LightningIndexer(qi.view(), w.view(), ki.view(), s.view(), opt);
      ref::LightningIndexer(qi.view(), w.view(), ki.view(), r.view(), opt);
      // Scale: the sum of |terms|; f32 summation of dim products per head.
      double worst = 0;
      for (int64_t x = 0; x < s.numel(); ++x) {
        const float a = s.data()[x], b = r.data()[x];
        if (std::isinf(b)) {
          ASSERT_EQ(a, b) << "causal cut at " << x;
          continue;
        }
        worst = std::max(worst, std::abs(double{a} - b) / (std::abs(double{b}) + 1.0));
      }
      EXPECT_LT(worst, 1e-5 * (1 + dim * heads / 16.0));
      // The fused select equals top-k of the same path's scores, exactly.
      const int64_t top_k = 1 + static_cast<int64_t>(rng() % (skv + 3));
      Tensor<int32_t> sel(2, 1, sq, top_k), want(2, 1, sq, top_k);
      DsaSelect(qi.view(), w.view(), ki.view(), top_k, sel.view(), opt);
      for (int64_t b = 0; b < 2; ++b) {
        for (int64_t i = 0; i < sq; ++i) {
          int64_t vis = 0;
          while (vis < skv && !std::isinf(s.view().at(b, 0, i, vis))) ++vis;
          ref::TopKRow(s.view().row(b, 0, i), vis, top_k, want.view().row(b, 0, i));
        }
      }
      for (int64_t x = 0; x < sel.numel(); ++x) ASSERT_EQ(sel.data()[x], want.data()[x]) << x;
    }
  }
  detail::SetIndexerBf16Allowed(true);
}

// Decode-sized calls (fewer query blocks than threads) split the key tiles over the threads: the
// scores and the selection are the same as with one thread, bit for bit, and match the reference.
TEST(Gather, IndexerSplitsKeysForFewQueries) {
  std::mt19937_64 rng(testing::TestSeed() + 9);
  for (const bool allow_bf16 : {true, false}) {
    detail::SetIndexerBf16Allowed(allow_bf16);
    for (const int64_t sq : {1, 3, 17}) {
      const int64_t heads = 5, dim = 40, skv = 1000 + static_cast<int64_t>(rng() % 37);
      Tensor<float> qi(2, heads, sq, dim), w(2, 1, sq, heads), ki(2, 1, skv, dim);
      FillNormal(qi, rng);
      FillNormal(w, rng);
      FillNormal(ki, rng);
      IndexerOptions opt;
      opt.q_start = skv - sq;
      opt.num_threads = 1;
      Tensor<float> one(2, 1, sq, skv), ref_s(2, 1, sq, skv);
      LightningIndexer(qi.view(), w.view(), ki.view(), one.view(), opt);
      ref::LightningIndexer(qi.view(), w.view(), ki.view(), ref_s.view(), opt);
      const int64_t top_k = 64;
      Tensor<int32_t> sel_one(2, 1, sq, top_k);
      DsaSelect(qi.view(), w.view(), ki.view(), top_k, sel_one.view(), opt);
      for (const int threads : {2, 3}) {
        SCOPED_TRACE(::testing::Message()
                     << "bf16 " << allow_bf16 << " sq " << sq << " threads " << threads);
        opt.num_threads = threads;
        Tensor<float> s(2, 1, sq, skv);
        LightningIndexer(qi.view(), w.view(), ki.view(), s.view(), opt);
        for (int64_t x = 0; x < s.numel(); ++x) ASSERT_EQ(s.data()[x], one.data()[x]) << x;
        Tensor<int32_t> sel(2, 1, sq, top_k);
        DsaSelect(qi.view(), w.view(), ki.view(), top_k, sel.view(), opt);
        for (int64_t x = 0; x < sel.numel(); ++x) ASSERT_EQ(sel.data()[x], sel_one.data()[x]) << x;
      }
      double worst = 0;
      for (int64_t x = 0; x < one.numel(); ++x) {
        const float a = one.data()[x], b = ref_s.data()[x];
        if (std::isinf(b)) continue;
        worst = std::max(worst, std::abs(double{a} - b) / (std::abs(double{b}) + 1.0));
      }
      EXPECT_LT(worst, 1e-5 * (1 + dim * heads / 16.0));
    }
  }
  detail::SetIndexerBf16Allowed(true);
}

// Passing the IndexerCache itself (its packed tiles, filled at Append in pieces that cross tile
// boundaries; odd index_dim pads the last pair) gives the same scores and selection as its view.
TEST(Gather, IndexerCacheTilesEqualItsView) {
  std::mt19937_64 rng(testing::TestSeed() + 10);
  for (const bool allow_bf16 : {true, false}) {
    detail::SetIndexerBf16Allowed(allow_bf16);
    const int64_t heads = 3, dim = 37, n = 301, batch = 2;
    Tensor<float> ki(batch, 1, n, dim);
    FillNormal(ki, rng);
    IndexerCache cache(batch, dim, n + 40);
    for (int64_t t0 = 0; t0 < n;) {
      const int64_t len = std::min<int64_t>(n - t0, 1 + static_cast<int64_t>(rng() % 45));
      TensorView<const float> part = ki.view();
      part.data += t0 * part.stride[2];
      part.shape[2] = len;
      cache.Append(part);
      t0 += len;
    }
    for (const int64_t sq : {1, 2, 20}) {
      SCOPED_TRACE(::testing::Message() << "bf16 " << allow_bf16 << " sq " << sq);
      Tensor<float> qi(batch, heads, sq, dim), w(batch, 1, sq, heads);
      FillNormal(qi, rng);
      FillNormal(w, rng);
      IndexerOptions opt;
      opt.q_start = n - sq;
      Tensor<float> a(batch, 1, sq, n), b(batch, 1, sq, n);
      LightningIndexer(qi.view(), w.view(), cache, a.view(), opt);
      LightningIndexer(qi.view(), w.view(), cache.view(), b.view(), opt);
      for (int64_t x = 0; x < a.numel(); ++x) ASSERT_EQ(a.data()[x], b.data()[x]) << x;
      Tensor<int32_t> sa(batch, 1, sq, 50), sb(batch, 1, sq, 50);
      DsaSelect(qi.view(), w.view(), cache, 50, sa.view(), opt);
      DsaSelect(qi.view(), w.view(), cache.view(), 50, sb.view(), opt);
      for (int64_t x = 0; x < sa.numel(); ++x) ASSERT_EQ(sa.data()[x], sb.data()[x]) << x;
    }
  }
  detail::SetIndexerBf16Allowed(true);
}

TEST(Gather, TopKIsDeterministicWithLowerPositionWinningTies) {
  std::mt19937_64 rng(testing::TestSeed() + 3);
  for (int rep = 0; rep < 200; ++rep) {
    const int64_t n = static_cast<int64_t>(rng() % 400);
    const int64_t top_k = 1 + static_cast<int64_t>(rng() % 300);
    std::vector<float> s(static_cast<size_t>(n));
    const int levels = 1 + static_cast<int>(rng() % 8);  // few distinct values: many ties
    for (auto& x : s) {
      x = static_cast<float>(static_cast<int>(rng() % levels) - levels / 2) * 0.5f;
      if (rng() % 50 == 0) x = std::numeric_limits<float>::quiet_NaN();
      if (rng() % 60 == 0) x = -std::numeric_limits<float>::infinity();
      if (rng() % 70 == 0) x = -0.0f;
    }
    std::vector<int32_t> fast(static_cast<size_t>(top_k)), slow(static_cast<size_t>(top_k));
    TopKRow(s.data(), n, top_k, fast.data());
    ref::TopKRow(s.data(), n, top_k, slow.data());
    ASSERT_EQ(fast, slow) << "n " << n << " top_k " << top_k;
  }
  // Equal scores: the lowest positions win.
  std::vector<float> flat(100, 1.0f);
  std::vector<int32_t> out(10);
  TopKRow(flat.data(), 100, 10, out.data());
  for (int j = 0; j < 10; ++j) EXPECT_EQ(out[j], j);
}

// DSA prefill with top_k >= seqlen equals full causal attention; and the selection is the same
// whatever the thread count.
TEST(Gather, TopKAtLeastSeqlenIsFullCausal) {
  std::mt19937_64 rng(testing::TestSeed() + 4);
  const int64_t n = 90, hq = 4, hkv = 2, d = 32, heads_i = 3, dim_i = 16;
  Tensor<float> q(1, hq, n, d), k(1, hkv, n, d), v(1, hkv, n, d);
  Tensor<float> qi(1, heads_i, n, dim_i), w(1, 1, n, heads_i), ki(1, 1, n, dim_i);
  for (auto* t : {&q, &k, &v, &qi, &w, &ki}) FillNormal(*t, rng);
  for (const int64_t top_k : {n, n + 7}) {
    Tensor<int32_t> idx(1, 1, n, top_k);
    DsaSelect(qi.view(), w.view(), ki.view(), top_k, idx.view());
    Tensor<float> og(1, hq, n, d), od(1, hq, n, d);
    GatherForward(q.view(), k.view(), v.view(), idx.view(), og.view());
    const auto causal = CausalMask();
    DenseOptions dopt;
    dopt.mask = causal.get();
    DenseForward(q.view(), k.view(), v.view(), od.view(), dopt);
    EXPECT_LT(RelMaxError(og.view(), od.view()), Tol(n));
  }
  const int64_t top_k = 20;
  Tensor<int32_t> a(1, 1, n, top_k), b(1, 1, n, top_k);
  IndexerOptions one, two;
  one.num_threads = 1;
  two.num_threads = 2;
  DsaSelect(qi.view(), w.view(), ki.view(), top_k, a.view(), one);
  DsaSelect(qi.view(), w.view(), ki.view(), top_k, b.view(), two);
  for (int64_t x = 0; x < a.numel(); ++x) ASSERT_EQ(a.data()[x], b.data()[x]);
}

// Every thread count (fewer or more threads than work units) gives the reference's answer: each
// thread works in its own scratch, allocated before the parallel region; with more threads than
// units the team is cut to the units. Both gather paths, f32 and bf16 K/V, and the indexer over two
// batches (the scratch is reused from one batch to the next).
TEST(Gather, AnyThreadCountMatchesReference) {
  std::mt19937_64 rng(testing::TestSeed() + 7);
  const std::vector<Case> cases = {
      {2, 4, 2, 9, 70, 40, 24, 13, 1},    // query blocks (group 2, prefill)
      {1, 8, 1, 1, 90, 48, 32, 40, 1},    // per query, one unit: heads split across threads
      {2, 6, 1, 3, 50, 24, 16, 20, 1},    // per query, a few units
      {1, 1, 1, 64, 100, 16, 16, 10, 1},  // query blocks, 4 units: fewer than 8 threads
      {1, 2, 1, 1, 50, 24, 16, 20, 1},    // per query, 2 units: fewer than 3 or 8 threads
  };
  for (const auto& c : cases) {
    const CaseInputs in(c, rng);
    Tensor<float> r(c.batch, c.hq, c.sq, c.dv), rb(c.batch, c.hq, c.sq, c.dv);
    ref::GatherForward(in.q.view(), in.k.view(), in.v.view(), in.idx.view(), r.view());
    ref::GatherForward(in.q.view(), in.kb.view(), in.vb.view(), in.idx.view(), rb.view());
    for (const int threads : {1, 3, 8}) {
      SCOPED_TRACE(::testing::Message()
                   << "hq " << c.hq << " sq " << c.sq << " threads " << threads);
      GatherOptions opt;
      opt.num_threads = threads;
      Tensor<float> o(c.batch, c.hq, c.sq, c.dv);
      GatherForward(in.q.view(), in.k.view(), in.v.view(), in.idx.view(), o.view(), opt);
      EXPECT_LT(RelMaxError(o.view(), r.view()), Tol(c.top_k));
      GatherForward(in.q.view(), in.kb.view(), in.vb.view(), in.idx.view(), o.view(), opt);
      EXPECT_LT(RelMaxError(o.view(), rb.view()), 4 * Tol(c.top_k));
    }
  }
  const int64_t heads = 3, dim = 20, sq = 70, skv = 90, top_k = 17;
  Tensor<float> qi(2, heads, sq, dim), w(2, 1, sq, heads), ki(2, 1, skv, dim);
  for (auto* t : {&qi, &w, &ki}) FillNormal(*t, rng);
  Tensor<int32_t> want(2, 1, sq, top_k);
  IndexerOptions iopt;
  iopt.num_threads = 1;
  DsaSelect(qi.view(), w.view(), ki.view(), top_k, want.view(), iopt);
  for (const int threads : {2, 3, 8}) {
    iopt.num_threads = threads;
    Tensor<int32_t> sel(2, 1, sq, top_k);
    DsaSelect(qi.view(), w.view(), ki.view(), top_k, sel.view(), iopt);
    for (int64_t x = 0; x < sel.numel(); ++x) {
      ASSERT_EQ(sel.data()[x], want.data()[x]) << "threads " << threads << " at " << x;
    }
  }
}

// MLA's absorbed multi-query form: 576-dim queries over one shared latent head, values are the
// latent's first 512 dims (a view of the same memory, no copy).
TEST(Gather, MlaAbsorbedForm) {
  std::mt19937_64 rng(testing::TestSeed() + 5);
  const int64_t hq = Sanitized() ? 4 : 16, sq = 5, skv = 300, top_k = 64;
  Tensor<float> q(1, hq, sq, 576), latent(1, 1, skv, 576);
  FillNormal(q, rng, 0.05f);
  FillNormal(latent, rng);
  TensorView<const float> kv = latent.view();
  TensorView<const float> vv = kv;
  vv.shape[3] = 512;
  Tensor<int32_t> idx = RandomIndices(rng, 1, 1, sq, skv, top_k);
  Tensor<float> o(1, hq, sq, 512), r(1, hq, sq, 512);
  GatherOptions opt;
  opt.scale = 0.07f;
  GatherForward(q.view(), kv, vv, idx.view(), o.view(), opt);
  ref::GatherForward(q.view(), kv, vv, idx.view(), r.view(), opt);
  EXPECT_LT(RelMaxError(o.view(), r.view()), Tol(top_k));
}

// Prefill of T tokens, then decode token by token with cached K/V and cached indexer keys,
// equals the DSA pass over the whole sequence.
TEST(Gather, PrefillThenDecodeEqualsFullPass) {
  std::mt19937_64 rng(testing::TestSeed() + 6);
  const int64_t T = 50, M = 20, n = T + M, hq = 4, hkv = 1, d = 32, hi = 2, di = 24, top_k = 16;
  Tensor<float> q(1, hq, n, d), k(1, hkv, n, d), v(1, hkv, n, d);
  Tensor<float> qi(1, hi, n, di), w(1, 1, n, hi), ki(1, 1, n, di);
  for (auto* t : {&q, &k, &v, &qi, &w, &ki}) FillNormal(*t, rng);
  Tensor<int32_t> idx(1, 1, n, top_k);
  DsaSelect(qi.view(), w.view(), ki.view(), top_k, idx.view());
  Tensor<float> full(1, hq, n, d);
  GatherForward(q.view(), k.view(), v.view(), idx.view(), full.view());
  auto rows = [](auto t, int64_t from, int64_t count) {
    t.data += from * t.stride[2];
    t.shape[2] = count;
    return t;
  };
  KvCache<float> cache(1, hkv, d, d, n);
  IndexerCache icache(1, di, n);
  cache.Append(rows(TensorView<const float>(k.view()), 0, T),
               rows(TensorView<const float>(v.view()), 0, T));
  icache.Append(rows(TensorView<const float>(ki.view()), 0, T));
  for (int64_t t = T; t < n; ++t) {
    cache.Append(rows(TensorView<const float>(k.view()), t, 1),
                 rows(TensorView<const float>(v.view()), t, 1));
    icache.Append(rows(TensorView<const float>(ki.view()), t, 1));
    Tensor<int32_t> sel(1, 1, 1, top_k);
    IndexerOptions iopt;
    iopt.q_start = t;
    DsaSelect(rows(TensorView<const float>(qi.view()), t, 1),
              rows(TensorView<const float>(w.view()), t, 1), icache, top_k, sel.view(), iopt);
    for (int64_t j = 0; j < top_k; ++j) {
      ASSERT_EQ(sel.data()[j], idx.view().at(0, 0, t, j)) << "token " << t << " slot " << j;
    }
    const auto segs = cache.Segments();
    ASSERT_EQ(segs.size(), 1u);
    Tensor<float> o(1, hq, 1, d);
    GatherForward(rows(TensorView<const float>(q.view()), t, 1), segs[0].k, segs[0].v, sel.view(),
                  o.view());
    ASSERT_LT(RelMaxError(o.view(), rows(TensorView<const float>(full.view()), t, 1)), 1e-5)
        << "token " << t;
  }
}

TEST(Gather, BadInputNamesTheArgument) {
  Tensor<float> q(1, 2, 4, 8), k(1, 1, 6, 8), v(1, 1, 6, 8), o(1, 2, 4, 8);
  Tensor<int32_t> idx(1, 1, 4, 3);
  for (int64_t i = 0; i < idx.numel(); ++i) idx.data()[i] = static_cast<int32_t>(i % 3);
  idx.data()[5] = 6;  // past seqlen_kv
  auto expect_error = [](auto fn, const std::string& word) {
    try {
      fn();
      ADD_FAILURE() << "expected attnkit::Error mentioning " << word;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  expect_error([&] { GatherForward(q.view(), k.view(), v.view(), idx.view(), o.view()); },
               "indices[0, 0, 1, 2]");
  idx.data()[5] = 1;  // row 1 now lists key 1 twice: would count it twice in the softmax
  expect_error([&] { GatherForward(q.view(), k.view(), v.view(), idx.view(), o.view()); }, "twice");
  Tensor<int32_t> idx_bad_shape(1, 1, 3, 3);
  expect_error([&] { GatherForward(q.view(), k.view(), v.view(), idx_bad_shape.view(), o.view()); },
               "indices must be");
  Tensor<float> qi(1, 2, 4, 8), w(1, 1, 4, 2), ki(1, 1, 6, 8);
  Tensor<int32_t> sel(1, 1, 4, 2);
  expect_error([&] { DsaSelect(qi.view(), w.view(), ki.view(), 0, sel.view()); }, "top_k");
  expect_error([&] { DsaSelect(qi.view(), w.view(), ki.view(), -4, sel.view()); }, "top_k");
  expect_error([&] { DsaSelect(qi.view(), w.view(), ki.view(), 3, sel.view()); }, "indices");
  Tensor<float> w_bad(1, 1, 4, 3);
  expect_error([&] { DsaSelect(qi.view(), w_bad.view(), ki.view(), 2, sel.view()); }, "weights");
  IndexerCache cache(1, 8, 2);
  expect_error([&] { cache.Append(ki.view()); }, "capacity");
}

}  // namespace
}  // namespace attnkit

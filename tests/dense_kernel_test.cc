// The dense engine's fast kernel, path by path: every SIMD target compiled in, the packed (GEMM
// micro-kernel) and direct (decode) paths, full / partial / tail tiles, every score option and
// their combinations, bf16 K/V, strided layouts, GQA/MQA, dk != dv, tile statistics, decode
// through contiguous and ring-buffer caches, and bad input.
#include <gtest/gtest.h>

#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/core/runtime.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/kv_cache.h"
#include "attnkit/masks/sparse.h"
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "kernels/dense_common.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::FillNormal;
using testing::RelMaxError;

using testing::Sanitized;

// f32 accumulation against the double reference: rounding grows with the summed length
// (log-ish for pairwise-like tile sums); bf16 K/V are rounded identically on both sides, so the
// same bound holds (the inputs, not the arithmetic, are bf16).
double Tolerance(int64_t seqlen_kv) {
  return 2e-5 * (1.0 + std::log2(static_cast<double>(seqlen_kv)));
}

// Runs fn once per SIMD target that is both compiled into the library and supported here
// (only the best one under the sanitizers, which are ~10x slower).
template <class Fn>
void ForEachTarget(const Fn& fn) {
  const std::string compiled = "," + CompiledTargets() + ",";
  std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  if (Sanitized()) targets.resize(1);
  for (int64_t t : targets) {
    const std::string name = hwy::TargetName(t);
    if (compiled.find("," + name + ",") == std::string::npos) continue;
    hwy::SetSupportedTargetsForTest(t);
    (void)hwy::SupportedTargets();  // refreshes the dispatch choice
    SCOPED_TRACE("target " + name);
    fn();
  }
  hwy::SetSupportedTargetsForTest(0);
  (void)hwy::SupportedTargets();
}

struct Shape {
  int64_t batch, hq, hkv, sq, skv, dk, dv;
};

// Inputs in bhsd or bshd memory; K/V optionally stored as bf16.
struct Inputs {
  Shape s;
  bool bshd;
  std::vector<float> q, k, v;
  std::vector<bf16> kb, vb;
  Inputs(const Shape& shape, bool bshd_layout, uint64_t seed, float qk_std = 1.0f)
      : s(shape), bshd(bshd_layout) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    q.resize(static_cast<size_t>(s.batch * s.hq * s.sq * s.dk));
    k.resize(static_cast<size_t>(s.batch * s.hkv * s.skv * s.dk));
    v.resize(static_cast<size_t>(s.batch * s.hkv * s.skv * s.dv));
    for (auto& x : q) x = qk_std * dist(rng);
    for (auto& x : k) x = qk_std * dist(rng);
    for (auto& x : v) x = dist(rng);
    for (float x : k) kb.push_back(ToBf16(x));
    for (float x : v) vb.push_back(ToBf16(x));
  }
  template <typename T>
  TensorView<const T> View(const std::vector<T>& buf, int64_t heads, int64_t seq,
                           int64_t dim) const {
    return bshd ? TensorView<const T>(MakeBshd(buf.data(), s.batch, seq, heads, dim))
                : TensorView<const T>(MakeBhsd(buf.data(), s.batch, heads, seq, dim));
  }
  TensorView<const float> Q() const { return View(q, s.hq, s.sq, s.dk); }
  TensorView<const float> K() const { return View(k, s.hkv, s.skv, s.dk); }
  TensorView<const float> V() const { return View(v, s.hkv, s.skv, s.dv); }
  TensorView<const bf16> Kb() const { return View(kb, s.hkv, s.skv, s.dk); }
  TensorView<const bf16> Vb() const { return View(vb, s.hkv, s.skv, s.dv); }
};

struct Outputs {
  std::vector<float> o, l;
  TensorView<float> out, lse;
  Outputs(const Shape& s, bool bshd) {
    o.assign(static_cast<size_t>(s.batch * s.hq * s.sq * s.dv), -7.0f);  // poison
    l.assign(static_cast<size_t>(s.batch * s.hq * s.sq), -7.0f);
    out = bshd ? MakeBshd(o.data(), s.batch, s.sq, s.hq, s.dv)
               : MakeBhsd(o.data(), s.batch, s.hq, s.sq, s.dv);
    lse = MakeBhsd(l.data(), s.batch, s.hq, s.sq, int64_t{1});
  }
};

// Fast vs reference for one case; returns the relative error of out.
double Compare(const Shape& s, const DenseOptions& opt, bool bf16_kv, bool bshd, uint64_t seed,
               float qk_std = 1.0f) {
  const Inputs in(s, bshd, seed, qk_std);
  Outputs fast(s, bshd), ref(s, bshd);
  if (bf16_kv) {
    DenseForward(in.Q(), in.Kb(), in.Vb(), fast.out, opt, fast.lse);
    ref::DenseForward(in.Q(), in.Kb(), in.Vb(), ref.out, opt, ref.lse);
  } else {
    DenseForward(in.Q(), in.K(), in.V(), fast.out, opt, fast.lse);
    ref::DenseForward(in.Q(), in.K(), in.V(), ref.out, opt, ref.lse);
  }
  EXPECT_TRUE(testing::AllFinite(fast.out));
  const double e_out = RelMaxError(fast.out, ref.out);
  const double e_lse = RelMaxError(fast.lse, ref.lse, 1.0);
  EXPECT_LT(e_out, Tolerance(s.skv));
  EXPECT_LT(e_lse, Tolerance(s.skv));
  return e_out;
}

std::string Describe(const Mask* m) { return m ? m->Describe() : "none"; }

TEST(DenseKernel, EveryTargetEveryPathEveryMask) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const int64_t big = Sanitized() ? 130 : 1000;
  // direct path: group·seqlen_q <= 4 and head dims a multiple of the vector length;
  // packed path: everything else (dk = 40 / dv = 24 are not multiples of 16).
  const std::vector<Shape> shapes = {
      {1, 1, 1, 1, 1, 32, 32},    {1, 4, 1, 1, 200, 64, 64},    {2, 2, 1, 2, 65, 32, 32},
      {1, 2, 2, 7, 7, 16, 16},    {1, 3, 1, 65, 65, 40, 24},    {1, 4, 2, 64, 128, 32, 32},
      {1, 2, 1, 33, big, 24, 40}, {1, 8, 2, 129, 70, 128, 128}, {1, 1, 1, 1, 7, 8, 8},
      {2, 4, 4, 3, 140, 64, 32},
  };
  const auto causal = CausalMask();
  const auto win = CausalWindowMask(33);
  const auto band = WindowMask(70, 3);
  const auto chunk = ChunkedLocalMask(48);
  const auto both = AndMask(CausalMask(), CausalWindowMask(100));
  const auto either = OrMask(CausalWindowMask(5), ChunkedLocalMask(64));
  const std::vector<const Mask*> masks = {nullptr,     causal.get(), win.get(),   band.get(),
                                          chunk.get(), both.get(),   either.get()};
  ForEachTarget([&] {
    uint64_t sd = seed;
    for (const auto& s : shapes) {
      for (const Mask* m : masks) {
        for (bool bf : {false, true}) {
          SCOPED_TRACE(::testing::Message() << "hq " << s.hq << " hkv " << s.hkv << " sq " << s.sq
                                            << " skv " << s.skv << " dk " << s.dk << " dv " << s.dv
                                            << " mask " << Describe(m) << " bf16 " << bf);
          DenseOptions opt;
          opt.mask = m;
          ++sd;
          Compare(s, opt, bf, (sd & 1) != 0, sd);
        }
      }
    }
  });
}

// Packed K/V tiles live in one buffer shared by the threads: whole heads in rounds, or one
// head at a time in segments of its key blocks when it does not fit (the softmax state waits
// between segments). Shrunken budgets reach several rounds and segments of 2 tiles and of 1 tile
// at small sizes; every budget and thread count must give the reference's answer, and the same
// bits as the default budget (each row still meets its key blocks in the same order).
TEST(DenseKernel, EveryWayOfKeepingPackedTilesAgrees) {
  uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  struct Budget {
    const char* name;
    double bytes;
  };
  // One head of {batch 2, hkv 2, 300 keys, dk 40, dv 24} packs 5 tiles of 10-18 KiB (K only, or
  // K and V, depending on the vector length and dtype), so these reach 1 or 2 heads per round
  // and segments of 1 or 2 tiles; the second shape lands elsewhere on the same scale.
  const std::vector<Budget> budgets = {{"default", 0},
                                       {"1 head per round", 1.2e5},
                                       {"2 heads per round", 2.4e5},
                                       {"segments of 2 tiles", 4e4},
                                       {"segments of 1 tile", 1}};
  const std::vector<Shape> shapes = {{2, 4, 2, 300, 300, 40, 24}, {1, 3, 3, 200, 250, 32, 48}};
  PatternSpec spec;
  spec.name = "bigbird";
  spec.seqlen = 300;
  spec.block = 32;
  const auto bigbird = MakePattern(spec);
  const auto causal = CausalMask();
  const auto win = CausalWindowMask(70);
  const std::vector<const Mask*> masks = {nullptr, causal.get(), win.get(), bigbird.get()};
  for (const auto& s : shapes) {
    for (const Mask* m : masks) {
      for (const bool bf : {false, true}) {  // f32 V of whole vectors is read in place, bf16 packed
        const Inputs in(s, false, ++seed);
        Outputs first(s, false);
        bool have_first = false;
        for (const auto& b : budgets) {
          detail::SetDensePackBudgetForTesting(b.bytes);
          for (int threads : {1, 2, 3}) {
            SCOPED_TRACE(::testing::Message()
                         << b.name << ", hq " << s.hq << " hkv " << s.hkv << " skv " << s.skv
                         << " mask " << Describe(m) << " threads " << threads);
            DenseOptions opt;
            opt.mask = m;
            opt.num_threads = threads;
            DenseStats stats;
            opt.stats = &stats;
            Outputs fast(s, false), ref(s, false);
            if (bf) {
              DenseForward(in.Q(), in.Kb(), in.Vb(), fast.out, opt, fast.lse);
              opt.stats = nullptr;
              ref::DenseForward(in.Q(), in.Kb(), in.Vb(), ref.out, opt, ref.lse);
            } else {
              DenseForward(in.Q(), in.K(), in.V(), fast.out, opt, fast.lse);
              opt.stats = nullptr;
              ref::DenseForward(in.Q(), in.K(), in.V(), ref.out, opt, ref.lse);
            }
            EXPECT_LT(RelMaxError(fast.out, ref.out), Tolerance(s.skv));
            EXPECT_LT(RelMaxError(fast.lse, ref.lse, 1.0), Tolerance(s.skv));
            EXPECT_EQ(stats.tiles_skipped + stats.tiles_full + stats.tiles_partial,
                      stats.tiles_total);
            if (!have_first) {
              first.o = fast.o;
              first.l = fast.l;
              have_first = true;
            } else {
              EXPECT_EQ(fast.o, first.o);
              EXPECT_EQ(fast.l, first.l);
            }
          }
        }
      }
    }
  }
  detail::SetDensePackBudgetForTesting(0);
}

TEST(DenseKernel, ScoreOptionCombinations) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.0625f, 0.03f, 0.01f};
  const std::vector<float> sinks = {0.3f, -1.0f, 2.0f, 0.0f, -INFINITY, 5.0f};
  const auto causal = CausalMask();
  const auto win = CausalWindowMask(20);
  const std::vector<Shape> shapes = {{2, 6, 2, 37, 70, 32, 24}, {1, 6, 3, 1, 90, 32, 32}};
  uint64_t sd = seed;
  for (const auto& s : shapes) {
    for (int bits = 0; bits < 16; ++bits) {
      if (Sanitized() && bits % 5 != 0 && bits != 15) continue;
      for (const Mask* m : {static_cast<const Mask*>(nullptr), causal.get(), win.get()}) {
        for (bool bf : {false, true}) {
          DenseOptions opt;
          opt.mask = m;
          if (bits & 1) opt.softcap = 3.0f;
          if (bits & 2) opt.alibi_slopes = slopes;
          if (bits & 4) opt.sinks = sinks;
          if (bits & 8) opt.scale = -0.4f;  // any finite scale, even negative
          SCOPED_TRACE(::testing::Message() << "options " << bits << " mask " << Describe(m)
                                            << " bf16 " << bf << " sq " << s.sq);
          Compare(s, opt, bf, (bits & 1) != 0, ++sd);
        }
      }
    }
  }
}

TEST(DenseKernel, GqaMqaRatiosAndMlaHeadDims) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const auto causal = CausalMask();
  DenseOptions opt;
  opt.mask = causal.get();
  uint64_t sd = seed;
  for (int64_t hkv : {8, 4, 2, 1}) {
    SCOPED_TRACE(::testing::Message() << "8 query heads over " << hkv);
    Compare({1, 8, hkv, 50, 50, 32, 32}, opt, false, false, ++sd);
    Compare({1, 8, hkv, 1, 77, 32, 32}, opt, true, true, ++sd);
  }
  // MLA's absorbed form: head_dim_qk 576, head_dim_v 512, one KV head.
  Compare({1, 4, 1, 3, 70, 576, 512}, opt, false, false, ++sd);
  Compare({1, 2, 1, 66, 66, 576, 512}, opt, true, false, ++sd);
}

TEST(DenseKernel, AllMaskedRowsGiveZerosOrTheSink) {
  const auto causal = CausalMask();
  std::vector<float> sinks = {0.5f, -2.0f};
  for (bool bf : {false, true}) {
    for (int64_t sq : {int64_t{1}, int64_t{5}, int64_t{70}}) {
      const Shape s{1, 2, 1, sq, 9, 32, 32};
      const Inputs in(s, false, testing::TestSeed() + sq);
      DenseOptions opt;
      opt.mask = causal.get();
      opt.q_start = -3;  // queries at -3, -2, -1 precede every key; later ones see some
      for (bool with_sink : {false, true}) {
        opt.sinks = with_sink ? std::span<const float>(sinks) : std::span<const float>();
        Outputs o(s, false), r(s, false);
        if (bf) {
          DenseForward(in.Q(), in.Kb(), in.Vb(), o.out, opt, o.lse);
          ref::DenseForward(in.Q(), in.Kb(), in.Vb(), r.out, opt, r.lse);
        } else {
          DenseForward(in.Q(), in.K(), in.V(), o.out, opt, o.lse);
          ref::DenseForward(in.Q(), in.K(), in.V(), r.out, opt, r.lse);
        }
        for (int64_t h = 0; h < 2; ++h) {
          for (int64_t i = 0; i < std::min<int64_t>(3, sq); ++i) {
            for (int64_t d = 0; d < 32; ++d) EXPECT_EQ(o.out.at(0, h, i, d), 0.0f);
            EXPECT_EQ(o.lse.at(0, h, i, 0), with_sink ? sinks[h] : -INFINITY);
          }
        }
        EXPECT_LT(RelMaxError(o.out, r.out), Tolerance(9));
        EXPECT_LT(RelMaxError(o.lse, r.lse, 1.0), Tolerance(9));
      }
    }
  }
}

TEST(DenseKernel, LogitsOfTenThousandStayFinite) {
  const auto causal = CausalMask();
  uint64_t sd = testing::TestSeed();
  // qk_std 10 with d 128 and scale 1/sqrt(d): logits ~ N(0, 100·sqrt(128)/sqrt(128)·...) ≈
  // ±1e3-1e4.
  for (const Shape& s : {Shape{1, 4, 1, 1, 300, 128, 128}, Shape{1, 2, 2, 70, 130, 40, 40}}) {
    for (const Mask* m : {static_cast<const Mask*>(nullptr), causal.get()}) {
      DenseOptions opt;
      opt.mask = m;
      opt.scale = 1.0f;  // q·k itself: |logit| up to ~1e4
      const Inputs in(s, false, ++sd, 10.0f);
      Outputs o(s, false), r(s, false);
      DenseForward(in.Q(), in.K(), in.V(), o.out, opt, o.lse);
      ref::DenseForward(in.Q(), in.K(), in.V(), r.out, opt, r.lse);
      EXPECT_TRUE(testing::AllFinite(o.out));
      EXPECT_TRUE(testing::AllFinite(o.lse));
      // The softmax is nearly one-hot; f32 logits of 1e4 carry ~1e-3 absolute rounding.
      EXPECT_LT(RelMaxError(o.out, r.out), 2e-2);
      EXPECT_LT(RelMaxError(o.lse, r.lse), 1e-5);
    }
  }
}

TEST(DenseKernel, ThreadCountsGiveIdenticalResults) {
  const Shape s{2, 8, 2, 150, 300, 64, 64};
  const Inputs in(s, true, testing::TestSeed());
  const auto causal = CausalMask();
  Outputs o1(s, false), o2(s, false), o3(s, false);
  DenseOptions opt;
  opt.mask = causal.get();
  opt.num_threads = 1;
  DenseForward(in.Q(), in.K(), in.V(), o1.out, opt, o1.lse);
  opt.num_threads = 2;
  DenseForward(in.Q(), in.K(), in.V(), o2.out, opt, o2.lse);
  opt.num_threads = 3;
  DenseForward(in.Q(), in.K(), in.V(), o3.out, opt, o3.lse);
  // Each work unit is computed the same way whichever thread runs it: bitwise equal.
  EXPECT_EQ(o1.o, o2.o);
  EXPECT_EQ(o1.o, o3.o);
  EXPECT_EQ(o1.l, o2.l);
}

// Counts the tiles a (batch, kv head) grid would classify as empty / full / partial.
DenseStats Predict(const Mask* m, const Shape& s, int64_t bq, int64_t bk) {
  DenseStats st;
  const int64_t q_off = s.skv - s.sq;
  for (int64_t i0 = 0; i0 < s.sq; i0 += bq) {
    for (int64_t j0 = 0; j0 < s.skv; j0 += bk) {
      ++st.tiles_total;
      const TileKind kind =
          m ? m->Classify(i0 + q_off, std::min(s.sq, i0 + bq) + q_off, j0, std::min(s.skv, j0 + bk))
            : TileKind::kFull;
      if (kind == TileKind::kEmpty) ++st.tiles_skipped;
      if (kind == TileKind::kFull) ++st.tiles_full;
      if (kind == TileKind::kPartial) ++st.tiles_partial;
    }
  }
  const int64_t grids = s.batch * s.hkv;
  st.tiles_total *= grids;
  st.tiles_skipped *= grids;
  st.tiles_full *= grids;
  st.tiles_partial *= grids;
  return st;
}

TEST(DenseKernel, TileStatsMatchTheMaskClassification) {
  const Shape s{2, 4, 2, 700, 1000, 16, 16};
  const Inputs in(s, false, testing::TestSeed());
  const auto causal = CausalMask();
  const auto win = CausalWindowMask(128);
  const auto win_odd = CausalWindowMask(77);
  const auto chunk = ChunkedLocalMask(200);
  for (const Mask* m :
       {static_cast<const Mask*>(nullptr), causal.get(), win.get(), win_odd.get(), chunk.get()}) {
    SCOPED_TRACE(Describe(m));
    DenseStats st;
    DenseOptions opt;
    opt.mask = m;
    opt.stats = &st;
    Outputs o(s, false);
    DenseForward(in.Q(), in.K(), in.V(), o.out, opt);
    ASSERT_GT(st.block_q, 0);
    const DenseStats want = Predict(m, s, st.block_q, st.block_kv);
    EXPECT_EQ(st.tiles_total, want.tiles_total);
    EXPECT_EQ(st.tiles_skipped, want.tiles_skipped);
    EXPECT_EQ(st.tiles_full, want.tiles_full);
    EXPECT_EQ(st.tiles_partial, want.tiles_partial);
    if (m == win.get()) {
      EXPECT_GT(st.tiles_skipped, st.tiles_total / 2);
    }
  }
}

TEST(DenseKernel, MergeOfThreePartsWithSinkEqualsWhole) {
  const Shape s{1, 4, 2, 9, 300, 32, 32};
  const Inputs in(s, false, testing::TestSeed());
  const auto causal = CausalMask();
  std::vector<float> sinks = {1.0f, -1.0f, 0.0f, 3.0f};
  DenseOptions opt;
  opt.mask = causal.get();
  opt.sinks = sinks;
  Outputs whole(s, false);
  DenseForward(in.Q(), in.K(), in.V(), whole.out, opt, whole.lse);
  const std::vector<int64_t> cuts = {0, 64, 211, 300};
  std::vector<Outputs> parts;
  for (size_t p = 0; p + 1 < cuts.size(); ++p) {
    Shape ps = s;
    ps.skv = cuts[p + 1] - cuts[p];
    parts.emplace_back(ps, false);
    auto k = in.K(), v = in.V();
    k.data += cuts[p] * k.stride[2];
    v.data += cuts[p] * v.stride[2];
    k.shape[2] = v.shape[2] = ps.skv;
    DenseOptions o = opt;
    o.k_start = cuts[p];
    o.q_start = s.skv - s.sq;
    if (p != 1) o.sinks = {};  // the sink joins exactly one part
    DenseForward(in.Q(), k, v, parts.back().out, o, parts.back().lse);
  }
  std::vector<TensorView<const float>> outs, lses;
  for (auto& p : parts) {
    outs.push_back(p.out);
    lses.push_back(p.lse);
  }
  Outputs merged(s, false);
  MergeAttention(outs, lses, merged.out, merged.lse);
  EXPECT_LT(RelMaxError(merged.out, whole.out), 1e-5);
  EXPECT_LT(RelMaxError(merged.lse, whole.lse), 1e-6);
}

// Prefill of T tokens, then steps of `step` tokens through the cache, against one full pass.
template <typename T>
void DecodeAgainstFull(int64_t window, int64_t step, int threads, uint64_t seed) {
  SCOPED_TRACE(::testing::Message() << "window " << window << " step " << step << " threads "
                                    << threads << " bf16 " << (std::is_same_v<T, bf16> ? 1 : 0));
  const int64_t prefill = 300, steps = 12, hq = 8, hkv = 2, dk = 32, dv = 48;
  const int64_t total = prefill + steps * step;
  const Shape s{1, hq, hkv, total, total, dk, dv};
  const Inputs in(s, false, seed);
  const auto mask = window > 0 ? CausalWindowMask(window) : CausalMask();
  DenseOptions opt;
  opt.mask = mask.get();
  Outputs full(s, false);
  if constexpr (std::is_same_v<T, bf16>) {
    DenseForward(in.Q(), in.Kb(), in.Vb(), full.out, opt, full.lse);
  } else {
    DenseForward(in.Q(), in.K(), in.V(), full.out, opt, full.lse);
  }
  KvCache<T> cache(1, hkv, dk, dv, total, window, step);
  auto rows = [](TensorView<const float> t, int64_t from, int64_t n) {
    t.data += from * t.stride[2];
    t.shape[2] = n;
    return t;
  };
  cache.Append(rows(in.K(), 0, prefill), rows(in.V(), 0, prefill));
  DenseOptions dopt;
  dopt.num_threads = threads;
  for (int64_t t = prefill; t < total; t += step) {
    cache.Append(rows(in.K(), t, step), rows(in.V(), t, step));
    std::vector<float> o(static_cast<size_t>(hq * step * dv)), l(static_cast<size_t>(hq * step));
    DenseDecode(rows(in.Q(), t, step), cache, MakeBhsd(o.data(), 1, hq, step, dv), dopt,
                MakeBhsd(l.data(), 1, hq, step, int64_t{1}));
    TensorView<const float> want = full.out;
    TensorView<const float> want_l = full.lse;
    ASSERT_LT(RelMaxError(MakeBhsd<const float>(o.data(), 1, hq, step, dv), rows(want, t, step)),
              1e-5)
        << "token " << t;
    ASSERT_LT(RelMaxError(MakeBhsd<const float>(l.data(), 1, hq, step, 1), rows(want_l, t, step)),
              1e-5);
  }
  if (window > 0) {
    EXPECT_EQ(cache.slots(), window + step - 1);
  }
}

TEST(DenseKernel, DecodeEqualsFullPassThroughEveryCache) {
  uint64_t seed = testing::TestSeed();
  for (int64_t window : {int64_t{0}, int64_t{40}, int64_t{100}}) {
    for (int64_t step : {int64_t{1}, int64_t{3}, int64_t{20}}) {  // 20: past the key-split limit
      for (int threads : {1, 2, 3}) {
        DecodeAgainstFull<float>(window, step, threads, ++seed);
        DecodeAgainstFull<bf16>(window, step, threads, ++seed);
      }
    }
  }
}

// A user mask that fails inside the kernel's parallel region: the error must reach the caller.
class ThrowingMask final : public Mask {
 public:
  bool Allowed(int64_t q, int64_t k) const override { return k <= q; }
  TileKind Classify(int64_t, int64_t, int64_t, int64_t) const override {
    throw Error("ThrowingMask: refused");
  }
  std::string Describe() const override { return "throwing"; }
};

// A user mask whose KeyTiles lists a tile twice or past the end: the kernel indexes its shared
// tile buffer with these, so it must refuse them with an error, not read out of bounds.
class BadKeyTilesMask final : public Mask {
 public:
  explicit BadKeyTilesMask(bool repeat) : repeat_(repeat) {}
  bool Allowed(int64_t q, int64_t k) const override { return k <= q; }
  void KeyTiles(int64_t, int64_t, int64_t, int64_t, int64_t,
                std::vector<int64_t>* tiles) const override {
    tiles->push_back(0);
    tiles->push_back(repeat_ ? 0 : 1000);
  }
  std::string Describe() const override { return "bad_key_tiles"; }

 private:
  bool repeat_;
};

TEST(DenseKernel, MaskListingInvalidKeyTilesIsRefused) {
  const Shape s{1, 2, 2, 200, 200, 32, 32};
  const Inputs in(s, false, 7);
  for (bool repeat : {false, true}) {
    BadKeyTilesMask mask(repeat);
    DenseOptions opt;
    opt.mask = &mask;
    opt.num_threads = 2;
    Outputs o(s, false);
    try {
      DenseForward(in.Q(), in.K(), in.V(), o.out, opt);
      ADD_FAILURE() << "expected attnkit::Error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("KeyTiles"), std::string::npos) << e.what();
    }
  }
}

TEST(DenseKernel, ErrorsInsideTheParallelRegionReachTheCaller) {
  const Shape s{1, 4, 2, 200, 600, 32, 32};  // 600 cached keys: decode splits them over threads
  const Inputs in(s, false, 1);
  Outputs o(s, false);
  ThrowingMask mask;
  DenseOptions opt;
  opt.mask = &mask;
  opt.num_threads = 2;
  EXPECT_THROW(DenseForward(in.Q(), in.K(), in.V(), o.out, opt), Error);
  KvCache<float> cache(1, 2, 32, 32, 1000);
  cache.Append(in.K(), in.V());
  Tensor<float> q1(1, 4, 1, 32), o1(1, 4, 1, 32);
  EXPECT_THROW(DenseDecode(q1.view(), cache, o1.view(), opt), Error);
}

TEST(DenseKernel, BadInputIsRejectedWithNamedArguments) {
  auto expect_error = [](const std::function<void()>& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "expected attnkit::Error mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  Tensor<float> q(1, 4, 8, 16), k(1, 2, 8, 16), v(1, 2, 8, 16), o(1, 4, 8, 16), l(1, 4, 8, 1);
  Tensor<float> k3(1, 3, 8, 16), kb2(2, 2, 8, 16), v5(1, 2, 5, 16), o_bad(1, 4, 8, 15);
  expect_error([&] { DenseForward(q.view(), k3.view(), k3.view(), o.view()); }, "num_heads_q");
  expect_error([&] { DenseForward(q.view(), kb2.view(), kb2.view(), o.view()); }, "batch");
  expect_error([&] { DenseForward(q.view(), k.view(), v5.view(), o.view()); }, "seqlen_kv");
  expect_error([&] { DenseForward(q.view(), k.view(), v.view(), o_bad.view()); }, "out");
  expect_error([&] { DenseForward(q.view(), k.view(), v.view(), q.view()); }, "overlaps");
  expect_error([&] { DenseForward(q.view(), k.view(), v.view(), o.view(), {}, o.view()); }, "lse");
  TensorView<const float> null_q = q.view();
  null_q.data = nullptr;
  expect_error([&] { DenseForward(null_q, k.view(), v.view(), o.view()); }, "q is null");
  TensorView<const float> zero_q = q.view();
  zero_q.shape[2] = 0;
  expect_error([&] { DenseForward(zero_q, k.view(), v.view(), o.view()); }, "non-positive");
  DenseOptions bad;
  bad.softcap = NAN;
  expect_error([&] { DenseForward(q.view(), k.view(), v.view(), o.view(), bad); }, "softcap");
  bad = {};
  bad.scale = INFINITY;
  expect_error([&] { DenseForward(q.view(), k.view(), v.view(), o.view(), bad); }, "scale");
  std::vector<float> sinks = {0, INFINITY, 0, 0};
  bad = {};
  bad.sinks = sinks;
  expect_error([&] { DenseForward(q.view(), k.view(), v.view(), o.view(), bad); }, "sinks[1]");
  bad = {};
  bad.num_threads = -1;
  expect_error([&] { DenseForward(q.view(), k.view(), v.view(), o.view(), bad); }, "num_threads");
  expect_error([] { WindowMask(-1, 0); }, "left");
  expect_error([] { ChunkedLocalMask(0); }, "chunk");
  expect_error([] { KvCache<float>(1, 2, 16, 16, 0); }, "capacity");
  KvCache<float> cache(1, 2, 16, 16, 10);
  expect_error([&] { DenseDecode(q.view(), cache, o.view()); }, "empty");
  cache.Append(k.view(), v.view());
  expect_error([&] { cache.Append(k.view(), v.view()); }, "capacity 10");
  Tensor<float> q1(1, 3, 1, 16), o1(1, 3, 1, 16);
  expect_error([&] { DenseDecode(q1.view(), cache, o1.view()); }, "num_heads_q");
  KvCache<float> ring(1, 2, 16, 16, 0, 4, 2);
  ring.Append(k.view(), v.view());
  Tensor<float> q3(1, 4, 3, 16), o3(1, 4, 3, 16);
  expect_error([&] { DenseDecode(q3.view(), ring, o3.view()); }, "max_step");
  std::vector<TensorView<const float>> outs = {o.view()}, lses = {l.view()};
  expect_error([&] { MergeAttention(outs, {}, o1.view()); }, "differ in length");
}

// Per-head inputs carry their length: a span of the wrong length, or a bad value, is an Error
// naming the argument, and the failed call leaves out untouched.
TEST(DenseKernel, PerHeadInputsAreCheckedAgainstTheHeadCount) {
  Tensor<float> q(1, 4, 8, 16), k(1, 2, 8, 16), v(1, 2, 8, 16), o(1, 4, 8, 16);
  std::fill(o.data(), o.data() + o.numel(), 7.0f);
  const std::vector<float> three = {0.1f, 0.2f, 0.3f}, five = {0, 0, 0, 0, 0};
  const std::vector<float> nan_slope = {0.5f, 0.25f, NAN, 0.1f};
  auto expect_error = [&](const DenseOptions& opt, const std::string& needle) {
    for (Backend b : {Backend::kAuto, Backend::kReference}) {
      DenseOptions with = opt;
      with.backend = b;
      try {
        DenseForward(q.view(), k.view(), v.view(), o.view(), with);
        ADD_FAILURE() << "expected attnkit::Error mentioning '" << needle << "'";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
      }
    }
    for (int64_t i = 0; i < o.numel(); ++i) ASSERT_EQ(o.data()[i], 7.0f);
  };
  DenseOptions opt;
  opt.sinks = three;
  expect_error(opt, "sinks must hold num_heads_q = 4 values, got 3");
  opt = {};
  opt.alibi_slopes = five;
  expect_error(opt, "alibi_slopes must hold num_heads_q = 4 values, got 5");
  opt = {};
  opt.alibi_slopes = nan_slope;
  expect_error(opt, "alibi_slopes[2]");
  // Decode checks the same description.
  KvCache<float> cache(1, 2, 16, 16, 10);
  cache.Append(k.view(), v.view());
  Tensor<float> q1(1, 4, 1, 16), o1(1, 4, 1, 16);
  opt = {};
  opt.sinks = three;
  try {
    DenseDecode(q1.view(), cache, o1.view(), opt);
    ADD_FAILURE() << "expected attnkit::Error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("sinks"), std::string::npos) << e.what();
  }
}

// A sink joins only the normaliser: with sink logit s per head, out = out₀ · w and
// lse = log(exp(lse₀) + exp(s)) where out₀, lse₀ are the sink-free results and
// w = exp(lse₀ − lse). Checked for every combination of the other modifiers, both paths.
TEST(DenseKernel, SinksScaleOnlyTheNormaliser) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.0625f};
  const std::vector<float> sinks = {0.3f, -1.0f, 2.0f, -INFINITY};
  const auto causal = CausalMask();
  auto LogAddExp = [](double a, double b) {
    const double m = std::max(a, b);
    return m + std::log(std::exp(a - m) + std::exp(b - m));
  };
  uint64_t sd = seed;
  for (const Shape& s : {Shape{1, 4, 2, 1, 70, 32, 32}, Shape{1, 4, 2, 40, 70, 32, 32}}) {
    for (int bits = 0; bits < 4; ++bits) {
      const Inputs in(s, false, ++sd);
      DenseOptions opt;
      opt.mask = causal.get();
      if (bits & 1) opt.softcap = 4.0f;
      if (bits & 2) opt.alibi_slopes = slopes;
      Outputs plain(s, false), sunk(s, false);
      DenseForward(in.Q(), in.K(), in.V(), plain.out, opt, plain.lse);
      opt.sinks = sinks;
      DenseForward(in.Q(), in.K(), in.V(), sunk.out, opt, sunk.lse);
      for (int64_t h = 0; h < s.hq; ++h) {
        for (int64_t i = 0; i < s.sq; ++i) {
          const double l0 = plain.lse.at(0, h, i, 0);
          const double want_lse = sinks[h] == -INFINITY ? l0 : LogAddExp(l0, sinks[h]);
          ASSERT_NEAR(sunk.lse.at(0, h, i, 0), want_lse, 1e-5 * (1 + std::abs(want_lse)))
              << "options " << bits << " head " << h << " row " << i;
          const double w = std::exp(l0 - want_lse);
          for (int64_t d = 0; d < s.dv; ++d) {
            ASSERT_NEAR(sunk.out.at(0, h, i, d), plain.out.at(0, h, i, d) * w, 2e-5)
                << "options " << bits << " head " << h << " row " << i << " dim " << d;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace attnkit

// The dense backward: the reference's gradients against double-precision central finite
// differences of the reference forward (tiny shapes, every option), the fast kernel against the
// reference on awkward shapes (every mask family, GQA/MQA, dk != dv, soft-cap, ALiBi, sinks, bf16
// K/V, bshd, query offsets), thread-count invariance (bit for bit) and bad input.
#include "attnkit/kernels/dense_backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/core/runtime.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/masks/sparse.h"
#include "hwy/highway.h"
#include "hwy/targets.h"
#include "kernels/backward_common.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::RelMaxError;

using testing::Sanitized;

struct Shape {
  int64_t batch, hq, hkv, sq, skv, dk, dv;
};

// One attention problem: inputs (bhsd or bshd memory, K/V also as bf16), the upstream gradient
// dO, the forward's saved out / lse, and gradient buffers.
struct Problem {
  Shape s;
  bool bshd;
  std::vector<float> q, k, v, dout;
  std::vector<bf16> kb, vb;
  Problem(const Shape& shape, bool bshd_layout, uint64_t seed, float qk_std = 1.0f)
      : s(shape), bshd(bshd_layout) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist(0.0f, 1.0f);
    q.resize(static_cast<size_t>(s.batch * s.hq * s.sq * s.dk));
    k.resize(static_cast<size_t>(s.batch * s.hkv * s.skv * s.dk));
    v.resize(static_cast<size_t>(s.batch * s.hkv * s.skv * s.dv));
    dout.resize(static_cast<size_t>(s.batch * s.hq * s.sq * s.dv));
    for (auto& x : q) x = qk_std * dist(rng);
    for (auto& x : k) x = qk_std * dist(rng);
    for (auto& x : v) x = dist(rng);
    for (auto& x : dout) x = dist(rng);
    for (float x : k) kb.push_back(ToBf16(x));
    for (float x : v) vb.push_back(ToBf16(x));
  }
  template <typename T>
  TensorView<T> View(T* buf, int64_t heads, int64_t seq, int64_t dim) const {
    return bshd ? MakeBshd(buf, s.batch, seq, heads, dim) : MakeBhsd(buf, s.batch, heads, seq, dim);
  }
  TensorView<const float> Q() const { return View(q.data(), s.hq, s.sq, s.dk); }
  TensorView<const float> K() const { return View(k.data(), s.hkv, s.skv, s.dk); }
  TensorView<const float> V() const { return View(v.data(), s.hkv, s.skv, s.dv); }
  TensorView<const float> dO() const { return View(dout.data(), s.hq, s.sq, s.dv); }
  TensorView<const bf16> Kb() const { return View(kb.data(), s.hkv, s.skv, s.dk); }
  TensorView<const bf16> Vb() const { return View(vb.data(), s.hkv, s.skv, s.dv); }
};

// The forward's saved tensors.
struct Saved {
  std::vector<float> o, l;
  TensorView<float> out, lse;
  Saved(const Problem& p) {
    o.assign(static_cast<size_t>(p.s.batch * p.s.hq * p.s.sq * p.s.dv), 0.0f);
    l.assign(static_cast<size_t>(p.s.batch * p.s.hq * p.s.sq), 0.0f);
    out = p.View(o.data(), p.s.hq, p.s.sq, p.s.dv);
    lse = MakeBhsd(l.data(), p.s.batch, p.s.hq, p.s.sq, int64_t{1});
  }
};

struct GradBufs {
  std::vector<float> dq, dk, dv, ds;
  DenseGrads g;
  GradBufs(const Problem& p, bool sinks) {
    dq.assign(static_cast<size_t>(p.s.batch * p.s.hq * p.s.sq * p.s.dk), -7.0f);  // poison
    dk.assign(static_cast<size_t>(p.s.batch * p.s.hkv * p.s.skv * p.s.dk), -7.0f);
    dv.assign(static_cast<size_t>(p.s.batch * p.s.hkv * p.s.skv * p.s.dv), -7.0f);
    ds.assign(static_cast<size_t>(p.s.hq), -7.0f);
    g.dq = p.View(dq.data(), p.s.hq, p.s.sq, p.s.dk);
    g.dk = p.View(dk.data(), p.s.hkv, p.s.skv, p.s.dk);
    g.dv = p.View(dv.data(), p.s.hkv, p.s.skv, p.s.dv);
    g.dsinks = sinks ? ds.data() : nullptr;
  }
};

void RefForward(const Problem& p, const DenseOptions& o, Saved& sv, bool bf) {
  if (bf) {
    ref::DenseForward(p.Q(), p.Kb(), p.Vb(), sv.out, o, sv.lse);
  } else {
    ref::DenseForward(p.Q(), p.K(), p.V(), sv.out, o, sv.lse);
  }
}

// Σ dO · O of the reference forward, in double.
double Loss(const Problem& p, const DenseOptions& o) {
  Saved sv(p);
  RefForward(p, o, sv, false);
  double total = 0;
  for (size_t i = 0; i < sv.o.size(); ++i) total += double{sv.o[i]} * double{p.dout[i]};
  return total;
}

// max |a − b| / max(max |b|, floor) over flat buffers.
double FlatRelError(const std::vector<float>& a, const std::vector<double>& b, double floor) {
  double diff = 0, scale = floor;
  for (size_t i = 0; i < a.size(); ++i) {
    diff = std::max(diff, std::abs(double{a[i]} - b[i]));
    scale = std::max(scale, std::abs(b[i]));
  }
  return diff / scale;
}

// Central differences of Loss with respect to every element of `x` (perturbed in place; the
// step actually taken is measured after rounding to float).
std::vector<double> FiniteDifferences(Problem& p, std::vector<float>& x, const DenseOptions& o) {
  constexpr float h = 1.0f / 256;
  std::vector<double> fd(x.size());
  for (size_t e = 0; e < x.size(); ++e) {
    const float orig = x[e];
    x[e] = orig + h;
    const double xp = x[e];
    const double lp = Loss(p, o);
    x[e] = orig - h;
    const double xm = x[e];
    const double lm = Loss(p, o);
    x[e] = orig;
    fd[e] = (lp - lm) / (xp - xm);
  }
  return fd;
}

// The reference backward against finite differences for q, k, v (and the sinks).
void CheckFiniteDifferences(const Shape& s, DenseOptions o, bool bshd, uint64_t seed,
                            std::vector<float>* sinks, float qk_std = 1.0f) {
  Problem p(s, bshd, seed, qk_std);
  Saved sv(p);
  if (sinks) o.sinks = *sinks;
  RefForward(p, o, sv, false);
  GradBufs gb(p, sinks != nullptr);
  ref::DenseBackward(p.Q(), p.K(), p.V(), sv.out, sv.lse, p.dO(), gb.g, o);
  // f32 outputs summed in the loss: rounding ~1e-7 · sqrt(n) / (2h) ≈ 1e-5; the O(h²) truncation
  // ~1e-5 · (third derivative). A wrong formula is off by O(|grad|).
  const double tol = 1e-3;
  EXPECT_LT(FlatRelError(gb.dq, FiniteDifferences(p, p.q, o), 1e-2), tol) << "dq";
  EXPECT_LT(FlatRelError(gb.dk, FiniteDifferences(p, p.k, o), 1e-2), tol) << "dk";
  EXPECT_LT(FlatRelError(gb.dv, FiniteDifferences(p, p.v, o), 1e-2), tol) << "dv";
  if (sinks) {
    EXPECT_LT(FlatRelError(gb.ds, FiniteDifferences(p, *sinks, o), 1e-2), tol) << "dsinks";
  }
}

TEST(DenseBackwardRef, MatchesFiniteDifferences) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const auto causal = CausalMask();
  const auto win = CausalWindowMask(3);
  const auto band = WindowMask(2, 1);
  const auto chunk = ChunkedLocalMask(3);
  const auto strided = StridedMask(3);
  const std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.3f};
  uint64_t sd = seed;
  struct Case {
    const char* name;
    Shape s;
    const Mask* mask;
    int opts;  // 1 softcap, 2 alibi, 4 sinks, 8 scale, 16 q offset
    bool bshd;
  };
  const std::vector<Case> cases = {
      {"plain", {1, 2, 2, 5, 6, 4, 3}, nullptr, 0, false},
      {"causal gqa bshd", {2, 4, 2, 5, 5, 3, 4}, causal.get(), 0, true},
      {"window softcap", {1, 2, 1, 6, 7, 4, 4}, win.get(), 1, false},
      {"band alibi scale", {1, 2, 1, 5, 6, 3, 2}, band.get(), 2 | 8, false},
      {"chunked sinks", {1, 2, 2, 6, 6, 4, 3}, chunk.get(), 4, false},
      {"strided everything", {1, 4, 1, 4, 7, 3, 5}, strided.get(), 1 | 2 | 4 | 8 | 16, true},
      {"causal offset (rows that see nothing)", {1, 2, 1, 5, 4, 3, 3}, causal.get(), 16, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    DenseOptions o;
    o.mask = c.mask;
    if (c.opts & 1) o.softcap = 1.5f;
    const std::vector<float> head_slopes(slopes.begin(), slopes.begin() + c.s.hq);
    if (c.opts & 2) o.alibi_slopes = head_slopes;
    if (c.opts & 8) o.scale = 0.7f;
    if (c.opts & 16) o.q_start = -1;
    std::vector<float> sinks = {0.3f, -0.5f, 1.0f, 0.0f};
    sinks.resize(static_cast<size_t>(c.s.hq));
    CheckFiniteDifferences(c.s, o, c.bshd, ++sd, (c.opts & 4) ? &sinks : nullptr,
                           (c.opts & 1) ? 2.0f : 1.0f);
  }
}

// A query row that sees no key and has no sink contributes nothing and gets dq = 0.
TEST(DenseBackwardRef, RowsThatSeeNothingGetZeroGradient) {
  const auto causal = CausalMask();
  const Shape s{1, 2, 1, 4, 3, 4, 4};
  Problem p(s, false, testing::TestSeed());
  DenseOptions o;
  o.mask = causal.get();
  o.q_start = -2;  // rows 0 and 1 precede every key
  Saved sv(p);
  RefForward(p, o, sv, false);
  GradBufs gb(p, false);
  ref::DenseBackward(p.Q(), p.K(), p.V(), sv.out, sv.lse, p.dO(), gb.g, o);
  for (int64_t h = 0; h < 2; ++h) {
    for (int64_t i = 0; i < 2; ++i) {
      for (int64_t d = 0; d < 4; ++d) EXPECT_EQ(gb.g.dq.at(0, h, i, d), 0.0f);
    }
  }
  EXPECT_TRUE(testing::AllFinite(gb.g.dk));
  EXPECT_TRUE(testing::AllFinite(gb.g.dv));
}

// Runs fn once per SIMD target compiled into the library and supported here (only the best one
// under the sanitizers).
template <class Fn>
void ForEachTarget(const Fn& fn) {
  const std::string compiled = "," + CompiledTargets() + ",";
  std::vector<int64_t> targets = hwy::SupportedAndGeneratedTargets();
  if (Sanitized()) targets.resize(1);
  for (int64_t t : targets) {
    const std::string name = hwy::TargetName(t);
    if (compiled.find("," + name + ",") == std::string::npos) continue;
    hwy::SetSupportedTargetsForTest(t);
    (void)hwy::SupportedTargets();
    SCOPED_TRACE("target " + name);
    fn();
  }
  hwy::SetSupportedTargetsForTest(0);
  (void)hwy::SupportedTargets();
}

// f32 sums against the double reference: each gradient element sums seqlen_kv (dq) or
// group·seqlen_q (dk, dv) terms of products of f32 tiles, so rounding grows with the length as in
// the forward, with the forward's constant (tests/dense_kernel_test.cc). Errors are measured
// against the largest of the three gradients.
double GradTolerance(int64_t n) { return 2e-5 * (1.0 + std::log2(static_cast<double>(n))); }

double MaxAbs(TensorView<const float> a) {
  double m = 0;
  for (int64_t i = 0; i < a.shape[0]; ++i) {
    for (int64_t j = 0; j < a.shape[1]; ++j) {
      for (int64_t t = 0; t < a.shape[2]; ++t) {
        for (int64_t d = 0; d < a.shape[3]; ++d)
          m = std::max(m, std::abs(double{a.at(i, j, t, d)}));
      }
    }
  }
  return m;
}

void Backward(const Problem& p, const Saved& sv, const DenseOptions& o, bool bf, bool fast,
              const DenseGrads& g) {
  if (bf) {
    if (fast) {
      DenseBackward(p.Q(), p.Kb(), p.Vb(), sv.out, sv.lse, p.dO(), g, o);
    } else {
      ref::DenseBackward(p.Q(), p.Kb(), p.Vb(), sv.out, sv.lse, p.dO(), g, o);
    }
  } else if (fast) {
    DenseBackward(p.Q(), p.K(), p.V(), sv.out, sv.lse, p.dO(), g, o);
  } else {
    ref::DenseBackward(p.Q(), p.K(), p.V(), sv.out, sv.lse, p.dO(), g, o);
  }
}

// Fast vs reference backward on the reference forward's saved tensors; returns the worst
// relative error over dq, dk, dv (and dsinks).
// Fast vs reference backward on the reference forward's saved tensors (the reference runs once;
// the fast kernel on every SIMD target when all_targets). Returns the worst relative error.
double CompareBackward(const Shape& s, const DenseOptions& o, bool bf, bool bshd, uint64_t seed,
                       float qk_std = 1.0f, bool all_targets = false) {
  const Problem p(s, bshd, seed, qk_std);
  Saved sv(p);
  RefForward(p, o, sv, bf);
  GradBufs ref(p, !o.sinks.empty());
  Backward(p, sv, o, bf, false, ref.g);
  // Relative to the largest gradient of the three (they are in the same units of the loss): where
  // the exact gradient is 0 (one visible key: P = 1, dP = D) both sides hold rounding noise.
  const double scale = std::max({MaxAbs(ref.g.dq), MaxAbs(ref.g.dk), MaxAbs(ref.g.dv)});
  const double tol_q = GradTolerance(s.skv), tol_kv = GradTolerance(s.sq * s.hq / s.hkv);
  double worst = 0;
  auto check = [&] {
    GradBufs fast(p, !o.sinks.empty());
    Backward(p, sv, o, bf, true, fast.g);
    EXPECT_TRUE(testing::AllFinite(fast.g.dq));
    EXPECT_TRUE(testing::AllFinite(fast.g.dk));
    EXPECT_TRUE(testing::AllFinite(fast.g.dv));
    const double e_q = RelMaxError(fast.g.dq, ref.g.dq, scale);
    const double e_k = RelMaxError(fast.g.dk, ref.g.dk, scale);
    const double e_v = RelMaxError(fast.g.dv, ref.g.dv, scale);
    if (std::getenv("ATTNKIT_PRINT_ERRORS")) {
      std::printf("errors %.3g %.3g %.3g  tol %.3g %.3g\n", e_q, e_k, e_v, tol_q, tol_kv);
    }
    EXPECT_LT(e_q, tol_q) << "dq";
    EXPECT_LT(e_k, tol_kv) << "dk";
    EXPECT_LT(e_v, tol_kv) << "dv";
    worst = std::max({worst, e_q, e_k, e_v});
    if (!o.sinks.empty()) {
      std::vector<double> r(ref.ds.begin(), ref.ds.end());
      const double e_s = FlatRelError(fast.ds, r, 1e-3);
      EXPECT_LT(e_s, GradTolerance(s.sq * s.batch)) << "dsinks";
      worst = std::max(worst, e_s);
    }
  };
  if (all_targets) {
    ForEachTarget(check);
  } else {
    check();
  }
  return worst;
}

std::string Describe(const Mask* m) { return m ? m->Describe() : "none"; }

TEST(DenseBackward, EveryTargetEveryMaskAwkwardLengths) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const std::vector<Shape> shapes = {
      {1, 1, 1, 1, 1, 16, 16},   {1, 2, 1, 1, 65, 32, 24},  {2, 2, 2, 63, 63, 16, 16},
      {1, 4, 2, 64, 64, 32, 40}, {1, 3, 1, 65, 65, 40, 24}, {1, 2, 2, 33, 300, 32, 32},
      {1, 4, 1, 300, 130, 8, 8},
  };
  PatternSpec spec;
  spec.name = "bigbird";
  spec.seqlen = 300;
  spec.block = 32;
  const auto bigbird = MakePattern(spec);
  const auto causal = CausalMask();
  const auto win = CausalWindowMask(33);
  const auto band = WindowMask(70, 3);
  const auto chunk = ChunkedLocalMask(48);
  const auto strided = StridedMask(4, 16);
  std::vector<uint8_t> bits(5 * 5);
  for (size_t i = 0; i < bits.size(); ++i) bits[i] = (i * 7 + 3) % 3 != 0;
  const auto bitmap = BlockBitmapMask(64, 64, 5, 5, bits, true);
  const auto both = AndMask(CausalMask(), CausalWindowMask(100));
  const auto either = OrMask(CausalWindowMask(5), ChunkedLocalMask(64));
  const std::vector<const Mask*> masks = {nullptr,     causal.get(),  win.get(),    band.get(),
                                          chunk.get(), strided.get(), bitmap.get(), bigbird.get(),
                                          both.get(),  either.get()};
  uint64_t sd = seed;
  for (const auto& s : shapes) {
    for (const Mask* m : masks) {
      ++sd;
      const bool bf = (sd & 2) != 0, bshd = (sd & 1) != 0;
      SCOPED_TRACE(::testing::Message()
                   << "hq " << s.hq << " hkv " << s.hkv << " sq " << s.sq << " skv " << s.skv
                   << " dk " << s.dk << " dv " << s.dv << " mask " << Describe(m) << " bf16 " << bf
                   << " bshd " << bshd);
      DenseOptions o;
      o.mask = m;
      CompareBackward(s, o, bf, bshd, sd, 1.0f, true);
    }
  }
}

TEST(DenseBackward, ScoreOptionsAndOffsets) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const std::vector<float> slopes = {0.5f, 0.25f, 0.125f, 0.0625f, 0.03f, 0.01f};
  const std::vector<float> sinks = {0.3f, -1.0f, 2.0f, 0.0f, -INFINITY, 5.0f};
  const auto causal = CausalMask();
  const auto win = CausalWindowMask(20);
  const std::vector<Shape> shapes = {{2, 6, 2, 37, 70, 32, 24}, {1, 6, 3, 65, 65, 16, 16}};
  uint64_t sd = seed;
  for (const auto& s : shapes) {
    // Each option alone, some pairs, all together.
    for (int bits : {0, 1, 2, 4, 8, 16, 3, 5, 6, 12, 31}) {
      if (Sanitized() && bits != 31) continue;
      for (const Mask* m : {static_cast<const Mask*>(nullptr), causal.get(), win.get()}) {
        DenseOptions o;
        o.mask = m;
        if (bits & 1) o.softcap = 3.0f;
        if (bits & 2) o.alibi_slopes = slopes;
        if (bits & 4) o.sinks = sinks;
        if (bits & 8) o.scale = -0.4f;
        if (bits & 16) o.q_start = 5;  // queries after the keys: rows see everything up to 5 + i
        ++sd;
        SCOPED_TRACE(::testing::Message() << "options " << bits << " mask " << Describe(m));
        CompareBackward(s, o, (sd & 2) != 0, (bits & 1) != 0, sd, (bits & 1) ? 2.0f : 1.0f);
      }
    }
  }
}

TEST(DenseBackward, GqaMqaRatiosMlaDimsAndLongRows) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const auto causal = CausalMask();
  DenseOptions o;
  o.mask = causal.get();
  uint64_t sd = seed;
  for (int64_t hkv : {8, 4, 2, 1}) {
    SCOPED_TRACE(::testing::Message() << "8 query heads over " << hkv);
    CompareBackward({1, 8, hkv, 70, 70, 32, 32}, o, false, false, ++sd);
    CompareBackward({1, 8, hkv, 3, 77, 32, 16}, o, true, true, ++sd);
  }
  CompareBackward({1, 4, 1, 20, 70, 576, 512}, o, false, false, ++sd);  // MLA's absorbed dims
  if (!Sanitized()) CompareBackward({1, 2, 1, 1000, 1000, 64, 64}, o, false, true, ++sd);
}

// Every unit's sums run in a fixed order, so 1, 2 and 3 threads give the same bits.
TEST(DenseBackward, ThreadCountAndSegmentInvariantBitForBit) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const auto causal = CausalMask();
  PatternSpec spec;
  spec.name = "bigbird";
  spec.seqlen = 300;
  spec.block = 32;
  const auto bigbird = MakePattern(spec);
  const std::vector<float> sinks = {0.5f, -1.0f, 0.0f, 1.0f};
  for (const Mask* m : {causal.get(), bigbird.get()}) {
    const Shape s{2, 4, 2, 300, 300, 32, 24};
    const Problem p(s, true, seed);
    Saved sv(p);
    DenseOptions o;
    o.mask = m;
    o.sinks = sinks;
    RefForward(p, o, sv, false);
    GradBufs first(p, true);
    // Pass A's key blocks run in segments (4096 keys by default); segments of 1 and 2 blocks
    // must give the same bits too.
    for (int threads : {1, 2, 3, 4, 5}) {
      const int64_t seg = threads == 4 ? 1 : threads == 5 ? 2 : 0;
      detail::SetDenseBackwardSegmentForTesting(seg);
      SCOPED_TRACE(::testing::Message()
                   << Describe(m) << " threads " << threads << " segment " << seg);
      o.num_threads = threads > 3 ? threads - 2 : threads;
      GradBufs gb(p, true);
      Backward(p, sv, o, false, true, gb.g);
      if (threads == 1) {
        first.dq = gb.dq, first.dk = gb.dk, first.dv = gb.dv, first.ds = gb.ds;
        continue;
      }
      EXPECT_EQ(gb.dq, first.dq);
      EXPECT_EQ(gb.dk, first.dk);
      EXPECT_EQ(gb.dv, first.dv);
      EXPECT_EQ(gb.ds, first.ds);
    }
    detail::SetDenseBackwardSegmentForTesting(0);
  }
}

// The tile statistics equal the forward's classification of the same 64 × 64 grid.
TEST(DenseBackward, SkipsTheTilesTheMaskClassifiesEmpty) {
  const auto win = CausalWindowMask(100);
  const Shape s{1, 2, 1, 640, 640, 16, 16};
  const Problem p(s, false, testing::TestSeed());
  Saved sv(p);
  DenseOptions o;
  o.mask = win.get();
  RefForward(p, o, sv, false);
  DenseStats st;
  o.stats = &st;
  GradBufs gb(p, false);
  Backward(p, sv, o, false, true, gb.g);
  const TileCounts c = CountTiles(win.get(), 640, 640, 64, 64);
  EXPECT_EQ(st.tiles_total, c.total);
  EXPECT_EQ(st.tiles_skipped, c.empty);
  EXPECT_EQ(st.tiles_full, c.full);
  EXPECT_EQ(st.tiles_partial, c.partial);
}

// Bad input: an Error naming the argument, and every output left as it was.
TEST(DenseBackward, BadInputNamesTheArgumentAndWritesNothing) {
  const Shape s{1, 2, 1, 10, 12, 8, 8};
  Problem p(s, false, testing::TestSeed());
  Saved sv(p);
  DenseOptions o;
  RefForward(p, o, sv, false);
  // +inf is no log-sum-exp; NaN is accepted (a row the forward poisoned: the non-finite rule).
  std::vector<float> wrong_lse(40, 0.0f), nan_lse = sv.l;
  nan_lse[3] = INFINITY;
  std::vector<float> bad_dout(p.dout.size() * 2, 0.0f);
  struct Case {
    const char* name;
    const char* expect;  // a fragment of the message
    std::function<void(bool fast, const DenseGrads& g)> call;
  };
  auto run = [&](bool fast, TensorView<const float> lse, TensorView<const float> dout,
                 const DenseGrads& g, const DenseOptions& opt) {
    if (fast) {
      DenseBackward(p.Q(), p.K(), p.V(), sv.out, lse, dout, g, opt);
    } else {
      ref::DenseBackward(p.Q(), p.K(), p.V(), sv.out, lse, dout, g, opt);
    }
  };
  const std::vector<Case> cases = {
      {"lse of the wrong shape", "lse",
       [&](bool f, const DenseGrads& g) {
         run(f, MakeBhsd<const float>(wrong_lse.data(), 1, 2, 20, 1), p.dO(), g, o);
       }},
      {"no lse", "lse", [&](bool f, const DenseGrads& g) { run(f, {}, p.dO(), g, o); }},
      {"lse with +inf", "lse",
       [&](bool f, const DenseGrads& g) {
         run(f, MakeBhsd<const float>(nan_lse.data(), 1, 2, 10, 1), p.dO(), g, o);
       }},
      {"dout of the wrong shape", "dout",
       [&](bool f, const DenseGrads& g) {
         run(f, sv.lse, MakeBhsd<const float>(bad_dout.data(), 1, 2, 10, 16), g, o);
       }},
      {"dout with a strided dim", "dout",
       [&](bool f, const DenseGrads& g) {
         TensorView<const float> d{bad_dout.data(), {1, 2, 10, 8}, {320, 160, 16, 2}};
         run(f, sv.lse, d, g, o);
       }},
      {"dk aliasing dq", "overlaps",
       [&](bool f, const DenseGrads& g) {
         DenseGrads a = g;
         a.dk = TensorView<float>{g.dq.data, g.dk.shape, g.dk.stride};
         run(f, sv.lse, p.dO(), a, o);
       }},
      {"dq aliasing dout", "overlaps",
       [&](bool f, const DenseGrads& g) {
         DenseGrads a = g;
         a.dq = TensorView<float>{bad_dout.data(), g.dq.shape, g.dq.stride};
         run(f, sv.lse, TensorView<const float>{bad_dout.data(), sv.out.shape, sv.out.stride}, a,
             o);
       }},
      {"dv of the wrong shape", "dv",
       [&](bool f, const DenseGrads& g) {
         DenseGrads a = g;
         a.dv.shape[3] = 4;
         run(f, sv.lse, p.dO(), a, o);
       }},
      {"dsinks without sinks", "dsinks",
       [&](bool f, const DenseGrads& g) {
         DenseGrads a = g;
         a.dsinks = bad_dout.data();
         run(f, sv.lse, p.dO(), a, o);
       }},
  };
  for (const auto& c : cases) {
    for (bool fast : {true, false}) {
      SCOPED_TRACE(::testing::Message() << c.name << (fast ? " fast" : " ref"));
      GradBufs gb(p, false);
      const GradBufs before = gb;
      try {
        c.call(fast, gb.g);
        ADD_FAILURE() << "no error";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(c.expect), std::string::npos) << e.what();
      }
      EXPECT_EQ(gb.dq, before.dq);
      EXPECT_EQ(gb.dk, before.dk);
      EXPECT_EQ(gb.dv, before.dv);
    }
  }
}

}  // namespace
}  // namespace attnkit

// The dense backward: the reference's gradients against double-precision central finite
// differences of the reference forward (tiny shapes, every option), the fast kernel against the
// reference on awkward shapes (every mask family, GQA/MQA, dk != dv, soft-cap, ALiBi, sinks, bf16
// K/V, bshd, query offsets), thread-count invariance (bit for bit) and bad input.
#include "attnkit/kernels/dense_backward.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "attnkit/kernels/dense.h"
#include "attnkit/masks/sparse.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::RelMaxError;

[[maybe_unused]] bool Sanitized() { return std::getenv("ATTNKIT_SANITIZED") != nullptr; }

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
  if (sinks) o.sinks = sinks->data();
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
    if (c.opts & 2) o.alibi_slopes = slopes.data();
    if (c.opts & 8) o.scale = 0.7f;
    if (c.opts & 16) o.q_start = -1;
    std::vector<float> sinks = {0.3f, -0.5f, 1.0f, 0.0f};
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

}  // namespace
}  // namespace attnkit

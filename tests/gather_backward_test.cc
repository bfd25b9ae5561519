// The gather engine's backward (DSA): the references against double-precision central finite
// differences (gathered attention w.r.t. q, k, v; the indexer's KL w.r.t. q_index, weights,
// k_index), the target distribution against its definition, the fast kernels against the
// references on awkward shapes (groups, dk != dv, bf16, bshd, per-kv-head lists, empty rows, MLA's
// aliased v), thread-count invariance and bad input.
#include "attnkit/kernels/gather_backward.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <functional>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "test_util.h"

namespace attnkit {
namespace {

using testing::RelMaxError;

double Tol(int64_t n) { return 2e-5 * (1.0 + std::log2(static_cast<double>(n))); }

struct Case {
  int64_t batch, hq, hkv, sq, skv, dk, dv, top_k, idx_heads;
  bool bshd = false;
};

std::vector<float> Randn(std::mt19937_64& rng, int64_t n, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  std::vector<float> x(static_cast<size_t>(n));
  for (auto& v : x) v = dist(rng);
  return x;
}

double MaxAbs(TensorView<const float> a) {
  double m = 0;
  for (int64_t i = 0; i < a.shape[0]; ++i) {
    for (int64_t j = 0; j < a.shape[1]; ++j) {
      for (int64_t t = 0; t < a.shape[2]; ++t) {
        for (int64_t d = 0; d < a.shape[3]; ++d) {
          m = std::max(m, std::abs(double{a.at(i, j, t, d)}));
        }
      }
    }
  }
  return m;
}

// One gathered-attention problem with its forward's saved tensors.
struct Problem {
  Case c;
  std::vector<float> q, k, v, dout, o, l;
  std::vector<bf16> kb, vb;
  std::vector<int32_t> idx;
  Problem(const Case& cs, std::mt19937_64& rng) : c(cs) {
    q = Randn(rng, c.batch * c.hq * c.sq * c.dk);
    k = Randn(rng, c.batch * c.hkv * c.skv * c.dk);
    v = Randn(rng, c.batch * c.hkv * c.skv * c.dv);
    dout = Randn(rng, c.batch * c.hq * c.sq * c.dv);
    for (float x : k) kb.push_back(ToBf16(x));
    for (float x : v) vb.push_back(ToBf16(x));
    // Distinct random keys per row, ~1 slot in 5 unused; the last row of batch 0 selects nothing.
    idx.resize(static_cast<size_t>(c.batch * c.idx_heads * c.sq * c.top_k));
    std::vector<int32_t> all(static_cast<size_t>(c.skv));
    for (int64_t r = 0; r < c.batch * c.idx_heads * c.sq; ++r) {
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      const bool empty = c.sq > 1 && r == c.sq - 1;
      for (int64_t j = 0; j < c.top_k; ++j) {
        idx[static_cast<size_t>(r * c.top_k + j)] =
            (!empty && j < c.skv && rng() % 5 != 0) ? all[static_cast<size_t>(j)] : -1;
      }
    }
    o.assign(static_cast<size_t>(c.batch * c.hq * c.sq * c.dv), 0.0f);
    l.assign(static_cast<size_t>(c.batch * c.hq * c.sq), 0.0f);
  }
  template <typename T>
  TensorView<T> View(T* buf, int64_t heads, int64_t seq, int64_t dim) const {
    return c.bshd ? MakeBshd(buf, c.batch, seq, heads, dim)
                  : MakeBhsd(buf, c.batch, heads, seq, dim);
  }
  TensorView<const float> Q() const { return View(q.data(), c.hq, c.sq, c.dk); }
  TensorView<const float> K() const { return View(k.data(), c.hkv, c.skv, c.dk); }
  TensorView<const float> V() const { return View(v.data(), c.hkv, c.skv, c.dv); }
  TensorView<const bf16> Kb() const { return View(kb.data(), c.hkv, c.skv, c.dk); }
  TensorView<const bf16> Vb() const { return View(vb.data(), c.hkv, c.skv, c.dv); }
  TensorView<const float> dO() const { return View(dout.data(), c.hq, c.sq, c.dv); }
  TensorView<const int32_t> Idx() const {
    return MakeBhsd(idx.data(), c.batch, c.idx_heads, c.sq, c.top_k);
  }
  TensorView<float> Out() { return View(o.data(), c.hq, c.sq, c.dv); }
  TensorView<float> Lse() { return MakeBhsd(l.data(), c.batch, c.hq, c.sq, int64_t{1}); }
  void Forward(bool bf) {
    if (bf) {
      ref::GatherForward(Q(), Kb(), Vb(), Idx(), Out(), {}, Lse());
    } else {
      ref::GatherForward(Q(), K(), V(), Idx(), Out(), {}, Lse());
    }
  }
  double Loss() {
    Forward(false);
    double s = 0;
    for (size_t x = 0; x < o.size(); ++x) s += double{o[x]} * double{dout[x]};
    return s;
  }
};

struct Grads {
  std::vector<float> dq, dk, dv;
  GatherGrads g;
  explicit Grads(const Problem& p) {
    const Case& c = p.c;
    dq.assign(static_cast<size_t>(c.batch * c.hq * c.sq * c.dk), -7.0f);
    dk.assign(static_cast<size_t>(c.batch * c.hkv * c.skv * c.dk), -7.0f);
    dv.assign(static_cast<size_t>(c.batch * c.hkv * c.skv * c.dv), -7.0f);
    g.dq = p.View(dq.data(), c.hq, c.sq, c.dk);
    g.dk = p.View(dk.data(), c.hkv, c.skv, c.dk);
    g.dv = p.View(dv.data(), c.hkv, c.skv, c.dv);
  }
};

void Backward(Problem& p, bool bf, bool fast, const GatherGrads& g, int threads = 0) {
  GatherOptions o;
  o.num_threads = threads;
  o.backend = fast ? Backend::kAuto : Backend::kReference;
  if (bf) {
    GatherBackward(p.Q(), p.Kb(), p.Vb(), p.Idx(), p.Out(), p.Lse(), p.dO(), g, o);
  } else {
    GatherBackward(p.Q(), p.K(), p.V(), p.Idx(), p.Out(), p.Lse(), p.dO(), g, o);
  }
}

// Central differences of f() with respect to every element of x, in double.
std::vector<double> Fd(std::vector<float>& x, const std::function<double()>& f) {
  constexpr float h = 1.0f / 256;
  std::vector<double> out(x.size());
  for (size_t e = 0; e < x.size(); ++e) {
    const float orig = x[e];
    x[e] = orig + h;
    const double xp = x[e], fp = f();
    x[e] = orig - h;
    const double xm = x[e], fm = f();
    x[e] = orig;
    out[e] = (fp - fm) / (xp - xm);
  }
  return out;
}

double FlatError(const std::vector<float>& a, const std::vector<double>& b,
                 const std::vector<bool>* skip = nullptr) {
  double diff = 0, scale = 1e-2;
  for (size_t i = 0; i < a.size(); ++i) {
    scale = std::max(scale, std::abs(b[i]));
    if (skip && (*skip)[i]) continue;
    diff = std::max(diff, std::abs(double{a[i]} - b[i]));
  }
  return diff / scale;
}

TEST(GatherBackwardRef, MatchesFiniteDifferences) {
  std::mt19937_64 rng(testing::TestSeed());
  SCOPED_TRACE(::testing::Message() << "seed " << testing::TestSeed());
  const std::vector<Case> cases = {
      {1, 2, 2, 4, 7, 4, 3, 3, 1},
      {2, 4, 2, 5, 8, 3, 4, 4, 2, true},  // per-kv-head lists, bshd
      {1, 3, 1, 3, 6, 5, 5, 6, 1},        // more slots than keys
  };
  for (const auto& c : cases) {
    Problem p(c, rng);
    p.Forward(false);
    Grads g(p);
    Backward(p, false, false, g.g);
    auto loss = [&] { return p.Loss(); };
    EXPECT_LT(FlatError(g.dq, Fd(p.q, loss)), 1e-3) << "dq";
    EXPECT_LT(FlatError(g.dk, Fd(p.k, loss)), 1e-3) << "dk";
    EXPECT_LT(FlatError(g.dv, Fd(p.v, loss)), 1e-3) << "dv";
  }
}

TEST(GatherBackward, MatchesReferenceOnAwkwardShapes) {
  std::mt19937_64 rng(testing::TestSeed());
  SCOPED_TRACE(::testing::Message() << "seed " << testing::TestSeed());
  const std::vector<Case> cases = {
      {1, 1, 1, 1, 1, 8, 8, 1, 1},        {2, 4, 2, 9, 70, 40, 24, 13, 1, true},
      {1, 6, 3, 17, 33, 72, 40, 50, 3},   {1, 8, 1, 5, 300, 64, 64, 129, 1},
      {1, 3, 3, 63, 65, 17, 9, 64, 3},    {1, 2, 1, 64, 64, 128, 128, 20, 1, true},
      {1, 16, 1, 65, 300, 48, 32, 40, 1},
  };
  for (const auto& c : cases) {
    for (bool bf : {false, true}) {
      SCOPED_TRACE(::testing::Message()
                   << "hq " << c.hq << " hkv " << c.hkv << " sq " << c.sq << " skv " << c.skv
                   << " top_k " << c.top_k << " bf16 " << bf);
      Problem p(c, rng);
      p.Forward(bf);
      Grads fast(p), ref(p);
      Backward(p, bf, true, fast.g);
      Backward(p, bf, false, ref.g);
      const double scale = std::max({MaxAbs(ref.g.dq), MaxAbs(ref.g.dk), MaxAbs(ref.g.dv)});
      EXPECT_LT(RelMaxError(fast.g.dq, ref.g.dq, scale), Tol(c.top_k)) << "dq";
      EXPECT_LT(RelMaxError(fast.g.dk, ref.g.dk, scale), Tol(c.sq * c.hq)) << "dk";
      EXPECT_LT(RelMaxError(fast.g.dv, ref.g.dv, scale), Tol(c.sq * c.hq)) << "dv";
    }
  }
}

// MLA's absorbed form: v is a view of k's first columns; dk and dv come back separately.
TEST(GatherBackward, MlaAliasedValues) {
  std::mt19937_64 rng(testing::TestSeed());
  const Case c{1, 8, 1, 20, 50, 24, 16, 12, 1};
  Problem p(c, rng);
  const TensorView<const float> k = p.K();
  const TensorView<const float> v{k.data, {1, 1, c.skv, c.dv}, k.stride};
  Tensor<float> o(1, c.hq, c.sq, c.dv), lse(1, c.hq, c.sq, 1);
  ref::GatherForward(p.Q(), k, v, p.Idx(), o.view(), {}, lse.view());
  Tensor<float> dq(1, c.hq, c.sq, c.dk), dk(1, 1, c.skv, c.dk), dv(1, 1, c.skv, c.dv);
  Tensor<float> rq(1, c.hq, c.sq, c.dk), rk(1, 1, c.skv, c.dk), rv(1, 1, c.skv, c.dv);
  GatherBackward(p.Q(), k, v, p.Idx(), o.view(), lse.view(), p.dO(),
                 {dq.view(), dk.view(), dv.view()});
  ref::GatherBackward(p.Q(), k, v, p.Idx(), o.view(), lse.view(), p.dO(),
                      {rq.view(), rk.view(), rv.view()});
  EXPECT_LT(RelMaxError(dq.view(), rq.view()), Tol(c.top_k));
  EXPECT_LT(RelMaxError(dk.view(), rk.view()), Tol(c.sq * c.hq));
  EXPECT_LT(RelMaxError(dv.view(), rv.view()), Tol(c.sq * c.hq));
}

// --- The indexer's training signal ---------------------------------------------------------

struct IndexerProblem {
  int64_t batch, hi, sq, skv, dim, top;
  std::vector<float> qi, w, ki, target;
  std::vector<int32_t> idx;
  IndexerProblem(int64_t b, int64_t h, int64_t s, int64_t n, int64_t d, int64_t t,
                 std::mt19937_64& rng)
      : batch(b), hi(h), sq(s), skv(n), dim(d), top(t) {
    qi = Randn(rng, b * h * s * d);
    w = Randn(rng, b * s * h, 0.5f);
    ki = Randn(rng, b * n * d);
    target.assign(static_cast<size_t>(b * s * t), 0.0f);
    idx.assign(static_cast<size_t>(b * s * t), -1);
    std::vector<int32_t> all(static_cast<size_t>(n));
    for (int64_t r = 0; r < b * s; ++r) {
      std::iota(all.begin(), all.end(), 0);
      std::shuffle(all.begin(), all.end(), rng);
      double total = 0;
      for (int64_t j = 0; j < t && j < n; ++j) {
        if (rng() % 6 == 0) continue;
        idx[static_cast<size_t>(r * t + j)] = all[static_cast<size_t>(j)];
        target[static_cast<size_t>(r * t + j)] = 0.05f + static_cast<float>(rng() % 100) / 100;
        total += target[static_cast<size_t>(r * t + j)];
      }
      for (int64_t j = 0; j < t; ++j) {
        target[static_cast<size_t>(r * t + j)] =
            total > 0 ? static_cast<float>(target[static_cast<size_t>(r * t + j)] / total) : 0.0f;
      }
    }
  }
  TensorView<const float> Qi() const { return MakeBhsd(qi.data(), batch, hi, sq, dim); }
  TensorView<const float> W() const { return MakeBhsd(w.data(), batch, int64_t{1}, sq, hi); }
  TensorView<const float> Ki() const { return MakeBhsd(ki.data(), batch, int64_t{1}, skv, dim); }
  TensorView<const int32_t> Idx() const { return MakeBhsd(idx.data(), batch, int64_t{1}, sq, top); }
  TensorView<const float> Target() const {
    return MakeBhsd(target.data(), batch, int64_t{1}, sq, top);
  }
};

struct IndexerGradBufs {
  std::vector<float> dq, dw, dk;
  IndexerGrads g;
  explicit IndexerGradBufs(const IndexerProblem& p) {
    dq.assign(p.qi.size(), -7.0f);
    dw.assign(p.w.size(), -7.0f);
    dk.assign(p.ki.size(), -7.0f);
    g.dq_index = MakeBhsd(dq.data(), p.batch, p.hi, p.sq, p.dim);
    g.dweights = MakeBhsd(dw.data(), p.batch, int64_t{1}, p.sq, p.hi);
    g.dk_index = MakeBhsd(dk.data(), p.batch, int64_t{1}, p.skv, p.dim);
  }
};

// KL(p ‖ softmax(I)) over each row's selected keys, written out from the definition.
double KlFromDefinition(const IndexerProblem& p) {
  double loss = 0;
  for (int64_t r = 0; r < p.batch * p.sq; ++r) {
    const int64_t b = r / p.sq, i = r % p.sq;
    std::vector<double> score;
    std::vector<double> target;
    for (int64_t j = 0; j < p.top; ++j) {
      const int32_t s = p.idx[static_cast<size_t>(r * p.top + j)];
      if (s < 0) continue;
      double total = 0;
      for (int64_t h = 0; h < p.hi; ++h) {
        double dot = 0;
        for (int64_t d = 0; d < p.dim; ++d) {
          dot += double{p.qi[static_cast<size_t>(((b * p.hi + h) * p.sq + i) * p.dim + d)]} *
                 double{p.ki[static_cast<size_t>((b * p.skv + s) * p.dim + d)]};
        }
        total += double{p.w[static_cast<size_t>((b * p.sq + i) * p.hi + h)]} * std::max(dot, 0.0);
      }
      score.push_back(total);
      target.push_back(p.target[static_cast<size_t>(r * p.top + j)]);
    }
    if (score.empty()) continue;
    double denom = 0;
    for (double x : score) denom += std::exp(x);
    for (size_t x = 0; x < score.size(); ++x) {
      if (target[x] > 0) loss += target[x] * std::log(target[x] / (std::exp(score[x]) / denom));
    }
  }
  return loss;
}

// Elements whose ±h step moves some ReLU input across 0: finite differences are not a
// derivative there.
std::vector<bool> NearKinks(const IndexerProblem& p, bool for_q) {
  constexpr double h = 1.0 / 256;
  std::vector<bool> skip(for_q ? p.qi.size() : p.ki.size(), false);
  for (int64_t r = 0; r < p.batch * p.sq; ++r) {
    const int64_t b = r / p.sq, i = r % p.sq;
    for (int64_t j = 0; j < p.top; ++j) {
      const int32_t s = p.idx[static_cast<size_t>(r * p.top + j)];
      if (s < 0) continue;
      for (int64_t hh = 0; hh < p.hi; ++hh) {
        const size_t q0 = static_cast<size_t>(((b * p.hi + hh) * p.sq + i) * p.dim);
        const size_t k0 = static_cast<size_t>((b * p.skv + s) * p.dim);
        double dot = 0;
        for (int64_t d = 0; d < p.dim; ++d) dot += double{p.qi[q0 + d]} * double{p.ki[k0 + d]};
        for (int64_t d = 0; d < p.dim; ++d) {
          const double shift = 2 * h * std::abs(for_q ? p.ki[k0 + d] : p.qi[q0 + d]);
          if (std::abs(dot) <= shift) skip[for_q ? q0 + d : k0 + d] = true;
        }
      }
    }
  }
  return skip;
}

TEST(IndexerKlRef, LossIsTheDefinitionAndGradientsMatchFiniteDifferences) {
  std::mt19937_64 rng(testing::TestSeed());
  SCOPED_TRACE(::testing::Message() << "seed " << testing::TestSeed());
  IndexerProblem p(2, 3, 5, 9, 4, 4, rng);
  IndexerGradBufs gb(p);
  const double loss = ref::IndexerKlBackward(p.Qi(), p.W(), p.Ki(), p.Idx(), p.Target(), gb.g);
  EXPECT_NEAR(loss, KlFromDefinition(p), 1e-9 * (1 + std::abs(loss)));
  EXPECT_GT(loss, 0.0);
  auto f = [&] {
    IndexerGradBufs scratch(p);
    return ref::IndexerKlBackward(p.Qi(), p.W(), p.Ki(), p.Idx(), p.Target(), scratch.g);
  };
  const auto skip_q = NearKinks(p, true), skip_k = NearKinks(p, false);
  EXPECT_LT(FlatError(gb.dq, Fd(p.qi, f), &skip_q), 3e-4) << "dq_index";
  EXPECT_LT(FlatError(gb.dw, Fd(p.w, f)), 3e-4) << "dweights";
  EXPECT_LT(FlatError(gb.dk, Fd(p.ki, f), &skip_k), 3e-4) << "dk_index";
}

// The target is the main attention's probabilities over the selected keys, summed over the
// query heads and renormalised.
TEST(IndexerTarget, IsTheHeadSummedAttentionDistribution) {
  std::mt19937_64 rng(testing::TestSeed());
  SCOPED_TRACE(::testing::Message() << "seed " << testing::TestSeed());
  const Case c{2, 4, 2, 30, 80, 16, 16, 20, 1};
  Problem p(c, rng);
  p.Forward(false);
  std::vector<float> t_ref(static_cast<size_t>(c.batch * c.sq * c.top_k), -1.0f);
  std::vector<float> t_fast(t_ref.size(), -1.0f);
  const auto tr = MakeBhsd(t_ref.data(), c.batch, int64_t{1}, c.sq, c.top_k);
  const auto tf = MakeBhsd(t_fast.data(), c.batch, int64_t{1}, c.sq, c.top_k);
  ref::IndexerTarget(p.Q(), p.K(), p.Idx(), p.Lse(), tr);
  IndexerTarget(p.Q(), p.K(), p.Idx(), p.Lse(), tf);
  const double scale = 1.0 / std::sqrt(static_cast<double>(c.dk));
  for (int64_t b = 0; b < c.batch; ++b) {
    for (int64_t i = 0; i < c.sq; ++i) {
      const int32_t* sel = p.Idx().row(b, 0, i);
      std::vector<double> want(static_cast<size_t>(c.top_k), 0.0);
      double total = 0;
      for (int64_t h = 0; h < c.hq; ++h) {  // a plain softmax over the selected logits
        std::vector<double> z(static_cast<size_t>(c.top_k), -INFINITY);
        double mx = -INFINITY;
        for (int64_t j = 0; j < c.top_k; ++j) {
          if (sel[j] < 0) continue;
          double dot = 0;
          for (int64_t d = 0; d < c.dk; ++d) {
            dot += double{p.Q().at(b, h, i, d)} * double{p.K().at(b, h / 2, sel[j], d)};
          }
          z[static_cast<size_t>(j)] = dot * scale;
          mx = std::max(mx, dot * scale);
        }
        if (mx == -INFINITY) continue;
        double den = 0;
        for (double x : z) den += std::exp(x - mx);
        for (int64_t j = 0; j < c.top_k; ++j) {
          want[static_cast<size_t>(j)] += std::exp(z[static_cast<size_t>(j)] - mx) / den;
        }
        total += 1;
      }
      for (int64_t j = 0; j < c.top_k; ++j) {
        const double expect = total > 0 ? want[static_cast<size_t>(j)] / total : 0.0;
        EXPECT_NEAR(tr.at(b, 0, i, j), expect, 1e-6);
        EXPECT_NEAR(tf.at(b, 0, i, j), expect, 1e-5);
      }
    }
  }
}

TEST(IndexerKl, FastMatchesReference) {
  std::mt19937_64 rng(testing::TestSeed());
  SCOPED_TRACE(::testing::Message() << "seed " << testing::TestSeed());
  for (const auto& dims : std::vector<std::array<int64_t, 6>>{
           {1, 1, 1, 1, 8, 1}, {2, 4, 63, 65, 32, 16}, {1, 8, 65, 300, 64, 64}}) {
    IndexerProblem p(dims[0], dims[1], dims[2], dims[3], dims[4], dims[5], rng);
    IndexerGradBufs fast(p), ref(p);
    const double lf = IndexerKlBackward(p.Qi(), p.W(), p.Ki(), p.Idx(), p.Target(), fast.g);
    const double lr = ref::IndexerKlBackward(p.Qi(), p.W(), p.Ki(), p.Idx(), p.Target(), ref.g);
    EXPECT_NEAR(lf, lr, 1e-4 * (1 + std::abs(lr)));
    const double scale =
        std::max({MaxAbs(ref.g.dq_index), MaxAbs(ref.g.dweights), MaxAbs(ref.g.dk_index)});
    EXPECT_LT(RelMaxError(fast.g.dq_index, ref.g.dq_index, scale), Tol(p.top)) << "dq_index";
    EXPECT_LT(RelMaxError(fast.g.dweights, ref.g.dweights, scale), Tol(p.top)) << "dweights";
    EXPECT_LT(RelMaxError(fast.g.dk_index, ref.g.dk_index, scale), Tol(p.sq * p.hi)) << "dk";
  }
}

// Every sum has one owner that adds in a fixed order: 1, 2 and 3 threads give the same bits.
TEST(GatherBackward, ThreadCountInvariantBitForBit) {
  std::mt19937_64 rng(testing::TestSeed());
  SCOPED_TRACE(::testing::Message() << "seed " << testing::TestSeed());
  Problem p({2, 4, 2, 70, 90, 32, 24, 30, 2}, rng);
  p.Forward(false);
  IndexerProblem ip(2, 4, 70, 90, 16, 30, rng);
  Grads first(p);
  IndexerGradBufs ifirst(ip);
  double lfirst = 0;
  for (int threads : {1, 2, 3}) {
    SCOPED_TRACE(::testing::Message() << "threads " << threads);
    Grads g(p);
    Backward(p, false, true, g.g, threads);
    IndexerGradBufs ig(ip);
    IndexerOptions io;
    io.num_threads = threads;
    const double l = IndexerKlBackward(ip.Qi(), ip.W(), ip.Ki(), ip.Idx(), ip.Target(), ig.g, io);
    if (threads == 1) {
      first.dq = g.dq, first.dk = g.dk, first.dv = g.dv;
      ifirst.dq = ig.dq, ifirst.dw = ig.dw, ifirst.dk = ig.dk;
      lfirst = l;
      continue;
    }
    EXPECT_EQ(g.dq, first.dq);
    EXPECT_EQ(g.dk, first.dk);
    EXPECT_EQ(g.dv, first.dv);
    EXPECT_EQ(ig.dq, ifirst.dq);
    EXPECT_EQ(ig.dw, ifirst.dw);
    EXPECT_EQ(ig.dk, ifirst.dk);
    EXPECT_EQ(l, lfirst);
  }
}

TEST(GatherBackward, BadInputNamesTheArgumentAndWritesNothing) {
  std::mt19937_64 rng(testing::TestSeed());
  Problem p({1, 2, 1, 6, 10, 8, 8, 4, 1}, rng);
  p.Forward(false);
  std::vector<float> wrong(64, 0.0f);
  for (bool fast : {true, false}) {
    GatherOptions o;
    o.backend = fast ? Backend::kAuto : Backend::kReference;
    auto expect_error = [&](const char* what, const std::function<void(const GatherGrads&)>& call) {
      SCOPED_TRACE(::testing::Message() << what << (fast ? " fast" : " ref"));
      Grads g(p);
      const Grads before = g;
      try {
        call(g.g);
        ADD_FAILURE() << "no error";
      } catch (const Error& e) {
        EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
      }
      EXPECT_EQ(g.dq, before.dq);
      EXPECT_EQ(g.dk, before.dk);
      EXPECT_EQ(g.dv, before.dv);
    };
    expect_error("lse", [&](const GatherGrads& g) {
      GatherBackward(p.Q(), p.K(), p.V(), p.Idx(), p.Out(),
                     MakeBhsd<const float>(wrong.data(), 1, 2, 5, 1), p.dO(), g, o);
    });
    expect_error("dout", [&](const GatherGrads& g) {
      GatherBackward(p.Q(), p.K(), p.V(), p.Idx(), p.Out(), p.Lse(),
                     MakeBhsd<const float>(wrong.data(), 1, 2, 6, 4), g, o);
    });
    expect_error("overlap", [&](const GatherGrads& g) {
      GatherGrads a = g;
      a.dv = TensorView<float>{g.dk.data, g.dv.shape, g.dv.stride};
      GatherBackward(p.Q(), p.K(), p.V(), p.Idx(), p.Out(), p.Lse(), p.dO(), a, o);
    });
    std::vector<int32_t> dup = p.idx;
    dup[1] = dup[0] = 3;
    expect_error("twice", [&](const GatherGrads& g) {
      GatherBackward(p.Q(), p.K(), p.V(), MakeBhsd<const int32_t>(dup.data(), 1, 1, 6, 4), p.Out(),
                     p.Lse(), p.dO(), g, o);
    });
  }
  // The indexer's KL: a target of the wrong shape, negative probabilities.
  IndexerProblem ip(1, 2, 6, 10, 8, 4, rng);
  for (bool fast : {true, false}) {
    IndexerOptions io;
    io.backend = fast ? Backend::kAuto : Backend::kReference;
    IndexerGradBufs g(ip);
    const IndexerGradBufs before = g;
    EXPECT_THROW(IndexerKlBackward(ip.Qi(), ip.W(), ip.Ki(), ip.Idx(),
                                   MakeBhsd<const float>(wrong.data(), 1, 1, 6, 3), g.g, io),
                 Error);
    std::vector<float> neg = ip.target;
    neg[0] = -0.5f;
    EXPECT_THROW(IndexerKlBackward(ip.Qi(), ip.W(), ip.Ki(), ip.Idx(),
                                   MakeBhsd<const float>(neg.data(), 1, 1, 6, 4), g.g, io),
                 Error);
    EXPECT_EQ(g.dq, before.dq);
    EXPECT_EQ(g.dw, before.dw);
    EXPECT_EQ(g.dk, before.dk);
  }
}

}  // namespace
}  // namespace attnkit

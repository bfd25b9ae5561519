// The non-finite rule (docs/reliability.md, src/kernels/nonfinite.h), for every engine and both
// backends: a row whose q row, or the k / v row of a key it may see, holds a NaN or ±Inf is NaN
// (every element and its LSE); keys a row may not see never affect it; a row that sees no key is
// zeros with LSE −inf; every other row is as without the non-finite value. Backward passes accept
// the NaN rows and carry the NaN into the gradients they reach, never throwing or hiding it.
// Before the rule: a NaN in q gave a zero row with LSE −inf (both dense backends), an Inf in k
// zeros (fast) or NaN (reference), elu+1 with a NaN in q finite values (fast) or zeros (ref).
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "attnkit/core/tensor.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/dense_backward.h"
#include "attnkit/kernels/gather.h"
#include "attnkit/kernels/gather_backward.h"
#include "attnkit/kernels/kv_cache.h"
#include "attnkit/kernels/linear.h"
#include "attnkit/kernels/linear_backward.h"
#include "attnkit/kernels/recurrent.h"
#include "attnkit/kernels/recurrent_backward.h"
#include "attnkit/masks/mask.h"
#include "test_util.h"

namespace attnkit {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();
constexpr float kBadValues[] = {kNaN, kInf, -kInf};

bool AllNaN(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isnan(x[i])) return false;
  }
  return true;
}
bool AllFinite(const float* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (!std::isfinite(x[i])) return false;
  }
  return true;
}

Tensor<float> Random(int64_t b, int64_t h, int64_t t, int64_t d, std::mt19937_64& rng) {
  Tensor<float> x(b, h, t, d);
  testing::FillNormal(x, rng);
  return x;
}

Tensor<float> Copy(const Tensor<float>& x) {
  const auto& s = x.shape();
  Tensor<float> y(s[0], s[1], s[2], s[3]);
  std::copy(x.data(), x.data() + x.numel(), y.data());
  return y;
}

// Checks out/lse [b, h, t, ·] row by row: poisoned(b, h, t) rows all NaN (LSE NaN), the others
// equal to the clean run's (same kernel, the non-finite value replaced by a finite one).
template <typename Poisoned>
void ExpectRule(const Tensor<float>& out, const Tensor<float>& lse, const Tensor<float>& clean,
                const Tensor<float>& clean_lse, Poisoned poisoned, const std::string& what,
                bool expect_poisoned = true) {
  const auto& s = out.shape();
  int poisoned_rows = 0;
  for (int64_t b = 0; b < s[0]; ++b) {
    for (int64_t h = 0; h < s[1]; ++h) {
      for (int64_t t = 0; t < s[2]; ++t) {
        const int64_t r = (b * s[1] + h) * s[2] + t;
        const float* o = out.data() + r * s[3];
        const float* c = clean.data() + r * s[3];
        if (poisoned(b, h, t)) {
          ++poisoned_rows;
          ASSERT_TRUE(AllNaN(o, s[3])) << what << ": row " << b << "," << h << "," << t;
          if (lse.numel() > 0) {
            ASSERT_TRUE(std::isnan(lse.data()[r])) << what << " lse row " << t;
          }
          continue;
        }
        for (int64_t d = 0; d < s[3]; ++d) {
          ASSERT_NEAR(o[d], c[d], 1e-5f * (1 + std::fabs(c[d])))
              << what << ": clean row " << b << "," << h << "," << t << " dim " << d;
        }
        if (lse.numel() > 0) {
          ASSERT_EQ(std::isinf(lse.data()[r]), std::isinf(clean_lse.data()[r])) << what;
          if (std::isfinite(clean_lse.data()[r])) {
            ASSERT_NEAR(lse.data()[r], clean_lse.data()[r], 1e-5f) << what;
          }
        }
      }
    }
  }
  if (expect_poisoned) {
    EXPECT_GT(poisoned_rows, 0) << what << ": the test poisons no row";
  }
}

// Dense, both backends: causal (keys past a row never affect it, even inside the fast kernel's
// diagonal tile), bidirectional, grouped heads; rows that see no key stay zeros with LSE −inf.
TEST(NonFinite, DenseForwardBothBackends) {
  std::mt19937_64 rng(testing::TestSeed());
  constexpr int64_t B = 2, Hq = 4, Hk = 2, T = 70, Tq = 70, D = 16;
  const Tensor<float> q0 = Random(B, Hq, Tq, D, rng), k0 = Random(B, Hk, T, D, rng),
                      v0 = Random(B, Hk, T, D, rng);
  const MaskPtr causal = CausalMask();
  for (const Backend backend : {Backend::kAuto, Backend::kReference}) {
    for (const bool masked : {true, false}) {
      for (const float bad : kBadValues) {
        for (const char which : {'q', 'k', 'v'}) {
          const std::string what = std::string(backend == Backend::kAuto ? "fast" : "ref") +
                                   (masked ? " causal " : " full ") + which + "=" +
                                   std::to_string(bad);
          DenseOptions o;
          o.backend = backend;
          o.mask = masked ? causal.get() : nullptr;
          // q_start 2 below the keys: rows 0 and 1 see no key under the causal mask.
          o.q_start = -2;
          Tensor<float> q = Copy(q0), k = Copy(k0), v = Copy(v0);
          // Key / query row 33: inside the fast kernel's first 64-key tile, where rows 0..34
          // have it masked (a NaN must not leak to them through the masked zero weights).
          const int64_t row = 33;
          if (which == 'q') {
            q.view().row(1, 3, row)[5] = bad;
            q.view().row(0, 0, 0)[1] = bad;  // a row that sees no key when masked
          }
          if (which == 'k') k.view().row(1, 0, row)[2] = bad;
          if (which == 'v') v.view().row(1, 0, row)[7] = bad;
          Tensor<float> out(B, Hq, Tq, D), lse(B, Hq, Tq, 1), clean(B, Hq, Tq, D),
              clean_lse(B, Hq, Tq, 1);
          DenseForward(TensorView<const float>(q.view()), k.view(), v.view(), out.view(), o,
                       lse.view());
          DenseForward(TensorView<const float>(q0.view()), k0.view(), v0.view(), clean.view(), o,
                       clean_lse.view());
          ExpectRule(
              out, lse, clean, clean_lse,
              [&](int64_t b, int64_t h, int64_t t) {
                if (which == 'q') {
                  return (b == 1 && h == 3 && t == row) || (b == 0 && h == 0 && t == 0 && !masked);
                }
                // Key `row` (kv head 0: q heads 0, 1) is seen by rows t - 2 >= row (causal).
                return b == 1 && h < 2 && (!masked || t - 2 >= row);
              },
              what);
          if (masked) {  // rows 0, 1 see nothing: zeros, LSE −inf, whatever the inputs hold
            for (int64_t b = 0; b < B; ++b) {
              for (int64_t h = 0; h < Hq; ++h) {
                EXPECT_EQ(out.view().row(b, h, 0)[0], 0.0f) << what;
                EXPECT_EQ(lse.view().at(b, h, 0, 0), -kInf) << what;
                EXPECT_EQ(lse.view().at(b, h, 1, 0), -kInf) << what;
              }
            }
          }
        }
      }
    }
  }
}

// DenseDecode over a ring-buffer cache: a NaN key poisons the steps that see it, and once it has
// left the window the outputs are those of a cache that never held it.
TEST(NonFinite, DenseDecodeWindowForgetsANaNKey) {
  std::mt19937_64 rng(testing::TestSeed());
  constexpr int64_t H = 2, D = 8, W = 4, N = 12, bad_pos = 3;
  const Tensor<float> k = Random(1, H, N, D, rng), v = Random(1, H, N, D, rng),
                      q = Random(1, H, N, D, rng);
  for (const Backend backend : {Backend::kAuto, Backend::kReference}) {
    KvCache<float> poisoned(1, H, D, D, 0, W, 1), clean(1, H, D, D, 0, W, 1);
    DenseOptions o;
    o.backend = backend;
    for (int64_t t = 0; t < N; ++t) {
      Tensor<float> kt(1, H, 1, D), vt(1, H, 1, D), qt(1, H, 1, D);
      for (int64_t h = 0; h < H; ++h) {
        std::copy_n(k.view().row(0, h, t), D, kt.view().row(0, h, 0));
        std::copy_n(v.view().row(0, h, t), D, vt.view().row(0, h, 0));
        std::copy_n(q.view().row(0, h, t), D, qt.view().row(0, h, 0));
      }
      clean.Append(kt.view(), vt.view());
      if (t == bad_pos) kt.view().row(0, 1, 0)[0] = kNaN;
      poisoned.Append(kt.view(), vt.view());
      Tensor<float> a(1, H, 1, D), c(1, H, 1, D), la(1, H, 1, 1), lc(1, H, 1, 1);
      DenseDecode(TensorView<const float>(qt.view()), poisoned, a.view(), o, la.view());
      DenseDecode(TensorView<const float>(qt.view()), clean, c.view(), o, lc.view());
      const bool sees = t >= bad_pos && t < bad_pos + W;  // the window holds positions t-W+1..t
      // Once the key has left the window the poisoned cache takes the exact slow path (a
      // contiguous copy): equal up to rounding to the clean cache's split-key path.
      ExpectRule(
          a, la, c, lc, [&](int64_t, int64_t h, int64_t) { return sees && h == 1; },
          "step " + std::to_string(t), /*expect_poisoned=*/sees);
      if (!sees) {
        EXPECT_TRUE(AllFinite(a.data(), a.numel())) << t;
      }
    }
    EXPECT_TRUE(poisoned.may_hold_nonfinite());
  }
}

// Gather: a row is poisoned by the keys it gathers, not by the others.
TEST(NonFinite, GatherForwardBothBackends) {
  std::mt19937_64 rng(testing::TestSeed());
  constexpr int64_t B = 1, Hq = 2, Hk = 1, T = 40, Tq = 6, D = 8, K = 5;
  const Tensor<float> q0 = Random(B, Hq, Tq, D, rng), k0 = Random(B, Hk, T, D, rng),
                      v0 = Random(B, Hk, T, D, rng);
  Tensor<int32_t> idx(B, 1, Tq, K);
  for (int64_t i = 0; i < Tq; ++i) {
    for (int64_t n = 0; n < K; ++n) idx.view().row(0, 0, i)[n] = static_cast<int32_t>(i + 3 * n);
  }
  idx.view().row(0, 0, 2)[4] = -1;  // an unused slot
  constexpr int32_t bad_key = 9;    // gathered by rows 0 (0+9), 3 (3+6), 6-: rows i with i%3==0
  for (const Backend backend : {Backend::kAuto, Backend::kReference}) {
    for (const float bad : kBadValues) {
      for (const char which : {'q', 'k', 'v'}) {
        const std::string what = std::string(backend == Backend::kAuto ? "fast " : "ref ") + which;
        GatherOptions o;
        o.backend = backend;
        Tensor<float> q = Copy(q0), k = Copy(k0), v = Copy(v0);
        if (which == 'q') q.view().row(0, 1, 4)[0] = bad;
        if (which == 'k') k.view().row(0, 0, bad_key)[1] = bad;
        if (which == 'v') v.view().row(0, 0, bad_key)[1] = bad;
        Tensor<float> out(B, Hq, Tq, D), lse(B, Hq, Tq, 1), clean(B, Hq, Tq, D),
            clean_lse(B, Hq, Tq, 1);
        GatherForward(TensorView<const float>(q.view()), k.view(), v.view(),
                      TensorView<const int32_t>(idx.view()), out.view(), o, lse.view());
        GatherForward(TensorView<const float>(q0.view()), k0.view(), v0.view(),
                      TensorView<const int32_t>(idx.view()), clean.view(), o, clean_lse.view());
        ExpectRule(
            out, lse, clean, clean_lse,
            [&](int64_t, int64_t h, int64_t t) {
              if (which == 'q') return h == 1 && t == 4;
              return t % 3 == 0;  // rows whose list holds key 9
            },
            what);
      }
    }
  }
}

// Linear attention (every feature map, both backends): causal rows from the bad key on, the
// state stays NaN for the next call; a bad query row poisons only itself.
TEST(NonFinite, LinearForwardBothBackendsAndState) {
  std::mt19937_64 rng(testing::TestSeed());
  constexpr int64_t B = 1, H = 2, T = 20, D = 8;
  const Tensor<float> q0 = Random(B, H, T, D, rng), k0 = Random(B, H, T, D, rng),
                      v0 = Random(B, H, T, D, rng);
  const PerformerFeatures feats(16, D, RandomFeatureKind::kOrthogonal, 5);
  for (const Backend backend : {Backend::kAuto, Backend::kReference}) {
    for (const FeatureMap f :
         {FeatureMap::kFavorPositive, FeatureMap::kEluPlusOne, FeatureMap::kRelu}) {
      for (const float bad : kBadValues) {
        for (const char which : {'q', 'k', 'v'}) {
          const std::string what = std::string(backend == Backend::kAuto ? "fast " : "ref ") +
                                   std::to_string(static_cast<int>(f)) + " " + which;
          LinearOptions o;
          o.backend = backend;
          o.feature_map = f;
          o.features = &feats;
          o.chunk_size = 8;
          const int64_t m = LinearNumFeatures(o, D);
          Tensor<float> q = Copy(q0), k = Copy(k0), v = Copy(v0);
          if (which == 'q') q.view().row(0, 1, 6)[0] = bad;
          if (which == 'k') k.view().row(0, 1, 6)[0] = bad;
          if (which == 'v') v.view().row(0, 1, 6)[0] = bad;
          LinearState st(B, H, m, D), st_clean(B, H, m, D);
          Tensor<float> out(B, H, T, D), clean(B, H, T, D), none;
          LinearForward(q.view(), k.view(), v.view(), out.view(), o, &st);
          LinearForward(q0.view(), k0.view(), v0.view(), clean.view(), o, &st_clean);
          ExpectRule(
              out, none, clean, none,
              [&](int64_t, int64_t h, int64_t t) {
                return h == 1 && (which == 'q' ? t == 6 : t >= 6);
              },
              what);
          // The next call: head 1 stays NaN after a bad key / value, head 0 is unaffected.
          LinearForward(q0.view(), k0.view(), v0.view(), out.view(), o, &st);
          LinearForward(q0.view(), k0.view(), v0.view(), clean.view(), o, &st_clean);
          ExpectRule(
              out, none, clean, none,
              [&](int64_t, int64_t h, int64_t) { return which != 'q' && h == 1; },
              what + " (next call)", /*expect_poisoned=*/which != 'q');
          if (which == 'q') continue;
          // Bidirectional: every row of the head.
          LinearOptions bi = o;
          bi.causal = false;
          LinearForward(q.view(), k.view(), v.view(), out.view(), bi);
          LinearForward(q0.view(), k0.view(), v0.view(), clean.view(), bi);
          ExpectRule(
              out, none, clean, none, [&](int64_t, int64_t h, int64_t) { return h == 1; },
              what + " bidirectional");
        }
      }
    }
  }
}

// The recurrent engine (chunked and token by token, both backends): value heads that read the
// bad q/k head, from the bad token on; the state stays NaN.
TEST(NonFinite, GatedDeltaForwardBothBackendsAndState) {
  std::mt19937_64 rng(testing::TestSeed());
  constexpr int64_t B = 1, Hqk = 2, Hv = 4, T = 20, D = 8;
  const Tensor<float> q0 = Random(B, Hqk, T, D, rng), k0 = Random(B, Hqk, T, D, rng),
                      v0 = Random(B, Hv, T, D, rng);
  Tensor<float> la(B, Hv, T, 1), beta(B, Hv, T, 1);
  std::uniform_real_distribution<float> u01(0.0f, 1.0f);
  for (int64_t i = 0; i < la.numel(); ++i) la.data()[i] = -u01(rng);
  for (int64_t i = 0; i < beta.numel(); ++i) beta.data()[i] = u01(rng);
  for (const Backend backend : {Backend::kAuto, Backend::kReference}) {
    for (const DeltaAlgorithm alg : {DeltaAlgorithm::kChunked, DeltaAlgorithm::kRecurrent}) {
      for (const float bad : kBadValues) {
        for (const char which : {'q', 'k', 'v'}) {
          const std::string what = std::string(backend == Backend::kAuto ? "fast " : "ref ") +
                                   (alg == DeltaAlgorithm::kChunked ? "chunked " : "steps ") +
                                   which;
          GatedDeltaOptions o;
          o.backend = backend;
          o.algorithm = alg;
          o.chunk_size = 8;
          Tensor<float> q = Copy(q0), k = Copy(k0), v = Copy(v0);
          if (which == 'q') q.view().row(0, 1, 6)[0] = bad;  // value heads 2, 3
          if (which == 'k') k.view().row(0, 1, 6)[0] = bad;
          if (which == 'v') v.view().row(0, 3, 6)[0] = bad;
          Tensor<float> st(B, Hv, D, D), st_clean(B, Hv, D, D);
          Tensor<float> out(B, Hv, T, D), clean(B, Hv, T, D), none;
          GatedDeltaForward(q.view(), k.view(), v.view(), la.view(), beta.view(), out.view(),
                            st.view(), o);
          GatedDeltaForward(q0.view(), k0.view(), v0.view(), la.view(), beta.view(), clean.view(),
                            st_clean.view(), o);
          auto heads = [&](int64_t h) { return which == 'v' ? h == 3 : h >= 2; };
          ExpectRule(
              out, none, clean, none,
              [&](int64_t, int64_t h, int64_t t) {
                return heads(h) && (which == 'q' ? t == 6 : t >= 6);
              },
              what);
          for (int64_t h = 0; h < Hv; ++h) {
            const bool nan_state = which != 'q' && heads(h);
            const float* s = st.view().row(0, h, 0);
            EXPECT_EQ(AllNaN(s, D * D), nan_state) << what << " state head " << h;
            if (!nan_state) {
              EXPECT_TRUE(AllFinite(s, D * D)) << what << " state head " << h;
            }
          }
        }
      }
    }
  }
}

// Backward passes take the forward's NaN rows (LSE NaN) without throwing, and the NaN reaches the
// poisoned query row's gradient while the other query rows' gradients stay finite.
TEST(NonFinite, BackwardPassesCarryTheNaN) {
  std::mt19937_64 rng(testing::TestSeed());
  constexpr int64_t B = 1, H = 2, T = 12, D = 8, bad_row = 5;
  Tensor<float> q = Random(B, H, T, D, rng), k = Random(B, H, T, D, rng),
                v = Random(B, H, T, D, rng), dout = Random(B, H, T, D, rng);
  q.view().row(0, 1, bad_row)[3] = kNaN;
  auto check_dq = [&](const Tensor<float>& dq, const std::string& what) {
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t t = 0; t < T; ++t) {
        const float* r = dq.view().row(0, h, t);
        if (h == 1 && t == bad_row) {
          EXPECT_FALSE(AllFinite(r, D)) << what << ": the poisoned row's dq is finite";
        } else {
          EXPECT_TRUE(AllFinite(r, D)) << what << ": dq row " << h << "," << t;
        }
      }
    }
  };
  const MaskPtr causal = CausalMask();
  for (const Backend backend : {Backend::kAuto, Backend::kReference}) {
    const std::string name = backend == Backend::kAuto ? "fast" : "ref";
    {
      DenseOptions o;
      o.backend = backend;
      o.mask = causal.get();
      Tensor<float> out(B, H, T, D), lse(B, H, T, 1), dq(B, H, T, D), dk(B, H, T, D),
          dv(B, H, T, D);
      DenseForward(TensorView<const float>(q.view()), k.view(), v.view(), out.view(), o,
                   lse.view());
      DenseGrads g{dq.view(), dk.view(), dv.view()};
      if (backend == Backend::kAuto) {
        DenseBackward(q.view(), k.view(), v.view(), out.view(), lse.view(), dout.view(), g, o);
      } else {
        ref::DenseBackward(q.view(), k.view(), v.view(), out.view(), lse.view(), dout.view(), g, o);
      }
      check_dq(dq, name + " dense");
    }
    {
      GatherOptions o;
      o.backend = backend;
      Tensor<int32_t> idx(B, 1, T, 3);
      for (int64_t t = 0; t < T; ++t) {
        for (int64_t n = 0; n < 3; ++n)
          idx.view().row(0, 0, t)[n] = static_cast<int32_t>((t + n) % T);
      }
      Tensor<float> out(B, H, T, D), lse(B, H, T, 1), dq(B, H, T, D), dk(B, H, T, D),
          dv(B, H, T, D);
      GatherForward(TensorView<const float>(q.view()), k.view(), v.view(),
                    TensorView<const int32_t>(idx.view()), out.view(), o, lse.view());
      GatherGrads g{dq.view(), dk.view(), dv.view()};
      if (backend == Backend::kAuto) {
        GatherBackward(q.view(), k.view(), v.view(), idx.view(), out.view(), lse.view(),
                       dout.view(), g, o);
      } else {
        ref::GatherBackward(q.view(), k.view(), v.view(), idx.view(), out.view(), lse.view(),
                            dout.view(), g, o);
      }
      check_dq(dq, name + " gather");
    }
    {
      LinearOptions o;
      o.backend = backend;
      o.feature_map = FeatureMap::kEluPlusOne;
      o.chunk_size = 4;
      Tensor<float> dq(B, H, T, D), dk(B, H, T, D), dv(B, H, T, D);
      if (backend == Backend::kAuto) {
        LinearBackward(q.view(), k.view(), v.view(), dout.view(), dq.view(), dk.view(), dv.view(),
                       o);
      } else {
        ref::LinearBackward(q.view(), k.view(), v.view(), dout.view(), dq.view(), dk.view(),
                            dv.view(), o);
      }
      check_dq(dq, name + " linear");
    }
    {
      GatedDeltaOptions o;
      o.backend = backend;
      o.chunk_size = 4;
      Tensor<float> la(B, H, T, 1), beta(B, H, T, 1), dq(B, H, T, D), dk(B, H, T, D),
          dv(B, H, T, D), dla(B, H, T, 1), dbeta(B, H, T, 1);
      for (int64_t i = 0; i < la.numel(); ++i) la.data()[i] = -0.1f, beta.data()[i] = 0.5f;
      GatedDeltaGrads g;
      g.dq = dq.view();
      g.dk = dk.view();
      g.dv = dv.view();
      g.dlog_alpha = dla.view();
      g.dbeta = dbeta.view();
      if (backend == Backend::kAuto) {
        GatedDeltaBackward(q.view(), k.view(), v.view(), la.view(), beta.view(), {}, dout.view(),
                           {}, g, o);
      } else {
        ref::GatedDeltaBackward(q.view(), k.view(), v.view(), la.view(), beta.view(), {},
                                dout.view(), {}, g, o);
      }
      check_dq(dq, name + " recurrent");
    }
  }
}

}  // namespace
}  // namespace attnkit

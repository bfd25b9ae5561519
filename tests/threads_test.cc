// Concurrency: the kernels called from several application threads at once (each call itself
// running OpenMP threads) give exactly the answer of one call alone; a user-defined mask is called
// from every kernel thread. The ThreadSanitizer job of scripts/test.sh runs this suite together
// with the other threaded suites (dense_kernel_test's shared packed-tile cache, split-KV decode,
// the scratch pool).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/kv_cache.h"
#include "attnkit/kernels/linear.h"
#include "attnkit/kernels/recurrent.h"
#include "attnkit/masks/mask.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::FillNormal;
using testing::RelMaxError;

bool BitEqual(const Tensor<float>& a, const Tensor<float>& b) {
  return a.numel() == b.numel() &&
         std::memcmp(a.data(), b.data(), static_cast<size_t>(a.numel()) * sizeof(float)) == 0;
}

// Runs work(i) on `n` application threads at once.
template <typename F>
void OnThreads(int n, F work) {
  std::vector<std::thread> threads;
  threads.reserve(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) threads.emplace_back([&work, i] { work(i); });
  for (auto& t : threads) t.join();
}

constexpr int kCallers = 4;

TEST(Threads, ConcurrentPrefillCallsShareThePoolAndAgree) {
  std::mt19937_64 rng(testing::TestSeed());
  // Several query blocks per head, so the packed K tiles go through the shared per-call cache.
  const int64_t s = testing::Sanitized() ? 200 : 300;
  Tensor<float> q(2, 4, s, 40), k(2, 2, s, 40), v(2, 2, s, 40);
  FillNormal(q, rng);
  FillNormal(k, rng);
  FillNormal(v, rng);
  const auto causal = CausalMask();
  DenseOptions opt;
  opt.mask = causal.get();
  opt.num_threads = 2;
  Tensor<float> alone(2, 4, s, 40);
  DenseForward(q.view(), k.view(), v.view(), alone.view(), opt);
  std::vector<Tensor<float>> outs;
  for (int i = 0; i < kCallers; ++i) outs.emplace_back(2, 4, s, 40);
  OnThreads(kCallers, [&](int i) {
    DenseForward(q.view(), k.view(), v.view(), outs[static_cast<size_t>(i)].view(), opt);
  });
  for (const auto& o : outs) EXPECT_TRUE(BitEqual(o, alone));
}

TEST(Threads, ConcurrentSplitKvDecodeAgrees) {
  std::mt19937_64 rng(testing::TestSeed() + 1);
  const int64_t ctx = 700, hq = 8, hkv = 2, d = 64;
  Tensor<float> k(1, hkv, ctx, d), v(1, hkv, ctx, d), q(1, hq, 1, d);
  FillNormal(k, rng);
  FillNormal(v, rng);
  FillNormal(q, rng);
  KvCache<float> cache(1, hkv, d, d, ctx, 0, ctx);
  cache.Append(k.view(), v.view());
  DenseOptions opt;
  opt.num_threads = 2;
  Tensor<float> alone(1, hq, 1, d);
  DenseDecode(q.view(), cache, alone.view(), opt);
  std::vector<Tensor<float>> outs;
  for (int i = 0; i < kCallers; ++i) outs.emplace_back(1, hq, 1, d);
  OnThreads(kCallers,
            [&](int i) { DenseDecode(q.view(), cache, outs[static_cast<size_t>(i)].view(), opt); });
  for (const auto& o : outs) EXPECT_TRUE(BitEqual(o, alone));
}

TEST(Threads, ConcurrentLinearAndRecurrentCallsAgree) {
  std::mt19937_64 rng(testing::TestSeed() + 2);
  const int64_t s = 150, h = 2, dk = 32, dv = 24;
  Tensor<float> q(1, h, s, dk), k(1, h, s, dk), v(1, h, s, dv), beta(1, h, s, 1),
      log_alpha(1, h, s, 1);
  FillNormal(q, rng);
  FillNormal(k, rng);
  FillNormal(v, rng);
  std::uniform_real_distribution<float> unit(0.0f, 1.0f);
  for (int64_t i = 0; i < beta.numel(); ++i) beta.data()[i] = unit(rng);
  for (int64_t i = 0; i < log_alpha.numel(); ++i) log_alpha.data()[i] = -0.1f * unit(rng);

  LinearOptions lin;
  lin.feature_map = FeatureMap::kEluPlusOne;
  lin.chunk_size = 32;
  lin.num_threads = 2;
  GatedDeltaOptions gd;
  gd.chunk_size = 32;
  gd.algorithm = DeltaAlgorithm::kChunked;
  gd.num_threads = 2;
  Tensor<float> lin_alone(1, h, s, dv), gd_alone(1, h, s, dv);
  LinearForward(q.view(), k.view(), v.view(), lin_alone.view(), lin);
  GatedDeltaForward(q.view(), k.view(), v.view(), log_alpha.view(), beta.view(), gd_alone.view(),
                    {}, gd);
  std::vector<Tensor<float>> outs;
  for (int i = 0; i < kCallers; ++i) outs.emplace_back(1, h, s, dv);
  OnThreads(kCallers, [&](int i) {
    Tensor<float>& o = outs[static_cast<size_t>(i)];
    if (i % 2 == 0) {
      LinearForward(q.view(), k.view(), v.view(), o.view(), lin);
    } else {
      GatedDeltaForward(q.view(), k.view(), v.view(), log_alpha.view(), beta.view(), o.view(), {},
                        gd);
    }
  });
  for (int i = 0; i < kCallers; ++i) {
    EXPECT_TRUE(BitEqual(outs[static_cast<size_t>(i)], i % 2 == 0 ? lin_alone : gd_alone)) << i;
  }
}

// A mask written by a user: only Allowed() is overridden, so the kernel's threads all go through
// the base class's Classify / FillTile / KeyTiles, which call it concurrently. Masks must be safe
// to call from several threads at once (mask.h says so); this one is, being immutable.
class EveryThirdKeyMask : public Mask {
 public:
  bool Allowed(int64_t q, int64_t k) const override { return k <= q && (q - k) % 3 != 1; }
  std::string Describe() const override { return "every-third-key"; }
};

TEST(Threads, UserDefinedMaskUnderEveryThreadCount) {
  std::mt19937_64 rng(testing::TestSeed() + 3);
  const int64_t s = 260;
  Tensor<float> q(1, 3, s, 32), k(1, 3, s, 32), v(1, 3, s, 32), want(1, 3, s, 32);
  FillNormal(q, rng);
  FillNormal(k, rng);
  FillNormal(v, rng);
  const EveryThirdKeyMask mask;
  DenseOptions opt;
  opt.mask = &mask;
  opt.backend = Backend::kReference;
  DenseForward(q.view(), k.view(), v.view(), want.view(), opt);
  opt.backend = Backend::kAuto;
  Tensor<float> first(1, 3, s, 32);
  for (int threads : {1, 2, 3, 4}) {
    SCOPED_TRACE(::testing::Message() << threads << " threads");
    opt.num_threads = threads;
    Tensor<float> out(1, 3, s, 32);
    DenseForward(q.view(), k.view(), v.view(), out.view(), opt);
    EXPECT_LT(RelMaxError(out.view(), want.view()), 2e-5);
    if (threads == 1) {
      first = std::move(out);
    } else {
      EXPECT_TRUE(BitEqual(out, first)) << "thread count changed the result";
    }
  }
}

}  // namespace
}  // namespace attnkit

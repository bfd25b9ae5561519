// Static sparse patterns: definitions, tile classification, FillTile, KeyTiles, density, and the
// dense kernel obeying them (vs its reference twin), on fresh random parameters.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "attnkit/kernels/dense.h"
#include "attnkit/masks/sparse.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::Sanitized;

// Every pattern under test, with parameters drawn from rng, for positions [0, n).
std::vector<MaskPtr> RandomPatterns(std::mt19937_64& rng, int64_t n) {
  auto pick = [&](int64_t lo, int64_t hi) {
    return lo + static_cast<int64_t>(rng() % static_cast<uint64_t>(hi - lo + 1));
  };
  std::vector<MaskPtr> m;
  m.push_back(StridedMask(pick(1, 20), 1));
  m.push_back(StridedMask(pick(1, 6), pick(1, 40)));
  const int64_t l = pick(1, 50);
  m.push_back(FixedMask(l, pick(1, l)));
  LongformerOptions lf;
  lf.seqlen = n;
  lf.window = pick(0, 20);
  lf.dilation = pick(1, 5);
  lf.dilated_window = pick(0, 6);
  for (int i = 0, g = static_cast<int>(pick(0, 4)); i < g; ++i)
    lf.globals.push_back(pick(0, n - 1));
  lf.causal = rng() % 2 == 0;
  m.push_back(LongformerMask(lf));
  BigBirdOptions bb;
  bb.seqlen = n;
  bb.block = pick(1, 48);
  bb.window_blocks = pick(0, 2);
  bb.global_blocks = pick(0, 2);
  bb.random_blocks = pick(0, 3);
  bb.seed = rng();
  bb.causal = rng() % 2 == 0;
  m.push_back(BigBirdMask(bb));
  const int64_t bq = pick(1, 40), bk = pick(1, 40);
  const int64_t nqb = (n + bq - 1) / bq, nkb = (n + bk - 1) / bk;
  std::vector<uint8_t> bits(static_cast<size_t>(nqb * nkb));
  for (auto& b : bits) b = rng() % 3 == 0;
  m.push_back(BlockBitmapMask(bq, bk, nqb, nkb, bits, rng() % 2 == 0));
  m.push_back(AndMask(StridedMask(pick(1, 9), pick(1, 9)), CausalWindowMask(pick(1, 100))));
  return m;
}

TEST(SparseMask, DefinitionsMatchTheDocumentedFormulas) {
  std::mt19937_64 rng(testing::TestSeed());
  for (int rep = 0; rep < 5; ++rep) {
    const int64_t s = 1 + static_cast<int64_t>(rng() % 17), b = 1 + static_cast<int64_t>(rng() % 7);
    const int64_t l = 1 + static_cast<int64_t>(rng() % 13), c = 1 + static_cast<int64_t>(rng() % l);
    const auto strided = StridedMask(s, b);
    const auto fixed = FixedMask(l, c);
    for (int64_t q = 0; q < 120; ++q) {
      for (int64_t k = 0; k < 120; ++k) {
        const int64_t d = q / b - k / b;
        const bool st = k <= q && (d < s || d % s == 0);
        ASSERT_EQ(strided->Allowed(q, k), st) << strided->Describe() << " q " << q << " k " << k;
        const bool fx = k <= q && (k / l == q / l || k % l >= l - c);
        ASSERT_EQ(fixed->Allowed(q, k), fx) << fixed->Describe() << " q " << q << " k " << k;
      }
    }
  }
  // Longformer: globals see and are seen by all (non-causal); BigBird windows and globals.
  LongformerOptions lf;
  lf.seqlen = 50;
  lf.window = 2;
  lf.dilation = 4;
  lf.dilated_window = 3;
  lf.globals = {7, 31};
  lf.causal = false;
  const auto lm = LongformerMask(lf);
  for (int64_t q = 0; q < 50; ++q) {
    for (int64_t k = 0; k < 50; ++k) {
      const int64_t d = std::abs(q - k);
      const bool want = d <= 2 || (d <= 12 && d % 4 == 0) || q == 7 || q == 31 || k == 7 || k == 31;
      ASSERT_EQ(lm->Allowed(q, k), want) << "q " << q << " k " << k;
    }
  }
}

TEST(SparseMask, TilesFillAndKeyTilesAgreeWithAllowed) {
  std::mt19937_64 rng(testing::TestSeed() + 1);
  const int reps = Sanitized() ? 3 : 12;
  for (int rep = 0; rep < reps; ++rep) {
    const int64_t n = 50 + static_cast<int64_t>(rng() % 300);
    for (const auto& m : RandomPatterns(rng, n)) {
      SCOPED_TRACE(m->Describe() + " n " + std::to_string(n));
      for (const int64_t tq : {int64_t{1}, int64_t{7}, int64_t{16}, int64_t{64}}) {
        for (const int64_t tk : {int64_t{1}, int64_t{13}, int64_t{32}, int64_t{64}}) {
          const int64_t origin = static_cast<int64_t>(rng() % 5) - 2;  // tiles may start < 0
          for (int64_t q0 = origin; q0 < n + 3; q0 += tq) {
            const int64_t q1 = q0 + tq;
            std::vector<int64_t> tiles;
            m->KeyTiles(q0, q1, origin, n + 3, tk, &tiles);
            ASSERT_TRUE(std::is_sorted(tiles.begin(), tiles.end()));
            size_t next = 0;
            for (int64_t t = 0, k0 = origin; k0 < n + 3; ++t, k0 += tk) {
              const int64_t k1 = std::min(n + 3, k0 + tk);
              int64_t count = 0;
              std::vector<uint8_t> fill(static_cast<size_t>(tq * (k1 - k0)), 7);
              m->FillTile(q0, q1, k0, k1, fill.data());
              for (int64_t q = q0; q < q1; ++q) {
                for (int64_t k = k0; k < k1; ++k) {
                  const bool a = m->Allowed(q, k);
                  count += a;
                  ASSERT_EQ(fill[(q - q0) * (k1 - k0) + (k - k0)], a ? 1 : 0)
                      << "FillTile q " << q << " k " << k;
                }
              }
              const TileKind kind = m->Classify(q0, q1, k0, k1);
              if (kind == TileKind::kEmpty) {
                ASSERT_EQ(count, 0) << "tile " << q0 << "," << k0;
              }
              if (kind == TileKind::kFull) {
                ASSERT_EQ(count, tq * (k1 - k0)) << "tile " << q0 << "," << k0;
              }
              const bool listed = next < tiles.size() && tiles[next] == t;
              if (listed) ++next;
              if (count > 0) {
                ASSERT_TRUE(listed) << "KeyTiles missed tile " << t << " of q " << q0;
                const auto [lo, hi] = m->KeyBounds(q0, q1);
                for (int64_t q = q0; q < q1; ++q) {
                  for (int64_t k = k0; k < k1; ++k) {
                    if (m->Allowed(q, k)) {
                      ASSERT_TRUE(k >= lo && k < hi) << "KeyBounds";
                    }
                  }
                }
              }
            }
          }
        }
      }
    }
  }
}

TEST(SparseMask, BlockAlignedPatternsHaveNoPartialTilesOffTheDiagonal) {
  // With pattern blocks equal to the kernel's tiles, only diagonal tiles are partial: the point
  // of the block structure is that the kernel runs every other visited tile unchecked.
  BigBirdOptions bb;
  bb.seqlen = 4096;
  bb.block = 64;
  bb.random_blocks = 3;
  bb.seed = testing::TestSeed();
  for (const auto& m : {StridedMask(8, 64), BigBirdMask(bb)}) {
    for (int64_t q0 = 0; q0 < 4096; q0 += 64) {
      for (int64_t k0 = 0; k0 < q0; k0 += 64) {
        ASSERT_NE(m->Classify(q0, q0 + 64, k0, k0 + 64), TileKind::kPartial) << m->Describe();
      }
    }
  }
}

TEST(SparseMask, DensityIsTheExactPairCount) {
  std::mt19937_64 rng(testing::TestSeed() + 2);
  const int64_t n = 200 + static_cast<int64_t>(rng() % 200);
  for (const auto& m : RandomPatterns(rng, n)) {
    for (const int64_t sq : {n, int64_t{37}}) {
      int64_t count = 0;
      for (int64_t i = 0; i < sq; ++i) {
        for (int64_t j = 0; j < n; ++j) count += m->Allowed(i + n - sq, j);
      }
      EXPECT_NEAR(MaskDensity(m.get(), sq, n), static_cast<double>(count) / double(sq * n), 1e-12)
          << m->Describe();
    }
  }
}

TEST(SparseMask, BigBirdIsReproducibleFromItsSeed) {
  BigBirdOptions o;
  o.seqlen = 2048;
  o.block = 32;
  o.random_blocks = 3;
  o.seed = testing::TestSeed();
  const auto a = BigBirdMask(o), b = BigBirdMask(o);
  o.seed += 1;
  const auto c = BigBirdMask(o);
  int64_t differ = 0, per_row_random = 0;
  for (int64_t q = 0; q < 2048; q += 32) {
    for (int64_t k = 0; k < 2048; k += 32) {
      ASSERT_EQ(a->Allowed(q + 31, k), b->Allowed(q + 31, k));
      differ += a->Allowed(q + 31, k) != c->Allowed(q + 31, k);
    }
  }
  EXPECT_GT(differ, 0) << "a different seed must draw different random blocks";
  // Each causal query block past the window and global blocks gets exactly r random key blocks.
  const int64_t qb = 40;
  for (int64_t kb = 1; kb < qb - 1; ++kb) per_row_random += a->Allowed(qb * 32, kb * 32);
  EXPECT_EQ(per_row_random, 3);
}

// The dense kernel with each pattern (and GQA, causal and window combinations) equals its
// reference twin under the same mask, and the tile counters add up.
TEST(SparseMask, DenseKernelObeysPatterns) {
  std::mt19937_64 rng(testing::TestSeed() + 3);
  const int64_t n = Sanitized() ? 150 : 300 + static_cast<int64_t>(rng() % 100);
  const int64_t hq = 4, hkv = 2, d = 32;
  Tensor<float> q(1, hq, n, d), k(1, hkv, n, d), v(1, hkv, n, d);
  testing::FillNormal(q, rng);
  testing::FillNormal(k, rng);
  testing::FillNormal(v, rng);
  auto masks = RandomPatterns(rng, n);
  masks.push_back(AndMask(masks[3], CausalMask()));
  for (const auto& m : masks) {
    SCOPED_TRACE(m->Describe());
    Tensor<float> o(1, hq, n, d), r(1, hq, n, d);
    DenseStats stats;
    DenseOptions opt;
    opt.mask = m.get();
    opt.stats = &stats;
    DenseForward(q.view(), k.view(), v.view(), o.view(), opt);
    ref::DenseForward(q.view(), k.view(), v.view(), r.view(), opt);
    EXPECT_LT(testing::RelMaxError(o.view(), r.view()), 2e-5 * (1 + std::log2(double(n))));
    EXPECT_EQ(stats.tiles_skipped + stats.tiles_full + stats.tiles_partial, stats.tiles_total);
  }
}

TEST(SparseMask, BadInputNamesTheArgument) {
  auto expect_error = [](auto fn, const std::string& word) {
    try {
      fn();
      ADD_FAILURE() << "expected attnkit::Error mentioning " << word;
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(word), std::string::npos) << e.what();
    }
  };
  expect_error([] { StridedMask(0); }, "stride");
  expect_error([] { StridedMask(-3); }, "stride");
  expect_error([] { StridedMask(4, 0); }, "block");
  expect_error([] { FixedMask(0, 1); }, "block");
  expect_error([] { FixedMask(8, 9); }, "summary");
  expect_error([] { FixedMask(8, 0); }, "summary");
  LongformerOptions lf;
  lf.seqlen = 10;
  lf.window = -1;
  expect_error([&] { LongformerMask(lf); }, "window");
  lf.window = 2;
  lf.globals = {3, 10};
  expect_error([&] { LongformerMask(lf); }, "globals[1]");
  lf.globals = {-1};
  expect_error([&] { LongformerMask(lf); }, "globals[0]");
  lf.globals = {};
  lf.dilation = 0;
  expect_error([&] { LongformerMask(lf); }, "dilation");
  BigBirdOptions bb;
  bb.seqlen = 100;
  bb.block = 0;
  expect_error([&] { BigBirdMask(bb); }, "block");
  bb.block = 8;
  bb.random_blocks = -1;
  expect_error([&] { BigBirdMask(bb); }, "random_blocks");
  bb.random_blocks = 1;
  bb.window_blocks = -2;
  expect_error([&] { BigBirdMask(bb); }, "window_blocks");
  expect_error([] { BlockBitmapMask(4, 4, 3, 3, std::vector<uint8_t>(8)); }, "bitmap");
  expect_error([] { BlockBitmapMask(0, 4, 3, 3, std::vector<uint8_t>(9)); }, "block_q");
}

}  // namespace
}  // namespace attnkit

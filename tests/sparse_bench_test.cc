// The sparse measurement library: the retrieval probe is exact (retrieval happens exactly where
// the mask or DSA's selection makes the planted key visible) and reproducible; the benchmark
// routine returns consistent rows on a tiny configuration (no speed assertions).
#include <gtest/gtest.h>

#include "attnkit/bench/sparse.h"
#include "test_util.h"

namespace attnkit {
namespace {

TEST(SparseProbe, RetrievedExactlyWhereVisible) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  for (const double noise : {0.0, 3.0}) {
    bench::ProbeConfig c;
    const bool sanitized = std::getenv("ATTNKIT_SANITIZED") != nullptr;
    c.seqlen = (sanitized ? 300 : 700) + static_cast<int64_t>(seed % 300);
    c.head_dim = 32;
    c.window = 50 + static_cast<int64_t>(seed % 40);
    c.top_k = 24;
    c.indexer_noise = noise;
    c.seed = seed;
    c.distances = {1,           7, c.window - 1, c.window, c.window + 1, c.seqlen / 3, c.seqlen / 2,
                   c.seqlen - 1};
    const auto res = bench::RetrievalProbe(c);
    ASSERT_EQ(res.rows.size(), c.distances.size() * res.methods.size());
    int dsa_misses = 0;
    for (const auto& r : res.rows) {
      SCOPED_TRACE(r.method + " distance " + std::to_string(r.distance));
      EXPECT_EQ(r.retrieved, r.visible) << "cosine " << r.cosine;
      if (r.method == "causal") {
        EXPECT_TRUE(r.retrieved);
      }
      if (r.method == "window") {
        EXPECT_EQ(r.retrieved, r.distance < c.window);
      }
      if (r.method == "dsa") {
        EXPECT_EQ(r.visible, r.indexer_rank < c.top_k) << "rank " << r.indexer_rank;
        dsa_misses += !r.visible;
      }
    }
    if (noise == 0.0) {
      EXPECT_EQ(dsa_misses, 0) << "a clean indexer ranks the planted key first";
    }
    // Reproducible: the same configuration gives the same numbers.
    const auto again = bench::RetrievalProbe(c);
    for (size_t i = 0; i < res.rows.size(); ++i) {
      ASSERT_EQ(res.rows[i].cosine, again.rows[i].cosine);
      ASSERT_EQ(res.rows[i].indexer_rank, again.rows[i].indexer_rank);
    }
  }
}

TEST(SparseProbe, BadInputNamesTheArgument) {
  bench::ProbeConfig c;
  c.seqlen = 100;
  c.distances = {100};
  EXPECT_THROW(bench::RetrievalProbe(c), Error);
  c.distances = {};
  c.window = 0;
  EXPECT_THROW(bench::RetrievalProbe(c), Error);
  c.window = 10;
  c.patterns = {"nonsense"};
  EXPECT_THROW(bench::RetrievalProbe(c), Error);
}

TEST(SparseBench, TinyRunIsConsistent) {
  bench::SparseBenchConfig c;
  c.seqlens = {333};
  c.head_dim = 16;
  c.repeats = 1;
  c.top_k = 40;
  c.index_dim = 8;
  c.seed = testing::TestSeed();
  const auto rows = bench::BenchSparse(c);
  ASSERT_EQ(rows.size(), 2 + c.patterns.size());
  EXPECT_EQ(rows.front().pattern, "causal");
  EXPECT_EQ(rows.back().pattern, "dsa");
  for (const auto& r : rows) {
    SCOPED_TRACE(r.pattern);
    EXPECT_GT(r.density, 0.0);
    EXPECT_LE(r.density, r.causal_density + 1e-12);  // every pattern here is causal
    EXPECT_GT(r.median_ms, 0.0);
    EXPECT_TRUE(std::isfinite(r.efficiency));
    if (r.pattern != "dsa") {
      EXPECT_EQ(r.tiles.tiles_total,
                r.tiles.tiles_skipped + r.tiles.tiles_full + r.tiles.tiles_partial);
    }
  }
  // DSA density: query i selects min(top_k, i + 1) keys.
  double pairs = 0;
  for (int64_t i = 0; i < 333; ++i) pairs += std::min<int64_t>(40, i + 1);
  EXPECT_NEAR(rows.back().density, pairs / (333.0 * 333.0), 1e-12);
}

// The real-shape comparisons at toy sizes: every time measured, the FLOP counts by their
// formulas (decode: 2·h·n·(dk + dv) dense; prefill: causal pairs, and min(top_k, t + 1) per query).
TEST(SparseBench, MlaDsaDecodeAndPrefillAtToySizes) {
  bench::MlaDsaDecodeConfig d;
  d.contexts = {100, 300};
  d.num_heads = 4;
  d.kv_lora_rank = 16;
  d.rope_dim = 8;
  d.index_heads = 2;
  d.index_dim = 8;
  d.top_k = 50;
  d.repeats = 1;
  d.seed = testing::TestSeed();
  const auto dec = bench::BenchMlaDsaDecode(d);
  ASSERT_EQ(dec.size(), 2u);
  for (const auto& r : dec) {
    EXPECT_GT(r.dense_ms, 0.0);
    EXPECT_GT(r.dsa_ms, 0.0);
    EXPECT_NEAR(r.dsa_ms, r.indexer_ms + r.attention_ms, 1e-9 + 1e-9 * r.dsa_ms);
    EXPECT_DOUBLE_EQ(r.dense_flops, 2.0 * 4 * r.context * (24 + 16));
    EXPECT_DOUBLE_EQ(r.speedup, r.dense_ms / r.dsa_ms);
  }
  bench::MlaDsaPrefillConfig p;
  p.contexts = {70};
  p.num_heads = 8;
  p.index_heads = 4;
  p.head_divisor = 4;
  p.kv_lora_rank = 16;
  p.rope_dim = 8;
  p.index_dim = 8;
  p.top_k = 20;
  p.repeats = 1;
  p.seed = testing::TestSeed();
  const auto pre = bench::BenchMlaDsaPrefill(p);
  ASSERT_EQ(pre.size(), 1u);
  EXPECT_EQ(pre[0].num_heads, 2);
  EXPECT_EQ(pre[0].index_heads, 1);
  EXPECT_GT(pre[0].dense_ms, 0.0);
  EXPECT_GT(pre[0].dsa_ms, 0.0);
  double sel = 0;
  for (int64_t t = 0; t < 70; ++t) sel += std::min<int64_t>(20, t + 1);
  EXPECT_DOUBLE_EQ(pre[0].dense_flops, 2.0 * 2 * (70.0 * 71 / 2) * 40);
  EXPECT_DOUBLE_EQ(pre[0].dsa_flops, 2.0 * 1 * (70.0 * 71 / 2) * 8 + 2.0 * 2 * sel * 40);
  p.head_divisor = 0;
  EXPECT_THROW(bench::BenchMlaDsaPrefill(p), Error);
}

}  // namespace
}  // namespace attnkit

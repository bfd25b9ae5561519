// MLA: naive path == absorbed path (prefill and decode, several ranks and head counts),
// prefill + decode == full pass, latent cache size == formula, bad input.
#include "attnkit/layers/mla.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "layer_test_util.h"
#include "test_util.h"

namespace attnkit {
namespace {

using testing::RandomHidden;
using testing::RelMaxError;

MlaConfig Make(int64_t hidden, int64_t heads, int64_t q_lora, int64_t kv_lora, int64_t nope,
               int64_t rope, int64_t v) {
  MlaConfig c;
  c.hidden = hidden;
  c.num_heads = heads;
  c.q_lora_rank = q_lora;
  c.kv_lora_rank = kv_lora;
  c.qk_nope_head_dim = nope;
  c.qk_rope_head_dim = rope;
  c.v_head_dim = v;
  c.max_tokens = 48;
  return c;
}

std::vector<MlaConfig> Cases() {
  std::vector<MlaConfig> cs = {
      Make(40, 1, 24, 16, 8, 4, 8),     // one head
      Make(64, 3, 0, 32, 16, 8, 24),    // no q LoRA (V2-Lite style), v != nope
      Make(48, 8, 32, 20, 12, 6, 12),   // awkward ranks
      Make(96, 16, 48, 64, 32, 16, 32)  // DeepSeek-V3 proportions, shrunk
  };
  cs[2].rope.layout = RopeLayout::kInterleaved;
  cs[3].batch = 2;
  cs[3].rope.theta = 1e4f;
  return cs;
}

// Same math, different association order (W_uk applied to q instead of k): f32 rounding only.
constexpr double kPathTol = 2e-4;

TEST(Mla, NaiveEqualsAbsorbed) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const int64_t total = 21;
  for (MlaConfig c : Cases()) {
    SCOPED_TRACE(c.Describe());
    const MlaWeights w = MlaWeights::Random(c, seed);
    const Tensor<float> x = RandomHidden(c.batch, total, c.hidden, seed + 7);
    c.path = MlaPath::kNaive;
    MlaBlock naive(c, w);
    c.path = MlaPath::kAbsorbed;
    MlaBlock absorbed(c, w);
    const auto chunks = PrefillThenDecodeChunks(9, total);
    const Tensor<float> a = ForwardInChunks(naive, x, chunks);
    const Tensor<float> b = ForwardInChunks(absorbed, x, chunks);
    EXPECT_LT(RelMaxError(b.view(), a.view()), kPathTol);
    EXPECT_EQ(naive.latent_cache(), absorbed.latent_cache());  // the cache is path-independent
  }
}

TEST(Mla, PrefillThenDecodeEqualsFullPass) {
  const uint64_t seed = testing::TestSeed();
  SCOPED_TRACE(::testing::Message() << "seed " << seed);
  const int64_t total = 19;
  for (MlaConfig c : Cases()) {
    SCOPED_TRACE(c.Describe());
    const MlaWeights w = MlaWeights::Random(c, seed);
    const Tensor<float> x = RandomHidden(c.batch, total, c.hidden, seed + 3);
    MlaConfig ref = c;
    ref.backend = Backend::kReference;
    ref.path = MlaPath::kNaive;
    MlaBlock full(ref, w);
    const Tensor<float> want = ForwardInChunks(full, x, {total});
    for (MlaPath path : {MlaPath::kNaive, MlaPath::kAbsorbed}) {
      c.path = path;
      MlaBlock inc(c, w);
      const Tensor<float> got = ForwardInChunks(inc, x, PrefillThenDecodeChunks(5, total));
      EXPECT_LT(RelMaxError(got.view(), want.view()), kPathTol) << MlaPathName(path);
      MlaBlock chunked(c, w);
      const Tensor<float> got2 = ForwardInChunks(chunked, x, {4, 1, 9, total - 14});
      EXPECT_LT(RelMaxError(got2.view(), want.view()), kPathTol) << MlaPathName(path);
    }
  }
}

TEST(Mla, CacheSizeMatchesFormula) {
  MlaConfig v3 = Make(7168, 128, 1536, 512, 128, 64, 128);
  EXPECT_EQ(MlaCacheBytesPerToken(v3), (512 + 64) * 4);
  for (MlaConfig c : Cases()) {
    MlaBlock blk(c, MlaWeights::Random(c, 1));
    EXPECT_EQ(blk.CacheBytes(), static_cast<size_t>(c.batch * c.max_tokens *
                                                    (c.kv_lora_rank + c.qk_rope_head_dim) * 4));
    EXPECT_EQ(MlaBlock::NaiveScratchBytes(c, 10),
              static_cast<double>(c.batch) * 10 * c.num_heads *
                  (c.qk_nope_head_dim + c.qk_rope_head_dim + c.v_head_dim) * 4);
  }
}

void ExpectErrorNaming(const MlaConfig& c, const MlaWeights& w, const std::string& name) {
  try {
    MlaBlock blk(c, w);
    ADD_FAILURE() << "no error for " << name;
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(name), std::string::npos) << e.what();
  }
}

TEST(Mla, BadInput) {
  MlaConfig c = Cases()[2];
  const MlaWeights w = MlaWeights::Random(c, 3);
  MlaWeights bad = w;
  bad.w_uk = Matrix(c.kv_lora_rank, c.num_heads * c.v_head_dim + 1);
  ExpectErrorNaming(c, bad, "w_uk");
  bad = w;
  bad.kv_norm.resize(3);
  ExpectErrorNaming(c, bad, "kv_norm");
  bad = w;
  bad.w_kr = Matrix(c.hidden, c.qk_rope_head_dim + 2);
  ExpectErrorNaming(c, bad, "w_kr");
  MlaConfig direct = c;
  direct.q_lora_rank = 0;  // direct query projection: w_dq must be absent, w_uq [hidden, ..]
  ExpectErrorNaming(direct, w, "w_dq");
  MlaConfig frac = c;
  frac.rope.fraction = 0.5f;
  EXPECT_THROW(MlaBlock(frac, w), Error);
  MlaConfig odd = c;
  odd.qk_rope_head_dim = 5;
  EXPECT_THROW(odd.Validate(), Error);

  MlaBlock blk(c, w);
  const Tensor<float> x = RandomHidden(1, c.max_tokens + 1, c.hidden, 9);
  Tensor<float> out(1, 1, c.max_tokens + 1, c.hidden);
  EXPECT_THROW(blk.Forward(x.view(), 0, out.view()), Error);  // past capacity
  const Tensor<float> x1 = RandomHidden(1, 1, c.hidden, 9);
  Tensor<float> o1(1, 1, 1, c.hidden);
  blk.Forward(x1.view(), 0, o1.view());
  EXPECT_THROW(blk.Decode(x1.view(), 5, o1.view()), Error);  // skips
  EXPECT_EQ(blk.tokens_seen(), 1);
}

}  // namespace
}  // namespace attnkit

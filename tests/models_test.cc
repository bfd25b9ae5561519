// Tests of the model layer: the config.json reader on real files, the cost model against
// hand-worked figures for every layer kind, the catalogue (round trip to cards, same figures as
// the shared files) and the errors for malformed, missing or contradictory configs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/masks/mask.h"
#include "attnkit/models/card.h"
#include "attnkit/models/catalogue.h"
#include "attnkit/models/config.h"
#include "attnkit/models/cost.h"
#include "attnkit/models/kinds.h"
#include "test_util.h"

namespace attnkit::models {
namespace {

const std::string kConfigs = std::string(ATTNKIT_TEST_DATA_DIR) + "/configs/";

CostReport CostAt(const ModelConfig& m, int64_t context, CacheDtype dtype = CacheDtype::kBf16,
                  int64_t batch = 1) {
  CostQuery q;
  q.context = context;
  q.cache_dtype = dtype;
  q.batch = batch;
  return Cost(m, q);
}

// A plain decoder config.json as text.
std::string Decoder(int layers, int hidden, int heads, int kv_heads,
                    const std::string& extra = "") {
  std::ostringstream os;
  os << "{\"model_type\": \"llama\", \"num_hidden_layers\": " << layers
     << ", \"hidden_size\": " << hidden << ", \"num_attention_heads\": " << heads
     << ", \"num_key_value_heads\": " << kv_heads << extra << "}";
  return os.str();
}

// Minimal XML well-formedness check for the cards: tags nest and close, entities are escaped.
std::string XmlProblem(const std::string& s) {
  std::vector<std::string> stack;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '&') {
      static const char* kEntities[] = {"&amp;", "&lt;", "&gt;", "&quot;", "&#39;"};
      bool ok = false;
      for (const char* e : kEntities) ok |= s.compare(i, std::strlen(e), e) == 0;
      if (!ok) return "raw & at " + std::to_string(i);
      continue;
    }
    if (s[i] != '<') continue;
    const size_t end = s.find('>', i);
    if (end == std::string::npos) return "unclosed < at " + std::to_string(i);
    std::string tag = s.substr(i + 1, end - i - 1);
    i = end;
    if (tag.empty() || tag[0] == '?' || tag[0] == '!') continue;
    if (std::count(tag.begin(), tag.end(), '"') % 2 != 0) return "odd quotes in <" + tag + ">";
    if (tag[0] == '/') {
      if (stack.empty() || stack.back() != tag.substr(1))
        return "unexpected </" + tag.substr(1) + ">";
      stack.pop_back();
    } else if (tag.back() != '/') {
      stack.push_back(tag.substr(0, tag.find(' ')));
    }
  }
  return stack.empty() ? "" : "unclosed <" + stack.back() + ">";
}

template <typename Fn>
std::string ErrorOf(Fn&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

// ------------------------------------------------------------ hand-worked figures

TEST(ModelCost, HandWorkedTable) {
  struct Row {
    const char* model;
    int64_t context;
    int64_t kv_bytes_per_token;  // bf16
    int64_t kv_bytes_total;      // bf16, batch 1, at context
    int64_t indexer_per_token;
    int64_t state_bytes;  // f32
  };
  const int64_t k128 = 131072;
  const Row rows[] = {
      // Llama 3.1 8B: 32 layers * 2 (K, V) * 8 kv heads * 128 * 2 bytes.
      {"llama-3.1-8b", 32768, 32 * 2 * 8 * 128 * 2, int64_t{32} * 2 * 8 * 128 * 2 * 32768, 0, 0},
      // GPT-2: MHA, 12 layers * 2 * 12 heads * 64 * 2.
      {"gpt2", 1024, 12 * 2 * 12 * 64 * 2, int64_t{12} * 2 * 12 * 64 * 2 * 1024, 0, 0},
      // DeepSeek V3 MLA: 61 * (512 + 64) * 2 = 70,272; no indexer.
      {"deepseek-v3", k128, 61 * (512 + 64) * 2, int64_t{61} * (512 + 64) * 2 * k128, 0, 0},
      // DeepSeek V3.2 DSA: the MLA latent plus 61 * 128 * 2 indexer bytes, apart.
      {"deepseek-v3.2-exp", 4096, 61 * 576 * 2, int64_t{61} * 576 * 2 * 4096, 61 * 128 * 2, 0},
      // GLM-5 DSA: 78 layers, latent 512 + 64, indexer 128.
      {"glm-5", 4096, 78 * 576 * 2, int64_t{78} * 576 * 2 * 4096, 78 * 128 * 2, 0},
      // gpt-oss-20b: 12 sliding (128) + 12 full, 8 kv heads * 64: 2048 B per layer and token.
      {"gpt-oss-20b", k128, 24 * 2048, 12 * 2048 * k128 + 12 * 2048 * 128, 0, 0},
      // Gemma 3 4B: 29 sliding (1024) + 5 full, 4 kv heads * 256: 4096 B per layer and token.
      {"gemma-3-4b", k128, 34 * 4096, 5 * 4096 * k128 + 29 * 4096 * 1024, 0, 0},
      // Gemma 3n E4B: 35 layers, the last 15 reuse earlier KV: 20 * 2 * 2 * 256 * 2.
      {"gemma-3n-e4b", 256, 20 * 2048, 20 * 2048 * 256, 0, 0},
      // Llama 4 Scout: 36 chunked (8192) + 12 full NoPE, 8 kv heads * 128: 4096 B.
      {"llama-4-scout", k128, 48 * 4096, 12 * 4096 * k128 + int64_t{36} * 4096 * 8192, 0, 0},
      // Qwen3.5-27B: 16 full (4 kv heads * 256) + 48 Gated DeltaNet layers, each 48 value heads
      // * 128 * 128 state + conv over 2 * 16 * 128 + 48 * 128 channels * 3 taps, f32.
      {"qwen3.5-27b", 8192, 16 * 2 * 4 * 256 * 2, 16 * 4096 * 8192, 0,
       48 * (48 * 128 * 128 + (2 * 16 * 128 + 48 * 128) * 3) * 4},
      // Qwen3-Next-80B: 12 full (2 kv heads * 256) + 36 GDN with 32 value heads.
      {"qwen3-next-80b-a3b", 8192, 12 * 2 * 2 * 256 * 2, 12 * 2048 * 8192, 0,
       36 * (32 * 128 * 128 + (2 * 16 * 128 + 32 * 128) * 3) * 4},
      // Kimi Linear: 7 MLA (512 + 64) + 20 KDA (32 heads * 128 * 128, conv 3 * 32 * 128 * 3).
      {"kimi-linear-48b-a3b", 1000, 7 * 576 * 2, 7 * 576 * 2 * 1000, 0,
       20 * (32 * 128 * 128 + 3 * 32 * 128 * 3) * 4},
      // MiniMax-Text-01: 10 softmax layers (8 kv heads * 128) + 70 lightning (64 * 128 * 128).
      {"minimax-text-01", 4096, 10 * 2 * 8 * 128 * 2, 10 * 4096 * 4096, 0, 70 * 64 * 128 * 128 * 4},
      // Nemotron-H 56B: 10 attention (8 kv heads * 128) + 54 Mamba-2 (256 heads * 64 * 256
      // state, conv over 256 * 64 + 2 * 8 * 256 channels * 3 taps).
      {"nemotron-h-56b", 8192, 10 * 2 * 8 * 128 * 2, 10 * 4096 * 8192, 0,
       54 * (256 * 64 * 256 + (256 * 64 + 2 * 8 * 256) * 3) * 4},
  };
  for (const Row& row : rows) {
    SCOPED_TRACE(row.model);
    const ModelConfig m = LoadModel(row.model);
    const CostReport r = CostAt(m, row.context);
    EXPECT_EQ(r.kv_bytes_per_token, row.kv_bytes_per_token);
    EXPECT_EQ(r.kv_bytes_total, row.kv_bytes_total);
    EXPECT_EQ(r.indexer_bytes_per_token, row.indexer_per_token);
    EXPECT_EQ(r.state_bytes, row.state_bytes);
    EXPECT_EQ(r.total_bytes, r.kv_bytes_total + r.indexer_bytes_total + r.state_bytes);
  }
}

TEST(ModelCost, MhaAndGqaAt32k) {
  // 32 layers, 32 heads, hidden 4096 (head_dim 128 by default) at 32,768 tokens in bf16.
  const ModelConfig mha = ReadHfConfigText(Decoder(32, 4096, 32, 32));
  const ModelConfig gqa = ReadHfConfigText(Decoder(32, 4096, 32, 8));
  const int64_t mha_bytes = CostAt(mha, 32768).kv_bytes_total;
  const int64_t gqa_bytes = CostAt(gqa, 32768).kv_bytes_total;
  EXPECT_EQ(HumanBytes(static_cast<double>(mha_bytes)), "17.18 GB");
  EXPECT_EQ(HumanBytes(static_cast<double>(gqa_bytes)), "4.29 GB");
  EXPECT_EQ(mha_bytes, 4 * gqa_bytes);
  // Batch and dtype scale linearly.
  EXPECT_EQ(CostAt(gqa, 32768, CacheDtype::kF32, 3).kv_bytes_total, 6 * gqa_bytes);
  EXPECT_EQ(CostAt(gqa, 32768, CacheDtype::kFp8).kv_bytes_total, gqa_bytes / 2);
  // head_dim = hidden / heads was assumed and said so.
  bool noted = false;
  for (const auto& a : mha.assumptions) noted |= a.find("head_dim") != std::string::npos;
  EXPECT_TRUE(noted);
}

TEST(ModelCost, SlidingWindowAndChunkCaps) {
  const ModelConfig m = LoadModel("gpt-oss-120b");
  // Below the window every layer holds every token; above it sliding layers stop growing.
  EXPECT_EQ(CostAt(m, 100).kv_bytes_total, 100 * CostAt(m, 1).kv_bytes_total);
  const int64_t full_layer = 2 * 8 * 64 * 2;
  EXPECT_EQ(CostAt(m, 1000).kv_bytes_total - CostAt(m, 999).kv_bytes_total, 18 * full_layer);
  // Naive "every layer is full" would be twice as large at long context.
  const int64_t naive = 36 * full_layer * 131072;
  EXPECT_NEAR(static_cast<double>(naive) / static_cast<double>(CostAt(m, 131072).kv_bytes_total),
              2.0, 0.01);
  const ModelConfig scout = LoadModel("llama-4-scout");
  for (const auto& c : CostAt(scout, 100000).layers) {
    EXPECT_EQ(c.cached_tokens, c.kind == LayerKind::kChunked ? 8192 : 100000);
  }
}

// Reference twin for the FLOP counts: count visible (query, key) pairs with the mask objects the
// kernels obey, over every query of a prefill and for the last (decode) query.
struct PairCounts {
  double prefill = 0;
  int64_t decode = 0;
};
PairCounts CountPairs(const Mask& mask, int64_t L) {
  PairCounts c;
  for (int64_t q = 0; q < L; ++q) {
    int64_t n = 0;
    for (int64_t k = 0; k <= q; ++k) n += mask.Allowed(q, k);
    c.prefill += static_cast<double>(n);
    if (q == L - 1) c.decode = n;
  }
  return c;
}

TEST(ModelCost, FlopsMatchMaskPairCounts) {
  std::mt19937_64 rng(testing::TestSeed());
  SCOPED_TRACE(testing::TestSeed());
  std::uniform_int_distribution<int64_t> len(1, 700), win(1, 300);
  for (int trial = 0; trial < 4; ++trial) {
    const int64_t L = len(rng), w = win(rng), chunk = win(rng);
    const std::string types =
        "\"layer_types\": [\"full_attention\", \"sliding_attention\", \"chunked_attention\"]";
    const ModelConfig m = ReadHfConfigText(
        Decoder(3, 512, 8, 2,
                ", \"head_dim\": 64, \"sliding_window\": " + std::to_string(w) +
                    ", \"attention_chunk_size\": " + std::to_string(chunk) + ", " + types));
    ASSERT_EQ(m.Pattern(), "FSC");
    const CostReport r = CostAt(m, L);
    const MaskPtr masks[] = {CausalMask(), CausalWindowMask(w), ChunkedLocalMask(chunk)};
    const double per_pair = 2.0 * 8 * (64 + 64);  // QK^T and PV for 8 query heads
    for (int i = 0; i < 3; ++i) {
      SCOPED_TRACE(masks[i]->Describe() + " L=" + std::to_string(L));
      const PairCounts pc = CountPairs(*masks[i], L);
      EXPECT_DOUBLE_EQ(r.layers[i].prefill_flops, per_pair * pc.prefill);
      EXPECT_DOUBLE_EQ(r.layers[i].decode_flops, per_pair * static_cast<double>(pc.decode));
    }
  }
}

TEST(ModelCost, MlaAndDsaFlops) {
  const ModelConfig v3 = LoadModel("deepseek-v3");
  const LayerSpec& l = v3.layers[0];
  const int64_t L = 5000;
  const CostReport r = CostAt(v3, L);
  // Decode, absorbed: per head 2 * (512 + 64) for scores + 2 * 512 for values per key, plus
  // 2 * 512 * (128 + 128) per head to absorb W_UK and W_UV.
  const double decode = 128.0 * (2.0 * (512 + 64 + 512) * L + 2.0 * 512 * (128 + 128));
  EXPECT_DOUBLE_EQ(r.layers[0].decode_flops, decode);
  EXPECT_EQ(l.head_dim_qk, 192);
  // DSA: main attention over at most top-k keys, indexer over all of them.
  const ModelConfig v32 = LoadModel("deepseek-v3.2-exp");
  const CostReport d = CostAt(v32, L);
  const double dsa = 128.0 * (2.0 * (512 + 64 + 512) * 2048 + 2.0 * 512 * 256) + 2.0 * 64 * 128 * L;
  EXPECT_DOUBLE_EQ(d.layers[0].decode_flops, dsa);
  EXPECT_LT(d.prefill_flops, r.prefill_flops);  // top-k 2048 < 5000
}

TEST(ModelCost, RejectsBadQueries) {
  const ModelConfig m = LoadModel("llama-3.1-8b");
  EXPECT_NE(ErrorOf([&] { CostAt(m, 0); }).find("context"), std::string::npos);
  EXPECT_NE(ErrorOf([&] { CostAt(m, 1, CacheDtype::kBf16, 0); }).find("batch"), std::string::npos);
  EXPECT_NE(ErrorOf([&] {
              CostAt(m, int64_t{1} << 50, CacheDtype::kF32, int64_t{1} << 20);
            }).find("overflows"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { ParseCacheDtype("fp4"); }).find("fp4"), std::string::npos);
  // Hand-built descriptions the formulas cannot take.
  ModelConfig bad = m;
  bad.layers[3].kind = LayerKind::kSliding;  // window 0
  EXPECT_NE(ErrorOf([&] { CostAt(bad, 10); }).find("layer 3 (sliding) needs window"),
            std::string::npos);
  bad = m;
  bad.layers[2].kv_source = 5;
  EXPECT_NE(ErrorOf([&] { CostAt(bad, 10); }).find("kv_source"), std::string::npos);
  bad = m;
  bad.layers[0].head_dim_v = -1;
  EXPECT_NE(ErrorOf([&] { CostAt(bad, 10); }).find("negative"), std::string::npos);
  EXPECT_EQ(ParseCacheDtype("bfloat16"), CacheDtype::kBf16);
}

// ------------------------------------------------------------ the shared real configs

TEST(HfReader, SharedConfigsParseWithExpectedKinds) {
  struct Expect {
    const char* file;
    const char* summary;  // read with allow_unknown when `refused` is set
    int64_t mtp;
    const char* refused = nullptr;  // fields the refusal names, or nullptr: read as is
  };
  const Expect table[] = {
      // Held-out families the reader has no rule for: refused, naming what it does not model.
      {"deepseek-v4-flash.json", "43 sliding(128)", 1,
       "compress_ratios, index_topk, index_n_heads, index_head_dim change attention"},
      {"deepseek-v4-pro.json", "61 sliding(128)", 1,
       "compress_ratios, index_topk, index_n_heads, index_head_dim change attention"},
      {"lfm2.5-vl-1.6b.json", "10 mlp + 6 full", 0,
       "text_config.layer_types entry 'conv' changes attention"},
      {"mimo-v2-flash.json", "48 sliding(128)", 0,
       "hybrid_layer_pattern, swa_num_attention_heads, swa_num_key_value_heads, swa_head_dim, "
       "swa_v_head_dim, v_head_dim change attention"},
      {"devstral-small-2-24b-instruct.json", "40 full", 0},
      {"exaone-4.0-32b.json", "48 sliding(4096) + 16 full", 0},
      {"gemma-3-4b-it.json", "29 sliding(1024) + 5 full", 0},
      {"gemma-4-26b-a4b.json", "25 sliding(1024) + 5 full", 0},
      {"glm-5.json", "78 dsa", 1},
      {"kimi-k2.5.json", "61 mla", 0},
      {"llama-3.2-3b-instruct.json", "28 full", 0},
      {"llama-4-scout-17b-16e-instruct.trimmed.json", "36 chunked(8192) + 12 full", 0},
      {"nemotron-3-nano-30b-a3b.json", "23 mamba2 + 23 mlp + 6 full", 0},
      {"nemotron-h-56b-base-8k.json", "54 mamba2 + 54 mlp + 10 full", 0},
      {"phi-3.5-vision-instruct-text.json", "32 sliding(131072)", 0},
      {"qwen2.5-7b-instruct.json", "28 full", 0},
      {"qwen3-32b.json", "64 full", 0},
      {"qwen3.5-27b.json", "48 gated_deltanet + 16 full", 1},
      {"qwen3.5-35b-a3b.json", "30 gated_deltanet + 10 full", 1},
  };
  std::set<std::string> listed;
  for (const Expect& e : table) {
    SCOPED_TRACE(e.file);
    listed.insert(e.file);
    if (e.refused != nullptr) {
      const std::string msg = ErrorOf([&] { ReadHfConfig(kConfigs + e.file); });
      EXPECT_NE(msg.find(e.refused), std::string::npos) << msg;
      EXPECT_NE(msg.find("allow_unknown"), std::string::npos) << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;  // one line
      ReadOptions o;
      o.allow_unknown = true;
      const ModelConfig m = ReadHfConfig(kConfigs + e.file, o);
      EXPECT_EQ(m.Summary(), e.summary);
      EXPECT_EQ(m.mtp_layers, e.mtp);
      EXPECT_TRUE(m.IsEstimate());
      ASSERT_FALSE(m.warnings.empty());
      EXPECT_EQ(m.warnings[0].rfind("estimate:", 0), 0u) << m.warnings[0];
      continue;
    }
    const ModelConfig m = ReadHfConfig(kConfigs + e.file);
    EXPECT_EQ(m.Summary(), e.summary);
    EXPECT_EQ(m.mtp_layers, e.mtp);
    EXPECT_FALSE(m.IsEstimate());
    EXPECT_TRUE(m.warnings.empty()) << m.warnings.front();
  }
  // Every file in the folder is in the table.
  for (const auto& entry : std::filesystem::directory_iterator(kConfigs)) {
    if (entry.path().extension() == ".json") {
      EXPECT_TRUE(listed.count(entry.path().filename().string())) << entry.path();
    }
  }
}

TEST(HfReader, FamilyDetails) {
  // EXAONE 4: global layers skip RoPE when sliding layers exist; pattern LLLG.
  const ModelConfig exaone = ReadHfConfig(kConfigs + "exaone-4.0-32b.json");
  EXPECT_EQ(exaone.Pattern().substr(0, 8), "SSSfSSSf");
  // Llama 4 (trimmed file without no_rope_layers): every 4th layer full and NoPE, reported.
  const ModelConfig scout = ReadHfConfig(kConfigs + "llama-4-scout-17b-16e-instruct.trimmed.json");
  EXPECT_EQ(scout.Pattern().substr(0, 8), "CCCfCCCf");
  bool noted = false;
  for (const auto& a : scout.assumptions) noted |= a.find("no_rope_layers") != std::string::npos;
  EXPECT_TRUE(noted);
  // Gemma 3 text_config relies on Gemma3TextConfig defaults: 8 heads, 4 kv heads, head_dim 256.
  const ModelConfig g3 = ReadHfConfig(kConfigs + "gemma-3-4b-it.json");
  EXPECT_EQ(g3.layers[0].num_heads_kv, 4);
  EXPECT_EQ(g3.layers[0].head_dim_qk, 256);
  EXPECT_EQ(g3.layers[0].query_pre_attn_scalar, 256);
  EXPECT_EQ(g3.Pattern().substr(0, 12), "SSSSSFSSSSSF");
  EXPECT_GE(g3.assumptions.size(), 4u);
  // Gemma 4: full layers have head_dim 512 and 2 KV heads, partial RoPE 0.25.
  const ModelConfig g4 = ReadHfConfig(kConfigs + "gemma-4-26b-a4b.json");
  EXPECT_EQ(g4.layers[5].kind, LayerKind::kFull);
  EXPECT_EQ(g4.layers[5].head_dim_qk, 512);
  EXPECT_EQ(g4.layers[5].num_heads_kv, 2);
  EXPECT_DOUBLE_EQ(g4.layers[5].rope_fraction, 0.25);
  EXPECT_EQ(g4.layers[0].num_heads_kv, 8);
  // Nemotron-H with Infinity in time_step_limit: read, and the replacement reported.
  const ModelConfig nh = ReadHfConfig(kConfigs + "nemotron-h-56b-base-8k.json");
  noted = false;
  for (const auto& a : nh.assumptions) noted |= a.find("Infinity") != std::string::npos;
  EXPECT_TRUE(noted);
  EXPECT_EQ(nh.layers[0].kind, LayerKind::kMamba2);
  EXPECT_EQ(nh.layers[1].kind, LayerKind::kMlp);
  // Qwen2.5 with use_sliding_window false: sliding_window 131072 is ignored.
  EXPECT_EQ(ReadHfConfig(kConfigs + "qwen2.5-7b-instruct.json").Count(LayerKind::kSliding), 0);
  // Qwen3.5: gated attention on full layers, partial RoPE from rope_parameters.
  const ModelConfig q35 = ReadHfConfig(kConfigs + "qwen3.5-27b.json");
  EXPECT_TRUE(q35.layers[3].output_gate);
  EXPECT_DOUBLE_EQ(q35.layers[3].rope_fraction, 0.25);
  // Kimi K2.5: MLA read from the nested text_config.
  const ModelConfig kimi = ReadHfConfig(kConfigs + "kimi-k2.5.json");
  EXPECT_EQ(kimi.layers[0].kv_lora_rank, 512);
  EXPECT_EQ(kimi.layers[0].q_lora_rank, 1536);
  EXPECT_EQ(kimi.name, "kimi-k2.5");
  // gpt-oss: sinks on every layer; SmolLM3: every 4th layer NoPE; Gemma 2: soft-cap 50.
  for (const auto& l : LoadModel("gpt-oss-20b").layers) EXPECT_TRUE(l.sinks);
  EXPECT_EQ(LoadModel("smollm3-3b").Pattern().substr(0, 8), "FFFfFFFf");
  EXPECT_EQ(LoadModel("gemma-2-9b").layers[0].softcap, 50);
  EXPECT_EQ(LoadModel("gemma-2-9b").final_logit_softcap, 30);
  // Gemma 3n: the last 15 layers of E4B share KV with the last unshared layer of their type.
  const ModelConfig g3n = LoadModel("gemma-3n-e4b");
  EXPECT_EQ(g3n.layers[20].kv_source, 18);  // sliding -> layer 18
  EXPECT_EQ(g3n.layers[24].kv_source, 19);  // full -> layer 19
}

// ------------------------------------------------------------ catalogue

TEST(Catalogue, SizeNamesAndSources) {
  const auto& cat = Catalogue();
  EXPECT_GE(cat.size(), 45u);
  std::set<std::string> names;
  std::set<LayerKind> kinds;
  for (const auto& e : cat) {
    EXPECT_TRUE(names.insert(e.name).second) << "duplicate " << e.name;
    EXPECT_FALSE(e.source.empty()) << e.name;
    EXPECT_FALSE(e.hf_id.empty()) << e.name;
    for (const auto& l : LoadModel(e.name).layers) kinds.insert(l.kind);
  }
  EXPECT_EQ(kinds.size(), AllLayerKinds().size());  // every layer kind is represented
  EXPECT_NE(FindModel("Meta-Llama/Llama-3.1-8B"), nullptr);
  const auto mla = ModelsWithKind(LayerKind::kMla);
  EXPECT_NE(std::find(mla.begin(), mla.end(), "deepseek-v3"), mla.end());
  EXPECT_NE(std::find(mla.begin(), mla.end(), "kimi-linear-48b-a3b"), mla.end());
  EXPECT_EQ(std::find(mla.begin(), mla.end(), "llama-3.1-8b"), mla.end());
  const auto sinks = ModelsWhere([](const ModelConfig& m) { return m.layers[0].sinks; });
  EXPECT_EQ(sinks, (std::vector<std::string>{"gpt-oss-20b", "gpt-oss-120b"}));
  EXPECT_NE(ErrorOf([] { LoadModel("lama-3.1-8b"); }).find("llama-3.1-8b"), std::string::npos);
}

TEST(Catalogue, EveryEntryRoundTripsToACard) {
  for (const auto& e : Catalogue()) {
    SCOPED_TRACE(e.name);
    const ModelConfig m = LoadModel(e.name);
    ASSERT_FALSE(m.layers.empty());
    EXPECT_TRUE(m.warnings.empty());
    const std::string svg = ModelCardSvg(m);
    EXPECT_EQ(svg.rfind("<svg", 0), 0u);
    EXPECT_EQ(XmlProblem(svg), "");
    EXPECT_NE(svg.find("</svg>"), std::string::npos);
    size_t cells = 0;
    for (size_t p = svg.find("<title>layer "); p != std::string::npos;
         p = svg.find("<title>layer ", p + 1)) {
      ++cells;
    }
    EXPECT_EQ(cells, m.layers.size());
    EXPECT_NE(svg.find(GroupDigits(CostAt(m, 8192).kv_bytes_per_token)), std::string::npos);
    // The JSON description names every layer.
    const std::string json = ModelConfigToJson(m);
    EXPECT_NE(json.find("\"layers\""), std::string::npos);
  }
}

TEST(Catalogue, SameFiguresAsTheSharedFiles) {
  int checked = 0;
  for (const auto& e : Catalogue()) {
    if (e.test_config.empty()) continue;
    SCOPED_TRACE(e.name);
    const ModelConfig by_name = LoadModel(e.name);
    const ModelConfig by_file = ReadHfConfig(kConfigs + e.test_config);
    EXPECT_EQ(by_name.layers, by_file.layers);
    EXPECT_EQ(by_name.mtp_layers, by_file.mtp_layers);
    for (int64_t ctx : {int64_t{1000}, int64_t{32768}, int64_t{1} << 20}) {
      const CostReport a = CostAt(by_name, ctx), b = CostAt(by_file, ctx);
      EXPECT_EQ(a.kv_bytes_total, b.kv_bytes_total);
      EXPECT_EQ(a.indexer_bytes_total, b.indexer_bytes_total);
      EXPECT_EQ(a.state_bytes, b.state_bytes);
      EXPECT_DOUBLE_EQ(a.prefill_flops, b.prefill_flops);
    }
    ++checked;
  }
  EXPECT_EQ(checked, 15);  // one catalogue entry per shared file
}

TEST(Catalogue, CardsEscapeTextAndRejectBadOptions) {
  ModelConfig m = LoadModel("gemma-3n-e4b");
  m.name = "<b>&\"odd\" name'";
  m.source = "a&b<c>";
  // The checker itself catches what it is for.
  EXPECT_NE(XmlProblem("<a>&</a>"), "");
  EXPECT_NE(XmlProblem("<a><b></a>"), "");
  EXPECT_NE(XmlProblem("<a x=\"1></a>"), "");
  const std::string svg = ModelCardSvg(m);
  EXPECT_EQ(XmlProblem(svg), "");
  EXPECT_NE(svg.find("&lt;b&gt;&amp;&quot;odd&quot; name&#39;"), std::string::npos);
  CardOptions o;
  o.contexts = {};
  EXPECT_NE(ErrorOf([&] { ModelCardSvg(m, o); }).find("contexts"), std::string::npos);
  o.contexts = {0};
  EXPECT_NE(ErrorOf([&] { ModelCardSvg(m, o); }).find("context 0"), std::string::npos);
  ModelConfig empty;
  EXPECT_NE(ErrorOf([&] { ModelCardSvg(empty); }).find("no layers"), std::string::npos);
}

// ------------------------------------------------------------ errors

TEST(HfReader, ClearErrors) {
  struct Case {
    std::string json;
    std::string expect;  // substring of the message
  };
  const Case cases[] = {
      {"{\"model_type\": \"llama\", \"num_hidden_layers\": 2,,}", "parse error"},
      {"{\"model_type\": \"llama\"", "malformed JSON"},
      {"[1, 2]", "top level must be a JSON object"},
      {"{\"model_type\": \"llama\", \"num_hidden_layers\": 2, \"hidden_size\": 64}",
       "num_attention_heads is missing"},
      {"{\"model_type\": \"gemma3\", \"text_config\": {\"num_hidden_layers\": 2, \"hidden_size\": "
       "64,"
       " \"num_attention_heads\": \"8\"}}",
       "text_config.num_attention_heads must be an integer"},
      {Decoder(4, 64, 8, 3), "must be a multiple of num_key_value_heads (3)"},
      {Decoder(2, 65, 2, 2), "head_dim is missing and hidden_size (65)"},
      {Decoder(4, 64, 8, 8, ", \"layer_types\": [\"full_attention\"]"),
       "layer_types has 1 entries but num_hidden_layers is 4"},
      {Decoder(1, 64, 8, 8, ", \"layer_types\": [\"banana\"]"), "layer_types entry 'banana'"},
      {Decoder(1, 64, 8, 8, ", \"layer_types\": [\"sliding_attention\"]"),
       "sliding_window is missing"},
      {Decoder(-1, 64, 8, 8), "num_hidden_layers must be an integer in [1, 4096], got -1"},
      {Decoder(2, 64, 8, 8, ", \"head_dim\": 1.5"), "head_dim must be an integer, got 1.5"},
      {"{\"model_type\": \"deepseek_v3\", \"num_hidden_layers\": 2, \"hidden_size\": 64, "
       "\"num_attention_heads\": 4}",
       "kv_lora_rank is missing"},
      {"{\"model_type\": \"nemotron_h\", \"num_hidden_layers\": 3, \"hidden_size\": 64, "
       "\"hybrid_override_pattern\": \"M-\"}",
       "hybrid_override_pattern has 2 characters but num_hidden_layers is 3"},
      {"{\"model_type\": \"kimi_linear\", \"num_hidden_layers\": 2, \"hidden_size\": 64, "
       "\"num_attention_heads\": 4, \"kv_lora_rank\": 8, \"qk_nope_head_dim\": 8, "
       "\"qk_rope_head_dim\": 4, \"v_head_dim\": 8, \"linear_attn_config\": {\"kda_layers\": [1, "
       "2],"
       " \"full_attn_layers\": [2], \"num_heads\": 2, \"head_dim\": 8}}",
       "must name layer 2 exactly once"},
      {"{\"model_type\": \"qwen3_next\", \"num_hidden_layers\": 4, \"hidden_size\": 64, "
       "\"num_attention_heads\": 4, \"linear_num_key_heads\": 3, \"linear_num_value_heads\": 4, "
       "\"linear_key_head_dim\": 8, \"linear_value_head_dim\": 8}",
       "linear_num_value_heads (4) must be a multiple of linear_num_key_heads (3)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    const std::string msg = ErrorOf([&] { ReadHfConfigText(c.json, "cfg.json"); });
    EXPECT_NE(msg.find(c.expect), std::string::npos) << msg;
    EXPECT_EQ(msg.rfind("cfg.json: ", 0), 0u) << msg;
  }
  // The parser's byte position is in the message.
  EXPECT_NE(ErrorOf([] { ReadHfConfigText("{\"a\": 1,,}", "x"); }).find("byte 9"),
            std::string::npos);
  EXPECT_NE(ErrorOf([] { ReadHfConfig("/nonexistent/config.json"); }).find("cannot open"),
            std::string::npos);
}

// ------------------------------------------------------------ what the reader refuses

ReadOptions AllowUnknown() {
  ReadOptions o;
  o.allow_unknown = true;
  return o;
}

TEST(HfReader, RefusesFieldsItDoesNotModelUnlessAllowed) {
  struct Case {
    std::string json;
    std::string field;  // named in the refusal
  };
  const Case cases[] = {
      {Decoder(2, 64, 4, 4, ", \"compress_ratios\": [0, 4]"), "compress_ratios"},
      {Decoder(2, 64, 4, 4, ", \"kv_source_layers\": [0, 0]"), "kv_source_layers"},
      {Decoder(2, 64, 4, 4, ", \"index_topk\": 8, \"index_n_heads\": 2, \"index_head_dim\": 8"),
       "index_topk, index_n_heads, index_head_dim"},
      {Decoder(2, 64, 4, 4, ", \"layer_types\": [\"full_attention\", \"conv\"]"),
       "layer_types entry 'conv'"},
      {Decoder(2, 64, 4, 4, ", \"rope_scaling\": {\"rope_type\": \"frobnicate\", \"factor\": 2}"),
       "rope_scaling.rope_type 'frobnicate'"},
      {Decoder(2, 64, 4, 4, ", \"layer_types\": [\"mamba\", \"full_attention\"]"),
       "layer_types entry 'mamba'"},  // a llama has no Mamba fields the reader knows
      // An unknown family with indexer fields (the reader knows them only for DSA families),
      // even when its MLA fields would be read.
      {"{\"model_type\": \"new_mla\", \"num_hidden_layers\": 2, \"hidden_size\": 64, "
       "\"num_attention_heads\": 4, \"kv_lora_rank\": 16, \"qk_nope_head_dim\": 8, "
       "\"qk_rope_head_dim\": 4, \"v_head_dim\": 8, \"index_topk\": 4, \"index_n_heads\": 2, "
       "\"index_head_dim\": 8}",
       "index_topk"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.json);
    const std::string msg = ErrorOf([&] { ReadHfConfigText(c.json, "cfg.json"); });
    EXPECT_EQ(msg.rfind("cfg.json: " + c.field, 0), 0u) << msg;
    EXPECT_NE(msg.find("--allow-unknown"), std::string::npos) << msg;
    const ModelConfig m = ReadHfConfigText(c.json, "cfg.json", AllowUnknown());
    ASSERT_TRUE(m.IsEstimate());
    EXPECT_NE(m.unmodelled[0].find(c.field.substr(0, c.field.find(','))), std::string::npos);
    // Every figure derived from it says it is an estimate.
    const CostReport r = CostAt(m, 4096);
    EXPECT_NE(CostReportToJson(m, r).find("\"estimate\":true"), std::string::npos);
    EXPECT_NE(ModelConfigToJson(m).find("\"unmodelled\""), std::string::npos);
    EXPECT_NE(ModelCardSvg(m).find("Estimate: ignores"), std::string::npos);
  }
  // A fully understood config carries no estimate marks.
  const ModelConfig plain = ReadHfConfigText(Decoder(2, 64, 4, 4));
  EXPECT_FALSE(plain.IsEstimate());
  EXPECT_EQ(CostReportToJson(plain, CostAt(plain, 4096)).find("estimate"), std::string::npos);
  EXPECT_EQ(ModelCardSvg(plain).find("Estimate"), std::string::npos);
  // Known RoPE scaling types are read.
  EXPECT_FALSE(ReadHfConfigText(Decoder(2, 64, 4, 4,
                                        ", \"rope_scaling\": {\"rope_type\": \"yarn\", "
                                        "\"factor\": 4}"))
                   .IsEstimate());
}

TEST(HfReader, MalformedTextConfigAndNulBytesAreErrors) {
  // Not bypassed by allow_unknown: the text is malformed, not merely unmodelled.
  for (const ReadOptions& o : {ReadOptions{}, AllowUnknown()}) {
    EXPECT_NE(ErrorOf([&] {
                ReadHfConfigText("{\"text_config\": [1], \"model_type\": \"llama\"}", "c", o);
              }).find("c: text_config must be an object, got an array"),
              std::string::npos);
    const std::string with_nul = Decoder(2, 64, 4, 4) + std::string(1, '\0') + "{}";
    EXPECT_NE(ErrorOf([&] { ReadHfConfigText(with_nul, "c", o); }).find("NUL byte at offset"),
              std::string::npos);
  }
  // A null text_config is as good as none.
  EXPECT_EQ(ReadHfConfigText(Decoder(2, 64, 4, 4, ", \"text_config\": null")).Summary(), "2 full");
}

// Granite 4.0-H style (field names of GraniteMoeHybridConfig; values chosen for the test):
// Mamba-2 and attention layers named in layer_types, NoPE attention.
TEST(HfReader, GraniteHybridReadsMambaAndAttentionLayers) {
  const std::string json =
      "{\"model_type\": \"granitemoehybrid\", \"num_hidden_layers\": 4, \"hidden_size\": 256, "
      "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"layer_types\": [\"mamba\", "
      "\"mamba\", \"mamba\", \"attention\"], \"mamba_n_heads\": 8, \"mamba_d_head\": 64, "
      "\"mamba_d_state\": 128, \"mamba_n_groups\": 1, \"mamba_d_conv\": 4, \"mamba_expand\": 2, "
      "\"position_embedding_type\": \"nope\", \"rope_scaling\": null}";
  const ModelConfig m = ReadHfConfigText(json);
  EXPECT_EQ(m.Summary(), "3 mamba2 + 1 full");
  EXPECT_EQ(m.Pattern(), "BBBf");
  EXPECT_TRUE(m.warnings.empty());
  const CostReport r = CostAt(m, 4096);
  // Attention: 2 KV heads x (64 + 64) x 2 bytes; Mamba-2: 8 x 128 x 64 f32 state and a conv
  // over 8 * 64 + 2 * 128 = 768 channels keeping 3 inputs.
  EXPECT_EQ(r.kv_bytes_per_token, 2 * 128 * 2);
  EXPECT_EQ(r.state_bytes, 3 * (8 * 128 * 64 * 4 + 768 * 3 * 4));
  // mamba_d_head "auto": the inner width (expand x hidden) over the heads.
  std::string autohead = json;
  autohead.replace(autohead.find("\"mamba_d_head\": 64"), 18, "\"mamba_d_head\": \"auto\"");
  EXPECT_EQ(ReadHfConfigText(autohead).layers[0].state_dim_v, 64);
  // RoPE only for position_embedding_type "rope".
  std::string rope = json;
  rope.replace(rope.find("\"nope\""), 6, "\"rope\"");
  EXPECT_EQ(ReadHfConfigText(rope).Pattern(), "BBBF");
}

// Falcon-H1 style (field names of FalconH1Config): attention and Mamba-2 side by side in every
// layer. The reader has no rule for the parallel hybrid, so it refuses rather than read it as
// attention only; allowed, it counts the attention and says it ignores the Mamba fields.
TEST(HfReader, ParallelHybridIsRefused) {
  const std::string json =
      "{\"model_type\": \"falcon_h1\", \"num_hidden_layers\": 4, \"hidden_size\": 256, "
      "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"head_dim\": 64, "
      "\"mamba_d_ssm\": 512, \"mamba_n_heads\": 8, \"mamba_d_head\": 64, \"mamba_d_state\": 128, "
      "\"mamba_d_conv\": 4, \"mamba_n_groups\": 1}";
  const std::string msg = ErrorOf([&] { ReadHfConfigText(json, "h1.json"); });
  EXPECT_EQ(msg.rfind("h1.json: mamba_d_ssm, mamba_n_heads, mamba_d_state, mamba_d_head change", 0),
            0u)
      << msg;
  const ModelConfig m = ReadHfConfigText(json, "h1.json", AllowUnknown());
  EXPECT_EQ(m.Summary(), "4 full");
  EXPECT_TRUE(m.IsEstimate());
}

TEST(HfReader, UnknownModelTypeIsBestEffortWithWarning) {
  std::string text = Decoder(4, 256, 4, 2, ", \"sliding_window\": 64");
  text.replace(text.find("llama"), 5, "frobnicator");
  const ModelConfig m = ReadHfConfigText(text);
  ASSERT_EQ(m.warnings.size(), 1u);
  EXPECT_NE(m.warnings[0].find("frobnicator"), std::string::npos);
  EXPECT_EQ(m.Summary(), "4 sliding(64)");
  EXPECT_EQ(m.layers[0].head_dim_qk, 64);
}

TEST(HfReader, NonStandardTokensOnlyOutsideStrings) {
  const ModelConfig m = ReadHfConfigText(Decoder(
      2, 64, 4, 4, ", \"note\": \"Infinity and NaN\", \"limit\": [0.0, Infinity, -Infinity, NaN]"));
  ASSERT_EQ(m.assumptions.size(), 2u);  // the tokens, then head_dim = hidden / heads
  EXPECT_NE(m.assumptions[0].find("3 non-standard"), std::string::npos);
}

}  // namespace
}  // namespace attnkit::models

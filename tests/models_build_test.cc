// Tests of the bridge from model descriptions to attention blocks (models/build.h): the plan for
// real catalogue models, and built blocks whose allocated caches match the cost model's bytes.
#include <gtest/gtest.h>

#include <random>
#include <string>

#include "attnkit/core/error.h"
#include "attnkit/layers/layer.h"
#include "attnkit/models/build.h"
#include "attnkit/models/catalogue.h"
#include "attnkit/models/cost.h"
#include "test_util.h"

namespace attnkit::models {
namespace {

TEST(ModelBuild, PlansForCatalogueModels) {
  const ModelConfig llama = LoadModel("llama-3.1-8b");
  const LayerPlan p = PlanLayer(llama, 0);
  EXPECT_EQ(p.kind, "gqa");
  EXPECT_EQ(p.shape.hidden, 4096);
  EXPECT_EQ(p.shape.num_heads, 32);
  EXPECT_EQ(p.shape.num_heads_kv, 8);
  EXPECT_EQ(p.shape.head_dim, 128);

  const ModelConfig oss = LoadModel("gpt-oss-20b");
  EXPECT_EQ(PlanLayer(oss, 0, 1000).kind, "sinks");
  EXPECT_EQ(PlanLayer(oss, 0, 1000).shape.window, 128);
  EXPECT_EQ(PlanLayer(oss, 1, 1000).kind, "sinks");  // full layer: window = capacity
  EXPECT_EQ(PlanLayer(oss, 1, 1000).shape.window, 1000);

  const ModelConfig v3 = LoadModel("deepseek-v3");
  const LayerPlan m = PlanLayer(v3, 0);
  EXPECT_EQ(m.kind, "mla");
  EXPECT_EQ(m.shape.kv_lora_rank, 512);
  EXPECT_EQ(m.shape.rope_head_dim, 64);
  EXPECT_EQ(m.shape.q_lora_rank, 1536);

  const ModelConfig q35 = LoadModel("qwen3.5-27b");
  EXPECT_EQ(PlanLayer(q35, 3).kind, "gated");
  EXPECT_TRUE(PlanLayer(q35, 0).kind.empty());
  EXPECT_NE(PlanLayer(q35, 0).missing.find("gated_deltanet"), std::string::npos);
  EXPECT_NE(PlanLayer(LoadModel("llama-4-scout"), 3).note.find("NoPE"), std::string::npos);

  EXPECT_THROW(PlanLayer(llama, 32), Error);
  EXPECT_THROW(PlanLayer(llama, 0, 0), Error);
  try {
    BuildLayers(LoadModel("glm-5"), 16, 1);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 0 (dsa)"), std::string::npos) << e.what();
  }
}

// Small models in config.json form: every layer buildable, caches small.
const char* const kTinyConfigs[] = {
    R"({"model_type": "gpt_oss", "num_hidden_layers": 4, "hidden_size": 64,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 8})",
    R"({"model_type": "llama", "num_hidden_layers": 2, "hidden_size": 48,
        "num_attention_heads": 6, "num_key_value_heads": 1})",
    R"({"model_type": "gemma3_text", "num_hidden_layers": 3, "hidden_size": 64,
        "num_attention_heads": 4, "num_key_value_heads": 4, "head_dim": 16, "sliding_window": 5,
        "sliding_window_pattern": 3})",
    R"({"model_type": "deepseek_v3", "num_hidden_layers": 2, "hidden_size": 64,
        "num_attention_heads": 4, "q_lora_rank": 24, "kv_lora_rank": 16, "qk_nope_head_dim": 8,
        "qk_rope_head_dim": 4, "v_head_dim": 8})",
};

TEST(ModelBuild, BuiltCachesMatchTheCostModel) {
  const int64_t max_tokens = 24;
  std::mt19937_64 rng(testing::TestSeed());
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (const char* text : kTinyConfigs) {
    const ModelConfig m = ReadHfConfigText(text, "tiny");
    SCOPED_TRACE(m.model_type + " " + m.Pattern());
    auto layers = BuildLayers(m, max_tokens, testing::TestSeed());
    ASSERT_EQ(layers.size(), m.layers.size());
    Stack stack(m.hidden_size);
    for (auto& l : layers) stack.Add(std::move(l));
    // Prefill the whole capacity, then compare the bytes each block holds with the cost model
    // (f32 cache, batch 1, context = capacity).
    Tensor<float> x(1, 1, max_tokens, m.hidden_size), y(1, 1, max_tokens, m.hidden_size);
    for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = dist(rng);
    stack.Forward(x.view(), 0, y.view());
    CostQuery q;
    q.context = max_tokens;
    q.cache_dtype = CacheDtype::kF32;
    const CostReport r = Cost(m, q);
    int64_t total = 0;
    for (size_t i = 0; i < m.layers.size(); ++i) {
      EXPECT_EQ(static_cast<int64_t>(stack.layer(i).CacheBytes()), r.layers[i].kv_bytes)
          << "layer " << i << ": " << stack.layer(i).Describe();
      total += static_cast<int64_t>(stack.layer(i).CacheBytes());
    }
    EXPECT_EQ(total, r.kv_bytes_total);
  }
}

}  // namespace
}  // namespace attnkit::models

// Proof of the "Adding a variant" recipe (docs/ARCHITECTURE.md) for a layer kind: a kind that
// exists only in this file — its block, its row in the layer-kind table and its config.json
// name — is read from a config, costed, drawn on a card, planned, built and run, with no edit
// to any other file. The same registries are what the CLI (`attnkit kv`, `card`, `stack`) and
// the Python bindings read, so they see the kind too.
#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <random>
#include <string>

#include "attnkit/core/error.h"
#include "attnkit/core/tensor.h"
#include "attnkit/layers/factory.h"
#include "attnkit/layers/layer.h"
#include "attnkit/models/build.h"
#include "attnkit/models/card.h"
#include "attnkit/models/config.h"
#include "attnkit/models/cost.h"
#include "attnkit/models/kinds.h"
#include "test_util.h"

namespace attnkit::models {
namespace {

// The block: sliding-window multi-query attention (one KV head whatever the model's KV head
// count), built on the GQA block (the kernel it runs is the dense engine).
class SlidingMqaBlock : public Layer {
 public:
  SlidingMqaBlock(LayerShape shape, uint64_t seed) {
    shape.num_heads_kv = 1;
    inner_ = MakeLayer("swa", shape, seed);
  }
  std::string Kind() const override { return "test_swa_mqa"; }
  std::string Describe() const override { return "test_swa_mqa(" + inner_->Describe() + ")"; }
  int64_t hidden() const override { return inner_->hidden(); }
  void Forward(TensorView<const float> x, int64_t position, TensorView<float> out) override {
    inner_->Forward(x, position, out);
  }
  int64_t tokens_seen() const override { return inner_->tokens_seen(); }
  void Reset() override { inner_->Reset(); }
  bool UndoForward() noexcept override { return inner_->UndoForward(); }  // for Stack's rollback
  size_t CacheBytes() const override { return inner_->CacheBytes(); }
  size_t WeightBytes() const override { return inner_->WeightBytes(); }

 private:
  std::unique_ptr<Layer> inner_;
};

// Its row: name, pattern character, label and colour, what it keeps, its config.json name, how
// the reader builds it, its cost formula, the block that runs it and its shape column.
LayerKind TestKind() {
  static const LayerKind kind = [] {
    RegisterLayerFactory("test_swa_mqa", [](const LayerShape& s, uint64_t seed) {
      return std::unique_ptr<Layer>(new SlidingMqaBlock(s, seed));
    });
    LayerKindInfo row;
    row.name = "test_swa_mqa";
    row.pattern = 'T';
    row.label = "sliding MQA (test)";
    row.color = "#123456";
    row.memory = LayerMemory::kKvCache;
    row.window_label = "window";
    row.guide_section = "window";
    row.layer_types = {"sliding_mqa_attention"};
    row.read = [](const ConfigFields& f, LayerSpec l) {
      l.num_heads_kv = 1;
      if (l.window == 0) l.window = f.Int("mqa_window", 1, int64_t{1} << 30);
      return l;
    };
    row.check = [](const LayerSpec& l, size_t i) {
      Require(l.window >= 1, "Cost: layer ", i, " (test_swa_mqa) needs window >= 1");
    };
    row.cost = [](const LayerSpec& l, const CostQuery& q, LayerCost* c) {
      const int64_t L = q.context, kept = std::min(L, l.window);
      SoftmaxAttentionCost(l, q, kept, kept, WindowKeySum(L, l.window), c);
    };
    row.plan = [](const LayerSpec&, int64_t, LayerPlan* p) {
      p->kind = "test_swa_mqa";
      p->shape.num_heads_kv = 1;
    };
    row.describe = DescribeSoftmaxLayer;
    return RegisterLayerKind(row);
  }();
  return kind;
}

const char* const kConfig = R"({"model_type": "llama", "num_hidden_layers": 4, "hidden_size": 64,
    "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16, "sliding_window": 6,
    "layer_types": ["sliding_mqa_attention", "full_attention", "sliding_mqa_attention",
                    "full_attention"]})";

TEST(LayerKindRecipe, ReaderNamesAndPattern) {
  const LayerKind kind = TestKind();
  EXPECT_EQ(ParseLayerKind("test_swa_mqa"), kind);
  EXPECT_EQ(LayerKindName(kind), "test_swa_mqa");
  EXPECT_TRUE(HasKvCache(kind));
  const auto all = AllLayerKinds();
  EXPECT_NE(std::find(all.begin(), all.end(), kind), all.end());
  const ModelConfig m = ReadHfConfigText(kConfig, "tiny");
  EXPECT_FALSE(m.IsEstimate());
  EXPECT_EQ(m.Pattern(), "TFTF");
  EXPECT_EQ(m.Summary(), "2 test_swa_mqa(6) + 2 full");
  EXPECT_EQ(m.layers[0].num_heads_kv, 1);
  EXPECT_EQ(m.layers[1].num_heads_kv, 2);
  EXPECT_NE(ModelConfigToJson(m).find("\"kind\":\"test_swa_mqa\""), std::string::npos);
  // Without sliding_window the row's reader asks for its own field, naming it when missing.
  std::string text = kConfig;
  text.replace(text.find("\"sliding_window\": 6"), 19, "\"mqa_window\": 9");
  EXPECT_EQ(ReadHfConfigText(text).layers[2].window, 9);
  text.replace(text.find("\"mqa_window\": 9"), 15, "\"other\": 9");
  try {
    ReadHfConfigText(text, "t.json");
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("t.json: mqa_window is missing"), std::string::npos)
        << e.what();
  }
}

TEST(LayerKindRecipe, CostCardAndKvColumn) {
  TestKind();
  const ModelConfig m = ReadHfConfigText(kConfig, "tiny");
  CostQuery q;
  q.context = 100;
  const CostReport r = Cost(m, q);
  // bf16: the MQA layers keep 1 head x (16 + 16) values for the last 6 tokens; the full layers
  // 2 heads for all 100.
  EXPECT_EQ(r.layers[0].kv_bytes, 1 * 32 * 2 * 6);
  EXPECT_EQ(r.layers[1].kv_bytes, 2 * 32 * 2 * 100);
  EXPECT_EQ(r.kv_bytes_total, 2 * (1 * 32 * 2 * 6) + 2 * (2 * 32 * 2 * 100));
  EXPECT_DOUBLE_EQ(r.layers[0].decode_flops, 2.0 * 4 * 32 * 6);
  EXPECT_NE(CostReportToJson(m, r).find("\"kind\":\"test_swa_mqa\""), std::string::npos);
  const std::string svg = ModelCardSvg(m);
  EXPECT_NE(svg.find("#123456"), std::string::npos);
  EXPECT_NE(svg.find("sliding MQA (test) ×2 (window 6)"), std::string::npos);
  EXPECT_EQ(LayerKindColor(TestKind()), "#123456");
  EXPECT_EQ(KindInfo(TestKind()).describe(m.layers[0]), "q 4 / kv 1 heads x 16");
  // A hand-built layer without a window is refused by the row's check.
  ModelConfig bad = m;
  bad.layers[0].window = 0;
  EXPECT_THROW(Cost(bad, q), Error);
}

TEST(LayerKindRecipe, PlannedBuiltAndRunWithTheCostModelsCache) {
  TestKind();
  const ModelConfig m = ReadHfConfigText(kConfig, "tiny");
  EXPECT_EQ(PlanLayer(m, 0).kind, "test_swa_mqa");
  // The block kind is in the factory that `attnkit stack --layers` and Python's make_layer use.
  const auto kinds = LayerKinds();
  EXPECT_NE(std::find(kinds.begin(), kinds.end(), "test_swa_mqa"), kinds.end());
  EXPECT_EQ(ParseLayerList("2*test_swa_mqa,gqa").size(), 3u);
  const int64_t max_tokens = 16;
  auto layers = BuildLayers(m, max_tokens, testing::TestSeed());
  ASSERT_EQ(layers.size(), 4u);
  EXPECT_EQ(layers[0]->Kind(), "test_swa_mqa");
  std::mt19937_64 rng(testing::TestSeed());
  std::normal_distribution<float> dist(0.0f, 1.0f);
  Tensor<float> x(1, 1, max_tokens, m.hidden_size), y(1, 1, max_tokens, m.hidden_size);
  for (int64_t i = 0; i < x.numel(); ++i) x.data()[i] = dist(rng);
  CostQuery q;
  q.context = max_tokens;
  q.cache_dtype = CacheDtype::kF32;
  const CostReport r = Cost(m, q);
  for (size_t i = 0; i < layers.size(); ++i) {
    layers[i]->Forward(x.view(), 0, y.view());
    EXPECT_EQ(static_cast<int64_t>(layers[i]->CacheBytes()), r.layers[i].kv_bytes) << i;
  }
}

TEST(LayerKindRecipe, RegistrationRefusesClashes) {
  TestKind();
  LayerKindInfo row;
  row.name = "test_swa_mqa";
  row.cost = KindInfo(LayerKind::kFull).cost;
  EXPECT_THROW(RegisterLayerKind(row), Error);  // name taken
  row.name = "another";
  row.pattern = 'F';
  EXPECT_THROW(RegisterLayerKind(row), Error);  // pattern character of "full"
  row.pattern = 'Q';
  row.layer_types = {"sliding_attention"};
  EXPECT_THROW(RegisterLayerKind(row), Error);  // a layer type of "sliding"
  row.layer_types.clear();
  row.cost = nullptr;
  EXPECT_THROW(RegisterLayerKind(row), Error);  // no cost formula
  EXPECT_THROW(KindInfo(static_cast<LayerKind>(99)), Error);
  EXPECT_THROW(RegisterLayerFactory("gqa", [](const LayerShape& s,
                                              uint64_t seed) { return MakeLayer("mha", s, seed); }),
               Error);
}

}  // namespace
}  // namespace attnkit::models

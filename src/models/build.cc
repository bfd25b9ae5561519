// Mapping of LayerSpec to the layer factory's kinds and shapes (see models/build.h).
#include "attnkit/models/build.h"

#include "attnkit/core/error.h"

namespace attnkit::models {

LayerPlan PlanLayer(const ModelConfig& config, size_t index, int64_t max_tokens) {
  Require(index < config.layers.size(), "PlanLayer: index ", index, " out of range for ",
          config.layers.size(), " layers");
  Require(max_tokens >= 1, "PlanLayer: max_tokens must be >= 1, got ", max_tokens);
  const LayerSpec& l = config.layers[index];
  LayerPlan p;
  p.shape.hidden = config.hidden_size;
  p.shape.max_tokens = max_tokens;
  p.shape.num_heads = l.num_heads_q;
  p.shape.num_heads_kv = l.num_heads_kv;
  p.shape.head_dim = l.head_dim_qk;
  p.shape.window = l.window;
  // What the factory's blocks do not model; the block is still built (e.g. with RoPE).
  auto note = [&](const std::string& what) { p.note += (p.note.empty() ? "" : "; ") + what; };
  if (HasKvCache(l.kind) && !l.rope) note("NoPE layer built with RoPE");
  if ((l.kind == LayerKind::kFull || l.kind == LayerKind::kSliding) && l.rope &&
      l.rope_fraction != 1 && !l.output_gate) {
    note("partial RoPE (" + std::to_string(l.rope_fraction) + ") built with full RoPE");
  }
  if (l.softcap > 0) note("logit soft-cap not applied");
  if (l.query_pre_attn_scalar > 0) note("query_pre_attn_scalar scaling not applied");
  auto missing = [&](const std::string& why) {
    p.kind.clear();
    p.missing = why;
    return p;
  };
  switch (l.kind) {
    case LayerKind::kFull:
    case LayerKind::kSliding: {
      if (l.head_dim_qk != l.head_dim_v) return missing("head_dim_qk != head_dim_v");
      if (l.kind == LayerKind::kSliding) {
        p.kind = l.sinks ? "sinks" : "swa";
      } else if (l.sinks) {
        p.kind = "sinks";  // gpt-oss full layers: sinks with a window as long as the cache
        p.shape.window = max_tokens;
      } else if (l.output_gate) {
        p.kind = "gated";
      } else if (l.num_heads_kv == l.num_heads_q) {
        p.kind = "mha";
      } else if (l.num_heads_kv == 1) {
        p.kind = "mqa";
      } else {
        p.kind = "gqa";
      }
      return p;
    }
    case LayerKind::kMla:
      if (l.qk_nope_head_dim != l.head_dim_v) {
        return missing("MLA block needs qk_nope_head_dim == v_head_dim");
      }
      p.kind = "mla";
      p.shape.head_dim = l.qk_nope_head_dim;
      p.shape.num_heads_kv = l.num_heads_q;
      p.shape.q_lora_rank = l.q_lora_rank;
      p.shape.kv_lora_rank = l.kv_lora_rank;
      p.shape.rope_head_dim = l.qk_rope_head_dim;
      return p;
    case LayerKind::kChunked:
      return missing("chunked-local attention has no block kind yet");
    case LayerKind::kDsa:
      return missing("DSA (MLA + indexer) has no block kind yet");
    case LayerKind::kGatedDeltaNet:
    case LayerKind::kKda:
    case LayerKind::kMamba2:
    case LayerKind::kLightning:
      // TODO: gated_deltanet and kda have factory kinds now; map their q/k head counts.
      return missing(std::string(LayerKindName(l.kind)) + " is not mapped to a block kind yet");
    case LayerKind::kMlp:
      return missing("MLP-only layer (no attention block)");
  }
  return missing("unknown layer kind");
}

std::vector<std::unique_ptr<Layer>> BuildLayers(const ModelConfig& config, int64_t max_tokens,
                                                uint64_t seed) {
  std::vector<std::unique_ptr<Layer>> layers;
  for (size_t i = 0; i < config.layers.size(); ++i) {
    const LayerPlan p = PlanLayer(config, i, max_tokens);
    Require(!p.kind.empty(), "BuildLayers: ", config.name, " layer ", i, " (",
            LayerKindName(config.layers[i].kind), "): ", p.missing);
    layers.push_back(MakeLayer(p.kind, p.shape, seed + i));
  }
  return layers;
}

}  // namespace attnkit::models

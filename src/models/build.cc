// Mapping of LayerSpec to the layer factory's kinds and shapes (see models/build.h).
#include "attnkit/models/build.h"

#include "attnkit/core/error.h"
#include "attnkit/models/kinds.h"

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
  if (l.softcap > 0) note("logit soft-cap not applied");
  if (l.query_pre_attn_scalar > 0) note("query_pre_attn_scalar scaling not applied");
  const LayerKindInfo& info = KindInfo(l.kind);
  if (info.plan == nullptr) {
    p.missing =
        info.no_block.empty() ? info.name + " is not mapped to a block kind yet" : info.no_block;
    return p;
  }
  info.plan(l, max_tokens, &p);
  if (!p.missing.empty()) p.kind.clear();
  return p;
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

// From a model description to runnable attention blocks: which kind of the layer factory
// (layers/factory.h) builds each layer of a ModelConfig, and with which LayerShape, so a real
// model's attention stack runs at its own head counts and dims (seeded random weights).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/layers/factory.h"
#include "attnkit/layers/layer.h"
#include "attnkit/models/config.h"

namespace attnkit::models {

struct LayerPlan {
  std::string kind;     // a MakeLayer kind ("gqa", "mha", "mqa", "swa", "sinks", "gated", "mla");
                        // empty when no block kind builds this layer yet
  std::string missing;  // why `kind` is empty, e.g. "chunked-local attention has no block kind"
  std::string note;     // where the block differs from the model's layer (NoPE, partial RoPE, ...)
  LayerShape shape;     // the layer's own dims; hidden from the model
};

// The plan for layer `index` (cache capacity max_tokens for its KV cache). Throws attnkit::Error
// for an index out of range or max_tokens < 1.
LayerPlan PlanLayer(const ModelConfig& config, size_t index, int64_t max_tokens = 4096);

// Builds every layer of the model (layer i seeded with seed + i). Throws attnkit::Error naming the
// first layer no block kind can build yet.
std::vector<std::unique_ptr<Layer>> BuildLayers(const ModelConfig& config, int64_t max_tokens,
                                                uint64_t seed);

}  // namespace attnkit::models

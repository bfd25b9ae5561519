// A model card as a self-contained SVG: the layer pattern as a strip, the attention kinds, KV
// bytes per token, the cache at a few context lengths, and the fixed recurrent state. Used by
// `attnkit card` and by the visual guide.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/models/config.h"
#include "attnkit/models/cost.h"

namespace attnkit::models {

struct CardOptions {
  CacheDtype cache_dtype = CacheDtype::kBf16;
  CacheDtype state_dtype = CacheDtype::kF32;
  std::vector<int64_t> contexts = {8192, 32768, 131072};  // cache bars, batch 1
  int width = 640;                                        // pixels
};

// One <svg> element (UTF-8, no external references). Throws attnkit::Error for an empty model or
// empty / non-positive contexts.
std::string ModelCardSvg(const ModelConfig& config, const CardOptions& options = {});

// Fill colour used for a layer kind in cards and strips (e.g. "#4e79a7"), so other figures match.
std::string LayerKindColor(LayerKind kind);

}  // namespace attnkit::models

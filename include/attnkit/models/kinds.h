// The layer-kind table: one row per LayerKind holds everything attnkit knows about that kind —
// its name and pattern character, its label and colour in figures, whether it keeps a KV cache
// or a fixed state, the config.json `layer_types` entries that name it, how the reader builds
// it, its cost formula, the block kind that runs it and the guide section that explains it.
//
// Every place that used to switch over LayerKind (config names, the cost model, model cards,
// the block planner, `attnkit kv`, the bindings) reads the row instead, so a new kind is one
// row: a built-in one in src/models/kinds.cc, or one registered at run time with
// RegisterLayerKind (see docs/ARCHITECTURE.md, "Adding a variant").
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "attnkit/models/config.h"

namespace attnkit::models {

struct CostQuery;
struct LayerCost;
struct LayerPlan;

// What a layer keeps between tokens.
enum class LayerMemory {
  kNone,     // nothing (MLP-only layers)
  kKvCache,  // a cache that grows with the context (softmax attention, MLA, DSA)
  kState,    // a fixed-size recurrent state (linear / recurrent layers)
};

// Typed access to the fields of the text model in a config.json, for a row's reader. Every
// method throws attnkit::Error naming the field (with its prefix, e.g. "text_config.") when the
// value is missing, of the wrong type or out of range.
class ConfigFields {
 public:
  virtual ~ConfigFields() = default;
  // Present and not null.
  virtual bool Has(const std::string& key) const = 0;
  // A required integer in [lo, hi] (the family default when absent, noted in assumptions).
  virtual int64_t Int(const std::string& key, int64_t lo, int64_t hi) const = 0;
  // A number in [lo, hi], or `fallback` when absent.
  virtual double Double(const std::string& key, double fallback, double lo, double hi) const = 0;
};

struct LayerKindInfo {
  std::string name;    // "full": the name in JSON, the CLI, Python and ParseLayerKind
  char pattern = '?';  // one character in ModelConfig::Pattern() (upper case, or a symbol)
  std::string label;   // "full attention": legend text of model cards
  std::string color;   // "#4e79a7": fill colour in cards and layer strips
  LayerMemory memory = LayerMemory::kNone;
  std::string window_label;   // what LayerSpec::window means for it: "window", "chunk" or ""
  std::string guide_section;  // the `attnkit guide` section explaining it, or ""
  std::vector<std::string> layer_types;  // config.json layer_types entries read as this kind

  // Reader: the layer for a `layer_types` entry naming this kind. `base` holds the model's
  // softmax-attention shape (heads, KV heads, head dim, RoPE fraction; window = sliding_window
  // when the config has one) with `kind` set to this kind. Null: `base` as it is.
  LayerSpec (*read)(const ConfigFields& fields, LayerSpec base) = nullptr;
  // Checks the fields the cost formula needs (e.g. window >= 1) and throws attnkit::Error
  // naming layer `index`. Null: nothing to check.
  void (*check)(const LayerSpec& layer, size_t index) = nullptr;
  // Cost model (required): fills the cache, state and FLOP fields of `out` for one layer at
  // query.context. `out->shared` is already set (a layer that reuses another's KV adds no bytes).
  void (*cost)(const LayerSpec& layer, const CostQuery& query, LayerCost* out) = nullptr;
  // Which block runs it: sets plan->kind (a MakeLayer kind, layers/factory.h) and adjusts
  // plan->shape, or sets plan->missing. Null: no block yet, with `no_block` as the reason.
  void (*plan)(const LayerSpec& layer, int64_t max_tokens, LayerPlan* plan) = nullptr;
  std::string no_block;  // why no block builds it when plan is null ("" : not mapped yet)
  // Shape column of `attnkit kv` (e.g. "q 32 / kv 8 heads x 128"). Null: empty.
  std::string (*describe)(const LayerSpec& layer) = nullptr;
};

// The row of a kind. Throws attnkit::Error for a value that names no kind.
const LayerKindInfo& KindInfo(LayerKind kind);
// Every kind, built-in ones first, then registered ones in registration order.
std::vector<LayerKind> AllLayerKinds();
// Adds a kind and returns its id. Throws attnkit::Error when the row has no name or cost, or its
// name, pattern character or a layer_types entry is already taken. Thread-safe; rows are never
// removed.
LayerKind RegisterLayerKind(LayerKindInfo info);
// The kind whose row lists `layer_type` in layer_types, or nullptr.
const LayerKindInfo* FindLayerKindByType(std::string_view layer_type, LayerKind* kind = nullptr);

// Shape column helpers for rows: "q 32 / kv 8 heads x 128" (", NoPE" when rope is false).
std::string DescribeSoftmaxLayer(const LayerSpec& layer);

}  // namespace attnkit::models

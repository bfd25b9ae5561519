// The built-in catalogue of real open-weight architectures.
//
// Each entry keeps the attention-relevant fields of a model's published config.json (in the same
// field names, so the one reader in models/config.h turns both a file and an entry into a
// ModelConfig) plus its Hugging Face id and the source of the figures. The data lives in
// data/catalogue/models.json and is compiled into the library, so the installed CLI works from
// any directory.
#pragma once

#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "attnkit/models/config.h"

namespace attnkit::models {

struct CatalogueEntry {
  std::string name;         // short lower-case name, e.g. "llama-3.1-8b"
  std::string hf_id;        // e.g. "meta-llama/Llama-3.1-8B"
  std::string family;       // e.g. "Llama 3"
  std::string source;       // where the fields were taken from (URL of the config.json)
  std::string test_config;  // file name in tests/data/configs holding the same model, or ""
  std::string config_json;  // the attention-relevant config.json fields, as JSON text
};

// Every entry, in catalogue order. Parsed once, on first use.
const std::vector<CatalogueEntry>& Catalogue();
// The entry whose name or hf_id equals `name` (case-insensitive), or nullptr.
const CatalogueEntry* FindModel(std::string_view name);
// The entry's ModelConfig (name and source from the entry). Throws attnkit::Error naming close
// matches for an unknown name.
ModelConfig LoadModel(std::string_view name);
// A catalogue name, or else a path to a config.json (read with `options`).
ModelConfig LoadModelOrFile(const std::string& name_or_path, const ReadOptions& options = {});

// Names of the catalogue models whose description satisfies `pred`, in catalogue order
// (e.g. for "models that use this variant" in the guide).
std::vector<std::string> ModelsWhere(const std::function<bool(const ModelConfig&)>& pred);
// Names of the catalogue models with at least one layer of `kind`.
std::vector<std::string> ModelsWithKind(LayerKind kind);

}  // namespace attnkit::models

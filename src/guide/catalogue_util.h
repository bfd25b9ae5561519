// The model catalogue as the guide uses it: every entry's ModelConfig (read once) and helpers
// that list the real models using a variant, so each section's "Used by" comes from configs.
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "attnkit/guide/page.h"
#include "attnkit/models/config.h"

namespace attnkit::guide::detail {

// Every catalogue entry that reads cleanly, in catalogue order.
const std::vector<models::ModelConfig>& CatalogueConfigs();

// "name (annotation)" of the catalogue models for which `annotate` returns a non-empty string.
std::vector<std::string> ModelsWhere(
    const std::function<std::string(const models::ModelConfig&)>& annotate);

// The provenance line for model lists and config figures.
std::string CatalogueSourceLine();

// The layer stack of a catalogue model as a strip diagram (one cell per layer, coloured by kind);
// nullptr-safe: returns false when `name` is not in the catalogue.
bool ModelStripFigure(const std::string& name, const std::string& figure_id, Figure* figure);

// The first layer of a kind, or nullptr.
const models::LayerSpec* FirstLayer(const models::ModelConfig& config, models::LayerKind kind);

}  // namespace attnkit::guide::detail

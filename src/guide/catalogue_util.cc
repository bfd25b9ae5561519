// The guide's view of the model catalogue (models/catalogue.h).
#include "guide/catalogue_util.h"

#include "attnkit/core/error.h"
#include "attnkit/guide/svg.h"
#include "attnkit/models/card.h"
#include "attnkit/models/catalogue.h"

namespace attnkit::guide::detail {

const std::vector<models::ModelConfig>& CatalogueConfigs() {
  static const std::vector<models::ModelConfig> configs = [] {
    std::vector<models::ModelConfig> out;
    for (const auto& entry : models::Catalogue()) {
      try {
        out.push_back(models::LoadModel(entry.name));
      } catch (const Error&) {
        // An entry the reader refuses is left out of the guide (the models tests catch it).
      }
    }
    return out;
  }();
  return configs;
}

std::vector<std::string> ModelsWhere(
    const std::function<std::string(const models::ModelConfig&)>& annotate) {
  std::vector<std::string> out;
  for (const auto& c : CatalogueConfigs()) {
    const std::string note = annotate(c);
    if (!note.empty()) out.push_back(c.name + " (" + note + ")");
  }
  return out;
}

std::string CatalogueSourceLine() {
  return "from attnkit's model catalogue (" + std::to_string(models::Catalogue().size()) +
         " published config.json files, data/catalogue/models.json), read by models::LoadModel";
}

bool ModelStripFigure(const std::string& name, const std::string& figure_id, Figure* figure) {
  for (const auto& c : CatalogueConfigs()) {
    if (c.name != name) continue;
    std::vector<LayerCell> cells;
    for (const auto& l : c.layers) {
      std::string label(models::LayerKindName(l.kind));
      if (l.window > 0) label += " " + std::to_string(l.window);
      if (!l.rope) label += " (no RoPE)";
      cells.push_back({label, models::LayerKindColor(l.kind)});
    }
    if (cells.empty()) return false;
    figure->kind = Figure::Kind::kDiagram;
    figure->id = figure_id;
    figure->title = c.name + ": " + c.Summary();
    figure->caption =
        "The layer stack of " + c.name + " as its config.json declares it, one cell per layer.";
    figure->provenance = Provenance::kConfig;
    figure->source = "models::LoadModel(\"" + c.name + "\").layers (" + c.source + ")";
    figure->svg =
        LayerStripDiagram(cells, c.name + " — " + std::to_string(c.layers.size()) + " layers");
    return true;
  }
  return false;
}

const models::LayerSpec* FirstLayer(const models::ModelConfig& config, models::LayerKind kind) {
  for (const auto& l : config.layers) {
    if (l.kind == kind) return &l;
  }
  return nullptr;
}

}  // namespace attnkit::guide::detail

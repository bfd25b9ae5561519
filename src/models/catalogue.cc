// The built-in catalogue: parses the embedded data/catalogue/models.json once and looks models up.
#include "attnkit/models/catalogue.h"

#include <sys/stat.h>

#include <algorithm>
#include <cctype>

#include "attnkit/core/error.h"
#include "nlohmann/json.hpp"

namespace attnkit::models {
namespace internal {
extern const char kCatalogueJson[];  // generated from data/catalogue/models.json at build time
}  // namespace internal

namespace {

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

std::vector<CatalogueEntry> ParseCatalogue() {
  const auto doc = nlohmann::json::parse(internal::kCatalogueJson);
  std::vector<CatalogueEntry> entries;
  for (const auto& m : doc.at("models")) {
    CatalogueEntry e;
    e.name = m.at("name").get<std::string>();
    e.hf_id = m.at("hf_id").get<std::string>();
    e.family = m.at("family").get<std::string>();
    e.source = m.at("source").get<std::string>();
    e.test_config = m.value("test_config", "");
    e.config_json = m.at("config").dump();
    entries.push_back(std::move(e));
  }
  return entries;
}

// Edit distance, for "did you mean" suggestions.
size_t Distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1])});
    }
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

}  // namespace

const std::vector<CatalogueEntry>& Catalogue() {
  static const std::vector<CatalogueEntry> entries = ParseCatalogue();
  return entries;
}

const CatalogueEntry* FindModel(std::string_view name) {
  const std::string key = Lower(name);
  for (const auto& e : Catalogue()) {
    if (Lower(e.name) == key || Lower(e.hf_id) == key) return &e;
  }
  return nullptr;
}

ModelConfig LoadModel(std::string_view name) {
  const CatalogueEntry* e = FindModel(name);
  if (e == nullptr) {
    const std::string key = Lower(name);
    std::vector<std::pair<size_t, std::string>> close;
    for (const auto& c : Catalogue()) {
      const size_t d = c.name.find(key) != std::string::npos ? 0 : Distance(key, c.name);
      close.emplace_back(d, c.name);
    }
    std::sort(close.begin(), close.end());
    std::string hint;
    for (size_t i = 0; i < std::min<size_t>(3, close.size()); ++i) {
      hint += (i ? ", " : "") + close[i].second;
    }
    throw Error(attnkit::detail::StrCat("unknown model '", name, "' (closest: ", hint,
                                        "; `attnkit list` shows all)"));
  }
  ModelConfig m = ReadHfConfigText(e->config_json, "catalogue:" + e->name);
  m.name = e->name;
  m.source = e->source;
  return m;
}

std::vector<std::string> ModelsWhere(const std::function<bool(const ModelConfig&)>& pred) {
  std::vector<std::string> names;
  for (const auto& e : Catalogue()) {
    if (pred(LoadModel(e.name))) names.push_back(e.name);
  }
  return names;
}

std::vector<std::string> ModelsWithKind(LayerKind kind) {
  return ModelsWhere([kind](const ModelConfig& m) { return m.Count(kind) > 0; });
}

ModelConfig LoadModelOrFile(const std::string& name_or_path, const ReadOptions& options) {
  if (FindModel(name_or_path) != nullptr) return LoadModel(name_or_path);
  struct stat st {};
  if (::stat(name_or_path.c_str(), &st) == 0 || name_or_path.find('/') != std::string::npos ||
      name_or_path.ends_with(".json")) {
    return ReadHfConfig(name_or_path, options);
  }
  return LoadModel(name_or_path);  // throws with suggestions
}

}  // namespace attnkit::models

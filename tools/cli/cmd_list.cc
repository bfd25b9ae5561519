// `attnkit list`: the built-in catalogue of real architectures, and (--kinds) the layer-kind
// table.
#include <cstdio>
#include <iostream>

#include "attnkit/models/catalogue.h"
#include "attnkit/models/cost.h"
#include "attnkit/models/kinds.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

using namespace attnkit::models;

// The layer-kind table (models/kinds.h), one row per kind.
int ListKinds(bool json) {
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  if (!json) {
    std::printf("%-15s %-4s %-9s %-22s %-8s %-8s %s\n", "kind", "char", "keeps", "label", "colour",
                "guide", "config.json layer_types");
  }
  for (LayerKind k : AllLayerKinds()) {
    const LayerKindInfo& row = KindInfo(k);
    const char* keeps = row.memory == LayerMemory::kKvCache ? "KV cache"
                        : row.memory == LayerMemory::kState ? "state"
                                                            : "-";
    std::string types;
    for (const auto& t : row.layer_types) types += (types.empty() ? "" : ", ") + t;
    if (json) {
      nlohmann::ordered_json j;
      j["kind"] = row.name;
      j["pattern"] = std::string(1, row.pattern);
      j["keeps"] = keeps;
      j["label"] = row.label;
      j["color"] = row.color;
      j["guide_section"] = row.guide_section;
      j["layer_types"] = row.layer_types;
      j["block"] = row.plan != nullptr ? "yes" : row.no_block;
      all.push_back(std::move(j));
    } else {
      std::printf("%-15s %-4c %-9s %-22s %-8s %-8s %s\n", row.name.c_str(), row.pattern, keeps,
                  row.label.c_str(), row.color.c_str(),
                  row.guide_section.empty() ? "-" : row.guide_section.c_str(),
                  types.empty() ? "-" : types.c_str());
    }
  }
  if (json) std::cout << all.dump() << "\n";
  return 0;
}

int RunList(const std::vector<std::string>& args) {
  ArgParser p("attnkit list [--kinds] [--json]",
              "The built-in catalogue of open-weight architectures: layer kinds and KV bytes per "
              "token (bf16), with the source of each. --kinds lists the layer-kind table instead.");
  p.AddFlag("kinds",
            "list the layer kinds (name, pattern character, cache or state, colour, "
            "guide section, config.json names)");
  p.AddFlag("json", "print one JSON array");
  if (!p.Parse(args)) return 0;
  if (p.Flag("kinds")) return ListKinds(p.Flag("json"));
  nlohmann::ordered_json all = nlohmann::ordered_json::array();
  if (!p.Flag("json")) {
    std::printf("%-24s %-14s %6s %12s  %s\n", "name", "family", "layers", "KV B/token",
                "layers by kind");
  }
  for (const auto& e : Catalogue()) {
    const ModelConfig m = LoadModel(e.name);
    const CostReport r = Cost(m, CostQuery{});
    if (p.Flag("json")) {
      nlohmann::ordered_json j;
      j["name"] = e.name;
      j["hf_id"] = e.hf_id;
      j["family"] = e.family;
      j["model_type"] = m.model_type;
      j["num_layers"] = m.layers.size();
      j["summary"] = m.Summary();
      j["pattern"] = m.Pattern();
      j["kv_bytes_per_token_bf16"] = r.kv_bytes_per_token;
      j["indexer_bytes_per_token_bf16"] = r.indexer_bytes_per_token;
      j["state_bytes_f32"] = r.state_bytes;
      j["source"] = e.source;
      all.push_back(std::move(j));
    } else {
      std::printf("%-24s %-14s %6zu %12s  %s\n", e.name.c_str(), e.family.c_str(), m.layers.size(),
                  GroupDigits(r.kv_bytes_per_token).c_str(), m.Summary().c_str());
    }
  }
  if (p.Flag("json")) {
    std::cout << all.dump() << "\n";
  } else {
    std::printf(
        "\n%zu models; `attnkit kv --model NAME` for details, sources in `attnkit list --json`.\n",
        Catalogue().size());
  }
  return 0;
}

const CommandRegistrar kRegistrar({"list", "the built-in catalogue of real model architectures",
                                   RunList});

}  // namespace
}  // namespace attnkit::cli

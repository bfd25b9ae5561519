// `attnkit list`: the built-in catalogue of real architectures.
#include <cstdio>
#include <iostream>

#include "attnkit/models/catalogue.h"
#include "attnkit/models/cost.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

using namespace attnkit::models;

int RunList(const std::vector<std::string>& args) {
  ArgParser p("attnkit list [--json]",
              "The built-in catalogue of open-weight architectures: layer kinds and KV bytes per "
              "token (bf16), with the source of each.");
  p.AddFlag("json", "print one JSON array");
  if (!p.Parse(args)) return 0;
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

// `attnkit compare`: KV cache and state of several models side by side at several contexts.
#include <cstdio>
#include <iostream>
#include <sstream>

#include "attnkit/core/error.h"
#include "attnkit/models/catalogue.h"
#include "attnkit/models/cost.h"
#include "command.h"
#include "model_args.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

using namespace attnkit::models;

std::vector<int64_t> ParseContexts(const std::string& text) {
  std::vector<int64_t> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    const int64_t v = ParseSize(item, "--context");
    Require(v >= 1, "--context: each context must be >= 1, got ", v);
    out.push_back(v);
  }
  Require(!out.empty(), "--context: expected a list such as 32k,128k,1m");
  return out;
}

int RunCompare(const std::vector<std::string>& args) {
  ArgParser p(
      "attnkit compare A B C ... [--context 32k,128k,1m] [--batch 1] [--dtype bf16] "
      "[--allow-unknown] [--json]",
      "KV bytes per token and the whole cache (KV + indexer + fixed state) of several "
      "models at several context lengths.");
  p.AddPositional("models", "catalogue names or config.json paths", 1, -1);
  p.AddOption("context", "32k,128k,1m", "comma-separated contexts (k = 1024, m = 1024^2)");
  AddCostOptions(p);
  AddReadOptions(p);
  p.AddFlag("json", "one JSON object per model and context, one per line");
  if (!p.Parse(args)) return 0;
  const std::vector<int64_t> contexts = ParseContexts(p.Get("context"));
  CostQuery q = ReadCostOptions(p);
  std::vector<ModelConfig> models;
  for (const auto& name : p.Positionals()) models.push_back(LoadModelArg(p, name));

  if (!p.Flag("json")) {
    std::printf("%-26s %12s %10s", "model", "KV B/token", "state");
    for (int64_t c : contexts) std::printf(" %12s", ("@" + HumanTokens(c)).c_str());
    std::printf("  layers\n");
  }
  for (const auto& m : models) {
    std::vector<CostReport> rs;
    for (int64_t c : contexts) {
      q.context = c;
      rs.push_back(Cost(m, q));
    }
    if (p.Flag("json")) {
      for (const auto& r : rs) std::cout << CostReportToJson(m, r, false) << "\n";
      continue;
    }
    const std::string est = EstimateMark(m);
    std::string per_token = est + GroupDigits(rs[0].kv_bytes_per_token);
    if (rs[0].indexer_bytes_per_token > 0) {
      per_token += "+" + GroupDigits(rs[0].indexer_bytes_per_token);
    }
    std::printf("%-26s %12s %10s", m.name.c_str(), per_token.c_str(),
                rs[0].state_bytes > 0
                    ? (est + HumanBytes(static_cast<double>(rs[0].state_bytes))).c_str()
                    : "-");
    for (const auto& r : rs)
      std::printf(" %12s", (est + HumanBytes(static_cast<double>(r.total_bytes))).c_str());
    std::printf("  %s\n", m.Summary().c_str());
  }
  if (!p.Flag("json")) {
    std::printf(
        "\ncache = KV + DSA indexer + fixed state, batch %lld, %s cache, %s state; "
        "GB = 10^9 bytes\n",
        static_cast<long long>(q.batch), std::string(DtypeName(q.cache_dtype)).c_str(),
        std::string(DtypeName(q.state_dtype)).c_str());
    for (const auto& m : models) {
      if (m.IsEstimate()) std::printf("%s\n", EstimateNote(m).c_str());
    }
  }
  return 0;
}

const CommandRegistrar kRegistrar({"compare", "KV cache of several models at several contexts",
                                   RunCompare});

}  // namespace
}  // namespace attnkit::cli

// Options shared by the model subcommands (kv, compare, card): batch, cache / state dtypes and
// --allow-unknown.
#pragma once

#include "attnkit/core/error.h"
#include "attnkit/models/catalogue.h"
#include "attnkit/models/cost.h"
#include "command.h"

namespace attnkit::cli {

// Declares --batch (when with_batch), --dtype and --state-dtype.
inline void AddCostOptions(ArgParser& p, bool with_batch = true) {
  if (with_batch) p.AddOption("batch", "1", "sequences held at once");
  p.AddOption("dtype", "bf16", "cache dtype: f32, bf16, f16, fp8, int8");
  p.AddOption("state-dtype", "f32", "recurrent / conv state dtype");
}

// Declares --allow-unknown.
inline void AddReadOptions(ArgParser& p) {
  p.AddFlag("allow-unknown",
            "read past config.json fields that change attention but are not modelled "
            "(compress_ratios, unknown layer_types, ...); every figure is then marked as an "
            "estimate that ignores them");
}

// A catalogue name or a config.json path, read with what AddReadOptions declared.
inline models::ModelConfig LoadModelArg(const ArgParser& p, const std::string& name_or_path) {
  models::ReadOptions o;
  o.allow_unknown = p.Flag("allow-unknown");
  return models::LoadModelOrFile(name_or_path, o);
}

// "~" before each figure of a description read past unmodelled fields (an estimate).
inline const char* EstimateMark(const models::ModelConfig& m) { return m.IsEstimate() ? "~" : ""; }

// One line naming what an estimate ignores, or "" for a fully understood description.
inline std::string EstimateNote(const models::ModelConfig& m) {
  if (!m.IsEstimate()) return "";
  std::string list;
  for (const auto& u : m.unmodelled) list += (list.empty() ? "" : ", ") + u;
  return "ESTIMATE (~): " + m.name + " was read with --allow-unknown; its figures ignore " + list;
}

// Reads what AddCostOptions declared into a query (context left at its default).
inline models::CostQuery ReadCostOptions(const ArgParser& p, bool with_batch = true) {
  models::CostQuery q;
  if (with_batch) {
    q.batch = p.GetInt("batch");
    Require(q.batch >= 1, "--batch must be >= 1, got ", q.batch);
  }
  q.cache_dtype = models::ParseCacheDtype(p.Get("dtype"));
  q.state_dtype = models::ParseCacheDtype(p.Get("state-dtype"));
  return q;
}

}  // namespace attnkit::cli

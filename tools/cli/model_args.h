// Options shared by the model subcommands (kv, compare, card): batch and cache / state dtypes.
#pragma once

#include "attnkit/core/error.h"
#include "attnkit/models/cost.h"
#include "command.h"

namespace attnkit::cli {

// Declares --batch (when with_batch), --dtype and --state-dtype.
inline void AddCostOptions(ArgParser& p, bool with_batch = true) {
  if (with_batch) p.AddOption("batch", "1", "sequences held at once");
  p.AddOption("dtype", "bf16", "cache dtype: f32, bf16, f16, fp8, int8");
  p.AddOption("state-dtype", "f32", "recurrent / conv state dtype");
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

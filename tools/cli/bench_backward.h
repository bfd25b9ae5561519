// `attnkit bench backward`: backward passes of every engine family, in one run.
//
// Each family contributes its cases from its own file with a static BackwardFamilyRegistrar
// (tools/cli/bench_backward_<family>.cc; the measurement code lives in the library under
// include/attnkit/bench/), so adding a family touches no other file:
//
//   const BackwardFamilyRegistrar kLinear({"linear", [](const bench::BackwardBenchConfig& c) {
//     return bench::BenchLinearBackward(c);   // std::vector<bench::BackwardCase>
//   }});
//
// Families run in name order; tools/cli/bench_backward.cc measures the sgemm ceiling once and
// prints every family's cases in the same table (and JSON).
#pragma once

#include <functional>
#include <string>
#include <vector>

#include "attnkit/bench/backward.h"

namespace attnkit::cli {

struct BackwardFamily {
  std::string name;
  std::function<std::vector<bench::BackwardCase>(const bench::BackwardBenchConfig&)> cases;
};

void RegisterBackwardFamily(BackwardFamily family);

struct BackwardFamilyRegistrar {
  explicit BackwardFamilyRegistrar(BackwardFamily family) {
    RegisterBackwardFamily(std::move(family));
  }
};

}  // namespace attnkit::cli

// `attnkit info`: the facts a benchmark depends on (CPU, SIMD target, threads, version).
#include <iostream>

#include "attnkit/core/runtime.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

int RunInfo(const std::vector<std::string>& args) {
  ArgParser p("attnkit info [--json]", "Print the machine facts attnkit's measurements depend on.");
  p.AddFlag("json", "print one JSON object");
  if (!p.Parse(args)) return 0;
  nlohmann::json j = {{"version", Version()},
                      {"cpu", CpuModelName()},
                      {"simd_target", SimdTargetName()},
                      {"compiled_targets", CompiledTargets()},
                      {"threads", GetNumThreads()}};
  if (p.Flag("json")) {
    std::cout << j.dump() << "\n";
  } else {
    for (const auto& [k, v] : j.items()) std::cout << k << ": " << v << "\n";
  }
  return 0;
}

const CommandRegistrar kRegistrar({"info", "machine facts: CPU, SIMD target, threads", RunInfo});

}  // namespace
}  // namespace attnkit::cli

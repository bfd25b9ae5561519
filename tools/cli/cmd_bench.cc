// `attnkit bench <family> [options]`: dispatches to the benchmark families in bench_*.cc.
#include <algorithm>
#include <iostream>

#include "attnkit/core/error.h"
#include "bench.h"
#include "command.h"

namespace attnkit::cli {

namespace {
std::map<std::string, BenchFamily>& Registry() {
  static std::map<std::string, BenchFamily> families;  // function-local: safe static init order
  return families;
}
}  // namespace

void RegisterBenchFamily(BenchFamily family) {
  std::string name = family.name;
  Registry()[name] = std::move(family);
}

const std::map<std::string, BenchFamily>& BenchFamilies() { return Registry(); }

namespace {

std::string Usage() {
  std::string s =
      "usage: attnkit bench <family> [options]   (attnkit bench <family> --help for details)\n\n"
      "Measures attnkit's kernels against this machine's own ceilings (OpenBLAS sgemm, memory\n"
      "read bandwidth) and a naive BLAS baseline, in one process. `bench all` runs every\n"
      "family's default cases in turn (extra options are passed to each).\n\nfamilies:\n";
  for (const auto& [name, f] : BenchFamilies()) {
    std::string left = "  " + name;
    if (left.size() < 12) left.resize(12, ' ');
    s += left + " " + f.summary + "\n";
  }
  return s;
}

int RunBench(const std::vector<std::string>& args) {
  if (args.empty() || args[0] == "--help" || args[0] == "-h") {
    std::cout << Usage();
    return args.empty() ? 2 : 0;
  }
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  if (args[0] == "all") {
    int rc = 0;
    for (const auto& [name, f] : BenchFamilies()) rc = std::max(rc, f.run(rest));
    return rc;
  }
  const auto it = BenchFamilies().find(args[0]);
  Require(it != BenchFamilies().end(), "unknown benchmark family '", args[0],
          "' (see attnkit bench --help)");
  return it->second.run(rest);
}

const CommandRegistrar kRegistrar({"bench", "benchmarks: bench <family> (see bench --help)",
                                   RunBench});

}  // namespace
}  // namespace attnkit::cli

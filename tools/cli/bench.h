// `attnkit bench <family>`: a registry of benchmark families.
//
// Each family (dense, blocks, sparse, linear, ...) lives in its own tools/cli/bench_<family>.cc and
// registers itself with a static BenchRegistrar; tools/cli/cmd_bench.cc only dispatches, so adding
// a family touches no other file:
//
//   namespace attnkit::cli {
//   namespace {
//   int RunBenchSparse(const std::vector<std::string>& args) {   // args after the family name
//     ArgParser p("attnkit bench sparse [options]", "...");
//     ...
//   }
//   const BenchRegistrar kSparse({"sparse", "block-sparse kernels vs dense", RunBenchSparse});
//   }  // namespace
//   }  // namespace attnkit::cli
//
// Conventions every family follows: the default run (no flags) covers its issue's target cases
// in under ~3 minutes on 2 cores; ceilings (sgemm, read bandwidth) are measured in the same
// process; `--json` prints one JSON object per case on stdout; progress goes to stderr
// (attnkit/core/progress.h). The measurement code itself lives in the library
// (include/attnkit/bench/<family>.h) so the visual guide can reuse it.
#pragma once

#include <functional>
#include <map>
#include <string>
#include <vector>

namespace attnkit::cli {

struct BenchFamily {
  std::string name;
  std::string summary;  // one line for `attnkit bench --help`
  std::function<int(const std::vector<std::string>& args)> run;
};

void RegisterBenchFamily(BenchFamily family);
const std::map<std::string, BenchFamily>& BenchFamilies();

struct BenchRegistrar {
  explicit BenchRegistrar(BenchFamily family) { RegisterBenchFamily(std::move(family)); }
};

}  // namespace attnkit::cli

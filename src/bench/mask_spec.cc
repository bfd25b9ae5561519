// `--mask none | causal | window:W | chunk:C` of the dense and backward benchmarks. Kept apart
// from the benchmark code so that the fuzz target fuzz/cli_args_fuzz.cc can build it alone.
#include <string>

#include "attnkit/bench/dense.h"
#include "attnkit/core/error.h"
#include "attnkit/core/parse.h"
#include "attnkit/masks/mask.h"

namespace attnkit::bench {

MaskPtr ParseMaskSpec(const std::string& spec) {
  if (spec == "none" || spec.empty()) return nullptr;
  if (spec == "causal") return CausalMask();
  auto number = [&](size_t pos) {
    const int64_t w = ParseInteger(spec.substr(pos), "mask '" + spec + "'");
    Require(w >= 1, "mask '", spec, "': expected a positive integer after ':'");
    return w;
  };
  if (spec.rfind("window:", 0) == 0) return CausalWindowMask(number(7));
  if (spec.rfind("chunk:", 0) == 0) return ChunkedLocalMask(number(6));
  throw Error("mask '" + spec + "': expected none, causal, window:W or chunk:C");
}

}  // namespace attnkit::bench

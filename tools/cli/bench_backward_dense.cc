// The dense engine's cases of `attnkit bench backward` (see bench_backward.h).
#include "attnkit/bench/backward.h"
#include "bench_backward.h"

namespace attnkit::cli {
namespace {
const BackwardFamilyRegistrar kDense({"dense", bench::BenchDenseBackward});
}  // namespace
}  // namespace attnkit::cli

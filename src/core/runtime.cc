// Run-time settings (threads) and facts (SIMD target, CPU model) for the whole library.
#include "attnkit/core/runtime.h"

#include <omp.h>

#include <atomic>
#include <fstream>
#include <string>

#include "attnkit/core/error.h"
#include "hwy/highway.h"
#include "hwy/targets.h"

namespace attnkit {
namespace {
std::atomic<int> g_num_threads{0};
}  // namespace

void SetNumThreads(int n) {
  Require(n >= 1, "SetNumThreads: n must be >= 1, got ", n);
  Require(n <= kMaxThreads, "SetNumThreads: n must be <= ", kMaxThreads, ", got ", n);
  g_num_threads.store(n);
}

int GetNumThreads() {
  const int n = g_num_threads.load();
  return n > 0 ? n : omp_get_max_threads();
}

int ResolveThreads(int requested) {
  Require(requested >= 0, "num_threads must be >= 0 (0 = the global setting), got ", requested);
  Require(requested <= kMaxThreads, "num_threads must be <= ", kMaxThreads, ", got ", requested);
  return requested > 0 ? requested : GetNumThreads();
}

std::string SimdTargetName() {
  const int64_t usable = hwy::SupportedTargets() & HWY_TARGETS;
  if (usable == 0) return "none";
  const int64_t best = usable & -usable;  // smaller bit = better target
  return hwy::TargetName(best);
}

std::string CompiledTargets() {
  std::string out;
  for (int64_t t = 1; t != 0 && t <= HWY_TARGETS; t <<= 1) {
    if ((HWY_TARGETS & t) == 0) continue;
    if (!out.empty()) out += ",";
    out += hwy::TargetName(t);
  }
  return out;
}

std::string CpuModelName() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("model name", 0) == 0) {
      const auto pos = line.find(':');
      if (pos != std::string::npos && pos + 2 <= line.size()) return line.substr(pos + 2);
    }
  }
  return "unknown";
}

std::string Version() { return ATTNKIT_VERSION; }

}  // namespace attnkit

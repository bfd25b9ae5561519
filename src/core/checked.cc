// Checked allocations (see core/checked.h): the size limit, the out-of-memory message and the
// allocation-failure test hook.
#include "attnkit/core/checked.h"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>

namespace attnkit::detail {
namespace {
std::atomic<int64_t> g_fail_nth{0};
}  // namespace

static std::string Bytes(double bytes) {
  char buf[64];
  if (bytes >= 1e9) {
    std::snprintf(buf, sizeof buf, "%.3g GB", bytes / 1e9);
  } else if (bytes >= 1e6) {
    std::snprintf(buf, sizeof buf, "%.3g MB", bytes / 1e6);
  } else {
    std::snprintf(buf, sizeof buf, "%.0f bytes", bytes);
  }
  return buf;
}

void CheckAllocation(double bytes, const char* fn, const char* what) {
  Require(bytes <= kMaxAllocationBytes, fn, ": ", what, " needs ", Bytes(bytes), ", more than the ",
          Bytes(kMaxAllocationBytes), " one buffer may take");
  // The test hook: count down, fail when it reaches zero (then switch off).
  int64_t n = g_fail_nth.load(std::memory_order_relaxed);
  while (n > 0) {
    if (g_fail_nth.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
      if (n == 1) ThrowAllocationFailed(bytes, fn, what);
      break;
    }
  }
}

void ThrowAllocationFailed(double bytes, const char* fn, const char* what) {
  throw Error(StrCat(fn, ": cannot allocate ", what, " (", Bytes(bytes), "): out of memory"));
}

int64_t FailNthAllocation(int64_t nth) { return g_fail_nth.exchange(nth < 0 ? 0 : nth); }

}  // namespace attnkit::detail

namespace attnkit {

int64_t MemAvailableBytes() {
  return std::max<int64_t>(0, ProcFieldBytes("/proc/meminfo", "MemAvailable"));
}

int64_t ProcFieldBytes(const char* path, const char* field) {
  std::ifstream in(path);
  std::string line;
  const std::string key = std::string(field) + ":";
  while (std::getline(in, line)) {
    if (line.rfind(key, 0) == 0) {
      long long kb = -1;
      std::istringstream(line.substr(key.size())) >> kb;
      return kb < 0 ? -1 : kb * 1024;
    }
  }
  return -1;
}

bool ResetPeakResident() {
  std::ofstream out("/proc/self/clear_refs");
  if (!out) return false;
  out << "5";
  out.flush();
  return static_cast<bool>(out);
}

void RequireFitsInMemory(double bytes, const std::string& what) {
  const double available = static_cast<double>(MemAvailableBytes());
  if (available <= 0) return;
  Require(bytes <= 0.8 * available, what, " needs about ", detail::Bytes(bytes),
          ", more than 80% of the ", detail::Bytes(available), " available now");
}

}  // namespace attnkit

#include "core/scratch.h"

#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <new>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/core/runtime.h"

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace attnkit {
namespace detail {
namespace {

constexpr size_t kHugePage = size_t{2} << 20;

struct Block {
  void* p;
  size_t capacity;
};

class Pool {
 public:
  void* Take(size_t bytes, size_t align, size_t* capacity) {
    std::lock_guard<std::mutex> lock(mu_);
    // The smallest pooled block that fits, is aligned as asked and wastes at most half of itself.
    size_t best = free_.size();
    for (size_t i = 0; i < free_.size(); ++i) {
      const size_t c = free_[i].capacity;
      const bool aligned = reinterpret_cast<uintptr_t>(free_[i].p) % align == 0;
      if (aligned && c >= bytes && c / 2 <= bytes &&
          (best == free_.size() || c < free_[best].capacity)) {
        best = i;
      }
    }
    if (best == free_.size()) return nullptr;
    const Block b = free_[best];
    free_.erase(free_.begin() + static_cast<std::ptrdiff_t>(best));
    held_ -= b.capacity;
    *capacity = b.capacity;
    return b.p;
  }

  void Give(void* p, size_t capacity) noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    if (capacity > kScratchPoolBytes) {
      std::free(p);
      return;
    }
    // Make room by dropping the oldest blocks.
    while (held_ + capacity > kScratchPoolBytes && !free_.empty()) {
      std::free(free_.front().p);
      held_ -= free_.front().capacity;
      free_.erase(free_.begin());
    }
    try {
      free_.push_back({p, capacity});
      held_ += capacity;
    } catch (...) {
      std::free(p);
    }
  }

  void Clear() noexcept {
    std::lock_guard<std::mutex> lock(mu_);
    for (const Block& b : free_) std::free(b.p);
    free_.clear();
    held_ = 0;
  }

 private:
  std::mutex mu_;
  std::vector<Block> free_;
  size_t held_ = 0;
};

// Never destroyed: a kernel may still return a block during static destruction (a static
// object's destructor that runs attention, a thread still working at exit). Still reachable
// through this pointer, so leak checkers do not report the blocks it holds.
Pool& ThePool() {
  static Pool* const pool = new Pool;
  return *pool;
}

}  // namespace

void* AcquireScratch(size_t bytes, size_t* capacity) {
  CheckAllocation(static_cast<double>(bytes), "kernel scratch", "a scratch buffer");
  const size_t align = bytes >= kHugePage ? kHugePage : 64;
  const size_t rounded = (bytes + align - 1) / align * align;
  if (void* p = ThePool().Take(rounded, align, capacity)) return p;
  void* p = std::aligned_alloc(align, rounded);
  if (p == nullptr) {
    ThrowAllocationFailed(static_cast<double>(bytes), "kernel scratch", "a scratch buffer");
  }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  if (align == kHugePage) madvise(p, rounded, MADV_HUGEPAGE);  // advice only: failure is harmless
#endif
  *capacity = rounded;
  return p;
}

void ReturnScratch(void* p, size_t capacity) noexcept { ThePool().Give(p, capacity); }

}  // namespace detail

void ReleaseScratchMemory() { detail::ThePool().Clear(); }

}  // namespace attnkit

// Uninitialised scratch memory for kernels: pooled between calls, backed by huge pages.
//
// Kernels allocate their packed tiles per call. Touching 16 MiB of fresh pages costs 4096 page
// faults, which on a machine with expensive faults (a virtual machine) can cost more than the
// attention itself for a sparse pattern (figures: docs/BENCHMARKS.md, "Measurements behind code
// choices"). So:
//  * buffers of 2 MiB or more are 2 MiB-aligned and advised as transparent huge pages (Linux
//    `madvise(MADV_HUGEPAGE)`, honoured when THP is `always` or `madvise`): 4096 faults become 8;
//  * a released buffer goes back to a small process-wide pool (at most kScratchPoolBytes) and
//    the next call of similar size takes it, already faulted in: no faults and no kernel page
//    zeroing at all in a loop of calls. attnkit::ReleaseScratchMemory() empties the pool.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

namespace attnkit::detail {

inline constexpr size_t kScratchPoolBytes = size_t{96} << 20;

// Raw pooled allocation (bytes rounded up; 64-byte aligned at least). Thread-safe.
void* AcquireScratch(size_t bytes, size_t* capacity);
void ReturnScratch(void* p, size_t capacity) noexcept;

template <typename T>
class Scratch {
 public:
  Scratch() = default;
  explicit Scratch(size_t count) {
    if (count > 0) p_ = static_cast<T*>(AcquireScratch(count * sizeof(T), &capacity_));
  }
  Scratch(Scratch&& o) noexcept
      : p_(std::exchange(o.p_, nullptr)), capacity_(std::exchange(o.capacity_, 0)) {}
  Scratch& operator=(Scratch&& o) noexcept {
    if (this != &o) {
      Reset();
      p_ = std::exchange(o.p_, nullptr);
      capacity_ = std::exchange(o.capacity_, 0);
    }
    return *this;
  }
  Scratch(const Scratch&) = delete;
  Scratch& operator=(const Scratch&) = delete;
  ~Scratch() { Reset(); }

  T* get() const { return p_; }
  explicit operator bool() const { return p_ != nullptr; }

 private:
  void Reset() noexcept {
    if (p_ != nullptr) ReturnScratch(p_, capacity_);
    p_ = nullptr;
    capacity_ = 0;
  }
  T* p_ = nullptr;
  size_t capacity_ = 0;
};

}  // namespace attnkit::detail

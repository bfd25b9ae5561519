// Checked sizes and allocations: every product of caller-supplied sizes goes through here before
// it is used to allocate or index, and every allocation whose size a caller chose reports failure
// as attnkit::Error (never std::bad_alloc / std::length_error), stating how much was asked for.
//
//   const int64_t n = CheckedProduct({batch, capacity, dim}, "IndexerCache", "batch*capacity*dim");
//   CheckedResize(data_, n, "IndexerCache", "the key buffer");
//
// Argument checkers (a kernel's, a layer's, a front end's) call these; they hold no state apart
// from the allocation-failure test hook below.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "attnkit/core/error.h"

namespace attnkit {

// Largest single buffer attnkit allocates for a caller (1 TB): beyond it a size is a mistake.
inline constexpr double kMaxAllocationBytes = 1e12;

// a·b for non-negative sizes; attnkit::Error "<fn>: <what> = a × b overflows" when an operand is
// negative or the product exceeds int64.
inline int64_t CheckedMul(int64_t a, int64_t b, const char* fn, const char* what) {
  Require(a >= 0 && b >= 0, fn, ": ", what, " has a negative factor (", a, " × ", b, ")");
  int64_t r = 0;
  Require(!__builtin_mul_overflow(a, b, &r), fn, ": ", what, " = ", a, " × ", b,
          " overflows a 64-bit size");
  return r;
}

inline int64_t CheckedAdd(int64_t a, int64_t b, const char* fn, const char* what) {
  int64_t r = 0;
  Require(!__builtin_add_overflow(a, b, &r), fn, ": ", what, " = ", a, " + ", b,
          " overflows a 64-bit size");
  return r;
}

// The product of non-negative sizes, checked at every step.
inline int64_t CheckedProduct(std::initializer_list<int64_t> sizes, const char* fn,
                              const char* what) {
  int64_t r = 1;
  for (const int64_t s : sizes) r = CheckedMul(r, s, fn, what);
  return r;
}

namespace detail {
// Called before every checked allocation of `bytes`: throws attnkit::Error when the size is above
// kMaxAllocationBytes or when the test hook says this allocation must fail.
void CheckAllocation(double bytes, const char* fn, const char* what);
// attnkit::Error "<fn>: cannot allocate <what> (<bytes> bytes): out of memory".
[[noreturn]] void ThrowAllocationFailed(double bytes, const char* fn, const char* what);

// Test hook: the nth checked allocation from now (1 = the next one) fails as if the machine were
// out of memory; 0 turns it off. Process-wide. Returns the previous setting.
int64_t FailNthAllocation(int64_t nth);
}  // namespace detail

// count elements of T, checked (size limit, overflow, test hook); std::bad_alloc and
// std::length_error become attnkit::Error.
template <typename T>
void CheckedResize(std::vector<T>& v, int64_t count, const char* fn, const char* what) {
  Require(count >= 0, fn, ": ", what, " has a negative size ", count);
  const double bytes = static_cast<double>(count) * sizeof(T);
  if (static_cast<size_t>(count) > v.capacity()) detail::CheckAllocation(bytes, fn, what);
  try {
    v.resize(static_cast<size_t>(count));
  } catch (const std::bad_alloc&) {
    detail::ThrowAllocationFailed(bytes, fn, what);
  } catch (const std::length_error&) {
    detail::ThrowAllocationFailed(bytes, fn, what);
  }
}

// Same, for a fresh vector of `count` copies of `value`.
template <typename T>
std::vector<T> CheckedVector(int64_t count, const T& value, const char* fn, const char* what) {
  std::vector<T> v;
  Require(count >= 0, fn, ": ", what, " has a negative size ", count);
  detail::CheckAllocation(static_cast<double>(count) * sizeof(T), fn, what);
  try {
    v.assign(static_cast<size_t>(count), value);
  } catch (const std::bad_alloc&) {
    detail::ThrowAllocationFailed(static_cast<double>(count) * sizeof(T), fn, what);
  } catch (const std::length_error&) {
    detail::ThrowAllocationFailed(static_cast<double>(count) * sizeof(T), fn, what);
  }
  return v;
}

// MemAvailable of this machine (Linux /proc/meminfo) in bytes; 0 when unknown.
int64_t MemAvailableBytes();
// A "Key:   123 kB" field of a /proc file in bytes (e.g. ("/proc/meminfo", "MemTotal")); -1
// where the file or the field is absent (not Linux).
int64_t ProcFieldBytes(const char* path, const char* field);
// A field of /proc/self/status in bytes ("VmRSS", "VmHWM"); -1 where absent.
inline int64_t ProcStatusBytes(const char* field) {
  return ProcFieldBytes("/proc/self/status", field);
}
// Resets the process's resident high-water mark (VmHWM) to its current resident size (Linux
// >= 4.0, through /proc/self/clear_refs); false where refused.
bool ResetPeakResident();

// For front ends (bench, stack, probe, ...) before work whose memory the caller chose: throws
// attnkit::Error "<what> needs about X GB, more than 80% of the Y GB available now" when `bytes`
// does not fit; no check when the available memory is unknown.
void RequireFitsInMemory(double bytes, const std::string& what);

}  // namespace attnkit

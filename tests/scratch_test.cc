// The kernels' pooled scratch memory (src/core/scratch.h): alignment promises, reuse, release.
#include "core/scratch.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "attnkit/core/runtime.h"

namespace attnkit {
namespace {

constexpr size_t kHuge = size_t{2} << 20;

uintptr_t Address(const void* p) { return reinterpret_cast<uintptr_t>(p); }

TEST(Scratch, BlocksOfTwoMebibytesOrMoreAreHugePageAligned) {
  ReleaseScratchMemory();
  for (const size_t bytes : {size_t{100}, kHuge - 16, kHuge, kHuge + 1, 5 * kHuge}) {
    detail::Scratch<char> s(bytes);
    ASSERT_NE(s.get(), nullptr);
    EXPECT_EQ(Address(s.get()) % 64, 0u) << bytes;
    if (bytes >= kHuge) {
      EXPECT_EQ(Address(s.get()) % kHuge, 0u) << bytes;
    }
    s.get()[0] = 1;  // writable across the whole request
    s.get()[bytes - 1] = 1;
  }
}

TEST(Scratch, APooledBlockIsReusedOnlyWhenItFitsTheAlignment) {
  ReleaseScratchMemory();
  { detail::Scratch<char> small(kHuge - 16); }  // pooled: 64-byte aligned, capacity 2 MiB
  detail::Scratch<char> big(kHuge);             // may take it only if it is 2 MiB aligned
  EXPECT_EQ(Address(big.get()) % kHuge, 0u);
  ReleaseScratchMemory();
  const void* p = nullptr;
  {
    detail::Scratch<char> first(kHuge);
    p = first.get();
  }
  detail::Scratch<char> again(kHuge);
  EXPECT_EQ(again.get(), p);  // a loop of calls of one size reuses the same memory
}

TEST(Scratch, ConcurrentUseFromManyThreadsHandsOutDistinctBlocks) {
  ReleaseScratchMemory();
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([t, &ok] {
      int good = 1;
      for (int i = 0; i < 200; ++i) {
        detail::Scratch<int> s(static_cast<size_t>(1000 + 37 * t));
        for (int j = 0; j < 1000; ++j) s.get()[j] = t;
        for (int j = 0; j < 1000; ++j) good &= s.get()[j] == t ? 1 : 0;
      }
      ok[static_cast<size_t>(t)] = good;
    });
  }
  for (auto& th : threads) th.join();
  for (int t = 0; t < 8; ++t) EXPECT_EQ(ok[static_cast<size_t>(t)], 1) << t;
}

}  // namespace
}  // namespace attnkit

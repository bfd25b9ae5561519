// Shared helpers for attnkit's tests: random tensors and error metrics.
#pragma once

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <string>
#include <string_view>

#include "attnkit/core/tensor.h"

namespace attnkit::testing {

// The seed of every randomized test: a fixed default, so a run is reproducible; ATTNKIT_TEST_SEED=N
// replays seed N, and ATTNKIT_TEST_SEED=random draws a fresh one (scripts/test.sh has one job that
// does, so coverage of random inputs keeps growing). A failing test prints the seed that reproduces
// it (SeedPrinter below).
inline constexpr uint64_t kDefaultTestSeed = 20261208;

inline uint64_t TestSeed() {
  static const uint64_t seed = [] {
    const char* s = std::getenv("ATTNKIT_TEST_SEED");
    if (s == nullptr || *s == '\0') return kDefaultTestSeed;
    if (std::string_view(s) == "random") {
      return static_cast<uint64_t>(std::random_device{}()) << 32 ^ std::random_device{}();
    }
    char* end = nullptr;
    errno = 0;
    const unsigned long long v = std::strtoull(s, &end, 10);
    if (errno != 0 || end == s || *end != '\0') {
      std::fprintf(stderr,
                   "ATTNKIT_TEST_SEED must be a non-negative integer or 'random', got '%s'\n", s);
      std::exit(2);
    }
    return static_cast<uint64_t>(v);
  }();
  return seed;
}

// Prints the seed after every failed test (and once at start when it is not the default), so any
// randomized failure can be replayed with ATTNKIT_TEST_SEED=<seed>.
class SeedPrinter : public ::testing::EmptyTestEventListener {
  void OnTestProgramStart(const ::testing::UnitTest&) override {
    if (TestSeed() != kDefaultTestSeed) {
      std::printf("[ seed     ] ATTNKIT_TEST_SEED=%llu\n",
                  static_cast<unsigned long long>(TestSeed()));
    }
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result() != nullptr && info.result()->Failed()) {
      const auto seed = static_cast<unsigned long long>(TestSeed());
      std::printf(
          "[ seed     ] %s.%s failed with seed %llu (replay: ATTNKIT_TEST_SEED=%llu "
          "--gtest_filter=%s.%s)\n",
          info.test_suite_name(), info.name(), seed, seed, info.test_suite_name(), info.name());
    }
  }
};

// Registered once per test binary, before gtest_main runs the tests.
inline const bool kSeedPrinterRegistered = [] {
  ::testing::UnitTest::GetInstance()->listeners().Append(new SeedPrinter);
  return true;
}();

// Sanitizer builds (scripts/test.sh sets ATTNKIT_SANITIZED=1) run smaller cases.
inline bool Sanitized() { return std::getenv("ATTNKIT_SANITIZED") != nullptr; }

// A fresh scratch folder for one test under the build tree (never a fixed name in /tmp, so two
// clones or two concurrent runs on one machine do not collide); removed by the caller.
inline std::filesystem::path TestScratchDir(const std::string& name) {
  const std::filesystem::path dir =
      std::filesystem::path(ATTNKIT_TEST_SCRATCH_DIR) / (name + "-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

template <typename T>
void FillNormal(Tensor<T>& t, std::mt19937_64& rng, float stddev = 1.0f) {
  std::normal_distribution<float> dist(0.0f, stddev);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if constexpr (std::is_same_v<T, bf16>) {
      t.data()[i] = ToBf16(dist(rng));
    } else {
      t.data()[i] = dist(rng);
    }
  }
}

// max |a − b| / max(max |b|, min_scale). Log-sum-exp values take min_scale 1: they are logs, so
// an absolute error e there is a relative error e of the probabilities, however near 0 the lse.
inline double RelMaxError(TensorView<const float> a, TensorView<const float> b,
                          double min_scale = 0.0) {
  double max_diff = 0, max_ref = 0;
  for (int64_t i = 0; i < a.shape[0]; ++i) {
    for (int64_t j = 0; j < a.shape[1]; ++j) {
      for (int64_t t = 0; t < a.shape[2]; ++t) {
        for (int64_t d = 0; d < a.shape[3]; ++d) {
          const double x = a.at(i, j, t, d), y = b.at(i, j, t, d);
          if (std::isnan(x) != std::isnan(y)) return INFINITY;
          if (std::isinf(x) || std::isinf(y)) {
            if (x != y) return INFINITY;
            continue;
          }
          max_diff = std::max(max_diff, std::abs(x - y));
          max_ref = std::max(max_ref, std::abs(y));
        }
      }
    }
  }
  return max_diff / (std::max(max_ref, min_scale) + 1e-30);
}

inline bool AllFinite(TensorView<const float> a) {
  for (int64_t i = 0; i < a.shape[0]; ++i) {
    for (int64_t j = 0; j < a.shape[1]; ++j) {
      for (int64_t t = 0; t < a.shape[2]; ++t) {
        for (int64_t d = 0; d < a.shape[3]; ++d) {
          if (!std::isfinite(a.at(i, j, t, d))) return false;
        }
      }
    }
  }
  return true;
}

}  // namespace attnkit::testing

// The machine's arithmetic peak: fused multiply-adds on registers only (no memory traffic), on
// the SIMD target Highway dispatches to. No kernel can beat it; ratios against it say how close
// a kernel runs to the silicon (OpenBLAS sgemm, the other ceiling, is what a tuned library gets).
#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "bench/peak.cc"
#include "hwy/foreach_target.h"  // IWYU pragma: keep
// Must come after foreach_target.h.
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <vector>

#include "attnkit/bench/dense.h"
#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "hwy/highway.h"

HWY_BEFORE_NAMESPACE();
namespace attnkit::bench {
namespace HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;

// 2 · lanes · 12 · iters FLOPs in 12 independent chains: enough to cover 2 FMA pipes × 4 cycles
// of latency (and 2 × 5 on older cores). Returns a value that depends on every chain.
float FmaChains(int64_t iters, float seed) {
  const hn::ScalableTag<float> d;
  using V = hn::Vec<decltype(d)>;
  const V b = hn::Set(d, 0.999999f), c = hn::Set(d, 1e-7f);
  V a0 = hn::Set(d, seed), a1 = hn::Add(a0, c), a2 = hn::Add(a1, c), a3 = hn::Add(a2, c);
  V a4 = hn::Add(a3, c), a5 = hn::Add(a4, c), a6 = hn::Add(a5, c), a7 = hn::Add(a6, c);
  V a8 = hn::Add(a7, c), a9 = hn::Add(a8, c), a10 = hn::Add(a9, c), a11 = hn::Add(a10, c);
  for (int64_t i = 0; i < iters; ++i) {
    a0 = hn::MulAdd(a0, b, c), a1 = hn::MulAdd(a1, b, c), a2 = hn::MulAdd(a2, b, c);
    a3 = hn::MulAdd(a3, b, c), a4 = hn::MulAdd(a4, b, c), a5 = hn::MulAdd(a5, b, c);
    a6 = hn::MulAdd(a6, b, c), a7 = hn::MulAdd(a7, b, c), a8 = hn::MulAdd(a8, b, c);
    a9 = hn::MulAdd(a9, b, c), a10 = hn::MulAdd(a10, b, c), a11 = hn::MulAdd(a11, b, c);
  }
  const V s = hn::Add(hn::Add(hn::Add(a0, a1), hn::Add(a2, a3)),
                      hn::Add(hn::Add(hn::Add(a4, a5), hn::Add(a6, a7)),
                              hn::Add(hn::Add(a8, a9), hn::Add(a10, a11))));
  return hn::GetLane(hn::SumOfLanes(d, s));
}

int64_t FloatLanes() { return static_cast<int64_t>(hn::Lanes(hn::ScalableTag<float>())); }

}  // namespace HWY_NAMESPACE
}  // namespace attnkit::bench
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace attnkit::bench {
HWY_EXPORT(FmaChains);
HWY_EXPORT(FloatLanes);

double MeasureFmaPeakGflops(int threads, int repeats) {
  Require(repeats > 0, "MeasureFmaPeakGflops: repeats must be positive, got ", repeats);
  threads = ResolveThreads(threads);
  const int64_t iters = 4'000'000;  // ~25-50 ms per run on one core
  const double flops = 2.0 * static_cast<double>(HWY_DYNAMIC_DISPATCH(FloatLanes)()) * 12.0 *
                       static_cast<double>(iters) * threads;
  std::vector<double> gflops;
  volatile float sink = 0;
  for (int r = 0; r < repeats + 1; ++r) {  // the first run warms the clocks up
    const auto t0 = std::chrono::steady_clock::now();
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    total +=
        HWY_DYNAMIC_DISPATCH(FmaChains)(iters, 1e-3f * static_cast<float>(omp_get_thread_num()));
    const double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total;
    if (r > 0) gflops.push_back(flops / sec / 1e9);
  }
  std::sort(gflops.begin(), gflops.end());
  return gflops[gflops.size() / 2];
}

}  // namespace attnkit::bench
#endif  // HWY_ONCE

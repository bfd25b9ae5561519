// Dense-engine measurements shared by the guide's sections (prefill/decode sweeps, error).
#include "guide/dense_measure.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "attnkit/core/tensor.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/kv_cache.h"

namespace attnkit::guide::detail {
namespace {

// Three timed runs at least (so every point has a spread); short calls repeat until 0.25 s.
// The first run doubles as the warm-up only for short calls: a long call's first run is timed
// too, so a long point costs three runs, not four.
Timing TimeAdaptive(const std::function<void()>& fn) {
  return TimeRepeats(fn, 3, 9, 0.25, /*warmup=*/false);
}

}  // namespace

void FillUniform(float* data, int64_t n, uint64_t seed) {
  uint64_t s = seed * 0x9e3779b97f4a7c15ull + 1;
  for (int64_t i = 0; i < n; ++i) {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    data[i] = static_cast<float>(static_cast<int64_t>(s >> 40) - (1 << 23)) * (1.0f / (1 << 23));
  }
}

int64_t DensePrefillBytes(const DenseShape& sh, int64_t seqlen) {
  return seqlen * sh.head_dim * (2 * sh.num_heads_q + 2 * sh.num_heads_kv) *
         static_cast<int64_t>(sizeof(float));
}

int64_t DenseDecodeBytes(const DenseShape& sh, int64_t context) {
  return (context + 1) * sh.head_dim * 2 * sh.num_heads_kv * static_cast<int64_t>(sizeof(float)) +
         2 * sh.num_heads_q * sh.head_dim * static_cast<int64_t>(sizeof(float));
}

int64_t PrefillSteps(const SweepConfig& c) {
  return SweepPlannedPoints(c.prefill_first, c.prefill_last);
}
int64_t DecodeSteps(const SweepConfig& c) {
  return SweepPlannedPoints(c.decode_first, c.decode_last);
}

std::vector<SweepPoint> DensePrefillSweep(Context& ctx, const std::string& key,
                                          const std::string& label, const DenseShape& sh,
                                          const MaskPtr& mask) {
  auto& memo = ctx.memo();
  if (auto it = memo.find(key); it != memo.end()) return it->second;
  const SweepConfig& c = ctx.config();
  SweepOptions so;
  so.first = c.prefill_first;
  so.last = c.prefill_last;
  so.point_budget_seconds = c.point_budget_seconds;
  so.min_slope = 1;
  auto measure = [&](int64_t n) {
    SweepPoint p;
    p.seqlen = n;
    PeakMemory peak;
    peak.Start();
    Tensor<float> q(1, sh.num_heads_q, n, sh.head_dim), k(1, sh.num_heads_kv, n, sh.head_dim),
        v(1, sh.num_heads_kv, n, sh.head_dim), o(1, sh.num_heads_q, n, sh.head_dim);
    FillUniform(q.data(), q.numel(), 1);
    FillUniform(k.data(), k.numel(), 2);
    FillUniform(v.data(), v.numel(), 3);
    DenseStats stats;
    DenseOptions opt;
    opt.mask = mask.get();
    opt.num_threads = c.threads;
    opt.stats = &stats;
    SetTiming(p, TimeAdaptive([&] { DenseForward(q.view(), k.view(), v.view(), o.view(), opt); }));
    p.peak_bytes = peak.PeakBytes();
    p.value = stats.tiles_total > 0 ? static_cast<double>(stats.tiles_skipped) /
                                          static_cast<double>(stats.tiles_total)
                                    : 0;
    return p;
  };
  auto points = SeqlenSweep(
      so, measure,
      [&](const SweepPoint& p) { ctx.Step(label + " prefill " + FormatTokens(p.seqlen)); },
      [&](int64_t n) {
        ctx.Step(label + " prefill " + FormatTokens(n) + " skipped (time budget)");
      });
  memo[key] = points;
  return points;
}

std::vector<SweepPoint> SharedCausalSweep(Context& ctx) {
  static const MaskPtr causal = CausalMask();
  return DensePrefillSweep(ctx, "dense-causal-GQA 8q/2kv", "GQA 8q/2kv", DenseShape{8, 2, 128},
                           causal);
}

std::vector<SweepPoint> DenseDecodeSweep(Context& ctx, const std::string& key,
                                         const std::string& label, const DenseShape& sh,
                                         int64_t window) {
  auto& memo = ctx.memo();
  if (auto it = memo.find(key); it != memo.end()) return it->second;
  const SweepConfig& c = ctx.config();
  SweepOptions so;
  so.first = c.decode_first;
  so.last = c.decode_last;
  // A decode point's cost is filling the cache (bounded by the memory estimate checked before the
  // run), not the decode step timed here, so the sweep runs to its end.
  so.point_budget_seconds = 1e30;
  (void)window;
  auto measure = [&](int64_t n) {
    SweepPoint p;
    p.seqlen = n;
    PeakMemory peak;
    peak.Start();
    KvCache<float> cache(1, sh.num_heads_kv, sh.head_dim, sh.head_dim, n + 1, window, 1);
    // Fill the cache in chunks of up to 4096 tokens (a ring buffer keeps only its window).
    const int64_t chunk = std::min<int64_t>(n, 4096);
    Tensor<float> kc(1, sh.num_heads_kv, chunk, sh.head_dim),
        vc(1, sh.num_heads_kv, chunk, sh.head_dim);
    FillUniform(kc.data(), kc.numel(), 5);
    FillUniform(vc.data(), vc.numel(), 6);
    for (int64_t t = 0; t < n; t += chunk) {
      const int64_t m = std::min(chunk, n - t);
      auto kv_k = kc.view(), kv_v = vc.view();
      kv_k.shape[2] = m;
      kv_v.shape[2] = m;
      cache.Append(kv_k, kv_v);
    }
    Tensor<float> q(1, sh.num_heads_q, 1, sh.head_dim), o(1, sh.num_heads_q, 1, sh.head_dim);
    Tensor<float> k1(1, sh.num_heads_kv, 1, sh.head_dim), v1(1, sh.num_heads_kv, 1, sh.head_dim);
    FillUniform(q.data(), q.numel(), 7);
    FillUniform(k1.data(), k1.numel(), 8);
    FillUniform(v1.data(), v1.numel(), 9);
    cache.Append(k1.view(), v1.view());
    DenseOptions opt;
    opt.num_threads = c.threads;
    SetTiming(p, TimeRepeats([&] { DenseDecode(q.view(), cache, o.view(), opt); }, 3, 50, 0.1));
    p.peak_bytes = peak.PeakBytes();
    p.value = static_cast<double>(cache.bytes());
    return p;
  };
  auto points = SeqlenSweep(
      so, measure,
      [&](const SweepPoint& p) { ctx.Step(label + " decode @" + FormatTokens(p.seqlen)); },
      [&](int64_t n) {
        ctx.Step(label + " decode @" + FormatTokens(n) + " skipped (time budget)");
      });
  memo[key] = points;
  return points;
}

double DenseErrorVsReference(const DenseShape& sh, int64_t n, const MaskPtr& mask) {
  Tensor<float> q(1, sh.num_heads_q, n, sh.head_dim), k(1, sh.num_heads_kv, n, sh.head_dim),
      v(1, sh.num_heads_kv, n, sh.head_dim), o(1, sh.num_heads_q, n, sh.head_dim),
      r(1, sh.num_heads_q, n, sh.head_dim);
  FillUniform(q.data(), q.numel(), 11);
  FillUniform(k.data(), k.numel(), 12);
  FillUniform(v.data(), v.numel(), 13);
  DenseOptions opt;
  opt.mask = mask.get();
  DenseForward(q.view(), k.view(), v.view(), o.view(), opt);
  opt.backend = Backend::kReference;
  DenseForward(q.view(), k.view(), v.view(), r.view(), opt);
  return RelativeError(o, r);
}

double RelativeError(const Tensor<float>& a, const Tensor<float>& b) {
  Require(a.numel() == b.numel(), "RelativeError: sizes differ (", a.numel(), " vs ", b.numel(),
          ")");
  double diff = 0, ref = 0;
  for (int64_t i = 0; i < a.numel(); ++i) {
    const double d = static_cast<double>(a.data()[i]) - b.data()[i];
    diff += d * d;
    ref += static_cast<double>(b.data()[i]) * b.data()[i];
  }
  return std::sqrt(diff / (ref + 1e-300));
}

}  // namespace attnkit::guide::detail

namespace attnkit::guide::detail {

double MeanRowCosine(const Tensor<float>& a, const Tensor<float>& b) {
  const auto va = a.view();
  Require(a.numel() == b.numel() && va.batch() * va.heads() == 1,
          "MeanRowCosine: needs two [1, 1, n, d] tensors of the same size");
  const int64_t n = va.tokens(), d = va.dim();
  double sum = 0;
  for (int64_t t = 0; t < n; ++t) {
    double dot = 0, na = 0, nb = 0;
    for (int64_t j = 0; j < d; ++j) {
      const double x = a.data()[t * d + j], y = b.data()[t * d + j];
      dot += x * y, na += x * x, nb += y * y;
    }
    sum += dot / std::sqrt(na * nb + 1e-300);
  }
  return sum / static_cast<double>(std::max<int64_t>(1, n));
}

}  // namespace attnkit::guide::detail

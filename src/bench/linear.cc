// Measurements of the linear and recurrent engines (see include/attnkit/bench/linear.h).
//
// Inputs are allocated once at the longest length plus the decode tokens, and every case reads a
// prefix view of them, so the time of a case is the kernel alone. Memory: io_bytes is what the
// inputs and outputs of that length occupy; work_bytes is the peak resident memory during the call
// above what was resident before it (Linux VmHWM, reset through /proc/self/clear_refs) — the
// kernel's own working memory.
#include "attnkit/bench/linear.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <random>
#include <string>

#include "attnkit/bench/dense.h"
#include "attnkit/core/tensor.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/kv_cache.h"
#include "attnkit/kernels/linear.h"
#include "attnkit/kernels/recurrent.h"
#include "attnkit/masks/mask.h"

namespace attnkit::bench {
namespace {

using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

// Linux: "VmRSS" / "VmHWM" of /proc/self/status in bytes (0 elsewhere).
double StatusBytes(const std::string& key) {
  std::ifstream in("/proc/self/status");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::atof(line.c_str() + key.size() + 1) * 1024.0;
  }
  return 0.0;
}

// Runs fn once with the peak resident set reset before (writing 5 to /proc/self/clear_refs);
// returns {seconds, peak resident bytes above the resident set before the call}.
std::pair<double, double> TimeWithMemory(const std::function<void()>& fn) {
  {
    std::ofstream reset("/proc/self/clear_refs");
    reset << "5";
  }
  const double base = StatusBytes("VmRSS");
  const auto t0 = Clock::now();
  fn();
  const auto t1 = Clock::now();
  return {Seconds(t0, t1), std::max(0.0, StatusBytes("VmHWM") - base)};
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Median time of fn: the first (memory-sampled) run, then repeats until min_seconds in total or
// max_repeats runs. Returns {median seconds, peak extra bytes of the first run}.
std::pair<double, double> Measure(const std::function<void()>& fn, const LinearBenchConfig& c) {
  auto [first, bytes] = TimeWithMemory(fn);
  std::vector<double> times = {first};
  double total = first;
  while (total < c.min_seconds && static_cast<int>(times.size()) < c.max_repeats) {
    const auto t0 = Clock::now();
    fn();
    times.push_back(Seconds(t0, Clock::now()));
    total += times.back();
  }
  return {Median(times), bytes};
}

void FillUniform(Tensor<float>& t, uint64_t seed, float lo, float hi) {
  uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;
  float* d = t.data();
  for (int64_t i = 0; i < t.numel(); ++i) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    d[i] = lo + (hi - lo) * static_cast<float>(x >> 40) * (1.0f / 16777216.0f);
  }
}

template <typename T>
TensorView<T> Tokens(TensorView<T> x, int64_t t0, int64_t n) {
  x.data = x.data + t0 * x.stride[2];
  x.shape[2] = n;
  return x;
}

struct Buffers {
  Tensor<float> x, out, log_alpha, beta;  // x feeds q, k and v
};

}  // namespace

double LogLogSlope(const std::vector<double>& x, const std::vector<double>& y) {
  const size_t n = std::min(x.size(), y.size());
  if (n < 2) return 0.0;
  double sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = 0; i < n; ++i) {
    const double lx = std::log(x[i]), ly = std::log(y[i]);
    sx += lx, sy += ly, sxx += lx * lx, sxy += lx * ly;
  }
  const double den = static_cast<double>(n) * sxx - sx * sx;
  return den == 0 ? 0.0 : (static_cast<double>(n) * sxy - sx * sy) / den;
}

LinearBenchResult RunLinearBench(const LinearBenchConfig& cfg) {
  Require(cfg.heads >= 1 && cfg.head_dim >= 1 && cfg.num_features >= 1 && cfg.threads >= 1,
          "RunLinearBench: heads, head_dim, num_features and threads must be >= 1");
  std::vector<int64_t> lens = cfg.seqlens;
  if (lens.empty()) {
    for (int64_t t = 1024; t <= cfg.max_seqlen; t *= 2) lens.push_back(t);
  }
  Require(!lens.empty(), "RunLinearBench: no sequence lengths (max_seqlen < 1024?)");
  std::sort(lens.begin(), lens.end());
  const int64_t tmax = std::max(lens.back(), cfg.gdn_compare_seqlen) + cfg.decode_steps;
  const int64_t h = cfg.heads, d = cfg.head_dim;
  auto progress = [&](const std::string& s) {
    if (cfg.on_progress) cfg.on_progress(s);
  };

  LinearBenchResult result;
  // OpenBLAS's worker threads also spin for ~0.1 s after the library starts them: let them
  // settle before the FMA peak, which must have the cores to itself.
  SettleAfterBlas();
  result.fma_peak_gflops = MeasureFmaPeakGflops(cfg.threads);
  result.sgemm_gflops = MeasureSgemmGflops(cfg.threads, 1024, 4);

  // One input buffer feeds q, k and v (timing does not depend on the values, and at 1M tokens
  // this halves the memory the run needs); outputs and gates are separate.
  Buffers buf{Tensor<float>(1, h, tmax, d), Tensor<float>(1, h, tmax, d),
              Tensor<float>(1, h, tmax, 1), Tensor<float>(1, h, tmax, 1)};
  FillUniform(buf.x, 1, -1.7f, 1.7f);
  FillUniform(buf.log_alpha, 4, -0.1f, -0.001f);
  FillUniform(buf.beta, 5, 0.1f, 0.9f);
  const auto q = buf.x.view(), k = buf.x.view(), v = buf.x.view();
  const auto out = buf.out.view();
  const auto la = buf.log_alpha.view(), be = buf.beta.view();

  const PerformerFeatures feats(cfg.num_features, d, RandomFeatureKind::kOrthogonal, 2020);
  LinearOptions favor;
  favor.features = &feats;
  favor.num_threads = cfg.threads;
  LinearOptions elu;
  elu.feature_map = FeatureMap::kEluPlusOne;
  elu.num_threads = cfg.threads;
  GatedDeltaOptions gdn;
  gdn.algorithm = DeltaAlgorithm::kChunked;
  gdn.num_threads = cfg.threads;
  GatedDeltaOptions gdn_decode = gdn;
  gdn_decode.algorithm = DeltaAlgorithm::kRecurrent;
  const auto causal = CausalMask();
  DenseOptions dense;
  dense.mask = causal.get();
  dense.num_threads = cfg.threads;
  // Decode steps are microseconds of work: the linear/recurrent kernels run them on one thread
  // (a fork/join costs more), so dense decode is timed on one thread too.
  DenseOptions dense_decode;
  dense_decode.num_threads = 1;

  auto time_decode = [&](const std::function<void(int64_t)>& step, int64_t seqlen) {
    std::vector<double> times;
    for (int64_t i = 0; i < cfg.decode_steps; ++i) {
      const auto t0 = Clock::now();
      step(seqlen + i);
      times.push_back(Seconds(t0, Clock::now()));
    }
    return times.empty() ? 0.0 : Median(times) * 1e6;
  };

  // One series per method: prefill time/memory at each length, then decode steps from its state.
  auto run_linear = [&](const std::string& name, const LinearOptions& o) {
    LengthSeries s{name, {}, 0, 0, 0, false};
    const int64_t m = LinearNumFeatures(o, d);
    LinearState st(1, h, m, d);
    for (int64_t t : lens) {
      progress(name + " " + std::to_string(t));
      LengthPoint p;
      p.seqlen = t;
      std::tie(p.seconds, p.work_bytes) = Measure(
          [&] {
            st.Reset();
            LinearForward(Tokens(q, 0, t), Tokens(k, 0, t), Tokens(v, 0, t), Tokens(out, 0, t), o,
                          &st);
          },
          cfg);
      p.gflops = LinearFlops(1, h, h, t, d, d, o) / p.seconds / 1e9;
      p.io_bytes = 4.0 * h * t * d * sizeof(float);  // q, k, v, out as a model holds them
      p.decode_us_per_token = time_decode(
          [&](int64_t pos) {
            LinearForward(Tokens(q, pos, 1), Tokens(k, pos, 1), Tokens(v, pos, 1),
                          Tokens(out, pos, 1), o, &st);
          },
          t);
      s.points.push_back(p);
    }
    return s;
  };
  result.series.push_back(run_linear("performer_causal", favor));
  result.series.push_back(run_linear("linear_elu_causal", elu));
  {
    LengthSeries s{"gdn_chunked", {}, 0, 0, 0, false};
    Tensor<float> state(1, h, d, d);
    for (int64_t t : lens) {
      progress("gdn_chunked " + std::to_string(t));
      LengthPoint p;
      p.seqlen = t;
      std::tie(p.seconds, p.work_bytes) = Measure(
          [&] {
            std::fill(state.data(), state.data() + state.numel(), 0.0f);
            GatedDeltaForward(Tokens(q, 0, t), Tokens(k, 0, t), Tokens(v, 0, t), Tokens(la, 0, t),
                              Tokens(be, 0, t), Tokens(out, 0, t), state.view(), gdn);
          },
          cfg);
      p.gflops = GatedDeltaFlops(1, h, t, d, d, false, gdn) / p.seconds / 1e9;
      p.io_bytes = (4.0 * h * t * d + 2.0 * h * t) * sizeof(float);
      p.decode_us_per_token = time_decode(
          [&](int64_t pos) {
            GatedDeltaForward(Tokens(q, pos, 1), Tokens(k, pos, 1), Tokens(v, pos, 1),
                              Tokens(la, pos, 1), Tokens(be, pos, 1), Tokens(out, pos, 1),
                              state.view(), gdn_decode);
          },
          t);
      s.points.push_back(p);
    }
    result.series.push_back(s);
  }
  {
    LengthSeries s{"dense_causal", {}, 0, 0, 0, false};
    for (int64_t t : lens) {
      if (t > cfg.dense_max_seqlen) break;
      progress("dense_causal " + std::to_string(t));
      LengthPoint p;
      p.seqlen = t;
      std::tie(p.seconds, p.work_bytes) = Measure(
          [&] {
            DenseForward(Tokens(q, 0, t), Tokens(k, 0, t), Tokens(v, 0, t), Tokens(out, 0, t),
                         dense);
          },
          cfg);
      p.gflops = DenseFlops(1, h, t, t, d, d, causal.get()) / p.seconds / 1e9;
      p.io_bytes = 4.0 * h * t * d * sizeof(float);
      KvCache<float> cache(1, h, d, d, t + cfg.decode_steps);
      cache.Append(Tokens(k, 0, t), Tokens(v, 0, t));
      p.decode_us_per_token = time_decode(
          [&](int64_t pos) {
            cache.Append(Tokens(k, pos, 1), Tokens(v, pos, 1));
            DenseDecode(Tokens(q, pos, 1), cache, Tokens(out, pos, 1), dense_decode);
          },
          t);
      s.points.push_back(p);
    }
    result.series.push_back(s);
  }

  // Slopes (points >= 4096, where fixed per-call costs no longer matter) and crossovers.
  auto fit = [](const LengthSeries& s, bool decode, double* intercept) {
    std::vector<double> x, y;
    for (const auto& p : s.points) {
      const double val = decode ? p.decode_us_per_token : p.seconds;
      if (p.seqlen >= 4096 && val > 0) x.push_back(static_cast<double>(p.seqlen)), y.push_back(val);
    }
    if (x.size() < 2) {
      x.clear(), y.clear();
      for (const auto& p : s.points) {
        const double val = decode ? p.decode_us_per_token : p.seconds;
        if (val > 0) x.push_back(static_cast<double>(p.seqlen)), y.push_back(val);
      }
    }
    const double slope = LogLogSlope(x, y);
    if (intercept) {
      double acc = 0;
      for (size_t i = 0; i < x.size(); ++i) acc += std::log(y[i]) - slope * std::log(x[i]);
      *intercept = x.empty() ? 0 : acc / static_cast<double>(x.size());
    }
    return slope;
  };
  LengthSeries& dense_s = result.series.back();
  double dense_a = 0;
  dense_s.slope = fit(dense_s, false, &dense_a);
  dense_s.decode_slope = fit(dense_s, true, nullptr);
  for (size_t i = 0; i + 1 < result.series.size(); ++i) {
    LengthSeries& s = result.series[i];
    double a = 0;
    s.slope = fit(s, false, &a);
    s.decode_slope = fit(s, true, nullptr);
    for (size_t j = 0; j < dense_s.points.size() && j < s.points.size(); ++j) {
      if (s.points[j].seconds < dense_s.points[j].seconds) {
        s.crossover = s.points[j].seqlen;
        break;
      }
    }
    if (s.crossover == 0 && dense_s.slope > s.slope) {
      s.crossover = static_cast<int64_t>(std::exp((a - dense_a) / (dense_s.slope - s.slope)));
      s.crossover_extrapolated = true;
    }
  }

  // Chunked vs token-by-token Gated DeltaNet.
  {
    const int64_t t = cfg.gdn_compare_seqlen;
    progress("gdn chunked vs token-by-token " + std::to_string(t));
    GdnComparison& g = result.gdn;
    g.seqlen = t;
    auto run = [&](const GatedDeltaOptions& o) {
      return Measure(
                 [&] {
                   GatedDeltaForward(Tokens(q, 0, t), Tokens(k, 0, t), Tokens(v, 0, t),
                                     Tokens(la, 0, t), Tokens(be, 0, t), Tokens(out, 0, t), {}, o);
                 },
                 cfg)
          .first;
    };
    g.chunked_seconds = run(gdn);
    g.recurrent_seconds = run(gdn_decode);
    g.speedup = g.recurrent_seconds / g.chunked_seconds;
    GatedDeltaOptions plain = gdn;
    plain.backend = Backend::kReference;
    const auto t0 = Clock::now();  // once: it is slow
    GatedDeltaForward(Tokens(q, 0, t), Tokens(k, 0, t), Tokens(v, 0, t), Tokens(la, 0, t),
                      Tokens(be, 0, t), Tokens(out, 0, t), {}, plain);
    g.reference_seconds = Seconds(t0, Clock::now());
    g.speedup_vs_reference = g.reference_seconds / g.chunked_seconds;
    g.chunked_gflops = GatedDeltaFlops(1, h, t, d, d, false, gdn) / g.chunked_seconds / 1e9;
    g.recurrent_gflops =
        GatedDeltaFlops(1, h, t, d, d, false, gdn_decode) / g.recurrent_seconds / 1e9;
    g.speedup_bound = result.fma_peak_gflops / g.recurrent_gflops;
  }
  return result;
}

std::vector<PerformerErrorPoint> PerformerErrorVsFeatures(const std::vector<int64_t>& ms,
                                                          int64_t seqlen, int64_t head_dim,
                                                          bool causal, int draws, float qk_std,
                                                          uint64_t seed) {
  Require(seqlen >= 1 && head_dim >= 1 && draws >= 1,
          "PerformerErrorVsFeatures: seqlen, head_dim and draws must be >= 1");
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  Tensor<float> q(1, 1, seqlen, head_dim), k(1, 1, seqlen, head_dim), v(1, 1, seqlen, head_dim);
  for (int64_t i = 0; i < q.numel(); ++i) {
    q.data()[i] = qk_std * normal(rng);
    k.data()[i] = qk_std * normal(rng);
    v.data()[i] = normal(rng);
  }
  Tensor<float> exact(1, 1, seqlen, head_dim), approx(1, 1, seqlen, head_dim);
  const auto mask = CausalMask();
  DenseOptions dopt;
  dopt.mask = causal ? mask.get() : nullptr;
  ref::DenseForward(q.view(), k.view(), v.view(), exact.view(), dopt);
  auto error = [&](int64_t m, RandomFeatureKind kind) {
    double sum = 0;
    for (int r = 0; r < draws; ++r) {
      const PerformerFeatures f(m, head_dim, kind, seed + 7919 * static_cast<uint64_t>(r + 1));
      LinearOptions o;
      o.features = &f;
      o.causal = causal;
      LinearForward(q.view(), k.view(), v.view(), approx.view(), o);
      double num = 0, den = 0;
      for (int64_t i = 0; i < exact.numel(); ++i) {
        const double e = exact.data()[i], a = approx.data()[i];
        num += (a - e) * (a - e), den += e * e;
      }
      sum += std::sqrt(num / den);
    }
    return sum / draws;
  };
  std::vector<PerformerErrorPoint> pts;
  for (int64_t m : ms) {
    pts.push_back({m, error(m, RandomFeatureKind::kOrthogonal), error(m, RandomFeatureKind::kIid)});
  }
  return pts;
}

}  // namespace attnkit::bench

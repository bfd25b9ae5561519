// Dense-engine measurements: ceilings (sgemm, read bandwidth), the naive BLAS baseline, the
// kernel itself, and peak memory. Used by `attnkit bench dense` and the visual guide.
#include "attnkit/bench/dense.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>
#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "attnkit/core/parse.h"
#include "attnkit/core/runtime.h"
#include "attnkit/core/tensor.h"
#include "attnkit/kernels/kv_cache.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace attnkit::bench {
namespace {

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// Median of `repeats` timed runs of fn (seconds), after one warm-up run.
double MedianSeconds(const std::function<void()>& fn, int repeats, double* min_out = nullptr) {
  fn();
  std::vector<double> t;
  for (int r = 0; r < std::max(1, repeats); ++r) {
    const double t0 = NowSeconds();
    fn();
    t.push_back(NowSeconds() - t0);
  }
  std::sort(t.begin(), t.end());
  if (min_out) *min_out = t.front();
  return t[t.size() / 2];
}

template <typename T>
void FillRandom(Tensor<T>& t, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  for (int64_t i = 0; i < t.numel(); ++i) {
    if constexpr (std::is_same_v<T, bf16>) {
      t.data()[i] = ToBf16(dist(rng));
    } else {
      t.data()[i] = dist(rng);
    }
  }
}

// Row softmax of s (n values) in place over the allowed columns; masked ones become 0.
void SoftmaxRow(float* s, int64_t n, const uint8_t* allowed) {
  float mx = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) {
    if (!allowed || allowed[j]) mx = std::max(mx, s[j]);
  }
  if (mx == -std::numeric_limits<float>::infinity()) {
    std::fill(s, s + n, 0.0f);
    return;
  }
  float sum = 0;
  for (int64_t j = 0; j < n; ++j) {
    const float p = (!allowed || allowed[j]) ? std::exp(s[j] - mx) : 0.0f;
    s[j] = p;
    sum += p;
  }
  const float inv = 1.0f / sum;
  for (int64_t j = 0; j < n; ++j) s[j] *= inv;
}

// Resident set size of this process in bytes (Linux /proc/self/statm), or -1.
int64_t ResidentBytes() {
  std::ifstream in("/proc/self/statm");
  int64_t size = 0, resident = -1;
  if (!(in >> size >> resident)) return -1;
  return resident * static_cast<int64_t>(sysconf(_SC_PAGESIZE));
}

}  // namespace

void SettleAfterBlas() { std::this_thread::sleep_for(std::chrono::milliseconds(250)); }

double MeasureSgemmGflops(int threads, int64_t n, int repeats) {
  Require(n > 0 && repeats > 0, "MeasureSgemmGflops: n and repeats must be positive");
  threads = ResolveThreads(threads);
  std::vector<float> a(static_cast<size_t>(n * n)), b(a.size()), c(a.size());
  std::mt19937_64 rng(1);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  for (auto& x : a) x = dist(rng);
  for (auto& x : b) x = dist(rng);
  openblas_set_num_threads(threads);
  const int ni = static_cast<int>(n);
  const double sec = MedianSeconds(
      [&] {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, ni, ni, 1.0f, a.data(), ni,
                    b.data(), ni, 0.0f, c.data(), ni);
      },
      repeats);
  SettleAfterBlas();
  return 2.0 * static_cast<double>(n) * n * n / sec / 1e9;
}

double MeasureReadGbps(int threads, int64_t bytes, int repeats) {
  Require(bytes >= (1 << 20) && repeats > 0, "MeasureReadGbps: bytes must be >= 1 MiB");
  threads = ResolveThreads(threads);
  const int64_t words = bytes / 8;
  std::vector<uint64_t> buf(static_cast<size_t>(words));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < words; ++i) buf[i] = static_cast<uint64_t>(i);
  volatile uint64_t sink = 0;
  const double sec = MedianSeconds(
      [&] {
        uint64_t total = 0;
    // Integer sums vectorise without reassociation concerns; each thread reads its share.
#pragma omp parallel for num_threads(threads) schedule(static) reduction(+ : total)
        for (int64_t i = 0; i < words; ++i) total += buf[i];
        sink = sink + total;
      },
      repeats);
  return static_cast<double>(words) * 8.0 / sec / 1e9;
}

double DenseBenchBytes(const DenseBenchConfig& c) {
  const double d = static_cast<double>(c.head_dim), b = static_cast<double>(c.batch);
  const double q_out = 2.0 * b * static_cast<double>(c.num_heads_q) * c.seqlen_q * d * 4.0;
  const double kv =
      2.0 * b * static_cast<double>(c.num_heads_kv) * c.seqlen_kv * d * (c.bf16_kv ? 2.0 : 4.0);
  // The decode path also keeps a f32 copy of K/V to fill the cache from.
  const double staging =
      c.decode ? 2.0 * b * static_cast<double>(c.num_heads_kv) * c.seqlen_kv * d * 4.0 : 0.0;
  return q_out + kv + staging;
}

void CheckDenseBenchConfig(const DenseBenchConfig& c) {
  constexpr const char* fn = "BenchDense";
  Require(c.batch > 0 && c.seqlen_q > 0 && c.seqlen_kv > 0 && c.num_heads_q > 0 &&
              c.num_heads_kv > 0 && c.head_dim > 0,
          fn, ": every size must be positive");
  Require(c.num_heads_q % c.num_heads_kv == 0, fn, ": num_heads_q (", c.num_heads_q,
          ") must be a multiple of num_heads_kv (", c.num_heads_kv, ")");
  Require(c.seqlen_q <= c.seqlen_kv, fn, ": seqlen_q (", c.seqlen_q, ") must be <= seqlen_kv (",
          c.seqlen_kv, ")");
  Require(c.repeats > 0, fn, ": repeats must be positive");
  (void)ParseMaskSpec(c.mask);
  RequireFitsInMemory(DenseBenchBytes(c), std::string(fn) + " (seqlen " +
                                              std::to_string(c.seqlen_kv) + ", heads " +
                                              std::to_string(c.num_heads_q) + ")");
  // The FLOP count walks the mask's tiles: refuse grids it cannot count (cheap, and it names
  // the sizes) before anything is allocated.
  if (c.mask != "none" && !c.mask.empty()) {
    detail::RequireCountableTiles(fn, c.seqlen_q, c.seqlen_kv, 64, 64);
  }
}

DenseBenchResult BenchDense(const DenseBenchConfig& c) {
  CheckDenseBenchConfig(c);
  const int threads = ResolveThreads(c.threads);
  DenseBenchResult r;
  r.config = c;
  r.simd_target = SimdTargetName();
  const MaskPtr mask = ParseMaskSpec(c.mask);
  r.mask_description = mask ? mask->Describe() : "none";
  r.density = MaskDensity(mask.get(), c.seqlen_q, c.seqlen_kv);
  const int64_t d = c.head_dim, hq = c.num_heads_q, hkv = c.num_heads_kv;
  r.flops = 4.0 * static_cast<double>(c.seqlen_q) * static_cast<double>(c.seqlen_kv) *
            static_cast<double>(d) * static_cast<double>(hq * c.batch) * r.density;
  r.kv_bytes = 2.0 * static_cast<double>(c.batch * hkv * c.seqlen_kv * d) * (c.bf16_kv ? 2.0 : 4.0);

  Tensor<float> q(c.batch, hq, c.seqlen_q, d), out(c.batch, hq, c.seqlen_q, d);
  FillRandom(q, 1);
  DenseOptions opt;
  opt.mask = mask.get();
  opt.num_threads = threads;
  double sec = 0;
  if (c.decode) {
    // The cache holds seqlen_kv tokens, the last seqlen_q of which are the new ones.
    Tensor<float> kin(c.batch, hkv, c.seqlen_kv, d), vin(c.batch, hkv, c.seqlen_kv, d);
    FillRandom(kin, 2);
    FillRandom(vin, 3);
    auto run_decode = [&](auto& cache) {
      cache.Append(kin.view(), vin.view());
      sec = MedianSeconds([&] { DenseDecode(q.view(), cache, out.view(), opt); }, c.repeats,
                          &r.min_ms);
    };
    // A mask other than causal is passed on; causality among new tokens is the cache's job.
    if (c.mask == "causal") opt.mask = nullptr;
    if (c.bf16_kv) {
      KvCache<bf16> cache(c.batch, hkv, d, d, c.seqlen_kv);
      run_decode(cache);
    } else {
      KvCache<float> cache(c.batch, hkv, d, d, c.seqlen_kv);
      run_decode(cache);
    }
    if (c.baseline && !c.bf16_kv && c.seqlen_q == 1) {
      // Per query head: scores = K_h q (sgemv), softmax, out = V_hᵀ p (sgemv). K/V are re-read
      // once per query head, as a per-head loop does.
      std::vector<float> s(static_cast<size_t>(c.seqlen_kv));
      const float scale = 1.0f / std::sqrt(static_cast<float>(d));
      openblas_set_num_threads(threads);
      r.baseline_ms =
          1e3 *
          MedianSeconds(
              [&] {
                for (int64_t b = 0; b < c.batch; ++b) {
                  for (int64_t h = 0; h < hq; ++h) {
                    const int64_t h_kv = h / (hq / hkv);
                    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(c.seqlen_kv),
                                static_cast<int>(d), scale, kin.view().row(b, h_kv, 0),
                                static_cast<int>(d), q.view().row(b, h, 0), 1, 0.0f, s.data(), 1);
                    SoftmaxRow(s.data(), c.seqlen_kv, nullptr);
                    cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<int>(c.seqlen_kv),
                                static_cast<int>(d), 1.0f, vin.view().row(b, h_kv, 0),
                                static_cast<int>(d), s.data(), 1, 0.0f, out.view().row(b, h, 0), 1);
                  }
                }
              },
              c.repeats);
      r.baseline_ran = true;
    }
  } else {
    auto run_prefill = [&](auto& k, auto& v) {
      FillRandom(k, 2);
      FillRandom(v, 3);
      opt.stats = &r.stats;
      DenseForward(q.view(), k.view(), v.view(), out.view(), opt);
      opt.stats = nullptr;
      sec = MedianSeconds([&] { DenseForward(q.view(), k.view(), v.view(), out.view(), opt); },
                          c.repeats, &r.min_ms);
    };
    if (c.bf16_kv) {
      Tensor<bf16> k(c.batch, hkv, c.seqlen_kv, d), v(c.batch, hkv, c.seqlen_kv, d);
      run_prefill(k, v);
    } else {
      Tensor<float> k(c.batch, hkv, c.seqlen_kv, d), v(c.batch, hkv, c.seqlen_kv, d);
      run_prefill(k, v);
      const double s_bytes = 4.0 * static_cast<double>(c.seqlen_q) * c.seqlen_kv;
      if (c.baseline && s_bytes <= double(1 << 30)) {
        // What a user would write: per head, S = scale·Q Kᵀ over the full rectangle (sgemm),
        // a row softmax under the mask, O = P V (sgemm). No tile is ever skipped.
        std::vector<float> s(static_cast<size_t>(c.seqlen_q * c.seqlen_kv));
        std::vector<uint8_t> allowed(mask ? s.size() : 0);
        const int64_t q_off = c.seqlen_kv - c.seqlen_q;
        const float scale = 1.0f / std::sqrt(static_cast<float>(d));
        const int m = static_cast<int>(c.seqlen_q), n = static_cast<int>(c.seqlen_kv);
        const int di = static_cast<int>(d);
        openblas_set_num_threads(threads);
        r.baseline_ms =
            1e3 * MedianSeconds(
                      [&] {
                        for (int64_t b = 0; b < c.batch; ++b) {
                          for (int64_t h = 0; h < hq; ++h) {
                            const int64_t h_kv = h / (hq / hkv);
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, di, scale,
                                        q.view().row(b, h, 0), di, k.view().row(b, h_kv, 0), di,
                                        0.0f, s.data(), n);
#pragma omp parallel for num_threads(threads) schedule(static)
                            for (int64_t i = 0; i < m; ++i) {
                              uint8_t* a = nullptr;
                              if (mask) {
                                a = allowed.data() + i * n;
                                mask->FillTile(i + q_off, i + q_off + 1, 0, n, a);
                              }
                              SoftmaxRow(s.data() + i * n, n, a);
                            }
                            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, di, n, 1.0f,
                                        s.data(), n, v.view().row(b, h_kv, 0), di, 0.0f,
                                        out.view().row(b, h, 0), di);
                          }
                        }
                      },
                      std::min(c.repeats, 3));  // slow: a few repeats suffice for a median
        r.baseline_ran = true;
      }
    }
  }
  if (r.baseline_ran) SettleAfterBlas();
  r.median_ms = sec * 1e3;
  r.min_ms *= 1e3;
  r.gflops = r.flops / sec / 1e9;
  r.gbps = r.kv_bytes / sec / 1e9;
  if (r.baseline_ran) {
    r.baseline_gflops = r.flops / (r.baseline_ms * 1e-3) / 1e9;
    r.baseline_gbps = r.kv_bytes / (r.baseline_ms * 1e-3) / 1e9;
  }
  return r;
}

PeakMemoryResult MeasurePeakMemory(int64_t seqlen, int64_t num_heads, int64_t head_dim,
                                   int threads) {
  Require(seqlen > 0 && num_heads > 0 && head_dim > 0,
          "MeasurePeakMemory: seqlen, num_heads and head_dim must be positive");
  PeakMemoryResult r;
  r.seqlen = seqlen;
  r.num_heads = num_heads;
  r.head_dim = head_dim;
  // VmHWM cannot be reset reliably everywhere (clear_refs may be refused in containers), so a
  // sampler thread polls the resident set every millisecond while the tensors exist and the
  // kernel runs; the kernel's workspace lives for the whole call, so the sampler sees it.
  // Hand back the kernels' pooled scratch and freed heap memory first, or "before" would
  // already include the packed tiles this call is about to use.
  ReleaseScratchMemory();
#if defined(__GLIBC__)
  malloc_trim(0);
#endif
  const int64_t before = ResidentBytes();
  std::atomic<bool> stop{false};
  std::atomic<int64_t> peak{before};
  std::thread sampler([&] {
    while (!stop.load()) {
      const int64_t now = ResidentBytes();
      if (now > peak.load()) peak.store(now);
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  });
  const double t0 = NowSeconds();
  {
    Tensor<float> q(1, num_heads, seqlen, head_dim), k(1, num_heads, seqlen, head_dim),
        v(1, num_heads, seqlen, head_dim), o(1, num_heads, seqlen, head_dim);
    FillRandom(q, 1);
    FillRandom(k, 2);
    FillRandom(v, 3);
    std::fill(o.data(), o.data() + o.numel(), 0.0f);  // touch every page
    r.input_output_bytes = 4.0 * 4.0 * static_cast<double>(q.numel());
    const MaskPtr causal = CausalMask();
    DenseOptions opt;
    opt.mask = causal.get();
    opt.num_threads = threads;
    DenseForward(q.view(), k.view(), v.view(), o.view(), opt);
    const int64_t now = ResidentBytes();
    if (now > peak.load()) peak.store(now);
  }
  stop.store(true);
  sampler.join();
  r.seconds = NowSeconds() - t0;
  if (before >= 0) {
    r.measured = true;
    r.rss_before_bytes = static_cast<double>(before);
    r.peak_bytes = static_cast<double>(peak.load());
    r.extra_bytes = r.peak_bytes - r.rss_before_bytes - r.input_output_bytes;
  }
  return r;
}

}  // namespace attnkit::bench

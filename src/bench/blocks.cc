// Block benchmarks: decode time and cache bytes at long contexts, prefill throughput, ceilings,
// and the stack runner. See include/attnkit/bench/blocks.h.
#include "attnkit/bench/blocks.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <fstream>
#include <memory>
#include <sstream>

#include "attnkit/bench/dense.h"
#include "attnkit/core/checked.h"
#include "attnkit/core/runtime.h"

namespace attnkit::bench {

namespace {

double Now() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// MemAvailable in bytes (core/checked.h reads it); unknown: assume 8 GiB.
double AvailableOrDefault() {
  const int64_t bytes = MemAvailableBytes();
  return bytes > 0 ? static_cast<double>(bytes) : 8.0 * (1ull << 30);
}

void Say(const ProgressFn& progress, const std::string& line) {
  if (progress) progress(line);
}

std::string Gib(double bytes) {
  std::ostringstream os;
  os.precision(3);
  os << bytes / double(1ull << 30) << " GiB";
  return os.str();
}

// Times prefill of `tokens` random tokens on an empty cache: one warm-up, one timed run.
double PrefillTokensPerSecond(Layer& layer, int64_t tokens, uint64_t seed) {
  Tensor<float> x(1, 1, tokens, layer.hidden()), out(1, 1, tokens, layer.hidden());
  FillUniform(x.data(), static_cast<size_t>(x.numel()), 1.0f, seed);
  layer.Reset();
  layer.Forward(x.view(), 0, out.view());
  layer.Reset();
  const double t0 = Now();
  layer.Forward(x.view(), 0, out.view());
  const double dt = Now() - t0;
  layer.Reset();
  return static_cast<double>(tokens) / dt;
}

// Times decode steps right after `tokens_seen()` (the cache already filled): one warm-up step
// (if asked), then up to `steps` timed steps or until `max_seconds` have been spent.
std::vector<double> DecodeSamples(Layer& layer, int steps, double max_seconds, uint64_t seed,
                                  bool warmup = true) {
  Tensor<float> x(1, 1, 1, layer.hidden()), out(1, 1, 1, layer.hidden());
  FillUniform(x.data(), static_cast<size_t>(x.numel()), 1.0f, seed);
  const double start = Now();
  if (warmup) layer.Forward(x.view(), layer.tokens_seen(), out.view());
  std::vector<double> samples;
  for (int s = 0; s < steps; ++s) {
    const double t0 = Now();
    layer.Forward(x.view(), layer.tokens_seen(), out.view());
    samples.push_back(Now() - t0);
    if (Now() - start > max_seconds) break;
  }
  return samples;
}

void Finish(BlocksBenchRow& row, const std::vector<double>& samples) {
  row.decode_samples = static_cast<int>(samples.size());
  const double s = Median(samples);
  row.decode_ms = s * 1e3;
  row.decode_gflops = s > 0 ? row.decode_gflop / s : 0;
  row.decode_gbps = s > 0 ? row.decode_bytes / s / 1e9 : 0;
}

}  // namespace

GqaConfig Llama3_8bLayer() {
  GqaConfig c;
  c.hidden = 4096;
  c.num_heads_q = 32;
  c.num_heads_kv = 8;
  c.head_dim = 128;
  c.rope.theta = 500000.0f;
  c.norm_eps = 1e-5f;
  return c;
}

GqaConfig Llama3_8bLayerMha() {
  GqaConfig c = Llama3_8bLayer();
  c.num_heads_kv = 32;
  return c;
}

MlaConfig DeepSeekV3Layer() {
  MlaConfig c;
  c.hidden = 7168;
  c.num_heads = 128;
  c.q_lora_rank = 1536;
  c.kv_lora_rank = 512;
  c.qk_nope_head_dim = 128;
  c.qk_rope_head_dim = 64;
  c.v_head_dim = 128;
  c.rope.theta = 10000.0f;
  c.rope.layout = RopeLayout::kInterleaved;
  return c;
}

double GqaDecodeFlops(const GqaConfig& c, int64_t context) {
  const double hq = c.num_heads_q, hkv = c.num_heads_kv, dk = c.head_dim, dv = c.dv(), h = c.hidden;
  double proj = 2 * h * (hq * dk + hkv * dk + hkv * dv) + 2 * hq * dv * h;
  if (c.output_gate) proj += 2 * h * hq * dv;
  double keys = static_cast<double>(context + 1);
  if (c.window > 0) keys = std::min(keys, static_cast<double>(c.window));
  return proj + 2 * keys * hq * (dk + dv);
}

double MlaDecodeFlops(const MlaConfig& c, MlaPath path, int64_t context) {
  const double h = c.num_heads, hid = c.hidden, qr = c.q_lora_rank, r = c.kv_lora_rank,
               dn = c.qk_nope_head_dim, dr = c.qk_rope_head_dim, dv = c.v_head_dim,
               dq = c.qk_head_dim(), keys = static_cast<double>(context + 1);
  double proj = qr > 0 ? 2 * hid * qr + 2 * qr * h * dq : 2 * hid * h * dq;
  proj += 2 * hid * (r + dr) + 2 * h * dv * hid;
  if (path == MlaPath::kNaive) {
    return proj + 2 * keys * r * h * (dn + dv) + 2 * keys * h * (dq + dv);
  }
  return proj + 2 * h * dn * r + 2 * h * r * dv + 2 * keys * h * ((r + dr) + r);
}

Ceilings MeasureCeilings(int num_threads) {
  Ceilings c;
  c.sgemm_gflops = MeasureSgemmGflops(num_threads, 1536, 3);
  c.read_gbps = MeasureReadGbps(num_threads);
  return c;
}

BlocksBenchResult RunBlocksBench(const BlocksBenchOptions& o, const ProgressFn& progress) {
  Require(!o.contexts.empty(), "RunBlocksBench: contexts is empty");
  for (int64_t ctx : o.contexts) {
    Require(ctx >= 1, "RunBlocksBench: contexts must be >= 1, got ", ctx);
  }
  Require(o.prefill_tokens >= 1, "RunBlocksBench: prefill_tokens must be >= 1, got ",
          o.prefill_tokens);
  Require(o.decode_steps >= 1, "RunBlocksBench: decode_steps must be >= 1, got ", o.decode_steps);
  const int threads = ResolveThreads(o.num_threads);
  BlocksBenchResult result;
  result.threads = threads;
  const int previous_threads = GetNumThreads();
  SetNumThreads(threads);
  Say(progress, "measuring ceilings (sgemm, memory read bandwidth)");
  result.ceilings = MeasureCeilings(threads);
  const double limit =
      o.memory_limit_gib > 0 ? o.memory_limit_gib * double(1ull << 30) : 0.8 * AvailableOrDefault();
  const int64_t max_ctx = *std::max_element(o.contexts.begin(), o.contexts.end());
  const int64_t capacity = std::max(max_ctx, o.prefill_tokens) + o.decode_steps + 2;

  // GQA-family layers.
  const std::pair<const char*, GqaConfig> gqa_layers[] = {{"llama3-8b gqa", Llama3_8bLayer()},
                                                          {"llama3-8b mha", Llama3_8bLayerMha()}};
  for (const auto& [name, base] : gqa_layers) {
    GqaConfig c = base;
    c.max_tokens = capacity;
    const double need = static_cast<double>(GqaCacheBytesPerToken(c)) * capacity +
                        4.0 * (2.0 * c.hidden * c.num_heads_q * c.head_dim +
                               2.0 * c.hidden * c.num_heads_kv * c.head_dim);
    if (need > limit) {
      BlocksBenchRow row;
      row.layer = name;
      row.path = "-";
      row.skipped = true;
      row.note = "needs " + Gib(need) + ", limit " + Gib(limit);
      result.rows.push_back(row);
      continue;
    }
    Say(progress, std::string(name) + ": building (random weights)");
    GqaBlock blk(c, GqaWeights::Random(c, o.seed));
    Say(progress, std::string(name) + ": prefill of " + std::to_string(o.prefill_tokens));
    const double prefill = PrefillTokensPerSecond(blk, o.prefill_tokens, o.seed + 1);
    for (int64_t ctx : o.contexts) {
      BlocksBenchRow row;
      row.layer = name;
      row.path = "-";
      row.describe = blk.Describe();
      row.context = ctx;
      row.cache_bytes_per_token = GqaCacheBytesPerToken(c);
      row.cache_bytes = static_cast<double>(row.cache_bytes_per_token) * ctx;
      row.weight_bytes = static_cast<double>(blk.WeightBytes());
      row.decode_gflop = GqaDecodeFlops(c, ctx) / 1e9;
      row.decode_bytes = row.weight_bytes + row.cache_bytes;
      row.prefill_tokens_per_s = prefill;
      Say(progress, std::string(name) + ": decode at " + std::to_string(ctx) + " cached tokens");
      blk.FillCacheRandom(ctx, o.seed + 2);
      Finish(row, DecodeSamples(blk, o.decode_steps, o.max_seconds_per_point, o.seed + 3));
      blk.Reset();
      result.rows.push_back(row);
    }
  }

  // MLA: one block, both paths over the same latent cache.
  {
    MlaConfig c = DeepSeekV3Layer();
    c.max_tokens = capacity;
    Say(progress, "deepseek-v3 mla: building (random weights)");
    MlaBlock blk(c, MlaWeights::Random(c, o.seed));
    const double base_bytes = static_cast<double>(blk.WeightBytes() + blk.CacheBytes());
    std::vector<MlaPath> paths = {MlaPath::kAbsorbed};
    if (o.include_naive) paths.insert(paths.begin(), MlaPath::kNaive);
    for (MlaPath path : paths) {
      blk.set_path(path);
      const std::string label = std::string("deepseek-v3 mla ") + MlaPathName(path);
      Say(progress, label + ": prefill of " + std::to_string(o.prefill_tokens));
      const double prefill = PrefillTokensPerSecond(blk, o.prefill_tokens, o.seed + 1);
      for (int64_t ctx : o.contexts) {
        BlocksBenchRow row;
        row.layer = "deepseek-v3 mla";
        row.path = MlaPathName(path);
        row.describe = blk.Describe();
        row.context = ctx;
        row.cache_bytes_per_token = MlaCacheBytesPerToken(c);
        row.cache_bytes = static_cast<double>(row.cache_bytes_per_token) * ctx;
        row.weight_bytes = static_cast<double>(blk.WeightBytes());
        row.decode_gflop = MlaDecodeFlops(c, path, ctx) / 1e9;
        row.prefill_tokens_per_s = prefill;
        if (path == MlaPath::kNaive) {
          row.scratch_bytes = MlaBlock::NaiveScratchBytes(c, ctx + o.decode_steps + 1);
          const double need = base_bytes + row.scratch_bytes;
          if (need > limit) {
            row.skipped = true;
            row.note = "naive path needs " + Gib(need) + " (per-head K,V " +
                       Gib(row.scratch_bytes) + "), over the limit " + Gib(limit);
            Say(progress, label + ": skipped at " + std::to_string(ctx) + ": " + row.note);
            result.rows.push_back(row);
            continue;
          }
          row.note = "materialises " + Gib(row.scratch_bytes) + " of per-head K,V per step";
        }
        row.decode_bytes = row.weight_bytes + row.cache_bytes + 2 * row.scratch_bytes;
        Say(progress, label + ": decode at " + std::to_string(ctx) + " cached tokens");
        blk.FillCacheRandom(ctx, o.seed + 2);
        // The naive path's step at long contexts takes seconds: its scratch is allocated and
        // touched up front instead of by a warm-up step, which would double the run time.
        const bool big = row.scratch_bytes > double(1ull << 30);
        if (big) blk.ReserveScratch(ctx + o.decode_steps + 1);
        Finish(row, DecodeSamples(blk, o.decode_steps, o.max_seconds_per_point, o.seed + 3, !big));
        blk.Reset();
        result.rows.push_back(row);
      }
      blk.ReleaseScratch();
    }
  }
  SetNumThreads(previous_threads);
  return result;
}

StackRunResult RunStack(Stack& stack, int64_t prompt, int64_t decode, uint64_t seed,
                        const ProgressFn& progress) {
  Require(prompt >= 1, "RunStack: prompt must be >= 1, got ", prompt);
  Require(decode >= 0, "RunStack: decode must be >= 0, got ", decode);
  StackRunResult r;
  r.prompt = prompt;
  r.decode = decode;
  const int64_t hidden = stack.hidden();
  stack.Reset();
  Tensor<float> x(1, 1, prompt, hidden), out(1, 1, prompt, hidden);
  FillUniform(x.data(), static_cast<size_t>(x.numel()), 1.0f, seed);
  Say(progress, "prefill of " + std::to_string(prompt) + " tokens");
  const double t0 = Now();
  stack.Forward(x.view(), 0, out.view());
  r.prefill_seconds = Now() - t0;
  r.prefill_tokens_per_s = static_cast<double>(prompt) / r.prefill_seconds;
  Tensor<float> xt(1, 1, 1, hidden), ot(1, 1, 1, hidden);
  std::vector<double> samples;
  for (int64_t t = 0; t < decode; ++t) {
    // Feed the last output back as the next input (there is no vocabulary to sample from).
    const float* src = t == 0 ? out.data() + (prompt - 1) * hidden : ot.data();
    std::copy(src, src + hidden, xt.data());
    const double s0 = Now();
    stack.Forward(xt.view(), prompt + t, ot.view());
    samples.push_back(Now() - s0);
    if (t % 16 == 15) Say(progress, "decoded " + std::to_string(t + 1) + " tokens");
  }
  r.decode_ms_median = Median(samples) * 1e3;
  if (!samples.empty()) {
    std::sort(samples.begin(), samples.end());
    const double last = static_cast<double>(samples.size() - 1);
    auto quantile = [&](double f) {  // linear interpolation between order statistics
      const double pos = f * last;
      const size_t i = static_cast<size_t>(pos);
      const size_t j = std::min(i + 1, samples.size() - 1);
      return (samples[i] + (pos - static_cast<double>(i)) * (samples[j] - samples[i])) * 1e3;
    };
    r.decode_ms_q1 = quantile(0.25);
    r.decode_ms_q3 = quantile(0.75);
  }
  r.decode_tokens_per_s = r.decode_ms_median > 0 ? 1e3 / r.decode_ms_median : 0;
  r.cache_bytes = static_cast<double>(stack.CacheBytes());
  r.weight_bytes = static_cast<double>(stack.WeightBytes());
  return r;
}

std::vector<SoakPoint> SoakStack(Stack& stack, int64_t tokens, int64_t every, uint64_t seed,
                                 const std::function<void(const SoakPoint&)>& on_point) {
  Require(tokens >= 1, "SoakStack: tokens must be >= 1, got ", tokens);
  Require(every >= 1, "SoakStack: every must be >= 1, got ", every);
  const int64_t hidden = stack.hidden();
  Tensor<float> xt(1, 1, 1, hidden), ot(1, 1, 1, hidden);
  FillUniform(xt.data(), static_cast<size_t>(hidden), 1.0f, seed);
  std::vector<SoakPoint> points;
  std::vector<double> samples;
  samples.reserve(static_cast<size_t>(std::min(every, tokens)));
  bool finite = true;
  for (int64_t t = 0; t < tokens; ++t) {
    const double s0 = Now();
    stack.Forward(xt.view(), stack.tokens_seen(), ot.view());
    samples.push_back(Now() - s0);
    for (int64_t i = 0; i < hidden; ++i) finite = finite && std::isfinite(ot.data()[i]);
    std::copy(ot.data(), ot.data() + hidden, xt.data());
    if ((t + 1) % every == 0 || t + 1 == tokens) {
      SoakPoint p;
      p.tokens = t + 1;
      p.ms_median = Median(samples) * 1e3;
      p.rss_bytes = ProcStatusBytes("VmRSS");
      p.cache_bytes = stack.CacheBytes();
      p.all_finite = finite;
      points.push_back(p);
      if (on_point) on_point(p);
      samples.clear();
    }
  }
  return points;
}

}  // namespace attnkit::bench

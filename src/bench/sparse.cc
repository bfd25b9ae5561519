// Sparse attention measurements: static patterns and DSA vs dense causal, and the retrieval probe.
#include "attnkit/bench/sparse.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <functional>

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/gather.h"
#include "attnkit/masks/mask.h"

namespace attnkit::bench {
namespace {

double NowSeconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// Portable seeded normal numbers (SplitMix64 + Box–Muller): the same data on every platform.
class Normal {
 public:
  explicit Normal(uint64_t seed) : state_(seed) {}
  double Uniform() {  // (0, 1)
    return (static_cast<double>(Next() >> 11) + 0.5) * (1.0 / 9007199254740992.0);
  }
  float operator()() {
    const double r = std::sqrt(-2.0 * std::log(Uniform())), a = 6.283185307179586 * Uniform();
    return static_cast<float>(r * std::cos(a));
  }
  void Fill(float* p, int64_t n, float stddev = 1.0f) {
    for (int64_t i = 0; i < n; ++i) p[i] = stddev * (*this)();
  }

 private:
  uint64_t Next() {
    uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  uint64_t state_;
};

template <typename T>
TensorView<T> Rows(TensorView<T> t, int64_t from, int64_t count) {
  t.data += from * t.stride[2];
  t.shape[2] = count;
  return t;
}

PatternSpec Spec(const std::string& name, int64_t seqlen, uint64_t seed = 0) {
  PatternSpec s;
  s.name = name;
  s.seqlen = seqlen;
  s.seed = seed;
  return s;
}

// Times dense() against select() + attend() after one warm-up of each: the paths alternate
// within each repeat, so load that comes and goes meets both. Fills the timing fields of row.
void TimeDsaVsDense(const std::function<void()>& dense, const std::function<void()>& select,
                    const std::function<void()>& attend, int repeats, DsaVsDenseRow& row) {
  dense();
  select();
  attend();
  std::vector<double> td, ts, ta, tt;
  for (int r = 0; r < repeats; ++r) {
    double t0 = NowSeconds();
    dense();
    td.push_back(1e3 * (NowSeconds() - t0));
    t0 = NowSeconds();
    select();
    const double t1 = NowSeconds();
    attend();
    const double t2 = NowSeconds();
    ts.push_back(1e3 * (t1 - t0));
    ta.push_back(1e3 * (t2 - t1));
    tt.push_back(1e3 * (t2 - t0));
  }
  row.dense_ms = Median(td);
  row.dense_min_ms = *std::min_element(td.begin(), td.end());
  row.dense_max_ms = *std::max_element(td.begin(), td.end());
  row.indexer_ms = Median(ts);
  row.attention_ms = Median(ta);
  row.dsa_ms = Median(tt);
  row.dsa_min_ms = *std::min_element(tt.begin(), tt.end());
  row.dsa_max_ms = *std::max_element(tt.begin(), tt.end());
  row.speedup = row.dense_ms / row.dsa_ms;
}

}  // namespace

std::vector<SparseBenchRow> BenchSparse(const SparseBenchConfig& c) {
  Require(!c.seqlens.empty(), "BenchSparse: seqlens is empty");
  for (const int64_t n : c.seqlens) Require(n >= 1, "BenchSparse: seqlen must be >= 1, got ", n);
  Require(c.batch >= 1, "BenchSparse: batch must be >= 1, got ", c.batch);
  Require(c.num_heads >= 1, "BenchSparse: num_heads must be >= 1, got ", c.num_heads);
  Require(c.head_dim >= 1, "BenchSparse: head_dim must be >= 1, got ", c.head_dim);
  Require(c.repeats >= 1 && c.long_repeats >= 1, "BenchSparse: repeats must be >= 1");
  Require(c.top_k >= 1, "BenchSparse: top_k must be >= 1, got ", c.top_k);
  Require(c.index_heads >= 1, "BenchSparse: index_heads must be >= 1, got ", c.index_heads);
  Require(c.index_dim >= 1, "BenchSparse: index_dim must be >= 1, got ", c.index_dim);
  for (const auto& p : c.patterns) MakePattern(Spec(p, 1024));  // checks the names
  const int threads = ResolveThreads(c.threads);
  auto note = [&](const std::string& s) {
    if (c.on_case) c.on_case(s);
  };
  std::vector<SparseBenchRow> rows;
  for (const int64_t n : c.seqlens) {
    const int64_t b = c.batch, h = c.num_heads, d = c.head_dim;
    const bool long_run = n > 16384;
    const int reps = long_run ? c.long_repeats : c.repeats;
    Tensor<float> q(b, h, n, d), k(b, h, n, d), v(b, h, n, d), out(b, h, n, d);
    Normal rng(c.seed * 1000003 + static_cast<uint64_t>(n));
    rng.Fill(q.data(), q.numel());
    rng.Fill(k.data(), k.numel());
    rng.Fill(v.data(), v.numel());
    // Causal and every pattern, interleaved within each repeat so that all of them meet the same
    // machine conditions (other processes come and go); medians per mask.
    std::vector<MaskPtr> masks = {CausalMask()};
    std::vector<std::string> names = {"causal"};
    for (const auto& name : c.patterns) {
      masks.push_back(MakePattern(Spec(name, n)));
      names.push_back(name);
    }
    std::vector<std::vector<double>> times(masks.size());
    std::vector<DenseStats> stats(masks.size());
    note("seqlen " + std::to_string(n) + " causal and patterns");
    for (int rep = 0; rep < reps + (long_run ? 0 : 1); ++rep) {
      for (size_t m = 0; m < masks.size(); ++m) {
        DenseOptions opt;
        opt.mask = masks[m].get();
        opt.num_threads = threads;
        opt.stats = &stats[m];
        const double t0 = NowSeconds();
        DenseForward(q.view(), k.view(), v.view(), out.view(), opt);
        if (long_run || rep > 0) times[m].push_back(1e3 * (NowSeconds() - t0));  // rep 0: warm-up
      }
    }
    SparseBenchRow base;
    base.seqlen = n;
    base.causal_density = MaskDensity(masks[0].get(), n, n);
    base.causal_ms = Median(times[0]);
    for (size_t m = 0; m < masks.size(); ++m) {
      SparseBenchRow r = base;
      r.pattern = names[m];
      r.description = masks[m]->Describe();
      r.density = MaskDensity(masks[m].get(), n, n);
      r.median_ms = Median(times[m]);
      r.tiles = stats[m];
      r.efficiency = base.causal_ms * (r.density / base.causal_density) / r.median_ms;
      rows.push_back(r);
    }
    if (!c.dsa) continue;
    // DSA: seeded random indexer inputs; queries in chunks so indices stay small.
    const int64_t hi = c.index_heads, di = c.index_dim, top_k = c.top_k;
    Tensor<float> qi(b, hi, n, di), w(b, 1, n, hi), ki(b, 1, n, di);
    rng.Fill(qi.data(), qi.numel());
    rng.Fill(w.data(), w.numel());
    rng.Fill(ki.data(), ki.numel());
    const int64_t chunk = std::min<int64_t>(n, 4096);
    Tensor<int32_t> idx(b, 1, chunk, top_k);
    std::vector<double> t_sel, t_att;
    note("seqlen " + std::to_string(n) + " dsa");
    for (int rep = 0; rep < reps + (long_run ? 0 : 1); ++rep) {
      double sel = 0, att = 0;
      for (int64_t q0 = 0; q0 < n; q0 += chunk) {
        const int64_t nq = std::min(chunk, n - q0);
        IndexerOptions io;
        io.q_start = q0;
        io.num_threads = threads;
        GatherOptions go;
        go.num_threads = threads;
        auto iv = Rows(idx.view(), 0, nq);
        const double t0 = NowSeconds();
        DsaSelect(Rows(TensorView<const float>(qi.view()), q0, nq),
                  Rows(TensorView<const float>(w.view()), q0, nq),
                  Rows(TensorView<const float>(ki.view()), 0, q0 + nq), top_k, iv, io);
        const double t1 = NowSeconds();
        GatherForward(Rows(TensorView<const float>(q.view()), q0, nq), k.view(), v.view(), iv,
                      Rows(out.view(), q0, nq), go);
        const double t2 = NowSeconds();
        sel += t1 - t0;
        att += t2 - t1;
      }
      if (!long_run && rep == 0) continue;  // warm-up
      t_sel.push_back(1e3 * sel);
      t_att.push_back(1e3 * att);
    }
    SparseBenchRow r = base;
    r.pattern = "dsa";
    r.top_k = top_k;
    r.description = "dsa(top_k=" + std::to_string(top_k) + ",index_heads=" + std::to_string(hi) +
                    ",index_dim=" + std::to_string(di) +
                    (IndexerUsesAvx512Bf16() ? ",indexer=avx512bf16)" : ",indexer=f32simd)");
    double pairs = 0;  // query i selects min(top_k, i + 1) keys
    for (int64_t i = 0; i < n; ++i) pairs += static_cast<double>(std::min(top_k, i + 1));
    r.density = pairs / (static_cast<double>(n) * static_cast<double>(n));
    r.indexer_ms = Median(t_sel);
    r.attention_ms = Median(t_att);
    r.median_ms = r.indexer_ms + r.attention_ms;
    r.indexer_share = r.indexer_ms / base.causal_ms;
    r.attention_share = r.attention_ms / base.causal_ms;
    r.efficiency = base.causal_ms * (r.density / base.causal_density) / r.median_ms;
    r.tiles = DenseStats{};
    rows.push_back(r);
  }
  return rows;
}

std::vector<MlaDsaDecodeRow> BenchMlaDsaDecode(const MlaDsaDecodeConfig& c) {
  Require(c.num_heads >= 1 && c.kv_lora_rank >= 1 && c.rope_dim >= 0 && c.index_heads >= 1 &&
              c.index_dim >= 1 && c.top_k >= 1 && c.repeats >= 1,
          "BenchMlaDsaDecode: heads, ranks, indexer sizes, top_k and repeats must be positive");
  const int threads = c.threads > 0 ? c.threads : GetNumThreads();
  const int64_t h = c.num_heads, dk = c.kv_lora_rank + c.rope_dim, dv = c.kv_lora_rank;
  std::vector<MlaDsaDecodeRow> rows;
  Normal rng(c.seed);
  for (const int64_t n : c.contexts) {
    Require(n >= 1, "BenchMlaDsaDecode: contexts must be >= 1, got ", n);
    if (c.on_case) c.on_case("context " + std::to_string(n));
    // The latent cache [1, 1, n, 576]; v = its first 512 dims (same memory).
    Tensor<float> latent_f(1, 1, n, dk);
    rng.Fill(latent_f.data(), latent_f.numel());
    Tensor<bf16> latent_b(1, 1, c.bf16_latent ? n : 0, dk);
    if (c.bf16_latent) {
      for (int64_t i = 0; i < latent_b.numel(); ++i)
        latent_b.data()[i] = ToBf16(latent_f.data()[i]);
    }
    Tensor<float> q(1, h, 1, dk), out(1, h, 1, dv);
    rng.Fill(q.data(), q.numel());
    Tensor<float> qi(1, c.index_heads, 1, c.index_dim), w(1, 1, 1, c.index_heads),
        ki(1, 1, n, c.index_dim);
    rng.Fill(qi.data(), qi.numel());
    rng.Fill(w.data(), w.numel());
    rng.Fill(ki.data(), ki.numel());
    IndexerCache icache(1, c.index_dim, n);
    icache.Append(ki.view());
    const int64_t k_sel = std::min(c.top_k, n);
    Tensor<int32_t> idx(1, 1, 1, k_sel);
    DenseOptions dopt;
    dopt.num_threads = threads;
    IndexerOptions io;
    io.num_threads = threads;
    GatherOptions go;
    go.num_threads = threads;
    auto dense = [&] {
      if (c.bf16_latent) {
        TensorView<const bf16> k = latent_b.view(), v = k;
        v.shape[3] = dv;
        DenseForward(q.view(), k, v, out.view(), dopt);
      } else {
        TensorView<const float> k = latent_f.view(), v = k;
        v.shape[3] = dv;
        DenseForward(q.view(), k, v, out.view(), dopt);
      }
    };
    auto select = [&] { DsaSelect(qi.view(), w.view(), icache, k_sel, idx.view(), io); };
    auto attend = [&] {
      if (c.bf16_latent) {
        TensorView<const bf16> k = latent_b.view(), v = k;
        v.shape[3] = dv;
        GatherForward(q.view(), k, v, idx.view(), out.view(), go);
      } else {
        TensorView<const float> k = latent_f.view(), v = k;
        v.shape[3] = dv;
        GatherForward(q.view(), k, v, idx.view(), out.view(), go);
      }
    };
    MlaDsaDecodeRow row;
    row.context = n;
    TimeDsaVsDense(dense, select, attend, c.repeats, row);
    const double nn = static_cast<double>(n), ks = static_cast<double>(k_sel);
    row.dense_flops = 2.0 * static_cast<double>(h) * nn * static_cast<double>(dk + dv);
    row.dsa_flops =
        2.0 * static_cast<double>(c.index_heads) * nn * static_cast<double>(c.index_dim) +
        2.0 * static_cast<double>(h) * ks * static_cast<double>(dk + dv);
    rows.push_back(row);
  }
  return rows;
}

std::vector<MlaDsaPrefillRow> BenchMlaDsaPrefill(const MlaDsaPrefillConfig& c) {
  constexpr const char* fn = "BenchMlaDsaPrefill";
  Require(c.head_divisor >= 1, fn, ": head_divisor must be >= 1, got ", c.head_divisor);
  const int64_t h = std::max<int64_t>(1, c.num_heads / c.head_divisor);
  const int64_t hi = std::max<int64_t>(1, c.index_heads / c.head_divisor);
  Require(
      c.kv_lora_rank >= 1 && c.rope_dim >= 0 && c.index_dim >= 1 && c.top_k >= 1 && c.repeats >= 1,
      fn, ": ranks, indexer sizes, top_k and repeats must be positive");
  const int threads = c.threads > 0 ? c.threads : GetNumThreads();
  const int64_t dk = c.kv_lora_rank + c.rope_dim, dv = c.kv_lora_rank;
  std::vector<MlaDsaPrefillRow> rows;
  Normal rng(c.seed);
  const MaskPtr causal = CausalMask();
  for (const int64_t n : c.contexts) {
    Require(n >= 1, fn, ": contexts must be >= 1, got ", n);
    if (c.on_case) c.on_case("prefill " + std::to_string(n));
    const int64_t k_sel = std::min(c.top_k, n);
    // Scale the random data so logits are O(1): q·k over dk dims of N(0, 1/dk).
    const float sd = 1.0f / std::sqrt(static_cast<float>(dk));
    Tensor<bf16> latent(1, 1, n, dk);
    for (int64_t i = 0; i < latent.numel(); ++i) latent.data()[i] = ToBf16(rng());
    Tensor<float> q(1, h, n, dk), out(1, h, n, dv);
    rng.Fill(q.data(), q.numel(), sd);
    Tensor<float> qi(1, hi, n, c.index_dim), w(1, 1, n, hi), ki(1, 1, n, c.index_dim);
    rng.Fill(qi.data(), qi.numel());
    rng.Fill(w.data(), w.numel());
    rng.Fill(ki.data(), ki.numel());
    IndexerCache icache(1, c.index_dim, n);
    icache.Append(ki.view());
    Tensor<int32_t> idx(1, 1, n, k_sel);
    TensorView<const bf16> kview = latent.view(), vview = kview;
    vview.shape[3] = dv;
    DenseOptions dopt;
    dopt.num_threads = threads;
    dopt.mask = causal.get();
    IndexerOptions io;
    io.num_threads = threads;
    GatherOptions go;
    go.num_threads = threads;
    auto dense = [&] { DenseForward(q.view(), kview, vview, out.view(), dopt); };
    auto select = [&] { DsaSelect(qi.view(), w.view(), icache, k_sel, idx.view(), io); };
    auto attend = [&] { GatherForward(q.view(), kview, vview, idx.view(), out.view(), go); };
    MlaDsaPrefillRow row;
    row.context = n;
    row.num_heads = h;
    row.index_heads = hi;
    TimeDsaVsDense(dense, select, attend, c.repeats, row);
    const double nn = static_cast<double>(n);
    // Causal pairs n(n+1)/2; DSA: every query scores its visible keys, then attends to
    // min(top_k, visible) rows.
    const double pairs = nn * (nn + 1) / 2;
    double sel_pairs = 0;
    for (int64_t t = 0; t < n; ++t) sel_pairs += static_cast<double>(std::min(t + 1, k_sel));
    row.dense_flops = 2.0 * static_cast<double>(h) * pairs * static_cast<double>(dk + dv);
    row.dsa_flops = 2.0 * static_cast<double>(hi) * pairs * static_cast<double>(c.index_dim) +
                    2.0 * static_cast<double>(h) * sel_pairs * static_cast<double>(dk + dv);
    rows.push_back(row);
  }
  return rows;
}

// The probe runs every method over the whole sequence once per distance: bounded sizes keep it a
// probe (minutes at most), not a benchmark.
constexpr int64_t kProbeMaxSeqlen = int64_t{1} << 24;
constexpr int64_t kProbeMaxDim = 65536;

ProbeResult RetrievalProbe(const ProbeConfig& in) {
  ProbeResult res;
  res.config = in;
  ProbeConfig& c = res.config;
  Require(c.seqlen >= 2, "RetrievalProbe: seqlen must be >= 2, got ", c.seqlen);
  Require(c.head_dim >= 1, "RetrievalProbe: head_dim must be >= 1, got ", c.head_dim);
  Require(c.window >= 1, "RetrievalProbe: window must be >= 1, got ", c.window);
  Require(c.top_k >= 1, "RetrievalProbe: top_k must be >= 1, got ", c.top_k);
  Require(c.index_dim >= 1, "RetrievalProbe: index_dim must be >= 1, got ", c.index_dim);
  Require(c.indexer_noise >= 0 && std::isfinite(c.indexer_noise),
          "RetrievalProbe: indexer_noise must be finite and >= 0, got ", c.indexer_noise);
  // Bounds first, then the memory estimate: k, v, the indexer keys and scores, all [seqlen, ·].
  Require(c.seqlen <= kProbeMaxSeqlen, "RetrievalProbe: seqlen must be <= ", kProbeMaxSeqlen,
          ", got ", c.seqlen);
  Require(c.head_dim <= kProbeMaxDim, "RetrievalProbe: head_dim must be <= ", kProbeMaxDim,
          ", got ", c.head_dim);
  Require(c.index_dim <= kProbeMaxDim, "RetrievalProbe: index_dim must be <= ", kProbeMaxDim,
          ", got ", c.index_dim);
  RequireFitsInMemory(
      4.0 * static_cast<double>(c.seqlen) * static_cast<double>(2 * c.head_dim + c.index_dim + 2),
      "RetrievalProbe (seqlen " + std::to_string(c.seqlen) + ", head_dim " +
          std::to_string(c.head_dim) + ")");
  const int64_t n = c.seqlen, d = c.head_dim, t = n - 1;
  if (c.distances.empty()) {
    for (int64_t x = 1; x < n; x *= 2) c.distances.push_back(x);
    if (c.distances.back() != n - 1) c.distances.push_back(n - 1);
  }
  for (const int64_t x : c.distances) {
    Require(x >= 1 && x <= n - 1, "RetrievalProbe: distance ", x,
            " is outside [1, seqlen - 1 = ", n - 1, "]");
  }
  struct Method {
    std::string name;
    MaskPtr mask;
  };
  std::vector<Method> methods = {{"causal", CausalMask()}, {"window", CausalWindowMask(c.window)}};
  for (const auto& p : c.patterns) {
    methods.push_back({p, MakePattern(Spec(p, n, c.seed))});
  }
  for (const auto& m : methods) res.methods.push_back(m.name);
  res.methods.push_back("dsa");
  // The indexer's projection P [index_dim × head_dim] (fixed for the whole probe).
  std::vector<float> proj(static_cast<size_t>(c.index_dim * d));
  Normal(c.seed ^ 0x5bd1e995ull)
      .Fill(proj.data(), static_cast<int64_t>(proj.size()),
            1.0f / std::sqrt(static_cast<float>(c.index_dim)));
  // Planted logit alpha² · scale = 30 with scale = 1/sqrt(d); others are ~N(0, (alpha·scale)²).
  const float alpha = std::sqrt(30.0f * std::sqrt(static_cast<float>(d)));
  for (const int64_t dist : c.distances) {
    const int64_t p = t - dist;
    Normal rng(c.seed * 0x100000001b3ull + static_cast<uint64_t>(dist));
    Tensor<float> q(1, 1, 1, d), k(1, 1, n, d), v(1, 1, n, d), out(1, 1, 1, d);
    rng.Fill(k.data(), k.numel());
    rng.Fill(v.data(), v.numel());
    std::vector<float> u(static_cast<size_t>(d));
    rng.Fill(u.data(), d);
    double norm = 0;
    for (const float x : u) norm += double{x} * x;
    for (int64_t x = 0; x < d; ++x) {
      const float val = alpha * u[x] / static_cast<float>(std::sqrt(norm));
      q.data()[x] = val;
      k.view().at(0, 0, p, x) = val;
    }
    const float* target = v.view().row(0, 0, p);
    auto cosine = [&](const float* a) {
      double ab = 0, aa = 0, bb = 0;
      for (int64_t x = 0; x < d; ++x) {
        ab += double{a[x]} * target[x];
        aa += double{a[x]} * a[x];
        bb += double{target[x]} * target[x];
      }
      return aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0;
    };
    for (const auto& m : methods) {
      DenseOptions opt;
      opt.mask = m.mask.get();
      opt.q_start = t;
      DenseForward(q.view(), k.view(), v.view(), out.view(), opt);
      ProbeRow r;
      r.method = m.name;
      r.description = m.mask->Describe();
      r.distance = dist;
      r.visible = m.mask->Allowed(t, p);
      r.cosine = cosine(out.data());
      r.retrieved = r.cosine > 0.9;
      res.rows.push_back(r);
    }
    // DSA: a 1-head indexer on projections of the same q and k (a stand-in for a trained one).
    Tensor<float> qi(1, 1, 1, c.index_dim), w(1, 1, 1, 1), ki(1, 1, n, c.index_dim);
    w.data()[0] = 1.0f;
    auto project = [&](const float* x, float* y) {
      for (int64_t a = 0; a < c.index_dim; ++a) {
        float s = 0;
        for (int64_t e = 0; e < d; ++e) s += proj[a * d + e] * x[e];
        y[a] = s;
      }
    };
    project(q.data(), qi.data());
    for (int64_t j = 0; j < n; ++j) project(k.view().row(0, 0, j), ki.view().row(0, 0, j));
    if (c.indexer_noise > 0) {
      double rms = 0;
      for (int64_t x = 0; x < ki.numel(); ++x) rms += double{ki.data()[x]} * ki.data()[x];
      const float s = static_cast<float>(c.indexer_noise * std::sqrt(rms / double(ki.numel())));
      for (int64_t x = 0; x < ki.numel(); ++x) ki.data()[x] += s * rng();
      for (int64_t x = 0; x < qi.numel(); ++x) qi.data()[x] += s * rng();
    }
    IndexerOptions io;
    io.q_start = t;
    Tensor<float> scores(1, 1, 1, n);
    LightningIndexer(qi.view(), w.view(), ki.view(), scores.view(), io);
    const int64_t top_k = std::min(c.top_k, n);
    Tensor<int32_t> idx(1, 1, 1, top_k);
    DsaSelect(qi.view(), w.view(), ki.view(), top_k, idx.view(), io);
    GatherForward(q.view(), k.view(), v.view(), idx.view(), out.view());
    ProbeRow r;
    r.method = "dsa";
    r.description =
        "dsa(top_k=" + std::to_string(top_k) + ",index_dim=" + std::to_string(c.index_dim) + ")";
    r.distance = dist;
    for (int64_t j = 0; j < top_k; ++j) r.visible |= idx.data()[j] == p;
    const float sp = scores.data()[p];
    r.indexer_rank = 0;
    for (int64_t j = 0; j < n; ++j) {
      const float s = scores.data()[j];
      r.indexer_rank += (s > sp || (s == sp && j < p)) ? 1 : 0;
    }
    r.cosine = cosine(out.data());
    r.retrieved = r.cosine > 0.9;
    res.rows.push_back(r);
  }
  return res;
}

}  // namespace attnkit::bench

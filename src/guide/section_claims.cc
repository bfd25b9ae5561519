// Guide section "claims": the comparison table readers bring from blog posts, stated as a claim
// and measured on this machine cell by cell — the longest sequence each variant prefills within
// a stated budget (found by doubling, then bisecting), the compute each sparse pattern saves at
// 5,000 and 10,000 tokens (time and pairs), and the Performer's error at 1,024 / 5,000 / 10,000
// tokens across input temperatures. The verdicts are generated (findings.h, ClaimsFindings).
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <iterator>

#include "attnkit/core/tensor.h"
#include "attnkit/guide/charts.h"
#include "attnkit/guide/svg.h"
#include "attnkit/kernels/dense.h"
#include "attnkit/kernels/linear.h"
#include "attnkit/masks/sparse.h"
#include "guide/dense_measure.h"
#include "guide/findings.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

constexpr int64_t kDim = 128;       // one head of head_dim 128: "per layer and head"
constexpr int64_t kFeatures = 256;  // Performer m
constexpr int64_t kErrorDim = 64;

double BudgetSeconds(const SweepConfig& c) {
  return c.size == SweepSize::kFull ? 1.0 : c.size == SweepSize::kQuick ? 0.25 : 0.02;
}
constexpr double kBudgetBytes = 1024.0 * 1024 * 1024;
int64_t SearchBound(const SweepConfig& c) {
  return c.size == SweepSize::kSmoke ? 16384 : int64_t{1} << 21;
}
int BisectSteps(const SweepConfig& c) {
  return c.size == SweepSize::kFull ? 5 : c.size == SweepSize::kQuick ? 2 : 1;
}
std::vector<int64_t> SavingLengths(const SweepConfig& c) {
  if (c.size == SweepSize::kSmoke) return {500, 1000};
  return {5000, 10000};
}
std::vector<int64_t> ErrorLengths(const SweepConfig& c) {
  if (c.size == SweepSize::kSmoke) return {256, 512};
  return {1024, 5000, 10000};
}
std::vector<double> ErrorTemperatures(const SweepConfig& c) {
  if (c.size == SweepSize::kSmoke) return {0.5, 8};
  if (c.size == SweepSize::kQuick) return {0.5, 2, 8};
  return {0.5, 1, 2, 4, 8};
}

struct Variant {
  const char* name;     // as in the popular table
  const char* pattern;  // "" = causal dense, "performer" = FAVOR+, else a MakePattern name
  int64_t claimed;
  const char* complexity;
  const char* claim_note;
};
const Variant kVariants[] = {
    {"multi-head attention (exact, causal)", "", 1024, "quadratic", "—"},
    {"sparse attention (strided, Sparse Transformer)", "strided", 5000, "reduced",
     "~50 % less compute"},
    {"sparse attention (BigBird)", "bigbird", 5000, "reduced", "~50 % less compute"},
    {"Performer (FAVOR+, m = 256)", "performer", 10000, "linear", "without sacrificing accuracy"},
};

// Bytes a prefill of n tokens holds: Q, K, V, O in f32 (and the Performer's feature maps of q
// and k, m values per token each).
double PrefillBytes(const Variant& v, int64_t n) {
  double b = 4.0 * static_cast<double>(n) * kDim * 4;
  if (std::string(v.pattern) == "performer") b += 2.0 * static_cast<double>(n) * kFeatures * 4;
  return b;
}

// One prefill of n tokens: a single timed run (the inputs are written before it, so only the
// output's first-touch page faults fall inside; a probe decides a threshold, not a spread).
double TimePrefill(const Variant& v, int64_t n, int threads) {
  Tensor<float> q(1, 1, n, kDim), k(1, 1, n, kDim), vv(1, 1, n, kDim), o(1, 1, n, kDim);
  FillUniform(q.data(), q.numel(), 1);
  FillUniform(k.data(), k.numel(), 2);
  FillUniform(vv.data(), vv.numel(), 3);
  const std::string pattern = v.pattern;
  if (pattern == "performer") {
    static const PerformerFeatures features(kFeatures, kDim, RandomFeatureKind::kOrthogonal, 7);
    LinearOptions lo;
    lo.features = &features;
    lo.num_threads = threads;
    return TimeRepeats([&] { LinearForward(q.view(), k.view(), vv.view(), o.view(), lo); }, 1, 1, 0,
                       false)
        .median;
  }
  MaskPtr mask;
  if (pattern.empty()) {
    mask = CausalMask();
  } else {
    PatternSpec spec;
    spec.name = pattern;
    spec.seqlen = n;
    mask = MakePattern(spec);
  }
  DenseOptions opt;
  opt.mask = mask.get();
  opt.num_threads = threads;
  return TimeRepeats([&] { DenseForward(q.view(), k.view(), vv.view(), o.view(), opt); }, 1, 1, 0,
                     false)
      .median;
}

// The longest n (a multiple of 64) whose prefill fits the time and memory budget: doubling from
// 512 until a length breaks the budget (or would, predicted from the last two lengths with at
// least linear growth), then bisecting between the last length that fit and the first that broke.
ClaimsMeasured::Reach FindReach(Context& ctx, const Variant& v, double budget_s) {
  const SweepConfig& c = ctx.config();
  ClaimsMeasured::Reach r;
  r.variant = v.name;
  r.claimed = v.claimed;
  r.limit = "search bound";
  int64_t good = 0, bad = 0;
  double t_good = 0, t_prev = 0;
  int64_t n_prev = 0;
  auto fits = [&](int64_t n, double* t) {
    if (PrefillBytes(v, n) > kBudgetBytes) {
      r.limit = "memory";
      return false;
    }
    *t = TimePrefill(v, n, c.threads);
    if (*t > budget_s) {
      r.limit = "time";
      return false;
    }
    return true;
  };
  for (int64_t n = 512; n <= SearchBound(c); n *= 2) {
    // Skip a length whose predicted time is far over the budget (it would only burn time).
    if (n_prev > 0 && t_prev > 0 && good > 0) {
      const double predicted = t_good * std::pow(static_cast<double>(n) / good, 1.0);
      if (predicted > 4 * budget_s && PrefillBytes(v, n) <= kBudgetBytes) {
        r.limit = "time (predicted from the last length)";
        bad = n;
        break;
      }
    }
    double t = 0;
    const bool ok = fits(n, &t);
    ctx.Step(std::string("claims: ") + v.name + " " + FormatTokens(n));
    if (!ok) {
      bad = n;
      break;
    }
    good = n, t_good = t, n_prev = n, t_prev = t;
  }
  for (int step = 0; step < BisectSteps(c) && good > 0 && bad > good + 64; ++step) {
    const int64_t mid = (good + bad) / 2 / 64 * 64;
    if (mid <= good) break;
    double t = 0;
    const std::string limit = r.limit;
    if (fits(mid, &t)) {
      good = mid, t_good = t;
      r.limit = limit;
    } else {
      bad = mid;
    }
    ctx.Step(std::string("claims: ") + v.name + " bisect " + std::to_string(mid));
  }
  r.longest = good;
  r.first_over = bad;
  r.seconds_at_longest = t_good;
  return r;
}

// Pattern time against causal time at n tokens (1 head, 3 repeats each) and the pair fraction.
ClaimsMeasured::Saving MeasureSaving(const std::string& pattern, int64_t n, int threads,
                                     const Timing& causal) {
  ClaimsMeasured::Saving s;
  s.pattern = pattern;
  s.seqlen = n;
  PatternSpec spec;
  spec.name = pattern;
  spec.seqlen = n;
  const MaskPtr mask = MakePattern(spec);
  const MaskPtr c = CausalMask();
  s.pair_fraction = MaskDensity(mask.get(), n, n) / MaskDensity(c.get(), n, n);
  Tensor<float> q(1, 1, n, kDim), k(1, 1, n, kDim), v(1, 1, n, kDim), o(1, 1, n, kDim);
  FillUniform(q.data(), q.numel(), 1);
  FillUniform(k.data(), k.numel(), 2);
  FillUniform(v.data(), v.numel(), 3);
  DenseOptions opt;
  opt.mask = mask.get();
  opt.num_threads = threads;
  const Timing t =
      TimeRepeats([&] { DenseForward(q.view(), k.view(), v.view(), o.view(), opt); }, 3, 3, 0);
  s.time_fraction = Ratio({t.median, t.min, t.max}, {causal.median, causal.min, causal.max});
  return s;
}

Timing TimeCausal(int64_t n, int threads) {
  Tensor<float> q(1, 1, n, kDim), k(1, 1, n, kDim), v(1, 1, n, kDim), o(1, 1, n, kDim);
  FillUniform(q.data(), q.numel(), 1);
  FillUniform(k.data(), k.numel(), 2);
  FillUniform(v.data(), v.numel(), 3);
  const MaskPtr causal = CausalMask();
  DenseOptions opt;
  opt.mask = causal.get();
  opt.num_threads = threads;
  return TimeRepeats([&] { DenseForward(q.view(), k.view(), v.view(), o.view(), opt); }, 3, 3, 0);
}

// FAVOR+ (m = 256, orthogonal) against exact causal attention at n tokens, Gaussian-like q, k
// scaled to `temperature` = ‖q‖·‖k‖/√d: relative error and output cosine over 3 feature draws.
ClaimsMeasured::PerformerError PerformerAt(int64_t n, double temperature, int threads) {
  const int64_t d = kErrorDim;
  Tensor<float> q(1, 1, n, d), k(1, 1, n, d), v(1, 1, n, d), o(1, 1, n, d), exact(1, 1, n, d);
  FillUniform(q.data(), q.numel(), 41);
  FillUniform(k.data(), k.numel(), 42);
  FillUniform(v.data(), v.numel(), 43);
  const float f =
      static_cast<float>(std::sqrt(3.0 * temperature / std::sqrt(static_cast<double>(d))));
  for (int64_t i = 0; i < q.numel(); ++i) q.data()[i] *= f;
  for (int64_t i = 0; i < k.numel(); ++i) k.data()[i] *= f;
  const MaskPtr causal = CausalMask();
  DenseOptions dopt;
  dopt.mask = causal.get();
  dopt.num_threads = threads;
  DenseForward(q.view(), k.view(), v.view(), exact.view(), dopt);
  std::vector<double> errors, cosines;
  for (int draw = 0; draw < 3; ++draw) {
    const PerformerFeatures features(kFeatures, d, RandomFeatureKind::kOrthogonal,
                                     500 + static_cast<uint64_t>(draw));
    LinearOptions lo;
    lo.features = &features;
    lo.num_threads = threads;
    LinearForward(q.view(), k.view(), v.view(), o.view(), lo);
    errors.push_back(RelativeError(o, exact));
    cosines.push_back(MeanRowCosine(o, exact));
  }
  ClaimsMeasured::PerformerError e;
  e.seqlen = n;
  e.temperature = temperature;
  e.error = SpreadOf(errors);
  e.cosine = SpreadOf(cosines);
  return e;
}

const char* kSavingPatterns[] = {"strided", "fixed", "longformer", "bigbird"};

Section Build(Context& ctx) {
  const SweepConfig& c = ctx.config();
  Section sec;
  sec.name = "claims";
  sec.comparison = true;
  sec.title = "The claims readers bring, measured on this machine";
  const double budget = BudgetSeconds(c);
  sec.intro_html =
      "<p>A comparison table circulates in blog posts and slides: <i>multi-head attention — "
      "quadratic, about 1,024 tokens; sparse attention — reduced, about 5,000 tokens, "
      "&ldquo;~50 % less compute&rdquo;; Performer — linear, about 10,000 tokens, &ldquo;without "
      "sacrificing accuracy&rdquo;</i>. Here each cell is a claim, and beside it is what this "
      "machine measured in this run: the longest sequence one layer's head (head_dim 128, f32, "
      "batch 1, " +
      std::to_string(c.threads) + " threads) prefills within " + Fmt("%.2g", budget) +
      " s and 1 GiB (found by doubling from 512 tokens, then bisecting" +
      (c.size == SweepSize::kFull ? "" : "; --full uses a one-second budget") +
      "), the compute the sparse patterns save at 5,000 and 10,000 tokens, and the Performer's "
      "error at 1,024, 5,000 and 10,000 tokens from soft to peaked attention. The verdicts under "
      "the tables are generated from these numbers.</p>";

  ClaimsMeasured m;
  m.budget_seconds = budget;
  m.budget_bytes = kBudgetBytes;
  Table reach;
  reach.id = "claims-reach";
  reach.title = "Claimed reach against the longest prefill within " + Fmt("%.2g", budget) +
                " s and 1 GiB per layer and head";
  reach.provenance = Provenance::kMeasured;
  reach.source =
      "DenseForward (CausalMask / MakePattern defaults) and LinearForward (FAVOR+) on 1 head of "
      "128 dims, one timed run per length; memory: Q, K, V, O (and FAVOR+ "
      "features) in f32; this run";
  reach.header = {"variant",          "claimed complexity", "claimed length",    "claim",
                  "measured longest", "time there",         "first length over", "limit"};
  for (const auto& v : kVariants) {
    const ClaimsMeasured::Reach r = FindReach(ctx, v, budget);
    m.reach.push_back(r);
    reach.rows.push_back({v.name, v.complexity, "~" + std::to_string(v.claimed), v.claim_note,
                          r.longest > 0 ? std::to_string(r.longest) : "none",
                          r.longest > 0 ? Fmt("%.3g s", r.seconds_at_longest) : "—",
                          r.first_over > 0 ? std::to_string(r.first_over) : "—", r.limit});
  }
  sec.tables.push_back(reach);

  Table save;
  save.id = "claims-savings";
  save.title =
      "\"~50 % less compute\": what each sparse pattern saves against full causal attention";
  save.provenance = Provenance::kMeasured;
  save.source =
      "MakePattern defaults at each length; pairs from MaskDensity (exact); time: DenseForward, "
      "1 head of 128 dims, median (min–max) of 3 runs each, this run";
  save.header = {"pattern", "tokens", "pairs kept (share of causal)", "time (share of causal)",
                 "compute saved (time)"};
  for (int64_t n : SavingLengths(c)) {
    const Timing causal = TimeCausal(n, c.threads);
    ctx.Step("claims: causal " + std::to_string(n));
    for (const char* p : kSavingPatterns) {
      const ClaimsMeasured::Saving s = MeasureSaving(p, n, c.threads, causal);
      ctx.Step(std::string("claims: ") + p + " " + std::to_string(n));
      m.savings.push_back(s);
      save.rows.push_back({p, std::to_string(n), Fmt("%.3f", s.pair_fraction),
                           FormatSpread("%.3f", s.time_fraction),
                           Fmt("%.0f %%", 100 * (1 - s.time_fraction.value))});
    }
  }
  sec.tables.push_back(save);

  Table perr;
  perr.id = "claims-performer";
  perr.title = "\"Without sacrificing accuracy\": FAVOR+ (m = 256) against exact attention";
  perr.provenance = Provenance::kMeasured;
  perr.source =
      "LinearForward(FAVOR+, orthogonal, m = 256) against DenseForward(CausalMask), 1 head of 64 "
      "dims, q and k scaled to temperature ‖q‖·‖k‖/√d; median (min–max) over 3 feature draws";
  perr.header = {"tokens", "temperature", "relative error", "output cosine"};
  for (int64_t n : ErrorLengths(c)) {
    for (double t : ErrorTemperatures(c)) {
      const auto e = PerformerAt(n, t, c.threads);
      ctx.Step("claims: Performer error " + std::to_string(n) + ", temperature " + Fmt("%.2g", t));
      m.performer.push_back(e);
      perr.rows.push_back({std::to_string(n), Fmt("%.2g", t), FormatSpread("%.3f", e.error),
                           FormatSpread("%.4f", e.cosine)});
    }
  }
  sec.tables.push_back(perr);

  // A chart of the reach, so the section carries a figure: claimed against measured.
  BarChartSpec bars;
  bars.title = "Claimed length against the longest prefill within the budget";
  bars.subtitle = Fmt("%.2g", budget) + " s and 1 GiB, 1 head of 128 dims, " +
                  std::to_string(c.threads) + " threads";
  bars.x_title = "variant";
  bars.y_title = "tokens";
  bars.group_title = "";
  bars.y_format = ",d";
  bars.log_y = 1;
  for (const auto& r : m.reach) {
    bars.bars.push_back({r.variant, "claimed", static_cast<double>(r.claimed)});
    if (r.longest > 0) {
      bars.bars.push_back({r.variant, "measured here", static_cast<double>(r.longest)});
    }
  }
  Figure f;
  f.kind = Figure::Kind::kChart;
  f.id = "claims-reach-chart";
  f.title = bars.title;
  f.caption =
      "The budget is a choice (stated above); the claimed lengths come from no stated budget at "
      "all, which is the point: a length without a time, memory and accuracy budget is not a "
      "property of the method.";
  f.provenance = Provenance::kMeasured;
  f.source = reach.source;
  f.vega_lite = GroupedBarChart(bars);
  sec.figures.push_back(f);
  AttachFindings(sec, ClaimsFindings(m));
  return sec;
}

}  // namespace

SectionSpec ClaimsSection() {
  SectionSpec s;
  s.name = "claims";
  s.title = "The popular claims, measured";
  s.steps = [](const SweepConfig& c) {
    int64_t doubling = 0;
    for (int64_t n = 512; n <= SearchBound(c); n *= 2) ++doubling;
    return static_cast<int64_t>(std::size(kVariants)) * (doubling + BisectSteps(c)) +
           static_cast<int64_t>(SavingLengths(c).size() * (1 + std::size(kSavingPatterns)) +
                                ErrorLengths(c).size() * ErrorTemperatures(c).size());
  };
  s.peak_bytes = [](const SweepConfig& c) {
    return static_cast<int64_t>(std::min(kBudgetBytes, PrefillBytes(kVariants[3], SearchBound(c))));
  };
  s.build = Build;
  return s;
}

}  // namespace attnkit::guide::detail

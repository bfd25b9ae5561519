// Each section's conclusions, generated from its measured data (see findings.h): expected
// slopes, orderings and ratios checked against the numbers with their spread, and measured
// relations (shares, crossovers, speed-ups) stated in words.
#include "guide/findings.h"

#include <algorithm>
#include <cmath>

#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

const char* kMs = "%.3g ms";

std::string Tok(double x) { return FormatTokens(std::llround(x)); }

// The largest x present in every series (0 when none is common).
double LongestCommon(const std::vector<const Series*>& series) {
  if (series.empty()) return 0;
  std::vector<double> xs = series[0]->x;
  std::sort(xs.rbegin(), xs.rend());
  for (double x : xs) {
    bool all = true;
    Spread s;
    for (const Series* other : series) all = all && FindAt(*other, x, &s);
    if (all) return x;
  }
  return 0;
}

Spread Percent(const Spread& s) { return {100 * s.value, 100 * s.lo, 100 * s.hi}; }

// The slope of `s` as a Spread, NaN when it has too few points.
Spread SlopeSpread(const Series& s) {
  Spread sl;
  if (!SlopeOf(s, &sl)) sl = {NAN, NAN, NAN};
  return sl;
}

// A copy of s fitted from `from` only: an expectation about long lengths is judged on long
// lengths, and stays unresolved when the sweep did not reach three of them.
Series FitFrom(Series s, double from) {
  s.fit_min_x = from;
  return s;
}

// Expects the time slope of `time` to follow the slope of the kept pair counts `pairs` (from the
// mask objects, exact) within ± tolerance.
Finding FollowsPairs(const std::string& id, const Series& time, const Series& pairs,
                     double tolerance) {
  Series p = pairs;
  p.fit_min_x = time.fit_min_x;
  p.y_lo.clear();
  p.y_hi.clear();
  const LogLogFit pf = FitSeries(p);
  if (pf.points < 2 || !std::isfinite(pf.slope)) {
    return SlopeFinding(id, time.name + " prefill time", time, 0.8, 2.2,
                        "time to follow the kept pairs");
  }
  return SlopeFinding(id, time.name + " prefill time", time, pf.slope - tolerance,
                      pf.slope + tolerance,
                      "time to follow the pairs the mask keeps (their count grows with slope " +
                          Fmt("%.2f", pf.slope) + " over the same lengths)");
}

}  // namespace

void AttachFindings(Section& section, FindingsByFigure findings) {
  for (auto& entry : findings) {
    const auto& id = entry.first;
    auto& list = entry.second;
    // (No structured binding: clang 14, which builds the ThreadSanitizer tree, cannot capture one.)
    auto it = std::find_if(section.figures.begin(), section.figures.end(),
                           [&id](const Figure& f) { return f.id == id; });
    auto& target = (id.empty() || it == section.figures.end()) ? section.findings : it->findings;
    target.insert(target.end(), list.begin(), list.end());
  }
}

FindingsByFigure HeadsFindings(const HeadsMeasured& m) {
  FindingsByFigure out;
  for (const auto& s : m.prefill) {
    out["heads-prefill-time"].push_back(
        SlopeFinding("heads.prefill-slope." + s.name, s.name + " causal prefill time from 1k",
                     FitFrom(s, 1024), 1.8, 2.2, "quadratic growth (slope 1.8–2.2)"));
  }
  if (m.prefill.size() >= 3) {
    const double x = LongestCommon({&m.prefill[0], &m.prefill[2]});
    Spread a, b;
    if (x > 0 && FindAt(m.prefill[0], x, &a) && FindAt(m.prefill[2], x, &b)) {
      out["heads-prefill-time"].push_back(RangeFinding(
          "heads.same-compute", "the same compute for every sharing ratio",
          "MHA / MQA prefill time at " + Tok(x), Ratio(a, b), 0.8, 1.25, "%.2f×",
          "the FLOPs are equal; MHA reads a K/V head per query head where MQA reads one for all"));
    }
  }
  for (const auto& s : m.memory) {
    out["heads-prefill-memory"].push_back(SlopeFinding(
        "heads.memory-slope." + s.name, s.name + " peak memory from 1k", FitFrom(s, 1024), 0.85,
        1.15, "linear growth (slope 0.85–1.15, no N × N buffer)"));
  }
  for (const auto& s0 : m.decode) {
    const Series s = FitFrom(s0, 4096);
    out["heads-decode-time"].push_back(SlopeFinding(
        "heads.decode-slope." + s.name, s.name + " decode time from 4k", s, 0.8, 1.2,
        "linear growth in the context (slope 0.8–1.2)",
        "possibly the per-step overhead, not the cache read, still dominates at these contexts"));
  }
  for (size_t i = 0; i + 1 < m.decode.size(); ++i) {
    const Series& fewer = m.decode[i + 1];
    const Series& more = m.decode[i];
    const double x = LongestCommon({&fewer, &more});
    Spread a, b;
    if (x > 0 && FindAt(fewer, x, &a) && FindAt(more, x, &b)) {
      out["heads-decode-time"].push_back(LessFinding("heads.decode-order." + fewer.name,
                                                     fewer.name + " to decode faster than " +
                                                         more.name + " at " + Tok(x) +
                                                         " (fewer KV heads, fewer bytes to read)",
                                                     fewer.name, a, more.name, b, kMs));
    }
  }
  return out;
}

FindingsByFigure MlaFindings(const MlaMeasured& m) {
  FindingsByFigure out;
  const double x = LongestCommon({&m.absorbed, &m.naive});
  Spread a, n;
  if (x > 0 && FindAt(m.absorbed, x, &a) && FindAt(m.naive, x, &n)) {
    out["mla-decode-time"].push_back(
        LessFinding("mla.absorbed-faster",
                    "the absorbed path to decode faster than the naive path at " + Tok(x),
                    "absorbed", a, "naive", n, kMs));
  }
  const Spread sn = SlopeSpread(m.naive), sa = SlopeSpread(m.absorbed);
  out["mla-decode-time"].push_back(
      LessFinding("mla.naive-grows-faster",
                  "the absorbed path's time to grow more slowly with the context than the naive "
                  "path's (fitted slopes)",
                  "absorbed slope", sa, "naive slope", sn, "%.2f"));
  out["mla-decode-time"].push_back(
      Fact("mla.slopes", "Absorbed path: " + SlopeText(m.absorbed) +
                             "; naive path: " + SlopeText(m.naive) +
                             " (± two standard errors, from the spread of the "
                             "repeats and the scatter about the line)"));
  return out;
}

FindingsByFigure WindowFindings(const WindowMeasured& m) {
  FindingsByFigure out;
  auto& pre = out["window-prefill-time"];
  pre.push_back(SlopeFinding("window.causal-slope", "full causal prefill time from 1k",
                             FitFrom(m.causal, 1024), 1.8, 2.2,
                             "quadratic growth (slope 1.8–2.2)"));
  const double from = 4.0 * static_cast<double>(m.window);
  for (const Series* s : {&m.window_prefill, &m.chunked}) {
    pre.push_back(
        SlopeFinding("window.linear-slope." + s->name, s->name + " prefill time from " + Tok(from),
                     FitFrom(*s, from), 0.8, 1.2,
                     "linear growth once the sequence is several windows long (slope 0.8–1.2)",
                     "possibly the band's per-tile work does not yet dominate at these lengths"));
  }
  out["window-decode-time"].push_back(SlopeFinding(
      "window.ring-flat", "decode over a ring buffer of " + std::to_string(m.window) + " slots",
      FitFrom(m.ring_decode, 0), -0.15, 0.15, "a flat time in the context (slope −0.15–0.15)"));
  out["window-decode-time"].push_back(SlopeFinding(
      "window.full-decode-slope", "decode over the full cache from 4k",
      FitFrom(m.full_decode, 4096), 0.8, 1.2, "linear growth in the context (slope 0.8–1.2)"));
  return out;
}

FindingsByFigure SparseFindings(const SparseMeasured& m) {
  FindingsByFigure out;
  auto& f = out["sparse-prefill-time"];
  for (size_t i = 0; i < m.patterns.size(); ++i) {
    const Series& s = m.patterns[i];
    if (i < m.pattern_pairs.size()) {
      f.push_back(FollowsPairs("sparse.follows-pairs." + s.name, FitFrom(s, 1024),
                               m.pattern_pairs[i], 0.25));
    }
    const double x = LongestCommon({&s, &m.causal});
    Spread a, c;
    if (x > 0 && FindAt(s, x, &a) && FindAt(m.causal, x, &c)) {
      const Spread r = Ratio(a, c);
      f.push_back(Fact("sparse.time-share." + s.name, s.name + " took " + FormatSpread("%.2f", r) +
                                                          " of full causal's time at " + Tok(x)));
    }
  }
  return out;
}

FindingsByFigure DsaFindings(const DsaMeasured& m) {
  FindingsByFigure out;
  auto& f = out["dsa-prefill-time"];
  f.push_back(CrossoverFinding("dsa.crossover", m.total, m.dense));
  const double x = LongestCommon({&m.indexer, &m.total});
  Spread ind, tot;
  if (x > 0 && FindAt(m.indexer, x, &ind) && FindAt(m.total, x, &tot)) {
    f.push_back(Fact("dsa.indexer-share", "At " + Tok(x) + " the indexer and top-k took " +
                                              FormatSpread("%.0f", Percent(Ratio(ind, tot))) +
                                              " % of DSA's prefill time (attention the rest)"));
  }
  const double from = std::max<double>(1024, 4.0 * static_cast<double>(m.top_k));
  f.push_back(
      SlopeFinding("dsa.attention-linear",
                   "DSA's attention over the top-" + std::to_string(m.top_k) + " from " + Tok(from),
                   FitFrom(m.attention, from), 0.8, 1.2,
                   "linear growth once the sequence is several times k (slope 0.8–1.2)"));
  f.push_back(SlopeFinding("dsa.indexer-quadratic", "the indexer + top-k from 2k",
                           FitFrom(m.indexer, 2048), 1.7, 2.2,
                           "quadratic growth: it scores every earlier key (slope 1.7–2.2)"));
  auto& v = out["dsa-v32-decode"];
  v.push_back(CrossoverFinding("dsa.v32-crossover", m.v32_total, m.v32_dense));
  for (const auto& [ctx_len, work] : m.v32_work_ratio) {
    Spread d, t;
    if (!FindAt(m.v32_dense, ctx_len, &d) || !FindAt(m.v32_total, ctx_len, &t)) continue;
    const Spread speedup = Ratio(d, t);
    v.push_back(Fact("dsa.v32-speedup." + Tok(ctx_len),
                     "At " + Tok(ctx_len) +
                         " cached tokens: dense absorbed MLA time / DSA time = " +
                         FormatSpread("%.2f", speedup) +
                         ", against an arithmetic ratio dense / DSA of " + Fmt("%.1f", work) +
                         (speedup.lo > 1   ? " (DSA faster"
                          : speedup.hi < 1 ? " (DSA slower"
                                           : " (not resolved") +
                         "; " + Fmt("%.0f", 100 * speedup.value / work) +
                         " % of the arithmetic saving became speed)"));
  }
  auto& e = out["dsa-error"];
  const double k = LongestCommon({&m.mass_aligned, &m.mass_random});
  Spread al, ra;
  if (k > 0 && FindAt(m.mass_aligned, k, &al) && FindAt(m.mass_random, k, &ra)) {
    e.push_back(LessFinding("dsa.aligned-captures-more",
                            "an indexer aligned with the attention to capture more of its "
                            "probability mass than a random one (top-" +
                                Tok(k) + ")",
                            "random", ra, "aligned", al, "%.3f"));
  }
  for (size_t i = 0; i < m.mass_aligned.x.size(); ++i) {
    if (i != 0 && i + 1 != m.mass_aligned.x.size()) continue;
    e.push_back(
        Fact("dsa.mass." + Tok(m.mass_aligned.x[i]),
             "Top-" + Tok(m.mass_aligned.x[i]) + ": the aligned indexer's keys hold " +
                 Fmt("%.1f", 100 * m.mass_aligned.y[i]) +
                 " % of the exact attention's probability mass on average" +
                 (i < m.mass_random.y.size()
                      ? ", a random indexer's " + Fmt("%.1f", 100 * m.mass_random.y[i]) + " %"
                      : std::string())));
  }
  return out;
}

FindingsByFigure GatedFindings(const GatedMeasured& m) {
  FindingsByFigure out;
  auto& f = out["gated-decode-time"];
  Series ratio = NamedSeries("gated / ungated", false);
  for (size_t i = 0; i < m.gated.x.size(); ++i) {
    Spread u;
    if (!FindAt(m.ungated, m.gated.x[i], &u)) continue;
    const Spread r = Ratio(At(m.gated, i), u);
    ratio.x.push_back(m.gated.x[i]);
    ratio.y.push_back(r.value);
    ratio.y_lo.push_back(r.lo);
    ratio.y_hi.push_back(r.hi);
  }
  if (ratio.x.size() >= 2) {
    const Spread first = At(ratio, 0), last = At(ratio, ratio.x.size() - 1);
    f.push_back(
        Fact("gated.overhead", "The gate multiplied decode time by " + FormatSpread("%.2f", first) +
                                   " at " + Tok(ratio.x.front()) + " and by " +
                                   FormatSpread("%.2f", last) + " at " + Tok(ratio.x.back())));
    f.push_back(LessFinding(
        "gated.overhead-shrinks",
        "the gate's relative cost to shrink as the context grows (a fixed per-token projection "
        "against cache reads that grow)",
        "ratio at " + Tok(ratio.x.back()), last, "ratio at " + Tok(ratio.x.front()), first, "%.2f",
        m.crossover_context > 0
            ? "by bytes read, the cache outweighs the gate's weights only beyond about " +
                  Tok(static_cast<double>(m.crossover_context)) + " tokens" +
                  (m.full ? "" : "; --full measures to longer contexts")
            : std::string()));
  }
  return out;
}

FindingsByFigure LinearFindings(const LinearMeasured& m) {
  FindingsByFigure out;
  auto& f = out["linear-prefill-time"];
  f.push_back(SlopeFinding("linear.dense-slope", "exact causal prefill time from 1k",
                           FitFrom(m.dense, 1024), 1.8, 2.2, "quadratic growth (slope 1.8–2.2)"));
  for (const auto& s : m.linear) {
    f.push_back(SlopeFinding("linear.slope." + s.name, s.name + " prefill time from 1k",
                             FitFrom(s, 1024), 0.8, 1.2, "linear growth (slope 0.8–1.2)"));
    f.push_back(CrossoverFinding("linear.crossover." + s.name, s, m.dense));
  }
  auto& e = out["linear-favor-error"];
  for (size_t i = 0; i < m.favor_orth.size(); ++i) {
    const Series& s = m.favor_orth[i];
    const double t = i < m.temperatures.size() ? m.temperatures[i] : 0;
    e.push_back(SlopeFinding("linear.favor-slope." + Fmt("%.2g", t),
                             "FAVOR+ error at temperature " + Fmt("%.2g", t), s, -0.65, -0.35,
                             "the error to fall as 1/√m (slope −0.65 to −0.35)",
                             t >= 2 ? "peaked attention: the positive features' weights "
                                      "exp(w·x − ‖x‖²/2) are heavy-tailed, so the 1/√m regime "
                                      "needs far more features than measured here"
                                    : ""));
    if (i < m.favor_iid.size()) {
      const Series& d = m.favor_iid[i];
      const double x = LongestCommon({&s, &d});
      Spread a, b;
      if (x > 0 && FindAt(s, x, &a) && FindAt(d, x, &b)) {
        e.push_back(LessFinding("linear.orthogonal-better." + Fmt("%.2g", t),
                                "orthogonal features to beat i.i.d. ones at m = " + Tok(x) +
                                    ", temperature " + Fmt("%.2g", t),
                                "orthogonal", a, "i.i.d.", b, "%.3f"));
      }
    }
  }
  if (m.guide_temperature > 0 && m.bench_temperature > 0) {
    e.push_back(
        Fact("linear.temperatures",
             "The guide's timing inputs (entries uniform in [−1, 1)) have temperature " +
                 Fmt("%.2g", m.guide_temperature) +
                 "; `attnkit bench linear` draws q, k with standard "
                 "deviation 0.3 in 64 dims, temperature " +
                 Fmt("%.2g", m.bench_temperature) +
                 ". Read the slope of the series nearest each to see which regime a number comes "
                 "from"));
  }
  return out;
}

FindingsByFigure DeltaFindings(const DeltaMeasured& m) {
  FindingsByFigure out;
  auto& f = out["delta-prefill-time"];
  for (const Series* s : {&m.gdn, &m.kda, &m.recurrent}) {
    f.push_back(SlopeFinding("delta.slope." + s->name, s->name + " prefill time from 1k",
                             FitFrom(*s, 1024), 0.8, 1.2, "linear growth (slope 0.8–1.2)"));
  }
  const double x = LongestCommon({&m.gdn, &m.recurrent});
  Spread c, r;
  if (x > 0 && FindAt(m.gdn, x, &c) && FindAt(m.recurrent, x, &r)) {
    f.push_back(LessFinding("delta.chunked-faster",
                            "the chunk-wise form to beat the token-by-token one at " + Tok(x),
                            "chunk-wise", c, "token by token", r, kMs));
  }
  out["delta-decode-time"].push_back(
      SlopeFinding("delta.decode-flat", "Gated DeltaNet decode", FitFrom(m.decode, 0), -0.15, 0.15,
                   "a flat time in the context (slope −0.15–0.15): the state does not grow"));
  return out;
}

FindingsByFigure HybridFindings(const HybridMeasured& m) {
  FindingsByFigure out;
  if (m.decode.empty()) return out;
  auto& f = out["hybrid-stack-decode"];
  const Series& all = m.decode[0];
  const Spread sa = SlopeSpread(FitFrom(all, 0));
  for (size_t i = 1; i < m.decode.size(); ++i) {
    const Spread sh = SlopeSpread(FitFrom(m.decode[i], 0));
    f.push_back(LessFinding(
        "hybrid.grows-slower." + std::to_string(i),
        m.decode[i].name + "'s decode time to grow more slowly with the prompt than the "
                           "all-attention stack's (fitted slopes)",
        "hybrid slope", sh, "all-attention slope", sa, "%.2f",
        m.full ? "" : "--full runs prompts to 64k, where the cache reads dominate"));
  }
  return out;
}

FindingsByFigure ClaimsFindings(const ClaimsMeasured& m) {
  FindingsByFigure out;
  auto& f = out[""];
  for (const auto& r : m.reach) {
    Finding x;
    x.id = "claims.reach." + r.variant;
    const std::string budget = Fmt("%.2g s", m.budget_seconds) + " and " +
                               FormatBytes(m.budget_bytes) + " per layer and head";
    const std::string claim =
        "Claim: " + r.variant + " handles about " + std::to_string(r.claimed) + " tokens. ";
    const std::string over = r.first_over > 0 ? ", and " + std::to_string(r.first_over) +
                                                    " tokens break the " + r.limit + " budget"
                                              : " (the search's upper bound)";
    if (r.longest >= r.claimed) {
      x.status = Finding::Status::kHolds;
      x.text = claim + "Measured: it prefills " + std::to_string(r.longest) + " tokens within " +
               budget + " (" + Fmt("%.3g s", r.seconds_at_longest) + ")" + over +
               ": the claim holds on this machine, with " +
               Fmt("%.1f", static_cast<double>(r.longest) / static_cast<double>(r.claimed)) +
               "× the claimed length.";
    } else if (r.first_over > 0 && r.first_over <= r.claimed) {
      x.status = Finding::Status::kContradicted;
      x.text = claim + "Measured: " + std::to_string(r.first_over) + " tokens already break the " +
               r.limit + " budget of " + budget +
               (r.longest > 0 ? " (the longest that fit: " + std::to_string(r.longest) + ")"
                              : std::string(" (no length tried fit)")) +
               ": the claim does not hold on this machine.";
    } else {
      x.status = Finding::Status::kNotResolved;
      x.text = claim + "Measured: " +
               (r.longest > 0 ? std::to_string(r.longest) + " tokens fit within " + budget
                              : "no length fit within " + budget) +
               over + "; the claimed length lies between them: not resolved in this run.";
    }
    f.push_back(x);
  }
  for (const auto& s : m.savings) {
    Finding x = RangeFinding("claims.saving." + s.pattern + "." + std::to_string(s.seqlen),
                             "a sparse pattern to need about half the compute of full attention",
                             s.pattern + " at " + std::to_string(s.seqlen) + " tokens (" +
                                 Fmt("%.2f", s.pair_fraction) +
                                 " of the causal pairs): time relative to full causal",
                             s.time_fraction, 0.3, 0.7, "%.2f");
    f.push_back(x);
  }
  // Performer "without sacrificing accuracy": the error at each length and temperature.
  for (const auto& p : m.performer) {
    Finding x = RangeFinding(
        "claims.performer." + std::to_string(p.seqlen) + "." + Fmt("%.2g", p.temperature),
        "Performer to match softmax attention (relative error at most 0.1)",
        "FAVOR+ error at " + std::to_string(p.seqlen) + " tokens, temperature " +
            Fmt("%.2g", p.temperature),
        p.error, 0, 0.1, "%.3f");
    f.push_back(x);
  }
  return out;
}

}  // namespace attnkit::guide::detail

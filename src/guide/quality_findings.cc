// Findings of the Quality section (quality_findings.h): generated from the grid's numbers only.
#include "guide/quality_findings.h"

#include <algorithm>
#include <cmath>

#include "attnkit/core/error.h"
#include "attnkit/layers/factory.h"
#include "guide/sections.h"

namespace attnkit::guide::detail {
namespace {

const QualityMeasured::Row* FindRow(const QualityMeasured& m, const std::string& variant) {
  for (const auto& r : m.rows) {
    if (r.variant == variant) return &r;
  }
  return nullptr;
}

bool Complete(const QualityMeasured& m, const QualityMeasured::Row& r) {
  return r.accuracy.size() == m.lengths.size() && r.answers.size() == m.lengths.size();
}

// Mean of v[from, to) with ± two standard errors of the mean from its scatter.
Spread MeanSpread(const std::vector<double>& v, size_t from, size_t to) {
  const double n = static_cast<double>(to - from);
  double sum = 0, sq = 0;
  for (size_t i = from; i < to; ++i) sum += v[i];
  const double mean = sum / n;
  for (size_t i = from; i < to; ++i) sq += (v[i] - mean) * (v[i] - mean);
  const double se = n > 1 ? std::sqrt(sq / (n - 1) / n) : NAN;
  return {mean, mean - 2 * se, mean + 2 * se};
}

std::string Bytes(int64_t b) { return Fmt("%.0f", static_cast<double>(b)) + " B"; }

}  // namespace

Spread AccuracySpread(double accuracy, int64_t n) {
  if (n <= 0) return {accuracy, NAN, NAN};
  const double nd = static_cast<double>(n);
  const double half = std::max(2 * std::sqrt(accuracy * (1 - accuracy) / nd), 1 / nd);
  return {accuracy, std::max(0.0, accuracy - half), std::min(1.0, accuracy + half)};
}

bool IsExactAttention(const std::string& variant) {
  std::vector<std::string> kinds;
  try {
    kinds = ParseLayerList(variant);
  } catch (const Error&) {
    return false;
  }
  for (const auto& k : kinds) {
    if (k != "mha" && k != "gqa" && k != "mqa" && k != "gated" && k != "qknorm" && k != "mla" &&
        k != "mla-naive") {
      return false;
    }
  }
  return !kinds.empty();
}

FindingsByFigure QualityFindings(const QualityMeasured& m) {
  FindingsByFigure out;
  if (m.lengths.empty()) return out;
  const size_t last = m.lengths.size() - 1;
  const std::string longest = std::to_string(m.lengths[last]);
  // Exact attention solves MQAR at every length it holds: its worst length is judged.
  for (const auto& r : m.rows) {
    if (!IsExactAttention(r.variant) || !Complete(m, r)) continue;
    size_t worst = 0;
    for (size_t i = 1; i < r.accuracy.size(); ++i) {
      if (r.accuracy[i] < r.accuracy[worst]) worst = i;
    }
    out["quality-mqar-length"].push_back(RangeFinding(
        "quality.mqar-solved." + r.variant,
        "exact attention (" + r.variant + ") solves MQAR at every length it holds (Zoology)",
        "its lowest accuracy, at " + std::to_string(m.lengths[worst]) + " tokens, is",
        AccuracySpread(r.accuracy[worst], r.answers[worst]), 0.9, 1.0, "%.3f",
        "the budget may be too small for this model to learn the task at that length"));
  }
  // A sliding window fails once the keys lie beyond it: at the longest length most queries sit
  // farther than the window from their key (a query is 2 … L − 1 tokens after it).
  const QualityMeasured::Row* exact = FindRow(m, "mha");
  const QualityMeasured::Row* swa = FindRow(m, "swa");
  if (exact && swa && Complete(m, *exact) && Complete(m, *swa) && m.window > 0 &&
      m.lengths[last] >= 4 * m.window) {
    out["quality-mqar-length"].push_back(
        LessFinding("quality.window-fails",
                    "a sliding window of " + std::to_string(m.window) +
                        " recalls less than exact attention at " + longest +
                        " tokens, where most keys lie beyond the window",
                    "swa", AccuracySpread(swa->accuracy[last], swa->answers[last]), "mha",
                    AccuracySpread(exact->accuracy[last], exact->answers[last]), "%.3f"));
  }
  // The Zoology picture: bytes held for the context against accuracy, stated per variant.
  for (const auto& r : m.rows) {
    if (!Complete(m, r) || r.context_bytes.size() != m.lengths.size()) continue;
    const bool fixed = r.context_bytes.front() == r.context_bytes.back() && m.lengths.size() > 1;
    out["quality-mqar-state"].push_back(Fact(
        "quality.state." + r.variant,
        r.variant + " holds " + Bytes(r.context_bytes[last]) + " for " + longest + " tokens (" +
            (fixed ? "the same at every length"
                   : Bytes(r.context_bytes.front()) + " for " + std::to_string(m.lengths.front())) +
            ") and recalled " + Fmt("%.1f", 100 * r.accuracy[last]) + " % at " + longest));
  }
  // Bits per byte: the order, stated.
  std::vector<const QualityMeasured::Row*> text;
  for (const auto& r : m.rows) {
    if (r.bits_per_byte >= 0) text.push_back(&r);
  }
  if (text.size() >= 2) {
    std::sort(text.begin(), text.end(),
              [](const auto* a, const auto* b) { return a->bits_per_byte < b->bits_per_byte; });
    out["quality-bpb"].push_back(
        Fact("quality.bpb-order",
             "Lowest validation bits per byte: " + text.front()->variant + " (" +
                 Fmt("%.3f", text.front()->bits_per_byte) + "); highest: " + text.back()->variant +
                 " (" + Fmt("%.3f", text.back()->bits_per_byte) +
                 "); one run each (one seed), so no spread was measured for these"));
  }
  // Loss against position: with exact attention, later bytes (more context) are predicted better.
  for (const auto* r : text) {
    const auto& v = r->loss_by_position;
    if (v.size() < 8) continue;
    const size_t q = v.size() / 4;
    const Spread early = MeanSpread(v, 0, q), late = MeanSpread(v, v.size() - q, v.size());
    if (IsExactAttention(r->variant)) {
      out["quality-position"].push_back(LessFinding(
          "quality.position." + r->variant,
          "with exact attention (" + r->variant +
              ") the last quarter of the window, which sees more context, has lower loss than "
              "the first",
          "last quarter", late, "first quarter", early, "%.3f nats"));
    } else {
      out["quality-position"].push_back(Fact(
          "quality.position." + r->variant,
          r->variant + ": mean loss " + Fmt("%.3f", late.value) + " nats over the last " +
              "quarter of the window against " + Fmt("%.3f", early.value) + " over the first"));
    }
  }
  return out;
}

}  // namespace attnkit::guide::detail

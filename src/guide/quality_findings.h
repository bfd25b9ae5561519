// What the guide's Quality section concludes from the quality grid (private to src/guide): a pure
// function of the measured accuracies, bytes and losses, so tests/guide_claims_test.cc can inject
// agreeing, contradicting and noisy grids.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "guide/findings.h"

namespace attnkit::guide::detail {

struct QualityMeasured {
  std::vector<int64_t> lengths;  // MQAR sequence lengths
  int64_t window = 0;            // the sliding window of swa / sinks layers
  struct Row {
    std::string variant;
    std::vector<double> accuracy;          // MQAR accuracy at each length
    std::vector<int64_t> answers;          // scored answers behind each accuracy
    std::vector<int64_t> context_bytes;    // cache or state bytes of the model at each length
    double bits_per_byte = -1;             // < 0: text not run
    std::vector<double> loss_by_position;  // text validation loss (nats) by context position
  };
  std::vector<Row> rows;
};

// An accuracy measured on n answers with ± two binomial standard errors (at least ± 1/n),
// clipped to [0, 1].
Spread AccuracySpread(double accuracy, int64_t n);
// Whether a variant name is exact (global causal) attention in every layer.
bool IsExactAttention(const std::string& variant);

// Findings keyed by figure id: "quality-mqar-length", "quality-mqar-state", "quality-bpb",
// "quality-position".
FindingsByFigure QualityFindings(const QualityMeasured& m);

}  // namespace attnkit::guide::detail

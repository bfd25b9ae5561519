// What each guide section concludes from its measurements, as pure functions of measured data
// (private to src/guide). A section's builder measures into its *Measured struct and attaches
// the findings to its figures; tests/guide_claims_test.cc builds the same structs from injected
// numbers (agreeing, contradicting, noisy) and checks the verdicts.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "attnkit/guide/charts.h"
#include "attnkit/guide/page.h"
#include "guide/claims.h"

namespace attnkit::guide::detail {

// Findings keyed by the id of the figure they describe ("" = the section itself).
using FindingsByFigure = std::map<std::string, std::vector<Finding>>;
// Moves each list onto the figure with that id (or the section for ""); a list whose figure is
// missing goes to the section.
void AttachFindings(Section& section, FindingsByFigure findings);

// Series are times in ms (or bytes, errors, …) against tokens, with spreads where timed.

struct HeadsMeasured {          // MHA, GQA, MQA in this order
  std::vector<Series> prefill;  // causal prefill time
  std::vector<Series> memory;   // peak memory (MiB)
  std::vector<Series> decode;   // decode time per token against context
};
FindingsByFigure HeadsFindings(const HeadsMeasured& m);

struct MlaMeasured {
  Series naive, absorbed;  // decode time per token against context
};
FindingsByFigure MlaFindings(const MlaMeasured& m);

struct WindowMeasured {
  int64_t window = 512;
  Series causal, window_prefill, chunked;  // prefill time
  Series full_decode, ring_decode;         // decode time per token against context
};
FindingsByFigure WindowFindings(const WindowMeasured& m);

struct SparseMeasured {
  Series causal;                      // prefill time of full causal attention
  std::vector<Series> patterns;       // prefill time of each pattern (series name = pattern)
  std::vector<Series> pattern_pairs;  // kept pairs of each pattern at the same lengths
};
FindingsByFigure SparseFindings(const SparseMeasured& m);

struct DsaMeasured {
  int64_t top_k = 256;
  Series dense, total, indexer, attention;  // prefill time
  Series mass_aligned, mass_random;         // exact attention mass captured by the top-k, vs k
  Series v32_dense, v32_total;              // decode ms per token in V3.2's shape, vs context
  std::vector<std::pair<double, double>> v32_work_ratio;  // context → dense FLOPs / DSA FLOPs
};
FindingsByFigure DsaFindings(const DsaMeasured& m);

struct GatedMeasured {
  Series ungated, gated;          // decode time per token against context
  int64_t crossover_context = 0;  // context where the cache bytes equal the gate's weight bytes
  bool full = false;              // the --full sweep (reaches the long contexts)
};
FindingsByFigure GatedFindings(const GatedMeasured& m);

struct LinearMeasured {
  Series dense;                      // exact causal prefill time
  std::vector<Series> linear;        // FAVOR+, elu+1, ReLU prefill time
  std::vector<Series> favor_orth;    // FAVOR+ error against m, one series per input temperature
  std::vector<Series> favor_iid;     // the same with i.i.d. features
  std::vector<double> temperatures;  // ‖q‖·‖k‖/√d of each series
  double guide_temperature = 0;      // the temperature of the inputs the timing sweeps use
  double bench_temperature = 0;      // the temperature of `attnkit bench linear`'s inputs
};
FindingsByFigure LinearFindings(const LinearMeasured& m);

struct DeltaMeasured {
  Series dense, gdn, kda, recurrent;  // prefill time
  Series decode;                      // decode time per token against context
};
FindingsByFigure DeltaFindings(const DeltaMeasured& m);

struct HybridMeasured {
  std::vector<Series> decode;  // [0] the all-attention stack, then the hybrids
  bool full = false;
};
FindingsByFigure HybridFindings(const HybridMeasured& m);

// The popular comparison table, measured (section "claims").
struct ClaimsMeasured {
  double budget_seconds = 1;
  double budget_bytes = 1 << 30;
  struct Reach {
    std::string variant;
    int64_t claimed = 0;     // the table's "~N tokens"
    int64_t longest = 0;     // longest prefill within the budget found here (0: none)
    int64_t first_over = 0;  // shortest length tried that broke the budget (0: none tried)
    std::string limit;       // "time", "memory" or "search bound"
    double seconds_at_longest = 0;
  };
  std::vector<Reach> reach;
  struct Saving {
    std::string pattern;
    int64_t seqlen = 0;
    double pair_fraction = 0;  // kept pairs / causal pairs
    Spread time_fraction;      // pattern time / causal time
  };
  std::vector<Saving> savings;
  struct PerformerError {
    int64_t seqlen = 0;
    double temperature = 0;
    Spread error;  // relative error over feature draws
    Spread cosine;
  };
  std::vector<PerformerError> performer;
};
FindingsByFigure ClaimsFindings(const ClaimsMeasured& m);

}  // namespace attnkit::guide::detail

// The visual guide's page as plain data: sections, figures (diagrams as SVG, charts as Vega-Lite
// specs), tables and the machine the numbers were measured on.
//
// Everything on the page is one of these structs, filled by the section builders in src/guide/
// from measured runs, real mask objects and config files, then rendered to one HTML file and
// standalone figure files by WriteGuide (guide.h). No number on the page is typed in by hand:
// each figure and table carries a `source` line saying where its numbers come from.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace attnkit::guide {

// Where a figure's or a table's content comes from; shown on the page beside it.
enum class Provenance {
  kMeasured,  // timed / probed on this machine in this run
  kDrawn,     // sampled from a real library object (mask, cache, selection)
  kConfig,    // read from a model config (the catalogue) or computed from one
};
const char* ProvenanceName(Provenance p);  // "measured", "drawn", "config"

// One statement about this run's numbers. Either a plain measurement ("the indexer took 65 % of
// DSA's time at 16k") or an expectation checked against the measurement, with the verdict shown
// on the page: it holds, the measurement contradicts it ("expected …; measured … here"), or the
// spread of the repeats leaves it open ("not resolved in this run").
struct Finding {
  enum class Status {
    kMeasured,      // a measurement stated in words, no expectation attached
    kHolds,         // the expectation holds beyond the measured spread
    kContradicted,  // the measurement contradicts the expectation beyond its spread
    kNotResolved,   // the spread (or too few points) leaves the expectation open
  };
  std::string id;  // stable key, e.g. "heads.prefill-slope.GQA", for tests and guide.json
  Status status = Status::kMeasured;
  std::string text;  // the sentence shown, generated from the numbers
};
const char* FindingStatusName(Finding::Status s);  // "measured", "holds", "contradicted", …

struct Figure {
  enum class Kind { kDiagram, kChart };
  Kind kind = Kind::kDiagram;
  std::string id;  // unique file stem, e.g. "heads-sharing" → figures/heads-sharing.svg
  std::string title;
  std::string caption;  // what to look at, one or two sentences (plain text)
  Provenance provenance = Provenance::kDrawn;
  std::string source;     // how it was made, e.g. "CausalWindowMask(8).Allowed(q, k), 32×32"
  std::string svg;        // kDiagram: a complete standalone SVG document
  std::string vega_lite;  // kChart: a complete Vega-Lite spec (JSON text) with its data inlined
  std::vector<Finding> findings;  // what this figure's numbers show, generated from them
};

struct Table {
  std::string id;
  std::string title;
  Provenance provenance = Provenance::kMeasured;
  std::string source;
  std::vector<std::string> header;
  std::vector<std::vector<std::string>> rows;  // plain text cells
};

// One row of the comparison table, contributed by the section that measured the variant.
// Fields that were not measured stay at their "not measured" values and print as "—".
struct VariantSummary {
  std::string variant;          // e.g. "GQA (8 q / 2 kv heads)"
  std::string section;          // the section name that measured it
  double time_slope = -1;       // fitted log-log slope of prefill time vs seqlen (< 0: none)
  double time_slope_2se = -1;   // its uncertainty, two standard errors (< 0: none)
  std::string slope_range;      // e.g. "1k–8k tokens"
  double bytes_per_token = -1;  // cache bytes per token per layer (< 0: none)
  std::string bytes_note;       // e.g. "ring buffer: bounded by the window"
  int64_t longest_seqlen = 0;   // longest sequence handled in this run (0: none)
  double error_vs_exact = -1;   // relative error vs exact attention (0: exact; < 0: not measured)
  std::string error_note;       // shown instead of error_vs_exact when set (another metric)
  std::string quality;          // trained quality (section "quality"), e.g. "MQAR 100 % @64"
};

struct Section {
  std::string name;                 // --only name, also the HTML anchor, e.g. "heads"
  std::string title;                // e.g. "MHA, MQA and GQA: sharing key/value heads"
  std::string nav_title;            // short name for the table of contents, e.g. "MHA / GQA / MQA"
  bool comparison = false;          // the comparison section (no diagram of its own required)
  std::string intro_html;           // a few sentences (HTML written by our code, no user input)
  std::string formula_html;         // the formula, as HTML (sub/sup/entities)
  std::vector<std::string> models;  // real models using it
  std::string models_source;        // where the model list comes from
  std::vector<Figure> figures;
  std::vector<Table> tables;
  std::vector<VariantSummary> variants;  // rows for the comparison table
  std::vector<std::string> notes;        // plain remarks (no measured relation in them)
  std::vector<Finding> findings;         // section-level findings, generated from the numbers
};

struct MachineFacts {
  std::string cpu;
  std::string simd_target;
  std::string compiled_targets;
  int threads = 0;
  std::string version;
  std::string git_commit;  // "unknown" if the build had no git
  std::string build_type;
  std::string date_utc;  // when the guide was written
  double total_memory_gib = 0;
  double load_before = -1;  // 1-minute load average when the measurements started / ended
  double load_after = -1;   // (other processes competing for the cores make timings noisy)
};

struct GuidePage {
  std::string title;
  std::string mode;  // "smoke", "quick" or "full"
  std::string command;
  MachineFacts machine;
  std::vector<Section> sections;
  double seconds = 0;  // wall time of the measurements
};

}  // namespace attnkit::guide

// `attnkit guide`: writes one self-contained HTML page that explains, draws and measures each
// attention variant on this machine, plus every figure as a standalone file.
//
// Data flow: PlanGuide checks the options (known section names, writable output directory, the
// sweep's peak memory against the machine's available memory) before anything is measured;
// WriteGuide then runs each section's builder (measurements + diagrams → guide::Section), renders
// the page with the charting library (Vega, Vega-Lite, vega-embed) inlined, and writes
//   DIR/index.html              the page (works offline)
//   DIR/figures/<id>.svg        each diagram, drawn by attnkit from the real objects
//   DIR/figures/<id>.vl.json    each chart as a Vega-Lite spec with its data inlined
//   DIR/guide.json              every section's data (figures, tables, summaries)
// Each file is written under a temporary name and renamed when complete, and index.html is
// renamed last, so an interrupted run never leaves a half-written page presented as complete.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/guide/page.h"

namespace attnkit::guide {

enum class SweepSize {
  kSmoke,  // tiny sweeps: checks that every section renders (CI's browser check)
  kQuick,  // the default: a few minutes on a 2-core machine
  kFull,   // longer sweeps to longer sequences
};
const char* SweepSizeName(SweepSize size);

// Called after each measurement step: done of total steps, and what was just measured.
using ProgressFn = std::function<void(int64_t done, int64_t total, const std::string& what)>;

struct GuideOptions {
  std::string out_dir;  // created if missing
  SweepSize size = SweepSize::kQuick;
  std::vector<std::string> only;  // section names; empty → all sections
  int64_t max_seqlen = 0;         // caps the sweeps' longest sequence; 0 → the size's default
  int num_threads = 0;            // 0 → GetNumThreads()
  std::string command;            // the command line, printed on the page
  ProgressFn progress;            // optional
};

// What a run will do, known before it starts.
struct GuidePlan {
  std::vector<std::string> sections;  // in page order
  int64_t steps = 0;                  // measurement steps (for a progress bar)
  int64_t max_seqlen = 0;             // longest sequence any sweep may try
  int64_t peak_bytes = 0;             // estimated peak memory of the largest measurement
  int64_t available_bytes = 0;        // MemAvailable of this machine now
};

struct GuideResult {
  GuidePage page;
  std::string index_path;
  std::vector<std::string> files;  // every file written, index.html last
};

// The sections this build can produce, in page order, with one-line descriptions.
struct SectionInfo {
  std::string name;
  std::string title;
};
std::vector<SectionInfo> AvailableSections();

// Checks options and estimates the run. Throws attnkit::Error on an unknown section name, an
// output directory that cannot be created or written, or a sweep whose estimated peak memory
// exceeds the available memory (the message states the estimate).
GuidePlan PlanGuide(const GuideOptions& options);

// Plans (as above), measures, renders and writes the guide. Throws attnkit::Error on failure;
// nothing named index.html is written unless the whole page was.
GuideResult WriteGuide(const GuideOptions& options);

// The page as one HTML document with the chart library inlined (used by WriteGuide).
std::string RenderHtml(const GuidePage& page);
// The page's data (sections, figures, tables) as JSON text.
std::string PageJson(const GuidePage& page);
// Path of guide/web/export-svg.mjs (renders the charts' Vega-Lite specs to SVG with Node), from
// $ATTNKIT_GUIDE_WEB_DIR or else the source tree around the running binary's build folder, or ""
// when it or its node_modules are missing.
std::string ChartExportScript();
// True when the chart library (Vega, Vega-Lite, vega-embed) was embedded at build time.
bool ChartLibraryEmbedded();

}  // namespace attnkit::guide

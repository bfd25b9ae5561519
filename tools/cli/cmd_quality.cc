// `attnkit quality`: the quality grid (docs/quality.md) — small models trained with each
// attention variant on MQAR at several lengths and on byte-level text, in one process, and one
// table of quality beside cost (MQAR accuracy, bits per byte, tokens/s, peak memory, cache bytes
// per token). Progress bar on stderr; --json prints one line per variant instead of the table.
#include <cstdio>
#include <iostream>
#include <memory>
#include <sstream>

#include "attnkit/core/error.h"
#include "attnkit/core/progress.h"
#include "attnkit/core/runtime.h"
#include "attnkit/train/quality.h"
#include "command.h"

namespace attnkit::cli {
namespace {

std::vector<std::string> SplitVariants(const std::string& text) {
  // Variants are separated by ';' or by ',' — but a hybrid list uses ',' itself, so ';' wins
  // whenever it appears ("mha;gated_deltanet,gated").
  const char sep = text.find(';') != std::string::npos ? ';' : ',';
  std::vector<std::string> out;
  std::stringstream s(text);
  std::string item;
  while (std::getline(s, item, sep)) {
    Require(!item.empty(), "--variants: empty name in '", text, "'");
    out.push_back(item);
  }
  Require(!out.empty(), "--variants: no variant given");
  return out;
}

int RunQualityCmd(const std::vector<std::string>& args) {
  ArgParser p("attnkit quality [--full | --smoke] [options]",
              "Train small models with each attention variant on the same data and budget (MQAR "
              "at each length, byte-level text) and print one table: MQAR accuracy, validation "
              "bits per byte, training tokens/s, peak memory and cache/state bytes per token.");
  p.AddFlag("full",
            "the full grid (21 variants, lengths 32-256, hidden 64; not timed yet: estimated 2-3 "
            "hours on one core, docs/quality.md)");
  p.AddFlag("smoke", "a tiny grid (seconds; for tests)");
  p.AddOption("variants", "",
              "variants to train, separated by ',' (or by ';' when a hybrid list such as "
              "gated_deltanet,gated is among them); default: the grid's");
  p.AddOption("lengths", "", "MQAR sequence lengths, e.g. 16,32,64 (default: the grid's)");
  p.AddOption("steps", "0", "optimiser steps of each MQAR run (0 = the grid's)");
  p.AddOption("text-steps", "0", "optimiser steps of each text run (0 = the grid's)");
  p.AddOption("hidden", "0", "model hidden size (0 = the grid's)");
  p.AddOption("heads", "0", "attention heads (0 = the grid's)");
  p.AddOption("layers", "0", "blocks (0 = the grid's)");
  p.AddOption("batch", "0", "MQAR sequences per step (0 = the grid's)");
  p.AddOption("window", "0", "sliding window of swa / sinks (0 = the grid's)");
  p.AddOption("pairs", "0", "MQAR key-value pairs (0 = the grid's)");
  p.AddOption("text", "", "text file for the text task (default: the Brown corpus)");
  p.AddFlag("no-text", "skip the text task");
  p.AddOption("seed", "1", "seed of weights and data");
  p.AddOption("threads", "1",
              "threads (0 = all; small models train fastest on one, and a second thread on a "
              "shared machine can cost far more than it gives)");
  p.AddFlag("json", "one JSON line per variant and a summary line instead of the table");
  if (!p.Parse(args)) return 0;
  Require(!(p.Flag("full") && p.Flag("smoke")), "--full and --smoke exclude each other");
  const int threads = p.GetThreads();
  if (threads > 0) SetNumThreads(threads);
  train::QualityGrid g = p.Flag("full")    ? train::FullGrid()
                         : p.Flag("smoke") ? train::SmokeGrid()
                                           : train::DefaultGrid();
  if (!p.Get("variants").empty()) {
    g.variants = SplitVariants(p.Get("variants"));
    g.name = "custom";
  }
  if (!p.Get("lengths").empty()) {
    g.lengths.clear();
    std::stringstream s(p.Get("lengths"));
    std::string item;
    while (std::getline(s, item, ',')) {
      const int64_t l = ParseSize(item, "--lengths");
      Require(l >= 2, "--lengths: each length must be >= 2, got ", item);
      g.lengths.push_back(l);
    }
    g.name = "custom";
  }
  for (const char* flag :
       {"steps", "text-steps", "hidden", "heads", "layers", "batch", "window", "pairs"}) {
    Require(p.GetInt(flag) >= 0, "--", flag, " must be >= 0, got ", p.Get(flag));
  }
  const auto set = [&](const char* flag, int64_t& field) {
    if (p.GetInt(flag) > 0) field = p.GetInt(flag), g.name = "custom";
  };
  set("hidden", g.model.hidden);
  set("heads", g.model.heads);
  set("layers", g.model.layers);
  set("batch", g.batch);
  set("window", g.model.window);
  set("pairs", g.mqar_pairs);
  if (p.GetInt("steps") > 0) g.steps = p.GetInt("steps"), g.name = "custom";
  if (p.GetInt("text-steps") > 0) g.text_steps = p.GetInt("text-steps"), g.name = "custom";
  g.text_path = p.Get("text");
  Require(!(p.Flag("no-text") && !g.text_path.empty()), "--text and --no-text exclude each other");
  g.text = !p.Flag("no-text");
  g.seed = p.GetSeed();
  g.Check();

  const bool json = p.Flag("json");
  std::unique_ptr<Progress> bar;
  train::QualityCallbacks cb;
  std::string current;
  cb.on_run = [&](int64_t done, int64_t total, const std::string& what) {
    current = what;
    if (!bar) bar = std::make_unique<Progress>("quality", total, json);
    bar->Set(done);
    if (done < total) bar->SetNote(what);
  };
  cb.on_step = [&](const train::StepInfo& s) {
    if (!bar || s.step % 10 != 0) return;
    char note[160];
    std::snprintf(note, sizeof note, "%s: step %lld/%lld, loss %.3f, %.0f tok/s", current.c_str(),
                  static_cast<long long>(s.step), static_cast<long long>(s.steps), s.loss,
                  s.tokens_per_s);
    bar->SetNote(note);
  };
  const train::QualityResult r = train::RunQuality(g, cb);
  if (bar) bar->Finish();
  if (json) {
    for (const std::string& line : r.JsonLines()) std::cout << line << "\n";
  } else {
    std::cout << r.Table();
  }
  std::cout.flush();
  int failed = 0;
  for (const auto& row : r.rows) failed += !row.error.empty();
  Require(failed == 0, failed, " of ", r.rows.size(), " variants failed (see above)");
  return 0;
}

const CommandRegistrar kRegistrar({"quality",
                                   "train every variant on MQAR and text at one budget; one table "
                                   "of accuracy, bits per byte, tokens/s, memory, cache bytes",
                                   RunQualityCmd});

}  // namespace
}  // namespace attnkit::cli

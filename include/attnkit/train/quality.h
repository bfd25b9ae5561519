// The quality grid behind `attnkit quality` and the guide's Quality section (docs/quality.md):
// small models trained with each attention variant on the same data and budget, in one process,
// and one table of quality beside cost — MQAR accuracy at each sequence length, validation bits
// per byte on text, training tokens/s, peak memory and cache/state bytes per token.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "attnkit/train/model.h"
#include "attnkit/train/trainer.h"

namespace attnkit::train {

struct QualityGrid {
  std::string name = "custom";        // "smoke", "default", "full" or "custom"
  std::vector<std::string> variants;  // factory kinds or repeating lists ("gated_deltanet,mha")
  std::vector<int64_t> lengths;       // MQAR sequence lengths
  // The model every variant trains (its `variant` is set per row; a list whose length does not
  // divide `layers` gets the next multiple of its length). vocab and max_seqlen come per task.
  ModelConfig model;
  int64_t steps = 300;  // optimiser steps of each MQAR run
  int64_t batch = 64;   // MQAR sequences per step
  double lr = 3e-3;     // peak AdamW rate (warm-up a third of the steps, cosine to 0.1·lr)
  int64_t mqar_pairs = 4, mqar_vocab = 32, eval_sequences = 256;
  // Text: "" = the Brown corpus (skipped, and said so, when it is not installed), else a file.
  bool text = true;
  std::string text_path;
  int64_t text_seqlen = 64, text_steps = 200, text_batch = 16, eval_bytes = 16384;
  uint64_t seed = 1;
  // Throws attnkit::Error naming the field that is out of range (every MQAR length must hold
  // 4·pairs ≤ length + 1).
  void Check() const;
  // One line stating the budget: model, steps, batch, tokens per run.
  std::string Budget() const;
};

// Tiny (seconds, for CI), default (a few minutes on 2 cores) and full (docs/quality.md).
QualityGrid SmokeGrid();
QualityGrid DefaultGrid();
QualityGrid FullGrid();
// The guide's quick grid: a few variants, tens of seconds on 2 cores.
QualityGrid GuideQuickGrid();

struct QualityRow {
  std::string variant;
  int64_t layers = 0, params = 0;
  std::vector<double> mqar_accuracy, mqar_loss;  // one per grid length
  std::vector<double> mqar_tokens_per_s;         // training throughput of each MQAR run
  std::vector<int64_t> mqar_answers;             // scored answers behind each accuracy
  double bits_per_byte = -1;                     // < 0: text not run
  double text_tokens_per_s = -1;
  std::vector<double> loss_by_position;  // text validation loss (nats) at each context position
  // Peak resident memory of the variant's largest MQAR run above the resident size before it
  // (Linux VmHWM reset through /proc/self/clear_refs; -1 where that is unavailable), the same for
  // the text run (which includes the corpus held in memory), and the trainer's estimate for the
  // largest run (EstimateTrainBytes: weights, gradients, moments, one batch's activations).
  int64_t peak_bytes = -1, text_peak_bytes = -1;
  double estimate_bytes = 0;
  // The whole model's cache or recurrent state after prefilling each grid length (batch 1,
  // Layer::CacheBytes summed over the layers): attention grows with the length, a fixed state
  // does not. Bytes per token = context_bytes[i] / lengths[i].
  std::vector<int64_t> context_bytes;
  double seconds = 0;  // wall time of the variant's runs
  std::string error;   // a run that failed (diverged, refused): its message; other fields partial
};

struct QualityResult {
  QualityGrid grid;
  std::vector<QualityRow> rows;
  std::string text_source;  // the corpus used, or why the text task was skipped
  bool text_run = false;
  int threads = 1;
  double seconds = 0;
  std::string Table() const;                   // the text table, with the budget stated
  std::vector<std::string> JsonLines() const;  // one line per variant and a summary line
};

struct QualityCallbacks {
  // Before each training run: runs done, total runs, what starts next.
  std::function<void(int64_t done, int64_t total, const std::string& what)> on_run;
  std::function<void(const StepInfo&)> on_step;  // every step of the current run
};

// Training runs in a grid: variants × (lengths + text when it runs).
int64_t QualityRuns(const QualityGrid& grid);
// Runs the grid (bad options: attnkit::Error before the first run; an unknown or untrainable
// variant is refused by name up front). A run that fails later is recorded in its row's `error`
// and the grid goes on.
QualityResult RunQuality(const QualityGrid& grid, const QualityCallbacks& callbacks = {});

// Cache or state bytes of a model with `config` holding `tokens` tokens: its layers built with
// capacity `tokens` (max_seqlen), batch 1, after a prefill of that many, Layer::CacheBytes summed.
int64_t ContextBytes(const ModelConfig& config, int64_t tokens);

}  // namespace attnkit::train

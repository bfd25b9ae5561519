// The training loop behind `attnkit train` (and the quality grid): a model, AdamW, a task's data,
// periodic evaluation, atomic checkpoints, resume and evaluation from a checkpoint.
//
// Checkpoints (docs/training.md): DIR/step-NNNNNNNN/{config.json, model.safetensors,
// optimizer.safetensors}, and DIR/latest naming the newest complete one. Each is written under a
// temporary name and renamed into place, then `latest` is replaced atomically and older ones are
// removed, so an interrupted run always leaves `latest` pointing at a complete checkpoint.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "attnkit/train/data.h"
#include "attnkit/train/model.h"
#include "attnkit/train/optim.h"

namespace attnkit::train {

struct TrainOptions {
  std::string task = "mqar";  // "mqar" | "text"
  ModelConfig model;          // vocab and max_seqlen are set from the task and seqlen
  AdamWConfig optim;          // total_steps is set from `steps`
  int64_t seqlen = 64;
  int64_t batch = 16;
  int64_t steps = 200;
  uint64_t seed = 1;
  // MQAR (seqlen is the field above).
  int64_t mqar_pairs = 8;
  int64_t mqar_vocab = 256;
  int64_t eval_sequences = 256;  // held-out MQAR sequences per evaluation
  // Text: a file, or "" for the Brown corpus (FindBrownCorpus / brown_dir).
  std::string text_path;
  std::string brown_dir;
  int64_t eval_bytes = 1 << 16;  // validation bytes per evaluation (from the start of the part)
  int64_t eval_every = 0;        // steps between evaluations; 0 = only at the end
  // Performer layers: steps between redraws of the random features (as Choromanski et al. do
  // during training); 0 = never. The features of step s are a function of (seed, s), so a
  // resumed or evaluated checkpoint uses the same ones.
  int64_t redraw_every = 100;
  std::string out_dir;  // "" = no checkpoints
  bool resume = false;  // continue from out_dir's latest checkpoint
  // Throws attnkit::Error naming the option that is out of range.
  void Check() const;
};

// The model a run trains: options.model with vocab (MQAR: mqar_vocab; text: 256) and
// max_seqlen (= seqlen) set from the task.
ModelConfig TaskModelConfig(const TrainOptions& options);

// Estimated bytes of a training run (weights, gradients and two moments; one batch's
// activations, tapes, logits and workspace), checked against MemAvailable before anything is
// allocated.
double EstimateTrainBytes(const ModelConfig& model, int64_t batch, int64_t seqlen);

struct EvalResult {
  int64_t step = 0;
  std::string task;
  double loss = 0;                       // mean nats per scored token
  double accuracy = 0;                   // MQAR: recall accuracy; text: next-byte accuracy
  double bits_per_byte = 0;              // text: loss / ln 2
  int64_t tokens = 0;                    // scored tokens
  std::vector<double> loss_by_position;  // mean loss at each context position (nats)
  std::string ToJson() const;            // one line
};

struct StepInfo {
  int64_t step = 0, steps = 0;
  double loss = 0, grad_norm = 0, lr = 0;
  double tokens_per_s = 0, elapsed_s = 0, seconds_left = 0;
};

struct TrainCallbacks {
  std::function<void(const StepInfo&)> on_step;
  std::function<void(const EvalResult&)> on_eval;
  std::function<void(const std::string& dir)> on_checkpoint;
};

struct TrainResult {
  int64_t steps_done = 0;
  double seconds = 0;        // the whole run, evaluations and checkpoints included
  double train_seconds = 0;  // the steps alone (data, forward, backward, optimiser)
  double tokens_per_s = 0;   // training tokens / train_seconds
  int64_t num_params = 0;
  std::vector<double> losses;  // training loss per step
  std::vector<EvalResult> evals;
  std::string checkpoint;  // the last checkpoint written ("" if none)
};

// Trains as the options say, with GetNumThreads() threads (OpenBLAS's thread count is set to it
// too: a run is deterministic for a seed and a thread count). Bad options, a corpus that is too
// small, an unknown or untrainable variant, or a checkpoint that does not match: attnkit::Error
// before the first step. A loss or gradient that is not finite stops the run with attnkit::Error
// naming the step and the last good checkpoint (which is left as it was).
TrainResult Train(const TrainOptions& options, const TrainCallbacks& callbacks = {});

// A model and the training state read back from a checkpoint directory (a step-… folder, or a
// run folder with `latest`). Validates the config against the tensors (attnkit::Error naming
// the tensor) before anything is returned.
struct Checkpoint {
  std::unique_ptr<Model> model;
  TrainOptions options;
  int64_t step = 0;
  std::vector<std::vector<float>> adam_m, adam_v;  // empty when the file has none
  std::string dir;
};
Checkpoint LoadCheckpoint(const std::string& path);
// Writes a checkpoint of `model` (+ optimiser state when given) for `step` into out_dir.
std::string SaveCheckpoint(const std::string& out_dir, Model& model, const TrainOptions& options,
                           int64_t step, AdamW* optimizer);
// Sets every Performer layer of `model` to the random features in effect at training step `step`
// (0-based) under `options` (redraw_every, seed): the block's initial features before the first
// redraw. A checkpoint written after `s` steps is read back with the features of step s − 1.
void SetFeaturesForStep(Model& model, const TrainOptions& options, int64_t step);
// Evaluates a model on the task of `options` (held-out MQAR sequences, or validation bytes).
EvalResult Evaluate(Model& model, const TrainOptions& options, int64_t step);

}  // namespace attnkit::train

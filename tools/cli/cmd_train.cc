// `attnkit train`: trains a small decoder-only model whose attention layers are one attnkit
// variant (by the layer factory's names) on MQAR or byte-level text; progress bar on stderr,
// one JSON line per evaluation with --json, checkpoints in --out DIR (docs/training.md).
#include <cmath>
#include <cstdio>
#include <iostream>
#include <memory>

#include "attnkit/core/error.h"
#include "attnkit/core/progress.h"
#include "attnkit/core/runtime.h"
#include "attnkit/layers/factory.h"
#include "attnkit/train/trainer.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

std::string Duration(double s) {
  char buf[32];
  if (s >= 3600) {
    std::snprintf(buf, sizeof(buf), "%dh%02dm", static_cast<int>(s / 3600),
                  static_cast<int>(std::fmod(s, 3600) / 60));
  } else if (s >= 60) {
    std::snprintf(buf, sizeof(buf), "%dm%02ds", static_cast<int>(s / 60),
                  static_cast<int>(std::fmod(s, 60)));
  } else {
    std::snprintf(buf, sizeof(buf), "%.0fs", s);
  }
  return buf;
}

// The progress bar, started by the first step (so that a refusal before training prints only
// its one error line): step, loss, tokens/s and time left.
class StepBar {
 public:
  explicit StepBar(std::string label) : label_(std::move(label)) {}
  void Update(const train::StepInfo& s) {
    if (!bar_) {
      bar_ = std::make_unique<Progress>(label_, s.steps);
    }
    bar_->Set(s.step);
    char note[128];
    std::snprintf(note, sizeof(note), "loss %.4f  %.0f tok/s  %s left", s.loss, s.tokens_per_s,
                  Duration(s.seconds_left).c_str());
    bar_->SetNote(note);
  }
  void Finish() {
    if (bar_) bar_->Finish();
  }

 private:
  std::string label_;
  std::unique_ptr<Progress> bar_;
};

void PrintEval(const train::EvalResult& r, bool json) {
  if (json) {
    std::cout << r.ToJson() << std::endl;
  } else if (r.task == "text") {
    std::printf("eval step %lld: validation %.4f bits/byte (loss %.4f nats, %lld bytes)\n",
                static_cast<long long>(r.step), r.bits_per_byte, r.loss,
                static_cast<long long>(r.tokens));
  } else {
    std::printf("eval step %lld: MQAR accuracy %.2f%% (loss %.4f, %lld answers)\n",
                static_cast<long long>(r.step), 100.0 * r.accuracy, r.loss,
                static_cast<long long>(r.tokens));
  }
  std::fflush(stdout);
}

int RunTrainCmd(const std::vector<std::string>& args) {
  std::string kinds_help =
      "attention layer kind, or a repeating list (3*gated_deltanet,gated); kinds:";
  for (const auto& k : LayerKinds()) kinds_help += " " + k;
  ArgParser p("attnkit train --task mqar|text --variant NAME --out DIR [options]",
              "Train a small decoder-only model (pre-norm blocks: the attention variant + SwiGLU "
              "MLP) on multi-query associative recall or byte-level text, with AdamW; report MQAR "
              "accuracy on held-out sequences or validation bits per byte.");
  p.AddOption("task", "mqar",
              "mqar (associative recall) or text (bytes of --text FILE, else the Brown corpus)");
  p.AddOption("variant", "mha", kinds_help);
  p.AddOption("layers", "2", "blocks");
  p.AddOption("hidden", "64", "hidden size");
  p.AddOption("heads", "4", "query heads");
  p.AddOption("kv-heads", "0", "KV heads (0 = heads)");
  p.AddOption("head-dim", "0", "head dim (0 = hidden / heads)");
  p.AddOption("window", "0",
              "sliding window of swa / sinks layers, chunk of chunked (0 = the factory's 128)");
  p.AddOption("ffn", "0", "SwiGLU inner size (0 = 8·hidden/3 rounded up to 8)");
  p.AddOption("q-lora", "0", "mla q_lora_rank (0 = direct query projection)");
  p.AddOption("kv-lora", "0", "mla kv_lora_rank (0 = 4·head dim)");
  p.AddOption("rope-dim", "0", "mla qk_rope_head_dim (0 = head dim / 2)");
  p.AddFlag("untied", "a separate output head instead of the embedding's transpose");
  p.AddOption("seqlen", "64", "tokens per training sequence");
  p.AddOption("batch", "16", "sequences per step");
  p.AddOption("steps", "200", "optimiser steps");
  p.AddOption("lr", "3e-3", "peak learning rate (AdamW)");
  p.AddOption("warmup", "-1", "warm-up steps (-1 = steps / 10)");
  p.AddOption("weight-decay", "0.1", "AdamW weight decay of the weight matrices");
  p.AddOption("clip", "1", "global gradient-norm bound (0 = none)");
  p.AddOption("min-lr", "0.1", "final learning rate of the cosine decay, as a fraction of --lr");
  p.AddOption("pairs", "8", "MQAR key-value pairs per sequence");
  p.AddOption("mqar-vocab", "256", "MQAR vocabulary (keys from the lower half, values the upper)");
  p.AddOption("eval-sequences", "256", "held-out MQAR sequences per evaluation");
  p.AddOption("text", "", "text file (the last 10% is validation); default: the Brown corpus");
  p.AddOption("eval-bytes", "65536", "validation bytes per text evaluation");
  p.AddOption("eval-every", "0", "steps between evaluations and checkpoints (0 = at the end)");
  p.AddOption("redraw-every", "100",
              "performer layers: steps between redraws of the random features (0 = never)");
  p.AddOption("out", "", "run folder: checkpoints (step-N/, latest)");
  p.AddFlag("resume", "continue the run in --out from its latest checkpoint");
  p.AddFlag("evaluate", "evaluate the latest checkpoint in --out and exit");
  p.AddOption("seed", "1", "seed of weights and data");
  p.AddOption("threads", "0", "threads (0 = all)");
  p.AddFlag("json", "one JSON line per evaluation and a final summary line (no progress bar)");
  if (!p.Parse(args)) return 0;
  const bool json = p.Flag("json");
  const int threads = p.GetThreads();
  if (threads > 0) SetNumThreads(threads);
  const std::string out = p.Get("out");
  Require(!out.empty(), "--out DIR is required (the run's checkpoints go there)");

  if (p.Flag("evaluate") || p.Flag("resume")) {
    train::Checkpoint c = train::LoadCheckpoint(out);
    if (p.Flag("evaluate")) {
      PrintEval(train::Evaluate(*c.model, c.options, c.step), json);
      return 0;
    }
    train::TrainOptions o = c.options;
    if (p.Given("steps")) o.steps = p.GetInt("steps");
    o.out_dir = out;
    o.resume = true;
    c.model.reset();
    if (json) SetProgressQuiet(true);
    StepBar bar("train " + o.model.variant);
    train::TrainCallbacks cb;
    cb.on_step = [&](const train::StepInfo& s) { bar.Update(s); };
    cb.on_eval = [&](const train::EvalResult& r) { PrintEval(r, json); };
    train::Train(o, cb);
    bar.Finish();
    return 0;
  }

  train::TrainOptions o;
  o.task = p.Get("task");
  Require(o.task == "mqar" || o.task == "text", "--task must be mqar or text, got '", o.task, "'");
  try {
    (void)ParseLayerList(p.Get("variant"));
  } catch (const Error& e) {
    throw Error(std::string("--variant: ") + e.what());
  }
  o.model.variant = p.Get("variant");
  o.model.layers = p.GetInt("layers");
  o.model.hidden = p.GetInt("hidden");
  o.model.heads = p.GetInt("heads");
  o.model.kv_heads = p.GetInt("kv-heads");
  o.model.head_dim = p.GetInt("head-dim");
  o.model.window = p.GetInt("window");
  o.model.ffn = p.GetInt("ffn");
  o.model.q_lora_rank = p.GetInt("q-lora");
  o.model.kv_lora_rank = p.GetInt("kv-lora");
  o.model.rope_head_dim = p.GetInt("rope-dim");
  o.model.tied = !p.Flag("untied");
  for (const char* flag : {"layers", "hidden", "heads", "seqlen", "batch"}) {
    Require(p.GetInt(flag) >= 1, "--", flag, " must be >= 1, got ", p.Get(flag));
  }
  for (const char* flag : {"kv-heads", "head-dim", "window", "ffn", "q-lora", "kv-lora", "rope-dim",
                           "steps", "eval-every", "redraw-every"}) {
    Require(p.GetInt(flag) >= 0, "--", flag, " must be >= 0, got ", p.Get(flag));
  }
  o.seqlen = p.GetInt("seqlen");
  o.batch = p.GetInt("batch");
  o.steps = p.GetInt("steps");
  o.optim.lr = p.GetDouble("lr");
  const int64_t warmup = p.GetInt("warmup");
  Require(warmup >= -1, "--warmup must be >= 0 (or -1 for steps / 10), got ", warmup);
  o.optim.warmup = warmup < 0 ? o.steps / 10 : warmup;
  o.optim.weight_decay = p.GetDouble("weight-decay");
  o.optim.clip = p.GetDouble("clip");
  o.optim.min_lr_ratio = p.GetDouble("min-lr");
  o.mqar_pairs = p.GetInt("pairs");
  o.mqar_vocab = p.GetInt("mqar-vocab");
  o.eval_sequences = p.GetInt("eval-sequences");
  o.text_path = p.Get("text");
  Require(o.text_path.empty() || o.task == "text", "--text needs --task text");
  o.eval_bytes = p.GetInt("eval-bytes");
  o.eval_every = p.GetInt("eval-every");
  o.redraw_every = p.GetInt("redraw-every");
  o.seed = p.GetSeed();
  o.out_dir = out;
  try {
    o.optim.Check();
  } catch (const Error& e) {
    throw Error(std::string("--lr / --weight-decay / --clip / --min-lr: ") + e.what());
  }
  if (json) SetProgressQuiet(true);
  StepBar bar("train " + o.model.variant);
  train::TrainCallbacks cb;
  cb.on_step = [&](const train::StepInfo& s) { bar.Update(s); };
  cb.on_eval = [&](const train::EvalResult& r) { PrintEval(r, json); };
  const train::TrainResult r = train::Train(o, cb);
  bar.Finish();
  nlohmann::json summary = {{"event", "done"},
                            {"variant", o.model.variant},
                            {"task", o.task},
                            {"steps", r.steps_done},
                            {"params", r.num_params},
                            {"threads", GetNumThreads()},
                            {"seconds", r.seconds},
                            {"train_seconds", r.train_seconds},
                            {"tokens_per_s", r.tokens_per_s},
                            {"final_train_loss", r.losses.empty() ? 0.0 : r.losses.back()},
                            {"checkpoint", r.checkpoint}};
  if (json) {
    std::cout << summary.dump() << std::endl;
  } else {
    std::printf(
        "trained %lld steps of %s (%lld parameters) in %.1f s, %.0f tokens/s, %d threads; "
        "checkpoint %s\n",
        static_cast<long long>(r.steps_done), o.model.variant.c_str(),
        static_cast<long long>(r.num_params), r.seconds, r.tokens_per_s, GetNumThreads(),
        r.checkpoint.c_str());
  }
  return 0;
}

const CommandRegistrar kRegistrar({"train",
                                   "train a small model with an attention variant on MQAR or "
                                   "byte-level text; accuracy, bits per byte, checkpoints",
                                   RunTrainCmd});

}  // namespace
}  // namespace attnkit::cli

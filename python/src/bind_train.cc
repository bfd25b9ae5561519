// attnkit.train / attnkit.evaluate_checkpoint: the trainer of `attnkit train` (docs/training.md)
// from Python, returning plain dicts (evaluations, losses, throughput). Runs without the GIL.
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "attnkit/train/trainer.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

py::dict EvalDict(const train::EvalResult& r) {
  py::dict d;
  d["step"] = r.step;
  d["task"] = r.task;
  d["loss"] = r.loss;
  d["accuracy"] = r.accuracy;
  if (r.task == "text") d["bits_per_byte"] = r.bits_per_byte;
  d["tokens"] = r.tokens;
  d["loss_by_position"] = r.loss_by_position;
  return d;
}

}  // namespace

void BindTrain(py::module_& m) {
  m.def(
      "train",
      [](const std::string& task, const std::string& variant, int64_t layers, int64_t hidden,
         int64_t heads, int64_t kv_heads, int64_t head_dim, int64_t window, int64_t ffn, bool tied,
         int64_t seqlen, int64_t batch, int64_t steps, double lr, int64_t warmup,
         double weight_decay, double clip, double min_lr, int64_t pairs, int64_t mqar_vocab,
         int64_t eval_sequences, const std::optional<std::string>& text, int64_t eval_bytes,
         int64_t eval_every, const std::optional<std::string>& out, uint64_t seed) {
        train::TrainOptions o;
        o.task = task;
        o.model.variant = variant;
        o.model.layers = layers;
        o.model.hidden = hidden;
        o.model.heads = heads;
        o.model.kv_heads = kv_heads;
        o.model.head_dim = head_dim;
        o.model.window = window;
        o.model.ffn = ffn;
        o.model.tied = tied;
        o.seqlen = seqlen;
        o.batch = batch;
        o.steps = steps;
        o.optim.lr = lr;
        o.optim.warmup = warmup < 0 ? steps / 10 : warmup;
        o.optim.weight_decay = weight_decay;
        o.optim.clip = clip;
        o.optim.min_lr_ratio = min_lr;
        o.mqar_pairs = pairs;
        o.mqar_vocab = mqar_vocab;
        o.eval_sequences = eval_sequences;
        o.text_path = text.value_or("");
        o.eval_bytes = eval_bytes;
        o.eval_every = eval_every;
        o.out_dir = out.value_or("");
        o.seed = seed;
        train::TrainResult r;
        {
          py::gil_scoped_release release;
          r = train::Train(o);
        }
        py::dict d;
        py::list evals;
        for (const auto& e : r.evals) evals.append(EvalDict(e));
        d["evals"] = evals;
        d["losses"] = r.losses;
        d["steps"] = r.steps_done;
        d["params"] = r.num_params;
        d["seconds"] = r.seconds;
        d["train_seconds"] = r.train_seconds;
        d["tokens_per_s"] = r.tokens_per_s;
        d["checkpoint"] = r.checkpoint;
        return d;
      },
      py::kw_only(), py::arg("task") = "mqar", py::arg("variant") = "mha", py::arg("layers") = 2,
      py::arg("hidden") = 64, py::arg("heads") = 4, py::arg("kv_heads") = 0,
      py::arg("head_dim") = 0, py::arg("window") = 0, py::arg("ffn") = 0, py::arg("tied") = true,
      py::arg("seqlen") = 64, py::arg("batch") = 16, py::arg("steps") = 200, py::arg("lr") = 3e-3,
      py::arg("warmup") = -1, py::arg("weight_decay") = 0.1, py::arg("clip") = 1.0,
      py::arg("min_lr") = 0.1, py::arg("pairs") = 8, py::arg("mqar_vocab") = 256,
      py::arg("eval_sequences") = 256, py::arg("text") = py::none(), py::arg("eval_bytes") = 65536,
      py::arg("eval_every") = 0, py::arg("out") = py::none(), py::arg("seed") = 1,
      "Trains a small decoder-only model whose attention layers are `variant` (a layer factory "
      "kind or a list such as '3*gated_deltanet,gated') on 'mqar' or 'text' (bytes of `text`, "
      "else the Brown corpus), as `attnkit train` does; returns a dict with 'evals' (loss, "
      "accuracy, bits_per_byte, loss_by_position per evaluation), 'losses' per step, "
      "'tokens_per_s', 'params', 'checkpoint' (with `out`). Bad arguments raise ValueError.");
  m.def(
      "mqar_batch",
      [](int64_t seqlen, int64_t pairs, int64_t vocab, uint64_t seed, uint64_t first,
         int64_t batch) {
        train::MqarConfig c;
        c.seqlen = seqlen;
        c.pairs = pairs;
        c.vocab = vocab;
        const train::Batch b = train::MqarBatch(c, seed, first, batch);
        return py::make_tuple(py::array_t<int32_t>({b.batch, b.seqlen}, b.inputs.data()),
                              py::array_t<int32_t>({b.batch, b.seqlen}, b.targets.data()));
      },
      py::kw_only(), py::arg("seqlen"), py::arg("pairs"), py::arg("vocab"), py::arg("seed"),
      py::arg("first"), py::arg("batch"),
      "MQAR sequences first … first + batch − 1 of stream `seed` (docs/quality.md): (inputs, "
      "targets) int32 [batch, seqlen], targets −1 where nothing is scored. Training step n of a "
      "run uses first = n·batch.");
  m.def(
      "evaluate_checkpoint",
      [](const std::string& path) {
        py::dict d;
        {
          py::gil_scoped_release release;
          train::Checkpoint c = train::LoadCheckpoint(path);
          const train::EvalResult r = train::Evaluate(*c.model, c.options, c.step);
          py::gil_scoped_acquire acquire;
          d = EvalDict(r);
        }
        return d;
      },
      py::arg("path"),
      "Evaluates the checkpoint in `path` (a run folder with `latest`, or a step folder) on its "
      "task; the config is checked against the tensors (ValueError on a mismatch).");
}

}  // namespace attnkit::python

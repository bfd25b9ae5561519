// Models from Python: the Hugging Face config.json reader, the built-in catalogue, the cost model
// (attnkit.kv_cache_bytes, attnkit.cost) and model cards.
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "arrays.h"
#include "attnkit/models/card.h"
#include "attnkit/models/catalogue.h"
#include "attnkit/models/config.h"
#include "attnkit/models/cost.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

using models::ModelConfig;

py::object JsonLoads(const std::string& text) {
  return py::module_::import("json").attr("loads")(text);
}

models::CostQuery MakeQuery(int64_t context, int64_t batch, const std::string& dtype,
                            const std::string& state_dtype) {
  models::CostQuery q;
  q.context = context;
  q.batch = batch;
  q.cache_dtype = models::ParseCacheDtype(dtype);
  q.state_dtype = models::ParseCacheDtype(state_dtype);
  return q;
}

}  // namespace

// A ModelConfig, or a catalogue name / config.json path (str or os.PathLike).
ModelConfig AsModelConfig(const py::object& model, bool allow_unknown) {
  if (py::isinstance<ModelConfig>(model)) return model.cast<ModelConfig>();
  py::object path = model;
  if (py::hasattr(model, "__fspath__")) path = model.attr("__fspath__")();
  if (!py::isinstance<py::str>(path)) {
    TypeError(
        "model must be an attnkit.ModelConfig, a catalogue name or a path to a config.json, "
        "got " +
        py::str(py::type::of(model).attr("__name__")).cast<std::string>());
  }
  const std::string s = path.cast<std::string>();
  models::ReadOptions o;
  o.allow_unknown = allow_unknown;
  py::gil_scoped_release release;
  return models::LoadModelOrFile(s, o);
}

namespace {
models::ReadOptions Allow(bool allow_unknown) {
  models::ReadOptions o;
  o.allow_unknown = allow_unknown;
  return o;
}
}  // namespace

void BindModels(py::module_& m) {
  py::class_<ModelConfig>(m, "ModelConfig",
                          R"doc(A model's attention stack: one entry per decoder layer.

Get one with attnkit.load_model(name_or_path) or attnkit.read_config(path). Attributes: name,
model_type, source, hidden_size, max_position_embeddings, num_layers, layers (list of dicts, one
per layer with its kind and non-zero fields), pattern (one character per layer), summary,
assumptions and warnings (family defaults applied / guesses made by the reader), unmodelled and
is_estimate (fields read past with allow_unknown=True: every figure is then an estimate).)doc")
      .def_readonly("name", &ModelConfig::name)
      .def_readonly("model_type", &ModelConfig::model_type)
      .def_readonly("source", &ModelConfig::source)
      .def_readonly("hidden_size", &ModelConfig::hidden_size)
      .def_readonly("max_position_embeddings", &ModelConfig::max_position_embeddings)
      .def_readonly("assumptions", &ModelConfig::assumptions)
      .def_readonly("warnings", &ModelConfig::warnings)
      .def_readonly("unmodelled", &ModelConfig::unmodelled,
                    "Fields that change attention but were not modelled (allow_unknown=True).")
      .def_property_readonly("is_estimate", &ModelConfig::IsEstimate,
                             "True when figures from it ignore `unmodelled` fields.")
      .def_property_readonly("num_layers", [](const ModelConfig& c) { return c.layers.size(); })
      .def_property_readonly(
          "layers",
          [](const ModelConfig& c) {
            return py::object(JsonLoads(models::ModelConfigToJson(c))["layers"]);
          },
          "One dict per decoder layer (kind and its non-zero fields).")
      .def_property_readonly("pattern", &ModelConfig::Pattern,
                             "One character per layer: F full, S sliding, C chunked, M mla, D "
                             "dsa, G gated_deltanet, K kda, B mamba2, L lightning, - mlp.")
      .def_property_readonly("summary", &ModelConfig::Summary)
      .def(
          "count",
          [](const ModelConfig& c, const std::string& kind) {
            return c.Count(models::ParseLayerKind(kind));
          },
          py::arg("kind"), "Number of layers of a kind (\"full\", \"sliding\", \"mla\", ...).")
      .def(
          "to_dict", [](const ModelConfig& c) { return JsonLoads(models::ModelConfigToJson(c)); },
          "The whole description as a dict (as `attnkit` CLI --json writes it).")
      .def("__repr__", [](const ModelConfig& c) {
        return "attnkit.ModelConfig(" + c.name + ": " + c.Summary() + ")";
      });

  m.def(
      "read_config",
      [](const py::object& path, bool allow_unknown) {
        py::object p = py::hasattr(path, "__fspath__") ? path.attr("__fspath__")() : path;
        const std::string s = p.cast<std::string>();
        py::gil_scoped_release release;
        return models::ReadHfConfig(s, Allow(allow_unknown));
      },
      py::arg("path"), py::kw_only(), py::arg("allow_unknown") = false,
      "Reads a Hugging Face config.json into an attnkit.ModelConfig (ValueError if it cannot be "
      "understood, naming the field). Fields that change attention but are not modelled "
      "(compress_ratios, unknown layer_types entries, ...) are refused unless allow_unknown=True; "
      "then the result's is_estimate is True and cost() marks its figures as estimates.");
  m.def(
      "read_config_text",
      [](const std::string& text, const std::string& source, bool allow_unknown) {
        return models::ReadHfConfigText(text, source, Allow(allow_unknown));
      },
      py::arg("text"), py::arg("source") = "<text>", py::kw_only(),
      py::arg("allow_unknown") = false,
      "The same as read_config() from the JSON text of a config.json.");
  m.def("load_model", &AsModelConfig, py::arg("name_or_path"), py::kw_only(),
        py::arg("allow_unknown") = false,
        "A catalogue model by name or Hugging Face id (see attnkit.catalogue()), or else a path "
        "to a config.json (read as read_config does), as an attnkit.ModelConfig.");
  m.def(
      "catalogue",
      [] {
        py::list out;
        for (const auto& e : models::Catalogue()) {
          py::dict d;
          d["name"] = e.name;
          d["hf_id"] = e.hf_id;
          d["family"] = e.family;
          d["source"] = e.source;
          out.append(d);
        }
        return out;
      },
      "The built-in catalogue: a list of dicts with name, hf_id, family and source.");

  m.def(
      "kv_cache_bytes",
      [](const py::object& model, int64_t context, const std::string& dtype, int64_t batch) {
        const ModelConfig c = AsModelConfig(model);
        return models::Cost(c, MakeQuery(context, batch, dtype, "f32")).kv_bytes_total;
      },
      py::arg("model"), py::arg("context") = 131072, py::arg("dtype") = "bf16",
      py::arg("batch") = 1,
      R"doc(Bytes of KV cache a model holds at a context length.

  model    path to a Hugging Face config.json, a catalogue name, or an attnkit.ModelConfig
  context  tokens in the cache (default 131072)
  dtype    cache element type: "f32", "bf16" (default), "f16", "fp8", "int8"
  batch    sequences (default 1)

Counts every softmax-attention layer (sliding windows capped at their window, MLA/DSA as their
latent cache, layers sharing another's KV once); DSA indexer keys and recurrent state are not
included: see attnkit.cost() for those.

  >>> attnkit.kv_cache_bytes("llama-3.1-8b", context=131072, dtype="bf16")
)doc");

  m.def(
      "cost",
      [](const py::object& model, int64_t context, int64_t batch, const std::string& dtype,
         const std::string& state_dtype, bool layers) {
        const ModelConfig c = AsModelConfig(model);
        const models::CostReport r = models::Cost(c, MakeQuery(context, batch, dtype, state_dtype));
        return JsonLoads(models::CostReportToJson(c, r, layers));
      },
      py::arg("model"), py::kw_only(), py::arg("context") = 4096, py::arg("batch") = 1,
      py::arg("dtype") = "bf16", py::arg("state_dtype") = "f32", py::arg("layers") = true,
      R"doc(The cost model: what a model's attention costs at a context, as a dict.

Keys include kv_bytes_per_token, kv_bytes_total, indexer_bytes_per_token, indexer_bytes_total,
state_bytes, state_bytes_total, total_bytes, decode_flops, prefill_flops and (layers=True) a
per-layer list. dtype is the KV-cache element type, state_dtype that of recurrent state.)doc");

  m.def(
      "model_card_svg",
      [](const py::object& model, std::vector<int64_t> contexts, const std::string& dtype) {
        models::CardOptions o;
        o.contexts = std::move(contexts);
        o.cache_dtype = models::ParseCacheDtype(dtype);
        return models::ModelCardSvg(AsModelConfig(model), o);
      },
      py::arg("model"), py::kw_only(),
      py::arg("contexts") = std::vector<int64_t>{8192, 32768, 131072}, py::arg("dtype") = "bf16",
      "A model card (layer pattern, KV bytes per token, cache at the contexts) as an SVG string.");
}

}  // namespace attnkit::python

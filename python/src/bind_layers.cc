// Attention blocks from Python: attnkit.Layer (GQA-family and MLA blocks with weights and caches),
// built by attnkit.gqa_block / attnkit.mla_block / attnkit.make_layer, and attnkit.Stack.
#include <pybind11/stl.h>

#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "arrays.h"
#include "attnkit/layers/factory.h"
#include "attnkit/layers/gqa.h"
#include "attnkit/layers/layer.h"
#include "attnkit/layers/mla.h"
#include "attnkit/models/build.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

// A layer or a stack with a lock (neither is thread-safe; forward() runs without the GIL).
struct PyLayer {
  std::unique_ptr<Layer> layer;
  std::mutex mu;
};
struct PyStack {
  std::unique_ptr<Stack> stack;
  std::mutex mu;
};

// Hidden states x [batch, tokens, hidden]. The layers hand all rows to BLAS as one matrix, so
// they need C-contiguous rows; other layouts (e.g. a slice x[:, a:b] with batch > 1) are copied,
// which costs little next to the block's projections.
Tensor4 AsHidden(py::handle obj, const char* name, int64_t hidden) {
  Checked<float> c = CheckArray<float>(obj, name, 3, "[batch, tokens, hidden]", false, true);
  if (c.shape[2] != hidden) {
    ValueError(std::string(name) + " has hidden size " + std::to_string(c.shape[2]) +
               " but the layer's is " + std::to_string(hidden));
  }
  const bool rows_ok = c.shape[1] == 1 || c.stride[1] == hidden;
  const bool batch_ok = c.shape[0] == 1 || c.stride[0] == c.shape[1] * hidden;
  if (!rows_ok || !batch_ok) {
    c = CheckArray<float>(py::module_::import("numpy").attr("ascontiguousarray")(c.array), name, 3,
                          "[batch, tokens, hidden]", false, true);
  }
  Tensor4 t;
  t.array = c.array;
  t.view = MakeBhsd(c.data, c.shape[0], int64_t{1}, c.shape[1], c.shape[2]);
  return t;
}

template <typename Module>
py::array Forward(Module& module, std::mutex& mu, const ArrayArg& x,
                  std::optional<int64_t> position, int64_t hidden) {
  const Tensor4 tx = AsHidden(x, "x", hidden);
  const auto& s = tx.view.shape;
  py::array_t<float> out(std::vector<py::ssize_t>{s[0], s[2], s[3]});
  const TensorView<float> ov = MakeBhsd(out.mutable_data(), s[0], int64_t{1}, s[2], s[3]);
  {
    py::gil_scoped_release release;
    std::lock_guard lock(mu);
    module.Forward(tx.cview(), position ? *position : module.tokens_seen(), ov);
  }
  return out;
}

py::array_t<float> MatrixToArray(const Matrix& m) {
  py::array_t<float> a(std::vector<py::ssize_t>{m.rows, m.cols});
  std::copy(m.data.begin(), m.data.end(), a.mutable_data());
  return a;
}
py::array_t<float> VectorToArray(const std::vector<float>& v) {
  py::array_t<float> a(std::vector<py::ssize_t>{static_cast<py::ssize_t>(v.size())});
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}
Matrix ArrayToMatrix(py::handle obj, const std::string& name) {
  Checked<float> c = CheckArray<float>(obj, name.c_str(), 2, "[in, out]", false, true);
  Matrix m(c.shape[0], c.shape[1]);
  for (int64_t r = 0; r < m.rows; ++r) {
    for (int64_t j = 0; j < m.cols; ++j) m.row(r)[j] = c.data[r * c.stride[0] + j];
  }
  return m;
}
std::vector<float> ArrayToVector(py::handle obj, const std::string& name) {
  Checked<float> c = CheckArray<float>(obj, name.c_str(), 1, "[n]", false, true);
  return std::vector<float>(c.data, c.data + c.shape[0]);
}

// Fills named weights from a dict; unknown names raise ValueError (missing ones are reported by
// the weights' Check()).
void ReadWeights(const py::dict& d, const std::map<std::string, Matrix*>& matrices,
                 const std::map<std::string, std::vector<float>*>& vectors) {
  for (const auto& [key, value] : d) {
    const std::string name = py::str(key).cast<std::string>();
    if (auto it = matrices.find(name); it != matrices.end()) {
      *it->second = ArrayToMatrix(value, "weights[\"" + name + "\"]");
    } else if (auto jt = vectors.find(name); jt != vectors.end()) {
      *jt->second = ArrayToVector(value, "weights[\"" + name + "\"]");
    } else {
      std::string known;
      for (const auto& [k, v] : matrices) known += " " + k;
      for (const auto& [k, v] : vectors) known += " " + k;
      ValueError("weights: unknown weight \"" + name + "\" (known:" + known + ")");
    }
  }
}

RopeConfig MakeRope(double theta, const std::string& layout, double fraction) {
  RopeConfig r;
  r.theta = static_cast<float>(theta);
  r.layout = ParseRopeLayout(layout);
  r.fraction = static_cast<float>(fraction);
  return r;
}

std::unique_ptr<PyLayer> Wrap(std::unique_ptr<Layer> layer) {
  auto p = std::make_unique<PyLayer>();
  p->layer = std::move(layer);
  return p;
}

LayerShape MakeShape(int64_t hidden, int64_t num_heads, int64_t num_heads_kv, int64_t head_dim,
                     int64_t window, int64_t q_lora_rank, int64_t kv_lora_rank,
                     int64_t rope_head_dim, double rope_theta, int64_t batch, int64_t max_tokens) {
  LayerShape s;
  s.hidden = hidden;
  s.num_heads = num_heads;
  s.num_heads_kv = num_heads_kv;
  s.head_dim = head_dim;
  s.window = window;
  s.q_lora_rank = q_lora_rank;
  s.kv_lora_rank = kv_lora_rank;
  s.rope_head_dim = rope_head_dim;
  s.rope_theta = static_cast<float>(rope_theta);
  s.batch = batch;
  s.max_tokens = max_tokens;
  return s;
}

}  // namespace

void BindLayers(py::module_& m) {
  py::class_<PyLayer>(m, "Layer",
                      R"doc(An attention block with its weights and cache (GQA-family or MLA).

Build one with attnkit.gqa_block(), attnkit.mla_block() or attnkit.make_layer(kind).
  forward(x, position=None) -> out   x, out float32 [batch, tokens, hidden] (copied first if its
      rows are not C-contiguous): the
      tokens at positions position ... position + tokens - 1 (default: right after the tokens
      already seen), attending to everything cached; appends them to the cache. One call with T
      tokens equals T calls of one token (prefill then decode).
  reset()         forgets all tokens, keeps the weights
  weights()       a dict of copies of the weights ([in, out] matrices: y = x @ W)
  set_path(p)     MLA only: "absorbed" or "naive" (same numbers, different cost)
  kind, describe, hidden, tokens_seen, cache_bytes, weight_bytes
The residual connection is not added (attnkit.Stack adds it).)doc")
      .def(
          "forward",
          [](PyLayer& l, const ArrayArg& x, std::optional<int64_t> position) {
            return Forward(*l.layer, l.mu, x, position, l.layer->hidden());
          },
          py::arg("x"), py::arg("position") = py::none())
      .def(
          "__call__",
          [](PyLayer& l, const ArrayArg& x, std::optional<int64_t> position) {
            return Forward(*l.layer, l.mu, x, position, l.layer->hidden());
          },
          py::arg("x"), py::arg("position") = py::none())
      .def("reset",
           [](PyLayer& l) {
             std::lock_guard lock(l.mu);
             l.layer->Reset();
           })
      .def("weights",
           [](PyLayer& l) {
             std::lock_guard lock(l.mu);
             py::dict d;
             if (auto* g = dynamic_cast<GqaBlock*>(l.layer.get())) {
               const GqaWeights& w = g->weights();
               d["w_q"] = MatrixToArray(w.w_q);
               d["w_k"] = MatrixToArray(w.w_k);
               d["w_v"] = MatrixToArray(w.w_v);
               d["w_o"] = MatrixToArray(w.w_o);
               if (!w.w_gate.empty()) d["w_gate"] = MatrixToArray(w.w_gate);
               if (!w.q_norm.empty()) d["q_norm"] = VectorToArray(w.q_norm);
               if (!w.k_norm.empty()) d["k_norm"] = VectorToArray(w.k_norm);
               if (!w.sinks.empty()) d["sinks"] = VectorToArray(w.sinks);
             } else {
               ValueError("weights(): only GQA-family blocks expose their weights here");
             }
             return d;
           })
      .def(
          "set_path",
          [](PyLayer& l, const std::string& path) {
            auto* mla = dynamic_cast<MlaBlock*>(l.layer.get());
            if (!mla) ValueError("set_path: only MLA blocks have paths");
            if (path != "absorbed" && path != "naive") {
              ValueError("path must be \"absorbed\" or \"naive\", got \"" + path + "\"");
            }
            std::lock_guard lock(l.mu);
            mla->set_path(path == "naive" ? MlaPath::kNaive : MlaPath::kAbsorbed);
          },
          py::arg("path"))
      .def_property_readonly("kind", [](PyLayer& l) { return l.layer->Kind(); })
      .def_property_readonly("describe", [](PyLayer& l) { return l.layer->Describe(); })
      .def_property_readonly("hidden", [](PyLayer& l) { return l.layer->hidden(); })
      .def_property_readonly("tokens_seen",
                             [](PyLayer& l) {
                               std::lock_guard lock(l.mu);
                               return l.layer->tokens_seen();
                             })
      .def_property_readonly("cache_bytes",
                             [](PyLayer& l) {
                               std::lock_guard lock(l.mu);
                               return l.layer->CacheBytes();
                             })
      .def_property_readonly("weight_bytes", [](PyLayer& l) { return l.layer->WeightBytes(); })
      .def("__repr__", [](PyLayer& l) { return "attnkit.Layer(" + l.layer->Describe() + ")"; });

  m.def(
      "gqa_block",
      [](int64_t hidden, int64_t num_heads_q, int64_t num_heads_kv, int64_t head_dim,
         int64_t head_dim_v, bool rope, double rope_theta, const std::string& rope_layout,
         double rope_fraction, bool qk_norm, bool qk_norm_zero_centred, double norm_eps,
         bool output_gate, bool sinks, int64_t window, double softcap, std::optional<double> scale,
         int64_t batch, int64_t max_tokens, int64_t max_step, const std::string& backend,
         const std::optional<py::dict>& weights, uint64_t seed) {
        GqaConfig c;
        c.hidden = hidden;
        c.num_heads_q = num_heads_q;
        c.num_heads_kv = num_heads_kv;
        c.head_dim = head_dim;
        c.head_dim_v = head_dim_v;
        c.use_rope = rope;
        c.rope = MakeRope(rope_theta, rope_layout, rope_fraction);
        c.qk_norm = qk_norm;
        c.qk_norm_zero_centred = qk_norm_zero_centred;
        c.norm_eps = static_cast<float>(norm_eps);
        c.output_gate = output_gate;
        c.sinks = sinks;
        c.window = window;
        c.softcap = static_cast<float>(softcap);
        if (scale) c.scale = static_cast<float>(*scale);
        c.batch = batch;
        c.max_tokens = max_tokens;
        c.max_step = max_step;
        c.backend = ParseBackend(backend);
        c.Validate();
        GqaWeights w;
        if (weights) {
          ReadWeights(*weights,
                      {{"w_q", &w.w_q},
                       {"w_k", &w.w_k},
                       {"w_v", &w.w_v},
                       {"w_o", &w.w_o},
                       {"w_gate", &w.w_gate}},
                      {{"q_norm", &w.q_norm}, {"k_norm", &w.k_norm}, {"sinks", &w.sinks}});
        } else {
          w = GqaWeights::Random(c, seed);
        }
        return Wrap(std::make_unique<GqaBlock>(c, std::move(w)));
      },
      py::arg("hidden"), py::arg("num_heads_q"), py::arg("num_heads_kv"), py::arg("head_dim"),
      py::kw_only(), py::arg("head_dim_v") = 0, py::arg("rope") = true,
      py::arg("rope_theta") = 10000.0, py::arg("rope_layout") = "half",
      py::arg("rope_fraction") = 1.0, py::arg("qk_norm") = false,
      py::arg("qk_norm_zero_centred") = false, py::arg("norm_eps") = 1e-6,
      py::arg("output_gate") = false, py::arg("sinks") = false, py::arg("window") = 0,
      py::arg("softcap") = 0.0, py::arg("scale") = py::none(), py::arg("batch") = 1,
      py::arg("max_tokens") = 4096, py::arg("max_step") = 1, py::arg("backend") = "auto",
      py::arg("weights") = py::none(), py::arg("seed") = 0,
      R"doc(A GQA-family attention block (MHA / GQA / MQA by head counts) as an attnkit.Layer.

    q, k, v = x W_q, x W_k, x W_v;  [QK-norm];  RoPE;  o = attention(q, k, v, causal, window,
    sinks, softcap);  [o *= sigmoid(x W_gate)];  y = o W_o

  hidden, num_heads_q, num_heads_kv, head_dim (= head_dim_qk); head_dim_v=0 (= head_dim)
  rope=True, rope_theta=10000, rope_layout="half" ("half" = Llama/Qwen, "interleaved" = GPT-J),
  rope_fraction=1.0 (partial rotary)
  qk_norm=False (RMSNorm per head on q and k: Qwen3, Gemma 3), qk_norm_zero_centred=False (1 + w),
  norm_eps=1e-6
  output_gate=False (Qwen3-Next), sinks=False (gpt-oss), window=0 (causal sliding window of that
  many keys; the cache becomes a ring buffer), softcap=0 (Gemma 2), scale=None (1/sqrt(head_dim))
  batch=1, max_tokens=4096 (cache capacity), max_step=1 (ring buffer: tokens per call served
  directly), backend="auto"
  weights=None: a dict of float32 arrays w_q [hidden, num_heads_q*head_dim], w_k, w_v
  [hidden, num_heads_kv*head_dim(_v)], w_o [num_heads_q*head_dim_v, hidden], and as configured
  w_gate [hidden, num_heads_q*head_dim_v], q_norm/k_norm [head_dim], sinks [num_heads_q]; None:
  seeded random weights (seed=0))doc");

  m.def(
      "mla_block",
      [](int64_t hidden, int64_t num_heads, int64_t kv_lora_rank, int64_t qk_nope_head_dim,
         int64_t qk_rope_head_dim, int64_t v_head_dim, int64_t q_lora_rank, double rope_theta,
         const std::string& rope_layout, double norm_eps, std::optional<double> scale,
         const std::string& path, int64_t batch, int64_t max_tokens, const std::string& backend,
         const std::optional<py::dict>& weights, uint64_t seed) {
        MlaConfig c;
        c.hidden = hidden;
        c.num_heads = num_heads;
        c.q_lora_rank = q_lora_rank;
        c.kv_lora_rank = kv_lora_rank;
        c.qk_nope_head_dim = qk_nope_head_dim;
        c.qk_rope_head_dim = qk_rope_head_dim;
        c.v_head_dim = v_head_dim;
        c.rope = MakeRope(rope_theta, rope_layout, 1.0);
        c.norm_eps = static_cast<float>(norm_eps);
        if (scale) c.scale = static_cast<float>(*scale);
        if (path != "absorbed" && path != "naive") {
          ValueError("path must be \"absorbed\" or \"naive\", got \"" + path + "\"");
        }
        c.path = path == "naive" ? MlaPath::kNaive : MlaPath::kAbsorbed;
        c.batch = batch;
        c.max_tokens = max_tokens;
        c.backend = ParseBackend(backend);
        c.Validate();
        MlaWeights w;
        if (weights) {
          ReadWeights(*weights,
                      {{"w_dq", &w.w_dq},
                       {"w_uq", &w.w_uq},
                       {"w_dkv", &w.w_dkv},
                       {"w_kr", &w.w_kr},
                       {"w_uk", &w.w_uk},
                       {"w_uv", &w.w_uv},
                       {"w_o", &w.w_o}},
                      {{"q_norm", &w.q_norm}, {"kv_norm", &w.kv_norm}});
        } else {
          w = MlaWeights::Random(c, seed);
        }
        return Wrap(std::make_unique<MlaBlock>(c, std::move(w)));
      },
      py::arg("hidden"), py::arg("num_heads"), py::arg("kv_lora_rank"), py::arg("qk_nope_head_dim"),
      py::arg("qk_rope_head_dim"), py::arg("v_head_dim"), py::kw_only(), py::arg("q_lora_rank") = 0,
      py::arg("rope_theta") = 10000.0, py::arg("rope_layout") = "half", py::arg("norm_eps") = 1e-6,
      py::arg("scale") = py::none(), py::arg("path") = "absorbed", py::arg("batch") = 1,
      py::arg("max_tokens") = 4096, py::arg("backend") = "auto", py::arg("weights") = py::none(),
      py::arg("seed") = 0,
      R"doc(A multi-head latent attention block (DeepSeek V2/V3, Kimi K2) as an attnkit.Layer.

The cache keeps only kv_lora_rank + qk_rope_head_dim values per token (the latent c_kv and the
shared rotary key). path="absorbed" folds the up-projections into the query and output
(multi-query attention over the latent cache); path="naive" up-projects per head every step.
Both give the same numbers; switch with layer.set_path().

  hidden, num_heads, kv_lora_rank, qk_nope_head_dim, qk_rope_head_dim, v_head_dim
  q_lora_rank=0 (0: queries projected from x directly, as DeepSeek-V2-Lite)
  rope_theta=10000, rope_layout="half", norm_eps=1e-6, scale=None (1/sqrt(nope + rope)),
  batch=1, max_tokens=4096 (latent cache capacity), backend="auto"
  weights=None: a dict w_dq [hidden, q_lora_rank], q_norm [q_lora_rank], w_uq [q_lora_rank or
  hidden, num_heads*(nope+rope)], w_dkv [hidden, kv_lora_rank], kv_norm [kv_lora_rank], w_kr
  [hidden, rope], w_uk [kv_lora_rank, num_heads*nope], w_uv [kv_lora_rank, num_heads*v_head_dim],
  w_o [num_heads*v_head_dim, hidden]; None: seeded random weights (seed=0))doc");

  m.def(
      "make_layer",
      [](const std::string& kind, int64_t hidden, int64_t num_heads, int64_t num_heads_kv,
         int64_t head_dim, int64_t window, int64_t q_lora_rank, int64_t kv_lora_rank,
         int64_t rope_head_dim, double rope_theta, int64_t batch, int64_t max_tokens,
         uint64_t seed) {
        return Wrap(
            MakeLayer(kind,
                      MakeShape(hidden, num_heads, num_heads_kv, head_dim, window, q_lora_rank,
                                kv_lora_rank, rope_head_dim, rope_theta, batch, max_tokens),
                      seed));
      },
      py::arg("kind"), py::kw_only(), py::arg("hidden") = 1024, py::arg("num_heads") = 16,
      py::arg("num_heads_kv") = 4, py::arg("head_dim") = 64, py::arg("window") = 128,
      py::arg("q_lora_rank") = 384, py::arg("kv_lora_rank") = 256, py::arg("rope_head_dim") = 32,
      py::arg("rope_theta") = 10000.0, py::arg("batch") = 1, py::arg("max_tokens") = 4096,
      py::arg("seed") = 0,
      R"doc(A block of a named kind with seeded random weights (see attnkit.layer_kinds()):
mha, gqa, mqa, swa (sliding window), sinks (gpt-oss), qknorm (Qwen3), gated (Qwen3-Next),
mla (absorbed), mla-naive, ... Each kind takes the shape fields it needs.)doc");
  m.def("layer_kinds", &LayerKinds, "The kinds make_layer() and Stack() accept.");

  m.def(
      "model_layer",
      [](const py::object& model, int64_t index, int64_t max_tokens, uint64_t seed) {
        const models::ModelConfig config = AsModelConfig(model);
        if (index < 0 || index >= static_cast<int64_t>(config.layers.size())) {
          ValueError("index must be in [0, " + std::to_string(config.layers.size()) + "), got " +
                     std::to_string(index));
        }
        const models::LayerPlan plan =
            models::PlanLayer(config, static_cast<size_t>(index), max_tokens);
        if (plan.kind.empty()) {
          ValueError("layer " + std::to_string(index) + " of " + config.name +
                     " cannot be built: " + plan.missing);
        }
        return Wrap(MakeLayer(plan.kind, plan.shape, seed));
      },
      py::arg("model"), py::arg("index"), py::kw_only(), py::arg("max_tokens") = 4096,
      py::arg("seed") = 0,
      R"doc(Layer `index` of a real model (catalogue name, config.json path or attnkit.ModelConfig) as
an attnkit.Layer at the model's own head counts and dims, with seeded random weights (no
checkpoint is read). max_tokens is its KV-cache capacity. ValueError for layer kinds no block
builds yet.)doc");

  py::class_<PyStack>(m, "Stack",
                      R"doc(A stack of attention blocks with a pre-norm residual stream (no MLP).

Stack(spec, *, hidden=1024, num_heads=16, num_heads_kv=4, head_dim=64, window=128,
      q_lora_rank=384, kv_lora_rank=256, rope_head_dim=32, rope_theta=10000, batch=1,
      max_tokens=4096, seed=0)

  spec   layer kinds, e.g. "3*swa,gqa" or "mla" (see attnkit.layer_kinds()); layer i gets seed + i
  forward(x, position=None) -> out   x, out [batch, tokens, hidden], as Layer.forward
  reset(), tokens_seen, cache_bytes, weight_bytes, num_layers, describe)doc")
      .def(py::init([](const std::string& spec, int64_t hidden, int64_t num_heads,
                       int64_t num_heads_kv, int64_t head_dim, int64_t window, int64_t q_lora_rank,
                       int64_t kv_lora_rank, int64_t rope_head_dim, double rope_theta,
                       int64_t batch, int64_t max_tokens, uint64_t seed) {
             const LayerShape shape =
                 MakeShape(hidden, num_heads, num_heads_kv, head_dim, window, q_lora_rank,
                           kv_lora_rank, rope_head_dim, rope_theta, batch, max_tokens);
             auto s = std::make_unique<PyStack>();
             s->stack = std::make_unique<Stack>(hidden);
             uint64_t i = 0;
             for (const std::string& kind : ParseLayerList(spec)) {
               s->stack->Add(MakeLayer(kind, shape, seed + i++));
             }
             return s;
           }),
           py::arg("spec"), py::kw_only(), py::arg("hidden") = 1024, py::arg("num_heads") = 16,
           py::arg("num_heads_kv") = 4, py::arg("head_dim") = 64, py::arg("window") = 128,
           py::arg("q_lora_rank") = 384, py::arg("kv_lora_rank") = 256,
           py::arg("rope_head_dim") = 32, py::arg("rope_theta") = 10000.0, py::arg("batch") = 1,
           py::arg("max_tokens") = 4096, py::arg("seed") = 0)
      .def(
          "forward",
          [](PyStack& s, const ArrayArg& x, std::optional<int64_t> position) {
            return Forward(*s.stack, s.mu, x, position, s.stack->hidden());
          },
          py::arg("x"), py::arg("position") = py::none())
      .def("reset",
           [](PyStack& s) {
             std::lock_guard lock(s.mu);
             s.stack->Reset();
           })
      .def_property_readonly("tokens_seen",
                             [](PyStack& s) {
                               std::lock_guard lock(s.mu);
                               return s.stack->tokens_seen();
                             })
      .def_property_readonly("cache_bytes",
                             [](PyStack& s) {
                               std::lock_guard lock(s.mu);
                               return s.stack->CacheBytes();
                             })
      .def_property_readonly("weight_bytes", [](PyStack& s) { return s.stack->WeightBytes(); })
      .def_property_readonly("num_layers", [](PyStack& s) { return s.stack->num_layers(); })
      .def_property_readonly("describe", [](PyStack& s) { return s.stack->Describe(); })
      .def("__repr__", [](PyStack& s) { return "attnkit.Stack(" + s.stack->Describe() + ")"; });
}

}  // namespace attnkit::python

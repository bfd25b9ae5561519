// attnkit.linear_attention (Performer FAVOR+, elu+1, ReLU; bidirectional and causal with a decode
// state), attnkit.PerformerFeatures, attnkit.LinearState and attnkit.linear_feature_map.
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "arrays.h"
#include "attnkit/kernels/linear.h"
#include "attnkit/kernels/linear_backward.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

FeatureMap ParseFeatureMap(const std::string& name) {
  if (name == "favor+") return FeatureMap::kFavorPositive;
  if (name == "elu+1") return FeatureMap::kEluPlusOne;
  if (name == "relu") return FeatureMap::kRelu;
  ValueError("feature_map must be \"favor+\", \"elu+1\" or \"relu\", got \"" + name + "\"");
}

RandomFeatureKind ParseFeatureKind(const std::string& name) {
  if (name == "orthogonal") return RandomFeatureKind::kOrthogonal;
  if (name == "iid") return RandomFeatureKind::kIid;
  ValueError("kind must be \"orthogonal\" or \"iid\", got \"" + name + "\"");
}

// A LinearState with a lock: linear_attention() updates it with the GIL released.
struct PyLinearState {
  LinearState state;
  std::mutex mu;
};

py::array_t<float> CopyOut(const std::vector<float>& v, std::vector<py::ssize_t> shape) {
  py::array_t<float> a(shape);
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

LinearOptions MakeOptions(const std::string& feature_map, const PerformerFeatures* features,
                          bool causal, int64_t chunk_size, int num_threads,
                          const std::string& backend) {
  LinearOptions o;
  o.feature_map = ParseFeatureMap(feature_map);
  o.features = features;
  if (o.feature_map == FeatureMap::kFavorPositive && features == nullptr) {
    ValueError(
        "feature_map=\"favor+\" needs features=attnkit.PerformerFeatures(num_features, "
        "head_dim_qk, seed=...)");
  }
  o.causal = causal;
  o.chunk_size = chunk_size;
  o.num_threads = num_threads;
  o.backend =
      ParseScoreArgs(1, std::nullopt, std::nullopt, py::none(), py::none(), num_threads, backend)
          .backend;
  return o;
}

py::object LinearAttention(const ArrayArg& q, const ArrayArg& k, const ArrayArg& v,
                           const std::string& feature_map, const PerformerFeatures* features,
                           bool causal, int64_t chunk_size, PyLinearState* state,
                           const std::string& layout_name, const OptArrayArg& out_arg,
                           int num_threads, const std::string& backend) {
  const py::object& out = out_arg;
  const Layout layout = ParseLayout(layout_name);
  const Tensor4 tq = AsTensor4(q, "q", layout);
  const Tensor4 tk = AsTensor4(k, "k", layout);
  const Tensor4 tv = AsTensor4(v, "v", layout);
  const LinearOptions o =
      MakeOptions(feature_map, features, causal, chunk_size, num_threads, backend);
  const auto& qs = tq.view.shape;
  const Tensor4 to = OutputTensor4(out, "out", {qs[0], qs[1], qs[2], tv.view.dim()}, layout);
  RequireNoOverlap(to.array, "out", {{&tq.array, "q"}, {&tk.array, "k"}, {&tv.array, "v"}});
  {
    py::gil_scoped_release release;
    std::unique_lock<std::mutex> lock;
    if (state) lock = std::unique_lock(state->mu);
    LinearForward(tq.cview(), tk.cview(), tv.cview(), to.view, o, state ? &state->state : nullptr);
  }
  return out.is_none() ? py::object(to.array) : out;
}

py::tuple LinearAttentionBackward(const ArrayArg& q, const ArrayArg& k, const ArrayArg& v,
                                  const ArrayArg& dout, const std::string& feature_map,
                                  const PerformerFeatures* features, bool causal,
                                  int64_t chunk_size, const std::string& layout_name,
                                  int num_threads, const std::string& backend) {
  const Layout layout = ParseLayout(layout_name);
  const Tensor4 tq = AsTensor4(q, "q", layout);
  const Tensor4 tk = AsTensor4(k, "k", layout);
  const Tensor4 tv = AsTensor4(v, "v", layout);
  const Tensor4 tdo = AsTensor4(dout, "dout", layout);
  const LinearOptions o =
      MakeOptions(feature_map, features, causal, chunk_size, num_threads, backend);
  const Tensor4 dq = NewTensor4(tq.view.shape, layout);
  const Tensor4 dk = NewTensor4(tk.view.shape, layout);
  const Tensor4 dv = NewTensor4(tv.view.shape, layout);
  {
    py::gil_scoped_release release;
    LinearBackward(tq.cview(), tk.cview(), tv.cview(), tdo.cview(), dq.view, dk.view, dv.view, o);
  }
  return py::make_tuple(dq.array, dk.array, dv.array);
}

}  // namespace

void BindLinear(py::module_& m) {
  py::class_<PerformerFeatures>(m, "PerformerFeatures",
                                R"doc(The random projection of Performer's FAVOR+ feature map.

PerformerFeatures(num_features, head_dim_qk, *, kind="orthogonal", seed=0)

  num_features   m, the number of random features (more = closer to softmax attention;
                 the estimate's error shrinks like 1/sqrt(m))
  head_dim_qk    the query/key head size the features are drawn for
  kind           "orthogonal" (blocks of orthogonal directions with chi-distributed norms,
                 lower variance) or "iid" (i.i.d. Gaussian entries)
  seed           the draw is a pure function of the seed

With these features E[phi(q) . phi(k)] = exp(q . k / sqrt(head_dim_qk)): an unbiased estimate
of the softmax kernel.)doc")
      .def(py::init([](int64_t num_features, int64_t head_dim_qk, const std::string& kind,
                       uint64_t seed) {
             return PerformerFeatures(num_features, head_dim_qk, ParseFeatureKind(kind), seed);
           }),
           py::arg("num_features"), py::arg("head_dim_qk"), py::kw_only(),
           py::arg("kind") = "orthogonal", py::arg("seed") = 0)
      .def("redraw", &PerformerFeatures::Redraw, py::arg("seed"),
           "Draws a fresh projection from a new seed (Performer redraws periodically).")
      .def_property_readonly("num_features", &PerformerFeatures::num_features)
      .def_property_readonly("head_dim_qk", &PerformerFeatures::head_dim_qk)
      .def_property_readonly("seed", &PerformerFeatures::seed)
      .def_property_readonly("kind",
                             [](const PerformerFeatures& f) {
                               return f.kind() == RandomFeatureKind::kIid ? "iid" : "orthogonal";
                             })
      .def_property_readonly(
          "w",
          [](const PerformerFeatures& f) {
            py::array_t<float> a(std::vector<py::ssize_t>{f.num_features(), f.head_dim_qk()});
            std::copy(f.w(), f.w() + f.num_features() * f.head_dim_qk(), a.mutable_data());
            return a;
          },
          "A copy of the projection W [num_features, head_dim_qk].")
      .def("__repr__", [](const PerformerFeatures& f) {
        return "attnkit.PerformerFeatures(num_features=" + std::to_string(f.num_features()) +
               ", head_dim_qk=" + std::to_string(f.head_dim_qk()) + ", kind=\"" +
               (f.kind() == RandomFeatureKind::kIid ? "iid" : "orthogonal") +
               "\", seed=" + std::to_string(f.seed()) + ")";
      });

  py::class_<PyLinearState>(m, "LinearState", R"doc(The decode state of causal linear attention.

LinearState(batch, num_heads_kv, num_features, head_dim_v)

  num_features   features.num_features for "favor+", head_dim_qk for "elu+1" and "relu"

Per (batch, kv head) it holds s = sum_j phi(k_j) v_j^T [num_features, head_dim_v] and
z = sum_j phi(k_j) [num_features] over the keys absorbed so far (with a running stabiliser for
FAVOR+). Pass it as linear_attention(..., causal=True, state=st): the call reads it as the prefix
and updates it with the new keys, so prefill then token-by-token decode equals one pass. Its size
does not grow with the sequence.)doc")
      .def(py::init(
               [](int64_t batch, int64_t num_heads_kv, int64_t num_features, int64_t head_dim_v) {
                 auto s = std::make_unique<PyLinearState>();
                 s->state = LinearState(batch, num_heads_kv, num_features, head_dim_v);
                 return s;
               }),
           py::arg("batch"), py::arg("num_heads_kv"), py::arg("num_features"),
           py::arg("head_dim_v"))
      .def(
          "reset",
          [](PyLinearState& s) {
            std::lock_guard lock(s.mu);
            s.state.Reset();
          },
          "Forgets every key (back to the empty state).")
      .def_property_readonly(
          "tokens",
          [](PyLinearState& s) {
            std::lock_guard lock(s.mu);
            return s.state.tokens;
          },
          "Keys absorbed so far.")
      .def_property_readonly(
          "nbytes",
          [](PyLinearState& s) {
            std::lock_guard lock(s.mu);
            return s.state.bytes();
          },
          "Bytes of state (independent of the sequence length).")
      .def_property_readonly(
          "s",
          [](PyLinearState& s) {
            std::lock_guard lock(s.mu);
            const auto& st = s.state;
            return CopyOut(st.s, {st.batch, st.num_heads_kv, st.num_features, st.head_dim_v});
          },
          "A copy of s [batch, num_heads_kv, num_features, head_dim_v].")
      .def_property_readonly(
          "z",
          [](PyLinearState& s) {
            std::lock_guard lock(s.mu);
            const auto& st = s.state;
            return CopyOut(st.z, {st.batch, st.num_heads_kv, st.num_features});
          },
          "A copy of z [batch, num_heads_kv, num_features].")
      .def_property_readonly(
          "max_shift",
          [](PyLinearState& s) {
            std::lock_guard lock(s.mu);
            const auto& st = s.state;
            return CopyOut(st.max_shift, {st.batch, st.num_heads_kv});
          },
          "A copy of the stabiliser [batch, num_heads_kv] (-inf while empty).");

  m.def("linear_attention", &LinearAttention, py::arg("q"), py::arg("k"), py::arg("v"),
        py::kw_only(), py::arg("feature_map") = "favor+", py::arg("features") = nullptr,
        py::arg("causal") = true, py::arg("chunk_size") = 64, py::arg("state") = nullptr,
        py::arg("layout") = "bhsd", py::arg("out") = py::none(), py::arg("num_threads") = 0,
        py::arg("backend") = "auto",
        R"doc(Kernelised linear attention: Performer (FAVOR+) or linear attention with elu+1 / ReLU.

    out_i = phi(q_i)^T (sum_j phi(k_j) v_j^T) / phi(q_i)^T (sum_j phi(k_j))

over all keys j (causal=False) or keys j <= i (causal=True), in time linear in the sequence.

Arguments (float32; layout="bshd" swaps the heads and seqlen axes):
  q    [batch, num_heads_q,  seqlen_q,  head_dim_qk]
  k    [batch, num_heads_kv, seqlen_kv, head_dim_qk]   num_heads_q % num_heads_kv == 0
  v    [batch, num_heads_kv, seqlen_kv, head_dim_v]

Keywords:
  feature_map="favor+"  "favor+" (Performer positive random features: an unbiased estimate of
                        softmax attention), "elu+1" or "relu"
  features=None         an attnkit.PerformerFeatures for "favor+" (required there)
  causal=True           causal form (seqlen_q == seqlen_kv), computed chunk-wise
  chunk_size=64         tokens per chunk of the causal form
  state=None            an attnkit.LinearState (causal only): read as the prefix, updated with the
                        new keys (decode)
  layout="bhsd", out=None, num_threads=0, backend="auto" as in attention()

Returns out [batch, num_heads_q, seqlen_q, head_dim_v]. A row whose normaliser is 0 (possible
with ReLU) gets zeros.)doc");

  m.def(
      "linear_feature_map",
      [](const ArrayArg& x, const std::string& feature_map, const PerformerFeatures* features,
         bool return_shift, const std::string& layout_name) -> py::object {
        const Layout layout = ParseLayout(layout_name);
        const Tensor4 tx = AsTensor4(x, "x", layout);
        const LinearOptions o = MakeOptions(feature_map, features, true, 64, 0, "auto");
        const int64_t m_out = LinearNumFeatures(o, tx.view.dim());
        const auto& s = tx.view.shape;
        const Tensor4 to = NewTensor4({s[0], s[1], s[2], m_out}, layout);
        std::optional<Tensor4> shift;
        if (return_shift) shift = NewTensor4({s[0], s[1], s[2], 1}, layout);
        {
          py::gil_scoped_release release;
          LinearFeatureMap(tx.cview(), to.view, o, shift ? shift->view : TensorView<float>{});
        }
        if (!return_shift) return to.array;
        return py::make_tuple(to.array, shift->array.attr("squeeze")(-1));
      },
      py::arg("x"), py::kw_only(), py::arg("feature_map") = "favor+", py::arg("features") = nullptr,
      py::arg("return_shift") = false, py::arg("layout") = "bhsd",
      R"doc(The feature map phi applied to rows of x, exactly as linear_attention uses it.

  x [batch, heads, tokens, head_dim_qk] float32 -> phi(x) [batch, heads, tokens, num_features]

For "favor+" each row is stabilised by its own maximum: with return_shift=True the result is
(phi, shift) with shift [batch, heads, tokens] such that the unstabilised feature is
phi * exp(shift)[..., None]; then phi(q) . phi(k) estimates exp(q . k / sqrt(head_dim_qk)).)doc");

  m.def("linear_attention_backward", &LinearAttentionBackward, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("dout"), py::kw_only(), py::arg("feature_map") = "favor+",
        py::arg("features") = nullptr, py::arg("causal") = true, py::arg("chunk_size") = 64,
        py::arg("layout") = "bhsd", py::arg("num_threads") = 0, py::arg("backend") = "auto",
        R"doc(Gradients of linear_attention: (dq, dk, dv) given dout, the gradient of its output.

q, k, v and the keywords as in linear_attention (no state: the whole sequence from an empty
state); dout has out's shape. FAVOR+ gradients flow through the positive random features with
the projection W fixed (the stabilisers cancel in the output and are constants). dk and dv are
summed over the query heads that share a kv head. The forward is recomputed inside (chunk-wise
for causal=True). Returns new float32 arrays in `layout`.)doc");
}

}  // namespace attnkit::python

// attnkit.gated_delta_rule: the gated delta rule family (DeltaNet, Gated DeltaNet, Kimi Delta
// Attention, gated linear attention), chunk-wise or token by token, with state in and out; and
// the gates as the models compute them (attnkit.decay_gate, attnkit.write_gate).
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "arrays.h"
#include "attnkit/kernels/recurrent.h"
#include "attnkit/kernels/recurrent_backward.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

DeltaAlgorithm ParseAlgorithm(const std::string& name) {
  if (name == "auto") return DeltaAlgorithm::kAuto;
  if (name == "chunked") return DeltaAlgorithm::kChunked;
  if (name == "recurrent") return DeltaAlgorithm::kRecurrent;
  ValueError("algorithm must be \"auto\", \"chunked\" or \"recurrent\", got \"" + name + "\"");
}

// A per-token gate: 3-D [batch, heads, seqlen] (bshd: [batch, seqlen, heads]) viewed as
// [b, h, s, 1], or, when `allow_channels`, 4-D [.., .., .., channels] as in `layout`.
Tensor4 AsGate(py::handle obj, const char* name, Layout layout, bool allow_channels) {
  py::array a = AsArray(obj, name);
  if (allow_channels && a.ndim() == 4) return AsTensor4(a, name, layout);
  const std::string dims =
      layout == Layout::kBhsd ? "[batch, num_heads_v, seqlen]" : "[batch, seqlen, num_heads_v]";
  Checked<float> c = CheckArray<float>(
      a, name, 3, allow_channels ? dims + " (or 4-D with a last axis of head_dim_qk)" : dims, false,
      false);
  const int h = layout == Layout::kBhsd ? 1 : 2;
  const int s = layout == Layout::kBhsd ? 2 : 1;
  Tensor4 t;
  t.array = c.array;
  t.view.data = c.data;
  t.view.shape = {c.shape[0], c.shape[h], c.shape[s], 1};
  t.view.stride = {c.stride[0], c.stride[h], c.stride[s], 1};
  return t;
}

// The [batch, num_heads_v, head_dim_qk, head_dim_v] state (layout-independent).
Tensor4 AsState(py::handle obj, const char* name, bool writable) {
  Checked<float> c = CheckArray<float>(
      obj, name, 4, "[batch, num_heads_v, head_dim_qk, head_dim_v]", writable, true);
  Tensor4 t;
  t.array = c.array;
  t.view.data = c.data;
  t.view.shape = {c.shape[0], c.shape[1], c.shape[2], c.shape[3]};
  t.view.stride = {c.stride[0], c.stride[1], c.stride[2], 1};
  return t;
}

// The options shared by gated_delta_rule and its backward, checked.
GatedDeltaOptions ParseDeltaOptions(bool delta_rule, bool l2_normalize_qk,
                                    std::optional<double> scale, int64_t chunk_size,
                                    int num_threads, const std::string& backend) {
  GatedDeltaOptions o;
  o.delta_rule = delta_rule;
  o.l2_normalize_qk = l2_normalize_qk;
  if (scale) {
    if (!std::isfinite(*scale) || *scale == 0.0) {
      ValueError("scale must be a finite nonzero number (None = 1/sqrt(head_dim_qk))");
    }
    o.scale = static_cast<float>(*scale);
  }
  o.chunk_size = chunk_size;
  if (num_threads < 0) ValueError("num_threads must be >= 0 (0 = attnkit.get_num_threads())");
  o.num_threads = num_threads;
  o.backend = ParseBackend(backend);
  return o;
}

py::object GatedDeltaRule(const ArrayArg& q, const ArrayArg& k, const ArrayArg& v,
                          const OptArrayArg& log_alpha, const OptArrayArg& beta,
                          const OptArrayArg& initial_state, const OptArrayArg& state,
                          bool return_state, bool delta_rule, bool l2_normalize_qk,
                          std::optional<double> scale, int64_t chunk_size,
                          const std::string& algorithm, const std::string& layout_name,
                          const OptArrayArg& out_arg, int num_threads, const std::string& backend) {
  const py::object& out = out_arg;
  const Layout layout = ParseLayout(layout_name);
  const Tensor4 tq = AsTensor4(q, "q", layout);
  const Tensor4 tk = AsTensor4(k, "k", layout);
  const Tensor4 tv = AsTensor4(v, "v", layout);
  GatedDeltaOptions o =
      ParseDeltaOptions(delta_rule, l2_normalize_qk, scale, chunk_size, num_threads, backend);
  o.algorithm = ParseAlgorithm(algorithm);

  std::optional<Tensor4> ta, tb;
  if (!log_alpha.obj.is_none()) ta = AsGate(log_alpha.obj, "log_alpha", layout, true);
  if (!beta.obj.is_none()) tb = AsGate(beta.obj, "beta", layout, false);
  const auto& vs = tv.view.shape;
  const Tensor4 to = OutputTensor4(out, "out", {vs[0], vs[1], vs[2], vs[3]}, layout);
  RequireNoOverlap(to.array, "out", {{&tq.array, "q"}, {&tk.array, "k"}, {&tv.array, "v"}});

  // The state: updated in place (state=), or a fresh copy of initial_state / zeros.
  if (!state.obj.is_none() && !initial_state.obj.is_none()) {
    ValueError(
        "give either state= (updated in place) or initial_state= (left unchanged), not both");
  }
  std::optional<Tensor4> ts;
  const std::array<int64_t, 4> state_shape = {vs[0], vs[1], tq.view.dim(), vs[3]};
  if (!state.obj.is_none()) {
    ts = AsState(state.obj, "state", true);
    RequireNoOverlap(ts->array, "state",
                     {{&tq.array, "q"}, {&tk.array, "k"}, {&tv.array, "v"}, {&to.array, "out"}});
  } else if (!initial_state.obj.is_none()) {
    const Tensor4 init = AsState(initial_state.obj, "initial_state", false);
    ts = AsState(py::array_t<float>(init.array.attr("copy")()), "state", true);
  } else if (return_state) {
    py::array_t<float> zeros(std::vector<py::ssize_t>(state_shape.begin(), state_shape.end()));
    std::fill(zeros.mutable_data(), zeros.mutable_data() + zeros.size(), 0.0f);
    ts = AsState(zeros, "state", true);
  }
  if (ts && ts->view.shape != state_shape) {
    ValueError(std::string(state.obj.is_none() ? "initial_state" : "state") + " must have shape (" +
               std::to_string(state_shape[0]) + ", " + std::to_string(state_shape[1]) + ", " +
               std::to_string(state_shape[2]) + ", " + std::to_string(state_shape[3]) +
               ") = [batch, num_heads_v, head_dim_qk, head_dim_v]");
  }
  {
    py::gil_scoped_release release;
    GatedDeltaForward(tq.cview(), tk.cview(), tv.cview(),
                      ta ? ta->cview() : TensorView<const float>{},
                      tb ? tb->cview() : TensorView<const float>{}, to.view,
                      ts ? ts->view : TensorView<float>{}, o);
  }
  py::object result = out.is_none() ? py::object(to.array) : out;
  if (!return_state) return result;
  return py::make_tuple(result, state.obj.is_none() ? py::object(ts->array) : state.obj);
}

// A new float32 array shaped like `like` (a gate as given), viewed as a gate.
Tensor4 NewGateLike(const Tensor4& like, const char* name, Layout layout) {
  py::array a = py::array_t<float>(
      std::vector<py::ssize_t>(like.array.shape(), like.array.shape() + like.array.ndim()));
  return AsGate(a, name, layout, true);
}

py::tuple GatedDeltaRuleBackward(const ArrayArg& q, const ArrayArg& k, const ArrayArg& v,
                                 const ArrayArg& dout, const OptArrayArg& log_alpha,
                                 const OptArrayArg& beta, const OptArrayArg& initial_state,
                                 const OptArrayArg& dfinal_state, bool delta_rule,
                                 bool l2_normalize_qk, std::optional<double> scale,
                                 int64_t chunk_size, const std::string& layout_name,
                                 int num_threads, const std::string& backend) {
  const Layout layout = ParseLayout(layout_name);
  const Tensor4 tq = AsTensor4(q, "q", layout);
  const Tensor4 tk = AsTensor4(k, "k", layout);
  const Tensor4 tv = AsTensor4(v, "v", layout);
  const Tensor4 tdo = AsTensor4(dout, "dout", layout);
  const GatedDeltaOptions o =
      ParseDeltaOptions(delta_rule, l2_normalize_qk, scale, chunk_size, num_threads, backend);
  std::optional<Tensor4> ta, tb, ts, tfs;
  if (!log_alpha.obj.is_none()) ta = AsGate(log_alpha.obj, "log_alpha", layout, true);
  if (!beta.obj.is_none()) tb = AsGate(beta.obj, "beta", layout, false);
  if (!initial_state.obj.is_none()) ts = AsState(initial_state.obj, "initial_state", false);
  if (!dfinal_state.obj.is_none()) tfs = AsState(dfinal_state.obj, "dfinal_state", false);
  GatedDeltaGrads g;
  const Tensor4 dq = NewTensor4(tq.view.shape, layout);
  const Tensor4 dk = NewTensor4(tk.view.shape, layout);
  const Tensor4 dv = NewTensor4(tv.view.shape, layout);
  g.dq = dq.view, g.dk = dk.view, g.dv = dv.view;
  std::optional<Tensor4> dla, dbeta;
  if (ta) g.dlog_alpha = (dla = NewGateLike(*ta, "dlog_alpha", layout))->view;
  if (tb && delta_rule) g.dbeta = (dbeta = NewGateLike(*tb, "dbeta", layout))->view;
  const auto& vs = tv.view.shape;
  py::array_t<float> dstate(std::vector<py::ssize_t>{vs[0], vs[1], tq.view.dim(), vs[3]});
  const Tensor4 tds = AsState(dstate, "dstate", true);
  g.dstate = tds.view;
  {
    py::gil_scoped_release release;
    GatedDeltaBackward(
        tq.cview(), tk.cview(), tv.cview(), ta ? ta->cview() : TensorView<const float>{},
        tb ? tb->cview() : TensorView<const float>{}, ts ? ts->cview() : TensorView<const float>{},
        tdo.cview(), tfs ? tfs->cview() : TensorView<const float>{}, g, o);
  }
  return py::make_tuple(dq.array, dk.array, dv.array, dla ? py::object(dla->array) : py::none(),
                        dbeta ? py::object(dbeta->array) : py::none(), dstate);
}

}  // namespace

void BindRecurrent(py::module_& m) {
  m.def(
      "gated_delta_rule", &GatedDeltaRule, py::arg("q"), py::arg("k"), py::arg("v"), py::kw_only(),
      py::arg("log_alpha") = py::none(), py::arg("beta") = py::none(),
      py::arg("initial_state") = py::none(), py::arg("state") = py::none(),
      py::arg("return_state") = false, py::arg("delta_rule") = true,
      py::arg("l2_normalize_qk") = true, py::arg("scale") = py::none(), py::arg("chunk_size") = 64,
      py::arg("algorithm") = "auto", py::arg("layout") = "bhsd", py::arg("out") = py::none(),
      py::arg("num_threads") = 0, py::arg("backend") = "auto",
      R"doc(The gated delta rule: DeltaNet, Gated DeltaNet, Kimi Delta Attention (KDA), gated linear attention.

A matrix state S [head_dim_qk, head_dim_v] per (batch, value head), per token t (q_t, k_t
L2-normalised, q_t scaled by `scale`):
    S <- diag(alpha_t) S                       alpha_t = exp(log_alpha_t), scalar or per channel
    S <- S + beta_t k_t (v_t - S^T k_t)^T      (delta_rule=False: S <- S + k_t v_t^T)
    o_t = S^T q_t

Arguments (float32; layout="bshd" swaps the heads and seqlen axes of q, k, v, out and the gates):
  q          [batch, num_heads_qk, seqlen, head_dim_qk]
  k          [batch, num_heads_qk, seqlen, head_dim_qk]
  v          [batch, num_heads_v,  seqlen, head_dim_v]   num_heads_v % num_heads_qk == 0 (value
             head h reads q/k head h // (num_heads_v // num_heads_qk))
Keywords:
  log_alpha=None   decay in log space, finite and <= 0: [batch, num_heads_v, seqlen] (scalar:
                   Gated DeltaNet) or [batch, num_heads_v, seqlen, head_dim_qk] (per channel:
                   KDA); None = no decay (DeltaNet)
  beta=None        write strength in [0, 1], [batch, num_heads_v, seqlen]; required with the
                   delta rule, must be None without it
  initial_state=None  [batch, num_heads_v, head_dim_qk, head_dim_v], the state before token 0
                   (left unchanged); None = zeros
  state=None       the same shape, read as the initial state and overwritten with the final one
                   (in place: no copy per decode step); excludes initial_state
  return_state=False  also return the final state: (out, state)
  delta_rule=True  False: gated linear attention (no beta)
  l2_normalize_qk=True  L2-normalise q and k rows inside the kernel (as the models do)
  scale=None       on q after normalisation; None = 1 / sqrt(head_dim_qk)
  chunk_size=64    tokens per chunk of the chunk-wise (WY / UT) algorithm
  algorithm="auto" "chunked" (prefill), "recurrent" (token by token, as in decode) or "auto"
  layout="bhsd", out=None, num_threads=0, backend="auto" as in attention()

Returns out [batch, num_heads_v, seqlen, head_dim_v], or (out, final_state). Running T tokens,
then M more from the returned state, equals one pass over T + M tokens.)doc");

  m.def(
      "decay_gate",
      [](const ArrayArg& a, const ArrayArg& a_log, const ArrayArg& dt_bias,
         const std::string& layout_name) {
        const Layout layout = ParseLayout(layout_name);
        const Tensor4 ta = AsGate(a, "a", layout, true);
        const int64_t heads = ta.view.heads(), width = ta.view.dim();
        const auto alog = AsVector(a_log, "a_log", heads);
        const auto bias = AsVector(dt_bias, "dt_bias", heads * width);
        if (!alog || !bias) TypeError("decay_gate: a_log and dt_bias must be arrays, not None");
        py::array result = py::array_t<float>(
            std::vector<py::ssize_t>(ta.array.shape(), ta.array.shape() + ta.array.ndim()));
        const Tensor4 tl = AsGate(result, "log_alpha", layout, true);
        {
          py::gil_scoped_release release;
          ComputeDecayGate(ta.cview(), *alog, *bias, tl.view);
        }
        return result;
      },
      py::arg("a"), py::arg("a_log"), py::arg("dt_bias"), py::kw_only(), py::arg("layout") = "bhsd",
      R"doc(The decay gate as Gated DeltaNet / KDA layers compute it from their projection a:

    log_alpha = -exp(a_log[h]) * softplus(a + dt_bias[h, c])

  a        [batch, num_heads_v, seqlen] (scalar decay) or [.., head_dim_qk] (per channel)
  a_log    [num_heads_v];  dt_bias [num_heads_v * width] (width 1 or head_dim_qk)
Returns log_alpha with a's shape, ready for gated_delta_rule(log_alpha=...).)doc");

  m.def(
      "write_gate",
      [](const ArrayArg& b, const std::string& layout_name) {
        const Layout layout = ParseLayout(layout_name);
        const Tensor4 tb = AsGate(b, "b", layout, false);
        py::array result = py::array_t<float>(
            std::vector<py::ssize_t>(tb.array.shape(), tb.array.shape() + tb.array.ndim()));
        const Tensor4 tr = AsGate(result, "beta", layout, false);
        {
          py::gil_scoped_release release;
          ComputeWriteGate(tb.cview(), tr.view);
        }
        return result;
      },
      py::arg("b"), py::kw_only(), py::arg("layout") = "bhsd",
      R"doc(The write strength beta = sigmoid(b); b [batch, num_heads_v, seqlen] -> beta, same shape.)doc");

  m.def("gated_delta_rule_backward", &GatedDeltaRuleBackward, py::arg("q"), py::arg("k"),
        py::arg("v"), py::arg("dout"), py::kw_only(), py::arg("log_alpha") = py::none(),
        py::arg("beta") = py::none(), py::arg("initial_state") = py::none(),
        py::arg("dfinal_state") = py::none(), py::arg("delta_rule") = true,
        py::arg("l2_normalize_qk") = true, py::arg("scale") = py::none(),
        py::arg("chunk_size") = 64, py::arg("layout") = "bhsd", py::arg("num_threads") = 0,
        py::arg("backend") = "auto",
        R"doc(Gradients of gated_delta_rule, computed chunk-wise (WY / UT representation).

q, k, v, log_alpha, beta, initial_state and the keywords as in gated_delta_rule; dout has out's
shape; dfinal_state=None is the gradient of the final state (None = 0). The forward is
recomputed inside, keeping only one state per chunk.

Returns (dq, dk, dv, dlog_alpha, dbeta, dinitial_state): new float32 arrays shaped like their
inputs (dq, dk summed over the value heads sharing a q/k head); dlog_alpha is None without
log_alpha, dbeta None without the delta rule; dinitial_state
[batch, num_heads_v, head_dim_qk, head_dim_v] is the gradient of the initial state (also when it
was None, i.e. zeros).)doc");
}

}  // namespace attnkit::python

// attnkit.attention_backward: gradients of attnkit.attention (the dense engine's backward).
#include <pybind11/stl.h>

#include <optional>
#include <string>

#include "arrays.h"
#include "attnkit/kernels/dense_backward.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

py::tuple AttentionBackward(const ArrayArg& q, const ArrayArg& k, const ArrayArg& v,
                            const ArrayArg& out, const ArrayArg& lse, const ArrayArg& dout,
                            bool causal, const WindowArg& window, const OptMaskArg& mask,
                            std::optional<double> scale, std::optional<double> softcap,
                            const OptArrayArg& sinks, const OptArrayArg& alibi_slopes,
                            const std::string& layout_name, std::optional<int64_t> q_start,
                            int64_t k_start, int num_threads, const std::string& backend) {
  const Layout layout = ParseLayout(layout_name);
  const Tensor4 tq = AsTensor4(q, "q", layout);
  const Tensor4 tk = AsTensor4(k, "k", layout);
  const Tensor4 tv = AsTensor4(v, "v", layout);
  const Tensor4 to = AsTensor4(out, "out", layout);
  const Tensor4 tl = AsLse(lse, "lse");
  const Tensor4 tdo = AsTensor4(dout, "dout", layout);
  ScoreArgs args =
      ParseScoreArgs(tq.view.heads(), scale, softcap, sinks, alibi_slopes, num_threads, backend);
  args.mask = CombineMasks(causal, window, mask);
  DenseOptions o = args.Options();
  o.k_start = k_start;
  if (q_start) o.q_start = *q_start;
  // The C++ checks name every bad shape; the new gradients take the inputs' shapes.
  const Tensor4 dq = NewTensor4(tq.view.shape, layout);
  const Tensor4 dk = NewTensor4(tk.view.shape, layout);
  const Tensor4 dv = NewTensor4(tv.view.shape, layout);
  py::array_t<float> dsinks(args.sinks ? static_cast<py::ssize_t>(args.sinks->size()) : 0);
  DenseGrads grads{dq.view, dk.view, dv.view, args.sinks ? dsinks.mutable_data() : nullptr};
  {
    py::gil_scoped_release release;
    DenseBackward(tq.cview(), tk.cview(), tv.cview(), to.cview(), tl.cview(), tdo.cview(), grads,
                  o);
  }
  if (args.sinks) return py::make_tuple(dq.array, dk.array, dv.array, dsinks);
  return py::make_tuple(dq.array, dk.array, dv.array);
}

}  // namespace

void BindDenseBackward(py::module_& m) {
  m.def(
      "attention_backward", &AttentionBackward, py::arg("q"), py::arg("k"), py::arg("v"),
      py::arg("out"), py::arg("lse"), py::arg("dout"), py::kw_only(), py::arg("causal") = false,
      py::arg("window") = py::none(), py::arg("mask") = py::none(), py::arg("scale") = py::none(),
      py::arg("softcap") = py::none(), py::arg("sinks") = py::none(),
      py::arg("alibi_slopes") = py::none(), py::arg("layout") = "bhsd",
      py::arg("q_start") = py::none(), py::arg("k_start") = 0, py::arg("num_threads") = 0,
      py::arg("backend") = "auto",
      R"doc(Gradients of attnkit.attention, flash-style (no seqlen_q x seqlen_kv matrix is stored).

Given the forward's inputs, its output `out` and log-sum-exp `lse`
(attnkit.attention(..., return_lse=True)) and the gradient `dout` of a loss with respect to
`out`, returns (dq, dk, dv), or (dq, dk, dv, dsinks) when `sinks` is given. dk and dv are summed
over the query heads that share each key/value head (GQA / MQA). Probabilities are recomputed
from `lse` tile by tile (FlashAttention-2's backward); the result does not depend on the thread
count.

Arguments (float32 arrays; with layout="bshd" swap the heads and seqlen axes):
  q, k, v   exactly as given to attention()
  out       [batch, num_heads_q, seqlen_q, head_dim_v]   the forward's output
  lse       [batch, num_heads_q, seqlen_q]                the forward's log-sum-exp
  dout      [batch, num_heads_q, seqlen_q, head_dim_v]   d loss / d out
Keywords: the same as attention() (causal, window, mask, scale, softcap, sinks, alibi_slopes,
layout, q_start, k_start, num_threads, backend), and they must be the forward's.

Raises ValueError naming the argument for mismatched shapes (an lse of another call's shape, a
dout of the wrong shape) or bad options.

Example:
  >>> out, lse = attnkit.attention(q, k, v, causal=True, return_lse=True)
  >>> dq, dk, dv = attnkit.attention_backward(q, k, v, out, lse, dout, causal=True)
)doc");
}

}  // namespace attnkit::python

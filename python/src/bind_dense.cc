// attnkit.attention (the dense engine: exact softmax attention under a mask) and
// attnkit.merge_attention (exact combination of results over disjoint key sets).
#include <pybind11/stl.h>

#include <cmath>
#include <optional>
#include <string>
#include <vector>

#include "arrays.h"
#include "attnkit/kernels/dense.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

std::string Shape(const py::array& a) {
  return py::str(py::tuple(py::cast(std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()))))
      .cast<std::string>();
}

// Shape agreement of q, k, v, reported in the caller's layout (the C++ checks repeat these).
void CheckQkv(const Tensor4& q, const Tensor4& k, const Tensor4& v, Layout layout) {
  const std::string shapes = ": q " + Shape(q.array) + ", k " + Shape(k.array) + ", v " +
                             Shape(v.array) + " (layout " +
                             DescribeShape(layout, "batch", "heads", "seqlen", "head_dim") + ")";
  if (k.view.batch() != q.view.batch() || v.view.batch() != q.view.batch()) {
    ValueError("q, k and v must have the same batch" + shapes);
  }
  if (k.view.heads() != v.view.heads()) ValueError("k and v must have the same heads" + shapes);
  if (q.view.heads() % k.view.heads() != 0) {
    ValueError("num_heads_q (q's heads, " + std::to_string(q.view.heads()) +
               ") must be a multiple of num_heads_kv (k's heads, " +
               std::to_string(k.view.heads()) + ")" + shapes);
  }
  if (k.view.tokens() != v.view.tokens()) ValueError("k and v must have the same seqlen" + shapes);
  if (k.view.dim() != q.view.dim()) {
    ValueError("q and k must have the same head_dim (head_dim_qk)" + shapes);
  }
}

py::object Attention(const ArrayArg& q, const ArrayArg& k, const ArrayArg& v, bool causal,
                     const WindowArg& window, const OptMaskArg& mask, std::optional<double> scale,
                     std::optional<double> softcap, const OptArrayArg& sinks,
                     const OptArrayArg& alibi_slopes, bool return_lse, bool return_stats,
                     const std::string& layout_name, const OptArrayArg& out_arg,
                     std::optional<int64_t> q_start, int64_t k_start, int num_threads,
                     const std::string& backend) {
  const py::object& out = out_arg;
  const Layout layout = ParseLayout(layout_name);
  const Tensor4 tq = AsTensor4(q, "q", layout);
  const Tensor4 tk = AsTensor4(k, "k", layout);
  const Tensor4 tv = AsTensor4(v, "v", layout);
  CheckQkv(tq, tk, tv, layout);
  ScoreArgs args =
      ParseScoreArgs(tq.view.heads(), scale, softcap, sinks, alibi_slopes, num_threads, backend);
  args.mask = CombineMasks(causal, window, mask);
  const auto& qs = tq.view.shape;
  const Tensor4 to = OutputTensor4(out, "out", {qs[0], qs[1], qs[2], tv.view.dim()}, layout);
  std::optional<Tensor4> tl;
  if (return_lse) tl = NewLse(qs[0], qs[1], qs[2]);
  DenseOptions o = args.Options();
  o.k_start = k_start;
  if (q_start) o.q_start = *q_start;
  DenseStats stats;
  if (return_stats) o.stats = &stats;
  {
    py::gil_scoped_release release;
    DenseForward(tq.cview(), tk.cview(), tv.cview(), to.view, o,
                 tl ? tl->view : TensorView<float>{});
  }
  py::object result = out.is_none() ? py::object(to.array) : out;
  if (!return_lse && !return_stats) return result;
  py::list parts;
  parts.append(result);
  if (return_lse) parts.append(tl->array);
  if (return_stats) {
    py::dict d;
    d["tiles_total"] = stats.tiles_total;
    d["tiles_skipped"] = stats.tiles_skipped;
    d["tiles_full"] = stats.tiles_full;
    d["tiles_partial"] = stats.tiles_partial;
    d["block_q"] = stats.block_q;
    d["block_kv"] = stats.block_kv;
    parts.append(d);
  }
  return py::tuple(parts);
}

py::tuple Merge(const py::sequence& outs, const py::sequence& lses, const std::string& layout_name,
                const OptArrayArg& out_arg) {
  const py::object& out = out_arg;
  const Layout layout = ParseLayout(layout_name);
  const size_t n = py::len(outs);
  if (n == 0) ValueError("merge_attention: outs is empty");
  if (py::len(lses) != n) {
    ValueError("merge_attention: outs and lses must have the same length, got " +
               std::to_string(n) + " and " + std::to_string(py::len(lses)));
  }
  std::vector<Tensor4> to, tl;
  std::vector<TensorView<const float>> ov, lv;
  for (size_t i = 0; i < n; ++i) {
    const std::string on = "outs[" + std::to_string(i) + "]";
    const std::string ln = "lses[" + std::to_string(i) + "]";
    to.push_back(AsTensor4(outs[i], on.c_str(), layout));
    tl.push_back(AsLse(lses[i], ln.c_str()));
    const auto& s0 = to[0].view.shape;
    if (to[i].view.shape != s0) {
      ValueError("merge_attention: " + on + " has shape " + Shape(to[i].array) +
                 " but outs[0] has " + Shape(to[0].array));
    }
    const auto& ls = tl[i].view.shape;
    if (ls[0] != s0[0] || ls[1] != s0[1] || ls[2] != s0[2]) {
      ValueError("merge_attention: " + ln + " must be [batch, num_heads_q, seqlen_q] = [" +
                 std::to_string(s0[0]) + ", " + std::to_string(s0[1]) + ", " +
                 std::to_string(s0[2]) + "], got " + Shape(tl[i].array));
    }
    ov.push_back(to[i].cview());
    lv.push_back(tl[i].cview());
  }
  const auto& s0 = to[0].view.shape;
  const Tensor4 merged = OutputTensor4(out, "out", s0, layout);
  const Tensor4 lse = NewLse(s0[0], s0[1], s0[2]);
  {
    py::gil_scoped_release release;
    MergeAttention(ov, lv, merged.view, lse.view);
  }
  return py::make_tuple(out.is_none() ? py::object(merged.array) : out, lse.array);
}

}  // namespace

DenseOptions ScoreArgs::Options() const {
  DenseOptions o;
  o.scale = scale;
  o.softcap = softcap;
  if (sinks) o.sinks = *sinks;
  if (alibi_slopes) o.alibi_slopes = *alibi_slopes;
  o.mask = mask.get();
  o.num_threads = num_threads;
  o.backend = backend;
  return o;
}

Backend ParseBackend(const std::string& backend) {
  if (backend == "auto") return Backend::kAuto;
  if (backend == "reference") return Backend::kReference;
  ValueError("backend must be \"auto\" or \"reference\", got \"" + backend + "\"");
}

ScoreArgs ParseScoreArgs(int64_t num_heads_q, std::optional<double> scale,
                         std::optional<double> softcap, const py::object& sinks,
                         const py::object& alibi_slopes, int num_threads,
                         const std::string& backend) {
  ScoreArgs a;
  if (scale) {
    if (!std::isfinite(*scale) || *scale == 0.0) {
      ValueError("scale must be a finite nonzero number (None = 1/sqrt(head_dim_qk)), got " +
                 std::to_string(*scale));
    }
    a.scale = static_cast<float>(*scale);
  }
  if (softcap) {
    if (!std::isfinite(*softcap) || *softcap < 0.0) {
      ValueError("softcap must be a finite number >= 0 (None or 0 = off), got " +
                 std::to_string(*softcap));
    }
    a.softcap = static_cast<float>(*softcap);
  }
  a.sinks = AsVector(sinks, "sinks", num_heads_q);
  a.alibi_slopes = AsVector(alibi_slopes, "alibi_slopes", num_heads_q);
  if (num_threads < 0) {
    ValueError("num_threads must be >= 0 (0 = attnkit.get_num_threads()), got " +
               std::to_string(num_threads));
  }
  a.num_threads = num_threads;
  a.backend = ParseBackend(backend);
  return a;
}

void BindDense(py::module_& m) {
  m.def(
      "attention", &Attention, py::arg("q"), py::arg("k"), py::arg("v"), py::kw_only(),
      py::arg("causal") = false, py::arg("window") = py::none(), py::arg("mask") = py::none(),
      py::arg("scale") = py::none(), py::arg("softcap") = py::none(), py::arg("sinks") = py::none(),
      py::arg("alibi_slopes") = py::none(), py::arg("return_lse") = false,
      py::arg("return_stats") = false, py::arg("layout") = "bhsd", py::arg("out") = py::none(),
      py::arg("q_start") = py::none(), py::arg("k_start") = 0, py::arg("num_threads") = 0,
      py::arg("backend") = "auto",
      R"doc(Exact softmax attention, computed flash-style (no seqlen_q x seqlen_kv matrix is stored).

    out = softmax(mask(score_mod(scale * q @ k^T))) @ v

Arguments (float32 arrays; with layout="bshd" swap the heads and seqlen axes):
  q    [batch, num_heads_q,  seqlen_q,  head_dim_qk]
  k    [batch, num_heads_kv, seqlen_kv, head_dim_qk]
  v    [batch, num_heads_kv, seqlen_kv, head_dim_v]
  num_heads_q must be a multiple of num_heads_kv: each group of num_heads_q / num_heads_kv
  query heads shares one key/value head (MHA when equal, GQA, MQA when num_heads_kv = 1).
  head_dim_v may differ from head_dim_qk (e.g. MLA).

Keywords:
  causal=False      key position <= query position.
  window=None       an int w: causal sliding window of w keys, q - w < k <= q (as model
                    configs write sliding_window); or a pair (left, right):
                    q - left <= k <= q + right, None or -1 = unbounded (FlashAttention's
                    window_size).
  mask=None         an attnkit.Mask (see attnkit.masks). causal, window and mask combine: a
                    pair is attended when all of them allow it.
  scale=None        logit scale; None = 1 / sqrt(head_dim_qk).
  softcap=None      s <- softcap * tanh(s / softcap) after scaling (Gemma 2); None or 0 = off.
  sinks=None        [num_heads_q] one extra logit per head that joins the softmax denominator
                    and adds no value (gpt-oss attention sinks).
  alibi_slopes=None [num_heads_q] adds -slope * |q_pos - k_pos| to every logit (ALiBi).
  return_lse=False  also return the log-sum-exp lse [batch, num_heads_q, seqlen_q] (natural log,
                    over the final logits, sink included), as FlashAttention does.
  return_stats=False also return a dict of the kernel's tile counters: tiles_total,
                    tiles_skipped (empty under the mask, never touched), tiles_full (no
                    per-element mask checks), tiles_partial, block_q, block_kv. A tile is one
                    (query block, key block) pair of one (batch, kv head). Filled by the fast
                    kernel (all zero with backend="reference").
  layout="bhsd"     "bhsd" or "bshd" for q, k, v and out.
  out=None          write into this float32 array [batch, num_heads_q, seqlen_q, head_dim_v]
                    (in `layout`) instead of allocating; it must not overlap q, k or v.
  q_start=None      absolute position of query row 0; default bottom-right alignment
                    k_start + seqlen_kv - seqlen_q (query i sees the keys a decoder's query at
                    that position would see; as in FlashAttention).
  k_start=0         absolute position of key row 0.
  num_threads=0     threads to use; 0 = attnkit.get_num_threads().
  backend="auto"    "auto" (tiled SIMD kernel) or "reference" (plain loops, double
                    accumulation; slow, for checking).

Returns out [batch, num_heads_q, seqlen_q, head_dim_v] (in `layout`; `out` itself if given), or
a tuple (out, lse), (out, stats) or (out, lse, stats) as return_lse / return_stats ask. A query row whose keys are all masked gets zeros and lse = -inf.

No input is copied: any strides work if the last axis is contiguous. Raises TypeError for a
wrong dtype (float32 only) and ValueError for wrong ranks, shapes, strides or options.

Example:
  >>> q = np.random.randn(1, 8, 128, 64).astype(np.float32)
  >>> k = np.random.randn(1, 2, 128, 64).astype(np.float32)   # GQA: 4 query heads per kv head
  >>> out = attnkit.attention(q, k, k, causal=True)           # [1, 8, 128, 64]
)doc");

  m.def(
      "merge_attention", &Merge, py::arg("outs"), py::arg("lses"), py::kw_only(),
      py::arg("layout") = "bhsd", py::arg("out") = py::none(),
      R"doc(Merges attention results over disjoint key sets into the exact result over their union.

    lse = log(sum_i exp(lse_i)),   out = sum_i exp(lse_i - lse) * out_i

Arguments:
  outs   list of float32 arrays [batch, num_heads_q, seqlen_q, head_dim_v] (in `layout`), each
         from attention(..., return_lse=True) over one part of the keys
  lses   list of float32 arrays [batch, num_heads_q, seqlen_q], the matching log-sum-exps
  layout="bhsd"  "bhsd" or "bshd" for outs and out
  out=None       write the merged output here instead of allocating

Returns (out, lse). Attention sinks, if used, must have been passed to exactly one part. This is
how split-KV decoding and ring / context-parallel attention combine their pieces.)doc");
}

}  // namespace attnkit::python

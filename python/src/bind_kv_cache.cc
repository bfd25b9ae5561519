// attnkit.KVCache (contiguous or ring-buffer key/value cache, float32 or bf16 storage) and
// attnkit.decode (attention of new query tokens over a cache, split across threads).
#include <pybind11/stl.h>

#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <variant>

#include "arrays.h"
#include "attnkit/kernels/kv_cache.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

// One cache of either storage type, with a reader/writer lock: decode() may run (GIL released)
// in one thread while another appends, so appends wait for readers to finish and vice versa.
class PyKvCache {
 public:
  PyKvCache(int64_t batch, int64_t num_heads_kv, int64_t head_dim_qk,
            std::optional<int64_t> head_dim_v, std::optional<int64_t> capacity, int64_t window,
            int64_t max_step, const std::string& dtype)
      : dtype_(dtype) {
    const int64_t dv = head_dim_v.value_or(head_dim_qk);
    if (window == 0 && !capacity) {
      ValueError(
          "KVCache: give capacity=<tokens> for a contiguous cache, or window=<keys> for a "
          "sliding-window ring buffer");
    }
    const int64_t cap = capacity.value_or(0);
    if (dtype == "float32") {
      cache_ = std::make_unique<KvCache<float>>(batch, num_heads_kv, head_dim_qk, dv, cap, window,
                                                max_step);
    } else if (dtype == "bf16") {
      cache_ = std::make_unique<KvCache<bf16>>(batch, num_heads_kv, head_dim_qk, dv, cap, window,
                                               max_step);
    } else {
      ValueError("KVCache: dtype must be \"float32\" or \"bf16\", got \"" + dtype + "\"");
    }
  }

  // Calls f(cache) without locking: only for fields fixed at construction.
  template <typename F>
  auto Visit(F&& f) const {
    return std::visit([&](const auto& c) { return f(*c); }, cache_);
  }
  // Calls f(cache) under the shared lock (for fields that append() changes).
  template <typename F>
  auto Read(F&& f) const {
    std::shared_lock lock(mu_);
    return Visit(std::forward<F>(f));
  }

  void Append(const ArrayArg& k, const ArrayArg& v, const std::string& layout_name) {
    const Layout layout = ParseLayout(layout_name);
    const Tensor4 tk = AsTensor4(k, "k", layout);
    const Tensor4 tv = AsTensor4(v, "v", layout);
    py::gil_scoped_release release;
    std::unique_lock lock(mu_);
    std::visit([&](auto& c) { c->Append(tk.cview(), tv.cview()); }, cache_);
  }

  void Clear() {
    py::gil_scoped_release release;
    std::unique_lock lock(mu_);
    std::visit([&](auto& c) { c->Clear(); }, cache_);
  }

  // The held keys and values, oldest first, as new float32 arrays, and the position of row 0.
  py::tuple Contents() const {
    std::shared_lock lock(mu_);
    return Visit([&](const auto& c) {
      const int64_t n = c.stored();
      py::array_t<float> k(
          std::vector<py::ssize_t>{c.batch(), c.num_heads_kv(), n, c.head_dim_qk()});
      py::array_t<float> v(
          std::vector<py::ssize_t>{c.batch(), c.num_heads_kv(), n, c.head_dim_v()});
      const auto kv = MakeBhsd(k.mutable_data(), c.batch(), c.num_heads_kv(), n, c.head_dim_qk());
      const auto vv = MakeBhsd(v.mutable_data(), c.batch(), c.num_heads_kv(), n, c.head_dim_v());
      int64_t row = 0, start = c.length() - n;
      for (const auto& seg : c.Segments()) {
        for (int64_t b = 0; b < c.batch(); ++b) {
          for (int64_t h = 0; h < c.num_heads_kv(); ++h) {
            for (int64_t t = 0; t < seg.k.tokens(); ++t) {
              for (int64_t d = 0; d < c.head_dim_qk(); ++d) {
                kv.at(b, h, row + t, d) = ToFloat(seg.k.at(b, h, t, d));
              }
              for (int64_t d = 0; d < c.head_dim_v(); ++d) {
                vv.at(b, h, row + t, d) = ToFloat(seg.v.at(b, h, t, d));
              }
            }
          }
        }
        row += seg.k.tokens();
      }
      return py::make_tuple(k, v, start);
    });
  }

  py::object Decode(const py::object& q, const py::object& mask, std::optional<double> scale,
                    std::optional<double> softcap, const py::object& sinks,
                    const py::object& alibi_slopes, bool return_lse, const std::string& layout_name,
                    const py::object& out, int num_threads, const std::string& backend) const {
    const Layout layout = ParseLayout(layout_name);
    const Tensor4 tq = AsTensor4(q, "q", layout);
    ScoreArgs args =
        ParseScoreArgs(tq.view.heads(), scale, softcap, sinks, alibi_slopes, num_threads, backend);
    args.mask = CombineMasks(false, py::none(), mask);
    const auto& qs = tq.view.shape;
    const int64_t dv = Visit([](const auto& c) { return c.head_dim_v(); });
    const Tensor4 to = OutputTensor4(out, "out", {qs[0], qs[1], qs[2], dv}, layout);
    RequireNoOverlap(to.array, "out", {{&tq.array, "q"}});
    std::optional<Tensor4> tl;
    if (return_lse) tl = NewLse(qs[0], qs[1], qs[2]);
    const DenseOptions o = args.Options();
    {
      py::gil_scoped_release release;
      std::shared_lock lock(mu_);
      std::visit(
          [&](const auto& c) {
            DenseDecode(tq.cview(), *c, to.view, o, tl ? tl->view : TensorView<float>{});
          },
          cache_);
    }
    py::object result = out.is_none() ? py::object(to.array) : out;
    if (return_lse) return py::make_tuple(result, tl->array);
    return result;
  }

  const std::string& dtype() const { return dtype_; }

 private:
  std::string dtype_;
  std::variant<std::unique_ptr<KvCache<float>>, std::unique_ptr<KvCache<bf16>>> cache_;
  mutable std::shared_mutex mu_;
};

}  // namespace

void BindKvCache(py::module_& m) {
  py::class_<PyKvCache> cls(m, "KVCache", R"doc(A key/value cache for incremental decoding.

KVCache(batch, num_heads_kv, head_dim_qk, head_dim_v=None, *, capacity=None, window=0,
        max_step=1, dtype="float32")

  batch, num_heads_kv     sizes of the cached keys and values
  head_dim_qk             key head size; head_dim_v (default head_dim_qk) value head size
  capacity=None           a contiguous cache holding up to `capacity` tokens; appending past it
                          raises ValueError
  window=0                > 0: a ring buffer for a causal sliding window of `window` keys
                          (window + max_step - 1 slots); its memory stays bounded however long
                          the sequence grows, and decode() applies the window
  max_step=1              the most query tokens one decode() call may bring (ring buffer only)
  dtype="float32"         storage: "float32" or "bf16" (keys/values rounded to bfloat16 when
                          appended; arithmetic stays float32)

Use: cache.append(k, v) with the new tokens' keys and values, then
attnkit.decode(q, cache) for the same new tokens' queries. Decoding token by token this way gives
the same result as one attention(q, k, v, causal=True) call over the whole sequence.
Thread-safe: append() waits for running decode() calls and vice versa.)doc");
  cls.def(py::init<int64_t, int64_t, int64_t, std::optional<int64_t>, std::optional<int64_t>,
                   int64_t, int64_t, const std::string&>(),
          py::arg("batch"), py::arg("num_heads_kv"), py::arg("head_dim_qk"),
          py::arg("head_dim_v") = py::none(), py::kw_only(), py::arg("capacity") = py::none(),
          py::arg("window") = 0, py::arg("max_step") = 1, py::arg("dtype") = "float32")
      .def("append", &PyKvCache::Append, py::arg("k"), py::arg("v"), py::kw_only(),
           py::arg("layout") = "bhsd",
           R"doc(Appends n new tokens: k [batch, num_heads_kv, n, head_dim_qk],
v [batch, num_heads_kv, n, head_dim_v] (float32; layout="bshd" swaps heads and n).
The tokens take positions length ... length + n - 1.)doc")
      .def("clear", &PyKvCache::Clear, "Forgets every token (length becomes 0); keeps the memory.")
      .def(
          "contents", &PyKvCache::Contents,
          R"doc(Returns (k, v, start): copies of the held keys [batch, num_heads_kv, stored, head_dim_qk]
and values [..., head_dim_v] as float32, oldest first, and the position of their first row.)doc")
      .def_property_readonly(
          "length",
          [](const PyKvCache& c) { return c.Read([](const auto& x) { return x.length(); }); },
          "Tokens appended so far (the next token's position).")
      .def_property_readonly(
          "stored",
          [](const PyKvCache& c) { return c.Read([](const auto& x) { return x.stored(); }); },
          "Tokens currently held (a ring buffer keeps only the newest).")
      .def_property_readonly(
          "slots",
          [](const PyKvCache& c) { return c.Visit([](const auto& x) { return x.slots(); }); },
          "Token slots allocated.")
      .def_property_readonly(
          "window",
          [](const PyKvCache& c) { return c.Visit([](const auto& x) { return x.window(); }); })
      .def_property_readonly(
          "max_step",
          [](const PyKvCache& c) { return c.Visit([](const auto& x) { return x.max_step(); }); })
      .def_property_readonly(
          "batch",
          [](const PyKvCache& c) { return c.Visit([](const auto& x) { return x.batch(); }); })
      .def_property_readonly("num_heads_kv",
                             [](const PyKvCache& c) {
                               return c.Visit([](const auto& x) { return x.num_heads_kv(); });
                             })
      .def_property_readonly(
          "head_dim_qk",
          [](const PyKvCache& c) { return c.Visit([](const auto& x) { return x.head_dim_qk(); }); })
      .def_property_readonly(
          "head_dim_v",
          [](const PyKvCache& c) { return c.Visit([](const auto& x) { return x.head_dim_v(); }); })
      .def_property_readonly(
          "nbytes",
          [](const PyKvCache& c) { return c.Visit([](const auto& x) { return x.bytes(); }); },
          "Bytes allocated for keys and values.")
      .def_property_readonly("dtype", &PyKvCache::dtype, "Storage type: \"float32\" or \"bf16\".")
      .def("__len__",
           [](const PyKvCache& c) { return c.Read([](const auto& x) { return x.length(); }); })
      .def("__repr__", [](const PyKvCache& c) {
        return c.Read([&](const auto& x) {
          return "attnkit.KVCache(batch=" + std::to_string(x.batch()) +
                 ", num_heads_kv=" + std::to_string(x.num_heads_kv()) +
                 ", head_dim_qk=" + std::to_string(x.head_dim_qk()) +
                 ", head_dim_v=" + std::to_string(x.head_dim_v()) +
                 (x.window() > 0 ? ", window=" + std::to_string(x.window())
                                 : ", capacity=" + std::to_string(x.slots())) +
                 ", dtype=\"" + c.dtype() + "\", length=" + std::to_string(x.length()) + ")";
        });
      });

  m.def(
      "decode",
      [](const ArrayArg& q, const PyKvCache& cache, const OptMaskArg& mask,
         std::optional<double> scale, std::optional<double> softcap, const OptArrayArg& sinks,
         const OptArrayArg& alibi_slopes, bool return_lse, const std::string& layout,
         const OptArrayArg& out, int num_threads, const std::string& backend) {
        return cache.Decode(q, mask, scale, softcap, sinks, alibi_slopes, return_lse, layout, out,
                            num_threads, backend);
      },
      py::arg("q"), py::arg("cache"), py::kw_only(), py::arg("mask") = py::none(),
      py::arg("scale") = py::none(), py::arg("softcap") = py::none(), py::arg("sinks") = py::none(),
      py::arg("alibi_slopes") = py::none(), py::arg("return_lse") = false,
      py::arg("layout") = "bhsd", py::arg("out") = py::none(), py::arg("num_threads") = 0,
      py::arg("backend") = "auto",
      R"doc(Attention of the n newest tokens' queries over everything in a KVCache.

  q      [batch, num_heads_q, n, head_dim_qk] float32 (layout="bshd": [batch, n, num_heads_q, ...]),
         the queries at positions cache.length - n ... cache.length - 1; their keys and values
         must already have been appended. num_heads_q must be a multiple of num_heads_kv.
  cache  an attnkit.KVCache

Causal among the new tokens; a windowed cache applies its sliding window. Keywords as in
attention(): mask=None (combined with causality), scale=None, softcap=None, sinks=None
[num_heads_q], alibi_slopes=None [num_heads_q], return_lse=False, layout="bhsd", out=None,
num_threads=0, backend="auto".

Returns out [batch, num_heads_q, n, head_dim_v] (or (out, lse) with lse [batch, num_heads_q, n]).
The keys are split across threads and the pieces merged exactly, so batch 1 uses every core.)doc");
}

}  // namespace attnkit::python

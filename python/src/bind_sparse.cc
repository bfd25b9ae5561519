// Sparse attention from Python: the static sparse masks (attnkit.masks.strided, fixed,
// longformer, bigbird, block_bitmap, selection), mask pictures, and DeepSeek Sparse Attention
// (attnkit.lightning_indexer, dsa_select, gather_attention, dsa_attention, IndexerCache).
#include <pybind11/stl.h>

#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "arrays.h"
#include "attnkit/core/checked.h"
#include "attnkit/kernels/gather.h"
#include "attnkit/masks/draw.h"
#include "attnkit/masks/sparse.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

PyMask Wrap(MaskPtr p) { return PyMask{std::move(p)}; }

// Indexer keys cached for decode (bf16), with a lock for append() against running selections.
struct PyIndexerCache {
  std::unique_ptr<IndexerCache> cache;
  int64_t batch = 0, index_dim = 0, capacity = 0;
  mutable std::mutex mu;
};

// A [batch, seqlen, width] float32 array viewed as [batch, 1, seqlen, width] (rows contiguous).
Tensor4 AsRows(py::handle obj, const char* name, const char* dims) {
  Checked<float> c = CheckArray<float>(obj, name, 3, dims, false, true);
  Tensor4 t;
  t.array = c.array;
  t.view.data = c.data;
  t.view.shape = {c.shape[0], 1, c.shape[1], c.shape[2]};
  t.view.stride = {c.stride[0], 0, c.stride[1], 1};
  return t;
}

// Indices: 3-D [batch, seqlen_q, top_k] (shared by every head) or 4-D [batch, num_heads_kv,
// seqlen_q, top_k] in `layout`; int32.
IntTensor4 AsIndices(py::handle obj, Layout layout) {
  py::array a = AsArray(obj, "indices");
  if (a.ndim() == 4) return AsIntTensor4(a, "indices", layout, "top_k");
  Checked<int32_t> c = CheckArray<int32_t>(
      a, "indices", 3, "[batch, seqlen_q, top_k] (or 4-D with a kv-head axis)", false, true);
  IntTensor4 t;
  t.array = c.array;
  t.view.data = c.data;
  t.view.shape = {c.shape[0], 1, c.shape[1], c.shape[2]};
  t.view.stride = {c.stride[0], 0, c.stride[1], 1};
  return t;
}

IndexerOptions MakeIndexerOptions(std::optional<int64_t> q_start, int64_t k_start,
                                  bool reduced_precision, int num_threads,
                                  const std::string& backend) {
  IndexerOptions o;
  if (q_start) o.q_start = *q_start;
  o.k_start = k_start;
  o.reduced_precision = reduced_precision;
  if (num_threads < 0) ValueError("num_threads must be >= 0 (0 = attnkit.get_num_threads())");
  o.num_threads = num_threads;
  o.backend = ParseBackend(backend);
  return o;
}

// Runs f(q_index view, weights view, k_index view) with k_index either an array
// [batch, seqlen_kv, index_dim] or an attnkit.IndexerCache (bf16), GIL released.
template <typename F>
void WithIndexerOperands(const ArrayArg& q_index, const ArrayArg& weights,
                         const py::object& k_index, Layout layout, int64_t* seqlen_kv,
                         Tensor4* tq_out, F&& f) {
  *tq_out = AsTensor4(q_index, "q_index", layout);
  const Tensor4 tw = AsRows(weights, "weights", "[batch, seqlen_q, index_heads]");
  const Tensor4& tq = *tq_out;
  if (py::isinstance<PyIndexerCache>(k_index)) {
    const PyIndexerCache& c = k_index.cast<const PyIndexerCache&>();
    std::lock_guard lock(c.mu);
    if (c.cache->length() == 0) ValueError("k_index: the IndexerCache is empty");
    *seqlen_kv = c.cache->length();
    const TensorView<const bf16> kv = c.cache->view();
    f(tq.cview(), tw.cview(), kv, true);
    return;
  }
  const Tensor4 tk = AsRows(k_index, "k_index", "[batch, seqlen_kv, index_dim]");
  *seqlen_kv = tk.view.tokens();
  f(tq.cview(), tw.cview(), tk.cview(), false);
}

}  // namespace

void BindSparse(py::module_& m) {
  // ------------------------------------------------------------------ masks
  py::module_ masks = m.attr("masks").cast<py::module_>();
  masks.def(
      "strided", [](int64_t stride, int64_t block) { return Wrap(StridedMask(stride, block)); },
      py::arg("stride"), py::arg("block") = 1,
      R"doc(Sparse Transformer "strided" pattern (Child et al. 2019), causal.

With block=1, q sees k iff 0 <= k <= q and (q - k < stride or (q - k) % stride == 0): the
previous `stride` tokens plus every stride-th earlier one. With block=B > 1 the rule applies to
block indices (q // B, k // B), keeping k <= q.)doc");
  masks.def(
      "fixed", [](int64_t block, int64_t summary) { return Wrap(FixedMask(block, summary)); },
      py::arg("block"), py::arg("summary"),
      R"doc(Sparse Transformer "fixed" pattern, causal: q sees k iff 0 <= k <= q and
(k // block == q // block or k % block >= block - summary): its own block plus the last
`summary` positions of every earlier block.)doc");
  masks.def(
      "longformer",
      [](int64_t seqlen, int64_t window, int64_t dilation, int64_t dilated_window,
         std::vector<int64_t> globals, bool causal) {
        LongformerOptions o;
        o.seqlen = seqlen;
        o.window = window;
        o.dilation = dilation;
        o.dilated_window = dilated_window;
        o.globals = std::move(globals);
        o.causal = causal;
        return Wrap(LongformerMask(o));
      },
      py::arg("seqlen"), py::arg("window"), py::kw_only(), py::arg("dilation") = 1,
      py::arg("dilated_window") = 0, py::arg("globals") = std::vector<int64_t>{},
      py::arg("causal") = true,
      R"doc(Longformer (Beltagy et al. 2020) over positions [0, seqlen).

  window          sliding window |q - k| <= window
  dilation, dilated_window  extra taps |q - k| = m * dilation for 1 <= m <= dilated_window
  globals         positions that see, and are seen by, every position
  causal=True     additionally k <= q)doc");
  masks.def(
      "bigbird",
      [](int64_t seqlen, int64_t block, int64_t window_blocks, int64_t global_blocks,
         int64_t random_blocks, uint64_t seed, bool causal) {
        BigBirdOptions o;
        o.seqlen = seqlen;
        o.block = block;
        o.window_blocks = window_blocks;
        o.global_blocks = global_blocks;
        o.random_blocks = random_blocks;
        o.seed = seed;
        o.causal = causal;
        return Wrap(BigBirdMask(o));
      },
      py::arg("seqlen"), py::kw_only(), py::arg("block") = 64, py::arg("window_blocks") = 1,
      py::arg("global_blocks") = 1, py::arg("random_blocks") = 2, py::arg("seed") = 0,
      py::arg("causal") = true,
      R"doc(BigBird (Zaheer et al. 2020) over positions [0, seqlen), in blocks of `block` tokens:
key blocks within window_blocks of the query block, the first global_blocks blocks (which also
see everything), and random_blocks random key blocks per query block (a pure function of seed
and the query block; among earlier blocks when causal).)doc");
  masks.def(
      "block_bitmap",
      [](const ArrayArg& bitmap, int64_t block_q, std::optional<int64_t> block_kv, bool causal) {
        py::array a = AsArray(bitmap, "bitmap");
        if (a.ndim() != 2) ValueError("bitmap must be 2-D [num_blocks_q, num_blocks_kv]");
        const char kind = a.dtype().kind();
        if (kind != 'b' && kind != 'i' && kind != 'u') {
          TypeError("bitmap must hold bools or integers, got dtype " +
                    py::str(a.dtype()).cast<std::string>());
        }
        auto u8 = py::array_t<uint8_t, py::array::c_style | py::array::forcecast>::ensure(
            a.attr("astype")("bool"));
        std::vector<uint8_t> bits(u8.data(), u8.data() + u8.size());
        return Wrap(BlockBitmapMask(block_q, block_kv.value_or(block_q), a.shape(0), a.shape(1),
                                    std::move(bits), causal));
      },
      py::arg("bitmap"), py::arg("block_q"), py::arg("block_kv") = py::none(), py::kw_only(),
      py::arg("causal") = false,
      R"doc(A block layout given directly: q sees k iff bitmap[q // block_q, k // block_kv]
(and k <= q when causal), for q < num_blocks_q * block_q and k < num_blocks_kv * block_kv.

  bitmap    2-D bool/int array [num_blocks_q, num_blocks_kv]
  block_kv  defaults to block_q)doc");
  masks.def(
      "selection",
      [](const ArrayArg& indices, int64_t q_start, int64_t k_start,
         std::optional<int64_t> seqlen_kv) {
        py::object idx_obj = indices;
        if (py::array a = AsArray(indices, "indices"); a.ndim() == 2) {
          idx_obj = a[py::make_tuple(py::none())];  // [seqlen_q, top_k] -> [1, seqlen_q, top_k]
        }
        const IntTensor4 t = AsIndices(idx_obj, Layout::kBhsd);
        if (t.view.batch() != 1 || t.view.heads() != 1) {
          ValueError(
              "selection: indices must hold one list per query ([seqlen_q, top_k], or batch "
              "and heads of 1), got " +
              t.view.ShapeString());
        }
        // The mask keeps a view: hold a private copy alive with it.
        auto copy = std::make_shared<std::vector<int32_t>>();
        const auto& s = t.view.shape;
        copy->resize(static_cast<size_t>(s[2] * s[3]));
        for (int64_t i = 0; i < s[2]; ++i) {
          for (int64_t j = 0; j < s[3]; ++j) {
            const int32_t x = t.view.at(0, 0, i, j);
            // -1 marks an unused slot; anything else must be a key row (of seqlen_kv if given),
            // as gather_attention will require.
            if (x < -1 || (seqlen_kv && x >= *seqlen_kv)) {
              ValueError("selection: indices[" + std::to_string(i) + ", " + std::to_string(j) +
                         "] = " + std::to_string(x) + " is not a key row " +
                         (seqlen_kv ? "of [0, seqlen_kv = " + std::to_string(*seqlen_kv) + ")"
                                    : std::string("(>= 0)")) +
                         " or -1");
            }
            (*copy)[i * s[3] + j] = x;
          }
        }
        const TensorView<const int32_t> view =
            MakeBhsd<const int32_t>(copy->data(), 1, 1, s[2], s[3]);
        MaskPtr inner = SelectionMask(view, q_start, k_start);
        // Aliasing constructor: the mask keeps `copy` alive.
        auto holder = std::make_shared<std::pair<MaskPtr, std::shared_ptr<std::vector<int32_t>>>>(
            inner, copy);
        return Wrap(MaskPtr(holder, holder->first.get()));
      },
      py::arg("indices"), py::arg("q_start"), py::arg("k_start") = 0,
      py::arg("seqlen_kv") = py::none(),
      R"doc(The keys a DSA top-k selection picked, as a mask: query position q_start + i sees key
position k_start + indices[i, j] for every j with indices[i, j] >= 0.

  seqlen_kv  if given, every index must be below it (as gather_attention requires); indices
           below -1 raise ValueError in any case
  indices  int32 [seqlen_q, top_k], or [1, seqlen_q, top_k] / [1, 1, seqlen_q, top_k] (as
           dsa_select returns for batch 1); more batches or heads raise ValueError)doc");

  // ------------------------------------------------------------------ pictures
  auto grid = [](const PyMask& self, int64_t seqlen_q, std::optional<int64_t> seqlen_kv,
                 int64_t max_cells) {
    MaskGrid g;
    {
      py::gil_scoped_release release;
      g = SampleMask(self.ptr.get(), seqlen_q, seqlen_kv.value_or(seqlen_q), max_cells);
    }
    return g;
  };
  py::class_<PyMask> mask_cls = m.attr("Mask");
  mask_cls
      .def(
          "coverage",
          [grid](const PyMask& self, int64_t seqlen_q, std::optional<int64_t> seqlen_kv,
                 int64_t max_cells) {
            const MaskGrid g = grid(self, seqlen_q, seqlen_kv, max_cells);
            py::array_t<float> a(std::vector<py::ssize_t>{g.rows, g.cols});
            std::copy(g.coverage.begin(), g.coverage.end(), a.mutable_data());
            return a;
          },
          py::arg("seqlen_q"), py::arg("seqlen_kv") = py::none(), py::kw_only(),
          py::arg("max_cells") = 256,
          R"doc(A coarse picture: float32 [rows, cols] (at most max_cells each way), the fraction of
(query, key) pairs each cell allows, queries aligned bottom-right. For plotting long sequences.)doc")
      .def(
          "ascii",
          [grid](const PyMask& self, int64_t seqlen_q, std::optional<int64_t> seqlen_kv,
                 int64_t max_cells) {
            return MaskAscii(grid(self, seqlen_q, seqlen_kv, max_cells));
          },
          py::arg("seqlen_q"), py::arg("seqlen_kv") = py::none(), py::kw_only(),
          py::arg("max_cells") = 64,
          "The mask as text: '#' allowed, '.' masked (coarser symbols when cells hold many pairs).")
      .def(
          "svg",
          [grid](const PyMask& self, int64_t seqlen_q, std::optional<int64_t> seqlen_kv,
                 int64_t max_cells, int64_t pixels) {
            return MaskSvg(grid(self, seqlen_q, seqlen_kv, max_cells), pixels);
          },
          py::arg("seqlen_q"), py::arg("seqlen_kv") = py::none(), py::kw_only(),
          py::arg("max_cells") = 256, py::arg("pixels") = 512,
          "The mask as a standalone SVG document (str).");

  // ------------------------------------------------------------------ DSA
  py::class_<PyIndexerCache>(m, "IndexerCache",
                             R"doc(Cached lightning-indexer keys for DSA decoding (stored as bf16).

IndexerCache(batch, index_dim, capacity)
  .append(k_index)   k_index float32 [batch, n, index_dim]; raises past the capacity
  .length            keys appended so far
Pass it as k_index= to lightning_indexer(), dsa_select() or dsa_attention().)doc")
      .def(py::init([](int64_t batch, int64_t index_dim, int64_t capacity) {
             auto c = std::make_unique<PyIndexerCache>();
             c->cache = std::make_unique<IndexerCache>(batch, index_dim, capacity);
             c->batch = batch;
             c->index_dim = index_dim;
             c->capacity = capacity;
             return c;
           }),
           py::arg("batch"), py::arg("index_dim"), py::arg("capacity"))
      .def(
          "append",
          [](PyIndexerCache& c, const ArrayArg& k_index) {
            const Tensor4 t = AsRows(k_index, "k_index", "[batch, n, index_dim]");
            py::gil_scoped_release release;
            std::lock_guard lock(c.mu);
            c.cache->Append(t.cview());
          },
          py::arg("k_index"))
      .def_property_readonly("length",
                             [](const PyIndexerCache& c) {
                               std::lock_guard lock(c.mu);
                               return c.cache->length();
                             })
      .def("__len__", [](const PyIndexerCache& c) {
        std::lock_guard lock(c.mu);
        return c.cache->length();
      });

  m.def(
      "lightning_indexer",
      [](const ArrayArg& q_index, const ArrayArg& weights, const py::object& k_index,
         std::optional<int64_t> q_start, int64_t k_start, bool reduced_precision,
         const std::string& layout_name, int num_threads, const std::string& backend) {
        const Layout layout = ParseLayout(layout_name);
        const IndexerOptions o =
            MakeIndexerOptions(q_start, k_start, reduced_precision, num_threads, backend);
        Tensor4 tq;
        int64_t skv = 0;
        py::array_t<float> scores;
        WithIndexerOperands(
            q_index, weights, k_index, layout, &skv, &tq, [&](auto q, auto w, auto k, bool) {
              scores = py::array_t<float>(std::vector<py::ssize_t>{q.batch(), q.tokens(), skv});
              const TensorView<float> sv =
                  MakeBhsd(scores.mutable_data(), q.batch(), int64_t{1}, q.tokens(), skv);
              py::gil_scoped_release release;
              LightningIndexer(q, w, k, sv, o);
            });
        return scores;
      },
      py::arg("q_index"), py::arg("weights"), py::arg("k_index"), py::kw_only(),
      py::arg("q_start") = py::none(), py::arg("k_start") = 0, py::arg("reduced_precision") = true,
      py::arg("layout") = "bhsd", py::arg("num_threads") = 0, py::arg("backend") = "auto",
      R"doc(DeepSeek Sparse Attention's lightning indexer: I(t, s) = sum_j w[t, j] * relu(q_index[j, t] . k_index[s]).

  q_index  float32 [batch, index_heads, seqlen_q, index_dim] (layout="bshd": heads and seqlen
           swapped)
  weights  float32 [batch, seqlen_q, index_heads]
  k_index  float32 [batch, seqlen_kv, index_dim], or an attnkit.IndexerCache
  q_start=None     position of query row 0; default bottom-right (k_start + seqlen_kv - seqlen_q)
  k_start=0        position of key row 0
  reduced_precision=True  q_index and k_index rounded to bf16, products summed in float32 (as
                   deployed); False: all float32
Returns scores float32 [batch, seqlen_q, seqlen_kv], -inf where the key is in the query's future.)doc");

  m.def(
      "dsa_select",
      [](const ArrayArg& q_index, const ArrayArg& weights, const py::object& k_index, int64_t top_k,
         std::optional<int64_t> q_start, int64_t k_start, bool reduced_precision,
         const std::string& layout_name, int num_threads, const std::string& backend) {
        const Layout layout = ParseLayout(layout_name);
        const IndexerOptions o =
            MakeIndexerOptions(q_start, k_start, reduced_precision, num_threads, backend);
        if (top_k < 1) ValueError("top_k must be >= 1, got " + std::to_string(top_k));
        if (top_k > std::numeric_limits<int32_t>::max()) {
          ValueError("top_k must be <= 2147483647 (indices are int32), got " +
                     std::to_string(top_k));
        }
        Tensor4 tq;
        int64_t skv = 0;
        py::array_t<int32_t> idx;
        WithIndexerOperands(
            q_index, weights, k_index, layout, &skv, &tq, [&](auto q, auto w, auto k, bool) {
              const int64_t count =
                  CheckedProduct({q.batch(), q.tokens(), top_k}, "dsa_select", "top_k");
              RequireFitsInMemory(4.0 * static_cast<double>(count),
                                  "dsa_select: the indices array [batch, seqlen_q, top_k = " +
                                      std::to_string(top_k) + "]");
              idx = py::array_t<int32_t>(std::vector<py::ssize_t>{q.batch(), q.tokens(), top_k});
              const TensorView<int32_t> iv =
                  MakeBhsd(idx.mutable_data(), q.batch(), int64_t{1}, q.tokens(), top_k);
              py::gil_scoped_release release;
              DsaSelect(q, w, k, top_k, iv, o);
            });
        return idx;
      },
      py::arg("q_index"), py::arg("weights"), py::arg("k_index"), py::arg("top_k"), py::kw_only(),
      py::arg("q_start") = py::none(), py::arg("k_start") = 0, py::arg("reduced_precision") = true,
      py::arg("layout") = "bhsd", py::arg("num_threads") = 0, py::arg("backend") = "auto",
      R"doc(The lightning indexer fused with top-k (no seqlen_q x seqlen_kv buffer).

Same operands as lightning_indexer(). Returns int32 indices [batch, seqlen_q, top_k]: per query,
the key rows with the top_k highest scores in increasing order (ties to the lower row), then -1
for unused slots (a query with fewer than top_k visible keys selects them all).)doc");

  m.def(
      "gather_attention",
      [](const ArrayArg& q, const ArrayArg& k, const ArrayArg& v, const ArrayArg& indices,
         std::optional<double> scale, bool return_lse, const std::string& layout_name,
         const OptArrayArg& out_arg, int num_threads, const std::string& backend) -> py::object {
        const py::object& out = out_arg;
        const Layout layout = ParseLayout(layout_name);
        const Tensor4 tq = AsTensor4(q, "q", layout);
        const Tensor4 tk = AsTensor4(k, "k", layout);
        const Tensor4 tv = AsTensor4(v, "v", layout);
        const IntTensor4 ti = AsIndices(indices, layout);
        GatherOptions o;
        const ScoreArgs args = ParseScoreArgs(tq.view.heads(), scale, std::nullopt, py::none(),
                                              py::none(), num_threads, backend);
        o.scale = args.scale;
        o.num_threads = args.num_threads;
        o.backend = args.backend;
        const auto& qs = tq.view.shape;
        const Tensor4 to = OutputTensor4(out, "out", {qs[0], qs[1], qs[2], tv.view.dim()}, layout);
        std::optional<Tensor4> tl;
        if (return_lse) tl = NewLse(qs[0], qs[1], qs[2]);
        {
          py::gil_scoped_release release;
          GatherForward(tq.cview(), tk.cview(), tv.cview(), ti.cview(), to.view, o,
                        tl ? tl->view : TensorView<float>{});
        }
        py::object result = out.is_none() ? py::object(to.array) : out;
        if (return_lse) return py::make_tuple(result, tl->array);
        return result;
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("indices"), py::kw_only(),
      py::arg("scale") = py::none(), py::arg("return_lse") = false, py::arg("layout") = "bhsd",
      py::arg("out") = py::none(), py::arg("num_threads") = 0, py::arg("backend") = "auto",
      R"doc(Exact softmax attention of each query over its own selected keys (DSA's sparse attention).

  q        float32 [batch, num_heads_q,  seqlen_q,  head_dim_qk]
  k        float32 [batch, num_heads_kv, seqlen_kv, head_dim_qk]
  v        float32 [batch, num_heads_kv, seqlen_kv, head_dim_v]   (may be a view of k, as in
           MLA's absorbed form)
  indices  int32 [batch, seqlen_q, top_k] (one list per query shared by every head) or
           [batch, num_heads_kv, seqlen_q, top_k]: key rows of k/v, distinct per row, -1 = unused
  scale=None, return_lse=False, layout="bhsd", out=None, num_threads=0, backend="auto" as in
  attention() (layout also orders a 4-D indices array)
Returns out [batch, num_heads_q, seqlen_q, head_dim_v] (or (out, lse)). A query with no key
gets zeros and lse = -inf.)doc");

  m.def(
      "dsa_attention",
      [](const ArrayArg& q, const ArrayArg& k, const ArrayArg& v, const ArrayArg& q_index,
         const ArrayArg& weights, const py::object& k_index, int64_t top_k,
         std::optional<double> scale, std::optional<int64_t> q_start, int64_t k_start,
         bool return_indices, const std::string& layout, int num_threads,
         const std::string& backend) -> py::object {
        // Looked up per call: a py::object captured in the binding would outlive the interpreter.
        py::module_ self = py::module_::import("attnkit");
        py::object idx = self.attr("dsa_select")(
            q_index, weights, k_index, top_k, py::arg("q_start") = q_start,
            py::arg("k_start") = k_start, py::arg("layout") = layout,
            py::arg("num_threads") = num_threads, py::arg("backend") = backend);
        py::object out = self.attr("gather_attention")(
            q, k, v, idx, py::arg("scale") = scale, py::arg("layout") = layout,
            py::arg("num_threads") = num_threads, py::arg("backend") = backend);
        if (return_indices) return py::make_tuple(out, idx);
        return out;
      },
      py::arg("q"), py::arg("k"), py::arg("v"), py::arg("q_index"), py::arg("weights"),
      py::arg("k_index"), py::arg("top_k"), py::kw_only(), py::arg("scale") = py::none(),
      py::arg("q_start") = py::none(), py::arg("k_start") = 0, py::arg("return_indices") = false,
      py::arg("layout") = "bhsd", py::arg("num_threads") = 0, py::arg("backend") = "auto",
      R"doc(DeepSeek Sparse Attention in one call: dsa_select() then gather_attention().

  q, k, v                  as in gather_attention() (k row j is at position k_start + j)
  q_index, weights, k_index as in lightning_indexer() (k_index: array or IndexerCache)
  top_k                    keys each query attends to
Returns out [batch, num_heads_q, seqlen_q, head_dim_v], or (out, indices) with
return_indices=True.)doc");
}

}  // namespace attnkit::python

// The `attnkit._attnkit` extension (re-exported by the `attnkit` package, python/attnkit/): its
// docstring, error translation, and the calls to every binding file's Bind* function.
#include <pybind11/pybind11.h>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "bindings.h"

namespace py = pybind11;

PYBIND11_MODULE(_attnkit, m) {
  m.doc() = R"doc(attnkit: the attention variants of modern LLMs, exact and fast, on NumPy arrays.

Tensors are float32 NumPy arrays (CPU torch tensors work too: they are read through
numpy.asarray without a copy) of shape [batch, heads, seqlen, head_dim] ("bhsd", as in
torch.nn.functional.scaled_dot_product_attention) or, with layout="bshd",
[batch, seqlen, heads, head_dim] (as in FlashAttention). Inputs are never copied: any strides
work as long as the last (head_dim) axis is contiguous. Kernels run with the GIL released.

Bad input raises TypeError (wrong dtype or type) or ValueError (rank, shapes, strides, options),
with a message naming the argument.

Main entry points:
  attention(q, k, v, *, causal, window, mask, scale, softcap, sinks, alibi_slopes, return_lse)
  attention_backward(q, k, v, out, lse, dout, ...)   gradients (dq, dk, dv[, dsinks])
  merge_attention(outs, lses)            combine attention over disjoint key sets
  KVCache(...), decode(q, cache)         incremental decoding (contiguous or ring buffer)
  masks.causal(), sliding_window(w), window(l, r), chunked(c), strided(s), fixed(b, c),
  longformer(...), bigbird(...), block_bitmap(...), selection(indices)   -> attnkit.Mask
  lightning_indexer, dsa_select, gather_attention, dsa_attention, IndexerCache   (DSA)
  linear_attention, PerformerFeatures, LinearState   (Performer, elu+1, ReLU)
  gated_delta_rule, decay_gate, write_gate   (DeltaNet, Gated DeltaNet, KDA, GLA)
  gqa_block, mla_block, make_layer, model_layer, Stack   (attention blocks with weights)
  kv_cache_bytes, cost, load_model, read_config, catalogue, model_card_svg   (models)
  set_num_threads(n), get_num_threads(), simd_target(), release_scratch_memory()
See docs/python.md and examples/ in the repository.
)doc";

  // attnkit::Error is the library's "bad input" exception: it becomes a ValueError.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const attnkit::Error& e) {
      // A message may quote the caller's bytes (a config that is not UTF-8): decode with
      // "backslashreplace" so the ValueError always carries its message.
      const std::string msg = e.what();
      PyObject* text =
          PyUnicode_DecodeUTF8(msg.data(), static_cast<Py_ssize_t>(msg.size()), "backslashreplace");
      if (text == nullptr) {
        PyErr_Clear();
        PyErr_SetString(PyExc_ValueError, "attnkit: error (message not representable)");
      } else {
        PyErr_SetObject(PyExc_ValueError, text);
        Py_DECREF(text);
      }
    }
  });

  m.attr("__version__") = attnkit::Version();
  attnkit::python::BindRuntime(m);
  attnkit::python::BindMasks(m);
  attnkit::python::BindDense(m);
  attnkit::python::BindDenseBackward(m);
  attnkit::python::BindKvCache(m);
  attnkit::python::BindLinear(m);
  attnkit::python::BindRecurrent(m);
  attnkit::python::BindSparse(m);
  attnkit::python::BindModels(m);
  attnkit::python::BindLayers(m);
  attnkit::python::BindTrain(m);
}

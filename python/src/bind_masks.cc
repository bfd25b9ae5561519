// attnkit.Mask and the attnkit.masks factories (causal, windows, chunks, and / or).
#include <pybind11/numpy.h>
#include <pybind11/stl.h>

#include <optional>
#include <string>
#include <vector>

#include "arrays.h"
#include "attnkit/masks/mask.h"
#include "bindings.h"

namespace attnkit::python {
namespace {

// None or a negative number means "unbounded" (FlashAttention writes -1).
int64_t WindowSide(const py::object& side, const char* what) {
  if (side.is_none()) return kUnbounded;
  if (!py::isinstance<py::int_>(side)) {
    TypeError(std::string("window ") + what + " must be an int or None, got " +
              py::str(py::type::of(side).attr("__name__")).cast<std::string>());
  }
  const int64_t v = IntArg(side, std::string("window ") + what);
  if (v < -1) {
    ValueError(std::string("window ") + what + " must be >= 0, or -1 / None for unbounded, got " +
               std::to_string(v));
  }
  return v < 0 ? kUnbounded : v;
}

const char* TileName(TileKind kind) {
  switch (kind) {
    case TileKind::kEmpty:
      return "empty";
    case TileKind::kFull:
      return "full";
    case TileKind::kPartial:
      return "partial";
  }
  return "partial";
}

PyMask Wrap(MaskPtr p) { return PyMask{std::move(p)}; }

}  // namespace

MaskPtr CombineMasks(bool causal, const py::object& window, const py::object& mask) {
  MaskPtr combined;
  auto add = [&](MaskPtr m) { combined = combined ? AndMask(combined, m) : m; };
  if (causal) add(CausalMask());
  if (!window.is_none()) {
    if (py::isinstance<py::int_>(window)) {
      const int64_t w = IntArg(window, "window");
      if (w < 1) ValueError("window must be >= 1 keys, got " + std::to_string(w));
      add(CausalWindowMask(w));
    } else if (py::isinstance<py::tuple>(window) || py::isinstance<py::list>(window)) {
      py::sequence s = window;
      if (py::len(s) != 2) ValueError("window must be an int or a (left, right) pair");
      add(WindowMask(WindowSide(s[0], "left"), WindowSide(s[1], "right")));
    } else {
      TypeError(
          "window must be None, an int (causal sliding window of that many keys) or a "
          "(left, right) pair, got " +
          py::str(py::type::of(window).attr("__name__")).cast<std::string>());
    }
  }
  if (!mask.is_none()) {
    if (!py::isinstance<PyMask>(mask)) {
      TypeError("mask must be an attnkit.Mask (see attnkit.masks), got " +
                py::str(py::type::of(mask).attr("__name__")).cast<std::string>());
    }
    add(mask.cast<const PyMask&>().ptr);
  }
  return combined;
}

void BindMasks(py::module_& m) {
  py::class_<PyMask>(m, "Mask",
                     R"doc(An attention mask: which key positions each query position may attend to.

Positions are absolute token positions. In attention() the queries are aligned bottom-right:
query row i of seqlen_q queries over seqlen_kv keys sits at position i + seqlen_kv - seqlen_q,
key row j at position j (so one mask serves prefill, chunked prefill and decode).
Build masks with the functions in attnkit.masks; combine them with & (both allow) and | (either
allows). Pass one as attention(..., mask=m). Masks are immutable and thread-safe.)doc")
      .def(
          "allowed",
          [](const PyMask& self, int64_t q, int64_t k) { return self.ptr->Allowed(q, k); },
          py::arg("q"), py::arg("k"), "True when query position q may attend to key position k.")
      .def(
          "describe", [](const PyMask& self) { return self.ptr->Describe(); },
          "A short description such as \"causal\" or \"window(left=127,right=0)\".")
      .def("__repr__",
           [](const PyMask& self) { return "attnkit.Mask(" + self.ptr->Describe() + ")"; })
      .def(
          "density",
          [](const PyMask& self, int64_t seqlen_q, std::optional<int64_t> seqlen_kv) {
            return MaskDensity(self.ptr.get(), seqlen_q, seqlen_kv.value_or(seqlen_q));
          },
          py::arg("seqlen_q"), py::arg("seqlen_kv") = py::none(),
          R"doc(Fraction of (query, key) pairs allowed for seqlen_q queries over seqlen_kv keys
(default seqlen_kv = seqlen_q), queries aligned bottom-right. Exact.)doc")
      .def(
          "classify",
          [](const PyMask& self, int64_t q0, int64_t q1, int64_t k0, int64_t k1) {
            if (q1 <= q0 || k1 <= k0) ValueError("classify: need q0 < q1 and k0 < k1");
            return std::string(TileName(self.ptr->Classify(q0, q1, k0, k1)));
          },
          py::arg("q0"), py::arg("q1"), py::arg("k0"), py::arg("k1"),
          R"doc(Classifies the tile of query positions [q0, q1) x key positions [k0, k1):
"empty" (no pair allowed: the kernel skips it), "full" (every pair allowed) or "partial".)doc")
      .def(
          "to_array",
          [](const PyMask& self, int64_t seqlen_q, std::optional<int64_t> seqlen_kv,
             std::optional<int64_t> q_start, int64_t k_start) {
            const int64_t skv = seqlen_kv.value_or(seqlen_q);
            if (seqlen_q < 1 || skv < 1)
              ValueError("to_array: seqlen_q and seqlen_kv must be >= 1");
            if (static_cast<double>(seqlen_q) * static_cast<double>(skv) > 1e9) {
              ValueError("to_array: seqlen_q * seqlen_kv is over 1e9 elements");
            }
            const int64_t q0 = q_start.value_or(k_start + skv - seqlen_q);
            py::array_t<bool> a({seqlen_q, skv});
            std::vector<uint8_t> allowed(static_cast<size_t>(seqlen_q * skv));
            {
              py::gil_scoped_release release;
              self.ptr->FillTile(q0, q0 + seqlen_q, k_start, k_start + skv, allowed.data());
            }
            bool* out = a.mutable_data();
            for (size_t i = 0; i < allowed.size(); ++i) out[i] = allowed[i] != 0;
            return a;
          },
          py::arg("seqlen_q"), py::arg("seqlen_kv") = py::none(), py::kw_only(),
          py::arg("q_start") = py::none(), py::arg("k_start") = 0,
          R"doc(The mask as a bool array [seqlen_q, seqlen_kv] (True = attend).

seqlen_kv defaults to seqlen_q; key row j is at position k_start + j (default 0); query row i at
q_start + i, where q_start defaults to the bottom-right alignment k_start + seqlen_kv - seqlen_q.)doc")
      .def("__and__", [](const PyMask& a, const PyMask& b) { return Wrap(AndMask(a.ptr, b.ptr)); })
      .def("__or__", [](const PyMask& a, const PyMask& b) { return Wrap(OrMask(a.ptr, b.ptr)); });

  py::module_ masks = m.def_submodule("masks", R"doc(Factories for attnkit.Mask objects.

Every function returns an immutable attnkit.Mask; combine with & and |.)doc");
  masks.def(
      "causal", [] { return Wrap(CausalMask()); }, "Causal mask: k <= q.");
  masks.def(
      "window",
      [](const py::object& left, const py::object& right) {
        return Wrap(WindowMask(WindowSide(left, "left"), WindowSide(right, "right")));
      },
      py::arg("left"), py::arg("right") = 0,
      R"doc(Window mask q - left <= k <= q + right (FlashAttention's window_size=(left, right)).

left, right: int >= 0, or None / -1 for unbounded. right defaults to 0 (causal window).)doc");
  masks.def(
      "sliding_window", [](int64_t window) { return Wrap(CausalWindowMask(window)); },
      py::arg("window"),
      R"doc(Causal sliding window of `window` keys including the query itself: q - window < k <= q.

This is `sliding_window` as model configs write it (Mistral, Gemma, gpt-oss).)doc");
  masks.def(
      "chunked", [](int64_t chunk) { return Wrap(ChunkedLocalMask(chunk)); }, py::arg("chunk"),
      R"doc(Chunked local attention (Llama 4's attention_chunk_size): q // chunk == k // chunk and k <= q.)doc");
  masks.def(
      "all_of",
      [](const std::vector<PyMask>& ms) {
        if (ms.empty()) ValueError("all_of: needs at least one mask");
        MaskPtr r = ms[0].ptr;
        for (size_t i = 1; i < ms.size(); ++i) r = AndMask(r, ms[i].ptr);
        return Wrap(r);
      },
      py::arg("masks"), "Intersection of a list of masks (a pair is allowed when all allow it).");
  masks.def(
      "any_of",
      [](const std::vector<PyMask>& ms) {
        if (ms.empty()) ValueError("any_of: needs at least one mask");
        MaskPtr r = ms[0].ptr;
        for (size_t i = 1; i < ms.size(); ++i) r = OrMask(r, ms[i].ptr);
        return Wrap(r);
      },
      py::arg("masks"), "Union of a list of masks (a pair is allowed when any allows it).");
}

}  // namespace attnkit::python

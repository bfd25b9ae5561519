// NumPy arrays <-> attnkit tensor views for the Python module.
//
// Inputs are read without a copy: a float32 array's data pointer and strides go straight into a
// TensorView, so any layout whose innermost (dim) axis is contiguous works, including transposed
// views and slices. Anything else that NumPy can view (a CPU torch tensor, via __array__) is
// first turned into an array by numpy.asarray, which also shares memory for float32 tensors.
// Bad input raises TypeError (wrong type or dtype) or ValueError (rank, shape, strides) whose
// message names the argument; nothing is copied behind the caller's back.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <array>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "attnkit/core/tensor.h"

namespace attnkit::python {

namespace py = pybind11;

// How a 4-D array's axes are ordered. attnkit's canonical order is bhsd.
enum class Layout {
  kBhsd,  // [batch, heads, seqlen, dim] (PyTorch scaled_dot_product_attention)
  kBshd,  // [batch, seqlen, heads, dim] (FlashAttention, most inference engines)
};

// Parses "bhsd" / "bshd"; raises ValueError otherwise.
Layout ParseLayout(const std::string& layout);

// The [batch, heads, seqlen, dim] shape written in `layout`'s axis order.
std::array<int64_t, 4> ToLayout(const std::array<int64_t, 4>& bhsd, Layout layout);
// "[batch, heads, seqlen, dim]" or "[batch, seqlen, heads, dim]" with the given dimension names.
std::string DescribeShape(Layout layout, const char* batch, const char* heads, const char* seqlen,
                          const char* dim);

// An array kept alive together with its view in attnkit's [b, h, s, d] order.
template <typename T>
struct Tensor4T {
  py::array array;
  TensorView<T> view;
  TensorView<const T> cview() const { return view; }
};
using Tensor4 = Tensor4T<float>;
using IntTensor4 = Tensor4T<int32_t>;

// An array checked for dtype T (native byte order), rank, non-empty axes, alignment and
// non-negative strides; element strides (0 for size-1 axes).
template <typename T>
struct Checked {
  py::array array;
  T* data = nullptr;
  std::vector<int64_t> shape, stride;
};
// `dims` describes the expected shape in messages, e.g. "[batch, tokens, hidden]". With
// last_contiguous the last axis must have unit stride; with writable the array must be writeable
// and free of internal overlap. T is float or int32_t.
template <typename T>
Checked<T> CheckArray(py::handle obj, const char* name, int ndim, const std::string& dims,
                      bool writable, bool last_contiguous);

// Any array-like -> a NumPy array (no copy where NumPy can avoid one); TypeError naming `name`
// if it cannot be read as one.
py::array AsArray(py::handle obj, const char* name);

// Reads `obj` as a 4-D float32 array in `layout`; never copies. With `writable`, the array must
// be writeable and free of internal overlap (it is an output).
Tensor4 AsTensor4(py::handle obj, const char* name, Layout layout, bool writable = false);

// Reads `obj` as a 4-D int32 array (e.g. top-k indices) in `layout`; never copies.
IntTensor4 AsIntTensor4(py::handle obj, const char* name, Layout layout, const char* dim_name);

// A new, C-contiguous float32 array of logical shape `bhsd` stored in `layout`'s order.
Tensor4 NewTensor4(const std::array<int64_t, 4>& bhsd, Layout layout);

// `out` if given (checked: float32, writeable, exactly the expected shape) or a new array.
Tensor4 OutputTensor4(py::handle out, const char* name, const std::array<int64_t, 4>& bhsd,
                      Layout layout);

// A 3-D float32 [batch, heads, seqlen] array (log-sum-exp) viewed as [b, h, s, 1].
Tensor4 AsLse(py::handle obj, const char* name, bool writable = false);
// A new [batch, heads, seqlen] float32 array viewed as [b, h, s, 1].
Tensor4 NewLse(int64_t batch, int64_t heads, int64_t seqlen);

// A small per-head parameter vector (sinks, ALiBi slopes): any 1-D array-like of `n` real
// numbers, converted to float32 (these are tiny, so a copy is fine). nullopt for None.
std::optional<std::vector<float>> AsVector(py::handle obj, const char* name, int64_t n);

// Raises ValueError when `out` may share memory with one of the named inputs (NumPy's bounds
// check: outputs must be fresh memory).
void RequireNoOverlap(const py::array& out, const char* out_name,
                      std::initializer_list<std::pair<const py::array*, const char*>> inputs);

// Throws ValueError / TypeError with a message; helpers for the binding files.
[[noreturn]] void ValueError(const std::string& message);
[[noreturn]] void TypeError(const std::string& message);

// A Python int as int64 for the argument `name`: bool is refused (True is not 1 here), a value
// outside int64 raises ValueError naming the argument (not pybind11's "Unable to cast").
int64_t IntArg(py::handle obj, const std::string& name);

// Arguments taken as any Python object (checked by the functions above, so that errors name the
// argument) but shown with a useful type in signatures and help(): e.g. `q: numpy.ndarray`.
#define ATTNKIT_PY_ANY_ARG(Type)                                    \
  struct Type {                                                     \
    py::object obj;                                                 \
    operator const py::object&() const { return obj; } /* NOLINT */ \
  };
ATTNKIT_PY_ANY_ARG(ArrayArg)     // numpy.ndarray (or anything numpy.asarray reads)
ATTNKIT_PY_ANY_ARG(OptArrayArg)  // Optional[numpy.ndarray]
ATTNKIT_PY_ANY_ARG(WindowArg)    // Union[int, Tuple[Optional[int], Optional[int]], None]
ATTNKIT_PY_ANY_ARG(OptMaskArg)   // Optional[attnkit.Mask]
#undef ATTNKIT_PY_ANY_ARG

}  // namespace attnkit::python

namespace pybind11::detail {
#define ATTNKIT_PY_ANY_CASTER(Type, PyName)                                           \
  template <>                                                                         \
  struct type_caster<attnkit::python::Type> {                                         \
    PYBIND11_TYPE_CASTER(attnkit::python::Type, const_name(PyName));                  \
    bool load(handle src, bool) {                                                     \
      value.obj = reinterpret_borrow<object>(src);                                    \
      return true;                                                                    \
    }                                                                                 \
    static handle cast(const attnkit::python::Type& v, return_value_policy, handle) { \
      return v.obj.inc_ref();                                                         \
    }                                                                                 \
  };
ATTNKIT_PY_ANY_CASTER(ArrayArg, "numpy.ndarray")
ATTNKIT_PY_ANY_CASTER(OptArrayArg, "Optional[numpy.ndarray]")
ATTNKIT_PY_ANY_CASTER(WindowArg, "Union[int, Tuple[Optional[int], Optional[int]], None]")
ATTNKIT_PY_ANY_CASTER(OptMaskArg, "Optional[attnkit.Mask]")
#undef ATTNKIT_PY_ANY_CASTER
}  // namespace pybind11::detail

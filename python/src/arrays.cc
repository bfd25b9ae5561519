// NumPy arrays <-> attnkit tensor views: dtype, rank, shape and stride checks without copies.
#include "arrays.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <string>
#include <utility>

namespace attnkit::python {

void ValueError(const std::string& message) { throw py::value_error(message); }
void TypeError(const std::string& message) { throw py::type_error(message); }

int64_t IntArg(py::handle obj, const std::string& name) {
  if (PyBool_Check(obj.ptr())) ValueError(name + " must be an int, not a bool");
  if (!PyLong_Check(obj.ptr())) {
    TypeError(name + " must be an int, got " +
              py::str(py::type::of(obj).attr("__name__")).cast<std::string>());
  }
  int overflow = 0;
  const long long v = PyLong_AsLongLongAndOverflow(obj.ptr(), &overflow);
  if (overflow != 0) {
    ValueError(name + " = " + py::str(obj).cast<std::string>() + " is outside the 64-bit range");
  }
  if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
  return static_cast<int64_t>(v);
}

Layout ParseLayout(const std::string& layout) {
  if (layout == "bhsd") return Layout::kBhsd;
  if (layout == "bshd") return Layout::kBshd;
  ValueError(
      "layout must be \"bhsd\" ([batch, heads, seqlen, dim]) or \"bshd\" ([batch, seqlen, "
      "heads, dim]), got \"" +
      layout + "\"");
}

std::array<int64_t, 4> ToLayout(const std::array<int64_t, 4>& bhsd, Layout layout) {
  if (layout == Layout::kBhsd) return bhsd;
  return {bhsd[0], bhsd[2], bhsd[1], bhsd[3]};
}

std::string DescribeShape(Layout layout, const char* batch, const char* heads, const char* seqlen,
                          const char* dim) {
  const std::string b = batch, h = heads, s = seqlen, d = dim;
  if (layout == Layout::kBhsd) return "[" + b + ", " + h + ", " + s + ", " + d + "]";
  return "[" + b + ", " + s + ", " + h + ", " + d + "]";
}

namespace {

std::string ShapeString(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (i) s += ", ";
    s += std::to_string(a.shape(i));
  }
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

std::string Dtype(const py::array& a) { return py::str(a.dtype()).cast<std::string>(); }

template <typename T>
struct DtypeInfo;
template <>
struct DtypeInfo<float> {
  static constexpr char kKind = 'f';
  static constexpr const char* kName = "float32";
};
template <>
struct DtypeInfo<int32_t> {
  static constexpr char kKind = 'i';
  static constexpr const char* kName = "int32";
};

template <typename T>
bool IsNative(const py::array& a) {
  const py::dtype dt = a.dtype();
  return dt.kind() == DtypeInfo<T>::kKind && dt.itemsize() == sizeof(T) &&
         dt.attr("isnative").cast<bool>();
}

// True when two distinct index tuples could address the same element: checked with the
// sufficient condition that, sorted by stride, every axis steps past the whole extent of the
// axes inside it (size-1 axes ignored).
bool MayOverlapItself(const py::array& a) {
  std::vector<std::pair<int64_t, int64_t>> axes;  // (|stride| in bytes, size)
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    if (a.shape(i) > 1) axes.emplace_back(std::abs(static_cast<int64_t>(a.strides(i))), a.shape(i));
  }
  std::sort(axes.begin(), axes.end());
  int64_t extent = static_cast<int64_t>(a.itemsize());
  for (const auto& [stride, size] : axes) {
    if (stride < extent) return true;
    extent = stride * size;
  }
  return false;
}

}  // namespace

py::array AsArray(py::handle obj, const char* name) {
  if (obj.is_none()) TypeError(std::string(name) + " must be an array, got None");
  if (py::isinstance<py::array>(obj)) return py::reinterpret_borrow<py::array>(obj);
  try {
    return py::module_::import("numpy").attr("asarray")(obj);
  } catch (py::error_already_set& e) {
    TypeError(std::string(name) + " cannot be read as a NumPy array (" + e.what() + ")");
  }
}

template <typename T>
Checked<T> CheckArray(py::handle obj, const char* name, int ndim, const std::string& dims,
                      bool writable, bool last_contiguous) {
  Checked<T> c;
  c.array = AsArray(obj, name);
  const py::array& a = c.array;
  const std::string n = name;
  if (a.ndim() != ndim) {
    ValueError(n + " must be " + std::to_string(ndim) + "-D " + dims + ", got shape " +
               ShapeString(a));
  }
  if (!IsNative<T>(a)) {
    TypeError(n + " must be a " + DtypeInfo<T>::kName + " array, got dtype " + Dtype(a) +
              " (convert with np.asarray(" + n + ", dtype=np." + DtypeInfo<T>::kName + "))");
  }
  for (int i = 0; i < ndim; ++i) {
    if (a.shape(i) == 0) {
      ValueError(n + " is empty, shape " + ShapeString(a) + " (expected " + dims + ")");
    }
  }
  if (writable && !a.writeable()) ValueError(n + " is read-only");
  if (reinterpret_cast<uintptr_t>(a.data()) % alignof(T) != 0) {
    ValueError(n + " is not aligned to " + std::to_string(alignof(T)) +
               " bytes (use np.ascontiguousarray(" + n + "))");
  }
  c.data = static_cast<T*>(const_cast<void*>(a.data()));
  for (int i = 0; i < ndim; ++i) {
    const int64_t bytes = a.strides(i);
    c.shape.push_back(a.shape(i));
    if (a.shape(i) == 1) {
      c.stride.push_back(0);  // never stepped along; any stride is as good as another
      continue;
    }
    if (bytes % static_cast<int64_t>(sizeof(T)) != 0) {
      ValueError(n + " has a stride of " + std::to_string(bytes) + " bytes, not a multiple of " +
                 std::to_string(sizeof(T)) + " (use np.ascontiguousarray(" + n + "))");
    }
    if (bytes < 0) {
      ValueError(n + " has a negative stride (a reversed view); pass np.ascontiguousarray(" + n +
                 ")");
    }
    c.stride.push_back(bytes / static_cast<int64_t>(sizeof(T)));
  }
  if (last_contiguous) {
    if (c.shape[ndim - 1] > 1 && c.stride[ndim - 1] != 1) {
      ValueError(n + " must be contiguous in its last axis, got a stride of " +
                 std::to_string(c.stride[ndim - 1]) + " elements (use np.ascontiguousarray(" + n +
                 "))");
    }
    c.stride[ndim - 1] = 1;
  }
  if (writable && MayOverlapItself(a)) {
    ValueError(n + " has elements that share memory (e.g. a broadcast view); pass a fresh array");
  }
  return c;
}

template Checked<float> CheckArray<float>(py::handle, const char*, int, const std::string&, bool,
                                          bool);
template Checked<int32_t> CheckArray<int32_t>(py::handle, const char*, int, const std::string&,
                                              bool, bool);

template <typename T>
Tensor4T<T> AsTensor4T(py::handle obj, const char* name, Layout layout, bool writable,
                       const char* dim_name) {
  const std::string dims = DescribeShape(layout, "batch", "heads", "seqlen", dim_name);
  Checked<T> c = CheckArray<T>(obj, name, 4, dims, writable, true);
  Tensor4T<T> t;
  t.array = c.array;
  t.view.data = c.data;
  const int h = layout == Layout::kBhsd ? 1 : 2;
  const int s = layout == Layout::kBhsd ? 2 : 1;
  t.view.shape = {c.shape[0], c.shape[h], c.shape[s], c.shape[3]};
  t.view.stride = {c.stride[0], c.stride[h], c.stride[s], 1};
  return t;
}

Tensor4 AsTensor4(py::handle obj, const char* name, Layout layout, bool writable) {
  return AsTensor4T<float>(obj, name, layout, writable, "head_dim");
}

IntTensor4 AsIntTensor4(py::handle obj, const char* name, Layout layout, const char* dim_name) {
  return AsTensor4T<int32_t>(obj, name, layout, false, dim_name);
}

Tensor4 NewTensor4(const std::array<int64_t, 4>& bhsd, Layout layout) {
  const std::array<int64_t, 4> shape = ToLayout(bhsd, layout);
  py::array_t<float> a(std::vector<py::ssize_t>(shape.begin(), shape.end()));
  return AsTensor4(a, "out", layout, true);
}

Tensor4 OutputTensor4(py::handle out, const char* name, const std::array<int64_t, 4>& bhsd,
                      Layout layout) {
  if (out.is_none()) return NewTensor4(bhsd, layout);
  Tensor4 t = AsTensor4(out, name, layout, true);
  if (t.view.shape != bhsd) {
    const auto want = ToLayout(bhsd, layout);
    ValueError(std::string(name) + " must have shape (" + std::to_string(want[0]) + ", " +
               std::to_string(want[1]) + ", " + std::to_string(want[2]) + ", " +
               std::to_string(want[3]) +
               ") = " + DescribeShape(layout, "batch", "num_heads_q", "seqlen_q", "head_dim_v") +
               ", got " + ShapeString(t.array));
  }
  return t;
}

Tensor4 AsLse(py::handle obj, const char* name, bool writable) {
  Checked<float> c =
      CheckArray<float>(obj, name, 3, "[batch, num_heads_q, seqlen_q]", writable, false);
  Tensor4 t;
  t.array = c.array;
  t.view.data = c.data;
  t.view.shape = {c.shape[0], c.shape[1], c.shape[2], 1};
  t.view.stride = {c.stride[0], c.stride[1], c.stride[2], 1};
  return t;
}

Tensor4 NewLse(int64_t batch, int64_t heads, int64_t seqlen) {
  py::array_t<float> a(std::vector<py::ssize_t>{batch, heads, seqlen});
  return AsLse(a, "lse", true);
}

void RequireNoOverlap(const py::array& out, const char* out_name,
                      std::initializer_list<std::pair<const py::array*, const char*>> inputs) {
  py::object may_share = py::module_::import("numpy").attr("may_share_memory");
  for (const auto& [array, name] : inputs) {
    if (may_share(out, *array).cast<bool>()) {
      ValueError(std::string(out_name) + " overlaps " + name +
                 " (outputs must not share memory "
                 "with inputs)");
    }
  }
}

std::optional<std::vector<float>> AsVector(py::handle obj, const char* name, int64_t n) {
  if (obj.is_none()) return std::nullopt;
  py::array a = AsArray(obj, name);
  const char kind = a.dtype().kind();
  if (kind != 'f' && kind != 'i' && kind != 'u') {
    TypeError(std::string(name) + " must hold real numbers, got dtype " + Dtype(a));
  }
  if (a.ndim() != 1 || a.shape(0) != n) {
    ValueError(std::string(name) + " must have shape (" + std::to_string(n) +
               ",) = [num_heads_q], got " + ShapeString(a));
  }
  auto f = py::array_t<float, py::array::forcecast>::ensure(a);
  if (!f) TypeError(std::string(name) + " cannot be converted to float32");
  std::vector<float> values(static_cast<size_t>(n));
  auto r = f.unchecked<1>();
  for (int64_t i = 0; i < n; ++i) values[i] = r(i);
  return values;
}

}  // namespace attnkit::python

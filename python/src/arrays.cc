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

bool IsNativeFloat32(const py::array& a) {
  const py::dtype dt = a.dtype();
  return dt.kind() == 'f' && dt.itemsize() == 4 && dt.attr("isnative").cast<bool>();
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

// Checks dtype, alignment and strides common to every tensor argument; returns element strides.
std::vector<int64_t> ElementStrides(const py::array& a, const char* name, bool writable) {
  if (!IsNativeFloat32(a)) {
    TypeError(std::string(name) + " must be a float32 array, got dtype " + Dtype(a) +
              " (convert with np.asarray(" + name + ", dtype=np.float32))");
  }
  if (writable && !a.writeable()) ValueError(std::string(name) + " is read-only");
  if (reinterpret_cast<uintptr_t>(a.data()) % alignof(float) != 0) {
    ValueError(std::string(name) + " is not aligned to 4 bytes (use np.ascontiguousarray(" + name +
               "))");
  }
  std::vector<int64_t> strides(static_cast<size_t>(a.ndim()));
  for (py::ssize_t i = 0; i < a.ndim(); ++i) {
    const int64_t bytes = a.strides(i);
    if (a.shape(i) == 1) {
      strides[i] = 0;  // never stepped along; any stride is as good as another
      continue;
    }
    if (bytes % 4 != 0) {
      ValueError(std::string(name) + " has a stride of " + std::to_string(bytes) +
                 " bytes, not a multiple of 4 (use np.ascontiguousarray(" + name + "))");
    }
    if (bytes < 0) {
      ValueError(std::string(name) +
                 " has a negative stride (a reversed view); pass "
                 "np.ascontiguousarray(" +
                 name + ")");
    }
    strides[i] = bytes / 4;
  }
  if (writable && MayOverlapItself(a)) {
    ValueError(std::string(name) +
               " has elements that share memory (e.g. a broadcast view); "
               "pass a fresh array");
  }
  return strides;
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

Tensor4 AsTensor4(py::handle obj, const char* name, Layout layout, bool writable) {
  Tensor4 t;
  t.array = AsArray(obj, name);
  const py::array& a = t.array;
  const std::string expected = DescribeShape(layout, "batch", "heads", "seqlen", "head_dim");
  if (a.ndim() != 4) {
    ValueError(std::string(name) + " must be 4-D " + expected + ", got shape " + ShapeString(a));
  }
  for (int i = 0; i < 4; ++i) {
    if (a.shape(i) == 0) {
      ValueError(std::string(name) + " is empty, shape " + ShapeString(a) + " (expected " +
                 expected + ")");
    }
  }
  const std::vector<int64_t> st = ElementStrides(a, name, writable);
  if (a.shape(3) > 1 && st[3] != 1) {
    ValueError(std::string(name) +
               " must be contiguous in its last (head_dim) axis, got a stride"
               " of " +
               std::to_string(st[3]) + " elements (use np.ascontiguousarray(" + name + "))");
  }
  t.view.data = static_cast<float*>(const_cast<void*>(a.data()));
  const int h = layout == Layout::kBhsd ? 1 : 2;
  const int s = layout == Layout::kBhsd ? 2 : 1;
  t.view.shape = {a.shape(0), a.shape(h), a.shape(s), a.shape(3)};
  t.view.stride = {st[0], st[h], st[s], 1};
  return t;
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
  Tensor4 t;
  t.array = AsArray(obj, name);
  const py::array& a = t.array;
  if (a.ndim() != 3) {
    ValueError(std::string(name) + " must be 3-D [batch, num_heads_q, seqlen_q], got shape " +
               ShapeString(a));
  }
  const std::vector<int64_t> st = ElementStrides(a, name, writable);
  for (int i = 0; i < 3; ++i) {
    if (a.shape(i) == 0) ValueError(std::string(name) + " is empty, shape " + ShapeString(a));
  }
  t.view.data = static_cast<float*>(const_cast<void*>(a.data()));
  t.view.shape = {a.shape(0), a.shape(1), a.shape(2), 1};
  t.view.stride = {st[0], st[1], st[2], 1};
  return t;
}

Tensor4 NewLse(int64_t batch, int64_t heads, int64_t seqlen) {
  py::array_t<float> a(std::vector<py::ssize_t>{batch, heads, seqlen});
  return AsLse(a, "lse", true);
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

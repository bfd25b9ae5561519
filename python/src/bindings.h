// Shared declarations of the Python module: one Bind* function per binding file, the Python face
// of a mask, and the score keywords (scale, softcap, sinks, ...) that several calls share.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "attnkit/kernels/dense.h"
#include "attnkit/masks/mask.h"
#include "attnkit/models/config.h"

namespace attnkit::python {

namespace py = pybind11;

// attnkit.Mask: an immutable attention mask (a shared, thread-safe C++ mask object).
struct PyMask {
  MaskPtr ptr;
};

// Combines the usual attention keywords into one mask (nullptr = no mask):
// causal (bool), window (None, int w = causal sliding window of w keys, or (left, right) with
// None / -1 for unbounded) and mask (None or attnkit.Mask). Raises ValueError / TypeError.
MaskPtr CombineMasks(bool causal, const py::object& window, const py::object& mask);

// The keyword arguments that shape scores, parsed and checked; owns the per-head vectors.
struct ScoreArgs {
  std::optional<float> scale;                             // unset = 1 / sqrt(head_dim_qk)
  float softcap = 0.0f;                                   // 0 = off
  std::optional<std::vector<float>> sinks, alibi_slopes;  // [num_heads_q]
  MaskPtr mask;
  int num_threads = 0;
  Backend backend = Backend::kAuto;

  // DenseOptions pointing into this object (valid while it lives and is not moved).
  DenseOptions Options() const;
};

// Parses "auto" or "reference" (ValueError otherwise).
Backend ParseBackend(const std::string& backend);

// Parses scale (None or nonzero finite), softcap (None or >= 0), sinks and alibi_slopes
// (None or [num_heads_q]), num_threads (>= 0) and backend ("auto", "reference").
ScoreArgs ParseScoreArgs(int64_t num_heads_q, std::optional<double> scale,
                         std::optional<double> softcap, const py::object& sinks,
                         const py::object& alibi_slopes, int num_threads,
                         const std::string& backend);

// A ModelConfig, or a catalogue name / config.json path (str or os.PathLike); TypeError otherwise.
models::ModelConfig AsModelConfig(const py::object& model, bool allow_unknown = false);

void BindRuntime(py::module_& m);
void BindMasks(py::module_& m);
void BindDense(py::module_& m);
void BindDenseBackward(py::module_& m);
void BindKvCache(py::module_& m);
void BindLinear(py::module_& m);
void BindRecurrent(py::module_& m);
void BindSparse(py::module_& m);  // after BindMasks: extends attnkit.masks and attnkit.Mask
void BindModels(py::module_& m);
void BindLayers(py::module_& m);
void BindTrain(py::module_& m);

}  // namespace attnkit::python

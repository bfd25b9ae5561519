// attnkit.set_num_threads / get_num_threads / simd_target / compiled_targets / cpu_model /
// release_scratch_memory.
#include "attnkit/core/runtime.h"
#include "bindings.h"

namespace attnkit::python {

void BindRuntime(py::module_& m) {
  m.def("set_num_threads", &SetNumThreads, py::arg("n"),
        R"doc(Sets how many threads attnkit kernels use when a call passes num_threads=0.

n (int >= 1). The default is OpenMP's (all cores, or OMP_NUM_THREADS).)doc");
  m.def("get_num_threads", &GetNumThreads,
        "Number of threads attnkit kernels use when a call passes num_threads=0.");
  m.def("simd_target", &SimdTargetName,
        "Name of the SIMD target chosen at run time on this CPU, e.g. \"AVX3\" or \"AVX2\".");
  m.def("compiled_targets", &CompiledTargets, "Every SIMD target compiled into this build.");
  m.def("cpu_model", &CpuModelName, "This CPU's model name (from /proc/cpuinfo).");
  m.def("release_scratch_memory", &ReleaseScratchMemory,
        R"doc(Returns the kernels' pooled scratch memory (at most 96 MiB of packed K/V tiles and
workspaces kept for the next call, so a loop of calls does not page-fault them in again) to the
operating system.)doc");
}

}  // namespace attnkit::python

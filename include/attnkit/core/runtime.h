// Process-wide run-time settings and facts: thread count, the SIMD target chosen at run time.
#pragma once

#include <string>

namespace attnkit {

// Number of threads attnkit kernels use when an options struct leaves num_threads at 0.
// Defaults to the OpenMP default (all cores). n must be >= 1.
inline constexpr int kMaxThreads = 1024;
void SetNumThreads(int n);
int GetNumThreads();
// Resolves a per-call request: 0 means the global setting.
int ResolveThreads(int requested);

// Name of the SIMD target Highway dispatches to on this CPU (e.g. "AVX3", "AVX2", "EMU128").
std::string SimdTargetName();
// All targets compiled into this build, best first.
std::string CompiledTargets();
// CPU model string from /proc/cpuinfo (or "unknown").
std::string CpuModelName();
// attnkit version string.
std::string Version();

// Kernels keep up to 96 MiB of released scratch memory (packed K/V tiles) for the next call, so
// a loop of calls does not page-fault the same buffers in again. This hands it back to the OS.
void ReleaseScratchMemory();

}  // namespace attnkit

#!/usr/bin/env bash
# Configures and builds one attnkit build tree.
#   scripts/build.sh [release|asan|tsan]
# release -> build/       (Release, CLI, tests, Python module)
# asan    -> build-asan/  (AddressSanitizer + UBSan, tests only)
# tsan    -> build-tsan/  (ThreadSanitizer with clang and LLVM's libomp, the threaded suites only;
#                          scripts/test.sh runs them with libomp's Archer tool so TSan understands
#                          OpenMP's synchronisation)
set -euo pipefail
cd "$(dirname "$0")/.."
kind=${1:-release}
jobs=$(nproc)
case "$kind" in
  release)
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DATTNKIT_BUILD_PYTHON=ON >/dev/null
    cmake --build build -j "$jobs"
    ;;
  asan)
    # -O1 -g1: line-level stack traces at a fraction of the compile time of -O2 -g.
    cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1 -g1" \
      -DATTNKIT_SANITIZE=address,undefined \
      -DATTNKIT_BUILD_CLI=OFF -DATTNKIT_BUILD_PYTHON=OFF >/dev/null
    cmake --build build-asan -j "$jobs"
    ;;
  tsan)
    cmake -S . -B build-tsan -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=None \
      -DCMAKE_CXX_FLAGS="-O1 -g1" -DATTNKIT_SANITIZE=thread \
      -DATTNKIT_BUILD_CLI=OFF -DATTNKIT_BUILD_PYTHON=OFF \
      "-DATTNKIT_TESTS=dense_kernel_test;dense_test;scratch_test;threads_test;dense_backward_test;recurrent_backward_test" >/dev/null
    cmake --build build-tsan -j "$jobs"
    ;;
  *) echo "build.sh: unknown kind '$kind' (release|asan|tsan)" >&2; exit 2 ;;
esac

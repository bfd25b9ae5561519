#!/usr/bin/env bash
# Installs attnkit into a temporary prefix and builds a downstream project against it with
# find_package(attnkit): proves the CMake package works as shipped.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p build/test-scratch
prefix=$(mktemp -d "$(pwd)/build/test-scratch/install-check.XXXXXX")
trap 'rm -rf "$prefix"' EXIT
cmake --install build --prefix "$prefix" >/dev/null
cmake -S examples/cmake_consumer -B "$prefix/consumer-build" -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$prefix/consumer-build" -j 2 >/dev/null
"$prefix/consumer-build/consumer"

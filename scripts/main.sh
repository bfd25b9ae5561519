#!/usr/bin/env bash
# The main job (the README's first command): set up, build, then write the visual guide with its
# measurements to out/guide/ (open out/guide/index.html), and print the benchmark summary.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
bash scripts/build.sh release
mkdir -p out
if ./build/attnkit guide --help >/dev/null 2>&1; then
  ./build/attnkit guide --out out/guide "$@"
  echo "main: the guide is at $(pwd)/out/guide/index.html"
fi
./build/attnkit bench dense | tee out/bench-dense.txt

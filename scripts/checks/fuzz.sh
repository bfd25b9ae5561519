#!/usr/bin/env bash
# Fuzzes the config.json reader with libFuzzer (Debian clang + libclang-rt-14-dev) for a bounded
# time, seeded with the real configs in tests/data/configs and the catalogue entries. Builds in
# build-fuzz/. Exits non-zero on any crash, leak, sanitizer report, hang or non-attnkit exception.
#   ATTNKIT_FUZZ_SECONDS=60 ATTNKIT_FUZZ_SPEC_SECONDS=30 ATTNKIT_FUZZ_CLI_SECONDS=20 scripts/checks/fuzz.sh
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

# run_fuzzer NAME SECONDS CORPUS LOG [libFuzzer flags...]: a bounded run; exits on any finding.
run_fuzzer() {
  local name=$1 secs=$2 dir=$3 log=$4
  shift 4
  echo "fuzz: running $name for ${secs}s on $(ls "$dir" | wc -l) seed files"
  set +e
  ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    "./build-fuzz/fuzz/$name" -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 \
    "$@" "$dir" >"$log" 2>&1
  local status=$?
  set -e
  grep -E "^(==|SUMMARY|stat::|Done)|ERROR|exception" "$log" | tail -30
  if [ "$status" -ne 0 ]; then
    echo "fuzz: $name FAILED (exit $status); log in $log, input in build-fuzz/*crash-* etc." >&2
    exit 1
  fi
  echo "fuzz: $name, no crash in ${secs}s"
}

run_fuzzer config_reader_fuzz "$seconds" "$corpus" build-fuzz/fuzz.log -timeout=10 \
  -max_len=16384 -dict=fuzz/config_reader.dict -artifact_prefix=build-fuzz/

# The mask pattern specifications and the shared number/list parser (core/parse.h).
spec_corpus=build-fuzz/corpus-pattern-spec
mkdir -p "$spec_corpus"
cp -f fuzz/pattern_spec_seeds/* "$spec_corpus"/
run_fuzzer pattern_spec_fuzz "${ATTNKIT_FUZZ_SPEC_SECONDS:-30}" "$spec_corpus" \
  build-fuzz/fuzz-pattern-spec.log -timeout=30 -max_len=256 -artifact_prefix=build-fuzz/spec-

# The CLI's argument parser, its typed getters, the layer list and the benchmarks' --mask.
cli_corpus=build-fuzz/corpus-cli-args
mkdir -p "$cli_corpus"
cp -f fuzz/cli_args_seeds/* "$cli_corpus"/
run_fuzzer cli_args_fuzz "${ATTNKIT_FUZZ_CLI_SECONDS:-20}" "$cli_corpus" \
  build-fuzz/fuzz-cli-args.log -timeout=10 -max_len=512 -artifact_prefix=build-fuzz/cli-

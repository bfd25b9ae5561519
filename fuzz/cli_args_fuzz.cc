// libFuzzer target for the CLI's argument parsing: ArgParser (tools/cli/command.h: `--name value`,
// `--name=value`, flags, positionals, --help) and every typed getter the subcommands call on what
// it parsed (GetInt, GetSeed, GetDouble, GetThreads, the list options of list_args.h), the layer
// list of `attnkit stack --layers` (ParseLayerList) and the benchmarks' `--mask` (ParseMaskSpec).
// Input: argv tokens separated by newlines; the first byte picks the parser's shape (the
// positional counts of the subcommands: none, one, one or more, up to two). Every input must
// either parse or throw attnkit::Error; anything else (another exception, a crash, a sanitizer
// report, a hang) is a bug. The subcommands' run functions (benchmarks, files) are not run.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "../tools/cli/command.h"
#include "../tools/cli/list_args.h"
#include "attnkit/bench/dense.h"
#include "attnkit/core/error.h"
#include "attnkit/layers/factory.h"

namespace {

// The kinds of src/layers/factory.cc's table (the fuzz target does not build the layers).
bool KnownKind(const std::string& kind) {
  static const char* const kKinds[] = {"mha",    "gqa",   "mqa", "swa",       "sinks",
                                       "qknorm", "gated", "mla", "mla-naive", "gated_deltanet",
                                       "kda"};
  for (const char* k : kKinds) {
    if (kind == k) return true;
  }
  return false;
}

template <typename F>
void Try(F&& f) {
  try {
    f();
  } catch (const attnkit::Error&) {
  }
}

void Run(const uint8_t* data, size_t size) {
  using namespace attnkit;
  using namespace attnkit::cli;
  const int shape = data[0] % 5;
  std::vector<std::string> args;
  std::string cur;
  for (size_t i = 1; i < size; ++i) {
    if (data[i] == '\n') {
      args.push_back(cur);
      cur.clear();
    } else {
      cur.push_back(static_cast<char>(data[i]));
    }
  }
  if (!cur.empty()) args.push_back(cur);

  ArgParser p("attnkit fuzz [options]", "the options every subcommand uses, by type");
  p.AddOption("seqlen", "4096", "an integer (GetInt)");
  p.AddOption("seqlens", "1k,4k", "a size list (ParseSizeList)");
  p.AddOption("globals", "", "a list of integers");
  p.AddOption("patterns", "causal", "a list of names (SplitList)");
  p.AddOption("seed", "0", "a seed (GetSeed)");
  p.AddOption("threads", "0", "a thread count (GetThreads)");
  p.AddOption("min-fraction", "0.5", "a number (GetDouble)");
  p.AddOption("layers", "gqa", "a layer list (ParseLayerList)");
  p.AddOption("mask", "causal", "none | causal | window:W | chunk:C (ParseMaskSpec)");
  p.AddOption("out", "", "a path (Get)");
  p.AddFlag("bf16", "a flag");
  p.AddFlag("json", "a flag");
  switch (shape) {
    case 1:
      p.AddPositional("model", "a name or path");
      break;
    case 2:
      p.AddPositional("models", "names or paths", 1, -1);
      break;
    case 3:
      p.AddPositional("pattern", "a pattern", 0, 1);
      break;
    case 4:
      p.AddPositional("a", "two things", 2, 2);
      break;
    default:
      break;  // no positionals
  }
  bool parsed = false;
  Try([&] { parsed = p.Parse(args); });
  if (!parsed) return;
  (void)p.Help();
  Try([&] { (void)p.GetInt("seqlen"); });
  Try([&] { (void)ParseSizeList(p.Get("seqlens"), "--seqlens"); });
  Try([&] {
    if (p.Given("globals")) (void)ParseSizeList(p.Get("globals"), "--globals");
  });
  Try([&] { (void)SplitList(p.Get("patterns"), "--patterns"); });
  Try([&] { (void)p.GetSeed(); });
  Try([&] { (void)p.GetThreads(); });
  Try([&] { (void)p.GetDouble("min-fraction"); });
  Try([&] { (void)ParseLayerList(p.Get("layers"), KnownKind); });
  Try([&] { (void)bench::ParseMaskSpec(p.Get("mask")); });
  (void)p.Get("out");
  (void)p.Flag("bf16");
  for (const std::string& a : p.Positionals()) Try([&] { (void)ParseSize(a, "<a>"); });
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // --help prints the help text: keep the fuzzer's output readable.
  if (std::freopen("/dev/null", "w", stdout) == nullptr) return 0;
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0 || size > 4096) return 0;
  Run(data, size);
  return 0;
}

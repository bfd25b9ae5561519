// `attnkit mask <pattern>`: draws an attention pattern from the very Mask object the kernels obey
// (ASCII for small sequences, SVG for large ones), with its density and tile counts.
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>

#include "attnkit/core/error.h"
#include "attnkit/kernels/gather.h"
#include "attnkit/masks/draw.h"
#include "attnkit/masks/sparse.h"
#include "command.h"
#include "list_args.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

uint64_t ParseSeed(const std::string& text) {
  char* end = nullptr;
  errno = 0;
  const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  const unsigned long long v = digits ? std::strtoull(text.c_str(), &end, 10) : 0;
  Require(digits && errno == 0 && end != nullptr && *end == '\0',
          "--seed: expected a non-negative integer, got '", text, "'");
  return static_cast<uint64_t>(v);
}

// DSA's selection for seeded random indexer inputs (the indexer of a real model is trained; this
// shows the shape of a top-k selection: causal, top_k keys per query, all keys while t < top_k).
MaskPtr RandomDsaSelection(int64_t n, int64_t top_k, uint64_t seed) {
  Require(top_k >= 1, "--top-k must be >= 1, got ", top_k);
  const int64_t heads = 2, dim = 32;
  Tensor<float> qi(1, heads, n, dim), w(1, 1, n, heads), ki(1, 1, n, dim);
  uint64_t state = seed * 0x9e3779b97f4a7c15ull + 1;
  auto next = [&] {  // xorshift64*: portable
    state ^= state >> 12;
    state ^= state << 25;
    state ^= state >> 27;
    return static_cast<float>(((state * 0x2545f4914f6cdd1dull) >> 40) & 0xffffff) / 16777216.0f -
           0.5f;
  };
  for (auto* t : {&qi, &w, &ki}) {
    for (int64_t x = 0; x < t->numel(); ++x) t->data()[x] = next();
  }
  Tensor<int32_t> idx(1, 1, n, top_k);
  DsaSelect(qi.view(), w.view(), ki.view(), top_k, idx.view());
  return SelectionMask(idx.view(), 0);
}

int RunMask(const std::vector<std::string>& args) {
  ArgParser p("attnkit mask <pattern> --seqlen N [options]",
              "Draw an attention pattern from the mask object the kernels obey: ASCII for small\n"
              "seqlen, an SVG for large (--out). Patterns: causal, window, chunked, strided,\n"
              "fixed, longformer, bigbird, dsa (top-k of a seeded random indexer). Unset\n"
              "parameters get defaults scaled to seqlen; the header prints what was built.");
  p.AddPositional("pattern", "pattern name");
  p.AddOption("seqlen", "64", "sequence length (positions 0 … N-1)");
  p.AddOption("block", "", "block size (strided, bigbird; fixed: its block l)");
  p.AddOption("window", "", "window in tokens (window, chunked, longformer)");
  p.AddOption("stride", "", "strided: stride in blocks");
  p.AddOption("summary", "", "fixed: summary positions c per block");
  p.AddOption("dilation", "", "longformer: dilation of the dilated window");
  p.AddOption("dilated-window", "", "longformer: dilated taps per side");
  p.AddOption("globals", "", "longformer: comma-separated global positions");
  p.AddOption("window-blocks", "", "bigbird: window blocks per side");
  p.AddOption("global-blocks", "", "bigbird: leading global blocks");
  p.AddOption("random-blocks", "", "bigbird: random blocks per query block");
  p.AddOption("top-k", "", "dsa: keys per query (default seqlen/8)");
  p.AddOption("seed", "0", "bigbird / dsa seed (non-negative integer)");
  p.AddOption("out", "", "write an SVG here (default for seqlen > --ascii-max: <pattern>-<N>.svg)");
  p.AddOption("ascii-max", "128", "largest seqlen printed as one character per pair");
  p.AddOption("cells", "256", "SVG grid cells per axis at most");
  p.AddFlag("json", "print one JSON object (parameters, density, tiles) instead of the picture");
  if (!p.Parse(args)) return 0;
  const std::string name = p.Positionals()[0];
  const int64_t n = p.GetInt("seqlen");
  Require(n >= 1, "--seqlen must be >= 1, got ", n);
  Require(n <= (int64_t{1} << 20), "--seqlen must be <= 1m for a picture, got ", n);
  const uint64_t seed = ParseSeed(p.Get("seed"));
  auto opt_int = [&](const char* opt, std::optional<int64_t>* field) {
    if (p.Given(opt)) *field = p.GetInt(opt);
  };
  MaskPtr mask;
  nlohmann::json params = {{"pattern", name}, {"seqlen", n}};
  if (name == "dsa") {
    const int64_t top_k = p.Given("top-k") ? p.GetInt("top-k") : std::max<int64_t>(1, n / 8);
    Require(n <= 16384, "--seqlen must be <= 16384 for the dsa picture, got ", n);
    mask = RandomDsaSelection(n, top_k, seed);
    params["top_k"] = top_k;
    params["seed"] = seed;
  } else {
    PatternSpec spec;
    spec.name = name;
    spec.seqlen = n;
    spec.seed = seed;
    opt_int("block", &spec.block);
    opt_int("window", &spec.window);
    opt_int("stride", &spec.stride);
    opt_int("summary", &spec.summary);
    opt_int("dilation", &spec.dilation);
    opt_int("dilated-window", &spec.dilated_window);
    opt_int("window-blocks", &spec.window_blocks);
    opt_int("global-blocks", &spec.global_blocks);
    opt_int("random-blocks", &spec.random_blocks);
    if (p.Given("globals")) spec.globals = ParseSizeList(p.Get("globals"), "--globals");
    mask = MakePattern(spec);
  }
  const TileCounts tiles = CountTiles(mask.get(), n, n);
  const int64_t ascii_max = p.GetInt("ascii-max");
  const int64_t cells = p.GetInt("cells");
  Require(cells >= 1, "--cells must be >= 1, got ", cells);
  const MaskGrid grid = SampleMask(mask.get(), n, n, n <= ascii_max ? n : cells);
  params["mask"] = mask->Describe();
  params["density"] = grid.density;
  params["tiles_64"] = {{"total", tiles.total},
                        {"empty", tiles.empty},
                        {"full", tiles.full},
                        {"partial", tiles.partial}};
  std::string out = p.Get("out");
  if (out.empty() && n > ascii_max && !p.Flag("json"))
    out = name + "-" + std::to_string(n) + ".svg";
  if (!out.empty()) {
    std::ofstream f(out);
    Require(f.good(), "--out: cannot write '", out, "'");
    f << MaskSvg(grid);
    params["svg"] = out;
  }
  if (p.Flag("json")) {
    std::cout << params.dump() << "\n";
    return 0;
  }
  if (n <= ascii_max) std::cout << MaskAscii(grid);
  std::cout << mask->Describe() << ": density " << grid.density << ", 64x64 tiles " << tiles.total
            << " (skipped " << tiles.empty << ", full " << tiles.full << ", partial "
            << tiles.partial << ")\n";
  if (!out.empty()) std::cout << "wrote " << out << "\n";
  return 0;
}

const CommandRegistrar kRegistrar({"mask", "draw a (sparse) attention pattern: ASCII or SVG",
                                   RunMask});

}  // namespace
}  // namespace attnkit::cli

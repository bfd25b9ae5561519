// `attnkit card`: a model card as SVG (layer strip, attention kinds, KV bytes, cache bars, state).
#include <fstream>
#include <iostream>

#include "attnkit/core/error.h"
#include "attnkit/models/card.h"
#include "attnkit/models/catalogue.h"
#include "command.h"
#include "model_args.h"

namespace attnkit::cli {
namespace {

using namespace attnkit::models;

int RunCard(const std::vector<std::string>& args) {
  ArgParser p("attnkit card NAME|CONFIG.json [--out file.svg] [--dtype bf16] [--allow-unknown]",
              "Write a model card as SVG: the layer pattern as a strip, the attention kinds, KV "
              "bytes per token, the cache at 8k / 32k / 128k and the fixed state. Without --out "
              "the SVG goes to stdout.");
  p.AddPositional("model", "a catalogue name (see `attnkit list`) or a config.json path", 1, 1);
  p.AddOption("out", "", "output file");
  AddCostOptions(p, /*with_batch=*/false);
  AddReadOptions(p);
  if (!p.Parse(args)) return 0;
  const ModelConfig m = LoadModelArg(p, p.Positionals()[0]);
  CardOptions o;
  const CostQuery q = ReadCostOptions(p, /*with_batch=*/false);
  o.cache_dtype = q.cache_dtype;
  o.state_dtype = q.state_dtype;
  const std::string svg = ModelCardSvg(m, o);
  if (!p.Given("out")) {
    std::cout << svg;
    return 0;
  }
  std::ofstream out(p.Get("out"), std::ios::binary);
  Require(out.good(), "--out: cannot open '", p.Get("out"), "' for writing");
  out << svg;
  out.close();
  Require(out.good(), "--out: cannot write '", p.Get("out"), "'");
  std::cerr << "card: wrote " << p.Get("out") << "\n";
  return 0;
}

const CommandRegistrar kRegistrar({"card", "a model card as SVG (layer strip, KV bytes, cache)",
                                   RunCard});

}  // namespace
}  // namespace attnkit::cli

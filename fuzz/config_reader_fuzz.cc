// libFuzzer target for the Hugging Face config.json reader (and what consumes its result: the
// cost model, the JSON description and the SVG card). Any input must either give a ModelConfig
// or throw attnkit::Error; every other exception, crash, leak or undefined behaviour is a bug.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "attnkit/core/error.h"
#include "attnkit/models/card.h"
#include "attnkit/models/config.h"
#include "attnkit/models/cost.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace attnkit::models;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  ModelConfig m;
  try {
    m = ReadHfConfigText(text, "fuzz");
  } catch (const attnkit::Error&) {
    // Refused: read past the fields the reader does not model (the --allow-unknown path).
    try {
      ReadOptions o;
      o.allow_unknown = true;
      m = ReadHfConfigText(text, "fuzz", o);
    } catch (const attnkit::Error&) {
      return 0;
    }
  }
  (void)ModelConfigToJson(m);
  (void)m.Pattern();
  (void)m.Summary();
  for (int64_t context : {int64_t{1}, int64_t{4097}, int64_t{1} << 20, int64_t{1} << 40}) {
    try {
      CostQuery q;
      q.context = context;
      q.batch = 3;
      const CostReport r = Cost(m, q);
      (void)CostReportToJson(m, r);
    } catch (const attnkit::Error&) {
    }
  }
  try {
    (void)ModelCardSvg(m);
  } catch (const attnkit::Error&) {
  }
  return 0;
}

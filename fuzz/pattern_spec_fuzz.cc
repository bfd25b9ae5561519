// libFuzzer target for the mask pattern specifications (what `attnkit mask`, probe and bench
// build through MakePattern) and the shared number/list parser (core/parse.h). Input: text such
// as "longformer seqlen=32 window=4 dilation=2 dilated-window=100000000 globals=0,5". Any input
// must either build a mask or throw attnkit::Error; the built mask must be self-consistent
// (FillTile agrees with Allowed, Classify's full/empty verdicts hold) and every call must be
// quick (libFuzzer's -timeout catches a hang). Anything else is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/core/parse.h"
#include "attnkit/masks/mask.h"
#include "attnkit/masks/sparse.h"

namespace {

void Build(std::string_view text) {
  using namespace attnkit;
  std::vector<std::string> words;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t sp = text.find(' ', start);
    const size_t end = sp == std::string_view::npos ? text.size() : sp;
    if (end > start) words.emplace_back(text.substr(start, end - start));
    if (sp == std::string_view::npos) break;
    start = sp + 1;
  }
  if (words.empty()) return;
  PatternSpec s;
  s.name = words[0];
  s.seqlen = 64;
  for (size_t i = 1; i < words.size(); ++i) {
    const size_t eq = words[i].find('=');
    if (eq == std::string::npos) throw Error("word without '='");
    const std::string key = words[i].substr(0, eq), value = words[i].substr(eq + 1);
    if (key == "globals") {
      for (const auto& item : SplitList(value, "globals"))
        s.globals.push_back(ParseInteger(item, key));
    } else if (key == "seed") {
      s.seed = ParseSeed(value, key);
    } else {
      const int64_t v = ParseInteger(value, key);
      if (key == "seqlen")
        s.seqlen = v;
      else if (key == "block")
        s.block = v;
      else if (key == "window")
        s.window = v;
      else if (key == "stride")
        s.stride = v;
      else if (key == "summary")
        s.summary = v;
      else if (key == "dilation")
        s.dilation = v;
      else if (key == "dilated-window")
        s.dilated_window = v;
      else if (key == "window-blocks")
        s.window_blocks = v;
      else if (key == "global-blocks")
        s.global_blocks = v;
      else if (key == "random-blocks")
        s.random_blocks = v;
      else
        throw Error("unknown key");
    }
  }
  const MaskPtr m = MakePattern(s);
  (void)m->Describe();
  // Check consistency on a bounded square (the mask itself may be for a huge seqlen).
  const int64_t n = s.seqlen < 200 ? s.seqlen : 200;
  (void)MaskDensity(m.get(), n, n);
  (void)CountTiles(m.get(), n, n);
  std::vector<uint8_t> tile(static_cast<size_t>(n * n));
  m->FillTile(0, n, 0, n, tile.data());
  for (int64_t q = 0; q < n; ++q) {
    for (int64_t k = 0; k < n; ++k) {
      if ((tile[q * n + k] != 0) != m->Allowed(q, k)) std::abort();
    }
  }
  for (int64_t q0 = 0; q0 < n; q0 += 16) {
    for (int64_t k0 = 0; k0 < n; k0 += 16) {
      const int64_t q1 = q0 + 16 < n ? q0 + 16 : n, k1 = k0 + 16 < n ? k0 + 16 : n;
      const TileKind kind = m->Classify(q0, q1, k0, k1);
      for (int64_t q = q0; q < q1; ++q) {
        for (int64_t k = k0; k < k1; ++k) {
          const bool a = tile[q * n + k] != 0;
          if ((kind == TileKind::kFull && !a) || (kind == TileKind::kEmpty && a)) std::abort();
        }
      }
    }
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size > 4096) return 0;
  try {
    Build(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const attnkit::Error&) {
  }
  return 0;
}

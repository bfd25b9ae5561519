// Comma-separated list options of the CLI (`--patterns a,b`, `--seqlen 16k,64k`, `--globals 0,5`).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/core/parse.h"
#include "command.h"

namespace attnkit::cli {

// Comma-separated items; an empty item ("a,,b") is refused naming `what` (core/parse.h).
inline std::vector<std::string> SplitList(const std::string& text, const std::string& what) {
  return attnkit::SplitList(text, what);
}

// Each item parsed with ParseSize (4096, 32k, ...); `what` names the option in errors.
inline std::vector<int64_t> ParseSizeList(const std::string& text, const std::string& what) {
  std::vector<int64_t> out;
  for (const auto& item : SplitList(text, what)) out.push_back(ParseSize(item, what));
  return out;
}

}  // namespace attnkit::cli

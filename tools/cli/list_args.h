// Comma-separated list options of the CLI (`--patterns a,b`, `--seqlen 16k,64k`, `--globals 0,5`).
#pragma once

#include <cstdint>
#include <sstream>
#include <string>
#include <vector>

#include "command.h"

namespace attnkit::cli {

// Splits on commas, dropping empty items.
inline std::vector<std::string> SplitList(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  std::string item;
  while (std::getline(ss, item, ',')) {
    if (!item.empty()) out.push_back(item);
  }
  return out;
}

// Each item parsed with ParseSize (4096, 32k, ...); `what` names the option in errors.
inline std::vector<int64_t> ParseSizeList(const std::string& text, const std::string& what) {
  std::vector<int64_t> out;
  for (const auto& item : SplitList(text)) out.push_back(ParseSize(item, what));
  return out;
}

}  // namespace attnkit::cli

// The layer-list syntax of `attnkit stack --layers` and Python's Stack(spec): "3*swa,gqa,mla".
// Kept apart from the factory table (factory.cc) so that the fuzz target can build it alone.
#include <string>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/core/parse.h"
#include "attnkit/layers/factory.h"

namespace attnkit {

std::vector<std::string> ParseLayerList(const std::string& spec,
                                        const std::function<bool(const std::string&)>& known) {
  std::vector<std::string> kinds;
  constexpr int64_t kMaxRepeat = 1000;
  for (std::string item : SplitList(spec, "layer list")) {
    int64_t repeat = 1;
    if (const auto star = item.find('*'); star != std::string::npos) {
      const std::string count = item.substr(0, star);
      Require(!count.empty() && count.find_first_not_of("0123456789") == std::string::npos,
              "layer list: bad repeat count in '", item, "' (use N*kind)");
      Require(count.size() <= 4 && std::stoll(count) >= 1 && std::stoll(count) <= kMaxRepeat,
              "layer list: repeat count in '", item, "' must be in [1, ", kMaxRepeat, "]");
      repeat = std::stoll(count);
      item = item.substr(star + 1);
    }
    Require(known(item), "layer list: unknown layer kind '", item, "'");
    Require(static_cast<int64_t>(kinds.size()) + repeat <= kMaxRepeat, "layer list: '", spec,
            "' names more than ", kMaxRepeat, " layers");
    for (int64_t i = 0; i < repeat; ++i) kinds.push_back(item);
  }
  return kinds;
}

}  // namespace attnkit

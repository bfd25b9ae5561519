// attnkit's one exception type.
//
// Every public C++ entry point reports bad input (shapes, dtypes, impossible configurations,
// malformed files) by throwing attnkit::Error. The message always names the offending argument
// and, where it helps, the shapes involved, e.g.
//   "DenseForward: k.num_heads (3) must divide q.num_heads (8)".
// Nothing else is thrown: allocations whose size a caller chose go through core/checked.h, which
// turns std::bad_alloc / std::length_error into attnkit::Error stating the bytes asked for.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace attnkit {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

namespace detail {
template <typename... Args>
std::string StrCat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// Throws attnkit::Error with the concatenation of `args` unless `condition` holds.
template <typename... Args>
inline void Require(bool condition, Args&&... args) {
  if (!condition) throw Error(detail::StrCat(std::forward<Args>(args)...));
}

}  // namespace attnkit

// The shared parsing rule for numbers and lists (core/parse.h).
#include "attnkit/core/parse.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

#include "attnkit/core/error.h"

namespace attnkit {

namespace {
[[noreturn]] void BadInteger(std::string_view text, const std::string& what) {
  throw Error(what + ": expected an integer such as 4096 or 32k, got '" + std::string(text) + "'");
}
}  // namespace

int64_t ParseInteger(std::string_view text, const std::string& what) {
  Require(!text.empty(), what, ": expected a number, got an empty string");
  std::string_view digits = text;
  const bool negative = digits.front() == '-';
  if (negative) digits.remove_prefix(1);
  int64_t mult = 1;
  if (!digits.empty()) {
    switch (digits.back()) {
      case 'k':
      case 'K':
        mult = int64_t{1} << 10;
        break;
      case 'm':
      case 'M':
        mult = int64_t{1} << 20;
        break;
      case 'g':
      case 'G':
        mult = int64_t{1} << 30;
        break;
      default:
        break;
    }
    if (mult != 1) digits.remove_suffix(1);
  }
  if (digits.empty()) BadInteger(text, what);
  int64_t v = 0;
  for (const char c : digits) {
    if (c < '0' || c > '9') BadInteger(text, what);
    // Accumulate with an explicit bound: no saturation, no overflow.
    Require(v <= (kMaxParsedInteger - (c - '0')) / 10, what, ": value out of range: '", text,
            "' (at most ", kMaxParsedInteger, ")");
    v = v * 10 + (c - '0');
  }
  Require(v <= kMaxParsedInteger / mult, what, ": value out of range: '", text, "' (at most ",
          kMaxParsedInteger, ")");
  v *= mult;
  return negative ? -v : v;
}

uint64_t ParseSeed(std::string_view text, const std::string& what) {
  const bool digits = !text.empty() && text.find_first_not_of("0123456789") == std::string::npos;
  Require(digits, what, ": expected a non-negative integer, got '", std::string(text), "'");
  uint64_t v = 0;
  for (const char c : text) {
    const uint64_t d = static_cast<uint64_t>(c - '0');
    Require(v <= (UINT64_MAX - d) / 10, what, ": value out of range: '", std::string(text),
            "' (at most ", UINT64_MAX, ")");
    v = v * 10 + d;
  }
  return v;
}

double ParseNumber(std::string_view text, const std::string& what) {
  const std::string s(text);
  char* end = nullptr;
  errno = 0;
  const double v = s.empty() ? 0.0 : std::strtod(s.c_str(), &end);
  Require(!s.empty() && errno == 0 && end != nullptr && *end == '\0' && std::isfinite(v) &&
              s.find_first_of(" \t\n") == std::string::npos,
          what, ": expected a finite number, got '", s, "'");
  return v;
}

std::vector<std::string> SplitList(std::string_view text, const std::string& what) {
  std::vector<std::string> out;
  Require(!text.empty(), what, ": expected a comma-separated list, got an empty string");
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string_view item = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    Require(!item.empty(), what, ": empty item in the list '", std::string(text), "'");
    out.emplace_back(item);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace attnkit

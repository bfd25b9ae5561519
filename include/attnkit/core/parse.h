// One rule for the numbers and lists people type (CLI flags, mask specs such as window:W, layer
// lists such as 3*gated_deltanet,gated), shared by every front end and the library's own spec
// parsers, so that the same text means the same thing everywhere:
//  * an integer is an optional '-', decimal digits and an optional binary suffix k, m or g
//    (×1024, ×1024², ×1024³); nothing else is accepted (no spaces, '+', hex, fractions), and a
//    value beyond ±2^62 is refused, never saturated;
//  * a seed is decimal digits only (no sign, no suffix), 0 … 2^64 − 1;
//  * a list is comma-separated and an empty item ("1,,2", a trailing comma) is refused.
// Every error is one attnkit::Error line that starts with `what` (e.g. "--seqlen").
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace attnkit {

inline constexpr int64_t kMaxParsedInteger = int64_t{1} << 62;

int64_t ParseInteger(std::string_view text, const std::string& what);
uint64_t ParseSeed(std::string_view text, const std::string& what);
// A finite decimal number (strtod syntax, no trailing characters).
double ParseNumber(std::string_view text, const std::string& what);
std::vector<std::string> SplitList(std::string_view text, const std::string& what);

}  // namespace attnkit

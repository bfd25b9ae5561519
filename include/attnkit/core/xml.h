// Escaping text for XML/HTML/SVG output (model cards, the visual guide's page and figures).
#pragma once

#include <string>

namespace attnkit {

// Escapes & < > " ' and drops the control characters XML 1.0 does not allow (tab is kept).
inline std::string XmlEscape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    switch (c) {
      case '&':
        out += "&amp;";
        break;
      case '<':
        out += "&lt;";
        break;
      case '>':
        out += "&gt;";
        break;
      case '"':
        out += "&quot;";
        break;
      case '\'':
        out += "&#39;";
        break;
      default:
        if (static_cast<unsigned char>(c) >= 0x20 || c == '\t') out.push_back(c);
    }
  }
  return out;
}

}  // namespace attnkit

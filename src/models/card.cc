// Model cards as SVG: layer strip, attention kinds, KV bytes per token, cache bars, state bytes.
#include "attnkit/models/card.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "attnkit/core/error.h"
#include "attnkit/core/xml.h"
#include "attnkit/models/kinds.h"

namespace attnkit::models {
namespace {

std::string Escape(const std::string& s) { return XmlEscape(s); }

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

}  // namespace

std::string LayerKindColor(LayerKind kind) { return KindInfo(kind).color; }

std::string ModelCardSvg(const ModelConfig& config, const CardOptions& options) {
  Require(!config.layers.empty(), "ModelCardSvg: model '", config.name, "' has no layers");
  Require(!options.contexts.empty(), "ModelCardSvg: options.contexts is empty");
  for (int64_t c : options.contexts) Require(c >= 1, "ModelCardSvg: context ", c, " must be >= 1");
  Require(options.width >= 320 && options.width <= 4096, "ModelCardSvg: options.width (",
          options.width, ") must be in [320, 4096]");

  const int w = options.width, pad = 16;
  const double inner = w - 2.0 * pad;
  const size_t n = config.layers.size();

  // Costs: per-token figures from the first query; one report per context for the bars.
  std::vector<CostReport> reports;
  for (int64_t c : options.contexts) {
    CostQuery q;
    q.context = c;
    q.cache_dtype = options.cache_dtype;
    q.state_dtype = options.state_dtype;
    reports.push_back(Cost(config, q));
  }
  const CostReport& r0 = reports.front();

  std::vector<LayerKind> kinds;
  for (const auto& l : config.layers) {
    if (std::find(kinds.begin(), kinds.end(), l.kind) == kinds.end()) kinds.push_back(l.kind);
  }
  bool any_nope = false, any_shared = false;
  for (const auto& l : config.layers) {
    any_nope |= HasKvCache(l.kind) && !l.rope;
    any_shared |= l.kv_source >= 0;
  }

  std::ostringstream os;
  int y = 0;
  const int strip_y = 86, strip_h = 26;
  const int legend_y = strip_y + strip_h + 18;
  const int legend_rows = static_cast<int>((kinds.size() + (any_nope || any_shared) + 2) / 3);
  const int facts_y = legend_y + legend_rows * 18 + 12;
  const int bars_y = facts_y + 58;
  const int bar_h = 18;
  const int estimate_h = config.IsEstimate() ? 18 : 0;  // the "estimate" note under the bars
  const int height = bars_y + static_cast<int>(reports.size()) * (bar_h + 8) + 26 + estimate_h;

  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << w << "\" height=\"" << height
     << "\" viewBox=\"0 0 " << w << " " << height
     << "\" font-family=\"Helvetica, Arial, sans-serif\" font-size=\"12\" role=\"img\">\n";
  os << "<title>" << Escape(config.name) << ": attention card</title>\n";
  os << "<rect x=\"0\" y=\"0\" width=\"" << w << "\" height=\"" << height
     << "\" fill=\"#ffffff\" stroke=\"#cccccc\"/>\n";
  y = pad + 14;
  os << "<text x=\"" << pad << "\" y=\"" << y << "\" font-size=\"17\" font-weight=\"bold\">"
     << Escape(config.name) << "</text>\n";
  y += 18;
  std::string sub = "model_type " + (config.model_type.empty() ? "?" : config.model_type) + " · " +
                    std::to_string(n) + " layers";
  if (config.mtp_layers > 0)
    sub += " (+" + std::to_string(config.mtp_layers) + " MTP, not counted)";
  sub += " · " + config.Summary();
  os << "<text x=\"" << pad << "\" y=\"" << y << "\" fill=\"#444444\">" << Escape(sub)
     << "</text>\n";
  y += 14;
  os << "<text x=\"" << pad << "\" y=\"" << y << "\" fill=\"#888888\" font-size=\"10\">"
     << Escape(config.source) << "</text>\n";

  // Layer strip: one cell per layer, NoPE layers lighter, KV-sharing layers outlined.
  const double cell = inner / static_cast<double>(n);
  os << "<g class=\"layer-strip\">\n";
  for (size_t i = 0; i < n; ++i) {
    const LayerSpec& l = config.layers[i];
    const double x = pad + cell * static_cast<double>(i);
    const bool nope = HasKvCache(l.kind) && !l.rope;
    os << "<rect x=\"" << Num(x) << "\" y=\"" << strip_y << "\" width=\""
       << Num(std::max(cell - 0.5, 0.5)) << "\" height=\"" << strip_h << "\" fill=\""
       << LayerKindColor(l.kind) << "\"";
    if (nope) os << " fill-opacity=\"0.55\"";
    if (l.kv_source >= 0) os << " fill-opacity=\"0.25\" stroke=\"#333333\" stroke-width=\"0.6\"";
    os << "><title>layer " << i << ": " << LayerKindName(l.kind);
    if (l.window > 0) os << " " << l.window;
    if (nope) os << ", no RoPE";
    if (l.kv_source >= 0) os << ", shares KV of layer " << l.kv_source;
    os << "</title></rect>\n";
  }
  os << "</g>\n";
  os << "<text x=\"" << pad << "\" y=\"" << strip_y - 4
     << "\" font-size=\"10\" fill=\"#666666\">layer 0</text>\n";
  os << "<text x=\"" << w - pad << "\" y=\"" << strip_y - 4
     << "\" font-size=\"10\" fill=\"#666666\" text-anchor=\"end\">layer " << n - 1 << "</text>\n";

  // Legend.
  std::vector<std::pair<std::string, std::string>> legend;  // colour, label
  for (LayerKind k : kinds) {
    std::string label = KindInfo(k).label + " ×" + std::to_string(config.Count(k));
    for (const auto& l : config.layers) {
      if (l.kind == k && l.window > 0) {
        const std::string& what = KindInfo(k).window_label;
        label += " (" + (what.empty() ? std::string("window") : what) + " " +
                 GroupDigits(l.window) + ")";
        break;
      }
    }
    legend.emplace_back(LayerKindColor(k), label);
  }
  if (any_nope) legend.emplace_back("nope", "lighter: no RoPE");
  if (any_shared) legend.emplace_back("shared", "outlined: reuses another layer's KV");
  const double col_w = inner / 3.0;
  for (size_t i = 0; i < legend.size(); ++i) {
    const double x = pad + col_w * static_cast<double>(i % 3);
    const int ly = legend_y + static_cast<int>(i / 3) * 18;
    const std::string& colour = legend[i].first;
    if (colour == "nope" || colour == "shared") {
      os << "<rect x=\"" << Num(x) << "\" y=\"" << ly - 10
         << "\" width=\"12\" height=\"12\" fill=\"#888888\" fill-opacity=\""
         << (colour == "nope" ? "0.55" : "0.25")
         << "\" stroke=\"#333333\" stroke-width=\"0.6\"/>\n";
    } else {
      os << "<rect x=\"" << Num(x) << "\" y=\"" << ly - 10
         << "\" width=\"12\" height=\"12\" fill=\"" << colour << "\"/>\n";
    }
    os << "<text x=\"" << Num(x + 17) << "\" y=\"" << ly << "\">" << Escape(legend[i].second)
       << "</text>\n";
  }

  // Facts.
  const std::string dt(DtypeName(options.cache_dtype)), st(DtypeName(options.state_dtype));
  std::string line1 =
      "KV cache: " + GroupDigits(r0.kv_bytes_per_token) + " bytes/token (" + dt + ")";
  if (r0.indexer_bytes_per_token > 0) {
    line1 += " + indexer " + GroupDigits(r0.indexer_bytes_per_token) + " bytes/token";
  }
  std::string line2 =
      "Fixed state: " +
      (r0.state_bytes > 0
           ? HumanBytes(static_cast<double>(r0.state_bytes)) + " per sequence (" + st + ", conv " +
                 HumanBytes(static_cast<double>(r0.conv_state_bytes)) + ")"
           : std::string("none"));
  os << "<text x=\"" << pad << "\" y=\"" << facts_y << "\" font-weight=\"bold\">" << Escape(line1)
     << "</text>\n";
  os << "<text x=\"" << pad << "\" y=\"" << facts_y + 18 << "\">" << Escape(line2) << "</text>\n";
  // Cache bars: KV, indexer and state stacked, one bar per context.
  struct Part {
    const char* label;
    const char* colour;
  };
  const Part kParts[] = {{"KV", "#4e79a7"}, {"indexer", "#b07aa1"}, {"state", "#f28e2b"}};
  const bool show[] = {true, r0.indexer_bytes_per_token > 0, r0.state_bytes > 0};
  os << "<text x=\"" << pad << "\" y=\"" << facts_y + 40
     << "\" fill=\"#444444\">Cache per sequence:</text>\n";
  double key_x = pad + 130;
  for (int p = 0; p < 3; ++p) {
    if (!show[p]) continue;
    os << "<rect x=\"" << Num(key_x) << "\" y=\"" << facts_y + 30
       << "\" width=\"12\" height=\"12\" fill=\"" << kParts[p].colour << "\"/><text x=\""
       << Num(key_x + 16) << "\" y=\"" << facts_y + 40 << "\" fill=\"#444444\">" << kParts[p].label
       << "</text>\n";
    key_x += 80;
  }
  double max_bytes = 1;
  for (const auto& r : reports) max_bytes = std::max(max_bytes, static_cast<double>(r.total_bytes));
  const double label_w = 60, value_w = 90;
  const double bar_max = inner - label_w - value_w;
  os << "<g class=\"cache-bars\">\n";
  for (size_t i = 0; i < reports.size(); ++i) {
    const auto& r = reports[i];
    const int by = bars_y + static_cast<int>(i) * (bar_h + 8);
    os << "<text x=\"" << pad << "\" y=\"" << by + 13 << "\">" << HumanTokens(r.query.context)
       << "</text>\n";
    const double parts[] = {static_cast<double>(r.kv_bytes_total),
                            static_cast<double>(r.indexer_bytes_total),
                            static_cast<double>(r.state_bytes_total)};
    double x = pad + label_w;
    for (int p = 0; p < 3; ++p) {
      if (parts[p] <= 0) continue;
      const double bw = std::max(0.5, bar_max * parts[p] / max_bytes);
      os << "<rect x=\"" << Num(x) << "\" y=\"" << by << "\" width=\"" << Num(bw) << "\" height=\""
         << bar_h << "\" fill=\"" << kParts[p].colour << "\"><title>" << kParts[p].label << ": "
         << GroupDigits(static_cast<int64_t>(parts[p])) << " bytes</title></rect>\n";
      x += bw;
    }
    os << "<text x=\"" << Num(x + 6) << "\" y=\"" << by + 13 << "\">"
       << HumanBytes(static_cast<double>(r.total_bytes)) << "</text>\n";
  }
  os << "</g>\n";
  if (config.IsEstimate()) {
    std::string fields;
    for (const auto& f : config.unmodelled) fields += (fields.empty() ? "" : ", ") + f;
    os << "<text class=\"estimate\" x=\"" << pad << "\" y=\"" << height - 12
       << "\" fill=\"#b00020\" font-weight=\"bold\">" << Escape("Estimate: ignores " + fields)
       << "</text>\n";
  }
  os << "</svg>\n";
  return os.str();
}

}  // namespace attnkit::models

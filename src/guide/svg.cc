// SVG writer and the guide's diagrams, sampled from the real mask objects.
#include "attnkit/guide/svg.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "attnkit/core/error.h"

namespace attnkit::guide {
namespace {

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f", v);
  std::string s = buf;
  while (!s.empty() && s.back() == '0') s.pop_back();
  if (!s.empty() && s.back() == '.') s.pop_back();
  return s;
}

constexpr const char* kEmptyFill = "#eef1f5";
constexpr const char* kGridStroke = "#ffffff";

}  // namespace

std::string CellGridSvg(const std::vector<uint8_t>& labels, int64_t rows, int64_t cols, double left,
                        double top, double cell, const std::vector<std::string>& fills, bool grid) {
  Require(rows >= 0 && cols >= 0 && labels.size() == static_cast<size_t>(rows * cols),
          "CellGridSvg: ", labels.size(), " labels for ", rows, " x ", cols, " cells");
  Require(fills.size() <= 255, "CellGridSvg: at most 255 fills, got ", fills.size());
  std::string out =
      "<g transform=\"translate(" + Num(left) + " " + Num(top) + ") scale(" + Num(cell) + ")\">";
  for (size_t f = 0; f < fills.size(); ++f) {
    const auto label = static_cast<uint8_t>(f + 1);
    std::string d;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols;) {
        if (labels[static_cast<size_t>(r * cols + c)] != label) {
          ++c;
          continue;
        }
        int64_t e = c + 1;
        while (e < cols && labels[static_cast<size_t>(r * cols + e)] == label) ++e;
        const std::string run = std::to_string(e - c);
        d += "M" + std::to_string(c) + " " + std::to_string(r) + "h" + run + "v1h-" + run + "z";
        c = e;
      }
    }
    if (!d.empty()) out += "<path fill=\"" + fills[f] + "\" d=\"" + d + "\"/>";
  }
  if (grid) {
    std::string d;
    for (int64_t c = 1; c < cols; ++c) d += "M" + std::to_string(c) + " 0v" + std::to_string(rows);
    for (int64_t r = 1; r < rows; ++r) d += "M0 " + std::to_string(r) + "h" + std::to_string(cols);
    if (!d.empty()) {
      out += std::string("<path fill=\"none\" stroke=\"") + kGridStroke +
             "\" stroke-width=\"0.6\" vector-effect=\"non-scaling-stroke\" d=\"" + d + "\"/>";
    }
  }
  return out + "</g>";
}

SvgDoc::SvgDoc(double width, double height, const std::string& title)
    : width_(width), height_(height), title_(title) {}

void SvgDoc::Rect(double x, double y, double w, double h, const std::string& fill,
                  const std::string& stroke, double stroke_width, const std::string& tooltip) {
  body_ += "<rect x=\"" + Num(x) + "\" y=\"" + Num(y) + "\" width=\"" + Num(w) + "\" height=\"" +
           Num(h) + "\" fill=\"" + fill + "\"";
  if (!stroke.empty())
    body_ += " stroke=\"" + stroke + "\" stroke-width=\"" + Num(stroke_width) + "\"";
  if (tooltip.empty()) {
    body_ += "/>";
  } else {
    body_ += "><title>" + XmlEscape(tooltip) + "</title></rect>";
  }
}

void SvgDoc::Line(double x1, double y1, double x2, double y2, const std::string& stroke,
                  double stroke_width, const std::string& dash) {
  body_ += "<line x1=\"" + Num(x1) + "\" y1=\"" + Num(y1) + "\" x2=\"" + Num(x2) + "\" y2=\"" +
           Num(y2) + "\" stroke=\"" + stroke + "\" stroke-width=\"" + Num(stroke_width) + "\"";
  if (!dash.empty()) body_ += " stroke-dasharray=\"" + dash + "\"";
  body_ += "/>";
}

void SvgDoc::Text(double x, double y, const std::string& text, double size,
                  const std::string& anchor, const std::string& fill, const std::string& weight,
                  double rotate) {
  body_ += "<text x=\"" + Num(x) + "\" y=\"" + Num(y) + "\" font-size=\"" + Num(size) +
           "\" text-anchor=\"" + anchor + "\" fill=\"" + fill + "\"";
  if (weight != "normal") body_ += " font-weight=\"" + weight + "\"";
  if (rotate != 0) {
    body_ += " transform=\"rotate(" + Num(rotate) + " " + Num(x) + " " + Num(y) + ")\"";
  }
  body_ += ">" + XmlEscape(text) + "</text>";
}

void SvgDoc::Raw(const std::string& svg_fragment) { body_ += svg_fragment; }

std::string SvgDoc::Finish() const {
  return "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + Num(width_) + "\" height=\"" +
         Num(height_) + "\" viewBox=\"0 0 " + Num(width_) + " " + Num(height_) +
         "\" font-family=\"Helvetica, Arial, sans-serif\" role=\"img\" aria-label=\"" +
         XmlEscape(title_) + "\"><title>" + XmlEscape(title_) + "</title>" +
         "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>" + body_ + "</svg>\n";
}

std::string MaskDiagram(const Mask& mask, int64_t seqlen_q, int64_t seqlen_kv,
                        const MaskDiagramOptions& options) {
  Require(seqlen_q >= 1 && seqlen_q <= 256 && seqlen_kv >= 1 && seqlen_kv <= 256,
          "MaskDiagram: seqlen_q and seqlen_kv must be in [1, 256], got ", seqlen_q, " and ",
          seqlen_kv);
  const double cell = options.cell > 0
                          ? options.cell
                          : std::max(2.0, std::floor(300.0 / std::max(seqlen_q, seqlen_kv)));
  const double left = 46, top = 44;
  const double w = cell * seqlen_kv, h = cell * seqlen_q;
  const bool legend = !options.legend.empty();
  // Wide enough for the bold title (about 8 px per character), the caption line and the legend
  // (about 6.3 px per character of 10.5 px text; counts up to six digits in parentheses); the
  // second legend entry starts after the first.
  const auto text_px = [](const std::string& text, double per_char) {
    return per_char * static_cast<double>(text.size());
  };
  const double legend2_x = 14 + std::max(176.0, text_px(options.legend, 6.3) + 60);
  double text_w = std::max(left + text_px(options.title, 8.0), left + 6.3 * 60) + 10;
  if (legend && options.background) {
    text_w = std::max(text_w, left + legend2_x + 14 + text_px(options.background_legend, 6.3) + 60);
  }
  SvgDoc doc(std::max({left + w + 16, legend ? 400.0 : 0.0, text_w}), top + h + (legend ? 58 : 40),
             options.title);
  doc.Text(left, 16, options.title, 13, "start", "#222", "bold");
  doc.Text(left + w / 2, 34, "key position k →", 11, "middle", "#555");
  doc.Text(16, top + h / 2, "query position q →", 11, "middle", "#555", "normal", -90);
  // Sample the pattern with the same call the kernel makes for a partial tile.
  const int64_t q_start = seqlen_kv - seqlen_q;  // bottom-right alignment
  std::vector<uint8_t> allowed(static_cast<size_t>(seqlen_q * seqlen_kv));
  mask.FillTile(q_start, q_start + seqlen_q, 0, seqlen_kv, allowed.data());
  std::vector<uint8_t> behind(allowed.size(), 0);
  if (options.background) {
    options.background->FillTile(q_start, q_start + seqlen_q, 0, seqlen_kv, behind.data());
  }
  int64_t kept = 0, extra = 0;
  std::vector<uint8_t> labels(allowed.size(), 0);  // 1 allowed, 2 background only, 0 neither
  for (size_t i = 0; i < allowed.size(); ++i) {
    const bool a = allowed[i] != 0;
    const bool b = !a && behind[i] != 0;
    kept += a;
    extra += b;
    labels[i] = a ? 1 : b ? 2 : 0;
  }
  doc.Rect(left, top, w, h, kEmptyFill);
  doc.Raw(CellGridSvg(labels, seqlen_q, seqlen_kv, left, top, cell,
                      {options.fill, options.background_fill}, cell >= 6));
  for (int64_t k : options.highlight_keys) {
    if (k < 0 || k >= seqlen_kv) continue;
    doc.Rect(left + k * cell, top, cell, h, "none", "#d9534f", 1.2);
  }
  doc.Rect(left, top, w, h, "none", "#888", 1);
  // Axis ticks at 0 and the last position.
  doc.Text(left, top + h + 14, "0", 10, "middle", "#555");
  doc.Text(left + w - cell / 2, top + h + 14, std::to_string(seqlen_kv - 1), 10, "middle", "#555");
  char buf[160];
  std::snprintf(buf, sizeof buf, "%lld of %lld pairs allowed (%.1f%%), sampled with %s",
                static_cast<long long>(kept), static_cast<long long>(seqlen_q * seqlen_kv),
                100.0 * static_cast<double>(kept) / static_cast<double>(seqlen_q * seqlen_kv),
                "Mask::FillTile");
  doc.Text(left, top + h + 30, buf, 10.5, "start", "#444");
  if (legend) {
    const double ly = top + h + 48;
    doc.Rect(left, ly - 9, 10, 10, options.fill);
    doc.Text(left + 14, ly, options.legend + " (" + std::to_string(kept) + ")", 10.5);
    if (options.background) {
      doc.Rect(left + legend2_x, ly - 9, 10, 10, options.background_fill);
      doc.Text(left + legend2_x + 14, ly,
               options.background_legend + " (" + std::to_string(extra) + ")", 10.5);
    }
  }
  return doc.Finish();
}

std::string TileMapDiagram(const Mask& mask, int64_t seqlen, int64_t block,
                           const std::string& title, TileCounts* counts) {
  Require(seqlen >= 1 && block >= 1, "TileMapDiagram: seqlen (", seqlen, ") and block (", block,
          ") must be positive");
  const int64_t n = (seqlen + block - 1) / block;
  Require(n <= 128, "TileMapDiagram: at most 128 tiles per side, got ", n, " (seqlen ", seqlen,
          ", block ", block, ")");
  const double cell = std::max(2.0, std::floor(300.0 / static_cast<double>(n)));
  const double left = 46, top = 44, side = cell * static_cast<double>(n);
  SvgDoc doc(std::max(left + side + 16, 430.0), top + side + 58, title);
  doc.Text(left, 16, title, 13, "start", "#222", "bold");
  doc.Text(left + side / 2, 34, "key block →", 11, "middle", "#555");
  doc.Text(16, top + side / 2, "query block →", 11, "middle", "#555", "normal", -90);
  TileCounts c;
  const char* kFullFill = "#3b6fb6";
  const char* kPartialFill = "#9cc0ea";
  std::vector<uint8_t> labels(static_cast<size_t>(n * n), 0);  // 1 full, 2 partial, 0 empty
  for (int64_t qb = 0; qb < n; ++qb) {
    for (int64_t kb = 0; kb < n; ++kb) {
      const int64_t q0 = qb * block, q1 = std::min(seqlen, q0 + block);
      const int64_t k0 = kb * block, k1 = std::min(seqlen, k0 + block);
      const TileKind kind = mask.Classify(q0, q1, k0, k1);
      uint8_t& label = labels[static_cast<size_t>(qb * n + kb)];
      if (kind == TileKind::kFull) {
        label = 1;
        ++c.full;
      } else if (kind == TileKind::kPartial) {
        label = 2;
        ++c.partial;
      } else {
        ++c.empty;
      }
    }
  }
  doc.Rect(left, top, side, side, kEmptyFill);
  doc.Raw(CellGridSvg(labels, n, n, left, top, cell, {kFullFill, kPartialFill}, cell >= 6));
  doc.Rect(left, top, side, side, "none", "#888", 1);
  const double ly = top + side + 18;
  const int64_t total = c.full + c.partial + c.empty;
  auto pct = [&](int64_t v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.1f%%",
                  100.0 * static_cast<double>(v) / static_cast<double>(total));
    return std::string(b);
  };
  doc.Rect(left, ly - 9, 10, 10, kFullFill);
  doc.Text(left + 14, ly, "full " + std::to_string(c.full) + " (" + pct(c.full) + ")", 10.5);
  doc.Rect(left + 120, ly - 9, 10, 10, kPartialFill);
  doc.Text(left + 134, ly, "partial " + std::to_string(c.partial) + " (" + pct(c.partial) + ")",
           10.5);
  doc.Rect(left + 250, ly - 9, 10, 10, kEmptyFill, "#bbb", 0.5);
  doc.Text(left + 264, ly, "skipped " + std::to_string(c.empty) + " (" + pct(c.empty) + ")", 10.5);
  doc.Text(left, ly + 18,
           std::to_string(n) + "×" + std::to_string(n) + " tiles of " + std::to_string(block) +
               "×" + std::to_string(block) + " tokens, classified with Mask::Classify",
           10.5, "start", "#444");
  if (counts) *counts = c;
  return doc.Finish();
}

std::string HeadSharingDiagram(const std::vector<HeadPanel>& panels, const std::string& title) {
  Require(!panels.empty(), "HeadSharingDiagram: no panels");
  int64_t max_q = 1;
  for (const auto& p : panels) {
    Require(p.num_heads_q >= 1 && p.num_heads_kv >= 1 && p.num_heads_q % p.num_heads_kv == 0,
            "HeadSharingDiagram: num_heads_kv (", p.num_heads_kv, ") must divide num_heads_q (",
            p.num_heads_q, ") in panel '", p.label, "'");
    max_q = std::max(max_q, p.num_heads_q);
  }
  const double box = 18, gap = 6;
  const double panel_w = static_cast<double>(max_q) * (box + gap) + 20;
  const double width = panel_w * static_cast<double>(panels.size()) + 20;
  SvgDoc doc(width, 200, title);
  doc.Text(10, 16, title, 13, "start", "#222", "bold");
  static const char* kPalette[] = {"#3b6fb6", "#e08a2c", "#4a9a5b", "#c0504d",
                                   "#8064a2", "#2c9fae", "#b5873a", "#7f7f7f"};
  for (size_t pi = 0; pi < panels.size(); ++pi) {
    const auto& p = panels[pi];
    const double x0 = 10 + panel_w * static_cast<double>(pi);
    const int64_t group = p.num_heads_q / p.num_heads_kv;
    doc.Text(x0 + panel_w / 2 - 10, 40, p.label, 12.5, "middle", "#222", "bold");
    const double qy = 56, ky = 140;
    const double q_span = static_cast<double>(p.num_heads_q) * (box + gap) - gap;
    const double qx0 = x0 + (panel_w - 20 - q_span) / 2;
    const double kv_step = q_span / static_cast<double>(p.num_heads_kv);
    for (int64_t hk = 0; hk < p.num_heads_kv; ++hk) {
      const std::string color = kPalette[hk % 8];
      const double kx = qx0 + kv_step * (static_cast<double>(hk) + 0.5) - box / 2;
      for (int64_t g = 0; g < group; ++g) {
        const int64_t h = hk * group + g;
        const double qx = qx0 + static_cast<double>(h) * (box + gap);
        doc.Line(qx + box / 2, qy + box, kx + box / 2, ky, color, 1.4);
        doc.Rect(qx, qy, box, box, "#ffffff", color, 1.6,
                 "query head " + std::to_string(h) + " reads KV head " + std::to_string(hk));
      }
      doc.Rect(kx, ky, box, box, color, color, 1,
               "KV head " + std::to_string(hk) + " shared by " + std::to_string(group) +
                   " query head(s)");
    }
    doc.Text(x0 + panel_w / 2 - 10, 176,
             std::to_string(p.num_heads_q) + " q heads / " + std::to_string(p.num_heads_kv) +
                 " KV heads",
             10.5, "middle", "#444");
    doc.Text(x0 + panel_w / 2 - 10, 190,
             "group size " + std::to_string(group) + ", KV cache ×1/" + std::to_string(group), 10.5,
             "middle", "#444");
  }
  doc.Text(10, 74, "q", 10, "start", "#777");
  doc.Text(10, 156, "kv", 10, "start", "#777");
  return doc.Finish();
}

std::string LayerStripDiagram(const std::vector<LayerCell>& layers, const std::string& title) {
  Require(!layers.empty(), "LayerStripDiagram: no layers");
  const double cell = std::clamp(560.0 / static_cast<double>(layers.size()), 4.0, 28.0);
  const double left = 10, top = 30;
  std::vector<std::pair<std::string, std::string>> legend;
  std::map<std::string, int64_t> count;
  for (const auto& l : layers) {
    if (count[l.kind]++ == 0) legend.emplace_back(l.kind, l.color);
  }
  const double width = std::max(left + cell * static_cast<double>(layers.size()) + 10, 380.0);
  SvgDoc doc(width, top + 40 + 16 * static_cast<double>(legend.size()), title);
  doc.Text(left, 16, title, 13, "start", "#222", "bold");
  for (size_t i = 0; i < layers.size(); ++i) {
    doc.Rect(left + cell * static_cast<double>(i), top, cell - (cell > 6 ? 1 : 0), 24,
             layers[i].color, "", 0, "layer " + std::to_string(i) + ": " + layers[i].kind);
  }
  double y = top + 44;
  for (const auto& [kind, color] : legend) {
    doc.Rect(left, y - 9, 10, 10, color);
    doc.Text(left + 14, y, kind + " × " + std::to_string(count[kind]), 10.5);
    y += 16;
  }
  return doc.Finish();
}

}  // namespace attnkit::guide

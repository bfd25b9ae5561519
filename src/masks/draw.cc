// Mask pictures (grid sampling, ASCII, SVG) drawn from the Mask objects themselves.
#include "attnkit/masks/draw.h"

#include <algorithm>
#include <cstdio>
#include <sstream>

#include "attnkit/core/error.h"
#include "attnkit/core/xml.h"

namespace attnkit {

MaskGrid SampleMask(const Mask* mask, int64_t seqlen_q, int64_t seqlen_kv, int64_t max_cells,
                    int64_t max_rows_per_cell) {
  Require(seqlen_q >= 1, "SampleMask: seqlen_q must be >= 1, got ", seqlen_q);
  Require(seqlen_kv >= 1, "SampleMask: seqlen_kv must be >= 1, got ", seqlen_kv);
  Require(max_cells >= 1, "SampleMask: max_cells must be >= 1, got ", max_cells);
  Require(max_rows_per_cell >= 1, "SampleMask: max_rows_per_cell must be >= 1, got ",
          max_rows_per_cell);
  MaskGrid g;
  g.seqlen_q = seqlen_q;
  g.seqlen_kv = seqlen_kv;
  // One cell size for both axes, so a square pattern stays square.
  const int64_t longest = std::max(seqlen_q, seqlen_kv);
  const int64_t cell = (longest + max_cells - 1) / max_cells;
  g.cell_q = g.cell_kv = cell;
  g.rows = (seqlen_q + cell - 1) / cell;
  g.cols = (seqlen_kv + cell - 1) / cell;
  g.coverage.assign(static_cast<size_t>(g.rows * g.cols), 1.0f);
  g.description = mask ? mask->Describe() : "none (all pairs)";
  g.density = MaskDensity(mask, seqlen_q, seqlen_kv);
  if (mask == nullptr) return g;
  const int64_t q_off = seqlen_kv - seqlen_q;
  std::vector<uint8_t> buf;
  for (int64_t r = 0; r < g.rows; ++r) {
    const int64_t i0 = r * cell, i1 = std::min(seqlen_q, i0 + cell);
    for (int64_t c = 0; c < g.cols; ++c) {
      const int64_t j0 = c * cell, j1 = std::min(seqlen_kv, j0 + cell);
      float& out = g.coverage[r * g.cols + c];
      switch (mask->Classify(i0 + q_off, i1 + q_off, j0, j1)) {
        case TileKind::kEmpty:
          out = 0.0f;
          continue;
        case TileKind::kFull:
          out = 1.0f;
          continue;
        case TileKind::kPartial:
          break;
      }
      const int64_t h = i1 - i0, w = j1 - j0;
      const int64_t samples = std::min(h, max_rows_per_cell);
      buf.resize(static_cast<size_t>(w));
      int64_t allowed = 0;
      for (int64_t m = 0; m < samples; ++m) {
        const int64_t i = samples == h ? i0 + m : i0 + (m * h + h / 2) / samples;
        mask->FillTile(i + q_off, i + q_off + 1, j0, j1, buf.data());
        for (int64_t x = 0; x < w; ++x) allowed += buf[x];
      }
      out = static_cast<float>(static_cast<double>(allowed) / static_cast<double>(samples * w));
    }
  }
  return g;
}

std::string MaskAscii(const MaskGrid& g) {
  std::ostringstream os;
  char density[32];
  std::snprintf(density, sizeof density, "%.4f", g.density);
  os << g.description << "  seqlen_q=" << g.seqlen_q << " seqlen_kv=" << g.seqlen_kv
     << " density=" << density;
  if (g.cell_q > 1) os << "  (one character = " << g.cell_q << "x" << g.cell_kv << " pairs)";
  os << "\n";
  for (int64_t r = 0; r < g.rows; ++r) {
    for (int64_t c = 0; c < g.cols; ++c) {
      const float v = g.coverage[r * g.cols + c];
      char ch;
      if (g.cell_q == 1 && g.cell_kv == 1) {
        ch = v > 0.5f ? '#' : '.';
      } else {
        ch = v <= 0.0f ? ' ' : v < 1.0f / 3 ? '.' : v < 2.0f / 3 ? '+' : v < 1.0f ? '#' : '@';
      }
      os << ch;
    }
    os << "\n";
  }
  return os.str();
}

std::string MaskSvg(const MaskGrid& g, int64_t pixels) {
  Require(pixels >= 16, "MaskSvg: pixels must be >= 16, got ", pixels);
  const double cell = static_cast<double>(pixels) / static_cast<double>(std::max(g.rows, g.cols));
  const double left = 40, top = 44;
  const double width = cell * static_cast<double>(g.cols),
               height = cell * static_cast<double>(g.rows);
  // Wide enough for the two heading lines (about 7 px per character of 12 px text).
  const std::string heading = g.description;
  std::ostringstream sub;
  char density[32];
  std::snprintf(density, sizeof density, "%.4f", g.density);
  sub << "seqlen_q " << g.seqlen_q << " × seqlen_kv " << g.seqlen_kv << ", density " << density
      << ", cell " << g.cell_q << "×" << g.cell_kv << " pairs";
  const double text_w =
      left + 7.0 * static_cast<double>(std::max(heading.size(), sub.str().size())) + 12;
  std::ostringstream os;
  os.precision(4);
  os << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << std::max(left + width + 12, text_w)
     << "\" height=\"" << top + height + 28 << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  os << "<title>" << XmlEscape(heading) << "</title>\n";
  os << "<text x=\"" << left << "\" y=\"16\">" << XmlEscape(heading) << "</text>\n";
  os << "<text x=\"" << left << "\" y=\"32\" fill=\"#555\">" << sub.str() << "</text>\n";
  os << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << width << "\" height=\""
     << height << "\" fill=\"#f7f7f7\" stroke=\"#999\"/>\n";
  // Runs of equal coverage along a row become one rectangle. Any allowed pair stays visible
  // (opacity at least 0.12); full cells are opaque.
  for (int64_t r = 0; r < g.rows; ++r) {
    int64_t c = 0;
    while (c < g.cols) {
      const float v = g.coverage[r * g.cols + c];
      int64_t e = c + 1;
      while (e < g.cols && g.coverage[r * g.cols + e] == v) ++e;
      if (v > 0.0f) {
        os << "<rect x=\"" << left + cell * static_cast<double>(c) << "\" y=\""
           << top + cell * static_cast<double>(r) << "\" width=\""
           << cell * static_cast<double>(e - c) << "\" height=\"" << cell
           << "\" fill=\"#1f5fbf\" fill-opacity=\"" << std::max(0.12f, v) << "\"/>\n";
      }
      c = e;
    }
  }
  os << "<text x=\"" << left << "\" y=\"" << top + height + 18 << "\">key position → (0 … "
     << g.seqlen_kv - 1 << ")</text>\n";
  os << "<text transform=\"translate(" << left - 10 << "," << top
     << ") rotate(90)\">query "
        "position → (0 … "
     << g.seqlen_q - 1 << ")</text>\n";
  os << "</svg>\n";
  return os.str();
}

}  // namespace attnkit

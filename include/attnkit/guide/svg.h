// Diagrams of the visual guide, drawn as standalone SVG documents from the real library objects:
// a mask is sampled through Mask::FillTile / Mask::Classify (the calls the kernels make), so a
// diagram cannot disagree with what the kernel computes.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/core/xml.h"
#include "attnkit/masks/mask.h"

namespace attnkit::guide {

// A small SVG writer: shapes are appended in order; Finish() returns the document.
class SvgDoc {
 public:
  SvgDoc(double width, double height, const std::string& title);
  void Rect(double x, double y, double w, double h, const std::string& fill,
            const std::string& stroke = "", double stroke_width = 0,
            const std::string& tooltip = "");
  void Line(double x1, double y1, double x2, double y2, const std::string& stroke,
            double stroke_width = 1, const std::string& dash = "");
  // anchor: "start", "middle" or "end"; rotate: degrees around (x, y).
  void Text(double x, double y, const std::string& text, double size = 12,
            const std::string& anchor = "start", const std::string& fill = "#222",
            const std::string& weight = "normal", double rotate = 0);
  void Raw(const std::string& svg_fragment);  // trusted fragment written by attnkit code
  std::string Finish() const;

 private:
  double width_, height_;
  std::string title_;
  std::string body_;
};

// A grid of rows × cols cells (row-major labels) as an SVG fragment: a group placed at
// (left, top) and scaled to `cell` pixels per cell, holding one path per fill (label 1 →
// fills[0], label 2 → fills[1], …; label 0 is not drawn) made of run-length rectangles in cell
// units ("M col row h run v1 h-run z" for each run of equal labels along a row), and, when `grid`,
// white lines between the cells. One <rect> per cell made a 256 × 256 mask 240 KB; the runs make
// it a few KB.
std::string CellGridSvg(const std::vector<uint8_t>& labels, int64_t rows, int64_t cols, double left,
                        double top, double cell, const std::vector<std::string>& fills,
                        bool grid = false);

// Escapes &, <, >, " and ' for XML text and attributes.
using attnkit::XmlEscape;  // core/xml.h

// The attention pattern of `mask` over seqlen_q queries and seqlen_kv keys (bottom-right aligned
// as in the kernels), one cell per (query, key) pair, sampled with mask.FillTile over the whole
// rectangle. Rows are queries (top = first), columns keys. seqlen_q, seqlen_kv in [1, 256].
struct MaskDiagramOptions {
  std::string title;
  std::string fill = "#3b6fb6";         // allowed pairs
  double cell = 0;                      // pixels per cell; 0 → fit into about 300 px
  std::vector<int64_t> highlight_keys;  // columns to outline (e.g. global tokens)
  // Optional second mask: pairs it allows that `mask` does not are drawn in background_fill
  // (e.g. the causal pairs a top-k selection left out, or the pairs a linear layer reaches
  // through its running state), with legend entries for both.
  const Mask* background = nullptr;
  std::string background_fill = "#f2b880";
  std::string legend;             // label of `mask`'s pairs
  std::string background_legend;  // label of the background's extra pairs
};
std::string MaskDiagram(const Mask& mask, int64_t seqlen_q, int64_t seqlen_kv,
                        const MaskDiagramOptions& options);

// The tiles the dense kernel visits for `mask` at seqlen × seqlen with square blocks of
// `block` tokens, from mask.Classify: full (computed without checks), partial (checked per
// element) and empty (skipped), with the counts in the legend. At most 128 × 128 tiles.
struct TileCounts {
  int64_t full = 0, partial = 0, empty = 0;
};
std::string TileMapDiagram(const Mask& mask, int64_t seqlen, int64_t block,
                           const std::string& title, TileCounts* counts = nullptr);

// Which query heads read which key/value head, for a few (num_heads_q, num_heads_kv) panels side
// by side, each with its label (e.g. "MHA", "GQA", "MQA"); num_heads_q % num_heads_kv == 0.
struct HeadPanel {
  std::string label;
  int64_t num_heads_q = 8;
  int64_t num_heads_kv = 8;
};
std::string HeadSharingDiagram(const std::vector<HeadPanel>& panels, const std::string& title);

// A layer stack as a strip of cells, one per layer, coloured by kind, with a legend.
struct LayerCell {
  std::string kind;   // legend label, e.g. "sliding window 1024"
  std::string color;  // fill
};
std::string LayerStripDiagram(const std::vector<LayerCell>& layers, const std::string& title);

}  // namespace attnkit::guide

// Pictures of masks, sampled from the very Mask objects the kernels obey: a coverage grid (for
// the visual guide and any plot), ASCII art for small sequences and a self-contained SVG.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "attnkit/masks/mask.h"

namespace attnkit {

// A rows × cols grid over seqlen_q × seqlen_kv pairs (bottom-right aligned, as the kernel uses
// them): cell (r, c) covers query rows [r·cell_q, (r+1)·cell_q) and key rows
// [c·cell_kv, (c+1)·cell_kv) (the last row/column may be smaller), and holds the fraction of its
// pairs the mask allows. Exact for cells the mask classifies as empty or full, and for partial
// cells of up to max_rows_per_cell query rows; taller partial cells are sampled on
// max_rows_per_cell evenly spaced query rows (every key of those rows is evaluated).
struct MaskGrid {
  int64_t seqlen_q = 0, seqlen_kv = 0;
  int64_t rows = 0, cols = 0;
  int64_t cell_q = 1, cell_kv = 1;
  std::vector<float> coverage;  // [rows * cols], row-major, in [0, 1]
  std::string description;      // mask->Describe()
  double density = 0;           // exact fraction of allowed pairs (MaskDensity)
};

// max_cells: the most cells along each axis (cells are square in pairs when seqlen_q ==
// seqlen_kv). mask may be null (everything allowed). Errors: non-positive sizes.
MaskGrid SampleMask(const Mask* mask, int64_t seqlen_q, int64_t seqlen_kv, int64_t max_cells = 256,
                    int64_t max_rows_per_cell = 16);

// Text picture, one line per grid row after a header line (description, density, cell size).
// Cells of one pair: '#' allowed, '.' masked. Larger cells: ' ' empty, '.' coverage < 1/3,
// '+' < 2/3, '#' < 1, '@' full.
std::string MaskAscii(const MaskGrid& grid);

// A standalone SVG (no scripts, no external references): one square per non-empty cell, shaded by
// coverage, with a title line (description, density) and axis captions.
std::string MaskSvg(const MaskGrid& grid, int64_t pixels = 512);

}  // namespace attnkit

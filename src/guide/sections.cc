// The guide's section list (page order), sweep sizes, and the progress context.
#include "guide/sections.h"

#include <algorithm>

namespace attnkit::guide::detail {

SweepConfig MakeSweepConfig(SweepSize size, int64_t max_seqlen, int threads) {
  SweepConfig c;
  c.size = size;
  c.threads = threads;
  switch (size) {
    case SweepSize::kSmoke:
      c.prefill_first = 128, c.prefill_last = 1024, c.decode_first = 256, c.decode_last = 4096;
      c.point_budget_seconds = 0.5;
      break;
    case SweepSize::kQuick:
      c.prefill_first = 256, c.prefill_last = 16384, c.decode_first = 1024, c.decode_last = 32768;
      c.point_budget_seconds = 3;
      break;
    case SweepSize::kFull:
      c.prefill_first = 256, c.prefill_last = 65536, c.decode_first = 1024, c.decode_last = 131072;
      c.point_budget_seconds = 40;
      break;
  }
  if (max_seqlen > 0) {
    c.prefill_last = max_seqlen;
    c.decode_last = max_seqlen;
    c.prefill_first = std::min(c.prefill_first, max_seqlen);
    c.decode_first = std::min(c.decode_first, max_seqlen);
  }
  return c;
}

void Context::Step(const std::string& what) {
  ++done_;
  if (progress_) progress_(std::min(done_, total_), total_, what);
}

const std::vector<SectionSpec>& Sections() {
  static const std::vector<SectionSpec> sections = {HeadsSection(), WindowSection(),
                                                    CompareSection()};
  return sections;
}

}  // namespace attnkit::guide::detail

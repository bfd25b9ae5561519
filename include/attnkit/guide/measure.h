// Measurement helpers of the visual guide: median wall time, peak resident memory of a run,
// the machine's available memory, and an adaptive sequence-length sweep that stops before a
// point would exceed its time budget (so --quick stays quick on slow machines and kernels).
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace attnkit::guide {

// Wall time of repeated runs: the median and the spread (fastest and slowest run).
struct Timing {
  double median = 0;
  double min = 0;
  double max = 0;
  int reps = 0;
};

// Times fn() over at least min_reps runs, repeating until min_total_seconds have passed or
// max_reps runs were made (one untimed warm-up run first when warmup is true).
Timing TimeRepeats(const std::function<void()>& fn, int min_reps = 3, int max_reps = 15,
                   double min_total_seconds = 0.2, bool warmup = true);
// TimeRepeats(...).median.
double MedianSeconds(const std::function<void()>& fn, int min_reps = 3, int max_reps = 15,
                     double min_total_seconds = 0.2, bool warmup = true);

// Peak resident memory of the process between Start() and PeakBytes(), above the resident size
// at Start(). Uses Linux's resettable high-water mark (/proc/self/clear_refs "5", VmHWM);
// Supported() is false where that is not available, and PeakBytes() then returns -1.
class PeakMemory {
 public:
  static bool Supported();
  void Start();
  int64_t PeakBytes() const;

 private:
  int64_t base_rss_ = 0;
  bool ok_ = false;
};

// MemAvailable from /proc/meminfo in bytes (0 if unknown), and MemTotal.
int64_t AvailableMemoryBytes();
int64_t TotalMemoryBytes();

// One measured point of a sweep over sequence length.
struct SweepPoint {
  int64_t seqlen = 0;
  double seconds = 0;       // median wall time
  double seconds_min = 0;   // fastest repeat (the spread drawn as an error bar)
  double seconds_max = 0;   // slowest repeat
  int reps = 0;             // timed repeats (0: not timed)
  int64_t peak_bytes = -1;  // peak resident memory of the run (-1: not measured)
  double value = 0;         // a secondary measured value (e.g. error), section specific
};

// Sweeps seqlen = first, 2·first, … ≤ last. Before each point after the second it predicts the
// point's time from the last two points (time ∝ seqlen^slope, slope from those points, at least
// min_slope) and stops when the prediction exceeds point_budget_seconds. on_point is called after
// each point (for progress); on_skip for each planned point that was not run.
struct SweepOptions {
  int64_t first = 256;
  int64_t last = 4096;
  double point_budget_seconds = 5;
  double min_slope = 1;
  double max_slope = 2.5;  // caps the extrapolation when noise makes two points look steeper
};
// Copies a Timing into a point's seconds / seconds_min / seconds_max / reps.
void SetTiming(SweepPoint& p, const Timing& t);

std::vector<SweepPoint> SeqlenSweep(const SweepOptions& options,
                                    const std::function<SweepPoint(int64_t seqlen)>& measure,
                                    const std::function<void(const SweepPoint&)>& on_point,
                                    const std::function<void(int64_t seqlen)>& on_skip);
// Number of points SeqlenSweep plans for [first, last].
int64_t SweepPlannedPoints(int64_t first, int64_t last);

// Human-readable byte count ("1.50 GiB", "384 KiB", "512 B").
std::string FormatBytes(double bytes);
// Token count with k / M suffix for powers of two ("4k", "128k", "1M", "1000").
std::string FormatTokens(int64_t tokens);

}  // namespace attnkit::guide

// Measurement helpers of the guide: timing, peak resident memory, sequence-length sweeps.
#include "attnkit/guide/measure.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>

#include "attnkit/core/checked.h"
#include "attnkit/core/error.h"

namespace attnkit::guide {
namespace {

using Clock = std::chrono::steady_clock;

}  // namespace

Timing TimeRepeats(const std::function<void()>& fn, int min_reps, int max_reps,
                   double min_total_seconds, bool warmup) {
  Require(min_reps >= 1 && max_reps >= min_reps, "TimeRepeats: need 1 <= min_reps (", min_reps,
          ") <= max_reps (", max_reps, ")");
  if (warmup) fn();
  std::vector<double> times;
  const auto start = Clock::now();
  while (static_cast<int>(times.size()) < max_reps) {
    const auto t0 = Clock::now();
    fn();
    times.push_back(std::chrono::duration<double>(Clock::now() - t0).count());
    const double elapsed = std::chrono::duration<double>(Clock::now() - start).count();
    if (static_cast<int>(times.size()) >= min_reps && elapsed >= min_total_seconds) break;
  }
  std::sort(times.begin(), times.end());
  const size_t n = times.size();
  Timing t;
  t.median = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
  t.min = times.front();
  t.max = times.back();
  t.reps = static_cast<int>(n);
  return t;
}

double MedianSeconds(const std::function<void()>& fn, int min_reps, int max_reps,
                     double min_total_seconds, bool warmup) {
  return TimeRepeats(fn, min_reps, max_reps, min_total_seconds, warmup).median;
}

void SetTiming(SweepPoint& p, const Timing& t) {
  p.seconds = t.median;
  p.seconds_min = t.min;
  p.seconds_max = t.max;
  p.reps = t.reps;
}

bool PeakMemory::Supported() {
  static const bool supported = ResetPeakResident() && ProcStatusBytes("VmHWM") > 0;
  return supported;
}

void PeakMemory::Start() {
  ok_ = Supported() && ResetPeakResident();
  base_rss_ = ok_ ? ProcStatusBytes("VmRSS") : 0;
  ok_ = ok_ && base_rss_ > 0;
}

int64_t PeakMemory::PeakBytes() const {
  if (!ok_) return -1;
  const int64_t hwm = ProcStatusBytes("VmHWM");
  return hwm < 0 ? -1 : std::max<int64_t>(0, hwm - base_rss_);
}

int64_t AvailableMemoryBytes() {
  return std::max<int64_t>(0, ProcFieldBytes("/proc/meminfo", "MemAvailable"));
}
int64_t TotalMemoryBytes() {
  return std::max<int64_t>(0, ProcFieldBytes("/proc/meminfo", "MemTotal"));
}

int64_t SweepPlannedPoints(int64_t first, int64_t last) {
  int64_t n = 0;
  for (int64_t s = first; s <= last; s *= 2) ++n;
  return n;
}

std::vector<SweepPoint> SeqlenSweep(const SweepOptions& o,
                                    const std::function<SweepPoint(int64_t)>& measure,
                                    const std::function<void(const SweepPoint&)>& on_point,
                                    const std::function<void(int64_t)>& on_skip) {
  Require(o.first >= 1 && o.last >= o.first, "SeqlenSweep: need 1 <= first (", o.first,
          ") <= last (", o.last, ")");
  std::vector<SweepPoint> points;
  bool stopped = false;
  for (int64_t s = o.first; s <= o.last; s *= 2) {
    if (!stopped && points.size() >= 2) {
      const SweepPoint& a = points[points.size() - 2];
      const SweepPoint& b = points.back();
      double slope = o.min_slope;
      if (a.seconds > 0 && b.seconds > 0) {
        slope = std::clamp(
            std::log(b.seconds / a.seconds) / std::log(static_cast<double>(b.seqlen) / a.seqlen),
            o.min_slope, std::max(o.min_slope, o.max_slope));
      }
      const double predicted =
          b.seconds * std::pow(static_cast<double>(s) / static_cast<double>(b.seqlen), slope);
      stopped = predicted > o.point_budget_seconds;
    }
    if (stopped) {
      if (on_skip) on_skip(s);
      continue;
    }
    points.push_back(measure(s));
    if (on_point) on_point(points.back());
  }
  return points;
}

std::string FormatBytes(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (std::abs(bytes) >= 1024 && u < 4) {
    bytes /= 1024;
    ++u;
  }
  char buf[32];
  if (u == 0) {
    std::snprintf(buf, sizeof buf, "%.0f B", bytes);
  } else {
    std::snprintf(buf, sizeof buf, bytes >= 100 ? "%.0f %s" : "%.3g %s", bytes, units[u]);
  }
  return buf;
}

std::string FormatTokens(int64_t t) {
  if (t >= (1 << 20) && t % (1 << 20) == 0) return std::to_string(t >> 20) + "M";
  if (t >= 1024 && t % 1024 == 0) return std::to_string(t >> 10) + "k";
  return std::to_string(t);
}

}  // namespace attnkit::guide

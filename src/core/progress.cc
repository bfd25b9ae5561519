// The stderr progress bar (tty: one redrawn line; otherwise occasional plain lines).
#include "attnkit/core/progress.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>

namespace attnkit {
namespace {
std::atomic<bool> g_quiet{false};
constexpr double kTtyInterval = 0.1;    // seconds between redraws on a terminal
constexpr double kPlainInterval = 5.0;  // seconds between plain lines in logs
constexpr int kWidth = 30;
}  // namespace

void SetProgressQuiet(bool quiet) { g_quiet.store(quiet); }
bool ProgressQuiet() { return g_quiet.load(); }

Progress::Progress(std::string label, int64_t total, bool quiet)
    : label_(std::move(label)),
      total_(total < 0 ? 0 : total),
      quiet_(quiet || ProgressQuiet()),
      tty_(isatty(STDERR_FILENO) != 0),
      start_(std::chrono::steady_clock::now()),
      last_draw_(start_) {
  if (!quiet_ && tty_) {
    std::lock_guard<std::mutex> lock(mu_);
    DrawLocked(false);
  }
}

Progress::~Progress() { Finish(); }

void Progress::Advance(int64_t steps) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ += steps;
  DrawLocked(false);
}

void Progress::Set(int64_t done) {
  std::lock_guard<std::mutex> lock(mu_);
  done_ = done;
  DrawLocked(false);
}

void Progress::SetNote(const std::string& note) {
  std::lock_guard<std::mutex> lock(mu_);
  note_ = note;
  DrawLocked(false);
}

void Progress::Finish() {
  std::lock_guard<std::mutex> lock(mu_);
  if (finished_) return;
  DrawLocked(true);
  finished_ = true;
}

void Progress::DrawLocked(bool final_draw) {
  if (quiet_ || finished_) return;
  const auto now = std::chrono::steady_clock::now();
  const double since = std::chrono::duration<double>(now - last_draw_).count();
  if (!final_draw && since < (tty_ ? kTtyInterval : kPlainInterval) && done_ != 0) return;
  last_draw_ = now;
  const double elapsed = std::chrono::duration<double>(now - start_).count();
  char counts[64];
  if (total_ > 0) {
    std::snprintf(counts, sizeof counts, "%lld/%lld", static_cast<long long>(done_),
                  static_cast<long long>(total_));
  } else {
    std::snprintf(counts, sizeof counts, "%lld", static_cast<long long>(done_));
  }
  std::string bar;
  if (total_ > 0) {
    const int64_t filled = std::min<int64_t>(kWidth, done_ * kWidth / total_);
    bar = "[" + std::string(static_cast<size_t>(filled), '#') +
          std::string(static_cast<size_t>(kWidth - filled), '.') + "] ";
  }
  const std::string note = note_.empty() ? "" : "  " + note_;
  if (tty_) {
    std::fprintf(stderr, "\r\033[K%s %s%s  %.1fs%s%s", label_.c_str(), bar.c_str(), counts, elapsed,
                 note.c_str(), final_draw ? "\n" : "");
  } else {
    std::fprintf(stderr, "%s: %s  %.1fs%s%s\n", label_.c_str(), counts, elapsed, note.c_str(),
                 final_draw ? "  done" : "");
  }
  std::fflush(stderr);
}

}  // namespace attnkit

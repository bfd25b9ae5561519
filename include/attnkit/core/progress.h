// A small progress reporter for long runs (benchmarks, sweeps, guide rendering).
//
// Writes to stderr only, never stdout, so `--json` output stays clean. When stderr is a terminal
// it draws one self-overwriting bar ("label [#####.....] 12/40  3.1s"); otherwise it prints a
// plain line at most every few seconds (and at the end), so logs of CI runs stay short. Quiet mode
// prints nothing. Thread-safe: Advance() may be called from several threads.
//
//   attnkit::Progress bar("bench dense", cases.size());   // total 0 = unknown (spinner + count)
//   for (...) { ...; bar.Advance(); }
//   bar.Finish();                                          // also done by the destructor
//
// Global default: SetProgressQuiet(true) silences every bar (e.g. the CLI's --quiet / --json).
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>

namespace attnkit {

void SetProgressQuiet(bool quiet);  // process-wide default for new Progress objects
bool ProgressQuiet();

class Progress {
 public:
  // total: number of steps (0 = unknown). quiet: this bar prints nothing (ORed with the global).
  Progress(std::string label, int64_t total, bool quiet = false);
  ~Progress();
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;

  void Advance(int64_t steps = 1);
  void Set(int64_t done);
  void SetNote(const std::string& note);  // short text shown after the counts (e.g. a case name)
  void Finish();                          // draws the final state and ends the line; idempotent

  int64_t done() const { return done_; }
  bool is_tty() const { return tty_; }

 private:
  void DrawLocked(bool final_draw);
  std::string label_, note_;
  int64_t total_, done_ = 0;
  bool quiet_, tty_, finished_ = false;
  std::chrono::steady_clock::time_point start_, last_draw_;
  std::mutex mu_;
};

}  // namespace attnkit

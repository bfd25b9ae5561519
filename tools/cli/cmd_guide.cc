// `attnkit guide`: writes the visual guide (one self-contained HTML page + figure files) with
// this machine's measurements. The page is built by the library (attnkit/guide/guide.h); this
// file parses options, draws the progress bar and prints the summary (text or --json).
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <sstream>

#include "attnkit/core/error.h"
#include "attnkit/core/parse.h"
#include "attnkit/core/progress.h"
#include "attnkit/guide/guide.h"
#include "attnkit/guide/measure.h"
#include "command.h"
#include "nlohmann/json.hpp"

namespace attnkit::cli {
namespace {

// Runs `node args...` with its stdout sent to our stderr (stdout stays clean for --json);
// returns its exit status, 127 when node cannot be started.
int RunNode(const std::vector<std::string>& args) {
  std::fflush(stdout);
  std::fflush(stderr);
  const pid_t pid = fork();
  if (pid < 0) return 127;
  if (pid == 0) {
    dup2(STDERR_FILENO, STDOUT_FILENO);
    std::vector<char*> argv;
    argv.push_back(const_cast<char*>("node"));
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp("node", argv.data());
    _exit(127);
  }
  int status = 0;
  if (waitpid(pid, &status, 0) < 0) return 127;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

std::vector<std::string> SplitComma(const std::string& s) {
  if (s.empty()) return {};  // default: every section
  return attnkit::SplitList(s, "--only");
}

int RunGuide(const std::vector<std::string>& args) {
  std::string sections_help = "comma-separated sections to build (default: all). Available:";
  for (const auto& s : guide::AvailableSections()) sections_help += " " + s.name;
  ArgParser p(
      "attnkit guide --out DIR [--quick | --full | --smoke] [--only a,b] [--json]",
      "Write the visual guide: one self-contained HTML page (DIR/index.html) that explains,\n"
      "draws and measures each attention variant on this machine, every diagram as\n"
      "DIR/figures/<id>.svg, every chart as DIR/figures/<id>.vl.json (Vega-Lite), and all\n"
      "numbers in DIR/guide.json. --quick (default) takes a few minutes on 2 cores.");
  p.AddOption("out", "out/guide", "output directory (created if missing)");
  p.AddFlag("quick", "default sweeps: a few minutes on a 2-core machine");
  p.AddFlag("full", "longer sweeps to longer sequences");
  p.AddFlag("smoke", "tiny sweeps (seconds): checks that every section renders (CI)");
  p.AddOption("only", "", sections_help);
  p.AddOption("max-seqlen", "0",
              "cap (or extend) the sweeps' longest sequence, e.g. 8k; 0 = mode default");
  p.AddOption("threads", "0", "threads for the measurements (0 = all cores)");
  p.AddFlag("list", "list the available sections and exit");
  p.AddFlag("json", "print the summary as one JSON object");
  p.AddFlag("no-svg-export", "do not render the charts to DIR/figures/<id>.svg with Node");
  if (!p.Parse(args)) return 0;
  if (p.Flag("list")) {
    for (const auto& s : guide::AvailableSections()) std::cout << s.name << "\t" << s.title << "\n";
    return 0;
  }
  const int modes = p.Flag("quick") + p.Flag("full") + p.Flag("smoke");
  Require(modes <= 1, "choose one of --quick, --full, --smoke");
  guide::GuideOptions o;
  o.out_dir = p.Get("out");
  o.size = p.Flag("full")    ? guide::SweepSize::kFull
           : p.Flag("smoke") ? guide::SweepSize::kSmoke
                             : guide::SweepSize::kQuick;
  o.only = SplitComma(p.Get("only"));
  Require(!p.Given("only") || !o.only.empty(), "--only needs at least one section name");
  o.max_seqlen = p.GetInt("max-seqlen");
  o.num_threads = p.GetThreads();
  o.command = "attnkit guide";
  for (const auto& a : args) o.command += " " + a;

  // Plan first: bad names, an unwritable directory or a sweep too large fail before measuring.
  const guide::GuidePlan plan = guide::PlanGuide(o);
  if (!p.Flag("json")) {
    std::cerr << "guide: " << plan.sections.size() << " sections, " << plan.steps
              << " measurement steps, sweeps up to " << guide::FormatTokens(plan.max_seqlen)
              << " tokens (largest measurement ~"
              << guide::FormatBytes(static_cast<double>(plan.peak_bytes)) << ")\n";
  }
  Progress progress("guide", plan.steps);
  o.progress = [&](int64_t done, int64_t, const std::string& what) {
    progress.SetNote(what);
    progress.Set(done);
  };
  const guide::GuideResult r = guide::WriteGuide(o);
  progress.Finish();
  // Charts as standalone SVG too: rendered by the same Vega in Node (no browser), when available.
  std::string svg_export = "skipped: node or guide/web/node_modules not found";
  const std::string script = guide::ChartExportScript();
  if (!p.Flag("no-svg-export") && !script.empty()) {
    const int rc = RunNode({script, o.out_dir});
    svg_export = rc == 0     ? "ok"
                 : rc == 127 ? "skipped: node not found"
                             : "failed (see the message above)";
  } else if (p.Flag("no-svg-export")) {
    svg_export = "skipped: --no-svg-export";
  }
  if (p.Flag("json")) {
    nlohmann::json j = {{"index", r.index_path},
                        {"files", r.files},
                        {"seconds", r.page.seconds},
                        {"mode", r.page.mode},
                        {"sections", plan.sections},
                        {"chart_svg_export", svg_export},
                        {"machine",
                         {{"cpu", r.page.machine.cpu},
                          {"simd_target", r.page.machine.simd_target},
                          {"threads", r.page.machine.threads},
                          {"git_commit", r.page.machine.git_commit}}}};
    std::cout << j.dump() << "\n";
  } else {
    std::cout << "guide: wrote " << r.index_path << " (" << r.files.size() << " files, measured in "
              << static_cast<int>(r.page.seconds) << " s); chart SVG export: " << svg_export
              << "\n";
  }
  return 0;
}

const CommandRegistrar kRegistrar(
    {"guide", "write the visual guide (HTML + SVG) with this machine's measurements", RunGuide});

}  // namespace
}  // namespace attnkit::cli

// `attnkit guide` in the library: plans the run (names, output directory, memory estimate),
// runs the section builders, renders the page and writes every file atomically (temp + rename,
// index.html last).
#include "attnkit/guide/guide.h"

#include <malloc.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <set>
#include <vector>

#include "attnkit/core/error.h"
#include "attnkit/core/runtime.h"
#include "attnkit/guide/measure.h"
#include "guide/assets.h"
#include "guide/sections.h"

namespace attnkit::guide {
namespace {

namespace fs = std::filesystem;

std::vector<const detail::SectionSpec*> Selected(const GuideOptions& o) {
  const auto& all = detail::Sections();
  std::vector<const detail::SectionSpec*> out;
  std::set<std::string> wanted(o.only.begin(), o.only.end());
  for (const auto& name : wanted) {
    const bool known =
        std::any_of(all.begin(), all.end(), [&](const auto& s) { return s.name == name; });
    if (!known) {
      std::string names;
      for (const auto& s : all) names += (names.empty() ? "" : ", ") + s.name;
      throw Error("PlanGuide: unknown section '" + name + "' in --only (available: " + names + ")");
    }
  }
  for (const auto& s : all) {
    if (wanted.empty() || wanted.count(s.name)) out.push_back(&s);
  }
  return out;
}

void CheckWritable(const std::string& dir) {
  Require(!dir.empty(), "PlanGuide: --out must name a directory");
  std::error_code ec;
  fs::create_directories(dir, ec);
  Require(!ec, "PlanGuide: cannot create --out directory '", dir, "': ", ec.message());
  Require(fs::is_directory(dir), "PlanGuide: --out '", dir, "' exists and is not a directory");
  const fs::path probe = fs::path(dir) / (".attnkit-write-test-" + std::to_string(getpid()));
  {
    std::ofstream out(probe);
    out << "probe";
    Require(static_cast<bool>(out), "PlanGuide: cannot write into --out directory '", dir, "'");
  }
  fs::remove(probe, ec);
}

// Writes `text` to path via a temporary file in the same directory and a rename.
void WriteAtomic(const fs::path& path, const std::string& text) {
  const fs::path tmp = path.string() + ".partial-" + std::to_string(getpid());
  {
    std::ofstream out(tmp, std::ios::binary);
    out << text;
    out.flush();
    Require(static_cast<bool>(out), "WriteGuide: failed writing '", tmp.string(), "'");
  }
  std::error_code ec;
  fs::rename(tmp, path, ec);
  Require(!ec, "WriteGuide: cannot rename '", tmp.string(), "' to '", path.string(),
          "': ", ec.message());
}

double LoadAverage() {
  std::ifstream in("/proc/loadavg");
  double load = -1;
  in >> load;
  return in ? load : -1;
}

std::string UtcNow() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M UTC", &tm);
  return buf;
}

}  // namespace

const char* SweepSizeName(SweepSize size) {
  switch (size) {
    case SweepSize::kSmoke:
      return "smoke";
    case SweepSize::kQuick:
      return "quick";
    case SweepSize::kFull:
      return "full";
  }
  return "?";
}

std::vector<SectionInfo> AvailableSections() {
  std::vector<SectionInfo> out;
  for (const auto& s : detail::Sections()) out.push_back({s.name, s.title});
  return out;
}

GuidePlan PlanGuide(const GuideOptions& o) {
  Require(o.max_seqlen >= 0, "PlanGuide: --max-seqlen must be positive, got ", o.max_seqlen);
  Require(o.max_seqlen <= (int64_t{1} << 40),
          "PlanGuide: --max-seqlen must be at most 1T tokens, got ", o.max_seqlen);
  Require(o.max_seqlen == 0 || o.max_seqlen >= 16,
          "PlanGuide: --max-seqlen must be at least 16, got ", o.max_seqlen);
  Require(
      ChartLibraryEmbedded(),
      "PlanGuide: the chart library (vega, vega-lite, vega-embed) was not embedded at build time; "
      "run scripts/setup.sh (npm ci in guide/web) and rebuild");
  GuidePlan plan;
  const auto selected = Selected(o);
  const detail::SweepConfig config =
      detail::MakeSweepConfig(o.size, o.max_seqlen, ResolveThreads(o.num_threads));
  plan.max_seqlen = std::max(config.prefill_last, config.decode_last);
  for (const auto* s : selected) {
    plan.sections.push_back(s->name);
    plan.steps += s->steps(config);
    plan.peak_bytes = std::max(plan.peak_bytes, s->peak_bytes(config));
  }
  plan.available_bytes = AvailableMemoryBytes();
  if (plan.available_bytes > 0) {
    Require(static_cast<double>(plan.peak_bytes) <= 0.8 * static_cast<double>(plan.available_bytes),
            "PlanGuide: the sweep up to ", FormatTokens(plan.max_seqlen), " tokens needs about ",
            FormatBytes(static_cast<double>(plan.peak_bytes)),
            " for its largest measurement but only ",
            FormatBytes(static_cast<double>(plan.available_bytes)),
            " is available; lower --max-seqlen or use --quick");
  }
  CheckWritable(o.out_dir);
  return plan;
}

GuideResult WriteGuide(const GuideOptions& o) {
  const GuidePlan plan = PlanGuide(o);
  const auto selected = Selected(o);
  const detail::SweepConfig config =
      detail::MakeSweepConfig(o.size, o.max_seqlen, ResolveThreads(o.num_threads));
  detail::Context ctx(config, o.progress, plan.steps);

  GuideResult result;
  GuidePage& page = result.page;
  page.title = "attnkit: attention variants of modern LLMs, explained and measured";
  page.mode = SweepSizeName(o.size);
  page.command = o.command.empty() ? "attnkit guide --out " + o.out_dir : o.command;
  MachineFacts& m = page.machine;
  m.cpu = CpuModelName();
  m.simd_target = SimdTargetName();
  m.compiled_targets = CompiledTargets();
  m.threads = config.threads;
  m.version = Version();
  m.git_commit = detail::BuildGitCommit();
  m.build_type = detail::BuildType();
  m.date_utc = UtcNow();
  m.total_memory_gib = static_cast<double>(TotalMemoryBytes()) / (1 << 30);

  // Large buffers always come from (and go back to) mmap, so each measurement's peak resident
  // memory is its own and not hidden by memory an earlier measurement left in the heap.
  mallopt(M_MMAP_THRESHOLD, 256 * 1024);
  m.load_before = LoadAverage();
  const auto t0 = std::chrono::steady_clock::now();
  int64_t planned = 0;
  for (const auto* s : selected) {
    planned += s->steps(config);
    page.sections.push_back(s->build(ctx));
    if (page.sections.back().nav_title.empty()) page.sections.back().nav_title = s->title;
    while (ctx.done() < planned) ctx.Step(s->name + ": measurement shared with an earlier section");
  }
  page.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  m.load_after = LoadAverage();

  // Render everything in memory first; only then touch the output directory.
  const std::string html = RenderHtml(page);
  const std::string data = PageJson(page);
  const fs::path dir(o.out_dir);
  const fs::path figures = dir / "figures";
  std::error_code ec;
  fs::create_directories(figures, ec);
  Require(!ec, "WriteGuide: cannot create '", figures.string(), "': ", ec.message());
  for (const auto& s : page.sections) {
    for (const auto& f : s.figures) {
      const bool diagram = f.kind == Figure::Kind::kDiagram;
      const fs::path p = figures / (f.id + (diagram ? ".svg" : ".vl.json"));
      WriteAtomic(p, diagram ? f.svg : f.vega_lite + "\n");
      result.files.push_back(p.string());
    }
  }
  WriteAtomic(dir / "guide.json", data);
  result.files.push_back((dir / "guide.json").string());
  result.index_path = (dir / "index.html").string();
  WriteAtomic(result.index_path, html);
  result.files.push_back(result.index_path);
  return result;
}

std::string ChartExportScript() {
  // guide/web of a source tree: $ATTNKIT_GUIDE_WEB_DIR, else beside the running binary's build
  // folder (build/attnkit -> guide/web). Nothing is compiled in, so an installed binary carries no
  // path of the machine that built it.
  std::vector<fs::path> candidates;
  if (const char* env = std::getenv("ATTNKIT_GUIDE_WEB_DIR"); env != nullptr && *env != '\0') {
    candidates.emplace_back(env);
  }
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec) candidates.push_back(exe.parent_path().parent_path() / "guide" / "web");
  for (const fs::path& web : candidates) {
    if (fs::exists(web / "export-svg.mjs", ec) && fs::exists(web / "node_modules" / "vega", ec)) {
      return (web / "export-svg.mjs").string();
    }
  }
  return "";
}

}  // namespace attnkit::guide

// Renders the guide's page (guide::GuidePage) as one self-contained HTML document: styles, the
// inlined chart library (Vega, Vega-Lite, vega-embed), the diagrams as inline SVG and the charts
// as Vega-Lite specs embedded as JSON. Also the page's data as JSON (guide.json).
#include <cctype>
#include <cmath>
#include <cstdio>
#include <string>

#include "attnkit/core/error.h"
#include "attnkit/guide/guide.h"
#include "attnkit/guide/measure.h"
#include "attnkit/guide/svg.h"
#include "guide/assets.h"
#include "guide/sections.h"
#include "nlohmann/json.hpp"

namespace attnkit::guide {
namespace {

using nlohmann::json;

// JSON placed inside <script>: "</" must not close the element early; "<\/" is the same JSON.
std::string JsonInScript(const std::string& json_text) {
  std::string out;
  out.reserve(json_text.size());
  for (size_t i = 0; i < json_text.size(); ++i) {
    out += json_text[i];
    if (json_text[i] == '<' && i + 1 < json_text.size() && json_text[i + 1] == '/') out += '\\';
  }
  return out;
}

// A script inlined verbatim must not contain "</script" or "<!--" (HTML would end or change the
// script element there); the chart library's minified builds contain neither, checked here.
const std::string& CheckedScript(const std::string& name, const std::string& text) {
  std::string lower = text;
  for (auto& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  Require(lower.find("</script") == std::string::npos && lower.find("<!--") == std::string::npos,
          "RenderHtml: the embedded script ", name,
          " cannot be inlined safely (contains </script or <!--)");
  return text;
}

using detail::Fmt;

const char* kStyle = R"css(
:root { --ink:#1f2328; --muted:#57606a; --line:#d8dee4; --accent:#3b6fb6; --bg:#f6f8fa; }
* { box-sizing: border-box; }
body { margin:0; font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color:var(--ink);
       line-height:1.5; background:#fff; }
header.top { background:linear-gradient(135deg,#20324f,#3b6fb6); color:#fff; padding:28px 40px 22px; }
header.top h1 { margin:0 0 6px; font-size:28px; }
header.top p { margin:0; opacity:.92; max-width:980px; }
.machine { display:flex; flex-wrap:wrap; gap:8px 22px; margin-top:14px; font-size:13.5px; }
.warn { background:rgba(255,214,102,.2); border:1px solid rgba(255,214,102,.7); border-radius:6px;
        padding:6px 10px; margin-top:12px !important; font-size:13.5px; }
header.top p.legend { margin-top:10px; font-size:13.5px; }
.machine span b { font-weight:600; opacity:.8; margin-right:4px; }
nav.toc { position:sticky; top:0; z-index:5; background:#fff; border-bottom:1px solid var(--line);
          padding:8px 40px; font-size:14px; display:flex; flex-wrap:wrap; gap:6px 18px; }
nav.toc a { color:var(--accent); text-decoration:none; }
main { padding:10px 40px 40px; max-width:1480px; }
section.variant { border-top:1px solid var(--line); padding-top:8px; margin-top:26px; }
section.variant h2 { font-size:22px; margin:10px 0 6px; }
.intro { max-width:980px; }
.formula { background:var(--bg); border-left:4px solid var(--accent); padding:10px 14px; margin:10px 0;
           font-family: "Cambria Math", "STIX Two Math", Georgia, serif; font-size:16px; max-width:980px;
           overflow-x:auto; }
.models { font-size:14px; color:var(--muted); margin:6px 0 10px; }
.models .chip { display:inline-block; background:#eef3fb; color:#20324f; border-radius:10px;
                padding:1px 9px; margin:2px 4px 2px 0; font-size:13px; }
.figures { display:grid; grid-template-columns: repeat(auto-fill, minmax(min(100%, 560px), 1fr)); gap:18px;
           margin:12px 0; }
figure { margin:0; border:1px solid var(--line); border-radius:8px; padding:12px; background:#fff;
         min-width:0; overflow-x:auto; }
.diagram-box svg { display:block; max-width:100%; height:auto; }
figure h3 { font-size:15px; margin:0 0 8px; }
figure figcaption { font-size:13.5px; color:var(--ink); margin-top:6px; }
.source { font-size:12px; color:var(--muted); margin-top:6px; }
.badge { display:inline-block; font-size:11px; font-weight:600; border-radius:4px; padding:0 6px;
         margin-right:6px; color:#fff; vertical-align:1px; }
.badge.measured { background:#2e7d32; } .badge.drawn { background:#3b6fb6; } .badge.config { background:#8a5a00; }
.chart-box { min-height:120px; }
table.data { border-collapse:collapse; font-size:13.5px; margin:8px 0 4px; }
table.data th, table.data td { border:1px solid var(--line); padding:4px 9px; text-align:right; }
table.data th { background:var(--bg); text-align:center; }
table.data td:first-child { text-align:left; }
.tablebox { margin:14px 0; overflow-x:auto; }
.tablebox h3 { font-size:15px; margin:0 0 4px; }
ul.notes { font-size:14px; }
ul.findings { list-style:none; padding:0; margin:8px 0 0; font-size:13.5px; }
ul.findings li { margin:3px 0; padding:3px 8px; border-left:4px solid #8c959f; background:var(--bg); }
ul.findings li .verdict { font-weight:600; font-size:11px; text-transform:uppercase; margin-right:6px; }
ul.findings li.holds { border-color:#2e7d32; } ul.findings li.holds .verdict { color:#2e7d32; }
ul.findings li.contradicted { border-color:#c62828; background:#fdecea; }
ul.findings li.contradicted .verdict { color:#c62828; }
ul.findings li.not-resolved { border-color:#b08800; } ul.findings li.not-resolved .verdict { color:#8a6d00; }
ul.findings li.measured .verdict { color:var(--muted); }
footer { border-top:1px solid var(--line); color:var(--muted); font-size:13px; padding:16px 40px 30px; }
code { background:var(--bg); padding:1px 4px; border-radius:4px; }
main, header.top, footer { overflow-wrap:anywhere; }
/* Phone width: narrow margins, one column of cards, the table of contents one scrolling line. */
@media (max-width: 700px) {
  header.top { padding:16px 12px 14px; }
  header.top h1 { font-size:22px; }
  .machine { gap:4px 14px; font-size:12.5px; }
  nav.toc { padding:6px 12px; flex-wrap:nowrap; overflow-x:auto; white-space:nowrap; gap:14px;
            font-size:13.5px; }
  main { padding:6px 10px 24px; }
  section.variant h2 { font-size:19px; }
  figure { padding:8px; }
  .figures { gap:12px; }
  footer { padding:12px; }
}
)css";

// Runs after the libraries: renders every chart at the width of its card (Vega-Lite's autosize
// "fit-x": axes, legend and title included), wrapping titles and subtitles to that width and
// re-rendering a chart when its card changes width; records views, failures and the time until
// every chart has drawn for the browser check (window.__attnkit), and shows a visible message
// where a chart failed.
const char* kRenderScript = R"js(
(function () {
  var specs = JSON.parse(document.getElementById('guide-charts').textContent);
  var state = { total: specs.length, rendered: 0, failed: [], views: {}, done: false,
                drawn_ms: null, layout_width: null };
  window.__attnkit = state;
  var canvas = document.createElement('canvas').getContext('2d');
  var FONT = 'Helvetica, Arial, sans-serif';
  // Splits text into lines no wider than `width` pixels in `font`.
  function wrap(text, font, width) {
    if (Array.isArray(text)) text = text.join(' ');
    canvas.font = font;
    var lines = [], line = '';
    text.split(/\s+/).forEach(function (word) {
      var next = line ? line + ' ' + word : word;
      if (line && canvas.measureText(next).width > width) { lines.push(line); line = word; }
      else line = next;
    });
    if (line) lines.push(line);
    return lines.length === 1 ? lines[0] : lines;
  }
  // The spec as drawn in a card `width` pixels wide.
  function fit(spec, width) {
    var s = JSON.parse(JSON.stringify(spec));
    s.width = width;
    s.autosize = { type: 'fit-x', contains: 'padding' };
    if (s.title) {  // Vega pads the view by 5 px on each side
      s.title.text = wrap(s.title.text, 'bold ' + (s.title.fontSize || 13) + 'px ' + FONT, width - 14);
      if (s.title.subtitle) {
        s.title.subtitle = wrap(s.title.subtitle, (s.title.subtitleFontSize || 12) + 'px ' + FONT, width - 14);
      }
    }
    // Where the plot starts: right of the y axis, whose labels are numbers or, left of
    // horizontal bars, category names wrapped to at most 40% of the width.
    var layers = [s].concat(s.layer || []);
    var y = s.encoding && s.encoding.y;
    var plotLeft = 60;
    if (y && y.type === 'nominal' && s.data && s.data.values) {
      var limit = Math.round(width * 0.4);
      canvas.font = '11px ' + FONT;
      var widest = s.data.values.reduce(function (m, v) {
        return Math.max(m, canvas.measureText(String(v[y.field])).width);
      }, 0);
      plotLeft = Math.min(limit, widest) + 40;
      y.axis = Object.assign({}, y.axis, { labelLimit: limit, labelExpr: 'attnkitWrap(datum.label, ' + limit + ', 11)' });
    }
    // The legend sits under the plot: as many columns as its longest label allows; a label
    // longer than its column wraps onto more lines instead of being cut. Titles along x wrap
    // to the plot's width.
    var labels = [];
    layers.forEach(function (l) {
      var color = l.encoding && l.encoding.color;
      var values = l.data && l.data.values;
      if (color && values) values.forEach(function (v) { labels.push(String(v[color.field])); });
    });
    canvas.font = '10px ' + FONT;
    var longest = labels.reduce(function (m, t) { return Math.max(m, canvas.measureText(t).width); }, 0);
    var room = width - plotLeft - 10;
    var columns = Math.max(1, Math.min(4, Math.floor(room / (longest + 30))));
    var labelLimit = Math.max(60, Math.floor(room / columns) - 30);
    s.config = s.config || {};
    s.config.legend = Object.assign({}, s.config.legend, { columns: columns, labelLimit: labelLimit });
    layers.forEach(function (l) {
      var e = l.encoding || {};
      if (e.color) {
        e.color.legend = Object.assign({}, e.color.legend,
                                       { labelExpr: 'attnkitWrap(datum.label, ' + labelLimit + ', 10)' });
      }
      if (e.x && typeof e.x.title === 'string') e.x.title = wrap(e.x.title, 'bold 12px ' + FONT, room);
    });
    return s;
  }
  vega.expressionFunction('attnkitWrap', function (text, px, size) {
    return wrap(String(text), size + 'px ' + FONT, px);
  });
  // Each chart is embedded in a div inside its card-wide box; the embed reserves 38 px on the
  // right for its actions menu.
  var charts = specs.map(function (c) {
    var box = document.getElementById('chart-' + c.id);
    var el = document.createElement('div');
    box.appendChild(el);
    return { id: c.id, spec: c.spec, box: box, el: el, width: 0, view: null };
  });
  function boxWidth(c) { return Math.floor(c.box.clientWidth); }
  function draw(c) {
    c.width = boxWidth(c);
    if (c.view) { c.view.finalize(); c.view = null; }
    return vegaEmbed(c.el, fit(c.spec, Math.max(200, c.width - 40)),
                     { renderer: 'svg', actions: { export: true, source: false, compiled: false, editor: false } })
      .then(function (res) { c.view = res.view; state.views[c.id] = res.view; })
      .catch(function (err) {
        state.failed.push(c.id + ': ' + err);
        c.el.textContent = 'This chart failed to render: ' + err;
        console.error('chart ' + c.id + ' failed: ' + err);
      });
  }
  Promise.all(charts.map(draw)).then(function () {
    state.rendered = Object.keys(state.views).length;
    state.drawn_ms = performance.now();
    state.layout_width = window.innerWidth;
    state.done = true;
  });
  var timer = null;
  window.addEventListener('resize', function () {
    clearTimeout(timer);
    timer = setTimeout(function () {
      var w = window.innerWidth;
      Promise.all(charts.filter(function (c) {
        return c.view && boxWidth(c) !== c.width;
      }).map(draw)).then(function () { state.layout_width = w; });
    }, 100);
  });
})();
)js";

std::string Badge(Provenance p) {
  const std::string name = ProvenanceName(p);
  const char* text = p == Provenance::kMeasured ? "measured here"
                     : p == Provenance::kDrawn  ? "drawn from the code"
                                                : "from config";
  return "<span class=\"badge " + name + "\">" + text + "</span>";
}

std::string RenderTable(const Table& t) {
  std::string h = "<div class=\"tablebox\" id=\"table-" + XmlEscape(t.id) + "\"><h3>" +
                  XmlEscape(t.title) + "</h3><table class=\"data\"><thead><tr>";
  for (const auto& c : t.header) h += "<th>" + XmlEscape(c) + "</th>";
  h += "</tr></thead><tbody>";
  for (const auto& row : t.rows) {
    h += "<tr>";
    for (const auto& c : row) h += "<td>" + XmlEscape(c) + "</td>";
    h += "</tr>";
  }
  h += "</tbody></table><div class=\"source\">" + Badge(t.provenance) + XmlEscape(t.source) +
       "</div></div>";
  return h;
}

// A list of findings, each marked with its verdict (the browser check counts them by class).
std::string RenderFindings(const std::vector<Finding>& findings) {
  if (findings.empty()) return "";
  std::string h = "<ul class=\"findings\">";
  for (const auto& f : findings) {
    const std::string name = FindingStatusName(f.status);
    std::string cls = name, label = name;
    if (f.status == Finding::Status::kNotResolved) cls = "not-resolved";
    if (f.status == Finding::Status::kContradicted) label = "contradicts the expectation";
    h += "<li class=\"finding " + cls + "\" data-id=\"" + XmlEscape(f.id) +
         "\"><span class=\"verdict\">" + XmlEscape(label) + "</span>" + XmlEscape(f.text) + "</li>";
  }
  return h + "</ul>";
}

}  // namespace

const char* FindingStatusName(Finding::Status s) {
  switch (s) {
    case Finding::Status::kMeasured:
      return "measured";
    case Finding::Status::kHolds:
      return "holds";
    case Finding::Status::kContradicted:
      return "contradicted";
    case Finding::Status::kNotResolved:
      return "not resolved";
  }
  return "?";
}

const char* ProvenanceName(Provenance p) {
  switch (p) {
    case Provenance::kMeasured:
      return "measured";
    case Provenance::kDrawn:
      return "drawn";
    case Provenance::kConfig:
      return "config";
  }
  return "?";
}

bool ChartLibraryEmbedded() { return detail::EmbeddedAssets().size() == 3; }

std::string RenderHtml(const GuidePage& page) {
  Require(
      ChartLibraryEmbedded(),
      "RenderHtml: the chart library (vega, vega-lite, vega-embed) was not embedded at build time; "
      "run scripts/setup.sh (npm ci in guide/web) and rebuild");
  const MachineFacts& m = page.machine;
  std::string h;
  h.reserve(2 << 20);
  h += "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
       "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
       "<meta name=\"generator\" content=\"attnkit " +
       XmlEscape(m.version) +
       "\">"
       "<title>" +
       XmlEscape(page.title) + "</title><style>" + kStyle + "</style></head><body>\n";
  h += "<header class=\"top\"><h1>" + XmlEscape(page.title) + "</h1>";
  h += "<p>Every attention variant attnkit implements, explained, drawn from the objects the "
       "kernels obey, and measured on the machine below in this run. Green badges mark numbers "
       "measured here, blue ones pictures sampled from the code, brown ones figures read from "
       "model configs.</p>";
  h += "<div class=\"machine\" id=\"machine\">";
  auto fact = [&](const std::string& k, const std::string& v) {
    h += "<span><b>" + XmlEscape(k) + "</b>" + XmlEscape(v) + "</span>";
  };
  fact("CPU", m.cpu);
  fact("SIMD", m.simd_target + " (compiled: " + m.compiled_targets + ")");
  fact("threads", std::to_string(m.threads));
  fact("memory", Fmt("%.1f GiB", m.total_memory_gib));
  fact("attnkit", m.version + " @ " + m.git_commit + " (" + m.build_type + ")");
  fact("run", page.mode + ", " + m.date_utc + ", " + Fmt("%.0f s", page.seconds));
  if (m.load_before >= 0) {
    fact("load avg", Fmt("%.1f", m.load_before) + " → " + Fmt("%.1f", m.load_after) + " on " +
                         std::to_string(m.threads) + " threads");
  }
  h += "</div>";
  if (m.load_before > 0.5 * m.threads || m.load_after > 0.5 * m.threads) {
    h += "<p class=\"warn\">Other processes were competing for the cores during this run (load "
         "average above half the thread count), so the timings below are noisy: their error bars "
         "are wide, and comparisons the spread cannot decide are marked \u201cnot resolved in "
         "this run\u201d. Rerun on a quiet machine for clean slopes.</p>";
  }
  {
    int counts[4] = {0, 0, 0, 0};
    for (const auto& s : page.sections) {
      for (const auto& f : s.findings) ++counts[static_cast<int>(f.status)];
      for (const auto& fig : s.figures) {
        for (const auto& f : fig.findings) ++counts[static_cast<int>(f.status)];
      }
    }
    h += "<p class=\"legend\">Statements under each figure are generated from this run's numbers. "
         "Timed points are medians with error bars from the fastest to the slowest repeat; "
         "slopes are printed ± two standard errors and only from three points or more. "
         "Expectations are checked against the measurements: " +
         std::to_string(counts[1]) + " hold, " + std::to_string(counts[2]) +
         " are contradicted (marked in red, with what was measured), " + std::to_string(counts[3]) +
         " are not resolved in this run.</p>";
  }
  h += "</header>\n<nav class=\"toc\">";
  for (const auto& s : page.sections) {
    h += "<a href=\"#" + XmlEscape(s.name) + "\">" +
         XmlEscape(s.nav_title.empty() ? s.title : s.nav_title) + "</a>";
  }
  h += "</nav>\n<main>\n";
  json charts = json::array();
  for (const auto& s : page.sections) {
    h += "<section class=\"variant\" data-kind=\"" +
         std::string(s.comparison ? "comparison" : "variant") + "\" id=\"" + XmlEscape(s.name) +
         "\"><h2>" + XmlEscape(s.title) + "</h2><div class=\"intro\">" + s.intro_html + "</div>";
    if (!s.formula_html.empty()) h += "<div class=\"formula\">" + s.formula_html + "</div>";
    if (!s.models.empty()) {
      h += "<div class=\"models\">Used by: ";
      constexpr size_t kShown = 18;
      for (size_t i = 0; i < s.models.size() && i < kShown; ++i) {
        h += "<span class=\"chip\">" + XmlEscape(s.models[i]) + "</span>";
      }
      if (s.models.size() > kShown) {
        h += "<span class=\"chip more\" title=\"the full list is in guide.json\">+" +
             std::to_string(s.models.size() - kShown) + " more</span>";
      }
      h += " <span class=\"source\">(" + XmlEscape(s.models_source) + ")</span></div>";
    }
    h += "<div class=\"figures\">";
    for (const auto& f : s.figures) {
      const bool diagram = f.kind == Figure::Kind::kDiagram;
      h += std::string("<figure class=\"") + (diagram ? "diagram" : "chart") + "\" id=\"fig-" +
           XmlEscape(f.id) + "\"><h3>" + XmlEscape(f.title) + "</h3>";
      if (diagram) {
        h += "<div class=\"diagram-box\">" + f.svg + "</div>";
      } else {
        h += "<div class=\"chart-box\" id=\"chart-" + XmlEscape(f.id) + "\"></div>";
        charts.push_back({{"id", f.id}, {"spec", json::parse(f.vega_lite)}});
      }
      h += "<figcaption>" + XmlEscape(f.caption) + "</figcaption>" + RenderFindings(f.findings) +
           "<div class=\"source\">" + Badge(f.provenance) + XmlEscape(f.source) +
           " &middot; file: figures/" + XmlEscape(f.id) + (diagram ? ".svg" : ".vl.json") +
           "</div></figure>";
    }
    h += "</div>";
    for (const auto& t : s.tables) h += RenderTable(t);
    h += RenderFindings(s.findings);
    if (!s.notes.empty()) {
      h += "<ul class=\"notes\">";
      for (const auto& n : s.notes) h += "<li>" + XmlEscape(n) + "</li>";
      h += "</ul>";
    }
    h += "</section>\n";
  }
  h += "</main><footer>Written by <code>" + XmlEscape(page.command) + "</code> on " +
       XmlEscape(m.date_utc) +
       ". Each chart's data is in <code>figures/&lt;id&gt;.vl.json</code> "
       "(Vega-Lite) and every section's numbers in <code>guide.json</code>. Charts: Vega, "
       "Vega-Lite and vega-embed, inlined.</footer>\n";
  h += "<script type=\"application/json\" id=\"guide-charts\">" + JsonInScript(charts.dump()) +
       "</script>\n";
  for (const auto& asset : detail::EmbeddedAssets()) {
    h += "<script>/* " + std::string(asset.name) + " */\n" + CheckedScript(asset.name, asset.text) +
         "\n</script>\n";
  }
  h += "<script>" + std::string(kRenderScript) + "</script>\n</body></html>\n";
  return h;
}

std::string PageJson(const GuidePage& page) {
  json j;
  j["title"] = page.title;
  j["mode"] = page.mode;
  j["command"] = page.command;
  j["seconds"] = page.seconds;
  const auto& m = page.machine;
  j["machine"] = {{"cpu", m.cpu},
                  {"simd_target", m.simd_target},
                  {"compiled_targets", m.compiled_targets},
                  {"threads", m.threads},
                  {"version", m.version},
                  {"git_commit", m.git_commit},
                  {"build_type", m.build_type},
                  {"date_utc", m.date_utc},
                  {"total_memory_gib", m.total_memory_gib},
                  {"load_before", m.load_before},
                  {"load_after", m.load_after}};
  j["sections"] = json::array();
  for (const auto& s : page.sections) {
    json js = {{"name", s.name},
               {"title", s.title},
               {"models", s.models},
               {"models_source", s.models_source},
               {"notes", s.notes}};
    auto findings = [](const std::vector<Finding>& list) {
      json out = json::array();
      for (const auto& f : list) {
        out.push_back({{"id", f.id}, {"status", FindingStatusName(f.status)}, {"text", f.text}});
      }
      return out;
    };
    js["findings"] = findings(s.findings);
    js["figures"] = json::array();
    for (const auto& f : s.figures) {
      json jf = {{"id", f.id},
                 {"kind", f.kind == Figure::Kind::kDiagram ? "diagram" : "chart"},
                 {"title", f.title},
                 {"provenance", ProvenanceName(f.provenance)},
                 {"source", f.source}};
      if (f.kind == Figure::Kind::kChart) jf["vega_lite"] = json::parse(f.vega_lite);
      jf["findings"] = findings(f.findings);
      js["figures"].push_back(jf);
    }
    js["tables"] = json::array();
    for (const auto& t : s.tables) {
      js["tables"].push_back({{"id", t.id},
                              {"title", t.title},
                              {"source", t.source},
                              {"provenance", ProvenanceName(t.provenance)},
                              {"header", t.header},
                              {"rows", t.rows}});
    }
    js["variants"] = json::array();
    for (const auto& v : s.variants) {
      auto num = [](double x) { return x < 0 || !std::isfinite(x) ? json(nullptr) : json(x); };
      js["variants"].push_back({{"variant", v.variant},
                                {"time_slope", num(v.time_slope)},
                                {"time_slope_2se", num(v.time_slope_2se)},
                                {"slope_range", v.slope_range},
                                {"bytes_per_token", num(v.bytes_per_token)},
                                {"bytes_note", v.bytes_note},
                                {"longest_seqlen", v.longest_seqlen},
                                {"error_vs_exact", num(v.error_vs_exact)},
                                {"error_note", v.error_note}});
    }
    j["sections"].push_back(js);
  }
  return j.dump(1);
}

}  // namespace attnkit::guide

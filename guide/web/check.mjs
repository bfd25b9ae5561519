// Opens a written guide page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) the way a person would, and fails on anything a reader would notice:
//  - a console error or page exception, a network request (the page must work offline);
//  - a chart that did not render, or a series of a chart that draws no visible mark (every mark
//    of the rendered Vega view is read from its scenegraph: a bar of zero height, a point at NaN
//    or a line of no extent does not count as drawn);
//  - at desktop width (1400 px): a chart wider than its card (a scrollbar), a legend that
//    overlaps the plot, axes or title, an axis tick label with more than two decimals
//    ("1.17188k"), a subtitle that reads like a debug string ("gqa(hidden=2048,…)");
//  - at phone width (390 px): a page wider than the viewport, a figure or chart wider than its
//    card, a table of contents taller than a fifth of the screen;
//  - a page heavier than --max-bytes (default 1.5 MB);
//  - a variant section without its diagram, a machine facts block that is missing.
// It records the page size and the time until every chart has drawn, prints them and writes them
// to --metrics FILE (JSON). Saves screenshots.
// Usage: node guide/web/check.mjs DIR/index.html [--screenshot out.png] [--full-screenshot out.png]
//        [--narrow-screenshot out.png] [--metrics out.json] [--max-bytes N]
import { mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium } from 'playwright-core';

const args = process.argv.slice(2);
const page_path = args[0];
const opt = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
if (!page_path) {
  console.error('usage: node check.mjs PAGE.html [--screenshot PNG] [--full-screenshot PNG] ' +
                '[--narrow-screenshot PNG] [--metrics JSON] [--max-bytes N]');
  process.exit(2);
}
const kDesktop = { width: 1400, height: 1000 };
const kPhone = { width: 390, height: 844 };
const max_bytes = Number(opt('--max-bytes') || 1500000);
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const problems = [];
const metrics = { page: page_path, bytes: statSync(page_path).size, max_bytes };
if (metrics.bytes > max_bytes) {
  problems.push(`page weighs ${metrics.bytes} bytes, over the limit of ${max_bytes}`);
}

// Runs in the page: reads every chart's rendered Vega view and the cards around it.
// Returns one record per chart with the problems a reader would see.
function inspectCharts() {
  const specs = JSON.parse(document.getElementById('guide-charts').textContent);
  const out = [];
  const finite = (b) => b && [b.x1, b.y1, b.x2, b.y2].every(Number.isFinite);
  const area = (b) => (finite(b) ? Math.max(0, b.x2 - b.x1) * Math.max(0, b.y2 - b.y1) : 0);
  const shift = (b, dx, dy) => ({ x1: b.x1 + dx, x2: b.x2 + dx, y1: b.y1 + dy, y2: b.y2 + dy });
  const overlap = (a, b) =>
    finite(a) && finite(b)
      ? Math.max(0, Math.min(a.x2, b.x2) - Math.max(a.x1, b.x1)) *
        Math.max(0, Math.min(a.y2, b.y2) - Math.max(a.y1, b.y1))
      : 0;
  // The colour field of a spec (or of its layers) names the series.
  const colorFields = (spec) => {
    const fields = new Set();
    for (const s of [spec, ...(spec.layer || [])]) {
      const f = s.encoding && s.encoding.color && s.encoding.color.field;
      if (f) fields.add(f);
    }
    return [...fields];
  };
  for (const { id, spec } of specs) {
    const rec = { id, problems: [], series: 0, marks: 0 };
    out.push(rec);
    const view = window.__attnkit.views[id];
    const box = document.getElementById('chart-' + id);
    if (!view || !box) {
      rec.problems.push('no rendered view');
      continue;
    }
    const fields = colorFields(spec);
    const field = fields[0];
    // Every data mark (role "mark", at any depth: line marks sit inside per-series groups).
    const drawn = new Map();  // series -> visible items
    const present = new Set();
    const labels = [];
    let legend = null, title = null, axes = [];
    const walk = (mark, dx, dy) => {
      for (const item of mark.items || []) {
        if (mark.role === 'mark' && mark.marktype !== 'group' && mark.marktype !== 'text') {
          const key = field && item.datum ? String(item.datum[field]) : '(all)';
          present.add(key);
          const b = item.bounds;
          // Visible: finite geometry with extent in both directions (a bar of zero height, a
          // rule of no length or a line of NaN points has none).
          const ok = finite(b) && b.x2 - b.x1 >= 0.5 && b.y2 - b.y1 >= 0.5 &&
                     !(mark.marktype === 'rect' && !(Math.abs(item.height || 0) >= 0.5 && Math.abs(item.width || 0) >= 0.5));
          if (ok) drawn.set(key, (drawn.get(key) || 0) + 1);
          rec.marks += 1;
        }
        if (mark.role === 'axis-label' && item.text !== undefined && item.opacity !== 0) {
          labels.push(String(item.text));
        }
        if (dx === 0 && dy === 0) {
          if (mark.role === 'legend') legend = item.bounds;
          if (mark.role === 'title') title = item.bounds;
          if (mark.role === 'axis') axes.push(item.bounds);
        }
        for (const child of item.items || []) walk(child, dx + (item.x || 0), dy + (item.y || 0));
      }
    };
    const root = view.scenegraph().root;
    for (const item of root.items || []) {
      for (const child of item.items || []) walk(child, 0, 0);
    }
    rec.series = present.size;
    for (const key of present) {
      if (!drawn.get(key)) rec.problems.push(`series '${key}' draws no visible mark`);
    }
    if (present.size === 0) rec.problems.push('no data marks in the rendered view');
    for (const l of labels) {
      // A tick label reads at a glance with at most three significant digits after a decimal
      // point ("1.5k", "0.0125"), not "1.17188k".
      const m = l.match(/(\d[\d,]*)\.(\d+)/);
      const digits = m ? (m[1].replace(/,/g, '') + m[2]).replace(/^0+/, '').replace(/0+$/, '') : '';
      if (digits.length > 3) rec.problems.push(`unreadable axis label '${l}'`);
    }
    const plot = { x1: 0, y1: 0, x2: view.width(), y2: view.height() };
    if (legend) {
      // Small overlaps are anti-aliasing of symbols; a legend over the plot or an axis is not.
      for (const [what, b] of [['plot', plot], ['title', title], ...axes.map((a) => ['axis', a])]) {
        if (b && overlap(legend, b) > 30) rec.problems.push(`legend overlaps the ${what}`);
      }
    }
    const sub = spec.title && spec.title.subtitle;
    const subText = Array.isArray(sub) ? sub.join(' ') : sub || '';
    if (/\w\([a-z_]+=/.test(subText)) rec.problems.push(`subtitle reads like a debug string: '${subText}'`);
    const svg = box.querySelector('svg');
    const fig = box.closest('figure');
    rec.svg_width = svg ? svg.getBoundingClientRect().width : 0;
    rec.box_width = box.clientWidth;
    rec.card_scroll = fig ? fig.scrollWidth - fig.clientWidth : 0;
    if (rec.svg_width > rec.box_width + 1 || rec.card_scroll > 1) {
      rec.problems.push(`wider than its card (chart ${Math.round(rec.svg_width)} px, card ${rec.box_width} px)`);
    }
    if (svg) {  // text the chart's own frame cuts off (a long title, a legend label)
      const frame = svg.getBoundingClientRect();
      for (const t of svg.querySelectorAll('text')) {
        if (t.closest('[opacity="0"]')) continue;  // a label Vega hid (overlap, out of range)
        const r = t.getBoundingClientRect();
        if (r.width > 0 && (r.right > frame.right + 1 || r.left < frame.left - 1)) {
          rec.problems.push(`text cut off by the chart's edge: '${t.textContent.slice(0, 60)}'`);
        }
        // Vega shortens a label longer than its limit with an ellipsis.
        if (t.textContent.endsWith('\u2026')) rec.problems.push(`text shortened: '${t.textContent}'`);
      }
    }
    if (rec.svg_width < 100 || box.getBoundingClientRect().height < 100) rec.problems.push('rendered too small');
  }
  return out;
}

// Runs in the page: the layout as a whole (overflow, cards, table of contents) and text that a
// diagram's own frame cuts off.
function inspectLayout() {
  const doc = document.documentElement;
  const out = { doc_width: doc.scrollWidth, viewport: window.innerWidth, wide_figures: [], cut: [] };
  for (const svg of document.querySelectorAll('figure.diagram svg')) {
    const frame = svg.getBoundingClientRect();
    for (const t of svg.querySelectorAll('text')) {
      const r = t.getBoundingClientRect();
      if (r.width > 0 && (r.right > frame.right + 1 || r.left < frame.left - 1 || r.bottom > frame.bottom + 1)) {
        out.cut.push(`${svg.closest('figure').id}: '${t.textContent.slice(0, 60)}'`);
      }
    }
  }
  for (const f of document.querySelectorAll('figure')) {
    if (f.scrollWidth > f.clientWidth + 1) out.wide_figures.push(f.id);
  }
  const toc = document.querySelector('nav.toc');
  out.toc_height = toc ? toc.getBoundingClientRect().height : 0;
  out.viewport_height = window.innerHeight;
  return out;
}

const problems_before_load = problems.length;
const user_data = mkdtempSync(join(tmpdir(), 'attnkit-guide-check-'));
let context;
try {
  context = await chromium.launchPersistentContext(user_data, {
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
    viewport: kDesktop,
    offline: true,
  });
  const page = context.pages()[0] || (await context.newPage());
  page.on('console', (msg) => {
    if (msg.type() === 'error') problems.push(`console error: ${msg.text()}`);
  });
  page.on('pageerror', (err) => problems.push(`page exception: ${err.message}`));
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('file:') || url.startsWith('data:') || url.startsWith('blob:')) return route.continue();
    problems.push(`network request (the page must be self-contained): ${url}`);
    return route.abort();
  });
  const url = pathToFileURL(resolve(page_path)).href;
  await page.goto(url, { waitUntil: 'load', timeout: 60000 });
  if (problems.length > problems_before_load) throw new Error('the page failed while loading');
  await page.waitForFunction(() => window.__attnkit && window.__attnkit.done, null, { timeout: 90000 });
  Object.assign(metrics, await page.evaluate(() => {
    const nav = performance.getEntriesByType('navigation')[0];
    return { load_ms: Math.round(nav ? nav.loadEventEnd : 0),
             charts_drawn_ms: Math.round(window.__attnkit.drawn_ms || 0) };
  }));

  const report = await page.evaluate(() => {
    const out = { sections: [], failed: window.__attnkit.failed, total: window.__attnkit.total };
    for (const s of document.querySelectorAll('section.variant')) {
      const diagrams = s.querySelectorAll('figure.diagram svg');
      let ok = 0;
      for (const d of diagrams) if (d.querySelectorAll('rect, line, path').length >= 3) ok += 1;
      out.sections.push({ id: s.id, kind: s.dataset.kind, diagrams: ok,
                          figures: s.querySelectorAll('figure').length,
                          tables: s.querySelectorAll('table').length });
    }
    out.findings = {};
    for (const li of document.querySelectorAll('ul.findings li.finding')) {
      const kind = li.className.replace('finding', '').trim();
      out.findings[kind] = (out.findings[kind] || 0) + 1;
      if (!li.querySelector('.verdict') || li.textContent.trim().length < 20) out.badFinding = li.dataset.id;
    }
    const machine = document.getElementById('machine');
    out.machine = machine ? machine.textContent : '';
    return out;
  });
  if (report.failed.length) problems.push(...report.failed.map((f) => `chart failed: ${f}`));
  const desktop = await page.evaluate(inspectCharts);
  for (const c of desktop) for (const p of c.problems) problems.push(`chart ${c.id} at ${kDesktop.width} px: ${p}`);
  const desktopLayout = await page.evaluate(inspectLayout);
  if (desktopLayout.doc_width > desktopLayout.viewport) {
    problems.push(`page is ${desktopLayout.doc_width} px wide at a ${desktopLayout.viewport} px viewport`);
  }
  for (const f of desktopLayout.wide_figures) problems.push(`figure ${f} at ${kDesktop.width} px: wider than its card`);
  for (const c of desktopLayout.cut) problems.push(`diagram text cut off by its frame: ${c}`);
  if (report.sections.length === 0) problems.push('no sections on the page');
  for (const s of report.sections) {
    if (s.kind === 'variant' && s.diagrams === 0) problems.push(`section ${s.id}: missing its diagram`);
    if (s.figures + s.tables === 0) problems.push(`section ${s.id}: empty`);
  }
  const nFindings = Object.values(report.findings).reduce((a, b) => a + b, 0);
  if (nFindings === 0) problems.push('no findings on the page (statements generated from the measurements)');
  if (report.badFinding) problems.push(`finding ${report.badFinding}: no verdict or no text`);
  for (const fact of ['CPU', 'SIMD', 'threads', 'attnkit']) {
    if (!report.machine.includes(fact)) problems.push(`machine facts: '${fact}' missing`);
  }
  const shot = opt('--screenshot');
  if (shot) await page.screenshot({ path: shot, clip: { x: 0, y: 0, ...kDesktop } });
  const full = opt('--full-screenshot');
  if (full) await page.screenshot({ path: full, fullPage: true });

  // Phone width: the charts follow their cards' width (vega-embed re-renders on resize).
  await page.setViewportSize(kPhone);
  await page.waitForFunction(() => window.__attnkit.layout_width === window.innerWidth, null, { timeout: 20000 });
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r))));
  const phone = await page.evaluate(inspectCharts);
  for (const c of phone) for (const p of c.problems) problems.push(`chart ${c.id} at ${kPhone.width} px: ${p}`);
  const phoneLayout = await page.evaluate(inspectLayout);
  metrics.phone = { doc_width: phoneLayout.doc_width, viewport: phoneLayout.viewport,
                    toc_height: Math.round(phoneLayout.toc_height) };
  if (phoneLayout.doc_width > phoneLayout.viewport) {
    problems.push(`page is ${phoneLayout.doc_width} px wide at a ${phoneLayout.viewport} px viewport (sideways scrolling)`);
  }
  for (const f of phoneLayout.wide_figures) problems.push(`figure ${f} at ${kPhone.width} px: wider than its card`);
  if (phoneLayout.toc_height > phoneLayout.viewport_height / 5) {
    problems.push(`table of contents is ${Math.round(phoneLayout.toc_height)} px tall at ${kPhone.width} px ` +
                  `(more than a fifth of the ${phoneLayout.viewport_height} px screen)`);
  }
  const narrow = opt('--narrow-screenshot');
  if (narrow) await page.screenshot({ path: narrow, clip: { x: 0, y: 0, ...kPhone } });

  metrics.charts = desktop.length;
  metrics.series = desktop.reduce((a, c) => a + c.series, 0);
  console.log(`check: ${desktop.length} charts, ${metrics.series} series, each drawn at ${kDesktop.width} and ` +
              `${kPhone.width} px; ${report.sections.length} sections, ` +
              `${report.sections.reduce((a, s) => a + s.diagrams, 0)} diagrams, findings ${JSON.stringify(report.findings)}`);
  console.log(`check: page ${metrics.bytes} bytes (limit ${max_bytes}); load ${metrics.load_ms} ms, ` +
              `every chart drawn ${metrics.charts_drawn_ms} ms after navigation; at ${kPhone.width} px the page ` +
              `is ${phoneLayout.doc_width} px wide, table of contents ${metrics.phone.toc_height} px tall`);
} catch (err) {
  problems.push(`browser check failed: ${err.message}`);
} finally {
  if (context) await context.close();
  rmSync(user_data, { recursive: true, force: true });
}
metrics.problems = problems;
const metrics_path = opt('--metrics');
if (metrics_path) writeFileSync(metrics_path, JSON.stringify(metrics, null, 1) + '\n');
if (problems.length) {
  for (const p of problems) console.error(`check: FAIL ${p}`);
  process.exit(1);
}
console.log('check: OK');

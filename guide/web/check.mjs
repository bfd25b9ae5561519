// Opens a written guide page in headless Chromium (Debian's /usr/bin/chromium, driven by
// playwright-core) the way a person would, and fails on anything a reader would notice:
// a console error or page exception, a network request (the page must work offline), a chart
// that did not render or rendered no marks, a variant section without its diagram, a machine
// facts block that is missing. Saves screenshots.
// Usage: node guide/web/check.mjs DIR/index.html [--screenshot out.png] [--full-screenshot out.png]
import { mkdtempSync, rmSync } from 'node:fs';
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
  console.error('usage: node check.mjs PAGE.html [--screenshot PNG] [--full-screenshot PNG]');
  process.exit(2);
}
const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
const problems = [];
const user_data = mkdtempSync(join(tmpdir(), 'attnkit-guide-check-'));
let context;
try {
  context = await chromium.launchPersistentContext(user_data, {
    executablePath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
    viewport: { width: 1400, height: 1000 },
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
  if (problems.length) throw new Error('the page failed while loading');
  await page.waitForFunction(() => window.__attnkit && window.__attnkit.done, null, { timeout: 90000 });

  const report = await page.evaluate(() => {
    const out = { charts: [], sections: [], failed: window.__attnkit.failed, total: window.__attnkit.total };
    for (const box of document.querySelectorAll('.chart-box')) {
      const svg = box.querySelector('svg');
      // Vega draws marks as <path>/<line> elements inside groups classed mark-line, mark-symbol, mark-rect…
      const marks = svg ? svg.querySelectorAll('g[class*="mark-"]:not(.role-axis):not(.role-legend) path[d]') : [];
      let drawn = 0;
      for (const m of marks) if ((m.getAttribute('d') || '').length > 4) drawn += 1;
      const rect = box.getBoundingClientRect();
      out.charts.push({ id: box.id, svg: !!svg, marks: drawn, width: rect.width, height: rect.height });
    }
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
  for (const c of report.charts) {
    if (!c.svg) problems.push(`chart ${c.id}: no SVG rendered`);
    else if (c.marks === 0) problems.push(`chart ${c.id}: rendered no marks`);
    else if (c.width < 100 || c.height < 100) problems.push(`chart ${c.id}: rendered too small (${c.width}x${c.height})`);
  }
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
  if (shot) await page.screenshot({ path: shot, clip: { x: 0, y: 0, width: 1400, height: 1000 } });
  const full = opt('--full-screenshot');
  if (full) await page.screenshot({ path: full, fullPage: true });
  console.log(`check: ${report.charts.length} charts (${report.charts.filter((c) => c.marks > 0).length} with marks), ` +
              `${report.sections.length} sections, ${report.sections.reduce((a, s) => a + s.diagrams, 0)} diagrams, ` +
              `findings ${JSON.stringify(report.findings)}`);
} catch (err) {
  problems.push(`browser check failed: ${err.message}`);
} finally {
  if (context) await context.close();
  rmSync(user_data, { recursive: true, force: true });
}
if (problems.length) {
  for (const p of problems) console.error(`check: FAIL ${p}`);
  process.exit(1);
}
console.log('check: OK');

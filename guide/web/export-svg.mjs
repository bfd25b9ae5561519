// Renders every chart of a written guide (DIR/figures/*.vl.json, Vega-Lite specs) to a standalone
// SVG file beside it (DIR/figures/<id>.svg) with the same Vega / Vega-Lite the page inlines, in
// Node without a browser. Usage: node guide/web/export-svg.mjs DIR
import { readdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as vega from 'vega';
import * as vegaLite from 'vega-lite';

const dir = process.argv[2];
if (!dir) {
  console.error('usage: node export-svg.mjs GUIDE_DIR');
  process.exit(2);
}
const figures = join(dir, 'figures');
let count = 0;
for (const name of readdirSync(figures).filter((n) => n.endsWith('.vl.json')).sort()) {
  const spec = JSON.parse(readFileSync(join(figures, name), 'utf8'));
  const compiled = vegaLite.compile(spec).spec;
  const view = new vega.View(vega.parse(compiled), { renderer: 'none' });
  const svg = await view.toSVG();
  view.finalize();
  const out = join(figures, name.replace(/\.vl\.json$/, '.svg'));
  writeFileSync(out + '.partial', svg);
  renameSync(out + '.partial', out);
  count += 1;
}
console.log(`export-svg: wrote ${count} chart SVGs to ${figures}`);

#!/usr/bin/env bash
# The visual guide, checked as a person would see it (run by scripts/test.sh):
#  1. bad input fails with one line and a non-zero exit: an unwritable --out, an unknown --only
#     name, a sweep too large for this machine's memory; an interrupted run leaves no index.html;
#  2. `attnkit guide --smoke` writes the page, every diagram as SVG and every chart as Vega-Lite
#     JSON + SVG;
#  3. the page opens in headless Chromium (Debian's, driven by playwright-core, offline, fresh
#     profile): no console error; every series of every chart draws visible marks; charts fit
#     their cards at 1400 px and at 390 px (phone), where the page must not scroll sideways;
#     the page weighs under 1.5 MB; every variant section has its diagram (guide/web/check.mjs).
#     Screenshots (desktop, full page, phone) and check.json (page size, time until the charts
#     have drawn) are saved under build/test-scratch/guide-check/.
# Environment: GUIDE_CHECK_MODE=smoke|quick|full (default smoke: tiny sweeps, ~30 s, since the
# browser check is about rendering; --quick is what scripts/main.sh runs), GUIDE_SCREENSHOT=PATH
# to also save the top-of-page screenshot there (e.g. docs/guide-screenshot.png).
set -uo pipefail
cd "$(dirname "$0")/../.."
bin=./build/attnkit
mode=${GUIDE_CHECK_MODE:-smoke}
out=build/test-scratch/guide-check
fail=0
bad() { echo "guide check: FAIL $*"; fail=1; }

[ -x "$bin" ] || { echo "guide check: FAIL $bin not built"; exit 1; }
command -v node >/dev/null || { echo "guide check: FAIL node not installed (scripts/setup.sh)"; exit 1; }
[ -x /usr/bin/chromium ] || { echo "guide check: FAIL /usr/bin/chromium missing (scripts/setup.sh)"; exit 1; }
[ -d guide/web/node_modules/playwright-core ] || { echo "guide check: FAIL guide/web/node_modules missing (scripts/setup.sh)"; exit 1; }

# --- 1. bad input: one line on stderr, exit status 2, nothing measured
expect_error() {  # expect_error "what" "pattern" args...
  local what=$1 pattern=$2
  shift 2
  local err rc
  err=$("$bin" guide "$@" 2>&1 >/dev/null)
  rc=$?
  if [ "$rc" -ne 2 ]; then bad "$what: exit status $rc, expected 2"; return; fi
  if [ "$(printf '%s\n' "$err" | wc -l)" -ne 1 ]; then bad "$what: expected one line, got: $err"; return; fi
  if ! printf '%s' "$err" | grep -q -- "$pattern"; then bad "$what: message lacks '$pattern': $err"; return; fi
  echo "guide check: ok ($what): $err"
}
expect_error "unwritable --out" "cannot" --smoke --out /proc/attnkit-guide-check
expect_error "unknown --only name" "unknown section 'nosuch'" --smoke --only heads,nosuch --out "$out/bad"
expect_error "sweep too large for memory" "needs about" --quick --max-seqlen 1024m --out "$out/bad"

# An interrupted run must not leave a page presented as complete. (SIGTERM: a background job of a
# non-interactive shell ignores SIGINT; both end the process without a handler.)
rm -rf "$out/interrupted"
"$bin" guide --quick --out "$out/interrupted" >/dev/null 2>&1 &
pid=$!
sleep 4
kill -TERM "$pid" 2>/dev/null
wait "$pid" 2>/dev/null
if [ -e "$out/interrupted/index.html" ]; then bad "interrupted run left $out/interrupted/index.html"; else
  echo "guide check: ok (interrupted run left no index.html)"; fi
rm -rf "$out/interrupted" "$out/bad"

# --- 2. write the guide
rm -rf "$out/page"
start=$(date +%s)
if ! "$bin" guide "--$mode" --out "$out/page"; then
  bad "attnkit guide --$mode failed"
  exit 1
fi
echo "guide check: attnkit guide --$mode took $(( $(date +%s) - start )) s"
python3 - "$out/page" <<'PY' || fail=1
import json, os, sys
d = sys.argv[1]
page = json.load(open(os.path.join(d, "guide.json")))
missing = []
for s in page["sections"]:
    for f in s["figures"]:
        exts = [".svg"] if f["kind"] == "diagram" else [".vl.json", ".svg"]
        for e in exts:
            p = os.path.join(d, "figures", f["id"] + e)
            if not os.path.exists(p) or os.path.getsize(p) == 0:
                missing.append(p)
if missing:
    print("guide check: FAIL missing figure files: " + ", ".join(missing))
    sys.exit(1)
print("guide check: ok (%d sections, every figure written as a file)" % len(page["sections"]))
PY

# --- 3. open it in headless Chromium
shot_args=(--screenshot "$out/screenshot.png" --full-screenshot "$out/screenshot-full.png"
           --narrow-screenshot "$out/screenshot-390px.png" --metrics "$out/check.json")
if ! node guide/web/check.mjs "$out/page/index.html" "${shot_args[@]}"; then
  bad "browser check"
fi
if [ -n "${GUIDE_SCREENSHOT:-}" ] && [ -f "$out/screenshot.png" ]; then cp "$out/screenshot.png" "$GUIDE_SCREENSHOT"; fi
[ "$fail" -eq 0 ] && echo "guide check: passed" || echo "guide check: FAILED"
exit "$fail"
